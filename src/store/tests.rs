use super::*;

#[test]
fn meta_round_trip() {
    let mut s = Store::open_in_memory().unwrap();
    assert_eq!(s.get_meta("x").unwrap(), None);
    s.set_meta("x", b"one").unwrap();
    s.set_meta("x", b"two").unwrap();
    assert_eq!(s.get_meta("x").unwrap(), Some(b"two".to_vec()));
}

#[test]
fn peers_upsert_and_list() {
    let mut s = Store::open_in_memory().unwrap();
    s.upsert_peer("tcp://a:1", 10, "{}").unwrap();
    s.upsert_peer("tcp://b:1", 20, "").unwrap();
    s.upsert_peer("tcp://a:1", 30, "{\"x\":1}").unwrap();
    assert_eq!(
        s.peers().unwrap(),
        vec![
            ("tcp://a:1".to_string(), 30, "{\"x\":1}".to_string()),
            ("tcp://b:1".to_string(), 20, String::new()),
        ]
    );
}

#[test]
fn file_store_uses_wal_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    let mode: String = s
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let fk: i64 = s
        .conn()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn refuses_newer_schema_and_reopens_current() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let mut s = Store::open(&path).unwrap();
        s.set_meta("k", b"v").unwrap();
    }
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_meta("k").unwrap(), Some(b"v".to_vec()));
        s.conn()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Store::open(&path) {
        Err(e @ StoreError::TooNew { .. }) => assert!(e.to_string().contains("newer")),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn bans_put_replace_delete_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let row = |key: &str, until_ms| BanRow {
        key: key.into(),
        until_ms,
        reason: "r".into(),
        created_ms: 1,
    };
    {
        let mut s = Store::open(&path).unwrap();
        s.ban_put(&row("10.0.0.0/8", 100)).unwrap();
        s.ban_put(&row("N0CALL-2", 50)).unwrap();
        s.ban_put(&row("N0CALL-2", 500)).unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    assert_eq!(
        s.bans_load().unwrap(),
        vec![row("10.0.0.0/8", 100), row("N0CALL-2", 500)]
    );
    assert_eq!(s.bans_expire(100).unwrap(), 1);
    assert!(s.ban_delete("N0CALL-2").unwrap());
    assert!(!s.ban_delete("N0CALL-2").unwrap());
    assert!(s.bans_load().unwrap().is_empty());
}

/// The writes of one input become durable together, in one commit, and not before it
/// ends: another reader of the file (a crash, as far as the file is concerned) sees none
/// of them until then.
#[test]
fn an_input_commits_its_writes_once_and_only_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut s = Store::open(&path).unwrap();
    let before = s.commits();
    s.begin_input();
    s.set_meta("a", b"1").unwrap();
    s.upsert_peer("tcp://a:1", 10, "").unwrap();
    s.set_meta("b", b"2").unwrap();
    assert_eq!(
        s.get_meta("b").unwrap(),
        Some(b"2".to_vec()),
        "own writes visible"
    );
    let other = Store::open(&path).unwrap();
    assert_eq!(
        other.get_meta("a").unwrap(),
        None,
        "durable before the input ended"
    );
    s.end_input().unwrap();
    assert_eq!(s.commits() - before, 1, "one commit for the input");
    assert_eq!(other.get_meta("a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(other.peers().unwrap().len(), 1);
    // An input that writes nothing commits nothing; outside an input a write is its own
    // commit, as before.
    s.begin_input();
    s.end_input().unwrap();
    assert_eq!(s.commits() - before, 1);
    s.set_meta("c", b"3").unwrap();
    assert_eq!(s.commits() - before, 2);
    assert_eq!(other.get_meta("c").unwrap(), Some(b"3".to_vec()));
}

/// A write that fails fails its whole input, however the caller handled the error: the
/// input's other writes are rolled back, and `end_input` reports the failure.
#[test]
fn a_failed_write_rolls_back_its_input_and_is_reported() {
    let mut s = Store::open_in_memory().unwrap();
    s.conn()
        .execute_batch(
            "CREATE TRIGGER no_bans BEFORE INSERT ON bans
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
        )
        .unwrap();
    s.begin_input();
    s.set_meta("a", b"1").unwrap();
    let row = BanRow {
        key: "N0CALL-2".into(),
        until_ms: 1,
        reason: "r".into(),
        created_ms: 1,
    };
    assert!(s.ban_put(&row).is_err());
    s.set_meta("b", b"2").unwrap();
    match s.end_input() {
        Err(e @ StoreError::WriteFailed(_)) => {
            assert!(e.to_string().contains("injected fault"), "{e}")
        }
        other => panic!("the failure was not reported: {other:?}"),
    }
    assert_eq!(
        s.get_meta("a").unwrap(),
        None,
        "the input was not rolled back"
    );
    assert_eq!(
        s.get_meta("b").unwrap(),
        None,
        "the input was not rolled back"
    );
    // The next input starts clean.
    s.begin_input();
    s.set_meta("c", b"3").unwrap();
    s.end_input().unwrap();
    assert_eq!(s.get_meta("c").unwrap(), Some(b"3".to_vec()));
}

/// A store of schema 3 (bodies in `blocks`) opens with its blocks intact: the bodies move
/// to their own table, and the index knows which are stored.
#[test]
fn bodies_move_to_their_own_table_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let genesis = crate::chain::params::regtest().genesis;
    let hash = genesis.hash();
    // A header-only child.
    let child = Header {
        height: 1,
        prev: hash,
        ..genesis.header.clone()
    };
    let body = enc(&BodyRef {
        coinbase: &genesis.coinbase,
        txs: &genesis.txs,
    })
    .unwrap();
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute(
            "INSERT INTO blocks(hash, height, prev, work, header, body, status, seq)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, 1, 0), (?6, 1, ?1, ?3, ?7, NULL, 0, 1)",
            params![
                &hash.0[..],
                &genesis.header.prev.0[..],
                &1u128.to_be_bytes()[..],
                enc(&genesis.header).unwrap(),
                body,
                &child.hash().0[..],
                enc(&child).unwrap(),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get_block(&hash).unwrap(), Some(genesis));
    assert_eq!(s.get_block(&child.hash()).unwrap(), None);
    let bodies: Vec<bool> = s.load_index().unwrap().iter().map(|r| r.has_body).collect();
    assert_eq!(bodies, vec![true, false]);
}

/// Stores of simulated nodes share one history: each reads back its blocks and undo
/// records (the bytes live once, outside its database), and finds a transaction's block
/// on its own main chain only, before and after a reorg.
#[test]
fn stores_sharing_a_history_each_follow_their_own_main_chain() {
    use crate::chain::{params, pow, BlockOutcome, Chain, Transaction};
    let shared = SharedHistory::default();
    let p = params::regtest();
    let open = || Chain::open(p.clone(), Store::open_in_memory_shared(&shared).unwrap()).unwrap();
    let (mut a, mut b) = (open(), open());
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let me = crate::keys::address(&key);
    let g = p.genesis.header.time;
    let mine = |c: &mut Chain, to: Address, t: u64| {
        let mut block = c.block_template(to, g + t);
        while !pow::mine(&mut block.header, 1_000_000) {}
        let out = c.submit_block(block.clone(), g + t).unwrap();
        assert!(matches!(out, BlockOutcome::Connected { .. }), "{out:?}");
        block
    };
    let first = mine(&mut a, me, 60);
    b.submit_block(first.clone(), g + 60).unwrap();
    let tx = Transaction::sign(p.network_id(), &key, Address([9; 32]), 5, 1000, 0);
    let id = tx.id();
    a.submit_tx(tx, g + 61).unwrap();
    let with_tx = mine(&mut a, Address([1; 32]), 120);
    assert!(with_tx.txs.iter().any(|t| t.id() == id));
    assert_eq!(a.store().tx_block(&id).unwrap(), Some(with_tx.hash()));
    assert_eq!(
        b.store().tx_block(&id).unwrap(),
        None,
        "b never saw the block"
    );
    assert_eq!(
        a.store()
            .get_block(&with_tx.hash())
            .unwrap()
            .map(|x| x.hash()),
        Some(with_tx.hash())
    );
    assert!(a.store().get_undo(&with_tx.hash()).unwrap().is_some());
    // b mines a heavier fork without the transaction; a follows it.
    let f1 = mine(&mut b, Address([2; 32]), 130);
    let f2 = mine(&mut b, Address([2; 32]), 140);
    a.submit_block(f1, g + 150).unwrap();
    a.submit_block(f2.clone(), g + 150).unwrap();
    assert_eq!(a.tip().hash, f2.hash());
    assert_eq!(
        a.store().tx_block(&id).unwrap(),
        None,
        "its block left a's main chain"
    );
    // Neither database holds a body or an undo record itself, only their digests.
    for c in [&a, &b] {
        let big: i64 = c
            .store()
            .conn()
            .query_row(
                "SELECT (SELECT count(*) FROM bodies WHERE length(body) != 32)
                      + (SELECT count(*) FROM undo WHERE length(data) != 32)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(big, 0);
    }
    assert!(shared.bytes() > 0);
}

/// A store of schema 4 (each outbox row held its payload) keeps every outbox item on
/// upgrade, with its payload, now held once per transaction; the payload goes with the
/// last item that names it.
#[test]
fn outbox_payloads_move_to_one_row_per_transaction_on_upgrade() {
    use crate::outbox::{Dest, OutItem, State};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (t, u, b) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..4] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        // Transaction t for two peers, u for any peer, block b for one peer; ids as a
        // node that delivered items before would have them.
        let row = "INSERT INTO outbox(id, dest, kind, hash, payload, priority, created_ms,
                   attempts, next_attempt_ms, expires_ms, state)
                   VALUES (?1, ?2, ?3, ?4, ?5, 1, 10, ?6, 20, 30, ?7)";
        let p = |id: i64, dest: Option<&[u8]>, kind: i64, hash: &[u8], pl: Option<&[u8]>, state| {
            tx.execute(row, params![id, dest, kind, hash, pl, id % 3, state])
                .unwrap();
        };
        p(4, Some(&[7; 32]), 1, &t, Some(b"tee"), 0);
        p(7, Some(&[8; 32]), 1, &t, Some(b"tee"), 1);
        p(9, None, 1, &u, Some(b"you"), 3);
        p(12, Some(&[7; 32]), 0, &b, None, 0);
        tx.commit().unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    let got: Vec<_> = s
        .outbox_load()
        .unwrap()
        .into_iter()
        .map(|it| (it.id, it.dest, it.item, it.payload, it.attempts, it.state))
        .collect();
    let pl = |b: &[u8]| Some(std::sync::Arc::<[u8]>::from(b));
    assert_eq!(
        got,
        vec![
            (
                4,
                Dest::Peer([7; 32]),
                OutItem::Tx(Hash(t)),
                pl(b"tee"),
                1,
                State::Pending
            ),
            (
                7,
                Dest::Peer([8; 32]),
                OutItem::Tx(Hash(t)),
                pl(b"tee"),
                1,
                State::Held
            ),
            (
                9,
                Dest::Any,
                OutItem::Tx(Hash(u)),
                pl(b"you"),
                0,
                State::Expired
            ),
            (
                12,
                Dest::Peer([7; 32]),
                OutItem::Block(Hash(b)),
                None,
                0,
                State::Pending
            ),
        ]
    );
    let payloads = |s: &Store| -> i64 {
        s.conn()
            .query_row("SELECT count(*) FROM outbox_payloads", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(payloads(&s), 2, "one payload per transaction");
    s.outbox_remove(4, true).unwrap();
    assert_eq!(payloads(&s), 2, "item 7 still carries t");
    assert_eq!(
        s.outbox_load().unwrap()[0].payload,
        pl(b"tee"),
        "item 7 keeps its payload"
    );
    s.outbox_remove(7, true).unwrap();
    s.outbox_remove(9, false).unwrap();
    assert_eq!(payloads(&s), 0, "no payload outlives its items");
    assert_eq!(s.outbox_load().unwrap().len(), 1);
}

/// Stores sharing a history hold a transaction's bytes once, however many mempools and
/// outbox items carry it, and each reads it back.
#[test]
fn stores_sharing_a_history_hold_relayed_transactions_once() {
    use crate::chain::{params, Transaction};
    use crate::outbox::{Dest, Item, OutItem, State};
    let shared = SharedHistory::default();
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let net = params::regtest().network_id();
    let tx = Transaction::sign(net, &key, crate::keys::address(&key), 1, 1000, 0);
    let bytes = enc(&tx).unwrap();
    let mut stores: Vec<Store> = (0..3)
        .map(|_| Store::open_in_memory_shared(&shared).unwrap())
        .collect();
    let empty = shared.bytes();
    for (i, s) in stores.iter_mut().enumerate() {
        s.update_mempool(&[&tx], &[]).unwrap();
        for peer in 0..2u8 {
            s.outbox_insert(&Item {
                id: 0,
                dest: Dest::Peer([peer + 10 * i as u8; 32]),
                item: OutItem::Tx(tx.id()),
                payload: Some(bytes.clone().into()),
                priority: 1,
                created_ms: 0,
                attempts: 0,
                next_attempt_ms: 0,
                expires_ms: 1,
                state: State::Pending,
            })
            .unwrap();
        }
    }
    // The bytes and their digest, and the id that finds them.
    assert_eq!(
        shared.bytes() - empty,
        bytes.len() as u64 + 32 + 64,
        "held once"
    );
    for s in &stores {
        // The node's own tables hold the digest, or (the mempool) the id alone.
        let len: i64 = s
            .conn()
            .query_row("SELECT length(payload) FROM outbox_payloads", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(len, 32);
        let tx_col: Option<Vec<u8>> = s
            .conn()
            .query_row("SELECT tx FROM mempool", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tx_col, None);
        assert_eq!(s.load_mempool().unwrap(), vec![tx.clone()]);
        let items = s.outbox_load().unwrap();
        assert_eq!(items.len(), 2);
        for it in items {
            assert_eq!(it.payload.as_deref(), Some(&bytes[..]));
        }
    }
}

/// A store of schema 5 keeps every account on upgrade, now in a table keyed by address
/// alone.
#[test]
fn accounts_keep_their_values_when_keyed_by_address_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let rows: Vec<([u8; 32], i64, i64)> = (0..50u8)
        .map(|i| ([i; 32], i64::from(i) * 1000 - 1, i64::from(i) % 7))
        .collect();
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..5] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 5).unwrap();
        for (a, b, n) in &rows {
            tx.execute(
                "INSERT INTO accounts(address, balance, nonce) VALUES (?1, ?2, ?3)",
                params![&a[..], b, n],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let mut got: Vec<([u8; 32], i64, i64)> = s
        .load_accounts()
        .unwrap()
        .into_iter()
        .map(|(a, acc)| (a.0, acc.balance as i64, acc.nonce as i64))
        .collect();
    got.sort();
    assert_eq!(got, rows);
    assert!(
        !is_rowid_table(&s, "accounts"),
        "accounts still a rowid table"
    );
}

/// A simulated node's store, fresh or copied, holds no lookaside memory (48 KB a
/// connection, paid once per node); an ordinary store keeps SQLite's default.
#[test]
fn stores_of_simulated_nodes_hold_no_lookaside_memory() {
    fn lookaside_high(s: &Store) -> i32 {
        let (mut cur, mut high) = (0, 0);
        // SAFETY: an open handle owned by the store, and two valid out-pointers.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                s.conn().handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_LOOKASIDE_USED,
                &mut cur,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        high
    }
    let shared = SharedHistory::default();
    let mut fresh = Store::open_in_memory_shared(&shared).unwrap();
    fresh.set_meta("k", b"v").unwrap();
    let copy = fresh.copy_shared().unwrap().unwrap();
    assert_eq!(copy.get_meta("k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(lookaside_high(&fresh), 0);
    assert_eq!(lookaside_high(&copy), 0);
    let mut plain = Store::open_in_memory().unwrap();
    plain.set_meta("k", b"v").unwrap();
    assert!(lookaside_high(&plain) > 0, "the measure measures");
}

/// A database at schema `v` (no store opened it since), for upgrade tests.
fn schema_at(path: &Path, v: usize) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for sql in &schema::MIGRATIONS[..v] {
        tx.execute_batch(sql).unwrap();
    }
    tx.pragma_update(None, "user_version", v as i64).unwrap();
    tx.commit().unwrap();
    conn
}

/// Seen entries of schema 6 rows, in the order remembered: (sender, msg_id, hash).
fn old_seen_rows() -> Vec<([u8; 32], u64, [u8; 32])> {
    (0..30u8)
        .map(|i| ([i % 3; 32], u64::from(i) * 7, [i; 32]))
        .collect()
}

fn put_old_seen(conn: &Connection, rows: &[([u8; 32], u64, [u8; 32])]) {
    for (sender, msg_id, hash) in rows {
        conn.execute(
            "INSERT INTO seen(sender, msg_id, hash) VALUES (?1, ?2, ?3)",
            params![&sender[..], *msg_id as i64, &hash[..]],
        )
        .unwrap();
    }
}

/// A store of schema 6 keeps its seen-set on upgrade, each sender named once, and still
/// forgets the oldest entries first.
#[test]
fn the_seen_set_keeps_its_entries_and_order_when_senders_are_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let rows = old_seen_rows();
    put_old_seen(&schema_at(&path, 6), &rows);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.seen_len().unwrap(), 30);
    for (sender, msg_id, hash) in &rows {
        assert!(s.seen_contains(sender, *msg_id, hash).unwrap());
        assert!(!s.seen_contains(sender, *msg_id, &[99; 32]).unwrap());
        assert!(!s.seen_contains(sender, *msg_id + 1, hash).unwrap());
    }
    let senders: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM seen_senders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(senders, 3);
    // One more entry, keeping 25: the six oldest go.
    s.seen_insert(&[7; 32], 1, &[7; 32], 25).unwrap();
    assert_eq!(s.seen_len().unwrap(), 25);
    for (i, (sender, msg_id, hash)) in rows.iter().enumerate() {
        assert_eq!(
            s.seen_contains(sender, *msg_id, hash).unwrap(),
            i >= 6,
            "{i}"
        );
    }
    assert!(s.seen_contains(&[7; 32], 1, &[7; 32]).unwrap());
}

/// `reindex` carries the seen-set of a store of schema 6 as of one of this schema.
#[test]
fn the_seen_set_is_carried_from_old_and_new_stores() {
    let dir = tempfile::tempdir().unwrap();
    let rows = old_seen_rows();
    let old6 = schema_at(&dir.path().join("old6.db"), 6);
    put_old_seen(&old6, &rows);
    let mut now = Store::open(&dir.path().join("now.db")).unwrap();
    for (sender, msg_id, hash) in &rows {
        now.seen_insert(sender, *msg_id, hash, 1000).unwrap();
    }
    for old in [&old6, now.conn()] {
        let mut fresh = Store::open_in_memory().unwrap();
        let carried = fresh.carry_from(old).unwrap();
        assert_eq!(carried.seen, 30, "{:?}", carried.problems);
        for (sender, msg_id, hash) in &rows {
            assert!(fresh.seen_contains(sender, *msg_id, hash).unwrap());
        }
    }
}

/// A sender none of whose messages is remembered any more is forgotten too, when a new
/// one comes: the senders' table is bounded by the seen-set.
#[test]
fn senders_forgotten_by_the_seen_set_leave_its_table() {
    let mut s = Store::open_in_memory().unwrap();
    for sender in 0..10u8 {
        for m in 0..3 {
            s.seen_insert(&[sender; 32], m, &[m as u8; 32], 4).unwrap();
        }
    }
    let senders: Vec<Vec<u8>> = s
        .conn()
        .prepare("SELECT node FROM seen_senders ORDER BY node")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    // Sender 7 still had an entry when 9 came (and pushed it out).
    assert_eq!(senders, vec![vec![7; 32], vec![8; 32], vec![9; 32]]);
    assert!(s.seen_contains(&[9; 32], 2, &[2; 32]).unwrap());
    assert!(s.seen_contains(&[8; 32], 2, &[2; 32]).unwrap());
    assert!(!s.seen_contains(&[8; 32], 0, &[0; 32]).unwrap());
}

/// What a seen entry costs in a simulated node's database: the seen-set is the largest
/// table of a node that has run for hours.
#[test]
fn a_seen_entry_costs_under_45_bytes() {
    let shared = SharedHistory::default();
    let mut s = Store::open_in_memory_shared(&shared).unwrap();
    let before = page_count(&s);
    let n = 4000u64;
    for i in 0..n {
        let hash = *blake3::hash(&i.to_le_bytes()).as_bytes();
        s.seen_insert(&[(i % 8) as u8; 32], 1000 + i / 8, &hash, 50_000)
            .unwrap();
    }
    let per_entry = (page_count(&s) - before) as f64 * 1024.0 / n as f64;
    assert!(per_entry < 45.0, "{per_entry:.0} bytes an entry");
}

fn signed_txs(n: u64) -> Vec<crate::chain::Transaction> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let net = crate::chain::params::regtest().network_id();
    (0..n)
        .map(|i| crate::chain::Transaction::sign(net, &key, crate::keys::address(&key), 1, 1000, i))
        .collect()
}

/// A store of schema 7 keeps its mempool on upgrade, in the order it was added (not the
/// order of the ids that now key it), and adds after it.
#[test]
fn the_mempool_keeps_its_order_when_keyed_by_txid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let txs = signed_txs(12);
    {
        let conn = schema_at(&path, 7);
        for t in &txs[..10] {
            conn.execute(
                "INSERT INTO mempool(txid, tx) VALUES (?1, ?2)",
                params![&t.id().0[..], enc(t).unwrap()],
            )
            .unwrap();
        }
        // `reindex` reads an old store as it is.
        assert_eq!(old_mempool(&conn, &mut Carried::default()), txs[..10]);
    }
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.load_mempool().unwrap(), txs[..10].to_vec());
    s.update_mempool(&[&txs[10], &txs[11]], &[txs[3].id()])
        .unwrap();
    let mut want = txs.clone();
    want.remove(3);
    assert_eq!(s.load_mempool().unwrap(), want);
    drop(s);
    // Reopened, it goes on after the last one.
    let mut s = Store::open(&path).unwrap();
    s.update_mempool(&[&txs[3]], &[]).unwrap();
    want.push(txs[3].clone());
    assert_eq!(s.load_mempool().unwrap(), want);
    let mut carried = Carried::default();
    assert_eq!(old_mempool(s.conn(), &mut carried), want);
    assert!(
        !is_rowid_table(&s, "mempool"),
        "mempool still a rowid table"
    );
}

/// What a mempool transaction costs in a simulated node's database (every node holds
/// every pending payment when a split network heals).
#[test]
fn a_shared_mempool_transaction_costs_under_50_bytes() {
    let shared = SharedHistory::default();
    let mut s = Store::open_in_memory_shared(&shared).unwrap();
    let before = page_count(&s);
    let txs = signed_txs(2000);
    for t in &txs {
        s.update_mempool(&[t], &[]).unwrap();
    }
    let per_tx = (page_count(&s) - before) as f64 * 1024.0 / txs.len() as f64;
    assert!(per_tx < 50.0, "{per_tx:.0} bytes a transaction");
    assert_eq!(s.load_mempool().unwrap(), txs);
}

/// A simulated node's store, fresh or copied, gives back the pages it frees: a thousand
/// nodes would otherwise each keep the high-water mark of their mempool and outbox.
#[test]
fn stores_of_simulated_nodes_give_freed_pages_back() {
    let shared = SharedHistory::default();
    let template = Store::open_in_memory_shared(&shared).unwrap();
    let txs = signed_txs(500);
    let ids: Vec<Hash> = txs.iter().map(|t| t.id()).collect();
    let all: Vec<&crate::chain::Transaction> = txs.iter().collect();
    for mut s in [
        Store::open_in_memory_shared(&shared).unwrap(),
        template.copy_shared().unwrap().unwrap(),
    ] {
        let count = |s: &Store, what: &str| -> i64 {
            s.conn()
                .query_row(&format!("PRAGMA {what}"), [], |r| r.get(0))
                .unwrap()
        };
        let before = count(&s, "page_count");
        s.update_mempool(&all, &[]).unwrap();
        assert!(count(&s, "page_count") > before + 10);
        s.update_mempool(&[], &ids).unwrap();
        assert_eq!(count(&s, "freelist_count"), 0);
        assert!(count(&s, "page_count") <= before + 1);
    }
}

/// Is `table` of `s` a rowid table (not `WITHOUT ROWID`)?
fn is_rowid_table(s: &Store, table: &str) -> bool {
    s.conn()
        .query_row(
            "SELECT sql NOT LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap()
}

/// Outbox rows of schema 8 (each naming its peer by node id), as (id, dest, item, state).
fn put_old_outbox(conn: &Connection) -> Vec<(u64, crate::outbox::Dest, crate::outbox::OutItem)> {
    use crate::outbox::{Dest, OutItem};
    let rows = vec![
        (4, Dest::Peer([7; 32]), OutItem::Tx(Hash([1; 32]))),
        (7, Dest::Peer([8; 32]), OutItem::Tx(Hash([1; 32]))),
        (9, Dest::Any, OutItem::Tx(Hash([2; 32]))),
        (12, Dest::Peer([7; 32]), OutItem::Block(Hash([3; 32]))),
    ];
    for (id, dest, item) in &rows {
        let dest = match dest {
            Dest::Peer(n) => Some(&n[..]),
            Dest::Any => None,
        };
        let (kind, hash) = match item {
            OutItem::Block(h) => (0, h),
            OutItem::Tx(h) => (1, h),
        };
        conn.execute(
            "INSERT INTO outbox(id, dest, kind, hash, priority, created_ms, attempts,
                                next_attempt_ms, expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, 1, 10, 0, 20, 30, 0)",
            params![*id as i64, dest, kind, &hash.0[..]],
        )
        .unwrap();
        if kind == 1 {
            conn.execute(
                "INSERT INTO outbox_payloads(hash, payload, refs) VALUES (?1, x'aa', 1)
                 ON CONFLICT(hash) DO UPDATE SET refs = refs + 1",
                [&hash.0[..]],
            )
            .unwrap();
        }
    }
    // Items up to 20 were queued, the rest delivered: their ids stay used.
    conn.execute(
        "UPDATE sqlite_sequence SET seq = 20 WHERE name = 'outbox'",
        [],
    )
    .unwrap();
    rows
}

/// A store of schema 8 keeps its outbox items on upgrade (ids, destinations, payloads),
/// each peer now named once in `outbox_dests`, and never hands out a used id again;
/// `reindex` carries the outbox of such a store and of one of this schema alike.
#[test]
fn outbox_items_keep_their_ids_and_peers_when_peers_are_named_once() {
    use crate::outbox::{Dest, Item, OutItem, State};
    let dir = tempfile::tempdir().unwrap();
    let view = |items: Vec<Item>| -> Vec<(u64, Dest, OutItem, bool)> {
        items
            .into_iter()
            .map(|it| (it.id, it.dest, it.item, it.payload.is_some()))
            .collect()
    };
    let path = dir.path().join("s.db");
    let old8 = schema_at(&dir.path().join("old8.db"), 8);
    let rows = put_old_outbox(&old8);
    let want: Vec<_> = rows
        .iter()
        .map(|(id, dest, item)| (*id, *dest, *item, matches!(item, OutItem::Tx(_))))
        .collect();
    put_old_outbox(&schema_at(&path, 8));
    let mut s = Store::open(&path).unwrap();
    assert_eq!(view(s.outbox_load().unwrap()), want);
    let dests: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM outbox_dests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dests, 2, "each peer once");
    let new = Item {
        id: 0,
        dest: Dest::Peer([9; 32]),
        item: OutItem::Tx(Hash([1; 32])),
        payload: Some(vec![0xaa].into()),
        priority: 1,
        created_ms: 10,
        attempts: 0,
        next_attempt_ms: 20,
        expires_ms: 30,
        state: State::Pending,
    };
    for old in [&old8, s.conn()] {
        let mut fresh = Store::open_in_memory().unwrap();
        let carried = fresh.carry_from(old).unwrap();
        assert_eq!(carried.outbox, 4, "{:?}", carried.problems);
        assert_eq!(view(fresh.outbox_load().unwrap()), want);
        assert_eq!(fresh.outbox_insert(&new).unwrap(), 21);
    }
    assert_eq!(s.outbox_insert(&new).unwrap(), 21, "ids are never reused");
    // A peer owed nothing any more leaves the table when a new one comes.
    for id in [4, 12, 21] {
        s.outbox_remove(id, true).unwrap();
    }
    s.outbox_insert(&Item {
        dest: Dest::Peer([5; 32]),
        ..new
    })
    .unwrap();
    let mut nodes: Vec<Vec<u8>> = s
        .conn()
        .prepare("SELECT node FROM outbox_dests ORDER BY node")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    nodes.sort();
    assert_eq!(nodes, vec![vec![5; 32], vec![8; 32]]);
}

/// What an outbox item costs in a simulated node's database: a gateway holds thousands
/// for the peers of its island while the internet path is down.
#[test]
fn an_outbox_item_costs_under_90_bytes() {
    use crate::outbox::{Dest, Item, OutItem, State};
    let shared = SharedHistory::default();
    let mut s = Store::open_in_memory_shared(&shared).unwrap();
    let before = page_count(&s);
    let n = 4000u64;
    for i in 0..n {
        // Four peers, each transaction owed to all of them, times as a running node's.
        let hash = *blake3::hash(&(i / 4).to_le_bytes()).as_bytes();
        let now = 1_800_000_000_000 + i * 1000;
        s.outbox_insert(&Item {
            id: 0,
            dest: Dest::Peer([(i % 4) as u8; 32]),
            item: OutItem::Tx(Hash(hash)),
            payload: None,
            priority: 1,
            created_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            expires_ms: now + crate::outbox::EXPIRY_MS,
            state: State::Pending,
        })
        .unwrap();
    }
    let per_item = (page_count(&s) - before) as f64 * 1024.0 / n as f64;
    assert!(per_item < 90.0, "{per_item:.0} bytes an item");
}

/// Pages in a store's database.
fn page_count(s: &Store) -> i64 {
    s.conn()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap()
}
