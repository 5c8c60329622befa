//! A deterministic network simulator: real `Node` cores with in-memory stores, joined by
//! simulated links (latency, bit rate, loss), on a virtual clock with a seeded RNG. Same
//! seed, same run: this is the test bench for sync behaviour.

use crate::chain::{pow, Address, Block, Chain, NetworkParams};
use crate::link::{LinkCaps, PeerId};
use crate::node::{Node, NodeConfig, NodeEvent};
use crate::rng::Rng;
use crate::store::Store;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Properties of a simulated link.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// One-way latency in milliseconds.
    pub latency_ms: u64,
    /// Bit rate in bit/s (0: unlimited).
    pub bitrate_bps: u64,
    /// Probability that a message is lost, in parts per million.
    pub loss_ppm: u32,
}

impl LinkSpec {
    /// A fast, lossless link (like TCP on a LAN).
    pub fn fast() -> LinkSpec {
        LinkSpec {
            latency_ms: 5,
            bitrate_bps: 0,
            loss_ppm: 0,
        }
    }
}

struct SimLink {
    a: usize,
    b: usize,
    spec: LinkSpec,
    up: bool,
    /// When each direction's transmitter is free again (a→b, b→a).
    busy_until: [u64; 2],
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

/// The simulated network.
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
    /// Events every node reported, with the node index and time.
    pub events: Vec<(u64, usize, NodeEvent)>,
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
        for i in 0..n {
            let store = Store::open_in_memory().map_err(crate::chain::ChainError::from)?;
            let chain = Chain::open(params.clone(), store)?;
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            nodes.push(Node::new(
                chain,
                NodeConfig {
                    node_id: id,
                    callsign: format!("N0SIM-{}", i % 16),
                    seed: rng.next_u64(),
                    user_agent: "skywave-sim".into(),
                },
            ));
        }
        // Start after genesis so block timestamps are plausible.
        let now = params.genesis.header.time * 1000 + 60_000;
        Ok(Sim {
            nodes,
            links: Vec::new(),
            sessions: BTreeMap::new(),
            queue: BinaryHeap::new(),
            now,
            seq: 0,
            rng,
            events: Vec::new(),
        })
    }

    /// Virtual time in milliseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Join nodes `a` and `b` with a link; `a` dials. Returns the link index.
    pub fn connect(&mut self, a: usize, b: usize, spec: LinkSpec) -> usize {
        let idx = self.links.len();
        let (peer_a, peer_b) = (2 * idx as u64 + 1, 2 * idx as u64 + 2);
        let caps = LinkCaps {
            bitrate_bps: spec.bitrate_bps,
            ..LinkCaps::tcp()
        };
        self.links.push(SimLink {
            a,
            b,
            spec,
            up: true,
            busy_until: [0, 0],
            bytes: [0, 0],
            peer_a,
            peer_b,
        });
        self.sessions.insert((a, peer_a), idx);
        self.sessions.insert((b, peer_b), idx);
        let now = self.now;
        self.nodes[a].link_up(now, idx as u32, caps.clone());
        self.nodes[b].link_up(now, idx as u32, caps);
        self.nodes[a].peer_connected(now, peer_a, idx as u32, format!("sim:{b}"), true);
        self.nodes[b].peer_connected(now, peer_b, idx as u32, format!("sim:{a}"), false);
        self.pump();
        idx
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
        let (a, b, pa, pb) = (l.a, l.b, l.peer_a, l.peer_b);
        let now = self.now;
        self.nodes[a].peer_disconnected(now, pa);
        self.nodes[b].peer_disconnected(now, pb);
        self.pump();
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
        let res = self.nodes[i].submit_block(now, block.clone());
        self.pump();
        res.ok().map(|_| block)
    }

    /// Drain every node's output into the network, repeatedly until quiet.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    any = true;
                    // Simulated links here are point to point: a broadcast has no taker.
                    if let crate::node::Dest::Peer(peer) = t.to {
                        self.transmit(i, peer, t.bytes);
                    }
                }
                while let Some(ev) = self.nodes[i].poll_event() {
                    any = true;
                    if let NodeEvent::Disconnect { peer, .. } = &ev {
                        if let Some(&l) = self.sessions.get(&(i, *peer)) {
                            self.events.push((self.now, i, ev.clone()));
                            self.disconnect(l);
                            continue;
                        }
                    }
                    self.events.push((self.now, i, ev));
                }
            }
            if !any {
                return;
            }
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
        let tx_ms = if l.spec.bitrate_bps == 0 {
            0
        } else {
            (bytes.len() as u64 * 8 * 1000).div_ceil(l.spec.bitrate_bps)
        };
        let start = l.busy_until[dir].max(self.now);
        l.busy_until[dir] = start + tx_ms;
        l.bytes[dir] += bytes.len() as u64;
        let at = start + tx_ms + l.spec.latency_ms;
        if l.spec.loss_ppm > 0 && self.rng.below(1_000_000) < l.spec.loss_ppm as u64 {
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

    /// Advance the virtual clock to `until`, delivering messages and firing timers.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next_timer = self
                .nodes
                .iter()
                .map(|n| n.poll_timeout())
                .min()
                .unwrap_or(u64::MAX);
            let next_msg = self.queue.peek().map(|Reverse(d)| d.at).unwrap_or(u64::MAX);
            let next = next_timer.min(next_msg).max(self.now);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_msg <= next_timer {
                if let Some(Reverse(d)) = self.queue.pop() {
                    if self.links[d.link].up {
                        self.nodes[d.to].handle_frame(self.now, d.peer, &d.bytes);
                    }
                }
            } else {
                for n in &mut self.nodes {
                    if n.poll_timeout() <= self.now {
                        n.handle_timeout(self.now);
                    }
                }
            }
            self.pump();
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
                loss_ppm: 0,
            },
        );
        sim.run_for(30_000);
        assert!(sim.converged());
        assert_eq!(sim.nodes[0].chain().tip().height, 6);
        assert!(sim.events.iter().any(|(_, n, e)| *n == 0
            && matches!(e, NodeEvent::TipChanged { disconnected, .. } if *disconnected == 4)));
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
                    loss_ppm: 0,
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
