//! The live status page at `GET /`, loaded in headless Chromium against a real node and
//! read through the DevTools protocol while it runs: the height it shows follows the
//! chain as blocks are mined, driven by the node's event stream, and by polling while the
//! stream is refused. Keeps a screenshot under target/. Without Chromium the tests say
//! SKIPPED and pass.

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::{http_raw, wait_for, TestNode};

fn chromium() -> Option<String> {
    ["chromium", "chromium-headless-shell", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

/// Headless Chromium driven over `--remote-debugging-pipe` (commands on its fd 3,
/// answers on its fd 4, each a JSON text ended by a NUL byte), with one page attached.
struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(bin: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let (cmd_r, cmd_w) = std::io::pipe().expect("pipe");
        let (ans_r, ans_w) = std::io::pipe().expect("pipe");
        let (r, w): (OwnedFd, OwnedFd) = (cmd_r.into(), ans_w.into());
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The pipe ends are
        // first copied above fd 10 so that placing them at 3 and 4 cannot overwrite one
        // with the other; the copies are not close-on-exec, as Chromium needs them.
        unsafe {
            c.pre_exec(move || {
                let a = libc::fcntl(rfd, libc::F_DUPFD, 10);
                let b = libc::fcntl(wfd, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("chromium");
        // Our copies of Chromium's ends go, so that its exit ends the reader below.
        drop((r, w));
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ans_r = ans_r;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = ans_r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: cmd_w,
            from,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("a target").to_string();
        let s = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = s["sessionId"].as_str().expect("a session").to_string();
        // A phone's screen.
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 412, "height": 900, "deviceScaleFactor": 1, "mobile": true }),
        );
        b
    }

    /// Send a command (to the page once attached) and wait for its answer's `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self
                .from
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium ({e})"));
            if v["id"] == json!(id) {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// What the page shows now: `live` (how it follows the node), `cause` (of its last
    /// redraw), `height` and `first` (the height it showed first), `sync`, `text`.
    fn shown(&mut self) -> Value {
        let js = "(() => { const h = document.getElementById('height'); return {
            live: document.body.dataset.live || '', cause: document.body.dataset.cause || '',
            height: h ? h.textContent : '', first: h ? (h.dataset.first || '') : '',
            sync: (document.getElementById('sync') || {}).textContent || '',
            text: document.body.innerText }; })()";
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// The page's whole length as a PNG at `path`.
    fn screenshot(&mut self, path: &std::path::Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64_decode(r["data"].as_str().unwrap_or(""));
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (the screenshot's encoding); other bytes are skipped.
fn base64_decode(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes() {
        let Some(v) = ABC.iter().position(|x| *x == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The height the page shows.
fn shown_height(s: &Value) -> Option<u64> {
    s["height"].as_str()?.parse().ok()
}

/// The page shows a height above `h`.
fn higher(s: &Value, h: u64) -> bool {
    shown_height(s) > Some(h)
}

/// The page's last redraw was on an event of the node's stream (not a poll, not the
/// load of the page or the opening of the stream).
fn drawn_on_event(s: &Value) -> bool {
    s["cause"].as_str().is_some_and(|c| c.starts_with("event "))
}

/// Wait (up to a minute) until the page shows `want`.
fn wait_shown(b: &mut Browser, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let got = wait_for(Duration::from_secs(60), || {
        last = b.shown();
        want(&last).then(|| last.clone())
    });
    got.unwrap_or_else(|| panic!("the page never showed {what}; it shows {last}"))
}

#[test]
fn the_page_follows_mined_blocks_by_events() {
    let mut n = TestNode::init("a", "N0CALL-1");
    n.start(&[]);
    let api = n.api();
    // Served from the binary, with its script and style.
    let (code, html) = http_raw(&api, "GET", "/", &[("Host", &api)], None).expect("GET /");
    assert_eq!(code, 200);
    assert!(
        html.contains("/page/app.js") && html.contains("viewport"),
        "{html}"
    );
    for asset in ["/page/app.js", "/page/style.css"] {
        let (code, _) = http_raw(&api, "GET", asset, &[("Host", &api)], None).expect(asset);
        assert_eq!(code, 200, "{asset}");
    }
    let Some(bin) = chromium() else {
        println!("SKIPPED: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    // A transaction in the mempool, for the page's list (amounts with their unit).
    n.ok(&["mine", "--blocks", "1"]);
    let to = support::test_address(9);
    n.ok(&["tx", "send", "--to", &to, "--amount", "1.5"]);
    let mut b = Browser::launch(&bin);
    b.navigate(&format!("http://{api}/"));
    let before = n.height().expect("height");
    // The page draws the status first and the transactions last: wait for all of it.
    wait_shown(
        &mut b,
        "the node's height, live by events, in sync, and the amount with its unit",
        |s| {
            s["live"] == "events"
                && shown_height(s) == Some(before)
                && s["sync"] == "in sync"
                && s["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("1.50000000 SKY"))
        },
    );
    // A block mined in the running node: the page, which does not poll while its event
    // stream is open, shows it, redrawn on an event, without a reload.
    n.ok(&["mine", "--blocks", "1"]);
    let s = wait_shown(&mut b, "the new height, drawn on an event", |s| {
        higher(s, before) && drawn_on_event(s)
    });
    assert_eq!(s["live"], "events", "{s}");
    assert_eq!(s["first"], before.to_string(), "the page was reloaded: {s}");
    // On the phone's screen no column is hidden (the tables scroll sideways): a link's
    // traffic and air time, a transaction's place.
    let text = s["text"].as_str().unwrap_or("");
    for column in ["In / out", "Air time", "Where"] {
        assert!(text.contains(column), "no '{column}' on a phone: {text}");
    }
    let shot: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    b.screenshot(&shot);
    println!("screenshot: {}", shot.display());
    n.stop();
}

/// `GET /api/events` held open on a raw connection until dropped; its answer's status.
fn hold_stream(api: &str) -> (std::net::TcpStream, u16) {
    let mut s = std::net::TcpStream::connect(api).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {api}\r\n\r\n").expect("request");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    let code = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
    (s, code)
}

#[test]
fn the_page_polls_while_the_stream_is_refused_and_reconnects() {
    let Some(bin) = chromium() else {
        println!("SKIPPED: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    let mut n = TestNode::init("a", "N0CALL-1");
    n.start(&[]);
    let api = n.api();
    // Every event stream the node allows taken: the page's is refused (503).
    let held: Vec<_> = (0..16).map(|_| hold_stream(&api)).collect();
    assert!(held.iter().all(|(_, c)| *c == 200));
    assert_eq!(hold_stream(&api).1, 503, "a 17th stream");
    let mut b = Browser::launch(&bin);
    b.navigate(&format!("http://{api}/"));
    let before = n.height().expect("height");
    wait_shown(&mut b, "that it polls", |s| {
        s["live"] == "polling" && shown_height(s) == Some(before)
    });
    n.ok(&["mine", "--blocks", "1"]);
    let s = wait_shown(&mut b, "the new height by polling", |s| {
        higher(s, before) && s["cause"] == "poll"
    });
    assert_eq!(s["live"], "polling", "{s}");
    // The streams given back (the node notices when it next writes to them): the page
    // tries again and follows events.
    drop(held);
    let s = wait_for(Duration::from_secs(180), || {
        Some(b.shown()).filter(|s| s["live"] == "events")
    });
    assert!(s.is_some(), "the page never went back to events");
    n.ok(&["mine", "--blocks", "1"]);
    let s = wait_shown(&mut b, "the next height, drawn on an event", |s| {
        higher(s, before + 1) && drawn_on_event(s)
    });
    assert_eq!(s["live"], "events", "{s}");
    n.stop();
}
