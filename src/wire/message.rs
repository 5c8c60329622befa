//! The messages nodes exchange. Each variant's body is postcard-encoded behind the
//! envelope (see `wire::envelope` and docs/PROTOCOL.md); the envelope's kind byte says
//! which variant follows.

use super::envelope::WireError;
use crate::chain::types::{Block, Hash, Header, Transaction};
use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build. Version 2: every session is proven with a
/// signed [`Auth`] (version 1 sent it only on networks with a key, and without a
/// signature). Version 3: every message after the handshake carries a session tag
/// (envelope version 2). Other versions are refused with a `Version` reject that says so.
pub const PROTOCOL_VERSION: u16 = 3;

/// Limits checked on every decoded message (before any work is done with it).
pub mod limits {
    /// Entries in a block locator.
    pub const MAX_LOCATOR: usize = 64;
    /// Headers in one `Headers` message.
    pub const MAX_HEADERS: usize = 1000;
    /// Items in one `Inv`, `GetData` or `NotFound`.
    pub const MAX_INV: usize = 500;
    /// Bytes of a callsign string.
    pub const MAX_CALLSIGN: usize = 9;
    /// Bytes of a user agent string.
    pub const MAX_USER_AGENT: usize = 64;
    /// Bytes of a reject reason.
    pub const MAX_REASON: usize = 160;
    /// Transactions in one `Block`: a wire sanity cap far above any network's consensus
    /// limit, so a block's consensus check never sees an absurd count.
    pub const MAX_BLOCK_TXS: usize = 1000;
    /// Message ids in one `Ack`.
    pub const MAX_ACK_IDS: usize = 500;
    /// Addresses in one `Addr` message.
    pub const MAX_ADDRS: usize = 64;
    /// Bytes of one address (`ip:port`, IPv6 in brackets).
    pub const MAX_ADDR_LEN: usize = 64;
}

/// Envelope `msg_id`s at or above this ask the receiver for an end-to-end [`Message::Ack`]
/// once it holds the pushed `Tx` or `Block` durably (outbox deliveries; docs/OUTBOX.md).
pub const ACK_REQUESTED_MIN_ID: u64 = 1 << 48;

/// Feature bits announced in `Hello`.
pub mod features {
    /// Serves full blocks (not a header-only station).
    pub const FULL_BLOCKS: u64 = 1 << 0;
    /// The sender has no session with the receiver although the receiver talks to it
    /// (it restarted, or lost the receiver's Hello): a station that holds a session
    /// with the sender drops it, starts a new one and greets back. Broadcast links.
    pub const NEW_SESSION: u64 = 1 << 1;
    /// A beacon: broadcast to every station, not an answer to anyone's greeting. A station
    /// that greeted the sender and has heard only its beacons since (its greeting was
    /// lost, to a hidden station keying up at the same moment) greets it again.
    pub const BEACON: u64 = 1 << 2;
    /// Reads coded broadcast transfers (packet tags `0x04` and `0x05`, ADR 0014): a
    /// station sends them on a channel only where every station it has a session with
    /// sets this bit.
    pub const CODED: u64 = 1 << 3;
}

/// What an inventory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InvKind {
    /// A block, by header hash.
    Block,
    /// A transaction, by transaction id.
    Tx,
    /// In `GetData` only: a block, wanted as a [`CompactBlock`].
    CompactBlock,
}

/// Bytes of a compact-block short transaction id.
pub const SHORT_ID_LEN: usize = 6;

/// A short transaction id: the first 6 bytes of BLAKE3(block hash | txid). Keyed by the
/// block, so nobody can prepare colliding transactions in advance.
pub type ShortId = [u8; SHORT_ID_LEN];

/// The short id of transaction `txid` within block `block`.
pub fn short_id(block: &Hash, txid: &Hash) -> ShortId {
    let mut h = blake3::Hasher::new();
    h.update(&block.0);
    h.update(&txid.0);
    let mut out = [0u8; SHORT_ID_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..SHORT_ID_LEN]);
    out
}

/// A block for a peer that probably holds most of its transactions already: the header,
/// the coinbase, and a short id per transaction (6 bytes instead of about 150).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactBlock {
    /// The block's header.
    pub header: Header,
    /// The coinbase, in full.
    pub coinbase: crate::chain::types::Coinbase,
    /// Short ids of the transactions, in block order.
    pub short_ids: Vec<ShortId>,
}

/// "Send me these transactions of that block" (positions in block order, coinbase not
/// counted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBlockTxn {
    /// The block.
    pub block: Hash,
    /// Positions of the wanted transactions.
    pub indexes: Vec<u16>,
}

/// Answer to [`GetBlockTxn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTxn {
    /// The block.
    pub block: Hash,
    /// The transactions asked for, in the order asked.
    pub txs: Vec<Transaction>,
}

/// One inventory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InvItem {
    /// Block or transaction.
    pub kind: InvKind,
    /// Its id.
    pub hash: Hash,
}

/// First message on every connection, sent by both sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Network id (first four bytes of the genesis hash); must match the envelope's.
    pub network: [u8; 4],
    /// Height of the sender's best chain.
    pub height: u64,
    /// Hash of the sender's best block.
    pub tip: Hash,
    /// Cumulative work of the sender's best chain.
    pub work: u128,
    /// The sender's node public key (Ed25519), a stable identity across links.
    pub node_id: [u8; 32],
    /// The operator's callsign, if any ("N0CALL-1"); required on radio links.
    pub callsign: String,
    /// Feature bits, see [`features`].
    pub features: u64,
    /// Random per-connection value: receiving our own nonce back means we dialled ourselves.
    pub nonce: u64,
    /// Software name and version, for logs.
    pub user_agent: String,
}

/// A refusal or complaint, sent before disconnecting or alongside a dropped item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Machine-readable reason code, see [`RejectCode`].
    pub code: RejectCode,
    /// Human-readable reason.
    pub reason: String,
    /// The block or transaction concerned, if any.
    pub about: Option<Hash>,
}

/// Why something was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    /// Undecodable or out-of-limits message.
    Malformed,
    /// Block or transaction failed validation.
    Invalid,
    /// Different network id.
    WrongNetwork,
    /// Protocol version not supported.
    Version,
    /// Message out of sequence (e.g. before the handshake).
    Protocol,
    /// Duplicate connection or self-connection.
    Duplicate,
    /// Too much, too fast.
    RateLimited,
}

/// Headers-first sync: the receiver answers with headers after the first locator hash it
/// has on its best chain, up to `max` (capped at [`limits::MAX_HEADERS`]), stopping at
/// `stop` if given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetHeaders {
    /// Hashes from the requester's tip back to genesis, densest near the tip.
    pub locator: Vec<Hash>,
    /// Stop after this header (None: as many as allowed).
    pub stop: Option<Hash>,
    /// Most headers wanted.
    pub max: u16,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Handshake.
    Hello(Hello),
    /// Liveness probe.
    Ping(u64),
    /// Answer to `Ping` with the same value.
    Pong(u64),
    /// "I have these": announces new blocks and transactions by id.
    Inv(Vec<InvItem>),
    /// "Send me these."
    GetData(Vec<InvItem>),
    /// Headers-first sync request, see [`GetHeaders`].
    GetHeaders(GetHeaders),
    /// Answer to `GetHeaders`, in chain order.
    Headers(Vec<Header>),
    /// A full block.
    Block(Block),
    /// A transaction.
    Tx(Transaction),
    /// Answer to `GetData` for items the sender does not have.
    NotFound(Vec<InvItem>),
    /// Refusal, see [`Reject`].
    Reject(Reject),
    /// End-to-end acknowledgement: the sender durably holds the pushed messages with
    /// these envelope `msg_id`s.
    Ack(Vec<u64>),
    /// A block as header, coinbase and short transaction ids.
    CompactBlock(CompactBlock),
    /// Ask for the transactions of a compact block the receiver could not fill.
    GetBlockTxn(GetBlockTxn),
    /// The transactions asked for.
    BlockTxn(BlockTxn),
    /// Handshake proof: the sender's Ed25519 signature (and the network-key MAC where
    /// the network has one) over both nonces, both ids and the network (see
    /// `node::auth`). Authenticates the peer; encrypts nothing.
    Auth(Auth),
    /// Ask a peer for TCP addresses of other nodes (peer exchange; fast links only).
    GetAddr,
    /// TCP addresses (`ip:port`) of nodes that accept connections.
    Addr(Vec<String>),
}

/// Proof that the sender holds the key of the node id its `Hello` claims (and the
/// network key, where there is one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The receiver's `Hello` nonce this answers (its greeting, or a beacon).
    pub seen: u64,
    /// The nonce of the sender's `Hello` that the receiver holds.
    pub nonce: u64,
    /// Ed25519 signature by the sender's node key over the transcript.
    pub sig: crate::chain::types::Sig,
    /// Keyed BLAKE3 over the same transcript, on a network with a key.
    pub mac: Option<[u8; 32]>,
}

impl Message {
    /// The envelope kind byte of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::Ping(_) => 2,
            Message::Pong(_) => 3,
            Message::Inv(_) => 4,
            Message::GetData(_) => 5,
            Message::GetHeaders(_) => 6,
            Message::Headers(_) => 7,
            Message::Block(_) => 8,
            Message::Tx(_) => 9,
            Message::NotFound(_) => 10,
            Message::Reject(_) => 11,
            Message::Ack(_) => 12,
            Message::CompactBlock(_) => 13,
            Message::GetBlockTxn(_) => 14,
            Message::BlockTxn(_) => 15,
            Message::Auth(_) => 16,
            Message::GetAddr => 17,
            Message::Addr(_) => 18,
        }
    }

    /// Short name for logs and statistics.
    pub fn name(&self) -> &'static str {
        // The kind byte is the single source of the kind-to-name mapping.
        Self::kind_name(self.kind()).unwrap_or("unknown")
    }

    /// Name of the message with envelope kind byte `kind`, or `None` for an unknown kind.
    pub fn kind_name(kind: u8) -> Option<&'static str> {
        Some(match kind {
            1 => "hello",
            2 => "ping",
            3 => "pong",
            4 => "inv",
            5 => "getdata",
            6 => "getheaders",
            7 => "headers",
            8 => "block",
            9 => "tx",
            10 => "notfound",
            11 => "reject",
            12 => "ack",
            13 => "cmpctblock",
            14 => "getblocktxn",
            15 => "blocktxn",
            16 => "auth",
            17 => "getaddr",
            18 => "addr",
            _ => return None,
        })
    }

    /// Check the wire limits in [`limits`]; `wire::envelope::decode` calls this on every
    /// message it returns. Consensus rules (block size, tx count per network) are the
    /// chain's business, not checked here.
    pub fn check_limits(&self) -> Result<(), WireError> {
        use limits::*;
        match self {
            Message::Hello(h) => {
                check_callsign(&h.callsign)?;
                limit("hello.user_agent bytes", h.user_agent.len(), MAX_USER_AGENT)
            }
            Message::Ping(_)
            | Message::Pong(_)
            | Message::Tx(_)
            | Message::Auth(_)
            | Message::GetAddr => Ok(()),
            Message::Addr(v) => {
                limit("addr entries", v.len(), MAX_ADDRS)?;
                v.iter()
                    .try_for_each(|a| limit("addr bytes", a.len(), MAX_ADDR_LEN))
            }
            Message::Inv(v) => limit("inv items", v.len(), MAX_INV),
            Message::GetData(v) => limit("getdata items", v.len(), MAX_INV),
            Message::NotFound(v) => limit("notfound items", v.len(), MAX_INV),
            Message::GetHeaders(g) => {
                limit("getheaders.locator hashes", g.locator.len(), MAX_LOCATOR)
            }
            Message::Headers(v) => limit("headers count", v.len(), MAX_HEADERS),
            Message::Block(b) => limit("block.txs count", b.txs.len(), MAX_BLOCK_TXS),
            Message::Reject(r) => limit("reject.reason bytes", r.reason.len(), MAX_REASON),
            Message::Ack(v) => limit("ack ids", v.len(), MAX_ACK_IDS),
            Message::CompactBlock(c) => limit(
                "cmpctblock.short_ids count",
                c.short_ids.len(),
                MAX_BLOCK_TXS,
            ),
            Message::GetBlockTxn(g) => {
                limit("getblocktxn.indexes count", g.indexes.len(), MAX_BLOCK_TXS)
            }
            Message::BlockTxn(b) => limit("blocktxn.txs count", b.txs.len(), MAX_BLOCK_TXS),
        }
    }
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        Err(WireError::Limit { what, len, max })
    } else {
        Ok(())
    }
}

/// A callsign is empty (no radio identity) or up to [`limits::MAX_CALLSIGN`] bytes of
/// `[A-Z0-9-]`: what AX.25, VARA and JS8 can all carry.
fn check_callsign(c: &str) -> Result<(), WireError> {
    limit("hello.callsign bytes", c.len(), limits::MAX_CALLSIGN)?;
    if crate::callsign::is_wire(c) {
        Ok(())
    } else {
        Err(WireError::BadCallsign(c.to_owned()))
    }
}
