//! Framing of envelopes on byte streams (TCP, VARA's data port): a u32 big-endian length
//! prefix, then the envelope. A byte stream has no other boundaries, so a bad length
//! cannot be skipped over: the decoder stops for good and the caller disconnects.

use super::envelope::{WireError, MAX_MESSAGE_LEN};

/// Length of the frame prefix.
pub const PREFIX_LEN: usize = 4;

/// Capacity kept by an idle decoder; a larger buffer is released once drained, so an idle
/// connection does not hold on to its largest message.
const IDLE_CAPACITY: usize = 16 * 1024;

/// Prefix `envelope` with its length. The receiver refuses lengths of 0 or above
/// [`MAX_MESSAGE_LEN`].
pub fn frame(envelope: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + envelope.len());
    // Truncation cannot matter: anything this long is refused by the receiver anyway.
    let len = u32::try_from(envelope.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(envelope);
    out
}

/// Splits a byte stream into envelopes.
///
/// Call [`push`](Self::push) with each read, then [`next_frame`](Self::next_frame) until
/// it returns `None`. Used that way the buffer never holds more than
/// `MAX_MESSAGE_LEN + 4` bytes plus one read. A length prefix of 0 or above
/// [`MAX_MESSAGE_LEN`] is refused as soon as its 4 bytes arrive, before anything is
/// allocated for it; the decoder is then poisoned: it drops all further input and
/// `next_frame` returns the same error on every call.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`; compacted lazily so a read holding many small
    /// frames costs one move, not one per frame.
    start: usize,
    poisoned: Option<WireError>,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream. Ignored once poisoned.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned.is_some() {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        // Check the next prefix now, so a bad one is refused before more input piles up.
        self.check_prefix();
    }

    /// The next complete envelope (not yet decoded: pass it to `envelope::decode`),
    /// `None` if more bytes are needed, or the framing error that poisoned the stream.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, WireError>> {
        if let Some(e) = &self.poisoned {
            return Some(Err(e.clone()));
        }
        let len = match self.check_prefix()? {
            Ok(len) => len,
            Err(e) => return Some(Err(e)),
        };
        let body_at = self.start + PREFIX_LEN;
        let end = body_at + len;
        if self.buf.len() < end {
            return None;
        }
        let out = self.buf[body_at..end].to_vec();
        self.start = end;
        if self.start == self.buf.len() {
            self.compact();
        }
        Some(Ok(out))
    }

    /// Bytes held: received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a bad length prefix has ended this stream.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The length of the next frame if its prefix has arrived (`None` if not), poisoning
    /// the decoder if that length is out of range.
    fn check_prefix(&mut self) -> Option<Result<usize, WireError>> {
        let p = self.buf.get(self.start..self.start + PREFIX_LEN)?;
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let len_usize = len as usize;
        if len == 0 || len_usize > MAX_MESSAGE_LEN {
            let e = WireError::FrameTooLong {
                len: u64::from(len),
                max: MAX_MESSAGE_LEN,
            };
            self.poisoned = Some(e.clone());
            self.buf = Vec::new();
            self.start = 0;
            return Some(Err(e));
        }
        Some(Ok(len_usize))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > IDLE_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::{decode, encode};
    use crate::wire::strategies::arb_message;
    use proptest::prelude::*;

    const CAP: usize = MAX_MESSAGE_LEN + PREFIX_LEN;

    fn drain(d: &mut StreamDecoder) -> Vec<Result<Vec<u8>, WireError>> {
        let mut out = Vec::new();
        while let Some(r) = d.next_frame() {
            let stop = r.is_err();
            out.push(r);
            if stop {
                break;
            }
        }
        out
    }

    #[test]
    fn four_gib_prefix_is_refused_immediately() {
        let mut d = StreamDecoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(d.is_poisoned());
        assert_eq!(d.buffered(), 0);
        let e = d.next_frame().unwrap().unwrap_err();
        assert_eq!(
            e,
            WireError::FrameTooLong {
                len: u32::MAX as u64,
                max: MAX_MESSAGE_LEN
            }
        );
        // Sticky, and further input is dropped.
        d.push(&frame(&[1, 2, 3]));
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Some(Err(e)));
    }

    #[test]
    fn zero_and_just_over_max_are_refused_max_is_not() {
        let mut d = StreamDecoder::new();
        d.push(&[0, 0, 0, 0]);
        assert!(d.is_poisoned());

        let mut d = StreamDecoder::new();
        d.push(&((MAX_MESSAGE_LEN + 1) as u32).to_be_bytes());
        assert!(matches!(
            d.next_frame(),
            Some(Err(WireError::FrameTooLong { .. }))
        ));

        let mut d = StreamDecoder::new();
        let big = vec![7u8; MAX_MESSAGE_LEN];
        let f = frame(&big);
        d.push(&f[..3]);
        assert_eq!(d.next_frame(), None);
        d.push(&f[3..]);
        assert_eq!(d.next_frame(), Some(Ok(big)));
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frames_then_bad_prefix() {
        let mut d = StreamDecoder::new();
        let mut bytes = frame(b"abc");
        bytes.extend(frame(b"de"));
        bytes.extend([0, 0, 0, 0, 9, 9]);
        d.push(&bytes);
        let got = drain(&mut d);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(b"abc".to_vec()));
        assert_eq!(got[1], Ok(b"de".to_vec()));
        assert!(got[2].is_err());
    }

    fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            out.push(bytes[at..c].to_vec());
            at = c;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_chunking_yields_the_same_frames(
            msgs in prop::collection::vec(arb_message(), 1..6),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let envs: Vec<Vec<u8>> = msgs.iter().enumerate()
                .map(|(i, m)| encode([1, 2, 3, 4], i as u64, m))
                .collect();
            let stream: Vec<u8> = envs.iter().flat_map(|e| frame(e)).collect();
            let mut d = StreamDecoder::new();
            let mut got = Vec::new();
            for c in chunked(&stream, &cuts) {
                d.push(&c);
                for r in drain(&mut d) {
                    got.push(r.unwrap());
                }
            }
            prop_assert_eq!(&got, &envs);
            prop_assert_eq!(d.buffered(), 0);
            for (e, m) in got.iter().zip(&msgs) {
                prop_assert_eq!(&decode(e).unwrap().message, m);
            }
        }

        #[test]
        fn garbage_never_exceeds_the_cap(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2048), 0..40),
        ) {
            let mut d = StreamDecoder::new();
            for c in &chunks {
                d.push(c);
                prop_assert!(d.buffered() <= CAP + c.len());
                let _ = drain(&mut d);
                prop_assert!(d.buffered() <= CAP);
            }
        }

        /// Valid length prefixes with random payloads: buffering is bounded by the
        /// declared length, not by how much is sent.
        #[test]
        fn plausible_lengths_stay_bounded(
            lens in prop::collection::vec(1usize..=MAX_MESSAGE_LEN, 1..4),
            chunk in 1usize..70_000,
        ) {
            let mut stream = Vec::new();
            for l in &lens {
                stream.extend_from_slice(&(*l as u32).to_be_bytes());
                stream.resize(stream.len() + l, 0xa5);
            }
            let mut d = StreamDecoder::new();
            let mut n = 0;
            for c in stream.chunks(chunk) {
                d.push(c);
                prop_assert!(d.buffered() <= CAP + c.len());
                for r in drain(&mut d) {
                    prop_assert_eq!(r.unwrap().len(), lens[n]);
                    n += 1;
                }
                prop_assert!(d.buffered() <= CAP);
            }
            prop_assert_eq!(n, lens.len());
        }
    }
}
