//! APRS presence: the beacon a `skywave run` sends with `aprs_status=true` reaches its
//! TNC (a fake KISS TNC, always run), and over two real Direwolf modems (skipped without
//! direwolf) it is valid APRS to Direwolf, and a second node that hears it learns the
//! station from it alone.

mod support;

use skywave::lab::{skip_without_direwolf, DirewolfOpts, DirewolfPair};
use skywave::wire::ax25::decode_ui;
use skywave::wire::kiss::KissDecoder;
use std::io::Read;
use std::time::{Duration, Instant};
use support::kiss_tcp::KissTcp;
use support::{wait_for, TestNode};

/// Direwolf's packet log (`LOGDIR`): one CSV line per frame heard, with its APRS
/// decoding. (Its console output goes to a file through a buffer that is lost when the
/// lab kills it, so the packet log is what can be read while it runs.)
fn packet_log(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        // Not always UTF-8: Direwolf writes what it heard as it came.
        out.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    out
}

#[test]
fn direwolf_decodes_the_beacon_and_a_second_node_learns_the_station_from_it() {
    let test = "direwolf_decodes_the_beacon_and_a_second_node_learns_the_station_from_it";
    if skip_without_direwolf(test) {
        return;
    }
    let logs = tempfile::tempdir().expect("tempdir");
    let opts = DirewolfOpts {
        extra_config: vec![format!("LOGDIR {}", logs.path().display())],
        ..DirewolfOpts::default()
    };
    let pair = DirewolfPair::start(opts).expect("direwolf pair starts");
    let mut a = TestNode::init("a", "N0CALL-1");
    a.ok(&["mine", "--blocks", "2"]);
    let mut ear = KissTcp::connect(pair.kiss_addr_b()).expect("listen on B");
    a.start(&[
        "--link",
        &format!("kiss+tcp://{}?aprs_status=true", pair.kiss_addr_a()),
    ]);
    let tip = a.tip();
    let want = format!(">skywave regtest h=2 tip={}", &tip[..8]);

    // A's first beacon comes within seconds; its discovery beacons come too.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut beacon = None;
    while beacon.is_none() && Instant::now() < deadline {
        if let Some(f) = ear.recv(Duration::from_secs(1)).expect("read B") {
            if let Ok(ui) = decode_ui(&f) {
                if ui.dst.to_string() == "APZSKY" {
                    beacon = Some((f, ui));
                }
            }
        }
    }
    let (frame, ui) = beacon.unwrap_or_else(|| {
        panic!(
            "no APRS beacon from A heard in 90 s\n{}\nA:\n{}",
            pair.logs(),
            a.log_text()
        )
    });
    assert_eq!(ui.src.to_string(), "N0CALL-1", "the beacon identifies A");
    let path: Vec<String> = ui.digis.iter().map(|d| d.call.to_string()).collect();
    assert_eq!(path, ["WIDE1-1"]);
    assert_eq!(String::from_utf8_lossy(&ui.info), want);
    // Direwolf's own APRS decoder took it for a status report (data type '>') from
    // experimental software (the APZ tocall), with our text.
    let decoded = wait_for(Duration::from_secs(10), || {
        packet_log(logs.path()).lines().find_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 22 && f[3] == "N0CALL-1" && f[7] == ">")
                .then(|| (f[18].to_string(), f[21].to_string()))
        })
    });
    assert_eq!(
        decoded,
        Some(("Experimental".to_string(), want[1..].to_string())),
        "Direwolf's packet log:\n{}",
        packet_log(logs.path())
    );

    // B hears nothing from A but that beacon: A is stopped, the frame A keyed up is sent
    // again over the air.
    a.stop();
    pair.wait_air_idle(Duration::from_secs(1), Duration::from_secs(30));
    let mut b = TestNode::init("b", "N0CALL-2");
    b.start(&["--link", &format!("kiss+tcp://{}", pair.kiss_addr_b())]);
    let knows_a = |b: &TestNode| {
        b.status()["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["remote"] == "N0CALL-1"))
    };
    let open = wait_for(Duration::from_secs(20), || {
        b.log_text().contains("KISS TNC open").then_some(())
    });
    assert!(open.is_some(), "B's TNC link: {}", b.log_text());
    assert!(!knows_a(&b));
    let mut mouth = KissTcp::connect(pair.kiss_addr_a()).expect("connect A");
    mouth.send(&frame).expect("send the beacon again");
    let learned = wait_for(Duration::from_secs(30), || knows_a(&b).then_some(()));
    assert!(
        learned.is_some(),
        "B did not learn N0CALL-1 from its APRS beacon\n{}\nB:\n{}",
        pair.logs(),
        b.log_text()
    );
    assert!(
        b.log_text()
            .contains("skywave station N0CALL-1 heard in an APRS status"),
        "{}",
        b.log_text()
    );
}

#[test]
fn skywave_run_sends_its_beacon_to_the_tnc_with_the_tip_it_holds() {
    // A fake KISS TNC: it takes the connection and reads what the node writes.
    let tnc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "kiss+tcp://{}?aprs_status=true&aprs_path=WIDE2-2",
        tnc.local_addr().expect("addr")
    );
    let mut a = TestNode::init("a", "N0CALL-1");
    a.ok(&["mine", "--blocks", "3"]);
    a.start(&["--link", &url]);
    let tip = a.tip();
    let (mut conn, _) = tnc.accept().expect("the node opens its TNC");
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut dec = KissDecoder::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut beacon = None;
    while beacon.is_none() && Instant::now() < deadline {
        if let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            dec.push(&buf[..n]);
        }
        while let Some(Ok(f)) = dec.next_frame() {
            match decode_ui(&f.payload) {
                Ok(ui) if ui.dst.to_string() == "APZSKY" => beacon = Some(ui),
                _ => {}
            }
        }
    }
    let ui = beacon.unwrap_or_else(|| panic!("no APRS beacon in 60 s\n{}", a.log_text()));
    assert_eq!(ui.src.to_string(), "N0CALL-1");
    let path: Vec<String> = ui.digis.iter().map(|d| d.call.to_string()).collect();
    assert_eq!(path, ["WIDE2-2"]);
    assert_eq!(
        String::from_utf8_lossy(&ui.info),
        format!(">skywave regtest h=3 tip={}", &tip[..8])
    );
}
