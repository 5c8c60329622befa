//! Side by side on the air: skywave and Reticulum over the same pair of real Direwolf
//! soft modems (1200 baud AFSK, half duplex), clean and lossy. See docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench radio                         # everything: 75-80 min (baseline)
//! cargo bench --bench radio -- 1k clean             # a subset
//! cargo bench --bench radio -- x10                  # skywave 1 KB clean, 10 runs, and the max
//! SKYWAVE_BENCH="4k lossy reticulum" cargo bench --bench radio
//! ```
//!
//! Words that pick a subset (any order; within a group, none means all of it):
//! `skywave` `reticulum` (or `rns`) · `1k` `4k` `16k` · `clean` `lossy` · `empty` `outbox`
//! (skywave's variants; Reticulum has one) · `xN` runs every picked case N times in a row
//! and prints each run and the max (`x10` alone means `skywave 1k clean empty x10`); each
//! run seeds the skywave nodes' RNG differently (run 1 is the same as a single run).
//!
//! The scenario: A already runs and holds the blocks; B starts cold with only the shared
//! history (4 funding blocks). B's wall time runs from B's start until B has A's tip
//! (skywave), or until B has received the whole Resource (Reticulum: path discovery, link
//! setup and a Resource of the same byte size, sent by A once B's link is up). A starts
//! `SKYWAVE_BENCH_LEAD` seconds (default 5) before B. Payloads: `1k` one block of 7 txs,
//! `4k` two blocks of 15, `16k` five blocks of 24 (about 3.4 KB each). Variants: `empty`
//! (A's outbox is empty) and `outbox` (A knew B's node id before it accepted the txs, so
//! its outbox holds one item per tx for B; then it mined the blocks). `lossy` is
//! Direwolf's `-e 1e-4` with `MODEM 1200 E` and `FIX_BITS 0` (about 1 frame in 6 lost).
//!
//! Per run: wall seconds; air seconds A→B and B→A in that window (audio played between
//! the modems); bytes each station handed to its TNC in that window (a counting KISS
//! proxy between each client and its Direwolf: AX.25 frame bytes without flags and FCS);
//! payload bytes; payload ÷ A's keyed bytes; air seconds in the `SKYWAVE_BENCH_TAIL`
//! seconds (default 5) after done. Without Direwolf, or without Reticulum (`python3 -c
//! 'import RNS'`), the affected runs print SKIPPED with the reason.
//!
//! Other knobs: `SKYWAVE_BENCH_TIMEOUT` (s per run, default 600), `SKYWAVE_BENCH_AIRLOG=1`
//! (print every transmission of every run, and every frame handed to a TNC), `RUST_LOG` (skywave's log to stderr),
//! `PYTHON`, and for Reticulum `RNS_FIXED_MTU` (default 2000 clean, 500 lossy: its best on
//! each, see `rns_mtu`), `RNS_BITRATE`, `RNS_PATH_RETRY`, `RNS_LOGLEVEL` (see
//! benches/rns_peer.py).

use skywave::chain::{params, pow, Address, Block, Chain, Hash, Transaction};
use skywave::driver::{self, DriverOptions};
use skywave::lab::{direwolf_available, AirBurst, DirewolfOpts, DirewolfPair, KissTap};
use skywave::link::{LinkCaps, LinkUrl};
use skywave::node::{Node, NodeConfig};
use skywave::store::Store;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const A_ID: [u8; 32] = [1; 32];
/// B's node id, fixed: the `outbox` variant introduces it to A beforehand.
const B_ID: [u8; 32] = [2; 32];

#[derive(Clone, Copy, PartialEq)]
enum System {
    Skywave,
    Reticulum,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Empty,
    Outbox,
    /// Reticulum's only variant.
    Resource,
}

#[derive(Clone, Copy)]
struct Payload {
    name: &'static str,
    blocks: usize,
    txs: usize,
}

const PAYLOADS: [Payload; 3] = [
    Payload {
        name: "1k",
        blocks: 1,
        txs: 7,
    },
    Payload {
        name: "4k",
        blocks: 2,
        txs: 30,
    },
    Payload {
        name: "16k",
        blocks: 5,
        txs: 120,
    },
];

const CHANNELS: [&str; 2] = ["clean", "lossy"];

fn channel_opts(channel: &str) -> DirewolfOpts {
    match channel {
        "lossy" => DirewolfOpts {
            ber: Some(1e-4),
            modem_opts: "E".into(),
            fix_bits: Some(0),
            ..DirewolfOpts::default()
        },
        _ => DirewolfOpts::default(),
    }
}

/// What the command line (or `SKYWAVE_BENCH`) picked.
struct Selection {
    systems: Vec<System>,
    payloads: Vec<Payload>,
    channels: Vec<&'static str>,
    variants: Vec<Variant>,
    repeat: usize,
}

fn select(words: &[String]) -> Result<Selection, String> {
    let (mut systems, mut payloads, mut channels, mut variants) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut repeat = 1;
    for w in words {
        match w.to_ascii_lowercase().as_str() {
            "skywave" => systems.push(System::Skywave),
            "reticulum" | "rns" => systems.push(System::Reticulum),
            "empty" => variants.push(Variant::Empty),
            "outbox" => variants.push(Variant::Outbox),
            w if CHANNELS.contains(&w) => {
                channels.push(if w == "clean" { "clean" } else { "lossy" })
            }
            w if PAYLOADS.iter().any(|p| p.name == w) => {
                payloads.extend(PAYLOADS.iter().filter(|p| p.name == w).copied())
            }
            w if w.starts_with('x') && w[1..].parse::<usize>().is_ok() => {
                repeat = w[1..].parse::<usize>().unwrap_or(1).max(1)
            }
            other => {
                return Err(format!(
                    "unknown word {other:?} (use skywave reticulum 1k 4k 16k clean lossy \
                     empty outbox xN)"
                ))
            }
        }
    }
    let nothing_else =
        systems.is_empty() && payloads.is_empty() && channels.is_empty() && variants.is_empty();
    if repeat > 1 && nothing_else {
        systems.push(System::Skywave);
        payloads.push(PAYLOADS[0]);
        channels.push("clean");
        variants.push(Variant::Empty);
    }
    if variants.contains(&Variant::Outbox) || variants.contains(&Variant::Empty) {
        // Naming a skywave variant without a system means skywave.
        if systems.is_empty() {
            systems.push(System::Skywave);
        }
    }
    if systems.is_empty() {
        systems = vec![System::Skywave, System::Reticulum];
    }
    if payloads.is_empty() {
        payloads = PAYLOADS.to_vec();
    }
    if channels.is_empty() {
        channels = CHANNELS.to_vec();
    }
    if variants.is_empty() {
        variants = vec![Variant::Empty, Variant::Outbox];
    }
    Ok(Selection {
        systems,
        payloads,
        channels,
        variants,
        repeat,
    })
}

fn env_secs(name: &str, default: f64) -> Duration {
    let v = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(default);
    Duration::from_secs_f64(v.max(0.0))
}

// ----- chains -----

/// A node; `run` varies its RNG seed (beacon jitter, nonces) between repeated runs, as
/// a real node seeds from the OS. Run 0 is the same every time.
fn node(chain: Chain, id: [u8; 32], call: &str, run: usize) -> Node {
    Node::new(
        chain,
        NodeConfig {
            node_key: ed25519_dalek::SigningKey::from_bytes(&id),
            callsign: call.into(),
            seed: u64::from(id[0]) + 1000 * run as u64,
            user_agent: "skywave-bench".into(),
            peers: Default::default(),
        },
    )
}

fn keys() -> Vec<ed25519_dalek::SigningKey> {
    (0..4u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]))
        .collect()
}

fn mine_on(chain: &Chain, to: Address, t: u64) -> Block {
    let mut b = chain.block_template(to, t);
    while !pow::mine(&mut b.header, 1_000_000) {}
    b
}

/// The shared history: 4 funding blocks, one per key, identical on A and B.
fn funded_chain() -> (Chain, u64) {
    let p = params::regtest();
    let mut chain =
        Chain::open(p.clone(), Store::open_in_memory().expect("store")).expect("chain opens");
    let mut t = p.genesis.header.time + 600;
    for k in &keys() {
        t += 1;
        let b = mine_on(&chain, skywave::keys::address(k), t);
        chain.submit_block(b, t).expect("funding block");
    }
    (chain, t)
}

/// Transaction `i` of block `b`.
fn tx(chain: &Chain, b: usize, i: usize) -> Transaction {
    let keys = keys();
    let k = &keys[i % keys.len()];
    let nonce = chain.next_nonce(&skywave::keys::address(k));
    let net = chain.params().network_id();
    Transaction::sign(net, k, Address([(b * 97 + i) as u8; 32]), 1000, 1000, nonce)
}

/// Txs per block: `txs` spread over `blocks`.
fn per_block(p: &Payload, b: usize) -> usize {
    p.txs / p.blocks + usize::from(b < p.txs % p.blocks)
}

/// Node A holding the payload's blocks, its tip, and the blocks' bytes. For
/// [`Variant::Outbox`] A first completes a handshake with B (node id [`B_ID`]) over an
/// in-process TCP-like link, so B is a known destination when the txs arrive.
fn node_a(p: &Payload, variant: Variant, run: usize) -> Result<(Node, Hash, usize, usize), String> {
    let (chain, mut t) = funded_chain();
    let miner = skywave::keys::address(&keys()[0]);
    let mut bytes = 0;
    if variant != Variant::Outbox {
        let mut chain = chain;
        for b in 0..p.blocks {
            for i in 0..per_block(p, b) {
                let tx = tx(&chain, b, i);
                chain.submit_tx(tx, t).map_err(|e| format!("tx: {e}"))?;
            }
            t += 1;
            let block = mine_on(&chain, miner, t);
            bytes += block.encoded_len();
            chain
                .submit_block(block, t)
                .map_err(|e| format!("block: {e}"))?;
        }
        let tip = chain.tip().hash;
        return Ok((node(chain, A_ID, "N0CALL-1", run), tip, bytes, 0));
    }
    let mut a = node(chain, A_ID, "N0CALL-1", run);
    introduce(&mut a)?;
    let now = driver::now_ms();
    for b in 0..p.blocks {
        for i in 0..per_block(p, b) {
            let tx = tx(a.chain(), b, i);
            a.submit_tx(now, tx).map_err(|e| format!("tx: {e}"))?;
        }
        t += 1;
        let block = mine_on(a.chain(), miner, t);
        bytes += block.encoded_len();
        a.submit_block(now, block)
            .map_err(|e| format!("block: {e}"))?;
    }
    while a.poll_transmit().is_some() {}
    while a.poll_event().is_some() {}
    let owed = a.outbox_items().len();
    let tip = a.chain().tip().hash;
    Ok((a, tip, bytes, owed))
}

/// A meets B (node id [`B_ID`]) over a fake TCP link, through the sans-IO API only:
/// transmits are pumped into each other until quiet, then both disconnect.
fn introduce(a: &mut Node) -> Result<(), String> {
    const LINK: skywave::link::LinkId = 900;
    const PEER: skywave::link::PeerId = 900;
    let now = driver::now_ms();
    let mut b = node(funded_chain().0, B_ID, "N0CALL-2", 0);
    a.link_up(now, LINK, LinkCaps::tcp());
    b.link_up(now, LINK, LinkCaps::tcp());
    a.peer_connected(now, PEER, LINK, "127.0.0.1:9002".into(), true);
    b.peer_connected(now, PEER, LINK, "127.0.0.1:9001".into(), false);
    for _ in 0..1000 {
        let mut any = false;
        while let Some(t) = a.poll_transmit() {
            any = true;
            b.handle_frame(now, PEER, &t.bytes);
        }
        while let Some(t) = b.poll_transmit() {
            any = true;
            a.handle_frame(now, PEER, &t.bytes);
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if !any {
            break;
        }
    }
    let ready = a.peers(now).iter().any(|p| p.ready);
    a.peer_disconnected(now, PEER);
    a.link_down(LINK);
    while a.poll_transmit().is_some() {}
    while a.poll_event().is_some() {}
    if ready {
        Ok(())
    } else {
        Err("in-process handshake between A and B did not complete".into())
    }
}

// ----- runs -----

struct Row {
    system: System,
    payload: &'static str,
    channel: &'static str,
    variant: Variant,
    outcome: Result<Figures, String>,
}

struct Figures {
    wall: f64,
    air_ab: f64,
    air_ba: f64,
    keyed_a: u64,
    keyed_b: u64,
    frames_a: u64,
    frames_b: u64,
    payload: usize,
    after: f64,
    notes: Vec<String>,
}

/// What both systems' runs share: the pair, the two taps and the window.
struct Window<'a> {
    pair: &'a DirewolfPair,
    tap_a: &'a KissTap,
    tap_b: &'a KissTap,
    b_start: Instant,
    before: skywave::lab::AirStats,
}

impl Window<'_> {
    fn open<'a>(pair: &'a DirewolfPair, tap_a: &'a KissTap, tap_b: &'a KissTap) -> Window<'a> {
        Window {
            pair,
            tap_a,
            tap_b,
            b_start: Instant::now(),
            before: pair.air_stats(),
        }
    }

    /// Figures for `[b_start, done)`, then waits the tail and measures air after it.
    fn close(&self, done: Instant, payload: usize, mut notes: Vec<String>) -> Figures {
        let at_done = self.pair.air_stats();
        let ta = self.tap_a.totals(self.b_start, Some(done));
        let tb = self.tap_b.totals(self.b_start, Some(done));
        std::thread::sleep(env_secs("SKYWAVE_BENCH_TAIL", 5.0));
        let later = self.pair.air_stats();
        let log = self.pair.air_log();
        notes.extend(air_notes(&log, self.b_start, done));
        if std::env::var_os("SKYWAVE_BENCH_AIRLOG").is_some() {
            for b in &log {
                notes.push(format!(
                    "air {:>7.2} s {} {:>6.2} s{}",
                    signed_secs(b.start, self.b_start),
                    if b.from_a { "A>B" } else { "B>A" },
                    b.secs,
                    if b.collided { "  COLLIDED" } else { "" }
                ));
            }
            // Every frame each station handed to its TNC, what it carried, and where a
            // turn ended (OVER).
            for (tap, who) in [(self.tap_a, "A"), (self.tap_b, "B")] {
                for f in tap.frames().iter().filter(|f| f.to_tnc) {
                    let tag = f.info_tag.unwrap_or(0);
                    notes.push(format!(
                        "tnc  {:>6.2} s {who} {:>5} B {}{}",
                        signed_secs(f.at, self.b_start),
                        f.len,
                        f.info_kind.unwrap_or("?"),
                        match (tag & 0x80 != 0, tag & 0x40 != 0) {
                            (true, true) => "  OVER|MORE",
                            (true, false) => "  OVER",
                            _ => "",
                        }
                    ));
                }
            }
        }
        Figures {
            wall: done.duration_since(self.b_start).as_secs_f64(),
            air_ab: at_done.a_to_b.air_seconds - self.before.a_to_b.air_seconds,
            air_ba: at_done.b_to_a.air_seconds - self.before.b_to_a.air_seconds,
            keyed_a: ta.bytes_to_tnc,
            keyed_b: tb.bytes_to_tnc,
            frames_a: ta.frames_to_tnc,
            frames_b: tb.frames_to_tnc,
            payload,
            after: (later.a_to_b.air_seconds - at_done.a_to_b.air_seconds)
                + (later.b_to_a.air_seconds - at_done.b_to_a.air_seconds),
            notes,
        }
    }
}

fn signed_secs(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        t.duration_since(origin).as_secs_f64()
    } else {
        -origin.duration_since(t).as_secs_f64()
    }
}

/// Collisions and the longest silence between B's start and done, times from B's start.
fn air_notes(log: &[AirBurst], from: Instant, to: Instant) -> Vec<String> {
    let mut bursts: Vec<&AirBurst> = log
        .iter()
        .filter(|b| b.start + Duration::from_secs_f64(b.secs) > from && b.start < to)
        .collect();
    bursts.sort_by_key(|b| b.start);
    let mut notes = Vec::new();
    let collided: Vec<String> = bursts
        .iter()
        .filter(|b| b.collided)
        .map(|b| {
            format!(
                "{} {:.1}s",
                if b.from_a { "A" } else { "B" },
                signed_secs(b.start, from)
            )
        })
        .collect();
    if !collided.is_empty() {
        notes.push(format!("collided: {}", collided.join(", ")));
    }
    let mut last_end = from;
    let mut gap = (0.0, 0.0);
    for b in &bursts {
        if b.start > last_end {
            let g = b.start.duration_since(last_end).as_secs_f64();
            if g > gap.0 {
                gap = (g, signed_secs(last_end, from));
            }
        }
        last_end = last_end.max(b.start + Duration::from_secs_f64(b.secs));
    }
    if to > last_end {
        let g = to.duration_since(last_end).as_secs_f64();
        if g > gap.0 {
            gap = (g, signed_secs(last_end, from));
        }
    }
    let (na, nb) = (
        bursts.iter().filter(|b| b.from_a).count(),
        bursts.iter().filter(|b| !b.from_a).count(),
    );
    notes.push(format!(
        "bursts A {na} B {nb}; longest silence {:.1}s from {:.1}s",
        gap.0, gap.1
    ));
    notes
}

fn start_pair(channel: &str) -> Result<(DirewolfPair, KissTap, KissTap), String> {
    let pair = DirewolfPair::start(channel_opts(channel)).map_err(|e| format!("direwolf: {e}"))?;
    let tap_a = KissTap::start(pair.kiss_addr_a()).map_err(|e| format!("tap A: {e}"))?;
    let tap_b = KissTap::start(pair.kiss_addr_b()).map_err(|e| format!("tap B: {e}"))?;
    Ok((pair, tap_a, tap_b))
}

fn run_skywave(
    p: &Payload,
    channel: &'static str,
    variant: Variant,
    run: usize,
) -> Result<Figures, String> {
    let (a, target, payload, owed) = node_a(p, variant, run)?;
    let b = node(funded_chain().0, B_ID, "N0CALL-2", run);
    let (pair, tap_a, tap_b) = start_pair(channel)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let timeout = env_secs("SKYWAVE_BENCH_TIMEOUT", 600.0);
    let lead = env_secs("SKYWAVE_BENCH_LEAD", 5.0);
    rt.block_on(async {
        let mk = |n: Node, addr: std::net::SocketAddr, call: &str| {
            let params = kiss_params(channel);
            let sep = if params.is_empty() { "" } else { "?" };
            let url = LinkUrl::parse(&format!("kiss+tcp://{addr}{sep}{params}")).expect("kiss url");
            driver::start(
                n,
                DriverOptions {
                    links: vec![url],
                    mine_to: None,
                    callsign: call.into(),
                    custom_links: Vec::new(),
                    mine_until_height: None,
                },
            )
        };
        let (sa, fa) = mk(a, tap_a.addr(), "N0CALL-1");
        tokio::spawn(fa);
        tokio::time::sleep(lead).await;
        let w = Window::open(&pair, &tap_a, &tap_b);
        let (sb, fb) = mk(b, tap_b.addr(), "N0CALL-2");
        tokio::spawn(fb);
        let done = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if sb.summary().tip == target {
                break Instant::now();
            }
            if w.b_start.elapsed() > timeout {
                driver::stop(&sa);
                driver::stop(&sb);
                return Err(format!(
                    "B not at A's tip after {} s (B height {})",
                    timeout.as_secs(),
                    sb.summary().height
                ));
            }
        };
        let mut notes = Vec::new();
        if variant == Variant::Outbox {
            notes.push(format!("A's outbox held {owed} items"));
        }
        if let Ok(Some(s)) = sa.call(|n, _| n.packet_stats(1)).await {
            if s.repaired > 0 {
                notes.push(format!("A repaired {} fragments", s.repaired));
            }
        }
        let f = tokio::task::block_in_place(|| w.close(done, payload, notes));
        driver::stop(&sa);
        driver::stop(&sb);
        Ok(f)
    })
}

/// `python3 -c 'import RNS'` works, or why not.
fn reticulum_available() -> Result<(), String> {
    let py = python();
    match Command::new(&py)
        .args(["-c", "import RNS"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(format!(
            "Reticulum is not installed for {py} (pip install rns)"
        )),
        Err(e) => Err(format!("cannot run {py}: {e}")),
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A child process killed (by its own id) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, with the time each arrived.
fn lines(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// skywave's KISS URL parameters on this channel, unless `SKYWAVE_BENCH_KISS` says: the
/// largest `paclen` (1014) on the clean channel, where Direwolf at both ends takes it and
/// a frame's 20-odd bytes of headers then cost 2 % instead of 8 %; the default 256 on the
/// lossy one, where at a bit error rate of 1e-4 a 1014-byte frame is lost more often than
/// not. (Reticulum's MTU is set per channel the same way, below.)
fn kiss_params(channel: &str) -> String {
    std::env::var("SKYWAVE_BENCH_KISS").unwrap_or_else(|_| {
        if channel == "lossy" {
            ""
        } else {
            "paclen=1014"
        }
        .to_string()
    })
}

/// Reticulum's interface MTU (`fixed_mtu`) on this channel, unless `RNS_FIXED_MTU` says.
/// Clean: 2000, the largest frame Direwolf takes whole (its KISS frames are limited to
/// 2048 bytes with escapes): a Resource then crosses in fewer, larger parts and fewer
/// windows (4 KB: 44.8 s against 50.7 s at 500). Lossy: 500, Reticulum's own MTU: at a bit
/// error rate of 1e-4 a 2000-byte frame is lost 4 times in 5 (4 KB: 460 s against 109 s).
fn rns_mtu(channel: &str) -> String {
    std::env::var("RNS_FIXED_MTU")
        .unwrap_or_else(|_| if channel == "lossy" { "500" } else { "2000" }.to_string())
}

fn rns_peer(
    role: &str,
    dir: &std::path::Path,
    kiss: std::net::SocketAddr,
    arg: &str,
    mtu: &str,
) -> Result<Proc, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/rns_peer.py");
    let log =
        std::fs::File::create(dir.join(format!("rns-{role}.log"))).map_err(|e| e.to_string())?;
    Command::new(python())
        .arg(script)
        .arg(role)
        .arg(dir.join(format!("rns-{role}")))
        .arg(kiss.to_string())
        .arg(arg)
        .env("RNS_FIXED_MTU", mtu)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map(Proc)
        .map_err(|e| format!("spawn {role}: {e}"))
}

fn run_reticulum(p: &Payload, channel: &'static str) -> Result<Figures, String> {
    // The same byte size as skywave's blocks for this payload.
    let (_, _, size, _) = node_a(p, Variant::Empty, 0)?;
    let (pair, tap_a, tap_b) = start_pair(channel)?;
    let timeout = env_secs("SKYWAVE_BENCH_TIMEOUT", 600.0);
    let lead = env_secs("SKYWAVE_BENCH_LEAD", 5.0);
    let mtu = rns_mtu(channel);
    let mut a = rns_peer("a", pair.dir(), tap_a.addr(), &size.to_string(), &mtu)?;
    let a_lines = lines(&mut a.0);
    let dest = loop {
        match a_lines.recv_timeout(Duration::from_secs(60)) {
            Ok((_, l)) if l.starts_with("DEST ") => break l[5..].trim().to_string(),
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "Reticulum A did not come up: {}",
                    std::fs::read_to_string(pair.dir().join("rns-a.log")).unwrap_or_default()
                ))
            }
        }
    };
    std::thread::sleep(lead);
    let w = Window::open(&pair, &tap_a, &tap_b);
    let mut b = rns_peer("b", pair.dir(), tap_b.addr(), &dest, &mtu)?;
    let b_lines = lines(&mut b.0);
    let mut phases = Vec::new();
    let done = loop {
        let left = timeout.saturating_sub(w.b_start.elapsed());
        match b_lines.recv_timeout(left) {
            Ok((at, l)) => {
                let ev = serde_json::from_str::<serde_json::Value>(&l).unwrap_or_default();
                let name = ev["ev"].as_str().unwrap_or("").to_string();
                if let Some(t) = ev["t"].as_f64() {
                    phases.push(format!("{name} {t:.1}s"));
                }
                if name == "done" {
                    break at;
                }
            }
            Err(_) => {
                return Err(format!(
                    "B did not receive the resource in {} s ({})",
                    timeout.as_secs(),
                    phases.join(", ")
                ))
            }
        }
    };
    let notes = vec![format!("MTU {mtu}; B: {}", phases.join(", "))];
    let f = w.close(done, size, notes);
    drop(b);
    drop(a);
    Ok(f)
}

// ----- output -----

fn label(system: System, variant: Variant) -> (&'static str, &'static str) {
    match (system, variant) {
        (System::Reticulum, _) => ("reticulum", "resource"),
        (_, Variant::Outbox) => ("skywave", "outbox"),
        _ => ("skywave", "empty"),
    }
}

fn header() {
    println!(
        "{:<9} {:<4} {:<5} {:<8} {:>7} {:>7} {:>7} {:>11} {:>11} {:>7} {:>6} {:>6}",
        "system",
        "size",
        "chan",
        "variant",
        "wall s",
        "air A>B",
        "air B>A",
        "keyed A B",
        "keyed B B",
        "payload",
        "pay/kA",
        "after"
    );
}

fn print_row(r: &Row) {
    let (sys, var) = label(r.system, r.variant);
    match &r.outcome {
        Ok(f) => {
            println!(
                "{:<9} {:<4} {:<5} {:<8} {:>7.1} {:>7.1} {:>7.1} {:>7}/{:<3} {:>7}/{:<3} {:>7} {:>5.0}% {:>5.1}s",
                sys,
                r.payload,
                r.channel,
                var,
                f.wall,
                f.air_ab,
                f.air_ba,
                f.keyed_a,
                f.frames_a,
                f.keyed_b,
                f.frames_b,
                f.payload,
                100.0 * f.payload as f64 / f.keyed_a.max(1) as f64,
                f.after
            );
            for n in &f.notes {
                println!("    {n}");
            }
        }
        Err(e) => println!(
            "{:<9} {:<4} {:<5} {:<8} {}",
            sys, r.payload, r.channel, var, e
        ),
    }
}

/// The figures skywave is to reach (docs/BENCHMARKS.md), for the summary.
fn target(payload: &str, channel: &str) -> Option<f64> {
    match (payload, channel) {
        ("1k", "clean") => Some(15.0),
        ("16k", "clean") => Some(140.0),
        ("4k", "lossy") => Some(60.0),
        _ => None,
    }
}

fn summary(rows: &[Row]) {
    println!();
    println!("side by side (wall seconds from B's start; max over repeated runs)");
    println!(
        "{:<4} {:<5} {:>13} {:>14} {:>10} {:>8}",
        "size", "chan", "skywave empty", "skywave outbox", "reticulum", "target"
    );
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !cases.contains(&(r.payload, r.channel)) {
            cases.push((r.payload, r.channel));
        }
    }
    for (payload, channel) in cases {
        let cell = |system: System, variant: Variant| {
            let walls: Vec<f64> = rows
                .iter()
                .filter(|r| {
                    r.payload == payload
                        && r.channel == channel
                        && r.system == system
                        && (system == System::Reticulum || r.variant == variant)
                })
                .map(|r| r.outcome.as_ref().map(|f| f.wall).unwrap_or(f64::INFINITY))
                .collect();
            if walls.is_empty() {
                "-".to_string()
            } else {
                let max = walls.iter().cloned().fold(0.0, f64::max);
                if max.is_finite() {
                    format!("{max:.1}")
                } else {
                    "failed".into()
                }
            }
        };
        println!(
            "{:<4} {:<5} {:>13} {:>14} {:>10} {:>8}",
            payload,
            channel,
            cell(System::Skywave, Variant::Empty),
            cell(System::Skywave, Variant::Outbox),
            cell(System::Reticulum, Variant::Resource),
            target(payload, channel)
                .map(|t| format!("<= {t:.0}"))
                .unwrap_or_default()
        );
    }
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    // `cargo bench` passes `--bench`; flags are not ours.
    let mut words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Ok(v) = std::env::var("SKYWAVE_BENCH") {
        words.extend(v.split_whitespace().map(String::from));
    }
    let sel = match select(&words) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("radio bench: {e}");
            std::process::exit(2);
        }
    };
    if !direwolf_available() {
        println!("radio bench SKIPPED: direwolf is not installed (apt-get install direwolf)");
        return;
    }
    let rns = if sel.systems.contains(&System::Reticulum) {
        reticulum_available()
    } else {
        Ok(())
    };
    println!(
        "radio bench {}: two Direwolf modems, 1200 baud AFSK, half duplex; A runs {:.0} s before B",
        date(),
        env_secs("SKYWAVE_BENCH_LEAD", 5.0).as_secs_f64()
    );
    println!(
        "keyed = bytes/frames each station handed to its TNC from B's start until done; \
         pay/kA = payload / A's keyed bytes; after = air s in the {:.0} s after done",
        env_secs("SKYWAVE_BENCH_TAIL", 5.0).as_secs_f64()
    );
    header();
    let mut rows = Vec::new();
    for &channel in &sel.channels {
        for p in &sel.payloads {
            let mut cases: Vec<(System, Variant)> = Vec::new();
            if sel.systems.contains(&System::Skywave) {
                for &v in &sel.variants {
                    cases.push((System::Skywave, v));
                }
            }
            if sel.systems.contains(&System::Reticulum) {
                cases.push((System::Reticulum, Variant::Resource));
            }
            for (system, variant) in cases {
                let mut walls = Vec::new();
                for run in 0..sel.repeat {
                    let outcome = match (system, &rns) {
                        (System::Reticulum, Err(why)) => Err(format!("SKIPPED: {why}")),
                        (System::Reticulum, Ok(())) => run_reticulum(p, channel),
                        _ => run_skywave(p, channel, variant, run),
                    };
                    let skipped = outcome.as_ref().is_err_and(|e| e.starts_with("SKIPPED"));
                    walls.push(outcome.as_ref().map(|f| f.wall).ok());
                    let row = Row {
                        system,
                        payload: p.name,
                        channel,
                        variant,
                        outcome,
                    };
                    print_row(&row);
                    rows.push(row);
                    if skipped {
                        break;
                    }
                }
                if sel.repeat > 1 {
                    let ok: Vec<f64> = walls.iter().flatten().copied().collect();
                    let max = ok.iter().cloned().fold(0.0, f64::max);
                    println!(
                        "    {} runs: {} completed, max {:.1} s, mean {:.1} s",
                        walls.len(),
                        ok.len(),
                        max,
                        ok.iter().sum::<f64>() / ok.len().max(1) as f64
                    );
                }
            }
        }
    }
    summary(&rows);
}

/// Today's date (UTC), for the table's heading.
fn date() -> String {
    driver::utc_minutes(driver::now_ms())
}
