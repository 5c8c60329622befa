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

mod machine;

pub use machine::{Out, Vara};

use crate::callsign::vara as callsign;
use crate::link::backoff::Backoff;
use crate::link::lines::Lines;
use crate::link::params::UrlParts;
use crate::link::{LinkCaps, LinkContext, LinkEnv, LinkEvent, Scheme, Started, Transport};
use crate::wire::envelope;
use crate::wire::frag;
use crate::wire::message::Message;
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
        let url = UrlParts::parse(s)?;
        if url.scheme() != "vara+tcp" {
            return Err(url.err(format!("not a VARA scheme '{}'", url.scheme())));
        }
        let (host, port) = url.host_port(
            "vara+tcp://host:port",
            "missing command port (vara+tcp://host:8300)",
            None,
        )?;
        let mut cfg = VaraLinkConfig::new(&host, port);
        let mut data = None;
        for p in url.params()? {
            let secs = |lo: u64, hi: u64| {
                p.number(
                    |x| (lo..=hi).contains(x),
                    &format!("expected seconds, {lo}-{hi}"),
                )
            };
            match p.key.as_str() {
                "peer" => {
                    cfg.peer = Some(callsign(&p.value).ok_or_else(|| p.bad("not a callsign"))?)
                }
                "modem" => {
                    cfg.modem = match p.value.to_ascii_lowercase().as_str() {
                        "hf" => VaraModem::Hf,
                        "fm" => VaraModem::Fm,
                        _ => return Err(p.bad("expected hf (VARA HF) or fm (VARA FM)")),
                    }
                }
                "bw" => {
                    cfg.bw =
                        Some(p.number(|b| BANDWIDTHS.contains(b), "expected 500, 2300 or 2750")?)
                }
                "data" => data = Some(p.number(|d: &u16| *d > 0, "expected a TCP port")?),
                "idle" => cfg.idle_s = secs(1, 86_400)?,
                "max" => cfg.max_s = secs(1, 86_400)?,
                "sync" => cfg.sync_s = secs(10, 30 * 86_400)?,
                "alive" => cfg.alive_s = secs(1, 3_600)?,
                _ => return Err(p.unknown("peer, modem, bw, data, idle, max, sync")),
            }
        }
        if cfg.modem == VaraModem::Fm && cfg.bw.is_some() {
            return Err(
                url.err("bw is a VARA HF setting; VARA FM sets its bandwidth in the program")
            );
        }
        cfg.data_port = match data {
            Some(d) => d,
            None => port.checked_add(1).ok_or_else(|| {
                url.err(format!(
                    "command port {port} leaves no room for the data port"
                ))
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

/// The VARA transport's scheme: a VARA HF or FM modem's TCP ports.
pub const SCHEMES: &[Scheme] = &[Scheme {
    name: "vara+tcp",
    parse: |s| Ok(Box::new(VaraLinkConfig::parse_url(s)?)),
    radio: true,
}];

impl Transport for VaraLinkConfig {
    fn role(&self) -> String {
        format!("{self}: VARA modem")
    }

    fn start(&self, _env: LinkEnv, ctx: LinkContext) -> Started {
        Started {
            task: tokio::spawn(run_vara(self.clone(), ctx)),
            // With a peer to dial, sessions open when the node has something to send.
            on_demand: self.peer.is_some(),
            aprs_every_min: None,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
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

/// Why a modem connection ended.
enum End {
    /// The driver went away: stop the task.
    Stopped,
    /// Sockets failed or the modem went quiet: report Down and reconnect.
    Lost(String),
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

impl CmdWriter {
    async fn write(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\r');
        match tokio::time::timeout(CMD_WRITE_TIMEOUT, self.w.write_all(&bytes)).await {
            Ok(Ok(())) => {
                if line == "ABORT" {
                    self.aborted = true;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot write to the command port: {e}")),
            Err(_) => Err("command port write timed out".into()),
        }
    }
}

/// Carry out what the machine asked for: commands to the modem, events to the driver.
/// Without a command port (`None`), commands are dropped: the modem is gone.
async fn act(
    vara: &mut Vara,
    mut cmd: Option<&mut CmdWriter>,
    ctx: &LinkContext,
) -> Result<(), End> {
    while let Some(out) = vara.poll() {
        match out {
            Out::Command(line) => {
                if let Some(w) = cmd.as_deref_mut() {
                    w.write(&line).await.map_err(End::Lost)?;
                }
            }
            Out::Event(ev) => {
                if ctx.events.send(ev).await.is_err() {
                    return Err(End::Stopped);
                }
            }
            Out::Lost(why) => return Err(End::Lost(why)),
        }
    }
    Ok(())
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
    let epoch = Instant::now();
    let mut vara = Vara::new(cfg.clone(), me, ctx.id, ctx.peer_ids.clone());
    let mut backoff = Backoff::new(MODEM_BACKOFF_MIN, MODEM_BACKOFF_MAX, BACKOFF_RESET);
    loop {
        let opening = open(&cfg);
        let Some(opened) = super::serving(&mut ctx, opening, |c| {
            vara.offline_command(c);
            Vec::new()
        })
        .await
        else {
            return;
        };
        let reason = match opened {
            Ok((cmd, data)) => {
                let started = Instant::now();
                info!(link = ctx.id, modem = %format!("{}:{}", cfg.host, cfg.cmd_port), "VARA modem open");
                let end = modem(&mut vara, &mut ctx, epoch, cmd, data).await;
                backoff.ended_after(started.elapsed());
                match end {
                    End::Stopped => return,
                    End::Lost(why) => {
                        format!("VARA modem {}:{} lost: {why}", cfg.host, cfg.cmd_port)
                    }
                }
            }
            Err(e) => e,
        };
        let wait = backoff.next_wait();
        debug!(link = ctx.id, %reason, retry_s = wait.as_secs(), "VARA link down");
        let down = LinkEvent::Down {
            link: ctx.id,
            reason,
        };
        if !super::emit(&ctx, vec![down]).await {
            return;
        }
        let wait = tokio::time::sleep(wait);
        let waited = super::serving(&mut ctx, wait, |c| {
            vara.offline_command(c);
            Vec::new()
        });
        if waited.await.is_none() {
            return;
        }
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
    vara: &mut Vara,
    ctx: &mut LinkContext,
    epoch: Instant,
    cmd: TcpStream,
    data: TcpStream,
) -> End {
    let (mut cmd_rd, cmd_wr) = cmd.into_split();
    let (mut data_rd, mut data_wr) = data.into_split();
    let mut cmd = CmdWriter {
        w: cmd_wr,
        aborted: false,
    };
    vara.modem_connected(epoch.elapsed());
    let end = match act(vara, Some(&mut cmd), ctx).await {
        Ok(()) => {
            run_modem(
                vara,
                ctx,
                epoch,
                &mut cmd,
                &mut cmd_rd,
                &mut data_rd,
                &mut data_wr,
            )
            .await
        }
        Err(end) => end,
    };
    vara.modem_lost(epoch.elapsed(), matches!(end, End::Stopped));
    // Best effort: the ABORT of a shutdown and the session's PeerDown.
    let cmd = if matches!(end, End::Stopped) {
        Some(&mut cmd)
    } else {
        None
    };
    if let Err(End::Stopped) = act(vara, cmd, ctx).await {
        return End::Stopped;
    }
    end
}

/// Move bytes between the modem's ports, the driver and the machine.
async fn run_modem(
    vara: &mut Vara,
    ctx: &mut LinkContext,
    epoch: Instant,
    cmd: &mut CmdWriter,
    cmd_rd: &mut tokio::net::tcp::OwnedReadHalf,
    data_rd: &mut tokio::net::tcp::OwnedReadHalf,
    data_wr: &mut OwnedWriteHalf,
) -> End {
    let mut lines = Lines::new(MAX_LINE);
    let mut cbuf = vec![0u8; 2048];
    let mut dbuf = vec![0u8; 16 * 1024];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let take_cmds = vara.takes_commands();
        let link = ctx.id;
        let chunk = vara.to_write(epoch.elapsed());
        let n = chunk.len();
        tokio::select! {
            r = cmd_rd.read(&mut cbuf) => match r {
                Ok(0) => return End::Lost("command port closed by the modem".into()),
                Err(e) => return End::Lost(format!("command port read error: {e}")),
                Ok(k) => {
                    let now = epoch.elapsed();
                    vara.heard(now);
                    for l in lines.push(&cbuf[..k]) {
                        let text = l.map_err(|e| e.to_string()).and_then(|b| {
                            String::from_utf8(b).map_err(|_| "line is not UTF-8".to_string())
                        });
                        if let Ok(raw) = &text {
                            tracing::trace!(link, "from VARA: {raw}");
                        }
                        match text.and_then(|s| parse_modem_line(&s)) {
                            Ok(line) => vara.line(now, line),
                            Err(e) => warn!(link, "bad line from VARA: {e}"),
                        }
                    }
                }
            },
            r = data_rd.read(&mut dbuf) => match r {
                Ok(0) => return End::Lost("data port closed by the modem".into()),
                Err(e) => return End::Lost(format!("data port read error: {e}")),
                Ok(k) => vara.data(epoch.elapsed(), &dbuf[..k]),
            },
            r = data_wr.write(chunk), if n > 0 => match r {
                Ok(0) => return End::Lost("data port closed".into()),
                Ok(k) => vara.wrote(epoch.elapsed(), k),
                Err(e) => return End::Lost(format!("data port write error: {e}")),
            },
            c = ctx.commands.recv(), if take_cmds => match c {
                Some(c) => vara.driver(epoch.elapsed(), c),
                None => return End::Stopped,
            },
            _ = tick.tick() => vara.tick(epoch.elapsed()),
        }
        if let Err(end) = act(vara, Some(cmd), ctx).await {
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
