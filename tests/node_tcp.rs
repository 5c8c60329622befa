//! Two real `skywave run` processes on loopback: sync, transactions, forks, restarts.

mod support;

use std::time::Duration;
use support::{wait_for, TestNode};

fn wait_height(n: &TestNode, h: u64, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        n.height().filter(|&x| x >= h).map(|_| ())
    })
    .is_some()
}

fn wait_confirmed(n: &TestNode, txid: &str, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        let (_, v) = support::http(&n.api(), "GET", &format!("/api/tx/{txid}"), None)?;
        (v["status"] == "confirmed").then_some(())
    })
    .is_some()
}

#[test]
fn empty_node_syncs_over_tcp_and_transactions_are_mined_on_both() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    let mined = a.ok(&["mine", "--blocks", "20"]);
    assert_eq!(mined.lines().count(), 20, "{mined}");

    a.start(&[]);
    assert_eq!(a.height(), Some(20));
    let started = std::time::Instant::now();
    b.start(&["--link", &a.url()]);
    assert!(
        wait_height(&b, 20, 15),
        "B did not sync; log:\n{}",
        b.log_text()
    );
    assert_eq!(b.tip(), a.tip(), "B is on a different tip");
    eprintln!("B synced 20 blocks in {:?}", started.elapsed());
    let status = b.status();
    assert_eq!(status["network"], "regtest");
    assert_eq!(status["peers"].as_array().map(|p| p.len()), Some(1));
    assert!(status["links"][0]["url"]
        .as_str()
        .unwrap_or("")
        .starts_with("tcp-listen://"));

    // A now mines continuously; B's link redials after A's restart.
    a.stop();
    a.start(&["--mine"]);
    let a_addr = a.address();
    let b_addr = b.address();

    // Fund B from A, then B sends part of it back.
    let tx1 = a.ok(&[
        "tx", "send", "--to", &b_addr, "--amount", "500000", "--fee", "1000",
    ]);
    assert_eq!(tx1.len(), 64, "tx send prints the id: {tx1}");
    assert!(
        wait_confirmed(&a, &tx1, 30),
        "tx1 not mined; log:\n{}",
        a.log_text()
    );
    assert!(
        wait_confirmed(&b, &tx1, 30),
        "tx1 not on B; log:\n{}",
        b.log_text()
    );
    assert_eq!(
        b.ok(&["wallet", "balance"])
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        vec!["0.00500000", "SKY"]
    );

    let tx2 = b.ok(&[
        "tx", "send", "--to", &a_addr, "--amount", "120000", "--fee", "2000",
    ]);
    assert!(
        wait_confirmed(&a, &tx2, 30),
        "tx2 (sent on B) not mined by A; logs:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(wait_confirmed(&b, &tx2, 30));
    let expect = 500_000 - 120_000 - 2_000;
    assert_eq!(
        a.balance_of(&b_addr),
        Some(expect),
        "A's view of B's balance"
    );
    assert_eq!(
        b.balance_of(&b_addr),
        Some(expect),
        "B's view of its balance"
    );
    let json: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "wallet", "balance"])).expect("json balance");
    assert_eq!(json["balance"].as_u64(), Some(expect));

    // `mine` never touches a store a running node owns: on regtest it asks the node.
    let before = a.height().expect("height");
    let out = a.cli(&["mine", "--blocks", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (A mines by itself too: at least one block more.)
    assert!(a.height().is_some_and(|h| h > before));
}

#[test]
fn nodes_that_forked_converge_on_most_work_and_displaced_txs_return_to_mempool() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    let b_addr = b.address();

    // Common history: 3 blocks mined by A, synced to B.
    a.ok(&["mine", "--blocks", "3"]);
    a.start(&[]);
    b.start(&["--link", &a.url()]);
    assert!(
        wait_height(&b, 3, 15),
        "B did not sync; log:\n{}",
        b.log_text()
    );
    b.stop();
    // Apart, A accepts a transaction paying B (funded by the common history).
    let txid = a.ok(&[
        "tx", "send", "--to", &b_addr, "--amount", "777", "--fee", "1500",
    ]);
    a.stop();

    // Apart: A mines 5 more (with the tx), B mines 8 more.
    a.ok(&["mine", "--blocks", "5"]);
    b.ok(&["mine", "--blocks", "8"]);
    a.start(&[]);
    let (_, tx) = support::http(&a.api(), "GET", &format!("/api/tx/{txid}"), None).unwrap();
    assert_eq!(tx["status"], "confirmed", "A mined the tx on its branch");
    assert_eq!(a.height(), Some(8));
    a.stop();

    // Together again: both follow B's heavier chain (3 + 8 blocks).
    b.start(&[]);
    let b_tip = b.tip();
    a.start(&["--link", &b.url()]);
    assert!(
        wait_height(&a, 11, 20),
        "A did not reorg; log:\n{}",
        a.log_text()
    );
    assert_eq!(a.tip(), b_tip);
    assert_eq!(b.tip(), b_tip, "B must keep its own heavier chain");
    assert!(a.log_text().contains("reorganised"), "A logs the reorg");
    // The displaced transaction is back in A's mempool (and relayed to B's).
    let (_, tx) = support::http(&a.api(), "GET", &format!("/api/tx/{txid}"), None).unwrap();
    assert_eq!(
        tx["status"], "mempool",
        "displaced tx back in A's mempool: {tx}"
    );
    let in_b = wait_for(Duration::from_secs(10), || {
        let (_, m) = support::http(&b.api(), "GET", "/api/mempool", None)?;
        m["txs"]
            .as_array()?
            .iter()
            .any(|t| t["id"] == txid.as_str())
            .then_some(())
    });
    assert!(in_b.is_some(), "displaced tx relayed to B");
}

#[test]
fn a_node_killed_with_sigkill_restarts_with_its_chain() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&["--mine"]);
    assert!(
        wait_height(&a, 3, 20),
        "no blocks mined; log:\n{}",
        a.log_text()
    );
    let txid = a.ok(&[
        "tx",
        "send",
        "--to",
        &support::test_address(0xab),
        "--amount",
        "5",
        "--fee",
        "1000",
    ]);
    let h = a.height().unwrap();
    let (_, blk) = support::http(&a.api(), "GET", &format!("/api/blocks/{h}"), None).unwrap();
    a.kill9();
    a.start(&[]);
    let h2 = a.height().unwrap();
    assert!(h2 >= h, "height went back from {h} to {h2}");
    let (_, blk2) = support::http(&a.api(), "GET", &format!("/api/blocks/{h}"), None).unwrap();
    assert_eq!(blk["hash"], blk2["hash"]);
    let (code, tx) = support::http(&a.api(), "GET", &format!("/api/tx/{txid}"), None).unwrap();
    assert_eq!(code, 200, "accepted tx survives SIGKILL: {tx}");
}

/// A link task that ends while the node runs (here: its listen port is taken) stops the
/// process with a non-zero status and says why, instead of leaving a node that answers
/// its API without the link. A supervisor then restarts it.
#[test]
fn a_node_whose_link_task_ends_exits_non_zero_and_says_why() {
    let n = TestNode::init("a", "N0CALL-1");
    // Someone else holds the node's listen port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", n.port)).expect("take the port");
    let mut child = std::process::Command::new(support::bin())
        .arg("--data-dir")
        .arg(&n.dir)
        .args(["run", "--api", "127.0.0.1:0"])
        .env("SKYWAVE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn skywave run");
    let status = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the node kept running without its listen link");
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(!status.success(), "exit status {status}; log:\n{err}");
    assert!(
        err.contains("tcp-listen://") && err.contains("ended unexpectedly"),
        "no clear line naming the link; log:\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("cannot listen")),
        "the final error names the cause; log:\n{err}"
    );
    assert!(
        !n.dir.join("api.addr").exists(),
        "a stopped node leaves no API address behind"
    );
}

/// A peer that asks for headers again and again (50 bytes each, 90 KB answers) and never
/// reads: the node drops it once its send queue holds `CONN_QUEUE_BYTES`, says why, and
/// keeps serving. Before the bound was in bytes, 1000 such answers all stayed queued.
#[test]
fn a_peer_that_never_reads_its_answers_is_dropped_and_the_node_carries_on() {
    use skywave::chain::params;
    use skywave::wire::message::{GetHeaders, Message};
    use std::io::Write;
    use support::hostile::{framed_to, handshake_on};

    let mut a = TestNode::init_plain("a", "N0CALL-1");
    a.ok(&["mine", "--blocks", "1000"]);
    a.start(&[]);
    let net = params::regtest().network_id();
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // A small receive window: the node's queue, not our kernel, holds what we ignore.
    let _ = sock.set_recv_buffer_size(4096);
    let dst: std::net::SocketAddr = format!("127.0.0.1:{}", a.port).parse().expect("addr");
    sock.connect_timeout(&dst.into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: std::net::TcpStream = sock.into();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let node = handshake_on(&mut s, net).expect("handshake");
    let ask = Message::GetHeaders(GetHeaders {
        locator: vec![params::regtest().genesis_hash()],
        stop: None,
        max: 1000,
    });
    let mut out = Vec::new();
    // Under the message-rate burst, so that only the byte bound can end the session.
    for i in 0..1000u64 {
        out.extend(framed_to(net, &node, i + 2, &ask));
    }
    let _ = s.write_all(&out);
    let dropped = wait_for(Duration::from_secs(60), || {
        a.log_text().contains("does not read").then_some(())
    });
    assert!(
        dropped.is_some(),
        "the silent reader was kept; log:\n{}",
        a.log_text()
    );
    // The node goes on serving: its API answers and the silent peer is gone.
    let gone = wait_for(Duration::from_secs(30), || {
        let (_, v) = support::http(&a.api(), "GET", "/api/peers", None)?;
        let list = v["peers"].as_array().or_else(|| v.as_array())?.clone();
        list.iter().all(|p| p["callsign"] != "N0EVIL").then_some(())
    });
    assert!(gone.is_some(), "the silent peer is still listed");
    assert_eq!(a.height(), Some(1000));
    drop(s);
    a.stop();
}
