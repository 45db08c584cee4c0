//! The one retry schedule of cardlink: after each failure the wait doubles,
//! from a first delay up to a ceiling; a success starts it again.
//!
//! Used wherever something is tried again until it works: a reader's port
//! (`daemon::serial`, `daemon::library`), the PostgreSQL server
//! (`registry::pg`), and the daemon's socket as the display and
//! `cardlinkctl watch` see it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `first`, then twice as long each time, never over `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait the next failure takes.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// A failure: returns the wait to take now and doubles the next one.
    pub fn fail(&mut self) -> Duration {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        now
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Whether no failure has been counted since the last success.
    pub fn is_fresh(&self) -> bool {
        self.next == self.first
    }

    /// A failure: sleeps the wait (on tokio's clock) unless `stop` comes
    /// first. `false` when stopped.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.fail();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_starts_again_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| b.fail().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        assert!(!b.is_fresh());
        b.reset();
        assert!(b.is_fresh());
        assert_eq!(b.fail(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_early_when_stopped() {
        let stop = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        assert!(b.wait(&stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        stop.cancel();
        assert!(!b.wait(&stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
