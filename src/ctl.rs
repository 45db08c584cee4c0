//! What `cardlinkctl` does, as a library: rendering the socket's messages
//! for a person, the `watch` loop, the registry check, sample cards for the
//! simulator and the whole-system demo. `src/bin/cardlinkctl.rs` only parses
//! arguments and calls these.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::ClientError;
use crate::protocol::{Card, FamilyRole, Message, Status, WireOutcome};
use crate::registry::{Database, DbKey, OpenOptions, Registry, RegistryError};
#[cfg(feature = "sim")]
use crate::sim::{self, PtyMaster, SimOptions};
use crate::Ssn;
use std::os::unix::fs::DirBuilderExt;

/// Errors of the operator's tool.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Talking to the daemon failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file or terminal failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Output could not be encoded.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The daemon child process failed.
    #[error("{0}")]
    Daemon(String),
    /// A capture file could not be read.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// A capture could not be redacted.
    #[error(transparent)]
    Redact(#[from] crate::capture::redact::RedactError),
    /// A replay failed.
    #[cfg(feature = "sim")]
    #[error(transparent)]
    Replay(#[from] crate::tools::replay::ReplayError),
}

/// One `check-ssn` line for `number`, and whether it was valid.
pub fn check_ssn_line(number: &str, full: bool) -> (String, bool) {
    let n = number.trim();
    let parsed = if n.len() == 15 {
        Ssn::from_legacy15(n)
    } else {
        Ssn::parse(n)
    };
    let shown = crate::mask::identifier(n);
    if matches!(
        crate::reader::manual_read(n),
        Err(crate::reader::manual::ManualError::ForeignPermanent2017)
    ) {
        let e = crate::reader::manual::ManualError::ForeignPermanent2017;
        return (format!("{shown}: invalid: {e}"), false);
    }
    match parsed {
        Ok(s) if full => (format!("{}: valid", s.expose()), true),
        Ok(s) if n.len() == 15 => (format!("{shown}: valid (18-digit form {s})"), true),
        Ok(s) if firmware_protocol::ssn::is_foreign_permanent(&s) => (
            format!("{s}: valid (2023 外国人永久居留身份证 / foreign permanent resident)"),
            true,
        ),
        Ok(s) => (format!("{s}: valid"), true),
        Err(e) => (format!("{shown}: invalid: {e}"), false),
    }
}

/// `¥1234.56`, or `-` when unknown.
pub fn yuan(fen: Option<i64>) -> String {
    fen.map_or("-".into(), |f| {
        let sign = if f < 0 { "-" } else { "" };
        format!("{sign}¥{}.{:02}", f.abs() / 100, f.abs() % 100)
    })
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn outcome_text(o: WireOutcome) -> &'static str {
    match o {
        WireOutcome::Ok => "OK",
        WireOutcome::Unknown => "UNKNOWN",
        WireOutcome::Lost => "LOST",
        WireOutcome::Frozen => "FROZEN",
        WireOutcome::Cancelled => "CANCELLED",
        WireOutcome::Expired => "EXPIRED",
        WireOutcome::Mismatch => "MISMATCH",
        WireOutcome::NoCard => "NO_CARD",
    }
}

fn card_text(c: &Card) -> String {
    let mut out = format!(
        "card   {:<10} #{} {:<9} {} {} card {}  => {}",
        c.reader,
        c.swipe,
        c.source.as_str(),
        or_dash(&c.name),
        or_dash(&c.ssn),
        or_dash(&c.card_no),
        outcome_text(c.outcome)
    );
    if c.outcome != WireOutcome::Ok {
        return out;
    }
    if let (FamilyRole::Member | FamilyRole::Both, Some(p)) = (c.role, &c.payer) {
        out += &format!(
            "\n       paid by {} {} ({} of the holder), balance {}",
            p.name,
            p.ssn,
            or_dash(&p.relation),
            yuan(p.balance_fen)
        );
    }
    match c.role {
        FamilyRole::Holder | FamilyRole::Both => {
            if c.role == FamilyRole::Holder {
                out += &format!(
                    "\n       account holder, balance {}, covers:",
                    yuan(c.balance_fen)
                );
            } else {
                out += "\n       also an account holder, covers:";
            }
            for m in &c.members {
                out += &format!("\n         - {} {} ({})", m.name, m.ssn, m.relation);
            }
        }
        FamilyRole::None => {
            out += &format!(
                "\n       pays for themself, balance {}",
                yuan(c.balance_fen)
            )
        }
        FamilyRole::Member => {}
    }
    out
}

/// A message as one or more lines for a person.
pub fn render(m: &Message) -> String {
    match m {
        Message::Version(v) => format!(
            "connected to cardlinkd {} (protocol {})",
            v.release, v.proto
        ),
        Message::Reader(r) => {
            let mut s = format!("reader {:<10} {} ({})", r.reader, r.state, r.path);
            if let Some(e) = &r.error {
                s += &format!(": {e}");
            }
            s
        }
        Message::Error(e) => format!("error  {}: {}", e.code, e.message),
        Message::Removed(r) => format!("card   {:<10} removed", r.reader),
        Message::Card(c) => card_text(c),
        Message::Reply(r) => format!("reply  {}", serde_json::to_string(r).unwrap_or_default()),
        Message::Role(r) => format!("role   now {}", r.role),
        Message::Display(d) => format!("display daemon {}", d.daemon),
        Message::Session(e) => format!("session ended: {}", e.ended),
        Message::Printer(p) => match &p.error {
            Some(e) => format!("printer {} {} ({e})", p.state, p.path),
            None => format!("printer {} {}", p.state, p.path),
        },
        Message::Receipt(r) => match &r.error {
            Some(e) => format!("receipt {} audit #{} NOT printed: {e}", r.kind, r.audit_seq),
            None => format!("receipt {} audit #{} printed", r.kind, r.audit_seq),
        },
    }
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    }
}

/// `cardlinkctl status`: a summary for a person.
pub fn status_text(s: &Status) -> String {
    let mut out = format!(
        "cardlinkd {}, role {}, up {}\n{} client(s), {} resolution(s), {} error(s)\n",
        s.release,
        s.role,
        uptime(s.uptime_s),
        s.clients,
        s.resolutions,
        s.errors
    );
    if s.readers.is_empty() {
        out += "no readers configured\n";
    }
    for r in &s.readers {
        out += &format!(
            "reader {} ({}, {}): {}\n  {} items, {} cards, {} duplicates, {} rejected, {} noise bytes\n  firmware: {}\n",
            r.name,
            r.path,
            r.mode,
            r.state,
            r.items,
            r.cards,
            r.duplicates,
            r.rejected,
            r.noise_bytes,
            r.firmware.as_deref().unwrap_or("unknown"),
        );
        if let Some(n) = r.restarts {
            out += &format!("  helper restarts: {n}\n");
        }
        if let Some(c) = r.last_code {
            match i32::try_from(c).map(firmware_protocol::retcode::meaning) {
                _ if c == 0 => out += "  last return code: 0 (a card was read)\n",
                Ok(m) => out += &format!("  last return code: {c} ({} / {})\n", m.zh, m.en),
                Err(_) => out += &format!("  last return code: {c}\n"),
            }
        }
        if let Some(e) = &r.last_error {
            out += &format!("  last error: {e}\n");
        }
    }
    if let Some(p) = &s.printer {
        out += &format!(
            "printer {}: {}\n  {} receipt(s) printed, {} not printed\n",
            p.path, p.state, p.printed, p.failed
        );
        if let Some(e) = &p.last_error {
            out += &format!("  last error: {e}\n");
        }
    }
    out
}

/// Prints the daemon's events until `stop` (or, with no events ever
/// received, until the daemon cannot be reached for 2 s). Reconnects
/// with backoff when the daemon goes away.
pub async fn watch(
    socket: &Path,
    raw: bool,
    out: &mut (dyn Write + Send),
    stop: &CancellationToken,
) -> Result<(), CtlError> {
    let line = |m: &Message| -> Result<String, CtlError> {
        Ok(if raw {
            serde_json::to_string(m)?
        } else {
            render(m)
        })
    };
    let mut link = crate::client::Reconnect::new(socket);
    let mut ever = false;
    while let Some(mut c) = link
        .next(stop, |_, backoff| {
            !ever && backoff.current() >= Duration::from_secs(2)
        })
        .await?
    {
        ever = true;
        writeln!(out, "{}", line(&Message::Version(c.version().clone()))?)?;
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = c.next_event() => m,
            };
            let Some(m) = m else { break };
            writeln!(out, "{}", line(&m)?)?;
            out.flush()?;
        }
        eprintln!("cardlinkctl: daemon closed the connection; reconnecting");
    }
    Ok(())
}

/// `db check`: SQLite's integrity and foreign keys, the resolution copies
/// and the audit chain. Empty when all is well.
pub fn check_registry(reg: &Registry) -> Result<Vec<String>, RegistryError> {
    let mut problems = reg.integrity()?;
    let drift = reg.drift()?;
    if drift.total() > 0 {
        problems.push(format!(
            "read model out of date: {} person(s) without a resolution row, {} stale row(s), {} row(s) of persons that no longer exist (e.g. {}); run `cardlinkctl db repair`",
            drift.missing,
            drift.stale,
            drift.orphaned,
            drift
                .examples
                .iter()
                .map(|s| crate::mask::identifier(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some((id, why)) = reg.verify_audit()?.broken {
        problems.push(format!("audit chain broken at row {id}: {why}"));
    }
    Ok(problems)
}

/// `db repair`'s report.
pub fn repair_text(r: &crate::registry::Repair) -> String {
    let d = &r.drift;
    if d.total() == 0 {
        return "read model up to date: nothing to repair".into();
    }
    format!(
        "read model repaired{}: {} row(s) added, {} stale row(s) rewritten, {} row(s) of persons that no longer exist removed (e.g. {})",
        if r.rebuilt { " (rebuilt in full)" } else { "" },
        d.missing,
        d.stale,
        d.orphaned,
        d.examples
            .iter()
            .map(|s| crate::mask::identifier(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Opens a registry for the tool, creating a SQLite file's directory.
pub fn open_registry(db: &Database, cache_mib: i64) -> Result<Registry, CtlError> {
    open_registry_with(db, cache_mib, &DbOptions::default())
}

/// The settings of `cardlinkctl db` that decide how a registry is opened:
/// its key (`--key-file`), the audit chain's algorithm (`--audit-hash`)
/// and the box's sealing key (`--seal-key`).
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// The key of an encrypted SQLite registry (a PostgreSQL registry
    /// refuses one).
    pub key: Option<DbKey>,
    /// The algorithm of a new chain; a chain with rows keeps its own.
    pub audit_hash: Option<crate::registry::HashAlg>,
    /// The box's sealing key (default for SQLite: `<registry>.seal` when
    /// it exists).
    pub seal_key: Option<PathBuf>,
}

/// [`open_registry`] with a key and the audit chain's settings.
pub fn open_registry_with(
    db: &Database,
    cache_mib: i64,
    opts: &DbOptions,
) -> Result<Registry, CtlError> {
    if let Some(dir) = db
        .path()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    let opts = OpenOptions {
        cache_kib: cache_mib.max(1) * 1024,
        audit_hash: opts.audit_hash,
        seal_key: opts.seal_key.clone(),
        key: opts.key.clone(),
        ..OpenOptions::default()
    };
    Ok(Registry::open_database(db, &opts)?)
}

/// `db audit`: one line per audit row in chain order (`id at actor action
/// ssn outcome`), of `action` only when given; SSNs masked (in the row and
/// inside its outcome text) unless `full`. A bind's outcome names the
/// consent statement version (`consent=…`). Returns the rows written.
pub fn audit_lines(
    reg: &Registry,
    action: Option<&str>,
    full: bool,
    out: &mut dyn Write,
) -> Result<u64, CtlError> {
    let mut n = 0;
    let mut io_err = None;
    reg.audit_rows(&mut |r| {
        if action.is_some_and(|a| a != r.action) {
            return Ok(());
        }
        let ssn = r.ssn.as_deref().unwrap_or("-");
        let (ssn, outcome) = if full {
            (ssn.to_string(), r.outcome.clone())
        } else {
            (
                crate::mask::free_text(ssn),
                crate::mask::free_text(&r.outcome),
            )
        };
        let actor = if full {
            r.actor.clone()
        } else {
            crate::mask::free_text(&r.actor)
        };
        if let Err(e) = writeln!(
            out,
            "{} {} {} {} {} {}",
            r.id, r.at, actor, r.action, ssn, outcome
        ) {
            io_err.get_or_insert(e);
        }
        n += 1;
        Ok(())
    })?;
    match io_err {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

/// `db export`'s `audit.csv` (0600, like the tables' files): every audit
/// row as stored (`id,at,actor,action,ssn,outcome,prev_hash,hash`), so
/// that the consent version of each bind travels with an export. Not an
/// import file (`db migrate` copies the chain). Returns the rows written.
pub fn export_audit(reg: &Registry, dir: &Path) -> Result<u64, CtlError> {
    let path = dir.join("audit.csv");
    let csv_err = |e: csv::Error| std::io::Error::other(format!("{}: {e}", path.display()));
    let mut w = csv::Writer::from_writer(crate::registry::files::private_file(&path)?);
    w.write_record([
        "id",
        "at",
        "actor",
        "action",
        "ssn",
        "outcome",
        "prev_hash",
        "hash",
    ])
    .map_err(csv_err)?;
    let mut failed = None;
    let n = reg.audit_rows(&mut |r| {
        let id = r.id.to_string();
        let rec = [
            id.as_str(),
            &r.at,
            &r.actor,
            &r.action,
            r.ssn.as_deref().unwrap_or(""),
            &r.outcome,
            &r.prev_hash,
            &r.hash,
        ];
        if let Err(e) = w.write_record(rec) {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(csv_err(e).into());
    }
    w.flush()?;
    Ok(n)
}

/// `db verify-audit`: the lines to print and the exit status. Without
/// verification keys, the chain alone (0 intact, 1 broken); with them, the
/// chain and every box's seals, each kind of tampering named with its own
/// message and status ([`crate::registry::verify::Problem::exit_code`]).
/// How far each box got is read from `key_states` (default for SQLite:
/// `<registry>.seal`).
pub fn verify_audit(
    reg: &Registry,
    db: &Database,
    verify_keys: &[PathBuf],
    key_states: &[PathBuf],
) -> Result<(Vec<String>, i32), CtlError> {
    use crate::registry::seal::{default_key_path, KeyState, VerifyKey};
    let alg = reg.audit_hash();
    if verify_keys.is_empty() {
        let v = reg.verify_audit()?;
        return Ok(match v.broken {
            None => (
                vec![format!("audit chain intact: {} rows ({alg})", v.rows)],
                0,
            ),
            Some((id, why)) => (vec![format!("audit chain BROKEN at row {id}: {why}")], 1),
        });
    }
    let keys = verify_keys
        .iter()
        .map(|p| VerifyKey::read(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RegistryError::from)?;
    let mut paths = key_states.to_vec();
    if paths.is_empty() {
        paths.extend(db.path().map(default_key_path));
    }
    let states = paths
        .into_iter()
        .map(|p| {
            let s = KeyState::read(&p);
            (p, s)
        })
        .collect();
    let report = reg.verify_sealed(keys, states)?;
    let mut lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}: {}", f.problem.label(), f.text))
        .collect();
    for b in &report.boxes {
        lines.push(format!(
            "box {}: {} sealed rows, last seal index {}, key at {}",
            b.box_id,
            b.rows,
            b.last.map_or("none".into(), |l| l.to_string()),
            b.key_index.map_or("?".into(), |k| k.to_string())
        ));
    }
    lines.extend(report.notes.iter().map(|n| format!("note: {n}")));
    let status = match report.primary() {
        None => {
            lines.push(format!(
                "audit chain intact and sealed: {} rows ({alg})",
                report.rows
            ));
            0
        }
        Some(f) => {
            lines.push(format!(
                "audit chain NOT intact ({} rows, {alg}): {}",
                report.rows,
                f.problem.label()
            ));
            f.problem.exit_code()
        }
    };
    Ok((lines, status))
}

/// The box id `seal init` uses by default: the host's name.
pub fn default_box_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| crate::registry::seal::valid_box_id(h))
        .unwrap_or_else(|| "box".to_string())
}

/// What `db migrate` copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Rows of each table (as exported from the source).
    pub counts: crate::registry::import::ImportCounts,
    /// Audit rows copied as they were (the chain), before the target's own
    /// `import` and `migrate` rows.
    pub audit_rows: u64,
}

/// Why `db migrate` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target already holds data.
    #[error("the target registry {0} is not empty ({1}); migrate into a new, empty registry")]
    TargetNotEmpty(String, String),
    /// The source's audit chain is broken; copying it would hide that.
    #[error("the source's audit chain is broken at row {0}: {1}; run `db verify-audit` and resolve it first")]
    SourceChainBroken(i64, String),
    /// Both ends are PostgreSQL.
    #[error("both registries are PostgreSQL; copy between servers with pg_dump and pg_restore")]
    BothPostgres,
    /// After the copy, the target does not match the source.
    #[error("the copy does not match the source: {0}")]
    Mismatch(String),
    /// An export or import step failed.
    #[error(transparent)]
    Import(#[from] crate::registry::import::ImportError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A temporary file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Opening the target.
    #[error(transparent)]
    Open(#[from] CtlError),
}

/// `db migrate --from A --to B`: copies a registry into a new, empty one
/// on the other backend, keeping its audit chain: the source's audit rows
/// are copied as they are (ids, times, hashes), then its tables through the
/// import format, which appends the target's `import` row to the same
/// chain, and a `migrate` row. Checks the result: counts equal, chain
/// intact, read model exact.
pub fn migrate(from: &Database, to: &Database, actor: &str) -> Result<Migrated, MigrateError> {
    migrate_with(from, to, actor, &DbOptions::default())
}

/// [`migrate`] with `opts`: its key is the SQLite end's (both ends', if
/// both are SQLite); the target's own rows (`import`, `migrate`) are
/// written with its sealing key (a sealing box passes its key, so that
/// they are sealed like the rows before them). The chain keeps its
/// algorithm.
pub fn migrate_with(
    from: &Database,
    to: &Database,
    actor: &str,
    opts: &DbOptions,
) -> Result<Migrated, MigrateError> {
    if matches!((from, to), (Database::Postgres(_), Database::Postgres(_))) {
        return Err(MigrateError::BothPostgres);
    }
    // The key belongs to the SQLite end (both ends, if both are SQLite).
    let key_for = |db: &Database| opts.key.clone().filter(|_| db.path().is_some());
    let source = Registry::open_database(
        from,
        &OpenOptions {
            read_only: true,
            key: key_for(from),
            ..OpenOptions::default()
        },
    )?;
    let alg = source.audit_hash();
    let mut target = open_registry_with(
        to,
        64,
        &DbOptions {
            key: key_for(to),
            audit_hash: Some(alg),
            seal_key: opts.seal_key.clone(),
        },
    )?;
    let before = target.stats()?;
    if before.persons + before.cards + before.audit + before.contributions > 0 {
        return Err(MigrateError::TargetNotEmpty(
            to.to_string(),
            serde_json::to_string(&before).unwrap_or_default(),
        ));
    }
    if let Some((id, why)) = source.verify_audit()?.broken {
        return Err(MigrateError::SourceChainBroken(id, why));
    }
    let stats = source.stats()?;
    // The chain first, in batches (it may hold millions of swipes).
    let mut batch = Vec::with_capacity(10_000);
    let audit_rows = source.audit_rows(&mut |row| {
        batch.push(row);
        if batch.len() == 10_000 {
            target.load_audit(&batch, alg)?;
            batch.clear();
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        target.load_audit(&batch, alg)?;
    }
    // The tables through the import format, in a private directory.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cardlink-migrate-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let result = (|| {
        let counts = source.export(&dir)?;
        let files: Vec<PathBuf> = ["persons", "cards", "accounts", "links", "contributions"]
            .iter()
            .map(|t| dir.join(format!("{t}.csv")))
            .collect();
        target.import(&files, actor)?;
        Ok::<_, MigrateError>(counts)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let counts = result?;
    target.record(&crate::registry::Entry {
        actor,
        action: "migrate",
        ssn: None,
        outcome: &format!("ok from={from} audit_rows={audit_rows}"),
    })?;
    let after = target.stats()?;
    let same = after.persons == stats.persons
        && after.cards == stats.cards
        && after.active_links == stats.active_links
        && after.accounts == stats.accounts
        && after.contributions == stats.contributions
        && after.audit == stats.audit + 2;
    if !same {
        return Err(MigrateError::Mismatch(format!(
            "source {} target {}",
            serde_json::to_string(&stats).unwrap_or_default(),
            serde_json::to_string(&after).unwrap_or_default()
        )));
    }
    if let Some((id, why)) = target.verify_audit()?.broken {
        return Err(MigrateError::Mismatch(format!(
            "the target's audit chain breaks at row {id}: {why}"
        )));
    }
    let drift = target.drift()?;
    if drift.total() > 0 {
        return Err(MigrateError::Mismatch(format!(
            "the target's read model differs in {} rows",
            drift.total()
        )));
    }
    Ok(Migrated { counts, audit_rows })
}

#[cfg(feature = "sim")]
/// Writes sample cards (see [`sim::sample_cards`]) as JSON lines.
pub fn write_sample_cards(reg: &Registry, out: &Path) -> Result<usize, CtlError> {
    let cards = sim::sample_cards(reg, crate::Date::today_cst())?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for card in &cards {
        writeln!(f, "{}", serde_json::to_string(card)?)?;
    }
    f.flush()?;
    Ok(cards.len())
}

#[cfg(feature = "sim")]
/// Where `simulate` plays the reader.
#[derive(Debug, Clone)]
pub enum SimTarget {
    /// A new pseudo-terminal whose device is linked at this path.
    Pty(PathBuf),
    /// A serial device (one end of a null-modem pair).
    Port(PathBuf),
}

#[cfg(feature = "sim")]
/// Plays a reader swiping `cards` on `target`, logging each swipe (card
/// number masked) and the report on stderr.
pub async fn simulate(
    target: SimTarget,
    cards: &[sim::SimCard],
    opts: &SimOptions,
) -> Result<sim::SimReport, CtlError> {
    let idcard = opts.mode == crate::reader::codec::Mode::Idcard;
    let log = |n: u64, c: &sim::SimCard| {
        if idcard {
            eprintln!(
                "simulate: placement {n}: {} {}",
                c.id_document(),
                crate::mask::identifier(&c.ssn)
            )
        } else {
            eprintln!(
                "simulate: swipe {n}: card {}",
                crate::mask::card_no(&c.card_no)
            )
        }
    };
    let report = match target {
        SimTarget::Pty(link) => {
            let master = PtyMaster::open(Some(&link))?;
            eprintln!(
                "simulate: reader on {} -> {}",
                link.display(),
                master.slave_path().display()
            );
            sim::run(master, cards, opts, log).await?
        }
        SimTarget::Port(port) => {
            use tokio_serial::SerialPortBuilderExt;
            let stream = tokio_serial::new(port.to_string_lossy(), 115_200)
                .open_native_async()
                .map_err(std::io::Error::from)?;
            sim::run(stream, cards, opts, log).await?
        }
    };
    eprintln!("simulate: {report:?}");
    Ok(report)
}

#[cfg(feature = "sim")]
/// The demo's settings.
#[derive(Debug, Clone)]
pub struct Demo {
    /// Persons in the demo registry.
    pub persons: u64,
    /// Seconds between swipes.
    pub every: u64,
    /// Working directory.
    pub dir: PathBuf,
    /// The `cardlinkd` binary.
    pub daemon: PathBuf,
    /// The `cardlink-display` binary.
    pub display: PathBuf,
    /// Where the display serves the screen.
    pub display_listen: std::net::SocketAddr,
    /// The simulated receipt printer's state (`ok`, `paper_end`, …).
    pub printer_state: crate::printer::PrinterState,
}

#[cfg(feature = "sim")]
/// Runs the whole system: a demo registry, `cardlinkd` on it, a simulated
/// reader swiping sample cards, and the live view on `out`, until `stop`.
pub async fn demo(
    d: &Demo,
    out: &mut (dyn Write + Send),
    stop: &CancellationToken,
) -> Result<(), CtlError> {
    std::fs::create_dir_all(&d.dir)?;
    let db = d.dir.join("registry.db");
    let cards = d.dir.join("cards.jsonl");
    let socket = d.dir.join("display.sock");
    let link = d.dir.join("reader0");
    let printer_link = d.dir.join("printer0");
    if !db.exists() || !cards.exists() {
        eprintln!(
            "demo: generating a registry of {} persons in {}",
            d.persons,
            db.display()
        );
        let mut reg = open_registry(&Database::from(db.clone()), 64)?;
        reg.gen_demo(&crate::registry::demo::DemoOptions {
            persons: d.persons,
            ..crate::registry::demo::DemoOptions::default()
        })?;
        write_sample_cards(&reg, &cards)?;
    }
    let config = d.dir.join("cardlinkd.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\nrole = \"window\"\n\n[socket]\npath = {:?}\nmode = \"0600\"\n\n[printer]\npath = {:?}\nstation = \"demo\"\n\n[[reader]]\nname = \"demo\"\npath = {:?}\nmode = \"frame\"\n",
            db, socket, printer_link, link
        ),
    )?;
    let master = PtyMaster::open(Some(&link))?;
    let printer = PtyMaster::open(Some(&printer_link))?;
    let receipts_path = d.dir.join("receipts.txt");
    let printer_state = std::sync::Arc::new(std::sync::Mutex::new(d.printer_state));
    let mut daemon = tokio::process::Command::new(&d.daemon)
        .arg("--config")
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CtlError::Daemon(format!("starting {}: {e}", d.daemon.display())))?;
    let key_dir = d.dir.join("screen");
    std::fs::create_dir_all(&key_dir)?;
    // The display says where it serves (`--display-listen` may name port
    // 0) when it is ready, as it tells systemd.
    let notify_path = d.dir.join("display-notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = tokio::net::UnixDatagram::bind(&notify_path)?;
    let mut display = tokio::process::Command::new(&d.display)
        .arg("--socket")
        .arg(&socket)
        .arg("--listen")
        .arg(d.display_listen.to_string())
        .arg("--key-dir")
        .arg(&key_dir)
        .arg("--operator")
        .arg("demo")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NOTIFY_SOCKET", &notify_path)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CtlError::Daemon(format!("starting {}: {e}", d.display.display())))?;
    let serving = tokio::select! {
        s = display_ready(&notify) => s?,
        e = display.wait() => {
            return Err(CtlError::Daemon(format!("{} exited at start: {}", d.display.display(), e?)));
        }
        _ = stop.cancelled() => return Ok(()),
    };
    // The browser logs in through the display's login page (it posts the
    // screen key).
    writeln!(
        out,
        "demo: the clerk's screen: open file://{} in a browser (it logs in to {serving})",
        key_dir.join(crate::display::key::LOGIN_FILE).display(),
    )?;
    eprintln!(
        "demo: cardlinkd is up; a simulated reader swipes a card every {} s. Ctrl-C to stop.",
        d.every
    );
    eprintln!(
        "demo: try in another terminal:  cardlinkctl status --socket {}",
        socket.display()
    );
    eprintln!(
        "demo: a simulated receipt printer ({}) prints binds and unbinds here and into {}",
        d.printer_state,
        d.dir.join("receipts.txt").display()
    );
    let cards = sim::load_cards(&cards)?;
    let opts = SimOptions {
        mode: crate::reader::codec::Mode::Frame,
        encoding: crate::reader::card::TextEncoding::Gbk,
        noise: 0.0,
        drop_acks: 0.0,
        interval: Duration::from_secs(d.every),
        count: None,
        seed: 7,
        sam_fault: None,
    };
    // watch gives up only if the daemon never answers; it retries meanwhile.
    let result = tokio::select! {
        r = sim::run(master, &cards, &opts, |_, _| {}) => r.map(|_| ()).map_err(CtlError::from),
        r = watch(&socket, false, out, stop) => r,
        r = sim::play_printer(printer, printer_state, crate::printer::Encoding::Gbk, |r| {
            // The receipt as it came out of the printer: to stderr and to receipts.txt.
            let text = format!("---- receipt ----\n{}\n[QR] {}\n-----------------\n",
                r.lines.join("\n"), r.qr.join(" | ").replace('\n', " "));
            eprint!("{text}");
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&receipts_path) {
                let _ = f.write_all(text.as_bytes());
            }
        }) => r.map_err(CtlError::from),
        s = daemon.wait() => Err(CtlError::Daemon(format!("cardlinkd exited: {s:?}"))),
        s = display.wait() => Err(CtlError::Daemon(format!("cardlink-display exited: {s:?}"))),
    };
    let _ = display.start_kill();
    let _ = display.wait().await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    result
}

#[cfg(feature = "sim")]
/// The address the display serves, from its `READY=1` notification
/// (`STATUS=serving http://…/`).
#[cfg(feature = "sim")]
async fn display_ready(notify: &tokio::net::UnixDatagram) -> Result<String, CtlError> {
    let mut buf = [0u8; 1024];
    loop {
        let n = notify.recv(&mut buf).await?;
        let msg = String::from_utf8_lossy(&buf[..n]);
        if msg.lines().any(|l| l == "READY=1") {
            return Ok(msg
                .lines()
                .find_map(|l| l.strip_prefix("STATUS=serving "))
                .unwrap_or("the display")
                .to_string());
        }
    }
}

/// The registry a capture check replays against: `gen-demo` with these
/// options, so the persons the captures of `tests/captures/` show exist.
pub const REPLAY_REGISTRY: crate::registry::demo::DemoOptions =
    crate::registry::demo::DemoOptions {
        persons: 2000,
        months: 2,
        seed: 20261125,
    };

/// `capture redact IN OUT`: writes the redacted capture (mode 0600) and
/// returns its report line.
pub fn redact_capture(input: &Path, output: &Path) -> Result<String, CtlError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = crate::capture::CaptureFile::read(input)?;
    let redactor =
        crate::capture::redact::Redactor::new(file.header.encoding, crate::Date::today_cst());
    let (out, r) = redactor.redact_file(&file)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)?;
    f.write_all(out.to_text().as_bytes())?;
    Ok(format!(
        "{}: replaced {} SSN(s), {} name(s), {} card number(s) and identification code(s), {} PAN(s); the key was random and is not kept",
        output.display(),
        r.ssns,
        r.names,
        r.cards,
        r.pans
    ))
}

#[cfg(feature = "sim")]
/// What `replay --check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The events match `FILE.chk`.
    Match(usize),
    /// They differ (the report).
    Differ(String),
    /// `--regen` wrote `FILE.chk` with this many events.
    Written(usize),
}

#[cfg(feature = "sim")]
/// `replay --check FILE [--regen]`: replays `capture` against an
/// in-process daemon on a new demo registry ([`REPLAY_REGISTRY`], or a
/// copy of `registry`) and compares the masked events with `FILE.chk` (or
/// writes it). Call on a runtime with paused time.
pub async fn replay_check(
    capture: &Path,
    regen: bool,
    registry: Option<&Path>,
) -> Result<CheckOutcome, CtlError> {
    let file = crate::capture::CaptureFile::read(capture)?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let reg = match registry {
        Some(src) => {
            std::fs::copy(src, &db)?;
            Registry::open(&db, &crate::registry::OpenOptions::default())?
        }
        None => {
            let mut reg = Registry::open(&db, &crate::registry::OpenOptions::default())?;
            reg.gen_demo(&REPLAY_REGISTRY)?;
            reg
        }
    };
    let events = crate::tools::replay::check(&file, reg, dir.path()).await?;
    let mut chk = capture.as_os_str().to_owned();
    chk.push(".chk");
    let chk = PathBuf::from(chk);
    if regen {
        let mut text = events.join("\n");
        text.push('\n');
        std::fs::write(&chk, text)?;
        return Ok(CheckOutcome::Written(events.len()));
    }
    let expected = std::fs::read_to_string(&chk).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (write it with --regen)", chk.display()),
        )
    })?;
    Ok(match crate::tools::replay::diff(&expected, &events) {
        None => CheckOutcome::Match(events.len()),
        Some(d) => CheckOutcome::Differ(d),
    })
}

#[cfg(feature = "sim")]
/// `replay FILE`: plays the capture's reader side into a new
/// pseudo-terminal linked at `link`, at `speed` times its timing. It
/// starts once cardlinkd has the port open: in frame mode at the host's
/// first bytes (its STATUS_REQUEST on connecting), in the text modes, where
/// the host sends nothing, after `text_start` (longer than cardlinkd's
/// longest reconnect backoff, 5 s). The same after each unplug.
pub async fn replay_pty(
    capture: &Path,
    link: &Path,
    speed: f64,
    text_start: Duration,
) -> Result<crate::tools::replay::PlayReport, CtlError> {
    use tokio::io::AsyncReadExt;
    let file = crate::capture::CaptureFile::read(capture)?;
    let frame = file.header.mode == crate::reader::codec::Mode::Frame;
    let open = move |link: PathBuf| async move {
        let mut pty = sim::PtyMaster::open(Some(&link))?;
        eprintln!(
            "replay: {} -> {}; waiting for cardlinkd to open it",
            link.display(),
            pty.slave_path().display()
        );
        if frame {
            let mut first = [0u8; 64];
            let _ = pty.read(&mut first).await?;
        } else {
            tokio::time::sleep(text_start).await;
        }
        eprintln!("replay: playing");
        Ok::<_, std::io::Error>(pty)
    };
    eprintln!(
        "replay: {} ({} mode, {} chunks) at {speed}x",
        capture.display(),
        file.header.mode,
        file.chunks().count()
    );
    let pty = open(link.to_path_buf()).await?;
    let link = link.to_path_buf();
    let (mut pty, report) = crate::tools::replay::play(&file, pty, speed, || {
        eprintln!("replay: unplugged; plugging in again");
        open(link.clone())
    })
    .await?;
    // Closing the pty discards what the host has not read yet: linger
    // until it has taken every byte and then stayed quiet for a while (its
    // ACKs of the last frames arrive in that time), at most 30 s.
    let limit = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 256];
    while tokio::time::Instant::now() < limit {
        if pty.unread()? > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        tokio::select! {
            n = pty.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { break },
            _ = tokio::time::sleep(Duration::from_millis(500)) => break,
        }
    }
    Ok(report)
}

/// The boxes that sent heartbeats into the registry `db`
/// (`cardlinkctl fleet`), opened read-only: nothing is created or migrated.
pub fn fleet(
    db: &Database,
    key: Option<DbKey>,
) -> Result<Vec<crate::registry::fleet::FleetBox>, CtlError> {
    let opts = OpenOptions {
        read_only: true,
        key,
        ..OpenOptions::default()
    };
    Ok(Registry::open_database(db, &opts)?.fleet()?)
}

/// `3d 4h`, `2h 5m`, `7m 3s`, `12s`.
pub fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `cardlinkctl fleet`: one line per box, a header first.
pub fn fleet_text(boxes: &[crate::registry::fleet::FleetBox]) -> String {
    if boxes.is_empty() {
        return "no box has sent a heartbeat into this registry\n".into();
    }
    let rows: Vec<[String; 9]> = boxes
        .iter()
        .map(|b| {
            [
                b.name.clone(),
                b.role.clone(),
                b.version.clone(),
                format!("{}/{}", b.readers_up, b.readers_total),
                b.printer.clone().unwrap_or_else(|| "-".into()),
                b.last_read.clone().unwrap_or_else(|| "-".into()),
                duration_text(b.uptime_s),
                format!("{} ago", duration_text(b.age_s)),
                if b.online() {
                    "online".into()
                } else {
                    format!("OFFLINE (no heartbeat for {})", duration_text(b.age_s))
                },
            ]
        })
        .collect();
    let head = [
        "NAME",
        "ROLE",
        "VERSION",
        "READERS",
        "PRINTER",
        "LAST READ",
        "UPTIME",
        "LAST SEEN",
        "STATUS",
    ];
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(head.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    let offline = boxes.iter().filter(|b| !b.online()).count();
    out.push_str(&format!(
        "{} box(es), {} online, {offline} offline (offline: {} heartbeats missed)\n",
        boxes.len(),
        boxes.len() - offline,
        crate::registry::fleet::MISSED_BEATS
    ));
    out
}

/// `cardlinkctl fleet --json`: a stable document,
/// `{"boxes": [{"name", "role", "version", "online", "readers_up",
/// "readers_total", "readers": [{"name", "state"}], "printer",
/// "last_read", "uptime_s", "last_seen", "seen_s_ago", "heartbeat_s"}]}`
/// (times UTC, RFC 3339; `printer` and `last_read` may be null).
pub fn fleet_json(boxes: &[crate::registry::fleet::FleetBox]) -> serde_json::Value {
    let boxes: Vec<serde_json::Value> = boxes
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "role": b.role,
                "version": b.version,
                "online": b.online(),
                "readers_up": b.readers_up,
                "readers_total": b.readers_total,
                "readers": b.readers.iter().map(|r| serde_json::json!({"name": r.name, "state": r.state})).collect::<Vec<_>>(),
                "printer": b.printer,
                "last_read": b.last_read,
                "uptime_s": b.uptime_s,
                "last_seen": b.last_seen,
                "seen_s_ago": b.age_s,
                "heartbeat_s": b.interval_s,
            })
        })
        .collect();
    serde_json::json!({ "boxes": boxes })
}
