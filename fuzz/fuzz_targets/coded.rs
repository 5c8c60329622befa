//! Coded transfers (`wire::fountain`, ADR 0014): `frag::Reassembler` with small limits fed
//! SYMBOL packets from several peers over time, `fountain::parse_symbol`/`parse_more` on
//! every packet, and `fountain::decode` on symbol sets of any shape.
//!
//! Input: a sequence of records `ctrl len bytes[len]`.
//! * `ctrl & 3` = peer (0..=3), `(ctrl >> 2) & 7` = time step (x 500 ms);
//! * `ctrl & 0xC0`:
//!   - `0x80`: `bytes` is `id count index len_off payload...`, built into a well-formed
//!     SYMBOL header (`count` 2..=33, `index` below `count + 64`, `len` consistent with
//!     the payload's length), so the fuzzer reaches the decoder easily;
//!   - `0x40`: `bytes` is `id mtu keep message...`: the message is coded by
//!     `fountain::Encoder` at MTU `16 + mtu % 48 + 1`, and symbols `0..count + 8` are fed
//!     whose bit in `keep` (index mod 8) is clear: honest symbols with loss;
//!   - `0xC0`: `bytes` is `count chunk (index sym[chunk])*` handed to `fountain::decode`
//!     directly (source and repair symbols, chunk lengths as they fall);
//!   - else: `bytes` is the raw packet.
//!
//! Asserts: no panic; `buffered_bytes() <= max_total_bytes` and per-peer transfer counts
//! within limits after every insert; a decoded message is at most `max_message` bytes;
//! a parsed SYMBOL satisfies the layout's bounds; a parsed MORE re-encodes to itself;
//! a message coded honestly and fed with no other symbols under its id decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::fountain::{
    decode, encode_more, parse_more, parse_symbol, Encoder, MAX_INDEX, MAX_SYMBOLS, TAG_SYMBOL,
};
use skywave::wire::frag::{Reassembler, ReassemblerConfig};
use std::collections::BTreeMap;

const PEERS: u64 = 4;

fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn check_parsers(packet: &[u8]) {
    if let Ok(s) = parse_symbol(packet) {
        let chunk = s.payload.len() as u64;
        assert!((2..=MAX_SYMBOLS).contains(&s.count));
        assert!(s.index < MAX_INDEX && chunk > 0);
        assert!(u64::from(s.len) <= u64::from(s.count) * chunk);
        assert!(u64::from(s.len) > u64::from(s.count - 1) * chunk);
    }
    if let Ok(m) = parse_more(packet) {
        let again = encode_more(m);
        assert_eq!(parse_more(&again), Ok(m));
        // Flags aside, a MORE is canonical: its encoding is the packet.
        assert_eq!(&again[1..], &packet[1..]);
    }
}

/// `fountain::decode` on what `bytes` describes, chunk lengths unchecked.
fn decode_raw(bytes: &[u8]) {
    let [count, chunk, rest @ ..] = bytes else {
        return;
    };
    let count = u32::from(*count % 16);
    let chunk = usize::from(*chunk % 32);
    let mut sources = BTreeMap::new();
    let mut repairs = Vec::new();
    let mut rest = rest;
    while let Some((&index, tail)) = rest.split_first() {
        let take = tail.len().min(chunk);
        let sym = tail[..take].to_vec();
        rest = &tail[take..];
        let index = u32::from(index);
        if index < count {
            sources.insert(index, sym);
        } else if repairs.len() < 24 {
            repairs.push((index, sym));
        }
    }
    if let Some(m) = decode(count, count as usize * chunk, &sources, &repairs) {
        assert!(m.len() <= count as usize * chunk.max(32));
    }
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
    // Per (peer, transfer id): the message, while every symbol under it was an honest
    // one of that message; `None` once anything else came.
    let mut clean: BTreeMap<(u64, u32), Option<Vec<u8>>> = BTreeMap::new();
    while rest.len() >= 2 {
        let ctrl = rest[0];
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let peer = u64::from(ctrl & 3) % PEERS;
        now += u64::from((ctrl >> 2) & 7) * 500;

        let (packets, honest): (Vec<Vec<u8>>, Option<(u32, Vec<u8>)>) = match ctrl & 0xC0 {
            0x80 if body.len() >= 5 => {
                let count = u32::from(body[1] % 32) + 2;
                let index = u32::from(body[2]) % (count + 64);
                let payload = &body[4..];
                let chunk = payload.len() as u32;
                let mut p = vec![TAG_SYMBOL];
                put_varint(u32::from(body[0] % 8), &mut p);
                put_varint(index, &mut p);
                put_varint(count, &mut p);
                if chunk > 0 {
                    put_varint((count - 1) * chunk + 1 + u32::from(body[3]) % chunk, &mut p);
                } else {
                    put_varint(u32::from(body[3]), &mut p);
                }
                p.extend_from_slice(payload);
                (vec![p], None)
            }
            0x40 if body.len() >= 3 => {
                let id = u32::from(body[0] % 8);
                let mtu = 16 + usize::from(body[1] % 48) + 1;
                let keep = body[2];
                let msg = &body[3..];
                match Encoder::new(id, msg, mtu) {
                    Some(e) => {
                        let ps = (0..e.count() + 8)
                            .filter(|i| keep & (1 << (i % 8)) == 0)
                            .map(|i| e.packet(i))
                            .collect();
                        (ps, Some((id, msg.to_vec())))
                    }
                    None => (Vec::new(), None),
                }
            }
            0xC0 => {
                decode_raw(body);
                (Vec::new(), None)
            }
            _ => (vec![body.to_vec()], None),
        };

        for packet in &packets {
            if packet.is_empty() {
                continue;
            }
            check_parsers(packet);
            let id = parse_symbol(packet).map(|s| s.transfer_id).ok();
            if let Some(id) = id {
                let mine = honest.as_ref().filter(|(h, _)| *h == id).map(|(_, m)| m);
                let e = clean.entry((peer, id)).or_insert_with(|| mine.cloned());
                if e.as_ref() != mine {
                    *e = None;
                }
            }
            let res = r.insert(now, peer, packet);
            if let Ok(Some(msg)) = &res {
                assert!(
                    msg.len() <= cfg.max_message,
                    "message of {} bytes",
                    msg.len()
                );
                if let Some(id) = id {
                    if let Some(Some(want)) = clean.remove(&(peer, id)) {
                        assert_eq!(msg, &want, "an honest transfer decoded wrong");
                    }
                }
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
            if r.transfer_count() == 0 {
                assert_eq!(r.buffered_bytes(), 0, "budget leaked with nothing held");
            }
            // A MORE for a held coded transfer asks for at least one symbol.
            if let Some(id) = id {
                if let Some(more) = r.nack(peer, id).and_then(|b| parse_more(&b).ok()) {
                    assert!(more.need >= 1);
                }
            }
        }
        n += 1;
        if n % 5 == 0 {
            r.expire(now);
            assert!(r.buffered_bytes() <= cfg.max_total_bytes);
        }
    }
});
