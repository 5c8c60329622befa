//! A long sync over real TCP with the default limits (issue 14). A binary of its own: it
//! loads the machine for most of a minute, and tests that run beside it (the tests of
//! `node_tcp`, say) would measure that load rather than the node.

mod support;

use std::time::Duration;
use support::{wait_for, TestNode};

fn wait_height(n: &TestNode, h: u64, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        n.height().filter(|&x| x >= h).map(|_| ())
    })
    .is_some()
}

/// `skywave_<name>` of the node's `/metrics`, an unlabelled sample.
fn metric(n: &TestNode, name: &str) -> Option<u64> {
    let (code, text) = support::http_raw(&n.api(), "GET", "/metrics", &[], None)?;
    assert_eq!(code, 200, "{text}");
    let key = format!("skywave_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// A fresh node syncs a long chain over TCP with the default rate limits, and neither
/// side takes the sync for a flood (issue 14). Each side used to charge the sync's one
/// message per block (B's `GetData`, A's `Block`) to its limit of 200 messages/s and
/// dropped the other once its burst allowance of 2 000 was spent: a redial every
/// ~2 000 blocks, each logged as misbehaviour.
#[test]
fn a_long_sync_with_default_limits_is_not_taken_for_a_flood() {
    const BLOCKS: u64 = 6_000;
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    a.ok(&["mine", "--blocks", &BLOCKS.to_string()]);
    a.start(&[]);
    b.start(&["--link", &a.url()]);
    assert!(
        wait_height(&b, BLOCKS, 600),
        "B did not sync; log:\n{}",
        b.log_text()
    );
    assert_eq!(b.tip(), a.tip());
    for n in [&a, &b] {
        let log = n.log_text();
        assert!(
            !log.contains("flooding") && !log.contains("misbehaving"),
            "{} took the sync for misbehaviour; log:\n{log}",
            n.name
        );
        assert_eq!(metric(n, "misbehaviour_total"), Some(0), "{}", n.name);
    }
    assert!(
        !b.log_text().contains("is down"),
        "B's link to A went down during the sync; log:\n{}",
        b.log_text()
    );
    let peers = b.status()["peers"].as_array().map(|p| p.len());
    assert_eq!(peers, Some(1), "B keeps its one session with A");
}
