//! Duplicate suppression for reader resends.
//!
//! A reader resends an unacknowledged frame with the same SEQ (every 300 ms,
//! up to 5 times). The host ACKs every copy but reports a repeated
//! (SEQ, payload) seen within the window (10 s) only once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Default window of protocol v1.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most entries remembered; older ones are forgotten first.
const CAPACITY: usize = 256;

/// Remembers recently reported (SEQ, payload) pairs.
#[derive(Debug)]
pub struct Deduper {
    window: Duration,
    seen: VecDeque<(Instant, u8, [u8; 32])>,
}

impl Default for Deduper {
    fn default() -> Self {
        Deduper::new(WINDOW)
    }
}

impl Deduper {
    /// A deduper with the given window.
    pub fn new(window: Duration) -> Self {
        Deduper {
            window,
            seen: VecDeque::new(),
        }
    }

    /// `true` if (seq, payload) is new and should be reported; records it.
    pub fn first_time(&mut self, now: Instant, seq: u8, payload: &[u8]) -> bool {
        while let Some(&(t, _, _)) = self.seen.front() {
            if now.duration_since(t) > self.window || self.seen.len() >= CAPACITY {
                self.seen.pop_front();
            } else {
                break;
            }
        }
        let digest: [u8; 32] = Sha256::digest(payload).into();
        if self.seen.iter().any(|&(_, s, d)| s == seq && d == digest) {
            return false;
        }
        self.seen.push_back((now, seq, digest));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_window_reported_once() {
        let mut d = Deduper::default();
        let t0 = Instant::now();
        assert!(d.first_time(t0, 1, b"card"));
        assert!(!d.first_time(t0 + Duration::from_millis(300), 1, b"card"));
        assert!(d.first_time(t0 + Duration::from_millis(300), 2, b"card"));
        assert!(d.first_time(t0 + Duration::from_millis(300), 1, b"other"));
        assert!(d.first_time(t0 + Duration::from_secs(11), 1, b"card"));
    }
}
