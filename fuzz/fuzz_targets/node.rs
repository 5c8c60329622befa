//! A whole sans-IO `Node` (regtest, in-memory store, fixed seed) driven by arbitrary
//! events from four peer slots: two on a TCP link, two stations on a radio (packet) link.
//!
//! Each event starts with an op byte: `op & 1` = peer slot, `op & 0x10` = the slot on the
//! radio link (what is sent there travels in `wire::frag` packets: split at its MTU of
//! 64), `(op >> 1) & 7` = action, plus 8 if `op & 0x20`:
//! * 0 raw: `len_hi len_lo bytes` handed to `handle_frame` as they are (one packet on
//!   radio);
//! * 1 wrapped: `kind len_hi len_lo body` sealed in a valid envelope (right network id,
//!   version 1, fresh msg_id, correct CRC-32), so the bytes reach the message handlers;
//! * 2 hello: `h w` a valid `Hello` (height `h`, work `w`, node id per slot), then the
//!   slot's signed `Auth` answering the last `Hello` nonce the node sent it (or
//!   broadcast), completing the handshake; a slot that greeted and heard no `Hello` of
//!   the node's yet (on radio the node answers in its turn) sends its proof after the
//!   op in which it hears one;
//! * 3 time: `dt` advance the clock by `dt` seconds (x4 above 127) and `handle_timeout`;
//! * 4 mine: `n` mine `n % 4 + 1` blocks on the slot's own shadow chain (both slots
//!   start at the node's genesis and pay different addresses, so they fork);
//! * 5 block: `i` send shadow block `i` (mod count) as a `Block`;
//! * 6 headers: `i n` send shadow headers `i..i+n` as `Headers`, or an `Inv` of block `i`
//!   if `n` is odd;
//! * 7 echo: send back the last envelope (packet on radio) the node sent to this slot;
//! * 8 fragment: `tid index count len bytes` a FRAGMENT packet with that header;
//! * 9 nack: `tid n (start len)*n` a NACK of those ranges, or of everything if `n` is 0
//!   (five bytes that once had a whole transfer sent again);
//! * 10 beacon: `h w` the slot's `Hello` with the beacon feature (as op 2 otherwise);
//! * 11 compact: `i keep` shadow block `i` as a `CompactBlock`, its short ids cut to or
//!   repeated up to `keep`;
//! * 12 getblocktxn: `h n idx*n` `GetBlockTxn` for the node's block at height `h`;
//! * 13 split: `kind len_hi len_lo body drop` a sealed body split into 64-byte fragments,
//!   those whose index mod 8 is set in `drop` left out;
//! * 14 getdata: `h n c` `GetData` of `n` blocks from height `h` (compact if `c` odd);
//! * 15 inv: `h n` `Inv` of `n` made-up transaction ids and the hash of the node's block
//!   at height `h` announced as a transaction.
//!
//! A `Disconnect` event is answered like a driver would: `peer_disconnected`, then a new
//! session (new peer id) on the same slot. Transmits and events are drained after every
//! action; asserts no panic, fewer than 20 000 transmits queued at any drain, fragments
//! repaired for one station at most `REPAIR_FACTOR` times their transfer, and after
//! every action the per-peer bounds of `Node::usage` (requests in flight per peer, control
//! bytes queued per destination, link queue, reassembly, compact blocks pending).
//!
//! How far the fuzzed sessions get is printed to stderr now and then (`node stats:`
//! sessions opened and proven, per link; repaired bytes), so a run shows whether its
//! inputs still pass the signed handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::chain::{params, pow, Address, Block, Chain, Hash};
use skywave::link::{LinkCaps, PeerId};
use skywave::node::auth;
use skywave::node::{
    Node, NodeConfig, NodeEvent, MAX_BLOCK_REQUESTS_PER_PEER, MAX_COMPACT_PENDING,
    MAX_TX_REQUESTS_PER_PEER, PEER_CONTROL_BYTES, QUEUE_BYTES, REPAIR_FACTOR,
};
use skywave::store::Store;
use skywave::wire::envelope::{self, CRC32, ENVELOPE_VERSION};
use skywave::wire::frag::{self, Reassembler, ReassemblerConfig};
use skywave::wire::message::{
    features, short_id, CompactBlock, GetBlockTxn, Hello, InvItem, InvKind, Message,
    PROTOCOL_VERSION,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const MAX_TRANSMITS: usize = 20_000;
const MAX_EVENTS: usize = 64;
const MAX_SHADOW_BLOCKS: usize = 24;
const TCP: u32 = 0;
const RADIO: u32 = 1;
/// Sessions on each link.
const PER_LINK: usize = 2;
/// The radio link's MTU: no fragment the node sends there is longer. Narrow, so that
/// even a greeting goes in fragments and NACKs find transfers of the node's to repair.
const RADIO_MTU: usize = 64;

/// Figures over the whole run, indexed by link (0 TCP, 1 radio).
static INPUTS: AtomicU64 = AtomicU64::new(0);
/// Sessions opened.
static SESSIONS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Sessions that reached the ready state (the peer's signed proof accepted).
static READY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Inputs in which at least one session on that link became ready.
static INPUTS_READY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Fragment bytes the node sent again (repairs after NACKs).
static REPAIRED: AtomicU64 = AtomicU64::new(0);

/// Print the figures after 64, 128, ... inputs, then every 4096.
fn report() {
    let n = INPUTS.fetch_add(1, Relaxed) + 1;
    if n < 64 || !(n.is_power_of_two() || n % 4096 == 0) {
        return;
    }
    let f = |a: &[AtomicU64; 2], i: usize| a[i].load(Relaxed);
    eprintln!(
        "node stats: {n} inputs; TCP {} of {} sessions ready (in {} inputs); radio {} of {} \
         sessions ready (in {} inputs); {} bytes repaired",
        f(&READY, 0),
        f(&SESSIONS, 0),
        f(&INPUTS_READY, 0),
        f(&READY, 1),
        f(&SESSIONS, 1),
        f(&INPUTS_READY, 1),
        REPAIRED.load(Relaxed),
    );
}

struct Slot {
    peer: PeerId,
    last_sent: Option<Vec<u8>>,
    shadow: Option<Chain>,
    blocks: Vec<Block>,
    /// The nonce of the last `Hello` the node sent this slot (or broadcast on its link).
    node_nonce: Option<u64>,
    /// The slot greeted and is not ready yet: it answers each new `Hello` nonce of the
    /// node's with its proof, as an honest station would.
    owes_proof: bool,
    /// The node's nonce the slot last proved for.
    proved_for: Option<u64>,
}

struct Harness {
    node: Node,
    now: u64,
    network: [u8; 4],
    next_peer: PeerId,
    next_msg_id: u64,
    next_transfer: u32,
    slots: [Slot; 4],
    /// Reassembles what the node sends on the radio link, to read its `Hello` nonces.
    heard: Reassembler,
    /// Fragments the node sent on radio, by (transfer, index): the first send.
    sent_frags: HashSet<(u32, u32)>,
    /// Fragment bytes the node sent again to one station, by (station, transfer).
    repaired: HashMap<(PeerId, u32), usize>,
    /// A session on that link became ready during this input.
    got_ready: [bool; 2],
}

/// The radio link's capabilities: a 1200 bit/s half-duplex channel with a TNC, 64-byte
/// frames.
fn radio() -> LinkCaps {
    LinkCaps {
        mtu: RADIO_MTU,
        bitrate_bps: 1200,
        half_duplex: true,
        broadcast: true,
        text_only: false,
        connection_oriented: false,
        radio: true,
        blocks: true,
        carrier_sense: true,
        slot_ms: 0,
    }
}

/// Slots 0 and 1 are on the TCP link, 2 and 3 on the radio link.
fn on_radio(slot: usize) -> bool {
    slot >= 2
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Harness {
    fn new() -> Harness {
        let p = params::regtest();
        let network = p.network_id();
        let now = p.genesis.header.time * 1000 + 60_000;
        let store = Store::open_in_memory().expect("in-memory store");
        let chain = Chain::open(p, store).expect("regtest chain");
        let node = Node::new(
            chain,
            NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[0xAA; 32]),
                callsign: "N0FUZ".into(),
                seed: 0x5eed,
                user_agent: "skywave-fuzz".into(),
                peers: Default::default(),
            },
        );
        let slot = |peer| Slot {
            peer,
            last_sent: None,
            shadow: None,
            blocks: Vec::new(),
            node_nonce: None,
            owes_proof: false,
            proved_for: None,
        };
        let mut h = Harness {
            node,
            now,
            network,
            next_peer: 3,
            next_msg_id: 1,
            next_transfer: 1,
            slots: [slot(1), slot(2), slot(3), slot(4)],
            heard: Reassembler::new(ReassemblerConfig::default()),
            sent_frags: HashSet::new(),
            repaired: HashMap::new(),
            got_ready: [false; 2],
        };
        h.node.link_up(0, TCP, LinkCaps::tcp());
        h.node.link_up(0, RADIO, radio());
        for i in 0..h.slots.len() {
            h.connect(i, i as PeerId + 1);
        }
        h.drain();
        h
    }

    /// A new session for `slot`: a TCP connection, or a station first heard on radio.
    fn connect(&mut self, slot: usize, peer: PeerId) {
        self.slots[slot].peer = peer;
        self.slots[slot].last_sent = None;
        self.slots[slot].node_nonce = None;
        self.slots[slot].owes_proof = false;
        self.slots[slot].proved_for = None;
        SESSIONS[usize::from(on_radio(slot))].fetch_add(1, Relaxed);
        if on_radio(slot) {
            self.node
                .peer_connected(self.now, peer, RADIO, format!("N{peer}FZ"), false);
        } else {
            self.node
                .peer_connected(self.now, peer, TCP, format!("fuzz:{peer}"), slot == 0);
        }
    }

    /// An envelope from `slot`: as it is on TCP, in packets on radio.
    fn send(&mut self, slot: usize, envelope: &[u8]) {
        if !on_radio(slot) {
            self.frame(slot, envelope);
            return;
        }
        let tid = self.next_transfer;
        self.next_transfer += 1;
        let Ok(mut packets) = frag::split(tid, envelope, RADIO_MTU) else {
            return;
        };
        if let Some(last) = packets.last_mut() {
            frag::set_over(last, false);
        }
        for p in packets {
            self.frame(slot, &p);
        }
    }

    /// The bounds the node must keep whatever it is sent.
    fn check_bounds(&self) {
        let u = self.node.usage();
        assert!(
            u.max_block_requests_per_peer <= MAX_BLOCK_REQUESTS_PER_PEER,
            "{u:?}"
        );
        assert!(
            u.max_tx_requests_per_peer <= MAX_TX_REQUESTS_PER_PEER,
            "{u:?}"
        );
        assert!(u.max_control_bytes_per_dest <= PEER_CONTROL_BYTES, "{u:?}");
        let queue =
            QUEUE_BYTES + envelope::MAX_MESSAGE_LEN / 16 + (PER_LINK + 1) * PEER_CONTROL_BYTES;
        assert!(u.max_link_queued_bytes <= queue, "{u:?}");
        let reasm = ReassemblerConfig::default().max_total_bytes;
        assert!(u.max_reassembly_bytes <= reasm, "{u:?}");
        assert!(u.compact_pending <= MAX_COMPACT_PENDING, "{u:?}");
    }

    /// The hash of the node's main-chain block at `height` (mod its height + 1).
    fn main_hash(&self, height: u8) -> Hash {
        let chain = self.node.chain();
        let h = u64::from(height) % (chain.tip().height + 1);
        chain.main_hash_at(h).unwrap_or(Hash::ZERO)
    }

    /// A valid envelope around raw `body` bytes of `kind`, tagged by `slot` as a peer
    /// tags what it sends after the handshake (the node checks the tag before the body).
    fn raw(&mut self, slot: usize, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![ENVELOPE_VERSION];
        b.extend_from_slice(&self.network);
        b.push(kind);
        put_varint(&mut b, self.next_msg_id);
        self.next_msg_id += 1;
        b.extend_from_slice(body);
        let crc = CRC32.checksum(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        self.tagged(slot, kind, b)
    }

    fn encode(&mut self, slot: usize, msg: &Message) -> Vec<u8> {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        let b = envelope::encode(self.network, id, msg);
        self.tagged(slot, msg.kind(), b)
    }

    /// `b` with `slot`'s session tag for the node, unless it is a handshake message.
    fn tagged(&self, slot: usize, kind: u8, b: Vec<u8>) -> Vec<u8> {
        if matches!(kind, 1 | 16) {
            return b;
        }
        auth::seal_for(&slot_key(slot), &self.node.node_id(), self.network, &b).unwrap_or(b)
    }

    fn frame(&mut self, slot: usize, bytes: &[u8]) {
        let peer = self.slots[slot].peer;
        self.node.handle_frame(self.now, peer, bytes);
        self.drain();
    }

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(t) = self.node.poll_transmit() {
            n += 1;
            assert!(
                n < MAX_TRANSMITS,
                "transmit queue grew past {MAX_TRANSMITS}"
            );
            assert!(t.bytes.len() <= envelope::MAX_MESSAGE_LEN);
            let to = match t.to {
                skywave::node::Dest::Peer(p) => Some(p),
                skywave::node::Dest::Broadcast(_) => None,
            };
            let radio = to.is_none_or(|p| {
                self.slots
                    .iter()
                    .position(|s| s.peer == p)
                    .is_some_and(on_radio)
            });
            if radio {
                self.check_repair(to, &t.bytes);
            }
            if let Some(nonce) = self.hello_nonce(radio, to.unwrap_or(0), &t.bytes) {
                for (i, s) in self.slots.iter_mut().enumerate() {
                    if to.map_or(on_radio(i), |p| s.peer == p) {
                        s.node_nonce = Some(nonce);
                    }
                }
            }
            if let Some(s) = self.slots.iter_mut().find(|s| Some(s.peer) == to) {
                s.last_sent = Some(t.bytes);
            }
        }
        let mut gone = Vec::new();
        while let Some(ev) = self.node.poll_event() {
            match ev {
                NodeEvent::Disconnect { peer, .. } => gone.push(peer),
                NodeEvent::PeerReady { peer, .. } => {
                    if let Some(i) = self.slots.iter().position(|s| s.peer == peer) {
                        self.slots[i].owes_proof = false;
                        let link = usize::from(on_radio(i));
                        READY[link].fetch_add(1, Relaxed);
                        self.got_ready[link] = true;
                    }
                }
                _ => {}
            }
        }
        for peer in gone {
            let Some(i) = self.slots.iter().position(|s| s.peer == peer) else {
                continue;
            };
            self.node.peer_disconnected(self.now, peer);
            let new = self.next_peer;
            self.next_peer += 1;
            self.connect(i, new);
            // The new session's Hello (and anything else) is drained next time round.
        }
    }

    /// A fragment sent a second time is a repair: at most `REPAIR_FACTOR` times its
    /// transfer (of `count` fragments of at most the MTU) for one station.
    fn check_repair(&mut self, to: Option<PeerId>, bytes: &[u8]) {
        let Ok(frag::Packet::Fragment(f)) = frag::parse(bytes) else {
            return;
        };
        if self.sent_frags.insert((f.transfer_id, f.index)) {
            return;
        }
        REPAIRED.fetch_add(bytes.len() as u64, Relaxed);
        let Some(peer) = to else {
            panic!("a repair was broadcast: {f:?}");
        };
        let r = self.repaired.entry((peer, f.transfer_id)).or_default();
        *r += bytes.len();
        let bound = REPAIR_FACTOR * f.count as usize * RADIO_MTU;
        assert!(
            *r <= bound,
            "{r} bytes of transfer {} repaired for station {peer} (bound {bound})",
            f.transfer_id
        );
    }

    /// The nonce of the node's `Hello` in `bytes`, if they (completed) one: an envelope on
    /// TCP, a packet on radio.
    fn hello_nonce(&mut self, radio: bool, to: PeerId, bytes: &[u8]) -> Option<u64> {
        let env = if radio {
            let whole = self.heard.insert(self.now, to, bytes).ok()??;
            envelope::decode(&whole).ok()?
        } else {
            envelope::decode(bytes).ok()?
        };
        match env.message {
            Message::Hello(h) => Some(h.nonce),
            _ => None,
        }
    }

    fn hello(&mut self, slot: usize, height: u8, work: u8, beacon: bool) {
        let tip = self.node.chain().tip();
        let beacon = if beacon { features::BEACON } else { 0 };
        let msg = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            network: self.network,
            height: u64::from(height),
            tip: tip.hash,
            work: tip.work + u128::from(work),
            node_id: slot_key(slot).verifying_key().to_bytes(),
            callsign: format!("N0P-{slot}"),
            features: features::FULL_BLOCKS | beacon,
            nonce: 1000 + slot as u64,
            user_agent: "fuzz-peer".into(),
        });
        let b = self.encode(slot, &msg);
        self.send(slot, &b);
        self.slots[slot].owes_proof = true;
        self.slots[slot].proved_for = None;
        self.prove(slot);
    }

    /// The slot's signed `Auth`, if it greeted and has heard a `Hello` nonce of the node's
    /// it has not proved for yet (on radio the node answers in its turn, often only after
    /// time passes).
    fn prove(&mut self, slot: usize) {
        let s = &self.slots[slot];
        let Some(seen) = s
            .node_nonce
            .filter(|n| s.owes_proof && s.proved_for != Some(*n))
        else {
            return;
        };
        self.slots[slot].proved_for = Some(seen);
        let t = auth::Transcript {
            network: self.network,
            prover: slot_key(slot).verifying_key().to_bytes(),
            verifier: self.node.node_id(),
            seen,
            nonce: 1000 + slot as u64,
        };
        let proof = Message::Auth(auth::prove(&slot_key(slot), None, &t));
        let b = self.encode(slot, &proof);
        self.send(slot, &b);
    }

    fn mine(&mut self, slot: usize, n: u8) {
        if self.slots[slot].shadow.is_none() {
            let store = Store::open_in_memory().expect("in-memory store");
            let chain = Chain::open(params::regtest(), store).expect("regtest chain");
            self.slots[slot].shadow = Some(chain);
        }
        let now = self.now;
        let s = &mut self.slots[slot];
        let Some(chain) = s.shadow.as_mut() else {
            return;
        };
        for _ in 0..(n % 4 + 1) {
            if s.blocks.len() >= MAX_SHADOW_BLOCKS {
                break;
            }
            let mut block = chain.block_template(Address([slot as u8 + 0x10; 32]), now / 1000);
            while !pow::mine(&mut block.header, 1_000_000) {}
            if chain.submit_block(block.clone(), now / 1000).is_ok() {
                s.blocks.push(block);
            }
        }
    }

    fn step(&mut self, data: &mut &[u8]) -> Option<()> {
        let op = take(data)?;
        let slot = usize::from(op & 1) + if op & 0x10 != 0 { 2 } else { 0 };
        let action = (op >> 1) & 7 | if op & 0x20 != 0 { 8 } else { 0 };
        match action {
            0 => {
                let len = take_len(data)?;
                let (bytes, rest) = data.split_at(len.min(data.len()));
                *data = rest;
                self.frame(slot, bytes);
            }
            1 => {
                let kind = take(data)?;
                let len = take_len(data)?;
                let (body, rest) = data.split_at(len.min(data.len()));
                *data = rest;
                let b = self.raw(slot, kind % 20, body);
                self.send(slot, &b);
            }
            2 => {
                let (h, w) = (take(data)?, take(data)?);
                self.hello(slot, h, w, false);
            }
            3 => {
                let dt = u64::from(take(data)?);
                let secs = if dt > 127 { (dt - 127) * 4 + 127 } else { dt };
                self.now += secs * 1000;
                self.node.handle_timeout(self.now);
                self.drain();
            }
            4 => {
                let n = take(data)?;
                self.mine(slot, n);
            }
            5 => {
                let i = usize::from(take(data)?);
                let blocks = &self.slots[slot].blocks;
                if let Some(b) = blocks.get(i % blocks.len().max(1)).cloned() {
                    let bytes = self.encode(slot, &Message::Block(b));
                    self.send(slot, &bytes);
                }
            }
            6 => {
                let (i, n) = (usize::from(take(data)?), usize::from(take(data)?));
                let blocks = &self.slots[slot].blocks;
                if blocks.is_empty() {
                    return Some(());
                }
                let i = i % blocks.len();
                let msg = if n % 2 == 1 {
                    Message::Inv(vec![InvItem {
                        kind: InvKind::Block,
                        hash: blocks[i].hash(),
                    }])
                } else {
                    let end = (i + n / 2).min(blocks.len());
                    Message::Headers(blocks[i..end].iter().map(|b| b.header.clone()).collect())
                };
                let bytes = self.encode(slot, &msg);
                self.send(slot, &bytes);
            }
            7 => {
                if let Some(b) = self.slots[slot].last_sent.clone() {
                    self.frame(slot, &b);
                }
            }
            8 => {
                let (tid, index, count, len) = (take(data)?, take(data)?, take(data)?, take(data)?);
                let mut p = vec![frag::TAG_FRAGMENT];
                for v in [tid, index, count] {
                    put_varint(&mut p, u64::from(v));
                }
                let (body, rest) = data.split_at(usize::from(len).min(data.len()));
                *data = rest;
                p.extend_from_slice(body);
                self.frame(slot, &p);
            }
            9 => {
                let (tid, n) = (u32::from(take(data)?), take(data)?);
                let nack = if n == 0 {
                    frag::Nack {
                        transfer_id: tid,
                        ranges: std::iter::once(0..frag::MAX_FRAGMENTS).collect(),
                    }
                    .encode()
                } else {
                    let mut missing = Vec::new();
                    for _ in 0..n.min(16) {
                        let (start, len) = (u32::from(take(data)?), u32::from(take(data)?));
                        missing.extend(start..start + len % 32);
                    }
                    frag::encode_nack(tid, &missing)
                };
                self.frame(slot, &nack);
            }
            10 => {
                let (h, w) = (take(data)?, take(data)?);
                self.hello(slot, h, w, true);
            }
            11 => {
                let (i, keep) = (usize::from(take(data)?), usize::from(take(data)?));
                let blocks = &self.slots[slot].blocks;
                let Some(b) = blocks.get(i % blocks.len().max(1)).cloned() else {
                    return Some(());
                };
                let hash = b.hash();
                let ids: Vec<_> = b.txs.iter().map(|t| short_id(&hash, &t.id())).collect();
                let short_ids = if ids.is_empty() {
                    Vec::new()
                } else {
                    ids.iter().copied().cycle().take(keep).collect()
                };
                let msg = Message::CompactBlock(CompactBlock {
                    header: b.header,
                    coinbase: b.coinbase,
                    short_ids,
                });
                let bytes = self.encode(slot, &msg);
                self.send(slot, &bytes);
            }
            12 => {
                let (h, n) = (take(data)?, take(data)?);
                let mut indexes = Vec::new();
                for _ in 0..n {
                    indexes.push(u16::from(take(data)?));
                }
                let msg = Message::GetBlockTxn(GetBlockTxn {
                    block: self.main_hash(h),
                    indexes,
                });
                let bytes = self.encode(slot, &msg);
                self.send(slot, &bytes);
            }
            13 => {
                let kind = take(data)?;
                let len = take_len(data)?;
                let (body, rest) = data.split_at(len.min(data.len()));
                *data = rest;
                let drop = take(data)?;
                let b = self.raw(slot, kind % 20, body);
                let tid = self.next_transfer;
                self.next_transfer += 1;
                let Ok(packets) = frag::split(tid, &b, 64) else {
                    return Some(());
                };
                for (i, p) in packets.iter().enumerate() {
                    if drop & (1 << (i % 8)) == 0 {
                        self.frame(slot, p);
                    }
                }
            }
            14 => {
                let (h, n, c) = (take(data)?, take(data)?, take(data)?);
                let kind = if c % 2 == 1 {
                    InvKind::CompactBlock
                } else {
                    InvKind::Block
                };
                let items = (0..n % 64)
                    .map(|k| InvItem {
                        kind,
                        hash: self.main_hash(h.wrapping_add(k)),
                    })
                    .collect();
                let bytes = self.encode(slot, &Message::GetData(items));
                self.send(slot, &bytes);
            }
            _ => {
                let (h, n) = (take(data)?, take(data)?);
                let items = (0..u16::from(n) * 2)
                    .map(|k| Hash::digest(&[h, (k >> 8) as u8, k as u8]))
                    .chain(std::iter::once(self.main_hash(h)))
                    .map(|hash| InvItem {
                        kind: InvKind::Tx,
                        hash,
                    })
                    .collect();
                let bytes = self.encode(slot, &Message::Inv(items));
                self.send(slot, &bytes);
            }
        }
        for slot in 0..self.slots.len() {
            self.prove(slot);
        }
        self.check_bounds();
        Some(())
    }
}

/// The node key of the peer in `slot` (the same across its sessions).
fn slot_key(slot: usize) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[slot as u8 + 1; 32])
}

fn take(data: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = data.split_first()?;
    *data = rest;
    Some(b)
}

fn take_len(data: &mut &[u8]) -> Option<usize> {
    let hi = take(data)?;
    let lo = take(data)?;
    Some(usize::from(u16::from_be_bytes([hi, lo])))
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut data = data;
    for _ in 0..MAX_EVENTS {
        if h.step(&mut data).is_none() {
            break;
        }
    }
    for (link, got) in h.got_ready.iter().enumerate() {
        if *got {
            INPUTS_READY[link].fetch_add(1, Relaxed);
        }
    }
    report();
});
