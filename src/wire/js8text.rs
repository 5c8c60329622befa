//! Binary packets as JS8Call text: the codec for the JS8Call link (docs/PROTOCOL.md
//! section 13 describes it byte by byte).
//!
//! JS8Call sends text only: it uppercases it and keeps the characters its compressor
//! knows. Its free-text compressor (JSC, a (7,9)-dense code over 4-bit nibbles) codes each
//! space-separated word as dictionary entries, each entry one codeword plus one separator
//! bit that says "a space follows". Single characters are entries 0-67 of the
//! dictionary: `E T A O I N S` (entries 0-6) cost 5 bits on air, every other single
//! character 9 bits, and the space between words costs nothing (it rides on the separator
//! bit). A run of characters without spaces would instead be matched greedily against a
//! 262 144-word dictionary, at a cost that depends on which words happen to match.
//!
//! So the payload is written as one-character words separated by single spaces, over 36
//! letters and digits only (no punctuation: nothing JS8Call could read as a command, an
//! escape or a group), and the bits are mapped to those characters with a prefix code
//! whose lengths match JSC's costs: the seven 5-bit characters carry 3 or 4 bits, the 29
//! 9-bit ones 6 or 7 bits. On random data that is 0.6875 payload bits per air bit, i.e.
//! 11.6 air bits per byte (base32 as one-character words would be 13.0).
//!
//! Layout: `payload || CRC-8/AUTOSAR(payload)`, then a terminating `1` bit and zero bits
//! until the last character is complete (at most 6). The decoder checks the character
//! set, the terminator (it must lie in the last character, so nothing may be appended),
//! byte alignment and the CRC: a JS8 frame lost from the middle of a message shifts the
//! bits, which the alignment check alone catches 7 times in 8 and the CRC 255 times in
//! 256 of the rest.

use thiserror::Error;

/// Largest payload [`encode`] and [`decode`] handle (bytes). Far above any MTU the link
/// uses; it bounds what a hostile peer can make the decoder allocate.
pub const MAX_PAYLOAD: usize = 4096;
/// Longest text [`decode`] looks at (bytes, including separators and the end marker):
/// every character of [`MAX_PAYLOAD`] + CRC at 3 bits each, a space after each, slack.
pub const MAX_TEXT: usize = (MAX_PAYLOAD + 1) * 8 / 3 * 2 + 64;
/// JS8Call's end-of-message marker on received text.
pub const END_MARKER: char = '\u{2662}';
/// Data bits in one JS8 frame.
pub const FRAME_BITS: u32 = 72;

const CRC8: crc::Crc<u8> = crc::Crc::<u8>::new(&crc::CRC_8_AUTOSAR);

/// The code: (character, code value, code length in bits), canonical order.
/// 5-bit JSC characters get 3-4 bit codes, 9-bit ones 6-7 bit codes; Kraft sum 1.
const CODE: [(u8, u8, u8); 36] = [
    (b'E', 0b000, 3),
    (b'T', 0b001, 3),
    (b'A', 0b0100, 4),
    (b'O', 0b0101, 4),
    (b'I', 0b0110, 4),
    (b'N', 0b0111, 4),
    (b'S', 0b1000, 4),
    (b'H', 36, 6),
    (b'R', 37, 6),
    (b'D', 38, 6),
    (b'L', 39, 6),
    (b'C', 40, 6),
    (b'U', 41, 6),
    (b'M', 42, 6),
    (b'W', 43, 6),
    (b'F', 44, 6),
    (b'G', 45, 6),
    (b'Y', 46, 6),
    (b'P', 47, 6),
    (b'B', 48, 6),
    (b'V', 49, 6),
    (b'K', 50, 6),
    (b'X', 51, 6),
    (b'J', 52, 6),
    (b'0', 53, 6),
    (b'1', 54, 6),
    (b'2', 55, 6),
    (b'3', 56, 6),
    (b'4', 57, 6),
    (b'5', 58, 6),
    (b'6', 59, 6),
    (b'7', 60, 6),
    (b'8', 61, 6),
    (b'9', 62, 6),
    (b'Q', 126, 7),
    (b'Z', 127, 7),
];

/// Why a text is not a skywave packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Js8TextError {
    /// Longer than any packet could be.
    #[error("text too long ({0} bytes, at most {MAX_TEXT})")]
    TooLong(usize),
    /// Nothing but whitespace and the end marker.
    #[error("empty text")]
    Empty,
    /// A character outside the 36-character alphabet.
    #[error("character {ch:?} at byte {at} is not in the skywave JS8 alphabet")]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the text.
        at: usize,
    },
    /// The terminating bit is missing or not in the last character (truncated, or text
    /// appended).
    #[error("no end bit in the last character (text truncated or extended)")]
    BadEnd,
    /// The bits do not make whole bytes (a piece of the message is missing).
    #[error("bits do not form whole bytes (text truncated or corrupted)")]
    Misaligned,
    /// The check byte does not match.
    #[error("check byte mismatch (text corrupted)")]
    BadCheck,
    /// More payload than [`MAX_PAYLOAD`].
    #[error("payload too long ({0} bytes, at most {MAX_PAYLOAD})")]
    PayloadTooLong(usize),
}

/// Collects bits MSB first and emits characters of the code.
struct SymbolWriter {
    code: u8,
    len: u8,
    out: String,
}

impl SymbolWriter {
    fn push(&mut self, bit: bool) {
        self.code = (self.code << 1) | bit as u8;
        self.len += 1;
        if let Some(&(ch, _, _)) = CODE
            .iter()
            .find(|&&(_, v, l)| l == self.len && v == self.code)
        {
            if !self.out.is_empty() {
                self.out.push(' ');
            }
            self.out.push(ch as char);
            self.code = 0;
            self.len = 0;
        }
    }
}

/// Encode a payload as JS8Call text: single characters from the 36-character alphabet,
/// separated by single spaces. Never empty, never starts with `>` or `@`, uppercase.
///
/// Payloads longer than [`MAX_PAYLOAD`] are truncated to it (the link never sends one:
/// its MTU is far smaller).
pub fn encode(payload: &[u8]) -> String {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let check = CRC8.checksum(payload);
    let mut w = SymbolWriter {
        code: 0,
        len: 0,
        out: String::with_capacity((payload.len() + 1) * 4 + 8),
    };
    for &b in payload.iter().chain(std::iter::once(&check)) {
        for i in (0..8).rev() {
            w.push(b >> i & 1 == 1);
        }
    }
    w.push(true);
    // The code is complete, so zero bits finish the last character within 6 bits.
    while w.len != 0 {
        w.push(false);
    }
    w.out
}

/// Decode text received from JS8Call. Tolerates surrounding whitespace, the trailing
/// end marker, lowercase and any spacing between characters; rejects anything else.
pub fn decode(text: &str) -> Result<Vec<u8>, Js8TextError> {
    if text.len() > MAX_TEXT {
        return Err(Js8TextError::TooLong(text.len()));
    }
    let body = text
        .trim()
        .trim_end_matches(|c: char| c == END_MARKER || c.is_whitespace());
    let chars = body.bytes().filter(|b| *b != b' ').count();
    if chars == 0 {
        return Err(Js8TextError::Empty);
    }
    let mut out = Vec::with_capacity(chars * 7 / 8 + 1);
    let mut acc: u32 = 0;
    let mut nbits: u32 = 0;
    let mut last_len = 0u32;
    for (at, ch) in body.char_indices() {
        if ch == ' ' {
            continue;
        }
        let up = ch.to_ascii_uppercase();
        let Some(&(_, v, l)) = CODE.iter().find(|&&(c, _, _)| c as char == up) else {
            return Err(Js8TextError::BadChar { ch, at });
        };
        acc = (acc << l) | v as u32;
        nbits += l as u32;
        last_len = l as u32;
        while nbits >= 8 + 7 {
            // Keep at least 7 bits back: the terminator and padding live there.
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    // What is left: some whole bytes, then `1`, then 0-6 zero bits, all inside the last
    // character.
    let pad = acc.trailing_zeros().min(nbits);
    if pad >= nbits || pad >= last_len {
        return Err(Js8TextError::BadEnd);
    }
    let data_bits = nbits - pad - 1;
    if !data_bits.is_multiple_of(8) {
        return Err(Js8TextError::Misaligned);
    }
    let rest = acc >> (pad + 1);
    for i in (0..data_bits / 8).rev() {
        out.push((rest >> (8 * i)) as u8);
    }
    let Some(check) = out.pop() else {
        return Err(Js8TextError::Misaligned);
    };
    if out.len() > MAX_PAYLOAD {
        return Err(Js8TextError::PayloadTooLong(out.len()));
    }
    if CRC8.checksum(&out) != check {
        return Err(Js8TextError::BadCheck);
    }
    Ok(out)
}

/// Does `text` look like skywave text (one-character words of the alphabet, a few of
/// them)? Text that does but fails [`decode`] is a damaged or forged packet; text that
/// does not is someone's conversation or a JS8 command, none of our business.
pub fn looks_like_packet(text: &str) -> bool {
    let body = text
        .trim()
        .trim_end_matches(|c: char| c == END_MARKER || c.is_whitespace());
    let mut n = 0;
    for w in body.split(' ').filter(|w| !w.is_empty()) {
        let mut cs = w.chars();
        match (cs.next(), cs.next()) {
            (Some(c), None)
                if CODE
                    .iter()
                    .any(|&(x, _, _)| x as char == c.to_ascii_uppercase()) =>
            {
                n += 1
            }
            _ => return false,
        }
    }
    n >= 3
}

/// A JS8 speed (submode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Js8Speed {
    /// 30 s frames.
    Slow,
    /// 15 s frames.
    Normal,
    /// 10 s frames.
    Fast,
    /// 6 s frames.
    Turbo,
}

impl Js8Speed {
    /// All speeds, slowest first.
    pub const ALL: [Js8Speed; 4] = [
        Js8Speed::Slow,
        Js8Speed::Normal,
        Js8Speed::Fast,
        Js8Speed::Turbo,
    ];

    /// Name as in the link URL.
    pub fn name(self) -> &'static str {
        match self {
            Js8Speed::Slow => "slow",
            Js8Speed::Normal => "normal",
            Js8Speed::Fast => "fast",
            Js8Speed::Turbo => "turbo",
        }
    }

    /// Parse a URL name.
    pub fn from_name(s: &str) -> Option<Js8Speed> {
        Js8Speed::ALL.into_iter().find(|v| v.name() == s)
    }

    /// The number JS8Call's API uses (`MODE.SET_SPEED {SPEED}`, `SPEED` in events).
    pub fn api_value(self) -> u64 {
        match self {
            Js8Speed::Normal => 0,
            Js8Speed::Fast => 1,
            Js8Speed::Turbo => 2,
            Js8Speed::Slow => 4,
        }
    }

    /// From the API number.
    pub fn from_api(v: u64) -> Option<Js8Speed> {
        Js8Speed::ALL.into_iter().find(|s| s.api_value() == v)
    }

    /// Length of one frame (one transmit period) in milliseconds.
    pub fn frame_ms(self) -> u64 {
        match self {
            Js8Speed::Slow => 30_000,
            Js8Speed::Normal => 15_000,
            Js8Speed::Fast => 10_000,
            Js8Speed::Turbo => 6_000,
        }
    }

    /// Data bits JS8Call fills in one free-text frame: Normal keeps a 2-bit data-frame
    /// prefix inside the 72 bits (the other speeds flag data frames outside them), and a
    /// frame always ends with at least one padding bit.
    pub fn data_bits_per_frame(self) -> u32 {
        match self {
            Js8Speed::Normal => FRAME_BITS - 2 - 1,
            _ => FRAME_BITS - 1,
        }
    }
}

/// Air bits JSC spends on one space-separated word of free text, without its separator
/// bit. Exact for single characters; for longer words (never produced by [`encode`]) a
/// conservative 9 bits per character, since the real cost depends on the dictionary.
/// `None` for characters JS8Call does not send.
pub fn jsc_word_bits(word: &str) -> Option<u32> {
    const FIVE_BIT: &str = "ETAOINS";
    const NINE_BIT: &str = "HRDLCUMWFGYPB,.VK-+\"?!'X)(0J1Q=2:Z3549867_/&$%#@*><[]{}|;^`~";
    let mut bits = 0;
    let n = word.chars().count();
    for c in word.chars() {
        if n == 1 && FIVE_BIT.contains(c) {
            bits += 4;
        } else if FIVE_BIT.contains(c) || NINE_BIT.contains(c) {
            bits += 8;
        } else {
            return None;
        }
    }
    Some(bits)
}

/// Data frames JS8Call needs for `text` (free text after the directed header) at
/// `speed`: codewords (word bits + 1 separator bit) are packed into frames whole, as
/// JS8Call does.
pub fn data_frames(text: &str, speed: Js8Speed) -> usize {
    let cap = speed.data_bits_per_frame();
    let mut frames = 0;
    let mut used = cap; // forces a first frame
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let bits = jsc_word_bits(word).unwrap_or(8 * word.len() as u32) + 1;
        if used + bits > cap {
            frames += 1;
            used = 0;
        }
        used += bits;
    }
    frames
}

/// Frames one directed message takes on air: the header frame(s) naming the
/// destination (one for a callsign, two for a group such as `@SKYWAVE`, which JS8Call
/// sends as a compound callsign) and the data frames of `text`.
pub fn message_frames(text: &str, speed: Js8Speed, to_group: bool) -> usize {
    let header = if to_group { 2 } else { 1 };
    header + data_frames(text, speed)
}

/// Payload bits per second for packets of `len` bytes sent one message each at
/// `speed`: everything on air counted (header frame, CRC, terminator, whole frames).
/// Averaged over fixed pseudo-random payloads, so it is the same on every run.
pub fn effective_bitrate(len: usize, speed: Js8Speed) -> f64 {
    let mut x: u32 = 0x9E37_79B9;
    let samples = 32;
    let mut frames = 0usize;
    for _ in 0..samples {
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 11) as u8
            })
            .collect();
        frames += message_frames(&encode(&p), speed, false);
    }
    let secs = frames as f64 * speed.frame_ms() as f64 / 1000.0 / samples as f64;
    (len * 8) as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn code_is_a_complete_prefix_code_matched_to_jsc_costs() {
        let kraft: f64 = CODE.iter().map(|&(_, _, l)| 0.5f64.powi(l as i32)).sum();
        assert!((kraft - 1.0).abs() < 1e-12, "{kraft}");
        for (i, &(c, v, l)) in CODE.iter().enumerate() {
            for &(c2, v2, l2) in &CODE[i + 1..] {
                assert_ne!(c, c2);
                let (short, long, ls, ll) = if l <= l2 {
                    (v, v2, l, l2)
                } else {
                    (v2, v, l2, l)
                };
                assert_ne!(long >> (ll - ls), short, "{c} prefixes {c2}");
            }
            let cost = jsc_word_bits(&(c as char).to_string()).expect("sendable");
            // Short codes exactly on the 5-bit (4 + separator) characters.
            assert_eq!(cost == 4, l <= 4, "{}", c as char);
        }
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(&[]), "E E T");
        assert_eq!(decode("E E T").unwrap(), Vec::<u8>::new());
        let t = encode(b"skywave");
        assert_eq!(decode(&t).unwrap(), b"skywave");
        // Received form: uppercase, end marker, stray spacing.
        let rx = format!("  {}  {END_MARKER}\n", t.replace(' ', "  "));
        assert_eq!(decode(&rx).unwrap(), b"skywave");
        assert_eq!(decode(&t.to_lowercase()).unwrap(), b"skywave");
    }

    #[test]
    fn rejections_are_specific() {
        let t = encode(b"hello radio");
        assert_eq!(decode(""), Err(Js8TextError::Empty));
        assert_eq!(decode(" \u{2662} "), Err(Js8TextError::Empty));
        assert!(matches!(
            decode(&format!("{t} ?")),
            Err(Js8TextError::BadChar { ch: '?', .. })
        ));
        assert!(matches!(
            decode("E T @"),
            Err(Js8TextError::BadChar { ch: '@', at: 4 })
        ));
        // Appending a character (even an all-zero one) moves the end bit out of the
        // last character.
        assert_eq!(decode(&format!("{t} E")), Err(Js8TextError::BadEnd));
        assert_eq!(decode("E E E"), Err(Js8TextError::BadEnd));
        assert!(decode(&"Z ".repeat(MAX_TEXT)).is_err());
        assert_eq!(
            decode(&"E".repeat(MAX_TEXT + 1)),
            Err(Js8TextError::TooLong(MAX_TEXT + 1))
        );
    }

    #[test]
    fn a_lost_frame_is_detected() {
        // Drop every possible run of 8-14 characters (about one JS8 frame) from a
        // 32-byte packet: nothing decodes to a wrong payload.
        let p: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let t = encode(&p);
        let syms: Vec<&str> = t.split(' ').collect();
        let mut detected = 0;
        let mut total = 0;
        for run in 8..=14 {
            for start in 0..syms.len().saturating_sub(run) {
                let mut cut = syms.clone();
                cut.drain(start..start + run);
                total += 1;
                match decode(&cut.join(" ")) {
                    Ok(q) => assert_ne!(q, p, "cannot decode to the original"),
                    Err(_) => detected += 1,
                }
            }
        }
        assert!(detected * 100 >= total * 99, "{detected}/{total}");
    }

    #[test]
    fn overhead_figures() {
        // Random data: 11.6 air bits per byte plus CRC and terminator.
        let p: Vec<u8> = (0..=255u8)
            .cycle()
            .take(4096)
            .map(|b| b.wrapping_mul(167))
            .collect();
        let t = encode(&p);
        let air: u32 = t
            .split(' ')
            .map(|w| jsc_word_bits(w).unwrap_or(99) + 1)
            .sum();
        let per_byte = air as f64 / p.len() as f64;
        assert!((11.3..12.0).contains(&per_byte), "{per_byte}");
        for s in Js8Speed::ALL {
            let r = effective_bitrate(32, s);
            let raw = FRAME_BITS as f64 * 1000.0 / s.frame_ms() as f64;
            println!("{}: {r:.2} bit/s payload (raw {raw:.2})", s.name());
            assert!(r > 0.3 * raw && r < 0.7 * raw, "{} {r}", s.name());
        }
    }

    #[test]
    fn frames_follow_jsc_packing() {
        // 14 five-bit words fill 70 bits: one frame at fast, two at normal (69 bits).
        let t = ["E"; 14].join(" ");
        assert_eq!(data_frames(&t, Js8Speed::Fast), 1);
        assert_eq!(data_frames(&t, Js8Speed::Normal), 2);
        assert_eq!(message_frames(&t, Js8Speed::Fast, true), 3);
        assert_eq!(data_frames("", Js8Speed::Turbo), 0);
        assert_eq!(jsc_word_bits("é"), None);
        assert!(looks_like_packet(&format!("{} {END_MARKER}", encode(b"x"))));
        assert!(!looks_like_packet("HELLO THERE"));
        assert!(!looks_like_packet("E T ?"));
        assert!(!looks_like_packet("E T"));
    }

    proptest! {
        #[test]
        fn round_trips(p in proptest::collection::vec(any::<u8>(), 0..300)) {
            let t = encode(&p);
            prop_assert!(!t.starts_with('>') && !t.starts_with('@') && !t.starts_with(' '));
            prop_assert!(!t.contains("  ") && !t.ends_with(' '));
            prop_assert!(t.bytes().all(|b| b == b' ' || b.is_ascii_uppercase() || b.is_ascii_digit()));
            prop_assert_eq!(decode(&t).unwrap(), p.clone());
            prop_assert_eq!(decode(&format!("{t} {END_MARKER}")).unwrap(), p);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn alphabet_soup_never_panics(s in "[ETAOINSHRDLCUMWFGYPBVKXJQZ0-9 ]{0,300}") {
            if let Ok(p) = decode(&s) {
                // Whatever decodes re-encodes to the same characters.
                let canon: String = s.split_whitespace().collect();
                prop_assert_eq!(encode(&p).replace(' ', ""), canon);
            }
        }
    }
}
