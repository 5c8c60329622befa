//! `skywave status [--watch]`: the running node at a glance, once or refreshed in place
//! like Reticulum's `rnstatus -m`.

use super::client::Api;
use anyhow::Result;
use serde_json::Value;
use std::fmt::Write;
use std::io::IsTerminal;
use std::path::Path;

/// `skywave status`; with `watch`, redraw every `interval` seconds until interrupted.
/// While watching, a node that stops answering is shown as such and watched for again.
pub fn status(dir: &Path, watch: bool, interval: f64, as_json: bool) -> Result<()> {
    if !watch {
        let api = Api::open(dir)?;
        let s = api.get("/api/status")?;
        if as_json {
            println!("{s}");
        } else {
            let ob = api.get("/api/outbox").ok();
            print!("{}", render(&s, ob.as_ref()));
        }
        return Ok(());
    }
    if !(interval.is_finite() && interval >= 0.2) {
        anyhow::bail!("--interval must be at least 0.2 seconds");
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let view = Api::open(dir).and_then(|api| {
            let s = api.get("/api/status")?;
            let ob = api.get("/api/outbox").ok();
            Ok((s, ob))
        });
        let stamp = crate::driver::utc_text(crate::driver::wall_ms());
        let body = match &view {
            Ok((s, _)) if as_json => format!("{s}\n"),
            Ok((s, ob)) => render(s, ob.as_ref()),
            Err(e) if as_json => format!("{}\n", serde_json::json!({ "error": format!("{e:#}") })),
            Err(e) => format!("node not answering: {e:#}\n"),
        };
        let mut out = String::new();
        if tty && !as_json {
            // Home and clear: the view replaces itself, as `watch` and `rnstatus -m` do.
            out.push_str("\x1b[H\x1b[2J");
        }
        if !as_json {
            let _ = writeln!(out, "{stamp}, every {interval} s (Ctrl-C to stop)\n");
        }
        out.push_str(&body);
        if !tty && !as_json {
            out.push_str("----\n");
        }
        print!("{out}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Bytes for people.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// A duration in seconds for people.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s < 90 => format!("{s} s"),
        s if s < 90 * 60 => format!("{} min", s.div_ceil(60)),
        s => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// The status view: chain and sync, links with traffic and air time, peers, outbox.
pub(crate) fn render(s: &Value, outbox: Option<&Value>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "skywave {}  network {}  callsign {}",
        text(&s["version"]),
        text(&s["network"]),
        text(&s["callsign"])
    );
    let sync = &s["sync"];
    let left = sync["blocks_left"].as_u64().unwrap_or(0);
    let state = if left == 0 {
        "in sync".to_string()
    } else {
        let mut t = format!(
            "syncing {}% of {} ({}), {left} blocks to go",
            text(&sync["progress_pct"]),
            text(&sync["target_height"]),
            text(&sync["target_from"])
        );
        if let (Some(b), Some(r)) = (
            sync["bytes_left"].as_u64(),
            sync["rate_bytes_per_s"].as_u64(),
        ) {
            let _ = write!(
                t,
                ", about {} left at {}/s ({}): {}",
                bytes(b),
                bytes(r),
                text(&sync["rate_from"]),
                duration(sync["seconds_left"].as_u64().unwrap_or(0))
            );
        }
        t
    };
    let _ = writeln!(
        o,
        "height {}  best header {}  {state}",
        text(&s["height"]),
        text(&s["header_height"])
    );
    let _ = writeln!(
        o,
        "tip {}  mempool {} tx",
        text(&s["tip"]),
        text(&s["mempool"])
    );
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    let radio = s["radio"].as_array().cloned().unwrap_or_default();
    let links = s["links"].as_array().cloned().unwrap_or_default();
    o.push('\n');
    for l in &links {
        let (i, out) = peers
            .iter()
            .filter(|p| p["link"] == l["id"])
            .fold((0, 0), |(i, o), p| {
                (
                    i + p["stats"]["bytes_in"].as_u64().unwrap_or(0),
                    o + p["stats"]["bytes_out"].as_u64().unwrap_or(0),
                )
            });
        let _ = writeln!(
            o,
            "link {} {} {}",
            text(&l["id"]),
            text(&l["url"]),
            text(&l["state"])
        );
        let _ = writeln!(o, "  traffic: in {}, out {}", bytes(i), bytes(out));
        if let Some(e) = l["error"].as_str() {
            let _ = writeln!(o, "  last error: {e}");
        }
        if let Some(t) = l["next_retry"].as_str() {
            let _ = writeln!(o, "  next retry: {t}");
        }
        if let Some(r) = radio.iter().find(|r| r["link"] == l["id"]) {
            let air = r["air_ms"].as_u64().unwrap_or(0) / 1000;
            let _ = write!(
                o,
                "  on air {}, duty cycle {} %",
                duration(air),
                text(&r["duty_cycle_pct"])
            );
            match (
                r["duty_budget_ms"].as_u64(),
                r["duty_budget_max_ms"].as_u64(),
            ) {
                (Some(b), Some(m)) => {
                    let _ = writeln!(o, ", budget {} of {} s", b / 1000, m / 1000);
                }
                _ => o.push('\n'),
            }
        }
    }
    let _ = writeln!(o, "\npeers ({})", peers.len());
    if !peers.is_empty() {
        let _ = writeln!(
            o,
            "  {:<10} {:<22} {:>7} {:>5} {:>9}  STATE",
            "CALLSIGN", "ADDRESS", "HEIGHT", "SCORE", "HEARD"
        );
    }
    for p in &peers {
        let _ = writeln!(
            o,
            "  {:<10} {:<22} {:>7} {:>5} {:>9}  {}",
            text(&p["callsign"]),
            text(&p["remote"]),
            text(&p["height"]),
            text(&p["score"]),
            format!(
                "{} ago",
                duration(p["idle_ms"].as_u64().unwrap_or(0) / 1000)
            ),
            if p["ready"].as_bool().unwrap_or(false) {
                "ready"
            } else {
                "handshaking"
            }
        );
    }
    if let Some(ob) = outbox {
        let _ = writeln!(o, "\noutbox {}", outbox_summary(ob));
    }
    o
}

/// Outbox counts by state and its oldest item: `2 pending, 1 held; oldest #3 block to
/// N0CALL-2`.
pub(crate) fn outbox_summary(ob: &Value) -> String {
    let items = ob["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "empty".into();
    }
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for it in &items {
        *counts.entry(text(&it["state"])).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let oldest = items
        .iter()
        .min_by_key(|it| it["created_ms"].as_u64().unwrap_or(u64::MAX));
    match oldest {
        Some(it) => format!(
            "{}; oldest #{} {} to {}",
            counts.join(", "),
            text(&it["id"]),
            text(&it["kind"]),
            text(&it["dest_name"])
        ),
        None => counts.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_view_shows_sync_estimate_traffic_air_time_and_outbox() {
        let s = json!({
            "version": "0.1.0", "network": "regtest", "callsign": "N0CALL-1",
            "height": 10, "header_height": 40, "tip": "ab", "mempool": 0,
            "sync": { "blocks_left": 30, "progress_pct": 25.0, "target_height": 40,
                      "target_from": "best header", "bytes_left": 30000,
                      "rate_bytes_per_s": 150, "rate_from": "line rate", "seconds_left": 200 },
            "links": [{ "id": 1, "state": "up", "url": "kiss+tcp://127.0.0.1:8001" }],
            "radio": [{ "link": 1, "air_ms": 61000, "duty_cycle_pct": 50,
                        "duty_budget_ms": 30000, "duty_budget_max_ms": 120000 }],
            "peers": [{ "link": 1, "callsign": "N0CALL-2", "remote": "N0CALL-2", "height": 40,
                        "score": 0, "idle_ms": 5000, "ready": true,
                        "stats": { "bytes_in": 2500, "bytes_out": 700 } }],
        });
        let ob = json!({ "items": [
            { "id": 4, "state": "pending", "kind": "tx", "created_ms": 9, "dest_name": "N0CALL-2" },
            { "id": 3, "state": "held", "kind": "block", "created_ms": 5, "dest_name": "any peer" },
        ]});
        let v = render(&s, Some(&ob));
        assert!(
            v.contains("syncing 25.0% of 40 (best header), 30 blocks to go"),
            "{v}"
        );
        assert!(
            v.contains("about 30.0 kB left at 150 B/s (line rate): 4 min"),
            "{v}"
        );
        assert!(
            v.contains("link 1 kiss+tcp://127.0.0.1:8001 up\n  traffic: in 2.5 kB, out 700 B"),
            "{v}"
        );
        assert!(
            v.contains("on air 61 s, duty cycle 50 %, budget 30 of 120 s"),
            "{v}"
        );
        assert!(v.contains("CALLSIGN"), "{v}");
        assert!(
            v.contains("outbox 1 held, 1 pending; oldest #3 block to any peer"),
            "{v}"
        );
    }
}
