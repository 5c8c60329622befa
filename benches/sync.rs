//! Initial sync over loopback TCP: how fast a fresh node takes a long regtest chain from
//! a node that holds it. Printed, never asserted. See docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench sync            # 20 000 empty blocks
//! cargo bench --bench sync -- 5000    # N empty blocks
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
//! Knobs: `SKYWAVE_BENCH_MSGS` sets both nodes' `peers.max_msgs_per_sec` (default 200;
//! before issue 14's fix a sync faster than that was dropped as a flood),
//! `SKYWAVE_BENCH_BIN` another `skywave` binary to run (e.g. an older build, for a before
//! and after), `SKYWAVE_BENCH_TIMEOUT` seconds for the sync (default 1800), `RUST_LOG`-style
//! `SKYWAVE_LOG` for the nodes' log (default `warn`), `SKYWAVE_BENCH_KEEP=1` keeps the
//! data directories and the nodes' logs (`bench.log`) instead of deleting them.

use skywave::chain::{params::NetworkParams, pow, Chain};
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

/// Mine `n` empty blocks into the data directory's store, as `skywave mine` does but
/// with one commit per 1 000 blocks (as a node's inputs would batch them), so that a long
/// chain is quick to set up on a slow disk.
fn mine(dir: &Path, n: u64) -> Duration {
    let cfg = Config::load(dir).expect("config");
    let params = NetworkParams::by_name(&cfg.network).expect("network");
    let store = Store::open(&dir.join(config::STORE_FILE)).expect("store");
    let mut chain = Chain::open(params, store).expect("chain");
    let to = skywave::chain::Address([7; 32]);
    let t0 = Instant::now();
    for i in 0..n {
        if i % 1000 == 0 {
            chain.store().end_input().expect("commit");
            chain.store().begin_input();
        }
        // A second apart, ending now: block times may not run more than two hours ahead
        // of the clock (here and on B), as they would at thousands of blocks a second.
        let t = now_secs().saturating_sub(n) + i;
        let mut block = chain.block_template(to, t);
        while !pow::mine(&mut block.header, 1_000_000) {}
        chain.submit_block(block, t).expect("submit");
    }
    chain.store().end_input().expect("commit");
    let took = t0.elapsed();
    assert_eq!(chain.tip().height, n);
    took
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(20_000);
    let timeout = std::env::var("SKYWAVE_BENCH_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800u64);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = Node::init(tmp.path(), "a", "N0CALL-1");
    let mut b = Node::init(tmp.path(), "b", "N0CALL-2");

    let mined = mine(&a.dir, n);
    let mine_rate = n as f64 / mined.as_secs_f64();
    println!(
        "mine:     {n} empty blocks in {:.1} s = {mine_rate:.0} blocks/s",
        mined.as_secs_f64()
    );

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
                "sync:     {n} blocks in {:.1} s = {rate:.0} blocks/s end to end ({:.2} x the mine rate)",
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
    b.stop();
    a.stop();
    if std::env::var_os("SKYWAVE_BENCH_KEEP").is_some() {
        println!("data directories and logs kept in {}", tmp.keep().display());
    }
}
