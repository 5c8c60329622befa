//! Commands that talk to a running node through its HTTP API.

use crate::chain::{NetworkParams, Transaction};
use crate::config::{self, Config};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// The API base URL the node running on `dir` recorded.
pub(crate) fn api_base(dir: &Path) -> Result<String> {
    let f = dir.join(config::API_ADDR_FILE);
    let addr = std::fs::read_to_string(&f).with_context(|| {
        format!(
            "no running node found for {} (start one with `skywave --data-dir {} run`)",
            dir.display(),
            dir.display()
        )
    })?;
    Ok(format!("http://{}", addr.trim()))
}

pub(crate) fn request(method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let mut req = client.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {url} (is it running?)"))?;
        let status = resp.status();
        let v: Value = resp.json().await.context("node sent a non-JSON answer")?;
        if !status.is_success() {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            bail!("node answered {status}: {msg}");
        }
        Ok(v)
    })
}

pub(crate) fn get(url: &str) -> Result<Value> {
    request(reqwest::Method::GET, url, None)
}

/// `skywave status`.
pub fn status(dir: &Path, as_json: bool) -> Result<()> {
    let v = get(&format!("{}/api/status", api_base(dir)?))?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let s = |k: &str| {
        v.get(k)
            .map(|x| x.to_string().trim_matches('"').to_string())
    };
    println!(
        "network {}  height {}  tip {}",
        s("network").unwrap_or_default(),
        s("height").unwrap_or_default(),
        s("tip").unwrap_or_default()
    );
    println!(
        "mempool {} tx  callsign {}",
        s("mempool").unwrap_or_default(),
        s("callsign").unwrap_or_default()
    );
    if let Some(links) = v.get("links").and_then(Value::as_array) {
        for l in links {
            println!(
                "link {} {} {}",
                l["id"],
                l["url"].as_str().unwrap_or(""),
                if l["up"].as_bool().unwrap_or(false) {
                    "up"
                } else {
                    "down"
                }
            );
        }
    }
    if let Some(peers) = v.get("peers").and_then(Value::as_array) {
        println!("{} peer(s)", peers.len());
        for p in peers {
            println!(
                "  peer {} {} {} height {} {}",
                p["id"],
                p["remote"].as_str().unwrap_or(""),
                p["callsign"].as_str().unwrap_or(""),
                p["height"],
                if p["ready"].as_bool().unwrap_or(false) {
                    "ready"
                } else {
                    "handshaking"
                }
            );
        }
    }
    Ok(())
}

/// `skywave wallet balance`.
pub fn balance(dir: &Path, as_json: bool) -> Result<()> {
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let addr = crate::keys::address(&key);
    let v = get(&format!("{}/api/accounts/{addr}", api_base(dir)?))?;
    if as_json {
        println!("{v}");
    } else {
        println!("{} {}", v["balance"], addr);
    }
    Ok(())
}

/// Sign a transfer from this data directory's wallet; the nonce comes from the running
/// node unless given.
fn signed_tx(
    dir: &Path,
    to: &str,
    amount: u64,
    fee: Option<u64>,
    nonce: Option<u64>,
) -> Result<Transaction> {
    let cfg = Config::load(dir)?;
    let params = NetworkParams::by_name(&cfg.network).context("unknown network")?;
    let to = super::parse_address(to)?;
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let from = crate::keys::address(&key);
    let nonce = match nonce {
        Some(n) => n,
        None => {
            let acct = get(&format!("{}/api/accounts/{from}", api_base(dir)?))?;
            acct["next_nonce"]
                .as_u64()
                .context("node did not report a nonce")?
        }
    };
    let fee = fee.unwrap_or(params.min_relay_fee);
    Ok(Transaction::sign(
        params.network_id(),
        &key,
        to,
        amount,
        fee,
        nonce,
    ))
}

/// `skywave tx sign`: print a signed transaction as JSON.
pub fn sign(dir: &Path, to: &str, amount: u64, fee: Option<u64>, nonce: Option<u64>) -> Result<()> {
    let tx = signed_tx(dir, to, amount, fee, nonce)?;
    println!("{}", serde_json::to_string(&tx)?);
    Ok(())
}

/// `skywave tx send`.
pub fn send(dir: &Path, to: &str, amount: u64, fee: Option<u64>, as_json: bool) -> Result<()> {
    let tx = signed_tx(dir, to, amount, fee, None)?;
    let base = api_base(dir)?;
    let v = request(
        reqwest::Method::POST,
        &format!("{base}/api/tx"),
        Some(serde_json::to_value(&tx)?),
    )?;
    if as_json {
        println!("{v}");
    } else {
        println!("{}", v["id"].as_str().unwrap_or(""));
    }
    Ok(())
}
