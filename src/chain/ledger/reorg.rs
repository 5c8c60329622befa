//! Switching branches: connectability, fork choice among the candidates, connecting
//! and disconnecting blocks against the account state, and invalid subtrees.

use super::{immature_in, internal, Chain, ChainError};
use crate::chain::state::Account;
use crate::chain::state::{apply_changes, Overlay};
use crate::chain::types::{Address, Hash, Transaction};
use crate::chain::validate::{self, ValidationError};
use crate::store::{BlockStatus, ConnectWrite, DisconnectWrite};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

impl Chain {
    pub(super) fn rescan_candidates(&mut self) {
        let tip_work = self.tip().work;
        self.candidates = self
            .index
            .iter()
            .filter(|(_, n)| n.connectable && n.work >= tip_work)
            .map(|(h, n)| (n.work, Reverse(n.seq), *h))
            .collect();
    }

    pub(super) fn load_recent_coinbases(&mut self) -> Result<(), ChainError> {
        self.recent_coinbases.clear();
        let tip = self.main.len().saturating_sub(1) as u64;
        let first = tip
            .saturating_add(1)
            .saturating_sub(self.params.coinbase_maturity)
            .max(1);
        for h in first..=tip {
            self.push_recent_coinbase_front_or_back(h, false)?;
        }
        Ok(())
    }

    // Read the coinbase of the main block at `height` into the maturity window.
    fn push_recent_coinbase_front_or_back(
        &mut self,
        height: u64,
        front: bool,
    ) -> Result<(), ChainError> {
        let hash = self
            .main_hash_at(height)
            .ok_or_else(|| internal(format!("no main block at height {height}")))?;
        let b = self
            .store
            .get_block(&hash)?
            .ok_or_else(|| internal(format!("body of block {hash} missing from store")))?;
        let e = (height, b.coinbase.to, b.coinbase.amount);
        if front {
            self.recent_coinbases.push_front(e);
        } else {
            self.recent_coinbases.push_back(e);
        }
        Ok(())
    }

    pub(super) fn propagate_connectable(&mut self, start: Hash) {
        let tip_work = self.tip().work;
        let mut stack = vec![start];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get_mut(&h) else {
                continue;
            };
            if !n.has_body || n.status == BlockStatus::Invalid || n.connectable {
                continue;
            }
            n.connectable = true;
            if n.work >= tip_work {
                self.candidates.insert((n.work, Reverse(n.seq), h));
            }
            stack.extend(self.index.children(&h));
        }
    }

    /// Mark a block and all its descendants invalid (memory and store).
    pub(super) fn mark_invalid(&mut self, root: Hash) -> Result<(), ChainError> {
        let mut marked = Vec::new();
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get_mut(&h) else {
                continue;
            };
            if n.status != BlockStatus::Invalid {
                n.status = BlockStatus::Invalid;
                n.connectable = false;
                self.candidates.remove(&(n.work, Reverse(n.seq), h));
                marked.push(h);
            }
            stack.extend(self.index.children(&h));
        }
        self.store.mark_invalid(&marked)?;
        let lowest = marked
            .iter()
            .filter_map(|h| self.index.get(h))
            .map(|n| n.header.height)
            .min();
        if let Some(low) = lowest {
            self.dl_cursor.fetch_min(low, Ordering::Relaxed);
        }
        if marked.contains(&self.best_header) {
            self.rescan_best_header();
        }
        Ok(())
    }

    /// Move the active chain to the best connectable candidate, reorganising as needed;
    /// a block that fails on the way is marked invalid (with its descendants) and the
    /// best remaining chain is chosen. Returns the blocks found invalid.
    pub(super) fn activate(&mut self) -> Result<Vec<(Hash, ValidationError)>, ChainError> {
        let mut failures = Vec::new();
        let mut returned: Vec<Transaction> = Vec::new();
        let mut changed = false;
        let mut disconnected = false;
        // Senders of the transactions connected: the only accounts a connect makes
        // poorer, so the only mempool chains it can break.
        let mut spent = Vec::new();
        let next_before = self.next_height();
        loop {
            let tip = self.tip();
            let Some(&(work, _, best)) = self.candidates.last() else {
                break;
            };
            if best == tip.hash || work <= tip.work {
                break;
            }
            changed = true;
            let mut path = Vec::new();
            let mut cur = best;
            while !self.is_on_main_chain(&cur) {
                path.push(cur);
                cur = self
                    .index
                    .get(&cur)
                    .map(|n| n.header.prev)
                    .ok_or_else(|| internal(format!("block {cur} lost its parent")))?;
            }
            path.reverse();
            while self.tip_hash() != cur {
                returned.extend(self.disconnect_tip()?);
                disconnected = true;
            }
            for h in path {
                match self.connect(h, &mut spent)? {
                    Ok(()) => {}
                    Err(reason) => {
                        tracing::warn!(block = %h, "invalid block: {reason}");
                        failures.push((h, reason));
                        self.mark_invalid(h)?;
                        break;
                    }
                }
            }
        }
        if changed {
            let tip_work = self.tip().work;
            self.candidates.retain(|c| c.0 >= tip_work);
            if self.candidates.is_empty() {
                let t = self.tip();
                if let Some(n) = self.index.get(&t.hash) {
                    self.candidates.insert((n.work, Reverse(n.seq), t.hash));
                }
            }
            // Blocks only connected (no reorg) and no coinbase newly locked by the
            // maturity rule starting: only the senders' chains can have broken (issue
            // 14: the whole pool was rebuilt on every tip change).
            let maturity_starts = self.params.maturity_active(self.next_height())
                != self.params.maturity_active(next_before);
            if disconnected || maturity_starts {
                self.rebuild_mempool_stored(returned)?;
            } else {
                spent.sort_unstable();
                spent.dedup();
                let mut removed = Vec::new();
                for a in &spent {
                    let acc = self.mempool_account(a);
                    removed.extend(self.mempool.revalidate_sender(a, acc));
                }
                self.store.update_mempool(&[], &removed)?;
            }
        }
        Ok(failures)
    }

    /// Height of the block that would extend the tip (as the mempool sees it).
    fn next_height(&self) -> u64 {
        (self.main.len() as u64).max(1)
    }

    /// What the mempool may spend from `a`: its confirmed account without the coinbase
    /// funds the next block may not spend yet.
    fn mempool_account(&self, a: &Address) -> Account {
        let mut acc = self.accounts.get(a).copied().unwrap_or_default();
        let window = &self.recent_coinbases;
        acc.balance =
            acc.balance
                .saturating_sub(immature_in(&self.params, window, a, self.next_height()));
        acc
    }

    /// Rebuild the whole mempool, `first` offered first, and write the difference to
    /// the store.
    fn rebuild_mempool_stored(&mut self, first: Vec<Transaction>) -> Result<(), ChainError> {
        let before = self.mempool.ids();
        let snapshot: HashMap<Hash, Transaction> =
            first.iter().map(|t| (t.id(), t.clone())).collect();
        self.rebuild_mempool(first);
        let after = self.mempool.ids();
        let added: Vec<&Transaction> = after
            .difference(&before)
            .filter_map(|id| snapshot.get(id))
            .collect();
        let removed: Vec<Hash> = before.difference(&after).copied().collect();
        self.store.update_mempool(&added, &removed)?;
        Ok(())
    }

    pub(super) fn rebuild_mempool(&mut self, first: Vec<Transaction>) {
        let accounts = &self.accounts;
        let min = self.params.min_relay_fee;
        let (params, window) = (&self.params, &self.recent_coinbases);
        let next = (self.main.len() as u64).max(1);
        // The mempool sees only what the next block may spend: immature coinbase funds
        // are left out of the balance it checks spends against.
        let store = &self.store;
        let first = first
            .into_iter()
            .map(|t| {
                let id = t.id();
                store.share_tx(t, &id)
            })
            .collect();
        self.mempool.rebuild(
            first,
            |a| {
                let mut acc = accounts.get(a).copied().unwrap_or_default();
                acc.balance = acc
                    .balance
                    .saturating_sub(immature_in(params, window, a, next));
                acc
            },
            min,
        );
    }

    /// Connect the block `h` (child of the tip). The outer error is a store failure;
    /// the inner one a consensus failure.
    /// The senders of its transactions are pushed onto `spent`.
    fn connect(
        &mut self,
        h: Hash,
        spent: &mut Vec<Address>,
    ) -> Result<Result<(), ValidationError>, ChainError> {
        let block = self
            .store
            .get_block(&h)?
            .ok_or_else(|| internal(format!("body of block {h} missing from store")))?;
        if block.header.prev != self.tip_hash() {
            return Err(internal(format!("block {h} does not extend the tip")));
        }
        let pos = self
            .index
            .pos(&h)
            .ok_or_else(|| internal(format!("block {h} not in the index")))?;
        let mut ov = Overlay::new(&self.accounts);
        let height = block.header.height;
        let (params, window) = (&self.params, &self.recent_coinbases);
        if let Err(e) = validate::apply_block(&self.params, &mut ov, &block, |a| {
            immature_in(params, window, a, height)
        }) {
            return Ok(Err(e));
        }
        let (changes, undo) = ov.into_parts();
        let tx_ids: Vec<Hash> = block.txs.iter().map(Transaction::id).collect();
        self.store.connect_block(&ConnectWrite {
            hash: h,
            height: block.header.height,
            accounts: &changes,
            undo: &undo,
            tx_ids: &tx_ids,
        })?;
        apply_changes(&mut self.accounts, &changes);
        self.main.push(pos);
        self.recent_coinbases
            .push_back((height, block.coinbase.to, block.coinbase.amount));
        while self
            .recent_coinbases
            .front()
            .is_some_and(|(ch, _, _)| ch.saturating_add(self.params.coinbase_maturity) <= height)
        {
            self.recent_coinbases.pop_front();
        }
        for id in &tx_ids {
            self.mempool.remove(id);
        }
        spent.extend(block.txs.iter().map(|t| t.from));
        Ok(Ok(()))
    }

    /// Disconnect the tip, restoring the accounts from its undo record; returns its
    /// transactions.
    fn disconnect_tip(&mut self) -> Result<Vec<Transaction>, ChainError> {
        if self.main.len() <= 1 {
            return Err(internal("cannot disconnect genesis"));
        }
        let h = self.tip_hash();
        let block = self
            .store
            .get_block(&h)?
            .ok_or_else(|| internal(format!("body of block {h} missing from store")))?;
        let undo = self
            .store
            .get_undo(&h)?
            .ok_or_else(|| internal(format!("undo data of block {h} missing")))?;
        let tx_ids: Vec<Hash> = block.txs.iter().map(Transaction::id).collect();
        self.store.disconnect_block(&DisconnectWrite {
            hash: h,
            height: block.header.height,
            accounts: &undo.prev,
            tx_ids: &tx_ids,
        })?;
        apply_changes(&mut self.accounts, &undo.prev);
        self.main.pop();
        // The maturity window slides back: the block that leaves it at the top lets the
        // one below its bottom back in.
        if self
            .recent_coinbases
            .back()
            .is_some_and(|(ch, _, _)| *ch == block.header.height)
        {
            self.recent_coinbases.pop_back();
        }
        let tip = block.header.height.saturating_sub(1);
        let bottom = tip
            .saturating_add(1)
            .saturating_sub(self.params.coinbase_maturity);
        if (1..=tip).contains(&bottom)
            && self
                .recent_coinbases
                .front()
                .is_none_or(|(ch, _, _)| *ch > bottom)
        {
            self.push_recent_coinbase_front_or_back(bottom, true)?;
        }
        Ok(block.txs)
    }

    /// Blocks between two tips: (connected in height order, disconnected tip first).
    pub(super) fn diff(&self, old: &Hash, new: &Hash) -> (Vec<Hash>, Vec<Hash>) {
        let (mut a, mut b) = (*old, *new);
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        let height = |h: &Hash| self.index.get(h).map_or(0, |n| n.header.height);
        let prev = |h: &Hash| self.index.get(h).map_or(Hash::ZERO, |n| n.header.prev);
        while a != b {
            let (ha, hb) = (height(&a), height(&b));
            if ha == 0 && hb == 0 {
                break;
            }
            if ha >= hb {
                gone.push(a);
                a = prev(&a);
            }
            if hb >= ha {
                came.push(b);
                b = prev(&b);
            }
        }
        came.reverse();
        (came, gone)
    }
}
