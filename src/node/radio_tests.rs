//! Stations on one simulated half-duplex radio channel, in virtual time: exercises the
//! packet layer (fragmentation, NACK repair, pacing, beacons) without any I/O. The channel
//! is [`crate::sim::channel`]: a KISS TNC per station with Direwolf's carrier sense,
//! PERSIST/SLOTTIME, TXDELAY/TXTAIL and bundling, collisions, deafness while keyed, hidden
//! terminals and random loss, so a test cannot pass only because the air is kind. Set
//! `AIR_TRACE=1` to see every frame handed to a TNC, every key-up and each frame's fate at
//! every station, `AIR_DISC=1` to see every session a node drops and why.

use super::*;
use crate::chain::{params, pow, Address};
use crate::sim::channel::{Channel, ChannelConfig, ChannelStats};
use crate::store::Store;

pub(super) const LINK: LinkId = 1;

pub(super) fn radio_caps() -> LinkCaps {
    LinkCaps {
        mtu: 256,
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

/// The channel a link with `caps` runs on: Direwolf's defaults at the link's bit rate
/// (p-persistent CSMA with TXDELAY, DCD latency, collisions, half duplex), or JS8Call-like
/// slots when the link has no carrier sense and a slot length.
pub(super) fn channel_config(caps: &LinkCaps, loss_ppm: u64) -> ChannelConfig {
    let base = if !caps.carrier_sense && caps.slot_ms > 0 {
        ChannelConfig::slotted(caps.bitrate_bps, caps.slot_ms)
    } else {
        ChannelConfig {
            bitrate_bps: caps.bitrate_bps,
            carrier_sense: caps.carrier_sense,
            ..ChannelConfig::default()
        }
    };
    ChannelConfig {
        loss_ppm: u32::try_from(loss_ppm).unwrap_or(u32::MAX),
        ..base
    }
}

/// What a packet-link frame carries, for traces.
pub(super) fn describe(bytes: &[u8]) -> String {
    match crate::wire::frag::parse(bytes) {
        Ok(crate::wire::frag::Packet::Whole(m)) => crate::wire::envelope::decode(m)
            .map(|e| e.message.name())
            .unwrap_or("?")
            .to_string(),
        Ok(crate::wire::frag::Packet::Fragment(f)) => {
            // The first fragment starts with the envelope: version, network (4), kind.
            let kind = if f.index == 0 {
                f.payload
                    .get(5)
                    .map(|k| format!(" kind {k}"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            format!("fragment t{} {}/{}{kind}", f.transfer_id, f.index, f.count)
        }
        Ok(crate::wire::frag::Packet::Nack(_)) => "nack".into(),
        Err(_) => {
            use crate::wire::fountain;
            if let Ok(s) = fountain::parse_symbol(bytes) {
                let kind = if s.index == 0 {
                    s.payload
                        .get(5)
                        .map(|k| format!(" kind {k}"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                format!("symbol t{} {}/{}{kind}", s.transfer_id, s.index, s.count)
            } else if fountain::parse_more(bytes).is_ok() {
                "more".into()
            } else {
                "bad".into()
            }
        }
    }
}

/// Stations on one shared radio channel ([`crate::sim::channel`]), in virtual time. What a
/// node transmits goes into its station's TNC queue at the moment the node emits it; the
/// channel decides when it keys up (carrier sense, PERSIST, slots), what collides, who is
/// deaf because it is transmitting, and what random loss takes. Decoded frames reach a
/// node only if broadcast or addressed to it (as the KISS link filters on the AX.25
/// destination); the first frame heard from a station opens a session with it, as on the
/// KISS link. All stations come up at the same instant, as they would on the real air.
pub(super) struct Air {
    pub(super) nodes: Vec<Node>,
    /// (observer, station) -> the observer's peer id for that station.
    pub(super) heard: BTreeMap<(usize, usize), PeerId>,
    pub(super) now: u64,
    pub(super) channel: Channel,
    /// Frames the nodes handed to their TNCs (and the TNCs accepted).
    pub(super) frames: u64,
    /// Frame receptions lost, per station that could hear the sender: collisions,
    /// deafness while transmitting, random loss (see [`ChannelStats`]).
    pub(super) lost: u64,
    /// Bytes the nodes handed to their TNCs (information fields, framing not counted).
    pub(super) air_bytes: u64,
    /// Frames the TNCs refused (queue full).
    pub(super) refused: u64,
    /// Every frame handed to a TNC: (station, what it carries as `describe` names it).
    pub(super) sent_log: Vec<(usize, String)>,
    /// The length of each frame in `sent_log`, in the same order.
    pub(super) sent_len: Vec<usize>,
    /// One-shot losses: the next frame from .0 to .1 carrying .2 is not delivered.
    drops: Vec<(usize, usize, String)>,
    /// Frames lost to `drop_first`.
    pub(super) dropped: u64,
    /// Frames a station decoded from another that carry no packet or no message (what a
    /// node must refuse as malformed), (from, to) -> count.
    pub(super) garbage: BTreeMap<(usize, usize), u64>,
    trace: bool,
}

impl Air {
    pub(super) fn new(n: usize, seed: u64, loss_ppm: u64) -> Air {
        Air::with_caps(n, seed, loss_ppm, radio_caps())
    }

    pub(super) fn with_caps(n: usize, seed: u64, loss_ppm: u64, caps: LinkCaps) -> Air {
        let cfg = channel_config(&caps, loss_ppm);
        Air::with_channel(n, seed, caps, cfg)
    }

    /// `n` stations on a channel configured by `cfg` (PERSIST, slots, loss, ...). Use
    /// [`Air::channel_mut`] for the audibility matrix (hidden terminals).
    pub(super) fn with_channel(n: usize, seed: u64, caps: LinkCaps, cfg: ChannelConfig) -> Air {
        let p = params::regtest();
        let now = p.genesis.header.time * 1000 + 60_000;
        let mut nodes = Vec::new();
        for i in 0..n {
            let chain = Chain::open(p.clone(), Store::open_in_memory().unwrap()).unwrap();
            let mut node = Node::new(chain, station_config(i, seed));
            node.link_up(now, LINK, caps.clone());
            nodes.push(node);
        }
        let mut channel = Channel::new(n, cfg, seed ^ 0xA1_2C_4A_11);
        channel.set_describe(describe);
        channel.advance(now);
        Air {
            nodes,
            heard: BTreeMap::new(),
            now,
            channel,
            frames: 0,
            lost: 0,
            air_bytes: 0,
            refused: 0,
            sent_log: Vec::new(),
            sent_len: Vec::new(),
            drops: Vec::new(),
            dropped: 0,
            garbage: BTreeMap::new(),
            trace: std::env::var_os("AIR_TRACE").is_some(),
        }
    }

    /// The channel (configuration, statistics, audibility).
    pub(super) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel, to change its configuration or who hears whom.
    pub(super) fn channel_mut(&mut self) -> &mut Channel {
        &mut self.channel
    }

    /// Channel-wide counters.
    pub(super) fn channel_stats(&self) -> ChannelStats {
        self.channel.stats().clone()
    }

    pub(super) fn peer_id(&self, observer: usize, station: usize) -> PeerId {
        (observer as u64) << 16 | station as u64
    }

    pub(super) fn station_of(&self, observer: usize, peer: PeerId) -> usize {
        let _ = observer;
        (peer & 0xFFFF) as usize
    }

    fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].poll_transmit() {
                if self.trace {
                    eprintln!(
                        "{} {i} -> {:?} {} {} (to TNC, {} queued)",
                        self.now,
                        t.to,
                        describe(&t.bytes),
                        t.bytes.len(),
                        self.channel.queued(i)
                    );
                }
                let to = match t.to {
                    Dest::Peer(p) => Some(self.station_of(i, p)),
                    Dest::Broadcast(_) => None,
                };
                let len = t.bytes.len() as u64;
                self.sent_log.push((i, describe(&t.bytes)));
                self.sent_len.push(t.bytes.len());
                if self.channel.send(self.now, i, to, t.bytes) {
                    self.frames += 1;
                    self.air_bytes += len;
                } else {
                    self.refused += 1;
                }
            }
            while let Some(ev) = self.nodes[i].poll_event() {
                if let NodeEvent::Disconnect { peer, reason } = &ev {
                    if std::env::var_os("AIR_DISC").is_some() {
                        eprintln!("{} st{i} drops {peer}: {reason}", self.now);
                    }
                }
                if let NodeEvent::Disconnect { peer, .. } = ev {
                    let st = self.station_of(i, peer);
                    self.heard.remove(&(i, st));
                    self.nodes[i].peer_disconnected(self.now, peer);
                }
            }
        }
    }

    /// Key up `bytes` from station `from` for `to` (None: broadcast) through its TNC, as
    /// a station that is not running our node would (a flood, a foreign protocol).
    pub(super) fn inject(&mut self, from: usize, to: Option<usize>, bytes: Vec<u8>) {
        self.channel.send(self.now, from, to, bytes);
    }

    /// The next frame from `from` that `to` would decode carrying `kind` (as [`describe`]
    /// names it) is lost, once.
    pub(super) fn drop_first(&mut self, from: usize, to: usize, kind: &str) {
        self.drops.push((from, to, kind.to_string()));
    }

    fn take_drop(&mut self, from: usize, to: usize, bytes: &[u8]) -> bool {
        let kind = describe(bytes);
        let Some(i) = self
            .drops
            .iter()
            .position(|(f, t, k)| *f == from && *t == to && *k == kind)
        else {
            return false;
        };
        self.drops.remove(i);
        self.dropped += 1;
        true
    }

    /// Hand `bytes` to node `to` as if decoded from station `from` now, bypassing the
    /// channel. The first frame from a station opens the session with it.
    pub(super) fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let pid = self.peer_id(to, from);
        if let std::collections::btree_map::Entry::Vacant(e) = self.heard.entry((to, from)) {
            e.insert(pid);
            let call = format!("N0CALL-{}", from + 1);
            self.nodes[to].peer_connected(self.now, pid, LINK, call, false);
        }
        self.nodes[to].handle_frame(self.now, pid, bytes);
    }

    /// Every station opens a session with every other at once, before hearing anything:
    /// a link configured with its peers (JS8Call's `peer=`), as the link task announces
    /// them when it comes up.
    pub(super) fn configured_peers(&mut self) {
        let n = self.nodes.len();
        for to in 0..n {
            for from in (0..n).filter(|&f| f != to) {
                let pid = self.peer_id(to, from);
                self.heard.insert((to, from), pid);
                let call = format!("N0CALL-{}", from + 1);
                self.nodes[to].peer_connected(self.now, pid, LINK, call, true);
            }
        }
    }

    fn sync_counters(&mut self) {
        let s = self.channel.stats();
        self.lost = s.collisions + s.deaf + s.lost;
    }

    pub(super) fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            self.drain();
            let next_air = self.channel.next_event();
            let next_timer = self
                .nodes
                .iter()
                .map(|n| n.poll_timeout())
                .min()
                .unwrap_or(u64::MAX);
            let next = next_air.min(next_timer).max(self.now);
            if next > end {
                self.now = end;
                self.channel.advance(end);
                self.sync_counters();
                return;
            }
            self.now = next;
            if next_air <= next_timer {
                for d in self.channel.advance(next) {
                    // The link drops frames addressed to other stations.
                    if d.dest.is_none_or(|x| x == d.to) && d.to < self.nodes.len() {
                        if self.take_drop(d.from, d.to, &d.bytes) {
                            continue;
                        }
                        if matches!(describe(&d.bytes).as_str(), "bad" | "?") {
                            *self.garbage.entry((d.from, d.to)).or_default() += 1;
                        }
                        self.deliver(d.from, d.to, &d.bytes);
                    }
                }
                self.sync_counters();
            } else {
                for n in &mut self.nodes {
                    if n.poll_timeout() <= self.now {
                        n.handle_timeout(self.now);
                    }
                }
            }
        }
    }

    /// Mine a block with `txs` fresh transactions from `key` on node `i`.
    pub(super) fn mine_with_txs(&mut self, i: usize, key: &ed25519_dalek::SigningKey, txs: usize) {
        let net = params::regtest().network_id();
        let from = crate::keys::address(key);
        for k in 0..txs {
            let nonce = self.nodes[i].chain().next_nonce(&from);
            let tx = Transaction::sign(net, key, Address([k as u8 + 100; 32]), 1000, 1000, nonce);
            self.nodes[i].submit_tx(self.now, tx).unwrap();
        }
        let mut b = self.nodes[i].chain().block_template(from, self.now / 1000);
        while !pow::mine(&mut b.header, 1_000_000) {}
        self.nodes[i].submit_block(self.now, b).unwrap();
    }
}

pub(super) fn station_config(i: usize, seed: u64) -> NodeConfig {
    NodeConfig {
        node_key: ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32]),
        callsign: format!("N0CALL-{}", i + 1),
        seed: seed + i as u64,
        user_agent: "radio-test".into(),
        peers: Default::default(),
    }
}

pub(super) fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

pub(super) fn main_chain_tx_ids(n: &Node) -> Vec<Hash> {
    let tip = n.chain().tip().height;
    let mut ids = Vec::new();
    for h in 1..=tip {
        let hash = n.chain().main_hash_at(h).unwrap();
        let b = n.chain().block(&hash).unwrap().unwrap();
        ids.extend(b.txs.iter().map(Transaction::id));
    }
    ids
}

fn sync_over_air(loss_ppm: u64, seed: u64) -> Air {
    let mut air = Air::new(2, seed, loss_ppm);
    let k = key();
    // A mines 10 blocks, most carrying transactions, before B is on the air.
    air.mine_with_txs(0, &k, 0);
    for i in 0..9 {
        air.mine_with_txs(0, &k, 1 + i % 4);
    }
    air.run_for(2 * 60 * 60 * 1000);
    air
}

#[test]
fn station_syncs_ten_blocks_over_a_clean_channel() {
    let air = sync_over_air(0, 1);
    let (a, b) = (&air.nodes[0], &air.nodes[1]);
    assert_eq!(b.chain().tip().hash, a.chain().tip().hash);
    assert_eq!(b.chain().tip().height, 10);
    // Both stations identified themselves by beacon and handshake.
    assert!(air.frames > 4);
    assert_eq!(main_chain_tx_ids(b).len(), 21);
}

#[test]
fn sync_survives_twenty_percent_frame_loss_without_duplicates() {
    let air = sync_over_air(200_000, 3);
    let (a, b) = (&air.nodes[0], &air.nodes[1]);
    assert!(air.lost > 0, "the channel lost frames");
    assert_eq!(
        b.chain().tip().hash,
        a.chain().tip().hash,
        "lost {} of {}",
        air.lost,
        air.frames
    );
    let ids = main_chain_tx_ids(b);
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(ids.len(), dedup.len(), "no transaction twice");
    assert_eq!(ids.len(), 21);
    let stats = a.packet_stats(LINK).unwrap();
    assert!(
        stats.repaired > 0,
        "lost fragments were repaired by NACK: {stats:?}"
    );
}

#[test]
fn a_transaction_crosses_the_channel_and_the_new_tip_is_announced_once() {
    let mut clean = 0;
    for seed in 1..9 {
        let mut air = Air::new(3, seed, 0);
        let k = key();
        air.mine_with_txs(0, &k, 0);
        air.run_for(10 * 60 * 1000);
        assert!(
            air.nodes.iter().all(|n| n.chain().tip().height == 1),
            "seed {seed}"
        );
        // A transaction submitted at station 2 reaches station 0's mempool.
        let net = params::regtest().network_id();
        let tx = Transaction::sign(net, &k, Address([9; 32]), 5, 1000, 0);
        let id = air.nodes[2].submit_tx(air.now, tx).unwrap();
        air.run_for(60 * 1000);
        assert!(
            air.nodes[0].chain().mempool_get(&id).is_some(),
            "seed {seed}"
        );
        // A new block at 0 reaches both others; the announcement is one broadcast frame.
        let before = air.sent_log.len();
        air.mine_with_txs(0, &k, 0);
        air.run_for(60 * 1000);
        assert!(
            air.nodes.iter().all(|n| n.chain().tip().height == 2),
            "seed {seed}"
        );
        // One broadcast header, then per station a request and the compact block (one
        // frame: the transaction it carries is already in their mempools). The two
        // stations heard the announcement at the same moment: their requests go at random
        // moments, or they collide and both ask again. Beacons, acks and the like that
        // fall in the window are not the block's.
        let block_frames = [
            "headers",
            "getdata",
            "cmpctblock",
            "getblocktxn",
            "blocktxn",
            "block",
        ];
        let used: Vec<&(usize, String)> = air.sent_log[before..]
            .iter()
            .filter(|(_, d)| block_frames.contains(&d.as_str()) || d.ends_with("kind 8"))
            .collect();
        let announced = used
            .iter()
            .filter(|(s, d)| *s == 0 && d == "headers")
            .count();
        assert_eq!(announced, 1, "seed {seed}: {used:?}");

        // Three stations on one channel do collide at times (two waiting for the same
        // carrier to drop key up together): at most one round of that, a request more
        // from each and an answer more.
        assert!(
            used.len() <= 8,
            "seed {seed}: announcing and fetching one block took {} frames: {used:?}",
            used.len()
        );
        if used.len() <= 5 {
            clean += 1;
        }
    }
    assert!(
        clean >= 6,
        "only {clean} of 8 seeds fetched the block without a repeat"
    );
}

#[test]
fn a_compact_block_fetches_only_the_transactions_the_receiver_lacks() {
    let mut air = Air::new(2, 9, 0);
    let k = key();
    air.mine_with_txs(0, &k, 0);
    air.run_for(10 * 60 * 1000);
    assert_eq!(air.nodes[1].chain().tip().height, 1);
    // Five transactions reach B's mempool over the air; then A mines them together with
    // three that B has never seen.
    let net = params::regtest().network_id();
    for n in 0..5 {
        let tx = Transaction::sign(net, &k, Address([7; 32]), 5, 1000, n);
        air.nodes[0].submit_tx(air.now, tx).unwrap();
    }
    air.run_for(3 * 60 * 1000);
    assert_eq!(air.nodes[1].chain().mempool_len(), 5);
    for n in 5..8 {
        let tx = Transaction::sign(net, &k, Address([8; 32]), 5, 1000, n);
        // Straight into A's chain state, without relaying: B never hears of them.
        air.nodes[0].chain.submit_tx(tx, air.now / 1000).unwrap();
    }
    let bytes_before = air.air_bytes;
    air.mine_with_txs(0, &k, 0);
    air.run_for(2 * 60 * 1000);
    assert_eq!(
        air.nodes[1].chain().tip().hash,
        air.nodes[0].chain().tip().hash
    );
    assert_eq!(main_chain_tx_ids(&air.nodes[1]).len(), 8);
    // Eight full transactions alone would be about 1200 bytes.
    let used = air.air_bytes - bytes_before;
    assert!(
        used < 1100,
        "block with 8 txs, 5 already held, cost {used} bytes on air"
    );
}

/// A JS8Call-like channel: 12 bit/s, text only, 64-byte messages.
pub(super) fn narrow_caps(blocks: bool) -> LinkCaps {
    LinkCaps {
        mtu: 64,
        bitrate_bps: 12,
        text_only: true,
        blocks,
        ..radio_caps()
    }
}

#[test]
fn a_narrow_link_carries_the_tip_header_and_small_transactions_but_no_blocks() {
    let mut air = Air::with_caps(2, 11, 0, narrow_caps(false));
    let k = key();
    // Both stations start with block 1 (it funds the key), brought in by other means.
    air.mine_with_txs(0, &k, 0);
    let b1 = air.nodes[0].chain().tip().hash;
    let b1 = air.nodes[0].chain().block(&b1).unwrap().unwrap();
    air.nodes[1].submit_block(air.now, b1).unwrap();
    air.mine_with_txs(0, &k, 0);
    air.run_for(4 * 60 * 60 * 1000);
    let (a, b) = (&air.nodes[0], &air.nodes[1]);
    // B knows A's tip (the header crossed) but holds no block body from A.
    assert_eq!(b.chain().best_header().height, 2);
    assert_eq!(b.chain().best_header().hash, a.chain().tip().hash);
    assert_eq!(
        b.chain().tip().height,
        1,
        "a block crossed a link that bars them"
    );
    // A small transaction submitted at B reaches A.
    let net = params::regtest().network_id();
    let tx = Transaction::sign(net, &k, Address([9; 32]), 5, 1000, 0);
    let id = air.nodes[1].submit_tx(air.now, tx).unwrap();
    air.run_for(60 * 60 * 1000);
    assert!(air.nodes[0].chain().mempool_get(&id).is_some());
    // Everything that crossed fits in the air time of a few messages, not a block's.
    assert!(
        air.air_bytes < 3000,
        "{} bytes on a 12 bit/s channel",
        air.air_bytes
    );
}

#[test]
fn a_narrow_link_carries_blocks_when_the_operator_allows_them() {
    let mut air = Air::with_caps(2, 11, 0, narrow_caps(true));
    let k = key();
    air.mine_with_txs(0, &k, 0);
    air.run_for(6 * 60 * 60 * 1000);
    assert_eq!(
        air.nodes[1].chain().tip().hash,
        air.nodes[0].chain().tip().hash
    );
}

/// The share of the air station 0 may take in the flooding test.
const DUTY_PCT: u8 = 20;

#[test]
fn a_flooding_station_is_banned_by_callsign_and_the_duty_cycle_cap_holds() {
    // Station 0 serves a long sync to station 1 while station 2 floods it with garbage.
    // Station 0 may key up a fifth of the time (after its two-minute bucket), so that
    // the sync (about 300 s of air) runs into the cap.
    let mut air = Air::new(3, 21, 0);
    air.nodes[0].cfg.peers.duty_cycle_pct = DUTY_PCT;
    let caps = air.nodes[0].links[&LINK].clone();
    let now = air.now;
    air.nodes[0].link_up(now, LINK, caps);
    let k = key();
    air.mine_with_txs(0, &k, 0);
    for i in 0..24 {
        air.mine_with_txs(0, &k, 4 + i % 5);
    }
    let start = air.now;
    let air0 = air.nodes[0].packet_stats(LINK).unwrap().air_ms;
    let mut rng = Rng::new(77);
    let mut flood_frames = 0;
    let mut banned_after = None;
    let mut worst_excess: i64 = i64::MIN;
    for _ in 0..(90 * 60 / 5) {
        // Garbage (random bytes) keyed up by N0CALL-3 every five seconds, on the air: it
        // occupies the channel and can collide like any other frame.
        let len = 20 + rng.below(200) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        air.inject(2, Some(0), junk);
        flood_frames += 1;
        air.run_for(5_000);
        if banned_after.is_none()
            && air.nodes[0]
                .bans(air.now)
                .iter()
                .any(|b| b.key == "N0CALL-3")
        {
            // Counted as station 0 received them: over the busy channel the junk queues
            // behind the honest bursts and collides like any frame, and random bytes
            // that happen to parse as a fragment wait in a bounded reassembly buffer
            // until they expire (loss looks the same: no score).
            banned_after = Some(air.garbage.get(&(2, 0)).copied().unwrap_or(0));
        }
        // Station 0's air time since the start never exceeds the cap: the bucket's
        // depth plus half the elapsed time (plus the frame being keyed when sampled).
        let used = air.nodes[0].packet_stats(LINK).unwrap().air_ms - air0;
        let allowed = packet::DUTY_BURST_MS + (air.now - start) * DUTY_PCT as u64 / 100 + 3_000;
        worst_excess = worst_excess.max(used as i64 - allowed as i64);
    }
    let banned_after = banned_after.expect("the flooding station was never banned");
    // 20 points a malformed frame, 100 bans: five frames. Each scored frame also closes
    // the flooder's session, and a frame that comes before the link has dropped it is
    // refused unscored (seen: 7 frames received, at 70 s, for the five scored).
    assert!(
        banned_after <= 8,
        "banned only after {banned_after} malformed frames received ({flood_frames} keyed up)"
    );
    assert!(
        worst_excess <= 0,
        "air time exceeded the duty cycle by {worst_excess} ms"
    );
    let stats = air.nodes[0].packet_stats(LINK).unwrap();
    assert!(
        stats.duty_waits > 0,
        "the sync never reached the cap: {stats:?}"
    );
    // The honest station got everything despite the flood and the cap.
    assert_eq!(
        air.nodes[1].chain().tip().hash,
        air.nodes[0].chain().tip().hash
    );
    assert_eq!(air.nodes[1].chain().tip().height, 25);
}

#[test]
fn a_station_that_restarts_gets_a_new_session_without_being_scored() {
    let mut air = Air::new(2, 31, 0);
    let k = key();
    air.mine_with_txs(0, &k, 0);
    air.run_for(10 * 60 * 1000);
    assert_eq!(air.nodes[1].chain().tip().height, 1);
    // Station 1 restarts: same chain, no memory of station 0. Station 0 still holds its
    // session with 1 and will talk to it as if nothing happened.
    let old = air.nodes.remove(1);
    let mut fresh = Node::new(old.into_chain(), station_config(1, 99));
    fresh.link_up(air.now, LINK, radio_caps());
    air.nodes.insert(1, fresh);
    air.heard.retain(|(observer, _), _| *observer != 1);
    air.mine_with_txs(0, &k, 0);
    // Well before station 0's next beacon (5 min): the new block's announcement itself
    // leads to the new session.
    air.run_for(2 * 60 * 1000);
    assert_eq!(
        air.nodes[1].chain().tip().hash,
        air.nodes[0].chain().tip().hash
    );
    let now = air.now;
    assert_eq!(
        air.nodes[1].score_of("N0CALL-1", now),
        0,
        "restart scored at 1"
    );
    assert_eq!(
        air.nodes[0].score_of("N0CALL-2", now),
        0,
        "restart scored at 0"
    );
    for (i, n) in air.nodes.iter().enumerate() {
        let peers = n.peers(now);
        assert_eq!(peers.len(), 1, "station {i}: {peers:?}");
        assert!(peers[0].ready, "station {i} has no session");
    }
}

#[test]
fn a_hidden_terminal_syncs_through_the_middle_station() {
    // 0 and 2 cannot hear each other; 1 hears both. Frames from 0 and 2 collide at 1
    // whenever they overlap, carrier sense or not.
    let mut air = Air::new(3, 41, 0);
    air.channel_mut().set_hears(0, 2, false);
    assert!(!air.channel().hears(2, 0));
    let k = key();
    air.mine_with_txs(0, &k, 0);
    for i in 0..3 {
        air.mine_with_txs(0, &k, 1 + i);
    }
    air.run_for(30 * 60 * 1000);
    let stats = air.channel_stats();
    eprintln!("hidden terminal over the air: {stats:?}");
    for (i, n) in air.nodes.iter().enumerate() {
        assert_eq!(n.chain().tip().height, 4, "station {i}: {stats:?}");
    }
    assert_eq!(main_chain_tx_ids(&air.nodes[2]).len(), 6);
    // The hidden terminal did bite: frames were lost to overlap at station 1.
    assert!(stats.collisions > 0, "{stats:?}");
}
