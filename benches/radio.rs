//! Bytes and seconds on air: a node syncs blocks from another over two real Direwolf soft
//! modems at 1200 baud (AFSK, half duplex), clean and with receive bit errors.
//!
//! Run: `cargo bench --bench radio` (needs `direwolf`; takes several minutes, the air is
//! real time). Prints, per block size: block bytes delivered, seconds of air used in each
//! direction, goodput per second of air as a share of the 150 B/s line rate, and on-air
//! bytes per block.

use skywave::chain::{params, pow, Address, Block, Chain, Transaction};
use skywave::driver::{self, DriverOptions};
use skywave::lab::{direwolf_available, DirewolfOpts, DirewolfPair};
use skywave::link::LinkUrl;
use skywave::node::{Node, NodeConfig};
use skywave::store::Store;
use std::time::{Duration, Instant};

const LINE_RATE: f64 = 150.0; // bytes/s at 1200 bit/s

fn node(chain: Chain, id: u8, call: &str) -> Node {
    Node::new(
        chain,
        NodeConfig {
            node_id: [id; 32],
            callsign: call.into(),
            seed: id as u64,
            user_agent: "skywave-bench".into(),
            peers: Default::default(),
        },
    )
}

/// A chain with `blocks` blocks of `txs` transactions each (after 4 funding blocks).
fn build_chain(blocks: usize, txs: usize) -> (Chain, Vec<Block>) {
    let p = params::regtest();
    let mut chain = Chain::open(p.clone(), Store::open_in_memory().unwrap()).unwrap();
    let keys: Vec<_> = (0..4u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]))
        .collect();
    let mut t = p.genesis.header.time + 600;
    let mine = |chain: &mut Chain, to: Address, t: u64| {
        let mut b = chain.block_template(to, t);
        while !pow::mine(&mut b.header, 1_000_000) {}
        chain.submit_block(b.clone(), t).unwrap();
        b
    };
    for k in &keys {
        t += 1;
        mine(&mut chain, skywave::keys::address(k), t);
    }
    let net = p.network_id();
    let mut out = Vec::new();
    for b in 0..blocks {
        for i in 0..txs {
            let k = &keys[i % keys.len()];
            let from = skywave::keys::address(k);
            let nonce = chain.next_nonce(&from);
            let tx =
                Transaction::sign(net, k, Address([(b * 97 + i) as u8; 32]), 1000, 1000, nonce);
            chain.submit_tx(tx, t).unwrap();
        }
        t += 1;
        out.push(mine(&mut chain, skywave::keys::address(&keys[0]), t));
    }
    (chain, out)
}

struct Figures {
    block_bytes: usize,
    blocks: usize,
    secs: f64,
    air_ab: f64,
    air_ba: f64,
    repaired: u64,
}

fn run(blocks: usize, txs: usize, opts: DirewolfOpts) -> Option<Figures> {
    let (chain_a, mined) = build_chain(blocks, txs);
    let target = chain_a.tip();
    let block_bytes: usize = mined.iter().map(Block::encoded_len).sum();
    // B starts with the 4 funding blocks A has, so only the measured blocks cross the air.
    let (chain_b, _) = build_chain(0, 0);
    let pair = DirewolfPair::start(opts).ok()?;
    let rt = tokio::runtime::Runtime::new().ok()?;
    let res = rt.block_on(async {
        let mk = |n: Node, addr: std::net::SocketAddr, call: &str| {
            driver::start(
                n,
                DriverOptions {
                    links: vec![LinkUrl::parse(&format!("kiss+tcp://{addr}")).unwrap()],
                    mine_to: None,
                    callsign: call.into(),
                    custom_links: Vec::new(),
                    mine_until_height: None,
                },
            )
        };
        let (a, fa) = mk(node(chain_a, 1, "N0CALL-1"), pair.kiss_addr_a(), "N0CALL-1");
        let (b, fb) = mk(node(chain_b, 2, "N0CALL-2"), pair.kiss_addr_b(), "N0CALL-2");
        tokio::spawn(fa);
        tokio::spawn(fb);
        let start = Instant::now();
        let before = pair.air_stats();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if b.node().chain().tip().hash == target.hash {
                break;
            }
            if start.elapsed() > Duration::from_secs(1800) {
                return None;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let after = pair.air_stats();
        let repaired = a.node().packet_stats(1).map(|s| s.repaired).unwrap_or(0);
        driver::stop(&a);
        driver::stop(&b);
        Some(Figures {
            block_bytes,
            blocks,
            secs,
            air_ab: after.a_to_b.air_seconds - before.a_to_b.air_seconds,
            air_ba: after.b_to_a.air_seconds - before.b_to_a.air_seconds,
            repaired,
        })
    });
    drop(pair);
    res
}

fn main() {
    if !direwolf_available() {
        println!("radio bench SKIPPED: direwolf is not installed (apt-get install direwolf)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[(usize, usize)] = if quick {
        &[(3, 0)]
    } else {
        &[(5, 0), (3, 10), (2, 40), (1, 100)]
    };
    println!("skywave over two Direwolf modems, 1200 baud AFSK, half duplex");
    println!(
        "{:<7} {:>6} {:>7} {:>11} {:>8} {:>8} {:>8} {:>10} {:>12} {:>8}",
        "channel",
        "blocks",
        "txs/blk",
        "block bytes",
        "wall s",
        "air A>B",
        "air B>A",
        "goodput",
        "% of 150B/s",
        "air B/blk"
    );
    for (label, opts) in [
        ("clean", DirewolfOpts::default()),
        (
            "ber1e-4",
            DirewolfOpts {
                ber: Some(1e-4),
                modem_opts: "E".into(),
                fix_bits: Some(0),
                ..DirewolfOpts::default()
            },
        ),
    ] {
        for &(blocks, txs) in sizes {
            match run(blocks, txs, opts.clone()) {
                Some(f) => {
                    let air = f.air_ab + f.air_ba;
                    let goodput = f.block_bytes as f64 / air;
                    // On-air bytes: air seconds at 150 B/s, both directions.
                    let air_bytes_per_block = air * LINE_RATE / f.blocks as f64;
                    println!(
                        "{:<7} {:>6} {:>7} {:>11} {:>8.1} {:>8.1} {:>8.1} {:>8.1}B/s {:>11.0}% {:>8.0}  (repaired {})",
                        label, f.blocks, txs, f.block_bytes, f.secs, f.air_ab, f.air_ba,
                        goodput, 100.0 * goodput / LINE_RATE, air_bytes_per_block, f.repaired
                    );
                }
                None => println!("{label:<7} {blocks:>6} {txs:>7}  did not complete"),
            }
        }
    }
}
