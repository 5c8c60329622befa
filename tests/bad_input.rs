//! Hostile and broken input over TCP: every case gets a clear logged error, the offender is
//! disconnected, memory stays bounded and the node keeps serving honest peers.

mod support;

use skywave::chain::{params, Address, Hash, Transaction};
use skywave::wire::envelope;
use skywave::wire::message::Message;
use skywave::wire::stream::frame;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::hostile::{bad_pow_block, framed, framed_to, handshake, hello};
use support::{wait_for, TestNode};

/// Send `bytes`, then read until the node closes the connection. Returns what it sent us.
fn send_and_expect_close(port: u16, bytes: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    read_until_close(s, bytes)
}

/// Finish a handshake as a stranger holding its key, send `msg` (tagged for the node),
/// then read until the node closes the connection.
fn send_after_handshake(port: u16, net: [u8; 4], msg: &Message) -> Vec<u8> {
    let (s, node) = handshake(port, net).expect("handshake");
    read_until_close(s, &framed_to(net, &node, 3, msg))
}

fn read_until_close(mut s: TcpStream, bytes: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::ConnectionReset {
                    return got;
                }
                panic!(
                    "node did not close the connection within {:?}: {e}",
                    start.elapsed()
                );
            }
        }
    }
}

#[test]
fn hostile_input_is_refused_and_the_node_keeps_serving() {
    let mut a = TestNode::init_plain("a", "N0CALL-1");
    a.ok(&["mine", "--blocks", "5"]);
    a.start(&[]);
    let rss0 = a.rss_kib().unwrap_or(0);
    let net = params::regtest().network_id();

    // 1. Random bytes.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    send_and_expect_close(a.port, &garbage);

    // 2. A length prefix of 4 GiB.
    send_and_expect_close(a.port, &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);

    // 3. A block with bad proof of work, after a proper handshake.
    let bad_block = bad_pow_block();
    let reply = send_after_handshake(a.port, net, &Message::Block(bad_block));
    assert!(
        !reply.is_empty(),
        "node proves itself and rejects before closing"
    );

    // 4. A transaction with a bad signature.
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let mut tx = Transaction::sign(net, &key, Address([2; 32]), 10, 1000, 0);
    tx.sig.0[0] ^= 0x55;
    send_after_handshake(a.port, net, &Message::Tx(tx));

    // 5. A handshake from another network.
    let main = params::main().network_id();
    send_and_expect_close(a.port, &framed(main, 1, &hello(main)));

    // 6. A valid envelope whose CRC was damaged.
    let mut env = envelope::encode(net, 1, &hello(net));
    let last = env.len() - 1;
    env[last] ^= 0xFF;
    send_and_expect_close(a.port, &frame(&env));

    let log = a.log_text();
    for needle in [
        "bad stream framing",
        "bad proof of work",
        "bad signature",
        "wrong network",
        "crc",
    ] {
        assert!(
            log.to_lowercase().contains(&needle.to_lowercase()),
            "log lacks '{needle}':\n{log}"
        );
    }
    let status = a.status();
    assert_eq!(status["height"], 5, "node still serves");
    assert!(
        status["misbehaviours"].as_u64().unwrap_or(0) >= 4,
        "{status}"
    );
    if let Some(rss) = a.rss_kib() {
        assert!(
            rss < rss0 + 64 * 1024,
            "memory grew from {rss0} KiB to {rss} KiB"
        );
    }

    // An honest peer still syncs.
    let mut b = TestNode::init("b", "N0CALL-2");
    b.start(&["--link", &a.url()]);
    let synced = wait_for(Duration::from_secs(15), || {
        (b.height() == Some(5)).then_some(())
    });
    assert!(
        synced.is_some(),
        "honest peer did not sync; log:\n{}",
        b.log_text()
    );
    assert_eq!(b.tip(), a.tip());
    let _ = Hash::ZERO;
}
