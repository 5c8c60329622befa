//! The VARA link's logic without I/O, like the core: fed modem lines, data-port bytes,
//! driver commands and the time (a `Duration` since the link started), it keeps the
//! session phase (dial, open, hang-up, tail), the modem's buffer and flow control, PTT
//! and busy, and says what to do in [`Out`]s; the task in `super` only moves bytes.

use super::{
    is_payload, VaraLinkConfig, VaraModem, BUFFER_AIR_S, DIAL_BACKOFF_MAX, DIAL_BACKOFF_MIN,
    DIAL_TIMEOUT, DISCONNECT_WAIT, DRAIN_WAIT, FIRST_SYNC_DELAY, INITIAL_BITRATE, MIN_BUFFER,
    REDIAL_PAUSE, REPORT_GRACE, REPORT_LAG, TAIL_READ,
};
use super::{ModemLine, OUT_QUEUE_BYTES};
use crate::link::backoff::Backoff;
use crate::link::{LinkCommand, LinkEvent, LinkId, PeerId, PeerIds};
use crate::wire::stream::{frame, StreamDecoder};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::{debug, info, warn};

/// What the machine wants done, in order.
#[derive(Debug)]
pub enum Out {
    /// Write this command line (without its CR) to the command port.
    Command(String),
    /// Report this to the driver.
    Event(LinkEvent),
    /// The modem connection is unusable: close it, report Down, reconnect.
    Lost(String),
}

/// State that outlives one connection to the modem.
struct Dialer {
    /// When the periodic sync is next due (if a peer is set).
    next_sync: Duration,
    /// The driver asked for a session.
    wanted: bool,
    /// No dial before this (failed-dial backoff, pause after a session).
    not_before: Duration,
    backoff: Backoff,
    bitrate: u64,
    /// Transmit time since start.
    air: Duration,
}

/// Session phase.
#[derive(Debug)]
enum Phase {
    /// Listening; no session.
    Idle,
    /// CONNECT sent.
    Dialing { since: Duration },
    /// Session up.
    Open,
    /// Hanging up: waiting for the buffer to drain, then for DISCONNECTED.
    Closing {
        since: Duration,
        sent: Option<Duration>,
        why: String,
    },
    /// DISCONNECTED seen: still reading the data port until `until`.
    Tail { until: Duration, why: String },
}

/// One peer session.
struct Session {
    peer: PeerId,
    remote: String,
    started: Duration,
    last_payload: Duration,
    dec: StreamDecoder,
    /// Framed envelopes waiting for the data port.
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    /// Sends refused while hanging up.
    refused: u64,
}

/// A VARA link's state: the dialer across modem connections, and the current one.
pub struct Vara {
    cfg: VaraLinkConfig,
    me: String,
    link: LinkId,
    ids: PeerIds,
    dialer: Dialer,
    /// Commands written and not yet answered, oldest first.
    pending: VecDeque<String>,
    busy: bool,
    /// Last BUFFER report, and bytes written since (not yet in a report).
    modem_buffer: u64,
    unreported: u64,
    /// Recent writes to the data port (time, bytes), for `REPORT_LAG`.
    recent_writes: VecDeque<(Duration, u64)>,
    last_report: Duration,
    last_line: Duration,
    ptt_since: Option<Duration>,
    phase: Phase,
    sess: Option<Session>,
    /// Bytes being written to the data port, and how far.
    wbuf: Vec<u8>,
    woff: usize,
    /// Up has been reported for this modem connection.
    up: bool,
    out: VecDeque<Out>,
}

impl Vara {
    /// A link for station `me` (a callsign VARA takes), started at time zero.
    pub fn new(cfg: VaraLinkConfig, me: String, link: LinkId, ids: PeerIds) -> Vara {
        Vara {
            cfg,
            me,
            link,
            ids,
            dialer: Dialer {
                next_sync: FIRST_SYNC_DELAY,
                wanted: false,
                not_before: Duration::ZERO,
                backoff: Backoff::new(DIAL_BACKOFF_MIN, DIAL_BACKOFF_MAX, Duration::MAX),
                bitrate: INITIAL_BITRATE,
                air: Duration::ZERO,
            },
            pending: VecDeque::new(),
            busy: false,
            modem_buffer: 0,
            unreported: 0,
            recent_writes: VecDeque::new(),
            last_report: Duration::ZERO,
            last_line: Duration::ZERO,
            ptt_since: None,
            phase: Phase::Idle,
            sess: None,
            wbuf: Vec::new(),
            woff: 0,
            up: false,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    fn command(&mut self, line: &str) {
        tracing::trace!(link = self.link, "to VARA: {line}");
        self.pending.push_back(line.to_string());
        // An unanswering modem is caught by the silence check; keep this bounded.
        if self.pending.len() > 64 {
            self.pending.pop_front();
        }
        self.out.push_back(Out::Command(line.to_string()));
    }

    fn event(&mut self, ev: LinkEvent) {
        self.out.push_back(Out::Event(ev));
    }

    /// The modem's ports are open: configure it. Everything of the last connection is
    /// forgotten (the dialer is kept).
    pub fn modem_connected(&mut self, now: Duration) {
        self.pending.clear();
        self.busy = false;
        self.modem_buffer = 0;
        self.unreported = 0;
        self.recent_writes.clear();
        self.last_report = now;
        self.last_line = now;
        self.ptt_since = None;
        self.phase = Phase::Idle;
        self.sess = None;
        self.wbuf.clear();
        self.woff = 0;
        self.up = false;
        self.out.clear();
        let me = self.me.clone();
        self.command(&format!("MYCALL {me}"));
        self.command("LISTEN ON");
        self.command("COMPRESSION OFF");
        if let Some(bw) = self.cfg.bw {
            self.command(&format!("BW{bw}"));
        }
        if self.cfg.modem == VaraModem::Hf {
            // VARA HF treats a session as a Winlink (gateway) session unless told
            // otherwise; peer-to-peer connections need P2P SESSION (EA5HVK, VARA TNC
            // commands).
            self.command("P2P SESSION");
        }
    }

    /// The modem connection is over (`stopping`: the link is shutting down, so any
    /// session on air is aborted first): the open session ends with it.
    pub fn modem_lost(&mut self, now: Duration, stopping: bool) {
        if stopping {
            self.command("ABORT");
        }
        if self.sess.is_some() {
            self.end_session(now, "VARA modem lost");
        }
    }

    /// A driver command while no modem is connected.
    pub fn offline_command(&mut self, cmd: LinkCommand) {
        if matches!(cmd, LinkCommand::Connect) {
            self.dialer.wanted = self.cfg.peer.is_some();
        }
    }

    /// Bytes were read from the command port (whatever they hold, the modem lives).
    pub fn heard(&mut self, now: Duration) {
        self.last_line = now;
    }

    /// Bytes written that the last BUFFER report may not include. A report that came
    /// `REPORT_LAG` after the last write includes it: the modem reports every change,
    /// so had our bytes landed after a report of 0 it would have reported again.
    fn unreported_now(&self, now: Duration) -> u64 {
        match self.recent_writes.back() {
            Some((t, _)) if self.last_report > *t && now.saturating_sub(*t) >= REPORT_LAG => 0,
            _ => self.unreported,
        }
    }

    /// Bytes the modem may still take before holding more than `BUFFER_AIR_S` of air.
    fn room(&self, now: Duration) -> u64 {
        let limit = (self.dialer.bitrate / 8)
            .saturating_mul(BUFFER_AIR_S)
            .max(MIN_BUFFER);
        let quiet = now.saturating_sub(self.last_report);
        let unreported = match quiet.checked_sub(REPORT_GRACE) {
            Some(extra) => self
                .unreported_now(now)
                .saturating_sub((self.dialer.bitrate / 8).saturating_mul(extra.as_secs())),
            None => self.unreported_now(now),
        };
        limit.saturating_sub(self.modem_buffer.saturating_add(unreported))
    }

    /// Bytes queued for the data port.
    pub fn queued(&self) -> usize {
        self.sess.as_ref().map_or(0, |s| s.out_bytes) + (self.wbuf.len() - self.woff)
    }

    /// Whether driver commands may be taken now (the queue for the data port has room).
    pub fn takes_commands(&self) -> bool {
        self.queued() < OUT_QUEUE_BYTES
    }

    fn may_write(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing { sent: None, .. })
    }

    /// What may be written to the data port now (empty: nothing, or no room in the
    /// modem's buffer).
    pub fn to_write(&mut self, now: Duration) -> &[u8] {
        if !self.may_write() {
            return &[];
        }
        if self.woff >= self.wbuf.len() {
            if let Some(f) = self.sess.as_mut().and_then(|s| s.out.pop_front()) {
                if let Some(s) = self.sess.as_mut() {
                    s.out_bytes -= f.len();
                }
                self.wbuf = f;
                self.woff = 0;
            }
        }
        let room = usize::try_from(self.room(now)).unwrap_or(usize::MAX);
        let n = (self.wbuf.len() - self.woff).min(room);
        &self.wbuf[self.woff..self.woff + n]
    }

    /// `k` bytes of [`Vara::to_write`] went to the data port.
    pub fn wrote(&mut self, now: Duration, k: usize) {
        self.woff = (self.woff + k).min(self.wbuf.len());
        self.unreported += k as u64;
        self.recent_writes.push_back((now, k as u64));
        if self.recent_writes.len() > 1024 {
            self.recent_writes.pop_front();
        }
    }

    fn start_session(&mut self, now: Duration, remote: String, outbound: bool) {
        let peer = self.ids.next();
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
        self.event(LinkEvent::PeerUp {
            link: self.link,
            peer,
            remote,
            outbound,
        });
    }

    /// The session is over: report PeerDown and go back to listening.
    fn end_session(&mut self, now: Duration, why: &str) {
        self.phase = Phase::Idle;
        self.wbuf.clear();
        self.woff = 0;
        self.modem_buffer = 0;
        self.unreported = 0;
        self.recent_writes.clear();
        self.dialer.next_sync = now + Duration::from_secs(self.cfg.sync_s);
        self.dialer.not_before = self.dialer.not_before.max(now + REDIAL_PAUSE);
        let Some(s) = self.sess.take() else {
            return;
        };
        info!(
            link = self.link,
            peer = s.peer,
            remote = %s.remote,
            secs = now.saturating_sub(s.started).as_secs(),
            air_s = self.dialer.air.as_secs(),
            unsent_bytes = s.out_bytes,
            refused_sends = s.refused,
            "VARA session closed: {why}"
        );
        self.event(LinkEvent::PeerDown {
            peer: s.peer,
            reason: why.to_string(),
        });
    }

    /// Start hanging up (gracefully: the buffer drains first).
    fn hang_up(&mut self, now: Duration, why: String) {
        if matches!(self.phase, Phase::Open) {
            info!(link = self.link, "hanging up: {why}");
            self.phase = Phase::Closing {
                since: now,
                sent: None,
                why,
            };
        }
    }

    /// A failed or timed-out dial: retry with backoff.
    fn dial_failed(&mut self, now: Duration, why: &str) {
        let b = self.dialer.backoff.next_wait();
        warn!(
            link = self.link,
            retry_s = b.as_secs(),
            "VARA dial failed: {why}"
        );
        self.phase = Phase::Idle;
        self.dialer.not_before = now + b;
        self.dialer.wanted = true;
    }

    /// One line from the modem.
    pub fn line(&mut self, now: Duration, line: ModemLine) {
        if !self.up {
            // Up once the modem has said something: a modem that accepts the TCP
            // connection but never answers is not a usable link.
            self.up = true;
            let caps = VaraLinkConfig::caps(self.dialer.bitrate);
            self.event(LinkEvent::Up {
                link: self.link,
                caps,
            });
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
                        if matches!(self.phase, Phase::Tail { .. }) {
                            self.end_session(now, "a new session started");
                        }
                        let outbound = matches!(self.phase, Phase::Dialing { .. })
                            && src.eq_ignore_ascii_case(&self.me);
                        if outbound {
                            self.dialer.backoff.reset();
                        }
                        let remote = if outbound { dst } else { src };
                        self.modem_buffer = 0;
                        self.unreported = 0;
                        self.recent_writes.clear();
                        self.start_session(now, remote, outbound);
                    }
                    Phase::Open | Phase::Closing { .. } => {
                        warn!(link = self.link, "CONNECTED during a session; ignored");
                    }
                }
            }
            ModemLine::Disconnected => match std::mem::replace(&mut self.phase, Phase::Idle) {
                Phase::Dialing { .. } => self.dial_failed(now, "DISCONNECTED without CONNECTED"),
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
                    let d = now.saturating_sub(t);
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
                    .retain(|(t, _)| now.saturating_sub(*t) < REPORT_LAG);
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
                    self.event(LinkEvent::Caps {
                        link: self.link,
                        caps,
                    });
                }
            }
            ModemLine::MissingSoundcard => {
                warn!(link = self.link, "VARA reports MISSING SOUNDCARD")
            }
            ModemLine::IAmAlive => {}
            other => debug!(link = self.link, "from VARA: {other:?}"),
        }
    }

    /// Bytes from the data port.
    pub fn data(&mut self, now: Duration, bytes: &[u8]) {
        let Some(s) = self.sess.as_mut() else {
            debug!(
                link = self.link,
                len = bytes.len(),
                "data outside a session dropped"
            );
            return;
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
                s.last_payload = now;
            }
            self.out
                .push_back(Out::Event(LinkEvent::Frame { peer, bytes: f }));
        }
        if let Some(reason) = garbage {
            warn!(link = self.link, peer, "{reason}; hanging up");
            self.event(LinkEvent::Garbage {
                peer,
                reason: reason.clone(),
            });
            self.command("ABORT");
            self.end_session(now, &reason);
        }
    }

    /// A command from the driver.
    pub fn driver(&mut self, now: Duration, cmd: LinkCommand) {
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
                            s.last_payload = now;
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
                    self.hang_up(now, "asked by the node".into());
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
    pub fn tick(&mut self, now: Duration) {
        let alive = Duration::from_secs(self.cfg.alive_s);
        if now.saturating_sub(self.last_line) > alive {
            self.out.push_back(Out::Lost(format!(
                "no word from the modem for {} s (IAMALIVE missing)",
                alive.as_secs()
            )));
            return;
        }
        match &self.phase {
            Phase::Idle => {
                let due = self.dialer.wanted || now >= self.dialer.next_sync;
                if let Some(peer) = self.cfg.peer.clone() {
                    if due && !self.busy && now >= self.dialer.not_before {
                        let line = format!("CONNECT {} {peer}", self.me);
                        info!(link = self.link, %peer, "dialling");
                        self.dialer.wanted = false;
                        self.phase = Phase::Dialing { since: now };
                        if self.cfg.modem == VaraModem::Hf {
                            // Again before each call, as Pat does: the kind is per session.
                            self.command("P2P SESSION");
                        }
                        self.command(&line);
                    }
                }
            }
            Phase::Dialing { since } => {
                if now.saturating_sub(*since) > DIAL_TIMEOUT {
                    self.command("ABORT");
                    self.dial_failed(now, "timed out");
                }
            }
            Phase::Open => {
                if let Some(s) = &self.sess {
                    let idle = now.saturating_sub(s.last_payload);
                    let lasted = now.saturating_sub(s.started);
                    if idle >= Duration::from_secs(self.cfg.idle_s) {
                        self.hang_up(now, format!("idle for {} s", idle.as_secs()));
                    } else if lasted >= Duration::from_secs(self.cfg.max_s) {
                        let max = self.cfg.max_s;
                        self.hang_up(now, format!("session limit of {max} s"));
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
                            self.command("DISCONNECT");
                            self.phase = Phase::Closing {
                                since,
                                sent: Some(now),
                                why,
                            };
                        } else if now.saturating_sub(since) > DRAIN_WAIT {
                            warn!(link = self.link, "modem buffer did not drain; ABORT");
                            self.command("ABORT");
                            self.phase = Phase::Tail {
                                until: now + TAIL_READ,
                                why: format!("{why} (aborted: buffer did not drain)"),
                            };
                        }
                    }
                    Some(at) => {
                        if now.saturating_sub(at) > DISCONNECT_WAIT {
                            warn!(link = self.link, "no DISCONNECTED after DISCONNECT; ABORT");
                            self.command("ABORT");
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
                    self.end_session(now, &why);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "N0CALL";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn vara(params: &str) -> Vara {
        let url = format!("vara+tcp://127.0.0.1:8300?peer=N1ABC&modem=fm{params}");
        let cfg = VaraLinkConfig::parse_url(&url).expect("test URL");
        Vara::new(cfg, ME.into(), 1, PeerIds::default())
    }

    fn drain(v: &mut Vara) -> Vec<Out> {
        std::iter::from_fn(|| v.poll()).collect()
    }

    fn commands(outs: &[Out]) -> Vec<&str> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Command(c) => Some(c.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Bring the modem up and dial the peer; returns the session's peer id.
    fn open_session(v: &mut Vara) -> PeerId {
        v.modem_connected(ms(0));
        let outs = drain(v);
        assert_eq!(
            commands(&outs),
            ["MYCALL N0CALL", "LISTEN ON", "COMPRESSION OFF"]
        );
        v.line(ms(10), ModemLine::Ok);
        assert!(matches!(drain(v)[..], [Out::Event(LinkEvent::Up { .. })]));
        v.driver(ms(20), LinkCommand::Connect);
        v.tick(ms(100));
        assert_eq!(commands(&drain(v)), ["CONNECT N0CALL N1ABC"]);
        let connected = ModemLine::Connected {
            src: ME.into(),
            dst: "N1ABC".into(),
            bw: None,
        };
        v.line(ms(1_000), connected);
        match &drain(v)[..] {
            [Out::Event(LinkEvent::PeerUp {
                peer,
                remote,
                outbound: true,
                ..
            })] if remote == "N1ABC" => *peer,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_dials_fills_the_modem_buffer_by_its_reports_and_hangs_up_when_idle() {
        let mut v = vara("");
        let peer = open_session(&mut v);
        // What the peer sends comes out as whole envelopes.
        v.data(ms(1_500), &frame(b"hello"));
        assert!(matches!(
            &drain(&mut v)[..],
            [Out::Event(LinkEvent::Frame { bytes, .. })] if bytes == b"hello"
        ));
        // 2000 bytes to send; at the starting 500 bit/s the modem may hold 1024.
        v.driver(
            ms(2_000),
            LinkCommand::Send {
                peer,
                bytes: vec![7; 2_000],
            },
        );
        let total = frame(&[7; 2_000]).len();
        let first = v.to_write(ms(2_000)).len();
        assert_eq!(first, 1_024);
        v.wrote(ms(2_000), first);
        assert!(v.to_write(ms(2_100)).is_empty(), "modem buffer full");
        // A report of an empty buffer taken before our write landed changes nothing...
        v.line(ms(2_500), ModemLine::Buffer(0));
        assert!(v.to_write(ms(2_600)).is_empty());
        // ...one made a second after it does: the modem sent it all.
        v.line(ms(3_100), ModemLine::Buffer(0));
        let rest = v.to_write(ms(3_100)).len();
        assert_eq!(first + rest, total);
        v.wrote(ms(3_100), rest);
        v.line(ms(4_500), ModemLine::Buffer(0));
        // No payload for the idle limit (60 s from the last send): hang up, and with
        // the buffer empty say DISCONNECT on the next tick.
        v.tick(ms(61_900));
        v.tick(ms(62_000));
        assert!(drain(&mut v).is_empty());
        v.tick(ms(62_100));
        assert_eq!(commands(&drain(&mut v)), ["DISCONNECT"]);
        // Sends while hanging up are refused.
        v.driver(
            ms(62_200),
            LinkCommand::Send {
                peer,
                bytes: vec![1; 10],
            },
        );
        assert_eq!(v.queued(), 0);
        v.line(ms(63_000), ModemLine::Disconnected);
        v.tick(ms(64_000));
        assert!(
            drain(&mut v).is_empty(),
            "the data port is read a little longer"
        );
        v.tick(ms(65_000));
        match &drain(&mut v)[..] {
            [Out::Event(LinkEvent::PeerDown { peer: p, reason })] => {
                assert_eq!(*p, peer);
                assert!(reason.contains("idle for"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // No new dial before the periodic sync: the session just ended.
        v.heard(ms(599_000));
        v.tick(ms(600_000));
        assert!(drain(&mut v).is_empty());
    }

    #[test]
    fn failed_dials_back_off_and_a_silent_modem_is_lost() {
        let mut v = vara("&alive=3600");
        v.modem_connected(ms(0));
        v.line(ms(10), ModemLine::Ok);
        v.driver(ms(20), LinkCommand::Connect);
        v.tick(ms(100));
        drain(&mut v);
        // No answer within two minutes: ABORT, and the next try 5 s later.
        v.tick(ms(120_200));
        assert_eq!(commands(&drain(&mut v)), ["ABORT"]);
        v.tick(ms(125_100));
        assert!(drain(&mut v).is_empty());
        v.tick(ms(125_300));
        assert_eq!(commands(&drain(&mut v)), ["CONNECT N0CALL N1ABC"]);
        // Refused at once: the wait doubles.
        v.line(ms(126_000), ModemLine::Disconnected);
        v.tick(ms(135_900));
        assert!(drain(&mut v).is_empty());
        v.tick(ms(136_100));
        assert_eq!(commands(&drain(&mut v)), ["CONNECT N0CALL N1ABC"]);
        // A busy channel holds the dial.
        v.line(ms(136_200), ModemLine::Disconnected);
        v.line(ms(136_300), ModemLine::Busy(true));
        v.tick(ms(200_000));
        assert!(drain(&mut v).is_empty());
        // An hour without a word from the modem: the connection is lost.
        v.tick(ms(136_300 + 3_600_001));
        assert!(matches!(&drain(&mut v)[..], [Out::Lost(why)] if why.contains("IAMALIVE")));
    }
}
