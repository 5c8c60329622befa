//! Misbehaviour scores and bans through the real binary: a hostile TCP client is banned
//! after a few offences and then refused without a greeting; the ban is listed by the
//! CLI and the API, survives a restart and can be lifted; an operator's CIDR ban refuses
//! a whole subnet.

mod support;

use skywave::chain::params;
use skywave::wire::message::Message;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::hostile::{bad_pow_block, framed_to, handshake};
use support::{http, wait_for, TestNode};

/// Connect, send `bytes`, and read for up to `wait`. Returns what the node sent and
/// whether it closed the connection.
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    exchange_on(s, bytes, wait)
}

/// `exchange` on a connection that is already open (past the handshake).
fn exchange_on(mut s: TcpStream, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

/// A handshake followed by a block whose proof of work is wrong: (what the node sent,
/// whether it closed the connection).
fn bad_block_session(port: u16) -> (Vec<u8>, bool) {
    let net = params::regtest().network_id();
    let (s, node) = handshake(port, net).expect("handshake");
    let msg = framed_to(net, &node, 3, &Message::Block(bad_pow_block()));
    exchange_on(s, &msg, Duration::from_secs(10))
}

/// Refused: closed at once, and not a byte (no Hello) sent.
fn assert_refused(node: &TestNode, what: &str) {
    let (got, closed) = exchange(node.port, &[], Duration::from_secs(10));
    assert!(
        closed,
        "{what}: connection left open; log:\n{}",
        node.log_text()
    );
    assert!(got.is_empty(), "{what}: node greeted a banned peer");
}

/// Accepted: the node greets us and keeps the connection open.
fn assert_greeted(node: &TestNode, what: &str) {
    let (got, closed) = exchange(node.port, &[], Duration::from_secs(2));
    assert!(
        !got.is_empty(),
        "{what}: no Hello; log:\n{}",
        node.log_text()
    );
    assert!(!closed, "{what}: connection closed");
}

#[test]
fn hostile_peer_is_banned_refused_and_unbanned() {
    let mut a = TestNode::init_plain("a", "N0CALL-1");
    // Loopback peers are not banned automatically by default; this test is all loopback.
    let cfg_path = a.dir.join("skywave.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    assert!(cfg.contains("ban_loopback = false"), "{cfg}");
    std::fs::write(
        &cfg_path,
        cfg.replace("ban_loopback = false", "ban_loopback = true"),
    )
    .expect("write config");
    a.start(&[]);

    // Ready once its listen link is up, which follows the API by a moment.
    let ready = wait_for(Duration::from_secs(20), || {
        http(&a.api(), "GET", "/api/ready", None).filter(|(code, _)| *code == 200)
    });
    let (code, v) =
        ready.unwrap_or_else(|| http(&a.api(), "GET", "/api/ready", None).expect("ready"));
    assert_eq!((code, &v["ready"]), (200, &serde_json::json!(true)), "{v}");
    assert_greeted(&a, "before any offence");

    // Offend until banned: garbage (20 points) and invalid blocks (50), at most 10 tries.
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut tries = 0;
    while a.ban_keys().is_empty() {
        tries += 1;
        assert!(
            tries <= 10,
            "not banned after 10 offences; log:\n{}",
            a.log_text()
        );
        let (_, closed) = if tries % 2 == 1 {
            exchange(a.port, &garbage, Duration::from_secs(10))
        } else {
            bad_block_session(a.port)
        };
        assert!(closed, "offender not disconnected");
    }
    assert!(
        tries <= 4,
        "banned after {tries} offences, expected 20+50+20+50"
    );
    assert_eq!(a.ban_keys(), vec!["127.0.0.1".to_string()]);
    assert_refused(&a, "after the ban");
    assert!(a.log_text().contains("refusing banned peer"));

    // The CLI shows it, in JSON and text.
    let v: serde_json::Value =
        serde_json::from_str(&a.ok(&["ban", "list", "--json"])).expect("json");
    assert_eq!(v["bans"][0]["key"], "127.0.0.1", "{v}");
    assert!(v["bans"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("score"));
    assert!(a.ok(&["ban", "list"]).contains("127.0.0.1"));
    let peers: serde_json::Value = serde_json::from_str(&a.ok(&["peers", "--json"])).expect("json");
    assert!(peers["peers"].is_array(), "{peers}");

    // It survives a restart.
    a.stop();
    a.start(&[]);
    assert_eq!(a.ban_keys(), vec!["127.0.0.1".to_string()]);
    assert_refused(&a, "after a restart");

    // Lifted by the operator.
    a.ok(&["ban", "remove", "127.0.0.1"]);
    assert!(a.ban_keys().is_empty());
    assert_greeted(&a, "after ban remove");
    let out = a.cli(&["ban", "remove", "127.0.0.1"]);
    assert!(!out.status.success(), "removing a missing ban fails");

    // An operator's subnet ban refuses loopback, and is listed and lifted by its CIDR key.
    let out = a.cli(&["ban", "add", "127.0.0.1/8"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.0/8"));
    a.ok(&[
        "ban",
        "add",
        "127.0.0.0/8",
        "--hours",
        "2",
        "--reason",
        "lab",
    ]);
    assert_eq!(a.ban_keys(), vec!["127.0.0.0/8".to_string()]);
    assert_refused(&a, "under a CIDR ban");
    let (code, _) = a
        .call("DELETE", "/api/bans/127.0.0.0%2F8", None)
        .expect("api");
    assert_eq!(code, 200);
    let greeted = wait_for(Duration::from_secs(5), || {
        let (got, _) = exchange(a.port, &[], Duration::from_secs(1));
        (!got.is_empty()).then_some(())
    });
    assert!(greeted.is_some(), "still refused after DELETE");

    // The API refuses nonsense.
    let (code, v) = a
        .call(
            "POST",
            "/api/bans",
            Some(r#"{"key":"10.0.0.0/33","hours":1}"#),
        )
        .expect("api");
    assert_eq!(code, 400, "{v}");
    a.stop();
}
