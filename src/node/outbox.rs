//! The node's side of the outbox: what gets queued, pushing due items to ready peers,
//! end-to-end acks and the seen-set on the receiving side, retries and proofs of
//! delivery. `mod.rs` only calls the hooks here (see docs/OUTBOX.md).

use super::rtt::Rtt;
use super::Node;
use crate::chain::{BlockOutcome, Chain, ChainError, Hash, MempoolReject, Transaction, TxOutcome};
use crate::net::{LinkCaps, PeerId};
use crate::outbox::{
    item_id, Command, Dest, Enqueued, Item, OutItem, Outbox, Payload, RetryPolicy, State, Totals,
};
use crate::wire::envelope;
use crate::wire::message::{limits, InvItem, InvKind, Message, ACK_REQUESTED_MIN_ID};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, info, warn};

/// Destinations remembered from the peers table (most recently seen first).
const MAX_KNOWN_DESTS: usize = 64;
/// A full list of destinations takes a new one only in place of one unseen this long.
const KNOWN_STALE_S: u64 = 7 * 24 * 3600;
/// Items remembered as pushed to a peer before its outbox session opened.
const MAX_EARLY_PUSHED: usize = 1024;
/// Entries kept in the receiver's seen-set.
pub const SEEN_CAP: u64 = 50_000;
/// Prefix of peers-table rows that record a node id (the table is keyed by address).
const NODE_ROW: &str = "node:";
/// Shortest wait between outbox wake-ups, so an item that cannot be sent yet does not
/// spin the driver.
const MIN_WAKE_MS: u64 = 100;
/// Most doublings of a push's timeout, for its own attempts and the session's timeouts
/// together.
const MAX_DOUBLINGS: u32 = 5;
/// Longest turnaround allowed for in a push's timeout, after its doublings (as Linux's
/// TCP): an item the peer could not take at first (a block it cannot connect yet) is
/// tried again within minutes once it can.
const MAX_RTO_MS: u64 = 120_000;
/// Items per session remembered as sent after their deadline passed.
const MAX_LATE: usize = 1024;
/// Typical pushed item size, for the slow-link retry base (a regtest block or a tx).
const TYPICAL_ITEM_BYTES: usize = 300;

/// Outbox counters since start, for the API and the simulator.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutboxStats {
    /// Items sent (first attempts and retries).
    pub pushes: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Items delivered by an ack.
    pub acked: u64,
    /// Items delivered because the peer proved it had them.
    pub proven: u64,
    /// Ack messages sent.
    pub ack_msgs: u64,
    /// Pushes received that were already in the seen-set.
    pub dup_pushes: u64,
    /// Items the outbox had no room for (the destination's share was full): they went
    /// by announcement only.
    pub refused: u64,
}

struct Session {
    node_id: [u8; 32],
    policy: RetryPolicy,
    /// Items sent on this session and not acked, with their retry deadline.
    inflight: BTreeMap<u64, u64>,
    /// Items sent on this session whose deadline passed unacked (at most `MAX_LATE`,
    /// the newest): their ack may still come, and delivers them. Ignoring it made every
    /// item whose ack was slower than its timer go again, and again.
    late: BTreeSet<u64>,
    /// Of those sent once, when their ack could come at the earliest (sent, plus the air
    /// time of what went out with and before them): an ack's delay past it is a sample
    /// of `turnaround` (Karn's rule: never from an item sent again).
    sent: BTreeMap<u64, u64>,
    /// Turnaround of pushes on this session, from their acks: on a slow half-duplex link
    /// the ack waits behind both stations' traffic, seconds to minutes, which no fixed
    /// schedule fits (a retry sent before the ack returns only repeats the item).
    turnaround: Rtt,
    /// Items whose block went out unasked on this session (see `push_to_behind`): its
    /// ack delivers them too.
    pushed: BTreeSet<u64>,
    /// Highest main-chain block the peer proved it holds.
    tip_height: Option<u64>,
    acks: Vec<u64>,
    /// When the oldest unsent ack was queued.
    ack_first: Option<u64>,
    ack_due: Option<u64>,
}

/// Outbox state inside the node.
pub(super) struct OutboxState {
    ob: Outbox,
    known: Vec<[u8; 32]>,
    /// When each known destination was last seen (wall seconds).
    known_seen: BTreeMap<[u8; 32], u64>,
    sessions: BTreeMap<PeerId, Session>,
    /// Items pushed to a peer before its outbox session opened (in the handshake turn).
    early_pushed: BTreeMap<PeerId, BTreeSet<u64>>,
    pub(super) wake: u64,
    stats: OutboxStats,
    /// Destinations whose share is full, warned about once until an item fits again.
    full: BTreeSet<Dest>,
    /// No pending or held item expires before this (a lower bound): the expiry walk over
    /// every item runs only when one may be due.
    expiry_floor: u64,
}

impl OutboxState {
    /// Load the outbox and the known destinations from the chain's store. A store that
    /// cannot be read is logged and leaves the outbox empty (the rows stay on disk).
    pub(super) fn load(chain: &Chain) -> OutboxState {
        let store = chain.store();
        let ob = Outbox::load(store).unwrap_or_else(|e| {
            warn!("cannot load the outbox, starting with none in memory: {e}");
            Outbox::default()
        });
        let rows: Vec<([u8; 32], u64)> = store
            .peers()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(addr, seen, _)| {
                let h = addr.strip_prefix(NODE_ROW)?;
                Some((<[u8; 32]>::try_from(hex::decode(h).ok()?).ok()?, seen))
            })
            .take(MAX_KNOWN_DESTS)
            .collect();
        let known = rows.iter().map(|(k, _)| *k).collect();
        let known_seen = rows.into_iter().collect();
        let expiry_floor = earliest_expiry(&ob);
        OutboxState {
            ob,
            known,
            known_seen,
            sessions: BTreeMap::new(),
            early_pushed: BTreeMap::new(),
            wake: u64::MAX,
            stats: OutboxStats::default(),
            full: BTreeSet::new(),
            expiry_floor,
        }
    }

    /// Ids of the items for `node_id`, then of those for any peer, each by id.
    fn ids_for(&self, node_id: [u8; 32]) -> Vec<u64> {
        [Dest::Peer(node_id), Dest::Any]
            .into_iter()
            .flat_map(|d| self.ob.ids_for_dest(d))
            .collect()
    }
}

/// Earliest expiry of an item that can still expire (u64::MAX: none).
fn earliest_expiry(ob: &Outbox) -> u64 {
    ob.items()
        .filter(|it| matches!(it.state, State::Pending | State::Held))
        .map(|it| it.expires_ms)
        .min()
        .unwrap_or(u64::MAX)
}

impl OutboxState {
    /// A proven peer `node_id` seen at `seen_s`: it becomes (or stays) a destination for
    /// what the node relays. The list is bounded, and full it takes a newcomer only in
    /// place of a destination unseen for `KNOWN_STALE_S`: a stranger that makes many
    /// identities (keys are free) cannot push the peers that come back out of it.
    fn remember(&mut self, node_id: [u8; 32], seen_s: u64) {
        if self.known.contains(&node_id) {
            self.known.retain(|k| *k != node_id);
        } else if self.known.len() >= MAX_KNOWN_DESTS {
            let stalest = self
                .known
                .iter()
                .enumerate()
                .min_by_key(|(_, k)| self.known_seen.get(*k).copied().unwrap_or(0))
                .map(|(i, k)| (i, self.known_seen.get(k).copied().unwrap_or(0)));
            match stalest {
                Some((i, seen)) if seen_s.saturating_sub(seen) > KNOWN_STALE_S => {
                    let gone = self.known.remove(i);
                    self.known_seen.remove(&gone);
                }
                _ => {
                    debug!("known destinations full; not adding a new node");
                    return;
                }
            }
        }
        self.known.insert(0, node_id);
        self.known_seen.insert(node_id, seen_s);
    }
}

/// What the receive hook found in a message.
pub(super) enum Pushed {
    /// Not an outbox push.
    No,
    /// A retransmission already applied: acked, nothing more to do.
    Done,
    /// A push to ack once it is held durably.
    Check {
        msg_id: u64,
        sender: [u8; 32],
        hash: Hash,
        block: bool,
    },
}

/// One outbox item as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxEntry {
    /// Item id.
    pub id: u64,
    /// Destination node id (hex) or "any".
    pub dest: String,
    /// "tx" or "block".
    pub kind: &'static str,
    /// Transaction id or block hash.
    pub hash: Hash,
    /// Lifecycle state.
    pub state: State,
    /// Lower goes first.
    pub priority: u8,
    /// Attempts so far.
    pub attempts: u32,
    /// When queued (ms).
    pub created_ms: u64,
    /// Next attempt (ms).
    pub next_attempt_ms: u64,
    /// Expiry (ms).
    pub expires_ms: u64,
}

/// The outbox as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxView {
    /// Items, by id.
    pub items: Vec<OutboxEntry>,
    /// Lifetime counters.
    pub totals: Totals,
    /// Counters since start.
    pub stats: OutboxStats,
    /// Items refused for lack of room since start.
    pub refused: u64,
}

impl Node {
    /// Outbox items and counters.
    pub fn outbox(&self) -> OutboxView {
        let items = self
            .outbox
            .ob
            .items()
            .map(|it| OutboxEntry {
                id: it.id,
                dest: match it.dest {
                    Dest::Any => "any".into(),
                    Dest::Peer(n) => hex::encode(n),
                },
                kind: match it.item {
                    OutItem::Tx(_) => "tx",
                    OutItem::Block(_) => "block",
                },
                hash: it.item.hash(),
                state: it.state,
                priority: it.priority,
                attempts: it.attempts,
                created_ms: it.created_ms,
                next_attempt_ms: it.next_attempt_ms,
                expires_ms: it.expires_ms,
            })
            .collect();
        OutboxView {
            items,
            totals: self.chain.store().outbox_totals().unwrap_or_default(),
            stats: self.outbox.stats.clone(),
            refused: self.outbox.ob.refused,
        }
    }

    /// Operator command (`hold`, `release`, `drop`, `retry`) on item `id`.
    pub fn outbox_command(&mut self, now: u64, id: u64, cmd: Command) -> Result<(), String> {
        let res = self
            .outbox
            .ob
            .command(self.chain.store_mut(), now, id, cmd)
            .map_err(|e| format!("store: {e}"))?;
        if res.is_ok() {
            info!(id, ?cmd, "outbox item changed by the operator");
            self.outbox.expiry_floor = earliest_expiry(&self.outbox.ob);
            for s in self.outbox.sessions.values_mut() {
                s.inflight.remove(&id);
                s.late.remove(&id);
                s.sent.remove(&id);
            }
            self.outbox_pump(now);
        }
        res
    }

    /// Items waiting to be sent (pending: neither held, delivered nor expired). Links
    /// that open sessions on demand dial when this is above zero.
    pub fn outbox_waiting(&self) -> usize {
        self.outbox.ob.pending()
    }

    /// The raw outbox (for the simulator's invariants).
    pub fn outbox_items(&self) -> Vec<Item> {
        self.outbox.ob.items().collect()
    }

    // ----- hooks called from mod.rs -----

    /// Handshake done: remember the peer's node id, credit its tip, send what it is owed.
    pub(super) fn outbox_peer_ready(&mut self, now: u64, peer: PeerId) {
        let Some((node_id, tip, callsign, caps)) = self.peers.get(&peer).and_then(|p| {
            let h = p.hello.as_ref()?;
            let caps = self
                .links
                .get(&p.link)
                .cloned()
                .unwrap_or_else(LinkCaps::tcp);
            Some((h.node_id, h.tip, h.callsign.clone(), caps))
        }) else {
            return;
        };
        let row = format!("{NODE_ROW}{}", hex::encode(node_id));
        let seen_s = self.wall_s(now);
        if let Err(e) = self.chain.store_mut().upsert_peer(&row, seen_s, &callsign) {
            warn!("cannot record peer {row}: {e}");
        }
        self.outbox.remember(node_id, seen_s);
        let pushed = self.outbox.early_pushed.remove(&peer).unwrap_or_default();
        self.outbox.sessions.insert(
            peer,
            Session {
                node_id,
                policy: RetryPolicy::for_link(&caps, TYPICAL_ITEM_BYTES),
                inflight: BTreeMap::new(),
                late: BTreeSet::new(),
                sent: BTreeMap::new(),
                turnaround: Rtt::default(),
                pushed,
                tip_height: None,
                acks: Vec::new(),
                ack_first: None,
                ack_due: None,
            },
        );
        // A new session means attempts in flight on an old one are lost: send now.
        self.outbox.ob.due_now(Dest::Peer(node_id), now);
        self.outbox.ob.due_now(Dest::Any, now);
        self.outbox_peer_has(now, peer, tip);
        self.outbox_pump(now);
    }

    /// A session closed: its attempts in flight are dropped (retried on the next one).
    pub(super) fn outbox_peer_gone(&mut self, peer: PeerId) {
        self.outbox.sessions.remove(&peer);
        self.outbox.early_pushed.remove(&peer);
    }

    /// Before a message is handled: note what it proves the peer holds, and answer a
    /// repeated push from the seen-set instead of applying it again.
    pub(super) fn outbox_inspect(
        &mut self,
        now: u64,
        peer: PeerId,
        msg_id: u64,
        msg: &Message,
    ) -> Pushed {
        let Some(sender) = self.outbox.sessions.get(&peer).map(|s| s.node_id) else {
            return Pushed::No;
        };
        let (hash, block) = match msg {
            Message::Inv(items) => {
                for it in items {
                    self.outbox_peer_has(now, peer, it.hash);
                }
                return Pushed::No;
            }
            // A pushed block travels as its header (see `push_item`): ack it once we
            // hold the block, which we fetch through the normal sync if we lack it.
            Message::Headers(hs) if hs.len() == 1 && msg_id >= ACK_REQUESTED_MIN_ID => {
                (hs[0].hash(), true)
            }
            Message::Headers(hs) => {
                // Headers answer our locator from the peer's best chain: it holds them.
                if let Some(last) = hs.last() {
                    self.outbox_peer_has(now, peer, last.hash());
                }
                return Pushed::No;
            }
            Message::Tx(tx) => (tx.id(), false),
            Message::Block(b) => (b.hash(), true),
            _ => return Pushed::No,
        };
        self.outbox_peer_has(now, peer, hash);
        if msg_id < ACK_REQUESTED_MIN_ID {
            return Pushed::No;
        }
        match self.chain.store().seen_contains(&sender, msg_id, &hash.0) {
            Ok(true) => {
                self.outbox.stats.dup_pushes += 1;
                self.queue_ack(now, peer, msg_id);
                Pushed::Done
            }
            Ok(false) => Pushed::Check {
                msg_id,
                sender,
                hash,
                block,
            },
            Err(e) => {
                warn!("seen-set lookup failed: {e}");
                Pushed::No
            }
        }
    }

    /// After a pushed message was handled: ack it if we now hold it durably.
    pub(super) fn outbox_after(&mut self, now: u64, peer: PeerId, pushed: Pushed) {
        let Pushed::Check {
            msg_id,
            sender,
            hash,
            block,
        } = pushed
        else {
            return;
        };
        let held = if block {
            self.chain.has_block(&hash)
        } else {
            self.chain.mempool_get(&hash).is_some()
                || matches!(self.chain.store().tx_block(&hash), Ok(Some(_)))
        };
        if !held {
            // Refused or parked (orphan, nonce gap): no ack, the sender retries later.
            return;
        }
        if let Err(e) = self
            .chain
            .store_mut()
            .seen_insert(&sender, msg_id, &hash.0, SEEN_CAP)
        {
            // Still ack: the chain itself makes a second application a no-op.
            warn!("seen-set write failed: {e}");
        }
        self.queue_ack(now, peer, msg_id);
    }

    /// `Ack` from a peer: its items are delivered. Only items sent to it on this session
    /// count: an ack of ids it was never sent (the ids are sequential, easy to guess)
    /// delivers nothing.
    /// Does this `Ack` name only items we have in flight to `peer`? Then it answers our
    /// pushes and is not charged to its message limit: on a fast link one comes per half
    /// window, hundreds a second in a busy relay.
    pub(super) fn acks_in_flight(&self, peer: PeerId, ids: &[u64]) -> bool {
        let Some(s) = self.outbox.sessions.get(&peer) else {
            return false;
        };
        !ids.is_empty()
            && ids.iter().all(|m| {
                item_id(*m).is_some_and(|id| s.inflight.contains_key(&id) || s.pushed.contains(&id))
            })
    }

    pub(super) fn outbox_on_ack(&mut self, now: u64, peer: PeerId, ids: Vec<u64>) {
        let Some(node_id) = self.outbox.sessions.get(&peer).map(|s| s.node_id) else {
            return;
        };
        for msg_id in ids {
            let Some(id) = item_id(msg_id) else { continue };
            let once = self.outbox.ob.get(id).is_some_and(|it| it.attempts == 1);
            let sent_here = self.outbox.sessions.get_mut(&peer).is_some_and(|s| {
                let inflight = s.inflight.remove(&id).is_some() | s.late.remove(&id);
                if let Some(t) = s.sent.remove(&id) {
                    if inflight && once {
                        s.turnaround.sample(now.saturating_sub(t));
                    }
                }
                s.pushed.remove(&id) || inflight
            });
            let ok = sent_here
                && self
                    .outbox
                    .ob
                    .get(id)
                    .is_some_and(|it| it.dest == Dest::Peer(node_id) || it.dest == Dest::Any);
            if !ok {
                continue;
            }
            match self.outbox.ob.delivered(self.chain.store_mut(), id) {
                Ok(Some(it)) => {
                    self.outbox.stats.acked += 1;
                    debug!(id, peer, "outbox item acked");
                    if let OutItem::Block(h) = it.item {
                        self.outbox_peer_has(now, peer, h);
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(id, "cannot record delivery: {e}"),
            }
        }
        self.outbox_pump(now);
    }

    /// Timer: expiries, due acks, due pushes.
    pub(super) fn outbox_tick(&mut self, now: u64) {
        if self.outbox.expiry_floor <= now {
            match self.outbox.ob.expire(self.chain.store_mut(), now) {
                Ok(ids) => {
                    for id in ids {
                        warn!(id, "outbox item expired undelivered (listed until dropped)");
                    }
                }
                Err(e) => warn!("cannot expire outbox items: {e}"),
            }
            self.outbox.expiry_floor = earliest_expiry(&self.outbox.ob);
        }
        let due: Vec<PeerId> = self
            .outbox
            .sessions
            .iter()
            .filter(|(_, s)| s.ack_due.is_some_and(|t| t <= now))
            .map(|(&p, _)| p)
            .collect();
        for p in due {
            self.flush_acks(p);
        }
        self.outbox_pump(now);
    }

    /// A transaction entered the mempool (locally when `from` is None): queue it for
    /// every known peer but its source. Durable on `Ok`.
    pub(super) fn outbox_tx_accepted(
        &mut self,
        now: u64,
        id: Hash,
        from: Option<PeerId>,
    ) -> Result<(), ChainError> {
        let Some(tx) = self.chain.mempool_get(&id) else {
            return Ok(());
        };
        let payload = self.chain.store().share_bytes(crate::store::enc(&tx)?);
        self.enqueue_for_peers(now, OutItem::Tx(id), Some(payload), from)?;
        self.outbox_pump(now);
        Ok(())
    }

    /// A block was submitted (locally when `from` is None): queue the new tip.
    pub(super) fn outbox_block_outcome(
        &mut self,
        now: u64,
        from: Option<PeerId>,
        out: &BlockOutcome,
    ) -> Result<(), ChainError> {
        let BlockOutcome::Connected { tip, .. } = out else {
            return Ok(());
        };
        self.enqueue_for_peers(now, OutItem::Block(tip.hash), None, from)?;
        self.outbox_pump(now);
        Ok(())
    }

    /// The tip changed. A transaction that left the mempool without being mined is
    /// offered to it again, and announced if taken back; one the chain now refuses for
    /// good (its nonce is used by a mined spend, its money only existed on a fork that
    /// lost) can never be delivered usefully, and peers refuse it without an ack: its
    /// items expire now instead of being pushed until the expiry, days later.
    pub(super) fn outbox_settle_txs(&mut self, now: u64) {
        // One look per transaction, not per item (a gateway holds one per peer), in the
        // order of their first pending item: readmitting changes the mempool, so the
        // order must replay.
        let mut stale: Vec<(u64, Hash, Option<Payload>)> = Vec::new();
        for (hash, ids) in self.outbox.ob.tx_items() {
            let first = ids
                .iter()
                .filter_map(|id| self.outbox.ob.get(*id))
                .find(|it| it.state == State::Pending);
            if let Some(it) = first {
                if self.chain.mempool_get(hash).is_none() {
                    stale.push((it.id, *hash, it.payload.clone()));
                }
            }
        }
        stale.sort_unstable_by_key(|(id, _, _)| *id);
        let mut refused: Vec<(u64, Hash, String)> = Vec::new();
        for (_, hash, payload) in stale {
            let Some(why) = self.readmit_tx(now, hash, payload.as_deref()) else {
                continue;
            };
            let ids = self.outbox.ob.tx_items_of(&hash);
            refused.extend(ids.map(|id| (id, hash, why.clone())));
        }
        refused.sort_unstable_by_key(|(id, _, _)| *id);
        for (id, hash, why) in refused {
            match self.outbox.ob.expire_now(self.chain.store_mut(), id) {
                Ok(true) => {
                    warn!(id, %hash, "outbox item expired: the chain refuses its transaction ({why})")
                }
                Ok(false) => {}
                Err(e) => warn!(id, "cannot expire outbox item: {e}"),
            }
        }
        self.recompute_wake(now);
    }

    /// After a reorg: the transactions of the `disconnected` blocks that are back in the
    /// mempool are queued again for every known peer (an item still pending stays as it
    /// is; a peer that holds the transaction acks it at once).
    pub(super) fn outbox_requeue_returned(&mut self, disconnected: &[Hash]) {
        let now = self.now;
        let mut back = Vec::new();
        for h in disconnected {
            if let Ok(Some(b)) = self.chain.block(h) {
                back.extend(
                    b.txs
                        .iter()
                        .map(Transaction::id)
                        .filter(|id| self.chain.mempool_get(id).is_some()),
                );
            }
        }
        for id in back {
            if let Err(e) = self.outbox_tx_accepted(now, id, None) {
                warn!(%id, "cannot queue a transaction back from a reorg: {e}");
            }
        }
    }

    /// Offer an outbox transaction that is not in the mempool to it again. Some(reason)
    /// when the chain refuses it for good; None when it is mined, back in the mempool,
    /// or refused only for now (a full mempool).
    fn readmit_tx(&mut self, now: u64, hash: Hash, payload: Option<&[u8]>) -> Option<String> {
        if matches!(self.chain.store().tx_block(&hash), Ok(Some(_))) {
            return None;
        }
        let tx = payload.and_then(|b| postcard::from_bytes::<Transaction>(b).ok())?;
        match self.chain.submit_tx(tx, self.wall_s(now)) {
            Ok(TxOutcome::Accepted) => {
                self.announce(
                    None,
                    InvItem {
                        kind: InvKind::Tx,
                        hash,
                    },
                );
                None
            }
            Ok(TxOutcome::Duplicate) => None,
            Err(ChainError::TxRefused { reason, .. })
                if !matches!(
                    reason,
                    MempoolReject::Full { .. } | MempoolReject::TooManyPending { .. }
                ) =>
            {
                Some(reason.to_string())
            }
            Err(e @ ChainError::InvalidTx { .. }) => Some(e.to_string()),
            Err(_) => None,
        }
    }

    /// Earliest time the outbox wants the timer.
    pub(super) fn outbox_wake(&self) -> u64 {
        self.outbox.wake
    }

    // ----- internals -----

    fn enqueue_for_peers(
        &mut self,
        now: u64,
        item: OutItem,
        payload: Option<Payload>,
        from: Option<PeerId>,
    ) -> Result<(), ChainError> {
        let source = from.and_then(|p| self.outbox.sessions.get(&p).map(|s| s.node_id));
        let mut dests: Vec<Dest> = self
            .outbox
            .known
            .iter()
            .filter(|n| Some(**n) != source)
            .map(|n| Dest::Peer(*n))
            .collect();
        if dests.is_empty() {
            if from.is_some() {
                // Relayed, and nobody else to carry it to.
                return Ok(());
            }
            dests.push(Dest::Any);
        }
        for dest in dests {
            if let OutItem::Block(new) = item {
                let chain = &self.chain;
                let main = |h: &Hash| chain.is_on_main_chain(h);
                let on_main: Vec<Hash> = self
                    .outbox
                    .ob
                    .ids_for_dest(dest)
                    .filter_map(|id| self.outbox.ob.get(id))
                    .filter_map(|it| match it.item {
                        OutItem::Block(h) if main(&h) => Some(h),
                        _ => None,
                    })
                    .collect();
                if self
                    .outbox
                    .ob
                    .coalesce_block(self.chain.store_mut(), dest, new, |h| on_main.contains(h))?
                    .is_some()
                {
                    continue;
                }
            }
            match self.outbox.ob.enqueue(
                self.chain.store_mut(),
                now,
                dest,
                item,
                payload.clone(),
            )? {
                Enqueued::Added(id) => {
                    debug!(id, ?item, "outbox item queued");
                    if self.outbox.full.remove(&dest) {
                        info!(?dest, "outbox has room for this destination again");
                    }
                    if let Some(it) = self.outbox.ob.get(id) {
                        self.outbox.expiry_floor = self.outbox.expiry_floor.min(it.expires_ms);
                    }
                }
                Enqueued::Exists(_) => {}
                // Once per episode: a relay past the share refuses thousands in a row.
                Enqueued::Refused(reason) => {
                    self.outbox.stats.refused += 1;
                    if self.outbox.full.insert(dest) {
                        warn!(?item, ?dest, "outbox refused an item: {reason}; until it has room, what this destination is owed goes by announcement only");
                    } else {
                        debug!(?item, ?dest, "outbox refused an item: {reason}");
                    }
                }
            }
        }
        Ok(())
    }

    /// The peer holds `hash`: items carrying it to the peer are delivered; a main-chain
    /// block also proves every block below it and the transactions in them.
    pub(super) fn outbox_peer_has(&mut self, now: u64, peer: PeerId, hash: Hash) {
        let _ = now;
        let Some(node_id) = self.outbox.sessions.get(&peer).map(|s| s.node_id) else {
            return;
        };
        let dest = Dest::Peer(node_id);
        // An item for "any peer" is delivered once some peer holds it, too.
        let mut done: Vec<u64> = [OutItem::Tx(hash), OutItem::Block(hash)]
            .iter()
            .flat_map(|k| {
                [
                    self.outbox.ob.find(dest, *k),
                    self.outbox.ob.find(Dest::Any, *k),
                ]
            })
            .flatten()
            .map(|it| it.id)
            .collect();
        if self.chain.is_on_main_chain(&hash) {
            let height = self.chain.header(&hash).map(|h| h.height).unwrap_or(0);
            // It holds the block, so its tip is at least that high: the peer list shows
            // it (the peer says no more than its `Hello` did).
            if let Some(p) = self.peers.get_mut(&peer) {
                p.saw_tip(height, hash);
            }
            let raised = self.outbox.sessions.get_mut(&peer).is_some_and(|s| {
                if s.tip_height.is_none_or(|t| height > t) {
                    s.tip_height = Some(height);
                    true
                } else {
                    false
                }
            });
            if raised {
                let ids = self.outbox.ids_for(node_id);
                for it in ids.into_iter().filter_map(|id| self.outbox.ob.get(id)) {
                    let below = match it.item {
                        OutItem::Block(h) => {
                            self.chain.is_on_main_chain(&h)
                                && self.chain.header(&h).is_some_and(|x| x.height <= height)
                        }
                        OutItem::Tx(t) => match self.chain.store().tx_block(&t) {
                            Ok(Some(b)) => self.chain.header(&b).is_some_and(|x| {
                                x.height <= height && self.chain.is_on_main_chain(&b)
                            }),
                            _ => false,
                        },
                    };
                    if below {
                        done.push(it.id);
                    }
                }
            }
        }
        done.sort_unstable();
        done.dedup();
        for id in done {
            if let Some(s) = self.outbox.sessions.get_mut(&peer) {
                s.inflight.remove(&id);
                s.late.remove(&id);
                s.sent.remove(&id);
            }
            match self.outbox.ob.delivered(self.chain.store_mut(), id) {
                Ok(Some(_)) => self.outbox.stats.proven += 1,
                Ok(None) => {}
                Err(e) => warn!(id, "cannot record delivery: {e}"),
            }
        }
    }

    fn queue_ack(&mut self, now: u64, peer: PeerId, msg_id: u64) {
        let Some(s) = self.outbox.sessions.get_mut(&peer) else {
            return;
        };
        if !s.acks.contains(&msg_id) {
            s.acks.push(msg_id);
        }
        if s.acks.len() >= limits::MAX_ACK_IDS {
            self.flush_acks(peer);
            return;
        }
        let half_duplex_packet = self
            .peers
            .get(&peer)
            .and_then(|p| self.packet_links.get(&p.link))
            .is_some_and(|l| l.takes_turns());
        if half_duplex_packet {
            // Sent in our next turn on the channel, with everything else we have to say
            // (see `take_turn`): never a key-up of its own.
            return;
        }
        let fast = self.peer_caps(peer).is_some_and(crate::outbox::is_fast);
        let Some(s) = self.outbox.sessions.get_mut(&peer) else {
            return;
        };
        // On a fast link half the peer's window acked at once keeps its pushes flowing,
        // as TCP acks every second segment: waiting for a pause let it send one window per
        // pause, 640 transactions a second (issue 14's relay bench). Both ends derive the
        // same policy from the link.
        if fast && s.acks.len() >= s.policy.window / 2 {
            self.flush_acks(peer);
            return;
        }
        // Wait for a pause in what the peer sends (more pushes may be on the air), but
        // never longer than the policy's delay after the first unsent ack: on a link that
        // is open for seconds, an ack held too long dies with the session.
        let first = *s.ack_first.get_or_insert(now);
        let quiet = (s.policy.ack_delay_ms / 4).max(50);
        let due = (now + quiet).min(first + s.policy.ack_delay_ms);
        s.ack_due = Some(due);
        self.outbox.wake = self.outbox.wake.min(due);
    }

    pub(super) fn flush_acks(&mut self, peer: PeerId) {
        let Some(s) = self.outbox.sessions.get_mut(&peer) else {
            return;
        };
        s.ack_due = None;
        s.ack_first = None;
        if s.acks.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut s.acks);
        self.outbox.stats.ack_msgs += 1;
        self.send(peer, Message::Ack(ids));
    }

    /// Send due items to every ready session, within each session's window.
    fn outbox_pump(&mut self, now: u64) {
        let peers: Vec<PeerId> = self.outbox.sessions.keys().copied().collect();
        // Items in flight anywhere: a `Dest::Any` item goes to one peer at a time.
        for peer in peers {
            let ready = self.peers.get(&peer).is_some_and(|p| p.ready());
            // While our burst is on the air (or the peer's answer is), nothing we pushed
            // is overdue: its ack comes in the peer's next turn.
            let overdue = self.answer_overdue(peer, now);
            let Some(s) = self.outbox.sessions.get_mut(&peer) else {
                continue;
            };
            if overdue {
                let Session {
                    inflight,
                    late,
                    sent,
                    ..
                } = s;
                let before = late.len();
                inflight.retain(|id, deadline| {
                    let on_time = *deadline > now;
                    if !on_time {
                        late.insert(*id);
                    }
                    on_time
                });
                if late.len() > before {
                    // Karn: acks slower than the timer are never sampled, so the timer
                    // stays doubled for every push until one sent once is acked in time.
                    s.turnaround.timed_out();
                }
                while late.len() > MAX_LATE {
                    late.pop_first();
                }
                sent.retain(|id, _| inflight.contains_key(id) || late.contains(id));
            }
            if !ready {
                continue;
            }
            let free = s.policy.window.saturating_sub(s.inflight.len());
            if free == 0 {
                continue;
            }
            let node_id = s.node_id;
            if self.outbox.ob.due_iter(&node_id, now).next().is_none() {
                continue;
            }
            // What this session's link may carry: no blocks where the operator keeps them
            // off, only small transactions on a narrow link.
            let caps = self.peer_caps(peer).cloned();
            let blocks_ok = caps.as_ref().is_none_or(|c| c.blocks);
            let fits = |it: &Item| {
                !self.carried_by_block(it, blocks_ok)
                    && match (&it.item, &caps) {
                        (OutItem::Block(_), Some(c)) => c.blocks,
                        (OutItem::Tx(_), Some(c)) if super::is_narrow(c) => it
                            .payload
                            .as_ref()
                            .is_some_and(|p| p.len() + 16 <= super::NARROW_TX_MAX),
                        _ => true,
                    }
            };
            let busy: BTreeSet<u64> = self
                .outbox
                .sessions
                .values()
                .flat_map(|s| s.inflight.keys().copied())
                .collect();
            // A payment goes after its sender's payment before it, when that one is owed
            // to this peer too and not on its way: ahead of its nonce the peer only holds
            // it for a while and never acks it, and a window full of such pushes (a reorg
            // queues the returned payments after their successors) let nothing through.
            let waits = |it: &Item| match it.item {
                OutItem::Tx(h) => self.chain.mempool_before(&h).is_some_and(|prev| {
                    [Dest::Peer(node_id), Dest::Any].iter().any(|d| {
                        self.outbox
                            .ob
                            .find(*d, OutItem::Tx(prev))
                            .is_some_and(|p| p.state == State::Pending && !busy.contains(&p.id))
                    })
                }),
                OutItem::Block(_) => false,
            };
            let due: Vec<u64> = self
                .outbox
                .ob
                .due_iter(&node_id, now)
                .filter(|it| !busy.contains(&it.id))
                .filter(|it| fits(it) && (overdue || it.attempts == 0))
                .filter(|it| !waits(it))
                .map(|it| it.id)
                .take(free)
                .collect();
            if due.is_empty() {
                continue;
            }
            // Acks ride with the pushes: one turnaround instead of two on half duplex.
            self.flush_acks(peer);
            // The peer answers after our whole burst: every push of this batch waits for
            // all of it to be on air.
            let batch_air: u64 = match &caps {
                Some(c) if c.bitrate_bps > 0 => due
                    .iter()
                    .filter_map(|id| self.outbox.ob.get(*id))
                    .map(|it| {
                        let len = it.payload.as_ref().map_or(TYPICAL_ITEM_BYTES, |p| p.len());
                        super::packet::airtime_ms(c, len)
                    })
                    .sum(),
                _ => 0,
            };
            for id in due {
                self.push_item(now, peer, id, batch_air);
            }
        }
        self.recompute_wake(now);
    }

    fn push_item(&mut self, now: u64, peer: PeerId, id: u64, batch_air: u64) {
        let Some(it) = self.outbox.ob.get(id) else {
            return;
        };
        if self.heard_where_peer_is(peer, &it.item.hash()) {
            // It reached us over a broadcast channel that this peer shares: it heard the
            // same frames, and repeating them would only spend air time.
            self.outbox_peer_has(now, peer, it.item.hash());
            return;
        }
        let msg = match it.item {
            OutItem::Tx(_) => it
                .payload
                .as_deref()
                .and_then(|b| postcard::from_bytes::<Transaction>(b).ok())
                .map(Message::Tx),
            // Blocks are offered by header: a peer that lacks the body asks for it (and
            // gets it through the sync's GetData), one that has it acks at once. Pushing
            // whole blocks would send them twice on links where the sync fetches them too.
            // A block that has left our main chain (a reorg) is offered as our tip: the
            // peer would never fetch a lighter fork's block, so never ack it.
            OutItem::Block(h) => {
                let h = if self.chain.is_on_main_chain(&h) {
                    h
                } else {
                    self.chain.tip().hash
                };
                self.chain.header(&h).map(|hd| Message::Headers(vec![hd]))
            }
        };
        let Some((policy, measured, backoff)) = self.outbox.sessions.get(&peer).map(|s| {
            let t = &s.turnaround;
            // The session's doublings are added to the item's below, once.
            (s.policy, t.srtt().map(|_| t.rto() >> t.backoff), t.backoff)
        }) else {
            return;
        };
        let mut delay = policy.delay_ms(it.attempts + 1, &mut self.rng);
        let air = self.link_air_ahead(peer, now) + batch_air;
        if let (Some(c), Some(p)) = (self.peer_caps(peer), self.peers.get(&peer)) {
            if c.bitrate_bps > 0 {
                // On a link with a bit rate the ack comes in the peer's next turn: wait
                // for our queue, this item and the turnaround (doubling per attempt), not
                // a fixed schedule sized for the worst case. The turnaround is the one
                // measured from this session's acks once there is one (it holds the
                // peer's traffic ahead of its ack, which the policy cannot know), else
                // the peer's request turnaround, capped by the policy.
                let base = measured.unwrap_or_else(|| p.rtt.rto());
                let rto = (base << (backoff + it.attempts).min(MAX_DOUBLINGS)).min(MAX_RTO_MS);
                let timeout = air + rto + self.rng.below(rto / 2 + 1);
                delay = if measured.is_some() || backoff > 0 {
                    timeout
                } else {
                    delay.min(timeout)
                };
            }
        }
        let next = now + delay;
        let on_broadcast = self.peer_caps(peer).is_some_and(|c| c.broadcast);
        if on_broadcast && matches!(it.item, OutItem::Block(_)) {
            // On a shared channel one broadcast header offers the block to every station
            // at once; the stations that lack it ask for it (which proves delivery).
            let hash = it.item.hash();
            if !self
                .peers
                .get(&peer)
                .is_some_and(|p| p.known.contains(&hash))
            {
                self.announce(
                    None,
                    crate::wire::message::InvItem {
                        kind: crate::wire::message::InvKind::Block,
                        hash,
                    },
                );
            }
            self.outbox.stats.pushes += 1;
        } else if let Some(msg) = msg {
            if let Some(p) = self.peers.get_mut(&peer) {
                // Pushed: an `Inv` for it would only make the peer ask again.
                p.learn(it.item.hash());
            }
            self.outbox.stats.pushes += 1;
            if it.attempts > 0 {
                self.outbox.stats.retries += 1;
            }
            self.send_as(peer, it.msg_id(), &msg);
        } else {
            warn!(
                id,
                "outbox item has nothing to send (block or payload missing)"
            );
        }
        if let Err(e) = self.outbox.ob.attempted(self.chain.store_mut(), id, next) {
            warn!(id, "cannot record an attempt: {e}");
        }
        if let Some(s) = self.outbox.sessions.get_mut(&peer) {
            s.inflight.insert(id, next);
            s.late.remove(&id);
            if it.attempts == 0 {
                s.sent.insert(id, now + air);
            } else {
                s.sent.remove(&id);
            }
        }
    }

    /// Like `send`, with the item's stable `msg_id`.
    pub(super) fn send_as(&mut self, peer: PeerId, msg_id: u64, msg: &Message) {
        if self.transmits.len() >= super::MAX_QUEUED_TRANSMITS {
            self.disconnect(peer, "output queue overflow".into());
            return;
        }
        let bytes = envelope::encode(self.network, msg_id, msg);
        self.route(peer, bytes, msg);
    }

    /// The message id under which a block we push to `peer` unasked also delivers the
    /// outbox item for it (the peer acks it like any push), if there is one.
    pub(super) fn outbox_msg_id_for_block(&mut self, peer: PeerId, hash: Hash) -> Option<u64> {
        // From its greeting: the outbox session may not be open yet, nor its claim to
        // that id proven (a push in the turn that answers its greeting, see
        // `push_to_behind`). Its ack counts only once the session opens, which takes
        // the proof: `early_pushed` is dropped with a session that never does.
        let p = self.peers.get(&peer)?;
        let node_id = p.hello.as_ref().or(p.pending_hello.as_ref())?.node_id;
        let (id, msg_id) = [Dest::Peer(node_id), Dest::Any].iter().find_map(|d| {
            self.outbox
                .ob
                .find(*d, OutItem::Block(hash))
                .filter(|it| it.state == State::Pending)
                .map(|it| (it.id, it.msg_id()))
        })?;
        // Sent on this session: its ack counts.
        match self.outbox.sessions.get_mut(&peer) {
            Some(s) => {
                s.pushed.insert(id);
            }
            None => {
                let early = self.outbox.early_pushed.entry(peer).or_default();
                if early.len() < MAX_EARLY_PUSHED {
                    early.insert(id);
                }
            }
        }
        Some(msg_id)
    }

    /// Does the outbox hold a pending push of this transaction for `peer`? Then an
    /// announcement would only make the peer ask for what is on its way.
    pub(super) fn outbox_will_push(
        &self,
        peer: PeerId,
        item: &crate::wire::message::InvItem,
    ) -> bool {
        if item.kind != crate::wire::message::InvKind::Tx {
            return false;
        }
        let Some(s) = self.outbox.sessions.get(&peer) else {
            return false;
        };
        [Dest::Peer(s.node_id), Dest::Any].iter().any(|d| {
            self.outbox
                .ob
                .find(*d, OutItem::Tx(item.hash))
                .is_some_and(|it| it.state == State::Pending)
        })
    }

    /// A transaction already in a block of our main chain reaches a peer whose link
    /// carries blocks with that block (the sync delivers it, and the peer's tip then
    /// proves it): pushing it alone would send its bytes twice.
    fn carried_by_block(&self, it: &Item, blocks_ok: bool) -> bool {
        blocks_ok
            && matches!(it.item, OutItem::Tx(t) if matches!(
                self.chain.store().tx_block(&t),
                Ok(Some(b)) if self.chain.is_on_main_chain(&b)
            ))
    }

    fn recompute_wake(&mut self, now: u64) {
        let mut wake = u64::MAX;
        let mut open = Vec::new();
        for (peer, s) in &self.outbox.sessions {
            if let Some(t) = s.ack_due {
                wake = wake.min(t);
            }
            if let Some(t) = s.inflight.values().min() {
                wake = wake.min(*t);
            }
            if s.inflight.len() < s.policy.window {
                open.push((*peer, s.node_id));
            }
        }
        for (peer, node_id) in open {
            let blocks_ok = self.peer_caps(peer).is_none_or(|c| c.blocks);
            let ids = self.outbox.ids_for(node_id);
            let Some(s) = self.outbox.sessions.get(&peer) else {
                continue;
            };
            for it in ids.iter().filter_map(|id| self.outbox.ob.get(*id)) {
                // The store lookup in `carried_by_block` last: only for an earlier wake.
                if it.state == State::Pending
                    && it.next_attempt_ms < wake
                    && !s.inflight.contains_key(&it.id)
                    && !self.carried_by_block(&it, blocks_ok)
                {
                    wake = it.next_attempt_ms;
                }
            }
        }
        self.outbox.wake = wake.max(now + MIN_WAKE_MS);
    }
}
