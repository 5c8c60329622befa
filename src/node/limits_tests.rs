//! Limits at the edge of the core: the network key handshake, per-peer rate limits and
//! session limits, driven directly (no I/O, no clock).

use super::*;
use crate::chain::params;
use crate::store::Store;
use crate::wire::envelope;
use crate::wire::message::{InvItem, InvKind};

const LINK: LinkId = 1;
const T: u64 = 1_700_000_000_000;

fn node(id: u8, policy: PeerPolicy) -> Node {
    let chain = Chain::open(params::regtest(), Store::open_in_memory().unwrap()).unwrap();
    let mut n = Node::new(
        chain,
        NodeConfig {
            node_id: [id; 32],
            callsign: format!("N0CALL-{id}"),
            seed: u64::from(id),
            user_agent: "limits-test".into(),
            peers: policy,
        },
    );
    n.link_up(T, LINK, LinkCaps::tcp());
    n
}

fn keyed(k: &str) -> PeerPolicy {
    PeerPolicy {
        network_key: Some(network_key(k)),
        ..PeerPolicy::default()
    }
}

/// Connect two nodes back to back and shuttle messages until quiet. Returns the events
/// of each side.
fn handshake(a: &mut Node, b: &mut Node) -> (Vec<NodeEvent>, Vec<NodeEvent>) {
    a.peer_connected(T, 1, LINK, "10.0.0.2:7300".into(), true);
    b.peer_connected(T, 2, LINK, "10.0.0.1:50000".into(), false);
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_frame(T, 2, &t.bytes);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_frame(T, 1, &t.bytes);
            moved = true;
        }
        ea.extend(std::iter::from_fn(|| a.poll_event()));
        eb.extend(std::iter::from_fn(|| b.poll_event()));
        if !moved {
            break;
        }
    }
    (ea, eb)
}

fn ready(ev: &[NodeEvent]) -> bool {
    ev.iter().any(|e| matches!(e, NodeEvent::PeerReady { .. }))
}

fn misbehaved(ev: &[NodeEvent], what: &str) -> bool {
    ev.iter()
        .any(|e| matches!(e, NodeEvent::Misbehaviour { reason, .. } if reason.contains(what)))
}

#[test]
fn peers_with_the_same_network_key_complete_the_handshake() {
    let (mut a, mut b) = (node(1, keyed("club")), node(2, keyed("club")));
    let (ea, eb) = handshake(&mut a, &mut b);
    assert!(ready(&ea) && ready(&eb), "{ea:?} {eb:?}");
}

#[test]
fn a_peer_with_another_key_is_refused() {
    let (mut a, mut b) = (node(1, keyed("club")), node(2, keyed("guess")));
    let (ea, eb) = handshake(&mut a, &mut b);
    assert!(!ready(&ea) && !ready(&eb));
    assert!(
        misbehaved(&ea, "network key proof does not match"),
        "{ea:?}"
    );
}

#[test]
fn a_peer_without_the_key_never_becomes_ready_and_times_out() {
    let (mut a, mut b) = (node(1, keyed("club")), node(2, PeerPolicy::default()));
    let (ea, _) = handshake(&mut a, &mut b);
    assert!(!ready(&ea), "{ea:?}");
    a.handle_timeout(T + 120_000);
    let ev: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        ea.iter()
            .chain(ev.iter())
            .any(|e| matches!(e, NodeEvent::Disconnect { .. })),
        "{ea:?} {ev:?}"
    );
}

#[test]
fn without_a_key_nothing_changes() {
    let (mut a, mut b) = (
        node(1, PeerPolicy::default()),
        node(2, PeerPolicy::default()),
    );
    let (ea, eb) = handshake(&mut a, &mut b);
    assert!(ready(&ea) && ready(&eb));
}

#[test]
fn a_flooding_peer_is_cut_off_within_the_burst_allowance() {
    let policy = PeerPolicy {
        msgs_per_sec: 50,
        ..PeerPolicy::default()
    };
    let (mut a, mut b) = (node(1, policy), node(2, PeerPolicy::default()));
    let (ea, _) = handshake(&mut a, &mut b);
    assert!(ready(&ea));
    let net = params::regtest().network_id();
    let ping = envelope::encode(net, 99, &Message::Ping(7));
    // A burst of ten seconds' worth (500) passes, plus what refills while it lasts (one
    // message a millisecond here, 50/s back); the flood beyond it does not.
    let cut = flood(&mut a, &ping).expect("flood never cut off");
    assert!((500..=530).contains(&cut), "cut off after {cut} messages");
    // The same rate spread out is fine.
    let (mut a, mut b) = (node(1, policy_msgs(50)), node(2, PeerPolicy::default()));
    handshake(&mut a, &mut b);
    for i in 0..2_000u64 {
        a.handle_frame(T + i * 25, 1, &ping);
    }
    let ev: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(!misbehaved(&ev, "flooding"), "{ev:?}");
}

/// Send `frame` from peer 1 once a millisecond until `a` calls it a flood: after how many.
fn flood(a: &mut Node, frame: &[u8]) -> Option<u64> {
    for i in 0..2_000u64 {
        a.handle_frame(T + i, 1, frame);
        let ev: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
        if misbehaved(&ev, "flooding") {
            return Some(i + 1);
        }
        while a.poll_transmit().is_some() {}
    }
    None
}

/// A sync's own messages are not charged to the limits (issue 14), but nothing else gets
/// through for free: the same block asked for again and again, or sent again and again
/// unasked, is a flood like any other.
#[test]
fn blocks_asked_for_again_or_sent_unasked_are_still_charged() {
    let (mut a, mut b) = (node(1, policy_msgs(50)), node(2, PeerPolicy::default()));
    // Wall time a minute after genesis, so the block's time is valid.
    let wall = (a.chain().tip().time + 60) * 1000;
    a.set_wall_clock(T, wall);
    b.set_wall_clock(T, wall);
    let mut block = a
        .chain()
        .block_template(crate::chain::Address([7; 32]), wall / 1000);
    while !crate::chain::pow::mine(&mut block.header, 1_000_000) {}
    let hash = block.hash();
    a.submit_block(T, block.clone()).expect("block");
    // B syncs the block from A: asked for, so free.
    let (ea, eb) = handshake(&mut a, &mut b);
    assert!(ready(&ea) && ready(&eb));
    assert!(
        !misbehaved(&ea, "") && !misbehaved(&eb, ""),
        "{ea:?} {eb:?}"
    );
    assert!(b.chain().has_block(&hash), "B did not sync the block");
    let net = params::regtest().network_id();
    let again = envelope::encode(
        net,
        99,
        &Message::GetData(vec![InvItem {
            kind: InvKind::Block,
            hash,
        }]),
    );
    let cut = flood(&mut a, &again).expect("repeated requests never cut off");
    assert!((500..=530).contains(&cut), "cut off after {cut} requests");

    let (mut a, mut b) = (node(1, policy_msgs(50)), node(2, PeerPolicy::default()));
    a.set_wall_clock(T, wall);
    handshake(&mut a, &mut b);
    let unasked = envelope::encode(net, 99, &Message::Block(block));
    let cut = flood(&mut a, &unasked).expect("unasked blocks never cut off");
    assert!((500..=530).contains(&cut), "cut off after {cut} blocks");
}

fn policy_msgs(n: u64) -> PeerPolicy {
    PeerPolicy {
        msgs_per_sec: n,
        ..PeerPolicy::default()
    }
}

#[test]
fn sessions_per_address_and_per_link_are_capped() {
    let mut a = node(
        1,
        PeerPolicy {
            max_sessions_per_key: 2,
            max_peers_per_link: 4,
            ..PeerPolicy::default()
        },
    );
    let mut greeted = Vec::new();
    for (peer, remote) in [
        (1, "10.0.0.9:1"),
        (2, "10.0.0.9:2"),
        (3, "10.0.0.9:3"),
        (4, "10.0.0.8:1"),
        (5, "10.0.0.7:1"),
        (6, "10.0.0.6:1"),
    ] {
        a.peer_connected(T, peer, LINK, remote.into(), false);
        let hello = std::iter::from_fn(|| a.poll_transmit()).any(|t| t.to == Dest::Peer(peer));
        if hello {
            greeted.push(peer);
        }
    }
    // The third session from 10.0.0.9 and the fifth on the link were refused unheard.
    assert_eq!(greeted, vec![1, 2, 4, 5]);
    let refused: Vec<PeerId> = std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e {
            NodeEvent::Disconnect { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![3, 6]);
}
