//! What `skywave reindex` carries from an old store to the one it rebuilds, besides the
//! chain (which is rebuilt from the blocks): what the node owes peers (the outbox, with
//! its message ids and counters), the operator's bans, the address book and the
//! seen-set. Row by row, so one damaged row loses that row only; what could not be read
//! is reported, never silently dropped.

use super::outbox::{
    outbox_row, seen_put, DELIVERED, DROPPED, ENQUEUED, OUTBOX_SELECT, OUTBOX_SELECT_V4,
    OUTBOX_SELECT_V8,
};
use super::{BanRow, Result, Store};
use crate::chain::types::Transaction;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// Most problems listed one by one; the rest are only counted.
const MAX_LISTED: usize = 20;

/// What was carried, and what was not.
#[derive(Debug, Default, Serialize)]
pub struct Carried {
    /// Outbox items, under their old ids.
    pub outbox: u64,
    /// Bans.
    pub bans: u64,
    /// Address-book entries.
    pub peers: u64,
    /// Seen-set entries.
    pub seen: u64,
    /// Rows or tables that could not be read or written, in words (at most 20 listed).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

impl Carried {
    /// Note a problem.
    pub fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(what);
        }
    }
}

/// Read `sql`'s rows from `old`, handing each to `each`; a row `each` fails on is a
/// problem and the next is tried; a read error ends the table (the file is damaged
/// there). Returns the rows handed on.
fn rows(
    old: &Connection,
    table: &str,
    sql: &str,
    out: &mut Carried,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<()>,
) -> u64 {
    let mut st = match old.prepare(sql) {
        Ok(st) => st,
        Err(e) => {
            out.problem(format!("{table}: cannot be read ({e})"));
            return 0;
        }
    };
    let mut rows = match st.query([]) {
        Ok(r) => r,
        Err(e) => {
            out.problem(format!("{table}: cannot be read ({e})"));
            return 0;
        }
    };
    let (mut done, mut n) = (0, 0u64);
    loop {
        match rows.next() {
            Ok(Some(r)) => {
                n += 1;
                match each(r) {
                    Ok(()) => done += 1,
                    Err(e) => out.problem(format!("{table}: row {n}: {e}")),
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.problem(format!("{table}: unreadable after {n} rows ({e})"));
                break;
            }
        }
    }
    done
}

impl Store {
    /// Copy the outbox, bans, address book and seen-set of `old` (another store's file,
    /// perhaps damaged) into this one, in one commit.
    pub fn carry_from(&mut self, old: &Connection) -> Result<Carried> {
        let mut out = Carried::default();
        // One transaction; each row its own savepoint inside it, so that a row that
        // cannot be written is left out alone (and reported) rather than failing all.
        self.conn.execute_batch("BEGIN")?;
        // A store that could not be opened as one was not migrated: its rows may hold
        // their payloads, or their destinations' node ids.
        let version = old_version(old);
        let select = if version >= 9 {
            OUTBOX_SELECT
        } else if version >= 5 {
            OUTBOX_SELECT_V8
        } else {
            OUTBOX_SELECT_V4
        };
        out.outbox = rows(old, "outbox", select, &mut out, |r| {
            self.outbox_restore(&outbox_row(r)?).map(drop)
        });
        // Ids are never reused, even those of items delivered and gone: peers remember
        // which they applied.
        let seq: Option<i64> = old
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap_or_else(|e| {
                out.problem(format!("the outbox's last message id: {e}"));
                None
            });
        if let Some(seq) = seq {
            let res = self.write(|c| {
                c.execute(
                    "INSERT OR IGNORE INTO sqlite_sequence(name, seq) VALUES ('outbox', 0)",
                    [],
                )?;
                c.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'outbox'",
                    [seq],
                )?;
                Ok(())
            });
            if let Err(e) = res {
                out.problem(format!("the outbox's last message id: {e}"));
            }
        }
        for key in [ENQUEUED, DELIVERED, DROPPED] {
            let v: Option<Vec<u8>> = old
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .unwrap_or_else(|e| {
                    out.problem(format!("counter {key}: {e}"));
                    None
                });
            if let Some(Err(e)) = v.map(|v| self.set_meta(key, &v)) {
                out.problem(format!("counter {key}: {e}"));
            }
        }
        out.bans = rows(
            old,
            "bans",
            "SELECT key, until_ms, reason, created_ms FROM bans ORDER BY key",
            &mut out,
            |r| {
                self.ban_put(&BanRow {
                    key: r.get(0)?,
                    until_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    reason: r.get(2)?,
                    created_ms: r.get::<_, i64>(3)?.max(0) as u64,
                })
            },
        );
        out.peers = rows(
            old,
            "peers",
            "SELECT addr, last_seen, info FROM peers",
            &mut out,
            |r| {
                let (addr, seen, info): (String, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                self.upsert_peer(&addr, seen.max(0) as u64, &info)
            },
        );
        let seen_select = if version >= 7 {
            "SELECT p.node, s.msg_id, s.hash FROM seen s JOIN seen_senders p ON p.id = s.sender
             ORDER BY s.seq"
        } else {
            "SELECT sender, msg_id, hash FROM seen ORDER BY seq"
        };
        out.seen = rows(old, "seen", seen_select, &mut out, |r| {
            let (sender, msg_id, hash): (Vec<u8>, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            self.write(|c| seen_put(c, &sender, msg_id as u64, &hash, false))
        });
        // Row failures were reported above, not to be reported again by a later input.
        self.failed.take();
        self.conn.execute_batch("COMMIT")?;
        Ok(out)
    }
}

/// The schema version of `old`; 0 if it cannot be read (an unmigrated store).
fn old_version(old: &Connection) -> i64 {
    old.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap_or(0)
}

/// The transactions of `old`'s mempool that can be read; the rest are problems in `out`.
pub fn old_mempool(old: &Connection, out: &mut Carried) -> Vec<Transaction> {
    let mut txs = Vec::new();
    rows(
        old,
        "mempool",
        if old_version(old) >= 8 {
            "SELECT tx FROM mempool ORDER BY seq"
        } else {
            "SELECT tx FROM mempool ORDER BY rowid"
        },
        out,
        |r| {
            txs.push(super::dec(&r.get::<_, Vec<u8>>(0)?, "mempool tx")?);
            Ok(())
        },
    );
    txs
}
