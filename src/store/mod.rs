//! SQLite persistence: the block tree (headers; bodies in a table of their own, so that
//! start-up loads the index without reading them), the active chain, accounts, undo data, the
//! mempool, a transaction index, peers and general metadata.
//!
//! One file in WAL mode with `synchronous=FULL`. Each write method is atomic on its own
//! (a savepoint): each block connect or disconnect, say, so the main chain, accounts and
//! undo data always agree. Outside an input a write is durable when it returns `Ok`.
//! Inside one ([`Store::begin_input`] to [`Store::end_input`], what the driver brackets
//! each input to the node with) all writes become durable together in one commit, before
//! the driver sends anything the input queued: one fsync per input instead of one per
//! row. A write that fails inside an input fails the whole input (see `end_input`).
//!
//! Hashes and addresses are 32-byte BLOBs; headers, bodies, transactions and undo records
//! are postcard BLOBs; u64 values are stored as i64 with the same bits.

mod bans;
mod carry;
mod outbox;
mod schema;

use crate::chain::state::{Account, Undo};
use crate::chain::types::{Address, Block, Coinbase, Hash, Header, HeldTx, Transaction};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

pub use bans::BanRow;
pub use carry::{old_mempool, Carried};
pub use schema::SCHEMA_VERSION;

/// A store failure: SQLite errors, undecodable rows, schema mismatches.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row could not be decoded: the file is damaged or was written by other software.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A write failed earlier in this input; its transaction was rolled back.
    #[error("a store write failed: {0}")]
    WriteFailed(String),
    /// The file was written by a newer version of skywave.
    #[error("store schema version {found} is newer than this build supports ({supported}); upgrade skywave")]
    TooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Status of a block row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockStatus {
    /// Header known, body not stored.
    HeaderOnly,
    /// Header and body stored.
    HaveBody,
    /// Breaks a consensus rule, or descends from a block that does.
    Invalid,
}

impl BlockStatus {
    fn to_i64(self) -> i64 {
        match self {
            BlockStatus::HeaderOnly => 0,
            BlockStatus::HaveBody => 1,
            BlockStatus::Invalid => 2,
        }
    }
    fn from_i64(v: i64) -> Result<Self> {
        match v {
            0 => Ok(BlockStatus::HeaderOnly),
            1 => Ok(BlockStatus::HaveBody),
            2 => Ok(BlockStatus::Invalid),
            _ => Err(StoreError::Corrupt(format!("unknown block status {v}"))),
        }
    }
}

/// One row of the block index as loaded at startup.
#[derive(Clone, Debug)]
pub struct IndexRow {
    /// Block hash.
    pub hash: Hash,
    /// Header.
    pub header: Header,
    /// Cumulative work up to and including this block.
    pub work: u128,
    /// Status.
    pub status: BlockStatus,
    /// Whether the body is stored.
    pub has_body: bool,
    /// First-seen order.
    pub seq: u64,
}

/// What a block connect writes, in one transaction.
pub struct ConnectWrite<'a> {
    /// The block.
    pub hash: Hash,
    /// Its height.
    pub height: u64,
    /// New values of the touched accounts (empty accounts are deleted).
    pub accounts: &'a [(Address, Account)],
    /// Undo record.
    pub undo: &'a Undo,
    /// Ids of the block's transactions (indexed, and removed from the mempool).
    pub tx_ids: &'a [Hash],
}

/// What a block disconnect writes, in one transaction.
pub struct DisconnectWrite<'a> {
    /// The block (must be the current main-chain tip).
    pub hash: Hash,
    /// Its height.
    pub height: u64,
    /// Restored account values (empty accounts are deleted).
    pub accounts: &'a [(Address, Account)],
    /// Ids of the block's transactions (removed from the index).
    pub tx_ids: &'a [Hash],
}

#[derive(Serialize, Deserialize)]
struct BodyOwned {
    coinbase: Coinbase,
    txs: Vec<Transaction>,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    coinbase: &'a Coinbase,
    txs: &'a [Transaction],
}

pub(crate) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

pub(crate) fn dec<'a, T: Deserialize<'a>>(b: &'a [u8], what: &str) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn hash_of(b: &[u8]) -> Result<Hash> {
    let arr: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of {} bytes", b.len())))?;
    Ok(Hash(arr))
}

fn work_of(b: &[u8]) -> Result<u128> {
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("work of {} bytes", b.len())))?;
    Ok(u128::from_be_bytes(arr))
}

fn write_accounts(tx: &Connection, accounts: &[(Address, Account)]) -> Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT INTO accounts(address, balance, nonce) VALUES (?1, ?2, ?3)
         ON CONFLICT(address) DO UPDATE SET balance = excluded.balance, nonce = excluded.nonce",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM accounts WHERE address = ?1")?;
    for (a, acc) in accounts {
        if acc.is_empty() {
            del.execute([&a.0[..]])?;
        } else {
            put.execute(params![&a.0[..], acc.balance as i64, acc.nonce as i64])?;
        }
    }
    Ok(())
}

/// Store a block's body (its row in `blocks` must exist): the bytes, or with a shared
/// history their digest.
fn put_body(
    tx: &Connection,
    shared: Option<&SharedHistory>,
    hash: &Hash,
    body: &[u8],
) -> Result<()> {
    let key;
    let stored = match shared {
        Some(s) => {
            key = s.put(body);
            &key[..]
        }
        None => body,
    };
    tx.execute(
        "INSERT INTO bodies(hash, body) VALUES (?1, ?2)
         ON CONFLICT(hash) DO UPDATE SET body = excluded.body",
        params![&hash.0[..], stored],
    )?;
    Ok(())
}

/// Block bodies, undo records, the transactions of mempools and outboxes, and which
/// blocks hold each transaction, kept once for many in-memory stores (the nodes of a
/// simulation) instead of once per node: every node holds the same history and relays
/// the same transactions, so per-node copies make memory grow with nodes × history.
///
/// Bytes are stored by their BLAKE3 digest, which the node's own tables hold in their
/// place: a node reads back exactly what it wrote, whatever another node wrote. Nothing
/// is ever removed (a simulation's history is small; its copies were not). A write that
/// the node's transaction rolls back may leave an entry here that no node refers to.
#[derive(Clone, Default)]
pub struct SharedHistory(Arc<Mutex<SharedInner>>);

#[derive(Default)]
struct SharedInner {
    blobs: HashMap<[u8; 32], Arc<[u8]>>,
    /// Transaction id -> the digest of its bytes in `blobs` (the mempools').
    txs: HashMap<Hash, [u8; 32]>,
    /// Transaction id -> blocks that hold it (on any fork), in the order first connected.
    tx_blocks: HashMap<Hash, Vec<Hash>>,
    /// Decoded transactions held by some node's mempool, by id: a payment reaches every
    /// simulated node, and a thousand copies of it were most of a large run's memory.
    decoded: HashMap<Hash, Weak<HeldTx>>,
    /// Size of `decoded` after its last sweep of dropped entries.
    decoded_swept: usize,
}

impl SharedHistory {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedInner> {
        // The maps stay consistent whatever a panicking holder was doing (single inserts).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep `bytes` and return the digest that names them.
    fn put(&self, bytes: &[u8]) -> [u8; 32] {
        let key = *blake3::hash(bytes).as_bytes();
        self.lock().blobs.entry(key).or_insert_with(|| bytes.into());
        key
    }

    /// Keep `bytes`, returning the one copy held.
    fn intern(&self, bytes: Vec<u8>) -> Arc<[u8]> {
        let key = *blake3::hash(&bytes).as_bytes();
        Arc::clone(self.lock().blobs.entry(key).or_insert_with(|| bytes.into()))
    }

    /// The bytes named by a stored digest.
    fn get(&self, key: &[u8]) -> Result<Arc<[u8]>> {
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("shared key of {} bytes", key.len())))?;
        self.lock()
            .blobs
            .get(&key)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("shared history lacks a stored blob".into()))
    }

    /// Keep a transaction's bytes, found again by its id (which covers every field, so
    /// one id has one encoding).
    fn put_tx(&self, txid: &Hash, bytes: &[u8]) {
        let key = self.put(bytes);
        self.lock().txs.entry(*txid).or_insert(key);
    }

    /// The bytes of a transaction kept by [`SharedHistory::put_tx`].
    fn tx(&self, txid: &Hash) -> Result<Arc<[u8]>> {
        let key = self.lock().txs.get(txid).copied();
        match key {
            Some(key) => self.get(&key),
            None => Err(StoreError::Corrupt(format!(
                "shared history lacks transaction {txid}"
            ))),
        }
    }

    fn note_txs(&self, block: &Hash, txids: &[Hash]) {
        let mut inner = self.lock();
        for id in txids {
            let v = inner.tx_blocks.entry(*id).or_default();
            if !v.contains(block) {
                v.push(*block);
            }
        }
    }

    fn tx_blocks(&self, txid: &Hash) -> Vec<Hash> {
        self.lock().tx_blocks.get(txid).cloned().unwrap_or_default()
    }

    /// The one decoded copy of transaction `id` that the nodes share.
    fn share_tx(&self, tx: Transaction, id: &Hash) -> Arc<HeldTx> {
        let mut inner = self.lock();
        if let Some(held) = inner.decoded.get(id).and_then(Weak::upgrade) {
            // The id commits to every field, so only a hash collision could differ.
            if held.tx == tx {
                return held;
            }
        }
        let tx = Arc::new(HeldTx { id: *id, tx });
        inner.decoded.insert(*id, Arc::downgrade(&tx));
        // Sweep dropped transactions once the map has doubled since the last sweep.
        if inner.decoded.len() > 2 * inner.decoded_swept + 1024 {
            inner.decoded.retain(|_, w| w.strong_count() > 0);
            inner.decoded_swept = inner.decoded.len();
        }
        tx
    }

    /// Bytes held (blobs and the transaction map), for the simulator's figures.
    pub fn bytes(&self) -> u64 {
        let inner = self.lock();
        let blobs: usize = inner.blobs.values().map(|b| b.len() + 32).sum();
        let txs: usize = inner.tx_blocks.values().map(|v| 32 + 32 * v.len()).sum();
        (blobs + txs + 64 * inner.txs.len()) as u64
    }
}

/// Turn off the connection's lookaside allocator: 48 KB that each connection holds from
/// its opening, which a simulation of a thousand nodes pays a thousand times for little
/// speed. Only before the connection has run anything (it is refused while lookaside
/// memory is in use, and the connection then keeps it: harmless).
fn without_lookaside(conn: &Connection) {
    // SAFETY: the handle is open and owned by `conn`; SQLITE_DBCONFIG_LOOKASIDE takes a
    // buffer pointer and two ints, and a null buffer with no slots means "none".
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        );
    }
}

/// The node's SQLite database.
pub struct Store {
    conn: Connection,
    /// Bodies, undo records and the transaction index kept outside the database (see
    /// [`SharedHistory`]); None for an ordinary store.
    shared: Option<SharedHistory>,
    /// Inside an input: the first write opens its transaction (see `begin_input`).
    in_input: Cell<bool>,
    /// The input's transaction holds writes not yet committed.
    dirty: Cell<bool>,
    /// The first write that failed and has not been reported by `end_input` yet.
    failed: Cell<Option<String>>,
    /// Commits that made writes durable since the store was opened.
    commits: Cell<u64>,
    /// The last mempool `seq` handed out; None until the first insert reads it.
    mempool_seq: Cell<Option<i64>>,
}

impl Store {
    /// Open (creating if needed) the database at `path`, and migrate it to the current
    /// schema. Fails if the file was written by a newer schema.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn, true, None)
    }

    /// A private in-memory database, for tests and simulations.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        Self::init(conn, false, None)
    }

    /// An in-memory database for one of many simulated nodes: block bodies, undo records
    /// and the transaction index live once in `shared`, and the database uses small
    /// pages (most of its tables hold a few rows, and an in-memory page is never
    /// evicted) and gives the pages it frees back at each commit (`auto_vacuum`: an
    /// in-memory database would keep them as its own, so every node would hold the
    /// high-water mark of its mempool and outbox).
    pub fn open_in_memory_shared(shared: &SharedHistory) -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        without_lookaside(&conn);
        conn.execute_batch("PRAGMA page_size=1024; PRAGMA auto_vacuum=FULL;")?;
        Self::init(conn, false, Some(shared.clone()))
    }

    /// A copy of this in-memory store that shares its history (see
    /// [`Store::open_in_memory_shared`]): many simulated nodes start from one chain
    /// without each validating it again. None for a store without a shared history.
    pub fn copy_shared(&self) -> Result<Option<Store>> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let mut conn = Connection::open_in_memory()?;
        without_lookaside(&conn);
        conn.execute_batch("PRAGMA page_size=1024; PRAGMA auto_vacuum=FULL;")?;
        rusqlite::backup::Backup::new(&self.conn, &mut conn)?.run_to_completion(
            i32::MAX,
            std::time::Duration::ZERO,
            None,
        )?;
        Self::init(conn, false, Some(shared.clone())).map(Some)
    }

    fn init(conn: Connection, wal: bool, shared: Option<SharedHistory>) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if wal {
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Corrupt(format!(
                    "could not enable WAL mode (got {mode})"
                )));
            }
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let mut store = Store {
            conn,
            shared,
            in_input: Cell::new(false),
            dirty: Cell::new(false),
            failed: Cell::new(None),
            commits: Cell::new(0),
            mempool_seq: Cell::new(None),
        };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// `tx` (whose id is `id`) as the mempool holds it: one copy per simulation when
    /// the history is shared (see [`SharedHistory`]), else its own.
    pub fn share_tx(&self, tx: Transaction, id: &Hash) -> Arc<HeldTx> {
        match &self.shared {
            Some(s) => s.share_tx(tx, id),
            None => Arc::new(HeldTx { id: *id, tx }),
        }
    }

    /// Encoded bytes (an outbox payload) as one copy per simulation when the history is
    /// shared (the outbox's rows name them there anyway), else their own.
    pub fn share_bytes(&self, bytes: Vec<u8>) -> Arc<[u8]> {
        match &self.shared {
            Some(s) => s.intern(bytes),
            None => bytes.into(),
        }
    }

    /// The underlying connection, for tables owned by other modules (add their schema
    /// as a migration in `store::schema`).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Mutable access to the underlying connection (for transactions).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Start one input to the node: every write until [`Store::end_input`] becomes
    /// durable in one commit. Takes `&self` because the driver reaches the store through
    /// `Node::chain()`; it only sets a flag, and the first write opens the transaction,
    /// so an input that writes nothing costs no SQL at all.
    pub fn begin_input(&self) {
        self.in_input.set(true);
    }

    /// End the input: commit its writes in one transaction. If one of them failed, the
    /// transaction is rolled back and that failure returned instead: the node's memory
    /// may then be ahead of its store, so the caller must stop the node rather than send
    /// or answer anything this input produced.
    pub fn end_input(&self) -> Result<()> {
        self.in_input.set(false);
        let dirty = self.dirty.replace(false);
        let open = !self.conn.is_autocommit();
        if let Some(why) = self.failed.take() {
            if open {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(StoreError::WriteFailed(why));
        }
        if open {
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
            if dirty {
                self.commits.set(self.commits.get() + 1);
            }
        }
        Ok(())
    }

    /// Leave an input without committing it (the thread that ran it panicked).
    pub fn abandon_input(&self) {
        self.in_input.set(false);
        self.dirty.set(false);
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Commits that made writes durable since the store was opened (each is one WAL
    /// fsync with `synchronous=FULL`).
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    /// Run `f` as one atomic write (a savepoint). Inside an input it joins the input's
    /// transaction; outside it commits on its own. A failure is remembered for
    /// `end_input`, whatever the caller does with the error.
    fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let r = self.write_inner(f);
        if let Err(e) = &r {
            let first = self.failed.take().unwrap_or_else(|| e.to_string());
            self.failed.set(Some(first));
        }
        r
    }

    fn write_inner<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.in_input.get() && self.conn.is_autocommit() {
            self.conn.execute_batch("BEGIN")?;
        }
        let alone = self.conn.is_autocommit();
        let sp = self.conn.savepoint()?;
        let v = f(&sp)?;
        sp.commit()?;
        if alone {
            self.commits.set(self.commits.get() + 1);
        } else {
            self.dirty.set(true);
        }
        Ok(v)
    }

    /// A metadata value.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Set a metadata value (durable with the input, see the module doc).
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    /// Insert or update a peer.
    pub fn upsert_peer(&mut self, addr: &str, last_seen: u64, info: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO peers(addr, last_seen, info) VALUES (?1, ?2, ?3)
                 ON CONFLICT(addr) DO UPDATE SET last_seen = excluded.last_seen, info = excluded.info",
                params![addr, last_seen as i64, info],
            )?;
            Ok(())
        })
    }

    /// All peers: (address, last seen, info), most recently seen first.
    pub fn peers(&self) -> Result<Vec<(String, u64, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT addr, last_seen, info FROM peers ORDER BY last_seen DESC, addr")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Genesis setup for a fresh store, in one transaction: network metadata, the genesis
    /// block on the main chain, and its coinbase credit.
    pub fn init_genesis(
        &mut self,
        network: &str,
        genesis: &Block,
        work: u128,
        accounts: &[(Address, Account)],
    ) -> Result<()> {
        let hash = genesis.hash();
        let shared = self.shared.clone();
        let shared = shared.as_ref();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('network', ?1), ('genesis', ?2)",
                params![network.as_bytes(), &hash.0[..]],
            )?;
            Self::insert_block_row(tx, shared, genesis, work, 0, Some(genesis))?;
            tx.execute(
                "INSERT INTO main_chain(height, hash) VALUES (0, ?1)",
                [&hash.0[..]],
            )?;
            write_accounts(tx, accounts)?;
            Ok(())
        })
    }

    fn insert_block_row(
        tx: &Connection,
        shared: Option<&SharedHistory>,
        block_header: &Block,
        work: u128,
        seq: u64,
        body: Option<&Block>,
    ) -> Result<()> {
        let header = &block_header.header;
        let hash = header.hash();
        let body_bytes = match body {
            Some(b) => Some(enc(&BodyRef {
                coinbase: &b.coinbase,
                txs: &b.txs,
            })?),
            None => None,
        };
        let status = if body.is_some() {
            BlockStatus::HaveBody
        } else {
            BlockStatus::HeaderOnly
        };
        tx.execute(
            "INSERT INTO blocks(hash, height, prev, work, header, status, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &hash.0[..],
                header.height as i64,
                &header.prev.0[..],
                &work.to_be_bytes()[..],
                enc(header)?,
                status.to_i64(),
                seq as i64,
            ],
        )?;
        if let Some(b) = body_bytes {
            put_body(tx, shared, &hash, &b)?;
        }
        Ok(())
    }

    /// Add headers to the index (status header-only), in one transaction.
    pub fn put_headers(&mut self, rows: &[(Header, u128, u64)]) -> Result<()> {
        self.write(|tx| {
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO blocks(hash, height, prev, work, header, status, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                )?;
                for (h, work, seq) in rows {
                    st.execute(params![
                        &h.hash().0[..],
                        h.height as i64,
                        &h.prev.0[..],
                        &work.to_be_bytes()[..],
                        enc(h)?,
                        *seq as i64,
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Store a block body (adding the header row if new); status becomes have-body.
    pub fn put_block(&mut self, block: &Block, work: u128, seq: u64) -> Result<()> {
        let hash = block.hash();
        let body = enc(&BodyRef {
            coinbase: &block.coinbase,
            txs: &block.txs,
        })?;
        let shared = self.shared.clone();
        let shared = shared.as_ref();
        self.write(|tx| {
            let updated = tx.execute(
                "UPDATE blocks SET status = 1 WHERE hash = ?1",
                [&hash.0[..]],
            )?;
            if updated == 0 {
                Self::insert_block_row(tx, shared, block, work, seq, Some(block))?;
            } else {
                put_body(tx, shared, &hash, &body)?;
            }
            Ok(())
        })
    }

    /// Mark blocks invalid, in one transaction.
    pub fn mark_invalid(&mut self, hashes: &[Hash]) -> Result<()> {
        self.write(|tx| {
            {
                let mut st = tx.prepare_cached("UPDATE blocks SET status = 2 WHERE hash = ?1")?;
                for h in hashes {
                    st.execute([&h.0[..]])?;
                }
            }
            Ok(())
        })
    }

    /// A stored block (header and body), if its body is stored.
    pub fn get_block(&self, hash: &Hash) -> Result<Option<Block>> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = self
            .conn
            .query_row(
                "SELECT header, body FROM blocks LEFT JOIN bodies USING (hash)
                 WHERE hash = ?1",
                [&hash.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((hb, Some(bb))) = row else {
            return Ok(None);
        };
        let header: Header = dec(&hb, "header")?;
        let body: BodyOwned = match &self.shared {
            Some(s) => dec(&s.get(&bb)?, "block body")?,
            None => dec(&bb, "block body")?,
        };
        Ok(Some(Block {
            header,
            coinbase: body.coinbase,
            txs: body.txs,
        }))
    }

    /// The whole block index (parents before children), one row at a time into `f`:
    /// never all of it in memory at once beside the index being built (start-up peak).
    pub fn for_each_index_row<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(IndexRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut st = self
            .conn
            .prepare(
                "SELECT hash, header, work, status,
                    EXISTS (SELECT 1 FROM bodies WHERE bodies.hash = blocks.hash), seq
             FROM blocks ORDER BY height, seq",
            )
            .map_err(StoreError::from)?;
        let mut rows = st.query([]).map_err(StoreError::from)?;
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            f(index_row(r)?)?;
        }
        Ok(())
    }

    /// Rows in the block index (to size it before loading).
    pub fn index_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The whole block index, collected (tests).
    #[cfg(test)]
    pub fn load_index(&self) -> Result<Vec<IndexRow>> {
        let mut out = Vec::new();
        self.for_each_index_row(|r| {
            out.push(r);
            Ok::<(), StoreError>(())
        })?;
        Ok(out)
    }

    /// Main chain hashes by height, genesis first.
    pub fn load_main_chain(&self) -> Result<Vec<Hash>> {
        let mut st = self
            .conn
            .prepare("SELECT height, hash FROM main_chain ORDER BY height")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let h: i64 = r.get(0)?;
            if h as usize != out.len() {
                return Err(StoreError::Corrupt(format!("main chain gap at height {h}")));
            }
            out.push(hash_of(&r.get::<_, Vec<u8>>(1)?)?);
        }
        Ok(out)
    }

    /// All stored accounts.
    pub fn load_accounts(&self) -> Result<Vec<(Address, Account)>> {
        let mut st = self
            .conn
            .prepare("SELECT address, balance, nonce FROM accounts")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let a = Address(hash_of(&r.get::<_, Vec<u8>>(0)?)?.0);
            out.push((
                a,
                Account {
                    balance: r.get::<_, i64>(1)? as u64,
                    nonce: r.get::<_, i64>(2)? as u64,
                },
            ));
        }
        Ok(out)
    }

    /// The stored mempool, in the order it was added.
    pub fn load_mempool(&self) -> Result<Vec<Transaction>> {
        let mut st = self
            .conn
            .prepare("SELECT txid, tx FROM mempool ORDER BY seq")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let b = r.get::<_, Option<Vec<u8>>>(1)?;
            out.push(match (&self.shared, b) {
                (_, Some(b)) => dec(&b, "mempool tx")?,
                (Some(s), None) => dec(&s.tx(&hash_of(&r.get::<_, Vec<u8>>(0)?)?)?, "mempool tx")?,
                (None, None) => return Err(StoreError::Corrupt("mempool tx without bytes".into())),
            });
        }
        Ok(out)
    }

    /// Undo record of a connected block.
    pub fn get_undo(&self, hash: &Hash) -> Result<Option<Undo>> {
        let b: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT data FROM undo WHERE hash = ?1",
                [&hash.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        match (b, &self.shared) {
            (Some(key), Some(s)) => dec(&s.get(&key)?, "undo").map(Some),
            (b, _) => b.map(|b| dec(&b, "undo")).transpose(),
        }
    }

    /// Block containing a main-chain transaction.
    pub fn tx_block(&self, txid: &Hash) -> Result<Option<Hash>> {
        if let Some(s) = &self.shared {
            // The index is "in a block of the main chain": the blocks that hold it, on
            // this node's main chain. At most one is (a transaction cannot be mined twice).
            let mut st = self
                .conn
                .prepare_cached("SELECT 1 FROM main_chain WHERE hash = ?1")?;
            for b in s.tx_blocks(txid) {
                if st.exists([&b.0[..]])? {
                    return Ok(Some(b));
                }
            }
            return Ok(None);
        }
        let b: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT block FROM tx_index WHERE txid = ?1",
                [&txid.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        b.map(|b| hash_of(&b)).transpose()
    }

    /// Connect a block to the main chain: chain row, accounts, undo, tx index and
    /// mempool removals in one transaction.
    pub fn connect_block(&mut self, w: &ConnectWrite<'_>) -> Result<()> {
        let shared = self.shared.clone();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO main_chain(height, hash) VALUES (?1, ?2)",
                params![w.height as i64, &w.hash.0[..]],
            )?;
            write_accounts(tx, w.accounts)?;
            let undo = enc(w.undo)?;
            let key;
            let undo = match &shared {
                Some(s) => {
                    key = s.put(&undo);
                    &key[..]
                }
                None => &undo[..],
            };
            tx.execute(
                "INSERT INTO undo(hash, data) VALUES (?1, ?2)",
                params![&w.hash.0[..], undo],
            )?;
            if let Some(s) = &shared {
                // The main_chain row above is this node's index entry (see `tx_block`).
                s.note_txs(&w.hash, w.tx_ids);
                let mut mp = tx.prepare_cached("DELETE FROM mempool WHERE txid = ?1")?;
                for id in w.tx_ids {
                    mp.execute([&id.0[..]])?;
                }
                return Ok(());
            }
            {
                let mut ix =
                    tx.prepare_cached("INSERT INTO tx_index(txid, block) VALUES (?1, ?2)")?;
                let mut mp = tx.prepare_cached("DELETE FROM mempool WHERE txid = ?1")?;
                for id in w.tx_ids {
                    ix.execute(params![&id.0[..], &w.hash.0[..]])?;
                    mp.execute([&id.0[..]])?;
                }
            }
            Ok(())
        })
    }

    /// Disconnect the main-chain tip: chain row, accounts, undo and tx index, in one
    /// transaction.
    pub fn disconnect_block(&mut self, w: &DisconnectWrite<'_>) -> Result<()> {
        let shared = self.shared.is_some();
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM main_chain WHERE height = ?1 AND hash = ?2",
                params![w.height as i64, &w.hash.0[..]],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "block {} is not the main chain block at height {}",
                    w.hash, w.height
                )));
            }
            write_accounts(tx, w.accounts)?;
            tx.execute("DELETE FROM undo WHERE hash = ?1", [&w.hash.0[..]])?;
            if shared {
                return Ok(());
            }
            {
                let mut ix = tx.prepare_cached("DELETE FROM tx_index WHERE txid = ?1")?;
                for id in w.tx_ids {
                    ix.execute([&id.0[..]])?;
                }
            }
            Ok(())
        })
    }

    /// Add and remove mempool transactions in one transaction.
    pub fn update_mempool(&mut self, add: &[&Transaction], remove: &[Hash]) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut seq = match self.mempool_seq.get() {
            Some(s) => s,
            // Once per store: the table has no index on `seq`.
            None => self
                .conn
                .query_row("SELECT coalesce(max(seq), 0) FROM mempool", [], |r| {
                    r.get(0)
                })?,
        };
        self.write(|tx| {
            {
                let mut del = tx.prepare_cached("DELETE FROM mempool WHERE txid = ?1")?;
                for id in remove {
                    del.execute([&id.0[..]])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO mempool(txid, seq, tx) VALUES (?1, ?2, ?3)
                     ON CONFLICT(txid) DO NOTHING",
                )?;
                for t in add {
                    let bytes = enc(*t)?;
                    let id = t.id();
                    seq += 1;
                    // In a simulation every node holds the same transactions: once, by id.
                    match &shared {
                        Some(s) => {
                            s.put_tx(&id, &bytes);
                            ins.execute(params![&id.0[..], seq, None::<&[u8]>])?
                        }
                        None => ins.execute(params![&id.0[..], seq, bytes])?,
                    };
                }
            }
            Ok(())
        })?;
        // Not advanced by a failed write (its rows are gone); gaps are harmless.
        self.mempool_seq.set(Some(seq));
        Ok(())
    }
}

fn index_row(r: &rusqlite::Row<'_>) -> Result<IndexRow> {
    let hash = hash_of(&r.get::<_, Vec<u8>>(0)?)?;
    let header: Header = dec(&r.get::<_, Vec<u8>>(1)?, "header")?;
    if header.hash() != hash {
        return Err(StoreError::Corrupt(format!("header of block {hash}")));
    }
    Ok(IndexRow {
        hash,
        header,
        work: work_of(&r.get::<_, Vec<u8>>(2)?)?,
        status: BlockStatus::from_i64(r.get(3)?)?,
        has_body: r.get(4)?,
        seq: r.get::<_, i64>(5)? as u64,
    })
}

#[cfg(test)]
mod tests;
