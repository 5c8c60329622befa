//! KISS links: a TNC (hardware on a serial port, or Direwolf over TCP) carrying AX.25 UI
//! frames. Each frame's information field is one packet for the core; stations are
//! identified by callsign, and every frame we send carries ours as the source address.
//!
//! `kiss+tcp://host:port` and `kiss+serial:///dev/ttyUSB0` take query parameters, see
//! [`KissLinkConfig::parse_url`].

use super::backoff::Backoff;
use super::params::UrlParts;
use super::stations::Stations;
use super::{
    aprs, LinkCaps, LinkCommand, LinkContext, LinkEnv, LinkEvent, LinkId, PeerIds, Scheme, Started,
    Transport,
};
use crate::wire::ax25::{self, Ax25Error, Callsign, BROADCAST};
use crate::wire::kiss::{self, KissCommand, KissDecoder};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Serial speed when the URL gives neither `baud` nor a `tnc` preset.
pub const DEFAULT_BAUD: u32 = 9600;
/// AX.25 information bytes per frame when the URL gives no `paclen` (Direwolf's default).
pub const DEFAULT_PACLEN: usize = 256;
/// Largest KISS frame sent to a TNC, both FENDs, the type byte, every escape and the
/// AX.25 header included. Direwolf keeps at most 2048 bytes of a frame from a client and
/// cuts the rest (Direwolf src/kiss_frame.c, `MAX_KISS_LEN`, `kiss_rec_byte`).
pub const MAX_KISS_FRAME: usize = 2048;
/// Smallest and largest `paclen` accepted. The largest is [`max_paclen`] for port 0 and
/// no digipeaters: an information field of `C0`/`DB` bytes doubles when escaped.
pub const PACLEN_RANGE: (usize, usize) = (32, max_paclen(0, 0));
/// Channel bit rate when the URL gives none (1200 baud AFSK).
pub const DEFAULT_BITRATE: u64 = 1200;

/// Stations remembered at once; the least recently heard is forgotten beyond this.
const MAX_STATIONS: usize = 256;
/// KISS frames waiting to be written to the TNC.
const OUT_QUEUE: usize = 64;
/// Longest wait for a TCP connect to the TNC.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reopen backoff bounds; a session that lasted longer than `BACKOFF_RESET` resets it.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// A digipeated copy of a frame heard directly within this window is a duplicate.
const DUP_WINDOW: Duration = Duration::from_secs(30);
/// Recently delivered frames remembered for duplicate suppression.
const DUP_MEMORY: usize = 64;
/// AX.25 header of a UI frame without digipeaters: two addresses, control, PID.
const UI_HEADER: usize = 7 * 2 + 2;

/// Largest information field whose worst-case KISS frame (every information byte a
/// `C0` or `DB`, so escaped to two) still fits in [`MAX_KISS_FRAME`], on KISS `port` with
/// `digis` digipeaters. Address, control and PID bytes never need escaping (address bytes
/// are shifted characters or SSID bytes with bits 5-6 set; control 0x03, PID 0xF0); the
/// type byte does on port 12 (0xC0).
pub const fn max_paclen(port: u8, digis: usize) -> usize {
    let type_len = if (port & 0x0F) << 4 == kiss::FEND {
        2
    } else {
        1
    };
    let fixed = 2 + type_len + UI_HEADER + 7 * digis;
    (MAX_KISS_FRAME - fixed) / 2
}

/// A device preset (`tnc=`): line speed and KISS parameters known to suit it. Parameters
/// given in the URL win over the preset's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TncPreset {
    /// NinoTNC N9600A: the MCP2221 USB bridge runs its UART at 57600 baud (TARPN,
    /// N9600A Operation; OARC wiki, packet:ninotnc). TXDELAY comes from the board's pot.
    NinoTnc,
    /// Mobilinkd TNC3/TNC4: USB CDC-ACM or Bluetooth RFCOMM, where the line speed is
    /// not used; TXDELAY stays as stored in the TNC with the Mobilinkd app.
    Mobilinkd,
    /// Kenwood TM-D710/TH-D72 built-in TNC: 9600 baud serial (tmd710_tncsetup's
    /// default), TXDELAY 25 (Xastir's TM-D710 init file). The link also takes the TNC
    /// back into KISS when it shows its command prompt (see [`KENWOOD_KISS_ON`]).
    Kenwood,
}

impl TncPreset {
    /// Name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            TncPreset::NinoTnc => "ninotnc",
            TncPreset::Mobilinkd => "mobilinkd",
            TncPreset::Kenwood => "kenwood",
        }
    }

    fn parse(s: &str) -> Option<TncPreset> {
        match s.to_ascii_lowercase().as_str() {
            "ninotnc" => Some(TncPreset::NinoTnc),
            "mobilinkd" => Some(TncPreset::Mobilinkd),
            "kenwood" => Some(TncPreset::Kenwood),
            _ => None,
        }
    }

    /// Serial line speed, where the device has one that matters.
    pub fn baud(self) -> Option<u32> {
        match self {
            TncPreset::NinoTnc => Some(57600),
            TncPreset::Mobilinkd => None,
            TncPreset::Kenwood => Some(9600),
        }
    }

    /// Set the preset's values on `cfg` (before the URL's own parameters).
    fn apply(self, cfg: &mut KissLinkConfig) {
        if let (KissTransport::Serial { baud, .. }, Some(b)) = (&mut cfg.transport, self.baud()) {
            *baud = b;
        }
        // p = 64/256 and 100 ms slots: the KISS defaults (Chepponis & Karn, "The KISS TNC",
        // 1987), sent so a TNC left with other values by another program gets them back.
        cfg.persist = Some(63);
        cfg.slottime = Some(10);
        if self == TncPreset::Kenwood {
            cfg.txdelay = Some(25);
        }
        cfg.tnc = Some(self);
    }
}

/// What `tnc=kenwood` sends, with the pause after each line, to take a TM-D710/TH-D72
/// TNC from its command mode back into KISS on band A: the sequence and pauses of
/// tmd710_tncsetup (`TC 1`, `TN 2,0`, `HBAUD`, `KISS ON`, `RESTART`). A lone CR first
/// ends whatever our KISS bytes left in the TNC's command line. `{hbaud}` is replaced by
/// the link's bit rate (1200 or 9600).
pub const KENWOOD_KISS_ON: [(&str, u64); 6] = [
    ("\r", 500),
    ("TC 1\r", 1000),
    ("TN 2,0\r", 3000),
    ("HBAUD {hbaud}\r", 1000),
    ("KISS ON\r", 1000),
    ("RESTART\r", 1000),
];

/// The prompt a TNC in command mode prints (TNC-2 style, including Kenwood's).
pub const COMMAND_PROMPT: &[u8] = b"cmd:";
/// A prompt counts once nothing but white space followed it for this long.
const PROMPT_SETTLE: Duration = Duration::from_millis(500);
/// Text kept from between KISS frames when looking for the prompt.
const PROMPT_TAIL: usize = 64;
/// A second prompt within this long of a re-entry means re-entry did not work.
const REENTRY_GRACE: Duration = Duration::from_secs(60);

/// How the TNC is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KissTransport {
    /// KISS over TCP (`host:port`), e.g. Direwolf's KISSPORT.
    Tcp(String),
    /// A serial device (USB TNC, Bluetooth serial, a pty).
    Serial {
        /// Device path, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Line speed.
        baud: u32,
    },
}

impl fmt::Display for KissTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KissTransport::Tcp(a) => write!(f, "{a}"),
            KissTransport::Serial { path, baud } => write!(f, "{path} at {baud} baud"),
        }
    }
}

/// A KISS link as given by its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KissLinkConfig {
    /// Where the TNC is.
    pub transport: KissTransport,
    /// KISS port (0-15) used for sending and listened to.
    pub port: u8,
    /// TXDELAY to set on open (10 ms units); `None` leaves the TNC's setting.
    pub txdelay: Option<u8>,
    /// Persistence byte to set on open (p = (v+1)/256).
    pub persist: Option<u8>,
    /// Slot time to set on open (10 ms units).
    pub slottime: Option<u8>,
    /// TX tail to set on open (10 ms units).
    pub txtail: Option<u8>,
    /// Largest AX.25 information field we send, i.e. the MTU the core sees.
    pub paclen: usize,
    /// Channel bit rate, reported to the core for pacing.
    pub bitrate: u64,
    /// Digipeater path for everything we send.
    pub via: Vec<Callsign>,
    /// Full duplex (the TNC is told so on open); half duplex otherwise.
    pub full_duplex: bool,
    /// Device preset given as `tnc=`, if any.
    pub tnc: Option<TncPreset>,
    /// Send an APRS status beacon (`aprs_status=true`), see [`super::aprs`].
    pub aprs_status: bool,
    /// Minutes between APRS beacons (`aprs_every`).
    pub aprs_every_min: u32,
    /// Digipeater path of APRS beacons (`aprs_path`, default `WIDE1-1`).
    pub aprs_path: Vec<Callsign>,
    /// The node's network, set by the driver (not part of the URL): heard APRS beacons
    /// of skywave nodes on this network become stations. `None`: any network.
    pub aprs_network: Option<String>,
}

impl KissLinkConfig {
    /// A config with every parameter at its default.
    pub fn new(transport: KissTransport) -> KissLinkConfig {
        KissLinkConfig {
            transport,
            port: 0,
            txdelay: None,
            persist: None,
            slottime: None,
            txtail: None,
            paclen: DEFAULT_PACLEN,
            bitrate: DEFAULT_BITRATE,
            via: Vec::new(),
            full_duplex: false,
            tnc: None,
            aprs_status: false,
            aprs_every_min: super::aprs::DEFAULT_EVERY_MIN,
            aprs_path: super::aprs::default_path(),
            aprs_network: None,
        }
    }

    /// What this config would be with only its transport and preset: the values that
    /// the canonical form leaves out.
    fn base(&self) -> KissLinkConfig {
        let transport = match &self.transport {
            KissTransport::Serial { path, .. } => KissTransport::Serial {
                path: path.clone(),
                baud: DEFAULT_BAUD,
            },
            t => t.clone(),
        };
        let mut b = KissLinkConfig::new(transport);
        if let Some(p) = self.tnc {
            p.apply(&mut b);
        }
        b
    }

    /// Parse `kiss+tcp://host:port?...` or `kiss+serial:///dev/path?...`.
    ///
    /// Parameters: `tnc` (device preset: `ninotnc`, `mobilinkd`, `kenwood`; the others
    /// win over it), `baud` (serial only), `port` (0-15), `txdelay`, `persist`,
    /// `slottime`, `txtail` (0-255, KISS units), `paclen` (32 up to what fits a
    /// 2048-byte KISS frame, see [`max_paclen`]), `bitrate`, `via` (comma-separated
    /// digipeaters), `duplex` (`half` or `full`), `aprs_status` (`true`: send an APRS
    /// status beacon), `aprs_every` (its interval in minutes, 10-1440, default 30),
    /// `aprs_path` (its comma-separated digipeaters, default `WIDE1-1`, empty for none).
    /// Errors name the offending parameter.
    pub fn parse_url(s: &str) -> Result<KissLinkConfig, String> {
        let url = UrlParts::parse(s)?;
        let transport = match url.scheme() {
            "kiss+tcp" => {
                let (host, port) = url.host_port(
                    "kiss+tcp://host:port",
                    "missing TCP port (kiss+tcp://host:port)",
                    None,
                )?;
                KissTransport::Tcp(format!("{host}:{port}"))
            }
            "kiss+serial" => {
                let host = url.host().unwrap_or("");
                let path = url.path()?;
                // `kiss+serial://COM3` names a Windows port in the host position.
                let path = match (host.is_empty(), path.as_str()) {
                    (true, "" | "/") => {
                        return Err(url.err("missing device (kiss+serial:///dev/ttyUSB0)"))
                    }
                    (true, _) => path,
                    (false, "" | "/") => host.to_string(),
                    (false, _) => {
                        return Err(url.err("device must be a local path (kiss+serial:///dev/...)"))
                    }
                };
                KissTransport::Serial {
                    path,
                    baud: DEFAULT_BAUD,
                }
            }
            other => return Err(url.err(format!("not a KISS scheme '{other}'"))),
        };
        let mut cfg = KissLinkConfig::new(transport);
        let params = url.params()?;
        // The preset first, whatever its place in the URL, so the URL's values win.
        for p in params.iter().filter(|p| p.key == "tnc") {
            let preset = TncPreset::parse(&p.value)
                .ok_or_else(|| p.bad("expected ninotnc, mobilinkd or kenwood"))?;
            preset.apply(&mut cfg);
        }
        for p in params.iter().filter(|p| p.key != "tnc") {
            let byte = || p.number::<u8>(|_| true, "expected 0-255");
            match p.key.as_str() {
                "baud" => match &mut cfg.transport {
                    KissTransport::Serial { baud, .. } => {
                        *baud = p.number(|b| *b > 0, "expected a serial speed such as 9600")?;
                    }
                    KissTransport::Tcp(_) => return Err(p.bad("only kiss+serial has a baud rate")),
                },
                "port" => cfg.port = p.number(|n| *n <= 15, "expected a KISS port 0-15")?,
                "txdelay" => cfg.txdelay = Some(byte()?),
                "persist" => cfg.persist = Some(byte()?),
                "slottime" => cfg.slottime = Some(byte()?),
                "txtail" => cfg.txtail = Some(byte()?),
                "paclen" => {
                    let (lo, hi) = PACLEN_RANGE;
                    cfg.paclen = p.number(
                        |n| (lo..=hi).contains(n),
                        &format!("expected {lo}-{hi} bytes"),
                    )?;
                }
                "bitrate" => {
                    cfg.bitrate = p.number(
                        |b| (1..=100_000_000).contains(b),
                        "expected bits per second, e.g. 1200 or 9600",
                    )?;
                }
                "via" => cfg.via = digipeaters(&p.value).map_err(|e| p.bad(&e))?,
                "duplex" => {
                    cfg.full_duplex =
                        p.one_of(&[("half", false), ("full", true)], "expected half or full")?
                }
                "aprs_status" => {
                    cfg.aprs_status = p.one_of(
                        &[("true", true), ("false", false)],
                        "expected true or false",
                    )?
                }
                "aprs_every" => {
                    let (lo, hi) = super::aprs::EVERY_MIN_RANGE;
                    cfg.aprs_every_min = p.number(
                        |m| (lo..=hi).contains(m),
                        &format!("expected {lo}-{hi} minutes"),
                    )?;
                }
                "aprs_path" => cfg.aprs_path = digipeaters(&p.value).map_err(|e| p.bad(&e))?,
                _ => {
                    return Err(p.unknown(
                        "tnc, baud, port, txdelay, persist, slottime, txtail, paclen, bitrate, \
                         via, duplex, aprs_status, aprs_every, aprs_path",
                    ))
                }
            }
        }
        let most = max_paclen(cfg.port, cfg.via.len());
        if cfg.paclen > most {
            return Err(format!(
                "link '{s}': bad paclen='{}': at most {most} bytes on this port and path, so \
                 that a KISS frame of escaped bytes, AX.25 header included, fits in \
                 {MAX_KISS_FRAME} bytes (Direwolf cuts longer frames)",
                cfg.paclen
            ));
        }
        if cfg.tnc == Some(TncPreset::Kenwood) && !matches!(cfg.bitrate, 1200 | 9600) {
            return Err(format!(
                "link '{s}': bad bitrate='{}': a Kenwood TNC runs at 1200 or 9600 (HBAUD)",
                cfg.bitrate
            ));
        }
        Ok(cfg)
    }

    /// What the link reports to the core. The MTU is `paclen`, less whatever the address
    /// field would push past the largest frame a TNC takes.
    pub fn caps(&self) -> LinkCaps {
        let room = max_paclen(self.port, self.via.len());
        LinkCaps {
            mtu: self.paclen.min(room),
            bitrate_bps: self.bitrate,
            half_duplex: !self.full_duplex,
            broadcast: true,
            text_only: false,
            connection_oriented: false,
            radio: true,
            blocks: true,
            carrier_sense: true,
            slot_ms: 0,
        }
    }

    /// KISS parameter frames sent on every open (only those configured).
    pub fn param_frames(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let p = self.port;
        if let Some(v) = self.txdelay {
            kiss::tx_delay(p, v, &mut out);
        }
        if let Some(v) = self.persist {
            kiss::persistence(p, v, &mut out);
        }
        if let Some(v) = self.slottime {
            kiss::slot_time(p, v, &mut out);
        }
        if let Some(v) = self.txtail {
            kiss::tx_tail(p, v, &mut out);
        }
        if self.full_duplex {
            kiss::full_duplex(p, true, &mut out);
        }
        out
    }
}

/// A comma-separated digipeater path (`via`, `aprs_path`).
fn digipeaters(v: &str) -> Result<Vec<Callsign>, String> {
    let digis = v
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<Callsign>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if digis.len() > ax25::MAX_DIGIS {
        return Err(format!("at most {} digipeaters", ax25::MAX_DIGIS));
    }
    Ok(digis)
}

fn path_text(digis: &[Callsign]) -> String {
    let v: Vec<String> = digis.iter().map(|c| c.to_string()).collect();
    v.join(",")
}

/// Canonical form: defaults (and the preset's values) are omitted, parameters in a fixed
/// order.
/// The KISS transport's schemes: a TNC over TCP (Direwolf) or a serial port.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        name: "kiss+tcp",
        parse: |s| Ok(Box::new(KissLinkConfig::parse_url(s)?)),
        radio: true,
    },
    Scheme {
        name: "kiss+serial",
        parse: |s| Ok(Box::new(KissLinkConfig::parse_url(s)?)),
        radio: true,
    },
];

impl Transport for KissLinkConfig {
    fn role(&self) -> String {
        format!("{self}: KISS TNC (packet radio)")
    }

    fn start(&self, env: LinkEnv, ctx: LinkContext) -> Started {
        let mut cfg = self.clone();
        // Only beacons of skywave nodes on our network make stations.
        cfg.aprs_network = Some(env.network);
        Started {
            task: tokio::spawn(run_kiss(cfg, ctx)),
            on_demand: false,
            aprs_every_min: self.aprs_status.then_some(self.aprs_every_min),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl fmt::Display for KissLinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.base();
        let mut q: Vec<String> = Vec::new();
        if let Some(t) = self.tnc {
            q.push(format!("tnc={}", t.name()));
        }
        match (&self.transport, &base.transport) {
            (KissTransport::Tcp(a), _) => write!(f, "kiss+tcp://{a}")?,
            (KissTransport::Serial { path, baud }, b) => {
                write!(f, "kiss+serial://{}", super::params::encode_path(path))?;
                if !matches!(b, KissTransport::Serial { baud: d, .. } if d == baud) {
                    q.push(format!("baud={baud}"));
                }
            }
        }
        if self.port != base.port {
            q.push(format!("port={}", self.port));
        }
        for (name, v, d) in [
            ("txdelay", self.txdelay, base.txdelay),
            ("persist", self.persist, base.persist),
            ("slottime", self.slottime, base.slottime),
            ("txtail", self.txtail, base.txtail),
        ] {
            if let (Some(v), true) = (v, v != d) {
                q.push(format!("{name}={v}"));
            }
        }
        if self.paclen != base.paclen {
            q.push(format!("paclen={}", self.paclen));
        }
        if self.bitrate != base.bitrate {
            q.push(format!("bitrate={}", self.bitrate));
        }
        if !self.via.is_empty() {
            q.push(format!("via={}", path_text(&self.via)));
        }
        if self.full_duplex {
            q.push("duplex=full".into());
        }
        if self.aprs_status {
            q.push("aprs_status=true".into());
        }
        if self.aprs_every_min != base.aprs_every_min {
            q.push(format!("aprs_every={}", self.aprs_every_min));
        }
        if self.aprs_path != base.aprs_path {
            q.push(format!("aprs_path={}", path_text(&self.aprs_path)));
        }
        if !q.is_empty() {
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

/// A byte stream to a TNC: a TCP socket, a serial port, or an in-memory pipe in tests.
pub trait KissIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> KissIo for T {}

/// Open the transport; the error names the device or address and the OS error.
pub async fn open_transport(t: &KissTransport) -> Result<Box<dyn KissIo>, String> {
    match t {
        KissTransport::Tcp(addr) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(Box::new(s))
                }
                Ok(Err(e)) => Err(format!("cannot connect to KISS TNC at {addr}: {e}")),
                Err(_) => Err(format!("cannot connect to KISS TNC at {addr}: timed out")),
            }
        }
        KissTransport::Serial { path, baud } => {
            let builder = tokio_serial::new(path, *baud);
            match tokio_serial::SerialStream::open(&builder) {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => Err(format!(
                    "cannot open {path} at {baud} baud: {}",
                    serial_error(&e)
                )),
            }
        }
    }
}

/// serialport's errors wrap the OS error in prose of its own; keep just the OS part.
fn serial_error(e: &tokio_serial::Error) -> String {
    match e.kind {
        tokio_serial::ErrorKind::Io(kind) => std::io::Error::from(kind).to_string(),
        _ => e.description.clone(),
    }
}

/// Counters of what the link ignored, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KissStats {
    /// KISS or AX.25 frames that did not decode.
    pub malformed: u64,
    /// Valid AX.25 frames that are not UI (connected-mode traffic on the channel).
    pub non_ui: u64,
    /// UI frames with another PID, or addressed to another station.
    pub not_for_us: u64,
    /// Frames on another KISS port, or non-data KISS frames.
    pub other_kiss: u64,
    /// Our own frames heard back (digipeated echoes).
    pub own: u64,
    /// Digipeated copies of frames already delivered.
    pub duplicates: u64,
    /// Frames dropped on transmit (too long, queue full, unknown peer).
    pub tx_dropped: u64,
}

struct Outgoing {
    kiss: Vec<u8>,
    broadcast: bool,
}

/// Why a session with the TNC ended.
enum End {
    /// The driver went away: stop the task.
    Stopped,
    /// The stream failed or closed: report Down and reopen.
    Lost(String),
}

/// State that outlives one session: who we have heard, and the counters.
struct Link {
    cfg: KissLinkConfig,
    me: Callsign,
    stations: Stations<Callsign>,
    recent: VecDeque<(Instant, Callsign, u32)>,
    queue: VecDeque<Outgoing>,
    stats: KissStats,
}

impl Link {
    fn new(cfg: KissLinkConfig, me: Callsign, ids: PeerIds) -> Link {
        Link {
            cfg,
            me,
            stations: Stations::new(MAX_STATIONS, ids),
            recent: VecDeque::new(),
            queue: VecDeque::new(),
            stats: KissStats::default(),
        }
    }

    /// Queue a frame for the TNC. Over capacity, broadcasts are the first to go: a lost
    /// announcement is repeated anyway, a directed frame may be part of a transfer.
    fn enqueue(&mut self, dst: Callsign, info: &[u8], broadcast: bool) {
        self.enqueue_via(dst, false, info, broadcast);
    }

    /// [`Self::enqueue`] through the APRS path (`aprs`) or the link's own.
    fn enqueue_via(&mut self, dst: Callsign, aprs: bool, info: &[u8], broadcast: bool) {
        let mtu = self.cfg.caps().mtu;
        if info.len() > mtu {
            warn!(
                len = info.len(),
                mtu, "packet longer than the link MTU dropped"
            );
            self.stats.tx_dropped += 1;
            return;
        }
        let via = if aprs {
            &self.cfg.aprs_path
        } else {
            &self.cfg.via
        };
        let frame = match ax25::encode_ui(&self.me, &dst, via, info) {
            Ok(f) => f,
            Err(e) => {
                warn!("cannot build AX.25 frame: {e}");
                self.stats.tx_dropped += 1;
                return;
            }
        };
        let mut out = Vec::with_capacity(frame.len() + 8);
        kiss::encode_data(self.cfg.port, &frame, &mut out);
        if out.len() > MAX_KISS_FRAME {
            // Cannot happen within the MTU; a TNC would cut it rather than refuse it.
            warn!(
                len = out.len(),
                "KISS frame over {MAX_KISS_FRAME} bytes dropped"
            );
            self.stats.tx_dropped += 1;
            return;
        }
        if self.queue.len() >= OUT_QUEUE {
            let victim = self.queue.iter().position(|o| o.broadcast).unwrap_or(0);
            warn!(
                broadcast = self.queue.get(victim).is_some_and(|o| o.broadcast),
                "TNC queue full; dropping the oldest frame"
            );
            self.queue.remove(victim);
            self.stats.tx_dropped += 1;
        }
        self.queue.push_back(Outgoing {
            kiss: out,
            broadcast,
        });
    }

    /// Carry out a driver command. Returns events to report.
    fn command(&mut self, cmd: LinkCommand, up: bool) -> Vec<LinkEvent> {
        match cmd {
            LinkCommand::Send { peer, bytes } => match self.stations.call(peer) {
                Some(&dst) if up => self.enqueue(dst, &bytes, false),
                _ => self.stats.tx_dropped += 1,
            },
            LinkCommand::Broadcast { bytes } => {
                if up {
                    self.enqueue(BROADCAST, &bytes, true);
                } else {
                    self.stats.tx_dropped += 1;
                }
            }
            LinkCommand::Disconnect { peer } => {
                if let Some(call) = self.stations.remove(peer) {
                    return vec![LinkEvent::PeerDown {
                        peer,
                        reason: format!("{call} forgotten"),
                    }];
                }
            }
            // Stations are heard, not dialled.
            LinkCommand::Dial { .. } => {}
            // A broadcast channel has no sessions to open.
            LinkCommand::Connect => {}
            LinkCommand::Aprs { info } => {
                if up && self.cfg.aprs_status {
                    // Like a broadcast: the first to go when the queue is full.
                    self.enqueue_via(aprs::tocall(), true, &info, true);
                } else {
                    self.stats.tx_dropped += 1;
                }
            }
        }
        Vec::new()
    }

    /// One KISS frame from the TNC. Returns events to report.
    fn received(&mut self, link: LinkId, f: kiss::KissFrame) -> Vec<LinkEvent> {
        if f.port != self.cfg.port || f.kiss_command() != Some(KissCommand::Data) {
            self.stats.other_kiss += 1;
            return Vec::new();
        }
        let ui = match ax25::decode_ui(&f.payload) {
            Ok(ui) => ui,
            Err(Ax25Error::NotUi(kind)) => {
                self.stats.non_ui += 1;
                debug!(%kind, "ignoring non-UI AX.25 frame");
                return Vec::new();
            }
            Err(e) => {
                self.stats.malformed += 1;
                debug!("malformed AX.25 frame: {e}");
                return Vec::new();
            }
        };
        if ui.src == self.me {
            self.stats.own += 1;
            return Vec::new();
        }
        // Ours first: a station's own callsign may start like a tocall (AP is Pakistan).
        if ui.pid == ax25::PID_NO_L3
            && ui.dst != self.me
            && ui.dst != BROADCAST
            && aprs::is_aprs_destination(&ui.dst)
        {
            return self.heard_aprs(link, ui.src, &ui.info);
        }
        if ui.pid != ax25::PID_NO_L3 || (ui.dst != self.me && ui.dst != BROADCAST) {
            self.stats.not_for_us += 1;
            return Vec::new();
        }
        // With a digipeater path the same frame is heard direct and again repeated; only
        // a repeated copy is checked, so a sender's own retransmission is never swallowed.
        let sum = crate::wire::envelope::CRC32.checksum(&ui.info);
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > DUP_WINDOW)
        {
            self.recent.pop_front();
        }
        if ui.digis.iter().any(|d| d.repeated)
            && self
                .recent
                .iter()
                .any(|(_, c, s)| *c == ui.src && *s == sum)
        {
            self.stats.duplicates += 1;
            return Vec::new();
        }
        if self.recent.len() >= DUP_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back((now, ui.src, sum));

        let mut events = Vec::new();
        // Never full of pinned stations: KISS pins none.
        if let Some(peer) = self.stations.heard(link, &ui.src, false, &mut events) {
            events.push(LinkEvent::Frame {
                peer,
                bytes: ui.info,
            });
        }
        events
    }

    /// An APRS packet: a skywave node's presence beacon (on our network) makes it a
    /// station as if we had heard it, so the core can greet it; anything else APRS
    /// carries is not ours.
    fn heard_aprs(&mut self, link: LinkId, src: Callsign, info: &[u8]) -> Vec<LinkEvent> {
        let Some(p) = aprs::Presence::parse(info) else {
            self.stats.not_for_us += 1;
            return Vec::new();
        };
        if self
            .cfg
            .aprs_network
            .as_ref()
            .is_some_and(|n| *n != p.network)
        {
            self.stats.not_for_us += 1;
            debug!(%src, network = %p.network, "APRS beacon of a skywave node on another network");
            return Vec::new();
        }
        let mut events = Vec::new();
        let known = self.stations.contains(&src);
        self.stations.heard(link, &src, false, &mut events);
        if !known {
            info!(
                link,
                "skywave station {src} heard in an APRS status: {} height {} tip {}",
                p.network,
                p.height,
                p.tip
            );
        }
        events
    }

    /// Forget every station (the channel is gone); returns their PeerDowns.
    fn forget_all(&mut self, reason: &str) -> Vec<LinkEvent> {
        self.queue.clear();
        self.stations.forget_all(reason)
    }
}

/// Run a KISS link until the driver goes away: open the TNC, move frames, and reopen
/// with backoff whenever the TNC is lost or cannot be opened.
pub async fn run_kiss(cfg: KissLinkConfig, ctx: LinkContext) {
    run_with(cfg, ctx, |t| async move { open_transport(&t).await }).await
}

/// [`run_kiss`] with the transport opener supplied (tests use in-memory pipes, the demo a
/// simulated TNC).
pub async fn run_with<O, F>(cfg: KissLinkConfig, mut ctx: LinkContext, mut open: O)
where
    O: FnMut(KissTransport) -> F,
    F: std::future::Future<Output = Result<Box<dyn KissIo>, String>>,
{
    let me = match ctx.callsign.parse::<Callsign>() {
        Ok(c) => c,
        Err(e) => {
            // Transmitting without identification is not allowed on amateur bands, so the
            // link stays down; commands are still drained so the driver never blocks.
            let reason = format!(
                "KISS link needs the station callsign as source address ('{}': {e})",
                ctx.callsign
            );
            super::stay_down(&mut ctx, reason).await;
            return;
        }
    };
    let mut link = Link::new(cfg, me, ctx.peer_ids.clone());
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_RESET);
    loop {
        let opening = open(link.cfg.transport.clone());
        let Some(opened) = super::serving(&mut ctx, opening, |cmd| link.command(cmd, false)).await
        else {
            return;
        };
        let reason = match opened {
            Ok(io) => {
                let started = Instant::now();
                info!(link = ctx.id, tnc = %link.cfg.transport, "KISS TNC open");
                let end = session(io, &mut link, &mut ctx).await;
                backoff.ended_after(started.elapsed());
                match end {
                    End::Stopped => return,
                    End::Lost(why) => format!("KISS TNC {} lost: {why}", link.cfg.transport),
                }
            }
            Err(e) => e,
        };
        let wait = backoff.next_wait();
        debug!(link = ctx.id, %reason, retry_s = wait.as_secs(), "KISS link down");
        let mut evs = vec![LinkEvent::Down {
            link: ctx.id,
            reason: reason.clone(),
        }];
        evs.extend(link.forget_all(&reason));
        if !super::emit(&ctx, evs).await {
            return;
        }
        let wait = tokio::time::sleep(wait);
        if super::serving(&mut ctx, wait, |cmd| link.command(cmd, false))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Watches the bytes a TNC sends between KISS frames for its command prompt: a TNC that
/// was power-cycled, or whose TNC mode was changed, is back in command mode and prints
/// `cmd:` where a KISS TNC would send nothing (TNC-2 style command interpreters, the
/// Kenwood TM-D710/TH-D72 among them).
#[derive(Default)]
struct PromptWatch {
    /// Bytes since the last FEND (the tail only).
    text: Vec<u8>,
    /// When the text last came to end in the prompt.
    since: Option<Instant>,
}

impl PromptWatch {
    fn push(&mut self, bytes: &[u8], now: Instant) {
        for &b in bytes {
            if b == kiss::FEND {
                self.text.clear();
            } else {
                if self.text.len() >= PROMPT_TAIL {
                    self.text.remove(0);
                }
                self.text.push(b);
            }
        }
        let trimmed = self.text.trim_ascii_end();
        if trimmed.ends_with(COMMAND_PROMPT) {
            // A prompt followed by more bytes of a frame is not one; the clock restarts.
            if self.since.is_none() || !bytes.trim_ascii().is_empty() {
                self.since = Some(now);
            }
        } else {
            self.since = None;
        }
    }

    /// When the prompt will count, if one is pending.
    fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + PROMPT_SETTLE)
    }

    fn clear(&mut self) {
        self.text.clear();
        self.since = None;
    }
}

/// Taking a Kenwood TNC back into KISS: the next line of [`KENWOOD_KISS_ON`] and when.
struct Reentry {
    step: usize,
    at: Instant,
}

/// The line of [`KENWOOD_KISS_ON`] at `step`, with the bit rate filled in.
fn kenwood_line(step: usize, bitrate: u64) -> Option<(String, Duration)> {
    KENWOOD_KISS_ON.get(step).map(|(line, ms)| {
        (
            line.replace("{hbaud}", &bitrate.to_string()),
            Duration::from_millis(*ms),
        )
    })
}

/// One open TNC: configure it, report Up, then move frames until the stream fails.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    link: &mut Link,
    ctx: &mut LinkContext,
) -> End {
    let (mut rd, mut wr) = tokio::io::split(io);
    let params = link.cfg.param_frames();
    if !params.is_empty() {
        if let Err(e) = wr.write_all(&params).await {
            return End::Lost(format!("cannot send KISS parameters: {e}"));
        }
    }
    let up = LinkEvent::Up {
        link: ctx.id,
        caps: link.cfg.caps(),
    };
    if !super::emit(ctx, vec![up]).await {
        return End::Stopped;
    }
    let mut dec = KissDecoder::with_max_frame(ax25::MAX_FRAME_LEN);
    let mut buf = vec![0u8; 4096];
    // The frame being written; a partial write resumes at `off`, keeping KISS framing whole.
    let mut cur: Vec<u8> = Vec::new();
    let mut off = 0;
    let mut prompt = PromptWatch::default();
    let mut reentry: Option<Reentry> = None;
    let mut reentered: Option<Instant> = None;
    let far = Duration::from_secs(3600);
    loop {
        if off >= cur.len() && reentry.is_none() {
            match link.queue.pop_front() {
                Some(o) => {
                    cur = o.kiss;
                    off = 0;
                }
                None => {
                    cur.clear();
                    off = 0;
                }
            }
        }
        // Nothing is written to a TNC in command mode but the lines that leave it.
        let writing = off < cur.len() && reentry.is_none();
        let now = Instant::now();
        let prompt_due = if reentry.is_none() {
            prompt.due()
        } else {
            None
        };
        let wake = match (&reentry, prompt_due) {
            (Some(r), _) => r.at,
            (None, Some(t)) => t,
            (None, None) => now + far,
        };
        let timed = reentry.is_some() || prompt_due.is_some();
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => return End::Lost("closed by the TNC".into()),
                Ok(n) => {
                    prompt.push(&buf[..n], Instant::now());
                    if reentry.is_some() {
                        // The TNC's answers to the re-entry lines; not KISS.
                        continue;
                    }
                    dec.push(&buf[..n]);
                    while let Some(item) = dec.next_frame() {
                        match item {
                            Ok(f) => {
                                let evs = link.received(ctx.id, f);
                                if !super::emit(ctx, evs).await {
                                    return End::Stopped;
                                }
                            }
                            Err(e) => {
                                link.stats.malformed += 1;
                                debug!(link = ctx.id, "malformed KISS frame: {e}");
                            }
                        }
                    }
                }
                Err(e) => return End::Lost(format!("read error: {e}")),
            },
            r = wr.write(&cur[off..]), if writing => match r {
                Ok(0) => return End::Lost("closed by the TNC".into()),
                Ok(n) => off += n,
                Err(e) => return End::Lost(format!("write error: {e}")),
            },
            _ = tokio::time::sleep_until(wake), if timed => {
                if let Some(r) = reentry.as_mut() {
                    match kenwood_line(r.step, link.cfg.bitrate) {
                        Some((line, pause)) => {
                            debug!(link = ctx.id, line = line.trim_end(), "to the TNC");
                            if let Err(e) = wr.write_all(line.as_bytes()).await {
                                return End::Lost(format!("write error: {e}"));
                            }
                            r.step += 1;
                            r.at = Instant::now() + pause;
                        }
                        None => {
                            reentry = None;
                            reentered = Some(Instant::now());
                            prompt.clear();
                            dec = KissDecoder::with_max_frame(ax25::MAX_FRAME_LEN);
                            if !params.is_empty() {
                                if let Err(e) = wr.write_all(&params).await {
                                    return End::Lost(format!("cannot send KISS parameters: {e}"));
                                }
                            }
                            info!(link = ctx.id, tnc = %link.cfg.transport, "Kenwood TNC back in KISS mode");
                        }
                    }
                    continue;
                }
                // The TNC printed its command prompt and nothing after it: command mode.
                prompt.clear();
                let again = reentered.is_some_and(|t| t.elapsed() < REENTRY_GRACE);
                if link.cfg.tnc == Some(TncPreset::Kenwood) && !again {
                    warn!(
                        link = ctx.id,
                        tnc = %link.cfg.transport,
                        "the TNC is in command mode (it printed 'cmd:'): power-cycled or its \
                         TNC mode changed; taking it back into KISS (TC 1, TN 2,0, HBAUD, \
                         KISS ON, RESTART)"
                    );
                    // The frame in progress is lost to the command interpreter anyway.
                    cur.clear();
                    off = 0;
                    reentry = Some(Reentry { step: 0, at: Instant::now() });
                    continue;
                }
                let why = if again {
                    "the TNC is still in command mode (it printed 'cmd:') after skywave sent \
                     TC 1, TN 2,0, HBAUD, KISS ON, RESTART: check the TNC's serial speed \
                     (baud=) and that the data band is A"
                        .to_string()
                } else {
                    "the TNC is in command mode, not KISS (it printed its 'cmd:' prompt): it \
                     was power-cycled or its TNC mode changed. Put it back into KISS (for a \
                     Kenwood: KISS ON, then RESTART, from a terminal; see hardware/tnc.md), or \
                     add tnc=kenwood to the URL so skywave does it"
                        .to_string()
                };
                warn!(link = ctx.id, tnc = %link.cfg.transport, "{why}");
                return End::Lost(why);
            },
            cmd = ctx.commands.recv() => match cmd {
                Some(cmd) => {
                    let evs = link.command(cmd, true);
                    if !super::emit(ctx, evs).await {
                        return End::Stopped;
                    }
                }
                None => return End::Stopped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkUrl;
    use crate::link::PeerId;
    use crate::wire::kiss::KissFrame;
    use std::sync::{Arc, Mutex};
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    fn call(s: &str) -> Callsign {
        s.parse().expect("test callsign")
    }

    fn parse(s: &str) -> KissLinkConfig {
        LinkUrl::parse(s)
            .ok()
            .and_then(|u| u.get::<KissLinkConfig>().cloned())
            .unwrap_or_else(|| panic!("{s}: not a Kiss link"))
    }

    fn parse_err(s: &str) -> String {
        LinkUrl::parse(s).expect_err(s)
    }

    #[test]
    fn parses_kiss_urls_with_every_parameter() {
        let k = parse(
            "kiss+serial:///dev/ttyUSB0?baud=57600&port=2&txdelay=30&persist=63&slottime=10\
             &txtail=2&paclen=128&bitrate=9600&via=WIDE1-1,wide2-1&duplex=full",
        );
        assert_eq!(
            k.transport,
            KissTransport::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 57600
            }
        );
        assert_eq!(k.port, 2);
        assert_eq!(
            (k.txdelay, k.persist, k.slottime, k.txtail),
            (Some(30), Some(63), Some(10), Some(2))
        );
        assert_eq!((k.paclen, k.bitrate, k.full_duplex), (128, 9600, true));
        assert_eq!(k.via, vec![call("WIDE1-1"), call("WIDE2-1")]);
        let caps = k.caps();
        assert_eq!((caps.mtu, caps.bitrate_bps), (128, 9600));
        assert!(caps.radio && caps.broadcast && !caps.half_duplex && !caps.connection_oriented);

        let d = parse("kiss+tcp://127.0.0.1:8001");
        assert_eq!(
            d,
            KissLinkConfig::new(KissTransport::Tcp("127.0.0.1:8001".into()))
        );
        let caps = d.caps();
        assert_eq!(
            (caps.mtu, caps.bitrate_bps, caps.half_duplex),
            (256, 1200, true)
        );
        assert!(
            d.param_frames().is_empty(),
            "nothing configured, nothing sent"
        );
        assert_eq!(
            parse("kiss+serial:///dev/ttyACM0").transport,
            KissTransport::Serial {
                path: "/dev/ttyACM0".into(),
                baud: DEFAULT_BAUD
            }
        );
        assert_eq!(
            parse("kiss+serial://COM3?baud=19200").transport,
            KissTransport::Serial {
                path: "COM3".into(),
                baud: 19200
            }
        );
        assert_eq!(
            parse("kiss+tcp://[::1]:8001").transport,
            KissTransport::Tcp("[::1]:8001".into())
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, canon) in [
            ("kiss+tcp://127.0.0.1:8001/", "kiss+tcp://127.0.0.1:8001"),
            (
                "kiss+serial:///dev/ttyUSB0?baud=9600&duplex=half",
                "kiss+serial:///dev/ttyUSB0",
            ),
            (
                "kiss+serial:///dev/serial/by-id/usb-Mobilinkd%20TNC3?paclen=128&baud=38400",
                "kiss+serial:///dev/serial/by-id/usb-Mobilinkd%20TNC3?baud=38400&paclen=128",
            ),
            (
                "kiss+tcp://tnc.local:8001?via=wide1-1&txdelay=40&duplex=full&port=1",
                "kiss+tcp://tnc.local:8001?port=1&txdelay=40&via=WIDE1-1&duplex=full",
            ),
        ] {
            let k = parse(input);
            assert_eq!(k.to_string(), canon, "{input}");
            assert_eq!(parse(canon), k, "{canon}");
        }
        assert_eq!(
            parse("kiss+serial:///dev/serial/by-id/usb-Mobilinkd%20TNC3").transport,
            KissTransport::Serial {
                path: "/dev/serial/by-id/usb-Mobilinkd TNC3".into(),
                baud: DEFAULT_BAUD
            }
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (url, needle) in [
            ("kiss+tcp://127.0.0.1:8001?port=16", "port"),
            ("kiss+tcp://127.0.0.1:8001?txdelay=256", "txdelay"),
            ("kiss+tcp://127.0.0.1:8001?persist=-1", "persist"),
            ("kiss+tcp://127.0.0.1:8001?slottime=x", "slottime"),
            ("kiss+tcp://127.0.0.1:8001?txtail=", "txtail"),
            ("kiss+tcp://127.0.0.1:8001?paclen=31", "paclen"),
            ("kiss+tcp://127.0.0.1:8001?paclen=2049", "paclen"),
            ("kiss+tcp://127.0.0.1:8001?bitrate=0", "bitrate"),
            ("kiss+tcp://127.0.0.1:8001?via=WIDE1-1,NOT_A_CALL", "via"),
            ("kiss+tcp://127.0.0.1:8001?via=A,B,C,D,E,F,G,H,I", "via"),
            ("kiss+tcp://127.0.0.1:8001?duplex=maybe", "duplex"),
            ("kiss+tcp://127.0.0.1:8001?baud=9600", "baud"),
            ("kiss+serial:///dev/ttyUSB0?baud=fast", "baud"),
            ("kiss+serial:///dev/ttyUSB0?bogus=1", "bogus"),
            ("kiss+serial:///dev/ttyUSB0?port=1&port=2", "port"),
            ("kiss+tcp://127.0.0.1", "port"),
            ("kiss+tcp://127.0.0.1:99999", "port"),
            ("kiss+serial://", "device"),
            ("kiss+serial://host/dev/ttyUSB0", "device"),
        ] {
            let e = parse_err(url);
            assert!(
                e.contains(needle),
                "{url}: error '{e}' should name '{needle}'"
            );
        }
        let e = parse_err("kiss+udp://127.0.0.1:1");
        assert!(e.contains("kiss+tcp") && e.contains("kiss+serial"), "{e}");
        assert!(parse("kiss+tcp://h:1?via=A,B,C,D,E,F,G,H").via.len() == ax25::MAX_DIGIS);
    }

    #[test]
    fn mtu_leaves_room_for_the_address_field() {
        let k = parse("kiss+tcp://h:1?paclen=1007&via=WIDE1-1,WIDE2-2");
        let mtu = k.caps().mtu;
        assert_eq!(mtu, 1007);
        let frame = ax25::encode_ui(&call("N0CALL-15"), &BROADCAST, &k.via, &vec![0; mtu]);
        assert!(frame.is_ok(), "a full-MTU frame must still encode");
    }

    #[test]
    fn paclen_is_capped_so_the_escaped_kiss_frame_fits_2048_bytes() {
        assert_eq!(PACLEN_RANGE.1, 1014);
        for (port, digis) in [(0u8, 0usize), (12, 0), (3, 2), (12, ax25::MAX_DIGIS)] {
            let most = max_paclen(port, digis);
            let via: Vec<Callsign> = (0..digis)
                .map(|i| call(&format!("WIDE{}-7", i % 8)))
                .collect();
            // The worst case: every information byte needs escaping.
            let info: Vec<u8> = (0..most)
                .map(|i| if i % 2 == 0 { 0xC0 } else { 0xDB })
                .collect();
            let frame = ax25::encode_ui(&call("N0CALL-15"), &call("N0CALL-14"), &via, &info)
                .expect("encode");
            let mut out = Vec::new();
            kiss::encode_data(port, &frame, &mut out);
            assert!(
                out.len() <= MAX_KISS_FRAME,
                "port {port}, {digis} digis: {}",
                out.len()
            );
            // One byte more would not fit.
            let mut more = Vec::new();
            let mut info2 = info.clone();
            info2.push(0xC0);
            let frame = ax25::encode_ui(&call("N0CALL-15"), &call("N0CALL-14"), &via, &info2)
                .expect("encode");
            kiss::encode_data(port, &frame, &mut more);
            assert!(
                more.len() > MAX_KISS_FRAME,
                "port {port}, {digis} digis: cap too low"
            );
        }
        let e = parse_err("kiss+tcp://h:1?paclen=2048");
        assert!(e.contains("paclen") && e.contains("1014"), "{e}");
        let e = parse_err("kiss+tcp://h:1?via=WIDE1-1&paclen=1014");
        assert!(e.contains("paclen") && e.contains("1011"), "{e}");
        assert_eq!(parse("kiss+tcp://h:1?port=12&paclen=1014").paclen, 1014);
    }

    #[test]
    fn presets_set_line_speed_and_kiss_parameters_and_the_url_wins() {
        let nino = parse("kiss+serial:///dev/ttyACM0?tnc=ninotnc");
        assert_eq!(
            nino.transport,
            KissTransport::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 57600
            }
        );
        assert_eq!(
            (nino.persist, nino.slottime, nino.txdelay),
            (Some(63), Some(10), None)
        );
        assert_eq!(nino.tnc, Some(TncPreset::NinoTnc));
        let mut frames = KissDecoder::new();
        frames.push(&nino.param_frames());
        let sent: Vec<(u8, Vec<u8>)> = std::iter::from_fn(|| frames.next_frame())
            .map(|f| f.map(|f| (f.command, f.payload)).expect("valid"))
            .collect();
        assert_eq!(sent, vec![(2, vec![63]), (3, vec![10])]);

        let mob = parse("kiss+serial:///dev/rfcomm0?tnc=mobilinkd");
        assert_eq!(
            mob.transport,
            KissTransport::Serial {
                path: "/dev/rfcomm0".into(),
                baud: DEFAULT_BAUD
            }
        );
        assert_eq!(
            (mob.persist, mob.slottime, mob.txdelay),
            (Some(63), Some(10), None)
        );

        let ken = parse("kiss+serial:///dev/ttyUSB0?tnc=kenwood");
        assert_eq!(
            ken.transport,
            KissTransport::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 9600
            }
        );
        assert_eq!((ken.txdelay, ken.bitrate), (Some(25), 1200));

        // The URL's own values win, before or after tnc=.
        for url in [
            "kiss+serial:///dev/ttyACM0?baud=115200&persist=127&tnc=ninotnc",
            "kiss+serial:///dev/ttyACM0?tnc=NinoTNC&baud=115200&persist=127",
        ] {
            let k = parse(url);
            assert_eq!(
                k.transport,
                KissTransport::Serial {
                    path: "/dev/ttyACM0".into(),
                    baud: 115200
                },
                "{url}"
            );
            assert_eq!((k.persist, k.slottime), (Some(127), Some(10)), "{url}");
            assert_eq!(
                k.to_string(),
                "kiss+serial:///dev/ttyACM0?tnc=ninotnc&baud=115200&persist=127"
            );
        }
        // Canonical form leaves out what the preset gives, and round-trips.
        for canon in [
            "kiss+serial:///dev/ttyACM0?tnc=ninotnc",
            "kiss+serial:///dev/ttyUSB0?tnc=kenwood&bitrate=9600",
            "kiss+tcp://127.0.0.1:8001?tnc=mobilinkd&txdelay=30",
        ] {
            let k = parse(canon);
            assert_eq!(k.to_string(), canon);
        }
        assert_eq!(
            parse("kiss+serial:///dev/ttyUSB0?tnc=kenwood&baud=9600&txdelay=25").to_string(),
            "kiss+serial:///dev/ttyUSB0?tnc=kenwood"
        );
        for (url, needle) in [
            ("kiss+serial:///dev/x?tnc=tnc-pi", "tnc"),
            ("kiss+serial:///dev/x?tnc=kenwood&tnc=kenwood", "tnc"),
            ("kiss+serial:///dev/x?tnc=kenwood&bitrate=4800", "bitrate"),
        ] {
            let e = parse_err(url);
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn prompt_watch_sees_a_command_prompt_only_between_frames() {
        let t0 = Instant::now();
        let mut w = PromptWatch::default();
        w.push(b"\r\ncmd:", t0);
        assert_eq!(w.due(), Some(t0 + PROMPT_SETTLE));
        // KISS frames afterwards: it was not a prompt.
        let mut frame = Vec::new();
        kiss::encode_data(0, b"xx", &mut frame);
        w.push(&frame, t0);
        assert_eq!(w.due(), None);
        // "cmd:" inside a frame's payload, frame closed later: no prompt.
        w.push(&[0xC0, 0x00, b'c', b'm', b'd', b':'], t0);
        assert!(w.due().is_some());
        w.push(&[b'!', 0xC0], t0);
        assert_eq!(w.due(), None);
        // Trailing white space still counts as the prompt, and does not restart the clock.
        w.push(b"?EH\r\ncmd:", t0);
        w.push(b" \r\n", t0 + Duration::from_millis(100));
        assert_eq!(w.due(), Some(t0 + PROMPT_SETTLE));
    }

    // --- the link over an in-memory TNC -------------------------------------------------

    const ME: &str = "N0CALL-1";

    fn kiss_ui(src: &str, dst: &Callsign, info: &[u8]) -> Vec<u8> {
        let frame = ax25::encode_ui(&call(src), dst, &[], info).expect("encode");
        let mut out = Vec::new();
        kiss::encode_data(0, &frame, &mut out);
        out
    }

    struct Harness {
        events: mpsc::Receiver<LinkEvent>,
        commands: mpsc::Sender<LinkCommand>,
        /// TNC ends of the pipes handed to the link, one per open.
        tncs: mpsc::Receiver<DuplexStream>,
        /// Opens to fail before the next succeeds.
        fail: Arc<Mutex<usize>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(url: &str, callsign: &str) -> Harness {
        let cfg = parse(url);
        let (ev_tx, events) = mpsc::channel(64);
        let (commands, cmd_rx) = mpsc::channel(64);
        let (tnc_tx, tncs) = mpsc::channel(4);
        let fail = Arc::new(Mutex::new(0usize));
        let f2 = fail.clone();
        let ctx = LinkContext {
            id: 7,
            events: ev_tx,
            commands: cmd_rx,
            peer_ids: PeerIds::default(),
            callsign: callsign.into(),
        };
        let task = tokio::spawn(run_with(cfg, ctx, move |_t| {
            let tnc_tx = tnc_tx.clone();
            let f2 = f2.clone();
            async move {
                {
                    let mut n = f2.lock().map_err(|_| "poisoned".to_string())?;
                    if *n > 0 {
                        *n -= 1;
                        return Err("cannot open /dev/fake: No such file or directory".into());
                    }
                }
                let (ours, theirs) = tokio::io::duplex(512);
                tnc_tx.send(theirs).await.map_err(|e| e.to_string())?;
                Ok(Box::new(ours) as Box<dyn KissIo>)
            }
        }));
        Harness {
            events,
            commands,
            tncs,
            fail,
            task,
        }
    }

    impl Harness {
        async fn event(&mut self) -> LinkEvent {
            tokio::time::timeout(Duration::from_secs(120), self.events.recv())
                .await
                .expect("event in time")
                .expect("link alive")
        }

        async fn no_event(&mut self) {
            let r = tokio::time::timeout(Duration::from_millis(200), self.events.recv()).await;
            assert!(r.is_err(), "unexpected event {r:?}");
        }

        async fn tnc(&mut self) -> DuplexStream {
            let t = self.tncs.recv().await.expect("link opened the TNC");
            match self.event().await {
                LinkEvent::Up { link: 7, caps } => assert!(caps.radio),
                e => panic!("expected Up, got {e:?}"),
            }
            t
        }

        /// A station's first frame: PeerUp then Frame; returns its peer id.
        async fn heard(&mut self, from: &str, info: &[u8]) -> PeerId {
            let peer = match self.event().await {
                LinkEvent::PeerUp {
                    link: 7,
                    peer,
                    remote,
                    outbound: false,
                } if remote == from => peer,
                e => panic!("expected PeerUp from {from}, got {e:?}"),
            };
            self.frame(peer, info).await;
            peer
        }

        async fn frame(&mut self, want_peer: PeerId, info: &[u8]) {
            match self.event().await {
                LinkEvent::Frame { peer, bytes } => {
                    assert_eq!(peer, want_peer);
                    assert_eq!(bytes, info);
                }
                e => panic!("expected Frame, got {e:?}"),
            }
        }
    }

    /// Next KISS frame the link wrote to the TNC.
    async fn written(tnc: &mut DuplexStream, dec: &mut KissDecoder) -> KissFrame {
        let mut buf = [0u8; 512];
        loop {
            if let Some(f) = dec.next_frame() {
                return f.expect("link writes valid KISS");
            }
            let n = tokio::time::timeout(Duration::from_secs(5), tnc.read(&mut buf))
                .await
                .expect("link wrote in time")
                .expect("read pipe");
            assert!(n > 0, "link closed the pipe");
            dec.push(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn heard_station_becomes_a_peer_and_sends_are_identified() {
        let mut h = start("kiss+tcp://tnc:8001?txdelay=30&persist=63", ME);
        let mut tnc = h.tncs.recv().await.expect("opened");
        let mut dec = KissDecoder::new();
        // Parameters go out before anything else, on every open.
        assert_eq!(
            written(&mut tnc, &mut dec).await,
            KissFrame {
                port: 0,
                command: KissCommand::TxDelay as u8,
                payload: vec![30]
            }
        );
        assert_eq!(written(&mut tnc, &mut dec).await.payload, vec![63]);
        match h.event().await {
            LinkEvent::Up { caps, .. } => assert_eq!(caps.mtu, 256),
            e => panic!("{e:?}"),
        }

        tnc.write_all(&kiss_ui("N0CALL-2", &BROADCAST, b"hello all"))
            .await
            .expect("write");
        let peer = h.heard("N0CALL-2", b"hello all").await;
        // A directed frame to us from the same station: no second PeerUp.
        tnc.write_all(&kiss_ui("N0CALL-2", &call(ME), b"just you"))
            .await
            .expect("write");
        h.frame(peer, b"just you").await;

        h.commands
            .send(LinkCommand::Send {
                peer,
                bytes: b"reply".to_vec(),
            })
            .await
            .expect("send");
        let f = written(&mut tnc, &mut dec).await;
        assert_eq!((f.port, f.command), (0, 0));
        let ui = ax25::decode_ui(&f.payload).expect("UI frame");
        assert_eq!((ui.src, ui.dst), (call(ME), call("N0CALL-2")));
        assert_eq!((ui.pid, ui.info.as_slice()), (0xF0, &b"reply"[..]));
        assert!(ui.digis.is_empty());

        h.commands
            .send(LinkCommand::Broadcast {
                bytes: b"beacon".to_vec(),
            })
            .await
            .expect("send");
        let ui = ax25::decode_ui(&written(&mut tnc, &mut dec).await.payload).expect("UI");
        assert_eq!((ui.src, ui.dst), (call(ME), BROADCAST));
        assert_eq!(ui.info, b"beacon");

        // Too long for the MTU: dropped, not truncated or split.
        h.commands
            .send(LinkCommand::Send {
                peer,
                bytes: vec![1; 257],
            })
            .await
            .expect("send");
        h.commands
            .send(LinkCommand::Send {
                peer,
                bytes: vec![2; 256],
            })
            .await
            .expect("send");
        let ui = ax25::decode_ui(&written(&mut tnc, &mut dec).await.payload).expect("UI");
        assert_eq!(ui.info, vec![2; 256]);

        // Disconnect forgets the station; hearing it again makes it new.
        h.commands
            .send(LinkCommand::Disconnect { peer })
            .await
            .expect("send");
        assert!(matches!(h.event().await, LinkEvent::PeerDown { peer: p, .. } if p == peer));
        tnc.write_all(&kiss_ui("N0CALL-2", &BROADCAST, b"again"))
            .await
            .expect("write");
        let again = h.heard("N0CALL-2", b"again").await;
        assert_ne!(again, peer);
        h.task.abort();
    }

    #[tokio::test]
    async fn digipeater_path_is_used_on_transmit() {
        let mut h = start("kiss+tcp://tnc:8001?via=WIDE1-1,WIDE2-1&port=3", ME);
        let mut tnc = h.tnc().await;
        h.commands
            .send(LinkCommand::Broadcast { bytes: vec![9] })
            .await
            .expect("send");
        let f = written(&mut tnc, &mut KissDecoder::new()).await;
        assert_eq!(f.port, 3);
        let ui = ax25::decode_ui(&f.payload).expect("UI");
        let path: Vec<Callsign> = ui.digis.iter().map(|v| v.call).collect();
        assert_eq!(path, vec![call("WIDE1-1"), call("WIDE2-1")]);
        h.task.abort();
    }

    #[tokio::test]
    async fn frames_not_for_us_and_garbage_are_ignored_without_harm() {
        let mut h = start("kiss+tcp://tnc:8001", ME);
        let mut tnc = h.tnc().await;
        let mut junk = Vec::new();
        // Another station's directed frame, our own echo, a wrong SSID for us.
        junk.extend(kiss_ui("N0CALL-2", &call("N0CALL-3"), b"not ours"));
        junk.extend(kiss_ui(ME, &BROADCAST, b"echo"));
        junk.extend(kiss_ui("N0CALL-2", &call("N0CALL-9"), b"wrong ssid"));
        // A SABM (connected mode), a UI with another PID, a frame on KISS port 1.
        let mut sabm = call("N0CALL-1").to_address_bytes(true, false).to_vec();
        sabm.extend(call("N0CALL-2").to_address_bytes(false, true));
        sabm.push(0x3F);
        kiss::encode_data(0, &sabm, &mut junk);
        let mut other_pid =
            ax25::encode_ui(&call("N0CALL-2"), &BROADCAST, &[], b"x").expect("encode");
        other_pid[15] = 0xCF;
        kiss::encode_data(0, &other_pid, &mut junk);
        let ok = ax25::encode_ui(&call("N0CALL-2"), &BROADCAST, &[], b"p1").expect("encode");
        kiss::encode_data(1, &ok, &mut junk);
        // Line noise: bad escapes, truncated addresses, oversized frame, lone FENDs.
        junk.extend([0xC0, 0x00, 0xDB, 0x01, 0xC0, 0xC0, 0xC0]);
        junk.extend([0xC0, 0x00, 0x96, 0x70, 0x9A, 0xC0]);
        junk.push(0xC0);
        junk.push(0x00);
        junk.extend(std::iter::repeat_n(0x41, 5000));
        junk.push(0xC0);
        junk.extend([0x12, 0x34, 0xFF, 0xDB]);
        for chunk in junk.chunks(97) {
            tnc.write_all(chunk).await.expect("write");
        }
        h.no_event().await;
        // The link still works after all that.
        tnc.write_all(&kiss_ui("N0CALL-2", &call(ME), b"still here"))
            .await
            .expect("write");
        h.heard("N0CALL-2", b"still here").await;
        h.task.abort();
    }

    #[tokio::test]
    async fn random_bytes_never_kill_the_link() {
        let mut h = start("kiss+tcp://tnc:8001", ME);
        let mut tnc = h.tnc().await;
        let mut x: u32 = 0x1234_5678;
        let mut noise = Vec::with_capacity(64 * 1024);
        for _ in 0..64 * 1024 {
            // xorshift: reproducible noise, biased towards KISS special bytes.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(match x % 16 {
                0 => 0xC0,
                1 => 0xDB,
                _ => (x >> 8) as u8,
            });
        }
        tnc.write_all(&noise).await.expect("write");
        // Whatever the noise decoded to is the core's business; drain it.
        while tokio::time::timeout(Duration::from_millis(200), h.events.recv())
            .await
            .is_ok()
        {}
        tnc.write_all(&kiss_ui("N0CALL-5", &call(ME), b"after noise"))
            .await
            .expect("write");
        loop {
            match h.event().await {
                LinkEvent::Frame { bytes, .. } if bytes == b"after noise" => break,
                LinkEvent::Down { reason, .. } => panic!("link went down: {reason}"),
                _ => {}
            }
        }
        h.task.abort();
    }

    #[tokio::test]
    async fn lost_tnc_reports_down_forgets_stations_and_reopens() {
        let mut h = start("kiss+tcp://tnc:8001", ME);
        let mut tnc = h.tnc().await;
        tnc.write_all(&kiss_ui("N0CALL-2", &BROADCAST, b"hi"))
            .await
            .expect("write");
        let peer = h.heard("N0CALL-2", b"hi").await;
        *h.fail.lock().expect("lock") = 1;
        drop(tnc);
        match h.event().await {
            LinkEvent::Down { reason, .. } => {
                assert!(
                    reason.contains("tnc:8001") && reason.contains("closed"),
                    "{reason}"
                )
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(h.event().await, LinkEvent::PeerDown { peer: p, .. } if p == peer));
        // Sends while down are dropped without blocking.
        for _ in 0..200 {
            h.commands
                .send(LinkCommand::Send {
                    peer,
                    bytes: vec![1],
                })
                .await
                .expect("send");
        }
        let t0 = Instant::now();
        match h.event().await {
            LinkEvent::Down { reason, .. } => assert!(reason.contains("/dev/fake"), "{reason}"),
            e => panic!("{e:?}"),
        }
        let mut tnc = h.tnc().await;
        // Backoff 1 s, then 2 s before the second attempt.
        assert!(
            t0.elapsed() >= Duration::from_millis(2900),
            "{:?}",
            t0.elapsed()
        );
        let mut dec = KissDecoder::new();
        tnc.write_all(&kiss_ui("N0CALL-2", &BROADCAST, b"back"))
            .await
            .expect("write");
        let peer2 = h.heard("N0CALL-2", b"back").await;
        h.commands
            .send(LinkCommand::Send {
                peer: peer2,
                bytes: b"ok".to_vec(),
            })
            .await
            .expect("send");
        let ui = ax25::decode_ui(&written(&mut tnc, &mut dec).await.payload).expect("UI");
        assert_eq!(ui.info, b"ok", "nothing sent while down was queued");
        h.task.abort();
    }

    #[tokio::test]
    async fn invalid_callsign_keeps_the_link_down_but_drains_commands() {
        let mut h = start("kiss+tcp://tnc:8001", "");
        match h.event().await {
            LinkEvent::Down { reason, .. } => assert!(reason.contains("callsign"), "{reason}"),
            e => panic!("{e:?}"),
        }
        for _ in 0..200 {
            h.commands
                .send(LinkCommand::Broadcast { bytes: vec![1] })
                .await
                .expect("drained");
        }
        assert!(h.tncs.try_recv().is_err(), "never opened the TNC");
        h.task.abort();
    }

    // --- state without I/O -----------------------------------------------------------

    fn state() -> Link {
        Link::new(parse("kiss+tcp://t:1"), call(ME), PeerIds::default())
    }

    fn rx(link: &mut Link, src: &str, info: &[u8]) -> Vec<LinkEvent> {
        rx_to(link, src, &BROADCAST, &[], info)
    }

    fn rx_to(
        link: &mut Link,
        src: &str,
        dst: &Callsign,
        via: &[Callsign],
        info: &[u8],
    ) -> Vec<LinkEvent> {
        let frame = ax25::encode_ui(&call(src), dst, via, info).expect("encode");
        link.received(
            1,
            KissFrame {
                port: 0,
                command: 0,
                payload: frame,
            },
        )
    }

    #[test]
    fn station_table_is_bounded_and_evicts_least_recently_heard() {
        let mut l = state();
        let name = |i: usize| format!("S{i}-{}", i % 16);
        for i in 0..MAX_STATIONS {
            assert_eq!(rx(&mut l, &name(i), b"x").len(), 2);
        }
        // Station 0 speaks again, so station 1 is now the least recently heard.
        assert_eq!(rx(&mut l, &name(0), b"y").len(), 1);
        let evs = rx(&mut l, "NEW", b"z");
        assert_eq!(l.stations.len(), MAX_STATIONS);
        match &evs[0] {
            LinkEvent::PeerDown { reason, .. } => assert!(reason.contains(&name(1)), "{reason}"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(evs[1], LinkEvent::PeerUp { .. }));
        assert!(l.stations.contains(&call(&name(0))));
    }

    #[test]
    fn full_queue_drops_broadcasts_before_directed_frames() {
        let mut l = state();
        let dst = call("N0CALL-2");
        l.enqueue(BROADCAST, b"b0", true);
        for i in 0..OUT_QUEUE - 2 {
            l.enqueue(dst, &[i as u8], false);
        }
        l.enqueue(BROADCAST, b"b1", true);
        assert_eq!(l.queue.len(), OUT_QUEUE);
        l.enqueue(dst, b"d", false);
        l.enqueue(dst, b"e", false);
        assert_eq!(l.queue.len(), OUT_QUEUE);
        assert!(
            l.queue.iter().all(|o| !o.broadcast),
            "both broadcasts went first"
        );
        // With no broadcast left, the oldest directed frame goes.
        l.enqueue(dst, b"f", false);
        assert_eq!(l.queue.len(), OUT_QUEUE);
        assert_eq!(l.stats.tx_dropped, 3);
        let first = ax25::decode_ui(&kiss_payload(&l.queue[0].kiss)).expect("UI");
        assert_eq!(first.info, vec![1]);
    }

    fn kiss_payload(k: &[u8]) -> Vec<u8> {
        let mut d = KissDecoder::new();
        d.push(k);
        d.next_frame()
            .and_then(|r| r.ok())
            .map(|f| f.payload)
            .unwrap_or_default()
    }

    #[test]
    fn digipeated_copy_of_a_delivered_frame_is_suppressed() {
        let mut l = state();
        assert_eq!(rx(&mut l, "N0CALL-2", b"m").len(), 2);
        let mut repeated = ax25::encode_ui(&call("N0CALL-2"), &BROADCAST, &[call("WIDE1-1")], b"m")
            .expect("encode");
        repeated[20] |= 0x80; // H bit of the digipeater
        let f = KissFrame {
            port: 0,
            command: 0,
            payload: repeated,
        };
        assert!(l.received(1, f.clone()).is_empty());
        assert_eq!(l.stats.duplicates, 1);
        // A direct retransmission is the sender's business and is delivered.
        assert_eq!(rx(&mut l, "N0CALL-2", b"m").len(), 1);
        // A repeated frame not heard before is delivered too.
        let mut other = f;
        other.payload.pop();
        other.payload.push(b'n');
        assert_eq!(l.received(1, other).len(), 1);
    }

    fn rx_aprs(link: &mut Link, src: &str, info: &[u8]) -> Vec<LinkEvent> {
        rx_to(link, src, &aprs::tocall(), &[call("WIDE1-1")], info)
    }

    #[test]
    fn a_heard_skywave_aprs_beacon_makes_a_station_and_other_aprs_does_not() {
        let mut l = state();
        l.cfg.aprs_network = Some("regtest".into());
        let evs = rx_aprs(&mut l, "N0CALL-5", b">skywave regtest h=12 tip=0a1b2c3d");
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert!(
            matches!(&evs[0], LinkEvent::PeerUp { remote, .. } if remote == "N0CALL-5"),
            "{evs:?}"
        );
        // Heard again (a digipeated copy, the next beacon): still one station, no frame
        // for the core.
        assert!(rx_aprs(&mut l, "N0CALL-5", b">skywave regtest h=13 tip=0a1b2c3e").is_empty());
        assert_eq!(l.stations.len(), 1);
        // Skywave nodes of another network, and APRS that is not a skywave beacon, are not
        // stations of ours.
        assert!(rx_aprs(&mut l, "N0CALL-6", b">skywave main h=12 tip=0a1b2c3d").is_empty());
        assert!(rx_aprs(&mut l, "N0CALL-7", b">Monitoring 144.800").is_empty());
        assert!(rx_aprs(&mut l, "N0CALL-8", b"!4903.50N/07201.75W-").is_empty());
        assert_eq!(l.stations.len(), 1);
        assert_eq!(l.stats.not_for_us, 3);
        // A station whose callsign looks like a tocall still gets its skywave frames.
        let mut ap = Link::new(parse("kiss+tcp://t:1"), call("AP2ABC"), PeerIds::default());
        let evs = rx_to(&mut ap, "N0CALL-2", &call("AP2ABC"), &[], b"x");
        assert!(
            matches!(evs.last(), Some(LinkEvent::Frame { bytes, .. }) if bytes == b"x"),
            "{evs:?}"
        );
    }

    #[test]
    fn an_aprs_command_sends_a_status_frame_to_the_tocall_through_the_aprs_path() {
        let mut l = Link::new(
            parse("kiss+tcp://t:1?aprs_status=true&aprs_path=WIDE1-1,WIDE2-1&via=RELAY"),
            call(ME),
            PeerIds::default(),
        );
        let info = b">skywave regtest h=1 tip=00112233".to_vec();
        assert!(l
            .command(LinkCommand::Aprs { info: info.clone() }, true)
            .is_empty());
        let ui = ax25::decode_ui(&kiss_payload(&l.queue[0].kiss)).expect("UI");
        assert_eq!(ui.src, call(ME));
        assert_eq!(ui.dst.to_string(), "APZSKY");
        let path: Vec<String> = ui.digis.iter().map(|d| d.call.to_string()).collect();
        assert_eq!(path, ["WIDE1-1", "WIDE2-1"]);
        assert_eq!(ui.pid, ax25::PID_NO_L3);
        assert_eq!(ui.info, info);
        // Without aprs_status the link never sends one.
        let mut quiet = state();
        quiet.command(LinkCommand::Aprs { info }, true);
        assert!(quiet.queue.is_empty());
    }

    #[test]
    fn aprs_parameters_parse_and_round_trip() {
        let k = parse("kiss+tcp://t:1");
        assert!(!k.aprs_status);
        assert_eq!(k.aprs_every_min, 30);
        assert_eq!(path_text(&k.aprs_path), "WIDE1-1");
        let canon = "kiss+tcp://t:1?aprs_status=true&aprs_every=60&aprs_path=WIDE2-2";
        let k = parse(canon);
        assert!(k.aprs_status);
        assert_eq!(k.aprs_every_min, 60);
        assert_eq!(k.to_string(), canon);
        assert!(parse("kiss+tcp://t:1?aprs_path=").aprs_path.is_empty());
        for (url, needle) in [
            ("kiss+tcp://t:1?aprs_status=yes", "aprs_status"),
            ("kiss+tcp://t:1?aprs_every=5", "aprs_every"),
            ("kiss+tcp://t:1?aprs_every=1441", "aprs_every"),
            ("kiss+tcp://t:1?aprs_path=NOT_A_CALL", "aprs_path"),
        ] {
            let e = parse_err(url);
            assert!(e.contains(needle), "{url}: {e}");
        }
    }
}
