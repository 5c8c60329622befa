//! The HTTP API (axum), loopback by default. Handlers ask the node through the driver
//! ([`Shared::call`]), take what they need and build their answers outside; a node with
//! [`crate::driver::REQUEST_QUEUE`] requests waiting answers 503 at once.
//!
//! Addresses in requests and answers are in their checksummed text form (`rsky1...` on
//! regtest, see [`Address::to_text`]); amounts are integers in base units, with a
//! `*_text` companion in coins for people (`0.00500000 SKY`). Access rules: [`auth`].

pub mod auth;
pub mod metrics;

pub use auth::{ApiAuth, COOKIE_FILE};

use crate::chain::params::NetworkParams;
use crate::chain::types::format_amount;
use crate::chain::validate::ValidationError;
use crate::chain::{Address, Block, ChainError, Coinbase, Hash, Sig, Transaction};
use crate::driver::{now_ms, Shared, Unanswered};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Build the API router, every route behind `auth`.
pub fn router(shared: Arc<Shared>, auth: Arc<ApiAuth>) -> Router {
    Router::new()
        .route("/", get(page_index))
        .route("/page/app.js", get(page_js))
        .route("/page/style.css", get(page_css))
        .route("/metrics", get(metrics_text))
        .route("/api/health", get(health))
        .route("/api/ready", get(ready))
        .route("/api/peers", get(peers))
        .route("/api/peers/addrs", get(peer_addrs))
        .route("/api/bans", get(bans_list).post(bans_add))
        .route("/api/bans/{key}", axum::routing::delete(bans_remove))
        .route("/api/status", get(status))
        .route("/api/blocks/{id}", get(block))
        .route("/api/tx/{id}", get(tx_get))
        .route("/api/tx", axum::routing::post(tx_post))
        .route("/api/mempool", get(mempool))
        .route("/api/accounts/{addr}", get(account))
        .route("/api/outbox", get(outbox_list))
        .route("/api/outbox/{id}/{cmd}", axum::routing::post(outbox_cmd))
        .route("/api/mine", axum::routing::post(mine))
        .route("/api/events", get(events))
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
}

// The status page, embedded: no build step, nothing fetched from elsewhere.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/style.css");

async fn page_index() -> Response {
    page(PAGE_HTML, "text/html; charset=utf-8")
}

async fn page_js() -> Response {
    page(PAGE_JS, "text/javascript; charset=utf-8")
}

async fn page_css() -> Response {
    page(PAGE_CSS, "text/css; charset=utf-8")
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads only its own script and style and talks only to this API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s).await?,
    )
        .into_response())
}

/// An error answer: status code and a JSON `{"error": ...}` body.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Unanswered> for ApiError {
    fn from(e: Unanswered) -> ApiError {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
}

async fn health() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// Readiness: the store answers, the chain is loaded, the link tasks were started and at
/// least one link is up. `not_ready` says in words which of these is missing.
async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if !s.links_started.load(Ordering::SeqCst) {
        // The driver answers requests only once its links are started: asking it now
        // would leave a probe waiting instead of telling it why the node is not ready.
        let sum = s.summary();
        let body = json!({
            "ready": false, "not_ready": ["the links are not started yet"],
            "store": null, "chain": true, "links_started": false, "links": 0,
            "links_up": 0, "height": sum.height, "header_height": sum.header_height,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let (store_ok, height, header_height) = match s
        .call(|n, _| {
            let chain = n.chain();
            let ok = chain
                .store()
                .conn()
                .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_ok();
            (ok, chain.tip().height, chain.best_header().height)
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (links, links_up, down) = s
        .links
        .lock()
        .map(|l| {
            // The peer-exchange link only carries sessions the configured links led to.
            let l: Vec<_> = l
                .iter()
                .filter(|x| x.url != crate::driver::PEX_LINK_NAME)
                .collect();
            let down: Vec<String> = l
                .iter()
                .filter(|x| !x.up)
                .map(|x| match &x.error {
                    Some(e) => format!("{} is {}: {e}", x.url, x.state),
                    None => format!("{} is {}", x.url, x.state),
                })
                .collect();
            (l.len(), l.iter().filter(|x| x.up).count(), down)
        })
        .unwrap_or_default();
    let stopping = s.stopping.load(Ordering::SeqCst);
    let mut not_ready = Vec::new();
    if !store_ok {
        not_ready.push("the store does not answer".to_string());
    }
    if links == 0 {
        not_ready.push("no links are configured".to_string());
    } else if links_up == 0 {
        not_ready.push(format!("no link is up ({})", down.join("; ")));
    }
    if stopping {
        not_ready.push("the node is stopping".to_string());
    }
    let ready = not_ready.is_empty();
    let body = json!({
        "ready": ready, "not_ready": not_ready, "store": store_ok, "chain": true,
        "links_started": true, "links": links, "links_up": links_up,
        "height": height, "header_height": header_height,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn peers(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let peers = s.call(|n, now| n.peers(now)).await?;
    Ok(Json(json!({ "count": peers.len(), "peers": peers })))
}

async fn peer_addrs(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let addrs = s.call(|n, now| n.address_book(now)).await?;
    Ok(Json(json!({ "count": addrs.len(), "addrs": addrs })))
}

async fn bans_list(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let bans = s.call(|n, now| n.bans(now)).await?;
    Ok(Json(json!({ "count": bans.len(), "bans": bans })))
}

/// `POST /api/bans` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// IP address, CIDR subnet or callsign.
    pub key: String,
    /// Length in hours (default 24).
    pub hours: Option<f64>,
    /// Why (for the list).
    #[serde(default)]
    pub reason: String,
}

async fn bans_add(
    State(s): State<Arc<Shared>>,
    body: Result<Json<BanRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) =
        body.map_err(|e| bad(format!("expected {{\"key\", \"hours\", \"reason\"}}: {e}")))?;
    let hours = req.hours.unwrap_or(24.0);
    let max_h = crate::node::MAX_BAN_MS / 3_600_000;
    if !(hours > 0.0 && hours <= max_h as f64) {
        return Err(bad(format!("hours must be above 0 and at most {max_h}")));
    }
    let res = s
        .call(move |n, now| n.ban(now, &req.key, (hours * 3_600_000.0) as u64, &req.reason))
        .await?;
    res.map(|b| Json(json!(b))).map_err(bad)
}

/// `DELETE /api/bans/{key}` (the key URL-encoded: `10.0.0.0%2F8`).
async fn bans_remove(
    State(s): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let k = key.clone();
    match s.call(move |n, _| n.unban(&k)).await? {
        Ok(true) => Ok(Json(json!({ "key": key, "removed": true }))),
        Ok(false) => Err(not_found(format!("no ban on '{key}'"))),
        Err(e) => Err(bad(e)),
    }
}

/// `GET /api/status` body.
#[derive(Serialize)]
pub struct Status {
    /// Network name.
    pub network: String,
    /// Network id (hex).
    pub network_id: String,
    /// Best chain height.
    pub height: u64,
    /// Best block hash.
    pub tip: Hash,
    /// Cumulative work of the best chain (decimal string: it may exceed 2^53).
    pub work: String,
    /// Height of the best known header chain (ahead of `height` while syncing).
    pub header_height: u64,
    /// Transactions waiting in the mempool.
    pub mempool: usize,
    /// Operator's callsign.
    pub callsign: String,
    /// Node public key (hex).
    pub node_id: String,
    /// Peer sessions.
    pub peers: Vec<crate::node::PeerSummary>,
    /// Links.
    pub links: Vec<crate::driver::LinkStatus>,
    /// Air time of packet radio links: `{link, air_ms, duty_cycle_pct, duty_budget_ms,
    /// duty_budget_max_ms}` each (the budget is the air time the cap allows at once now).
    pub radio: Vec<Value>,
    /// Sync progress and its estimate, see [`sync_estimate`].
    pub sync: Value,
    /// Peers disconnected for misbehaviour since start.
    pub misbehaviours: u64,
    /// Software version.
    pub version: String,
}

async fn status(State(s): State<Arc<Shared>>) -> Result<Json<Status>, ApiError> {
    let links = s.links.lock().map(|l| l.clone()).unwrap_or_default();
    let misbehaviours = s.misbehaviours.load(Ordering::Relaxed);
    // Small (a few peers and links): built on the node's side in one go.
    let status = s
        .call(move |n, now| status_of(n, now, links, misbehaviours))
        .await?;
    Ok(Json(status))
}

fn status_of(
    node: &crate::node::Node,
    now: u64,
    links: Vec<crate::driver::LinkStatus>,
    misbehaviours: u64,
) -> Status {
    let chain = node.chain();
    let tip = chain.tip();
    let peers = node.peers(now);
    Status {
        network: chain.params().name.to_string(),
        network_id: hex::encode(chain.params().network_id()),
        height: tip.height,
        tip: tip.hash,
        work: tip.work.to_string(),
        header_height: chain.best_header().height,
        mempool: chain.mempool_len(),
        callsign: node.config().callsign.clone(),
        node_id: hex::encode(node.node_id()),
        sync: sync_estimate(node, &peers),
        peers,
        radio: links
            .iter()
            .filter_map(|l| {
                let p = node.packet_stats(l.id)?;
                Some(json!({
                    "link": l.id, "air_ms": p.air_ms,
                    "duty_cycle_pct": node.config().peers.duty_cycle_pct,
                    "duty_budget_ms": p.duty_budget_ms.map(|b| b.0),
                    "duty_budget_max_ms": p.duty_budget_ms.map(|b| b.1),
                    "duty_waits": p.duty_waits,
                }))
            })
            .collect(),
        links,
        misbehaviours,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// How far the chain is from the best height known (the best header, or a peer's tip
/// if one claims more), and a guess at what is left: blocks times the average block
/// size seen, at the rate of the link to the best peer (its line rate on radio, what the
/// session has carried so far on TCP). Unknown parts are `null`.
pub fn sync_estimate(node: &crate::node::Node, peers: &[crate::node::PeerSummary]) -> Value {
    let chain = node.chain();
    let height = chain.tip().height;
    let header = chain.best_header().height;
    let best_peer = peers.iter().filter(|p| p.ready).max_by_key(|p| p.height);
    let (target, source) = match best_peer {
        Some(p) if p.height > header => (
            p.height,
            format!(
                "tip of peer {}",
                if p.callsign.is_empty() {
                    &p.remote
                } else {
                    &p.callsign
                }
            ),
        ),
        _ => (header, "best header".to_string()),
    };
    let blocks_left = target.saturating_sub(height);
    let bytes_left = blocks_left.saturating_mul(node.avg_block_bytes());
    // The peer that will feed us: the best one, else any ready one.
    let feeder = best_peer.filter(|p| p.height > height);
    let rate = feeder.and_then(|p| {
        let caps = node.links().get(&p.link)?;
        if caps.bitrate_bps > 0 {
            Some((caps.bitrate_bps / 8, "line rate"))
        } else if p.connected_ms >= 1000 && p.stats.bytes_in > 0 {
            Some((
                p.stats.bytes_in.saturating_mul(1000) / p.connected_ms,
                "measured",
            ))
        } else {
            None
        }
    });
    let rate = rate.filter(|r| r.0 > 0);
    let progress = if target == 0 {
        100.0
    } else {
        (height.min(target) as f64 * 100.0 / target as f64 * 10.0).floor() / 10.0
    };
    json!({
        "target_height": target,
        "target_from": source,
        "blocks_left": blocks_left,
        "progress_pct": progress,
        "bytes_left": (blocks_left > 0).then_some(bytes_left),
        "rate_bytes_per_s": rate.map(|r| r.0),
        "rate_from": rate.map(|r| r.1),
        "seconds_left": rate.filter(|_| blocks_left > 0).map(|r| bytes_left.div_ceil(r.0)),
    })
}

fn block_json(b: &Block, main_chain: bool, network: &str) -> Value {
    json!({
        "hash": b.hash(),
        "height": b.header.height,
        "main_chain": main_chain,
        "size": b.encoded_len(),
        "header": b.header,
        "coinbase": coinbase_json(&b.coinbase, network),
        "txs": b.txs.iter().map(|t| tx_json(t, network)).collect::<Vec<_>>(),
    })
}

fn coinbase_json(c: &Coinbase, network: &str) -> Value {
    json!({
        "height": c.height,
        "to": c.to.to_text(network),
        "amount": c.amount,
        "amount_text": format_amount(c.amount),
    })
}

/// A transaction as the API and `tx sign` show it: what [`TxBody`] reads back, plus its
/// id and the amounts in coins.
pub fn tx_json(t: &Transaction, network: &str) -> Value {
    json!({
        "id": t.id(),
        "from": t.from.to_text(network),
        "to": t.to.to_text(network),
        "amount": t.amount,
        "amount_text": format_amount(t.amount),
        "fee": t.fee,
        "fee_text": format_amount(t.fee),
        "nonce": t.nonce,
        "sig": t.sig,
    })
}

/// `POST /api/tx` body: a signed transaction, addresses in their text form. Extra
/// fields that [`tx_json`] adds (`id`, `*_text`) are ignored.
#[derive(Deserialize)]
pub struct TxBody {
    /// Sender address.
    pub from: String,
    /// Recipient address.
    pub to: String,
    /// Amount in base units.
    pub amount: u64,
    /// Fee in base units.
    pub fee: u64,
    /// Sender nonce.
    pub nonce: u64,
    /// Signature (hex).
    pub sig: Sig,
}

impl TxBody {
    /// The transaction, with both addresses checked for `network`.
    pub fn into_tx(self, network: &str) -> Result<Transaction, String> {
        let from = Address::parse(&self.from, network).map_err(|e| format!("from: {e}"))?;
        let to = Address::parse(&self.to, network).map_err(|e| format!("to: {e}"))?;
        Ok(Transaction {
            from,
            to,
            amount: self.amount,
            fee: self.fee,
            nonce: self.nonce,
            sig: self.sig,
        })
    }
}

async fn block(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let by_height = id.parse::<u64>().ok();
    let by_hash = match by_height {
        Some(_) => None,
        None => Some(
            Hash::from_hex(&id)
                .map_err(|_| bad("expected a height or a 64-hex-digit block hash"))?,
        ),
    };
    let (b, main, network) = s
        .call(move |n, _| -> Result<_, ApiError> {
            let chain = n.chain();
            let hash = match (by_hash, by_height) {
                (Some(h), _) => h,
                (None, h) => {
                    let h = h.unwrap_or(0);
                    chain
                        .main_hash_at(h)
                        .ok_or_else(|| not_found(format!("no block at height {h}")))?
                }
            };
            let b = chain
                .block(&hash)
                .map_err(|e| internal(e.to_string()))?
                .ok_or_else(|| not_found(format!("no block {hash}")))?;
            Ok((b, chain.is_on_main_chain(&hash), chain.params().name))
        })
        .await??;
    Ok(Json(block_json(&b, main, network)))
}

async fn tx_get(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Hash::from_hex(&id).map_err(|_| bad("expected a 64-hex-digit transaction id"))?;
    let (found, network, tip) = s
        .call(move |n, _| {
            let chain = n.chain();
            (
                chain.find_tx(&id).map_err(|e| internal(e.to_string())),
                chain.params().name,
                chain.tip().height,
            )
        })
        .await?;
    match found? {
        Some((tx, Some((block, height)))) => Ok(Json(json!({
            "tx": tx_json(&tx, network), "status": "confirmed", "block": block, "height": height,
            "confirmations": tip.saturating_sub(height) + 1,
        }))),
        Some((tx, None)) => Ok(Json(
            json!({ "tx": tx_json(&tx, network), "status": "mempool" }),
        )),
        None => Err(not_found(format!("no transaction {id}"))),
    }
}

/// `POST /api/tx`. A transaction the chain already holds is not submitted again: the
/// answer says where it is (`confirmed` with its block, or `mempool`), so a resubmission
/// is never reported as newly `accepted`.
async fn tx_post(
    State(s): State<Arc<Shared>>,
    body: Result<Json<TxBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| bad(format!("not a transaction: {e}")))?;
    let network = s.summary().network;
    let tx = body.into_tx(network).map_err(bad)?;
    let id = tx.id();
    // The signature is checked here, on the API's threads, so that the node's own thread
    // (one for everything) does not spend its time on it.
    let network_id = NetworkParams::by_name(network)
        .map(|p| p.network_id())
        .ok_or_else(|| internal(format!("unknown network {network}")))?;
    let tx = tx.verified(network_id).ok_or_else(|| {
        let e = ChainError::InvalidTx {
            id,
            reason: ValidationError::BadSignature(id),
        };
        bad(format!("transaction refused: {e}"))
    })?;
    let res = s
        .call(move |node, now| -> Result<_, ApiError> {
            let chain = node.chain();
            match chain.find_tx(&id).map_err(|e| internal(e.to_string()))? {
                Some((_, Some((block, height)))) => {
                    let confirmations = chain.tip().height.saturating_sub(height) + 1;
                    Ok(Err(json!({
                        "id": id, "status": "confirmed", "block": block, "height": height,
                        "confirmations": confirmations,
                    })))
                }
                Some((_, None)) => Ok(Err(json!({ "id": id, "status": "mempool" }))),
                None => Ok(Ok(node.submit_verified_tx(now, tx))),
            }
        })
        .await??;
    // Already held: where it is, not `accepted`.
    let res = match res {
        Ok(r) => r,
        Err(known) => return Ok(Json(known)),
    };
    match res {
        Ok(id) => Ok(Json(json!({ "id": id, "status": "accepted" }))),
        Err(e) => Err(bad(format!("transaction refused: {e}"))),
    }
}

async fn mempool(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let (network, txs) = s
        .call(|n, _| (n.chain().params().name, n.chain().mempool_txs()))
        .await?;
    Ok(Json(json!({
        "count": txs.len(),
        "txs": txs.iter().map(|t| tx_json(t, network)).collect::<Vec<_>>(),
    })))
}

async fn account(
    State(s): State<Arc<Shared>>,
    Path(addr): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let network = s.summary().network;
    let a = Address::parse(&addr, network).map_err(|e| bad(e.to_string()))?;
    let (acct, next_nonce) = s
        .call(move |n, _| (n.chain().account(&a), n.chain().next_nonce(&a)))
        .await?;
    Ok(Json(json!({
        "address": a.to_text(network),
        "balance": acct.balance,
        "balance_text": format_amount(acct.balance),
        "nonce": acct.nonce,
        "next_nonce": next_nonce,
    })))
}

/// `GET /api/outbox`: the node's view, each item with `dest_name`, its destination as
/// an operator knows it: the callsign the peer gave at its last handshake (the node
/// records it), else the start of its node id (`dest` keeps the whole id).
async fn outbox_list(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let (view, peers) = s
        .call(|n, _| (n.outbox(), n.chain().store().peers().unwrap_or_default()))
        .await?;
    let known: std::collections::HashMap<String, String> = peers
        .into_iter()
        .filter_map(|(row, _, call)| Some((row.strip_prefix("node:")?.to_string(), call)))
        .collect();
    let mut v = json!(view);
    if let Some(items) = v["items"].as_array_mut() {
        for it in items {
            let dest = it["dest"].as_str().unwrap_or("").to_string();
            let name = match known.get(&dest) {
                _ if dest == "any" => "any peer".to_string(),
                Some(call) if !call.is_empty() => call.clone(),
                _ => format!("node {}", dest.get(..12).unwrap_or(&dest)),
            };
            it["dest_name"] = json!(name);
        }
    }
    Ok(Json(v))
}

/// `POST /api/outbox/{id}/hold|release|drop|retry`.
async fn outbox_cmd(
    State(s): State<Arc<Shared>>,
    Path((id, cmd)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| bad(format!("'{id}' is not an outbox item id")))?;
    let c = crate::outbox::Command::parse(&cmd).ok_or_else(|| {
        not_found(format!(
            "no outbox command '{cmd}' (hold, release, drop, retry)"
        ))
    })?;
    let res = s.call(move |n, now| n.outbox_command(now, id, c)).await?;
    match res {
        Ok(()) => Ok(Json(json!({ "id": id, "done": cmd }))),
        Err(e) if e.starts_with("no outbox item") => Err(not_found(e)),
        Err(e) => Err(bad(e)),
    }
}

/// Most `GET /api/events` streams open at once (each holds a connection and a receiver).
pub const MAX_EVENT_STREAMS: usize = 16;

static EVENT_STREAMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the [`MAX_EVENT_STREAMS`], given back when the stream ends.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        let prev = EVENT_STREAMS.fetch_add(1, Ordering::SeqCst);
        if prev >= MAX_EVENT_STREAMS {
            EVENT_STREAMS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        EVENT_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a status display needs to hear of a node event: its name and a little data, or
/// nothing.
fn sse_event(e: &crate::node::NodeEvent) -> Option<axum::response::sse::Event> {
    use crate::node::NodeEvent;
    let (name, data) = match e {
        NodeEvent::TipChanged { tip, .. } => {
            ("tip", json!({ "height": tip.height, "hash": tip.hash }))
        }
        NodeEvent::TxAccepted { id, .. } => ("tx", json!({ "id": id })),
        NodeEvent::PeerReady { .. } | NodeEvent::Disconnect { .. } => ("peers", json!({})),
        _ => return None,
    };
    Some(
        axum::response::sse::Event::default()
            .event(name)
            .data(data.to_string()),
    )
}

/// How often an event stream looks for changes that no node event announces (a link
/// going down, an outbox item delivered or retried).
const EVENT_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// How often an event stream sends `peers` while there are peers, so that "last heard"
/// on a page stays current.
const PEERS_REFRESH_MS: u64 = 10_000;

/// What an event stream compares between checks: link states, and outbox figures that
/// move as items are queued, sent, delivered, held or dropped.
#[derive(Default, PartialEq)]
struct Watched {
    links: Vec<(String, Option<String>, Option<u64>)>,
    outbox: (usize, usize, u64, u64, u64, u64),
    peers: usize,
}

/// `None` when the node did not answer (busy): look again at the next check.
async fn watched(s: &Shared) -> Option<Watched> {
    let links = s
        .links
        .lock()
        .map(|l| {
            l.iter()
                .map(|x| (x.state.clone(), x.error.clone(), x.next_retry_ms))
                .collect()
        })
        .unwrap_or_default();
    let (outbox, peers) = s
        .call(|node, now| {
            let ob = node.outbox();
            let held = ob
                .items
                .iter()
                .filter(|i| i.state == crate::outbox::State::Held)
                .count();
            (
                (
                    ob.items.len(),
                    held,
                    ob.totals.enqueued,
                    ob.totals.delivered,
                    ob.totals.dropped,
                    ob.stats.pushes,
                ),
                node.peers(now).len(),
            )
        })
        .await
        .ok()?;
    Some(Watched {
        links,
        outbox,
        peers,
    })
}

/// `GET /api/events`: server-sent events so that a page redraws when something happens
/// instead of polling: `tip`, `tx` and `peers` from the node, `links` and `outbox` when
/// a check every 2 s sees them change, `peers` every 10 s while there are peers, and
/// `lagged` when some were missed. At most [`MAX_EVENT_STREAMS`] at once; each ends when
/// the node stops.
async fn events(State(s): State<Arc<Shared>>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let Some(slot) = StreamSlot::take() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many event streams open (at most {MAX_EVENT_STREAMS})"),
        )
        .into_response();
    };
    let rx = s.events.subscribe();
    let tick = tokio::time::interval(EVENT_CHECK);
    let seen = watched(&s).await.unwrap_or_default();
    let start = (
        rx,
        s,
        slot,
        tick,
        seen,
        now_ms(),
        std::collections::VecDeque::<Event>::new(),
    );
    let stream = futures_util::stream::unfold(
        start,
        |(mut rx, s, slot, mut tick, mut seen, mut peers_sent, mut queue)| async move {
            loop {
                // The shutdown waits for open connections: look at `stopping` often.
                if s.stopping.load(Ordering::SeqCst) {
                    return None;
                }
                if let Some(ev) = queue.pop_front() {
                    let state = (rx, s, slot, tick, seen, peers_sent, queue);
                    return Some((Ok::<_, std::convert::Infallible>(ev), state));
                }
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(e) => queue.extend(sse_event(&e)),
                        Err(RecvError::Lagged(_)) => {
                            queue.push_back(Event::default().event("lagged").data("{}"))
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = tick.tick() => {
                        let Some(now) = watched(&s).await else { continue };
                        let t = now_ms();
                        if now.outbox != seen.outbox {
                            queue.push_back(Event::default().event("outbox").data("{}"));
                        }
                        if now.links != seen.links {
                            queue.push_back(Event::default().event("links").data("{}"));
                        }
                        if now.peers > 0 && t.saturating_sub(peers_sent) >= PEERS_REFRESH_MS {
                            peers_sent = t;
                            queue.push_back(Event::default().event("peers").data("{}"));
                        }
                        seen = now;
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Most blocks one `POST /api/mine` may ask for.
pub const MAX_MINE_BLOCKS: u64 = 1000;

/// `POST /api/mine` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MineRequest {
    /// How many blocks (1 to [`MAX_MINE_BLOCKS`]).
    pub blocks: u64,
    /// Address the coinbases pay.
    pub to: String,
}

/// `POST /api/mine`, regtest only (as bitcoind's `generatetoaddress`): mine `blocks`
/// blocks on the node's tip, each submitted and relayed like one the miner found.
async fn mine(
    State(s): State<Arc<Shared>>,
    body: Result<Json<MineRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| bad(format!("expected {{\"blocks\", \"to\"}}: {e}")))?;
    let network = s.summary().network;
    if network != "regtest" {
        return Err(not_found(format!(
            "mining on demand exists only on regtest (this node is on {network})"
        )));
    }
    if !(1..=MAX_MINE_BLOCKS).contains(&req.blocks) {
        return Err(bad(format!("blocks must be 1 to {MAX_MINE_BLOCKS}")));
    }
    let to = Address::parse(&req.to, network).map_err(|e| bad(format!("to: {e}")))?;
    // Hashing must not stall the runtime; the node is asked only for a template and to
    // take the block.
    let shared = s.clone();
    let mined = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut mined = Vec::new();
        for _ in 0..req.blocks {
            let time = crate::driver::wall_ms() / 1000;
            let mut block = shared
                .call_blocking(move |n, _| n.chain().block_template(to, time))
                .map_err(ApiError::from)?;
            while !crate::chain::pow::mine(&mut block.header, 100_000) {
                if shared.stopping.load(Ordering::SeqCst) {
                    return Err(internal("the node is stopping"));
                }
            }
            let (hash, height, txs) = (block.hash(), block.header.height, block.txs.len());
            let res = shared
                .call_blocking(move |n, now| n.submit_block(now, block))
                .map_err(ApiError::from)?;
            res.map_err(|e| internal(format!("mined block {height} refused: {e}")))?;
            mined.push(json!({ "height": height, "hash": hash, "txs": txs }));
        }
        Ok(mined)
    })
    .await
    .map_err(|e| internal(format!("the miner failed: {e}")))??;
    let height = s.call(|n, _| n.chain().tip().height).await?;
    Ok(Json(json!({ "mined": mined, "height": height })))
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    auth: Arc<ApiAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared, auth))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{params, Chain};
    use crate::driver::{self, DriverOptions};
    use crate::node::{Node, NodeConfig};
    use crate::store::Store;

    fn node() -> Node {
        let chain = Chain::open(params::regtest(), Store::open_in_memory().unwrap()).unwrap();
        Node::new(
            chain,
            NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                callsign: "N0CALL-1".into(),
                seed: 1,
                user_agent: "test".into(),
                peers: Default::default(),
            },
        )
    }

    /// A node whose driver runs (it answers the handlers' requests), with no links.
    fn shared() -> Arc<Shared> {
        let opts = DriverOptions {
            links: Vec::new(),
            mine_to: None,
            callsign: "N0CALL-1".into(),
            custom_links: Vec::new(),
            mine_until_height: None,
        };
        let (s, fut) = driver::start(node(), opts);
        tokio::spawn(fut);
        s
    }

    async fn not_ready(r: Response) -> (StatusCode, Value) {
        let code = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (
            code,
            serde_json::from_slice::<Value>(&body).unwrap()["not_ready"].clone(),
        )
    }

    /// Before the driver has started its links (it answers nobody until then), `ready`
    /// says so at once instead of leaving the probe waiting.
    #[tokio::test]
    async fn ready_says_at_once_that_the_links_are_not_started() {
        use futures_util::FutureExt;
        let opts = DriverOptions {
            links: Vec::new(),
            mine_to: None,
            callsign: "N0CALL-1".into(),
            custom_links: Vec::new(),
            mine_until_height: None,
        };
        // The driver is not run: its links are never started.
        let (s, _driver) = driver::start(node(), opts);
        let r = ready(State(s))
            .now_or_never()
            .expect("ready answers without the driver");
        let (code, why) = not_ready(r).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(why, json!(["the links are not started yet"]));
    }

    #[tokio::test]
    async fn ready_only_once_links_are_started_and_one_is_up() {
        let s = shared();
        // The driver starts its links (none here) before it answers.
        s.call(|_, _| ()).await.unwrap();
        assert!(s.links_started.load(Ordering::SeqCst));
        let (code, why) = not_ready(ready(State(s.clone())).await).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "no links at all");
        assert_eq!(why, json!(["no links are configured"]));
        s.links.lock().unwrap().push(crate::driver::LinkStatus {
            id: 1,
            url: "tcp://127.0.0.1:1".into(),
            up: false,
            state: "down".into(),
            caps: None,
            error: Some("cannot connect".into()),
            next_retry_ms: None,
            next_retry: None,
            since_ms: 0,
        });
        let (code, why) = not_ready(ready(State(s.clone())).await).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "link down");
        assert_eq!(
            why,
            json!(["no link is up (tcp://127.0.0.1:1 is down: cannot connect)"])
        );
        s.links.lock().unwrap()[0].up = true;
        let r = ready(State(s.clone())).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = health().await;
        assert_eq!(r.0["ok"], true);
    }

    fn peer(link: u32, height: u64, bytes_in: u64) -> crate::node::PeerSummary {
        crate::node::PeerSummary {
            id: 1,
            link,
            remote: "127.0.0.1:7300".into(),
            outbound: true,
            ready: true,
            callsign: "N0CALL-2".into(),
            user_agent: String::new(),
            height,
            tip: None,
            connected_ms: 10_000,
            idle_ms: 0,
            send_idle_ms: 0,
            stats: crate::node::PeerStats {
                bytes_in,
                ..Default::default()
            },
            score: 0,
            rtt_ms: None,
        }
    }

    #[test]
    fn sync_estimate_names_its_target_and_the_rate_it_assumes() {
        let mut node = node();
        let in_sync = sync_estimate(&node, &[]);
        assert_eq!(in_sync["blocks_left"], 0);
        assert_eq!(in_sync["target_from"], "best header");
        assert_eq!(in_sync["seconds_left"], Value::Null);
        // A TCP peer 50 blocks ahead that sent 20 kB in 10 s: 2 kB/s measured.
        node.link_up(0, 1, crate::net::LinkCaps::tcp());
        let avg = node.avg_block_bytes();
        let v = sync_estimate(&node, &[peer(1, 50, 20_000)]);
        assert_eq!(v["target_height"], 50);
        assert_eq!(v["target_from"], "tip of peer N0CALL-2");
        assert_eq!(v["blocks_left"], 50);
        assert_eq!(v["bytes_left"], 50 * avg);
        assert_eq!(
            (v["rate_bytes_per_s"].as_u64(), v["rate_from"].as_str()),
            (Some(2000), Some("measured"))
        );
        assert_eq!(v["seconds_left"], (50 * avg).div_ceil(2000));
        // On 1200-baud radio the line rate counts: 150 B/s.
        let mut radio = crate::net::LinkCaps::tcp();
        radio.bitrate_bps = 1200;
        radio.radio = true;
        node.link_up(0, 2, radio);
        let v = sync_estimate(&node, &[peer(2, 50, 0)]);
        assert_eq!(
            (v["rate_bytes_per_s"].as_u64(), v["rate_from"].as_str()),
            (Some(150), Some("line rate"))
        );
        assert_eq!(v["seconds_left"], (50 * avg).div_ceil(150));
    }

    /// With [`crate::driver::REQUEST_QUEUE`] requests waiting, a handler answers 503 at
    /// once instead of queueing behind them.
    #[tokio::test]
    async fn a_full_request_queue_answers_503_at_once() {
        use futures_util::FutureExt;
        let opts = DriverOptions {
            links: Vec::new(),
            mine_to: None,
            callsign: "N0CALL-1".into(),
            custom_links: Vec::new(),
            mine_until_height: None,
        };
        // The driver is not run: nothing leaves the queue.
        let (s, _driver) = driver::start(node(), opts);
        for _ in 0..crate::driver::REQUEST_QUEUE {
            let s = s.clone();
            tokio::spawn(async move { s.call(|_, _| ()).await });
        }
        // Each spawned task queues its request when first run.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let answer = peers(State(s.clone()))
            .now_or_never()
            .expect("a busy node's handler waits");
        match answer {
            Err(ApiError(code, msg)) => {
                assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
                assert!(msg.contains("busy"), "{msg}");
            }
            Ok(_) => panic!("answered from a node that never ran"),
        }
    }

    #[tokio::test]
    async fn bans_round_trip_through_the_handlers() {
        let s = shared();
        let req = BanRequest {
            key: "2001:db8::/32".into(),
            hours: Some(1.0),
            reason: "test".into(),
        };
        let v = bans_add(State(s.clone()), Ok(Json(req)))
            .await
            .ok()
            .unwrap();
        assert_eq!(v.0["key"], "2001:db8::/32");
        let bad_req = BanRequest {
            key: "2001:db8::/32".into(),
            hours: Some(-1.0),
            reason: String::new(),
        };
        assert!(bans_add(State(s.clone()), Ok(Json(bad_req))).await.is_err());
        assert_eq!(
            bans_list(State(s.clone())).await.ok().unwrap().0["count"],
            1
        );
        let gone = bans_remove(State(s.clone()), Path("2001:db8::/32".into())).await;
        assert!(gone.is_ok());
        let again = bans_remove(State(s.clone()), Path("2001:db8::/32".into())).await;
        assert!(matches!(again, Err(ApiError(StatusCode::NOT_FOUND, _))));
    }
}
