//! `skywave demo`: a few real nodes (real cores, real drivers, real TCP on loopback,
//! in-memory stores) in one process, so a newcomer sees blocks and a transaction relayed
//! hop by hop without configuring anything.

use crate::chain::types::format_amount;
use crate::chain::{params, Chain, Transaction};
use crate::driver::{self, DriverOptions, LinkSpawner, Shared};
use crate::lab::{DirewolfOpts, DirewolfPair};
use crate::link::kiss::{KissLinkConfig, KissTransport};
use crate::link::simtnc::SimChannel;
use crate::link::LinkUrl;
use crate::node::{Node, NodeConfig, NodeEvent};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `println!` that ends the demo quietly once stdout is closed (`skywave demo | head`):
/// the demo keeps the default SIGPIPE handling off (it writes to Direwolf's FIFOs).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// A KISS link to a simulated TNC on `chan`.
fn radio_link(chan: &SimChannel) -> (String, LinkSpawner) {
    let chan = chan.clone();
    let spawn: LinkSpawner = Box::new(move |ctx| {
        let cfg = KissLinkConfig::new(KissTransport::Tcp("simulated-tnc".into()));
        let mut tnc = Some(chan.attach());
        tokio::spawn(crate::link::kiss::run_with(cfg, ctx, move |_| {
            let t = tnc.take();
            async move { t.ok_or_else(|| "simulated TNC already in use".to_string()) }
        }))
    });
    ("sim-radio://1200".to_string(), spawn)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Run the demo: `n` nodes in a line, node 0 mining, a transaction submitted at the far end.
pub fn run(n: usize, blocks: u64, simulated: bool, as_json: bool) -> Result<()> {
    if !(2..=10).contains(&n) {
        bail!("--nodes must be 2 to 10");
    }
    if blocks < 3 {
        bail!("--blocks must be at least 3 (the transaction needs funds from block 1)");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move { demo(n, blocks, simulated, as_json).await })
}

async fn demo(n: usize, blocks: u64, simulated: bool, as_json: bool) -> Result<()> {
    let start = Instant::now();
    let say = move |who: &str, what: String| {
        if !as_json {
            out!("[{:6.2}s] {who:<6} {what}", start.elapsed().as_secs_f64());
        }
    };
    let params = params::regtest();
    let net = params.network_id();
    let miner = crate::keys::generate();
    let miner_addr = crate::keys::address(&miner);
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
    let mut nodes: Vec<Arc<Shared>> = Vec::new();
    // The radio hop: two real Direwolf soft modems joined by 1200-baud audio when
    // Direwolf is installed, otherwise simulated TNCs on a simulated channel.
    let lab = if simulated || !crate::lab::direwolf_available() {
        None
    } else {
        match DirewolfPair::start(DirewolfOpts::default()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("Direwolf would not start ({e}); simulating the radio hop instead");
                None
            }
        }
    };
    let hop = if lab.is_some() {
        "two real Direwolf soft modems joined by 1200-baud AFSK audio, half duplex"
    } else {
        "a simulated 1200-baud half-duplex channel (simulated TNCs; install direwolf for real \
         soft modems)"
    };
    if !as_json {
        out!(
            "skywave demo: {n} nodes in a line (regtest), node1 to node{n} with callsigns \
             N0CALL-1 to N0CALL-{n}; node1 mines {blocks} blocks, a transaction enters at \
             node{n}.\nHops are TCP on loopback, except node{prev} <-> node{n}: packet radio \
             (KISS, AX.25 UI frames of up to 256 bytes) over {hop}.",
            prev = n - 1
        );
    }
    let radio = SimChannel::new(1200, 0, rand::random());
    // node1 mines up to `blocks`, and one more at a time while the transaction waits.
    let limit = Arc::new(AtomicU64::new(blocks));
    for (i, port) in ports.iter().enumerate() {
        let tcp = |u: String| LinkUrl::parse(&u).map_err(anyhow::Error::msg);
        let mut links = vec![tcp(format!("tcp-listen://127.0.0.1:{port}"))?];
        if i > 0 && i < n - 1 {
            links.push(tcp(format!("tcp://127.0.0.1:{}", ports[i - 1]))?);
        }
        let mut custom_links = Vec::new();
        if i >= n - 2 {
            match &lab {
                Some(p) => {
                    let addr = if i == n - 2 {
                        p.kiss_addr_a()
                    } else {
                        p.kiss_addr_b()
                    };
                    links.push(
                        LinkUrl::parse(&format!("kiss+tcp://{addr}"))
                            .map_err(anyhow::Error::msg)?,
                    );
                }
                None => custom_links.push(radio_link(&radio)),
            }
        }
        let chain = Chain::open(params.clone(), Store::open_in_memory()?)?;
        let node = Node::new(
            chain,
            NodeConfig {
                node_key: crate::keys::generate(),
                callsign: format!("N0CALL-{}", i + 1),
                seed: rand::random(),
                user_agent: format!("skywave-demo/{}", env!("CARGO_PKG_VERSION")),
                peers: Default::default(),
            },
        );
        let (shared, fut) = driver::start(
            node,
            DriverOptions {
                links,
                mine_to: (i == 0).then_some(miner_addr),
                callsign: format!("N0CALL-{}", i + 1),
                custom_links,
                mine_until_height: Some(limit.clone()),
            },
        );
        tokio::spawn(fut);
        let mut rx = shared.events.subscribe();
        // Named as its callsign is numbered, so the log's handshakes read right.
        let name = format!("node{}", i + 1);
        tokio::spawn(async move {
            while let Ok(ev) = rx.recv().await {
                match ev {
                    NodeEvent::TipChanged {
                        tip,
                        from,
                        disconnected,
                        ..
                    } => {
                        let how = if from.is_some() { "received" } else { "mined" };
                        let reorg = if disconnected > 0 {
                            format!(" (reorg: {disconnected} replaced)")
                        } else {
                            String::new()
                        };
                        say(
                            &name,
                            format!(
                                "{how} block {} {}{reorg}",
                                tip.height,
                                &tip.hash.to_hex()[..16]
                            ),
                        );
                    }
                    NodeEvent::TxAccepted { id, from } => {
                        let how = if from.is_some() {
                            "relayed"
                        } else {
                            "submitted"
                        };
                        say(
                            &name,
                            format!("tx {} {how} into mempool", &id.to_hex()[..16]),
                        );
                    }
                    NodeEvent::PeerReady { callsign, .. } => {
                        say(&name, format!("handshake done with {callsign}"))
                    }
                    _ => {}
                }
            }
        });
        nodes.push(shared);
    }

    let deadline = Instant::now() + Duration::from_secs(120 + 15 * blocks);
    let mut tx_id = None;
    let mut tx_to = None;
    const DEMO_AMOUNT: u64 = 1_000_000;
    let last = nodes.len() - 1;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() > deadline {
            for s in &nodes {
                driver::stop(s);
            }
            bail!("demo did not converge in time");
        }
        let (spendable, nonce) = nodes[last]
            .call_wait(move |n, _| {
                let c = n.chain();
                (c.spendable_balance(&miner_addr), c.next_nonce(&miner_addr))
            })
            .await?;
        if tx_id.is_none() && spendable > 1_000_000 + params.min_relay_fee {
            let to = crate::keys::address(&crate::keys::generate());
            let tx = Transaction::sign(net, &miner, to, DEMO_AMOUNT, params.min_relay_fee, nonce);
            let id = nodes[last]
                .call_wait(move |n, now| n.submit_tx(now, tx))
                .await?
                .context("demo tx refused")?;
            tx_id = Some(id);
            tx_to = Some(to);
        }
        let tips: Vec<_> = nodes.iter().map(|s| s.summary()).collect();
        let agree = tips.iter().all(|t| t.tip == tips[0].tip);
        let mut confirmed = tx_id.is_some();
        if let Some(id) = tx_id {
            for s in &nodes {
                let here = s
                    .call_wait(move |n, _| matches!(n.chain().find_tx(&id), Ok(Some((_, Some(_))))))
                    .await?;
                confirmed &= here;
            }
        }
        if agree && confirmed && tips[0].height >= blocks {
            break;
        }
        let in_pool = match tx_id {
            Some(id) => {
                nodes[0]
                    .call_wait(move |n, _| n.chain().mempool_get(&id).is_some())
                    .await?
            }
            None => false,
        };
        if in_pool && tips[0].height >= limit.load(Ordering::SeqCst) {
            limit.fetch_add(1, Ordering::SeqCst);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (i, s) in nodes.iter().enumerate() {
        let (tip, peers) = s
            .call_wait(|n, now| (n.chain().tip(), n.peers(now)))
            .await?;
        let out: u64 = peers.iter().map(|p| p.stats.bytes_out).sum();
        let inb: u64 = peers.iter().map(|p| p.stats.bytes_in).sum();
        rows.push(json!({"node": i + 1, "callsign": format!("N0CALL-{}", i + 1), "height": tip.height, "tip": tip.hash,
                         "peers": peers.len(), "bytes_out": out, "bytes_in": inb}));
    }
    for s in &nodes {
        driver::stop(s);
    }
    let id = tx_id.map(|t| t.to_hex()).unwrap_or_default();
    let from_text = miner_addr.to_text(params.name);
    let to_text = tx_to.map(|a| a.to_text(params.name)).unwrap_or_default();
    let (air_ms, frames) = match &lab {
        Some(p) => {
            let a = p.air_stats();
            (
                ((a.a_to_b.air_seconds + a.b_to_a.air_seconds) * 1000.0) as u64,
                a.a_to_b.bursts + a.b_to_a.bursts,
            )
        }
        None => radio.usage(),
    };
    drop(lab);
    if as_json {
        out!(
            "{}",
            json!({"seconds": secs, "nodes": rows, "tx": id, "converged": true,
                   "tx_from": from_text, "tx_to": to_text, "tx_amount": DEMO_AMOUNT,
                   "tx_amount_text": format_amount(DEMO_AMOUNT),
                   "radio": {"frames": frames, "air_seconds": air_ms as f64 / 1000.0}})
        );
    } else {
        out!("\nsummary after {secs:.1}s:");
        for r in &rows {
            out!(
                "  node{}  height {}  tip {}  peers {}  sent {} B  received {} B",
                r["node"],
                r["height"],
                &r["tip"].as_str().unwrap_or("")[..16.min(r["tip"].as_str().unwrap_or("").len())],
                r["peers"],
                r["bytes_out"],
                r["bytes_in"]
            );
        }
        out!(
            "  radio hop: {frames} transmissions, {:.1} s of air at 1200 baud",
            air_ms as f64 / 1000.0
        );
        out!(
            "  all {n} nodes agree on the tip; tx {} confirmed everywhere",
            &id[..16.min(id.len())]
        );
        out!(
            "  it moved {} from {from_text} (node1's miner) to {to_text}",
            format_amount(DEMO_AMOUNT)
        );
    }
    Ok(())
}
