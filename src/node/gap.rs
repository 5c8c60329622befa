//! Relayed transactions that came ahead of their sender's next nonce, held until the
//! ones before them arrive.
//!
//! A peer relays a sender's transactions by two roads that can cross: its outbox pushes
//! them in order, a window at a time, and what its outbox cannot take is announced by
//! `Inv` and fetched at once. A fetched transaction then often comes before the pushed one
//! with the nonce below it, and the peer announces each transaction once: refused, it was
//! lost (issue 14's relay bench lost 2 680 of 5 000 that way). Bounded like the mempool
//! the transactions are waiting for: only as far ahead as a sender may have pending, a
//! fixed number from one peer and in all (a transaction has a fixed size, so that is a
//! bound in bytes), and for a limited time.

use crate::chain::{Address, Transaction};
use crate::net::PeerId;
use std::collections::{BTreeMap, HashMap};

/// Most held in all: the mempool's default capacity, about 1.2 MB.
pub(super) const GAP_TXS: usize = 5_000;
/// Most held from one peer, so that one peer cannot take all the room.
pub(super) const GAP_TXS_PER_PEER: usize = 2_500;
/// How long one waits for the transactions before it.
pub(super) const GAP_TTL_MS: u64 = 10 * 60 * 1000;

/// One held transaction.
pub(super) struct Held {
    pub tx: Transaction,
    /// The peer it came from, that is charged for it if it proves bad.
    pub peer: PeerId,
    /// Whether it was charged to the peer's message limit when it came (unasked): the
    /// refund for a good transaction is due only then.
    pub charged: bool,
    at: u64,
}

/// Why a transaction was not held.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotHeld {
    /// Further ahead than the sender may have pending: the mempool would refuse it
    /// even once the gap fills.
    TooFarAhead,
    /// The pool, or this peer's share of it, is full.
    Full,
}

/// The held transactions, by (sender, nonce).
#[derive(Default)]
pub(super) struct GapTxs {
    held: BTreeMap<(Address, u64), Held>,
    per_peer: HashMap<PeerId, usize>,
    /// Earliest time one of them may be out of date (a sweep before it finds nothing).
    sweep_at: u64,
}

impl GapTxs {
    /// Hold `tx`, `ahead` nonces past what its sender's pending chain needs next, when at
    /// most `max_ahead` may be pending for a sender. A transaction already held for this
    /// sender and nonce stays (the first one to come, as the mempool keeps the first).
    pub fn hold(
        &mut self,
        now: u64,
        peer: PeerId,
        tx: Transaction,
        ahead: u64,
        max_ahead: u64,
        charged: bool,
    ) -> Result<(), NotHeld> {
        if ahead >= max_ahead {
            return Err(NotHeld::TooFarAhead);
        }
        self.sweep(now);
        let key = (tx.from, tx.nonce);
        if self.held.contains_key(&key) {
            return Ok(());
        }
        let from_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.held.len() >= GAP_TXS || from_peer >= GAP_TXS_PER_PEER {
            return Err(NotHeld::Full);
        }
        *self.per_peer.entry(peer).or_insert(0) += 1;
        if self.held.is_empty() {
            self.sweep_at = now + GAP_TTL_MS;
        }
        self.held.insert(
            key,
            Held {
                tx,
                peer,
                charged,
                at: now,
            },
        );
        Ok(())
    }

    /// The held transaction of `sender` with nonce `next`, taken out, if there is one.
    /// Those below it are out of date (their nonce was used meanwhile) and go.
    pub fn take_next(&mut self, sender: Address, next: u64) -> Option<Held> {
        loop {
            let (&key, _) = self.held.range((sender, 0)..=(sender, next)).next()?;
            let h = self.held.remove(&key)?;
            self.forget_one(h.peer);
            if key.1 == next {
                return Some(h);
            }
        }
    }

    /// The senders something is held for.
    pub fn senders(&self) -> Vec<Address> {
        let mut s: Vec<Address> = self.held.keys().map(|(a, _)| *a).collect();
        s.dedup();
        s
    }

    /// Number held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    fn forget_one(&mut self, peer: PeerId) {
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Drop what waited too long; walks the pool only when something may have.
    fn sweep(&mut self, now: u64) {
        if now < self.sweep_at || self.held.is_empty() {
            return;
        }
        let mut oldest = u64::MAX;
        let mut gone = Vec::new();
        for (k, h) in &self.held {
            if now.saturating_sub(h.at) >= GAP_TTL_MS {
                gone.push((*k, h.peer));
            } else {
                oldest = oldest.min(h.at);
            }
        }
        for (k, peer) in gone {
            self.held.remove(&k);
            self.forget_one(peer);
        }
        self.sweep_at = oldest.saturating_add(GAP_TTL_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(from: u8, nonce: u64) -> Transaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[from; 32]);
        Transaction::sign([0; 4], &key, Address([9; 32]), 1, 1, nonce)
    }

    #[test]
    fn bounds_hold_per_peer_in_all_and_in_time() {
        let mut g = GapTxs::default();
        assert_eq!(
            g.hold(0, 1, tx(1, 30), 25, 25, false),
            Err(NotHeld::TooFarAhead)
        );
        let t = tx(1, 3);
        for n in 0..GAP_TXS_PER_PEER as u64 {
            let mut t = t.clone();
            t.nonce = n;
            t.from = Address([(n % 200) as u8; 32]);
            t.to = Address([(n / 200) as u8; 32]);
            assert_eq!(g.hold(n, 1, t, 1, 25, false), Ok(()));
        }
        let mut more = t.clone();
        more.nonce = 1 << 40;
        assert_eq!(
            g.hold(10, 1, more.clone(), 1, 25, false),
            Err(NotHeld::Full)
        );
        assert_eq!(g.hold(10, 2, more.clone(), 1, 25, false), Ok(()));
        assert_eq!(g.len(), GAP_TXS_PER_PEER + 1);
        // After the time to live, the first ones have gone and make room again.
        let later = GAP_TTL_MS + 100;
        let mut late = t.clone();
        late.nonce = 1 << 41;
        assert_eq!(g.hold(later, 1, late, 1, 25, false), Ok(()));
        // Gone: peer 1's held at 0..=100 ms and peer 2's at 10 ms.
        assert_eq!(g.len(), GAP_TXS_PER_PEER + 1 - 102 + 1);
        assert_eq!(g.per_peer.get(&2), None);
    }

    #[test]
    fn the_lowest_nonce_of_a_sender_comes_out_first() {
        let mut g = GapTxs::default();
        for n in [5, 3, 4] {
            assert_eq!(g.hold(0, 1, tx(7, n), 1, 25, true), Ok(()));
        }
        let from = tx(7, 0).from;
        assert!(g.take_next(from, 2).is_none(), "3 is not next after 1");
        let mut next = 3;
        let order: Vec<u64> = std::iter::from_fn(|| {
            let h = g.take_next(from, next)?;
            next += 1;
            Some(h.tx.nonce)
        })
        .collect();
        assert_eq!(order, [3, 4, 5]);
        assert_eq!(g.len(), 0);
        // Below the next nonce: out of date, dropped on the way.
        assert_eq!(g.hold(0, 1, tx(7, 8), 1, 25, true), Ok(()));
        assert_eq!(g.hold(0, 1, tx(7, 9), 1, 25, true), Ok(()));
        assert_eq!(g.take_next(from, 9).map(|h| h.tx.nonce), Some(9));
        assert_eq!(g.len(), 0);
        assert!(g.per_peer.is_empty());
    }
}
