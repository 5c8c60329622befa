//! The JS8Call link end to end: two real `skywave run` processes, each talking to one of
//! a pair of emulated JS8Call stations (tests/support/js8_emu.rs) that run the air 40
//! times faster than real turbo speed.

mod support;

use serde_json::Value;
use skywave::wire::{frag, js8text, Message};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::js8_emu::Js8Pair;
use support::{http, wait_for, TestNode};

const CALL_A: &str = "N0CALL";
const CALL_B: &str = "N1ABC";
/// Time scale: the emulator runs JS8 40 times fast, and so does each node's clock
/// (`SKYWAVE_TIME_SCALE`), so that every timer of the core keeps its proportion to the
/// air: the link reports turbo's real 6-s slots and 6 bit/s.
const SCALE: u32 = 40;

/// The environment of a node on the emulated air (the same 40).
const SCALED: &[(&str, &str)] = &[("SKYWAVE_TIME_SCALE", "40")];

fn js8_url(pair: &Js8Pair, i: usize, peer: &str, blocks: bool) -> String {
    format!(
        "js8call://{}?peer={peer}&speed=turbo&blocks={}",
        pair.addr(i),
        blocks as u8
    )
}

/// Two nodes that share a 2-block chain (mined by B, so B has coins), both stopped.
fn shared_chain() -> (TestNode, TestNode) {
    let mut a = TestNode::init("a", &format!("{CALL_A}-1"));
    let mut b = TestNode::init("b", &format!("{CALL_B}-2"));
    b.ok(&["mine", "--blocks", "2"]);
    b.start(&[]);
    a.start(&["--link", &b.url()]);
    let synced = wait_for(Duration::from_secs(20), || a.height().filter(|h| *h == 2));
    assert!(
        synced.is_some(),
        "A did not sync over TCP: {}",
        a.log_text()
    );
    a.stop();
    b.stop();
    (a, b)
}

/// Both nodes see each other on the JS8 link with the handshake done.
fn wait_ready(a: &TestNode, b: &TestNode, secs: u64) -> bool {
    let ready = |n: &TestNode, call: &str| {
        n.status()["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["ready"] == true && p["remote"].as_str() == Some(call))
        })
    };
    wait_for(Duration::from_secs(secs), || {
        (ready(a, CALL_B) && ready(b, CALL_A)).then_some(())
    })
    .is_some()
}

/// One skywave transfer seen on the air: all JS8 messages carrying its packets.
#[derive(Debug, Default)]
struct Transfer {
    from: String,
    kind: &'static str,
    /// Frames of one copy of each of its packets (repeats not counted).
    frames: usize,
    packets: usize,
}

/// Transfers on the air, in the order they started.
fn transfers_on_air(pair: &Js8Pair) -> Vec<Transfer> {
    let mut out: Vec<Transfer> = Vec::new();
    let mut seen: HashMap<(String, u32), (usize, Vec<u32>)> = HashMap::new();
    let kind_of = |envelope: &[u8]| {
        envelope
            .get(5)
            .and_then(|k| Message::kind_name(*k))
            .unwrap_or("unknown")
    };
    for m in pair.aired() {
        let Ok(packet) = js8text::decode(&m.text) else {
            continue;
        };
        match frag::parse(&packet) {
            Ok(frag::Packet::Whole(e)) => out.push(Transfer {
                from: m.from.clone(),
                kind: kind_of(e),
                frames: m.frames,
                packets: 1,
            }),
            Ok(frag::Packet::Fragment(f)) => {
                let key = (m.from.clone(), f.transfer_id);
                let (at, indices) = seen.entry(key).or_insert_with(|| {
                    out.push(Transfer {
                        from: m.from.clone(),
                        ..Transfer::default()
                    });
                    (out.len() - 1, Vec::new())
                });
                let t = &mut out[*at];
                if f.index == 0 {
                    t.kind = kind_of(f.payload);
                }
                if !indices.contains(&f.index) {
                    indices.push(f.index);
                    t.frames += m.frames;
                    t.packets += 1;
                }
            }
            _ => {}
        }
    }
    out
}

/// One line per message on the air: sender, slots, collisions, fate.
fn air_log(pair: &Js8Pair) -> String {
    pair.aired()
        .iter()
        .map(|m| {
            format!(
                "{} -> {} slots {}..{} ({} frames){}{}",
                m.from,
                m.to,
                m.first_slot,
                m.first_slot + m.frames as u64,
                m.frames,
                if m.collided() {
                    format!(" collided with {:?}", m.collided_with)
                } else {
                    String::new()
                },
                if m.lost { " LOST" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Message kinds each station put on air, from the first packet of every transfer.
fn kinds_on_air(pair: &Js8Pair) -> HashMap<String, HashMap<&'static str, usize>> {
    let mut out: HashMap<String, HashMap<&'static str, usize>> = HashMap::new();
    for m in pair.aired() {
        let Ok(packet) = js8text::decode(&m.text) else {
            continue;
        };
        let envelope = match frag::parse(&packet) {
            Ok(frag::Packet::Whole(e)) => e,
            Ok(frag::Packet::Fragment(f)) if f.index == 0 => f.payload,
            _ => continue,
        };
        // Envelope: version, network id (4), kind.
        let name = envelope
            .get(5)
            .and_then(|k| Message::kind_name(*k))
            .unwrap_or("unknown");
        *out.entry(m.from).or_default().entry(name).or_default() += 1;
    }
    out
}

fn blocks_sent(kinds: &HashMap<&'static str, usize>) -> usize {
    ["block", "cmpctblock", "blocktxn"]
        .iter()
        .map(|k| kinds.get(k).copied().unwrap_or(0))
        .sum()
}

/// B sends A a transaction over JS8; A mines it; B learns A's new tip. Returns the
/// transaction id and A's new height.
///
/// Both nodes restart around the mining, after the air has gone quiet: a station that
/// restarts alone is not greeted again by the other side until its next beacon, and a
/// restarted node reuses transfer ids that the other side may still hold (core issues).
fn tx_then_block(
    pair: &Js8Pair,
    a: &mut TestNode,
    b: &mut TestNode,
    a_url: &str,
    b_url: &str,
) -> (String, u64) {
    let t = Instant::now();
    let txid = b.ok(&[
        "tx",
        "send",
        "--to",
        &a.address(),
        "--amount",
        "1000",
        "--fee",
        "1000",
    ]);
    let in_mempool = wait_for(Duration::from_secs(60), || {
        let (_, v) = http(&a.api(), "GET", &format!("/api/tx/{txid}"), None)?;
        (v["status"] == "mempool").then_some(())
    });
    assert!(
        in_mempool.is_some(),
        "tx never reached A's mempool; air {:?}\nA log:\n{}",
        kinds_on_air(pair),
        a.log_text()
    );
    eprintln!("tx B->A over JS8 in {:.1} s", t.elapsed().as_secs_f64());

    // A mines a block with the transaction in it.
    a.stop();
    b.stop();
    // What JS8Call was given keeps going out; let it finish so the new sessions do not
    // meet fragments of the old ones.
    assert!(
        pair.wait_idle(Duration::from_secs(60)),
        "air never went quiet"
    );
    let mined: Value =
        serde_json::from_str(&a.ok(&["--json", "mine", "--blocks", "1"])).expect("mine --json");
    let height = mined["height"].as_u64().expect("height");
    assert_eq!(height, 3);
    a.start_env(&["--link", a_url], SCALED);
    b.start_env(&["--link", b_url], SCALED);
    let (_, blk) = http(&a.api(), "GET", "/api/blocks/3", None).expect("block 3");
    let ids: Vec<&str> = blk["txs"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&txid.as_str()), "tx not mined: {blk}");
    let t = Instant::now();
    // A new session first (greetings and signed proofs both ways: about 18 JS8 frames),
    // then the header.
    let learned = wait_for(Duration::from_secs(120), || {
        (b.status()["header_height"].as_u64()? >= height).then_some(())
    });
    assert!(
        learned.is_some(),
        "B never learned A's tip; air {:?}\nB log:\n{}",
        kinds_on_air(pair),
        b.log_text()
    );
    eprintln!(
        "header of block {height} A->B in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (txid, height)
}

#[test]
fn js8_link_carries_a_tx_and_headers_but_no_block_with_blocks_0() {
    let (mut a, mut b) = shared_chain();
    let pair = Js8Pair::start(CALL_A, CALL_B, SCALE as f64, 0.0);
    let a_url = js8_url(&pair, 0, CALL_B, false);
    let b_url = js8_url(&pair, 1, CALL_A, false);
    a.start_env(&["--link", &a_url], SCALED);
    b.start_env(&["--link", &b_url], SCALED);
    let t = Instant::now();
    assert!(
        wait_ready(&a, &b, 60),
        "no handshake over JS8; air {:?}\n{}\nA:\n{}\nB:\n{}",
        kinds_on_air(&pair),
        air_log(&pair),
        a.log_text(),
        b.log_text()
    );
    eprintln!("handshake over JS8 in {:.1} s", t.elapsed().as_secs_f64());
    // The link set the speed and checked the callsign.
    for i in 0..2 {
        let r = pair.requests(i);
        assert!(r.contains(&"MODE.SET_SPEED".to_string()), "{r:?}");
        assert!(r.contains(&"STATION.GET_CALLSIGN".to_string()), "{r:?}");
    }
    let caps = &a.status()["links"][1]["caps"];
    assert_eq!(caps["text_only"], true, "{caps}");
    assert_eq!(caps["blocks"], false, "{caps}");

    let (_, height) = tx_then_block(&pair, &mut a, &mut b, &a_url, &b_url);
    // Headers only: B knows the tip but has no body for it, and none crossed the air.
    std::thread::sleep(Duration::from_secs(5));
    assert!(b.height().is_some_and(|h| h < height), "a block reached B");
    let kinds = kinds_on_air(&pair);
    eprintln!("on air: {kinds:?}");
    for (call, k) in &kinds {
        assert_eq!(blocks_sent(k), 0, "{call} sent blocks over JS8: {k:?}");
    }
    assert!(kinds[CALL_B].contains_key("tx"), "{kinds:?}");
    a.stop();
    b.stop();
}

#[test]
fn js8_link_carries_a_small_block_with_blocks_1_and_survives_bad_text() {
    let (mut a, mut b) = shared_chain();
    let pair = Js8Pair::start(CALL_A, CALL_B, SCALE as f64, 0.0);
    let a_url = js8_url(&pair, 0, CALL_B, true);
    let b_url = js8_url(&pair, 1, CALL_A, true);
    a.start_env(&["--link", &a_url], SCALED);
    b.start_env(&["--link", &b_url], SCALED);
    assert!(
        wait_ready(&a, &b, 60),
        "no handshake over JS8; A:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );

    // Rubbish at B from its JS8Call: broken JSON, an overlong line, conversation, and
    // damaged skywave text from A (a lost frame would look like this).
    pair.inject_raw(
        1,
        b"{\"type\":\"RX.DIRECTED\",\"params\":\n[1,2,3]\nnot json at all\n",
    );
    let mut long = vec![b'x'; 40 * 1024];
    long.push(b'\n');
    pair.inject_raw(1, &long);
    pair.inject_directed(1, CALL_A, CALL_B, "HELLO OM HOW COPY?");
    let good = js8text::encode(&[0, 1, 2, 3, 4, 5, 6, 7]);
    let damaged: Vec<&str> = good.split(' ').collect();
    pair.inject_directed(1, CALL_A, CALL_B, &damaged[3..].join(" "));
    let logged = wait_for(Duration::from_secs(10), || {
        b.log_text().contains("damaged skywave text").then_some(())
    });
    assert!(
        logged.is_some(),
        "damaged text not logged:\n{}",
        b.log_text()
    );
    assert!(
        b.log_text().contains("not skywave ignored"),
        "{}",
        b.log_text()
    );

    let (_, height) = tx_then_block(&pair, &mut a, &mut b, &a_url, &b_url);
    let got = wait_for(Duration::from_secs(60), || {
        b.height().filter(|h| *h >= height)
    });
    assert!(
        got.is_some(),
        "block never reached B; air {:?}\nB log:\n{}",
        kinds_on_air(&pair),
        b.log_text()
    );
    assert_eq!(b.tip(), a.tip());
    eprintln!("on air: {:?}", kinds_on_air(&pair));
    a.stop();
    b.stop();
}

#[test]
fn js8_link_reconnects_after_js8call_goes_away() {
    let mut a = TestNode::init("a", &format!("{CALL_A}-1"));
    let pair = Js8Pair::start(CALL_A, CALL_B, SCALE as f64, 0.0);
    a.start_env(&["--link", &js8_url(&pair, 0, CALL_B, false)], SCALED);
    let up = |n: &TestNode| n.status()["links"][1]["up"] == true;
    assert!(wait_for(Duration::from_secs(10), || up(&a).then_some(())).is_some());
    pair.disconnect(0);
    let down = wait_for(Duration::from_secs(10), || {
        let l = &a.status()["links"][1];
        (l["up"] == false).then(|| l["error"].as_str().unwrap_or("").to_string())
    });
    assert!(down.is_some_and(|e| e.contains("lost")), "{}", a.log_text());
    // Backoff 1 s, then the link is back and JS8Call is asked again.
    assert!(wait_for(Duration::from_secs(10), || up(&a).then_some(())).is_some());
    assert!(pair.connected(0));
    let asks = pair
        .requests(0)
        .iter()
        .filter(|r| *r == "STATION.GET_CALLSIGN")
        .count();
    assert_eq!(asks, 2);
    a.stop();
}

/// The emulator itself, through a raw API client: what the link tests rely on.
#[test]
fn emulator_follows_the_js8call_api() {
    use std::io::{BufRead, BufReader, Write};
    let pair = Js8Pair::start(CALL_A, CALL_B, 100.0, 1.0);
    let client = |i: usize| {
        let s = std::net::TcpStream::connect(pair.addr(i)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let r = BufReader::new(s.try_clone().expect("clone"));
        (s, r)
    };
    let (mut wa, mut ra) = client(0);
    let (mut wb, mut rb) = client(1);
    let next = |r: &mut BufReader<std::net::TcpStream>| -> Value {
        let mut l = String::new();
        r.read_line(&mut l).expect("line from emulator");
        serde_json::from_str(&l).expect("json line")
    };
    let send = |w: &mut std::net::TcpStream, v: Value| {
        w.write_all(format!("{v}\n").as_bytes()).expect("write");
    };
    send(
        &mut wa,
        serde_json::json!({"type": "STATION.GET_CALLSIGN", "value": "", "params": {"_ID": 7}}),
    );
    let v = next(&mut ra);
    assert_eq!(
        (v["type"].as_str(), v["value"].as_str()),
        (Some("STATION.CALLSIGN"), Some(CALL_A))
    );
    assert_eq!(v["params"]["_ID"], 7);
    send(
        &mut wb,
        serde_json::json!({"type": "MODE.SET_SPEED", "value": "", "params": {"SPEED": 2, "_ID": 8}}),
    );
    assert_eq!(next(&mut rb)["params"]["SPEED"], 2);
    send(
        &mut wa,
        serde_json::json!({"type": "MODE.SET_SPEED", "value": "", "params": {"SPEED": 1, "_ID": 9}}),
    );
    assert_eq!(next(&mut ra)["params"]["SPEED"], 1);

    // Lost: keyed on air at A, never heard at B.
    send(
        &mut wa,
        serde_json::json!({"type": "TX.SEND_MESSAGE", "value": "n1abc e t a", "params": {"_ID": 10}}),
    );
    let kinds: Vec<String> = (0..6)
        .map(|_| next(&mut ra)["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        ["RIG.PTT", "TX.FRAME", "RIG.PTT"].repeat(2),
        "header + 1 text frame"
    );
    assert!(pair.wait_idle(Duration::from_secs(5)));
    // Heard: uppercased, unsendable characters dropped, end marker added.
    pair.set_loss(0.0);
    send(
        &mut wa,
        serde_json::json!({"type": "TX.SEND_MESSAGE", "value": "N1ABC hello é\\ world", "params": {"_ID": 11}}),
    );
    // Every frame as it is decoded, then the whole message.
    let mut activity: Vec<Value> = Vec::new();
    let v = loop {
        let v = next(&mut rb);
        if v["type"] != "RX.ACTIVITY" {
            break v;
        }
        activity.push(v);
    };
    assert_eq!(v["type"], "RX.DIRECTED", "{v}");
    assert_eq!(v["params"]["FROM"], CALL_A);
    assert_eq!(v["params"]["TO"], CALL_B);
    // The speed the message was sent at (JS8Call reports the decoded frame's submode).
    assert_eq!(v["params"]["SPEED"], 1);
    assert_eq!(v["params"]["TEXT"], "N0CALL: N1ABC HELLO  WORLD \u{2662}");
    let aired = pair.aired();
    assert_eq!(aired.len(), 2);
    assert!(aired[0].lost && !aired[1].lost);
    assert_eq!(aired[1].text, "HELLO  WORLD");
    assert_eq!(activity.len(), aired[1].frames);
    let shown: String = activity
        .iter()
        .map(|v| v["value"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(shown, "N0CALL: N1ABC HELLO WORLD ");
    assert!(activity.iter().all(|v| v["params"]["SPEED"] == 1));
}

/// Two stations whose links come up in the same second (both nodes started at once, as
/// after a power cut), each configured with the other: with no carrier sense on JS8 both
/// greet at once, deaf to each other, unless one yields. The station whose callsign sorts
/// later draws its first slot after the other's window, so no frame may collide; they
/// must finish the handshake and carry a transaction within twice the air time of the
/// frames that needs (each Hello and proof, and the transaction, back to back). The time
/// the test itself takes to ask for the payment (a CLI process, 40 times slower on this
/// scaled air) is not counted against the node.
#[test]
fn js8_stations_started_together_handshake_and_carry_a_tx() {
    let (mut a, mut b) = shared_chain();
    let pair = Js8Pair::start(CALL_A, CALL_B, SCALE as f64, 0.0);
    let a_url = js8_url(&pair, 0, CALL_B, false);
    let b_url = js8_url(&pair, 1, CALL_A, false);
    std::thread::scope(|s| {
        s.spawn(|| a.start_env(&["--link", &a_url], SCALED));
        s.spawn(|| b.start_env(&["--link", &b_url], SCALED));
    });
    let slot = pair.slot(js8text::Js8Speed::Turbo);
    let up = match (pair.connected_at(0), pair.connected_at(1)) {
        (Some(x), Some(y)) => x.min(y),
        other => panic!("links not connected: {other:?}"),
    };
    let skew = pair
        .connected_at(0)
        .unwrap()
        .abs_diff(pair.connected_at(1).unwrap());
    eprintln!(
        "links up {:.0} ms apart ({:.2} slots of {} ms)",
        skew.as_secs_f64() * 1000.0,
        skew.as_secs_f64() / slot.as_secs_f64(),
        slot.as_millis()
    );
    let collisions = |pair: &Js8Pair| {
        let aired = pair.aired();
        let hit: Vec<_> = aired.iter().filter(|m| m.collided()).collect();
        let slots: usize = hit.iter().map(|m| m.frames).sum();
        let lockstep = hit
            .iter()
            .filter(|m| {
                aired
                    .iter()
                    .any(|o| o.from != m.from && o.first_slot == m.first_slot)
            })
            .count();
        format!(
            "{} of {} messages collided ({} frames; {} started in the same slot as the \
             other station's)",
            hit.len(),
            aired.len(),
            slots,
            lockstep
        )
    };
    let t = Instant::now();
    // Both waits together stay within a minute; the bound below is tighter anyway.
    let ready = wait_ready(&a, &b, 40);
    eprintln!(
        "handshake: {ready} after {:.1} s; {}",
        t.elapsed().as_secs_f64(),
        collisions(&pair)
    );
    assert!(
        ready,
        "no handshake in 40 s; {}; air {:?}\n{}",
        collisions(&pair),
        kinds_on_air(&pair),
        air_log(&pair)
    );
    // The air went quiet after the handshake at `quiet` (the test noticed the handshake
    // at `asked`); the CLI asking for the payment returned at `sent`; A's mempool held
    // it at `seen`.
    let asked = pair.now();
    let quiet = pair
        .aired()
        .iter()
        .filter(|m| m.start < asked)
        .map(|m| m.end)
        .max()
        .unwrap_or(up);
    let txid = b.ok(&[
        "tx",
        "send",
        "--to",
        &a.address(),
        "--amount",
        "1000",
        "--fee",
        "1000",
    ]);
    let sent = pair.now();
    let in_mempool = wait_for(Duration::from_secs(20), || {
        let (_, v) = http(&a.api(), "GET", &format!("/api/tx/{txid}"), None)?;
        (v["status"] == "mempool").then_some(())
    });
    let seen = pair.now();
    // From the first link up to the end of the air that carried the transaction, less
    // the air left idle while the test polled and ran its CLI.
    let aired_by = pair
        .aired()
        .iter()
        .filter(|m| m.start < seen)
        .map(|m| m.end)
        .max()
        .unwrap_or(seen);
    let next = pair
        .aired()
        .iter()
        .filter(|m| m.start >= asked)
        .map(|m| m.start)
        .min()
        .unwrap_or(sent);
    let idle = next.min(sent).saturating_sub(quiet);
    let took = aired_by.saturating_sub(up).saturating_sub(idle);
    eprintln!(
        "tx B->A: {} after {:.1} s of air from link up ({:.1} s idle while the test asked); {}",
        in_mempool.is_some(),
        took.as_secs_f64(),
        idle.as_secs_f64(),
        collisions(&pair)
    );
    assert!(
        in_mempool.is_some(),
        "tx never reached A; {}",
        collisions(&pair)
    );

    // The frames the exchange needs: each station's first Hello and first signed proof
    // (protocol 2: no session is ready without it), and B's transaction.
    let transfers = transfers_on_air(&pair);
    let first = |from: &str, kind: &str| {
        transfers
            .iter()
            .find(|t| t.from == from && t.kind == kind)
            .map(|t| t.frames)
            .unwrap_or_else(|| panic!("no {kind} from {from} on air: {transfers:?}"))
    };
    let needed = first(CALL_A, "hello")
        + first(CALL_B, "hello")
        + first(CALL_A, "auth")
        + first(CALL_B, "auth")
        + first(CALL_B, "tx");
    let bound = slot * (2 * needed as u32);
    eprintln!(
        "needed {needed} frames back to back ({:.1} s); bound {:.1} s; took {:.1} s",
        (slot * needed as u32).as_secs_f64(),
        bound.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        pair.aired().iter().all(|m| !m.collided()),
        "configured stations started together collided: {}\n{}",
        collisions(&pair),
        air_log(&pair)
    );
    assert!(
        took <= bound,
        "took {:.1} s, over twice the needed air time ({:.1} s); {}\n{}",
        took.as_secs_f64(),
        bound.as_secs_f64(),
        collisions(&pair),
        air_log(&pair)
    );
    a.stop();
    b.stop();
}

/// A raw API client on one emulated station.
struct RawClient {
    w: std::net::TcpStream,
    r: std::io::BufReader<std::net::TcpStream>,
}

impl RawClient {
    fn connect(pair: &Js8Pair, i: usize) -> RawClient {
        let s = std::net::TcpStream::connect(pair.addr(i)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let r = std::io::BufReader::new(s.try_clone().expect("clone"));
        RawClient { w: s, r }
    }

    fn send(&mut self, v: Value) {
        use std::io::Write;
        self.w
            .write_all(format!("{v}\n").as_bytes())
            .expect("write");
    }

    fn next(&mut self) -> Option<Value> {
        use std::io::BufRead;
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(n) if n > 0 => Some(serde_json::from_str(&l).expect("json line")),
            _ => None,
        }
    }

    /// Everything the station sent until it has been quiet for `quiet`.
    fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        self.w.set_read_timeout(Some(quiet)).expect("timeout");
        let mut out = Vec::new();
        while let Some(v) = self.next() {
            out.push(v);
        }
        self.w
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        out
    }

    fn speed(&mut self, speed: js8text::Js8Speed) {
        self.send(serde_json::json!({"type": "MODE.SET_SPEED", "value": "",
            "params": {"SPEED": speed.api_value()}}));
        let v = self.next().expect("speed reply");
        assert_eq!(v["params"]["SPEED"], speed.api_value());
    }

    fn tx(&mut self, text: &str) {
        self.send(serde_json::json!({"type": "TX.SEND_MESSAGE", "value": text, "params": {}}));
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| v["type"] == kind).collect()
}

/// JS8's physics in the emulator: stations key up on slot boundaries without listening;
/// two that send in the same slot lose both messages at every station (no capture) and a
/// station that is transmitting hears nothing; sent in different slots, both arrive.
#[test]
fn emulator_keys_up_in_slots_and_same_slot_messages_collide() {
    use js8text::Js8Speed::Turbo;
    let calls = ["N0CALL", "N1ABC", "N2XYZ"];
    let pair = Js8Pair::start_stations(&calls, 20.0, 0.0);
    let mut c: Vec<RawClient> = (0..3).map(|i| RawClient::connect(&pair, i)).collect();
    for cl in c.iter_mut() {
        cl.speed(Turbo);
    }
    let frames = js8text::message_frames("E T A", Turbo, true);
    assert_eq!(frames, 3, "two header frames for a group, one of text");

    // Same slot: A and B both hand JS8Call a broadcast mid-slot.
    pair.wait_slot_phase(Turbo, 0.5);
    c[0].tx("@SKYWAVE E T A");
    c[1].tx("@SKYWAVE T E A");
    assert!(pair.wait_idle(Duration::from_secs(10)));
    let got: Vec<Vec<Value>> = c
        .iter_mut()
        .map(|cl| cl.drain(Duration::from_millis(500)))
        .collect();
    for (i, ev) in got.iter().enumerate() {
        assert!(
            of_type(ev, "RX.DIRECTED").is_empty() && of_type(ev, "RX.ACTIVITY").is_empty(),
            "{} decoded something: {ev:?}",
            calls[i]
        );
    }
    // The senders keyed up once per frame, each frame in its own slot.
    for ev in &got[..2] {
        let ptt: Vec<bool> = of_type(ev, "RIG.PTT")
            .iter()
            .map(|v| v["params"]["PTT"] == true)
            .collect();
        assert_eq!(ptt, [true, false].repeat(frames), "{ev:?}");
        assert_eq!(of_type(ev, "TX.FRAME").len(), frames);
    }
    assert!(got[2].is_empty(), "C sent nothing: {:?}", got[2]);
    let aired = pair.aired();
    assert_eq!(aired.len(), 2);
    assert_eq!(aired[0].first_slot, aired[1].first_slot, "{aired:?}");
    for m in &aired {
        assert!(m.lost && m.collided() && !m.dropped, "{m:?}");
        let other = if m.from == calls[0] {
            calls[1]
        } else {
            calls[0]
        };
        assert_eq!(m.collided_with, [other]);
        let span = (m.end - m.start).as_secs_f64();
        let want = pair.slot(Turbo).as_secs_f64() * frames as f64;
        assert!((span - want).abs() < 1e-6, "{span} s for {frames} slots");
    }

    // Different slots: B hands its message over in A's last slot, so it goes out after.
    pair.wait_slot_phase(Turbo, 0.5);
    c[0].tx("@SKYWAVE E T A");
    for _ in 0..frames {
        pair.wait_slot_phase(Turbo, 0.5);
    }
    c[1].tx("@SKYWAVE T E A");
    assert!(pair.wait_idle(Duration::from_secs(10)));
    let got: Vec<Vec<Value>> = c
        .iter_mut()
        .map(|cl| cl.drain(Duration::from_millis(500)))
        .collect();
    let heard = |ev: &[Value]| -> Vec<String> {
        of_type(ev, "RX.DIRECTED")
            .iter()
            .map(|v| v["params"]["FROM"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(heard(&got[0]), [calls[1]]);
    assert_eq!(heard(&got[1]), [calls[0]]);
    assert_eq!(heard(&got[2]), [calls[0], calls[1]]);
    // Every frame of the other's message decoded, and C decoded both.
    let frames_heard: Vec<usize> = got
        .iter()
        .map(|ev| of_type(ev, "RX.ACTIVITY").len())
        .collect();
    assert_eq!(frames_heard, [frames, frames, 2 * frames]);
    let all = pair.aired();
    let aired = &all[2..];
    assert_eq!(aired[1].first_slot, aired[0].first_slot + frames as u64);
    assert!(aired.iter().all(|m| !m.lost && !m.collided()), "{aired:?}");
}
