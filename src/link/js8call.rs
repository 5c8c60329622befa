//! JS8Call links: packets as directed JS8 text messages through JS8Call's TCP API.
//!
//! JS8Call (the server, `127.0.0.1:2442` once enabled in its settings) takes one JSON
//! object per line. We send `TX.SEND_MESSAGE` with `"<PEERCALL> <text>"` (JS8Call codes
//! the callsign into a directed header frame and the rest as free text) or
//! `"@SKYWAVE <text>"` for broadcasts, one message at a time: the next goes only once
//! JS8Call has keyed down for every frame of the last (`RIG.PTT` off), so its own
//! transmit buffer never holds more than one packet. `RX.DIRECTED` events to our callsign
//! or to `@SKYWAVE` carry the packets of other stations; the text codec is
//! [`crate::wire::js8text`].
//!
//! JS8 callsigns have no SSID: the station callsign `N0CALL-1` is `N0CALL` on JS8, and
//! peers are named by their JS8 callsign.

use super::backoff::Backoff;
use super::lines::Lines;
use super::params::UrlParts;
use super::stations::Stations;
use super::{
    LinkCaps, LinkCommand, LinkContext, LinkEnv, LinkEvent, LinkId, PeerIds, Scheme, Started,
    Transport,
};
use crate::wire::js8text::{self, Js8Speed};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// JS8Call's API port.
pub const DEFAULT_PORT: u16 = 2442;
/// Packet bytes per JS8 message: about 7 frames (one header, six of text), under two
/// minutes at normal speed. Longer messages lose more to one missed frame.
pub const MTU: usize = 32;
/// The JS8 group that broadcasts go to. Stations must add it to JS8Call's callsign
/// groups to receive them.
pub const GROUP: &str = "@SKYWAVE";
/// Longest API line read; longer lines are skipped whole.
pub const MAX_LINE: usize = 16 * 1024;

/// Stations remembered at once; new ones beyond this are ignored until one goes.
const MAX_STATIONS: usize = 64;
/// Messages waiting for JS8Call (each is minutes of air).
const OUT_QUEUE: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A JS8Call link as given by its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Js8LinkConfig {
    /// JS8Call's API address, `host:port`.
    pub addr: String,
    /// JS8 callsigns to talk to from the start (others join when heard).
    pub peers: Vec<String>,
    /// JS8 speed, set on connect.
    pub speed: Js8Speed,
    /// Whether whole blocks may cross this link.
    pub blocks: bool,
}

impl Js8LinkConfig {
    /// Parse `js8call://host[:port]?peer=CALL,CALL&speed=normal&blocks=0`.
    ///
    /// Parameters: `peer` (comma-separated JS8 callsigns), `speed` (`slow`, `normal`,
    /// `fast`, `turbo`; default normal), `blocks` (`0` or `1`; default 0). Errors name
    /// the offending parameter.
    pub fn parse_url(s: &str) -> Result<Js8LinkConfig, String> {
        let url = UrlParts::parse(s)?;
        if url.scheme() != "js8call" {
            return Err(url.err("not a js8call URL"));
        }
        let (host, port) = url.host_port("js8call://host:port", "", Some(DEFAULT_PORT))?;
        let mut cfg = Js8LinkConfig {
            addr: format!("{host}:{port}"),
            peers: Vec::new(),
            speed: Js8Speed::Normal,
            blocks: false,
        };
        for p in url.params()? {
            match p.key.as_str() {
                "peer" => {
                    for c in p.value.split(',').filter(|c| !c.is_empty()) {
                        let c = crate::callsign::js8(c).map_err(|e| p.bad(&e))?;
                        if !cfg.peers.contains(&c) {
                            cfg.peers.push(c);
                        }
                    }
                }
                "speed" => {
                    cfg.speed = Js8Speed::from_name(&p.value)
                        .ok_or_else(|| p.bad("expected slow, normal, fast or turbo"))?
                }
                "blocks" => {
                    cfg.blocks = p.one_of(&[("0", false), ("1", true)], "expected 0 or 1")?
                }
                _ => return Err(p.unknown("peer, speed, blocks")),
            }
        }
        Ok(cfg)
    }

    /// What the link reports to the core: MTU-sized packets, one message each, at the
    /// payload rate left after the text encoding and JS8's framing (see
    /// [`js8text::effective_bitrate`]).
    pub fn caps(&self) -> LinkCaps {
        let rate = js8text::effective_bitrate(MTU, self.speed);
        LinkCaps {
            mtu: MTU,
            bitrate_bps: (rate.round() as u64).max(1),
            half_duplex: true,
            broadcast: true,
            text_only: true,
            connection_oriented: false,
            radio: true,
            blocks: self.blocks,
            carrier_sense: false,
            slot_ms: self.speed.frame_ms(),
        }
    }

    /// One frame's duration on this link in real time (shorter under an emulator that
    /// runs the air fast, with the core's clock: see [`crate::driver::Clock::system`]).
    fn frame(&self) -> Duration {
        crate::driver::clock().real(self.speed.frame_ms())
    }
}

/// The JS8Call transport's scheme: JS8Call's TCP API.
pub const SCHEMES: &[Scheme] = &[Scheme {
    name: "js8call",
    parse: |s| Ok(Box::new(Js8LinkConfig::parse_url(s)?)),
    radio: true,
}];

impl Transport for Js8LinkConfig {
    fn role(&self) -> String {
        format!("{self}: JS8Call")
    }

    fn start(&self, _env: LinkEnv, ctx: LinkContext) -> Started {
        Started::task(tokio::spawn(run_js8(self.clone(), ctx)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Canonical form: defaults omitted, parameters in a fixed order.
impl fmt::Display for Js8LinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "js8call://{}", self.addr)?;
        let mut q = Vec::new();
        if !self.peers.is_empty() {
            q.push(format!("peer={}", self.peers.join(",")));
        }
        if self.speed != Js8Speed::Normal {
            q.push(format!("speed={}", self.speed.name()));
        }
        if self.blocks {
            q.push("blocks=1".into());
        }
        if !q.is_empty() {
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

/// The packet text of an `RX.DIRECTED` event: JS8Call's `TEXT` is `"FROM: TO text ♢"`
/// (some versions leave out the sender); both address prefixes are removed if present.
pub fn directed_payload<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let mut t = text.trim_start();
    if let Some(rest) = t.strip_prefix(from).and_then(|r| r.strip_prefix(':')) {
        t = rest.trim_start();
    }
    if let Some(rest) = t.strip_prefix(to) {
        if rest.is_empty() || rest.starts_with(' ') {
            t = rest.trim_start();
        }
    }
    t
}

/// Counters of what the link did not deliver, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Js8Stats {
    /// API lines that were not JSON objects, or too long.
    pub malformed_lines: u64,
    /// Directed messages that were not skywave text (conversation, JS8 commands).
    pub not_packets: u64,
    /// Skywave-looking text that failed to decode.
    pub bad_packets: u64,
    /// Messages to other stations, or our own.
    pub not_for_us: u64,
    /// Packets dropped on transmit (too long, queue full, unknown peer, link down).
    pub tx_dropped: u64,
    /// Messages handed to JS8Call.
    pub tx_messages: u64,
}

struct Outgoing {
    to: String,
    text: String,
    frames: usize,
}

struct InFlight {
    frames: usize,
    offs: usize,
    ptt_on: bool,
    key_up: Option<Instant>,
    last_change: Instant,
    deadline: Instant,
}

enum End {
    Stopped,
    Lost(String),
}

struct Link {
    cfg: Js8LinkConfig,
    me: String,
    stations: Stations<String>,
    queue: VecDeque<Outgoing>,
    in_flight: Option<InFlight>,
    next_id: u64,
    air: Duration,
    stats: Js8Stats,
}

impl Link {
    fn new(cfg: Js8LinkConfig, me: String, ids: PeerIds) -> Link {
        Link {
            cfg,
            me,
            stations: Stations::new(MAX_STATIONS, ids),
            queue: VecDeque::new(),
            in_flight: None,
            next_id: 1,
            air: Duration::ZERO,
            stats: Js8Stats::default(),
        }
    }

    fn request(&mut self, kind: &str, value: &str, mut params: Value) -> String {
        if let Some(p) = params.as_object_mut() {
            p.insert("_ID".into(), json!(self.next_id));
        }
        self.next_id += 1;
        let mut line = json!({"type": kind, "value": value, "params": params}).to_string();
        line.push('\n');
        line
    }

    fn enqueue(&mut self, to: String, bytes: &[u8]) {
        if bytes.len() > MTU {
            warn!(
                len = bytes.len(),
                mtu = MTU,
                "packet longer than the JS8 MTU dropped"
            );
            self.stats.tx_dropped += 1;
            return;
        }
        let text = js8text::encode(bytes);
        let frames = js8text::message_frames(&text, self.cfg.speed, to.starts_with('@'));
        if self.queue.len() >= OUT_QUEUE {
            // A lost broadcast is repeated by the core anyway; a directed packet may be
            // part of a transfer, so broadcasts go first.
            let victim = self
                .queue
                .iter()
                .position(|o| o.to.starts_with('@'))
                .unwrap_or(0);
            warn!("JS8 queue full; dropping a queued message");
            self.queue.remove(victim);
            self.stats.tx_dropped += 1;
        }
        self.queue.push_back(Outgoing { to, text, frames });
    }

    fn command(&mut self, cmd: LinkCommand, up: bool) -> Vec<LinkEvent> {
        match cmd {
            LinkCommand::Send { peer, bytes } => match self.stations.call(peer) {
                Some(call) if up => self.enqueue(call.clone(), &bytes),
                _ => self.stats.tx_dropped += 1,
            },
            LinkCommand::Broadcast { bytes } => {
                if up {
                    self.enqueue(GROUP.to_string(), &bytes);
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
            // Stations are reached by callsign, not by address, and JS8 has no sessions
            // to open.
            LinkCommand::Dial { .. } | LinkCommand::Connect | LinkCommand::Aprs { .. } => {}
        }
        Vec::new()
    }

    /// One API line from JS8Call. Returns events to report.
    fn line(&mut self, link: LinkId, line: &[u8], now: Instant) -> Vec<LinkEvent> {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                self.stats.malformed_lines += 1;
                info!(
                    len = line.len(),
                    "JS8Call API line that is not a JSON object ignored"
                );
                return Vec::new();
            }
        };
        let kind = v["type"].as_str().unwrap_or("");
        let value = v["value"].as_str().unwrap_or("");
        let params = &v["params"];
        match kind {
            "STATION.CALLSIGN" => {
                let theirs = value.trim().to_ascii_uppercase();
                if theirs != self.me {
                    warn!(
                        js8call = %theirs, ours = %self.me,
                        "JS8Call's callsign differs from the station callsign's base call"
                    );
                } else {
                    info!(callsign = %theirs, "JS8Call callsign matches");
                }
            }
            "MODE.SPEED" => {
                let speed = params["SPEED"].as_u64().and_then(Js8Speed::from_api);
                if speed != Some(self.cfg.speed) {
                    warn!(
                        reported = ?params["SPEED"], want = self.cfg.speed.name(),
                        "JS8Call reports another speed"
                    );
                }
            }
            "RIG.PTT" => {
                let on = params["PTT"]
                    .as_bool()
                    .unwrap_or_else(|| value.eq_ignore_ascii_case("on"));
                self.ptt(on, now);
            }
            "TX.FRAME" => debug!("JS8Call transmitting a frame"),
            "RX.DIRECTED" => return self.directed(link, params, value),
            _ => {}
        }
        Vec::new()
    }

    fn ptt(&mut self, on: bool, now: Instant) {
        let Some(f) = self.in_flight.as_mut() else {
            debug!(on, "PTT change with nothing of ours in flight");
            return;
        };
        if on && !f.ptt_on {
            f.key_up = Some(now);
        }
        if !on && f.ptt_on {
            f.offs += 1;
            if let Some(t) = f.key_up.take() {
                self.air += now.duration_since(t);
                debug!(
                    air_ms = now.duration_since(t).as_millis() as u64,
                    total_air_s = self.air.as_secs(),
                    "JS8 frame sent"
                );
            }
        }
        f.ptt_on = on;
        f.last_change = now;
    }

    /// Is the message in flight done? Once every frame keyed down, or the radio has been
    /// quiet for 1.5 frames after keying, or on a generous deadline.
    fn check_done(&mut self, now: Instant) {
        let quiet = self.cfg.frame() * 3 / 2;
        let done = match &self.in_flight {
            Some(f) => {
                if now >= f.deadline {
                    warn!(
                        frames = f.frames,
                        keyed = f.offs,
                        "JS8Call did not finish the message in time (is TX enabled?)"
                    );
                    true
                } else {
                    !f.ptt_on
                        && (f.offs >= f.frames || (f.offs > 0 && now >= f.last_change + quiet))
                }
            }
            None => false,
        };
        if done {
            self.in_flight = None;
        }
    }

    fn next_check(&self) -> Option<Instant> {
        let f = self.in_flight.as_ref()?;
        let quiet = self.cfg.frame() * 3 / 2;
        Some(if !f.ptt_on && f.offs > 0 {
            f.deadline.min(f.last_change + quiet)
        } else {
            f.deadline
        })
    }

    fn directed(&mut self, link: LinkId, params: &Value, value: &str) -> Vec<LinkEvent> {
        let from = params["FROM"]
            .as_str()
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        let to = params["TO"]
            .as_str()
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        if from.is_empty() || from == self.me || (to != self.me && to != GROUP) {
            self.stats.not_for_us += 1;
            return Vec::new();
        }
        if params["CMD"].as_str().is_some_and(|c| !c.trim().is_empty()) {
            // A JS8 command (SNR?, ACK, HEARTBEAT...), not free text.
            self.stats.not_packets += 1;
            return Vec::new();
        }
        let raw = params["TEXT"].as_str().unwrap_or(value);
        let text = directed_payload(raw, &from, &to);
        if crate::callsign::js8(&from).is_err() {
            self.stats.not_for_us += 1;
            debug!(%from, "directed message from an unusable callsign ignored");
            return Vec::new();
        }
        match js8text::decode(text) {
            Ok(bytes) => {
                let mut evs = Vec::new();
                let Some(peer) = self.stations.heard(link, &from, false, &mut evs) else {
                    warn!(%from, "JS8 station table full of named stations; ignoring {from}");
                    return evs;
                };
                evs.push(LinkEvent::Frame { peer, bytes });
                evs
            }
            Err(e) if js8text::looks_like_packet(text) => {
                // A JS8 frame lost or misdecoded in mid-message gives exactly this: on
                // radio that is the channel, not the station, so it is counted and
                // dropped (the packet layer NACKs the missing fragment), never scored.
                self.stats.bad_packets += 1;
                info!(%from, "damaged skywave text from {from} dropped: {e}");
                Vec::new()
            }
            Err(_) => {
                self.stats.not_packets += 1;
                info!(%from, %to, len = text.len(), "directed JS8 text that is not skywave ignored");
                Vec::new()
            }
        }
    }

    fn forget_all(&mut self, reason: &str) -> Vec<LinkEvent> {
        self.queue.clear();
        self.in_flight = None;
        self.stations.forget_all(reason)
    }
}

/// Run a JS8Call link until the driver goes away: connect to the API, move packets, and
/// reconnect with backoff (1 s doubling to 60 s) whenever the connection is lost.
pub async fn run_js8(cfg: Js8LinkConfig, mut ctx: LinkContext) {
    let me = match crate::callsign::js8_base(&ctx.callsign) {
        Ok(c) => c,
        Err(e) => {
            // Transmitting without identification is not allowed: stay down, but drain
            // commands so the driver never blocks.
            let reason = format!("JS8Call link needs the station callsign: {e}");
            super::stay_down(&mut ctx, reason).await;
            return;
        }
    };
    let mut link = Link::new(cfg, me, ctx.peer_ids.clone());
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_RESET);
    loop {
        let addr = link.cfg.addr.clone();
        let connecting = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(addr.clone()),
        );
        let Some(opened) =
            super::serving(&mut ctx, connecting, |cmd| link.command(cmd, false)).await
        else {
            return;
        };
        let reason = match opened {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let started = Instant::now();
                info!(link = ctx.id, %addr, "JS8Call API connected");
                let end = session(stream, &mut link, &mut ctx).await;
                backoff.ended_after(started.elapsed());
                match end {
                    End::Stopped => return,
                    End::Lost(why) => format!("JS8Call API at {addr} lost: {why}"),
                }
            }
            Ok(Err(e)) => format!("cannot connect to JS8Call API at {addr}: {e}"),
            Err(_) => format!("cannot connect to JS8Call API at {addr}: timed out"),
        };
        let wait = backoff.next_wait();
        debug!(link = ctx.id, %reason, retry_s = wait.as_secs(), "JS8Call link down");
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

async fn send_line(wr: &mut OwnedWriteHalf, line: &str) -> Result<(), End> {
    wr.write_all(line.as_bytes())
        .await
        .map_err(|e| End::Lost(format!("write error: {e}")))
}

/// One API connection: ask the callsign, set the speed, report Up and the configured
/// peers, then move messages until the connection fails.
async fn session(stream: tokio::net::TcpStream, link: &mut Link, ctx: &mut LinkContext) -> End {
    let (mut rd, mut wr) = stream.into_split();
    let hello = [
        link.request("STATION.GET_CALLSIGN", "", json!({})),
        link.request(
            "MODE.SET_SPEED",
            "",
            json!({"SPEED": link.cfg.speed.api_value()}),
        ),
    ];
    for l in &hello {
        if let Err(e) = send_line(&mut wr, l).await {
            return e;
        }
    }
    let mut evs = vec![LinkEvent::Up {
        link: ctx.id,
        caps: link.cfg.caps(),
    }];
    for call in link.cfg.peers.clone() {
        link.stations.heard(ctx.id, &call, true, &mut evs);
    }
    if !super::emit(ctx, evs).await {
        return End::Stopped;
    }
    let mut lines = Lines::new(MAX_LINE);
    let mut buf = vec![0u8; 4096];
    loop {
        if link.in_flight.is_none() {
            if let Some(o) = link.queue.pop_front() {
                let value = format!("{} {}", o.to, o.text);
                let line = link.request("TX.SEND_MESSAGE", &value, json!({}));
                if let Err(e) = send_line(&mut wr, &line).await {
                    return e;
                }
                let now = Instant::now();
                link.stats.tx_messages += 1;
                debug!(to = %o.to, frames = o.frames, "message handed to JS8Call");
                link.in_flight = Some(InFlight {
                    frames: o.frames,
                    offs: 0,
                    ptt_on: false,
                    key_up: None,
                    last_change: now,
                    deadline: now + link.cfg.frame() * (2 * o.frames as u32 + 4),
                });
            }
        }
        let check = link.next_check();
        let tick = tokio::time::sleep_until(check.unwrap_or_else(Instant::now));
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => return End::Lost("closed by JS8Call".into()),
                Ok(n) => {
                    for l in lines.push(&buf[..n]) {
                        let Ok(l) = l else {
                            link.stats.malformed_lines += 1;
                            info!("JS8Call API line over {MAX_LINE} bytes dropped");
                            continue;
                        };
                        let now = Instant::now();
                        let evs = link.line(ctx.id, &l, now);
                        link.check_done(now);
                        if !super::emit(ctx, evs).await {
                            return End::Stopped;
                        }
                    }
                }
                Err(e) => return End::Lost(format!("read error: {e}")),
            },
            cmd = ctx.commands.recv() => match cmd {
                Some(cmd) => {
                    let evs = link.command(cmd, true);
                    if !super::emit(ctx, evs).await {
                        return End::Stopped;
                    }
                }
                None => return End::Stopped,
            },
            _ = tick, if check.is_some() => link.check_done(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkUrl;

    fn parse(s: &str) -> Js8LinkConfig {
        LinkUrl::parse(s)
            .ok()
            .and_then(|u| u.get::<Js8LinkConfig>().cloned())
            .unwrap_or_else(|| panic!("{s}: not a Js8 link"))
    }

    #[test]
    fn parses_urls_and_names_bad_parameters() {
        let c = parse("js8call://127.0.0.1:2442?peer=n0call,N1ABC&speed=turbo&blocks=1");
        assert_eq!(c.addr, "127.0.0.1:2442");
        assert_eq!(c.peers, vec!["N0CALL", "N1ABC"]);
        assert_eq!((c.speed, c.blocks), (Js8Speed::Turbo, true));
        let caps = c.caps();
        assert_eq!((caps.mtu, caps.bitrate_bps), (MTU, 6));
        assert!(caps.text_only && caps.radio && caps.half_duplex && caps.broadcast && caps.blocks);
        assert!(!caps.connection_oriented);
        // JS8Call keys up on period boundaries without listening first.
        assert_eq!((caps.carrier_sense, caps.slot_ms), (false, 6_000));
        let d = parse("js8call://localhost");
        assert_eq!(
            (d.addr.as_str(), d.speed, d.blocks),
            ("localhost:2442", Js8Speed::Normal, false)
        );
        assert_eq!(d.caps().bitrate_bps, 2);
        assert!(!d.caps().blocks);
        assert_eq!(parse("js8call://h:1?speed=slow").caps().bitrate_bps, 1);
        for (url, needle) in [
            ("js8call://h:1?speed=ludicrous", "speed"),
            ("js8call://h:1?blocks=yes", "blocks"),
            ("js8call://h:1?peer=N0CALL-1", "SSID"),
            ("js8call://h:1?peer=@ALLCALL", "group"),
            ("js8call://h:1?peer=XX", "peer"),
            ("js8call://h:1?mtu=64", "mtu"),
            // Emulators speed up the whole node (SKYWAVE_TIME_SCALE), not one link.
            ("js8call://h:1?timescale=40", "timescale"),
            ("js8call://h:1?speed=fast&speed=slow", "speed"),
            ("js8call://h:1/x", "path"),
        ] {
            let e = LinkUrl::parse(url).expect_err(url);
            assert!(e.contains(needle), "{url}: '{e}' should name '{needle}'");
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, canon) in [
            (
                "js8call://127.0.0.1:2442?blocks=0&speed=normal",
                "js8call://127.0.0.1:2442",
            ),
            (
                "js8call://h?blocks=1&peer=k1abc&speed=fast",
                "js8call://h:2442?peer=K1ABC&speed=fast&blocks=1",
            ),
        ] {
            let c = parse(input);
            assert_eq!(c.to_string(), canon);
            assert_eq!(parse(canon), c);
        }
    }

    #[test]
    fn directed_text_prefixes_are_removed() {
        assert_eq!(
            directed_payload("N1ABC: N0CALL E T A \u{2662}", "N1ABC", "N0CALL"),
            "E T A \u{2662}"
        );
        assert_eq!(directed_payload("N0CALL E T A", "N1ABC", "N0CALL"), "E T A");
        assert_eq!(
            directed_payload("N1ABC: @SKYWAVE E", "N1ABC", "@SKYWAVE"),
            "E"
        );
        assert_eq!(directed_payload("E T", "N1ABC", "N0CALL"), "E T");
        assert_eq!(
            directed_payload("N0CALLX E", "N1ABC", "N0CALL"),
            "N0CALLX E"
        );
    }

    fn state() -> Link {
        let cfg = Js8LinkConfig::parse_url("js8call://h:1?peer=N1ABC").unwrap();
        Link::new(cfg, "N0CALL".into(), PeerIds::default())
    }

    fn rx(l: &mut Link, from: &str, to: &str, text: &str) -> Vec<LinkEvent> {
        let line = json!({"type": "RX.DIRECTED", "value": "", "params": {
            "FROM": from, "TO": to, "CMD": " ", "TEXT": format!("{from}: {to} {text} \u{2662}"),
            "SNR": -5, "SPEED": 0, "_ID": -1}})
        .to_string();
        l.line(3, line.as_bytes(), Instant::now())
    }

    #[test]
    fn directed_packets_become_frames_and_bad_ones_garbage() {
        let mut l = state();
        let t = js8text::encode(b"packet");
        let evs = rx(&mut l, "N2XYZ", "N0CALL", &t);
        assert!(
            matches!(&evs[0], LinkEvent::PeerUp { remote, outbound: false, .. } if remote == "N2XYZ")
        );
        let peer = match &evs[1] {
            LinkEvent::Frame { peer, bytes } if bytes == b"packet" => *peer,
            e => panic!("{e:?}"),
        };
        // Group messages count too; no second PeerUp.
        let evs = rx(&mut l, "N2XYZ", GROUP, &t);
        assert!(matches!(&evs[..], [LinkEvent::Frame { peer: p, .. }] if *p == peer));
        // Damaged skywave text, even from a known station: dropped and counted, not
        // held against the station (lost frames on the air look the same).
        let damaged = format!("{} E", t);
        let before = l.stats.bad_packets;
        assert!(rx(&mut l, "N2XYZ", "N0CALL", &damaged).is_empty());
        assert_eq!(l.stats.bad_packets, before + 1);
        // From an unknown station: dropped silently. Chat and commands: ignored.
        assert!(rx(&mut l, "N3AAA", "N0CALL", &damaged).is_empty());
        assert!(rx(&mut l, "N2XYZ", "N0CALL", "HELLO HOW ARE YOU").is_empty());
        // Not for us, our own echo, not JSON.
        assert!(rx(&mut l, "N2XYZ", "N9ZZZ", &t).is_empty());
        assert!(rx(&mut l, "N0CALL", "N2XYZ", &t).is_empty());
        assert!(l.line(3, b"{nope", Instant::now()).is_empty());
        assert!(l.line(3, b"[1,2]", Instant::now()).is_empty());
        assert_eq!(l.stats.bad_packets, 2);
        assert_eq!(l.stats.not_for_us, 2);
        assert_eq!(l.stats.malformed_lines, 2);
    }

    #[test]
    fn one_message_in_flight_until_every_frame_keyed_down() {
        let mut l = state();
        let t0 = Instant::now();
        l.in_flight = Some(InFlight {
            frames: 2,
            offs: 0,
            ptt_on: false,
            key_up: None,
            last_change: t0,
            deadline: t0 + Duration::from_secs(60),
        });
        let ptt = |l: &mut Link, on: bool| {
            let line = json!({"type": "RIG.PTT", "value": if on {"on"} else {"off"}, "params": {"PTT": on, "_ID": -1}}).to_string();
            l.line(3, line.as_bytes(), Instant::now());
            l.check_done(Instant::now());
        };
        ptt(&mut l, true);
        ptt(&mut l, false);
        assert!(l.in_flight.is_some(), "one of two frames sent");
        ptt(&mut l, true);
        assert!(l.in_flight.is_some());
        ptt(&mut l, false);
        assert!(l.in_flight.is_none(), "both frames sent");
        // A radio that keys fewer frames than expected: done after 1.5 quiet frames.
        l.in_flight = Some(InFlight {
            frames: 5,
            offs: 0,
            ptt_on: false,
            key_up: None,
            last_change: t0,
            deadline: t0 + Duration::from_secs(60),
        });
        ptt(&mut l, true);
        ptt(&mut l, false);
        let quiet_from = l.in_flight.as_ref().unwrap().last_change;
        l.check_done(quiet_from + Duration::from_millis(100));
        assert!(l.in_flight.is_some());
        l.check_done(quiet_from + l.cfg.frame() * 3 / 2);
        assert!(l.in_flight.is_none());
    }

    #[test]
    fn queue_is_bounded_and_drops_broadcasts_first() {
        let mut l = state();
        l.enqueue(GROUP.into(), b"b");
        for _ in 0..OUT_QUEUE - 1 {
            l.enqueue("N1ABC".into(), b"d");
        }
        l.enqueue("N1ABC".into(), b"e");
        assert_eq!(l.queue.len(), OUT_QUEUE);
        assert!(l.queue.iter().all(|o| o.to == "N1ABC"));
        l.enqueue("N1ABC".into(), &[0; MTU + 1]);
        assert_eq!(l.stats.tx_dropped, 2);
    }
}
