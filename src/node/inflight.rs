//! Requests in flight, blocks and transactions apart, bounded per peer.
//!
//! Blocks and transactions have separate maps: one map keyed by hash let a peer stall a
//! block's download by announcing its hash as a transaction (the block was skipped as
//! "already asked for" while the fake transaction request waited for its deadline, and on
//! radio, where hearing the peer moves its deadlines on, for good).

use super::{Node, Request, BLOCK_WINDOW};
use crate::chain::Hash;
use crate::net::PeerId;
use crate::wire::message::limits;
use std::collections::HashMap;

/// Transactions asked of one peer at once: one `Inv`'s worth. Announcements beyond it are
/// not asked for until earlier requests are answered or time out (another peer's, or a
/// later one, brings them).
pub const MAX_TX_REQUESTS_PER_PEER: usize = limits::MAX_INV;
/// Block bodies asked of one peer at once (the download window on fast links).
pub const MAX_BLOCK_REQUESTS_PER_PEER: usize = BLOCK_WINDOW;

/// The size of the state peers can make a node hold, to check it against its bounds
/// (the fuzz target and the property tests do, after every input).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Block requests in flight, in all.
    pub block_requests: usize,
    /// The most block requests in flight to one peer.
    pub max_block_requests_per_peer: usize,
    /// Transaction requests in flight, in all.
    pub tx_requests: usize,
    /// The most transaction requests in flight to one peer.
    pub max_tx_requests_per_peer: usize,
    /// The most control bytes queued for one destination on any packet link.
    pub max_control_bytes_per_dest: usize,
    /// The most bytes queued (control and bulk) on any packet link.
    pub max_link_queued_bytes: usize,
    /// The most fragment bytes buffered for reassembly on any packet link.
    pub max_reassembly_bytes: usize,
    /// Compact blocks waiting for transactions.
    pub compact_pending: usize,
}

impl Node {
    /// How much of its bounded state the node holds now.
    pub fn usage(&self) -> Usage {
        let (block_requests, tx_requests) = self.in_flight.len();
        let (max_block_requests_per_peer, max_tx_requests_per_peer) = self.in_flight.max_per_peer();
        let links = self.packet_links.values();
        Usage {
            block_requests,
            max_block_requests_per_peer,
            tx_requests,
            max_tx_requests_per_peer,
            max_control_bytes_per_dest: links
                .clone()
                .map(|l| l.max_control_bytes())
                .max()
                .unwrap_or(0),
            max_link_queued_bytes: links.clone().map(|l| l.queued_bytes()).max().unwrap_or(0),
            max_reassembly_bytes: links.map(|l| l.reasm.buffered_bytes()).max().unwrap_or(0),
            compact_pending: self.compact_pending.len(),
        }
    }
}

/// What was asked of which peer, by kind.
#[derive(Default)]
pub(super) struct InFlight {
    blocks: HashMap<Hash, Request>,
    txs: HashMap<Hash, Request>,
    /// Transactions asked per peer (kept with `txs`).
    txs_per_peer: HashMap<PeerId, usize>,
}

impl InFlight {
    /// Is block `h` asked for?
    pub fn has_block(&self, h: &Hash) -> bool {
        self.blocks.contains_key(h)
    }

    /// Is transaction `h` asked for?
    pub fn has_tx(&self, h: &Hash) -> bool {
        self.txs.contains_key(h)
    }

    /// Was block `h` asked of `peer`?
    pub fn block_from(&self, h: &Hash, peer: PeerId) -> bool {
        self.blocks.get(h).is_some_and(|r| r.peer == peer)
    }

    /// Was transaction `h` asked of `peer`?
    pub fn tx_from(&self, h: &Hash, peer: PeerId) -> bool {
        self.txs.get(h).is_some_and(|r| r.peer == peer)
    }

    /// Record a block request.
    pub fn insert_block(&mut self, h: Hash, r: Request) {
        self.blocks.insert(h, r);
    }

    /// Record a transaction request; false (nothing recorded) once the peer has
    /// `MAX_TX_REQUESTS_PER_PEER` out.
    pub fn insert_tx(&mut self, h: Hash, r: Request) -> bool {
        let n = self.txs_per_peer.entry(r.peer).or_default();
        if *n >= MAX_TX_REQUESTS_PER_PEER {
            return false;
        }
        *n += 1;
        if let Some(old) = self.txs.insert(h, r) {
            self.tx_gone(old.peer);
        }
        true
    }

    /// Block `h` arrived or is no longer wanted.
    pub fn remove_block(&mut self, h: &Hash) -> Option<Request> {
        self.blocks.remove(h)
    }

    /// Transaction `h` arrived or is no longer wanted.
    pub fn remove_tx(&mut self, h: &Hash) -> Option<Request> {
        let r = self.txs.remove(h)?;
        self.tx_gone(r.peer);
        Some(r)
    }

    /// `peer` answered `NotFound` for `h` (of this kind): its request is over.
    pub fn not_found(&mut self, peer: PeerId, h: &Hash, tx: bool) {
        if tx {
            if self.txs.get(h).is_some_and(|r| r.peer == peer) {
                self.remove_tx(h);
            }
        } else if self.blocks.get(h).is_some_and(|r| r.peer == peer) {
            self.blocks.remove(h);
        }
    }

    /// Every request, blocks and transactions, to move deadlines.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Request> {
        self.blocks.values_mut().chain(self.txs.values_mut())
    }

    /// Blocks in flight, per peer.
    pub fn block_load(&self) -> HashMap<PeerId, usize> {
        let mut load = HashMap::new();
        for r in self.blocks.values() {
            *load.entry(r.peer).or_default() += 1;
        }
        load
    }

    /// Keep only the requests `keep` says yes to (both kinds).
    pub fn retain(&mut self, mut keep: impl FnMut(&Hash, &mut Request) -> bool) {
        self.blocks.retain(&mut keep);
        self.txs.retain(&mut keep);
        self.recount();
    }

    /// The requests `expired` says have passed: (hash, peer, is a block), in an order
    /// that replays (log lines and timers follow from it).
    pub fn expired(&self, expired: impl Fn(&Request) -> bool) -> Vec<(Hash, PeerId, bool)> {
        let mut out: Vec<(Hash, PeerId, bool)> = Vec::new();
        for (map, block) in [(&self.blocks, true), (&self.txs, false)] {
            out.extend(
                map.iter()
                    .filter(|(_, r)| expired(r))
                    .map(|(h, r)| (*h, r.peer, block)),
            );
        }
        out.sort_unstable_by_key(|(h, p, b)| (*p, !*b, *h));
        out
    }

    /// The most block and transaction requests out to any one peer.
    pub fn max_per_peer(&self) -> (usize, usize) {
        let blocks = self.block_load().into_values().max().unwrap_or(0);
        let txs = self.txs_per_peer.values().copied().max().unwrap_or(0);
        (blocks, txs)
    }

    /// Requests in flight (blocks, transactions).
    pub fn len(&self) -> (usize, usize) {
        (self.blocks.len(), self.txs.len())
    }

    fn tx_gone(&mut self, peer: PeerId) {
        if let Some(n) = self.txs_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.txs_per_peer.remove(&peer);
            }
        }
    }

    fn recount(&mut self) {
        self.txs_per_peer.clear();
        for r in self.txs.values() {
            *self.txs_per_peer.entry(r.peer).or_default() += 1;
        }
    }
}
