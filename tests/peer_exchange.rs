//! Peer exchange over TCP, with real processes: C knows only A, learns B's address from
//! A (B advertised its listen address to A) and connects to B by itself.

mod support;

use std::time::Duration;
use support::{http, wait_for, TestNode};

fn peer_calls(n: &TestNode) -> Vec<String> {
    let Some((200, v)) = http(&n.api(), "GET", "/api/peers", None) else {
        return Vec::new();
    };
    let list = v["peers"].as_array().or_else(|| v.as_array()).cloned();
    list.unwrap_or_default()
        .iter()
        .filter(|p| p["ready"].as_bool() == Some(true))
        .filter_map(|p| p["callsign"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_node_learns_and_dials_addresses_from_its_peers() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    let mut c = TestNode::init("c", "N0CALL-3");
    a.start(&[]);
    b.start(&["--link", &a.url()]);
    let ab = wait_for(Duration::from_secs(20), || {
        peer_calls(&a)
            .contains(&"N0CALL-2".to_string())
            .then_some(())
    });
    assert!(ab.is_some(), "B never reached A; log:\n{}", a.log_text());
    c.start(&["--link", &a.url()]);
    let cb = wait_for(Duration::from_secs(60), || {
        peer_calls(&c)
            .contains(&"N0CALL-2".to_string())
            .then_some(())
    });
    assert!(
        cb.is_some(),
        "C did not connect to B by peer exchange; C's peers {:?}; log:\n{}",
        peer_calls(&c),
        c.log_text()
    );
    assert!(c
        .log_text()
        .contains("connected to an address learned from peers"));
    // B sees C as an inbound peer it never dialled.
    let bc = wait_for(Duration::from_secs(10), || {
        peer_calls(&b)
            .contains(&"N0CALL-3".to_string())
            .then_some(())
    });
    assert!(bc.is_some(), "B does not list C");
}

#[test]
fn peer_exchange_can_be_turned_off() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    let mut c = TestNode::init("c", "N0CALL-3");
    let cfg_path = c.dir.join("skywave.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    assert!(cfg.contains("peer_exchange = true"), "{cfg}");
    std::fs::write(
        &cfg_path,
        cfg.replace("peer_exchange = true", "peer_exchange = false"),
    )
    .expect("write config");
    a.start(&[]);
    b.start(&["--link", &a.url()]);
    wait_for(Duration::from_secs(20), || {
        peer_calls(&a)
            .contains(&"N0CALL-2".to_string())
            .then_some(())
    })
    .expect("B reaches A");
    c.start(&["--link", &a.url()]);
    wait_for(Duration::from_secs(20), || {
        peer_calls(&c)
            .contains(&"N0CALL-1".to_string())
            .then_some(())
    })
    .expect("C reaches A");
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(peer_calls(&c), vec!["N0CALL-1".to_string()]);
}
