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
    dom_value(&dom, "height", "")?.parse().ok()
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

/// The DOM of one page load that runs for `budget_ms` of Chromium's virtual time (its
/// polls go on meanwhile) while `meanwhile` is called until Chromium is done.
fn dom_while(
    bin: &str,
    profile: &std::path::Path,
    url: &str,
    budget_ms: u64,
    mut meanwhile: impl FnMut(),
) -> String {
    let mut c = headless(bin, profile);
    let mut child = c
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    while child.try_wait().ok().flatten().is_none() {
        meanwhile();
    }
    reader.join().unwrap_or_default()
}

/// `attr="value"` of the element with `id`, or its text with `attr` empty.
fn dom_value(dom: &str, id: &str, attr: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag = &dom[start..];
    if attr.is_empty() {
        let rest = &tag[tag.find('>')? + 1..];
        return Some(rest[..rest.find('<')?].trim().to_string());
    }
    let at = tag[..tag.find('>')?].find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

#[test]
fn the_page_follows_the_node_live_without_a_reload() {
    let Some(bin) = chromium() else {
        println!("SKIPPED: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    let mut n = TestNode::init("a", "N0CALL-1");
    n.start(&[]);
    // A transaction in the mempool, for the page's list (amounts with their unit).
    n.ok(&["mine", "--blocks", "1"]);
    let to = support::test_address(9);
    n.ok(&["tx", "send", "--to", &to, "--amount", "1.5"]);
    let url = format!("http://{}/", n.api());
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = dom_while(&bin, profile.path(), &url, 4000, || {
        std::thread::sleep(Duration::from_millis(100))
    });
    assert!(
        dom.contains("1.50000000 SKY"),
        "no amount with its unit:\n{dom}"
    );
    assert!(
        dom_value(&dom, "sync", "").is_some_and(|s| s == "in sync"),
        "{dom}"
    );
    // One page load, blocks mined while it polls: the height it shows must move past the
    // one it first showed. Chromium's virtual time runs faster than ours, so a load may
    // end before a block lands; a few tries.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let dom = dom_while(&bin, profile.path(), &url, 120_000, || {
            n.ok(&["mine", "--blocks", "1"]);
            std::thread::sleep(Duration::from_millis(300));
        });
        let first: Option<u64> =
            dom_value(&dom, "height", "data-first").and_then(|v| v.parse().ok());
        let last: Option<u64> = dom_value(&dom, "height", "").and_then(|v| v.parse().ok());
        if let (Some(f), Some(l)) = (first, last) {
            if l > f {
                return;
            }
        }
        seen.push((first, last));
    }
    panic!("the page never moved past the height it first showed: {seen:?}");
}
