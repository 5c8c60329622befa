//! Blocks whose parent we do not know yet, held (bounded) until the parent arrives.
//!
//! An orphan cannot be checked against its parent, so it gets only the cheap checks
//! (proof of work against the network limit, size bounds) before it is pooled; the
//! merkle root and signatures are checked when its parent arrives. The pool is bounded
//! in count and bytes, and an orphan whose parent does not come within [`ORPHAN_TTL_SECS`]
//! is dropped, so junk cannot sit in it for good.

use super::types::{Block, Hash};
use std::collections::{HashMap, VecDeque};

/// Default cap on the number of orphan blocks.
pub const MAX_ORPHANS: usize = 64;
/// Default cap on the total encoded size of orphan blocks.
pub const MAX_ORPHAN_BYTES: usize = 2 * 1024 * 1024;
/// How long an orphan waits for its parent. An hour covers a slow radio link fetching
/// the parent chain; past that the orphan is fetched again if it is still wanted.
pub const ORPHAN_TTL_SECS: u64 = 60 * 60;

/// A bounded pool of orphan blocks; the oldest is evicted first.
#[derive(Debug)]
pub struct OrphanPool {
    max_count: usize,
    max_bytes: usize,
    // Block, encoded size, time it was added (seconds).
    blocks: HashMap<Hash, (Block, usize, u64)>,
    by_prev: HashMap<Hash, Vec<Hash>>,
    order: VecDeque<Hash>,
    bytes: usize,
}

impl Default for OrphanPool {
    fn default() -> Self {
        Self::new(MAX_ORPHANS, MAX_ORPHAN_BYTES)
    }
}

impl OrphanPool {
    /// An empty pool with these limits.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        OrphanPool {
            max_count,
            max_bytes,
            blocks: HashMap::new(),
            by_prev: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// True if held.
    pub fn contains(&self, h: &Hash) -> bool {
        self.blocks.contains_key(h)
    }

    /// A held block.
    pub fn get(&self, h: &Hash) -> Option<&Block> {
        self.blocks.get(h).map(|(b, _, _)| b)
    }

    /// Total encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drop orphans added more than [`ORPHAN_TTL_SECS`] before `now` (seconds).
    pub fn expire(&mut self, now: u64) {
        while let Some(old) = self.order.front().copied() {
            match self.blocks.get(&old) {
                Some((_, _, added)) if now.saturating_sub(*added) <= ORPHAN_TTL_SECS => break,
                _ => {
                    self.remove(&old);
                    // A stale order entry (already removed) must not stall the loop.
                    if self.order.front() == Some(&old) {
                        self.order.pop_front();
                    }
                }
            }
        }
    }

    /// Add a block at time `now` (seconds), evicting the oldest ones to stay within the
    /// limits. A block larger than the byte limit on its own is not kept.
    pub fn insert(&mut self, block: Block, now: u64) {
        let hash = block.hash();
        let size = block.encoded_len();
        if self.blocks.contains_key(&hash) || size > self.max_bytes || self.max_count == 0 {
            return;
        }
        while self.blocks.len() >= self.max_count || self.bytes + size > self.max_bytes {
            let Some(old) = self.order.front().copied() else {
                break;
            };
            self.remove(&old);
        }
        self.by_prev
            .entry(block.header.prev)
            .or_default()
            .push(hash);
        self.order.push_back(hash);
        self.bytes += size;
        self.blocks.insert(hash, (block, size, now));
    }

    /// Remove one block.
    pub fn remove(&mut self, h: &Hash) -> Option<Block> {
        let (block, size, _) = self.blocks.remove(h)?;
        self.bytes -= size;
        self.order.retain(|x| x != h);
        if let Some(v) = self.by_prev.get_mut(&block.header.prev) {
            v.retain(|x| x != h);
            if v.is_empty() {
                self.by_prev.remove(&block.header.prev);
            }
        }
        Some(block)
    }

    /// Remove and return the blocks whose parent is `parent`.
    pub fn take_children(&mut self, parent: &Hash) -> Vec<Block> {
        let ids = self.by_prev.get(parent).cloned().unwrap_or_default();
        ids.iter().filter_map(|h| self.remove(h)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::params;

    fn block(prev: u8, nonce: u64) -> Block {
        let mut b = params::regtest().genesis;
        b.header.prev = Hash([prev; 32]);
        b.header.nonce = nonce;
        b
    }

    #[test]
    fn evicts_oldest_by_count() {
        let mut p = OrphanPool::new(3, 1 << 20);
        let bs: Vec<Block> = (0..5).map(|i| block(1, i)).collect();
        for b in &bs {
            p.insert(b.clone(), 0);
        }
        assert_eq!(p.len(), 3);
        assert!(!p.contains(&bs[0].hash()));
        assert!(!p.contains(&bs[1].hash()));
        assert!(p.contains(&bs[4].hash()));
        assert_eq!(p.take_children(&Hash([1; 32])).len(), 3);
        assert!(p.is_empty());
    }

    #[test]
    fn evicts_oldest_by_bytes() {
        let size = block(1, 0).encoded_len();
        let mut p = OrphanPool::new(100, size * 2);
        for i in 0..4 {
            p.insert(block(2, i), 0);
        }
        assert_eq!(p.len(), 2);
        assert!(p.contains(&block(2, 3).hash()));
        assert!(!p.contains(&block(2, 0).hash()));
    }

    #[test]
    fn orphans_expire() {
        let mut p = OrphanPool::new(100, 1 << 20);
        p.insert(block(3, 0), 1000);
        p.insert(block(3, 1), 1000 + ORPHAN_TTL_SECS);
        p.expire(1000 + ORPHAN_TTL_SECS);
        assert_eq!(p.len(), 2, "nothing is past its time yet");
        p.expire(1001 + ORPHAN_TTL_SECS);
        assert_eq!(p.len(), 1);
        assert!(p.contains(&block(3, 1).hash()));
        p.expire(1001 + 2 * ORPHAN_TTL_SECS);
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }
}
