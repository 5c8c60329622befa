//! Schema migrations, applied in order. The schema version is SQLite's `user_version`.
//!
//! To change the schema, append a migration; never edit one that has shipped.

use super::{Result, StoreError};
use rusqlite::Connection;

/// Migrations: entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: chain, mempool, peers.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value BLOB NOT NULL
     );
     CREATE TABLE blocks (
         hash   BLOB PRIMARY KEY,
         height INTEGER NOT NULL,
         prev   BLOB NOT NULL,
         work   BLOB NOT NULL,       -- cumulative work, u128 big-endian
         header BLOB NOT NULL,       -- postcard Header
         body   BLOB,                -- postcard (coinbase, txs); NULL until received
         status INTEGER NOT NULL,    -- 0 header only, 1 have body, 2 invalid
         seq    INTEGER NOT NULL     -- first-seen order, breaks work ties
     );
     CREATE INDEX blocks_prev ON blocks(prev);
     CREATE TABLE main_chain (
         height INTEGER PRIMARY KEY,
         hash   BLOB NOT NULL UNIQUE REFERENCES blocks(hash)
     );
     CREATE TABLE accounts (
         address BLOB PRIMARY KEY,
         balance INTEGER NOT NULL,   -- u64 bits
         nonce   INTEGER NOT NULL
     );
     CREATE TABLE undo (
         hash BLOB PRIMARY KEY REFERENCES blocks(hash),
         data BLOB NOT NULL          -- postcard Undo
     );
     CREATE TABLE mempool (
         txid BLOB PRIMARY KEY,
         tx   BLOB NOT NULL          -- postcard Transaction
     );
     CREATE TABLE tx_index (
         txid  BLOB PRIMARY KEY,
         block BLOB NOT NULL REFERENCES blocks(hash)
     );
     CREATE TABLE peers (
         addr      TEXT PRIMARY KEY,
         last_seen INTEGER NOT NULL,
         info      TEXT NOT NULL DEFAULT ''
     );",
    // 2: the outbox (what this node owes each peer) and the seen-set (pushed messages
    // already applied, so a retransmission after a lost ack is acked, not re-applied).
    "CREATE TABLE outbox (
         id              INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: it is the msg_id
         dest            BLOB,                -- peer node_id; NULL: any peer
         kind            INTEGER NOT NULL,    -- 0 block, 1 tx
         hash            BLOB NOT NULL,
         payload         BLOB,                -- postcard Transaction for tx items
         priority        INTEGER NOT NULL,    -- lower goes first
         created_ms      INTEGER NOT NULL,
         attempts        INTEGER NOT NULL,
         next_attempt_ms INTEGER NOT NULL,
         expires_ms      INTEGER NOT NULL,
         state           INTEGER NOT NULL     -- 0 pending, 1 held, 3 expired
     );
     CREATE TABLE seen (
         seq    INTEGER PRIMARY KEY AUTOINCREMENT,
         sender BLOB NOT NULL,               -- sender node_id
         msg_id INTEGER NOT NULL,
         hash   BLOB NOT NULL,               -- what that message carried
         UNIQUE(sender, msg_id)
     );",
    // 3: the ban list (peers refused until a time): IP, CIDR subnet or callsign.
    "CREATE TABLE bans (
         key        TEXT PRIMARY KEY,    -- '203.0.113.7', '10.0.0.0/8', 'N0CALL-2'
         until_ms   INTEGER NOT NULL,    -- refused until then (ms since the Unix epoch)
         reason     TEXT NOT NULL,
         created_ms INTEGER NOT NULL
     );",
    // 4: block bodies in their own table, so that loading the index at start-up reads
    // headers only (a rowid table: the primary key's index answers "is the body
    // stored?" without touching the bodies).
    "CREATE TABLE bodies (
         hash BLOB PRIMARY KEY REFERENCES blocks(hash),
         body BLOB NOT NULL          -- postcard (coinbase, txs)
     );
     INSERT INTO bodies(hash, body) SELECT hash, body FROM blocks WHERE body IS NOT NULL;
     ALTER TABLE blocks DROP COLUMN body;",
    // 5: a transaction's payload once, not once per outbox item (a gateway queues each
    // transaction for every peer): `refs` counts the tx items naming it.
    "CREATE TABLE outbox_payloads (
         hash    BLOB PRIMARY KEY,    -- txid
         payload BLOB,                -- postcard Transaction
         refs    INTEGER NOT NULL     -- outbox rows of kind 1 with this hash
     ) WITHOUT ROWID;
     INSERT INTO outbox_payloads(hash, payload, refs)
         SELECT hash, max(payload), count(*) FROM outbox WHERE kind = 1 GROUP BY hash;
     ALTER TABLE outbox DROP COLUMN payload;",
    // 6: accounts keyed by address alone: a rowid table kept each address twice (row
    // and primary-key index), and every node holds every account.
    "CREATE TABLE accounts_by_address (
         address BLOB PRIMARY KEY,
         balance INTEGER NOT NULL,   -- u64 bits
         nonce   INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO accounts_by_address(address, balance, nonce)
         SELECT address, balance, nonce FROM accounts;
     DROP TABLE accounts;
     ALTER TABLE accounts_by_address RENAME TO accounts;",
    // 7: the seen-set names each sender once, in a table of its own: an entry (of up to
    // 50 000 a node remembers) held the sender's 32-byte node id twice, in its row and
    // in the unique index.
    "CREATE TABLE seen_senders (
         id   INTEGER PRIMARY KEY,
         node BLOB NOT NULL UNIQUE    -- sender node_id
     );
     CREATE TABLE seen_by_sender (
         seq    INTEGER PRIMARY KEY,  -- order remembered: the oldest is forgotten first
         sender INTEGER NOT NULL,     -- seen_senders.id
         msg_id INTEGER NOT NULL,
         hash   BLOB NOT NULL,        -- what that message carried
         UNIQUE(sender, msg_id)
     );
     INSERT INTO seen_senders(node) SELECT DISTINCT sender FROM seen ORDER BY sender;
     INSERT INTO seen_by_sender(seq, sender, msg_id, hash)
         SELECT s.seq, p.id, s.msg_id, s.hash FROM seen s JOIN seen_senders p ON p.node = s.sender;
     DROP TABLE seen;
     ALTER TABLE seen_by_sender RENAME TO seen;",
    // 8: the mempool keyed by txid alone (a rowid table held each txid twice), in the
    // order added; `tx` is NULL in a store whose transactions a shared history holds.
    "CREATE TABLE mempool_by_txid (
         txid BLOB PRIMARY KEY,
         seq  INTEGER NOT NULL,       -- order added
         tx   BLOB                    -- postcard Transaction
     ) WITHOUT ROWID;
     INSERT INTO mempool_by_txid(txid, seq, tx) SELECT txid, rowid, tx FROM mempool;
     DROP TABLE mempool;
     ALTER TABLE mempool_by_txid RENAME TO mempool;",
    // 9: the outbox names each destination once, in a table of its own: a gateway's
    // thousands of items for one peer each held its 32-byte node id. The rows keep their
    // ids, and the last id handed out is carried over: ids are never reused.
    "CREATE TABLE outbox_dests (
         id   INTEGER PRIMARY KEY,
         node BLOB NOT NULL UNIQUE    -- peer node_id
     );
     CREATE TABLE outbox_by_dest (
         id              INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: it is the msg_id
         dest            INTEGER,             -- outbox_dests.id; NULL: any peer
         kind            INTEGER NOT NULL,    -- 0 block, 1 tx
         hash            BLOB NOT NULL,
         priority        INTEGER NOT NULL,    -- lower goes first
         created_ms      INTEGER NOT NULL,
         attempts        INTEGER NOT NULL,
         next_attempt_ms INTEGER NOT NULL,
         expires_ms      INTEGER NOT NULL,
         state           INTEGER NOT NULL     -- 0 pending, 1 held, 3 expired
     );
     INSERT INTO outbox_dests(node)
         SELECT DISTINCT dest FROM outbox WHERE dest IS NOT NULL ORDER BY dest;
     INSERT INTO sqlite_sequence(name, seq)
         SELECT 'outbox_by_dest', seq FROM sqlite_sequence WHERE name = 'outbox';
     INSERT INTO outbox_by_dest(id, dest, kind, hash, priority, created_ms, attempts,
                                next_attempt_ms, expires_ms, state)
         SELECT o.id, d.id, o.kind, o.hash, o.priority, o.created_ms, o.attempts,
                o.next_attempt_ms, o.expires_ms, o.state
         FROM outbox o LEFT JOIN outbox_dests d ON d.node = o.dest ORDER BY o.id;
     DROP TABLE outbox;
     ALTER TABLE outbox_by_dest RENAME TO outbox;",
    // 10: the seen-set keeps the first 8 bytes of what each message carried, not 32:
    // they only tell a sender's new message from an old one under a reused id, which 64
    // bits do as well, and a node remembers up to 50 000 entries.
    "CREATE TABLE seen_short (
         seq    INTEGER PRIMARY KEY,  -- order remembered: the oldest is forgotten first
         sender INTEGER NOT NULL,     -- seen_senders.id
         msg_id INTEGER NOT NULL,
         hash   BLOB NOT NULL,        -- first 8 bytes of what that message carried
         UNIQUE(sender, msg_id)
     );
     INSERT INTO seen_short(seq, sender, msg_id, hash)
         SELECT seq, sender, msg_id, substr(hash, 1, 8) FROM seen ORDER BY seq;
     DROP TABLE seen;
     ALTER TABLE seen_short RENAME TO seen;",
];

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database up to [`SCHEMA_VERSION`]; each migration is its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
