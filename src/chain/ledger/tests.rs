use super::*;
use crate::chain::merkle;
use crate::chain::params;
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
    let p = c.header(&parent).unwrap();
    let height = p.height + 1;
    let fees: u64 = txs.iter().map(|t| t.fee).sum();
    let coinbase = Coinbase {
        height,
        to: addr(miner),
        amount: c.params().subsidy(height) + fees,
    };
    let mut b = Block {
        header: Header {
            version: 1,
            prev: parent,
            merkle_root: Hash::ZERO,
            time,
            bits: c.params().pow_limit_bits,
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
    let t = tx(&c, 1, 2, 1000, 2000, 0);
    let id = t.id();
    assert_eq!(c.submit_tx(t.clone(), T0).unwrap(), TxOutcome::Accepted);
    assert_eq!(c.submit_tx(t.clone(), T0).unwrap(), TxOutcome::Duplicate);
    assert_eq!(c.next_nonce(&addr(1)), 1);
    assert_eq!(c.find_tx(&id).unwrap(), Some((t.clone(), None)));
    let b = mine_tip(&mut c, 3);
    assert_eq!(b.txs, vec![t.clone()]);
    assert_eq!(b.coinbase.amount, c.params().subsidy(2) + 2000);
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
        Some((t.clone(), Some((b.hash(), 2))))
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
