//! Helpers for integration tests that run the real `skywave` binary.
#![allow(dead_code)]

pub mod hostile;
pub mod js8_emu;
pub mod kiss_tcp;
pub mod vara_emu;

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skywave"))
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    // The OS may hand the same port to two calls when nothing listens on it between them
    // (two test nodes initialised before either starts then collide): never twice here.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Minimal HTTP/1.0 request against loopback without a token; returns (status, JSON body).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let (code, body) = http_raw(addr, method, path, &[("Host", addr)], body)?;
    Some((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// HTTP/1.0 request with exactly these headers; returns (status, body text).
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A regtest address in its text form, for a key nobody holds.
pub fn test_address(byte: u8) -> String {
    skywave::chain::Address([byte; 32]).to_text("regtest")
}

/// One node's data directory and, while running, its process.
pub struct TestNode {
    pub name: String,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub port: u16,
    /// Its listen link is `tcp-listen+plain://`: [`TestNode::url`] is `tcp+plain://`.
    pub plain: bool,
}

impl TestNode {
    /// `skywave init` on a fresh directory (regtest), with a listen link.
    pub fn init(name: &str, callsign: &str) -> TestNode {
        let port = free_port();
        TestNode::init_with_links(
            name,
            callsign,
            port,
            &[&format!("tcp-listen://127.0.0.1:{port}")],
        )
    }

    /// [`TestNode::init`] with an unencrypted listen link, for tests that speak raw
    /// envelopes to the node (the hostile peer of `hostile`); nodes dial it with
    /// [`TestNode::url`], which is then `tcp+plain://`.
    pub fn init_plain(name: &str, callsign: &str) -> TestNode {
        let port = free_port();
        TestNode::init_with_links(
            name,
            callsign,
            port,
            &[&format!("tcp-listen+plain://127.0.0.1:{port}")],
        )
    }

    /// `skywave init` on a fresh directory (regtest) with exactly these links; `port` is
    /// what [`TestNode::url`] reaches.
    pub fn init_with_links(name: &str, callsign: &str, port: u16, links: &[&str]) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(name);
        let n = TestNode {
            name: name.to_string(),
            log: tmp.path().join(format!("{name}.log")),
            dir,
            _tmp: tmp,
            child: None,
            port,
            plain: links.iter().any(|l| l.starts_with("tcp-listen+plain://")),
        };
        let mut args = vec!["init", "--network", "regtest", "--callsign", callsign];
        for l in links {
            args.extend(["--link", l]);
        }
        let out = n.cli(&args);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n
    }

    /// `tcp://` URL that reaches this node (`tcp+plain://` if it listens unencrypted).
    pub fn url(&self) -> String {
        let scheme = if self.plain { "tcp+plain" } else { "tcp" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Run a CLI command on this data directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("SKYWAVE_LOG", "info")
            .output()
            .expect("run skywave")
    }

    /// Run a CLI command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{} {:?} failed: {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `skywave run` with extra arguments; waits until the API answers.
    pub fn start(&mut self, extra: &[&str]) {
        self.start_env(extra, &[]);
    }

    /// [`TestNode::start`] with extra environment variables (`SKYWAVE_TIME_SCALE` for a
    /// node on an emulator that runs the air fast).
    pub fn start_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let _ = std::fs::remove_file(self.dir.join("api.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["run", "--api", "127.0.0.1:0"])
            .args(extra)
            .env("SKYWAVE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skywave run");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(20), || {
            let addr = std::fs::read_to_string(self.dir.join("api.addr")).ok()?;
            http(addr.trim(), "GET", "/api/health", None).filter(|(c, _)| *c == 200)
        });
        assert!(
            up.is_some(),
            "{} did not start; log:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// The API address of the running node.
    pub fn api(&self) -> String {
        std::fs::read_to_string(self.dir.join("api.addr"))
            .expect("api.addr")
            .trim()
            .to_string()
    }

    /// The API token the running node wrote to its cookie file.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join(".cookie"))
            .expect("cookie file")
            .trim()
            .to_string()
    }

    /// An API request with the token, as the CLI sends it.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
        let api = self.api();
        let auth = format!("Bearer {}", self.token());
        let (code, body) = http_raw(
            &api,
            method,
            path,
            &[("Host", &api), ("Authorization", &auth)],
            body,
        )?;
        Some((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// `GET /api/status`.
    pub fn status(&self) -> Value {
        http(&self.api(), "GET", "/api/status", None)
            .map(|(_, v)| v)
            .unwrap_or(Value::Null)
    }

    /// Current height, if the API answers.
    pub fn height(&self) -> Option<u64> {
        self.status()["height"].as_u64()
    }

    /// Current tip hash.
    pub fn tip(&self) -> String {
        self.status()["tip"].as_str().unwrap_or("").to_string()
    }

    /// Balance of `addr` as this node sees it.
    pub fn balance_of(&self, addr: &str) -> Option<u64> {
        http(&self.api(), "GET", &format!("/api/accounts/{addr}"), None)?.1["balance"].as_u64()
    }

    /// Wallet address (offline command).
    pub fn address(&self) -> String {
        self.ok(&["wallet", "address"])
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "{} did not stop on SIGTERM; log:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Keys (addresses, subnets, callsigns) on the running node's ban list.
    pub fn ban_keys(&self) -> Vec<String> {
        let (code, v) = http(&self.api(), "GET", "/api/bans", None).expect("api");
        assert_eq!(code, 200, "{v}");
        v["bans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b["key"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resident memory of the running node in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Is `path` present (for skip messages)?
pub fn exists(p: &Path) -> bool {
    p.exists()
}
