//! The internet side is encrypted, the radio side never is: two real nodes sync through a
//! byte-logging proxy, and neither the tip hash nor a transaction shows in what crosses
//! it (while over `tcp+plain://` both do); a KISS link keys up plaintext; radio links
//! refuse encryption in config and on the command line.

mod support;

use skywave::chain::params;
use skywave::link::noise;
use skywave::wire::stream::StreamDecoder;
use skywave::wire::{envelope, message::Message};
use support::hostile::{framed, hello};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{http, wait_for, TestNode};

/// Bytes seen by the proxy: (towards the listening node, back from it).
type Logged = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

/// A TCP proxy on a free port to `127.0.0.1:to` that logs both directions of every
/// connection it carries.
fn logging_proxy(to: u16) -> (u16, Logged) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    let log: Logged = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into, up) in [
                (client.try_clone(), server.try_clone(), true),
                (server.try_clone(), client.try_clone(), false),
            ]
            .into_iter()
            .filter_map(|(a, b, up)| Some((a.ok()?, b.ok()?, up)))
            {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut g) = l.lock() {
                            let side = if up { &mut g.0 } else { &mut g.1 };
                            side.extend_from_slice(&buf[..n]);
                        }
                        if into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, log)
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("not hex '{s}': {e}"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// What the proxy saw while B synced 20 blocks from A and A relayed a transaction to B:
/// (bytes towards A, bytes from A, A's tip hash, the transaction's signature).
fn sync_through_proxy(plain: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut a = if plain {
        TestNode::init_plain("a", "N0CALL-1")
    } else {
        TestNode::init("a", "N0CALL-1")
    };
    let mut b = TestNode::init("b", "N0CALL-2");
    a.ok(&["mine", "--blocks", "20"]);
    a.start(&[]);
    let tip = a.tip();
    let (proxy, log) = logging_proxy(a.port);
    let scheme = if plain { "tcp+plain" } else { "tcp" };
    b.start(&["--link", &format!("{scheme}://127.0.0.1:{proxy}")]);
    let synced = wait_for(Duration::from_secs(60), || {
        (b.height() == Some(20)).then_some(())
    });
    assert!(synced.is_some(), "B did not sync; log:\n{}", b.log_text());
    assert_eq!(b.tip(), tip);

    let txid = a.ok(&[
        "tx",
        "send",
        "--to",
        &b.address(),
        "--amount",
        "500000",
        "--fee",
        "1000",
    ]);
    let relayed = wait_for(Duration::from_secs(60), || {
        http(&b.api(), "GET", &format!("/api/tx/{txid}"), None).filter(|(c, _)| *c == 200)
    });
    assert!(
        relayed.is_some(),
        "the transaction never reached B; logs:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    let (_, tx) = http(&a.api(), "GET", &format!("/api/tx/{txid}"), None).expect("tx on A");
    let sig = unhex(tx["tx"]["sig"].as_str().expect("sig hex"));
    assert_eq!(sig.len(), 64);
    b.stop();
    a.stop();
    let (up, down) = log.lock().expect("proxy log").clone();
    (up, down, unhex(&tip), sig)
}

#[test]
fn noise_hides_the_tip_and_transactions_and_plain_tcp_does_not() {
    let (up, down, tip, sig) = sync_through_proxy(false);
    // Twenty blocks crossed: there is something to search.
    assert!(
        up.len() > 500 && down.len() > 2000,
        "{} {}",
        up.len(),
        down.len()
    );
    for (dir, bytes) in [("to A", &up), ("from A", &down)] {
        assert!(
            !contains(bytes, &tip),
            "the tip hash crossed {dir} in clear"
        );
        assert!(
            !contains(bytes, &sig),
            "the transaction crossed {dir} in clear"
        );
    }

    // The same exchange over tcp+plain:// shows both: the search above can find them.
    let (_, down, tip, sig) = sync_through_proxy(true);
    assert!(contains(&down, &tip), "plain: the tip hash not found");
    assert!(contains(&down, &sig), "plain: the transaction not found");
}

/// KISS framing undone: FESC FTFEND is FEND, FESC FTFESC is FESC.
fn unkiss(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut esc = false;
    for &b in bytes {
        match (esc, b) {
            (false, 0xDB) => esc = true,
            (true, 0xDC) => {
                out.push(0xC0);
                esc = false;
            }
            (true, 0xDD) => {
                out.push(0xDB);
                esc = false;
            }
            (_, b) => {
                out.push(b);
                esc = false;
            }
        }
    }
    out
}

/// What a node keys up on a radio link is readable by anyone: its greeting carries its tip
/// hash in clear. (At the node level, `a_keyed_network_is_still_readable_by_any_listener`
/// in src/node/limits_tests.rs shows that every message decodes without any key.)
#[test]
fn a_kiss_link_keys_up_plaintext() {
    let tnc = TcpListener::bind("127.0.0.1:0").expect("bind the fake TNC");
    let tnc_port = tnc.local_addr().expect("addr").port();
    let mut n = TestNode::init_with_links(
        "r",
        "N0CALL-3",
        0,
        &[&format!("kiss+tcp://127.0.0.1:{tnc_port}")],
    );
    n.ok(&["mine", "--blocks", "3"]);
    n.start(&[]);
    let tip = unhex(&n.tip());
    let (mut s, _) = tnc.accept().expect("the link connects to the TNC");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut heard = Vec::new();
    let mut buf = [0u8; 4096];
    let found = wait_for(Duration::from_secs(90), || {
        if let Ok(k) = s.read(&mut buf) {
            heard.extend_from_slice(&buf[..k]);
        }
        contains(&unkiss(&heard), &tip).then_some(())
    });
    assert!(
        found.is_some(),
        "the tip hash never went out in clear ({} bytes keyed up); log:\n{}",
        heard.len(),
        n.log_text()
    );
}

#[test]
fn radio_links_cannot_be_configured_to_encrypt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("x");
    let out = std::process::Command::new(support::bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["init", "--network", "regtest", "--callsign", "N0CALL-4"])
        .args(["--link", "kiss+tcp://127.0.0.1:8001?encrypt=noise"])
        .output()
        .expect("run skywave");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("radio links cannot be encrypted"), "{err}");

    // Written into the config by hand: `config check` names it.
    let n = TestNode::init_with_links("y", "N0CALL-4", 0, &[]);
    let cfg = n.dir.join("skywave.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replace(
        "links = []",
        "links = [\"vara+tcp://127.0.0.1:8300?peer=N0CALL&noise=1\"]",
    );
    assert!(text.contains("noise=1"), "{text}");
    std::fs::write(&cfg, text).expect("write config");
    let out = n.cli(&["config", "check"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("radio links cannot be encrypted"), "{all}");
}

/// A stranger completes Noise with key `k` and sends the hostile `Hello` (which claims
/// the hostile key's node id). The node's proof (`Auth`) if it accepted that `Hello`;
/// `None` if it refused it (a `Reject`, or the connection closed).
fn noise_hello_as(port: u16, k: &ed25519_dalek::SigningKey) -> Option<Message> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut sess = noise::handshake(&mut s, k, true).await.expect("handshake");
        let net = params::regtest().network_id();
        let sealed = sess
            .sealer
            .seal(&framed(net, 1, &hello(net)))
            .expect("seal");
        s.write_all(&sealed).await.expect("write");
        let mut dec = StreamDecoder::new();
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                let n = s.read(&mut buf).await.ok().filter(|n| *n > 0)?;
                sess.opener.push(&buf[..n]);
                while let Some(piece) = sess.opener.next_piece() {
                    dec.push(&piece.ok()?);
                    while let Some(f) = dec.next_frame() {
                        match envelope::decode(&f.ok()?).ok()?.message {
                            m @ Message::Auth(_) => return Some(m),
                            Message::Reject(_) => return None,
                            _ => {}
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("a verdict on the Hello in time")
    })
}

/// End to end: a peer that completes Noise with key K and claims another node id V in
/// its `Hello` is refused and counted; with the key of the id it claims it is greeted.
#[test]
fn a_real_node_refuses_a_hello_whose_node_id_is_not_the_noise_key() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&[]);
    let k = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    assert!(
        noise_hello_as(a.port, &k).is_none(),
        "a Hello claiming another key's id was accepted; log:\n{}",
        a.log_text()
    );
    let counted = wait_for(Duration::from_secs(10), || {
        a.log_text()
            .contains("Noise handshake proved another key")
            .then_some(())
    });
    assert!(counted.is_some(), "log:\n{}", a.log_text());
    // The hostile helper's Hello names the key [7; 32]: with that key it is greeted.
    let own = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    assert!(
        matches!(noise_hello_as(a.port, &own), Some(Message::Auth(_))),
        "log:\n{}",
        a.log_text()
    );
}
