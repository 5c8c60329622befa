//! Two real `skywave run` processes over two real Direwolf soft modems joined by 1200-baud
//! AFSK audio: A on Direwolf A through `kiss+tcp://`, B on Direwolf B through
//! `kiss+serial://` on a pseudo-terminal. Skipped (with a message) without Direwolf.

mod support;

use skywave::lab::{skip_without_direwolf, socat_available, DirewolfOpts, DirewolfPair};
use std::time::{Duration, Instant};
use support::{http, wait_for, TestNode};

/// A with ten blocks, several carrying transactions from A's wallet.
fn node_a_with_ten_blocks() -> TestNode {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.ok(&["mine", "--blocks", "1"]);
    let dest = support::test_address(0xcd);
    for _ in 0..3 {
        a.start(&[]);
        for _ in 0..2 {
            a.ok(&[
                "tx", "send", "--to", &dest, "--amount", "1000", "--fee", "1000",
            ]);
        }
        a.stop();
        a.ok(&["mine", "--blocks", "3"]);
    }
    a
}

fn sync_over_direwolf(test: &str, opts: DirewolfOpts) {
    let opts_clean = opts.ber.is_none();
    if skip_without_direwolf(test) {
        return;
    }
    if !socat_available() {
        eprintln!("SKIPPED {test}: socat is not installed (apt-get install socat)");
        return;
    }
    let mut a = node_a_with_ten_blocks();
    let mut b = TestNode::init("b", "N0CALL-2");
    let mut pair = DirewolfPair::start(opts).expect("start direwolf pair");
    let pty = pair.pty_b().expect("socat pty for B");
    let kiss_a = format!("kiss+tcp://{}", pair.kiss_addr_a());
    let kiss_b = format!("kiss+serial://{}?baud=9600", pty.display());

    a.start(&["--link", &kiss_a]);
    let tip = a.tip();
    let started = Instant::now();
    b.start(&["--link", &kiss_b]);
    let synced = wait_for(Duration::from_secs(900), || {
        (b.height() == Some(10) && b.tip() == tip).then_some(())
    });
    let air = pair.air_stats();
    assert!(
        synced.is_some(),
        "B did not sync over the air in time (height {:?}); air {air:?}\nA:\n{}\nB:\n{}",
        b.height(),
        a.log_text(),
        b.log_text()
    );
    eprintln!(
        "{test}: B synced 10 blocks in {:.1} s; air A->B {:.1} s in {} bursts, B->A {:.1} s",
        started.elapsed().as_secs_f64(),
        air.a_to_b.air_seconds,
        air.a_to_b.bursts,
        air.b_to_a.air_seconds
    );
    if opts_clean {
        // Turns: after it has heard B, A keys up only when B's turn is over (B's greeting,
        // acks, requests), once for everything it has to say: no more transmissions than
        // B's. Handing a burst over in pieces (10 s of air at a time, as before) made the
        // 20-s answer two transmissions against B's one. Counted once the last
        // transmission, still in its tail at sync, has ended.
        pair.wait_air_idle(Duration::from_secs(1), Duration::from_secs(30));
        let log = pair.air_log();
        let b_tx: Vec<_> = log
            .iter()
            .filter(|t| !t.from_a && t.start >= started)
            .collect();
        let first_b_end = b_tx
            .iter()
            .map(|t| t.start + Duration::from_secs_f64(t.secs))
            .min()
            .expect("B transmitted");
        // A's discovery beacons before it heard B are not answers.
        let a_tx = log
            .iter()
            .filter(|t| t.from_a && t.start >= first_b_end)
            .count();
        eprintln!(
            "{test}: A keyed up {a_tx} times after B's first transmission, B {} times",
            b_tx.len()
        );
        assert!(
            a_tx <= b_tx.len(),
            "A keyed up {a_tx} times against B's {} during the sync\n{log:#?}",
            b_tx.len()
        );
    }
    // Every block B holds is the one A mined, with its transactions, once each.
    let mut seen = std::collections::HashSet::new();
    let mut txs = 0;
    for h in 1..=10 {
        let (_, blk_a) = http(&a.api(), "GET", &format!("/api/blocks/{h}"), None).unwrap();
        let (_, blk_b) = http(&b.api(), "GET", &format!("/api/blocks/{h}"), None).unwrap();
        assert_eq!(blk_a["hash"], blk_b["hash"], "block {h}");
        for t in blk_b["txs"].as_array().unwrap() {
            assert!(
                seen.insert(t["id"].as_str().unwrap().to_string()),
                "tx twice"
            );
            txs += 1;
        }
    }
    assert_eq!(txs, 6, "the transactions A's blocks carry");

    // A transaction submitted on B reaches A's mempool over the air.
    let a_addr = a.address();
    let b_fund = b.cli(&[
        "tx", "send", "--to", &a_addr, "--amount", "1", "--fee", "1000",
    ]);
    // B's wallet is empty: refused locally, with a clear reason.
    assert!(!b_fund.status.success());
    assert!(String::from_utf8_lossy(&b_fund.stderr).contains("refused"));
    // So B relays a transaction signed by A's wallet, submitted through B's API.
    let signed = a.ok(&[
        "--json",
        "tx",
        "sign",
        "--to",
        &support::test_address(0xef),
        "--amount",
        "7",
        "--fee",
        "1000",
    ]);
    let (code, v) = b.call("POST", "/api/tx", Some(&signed)).unwrap();
    assert_eq!(code, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let reached = wait_for(Duration::from_secs(600), || {
        let (c, t) = http(&a.api(), "GET", &format!("/api/tx/{id}"), None)?;
        (c == 200 && t["status"] == "mempool").then_some(())
    });
    assert!(
        reached.is_some(),
        "tx from B did not reach A\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    // Station identification: B knows A by the AX.25 source address of what it heard.
    let peers = b.status()["peers"].clone();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["remote"] == "N0CALL-1"),
        "B heard N0CALL-1: {peers}"
    );
}

#[test]
fn b_syncs_ten_blocks_over_1200_baud_direwolf() {
    sync_over_direwolf(
        "b_syncs_ten_blocks_over_1200_baud_direwolf",
        DirewolfOpts::default(),
    );
}

#[test]
fn sync_completes_when_direwolf_loses_frames() {
    // BER 1e-4 with one demodulator and no bit repair: about 20 % of 256-byte frames lost.
    let opts = DirewolfOpts {
        ber: Some(1e-4),
        modem_opts: "E".into(),
        fix_bits: Some(0),
        ..DirewolfOpts::default()
    };
    sync_over_direwolf("sync_completes_when_direwolf_loses_frames", opts);
}
