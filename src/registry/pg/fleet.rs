//! The fleet view on PostgreSQL: a box's heartbeat and the list of boxes
//! (statements and rules in [`crate::registry::fleet`]).

use super::Postgres;
use crate::registry::error::RegistryError;
use crate::registry::fleet::{self, FleetBox, Heartbeat, PgBeat, PRUNE_AFTER_DAYS};

impl Postgres {
    /// Upserts this box's heartbeat row (`last_seen` = the server's
    /// `now()`) and prunes boxes gone quiet, bounded by the call limit.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), RegistryError> {
        let b = PgBeat::from(hb);
        call!(self, |c| {
            let e = |e: tokio_postgres::Error| self.err(&e);
            c.execute(
                fleet::PG_BEAT,
                &[
                    &b.name,
                    &b.role,
                    &b.version,
                    &b.interval_s,
                    &b.readers,
                    &b.readers_up,
                    &b.readers_total,
                    &b.printer,
                    &b.last_read,
                    &b.uptime_s,
                ],
            )
            .await
            .map_err(e)?;
            c.execute(fleet::PG_PRUNE, &[&(PRUNE_AFTER_DAYS as i32)])
                .await
                .map_err(e)?;
            Ok(())
        })
    }

    /// Every box that sent a heartbeat, by name.
    pub async fn fleet(&self) -> Result<Vec<FleetBox>, RegistryError> {
        call!(self, |c| {
            let rows = c
                .query(fleet::PG_LIST, &[])
                .await
                .map_err(|e| self.err(&e))?;
            fleet::read_rows(&rows)
        })
    }
}
