//! Line splitting for the text protocols of modems (VARA's command port, JS8Call's
//! JSON API): lines end at CR or LF, blank lines are skipped, and a line longer than
//! the cap is reported once and skipped up to its end, so memory stays within the cap
//! and the stream resynchronises.

/// A line longer than the cap was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// The cap, in bytes.
    pub max: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line longer than {} bytes; skipped", self.max)
    }
}

/// Splits a byte stream into lines of at most `max` bytes (see the module doc).
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    skipping: bool,
    max: usize,
}

impl Lines {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            skipping: false,
            max,
        }
    }

    /// Feed bytes; returns the complete lines in them, without their ends.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Result<Vec<u8>, TooLong>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'\r' || b == b'\n');
            let (chunk, rest) = match end {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &data[data.len()..]),
            };
            if !self.skipping {
                if self.buf.len() + chunk.len() > self.max {
                    self.buf = Vec::new();
                    self.skipping = true;
                    out.push(Err(TooLong { max: self.max }));
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            if end.is_some() {
                if !self.skipping && !self.buf.iter().all(u8::is_ascii_whitespace) {
                    out.push(Ok(std::mem::take(&mut self.buf)));
                }
                self.buf.clear();
                self.skipping = false;
            }
            data = rest;
        }
        out
    }

    /// Bytes held of an unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_cr_or_lf_and_long_ones_are_skipped_once() {
        let mut l = Lines::new(8);
        assert!(l.push(b"BUFF").is_empty());
        let got = l.push(b"ER 5\rOK\r\r\n  \nIAMA");
        assert_eq!(got, vec![Ok(b"BUFFER 5".to_vec()), Ok(b"OK".to_vec())]);
        assert_eq!(l.buffered(), 4);
        let got = l.push(&[b'A'; 30]);
        assert_eq!(got, vec![Err(TooLong { max: 8 })]);
        assert_eq!(l.buffered(), 0);
        assert!(l.push(&[b'A'; 30]).is_empty(), "reported once per line");
        let got = l.push(b"\r12345678\n");
        assert_eq!(got, vec![Ok(b"12345678".to_vec())], "exactly the cap fits");
    }
}
