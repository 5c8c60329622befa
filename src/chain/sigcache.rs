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
        if g.new.contains(&k) || g.old.contains(&k) {
            return true;
        }
    }
    if !tx.verify_uncached(network) {
        return false;
    }
    let mut g = cache().lock().unwrap_or_else(|p| p.into_inner());
    if g.new.len() >= GENERATION {
        g.old = std::mem::take(&mut g.new);
    }
    g.new.insert(k);
    true
}

/// Check the signatures of a block in an envelope as it comes in, off the node's thread,
/// so that they are known good when the node connects it. Anything else, or anything
/// that does not decode, is left to the node (which answers it): this only warms the
/// cache, and stops at the first bad signature (the node scores the peer for it).
pub fn prevalidate(frame: &[u8]) {
    let Ok(env) = crate::wire::envelope::decode(frame) else {
        return;
    };
    if let crate::wire::message::Message::Block(b) = &env.message {
        super::validate::first_bad_signature(&b.txs, env.network);
    }
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

    #[test]
    fn the_cache_is_bounded_by_two_generations() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
        let first = Transaction::sign([5; 4], &key, Address([2; 32]), 5, 1, 0);
        assert!(verify(&first, [5; 4]));
        // Fill two generations with other keys (cheap: inserted directly).
        {
            let mut g = cache().lock().unwrap_or_else(|p| p.into_inner());
            for i in 0..2 * GENERATION as u64 {
                if g.new.len() >= GENERATION {
                    g.old = std::mem::take(&mut g.new);
                }
                let mut k = [0xee; 32];
                k[..8].copy_from_slice(&i.to_le_bytes());
                g.new.insert(k);
            }
            assert!(g.new.len() + g.old.len() <= 2 * GENERATION);
            assert!(!g.new.contains(&super::key([5; 4], &first)));
            assert!(!g.old.contains(&super::key([5; 4], &first)));
        }
        // Forgotten, so checked again, and still good.
        assert!(verify(&first, [5; 4]));
    }
}
