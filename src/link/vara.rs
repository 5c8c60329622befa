//! VARA HF/FM links: the modem is driven over its two TCP ports, commands on one
//! (CR-terminated lines, each answered `OK` or `WRONG`) and session data on the other
//! (command port + 1). Sessions are ARQ connections to one station at a time, opened on
//! need (periodic sync, or outbox items waiting) and closed when idle or too long.
//!
//! The data port carries envelopes (packets of the core's packet layer) with the usual
//! stream framing ([`crate::wire::stream`]). Everything the modem sends is untrusted:
//! lines are length-capped and parsed by [`parse_modem_line`], which never panics.
//!
//! `vara+tcp://host:port?...` takes query parameters, see [`VaraLinkConfig::parse_url`].

use super::{LinkCaps, LinkCommand, LinkContext, LinkEvent, LinkId, PeerId};
use crate::wire::envelope;
use crate::wire::frag;
use crate::wire::message::Message;
use crate::wire::stream::{frame, StreamDecoder};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Seconds without payload before a session is hung up, when the URL gives no `idle`.
pub const DEFAULT_IDLE_S: u64 = 60;
/// Session time limit in seconds, when the URL gives no `max`.
pub const DEFAULT_MAX_S: u64 = 600;
/// Periodic sync interval in seconds, when the URL gives no `sync`.
pub const DEFAULT_SYNC_S: u64 = 1800;
/// Command-port silence (seconds) after which the modem counts as dead. VARA sends
/// `IAMALIVE` every 60 s, so two missed ones.
pub const DEFAULT_ALIVE_S: u64 = 120;
/// Bit rate reported before the modem has said anything: low, so the core does not
/// flood a session that may turn out slow (VARA HF goes down to ~50 bit/s).
pub const INITIAL_BITRATE: u64 = 500;
/// Longest line accepted from the modem; longer input is skipped up to the next CR.
pub const MAX_LINE: usize = 1024;
/// VARA HF bandwidths accepted in `bw`.
pub const BANDWIDTHS: [u16; 3] = [500, 2300, 2750];

/// Which VARA program the link drives. They share the TCP interface but not every
/// command: `BWnnnn` and `P2P SESSION` are VARA HF's (EA5HVK, VARA TNC commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaraModem {
    /// VARA HF: sessions default to a Winlink session, so `P2P SESSION` is sent.
    Hf,
    /// VARA FM: no session-kind or bandwidth command.
    Fm,
}

/// Longest wait for a TCP connect to the modem.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one command line to be written.
const CMD_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Modem reconnect backoff; a modem connection that lasted `BACKOFF_RESET` resets it.
const MODEM_BACKOFF_MIN: Duration = Duration::from_secs(1);
const MODEM_BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// First dial after start (when a peer is set): soon, but after the modem settled.
const FIRST_SYNC_DELAY: Duration = Duration::from_secs(2);
/// A CONNECT that has neither connected nor failed by then is aborted. VARA HF tries
/// for a while on a bad channel, so this is generous.
const DIAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Failed-dial backoff bounds.
const DIAL_BACKOFF_MIN: Duration = Duration::from_secs(5);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Pause after a session before the next dial, so both ends settle.
const REDIAL_PAUSE: Duration = Duration::from_secs(3);
/// Longest wait for the modem's buffer to drain before hanging up with ABORT.
const DRAIN_WAIT: Duration = Duration::from_secs(90);
/// Longest wait for DISCONNECTED after DISCONNECT before ABORT.
const DISCONNECT_WAIT: Duration = Duration::from_secs(30);
/// The two sockets are not ordered: data may still arrive after DISCONNECTED.
const TAIL_READ: Duration = Duration::from_secs(2);
/// Highest bit rate believed from a BITRATE line: VARA FM wide tops out near 25 kbit/s,
/// so anything far above is a broken or hostile modem.
pub const MAX_VARA_BPS: u64 = 100_000;
/// Most air time held in the modem's buffer at once.
const BUFFER_AIR_S: u64 = 10;
/// ... but never less than this many bytes.
const MIN_BUFFER: u64 = 1024;
/// Without a BUFFER report for this long, bytes written are assumed to leave at the bit
/// rate, so a modem that reports rarely cannot stall us for good.
const REPORT_GRACE: Duration = Duration::from_secs(5);
/// A BUFFER report may not yet count bytes written this recently: the data socket and
/// the command socket are not ordered, and a busy modem reads its data port late.
const REPORT_LAG: Duration = Duration::from_secs(1);
/// Bytes queued in the link before it stops taking commands (back-pressure).
const OUT_QUEUE_BYTES: usize = 64 * 1024;
/// Timer resolution of the session logic.
const TICK: Duration = Duration::from_millis(100);

/// A VARA link as given by its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaraLinkConfig {
    /// Modem host.
    pub host: String,
    /// Command port (VARA default 8300).
    pub cmd_port: u16,
    /// Data port (command port + 1 unless given).
    pub data_port: u16,
    /// Station to dial; without it the link only accepts calls.
    pub peer: Option<String>,
    /// VARA HF or VARA FM (`modem=`); HF unless the URL says otherwise.
    pub modem: VaraModem,
    /// VARA HF bandwidth to set (`BW500` etc.); `None` sends nothing.
    pub bw: Option<u16>,
    /// Hang up after this many seconds without payload.
    pub idle_s: u64,
    /// Hang up after a session has lasted this many seconds.
    pub max_s: u64,
    /// Dial the peer at least this often (seconds).
    pub sync_s: u64,
    /// Command-port silence (seconds) that means a dead modem (hidden; for tests).
    pub alive_s: u64,
}

/// Callsigns as VARA takes them: letters, digits, `-` and `/`, stored uppercase.
fn callsign(s: &str) -> Option<String> {
    let ok = (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/');
    ok.then(|| s.to_ascii_uppercase())
}

impl VaraLinkConfig {
    /// Defaults for a modem at `host:cmd_port`.
    pub fn new(host: &str, cmd_port: u16) -> VaraLinkConfig {
        VaraLinkConfig {
            host: host.to_string(),
            cmd_port,
            data_port: cmd_port.wrapping_add(1),
            peer: None,
            modem: VaraModem::Hf,
            bw: None,
            idle_s: DEFAULT_IDLE_S,
            max_s: DEFAULT_MAX_S,
            sync_s: DEFAULT_SYNC_S,
            alive_s: DEFAULT_ALIVE_S,
        }
    }

    /// Parse `vara+tcp://host:port?peer=CALL&bw=2300&...`.
    ///
    /// Parameters: `peer` (callsign to dial), `modem` (`hf` or `fm`), `bw` (500, 2300 or
    /// 2750, VARA HF only), `data` (data port), `idle`, `max`, `sync` (seconds). Errors
    /// name the offending parameter.
    pub fn parse_url(s: &str) -> Result<VaraLinkConfig, String> {
        let url = url::Url::parse(s).map_err(|e| format!("link '{s}': {e}"))?;
        if url.scheme() != "vara+tcp" {
            return Err(format!("link '{s}': not a VARA scheme '{}'", url.scheme()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("link '{s}': expected vara+tcp://host:port"))?;
        let port = url
            .port()
            .ok_or_else(|| format!("link '{s}': missing command port (vara+tcp://host:8300)"))?;
        if !matches!(url.path(), "" | "/") {
            return Err(format!("link '{s}': unexpected path '{}'", url.path()));
        }
        let mut cfg = VaraLinkConfig::new(host, port);
        let mut data = None;
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in url.query_pairs() {
            if seen.iter().any(|x| *x == k) {
                return Err(format!("link '{s}': parameter '{k}' given twice"));
            }
            seen.push(k.to_string());
            let bad = |why: &str| format!("link '{s}': bad {k}='{v}': {why}");
            let secs = |lo: u64, hi: u64| {
                v.parse::<u64>()
                    .ok()
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(|| bad(&format!("expected seconds, {lo}-{hi}")))
            };
            match k.as_ref() {
                "peer" => cfg.peer = Some(callsign(&v).ok_or_else(|| bad("not a callsign"))?),
                "modem" => {
                    cfg.modem = match v.to_ascii_lowercase().as_str() {
                        "hf" => VaraModem::Hf,
                        "fm" => VaraModem::Fm,
                        _ => return Err(bad("expected hf (VARA HF) or fm (VARA FM)")),
                    }
                }
                "bw" => {
                    cfg.bw = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|b| BANDWIDTHS.contains(b))
                            .ok_or_else(|| bad("expected 500, 2300 or 2750"))?,
                    )
                }
                "data" => {
                    data = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| bad("expected a TCP port"))?,
                    )
                }
                "idle" => cfg.idle_s = secs(1, 86_400)?,
                "max" => cfg.max_s = secs(1, 86_400)?,
                "sync" => cfg.sync_s = secs(10, 30 * 86_400)?,
                "alive" => cfg.alive_s = secs(1, 3_600)?,
                _ => {
                    return Err(format!(
                        "link '{s}': unknown parameter '{k}' (known: peer, modem, bw, data, idle, \
                     max, sync)"
                    ))
                }
            }
        }
        if cfg.modem == VaraModem::Fm && cfg.bw.is_some() {
            return Err(format!(
                "link '{s}': bw is a VARA HF setting; VARA FM sets its bandwidth in the program"
            ));
        }
        cfg.data_port = match data {
            Some(d) => d,
            None => port.checked_add(1).ok_or_else(|| {
                format!("link '{s}': command port {port} leaves no room for the data port")
            })?,
        };
        Ok(cfg)
    }

    /// What the link reports to the core at `bitrate` bit/s.
    pub fn caps(bitrate: u64) -> LinkCaps {
        LinkCaps {
            mtu: envelope::MAX_MESSAGE_LEN,
            bitrate_bps: bitrate,
            half_duplex: true,
            broadcast: false,
            text_only: false,
            connection_oriented: true,
            radio: true,
            blocks: true,
            carrier_sense: true,
            slot_ms: 0,
        }
    }
}

/// Canonical form: defaults are omitted, parameters in a fixed order.
impl fmt::Display for VaraLinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vara+tcp://{}:{}", self.host, self.cmd_port)?;
        let mut q: Vec<String> = Vec::new();
        if Some(self.data_port) != self.cmd_port.checked_add(1) {
            q.push(format!("data={}", self.data_port));
        }
        if let Some(p) = &self.peer {
            q.push(format!("peer={p}"));
        }
        if self.modem == VaraModem::Fm {
            q.push("modem=fm".into());
        }
        if let Some(b) = self.bw {
            q.push(format!("bw={b}"));
        }
        for (name, v, d) in [
            ("idle", self.idle_s, DEFAULT_IDLE_S),
            ("max", self.max_s, DEFAULT_MAX_S),
            ("sync", self.sync_s, DEFAULT_SYNC_S),
            ("alive", self.alive_s, DEFAULT_ALIVE_S),
        ] {
            if v != d {
                q.push(format!("{name}={v}"));
            }
        }
        if !q.is_empty() {
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

/// One line from the modem's command port.
#[derive(Clone, Debug, PartialEq)]
pub enum ModemLine {
    /// The last command was accepted.
    Ok,
    /// The last command was refused.
    Wrong,
    /// A session opened (`CONNECTED src dst [bw]`).
    Connected {
        /// Calling station.
        src: String,
        /// Called station.
        dst: String,
        /// Session bandwidth, if given.
        bw: Option<u32>,
    },
    /// The session ended.
    Disconnected,
    /// Transmitter keyed or released.
    Ptt(bool),
    /// Bytes waiting in the modem's transmit buffer.
    Buffer(u64),
    /// An incoming call is being set up.
    Pending,
    /// The incoming call did not complete.
    CancelPending,
    /// The channel is occupied (or free again).
    Busy(bool),
    /// Registration status of a callsign.
    Registered(String),
    /// Keep-alive.
    IAmAlive,
    /// The modem has no sound card.
    MissingSoundcard,
    /// Signal-to-noise ratio (dB).
    Sn(f32),
    /// Current speed: level and net bit rate.
    Bitrate {
        /// Speed level (mode number).
        level: i32,
        /// Net bit rate.
        bps: u64,
    },
    /// Modem version.
    Version(String),
    /// `LINK REGISTERED` (true) or `LINK UNREGISTERED`.
    Link(bool),
    /// A well-formed line this link does not know (newer VARA versions add some).
    Unknown(String),
}

/// Parse one command-port line (without its CR). Total: every input gives `Ok` or an
/// error saying what is wrong; nothing here panics.
pub fn parse_modem_line(line: &str) -> Result<ModemLine, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line of {} bytes (limit {MAX_LINE})", line.len()));
    }
    if let Some(c) = line.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!("unexpected character {c:?}"));
    }
    let mut words = line.split_ascii_whitespace();
    let Some(first) = words.next() else {
        return Err("empty line".into());
    };
    let rest: Vec<&str> = words.collect();
    let word = first.to_ascii_uppercase();
    let on_off = |what: &str| match rest.as_slice() {
        [x] if x.eq_ignore_ascii_case("ON") => Ok(true),
        [x] if x.eq_ignore_ascii_case("OFF") => Ok(false),
        _ => Err(format!("{what} expects ON or OFF: '{line}'")),
    };
    let bare = |l: ModemLine| {
        if rest.is_empty() {
            Ok(l)
        } else {
            Err(format!("unexpected arguments: '{line}'"))
        }
    };
    match word.as_str() {
        "OK" => bare(ModemLine::Ok),
        "WRONG" => bare(ModemLine::Wrong),
        "DISCONNECTED" => bare(ModemLine::Disconnected),
        "PENDING" => bare(ModemLine::Pending),
        "CANCELPENDING" => bare(ModemLine::CancelPending),
        "IAMALIVE" => bare(ModemLine::IAmAlive),
        "CONNECTED" => {
            let call = |s: &str| callsign(s).ok_or_else(|| format!("bad callsign in '{line}'"));
            match rest.as_slice() {
                [src, dst] => Ok(ModemLine::Connected {
                    src: call(src)?,
                    dst: call(dst)?,
                    bw: None,
                }),
                [src, dst, bw] => Ok(ModemLine::Connected {
                    src: call(src)?,
                    dst: call(dst)?,
                    bw: Some(
                        bw.parse()
                            .map_err(|_| format!("bad bandwidth in '{line}'"))?,
                    ),
                }),
                _ => Err(format!("CONNECTED expects src dst [bw]: '{line}'")),
            }
        }
        "PTT" => on_off("PTT").map(ModemLine::Ptt),
        "BUSY" => on_off("BUSY").map(ModemLine::Busy),
        "BUFFER" => match rest.as_slice() {
            [n] => n
                .parse()
                .map(ModemLine::Buffer)
                .map_err(|_| format!("bad BUFFER count: '{line}'")),
            _ => Err(format!("BUFFER expects a count: '{line}'")),
        },
        "REGISTERED" => match rest.as_slice() {
            [c] => callsign(c)
                .map(ModemLine::Registered)
                .ok_or_else(|| format!("bad callsign in '{line}'")),
            _ => Err(format!("REGISTERED expects a callsign: '{line}'")),
        },
        "MISSING" => match rest.as_slice() {
            [x] if x.eq_ignore_ascii_case("SOUNDCARD") => Ok(ModemLine::MissingSoundcard),
            _ => Ok(ModemLine::Unknown(line.to_string())),
        },
        "SN" => match rest.as_slice() {
            [v] => v
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .map(ModemLine::Sn)
                .ok_or_else(|| format!("bad SN value: '{line}'")),
            _ => Err(format!("SN expects a value: '{line}'")),
        },
        "BITRATE" => {
            // Not in the 2022 command reference; VARA FM 4.3.8 and recent VARA HF send
            // `BITRATE (level)  nnnn bps TX` (two spaces, a direction word). The level in
            // parentheses, the unit and a trailing direction word are all optional here.
            let (level, rest) = match rest.split_first() {
                Some((l, r)) if l.starts_with('(') => {
                    let n = l
                        .strip_prefix('(')
                        .and_then(|x| x.strip_suffix(')'))
                        .and_then(|x| x.parse::<i32>().ok())
                        .ok_or_else(|| format!("bad BITRATE level: '{line}'"))?;
                    (n, r)
                }
                _ => (0, rest.as_slice()),
            };
            let (bps, tail) = match rest.split_first() {
                Some((b, t)) => (b, t),
                None => return Err(format!("BITRATE expects (level) nnnn bps: '{line}'")),
            };
            // The number is the modem's word, and it feeds the write throttle and the
            // core's air-time sums: a rate no VARA mode reaches is a bad line.
            let bps = bps
                .parse::<u64>()
                .ok()
                .filter(|b| *b <= MAX_VARA_BPS)
                .ok_or_else(|| format!("bad BITRATE value: '{line}'"))?;
            match tail {
                [] => {}
                [unit, dir @ ..]
                    if unit.eq_ignore_ascii_case("bps")
                        && dir.len() <= 1
                        && dir.iter().all(|d| {
                            d.len() <= 8 && d.bytes().all(|b| b.is_ascii_alphabetic())
                        }) => {}
                [unit, ..] if !unit.eq_ignore_ascii_case("bps") => {
                    return Err(format!("bad BITRATE unit: '{line}'"))
                }
                _ => {
                    return Err(format!(
                        "BITRATE expects (level) nnnn bps [TX|RX]: '{line}'"
                    ))
                }
            }
            Ok(ModemLine::Bitrate { level, bps })
        }
        "VERSION" => Ok(ModemLine::Version(rest.join(" "))),
        "LINK" => match rest.as_slice() {
            [x] if x.eq_ignore_ascii_case("REGISTERED") => Ok(ModemLine::Link(true)),
            [x] if x.eq_ignore_ascii_case("UNREGISTERED") => Ok(ModemLine::Link(false)),
            _ => Ok(ModemLine::Unknown(line.to_string())),
        },
        _ => Ok(ModemLine::Unknown(line.to_string())),
    }
}

/// Splits the command-port byte stream into lines at CR (LF is accepted too). A line
/// longer than [`MAX_LINE`] is reported once as an error and skipped up to the next
/// line end, so the stream resynchronises; memory stays within `MAX_LINE`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    skipping: bool,
}

impl LineSplitter {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the complete lines in them (empty lines are dropped).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    let line = std::mem::take(&mut self.buf);
                    out.push(String::from_utf8(line).map_err(|_| "line is not UTF-8".to_string()));
                }
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.buf.len() >= MAX_LINE {
                out.push(Err(format!("line longer than {MAX_LINE} bytes; skipped")));
                self.buf = Vec::new();
                self.skipping = true;
                continue;
            }
            self.buf.push(b);
        }
        out
    }

    /// Bytes held of an unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Does this packet carry payload? Keep-alives (Ping/Pong sent whole) do not: they must
/// not hold a session open.
pub fn is_payload(packet: &[u8]) -> bool {
    match packet.split_first() {
        Some((&frag::TAG_WHOLE, env)) => {
            let kind = envelope::peek_kind(env);
            kind != Some(Message::Ping(0).kind()) && kind != Some(Message::Pong(0).kind())
        }
        _ => true,
    }
}

/// State that outlives one connection to the modem.
struct Dialer {
    /// When the periodic sync is next due (if a peer is set).
    next_sync: Instant,
    /// The driver asked for a session.
    wanted: bool,
    /// No dial before this (failed-dial backoff, pause after a session).
    not_before: Instant,
    backoff: Duration,
    bitrate: u64,
    /// Transmit time since start.
    air: Duration,
}

/// Why a modem connection ended.
enum End {
    /// The driver went away: stop the task.
    Stopped,
    /// Sockets failed or the modem went quiet: report Down and reconnect.
    Lost(String),
}

/// Session phase.
#[derive(Debug)]
enum Phase {
    /// Listening; no session.
    Idle,
    /// CONNECT sent.
    Dialing { since: Instant },
    /// Session up.
    Open,
    /// Hanging up: waiting for the buffer to drain, then for DISCONNECTED.
    Closing {
        since: Instant,
        sent: Option<Instant>,
        why: String,
    },
    /// DISCONNECTED seen: still reading the data port until `until`.
    Tail { until: Instant, why: String },
}

/// One peer session.
struct Session {
    peer: PeerId,
    remote: String,
    started: Instant,
    last_payload: Instant,
    dec: StreamDecoder,
    /// Framed envelopes waiting for the data port.
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    /// Sends refused while hanging up.
    refused: u64,
}

/// The command socket's writer. Dropping it (the task was aborted, or ended) sends a
/// last ABORT without waiting, so the modem never keeps a session nobody serves.
struct CmdWriter {
    w: OwnedWriteHalf,
    aborted: bool,
}

impl Drop for CmdWriter {
    fn drop(&mut self) {
        if !self.aborted {
            let _ = self.w.try_write(b"ABORT\r");
        }
    }
}

/// One connection to the modem.
struct Modem<'a> {
    cfg: &'a VaraLinkConfig,
    me: &'a str,
    link: LinkId,
    ctx: &'a mut LinkContext,
    dialer: &'a mut Dialer,
    cmd: CmdWriter,
    /// Commands written and not yet answered, oldest first.
    pending: VecDeque<String>,
    busy: bool,
    /// Last BUFFER report, and bytes written since (not yet in a report).
    modem_buffer: u64,
    unreported: u64,
    /// Recent writes to the data port (time, bytes), for `REPORT_LAG`.
    recent_writes: VecDeque<(Instant, u64)>,
    last_report: Instant,
    last_line: Instant,
    ptt_since: Option<Instant>,
    phase: Phase,
    sess: Option<Session>,
    /// Bytes being written to the data port, and how far.
    wbuf: Vec<u8>,
    woff: usize,
    /// Up has been reported for this connection.
    up: bool,
}

/// Report events; false once the driver has gone.
async fn emit(events: &tokio::sync::mpsc::Sender<LinkEvent>, ev: LinkEvent) -> bool {
    events.send(ev).await.is_ok()
}

impl Modem<'_> {
    async fn command(&mut self, line: &str) -> Result<(), String> {
        tracing::trace!(link = self.link, "to VARA: {line}");
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\r');
        match tokio::time::timeout(CMD_WRITE_TIMEOUT, self.cmd.w.write_all(&bytes)).await {
            Ok(Ok(())) => {
                self.pending.push_back(line.to_string());
                // An unanswering modem is caught by the silence check; keep this bounded.
                if self.pending.len() > 64 {
                    self.pending.pop_front();
                }
                if line == "ABORT" {
                    self.cmd.aborted = true;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot write to the command port: {e}")),
            Err(_) => Err("command port write timed out".into()),
        }
    }

    /// Bytes written that the last BUFFER report may not include. A report that came
    /// `REPORT_LAG` after the last write includes it: the modem reports every change,
    /// so had our bytes landed after a report of 0 it would have reported again.
    fn unreported_now(&self, now: Instant) -> u64 {
        match self.recent_writes.back() {
            Some((t, _))
                if self.last_report > *t && now.saturating_duration_since(*t) >= REPORT_LAG =>
            {
                0
            }
            _ => self.unreported,
        }
    }

    /// Bytes the modem may still take before holding more than `BUFFER_AIR_S` of air.
    fn room(&self, now: Instant) -> u64 {
        let limit = (self.dialer.bitrate / 8)
            .saturating_mul(BUFFER_AIR_S)
            .max(MIN_BUFFER);
        let quiet = now.saturating_duration_since(self.last_report);
        let unreported = match quiet.checked_sub(REPORT_GRACE) {
            Some(extra) => self
                .unreported_now(now)
                .saturating_sub((self.dialer.bitrate / 8).saturating_mul(extra.as_secs())),
            None => self.unreported_now(now),
        };
        limit.saturating_sub(self.modem_buffer.saturating_add(unreported))
    }

    fn queued(&self) -> usize {
        self.sess.as_ref().map_or(0, |s| s.out_bytes) + (self.wbuf.len() - self.woff)
    }

    fn may_write(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing { sent: None, .. })
    }

    async fn start_session(&mut self, remote: String, outbound: bool) -> bool {
        let now = Instant::now();
        let peer = self.ctx.peer_ids.next();
        info!(link = self.link, peer, %remote, outbound, "VARA session open");
        self.dialer.wanted = false;
        self.sess = Some(Session {
            peer,
            remote: remote.clone(),
            started: now,
            last_payload: now,
            dec: StreamDecoder::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            refused: 0,
        });
        self.phase = Phase::Open;
        emit(
            &self.ctx.events,
            LinkEvent::PeerUp {
                link: self.link,
                peer,
                remote,
                outbound,
            },
        )
        .await
    }

    /// The session is over: report PeerDown and go back to listening.
    async fn end_session(&mut self, why: &str) -> bool {
        self.phase = Phase::Idle;
        self.wbuf.clear();
        self.woff = 0;
        self.modem_buffer = 0;
        self.unreported = 0;
        self.recent_writes.clear();
        let now = Instant::now();
        self.dialer.next_sync = now + Duration::from_secs(self.cfg.sync_s);
        self.dialer.not_before = self.dialer.not_before.max(now + REDIAL_PAUSE);
        let Some(s) = self.sess.take() else {
            return true;
        };
        info!(
            link = self.link,
            peer = s.peer,
            remote = %s.remote,
            secs = s.started.elapsed().as_secs(),
            air_s = self.dialer.air.as_secs(),
            unsent_bytes = s.out_bytes,
            refused_sends = s.refused,
            "VARA session closed: {why}"
        );
        emit(
            &self.ctx.events,
            LinkEvent::PeerDown {
                peer: s.peer,
                reason: why.to_string(),
            },
        )
        .await
    }

    /// Start hanging up (gracefully: the buffer drains first).
    fn hang_up(&mut self, why: String) {
        if matches!(self.phase, Phase::Open) {
            info!(link = self.link, "hanging up: {why}");
            self.phase = Phase::Closing {
                since: Instant::now(),
                sent: None,
                why,
            };
        }
    }

    /// A failed or timed-out dial: retry with backoff.
    fn dial_failed(&mut self, why: &str) {
        let b = self.dialer.backoff;
        warn!(
            link = self.link,
            retry_s = b.as_secs(),
            "VARA dial failed: {why}"
        );
        self.phase = Phase::Idle;
        self.dialer.not_before = Instant::now() + b;
        self.dialer.backoff = (b * 2).min(DIAL_BACKOFF_MAX);
        self.dialer.wanted = true;
    }

    /// Handle one line from the modem. Err ends the modem connection.
    async fn line(&mut self, line: ModemLine) -> Result<(), End> {
        let now = Instant::now();
        if !self.up {
            // Up once the modem has said something: a modem that accepts the TCP
            // connection but never answers is not a usable link.
            self.up = true;
            let caps = VaraLinkConfig::caps(self.dialer.bitrate);
            if !emit(
                &self.ctx.events,
                LinkEvent::Up {
                    link: self.link,
                    caps,
                },
            )
            .await
            {
                return Err(End::Stopped);
            }
        }
        match line {
            ModemLine::Ok => {
                self.pending.pop_front();
            }
            ModemLine::Wrong => {
                let cmd = self.pending.pop_front().unwrap_or_default();
                warn!(link = self.link, "VARA answered WRONG to '{cmd}'");
            }
            ModemLine::Connected { src, dst, bw } => {
                debug!(link = self.link, %src, %dst, ?bw, "CONNECTED");
                match self.phase {
                    Phase::Idle | Phase::Dialing { .. } | Phase::Tail { .. } => {
                        if matches!(self.phase, Phase::Tail { .. })
                            && !self.end_session("a new session started").await
                        {
                            return Err(End::Stopped);
                        }
                        let outbound = matches!(self.phase, Phase::Dialing { .. })
                            && src.eq_ignore_ascii_case(self.me);
                        if outbound {
                            self.dialer.backoff = DIAL_BACKOFF_MIN;
                        }
                        let remote = if outbound { dst } else { src };
                        self.modem_buffer = 0;
                        self.unreported = 0;
                        self.recent_writes.clear();
                        if !self.start_session(remote, outbound).await {
                            return Err(End::Stopped);
                        }
                    }
                    Phase::Open | Phase::Closing { .. } => {
                        warn!(link = self.link, "CONNECTED during a session; ignored");
                    }
                }
            }
            ModemLine::Disconnected => match std::mem::replace(&mut self.phase, Phase::Idle) {
                Phase::Dialing { .. } => self.dial_failed("DISCONNECTED without CONNECTED"),
                Phase::Open => {
                    self.phase = Phase::Tail {
                        until: now + TAIL_READ,
                        why: "disconnected by the remote station".into(),
                    }
                }
                Phase::Closing { why, .. } => {
                    self.phase = Phase::Tail {
                        until: now + TAIL_READ,
                        why,
                    }
                }
                p @ (Phase::Idle | Phase::Tail { .. }) => self.phase = p,
            },
            ModemLine::Ptt(on) => {
                if on {
                    self.ptt_since.get_or_insert(now);
                } else if let Some(t) = self.ptt_since.take() {
                    let d = now.saturating_duration_since(t);
                    self.dialer.air += d;
                    debug!(
                        link = self.link,
                        ms = d.as_millis() as u64,
                        total_s = self.dialer.air.as_secs(),
                        "transmission"
                    );
                }
            }
            ModemLine::Buffer(n) => {
                self.modem_buffer = n;
                // What we wrote just now may not be in this count yet: keep it.
                self.recent_writes
                    .retain(|(t, _)| now.saturating_duration_since(*t) < REPORT_LAG);
                self.unreported = self.recent_writes.iter().map(|(_, k)| k).sum();
                self.last_report = now;
            }
            ModemLine::Busy(b) => {
                debug!(link = self.link, busy = b, "channel busy");
                self.busy = b;
            }
            ModemLine::Bitrate { level, bps } => {
                // 0 is what VARA shows before a speed is known; keep the last estimate.
                if bps > 0 && bps != self.dialer.bitrate {
                    info!(link = self.link, level, bps, "VARA bit rate");
                    self.dialer.bitrate = bps;
                    let caps = VaraLinkConfig::caps(bps);
                    if !emit(
                        &self.ctx.events,
                        LinkEvent::Caps {
                            link: self.link,
                            caps,
                        },
                    )
                    .await
                    {
                        return Err(End::Stopped);
                    }
                }
            }
            ModemLine::MissingSoundcard => {
                warn!(link = self.link, "VARA reports MISSING SOUNDCARD")
            }
            ModemLine::IAmAlive => {}
            other => debug!(link = self.link, "from VARA: {other:?}"),
        }
        Ok(())
    }

    /// Bytes from the data port.
    async fn data(&mut self, bytes: &[u8]) -> Result<(), End> {
        let Some(s) = self.sess.as_mut() else {
            debug!(
                link = self.link,
                len = bytes.len(),
                "data outside a session dropped"
            );
            return Ok(());
        };
        s.dec.push(bytes);
        let peer = s.peer;
        let mut frames = Vec::new();
        let mut garbage = None;
        while let Some(item) = s.dec.next_frame() {
            match item {
                Ok(f) => frames.push(f),
                Err(e) => {
                    garbage = Some(format!("bad stream framing: {e}"));
                    break;
                }
            }
        }
        for f in frames {
            if is_payload(&f) {
                s.last_payload = Instant::now();
            }
            if !emit(&self.ctx.events, LinkEvent::Frame { peer, bytes: f }).await {
                return Err(End::Stopped);
            }
        }
        if let Some(reason) = garbage {
            warn!(link = self.link, peer, "{reason}; hanging up");
            if !emit(
                &self.ctx.events,
                LinkEvent::Garbage {
                    peer,
                    reason: reason.clone(),
                },
            )
            .await
            {
                return Err(End::Stopped);
            }
            self.command("ABORT").await.map_err(End::Lost)?;
            if !self.end_session(&reason).await {
                return Err(End::Stopped);
            }
        }
        Ok(())
    }

    /// A command from the driver.
    fn driver(&mut self, cmd: LinkCommand) {
        match cmd {
            LinkCommand::Send { peer, bytes } => {
                // Once hanging up, nothing new is taken: what is queued drains, the
                // modem's buffer empties, then DISCONNECT. The core retries the rest on
                // the next session.
                let open = matches!(self.phase, Phase::Open);
                match self.sess.as_mut() {
                    Some(s) if s.peer == peer && !open => {
                        s.refused += 1;
                        debug!(link = self.link, peer, "session closing: send dropped");
                    }
                    Some(s) if s.peer == peer => {
                        if is_payload(&bytes) {
                            s.last_payload = Instant::now();
                        }
                        let f = frame(&bytes);
                        s.out_bytes += f.len();
                        s.out.push_back(f);
                    }
                    _ => debug!(
                        link = self.link,
                        peer, "send to a closed VARA session dropped"
                    ),
                }
            }
            LinkCommand::Disconnect { peer } => {
                if self.sess.as_ref().is_some_and(|s| s.peer == peer) {
                    self.hang_up("asked by the node".into());
                }
            }
            // Only when no session is up or being set up: what waits goes out on the
            // current session, and the driver asks again while items still wait.
            LinkCommand::Connect => {
                if self.cfg.peer.is_some() && matches!(self.phase, Phase::Idle) {
                    self.dialer.wanted = true;
                }
            }
            // Not a broadcast medium (the core never broadcasts here), and the only
            // station dialled is the configured peer.
            LinkCommand::Broadcast { .. } | LinkCommand::Dial { .. } | LinkCommand::Aprs { .. } => {
            }
        }
    }

    /// Timers: dead modem, dialing, idle and session limits, hang-up steps, tail end.
    async fn tick(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let alive = Duration::from_secs(self.cfg.alive_s);
        if now.saturating_duration_since(self.last_line) > alive {
            return Err(End::Lost(format!(
                "no word from the modem for {} s (IAMALIVE missing)",
                alive.as_secs()
            )));
        }
        match &self.phase {
            Phase::Idle => {
                let due = self.dialer.wanted || now >= self.dialer.next_sync;
                if let Some(peer) = &self.cfg.peer {
                    if due && !self.busy && now >= self.dialer.not_before {
                        let line = format!("CONNECT {} {peer}", self.me);
                        info!(link = self.link, %peer, "dialling");
                        self.dialer.wanted = false;
                        self.phase = Phase::Dialing { since: now };
                        if self.cfg.modem == VaraModem::Hf {
                            // Again before each call, as Pat does: the kind is per session.
                            self.command("P2P SESSION").await.map_err(End::Lost)?;
                        }
                        self.command(&line).await.map_err(End::Lost)?;
                    }
                }
            }
            Phase::Dialing { since } => {
                if now.saturating_duration_since(*since) > DIAL_TIMEOUT {
                    self.command("ABORT").await.map_err(End::Lost)?;
                    self.dial_failed("timed out");
                }
            }
            Phase::Open => {
                if let Some(s) = &self.sess {
                    let idle = now.saturating_duration_since(s.last_payload);
                    if idle >= Duration::from_secs(self.cfg.idle_s) {
                        self.hang_up(format!("idle for {} s", idle.as_secs()));
                    } else if now.saturating_duration_since(s.started)
                        >= Duration::from_secs(self.cfg.max_s)
                    {
                        self.hang_up(format!("session limit of {} s", self.cfg.max_s));
                    }
                }
            }
            Phase::Closing { since, sent, why } => {
                let (since, sent, why) = (*since, *sent, why.clone());
                match sent {
                    None => {
                        let drained = self.queued() == 0
                            && self.modem_buffer == 0
                            && self.unreported_now(now) == 0;
                        if drained {
                            self.command("DISCONNECT").await.map_err(End::Lost)?;
                            self.phase = Phase::Closing {
                                since,
                                sent: Some(now),
                                why,
                            };
                        } else if now.saturating_duration_since(since) > DRAIN_WAIT {
                            warn!(link = self.link, "modem buffer did not drain; ABORT");
                            self.command("ABORT").await.map_err(End::Lost)?;
                            self.phase = Phase::Tail {
                                until: now + TAIL_READ,
                                why: format!("{why} (aborted: buffer did not drain)"),
                            };
                        }
                    }
                    Some(at) => {
                        if now.saturating_duration_since(at) > DISCONNECT_WAIT {
                            warn!(link = self.link, "no DISCONNECTED after DISCONNECT; ABORT");
                            self.command("ABORT").await.map_err(End::Lost)?;
                            self.phase = Phase::Tail {
                                until: now + TAIL_READ,
                                why,
                            };
                        }
                    }
                }
            }
            Phase::Tail { until, why } => {
                if now >= *until {
                    let why = why.clone();
                    if !self.end_session(&why).await {
                        return Err(End::Stopped);
                    }
                }
            }
        }
        // Whatever is not sent by the end of a session is dropped with it (logged in
        // `end_session`); the core retries on the next one.
        if !self.may_write() {
            if let Some(s) = self.sess.as_mut() {
                if !matches!(self.phase, Phase::Tail { .. }) {
                    s.out.clear();
                    s.out_bytes = 0;
                }
            }
        }
        Ok(())
    }
}

/// Run a VARA link until the driver goes away: connect to the modem, configure it, run
/// sessions, and reconnect with backoff when the modem is lost.
pub async fn run_vara(cfg: VaraLinkConfig, mut ctx: LinkContext) {
    let Some(me) = callsign(&ctx.callsign) else {
        // Every session identifies the station; without a callsign the link stays down.
        let reason = format!(
            "VARA link needs the station callsign ('{}' is not one)",
            ctx.callsign
        );
        super::stay_down(&mut ctx, reason).await;
        return;
    };
    let mut dialer = Dialer {
        next_sync: Instant::now() + FIRST_SYNC_DELAY,
        wanted: false,
        not_before: Instant::now(),
        backoff: DIAL_BACKOFF_MIN,
        bitrate: INITIAL_BITRATE,
        air: Duration::ZERO,
    };
    let mut backoff = MODEM_BACKOFF_MIN;
    loop {
        let opening = open(&cfg);
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                r = &mut opening => break r,
                c = ctx.commands.recv() => match c {
                    Some(LinkCommand::Connect) => dialer.wanted = cfg.peer.is_some(),
                    Some(_) => {}
                    None => return,
                }
            }
        };
        let reason = match opened {
            Ok((cmd, data)) => {
                let started = Instant::now();
                info!(link = ctx.id, modem = %format!("{}:{}", cfg.host, cfg.cmd_port), "VARA modem open");
                let end = modem(&cfg, &me, &mut ctx, &mut dialer, cmd, data).await;
                if started.elapsed() > BACKOFF_RESET {
                    backoff = MODEM_BACKOFF_MIN;
                }
                match end {
                    End::Stopped => return,
                    End::Lost(why) => {
                        format!("VARA modem {}:{} lost: {why}", cfg.host, cfg.cmd_port)
                    }
                }
            }
            Err(e) => e,
        };
        debug!(link = ctx.id, %reason, retry_s = backoff.as_secs(), "VARA link down");
        if !emit(
            &ctx.events,
            LinkEvent::Down {
                link: ctx.id,
                reason,
            },
        )
        .await
        {
            return;
        }
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                c = ctx.commands.recv() => match c {
                    Some(LinkCommand::Connect) => dialer.wanted = cfg.peer.is_some(),
                    Some(_) => {}
                    None => return,
                }
            }
        }
        backoff = (backoff * 2).min(MODEM_BACKOFF_MAX);
    }
}

async fn open(cfg: &VaraLinkConfig) -> Result<(TcpStream, TcpStream), String> {
    let connect = |port: u16| {
        let addr = format!("{}:{port}", cfg.host);
        async move {
            match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(s)
                }
                Ok(Err(e)) => Err(format!("cannot connect to VARA at {addr}: {e}")),
                Err(_) => Err(format!("cannot connect to VARA at {addr}: timed out")),
            }
        }
    };
    let cmd = connect(cfg.cmd_port).await?;
    let data = connect(cfg.data_port).await?;
    Ok((cmd, data))
}

/// One connection to the modem, until it fails or the driver goes away.
async fn modem(
    cfg: &VaraLinkConfig,
    me: &str,
    ctx: &mut LinkContext,
    dialer: &mut Dialer,
    cmd: TcpStream,
    data: TcpStream,
) -> End {
    let (mut cmd_rd, cmd_wr) = cmd.into_split();
    let (mut data_rd, mut data_wr) = data.into_split();
    let now = Instant::now();
    let link = ctx.id;
    let mut m = Modem {
        cfg,
        me,
        link,
        ctx,
        dialer,
        cmd: CmdWriter {
            w: cmd_wr,
            aborted: false,
        },
        pending: VecDeque::new(),
        busy: false,
        modem_buffer: 0,
        unreported: 0,
        recent_writes: VecDeque::new(),
        last_report: now,
        last_line: now,
        ptt_since: None,
        phase: Phase::Idle,
        sess: None,
        wbuf: Vec::new(),
        woff: 0,
        up: false,
    };
    let mut setup = vec![
        format!("MYCALL {me}"),
        "LISTEN ON".to_string(),
        "COMPRESSION OFF".to_string(),
    ];
    if let Some(bw) = cfg.bw {
        setup.push(format!("BW{bw}"));
    }
    if cfg.modem == VaraModem::Hf {
        // VARA HF treats a session as a Winlink (gateway) session unless told otherwise;
        // peer-to-peer connections need P2P SESSION (EA5HVK, VARA TNC commands).
        setup.push("P2P SESSION".to_string());
    }
    for line in &setup {
        if let Err(e) = m.command(line).await {
            return End::Lost(e);
        }
    }
    let end = run_modem(&mut m, &mut cmd_rd, &mut data_rd, &mut data_wr).await;
    if matches!(end, End::Stopped) {
        // Shutdown: end any session on air now rather than leave the modem in it.
        let _ = m.command("ABORT").await;
    }
    if m.sess.is_some() && !m.end_session("VARA modem lost").await {
        return End::Stopped;
    }
    end
}

async fn run_modem(
    m: &mut Modem<'_>,
    cmd_rd: &mut tokio::net::tcp::OwnedReadHalf,
    data_rd: &mut tokio::net::tcp::OwnedReadHalf,
    data_wr: &mut OwnedWriteHalf,
) -> End {
    let mut lines = LineSplitter::new();
    let mut cbuf = vec![0u8; 2048];
    let mut dbuf = vec![0u8; 16 * 1024];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        // Refill the write buffer from the session queue.
        if m.woff >= m.wbuf.len() && m.may_write() {
            if let Some(s) = m.sess.as_mut() {
                if let Some(f) = s.out.pop_front() {
                    s.out_bytes -= f.len();
                    m.wbuf = f;
                    m.woff = 0;
                }
            }
        }
        let n = if m.may_write() {
            let room = usize::try_from(m.room(now)).unwrap_or(usize::MAX);
            (m.wbuf.len() - m.woff).min(room)
        } else {
            0
        };
        let take_cmds = m.queued() < OUT_QUEUE_BYTES;
        let res: Result<(), End> = tokio::select! {
            r = cmd_rd.read(&mut cbuf) => match r {
                Ok(0) => Err(End::Lost("command port closed by the modem".into())),
                Err(e) => Err(End::Lost(format!("command port read error: {e}"))),
                Ok(k) => {
                    m.last_line = Instant::now();
                    let mut out = Ok(());
                    for l in lines.push(&cbuf[..k]) {
                        if let Ok(raw) = &l {
                            tracing::trace!(link = m.link, "from VARA: {raw}");
                        }
                        let parsed = l.and_then(|s| parse_modem_line(&s));
                        match parsed {
                            Ok(line) => {
                                if let Err(e) = m.line(line).await {
                                    out = Err(e);
                                    break;
                                }
                            }
                            Err(e) => warn!(link = m.link, "bad line from VARA: {e}"),
                        }
                    }
                    out
                }
            },
            r = data_rd.read(&mut dbuf) => match r {
                Ok(0) => Err(End::Lost("data port closed by the modem".into())),
                Err(e) => Err(End::Lost(format!("data port read error: {e}"))),
                Ok(k) => m.data(&dbuf[..k]).await,
            },
            r = data_wr.write(&m.wbuf[m.woff..m.woff + n]), if n > 0 => match r {
                Ok(0) => Err(End::Lost("data port closed".into())),
                Ok(k) => {
                    m.woff += k;
                    m.unreported += k as u64;
                    m.recent_writes.push_back((Instant::now(), k as u64));
                    if m.recent_writes.len() > 1024 {
                        m.recent_writes.pop_front();
                    }
                    Ok(())
                }
                Err(e) => Err(End::Lost(format!("data port write error: {e}"))),
            },
            c = m.ctx.commands.recv(), if take_cmds => match c {
                Some(c) => {
                    m.driver(c);
                    Ok(())
                }
                None => Err(End::Stopped),
            },
            _ = tick.tick() => m.tick().await,
        };
        if let Err(end) = res {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modem_kind_defaults_to_hf_and_fm_takes_no_bandwidth() {
        let hf = VaraLinkConfig::parse_url("vara+tcp://127.0.0.1:8300").unwrap();
        assert_eq!(hf.modem, VaraModem::Hf);
        let fm =
            VaraLinkConfig::parse_url("vara+tcp://127.0.0.1:8300?modem=FM&peer=AB1CD").unwrap();
        assert_eq!(fm.modem, VaraModem::Fm);
        assert_eq!(
            fm.to_string(),
            "vara+tcp://127.0.0.1:8300?peer=AB1CD&modem=fm"
        );
        assert_eq!(VaraLinkConfig::parse_url(&fm.to_string()).unwrap(), fm);
        let e = VaraLinkConfig::parse_url("vara+tcp://h:8300?modem=fm&bw=2300").unwrap_err();
        assert!(e.contains("bw") && e.contains("VARA HF"), "{e}");
        let e = VaraLinkConfig::parse_url("vara+tcp://h:8300?modem=sat").unwrap_err();
        assert!(e.contains("modem"), "{e}");
    }

    #[test]
    fn bitrate_lines_as_real_modems_send_them() {
        let p = |s: &str| parse_modem_line(s).unwrap();
        // VARA FM 4.3.8 (la5nta/pat#484) and VARA HF (la5nta/pat#543) logs.
        assert_eq!(
            p("BITRATE (9)  9567 bps TX"),
            ModemLine::Bitrate {
                level: 9,
                bps: 9567
            }
        );
        assert_eq!(
            p("BITRATE (4)  175 bps RX"),
            ModemLine::Bitrate { level: 4, bps: 175 }
        );
        assert_eq!(
            p("BITRATE 175 bps"),
            ModemLine::Bitrate { level: 0, bps: 175 }
        );
        for bad in [
            "BITRATE (4) 175 bps TX extra",
            "BITRATE (4) 175 bps T\u{1}X",
            "BITRATE (4) 175 bps 12",
            "BITRATE (4) 175 TX",
        ] {
            assert!(parse_modem_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn url_round_trips_and_defaults() {
        let c =
            VaraLinkConfig::parse_url("vara+tcp://127.0.0.1:8300?peer=n0call-2&bw=2300").unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!((c.cmd_port, c.data_port), (8300, 8301));
        assert_eq!(c.peer.as_deref(), Some("N0CALL-2"));
        assert_eq!(c.bw, Some(2300));
        assert_eq!(
            (c.idle_s, c.max_s, c.sync_s, c.alive_s),
            (60, 600, 1800, 120)
        );
        assert_eq!(
            c.to_string(),
            "vara+tcp://127.0.0.1:8300?peer=N0CALL-2&bw=2300"
        );
        let s = "vara+tcp://modem.local:8400?data=9000&peer=AB1CD&idle=5&max=30&sync=60&alive=3";
        let c = VaraLinkConfig::parse_url(s).unwrap();
        assert_eq!(c.data_port, 9000);
        assert_eq!(c.to_string(), s);
        assert_eq!(VaraLinkConfig::parse_url(&c.to_string()).unwrap(), c);
        // Listening only, VARA FM (no BW).
        let c = VaraLinkConfig::parse_url("vara+tcp://[::1]:8300/").unwrap();
        assert_eq!(c.peer, None);
        assert_eq!(c.bw, None);
        assert_eq!(c.to_string(), "vara+tcp://[::1]:8300");
        // Through LinkUrl.
        let u = super::super::LinkUrl::parse("vara+tcp://127.0.0.1:8300?bw=500").unwrap();
        assert_eq!(u.to_string(), "vara+tcp://127.0.0.1:8300?bw=500");
    }

    #[test]
    fn url_errors_name_the_problem() {
        let err = |s: &str| VaraLinkConfig::parse_url(s).unwrap_err();
        assert!(err("vara+tcp://h:8300?speed=1").contains("unknown parameter 'speed'"));
        assert!(err("vara+tcp://h:8300?bw=1000").contains("bw"));
        assert!(err("vara+tcp://h:8300?peer=N0%20CALL").contains("peer"));
        assert!(err("vara+tcp://h:8300?idle=0").contains("idle"));
        assert!(err("vara+tcp://h:8300?max=x").contains("max"));
        assert!(err("vara+tcp://h:8300?sync=1").contains("sync"));
        assert!(err("vara+tcp://h:8300?data=0").contains("data"));
        assert!(err("vara+tcp://h:8300?bw=500&bw=500").contains("twice"));
        assert!(err("vara+tcp://h").contains("port"));
        assert!(err("vara+tcp://h:65535").contains("data port"));
        assert!(err("vara+tcp://h:8300/x").contains("path"));
        assert!(VaraLinkConfig::parse_url("vara+tcp://h:65535?data=1").is_ok());
    }

    #[test]
    fn parses_modem_lines() {
        let p = |s: &str| parse_modem_line(s).unwrap();
        assert_eq!(p("OK"), ModemLine::Ok);
        assert_eq!(p("WRONG"), ModemLine::Wrong);
        assert_eq!(
            p("CONNECTED N0CALL-1 n0call-2 2300"),
            ModemLine::Connected {
                src: "N0CALL-1".into(),
                dst: "N0CALL-2".into(),
                bw: Some(2300)
            }
        );
        assert_eq!(
            p("CONNECTED A1B C2D"),
            ModemLine::Connected {
                src: "A1B".into(),
                dst: "C2D".into(),
                bw: None
            }
        );
        assert_eq!(p("DISCONNECTED"), ModemLine::Disconnected);
        assert_eq!(p("PTT ON"), ModemLine::Ptt(true));
        assert_eq!(p("PTT OFF"), ModemLine::Ptt(false));
        assert_eq!(p("BUFFER 0"), ModemLine::Buffer(0));
        assert_eq!(p("BUFFER 12345"), ModemLine::Buffer(12345));
        assert_eq!(p("BUSY ON"), ModemLine::Busy(true));
        assert_eq!(p("BUSY OFF"), ModemLine::Busy(false));
        assert_eq!(p("IAMALIVE"), ModemLine::IAmAlive);
        assert_eq!(p("PENDING"), ModemLine::Pending);
        assert_eq!(p("CANCELPENDING"), ModemLine::CancelPending);
        assert_eq!(p("MISSING SOUNDCARD"), ModemLine::MissingSoundcard);
        assert_eq!(p("SN -3.5"), ModemLine::Sn(-3.5));
        assert_eq!(
            p("BITRATE (3) 1470 bps"),
            ModemLine::Bitrate {
                level: 3,
                bps: 1470
            }
        );
        assert_eq!(p("BITRATE 0"), ModemLine::Bitrate { level: 0, bps: 0 });
        assert_eq!(p("VERSION 4.8.7"), ModemLine::Version("4.8.7".into()));
        assert_eq!(p("LINK REGISTERED"), ModemLine::Link(true));
        assert_eq!(
            p("REGISTERED N0CALL"),
            ModemLine::Registered("N0CALL".into())
        );
        assert_eq!(p("CQFRAME X Y"), ModemLine::Unknown("CQFRAME X Y".into()));
    }

    #[test]
    fn refuses_garbage_lines() {
        for bad in [
            "",
            "   ",
            "BUFFER",
            "BUFFER -1",
            "BUFFER 99999999999999999999999",
            "BUFFER 1 2",
            "PTT MAYBE",
            "BUSY",
            "OK now",
            "CONNECTED",
            "CONNECTED A",
            "CONNECTED A B wide",
            "CONNECTED A\u{1}B C",
            "BITRATE (x) 100 bps",
            "BITRATE (3 100 bps",
            "BITRATE (3) 100 kbps",
            "BITRATE (3) -5 bps",
            "BITRATE",
            // A rate no VARA mode reaches would wrap the air-time sums.
            "BITRATE (9) 18446744073709551615 bps",
            "BITRATE 100001",
            "SN NaN",
            "SN inf",
            "IAMALIVE\u{7f}",
            "BUFFER \u{e9}",
        ] {
            assert!(parse_modem_line(bad).is_err(), "{bad:?} accepted");
        }
        let long = "X".repeat(MAX_LINE + 1);
        assert!(parse_modem_line(&long).unwrap_err().contains("limit"));
    }

    #[test]
    fn line_splitter_caps_and_resyncs() {
        let mut l = LineSplitter::new();
        assert!(l.push(b"BUFF").is_empty());
        let got = l.push(b"ER 5\rOK\r\r\nIAMA");
        assert_eq!(got, vec![Ok("BUFFER 5".into()), Ok("OK".into())]);
        assert_eq!(l.buffered(), 4);
        let mut big = vec![b'A'; MAX_LINE * 3];
        big.extend_from_slice(b"\rDISCONNECTED\r");
        let got = l.push(&big);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is_err());
        assert_eq!(got[1], Ok("DISCONNECTED".into()));
        assert!(l.buffered() <= MAX_LINE);
        assert!(l.push(b"\xff\xfe\r")[0].is_err());
    }

    #[test]
    fn keepalives_are_not_payload() {
        let net = [1, 2, 3, 4];
        let whole = |m: &Message| {
            let mut p = vec![frag::TAG_WHOLE];
            p.extend(envelope::encode(net, 1, m));
            p
        };
        assert!(!is_payload(&whole(&Message::Ping(7))));
        assert!(!is_payload(&whole(&Message::Pong(7))));
        assert!(is_payload(&whole(&Message::Ack(vec![1]))));
        assert!(is_payload(&[frag::TAG_FRAGMENT, 1, 0, 2, 9]));
        assert!(is_payload(&[]));
    }
}
