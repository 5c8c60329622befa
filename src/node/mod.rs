//! The sans-IO core. `Node` holds the chain and the state of every peer session and
//! decides what to send; it never reads a clock, a socket or an RNG. The driver (or a
//! simulator) calls `peer_connected`, `handle_frame`, `handle_timeout` with the current
//! time in milliseconds, then drains `poll_transmit` and `poll_event`.
//!
//! Sync is headers-first: a peer with more work is asked for headers after our locator,
//! the headers are checked (proof of work, linkage, timestamps) before any block body is
//! requested, and bodies are fetched in a bounded window. New blocks and transactions are
//! announced by id (`Inv`) and fetched only by those who lack them.

mod auth;
mod compact;
mod packet;
mod peers;
mod pex;
mod rtt;
mod session;

pub use auth::network_key;
pub use packet::{airtime_ms, is_packet_link, Dest, Priority};
pub use peers::{points, BanTarget, BanView, PeerKey, PeerPolicy, MAX_BAN_MS};

use crate::chain::{BlockOutcome, Chain, ChainError, Hash, TipInfo, Transaction, TxOutcome};
use crate::link::{LinkCaps, LinkId, PeerId};
use crate::rng::Rng;
use crate::wire::envelope::{self, WireError};
use crate::wire::frag;
use crate::wire::message::{
    features, limits, GetHeaders, Hello, InvItem, InvKind, Message, Reject, RejectCode,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use tracing::{debug, info, warn};

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
/// Envelopes kept per station heard before its `Hello` (lost, or still to come): replayed
/// once the handshake completes, so a lost greeting does not cost the whole burst.
const EARLY_BYTES: usize = 64 * 1024;
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
    /// Ed25519 public key of the node: its identity in `Hello`.
    pub node_id: [u8; 32],
    /// Operator's callsign, sent in `Hello` (identification on radio links).
    pub callsign: String,
    /// Seed for nonces and message ids (from the OS, or the simulation's seed).
    pub seed: u64,
    /// Software name/version.
    pub user_agent: String,
    /// Misbehaviour scoring and automatic bans.
    pub peers: PeerPolicy,
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
    /// Their Hello, held until their network-key proof arrives (key configured).
    pending_hello: Option<Hello>,
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
    known: HashSet<Hash>,
    known_order: VecDeque<Hash>,
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
    /// When we last pushed it blocks or headers unasked.
    pushed_at: Option<u64>,
    /// When it last asked us for headers or blocks (it is syncing by itself).
    asked_at: Option<u64>,
    /// Envelopes heard from it before its `Hello` (broadcast links), with their bytes.
    early: Vec<Vec<u8>>,
    early_bytes: usize,
}

impl Peer {
    fn ready(&self) -> bool {
        self.hello.is_some() && !self.closing
    }

    /// It has a block at `height`: the best we know of it if no lower than before.
    fn saw_tip(&mut self, height: u64, hash: Hash) {
        if height >= self.best_height {
            self.best_height = height;
            self.tip = Some(hash);
        }
    }

    fn learn(&mut self, h: Hash) {
        if self.known.insert(h) {
            self.known_order.push_back(h);
            if self.known_order.len() > KNOWN_CAP {
                if let Some(old) = self.known_order.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
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

/// The sans-IO node.
pub struct Node {
    chain: Chain,
    cfg: NodeConfig,
    rng: Rng,
    network: [u8; 4],
    next_msg_id: u64,
    // Ordered, so that everything derived from iterating peers is deterministic.
    peers: BTreeMap<PeerId, Peer>,
    links: HashMap<LinkId, LinkCaps>,
    in_flight: HashMap<Hash, Request>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    next_tick: u64,
    /// Time of the current input; set by every entry point.
    now: u64,
    /// Wall clock minus `now` (see [`Node::set_wall_clock`]); 0 where they are one.
    wall_offset_ms: i64,
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
}

impl Node {
    /// A node over `chain`.
    pub fn new(chain: Chain, cfg: NodeConfig) -> Node {
        let mut rng = Rng::new(cfg.seed);
        let next_msg_id = rng.next_u64() >> 16;
        let network = chain.params().network_id();
        let outbox = outbox::OutboxState::load(&chain);
        let guard = peers::PeerGuard::new(cfg.peers.clone());
        let mut node = Node {
            chain,
            cfg,
            rng,
            network,
            next_msg_id,
            peers: BTreeMap::new(),
            links: HashMap::new(),
            in_flight: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: 0,
            now: 0,
            wall_offset_ms: 0,
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
        })
    }

    /// Capabilities of the links that are up.
    pub fn links(&self) -> &HashMap<LinkId, LinkCaps> {
        &self.links
    }

    /// What a link delivered from `peer`: a whole envelope on stream links, one
    /// `wire::frag` packet on packet links.
    pub fn handle_frame(&mut self, now: u64, peer: PeerId, bytes: &[u8]) {
        self.now = now;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.closing {
            return;
        }
        p.last_recv = now;
        p.stats.bytes_in += bytes.len() as u64;
        let link = p.link;
        if !p.msg_bucket.take(now, 1) || !p.byte_bucket.take(now, bytes.len() as u64) {
            // Dropped unread: a flood costs the flooder, not us.
            self.misbehave(
                peer,
                RejectCode::RateLimited,
                "flooding: over the message or byte rate limit".into(),
                None,
            );
            self.pump(now);
            return;
        }
        if self.packet_links.contains_key(&link) {
            self.handle_packet(now, peer, link, bytes);
        } else {
            self.handle_envelope(now, peer, bytes);
        }
        self.pump(now);
    }

    fn handle_packet(&mut self, now: u64, peer: PeerId, link: LinkId, bytes: &[u8]) {
        let rto = self.peers.get(&peer).map_or(0, |p| p.rtt.rto());
        let Some(l) = self.packet_links.get_mut(&link) else {
            return;
        };
        let over = l.heard(now, bytes);
        // The peer is talking: whatever we asked of it may be on its way, so give the
        // requests time for the rest of its burst rather than declaring them lost.
        let extend = now + rto + 2 * l.airtime_ms(l.caps.mtu);
        for r in self.in_flight.values_mut() {
            if r.peer == peer && r.deadline < extend {
                r.deadline = extend;
            }
        }
        let parsed = match frag::parse(bytes) {
            Ok(frag::Packet::Nack(nack)) => {
                if !l.repair(now, peer, &nack) {
                    debug!(
                        peer,
                        transfer = nack.transfer_id,
                        "nack for a transfer no longer held"
                    );
                }
                Ok(None)
            }
            Ok(frag::Packet::Whole(_)) | Ok(frag::Packet::Fragment(_)) => {
                l.reasm.insert(now, peer, bytes)
            }
            Err(e) => Err(e),
        };
        if let Some(more) = over {
            // Its burst is over, so what is missing of its transfers was lost: ask in the
            // turn we are about to take, not after a stall timer.
            for (tid, nack) in l.nacks_after_over(now, peer, more) {
                debug!(
                    peer,
                    transfer = tid,
                    "asking for fragments lost in its burst"
                );
                l.queue_nack(now, peer, tid, nack);
            }
        }
        match parsed {
            Ok(Some(envelope)) => self.handle_envelope(now, peer, &envelope),
            Ok(None) => {}
            Err(e) => self.misbehave(
                peer,
                RejectCode::Malformed,
                format!("bad packet: {e}"),
                None,
            ),
        }
    }

    fn handle_envelope(&mut self, now: u64, peer: PeerId, bytes: &[u8]) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.msgs_in += 1;
        }
        let env = match envelope::decode(bytes) {
            Ok(env) => env,
            Err(e) => {
                let code = match e {
                    WireError::UnsupportedVersion(_) => RejectCode::Version,
                    _ => RejectCode::Malformed,
                };
                self.misbehave(peer, code, format!("undecodable message: {e}"), None);
                return;
            }
        };
        if env.network != self.network {
            self.misbehave(
                peer,
                RejectCode::WrongNetwork,
                format!(
                    "wrong network: peer speaks network {}, this node is {} ({})",
                    hex::encode(env.network),
                    self.chain.params().name,
                    hex::encode(self.network)
                ),
                None,
            );
            return;
        }
        let msg_id = env.msg_id;
        let msg = env.message;
        self.note_heard(peer, &msg);
        // Outbox: proofs of delivery, and a repeated push acked from the seen-set.
        let pushed = match self.outbox_inspect(now, peer, msg_id, &msg) {
            outbox::Pushed::Done => return,
            p => p,
        };
        let ready = self.peers.get(&peer).is_some_and(|p| p.hello.is_some());
        match msg {
            Message::Hello(h) => self.on_hello(now, peer, h),
            Message::Auth(a) => self.on_auth(now, peer, a),
            _ if !ready && self.peer_caps(peer).is_some_and(|c| c.broadcast) => {
                // On a shared channel this is a station that greeted us before we
                // restarted, or whose Hello we lost: not an offence. Ask it for a new
                // session (at most once per handshake timeout); it greets us back.
                let name = msg.name();
                debug!(
                    peer,
                    "'{name}' from a station we have no session with; asking for one"
                );
                let again = self.peers.get(&peer).is_some_and(|p| {
                    p.new_session_at
                        .is_none_or(|t| now.saturating_sub(t) > 2 * p.rtt.rto())
                });
                if let Some(p) = self.peers.get_mut(&peer) {
                    // Kept until its Hello comes: blocks and transactions prove themselves,
                    // and a lost greeting should not cost the whole burst that followed.
                    if p.early_bytes + bytes.len() <= EARLY_BYTES {
                        p.early_bytes += bytes.len();
                        p.early.push(bytes.to_vec());
                    }
                }
                if again {
                    let nonce = self.peers.get(&peer).map_or(0, |p| p.hello_nonce);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.new_session_at = Some(now);
                        // This greeting is the one we owed it.
                        p.hello_due = false;
                    }
                    let mut hello = self.hello(nonce);
                    hello.features |= features::NEW_SESSION;
                    self.send(peer, Message::Hello(hello));
                }
            }
            _ if !ready => {
                let name = msg.name();
                self.misbehave(
                    peer,
                    RejectCode::Protocol,
                    format!("'{name}' before the handshake"),
                    None,
                );
            }
            Message::Ping(n) => self.send(peer, Message::Pong(n)),
            Message::Pong(n) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.ping.is_some_and(|(nonce, _)| nonce == n) {
                        p.ping = None;
                    }
                }
            }
            Message::Inv(items) => self.on_inv(now, peer, items),
            Message::GetData(items) => {
                self.asked(now, peer);
                self.on_getdata(peer, items)
            }
            Message::GetHeaders(gh) => {
                self.asked(now, peer);
                let max = (gh.max as usize).min(limits::MAX_HEADERS);
                let headers = self.chain.headers_after(&gh.locator, gh.stop, max);
                self.send(peer, Message::Headers(headers));
            }
            Message::Headers(headers) => self.on_headers(now, peer, headers),
            Message::Block(block) => {
                self.avg_block_bytes = (self.avg_block_bytes * 7 + bytes.len() as u64) / 8;
                self.block_arrived(now, peer, block);
            }
            Message::CompactBlock(c) => self.on_compact(now, peer, c),
            Message::GetBlockTxn(g) => self.on_getblocktxn(peer, g),
            Message::BlockTxn(b) => self.on_blocktxn(now, peer, b),
            Message::Tx(tx) => self.on_tx(now, peer, tx),
            Message::NotFound(items) => {
                for it in items {
                    if it.kind != InvKind::Tx {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            if p.lacks.len() >= KNOWN_CAP {
                                p.lacks.clear();
                            }
                            p.lacks.insert(it.hash);
                        }
                    }
                    if self.in_flight.get(&it.hash).is_some_and(|r| r.peer == peer) {
                        self.in_flight.remove(&it.hash);
                    }
                }
            }
            Message::Reject(r) => {
                let remote = self.remote(peer);
                warn!(peer, %remote, code = ?r.code, about = ?r.about, "peer rejected: {}", r.reason);
            }
            Message::Ack(ids) => self.outbox_on_ack(now, peer, ids),
            Message::GetAddr => self.on_getaddr(now, peer),
            Message::Addr(v) => self.on_addr(now, peer, v),
        }
        self.outbox_after(now, peer, pushed);
    }

    /// Periodic work: timeouts, pings, re-requests.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
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
            if p.hello.is_none() && now.saturating_sub(p.connected_at) > handshake_timeout {
                let what = if p.pending_hello.is_some() {
                    "no network key proof"
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
        let expired: Vec<(Hash, PeerId)> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.deadline <= now && self.answer_overdue(r.peer, now))
            .map(|(h, r)| (*h, r.peer))
            .collect();
        for (h, peer) in expired {
            self.in_flight.remove(&h);
            if self.retry_later.len() >= KNOWN_CAP {
                self.retry_later.clear();
            }
            self.retry_later.insert(h);
            if let Some(p) = self.peers.get_mut(&peer) {
                debug!(peer, %h, rto = p.rtt.rto(), "request timed out; asking again");
                p.rtt.timed_out();
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

    /// Beacons, NACKs for stalled transfers, expiry of partial transfers.
    fn packet_timers(&mut self, now: u64) {
        let links: Vec<LinkId> = self.packet_links.keys().copied().collect();
        for link in links {
            let beacon_due = self
                .packet_links
                .get(&link)
                .is_some_and(|l| l.caps.broadcast && now >= l.next_beacon);
            if beacon_due {
                let nonce = self.rng.next_u64();
                self.beacon_nonces.push_back(nonce);
                if self.beacon_nonces.len() > 8 {
                    self.beacon_nonces.pop_front();
                }
                let hello = self.hello(nonce);
                let bytes = self.encode(&Message::Hello(hello));
                let jitter = self.rng.below(1_000_000);
                // Until some station answers, beacon after 5 s, 10 s, 20 s... up to every
                // minute (two stations that start together may collide, and nobody should
                // wait long to be found); then every five minutes. Each with up to a quarter
                // of random jitter, and never more than ~2 % of the channel.
                let alone = !self.peers.values().any(|p| p.link == link && p.ready());
                if let Some(l) = self.packet_links.get_mut(&link) {
                    let air = l.airtime_ms(bytes.len());
                    let interval = if alone && l.alone_beacons < DISCOVERY_FAST_TRIES {
                        // The first few also on a slow channel (JS8): a collision of the
                        // first beacons must not cost the 2 % rule's hour.
                        let n = l.alone_beacons;
                        l.alone_beacons += 1;
                        (DISCOVERY_FIRST_MS << n)
                            .min(DISCOVERY_INTERVAL_MS)
                            .max(3 * air)
                    } else if alone {
                        DISCOVERY_INTERVAL_MS.max(air * 50)
                    } else {
                        l.alone_beacons = 0;
                        BEACON_INTERVAL_MS.max(air * 50)
                    };
                    let jitter = interval / 4 * jitter / 1_000_000;
                    l.next_beacon = now + interval + jitter;
                    l.enqueue(now, Dest::Broadcast(link), &bytes, Priority::Control);
                }
            }
            let Some(l) = self.packet_links.get_mut(&link) else {
                continue;
            };
            l.reasm.expire(now);
            let stall = l.stall_ms();
            for (peer, tid) in l.reasm.stalled(now, stall) {
                l.reasm.touch(peer, tid, now);
                if !l.may_nack(now, peer, tid) || !l.nack_round(peer, tid) {
                    continue;
                }
                if let Some(nack) = l.reasm.nack(peer, tid) {
                    debug!(peer, transfer = tid, "asking for missing fragments");
                    l.queue_nack(now, peer, tid, nack);
                }
            }
        }
    }

    /// Take our turn on packet links where it is due, then move paced packets to the
    /// transmit queue.
    fn pump(&mut self, now: u64) {
        let free: Vec<(LinkId, bool)> = self
            .packet_links
            .iter()
            .filter(|(_, l)| !l.holding(now))
            .map(|(&id, l)| (id, l.turn_due))
            .collect();
        let mut turn = false;
        for (link, due) in free {
            turn |= due;
            self.take_turn(now, link, due);
        }
        if turn {
            // Blocks wanted from peers whose burst just ended.
            self.request_blocks(now);
        }
        let mut out = Vec::new();
        for l in self.packet_links.values_mut() {
            l.release(now, &mut out);
        }
        for (to, bytes) in out {
            self.transmits.push_back(Transmit { to, bytes });
        }
    }

    /// Our turn on a packet link whose channel is free: the greetings we owe, and after
    /// a burst we heard, the acks and header requests held back while it was on the air.
    /// They all leave in one key-up, with whatever else this turn sends.
    fn take_turn(&mut self, now: u64, link: LinkId, after_burst: bool) {
        if let Some(l) = self.packet_links.get_mut(&link) {
            l.turn_due = false;
        }
        let on_link: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link == link && !p.closing)
            .map(|(&id, _)| id)
            .collect();
        for id in on_link {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if std::mem::take(&mut p.hello_due) {
                let nonce = p.hello_nonce;
                let hello = self.hello(nonce);
                self.send(id, Message::Hello(hello));
            }
            if !after_burst {
                continue;
            }
            self.flush_acks(id);
            let best = self.chain.best_header().work;
            let want = self
                .peers
                .get_mut(&id)
                .is_some_and(|p| std::mem::take(&mut p.want_headers) && p.best_work > best);
            if want {
                self.ask_headers(now, id, None);
            }
        }
    }

    /// Tell the core the wall clock. The `now` every entry point takes drives timers and
    /// must never step; consensus timestamps (a block's time against ours) need the wall
    /// clock, steps and all. The driver calls this with both before each input; where
    /// it never does (the simulator), the two are one.
    pub fn set_wall_clock(&mut self, now: u64, wall_ms: u64) {
        let d = i128::from(wall_ms) - i128::from(now);
        self.wall_offset_ms = i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX });
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
        self.next_tick.min(self.outbox_wake()).min(turns)
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
        let res = self.submit_tx_inner(now, tx, id);
        self.pump(now);
        res
    }

    fn submit_tx_inner(&mut self, now: u64, tx: Transaction, id: Hash) -> Result<Hash, ChainError> {
        match self.chain.submit_tx(tx, self.wall_s(now))? {
            TxOutcome::Accepted => {
                self.outbox_tx_accepted(now, id, None)?;
                self.events
                    .push_back(NodeEvent::TxAccepted { id, from: None });
                self.announce(
                    None,
                    InvItem {
                        kind: InvKind::Tx,
                        hash: id,
                    },
                );
            }
            TxOutcome::Duplicate => {}
        }
        Ok(id)
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

    /// `peer` is behind us on our own chain and its link has a bit rate: send what it
    /// would ask for, unasked, because on radio every round trip costs seconds of air.
    /// On half duplex the next blocks go whole in this turn (about `PUSH_AIR_MS` of
    /// air), then the headers of the ones after; elsewhere the headers only. Not again
    /// while an earlier push or the peer's own requests may still be under way.
    fn push_to_behind(&mut self, now: u64, peer: PeerId, h: &Hello) {
        let Some(caps) = self.peer_caps(peer).cloned() else {
            return;
        };
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let tip = self.chain.tip();
        let quiet = 2 * p.rtt.rto() + PUSH_AIR_MS;
        if caps.bitrate_bps == 0
            || is_narrow(&caps)
            || !p.ready()
            || h.work >= tip.work
            || !self.chain.is_on_main_chain(&h.tip)
            || p.pushed_at.is_some_and(|t| now < t + quiet)
            || p.asked_at.is_some_and(|t| now < t + quiet)
        {
            return;
        }
        let headers = self.chain.headers_after(&[h.tip], None, PUSH_HEADERS * 2);
        if headers.is_empty() {
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pushed_at = Some(now);
        }
        let mut air = 0;
        let mut blocks = Vec::new();
        if caps.half_duplex && caps.blocks {
            for hd in &headers {
                let hash = hd.hash();
                if self.heard_where_peer_is(peer, &hash) {
                    // It heard the same broadcast we did.
                    return;
                }
                let Ok(Some(b)) = self.chain.block(&hash) else {
                    break;
                };
                let cost = packet::airtime_ms(&caps, b.encoded_len());
                if !blocks.is_empty() && air + cost > PUSH_AIR_MS {
                    break;
                }
                air += cost;
                blocks.push((hd.height, hash, b));
            }
        }
        // Where blocks remain beyond those pushed, the headers go first, those of the
        // pushed blocks included so that they connect (about 100 bytes each): when our
        // burst ends, the peer asks in one turn for every block it still lacks, not only
        // once the pushed ones have arrived.
        let rest: Vec<crate::chain::Header> = if headers.len() > blocks.len() {
            headers
                .into_iter()
                .take(blocks.len() + PUSH_HEADERS)
                .collect()
        } else {
            Vec::new()
        };
        debug!(
            peer,
            blocks = blocks.len(),
            headers = rest.len(),
            from = h.height,
            "peer is behind: pushing"
        );
        if !rest.is_empty() {
            if let Some(p) = self.peers.get_mut(&peer) {
                for hd in &rest {
                    p.learn(hd.hash());
                }
            }
            self.send(peer, Message::Headers(rest));
        }
        for (height, hash, b) in blocks {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.learn(hash);
                p.saw_tip(height, hash);
            }
            // Pushed under the outbox item's id where there is one: the peer's ack then
            // delivers the item (and proves the transactions below it).
            match self.outbox_msg_id_for_block(peer, hash) {
                Some(id) => self.send_as(peer, id, &Message::Block(b)),
                None => self.send(peer, Message::Block(b)),
            }
        }
    }

    fn on_inv(&mut self, now: u64, peer: PeerId, items: Vec<InvItem>) {
        let mut want_headers = false;
        let mut want = Vec::new();
        for it in items {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.learn(it.hash);
            }
            match it.kind {
                InvKind::Block | InvKind::CompactBlock => {
                    if !self.chain.has_header(&it.hash) {
                        want_headers = true;
                    }
                }
                InvKind::Tx => {
                    if self.chain.mempool_get(&it.hash).is_none()
                        && !self.in_flight.contains_key(&it.hash)
                    {
                        let (deadline, _) = self.block_deadline(peer, now, 1);
                        self.in_flight.insert(
                            it.hash,
                            Request {
                                peer,
                                deadline,
                                sent_at: now,
                                air: 0,
                                retry: true,
                            },
                        );
                        want.push(it);
                    }
                }
            }
        }
        if want_headers {
            self.ask_headers(now, peer, None);
        }
        if !want.is_empty() {
            self.send(peer, Message::GetData(want));
        }
    }

    fn on_getdata(&mut self, peer: PeerId, items: Vec<InvItem>) {
        // The operator keeps whole blocks off this link (a narrow one): NotFound.
        let carries_blocks = self.peer_caps(peer).is_none_or(|c| c.blocks);
        let mut missing = Vec::new();
        let mut blocks_sent = 0;
        for it in items {
            match it.kind {
                InvKind::Block | InvKind::CompactBlock => {
                    if blocks_sent >= MAX_BLOCKS_PER_GETDATA || !carries_blocks {
                        missing.push(it);
                        continue;
                    }
                    match self.chain.block(&it.hash) {
                        Ok(Some(b)) => {
                            blocks_sent += 1;
                            let msg = if it.kind == InvKind::CompactBlock {
                                compact::compact_of(&b)
                            } else {
                                Message::Block(b)
                            };
                            self.send(peer, msg);
                            // The peer asked for it: the sync now carries it there, so the
                            // outbox need not.
                            self.outbox_peer_has(self.now, peer, it.hash);
                        }
                        Ok(None) => missing.push(it),
                        Err(e) => {
                            warn!("store error reading block {}: {e}", it.hash);
                            missing.push(it);
                        }
                    }
                }
                InvKind::Tx => match self.chain.mempool_get(&it.hash) {
                    Some(tx) => self.send(peer, Message::Tx(tx)),
                    None => missing.push(it),
                },
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.learn(it.hash);
            }
        }
        if !missing.is_empty() {
            self.send(peer, Message::NotFound(missing));
        }
    }

    fn on_headers(&mut self, now: u64, peer: PeerId, headers: Vec<crate::chain::Header>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.headers_asked_at.take().is_some() {
                // A Headers after the deadline is more likely an announcement than the
                // answer: no sample from it.
                if let Some((sent, air)) = p.headers_timing.take() {
                    if now <= p.headers_deadline {
                        p.rtt.sample(now.saturating_sub(sent).saturating_sub(air));
                    }
                }
                p.rtt.answered();
            }
        }
        let Some(last) = headers.last().cloned() else {
            return;
        };
        match self.chain.accept_headers(&headers, self.wall_s(now)) {
            Ok(new) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.saw_tip(last.height, last.hash());
                    for h in &headers {
                        p.learn(h.hash());
                    }
                }
                debug!(peer, got = headers.len(), new, to = last.height, "headers");
                let asked = self
                    .peers
                    .get(&peer)
                    .map(|p| p.headers_max as usize)
                    .unwrap_or(limits::MAX_HEADERS);
                if headers.len() >= asked {
                    self.ask_headers(now, peer, Some(last.hash()));
                }
                self.request_blocks(now);
            }
            Err(e) if e.is_peer_fault() => self.misbehave(
                peer,
                RejectCode::Invalid,
                format!("invalid headers: {e}"),
                None,
            ),
            // An announced header whose parent we lack: fetch the chain that leads to it.
            Err(ChainError::UnknownParent { .. }) => self.ask_headers(now, peer, None),
            Err(e) => warn!("could not store headers: {e}"),
        }
    }

    fn on_tx(&mut self, now: u64, peer: PeerId, tx: Transaction) {
        let id = tx.id();
        self.in_flight.remove(&id);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.learn(id);
        }
        if !tx.verify(self.network) {
            self.misbehave(
                peer,
                RejectCode::Invalid,
                format!("transaction {id}: bad signature"),
                Some(id),
            );
            return;
        }
        match self.chain.submit_tx(tx, self.wall_s(now)) {
            Ok(TxOutcome::Accepted) => {
                debug!(peer, %id, "tx accepted");
                if let Err(e) = self.outbox_tx_accepted(now, id, Some(peer)) {
                    warn!(%id, "cannot queue relayed tx in the outbox: {e}");
                }
                self.events.push_back(NodeEvent::TxAccepted {
                    id,
                    from: Some(peer),
                });
                self.announce(
                    Some(peer),
                    InvItem {
                        kind: InvKind::Tx,
                        hash: id,
                    },
                );
            }
            Ok(TxOutcome::Duplicate) => {}
            // A well-signed transaction can fail policy or state checks without any fault
            // of the peer (it may have seen a block we have not): refuse it, keep the peer.
            Err(e) => {
                debug!(peer, %id, "tx refused: {e}");
                self.send(
                    peer,
                    Message::Reject(Reject {
                        code: RejectCode::Invalid,
                        reason: truncate(&e.to_string(), limits::MAX_REASON),
                        about: Some(id),
                    }),
                );
            }
        }
    }

    fn ask_headers(&mut self, now: u64, peer: PeerId, from: Option<Hash>) {
        let slow = self.peer_caps(peer).filter(|c| c.bitrate_bps > 0).cloned();
        if self.link_holding(peer, now) {
            // The peer's burst is still on the air and may hold the headers already:
            // decide when it is over (`take_turn`).
            if let Some(p) = self.peers.get_mut(&peer) {
                p.want_headers = true;
            }
            return;
        }
        // One outstanding request per peer: its answer will show what else is missing,
        // and on a slow link a duplicate answer costs seconds of air.
        let pending = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.headers_asked_at.is_some() && now < p.headers_deadline);
        if from.is_none() && pending {
            return;
        }
        let mut full = self.chain.locator();
        if slow.is_some() && full.len() > 8 {
            // Every locator hash is 32 bytes of air: on a slow link a sparse locator
            // (tip, then exponentially further back, then genesis) is plenty.
            let last = full[full.len() - 1];
            let mut sparse: Vec<Hash> = [0usize, 1, 2, 4, 8, 16, 32]
                .iter()
                .filter_map(|&i| full.get(i).copied())
                .collect();
            if sparse.last() != Some(&last) {
                sparse.push(last);
            }
            full = sparse;
        }
        let mut locator = Vec::with_capacity(limits::MAX_LOCATOR);
        if let Some(h) = from {
            locator.push(h);
        }
        for h in full {
            if locator.len() >= limits::MAX_LOCATOR {
                break;
            }
            if Some(h) != from {
                locator.push(h);
            }
        }
        // Ask for about 30 s of air worth of headers on slow links (~90 B each).
        let max = match &slow {
            Some(c) => {
                let floor = if is_narrow(c) { 2 } else { 16 };
                ((c.bitrate_bps / 8 * 30) / 90).clamp(floor, limits::MAX_HEADERS as u64) as u16
            }
            None => limits::MAX_HEADERS as u16,
        };
        let msg = Message::GetHeaders(GetHeaders {
            locator,
            stop: None,
            max,
        });
        // Deadline: the measured turnaround plus the air time of what goes out before
        // the request, the request and the answer we asked for (about 90 B a header,
        // no more than the peer is ahead).
        let timing = slow.as_ref().map(|c| {
            let ahead = self.peers.get(&peer).map_or(0, |p| {
                p.best_height
                    .saturating_sub(self.chain.best_header().height)
            });
            let answer = packet::airtime_ms(c, (ahead.clamp(1, u64::from(max)) as usize) * 90);
            let queue = self.link_air_ahead(peer, now);
            (
                now,
                queue + packet::airtime_ms(c, self.encode_len(&msg)) + answer,
            )
        });
        if let Some(p) = self.peers.get_mut(&peer) {
            p.headers_asked_at = Some(now);
            p.headers_max = max;
            p.headers_deadline = match timing {
                Some((_, air)) => now + air + p.rtt.rto(),
                None => now + HEADERS_TIMEOUT_MS,
            };
            // Karn: a request asked again gives no sample.
            p.headers_timing = if from.is_none() && p.rtt.backoff > 0 {
                None
            } else {
                timing
            };
        }
        self.send(peer, msg);
    }

    fn asked(&mut self, now: u64, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.asked_at = Some(now);
        }
    }

    /// Is the channel of `peer`'s link busy with another station's burst (half duplex)?
    fn link_holding(&self, peer: PeerId, now: u64) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| self.packet_links.get(&p.link))
            .is_some_and(|l| l.holding(now))
    }

    /// May we call an answer from `peer` overdue now? On a shared half-duplex channel the
    /// peer answers only after our whole burst (it holds until our OVER) and its answer
    /// may be on the air right now: not before our burst ended one RTO ago, nor while we
    /// hear it.
    fn answer_overdue(&self, peer: PeerId, now: u64) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return true;
        };
        match self.packet_links.get(&p.link) {
            Some(l) if l.takes_turns() => {
                !l.holding(now) && l.queued() == 0 && now >= l.burst_end() + p.rtt.rto()
            }
            _ => true,
        }
    }

    /// Air time before something sent to `peer` now would be on the air.
    fn link_air_ahead(&self, peer: PeerId, now: u64) -> u64 {
        self.peers
            .get(&peer)
            .and_then(|p| self.packet_links.get(&p.link))
            .map_or(0, |l| l.air_ahead(now))
    }

    fn note_heard(&mut self, peer: PeerId, msg: &Message) {
        let Some(link) = self.peers.get(&peer).map(|p| p.link) else {
            return;
        };
        if !self.links.get(&link).is_some_and(|c| c.broadcast) {
            return;
        }
        let hashes: Vec<Hash> = match msg {
            Message::Tx(tx) => vec![tx.id()],
            Message::Block(b) => vec![b.hash()],
            Message::Headers(hs) if hs.len() == 1 => vec![hs[0].hash()],
            Message::Inv(items) => items.iter().map(|i| i.hash).collect(),
            _ => return,
        };
        for h in hashes {
            if self.heard_on.insert(h, link).is_none() {
                self.heard_order.push_back(h);
                if self.heard_order.len() > KNOWN_CAP {
                    if let Some(old) = self.heard_order.pop_front() {
                        self.heard_on.remove(&old);
                    }
                }
            }
        }
    }

    /// Was `hash` first heard on the broadcast link this peer is on?
    fn heard_where_peer_is(&self, peer: PeerId, hash: &Hash) -> bool {
        let link = self.peers.get(&peer).map(|p| p.link);
        link.is_some() && self.heard_on.get(hash).copied() == link
    }

    fn peer_caps(&self, peer: PeerId) -> Option<&LinkCaps> {
        self.peers.get(&peer).and_then(|p| self.links.get(&p.link))
    }

    /// Blocks in flight per peer on its link.
    fn block_window(&self, peer: PeerId) -> usize {
        match self.peer_caps(peer) {
            Some(c) if c.bitrate_bps > 0 => 4,
            _ => BLOCK_WINDOW,
        }
    }

    /// Deadline and expected air time of the `k`-th block (from 1) of one `GetData` to
    /// `peer`: on links with a bit rate the measured turnaround plus the air time of the
    /// queue, the request and `k` blocks; a request that is being answered keeps its
    /// deadline moving (see `handle_packet`), so this only has to catch what is lost
    /// whole.
    fn block_deadline(&self, peer: PeerId, now: u64, k: usize) -> (u64, u64) {
        match (self.peer_caps(peer), self.peers.get(&peer)) {
            (Some(c), Some(p)) if c.bitrate_bps > 0 => {
                let air = self.link_air_ahead(peer, now)
                    + packet::airtime_ms(c, 40 + 33 * k)
                    + packet::airtime_ms(c, k * self.avg_block_bytes as usize);
                (now + air + p.rtt.rto(), air)
            }
            _ => (now + BLOCK_TIMEOUT_MS, 0),
        }
    }

    /// Fetch missing bodies of the best header chain, a bounded window per peer.
    fn request_blocks(&mut self, now: u64) {
        let missing = self.chain.missing_blocks(256);
        if missing.is_empty() {
            return;
        }
        let mut per_peer: HashMap<PeerId, Vec<InvItem>> = HashMap::new();
        let mut load: HashMap<PeerId, usize> = HashMap::new();
        for r in self.in_flight.values() {
            *load.entry(r.peer).or_default() += 1;
        }
        // Not now from a peer whose burst is still on the air (it may be bringing the
        // blocks), nor from one whose transfer to us is being repaired by NACK.
        let now_ms = self.now;
        let busy: HashSet<PeerId> = self
            .peers
            .iter()
            .filter(|(&id, p)| {
                self.packet_links.get(&p.link).is_some_and(|l| {
                    l.holding(now_ms) || l.receiving_from(now_ms, id, 3 * l.stall_ms())
                })
            })
            .map(|(&id, _)| id)
            .collect();
        for hash in missing {
            if self.in_flight.contains_key(&hash) {
                continue;
            }
            let height = self.chain.header(&hash).map(|h| h.height).unwrap_or(0);
            // Least-loaded ready peer that has (or claims) a chain that high, preferring
            // one known to hold the block: a peer as high on another fork lacks it.
            let pick = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    p.ready()
                        && !busy.contains(*id)
                        && self.links.get(&p.link).is_none_or(|c| c.blocks)
                        && (p.best_height >= height || p.known.contains(&hash))
                        && !p.lacks.contains(&hash)
                        && load.get(*id).copied().unwrap_or(0) < self.block_window(**id)
                })
                .min_by_key(|(id, p)| {
                    let load = load.get(*id).copied().unwrap_or(0);
                    (!p.known.contains(&hash), load, **id)
                })
                .map(|(&id, _)| id);
            let Some(id) = pick else {
                continue;
            };
            let k = {
                let e = load.entry(id).or_default();
                *e += 1;
                *e
            };
            let (deadline, air) = self.block_deadline(id, now, k);
            let retry = self.retry_later.remove(&hash);
            self.in_flight.insert(
                hash,
                Request {
                    peer: id,
                    deadline,
                    sent_at: now,
                    air,
                    retry,
                },
            );
            // On slow links ask for the compact form of a block at the tip: the peer
            // sends short ids for the transactions, which we mostly hold in our mempool
            // already. A station catching up on older blocks (or with an empty mempool)
            // lacks their transactions: short ids would only cost a GetBlockTxn round.
            let near_tip = height + 1 >= self.chain.best_header().height;
            let slow = self.peer_caps(id).is_some_and(|c| c.bitrate_bps > 0)
                && near_tip
                && self.chain.mempool_len() > 0;
            per_peer.entry(id).or_default().push(InvItem {
                kind: if slow {
                    InvKind::CompactBlock
                } else {
                    InvKind::Block
                },
                hash,
            });
        }
        let mut ids: Vec<PeerId> = per_peer.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(items) = per_peer.remove(&id) {
                self.send(id, Message::GetData(items));
            }
        }
    }

    /// A whole block from `peer`, however it came (full, or rebuilt from a compact one).
    fn block_arrived(&mut self, now: u64, peer: PeerId, block: crate::chain::Block) {
        let hash = block.hash();
        self.retry_later.remove(&hash);
        if let Some(r) = self.in_flight.remove(&hash) {
            if let Some(p) = self.peers.get_mut(&r.peer) {
                if r.peer == peer && !r.retry && r.air > 0 {
                    // The answer's own air time is in `air` as the average block; close
                    // enough for a turnaround estimate.
                    p.rtt
                        .sample(now.saturating_sub(r.sent_at).saturating_sub(r.air));
                }
                p.rtt.answered();
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.learn(hash);
            p.saw_tip(block.header.height, hash);
        }
        self.accept_block(now, Some(peer), block);
        self.request_blocks(now);
    }

    fn accept_block(&mut self, now: u64, from: Option<PeerId>, block: crate::chain::Block) {
        let hash = block.hash();
        match self.chain.submit_block(block, self.wall_s(now)) {
            Ok(out) => {
                if matches!(out, BlockOutcome::Orphan) {
                    if let Some(peer) = from {
                        self.ask_headers(now, peer, None);
                    }
                }
                if let Err(e) = self.outbox_block_outcome(now, from, &out) {
                    warn!(%hash, "cannot queue block in the outbox: {e}");
                }
                self.after_block(from, &out);
            }
            Err(e) if e.is_peer_fault() => {
                if let Some(peer) = from {
                    self.misbehave(
                        peer,
                        RejectCode::Invalid,
                        format!("invalid block: {e}"),
                        Some(hash),
                    );
                }
            }
            Err(e) => warn!("could not store block {hash}: {e}"),
        }
    }

    fn after_block(&mut self, from: Option<PeerId>, out: &BlockOutcome) {
        if let BlockOutcome::Connected {
            tip,
            connected,
            disconnected,
        } = out
        {
            if !disconnected.is_empty() {
                info!(
                    disconnected = disconnected.len(),
                    connected = connected.len(),
                    height = tip.height,
                    tip = %tip.hash,
                    "reorganised to a chain with more work"
                );
            }
            if !disconnected.is_empty() {
                // Transactions of the replaced blocks are back in the mempool: offer them
                // again, since peers that saw them mined may have dropped them.
                let ids: Vec<Hash> = self
                    .chain
                    .mempool_txs()
                    .iter()
                    .take(limits::MAX_INV)
                    .map(Transaction::id)
                    .collect();
                for id in ids {
                    self.announce(
                        None,
                        InvItem {
                            kind: InvKind::Tx,
                            hash: id,
                        },
                    );
                }
            }
            self.events.push_back(NodeEvent::TipChanged {
                tip: *tip,
                connected: connected.len(),
                disconnected: disconnected.len(),
                from,
            });
            self.announce(
                from,
                InvItem {
                    kind: InvKind::Block,
                    hash: tip.hash,
                },
            );
        }
    }

    /// Announce an item to every ready peer that does not already know it.
    fn announce(&mut self, except: Option<PeerId>, item: InvItem) {
        // Whatever came in on a broadcast channel was heard by every station on it;
        // repeating it there would only spend air time (beacons cover a missed frame).
        let heard_on = except
            .and_then(|e| self.peers.get(&e))
            .map(|p| p.link)
            .filter(|l| self.links.get(l).is_some_and(|c| c.broadcast));
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(&id, p)| {
                Some(id) != except
                    && Some(p.link) != heard_on
                    && p.ready()
                    && !p.known.contains(&item.hash)
                    && !self.outbox_will_push(id, &item)
            })
            .map(|(&id, _)| id)
            .collect();
        targets.sort_unstable();
        // On packet links a new block is announced by its header: the receiver can
        // check its proof of work and ask for the body at once, saving a round trip
        // of GetHeaders/Headers (two channel turnarounds on a half-duplex radio).
        let header_msg = match item.kind {
            InvKind::Block | InvKind::CompactBlock => self
                .chain
                .header(&item.hash)
                .map(|h| Message::Headers(vec![h])),
            InvKind::Tx => None,
        };
        // On a narrow link an Inv, GetData and Tx would cost three turnarounds of minutes
        // each: a small transaction goes whole, a large one not at all.
        let narrow_tx = match item.kind {
            InvKind::Tx => self
                .chain
                .mempool_get(&item.hash)
                .map(Message::Tx)
                .filter(|m| self.encode_len(m) <= NARROW_TX_MAX),
            _ => None,
        };
        let announcement = |packet: bool, narrow: bool| match (&header_msg, packet) {
            _ if narrow && item.kind == InvKind::Tx => narrow_tx.clone(),
            (Some(h), true) => Some(h.clone()),
            _ => Some(Message::Inv(vec![item])),
        };
        let mut broadcast_links = Vec::new();
        for id in targets {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            p.learn(item.hash);
            let link = p.link;
            let narrow = self.links.get(&link).is_some_and(is_narrow);
            // On a shared channel one broadcast reaches every station at the price of one.
            if self.links.get(&link).is_some_and(|c| c.broadcast) {
                if !broadcast_links.contains(&(link, narrow)) {
                    broadcast_links.push((link, narrow));
                }
                continue;
            }
            let packet = self.packet_links.contains_key(&link);
            if let Some(msg) = announcement(packet, narrow) {
                self.send(id, msg);
            }
        }
        for (link, narrow) in broadcast_links {
            let Some(msg) = announcement(true, narrow) else {
                continue;
            };
            let bytes = self.encode(&msg);
            let now = self.now;
            if let Some(l) = self.packet_links.get_mut(&link) {
                l.enqueue(now, Dest::Broadcast(link), &bytes, Priority::Control);
            }
        }
    }

    fn send(&mut self, peer: PeerId, msg: Message) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            // The driver is not draining: shed the peer rather than grow without bound.
            self.disconnect(peer, "output queue overflow".into());
            return;
        }
        let bytes = self.encode(&msg);
        self.route(peer, bytes, &msg);
    }

    /// Hand an encoded envelope to the peer's link: straight out on stream links, through
    /// the packet layer (fragmented, paced) on packet links.
    fn route(&mut self, peer: PeerId, bytes: Vec<u8>, msg: &Message) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.stats.bytes_out += bytes.len() as u64;
        p.stats.msgs_out += 1;
        p.last_send = self.now;
        let link = p.link;
        if let Some(l) = self.packet_links.get_mut(&link) {
            let prio = match msg {
                Message::Hello(_) => Priority::Greeting,
                Message::Block(_) | Message::Headers(_) | Message::Tx(_) => Priority::Bulk,
                _ => Priority::Control,
            };
            let now = self.now;
            if !l.enqueue(now, Dest::Peer(peer), &bytes, prio) {
                warn!(peer, link, "radio queue full; {} not sent", msg.name());
            }
        } else {
            self.transmits.push_back(Transmit {
                to: Dest::Peer(peer),
                bytes,
            });
        }
    }

    /// Size of `msg` as an envelope (the id's varint width aside).
    fn encode_len(&self, msg: &Message) -> usize {
        envelope::encode(self.network, self.next_msg_id, msg).len()
    }

    fn encode(&mut self, msg: &Message) -> Vec<u8> {
        let id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        envelope::encode(self.network, id, msg)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod air_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod radio_tests;
#[cfg(test)]
mod sync_tests;
