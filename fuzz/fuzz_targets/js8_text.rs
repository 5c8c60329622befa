//! `wire::js8text::decode` on arbitrary text (JS8Call's `RX.DIRECTED` text after the link
//! removed the addresses), and `encode` on the same bytes as a payload.
//!
//! Asserts: no panic; a decoded payload is at most `MAX_PAYLOAD` bytes and re-encodes to
//! exactly the input's characters (decoding is canonical up to spacing, case and the
//! trailing end marker); `encode` output is uppercase letters and digits separated by
//! single spaces, never starts with `>` or `@`, and decodes back to the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::js8text::{decode, encode, END_MARKER, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = decode(&text) {
        assert!(p.len() <= MAX_PAYLOAD);
        let body = text
            .trim()
            .trim_end_matches(|c: char| c == END_MARKER || c.is_whitespace());
        let canon: String = body
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        assert_eq!(encode(&p).replace(' ', ""), canon, "non-canonical text accepted");
    }
    if data.len() <= MAX_PAYLOAD {
        let t = encode(data);
        assert!(!t.starts_with('>') && !t.starts_with('@') && !t.contains("  "));
        assert!(t
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(decode(&t).as_deref(), Ok(data));
    }
});
