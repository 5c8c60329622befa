//! Link status tells the truth: a malformed link URL is refused when read, and a `tcp://`
//! link that cannot connect shows as down, with the error in words and the next retry,
//! in `skywave status`, `/api/status`, `/metrics` and the log; `/api/ready` is not
//! ready while no link is up.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{free_port, http, http_raw, wait_for, TestNode};

#[test]
fn a_malformed_link_url_is_refused_when_read() {
    let n = TestNode::init("a", "N0CALL-1");
    for args in [
        vec!["run", "--api", "127.0.0.1:0", "--link", "tcp://[::1"],
        vec![
            "init",
            "--network",
            "regtest",
            "--callsign",
            "N0CALL-2",
            "--link",
            "tcp://[::1",
        ],
    ] {
        let out = n.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted a malformed URL");
        assert!(
            err.contains("tcp://[::1") && err.contains("not closed"),
            "the error names the URL and the fault: {err}"
        );
    }
    assert!(
        !n.dir.join("api.addr").exists(),
        "the node did not start with a malformed link"
    );
}

fn dial_link(status: &Value, url: &str) -> Option<Value> {
    status["links"]
        .as_array()?
        .iter()
        .find(|l| l["url"] == url)
        .cloned()
}

#[test]
fn a_refused_dial_shows_down_with_its_error_and_next_retry() {
    // Nothing listens on this port: every dial is refused.
    let dead = free_port();
    let url = format!("tcp://127.0.0.1:{dead}");
    let mut n = TestNode::init_with_links("a", "N0CALL-1", dead, &[&url]);
    n.start(&[]);

    let link = wait_for(Duration::from_secs(20), || {
        dial_link(&n.status(), &url).filter(|l| l["state"] == "down")
    })
    .unwrap_or_else(|| panic!("link never shown down: {}", n.status()));
    assert_eq!(link["up"], false);
    let err = link["error"].as_str().unwrap_or("");
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("refused"),
        "error in words: {link}"
    );
    assert!(
        link["next_retry"]
            .as_str()
            .is_some_and(|t| t.ends_with("UTC")),
        "next retry as a readable time: {link}"
    );
    assert!(link["next_retry_ms"].as_u64().is_some(), "{link}");

    // The command line says the same.
    let out = n.ok(&["status"]);
    let line = out
        .lines()
        .find(|l| l.contains(&url))
        .unwrap_or_else(|| panic!("no line for the link: {out}"));
    assert!(line.ends_with("down"), "{out}");
    assert!(out.contains("last error: cannot connect"), "{out}");
    assert!(out.contains("next retry: "), "{out}");

    // Not ready, and says why.
    let (code, ready) = http(&n.api(), "GET", "/api/ready", None).expect("ready answers");
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    let why = ready["not_ready"].to_string();
    assert!(
        why.contains("no link is up") && why.contains(&url),
        "{ready}"
    );

    // The link-up gauge is 0.
    let (code, metrics) =
        http_raw(&n.api(), "GET", "/metrics", &[("Host", &n.api())], None).expect("metrics");
    assert_eq!(code, 200);
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("skywave_link_up{") && l.contains(&url))
        .unwrap_or_else(|| panic!("no link_up line: {metrics}"));
    assert!(gauge.ends_with(" 0"), "{gauge}");

    // The first failure is in the log at the default level, in words.
    let log = n.log_text();
    assert!(
        log.contains("is down: cannot connect") && log.contains("next try at"),
        "{log}"
    );
    n.stop();
}

#[test]
fn a_dial_that_connects_is_up_and_the_node_ready() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&[]);
    let url = a.url();
    let mut b = TestNode::init("b", "N0CALL-2");
    b.start(&["--link", &url]);
    let up = wait_for(Duration::from_secs(20), || {
        dial_link(&b.status(), &url).filter(|l| l["state"] == "up")
    });
    assert!(up.is_some(), "{}", b.status());
    let (code, ready) = http(&b.api(), "GET", "/api/ready", None).expect("ready answers");
    assert_eq!(code, 200, "{ready}");
    // `peers` heads its table.
    let peers = wait_for(Duration::from_secs(20), || {
        let out = b.ok(&["peers"]);
        out.contains("N0CALL-1").then_some(out)
    })
    .unwrap_or_else(|| b.ok(&["peers"]));
    let header = peers.lines().nth(1).unwrap_or("");
    for col in ["ID", "ADDRESS", "CALLSIGN", "HEIGHT", "SCORE", "HEARD"] {
        assert!(header.contains(col), "no {col} column: {peers}");
    }
    b.stop();
    a.stop();
}
