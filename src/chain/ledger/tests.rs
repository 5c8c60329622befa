use super::*;
use crate::chain::merkle;
use crate::chain::params;
use crate::chain::state::apply_changes;
use crate::chain::types::{Coinbase, Header};
use crate::chain::validate;
use crate::chain::Sig;
use ed25519_dalek::SigningKey;

const T0: u64 = 1_793_491_200;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn addr(i: u8) -> Address {
    Address(key(i).verifying_key().to_bytes())
}

fn new_chain() -> Chain {
    Chain::open(params::regtest(), Store::open_in_memory().unwrap()).unwrap()
}

fn tx(c: &Chain, from: u8, to: u8, amount: u64, fee: u64, nonce: u64) -> Transaction {
    Transaction::sign(
        c.params().network_id(),
        &key(from),
        addr(to),
        amount,
        fee,
        nonce,
    )
}

/// A mined block on `parent` paying `miner`, with `txs`, at `time`.
fn block_on(c: &Chain, parent: Hash, miner: u8, txs: Vec<Transaction>, time: u64) -> Block {
    block_after(c.params(), &c.header(&parent).unwrap(), miner, txs, time)
}

/// A mined block after the header `p`.
fn block_after(
    params: &NetworkParams,
    p: &Header,
    miner: u8,
    txs: Vec<Transaction>,
    time: u64,
) -> Block {
    let height = p.height + 1;
    let fees: u64 = txs.iter().map(|t| t.fee).sum();
    let coinbase = Coinbase {
        height,
        to: addr(miner),
        amount: params.subsidy(height) + fees,
    };
    let mut b = Block {
        header: Header {
            version: 1,
            prev: p.hash(),
            merkle_root: Hash::ZERO,
            time,
            bits: params.pow_limit_bits,
            nonce: 0,
            height,
        },
        coinbase,
        txs,
    };
    remine(&mut b);
    b
}

/// Recompute the merkle root and grind a valid nonce.
fn remine(b: &mut Block) {
    b.header.merkle_root = merkle::root(&b.leaf_ids());
    assert!(pow::mine(&mut b.header, 1_000_000));
}

/// Mine the chain's template and submit it.
fn mine_tip(c: &mut Chain, miner: u8) -> Block {
    let now = c.tip().time + 10;
    let mut b = c.block_template(addr(miner), now);
    assert!(pow::mine(&mut b.header, 1_000_000));
    let out = c.submit_block(b.clone(), now).unwrap();
    assert!(matches!(out, BlockOutcome::Connected { .. }), "{out:?}");
    b
}

/// Build `n` blocks on `parent` (not submitted), miner `miner`, times after `t`.
fn branch(c: &Chain, parent: Hash, miner: u8, n: usize, t: u64) -> Vec<Block> {
    // Headers of the branch must be known to compute children, so build by hand.
    let mut out: Vec<Block> = Vec::new();
    let mut prev = c.header(&parent).unwrap();
    for i in 0..n {
        let height = prev.height + 1;
        let coinbase = Coinbase {
            height,
            to: addr(miner),
            amount: c.params().subsidy(height),
        };
        let mut b = Block {
            header: Header {
                version: 1,
                prev: prev.hash(),
                merkle_root: Hash::ZERO,
                time: t + i as u64 + 1,
                bits: c.params().pow_limit_bits,
                nonce: 0,
                height,
            },
            coinbase,
            txs: vec![],
        };
        remine(&mut b);
        prev = b.header.clone();
        out.push(b);
    }
    out
}

#[test]
fn opens_with_genesis() {
    let c = new_chain();
    let g = params::regtest().genesis_hash();
    assert_eq!(c.tip().hash, g);
    assert_eq!(c.tip().height, 0);
    assert_eq!(c.best_header().hash, g);
    assert_eq!(c.locator(), vec![g]);
    assert_eq!(c.main_hash_at(0), Some(g));
    assert!(c.has_block(&g));
    assert_eq!(c.next_bits(), 0x207f_ffff);
}

#[test]
fn mines_and_pays_coinbase() {
    let mut c = new_chain();
    for _ in 0..3 {
        mine_tip(&mut c, 1);
    }
    assert_eq!(c.tip().height, 3);
    assert_eq!(c.account(&addr(1)).balance, 3 * c.params().subsidy(1));
    let b = c.block(&c.tip().hash).unwrap().unwrap();
    assert_eq!(b.header.height, 3);
    assert_eq!(
        c.submit_block(b, T0 + 100).unwrap(),
        BlockOutcome::Duplicate
    );
}

#[test]
fn tx_flow_mempool_template_confirm() {
    let mut c = new_chain();
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 8); // block 1's coinbase matures
    let t = tx(&c, 1, 2, 1000, 2000, 0);
    let id = t.id();
    assert_eq!(c.submit_tx(t.clone(), T0).unwrap(), TxOutcome::Accepted);
    assert_eq!(c.submit_tx(t.clone(), T0).unwrap(), TxOutcome::Duplicate);
    assert_eq!(c.next_nonce(&addr(1)), 1);
    assert_eq!(c.find_tx(&id).unwrap(), Some((t.clone(), None)));
    let b = mine_tip(&mut c, 3);
    assert_eq!(b.txs, vec![t.clone()]);
    assert_eq!(b.coinbase.amount, c.params().subsidy(3) + 2000);
    assert_eq!(c.mempool_len(), 0);
    assert_eq!(c.account(&addr(2)).balance, 1000);
    assert_eq!(
        c.account(&addr(1)),
        Account {
            balance: c.params().subsidy(1) - 3000,
            nonce: 1
        }
    );
    assert_eq!(
        c.find_tx(&id).unwrap(),
        Some((t.clone(), Some((b.hash(), 3))))
    );
    assert_eq!(c.submit_tx(t, T0).unwrap(), TxOutcome::Duplicate);
}

#[test]
fn headers_and_locator() {
    let mut c = new_chain();
    let blocks: Vec<Block> = (0..30).map(|_| mine_tip(&mut c, 1)).collect();
    let loc = c.locator();
    assert_eq!(loc[0], c.tip().hash);
    assert_eq!(*loc.last().unwrap(), params::regtest().genesis_hash());
    assert_eq!(loc[9], blocks[30 - 10].hash());
    assert!(loc.len() < 20);
    // A peer at height 5 gets headers 6.. on request.
    let hs = c.headers_after(&[blocks[4].hash()], None, 10);
    assert_eq!(hs.len(), 10);
    assert_eq!(hs[0], blocks[5].header);
    let hs = c.headers_after(&[Hash([9; 32])], Some(blocks[2].hash()), 100);
    assert_eq!(hs.len(), 3);
    // Another node syncs headers first, then bodies.
    let mut d = new_chain();
    let all: Vec<Header> = c.headers_after(&d.locator(), None, 1000);
    assert_eq!(d.accept_headers(&all, T0 + 1000).unwrap(), 30);
    assert_eq!(d.accept_headers(&all, T0 + 1000).unwrap(), 0);
    assert_eq!(d.best_header().hash, c.tip().hash);
    assert_eq!(d.tip().height, 0);
    let missing = d.missing_blocks(5);
    assert_eq!(
        missing,
        blocks[..5].iter().map(Block::hash).collect::<Vec<_>>()
    );
    // Bodies out of order: the later one waits, then both connect.
    assert_eq!(
        d.submit_block(blocks[1].clone(), T0).unwrap(),
        BlockOutcome::SideChain
    );
    match d.submit_block(blocks[0].clone(), T0).unwrap() {
        BlockOutcome::Connected { connected, .. } => {
            assert_eq!(connected, vec![blocks[0].hash(), blocks[1].hash()])
        }
        o => panic!("{o:?}"),
    }
    for b in &blocks[2..] {
        d.submit_block(b.clone(), T0).unwrap();
    }
    assert_eq!(d.tip(), c.tip());
    assert!(d.missing_blocks(5).is_empty());
}

#[test]
fn reopen_from_file_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    let (tip, acc1, mempool) = {
        let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
        mine_tip(&mut c, 1);
        mine_tip(&mut c, 1);
        c.submit_tx(tx(&c, 1, 2, 5, 1000, 0), T0).unwrap();
        mine_tip(&mut c, 1);
        c.submit_tx(tx(&c, 1, 2, 7, 1000, 1), T0).unwrap();
        c.submit_tx(tx(&c, 1, 2, 8, 1500, 2), T0).unwrap();
        (c.tip(), c.account(&addr(1)), c.mempool_txs())
    };
    let c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    assert_eq!(c.tip(), tip);
    assert_eq!(c.account(&addr(1)), acc1);
    assert_eq!(c.account(&addr(2)).balance, 5);
    assert_eq!(c.mempool_txs(), mempool);
    assert_eq!(c.next_nonce(&addr(1)), 3);
    // Another network refuses the file.
    drop(c);
    let err = Chain::open(params::main(), Store::open(&path).unwrap())
        .err()
        .unwrap();
    assert!(matches!(err, ChainError::WrongNetwork { .. }), "{err}");
    assert!(err.to_string().contains("regtest"), "{err}");
}

#[test]
fn reorg_to_heavier_branch() {
    let mut c = new_chain();
    let g = c.tip().hash;
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    let a2 = c.tip();
    let t = tx(&c, 1, 2, 1234, 1000, 0);
    c.submit_tx(t.clone(), T0).unwrap();
    mine_tip(&mut c, 1); // a3 includes t
    assert_eq!(c.mempool_len(), 0);
    // Competing branch from genesis by miner 5, one block longer.
    let bs = branch(&c, g, 5, 4, T0);
    for b in &bs[..3] {
        assert_eq!(
            c.submit_block(b.clone(), T0).unwrap(),
            BlockOutcome::SideChain
        );
    }
    match c.submit_block(bs[3].clone(), T0).unwrap() {
        BlockOutcome::Connected {
            tip,
            connected,
            disconnected,
        } => {
            assert_eq!(tip.hash, bs[3].hash());
            assert_eq!(connected, bs.iter().map(Block::hash).collect::<Vec<_>>());
            assert_eq!(disconnected.len(), 3);
            assert_eq!(disconnected[1], a2.hash);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(c.account(&addr(1)), Account::default());
    assert_eq!(c.account(&addr(5)).balance, 4 * c.params().subsidy(1));
    // t is no longer valid (miner 1 has no coins on this branch): not in the mempool.
    assert_eq!(c.mempool_len(), 0);
    assert_eq!(c.find_tx(&t.id()).unwrap(), None);
}

/// A chain with `blocks` mined by key 1, using `params`.
fn funded(params: NetworkParams, blocks: usize) -> Chain {
    let mut c = Chain::open(params, Store::open_in_memory().unwrap()).unwrap();
    for _ in 0..blocks {
        mine_tip(&mut c, 1);
    }
    c
}

fn reason_of(e: &ChainError) -> Option<&ValidationError> {
    match e {
        ChainError::InvalidBlock { reason, .. } | ChainError::InvalidHeader { reason, .. } => {
            Some(reason)
        }
        _ => None,
    }
}

#[test]
fn every_block_rule_rejects() {
    let mut p = params::regtest();
    p.max_block_txs = 3;
    p.max_block_bytes = 560;
    let c0 = funded(p, 2);
    let tip = c0.tip();
    let now = tip.time + 100;
    let t = |c: &Chain, amount, nonce| tx(c, 1, 2, amount, 1000, nonce);
    let good = block_on(&c0, tip.hash, 3, vec![t(&c0, 10, 0)], tip.time + 1);
    type Mutate = Box<dyn Fn(&Chain, &mut Block) -> bool>;
    type Expect = fn(&ValidationError) -> bool;
    // Each case mutates a good block; `true` means re-mine afterwards.
    let cases: Vec<(&str, Mutate, Expect)> = vec![
        (
            "bad pow",
            Box::new(|_, b| {
                while pow::check_pow(&params::regtest(), &b.header) {
                    b.header.nonce += 1;
                }
                false
            }),
            |r| matches!(r, ValidationError::BadPow),
        ),
        (
            "bad merkle",
            Box::new(|_, b| {
                b.header.merkle_root = Hash([7; 32]);
                assert!(pow::mine(&mut b.header, 1_000_000));
                false
            }),
            |r| matches!(r, ValidationError::BadMerkle),
        ),
        (
            "bad signature",
            Box::new(|_, b| {
                b.txs[0].sig.0[5] ^= 1;
                true
            }),
            |r| matches!(r, ValidationError::BadSignature(_)),
        ),
        (
            "overspend",
            Box::new(|c, b| {
                b.txs = vec![tx(c, 1, 2, 3 * c.params().subsidy(1), 1000, 0)];
                true
            }),
            |r| matches!(r, ValidationError::Overspend { .. }),
        ),
        (
            "wrong nonce",
            Box::new(|c, b| {
                b.txs = vec![tx(c, 1, 2, 10, 1000, 1)];
                true
            }),
            |r| {
                matches!(
                    r,
                    ValidationError::BadNonce {
                        expected: 0,
                        got: 1,
                        ..
                    }
                )
            },
        ),
        (
            "sender without funds",
            Box::new(|c, b| {
                b.txs = vec![tx(c, 9, 2, 10, 1000, 0)];
                true
            }),
            |r| matches!(r, ValidationError::Overspend { balance: 0, .. }),
        ),
        (
            "amount overflow",
            Box::new(|c, b| {
                b.txs = vec![tx(c, 1, 2, u64::MAX, 1000, 0)];
                b.coinbase.amount = c.params().subsidy(3);
                true
            }),
            |r| matches!(r, ValidationError::AmountOverflow(_)),
        ),
        (
            "coinbase amount",
            Box::new(|_, b| {
                b.coinbase.amount += 1;
                true
            }),
            |r| matches!(r, ValidationError::CoinbaseAmount { .. }),
        ),
        (
            "coinbase height",
            Box::new(|_, b| {
                b.coinbase.height += 1;
                true
            }),
            |r| matches!(r, ValidationError::CoinbaseHeight { .. }),
        ),
        (
            "duplicate tx",
            Box::new(|_, b| {
                b.txs.push(b.txs[0].clone());
                true
            }),
            |r| matches!(r, ValidationError::DuplicateTx(_)),
        ),
        (
            "too many txs",
            Box::new(|c, b| {
                b.txs = (0..4).map(|n| tx(c, 1, 2, 10, 1000, n)).collect();
                true
            }),
            |r| matches!(r, ValidationError::TooManyTxs { count: 4, max: 3 }),
        ),
        (
            "too big",
            Box::new(|c, b| {
                // Three transactions with maximal varints exceed 560 bytes.
                b.txs = (0..3)
                    .map(|n| tx(c, n as u8 + 1, 2, u64::MAX / 2, u64::MAX / 2, u64::MAX - n))
                    .collect();
                true
            }),
            |r| matches!(r, ValidationError::TooBig { .. }),
        ),
        (
            "version",
            Box::new(|_, b| {
                b.header.version = 2;
                true
            }),
            |r| matches!(r, ValidationError::BadVersion(2)),
        ),
        (
            "bits",
            Box::new(|_, b| {
                b.header.bits = 0x207f_fffe;
                true
            }),
            |r| matches!(r, ValidationError::BadBits { .. }),
        ),
        (
            "height",
            Box::new(|_, b| {
                b.header.height += 1;
                b.coinbase.height += 1;
                true
            }),
            |r| matches!(r, ValidationError::BadHeight { .. }),
        ),
        (
            "time too old",
            Box::new(|c, b| {
                b.header.time = c.header(&c.main_hash_at(1).unwrap()).unwrap().time;
                true
            }),
            |r| matches!(r, ValidationError::TimeTooOld { .. }),
        ),
        (
            "time too far in the future",
            Box::new(move |c, b| {
                b.header.time = now + c.params().max_future_secs + 1;
                true
            }),
            |r| matches!(r, ValidationError::TimeTooNew { .. }),
        ),
    ];
    for (name, mutate, expect) in cases {
        let mut c = funded(c0.params().clone(), 2);
        let mut b = good.clone();
        if mutate(&c, &mut b) {
            remine(&mut b);
        }
        let err = c.submit_block(b.clone(), now).expect_err(name);
        let r = reason_of(&err).unwrap_or_else(|| panic!("{name}: {err}"));
        assert!(expect(r), "{name}: got {err}");
        assert_eq!(
            err.is_peer_fault(),
            !matches!(r, ValidationError::TimeTooNew { .. }),
            "{name}"
        );
        assert!(err.to_string().starts_with("block "), "{err}");
        assert_eq!(c.tip(), tip, "{name}");
        // The honest block still connects afterwards.
        assert!(matches!(
            c.submit_block(good.clone(), now).unwrap(),
            BlockOutcome::Connected { .. }
        ));
    }
}

#[test]
fn wrong_body_does_not_condemn_header() {
    let c0 = funded(params::regtest(), 2);
    let tip = c0.tip();
    let good = block_on(
        &c0,
        tip.hash,
        3,
        vec![tx(&c0, 1, 2, 10, 1000, 0)],
        tip.time + 1,
    );
    let mut c = funded(params::regtest(), 2);
    c.accept_headers(std::slice::from_ref(&good.header), tip.time)
        .unwrap();
    let mut forged = good.clone();
    forged.txs = vec![tx(&c0, 1, 2, 11, 1000, 0)];
    let err = c.submit_block(forged, tip.time).unwrap_err();
    assert_eq!(reason_of(&err), Some(&ValidationError::BadMerkle));
    assert!(!c.is_invalid(&good.hash()));
    assert!(matches!(
        c.submit_block(good, tip.time).unwrap(),
        BlockOutcome::Connected { .. }
    ));
}

#[test]
fn invalid_header_chain_rejected() {
    let c0 = funded(params::regtest(), 3);
    let mut c = new_chain();
    let hs = c0.headers_after(&c.locator(), None, 10);
    // Out of order: parent unknown, not a peer fault.
    let err = c.accept_headers(&hs[1..], T0).unwrap_err();
    assert!(matches!(err, ChainError::UnknownParent { .. }));
    assert!(!err.is_peer_fault());
    let mut bad = hs.clone();
    bad[1].bits = 0x2000_ffff;
    assert!(pow::mine(&mut bad[1], 1_000_000));
    let err = c.accept_headers(&bad, T0 + 100).unwrap_err();
    assert!(matches!(
        reason_of(&err),
        Some(ValidationError::BadBits { .. })
    ));
    assert!(err.is_peer_fault());
    // The valid first header was kept.
    assert_eq!(c.best_header().height, 1);
}

fn replay(c: &Chain) -> Chain {
    let mut r = Chain::open(c.params().clone(), Store::open_in_memory().unwrap()).unwrap();
    for h in 1..=c.tip().height {
        let b = c.block(&c.main_hash_at(h).unwrap()).unwrap().unwrap();
        r.submit_block(b, T0 + 1_000_000).unwrap();
    }
    r
}

#[test]
fn reorg_returns_still_valid_txs_to_mempool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    let fork = c.tip();
    let t0 = tx(&c, 1, 2, 100, 1000, 0);
    let t1 = tx(&c, 1, 2, 200, 5000, 1);
    c.submit_tx(t0.clone(), T0).unwrap();
    mine_tip(&mut c, 1); // confirms t0
    c.submit_tx(t1.clone(), T0).unwrap(); // pending on top of t0
    assert_eq!(c.next_nonce(&addr(1)), 2);
    let bs = branch(&c, fork.hash, 4, 2, fork.time);
    assert_eq!(
        c.submit_block(bs[0].clone(), T0).unwrap(),
        BlockOutcome::SideChain
    );
    match c.submit_block(bs[1].clone(), T0).unwrap() {
        BlockOutcome::Connected { disconnected, .. } => assert_eq!(disconnected.len(), 1),
        o => panic!("{o:?}"),
    }
    // t0 is unconfirmed again and t1 still chains on it; t1 pays more so comes first.
    assert_eq!(c.mempool_txs(), vec![t1.clone(), t0.clone()]);
    assert_eq!(c.find_tx(&t0.id()).unwrap(), Some((t0.clone(), None)));
    assert_eq!(c.next_nonce(&addr(1)), 2);
    // The template still respects nonce order.
    let tpl = c.block_template(addr(3), T0 + 100);
    assert_eq!(tpl.txs, vec![t0.clone(), t1.clone()]);
    // State equals replaying the winning branch from scratch.
    assert_eq!(c.accounts(), replay(&c).accounts());
    // And all of it survives a restart.
    let (tip, accounts, mempool) = (c.tip(), c.accounts().clone(), c.mempool_txs());
    drop(c);
    let c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    assert_eq!(c.tip(), tip);
    assert_eq!(c.accounts(), &accounts);
    assert_eq!(c.mempool_txs(), mempool);
}

#[test]
fn equal_work_keeps_first_seen() {
    let mut c = new_chain();
    let g = c.tip().hash;
    let a = mine_tip(&mut c, 1);
    let b = branch(&c, g, 2, 1, T0);
    assert_eq!(
        c.submit_block(b[0].clone(), T0).unwrap(),
        BlockOutcome::SideChain
    );
    assert_eq!(c.tip().hash, a.hash());
}

#[test]
fn invalid_block_on_heavier_branch_falls_back() {
    let mut c = new_chain();
    let a1 = mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    let tip = c.tip();
    let accounts = c.accounts().clone();
    // Branch from a1: b2 ok, b3 overspends (valid signature, so it passes body checks),
    // b4 and b5 build on it.
    let b2 = block_on(&c, a1.hash(), 5, vec![], a1.header.time + 1);
    c.submit_block(b2.clone(), T0).unwrap();
    let b3 = block_on(
        &c,
        b2.hash(),
        5,
        vec![tx(&c, 9, 2, 1, 1000, 0)],
        b2.header.time + 1,
    );
    assert_eq!(
        c.submit_block(b3.clone(), T0).unwrap(),
        BlockOutcome::SideChain
    );
    let b4 = block_on(&c, b3.hash(), 5, vec![], b3.header.time + 1);
    let err = c.submit_block(b4.clone(), T0).unwrap_err();
    assert!(
        matches!(err, ChainError::KnownInvalid(h) if h == b4.hash()),
        "{err}"
    );
    assert!(c.is_invalid(&b3.hash()));
    assert!(c.is_invalid(&b4.hash()));
    assert!(!c.is_invalid(&b2.hash()));
    assert_eq!(c.tip(), tip);
    assert_eq!(c.accounts(), &accounts);
    assert_eq!(c.best_header().hash, tip.hash);
    // Children of invalid blocks are refused.
    let b5 = block_on(&c, b4.hash(), 5, vec![], b4.header.time + 1);
    assert!(matches!(
        c.submit_block(b5.clone(), T0),
        Err(ChainError::KnownInvalid(_))
    ));
    assert!(matches!(
        c.accept_headers(&[b5.header], T0),
        Err(ChainError::KnownInvalid(_))
    ));
}

#[test]
fn orphans_connect_when_parent_arrives() {
    let src = funded(params::regtest(), 4);
    let blocks: Vec<Block> = (1..=4)
        .map(|h| src.block(&src.main_hash_at(h).unwrap()).unwrap().unwrap())
        .collect();
    let mut c = new_chain();
    for b in blocks[1..].iter().rev() {
        assert_eq!(c.submit_block(b.clone(), T0).unwrap(), BlockOutcome::Orphan);
        assert!(c.has_block(&b.hash()));
        assert!(!c.has_header(&b.hash()));
    }
    assert_eq!(
        c.submit_block(blocks[3].clone(), T0).unwrap(),
        BlockOutcome::Duplicate
    );
    assert_eq!(c.orphan_count(), 3);
    match c.submit_block(blocks[0].clone(), T0).unwrap() {
        BlockOutcome::Connected { connected, tip, .. } => {
            assert_eq!(
                connected,
                blocks.iter().map(Block::hash).collect::<Vec<_>>()
            );
            assert_eq!(tip, src.tip());
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(c.orphan_count(), 0);
}

fn limited(limits: MempoolLimits, blocks: usize) -> Chain {
    let mut c =
        Chain::open_with_limits(params::regtest(), Store::open_in_memory().unwrap(), limits)
            .unwrap();
    for i in 0..blocks {
        mine_tip(&mut c, 1 + (i % 4) as u8);
    }
    // Let those coinbases mature (to a key the tests do not use).
    for _ in 1..c.params().coinbase_maturity {
        mine_tip(&mut c, 8);
    }
    c
}

fn refused(r: Result<TxOutcome, ChainError>) -> MempoolReject {
    match r {
        Err(ChainError::TxRefused { reason, .. }) => reason,
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn mempool_policy() {
    let mut c = limited(MempoolLimits::default(), 1);
    let bal = c.account(&addr(1)).balance;
    // Fee floor.
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 2, 1, 999, 0), T0)),
        MempoolReject::FeeTooLow {
            fee: 999,
            min: 1000
        }
    ));
    // Gap.
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 2, 1, 1000, 1), T0)),
        MempoolReject::NonceGap {
            expected: 0,
            got: 1
        }
    ));
    c.submit_tx(tx(&c, 1, 2, 1, 1000, 0), T0).unwrap();
    // Double spend of nonce 0.
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 3, 1, 9000, 0), T0)),
        MempoolReject::Conflict { .. }
    ));
    // Pending spends must fit the balance together.
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 2, bal - 1000, 1000, 1), T0)),
        MempoolReject::InsufficientFunds { .. }
    ));
    c.submit_tx(tx(&c, 1, 2, bal - 3000, 1000, 1), T0).unwrap();
    // Bad signature is a peer fault; policy refusals are not.
    let mut bad = tx(&c, 1, 2, 1, 1000, 2);
    bad.amount = 2;
    let err = c.submit_tx(bad, T0).unwrap_err();
    assert!(matches!(err, ChainError::InvalidTx { .. }) && err.is_peer_fault());
    assert!(!ChainError::TxRefused {
        id: Hash::ZERO,
        reason: MempoolReject::Full { lowest: 1 }
    }
    .is_peer_fault());
    // Already-confirmed nonce.
    mine_tip(&mut c, 4);
    assert_eq!(c.mempool_len(), 0);
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 3, 1, 1000, 1), T0)),
        MempoolReject::NonceTooLow {
            confirmed: 2,
            got: 1
        }
    ));
}

#[test]
fn mempool_per_sender_cap_and_chain() {
    let limits = MempoolLimits {
        max_per_sender: 3,
        ..MempoolLimits::default()
    };
    let mut c = limited(limits, 1);
    for n in 0..3 {
        c.submit_tx(tx(&c, 1, 2, 1, 1000 + n, n), T0).unwrap();
    }
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 1, 2, 1, 1000, 3), T0)),
        MempoolReject::TooManyPending { max: 3 }
    ));
    assert_eq!(c.next_nonce(&addr(1)), 3);
}

#[test]
fn mempool_full_evicts_lowest_fee() {
    let limits = MempoolLimits {
        max_txs: 3,
        ..MempoolLimits::default()
    };
    let mut c = limited(limits, 4); // keys 1..4 each have one subsidy
    let a = tx(&c, 1, 9, 1, 3000, 0);
    let b = tx(&c, 2, 9, 1, 1000, 0);
    let d = tx(&c, 3, 9, 1, 2000, 0);
    for t in [&a, &b, &d] {
        c.submit_tx(t.clone(), T0).unwrap();
    }
    assert_eq!(c.mempool_txs(), vec![a.clone(), d.clone(), b.clone()]);
    // Not above the lowest fee: refused.
    assert!(matches!(
        refused(c.submit_tx(tx(&c, 4, 9, 1, 1000, 0), T0)),
        MempoolReject::Full { lowest: 1000 }
    ));
    // Above: the cheapest goes.
    let e = tx(&c, 4, 9, 1, 1500, 0);
    c.submit_tx(e.clone(), T0).unwrap();
    assert_eq!(c.mempool_txs(), vec![a, d, e]);
    assert_eq!(c.mempool_get(&b.id()), None);
    assert_eq!(c.mempool_len(), 3);
}

#[test]
fn mempool_revalidated_after_conflicting_block() {
    let mut c = limited(MempoolLimits::default(), 1);
    let tip = c.tip();
    let mine = tx(&c, 1, 2, 5, 1000, 0);
    let next = tx(&c, 1, 2, 6, 1000, 1);
    c.submit_tx(mine.clone(), T0).unwrap();
    c.submit_tx(next.clone(), T0).unwrap();
    // A block confirms a different nonce-0 spend of key 1.
    let other = tx(&c, 1, 3, 7, 1000, 0);
    let b = block_on(&c, tip.hash, 4, vec![other], tip.time + 1);
    c.submit_block(b, T0).unwrap();
    // `mine` is a double spend now; `next` (nonce 1) is valid on the new tip and stays.
    assert_eq!(c.mempool_get(&mine.id()), None);
    assert_eq!(c.mempool_txs(), vec![next]);
}

/// A block that touches none of its senders leaves the mempool as it was, arrival order
/// included (issue 14: it was rebuilt on every tip change, which renumbered it by sender).
#[test]
fn a_block_keeps_the_mempool_order_of_senders_it_does_not_touch() {
    let mut c = new_chain();
    for miner in [3, 9, 1] {
        mine_tip(&mut c, miner);
    }
    // Equal fees: the older goes first. Sent by the greater address first, so that
    // numbering by sender would swap them.
    let (hi, lo) = if addr(3) > addr(9) { (3, 9) } else { (9, 3) };
    let first = tx(&c, hi, 2, 5, 1000, 0);
    let second = tx(&c, lo, 2, 5, 1000, 0);
    c.submit_tx(first.clone(), T0).unwrap();
    c.submit_tx(second.clone(), T0).unwrap();
    let tip = c.tip();
    let b = block_on(
        &c,
        tip.hash,
        4,
        vec![tx(&c, 1, 5, 1, 1000, 0)],
        tip.time + 1,
    );
    assert!(matches!(
        c.submit_block(b, T0).unwrap(),
        BlockOutcome::Connected { .. }
    ));
    let t = c.block_template(addr(4), c.tip().time + 1);
    assert_eq!(t.txs, vec![first, second]);
}

#[test]
fn template_respects_limits_and_is_valid() {
    let mut p = params::regtest();
    p.max_block_txs = 5;
    let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    for _ in 0..4 {
        mine_tip(&mut c, 1);
    }
    for n in 0..8 {
        c.submit_tx(tx(&c, 1, 2, 1, 1000 + n, n), T0).unwrap();
    }
    let b = mine_tip(&mut c, 2);
    assert_eq!(b.txs.len(), 5);
    assert_eq!(
        b.txs.iter().map(|t| t.nonce).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(c.mempool_len(), 3);
    assert_eq!(
        c.account(&addr(2)).balance,
        5 + c.params().subsidy(5) + 5010
    );
    // Template time never falls to or below the median of recent blocks.
    let tpl = c.block_template(addr(2), 0);
    assert!(tpl.header.time > c.tip().time - 100);
}

mod prop {
    use super::*;
    use crate::chain::state::Overlay;
    use proptest::prelude::*;

    struct Built {
        block: Block,
        state: crate::chain::state::Accounts,
        valid: bool,
        work: u128,
    }

    /// Build a random block tree. Each step: (parent pick, miner, send a tx?, make it
    /// invalid?). Returns blocks in creation order (parents first).
    fn build(c: &Chain, steps: &[(usize, u8, bool, bool)]) -> Vec<Built> {
        let g = c.params().genesis.clone();
        let mut all = vec![Built {
            work: pow::work(g.header.bits),
            block: g,
            state: Default::default(),
            valid: true,
        }];
        for &(pick, miner, send, corrupt) in steps {
            let parent = &all[pick % all.len()];
            let ph = &parent.block.header;
            let mut txs = Vec::new();
            let sender = 1 + (pick % 3) as u8;
            let acc = parent.state.get(&addr(sender)).copied().unwrap_or_default();
            if send && acc.balance >= 4000 {
                let nonce = if corrupt { acc.nonce + 1 } else { acc.nonce };
                txs.push(tx(c, sender, miner, acc.balance / 3, 1000, nonce));
            }
            let bad = corrupt && !txs.is_empty();
            let b = block_after(c.params(), ph, miner, txs, ph.time + 1 + (pick % 3) as u64);
            let mut ov = Overlay::new(&parent.state);
            let ok = validate::apply_block(c.params(), &mut ov, &b, |_| 0).is_ok();
            if parent.valid {
                assert_eq!(ok, !bad);
            }
            let (changes, _) = ov.into_parts();
            let mut state = parent.state.clone();
            apply_changes(&mut state, &changes);
            all.push(Built {
                work: parent.work + pow::work(b.header.bits),
                valid: parent.valid && ok,
                block: b,
                state,
            });
        }
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn competing_branches_match_replay(
            steps in proptest::collection::vec((0usize..64, 1u8..4, any::<bool>(), proptest::bool::weighted(0.15)), 1..24),
            order in proptest::collection::vec(any::<u64>(), 24),
        ) {
            // The model knows no coinbase maturity (tested on its own): spends of
            // fresh coinbases stay valid here.
            let mut p = params::regtest();
            p.coinbase_maturity = 0;
            let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
            let built = build(&c, &steps);
            // Submit in a random order: exercises orphans, side chains and reorgs.
            let mut idx: Vec<usize> = (1..built.len()).collect();
            idx.sort_by_key(|&i| order[i % order.len()] ^ i as u64);
            for &i in &idx {
                let r = c.submit_block(built[i].block.clone(), T0 + 10_000_000);
                if built[i].valid {
                    prop_assert!(r.is_ok(), "valid block refused: {:?}", r);
                } else {
                    prop_assert!(r.is_err() || !c.is_on_main_chain(&built[i].block.hash()));
                }
            }
            prop_assert_eq!(c.orphan_count(), 0);
            // The tip carries the most work of all valid blocks.
            let best = built.iter().filter(|b| b.valid).map(|b| b.work).max().unwrap();
            prop_assert_eq!(c.tip().work, best);
            let tip = built.iter().find(|b| b.block.hash() == c.tip().hash).unwrap();
            prop_assert!(tip.valid);
            // Accounts equal the independent model and a replay of the main chain.
            prop_assert_eq!(c.accounts(), &tip.state);
            let r = replay(&c);
            prop_assert_eq!(c.accounts(), r.accounts());
            for b in built.iter().filter(|b| !b.valid) {
                prop_assert!(!c.is_on_main_chain(&b.block.hash()));
            }
        }

        /// The download cursor gives exactly what the old walk from the best header gave,
        /// on trees with gaps (bodies out of order, headers ahead of bodies), forks,
        /// header-chain reorgs, invalid blocks, and across a reopen.
        #[test]
        fn missing_blocks_cursor_matches_the_walk(
            steps in proptest::collection::vec((0usize..64, 1u8..4, any::<bool>(), proptest::bool::weighted(0.15)), 1..32),
            ops in proptest::collection::vec((any::<bool>(), any::<u64>()), 1..48),
            reopen_at in 0usize..48,
        ) {
            let mut p = params::regtest();
            p.coinbase_maturity = 0;
            let mut c = Chain::open(p.clone(), Store::open_in_memory().unwrap()).unwrap();
            let built = build(&c, &steps);
            let by_hash: HashMap<Hash, usize> = built
                .iter()
                .enumerate()
                .map(|(i, b)| (b.block.hash(), i))
                .collect();
            let check = |c: &Chain| -> Result<(), TestCaseError> {
                for max in [0, 1, 3, 1000] {
                    prop_assert_eq!(c.missing_blocks(max), c.missing_blocks_walk(max), "max {}", max);
                }
                Ok(())
            };
            for (k, &(headers, pick)) in ops.iter().enumerate() {
                let i = 1 + (pick as usize) % (built.len() - 1).max(1);
                let Some(target) = built.get(i) else { continue };
                if headers {
                    // The header chain from genesis to `target`, as a peer sends it.
                    let mut path = Vec::new();
                    let mut cur = &target.block;
                    while cur.header.height > 0 {
                        path.push(cur.header.clone());
                        cur = &built[by_hash[&cur.header.prev]].block;
                    }
                    path.reverse();
                    let _ = c.accept_headers(&path, T0 + 10_000_000);
                } else {
                    let _ = c.submit_block(target.block.clone(), T0 + 10_000_000);
                }
                check(&c)?;
                if k == reopen_at {
                    c = Chain::open(p.clone(), c.into_store()).unwrap();
                    check(&c)?;
                }
            }
        }
    }
}

#[test]
fn orphans_of_invalid_blocks_are_dropped() {
    let mut c = new_chain();
    let a1 = mine_tip(&mut c, 1);
    let bad = block_on(
        &c,
        a1.hash(),
        5,
        vec![tx(&c, 9, 2, 1, 1000, 0)],
        a1.header.time + 1,
    );
    let child = block_on(&c, a1.hash(), 5, vec![], a1.header.time + 1);
    // `child` re-parented onto `bad`, and a grandchild: both orphans until `bad` arrives.
    let child = block_after(c.params(), &bad.header, 5, child.txs, bad.header.time + 1);
    let grandchild = block_after(c.params(), &child.header, 5, vec![], child.header.time + 1);
    assert_eq!(
        c.submit_block(grandchild, T0).unwrap(),
        BlockOutcome::Orphan
    );
    assert_eq!(
        c.submit_block(child.clone(), T0).unwrap(),
        BlockOutcome::Orphan
    );
    assert!(c.submit_block(bad.clone(), T0).is_err());
    assert!(c.is_invalid(&bad.hash()));
    assert_eq!(c.orphan_count(), 0);
    assert_eq!(c.tip().hash, a1.hash());
}

#[test]
fn descendants_of_dropped_orphans_are_refused_not_parked() {
    let mut c = new_chain();
    let a1 = mine_tip(&mut c, 1);
    let bad = block_on(
        &c,
        a1.hash(),
        5,
        vec![tx(&c, 9, 2, 1, 1000, 0)],
        a1.header.time + 1,
    );
    assert!(c.submit_block(bad.clone(), T0).is_err());
    let child = block_after(c.params(), &bad.header, 5, vec![], bad.header.time + 1);
    let grandchild = block_after(c.params(), &child.header, 5, vec![], child.header.time + 1);
    let late = block_after(
        c.params(),
        &grandchild.header,
        5,
        vec![],
        grandchild.header.time + 1,
    );
    // The grandchild waits as an orphan; its parent is refused (child of a known-invalid
    // block), which drops the grandchild. A block building on the grandchild that arrives
    // afterwards must be refused too, not parked for a parent that will never come.
    assert_eq!(
        c.submit_block(grandchild.clone(), T0).unwrap(),
        BlockOutcome::Orphan
    );
    assert!(c.submit_block(child, T0).is_err());
    assert!(c.is_invalid(&grandchild.hash()));
    assert!(matches!(
        c.submit_block(late, T0),
        Err(ChainError::KnownInvalid(_))
    ));
    assert_eq!(c.orphan_count(), 0);
}

#[test]
fn resumes_interrupted_reorg_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    let g = c.tip().hash;
    for _ in 0..3 {
        mine_tip(&mut c, 1);
    }
    let a3 = c.tip();
    let bs = branch(&c, g, 2, 4, T0);
    for b in &bs[..3] {
        c.submit_block(b.clone(), T0).unwrap();
    }
    drop(c);
    // Simulate a crash in the middle of switching to the b branch: b4's body stored and
    // a3 disconnected, nothing connected yet.
    {
        let mut s = Store::open(&path).unwrap();
        let undo = s.get_undo(&a3.hash).unwrap().unwrap();
        s.disconnect_block(&crate::store::DisconnectWrite {
            hash: a3.hash,
            height: 3,
            accounts: &undo.prev,
            tx_ids: &[],
        })
        .unwrap();
        s.put_block(&bs[3], 5 * pow::work(bs[3].header.bits), 1000)
            .unwrap();
    }
    let c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    assert_eq!(c.tip().hash, bs[3].hash());
    assert_eq!(c.account(&addr(1)), Account::default());
    assert_eq!(c.account(&addr(2)).balance, 4 * c.params().subsidy(1));
    assert_eq!(c.accounts(), replay(&c).accounts());
}

#[test]
fn retarget_enforced_by_chain() {
    let mut p = params::regtest();
    p.retarget_interval = 4;
    p.block_interval_secs = 1000; // blocks come every 10 s: far too fast
    let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    for _ in 0..3 {
        mine_tip(&mut c, 1);
    }
    let limit = c.params().pow_limit_bits;
    let expected = c.next_bits();
    assert_ne!(expected, limit);
    // Clamped at 4x harder than the limit.
    let quarter = pow::target_from_bits(limit).unwrap().checked_div_u64(4);
    assert_eq!(expected, pow::bits_from_target(&quarter.unwrap()));
    let tip = c.tip();
    let stale = block_on(&c, tip.hash, 1, vec![], tip.time + 1);
    let err = c.submit_block(stale, T0).unwrap_err();
    assert!(
        matches!(reason_of(&err), Some(ValidationError::BadBits { .. })),
        "{err}"
    );
    let b = mine_tip(&mut c, 1);
    assert_eq!(b.header.bits, expected);
    // Between retargets the bits carry over.
    assert_eq!(c.next_bits(), expected);
}

// ---- Consensus hardening: pow limit, context first, bounded sets, presync, maturity ----

/// A block on an unknown parent whose bits claim a target easier than the network's
/// limit: without the limit in `check_pow`, nothing could refuse it before its parent.
#[test]
fn orphan_easier_than_pow_limit_is_refused() {
    let mut c = Chain::open(params::main(), Store::open_in_memory().unwrap()).unwrap();
    let regtest = params::regtest();
    let mut fake_parent = c.params().genesis.header.clone();
    fake_parent.nonce = 99;
    let mut b = block_after(&regtest, &fake_parent, 1, vec![], T0 + 600);
    b.coinbase.amount = c.params().subsidy(1);
    remine(&mut b);
    let r = c.submit_block(b, T0 + 600);
    assert!(
        matches!(
            reason_of(r.as_ref().unwrap_err()),
            Some(ValidationError::BadPow)
        ),
        "{r:?}"
    );
    assert_eq!(c.orphan_count(), 0);
}

/// A block with wrong difficulty bits and a bad signature: the cheap check against the
/// parent's context must refuse it before any signature is verified.
#[test]
fn context_is_checked_before_signatures() {
    let c0 = funded(params::regtest(), 2);
    let mut c = funded(params::regtest(), 2);
    let tip = c.tip();
    let mut bad_tx = tx(&c0, 1, 2, 10, 1000, 0);
    bad_tx.sig = Sig([7; 64]);
    let mut b = block_on(&c0, tip.hash, 3, vec![bad_tx], tip.time + 1);
    b.header.bits = 0x2000_ffff; // harder than required: valid pow, wrong bits
    remine(&mut b);
    let r = c.submit_block(b, tip.time + 100);
    assert!(
        matches!(
            reason_of(r.as_ref().unwrap_err()),
            Some(ValidationError::BadBits { .. })
        ),
        "signatures checked before the header's context: {r:?}"
    );
}

/// Orphans get only cheap checks, wait a bounded time, and are fully checked when their
/// parent arrives.
#[test]
fn orphans_are_checked_when_the_parent_comes_and_expire() {
    let src = funded(params::regtest(), 2);
    let mut c = new_chain();
    let b1 = src.block(&src.main_hash_at(1).unwrap()).unwrap().unwrap();
    let b2 = src.block(&src.main_hash_at(2).unwrap()).unwrap().unwrap();
    let mut bad_tx = tx(&src, 1, 2, 10, 1000, 0);
    bad_tx.sig = Sig([7; 64]);
    let bad3 = block_after(
        src.params(),
        &b2.header,
        3,
        vec![bad_tx],
        b2.header.time + 1,
    );
    // Parent unknown: no signature check yet, it waits.
    assert_eq!(
        c.submit_block(bad3.clone(), T0 + 10).unwrap(),
        BlockOutcome::Orphan
    );
    c.submit_block(b1.clone(), T0 + 10).unwrap();
    // Its parent arrives: now it is checked in full and refused.
    let out = c.submit_block(b2.clone(), T0 + 10).unwrap();
    assert!(matches!(out, BlockOutcome::Connected { .. }), "{out:?}");
    assert_eq!(c.tip().hash, b2.hash());
    assert_eq!(c.orphan_count(), 0);
    assert!(c.is_invalid(&bad3.hash()));

    // An orphan whose parent never comes is dropped after its time.
    let mut lost_parent = b2.header.clone();
    lost_parent.nonce ^= 0xdead;
    let orphan = block_after(src.params(), &lost_parent, 4, vec![], b2.header.time + 1);
    assert_eq!(
        c.submit_block(orphan, T0 + 20).unwrap(),
        BlockOutcome::Orphan
    );
    assert_eq!(c.orphan_count(), 1);
    mine_tip(&mut c, 1); // any later submission sweeps the pool
    let later = T0 + 20 + crate::chain::orphans::ORPHAN_TTL_SECS + 1;
    let tpl = {
        let mut b = c.block_template(addr(1), later);
        assert!(pow::mine(&mut b.header, 1_000_000));
        b
    };
    c.submit_block(tpl, later).unwrap();
    assert_eq!(c.orphan_count(), 0, "orphan kept past its time");
}

/// A refused block is remembered by hash only: its header is not indexed or stored,
/// and the memory of it expires.
#[test]
fn invalid_blocks_are_remembered_by_hash_only_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    let tip = c.tip();
    let mut bad_tx = tx(&c, 1, 2, 10, 1000, 0);
    bad_tx.sig = Sig([7; 64]);
    let bad = block_on(&c, tip.hash, 3, vec![bad_tx], tip.time + 1);
    let now = tip.time + 10;
    assert!(c.submit_block(bad.clone(), now).is_err());
    assert!(c.is_invalid(&bad.hash()));
    assert!(
        !c.has_header(&bad.hash()),
        "the attacker's header is kept in the block index"
    );
    // Its child is refused at once, not parked as an orphan.
    let child = block_after(c.params(), &bad.header, 3, vec![], bad.header.time + 1);
    assert!(matches!(
        c.submit_block(child.clone(), now),
        Err(ChainError::KnownInvalid(_))
    ));
    assert_eq!(c.orphan_count(), 0);
    // Nothing of it reached the store.
    drop(c);
    let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    assert!(!c.has_header(&bad.hash()));
    assert!(!c.has_header(&child.hash()));
    // In memory, a day later it is forgotten.
    assert!(c.submit_block(bad.clone(), now).is_err());
    assert_eq!(c.invalid_len(), 1);
    let later = now + crate::chain::invalid::INVALID_TTL_SECS + 1;
    let mut b = c.block_template(addr(1), later);
    assert!(pow::mine(&mut b.header, 1_000_000));
    c.submit_block(b, later).unwrap();
    assert_eq!(c.invalid_len(), 0);
}

/// Headers (not submitted) of `n` blocks on `parent`.
fn header_branch(c: &Chain, parent: Hash, n: usize, t: u64) -> Vec<Header> {
    branch(c, parent, 9, n, t)
        .into_iter()
        .map(|b| b.header)
        .collect()
}

/// A header chain with less work than the network minimum is not stored, and what a
/// peer can make us hold in the meantime is bounded.
#[test]
fn low_work_headers_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut p = params::regtest();
    // Regtest headers are worth 2 each (genesis too): 50 of them reach this, 40 do not.
    p.min_chain_work = 2 + 100;
    let mut c = Chain::open(p.clone(), Store::open(&path).unwrap()).unwrap();
    let g = c.tip();
    let cheap = header_branch(&c, g.hash, 40, g.time);
    assert_eq!(c.accept_headers(&cheap, T0 + 1000).unwrap(), 0);
    assert_eq!(
        c.best_header().hash,
        g.hash,
        "low-work headers became the best"
    );
    assert!(c.missing_blocks(10).is_empty());
    assert_eq!(c.presync_len(), 40);
    // Reopened: nothing of them was stored.
    drop(c);
    let mut c = Chain::open(p.clone(), Store::open(&path).unwrap()).unwrap();
    assert!(!c.has_header(&cheap[0].hash()), "low-work header stored");
    // The same chain, continued past the minimum, is stored whole.
    let more = header_branch(&c, g.hash, 60, g.time);
    assert_eq!(c.accept_headers(&more[..30], T0 + 1000).unwrap(), 0);
    assert_eq!(c.accept_headers(&more[30..], T0 + 1000).unwrap(), 60);
    assert_eq!(c.best_header().hash, more[59].hash());
    assert_eq!(c.presync_len(), 0);
    assert_eq!(c.missing_blocks(100).len(), 60);
    drop(c);
    let c = Chain::open(p, Store::open(&path).unwrap()).unwrap();
    assert_eq!(c.best_header().hash, more[59].hash());
}

/// Below the network minimum a chain still grows by blocks that beat the tip (a young
/// network's miner, or blocks relayed whole), and headers held in presync are stored
/// when such a block arrives on them.
#[test]
fn blocks_that_beat_the_tip_are_stored_below_the_minimum() {
    let mut p = params::regtest();
    p.min_chain_work = 1000;
    let mut c = Chain::open(p.clone(), Store::open_in_memory().unwrap()).unwrap();
    for _ in 0..3 {
        mine_tip(&mut c, 1); // asserts Connected
    }
    assert_eq!(c.tip().height, 3);
    // A header announced first (presync), then its block: the block is stored and
    // connects.
    let tip = c.tip();
    let b = block_on(&c, tip.hash, 1, vec![], tip.time + 1);
    assert_eq!(
        c.accept_headers(std::slice::from_ref(&b.header), T0 + 1000)
            .unwrap(),
        0
    );
    assert_eq!(c.presync_len(), 1);
    let out = c.submit_block(b.clone(), T0 + 1000).unwrap();
    assert!(matches!(out, BlockOutcome::Connected { .. }), "{out:?}");
    assert_eq!(c.presync_len(), 0);
    assert_eq!(c.tip().hash, b.hash());
    // A cheap side branch that does not beat the tip is not stored.
    let side = branch(&c, c.main_hash_at(1).unwrap(), 5, 1, T0 + 500);
    assert_eq!(
        c.submit_block(side[0].clone(), T0 + 1000).unwrap(),
        BlockOutcome::SideChain
    );
    assert!(!c.has_block(&side[0].hash()));
}

/// Header spam below the threshold is held in a bounded area and expires.
#[test]
fn presync_area_is_bounded_and_expires() {
    let mut p = params::regtest();
    p.min_chain_work = u128::MAX;
    let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    let g = c.tip();
    let spam = header_branch(&c, g.hash, MAX_PRESYNC_HEADERS + 300, g.time);
    let (first, rest) = spam.split_at(MAX_PRESYNC_HEADERS - 96);
    for chunk in first.chunks(500) {
        assert_eq!(c.accept_headers(chunk, T0 + 1000).unwrap(), 0);
    }
    assert_eq!(c.presync_len(), first.len());
    // Past the cap the oldest go, with the headers that hang on them.
    for chunk in rest.chunks(500) {
        let _ = c.accept_headers(chunk, T0 + 1000);
    }
    assert!(c.presync_len() <= MAX_PRESYNC_HEADERS);
    assert_eq!(c.best_header().hash, g.hash);
    c.accept_headers(&[], T0 + 1000 + PRESYNC_TTL_SECS + 1)
        .unwrap();
    assert_eq!(c.presync_len(), 0, "presync headers kept past their time");
}

/// A cheap fork from far behind the tip is not stored even where the network minimum
/// is zero; one near the tip is.
#[test]
fn fork_far_below_the_tip_work_is_not_stored() {
    let mut c = new_chain();
    let g = c.tip();
    for _ in 0..(PRESYNC_MARGIN_BLOCKS as usize + 20) {
        mine_tip(&mut c, 1);
    }
    let far = header_branch(&c, g.hash, 10, g.time);
    assert_eq!(c.accept_headers(&far, T0 + 100_000).unwrap(), 0);
    assert_eq!(c.presync_len(), 10);
    let near_parent = c.main_hash_at(c.tip().height - 5).unwrap();
    let near = header_branch(&c, near_parent, 3, c.tip().time);
    assert_eq!(c.accept_headers(&near, T0 + 100_000).unwrap(), 3);
}

/// Coinbase funds are spendable only `coinbase_maturity` blocks after their block, in
/// blocks and in the mempool.
#[test]
fn immature_coinbase_cannot_be_spent() {
    let mut p = params::regtest();
    p.coinbase_maturity = 2;
    let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    mine_tip(&mut c, 1);
    let subsidy = c.params().subsidy(1);
    assert_eq!(c.account(&addr(1)).balance, subsidy);
    assert_eq!(c.spendable_balance(&addr(1)), 0);
    // The mempool refuses the spend...
    let spend = tx(&c, 1, 2, 10, 1000, 0);
    assert!(matches!(
        c.submit_tx(spend.clone(), T0),
        Err(ChainError::TxRefused { .. })
    ));
    // ...and a block holding it is invalid.
    let tip = c.tip();
    let b = block_on(&c, tip.hash, 3, vec![spend.clone()], tip.time + 1);
    let r = c.submit_block(b, tip.time + 10);
    assert!(
        matches!(
            reason_of(r.as_ref().unwrap_err()),
            Some(ValidationError::ImmatureSpend { .. })
        ),
        "{r:?}"
    );
    // One block later it has matured.
    mine_tip(&mut c, 3);
    assert_eq!(c.spendable_balance(&addr(1)), subsidy);
    assert_eq!(c.submit_tx(spend, T0).unwrap(), TxOutcome::Accepted);
    let b = mine_tip(&mut c, 3);
    assert_eq!(b.txs.len(), 1);
}

/// Funds received from a transaction are spendable at once; only the coinbase part of a
/// balance waits. Before the activation height the old rules hold.
#[test]
fn maturity_locks_only_coinbase_funds_and_only_after_activation() {
    let mut p = params::regtest();
    p.coinbase_maturity = 2;
    let mut c = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    for _ in 0..3 {
        mine_tip(&mut c, 1);
    }
    c.submit_tx(tx(&c, 1, 2, 50_000, 1000, 0), T0).unwrap();
    mine_tip(&mut c, 2); // addr 2: 50 000 received + a fresh coinbase
    assert_eq!(c.spendable_balance(&addr(2)), 50_000);
    assert_eq!(
        c.submit_tx(tx(&c, 2, 3, 40_000, 1000, 0), T0).unwrap(),
        TxOutcome::Accepted
    );
    assert!(c.submit_tx(tx(&c, 2, 3, 20_000, 1000, 1), T0).is_err());

    let mut p = params::regtest();
    p.coinbase_maturity = 2;
    p.maturity_height = 100;
    let mut old = Chain::open(p, Store::open_in_memory().unwrap()).unwrap();
    mine_tip(&mut old, 1);
    assert_eq!(old.spendable_balance(&addr(1)), old.params().subsidy(1));
    assert_eq!(
        old.submit_tx(tx(&old, 1, 2, 10, 1000, 0), T0).unwrap(),
        TxOutcome::Accepted
    );
}

/// The maturity window follows reorgs and restarts: a coinbase of a chain that lost is
/// gone, the winner's coinbases wait their turn.
#[test]
fn maturity_window_follows_reorg_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut p = params::regtest();
    p.coinbase_maturity = 3;
    let mut c = Chain::open(p.clone(), Store::open(&path).unwrap()).unwrap();
    let a1 = mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    mine_tip(&mut c, 1);
    // Heights 1..3 to addr 1: only height 1 is spendable in block 4.
    let s = c.params().subsidy(1);
    assert_eq!(c.spendable_balance(&addr(1)), s);
    // A heavier branch from a1 pays addr 2 at heights 2..5.
    for b in branch(&c, a1.hash(), 2, 4, a1.header.time + 100) {
        c.submit_block(b, T0 + 100_000).unwrap();
    }
    assert_eq!(c.tip().height, 5);
    assert_eq!(c.account(&addr(1)).balance, s);
    assert_eq!(c.spendable_balance(&addr(1)), s);
    // Block 6 may spend heights up to 3: two of addr 2's four coinbases.
    assert_eq!(c.spendable_balance(&addr(2)), 2 * s);
    drop(c);
    let c = Chain::open(p, Store::open(&path).unwrap()).unwrap();
    assert_eq!(c.spendable_balance(&addr(2)), 2 * s);
    assert_eq!(c.account(&addr(2)).balance, 4 * s);
}

fn vm_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What the in-memory index costs per block, and how long loading it takes: 100 000
/// headers into a store on disk, then the chain reopened from it. Printed, not
/// asserted (RSS depends on the allocator and on what else the process holds);
/// `cargo test --release --lib index_memory -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, minutes in a debug build"]
fn index_memory_for_100k_blocks() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    let before = vm_rss_kb();
    let now = T0 + N as u64 + 1000;
    while c.best_header().height < N as u64 {
        let best = c.best_header();
        let batch = header_branch(&c, best.hash, 1000, best.time);
        c.accept_headers(&batch, now).unwrap();
    }
    let built = vm_rss_kb();
    drop(c);
    let start = std::time::Instant::now();
    let c = Chain::open(params::regtest(), Store::open(&path).unwrap()).unwrap();
    let load = start.elapsed();
    assert_eq!(c.best_header().height, N as u64);
    let loaded = vm_rss_kb();
    println!(
        "index of {N} headers: RSS {} kB before, {} kB after building (+{} B/block), \
         {} kB after reopening; reopening took {:.2} s",
        before,
        built,
        (built.saturating_sub(before)) * 1024 / N as u64,
        loaded,
        load.as_secs_f64()
    );
}
