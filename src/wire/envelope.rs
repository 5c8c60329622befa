//! The envelope: the bytes around every message body, and the checks made before a
//! message is believed. Layout (docs/PROTOCOL.md, "Envelope"):
//!
//! ```text
//! version 1: version u8 | network [u8; 4] | kind u8 | msg_id varint u64 | body (postcard) | crc32 u32 LE
//! version 2: version u8 | network [u8; 4] | kind u8 | msg_id varint u64 | body (postcard)
//!            | tag [u8; 8] × n | n u8 | crc32 u32 LE
//! ```
//!
//! Version 2 carries session tags: one per station it is meant for, each a MAC by the key
//! that station and the sender share (see `node::auth::tag`), over every byte before the
//! tags. Tags authenticate; nothing is encrypted.

use super::message::Message;
use crc::{Crc, CRC_32_ISO_HDLC};
use serde::{de::DeserializeOwned, Serialize};

/// Envelope format version in the first byte of every untagged message.
pub const ENVELOPE_VERSION: u8 = 1;
/// Envelope format version of a message that carries session tags.
pub const TAGGED_VERSION: u8 = 2;
/// Bytes of one session tag.
pub const TAG_LEN: usize = 8;
/// Most tags one envelope carries (a broadcast to that many stations).
pub const MAX_TAGS: usize = 16;

/// Largest envelope accepted, CRC included. Every message within the limits of
/// `message::limits` encodes to less than this.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// Smallest possible envelope: version, network, kind, a one-byte msg_id, no body, CRC.
/// (No body is empty in practice; the body's own decoding rejects what this lets through.)
pub const MIN_MESSAGE_LEN: usize = 1 + 4 + 1 + 1 + 4;

/// Offset of the msg_id varint.
const MSG_ID_AT: usize = 6;
/// Length of the CRC trailer.
const CRC_LEN: usize = 4;
/// Longest LEB128 encoding of a u64.
const MAX_VARINT_U64: usize = 10;

/// CRC-32/ISO-HDLC (the zip/Ethernet CRC): reflected poly 0x04C11DB7, init and xorout
/// 0xFFFFFFFF, check 0xCBF43926.
pub const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A decoded, checked message with its envelope fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope version: [`ENVELOPE_VERSION`], or [`TAGGED_VERSION`] with `tags`.
    pub version: u8,
    /// Network id: first four bytes of the genesis hash.
    pub network: [u8; 4],
    /// Sender-chosen id, echoed by end-to-end acknowledgements.
    pub msg_id: u64,
    /// The message.
    pub message: Message,
    /// Session tags (version 2), one per station the sender meant it for.
    pub tags: Vec<[u8; TAG_LEN]>,
    /// How many leading bytes of the envelope the tags cover.
    pub tagged_len: usize,
}

/// Why bytes were refused. Each variant's message says exactly what was wrong, so a log
/// line or a `Reject` reason is enough to debug a peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the smallest envelope.
    #[error("message too short: {len} bytes, an envelope needs at least {min}")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Smallest envelope.
        min: usize,
    },
    /// More bytes than [`MAX_MESSAGE_LEN`].
    #[error("message too long: {len} bytes, limit {max}")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The CRC trailer does not match the bytes before it.
    #[error("bad CRC-32: computed {expected:#010x} over the message, trailer says {got:#010x}")]
    BadCrc {
        /// CRC computed over the received bytes.
        expected: u32,
        /// CRC in the trailer.
        got: u32,
    },
    /// Envelope version byte other than [`ENVELOPE_VERSION`] and [`TAGGED_VERSION`].
    #[error("unsupported envelope version {0} (this node speaks {ENVELOPE_VERSION} and {TAGGED_VERSION})")]
    UnsupportedVersion(u8),
    /// A version-2 envelope whose tag count is 0, above [`MAX_TAGS`], or longer than it.
    #[error("bad session tags: count {0}")]
    BadTags(usize),
    /// Kind byte that names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The msg_id varint is malformed, overlong or runs into the CRC.
    #[error("bad msg_id varint: {0}")]
    BadMsgId(&'static str),
    /// The body does not decode as the kind's payload.
    #[error("{name} (kind {kind}) body does not decode: {err}", name = kind_name(*kind))]
    Body {
        /// Kind byte.
        kind: u8,
        /// The decoder's complaint.
        err: String,
    },
    /// The body decoded but bytes were left before the CRC.
    #[error("{name} (kind {kind}) body has {n} trailing bytes", name = kind_name(*kind))]
    TrailingBytes {
        /// Kind byte.
        kind: u8,
        /// Bytes left over.
        n: usize,
    },
    /// The body decoded but is not in canonical form (an overlong varint); see
    /// docs/PROTOCOL.md, "Canonical encoding".
    #[error("{name} (kind {kind}) body is not canonically encoded (overlong varint)", name = kind_name(*kind))]
    NonCanonical {
        /// Kind byte.
        kind: u8,
    },
    /// A count or length exceeds its limit in `message::limits`.
    #[error("{what} is {len}, limit {max}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A Hello callsign with a byte outside `[A-Z0-9-]`.
    #[error("callsign {0:?} has a character outside [A-Z0-9-]")]
    BadCallsign(String),
    /// A stream frame length prefix of 0 or above [`MAX_MESSAGE_LEN`]; the stream cannot
    /// be resynchronised.
    #[error("stream frame length {len} outside 1..={max}; stream abandoned")]
    FrameTooLong {
        /// Length in the prefix.
        len: u64,
        /// Limit.
        max: usize,
    },
}

fn kind_name(kind: u8) -> &'static str {
    Message::kind_name(kind).unwrap_or("unknown")
}

/// Encode `msg` in an envelope. Does not check limits: that is the receiver's job, and a
/// message that passes `Message::check_limits` always fits in [`MAX_MESSAGE_LEN`].
pub fn encode(network: [u8; 4], msg_id: u64, msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&network);
    out.push(msg.kind());
    put_varint_u64(&mut out, msg_id);
    let mut out = match msg {
        Message::Hello(m) => append(out, m),
        Message::Ping(n) | Message::Pong(n) => append(out, n),
        Message::Inv(v) | Message::GetData(v) | Message::NotFound(v) => append(out, v),
        Message::GetHeaders(m) => append(out, m),
        Message::Headers(v) => append(out, v),
        Message::Block(m) => append(out, m),
        Message::Tx(m) => append(out, m),
        Message::Reject(m) => append(out, m),
        Message::Ack(v) => append(out, v),
        Message::Auth(m) => append(out, m),
        Message::GetAddr => append(out, &()),
        Message::Addr(v) => append(out, v),
        Message::CompactBlock(m) => append(out, m),
        Message::GetBlockTxn(m) => append(out, m),
        Message::BlockTxn(m) => append(out, m),
    };
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The bytes session tags cover for the untagged envelope `untagged` (from [`encode`]):
/// the same without its CRC, marked version 2. Pass them, with the tags made over them,
/// to [`seal`].
pub fn tag_prefix(untagged: &[u8]) -> Vec<u8> {
    let mut out = untagged[..untagged.len().saturating_sub(CRC_LEN)].to_vec();
    if let Some(v) = out.first_mut() {
        *v = TAGGED_VERSION;
    }
    out
}

/// A version-2 envelope: `prefix` (from [`tag_prefix`]), the tags (1 to [`MAX_TAGS`];
/// more are cut), their count and the CRC over all of it.
pub fn seal(mut prefix: Vec<u8>, tags: &[[u8; TAG_LEN]]) -> Vec<u8> {
    let tags = &tags[..tags.len().min(MAX_TAGS)];
    for t in tags {
        prefix.extend_from_slice(t);
    }
    prefix.push(tags.len() as u8);
    let crc = CRC32.checksum(&prefix);
    prefix.extend_from_slice(&crc.to_le_bytes());
    prefix
}

fn append<T: Serialize>(out: Vec<u8>, value: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec has no failure path: no maps of unknown
    // length, no custom errors, and a Vec never runs out of room.
    postcard::to_extend(value, out).expect("postcard encoding of wire types cannot fail")
}

/// Decode and check one envelope: length, CRC, version, kind, msg_id, body (fully
/// consumed and canonical), then `Message::check_limits`.
pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
    let len = bytes.len();
    if len < MIN_MESSAGE_LEN {
        return Err(WireError::TooShort {
            len,
            min: MIN_MESSAGE_LEN,
        });
    }
    if len > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    let (signed, trailer) = bytes.split_at(len - CRC_LEN);
    let got = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let expected = CRC32.checksum(signed);
    if expected != got {
        return Err(WireError::BadCrc { expected, got });
    }
    let version = signed[0];
    let (signed, tags) = match version {
        ENVELOPE_VERSION => (signed, Vec::new()),
        TAGGED_VERSION => {
            let n = usize::from(signed[signed.len() - 1]);
            // Room for tags after the header and a one-byte msg_id, before the count.
            let room = signed.len().saturating_sub(MSG_ID_AT + 1 + 1);
            if n == 0 || n > MAX_TAGS || n * TAG_LEN > room {
                return Err(WireError::BadTags(n));
            }
            let at = signed.len() - 1 - n * TAG_LEN;
            let tags = signed[at..signed.len() - 1]
                .chunks_exact(TAG_LEN)
                .map(|c| {
                    let mut t = [0u8; TAG_LEN];
                    t.copy_from_slice(c);
                    t
                })
                .collect();
            (&signed[..at], tags)
        }
        v => return Err(WireError::UnsupportedVersion(v)),
    };
    let network = [signed[1], signed[2], signed[3], signed[4]];
    let kind = signed[5];
    if Message::kind_name(kind).is_none() {
        return Err(WireError::UnknownKind(kind));
    }
    let (msg_id, used) = get_varint_u64(&signed[MSG_ID_AT..])?;
    let body = &signed[MSG_ID_AT + used..];
    let message = match kind {
        1 => Message::Hello(body_as(kind, body)?),
        2 => Message::Ping(body_as(kind, body)?),
        3 => Message::Pong(body_as(kind, body)?),
        4 => Message::Inv(body_as(kind, body)?),
        5 => Message::GetData(body_as(kind, body)?),
        6 => Message::GetHeaders(body_as(kind, body)?),
        7 => Message::Headers(body_as(kind, body)?),
        8 => Message::Block(body_as(kind, body)?),
        9 => Message::Tx(body_as(kind, body)?),
        10 => Message::NotFound(body_as(kind, body)?),
        11 => Message::Reject(body_as(kind, body)?),
        12 => Message::Ack(body_as(kind, body)?),
        13 => Message::CompactBlock(body_as(kind, body)?),
        14 => Message::GetBlockTxn(body_as(kind, body)?),
        15 => Message::BlockTxn(body_as(kind, body)?),
        16 => Message::Auth(body_as(kind, body)?),
        17 => {
            body_as::<()>(kind, body)?;
            Message::GetAddr
        }
        18 => Message::Addr(body_as(kind, body)?),
        _ => return Err(WireError::UnknownKind(kind)),
    };
    debug_assert_eq!(message.kind(), kind);
    message.check_limits()?;
    Ok(Envelope {
        version,
        network,
        msg_id,
        message,
        tags,
        tagged_len: signed.len(),
    })
}

/// Decode `body` as exactly one `T`. Postcard reads overlong varints without complaint,
/// so the value is re-encoded and compared: one message has exactly one encoding, and a
/// block's size on the wire is the size consensus measures.
fn body_as<T: DeserializeOwned + Serialize>(kind: u8, body: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| WireError::Body {
        kind,
        err: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            kind,
            n: rest.len(),
        });
    }
    let canonical = postcard::to_stdvec(&value).map_err(|e| WireError::Body {
        kind,
        err: e.to_string(),
    })?;
    if canonical != body {
        return Err(WireError::NonCanonical { kind });
    }
    Ok(value)
}

/// The network id of an envelope without checking anything else, to drop foreign
/// traffic cheaply (e.g. on a shared radio channel). `None` if `bytes` cannot be an
/// envelope of a version this node speaks.
pub fn peek_network(bytes: &[u8]) -> Option<[u8; 4]> {
    if bytes.len() < MIN_MESSAGE_LEN || !matches!(bytes[0], ENVELOPE_VERSION | TAGGED_VERSION) {
        return None;
    }
    Some([bytes[1], bytes[2], bytes[3], bytes[4]])
}

/// The kind byte of an envelope without checking anything else (e.g. to tell keep-alives
/// from payload on a link). `None` if `bytes` cannot be an envelope.
pub fn peek_kind(bytes: &[u8]) -> Option<u8> {
    peek_network(bytes)?;
    bytes.get(MSG_ID_AT - 1).copied()
}

/// The hash of the block whose envelope starts with `prefix` (a transfer's first
/// fragment): the header leads the body. Nothing is checked but that the header decodes:
/// this names the block a transfer under way carries, it proves nothing about it.
pub fn peek_block_hash(prefix: &[u8]) -> Option<crate::chain::Hash> {
    if Message::kind_name(peek_kind(prefix)?) != Some("block") {
        return None;
    }
    let (_, n) = get_varint_u64(prefix.get(MSG_ID_AT..)?).ok()?;
    let body = prefix.get(MSG_ID_AT + n..)?;
    let (header, _) = postcard::take_from_bytes::<crate::chain::Header>(body).ok()?;
    Some(header.hash())
}

fn put_varint_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read a canonical (shortest-form) LEB128 u64; returns the value and bytes used.
fn get_varint_u64(bytes: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().take(MAX_VARINT_U64).enumerate() {
        let shift = 7 * i as u32;
        if i == MAX_VARINT_U64 - 1 && b > 0x01 {
            return Err(WireError::BadMsgId("overflows u64"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(WireError::BadMsgId("overlong encoding"));
            }
            return Ok((v, i + 1));
        }
    }
    if bytes.len() < MAX_VARINT_U64 {
        Err(WireError::BadMsgId("runs into the CRC"))
    } else {
        Err(WireError::BadMsgId("longer than 10 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::{limits, GetHeaders, Hello, InvItem, InvKind};
    use crate::wire::strategies::*;
    use proptest::prelude::*;

    const NET: [u8; 4] = [0x53, 0x4b, 0x59, 0x01];

    #[test]
    fn crc_parameters_match_the_spec() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn varint_round_trip_and_canonical() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint_u64(&mut b, v);
            assert_eq!(
                b,
                postcard::to_stdvec(&v).unwrap(),
                "postcard agrees for {v}"
            );
            assert_eq!(get_varint_u64(&b).unwrap(), (v, b.len()));
        }
        assert!(get_varint_u64(&[0x80, 0x00]).is_err(), "overlong zero");
        assert!(get_varint_u64(&[0xff; 9]).is_err(), "runs out");
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(get_varint_u64(&over).is_err(), "overflow");
    }

    #[test]
    fn rejects_each_header_fault() {
        let good = encode(NET, 7, &Message::Ping(9));
        assert_eq!(decode(&good).unwrap().message, Message::Ping(9));

        assert!(matches!(
            decode(&good[..10]),
            Err(WireError::TooShort { .. })
        ));
        assert!(matches!(
            decode(&vec![0u8; MAX_MESSAGE_LEN + 1]),
            Err(WireError::TooLong { .. })
        ));

        let reseal = |mut b: Vec<u8>| {
            let n = b.len() - 4;
            let crc = CRC32.checksum(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut b = good.clone();
        b[0] = 3;
        assert_eq!(decode(&reseal(b)), Err(WireError::UnsupportedVersion(3)));
        let mut b = good.clone();
        b[5] = 19;
        assert_eq!(decode(&reseal(b)), Err(WireError::UnknownKind(19)));
        let mut b = good.clone();
        b[5] = 0;
        assert_eq!(decode(&reseal(b)), Err(WireError::UnknownKind(0)));

        // Trailing byte after the Ping body.
        let mut b = good[..good.len() - 4].to_vec();
        b.push(0);
        b.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode(&reseal(b)),
            Err(WireError::TrailingBytes { kind: 2, n: 1 })
        );

        // Ping(9) with an overlong varint body: 0x89 0x00.
        let mut b = good[..good.len() - 5].to_vec();
        b.extend_from_slice(&[0x89, 0x00, 0, 0, 0, 0]);
        assert_eq!(decode(&reseal(b)), Err(WireError::NonCanonical { kind: 2 }));

        // Overlong msg_id: 7 as 0x87 0x00.
        let mut b = good[..6].to_vec();
        b.extend_from_slice(&[0x87, 0x00, 0x09, 0, 0, 0, 0]);
        assert!(matches!(decode(&reseal(b)), Err(WireError::BadMsgId(_))));
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let item = InvItem {
            kind: InvKind::Tx,
            hash: crate::chain::Hash([1; 32]),
        };
        let ok = Message::Inv(vec![item; limits::MAX_INV]);
        assert!(decode(&encode(NET, 1, &ok)).is_ok());
        let big = Message::GetData(vec![item; limits::MAX_INV + 1]);
        let err = decode(&encode(NET, 1, &big)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "getdata items is 501, limit 500",
            "error says what was wrong"
        );
        let loc = Message::GetHeaders(GetHeaders {
            locator: vec![item.hash; limits::MAX_LOCATOR + 1],
            stop: None,
            max: 10,
        });
        assert!(matches!(
            decode(&encode(NET, 1, &loc)),
            Err(WireError::Limit { len: 65, .. })
        ));
    }

    #[test]
    fn callsign_rules() {
        let hello = |c: &str| {
            Message::Hello(Hello {
                version: 1,
                network: NET,
                height: 0,
                tip: crate::chain::Hash::ZERO,
                work: 0,
                node_id: [0; 32],
                callsign: c.into(),
                features: 0,
                nonce: 0,
                user_agent: String::new(),
            })
        };
        for ok in ["", "N0CALL", "N0CALL-15", "DL1ABC-9"] {
            assert_eq!(hello(ok).check_limits(), Ok(()), "{ok}");
        }
        assert!(matches!(
            hello("N0CALL-150").check_limits(),
            Err(WireError::Limit { .. })
        ));
        for bad in ["n0call", "N0 CALL", "N0CALL/P", "ÄB"] {
            assert!(
                matches!(hello(bad).check_limits(), Err(WireError::BadCallsign(_))),
                "{bad}"
            );
        }
    }

    /// A 50-byte envelope whose Headers body claims 2^32 headers must fail at once,
    /// without reserving memory for them: serde caps preallocation by the bytes left
    /// (postcard reports them as its size hint) and postcard fails when they run out.
    #[test]
    fn huge_declared_vec_fails_fast_without_allocating() {
        for kind in [4u8, 5, 7, 10] {
            let mut b = vec![ENVELOPE_VERSION, NET[0], NET[1], NET[2], NET[3], kind, 1];
            put_varint_u64(&mut b, 1 << 32);
            b.resize(46, 0x01);
            let crc = CRC32.checksum(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(b.len(), 50);
            let t = std::time::Instant::now();
            let err = decode(&b).unwrap_err();
            assert!(matches!(err, WireError::Body { .. }), "{err}");
            assert!(t.elapsed() < std::time::Duration::from_millis(100));
        }
    }

    /// Largest messages the limits allow, with the widest varints, still fit.
    #[test]
    fn max_messages_fit_in_max_len() {
        let h = crate::chain::Header {
            version: u32::MAX,
            prev: crate::chain::Hash([0xff; 32]),
            merkle_root: crate::chain::Hash([0xff; 32]),
            time: u64::MAX,
            bits: u32::MAX,
            nonce: u64::MAX,
            height: u64::MAX,
        };
        let tx = crate::chain::Transaction {
            from: crate::chain::Address([0xff; 32]),
            to: crate::chain::Address([0xff; 32]),
            amount: u64::MAX,
            fee: u64::MAX,
            nonce: u64::MAX,
            sig: crate::chain::Sig([0xff; 64]),
        };
        let block = crate::chain::Block {
            header: h.clone(),
            coinbase: crate::chain::Coinbase {
                height: u64::MAX,
                to: crate::chain::Address([0xff; 32]),
                amount: u64::MAX,
            },
            txs: vec![tx; limits::MAX_BLOCK_TXS],
        };
        // A transfer's first fragment (256 bytes) names the block it carries.
        let b = encode(NET, u64::MAX, &Message::Block(block.clone()));
        assert_eq!(peek_block_hash(&b[..256]), Some(block.hash()));
        assert_eq!(peek_block_hash(&b[..60]), None, "the header is cut");
        let headers = encode(NET, 1, &Message::Headers(vec![h.clone()]));
        assert_eq!(peek_block_hash(&headers), None, "not a block");
        for m in [
            Message::Headers(vec![h; limits::MAX_HEADERS]),
            Message::Block(block),
        ] {
            let b = encode(NET, u64::MAX, &m);
            assert!(b.len() <= MAX_MESSAGE_LEN, "{} is {}", m.name(), b.len());
            assert_eq!(decode(&b).unwrap().message, m);
        }
    }

    #[test]
    fn peek_network_reads_only_the_header() {
        let b = encode(NET, 1, &Message::Pong(1));
        assert_eq!(peek_network(&b), Some(NET));
        assert_eq!(peek_network(&b[..5]), None);
        let mut v3 = b.clone();
        v3[0] = 3;
        assert_eq!(peek_network(&v3), None);
    }

    #[test]
    fn tag_counts_outside_the_envelope_are_refused() {
        let b = encode([1, 2, 3, 4], 7, &Message::Ping(9));
        let sealed = seal(tag_prefix(&b), &[[1; TAG_LEN]]);
        assert!(decode(&sealed).is_ok());
        // A count of 0, of more than MAX_TAGS, and of more tags than the bytes hold.
        for n in [0u8, MAX_TAGS as u8 + 1, 3] {
            let mut bad = sealed[..sealed.len() - CRC_LEN].to_vec();
            *bad.last_mut().unwrap() = n;
            let crc = CRC32.checksum(&bad);
            bad.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(decode(&bad), Err(WireError::BadTags(n.into())), "count {n}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(msg in arb_message(), net in any::<[u8; 4]>(), id in any::<u64>(), n_tags in 1..=MAX_TAGS) {
            let b = encode(net, id, &msg);
            prop_assert!(b.len() <= MAX_MESSAGE_LEN);
            prop_assert_eq!(peek_network(&b), Some(net));
            let env = decode(&b).unwrap();
            let untagged = b.len() - CRC_LEN;
            prop_assert_eq!(env, Envelope { version: ENVELOPE_VERSION, network: net, msg_id: id, message: msg.clone(), tags: vec![], tagged_len: untagged });
            // The same with tags: the same message, the tags as sealed, covering the
            // bytes before them.
            let tags: Vec<[u8; TAG_LEN]> = (0..n_tags).map(|i| [i as u8 ^ 0x5a; TAG_LEN]).collect();
            let prefix = tag_prefix(&b);
            let covered = prefix.len();
            let sealed = seal(prefix, &tags);
            prop_assert_eq!(sealed.len(), b.len() + 1 + TAG_LEN * n_tags);
            prop_assert_eq!(peek_network(&sealed), Some(net));
            let env = decode(&sealed).unwrap();
            prop_assert_eq!(env, Envelope { version: TAGGED_VERSION, network: net, msg_id: id, message: msg, tags, tagged_len: covered });
        }

        #[test]
        fn any_single_bit_flip_is_rejected(
            msg in arb_message(),
            id in any::<u64>(),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut b = encode(NET, id, &msg);
            let i = pos.index(b.len());
            b[i] ^= 1 << bit;
            let r = decode(&b);
            prop_assert!(matches!(r, Err(WireError::BadCrc { .. })), "{:?}", r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&b);
            let _ = peek_network(&b);
            let _ = peek_block_hash(&b);
        }

        /// Garbage behind a valid header and CRC reaches the body decoder: it must not
        /// panic either, and whatever it accepts must re-encode to the same bytes.
        #[test]
        fn arbitrary_bodies_never_panic(
            kind in 0u8..=16,
            id in any::<u64>(),
            body in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut b = vec![ENVELOPE_VERSION, NET[0], NET[1], NET[2], NET[3], kind];
            put_varint_u64(&mut b, id);
            b.extend_from_slice(&body);
            let crc = CRC32.checksum(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            if let Ok(env) = decode(&b) {
                prop_assert_eq!(encode(NET, id, &env.message), b);
            }
        }
    }
}
