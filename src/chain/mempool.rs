//! The mempool: valid, unconfirmed transactions waiting for a block.
//!
//! Invariants, relative to the confirmed state at the tip: each sender's pending
//! transactions carry consecutive nonces starting at its confirmed nonce, at most one
//! transaction per (sender, nonce), and the sender's balance covers all of them. Any
//! prefix of a sender's chain is therefore valid in a block.

use super::state::Account;
use super::types::{Address, Hash, Transaction};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

/// Size limits of the mempool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most bytes held (postcard size of the transactions).
    pub max_bytes: usize,
    /// Most pending transactions per sender.
    pub max_per_sender: usize,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            max_txs: 5000,
            max_bytes: 2 * 1024 * 1024,
            max_per_sender: 25,
        }
    }
}

/// Why the mempool refused a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MempoolReject {
    /// Fee below the relay minimum.
    #[error("fee {fee} below the minimum relay fee {min}")]
    FeeTooLow {
        /// Offered fee.
        fee: u64,
        /// Minimum.
        min: u64,
    },
    /// Nonce already used by a confirmed transaction.
    #[error("nonce {got} already used (account nonce is {confirmed})")]
    NonceTooLow {
        /// Confirmed nonce.
        confirmed: u64,
        /// Nonce offered.
        got: u64,
    },
    /// Nonce does not follow the sender's pending chain.
    #[error("nonce {got} leaves a gap (next expected {expected})")]
    NonceGap {
        /// Next nonce after the pending chain.
        expected: u64,
        /// Nonce offered.
        got: u64,
    },
    /// Another pending transaction has this sender and nonce.
    #[error("double spend: transaction {existing} already uses this nonce")]
    Conflict {
        /// The pending transaction.
        existing: Hash,
    },
    /// The sender has too many pending transactions.
    #[error("sender already has {max} pending transactions")]
    TooManyPending {
        /// Per-sender cap.
        max: usize,
    },
    /// The sender's balance does not cover its pending spends plus this one.
    #[error("balance {balance} does not cover pending spends {needed}")]
    InsufficientFunds {
        /// Confirmed balance.
        balance: u64,
        /// Pending spends including this transaction.
        needed: u64,
    },
    /// `amount + fee` (or the pending total) overflows u64.
    #[error("amount + fee overflows")]
    Overflow,
    /// The mempool is full and this transaction does not pay more than the cheapest.
    #[error("mempool full: fee must exceed {lowest}")]
    Full {
        /// Lowest fee held.
        lowest: u64,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    /// Shared with whoever else holds the same transaction (see `Store::share_tx`).
    tx: Arc<Transaction>,
    size: usize,
    seq: u64,
}

/// Pending transactions, indexed by id, by sender and nonce, and by fee.
#[derive(Clone, Debug, Default)]
pub struct Mempool {
    limits: MempoolLimits,
    entries: HashMap<Hash, Entry>,
    /// One ordered map for all senders, not a map per sender: most senders have one or
    /// two pending, and a tree of their own cost a whole node (about 500 bytes) each.
    by_sender: BTreeMap<(Address, u64), Hash>,
    // Ascending fee; among equal fees the newest sorts first, so it is evicted first.
    by_fee: BTreeSet<(u64, Reverse<u64>, Hash)>,
    bytes: usize,
    next_seq: u64,
}

fn tx_size(tx: &Transaction) -> usize {
    postcard::to_stdvec(tx)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

impl Mempool {
    /// An empty mempool with these limits.
    pub fn new(limits: MempoolLimits) -> Self {
        Mempool {
            limits,
            ..Default::default()
        }
    }

    /// Its limits.
    pub fn limits(&self) -> MempoolLimits {
        self.limits
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if held.
    pub fn contains(&self, id: &Hash) -> bool {
        self.entries.contains_key(id)
    }

    /// A held transaction.
    pub fn get(&self, id: &Hash) -> Option<&Transaction> {
        self.entries.get(id).map(|e| e.tx.as_ref())
    }

    /// The pending transaction of `sender` with `nonce`, by id.
    pub fn id_at(&self, sender: &Address, nonce: u64) -> Option<&Hash> {
        self.by_sender.get(&(*sender, nonce))
    }

    /// Number of pending transactions of `sender`.
    pub fn pending_count(&self, sender: &Address) -> usize {
        self.chain_of(sender, 0).count()
    }

    /// `sender`'s pending transactions from nonce `from` on, as (nonce, id) in nonce
    /// order.
    fn chain_of(&self, sender: &Address, from: u64) -> impl Iterator<Item = (u64, &Hash)> {
        self.by_sender
            .range((*sender, from)..=(*sender, u64::MAX))
            .map(|((_, n), id)| (*n, id))
    }

    /// All ids.
    pub fn ids(&self) -> HashSet<Hash> {
        self.entries.keys().copied().collect()
    }

    /// Transactions, highest fee first (oldest first among equal fees).
    pub fn by_fee_desc(&self) -> Vec<&Transaction> {
        let mut v: Vec<(&u64, u64, &Hash)> = self
            .by_fee
            .iter()
            .map(|(f, Reverse(s), id)| (f, *s, id))
            .collect();
        v.sort_by(|a, b| b.0.cmp(a.0).then(a.1.cmp(&b.1)));
        v.into_iter()
            .filter_map(|(_, _, id)| self.get(id))
            .collect()
    }

    /// Add a transaction whose signature has been verified, against the sender's
    /// confirmed account. Returns the ids evicted to make room.
    pub fn add(
        &mut self,
        tx: Arc<Transaction>,
        id: Hash,
        confirmed: Account,
        min_fee: u64,
    ) -> Result<Vec<Hash>, MempoolReject> {
        if tx.fee < min_fee {
            return Err(MempoolReject::FeeTooLow {
                fee: tx.fee,
                min: min_fee,
            });
        }
        let cost = tx
            .amount
            .checked_add(tx.fee)
            .ok_or(MempoolReject::Overflow)?;
        if tx.nonce < confirmed.nonce {
            return Err(MempoolReject::NonceTooLow {
                confirmed: confirmed.nonce,
                got: tx.nonce,
            });
        }
        if let Some(existing) = self.by_sender.get(&(tx.from, tx.nonce)) {
            return Err(MempoolReject::Conflict {
                existing: *existing,
            });
        }
        let pending = self.pending_count(&tx.from);
        let expected = confirmed.nonce.saturating_add(pending as u64);
        if tx.nonce != expected {
            return Err(MempoolReject::NonceGap {
                expected,
                got: tx.nonce,
            });
        }
        if pending >= self.limits.max_per_sender {
            return Err(MempoolReject::TooManyPending {
                max: self.limits.max_per_sender,
            });
        }
        let mut needed = cost;
        for (_, pid) in self.chain_of(&tx.from, 0) {
            if let Some(e) = self.entries.get(pid) {
                needed = needed
                    .checked_add(e.tx.amount.saturating_add(e.tx.fee))
                    .ok_or(MempoolReject::Overflow)?;
            }
        }
        if needed > confirmed.balance {
            return Err(MempoolReject::InsufficientFunds {
                balance: confirmed.balance,
                needed,
            });
        }
        let size = tx_size(&tx);
        let victims = self.plan_eviction(&tx, size)?;
        let mut evicted = Vec::new();
        for v in victims {
            evicted.extend(self.remove_with_successors(&v));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_sender.insert((tx.from, tx.nonce), id);
        self.by_fee.insert((tx.fee, Reverse(seq), id));
        self.bytes += size;
        self.entries.insert(id, Entry { tx, size, seq });
        Ok(evicted)
    }

    /// Lowest-fee transactions to drop so that `tx` fits; refuses if that would mean
    /// dropping one that pays as much, or one of the sender's own.
    fn plan_eviction(&self, tx: &Transaction, size: usize) -> Result<Vec<Hash>, MempoolReject> {
        let mut count = self.entries.len() + 1;
        let mut bytes = self.bytes.saturating_add(size);
        let mut victims = Vec::new();
        let mut gone: HashSet<Hash> = HashSet::new();
        let mut it = self.by_fee.iter();
        while count > self.limits.max_txs || bytes > self.limits.max_bytes {
            let Some((fee, _, id)) = it.next() else {
                return Err(MempoolReject::Full { lowest: 0 });
            };
            if gone.contains(id) {
                continue;
            }
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            if *fee >= tx.fee || e.tx.from == tx.from {
                let lowest = self.by_fee.first().map_or(0, |f| f.0);
                return Err(MempoolReject::Full { lowest });
            }
            victims.push(*id);
            // Later nonces of that sender go too: they would no longer chain.
            for (_, sid) in self.chain_of(&e.tx.from, e.tx.nonce) {
                if gone.insert(*sid) {
                    if let Some(se) = self.entries.get(sid) {
                        count -= 1;
                        bytes -= se.size;
                    }
                }
            }
        }
        Ok(victims)
    }

    /// Remove one transaction (leaves later nonces of its sender in place).
    pub fn remove(&mut self, id: &Hash) -> Option<Arc<Transaction>> {
        let e = self.entries.remove(id)?;
        self.bytes -= e.size;
        self.by_fee.remove(&(e.tx.fee, Reverse(e.seq), *id));
        self.by_sender.remove(&(e.tx.from, e.tx.nonce));
        Some(e.tx)
    }

    /// Remove a transaction and its sender's later nonces; returns the removed ids.
    pub fn remove_with_successors(&mut self, id: &Hash) -> Vec<Hash> {
        let Some(e) = self.entries.get(id) else {
            return Vec::new();
        };
        let ids: Vec<Hash> = self
            .chain_of(&e.tx.from, e.tx.nonce)
            .map(|(_, h)| *h)
            .collect();
        for h in &ids {
            self.remove(h);
        }
        ids
    }

    /// Rebuild against a new confirmed state: `first` (e.g. transactions of disconnected
    /// blocks) are offered before the current contents; whatever no longer fits is
    /// dropped. Signatures are not re-checked: everything here was verified on entry.
    pub fn rebuild(
        &mut self,
        first: Vec<Arc<Transaction>>,
        account: impl Fn(&Address) -> Account,
        min_fee: u64,
    ) {
        let mut old: Vec<(u64, Arc<Transaction>)> = first
            .into_iter()
            .map(|t| (0, t))
            .chain(
                self.entries
                    .drain()
                    .map(|(_, e)| (e.seq.saturating_add(1), e.tx)),
            )
            .collect();
        self.by_sender.clear();
        self.by_fee.clear();
        self.bytes = 0;
        // Per sender in nonce order so chains re-form; offered txs win ties.
        old.sort_by_key(|(order, t)| (t.from, t.nonce, *order));
        for (_, tx) in old {
            let id = tx.id();
            if self.entries.contains_key(&id) {
                continue;
            }
            let acc = account(&tx.from);
            let _ = self.add(tx, id, acc, min_fee);
        }
    }

    /// Re-check `sender`'s pending chain against its confirmed account after a block
    /// spent from it: what no longer chains on (a nonce now used, or funds the block
    /// spent) goes, with its successors; the rest keeps its place. Returns the ids
    /// dropped. The same outcome as [`Mempool::rebuild`] for this sender, at the cost
    /// of its own chain instead of the whole pool.
    pub fn revalidate_sender(&mut self, sender: &Address, confirmed: Account) -> Vec<Hash> {
        let mut drop = Vec::new();
        let mut expected = confirmed.nonce;
        let mut needed = 0u64;
        let mut broken = false;
        for (nonce, id) in self.chain_of(sender, 0) {
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            if nonce < confirmed.nonce {
                drop.push(*id);
                continue;
            }
            if !broken {
                match needed.checked_add(e.tx.amount.saturating_add(e.tx.fee)) {
                    Some(n) if nonce == expected && n <= confirmed.balance => {
                        needed = n;
                        expected = expected.saturating_add(1);
                        continue;
                    }
                    _ => broken = true,
                }
            }
            drop.push(*id);
        }
        for id in &drop {
            self.remove(id);
        }
        drop
    }

    /// Pick transactions for a block: highest fee first among each sender's next
    /// nonce, within `max_txs` and `max_bytes` (postcard sizes).
    pub fn select(&self, max_txs: usize, max_bytes: usize) -> Vec<Transaction> {
        let mut heap = BinaryHeap::new();
        let mut last: Option<&Address> = None;
        for ((from, _), id) in &self.by_sender {
            // Each sender's lowest nonce: the first of its run in the map.
            if last == Some(from) {
                continue;
            }
            last = Some(from);
            if let Some(e) = self.entries.get(id) {
                heap.push((e.tx.fee, Reverse(e.seq), *id));
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, _, id)) = heap.pop() {
            if out.len() >= max_txs {
                break;
            }
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if bytes.saturating_add(e.size) > max_bytes {
                // Skip this sender's chain; smaller txs of others may still fit.
                continue;
            }
            bytes += e.size;
            out.push(Transaction::clone(&e.tx));
            let next =
                e.tx.nonce
                    .checked_add(1)
                    .and_then(|n| self.chain_of(&e.tx.from, n).next());
            if let Some((_, next)) = next {
                if let Some(ne) = self.entries.get(next) {
                    heap.push((ne.tx.fee, Reverse(ne.seq), *next));
                }
            }
        }
        out
    }
}
