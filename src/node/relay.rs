//! Relay of transactions and blocks: inventory (`Inv`, `GetData`), transactions from
//! peers and from the API, and announcing what is new to the peers that lack it (by
//! header on packet links, whole on narrow ones, once per broadcast channel).

use super::{
    compact, is_narrow, truncate, Dest, Node, NodeEvent, Priority, Request, INV_GATHER_MS,
    MAX_BLOCKS_PER_GETDATA, NARROW_TX_MAX,
};
use crate::chain::validate::ValidationError;
use crate::chain::MempoolReject;
use crate::chain::{BlockOutcome, ChainError, Hash, Transaction, TxOutcome, VerifiedTx};
use crate::net::PeerId;
use crate::wire::message::{limits, InvItem, InvKind, Message, Reject, RejectCode};
use tracing::{debug, info, warn};

impl Node {
    /// A local transaction: `Ok` when its signature was checked already, `Err` when
    /// the chain is to check it.
    pub(super) fn submit_tx_inner(
        &mut self,
        now: u64,
        tx: Result<VerifiedTx, Transaction>,
        id: Hash,
    ) -> Result<Hash, ChainError> {
        let wall = self.wall_s(now);
        let outcome = match tx {
            Ok(v) => self.chain.submit_verified_tx(v, wall)?,
            Err(t) => self.chain.submit_tx(t, wall)?,
        };
        match outcome {
            TxOutcome::Accepted => {
                self.outbox_tx_accepted(now, id, None)?;
                self.events
                    .push_back(NodeEvent::TxAccepted { id, from: None });
                self.announce(
                    None,
                    InvItem {
                        kind: InvKind::Tx,
                        hash: id,
                    },
                );
            }
            TxOutcome::Duplicate => {}
        }
        Ok(id)
    }

    pub(super) fn on_inv(&mut self, now: u64, peer: PeerId, items: Vec<InvItem>) {
        let mut want_headers = false;
        let mut want = Vec::new();
        for it in items {
            match it.kind {
                InvKind::Block | InvKind::CompactBlock => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.learn(it.hash);
                    }
                    if !self.chain.has_header(&it.hash) {
                        want_headers = true;
                    }
                }
                // Not learned here: what a peer is known to hold picks where blocks are
                // fetched from, and a block's hash announced as a transaction must not
                // make it the block's source. It is learned when its `Tx` comes; a second
                // announcer may hear of it from us once.
                InvKind::Tx => {
                    if self.chain.mempool_get(&it.hash).is_none()
                        && !self.in_flight.has_tx(&it.hash)
                    {
                        let (deadline, _) = self.block_deadline(peer, now, 1);
                        let asked = self.in_flight.insert_tx(
                            it.hash,
                            Request {
                                peer,
                                deadline,
                                sent_at: now,
                                air: 0,
                                retry: true,
                            },
                        );
                        if asked {
                            want.push(it);
                        }
                    }
                }
            }
        }
        if want_headers {
            self.ask_headers(now, peer, None);
        }
        if !want.is_empty() {
            self.send(peer, Message::GetData(want));
        }
    }

    pub(super) fn on_getdata(&mut self, peer: PeerId, items: Vec<InvItem>) {
        // The operator keeps whole blocks off this link (a narrow one): NotFound.
        let carries_blocks = self.peer_caps(peer).is_none_or(|c| c.blocks);
        let mut missing = Vec::new();
        let mut blocks_sent = 0;
        for it in items {
            match it.kind {
                InvKind::Block | InvKind::CompactBlock => {
                    if blocks_sent >= MAX_BLOCKS_PER_GETDATA || !carries_blocks {
                        missing.push(it);
                        continue;
                    }
                    match self.chain.block(&it.hash) {
                        Ok(Some(b)) => {
                            blocks_sent += 1;
                            let msg = if it.kind == InvKind::CompactBlock {
                                compact::compact_of(&b)
                            } else {
                                Message::Block(b)
                            };
                            self.send(peer, msg);
                            // The peer asked for it: the sync now carries it there, so the
                            // outbox need not.
                            self.outbox_peer_has(self.now, peer, it.hash);
                        }
                        Ok(None) => missing.push(it),
                        Err(e) => {
                            warn!("store error reading block {}: {e}", it.hash);
                            missing.push(it);
                        }
                    }
                }
                InvKind::Tx => match self.chain.mempool_get(&it.hash) {
                    Some(tx) => self.send(peer, Message::Tx(tx)),
                    None => missing.push(it),
                },
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.learn(it.hash);
            }
        }
        if !missing.is_empty() {
            self.send(peer, Message::NotFound(missing));
        }
    }

    pub(super) fn on_tx(&mut self, now: u64, peer: PeerId, tx: Transaction) {
        let id = tx.id();
        // Charged to the peer's message limit when it came: unasked, on a stream link
        // (see `sync_traffic`; on packet links each fragment is charged instead).
        let charged = !self.in_flight.tx_from(&id, peer)
            && self
                .peers
                .get(&peer)
                .is_some_and(|p| !self.packet_links.contains_key(&p.link));
        self.in_flight.remove_tx(&id);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.learn(id);
        }
        self.take_tx(now, peer, tx, charged);
    }

    /// Offer a peer's transaction to the chain; `charged` when its message was charged to
    /// the peer's limit (it came unasked).
    fn take_tx(&mut self, now: u64, peer: PeerId, tx: Transaction, charged: bool) {
        let id = tx.id();
        // The chain checks the signature, once (issue 14: it was checked here too).
        let held = tx.clone();
        let sender = tx.from;
        match self.chain.submit_tx(tx, self.wall_s(now)) {
            Err(ChainError::InvalidTx {
                reason: ValidationError::BadSignature(_),
                ..
            }) => {
                self.misbehave(
                    peer,
                    RejectCode::Invalid,
                    format!("transaction {id}: bad signature"),
                    Some(id),
                );
            }
            Ok(TxOutcome::Accepted) => {
                debug!(peer, %id, "tx accepted");
                // New and valid, so relaying it was no flood: its message is refunded.
                // Duplicates, refused and badly signed transactions stay charged.
                if let Some(p) = self.peers.get_mut(&peer).filter(|_| charged) {
                    p.msg_bucket.give(now, 1);
                }
                if let Err(e) = self.outbox_tx_accepted(now, id, Some(peer)) {
                    warn!(%id, "cannot queue relayed tx in the outbox: {e}");
                }
                self.events.push_back(NodeEvent::TxAccepted {
                    id,
                    from: Some(peer),
                });
                self.announce(
                    Some(peer),
                    InvItem {
                        kind: InvKind::Tx,
                        hash: id,
                    },
                );
                self.release_gap_txs(now, sender);
            }
            Ok(TxOutcome::Duplicate) => {}
            // Ahead of a nonce still on its way (pushes and answers to requests can cross):
            // held until the gap fills. A `Reject` each would be a flood of our own to the
            // peer's limit in a fast relay (issue 14's bench: dropped by A).
            Err(ChainError::TxRefused {
                reason: MempoolReject::NonceGap { expected, got },
                ..
            }) => {
                debug!(peer, %id, "tx ahead of its sender's next nonce: held");
                self.hold_gap_tx(now, peer, held, got.saturating_sub(expected), charged);
            }
            // A well-signed transaction can fail policy or state checks without any fault
            // of the peer (it may have seen a block we have not): refuse it, keep the peer.
            Err(e) => {
                debug!(peer, %id, "tx refused: {e}");
                self.send(
                    peer,
                    Message::Reject(Reject {
                        code: RejectCode::Invalid,
                        reason: truncate(&e.to_string(), limits::MAX_REASON),
                        about: Some(id),
                    }),
                );
            }
        }
    }

    /// Keep a relayed transaction that came ahead of its sender's next nonce until the
    /// gap fills (see [`super::gap`]).
    fn hold_gap_tx(&mut self, now: u64, peer: PeerId, tx: Transaction, ahead: u64, charged: bool) {
        let max_ahead = self.chain.mempool_limits().max_per_sender as u64;
        if let Err(why) = self.gap_txs.hold(now, peer, tx, ahead, max_ahead, charged) {
            debug!(peer, ?why, "transaction ahead of its nonce not held");
        }
    }

    /// A transaction of `sender` was taken: the next one held for it goes in, as if it
    /// came now from the peer that sent it (which takes the one after, and so on).
    fn release_gap_txs(&mut self, now: u64, sender: crate::chain::Address) {
        let next = self.chain.next_nonce(&sender);
        let Some(h) = self.gap_txs.take_next(sender, next) else {
            return;
        };
        // From a peer that has gone, it goes with it: the peer's outbox pushes it again
        // on its next session.
        if self.peers.contains_key(&h.peer) {
            self.take_tx(now, h.peer, h.tx, h.charged);
        }
    }

    pub(super) fn after_block(&mut self, from: Option<PeerId>, out: &BlockOutcome) {
        if let BlockOutcome::Connected {
            tip,
            connected,
            disconnected,
        } = out
        {
            if !disconnected.is_empty() {
                info!(
                    disconnected = disconnected.len(),
                    connected = connected.len(),
                    height = tip.height,
                    tip = %tip.hash,
                    "reorganised to a chain with more work"
                );
            }
            if !disconnected.is_empty() {
                // Transactions of the replaced blocks are back in the mempool: offer them
                // again, since peers that saw them mined may have dropped them.
                let ids: Vec<Hash> = self
                    .chain
                    .mempool_txs()
                    .iter()
                    .take(limits::MAX_INV)
                    .map(Transaction::id)
                    .collect();
                for id in ids {
                    self.announce(
                        None,
                        InvItem {
                            kind: InvKind::Tx,
                            hash: id,
                        },
                    );
                }
                // A peer proven to hold a replaced block was marked as holding its
                // transactions, and one that only stored that block beside a heavier
                // chain never had them in its mempool: owe them to every peer again, or
                // they stay on this side of the network for good.
                self.outbox_requeue_returned(disconnected);
            }
            // The peer that sent the new tip holds it, and everything below it.
            if let Some(p) = from {
                self.outbox_peer_has(self.now, p, tip.hash);
            }
            // Outbox transactions the new tip made invalid stop being pushed.
            self.outbox_settle_txs(self.now);
            // A block may have carried the nonce a held transaction waited for.
            for s in self.gap_txs.senders() {
                self.release_gap_txs(self.now, s);
            }
            self.events.push_back(NodeEvent::TipChanged {
                tip: *tip,
                connected: connected.len(),
                disconnected: disconnected.len(),
                from,
                header_height: self.chain.best_header().height.max(tip.height),
            });
            self.announce(
                from,
                InvItem {
                    kind: InvKind::Block,
                    hash: tip.hash,
                },
            );
        }
    }

    /// Send every peer the transaction announcements gathered for it.
    pub(super) fn flush_invs(&mut self) {
        self.inv_due = u64::MAX;
        let due: Vec<(PeerId, Vec<Hash>)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| !p.inv_txs.is_empty())
            .map(|(&id, p)| (id, std::mem::take(&mut p.inv_txs)))
            .collect();
        for (peer, items) in due {
            self.send_tx_inv(peer, items);
        }
    }

    /// One `Inv` of the transactions in `ids` still worth announcing (a block may have
    /// taken some meanwhile).
    fn send_tx_inv(&mut self, peer: PeerId, ids: Vec<Hash>) {
        let items: Vec<InvItem> = ids
            .into_iter()
            .filter(|h| self.chain.mempool_get(h).is_some())
            .map(|hash| InvItem {
                kind: InvKind::Tx,
                hash,
            })
            .collect();
        if !items.is_empty() {
            self.send(peer, Message::Inv(items));
        }
    }

    /// Announce an item to every ready peer that does not already know it.
    pub(super) fn announce(&mut self, except: Option<PeerId>, item: InvItem) {
        // Whatever came in on a broadcast channel was heard by every station on it;
        // repeating it there would only spend air time (beacons cover a missed frame).
        let heard_on = except
            .and_then(|e| self.peers.get(&e))
            .map(|p| p.link)
            .filter(|l| self.links.get(l).is_some_and(|c| c.broadcast));
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(&id, p)| {
                Some(id) != except
                    && Some(p.link) != heard_on
                    && p.ready()
                    && !p.known.contains(&item.hash)
                    && !self.outbox_will_push(id, &item)
            })
            .map(|(&id, _)| id)
            .collect();
        targets.sort_unstable();
        // On packet links a new block is announced by its header: the receiver can
        // check its proof of work and ask for the body at once, saving a round trip
        // of GetHeaders/Headers (two channel turnarounds on a half-duplex radio).
        let header_msg = match item.kind {
            InvKind::Block | InvKind::CompactBlock => self
                .chain
                .header(&item.hash)
                .map(|h| Message::Headers(vec![h])),
            InvKind::Tx => None,
        };
        // On a narrow link an Inv, GetData and Tx would cost three turnarounds of minutes
        // each: a small transaction goes whole, a large one not at all.
        let narrow_tx = match item.kind {
            InvKind::Tx => self
                .chain
                .mempool_get(&item.hash)
                .map(Message::Tx)
                .filter(|m| self.encode_len(m) <= NARROW_TX_MAX),
            _ => None,
        };
        let announcement = |packet: bool, narrow: bool| match (&header_msg, packet) {
            _ if narrow && item.kind == InvKind::Tx => narrow_tx.clone(),
            (Some(h), true) => Some(h.clone()),
            _ => Some(Message::Inv(vec![item])),
        };
        let mut broadcast_links = Vec::new();
        for id in targets {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            p.learn(item.hash);
            let link = p.link;
            let narrow = self.links.get(&link).is_some_and(is_narrow);
            // On a shared channel one broadcast reaches every station at the price of one.
            if self.links.get(&link).is_some_and(|c| c.broadcast) {
                if !broadcast_links.contains(&(link, narrow)) {
                    broadcast_links.push((link, narrow));
                }
                continue;
            }
            let packet = self.packet_links.contains_key(&link);
            let fast = self.links.get(&link).is_some_and(crate::outbox::is_fast);
            if item.kind == InvKind::Tx && fast && !packet {
                p.inv_txs.push(item.hash);
                if p.inv_txs.len() >= limits::MAX_INV {
                    let items = std::mem::take(&mut p.inv_txs);
                    self.send_tx_inv(id, items);
                } else {
                    self.inv_due = self.inv_due.min(self.now + INV_GATHER_MS);
                }
                continue;
            }
            if let Some(msg) = announcement(packet, narrow) {
                self.send(id, msg);
            }
        }
        for (link, narrow) in broadcast_links {
            if !narrow && item.kind != InvKind::Tx && self.broadcast_block_coded(link, &item.hash) {
                continue;
            }
            let Some(msg) = announcement(true, narrow) else {
                continue;
            };
            let bytes = self.encode(&msg);
            let bytes = self.seal_broadcast(link, bytes);
            let now = self.now;
            if let Some(l) = self.packet_links.get_mut(&link) {
                l.enqueue(now, Dest::Broadcast(link), &bytes, Priority::Control);
            }
        }
    }
}
