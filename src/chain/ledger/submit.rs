//! Accepting what arrives: blocks (orphans, context and body checks, storing) and
//! transactions (into the mempool), and the template for the next block.

use super::{internal, BlockOutcome, Chain, ChainError, TxOutcome};
use crate::chain::merkle;
use crate::chain::types::{Address, Block, Coinbase, Hash, Header, Transaction, VerifiedTx};
use crate::chain::validate::{self, ValidationError};
use crate::store::BlockStatus;
use std::sync::Arc;

impl Chain {
    /// Submit a block from anywhere (peer, miner, API). On `Ok` everything it changed is
    /// durable in the store.
    ///
    /// The order of checks bounds what a peer can make us do: proof of work (under the
    /// network limit) first; then, for a block whose parent is unknown, only size bounds
    /// before it waits in the orphan pool; for a known parent, the header's context
    /// (height, bits, time) before the merkle root and the signatures.
    pub fn submit_block(&mut self, block: Block, now: u64) -> Result<BlockOutcome, ChainError> {
        self.expire(now);
        let hash = block.hash();
        if self.invalid.contains(&hash) {
            return Err(ChainError::KnownInvalid(hash));
        }
        if let Some(n) = self.index.get(&hash) {
            if n.status == BlockStatus::Invalid {
                return Err(ChainError::KnownInvalid(hash));
            }
            if n.has_body {
                return Ok(BlockOutcome::Duplicate);
            }
        }
        if self.orphans.contains(&hash) {
            return Ok(BlockOutcome::Duplicate);
        }
        validate::check_header_alone(&self.params, &block.header)
            .map_err(|reason| ChainError::InvalidBlock { hash, reason })?;
        let prev = block.header.prev;
        if !self.index.contains_key(&prev) && !self.is_invalid(&prev) {
            // Nothing to check it against yet: hold it, cheaply bounded.
            validate::check_body_bounds(&self.params, &block)
                .map_err(|reason| ChainError::InvalidBlock { hash, reason })?;
            tracing::debug!(%hash, %prev, "orphan block");
            self.orphans.insert(block, now);
            return Ok(BlockOutcome::Orphan);
        }
        let old_tip = self.tip_hash();
        match self.accept_body(block, now) {
            Ok(true) => {}
            Ok(false) => return Ok(BlockOutcome::SideChain),
            Err(e) => {
                self.drop_orphans_of(hash, now);
                return Err(e);
            }
        }
        // Orphans waiting for this block (and their own children) can now be checked.
        let mut queue = vec![hash];
        while let Some(parent) = queue.pop() {
            for child in self.orphans.take_children(&parent) {
                let ch = child.hash();
                match self.accept_body(child, now) {
                    Ok(true) => queue.push(ch),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(block = %ch, "dropped orphan: {e}");
                        self.drop_orphans_of(ch, now);
                    }
                }
            }
        }
        let failures = self.activate()?;
        if self.is_invalid(&hash) {
            let reason = failures
                .into_iter()
                .find(|(h, _)| *h == hash)
                .map(|(_, r)| r);
            return Err(match reason {
                Some(reason) => ChainError::InvalidBlock { hash, reason },
                None => ChainError::KnownInvalid(hash),
            });
        }
        let new_tip = self.tip_hash();
        if new_tip == old_tip {
            return Ok(BlockOutcome::SideChain);
        }
        let (connected, disconnected) = self.diff(&old_tip, &new_tip);
        Ok(BlockOutcome::Connected {
            tip: self.tip(),
            connected,
            disconnected,
        })
    }

    /// Drop orphans descending from a block we refused: they can never connect. Where
    /// the refused block is known invalid, each dropped orphan's hash is remembered as
    /// invalid too, so a descendant that arrives later is refused at once instead of
    /// waiting in the orphan pool for a parent that will never come.
    fn drop_orphans_of(&mut self, root: Hash, now: u64) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let parent_invalid = self.is_invalid(&h);
            for b in self.orphans.take_children(&h) {
                let bh = b.hash();
                if parent_invalid {
                    self.invalid.insert(bh, now);
                }
                stack.push(bh);
            }
        }
    }

    /// Check a block whose parent is indexed (context first, then the body) and, if its
    /// chain has enough work, index and store it; update connectability. Does not change
    /// the active chain. `Ok(false)`: valid as far as checked but below the storing
    /// threshold, so only its header was kept (in presync).
    fn accept_body(&mut self, block: Block, now: u64) -> Result<bool, ChainError> {
        let hash = block.hash();
        let new_work = match self.check_in_context(&block.header, now) {
            Ok(w) => w,
            Err(ChainError::InvalidHeader { hash, reason }) => {
                return Err(ChainError::InvalidBlock { hash, reason })
            }
            Err(e) => return Err(e),
        };
        if let Some(n) = self.index.get(&hash) {
            if n.has_body {
                return Ok(true);
            }
        }
        let presync_now = self.index.get(&hash).is_some_and(|n| n.presync);
        let work = match new_work {
            Some(w) => w,
            None => self.index.get(&hash).map_or(0, |n| n.work),
        };
        // A block that would beat the tip is kept whatever the threshold: that is how a
        // young chain (our own miner's included) grows past the network minimum.
        if work < self.store_threshold() && work <= self.tip().work {
            // Not worth storing a body on a chain this cheap; the header is kept.
            if let Some(w) = new_work {
                self.insert_header(&block.header, w, now, false);
            }
            return Ok(false);
        }
        if let Err(reason) = validate::check_body(&self.params, &block, self.network_id) {
            // A wrong merkle root is the sender's fault, not the header's.
            if reason != ValidationError::BadMerkle {
                if presync_now {
                    self.remove_presync_subtree(hash);
                    self.invalid.insert(hash, now);
                } else if self.index.contains_key(&hash) {
                    self.mark_invalid(hash)?;
                } else {
                    self.invalid.insert(hash, now);
                }
            }
            return Err(ChainError::InvalidBlock { hash, reason });
        }
        let mut rows = match new_work {
            Some(w) => self.insert_header(&block.header, w, now, true).0,
            None if presync_now => self.leave_presync(hash),
            None => Vec::new(),
        };
        // Presync ancestors this block brought to the threshold are stored first.
        rows.retain(|(h, _, _)| h.hash() != hash);
        self.store.put_headers(&rows)?;
        let (work, seq) = self
            .index
            .get(&hash)
            .map(|n| (n.work, n.seq))
            .ok_or_else(|| internal("indexed header vanished"))?;
        self.store.put_block(&block, work, seq)?;
        let parent_ok = self
            .index
            .get(&block.header.prev)
            .is_some_and(|p| p.connectable);
        if let Some(n) = self.index.get_mut(&hash) {
            n.has_body = true;
            n.status = BlockStatus::HaveBody;
        }
        if parent_ok {
            self.propagate_connectable(hash);
        }
        Ok(true)
    }

    /// Submit a transaction to the mempool. On `Ok` the mempool change is durable. Its
    /// signature is checked here, once: a bad one is `InvalidTx` with `BadSignature`.
    pub fn submit_tx(&mut self, tx: Transaction, now: u64) -> Result<TxOutcome, ChainError> {
        let id = tx.id();
        if self.has_tx(&id)? {
            return Ok(TxOutcome::Duplicate);
        }
        match tx.verified(self.network_id) {
            Some(v) => self.submit_checked(v.into_inner(), id, now),
            None => Err(ChainError::InvalidTx {
                id,
                reason: ValidationError::BadSignature(id),
            }),
        }
    }

    /// [`Chain::submit_tx`] for a transaction whose signature was checked already (off
    /// the node's thread), for this network; one checked for another is refused as
    /// badly signed, as it would be here.
    pub fn submit_verified_tx(
        &mut self,
        tx: VerifiedTx,
        now: u64,
    ) -> Result<TxOutcome, ChainError> {
        let id = tx.tx().id();
        if tx.network() != self.network_id {
            return Err(ChainError::InvalidTx {
                id,
                reason: ValidationError::BadSignature(id),
            });
        }
        if self.has_tx(&id)? {
            return Ok(TxOutcome::Duplicate);
        }
        self.submit_checked(tx.into_inner(), id, now)
    }

    fn has_tx(&self, id: &Hash) -> Result<bool, ChainError> {
        Ok(self.mempool.contains(id) || self.store.tx_block(id)?.is_some())
    }

    // The rest of `submit_tx`, on a transaction whose signature is good.
    fn submit_checked(
        &mut self,
        tx: Transaction,
        id: Hash,
        _now: u64,
    ) -> Result<TxOutcome, ChainError> {
        if tx.amount.checked_add(tx.fee).is_none() {
            return Err(ChainError::InvalidTx {
                id,
                reason: ValidationError::AmountOverflow(id),
            });
        }
        let mut acc = self.account(&tx.from);
        acc.balance = self.spendable_balance(&tx.from);
        let tx = self.store.share_tx(tx, &id);
        let evicted = self
            .mempool
            .add(Arc::clone(&tx), acc, self.params.min_relay_fee)
            .map_err(|reason| ChainError::TxRefused { id, reason })?;
        if let Err(e) = self.store.update_mempool(&[&tx], &evicted) {
            self.mempool.remove_with_successors(&id);
            return Err(e.into());
        }
        Ok(TxOutcome::Accepted)
    }

    /// A block on the tip, ready to mine: required bits, time = max(now, median + 1),
    /// mempool transactions by fee within the limits, coinbase = subsidy + fees.
    pub fn block_template(&self, miner: Address, now: u64) -> Block {
        let tip = self.tip();
        let height = tip.height.saturating_add(1);
        let time = now.max(self.median_time_past(&tip.hash).saturating_add(1));
        let subsidy = self.params.subsidy(height);
        let mut block = Block {
            header: Header {
                version: validate::BLOCK_VERSION,
                prev: tip.hash,
                merkle_root: Hash::ZERO,
                time,
                bits: self.next_bits(),
                nonce: 0,
                height,
            },
            coinbase: Coinbase {
                height,
                to: miner,
                amount: u64::MAX, // widest varint, so the size estimate is an upper bound
            },
            txs: Vec::new(),
        };
        // Slack for the transaction count's varint growing.
        let base = block.encoded_len().saturating_add(4);
        let budget = self.params.max_block_bytes.saturating_sub(base);
        let mut txs = self.mempool.select(self.params.max_block_txs, budget);
        let mut fees = 0u64;
        for (i, t) in txs.iter().enumerate() {
            match fees
                .checked_add(t.fee)
                .and_then(|f| subsidy.checked_add(f).map(|_| f))
            {
                Some(f) => fees = f,
                None => {
                    txs.truncate(i);
                    break;
                }
            }
        }
        block.coinbase.amount = subsidy.saturating_add(fees);
        block.txs = txs;
        block.header.merkle_root = merkle::root(&block.leaf_ids());
        block
    }
}
