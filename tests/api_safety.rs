//! The operator's API against the real binary: the token, the Host check, binds beyond
//! loopback, checksummed addresses, amounts in coins, resubmission, `/metrics`.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{bin, http, http_raw, wait_for, TestNode};

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn state_changes_need_the_cookie_token_and_foreign_hosts_are_refused() {
    let mut a = TestNode::init("a", "N0CALL-1");
    #[cfg(unix)]
    {
        assert_eq!(mode(&a.dir), 0o700, "data directory is private");
        assert_eq!(
            mode(&a.dir.join("skywave.toml")),
            0o600,
            "config is private"
        );
    }
    a.start(&[]);
    let api = a.api();
    let cookie = a.dir.join(".cookie");
    #[cfg(unix)]
    assert_eq!(mode(&cookie), 0o600, "cookie is private");
    let token = a.token();
    assert_eq!(token.len(), 64, "{token}");

    // A page the operator browses can POST to loopback (CSRF): without the token,
    // nothing changes.
    let ban = r#"{"key":"0.0.0.0/0","hours":1,"reason":"csrf"}"#;
    let (code, v) = http(&api, "POST", "/api/bans", Some(ban)).expect("api");
    assert_eq!(code, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains(".cookie"),
        "says where the token is: {v}"
    );
    let wrong = format!("Bearer {}", "0".repeat(64));
    let (code, _) = http_raw(
        &api,
        "POST",
        "/api/bans",
        &[("Host", &api), ("Authorization", &wrong)],
        Some(ban),
    )
    .expect("api");
    assert_eq!(code, 401);
    let (code, _) = http(&api, "POST", "/api/outbox/1/drop", None).expect("api");
    assert_eq!(code, 401);
    let (code, _) = http(&api, "DELETE", "/api/bans/10.0.0.0%2F8", None).expect("api");
    assert_eq!(code, 401);
    assert!(
        a.ban_keys().is_empty(),
        "a ban went through without the token"
    );

    // DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends
    // its own name as Host, even for reads, even with a token it could not know.
    let port = api.rsplit_once(':').map(|(_, p)| p.to_string()).unwrap();
    let evil = format!("evil.example:{port}");
    let (code, body) = http_raw(&api, "GET", "/api/status", &[("Host", &evil)], None).unwrap();
    assert_eq!(code, 403, "{body}");
    let auth = format!("Bearer {token}");
    let (code, _) = http_raw(
        &api,
        "POST",
        "/api/bans",
        &[("Host", &evil), ("Authorization", &auth)],
        Some(ban),
    )
    .unwrap();
    assert_eq!(code, 403);
    let local = format!("localhost:{port}");
    let (code, _) = http_raw(&api, "GET", "/api/status", &[("Host", &local)], None).unwrap();
    assert_eq!(code, 200, "reads stay open on loopback");

    // The CLI reads the cookie by itself.
    a.ok(&["ban", "add", "10.0.0.0/8", "--reason", "cli"]);
    assert_eq!(a.ban_keys(), vec!["10.0.0.0/8".to_string()]);
    a.ok(&["ban", "remove", "10.0.0.0/8"]);

    a.stop();
    assert!(!cookie.exists(), "cookie removed at shutdown");
}

/// Put `api_token` at the top of the config (before any table).
fn set_api_token(dir: &std::path::Path, token: &str) {
    let p = dir.join("skywave.toml");
    let text = std::fs::read_to_string(&p).expect("config");
    std::fs::write(&p, format!("api_token = \"{token}\"\n{text}")).expect("write config");
}

#[test]
fn api_beyond_loopback_needs_a_configured_token() {
    let a = TestNode::init("a", "N0CALL-1");
    let refused = std::fs::File::create(&a.log).expect("log");
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(&a.dir)
        .args(["run", "--api", "0.0.0.0:0"])
        .env("SKYWAVE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(refused)
        .spawn()
        .expect("run");
    let exited = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        exited.is_some_and(|s| !s.success()),
        "started on 0.0.0.0 without a password"
    );
    let err = a.log_text();
    assert!(err.contains("api_token"), "{err}");

    let password = "correct-horse-battery-staple";
    set_api_token(&a.dir, password);
    let log = std::fs::File::create(&a.log).expect("log");
    let _ = std::fs::remove_file(a.dir.join("api.addr"));
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(&a.dir)
        .args(["run", "--api", "0.0.0.0:0"])
        .env("SKYWAVE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let api = wait_for(Duration::from_secs(20), || {
        let addr = std::fs::read_to_string(a.dir.join("api.addr")).ok()?;
        let port = addr.trim().rsplit_once(':')?.1.to_string();
        let api = format!("127.0.0.1:{port}");
        http(&api, "GET", "/api/health", None)
            .filter(|(c, _)| *c == 200)
            .map(|_| api)
    });
    let result = std::panic::catch_unwind(|| {
        let api = api.expect("node did not start with api_token set");
        assert!(
            a.log_text().contains("beyond this machine"),
            "no warning: {}",
            a.log_text()
        );
        // Reads need the token too once others can reach the API.
        let (code, _) = http(&api, "GET", "/api/status", None).unwrap();
        assert_eq!(code, 401);
        for token in [password.to_string(), a.token()] {
            let auth = format!("Bearer {token}");
            let (code, body) = http_raw(
                &api,
                "GET",
                "/api/status",
                &[("Host", &api), ("Authorization", &auth)],
                None,
            )
            .unwrap();
            assert_eq!(code, 200, "{body}");
        }
        // The CLI finds the token on its own.
        let st = a.ok(&["--json", "status"]);
        assert!(st.contains("\"network\":\"regtest\""), "{st}");
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn wait_tx_status(n: &TestNode, id: &str, want: &str) -> bool {
    wait_for(Duration::from_secs(30), || {
        let (_, v) = http(&n.api(), "GET", &format!("/api/tx/{id}"), None)?;
        (v["status"] == want).then_some(())
    })
    .is_some()
}

#[test]
fn addresses_have_checksums_amounts_have_units_and_resubmission_tells_the_truth() {
    let mut a = TestNode::init("a", "N0CALL-1");
    let addr = a.address();
    assert!(addr.starts_with("rsky1"), "{addr}");
    a.ok(&["mine", "--blocks", "2"]);
    a.start(&["--mine"]);
    let balance = a.ok(&["wallet", "balance"]);
    assert!(
        balance.contains(" SKY") && balance.contains(&addr),
        "{balance}"
    );
    let coins = balance.split_whitespace().next().unwrap_or("");
    assert_eq!(
        coins.split_once('.').map(|(_, d)| d.len()),
        Some(8),
        "{balance}"
    );

    let to = support::test_address(0x42);
    let send = |to: &str, amount: &str| a.cli(&["tx", "send", "--to", to, "--amount", amount]);

    let out = send(&to, "0");
    assert!(!out.status.success(), "--amount 0 accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("above zero"));

    // A bare hex key: refused, and the message shows its checksummed form.
    let hex = "42".repeat(32);
    let out = send(&hex, "1000");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("old hex address") && err.contains(&to),
        "{err}"
    );

    // One character off: the checksum catches it.
    let mut typo = to.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let out = send(&typo, "1000");
    assert!(!out.status.success(), "typo accepted: {typo}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid address"));

    // Another network's address.
    let main_addr = skywave::chain::Address([0x42; 32]).to_text("main");
    let out = send(&main_addr, "1000");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another network"));

    // The API refuses hex too, with the new form in the answer.
    let (code, v) = http(&a.api(), "GET", &format!("/api/accounts/{hex}"), None).unwrap();
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap_or("").contains(&to), "{v}");

    // Amounts in coins: 0.5 SKY is 50 000 000 base units.
    let signed = a.ok(&[
        "--json", "tx", "sign", "--to", &to, "--amount", "0.5", "--fee", "1000",
    ]);
    let tx: serde_json::Value = serde_json::from_str(&signed).expect("tx json");
    assert_eq!(tx["amount"], 50_000_000);
    assert_eq!(tx["amount_text"], "0.50000000 SKY");
    assert_eq!(tx["to"], to.as_str());
    let (code, v) = a.call("POST", "/api/tx", Some(&signed)).unwrap();
    assert_eq!((code, v["status"].as_str()), (200, Some("accepted")), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert!(wait_tx_status(&a, &id, "confirmed"), "{}", a.log_text());
    let (code, v) = a.call("POST", "/api/tx", Some(&signed)).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "confirmed", "resubmission: {v}");
    assert!(v["height"].as_u64().is_some(), "{v}");
    let (_, acct) = http(&a.api(), "GET", &format!("/api/accounts/{to}"), None).unwrap();
    assert_eq!(acct["balance_text"], "0.50000000 SKY", "{acct}");
    a.stop();
}

/// A strict reader of the Prometheus text format (0.0.4): every sample belongs to a
/// family declared by `# TYPE` before it, names and labels are well formed, values are
/// numbers, and no series appears twice. Returns series → value.
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(n), Some(t)) => {
                    if !name_ok(n) {
                        return Err(err("bad family name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err("bad type"));
                    }
                    if types.insert(n.to_string(), t.to_string()).is_some() {
                        return Err(err("family declared twice"));
                    }
                }
                (Some("HELP"), Some(n), _) if name_ok(n) => {}
                _ => return Err(err("bad comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = value.parse().map_err(|_| err("value not a number"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                Some(l.strip_suffix('}').ok_or_else(|| err("unclosed {"))?),
            ),
            None => (series, None),
        };
        if !name_ok(name) || !types.contains_key(name) {
            return Err(err("sample without a declared family"));
        }
        if types[name] == "counter" && value < 0.0 {
            return Err(err("negative counter"));
        }
        if let Some(mut l) = labels {
            while !l.is_empty() {
                let (k, rest) = l.split_once("=\"").ok_or_else(|| err("bad label"))?;
                if !name_ok(k) {
                    return Err(err("bad label name"));
                }
                let mut end = None;
                let mut esc = false;
                for (j, ch) in rest.char_indices() {
                    match (esc, ch) {
                        (true, '\\' | '"' | 'n') => esc = false,
                        (true, _) => return Err(err("bad escape")),
                        (false, '\\') => esc = true,
                        (false, '"') => {
                            end = Some(j);
                            break;
                        }
                        (false, '\n') => return Err(err("raw newline")),
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| err("unterminated label value"))?;
                l = &rest[end + 1..];
                l = l.strip_prefix(',').unwrap_or(l);
            }
        }
        if !seen.insert(series.to_string()) {
            return Err(err("series twice"));
        }
        out.insert(series.to_string(), value);
    }
    Ok(out)
}

#[test]
fn metrics_parse_as_prometheus_text_and_follow_the_chain() {
    let mut a = TestNode::init("a", "N0CALL-1");
    a.start(&["--mine"]);
    let get = |n: &TestNode| {
        let api = n.api();
        let (code, body) =
            http_raw(&api, "GET", "/metrics", &[("Host", api.as_str())], None).expect("metrics");
        assert_eq!(code, 200, "{body}");
        parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
    };
    let m = get(&a);
    let first = m["skywave_height"];
    for family in [
        "skywave_header_height",
        "skywave_outbox_items{state=\"pending\"}",
        "skywave_bans",
        "skywave_misbehaviour_total",
        "skywave_outbox_retransmissions_total",
    ] {
        assert!(m.contains_key(family), "{family} missing: {m:?}");
    }
    let link = m
        .keys()
        .find(|k| k.starts_with("skywave_peers{") && k.contains("tcp-listen://"))
        .cloned();
    assert!(link.is_some(), "peers per link: {m:?}");

    // The node mines: the figure follows.
    let moved = wait_for(Duration::from_secs(30), || {
        let h = *get(&a).get("skywave_height")?;
        (h > first).then_some(h)
    });
    assert!(
        moved.is_some(),
        "height stayed at {first}: {}",
        a.log_text()
    );
    let m = get(&a);
    let status = a.status();
    assert!(
        m["skywave_header_height"] >= m["skywave_height"] - 1.0,
        "{m:?} {status}"
    );
    a.stop();
}
