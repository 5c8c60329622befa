//! DNS seeds: a node whose config names a seed resolves it through a DNS server (a tiny
//! one in this test, answering A records on loopback), dials what it names at the
//! network's default port, and lists its address book with each address's source.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{http, wait_for, TestNode};

/// Default port of regtest: what a seed's records are dialled at.
const REGTEST_PORT: u16 = 17300;
const SEED: &str = "seed.skywave.test";

/// A DNS server answering every A question for [`SEED`] with `ip` (and no AAAA), and
/// NXDOMAIN for other names. Hand-written: a header, the question echoed, one answer.
struct TinyDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl TinyDns {
    fn start(ip: [u8; 4]) -> TinyDns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, asked2) = (stop.clone(), asked.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..n];
                if n < 17 {
                    continue;
                }
                asked2.fetch_add(1, Ordering::SeqCst);
                // The question: labels from byte 12 to the zero byte, then type and class.
                let end = 12 + q[12..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
                let mut name = Vec::new();
                let mut i = 12;
                while i + 1 < end {
                    let l = q[i] as usize;
                    name.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_string());
                    i += 1 + l;
                }
                let qtype = u16::from_be_bytes([q[end], q[end + 1]]);
                let mut r = q[..end + 4].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                if name.join(".") != SEED {
                    r[3] |= 3; // NXDOMAIN
                } else if qtype == 1 {
                    r[7] = 1;
                    r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    r.extend(ip);
                }
                let _ = sock.send_to(&r, from);
            }
        });
        TinyDns { addr, stop, asked }
    }
}

impl Drop for TinyDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A loopback address (127.x.y.z) whose regtest port is free: the seed's answer must be
/// dialled at the default port, and other tests may hold it on 127.0.0.1.
fn free_loopback() -> [u8; 4] {
    let base = std::process::id();
    for i in 0..200u32 {
        let v = base
            .wrapping_mul(2654435761)
            .wrapping_add(i.wrapping_mul(40503));
        let ip = [
            127,
            100 + (v % 100) as u8,
            (v >> 8) as u8,
            1 + (v >> 16) as u8 % 250,
        ];
        if TcpListener::bind(SocketAddr::from((ip, REGTEST_PORT))).is_ok() {
            return ip;
        }
    }
    panic!("no free loopback address for port {REGTEST_PORT}");
}

#[test]
fn a_node_dials_what_its_dns_seed_names_and_lists_where_each_address_came_from() {
    let ip = free_loopback();
    let b_addr = SocketAddr::from((ip, REGTEST_PORT));
    let dns = TinyDns::start(ip);
    let mut b = TestNode::init_with_links(
        "b",
        "N0CALL-2",
        REGTEST_PORT,
        &[&format!("tcp-listen://{b_addr}")],
    );
    b.start(&[]);

    // A knows nothing of B but the seed's name; its one configured dial goes nowhere.
    let port = support::free_port();
    let mut a = TestNode::init_with_links(
        "a",
        "N0CALL-1",
        port,
        &[
            "tcp://127.0.0.1:9",
            &format!("tcp-listen://127.0.0.1:{port}"),
        ],
    );
    let path = a.dir.join("skywave.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(&path)
        .expect("config")
        .parse()
        .expect("toml");
    let peers = cfg
        .entry("peers")
        .or_insert(toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("peers table");
    peers.insert("dns_seeds".into(), toml::Value::Array(vec![SEED.into()]));
    peers.insert("dns_resolver".into(), dns.addr.to_string().into());
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write config");
    a.start(&[]);

    let connected = wait_for(Duration::from_secs(60), || {
        let (_, v) = http(&a.api(), "GET", "/api/peers", None)?;
        v["peers"]
            .as_array()?
            .iter()
            .any(|p| p["remote"] == b_addr.to_string() && p["ready"] == true)
            .then_some(())
    });
    assert!(
        connected.is_some(),
        "A never reached B at {b_addr} through the seed (DNS asked {} times)\nA:\n{}",
        dns.asked.load(Ordering::SeqCst),
        a.log_text()
    );

    let text = a.ok(&["peers", "--addrs"]);
    let line = |addr: &str| {
        text.lines()
            .find(|l| l.starts_with(addr))
            .unwrap_or_else(|| panic!("{addr} not listed:\n{text}"))
            .to_string()
    };
    assert!(line(&b_addr.to_string()).contains(" dns "), "{text}");
    assert!(line("127.0.0.1:9").contains(" config "), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "peers", "--addrs"])).expect("json");
    let b_entry = json["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .find(|e| e["addr"] == b_addr.to_string())
        .cloned()
        .expect("B in the book");
    assert_eq!(b_entry["source"], "dns");
    assert_eq!(b_entry["good"], true, "the dial to B completed a handshake");
}
