//! `StreamDecoder` fed in chunks whose sizes come from the input itself.
//!
//! Layout: byte 0 = number of size bytes `k` (mod 16); the next `k` bytes are chunk
//! sizes (0 = 1 byte; cycled); everything after is the stream. Asserts the buffer stays
//! within `MAX_MESSAGE_LEN + 4 + chunk` after a push and `MAX_MESSAGE_LEN + 4` after
//! draining, that frames are non-empty and at most `MAX_MESSAGE_LEN`, and that the first
//! error is sticky.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::envelope::MAX_MESSAGE_LEN;
use skywave::wire::stream::{StreamDecoder, PREFIX_LEN};

const CAP: usize = MAX_MESSAGE_LEN + PREFIX_LEN;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (sizes, mut stream) = rest.split_at(k);
    let mut d = StreamDecoder::new();
    let mut i = 0;
    while !stream.is_empty() {
        // Sizes scale by 64 above 127 so a short input can still push big chunks.
        let s = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0);
        let size = match s {
            0 => 1,
            1..=127 => usize::from(s),
            _ => usize::from(s - 127) * 64,
        };
        i += 1;
        let (chunk, tail) = stream.split_at(size.min(stream.len()));
        stream = tail;
        d.push(chunk);
        assert!(
            d.buffered() <= CAP + chunk.len(),
            "buffered {} after a {}-byte push",
            d.buffered(),
            chunk.len()
        );
        while let Some(r) = d.next_frame() {
            match r {
                Ok(f) => assert!(!f.is_empty() && f.len() <= MAX_MESSAGE_LEN),
                Err(e) => {
                    assert!(d.is_poisoned());
                    assert_eq!(d.buffered(), 0);
                    d.push(chunk);
                    assert_eq!(d.buffered(), 0, "poisoned decoder kept input");
                    assert_eq!(d.next_frame(), Some(Err(e)), "error not sticky");
                    return;
                }
            }
        }
        assert!(d.buffered() <= CAP, "buffered {} after draining", d.buffered());
    }
});
