//! Coded broadcast transfers: a systematic random linear erasure code over GF(2^8)
//! (ADR 0014). A message is cut into `count` equal source symbols (the last padded with
//! zeros) sent as they are, followed by repair symbols, each a combination of all source
//! symbols with coefficients fixed by the symbol's index. A receiver rebuilds the message
//! from any `count` symbols whose combinations are independent (almost always any
//! `count`; one more symbol makes a failure about 256 times rarer), so one repair symbol
//! stands in for a different lost frame at every station. Coding is not encryption: the
//! source symbols are the message's bytes, and the coefficients are public.
//!
//! Pure and sans-IO, like `frag`. Byte layout (`varint` as in `frag`):
//!
//! ```text
//! 0x04 SYMBOL  04 | id varint | index varint | count varint | len varint | symbol
//! 0x05 MORE    05 | id varint | need varint | got varint
//! ```
//!
//! * SYMBOL: `index < count` is source symbol `index` (bytes `index * chunk ..` of the
//!   message, zero-padded), `index >= count` a repair symbol. `len` is the message length;
//!   every symbol of a transfer is `chunk` bytes, and `(count - 1) * chunk < len <=
//!   count * chunk`.
//! * MORE: "I still lack `need` symbols of this transfer, and have heard `got`": the sender
//!   answers with `need` (or more) new repair symbols to every station at once, and reads
//!   the receiver's loss from `got`. `need = 0` only reports.
//!
//! OVER and MORE flags (bits 0x80 and 0x40 of the tag) apply as to every packet.

use super::frag::{get_varint, put_varint, FragError};

/// Tag of a coded symbol (source or repair).
pub const TAG_SYMBOL: u8 = 0x04;
/// Tag of a request for more symbols.
pub const TAG_MORE: u8 = 0x05;
/// Source symbols per coded transfer at most (64 KB at 256-byte frames): decoding costs
/// about `count x missing` symbol operations, and a larger message goes as plain
/// fragments.
pub const MAX_SYMBOLS: u32 = 256;
/// Highest symbol index accepted (repair symbols are numbered on from `count`).
pub const MAX_INDEX: u32 = 1 << 20;
const FLAGS: u8 = 0xC0;

const fn tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            // x^8 + x^4 + x^3 + x^2 + 1, the usual Reed-Solomon field.
            x ^= 0x11D;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = tables();
static EXP: [u8; 512] = TABLES.0;
static LOG: [u8; 256] = TABLES.1;

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
}

fn inv(a: u8) -> u8 {
    // Callers never pass 0 (a pivot is non-zero).
    EXP[255 - LOG[a as usize] as usize]
}

/// `dst += c * src` in GF(2^8).
fn mul_add(dst: &mut [u8], src: &[u8], c: u8) {
    if c == 0 {
        return;
    }
    let lc = LOG[c as usize] as usize;
    for (d, &s) in dst.iter_mut().zip(src) {
        if s != 0 {
            *d ^= EXP[lc + LOG[s as usize] as usize];
        }
    }
}

fn scale(row: &mut [u8], c: u8) {
    for x in row.iter_mut() {
        *x = mul(*x, c);
    }
}

/// Coefficient of source symbol `i` in repair symbol `index`: never zero, fixed by the two
/// numbers (a hash), the same at every station.
pub fn coefficient(index: u32, i: u32) -> u8 {
    let mut x = (u64::from(index) << 32 | u64::from(i)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % 255) as u8 + 1
}

/// A parsed SYMBOL packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// Sender-chosen transfer id (shared with `frag` transfers of the same sender).
    pub transfer_id: u32,
    /// Source symbol below `count`, repair symbol from `count` on.
    pub index: u32,
    /// Source symbols of the transfer.
    pub count: u32,
    /// Message length.
    pub len: u32,
    /// The symbol, `chunk` bytes.
    pub payload: &'a [u8],
}

/// A parsed MORE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct More {
    /// The transfer.
    pub transfer_id: u32,
    /// Symbols still lacking.
    pub need: u32,
    /// Distinct symbols heard so far.
    pub got: u32,
}

fn tag(bytes: &[u8]) -> Option<u8> {
    bytes.first().map(|t| t & !FLAGS)
}

/// Parses a SYMBOL packet (flags ignored).
pub fn parse_symbol(bytes: &[u8]) -> Result<Symbol<'_>, FragError> {
    if tag(bytes) != Some(TAG_SYMBOL) {
        return Err(FragError::Malformed);
    }
    let mut rest = &bytes[1..];
    let transfer_id = get_varint(&mut rest)?;
    let index = get_varint(&mut rest)?;
    let count = get_varint(&mut rest)?;
    let len = get_varint(&mut rest)?;
    let chunk = rest.len() as u64;
    if !(2..=MAX_SYMBOLS).contains(&count)
        || index >= MAX_INDEX
        || chunk == 0
        || u64::from(len) > u64::from(count) * chunk
        || u64::from(len) <= u64::from(count - 1) * chunk
    {
        return Err(FragError::Malformed);
    }
    Ok(Symbol {
        transfer_id,
        index,
        count,
        len,
        payload: rest,
    })
}

/// Parses a MORE packet (flags ignored).
pub fn parse_more(bytes: &[u8]) -> Result<More, FragError> {
    if tag(bytes) != Some(TAG_MORE) {
        return Err(FragError::Malformed);
    }
    let mut rest = &bytes[1..];
    let transfer_id = get_varint(&mut rest)?;
    let need = get_varint(&mut rest)?;
    let got = get_varint(&mut rest)?;
    if !rest.is_empty() {
        return Err(FragError::Malformed);
    }
    Ok(More {
        transfer_id,
        need,
        got,
    })
}

/// Encodes a MORE packet.
pub fn encode_more(m: More) -> Vec<u8> {
    let mut out = vec![TAG_MORE];
    put_varint(m.transfer_id, &mut out);
    put_varint(m.need, &mut out);
    put_varint(m.got, &mut out);
    out
}

/// The sender's side of a coded transfer: the source symbols, padded.
#[derive(Debug, Clone)]
pub struct Encoder {
    transfer_id: u32,
    len: u32,
    source: Vec<Vec<u8>>,
}

impl Encoder {
    /// Cuts `message` into symbols that fit packets of `mtu` bytes; `None` if it fits one
    /// packet, needs more than [`MAX_SYMBOLS`], or the MTU cannot hold a header.
    pub fn new(transfer_id: u32, message: &[u8], mtu: usize) -> Option<Encoder> {
        let len = u32::try_from(message.len()).ok()?;
        // Header: tag, id, index (repairs run past count), count, len: at most 5 each.
        let header = 1 + 5 + 3 + 2 + 5;
        let chunk = mtu.checked_sub(header).filter(|c| *c > 0)?;
        let count = message.len().div_ceil(chunk);
        if !(2..=MAX_SYMBOLS as usize).contains(&count) {
            return None;
        }
        // Equal symbols as short as the count allows: less padding in the last one.
        let chunk = message.len().div_ceil(count);
        let source = message
            .chunks(chunk)
            .map(|c| {
                let mut s = c.to_vec();
                s.resize(chunk, 0);
                s
            })
            .collect::<Vec<_>>();
        if source.len() != count {
            return None;
        }
        Some(Encoder {
            transfer_id,
            len,
            source,
        })
    }

    /// Source symbols.
    pub fn count(&self) -> u32 {
        self.source.len() as u32
    }

    /// Bytes of one symbol.
    pub fn chunk(&self) -> usize {
        self.source.first().map_or(0, Vec::len)
    }

    /// The transfer id.
    pub fn transfer_id(&self) -> u32 {
        self.transfer_id
    }

    /// The packet carrying symbol `index` (source below `count`, repair from there on).
    pub fn packet(&self, index: u32) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.chunk() + 16);
        p.push(TAG_SYMBOL);
        put_varint(self.transfer_id, &mut p);
        put_varint(index, &mut p);
        put_varint(self.count(), &mut p);
        put_varint(self.len, &mut p);
        match self.source.get(index as usize) {
            Some(s) => p.extend_from_slice(s),
            None => {
                let mut r = vec![0u8; self.chunk()];
                for (i, s) in self.source.iter().enumerate() {
                    mul_add(&mut r, s, coefficient(index, i as u32));
                }
                p.extend_from_slice(&r);
            }
        }
        p
    }
}

/// Rebuilds a message from source symbols (`index -> symbol`) and repair symbols, all
/// `chunk` bytes; `None` while they do not determine it. Cost: about `repairs x count`
/// symbol operations plus `missing^2`.
pub fn decode(
    count: u32,
    len: usize,
    sources: &std::collections::BTreeMap<u32, Vec<u8>>,
    repairs: &[(u32, Vec<u8>)],
) -> Option<Vec<u8>> {
    let chunk = sources
        .values()
        .chain(repairs.iter().map(|(_, r)| r))
        .next()?
        .len();
    let missing: Vec<u32> = (0..count).filter(|i| !sources.contains_key(i)).collect();
    let m = missing.len();
    if repairs.len() < m {
        return None;
    }
    let mut solved: Vec<Vec<u8>> = Vec::new();
    if m > 0 {
        // Rows: coefficients of the missing symbols, then the repair with the known
        // symbols taken out.
        let mut rows: Vec<Vec<u8>> = repairs
            .iter()
            .map(|(index, r)| {
                let mut row = Vec::with_capacity(m + chunk);
                row.extend(missing.iter().map(|&i| coefficient(*index, i)));
                let mut rhs = r.clone();
                for (&i, s) in sources {
                    mul_add(&mut rhs, s, coefficient(*index, i));
                }
                row.extend_from_slice(&rhs);
                row
            })
            .collect();
        // Gauss-Jordan elimination.
        for col in 0..m {
            let pivot = (col..rows.len()).find(|&r| rows[r][col] != 0)?;
            rows.swap(col, pivot);
            let c = inv(rows[col][col]);
            scale(&mut rows[col], c);
            let (above, rest) = rows.split_at_mut(col);
            let (prow, below) = rest.split_first_mut()?;
            for row in above.iter_mut().chain(below.iter_mut()) {
                let f = row[col];
                mul_add(row, prow, f);
            }
        }
        solved = rows.into_iter().take(m).map(|r| r[m..].to_vec()).collect();
    }
    let mut msg = Vec::with_capacity(count as usize * chunk);
    let mut next_solved = solved.iter();
    for i in 0..count {
        match sources.get(&i) {
            Some(s) => msg.extend_from_slice(s),
            None => msg.extend_from_slice(next_solved.next()?),
        }
    }
    if msg.len() < len {
        return None;
    }
    msg.truncate(len);
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn field_arithmetic() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(mul(a, 1), a);
        }
        assert_eq!(mul(0x80, 2), 0x1D);
        assert!((0..1000).all(|i| coefficient(i + 7, i) != 0));
    }

    #[test]
    fn layout() {
        let e = Encoder::new(3, &[1, 2, 3, 4, 5], 16 + 3).expect("two symbols");
        assert_eq!((e.count(), e.chunk()), (2, 3));
        assert_eq!(e.packet(1), [0x04, 3, 1, 2, 5, 4, 5, 0]);
        let r = e.packet(2);
        let c0 = coefficient(2, 0);
        let c1 = coefficient(2, 1);
        assert_eq!(r[5], mul(c0, 1) ^ mul(c1, 4));
        assert_eq!(
            encode_more(More {
                transfer_id: 3,
                need: 2,
                got: 130
            }),
            [0x05, 3, 2, 0x82, 0x01]
        );
        assert!(
            parse_symbol(&[0x04, 3, 1, 2, 7, 4, 5, 0]).is_err(),
            "len > 2 x 3"
        );
        assert!(
            parse_symbol(&[0x04, 3, 1, 2, 3, 4, 5, 0]).is_err(),
            "len <= 3"
        );
        assert_eq!(parse_symbol(&e.packet(1)).map(|s| s.len), Ok(5));
    }

    /// Repair symbols chosen so that their coefficients for source symbols 0 and 1 are
    /// in the same ratio never solve those two, whatever else comes: each attempt costs
    /// a full elimination. The reassembler gives up on such a transfer after a few.
    #[test]
    fn symbols_picked_to_never_decode_are_refused_after_a_few_attempts() {
        use crate::wire::frag::{FragError, Reassembler};
        let e = Encoder::new(1, &[7u8; 40], 10 + 16).expect("four symbols");
        assert_eq!(e.count(), 4);
        let ratio = |x: u32| mul(coefficient(x, 0), inv(coefficient(x, 1)));
        let bad: Vec<u32> = (4..MAX_INDEX)
            .filter(|&x| ratio(x) == ratio(4))
            .take(6)
            .collect();
        assert_eq!(bad.len(), 6);
        let mut r = Reassembler::default();
        let mut results = Vec::new();
        for &x in &bad {
            results.push(r.insert(0, 3, &e.packet(x)));
        }
        for i in [2, 3] {
            results.push(r.insert(0, 3, &e.packet(i)));
        }
        // Three attempts with the repairs (from four held to the spare two), two with the
        // sources: the fifth failure refuses the transfer.
        assert!(results[..7].iter().all(|x| *x == Ok(None)), "{results:?}");
        assert_eq!(results[7], Err(FragError::Undecodable));
        assert_eq!(r.transfer_count(), 0);
        assert_eq!(
            r.insert(0, 3, &e.packet(0)),
            Ok(None),
            "ignored from now on"
        );
        // Honest symbols of another transfer still decode.
        let good = Encoder::new(2, &[9u8; 40], 26).expect("four symbols");
        let got: Vec<_> = (0..4).map(|i| r.insert(0, 3, &good.packet(i))).collect();
        assert_eq!(got[3], Ok(Some(vec![9u8; 40])));
    }

    proptest! {
        /// Any `count` symbols of a transfer, source or repair, almost always rebuild it;
        /// two more always did in these runs.
        #[test]
        fn any_count_plus_two_symbols_decode(
            message in proptest::collection::vec(any::<u8>(), 30..3000),
            mtu in 40usize..300,
            keep in proptest::collection::vec(any::<bool>(), 1..64),
            extra in 0u32..40,
        ) {
            let Some(e) = Encoder::new(9, &message, mtu) else {
                return Ok(());
            };
            let n = e.count();
            let mut sources = BTreeMap::new();
            let mut repairs = Vec::new();
            let mut lost = 0;
            for i in 0..n {
                if keep[i as usize % keep.len()] {
                    let p = e.packet(i);
                    let s = parse_symbol(&p).unwrap();
                    sources.insert(i, s.payload.to_vec());
                } else {
                    lost += 1;
                }
            }
            for j in 0..lost + 2 {
                let p = e.packet(n + extra + j);
                let s = parse_symbol(&p).unwrap();
                repairs.push((s.index, s.payload.to_vec()));
            }
            let got = decode(n, message.len(), &sources, &repairs);
            prop_assert_eq!(got.as_deref(), Some(&message[..]));
        }
    }
}
