//! The live status page at `GET /`, loaded in headless Chromium against a real node: the
//! height it shows follows the chain as blocks are mined. Keeps a screenshot under
//! target/. Without Chromium the test says SKIPPED and passes.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::{http_raw, wait_for, TestNode};

fn chromium() -> Option<String> {
    ["chromium", "chromium-headless-shell", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

fn headless(bin: &str, profile: &std::path::Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The height the page shows, from its DOM after its first polls.
fn shown_height(bin: &str, profile: &std::path::Path, url: &str) -> Option<u64> {
    let out = headless(bin, profile)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .ok()?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let at = dom.find("id=\"height\">")? + "id=\"height\">".len();
    let rest = &dom[at..];
    rest[..rest.find('<')?].trim().parse().ok()
}

#[test]
fn the_page_is_served_and_its_height_follows_mined_blocks() {
    let mut n = TestNode::init("a", "N0CALL-1");
    n.start(&[]);
    let api = n.api();
    // Served from the binary, with its script and style.
    let (code, html) = http_raw(&api, "GET", "/", &[("Host", &api)], None).expect("GET /");
    assert_eq!(code, 200);
    assert!(
        html.contains("/page/app.js") && html.contains("viewport"),
        "{html}"
    );
    for asset in ["/page/app.js", "/page/style.css"] {
        let (code, _) = http_raw(&api, "GET", asset, &[("Host", &api)], None).expect(asset);
        assert_eq!(code, 200, "{asset}");
    }
    let Some(bin) = chromium() else {
        println!("SKIPPED: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{api}/");
    let before = shown_height(&bin, profile.path(), &url).expect("the page shows a height");
    assert_eq!(Some(before), n.height());
    // Mine a block into the running node's chain: restart it mining until it is higher.
    n.stop();
    n.start(&["--mine"]);
    let api = n.api();
    let url = format!("http://{api}/");
    let mined = wait_for(Duration::from_secs(60), || {
        n.height().filter(|h| *h > before)
    });
    assert!(mined.is_some(), "no block mined");
    let after = wait_for(Duration::from_secs(60), || {
        shown_height(&bin, profile.path(), &url).filter(|h| *h > before)
    });
    assert!(after.is_some(), "the page still shows height {before}");
    let shot: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = headless(&bin, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=412,1400")
        .arg(&url)
        .output();
    println!("screenshot: {}", shot.display());
    n.stop();
}
