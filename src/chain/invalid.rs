//! Hashes of blocks found invalid that never made it into the block index.
//!
//! A header that fails its checks, or descends from one that did, is remembered by hash
//! only, so a peer that sends it again (or sends its children) is refused at once. The
//! set is bounded in count and every entry expires: attacker-chosen data is never kept,
//! and what is kept cannot grow or stay for good. Blocks that were stored before they
//! were found invalid keep their `Invalid` status in the store (they cost real work).

use super::types::Hash;
use std::collections::{HashMap, VecDeque};

/// Default cap on remembered hashes (40 bytes each, about 400 KB at most).
pub const MAX_INVALID: usize = 10_000;
/// How long an invalid hash is remembered, in seconds.
pub const INVALID_TTL_SECS: u64 = 24 * 60 * 60;

/// A bounded, expiring set of invalid block hashes; the oldest is forgotten first.
#[derive(Debug)]
pub struct InvalidSet {
    max: usize,
    ttl: u64,
    added: HashMap<Hash, u64>,
    order: VecDeque<(Hash, u64)>,
}

impl Default for InvalidSet {
    fn default() -> Self {
        Self::new(MAX_INVALID, INVALID_TTL_SECS)
    }
}

impl InvalidSet {
    /// An empty set holding at most `max` hashes for `ttl` seconds each.
    pub fn new(max: usize, ttl: u64) -> Self {
        InvalidSet {
            max,
            ttl,
            added: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Number of hashes held.
    pub fn len(&self) -> usize {
        self.added.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
    }

    /// True if `h` is remembered as invalid.
    pub fn contains(&self, h: &Hash) -> bool {
        self.added.contains_key(h)
    }

    /// Remember `h` at `now` (seconds), forgetting the oldest to stay within the cap.
    pub fn insert(&mut self, h: Hash, now: u64) {
        if self.max == 0 {
            return;
        }
        self.expire(now);
        if self.added.get(&h) == Some(&now) {
            return;
        }
        // A refresh leaves the old queue entry stale; it is skipped when it comes up.
        self.added.insert(h, now);
        self.order.push_back((h, now));
        while self.added.len() > self.max {
            self.pop_oldest();
        }
        // Refreshes leave stale queue entries; keep the queue within twice the cap.
        if self.order.len() > 2 * self.max {
            let added = &self.added;
            self.order.retain(|(h, t)| added.get(h) == Some(t));
        }
    }

    /// Forget hashes remembered more than the TTL before `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some(&(_, t)) = self.order.front() {
            if now.saturating_sub(t) <= self.ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((h, t)) = self.order.pop_front() {
            if self.added.get(&h) == Some(&t) {
                self.added.remove(&h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Hash {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        Hash(b)
    }

    #[test]
    fn bounded_and_oldest_forgotten_first() {
        let mut s = InvalidSet::new(3, 1000);
        for i in 0..10 {
            s.insert(h(i), 5);
        }
        assert_eq!(s.len(), 3);
        assert!(!s.contains(&h(6)));
        assert!(s.contains(&h(7)) && s.contains(&h(9)));
    }

    #[test]
    fn entries_expire_and_refresh() {
        let mut s = InvalidSet::new(100, 1000);
        s.insert(h(1), 0);
        s.insert(h(2), 500);
        s.insert(h(1), 900); // seen again: remembered from now
        s.expire(1400);
        assert!(s.contains(&h(1)) && s.contains(&h(2)));
        s.expire(1600);
        assert!(s.contains(&h(1)), "refreshed entry kept");
        assert!(!s.contains(&h(2)));
        s.expire(2000);
        assert!(s.is_empty());
    }

    #[test]
    fn refreshing_one_hash_does_not_grow_the_queue() {
        let mut s = InvalidSet::new(4, 1000);
        for t in 0..1000 {
            s.insert(h(1), t / 10);
        }
        assert_eq!(s.len(), 1);
        assert!(s.order.len() <= 8);
    }
}
