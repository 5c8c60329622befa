//! The worked examples of docs/PROTOCOL.md, byte for byte. Each listing below appears
//! verbatim in the doc; the tests fail if the doc, this file or the encoder drift apart.

use super::envelope::{decode, encode, ENVELOPE_VERSION};
use super::message::{features, Hello, Message, PROTOCOL_VERSION};
use crate::chain::types::Hash;
use crate::chain::NetworkParams;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// Example network id (no real network's).
const NET: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];

const PING_LISTING: &str = "\
01         # envelope version 1
d00dfeed   # network id
02         # kind 2 = Ping
01         # msg_id 1 (varint)
2a         # body: Ping value 42 (varint u64)
4c94e0ac   # CRC-32 0xace0944c, little-endian
";

const HELLO_LISTING: &str = "\
01                          # envelope version 1
d00dfeed                    # network id
01                          # kind 1 = Hello
ac02                        # msg_id 300 (varint: 0x2c|0x80, 0x02)
03                          # version 3 (varint u16)
d00dfeed                    # network ([u8; 4], raw)
d209                        # height 1234 (varint u64)
abababababababababababababababababababababababababababababababab
                            # tip (Hash: 32 raw bytes)
8080808010                  # work 2^32 (varint u128)
3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c
                            # node_id ([u8; 32], raw)
08 4e3043414c4c2d31         # callsign: length 8, \"N0CALL-1\"
01                          # features = FULL_BLOCKS (varint u64)
ef9bafcdf8acd19101          # nonce 0x0123456789abcdef (varint u64)
0d 736b79776176652f302e312e30
                            # user_agent: length 13, \"skywave/0.1.0\"
ec3f1eff                    # CRC-32 0xff1e3fec, little-endian
";

/// The bytes of a listing: everything before `#` on each line, hex.
fn listing_bytes(listing: &str) -> Vec<u8> {
    let hex: String = listing
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(hex).expect("listing is hex")
}

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        network: NET,
        height: 1234,
        tip: Hash([0xab; 32]),
        work: 1 << 32,
        node_id: [0x3c; 32],
        callsign: "N0CALL-1".into(),
        features: features::FULL_BLOCKS,
        nonce: 0x0123_4567_89ab_cdef,
        user_agent: "skywave/0.1.0".into(),
    }
}

fn check(listing: &str, msg_id: u64, msg: Message) {
    let bytes = encode(NET, msg_id, &msg);
    assert_eq!(hex::encode(&bytes), hex::encode(listing_bytes(listing)));
    let env = decode(&bytes).expect("example decodes");
    assert_eq!((env.version, env.network), (ENVELOPE_VERSION, NET));
    assert_eq!((env.msg_id, env.message), (msg_id, msg));
    assert!(
        DOC.contains(listing),
        "docs/PROTOCOL.md lacks listing:\n{listing}"
    );
}

#[test]
fn ping_example() {
    check(PING_LISTING, 1, Message::Ping(42));
}

#[test]
fn hello_example() {
    check(HELLO_LISTING, 300, Message::Hello(hello()));
}

#[test]
fn doc_lists_the_real_network_ids() {
    for name in NetworkParams::names() {
        let p = NetworkParams::by_name(name).expect("built-in network");
        let row = format!("| {name} | `{}` |", hex::encode(p.network_id()));
        assert!(DOC.contains(&row), "docs/PROTOCOL.md lacks row {row}");
    }
}

/// The JS8Call text example of section 13.
#[test]
fn js8_text_example() {
    let packet = hex::decode("0001d00dfeed02012a4c94e0ac").expect("hex");
    assert_eq!(
        packet[1..],
        encode(NET, 1, &super::message::Message::Ping(42))[..]
    );
    let text = "E E E E E 5 E E I Z Y J E A E E R A D A U B O I T 3 S";
    assert_eq!(super::js8text::encode(&packet), text);
    assert_eq!(
        super::js8text::decode(&format!("{text} \u{2662}")).unwrap(),
        packet
    );
    for listing in [
        "00 01d00dfeed02012a4c94e0ac    # packet: WHOLE tag, Ping(42) envelope\n78",
        "\n```text\nE E E E E 5 E E I Z Y J E A E E R A D A U B O I T 3 S\n```\n",
    ] {
        assert!(DOC.contains(listing), "docs/PROTOCOL.md lacks:\n{listing}");
    }
    assert_eq!(
        crc::Crc::<u8>::new(&crc::CRC_8_AUTOSAR).checksum(&packet),
        0x78
    );
    let air: u32 = text
        .split(' ')
        .map(|w| super::js8text::jsc_word_bits(w).unwrap_or(0) + 1)
        .sum();
    assert_eq!(air, 171);
    assert_eq!(
        super::js8text::message_frames(text, super::js8text::Js8Speed::Turbo, false),
        4
    );
    for s in super::js8text::Js8Speed::ALL {
        let r = super::js8text::effective_bitrate(32, s);
        let row = format!(
            "| {} | {} s | {:.1} | {:.2} | {} |",
            s.name(),
            s.frame_ms() / 1000,
            72_000.0 / s.frame_ms() as f64,
            r,
            (r.round() as u64).max(1)
        );
        assert!(DOC.contains(&row), "docs/PROTOCOL.md lacks row {row}");
    }
}
