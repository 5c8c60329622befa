//! The mempool: valid, unconfirmed transactions waiting for a block.
//!
//! Invariants, relative to the confirmed state at the tip: each sender's pending
//! transactions carry consecutive nonces starting at its confirmed nonce, at most one
//! transaction per (sender, nonce), and the sender's balance covers all of them. Any
//! prefix of a sender's chain is therefore valid in a block.

use super::state::Account;
use super::types::{Address, Hash, HeldTx, Transaction};
use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::hash::{BuildHasher, RandomState};
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
    /// Shared with whoever else holds the same transaction (see `Store::share_tx`); it
    /// carries the id.
    tx: Arc<HeldTx>,
    seq: u64,
    size: u32,
}

/// Slot of an entry in [`Mempool::slots`].
type Slot = u32;

/// Pending transactions, indexed by id, by sender and nonce, and by fee.
///
/// Entries live in slots; the indexes name them by a 4-byte slot, not by their 32-byte
/// id. A simulation holds a million (node, transaction) pairs after islands heal, and
/// ids in three indexes were two thirds of the mempool's bytes.
#[derive(Clone, Debug, Default)]
pub struct Mempool {
    limits: MempoolLimits,
    /// Entries; a removed one leaves `None`, reused first (`free`).
    slots: Vec<Option<Entry>>,
    free: Vec<Slot>,
    /// Slots by id (hashed with `hasher`, keyed per process, so ids ground to collide
    /// do not pile up in one bucket).
    by_id: HashTable<Slot>,
    hasher: RandomState,
    /// One ordered map for all senders, not a map per sender: most senders have one or
    /// two pending, and a tree of their own cost a whole node (about 500 bytes) each.
    by_sender: BTreeMap<(Address, u64), Slot>,
    // Ascending fee; among equal fees the newest sorts first, so it is evicted first.
    by_fee: BTreeSet<(u64, Reverse<u64>, Slot)>,
    len: usize,
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
        self.len
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn at(&self, slot: Slot) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn slot_of(&self, id: &Hash) -> Option<Slot> {
        let slots = &self.slots;
        self.by_id
            .find(self.hasher.hash_one(id), |&s| {
                slots
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.tx.id == *id)
            })
            .copied()
    }

    fn entry(&self, id: &Hash) -> Option<&Entry> {
        self.slot_of(id).and_then(|s| self.at(s))
    }

    /// True if held.
    pub fn contains(&self, id: &Hash) -> bool {
        self.slot_of(id).is_some()
    }

    /// A held transaction.
    pub fn get(&self, id: &Hash) -> Option<&Transaction> {
        self.entry(id).map(|e| &e.tx.tx)
    }

    /// The pending transaction of `sender` with `nonce`, by id.
    pub fn id_at(&self, sender: &Address, nonce: u64) -> Option<&Hash> {
        let slot = *self.by_sender.get(&(*sender, nonce))?;
        self.at(slot).map(|e| &e.tx.id)
    }

    /// Number of pending transactions of `sender`.
    pub fn pending_count(&self, sender: &Address) -> usize {
        self.chain_of(sender, 0).count()
    }

    /// `sender`'s pending transactions from nonce `from` on, in nonce order.
    fn chain_of(&self, sender: &Address, from: u64) -> impl Iterator<Item = &Entry> {
        self.by_sender
            .range((*sender, from)..=(*sender, u64::MAX))
            .filter_map(|(_, &s)| self.at(s))
    }

    /// All ids.
    pub fn ids(&self) -> HashSet<Hash> {
        self.slots.iter().flatten().map(|e| e.tx.id).collect()
    }

    /// Transactions, highest fee first (oldest first among equal fees).
    pub fn by_fee_desc(&self) -> Vec<&Transaction> {
        let mut v: Vec<(u64, u64, Slot)> = self
            .by_fee
            .iter()
            .map(|&(f, Reverse(s), slot)| (f, s, slot))
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter()
            .filter_map(|(_, _, slot)| self.at(slot).map(|e| &e.tx.tx))
            .collect()
    }

    /// Add a transaction whose signature has been verified, against the sender's
    /// confirmed account. Returns the ids evicted to make room.
    pub fn add(
        &mut self,
        tx: Arc<HeldTx>,
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
        if let Some(existing) = self.id_at(&tx.from, tx.nonce) {
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
        for e in self.chain_of(&tx.from, 0) {
            needed = needed
                .checked_add(e.tx.amount.saturating_add(e.tx.fee))
                .ok_or(MempoolReject::Overflow)?;
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
        let id = tx.id;
        let entry = Entry {
            seq,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            tx,
        };
        let (fee, key) = (entry.tx.fee, (entry.tx.from, entry.tx.nonce));
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(free) = self.slots.get_mut(s as usize) {
                    *free = Some(entry);
                }
                s
            }
            None => {
                // Grow by a quarter, not double: the slots are most of the mempool's
                // bytes, and a doubled vector is half empty after each growth.
                if self.slots.len() == self.slots.capacity() {
                    self.slots.reserve_exact((self.slots.len() / 4).max(16));
                }
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as Slot
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_id.insert_unique(hasher.hash_one(id), slot, |&s| {
            slots
                .get(s as usize)
                .and_then(Option::as_ref)
                .map_or(0, |e| hasher.hash_one(e.tx.id))
        });
        self.by_sender.insert(key, slot);
        self.by_fee.insert((fee, Reverse(seq), slot));
        self.bytes += size;
        self.len += 1;
        Ok(evicted)
    }

    /// Lowest-fee transactions to drop so that `tx` fits; refuses if that would mean
    /// dropping one that pays as much, or one of the sender's own.
    fn plan_eviction(&self, tx: &Transaction, size: usize) -> Result<Vec<Hash>, MempoolReject> {
        let mut count = self.len + 1;
        let mut bytes = self.bytes.saturating_add(size);
        let mut victims = Vec::new();
        let mut gone: HashSet<Hash> = HashSet::new();
        let mut it = self.by_fee.iter();
        while count > self.limits.max_txs || bytes > self.limits.max_bytes {
            let Some(&(fee, _, slot)) = it.next() else {
                return Err(MempoolReject::Full { lowest: 0 });
            };
            let Some(e) = self.at(slot) else {
                continue;
            };
            if gone.contains(&e.tx.id) {
                continue;
            }
            if fee >= tx.fee || e.tx.from == tx.from {
                let lowest = self.by_fee.first().map_or(0, |f| f.0);
                return Err(MempoolReject::Full { lowest });
            }
            victims.push(e.tx.id);
            // Later nonces of that sender go too: they would no longer chain.
            for se in self.chain_of(&e.tx.from, e.tx.nonce) {
                if gone.insert(se.tx.id) {
                    count -= 1;
                    bytes -= se.size as usize;
                }
            }
        }
        Ok(victims)
    }

    /// Remove one transaction (leaves later nonces of its sender in place).
    pub fn remove(&mut self, id: &Hash) -> Option<Arc<HeldTx>> {
        let slot = self.slot_of(id)?;
        let e = self.slots.get_mut(slot as usize)?.take()?;
        if let Ok(found) = self
            .by_id
            .find_entry(self.hasher.hash_one(id), |&s| s == slot)
        {
            found.remove();
        }
        self.free.push(slot);
        self.len -= 1;
        self.bytes -= e.size as usize;
        self.by_fee.remove(&(e.tx.fee, Reverse(e.seq), slot));
        self.by_sender.remove(&(e.tx.from, e.tx.nonce));
        Some(e.tx)
    }

    /// Remove a transaction and its sender's later nonces; returns the removed ids.
    pub fn remove_with_successors(&mut self, id: &Hash) -> Vec<Hash> {
        let Some(e) = self.entry(id) else {
            return Vec::new();
        };
        let ids: Vec<Hash> = self
            .chain_of(&e.tx.from, e.tx.nonce)
            .map(|e| e.tx.id)
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
        first: Vec<Arc<HeldTx>>,
        account: impl Fn(&Address) -> Account,
        min_fee: u64,
    ) {
        let mut old: Vec<(u64, Arc<HeldTx>)> = first
            .into_iter()
            .map(|t| (0, t))
            .chain(
                std::mem::take(&mut self.slots)
                    .into_iter()
                    .flatten()
                    .map(|e| (e.seq.saturating_add(1), e.tx)),
            )
            .collect();
        // Fresh slots: the rebuilt mempool takes only the room it needs.
        self.free.clear();
        self.by_id.clear();
        self.by_sender.clear();
        self.by_fee.clear();
        self.bytes = 0;
        self.len = 0;
        // Per sender in nonce order so chains re-form; offered txs win ties.
        old.sort_by_key(|(order, t)| (t.from, t.nonce, *order));
        for (_, tx) in old {
            if self.contains(&tx.id) {
                continue;
            }
            let acc = account(&tx.from);
            let _ = self.add(tx, acc, min_fee);
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
        for e in self.chain_of(sender, 0) {
            let nonce = e.tx.nonce;
            if nonce < confirmed.nonce {
                drop.push(e.tx.id);
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
            drop.push(e.tx.id);
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
        for ((from, _), &slot) in &self.by_sender {
            // Each sender's lowest nonce: the first of its run in the map.
            if last == Some(from) {
                continue;
            }
            last = Some(from);
            if let Some(e) = self.at(slot) {
                heap.push((e.tx.fee, Reverse(e.seq), slot));
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, _, slot)) = heap.pop() {
            if out.len() >= max_txs {
                break;
            }
            let Some(e) = self.at(slot) else {
                continue;
            };
            if bytes.saturating_add(e.size as usize) > max_bytes {
                // Skip this sender's chain; smaller txs of others may still fit.
                continue;
            }
            bytes += e.size as usize;
            out.push(Transaction::clone(&e.tx));
            let next = e.tx.nonce.checked_add(1).and_then(|n| {
                self.by_sender
                    .range((e.tx.from, n)..=(e.tx.from, u64::MAX))
                    .next()
            });
            if let Some((_, &next)) = next {
                if let Some(ne) = self.at(next) {
                    heap.push((ne.tx.fee, Reverse(ne.seq), next));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn tx(sender: u8, nonce: u64, fee: u64) -> Arc<HeldTx> {
        let tx = Transaction {
            from: Address([sender; 32]),
            to: Address([0xEE; 32]),
            amount: 1,
            fee,
            nonce,
            sig: crate::chain::types::Sig([0; 64]),
        };
        Arc::new(HeldTx { id: tx.id(), tx })
    }

    /// What a mempool must hold after each step, checked through every way of looking
    /// in: by id, by (sender, nonce), by fee, and the block template.
    fn check(m: &Mempool, model: &BTreeMap<Hash, Arc<HeldTx>>) {
        assert_eq!(m.len(), model.len());
        assert_eq!(m.ids(), model.keys().copied().collect::<HashSet<_>>());
        assert_eq!(m.by_fee_desc().len(), model.len());
        let bytes: usize = model.values().map(|t| tx_size(&t.tx)).sum();
        assert_eq!(m.bytes(), bytes);
        for (id, t) in model {
            assert_eq!(m.get(id), Some(&t.tx));
            assert_eq!(m.id_at(&t.from, t.nonce), Some(id));
        }
        let picked = m.select(usize::MAX, usize::MAX);
        assert_eq!(
            picked.len(),
            model.len(),
            "every chain is selectable in full"
        );
    }

    proptest! {
        /// Adds, removals and evictions in any order, slots reused: the mempool agrees
        /// with a plain map of what it accepted minus what it gave up.
        #[test]
        fn lookups_agree_with_what_was_accepted_and_removed(
            ops in proptest::collection::vec((0u8..6, 1u64..5, any::<bool>(), any::<u8>()), 1..120)
        ) {
            let limits = MempoolLimits { max_txs: 7, max_bytes: usize::MAX, max_per_sender: 4 };
            let mut m = Mempool::new(limits);
            let mut model: BTreeMap<Hash, Arc<HeldTx>> = BTreeMap::new();
            let rich = Account { balance: 1_000, nonce: 0 };
            for (sender, fee, add, pick) in ops {
                if add {
                    let nonce = m.pending_count(&Address([sender; 32])) as u64;
                    let t = tx(sender, nonce, fee);
                    let id = t.id;
                    if let Ok(evicted) = m.add(Arc::clone(&t), rich, 1) {
                        for e in evicted {
                            prop_assert!(model.remove(&e).is_some());
                        }
                        model.insert(id, t);
                    }
                } else if !model.is_empty() {
                    let id = *model.keys().nth(pick as usize % model.len()).unwrap_or(&Hash([0; 32]));
                    let gone = m.remove_with_successors(&id);
                    prop_assert!(gone.contains(&id));
                    for g in gone {
                        prop_assert!(model.remove(&g).is_some());
                    }
                }
                check(&m, &model);
            }
            m.rebuild(Vec::new(), |_| rich, 1);
            check(&m, &model);
        }
    }
}
