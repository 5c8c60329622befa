//! The KISS link against real and fake TNCs: two Direwolf modems (skipped without
//! direwolf), the largest `paclen` with a payload of KISS escape bytes through Direwolf,
//! a fake KISS TCP TNC that appears late, a serial device that does not exist, and
//! `skywave kiss monitor`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skywave::lab::{skip_without_direwolf, DirewolfOpts, DirewolfPair};
use skywave::link::kiss::{max_paclen, run_kiss, KissLinkConfig, MAX_KISS_FRAME};
use skywave::link::{LinkCommand, LinkContext, LinkEvent, LinkId, LinkUrl, PeerIds};
use skywave::wire::ax25::{decode_ui, encode_ui, Callsign, BROADCAST};
use skywave::wire::kiss::{encode_data, KissDecoder};
use skywave::wire::{envelope, frag, Message};
use tokio::sync::mpsc;

const CALL_A: &str = "N0CALL-1";
const CALL_B: &str = "N0CALL-2";

struct TestLink {
    events: mpsc::Receiver<LinkEvent>,
    commands: mpsc::Sender<LinkCommand>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_link(url: &str, callsign: &str, ids: &PeerIds, id: LinkId) -> TestLink {
    let cfg = LinkUrl::parse(url)
        .ok()
        .and_then(|u| u.get::<KissLinkConfig>().cloned())
        .expect("a link URL of this transport");
    let (ev_tx, events) = mpsc::channel(256);
    let (commands, cmd_rx) = mpsc::channel(256);
    let ctx = LinkContext {
        id,
        events: ev_tx,
        commands: cmd_rx,
        peer_ids: ids.clone(),
        callsign: callsign.into(),
    };
    TestLink {
        events,
        commands,
        task: tokio::spawn(run_kiss(cfg, ctx)),
    }
}

impl TestLink {
    /// Next event matching `want`, skipping others; panics with `what` after `limit`.
    async fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut want: impl FnMut(&LinkEvent) -> bool,
    ) -> LinkEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if want(&ev) => return ev,
                Ok(Some(ev)) => eprintln!("({what}: skipping {ev:?})"),
                Ok(None) => panic!("{what}: link task ended"),
                Err(_) => panic!("{what}: nothing within {limit:?}"),
            }
        }
    }

    async fn up(&mut self, what: &str) {
        self.wait(what, Duration::from_secs(15), |e| {
            matches!(e, LinkEvent::Up { .. })
        })
        .await;
    }

    /// PeerUp from `from` then its Frame; returns (peer, bytes).
    async fn heard(&mut self, from: &str, limit: Duration) -> (u64, Vec<u8>) {
        let peer = match self
            .wait(&format!("PeerUp from {from}"), limit, |e| {
                matches!(e, LinkEvent::PeerUp { .. })
            })
            .await
        {
            LinkEvent::PeerUp {
                peer,
                remote,
                outbound,
                ..
            } => {
                assert_eq!(remote, from);
                assert!(!outbound);
                peer
            }
            _ => unreachable!(),
        };
        match self.events.recv().await {
            Some(LinkEvent::Frame { peer: p, bytes }) if p == peer => (peer, bytes),
            other => panic!("expected Frame after PeerUp, got {other:?}"),
        }
    }
}

/// A skywave ping as the core would put it on the air.
fn ping_packet(n: u64) -> Vec<u8> {
    let mut p = vec![frag::TAG_WHOLE];
    p.extend(envelope::encode(
        [0x3c, 0x9a, 0x33, 0xf0],
        1,
        &Message::Ping(n),
    ));
    p
}

/// `skywave kiss monitor URL --count N --json`, waiting until it has opened the TNC.
fn start_monitor(url: &str, count: u64) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skywave"))
        .args([
            "kiss",
            "monitor",
            url,
            "--count",
            &count.to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run skywave kiss monitor");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("monitor: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("listening on") => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("monitor did not start listening");
            }
        }
    }
}

/// The monitor's stdout once it exits on its own within `limit`.
fn monitor_output(mut child: Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                assert!(status.success(), "monitor failed: {status}; stdout {out}");
                return out;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("monitor did not exit within {limit:?}");
            }
        }
    }
}

#[test]
fn kiss_links_talk_through_two_direwolf_modems() {
    if skip_without_direwolf("kiss_links_talk_through_two_direwolf_modems") {
        return;
    }
    let mut pair = DirewolfPair::start(DirewolfOpts::default()).expect("direwolf pair starts");
    let tty = pair.pty_b().expect("socat pty for B (is socat installed?)");
    let url_a = format!("kiss+tcp://{}", pair.kiss_addr_a());
    let url_b = format!("kiss+serial://{}?baud=9600", tty.display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ids = PeerIds::default();
        let mut a = spawn_link(&url_a, CALL_A, &ids, 1);
        let mut b = spawn_link(&url_b, CALL_B, &ids, 2);
        a.up("A up").await;
        b.up("B up (tokio-serial on a pty)").await;

        let t = Instant::now();
        let hello = b"broadcast from A".to_vec();
        a.commands
            .send(LinkCommand::Broadcast {
                bytes: hello.clone(),
            })
            .await
            .expect("A alive");
        let (a_at_b, got) = b.heard(CALL_A, Duration::from_secs(20)).await;
        assert_eq!(got, hello);
        println!("broadcast A->B in {:.2} s", t.elapsed().as_secs_f64());

        let t = Instant::now();
        let reply = vec![0xC0, 0xDB, 0x00, 0xFF, 0x42]; // KISS specials survive both ways
        b.commands
            .send(LinkCommand::Send {
                peer: a_at_b,
                bytes: reply.clone(),
            })
            .await
            .expect("B alive");
        let (_, got) = a.heard(CALL_B, Duration::from_secs(20)).await;
        assert_eq!(got, reply);
        println!("directed B->A in {:.2} s", t.elapsed().as_secs_f64());
        assert!(
            pair.wait_air_idle(Duration::from_millis(500), Duration::from_secs(20)),
            "air never went quiet"
        );

        // The monitor is another KISS client on B; it shows what A puts on the air.
        let url_mon = format!("kiss+tcp://{}", pair.kiss_addr_b());
        let mon = tokio::task::spawn_blocking(move || start_monitor(&url_mon, 1))
            .await
            .expect("monitor started");
        a.commands
            .send(LinkCommand::Broadcast {
                bytes: ping_packet(42),
            })
            .await
            .expect("A alive");
        let out = tokio::task::spawn_blocking(move || monitor_output(mon, Duration::from_secs(30)))
            .await
            .expect("monitor output");
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("monitor printed '{out}': {e}"));
        assert_eq!(v["src"], CALL_A, "{v}");
        assert_eq!(v["dst"], "SKYWAV", "{v}");
        assert_eq!(v["type"], "UI", "{v}");
        assert_eq!(v["pid"], 0xF0, "{v}");
        let sky = v["skywave"].as_str().unwrap_or_default();
        assert!(sky.starts_with("ping 42"), "{v}");
        // B's link heard the same ping.
        let f = b
            .wait("ping at B", Duration::from_secs(20), |e| {
                matches!(e, LinkEvent::Frame { .. })
            })
            .await;
        assert!(matches!(f, LinkEvent::Frame { bytes, .. } if bytes == ping_packet(42)));
        a.task.abort();
        b.task.abort();
    });
    println!("air: {:?}", pair.air_stats());
}

/// The largest `paclen` skywave accepts, filled with `C0`/`DB` (every byte escaped to
/// two), goes through real Direwolf whole; a frame just past Direwolf's 2048-byte KISS
/// limit does not, which is why the cap is where it is.
#[test]
fn largest_paclen_of_escaped_bytes_crosses_direwolf_whole() {
    if skip_without_direwolf("largest_paclen_of_escaped_bytes_crosses_direwolf_whole") {
        return;
    }
    let pair = DirewolfPair::start(DirewolfOpts::default()).expect("direwolf pair starts");
    let most = max_paclen(0, 0);
    let url_a = format!("kiss+tcp://{}?paclen={most}", pair.kiss_addr_a());
    let url_b = format!("kiss+tcp://{}", pair.kiss_addr_b());
    let payload: Vec<u8> = (0..most)
        .map(|i| if i % 3 == 0 { 0xDB } else { 0xC0 })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ids = PeerIds::default();
        let mut a = spawn_link(&url_a, CALL_A, &ids, 1);
        let mut b = spawn_link(&url_b, CALL_B, &ids, 2);
        a.up("A up").await;
        b.up("B up").await;
        // The escaped KISS frame A writes is just under Direwolf's limit.
        let src: Callsign = CALL_A.parse().expect("call");
        let mut kiss = Vec::new();
        encode_data(
            0,
            &encode_ui(&src, &BROADCAST, &[], &payload).expect("encode"),
            &mut kiss,
        );
        assert!(kiss.len() <= MAX_KISS_FRAME && kiss.len() > MAX_KISS_FRAME - 4);
        let t = Instant::now();
        a.commands
            .send(LinkCommand::Broadcast {
                bytes: payload.clone(),
            })
            .await
            .expect("A alive");
        let (_, got) = b.heard(CALL_A, Duration::from_secs(60)).await;
        assert_eq!(got.len(), payload.len(), "Direwolf cut the frame");
        assert_eq!(got, payload);
        println!(
            "{most} escaped bytes A->B in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        assert!(
            pair.wait_air_idle(Duration::from_millis(500), Duration::from_secs(30)),
            "air never went quiet"
        );

        // The same, 8 bytes longer (KISS frame 2064 bytes), written by a plain KISS
        // client: Direwolf does not pass it on intact.
        let longer: Vec<u8> = payload.iter().copied().chain([0xC0; 8]).collect();
        let mut kiss = Vec::new();
        encode_data(
            0,
            &encode_ui(&"N0CALL-3".parse().expect("call"), &BROADCAST, &[], &longer)
                .expect("encode"),
            &mut kiss,
        );
        assert!(kiss.len() > MAX_KISS_FRAME);
        let addr = pair.kiss_addr_a();
        tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).expect("raw KISS client");
            c.write_all(&kiss).expect("write");
            // Keep the client open while Direwolf reads it.
            std::thread::sleep(Duration::from_secs(1));
        })
        .await
        .expect("raw client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, b.events.recv()).await {
            if let LinkEvent::Frame { bytes, .. } = ev {
                assert_ne!(bytes, longer, "a frame over 2048 KISS bytes arrived whole");
                println!("over-long frame arrived cut to {} bytes", bytes.len());
                break;
            }
        }
        a.task.abort();
        b.task.abort();
    });
}

/// A fake TNC: accepts one KISS client and hands back the socket.
fn fake_tnc(listener: &TcpListener) -> std::net::TcpStream {
    let (s, _) = listener.accept().expect("link connects to the fake TNC");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn kiss_ui(src: &str, dst: &Callsign, info: &[u8]) -> Vec<u8> {
    let src: Callsign = src.parse().expect("callsign");
    let mut out = Vec::new();
    encode_data(
        0,
        &encode_ui(&src, dst, &[], info).expect("encode"),
        &mut out,
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiss_tcp_link_retries_until_a_tnc_appears() {
    let port = support::free_port();
    let mut link = spawn_link(
        &format!("kiss+tcp://127.0.0.1:{port}?txdelay=25"),
        CALL_A,
        &PeerIds::default(),
        1,
    );
    let t0 = Instant::now();
    for attempt in 0..2 {
        match link
            .wait("Down", Duration::from_secs(10), |e| {
                matches!(e, LinkEvent::Down { .. })
            })
            .await
        {
            LinkEvent::Down { reason, .. } => {
                // "refused" while nothing listens; "lost" if a test alongside took the
                // free port for a moment (free_port cannot hold it), which is retried the
                // same way.
                assert!(
                    reason.contains(&format!("127.0.0.1:{port}"))
                        && (reason.contains("refused") || reason.contains("lost")),
                    "attempt {attempt}: {reason}"
                );
            }
            _ => unreachable!(),
        }
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "retried after the backoff"
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake TNC");
    let mut tnc = tokio::task::spawn_blocking(move || fake_tnc(&listener))
        .await
        .expect("accept");
    link.up("Up once the TNC listens").await;

    let frame = kiss_ui(CALL_B, &CALL_A.parse().expect("call"), b"from the fake TNC");
    let peer = {
        let mut w = tnc.try_clone().expect("clone");
        w.write_all(&frame).expect("write");
        let (peer, bytes) = link.heard(CALL_B, Duration::from_secs(10)).await;
        assert_eq!(bytes, b"from the fake TNC");
        peer
    };
    link.commands
        .send(LinkCommand::Send {
            peer,
            bytes: b"answer".to_vec(),
        })
        .await
        .expect("link alive");
    let frames = tokio::task::spawn_blocking(move || {
        let mut dec = KissDecoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < 2 {
            let n = tnc.read(&mut buf).expect("read from link");
            assert!(n > 0, "link closed");
            dec.push(&buf[..n]);
            while let Some(Ok(f)) = dec.next_frame() {
                got.push(f);
            }
        }
        got
    })
    .await
    .expect("frames");
    // TXDELAY 25 first (sent on every open), then the data frame from our callsign.
    assert_eq!(
        (frames[0].command, frames[0].payload.as_slice()),
        (1, &[25u8][..])
    );
    let ui = decode_ui(&frames[1].payload).expect("UI frame");
    assert_eq!(ui.src.to_string(), CALL_A);
    assert_eq!(ui.dst.to_string(), CALL_B);
    assert_eq!(ui.info, b"answer");
    link.task.abort();
}

#[tokio::test]
async fn missing_serial_device_reports_down_and_keeps_trying() {
    let mut link = spawn_link(
        "kiss+serial:///dev/does-not-exist?baud=57600",
        CALL_A,
        &PeerIds::default(),
        1,
    );
    for _ in 0..2 {
        match link
            .wait("Down", Duration::from_secs(5), |e| {
                matches!(e, LinkEvent::Down { .. })
            })
            .await
        {
            LinkEvent::Down { reason, .. } => assert!(
                reason.contains("/dev/does-not-exist") && reason.contains("57600 baud"),
                "{reason}"
            ),
            _ => unreachable!(),
        }
    }
    // Still draining commands while down.
    for _ in 0..500 {
        link.commands
            .send(LinkCommand::Broadcast { bytes: vec![1] })
            .await
            .expect("link task still running");
    }
    assert!(!link.task.is_finished());
    link.task.abort();
}

#[test]
fn monitor_prints_frames_from_a_fake_tnc() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mon = start_monitor(&format!("kiss+tcp://{addr}"), 2);
    let mut tnc = fake_tnc(&listener);
    // A bad escape is skipped by the KISS decoder and never printed.
    let mut bytes = vec![0xC0, 0x00, 0xDB, 0x01, 0xC0];
    bytes.extend(kiss_ui(CALL_B, &BROADCAST, &ping_packet(7)));
    let mut other_port = Vec::new();
    encode_data(
        1,
        &encode_ui(&CALL_B.parse().expect("call"), &BROADCAST, &[], b"port 1").expect("encode"),
        &mut other_port,
    );
    bytes.extend(other_port);
    bytes.extend(kiss_ui("N0CALL-3", &BROADCAST, b"plain \x01text"));
    tnc.write_all(&bytes).expect("write");
    let out = monitor_output(mon, Duration::from_secs(10));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("'{l}': {e}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["src"], CALL_B);
    assert!(
        lines[0]["skywave"]
            .as_str()
            .is_some_and(|s| s.starts_with("ping 7")),
        "{out}"
    );
    assert_eq!(lines[1]["src"], "N0CALL-3", "port 1 frame skipped: {out}");
    assert_eq!(lines[1]["info"], "plain .text");
    assert!(lines[1]["skywave"].is_null());
}
