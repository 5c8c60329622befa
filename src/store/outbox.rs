//! Store methods of the outbox and the seen-set (schema migration 2). Every method is one
//! SQLite transaction, so an item and the delivery counters never disagree after a crash.

use super::{hash_of, params, Result, Store, StoreError};
use crate::outbox::{Dest, Item, OutItem, State, Totals};
use rusqlite::OptionalExtension;

pub(super) const ENQUEUED: &str = "outbox.enqueued";
pub(super) const DELIVERED: &str = "outbox.delivered";
pub(super) const DROPPED: &str = "outbox.dropped";

fn bump(tx: &rusqlite::Connection, key: &str) -> Result<()> {
    let old: Option<Vec<u8>> = tx
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    let n = old
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    tx.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, &(n + 1).to_le_bytes()[..]])?;
    Ok(())
}

fn state_code(s: State) -> i64 {
    match s {
        State::Pending => 0,
        State::Held => 1,
        State::Delivered => 2,
        State::Expired => 3,
    }
}

/// The outbox columns [`outbox_row`] reads, oldest item first. A destination that
/// names no row of `outbox_dests` reads as an empty node id (refused as corrupt), not as
/// "any peer".
pub(super) const OUTBOX_SELECT: &str = "SELECT o.id,
    CASE WHEN o.dest IS NULL THEN NULL ELSE coalesce(d.node, x'') END, o.kind, o.hash,
    p.payload, o.priority, o.created_ms, o.attempts, o.next_attempt_ms, o.expires_ms, o.state
    FROM outbox o LEFT JOIN outbox_dests d ON d.id = o.dest
    LEFT JOIN outbox_payloads p ON o.kind = 1 AND p.hash = o.hash ORDER BY o.id";

/// [`OUTBOX_SELECT`] for a store of schema 5 to 8 (each row held its destination's node
/// id), which `reindex` may have to read without migrating it.
pub(super) const OUTBOX_SELECT_V8: &str = "SELECT o.id, o.dest, o.kind, o.hash, p.payload,
    o.priority, o.created_ms, o.attempts, o.next_attempt_ms, o.expires_ms, o.state
    FROM outbox o LEFT JOIN outbox_payloads p ON o.kind = 1 AND p.hash = o.hash ORDER BY o.id";

/// [`OUTBOX_SELECT`] for a store of schema 4 or older (each row held its payload), which
/// `reindex` may have to read without migrating it.
pub(super) const OUTBOX_SELECT_V4: &str = "SELECT id, dest, kind, hash, payload, priority,
    created_ms, attempts, next_attempt_ms, expires_ms, state FROM outbox ORDER BY id";

/// One row of [`OUTBOX_SELECT`].
pub(super) fn outbox_row(r: &rusqlite::Row<'_>) -> Result<Item> {
    let dest = match r.get::<_, Option<Vec<u8>>>(1)? {
        None => Dest::Any,
        Some(b) => Dest::Peer(hash_of(&b)?.0),
    };
    let hash = hash_of(&r.get::<_, Vec<u8>>(3)?)?;
    let item = match r.get::<_, i64>(2)? {
        0 => OutItem::Block(hash),
        1 => OutItem::Tx(hash),
        k => return Err(StoreError::Corrupt(format!("outbox item kind {k}"))),
    };
    let state = match r.get::<_, i64>(10)? {
        0 => State::Pending,
        1 => State::Held,
        3 => State::Expired,
        s => return Err(StoreError::Corrupt(format!("outbox item state {s}"))),
    };
    Ok(Item {
        id: r.get::<_, i64>(0)? as u64,
        dest,
        item,
        payload: r.get::<_, Option<Vec<u8>>>(4)?.map(Into::into),
        priority: r.get::<_, i64>(5)? as u8,
        created_ms: r.get::<_, i64>(6)? as u64,
        attempts: r.get::<_, i64>(7)? as u32,
        next_attempt_ms: r.get::<_, i64>(8)? as u64,
        expires_ms: r.get::<_, i64>(9)? as u64,
        state,
    })
}

/// Bytes of a pushed message's hash that the seen-set keeps (schema 10).
const SEEN_HASH_BYTES: usize = 8;

/// What the seen-set keeps of `hash`.
fn seen_hash(hash: &[u8]) -> &[u8] {
    &hash[..hash.len().min(SEEN_HASH_BYTES)]
}

/// Remember one seen entry (replacing the hash of an entry already there, or keeping it
/// when `replace` is false), naming its sender by reference.
pub(super) fn seen_put(
    tx: &rusqlite::Connection,
    sender: &[u8],
    msg_id: u64,
    hash: &[u8],
    replace: bool,
) -> Result<()> {
    let known: Option<i64> = tx
        .prepare_cached("SELECT id FROM seen_senders WHERE node = ?1")?
        .query_row([sender], |r| r.get(0))
        .optional()?;
    let id = match known {
        Some(id) => id,
        None => {
            // Senders none of whose messages are remembered any more go first: the table
            // stays no larger than the seen-set, however many senders come and go.
            tx.prepare_cached(
                "DELETE FROM seen_senders
                 WHERE NOT EXISTS (SELECT 1 FROM seen WHERE seen.sender = seen_senders.id)",
            )?
            .execute([])?;
            tx.prepare_cached("INSERT INTO seen_senders(node) VALUES (?1)")?
                .execute([sender])?;
            tx.last_insert_rowid()
        }
    };
    let sql = if replace {
        "INSERT INTO seen(sender, msg_id, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT(sender, msg_id) DO UPDATE SET hash = excluded.hash"
    } else {
        "INSERT OR IGNORE INTO seen(sender, msg_id, hash) VALUES (?1, ?2, ?3)"
    };
    tx.prepare_cached(sql)?
        .execute(params![id, msg_id as i64, seen_hash(hash)])?;
    Ok(())
}

/// The `outbox_dests` id of peer `node`, added if new.
fn dest_id(tx: &rusqlite::Connection, node: &[u8]) -> Result<i64> {
    let known: Option<i64> = tx
        .prepare_cached("SELECT id FROM outbox_dests WHERE node = ?1")?
        .query_row([node], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    // Destinations no item goes to any more go first: the table stays no larger than
    // the peers owed something, however many come and go.
    tx.prepare_cached(
        "DELETE FROM outbox_dests
         WHERE id NOT IN (SELECT dest FROM outbox WHERE dest IS NOT NULL)",
    )?
    .execute([])?;
    tx.prepare_cached("INSERT INTO outbox_dests(node) VALUES (?1)")?
        .execute([node])?;
    Ok(tx.last_insert_rowid())
}

impl Store {
    /// Every outbox row, oldest first.
    pub fn outbox_load(&self) -> Result<Vec<Item>> {
        let mut st = self.conn.prepare(OUTBOX_SELECT)?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut it = outbox_row(r)?;
            if let (Some(s), Some(key)) = (&self.shared, &it.payload) {
                it.payload = Some(s.get(key)?);
            }
            out.push(it);
        }
        Ok(out)
    }

    /// Insert an item (its `id` is ignored) and count it; returns the new id. Durable on
    /// return.
    pub fn outbox_insert(&mut self, it: &Item) -> Result<u64> {
        self.outbox_put(it, false)
    }

    /// Insert an item under its own `id` (a store rebuilt by `reindex` keeps the ids:
    /// they are the message ids peers acknowledge); not counted as newly queued.
    pub fn outbox_restore(&mut self, it: &Item) -> Result<u64> {
        self.outbox_put(it, true)
    }

    fn outbox_put(&mut self, it: &Item, keep_id: bool) -> Result<u64> {
        let (kind, hash) = match it.item {
            OutItem::Block(h) => (0i64, h),
            OutItem::Tx(h) => (1, h),
        };
        let dest: Option<&[u8]> = match &it.dest {
            Dest::Any => None,
            Dest::Peer(n) => Some(&n[..]),
        };
        // In a simulation the payload is held once for every node, by digest.
        let key;
        let payload = match (&self.shared, it.payload.as_deref()) {
            (Some(s), Some(p)) => {
                key = s.put(p);
                Some(&key[..])
            }
            (_, p) => p,
        };
        self.write(|tx| {
            let dest = dest.map(|n| dest_id(tx, n)).transpose()?;
            if kind == 1 {
                tx.prepare_cached(
                    "INSERT INTO outbox_payloads(hash, payload, refs) VALUES (?1, ?2, 1)
                     ON CONFLICT(hash) DO UPDATE
                     SET refs = refs + 1, payload = coalesce(payload, excluded.payload)",
                )?
                .execute(params![&hash.0[..], payload])?;
            }
            tx.prepare_cached(
                "INSERT INTO outbox(dest, kind, hash, priority, created_ms, attempts,
                                    next_attempt_ms, expires_ms, state, id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                dest,
                kind,
                &hash.0[..],
                it.priority as i64,
                it.created_ms as i64,
                it.attempts as i64,
                it.next_attempt_ms as i64,
                it.expires_ms as i64,
                state_code(it.state),
                keep_id.then_some(it.id as i64),
            ])?;
            let id = tx.last_insert_rowid() as u64;
            if !keep_id {
                bump(tx, ENQUEUED)?;
            }
            Ok(id)
        })
    }

    /// Save an item's schedule and state.
    pub fn outbox_update(&mut self, it: &Item) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, expires_ms = ?4, state = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                it.id as i64,
                it.attempts as i64,
                it.next_attempt_ms as i64,
                it.expires_ms as i64,
                state_code(it.state),
            ])?;
            Ok(())
        })
    }

    /// Remove an item, counting it as delivered (`true`) or dropped by the operator.
    pub fn outbox_remove(&mut self, id: u64, delivered: bool) -> Result<()> {
        self.write(|tx| {
            let gone: Option<(i64, Vec<u8>)> = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING kind, hash")?
                .query_row([id as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((kind, hash)) = gone else {
                return Ok(());
            };
            if kind == 1 {
                tx.prepare_cached("UPDATE outbox_payloads SET refs = refs - 1 WHERE hash = ?1")?
                    .execute([&hash])?;
                tx.prepare_cached("DELETE FROM outbox_payloads WHERE hash = ?1 AND refs <= 0")?
                    .execute([&hash])?;
            }
            bump(tx, if delivered { DELIVERED } else { DROPPED })?;
            Ok(())
        })
    }

    /// Lifetime counters of the outbox.
    pub fn outbox_totals(&self) -> Result<Totals> {
        let get = |k: &str| -> Result<u64> {
            Ok(self
                .get_meta(k)?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0))
        };
        Ok(Totals {
            enqueued: get(ENQUEUED)?,
            delivered: get(DELIVERED)?,
            dropped: get(DROPPED)?,
        })
    }

    /// Has `sender` already pushed `hash` to us under `msg_id`? (The hash, of which the
    /// first 8 bytes are kept, guards against a sender whose ids restarted, e.g. after
    /// its store was wiped.)
    pub fn seen_contains(&self, sender: &[u8; 32], msg_id: u64, hash: &[u8; 32]) -> Result<bool> {
        let got: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT s.hash FROM seen s JOIN seen_senders p ON p.id = s.sender
                 WHERE p.node = ?1 AND s.msg_id = ?2",
            )?
            .query_row(params![&sender[..], msg_id as i64], |r| r.get(0))
            .optional()?;
        Ok(got.is_some_and(|h| h.as_slice() == seen_hash(hash)))
    }

    /// Remember a pushed message as applied; keeps the newest `cap` entries.
    pub fn seen_insert(
        &mut self,
        sender: &[u8; 32],
        msg_id: u64,
        hash: &[u8; 32],
        cap: u64,
    ) -> Result<()> {
        self.write(|tx| {
            seen_put(tx, sender, msg_id, hash, true)?;
            tx.prepare_cached("DELETE FROM seen WHERE seq <= (SELECT max(seq) FROM seen) - ?1")?
                .execute([cap as i64])?;
            Ok(())
        })
    }

    /// Entries in the seen-set.
    pub fn seen_len(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM seen", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

impl Store {
    /// Point an unsent block item at a newer block (tip announcements coalesce).
    pub fn outbox_retarget(&mut self, id: u64, hash: &[u8; 32]) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE outbox SET hash = ?2 WHERE id = ?1",
                params![id as i64, &hash[..]],
            )?;
            Ok(())
        })
    }
}
