//! The chain's data types: hashes, addresses, headers, transactions, blocks.
//!
//! Hashing and signing use fixed byte layouts (documented in docs/PROTOCOL.md), not the
//! postcard wire encoding, so that ids never depend on a serializer's choices.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Serialize a fixed-size byte array as hex for humans (JSON) and as raw bytes on the wire.
macro_rules! byte_array_type {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parse exactly `2 * len` hex digits.
            pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut out)?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    use serde::ser::SerializeTuple;
                    let mut t = s.serialize_tuple($len)?;
                    for b in &self.0 {
                        t.serialize_element(b)?;
                    }
                    t.end()
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    $name::from_hex(&s).map_err(serde::de::Error::custom)
                } else {
                    struct V;
                    impl<'de> serde::de::Visitor<'de> for V {
                        type Value = $name;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            write!(f, "{} bytes", $len)
                        }
                        fn visit_seq<A: serde::de::SeqAccess<'de>>(
                            self,
                            mut seq: A,
                        ) -> Result<$name, A::Error> {
                            let mut out = [0u8; $len];
                            for (i, b) in out.iter_mut().enumerate() {
                                *b = seq
                                    .next_element()?
                                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                            }
                            Ok($name(out))
                        }
                    }
                    d.deserialize_tuple($len, V)
                }
            }
        }
    };
}

byte_array_type!(
    /// A BLAKE3 hash: block ids, transaction ids, merkle nodes.
    Hash,
    32
);
byte_array_type!(
    /// An account address: the account's Ed25519 public key.
    Address,
    32
);
byte_array_type!(
    /// An Ed25519 signature.
    Sig,
    64
);

impl Hash {
    /// The all-zero hash (the genesis block's `prev`).
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// BLAKE3 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }
}

impl Default for Hash {
    fn default() -> Self {
        Hash::ZERO
    }
}

/// Size of [`Header::hash_bytes`].
pub const HEADER_HASH_LEN: usize = 96;

/// A block header. Its hash (BLAKE3 over [`Header::hash_bytes`]) is the block id and the
/// proof of work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Block format version (1).
    pub version: u32,
    /// Hash of the parent block's header.
    pub prev: Hash,
    /// Merkle root over the coinbase id and the transaction ids, in block order.
    pub merkle_root: Hash,
    /// Unix time in seconds, set by the miner.
    pub time: u64,
    /// Proof-of-work target in compact form (see `chain::pow`).
    pub bits: u32,
    /// Miner's nonce.
    pub nonce: u64,
    /// Height of this block (genesis = 0).
    pub height: u64,
}

impl Header {
    /// The fixed 96-byte little-endian layout that is hashed:
    /// version u32 | prev 32 | merkle_root 32 | time u64 | bits u32 | nonce u64 | height u64.
    pub fn hash_bytes(&self) -> [u8; HEADER_HASH_LEN] {
        let mut b = [0u8; HEADER_HASH_LEN];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..36].copy_from_slice(&self.prev.0);
        b[36..68].copy_from_slice(&self.merkle_root.0);
        b[68..76].copy_from_slice(&self.time.to_le_bytes());
        b[76..80].copy_from_slice(&self.bits.to_le_bytes());
        b[80..88].copy_from_slice(&self.nonce.to_le_bytes());
        b[88..96].copy_from_slice(&self.height.to_le_bytes());
        b
    }

    /// The block id.
    pub fn hash(&self) -> Hash {
        Hash::digest(&self.hash_bytes())
    }
}

/// Domain separation for transaction signatures.
pub const TX_SIGN_DOMAIN: &[u8] = b"skywave/tx/v1";
/// Domain separation for coinbase ids.
pub const COINBASE_DOMAIN: &[u8] = b"skywave/coinbase/v1";

/// A signed transfer between accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Sender: the public key that signed.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Amount moved to `to`.
    pub amount: u64,
    /// Fee paid to the miner.
    pub fee: u64,
    /// Sender's account nonce: must equal the number of transactions it has sent before.
    pub nonce: u64,
    /// Ed25519 signature over [`Transaction::signing_bytes`].
    pub sig: Sig,
}

impl Transaction {
    /// What the sender signs: domain | network id (4) | from | to | amount | fee | nonce
    /// (integers little-endian). The network id stops replay on another network.
    pub fn signing_bytes(
        network: [u8; 4],
        from: &Address,
        to: &Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Vec<u8> {
        let mut b = Vec::with_capacity(TX_SIGN_DOMAIN.len() + 4 + 64 + 24);
        b.extend_from_slice(TX_SIGN_DOMAIN);
        b.extend_from_slice(&network);
        b.extend_from_slice(&from.0);
        b.extend_from_slice(&to.0);
        b.extend_from_slice(&amount.to_le_bytes());
        b.extend_from_slice(&fee.to_le_bytes());
        b.extend_from_slice(&nonce.to_le_bytes());
        b
    }

    /// Build and sign a transaction.
    pub fn sign(
        network: [u8; 4],
        key: &ed25519_dalek::SigningKey,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Transaction {
        use ed25519_dalek::Signer;
        let from = Address(key.verifying_key().to_bytes());
        let msg = Self::signing_bytes(network, &from, &to, amount, fee, nonce);
        let sig = key.sign(&msg);
        Transaction {
            from,
            to,
            amount,
            fee,
            nonce,
            sig: Sig(sig.to_bytes()),
        }
    }

    /// Strict Ed25519 verification (rejects malleable signatures and weak keys).
    pub fn verify(&self, network: [u8; 4]) -> bool {
        let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&self.from.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&self.sig.0);
        let msg = Self::signing_bytes(
            network,
            &self.from,
            &self.to,
            self.amount,
            self.fee,
            self.nonce,
        );
        vk.verify_strict(&msg, &sig).is_ok()
    }

    /// Transaction id: BLAKE3 over from | to | amount | fee | nonce | sig. The signature is
    /// included so a forged copy cannot shadow the genuine transaction's id.
    pub fn id(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(&self.from.0);
        h.update(&self.to.0);
        h.update(&self.amount.to_le_bytes());
        h.update(&self.fee.to_le_bytes());
        h.update(&self.nonce.to_le_bytes());
        h.update(&self.sig.0);
        Hash(*h.finalize().as_bytes())
    }
}

/// The block reward: subsidy plus the block's fees, paid to the miner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coinbase {
    /// Must equal the block's height, which makes every coinbase id unique.
    pub height: u64,
    /// The miner's address.
    pub to: Address,
    /// Subsidy + fees; must match exactly.
    pub amount: u64,
}

impl Coinbase {
    /// Coinbase id: BLAKE3 over domain | height | to | amount.
    pub fn id(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(COINBASE_DOMAIN);
        h.update(&self.height.to_le_bytes());
        h.update(&self.to.0);
        h.update(&self.amount.to_le_bytes());
        Hash(*h.finalize().as_bytes())
    }
}

/// A block: header, coinbase, transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header (its hash is the block id).
    pub header: Header,
    /// The miner's reward.
    pub coinbase: Coinbase,
    /// Transactions in block order.
    pub txs: Vec<Transaction>,
}

impl Block {
    /// The block id.
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Ids of the merkle leaves: the coinbase first, then each transaction.
    pub fn leaf_ids(&self) -> Vec<Hash> {
        let mut v = Vec::with_capacity(self.txs.len() + 1);
        v.push(self.coinbase.id());
        v.extend(self.txs.iter().map(Transaction::id));
        v
    }

    /// Size of the block in its postcard wire encoding: the figure block size limits apply to.
    pub fn encoded_len(&self) -> usize {
        postcard::to_stdvec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    }
}
