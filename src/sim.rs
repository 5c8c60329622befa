//! A deterministic network simulator: real `Node` cores with in-memory stores, joined by
//! simulated links (latency, bit rate, loss), on a virtual clock with a seeded RNG. Same
//! seed, same run: this is the test bench for sync behaviour. Point-to-point links are
//! [`LinkSpec`]s; nodes sharing one radio frequency go on a [`channel::Channel`] with
//! [`Sim::radio_channel`] (carrier sense, collisions, hidden terminals).

use crate::chain::{pow, Address, Block, Chain, NetworkParams};
use crate::net::{LinkCaps, LinkId, PeerId};
use crate::node::{Node, NodeConfig, NodeEvent};
use crate::rng::Rng;
use crate::store::{SharedHistory, Store};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// Delay before a dropped session is dialled again.
const REDIAL_MS: u64 = 30_000;
/// Link ids of shared radio channels start here (point-to-point links use their index).
const RADIO_LINK_BASE: LinkId = 1 << 20;

/// Properties of a simulated link.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// One-way latency in milliseconds.
    pub latency_ms: u64,
    /// Bit rate in bit/s (0: unlimited).
    pub bitrate_bps: u64,
    /// Probability that a frame is lost, in parts per million.
    pub loss_ppm: u32,
    /// Largest frame (0: whole messages); longer messages take several frames, each of
    /// which can be lost (losing the message).
    pub mtu: usize,
    /// Bytes of framing per frame (AX.25 + KISS headers on a radio link).
    pub frame_overhead: usize,
    /// One transmitter for both directions, with `turnaround_ms` to change direction.
    pub half_duplex: bool,
    /// Time to switch a half-duplex link from receive to transmit.
    pub turnaround_ms: u64,
    /// Outage schedule: up for `.0` ms, then down for `.1` ms, repeating (None: always up).
    pub flap: Option<(u64, u64)>,
}

impl LinkSpec {
    /// A fast, lossless link (like TCP on a LAN).
    pub fn fast() -> LinkSpec {
        LinkSpec {
            latency_ms: 5,
            bitrate_bps: 0,
            loss_ppm: 0,
            mtu: 0,
            frame_overhead: 0,
            half_duplex: false,
            turnaround_ms: 0,
            flap: None,
        }
    }

    /// A 1200 bit/s AFSK packet channel (VHF): half duplex, 256-byte frames, some loss.
    pub fn vhf_1200(loss_ppm: u32) -> LinkSpec {
        LinkSpec {
            latency_ms: 50,
            bitrate_bps: 1200,
            loss_ppm,
            mtu: 256,
            frame_overhead: 20,
            half_duplex: true,
            turnaround_ms: 300,
            flap: None,
        }
    }

    /// A 300 bit/s HF channel that is open for `up_ms` then closed for `down_ms`.
    pub fn hf_300(loss_ppm: u32, up_ms: u64, down_ms: u64) -> LinkSpec {
        LinkSpec {
            latency_ms: 100,
            bitrate_bps: 300,
            loss_ppm,
            mtu: 128,
            frame_overhead: 20,
            half_duplex: true,
            turnaround_ms: 500,
            flap: Some((up_ms, down_ms)),
        }
    }

    /// Name of the link kind for figures: from its properties, like the core does.
    pub fn kind(&self) -> String {
        match self.bitrate_bps {
            0 => "fast (tcp)".into(),
            b => format!(
                "{b} bit/s{}",
                if self.flap.is_some() {
                    " (flapping)"
                } else {
                    ""
                }
            ),
        }
    }
}

struct SimLink {
    a: usize,
    b: usize,
    spec: LinkSpec,
    up: bool,
    /// When each direction's transmitter is free again (a→b, b→a; one shared value on
    /// a half-duplex link).
    busy_until: [u64; 2],
    /// Direction of the last transmission (for half-duplex turnaround).
    last_dir: usize,
    /// Next scheduled up/down change (flapping links).
    next_change: u64,
    /// Times the link came up again.
    ups: u64,
    /// Bytes carried in each direction.
    bytes: [u64; 2],
    /// Session ids: on node a the peer is `peer_a`, on node b it is `peer_b`.
    peer_a: PeerId,
    peer_b: PeerId,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: u64,
    seq: u64,
    to: usize,
    peer: PeerId,
    link: usize,
    bytes: Vec<u8>,
}

/// A shared radio channel joining several nodes, as a KISS link on one frequency: every
/// node has one broadcast link on it, and a station becomes a peer when first heard.
struct SimRadio {
    /// Node index of each station (station `k` is node `nodes[k]`).
    nodes: Vec<usize>,
    channel: channel::Channel,
    caps: LinkCaps,
    link: LinkId,
    /// (observing station, heard station) -> the observer's peer id for it.
    heard: BTreeMap<(usize, usize), PeerId>,
}

impl SimRadio {
    fn station(&self, node: usize) -> Option<usize> {
        self.nodes.iter().position(|&n| n == node)
    }
}

/// The simulated network.
/// The simulated clock for log lines (start, now), in ms: `skywave sim` stamps them with
/// simulated time (see `cli::init_logging`). Display only; nothing in the simulation
/// reads it.
pub static LOG_CLOCK: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// The simulated node whose input is being handled, for log lines (`n17`): among a
/// thousand nodes a line is useless without it. Display only, like [`LOG_CLOCK`].
pub static LOG_NODE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Log timestamps in simulated time since the simulation's start (`+H:MM:SS.mmm`).
pub struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let ms = LOG_CLOCK
            .1
            .load(Ordering::Relaxed)
            .saturating_sub(LOG_CLOCK.0.load(Ordering::Relaxed));
        w.write_str(&sim_stamp(ms))?;
        match LOG_NODE.load(Ordering::Relaxed) {
            u64::MAX => Ok(()),
            n => write!(w, " n{n}"),
        }
    }
}

/// `ms` of simulated time as a log stamp.
fn sim_stamp(ms: u64) -> String {
    format!(
        "sim +{}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub struct Sim {
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    links: Vec<SimLink>,
    /// (node, peer id) → link index.
    sessions: BTreeMap<(usize, PeerId), usize>,
    queue: BinaryHeap<Reverse<Delivery>>,
    now: u64,
    seq: u64,
    rng: Rng,
    /// Events every node reported, with the node index and time (only while
    /// `record_events`; long runs of many nodes turn it off to bound memory).
    pub events: Vec<(u64, usize, NodeEvent)>,
    /// Keep every node event in `events`.
    pub record_events: bool,
    /// Sessions closed by a node, counted by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Simulator events handled so far (deliveries, timer rounds, link changes).
    pub handled: u64,
    /// Nodes called since their output was last drained, in order (each once).
    touched: VecDeque<usize>,
    is_touched: Vec<bool>,
    /// (next timeout, node) for every node, and each node's entry: the next timer is
    /// found without asking every node.
    timers: BTreeSet<(u64, usize)>,
    timer_at: Vec<u64>,
    /// Earliest `next_change` of any link.
    next_link_change: u64,
    params: NetworkParams,
    configs: Vec<NodeConfig>,
    next_peer: PeerId,
    /// Node restarts so far.
    pub restarts: u64,
    radios: Vec<SimRadio>,
    /// (node, peer id) -> (radio, station heard) for peers met on a radio channel.
    radio_sessions: BTreeMap<(usize, PeerId), (usize, usize)>,
    /// Block bodies, undo records and the transaction index, held once for every node.
    shared: SharedHistory,
}

impl Sim {
    /// `n` nodes on `params`, with in-memory stores, seeded from `seed`.
    pub fn new(
        params: &NetworkParams,
        n: usize,
        seed: u64,
    ) -> Result<Sim, crate::chain::ChainError> {
        let mut rng = Rng::new(seed);
        let mut nodes = Vec::with_capacity(n);
        let mut configs = Vec::with_capacity(n);
        let shared = SharedHistory::default();
        for i in 0..n {
            let store =
                Store::open_in_memory_shared(&shared).map_err(crate::chain::ChainError::from)?;
            let chain = Chain::open(params.clone(), store)?;
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let cfg = NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&id),
                callsign: format!("N0SIM-{}", i % 16),
                seed: rng.next_u64(),
                user_agent: "skywave-sim".into(),
                peers: Default::default(),
            };
            configs.push(cfg.clone());
            nodes.push(Node::new(chain, cfg));
        }
        // Start after genesis so block timestamps are plausible.
        let now = params.genesis.header.time * 1000 + 60_000;
        LOG_CLOCK.0.store(now, Ordering::Relaxed);
        LOG_CLOCK.1.store(now, Ordering::Relaxed);
        Ok(Sim {
            nodes,
            links: Vec::new(),
            sessions: BTreeMap::new(),
            queue: BinaryHeap::new(),
            now,
            seq: 0,
            rng,
            events: Vec::new(),
            record_events: true,
            disconnects: BTreeMap::new(),
            handled: 0,
            touched: (0..n).collect(),
            is_touched: vec![true; n],
            timers: BTreeSet::new(),
            timer_at: vec![u64::MAX; n],
            next_link_change: u64::MAX,
            params: params.clone(),
            configs,
            next_peer: 1,
            restarts: 0,
            radios: Vec::new(),
            radio_sessions: BTreeMap::new(),
            shared,
        })
    }

    /// Virtual time in milliseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// A chain outside the network, on a store that shares this simulation's history:
    /// to build a common history that every node then starts from ([`Sim::start_from`]).
    pub fn scratch_chain(&self) -> Result<Chain, crate::chain::ChainError> {
        Chain::open(
            self.params.clone(),
            Store::open_in_memory_shared(&self.shared)?,
        )
    }

    /// Mine one block on `chain` paying `to`, at the simulation's time.
    pub fn mine_on(&self, chain: &mut Chain, to: Address) -> Option<Block> {
        let mut block = chain.block_template(to, self.now / 1000);
        while !pow::mine(&mut block.header, 1_000_000) {}
        chain.submit_block(block.clone(), self.now / 1000).ok()?;
        Some(block)
    }

    /// Every node starts from a copy of `chain`'s store, as nodes of a network that
    /// shared this history before the simulation began (nothing crosses a link, and no
    /// node validates it again). Before any link or radio channel: a node is rebuilt.
    pub fn start_from(&mut self, chain: &Chain) -> Result<(), crate::chain::ChainError> {
        assert!(
            self.links.is_empty() && self.radios.is_empty(),
            "start_from before any link"
        );
        for i in 0..self.nodes.len() {
            let store = chain.store().copy_shared()?.ok_or_else(|| {
                crate::store::StoreError::Corrupt("a scratch chain shares the history".into())
            })?;
            self.nodes[i] = Node::new(
                Chain::open(self.params.clone(), store)?,
                self.configs[i].clone(),
            );
            self.touch(i);
        }
        self.flush();
        Ok(())
    }

    /// Join nodes `a` and `b` with a link; `a` dials. Returns the link index.
    pub fn connect(&mut self, a: usize, b: usize, spec: LinkSpec) -> usize {
        let idx = self.links.len();
        let next_change = spec.flap.map_or(u64::MAX, |(up, _)| self.now + up);
        self.links.push(SimLink {
            a,
            b,
            spec,
            up: false,
            busy_until: [0, 0],
            last_dir: 0,
            next_change,
            ups: 0,
            bytes: [0, 0],
            peer_a: 0,
            peer_b: 0,
        });
        self.next_link_change = self.next_link_change.min(next_change);
        self.open(idx);
        idx
    }

    /// Put `nodes` on one shared radio channel modelled by [`channel::Channel`] (carrier
    /// sense, collisions, half duplex, hidden terminals, slots; see `cfg`). Each node gets
    /// a broadcast radio link on it; stations appear to each other as peers when first
    /// heard, as on a KISS link. Station `k` of the channel is node `nodes[k]`. Returns the
    /// channel id for [`Sim::radio`].
    pub fn radio_channel(&mut self, nodes: &[usize], cfg: channel::ChannelConfig) -> usize {
        let id = self.radios.len();
        let nodes: Vec<usize> = nodes
            .iter()
            .copied()
            .filter(|&n| n < self.nodes.len())
            .collect();
        let caps = LinkCaps {
            mtu: 256,
            bitrate_bps: cfg.bitrate_bps,
            half_duplex: true,
            broadcast: true,
            text_only: false,
            connection_oriented: false,
            radio: true,
            blocks: true,
            carrier_sense: cfg.carrier_sense,
            slot_ms: cfg.slot_ms,
        };
        let link = RADIO_LINK_BASE + id as LinkId;
        let mut ch = channel::Channel::new(nodes.len(), cfg, self.rng.next_u64());
        ch.advance(self.now);
        let now = self.now;
        for &n in &nodes {
            self.node_mut(n).link_up(now, link, caps.clone());
        }
        self.radios.push(SimRadio {
            nodes,
            channel: ch,
            caps,
            link,
            heard: BTreeMap::new(),
        });
        self.flush();
        id
    }

    /// A radio channel, to set who hears whom (by station index) or read its statistics.
    pub fn radio(&mut self, id: usize) -> Option<&mut channel::Channel> {
        self.radios.get_mut(id).map(|r| &mut r.channel)
    }

    /// Open a session over link `idx` (new peer ids on both sides).
    fn open(&mut self, idx: usize) {
        let (a, b, caps) = {
            let l = &mut self.links[idx];
            if l.up {
                return;
            }
            l.up = true;
            l.ups += 1;
            let caps = LinkCaps {
                bitrate_bps: l.spec.bitrate_bps,
                half_duplex: l.spec.half_duplex,
                mtu: if l.spec.mtu == 0 {
                    crate::wire::envelope::MAX_MESSAGE_LEN
                } else {
                    l.spec.mtu
                },
                ..LinkCaps::tcp()
            };
            (l.a, l.b, caps)
        };
        let (peer_a, peer_b) = (self.next_peer, self.next_peer + 1);
        self.next_peer += 2;
        self.links[idx].peer_a = peer_a;
        self.links[idx].peer_b = peer_b;
        self.sessions.insert((a, peer_a), idx);
        self.sessions.insert((b, peer_b), idx);
        let now = self.now;
        self.node_mut(a).link_up(now, idx as u32, caps.clone());
        self.node_mut(b).link_up(now, idx as u32, caps);
        self.node_mut(a)
            .peer_connected(now, peer_a, idx as u32, format!("sim:{b}"), true);
        self.node_mut(b)
            .peer_connected(now, peer_b, idx as u32, format!("sim:{a}"), false);
        self.flush();
    }

    /// Bring a cut link back up (a new session).
    pub fn reconnect(&mut self, link: usize) {
        if link < self.links.len() {
            self.open(link);
        }
    }

    /// Cut a link: both sides see their session close; queued deliveries are lost.
    pub fn disconnect(&mut self, link: usize) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if !l.up {
            return;
        }
        l.up = false;
        // What was still queued for the air dies with the session.
        l.busy_until = [self.now, self.now];
        let (a, b, pa, pb) = (l.a, l.b, l.peer_a, l.peer_b);
        self.sessions.remove(&(a, pa));
        self.sessions.remove(&(b, pb));
        let now = self.now;
        self.node_mut(a).peer_disconnected(now, pa);
        self.node_mut(b).peer_disconnected(now, pb);
        self.flush();
    }

    /// Crash and restart node `i`: its sessions close, the node is rebuilt from its store
    /// (everything only in memory is lost), and its links that should be up reopen.
    pub fn restart(&mut self, i: usize) -> Result<(), crate::chain::ChainError> {
        let up: Vec<usize> = (0..self.links.len())
            .filter(|&l| self.links[l].up && (self.links[l].a == i || self.links[l].b == i))
            .collect();
        for &l in &up {
            self.disconnect(l);
        }
        let placeholder = {
            let store = Store::open_in_memory_shared(&self.shared)?;
            Node::new(
                Chain::open(self.params.clone(), store)?,
                self.configs[i].clone(),
            )
        };
        let old = std::mem::replace(&mut self.nodes[i], placeholder);
        let store = old.into_chain().into_store();
        let mut cfg = self.configs[i].clone();
        // A restarted node draws fresh nonces, as a real one seeded from the OS would.
        cfg.seed = self.rng.next_u64();
        self.nodes[i] = Node::new(Chain::open(self.params.clone(), store)?, cfg);
        self.restarts += 1;
        // On the radio the restarted node has forgotten every station it had heard.
        self.radio_sessions.retain(|(n, _), _| *n != i);
        let now = self.now;
        self.touch(i);
        for r in &mut self.radios {
            if let Some(st) = r.station(i) {
                r.heard.retain(|(obs, _), _| *obs != st);
                self.nodes[i].link_up(now, r.link, r.caps.clone());
            }
        }
        for l in up {
            self.open(l);
        }
        Ok(())
    }

    /// Links: (index, a, b, kind, up, bytes both ways, times it came up).
    pub fn links(&self) -> Vec<(usize, usize, usize, String, bool, u64, u64)> {
        self.links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    i,
                    l.a,
                    l.b,
                    l.spec.kind(),
                    l.up,
                    l.bytes[0] + l.bytes[1],
                    l.ups,
                )
            })
            .collect()
    }

    /// Stop every outage schedule and loss, and bring every link up (the "heal" phase).
    pub fn heal(&mut self) {
        for i in 0..self.links.len() {
            self.links[i].spec.flap = None;
            self.links[i].spec.loss_ppm = 0;
            self.links[i].next_change = u64::MAX;
            self.open(i);
        }
        self.recompute_link_change();
        for r in &mut self.radios {
            r.channel.config_mut().loss_ppm = 0;
        }
    }

    /// Bytes carried by a link in both directions.
    pub fn link_bytes(&self, link: usize) -> u64 {
        self.links
            .get(link)
            .map(|l| l.bytes[0] + l.bytes[1])
            .unwrap_or(0)
    }

    /// Mine one block on node `i` paying `to` (regtest difficulty) and submit it there.
    pub fn mine(&mut self, i: usize, to: Address) -> Option<Block> {
        let now = self.now;
        let mut block = self.nodes[i].chain().block_template(to, now / 1000);
        while !pow::mine(&mut block.header, 1_000_000) {}
        let res = self.node_mut(i).submit_block(now, block.clone());
        self.flush();
        res.ok().map(|_| block)
    }

    /// Submit a transaction to node `i` as its API would, and let the node's messages go.
    pub fn submit_tx(
        &mut self,
        i: usize,
        tx: crate::chain::Transaction,
    ) -> Result<crate::chain::Hash, crate::chain::ChainError> {
        let now = self.now;
        let res = self.node_mut(i).submit_tx(now, tx);
        self.flush();
        res
    }

    /// Give link `link` an outage schedule (up for `.0` ms, then down for `.1` ms,
    /// repeating), starting now with an up period; None keeps it up.
    pub fn set_flap(&mut self, link: usize, flap: Option<(u64, u64)>) {
        let now = self.now;
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.spec.flap = flap;
        l.next_change = flap.map_or(u64::MAX, |(up, _)| now + up);
        self.recompute_link_change();
        self.open(link);
    }

    /// A node that is about to be called: its output is drained and its timer read
    /// again at the next flush.
    fn node_mut(&mut self, i: usize) -> &mut Node {
        LOG_NODE.store(i as u64, Ordering::Relaxed);
        self.touch(i);
        &mut self.nodes[i]
    }

    fn touch(&mut self, i: usize) {
        if let Some(t) = self.is_touched.get_mut(i) {
            if !*t {
                *t = true;
                self.touched.push_back(i);
            }
        }
    }

    /// Drain every node's output into the network (after calling nodes directly).
    fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            self.touch(i);
        }
        self.flush();
    }

    /// Drain the output of the nodes called since the last flush into the network,
    /// until quiet, and note their next timers.
    fn flush(&mut self) {
        while let Some(i) = self.touched.pop_front() {
            self.is_touched[i] = false;
            while let Some(t) = self.nodes[i].poll_transmit() {
                match t.to {
                    crate::node::Dest::Peer(peer) => {
                        if let Some(&(r, to)) = self.radio_sessions.get(&(i, peer)) {
                            self.radio_send(r, i, Some(to), t.bytes);
                        } else {
                            self.transmit(i, peer, t.bytes);
                        }
                    }
                    // Point-to-point links have no taker for a broadcast.
                    crate::node::Dest::Broadcast(link) => {
                        if let Some(r) = self.radios.iter().position(|r| r.link == link) {
                            self.radio_send(r, i, None, t.bytes);
                        }
                    }
                }
            }
            while let Some(ev) = self.nodes[i].poll_event() {
                if let NodeEvent::Disconnect { reason, peer } = &ev {
                    *self.disconnects.entry(reason.clone()).or_default() += 1;
                    let peer = *peer;
                    if let Some((r, st)) = self.radio_sessions.remove(&(i, peer)) {
                        // A radio "session" is only our memory of the station.
                        if let Some(me) = self.radios[r].station(i) {
                            self.radios[r].heard.remove(&(me, st));
                        }
                        let now = self.now;
                        self.node_mut(i).peer_disconnected(now, peer);
                    }
                    if let Some(&l) = self.sessions.get(&(i, peer)) {
                        if self.record_events {
                            self.events.push((self.now, i, ev.clone()));
                        }
                        self.disconnect(l);
                        if self.links[l].spec.flap.is_none() {
                            // The dialling side tries again, as the TCP link does.
                            self.links[l].next_change = self.now + REDIAL_MS;
                            self.next_link_change = self.next_link_change.min(self.now + REDIAL_MS);
                        }
                        continue;
                    }
                }
                if self.record_events {
                    self.events.push((self.now, i, ev));
                }
            }
            // Drained: unless it was called again meanwhile, its timer is settled.
            if !self.is_touched[i] {
                let t = self.nodes[i].poll_timeout();
                if t != self.timer_at[i] {
                    self.timers.remove(&(self.timer_at[i], i));
                    self.timers.insert((t, i));
                    self.timer_at[i] = t;
                }
            }
        }
    }

    fn recompute_link_change(&mut self) {
        self.next_link_change = self
            .links
            .iter()
            .map(|l| l.next_change)
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Hand a frame from node `from` to its TNC on radio `r`, for station `to` (None: all).
    fn radio_send(&mut self, r: usize, from: usize, to: Option<usize>, bytes: Vec<u8>) {
        let now = self.now;
        let radio = &mut self.radios[r];
        if let Some(st) = radio.station(from) {
            radio.channel.send(now, st, to, bytes);
        }
    }

    /// Frames decoded on radio `r` up to now reach their nodes; the first frame from a
    /// station opens a session with it.
    fn radio_deliver(&mut self, r: usize) {
        let now = self.now;
        let deliveries = self.radios[r].channel.advance(now);
        for d in deliveries {
            // The link drops frames addressed to other stations.
            if d.dest.is_some_and(|x| x != d.to) {
                continue;
            }
            let radio = &self.radios[r];
            let (Some(&node), Some(&from_node)) = (radio.nodes.get(d.to), radio.nodes.get(d.from))
            else {
                continue;
            };
            let link = radio.link;
            let peer = match radio.heard.get(&(d.to, d.from)) {
                Some(&p) => p,
                None => {
                    let p = self.next_peer;
                    self.next_peer += 1;
                    self.radios[r].heard.insert((d.to, d.from), p);
                    self.radio_sessions.insert((node, p), (r, d.from));
                    self.node_mut(node).peer_connected(
                        now,
                        p,
                        link,
                        format!("radio:{from_node}"),
                        false,
                    );
                    p
                }
            };
            self.node_mut(node).handle_frame(now, peer, &d.bytes);
        }
    }

    fn transmit(&mut self, from: usize, peer: PeerId, bytes: Vec<u8>) {
        let Some(&li) = self.sessions.get(&(from, peer)) else {
            return;
        };
        let l = &mut self.links[li];
        if !l.up {
            return;
        }
        let (dir, to, to_peer) = if from == l.a {
            (0, l.b, l.peer_b)
        } else {
            (1, l.a, l.peer_a)
        };
        let frames = if l.spec.mtu == 0 {
            1
        } else {
            bytes.len().div_ceil(l.spec.mtu).max(1)
        };
        let on_air = bytes.len() + frames * l.spec.frame_overhead;
        let tx_ms = if l.spec.bitrate_bps == 0 {
            0
        } else {
            (on_air as u64 * 8 * 1000).div_ceil(l.spec.bitrate_bps)
        };
        let start = if l.spec.half_duplex {
            let free = l.busy_until[0].max(l.busy_until[1]);
            let turn = if l.last_dir != dir {
                l.spec.turnaround_ms
            } else {
                0
            };
            free.max(self.now) + turn
        } else {
            l.busy_until[dir].max(self.now)
        };
        l.busy_until[dir] = start + tx_ms;
        l.last_dir = dir;
        l.bytes[dir] += on_air as u64;
        let at = start + tx_ms + l.spec.latency_ms;
        let loss = l.spec.loss_ppm as u64;
        if loss > 0 && (0..frames).any(|_| self.rng.below(1_000_000) < loss) {
            return;
        }
        self.seq += 1;
        self.queue.push(Reverse(Delivery {
            at,
            seq: self.seq,
            to,
            peer: to_peer,
            link: li,
            bytes,
        }));
    }

    /// Advance the virtual clock to `until`, delivering messages, firing timers and
    /// following link outage schedules.
    pub fn run_until(&mut self, until: u64) {
        // Nodes may have been called directly (`nodes` is public): drain them all once.
        self.pump();
        loop {
            self.flush();
            let next_timer = self.timers.first().map_or(u64::MAX, |&(t, _)| t);
            let next_msg = self.queue.peek().map(|Reverse(d)| d.at).unwrap_or(u64::MAX);
            let next_change = self.next_link_change;
            let next_radio = self
                .radios
                .iter()
                .map(|r| r.channel.next_event())
                .min()
                .unwrap_or(u64::MAX);
            let next = next_timer
                .min(next_msg)
                .min(next_change)
                .min(next_radio)
                .max(self.now);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            LOG_CLOCK.1.store(next, Ordering::Relaxed);
            self.handled += 1;
            if next_radio <= next_timer.min(next_msg).min(next_change) {
                for r in 0..self.radios.len() {
                    if self.radios[r].channel.next_event() <= self.now {
                        self.radio_deliver(r);
                    }
                }
            } else if next_change <= next_timer.min(next_msg) {
                for i in 0..self.links.len() {
                    if self.links[i].next_change > self.now {
                        continue;
                    }
                    let Some((up_ms, down_ms)) = self.links[i].spec.flap else {
                        // A redial after a dropped session.
                        self.links[i].next_change = u64::MAX;
                        self.open(i);
                        continue;
                    };
                    if self.links[i].up {
                        self.links[i].next_change = self.now + down_ms;
                        self.disconnect(i);
                    } else {
                        self.links[i].next_change = self.now + up_ms;
                        self.open(i);
                    }
                }
                self.recompute_link_change();
            } else if next_msg <= next_timer {
                if let Some(Reverse(d)) = self.queue.pop() {
                    // Only the session it was sent on: a reopened link is a new session.
                    if self.sessions.get(&(d.to, d.peer)) == Some(&d.link) {
                        let now = self.now;
                        self.node_mut(d.to).handle_frame(now, d.peer, &d.bytes);
                    }
                }
            } else {
                while let Some(&(t, i)) = self.timers.first() {
                    if t > self.now {
                        break;
                    }
                    // Read again once drained (see `flush`).
                    self.timers.remove(&(t, i));
                    self.timer_at[i] = u64::MAX;
                    let now = self.now;
                    self.node_mut(i).handle_timeout(now);
                }
            }
            self.flush();
        }
    }

    /// Run for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Do all nodes share one tip?
    pub fn converged(&self) -> bool {
        let t = self.nodes[0].chain().tip().hash;
        self.nodes.iter().all(|n| n.chain().tip().hash == t)
    }
}

/// Give the allocator's free pages back to the system. A heal frees hundreds of
/// megabytes of outbox items within minutes, and glibc keeps freed pages inside its heap,
/// where later allocations rarely fit them: the resident size then grows by what was
/// freed (measured an hour into the 1000-node heal: 404 MB free in the heap beside
/// 908 MB in use).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of its own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub mod channel;
pub mod scenario;

#[cfg(test)]
mod radio_channel_tests {
    use super::*;
    use crate::chain::params;

    /// Three nodes on one 1200 bit/s channel, 0 and 2 hidden from each other: blocks mined
    /// at 0 reach 2 through 1, although frames from 0 and 2 collide at 1.
    #[test]
    fn a_hidden_terminal_syncs_a_few_blocks_through_the_middle_station() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 3, 5).unwrap();
        let r = sim.radio_channel(&[0, 1, 2], channel::ChannelConfig::default());
        if let Some(ch) = sim.radio(r) {
            ch.set_hears(0, 2, false);
        }
        for _ in 0..4 {
            sim.mine(0, Address([1; 32])).unwrap();
            sim.run_for(5 * 60_000);
        }
        sim.run_for(20 * 60_000);
        let stats = sim.radio(r).map(|c| c.stats().clone()).unwrap_or_default();
        eprintln!("hidden terminal: {stats:?}");
        assert!(sim.converged(), "{stats:?}");
        assert_eq!(sim.nodes[2].chain().tip().height, 4);
        assert!(
            stats.collisions > 0,
            "the hidden terminal never bit: {stats:?}"
        );
        // Node 2 never heard node 0 directly.
        assert!(sim.radios[r].heard.keys().all(|&(a, b)| (a, b) != (2, 0)));
    }

    #[test]
    fn a_radio_channel_is_deterministic() {
        let run = |seed| {
            let p = params::regtest();
            let mut sim = Sim::new(&p, 3, seed).unwrap();
            let r = sim.radio_channel(&[0, 1, 2], channel::ChannelConfig::default());
            for _ in 0..2 {
                sim.mine(1, Address([3; 32]));
                sim.run_for(3 * 60_000);
            }
            let st = sim.radio(r).map(|c| c.stats().clone()).unwrap_or_default();
            (sim.nodes[2].chain().tip().hash, st, sim.events.len())
        };
        assert_eq!(run(9), run(9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::params;

    fn addr(i: u8) -> Address {
        Address([i; 32])
    }

    #[test]
    fn a_line_of_nodes_converges_on_mined_blocks() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 4, 1).unwrap();
        for i in 0..3 {
            sim.connect(i, i + 1, LinkSpec::fast());
        }
        for _ in 0..5 {
            sim.mine(0, addr(1)).unwrap();
            sim.run_for(2_000);
        }
        sim.run_for(5_000);
        assert!(sim.converged());
        assert_eq!(sim.nodes[3].chain().tip().height, 5);
    }

    #[test]
    fn a_late_joiner_syncs_and_a_heavier_fork_wins() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 2, 7).unwrap();
        for _ in 0..4 {
            sim.mine(0, addr(1));
        }
        for _ in 0..6 {
            sim.mine(1, addr(2));
        }
        sim.connect(
            0,
            1,
            LinkSpec {
                latency_ms: 50,
                bitrate_bps: 9600,
                ..LinkSpec::fast()
            },
        );
        sim.run_for(30_000);
        assert!(sim.converged());
        assert_eq!(sim.nodes[0].chain().tip().height, 6);
        assert!(sim.events.iter().any(|(_, n, e)| *n == 0
            && matches!(e, NodeEvent::TipChanged { disconnected, .. } if *disconnected == 4)));
    }

    /// The link model: a 1200 bit/s half-duplex link carries one frame at a time in either
    /// direction, framing included, pays the turnaround to change direction, and counts
    /// each byte once, in the direction it went.
    #[test]
    fn a_1200_bit_s_half_duplex_link_serialises_both_directions() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 2, 1).unwrap();
        // A link with a session but no node traffic of its own.
        sim.links.push(SimLink {
            a: 0,
            b: 1,
            spec: LinkSpec::vhf_1200(0),
            up: true,
            busy_until: [0, 0],
            last_dir: 0,
            next_change: u64::MAX,
            ups: 1,
            bytes: [0, 0],
            peer_a: 1,
            peer_b: 2,
        });
        sim.sessions.insert((0, 1), 0);
        sim.sessions.insert((1, 2), 0);
        let t0 = sim.now();
        for _ in 0..10 {
            sim.transmit(0, 1, vec![0; 256]);
        }
        sim.transmit(1, 2, vec![0; 256]);
        let mut at: Vec<(u64, usize)> = sim
            .queue
            .iter()
            .map(|Reverse(d)| (d.at - t0, d.to))
            .collect();
        at.sort_unstable();
        // 256 + 20 bytes = 2208 bits: 1840 ms per frame, then 50 ms latency.
        let to_b: Vec<u64> = at
            .iter()
            .filter(|(_, to)| *to == 1)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(to_b, (1..=10).map(|i| i * 1840 + 50).collect::<Vec<_>>());
        let to_a: Vec<u64> = at
            .iter()
            .filter(|(_, to)| *to == 0)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(to_a, vec![10 * 1840 + 300 + 1840 + 50]);
        assert_eq!(sim.links[0].bytes, [10 * 276, 276]);
        assert_eq!(sim.link_bytes(0), 11 * 276);
    }

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let p = params::regtest();
            let mut sim = Sim::new(&p, 3, seed).unwrap();
            sim.connect(0, 1, LinkSpec::fast());
            sim.connect(
                1,
                2,
                LinkSpec {
                    latency_ms: 100,
                    bitrate_bps: 1200,
                    ..LinkSpec::fast()
                },
            );
            for _ in 0..3 {
                sim.mine(0, addr(3));
                sim.run_for(10_000);
            }
            (
                sim.nodes[2].chain().tip().hash,
                sim.link_bytes(0),
                sim.link_bytes(1),
                sim.events.len(),
            )
        };
        assert_eq!(run(11), run(11));
    }
}

#[cfg(test)]
mod flap_tests {
    use super::*;
    use crate::chain::{params, Transaction};
    use crate::outbox::RetryPolicy;

    /// A link up 5 s, down 10 s for five minutes: every queued tx still arrives, and
    /// retransmissions stay within what the backoff policy allows.
    #[test]
    fn a_flapping_link_delivers_everything_without_a_retry_storm() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 2, 42).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let me = crate::keys::address(&key);
        sim.mine(0, me).unwrap();
        let spec = LinkSpec {
            flap: Some((5_000, 10_000)),
            bitrate_bps: 9600,
            ..LinkSpec::vhf_1200(20_000)
        };
        let link = sim.connect(0, 1, spec.clone());
        sim.run_for(30_000);
        let mut ids = Vec::new();
        for nonce in 0..25 {
            let tx = Transaction::sign(p.network_id(), &key, Address([9; 32]), 1, 1000, nonce);
            let now = sim.now();
            ids.push(sim.nodes[0].submit_tx(now, tx).unwrap());
        }
        sim.pump();
        let start = sim.now();
        let span = 5 * 60_000;
        sim.run_for(span);
        let stats = sim.nodes[0].outbox().stats;
        let have = ids
            .iter()
            .filter(|id| sim.nodes[1].chain().mempool_get(id).is_some())
            .count();
        let sessions = sim.links()[link].6;
        let policy = RetryPolicy::for_link(
            &LinkCaps {
                bitrate_bps: spec.bitrate_bps,
                ..LinkCaps::tcp()
            },
            300,
        );
        let per_item = u64::from(policy.max_attempts_in(span)) - 1;
        let bound = ids.len() as u64 * per_item + sessions * policy.window as u64;
        eprintln!(
            "flapping link: {have}/{} delivered in {} s over {sessions} sessions; pushes {}, retransmissions {} (bound {bound}), bytes {}",
            ids.len(),
            (sim.now() - start) / 1000,
            stats.pushes,
            stats.retries,
            sim.link_bytes(link)
        );
        assert_eq!(have, ids.len(), "not every tx delivered");
        assert!(sim.nodes[0].outbox_items().is_empty(), "outbox not drained");
        assert!(
            stats.retries <= bound,
            "{} retries > bound {bound}",
            stats.retries
        );
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;
    use crate::chain::{params, Transaction};

    /// A payment queued by several simulated nodes is held once in memory for all their
    /// outboxes, as their stores hold it once (a thousand nodes each queued a copy).
    #[test]
    fn simulated_nodes_share_an_outbox_payload() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 2, 5).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        sim.mine(0, crate::keys::address(&key)).unwrap();
        sim.connect(0, 1, LinkSpec::vhf_1200(20_000));
        sim.run_for(120_000);
        let tx = Transaction::sign(p.network_id(), &key, Address([9; 32]), 1, 1000, 0);
        sim.submit_tx(0, tx.clone()).unwrap();
        sim.submit_tx(1, tx).unwrap();
        let payload = |i: usize| {
            let items = sim.nodes[i].outbox_items();
            assert_eq!(items.len(), 1, "node {i}: {items:?}");
            items[0].payload.clone().unwrap()
        };
        assert!(std::sync::Arc::ptr_eq(&payload(0), &payload(1)));
    }
}

#[cfg(test)]
mod settle_tests {
    use super::*;
    use crate::chain::{params, Transaction};
    use crate::outbox::State;

    /// A payment queued for a peer that is out of reach, while the same wallet's
    /// conflicting payment (same nonce) is mined on the peer's heavier chain: once the
    /// two meet, the chain refuses the queued payment for good, and its outbox item is
    /// given up (listed as expired) instead of being pushed to a peer that refuses it,
    /// without an ack, until the expiry a week later.
    #[test]
    fn a_payment_beaten_by_a_mined_conflicting_spend_leaves_the_outbox() {
        let p = params::regtest();
        let mut sim = Sim::new(&p, 2, 3).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let me = crate::keys::address(&key);
        let link = sim.connect(0, 1, LinkSpec::fast());
        sim.mine(0, me).unwrap();
        sim.mine(0, me).unwrap();
        sim.run_for(10_000);
        assert!(sim.converged());
        sim.disconnect(link);
        sim.links[link].next_change = u64::MAX;
        let net = p.network_id();
        let queued = Transaction::sign(net, &key, Address([1; 32]), 5, 1000, 0);
        let queued = sim.submit_tx(0, queued).unwrap();
        let rival = Transaction::sign(net, &key, Address([2; 32]), 7, 1000, 0);
        sim.submit_tx(1, rival).unwrap();
        sim.mine(1, Address([3; 32])).unwrap();
        sim.mine(1, Address([3; 32])).unwrap();
        let item = |sim: &Sim| {
            sim.nodes[0]
                .outbox()
                .items
                .into_iter()
                .find(|it| it.hash == queued)
        };
        assert_eq!(item(&sim).map(|it| it.state), Some(State::Pending));
        sim.reconnect(link);
        sim.run_for(30 * 60_000);
        assert!(sim.converged());
        assert!(sim.nodes[0].chain().mempool_get(&queued).is_none());
        let it = item(&sim).expect("the given-up item stays listed for the operator");
        assert_eq!(it.state, State::Expired, "{it:?}");
        assert!(it.attempts <= 2, "pushed {} times", it.attempts);
        assert_eq!(sim.nodes[0].outbox_waiting(), 0);
    }
}

#[cfg(test)]
mod log_clock_tests {
    #[test]
    fn log_lines_are_stamped_with_the_time_since_the_simulation_began() {
        assert_eq!(super::sim_stamp(3_723_004), "sim +1:02:03.004");
        assert_eq!(super::sim_stamp(0), "sim +0:00:00.000");
    }
}
