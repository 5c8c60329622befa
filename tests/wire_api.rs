//! The wire API as the driver uses it: encode, frame, split a TCP-like stream, decode.

use skywave::chain::NetworkParams;
use skywave::wire::message::{InvItem, InvKind};
use skywave::wire::{self, Message, StreamDecoder, WireError};

#[test]
fn encode_frame_stream_decode() {
    let net = NetworkParams::by_name("regtest").unwrap().network_id();
    let msgs = [
        Message::Ping(1),
        Message::Inv(vec![InvItem {
            kind: InvKind::Block,
            hash: skywave::chain::Hash([7; 32]),
        }]),
        Message::Pong(1),
    ];
    let mut stream = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        stream.extend(wire::frame(&wire::encode(net, i as u64, m)));
    }
    let mut d = StreamDecoder::new();
    let mut got = Vec::new();
    for byte in stream.chunks(5) {
        d.push(byte);
        while let Some(f) = d.next_frame() {
            let f = f.unwrap();
            assert_eq!(wire::peek_network(&f), Some(net));
            got.push(wire::decode(&f).unwrap());
        }
    }
    assert_eq!(got.len(), 3);
    for (i, (env, m)) in got.iter().zip(&msgs).enumerate() {
        assert_eq!((env.msg_id, &env.message), (i as u64, m));
    }

    d.push(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        d.next_frame(),
        Some(Err(WireError::FrameTooLong { .. }))
    ));
}
