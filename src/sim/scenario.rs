//! Many-node scenarios on the simulator: a topology, hours of mining and payments over
//! flaky links with node crashes, then a heal phase; the report holds the figures and the
//! invariants (same tip everywhere, every accepted tx mined exactly once, no outbox item
//! vanished). Used by `skywave sim` and the tests.

use super::{LinkSpec, Sim};
use crate::chain::{params, Address, ChainError, Hash, Transaction};
use crate::node::OutboxStats;
use crate::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How the nodes are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// A chain of 1200 bit/s radio links.
    Line,
    /// Every node on TCP to node 0.
    Star,
    /// A ring plus random chords, 9600 bit/s links with loss.
    Mesh,
    /// Islands of 5 on 1200 bit/s VHF around a gateway; gateways joined by an internet
    /// path that is up for minutes and down for hours.
    Islands,
}

impl Topology {
    /// Parse `line|star|mesh|islands`.
    pub fn parse(s: &str) -> Option<Topology> {
        Some(match s {
            "line" => Topology::Line,
            "star" => Topology::Star,
            "mesh" => Topology::Mesh,
            "islands" => Topology::Islands,
            _ => return None,
        })
    }
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seed of everything.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Topology.
    pub topology: Topology,
    /// Hours of activity before the heal phase.
    pub hours: f64,
    /// Average blocks mined per hour (network-wide).
    pub blocks_per_hour: u64,
    /// Average payments per hour (network-wide).
    pub txs_per_hour: u64,
    /// Average node crashes per hour (network-wide).
    pub restarts_per_hour: u64,
}

impl Scenario {
    /// Defaults for a topology.
    pub fn new(seed: u64, nodes: usize, topology: Topology, hours: f64) -> Scenario {
        Scenario {
            seed,
            nodes,
            topology,
            hours,
            blocks_per_hour: 6,
            txs_per_hour: 30,
            restarts_per_hour: 2,
        }
    }
}

/// Figures and invariants of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario's seed.
    pub seed: u64,
    /// Bytes on air (framing included) per link kind.
    pub bytes_by_kind: BTreeMap<String, u64>,
    /// Virtual ms from the start of the heal phase until everything converged.
    pub converge_ms: Option<u64>,
    /// Virtual ms from the start of the heal phase until all nodes first shared one tip
    /// (checked every minute; the payments may still wait for a block then).
    pub tips_ms: Option<u64>,
    /// All nodes on one tip at the end.
    pub converged: bool,
    /// Main-chain height at the end.
    pub height: u64,
    /// Transactions accepted by the node they were submitted to.
    pub txs_accepted: usize,
    /// Of those, not on the main chain at the end.
    pub txs_missing: usize,
    /// Transaction ids found in more than one main-chain block.
    pub txs_twice: usize,
    /// Outbox counters summed over nodes (restarts included).
    pub outbox: OutboxStats,
    /// Items ever queued, delivered, still held (pending/held), expired.
    pub enqueued: u64,
    /// Items delivered.
    pub delivered: u64,
    /// Items still pending or held.
    pub pending: u64,
    /// Items expired.
    pub expired: u64,
    /// Items that vanished: queued but neither delivered, dropped nor in a table.
    pub vanished: u64,
    /// Node crashes.
    pub restarts: u64,
    /// Link sessions opened (flaps included).
    pub sessions: u64,
    /// Tip height per node at the end.
    pub heights: Vec<u64>,
    /// Disconnect reasons and counts.
    pub disconnects: BTreeMap<String, u64>,
    /// Virtual time simulated (setup, activity and heal), in ms.
    pub elapsed_ms: u64,
    /// Largest share of the simulated time any rate-limited link spent transmitting
    /// (both directions; 1.0 would be a channel busy all the time).
    pub busiest_link_load: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: height {}, converged {}",
            self.seed, self.height, self.converged
        )?;
        match self.converge_ms {
            Some(ms) => writeln!(
                f,
                "  time to converge after heal: {:.1} min (one tip after {:.1} min, then every payment mined and every outbox empty)",
                ms as f64 / 60_000.0,
                self.tips_ms.unwrap_or(ms) as f64 / 60_000.0
            )?,
            None => writeln!(f, "  did not converge")?,
        }
        writeln!(
            f,
            "  simulated {:.1} h in all (activity and heal); busiest rate-limited link on air {:.1} % of that time",
            self.elapsed_ms as f64 / 3_600_000.0,
            self.busiest_link_load * 100.0
        )?;
        for (k, b) in &self.bytes_by_kind {
            writeln!(f, "  bytes on {k}: {b}")?;
        }
        writeln!(
            f,
            "  txs accepted {}, missing from main chain {}, in two blocks {}",
            self.txs_accepted, self.txs_missing, self.txs_twice
        )?;
        writeln!(
            f,
            "  outbox: queued {}, delivered {} (acked {}, proven {}), pending {}, expired {}, vanished {}",
            self.enqueued,
            self.delivered,
            self.outbox.acked,
            self.outbox.proven,
            self.pending,
            self.expired,
            self.vanished
        )?;
        write!(
            f,
            "  pushes {}, retries {}, ack messages {}, duplicate pushes acked from the seen-set {}, restarts {}, link sessions {}",
            self.outbox.pushes,
            self.outbox.retries,
            self.outbox.ack_msgs,
            self.outbox.dup_pushes,
            self.restarts,
            self.sessions
        )?;
        write!(f, "\n  disconnects {:?}", self.disconnects)?;
        if !self.converged {
            write!(f, "\n  heights {:?}", self.heights)?;
        }
        Ok(())
    }
}

fn add(a: &mut OutboxStats, b: &OutboxStats) {
    a.pushes += b.pushes;
    a.retries += b.retries;
    a.acked += b.acked;
    a.proven += b.proven;
    a.ack_msgs += b.ack_msgs;
    a.dup_pushes += b.dup_pushes;
}

fn wallet(seed: u64, i: usize) -> ed25519_dalek::SigningKey {
    let mut r = Rng::new(seed ^ 0x5eed_0000 ^ i as u64);
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    ed25519_dalek::SigningKey::from_bytes(&k)
}

fn build(sc: &Scenario, sim: &mut Sim, rng: &mut Rng) {
    let n = sc.nodes;
    match sc.topology {
        Topology::Line => {
            for i in 0..n.saturating_sub(1) {
                sim.connect(i, i + 1, LinkSpec::vhf_1200(10_000));
            }
        }
        Topology::Star => {
            for i in 1..n {
                sim.connect(0, i, LinkSpec::fast());
            }
        }
        Topology::Mesh => {
            let spec = LinkSpec {
                latency_ms: 30,
                bitrate_bps: 9600,
                loss_ppm: 20_000,
                mtu: 256,
                frame_overhead: 20,
                ..LinkSpec::fast()
            };
            let mut seen = BTreeSet::new();
            for i in 0..n {
                let j = (i + 1) % n;
                if i != j && seen.insert((i.min(j), i.max(j))) {
                    sim.connect(i, j, spec.clone());
                }
                let k = rng.below(n as u64) as usize;
                if k != i && seen.insert((i.min(k), i.max(k))) {
                    sim.connect(i, k, spec.clone());
                }
            }
        }
        Topology::Islands => {
            let size = 5;
            let gateways: Vec<usize> = (0..n).step_by(size).collect();
            for &g in &gateways {
                for m in g + 1..(g + size).min(n) {
                    sim.connect(g, m, LinkSpec::vhf_1200(20_000));
                }
            }
            for (k, w) in gateways.windows(2).enumerate() {
                let up = (15 + 5 * k as u64) * 60_000;
                let down = (90 + 20 * k as u64) * 60_000;
                // Gateways bridge the islands over an intermittent internet path (up for
                // minutes, down for hours). Over 300 bit/s HF instead, a long header sync
                // outlasts the core's fixed sync and silence timeouts: a known gap.
                let spec = LinkSpec {
                    latency_ms: 80,
                    loss_ppm: 0,
                    flap: Some((up, down)),
                    ..LinkSpec::fast()
                };
                sim.connect(w[0], w[1], spec);
            }
        }
    }
}

/// Coinbase maturity in the simulated network. Regtest's own is 1 (tests pay from a
/// fresh coinbase); the simulator uses more so its miners wait as real ones do, and
/// payments from a coinbase on a fork that later loses never get in.
pub const SIM_COINBASE_MATURITY: u64 = 2;

/// Run a scenario.
pub fn run(sc: &Scenario) -> Result<Report, ChainError> {
    let mut p = params::regtest();
    p.coinbase_maturity = SIM_COINBASE_MATURITY;
    let mut sim = Sim::new(&p, sc.nodes, sc.seed)?;
    let mut rng = Rng::new(sc.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1);
    build(sc, &mut sim, &mut rng);
    let keys: Vec<_> = (0..sc.nodes).map(|i| wallet(sc.seed, i)).collect();
    let addrs: Vec<Address> = keys.iter().map(crate::keys::address).collect();
    let miners: Vec<usize> = match sc.topology {
        Topology::Islands => (0..sc.nodes)
            .step_by(5)
            .map(|g| (g + 1).min(sc.nodes - 1))
            .collect(),
        _ => vec![0, sc.nodes / 2],
    };
    let start = sim.now();
    if sc.topology == Topology::Islands {
        fund(&mut sim, &keys, &addrs, miners[0]);
    }
    let mut accepted: BTreeSet<Hash> = BTreeSet::new();
    let mut stats = OutboxStats::default();
    let step = 60_000u64;
    let steps = (sc.hours * 60.0) as u64;
    let net = p.network_id();
    for _ in 0..steps {
        if rng.below(60) < sc.blocks_per_hour {
            let m = miners[rng.below(miners.len() as u64) as usize];
            sim.mine(m, addrs[m]);
        }
        let mut t = sc.txs_per_hour;
        while t > 0 {
            let k = t.min(60);
            t -= k;
            if rng.below(60) >= k {
                continue;
            }
            let from = rng.below(sc.nodes as u64) as usize;
            let to = addrs[rng.below(sc.nodes as u64) as usize];
            let node = &sim.nodes[from];
            let nonce = node.chain().next_nonce(&addrs[from]);
            if node.chain().spendable_balance(&addrs[from]) < 10_000 {
                continue;
            }
            let tx = Transaction::sign(net, &keys[from], to, 1, 1000, nonce);
            let now = sim.now();
            if let Ok(id) = sim.nodes[from].submit_tx(now, tx) {
                accepted.insert(id);
            }
            sim.pump();
        }
        if rng.below(60) < sc.restarts_per_hour {
            let i = rng.below(sc.nodes as u64) as usize;
            add(&mut stats, &sim.nodes[i].outbox().stats);
            sim.restart(i)?;
        }
        sim.run_for(step);
    }
    // Heal: links up and clean; node 0 mines now and then so every payment gets in.
    let heal_start = sim.now();
    sim.heal();
    let mut converge_ms = None;
    let mut tips_ms = None;
    let mut heal_blocks = 0;
    for round in 0..24 * 60 {
        sim.run_for(step);
        let main = main_chain_txs(&sim);
        let all_in = accepted.iter().all(|id| main.contains_key(id));
        let quiet = sim.nodes.iter().all(|n| n.outbox_items().is_empty());
        if tips_ms.is_none() && sim.converged() {
            tips_ms = Some(sim.now() - heal_start);
        }
        if sim.converged() && all_in && quiet {
            converge_ms = Some(sim.now() - heal_start);
            break;
        }
        // A block breaks ties between equal-work tips and picks up stray payments; a
        // few are enough (every block is one more thing for slow links to carry).
        if (!all_in || !sim.converged()) && round % 10 == 9 && heal_blocks < 6 {
            heal_blocks += 1;
            sim.mine(0, addrs[0]);
        }
    }
    let main = main_chain_txs(&sim);
    let mut r = Report {
        seed: sc.seed,
        converge_ms,
        tips_ms,
        converged: sim.converged(),
        height: sim.nodes[0].chain().tip().height,
        txs_accepted: accepted.len(),
        txs_missing: accepted.iter().filter(|id| !main.contains_key(id)).count(),
        txs_twice: main.values().filter(|&&c| c > 1).count(),
        restarts: sim.restarts,
        ..Report::default()
    };
    r.heights = sim.nodes.iter().map(|n| n.chain().tip().height).collect();
    for (_, _, e) in &sim.events {
        if let crate::node::NodeEvent::Disconnect { reason, .. } = e {
            *r.disconnects.entry(reason.clone()).or_default() += 1;
        }
    }
    for (_, _, _, kind, _, bytes, ups) in sim.links() {
        *r.bytes_by_kind.entry(kind).or_default() += bytes;
        r.sessions += ups;
    }
    r.elapsed_ms = sim.now() - start;
    for l in &sim.links {
        if l.spec.bitrate_bps > 0 && r.elapsed_ms > 0 {
            let air_ms = (l.bytes[0] + l.bytes[1]) * 8 * 1000 / l.spec.bitrate_bps;
            r.busiest_link_load = r.busiest_link_load.max(air_ms as f64 / r.elapsed_ms as f64);
        }
    }
    for n in &sim.nodes {
        let v = n.outbox();
        add(&mut stats, &v.stats);
        r.enqueued += v.totals.enqueued;
        r.delivered += v.totals.delivered;
        let live = v.items.len() as u64;
        r.expired += v
            .items
            .iter()
            .filter(|i| i.state == crate::outbox::State::Expired)
            .count() as u64;
        r.pending += live;
        r.vanished += v
            .totals
            .enqueued
            .saturating_sub(v.totals.delivered + v.totals.dropped + live);
    }
    r.pending -= r.expired;
    r.outbox = stats;
    Ok(r)
}

/// Give every wallet money in history that all islands share, before the first outage.
///
/// Otherwise only miners can pay, out of coinbases of their own island's fork: when the
/// islands meet, all forks but one are orphaned, those coinbases never existed on the
/// surviving chain, and payments made from them can never be mined anywhere (proof of
/// work, not the sync). `miner` mines until its first coinbase is mature, pays every
/// other node, mines the payments in, and the network runs (the gateways' internet path is up at the start) until every
/// node holds them.
fn fund(sim: &mut Sim, keys: &[ed25519_dalek::SigningKey], addrs: &[Address], miner: usize) {
    const GRANT: u64 = 100_000_000;
    let p = sim.nodes[miner].chain().params().clone();
    let net = p.network_id();
    // Enough blocks that the first coinbase has matured by the next block.
    for _ in 0..p.coinbase_maturity.max(1) {
        sim.mine(miner, addrs[miner]);
    }
    for (i, to) in addrs.iter().enumerate() {
        if i == miner {
            continue;
        }
        let nonce = sim.nodes[miner].chain().next_nonce(&addrs[miner]);
        let tx = Transaction::sign(net, &keys[miner], *to, GRANT, 1000, nonce);
        let now = sim.now();
        let _ = sim.nodes[miner].submit_tx(now, tx);
    }
    sim.pump();
    sim.mine(miner, addrs[miner]);
    // Well within the internet path's first up-time (15 min); 2-3 min in practice.
    for _ in 0..20 {
        if sim.converged() && sim.nodes[miner].chain().mempool_len() == 0 {
            break;
        }
        sim.run_for(30_000);
    }
}

/// Transaction ids on node 0's main chain, with how many blocks hold each.
fn main_chain_txs(sim: &Sim) -> BTreeMap<Hash, u32> {
    let c = sim.nodes[0].chain();
    let mut out = BTreeMap::new();
    for h in 1..=c.tip().height {
        let Some(b) = c.main_hash_at(h).and_then(|x| c.block(&x).ok().flatten()) else {
            continue;
        };
        for t in &b.txs {
            *out.entry(t.id()).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &Report) {
        eprintln!("{r}");
        assert!(r.converged, "not converged");
        assert!(r.converge_ms.is_some(), "heal did not finish");
        assert!(r.txs_accepted > 0);
        assert_eq!(r.txs_missing, 0, "accepted txs missing from the main chain");
        assert_eq!(r.txs_twice, 0, "a tx mined twice");
        assert_eq!(r.vanished, 0, "outbox items vanished");
        assert_eq!(r.pending + r.expired, 0, "outbox items left after heal");
        assert_eq!(r.enqueued, r.delivered, "every item delivered");
        assert!(
            r.busiest_link_load <= 1.0,
            "a link carried more than its bit rate allows"
        );
    }

    #[test]
    fn a_mesh_of_twenty_nodes_converges_for_several_seeds() {
        for seed in [1, 2, 3] {
            let r = run(&Scenario::new(seed, 20, Topology::Mesh, 3.0)).unwrap();
            check(&r);
            assert!(r.restarts > 0 && r.sessions > 20);
        }
    }

    /// Islands whose gateways are cut off for hours fork apart, then all converge on one
    /// tip after the heal, with every payment mined once and every outbox item delivered.
    #[test]
    fn islands_of_twenty_nodes_converge_for_several_seeds() {
        for seed in [1, 2, 3] {
            let r = run(&Scenario::new(seed, 20, Topology::Islands, 4.0)).unwrap();
            check(&r);
            assert!(r.restarts > 0 && r.sessions > 20);
            let silent = r
                .disconnects
                .iter()
                .filter(|(k, _)| k.starts_with("silent"))
                .map(|(_, n)| n)
                .sum::<u64>();
            assert!(silent <= 3, "{silent} sessions dropped as silent");
        }
    }

    #[test]
    fn mesh_and_line_converge() {
        check(&run(&Scenario::new(4, 20, Topology::Mesh, 2.0)).unwrap());
        check(&run(&Scenario::new(5, 20, Topology::Line, 1.0)).unwrap());
    }

    #[test]
    fn same_seed_same_figures() {
        let a = run(&Scenario::new(9, 20, Topology::Islands, 1.0)).unwrap();
        let b = run(&Scenario::new(9, 20, Topology::Islands, 1.0)).unwrap();
        assert_eq!(a.to_string(), b.to_string());
    }
}
