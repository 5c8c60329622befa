//! Writes the seed corpus under `fuzz/seeds/<target>/` from valid encodings.
//!
//! ```text
//! cd fuzz && cargo run --example gen_seeds
//! ```
//! Deterministic: re-running it rewrites the same files.

use skywave::chain::{params, Address, Hash, Header, Sig, Transaction};
use skywave::wire::ax25::{encode_ui, Callsign, BROADCAST};
use skywave::wire::envelope::encode;
use skywave::wire::fountain::{encode_more, More};
use skywave::wire::frag::{encode_nack, split};
use skywave::wire::js8text;
use skywave::wire::kiss::{encode_data, tx_delay};
use skywave::wire::message::{
    features, GetHeaders, Hello, InvItem, InvKind, Message, Reject, RejectCode, PROTOCOL_VERSION,
};
use skywave::wire::stream::frame;
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let p = params::regtest();
    let net = p.network_id();
    let genesis = p.genesis.clone();
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        network: net,
        height: 0,
        tip: genesis.hash(),
        work: 2,
        node_id: [7; 32],
        callsign: "N0CALL-1".into(),
        features: features::FULL_BLOCKS,
        nonce: 42,
        user_agent: "skywave/0.1".into(),
    });
    let item = InvItem {
        kind: InvKind::Block,
        hash: genesis.hash(),
    };
    let tx = Transaction {
        from: Address([1; 32]),
        to: Address([2; 32]),
        amount: 1000,
        fee: 1000,
        nonce: 0,
        sig: Sig([3; 64]),
    };
    let header = Header {
        height: 1,
        prev: genesis.hash(),
        ..genesis.header.clone()
    };
    let msgs: Vec<(&str, Message)> = vec![
        ("hello", hello.clone()),
        ("ping", Message::Ping(1)),
        ("pong", Message::Pong(300)),
        ("inv", Message::Inv(vec![item])),
        ("getdata", Message::GetData(vec![item, InvItem { kind: InvKind::Tx, hash: Hash([9; 32]) }])),
        (
            "getheaders",
            Message::GetHeaders(GetHeaders {
                locator: vec![genesis.hash()],
                stop: None,
                max: 1000,
            }),
        ),
        ("headers", Message::Headers(vec![header])),
        ("block", Message::Block(genesis.clone())),
        ("tx", Message::Tx(tx)),
        ("notfound", Message::NotFound(vec![item])),
        (
            "reject",
            Message::Reject(Reject {
                code: RejectCode::Malformed,
                reason: "bad".into(),
                about: Some(Hash([5; 32])),
            }),
        ),
    ];
    let envs: Vec<(&str, Vec<u8>)> = msgs
        .iter()
        .enumerate()
        .map(|(i, (n, m))| (*n, encode(net, i as u64 + 1, m)))
        .collect();

    // envelope: each message kind.
    for (n, e) in &envs {
        write("envelope", n, e);
    }

    // stream: [k, sizes.., stream]: whole stream at once, and in 3/200-byte chunks.
    let stream: Vec<u8> = envs.iter().take(4).flat_map(|(_, e)| frame(e)).collect();
    let mut s = vec![0u8];
    s.extend_from_slice(&stream);
    write("stream", "four_frames_whole", &s);
    let mut s = vec![2u8, 3, 200];
    s.extend_from_slice(&stream);
    write("stream", "four_frames_chunked", &s);
    let mut s = vec![0u8];
    s.extend_from_slice(&frame(&envs[0].1));
    s.extend_from_slice(&[0, 0, 0, 0]);
    write("stream", "frame_then_zero_prefix", &s);

    // ax25: UI frames as encode_ui writes them.
    let src: Callsign = "N0CALL-1".parse().expect("callsign");
    let digi: Callsign = "WIDE2-2".parse().expect("callsign");
    let ui_plain = encode_ui(&src, &BROADCAST, &[], &envs[1].1).expect("ui");
    let ui_digi = encode_ui(&src, &BROADCAST, &[digi, digi], b"hi").expect("ui");
    write("ax25", "ui_ping", &ui_plain);
    write("ax25", "ui_two_digis", &ui_digi);

    // kiss: [cap, chunk, stream]: cap 255 = default 4096, chunk 0 = all at once.
    let mut k = vec![255u8, 0];
    tx_delay(0, 30, &mut k);
    encode_data(0, &ui_plain, &mut k);
    encode_data(12, &[0xC0, 0xDB, 0xDC], &mut k);
    write("kiss", "params_and_data", &k);
    let mut k = vec![32u8, 5];
    encode_data(1, &ui_digi, &mut k);
    write("kiss", "cap32_chunk5", &k);

    // frag: records `ctrl len bytes` (ctrl: peer in bits 0-1, time step in 2-6, bit 7
    // = build the fragment header from `id index count`).
    let mut f = Vec::new();
    let rec = |ctrl: u8, bytes: &[u8], f: &mut Vec<u8>| {
        f.push(ctrl);
        f.push(bytes.len() as u8);
        f.extend_from_slice(bytes);
    };
    let msg: Vec<u8> = (0..200u8).collect();
    let parts = split(3, &msg, 64).expect("split");
    for (i, p) in parts.iter().enumerate().rev() {
        rec(i as u8 & 1, p, &mut f);
    }
    rec(0x04, &encode_nack(3, &[0, 2, 4, 6, 8]), &mut f);
    rec(0x05, &encode_nack(3, &(10..300).collect::<Vec<u32>>()), &mut f);
    rec(0x02, &split(0, b"whole", 64).expect("split")[0], &mut f);
    rec(0x80 | 0x04, &[1, 0, 2, 0xAA, 0xBB], &mut f);
    rec(0x80 | 0x04, &[1, 1, 2, 0xCC], &mut f);
    write("frag", "transfers_and_nacks", &f);

    // coded: records `ctrl len bytes` (see fuzz_targets/coded.rs).
    let mut c = Vec::new();
    let message: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let mut honest = vec![1, 20, 0b0000_0101];
    honest.extend(&message);
    rec(0x40 | 0x04, &honest, &mut c); // coded at MTU 37, indices 0 and 2 mod 8 lost
    rec(0x80 | 0x05, &[2, 4, 1, 3, 9, 9, 9, 9], &mut c); // a made-up SYMBOL
    let more = More { transfer_id: 1, need: 3, got: 9 };
    rec(0x05, &encode_more(more), &mut c);
    rec(0xC0, &[4, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9], &mut c);
    write("coded", "honest_and_made_up", &c);

    // node: op = action << 1 | slot on the TCP link (see fuzz_targets/node.rs).
    let op = |action: u8, slot: u8| action << 1 | slot;
    let mut n = Vec::new();
    n.extend([op(2, 0), 0, 5]); // hello from slot 0, claims more work
    n.extend([op(2, 1), 0, 0]); // hello from slot 1
    let ping = postcard_u64(77);
    n.extend([op(1, 0), 2, 0, ping.len() as u8]);
    n.extend(&ping); // wrapped Ping(77)
    n.extend([op(4, 0), 2]); // slot 0 mines 3 blocks
    n.extend([op(6, 0), 0, 6]); // headers 0..3
    n.extend([op(5, 0), 0, op(5, 0), 1, op(5, 0), 2]); // the blocks
    n.extend([op(4, 1), 3, op(6, 1), 0, 8]); // slot 1 forks with 4 blocks, sends headers
    n.extend([op(3, 0), 90, op(3, 0), 200]); // time passes: pings, timeouts
    n.extend([op(7, 1)]); // echo the node's last message back
    let raw = &envs[3].1;
    n.extend([op(0, 1), 0, raw.len() as u8]);
    n.extend(raw); // raw Inv envelope (regtest network)
    write("node", "handshake_mine_fork", &n);
    let mut n = Vec::new();
    n.extend([op(7, 0)]); // echo our own Hello: "connected to ourselves"
    n.extend([op(0, 1), 0, 3, 1, 2, 3]); // garbage
    n.extend([op(1, 0), 6, 0, 3, 1, 0, 0]); // GetHeaders body before hello
    write("node", "misbehaviour", &n);
    // node on the radio link: op | 0x10, actions 8.. with 0x20.
    let r = |action: u8, slot: u8| 0x10 | (action & 7) << 1 | (action & 8) << 2 | slot;
    let mut n = Vec::new();
    n.extend([r(2, 0), 0, 5]); // hello from station 0, claims more work
    n.extend([r(10, 1), 0, 0]); // beacon from station 1
    n.extend([r(4, 0), 2, r(6, 0), 0, 6]); // station 0 mines 3 blocks, sends headers
    n.extend([r(5, 0), 0, r(5, 0), 1, r(5, 0), 2]); // the blocks, in packets
    n.extend([r(3, 0), 30]); // time passes: the node takes its turn
    n.extend([r(14, 1), 1, 3, 0]); // station 1 asks for blocks 1..3
    n.extend([r(3, 0), 60]);
    n.extend([r(9, 1), 1, 0, r(9, 1), 2, 0, r(9, 1), 3, 0]); // NACKs of everything
    n.extend([r(3, 0), 60]);
    n.extend([r(9, 1), 2, 1, 0, 3]); // a NACK of fragments 0..3 of transfer 2
    n.extend([r(12, 1), 1, 4, 0, 0, 0, 0]); // GetBlockTxn repeating index 0
    n.extend([r(11, 0), 0, 9]); // a compact block
    n.extend([r(15, 1), 2, 100]); // 200 tx ids and a block hash as a tx
    n.extend([r(13, 0), 2, 0, ping.len() as u8]);
    n.extend(&ping);
    n.push(0); // a wrapped Ping in 64-byte fragments
    n.extend([r(8, 1), 7, 1, 3, 4, 1, 2, 3, 4]); // a stray fragment
    n.extend([r(7, 1)]); // echo the node's last packet back
    write("node", "radio_nacks_and_requests", &n);

    // js8_text: packets as JS8Call hands them back (address prefix removed by the link).
    let whole = split(0, &envs[1].1, 32).expect("split");
    let t = js8text::encode(&whole[0]);
    write("js8_text", "ping_packet", t.as_bytes());
    write("js8_text", "ping_received", format!("{t} \u{2662}").as_bytes());
    write("js8_text", "empty_payload", js8text::encode(&[]).as_bytes());
    write("js8_text", "chat", b"HELLO OM TNX FER CALL 73 \xe2\x99\xa2");
}

/// Postcard's varint encoding of a u64 (LEB128).
fn postcard_u64(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}
