//! The optional network key: peers prove at the handshake that they hold a shared
//! secret, or are refused. The proof is a keyed BLAKE3 MAC (BLAKE3's keyed mode is a
//! PRF designed for this, so no HMAC construction or second hash is needed) over the
//! verifier's fresh `Hello` nonce, the prover's nonce and node id and the network. It
//! authenticates; nothing is encrypted, so it is allowed on amateur radio.

use crate::wire::message::Auth;

/// Derive the 32-byte key from the operator's passphrase.
pub fn network_key(passphrase: &str) -> [u8; 32] {
    blake3::derive_key("skywave network key v1", passphrase.trim().as_bytes())
}

/// The proof a node holding `key` sends, answering the verifier's nonce `seen`.
pub fn prove(key: &[u8; 32], network: [u8; 4], seen: u64, own_id: &[u8; 32]) -> Auth {
    Auth {
        seen,
        mac: mac(key, network, seen, own_id),
    }
}

/// Does `auth` prove the key for the prover `node_id`? The caller checks that
/// `auth.seen` is a nonce it issued itself (that is what defeats replays).
/// Constant-time compare.
pub fn verify(key: &[u8; 32], network: [u8; 4], auth: &Auth, node_id: &[u8; 32]) -> bool {
    blake3::Hash::from(auth.mac) == blake3::Hash::from(mac(key, network, auth.seen, node_id))
}

fn mac(key: &[u8; 32], network: [u8; 4], seen: u64, prover: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"skywave-auth-v1");
    h.update(&network);
    h.update(&seen.to_le_bytes());
    h.update(prover);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_binds_key_nonces_identity_and_network() {
        let k = network_key("club secret");
        let a = prove(&k, [1, 2, 3, 4], 7, &[5; 32]);
        assert!(verify(&k, [1, 2, 3, 4], &a, &[5; 32]));
        assert!(!verify(&network_key("other"), [1, 2, 3, 4], &a, &[5; 32]));
        assert!(!verify(&k, [1, 2, 3, 5], &a, &[5; 32]));
        assert!(!verify(&k, [1, 2, 3, 4], &a, &[6; 32]));
        // Answering another nonce with the same MAC does not verify.
        let replayed = Auth { seen: 8, ..a };
        assert!(!verify(&k, [1, 2, 3, 4], &replayed, &[5; 32]));
        assert_eq!(network_key(" club secret\n"), k);
    }
}
