//! The operator's command line against the real binary: `status --watch`, `mine` through
//! a running node, callsign checks, `--json` errors, piping into `head`, `version`,
//! `config check`, completions and man page, the store's guards and `reindex`, wallet
//! backup and restore, and a callsign ban reaching a TCP session.

mod support;

use serde_json::Value;
use skywave::chain::params;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::hostile::{framed, handshake, hello};
use support::{bin, wait_for, TestNode};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `skywave` with these arguments, on no data directory in particular.
fn sky(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run skywave")
}

#[test]
fn status_watch_redraws_as_the_chain_moves() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&[]);
    let mut watch = Command::new(bin())
        .arg("--data-dir")
        .arg(&a.dir)
        .args(["status", "--watch", "--interval", "0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn status --watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    // Frames until one shows `height {want}`; at most 100 (30 s), then give up.
    let mut frames_until = |want: u64| -> Option<usize> {
        let mut frames = 0;
        let mut frame = String::new();
        for line in lines.by_ref() {
            let line = line.ok()?;
            if line == "----" {
                frames += 1;
                if frame.contains(&format!("height {want} ")) {
                    assert!(frame.contains("in sync"), "{frame}");
                    assert!(frame.contains("tcp-listen://127.0.0.1:"), "{frame}");
                    assert!(frame.contains("callsign N0CALL-1"), "{frame}");
                    return Some(frames);
                }
                if frames > 100 {
                    return None;
                }
                frame.clear();
            } else {
                frame.push_str(&line);
                frame.push('\n');
            }
        }
        None
    };
    assert_eq!(frames_until(0), Some(1), "the first frame shows height 0");
    // The running node mines on demand (regtest), and the view follows without a restart.
    let out = a.ok(&["mine", "--blocks", "2"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(frames_until(2).is_some(), "the view never showed height 2");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn mine_uses_the_running_node_on_regtest_only() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&[]);
    let v: Value = serde_json::from_str(&a.ok(&["--json", "mine", "--blocks", "3"])).expect("json");
    assert_eq!(v["height"], 3, "{v}");
    assert_eq!(v["mined"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(a.height(), Some(3));
    // Paid to this wallet.
    let addr = a.address();
    assert!(a.balance_of(&addr).unwrap_or(0) > 0);
    // Bounded, and refused without the token.
    let (code, _) = a
        .call(
            "POST",
            "/api/mine",
            Some(r#"{"blocks": 100000, "to": "x"}"#),
        )
        .expect("api");
    assert_eq!(code, 400);
    let api = a.api();
    let body = format!(r#"{{"blocks": 1, "to": "{addr}"}}"#);
    let (code, _) = support::http(&api, "POST", "/api/mine", Some(&body)).expect("api");
    assert_eq!(code, 401, "mining without the token");
    a.stop();

    // On main there is no mining on demand.
    let mut m = TestNode::init("m", "N0CALL-1");
    let cfg = std::fs::read_to_string(m.dir.join("skywave.toml")).expect("config");
    std::fs::write(
        m.dir.join("skywave.toml"),
        cfg.replace("regtest", "main").replace("N0CALL-1", "W1AW-1"),
    )
    .expect("config");
    std::fs::remove_file(m.dir.join("chain.sqlite")).expect("rm store");
    let o = m.cli(&["reindex"]);
    assert!(o.status.success(), "{}", stderr(&o));
    m.start(&[]);
    let o = m.cli(&["mine", "--blocks", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("only on regtest"), "{}", stderr(&o));
    assert_eq!(m.height(), Some(0));
}

#[test]
fn callsigns_must_be_amateur_callsigns_and_n0call_is_refused_on_main() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (call, network) in [
        ("HELLO", "regtest"),
        ("1234", "regtest"),
        ("N0CALL-1", "main"),
    ] {
        let dir = tmp.path().join(format!("{call}-{network}"));
        let o = sky(&[
            "--data-dir",
            dir.to_str().expect("utf-8"),
            "init",
            "--network",
            network,
            "--callsign",
            call,
        ]);
        assert!(!o.status.success(), "{call} on {network} accepted");
        assert!(stderr(&o).contains(call), "{}", stderr(&o));
        assert!(!dir.exists(), "a refused init left {}", dir.display());
    }
    // A config edited by hand is checked too, by `run` and by `config check`.
    let n = TestNode::init("a", "N0CALL-1");
    let path = n.dir.join("skywave.toml");
    let cfg = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, cfg.replace("N0CALL-1", "HELLO")).expect("config");
    let o = n.cli(&["run", "--api", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("'HELLO' is not an amateur callsign"),
        "{}",
        stderr(&o)
    );
    let o = n.cli(&["config", "check"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("problem: callsign 'HELLO'"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn errors_are_json_with_json_and_a_closed_pipe_does_not_panic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("none");
    let o = sky(&[
        "--json",
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "status",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("a JSON error on stdout");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("no running node"),
        "{v}"
    );

    // A command line clap refuses is a JSON error too, with clap's exit status.
    let o = sky(&["--json", "status", "--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("a JSON usage error");
    assert!(v["error"].as_str().unwrap_or("").contains("--bogus"), "{v}");

    // `skywave ... | head -1`: the reader is gone before the first line is written.
    let n = TestNode::init("a", "N0CALL-1");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(bin())
        .arg("--data-dir")
        .arg(&n.dir)
        .args(["mine", "--blocks", "3"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(101), "exited as a panic");
    // The demo, which keeps SIGPIPE off for its sockets and FIFOs, ends quietly too.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(bin())
        .args(["demo", "--simulated-radio", "--blocks", "3"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run demo");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn version_config_check_completions_and_man_page() {
    let o = sky(&["version"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!("skywave {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains("commit ") && text.contains("target "),
        "{text}"
    );
    let v: Value = serde_json::from_str(stdout(&sky(&["--json", "version"])).trim()).expect("json");
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()), "{v}");

    let n = TestNode::init("a", "N0CALL-1");
    let o = n.cli(&["config", "check"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("OK"), "{}", stdout(&o));
    // Every problem is listed, not just the first.
    let path = n.dir.join("skywave.toml");
    let cfg = std::fs::read_to_string(&path).expect("config");
    let cfg = cfg
        .replace("api = \"127.0.0.1:", "api = \"0.0.0.0:")
        .replace("tcp-listen://", "tcp://[::1");
    std::fs::write(&path, cfg).expect("config");
    let o = n.cli(&["--json", "config", "check"]);
    assert!(!o.status.success());
    let first = stdout(&o).lines().next().unwrap_or("").to_string();
    let v: Value = serde_json::from_str(&first).expect("json");
    let problems = v["problems"].to_string();
    assert!(problems.contains("beyond loopback"), "{v}");
    assert!(problems.contains("tcp://[::1"), "{v}");

    let o = sky(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("complete -F _skywave"),
        "{}",
        stdout(&o)
    );
    let o = sky(&["manpage"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains(".TH skywave 1"), "{}", stdout(&o));
}

#[test]
fn an_empty_or_missing_store_next_to_keys_is_refused_and_a_corrupt_one_is_rebuilt() {
    let n = TestNode::init("a", "N0CALL-1");
    n.ok(&["mine", "--blocks", "3"]);
    let store = n.dir.join("chain.sqlite");
    let saved = std::fs::read(&store).expect("store");

    // Emptied (a full disk, a bad copy): refused, and left as it is.
    std::fs::write(&store, b"").expect("truncate");
    for args in [&["mine"][..], &["run", "--api", "127.0.0.1:0"][..]] {
        let o = n.cli(args);
        assert!(!o.status.success(), "{args:?} ran on an empty store");
        // The way out it names is one that works: reindex (a missing file is refused too).
        assert!(
            stderr(&o).contains("chain.sqlite is empty") && stderr(&o).contains("reindex"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::metadata(&store).expect("store").len(), 0);

    // Missing: refused as well.
    std::fs::remove_file(&store).expect("rm");
    let o = n.cli(&["mine"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("chain.sqlite is missing"),
        "{}",
        stderr(&o)
    );
    assert!(!store.exists());

    // A good store: reindex keeps every block.
    std::fs::write(&store, &saved).expect("restore");
    let v: Value = serde_json::from_str(&n.ok(&["--json", "reindex"])).expect("json");
    assert_eq!(
        (v["height"].as_u64(), v["blocks"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    let o = n.ok(&["mine"]);
    assert!(o.contains("mined block 4"), "{o}");

    // Garbage: the error names the file and the way out; reindex starts over and keeps
    // the old file.
    std::fs::write(&store, vec![0x5a; 8192]).expect("corrupt");
    let o = n.cli(&["mine"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("chain.sqlite") && e.contains("reindex"), "{e}");
    let out = n.ok(&["reindex"]);
    assert!(out.contains("up to height 0"), "{out}");
    assert!(out.contains("old store is kept"), "{out}");
    assert!(n.ok(&["mine"]).contains("mined block 1"));
}

#[test]
fn wallet_backup_restores_into_another_data_directory() {
    let a = TestNode::init("a", "N0CALL-1");
    let b = TestNode::init("b", "N0CALL-2");
    let file = a.dir.parent().expect("parent").join("wallet-backup.toml");
    let file_s = file.to_str().expect("utf-8");
    a.ok(&["wallet", "backup", file_s]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("backup")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never over an existing file.
    assert!(!a.cli(&["wallet", "backup", file_s]).status.success());

    let (addr_a, addr_b) = (a.address(), b.address());
    let o = b.cli(&["wallet", "restore", file_s]);
    assert!(!o.status.success(), "replaced a wallet without --replace");
    assert!(stderr(&o).contains(&addr_b), "{}", stderr(&o));
    assert_eq!(b.address(), addr_b);
    let out = b.ok(&["wallet", "restore", "--replace", file_s]);
    assert!(out.contains("previous wallet key is kept"), "{out}");
    assert_eq!(b.address(), addr_a);

    // A damaged backup is refused.
    let text = std::fs::read_to_string(&file).expect("backup");
    let damaged = file.with_extension("bad");
    std::fs::write(&damaged, text.replace(&addr_a, &addr_b)).expect("write");
    let o = b.cli(&[
        "wallet",
        "restore",
        "--replace",
        damaged.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
}

/// Read from `s` until it is closed, at most `wait`; whether it was.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let end = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

#[test]
fn a_callsign_ban_drops_the_station_on_tcp_at_once_and_refuses_it_after() {
    let mut a = TestNode::init_plain("a", "N0CALL-1");
    a.start(&[]);
    let net = params::regtest().network_id();
    // A station that proves its node id and greets as N0EVIL.
    let (mut s, _) = handshake(a.port, net).expect("handshake");
    // Its session is up: the node lists the station by the callsign of its Hello.
    let up = wait_for(Duration::from_secs(20), || {
        let v = a.status();
        v["peers"]
            .as_array()?
            .iter()
            .any(|p| p["callsign"] == "N0EVIL" && p["ready"] == true)
            .then_some(())
    });
    assert!(up.is_some(), "session never up; log:\n{}", a.log_text());

    a.ok(&["ban", "add", "N0EVIL", "--reason", "test"]);
    assert!(
        closed_within(&mut s, Duration::from_secs(10)),
        "the banned station's TCP session was left open; log:\n{}",
        a.log_text()
    );
    // And it is not let back in under that callsign from another address or port.
    let mut again = TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    again
        .write_all(&framed(net, 1, &hello(net)))
        .expect("hello");
    assert!(
        closed_within(&mut again, Duration::from_secs(10)),
        "the banned station was let back in"
    );
    assert!(a.log_text().contains("refusing banned station"));
    let v = a.status();
    assert!(
        !v["peers"].to_string().contains("N0EVIL"),
        "still listed: {v}"
    );
}

#[test]
fn metrics_count_misbehaviour_by_reason() {
    let mut a = TestNode::init_plain("a", "N0CALL-1");
    a.start(&[]);
    let net = params::regtest().network_id();
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    let mut bytes = framed(net, 1, &hello(net));
    bytes.extend(framed(net, 2, &hello(net)));
    s.write_all(&bytes).expect("write");
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    let line = wait_for(Duration::from_secs(10), || {
        let (_, text) =
            support::http_raw(&a.api(), "GET", "/metrics", &[("Host", &a.api())], None)?;
        text.lines()
            .find(|l| l.starts_with("skywave_misbehaviour_by_reason_total{reason=\"protocol\"}"))
            .map(String::from)
    });
    assert_eq!(
        line.as_deref(),
        Some("skywave_misbehaviour_by_reason_total{reason=\"protocol\"} 1"),
        "a second Hello is a protocol error"
    );
}

#[test]
fn outbox_destinations_are_shown_by_callsign() {
    let mut a = TestNode::init("a", "N0CALL-1");
    // B only dials.
    let mut b = TestNode::init_with_links("b", "N0CALL-2", 0, &[]);
    a.ok(&["mine", "--blocks", "2"]);
    a.start(&[]);
    b.start(&["--link", &a.url()]);
    let peer_listed = |want: bool| {
        wait_for(Duration::from_secs(30), || {
            let listed = a.status()["peers"]
                .as_array()?
                .iter()
                .any(|p| p["callsign"] == "N0CALL-2" && p["ready"] == true);
            (listed == want).then_some(())
        })
    };
    assert!(peer_listed(true).is_some(), "B never connected");
    b.stop();
    assert!(peer_listed(false).is_some(), "B's session never closed");
    // What A sends now it owes B in particular, until B is back.
    a.ok(&[
        "tx",
        "send",
        "--to",
        &support::test_address(3),
        "--amount",
        "1",
    ]);
    let (_, ob) = a.call("GET", "/api/outbox", None).expect("api");
    let items = ob["items"].as_array().cloned().unwrap_or_default();
    let for_b: Vec<&Value> = items.iter().filter(|it| it["dest"] != "any").collect();
    assert!(!for_b.is_empty(), "nothing queued for B: {ob}");
    for it in &for_b {
        assert_eq!(it["dest_name"], "N0CALL-2", "{it}");
    }
    let list = a.ok(&["outbox", "list"]);
    assert!(list.contains("N0CALL-2"), "{list}");
    let status = a.ok(&["status"]);
    assert!(
        status.contains("to N0CALL-2") || status.contains("to any peer"),
        "{status}"
    );
}

#[test]
fn api_events_stream_tells_of_new_tips() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&[]);
    let api = a.api();
    let mut s = TcpStream::connect(&api).expect("connect");
    s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
        .expect("request");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // The stream is open once the headers came.
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = |want: &str, got: &mut String| {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && !got.contains(want) {
            if let Ok(n) = s.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        got.contains(want)
    };
    assert!(read_until("text/event-stream", &mut got), "{got}");
    a.ok(&["mine", "--blocks", "1"]);
    assert!(read_until("event: tip", &mut got), "no tip event: {got}");
    assert!(read_until("\"height\":1", &mut got), "{got}");
    // Changes no node event announces are seen by the stream's own check: an outbox
    // item held by the operator.
    let id = a.ok(&[
        "tx",
        "send",
        "--to",
        &support::test_address(3),
        "--amount",
        "1",
    ]);
    assert!(read_until("event: tx", &mut got), "no tx event: {got}");
    assert!(
        read_until("event: outbox", &mut got),
        "no outbox event: {got}"
    );
    let (_, ob) = a.call("GET", "/api/outbox", None).expect("api");
    let item = ob["items"]
        .as_array()
        .and_then(|v| v.iter().find(|it| it["hash"] == id.as_str()))
        .and_then(|it| it["id"].as_u64())
        .expect("the tx's outbox item");
    got.clear();
    a.ok(&["outbox", "hold", &item.to_string()]);
    assert!(
        read_until("event: outbox", &mut got),
        "no outbox event after a hold: {got}"
    );
    a.stop();
}

/// Outbox items as `GET /api/outbox` lists them: (id, hash, state).
fn outbox_items(n: &TestNode) -> Vec<(u64, String, String)> {
    let v = n.call("GET", "/api/outbox", None).map(|r| r.1);
    v.and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|it| {
            (
                it["id"].as_u64().unwrap_or(0),
                it["hash"].as_str().unwrap_or("").to_string(),
                it["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn reindex_carries_the_outbox_and_bans_and_says_what_it_could_not() {
    let mut n = TestNode::init("a", "N0CALL-1");
    n.ok(&["mine", "--blocks", "3"]);
    n.start(&[]);
    // What the node owes: three transactions for any peer (none is linked), one held by
    // the operator; and a ban.
    let to = support::test_address(7);
    let txs: Vec<String> = (0..3)
        .map(|_| n.ok(&["tx", "send", "--to", &to, "--amount", "1"]))
        .collect();
    let before = outbox_items(&n);
    assert_eq!(before.len(), 3, "{before:?}");
    n.ok(&["outbox", "hold", &before[1].0.to_string()]);
    n.ok(&["ban", "add", "N0EVIL", "--reason", "test"]);
    let before = outbox_items(&n);
    assert_eq!(before[1].2, "held", "{before:?}");
    n.stop();

    let v: Value = serde_json::from_str(&n.ok(&["--json", "reindex"])).expect("json");
    assert_eq!(v["height"].as_u64(), Some(3), "{v}");
    assert_eq!(
        (
            v["carried"]["outbox"].as_u64(),
            v["carried"]["bans"].as_u64()
        ),
        (Some(3), Some(1)),
        "{v}"
    );
    assert_eq!(v["carried"]["problem_count"], 0, "{v}");
    assert_eq!(v["mempool"], 3, "{v}");
    n.start(&[]);
    // The same items under the same ids (the message ids peers acknowledge), in the same
    // states; the ban; the transactions in the mempool again.
    assert_eq!(outbox_items(&n), before);
    let bans = n.ok(&["ban", "list"]);
    assert!(bans.contains("N0EVIL"), "{bans}");
    let mempool = n.call("GET", "/api/mempool", None).map(|r| r.1);
    assert_eq!(mempool.map(|m| m["count"].clone()), Some(Value::from(3)));
    // New items never reuse an id, even of items gone from the table.
    n.ok(&["outbox", "drop", &before[2].0.to_string()]);
    n.stop();
    n.ok(&["reindex"]);
    n.start(&[]);
    let extra = n.ok(&["tx", "send", "--to", &to, "--amount", "2"]);
    let after = outbox_items(&n);
    let new_id = after.iter().find(|i| i.1 == extra).map(|i| i.0);
    assert!(new_id > Some(before[2].0), "{after:?} after {before:?}");
    n.stop();

    // A damaged store: block 2's body and one outbox row are unreadable. The chain stops
    // at height 1, the readable outbox items and the ban still come over, and the report
    // names what did not.
    {
        let db = rusqlite::Connection::open(n.dir.join("chain.sqlite")).expect("open");
        db.execute(
            "DELETE FROM bodies WHERE hash = (SELECT hash FROM main_chain WHERE height = 2)",
            [],
        )
        .expect("damage a block");
        db.execute(
            "UPDATE outbox SET state = 9 WHERE id = ?1",
            [before[0].0 as i64],
        )
        .expect("damage an item");
    }
    let out = n.ok(&["reindex"]);
    assert!(out.contains("up to height 1"), "{out}");
    assert!(out.contains("stopped early"), "{out}");
    assert!(
        out.contains("carried over: 2 outbox item(s), 1 ban(s)"),
        "{out}"
    );
    assert!(
        out.contains("NOT carried (1 problem(s)") && out.contains("outbox item state 9"),
        "{out}"
    );
    n.start(&[]);
    let items = outbox_items(&n);
    assert!(items.iter().all(|i| i.0 != before[0].0), "{items:?}");
    assert!(items.iter().any(|i| i.0 == before[1].0 && i.1 == txs[1]));
    assert!(n.ok(&["ban", "list"]).contains("N0EVIL"));
    n.stop();
}

#[test]
fn demo_names_its_nodes_as_their_callsigns_are_numbered() {
    let o = sky(&["demo", "--simulated-radio", "--blocks", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("node1 to node3 with callsigns N0CALL-1 to N0CALL-3"),
        "{out}"
    );
    // In a line, node K greets its neighbours: N0CALL-(K-1) and N0CALL-(K+1).
    let mut greetings = 0;
    for line in out.lines() {
        let Some((who, rest)) = line.split_once("  handshake done with N0CALL-") else {
            continue;
        };
        let k: i64 = who
            .rsplit("node")
            .next()
            .and_then(|k| k.parse().ok())
            .unwrap_or(-9);
        let j: i64 = rest.trim().parse().unwrap_or(-9);
        assert_eq!((k - j).abs(), 1, "{line}\n{out}");
        greetings += 1;
    }
    assert!(greetings >= 2, "{out}");
    assert!(out.contains("node1's miner"), "{out}");
}
