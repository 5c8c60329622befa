//! The block index: headers with their work and status, the presync area, the best
//! header chain and the download cursor, and the queries a peer's sync asks of them.

use super::{
    Chain, ChainError, TipInfo, MAX_PRESYNC_HEADERS, PRESYNC_MARGIN_BLOCKS, PRESYNC_TTL_SECS,
};
use crate::chain::pow;
use crate::chain::types::{Hash, Header};
use crate::chain::validate::{self, HeaderContext, ValidationError};
use crate::store::BlockStatus;
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;

/// No position: the end of a child list, or a height the best header chain lacks.
pub(super) const NONE: u32 = u32::MAX;

/// A header in the index.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) hash: Hash,
    pub(super) header: Header,
    pub(super) work: u128,
    pub(super) seq: u64,
    // Children as a list through the index (the first here, the others through each
    // child's `next_sibling`): no allocation and no map entry per block.
    first_child: u32,
    next_sibling: u32,
    pub(super) status: BlockStatus,
    pub(super) has_body: bool,
    // This block and all its ancestors have bodies and none is known invalid.
    pub(super) connectable: bool,
    // In the presync area: checked, in memory only, on a chain below the threshold.
    pub(super) presync: bool,
}

impl Node {
    /// A node for `header`, whose hash is `hash`.
    pub(super) fn new(
        hash: Hash,
        header: Header,
        work: u128,
        seq: u64,
        status: BlockStatus,
    ) -> Node {
        Node {
            hash,
            header,
            work,
            seq,
            first_child: NONE,
            next_sibling: NONE,
            status,
            has_body: false,
            connectable: false,
            presync: false,
        }
    }
}

/// Every header we know, in one vector addressed by position (`u32`), with a hash
/// table of positions that finds a node by its hash (kept once, in the node). It holds a
/// node per block of the chain, so its size per block is what a long chain costs in
/// memory: about 210 bytes here, where a map of hash to node with a map of children
/// beside it cost about 490 (BENCHMARKS.md, issue 14).
#[derive(Default)]
pub(super) struct BlockIndex {
    nodes: Vec<Node>,
    by_hash: HashTable<u32>,
    hasher: RandomState,
    // Positions of removed (presync) nodes, reused first so churn does not grow `nodes`.
    free: Vec<u32>,
}

/// The table's hash of the node at `pos` (a removed or absent one hashes as zero: the
/// table never holds it).
fn rehash(nodes: &[Node], hasher: &RandomState, pos: u32) -> u64 {
    nodes
        .get(pos as usize)
        .map_or(0, |n| hasher.hash_one(n.hash))
}

impl BlockIndex {
    pub(super) fn reserve(&mut self, n: usize) {
        self.nodes.reserve(n);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.by_hash.reserve(n, |&p| rehash(nodes, hasher, p));
    }

    pub(super) fn pos(&self, h: &Hash) -> Option<u32> {
        let nodes = &self.nodes;
        self.by_hash
            .find(self.hasher.hash_one(h), |&p| {
                nodes.get(p as usize).is_some_and(|n| n.hash == *h)
            })
            .copied()
    }

    pub(super) fn at(&self, pos: u32) -> Option<&Node> {
        self.nodes.get(pos as usize)
    }

    pub(super) fn get(&self, h: &Hash) -> Option<&Node> {
        self.pos(h).and_then(|p| self.at(p))
    }

    pub(super) fn get_mut(&mut self, h: &Hash) -> Option<&mut Node> {
        let p = self.pos(h)?;
        self.nodes.get_mut(p as usize)
    }

    pub(super) fn contains_key(&self, h: &Hash) -> bool {
        self.pos(h).is_some()
    }

    /// Live nodes with their hashes, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Hash, &Node)> {
        self.by_hash
            .iter()
            .filter_map(|&p| self.at(p).map(|n| (&n.hash, n)))
    }

    /// Add a node (not yet indexed) as the last child of its parent, if indexed.
    /// Returns its position, or `None` when the index is full (4 billion headers).
    pub(super) fn insert(&mut self, node: Node) -> Option<u32> {
        let (hash, prev) = (node.hash, node.header.prev);
        let pos = match self.free.pop() {
            Some(p) => {
                *self.nodes.get_mut(p as usize)? = node;
                p
            }
            None => {
                let p = u32::try_from(self.nodes.len())
                    .ok()
                    .filter(|p| *p != NONE)?;
                self.nodes.push(node);
                p
            }
        };
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.by_hash
            .insert_unique(hasher.hash_one(hash), pos, |&p| rehash(nodes, hasher, p));
        if let Some(parent) = self.pos(&prev) {
            self.link_child(parent, pos);
        }
        Some(pos)
    }

    fn link_child(&mut self, parent: u32, child: u32) {
        // Appended at the end so children come in arrival order, as before.
        let mut last = NONE;
        let mut cur = self.at(parent).map_or(NONE, |n| n.first_child);
        while let Some(n) = self.at(cur) {
            last = cur;
            cur = n.next_sibling;
        }
        let slot = if last == NONE {
            self.nodes
                .get_mut(parent as usize)
                .map(|n| &mut n.first_child)
        } else {
            self.nodes
                .get_mut(last as usize)
                .map(|n| &mut n.next_sibling)
        };
        if let Some(slot) = slot {
            *slot = child;
        }
    }

    /// Hashes of the indexed children of `h`, in arrival order.
    pub(super) fn children(&self, h: &Hash) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut cur = self.get(h).map_or(NONE, |n| n.first_child);
        while let Some(n) = self.at(cur) {
            out.push(n.hash);
            cur = n.next_sibling;
        }
        out
    }

    /// Remove a node, unlinking it from its parent's children; its own children are
    /// left unreachable, so the caller removes them too.
    pub(super) fn remove(&mut self, h: &Hash) {
        let Some(pos) = self.pos(h) else {
            return;
        };
        let nodes = &self.nodes;
        if let Ok(entry) = self.by_hash.find_entry(self.hasher.hash_one(h), |&p| {
            nodes.get(p as usize).is_some_and(|n| n.hash == *h)
        }) {
            entry.remove();
        }
        let Some((prev, next)) = self.at(pos).map(|n| (n.header.prev, n.next_sibling)) else {
            return;
        };
        if let Some(parent) = self.pos(&prev) {
            let mut cur = self.at(parent).map_or(NONE, |n| n.first_child);
            if cur == pos {
                if let Some(n) = self.nodes.get_mut(parent as usize) {
                    n.first_child = next;
                }
            } else {
                while let Some(n) = self.at(cur) {
                    if n.next_sibling == pos {
                        if let Some(n) = self.nodes.get_mut(cur as usize) {
                            n.next_sibling = next;
                        }
                        break;
                    }
                    cur = n.next_sibling;
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(pos as usize) {
            n.first_child = NONE;
            n.next_sibling = NONE;
        }
        self.free.push(pos);
    }
}

impl Chain {
    pub(super) fn rescan_best_header(&mut self) {
        let best = self
            .index
            .iter()
            .filter(|(_, n)| n.status != BlockStatus::Invalid && !n.presync)
            .max_by(|a, b| a.1.work.cmp(&b.1.work).then(b.1.seq.cmp(&a.1.seq)))
            .map(|(h, _)| *h);
        self.set_best_header(best.unwrap_or_else(|| self.params.genesis_hash()));
    }

    /// Move the best header to `best`, updating `best_chain` from the fork point up
    /// (O(reorg depth)) and bringing the download cursor down to the fork point.
    fn set_best_header(&mut self, best: Hash) {
        self.best_header = best;
        let mut path = Vec::new();
        let mut cur = self.index.pos(&best);
        // `Some(f)`: `best_chain[..f]` is still right.
        let mut keep = None;
        while let Some((p, n)) = cur.and_then(|p| Some((p, self.index.at(p)?))) {
            let h = n.header.height;
            if self.best_chain.get(h as usize) == Some(&p) {
                keep = Some(h + 1);
                break;
            }
            path.push(p);
            if h == 0 {
                keep = Some(0);
                break;
            }
            cur = self.index.pos(&n.header.prev);
        }
        let base = match keep {
            Some(f) => f,
            None => {
                // An ancestor missing from the index: nothing below it is known.
                let low = path
                    .last()
                    .and_then(|&p| self.index.at(p))
                    .map_or(0, |n| n.header.height);
                self.best_chain.clear();
                self.dl_cursor.store(0, Ordering::Relaxed);
                low
            }
        };
        let base_len = usize::try_from(base).unwrap_or(usize::MAX);
        self.best_chain.truncate(base_len);
        self.best_chain.resize(base_len, NONE);
        self.best_chain.extend(path.into_iter().rev());
        self.dl_cursor.fetch_min(base, Ordering::Relaxed);
    }

    pub(super) fn info(&self, h: &Hash) -> TipInfo {
        match self.index.get(h) {
            Some(n) => TipInfo {
                hash: *h,
                height: n.header.height,
                work: n.work,
                time: n.header.time,
            },
            None => TipInfo {
                hash: *h,
                height: 0,
                work: 0,
                time: 0,
            },
        }
    }

    pub(super) fn tip_hash(&self) -> Hash {
        self.main
            .last()
            .and_then(|&p| self.index.at(p))
            .map_or_else(|| self.params.genesis_hash(), |n| n.hash)
    }

    /// Tip of the most-work header chain not known invalid (may be ahead of the tip).
    pub fn best_header(&self) -> TipInfo {
        self.info(&self.best_header)
    }

    /// Cumulative work a header chain needs before its headers are stored: the
    /// network's `min_chain_work`, or the tip's work less [`PRESYNC_MARGIN_BLOCKS`]
    /// blocks at the tip's difficulty if that is more. Below it a peer's headers cost
    /// us only a bounded, expiring slot in the presync area.
    pub fn store_threshold(&self) -> u128 {
        let tip = self.tip();
        let bits = self
            .index
            .get(&tip.hash)
            .map_or(self.params.pow_limit_bits, |n| n.header.bits);
        let margin = pow::work(bits).saturating_mul(PRESYNC_MARGIN_BLOCKS);
        self.params
            .min_chain_work
            .max(tip.work.saturating_sub(margin))
    }

    /// Number of headers held in the presync area.
    pub fn presync_len(&self) -> usize {
        self.presync_count
    }

    /// Number of block hashes remembered as invalid without being indexed.
    pub fn invalid_len(&self) -> usize {
        self.invalid.len()
    }

    /// True if the block's body is stored or held as an orphan.
    pub fn has_block(&self, h: &Hash) -> bool {
        self.index.get(h).is_some_and(|n| n.has_body) || self.orphans.contains(h)
    }

    /// True if the header is in the index (valid or not), stored or in presync.
    pub fn has_header(&self, h: &Hash) -> bool {
        self.index.contains_key(h)
    }

    /// A known header.
    pub fn header(&self, h: &Hash) -> Option<Header> {
        self.index.get(h).map(|n| n.header.clone())
    }

    /// True if the block is known invalid.
    pub fn is_invalid(&self, h: &Hash) -> bool {
        self.invalid.contains(h)
            || self
                .index
                .get(h)
                .is_some_and(|n| n.status == BlockStatus::Invalid)
    }

    /// Hash of the main-chain block at `height`.
    pub fn main_hash_at(&self, height: u64) -> Option<Hash> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.main.get(h))
            .and_then(|&p| self.index.at(p))
            .map(|n| n.hash)
    }

    /// True if the block is on the active chain.
    pub fn is_on_main_chain(&self, h: &Hash) -> bool {
        self.index.pos(h).is_some_and(|p| {
            self.index.at(p).is_some_and(|n| {
                usize::try_from(n.header.height)
                    .ok()
                    .and_then(|i| self.main.get(i))
                    == Some(&p)
            })
        })
    }

    /// Block locator: hashes from the tip back to genesis, one by one for the first ten,
    /// then doubling the step; at most 64 entries, always ending with genesis.
    pub fn locator(&self) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut h = self.main.len().saturating_sub(1);
        let mut step = 1usize;
        loop {
            if h == 0 || out.len() == 63 {
                break;
            }
            if let Some(hash) = self.main_hash_at(h as u64) {
                out.push(hash);
            }
            if out.len() >= 10 {
                step = step.saturating_mul(2);
            }
            h = h.saturating_sub(step);
        }
        out.push(self.params.genesis_hash());
        out
    }

    /// Main-chain headers after the first locator hash found on our main chain (after
    /// genesis if none is), at most `max`, ending early after `stop`.
    pub fn headers_after(&self, locator: &[Hash], stop: Option<Hash>, max: usize) -> Vec<Header> {
        let start = locator
            .iter()
            .find_map(|h| {
                self.is_on_main_chain(h)
                    .then(|| self.index.get(h).map(|n| n.header.height))
                    .flatten()
            })
            .unwrap_or(0)
            .saturating_add(1);
        let mut out = Vec::new();
        let mut height = start;
        while out.len() < max {
            let Some(h) = self.main_hash_at(height) else {
                break;
            };
            let Some(n) = self.index.get(&h) else { break };
            out.push(n.header.clone());
            if Some(h) == stop {
                break;
            }
            height += 1;
        }
        out
    }

    /// The ancestor of `h` at `height` (or `h` itself).
    fn ancestor(&self, h: &Hash, height: u64) -> Option<Hash> {
        let mut cur = *h;
        loop {
            let n = self.index.get(&cur)?;
            if n.header.height == height {
                return Some(cur);
            }
            if n.header.height < height {
                return None;
            }
            if self.main_hash_at(n.header.height) == Some(cur) {
                return self.main_hash_at(height);
            }
            cur = n.header.prev;
        }
    }

    pub(super) fn median_time_past(&self, h: &Hash) -> u64 {
        let mut times = Vec::with_capacity(self.params.median_time_span);
        let mut cur = Some(*h);
        while times.len() < self.params.median_time_span {
            let Some(n) = cur.and_then(|c| self.index.get(&c)) else {
                break;
            };
            times.push(n.header.time);
            cur = (n.header.height > 0).then_some(n.header.prev);
        }
        validate::median_time(&mut times)
    }

    fn bits_after(&self, parent: &Hash) -> u32 {
        let Some(p) = self.index.get(parent) else {
            return self.params.pow_limit_bits;
        };
        let next = p.header.height.saturating_add(1);
        match pow::retarget_window(&self.params, next) {
            None => p.header.bits,
            Some((first, _)) => {
                let first_time = self
                    .ancestor(parent, first)
                    .and_then(|a| self.index.get(&a))
                    .map_or(p.header.time, |n| n.header.time);
                pow::next_bits(&self.params, next, p.header.bits, first_time, p.header.time)
            }
        }
    }

    /// Bits required for the block after the tip.
    pub fn next_bits(&self) -> u32 {
        self.bits_after(&self.tip_hash())
    }

    /// Contextual checks of a header (against its parent: height, bits, proof of work,
    /// time). `Ok(None)` if already indexed; `Ok(Some(work))` with the chain work it
    /// would have. A header that breaks a rule is remembered as invalid by hash (unless
    /// it is only early: its time may become acceptable), and so is one whose parent is
    /// invalid, so its own children are refused instead of becoming orphans.
    pub(super) fn check_in_context(
        &mut self,
        header: &Header,
        now: u64,
    ) -> Result<Option<u128>, ChainError> {
        let hash = header.hash();
        if self.invalid.contains(&hash) {
            return Err(ChainError::KnownInvalid(hash));
        }
        if let Some(n) = self.index.get(&hash) {
            if n.status == BlockStatus::Invalid {
                return Err(ChainError::KnownInvalid(hash));
            }
            return Ok(None);
        }
        if self.invalid.contains(&header.prev) {
            if validate::check_header_alone(&self.params, header).is_ok() {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::KnownInvalid(hash));
        }
        let Some(parent) = self.index.get(&header.prev) else {
            return Err(ChainError::UnknownParent {
                hash,
                prev: header.prev,
            });
        };
        if parent.status == BlockStatus::Invalid {
            if validate::check_header_alone(&self.params, header).is_ok() {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::KnownInvalid(hash));
        }
        let parent_work = parent.work;
        let ctx = HeaderContext {
            parent_height: parent.header.height,
            expected_bits: self.bits_after(&header.prev),
            median_time_past: self.median_time_past(&header.prev),
        };
        if let Err(reason) = validate::check_header(&self.params, header, &ctx, now) {
            // A header with bad proof of work cost nothing: not worth a slot.
            if !matches!(
                reason,
                ValidationError::TimeTooNew { .. } | ValidationError::BadPow
            ) {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::InvalidHeader { hash, reason });
        }
        Ok(Some(parent_work.saturating_add(pow::work(header.bits))))
    }

    /// Insert a checked header into the in-memory index, in the presync area if its
    /// chain work is below the threshold (and `store` is false). A header stored takes
    /// its presync ancestors out of the area with it. Returns the rows to persist
    /// (ancestors first) and whether this header is in presync.
    pub(super) fn insert_header(
        &mut self,
        header: &Header,
        work: u128,
        now: u64,
        store: bool,
    ) -> (Vec<(Header, u128, u64)>, bool) {
        let hash = header.hash();
        let presync = !store && work < self.store_threshold();
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut node = Node::new(hash, header.clone(), work, seq, BlockStatus::HeaderOnly);
        node.presync = presync;
        if self.index.insert(node).is_none() {
            // 4 billion headers: not indexed, as if dropped from presync.
            return (Vec::new(), true);
        }
        if presync {
            self.presync.push_back((hash, now));
            self.presync_count += 1;
            self.trim_presync(now);
            return (Vec::new(), true);
        }
        (self.leave_presync(hash), false)
    }

    /// Take `hash` (stored or presync) and its presync ancestors out of the presync
    /// area; returns their rows to persist, oldest first.
    pub(super) fn leave_presync(&mut self, hash: Hash) -> Vec<(Header, u128, u64)> {
        let mut rows = Vec::new();
        let mut cur = hash;
        while let Some(n) = self.index.get_mut(&cur) {
            if !n.presync && cur != hash {
                break;
            }
            if n.presync {
                n.presync = false;
                self.presync_count = self.presync_count.saturating_sub(1);
            }
            rows.push((n.header.clone(), n.work, n.seq));
            cur = n.header.prev;
        }
        rows.reverse();
        for (h, w, _) in &rows {
            let best = self.index.get(&self.best_header).map_or(0, |n| n.work);
            if *w > best {
                self.set_best_header(h.hash());
            }
        }
        rows
    }

    /// Drop presync headers past their time or beyond the cap, oldest first, each with
    /// its descendants (which cannot be checked without it).
    fn trim_presync(&mut self, now: u64) {
        while let Some(&(h, t)) = self.presync.front() {
            let live = self.index.get(&h).is_some_and(|n| n.presync);
            let over = self.presync_count > MAX_PRESYNC_HEADERS;
            if live && !over && now.saturating_sub(t) <= PRESYNC_TTL_SECS {
                break;
            }
            self.presync.pop_front();
            if live {
                self.remove_presync_subtree(h);
            }
        }
        // Promotions leave stale entries; keep the queue within twice the cap.
        if self.presync.len() > 2 * MAX_PRESYNC_HEADERS {
            let index = &self.index;
            self.presync
                .retain(|(h, _)| index.get(h).is_some_and(|n| n.presync));
        }
    }

    pub(super) fn remove_presync_subtree(&mut self, root: Hash) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get(&h) else {
                continue;
            };
            if !n.presync {
                continue;
            }
            stack.extend(self.index.children(&h));
            self.index.remove(&h);
            self.presync_count = self.presync_count.saturating_sub(1);
        }
    }

    /// Contextual header checks and insertion into the index; rows for the store are
    /// appended to `rows`. Returns the node's (work, seq) if it was new and is stored
    /// (not in presync), `None` otherwise.
    fn index_header(
        &mut self,
        header: &Header,
        now: u64,
        rows: &mut Vec<(Header, u128, u64)>,
    ) -> Result<Option<(u128, u64)>, ChainError> {
        let Some(work) = self.check_in_context(header, now)? else {
            return Ok(None);
        };
        let (new_rows, presync) = self.insert_header(header, work, now, false);
        rows.extend(new_rows);
        if presync {
            return Ok(None);
        }
        Ok(self.index.get(&header.hash()).map(|n| (n.work, n.seq)))
    }

    /// Forget what has outlived its time: orphans, invalid hashes, presync headers.
    pub(super) fn expire(&mut self, now: u64) {
        self.orphans.expire(now);
        self.invalid.expire(now);
        self.trim_presync(now);
    }

    /// Add headers (in chain order) to the index after contextual checks. Headers on a
    /// chain whose work is below [`Chain::store_threshold`] are held in the presync area
    /// and stored once a later header brings their chain to it. Returns how many headers
    /// were stored; stops at the first invalid one with an error (the valid ones before
    /// it are kept).
    pub fn accept_headers(&mut self, headers: &[Header], now: u64) -> Result<usize, ChainError> {
        self.expire(now);
        let mut rows = Vec::new();
        let mut result = Ok(());
        for h in headers {
            if let Err(e) = self.index_header(h, now, &mut rows) {
                result = Err(e);
                break;
            }
        }
        self.store.put_headers(&rows)?;
        result.map(|()| rows.len())
    }

    /// Bodies missing on the best header chain above its last connectable block, lowest
    /// height first, at most `max`.
    ///
    /// Starts from the download cursor rather than walking down from the best header,
    /// so a call costs O(`max`) amortised plus the bodies already held above the first
    /// gap (bounded by what was requested out of order), not O(chain length).
    pub fn missing_blocks(&self, max: usize) -> Vec<Hash> {
        let mut out = Vec::new();
        let len = self.best_chain.len() as u64;
        let mut cursor = self.dl_cursor.load(Ordering::Relaxed);
        while cursor < len {
            let connectable = self
                .best_chain
                .get(cursor as usize)
                .and_then(|&p| self.index.at(p))
                .is_some_and(|n| n.connectable);
            if !connectable {
                break;
            }
            cursor += 1;
        }
        self.dl_cursor.store(cursor, Ordering::Relaxed);
        // Genesis is never fetched.
        let from = usize::try_from(cursor.max(1)).unwrap_or(usize::MAX);
        for &p in self.best_chain.iter().skip(from) {
            if out.len() >= max {
                break;
            }
            if let Some(n) = self.index.at(p).filter(|n| !n.has_body) {
                out.push(n.hash);
            }
        }
        out
    }

    /// The walk [`Chain::missing_blocks`] replaced: the reference its tests compare with.
    #[cfg(test)]
    pub(crate) fn missing_blocks_walk(&self, max: usize) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut cur = self.best_header;
        while let Some(n) = self.index.get(&cur) {
            if n.connectable || n.header.height == 0 {
                break;
            }
            if !n.has_body {
                out.push(cur);
            }
            cur = n.header.prev;
        }
        out.reverse();
        out.truncate(max);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(prev: Hash, height: u64, nonce: u64) -> Node {
        let header = Header {
            version: 1,
            prev,
            merkle_root: Hash::ZERO,
            time: 0,
            bits: 0,
            nonce,
            height,
        };
        Node::new(header.hash(), header, 0, 0, BlockStatus::HeaderOnly)
    }

    /// Removing nodes (presync churn) unlinks them from their parent's children, the
    /// hash no longer finds them, and the freed position is reused.
    #[test]
    fn removal_unlinks_and_positions_are_reused() {
        let mut ix = BlockIndex::default();
        let root = node(Hash::ZERO, 0, 0);
        let r = root.hash;
        ix.insert(root).unwrap();
        let kids: Vec<Node> = (1..=3).map(|i| node(r, 1, i)).collect();
        let hashes: Vec<Hash> = kids.iter().map(|n| n.hash).collect();
        let positions: Vec<u32> = kids.into_iter().map(|n| ix.insert(n).unwrap()).collect();
        assert_eq!(ix.children(&r), hashes);
        // The middle child, then the first: both links of the list are mended.
        ix.remove(&hashes[1]);
        assert_eq!(ix.children(&r), vec![hashes[0], hashes[2]]);
        ix.remove(&hashes[0]);
        assert_eq!(ix.children(&r), vec![hashes[2]]);
        assert!(!ix.contains_key(&hashes[0]) && !ix.contains_key(&hashes[1]));
        assert_eq!(ix.iter().count(), 2);
        let again = node(r, 1, 9);
        let h = again.hash;
        let p = ix.insert(again).unwrap();
        assert!(
            p == positions[0] || p == positions[1],
            "slot {p} not reused"
        );
        assert_eq!(ix.get(&h).map(|n| n.hash), Some(h));
        assert_eq!(ix.children(&r), vec![hashes[2], h]);
        assert_eq!(ix.get(&hashes[2]).map(|n| n.hash), Some(hashes[2]));
    }
}
