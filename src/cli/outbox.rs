//! `skywave outbox`: inspect and steer the running node's outbox through its API.

use super::client::Api;
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;
use std::path::Path;

/// `outbox` subcommands.
#[derive(Subcommand, Debug)]
pub enum OutboxCmd {
    /// List items with their state, attempts, next attempt and destination (the peer's
    /// callsign when known).
    List,
    /// Stop sending an item until released.
    Hold {
        /// Item id (from `outbox list`).
        id: u64,
    },
    /// Resume sending a held item.
    Release {
        /// Item id.
        id: u64,
    },
    /// Forget an item (counted as dropped).
    Drop {
        /// Item id.
        id: u64,
    },
    /// Send an item now (an expired item is tried again).
    Retry {
        /// Item id.
        id: u64,
    },
}

/// Run an `outbox` subcommand.
pub fn run(dir: &Path, cmd: OutboxCmd, as_json: bool) -> Result<()> {
    let api = Api::open(dir)?;
    let (id, verb) = match cmd {
        OutboxCmd::List => return list(&api, as_json),
        OutboxCmd::Hold { id } => (id, "hold"),
        OutboxCmd::Release { id } => (id, "release"),
        OutboxCmd::Drop { id } => (id, "drop"),
        OutboxCmd::Retry { id } => (id, "retry"),
    };
    let v = api.call(
        reqwest::Method::POST,
        &format!("/api/outbox/{id}/{verb}"),
        None,
    )?;
    if as_json {
        println!("{v}");
    } else {
        println!("item {id}: {verb} done");
    }
    Ok(())
}

fn list(api: &Api, as_json: bool) -> Result<()> {
    let v = api.get("/api/outbox")?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let now = crate::driver::now_ms();
    let items = v["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:>6}  {:<8} {:<5} {:<16} {:<16} {:>8}  {:<12}",
        "id", "state", "kind", "item", "dest", "attempts", "next attempt"
    );
    for it in &items {
        let short = |k: &str| -> String { it[k].as_str().unwrap_or("").chars().take(16).collect() };
        let next = it["next_attempt_ms"].as_u64().unwrap_or(0);
        let when = if it["state"] != "pending" {
            "-".to_string()
        } else if next <= now {
            "due".to_string()
        } else {
            format!("in {} s", (next - now).div_ceil(1000))
        };
        println!(
            "{:>6}  {:<8} {:<5} {:<16} {:<16} {:>8}  {:<12}",
            it["id"].to_string(),
            it["state"].as_str().unwrap_or("?"),
            it["kind"].as_str().unwrap_or("?"),
            short("hash"),
            short("dest_name"),
            it["attempts"].to_string(),
            when
        );
    }
    let t = &v["totals"];
    println!(
        "{} items; lifetime: {} queued, {} delivered, {} dropped; refused since start: {}",
        items.len(),
        num(&t["enqueued"]),
        num(&t["delivered"]),
        num(&t["dropped"]),
        num(&v["refused"])
    );
    Ok(())
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}
