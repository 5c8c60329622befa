//! Initial sync over loopback TCP: how fast a fresh node takes a long regtest chain from
//! a node that holds it. Printed, never asserted. See docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench sync            # 20 000 empty blocks
//! cargo bench --bench sync -- 5000    # N empty blocks
//! cargo bench --bench sync -- txs 10000  # N blocks of 100 payments (+ 2 funding blocks)
//! cargo bench --bench sync -- relay   # 5 000 transactions posted to A, relayed to B
//! ```
//!
//! Steps: `skywave init` two regtest data directories (A and B, each with a
//! `tcp-listen://` link); mine N empty blocks into A's store with the library, as
//! `skywave mine` does but with a commit per 1 000 blocks (the local `mine` rate); start
//! `skywave run` on A and time it until its API answers (start-up of a node holding N
//! blocks); start B with `--link tcp://A`
//! and time it until its API reports height N (end-to-end sync rate, and its ratio to the
//! `mine` rate); then B's store commits per block and both nodes' misbehaviour reports
//! (from `/metrics`) and B's and A's RSS from `/proc/<pid>/status`.
//!
//! `txs`: the first block pays a funder, the second its 100 senders, then each block
//! carries one signed payment from each sender (nonces in turn), built into the block
//! directly rather than through the mempool. `relay`: A holds a funder and 200 senders
//! and B is synced to it; 25 transactions per sender (the mempool's per-sender limit),
//! signed beforehand, are posted to A's `POST /api/tx` by 4 threads while B's
//! `/api/status` is polled for its mempool count.
//!
//! Knobs: `SKYWAVE_BENCH_MSGS` sets both nodes' `peers.max_msgs_per_sec` (default 200;
//! before issue 14's fix a sync faster than that was dropped as a flood),
//! `SKYWAVE_BENCH_BIN` another `skywave` binary to run (e.g. an older build, for a before
//! and after), `SKYWAVE_BENCH_TIMEOUT` seconds for the sync (default 1800; `relay` 120),
//! `RUST_LOG`-style `SKYWAVE_LOG` for the nodes' log (default `warn`),
//! `SKYWAVE_BENCH_KEEP=1` keeps the data directories and the nodes' logs (`bench.log`) instead of deleting them.

use ed25519_dalek::SigningKey;
use skywave::chain::{merkle, params::NetworkParams, pow, Address, Chain, Transaction};
use skywave::config::{self, Config};
use skywave::store::Store;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn bin() -> PathBuf {
    std::env::var_os("SKYWAVE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skywave")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET path` over HTTP/1.0; the body of a 200 answer.
fn get_text(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then_some(())?;
    Some(body.to_string())
}

/// `GET path`; the JSON body.
fn get(addr: &str, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(addr, path)?).ok()
}

struct Node {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn init(root: &Path, name: &str, callsign: &str) -> Node {
        let dir = root.join(name);
        let port = free_port();
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(&dir)
            .args(["init", "--network", "regtest", "--callsign", callsign])
            .args(["--link", &format!("tcp-listen://127.0.0.1:{port}")])
            .output()
            .expect("run skywave init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(m) = std::env::var("SKYWAVE_BENCH_MSGS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            let mut cfg = Config::load(&dir).expect("config");
            cfg.peers.max_msgs_per_sec = m;
            cfg.save(&dir).expect("save config");
        }
        Node {
            dir,
            port,
            child: None,
        }
    }

    /// Spawn `skywave run`; returns once its API answers.
    fn start(&mut self, extra: &[&str]) -> Duration {
        let _ = std::fs::remove_file(self.dir.join(config::API_ADDR_FILE));
        let log = std::fs::File::create(self.dir.join("bench.log")).expect("log file");
        let level = std::env::var("SKYWAVE_LOG").unwrap_or_else(|_| "warn".into());
        let t0 = Instant::now();
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["run", "--api", "127.0.0.1:0"])
            .args(extra)
            .env("SKYWAVE_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skywave run");
        self.child = Some(child);
        loop {
            if self.api().and_then(|a| get(&a, "/api/health")).is_some() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "node did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn api(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(config::API_ADDR_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// An unlabelled sample of the node's `/metrics` (`skywave_` + `name`).
    fn metric(&self, name: &str) -> Option<u64> {
        let text = get_text(&self.api()?, "/metrics")?;
        let key = format!("skywave_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    }

    fn height(&self) -> Option<u64> {
        get(&self.api()?, "/api/status")?["height"].as_u64()
    }

    /// Transactions in the node's mempool (`/api/status`, not the whole `/api/mempool`).
    fn mempool(&self) -> Option<usize> {
        get(&self.api()?, "/api/status")?["mempool"]
            .as_u64()
            .map(|c| c as usize)
    }

    /// `VmRSS` and `VmHWM` in kB.
    fn rss_kb(&self) -> (u64, u64) {
        let Some(c) = &self.child else {
            return (0, 0);
        };
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(30);
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the mined blocks' transactions come from: a funder paid by the first block's
/// coinbase funds `senders` keys (100 per block), then each of `tx_blocks` blocks
/// carries one payment from each of the first 100 senders.
struct Load {
    funder: SigningKey,
    senders: Vec<SigningKey>,
    tx_blocks: u64,
}

/// What the funder gives each sender: 200 senders fit in the first block's subsidy, and
/// each can then pay `AMOUNT + FEE` in about 20 000 blocks.
const FUND: u64 = 20_000_000;
const AMOUNT: u64 = 1;
const FEE: u64 = 1_000;
/// Transactions per block in the `txs` variant (regtest's `max_block_txs`).
const PER_BLOCK: usize = 100;
/// Where payments and the coinbases after the first go.
const SINK: Address = Address([7; 32]);

fn key(i: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    seed[8] = 0x5b;
    SigningKey::from_bytes(&seed)
}

impl Load {
    fn new(senders: usize, tx_blocks: u64) -> Load {
        assert!(
            matches!(senders, 100 | 200),
            "the funder pays 100 or 200 senders"
        );
        assert!(
            tx_blocks * (AMOUNT + FEE) <= FUND,
            "at most {} blocks of transactions: the senders would run dry",
            FUND / (AMOUNT + FEE)
        );
        Load {
            funder: key(0),
            senders: (1..=senders as u64).map(key).collect(),
            tx_blocks,
        }
    }

    /// Blocks mined: the funder's coinbase, the funding blocks, the payments.
    fn blocks(&self) -> u64 {
        1 + (self.senders.len() / PER_BLOCK) as u64 + self.tx_blocks
    }

    /// The transactions of block `i` (0-based) and who its coinbase pays.
    fn block(&self, network: [u8; 4], i: u64) -> (Vec<Transaction>, Address) {
        let funding = (self.senders.len() / PER_BLOCK) as u64;
        let txs = if i == 0 {
            return (Vec::new(), Address(self.funder.verifying_key().to_bytes()));
        } else if i <= funding {
            let first = (i - 1) * PER_BLOCK as u64;
            (first..first + PER_BLOCK as u64)
                .map(|n| {
                    let to = Address(self.senders[n as usize].verifying_key().to_bytes());
                    Transaction::sign(network, &self.funder, to, FUND, FEE, n)
                })
                .collect()
        } else {
            let nonce = i - funding - 1;
            self.senders[..PER_BLOCK]
                .iter()
                .map(|k| Transaction::sign(network, k, SINK, AMOUNT, FEE, nonce))
                .collect()
        };
        (txs, SINK)
    }
}

/// Mine `n` empty blocks, or the blocks of `load`, into the data directory's store, as
/// `skywave mine` does but with one commit per 1 000 blocks (as a node's inputs would
/// batch them), so that a long chain is quick to set up on a slow disk. Returns the
/// height mined and the time it took.
fn mine(dir: &Path, n: u64, load: Option<&Load>) -> (u64, Duration) {
    let cfg = Config::load(dir).expect("config");
    let params = NetworkParams::by_name(&cfg.network).expect("network");
    let network = params.network_id();
    let store = Store::open(&dir.join(config::STORE_FILE)).expect("store");
    let mut chain = Chain::open(params, store).expect("chain");
    let n = load.map_or(n, Load::blocks);
    let t0 = Instant::now();
    for i in 0..n {
        if i % 1000 == 0 {
            chain.store().end_input().expect("commit");
            chain.store().begin_input();
        }
        // A second apart, ending now: block times may not run more than two hours ahead
        // of the clock (here and on B), as they would at thousands of blocks a second.
        let t = now_secs().saturating_sub(n) + i;
        let (txs, to) = load.map_or((Vec::new(), SINK), |l| l.block(network, i));
        let mut block = chain.block_template(to, t);
        let fees: u64 = txs.iter().map(|t| t.fee).sum();
        block.coinbase.amount += fees;
        block.txs = txs;
        block.header.merkle_root = merkle::root(&block.leaf_ids());
        while !pow::mine(&mut block.header, 1_000_000) {}
        if let Err(e) = chain.submit_block(block, t) {
            panic!("block {} refused: {e}", i + 1);
        }
    }
    chain.store().end_input().expect("commit");
    let took = t0.elapsed();
    assert_eq!(chain.tip().height, n);
    (n, took)
}

/// Time B, started against A, until it reports height `n`; print the rates, B's commits
/// per block, both nodes' misbehaviour reports and RSS.
fn sync(a: &mut Node, b: &mut Node, n: u64, what: &str, mine_rate: f64, timeout: u64) {
    let start_a = a.start(&[]);
    assert_eq!(a.height(), Some(n), "A does not hold the chain");
    let (a_rss, _) = a.rss_kb();
    println!(
        "start-up: a node holding {n} blocks answers its API in {:.2} s (RSS {} MB)",
        start_a.as_secs_f64(),
        a_rss / 1024
    );

    let start_b = b.start(&["--link", &format!("tcp://127.0.0.1:{}", a.port)]);
    let (b_idle, _) = b.rss_kb();
    println!(
        "B started in {:.2} s, RSS {} MB",
        start_b.as_secs_f64(),
        b_idle / 1024
    );
    let commits0 = b.metric("store_commits_total").unwrap_or(0);
    // From B's spawn: its start-up is part of an end-to-end sync.
    let t0 = Instant::now() - start_b;
    let mut next_report = Duration::from_secs(10);
    let mut last = (Duration::ZERO, 0u64);
    let synced = loop {
        let h = b.height().unwrap_or(0);
        let el = t0.elapsed();
        if h >= n {
            break Some(el);
        }
        if el >= next_report {
            let rate = (h - last.1) as f64 / (el - last.0).as_secs_f64();
            println!(
                "  {:>5.0} s: height {h:>7} ({rate:.0} blocks/s over the last interval)",
                el.as_secs_f64()
            );
            last = (el, h);
            next_report += Duration::from_secs(10);
        }
        if el > Duration::from_secs(timeout) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let commits = b.metric("store_commits_total").map(|c| c - commits0.min(c));
    let misbehaviour = (
        b.metric("misbehaviour_total"),
        a.metric("misbehaviour_total"),
    );
    let (b_rss, b_hwm) = b.rss_kb();
    let (a_rss, a_hwm) = a.rss_kb();
    match synced {
        Some(el) => {
            let rate = n as f64 / el.as_secs_f64();
            println!(
                "sync:     {n} {what} in {:.1} s = {rate:.0} blocks/s end to end ({:.2} x the mine rate)",
                el.as_secs_f64(),
                rate / mine_rate
            );
        }
        None => println!(
            "sync:     not done after {timeout} s (height {:?})",
            b.height()
        ),
    }
    match commits {
        Some(c) => println!(
            "store:    B made {c} commits ({:.3} per block; one WAL fsync each)",
            c as f64 / n as f64
        ),
        None => println!("store:    B reports no commit count (an older build)"),
    }
    println!(
        "peers:    misbehaviour reports: B {:?}, A {:?} (a disconnect each)",
        misbehaviour.0, misbehaviour.1
    );
    println!(
        "RSS:      synced node B {} MB (peak {} MB); serving node A {} MB (peak {} MB)",
        b_rss / 1024,
        b_hwm / 1024,
        a_rss / 1024,
        a_hwm / 1024
    );
}

/// `POST /api/tx` with `body`: `Ok` on 200, else the status line and body.
fn post_tx(addr: &str, token: &str, body: &str) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /api/tx HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    match out.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(out),
    }
}

/// Submitting threads: HTTP/1.0 requests one after the other on each.
const SUBMITTERS: usize = 4;

/// Transaction relay: B synced to A's funding blocks; every sender's whole allowance of
/// pending transactions (the mempool's per-sender limit) signed beforehand and posted
/// to A's `POST /api/tx` by `SUBMITTERS` threads, while B's `/api/status` is polled for
/// its mempool count.
fn relay(a: &mut Node, b: &mut Node, timeout: u64) {
    let load = Load::new(200, 0);
    let (n, _) = mine(&a.dir, 0, Some(&load));
    a.start(&[]);
    b.start(&["--link", &format!("tcp://127.0.0.1:{}", a.port)]);
    let t = Instant::now();
    while b.height() != Some(n) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "B did not sync A's {n} funding blocks"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = Config::load(&a.dir).expect("config");
    let params = NetworkParams::by_name(&cfg.network).expect("network");
    let per_sender = skywave::chain::MempoolLimits::default().max_per_sender as u64;
    let (network, name) = (params.network_id(), params.name);
    // Each thread its own senders, nonces in order per sender.
    let mut bodies: Vec<Vec<String>> = vec![Vec::new(); SUBMITTERS];
    for nonce in 0..per_sender {
        for (i, k) in load.senders.iter().enumerate() {
            let tx = Transaction::sign(network, k, SINK, AMOUNT, FEE, nonce);
            let body = serde_json::json!({
                "from": tx.from.to_text(name), "to": tx.to.to_text(name),
                "amount": tx.amount, "fee": tx.fee, "nonce": tx.nonce, "sig": tx.sig,
            });
            bodies[i % SUBMITTERS].push(body.to_string());
        }
    }
    let total: usize = bodies.iter().map(Vec::len).sum();
    let api = a.api().expect("A's API address");
    let token = std::fs::read_to_string(a.dir.join(".cookie")).expect("A's API cookie");
    let token = token.trim().to_string();
    println!("relay:    {total} signed transactions from {} senders, posted to A by {SUBMITTERS} threads", load.senders.len());

    let t0 = Instant::now();
    let workers: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let (api, token) = (api.clone(), token.clone());
            std::thread::spawn(move || {
                let mut refused = Vec::new();
                for body in &bodies {
                    if let Err(e) = post_tx(&api, &token, body) {
                        refused.push(e);
                    }
                }
                (bodies.len() - refused.len(), refused, t0.elapsed())
            })
        })
        .collect();
    let mut b_at_done = None;
    let mut b_count = 0;
    let mut next_report = Duration::from_secs(5);
    let b_time = loop {
        let count = b.mempool().unwrap_or(0);
        b_count = b_count.max(count);
        if b_at_done.is_none() && workers.iter().all(|w| w.is_finished()) {
            b_at_done = Some(b_count);
        }
        if b_count >= total {
            break Some(t0.elapsed());
        }
        let el = t0.elapsed();
        if el >= next_report {
            println!(
                "  {:>5.0} s: mempool of A {:?}, of B {b_count}",
                el.as_secs_f64(),
                a.mempool()
            );
            next_report += Duration::from_secs(5);
        }
        if el > Duration::from_secs(timeout) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut accepted = 0;
    let mut last = Duration::ZERO;
    let mut refused = Vec::new();
    for w in workers {
        let (ok, r, el) = w.join().expect("a submitting thread panicked");
        accepted += ok;
        last = last.max(el);
        refused.extend(r);
    }
    println!(
        "accepted: {accepted} of {total} at A in {:.2} s = {:.0} tx/s",
        last.as_secs_f64(),
        accepted as f64 / last.as_secs_f64()
    );
    if let Some(first) = refused.first() {
        println!("refused:  {} (the first: {first:?})", refused.len());
    }
    println!(
        "A's mempool {:?}; B's mempool {b_at_done:?} when the last post was answered",
        a.mempool()
    );
    match b_time {
        Some(el) => println!(
            "relayed:  all {total} in B's mempool {:.2} s after the first post = {:.0} tx/s",
            el.as_secs_f64(),
            total as f64 / el.as_secs_f64()
        ),
        None => println!("relayed:  B holds {b_count} of {total} after {timeout} s",),
    }
    println!(
        "peers:    misbehaviour reports: B {:?}, A {:?} (a disconnect each)",
        b.metric("misbehaviour_total"),
        a.metric("misbehaviour_total")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let word = |w: &str| args.iter().any(|a| a == w);
    let n: Option<u64> = args.iter().find_map(|a| a.replace('_', "").parse().ok());
    let timeout = std::env::var("SKYWAVE_BENCH_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if word("relay") { 120 } else { 1800u64 });
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = Node::init(tmp.path(), "a", "N0CALL-1");
    let mut b = Node::init(tmp.path(), "b", "N0CALL-2");

    if word("relay") {
        relay(&mut a, &mut b, timeout);
    } else {
        let load = word("txs").then(|| Load::new(PER_BLOCK, n.unwrap_or(10_000)));
        let (n, mined) = mine(&a.dir, n.unwrap_or(20_000), load.as_ref());
        let mine_rate = n as f64 / mined.as_secs_f64();
        let what = match &load {
            Some(l) => format!(
                "blocks ({} of {PER_BLOCK} payments, {} funding)",
                l.tx_blocks,
                n - l.tx_blocks
            ),
            None => "empty blocks".to_string(),
        };
        println!(
            "mine:     {n} {what} in {:.1} s = {mine_rate:.0} blocks/s",
            mined.as_secs_f64()
        );
        sync(&mut a, &mut b, n, "blocks", mine_rate, timeout);
    }
    b.stop();
    a.stop();
    if std::env::var_os("SKYWAVE_BENCH_KEEP").is_some() {
        println!("data directories and logs kept in {}", tmp.keep().display());
    }
}
