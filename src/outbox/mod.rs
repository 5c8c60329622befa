//! The durable outbox: what this node owes each peer, until that peer acknowledges it end
//! to end or proves it has it. Pure logic over an in-memory mirror; every change is
//! written through to the [`Store`] before the method returns (docs/OUTBOX.md,
//! docs/adr/0004-outbox.md).

use crate::chain::Hash;
use crate::net::LinkCaps;
use crate::rng::Rng;
use crate::store::{Store, StoreError};
use crate::wire::message::ACK_REQUESTED_MIN_ID;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Items held in total (pending, held and expired).
pub const MAX_ITEMS: usize = 10_000;
/// Items held per destination.
pub const MAX_PER_DEST: usize = 2_000;
/// Share of [`MAX_ITEMS`] kept for blocks: transactions are refused beyond the rest.
pub const BLOCK_RESERVE: usize = MAX_ITEMS / 10;
/// How long an item is tried before it is reported expired.
pub const EXPIRY_MS: u64 = 7 * 24 * 3600 * 1000;
/// Priority of block items (lower goes first): a block carries many transactions and
/// moves every peer's tip.
pub const PRIO_BLOCK: u8 = 0;
/// Priority of transaction items.
pub const PRIO_TX: u8 = 1;

/// A transaction's encoded bytes, shared by the items that carry it to several peers.
pub type Payload = Arc<[u8]>;

/// Where an item must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    /// One peer, by its stable node id.
    Peer([u8; 32]),
    /// The first peer that takes it (no peer was known when it was queued).
    Any,
}

/// What an item carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutItem {
    /// A transaction, by id.
    Tx(Hash),
    /// A block, by hash.
    Block(Hash),
}

impl OutItem {
    /// The id of the transaction or block.
    pub fn hash(&self) -> Hash {
        match self {
            OutItem::Tx(h) | OutItem::Block(h) => *h,
        }
    }
}

/// Lifecycle of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its next attempt.
    Pending,
    /// Held by the operator: not sent until released.
    Held,
    /// Acknowledged (or proven held) by its destination; removed from the table.
    Delivered,
    /// Not delivered in time; listed until an operator drops or retries it.
    Expired,
}

/// One outbox entry.
#[derive(Clone, Debug)]
pub struct Item {
    /// Stable id; the envelope `msg_id` of every attempt is derived from it.
    pub id: u64,
    /// Destination.
    pub dest: Dest,
    /// Payload reference.
    pub item: OutItem,
    /// The transaction itself (postcard), so it can be sent even after it left the
    /// mempool; blocks are read from the chain. One copy is shared by the items that
    /// carry the same transaction to different peers.
    pub payload: Option<Payload>,
    /// Lower goes first.
    pub priority: u8,
    /// When it was queued (ms).
    pub created_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not sent before this time (ms).
    pub next_attempt_ms: u64,
    /// Reported expired after this time (ms).
    pub expires_ms: u64,
    /// Lifecycle state.
    pub state: State,
}

impl Item {
    /// The envelope `msg_id` of this item's attempts (in the ack-requested range).
    pub fn msg_id(&self) -> u64 {
        ACK_REQUESTED_MIN_ID + self.id
    }
}

/// The outbox item id named by an acknowledged `msg_id`, if it is one of ours.
pub fn item_id(msg_id: u64) -> Option<u64> {
    msg_id.checked_sub(ACK_REQUESTED_MIN_ID)
}

/// Lifetime counters (persistent). Every item ever queued is delivered, dropped by an
/// operator, or still in the table: `enqueued == delivered + dropped + len()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Items queued.
    pub enqueued: u64,
    /// Items acknowledged or proven held.
    pub delivered: u64,
    /// Items dropped by an operator.
    pub dropped: u64,
}

/// What `enqueue` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued (durable) with this id.
    Added(u64),
    /// Already queued for that destination.
    Exists(u64),
    /// Refused: the outbox is full for that priority or destination.
    Refused(String),
}

/// Retry schedule per link, from its capabilities (never its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// First retry delay (ms).
    pub base_ms: u64,
    /// Longest delay (ms).
    pub cap_ms: u64,
    /// Items in flight (sent, not yet acked) per peer.
    pub window: usize,
    /// How long received pushes wait for more before their acks go out (ms).
    pub ack_delay_ms: u64,
}

/// Below this bit rate a link is "slow": acks are aggregated, the window is small and
/// the retry base grows with the time a message takes on air.
pub const SLOW_LINK_BPS: u64 = 100_000;

/// A link with no bit rate (TCP) or one at least [`SLOW_LINK_BPS`].
pub fn is_fast(caps: &LinkCaps) -> bool {
    caps.bitrate_bps == 0 || caps.bitrate_bps >= SLOW_LINK_BPS
}

impl RetryPolicy {
    /// Policy for a link with `caps`, sending items of about `item_bytes`.
    pub fn for_link(caps: &LinkCaps, item_bytes: usize) -> RetryPolicy {
        let bps = caps.bitrate_bps;
        if is_fast(caps) {
            return RetryPolicy {
                base_ms: 2_000,
                cap_ms: 5 * 60_000,
                window: 32,
                ack_delay_ms: 200,
            };
        }
        // Acks come once per turn of the peer (half duplex): a window holds what one of
        // our turns pushes.
        let window = 8;
        // A whole window on air one way, its acks the other way (half duplex), and the
        // receiver's aggregation delay: retrying sooner only repeats what is still in
        // transit.
        let air_ms = (item_bytes as u64 * window as u64 * 8 * 1000).div_ceil(bps);
        let ack_delay_ms = 2_000;
        RetryPolicy {
            base_ms: (3 * air_ms + 2 * ack_delay_ms).max(10_000),
            cap_ms: 3_600_000,
            window,
            ack_delay_ms,
        }
    }

    /// Delay before the next attempt after `attempts` attempts: exponential from the
    /// base, capped, plus up to 50 % jitter so peers that lost a link together do not
    /// retry in step.
    pub fn delay_ms(&self, attempts: u32, rng: &mut Rng) -> u64 {
        let exp = attempts.saturating_sub(1).min(30);
        let d = self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms);
        (d + rng.below(d / 2 + 1)).min(self.cap_ms)
    }

    /// Most attempts one item can take in `span_ms` with this policy (after the first,
    /// each retry waits at least the un-jittered delay): the bound the simulator checks.
    pub fn max_attempts_in(&self, span_ms: u64) -> u32 {
        let mut t = 0u64;
        let mut n = 1u32;
        while n < 64 {
            let exp = (n - 1).min(30);
            t = t.saturating_add(self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms));
            if t > span_ms {
                break;
            }
            n += 1;
        }
        n
    }
}

/// The outbox: items in memory, written through to the store.
#[derive(Default)]
pub struct Outbox {
    items: BTreeMap<u64, Item>,
    /// Each destination's items as (priority, id), the order they are sent in: a node
    /// with many peers finds one peer's items without walking the others' (a gateway
    /// holds thousands for a peer out of reach), and the next due ones without sorting.
    by_dest: HashMap<Dest, BTreeSet<(u8, u64)>>,
    /// Ids of the items carrying each transaction or block (one per destination), in
    /// order: an item is found by what it carries and then its destination, without an
    /// index entry per item (a gateway holds thousands; simulations, millions).
    by_item: HashMap<OutItem, Vec<u64>>,
    /// Items in state `Pending`.
    pending: usize,
    /// Items refused for lack of room since start (logged each time).
    pub refused: u64,
}

impl Outbox {
    /// Load the items saved in `store`.
    pub fn load(store: &Store) -> Result<Outbox, StoreError> {
        let mut ob = Outbox::default();
        // The rows of one transaction (one per peer) share its payload again.
        let mut shared: HashMap<OutItem, Payload> = HashMap::new();
        for mut it in store.outbox_load()? {
            if let Some(p) = it.payload.take() {
                let one = shared.entry(it.item).or_insert(p);
                it.payload = Some(Arc::clone(one));
            }
            ob.index(it);
        }
        Ok(ob)
    }

    fn index(&mut self, it: Item) {
        let ids = self.by_item.entry(it.item).or_default();
        if let Err(at) = ids.binary_search(&it.id) {
            ids.insert(at, it.id);
        }
        self.by_dest
            .entry(it.dest)
            .or_default()
            .insert((it.priority, it.id));
        if it.state == State::Pending {
            self.pending += 1;
        }
        self.items.insert(it.id, it);
    }

    fn unindex(&mut self, id: u64) -> Option<Item> {
        let it = self.items.remove(&id)?;
        self.drop_from_item(it.item, id);
        remove_key(&mut self.by_dest, &it.dest, &(it.priority, id));
        if it.state == State::Pending {
            self.pending -= 1;
        }
        Some(it)
    }

    /// Remove `id` from the ids of the items carrying `item`.
    fn drop_from_item(&mut self, item: OutItem, id: u64) {
        if let Some(ids) = self.by_item.get_mut(&item) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.by_item.remove(&item);
            }
        }
    }

    /// Set an item's state, keeping the count of pending items.
    fn set_state(pending: &mut usize, it: &mut Item, state: State) {
        if it.state == State::Pending {
            *pending -= 1;
        }
        if state == State::Pending {
            *pending += 1;
        }
        it.state = state;
    }

    /// Items waiting to be sent (state `Pending`).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Ids of the items for `dest`, in send order (priority, then id).
    pub fn ids_for_dest(&self, dest: Dest) -> impl Iterator<Item = u64> + '_ {
        self.by_dest
            .get(&dest)
            .into_iter()
            .flatten()
            .map(|&(_, id)| id)
    }

    /// Pending items due at `now` for `node_id` (its own or `Any`), in send order,
    /// lazily: a caller that takes a window's worth stops there.
    pub fn due_iter(&self, node_id: &[u8; 32], now: u64) -> impl Iterator<Item = &Item> + '_ {
        let set = |d: Dest| self.by_dest.get(&d).into_iter().flatten().copied();
        let mut own = set(Dest::Peer(*node_id)).peekable();
        let mut any = set(Dest::Any).peekable();
        // Both sets are in send order: merge them.
        std::iter::from_fn(move || match (own.peek(), any.peek()) {
            (Some(a), Some(b)) if b < a => any.next(),
            (Some(_), _) => own.next(),
            (None, _) => any.next(),
        })
        .filter_map(|(_, id)| self.items.get(&id))
        .filter(move |it| it.state == State::Pending && it.next_attempt_ms <= now)
    }

    /// The transactions with items in the table, each with the ids of its items, by id
    /// (the transactions in no set order).
    pub fn tx_items(&self) -> impl Iterator<Item = (&Hash, &[u64])> {
        self.by_item.iter().filter_map(|(k, ids)| match k {
            OutItem::Tx(h) => Some((h, ids.as_slice())),
            OutItem::Block(_) => None,
        })
    }

    /// Ids of the items carrying transaction `hash`, by id.
    pub fn tx_items_of(&self, hash: &Hash) -> impl Iterator<Item = u64> + '_ {
        self.by_item
            .get(&OutItem::Tx(*hash))
            .into_iter()
            .flatten()
            .copied()
    }

    /// Items in the table.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All items, by id.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// One item.
    pub fn get(&self, id: u64) -> Option<&Item> {
        self.items.get(&id)
    }

    /// The item for `(dest, item)`, if queued.
    pub fn find(&self, dest: Dest, item: OutItem) -> Option<&Item> {
        self.by_item
            .get(&item)?
            .iter()
            .filter_map(|id| self.items.get(id))
            .find(|it| it.dest == dest)
    }

    /// Queue `item` for `dest`; durable when `Added` is returned.
    pub fn enqueue(
        &mut self,
        store: &mut Store,
        now: u64,
        dest: Dest,
        item: OutItem,
        payload: Option<Payload>,
    ) -> Result<Enqueued, StoreError> {
        if let Some(it) = self.find(dest, item) {
            return Ok(Enqueued::Exists(it.id));
        }
        let priority = match item {
            OutItem::Block(_) => PRIO_BLOCK,
            OutItem::Tx(_) => PRIO_TX,
        };
        let room = if priority == PRIO_BLOCK {
            MAX_ITEMS
        } else {
            MAX_ITEMS - BLOCK_RESERVE
        };
        let reason = if self.items.len() >= room {
            Some(format!("outbox full ({} items)", self.items.len()))
        } else if self.by_dest.get(&dest).map_or(0, BTreeSet::len) >= MAX_PER_DEST {
            Some(format!(
                "outbox full for this destination ({MAX_PER_DEST} items)"
            ))
        } else {
            None
        };
        if let Some(r) = reason {
            self.refused += 1;
            return Ok(Enqueued::Refused(r));
        }
        let mut it = Item {
            id: 0,
            dest,
            item,
            payload,
            priority,
            created_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            expires_ms: now.saturating_add(EXPIRY_MS),
            state: State::Pending,
        };
        it.id = store.outbox_insert(&it)?;
        let id = it.id;
        self.index(it);
        Ok(Enqueued::Added(id))
    }

    /// Replace the block of `dest`'s unsent block item by `new` (a newer tip): a peer
    /// that gets the newer block syncs the older one through it, so one announcement per
    /// destination is enough. Returns the item id if one was retargeted.
    pub fn coalesce_block(
        &mut self,
        store: &mut Store,
        dest: Dest,
        new: Hash,
        replaceable: impl Fn(&Hash) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        let old = self
            .ids_for_dest(dest)
            .filter_map(|id| self.items.get(&id))
            .find(|it| {
                it.state == State::Pending
                    && it.attempts == 0
                    && matches!(it.item, OutItem::Block(h) if replaceable(&h))
            });
        let Some(old) = old.map(|it| (it.id, it.item)) else {
            return Ok(None);
        };
        if self.find(dest, OutItem::Block(new)).is_some() {
            return Ok(None);
        }
        store.outbox_retarget(old.0, &new.0)?;
        self.drop_from_item(old.1, old.0);
        let ids = self.by_item.entry(OutItem::Block(new)).or_default();
        if let Err(at) = ids.binary_search(&old.0) {
            ids.insert(at, old.0);
        }
        if let Some(it) = self.items.get_mut(&old.0) {
            it.item = OutItem::Block(new);
        }
        Ok(Some(old.0))
    }

    /// The item was acknowledged or proven held: remove it, count it delivered.
    pub fn delivered(&mut self, store: &mut Store, id: u64) -> Result<Option<Item>, StoreError> {
        if !self.items.contains_key(&id) {
            return Ok(None);
        }
        store.outbox_remove(id, true)?;
        Ok(self.unindex(id))
    }

    /// An attempt was sent: count it and schedule the next one.
    pub fn attempted(
        &mut self,
        store: &mut Store,
        id: u64,
        next_ms: u64,
    ) -> Result<(), StoreError> {
        if let Some(it) = self.items.get_mut(&id) {
            it.attempts = it.attempts.saturating_add(1);
            it.next_attempt_ms = next_ms;
            store.outbox_update(it)?;
        }
        Ok(())
    }

    /// Make pending items for `dest` due at `now` (in memory: a lost write only delays).
    pub fn due_now(&mut self, dest: Dest, now: u64) {
        for (_, id) in self.by_dest.get(&dest).into_iter().flatten() {
            if let Some(it) = self.items.get_mut(id) {
                if it.state == State::Pending {
                    it.next_attempt_ms = it.next_attempt_ms.min(now);
                }
            }
        }
    }

    /// Mark items past their expiry as expired; returns them for the log.
    pub fn expire(&mut self, store: &mut Store, now: u64) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<u64> = self
            .items
            .values()
            .filter(|it| matches!(it.state, State::Pending | State::Held) && it.expires_ms <= now)
            .map(|it| it.id)
            .collect();
        for id in &ids {
            if let Some(it) = self.items.get_mut(id) {
                Self::set_state(&mut self.pending, it, State::Expired);
                store.outbox_update(it)?;
            }
        }
        Ok(ids)
    }

    /// Expire one pending item now: its payload can no longer be delivered usefully. It
    /// stays listed until an operator drops or retries it. True if it was pending.
    pub fn expire_now(&mut self, store: &mut Store, id: u64) -> Result<bool, StoreError> {
        let Some(it) = self.items.get_mut(&id) else {
            return Ok(false);
        };
        if it.state != State::Pending {
            return Ok(false);
        }
        Self::set_state(&mut self.pending, it, State::Expired);
        store.outbox_update(it)?;
        Ok(true)
    }

    /// Operator command on one item.
    pub fn command(
        &mut self,
        store: &mut Store,
        now: u64,
        id: u64,
        cmd: Command,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(it) = self.items.get_mut(&id) else {
            return Ok(Err(format!("no outbox item {id}")));
        };
        match cmd {
            Command::Drop => {
                store.outbox_remove(id, false)?;
                self.unindex(id);
                return Ok(Ok(()));
            }
            Command::Hold => {
                if it.state == State::Expired {
                    return Ok(Err(format!("item {id} is expired: retry or drop it")));
                }
                Self::set_state(&mut self.pending, it, State::Held);
            }
            Command::Release => {
                if it.state != State::Held {
                    return Ok(Err(format!("item {id} is not held")));
                }
                Self::set_state(&mut self.pending, it, State::Pending);
                it.next_attempt_ms = now;
            }
            Command::Retry => {
                if it.state == State::Expired {
                    it.expires_ms = now.saturating_add(EXPIRY_MS);
                }
                Self::set_state(&mut self.pending, it, State::Pending);
                it.next_attempt_ms = now;
            }
        }
        store.outbox_update(it)?;
        Ok(Ok(()))
    }

    /// Pending items due at `now` for `node_id` (its own or `Any`), in send order.
    pub fn due_for(&self, node_id: &[u8; 32], now: u64) -> Vec<u64> {
        self.due_iter(node_id, now).map(|it| it.id).collect()
    }
}

/// Remove `v` from `key`'s set, and the set once empty.
fn remove_key<K: std::hash::Hash + Eq, V: Ord>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, v: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(v);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop sending it.
    Hold,
    /// Resume sending it.
    Release,
    /// Forget it (counted as dropped).
    Drop,
    /// Send it now (an expired item gets a new expiry).
    Retry,
}

impl Command {
    /// Parse `hold|release|drop|retry`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "hold" => Command::Hold,
            "release" => Command::Release,
            "drop" => Command::Drop,
            "retry" => Command::Retry,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
