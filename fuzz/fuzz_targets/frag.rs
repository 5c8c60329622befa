//! `frag::Reassembler` with small limits, fed packets from several peers over time, and
//! `frag::decode_nack` on every packet.
//!
//! Input: a sequence of records `ctrl len bytes[len]`.
//! * `ctrl & 3` = peer (0..=3), `(ctrl >> 2) & 0x1f` = time step (x 500 ms);
//! * `ctrl & 0x80` set: `bytes` is `id index count payload...` and a well-formed
//!   FRAGMENT header is built from those three bytes (so the fuzzer gets past parsing
//!   easily); clear: `bytes` is the raw packet.
//! Every fifth record also runs `expire`.
//!
//! Asserts: no panic; `buffered_bytes() <= max_total_bytes` and per-peer transfer counts
//! within limits after every call; completed messages within `max_message`; `missing`
//! and `nack` agree; a decoded NACK has sorted, disjoint, non-empty ranges, no more
//! ranges than its bytes can declare, and survives re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::frag::{
    decode_nack, encode_nack, Reassembler, ReassemblerConfig, MAX_FRAGMENTS, TAG_FRAGMENT,
    TAG_NACK_BITMAP, TAG_NACK_RANGES,
};
use std::ops::Range;

const PEERS: u64 = 4;

fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Adjacent ranges merged: the two NACK forms may split a run differently.
fn merged(ranges: &[Range<u32>]) -> Vec<Range<u32>> {
    let mut out: Vec<Range<u32>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.end == r.start => l.end = r.end,
            _ => out.push(r.clone()),
        }
    }
    out
}

fn check_nack(packet: &[u8]) {
    let Ok(n) = decode_nack(packet) else {
        return;
    };
    let tag = packet[0];
    assert!(tag == TAG_NACK_RANGES || tag == TAG_NACK_BITMAP);
    let mut prev_end: Option<u32> = None;
    for r in &n.ranges {
        assert!(r.start < r.end, "empty range {r:?}");
        if let Some(e) = prev_end {
            assert!(r.start >= e, "ranges out of order: {:?}", n.ranges);
        }
        prev_end = Some(r.end);
    }
    if tag == TAG_NACK_RANGES {
        // Each range costs at least two bytes after the tag, id and count.
        assert!(n.ranges.len() <= packet.len() / 2, "more ranges than bytes");
    } else {
        let bits: u64 = n.ranges.iter().map(|r| u64::from(r.end - r.start)).sum();
        assert!(bits <= 8 * packet.len() as u64, "more bits set than sent");
    }
    for count in [0u32, 1, 7, 64, MAX_FRAGMENTS] {
        let idx = n.indices(count);
        assert!(idx.len() <= count as usize, "{} indices below {count}", idx.len());
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
    }
    // Re-encode (either form) and decode: the same missing set.
    let again = decode_nack(&n.encode()).expect("re-encoded NACK decodes");
    assert_eq!(again.transfer_id, n.transfer_id);
    assert_eq!(merged(&again.ranges), merged(&n.ranges));
    let small = n.indices(MAX_FRAGMENTS);
    let via = decode_nack(&encode_nack(n.transfer_id, &small)).expect("decodes");
    assert_eq!(via.indices(MAX_FRAGMENTS), small);
}

fuzz_target!(|data: &[u8]| {
    let cfg = ReassemblerConfig {
        max_message: 4096,
        max_total_bytes: 16 * 1024,
        max_transfers_per_peer: 3,
        max_fragments: 64,
        timeout_ms: 10_000,
        max_completed: 8,
    };
    let mut r = Reassembler::new(cfg.clone());
    let mut now: u64 = 0;
    let mut rest = data;
    let mut n = 0u32;
    while rest.len() >= 2 {
        let ctrl = rest[0];
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let peer = u64::from(ctrl & 3) % PEERS;
        now += u64::from((ctrl >> 2) & 0x1f) * 500;

        let packet: Vec<u8> = if ctrl & 0x80 != 0 && body.len() >= 3 {
            let mut p = vec![TAG_FRAGMENT];
            put_varint(u32::from(body[0] % 8), &mut p);
            let count = u32::from(body[2]).max(1);
            put_varint(u32::from(body[1]) % count, &mut p);
            put_varint(count, &mut p);
            p.extend_from_slice(&body[3..]);
            p
        } else {
            body.to_vec()
        };

        if !packet.is_empty() {
            check_nack(&packet);
        }
        let res = r.insert(now, peer, &packet);
        if let Ok(Some(msg)) = &res {
            assert!(msg.len() <= cfg.max_message, "message of {} bytes", msg.len());
        }
        assert!(
            r.buffered_bytes() <= cfg.max_total_bytes,
            "{} bytes buffered, budget {}",
            r.buffered_bytes(),
            cfg.max_total_bytes
        );
        for p in 0..PEERS {
            assert!(r.transfers_for(p) <= cfg.max_transfers_per_peer);
        }
        assert!(r.transfer_count() <= cfg.max_transfers_per_peer * PEERS as usize);
        if r.transfer_count() == 0 {
            assert_eq!(r.buffered_bytes(), 0, "budget leaked with nothing held");
        }
        // What the reassembler would NACK decodes back to what it says is missing.
        if let Some(id) = packet.get(1).map(|&b| u32::from(b & 0x7f)) {
            match (r.missing(peer, id), r.nack(peer, id)) {
                (Some(m), Some(b)) => {
                    assert!(m.len() <= cfg.max_fragments as usize);
                    let d = decode_nack(&b).expect("own NACK decodes");
                    assert_eq!(d.indices(MAX_FRAGMENTS), m);
                }
                (None, None) => {}
                other => panic!("missing/nack disagree: {other:?}"),
            }
        }
        n += 1;
        if n % 5 == 0 {
            r.expire(now);
            assert!(r.buffered_bytes() <= cfg.max_total_bytes);
        }
    }
});
