//! The VARA link between two real `skywave run` processes, each on one of a pair of
//! emulated VARA modems (tests/support/vara_emu.rs): dial on start and on need, idle
//! hang-up after the buffer drained, BUSY, bit rate changes, a dead modem, a
//! DISCONNECTED that overtakes the last data; and the link task alone against the
//! emulator (failed dial, write throttle, garbage on the data port).

mod support;

use std::time::{Duration, Instant};
use support::vara_emu::{EmuOpts, VaraPair, A, B};
use support::{wait_for, TestNode};

const CALL_A: &str = "N0CALL-1";
const CALL_B: &str = "N0CALL-2";

fn wait_height(n: &TestNode, h: u64, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        n.height().filter(|&x| x >= h).map(|_| ())
    })
    .is_some()
}

/// Does `n` hold transaction `txid` (mempool or chain)?
fn has_tx(n: &TestNode, txid: &str) -> bool {
    support::http(&n.api(), "GET", &format!("/api/tx/{txid}"), None)
        .is_some_and(|(code, v)| code == 200 && v["status"].is_string())
}

/// The VARA link's status entry (the node's second link, after its tcp-listen).
fn vara_status(n: &TestNode) -> serde_json::Value {
    let s = n.status();
    s["links"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|x| x["url"].as_str().is_some_and(|u| u.starts_with("vara+tcp")))
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

fn logs(a: &TestNode, b: &TestNode, pair: &VaraPair) -> String {
    format!(
        "modem A got {:?}\nmodem B got {:?}\nA:\n{}\nB:\n{}",
        pair.log(A),
        pair.log(B),
        a.log_text(),
        b.log_text()
    )
}

/// Two nodes; B can spend A's coinbase (same wallet key), B's own old address receives.
fn nodes(blocks: u64) -> (TestNode, TestNode, String) {
    let a = TestNode::init("a", CALL_A);
    let b = TestNode::init("b", CALL_B);
    let b_addr = b.address();
    std::fs::copy(a.dir.join("wallet.key"), b.dir.join("wallet.key")).expect("copy wallet key");
    let mined = a.ok(&["mine", "--blocks", &blocks.to_string()]);
    assert_eq!(mined.lines().count() as u64, blocks, "{mined}");
    (a, b, b_addr)
}

#[test]
fn vara_sessions_on_need_with_idle_hangup_busy_bitrate_and_a_dead_modem() {
    let t0 = Instant::now();
    let pair = VaraPair::start(EmuOpts::default());
    let (mut a, mut b, b_addr) = nodes(20);
    // A only listens; B dials A. Short idle and dead-modem limits keep the test quick.
    let url_a = format!("vara+tcp://127.0.0.1:{}?idle=2&alive=3", pair.cmd_port(A));
    let url_b = format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&bw=2300&idle=2&alive=3",
        pair.cmd_port(B)
    );
    pair.set_busy(B, true);
    a.start(&["--link", &url_a]);
    b.start(&["--link", &url_b]);

    // Start-up: MYCALL, LISTEN ON, COMPRESSION OFF, BW only where configured.
    let setup_done = wait_for(Duration::from_secs(10), || {
        (pair.count(B, "BW2300") == 1 && pair.count(A, "COMPRESSION OFF") == 1).then_some(())
    });
    assert!(setup_done.is_some(), "{}", logs(&a, &b, &pair));
    // VARA HF (the default): P2P SESSION, else calls are Winlink sessions.
    let setup_done = wait_for(Duration::from_secs(10), || {
        (pair.count(A, "P2P SESSION") >= 1 && pair.count(B, "P2P SESSION") >= 1).then_some(())
    });
    assert!(setup_done.is_some(), "{}", logs(&a, &b, &pair));
    assert_eq!(
        &pair.log(B)[..5],
        [
            "MYCALL N0CALL-2",
            "LISTEN ON",
            "COMPRESSION OFF",
            "BW2300",
            "P2P SESSION"
        ]
    );
    assert_eq!(
        pair.log(A)[..4],
        [
            "MYCALL N0CALL-1",
            "LISTEN ON",
            "COMPRESSION OFF",
            "P2P SESSION"
        ]
    );
    assert_eq!(pair.count(A, "BW"), 0, "no BW without bw=");

    // The first sync is due 2 s after start, but the channel is busy: no CONNECT.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        pair.count(B, "CONNECT "),
        0,
        "dialled while BUSY: {:?}",
        pair.log(B)
    );
    pair.set_busy(B, false);

    // Sync over the session; then both sides are idle and B's blocks are A's.
    assert!(
        wait_height(&b, 20, 40),
        "B did not sync: {}",
        logs(&a, &b, &pair)
    );
    assert_eq!(b.tip(), a.tip());
    assert_eq!(pair.count(B, "CONNECT N0CALL-2 N0CALL-1"), 1);
    let log_b = pair.log(B);
    let at = log_b
        .iter()
        .position(|l| l.starts_with("CONNECT "))
        .expect("a CONNECT");
    assert_eq!(
        log_b[at - 1],
        "P2P SESSION",
        "right before the call: {log_b:?}"
    );
    let hung_up = wait_for(Duration::from_secs(20), || {
        (!pair.connected()).then_some(())
    });
    assert!(
        hung_up.is_some(),
        "no idle hang-up: {}",
        logs(&a, &b, &pair)
    );
    let disconnects: Vec<String> = pair
        .log(A)
        .into_iter()
        .chain(pair.log(B))
        .filter(|l| l.starts_with("DISCONNECT"))
        .collect();
    assert!(
        !disconnects.is_empty() && disconnects.iter().all(|l| l == "DISCONNECT buffer=0"),
        "hang-up must wait for BUFFER 0: {disconnects:?}"
    );
    assert_eq!(pair.count(A, "ABORT") + pair.count(B, "ABORT"), 0);
    assert_eq!(pair.sessions(), 1);

    // Nothing to say: no new dial (the periodic sync is 30 min away).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(pair.count(B, "CONNECT "), 1, "dialled without need");

    // A transaction submitted at B waits in its outbox: B dials on need, A gets it.
    let txid = b.ok(&[
        "tx", "send", "--to", &b_addr, "--amount", "1000", "--fee", "1000",
    ]);
    let sent = Instant::now();
    let got = wait_for(Duration::from_secs(30), || has_tx(&a, &txid).then_some(()));
    assert!(got.is_some(), "tx never reached A: {}", logs(&a, &b, &pair));
    eprintln!("tx B->A on a new session in {:?}", sent.elapsed());
    assert_eq!(pair.count(B, "CONNECT "), 2, "{:?}", pair.log(B));
    assert_eq!(pair.sessions(), 2);
    let hung_up = wait_for(Duration::from_secs(20), || {
        (!pair.connected()).then_some(())
    });
    assert!(
        hung_up.is_some(),
        "no second hang-up: {}",
        logs(&a, &b, &pair)
    );

    // A BITRATE line reaches the core: /api/status shows the new rate on both.
    assert_eq!(vara_status(&b)["caps"]["bitrate_bps"], 9600);
    pair.set_bitrate(2750);
    for n in [&a, &b] {
        let seen = wait_for(Duration::from_secs(10), || {
            (vara_status(n)["caps"]["bitrate_bps"] == 2750).then_some(())
        });
        assert!(seen.is_some(), "{}: {}", n.name, vara_status(n));
    }

    // A modem that stops talking is dead: the link goes down, then comes back.
    let mycalls = pair.count(B, "MYCALL");
    pair.set_dead(B, true);
    let down = wait_for(Duration::from_secs(15), || {
        let s = vara_status(&b);
        (s["up"] == false).then_some(s)
    });
    let down = down.unwrap_or_else(|| panic!("dead modem not noticed: {}", logs(&a, &b, &pair)));
    assert!(
        down["error"]
            .as_str()
            .is_some_and(|e| e.contains("IAMALIVE")),
        "{down}"
    );
    pair.set_dead(B, false);
    let back = wait_for(Duration::from_secs(15), || {
        (vara_status(&b)["up"] == true && pair.count(B, "MYCALL") > mycalls).then_some(())
    });
    assert!(
        back.is_some(),
        "link did not come back: {}",
        logs(&a, &b, &pair)
    );

    // Shutdown ends with ABORT.
    b.stop();
    let aborted = wait_for(Duration::from_secs(5), || {
        (pair.log(B).last().map(String::as_str) == Some("ABORT")).then_some(())
    });
    assert!(aborted.is_some(), "{:?}", pair.log(B));
    a.stop();
    eprintln!("VARA session test took {:?}", t0.elapsed());
}

#[test]
fn disconnected_before_the_last_data_loses_no_message() {
    // Data reaches the applications 800 ms after it arrived over the air, so the
    // command port's DISCONNECTED overtakes it.
    let pair = VaraPair::start(EmuOpts {
        data_lag: Some(Duration::from_millis(800)),
        ..EmuOpts::default()
    });
    let (mut a, mut b, b_addr) = nodes(5);
    let url_a = format!("vara+tcp://127.0.0.1:{}?idle=60", pair.cmd_port(A));
    let url_b = format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&idle=60",
        pair.cmd_port(B)
    );
    a.start(&["--link", &url_a]);
    b.start(&["--link", &url_b]);
    assert!(
        wait_height(&b, 5, 40),
        "B did not sync: {}",
        logs(&a, &b, &pair)
    );
    // Let the handshake traffic settle, then cut the session as soon as B has sent its
    // transaction and gone quiet for 200 ms: A hears DISCONNECTED ~600 ms before the tx.
    std::thread::sleep(Duration::from_secs(2));
    pair.cut_when_quiet(B, Duration::from_millis(200));
    let txid = b.ok(&[
        "tx", "send", "--to", &b_addr, "--amount", "1000", "--fee", "1000",
    ]);
    let cut = wait_for(Duration::from_secs(15), || {
        (!pair.connected()).then_some(())
    });
    assert!(cut.is_some(), "session not cut: {}", logs(&a, &b, &pair));
    let got = wait_for(Duration::from_secs(5), || has_tx(&a, &txid).then_some(()));
    assert!(
        got.is_some(),
        "the last message was lost: {}",
        logs(&a, &b, &pair)
    );
    // It came on the first session, not on a redial.
    assert_eq!(pair.sessions(), 1, "{}", logs(&a, &b, &pair));
    a.stop();
    b.stop();
}

#[test]
fn session_limit_hangs_up_only_after_the_buffer_drained() {
    // 4800 bit/s, A's sessions last at most 5 s: A hangs up while its modem still holds
    // sync data, so DISCONNECT must wait for BUFFER 0.
    let pair = VaraPair::start(EmuOpts {
        bitrate: 4800,
        ..EmuOpts::default()
    });
    let (mut a, mut b, _) = nodes(40);
    let url_a = format!("vara+tcp://127.0.0.1:{}?idle=60&max=5", pair.cmd_port(A));
    let url_b = format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&idle=60",
        pair.cmd_port(B)
    );
    a.start(&["--link", &url_a]);
    b.start(&["--link", &url_b]);
    let started = wait_for(Duration::from_secs(15), || {
        (pair.sessions() == 1).then_some(())
    });
    assert!(started.is_some(), "no session: {}", logs(&a, &b, &pair));
    let t = Instant::now();
    let ended = wait_for(Duration::from_secs(40), || {
        (!pair.connected()).then_some(())
    });
    assert!(
        ended.is_some(),
        "session limit ignored: {}",
        logs(&a, &b, &pair)
    );
    eprintln!(
        "session ended {:?} after it opened; A's modem buffer peaked at {} bytes",
        t.elapsed(),
        pair.max_buffer(A)
    );
    assert!(t.elapsed() >= Duration::from_secs(4), "hung up before max");
    let disc: Vec<String> = pair
        .log(A)
        .into_iter()
        .filter(|l| l.starts_with("DISCONNECT"))
        .collect();
    assert_eq!(disc, ["DISCONNECT buffer=0"], "{}", logs(&a, &b, &pair));
    assert_eq!(pair.count(A, "ABORT"), 0);
    // Data was waiting in the modem (else the check above proves nothing), within the
    // 10 s of air (6000 bytes) the link allows.
    assert!(
        (1000..=6000).contains(&pair.max_buffer(A)),
        "A's modem buffer peaked at {} bytes",
        pair.max_buffer(A)
    );
    a.stop();
    b.stop();
}

/// Lines read from a raw command-port client until one starts with `want`.
async fn expect_line(rd: &mut tokio::net::TcpStream, want: &str, seen: &mut String) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 512];
    while !seen.split('\r').any(|l| l.starts_with(want)) {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no '{want}' line; got {seen:?}"))
            .expect("read");
        assert!(n > 0, "modem closed");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_task_retries_a_failed_dial_throttles_writes_and_hangs_up_on_garbage() {
    use skywave::link::{
        vara::{run_vara, VaraLinkConfig},
        LinkCommand, LinkContext, LinkEvent, LinkUrl, PeerIds,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = VaraPair::start(EmuOpts::default());
    let cfg = LinkUrl::parse(&format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&alive=30",
        pair.cmd_port(B)
    ))
    .ok()
    .and_then(|u| u.get::<VaraLinkConfig>().cloned())
    .expect("a link URL of this transport");
    // Modem A is driven by hand: it knows its callsign but does not listen yet.
    let port_a = pair.cmd_port(A);
    let mut cmd_a = tokio::net::TcpStream::connect(("127.0.0.1", port_a))
        .await
        .expect("A command port");
    let mut data_a = tokio::net::TcpStream::connect(("127.0.0.1", port_a + 1))
        .await
        .expect("A data port");
    cmd_a
        .write_all(format!("MYCALL {CALL_A}\rLISTEN OFF\r").as_bytes())
        .await
        .expect("write");
    let (ev_tx, mut events) = tokio::sync::mpsc::channel(64);
    let (commands, cmd_rx) = tokio::sync::mpsc::channel(64);
    let ctx = LinkContext {
        id: 1,
        events: ev_tx,
        commands: cmd_rx,
        peer_ids: PeerIds::default(),
        callsign: CALL_B.into(),
    };
    let task = tokio::spawn(run_vara(cfg, ctx));

    // First dial: nobody listens, DISCONNECTED. The retry waits for the backoff.
    let first = wait_async(|| pair.count(B, "CONNECT ") == 1, 10).await;
    let mut seen = String::new();
    expect_line(&mut cmd_a, "OK", &mut seen).await;
    // The emulator gives up on the call after 1.5 s; only then may A listen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pair.sessions(), 0);
    cmd_a.write_all(b"LISTEN ON\r").await.expect("write");
    wait_async(|| pair.count(B, "CONNECT ") == 2, 15).await;
    let gap = first.elapsed();
    assert!(gap >= Duration::from_secs(5), "redialled after {gap:?}");
    let peer = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(LinkEvent::PeerUp {
                peer,
                remote,
                outbound,
                ..
            })) => {
                assert_eq!(remote, CALL_A);
                assert!(outbound);
                break peer;
            }
            Ok(Some(_)) => {}
            other => panic!("no PeerUp: {other:?}"),
        }
    };
    expect_line(
        &mut cmd_a,
        &format!("CONNECTED {CALL_B} {CALL_A}"),
        &mut seen,
    )
    .await;

    // An envelope from the node arrives framed on A's data port.
    commands
        .send(LinkCommand::Send {
            peer,
            bytes: vec![7; 40],
        })
        .await
        .expect("link alive");
    let mut got = vec![0u8; 44];
    tokio::time::timeout(Duration::from_secs(10), data_a.read_exact(&mut got))
        .await
        .expect("data in time")
        .expect("read");
    assert_eq!(&got[..4], &40u32.to_be_bytes());
    assert_eq!(&got[4..], &[7; 40][..]);

    // 40 kB queued at once: the modem (9600 bit/s) is never given more than ~10 s of
    // air, 12 000 bytes; the rest waits in the link.
    for _ in 0..4 {
        commands
            .send(LinkCommand::Send {
                peer,
                bytes: vec![9; 10_000],
            })
            .await
            .expect("link alive");
    }
    wait_async(|| pair.max_buffer(B) > 8_000, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pair.max_buffer(B) <= 12_000,
        "modem buffer reached {} bytes",
        pair.max_buffer(B)
    );

    // Garbage from A (a length prefix far beyond the limit): Garbage, ABORT, PeerDown.
    data_a.write_all(&[0xff; 8]).await.expect("write");
    let mut garbage = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(LinkEvent::Garbage { peer: p, .. })) => {
                assert_eq!(p, peer);
                garbage = true;
            }
            Ok(Some(LinkEvent::PeerDown { peer: p, .. })) => {
                assert_eq!(p, peer);
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("no PeerDown: {other:?}"),
        }
    }
    assert!(garbage, "Garbage reported before PeerDown");
    wait_async(|| pair.count(B, "ABORT") == 1, 5).await;
    assert!(!pair.connected());
    task.abort();
}

/// Poll `f` every 50 ms for up to `secs`; returns when it was first seen true.
async fn wait_async(f: impl Fn() -> bool, secs: u64) -> Instant {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "condition not met within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Instant::now()
}

/// The emulator as VARA HF: a call is a Winlink session (answered only by a gateway)
/// unless `P2P SESSION` came first, as EA5HVK's command reference says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_vara_hf_refuses_a_peer_call_made_without_p2p_session() {
    use tokio::io::AsyncWriteExt;
    let pair = VaraPair::start(EmuOpts::default());
    let mut b = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(B)))
        .await
        .expect("B command port");
    let mut a = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(A)))
        .await
        .expect("A command port");
    a.write_all(format!("MYCALL {CALL_A}\rLISTEN ON\r").as_bytes())
        .await
        .expect("write");
    b.write_all(format!("MYCALL {CALL_B}\rCONNECT {CALL_B} {CALL_A}\r").as_bytes())
        .await
        .expect("write");
    let mut seen = String::new();
    expect_line(&mut b, "DISCONNECTED", &mut seen).await;
    assert!(!seen.contains("CONNECTED "), "{seen:?}");
    assert_eq!(pair.sessions(), 0);
    b.write_all(format!("P2P SESSION\rCONNECT {CALL_B} {CALL_A}\r").as_bytes())
        .await
        .expect("write");
    expect_line(&mut b, &format!("CONNECTED {CALL_B} {CALL_A}"), &mut seen).await;
    assert_eq!(pair.sessions(), 1);
}

/// `modem=fm`: no P2P SESSION and no BW (VARA FM has neither); calls still connect,
/// and BITRATE lines in VARA FM 4.3.8's spelling (`BITRATE (9)  9567 bps TX`) set the
/// link's bit rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vara_fm_link_sends_no_hf_commands_and_reads_bitrate_with_a_direction() {
    use skywave::link::{
        vara::{run_vara, VaraLinkConfig},
        LinkContext, LinkEvent, LinkUrl, PeerIds,
    };
    use tokio::io::AsyncWriteExt;
    let pair = VaraPair::start(EmuOpts {
        hf: false,
        bw: None,
        bitrate: 4321,
        bitrate_dir: true,
        ..EmuOpts::default()
    });
    let cfg = LinkUrl::parse(&format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&modem=fm&alive=30",
        pair.cmd_port(B)
    ))
    .ok()
    .and_then(|u| u.get::<VaraLinkConfig>().cloned())
    .expect("a link URL of this transport");
    let mut cmd_a = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(A)))
        .await
        .expect("A command port");
    let _data_a = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(A) + 1))
        .await
        .expect("A data port");
    cmd_a
        .write_all(format!("MYCALL {CALL_A}\rLISTEN ON\r").as_bytes())
        .await
        .expect("write");
    let (ev_tx, mut events) = tokio::sync::mpsc::channel(64);
    let (_commands, cmd_rx) = tokio::sync::mpsc::channel(64);
    let ctx = LinkContext {
        id: 1,
        events: ev_tx,
        commands: cmd_rx,
        peer_ids: PeerIds::default(),
        callsign: CALL_B.into(),
    };
    let task = tokio::spawn(run_vara(cfg, ctx));
    let mut rate = None;
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rate.is_none() || !connected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LinkEvent::PeerUp { remote, .. })) => {
                assert_eq!(remote, CALL_A);
                connected = true;
            }
            Ok(Some(LinkEvent::Caps { caps, .. })) => rate = Some(caps.bitrate_bps),
            Ok(Some(_)) => {}
            other => panic!("no session: {other:?}; modem B got {:?}", pair.log(B)),
        }
    }
    assert_eq!(rate, Some(4321));
    assert_eq!(
        pair.log(B)[..3],
        ["MYCALL N0CALL-2", "LISTEN ON", "COMPRESSION OFF"]
    );
    assert_eq!(pair.count(B, "P2P"), 0, "{:?}", pair.log(B));
    assert_eq!(pair.count(B, "BW"), 0, "{:?}", pair.log(B));
    task.abort();
}

/// A modem that reports an absurd bit rate (`BITRATE u64::MAX`) while data waits: the
/// rate is refused (it would overflow the write throttle's sums), the link keeps
/// carrying data, and no absurd rate reaches the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_bitrate_from_the_modem_is_refused_and_the_link_carries_on() {
    use skywave::link::{
        vara::{run_vara, VaraLinkConfig},
        LinkCommand, LinkContext, LinkEvent, LinkUrl, PeerIds,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = VaraPair::start(EmuOpts::default());
    let cfg = LinkUrl::parse(&format!(
        "vara+tcp://127.0.0.1:{}?peer={CALL_A}&alive=30",
        pair.cmd_port(B)
    ))
    .ok()
    .and_then(|u| u.get::<VaraLinkConfig>().cloned())
    .expect("a link URL of this transport");
    let mut cmd_a = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(A)))
        .await
        .expect("A command port");
    let mut data_a = tokio::net::TcpStream::connect(("127.0.0.1", pair.cmd_port(A) + 1))
        .await
        .expect("A data port");
    cmd_a
        .write_all(format!("MYCALL {CALL_A}\rLISTEN ON\r").as_bytes())
        .await
        .expect("write");
    let (ev_tx, mut events) = tokio::sync::mpsc::channel(64);
    let (commands, cmd_rx) = tokio::sync::mpsc::channel(64);
    let ctx = LinkContext {
        id: 1,
        events: ev_tx,
        commands: cmd_rx,
        peer_ids: PeerIds::default(),
        callsign: CALL_B.into(),
    };
    let task = tokio::spawn(run_vara(cfg, ctx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let peer = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LinkEvent::PeerUp { peer, .. })) => break peer,
            Ok(Some(_)) => {}
            other => panic!("no session: {other:?}; modem B got {:?}", pair.log(B)),
        }
    };
    pair.set_bitrate(u64::MAX);
    // Data queued after the bad line: the throttle must still work it out.
    for _ in 0..3 {
        commands
            .send(LinkCommand::Send {
                peer,
                bytes: vec![0x5a; 200],
            })
            .await
            .expect("link task alive");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.iter().filter(|b| **b == 0x5a).count() < 600 {
        match tokio::time::timeout_at(deadline, data_a.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "data stopped after the huge BITRATE: {other:?}; task finished: {}",
                task.is_finished()
            ),
        }
    }
    assert!(!task.is_finished(), "the link task died");
    while let Ok(ev) = events.try_recv() {
        if let LinkEvent::Caps { caps, .. } = ev {
            assert!(
                caps.bitrate_bps <= skywave::link::vara::MAX_VARA_BPS,
                "absurd rate reached the core: {}",
                caps.bitrate_bps
            );
        }
    }
    task.abort();
}
