//! Many-node scenarios on the simulator: a topology, hours of mining and payments over
//! flaky links with node crashes, then a heal phase; the report holds the figures and the
//! invariants (same tip everywhere, every accepted tx mined exactly once, no outbox item
//! vanished). Used by `skywave sim` and the tests.

use super::{LinkSpec, Sim};
use crate::chain::{params, Address, ChainError, Hash, Transaction};
use crate::node::OutboxStats;
use crate::rng::Rng;
use serde::Serialize;
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
    /// Average blocks mined per hour (network-wide; see [`Scenario::new`]).
    pub blocks_per_hour: f64,
    /// Average payments per node per hour: the load grows with the network.
    pub payments_per_node_hour: f64,
    /// Average node crashes per hour (network-wide).
    pub restarts_per_hour: f64,
}

impl Scenario {
    /// Defaults for a topology: 0.5 payments per node per hour, 2 crashes per hour and 6
    /// blocks per hour, or for more than 20 islands [`BLOCKS_PER_ISLAND_HOUR`] per
    /// island: cut off for hours, each island mines on its own, and with a fixed rate
    /// spread over 200 islands each would see a block about once a day while its
    /// payments (which grow with the nodes) wait unmined in every mempool and outbox.
    pub fn new(seed: u64, nodes: usize, topology: Topology, hours: f64) -> Scenario {
        let islands = nodes.div_ceil(ISLAND) as f64;
        let blocks_per_hour = match topology {
            Topology::Islands => (BLOCKS_PER_ISLAND_HOUR * islands).max(6.0),
            _ => 6.0,
        };
        Scenario {
            seed,
            nodes,
            topology,
            hours,
            blocks_per_hour,
            payments_per_node_hour: 0.5,
            restarts_per_hour: 2.0,
        }
    }

    /// One line on what the topology is, for newcomers.
    pub fn describe(&self) -> String {
        let islands = self.nodes.div_ceil(ISLAND);
        let shape = match (islands, self.nodes % ISLAND) {
            (1, _) => format!("one island of {} nodes", self.nodes),
            (n, 0) => format!("{n} islands of {ISLAND} nodes"),
            (n, r) => format!("{n} islands of {ISLAND} nodes (the last of {r})"),
        };
        let islands_text = format!("{shape} on 1200 bit/s VHF radio (2 % loss), each around a gateway; the gateways are chained by an internet path that is up for 15-30 minutes, then down for 1.5-2.5 hours, so each island mines its own fork for hours and the forks must be reconciled");
        let what = match self.topology {
            Topology::Line => "a chain of 1200 bit/s radio links (1 % loss), each node talking only to its neighbours",
            Topology::Star => "every node on a fast TCP link to node 0",
            Topology::Mesh => "a ring of 9600 bit/s links with 2 % loss plus random shortcuts",
            Topology::Islands => islands_text.as_str(),
        };
        format!(
            "{} nodes: {what}. After the shared start-up funds, {:.1} h of activity ({:.2} payments per node per hour, {:.1} blocks per hour, {:.1} node crashes per hour), then a heal: every link up and clean until the network agrees.",
            self.nodes, self.hours, self.payments_per_node_hour, self.blocks_per_hour, self.restarts_per_hour
        )
    }
}

/// What became of each payment a node accepted, judged against the final main chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TxFates {
    /// In a main-chain block.
    pub mined: usize,
    /// Not mined because another payment of the same wallet with the same nonce was (a
    /// conflicting spend): not a loss, the chain settled which one counts.
    pub replaced: usize,
    /// Not mined because the sender's money on the main chain does not cover it: it was
    /// paid from funds (a coinbase, a payment received) that only existed on a fork that
    /// lost. Not a loss: that money never existed on the surviving chain.
    pub unfunded: usize,
    /// Not mined because an earlier payment of the same wallet can never be (replaced
    /// or unfunded): nonces must be used in order.
    pub after_unminable: usize,
    /// Valid on the main chain and held in some mempool, not yet in a block.
    pub waiting: usize,
    /// Valid on the main chain but held by no node: a loss.
    pub lost: usize,
}

impl TxFates {
    /// Accepted payments that are neither mined nor explained.
    pub fn losses(&self) -> usize {
        self.lost + self.waiting
    }
}

/// Outbox items left in a table at the end, by state and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxLeft {
    /// Still pending or held: these must be 0 in a healed network.
    pub pending: u64,
    /// Expired, by reason.
    pub expired: BTreeMap<String, u64>,
}

/// Figures and invariants of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The scenario's seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// One line on the topology and load.
    pub scenario: String,
    /// The verdict: converged, with nothing lost and no outbox item left pending.
    pub ok: bool,
    /// The verdict in words.
    pub verdict: String,
    /// Bytes on air (framing included) per link kind.
    pub bytes_by_kind: BTreeMap<String, u64>,
    /// Virtual ms from the start of the heal phase until everything converged.
    pub converge_ms: Option<u64>,
    /// Virtual ms from the start of the heal phase until all nodes first shared one tip
    /// (checked every minute; the payments may still wait for a block then).
    pub tips_ms: Option<u64>,
    /// All nodes on one tip at the end.
    pub one_tip: bool,
    /// Main-chain height at the end.
    pub height: u64,
    /// Payments signed by the scenario (a wallet with money, its node's next nonce).
    pub txs_made: usize,
    /// Of those, accepted by the node they were submitted to.
    pub txs_accepted: usize,
    /// What became of the accepted payments.
    pub fates: TxFates,
    /// Transaction ids found in more than one main-chain block.
    pub txs_twice: usize,
    /// Outbox counters summed over nodes (restarts included).
    pub outbox: OutboxStats,
    /// Outbox items ever queued.
    pub enqueued: u64,
    /// Items delivered.
    pub delivered: u64,
    /// Items left in the tables, and why.
    pub left: OutboxLeft,
    /// Items that vanished: queued but neither delivered, dropped nor in a table.
    pub vanished: u64,
    /// Node crashes.
    pub restarts: u64,
    /// Link sessions opened (flaps included).
    pub sessions: u64,
    /// Tip height per node at the end (only when they differ).
    pub heights: Vec<u64>,
    /// Disconnect reasons and counts.
    pub disconnects: BTreeMap<String, u64>,
    /// Virtual time simulated (funding, activity and heal), in ms.
    pub elapsed_ms: u64,
    /// Largest share of the simulated time any rate-limited link spent transmitting
    /// (both directions; 1.0 would be a channel busy all the time).
    pub busiest_link_load: f64,
    /// Simulator work: events handled (deliveries, timers, link changes).
    pub events: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.verdict)?;
        writeln!(f, "  what ran: {}", self.scenario)?;
        match self.converge_ms {
            Some(ms) => writeln!(
                f,
                "  after the heal: one tip on every node after {:.1} min; every payment settled and every outbox empty after {:.1} min",
                self.tips_ms.unwrap_or(ms) as f64 / 60_000.0,
                ms as f64 / 60_000.0,
            )?,
            None => writeln!(
                f,
                "  after the heal: not settled within the heal phase{}",
                if self.one_tip { " (the tips agree)" } else { "" }
            )?,
        }
        writeln!(
            f,
            "  chain: height {}, {} node crashes, {} link sessions opened (the internet path comes and goes)",
            self.height, self.restarts, self.sessions
        )?;
        let fa = &self.fates;
        writeln!(
            f,
            "  payments: {} made, {} accepted by their node; {} mined, {} replaced by a conflicting spend that was mined, {} paid from money that only existed on a losing fork, {} behind such a payment (same wallet, later nonce); {} still waiting, {} lost; {} mined twice",
            self.txs_made,
            self.txs_accepted,
            fa.mined,
            fa.replaced,
            fa.unfunded,
            fa.after_unminable,
            fa.waiting,
            fa.lost,
            self.txs_twice
        )?;
        let expired: u64 = self.left.expired.values().sum();
        writeln!(
            f,
            "  outbox (what nodes owe their peers): {} items queued, {} delivered ({} acknowledged, {} proven held by the peer), {} given up as undeliverable, {} still pending, {} vanished",
            self.enqueued,
            self.delivered,
            self.outbox.acked,
            self.outbox.proven,
            expired,
            self.left.pending,
            self.vanished
        )?;
        for (why, n) in &self.left.expired {
            writeln!(f, "    given up: {n} because {why}")?;
        }
        writeln!(
            f,
            "  traffic: {} pushes, {} retries, {} ack messages, {} repeated pushes answered from the seen-set",
            self.outbox.pushes, self.outbox.retries, self.outbox.ack_msgs, self.outbox.dup_pushes
        )?;
        for (k, b) in &self.bytes_by_kind {
            writeln!(f, "  bytes on {k} links: {b}")?;
        }
        writeln!(
            f,
            "  simulated {:.1} h in all (funding, activity, heal); the busiest rate-limited link was on air {:.1} % of that time",
            self.elapsed_ms as f64 / 3_600_000.0,
            self.busiest_link_load * 100.0
        )?;
        if self.disconnects.is_empty() {
            write!(f, "  sessions dropped: none")?;
        } else {
            let reasons: Vec<String> = self
                .disconnects
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect();
            write!(f, "  sessions dropped: {}", reasons.join("; "))?;
        }
        if !self.heights.is_empty() {
            let heights: Vec<String> = self.heights.iter().map(u64::to_string).collect();
            write!(f, "\n  tip height per node: {}", heights.join(" "))?;
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

/// Nodes per island.
const ISLAND: usize = 5;

/// Blocks per island and hour in a network of more than 20 islands: what 6 blocks per
/// hour give each of 20 islands (100 nodes).
pub const BLOCKS_PER_ISLAND_HOUR: f64 = 0.3;

/// Join the nodes; returns the flapping links with their (up, down) schedule, started
/// after the funding.
fn build(sc: &Scenario, sim: &mut Sim, rng: &mut Rng) -> Vec<(usize, (u64, u64))> {
    let n = sc.nodes;
    let mut flaps = Vec::new();
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
            let gateways: Vec<usize> = (0..n).step_by(ISLAND).collect();
            for &g in &gateways {
                for m in g + 1..(g + ISLAND).min(n) {
                    sim.connect(g, m, LinkSpec::vhf_1200(20_000));
                }
            }
            for (k, w) in gateways.windows(2).enumerate() {
                // Up for minutes, down for hours; the schedules differ (repeating every
                // four links) so the islands drift in and out of touch.
                let k = (k % 4) as u64;
                let up = (15 + 5 * k) * 60_000;
                let down = (90 + 20 * k) * 60_000;
                // Gateways bridge the islands over an intermittent internet path. Over
                // 300 bit/s HF instead, a long header sync outlasts the core's fixed sync
                // and silence timeouts: a known gap.
                let spec = LinkSpec {
                    latency_ms: 80,
                    loss_ppm: 0,
                    ..LinkSpec::fast()
                };
                let l = sim.connect(w[0], w[1], spec);
                flaps.push((l, (up, down)));
            }
        }
    }
    flaps
}

/// Coinbase maturity in the simulated network. Regtest's own is 1 (tests pay from a
/// fresh coinbase); the simulator uses more so its miners wait as real ones do, and
/// payments from a coinbase on a fork that later loses never get in.
pub const SIM_COINBASE_MATURITY: u64 = 2;

/// Amount of one payment and its fee.
const PAYMENT: u64 = 1;
const FEE: u64 = 1000;

/// How many of an average `per_minute` events happen this minute.
fn draw(rng: &mut Rng, per_minute: f64) -> u64 {
    let whole = per_minute.floor();
    let frac = ((per_minute - whole) * 1_000_000.0) as u64;
    whole as u64 + u64::from(rng.below(1_000_000) < frac)
}

/// An accepted payment: who signed it, with which nonce.
#[derive(Clone, Copy)]
struct Made {
    id: Hash,
    from: Address,
    nonce: u64,
    cost: u64,
}

/// Judge every accepted payment against node 0's main chain (see [`TxFates`]).
fn fates(sim: &Sim, made: &[Made]) -> TxFates {
    let chain = sim.nodes[0].chain();
    let mined = |id: &Hash| matches!(chain.store().tx_block(id), Ok(Some(_)));
    let mut out = TxFates::default();
    let mut by_sender: BTreeMap<Address, Vec<&Made>> = BTreeMap::new();
    for m in made {
        if mined(&m.id) {
            out.mined += 1;
        } else {
            by_sender.entry(m.from).or_default().push(m);
        }
    }
    for (from, mut txs) in by_sender {
        txs.sort_by_key(|m| (m.nonce, m.id));
        let acc = chain.account(&from);
        let mut next = acc.nonce;
        let mut balance = chain.spendable_balance(&from);
        let mut blocked = false;
        for m in txs {
            if m.nonce < next {
                // Its nonce is taken: by a mined spend, or by an accepted one before it.
                out.replaced += 1;
            } else if blocked || m.nonce > next {
                out.after_unminable += 1;
            } else if balance < m.cost {
                out.unfunded += 1;
                blocked = true;
            } else {
                balance -= m.cost;
                next += 1;
                if sim
                    .nodes
                    .iter()
                    .any(|n| n.chain().mempool_get(&m.id).is_some())
                {
                    out.waiting += 1;
                } else {
                    out.lost += 1;
                }
            }
        }
    }
    out
}

/// Why an expired outbox item could not be delivered, judged against node 0's chain.
fn expiry_reason(sim: &Sim, made: &BTreeMap<Hash, Made>, kind: &str, hash: &Hash) -> String {
    let chain = sim.nodes[0].chain();
    if kind == "block" {
        return if chain.is_on_main_chain(hash) {
            "a main-chain block was not delivered in time".into()
        } else {
            "its block lost to a heavier fork".into()
        };
    }
    let Some(tx) = made.get(hash) else {
        return "its transaction was not made by the scenario".into();
    };
    let acc = chain.account(&tx.from);
    if tx.nonce < acc.nonce {
        "a conflicting spend (same wallet, same nonce) was mined".into()
    } else if tx.nonce > acc.nonce {
        "an earlier payment of the same wallet can never be mined".into()
    } else if chain.spendable_balance(&tx.from) < tx.cost {
        "it pays with money that only existed on a losing fork".into()
    } else {
        "a valid transaction was not delivered in time".into()
    }
}

/// Where a run is, handed to [`run_with`]'s callback once per simulated hour.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Virtual time since the start, in ms.
    pub sim_ms: u64,
    /// In the heal phase.
    pub healing: bool,
    /// Simulator events handled so far.
    pub events: u64,
    /// Outbox items waiting to be sent, summed over nodes.
    pub outbox_pending: usize,
    /// Transactions in mempools, summed over nodes.
    pub mempool_txs: usize,
}

/// Run a scenario.
pub fn run(sc: &Scenario) -> Result<Report, ChainError> {
    run_with(sc, &mut |_| {})
}

/// Run a scenario, telling `progress` where it is every simulated hour.
pub fn run_with(sc: &Scenario, progress: &mut dyn FnMut(&Progress)) -> Result<Report, ChainError> {
    let mut p = params::regtest();
    p.coinbase_maturity = SIM_COINBASE_MATURITY;
    let mut sim = Sim::new(&p, sc.nodes, sc.seed)?;
    sim.record_events = false;
    let mut rng = Rng::new(sc.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1);
    let keys: Vec<_> = (0..sc.nodes).map(|i| wallet(sc.seed, i)).collect();
    let addrs: Vec<Address> = keys.iter().map(crate::keys::address).collect();
    let start = sim.now();
    fund(&mut sim, &keys, &addrs, 0)?;
    let flaps = build(sc, &mut sim, &mut rng);
    let miners: Vec<usize> = match sc.topology {
        Topology::Islands => (0..sc.nodes)
            .step_by(ISLAND)
            .map(|g| (g + 1).min(sc.nodes - 1))
            .collect(),
        _ => vec![0, sc.nodes / 2],
    };
    for (l, sched) in flaps {
        sim.set_flap(l, Some(sched));
    }
    let mut made: Vec<Made> = Vec::new();
    let mut signed = 0usize;
    let mut stats = OutboxStats::default();
    let step = 60_000u64;
    let steps = (sc.hours * 60.0) as u64;
    let net = p.network_id();
    let pay_rate = sc.payments_per_node_hour * sc.nodes as f64 / 60.0;
    let tell = |sim: &Sim, healing: bool, progress: &mut dyn FnMut(&Progress)| {
        progress(&Progress {
            sim_ms: sim.now() - start,
            healing,
            events: sim.handled,
            outbox_pending: sim.nodes.iter().map(|n| n.outbox_waiting()).sum(),
            mempool_txs: sim.nodes.iter().map(|n| n.chain().mempool_len()).sum(),
        })
    };
    for minute in 0..steps {
        if minute % 60 == 59 {
            tell(&sim, false, progress);
        }
        for _ in 0..draw(&mut rng, sc.blocks_per_hour / 60.0) {
            let m = miners[rng.below(miners.len() as u64) as usize];
            sim.mine(m, addrs[m]);
        }
        for _ in 0..draw(&mut rng, pay_rate) {
            let from = rng.below(sc.nodes as u64) as usize;
            let to = addrs[rng.below(sc.nodes as u64) as usize];
            let chain = sim.nodes[from].chain();
            let nonce = chain.next_nonce(&addrs[from]);
            if chain.spendable_balance(&addrs[from]) < 10 * (PAYMENT + FEE) {
                continue;
            }
            let tx = Transaction::sign(net, &keys[from], to, PAYMENT, FEE, nonce);
            signed += 1;
            if let Ok(id) = sim.submit_tx(from, tx) {
                made.push(Made {
                    id,
                    from: addrs[from],
                    nonce,
                    cost: PAYMENT + FEE,
                });
            }
        }
        for _ in 0..draw(&mut rng, sc.restarts_per_hour / 60.0) {
            let i = rng.below(sc.nodes as u64) as usize;
            add(&mut stats, &sim.nodes[i].outbox().stats);
            sim.restart(i)?;
        }
        sim.run_for(step);
        crate::sim::release_freed_memory();
    }
    // Heal: links up and clean; node 0 mines now and then so every payment gets in.
    let heal_start = sim.now();
    sim.heal();
    let mut converge_ms = None;
    let mut tips_ms = None;
    for round in 0..24 * 60 {
        if round % 60 == 59 {
            tell(&sim, true, progress);
        }
        sim.run_for(step);
        crate::sim::release_freed_memory();
        let one_tip = sim.converged();
        if tips_ms.is_none() && one_tip {
            tips_ms = Some(sim.now() - heal_start);
        }
        let fa = fates(&sim, &made);
        let quiet = sim.nodes.iter().all(|n| n.outbox_waiting() == 0);
        if one_tip && fa.losses() == 0 && quiet {
            converge_ms = Some(sim.now() - heal_start);
            break;
        }
        // A block breaks ties between equal-work tips and picks up waiting payments.
        if (fa.waiting > 0 || !one_tip) && round % 10 == 9 {
            sim.mine(0, addrs[0]);
        }
    }
    let main = main_chain_txs(&sim);
    let fates = fates(&sim, &made);
    let one_tip = sim.converged();
    let mut r = Report {
        seed: sc.seed,
        nodes: sc.nodes,
        scenario: sc.describe(),
        converge_ms,
        tips_ms,
        one_tip,
        height: sim.nodes[0].chain().tip().height,
        txs_made: signed,
        txs_accepted: made.len(),
        txs_twice: main.values().filter(|&&c| c > 1).count(),
        restarts: sim.restarts,
        disconnects: sim.disconnects.clone(),
        events: sim.handled,
        ..Report::default()
    };
    if !one_tip {
        r.heights = sim.nodes.iter().map(|n| n.chain().tip().height).collect();
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
    let by_id: BTreeMap<Hash, Made> = made.iter().map(|m| (m.id, *m)).collect();
    for n in &sim.nodes {
        let v = n.outbox();
        add(&mut stats, &v.stats);
        r.enqueued += v.totals.enqueued;
        r.delivered += v.totals.delivered;
        let live = v.items.len() as u64;
        for it in &v.items {
            if it.state == crate::outbox::State::Expired {
                *r.left
                    .expired
                    .entry(expiry_reason(&sim, &by_id, it.kind, &it.hash))
                    .or_default() += 1;
            } else {
                r.left.pending += 1;
            }
        }
        r.vanished += v
            .totals
            .enqueued
            .saturating_sub(v.totals.delivered + v.totals.dropped + live);
    }
    r.outbox = stats;
    r.fates = fates;
    r.ok = r.one_tip
        && r.converge_ms.is_some()
        && r.fates.losses() == 0
        && r.txs_twice == 0
        && r.left.pending == 0
        && r.vanished == 0;
    r.verdict = if r.ok {
        format!(
            "OK (seed {}): all {} nodes agree on one chain (height {}), no accepted payment lost, no outbox item left pending",
            r.seed, r.nodes, r.height
        )
    } else {
        let mut why = Vec::new();
        if !r.one_tip {
            why.push("the nodes end on different tips".to_string());
        } else if r.converge_ms.is_none() {
            why.push("the heal phase ran out before everything settled".to_string());
        }
        if r.fates.losses() > 0 {
            why.push(format!(
                "{} accepted payments lost or never mined",
                r.fates.losses()
            ));
        }
        if r.txs_twice > 0 {
            why.push(format!("{} payments mined twice", r.txs_twice));
        }
        if r.left.pending > 0 {
            why.push(format!("{} outbox items still pending", r.left.pending));
        }
        if r.vanished > 0 {
            why.push(format!("{} outbox items vanished", r.vanished));
        }
        format!(
            "FAILED (seed {}, {} nodes): {}",
            r.seed,
            r.nodes,
            why.join("; ")
        )
    };
    Ok(r)
}

/// Give every wallet money in history that all islands share, before the first outage.
///
/// Otherwise only miners can pay, out of coinbases of their own island's fork: when the
/// islands meet, all forks but one are orphaned, those coinbases never existed on the
/// surviving chain, and payments made from them can never be mined anywhere (proof of
/// work, not the sync). `miner`'s wallet mines enough coinbases, then the money fans out
/// in a tree (at most [`FANOUT`] payments per wallet and block, as the mempool allows one
/// sender), each round mined at once, on a chain outside the network; every node then
/// starts from it, as a network that shared this history before the simulation began.
/// (Relayed over the 1200 bit/s links instead, the start-up history took hours of
/// simulated time and most of the memory and work of a large run, none of it the
/// scenario's.)
fn fund(
    sim: &mut Sim,
    keys: &[ed25519_dalek::SigningKey],
    addrs: &[Address],
    miner: usize,
) -> Result<(), ChainError> {
    const GRANT: u64 = 10_000_000;
    const FANOUT: usize = 20;
    let mut chain = sim.scratch_chain()?;
    let p = chain.params().clone();
    let net = p.network_id();
    let n = addrs.len() as u64;
    let need = n.saturating_mul(2 * GRANT);
    let coinbases = need.div_ceil(p.initial_subsidy.max(1)) + p.coinbase_maturity + 1;
    for _ in 0..coinbases {
        sim.mine_on(&mut chain, addrs[miner]);
    }
    let others: Vec<usize> = (0..addrs.len()).filter(|&i| i != miner).collect();
    let mut todo: Vec<(usize, Vec<usize>)> = vec![(miner, others)];
    while !todo.is_empty() {
        let mut next = Vec::new();
        for (payer, group) in todo {
            let per = group.len().div_ceil(FANOUT).max(1);
            for g in group.chunks(per) {
                // The head of each share keeps a grant and passes the rest on.
                let amount = g.len() as u64 * 2 * GRANT;
                let nonce = chain.next_nonce(&addrs[payer]);
                let tx = Transaction::sign(net, &keys[payer], addrs[g[0]], amount, FEE, nonce);
                let _ = chain.submit_tx(tx, sim.now() / 1000);
                if g.len() > 1 {
                    next.push((g[0], g[1..].to_vec()));
                }
            }
        }
        let mut guard = 0;
        while chain.mempool_len() > 0 && guard < 1000 {
            sim.mine_on(&mut chain, addrs[miner]);
            guard += 1;
        }
        todo = next;
    }
    sim.start_from(&chain)
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

    #[test]
    fn the_islands_are_described_as_the_node_count_makes_them() {
        let text = |n| Scenario::new(1, n, Topology::Islands, 1.0).describe();
        assert!(
            text(4).contains("4 nodes: one island of 4 nodes"),
            "{}",
            text(4)
        );
        assert!(
            text(1000).contains("200 islands of 5 nodes on"),
            "{}",
            text(1000)
        );
        assert!(
            text(12).contains("3 islands of 5 nodes (the last of 2)"),
            "{}",
            text(12)
        );
    }

    fn check(r: &Report) {
        eprintln!("{r}");
        assert!(r.ok, "{}", r.verdict);
        assert!(r.verdict.starts_with("OK"), "{}", r.verdict);
        assert!(r.one_tip, "not converged");
        assert!(r.converge_ms.is_some(), "heal did not finish");
        assert!(r.txs_accepted > 0);
        assert_eq!(r.fates.losses(), 0, "accepted txs lost: {:?}", r.fates);
        assert_eq!(r.txs_twice, 0, "a tx mined twice");
        assert_eq!(r.vanished, 0, "outbox items vanished");
        assert_eq!(r.left.pending, 0, "outbox items left pending after heal");
        let expired: u64 = r.left.expired.values().sum();
        assert_eq!(
            r.enqueued,
            r.delivered + expired,
            "every item delivered or given up"
        );
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

    /// A hundred nodes in twenty islands that fork apart for hours: every seed converges
    /// on one chain with every accepted payment mined or explained, none lost, and no
    /// outbox item left pending.
    #[test]
    fn a_hundred_nodes_in_islands_converge_with_nothing_lost() {
        for seed in [1, 2, 3] {
            let r = run(&Scenario::new(seed, 100, Topology::Islands, 4.0)).unwrap();
            check(&r);
            assert!(r.txs_accepted >= 150, "too little load: {}", r.txs_accepted);
            assert!(r.restarts > 0 && r.sessions > 100);
            // A push the receiver answers from its seen-set went again before its ack
            // came back: on these 1200 bit/s links that was most of them (59 %) while
            // the timer ignored how long acks take.
            assert!(
                r.outbox.dup_pushes * 10 <= r.outbox.pushes,
                "{} of {} pushes repeated needlessly",
                r.outbox.dup_pushes,
                r.outbox.pushes
            );
        }
    }

    /// The scale run of docs/BENCHMARKS.md: `cargo test --release --lib -- --ignored
    /// a_thousand_nodes`.
    #[test]
    #[ignore = "minutes in a release build; see docs/BENCHMARKS.md"]
    fn a_thousand_nodes_in_islands_converge_with_nothing_lost() {
        let r = run(&Scenario::new(1, 1000, Topology::Islands, 4.0)).unwrap();
        check(&r);
    }

    /// Islands mine at a rate that grows with their number beyond 20 islands, so each
    /// island sees a block about every 3 hours; 100 nodes keep their 6 blocks per hour.
    #[test]
    fn the_block_rate_grows_with_the_islands() {
        let rate = |n, t| Scenario::new(1, n, t, 4.0).blocks_per_hour;
        assert_eq!(rate(20, Topology::Islands), 6.0);
        assert_eq!(rate(100, Topology::Islands), 6.0);
        assert_eq!(rate(1000, Topology::Islands), 60.0);
        assert_eq!(rate(1000, Topology::Mesh), 6.0);
    }

    /// The report says one thing: a clean run reads OK, and no line contradicts it.
    #[test]
    fn the_report_has_one_verdict() {
        let mut r = run(&Scenario::new(2, 10, Topology::Islands, 1.0)).unwrap();
        r.disconnects
            .insert("handshake proof before hello".into(), 2);
        let text = r.to_string();
        assert!(text.starts_with("OK"), "{text}");
        // In words, not Rust's debug text (a map printed as `{"…": 2}`).
        assert!(
            text.contains("sessions dropped: 2 × handshake proof before hello"),
            "{text}"
        );
        assert!(!text.contains("{\"") && !text.contains("Some("), "{text}");
        assert!(
            !text.contains("FAILED") && !text.contains("not settled"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["verdict"], r.verdict.as_str());
    }

    #[test]
    fn same_seed_same_figures() {
        let a = run(&Scenario::new(9, 20, Topology::Islands, 1.0)).unwrap();
        let b = run(&Scenario::new(9, 20, Topology::Islands, 1.0)).unwrap();
        assert_eq!(a.to_string(), b.to_string());
    }
}
