//! Fragmentation and selective-repeat reassembly of messages over a small MTU.
//!
//! Pure and sans-IO: time is passed in as `now_ms`, nothing reads a clock.
//!
//! # Byte layout
//!
//! Every packet starts with a tag byte. `varint` is unsigned LEB128 (7 bits per
//! byte, low group first, high bit = more follows), minimal, at most 5 bytes for
//! a u32.
//!
//! ```text
//! 0x00 WHOLE       00 | message...                                   (1 byte overhead)
//! 0x01 FRAGMENT    01 | id varint | index varint | count varint | payload...
//! 0x02 NACK ranges 02 | id varint | n varint | n x (gap varint, len-1 varint)
//! 0x03 NACK bitmap 03 | id varint | base varint | nbits varint | ceil(nbits/8) bytes
//! 0x04..=0x3F      reserved
//! ```
//!
//! * OVER: bit 0x80 of the tag byte, on any packet, says "this is the last packet of my
//!   transmission: the channel is yours". On a half-duplex channel the receiver holds its
//!   replies until it hears it (or until the sender has been quiet for a frame's air
//!   time), then answers everything in one key-up, and asks at once for fragments that
//!   did not arrive. The tag is `tag & 0x3F`.
//! * MORE: bit 0x40, only with OVER: "I stop to let you answer, and have more to send":
//!   the receiver asks only for gaps below the highest fragment it got of each transfer.
//!
//! * FRAGMENT: `index < count`; every fragment but the last carries the same
//!   non-empty payload length, the last carries 1..=that many bytes. A message
//!   that fits in one frame is sent as WHOLE, never as a 1-fragment transfer.
//!   With small ids a fragment costs 4-7 bytes of header.
//! * NACK ranges: missing indices as sorted half-open ranges; range `k` starts
//!   `gap` after the end of range `k-1` (the first after 0). `n = 0` means
//!   nothing is missing, i.e. an ACK.
//! * NACK bitmap: bit `i` (LSB first within each byte) set = index `base + i`
//!   missing. [`encode_nack`] picks whichever of the two forms is shorter.

use std::collections::BTreeMap;
use std::ops::Range;

use thiserror::Error;

use super::fountain;

/// Tag of a message sent in one packet.
pub const TAG_WHOLE: u8 = 0x00;
/// Tag of one fragment of a multi-packet transfer.
pub const TAG_FRAGMENT: u8 = 0x01;
/// Tag of a NACK listing missing ranges.
pub const TAG_NACK_RANGES: u8 = 0x02;
/// Tag of a NACK carrying a bitmap of missing fragments.
pub const TAG_NACK_BITMAP: u8 = 0x03;
/// Bit of the tag byte marking the last packet of a transmission (see the module docs).
pub const FLAG_OVER: u8 = 0x80;
/// With [`FLAG_OVER`]: the sender stopped for a turn and has more to send.
pub const FLAG_MORE: u8 = 0x40;
const FLAGS: u8 = FLAG_OVER | FLAG_MORE;
/// Hard protocol limit on fragments per transfer.
pub const MAX_FRAGMENTS: u32 = 1 << 16;

/// Bookkeeping charged per stored fragment / transfer, so that floods of tiny
/// fragments are bounded by the byte budget too.
const FRAGMENT_COST: usize = 48;
const TRANSFER_COST: usize = 128;

/// Errors from parsing, splitting and reassembly.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FragError {
    /// Packet ended inside a header.
    #[error("truncated packet")]
    Truncated,
    /// Overlong or non-minimal varint.
    #[error("bad varint")]
    BadVarint,
    /// First byte is not a known tag.
    #[error("unknown tag {0:#04x}")]
    UnknownTag(u8),
    /// A NACK was given where data was expected.
    #[error("packet is a NACK, not data")]
    NotData,
    /// Header fields make no sense (index >= count, empty payload, bytes left over).
    #[error("malformed packet")]
    Malformed,
    /// Fragment disagrees with earlier fragments of the same transfer.
    #[error("fragment inconsistent with its transfer")]
    Inconsistent,
    /// Declared fragment count above the configured limit.
    #[error("too many fragments ({0})")]
    TooManyFragments(u32),
    /// Declared or implied message size above the configured limit.
    #[error("message too large (at least {0} bytes)")]
    TooLarge(usize),
    /// The buffer budget cannot hold this transfer even after evictions.
    #[error("reassembly budget exhausted")]
    OverBudget,
    /// A station asked for more repair than the transfer allows.
    #[error("more repair asked than allowed")]
    RepairBudget,
    /// A coded transfer's symbols failed to decode more often than honest loss makes
    /// them (see `MAX_FAILED_DECODES`).
    #[error("coded symbols that do not decode")]
    Undecodable,
    /// MTU too small to carry a fragment header and one payload byte.
    #[error("mtu {0} too small")]
    MtuTooSmall(usize),
}

pub(super) fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

pub(super) fn get_varint(input: &mut &[u8]) -> Result<u32, FragError> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let (&b, rest) = input.split_first().ok_or(FragError::Truncated)?;
        *input = rest;
        if i == 4 && b > 0x0F {
            return Err(FragError::BadVarint);
        }
        v |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A zero final group after the first byte would be a non-minimal encoding.
            if i > 0 && b == 0 {
                return Err(FragError::BadVarint);
            }
            return Ok(v);
        }
    }
    Err(FragError::BadVarint)
}

/// A parsed FRAGMENT packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Sender-chosen transfer id.
    pub transfer_id: u32,
    /// Position of this fragment, `< count`.
    pub index: u32,
    /// Number of fragments in the transfer.
    pub count: u32,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Missing fragments of one transfer, as sorted disjoint half-open ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// Transfer the NACK refers to.
    pub transfer_id: u32,
    /// Missing indices; empty means the transfer is complete (an ACK).
    pub ranges: Vec<Range<u32>>,
}

impl Nack {
    /// Builds a NACK from missing indices in any order (duplicates allowed);
    /// indices `>= MAX_FRAGMENTS` cannot exist and are ignored.
    pub fn from_indices(transfer_id: u32, missing: &[u32]) -> Nack {
        let mut sorted: Vec<u32> = missing
            .iter()
            .copied()
            .filter(|&i| i < MAX_FRAGMENTS)
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<Range<u32>> = Vec::new();
        for i in sorted {
            match ranges.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => ranges.push(i..i + 1),
            }
        }
        Nack {
            transfer_id,
            ranges,
        }
    }

    /// Missing indices below `count` (bounded by `count` however large the ranges).
    pub fn indices(&self, count: u32) -> Vec<u32> {
        self.ranges
            .iter()
            .flat_map(|r| r.start.min(count)..r.end.min(count))
            .collect()
    }

    /// Encodes the NACK, choosing the shorter of the two forms.
    pub fn encode(&self) -> Vec<u8> {
        let ranges = self.encode_ranges();
        match self.encode_bitmap() {
            Some(bitmap) if bitmap.len() < ranges.len() => bitmap,
            _ => ranges,
        }
    }

    fn encode_ranges(&self) -> Vec<u8> {
        let mut out = vec![TAG_NACK_RANGES];
        put_varint(self.transfer_id, &mut out);
        put_varint(self.ranges.len() as u32, &mut out);
        let mut prev = 0u32;
        for r in &self.ranges {
            put_varint(r.start - prev, &mut out);
            put_varint(r.end - r.start - 1, &mut out);
            prev = r.end;
        }
        out
    }

    fn encode_bitmap(&self) -> Option<Vec<u8>> {
        let base = self.ranges.first()?.start;
        let nbits = self.ranges.last()?.end - base;
        // Only worth considering when it can be small.
        if nbits > 8 * 1024 {
            return None;
        }
        let mut out = vec![TAG_NACK_BITMAP];
        put_varint(self.transfer_id, &mut out);
        put_varint(base, &mut out);
        put_varint(nbits, &mut out);
        let start = out.len();
        out.resize(start + (nbits as usize).div_ceil(8), 0);
        for i in self.ranges.iter().flat_map(|r| r.clone()) {
            let bit = (i - base) as usize;
            out[start + bit / 8] |= 1 << (bit % 8);
        }
        Some(out)
    }
}

/// Encodes a NACK for `transfer_id` listing `missing` (empty = ACK).
pub fn encode_nack(transfer_id: u32, missing: &[u32]) -> Vec<u8> {
    Nack::from_indices(transfer_id, missing).encode()
}

/// Decodes a NACK packet of either form.
pub fn decode_nack(bytes: &[u8]) -> Result<Nack, FragError> {
    match parse(bytes)? {
        Packet::Nack(n) => Ok(n),
        _ => Err(FragError::Malformed),
    }
}

fn parse_nack(tag: u8, mut rest: &[u8]) -> Result<Nack, FragError> {
    let transfer_id = get_varint(&mut rest)?;
    let mut ranges: Vec<Range<u32>> = Vec::new();
    if tag == TAG_NACK_RANGES {
        let n = get_varint(&mut rest)? as usize;
        // Each range takes at least two bytes: check before allocating.
        if n > rest.len() / 2 {
            return Err(FragError::Truncated);
        }
        ranges.reserve_exact(n);
        let mut prev = 0u32;
        for _ in 0..n {
            let start = prev
                .checked_add(get_varint(&mut rest)?)
                .ok_or(FragError::Malformed)?;
            let end = start
                .checked_add(get_varint(&mut rest)?)
                .and_then(|e| e.checked_add(1))
                .ok_or(FragError::Malformed)?;
            ranges.push(start..end);
            prev = end;
        }
        if !rest.is_empty() {
            return Err(FragError::Malformed);
        }
    } else {
        let base = get_varint(&mut rest)?;
        let nbits = get_varint(&mut rest)?;
        if (nbits as usize).div_ceil(8) != rest.len() || base.checked_add(nbits).is_none() {
            return Err(FragError::Malformed);
        }
        for bit in 0..nbits {
            if rest[(bit / 8) as usize] & (1 << (bit % 8)) != 0 {
                let i = base + bit;
                match ranges.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => ranges.push(i..i + 1),
                }
            }
        }
    }
    Ok(Nack {
        transfer_id,
        ranges,
    })
}

/// Any packet of this module's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A complete message.
    Whole(&'a [u8]),
    /// One fragment of a transfer.
    Fragment(Fragment<'a>),
    /// A request for missing fragments (or an ACK when empty).
    Nack(Nack),
}

/// Is this packet the last of its sender's transmission ([`FLAG_OVER`])?
pub fn is_over(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|t| t & FLAG_OVER != 0)
}

/// Does this last packet of a transmission say more will follow ([`FLAG_MORE`])?
pub fn is_more(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|t| t & FLAGS == FLAGS)
}

/// Mark a packet as the last of a transmission ([`FLAG_OVER`]), with more to come
/// after the peer's turn ([`FLAG_MORE`]) or not.
pub fn set_over(packet: &mut [u8], more: bool) {
    if let Some(t) = packet.first_mut() {
        *t |= if more { FLAGS } else { FLAG_OVER };
    }
}

/// Parses a packet without allocating (except for NACK ranges, bounded by its length).
/// The [`FLAG_OVER`] bit is ignored here (see [`is_over`]).
pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, FragError> {
    let (&tag, mut rest) = bytes.split_first().ok_or(FragError::Truncated)?;
    match tag & !FLAGS {
        TAG_WHOLE => Ok(Packet::Whole(rest)),
        TAG_FRAGMENT => {
            let transfer_id = get_varint(&mut rest)?;
            let index = get_varint(&mut rest)?;
            let count = get_varint(&mut rest)?;
            if index >= count || count > MAX_FRAGMENTS || rest.is_empty() {
                return Err(FragError::Malformed);
            }
            Ok(Packet::Fragment(Fragment {
                transfer_id,
                index,
                count,
                payload: rest,
            }))
        }
        TAG_NACK_RANGES | TAG_NACK_BITMAP => parse_nack(tag & !FLAGS, rest).map(Packet::Nack),
        other => Err(FragError::UnknownTag(other)),
    }
}

/// Splits `message` into packets of at most `mtu` bytes.
///
/// A message shorter than `mtu` becomes one WHOLE packet; otherwise FRAGMENTs
/// of equal payload size (the last may be shorter). Resend fragment `i` of a
/// NACK by resending element `i`.
pub fn split(transfer_id: u32, message: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FragError> {
    if message.len() < mtu {
        let mut p = Vec::with_capacity(message.len() + 1);
        p.push(TAG_WHOLE);
        p.extend_from_slice(message);
        return Ok(vec![p]);
    }
    // Header size grows with count and count with header size; iterate from
    // the smallest count to the least fixed point (a few rounds at most).
    let id_len = varint_len(transfer_id);
    let mut count: u32 = 2;
    let mut chunk;
    loop {
        let header = 1 + id_len + 2 * varint_len(count);
        chunk = mtu
            .checked_sub(header)
            .filter(|&c| c > 0)
            .ok_or(FragError::MtuTooSmall(mtu))?;
        let need = message.len().div_ceil(chunk);
        if need > MAX_FRAGMENTS as usize {
            return Err(FragError::TooManyFragments(
                u32::try_from(need).unwrap_or(u32::MAX),
            ));
        }
        let need = need as u32;
        if need <= count {
            break;
        }
        count = need;
    }
    // The loop may stop with `count` larger than needed: recompute from chunk.
    let count = message.len().div_ceil(chunk) as u32;
    let mut out = Vec::with_capacity(count as usize);
    for (i, part) in message.chunks(chunk).enumerate() {
        let mut p = Vec::with_capacity(mtu);
        p.push(TAG_FRAGMENT);
        put_varint(transfer_id, &mut p);
        put_varint(i as u32, &mut p);
        put_varint(count, &mut p);
        p.extend_from_slice(part);
        out.push(p);
    }
    Ok(out)
}

/// Limits for a [`Reassembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassemblerConfig {
    /// Largest message accepted.
    pub max_message: usize,
    /// Budget for all buffered fragments of all peers (payload plus bookkeeping).
    pub max_total_bytes: usize,
    /// Concurrent incomplete transfers per peer; a new one evicts that peer's oldest.
    pub max_transfers_per_peer: usize,
    /// Largest fragment count accepted (at most [`MAX_FRAGMENTS`]).
    pub max_fragments: u32,
    /// A transfer with no new fragment for this long is dropped by `expire`.
    pub timeout_ms: u64,
    /// Completed transfer ids remembered (to ignore late duplicates).
    pub max_completed: usize,
}

impl Default for ReassemblerConfig {
    fn default() -> Self {
        ReassemblerConfig {
            max_message: 256 * 1024,
            max_total_bytes: 1024 * 1024,
            max_transfers_per_peer: 4,
            max_fragments: 4096,
            // 256 KiB at ~130 B/s takes over half an hour; this is an idle timeout.
            timeout_ms: 10 * 60 * 1000,
            max_completed: 1024,
        }
    }
}

#[derive(Debug)]
struct Transfer {
    count: u32,
    /// Payload length of non-last fragments, once one is seen.
    chunk: Option<usize>,
    /// Payload length of the last fragment, once seen.
    last_len: Option<usize>,
    parts: BTreeMap<u32, Vec<u8>>,
    /// Budget charged, including bookkeeping.
    cost: usize,
    last_ms: u64,
    /// NACK rounds since the last one that found fewer parts lacking, and how many
    /// lacked then (see [`Reassembler::nack_round`]).
    nack_rounds: u32,
    nack_lacking: usize,
    /// A coded transfer (`fountain`): `parts` holds its source symbols.
    coded: Option<Coded>,
}

#[derive(Debug)]
struct Coded {
    /// Message length.
    len: usize,
    /// Repair symbols held, by index.
    repairs: Vec<(u32, Vec<u8>)>,
    /// Distinct symbols heard (what the sender reads our loss from).
    heard: u32,
    /// Decode attempts that failed with enough symbols held.
    failed: u32,
}

/// Repair symbols held beyond what decoding needs (a rank-deficient set needs one more).
const SPARE_REPAIRS: usize = 2;
/// Failed decodes of one coded transfer before it is refused. With honest symbols a
/// decode from `count` of them fails about one time in 256 and from each one more about
/// 256 times less often; a station can pick repair indices whose coefficients are
/// dependent (about one index in 255 fits) and make every attempt fail, each up to
/// `count x missing x (missing + chunk)` byte operations (some 33 M at 256 symbols of
/// 250 bytes), once per symbol it sends.
const MAX_FAILED_DECODES: u32 = 4;

type Key = (u64, u32);

/// Reassembles transfers from many peers within fixed memory bounds.
#[derive(Debug, Default)]
pub struct Reassembler {
    cfg: ReassemblerConfig,
    transfers: BTreeMap<Key, Transfer>,
    per_peer: BTreeMap<u64, usize>,
    total: usize,
    /// Completed transfers -> completion time.
    completed: BTreeMap<Key, u64>,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(cfg: ReassemblerConfig) -> Self {
        Reassembler {
            cfg,
            ..Default::default()
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &ReassemblerConfig {
        &self.cfg
    }

    /// Bytes charged against `max_total_bytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.total
    }

    /// Make room for one more transfer from `peer`: its oldest goes when it holds its
    /// share already.
    fn room_for_transfer(&mut self, peer: u64) -> Result<(), FragError> {
        if self.transfers_for(peer) >= self.cfg.max_transfers_per_peer {
            if let Some(victim) = self.oldest(|k| k.0 == peer) {
                self.remove(victim);
            }
        }
        if self.cfg.max_transfers_per_peer == 0 {
            return Err(FragError::OverBudget);
        }
        Ok(())
    }

    /// Incomplete transfers held for `peer`.
    pub fn transfers_for(&self, peer: u64) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    /// Incomplete transfers held for `peer`, each with its first fragment's payload if
    /// that has come (where a message's envelope begins, naming what it carries).
    pub fn partial_firsts(&self, peer: u64) -> impl Iterator<Item = Option<&[u8]>> {
        self.transfers
            .range((peer, 0)..=(peer, u32::MAX))
            .map(|(_, t)| t.parts.get(&0).map(Vec::as_slice))
    }

    /// Incomplete transfers held in total.
    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// Feeds one WHOLE or FRAGMENT packet; returns the message once complete.
    ///
    /// Duplicates (also of recently completed transfers) yield `Ok(None)`.
    pub fn insert(
        &mut self,
        now_ms: u64,
        peer: u64,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, FragError> {
        if bytes
            .first()
            .is_some_and(|t| t & !FLAGS == fountain::TAG_SYMBOL)
        {
            return self.insert_symbol(now_ms, peer, bytes);
        }
        let frag = match parse(bytes)? {
            Packet::Whole(m) if m.len() > self.cfg.max_message => {
                return Err(FragError::TooLarge(m.len()))
            }
            Packet::Whole(m) => return Ok(Some(m.to_vec())),
            Packet::Nack(_) => return Err(FragError::NotData),
            Packet::Fragment(f) => f,
        };
        if frag.count > self.cfg.max_fragments.min(MAX_FRAGMENTS) {
            return Err(FragError::TooManyFragments(frag.count));
        }
        let key = (peer, frag.transfer_id);
        if self.completed.contains_key(&key) {
            return Ok(None);
        }
        let len = frag.payload.len();
        let is_last = frag.index + 1 == frag.count;
        let (mut chunk, mut last_len) = match self.transfers.get(&key) {
            Some(t) if t.count != frag.count || t.coded.is_some() => {
                return Err(FragError::Inconsistent)
            }
            Some(t) if t.parts.contains_key(&frag.index) => return Ok(None),
            Some(t) => (t.chunk, t.last_len),
            None => (None, None),
        };
        if is_last {
            last_len = Some(len);
        } else if chunk.is_some_and(|c| c != len) {
            return Err(FragError::Inconsistent);
        } else {
            chunk = Some(len);
        }
        if let (Some(c), Some(l)) = (chunk, last_len) {
            if l > c {
                return Err(FragError::Inconsistent);
            }
        }
        // Smallest message size consistent with what we know so far.
        let n_other = (frag.count - 1) as usize;
        let min_size = match (chunk, last_len) {
            (Some(c), Some(l)) => n_other.saturating_mul(c).saturating_add(l),
            (Some(c), None) => n_other.saturating_mul(c).saturating_add(1),
            (None, Some(l)) => (frag.count as usize).saturating_mul(l),
            (None, None) => 0,
        };
        if min_size > self.cfg.max_message {
            return self.reject(key, FragError::TooLarge(min_size));
        }
        let cost = len + FRAGMENT_COST;
        if !self.transfers.contains_key(&key) {
            self.room_for_transfer(peer)?;
            self.transfers.insert(
                key,
                Transfer {
                    count: frag.count,
                    chunk: None,
                    last_len: None,
                    parts: BTreeMap::new(),
                    cost: TRANSFER_COST,
                    last_ms: now_ms,
                    nack_rounds: 0,
                    nack_lacking: usize::MAX,
                    coded: None,
                },
            );
            *self.per_peer.entry(peer).or_insert(0) += 1;
            self.total += TRANSFER_COST;
        }
        // Make room before storing, so the budget holds at every instant.
        while self.total + cost > self.cfg.max_total_bytes {
            match self.oldest(|k| *k != key) {
                Some(victim) => {
                    self.remove(victim);
                }
                None => return self.reject(key, FragError::OverBudget),
            }
        }
        let Some(t) = self.transfers.get_mut(&key) else {
            return Err(FragError::OverBudget);
        };
        t.chunk = chunk;
        t.last_len = last_len;
        t.parts.insert(frag.index, frag.payload.to_vec());
        t.cost += cost;
        t.last_ms = now_ms;
        self.total += cost;
        if t.parts.len() as u32 != t.count {
            return Ok(None);
        }
        let Some(t) = self.remove(key) else {
            return Ok(None);
        };
        let size = t.parts.values().map(Vec::len).sum();
        let mut msg = Vec::with_capacity(size);
        for p in t.parts.values() {
            msg.extend_from_slice(p);
        }
        self.remember_completed(key, now_ms);
        Ok(Some(msg))
    }

    /// Missing fragment indices of a transfer: `None` if unknown, empty if it
    /// completed recently.
    pub fn missing(&self, peer: u64, transfer_id: u32) -> Option<Vec<u32>> {
        let key = (peer, transfer_id);
        if self.completed.contains_key(&key) {
            return Some(Vec::new());
        }
        let t = self.transfers.get(&key)?;
        Some((0..t.count).filter(|i| !t.parts.contains_key(i)).collect())
    }

    /// Missing fragments below the highest one received: lost for sure, even while the
    /// sender has more of the transfer still to send.
    pub fn missing_below_highest(&self, peer: u64, transfer_id: u32) -> Vec<u32> {
        let Some(t) = self.transfers.get(&(peer, transfer_id)) else {
            return Vec::new();
        };
        if t.coded.is_some() {
            // Any symbol still to come stands in for any lost one: wait for them.
            return Vec::new();
        }
        let top = t.parts.keys().next_back().copied().unwrap_or(0);
        (0..top).filter(|i| !t.parts.contains_key(i)).collect()
    }

    /// A NACK packet for a transfer (empty = ACK), if the transfer is known; for a coded
    /// transfer, a MORE packet asking for as many symbols as it lacks.
    pub fn nack(&self, peer: u64, transfer_id: u32) -> Option<Vec<u8>> {
        if let Some(t) = self.transfers.get(&(peer, transfer_id)) {
            if let Some(c) = &t.coded {
                let have = t.parts.len() + c.repairs.len();
                // Enough symbols that did not decode: one more is needed.
                let need = (t.count as usize).saturating_sub(have).max(1);
                return Some(fountain::encode_more(fountain::More {
                    transfer_id,
                    need: need as u32,
                    got: c.heard,
                }));
            }
        }
        self.missing(peer, transfer_id)
            .map(|m| encode_nack(transfer_id, &m))
    }

    /// Is this incomplete transfer a coded one?
    pub fn is_coded(&self, peer: u64, transfer_id: u32) -> bool {
        self.transfers
            .get(&(peer, transfer_id))
            .is_some_and(|t| t.coded.is_some())
    }

    /// Feeds one SYMBOL packet of a coded transfer; the message once it decodes.
    fn insert_symbol(
        &mut self,
        now_ms: u64,
        peer: u64,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, FragError> {
        let s = fountain::parse_symbol(bytes)?;
        if s.count > self.cfg.max_fragments.min(MAX_FRAGMENTS) {
            return Err(FragError::TooManyFragments(s.count));
        }
        if s.len as usize > self.cfg.max_message {
            return Err(FragError::TooLarge(s.len as usize));
        }
        let key = (peer, s.transfer_id);
        if self.completed.contains_key(&key) {
            return Ok(None);
        }
        let chunk = s.payload.len();
        let repair = s.index >= s.count;
        match self.transfers.get_mut(&key) {
            Some(t) => {
                let Some(c) = t.coded.as_mut() else {
                    return Err(FragError::Inconsistent);
                };
                if t.count != s.count || c.len != s.len as usize || t.chunk != Some(chunk) {
                    return Err(FragError::Inconsistent);
                }
                let dup = if repair {
                    c.repairs.iter().any(|(i, _)| *i == s.index)
                } else {
                    t.parts.contains_key(&s.index)
                };
                if dup {
                    return Ok(None);
                }
                c.heard = c.heard.saturating_add(1);
                t.last_ms = now_ms;
                if repair && c.repairs.len() + t.parts.len() >= t.count as usize + SPARE_REPAIRS {
                    // Enough held already (it failed on a rare dependent set and waits
                    // for a source symbol): no more memory for it.
                    return Ok(None);
                }
            }
            None => {
                self.room_for_transfer(peer)?;
                self.transfers.insert(
                    key,
                    Transfer {
                        count: s.count,
                        chunk: Some(chunk),
                        last_len: None,
                        parts: BTreeMap::new(),
                        cost: TRANSFER_COST,
                        last_ms: now_ms,
                        nack_rounds: 0,
                        nack_lacking: usize::MAX,
                        coded: Some(Coded {
                            len: s.len as usize,
                            repairs: Vec::new(),
                            heard: 1,
                            failed: 0,
                        }),
                    },
                );
                *self.per_peer.entry(peer).or_insert(0) += 1;
                self.total += TRANSFER_COST;
            }
        }
        let cost = chunk + FRAGMENT_COST;
        while self.total + cost > self.cfg.max_total_bytes {
            match self.oldest(|k| *k != key) {
                Some(victim) => {
                    self.remove(victim);
                }
                None => return self.reject(key, FragError::OverBudget),
            }
        }
        let Some(t) = self.transfers.get_mut(&key) else {
            return Err(FragError::OverBudget);
        };
        let Some(c) = t.coded.as_mut() else {
            return Err(FragError::Inconsistent);
        };
        if repair {
            c.repairs.push((s.index, s.payload.to_vec()));
        } else {
            t.parts.insert(s.index, s.payload.to_vec());
        }
        t.cost += cost;
        self.total += cost;
        if t.parts.len() + c.repairs.len() < t.count as usize {
            return Ok(None);
        }
        let Some(msg) = fountain::decode(t.count, c.len, &t.parts, &c.repairs) else {
            c.failed = c.failed.saturating_add(1);
            if c.failed > MAX_FAILED_DECODES {
                self.remove(key);
                self.remember_completed(key, now_ms);
                return Err(FragError::Undecodable);
            }
            return Ok(None);
        };
        self.remove(key);
        self.remember_completed(key, now_ms);
        Ok(Some(msg))
    }

    /// Incomplete transfers that have received nothing for `idle_ms`: the receiver's
    /// cue to ask for what it lacks (the sender has moved on or the rest was lost).
    pub fn stalled(&self, now_ms: u64, idle_ms: u64) -> Vec<(u64, u32)> {
        self.transfers
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(t.last_ms) >= idle_ms)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Has `peer` an incomplete transfer that received something within `within_ms`?
    pub fn active_within(&self, peer: u64, now_ms: u64, within_ms: u64) -> bool {
        self.transfers
            .iter()
            .any(|((p, _), t)| *p == peer && now_ms.saturating_sub(t.last_ms) < within_ms)
    }

    /// Is an incomplete transfer `transfer_id` from `peer` held?
    pub fn holds(&self, peer: u64, transfer_id: u32) -> bool {
        self.transfers.contains_key(&(peer, transfer_id))
    }

    /// Restart a transfer's idle clock (after asking for its missing fragments).
    pub fn touch(&mut self, peer: u64, transfer_id: u32, now_ms: u64) {
        if let Some(t) = self.transfers.get_mut(&(peer, transfer_id)) {
            t.last_ms = now_ms;
        }
    }

    /// Drop one incomplete transfer (the receiver gave up asking for its gaps). It is
    /// remembered as finished: a fragment of it still on its way (a repair the sender
    /// answered our last NACK with) would otherwise start it afresh, lacking everything,
    /// and the next NACK would ask for all of it under the old id.
    pub fn abandon(&mut self, peer: u64, transfer_id: u32) {
        if let Some(t) = self.remove((peer, transfer_id)) {
            self.remember_completed((peer, transfer_id), t.last_ms);
        }
    }

    /// Count a NACK round for a held incomplete transfer: the rounds since one found it
    /// lacking fewer parts than the round before (that one counted as the first). 0 if
    /// the transfer is not held.
    pub fn nack_round(&mut self, peer: u64, transfer_id: u32) -> u32 {
        let Some(t) = self.transfers.get_mut(&(peer, transfer_id)) else {
            return 0;
        };
        let have = t.parts.len() + t.coded.as_ref().map_or(0, |c| c.repairs.len());
        let lacking = (t.count as usize).saturating_sub(have);
        if lacking < t.nack_lacking {
            t.nack_lacking = lacking;
            t.nack_rounds = 0;
        }
        t.nack_rounds = t.nack_rounds.saturating_add(1);
        t.nack_rounds
    }

    /// Forget everything held for `peer` (its session ended).
    pub fn forget_peer(&mut self, peer: u64) {
        let keys: Vec<Key> = self
            .transfers
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for k in keys {
            self.remove(k);
        }
        self.completed.retain(|(p, _), _| *p != peer);
    }

    /// Drops transfers idle for `timeout_ms` and forgets old completions;
    /// returns how many incomplete transfers were dropped.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let timeout = self.cfg.timeout_ms;
        let stale: Vec<Key> = self
            .transfers
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(t.last_ms) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.remove(*k);
        }
        self.completed
            .retain(|_, done| now_ms.saturating_sub(*done) < timeout);
        stale.len()
    }

    fn reject(&mut self, key: Key, err: FragError) -> Result<Option<Vec<u8>>, FragError> {
        self.remove(key);
        Err(err)
    }

    fn oldest(&self, keep: impl Fn(&Key) -> bool) -> Option<Key> {
        self.transfers
            .iter()
            .filter(|(k, _)| keep(k))
            .min_by_key(|(k, t)| (t.last_ms, **k))
            .map(|(k, _)| *k)
    }

    fn remove(&mut self, key: Key) -> Option<Transfer> {
        let t = self.transfers.remove(&key)?;
        self.total -= t.cost;
        if let Some(n) = self.per_peer.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&key.0);
            }
        }
        Some(t)
    }

    fn remember_completed(&mut self, key: Key, now_ms: u64) {
        if self.cfg.max_completed == 0 {
            return;
        }
        while self.completed.len() >= self.cfg.max_completed {
            let oldest = self
                .completed
                .iter()
                .min_by_key(|(k, t)| (**t, **k))
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.completed.remove(&k),
                None => break,
            };
        }
        self.completed.insert(key, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// NACK rounds are counted on the transfer itself: from the last round that found it
    /// lacking less, and not at all for a transfer not held.
    #[test]
    fn nack_rounds_count_from_the_last_progress() {
        let frags = split(6, &[1u8; 1000], 256).unwrap();
        let mut r = Reassembler::default();
        assert_eq!(r.nack_round(2, 6), 0);
        assert_eq!(r.insert(0, 2, &frags[0]), Ok(None));
        assert_eq!(r.nack_round(2, 6), 1);
        assert_eq!(r.nack_round(2, 6), 2);
        assert_eq!(r.insert(0, 2, &frags[1]), Ok(None));
        assert_eq!(r.nack_round(2, 6), 1, "a fragment came since");
        assert_eq!(r.nack_round(2, 7), 0);
    }

    /// A fragment of a transfer given up on (a repair still on its way) does not start it
    /// afresh: its NACK would ask for the whole message again under the old id.
    #[test]
    fn a_fragment_of_an_abandoned_transfer_is_ignored() {
        let frags = split(6, &[1u8; 1000], 256).unwrap();
        let mut r = Reassembler::default();
        assert_eq!(r.insert(0, 2, &frags[0]), Ok(None));
        r.abandon(2, 6);
        assert_eq!(r.insert(1, 2, &frags[1]), Ok(None));
        assert!(!r.holds(2, 6), "the abandoned transfer started again");
        assert_eq!(r.transfer_count(), 0);
        assert_eq!(r.stalled(u64::MAX / 2, 0), Vec::new());
    }

    #[test]
    fn small_message_costs_one_byte() {
        let p = split(7, b"hello", 6).expect("splits");
        assert_eq!(p, vec![b"\x00hello".to_vec()]);
        let mut r = Reassembler::default();
        assert_eq!(r.insert(0, 1, &p[0]), Ok(Some(b"hello".to_vec())));
    }

    #[test]
    fn fragment_layout() {
        // 10 bytes, mtu 8: header 01 id(1) idx(1) count(1) = 4 bytes, 4 payload bytes each.
        let p = split(300, b"abcdefghij", 9).expect("splits");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], [0x01, 0xAC, 0x02, 0x00, 0x03, b'a', b'b', b'c', b'd']);
        assert_eq!(p[2], [0x01, 0xAC, 0x02, 0x02, 0x03, b'i', b'j']);
        assert!(matches!(
            split(1, &[0; 100], 4),
            Err(FragError::MtuTooSmall(4))
        ));
    }

    #[test]
    fn nack_forms() {
        // Dense scattered losses: bitmap is shorter.
        let m = [0, 2, 4, 6, 8, 10, 12, 14];
        let b = encode_nack(5, &m);
        assert_eq!(b, [TAG_NACK_BITMAP, 5, 0, 15, 0x55, 0x55]);
        // One long run: ranges is shorter.
        let m: Vec<u32> = (100..400).collect();
        let b = encode_nack(5, &m);
        assert_eq!(b, [TAG_NACK_RANGES, 5, 1, 100, 0xAB, 0x02]);
        assert_eq!(decode_nack(&b).map(|n| n.indices(u32::MAX)), Ok(m));
        // Nothing missing = ACK.
        assert_eq!(encode_nack(5, &[]), [TAG_NACK_RANGES, 5, 0]);
        assert_eq!(encode_nack(5, &[u32::MAX]), [TAG_NACK_RANGES, 5, 0]);
    }

    #[test]
    fn rejects_oversized_declarations_before_storing() {
        let cfg = ReassemblerConfig {
            max_message: 1000,
            ..Default::default()
        };
        let mut r = Reassembler::new(cfg);
        let mut p = vec![TAG_FRAGMENT];
        put_varint(1, &mut p);
        put_varint(0, &mut p);
        put_varint(60_000, &mut p);
        p.push(0);
        assert_eq!(r.insert(0, 1, &p), Err(FragError::TooManyFragments(60_000)));
        // 100 fragments of 20 bytes exceeds 1000.
        let parts = split(2, &[7; 2000], 25).expect("splits");
        assert!(matches!(
            r.insert(0, 1, &parts[0]),
            Err(FragError::TooLarge(_))
        ));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.transfer_count(), 0);
    }

    #[test]
    fn expiry_and_eviction() {
        let cfg = ReassemblerConfig {
            max_total_bytes: 900,
            timeout_ms: 100,
            max_transfers_per_peer: 2,
            ..Default::default()
        };
        let mut r = Reassembler::new(cfg);
        let a = split(1, &[1; 600], 200).expect("splits");
        let b = split(2, &[2; 600], 200).expect("splits");
        let c = split(3, &[3; 600], 200).expect("splits");
        assert_eq!(r.insert(0, 9, &a[0]), Ok(None));
        assert_eq!(r.insert(10, 9, &b[0]), Ok(None));
        assert_eq!(r.insert(20, 9, &c[0]), Ok(None));
        assert_eq!(r.transfers_for(9), 2);
        assert_eq!(r.missing(9, 1), None, "oldest evicted per peer");
        // Budget: more fragments evict the oldest other transfer.
        assert_eq!(r.insert(30, 9, &c[1]), Ok(None));
        assert!(r.buffered_bytes() <= 900);
        assert_eq!(r.missing(9, 2), None);
        assert_eq!(r.missing(9, 3), Some(vec![2, 3]));
        assert_eq!(r.expire(129), 0);
        assert_eq!(r.expire(130), 1);
        assert_eq!(r.buffered_bytes(), 0);
    }

    /// A coded transfer whose symbols disagree is refused, repair symbols beyond what
    /// decoding needs are not kept, and its first symbols name nothing until it decodes.
    #[test]
    fn coded_symbols_are_checked_and_bounded() {
        let msg: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let e = fountain::Encoder::new(5, &msg, 200).expect("codes");
        let n = e.count();
        let mut r = Reassembler::default();
        // Only repair symbols, far more than needed: at most count + SPARE_REPAIRS kept.
        for i in 0..n - 1 {
            assert_eq!(r.insert(0, 1, &e.packet(n + 10 + i)), Ok(None));
        }
        let before = r.buffered_bytes();
        let other = fountain::Encoder::new(5, &msg[..1500], 200).expect("codes");
        assert_eq!(
            r.insert(0, 1, &other.packet(n + 99)),
            Err(FragError::Inconsistent)
        );
        assert_eq!(r.buffered_bytes(), before);
        let got = r.insert(0, 1, &e.packet(3)).expect("fits");
        assert_eq!(got.as_deref(), Some(&msg[..]), "count symbols decode");
        assert_eq!(r.insert(0, 1, &e.packet(4)), Ok(None), "late duplicate");
        assert_eq!(r.buffered_bytes(), 0);
        // A transfer that cannot decode keeps at most count + SPARE_REPAIRS symbols.
        let mut r = Reassembler::default();
        let big = fountain::Encoder::new(6, &[7u8; 3000], 120).expect("codes");
        let mut bad = big.packet(big.count());
        let last = bad.len() - 1;
        for i in 0..3 * big.count() {
            bad = big.packet(big.count() + i);
            bad[last] ^= 1;
            if i % 2 == 0 {
                // Half of them made inconsistent with the rest: different chunk.
                bad.pop();
            }
            let _ = r.insert(0, 2, &bad);
        }
        assert!(r.buffered_bytes() <= (big.count() as usize + SPARE_REPAIRS) * 200 + 200);
    }

    #[test]
    fn varints() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX] {
            let mut b = Vec::new();
            put_varint(v, &mut b);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(get_varint(&mut b.as_slice()), Ok(v));
        }
        assert_eq!(
            get_varint(&mut &[0x80, 0x00][..]),
            Err(FragError::BadVarint)
        );
        assert_eq!(
            get_varint(&mut &[0xFF, 0xFF, 0xFF, 0xFF, 0x1F][..]),
            Err(FragError::BadVarint)
        );
        assert_eq!(get_varint(&mut &[0x80][..]), Err(FragError::Truncated));
    }

    /// Per fragment: 0 = drop, 1 = deliver, 2 = deliver twice.
    fn deliver(
        r: &mut Reassembler,
        now: &mut u64,
        parts: &[Vec<u8>],
        order: &[(u32, u8)],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), TestCaseError> {
        for &(i, action) in order {
            for _ in 0..action {
                *now += 1;
                let got = r.insert(*now, 42, &parts[i as usize]);
                prop_assert!(got.is_ok(), "{:?}", got);
                if let Ok(Some(m)) = got {
                    out.push(m);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn delivers_once_under_any_loss(
            message in proptest::collection::vec(any::<u8>(), 0..3000),
            mtu in 10usize..300,
            id in any::<u32>(),
            pattern in proptest::collection::vec((any::<u32>(), 0u8..3), 1..400),
        ) {
            let parts = match split(id, &message, mtu) {
                Ok(p) => p,
                Err(FragError::MtuTooSmall(_)) => {
                    prop_assert!(mtu < 1 + 5 + 2 * 3 + 1);
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
            };
            prop_assert!(parts.iter().all(|p| p.len() <= mtu));
            let n = parts.len() as u32;
            // First round: arbitrary order, drops and duplicates.
            let mut order: Vec<(u32, u32, u8)> = (0..n)
                .map(|i| {
                    let (k, a) = pattern[i as usize % pattern.len()];
                    (k.wrapping_mul(i + 1), i, a)
                })
                .collect();
            order.sort_unstable();
            // A WHOLE packet has no id to deduplicate by: that is the caller's job.
            let max_copies = if n == 1 { 1 } else { 2 };
            let first: Vec<(u32, u8)> =
                order.iter().map(|&(_, i, a)| (i, a.min(max_copies))).collect();
            let mut r = Reassembler::default();
            let mut now = 0;
            let mut got = Vec::new();
            deliver(&mut r, &mut now, &parts, &first, &mut got)?;
            // Selective repeat over the NACK wire format until complete.
            for _ in 0..3 {
                let resend: Vec<u32> = match r.nack(42, id) {
                    None => (0..n).collect(),
                    Some(b) => decode_nack(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?
                        .indices(n),
                };
                if !got.is_empty() {
                    break;
                }
                let again: Vec<(u32, u8)> = resend.iter().map(|&i| (i, 1)).collect();
                deliver(&mut r, &mut now, &parts, &again, &mut got)?;
            }
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&got[0], &message);
            if n > 1 {
                // Late duplicates of a completed transfer are ignored.
                let all: Vec<(u32, u8)> = (0..n).map(|i| (i, 1)).collect();
                deliver(&mut r, &mut now, &parts, &all, &mut got)?;
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(r.buffered_bytes(), 0);
            }
        }

        #[test]
        fn nack_round_trip(
            missing in proptest::collection::btree_set(0u32..5000, 0..300),
            id in any::<u32>(),
        ) {
            let v: Vec<u32> = missing.iter().copied().collect();
            let b = encode_nack(id, &v);
            let n = decode_nack(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(n.transfer_id, id);
            prop_assert_eq!(n.indices(u32::MAX), v);
        }

        #[test]
        fn arbitrary_input_respects_bounds(
            packets in proptest::collection::vec(
                (0u64..4, prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64),
                    (any::<u32>(), 0u32..40, 1u32..40, proptest::collection::vec(any::<u8>(), 1..120))
                        .prop_map(|(id, i, c, p)| {
                            let mut b = vec![TAG_FRAGMENT];
                            put_varint(id % 8, &mut b);
                            put_varint(i, &mut b);
                            put_varint(c, &mut b);
                            b.extend(p);
                            b
                        }),
                ]),
                0..300),
            step in 0u64..50,
        ) {
            let cfg = ReassemblerConfig {
                max_message: 2000,
                max_total_bytes: 3000,
                max_transfers_per_peer: 3,
                max_fragments: 30,
                timeout_ms: 500,
                max_completed: 16,
            };
            let mut r = Reassembler::new(cfg.clone());
            let mut now = 0;
            for (peer, bytes) in packets {
                now += step;
                if let Ok(Some(m)) = r.insert(now, peer, &bytes) {
                    prop_assert!(m.len() <= cfg.max_message);
                }
                let _ = parse(&bytes);
                prop_assert!(r.buffered_bytes() <= cfg.max_total_bytes);
                prop_assert!(r.transfers_for(peer) <= cfg.max_transfers_per_peer);
                prop_assert!(r.completed.len() <= cfg.max_completed);
                r.expire(now);
            }
            r.expire(now + cfg.timeout_ms);
            prop_assert_eq!(r.buffered_bytes(), 0);
        }
    }
}
