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
use std::collections::HashMap;
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

/// One outbox entry, as [`Outbox`] hands it out (a copy: it keeps items in a compact
/// form of its own).
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
///
/// A gateway holds thousands of items for peers out of reach (a simulation, a million
/// across its nodes), so each is kept small: its destination and what it carries (with
/// the transaction's payload) are indexes into tables holding each of them once, and
/// the items themselves lie in one vector sorted by id.
#[derive(Default)]
pub struct Outbox {
    /// Items by id. Ids only grow, so new items are appended; a removed one leaves a hole
    /// (`dest == GONE`) until holes are half the vector. A B-tree fed increasing keys
    /// leaves its nodes about half empty.
    slots: Vec<Slot>,
    /// Holes in `slots`.
    holes: usize,
    /// Destinations with items, by index (`Slot::dest`); freed entries are reused.
    dests: Vec<DestItems>,
    dest_ix: HashMap<Dest, u32>,
    free_dests: Vec<u32>,
    /// Transactions and blocks that items carry, by index (`Slot::what`); freed entries
    /// are reused.
    carried: Vec<Carried>,
    carried_ix: HashMap<OutItem, u32>,
    free_carried: Vec<u32>,
    /// Items in state `Pending`.
    pending: usize,
    /// Items refused for lack of room since start (logged each time).
    pub refused: u64,
}

/// An item as held in memory (see [`Item`] for the fields).
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u64,
    created_ms: u64,
    next_attempt_ms: u64,
    expires_ms: u64,
    attempts: u32,
    /// Index in `Outbox::dests`, or `GONE`.
    dest: u32,
    /// Index in `Outbox::carried`.
    what: u32,
    priority: u8,
    state: State,
}

/// `Slot::dest` of a removed item.
const GONE: u32 = u32::MAX;

/// One destination's items.
#[derive(Debug)]
struct DestItems {
    dest: Dest,
    /// (priority, id), the order they are sent in: a node with many peers finds one
    /// peer's items without walking the others' (a gateway holds thousands for a peer out
    /// of reach), and the next due ones without sorting.
    queue: Vec<(u8, u64)>,
}

/// One transaction or block that items carry.
#[derive(Debug)]
struct Carried {
    item: OutItem,
    /// The transaction's bytes, once for all its items.
    payload: Option<Payload>,
    /// Ids of the items carrying it (one per destination), in order: an item is found by
    /// what it carries and then its destination.
    ids: Vec<u64>,
}

/// Put `entry` in a freed place of `table`, or at its end; its index.
fn place<T>(table: &mut Vec<T>, free: &mut Vec<u32>, entry: T) -> u32 {
    match free.pop() {
        Some(i) => {
            table[i as usize] = entry;
            i
        }
        None => {
            table.push(entry);
            (table.len() - 1) as u32
        }
    }
}

impl Outbox {
    /// Load the items saved in `store`.
    pub fn load(store: &Store) -> Result<Outbox, StoreError> {
        let mut ob = Outbox::default();
        for it in store.outbox_load()? {
            ob.index(it);
        }
        Ok(ob)
    }

    /// Position in `slots` of live item `id`.
    fn pos(&self, id: u64) -> Option<usize> {
        let i = self.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        (self.slots[i].dest != GONE).then_some(i)
    }

    /// The item held in `s`, as the API shows it.
    fn expand(&self, s: &Slot) -> Item {
        let c = &self.carried[s.what as usize];
        Item {
            id: s.id,
            dest: self.dests[s.dest as usize].dest,
            item: c.item,
            payload: c.payload.clone(),
            priority: s.priority,
            created_ms: s.created_ms,
            attempts: s.attempts,
            next_attempt_ms: s.next_attempt_ms,
            expires_ms: s.expires_ms,
            state: s.state,
        }
    }

    /// Index of `dest` in `dests`, added if new.
    fn dest_index(&mut self, dest: Dest) -> u32 {
        if let Some(&d) = self.dest_ix.get(&dest) {
            return d;
        }
        let entry = DestItems {
            dest,
            queue: Vec::new(),
        };
        let d = place(&mut self.dests, &mut self.free_dests, entry);
        self.dest_ix.insert(dest, d);
        d
    }

    /// Index of `item` in `carried`, added if new; `payload` is kept if it had none.
    fn carried_index(&mut self, item: OutItem, payload: Option<Payload>) -> u32 {
        if let Some(&w) = self.carried_ix.get(&item) {
            let c = &mut self.carried[w as usize];
            if c.payload.is_none() {
                c.payload = payload;
            }
            return w;
        }
        let entry = Carried {
            item,
            payload,
            ids: Vec::new(),
        };
        let w = place(&mut self.carried, &mut self.free_carried, entry);
        self.carried_ix.insert(item, w);
        w
    }

    /// Add `id` to the items carrying `carried[w]`.
    fn carry(&mut self, w: u32, id: u64) {
        let ids = &mut self.carried[w as usize].ids;
        if let Err(at) = ids.binary_search(&id) {
            ids.insert(at, id);
        }
    }

    /// Remove `id` from the items carrying `carried[w]`, and the entry once none does.
    fn uncarry(&mut self, w: u32, id: u64) {
        let c = &mut self.carried[w as usize];
        if let Ok(at) = c.ids.binary_search(&id) {
            c.ids.remove(at);
        }
        if c.ids.is_empty() {
            c.ids = Vec::new();
            c.payload = None;
            self.carried_ix.remove(&c.item);
            self.free_carried.push(w);
        }
    }

    fn index(&mut self, it: Item) {
        if self.pos(it.id).is_some() {
            self.unindex(it.id);
        }
        let what = self.carried_index(it.item, it.payload);
        self.carry(what, it.id);
        let dest = self.dest_index(it.dest);
        let queue = &mut self.dests[dest as usize].queue;
        if let Err(at) = queue.binary_search(&(it.priority, it.id)) {
            queue.insert(at, (it.priority, it.id));
        }
        if it.state == State::Pending {
            self.pending += 1;
        }
        let slot = Slot {
            id: it.id,
            created_ms: it.created_ms,
            next_attempt_ms: it.next_attempt_ms,
            expires_ms: it.expires_ms,
            attempts: it.attempts,
            dest,
            what,
            priority: it.priority,
            state: it.state,
        };
        match self.slots.last() {
            Some(last) if last.id >= it.id => {
                match self.slots.binary_search_by_key(&it.id, |s| s.id) {
                    // A hole: `pos` found no live item.
                    Ok(i) => {
                        self.slots[i] = slot;
                        self.holes -= 1;
                    }
                    Err(i) => self.slots.insert(i, slot),
                }
            }
            _ => self.slots.push(slot),
        }
    }

    fn unindex(&mut self, id: u64) -> Option<Item> {
        let i = self.pos(id)?;
        let s = self.slots[i];
        let it = self.expand(&s);
        self.slots[i].dest = GONE;
        self.holes += 1;
        self.uncarry(s.what, id);
        let d = &mut self.dests[s.dest as usize];
        if let Ok(at) = d.queue.binary_search(&(s.priority, id)) {
            d.queue.remove(at);
        }
        if d.queue.is_empty() {
            d.queue = Vec::new();
            self.dest_ix.remove(&d.dest);
            self.free_dests.push(s.dest);
        }
        if s.state == State::Pending {
            self.pending -= 1;
        }
        if self.holes > 64 && self.holes * 2 > self.slots.len() {
            self.slots.retain(|s| s.dest != GONE);
            self.holes = 0;
            // A gateway's outbox shrinks by thousands after a link comes back.
            if self.slots.capacity() > 2 * self.slots.len() {
                self.slots
                    .shrink_to(self.slots.len() + self.slots.len() / 2);
            }
        }
        Some(it)
    }

    /// Set an item's state, keeping the count of pending items.
    fn set_state(pending: &mut usize, s: &mut Slot, state: State) {
        if s.state == State::Pending {
            *pending -= 1;
        }
        if state == State::Pending {
            *pending += 1;
        }
        s.state = state;
    }

    /// Items waiting to be sent (state `Pending`).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The queue of `dest`'s items, in send order.
    fn queue(&self, dest: Dest) -> &[(u8, u64)] {
        self.dest_ix
            .get(&dest)
            .map_or(&[], |&d| &self.dests[d as usize].queue[..])
    }

    /// Ids of the items for `dest`, in send order (priority, then id).
    pub fn ids_for_dest(&self, dest: Dest) -> impl Iterator<Item = u64> + '_ {
        self.queue(dest).iter().map(|&(_, id)| id)
    }

    /// Pending items due at `now` for `node_id` (its own or `Any`), in send order,
    /// lazily: a caller that takes a window's worth stops there.
    pub fn due_iter(&self, node_id: &[u8; 32], now: u64) -> impl Iterator<Item = Item> + '_ {
        let mut own = self.queue(Dest::Peer(*node_id)).iter().copied().peekable();
        let mut any = self.queue(Dest::Any).iter().copied().peekable();
        // Both queues are in send order: merge them.
        std::iter::from_fn(move || match (own.peek(), any.peek()) {
            (Some(a), Some(b)) if b < a => any.next(),
            (Some(_), _) => own.next(),
            (None, _) => any.next(),
        })
        .filter_map(|(_, id)| self.pos(id).map(|i| &self.slots[i]))
        .filter(move |s| s.state == State::Pending && s.next_attempt_ms <= now)
        .map(|s| self.expand(s))
    }

    /// The transactions with items in the table, each with the ids of its items, by id
    /// (the transactions in no set order).
    pub fn tx_items(&self) -> impl Iterator<Item = (&Hash, &[u64])> {
        self.carried_ix.iter().filter_map(|(k, &w)| match k {
            OutItem::Tx(h) => Some((h, self.carried[w as usize].ids.as_slice())),
            OutItem::Block(_) => None,
        })
    }

    /// Ids of the items carrying transaction `hash`, by id.
    pub fn tx_items_of(&self, hash: &Hash) -> impl Iterator<Item = u64> + '_ {
        self.carried_ix
            .get(&OutItem::Tx(*hash))
            .into_iter()
            .flat_map(|&w| self.carried[w as usize].ids.iter().copied())
    }

    /// Items in the table.
    pub fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    /// No items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All items, by id.
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        self.slots
            .iter()
            .filter(|s| s.dest != GONE)
            .map(|s| self.expand(s))
    }

    /// One item.
    pub fn get(&self, id: u64) -> Option<Item> {
        self.pos(id).map(|i| self.expand(&self.slots[i]))
    }

    /// Position in `slots` of the item for `(dest, item)`, if queued.
    fn find_pos(&self, dest: Dest, item: OutItem) -> Option<usize> {
        let w = *self.carried_ix.get(&item)?;
        let d = *self.dest_ix.get(&dest)?;
        self.carried[w as usize]
            .ids
            .iter()
            .filter_map(|id| self.pos(*id))
            .find(|&i| self.slots[i].dest == d)
    }

    /// The item for `(dest, item)`, if queued.
    pub fn find(&self, dest: Dest, item: OutItem) -> Option<Item> {
        self.find_pos(dest, item)
            .map(|i| self.expand(&self.slots[i]))
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
        if let Some(i) = self.find_pos(dest, item) {
            return Ok(Enqueued::Exists(self.slots[i].id));
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
        let reason = if self.len() >= room {
            Some(format!("outbox full ({} items)", self.len()))
        } else if self.queue(dest).len() >= MAX_PER_DEST {
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
        // The payload the outbox already holds for this transaction, if any: one copy.
        let payload = self
            .carried_ix
            .get(&item)
            .and_then(|&w| self.carried[w as usize].payload.clone())
            .or(payload);
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
            .queue(dest)
            .iter()
            .filter_map(|&(_, id)| self.pos(id))
            .map(|i| self.slots[i])
            .find(|s| {
                s.state == State::Pending
                    && s.attempts == 0
                    && matches!(self.carried[s.what as usize].item, OutItem::Block(h) if replaceable(&h))
            });
        let Some(old) = old else {
            return Ok(None);
        };
        if self.find_pos(dest, OutItem::Block(new)).is_some() {
            return Ok(None);
        }
        store.outbox_retarget(old.id, &new.0)?;
        // The new entry first: freeing the old one may hand its index to the next.
        let what = self.carried_index(OutItem::Block(new), None);
        self.carry(what, old.id);
        self.uncarry(old.what, old.id);
        if let Some(i) = self.pos(old.id) {
            self.slots[i].what = what;
        }
        Ok(Some(old.id))
    }

    /// The item was acknowledged or proven held: remove it, count it delivered.
    pub fn delivered(&mut self, store: &mut Store, id: u64) -> Result<Option<Item>, StoreError> {
        if self.pos(id).is_none() {
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
        if let Some(i) = self.pos(id) {
            let s = &mut self.slots[i];
            s.attempts = s.attempts.saturating_add(1);
            s.next_attempt_ms = next_ms;
            store.outbox_update(&self.expand(&self.slots[i]))?;
        }
        Ok(())
    }

    /// Make pending items for `dest` due at `now` (in memory: a lost write only delays).
    pub fn due_now(&mut self, dest: Dest, now: u64) {
        let Some(&d) = self.dest_ix.get(&dest) else {
            return;
        };
        for &(_, id) in &self.dests[d as usize].queue {
            if let Ok(i) = self.slots.binary_search_by_key(&id, |s| s.id) {
                let s = &mut self.slots[i];
                if s.dest != GONE && s.state == State::Pending {
                    s.next_attempt_ms = s.next_attempt_ms.min(now);
                }
            }
        }
    }

    /// Mark items past their expiry as expired; returns them for the log.
    pub fn expire(&mut self, store: &mut Store, now: u64) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.dest != GONE
                && matches!(s.state, State::Pending | State::Held)
                && s.expires_ms <= now
            {
                Self::set_state(&mut self.pending, s, State::Expired);
                ids.push(s.id);
                store.outbox_update(&self.expand(&self.slots[i]))?;
            }
        }
        Ok(ids)
    }

    /// Expire one pending item now: its payload can no longer be delivered usefully. It
    /// stays listed until an operator drops or retries it. True if it was pending.
    pub fn expire_now(&mut self, store: &mut Store, id: u64) -> Result<bool, StoreError> {
        let Some(i) = self.pos(id) else {
            return Ok(false);
        };
        if self.slots[i].state != State::Pending {
            return Ok(false);
        }
        Self::set_state(&mut self.pending, &mut self.slots[i], State::Expired);
        store.outbox_update(&self.expand(&self.slots[i]))?;
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
        let Some(i) = self.pos(id) else {
            return Ok(Err(format!("no outbox item {id}")));
        };
        let s = &mut self.slots[i];
        match cmd {
            Command::Drop => {
                store.outbox_remove(id, false)?;
                self.unindex(id);
                return Ok(Ok(()));
            }
            Command::Hold => {
                if s.state == State::Expired {
                    return Ok(Err(format!("item {id} is expired: retry or drop it")));
                }
                Self::set_state(&mut self.pending, s, State::Held);
            }
            Command::Release => {
                if s.state != State::Held {
                    return Ok(Err(format!("item {id} is not held")));
                }
                Self::set_state(&mut self.pending, s, State::Pending);
                s.next_attempt_ms = now;
            }
            Command::Retry => {
                if s.state == State::Expired {
                    s.expires_ms = now.saturating_add(EXPIRY_MS);
                }
                Self::set_state(&mut self.pending, s, State::Pending);
                s.next_attempt_ms = now;
            }
        }
        store.outbox_update(&self.expand(&self.slots[i]))?;
        Ok(Ok(()))
    }

    /// Pending items due at `now` for `node_id` (its own or `Any`), in send order.
    pub fn due_for(&self, node_id: &[u8; 32], now: u64) -> Vec<u64> {
        self.due_iter(node_id, now).map(|it| it.id).collect()
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
