//! What `skywave run` says at start and while it runs: the banner (version, network,
//! callsign, data directory, links, API and token), the log file in the data directory,
//! and sync progress as `UpdateTip` lines with readable times.

mod support;

use std::time::Duration;
use support::{wait_for, TestNode};

#[test]
fn the_banner_and_update_tip_lines_go_to_stderr_and_the_log_file() {
    let mut n = TestNode::init("a", "N0CALL-1");
    n.start(&["--mine"]);
    let tip = wait_for(Duration::from_secs(60), || {
        let log = n.log_text();
        log.contains("UpdateTip: height=1 ").then_some(log)
    });
    let stderr = tip.unwrap_or_else(|| panic!("no UpdateTip line; log:\n{}", n.log_text()));
    let file = std::fs::read_to_string(n.dir.join("debug.log")).expect("DATA_DIR/debug.log");
    let api = n.api();
    for (what, log) in [("stderr", &stderr), ("debug.log", &file)] {
        for want in [
            format!("skywave {} on regtest", env!("CARGO_PKG_VERSION")),
            format!("callsign N0CALL-1, data directory {}", n.dir.display()),
            format!(
                "link 1: tcp-listen://127.0.0.1:{}: listens for TCP peers on 127.0.0.1:{}",
                n.port, n.port
            ),
            format!(
                "API on http://{api}/ (token in {})",
                n.dir.join(".cookie").display()
            ),
            "UpdateTip: height=1 best_header=1 progress=100.0% tip=".to_string(),
        ] {
            assert!(log.contains(&want), "{what} lacks '{want}':\n{log}");
        }
        assert!(
            log.lines()
                .any(|l| l.contains("UpdateTip: height=1 ") && l.contains(" UTC (mined here)")),
            "{what}: block time readable:\n{log}"
        );
        assert!(!log.contains("Some("), "{what}: Rust debug text:\n{log}");
    }
    assert!(
        !file.contains("\u{1b}["),
        "no terminal colours in the file:\n{file}"
    );
    // Blocks mined back to back: each line's progress is of the best header known when
    // that tip was made (read later, a tip mined here showed 80 % of the next one).
    n.ok(&["mine", "--blocks", "20"]);
    let h = n.height().unwrap_or(0);
    let done = wait_for(Duration::from_secs(60), || {
        n.log_text()
            .contains(&format!("UpdateTip: height={h} "))
            .then_some(())
    });
    assert!(done.is_some(), "no UpdateTip for {h}:\n{}", n.log_text());
    let log = n.log_text();
    let behind: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(mined here)") && !l.contains("progress=100.0%"))
        .collect();
    assert!(
        behind.is_empty(),
        "a block mined here below 100 %: {behind:#?}"
    );
    n.stop();
}
