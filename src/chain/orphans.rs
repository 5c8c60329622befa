//! Blocks whose parent we do not know yet, held (bounded) until the parent arrives.

use super::types::{Block, Hash};
use std::collections::{HashMap, VecDeque};

/// Default cap on the number of orphan blocks.
pub const MAX_ORPHANS: usize = 64;
/// Default cap on the total encoded size of orphan blocks.
pub const MAX_ORPHAN_BYTES: usize = 2 * 1024 * 1024;

/// A bounded pool of orphan blocks; the oldest is evicted first.
#[derive(Debug)]
pub struct OrphanPool {
    max_count: usize,
    max_bytes: usize,
    blocks: HashMap<Hash, (Block, usize)>,
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
        self.blocks.get(h).map(|(b, _)| b)
    }

    /// Add a block, evicting the oldest ones to stay within the limits. A block larger
    /// than the byte limit on its own is not kept.
    pub fn insert(&mut self, block: Block) {
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
        self.blocks.insert(hash, (block, size));
    }

    /// Remove one block.
    pub fn remove(&mut self, h: &Hash) -> Option<Block> {
        let (block, size) = self.blocks.remove(h)?;
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
            p.insert(b.clone());
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
            p.insert(block(2, i));
        }
        assert_eq!(p.len(), 2);
        assert!(p.contains(&block(2, 3).hash()));
        assert!(!p.contains(&block(2, 0).hash()));
    }
}
