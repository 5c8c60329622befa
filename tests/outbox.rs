//! The durable outbox with real `skywave run` processes: delivery across SIGKILLs of the
//! receiver, and a transaction queued offline that survives a restart.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{http, wait_for, TestNode};

fn outbox(n: &TestNode) -> Value {
    http(&n.api(), "GET", "/api/outbox", None)
        .map(|(_, v)| v)
        .unwrap_or(Value::Null)
}

fn outbox_len(n: &TestNode) -> Option<usize> {
    outbox(n)["items"].as_array().map(|a| a.len())
}

/// Transaction items still owed (a mining node always has a fresh block item or two).
fn outbox_txs(n: &TestNode) -> Option<usize> {
    outbox(n)["items"]
        .as_array()
        .map(|a| a.iter().filter(|i| i["kind"] == "tx").count())
}

fn tx_status(n: &TestNode, id: &str) -> Option<String> {
    let (_, v) = http(&n.api(), "GET", &format!("/api/tx/{id}"), None)?;
    v["status"].as_str().map(str::to_string)
}

fn wait_height(n: &TestNode, h: u64, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        n.height().filter(|&x| x >= h).map(|_| ())
    })
    .is_some()
}

#[test]
fn outbox_delivers_200_txs_to_a_peer_killed_ten_times() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    a.ok(&["mine", "--blocks", "3"]);
    // A mines as it goes: the mempool holds at most 25 pending txs per sender, so the
    // 200 are mined in batches while they are delivered.
    a.start(&["--mine"]);
    // Introduce B once so A records its node id, then take B away.
    b.start(&["--link", &a.url()]);
    assert!(wait_height(&b, 3, 20), "B did not sync: {}", b.log_text());
    b.kill9();

    // A queues 200 transactions for B while B is killed at random moments.
    let to = support::test_address(0xab);
    let a_dir = a.dir.clone();
    let sender = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let mut refusals = 0;
        while ids.len() < 200 {
            let out = std::process::Command::new(support::bin())
                .arg("--data-dir")
                .arg(&a_dir)
                .args(["tx", "send", "--to", &to, "--amount", "1", "--fee", "1000"])
                .output()
                .expect("tx send");
            if out.status.success() {
                ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            } else {
                // Mempool full for this sender: wait for the next block.
                refusals += 1;
                assert!(refusals < 2000, "{}", String::from_utf8_lossy(&out.stderr));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        ids
    });
    let mut kills = 0;
    while kills < 10 || !sender.is_finished() {
        b.start(&["--link", &a.url()]);
        let ms = 200 + rand::random::<u64>() % 1300;
        std::thread::sleep(Duration::from_millis(ms));
        b.kill9();
        kills += 1;
        assert!(kills < 200, "sender never finished");
    }
    let ids = sender.join().expect("sender thread");
    let uniq: HashSet<&String> = ids.iter().collect();
    assert_eq!(uniq.len(), 200);
    eprintln!("B was SIGKILLed {kills} times");

    b.start(&["--link", &a.url()]);
    let t0 = Instant::now();
    let emptied = wait_for(Duration::from_secs(120), || {
        (outbox_txs(&a)? == 0).then_some(())
    });
    assert!(
        emptied.is_some(),
        "A's outbox never emptied: {}\nA log:\n{}",
        outbox(&a),
        a.log_text()
    );
    eprintln!("outbox drained {:?} after the last restart", t0.elapsed());
    // Every tx on B exactly once: in its mempool or in one block of its main chain.
    let (_, mp) = http(&b.api(), "GET", "/api/mempool", None).expect("mempool");
    let mut seen: Vec<String> = mp["txs"]
        .as_array()
        .expect("txs")
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    let height = b.height().expect("height");
    for h in 1..=height {
        let (_, blk) = http(&b.api(), "GET", &format!("/api/blocks/{h}"), None).expect("block");
        for t in blk["txs"].as_array().expect("block txs") {
            seen.push(t["id"].as_str().unwrap_or("").to_string());
        }
    }
    for id in &ids {
        let n = seen.iter().filter(|s| *s == id).count();
        assert_eq!(n, 1, "tx {id} held {n} times on B");
    }
    let ob = outbox(&a);
    eprintln!("A outbox figures: {}", ob["stats"]);
    let t = &ob["totals"];
    let live = ob["items"].as_array().map_or(0, |a| a.len()) as u64;
    assert_eq!(
        t["enqueued"].as_u64(),
        t["delivered"].as_u64().map(|d| d + live),
        "every queued item delivered or still listed: {ob}"
    );
}

#[test]
fn a_tx_queued_offline_survives_a_restart_and_is_mined_once_a_link_opens() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let mut b = TestNode::init("b", "N0CALL-2");
    a.ok(&["mine", "--blocks", "2"]);
    a.start(&[]);
    let txid = a.ok(&[
        "tx",
        "send",
        "--to",
        &support::test_address(0xcd),
        "--amount",
        "7",
        "--fee",
        "1000",
    ]);
    let ob = outbox(&a);
    assert_eq!(ob["items"][0]["dest"], "any", "no peer known yet: {ob}");
    assert_eq!(ob["items"][0]["hash"], txid.as_str());
    a.stop();
    a.start(&[]);
    assert_eq!(outbox_len(&a), Some(1), "outbox survives a restart");
    // CLI view of the same.
    let list = a.ok(&["outbox", "list"]);
    assert!(list.contains("pending") && list.contains("any"), "{list}");

    b.start(&["--link", &a.url(), "--mine"]);
    let mined = wait_for(Duration::from_secs(60), || {
        (tx_status(&b, &txid)? == "confirmed").then_some(())
    });
    assert!(
        mined.is_some(),
        "tx not mined by B; A log:\n{}\nB log:\n{}",
        a.log_text(),
        b.log_text()
    );
    let drained = wait_for(Duration::from_secs(30), || {
        (outbox_len(&a)? == 0).then_some(())
    });
    assert!(drained.is_some(), "A's outbox: {}", outbox(&a));
}
