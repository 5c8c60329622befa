//! The sans-IO core. `Node` holds the chain and the state of every peer session and
//! decides what to send; it never reads a clock, a socket or an RNG. The driver (or a
//! simulator) calls `peer_connected`, `handle_frame`, `handle_timeout` with the current
//! time in milliseconds, then drains `poll_transmit` and `poll_event`.
//!
//! Sync is headers-first: a peer with more work is asked for headers after our locator,
//! the headers are checked (proof of work, linkage, timestamps) before any block body is
//! requested, and bodies are fetched in a bounded window. New blocks and transactions are
//! announced by id (`Inv`) and fetched only by those who lack them.
//!
//! `Node` is one struct; its methods are split by concern into child modules, each an
//! `impl Node` block that sees the private fields:
//! - this file: the public types, `Peer`, `Request`, the `Node` struct, links up and
//!   down, the periodic tick (`handle_timeout`), polling, local submissions, `peers`;
//! - `session`: sessions opening and closing, the handshake (`Hello`, network-key
//!   proof), session limits and rate buckets, `misbehave` and `disconnect`;
//! - `sync`: headers-first sync, the block download window and its deadlines, blocks
//!   pushed unasked to a radio peer that is behind;
//! - `relay`: `Inv` and `GetData`, transactions from peers and the API, announcements;
//! - `io`: frames in (packets and envelopes) and the message dispatcher, radio turns
//!   and beacons, encoding and routing what is sent;
//! - `packet` (fragmentation, NACK repair, pacing, turns), `rtt` (request timers),
//!   `compact` (compact blocks), `outbox` (durable per-peer delivery), `peers`
//!   (misbehaviour scores and bans), `auth` (network key), `pex` (peer exchange).

pub mod auth;
mod compact;
mod fountain;
mod gap;
mod inflight;
mod io;
mod packet;
mod peers;
mod pex;
mod relay;
mod rtt;
mod session;
mod sync;

pub use auth::network_key;
pub use compact::MAX_PENDING as MAX_COMPACT_PENDING;
pub use inflight::{Usage, MAX_BLOCK_REQUESTS_PER_PEER, MAX_TX_REQUESTS_PER_PEER};
pub use packet::{
    airtime_ms, is_packet_link, Dest, Priority, PEER_CONTROL_BYTES, QUEUE_BYTES, REPAIR_FACTOR,
};
pub use peers::{points, BanTarget, BanView, PeerKey, PeerPolicy, MAX_BAN_MS};
pub use pex::{AddrInfo, AddrSource};

use crate::chain::{BlockOutcome, Chain, ChainError, Hash, TipInfo, Transaction, VerifiedTx};
use crate::net::{LinkCaps, LinkId, PeerId};
use crate::rng::Rng;
use crate::wire::message::{Hello, Message};
use hashbrown::HashTable;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use tracing::debug;

use io::truncate;

mod outbox;
pub use outbox::{OutboxEntry, OutboxStats, OutboxView};

/// How often the core wants `handle_timeout`.
const TICK_MS: u64 = 1000;
/// A peer that has not completed the handshake by then is dropped.
const HANDSHAKE_TIMEOUT_MS: u64 = 30_000;
/// Ping a peer that has been quiet this long.
const PING_AFTER_MS: u64 = 60_000;
/// Drop a peer that has been silent this long (it would have answered a ping).
const SILENCE_TIMEOUT_MS: u64 = 180_000;
/// Block bodies requested from one peer at once.
const BLOCK_WINDOW: usize = 16;
/// Base time allowed for a requested block to arrive.
const BLOCK_TIMEOUT_MS: u64 = 30_000;
/// Re-ask for headers if an answer has not come by then.
const HEADERS_TIMEOUT_MS: u64 = 60_000;
/// Block bodies served per `GetData`: keeps one request from queueing megabytes.
const MAX_BLOCKS_PER_GETDATA: usize = 32;
/// Ids remembered per peer as already known to it (so we do not announce them back).
const KNOWN_CAP: usize = 4096;
/// Pending outbound messages in total before the core stops queueing (and drops peers).
const MAX_QUEUED_TRANSMITS: usize = 10_000;
/// Stations on a broadcast channel are forgotten after this much silence.
const RADIO_SILENCE_TIMEOUT_MS: u64 = 2 * 60 * 60 * 1000;
/// `to - from` as an offset, saturated.
fn offset(from: u64, to: u64) -> i64 {
    let d = i128::from(to) - i128::from(from);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// Greetings to a station we never heard from (a configured peer) before only beacons
/// look for it (see `proof_retries`).
const GREET_TRIES: u32 = 2;
/// Beacon period on broadcast links once a station has answered (see `packet_timers`).
const BEACON_INTERVAL_MS: u64 = 5 * 60 * 1000;
/// Beacon period on a broadcast link where no station has been heard yet.
const DISCOVERY_INTERVAL_MS: u64 = 60 * 1000;
/// First discovery beacons on a broadcast link where no station has answered come this
/// soon, then back off to `DISCOVERY_INTERVAL_MS` (two stations started together may
/// collide; nobody should wait a minute to be found).
const DISCOVERY_FIRST_MS: u64 = 5_000;
/// Discovery beacons sent at that fast pace before the slow one (and the 2 % rule).
const DISCOVERY_FAST_TRIES: u32 = 4;
/// Of those, the ones that follow the previous beacon at once on a link without carrier
/// sense (JS8Call), in a random slot: two stations started together collide there.
const SLOTTED_QUICK_TRIES: u32 = 2;
/// Envelopes kept per station heard before its `Hello` (lost, or still to come): replayed
/// once the handshake completes, so a lost greeting does not cost the whole burst.
const EARLY_BYTES: usize = 64 * 1024;
/// New transactions are announced to a peer on a fast link in one `Inv` per this long
/// (or per `MAX_INV` of them): one message each was a flood to the peer's message limit
/// at a thousand transactions a second, both ways (its `GetData`s), as Bitcoin found
/// (it trickles them too).
const INV_GATHER_MS: u64 = 100;
/// Air time of blocks pushed unasked, in one turn, to a half-duplex peer that is behind.
const PUSH_AIR_MS: u64 = 50_000;
/// Headers of a push beyond the blocks sent whole.
const PUSH_HEADERS: usize = 50;
/// Links slower than this (JS8Call's few bit/s) carry only what is worth their air time:
/// headers, tip announcements, small transactions and acknowledgements.
pub const NARROW_BPS: u64 = 300;
/// Largest transaction envelope relayed over a narrow link.
pub const NARROW_TX_MAX: usize = 256;

/// A narrow link: a few bit/s (see [`NARROW_BPS`]).
pub fn is_narrow(caps: &LinkCaps) -> bool {
    caps.bitrate_bps > 0 && caps.bitrate_bps < NARROW_BPS
}

/// Static settings of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node key: its public half is the node's identity in `Hello`, and it signs the
    /// handshake (see `auth`). (Its `Debug` shows only the public half.)
    pub node_key: ed25519_dalek::SigningKey,
    /// Operator's callsign, sent in `Hello` (identification on radio links).
    pub callsign: String,
    /// Seed for jitter and message ids (from the OS, or the simulation's seed). Handshake
    /// nonces come from ChaCha20 keyed by this and the node key.
    pub seed: u64,
    /// Software name/version.
    pub user_agent: String,
    /// Misbehaviour scoring and automatic bans.
    pub peers: PeerPolicy,
}

impl NodeConfig {
    /// The node's identity: the public half of its node key.
    pub fn node_id(&self) -> [u8; 32] {
        self.node_key.verifying_key().to_bytes()
    }
}

/// Bytes for a link to send: a whole envelope on stream links, one packet (a
/// `wire::frag` WHOLE, FRAGMENT or NACK) on packet links.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// A peer session, or every station on a broadcast link.
    pub to: Dest,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Things the driver must act on or may report.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Close this peer session (after sending what was queued for it).
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: String,
    },
    /// A peer misbehaved (also followed by `Disconnect`); the driver counts it.
    Misbehaviour {
        /// The peer.
        peer: PeerId,
        /// Its address on the link.
        remote: String,
        /// What it did.
        reason: String,
    },
    /// Dial this TCP address (learned by peer exchange) once; no redial.
    Dial {
        /// `ip:port`.
        addr: String,
    },
    /// The handshake with a peer completed.
    PeerReady {
        /// The peer.
        peer: PeerId,
        /// Its address on the link.
        remote: String,
        /// Its callsign (may be empty on TCP).
        callsign: String,
        /// Its height at handshake time.
        height: u64,
    },
    /// The best chain changed.
    TipChanged {
        /// The new tip.
        tip: TipInfo,
        /// Blocks connected by this change.
        connected: usize,
        /// Blocks disconnected (non-zero on a reorg).
        disconnected: usize,
        /// The peer the block came from (None: mined or submitted locally).
        from: Option<PeerId>,
        /// Height of the best header known at that moment (sync progress).
        header_height: u64,
    },
    /// A transaction entered the mempool.
    TxAccepted {
        /// Its id.
        id: Hash,
        /// The peer it came from (None: submitted locally).
        from: Option<PeerId>,
    },
}

/// Per-peer traffic counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStats {
    /// Envelope bytes received.
    pub bytes_in: u64,
    /// Envelope bytes sent.
    pub bytes_out: u64,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Messages after the handshake without a session tag for us, dropped (sent before
    /// the peer knew our id, or not by the peer at all).
    pub untagged_dropped: u64,
}

impl PeerStats {
    fn add(&mut self, o: &PeerStats) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.msgs_in += o.msgs_in;
        self.msgs_out += o.msgs_out;
        self.untagged_dropped += o.untagged_dropped;
    }
}

/// Figures of a packet (radio) link, as estimated by the core.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PacketStats {
    /// Air time handed to the TNC, in milliseconds.
    pub air_ms: u64,
    /// Packets handed to the link.
    pub packets_out: u64,
    /// Bytes handed to the link (before AX.25 framing).
    pub bytes_out: u64,
    /// Fragments sent again on request.
    pub repaired: u64,
    /// Packets waiting for air time.
    pub queued: usize,
    /// Times the duty-cycle cap held traffic back.
    pub duty_waits: u64,
    /// Air time the duty-cycle cap allows at once now (ms), and the most it holds; `None`
    /// when the link has no cap.
    pub duty_budget_ms: Option<(u64, u64)>,
}

/// A peer as shown by the API.
#[derive(Clone, Debug, Serialize)]
pub struct PeerSummary {
    /// Session id.
    pub id: PeerId,
    /// Link it came in on.
    pub link: LinkId,
    /// Address on that link.
    pub remote: String,
    /// We dialled it.
    pub outbound: bool,
    /// Handshake completed.
    pub ready: bool,
    /// Its callsign from `Hello`.
    pub callsign: String,
    /// Its user agent from `Hello`.
    pub user_agent: String,
    /// Best height we know it has.
    pub height: u64,
    /// Best block we know it has (from its Hello, announcements and blocks).
    pub tip: Option<Hash>,
    /// Milliseconds since the session opened.
    pub connected_ms: u64,
    /// Milliseconds since it last sent anything.
    pub idle_ms: u64,
    /// Milliseconds since we last sent it anything.
    pub send_idle_ms: u64,
    /// Traffic counters.
    pub stats: PeerStats,
    /// Misbehaviour score of its ban key (IP or callsign), decayed to now.
    pub score: u32,
    /// Measured turnaround of its requests (links with a bit rate), milliseconds.
    pub rtt_ms: Option<u64>,
}

struct Peer {
    link: LinkId,
    remote: String,
    outbound: bool,
    connected_at: u64,
    hello_nonce: u64,
    /// When we last asked it for a new session (broadcast links).
    new_session_at: Option<u64>,
    hello: Option<Hello>,
    /// Their Hello, held until their proof (`Auth`) arrives.
    pending_hello: Option<Hello>,
    /// Nonces of their recent `Hello`s (their proof must name one).
    their_nonces: VecDeque<u64>,
    /// Our proof waits for our turn (packet links).
    auth_due: bool,
    /// The nonce of our `Hello` they hold, as their proof named it (a beacon of ours
    /// serves as our greeting).
    held_nonce: Option<u64>,
    /// Their proof, come before their `Hello` was whole (packet links).
    early_auth: Option<crate::wire::message::Auth>,
    /// When our proof (or, to a silent station, our greeting) last went out, and how
    /// often without an answer.
    proof_at: u64,
    proof_tries: u32,
    /// It greeted us and no proof followed yet: at the end of its burst this means it
    /// lacks our Hello.
    greeted_unproven: bool,
    closing: bool,
    best_height: u64,
    best_work: u128,
    /// Its best block as far as we know.
    tip: Option<Hash>,
    last_recv: u64,
    last_send: u64,
    ping: Option<(u64, u64)>,
    headers_asked_at: Option<u64>,
    headers_max: u16,
    known: Known,
    /// Transactions to announce to it in the next `Inv` (fast links; see `INV_GATHER_MS`).
    inv_txs: Vec<Hash>,
    /// Blocks it answered `NotFound` for (it is on another fork): not asked of it again.
    lacks: HashSet<Hash>,
    stats: PeerStats,
    /// Rate limits on what the peer sends: messages (packets on packet links) and bytes.
    msg_bucket: peers::Bucket,
    byte_bucket: peers::Bucket,
    /// Round-trip estimate, for request timeouts on links with a bit rate.
    rtt: rtt::Rtt,
    /// The outstanding `GetHeaders`: asked again when this passes.
    headers_deadline: u64,
    /// Its timing, for a round-trip sample: (sent at, air time expected on the way).
    headers_timing: Option<(u64, u64)>,
    /// Headers wanted while the channel was busy: asked for when our turn comes.
    want_headers: bool,
    /// Our `Hello` to this station waits for our turn (broadcast links).
    hello_due: bool,
    /// It has sent us something other than a beacon (so it holds our greeting).
    answered: bool,
    /// When we last pushed it blocks or headers unasked.
    pushed_at: Option<u64>,
    /// When it last asked us for headers or blocks (it is syncing by itself).
    asked_at: Option<u64>,
    /// Envelopes heard from it before its `Hello` (broadcast links), with their bytes.
    early: Vec<Vec<u8>>,
    early_bytes: usize,
    /// The key for session tags with it, and the id it was made for (see `auth::pair_key`).
    tag_key: Option<([u8; 32], [u8; 32])>,
}

impl Peer {
    fn ready(&self) -> bool {
        self.hello.is_some() && !self.closing
    }

    /// We greeted it and have heard nothing from it since, and will greet it again (see
    /// `proof_retries`): until then our beacons wait, since the greeting says as much.
    fn greeting_unanswered(&self) -> bool {
        !self.answered
            && self.hello.is_none()
            && self.pending_hello.is_none()
            && !self.hello_due
            && !self.closing
            && self.proof_tries < GREET_TRIES
    }

    /// It has a block at `height`: the best we know of it if no lower than before.
    fn saw_tip(&mut self, height: u64, hash: Hash) {
        if height >= self.best_height {
            self.best_height = height;
            self.tip = Some(hash);
        }
    }

    fn learn(&mut self, h: Hash) {
        self.known.insert(&h);
    }
}

/// The last [`KNOWN_CAP`] blocks and transactions a peer is known to hold, by the first 8
/// bytes of their hashes: a quarter of the memory (a gateway keeps one per peer, and
/// in the 1000-node simulation these were 125 MB). A false match needs a second preimage
/// of 64 bits of BLAKE3 (or of a proof-of-work hash), and would only spare an
/// announcement: the outbox delivers what a peer is owed whatever this says.
///
/// A ring of keys in arrival order with a table of 2-byte positions: 11 bytes an entry,
/// where a hash set beside a queue of keys took about 30 (its buckets and the queue's
/// capacity round up to powers of two).
#[derive(Default)]
struct Known {
    /// Keys in arrival order; once full, `ring[head]` is the oldest and is replaced next.
    ring: Vec<u64>,
    head: usize,
    /// Positions in `ring`, hashed by key (keyed per process: keys ground to share a
    /// bucket do not pile up).
    by_key: HashTable<u16>,
    hasher: RandomState,
}

const _: () = assert!(KNOWN_CAP <= u16::MAX as usize + 1);

impl Known {
    fn key(h: &Hash) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        u64::from_le_bytes(b)
    }

    fn find(&self, k: u64) -> Option<u16> {
        let ring = &self.ring;
        self.by_key
            .find(self.hasher.hash_one(k), |&p| {
                ring.get(p as usize) == Some(&k)
            })
            .copied()
    }

    fn contains(&self, h: &Hash) -> bool {
        self.find(Self::key(h)).is_some()
    }

    fn insert(&mut self, h: &Hash) {
        let k = Self::key(h);
        if self.find(k).is_some() {
            return;
        }
        let pos = if self.ring.len() < KNOWN_CAP {
            if self.ring.len() == self.ring.capacity() {
                // A quarter more at a time: most peers never fill the ring.
                let more = (self.ring.len() / 4).clamp(64, KNOWN_CAP - self.ring.len());
                self.ring.reserve_exact(more);
            }
            self.ring.push(k);
            self.ring.len() - 1
        } else {
            let pos = self.head;
            self.head = (self.head + 1) % KNOWN_CAP;
            if let Some(old) = self.ring.get_mut(pos) {
                let gone = std::mem::replace(old, k);
                if let Ok(e) = self
                    .by_key
                    .find_entry(self.hasher.hash_one(gone), |&p| p as usize == pos)
                {
                    e.remove();
                }
            }
            pos
        };
        let (ring, hasher) = (&self.ring, &self.hasher);
        self.by_key
            .insert_unique(hasher.hash_one(k), pos as u16, |&p| {
                ring.get(p as usize).map_or(0, |&k| hasher.hash_one(k))
            });
    }
}

/// A request for a block or transaction in flight.
#[derive(Clone, Copy, Debug)]
struct Request {
    peer: PeerId,
    /// Given back to the pool (asked again) when this passes.
    deadline: u64,
    sent_at: u64,
    /// Air time expected between asking and the answer arriving (queue, request, answer).
    air: u64,
    /// Asked before and timed out: no round-trip sample (Karn).
    retry: bool,
}

/// How many times its expected air time and turnaround a request may wait while its peer
/// goes on talking (see [`Request::given_up_at`]).
const REQUEST_PATIENCE: u64 = 4;

impl Request {
    /// When the request counts as lost however busy its peer and our own queue are.
    /// Hearing the peer moves the deadline on (its burst may be bringing the answer), and
    /// a request does not time out while our own turn is still queued; on a channel where
    /// the peer talks every minute (a new block's header) and we always have something
    /// to send, neither ever stops, and a lost answer was never asked for again: island
    /// nodes of the simulator sat 100 blocks behind their gateway for hours.
    fn given_up_at(&self, rto: u64) -> u64 {
        self.sent_at
            .saturating_add(REQUEST_PATIENCE.saturating_mul(self.air.saturating_add(rto)))
            .saturating_add(BLOCK_TIMEOUT_MS)
    }
}

/// The sans-IO node.
pub struct Node {
    chain: Chain,
    cfg: NodeConfig,
    /// Our identity (`cfg.node_id()`, kept: it costs a scalar multiplication).
    node_id: [u8; 32],
    rng: Rng,
    /// Handshake nonces: unpredictable without the node key, so a proof cannot be
    /// obtained in advance for a nonce we will issue (SplitMix64 can be inverted from one
    /// output).
    nonces: rand_chacha::ChaCha20Rng,
    network: [u8; 4],
    next_msg_id: u64,
    // Ordered, so that everything derived from iterating peers is deterministic.
    peers: BTreeMap<PeerId, Peer>,
    links: HashMap<LinkId, LinkCaps>,
    /// Block and transaction requests out, apart and bounded per peer.
    in_flight: inflight::InFlight,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    next_tick: u64,
    /// When the gathered transaction announcements go out (`u64::MAX`: none gathered).
    inv_due: u64,
    /// Time of the current input; set by every entry point.
    now: u64,
    /// Wall clock minus `now` (see [`Node::set_wall_clock`]); 0 where they are one.
    wall_offset_ms: i64,
    /// The air's slot clock minus `now` (see [`Node::set_air_clock`]).
    air_offset_ms: i64,
    /// Running average size of blocks received, to size request timeouts on slow links.
    avg_block_bytes: u64,
    packet_links: BTreeMap<LinkId, packet::PacketLink>,
    /// Blocks whose request timed out: their next answer is no round-trip sample.
    retry_later: HashSet<Hash>,
    /// Blocks and transactions first heard on a broadcast channel: every station there
    /// heard them too, so nothing about them is repeated on that channel.
    heard_on: HashMap<Hash, LinkId>,
    heard_order: VecDeque<Hash>,
    /// Compact blocks waiting for the transactions we lacked.
    compact_pending: BTreeMap<Hash, compact::Pending>,
    outbox: outbox::OutboxState,
    /// Misbehaviour scores and bans.
    guard: peers::PeerGuard,
    /// Nonces of our recent beacons: a station may answer one with its key proof.
    beacon_nonces: VecDeque<u64>,
    /// TCP addresses learned by peer exchange.
    addrs: pex::AddrBook,
    /// Misbehaviours since start by reason code (`RejectCode::name`), for `/metrics`.
    misbehaviour_counts: BTreeMap<&'static str, u64>,
    /// Traffic of the sessions closed so far, per link (one entry per configured link).
    closed_traffic: BTreeMap<LinkId, PeerStats>,
    /// Relayed transactions ahead of their sender's next nonce.
    gap_txs: gap::GapTxs,
}

impl Node {
    /// A node over `chain`.
    pub fn new(chain: Chain, cfg: NodeConfig) -> Node {
        let mut rng = Rng::new(cfg.seed);
        let next_msg_id = rng.next_u64() >> 16;
        let network = chain.params().network_id();
        let outbox = outbox::OutboxState::load(&chain);
        let guard = peers::PeerGuard::new(cfg.peers.clone());
        let node_id = cfg.node_id();
        let nonces = {
            use rand::SeedableRng;
            let mut h = blake3::Hasher::new_derive_key("skywave handshake nonces v1");
            h.update(&cfg.node_key.to_bytes());
            h.update(&cfg.seed.to_le_bytes());
            rand_chacha::ChaCha20Rng::from_seed(*h.finalize().as_bytes())
        };
        let mut node = Node {
            chain,
            cfg,
            node_id,
            rng,
            nonces,
            network,
            next_msg_id,
            peers: BTreeMap::new(),
            links: HashMap::new(),
            in_flight: Default::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: 0,
            inv_due: u64::MAX,
            now: 0,
            wall_offset_ms: 0,
            air_offset_ms: 0,
            avg_block_bytes: 1024,
            packet_links: BTreeMap::new(),
            retry_later: HashSet::new(),
            heard_on: HashMap::new(),
            heard_order: VecDeque::new(),
            compact_pending: BTreeMap::new(),
            outbox,
            guard,
            beacon_nonces: VecDeque::new(),
            addrs: Default::default(),
            misbehaviour_counts: BTreeMap::new(),
            closed_traffic: BTreeMap::new(),
            gap_txs: gap::GapTxs::default(),
        };
        node.load_bans();
        node
    }

    /// The chain (read-only).
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// This node's identity (the public half of its node key).
    pub fn node_id(&self) -> [u8; 32] {
        self.node_id
    }

    /// A handshake nonce (ChaCha20, see `nonces`).
    fn nonce(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.nonces)
    }

    /// Traffic per link since the node started: the sessions closed and those open now.
    pub fn link_traffic(&self) -> BTreeMap<LinkId, PeerStats> {
        let mut out = self.closed_traffic.clone();
        for p in self.peers.values() {
            out.entry(p.link).or_default().add(&p.stats);
        }
        out
    }

    /// Give back the chain (and its store), e.g. to rebuild the node after a simulated
    /// restart: everything not in the store is lost, as in a crash.
    pub fn into_chain(self) -> Chain {
        self.chain
    }

    /// A link came up with these capabilities.
    pub fn link_up(&mut self, now: u64, link: LinkId, caps: LinkCaps) {
        self.now = now;
        if is_packet_link(&caps) {
            // First beacon soon, jittered so stations powered up together do not collide
            // (and if they do, the next discovery beacons follow within seconds).
            let first = 500 + self.rng.below(2_000);
            let duty = self.cfg.peers.duty_cycle_pct;
            let seed = self.rng.next_u64();
            self.packet_links.insert(
                link,
                packet::PacketLink::new(caps.clone(), now, first, duty, seed),
            );
            if let Some(l) = self.packet_links.get_mut(&link) {
                l.wall_offset_ms = self.air_offset_ms;
            }
        } else {
            self.packet_links.remove(&link);
        }
        self.links.insert(link, caps);
    }

    /// A link's capabilities changed (a modem adapted its bit rate): pacing and request
    /// sizes follow from now on; queued traffic, beacons and peers are kept.
    pub fn link_caps(&mut self, now: u64, link: LinkId, caps: LinkCaps) {
        self.now = now;
        let was_packet = self.packet_links.contains_key(&link);
        if was_packet && is_packet_link(&caps) {
            if let Some(l) = self.packet_links.get_mut(&link) {
                l.caps = caps.clone();
            }
            self.links.insert(link, caps);
        } else {
            self.link_up(now, link, caps);
        }
        // Rate limits follow the new speed, or a faster modem would look like a flood.
        let (msgs, bytes) = self.buckets_for(link, now);
        for p in self.peers.values_mut().filter(|p| p.link == link) {
            p.msg_bucket = msgs.clone();
            p.byte_bucket = bytes.clone();
        }
    }

    /// A link went away; its peers are reported separately.
    pub fn link_down(&mut self, link: LinkId) {
        self.links.remove(&link);
        self.packet_links.remove(&link);
    }

    /// Air-time and repair figures of a packet link.
    pub fn packet_stats(&self, link: LinkId) -> Option<PacketStats> {
        self.packet_links.get(&link).map(|l| PacketStats {
            duty_waits: l.duty_waits,
            air_ms: l.air_ms,
            packets_out: l.packets_out,
            bytes_out: l.bytes_out,
            repaired: l.repaired,
            queued: l.queued(),
            duty_budget_ms: l.duty_left(self.now),
        })
    }

    /// The driver is about to send a frame of `len` bytes on packet link `link` outside
    /// the core (an APRS beacon): true if the link's duty-cycle budget allows it, which is
    /// then charged. Links without a budget (or not packet links) always allow it.
    pub fn charge_air(&mut self, now: u64, link: LinkId, len: usize) -> bool {
        self.packet_links
            .get_mut(&link)
            .is_none_or(|l| l.charge_foreign(now, len))
    }

    /// Misbehaviours since start by reason code.
    pub fn misbehaviour_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.misbehaviour_counts
    }

    /// Running average size of the blocks received (bytes), for sync estimates.
    pub fn avg_block_bytes(&self) -> u64 {
        self.avg_block_bytes
    }

    /// Capabilities of the links that are up.
    pub fn links(&self) -> &HashMap<LinkId, LinkCaps> {
        &self.links
    }

    /// Periodic work: timeouts, pings, re-requests.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        if now >= self.inv_due {
            self.flush_invs();
        }
        self.outbox_tick(now);
        if now < self.next_tick {
            // Radio links between ticks: beacons at their own jittered times (two stations
            // started together must not beacon on the same tick), turn-taking.
            self.packet_timers(now);
            self.pump(now);
            return;
        }
        self.next_tick = now + TICK_MS;
        self.now = now;
        self.expire_bans(now);
        self.pex_tick(now);
        let mut drop = Vec::new();
        let mut pings = Vec::new();
        for (&id, p) in &self.peers {
            if p.closing {
                continue;
            }
            let caps = self.links.get(&p.link);
            // Slow links get time in proportion to what a frame costs on air; stations on
            // a broadcast channel are not pinged (their beacons show they are there).
            let slow = caps
                .map(|c| packet::airtime_ms(c, c.mtu.min(1024)) * 20)
                .unwrap_or(0);
            let broadcast = caps.is_some_and(|c| c.broadcast);
            let handshake_timeout = HANDSHAKE_TIMEOUT_MS + slow;
            let silence = if broadcast {
                RADIO_SILENCE_TIMEOUT_MS
            } else {
                SILENCE_TIMEOUT_MS + slow
            };
            // On a shared channel a proof waits for a turn, and with several stations
            // taking 45-s bursts that can be minutes: four times as long there (the
            // number of such sessions is bounded per link).
            let handshake_timeout = if broadcast {
                4 * handshake_timeout
            } else {
                handshake_timeout
            };
            if p.hello.is_none() && now.saturating_sub(p.connected_at) > handshake_timeout {
                let what = if p.pending_hello.is_some() {
                    "no handshake proof"
                } else {
                    "no handshake"
                };
                drop.push((id, format!("{what} within {} s", handshake_timeout / 1000)));
            } else if now.saturating_sub(p.last_recv) > silence {
                drop.push((id, format!("silent for {} s", silence / 1000)));
            } else if !broadcast
                && p.hello.is_some()
                // A ping unanswered for a ping interval was lost (or its pong was): ping
                // again, or one lost frame leaves the session to die of silence.
                && p
                    .ping
                    .is_none_or(|(_, at)| now.saturating_sub(at) > PING_AFTER_MS + slow)
                && now.saturating_sub(p.last_recv) > PING_AFTER_MS + slow
            {
                pings.push(id);
            }
        }
        self.proof_retries(now);
        self.packet_timers(now);
        for (id, reason) in drop {
            self.disconnect(id, reason);
        }
        for id in pings {
            let n = self.rng.next_u64();
            if let Some(p) = self.peers.get_mut(&id) {
                p.ping = Some((n, now));
            }
            self.send(id, Message::Ping(n));
        }
        // Requests that took too long go back to the pool, and the peer's next
        // requests wait longer (its link may be down or the channel busy).
        let expired = self.in_flight.expired(|r| {
            let rto = self.peers.get(&r.peer).map_or(0, |p| p.rtt.rto());
            (r.deadline <= now && self.answer_overdue(r.peer, now)) || now >= r.given_up_at(rto)
        });
        for (h, peer, block) in expired {
            if block {
                self.in_flight.remove_block(&h);
                if self.retry_later.len() >= KNOWN_CAP {
                    self.retry_later.clear();
                }
                self.retry_later.insert(h);
            } else {
                self.in_flight.remove_tx(&h);
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                debug!(peer, %h, rto = p.rtt.rto(), "request timed out; asking again");
                p.rtt.timed_out();
            }
            if self.heard_by_others(peer) {
                // On a shared channel the request may have collided with another
                // station's, sent at the same moment for the same announcement; both
                // time out together too. The next goes at a random moment.
                self.defer_answer(peer, now);
            }
        }
        // Keep syncing with whoever is ahead; a GetHeaders unanswered by its deadline is
        // asked again (with a longer deadline).
        let best = self.chain.best_header().work;
        let ahead: Vec<(PeerId, bool)> = self
            .peers
            .iter()
            .filter(|(&id, p)| {
                p.ready()
                    && p.best_work > best
                    && (p.headers_asked_at.is_none()
                        || (now >= p.headers_deadline && self.answer_overdue(id, now)))
            })
            .map(|(&id, p)| (id, p.headers_asked_at.is_some()))
            .collect();
        // A request that no longer matters (we caught up by other means) is forgotten.
        for p in self.peers.values_mut() {
            if p.headers_asked_at.is_some() && now >= p.headers_deadline && p.best_work <= best {
                p.headers_asked_at = None;
                p.headers_timing = None;
            }
        }
        for (id, again) in ahead {
            if again {
                if let Some(p) = self.peers.get_mut(&id) {
                    debug!(peer = id, "headers request timed out; asking again");
                    p.rtt.timed_out();
                    p.headers_asked_at = None;
                    p.headers_timing = None;
                }
            }
            self.ask_headers(now, id, None);
        }
        self.request_blocks(now);
        self.pump(now);
    }

    /// Tell the core the wall clock. The `now` every entry point takes drives timers and
    /// must never step; consensus timestamps (a block's time against ours) need the wall
    /// clock, steps and all. The driver calls this with both before each input; where
    /// it never does (the simulator), the two are one.
    pub fn set_wall_clock(&mut self, now: u64, wall_ms: u64) {
        self.wall_offset_ms = offset(now, wall_ms);
        self.set_air_clock(now, wall_ms);
    }

    /// The clock that time slots on the air are counted by (JS8Call counts periods from
    /// UTC), at core time `now`: the wall clock, or under an emulator that runs N times
    /// fast, N times the wall clock. [`Node::set_wall_clock`] sets it to the wall clock.
    pub fn set_air_clock(&mut self, now: u64, air_ms: u64) {
        self.air_offset_ms = offset(now, air_ms);
        for l in self.packet_links.values_mut() {
            l.wall_offset_ms = self.air_offset_ms;
        }
    }

    /// Wall-clock seconds at core time `now`, for consensus checks.
    fn wall_s(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.wall_offset_ms) / 1000
    }

    /// When the core next wants `handle_timeout` (milliseconds, driver's clock).
    pub fn poll_timeout(&self) -> u64 {
        let turns = self
            .packet_links
            .values()
            .filter_map(|l| l.wake_at(self.now))
            .min()
            .unwrap_or(u64::MAX);
        self.next_tick
            .min(self.outbox_wake())
            .min(turns)
            .min(self.inv_due)
    }

    /// Next envelope to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// A transaction submitted locally (API, wallet): validated, stored, announced.
    pub fn submit_tx(&mut self, now: u64, tx: Transaction) -> Result<Hash, ChainError> {
        self.now = now;
        let id = tx.id();
        let res = self.submit_tx_inner(now, Err(tx), id);
        self.pump(now);
        res
    }

    /// [`Node::submit_tx`] for a transaction whose signature the caller checked (the
    /// API does, on its own threads, so that the node's thread does not).
    pub fn submit_verified_tx(&mut self, now: u64, tx: VerifiedTx) -> Result<Hash, ChainError> {
        self.now = now;
        let id = tx.tx().id();
        let res = self.submit_tx_inner(now, Ok(tx), id);
        self.pump(now);
        res
    }

    /// A block mined locally.
    pub fn submit_block(
        &mut self,
        now: u64,
        block: crate::chain::Block,
    ) -> Result<BlockOutcome, ChainError> {
        self.now = now;
        let out = self.chain.submit_block(block, self.wall_s(now))?;
        self.outbox_block_outcome(now, None, &out)?;
        self.after_block(None, &out);
        self.pump(now);
        Ok(out)
    }

    /// Peers for the API.
    pub fn peers(&self, now: u64) -> Vec<PeerSummary> {
        let mut v: Vec<PeerSummary> = self
            .peers
            .iter()
            .map(|(&id, p)| PeerSummary {
                id,
                link: p.link,
                remote: p.remote.clone(),
                outbound: p.outbound,
                ready: p.ready(),
                callsign: p
                    .hello
                    .as_ref()
                    .map(|h| h.callsign.clone())
                    .unwrap_or_default(),
                user_agent: p
                    .hello
                    .as_ref()
                    .map(|h| h.user_agent.clone())
                    .unwrap_or_default(),
                height: p.best_height,
                tip: p.tip,
                connected_ms: now.saturating_sub(p.connected_at),
                idle_ms: now.saturating_sub(p.last_recv),
                send_idle_ms: now.saturating_sub(p.last_send),
                stats: p.stats.clone(),
                score: self.score_of(&p.remote, now),
                rtt_ms: p.rtt.srtt(),
            })
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }
}

#[cfg(test)]
mod air_tests;
#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod radio_tests;
#[cfg(test)]
mod sync_tests;
