//! APRS on KISS links: the presence beacon a node sends (a standard APRS status report,
//! so iGates carry it to aprs.fi), recognising other skywave nodes' beacons, and a
//! decoder of the common APRS formats for `skywave kiss monitor`.
//!
//! Formats follow the APRS Protocol Reference 1.0.1: status reports (chapter 16),
//! position reports without and with timestamp, uncompressed and compressed (chapters
//! 8-9), and messages, acks and rejects (chapter 14). Mic-E (chapter 10) is only named.
//! The beacon is plain text: it identifies the station and carries no encryption.

use crate::net::LinkId;
use crate::wire::ax25::Callsign;
use std::fmt;

/// AX.25 destination of our beacons. `APZxxx` is the range the APRS tocall list keeps
/// for experimental software; a released version should register its own tocall.
pub const TOCALL: &str = "APZSKY";
/// Minutes between beacons unless the link URL says otherwise.
pub const DEFAULT_EVERY_MIN: u32 = 30;
/// Bounds of `aprs_every`: no fixed station beacons more often than every 10 minutes
/// (APRS practice for a channel shared with everyone), and at least once a day.
pub const EVERY_MIN_RANGE: (u32, u32) = (10, 24 * 60);
/// Digipeater path unless the link URL says otherwise: one hop through fill-in digis.
pub const DEFAULT_PATH: &str = "WIDE1-1";
/// Hex digits of the tip hash in the beacon: enough to tell forks apart by eye.
pub const TIP_HEX: usize = 8;
/// A status report's text without timestamp is at most 62 characters (spec, ch. 16).
const STATUS_MAX: usize = 62;
/// Longest network name read from someone else's beacon.
const NETWORK_MAX: usize = 16;

/// The beacon's AX.25 destination.
pub fn tocall() -> Callsign {
    Callsign::new(TOCALL, 0).unwrap_or(crate::wire::ax25::BROADCAST)
}

/// The default digipeater path.
pub fn default_path() -> Vec<Callsign> {
    DEFAULT_PATH.parse().map(|c| vec![c]).unwrap_or_default()
}

/// A skywave node's presence as its beacon states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// Network name (`main`, `regtest`).
    pub network: String,
    /// Height of its best chain.
    pub height: u64,
    /// First [`TIP_HEX`] hex digits of its tip's hash.
    pub tip: String,
}

impl Presence {
    /// The status report's information field: `>skywave <network> h=<height> tip=<8 hex>`.
    pub fn status_info(&self) -> Vec<u8> {
        let tip: String = self.tip.chars().take(TIP_HEX).collect();
        let mut text = format!("skywave {} h={} tip={tip}", self.network, self.height);
        text.truncate(STATUS_MAX);
        format!(">{text}").into_bytes()
    }

    /// Read a skywave beacon; `None` for any other information field. A DHM timestamp
    /// before the text (which another implementation may add) is allowed.
    pub fn parse(info: &[u8]) -> Option<Presence> {
        let text = std::str::from_utf8(info.strip_prefix(b">")?).ok()?;
        let text = match text.get(..7) {
            Some(ts) if ts.ends_with('z') && ts[..6].bytes().all(|b| b.is_ascii_digit()) => {
                &text[7..]
            }
            _ => text,
        };
        let mut words = text.split(' ');
        if words.next()? != "skywave" {
            return None;
        }
        let network = words.next()?;
        if network.is_empty()
            || network.len() > NETWORK_MAX
            || !network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        let height = words.next()?.strip_prefix("h=")?;
        if height.is_empty() || height.len() > 20 || !height.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let height = height.parse().ok()?;
        let tip = words.next()?.strip_prefix("tip=")?;
        if tip.len() != TIP_HEX || !tip.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Presence {
            network: network.to_string(),
            height,
            tip: tip.to_ascii_lowercase(),
        })
    }
}

/// First beacon this long after start: once the link is up, before the first sync.
pub const FIRST_BEACON_MS: u64 = 10_000;
/// A beacon that could not go (link down, our own traffic waiting) is tried again after
/// this long.
pub const RETRY_MS: u64 = 30_000;

/// When one KISS link's next presence beacon is due. The driver keeps one per link with
/// `aprs_status` and asks [`due`] with its clock.
#[derive(Clone, Debug)]
pub struct Beacon {
    /// The link.
    pub link: LinkId,
    every_ms: u64,
    next_ms: u64,
}

impl Beacon {
    /// A beacon every `every_min` minutes, the first soon after `now`.
    pub fn new(link: LinkId, every_min: u32, now: u64) -> Beacon {
        Beacon {
            link,
            every_ms: u64::from(every_min) * 60_000,
            next_ms: now.saturating_add(FIRST_BEACON_MS),
        }
    }
}

/// When the next of `beacons` is due (`u64::MAX`: none).
pub fn next_due(beacons: &[Beacon]) -> u64 {
    beacons.iter().map(|b| b.next_ms).min().unwrap_or(u64::MAX)
}

/// Bytes of an APRS frame around its information field: destination, source and a
/// two-digipeater path (7 bytes each), control and PID.
const FRAME_OVERHEAD: usize = 4 * 7 + 2;

/// The beacons due at `now`, as (link, information field). A beacon waits while the
/// core has packets queued on that link (the duty-cycle cap may be holding them, and
/// the link's own traffic goes first) and while the link's duty-cycle budget is spent;
/// one that goes is charged to that budget. It is skipped while the link is down.
pub fn due(
    beacons: &mut [Beacon],
    now: u64,
    node: &mut crate::node::Node,
) -> Vec<(LinkId, Vec<u8>)> {
    let mut out = Vec::new();
    for b in beacons.iter_mut().filter(|b| now >= b.next_ms) {
        let waiting = node.packet_stats(b.link).map(|s| s.queued);
        if waiting != Some(0) {
            b.next_ms = now.saturating_add(RETRY_MS);
            continue;
        }
        let tip = node.chain().tip();
        let p = Presence {
            network: node.chain().params().name.to_string(),
            height: tip.height,
            tip: tip.hash.to_hex(),
        };
        let info = p.status_info();
        if !node.charge_air(now, b.link, info.len() + FRAME_OVERHEAD) {
            b.next_ms = now.saturating_add(RETRY_MS);
            continue;
        }
        out.push((b.link, info));
        b.next_ms = now.saturating_add(b.every_ms);
    }
    out
}

/// An APRS packet as `kiss monitor` shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Aprs {
    /// A position report.
    Position {
        /// Degrees north (negative: south).
        lat: f64,
        /// Degrees east (negative: west).
        lon: f64,
        /// Symbol table and symbol code, e.g. `/` and `-` (a house).
        symbol: (char, char),
        /// `DDHHMMz`, `DDHHMM/` or `HHMMSSh`, when the report has one.
        timestamp: Option<String>,
        /// The station accepts APRS messages (`=` or `@`).
        messaging: bool,
        /// Text after the position.
        comment: String,
    },
    /// A status report.
    Status {
        /// `DDHHMMz`, when the report has one.
        timestamp: Option<String>,
        /// The status text.
        text: String,
    },
    /// A message to one station (or a bulletin, `BLN...`).
    Message {
        /// Addressee, trailing spaces removed.
        to: String,
        /// Message text.
        text: String,
        /// Message number, when the sender wants an ack.
        id: Option<String>,
    },
    /// An acknowledgement (`ack`) or rejection (`rej`) of a message.
    Ack {
        /// Addressee, trailing spaces removed.
        to: String,
        /// The message number acknowledged or rejected.
        id: String,
        /// `rej` rather than `ack`.
        rejected: bool,
    },
    /// A Mic-E report (its position is in the AX.25 destination; not decoded here).
    MicE,
}

impl fmt::Display for Aprs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aprs::Position {
                lat,
                lon,
                symbol,
                timestamp,
                messaging,
                comment,
            } => {
                write!(
                    f,
                    "position {:.4}{} {:.4}{} symbol {}{}",
                    lat.abs(),
                    if *lat < 0.0 { 'S' } else { 'N' },
                    lon.abs(),
                    if *lon < 0.0 { 'W' } else { 'E' },
                    symbol.0,
                    symbol.1
                )?;
                if let Some(t) = timestamp {
                    write!(f, " at {t}")?;
                }
                if *messaging {
                    f.write_str(" (messaging)")?;
                }
                if !comment.is_empty() {
                    write!(f, ": {comment}")?;
                }
                Ok(())
            }
            Aprs::Status { timestamp, text } => {
                f.write_str("status")?;
                if let Some(t) = timestamp {
                    write!(f, " at {t}")?;
                }
                write!(f, ": {text}")
            }
            Aprs::Message { to, text, id } => {
                write!(f, "message to {to}")?;
                if let Some(id) = id {
                    write!(f, " #{id}")?;
                }
                write!(f, ": {text}")
            }
            Aprs::Ack { to, id, rejected } => {
                let what = if *rejected { "reject" } else { "ack" };
                write!(f, "{what} of message #{id} to {to}")
            }
            Aprs::MicE => f.write_str("Mic-E report (position not decoded)"),
        }
    }
}

/// Whether `dst` is a destination APRS software sends to: `AP...` tocalls and the
/// generic beacon destinations (spec, ch. 4). Other UI frames are not APRS.
pub fn is_aprs_destination(dst: &Callsign) -> bool {
    let c = dst.call();
    c.starts_with("AP")
        || ["BEACON", "CQ", "QST", "ID", "GPS", "ALL"]
            .iter()
            .any(|g| c.starts_with(g))
}

/// Decode an APRS information field; `None` for formats not handled (or not APRS).
/// Printable text only: control bytes become `.` so a packet cannot drive a terminal.
pub fn decode(info: &[u8]) -> Option<Aprs> {
    let (&dti, body) = info.split_first()?;
    match dti {
        b'!' | b'=' => position(body, None, dti == b'='),
        b'/' | b'@' => {
            let ts = timestamp(body.get(..7)?)?;
            position(body.get(7..)?, Some(ts), dti == b'@')
        }
        b'>' => {
            let (timestamp, text) = match body.get(..7).and_then(timestamp) {
                Some(t) if t.ends_with('z') => (Some(t), &body[7..]),
                _ => (None, body),
            };
            Some(Aprs::Status {
                timestamp,
                text: printable(text),
            })
        }
        b':' => message(body),
        b'`' | b'\'' | 0x1c | 0x1d => Some(Aprs::MicE),
        _ => None,
    }
}

fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect()
}

/// `DDHHMMz`, `DDHHMM/` or `HHMMSSh`.
fn timestamp(b: &[u8]) -> Option<String> {
    let (digits, kind) = b.split_at_checked(6)?;
    (digits.iter().all(u8::is_ascii_digit) && matches!(kind, [b'z' | b'/' | b'h']))
        .then(|| printable(b))
}

fn position(b: &[u8], timestamp: Option<String>, messaging: bool) -> Option<Aprs> {
    let first = *b.first()?;
    let (lat, lon, symbol, rest) = if first.is_ascii_digit() || first == b' ' {
        // Uncompressed: DDMM.hhN T DDDMM.hhW C (spaces allowed for position ambiguity).
        let lat = angle(b.get(..8)?, 2, b'N', b'S')?;
        let table = *b.get(8)? as char;
        let lon = angle(b.get(9..18)?, 3, b'E', b'W')?;
        let code = *b.get(18)? as char;
        (lat, lon, (table, code), b.get(19..)?)
    } else {
        // Compressed: T YYYY XXXX C cs T, base-91 (spec, ch. 9).
        let c = b.get(..13)?;
        let y = base91(&c[1..5])?;
        let x = base91(&c[5..9])?;
        let lat = 90.0 - f64::from(y) / 380_926.0;
        let lon = -180.0 + f64::from(x) / 190_463.0;
        (lat, lon, (c[0] as char, c[9] as char), &b[13..])
    };
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    if !(symbol.0.is_ascii_graphic() && symbol.1.is_ascii_graphic()) {
        return None;
    }
    Some(Aprs::Position {
        lat,
        lon,
        symbol,
        timestamp,
        messaging,
        comment: printable(rest),
    })
}

/// `DDMM.hhN` (deg_digits 2) or `DDDMM.hhW` (3), spaces standing for ambiguous digits.
fn angle(b: &[u8], deg_digits: usize, pos: u8, neg: u8) -> Option<f64> {
    let (hemi, num) = b.split_last()?;
    let sign = match *hemi {
        h if h == pos => 1.0,
        h if h == neg => -1.0,
        _ => return None,
    };
    if num.get(deg_digits + 2) != Some(&b'.') {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(f64::from(c - b'0')),
        b' ' => Some(0.0),
        _ => None,
    };
    let mut deg = 0.0;
    for &c in &num[..deg_digits] {
        deg = deg * 10.0 + digit(c)?;
    }
    let mut min = 0.0;
    for (i, &c) in num[deg_digits..].iter().enumerate() {
        match i {
            2 => {}
            0 => min += digit(c)? * 10.0,
            1 => min += digit(c)?,
            3 => min += digit(c)? / 10.0,
            _ => min += digit(c)? / 100.0,
        }
    }
    if min >= 60.0 {
        return None;
    }
    Some(sign * (deg + min / 60.0))
}

fn base91(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        (33..=123)
            .contains(&c)
            .then(|| acc * 91 + u32::from(c - 33))
    })
}

/// `:ADDRESSEE:text{id`, the addressee padded to 9 characters.
fn message(b: &[u8]) -> Option<Aprs> {
    let to = b.get(..9)?;
    if b.get(9) != Some(&b':') {
        return None;
    }
    let to = printable(to).trim_end().to_string();
    let text = &b[10..];
    for (word, rejected) in [(&b"ack"[..], false), (&b"rej"[..], true)] {
        if let Some(id) = text.strip_prefix(word) {
            if !id.is_empty() && id.len() <= 5 && id.iter().all(u8::is_ascii_alphanumeric) {
                return Some(Aprs::Ack {
                    to,
                    id: printable(id),
                    rejected,
                });
            }
        }
    }
    let (text, id) = match text.iter().rposition(|&c| c == b'{') {
        Some(i) if text.len() - i - 1 <= 5 => {
            // `{MM}AA` (a reply-ack) keeps only the message's own number.
            let id = printable(&text[i + 1..]);
            let id = id.split('}').next().unwrap_or_default().to_string();
            (&text[..i], Some(id))
        }
        _ => (text, None),
    };
    Some(Aprs::Message {
        to,
        text: printable(text),
        id: id.filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;
    const RADIO: LinkId = 3;

    /// A regtest node whose KISS link `RADIO` came up at `T`, with this duty-cycle cap.
    fn node_on_kiss(duty_cycle_pct: u8) -> crate::node::Node {
        use crate::chain::{params, Chain};
        use crate::node::{Node, NodeConfig, PeerPolicy};
        use crate::store::Store;
        let chain = Chain::open(params::regtest(), Store::open_in_memory().unwrap()).unwrap();
        let mut n = Node::new(
            chain,
            NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                callsign: "N0CALL-1".into(),
                seed: 1,
                user_agent: "aprs-test".into(),
                peers: PeerPolicy {
                    duty_cycle_pct,
                    ..PeerPolicy::default()
                },
            },
        );
        let kiss = crate::link::kiss::KissLinkConfig::parse_url("kiss+tcp://t:1").unwrap();
        n.link_up(T, RADIO, kiss.caps());
        n
    }

    fn presence() -> Presence {
        Presence {
            network: "regtest".into(),
            height: 1234,
            tip: "0a1b2c3d4e5f".into(),
        }
    }

    #[test]
    fn the_beacon_is_a_status_report_naming_network_height_and_tip() {
        let info = presence().status_info();
        assert_eq!(info, b">skywave regtest h=1234 tip=0a1b2c3d");
        assert!(info.len() <= 1 + STATUS_MAX);
        assert_eq!(
            decode(&info),
            Some(Aprs::Status {
                timestamp: None,
                text: "skywave regtest h=1234 tip=0a1b2c3d".into()
            })
        );
        let p = Presence::parse(&info).expect("our own beacon reads back");
        assert_eq!(p.network, "regtest");
        assert_eq!(p.height, 1234);
        assert_eq!(p.tip, "0a1b2c3d");
        assert_eq!(tocall().to_string(), "APZSKY");
        assert_eq!(default_path().len(), 1);
        assert_eq!(default_path()[0].to_string(), "WIDE1-1");
    }

    #[test]
    fn beacons_come_on_time_with_the_tip_and_wait_for_the_links_own_traffic() {
        let mut n = node_on_kiss(crate::node::PeerPolicy::default().duty_cycle_pct);
        let mut b = [Beacon::new(RADIO, 30, T), Beacon::new(9, 30, T)];
        assert!(due(&mut b, T, &mut n).is_empty());
        assert_eq!(next_due(&b), T + FIRST_BEACON_MS);
        // The core's discovery beacon is queued and not yet handed to the link: ours waits.
        n.handle_timeout(T + FIRST_BEACON_MS);
        assert!(n.packet_stats(RADIO).unwrap().queued > 0);
        assert!(due(&mut b, T + FIRST_BEACON_MS, &mut n).is_empty());
        while n.poll_transmit().is_some() {}
        let at = T + FIRST_BEACON_MS + RETRY_MS;
        n.handle_timeout(at);
        while n.poll_transmit().is_some() {}
        assert_eq!(n.packet_stats(RADIO).unwrap().queued, 0);
        let air_before = n.packet_stats(RADIO).unwrap().air_ms;
        let sent = due(&mut b, at, &mut n);
        // Charged to the link's air, as the core's own frames are.
        assert!(n.packet_stats(RADIO).unwrap().air_ms > air_before + 300);
        let tip = n.chain().tip().hash.to_hex();
        let want = format!(">skywave regtest h=0 tip={}", &tip[..8]).into_bytes();
        // Link 9 is not up: no beacon for it.
        assert_eq!(sent, vec![(RADIO, want)]);
        assert_eq!(b[0].next_ms, at + 30 * 60_000);
        assert_eq!(b[1].next_ms, at + RETRY_MS);
    }

    #[test]
    fn a_beacon_waits_while_the_duty_cycle_budget_is_spent() {
        let mut n = node_on_kiss(1);
        // Spend the budget (the core's own traffic would, on a busy channel).
        let mut b = [Beacon::new(RADIO, 30, T)];
        let at = T + FIRST_BEACON_MS;
        for _ in 0..1000 {
            if !n.charge_air(at, RADIO, 1000) {
                break;
            }
        }
        assert!(due(&mut b, at, &mut n).is_empty());
        assert_eq!(b[0].next_ms, at + RETRY_MS);
        // At 1 % the budget earns 10 ms of air a second: a beacon's worth comes back.
        let later = at + 10 * 60_000;
        assert_eq!(due(&mut b, later, &mut n).len(), 1);
    }

    #[test]
    fn only_skywave_beacons_are_taken_for_skywave_nodes() {
        assert!(Presence::parse(b">092345zskywave main h=7 tip=DEADBEEF").is_some());
        for bad in [
            &b">Monitoring 146.520"[..],
            b"skywave main h=7 tip=deadbeef",
            b">skywave main h=7",
            b">skywave main h=x tip=deadbeef",
            b">skywave main h=7 tip=deadbee",
            b">skywave main h=7 tip=deadbeefz",
            b">skywave  h=7 tip=deadbeef",
            b">skywave m\xffin h=7 tip=deadbeef",
            b">skywave main h=99999999999999999999999 tip=deadbeef",
            b">skywave averyveryverylongnetworkname h=7 tip=deadbeef",
            b"",
            b">",
        ] {
            assert_eq!(
                Presence::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn decodes_positions_from_the_spec() {
        // Chapter 8: no timestamp, no messaging.
        let p = decode(b"!4903.50N/07201.75W-Test 001234").unwrap();
        let Aprs::Position {
            lat,
            lon,
            symbol,
            timestamp,
            messaging,
            comment,
        } = p.clone()
        else {
            panic!("{p:?}")
        };
        assert!((lat - 49.058_333).abs() < 1e-5, "{lat}");
        assert!((lon + 72.029_166).abs() < 1e-5, "{lon}");
        assert_eq!(symbol, ('/', '-'));
        assert_eq!(timestamp, None);
        assert!(!messaging);
        assert_eq!(comment, "Test 001234");
        assert_eq!(
            p.to_string(),
            "position 49.0583N 72.0292W symbol /-: Test 001234"
        );
        // With timestamp and messaging.
        let p = decode(b"@092345z4903.50N/07201.75W>Test1234").unwrap();
        assert!(
            matches!(p, Aprs::Position { messaging: true, timestamp: Some(ref t), .. } if t == "092345z")
        );
        // Compressed (chapter 9's example): 49.5 N, 72.75 W.
        let p = decode(b"=/5L!!<*e7>7P[").unwrap();
        let Aprs::Position {
            lat, lon, symbol, ..
        } = p
        else {
            panic!("{p:?}")
        };
        assert!((lat - 49.5).abs() < 1e-3, "{lat}");
        assert!((lon + 72.75).abs() < 1e-3, "{lon}");
        assert_eq!(symbol, ('/', '>'));
        // Ambiguity: spaces for the hundredths.
        assert!(decode(b"!4903.  N/07201.  W-").is_some());
    }

    #[test]
    fn decodes_status_messages_and_acks() {
        assert_eq!(
            decode(b">092345zNet Control Center"),
            Some(Aprs::Status {
                timestamp: Some("092345z".into()),
                text: "Net Control Center".into()
            })
        );
        assert_eq!(
            decode(b":WU2Z     :Testing{003"),
            Some(Aprs::Message {
                to: "WU2Z".into(),
                text: "Testing".into(),
                id: Some("003".into())
            })
        );
        assert_eq!(
            decode(b":BLN1     :Snow expected"),
            Some(Aprs::Message {
                to: "BLN1".into(),
                text: "Snow expected".into(),
                id: None
            })
        );
        assert_eq!(
            decode(b":KB2ICI-14:ack003"),
            Some(Aprs::Ack {
                to: "KB2ICI-14".into(),
                id: "003".into(),
                rejected: false
            })
        );
        assert_eq!(
            decode(b":KB2ICI-14:rej003").map(|a| a.to_string()),
            Some("reject of message #003 to KB2ICI-14".into())
        );
        assert_eq!(
            decode(b":N0CALL   :hi\x1b[2J{7").map(|a| a.to_string()),
            Some("message to N0CALL #7: hi.[2J".into())
        );
        assert_eq!(decode(b"`(_fn\"Oj/]"), Some(Aprs::MicE));
    }

    #[test]
    fn garbage_is_not_aprs_and_never_panics() {
        for bad in [
            &b""[..],
            b"!",
            b"!4903.50N/0720",
            b"!4963.50N/07201.75W-",
            b"!4903.50X/07201.75W-",
            b"@0923",
            b"/092345x4903.50N/07201.75W-",
            b":SHORT:hi",
            b"=/\x01\x01\x01\x01<*e7>7P[",
            b"\x00\xff",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // Every prefix of valid packets, and arbitrary bytes after a DTI.
        for good in [
            &b"!4903.50N/07201.75W-Test"[..],
            b"=/5L!!<*e7>7P[",
            b":WU2Z     :Testing{003",
            b"@092345z4903.50N/07201.75W>",
        ] {
            for i in 0..good.len() {
                let _ = decode(&good[..i]);
            }
        }
        for dti in [b'!', b'=', b'/', b'@', b'>', b':'] {
            for n in 0..40u8 {
                let mut v = vec![dti];
                v.extend((0..n).map(|i| i.wrapping_mul(97) ^ n));
                let _ = decode(&v);
            }
        }
    }

    #[test]
    fn aprs_destinations() {
        for d in ["APZSKY", "APRS", "APDW16", "BEACON", "CQ", "ID"] {
            assert!(is_aprs_destination(&d.parse().unwrap()), "{d}");
        }
        for d in ["SKYWAV", "N0CALL", "WIDE1"] {
            assert!(!is_aprs_destination(&d.parse().unwrap()), "{d}");
        }
    }
}
