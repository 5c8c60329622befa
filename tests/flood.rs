//! A hostile TCP client floods a node with garbage, oversized length prefixes, invalid
//! blocks and repeated handshakes while an honest peer syncs from it. The honest sync
//! completes, the flooder's address is banned after a bounded number of offences, the
//! node's memory stays bounded, and the ban survives a restart.

mod support;

use skywave::chain::params;
use skywave::wire::message::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::hostile::{bad_pow_block, framed, hello};
use support::{http, wait_for, TestNode};

/// The flooder's source address: not the honest peer's 127.0.0.1, so banning it does
/// not ban the honest peer.
const HOSTILE: &str = "127.0.0.2";

fn connect_from(src: &str, port: u16) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: SocketAddr = format!("{src}:0").parse().expect("addr");
    sock.bind(&src.into())?;
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    sock.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    Ok(s)
}

/// One hostile session: send `bytes`, read what comes back for a moment. Returns
/// whether the node greeted us (sent anything at all).
fn session(port: u16, bytes: &[u8]) -> bool {
    let Ok(mut s) = connect_from(HOSTILE, port) else {
        return false;
    };
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let mut got = 0;
    let end = Instant::now() + Duration::from_millis(800);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
    }
    got > 0
}

fn offences(net: [u8; 4]) -> Vec<Vec<u8>> {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let oversized = vec![0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3];
    let mut bad_block = framed(net, 1, &hello(net));
    bad_block.extend(framed(net, 2, &Message::Block(bad_pow_block())));
    let mut hellos = Vec::new();
    for i in 0..50 {
        hellos.extend(framed(net, i, &hello(net)));
    }
    vec![garbage, oversized, bad_block, hellos]
}

#[test]
fn a_flooder_is_banned_while_an_honest_peer_syncs_and_the_ban_survives_restart() {
    if std::net::TcpListener::bind((HOSTILE, 0)).is_err() {
        eprintln!("SKIPPED flood test: cannot bind {HOSTILE} on this machine");
        return;
    }
    let mut a = TestNode::init_plain("a", "N0CALL-1");
    let cfg_path = a.dir.join("skywave.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(
        &cfg_path,
        cfg.replace("ban_loopback = false", "ban_loopback = true"),
    )
    .expect("write config");
    a.ok(&["mine", "--blocks", "40"]);
    a.start(&[]);
    let rss_before = a.rss_kib().unwrap_or(0);

    // The flood runs in the background until the honest sync is over.
    let net = params::regtest().network_id();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let greeted_after_ban = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent, greeted_late) = (stop.clone(), sent.clone(), greeted_after_ban.clone());
        let port = a.port;
        let api = a.api();
        std::thread::spawn(move || {
            let all = offences(net);
            let mut banned_at = None;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let greeted = session(port, &all[i % all.len()]);
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                if banned_at.is_none() {
                    let banned = http(&api, "GET", "/api/bans", None)
                        .map(|(_, v)| v.to_string().contains(HOSTILE))
                        .unwrap_or(false);
                    if banned {
                        banned_at = Some(i);
                    }
                } else if greeted {
                    greeted_late.fetch_add(1, Ordering::Relaxed);
                }
            }
            banned_at
        })
    };

    let mut b = TestNode::init("b", "N0CALL-2");
    b.start(&["--link", &a.url()]);
    let synced = wait_for(Duration::from_secs(120), || {
        (b.height() == Some(40) && b.tip() == a.tip()).then_some(())
    });
    // Keep flooding a little after the sync, so the ban is exercised against a node that
    // has nothing else to do.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let banned_at = flooder.join().expect("flooder thread");
    assert!(
        synced.is_some(),
        "honest sync did not complete under the flood (B at {:?}); log:\n{}",
        b.height(),
        a.log_text()
    );
    let banned_at = banned_at.unwrap_or_else(|| {
        panic!(
            "flooder never banned after {} sessions; log:\n{}",
            sent.load(Ordering::Relaxed),
            a.log_text()
        )
    });
    assert!(
        banned_at <= 8,
        "banned only after {banned_at} hostile sessions"
    );
    assert_eq!(
        greeted_after_ban.load(Ordering::Relaxed),
        0,
        "a banned address was greeted"
    );
    assert!(
        sent.load(Ordering::Relaxed) > banned_at as u64,
        "flood continued after the ban"
    );
    assert_eq!(
        a.ban_keys(),
        vec![HOSTILE.to_string()],
        "only the flooder is banned"
    );
    let rss_after = a.rss_kib().unwrap_or(0);
    eprintln!(
        "flood: banned after {banned_at} sessions, {} sessions in all; RSS {rss_before} -> {rss_after} KiB",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Restart: the ban is still there and still refuses the flooder, not the honest peer.
    b.stop();
    a.stop();
    a.start(&[]);
    assert_eq!(a.ban_keys(), vec![HOSTILE.to_string()]);
    assert!(
        !session(a.port, &[]),
        "banned address greeted after restart"
    );
    b.start(&["--link", &a.url()]);
    let back = wait_for(Duration::from_secs(30), || {
        let (_, v) = http(&a.api(), "GET", "/api/peers", None)?;
        (v.to_string().contains("N0CALL-2")).then_some(())
    });
    assert!(
        back.is_some(),
        "honest peer not back after restart; log:\n{}",
        a.log_text()
    );
}
