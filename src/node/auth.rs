//! The handshake proofs. Each side of a session answers the other's `Hello` with an
//! [`Auth`]: an Ed25519 signature by its node key, and where the network has a key, a
//! keyed BLAKE3 MAC as well, both over one transcript:
//!
//! `"skywave-handshake-v2" | network (4) | prover id (32) | verifier id (32) |
//!  verifier's nonce (8, LE) | prover's nonce (8, LE)`
//!
//! The verifier's nonce is fresh (drawn from ChaCha20, see `Node::nonce`), so a proof
//! cannot be replayed into another session. Both ids and the order (prover first) fix
//! the role, so a proof cannot be reflected back to its sender or passed to a third node
//! as its own. Signatures and MACs authenticate; nothing is encrypted, so this is allowed
//! on amateur radio.

use crate::chain::Sig;
use crate::wire::envelope::{self, TAG_LEN};
use crate::wire::message::Auth;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Argon2id cost for the network key: 19 MiB and two passes (OWASP's minimum for
/// Argon2id). It runs once at start-up, and makes every guess at a passphrase heard
/// in a proof on the air cost the same.
const KDF_MEMORY_KIB: u32 = 19 * 1024;
const KDF_PASSES: u32 = 2;

/// Derive the 32-byte network key from the operator's passphrase, for the network with
/// id `network` (the salt, so one network's guesses do not serve another).
pub fn network_key(passphrase: &str, network: [u8; 4]) -> anyhow::Result<[u8; 32]> {
    let params = argon2::Params::new(KDF_MEMORY_KIB, KDF_PASSES, 1, Some(32))
        .map_err(|e| anyhow::anyhow!("network key parameters: {e}"))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut salt = b"skywave-network-".to_vec();
    salt.extend_from_slice(&network);
    let mut key = [0u8; 32];
    kdf.hash_password_into(passphrase.trim().as_bytes(), &salt, &mut key)
        .map_err(|e| anyhow::anyhow!("network key derivation: {e}"))?;
    Ok(key)
}

/// Who proves what to whom: the transcript both the signature and the MAC cover.
#[derive(Clone, Copy, Debug)]
pub struct Transcript {
    /// Network id of the session.
    pub network: [u8; 4],
    /// The node that proves (signs).
    pub prover: [u8; 32],
    /// The node that checks, as its `Hello` names it.
    pub verifier: [u8; 32],
    /// The verifier's `Hello` nonce the proof answers.
    pub seen: u64,
    /// The prover's own `Hello` nonce, as the verifier holds it.
    pub nonce: u64,
}

impl Transcript {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(b"skywave-handshake-v2");
        m.extend_from_slice(&self.network);
        m.extend_from_slice(&self.prover);
        m.extend_from_slice(&self.verifier);
        m.extend_from_slice(&self.seen.to_le_bytes());
        m.extend_from_slice(&self.nonce.to_le_bytes());
        m
    }

    fn mac(&self, key: &[u8; 32]) -> [u8; 32] {
        *blake3::keyed_hash(key, &self.bytes()).as_bytes()
    }
}

/// The proof the holder of `signer` (whose public key is `t.prover`) sends.
pub fn prove(signer: &SigningKey, network_key: Option<&[u8; 32]>, t: &Transcript) -> Auth {
    Auth {
        seen: t.seen,
        nonce: t.nonce,
        sig: Sig(signer.sign(&t.bytes()).to_bytes()),
        mac: network_key.map(|k| t.mac(k)),
    }
}

/// The key two nodes share for session tags: X25519 between one's node key and the
/// other's id (each mapped from Ed25519 as for Noise, ADR 0011), hashed with the network
/// and both ids. Only the holders of the two node keys can compute it, so a station that
/// relays both handshakes (and holds a proven session with each side under the other's
/// id) cannot add a message either side believes. It is the same for every session of
/// the pair: a tag proves who wrote the message, and a replayed message only says again
/// what its writer said (see docs/THREAT-MODEL.md). `None` for an id that is not a
/// point, or whose exchange gives nothing (small order).
pub fn pair_key(ours: &SigningKey, theirs: &[u8; 32], network: [u8; 4]) -> Option<[u8; 32]> {
    let their_key = VerifyingKey::from_bytes(theirs).ok()?;
    let shared = their_key
        .to_montgomery()
        .mul_clamped(ours.to_scalar_bytes())
        .to_bytes();
    if shared == [0u8; 32] {
        return None;
    }
    let our_id = ours.verifying_key().to_bytes();
    let (lo, hi) = if our_id <= *theirs {
        (our_id, *theirs)
    } else {
        (*theirs, our_id)
    };
    let mut h = blake3::Hasher::new_derive_key("skywave 2026-12-02 session tag key v1");
    h.update(&shared);
    h.update(&network);
    h.update(&lo);
    h.update(&hi);
    Some(*h.finalize().as_bytes())
}

/// The session tag for an envelope from `from` to `to` (the bytes before its tags, see
/// `wire::envelope::tag_prefix`): keyed BLAKE3 under their pair key, cut to 8 bytes. Both
/// ids in order, so a message cannot be reflected back to its writer as the other's.
pub fn tag(key: &[u8; 32], from: &[u8; 32], to: &[u8; 32], prefix: &[u8]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"skywave-tag-v1");
    h.update(from);
    h.update(to);
    h.update(prefix);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    t
}

/// Does `tags` hold the tag `expected`? (Compared without an early exit.)
pub fn has_tag(tags: &[[u8; TAG_LEN]], expected: &[u8; TAG_LEN]) -> bool {
    tags.iter().fold(false, |found, t| {
        let diff = t.iter().zip(expected).fold(0u8, |d, (a, b)| d | (a ^ b));
        found | (diff == 0)
    })
}

/// The untagged envelope `untagged` sealed with one tag, for the node with id `to`, by
/// the holder of `ours` (a test or tool that speaks raw envelopes to a node after the
/// handshake). `None` if `to` is not a usable id.
pub fn seal_for(
    ours: &SigningKey,
    to: &[u8; 32],
    network: [u8; 4],
    untagged: &[u8],
) -> Option<Vec<u8>> {
    let key = pair_key(ours, to, network)?;
    let prefix = envelope::tag_prefix(untagged);
    let t = tag(&key, &ours.verifying_key().to_bytes(), to, &prefix);
    Some(envelope::seal(prefix, &[t]))
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// The claimed node id is not a valid Ed25519 public key.
    BadId,
    /// The signature does not verify for the claimed node id.
    BadSignature,
    /// This network has a key and the proof lacks the MAC, or it does not match.
    NoKey,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProofError::BadId => "its node id is not an Ed25519 public key",
            ProofError::BadSignature => {
                "its handshake signature does not verify (it does not hold the key of the node id it claims)"
            }
            ProofError::NoKey => {
                "its network key proof does not match (the peer lacks this network's key)"
            }
        })
    }
}

/// Does `auth` prove transcript `t` (with `t.seen` and `t.nonce` taken from `auth`)? The
/// caller checks that `auth.seen` is a nonce it issued itself and `auth.nonce` one the
/// prover's `Hello` carried: that is what defeats replays. Strict Ed25519 verification;
/// constant-time MAC compare.
pub fn verify(
    network_key: Option<&[u8; 32]>,
    t: &Transcript,
    auth: &Auth,
) -> Result<(), ProofError> {
    let vk = VerifyingKey::from_bytes(&t.prover).map_err(|_| ProofError::BadId)?;
    let sig = ed25519_dalek::Signature::from_bytes(&auth.sig.0);
    vk.verify_strict(&t.bytes(), &sig)
        .map_err(|_| ProofError::BadSignature)?;
    if let Some(k) = network_key {
        let ok = auth
            .mac
            .is_some_and(|m| blake3::Hash::from(m) == blake3::Hash::from(t.mac(k)));
        if !ok {
            return Err(ProofError::NoKey);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(prover: &SigningKey, verifier: [u8; 32]) -> Transcript {
        Transcript {
            network: [1, 2, 3, 4],
            prover: prover.verifying_key().to_bytes(),
            verifier,
            seen: 7,
            nonce: 9,
        }
    }

    #[test]
    fn a_proof_binds_key_ids_nonces_role_and_network() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let k = network_key("club secret", [1, 2, 3, 4]).unwrap();
        let ta = t(&a, b.verifying_key().to_bytes());
        let p = prove(&a, Some(&k), &ta);
        assert_eq!(verify(Some(&k), &ta, &p), Ok(()));
        assert_eq!(verify(None, &ta, &p), Ok(()));
        // Another verifier, network, nonce or role does not verify.
        let other = Transcript {
            verifier: [9; 32],
            ..ta
        };
        assert_eq!(verify(None, &other, &p), Err(ProofError::BadSignature));
        let other = Transcript {
            network: [1, 2, 3, 5],
            ..ta
        };
        assert_eq!(verify(None, &other, &p), Err(ProofError::BadSignature));
        let other = Transcript { seen: 8, ..ta };
        assert_eq!(verify(None, &other, &p), Err(ProofError::BadSignature));
        let other = Transcript { nonce: 8, ..ta };
        assert_eq!(verify(None, &other, &p), Err(ProofError::BadSignature));
        // Reflected: B cannot present A's proof as its own.
        let reflected = Transcript {
            prover: b.verifying_key().to_bytes(),
            verifier: a.verifying_key().to_bytes(),
            ..ta
        };
        assert_eq!(verify(None, &reflected, &p), Err(ProofError::BadSignature));
        // Claiming A's id without A's key: B signs, A's id is checked.
        let forged = prove(&b, Some(&k), &ta);
        assert_eq!(
            verify(Some(&k), &ta, &forged),
            Err(ProofError::BadSignature)
        );
        // Without the network key (or with another) the MAC fails.
        let keyless = prove(&a, None, &ta);
        assert_eq!(verify(Some(&k), &ta, &keyless), Err(ProofError::NoKey));
        let other_key = network_key("other", [1, 2, 3, 4]).unwrap();
        let wrong = prove(&a, Some(&other_key), &ta);
        assert_eq!(verify(Some(&k), &ta, &wrong), Err(ProofError::NoKey));
        // A junk id is refused, not a panic.
        let junk = Transcript {
            prover: [0xff; 32],
            ..ta
        };
        assert!(verify(None, &junk, &p).is_err());
    }

    /// Pins the KDF and its cost: a fast hash here would let each proof heard on the air
    /// be tried against millions of guessed passphrases a second.
    #[test]
    fn the_network_key_is_argon2id_with_19_mib_and_two_passes() {
        let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap();
        let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut want = [0u8; 32];
        kdf.hash_password_into(
            b"club secret",
            b"skywave-network-\x01\x02\x03\x04",
            &mut want,
        )
        .unwrap();
        assert_eq!(network_key("club secret", [1, 2, 3, 4]).unwrap(), want);
    }

    #[test]
    fn the_network_key_is_salted_by_network_and_trims_the_passphrase() {
        let k = network_key("club secret", [1, 2, 3, 4]).unwrap();
        assert_eq!(network_key(" club secret\n", [1, 2, 3, 4]).unwrap(), k);
        assert_ne!(network_key("club secret", [1, 2, 3, 5]).unwrap(), k);
        assert_ne!(network_key("club secret!", [1, 2, 3, 4]).unwrap(), k);
    }
}
