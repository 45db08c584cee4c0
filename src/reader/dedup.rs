//! Duplicate suppression for reader resends.
//!
//! A reader resends an unacknowledged frame with the same SEQ (every 300 ms,
//! up to 5 times). The host ACKs every copy but reports a repeated
//! (SEQ, payload) seen within the window (10 s) only once.
//!
//! The promise is kept by time, with a memory bound that a line cannot
//! reach: [`CAPACITY`] entries of 17 bytes of key and a timestamp (about
//! 1 MiB with the index). At 115,200 baud a line carries at most about
//! 1,650 of the shortest (7-byte) frames a second, 16,500 in 10 s, so the
//! window holds up to 230,400 baud; only a faster line filled with empty
//! frames could forget a frame before its 10 s are up (PROTOCOL.md).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Default window of protocol v1.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most (SEQ, payload) pairs remembered; past it the oldest is forgotten
/// even inside the window.
pub const CAPACITY: usize = 32 * 1024;

/// SEQ and the first 16 bytes of the payload's SHA-256.
type Key = (u8, [u8; 16]);

/// Remembers recently reported (SEQ, payload) pairs.
#[derive(Debug)]
pub struct Deduper {
    window: Duration,
    capacity: usize,
    order: VecDeque<(Instant, Key)>,
    seen: HashSet<Key>,
}

impl Default for Deduper {
    fn default() -> Self {
        Deduper::new(WINDOW)
    }
}

impl Deduper {
    /// A deduper with the given window and the default capacity.
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, CAPACITY)
    }

    /// A deduper with the given window and capacity.
    pub fn with_capacity(window: Duration, capacity: usize) -> Self {
        Deduper {
            window,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// `true` if (seq, payload) is new and should be reported; records it.
    pub fn first_time(&mut self, now: Instant, seq: u8, payload: &[u8]) -> bool {
        while let Some(&(t, key)) = self.order.front() {
            if now.saturating_duration_since(t) > self.window || self.order.len() >= self.capacity {
                self.order.pop_front();
                self.seen.remove(&key);
            } else {
                break;
            }
        }
        let digest = Sha256::digest(payload);
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        let key = (seq, short);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((now, key));
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

    #[test]
    fn thousands_of_distinct_frames_are_remembered_for_the_window() {
        let mut d = Deduper::default();
        let t0 = Instant::now();
        let n = 20_000u32;
        for i in 0..n {
            assert!(d.first_time(t0, i as u8, &i.to_le_bytes()));
        }
        for i in 0..n {
            assert!(!d.first_time(t0 + Duration::from_secs(9), i as u8, &i.to_le_bytes()));
        }
        assert_eq!(d.len(), n as usize);
        // After the window everything is forgotten, and memory is returned.
        assert!(d.first_time(t0 + Duration::from_secs(21), 0, b"new"));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Deduper::with_capacity(WINDOW, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            d.first_time(t0, 0, &i.to_le_bytes());
        }
        assert_eq!(d.len(), 100);
    }
}
