//! Headers-first sync against peers on different forks (driven through the simulator).

use crate::chain::{params, Address};
use crate::sim::{LinkSpec, Sim};

/// A node that follows one fork (its neighbour's) learns of a heavier fork from another
/// peer. The neighbour is as high as the blocks it lacks, so height alone says it might
/// have them; it answers `NotFound`. Those blocks must then come from the peer that sent
/// the headers, instead of being asked of the neighbour again and again (in the islands
/// scenario the gateways never switched fork, and their radio links carried a GetData /
/// NotFound exchange every second for hours).
#[test]
fn blocks_a_peer_on_another_fork_lacks_come_from_the_peer_that_has_them() {
    let p = params::regtest();
    // Node 0 syncs; node 1 is its neighbour on the light fork; node 2 holds the heavy one.
    let mut sim = Sim::new(&p, 3, 3).unwrap();
    sim.connect(0, 1, LinkSpec::fast());
    for _ in 0..3 {
        sim.mine(1, Address([1; 32])).unwrap();
    }
    for _ in 0..5 {
        sim.mine(2, Address([2; 32])).unwrap();
    }
    sim.run_for(10_000);
    assert_eq!(sim.nodes[0].chain().tip().height, 3);
    // The heavy fork's node comes in on a later session (a higher peer id than node 1's).
    sim.connect(0, 2, LinkSpec::fast());
    sim.run_for(60_000);
    let heavy = sim.nodes[2].chain().tip();
    assert_eq!(heavy.height, 5);
    assert_eq!(
        sim.nodes[0].chain().tip().hash,
        heavy.hash,
        "node 0 still on the light fork (best header at height {})",
        sim.nodes[0].chain().best_header().height
    );
    assert!(sim.converged(), "the neighbour follows through node 0");
}

/// A block queued for a peer that then lost a reorg (its fork is lighter than the peer's)
/// is still delivered: offered as the tip that replaced it. The peer never fetches a
/// block of a lighter fork, so it would never ack the stale block's header, and the item
/// would be retried until it expired (islands scenario: items pending for a day).
#[test]
fn a_queued_block_that_lost_a_reorg_is_delivered_as_the_new_tip() {
    let p = params::regtest();
    let mut sim = Sim::new(&p, 2, 5).unwrap();
    let link = sim.connect(0, 1, LinkSpec::fast());
    sim.run_for(5_000);
    sim.disconnect(link);
    // Node 0 mines one block for node 1 (queued: node 1 is away); node 1 mines two.
    let stale = sim.mine(0, Address([1; 32])).unwrap().hash();
    for _ in 0..2 {
        sim.mine(1, Address([2; 32])).unwrap();
    }
    assert_eq!(sim.nodes[0].outbox_items().len(), 1);
    sim.reconnect(link);
    sim.run_for(10 * 60_000);
    assert!(sim.converged());
    assert!(!sim.nodes[0].chain().is_on_main_chain(&stale));
    let left = sim.nodes[0].outbox();
    assert!(
        left.items.is_empty(),
        "still queued: {:?} (pushes {}, retries {})",
        left.items,
        left.stats.pushes,
        left.stats.retries
    );
}

/// Two nodes on a stream link, driven by hand so that chosen messages can be lost.
fn pair() -> (Vec<crate::node::Node>, u64) {
    use crate::chain::Chain;
    use crate::net::LinkCaps;
    use crate::node::{Node, NodeConfig};
    use crate::store::Store;
    let p = params::regtest();
    let now = p.genesis.header.time * 1000 + 60_000;
    let mut nodes: Vec<Node> = (0..2u8)
        .map(|i| {
            let chain = Chain::open(p.clone(), Store::open_in_memory().unwrap()).unwrap();
            Node::new(
                chain,
                NodeConfig {
                    node_key: ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]),
                    callsign: format!("N0CALL-{i}"),
                    seed: 40 + u64::from(i),
                    user_agent: "ping-test".into(),
                    peers: Default::default(),
                },
            )
        })
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.link_up(now, 1, LinkCaps::tcp());
        // Node i knows the other as peer id 1 - i.
        n.peer_connected(now, 1 - i as u64, 1, format!("n{}", 1 - i), i == 0);
    }
    (nodes, now)
}

/// Deliver what both nodes want to send, until quiet; `lose` drops a message (from,
/// message) before it arrives. Returns the disconnects reported.
fn exchange(
    nodes: &mut [crate::node::Node],
    now: u64,
    lose: &mut dyn FnMut(usize, &crate::wire::message::Message) -> bool,
) -> Vec<String> {
    let mut gone = Vec::new();
    loop {
        let mut any = false;
        for from in 0..2 {
            while let Some(t) = nodes[from].poll_transmit() {
                any = true;
                let msg = crate::wire::envelope::decode(&t.bytes).unwrap().message;
                if !lose(from, &msg) {
                    // The receiver knows the sender as peer id `from`.
                    nodes[1 - from].handle_frame(now, from as u64, &t.bytes);
                }
            }
            while let Some(e) = nodes[from].poll_event() {
                if let crate::node::NodeEvent::Disconnect { reason, .. } = e {
                    gone.push(format!("node {from}: {reason}"));
                }
            }
        }
        if !any {
            return gone;
        }
    }
}

/// One lost pong must not stop a node from pinging for the rest of the session: with its
/// ping still marked outstanding it never pinged again, and once a ping of the other side
/// was lost too, both declared the session silent (islands scenario: "silent for 217 s"
/// on idle 1200 bit/s links with 2 % frame loss, dozens of times in four hours).
#[test]
fn a_lost_pong_does_not_stop_the_pings() {
    use crate::wire::message::Message;
    let (mut nodes, start) = pair();
    let (mut pongs_from_1, mut pings_from_1) = (0, 0);
    let mut lose = |from: usize, m: &Message| match m {
        // Node 1's first pong and, after it, node 1's first ping are lost.
        Message::Pong(_) if from == 1 => {
            pongs_from_1 += 1;
            pongs_from_1 == 1
        }
        Message::Ping(_) if from == 1 && pongs_from_1 > 0 => {
            pings_from_1 += 1;
            pings_from_1 == 1
        }
        _ => false,
    };
    let mut gone = exchange(&mut nodes, start, &mut lose);
    assert!(nodes[0].peers(start)[0].ready && nodes[1].peers(start)[0].ready);
    let mut now = start;
    while now < start + 15 * 60_000 && gone.is_empty() {
        now += 1000;
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
        }
        gone = exchange(&mut nodes, now, &mut lose);
    }
    assert!(pongs_from_1 >= 1, "a pong was lost");
    assert!(pings_from_1 >= 1, "a ping was lost");
    assert!(
        gone.is_empty(),
        "session dropped after {} s: {gone:?}",
        (now - start) / 1000
    );
}
