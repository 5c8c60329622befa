//! KISS framing between the host and a TNC (e.g. Direwolf's KISS TCP port).
//!
//! A frame is `FEND <type> <escaped payload> FEND`; the type byte is
//! `port << 4 | command` and is escaped like the payload (port 12 data is `0xC0`).

use thiserror::Error;

/// Frame delimiter.
pub const FEND: u8 = 0xC0;
/// Escape byte.
pub const FESC: u8 = 0xDB;
/// Escaped FEND (`FESC TFEND`).
pub const TFEND: u8 = 0xDC;
/// Escaped FESC (`FESC TFESC`).
pub const TFESC: u8 = 0xDD;
/// Whole type byte that makes a TNC leave KISS mode.
pub const RETURN: u8 = 0xFF;
/// Default cap on a decoded payload (Direwolf's own limit is 2048).
pub const DEFAULT_MAX_FRAME: usize = 4096;

/// KISS command (low nibble of the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KissCommand {
    /// AX.25 frame to send or received.
    Data = 0,
    /// Keyup delay, in 10 ms units.
    TxDelay = 1,
    /// Persistence: p = (value + 1) / 256.
    Persistence = 2,
    /// CSMA slot time, in 10 ms units.
    SlotTime = 3,
    /// Time to hold transmit after the frame, in 10 ms units (obsolete).
    TxTail = 4,
    /// 0 = half duplex (CSMA), non-zero = full duplex.
    FullDuplex = 5,
    /// TNC-specific payload.
    SetHardware = 6,
}

impl KissCommand {
    /// Maps a command nibble to a known command.
    pub fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            0 => Self::Data,
            1 => Self::TxDelay,
            2 => Self::Persistence,
            3 => Self::SlotTime,
            4 => Self::TxTail,
            5 => Self::FullDuplex,
            6 => Self::SetHardware,
            _ => return None,
        })
    }
}

/// One decoded KISS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KissFrame {
    /// TNC port, 0-15.
    pub port: u8,
    /// Command nibble, 0-15 (0 = data); see [`KissCommand`].
    pub command: u8,
    /// Unescaped payload.
    pub payload: Vec<u8>,
}

impl KissFrame {
    /// The known command, if any.
    pub fn kiss_command(&self) -> Option<KissCommand> {
        KissCommand::from_nibble(self.command)
    }
}

/// Errors for one malformed frame; the decoder resynchronises at the next FEND.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KissError {
    /// Decoded payload exceeded the configured cap; the frame was dropped.
    #[error("KISS frame longer than {cap} bytes dropped")]
    FrameTooLong {
        /// The cap in force.
        cap: usize,
    },
    /// FESC followed by something other than TFEND/TFESC.
    #[error("invalid KISS escape FESC {0:#04x}")]
    InvalidEscape(u8),
}

fn push_escaped(byte: u8, out: &mut Vec<u8>) {
    match byte {
        FEND => out.extend_from_slice(&[FESC, TFEND]),
        FESC => out.extend_from_slice(&[FESC, TFESC]),
        b => out.push(b),
    }
}

/// Appends `C0 <escaped type> <escaped payload> C0` to `out`.
///
/// `port` and `command` are masked to 4 bits each.
pub fn encode_frame(port: u8, command: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + payload.len() / 16 + 4);
    out.push(FEND);
    push_escaped((port & 0x0F) << 4 | (command & 0x0F), out);
    for &b in payload {
        push_escaped(b, out);
    }
    out.push(FEND);
}

/// Appends a data frame carrying `ax25_frame` (no flags, no FCS) for `port`.
pub fn encode_data(port: u8, ax25_frame: &[u8], out: &mut Vec<u8>) {
    encode_frame(port, KissCommand::Data as u8, ax25_frame, out);
}

/// Appends a one-byte parameter frame (TXDELAY, P, SLOTTIME, TXtail, FullDuplex).
pub fn encode_param(port: u8, command: KissCommand, value: u8, out: &mut Vec<u8>) {
    encode_frame(port, command as u8, &[value], out);
}

/// TXDELAY in 10 ms units.
pub fn tx_delay(port: u8, tens_of_ms: u8, out: &mut Vec<u8>) {
    encode_param(port, KissCommand::TxDelay, tens_of_ms, out);
}

/// Persistence byte; p = (value + 1) / 256.
pub fn persistence(port: u8, value: u8, out: &mut Vec<u8>) {
    encode_param(port, KissCommand::Persistence, value, out);
}

/// SLOTTIME in 10 ms units.
pub fn slot_time(port: u8, tens_of_ms: u8, out: &mut Vec<u8>) {
    encode_param(port, KissCommand::SlotTime, tens_of_ms, out);
}

/// TXtail in 10 ms units.
pub fn tx_tail(port: u8, tens_of_ms: u8, out: &mut Vec<u8>) {
    encode_param(port, KissCommand::TxTail, tens_of_ms, out);
}

/// Full duplex on/off.
pub fn full_duplex(port: u8, on: bool, out: &mut Vec<u8>) {
    encode_param(port, KissCommand::FullDuplex, u8::from(on), out);
}

/// SetHardware with a TNC-specific payload (Direwolf answers `TXBUF:` queries).
pub fn set_hardware(port: u8, data: &[u8], out: &mut Vec<u8>) {
    encode_frame(port, KissCommand::SetHardware as u8, data, out);
}

/// The `C0 FF C0` frame that takes a TNC out of KISS mode.
pub fn leave_kiss(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FEND, RETURN, FEND]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first FEND: discard everything.
    Hunting,
    /// Inside a frame, collecting bytes into `buf`.
    InFrame,
    /// Previous byte was FESC.
    Escape,
    /// Frame already reported as bad; discard until the next FEND.
    Skipping,
}

/// Streaming KISS decoder.
///
/// Feed bytes with [`push`](Self::push) and drain with
/// [`next_frame`](Self::next_frame), or decode a slice lazily with
/// [`decode`](Self::decode) (no input copy). The frame buffer never holds more
/// than `max_frame + 1` bytes; raw input given to `push` is kept only until
/// `next_frame` consumes it.
#[derive(Debug, Clone)]
pub struct KissDecoder {
    max_frame: usize,
    state: State,
    /// Type byte followed by the decoded payload.
    buf: Vec<u8>,
    pending: Vec<u8>,
    pos: usize,
}

impl Default for KissDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl KissDecoder {
    /// Decoder with the default payload cap ([`DEFAULT_MAX_FRAME`]).
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// Decoder that drops frames whose decoded payload exceeds `max_frame`.
    pub fn with_max_frame(max_frame: usize) -> Self {
        KissDecoder {
            max_frame,
            state: State::Hunting,
            buf: Vec::new(),
            pending: Vec::new(),
            pos: 0,
        }
    }

    /// The payload cap.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes held for the frame being decoded (at most `max_frame + 1`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Queues raw bytes from the TNC for [`next_frame`](Self::next_frame).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Next complete frame (or error for a malformed one) from pushed bytes.
    pub fn next_frame(&mut self) -> Option<Result<KissFrame, KissError>> {
        while self.pos < self.pending.len() {
            let b = self.pending[self.pos];
            self.pos += 1;
            if let Some(r) = self.step(b) {
                return Some(r);
            }
        }
        self.pending.clear();
        self.pos = 0;
        None
    }

    /// Lazily decodes `input` without copying it; state carries across calls.
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Decode<'a> {
        Decode {
            decoder: self,
            input,
        }
    }

    /// Advances the state machine by one byte.
    fn step(&mut self, b: u8) -> Option<Result<KissFrame, KissError>> {
        match (self.state, b) {
            (State::Hunting, FEND) | (State::Skipping, FEND) => {
                self.start_frame();
                None
            }
            (State::Hunting, _) | (State::Skipping, _) => None,
            (State::InFrame, FEND) => {
                let done = self.finish_frame();
                self.start_frame();
                done.map(Ok)
            }
            (State::InFrame, FESC) => {
                self.state = State::Escape;
                None
            }
            (State::InFrame, b) => self.store(b),
            (State::Escape, TFEND) => {
                self.state = State::InFrame;
                self.store(FEND)
            }
            (State::Escape, TFESC) => {
                self.state = State::InFrame;
                self.store(FESC)
            }
            (State::Escape, FEND) => {
                // The FEND still delimits: resync right here.
                self.start_frame();
                Some(Err(KissError::InvalidEscape(FEND)))
            }
            (State::Escape, other) => {
                self.abandon();
                Some(Err(KissError::InvalidEscape(other)))
            }
        }
    }

    fn start_frame(&mut self) {
        self.buf.clear();
        self.state = State::InFrame;
    }

    fn abandon(&mut self) {
        self.buf.clear();
        self.state = State::Skipping;
    }

    fn store(&mut self, b: u8) -> Option<Result<KissFrame, KissError>> {
        // buf = type byte + payload, so the cap is max_frame + 1.
        if self.buf.len() > self.max_frame {
            self.abandon();
            return Some(Err(KissError::FrameTooLong {
                cap: self.max_frame,
            }));
        }
        self.buf.push(b);
        None
    }

    fn finish_frame(&mut self) -> Option<KissFrame> {
        let (&ty, payload) = self.buf.split_first()?;
        Some(KissFrame {
            port: ty >> 4,
            command: ty & 0x0F,
            payload: payload.to_vec(),
        })
    }
}

/// Iterator returned by [`KissDecoder::decode`].
#[derive(Debug)]
pub struct Decode<'a> {
    decoder: &'a mut KissDecoder,
    input: &'a [u8],
}

impl Iterator for Decode<'_> {
    type Item = Result<KissFrame, KissError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some((&b, rest)) = self.input.split_first() {
            self.input = rest;
            if let Some(r) = self.decoder.step(b) {
                return Some(r);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(d: &mut KissDecoder, bytes: &[u8]) -> Vec<Result<KissFrame, KissError>> {
        d.push(bytes);
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    fn frame(port: u8, command: u8, payload: &[u8]) -> KissFrame {
        KissFrame {
            port,
            command,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn escapes_payload() {
        let mut out = Vec::new();
        encode_frame(0, 0, &[1, FEND, 2, FESC, 3], &mut out);
        assert_eq!(out, [FEND, 0, 1, FESC, TFEND, 2, FESC, TFESC, 3, FEND]);
    }

    #[test]
    fn escapes_type_byte() {
        let mut out = Vec::new();
        encode_frame(12, 0, b"x", &mut out);
        assert_eq!(out, [FEND, FESC, TFEND, b'x', FEND]);
        out.clear();
        encode_frame(13, 0x0B, b"", &mut out);
        assert_eq!(out, [FEND, FESC, TFESC, FEND]);
        let got = decode_all(&mut KissDecoder::new(), &out);
        assert_eq!(got, vec![Ok(frame(13, 0x0B, b""))]);
    }

    #[test]
    fn port_12_round_trip() {
        let mut out = Vec::new();
        encode_data(12, &[FEND, FESC, TFEND, TFESC], &mut out);
        let got = decode_all(&mut KissDecoder::new(), &out);
        assert_eq!(got, vec![Ok(frame(12, 0, &[FEND, FESC, TFEND, TFESC]))]);
    }

    #[test]
    fn params() {
        let mut out = Vec::new();
        tx_delay(1, 30, &mut out);
        persistence(0, 63, &mut out);
        slot_time(0, 10, &mut out);
        tx_tail(0, 1, &mut out);
        full_duplex(0, false, &mut out);
        leave_kiss(&mut out);
        assert_eq!(
            out,
            [
                FEND, 0x11, 30, FEND, FEND, 0x02, 63, FEND, FEND, 0x03, 10, FEND, FEND, 0x04, 1,
                FEND, FEND, 0x05, 0, FEND, FEND, 0xFF, FEND
            ]
        );
        let got = decode_all(&mut KissDecoder::new(), &out);
        assert_eq!(got[0], Ok(frame(1, 1, &[30])));
        assert_eq!(
            got[0].as_ref().ok().and_then(|f| f.kiss_command()),
            Some(KissCommand::TxDelay)
        );
    }

    #[test]
    fn ignores_garbage_and_repeated_fends() {
        let got = decode_all(
            &mut KissDecoder::new(),
            &[1, 2, 3, FEND, FEND, FEND, 0, 9, FEND, FEND],
        );
        assert_eq!(got, vec![Ok(frame(0, 0, &[9]))]);
    }

    #[test]
    fn invalid_escape_resyncs() {
        let mut d = KissDecoder::new();
        let got = decode_all(&mut d, &[FEND, 0, 1, FESC, 5, 7, FEND, 0, 2, FEND]);
        assert_eq!(
            got,
            vec![Err(KissError::InvalidEscape(5)), Ok(frame(0, 0, &[2]))]
        );
        let got = decode_all(&mut d, &[0, 1, FESC, FEND, 0, 3, FEND]);
        assert_eq!(
            got,
            vec![Err(KissError::InvalidEscape(FEND)), Ok(frame(0, 0, &[3]))]
        );
    }

    #[test]
    fn too_long_dropped_then_resync() {
        let mut d = KissDecoder::with_max_frame(4);
        let got = decode_all(
            &mut d,
            &[FEND, 0, 1, 2, 3, 4, 5, 6, 7, FEND, 0, 1, 2, 3, 4, FEND],
        );
        assert_eq!(
            got,
            vec![
                Err(KissError::FrameTooLong { cap: 4 }),
                Ok(frame(0, 0, &[1, 2, 3, 4]))
            ]
        );
    }

    proptest! {
        #[test]
        fn round_trip(frames in proptest::collection::vec(
            (0u8..16, 0u8..16, proptest::collection::vec(any::<u8>(), 0..300)), 0..8)) {
            let mut wire = Vec::new();
            for (p, c, data) in &frames {
                encode_frame(*p, *c, data, &mut wire);
            }
            let got = decode_all(&mut KissDecoder::new(), &wire);
            let want: Vec<_> = frames.iter().map(|(p, c, d)| Ok(frame(*p, *c, d))).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_stream_is_safe(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(FEND), Just(FESC)], 0..2000),
            cap in 0usize..64,
        ) {
            let mut d = KissDecoder::with_max_frame(cap);
            d.push(&bytes);
            while let Some(r) = d.next_frame() {
                prop_assert!(d.buffered() <= cap + 1);
                if let Ok(f) = r {
                    prop_assert!(f.payload.len() <= cap);
                }
            }
        }

        #[test]
        fn split_stream_decodes_same(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(FEND), Just(FESC), Just(TFEND)], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let whole = decode_all(&mut KissDecoder::with_max_frame(32), &bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = KissDecoder::with_max_frame(32);
            let mut parts = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
                // Alternate APIs so both stay in step.
                if parts.len() % 2 == 0 {
                    parts.extend(d.decode(&bytes[start..c]));
                } else {
                    parts.extend(decode_all(&mut d, &bytes[start..c]));
                }
                start = c;
            }
            prop_assert_eq!(whole, parts);
        }
    }
}
