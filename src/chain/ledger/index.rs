//! The block index: headers with their work and status, the presync area, the best
//! header chain and the download cursor, and the queries a peer's sync asks of them.

use super::{
    Chain, ChainError, Node, TipInfo, MAX_PRESYNC_HEADERS, PRESYNC_MARGIN_BLOCKS, PRESYNC_TTL_SECS,
};
use crate::chain::pow;
use crate::chain::types::{Hash, Header};
use crate::chain::validate::{self, HeaderContext, ValidationError};
use crate::store::BlockStatus;
use std::sync::atomic::Ordering;

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
        let mut cur = best;
        // `Some(f)`: `best_chain[..f]` is still right.
        let mut keep = None;
        while let Some(n) = self.index.get(&cur) {
            let h = n.header.height;
            if self.best_chain.get(h as usize) == Some(&cur) {
                keep = Some(h + 1);
                break;
            }
            path.push(cur);
            if h == 0 {
                keep = Some(0);
                break;
            }
            cur = n.header.prev;
        }
        let base = match keep {
            Some(f) => f,
            None => {
                // An ancestor missing from the index: nothing below it is known.
                let low = path
                    .last()
                    .and_then(|h| self.index.get(h))
                    .map_or(0, |n| n.header.height);
                self.best_chain.clear();
                self.dl_cursor.store(0, Ordering::Relaxed);
                low
            }
        };
        let base_len = usize::try_from(base).unwrap_or(usize::MAX);
        self.best_chain.truncate(base_len);
        self.best_chain.resize(base_len, Hash::ZERO);
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
            .copied()
            .unwrap_or_else(|| self.params.genesis_hash())
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
            .copied()
    }

    /// True if the block is on the active chain.
    pub fn is_on_main_chain(&self, h: &Hash) -> bool {
        self.index
            .get(h)
            .is_some_and(|n| self.main_hash_at(n.header.height) == Some(*h))
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
            out.push(self.main[h]);
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
        self.index.insert(
            hash,
            Node {
                header: header.clone(),
                work,
                status: BlockStatus::HeaderOnly,
                has_body: false,
                seq,
                connectable: false,
                presync,
            },
        );
        self.children.entry(header.prev).or_default().push(hash);
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
            let prev = n.header.prev;
            self.index.remove(&h);
            self.presync_count = self.presync_count.saturating_sub(1);
            if let Some(v) = self.children.get_mut(&prev) {
                v.retain(|x| *x != h);
                if v.is_empty() {
                    self.children.remove(&prev);
                }
            }
            if let Some(c) = self.children.remove(&h) {
                stack.extend(c);
            }
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
                .and_then(|h| self.index.get(h))
                .is_some_and(|n| n.connectable);
            if !connectable {
                break;
            }
            cursor += 1;
        }
        self.dl_cursor.store(cursor, Ordering::Relaxed);
        // Genesis is never fetched.
        let from = usize::try_from(cursor.max(1)).unwrap_or(usize::MAX);
        for h in self.best_chain.iter().skip(from) {
            if out.len() >= max {
                break;
            }
            if self.index.get(h).is_some_and(|n| !n.has_body) {
                out.push(*h);
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
