//! `skywave peers` and `skywave ban`: peer sessions and the ban list of the running node,
//! through its API.

use super::client::Api;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use std::path::Path;

/// `ban` subcommands.
#[derive(Subcommand, Debug)]
pub enum BanCmd {
    /// Refuse an IP address, a CIDR subnet (10.0.0.0/8, 2001:db8::/32) or a callsign.
    Add {
        /// What to ban.
        key: String,
        /// For how long, in hours.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Why (shown in the list).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban (the key exactly as `ban list` shows it).
    Remove {
        /// The ban's key.
        key: String,
    },
    /// Bans in force.
    List,
}

/// Percent-encode a path segment (everything but unreserved characters).
fn encode_segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Milliseconds since the epoch as a UTC date and time.
fn when(ms: u64) -> String {
    crate::driver::utc_minutes(ms)
}

/// Run a `ban` subcommand.
pub fn ban(dir: &Path, cmd: BanCmd, as_json: bool) -> Result<()> {
    let api = Api::open(dir)?;
    match cmd {
        BanCmd::Add { key, hours, reason } => {
            if !(hours.is_finite() && hours > 0.0) {
                anyhow::bail!("--hours must be a positive number");
            }
            let v = api.call(
                reqwest::Method::POST,
                "/api/bans",
                Some(json!({ "key": key, "hours": hours, "reason": reason })),
            )?;
            if as_json {
                println!("{v}");
            } else {
                println!(
                    "banned {} until {}",
                    v["key"].as_str().unwrap_or(&key),
                    when(v["until_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        BanCmd::Remove { key } => {
            let v = api.call(
                reqwest::Method::DELETE,
                &format!("/api/bans/{}", encode_segment(&key)),
                None,
            )?;
            if as_json {
                println!("{v}");
            } else {
                println!("ban on {key} lifted");
            }
        }
        BanCmd::List => {
            let v = api.get("/api/bans")?;
            if as_json {
                println!("{v}");
                return Ok(());
            }
            let bans = v["bans"].as_array().cloned().unwrap_or_default();
            if bans.is_empty() {
                println!("no bans");
            }
            for b in bans {
                println!(
                    "{:<24} until {}  {}",
                    b["key"].as_str().unwrap_or(""),
                    when(b["until_ms"].as_u64().unwrap_or(0)),
                    b["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// `skywave peers`.
pub fn peers(dir: &Path, as_json: bool) -> Result<()> {
    let v = Api::open(dir)?.get("/api/peers")?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let list = v["peers"].as_array().cloned().unwrap_or_default();
    println!("{} peer(s)", list.len());
    if !list.is_empty() {
        println!(
            "{:>4} {:<6} {:<3} {:<22} {:<10} {:<6} {:<5} {:<11} {:<9} AGENT",
            "ID", "LINK", "DIR", "ADDRESS", "CALLSIGN", "HEIGHT", "SCORE", "STATE", "HEARD"
        );
    }
    for p in list {
        let state = if p["ready"].as_bool().unwrap_or(false) {
            "ready"
        } else {
            "handshaking"
        };
        let dir = if p["outbound"].as_bool().unwrap_or(false) {
            "out"
        } else {
            "in"
        };
        let heard = format!("{} s ago", p["idle_ms"].as_u64().unwrap_or(0) / 1000);
        println!(
            "{:>4} {:<6} {:<3} {:<22} {:<10} {:<6} {:<5} {:<11} {:<9} {}",
            p["id"].to_string(),
            p["link"].to_string(),
            dir,
            p["remote"].as_str().unwrap_or(""),
            p["callsign"].as_str().unwrap_or(""),
            p["height"].to_string(),
            p["score"].to_string(),
            state,
            heard,
            p["user_agent"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// `skywave peers --addrs`: the address book.
pub fn addrs(dir: &Path, as_json: bool) -> Result<()> {
    let v = Api::open(dir)?.get("/api/peers/addrs")?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let list = v["addrs"].as_array().cloned().unwrap_or_default();
    println!("{} address(es)", list.len());
    if !list.is_empty() {
        println!(
            "{:<40} {:<14} {:<5} {:<5} {:<12} TRIED",
            "ADDRESS", "SOURCE", "GOOD", "FAILS", "HEARD"
        );
    }
    let ago = |v: &serde_json::Value| match v.as_u64() {
        Some(ms) => format!("{} s ago", ms / 1000),
        None => "never".into(),
    };
    for a in list {
        println!(
            "{:<40} {:<14} {:<5} {:<5} {:<12} {}",
            a["addr"].as_str().unwrap_or(""),
            a["source"].as_str().unwrap_or(""),
            if a["good"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            a["fails"].to_string(),
            ago(&a["heard_ms_ago"]),
            ago(&a["tried_ms_ago"]),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_segment("10.0.0.0/8"), "10.0.0.0%2F8");
        assert_eq!(encode_segment("2001:db8::/32"), "2001%3Adb8%3A%3A%2F32");
        assert_eq!(encode_segment("N0CALL-2"), "N0CALL-2");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(when(1_790_000_000_000), "2026-09-21 14:13 UTC");
    }
}
