//! The air mechanisms of issue 10, each in a test that fails when that mechanism alone is
//! broken, over the shared-channel model (carrier sense with Direwolf's PERSIST/SLOTTIME
//! and DCD latency, collisions, deafness while keyed, hidden terminals, JS8-like slots).
//! Every test counts what the receiver got or what was keyed up, never what a sender
//! meant to do, and runs several seeds with all stations started at the same instant.

use super::radio_tests::{channel_config, key, radio_caps, Air, LINK};
use super::*;
use crate::chain::{params, pow, Address};
use crate::sim::channel::ChannelConfig;

const SEEDS: std::ops::Range<u64> = 1..9;

/// Runs until `done` holds or `limit_ms` of virtual time pass; the time it took.
fn run_until(air: &mut Air, limit_ms: u64, done: impl Fn(&Air) -> bool) -> Option<u64> {
    let start = air.now;
    while air.now - start < limit_ms {
        air.run_for(250);
        if done(air) {
            return Some(air.now - start);
        }
    }
    None
}

/// A block of `txs` transactions mined at station `i` straight into its chain: nobody
/// heard of the transactions before.
fn mine_private(air: &mut Air, i: usize, txs: usize) -> Hash {
    let net = params::regtest().network_id();
    let k = key();
    let from = crate::keys::address(&k);
    for n in 0..txs {
        let nonce = air.nodes[i].chain().next_nonce(&from);
        let tx = Transaction::sign(net, &k, Address([n as u8 + 50; 32]), 5, 1000, nonce);
        air.nodes[i].chain.submit_tx(tx, air.now / 1000).unwrap();
    }
    let mut b = air.nodes[i].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    let hash = b.hash();
    air.nodes[i].submit_block(air.now, b).unwrap();
    hash
}

/// Station 0's chain gets a funding block, then `blocks` blocks of `txs` transactions
/// nobody else heard of; the blocks' encoded bytes.
fn blocks_at_zero(air: &mut Air, blocks: usize, txs: usize) -> usize {
    let k = key();
    let from = crate::keys::address(&k);
    let mut b = air.nodes[0].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    air.nodes[0].chain.submit_block(b, air.now / 1000).unwrap();
    let mut bytes = 0;
    for _ in 0..blocks {
        let h = mine_private(air, 0, txs);
        bytes += air.nodes[0]
            .chain()
            .block(&h)
            .unwrap()
            .unwrap()
            .encoded_len();
    }
    bytes
}

/// Station 0 holds a 1 KB block that station 1, started cold at the same instant, lacks.
fn one_kilobyte_apart(seed: u64) -> (Air, Hash) {
    let mut air = Air::new(2, seed, 0);
    // Fund the key at station 0 only (in its chain before the stations meet).
    let k = key();
    let from = crate::keys::address(&k);
    let mut b = air.nodes[0].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    air.nodes[0].chain.submit_block(b, air.now / 1000).unwrap();
    let tip = mine_private(&mut air, 0, 7);
    (air, tip)
}

/// Messages of `kind` keyed up by `station` (as `describe` names them), from its log.
fn keyed(air: &Air, station: usize, kind: &str) -> usize {
    air.sent_log
        .iter()
        .filter(|(s, k)| *s == station && k == kind)
        .count()
}

#[test]
fn a_station_behind_gets_the_blocks_in_the_first_answer() {
    // Without the push at the handshake, the cold station needs GetHeaders/Headers and
    // GetData/Block: two more turnarounds on the air.
    for seed in SEEDS {
        let (mut air, tip) = one_kilobyte_apart(seed);
        let took = run_until(&mut air, 60_000, |a| a.nodes[1].chain().tip().hash == tip)
            .unwrap_or_else(|| panic!("seed {seed}: no tip in 60 s"));
        let asked = keyed(&air, 1, "getdata");
        assert_eq!(
            asked, 0,
            "seed {seed}: the cold station had to ask for the blocks ({took} ms)"
        );
        // A collision of the first beacons costs one discovery retry (5 s).
        assert!(took < 30_000, "seed {seed}: {took} ms");
    }
}

#[test]
fn a_lost_answer_costs_seconds_not_minutes() {
    // The answer to a GetData is lost once: the request is asked again after one
    // retransmission timeout (seconds), not a fixed minute-scale timer.
    for seed in SEEDS {
        let mut air = Air::new(2, seed, 0);
        air.mine_with_txs(0, &key(), 0);
        air.run_for(60_000);
        assert_eq!(air.nodes[1].chain().tip().height, 1, "seed {seed}");
        // Teach the estimator this path's turnaround with a few blocks first.
        for _ in 0..3 {
            air.mine_with_txs(0, &key(), 0);
            air.run_for(30_000);
        }
        let tip = mine_private(&mut air, 0, 0);
        air.drop_first(0, 1, "block");
        let took = run_until(&mut air, 120_000, |a| a.nodes[1].chain().tip().hash == tip)
            .unwrap_or_else(|| panic!("seed {seed}: block never arrived"));
        assert_eq!(air.dropped, 1, "seed {seed}: the answer was dropped once");
        assert!(took < 15_000, "seed {seed}: one lost answer cost {took} ms");
    }
}

#[test]
fn acks_ride_in_one_turn() {
    // Five pushes in one burst are acknowledged by one Ack in one key-up, not one per
    // push on a timer.
    for seed in SEEDS {
        let mut air = Air::new(2, seed, 0);
        air.mine_with_txs(0, &key(), 0);
        air.run_for(60_000);
        assert_eq!(air.nodes[1].chain().tip().height, 1, "seed {seed}");
        air.run_for(30_000);
        let net = params::regtest().network_id();
        let k = key();
        let from = crate::keys::address(&k);
        let acks_before = keyed(&air, 1, "ack");
        let ups_before = air.channel().station_stats(1).key_ups;
        for n in 0..5 {
            let nonce = air.nodes[0].chain().next_nonce(&from);
            let tx = Transaction::sign(net, &k, Address([n + 60; 32]), 5, 1000, nonce);
            air.nodes[0].submit_tx(air.now, tx).unwrap();
        }
        air.run_for(40_000);
        assert_eq!(air.nodes[1].chain().mempool_len(), 5, "seed {seed}");
        let acks = keyed(&air, 1, "ack") - acks_before;
        let ups = air.channel().station_stats(1).key_ups - ups_before;
        assert_eq!(acks, 1, "seed {seed}: {acks} ack messages for 5 pushes");
        assert!(ups <= 2, "seed {seed}: the receiver keyed up {ups} times");
        assert!(
            air.nodes[0].outbox_waiting() == 0,
            "seed {seed}: the sender's outbox still waits: {:?}",
            air.nodes[0]
                .outbox()
                .items
                .iter()
                .map(|i| (
                    i.kind,
                    i.dest.get(..4).unwrap_or("").to_string(),
                    i.attempts
                ))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn lost_fragments_are_repaired_not_the_whole_block_resent() {
    // 15 % of frames lost: the receiver NACKs exactly what it missed at the sender's
    // OVER. Re-requesting whole blocks instead would key up every block about twice (with
    // the repair's resend removed: 2.28x at seed 1, and seed 2 not synced in 15 minutes).
    // Over 20 loss patterns: 1.53x in all, 1.22x to 2.25x each; the worst keep a lost
    // handshake message or a burst taken for ended after two lost frames in a row, whose
    // stale answers then cross the air.
    let (mut sent_all, mut blocks_all, mut repaired_all) = (0, 0, 0);
    for seed in 1..21 {
        let mut air = Air::new(2, seed, 150_000);
        let block_bytes = blocks_at_zero(&mut air, 3, 10);
        let tip = air.nodes[0].chain().tip().hash;
        run_until(&mut air, 15 * 60_000, |a| {
            a.nodes[1].chain().tip().hash == tip
        })
        .unwrap_or_else(|| panic!("seed {seed}: not synced in 15 min"));
        let sent = air.channel().station_stats(0).bytes as usize;
        let repaired = air.nodes[0].packet_stats(LINK).unwrap().repaired;
        if std::env::var_os("AIR_BREAKDOWN").is_some() {
            let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for ((st, d), len) in air.sent_log.iter().zip(&air.sent_len) {
                if *st == 0 {
                    let k = d
                        .split(' ')
                        .filter(|w| !w.starts_with('t') && !w.contains('/'))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let e = by.entry(k).or_default();
                    e.0 += 1;
                    e.1 += len;
                }
            }
            eprintln!("seed {seed}: sent {sent} / blocks {block_bytes} = {:.2}; repaired {repaired}; {by:?}", sent as f64 / block_bytes as f64);
        }
        assert!(
            sent < block_bytes * 5 / 2,
            "seed {seed}: {sent} bytes keyed up for {block_bytes} bytes of blocks"
        );
        sent_all += sent;
        blocks_all += block_bytes;
        repaired_all += repaired;
    }
    assert!(repaired_all > 0, "nothing repaired at 15 % loss");
    assert!(
        sent_all < blocks_all * 8 / 5,
        "{sent_all} bytes keyed up for {blocks_all} bytes of blocks in 20 runs"
    );
}

#[test]
fn transactions_already_in_blocks_are_not_pushed_alone() {
    for seed in SEEDS {
        let mut air = Air::new(2, seed, 0);
        air.mine_with_txs(0, &key(), 0);
        air.run_for(60_000);
        assert_eq!(air.nodes[1].chain().tip().height, 1, "seed {seed}");
        // Station 1 goes away; station 0 accepts transactions for it and mines them.
        air.channel_mut().set_hears(0, 1, false);
        air.run_for(10_000);
        air.mine_with_txs(0, &key(), 6);
        let tip = air.nodes[0].chain().tip().hash;
        assert!(
            air.nodes[0].outbox_waiting() >= 6,
            "seed {seed}: the outbox holds the transactions for station 1"
        );
        air.run_for(60_000);
        let txs_before = keyed(&air, 0, "tx");
        air.channel_mut().set_hears(0, 1, true);
        run_until(&mut air, 10 * 60_000, |a| {
            a.nodes[1].chain().tip().hash == tip && a.nodes[0].outbox_waiting() == 0
        })
        .unwrap_or_else(|| panic!("seed {seed}: not delivered"));
        let txs = keyed(&air, 0, "tx") - txs_before;
        assert_eq!(txs, 0, "seed {seed}: {txs} transactions pushed alone");
    }
}

#[test]
fn hidden_stations_started_together_all_meet_within_a_minute() {
    // 0 and 2 cannot hear each other; both hear 1. Their beacons and answers collide at
    // 1 while carrier sense cannot help; discovery backs off from seconds, not a minute.
    // Their greetings to 1 collide there too: a station that hears only beacons from one
    // it greeted greets it again, at a random moment (two hidden stations reacting to
    // the same beacon would otherwise collide every time).
    for seed in SEEDS {
        let caps = radio_caps();
        let cfg = channel_config(&caps, 0);
        let mut air = Air::with_channel(3, seed, caps, cfg);
        air.channel_mut().set_hears(0, 2, false);
        let met = run_until(&mut air, 60_000, |a| {
            let ready = |i: usize| a.nodes[i].peers(a.now).iter().filter(|p| p.ready).count();
            ready(0) >= 1 && ready(2) >= 1 && ready(1) >= 2
        });
        assert!(met.is_some(), "seed {seed}: stations not all met in 60 s");
    }
}

/// Every station holds the same block funding [`key`]: the shared history. The key.
fn fund_everyone(air: &mut Air) -> ed25519_dalek::SigningKey {
    let k = key();
    let from = crate::keys::address(&k);
    let mut b = air.nodes[0].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    for n in &mut air.nodes {
        n.chain.submit_block(b.clone(), air.now / 1000).unwrap();
    }
    k
}

/// Both stations hold the same funded history, so a payment is valid at both; station 0
/// accepts one. Its id.
fn fund_both_and_pay(air: &mut Air) -> Hash {
    let net = params::regtest().network_id();
    let k = fund_everyone(air);
    let tx = Transaction::sign(net, &k, Address([3; 32]), 5, 1000, 0);
    air.nodes[0].submit_tx(air.now, tx).unwrap()
}

#[test]
fn js8_stations_started_in_the_same_second_fall_out_of_step() {
    // No carrier sense, 15 s slots: without random slot access both stations key up in
    // the same slot, deaf to each other, and keep doing so.
    let caps = LinkCaps {
        mtu: 32,
        bitrate_bps: 20,
        carrier_sense: false,
        slot_ms: 15_000,
        ..radio_caps()
    };
    let cfg = ChannelConfig::slotted(20, 15_000);
    for seed in SEEDS {
        let mut air = Air::with_channel(2, seed, caps.clone(), cfg.clone());
        let id = fund_both_and_pay(&mut air);
        // Greetings both ways (about 120 B each: 4 packets), the signed proofs both ways
        // (about 100 B each: 4 packets) and the payment (about 150 B: 5 packets) are 21
        // slots back to back. Allowed: twice that.
        let allowed = 2 * 21 * 15_000;
        let took = run_until(&mut air, allowed, |a| {
            a.nodes[1].chain().mempool_get(&id).is_some()
        });
        assert!(
            took.is_some(),
            "seed {seed}: no handshake and payment in {} s ({:?}, peers ready: {}, {})",
            allowed / 1000,
            air.channel_stats(),
            air.nodes[0]
                .peers(air.now)
                .iter()
                .filter(|p| p.ready)
                .count(),
            air.nodes[1]
                .peers(air.now)
                .iter()
                .filter(|p| p.ready)
                .count(),
        );
    }
}

/// Slots of air the first transfer of `kind` (a message kind number, as `describe`
/// names it) from `station` took: each of its packets keyed up from a slot boundary.
fn first_transfer_slots(air: &Air, station: usize, kind: u8, cfg: &ChannelConfig) -> u64 {
    let tag = format!(" kind {kind}");
    let frames: Vec<(&String, usize)> = air
        .sent_log
        .iter()
        .zip(&air.sent_len)
        .filter(|((s, _), _)| *s == station)
        .map(|((_, d), &len)| (d, len))
        .collect();
    let Some(tid) = frames.iter().find_map(|(d, _)| {
        let rest = d.strip_prefix("fragment t")?;
        (d.ends_with(&tag) && rest.contains(" 0/")).then(|| rest.split(' ').next())?
    }) else {
        // A message that fits one packet.
        let len = frames
            .iter()
            .find(|(d, _)| d.ends_with(&format!("kind {kind}")))
            .map_or(0, |(_, l)| *l);
        return cfg.airtime_ms(len).div_ceil(cfg.slot_ms);
    };
    let prefix = format!("fragment t{tid} ");
    frames
        .iter()
        .filter(|(d, _)| d.starts_with(&prefix))
        .map(|(_, len)| cfg.airtime_ms(*len).div_ceil(cfg.slot_ms))
        .sum()
}

#[test]
fn js8_stations_configured_with_each_other_and_started_together_meet_in_few_slots() {
    // As `js8_stations_started_in_the_same_second_fall_out_of_step`, but each link is
    // configured with the other station (JS8Call's `peer=`), so both would greet at once,
    // and at turbo speed a 32-byte packet spans seven 6-s slots (one JS8 message), as
    // in the JS8Call emulator's test of the same case.
    let caps = LinkCaps {
        mtu: 32,
        bitrate_bps: 6,
        carrier_sense: false,
        slot_ms: 6_000,
        ..radio_caps()
    };
    let cfg = ChannelConfig::slotted(6, 6_000);
    let seeds: Vec<u64> = match std::env::var("AIR_SEEDS") {
        Ok(v) => v.split(',').filter_map(|s| s.parse().ok()).collect(),
        Err(_) => (1..17).collect(),
    };
    let mut failed = Vec::new();
    for seed in seeds {
        let mut air = Air::with_channel(2, seed, caps.clone(), cfg.clone());
        air.configured_peers();
        let id = fund_both_and_pay(&mut air);
        let took = run_until(&mut air, 3_600_000, |a| {
            a.nodes[1].chain().mempool_get(&id).is_some()
        });
        // What the exchange needs back to back: each station's greeting and proof, and
        // the payment. Allowed: twice that, so at most one round of collisions.
        let needed: u64 = [(0, 1), (1, 1), (0, 16), (1, 16), (0, 9)]
            .iter()
            .map(|&(st, kind)| first_transfer_slots(&air, st, kind, &cfg))
            .sum::<u64>()
            * cfg.slot_ms;
        let stats = air.channel_stats();
        eprintln!(
            "seed {seed}: took {:?} s, needed {} s back to back; {stats:?}",
            took.map(|t| t / 1000),
            needed / 1000
        );
        // The station whose callsign sorts later yields its first slot (see
        // `PacketLink::yield_first`): nothing collides. Without it, 5 of these 16 seeds
        // lost both greetings at least once (one took 1985 s).
        if took.is_none_or(|t| t > 2 * needed) || stats.collisions + stats.deaf > 0 {
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "seeds {failed:?}: a collision, or no handshake and payment within twice the air \
         it needs"
    );
}

#[test]
fn the_turn_that_answers_a_beacon_carries_the_blocks_it_lacks() {
    // B's beacon shows it behind. A's answer carries its greeting, its proof and the
    // block in one key-up, before B has proven itself (blocks are public): waiting for
    // B's proof first cost both stations a turn more (22.6 s instead of 15 s for 1 KB
    // over real Direwolf modems).
    let mut clean = 0;
    for seed in SEEDS {
        let mut air = Air::new(2, seed, 0);
        let tip = mine_private(&mut air, 0, 0);
        // B keys up once (its beacon) and holds the block before it keys up again (its
        // proof). Before, A waited for that proof to push the block.
        let mut ups = None;
        for _ in 0..1200 {
            air.run_for(50);
            if air.nodes[1].chain().tip().hash == tip {
                ups = Some(air.channel().station_stats(1).key_ups);
                break;
            }
        }
        let ups = ups.unwrap_or_else(|| panic!("seed {seed}: B never got A's block"));
        let stats = air.channel_stats();
        if stats.deaf + stats.collisions > 0 {
            // The first beacons collided: that costs each station a key-up more.
            continue;
        }
        clean += 1;
        assert_eq!(
            ups, 1,
            "seed {seed}: B keyed up {ups} times before it held the block"
        );
    }
    assert!(
        clean >= SEEDS.count() / 2,
        "only {clean} seeds without a collision"
    );
}

#[test]
fn a_beacon_waiting_behind_the_one_it_answers_greets_for_us() {
    // A station that has run alone for a while hands its next discovery beacon to the TNC
    // while a newcomer's first beacon is on the air: the TNC holds it until that ends, so
    // it airs first in the answering key-up. A greeting behind it says the same again
    // (about 140 bytes, a second of air at 1200 baud, before the blocks).
    for seed in SEEDS {
        let mut air = Air::new(2, seed, 0);
        fund_everyone(&mut air);
        // The newcomer is off the air until it starts.
        air.channel_mut().set_hears(0, 1, false);
        air.nodes[1]
            .packet_links
            .get_mut(&LINK)
            .unwrap()
            .next_beacon = u64::MAX;
        let tip = mine_private(&mut air, 0, 7);
        air.run_for(3_000);
        assert_eq!(keyed(&air, 0, "hello"), 1, "seed {seed}: the first beacon");
        // The newcomer starts, and its first beacon goes on the air; ours comes due a
        // moment after it keyed up.
        air.channel_mut().set_hears(0, 1, true);
        let before = air.sent_log.len();
        air.nodes[1]
            .packet_links
            .get_mut(&LINK)
            .unwrap()
            .next_beacon = air.now + 1;
        let until = air.now + 10_000;
        while !air.channel().keyed(1) {
            assert!(air.now < until, "seed {seed}: the newcomer never keyed up");
            air.run_for(10);
        }
        air.nodes[0]
            .packet_links
            .get_mut(&LINK)
            .unwrap()
            .next_beacon = air.now + 200;
        run_until(&mut air, 60_000, |a| a.nodes[1].chain().tip().hash == tip)
            .unwrap_or_else(|| panic!("seed {seed}: the newcomer never got the block"));
        let hellos = |st: usize| {
            air.sent_log[before..]
                .iter()
                .filter(|(s, k)| *s == st && k == "hello")
                .count()
        };
        assert_eq!(
            hellos(0),
            1,
            "seed {seed}: a greeting followed our waiting beacon: {:?}",
            &air.sent_log[before..]
        );
    }
}

/// Every station holds the same history funding `m` fresh keys; the keys.
fn fund_many(air: &mut Air, m: usize) -> Vec<ed25519_dalek::SigningKey> {
    let net = params::regtest().network_id();
    let k = fund_everyone(air);
    let keys: Vec<ed25519_dalek::SigningKey> = (0..m)
        .map(|j| {
            let mut b = [0xA5; 32];
            b[0] = j as u8;
            ed25519_dalek::SigningKey::from_bytes(&b)
        })
        .collect();
    for (j, kj) in keys.iter().enumerate() {
        let to = crate::keys::address(kj);
        let tx = Transaction::sign(net, &k, to, 100_000, 1000, j as u64);
        air.nodes[0].chain.submit_tx(tx, air.now / 1000).unwrap();
    }
    let from = crate::keys::address(&k);
    let mut b = air.nodes[0].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    for n in &mut air.nodes {
        n.chain.submit_block(b.clone(), air.now / 1000).unwrap();
    }
    keys
}

/// `n` stations meet on a clean channel; then frames are lost at `loss_ppm` per receiver,
/// and station 0 mines a block of about 8 KB nobody else heard of. Bytes keyed up by all
/// stations and the air time of all key-ups (ms) until every station holds the block (or
/// 20 minutes passed), the virtual time that took (`None`: not everywhere), and the
/// block's size.
fn block_to_all(
    n: usize,
    seed: u64,
    loss_ppm: u32,
    coding: bool,
) -> Option<(u64, u64, Option<u64>, usize)> {
    let mut air = Air::new(n, seed, 0);
    let keys = fund_many(&mut air, 20);
    let met = run_until(&mut air, 1_800_000, |a| {
        a.nodes
            .iter()
            .all(|x| x.peers(a.now).iter().filter(|p| p.ready).count() == n - 1)
    });
    if met.is_none() {
        // (Five stations started at one instant do not always all meet in
        // thirty minutes on this channel model: not what is measured here.)
        eprintln!("seed {seed}: the stations did not all meet; seed skipped");
        return None;
    }
    air.run_for(5_000);
    air.nodes[0]
        .packet_links
        .get_mut(&LINK)
        .expect("radio link")
        .coding = coding;
    air.channel_mut().config_mut().loss_ppm = loss_ppm;
    let before: Vec<(u64, u64)> = (0..n)
        .map(|i| {
            let s = air.channel().station_stats(i);
            (s.bytes, s.air_ms)
        })
        .collect();
    // 60 payments nobody heard of (25 may wait per sender).
    let net = params::regtest().network_id();
    for (j, k) in keys.iter().enumerate() {
        for n in 0..3u8 {
            let tx = Transaction::sign(net, k, Address([j as u8 + 100; 32]), 5, 1000, u64::from(n));
            air.nodes[0].chain.submit_tx(tx, air.now / 1000).unwrap();
        }
    }
    let from = crate::keys::address(&key());
    let mut b = air.nodes[0].chain().block_template(from, air.now / 1000);
    while !pow::mine(&mut b.header, 1_000_000) {}
    let tip = b.hash();
    let size = b.encoded_len();
    assert!((7_500..9_000).contains(&size), "block of {size} bytes");
    air.nodes[0].submit_block(air.now, b).unwrap();
    let took = run_until(&mut air, 20 * 60_000, |a| {
        a.nodes.iter().all(|x| x.chain().tip().hash == tip)
    });
    if took.is_none() && std::env::var_os("AIR_BREAKDOWN").is_some() {
        let heights: Vec<u64> = air.nodes.iter().map(|x| x.chain().tip().height).collect();
        let mut by: BTreeMap<(usize, String), usize> = BTreeMap::new();
        for (st, d) in &air.sent_log {
            let k = d.split(' ').next().unwrap_or("").to_string();
            *by.entry((*st, k)).or_default() += 1;
        }
        eprintln!("seed {seed}: heights {heights:?}; {by:?}");
    }
    let (bytes, air_ms) = (0..n).fold((0, 0), |(b, t), i| {
        let s = air.channel().station_stats(i);
        (b + s.bytes - before[i].0, t + s.air_ms - before[i].1)
    });
    Some((bytes, air_ms, took, size))
}

#[test]
fn a_block_broadcast_coded_reaches_every_station_for_less_air() {
    // Five stations (four besides the miner) at 10 % loss each. Without coding each of
    // the four asks for the block and gets it sent to it alone, each with its own NACK
    // rounds; coded, it goes once with repair symbols that fix every station's losses.
    // (The plain path is counted until it delivered or gave up after 20 minutes.)
    let (mut coded, mut plain, mut runs) = ((0, 0), (0, 0), 0);
    for seed in 1..7 {
        let (Some(c), Some(p)) = (
            block_to_all(5, seed, 100_000, true),
            block_to_all(5, seed, 100_000, false),
        ) else {
            continue;
        };
        runs += 1;
        eprintln!("seed {seed}: coded {c:?}, plain {p:?} (bytes, air ms, took ms)");
        assert!(
            c.2.is_some(),
            "seed {seed}: the coded block did not reach every station"
        );
        coded = (coded.0 + c.0, coded.1 + c.1);
        plain = (plain.0 + p.0, plain.1 + p.1);
    }
    assert!(runs >= 3, "only {runs} seeds where the stations met");
    assert!(
        coded.0 * 2 < plain.0 && coded.1 * 2 < plain.1,
        "coded {coded:?} against plain {plain:?} (bytes, air ms)"
    );
}

/// Figures for docs/BENCHMARKS.md: `cargo test --lib coded_broadcast_figures --
/// --ignored --nocapture`. Five receiving stations besides the miner.
#[test]
#[ignore]
fn coded_broadcast_figures() {
    // AIR_LOSS_PPM sets another loss (100 000 by default).
    let loss = std::env::var("AIR_LOSS_PPM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for (label, coding) in [("coded", true), ("plain", false)] {
        let (mut bytes, mut air_ms, mut took, mut done, mut runs) = (0, 0, 0, 0, 0);
        for seed in 1..=8 {
            let Some((b, a, t, _)) = block_to_all(6, seed, loss, coding) else {
                continue;
            };
            runs += 1;
            eprintln!("{label} seed {seed}: {b} bytes keyed up, {a} ms of air, to all in {t:?} ms");
            bytes += b;
            air_ms += a;
            if let Some(t) = t {
                took += t;
                done += 1;
            }
        }
        eprintln!(
            "{label}: mean over {runs} seeds: {} bytes, {:.1} s of air; {done} delivered \
             everywhere, in {:.1} s on average",
            bytes / runs.max(1),
            air_ms as f64 / runs.max(1) as f64 / 1000.0,
            took as f64 / done.max(1) as f64 / 1000.0
        );
    }
}

#[test]
fn with_one_other_station_a_block_goes_the_plain_way() {
    // Coding pays where one burst serves several stations; with one, the header, the
    // request and the NACK repair stay as they were.
    for seed in 1..4 {
        let Some((_, _, took, _)) = block_to_all(2, seed, 100_000, true) else {
            continue;
        };
        assert!(took.is_some(), "seed {seed}: the block did not arrive");
    }
    let mut air = Air::new(2, 1, 0);
    fund_everyone(&mut air);
    air.run_for(30_000);
    let tip = mine_private(&mut air, 0, 20);
    air.run_for(120_000);
    assert_eq!(air.nodes[1].chain().tip().hash, tip);
    let coded = air
        .sent_log
        .iter()
        .filter(|(_, d)| d.starts_with("symbol") || d == "more")
        .count();
    assert_eq!(coded, 0, "coded packets between two stations");
    assert!(air
        .sent_log
        .iter()
        .any(|(s, d)| *s == 0 && d.starts_with("fragment")));
}

#[test]
fn a_block_to_five_stations_goes_the_plain_way_too() {
    // Old nodes (no `CODED`) and links where coding does not apply take the plain path:
    // the header, then the block to each station that asks, repaired by NACKs. With five
    // receiving stations it delivered to all of them in none of eight runs within 20
    // minutes, even without loss: a request that waited in its TNC behind another
    // station's burst was answered with a copy each, the copies spent the sender's
    // duty-cycle budget, and then its short bursts (a frame or two per turn) made
    // receivers NACK what was still to come and give up on transfers still arriving.
    for (loss, per_run, mean) in [(0, 9, 7), (100_000, 12, 10)] {
        let (mut bytes, mut blocks, mut runs) = (0, 0, 0);
        for seed in 1..5 {
            let Some((b, _, took, size)) = block_to_all(6, seed, loss, false) else {
                continue;
            };
            runs += 1;
            assert!(
                took.is_some(),
                "seed {seed}, loss {loss} ppm: not every station got the block ({b} bytes \
                 keyed up)"
            );
            // Five copies are what the plain path needs at least.
            assert!(
                b < (per_run * size) as u64,
                "seed {seed}, loss {loss} ppm: {b} bytes keyed up for a block of {size}"
            );
            bytes += b;
            blocks += size as u64;
        }
        assert!(runs >= 3, "only {runs} seeds where the stations met");
        assert!(
            bytes < mean * blocks,
            "loss {loss} ppm: {bytes} bytes keyed up for {runs} blocks of {blocks} bytes"
        );
    }
}
