//! Commands that talk to a running node through its HTTP API.

use crate::chain::types::{format_amount, parse_amount};
use crate::chain::{NetworkParams, Transaction};
use crate::config::{self, Config};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// The running node on a data directory, as its API reaches it.
pub(crate) struct Api {
    /// `http://ip:port`.
    pub base: String,
    /// The token from the cookie file (or the config's `api_token`), sent with every
    /// request.
    token: Option<String>,
}

impl Api {
    /// Find the node running on `dir`: the API address and token it recorded there.
    pub fn open(dir: &Path) -> Result<Api> {
        let f = dir.join(config::API_ADDR_FILE);
        let addr = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "no running node found for {} (start one with `skywave --data-dir {} run`)",
                dir.display(),
                dir.display()
            )
        })?;
        let token = std::fs::read_to_string(dir.join(crate::api::COOKIE_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| Config::load(dir).ok().and_then(|c| c.api_token));
        Ok(Api {
            base: format!("http://{}", addr.trim()),
            token,
        })
    }

    /// `GET base + path`.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }

    /// `method base + path`, with the token.
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        request(
            method,
            &format!("{}{path}", self.base),
            self.token.as_deref(),
            body,
        )
    }
}

fn request(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let mut req = client.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
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

/// The network named in `dir`'s config.
pub(crate) fn network_of(dir: &Path) -> Result<String> {
    Ok(Config::load(dir)?.network)
}

/// `skywave wallet balance`.
pub fn balance(dir: &Path, as_json: bool) -> Result<()> {
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let addr = crate::keys::address(&key).to_text(&network_of(dir)?);
    let v = Api::open(dir)?.get(&format!("/api/accounts/{addr}"))?;
    if as_json {
        println!("{v}");
    } else {
        let balance = v["balance"]
            .as_u64()
            .context("node did not report a balance")?;
        println!("{}  {addr}", format_amount(balance));
    }
    Ok(())
}

/// Parse `--amount`: refused when zero (a transfer of nothing only costs its fee).
pub(crate) fn amount_arg(s: &str) -> Result<u64> {
    match parse_amount(s).map_err(anyhow::Error::msg)? {
        0 => bail!("--amount must be above zero"),
        n => Ok(n),
    }
}

/// Parse `--fee`.
pub(crate) fn fee_arg(s: &str) -> Result<u64> {
    parse_amount(s).map_err(anyhow::Error::msg)
}

/// Sign a transfer from this data directory's wallet; the nonce comes from the running
/// node unless given.
fn signed_tx(
    dir: &Path,
    to: &str,
    amount: &str,
    fee: Option<&str>,
    nonce: Option<u64>,
) -> Result<Transaction> {
    let cfg = Config::load(dir)?;
    let params = NetworkParams::by_name(&cfg.network).context("unknown network")?;
    let to = super::parse_address(to, &cfg.network)?;
    let amount = amount_arg(amount)?;
    let fee = fee.map(fee_arg).transpose()?;
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let from = crate::keys::address(&key).to_text(&cfg.network);
    let nonce = match nonce {
        Some(n) => n,
        None => {
            let acct = Api::open(dir)?.get(&format!("/api/accounts/{from}"))?;
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

/// `skywave tx sign`: print a signed transaction as JSON, in the form `POST /api/tx`
/// takes.
pub fn sign(
    dir: &Path,
    to: &str,
    amount: &str,
    fee: Option<&str>,
    nonce: Option<u64>,
) -> Result<()> {
    let tx = signed_tx(dir, to, amount, fee, nonce)?;
    println!("{}", crate::api::tx_json(&tx, &network_of(dir)?));
    Ok(())
}

/// `skywave tx send`: prints the transaction id on stdout (for scripts) and what was
/// sent, in coins, on stderr.
pub fn send(dir: &Path, to: &str, amount: &str, fee: Option<&str>, as_json: bool) -> Result<()> {
    let tx = signed_tx(dir, to, amount, fee, None)?;
    let network = network_of(dir)?;
    let v = Api::open(dir)?.call(
        reqwest::Method::POST,
        "/api/tx",
        Some(crate::api::tx_json(&tx, &network)),
    )?;
    if as_json {
        println!("{v}");
    } else {
        println!("{}", v["id"].as_str().unwrap_or(""));
        let status = v["status"].as_str().unwrap_or("?");
        eprintln!(
            "{status}: {} to {} (fee {})",
            format_amount(tx.amount),
            tx.to.to_text(&network),
            format_amount(tx.fee)
        );
    }
    Ok(())
}
