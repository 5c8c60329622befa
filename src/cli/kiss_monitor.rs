//! `skywave kiss monitor URL`: print every frame a TNC hears, like axlisten, and decode
//! skywave packets and APRS (positions, status reports, messages). Listen-only: nothing is sent to the TNC, not even parameters.

use crate::link::aprs;
use crate::link::kiss::{open_transport, KissLinkConfig};
use crate::link::LinkUrl;
use crate::wire::ax25::{self, Ax25Error, Callsign, FrameKind};
use crate::wire::fountain;
use crate::wire::frag::{self, Packet};
use crate::wire::kiss::{KissCommand, KissDecoder};
use crate::wire::message::{InvItem, InvKind, Message};
use crate::wire::{envelope, Envelope};
use anyhow::{bail, Result};
use serde::Serialize;
use tokio::io::AsyncReadExt;

/// One heard frame, as printed.
#[derive(Debug, Serialize)]
pub struct Heard {
    /// Wall-clock time, `HH:MM:SS.mmm` UTC.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// KISS port.
    pub port: u8,
    /// Source callsign.
    pub src: String,
    /// Destination callsign.
    pub dst: String,
    /// Digipeaters, `*` marking those that have repeated the frame.
    pub via: Vec<String>,
    /// Frame type: UI, I, RR, SABM, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Protocol id (I and UI frames).
    pub pid: Option<u8>,
    /// Information field length.
    pub len: usize,
    /// Information field, printable ASCII with '.' for anything else.
    pub info: String,
    /// Information field in hex.
    pub info_hex: String,
    /// What the info field is as a skywave packet, if it is one.
    pub skywave: Option<String>,
    /// What the info field is as an APRS packet, if it is one.
    pub aprs: Option<String>,
}

/// Run the monitor until Ctrl-C, or until `count` frames were printed.
pub fn run(url: &str, count: Option<u64>, as_json: bool) -> Result<()> {
    let link = LinkUrl::parse(url).map_err(anyhow::Error::msg)?;
    let Some(cfg) = link.get::<KissLinkConfig>().cloned() else {
        bail!("'{link}' is not a KISS link (use kiss+tcp:// or kiss+serial://)");
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        tokio::select! {
            r = monitor(&cfg, count, as_json) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn monitor(cfg: &KissLinkConfig, count: Option<u64>, as_json: bool) -> Result<()> {
    let mut io = open_transport(&cfg.transport)
        .await
        .map_err(anyhow::Error::msg)?;
    // On stderr even with --json: scripts (and tests) wait for it before transmitting.
    eprintln!("listening on {} (KISS port {})", cfg.transport, cfg.port);
    let mut dec = KissDecoder::with_max_frame(ax25::MAX_FRAME_LEN);
    let mut buf = vec![0u8; 4096];
    let mut printed = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            bail!("KISS TNC {} closed the connection", cfg.transport);
        }
        dec.push(&buf[..n]);
        while let Some(item) = dec.next_frame() {
            let f = match item {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!("malformed KISS frame: {e}");
                    continue;
                }
            };
            if f.port != cfg.port || f.kiss_command() != Some(KissCommand::Data) {
                continue;
            }
            let now = crate::driver::now_ms();
            match describe(now, f.port, &f.payload) {
                Ok(h) => {
                    if as_json {
                        println!("{}", serde_json::to_string(&h)?);
                    } else {
                        print_text(&h);
                    }
                }
                Err(e) => {
                    if as_json {
                        let v = serde_json::json!({
                            "time": clock(now), "time_ms": now, "port": f.port,
                            "error": e, "raw_hex": hex::encode(&f.payload),
                        });
                        println!("{v}");
                    } else {
                        println!("{} port {} malformed AX.25: {e}", clock(now), f.port);
                    }
                }
            }
            printed += 1;
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
    }
}

fn print_text(h: &Heard) {
    let mut path = format!("{}>{}", h.src, h.dst);
    for v in &h.via {
        path.push(',');
        path.push_str(v);
    }
    let pid = h.pid.map(|p| format!(" pid={p:02X}")).unwrap_or_default();
    println!(
        "{} port {} {path} {}{pid} len={}",
        h.time, h.port, h.kind, h.len
    );
    if let Some(s) = &h.skywave {
        println!("  skywave {s}");
    }
    if let Some(s) = &h.aprs {
        println!("  APRS {s}");
    }
    if h.len > 0 {
        println!("  {}", h.info);
    }
}

/// `HH:MM:SS.mmm` UTC from milliseconds since the epoch.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Decode one AX.25 frame (any type) for display.
pub fn describe(now_ms: u64, port: u8, frame: &[u8]) -> Result<Heard, String> {
    let (addrs, rest) = addresses(frame)?;
    let rest = rest
        .get(1..)
        .ok_or_else(|| "frame ends before the control byte".to_string())?;
    // decode_ui knows the frame types; the address field is ours to show for all of them.
    let kind = match ax25::decode_ui(frame) {
        Ok(_) => "UI".to_string(),
        Err(Ax25Error::NotUi(k)) => k.name().to_string(),
        Err(e) => return Err(e.to_string()),
    };
    let has_pid = kind == "UI" || kind == FrameKind::Information.name();
    let (pid, info) = if has_pid {
        match rest.split_first() {
            Some((&p, info)) => (Some(p), info),
            None => return Err(format!("{kind} frame without PID")),
        }
    } else {
        (None, rest)
    };
    let skywave = if pid == Some(ax25::PID_NO_L3) {
        skywave_summary(info)
    } else {
        None
    };
    // APRS goes to tocalls and group destinations; Mic-E hides its latitude in the
    // destination, so its data type identifier is what marks it.
    let aprs = if kind == "UI" && pid == Some(ax25::PID_NO_L3) && skywave.is_none() {
        let mic_e = matches!(info.first(), Some(b'`' | b'\'' | 0x1c | 0x1d));
        (aprs::is_aprs_destination(&addrs[0].0) || mic_e)
            .then(|| aprs::decode(info))
            .flatten()
            .map(|a| a.to_string())
    } else {
        None
    };
    Ok(Heard {
        time: clock(now_ms),
        time_ms: now_ms,
        port,
        dst: addrs[0].0.to_string(),
        src: addrs[1].0.to_string(),
        via: addrs[2..]
            .iter()
            .map(|(c, h)| format!("{c}{}", if *h { "*" } else { "" }))
            .collect(),
        kind,
        pid,
        len: info.len(),
        info: info
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect(),
        info_hex: hex::encode(info),
        skywave,
        aprs,
    })
}

type Addr = (Callsign, bool);

/// The address field: (callsign, C/H bit) for dst, src, digipeaters; and the rest.
fn addresses(frame: &[u8]) -> Result<(Vec<Addr>, &[u8]), String> {
    let mut out = Vec::with_capacity(2);
    let mut rest = frame;
    loop {
        let (chunk, tail) = rest
            .split_first_chunk::<7>()
            .ok_or_else(|| format!("truncated address field ({} bytes)", frame.len()))?;
        rest = tail;
        let (c, high, last) = Callsign::from_address_bytes(chunk).map_err(|e| e.to_string())?;
        out.push((c, high));
        if last {
            break;
        }
        if out.len() == 2 + ax25::MAX_DIGIS {
            return Err("too many digipeaters".into());
        }
    }
    if out.len() < 2 {
        return Err("address field ends after one address".into());
    }
    Ok((out, rest))
}

/// What a skywave packet is, in a few words; `None` if it is not one.
pub fn skywave_summary(info: &[u8]) -> Option<String> {
    // Coded transfers (ADR 0014) have tags of their own, unknown to `frag::parse`.
    if let Ok(s) = fountain::parse_symbol(info) {
        let which = if s.index < s.count {
            format!("source symbol {}/{}", u64::from(s.index) + 1, s.count)
        } else {
            format!("repair symbol {} (of {} source)", s.index, s.count)
        };
        return Some(format!(
            "{which} of coded transfer {} ({} bytes, message {} bytes)",
            s.transfer_id,
            s.payload.len(),
            s.len
        ));
    }
    if let Ok(m) = fountain::parse_more(info) {
        return Some(format!(
            "more: transfer {} lacks {} symbols, {} heard",
            m.transfer_id, m.need, m.got
        ));
    }
    match frag::parse(info).ok()? {
        Packet::Whole(msg) => envelope::decode(msg).ok().map(|e| message_summary(&e)),
        Packet::Fragment(f) => Some(format!(
            "fragment {}/{} of transfer {} ({} bytes)",
            u64::from(f.index) + 1,
            f.count,
            f.transfer_id,
            f.payload.len()
        )),
        Packet::Nack(n) => Some(if n.ranges.is_empty() {
            format!("ack of transfer {}", n.transfer_id)
        } else {
            let missing: u64 = n
                .ranges
                .iter()
                .map(|r| u64::from(r.end.saturating_sub(r.start)))
                .sum();
            format!("nack of transfer {}: {missing} missing", n.transfer_id)
        }),
    }
}

fn items(v: &[InvItem]) -> String {
    let blocks = v.iter().filter(|i| i.kind == InvKind::Block).count();
    let txs = v.len() - blocks;
    let mut parts = Vec::new();
    if blocks > 0 || txs == 0 {
        parts.push(format!(
            "{blocks} block{}",
            if blocks == 1 { "" } else { "s" }
        ));
    }
    if txs > 0 {
        parts.push(format!("{txs} tx"));
    }
    parts.join(" ")
}

fn short(h: &impl std::fmt::Display) -> String {
    h.to_string().chars().take(16).collect()
}

fn message_summary(e: &Envelope) -> String {
    let name = e.message.name();
    let detail = match &e.message {
        Message::Hello(h) => format!(
            "network={} height={} callsign={} agent={}",
            hex::encode(h.network),
            h.height,
            if h.callsign.is_empty() {
                "-"
            } else {
                &h.callsign
            },
            h.user_agent
        ),
        Message::Ping(n) | Message::Pong(n) => n.to_string(),
        Message::Ack(ids) => format!("{} ids", ids.len()),
        Message::Auth(a) => format!("answers nonce {:016x}", a.seen),
        Message::GetAddr => String::new(),
        Message::Addr(v) => format!("{} addresses", v.len()),
        Message::CompactBlock(c) => format!(
            "height={} short_ids={} hash={}",
            c.header.height,
            c.short_ids.len(),
            short(&c.header.hash())
        ),
        Message::GetBlockTxn(g) => format!("{} of {}", g.indexes.len(), short(&g.block)),
        Message::BlockTxn(b) => format!("{} txs of {}", b.txs.len(), short(&b.block)),
        Message::Inv(v) | Message::GetData(v) | Message::NotFound(v) => items(v),
        Message::GetHeaders(g) => format!("locator={} max={}", g.locator.len(), g.max),
        Message::Headers(v) => match (v.first(), v.last()) {
            (Some(a), Some(b)) => {
                format!("{} (height {}-{})", v.len(), a.height, b.height)
            }
            _ => "0".into(),
        },
        Message::Block(b) => format!(
            "height={} txs={} hash={}",
            b.header.height,
            b.txs.len(),
            short(&b.hash())
        ),
        Message::Tx(t) => format!("id={}", short(&t.id())),
        Message::Reject(r) => format!("{:?} {}", r.code, r.reason),
    };
    format!("{name} {detail} (msg {})", e.msg_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ax25::{encode_ui, BROADCAST};

    fn call(s: &str) -> Callsign {
        s.parse().expect("callsign")
    }

    #[test]
    fn describes_ui_frames_with_path_and_printable_info() {
        let mut f = encode_ui(
            &call("N0CALL-1"),
            &BROADCAST,
            &[call("WIDE1-1"), call("WIDE2-1")],
            b"hi\x00there",
        )
        .expect("encode");
        f[20] |= 0x80; // WIDE1-1 has repeated it
        let h = describe(3_723_004, 0, &f).expect("describe");
        assert_eq!((h.src.as_str(), h.dst.as_str()), ("N0CALL-1", "SKYWAV"));
        assert_eq!(h.via, vec!["WIDE1-1*", "WIDE2-1"]);
        assert_eq!((h.kind.as_str(), h.pid, h.len), ("UI", Some(0xF0), 8));
        assert_eq!(h.info, "hi.there");
        assert_eq!(h.time, "01:02:03.004");
        assert_eq!(h.skywave, None);
        assert_eq!(h.aprs, None);
    }

    #[test]
    fn decodes_aprs_position_status_and_messages() {
        let dst = call("APDW16");
        for (info, want) in [
            (
                &b"!4903.50N/07201.75W-Test"[..],
                "position 49.0583N 72.0292W symbol /-: Test",
            ),
            (
                b">skywave regtest h=3 tip=0a1b2c3d",
                "status: skywave regtest h=3 tip=0a1b2c3d",
            ),
            (b":N0CALL-2 :hello{42", "message to N0CALL-2 #42: hello"),
        ] {
            let f = encode_ui(&call("N0CALL-1"), &dst, &[call("WIDE1-1")], info).expect("encode");
            let h = describe(0, 0, &f).expect("describe");
            assert_eq!(h.aprs.as_deref(), Some(want));
        }
        // The same text to a skywave destination is not APRS.
        let f = encode_ui(&call("N0CALL-1"), &BROADCAST, &[], b">hello").expect("encode");
        assert_eq!(describe(0, 0, &f).expect("describe").aprs, None);
    }

    #[test]
    fn describes_connected_mode_frames_and_refuses_garbage() {
        let mut sabm = call("N0CALL-2").to_address_bytes(true, false).to_vec();
        sabm.extend(call("N0CALL-1").to_address_bytes(false, true));
        sabm.push(0x3F);
        let h = describe(0, 0, &sabm).expect("describe");
        assert_eq!((h.kind.as_str(), h.pid, h.len), ("SABM", None, 0));
        assert!(describe(0, 0, &[0x01, 0x02]).is_err());
        assert!(describe(0, 0, &sabm[..10]).is_err());
    }

    #[test]
    fn decodes_skywave_packets() {
        let net = [0x3c, 0x9a, 0x33, 0xf0];
        let inv = Message::Inv(vec![InvItem {
            kind: InvKind::Block,
            hash: Default::default(),
        }]);
        let mut whole = vec![frag::TAG_WHOLE];
        whole.extend(envelope::encode(net, 5, &inv));
        let s = skywave_summary(&whole).expect("skywave");
        assert!(s.starts_with("inv 1 block"), "{s}");
        let parts = frag::split(7, &vec![0u8; 300], 64).expect("split");
        let s = skywave_summary(&parts[2]).expect("fragment");
        assert!(
            s.starts_with(&format!("fragment 3/{} of transfer 7", parts.len())),
            "{s}"
        );
        // Coded transfers: source and repair symbols, and requests for more.
        let e = fountain::Encoder::new(9, &[5u8; 300], 64).expect("coded");
        let s = skywave_summary(&e.packet(1)).expect("symbol");
        assert!(
            s.starts_with(&format!(
                "source symbol 2/{} of coded transfer 9",
                e.count()
            )),
            "{s}"
        );
        let mut repair = e.packet(e.count() + 3);
        frag::set_over(&mut repair, false);
        let s = skywave_summary(&repair).expect("repair symbol");
        assert!(
            s.starts_with(&format!(
                "repair symbol {} (of {} source)",
                e.count() + 3,
                e.count()
            )),
            "{s}"
        );
        let more = fountain::encode_more(fountain::More {
            transfer_id: 9,
            need: 2,
            got: 4,
        });
        let s = skywave_summary(&more).expect("more");
        assert_eq!(s, "more: transfer 9 lacks 2 symbols, 4 heard");
        assert_eq!(skywave_summary(&[fountain::TAG_SYMBOL, 1, 2]), None);
        assert_eq!(skywave_summary(b"!4903.50N/07201.75W-"), None);
        assert_eq!(skywave_summary(&[frag::TAG_WHOLE, 1, 2, 3]), None);
    }
}
