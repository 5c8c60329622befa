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

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

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

/// A transaction whose signature [`Transaction::verified`] checked, and for which
/// network: the only way to make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx {
    tx: Transaction,
    network: [u8; 4],
}

impl VerifiedTx {
    /// The transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The network its signature was checked for.
    pub fn network(&self) -> [u8; 4] {
        self.network
    }

    /// The transaction, for a caller that will not need the proof again.
    pub fn into_inner(self) -> Transaction {
        self.tx
    }
}

/// Domain separation for transaction signatures.
pub const TX_SIGN_DOMAIN: &[u8] = b"skywave/tx/v1";
/// Domain separation for coinbase ids.
pub const COINBASE_DOMAIN: &[u8] = b"skywave/coinbase/v1";

/// A transaction with its id, as a mempool holds it. In a simulation every node's mempool
/// shares one (see `Store::share_tx`), so the id is kept once per process, not once per
/// node: a million (node, transaction) pairs after islands heal.
#[derive(Debug, PartialEq, Eq)]
pub struct HeldTx {
    /// [`Transaction::id`] of `tx`.
    pub id: Hash,
    /// The transaction.
    pub tx: Transaction,
}

impl std::ops::Deref for HeldTx {
    type Target = Transaction;
    fn deref(&self) -> &Transaction {
        &self.tx
    }
}

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

    /// Strict Ed25519 verification (rejects malleable signatures and weak keys), once:
    /// a good signature is remembered (see [`super::sigcache`]).
    pub fn verify(&self, network: [u8; 4]) -> bool {
        super::sigcache::verify(self, network)
    }

    /// [`Transaction::verify`] without the cache.
    pub fn verify_uncached(&self, network: [u8; 4]) -> bool {
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

    /// This transaction with its signature checked for `network`; `None` when the
    /// signature is bad. Lets a caller verify off the node's thread (the API's handlers)
    /// so that the chain does not verify it a second time.
    pub fn verified(self, network: [u8; 4]) -> Option<VerifiedTx> {
        self.verify(network)
            .then_some(VerifiedTx { tx: self, network })
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

/// Human-readable part of addresses on the main network: `sky1...`.
pub const HRP_MAIN: &str = "sky";
/// Human-readable part of addresses on the regression-test network: `rsky1...`.
pub const HRP_REGTEST: &str = "rsky";
/// Human-readable part of addresses on any other (test) network: `tsky1...`.
pub const HRP_TEST: &str = "tsky";

/// The address prefix (bech32m human-readable part) of a network, by its name.
pub fn address_hrp(network: &str) -> &'static str {
    match network {
        "main" => HRP_MAIN,
        "regtest" => HRP_REGTEST,
        _ => HRP_TEST,
    }
}

/// Why an address string was refused. Every message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A bare 64-hex-digit key, the form used before addresses had checksums.
    #[error(
        "'{given}' is an old hex address: refused, because a typo in it would go unnoticed. \
         Its checksummed form on this network is {new}"
    )]
    OldHex {
        /// What was given.
        given: String,
        /// The same key, checksummed, for this network.
        new: String,
    },
    /// A valid address for another network.
    #[error("'{given}' is an address for another network (prefix {found}1); this network's addresses start with {expected}1")]
    WrongNetwork {
        /// What was given.
        given: String,
        /// Its prefix.
        found: String,
        /// This network's prefix.
        expected: &'static str,
    },
    /// Not an address at all, or one with a typo (the checksum does not match).
    #[error("'{given}' is not a valid address ({why}); addresses look like {expected}1... and carry a checksum, so a typo is caught here")]
    Invalid {
        /// What was given.
        given: String,
        /// What the decoder said.
        why: String,
        /// This network's prefix.
        expected: &'static str,
    },
}

impl Address {
    /// The address as users see it: bech32m with the network's prefix, e.g. `rsky1...`
    /// on regtest. The data part is the 32-byte key; the checksum catches typos.
    pub fn to_text(&self, network: &str) -> String {
        // The HRPs are short valid constants and 32 bytes fit the code length: the
        // encoder cannot fail, the fallback is never taken.
        bech32::Hrp::parse(address_hrp(network))
            .ok()
            .and_then(|hrp| bech32::encode::<bech32::Bech32m>(hrp, &self.0).ok())
            .unwrap_or_else(|| self.to_hex())
    }

    /// Parse a user's address for `network`. Old hex addresses, other networks' prefixes,
    /// bech32 (not bech32m) checksums and bad lengths are refused with a message that
    /// says what to use instead.
    pub fn parse(s: &str, network: &str) -> Result<Address, AddressError> {
        let s = s.trim();
        let expected = address_hrp(network);
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(a) = Address::from_hex(s) {
                return Err(AddressError::OldHex {
                    given: s.to_string(),
                    new: a.to_text(network),
                });
            }
        }
        // Longest valid address: 4-char HRP + 1 + 52 data + 6 checksum; the cap keeps
        // the decoder from chewing on a pasted page.
        let shown: String = s.chars().take(100).collect();
        let invalid = |why: String| AddressError::Invalid {
            given: shown.clone(),
            why,
            expected,
        };
        if s.len() > 100 {
            return Err(invalid("too long".into()));
        }
        let checked = bech32::primitives::decode::CheckedHrpstring::new::<bech32::Bech32m>(s)
            .map_err(|e| invalid(e.to_string()))?;
        let hrp = checked.hrp().to_lowercase();
        if hrp != expected {
            return Err(AddressError::WrongNetwork {
                given: shown,
                found: hrp,
                expected,
            });
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| invalid(format!("{} bytes of key, expected 32", b.len())))?;
        Ok(Address(key))
    }
}

/// Name of the coin, shown after amounts.
pub const UNIT: &str = "SKY";
/// Decimal places of one coin: amounts on the chain are in base units, 10^8 to the coin
/// (a block subsidy of 50 coins is 5 000 000 000 base units).
pub const UNIT_DECIMALS: u32 = 8;
/// Base units in one coin.
pub const BASE_UNITS_PER_COIN: u64 = 100_000_000;

/// An amount in base units as users read it: `0.00500000 SKY`.
pub fn format_amount(base_units: u64) -> String {
    format!(
        "{}.{:0width$} {UNIT}",
        base_units / BASE_UNITS_PER_COIN,
        base_units % BASE_UNITS_PER_COIN,
        width = UNIT_DECIMALS as usize
    )
}

/// Parse an amount: a whole number is base units (`500000`); a number with a decimal
/// point or the unit is coins (`0.005`, `1.5 SKY`, `2sky`), at most 8 decimals.
pub fn parse_amount(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, coins) = match lower.strip_suffix(&UNIT.to_ascii_lowercase()) {
        Some(n) => (n.trim(), true),
        None => (lower.as_str(), lower.contains('.')),
    };
    let bad = || {
        format!("'{s}' is not an amount: give base units (500000) or {UNIT} with up to {UNIT_DECIMALS} decimals (0.005 {UNIT})")
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    if !coins {
        return num.parse::<u64>().map_err(|_| bad());
    }
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.')
        || frac.len() > UNIT_DECIMALS as usize
        || (whole.is_empty() && frac.is_empty())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_units: u64 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<width$}", width = UNIT_DECIMALS as usize);
        padded.parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(BASE_UNITS_PER_COIN)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(bad)
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn addresses_round_trip_per_network_and_catch_typos() {
        let a = Address([7; 32]);
        let main = a.to_text("main");
        let reg = a.to_text("regtest");
        assert!(main.starts_with("sky1"), "{main}");
        assert!(reg.starts_with("rsky1"), "{reg}");
        assert_eq!(Address::parse(&main, "main"), Ok(a));
        assert_eq!(Address::parse(&main.to_uppercase(), "main"), Ok(a));
        assert_eq!(Address::parse(&reg, "regtest"), Ok(a));
        // One character changed anywhere in the data part is caught.
        for i in 5..main.len() {
            let mut b = main.clone().into_bytes();
            b[i] = if b[i] == b'q' { b'p' } else { b'q' };
            let typo = String::from_utf8(b).unwrap();
            assert!(
                matches!(
                    Address::parse(&typo, "main"),
                    Err(AddressError::Invalid { .. })
                ),
                "typo at {i} accepted: {typo}"
            );
        }
        assert!(matches!(
            Address::parse(&reg, "main"),
            Err(AddressError::WrongNetwork { .. })
        ));
    }

    #[test]
    fn old_hex_addresses_are_refused_with_the_new_form() {
        let a = Address([0xab; 32]);
        let e = Address::parse(&a.to_hex(), "regtest").unwrap_err();
        assert!(e.to_string().contains(&a.to_text("regtest")), "{e}");
    }

    #[test]
    fn bech32_without_m_and_wrong_lengths_are_refused() {
        let hrp = bech32::Hrp::parse("sky").unwrap();
        let classic = bech32::encode::<bech32::Bech32>(hrp, &[7; 32]).unwrap();
        assert!(Address::parse(&classic, "main").is_err());
        let short = bech32::encode::<bech32::Bech32m>(hrp, &[7; 20]).unwrap();
        assert!(Address::parse(&short, "main").is_err());
        assert!(Address::parse(&"x".repeat(10_000), "main").is_err());
        assert!(Address::parse("", "main").is_err());
    }

    #[test]
    fn amounts_show_unit_and_decimals_and_parse_both_ways() {
        assert_eq!(format_amount(500_000), "0.00500000 SKY");
        assert_eq!(format_amount(5_000_000_000), "50.00000000 SKY");
        assert_eq!(format_amount(1), "0.00000001 SKY");
        assert_eq!(parse_amount("500000"), Ok(500_000));
        assert_eq!(parse_amount("0.005"), Ok(500_000));
        assert_eq!(parse_amount("1.5 SKY"), Ok(150_000_000));
        assert_eq!(parse_amount("2sky"), Ok(200_000_000));
        assert_eq!(parse_amount(".5"), Ok(50_000_000));
        for bad in [
            "",
            "SKY",
            "1.000000001",
            "1.2.3",
            "-1",
            "1e3",
            "abc",
            "184467440737.09551616",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }
}
