//! `KissDecoder` push/next_frame across chunks, plus an encode/decode round trip.
//!
//! Layout: byte 0 picks the payload cap (0..=255, or the default 4096 when 255),
//! byte 1 is the chunk size (0 = whole input at once); the rest is the TNC stream.
//! Asserts every payload fits the cap and the frame buffer never passes `cap + 1`; then
//! the whole input, used as a payload, must survive `encode_frame` -> decode unchanged
//! on every port/command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::kiss::{encode_frame, KissDecoder, KissFrame, DEFAULT_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cap = if data[0] == 255 {
        DEFAULT_MAX_FRAME
    } else {
        usize::from(data[0])
    };
    let chunk = match data[1] {
        0 => data.len(),
        n => usize::from(n),
    };
    let stream = &data[2..];

    let mut d = KissDecoder::with_max_frame(cap);
    let mut pushed = Vec::new();
    for c in stream.chunks(chunk) {
        d.push(c);
        while let Some(r) = d.next_frame() {
            assert!(d.buffered() <= cap + 1, "buffer {} over cap {cap}", d.buffered());
            if let Ok(f) = r {
                assert!(f.payload.len() <= cap, "payload {} over cap {cap}", f.payload.len());
                assert!(f.port < 16 && f.command < 16);
                pushed.push(Ok(f));
            } else {
                pushed.push(r);
            }
        }
        assert!(d.buffered() <= cap + 1);
    }
    // The zero-copy iterator must agree with push/next_frame.
    let mut d2 = KissDecoder::with_max_frame(cap);
    let mut lazy = Vec::new();
    for c in stream.chunks(chunk) {
        lazy.extend(d2.decode(c));
    }
    assert_eq!(pushed, lazy, "decode() and next_frame() disagree");

    // Round trip: the input as a payload.
    let port = data[0] >> 4;
    let command = data[0] & 0x0f;
    let mut wire = Vec::new();
    encode_frame(port, command, data, &mut wire);
    let mut d = KissDecoder::with_max_frame(data.len());
    d.push(&wire);
    let want = KissFrame {
        port,
        command,
        payload: data.to_vec(),
    };
    assert_eq!(d.next_frame(), Some(Ok(want)));
    assert_eq!(d.next_frame(), None);
});
