//! Signatures known to be good, so that none is checked twice: a transaction verified
//! when it was relayed is not verified again in its block, and a block's signatures
//! checked as it comes off the socket (see [`prevalidate`]) are not checked again on the
//! node's thread, where the rest of connecting a block has to wait for them.
//!
//! Like Bitcoin Core's signature cache, it only remembers successes, keyed by everything
//! the verdict depends on (the network and the transaction id, which commits to every
//! signed field and the signature), so a hit gives the same answer a check would: the
//! node's behaviour does not change, only its CPU. Bounded: two generations of
//! [`GENERATION`] keys, the older dropped when the newer fills (about 3 MB at most).
//! One per process: in the simulator the nodes share it, as they share block bodies,
//! since one node's check would give every other the same answer.

use super::types::Transaction;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Keys per generation.
pub const GENERATION: usize = 32 * 1024;

#[derive(Default)]
struct Gens {
    new: HashSet<[u8; 32]>,
    old: HashSet<[u8; 32]>,
}

impl Gens {
    fn contains(&self, k: &[u8; 32]) -> bool {
        self.new.contains(k) || self.old.contains(k)
    }

    fn insert(&mut self, k: [u8; 32]) {
        if self.new.len() >= GENERATION {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(k);
    }
}

fn cache() -> &'static Mutex<Gens> {
    static CACHE: OnceLock<Mutex<Gens>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn key(network: [u8; 4], tx: &Transaction) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"skywave sigcache");
    h.update(&network);
    h.update(&tx.id().0);
    *h.finalize().as_bytes()
}

/// Is `tx`'s signature good for `network`? Checked once; a good one is remembered.
pub fn verify(tx: &Transaction, network: [u8; 4]) -> bool {
    let k = key(network, tx);
    {
        let g = cache().lock().unwrap_or_else(|p| p.into_inner());
        if g.contains(&k) {
            return true;
        }
    }
    if !tx.verify_uncached(network) {
        return false;
    }
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(k);
    true
}

/// Check the signatures of a block in an envelope as it comes in, off the node's thread,
/// so that they are known good when the node connects it. Anything else, or anything
/// that does not decode, is left to the node (which answers it): this only warms the
/// cache, and stops at the first bad signature (the node scores the peer for it). Only a
/// block of a known network whose header carries its proof of work and commits to these
/// transactions is checked: made-up blocks must not buy signature checks for the price
/// of a frame.
pub fn prevalidate(frame: &[u8]) {
    let Ok(env) = crate::wire::envelope::decode(frame) else {
        return;
    };
    let crate::wire::message::Message::Block(b) = &env.message else {
        return;
    };
    let Some(params) = network(env.network) else {
        return;
    };
    if !super::pow::check_pow(params, &b.header)
        || super::merkle::root(&b.leaf_ids()) != b.header.merkle_root
    {
        return;
    }
    super::validate::first_bad_signature(&b.txs, env.network);
}

/// The built-in network with this id.
fn network(id: [u8; 4]) -> Option<&'static super::NetworkParams> {
    static NETS: OnceLock<Vec<super::NetworkParams>> = OnceLock::new();
    NETS.get_or_init(|| {
        super::NetworkParams::names()
            .iter()
            .filter_map(|n| super::NetworkParams::by_name(n))
            .collect()
    })
    .iter()
    .find(|p| p.network_id() == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Address;

    #[test]
    fn a_bad_signature_is_never_remembered_as_good() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let good = Transaction::sign([1; 4], &key, Address([2; 32]), 5, 1, 7);
        assert!(verify(&good, [1; 4]));
        assert!(verify(&good, [1; 4]), "remembered");
        assert!(!verify(&good, [9; 4]), "another network is another verdict");
        let mut bad = good.clone();
        bad.amount += 1;
        assert!(!verify(&bad, [1; 4]));
        assert!(!verify(&bad, [1; 4]));
        let mut bad_sig = good.clone();
        bad_sig.sig.0[3] ^= 1;
        assert!(!verify(&bad_sig, [1; 4]));
    }

    /// A block as it comes off the socket: its signatures are known good afterwards only
    /// if it carries its proof of work and commits to them.
    #[test]
    fn only_a_mined_block_that_commits_to_its_transactions_is_checked_ahead() {
        use crate::chain::{params, Block};
        use crate::wire::{envelope, message::Message};
        let net = params::regtest();
        let key = ed25519_dalek::SigningKey::from_bytes(&[44; 32]);
        let txs: Vec<Transaction> = (0..3)
            .map(|n| Transaction::sign(net.network_id(), &key, Address([6; 32]), 9, 1, n))
            .collect();
        let mut block = net.genesis.clone();
        block.txs = txs.clone();
        block.header.merkle_root = crate::chain::merkle::root(&block.leaf_ids());
        let frame = |b: &Block| envelope::encode(net.network_id(), 1, &Message::Block(b.clone()));
        let known = |t: &Transaction| {
            let k = super::key(net.network_id(), t);
            cache()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&k)
        };
        // Not committed to: the header's root is the genesis's.
        let mut loose = block.clone();
        loose.header = net.genesis.header.clone();
        while !crate::chain::pow::mine(&mut loose.header, 1_000_000) {}
        prevalidate(&frame(&loose));
        assert!(
            !known(&txs[0]),
            "checked for a header that does not commit to them"
        );
        // No proof of work (regtest's limit is easy: look for a nonce that misses it).
        let mut unmined = block.clone();
        while crate::chain::pow::check_pow(&net, &unmined.header) {
            unmined.header.nonce += 1;
        }
        prevalidate(&frame(&unmined));
        assert!(
            !known(&txs[1]),
            "checked for a block without its proof of work"
        );
        while !crate::chain::pow::mine(&mut block.header, 1_000_000) {}
        prevalidate(&frame(&block));
        assert!(
            txs.iter().all(known),
            "a mined block's signatures were not checked"
        );
    }

    #[test]
    fn the_cache_is_bounded_by_two_generations() {
        // Its own generations: the process's cache serves the other tests meanwhile.
        let mut g = Gens::default();
        let first = [1; 32];
        g.insert(first);
        for i in 0..2 * GENERATION as u64 {
            let mut k = [0xee; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            g.insert(k);
            assert!(g.new.len() + g.old.len() <= 2 * GENERATION);
            if i + 2 < GENERATION as u64 {
                assert!(g.contains(&first), "forgotten too soon, after {i}");
            }
        }
        assert!(!g.contains(&first), "never forgotten");
    }
}
