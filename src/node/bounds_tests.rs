//! Per-peer bounds under attack (issue 12): requests in flight, the packet layer's
//! control queue and repairs, `GetBlockTxn` answers. Each test runs the attack against a
//! node in virtual time; the attacker is a real node for its handshake, then goes silent
//! and sends only what the test crafts.

use super::auth;
use super::radio_tests::{key, Air, LINK};
use super::*;
use crate::chain::params;
use crate::wire::envelope;
use crate::wire::frag;
use crate::wire::message::{limits, GetBlockTxn, InvItem, InvKind};
use proptest::prelude::*;

fn net() -> [u8; 4] {
    params::regtest().network_id()
}

/// `msg` in an envelope from station `from` to the victim (station 0), with a message id
/// of the attacker's choosing. The attacker holds its own node key (it proved it in the
/// handshake), so it tags what it sends like any node: the attack reaches the checks
/// behind the tag.
fn env(from: usize, msg: &Message) -> Vec<u8> {
    env_to(from, 0, msg)
}

/// [`env`] to station `to`.
fn env_to(from: usize, to: usize, msg: &Message) -> Vec<u8> {
    let bytes = envelope::encode(net(), 0xA77A_0000, msg);
    if matches!(msg, Message::Hello(_) | Message::Auth(_)) {
        return bytes;
    }
    let key = |i: usize| super::radio_tests::station_config(i, 0).node_key;
    let victim = key(to).verifying_key().to_bytes();
    auth::seal_for(&key(from), &victim, net(), &bytes).expect("station ids are points")
}

/// `msg` from station `from` to the victim (0) as one packet (WHOLE, however long) that
/// ends the sender's burst (so the node does not hold for it).
fn packet(from: usize, msg: &Message) -> Vec<u8> {
    packet_to(from, 0, msg)
}

/// [`packet`] to station `to`.
fn packet_to(from: usize, to: usize, msg: &Message) -> Vec<u8> {
    let mut p = frag::split(
        0xA77A,
        &env_to(from, to, msg),
        envelope::MAX_MESSAGE_LEN + 1,
    )
    .expect("split")
    .remove(0);
    frag::set_over(&mut p, false);
    p
}

/// A NACK of "every fragment missing" for transfer `tid`: five bytes on the air.
fn nack_all(tid: u32) -> Vec<u8> {
    frag::Nack {
        transfer_id: tid,
        ranges: std::iter::once(0..frag::MAX_FRAGMENTS).collect(),
    }
    .encode()
}

/// The node's peer id for node `i` on the TCP wires below.
fn pid(i: usize) -> PeerId {
    100 + i as PeerId
}

/// Nodes over TCP sessions (`Air` only for its nodes and mining; no channel).
fn tcp_nodes(n: usize) -> Air {
    Air::with_caps(n, 7, 0, LinkCaps::tcp())
}

fn connect(air: &mut Air, a: usize, b: usize) {
    let now = air.now;
    air.nodes[a].peer_connected(now, pid(b), LINK, format!("10.0.0.{b}:7300"), true);
    air.nodes[b].peer_connected(now, pid(a), LINK, format!("10.0.0.{a}:40000"), false);
}

/// Move envelopes between the nodes until nothing moves; what `muted` nodes send is
/// lost. Returns the events, by node.
fn shuttle(air: &mut Air, muted: &[usize]) -> Vec<(usize, NodeEvent)> {
    let now = air.now;
    let mut events = Vec::new();
    for _ in 0..500 {
        let mut moved = false;
        for i in 0..air.nodes.len() {
            while let Some(t) = air.nodes[i].poll_transmit() {
                let Dest::Peer(p) = t.to else { continue };
                let j = (p - 100) as usize;
                if !muted.contains(&i) && j < air.nodes.len() {
                    air.nodes[j].handle_frame(now, pid(i), &t.bytes);
                    moved = true;
                }
            }
            while let Some(e) = air.nodes[i].poll_event() {
                events.push((i, e));
            }
        }
        if !moved {
            break;
        }
    }
    events
}

fn misbehaved(events: &[(usize, NodeEvent)], node: usize, what: &str) -> bool {
    events.iter().any(|(i, e)| {
        *i == node && matches!(e, NodeEvent::Misbehaviour { reason, .. } if reason.contains(what))
    })
}

fn main_hashes(n: &Node) -> Vec<Hash> {
    (1..=n.chain().tip().height)
        .filter_map(|h| n.chain().main_hash_at(h))
        .collect()
}

fn as_txs(hashes: &[Hash]) -> Message {
    Message::Inv(
        hashes
            .iter()
            .map(|&hash| InvItem {
                kind: InvKind::Tx,
                hash,
            })
            .collect(),
    )
}

/// A block announced as a transaction (by a peer that then never answers) used to take
/// the block's place in the one map of requests: the block was skipped as "already
/// asked for" until the fake request timed out.
#[test]
fn a_block_hash_announced_as_a_tx_does_not_stall_the_block_on_tcp() {
    // 0 is the victim, 1 has five blocks, 2 attacks.
    let mut air = tcp_nodes(3);
    for _ in 0..5 {
        air.mine_with_txs(1, &key(), 0);
    }
    let blocks = main_hashes(&air.nodes[1]);
    connect(&mut air, 0, 2);
    shuttle(&mut air, &[]);
    let now = air.now;
    air.nodes[0].handle_frame(now, pid(2), &env(2, &as_txs(&blocks)));
    // The honest peer comes; no time passes, so no request can time out.
    connect(&mut air, 0, 1);
    shuttle(&mut air, &[2]);
    assert_eq!(air.nodes[0].chain().tip().height, 5, "the download stalled");
}

/// The same on a radio channel, where the requests of a peer that keeps talking never
/// time out (hearing it moves their deadlines on): the block used to stall for good. (On
/// half duplex, station 0 pushing blocks unasked to a station that beacons from behind
/// hides it after a while; this channel is full duplex.)
#[test]
fn a_block_hash_announced_as_a_tx_does_not_stall_the_block_on_radio() {
    // 0 mines, 1 is the victim, 2 attacks; they meet before there is anything to sync.
    let caps = LinkCaps {
        half_duplex: false,
        ..super::radio_tests::radio_caps()
    };
    let mut air = Air::with_caps(3, 17, 0, caps);
    air.run_for(3 * 60 * 1000);
    assert!(air.heard.contains_key(&(1, 2)), "victim and attacker met");
    // The attacker's own node goes; from now on it only sends what follows.
    air.nodes.truncate(2);
    for _ in 0..10 {
        air.mine_with_txs(0, &key(), 0);
    }
    let blocks = main_hashes(&air.nodes[0]);
    let start = air.now;
    // The attack is heard before 0's announcements, and repeated every two seconds for
    // up to half an hour.
    for _ in 0..900 {
        air.deliver(2, 1, &packet_to(2, 1, &as_txs(&blocks)));
        air.run_for(2_000);
        if air.nodes[1].chain().tip().height == 10 {
            break;
        }
    }
    eprintln!("synced in {} s", (air.now - start) / 1000);
    assert_eq!(
        air.nodes[1].chain().tip().height,
        10,
        "the download stalled"
    );
}

/// Transactions asked of one peer are capped: five `Inv`s of 500 made-up ids used to
/// put 2500 requests in flight (and a flood of them, millions).
#[test]
fn transaction_requests_per_peer_are_capped() {
    let mut air = tcp_nodes(2);
    connect(&mut air, 0, 1);
    shuttle(&mut air, &[]);
    let now = air.now;
    let mut asked = 0;
    for round in 0..5u32 {
        let ids: Vec<Hash> = (0..limits::MAX_INV as u32)
            .map(|i| Hash::digest(&(round * 1000 + i).to_le_bytes()))
            .collect();
        air.nodes[0].handle_frame(now, pid(1), &env(1, &as_txs(&ids)));
        while let Some(t) = air.nodes[0].poll_transmit() {
            if let Ok(e) = envelope::decode(&t.bytes) {
                if let Message::GetData(items) = e.message {
                    asked += items.len();
                }
            }
        }
    }
    assert_eq!(asked, MAX_TX_REQUESTS_PER_PEER);
    assert_eq!(
        air.nodes[0].usage().max_tx_requests_per_peer,
        MAX_TX_REQUESTS_PER_PEER
    );
}

/// A `GetBlockTxn` naming one index 1000 times used to be answered with the same
/// transaction 1000 times (about 150 KB for 40 bytes).
#[test]
fn getblocktxn_with_repeated_indexes_is_refused_and_counted() {
    let mut air = tcp_nodes(2);
    air.mine_with_txs(0, &key(), 0);
    air.mine_with_txs(0, &key(), 5);
    let tip = air.nodes[0].chain().tip().hash;
    let block_len = air.nodes[0]
        .chain()
        .block(&tip)
        .unwrap()
        .unwrap()
        .encoded_len();
    connect(&mut air, 0, 1);
    shuttle(&mut air, &[]);
    let now = air.now;
    let ask = Message::GetBlockTxn(GetBlockTxn {
        block: tip,
        indexes: vec![0; 1000],
    });
    air.nodes[0].handle_frame(now, pid(1), &env(1, &ask));
    let sent: usize = std::iter::from_fn(|| air.nodes[0].poll_transmit())
        .map(|t| t.bytes.len())
        .sum();
    assert!(
        sent < block_len,
        "{sent} bytes answered one index asked 1000 times"
    );
    let events = shuttle(&mut air, &[1]);
    assert!(misbehaved(&events, 0, "twice"), "{events:?}");
    // Distinct indexes are answered as before.
    let mut air2 = tcp_nodes(2);
    air2.mine_with_txs(0, &key(), 0);
    air2.mine_with_txs(0, &key(), 5);
    connect(&mut air2, 0, 1);
    shuttle(&mut air2, &[]);
    let tip = air2.nodes[0].chain().tip().hash;
    let ask = Message::GetBlockTxn(GetBlockTxn {
        block: tip,
        indexes: vec![4, 0, 2],
    });
    let now = air2.now;
    air2.nodes[0].handle_frame(now, pid(1), &env(1, &ask));
    let answer = std::iter::from_fn(|| air2.nodes[0].poll_transmit())
        .filter_map(|t| envelope::decode(&t.bytes).ok())
        .find_map(|e| match e.message {
            Message::BlockTxn(b) => Some(b.txs.len()),
            _ => None,
        });
    assert_eq!(answer, Some(3));
}

/// A radio station (0) that served blocks to stations 1..=`others`, then they go silent
/// except for what the test sends (their sessions stay: the handshake was real).
fn served_then_silent(seed: u64, others: usize) -> Air {
    let mut air = Air::new(1 + others, seed, 0);
    air.mine_with_txs(0, &key(), 0);
    for _ in 0..3 {
        air.mine_with_txs(0, &key(), 20);
    }
    air.run_for(10 * 60 * 1000);
    let ready = air.nodes[0]
        .peers(air.now)
        .iter()
        .filter(|p| p.ready)
        .count();
    assert_eq!(ready, others, "every station greeted station 0");
    air.nodes.truncate(1);
    air
}

/// Run station 0 alone for `ms` (what it sends is lost: its one peer is silent), and
/// return the fragments it sent to `peer`, by transfer.
fn run_alone(air: &mut Air, peer: PeerId, ms: u64) -> BTreeMap<u32, usize> {
    let mut sent = BTreeMap::new();
    let end = air.now + ms;
    while air.now < end {
        while let Some(t) = air.nodes[0].poll_transmit() {
            if let Ok(frag::Packet::Fragment(f)) = frag::parse(&t.bytes) {
                if t.to == Dest::Peer(peer) {
                    *sent.entry(f.transfer_id).or_default() += 1;
                }
            }
        }
        air.now = air.nodes[0].poll_timeout().clamp(air.now + 1, end);
        let now = air.now;
        air.nodes[0].handle_timeout(now);
        while air.nodes[0].poll_event().is_some() {}
    }
    sent
}

/// A 5-byte NACK of "all missing" used to queue the whole transfer again, as often as
/// it was sent: twenty rounds, twenty copies of the block.
#[test]
fn nacks_of_everything_repair_at_most_a_few_times_the_transfer_and_count() {
    let mut air = served_then_silent(23, 1);
    let peer = air.peer_id(0, 1);
    let tip = air.nodes[0].chain().tip().hash;
    let ask = Message::GetData(vec![InvItem {
        kind: InvKind::Block,
        hash: tip,
    }]);
    air.deliver(1, 0, &packet(1, &ask));
    let block = run_alone(&mut air, peer, 120_000);
    let (&tid, &frags) = block
        .iter()
        .next()
        .expect("the block went out in fragments");
    assert!(frags > 4, "{frags} fragments");
    let mut repaired = 0;
    let mut refused = false;
    for _ in 0..20 {
        air.deliver(1, 0, &nack_all(tid));
        refused |= std::iter::from_fn(|| air.nodes[0].poll_event()).any(
            |e| matches!(e, NodeEvent::Misbehaviour { reason, .. } if reason.contains("beyond")),
        );
        repaired += run_alone(&mut air, peer, 120_000)
            .get(&tid)
            .copied()
            .unwrap_or(0);
    }
    assert!(
        repaired <= REPAIR_FACTOR * frags,
        "{repaired} fragments repaired of a {frags}-fragment transfer"
    );
    assert!(refused, "the station was not scored for it");
}

/// Control traffic (answers such as `BlockTxn`) skipped the link's byte cap: a station
/// sending cheap `GetBlockTxn`s in one burst queued megabytes for itself.
#[test]
fn control_bytes_queued_for_one_station_are_capped() {
    let mut air = served_then_silent(29, 1);
    let tip = air.nodes[0].chain().tip().hash;
    let ask = packet(
        1,
        &Message::GetBlockTxn(GetBlockTxn {
            block: tip,
            indexes: (0..20).collect(),
        }),
    );
    for _ in 0..200 {
        air.deliver(1, 0, &ask);
        let u = air.nodes[0].usage();
        assert!(
            u.max_control_bytes_per_dest <= PEER_CONTROL_BYTES,
            "{} control bytes queued for one station",
            u.max_control_bytes_per_dest
        );
    }
    // What was queued still goes out: the station is answered, not cut off.
    let peer = air.peer_id(0, 1);
    assert!(!run_alone(&mut air, peer, 60_000).is_empty());
}

/// The bounds every input must keep (see `docs/THREAT-MODEL.md`).
pub(super) fn assert_bounds(n: &Node, sessions: usize) {
    let u = n.usage();
    assert!(
        u.max_block_requests_per_peer <= MAX_BLOCK_REQUESTS_PER_PEER,
        "{u:?}"
    );
    assert!(
        u.max_tx_requests_per_peer <= MAX_TX_REQUESTS_PER_PEER,
        "{u:?}"
    );
    assert!(
        u.tx_requests <= sessions * MAX_TX_REQUESTS_PER_PEER,
        "{u:?}"
    );
    assert!(u.max_control_bytes_per_dest <= PEER_CONTROL_BYTES, "{u:?}");
    // Bulk up to its cap (the last envelope's fragment headers over it), control per
    // destination (each session and the broadcast).
    let queue = QUEUE_BYTES + envelope::MAX_MESSAGE_LEN / 16 + (sessions + 1) * PEER_CONTROL_BYTES;
    assert!(u.max_link_queued_bytes <= queue, "{u:?}");
    let reasm = crate::wire::frag::ReassemblerConfig::default().max_total_bytes;
    assert!(u.max_reassembly_bytes <= reasm, "{u:?}");
    assert!(u.compact_pending <= MAX_COMPACT_PENDING, "{u:?}");
}

/// One thing a station sends, in proptest's terms.
#[derive(Clone, Debug)]
enum Frame {
    /// A NACK of transfer `tid`: everything, or the given ranges.
    Nack {
        tid: u32,
        ranges: Vec<(u16, u16)>,
    },
    /// A fragment of transfer `tid` of a `count`-fragment message.
    Fragment {
        tid: u8,
        index: u16,
        count: u16,
        len: u16,
    },
    /// Requests about block `b` (index into the victim's chain; beyond it: made up).
    GetBlockTxn {
        b: u8,
        indexes: Vec<u16>,
    },
    GetData {
        b: u8,
        n: u8,
        compact: bool,
    },
    /// `n` made-up transaction ids from `seed`, and block `b`'s hash as a transaction.
    InvTx {
        b: u8,
        seed: u8,
        n: u16,
    },
    /// A compact block of block `b`, with its short ids cut or repeated.
    Compact {
        b: u8,
        keep: u8,
    },
    /// A beacon (the station's `Hello` with the beacon feature) again.
    Beacon,
    /// Any bytes.
    Raw(Vec<u8>),
    /// Time passes.
    Wait(u16),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        1 => (
            any::<u8>(),
            prop::collection::vec((any::<u16>(), any::<u16>()), 0..4)
        )
            .prop_map(|(tid, ranges)| Frame::Nack {
                tid: u32::from(tid),
                ranges
            }),
        1 => (any::<u8>(), any::<u16>(), 1..64u16, 0..300u16).prop_map(|(tid, index, count, len)| {
            Frame::Fragment {
                tid,
                index,
                count,
                len,
            }
        }),
        2 => (0..8u8, prop::collection::vec(0..40u16, 0..60))
            .prop_map(|(b, indexes)| Frame::GetBlockTxn { b, indexes }),
        2 => (0..8u8, 1..40u8, any::<bool>()).prop_map(|(b, n, compact)| Frame::GetData {
            b,
            n,
            compact
        }),
        // Up to a full `Inv` (the block's hash makes one more).
        3 => (0..8u8, any::<u8>(), 1..limits::MAX_INV as u16)
            .prop_map(|(b, seed, n)| Frame::InvTx { b, seed, n }),
        1 => (0..8u8, any::<u8>()).prop_map(|(b, keep)| Frame::Compact { b, keep }),
        1 => Just(Frame::Beacon),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Raw),
        1 => (0..120u16).prop_map(Frame::Wait),
    ]
}

/// A beacon of station `i`: its node's `Hello` with the beacon feature, in one packet.
fn beacon(i: usize) -> Vec<u8> {
    let chain = Chain::open(
        params::regtest(),
        crate::store::Store::open_in_memory().unwrap(),
    )
    .unwrap();
    let node = Node::new(chain, super::radio_tests::station_config(i, 0));
    let mut hello = node.hello(1000 + i as u64);
    hello.features |= crate::wire::message::features::BEACON;
    packet(i, &Message::Hello(hello))
}

/// The bytes of `f`, as station `from` of `air` would send them to the victim (0).
fn frame_bytes(air: &Air, from: usize, f: &Frame, beacon: &[u8]) -> Option<Vec<u8>> {
    let chain = air.nodes[0].chain();
    let hash = |b: u8| {
        chain
            .main_hash_at(u64::from(b))
            .unwrap_or_else(|| Hash::digest(&[b]))
    };
    let bytes = match f {
        Frame::Nack { tid, ranges } if ranges.is_empty() => nack_all(*tid),
        Frame::Nack { tid, ranges } => {
            let missing: Vec<u32> = ranges
                .iter()
                .flat_map(|&(a, n)| u32::from(a)..u32::from(a) + u32::from(n % 64))
                .collect();
            frag::encode_nack(*tid, &missing)
        }
        Frame::Fragment {
            tid,
            index,
            count,
            len,
        } => {
            let msg = vec![*tid; usize::from(*count) * 200];
            let mut parts = frag::split(u32::from(*tid), &msg, 256).ok()?;
            let i = usize::from(*index) % parts.len();
            let mut p = parts.swap_remove(i);
            p.truncate(usize::from(*len).max(4));
            p
        }
        Frame::GetBlockTxn { b, indexes } => packet(
            from,
            &Message::GetBlockTxn(GetBlockTxn {
                block: hash(*b),
                indexes: indexes.clone(),
            }),
        ),
        Frame::GetData { b, n, compact } => {
            let kind = if *compact {
                InvKind::CompactBlock
            } else {
                InvKind::Block
            };
            let items = (0..*n)
                .map(|k| InvItem {
                    kind,
                    hash: hash(b.wrapping_add(k % 4)),
                })
                .collect();
            packet(from, &Message::GetData(items))
        }
        Frame::InvTx { b, seed, n } => {
            let ids: Vec<Hash> = (0..*n)
                .map(|k| Hash::digest(&[*seed, k as u8, (k >> 8) as u8]))
                .chain(std::iter::once(hash(*b)))
                .collect();
            packet(from, &as_txs(&ids))
        }
        Frame::Compact { b, keep } => {
            let block = chain.block(&hash(*b)).ok()??;
            let Message::CompactBlock(mut c) = compact::compact_of(&block) else {
                return None;
            };
            let n = usize::from(*keep) % (c.short_ids.len() + 3);
            c.short_ids = c.short_ids.iter().copied().cycle().take(n).collect();
            packet(from, &Message::CompactBlock(c))
        }
        Frame::Beacon => beacon.to_vec(),
        Frame::Raw(b) => b.clone(),
        Frame::Wait(_) => return None,
    };
    Some(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random packet-link frames from three stations (fragments, NACKs, beacons,
    /// compact blocks, requests) never take the node's state past its bounds.
    #[test]
    fn random_packet_frames_keep_the_bounds(
        frames in prop::collection::vec((0..3usize, frame()), 1..120)
    ) {
        let mut air = served_then_silent(31, 3);
        // A station cut off greets again with a beacon.
        let beacons: Vec<Vec<u8>> = (1..=3).map(beacon).collect();
        for (station, f) in &frames {
            let from = station + 1;
            match f {
                Frame::Wait(s) => air.run_for(u64::from(*s) * 1000),
                _ => {
                    if let Some(b) = frame_bytes(&air, from, f, &beacons[*station]) {
                        air.deliver(from, 0, &b);
                    }
                }
            }
            assert_bounds(&air.nodes[0], 3);
            // A station cut off comes straight back with a new session and greets (as
            // the link and the driver would have it), until it is banned.
            let now = air.now;
            let gone: Vec<PeerId> = std::iter::from_fn(|| air.nodes[0].poll_event())
                .filter_map(|e| match e {
                    NodeEvent::Disconnect { peer, .. } => Some(peer),
                    _ => None,
                })
                .collect();
            for peer in gone {
                air.heard.retain(|_, p| *p != peer);
                air.nodes[0].peer_disconnected(now, peer);
                let st = air.station_of(0, peer);
                air.deliver(st, 0, &beacons[st - 1]);
            }
            assert_bounds(&air.nodes[0], 3);
        }
    }
}

/// A peer's known inventory keeps exactly the newest [`KNOWN_CAP`] ids, however many it
/// is told: the oldest go first, a repeat does not count twice, and what is kept is found.
#[test]
fn known_inventory_keeps_the_newest_ids_up_to_its_cap() {
    let id = |i: u64| {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        h[8] = 0xAB;
        Hash(h)
    };
    let mut k = Known::default();
    let extra = 1000u64;
    for i in 0..KNOWN_CAP as u64 + extra {
        k.insert(&id(i));
        // A repeat of something just learnt changes nothing.
        k.insert(&id(i));
        assert!(k.contains(&id(i)));
    }
    assert_eq!(k.ring.len(), KNOWN_CAP);
    assert_eq!(k.by_key.len(), KNOWN_CAP);
    for i in 0..extra {
        assert!(!k.contains(&id(i)), "id {i} should be forgotten");
    }
    for i in extra..KNOWN_CAP as u64 + extra {
        assert!(k.contains(&id(i)), "id {i} should be known");
    }
    // The next one pushes out the oldest kept.
    k.insert(&id(u64::MAX));
    assert!(!k.contains(&id(extra)));
    assert!(k.contains(&id(extra + 1)));
}
