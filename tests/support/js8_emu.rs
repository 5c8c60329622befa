//! Emulated JS8Call stations for tests: JS8Call TCP API servers on ephemeral ports,
//! joined by an in-process "air" that keeps JS8's time slots.
//!
//! Each server speaks the published API (one JSON object per line): it answers
//! `STATION.GET_CALLSIGN`, `MODE.GET_SPEED`/`MODE.SET_SPEED`, `PING`, and takes
//! `TX.SEND_MESSAGE`. A message is uppercased and stripped of what JS8 cannot send, like
//! JS8Call does, then queued for the air.
//!
//! The air follows JS8Call's timing (mainwindow.cpp `guiUpdate`, JS8Submode.cpp,
//! Modulator.cpp in the js8call sources):
//!
//! - Time is cut into periods (slow 30 s, normal 15 s, fast 10 s, turbo 6 s, divided by
//!   `time_scale`) counted from UTC, as real stations count them. JS8Call keys up only
//!   at the start of a period, without listening first; a
//!   message handed over in the first part of a period still goes out in it (JS8Call's
//!   "late start", the dead air at the end of the frame minus the TX delay, times 3/4 at
//!   fast and 1/2 at turbo), otherwise at the next boundary.
//! - One frame per period, in consecutive periods for a multi-frame message. Per frame:
//!   `RIG.PTT` on and `TX.FRAME` at the start, `RIG.PTT` off when the frame is over (79
//!   symbols plus the start delay, plus 0.2 s), as JS8Call emits them.
//! - A frame is on the air from the period start for its 79 symbols plus start delay.
//!   A station decodes nothing while it transmits (JS8Call pauses its decoder while
//!   transmitting). Two frames that overlap in time destroy each other at every receiver:
//!   no capture. Every other station gets `RX.ACTIVITY` for each frame that got through,
//!   half a second after its audio ends, whoever it was for, as JS8Call reports every
//!   decoded frame. A message is delivered (`RX.DIRECTED {FROM, TO, CMD, TEXT: "FROM: TO
//!   text ♢", SNR, SPEED}`) only if every frame of it got through, when its last frame
//!   is decoded, to stations it is for (their callsign, `@SKYWAVE` or `@ALLCALL`). `loss`
//!   drops whole messages, every frame of them, on top of that.
//!
//! Everything put on air is logged, with the periods it used and the stations it collided
//! with, for the test to inspect.
//!
//! Known differences from JS8Call, left as they are: a receiver decodes every speed (JS8Call
//! only its own unless multi-decoding is on); a message with a lost frame is simply lost
//! (JS8Call delivers a gathered message with the lost frame's text missing, or after a
//! minute without its end); and a message to a plain callsign is delivered whole, where
//! JS8Call's source reports `RX.DIRECTED` on the header frame alone and the text only as
//! `RX.ACTIVITY` frames (see hardware/js8call.md).

use serde_json::{json, Value};
use skywave::wire::js8text::{self, Js8Speed};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Characters JS8Call transmits (besides space): its compressor's single characters.
const JS8_CHARS: &str = "ETAOINSHRDLCUMWFGYPB,.VK-+\"?!'X)(0J1Q=2:Z3549867_/&$%#@*><[]{}|;^`~";
/// Symbols per JS8 frame.
const SYMBOLS: f64 = 79.0;
/// JS8Call's audio sample rate.
const SAMPLE_RATE: f64 = 12_000.0;
/// JS8Call's "TX delay" setting, seconds (PTT to audio); shortens the late-start window.
/// Assumed at 0.2 s; not checked against a default.
const TX_DELAY_S: f64 = 0.2;
/// PTT goes off this long after the frame's audio ends (`ptt0Timer` in `stopTx`).
const PTT_TAIL_S: f64 = 0.2;

/// JS8 timing of a speed, in real seconds (JS8Submode.cpp, commons.h).
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Period: one frame per period.
    period: f64,
    /// Audio of one frame: 79 symbols.
    symbols: f64,
    /// Silence from the period start to the first symbol.
    start_delay: f64,
    /// Fraction of the period within which a message handed over still starts.
    late: f64,
}

fn timing(speed: Js8Speed) -> Timing {
    // (samples per symbol, start delay ms, late-start factor)
    let (samples, delay_ms, factor) = match speed {
        Js8Speed::Normal => (1920.0, 500.0, 1.0),
        Js8Speed::Fast => (1200.0, 200.0, 0.75),
        Js8Speed::Turbo => (600.0, 100.0, 0.5),
        Js8Speed::Slow => (3840.0, 500.0, 1.0),
    };
    let period = speed.frame_ms() as f64 / 1000.0;
    let symbols = SYMBOLS * samples / SAMPLE_RATE;
    Timing {
        period,
        symbols,
        start_delay: delay_ms / 1000.0,
        late: ((period - symbols) / period - TX_DELAY_S / period) * factor,
    }
}

/// One message put on air.
#[derive(Clone, Debug)]
pub struct Aired {
    /// Sending station.
    pub from: String,
    /// Destination callsign or group.
    pub to: String,
    /// The text after the destination, as transmitted.
    pub text: String,
    /// Frames it took.
    pub frames: usize,
    /// Heard by no station it was for (collision, or `loss`).
    pub lost: bool,
    /// Stations that were transmitting during one of its frames: the frames on both
    /// sides were lost everywhere, and a station transmitting heard nothing.
    pub collided_with: Vec<String>,
    /// Lost to `loss` (independently of collisions).
    pub dropped: bool,
    /// Index of the period of its first frame, counted from the air's epoch in periods of
    /// the speed it was sent at.
    pub first_slot: u64,
    /// Start of its first period, from the air's epoch.
    pub start: Duration,
    /// End of its last period, from the air's epoch.
    pub end: Duration,
}

impl Aired {
    /// Did it collide with another transmission?
    pub fn collided(&self) -> bool {
        !self.collided_with.is_empty()
    }
}

struct Station {
    call: String,
    speed: Mutex<Js8Speed>,
    client: Mutex<Option<TcpStream>>,
    requests: Mutex<Vec<String>>,
    /// When its current client connected, from the air's epoch.
    connected_at: Mutex<Option<Duration>>,
}

impl Station {
    fn send(&self, v: &Value) {
        if let Ok(mut c) = self.client.lock() {
            if let Some(s) = c.as_mut() {
                let mut line = v.to_string();
                line.push('\n');
                if s.write_all(line.as_bytes()).is_err() {
                    *c = None;
                }
            }
        }
    }

    fn send_raw(&self, line: &[u8]) {
        if let Ok(mut c) = self.client.lock() {
            if let Some(s) = c.as_mut() {
                let _ = s.write_all(line);
            }
        }
    }
}

/// A message scheduled on the air: which station, and when its frames are keyed.
struct OnAir {
    id: u64,
    station: usize,
    /// On-air intervals of its frames, seconds from the epoch (scaled).
    frames: Vec<(f64, f64)>,
}

struct Air {
    stations: Vec<Arc<Station>>,
    time_scale: f64,
    epoch: Instant,
    loss: Mutex<f64>,
    rng: Mutex<u64>,
    log: Mutex<Vec<Aired>>,
    /// Every message keyed so far. Scheduling happens under this lock, so a message is
    /// judged only after everything that could overlap it has been scheduled.
    schedule: Mutex<Vec<OnAir>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Messages taken by any station and not yet fully transmitted.
    pending: AtomicUsize,
}

impl Air {
    fn random(&self) -> f64 {
        let mut x = self.rng.lock().expect("rng");
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Seconds since the epoch.
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Sleep until `t` seconds after the epoch.
    fn sleep_until(&self, t: f64) {
        let now = self.now();
        if t > now {
            std::thread::sleep(Duration::from_secs_f64(t - now));
        }
    }

    fn scaled(&self, speed: Js8Speed) -> Timing {
        let t = timing(speed);
        Timing {
            period: t.period / self.time_scale,
            symbols: t.symbols / self.time_scale,
            start_delay: t.start_delay / self.time_scale,
            late: t.late,
        }
    }
}

/// Emulated JS8Call stations on one channel (two for [`Js8Pair::start`]).
pub struct Js8Pair {
    air: Arc<Air>,
    addrs: Vec<String>,
}

impl Js8Pair {
    /// Start stations `call_a` and `call_b` (JS8 callsigns), periods `time_scale` times
    /// shorter than real, losing each message with probability `loss` besides collisions.
    pub fn start(call_a: &str, call_b: &str, time_scale: f64, loss: f64) -> Js8Pair {
        Js8Pair::start_stations(&[call_a, call_b], time_scale, loss)
    }

    /// Start one station per callsign, all on the same channel.
    pub fn start_stations(calls: &[&str], time_scale: f64, loss: f64) -> Js8Pair {
        let stations = calls
            .iter()
            .map(|c| {
                Arc::new(Station {
                    call: c.to_string(),
                    speed: Mutex::new(Js8Speed::Normal),
                    client: Mutex::new(None),
                    requests: Mutex::new(Vec::new()),
                    connected_at: Mutex::new(None),
                })
            })
            .collect();
        // Periods are counted from UTC, as JS8Call counts them (every speed's period
        // divides 30 s): a node that keeps to slot boundaries by its own clock finds the
        // same ones.
        let whole = 30.0 / time_scale;
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let now = Instant::now();
        let epoch = now
            .checked_sub(Duration::from_secs_f64(unix % whole))
            .unwrap_or(now);
        let air = Arc::new(Air {
            stations,
            time_scale,
            epoch,
            loss: Mutex::new(loss),
            rng: Mutex::new(0x2545_F491_4F6C_DD1D),
            log: Mutex::new(Vec::new()),
            schedule: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
        });
        let mut addrs = Vec::new();
        for i in 0..calls.len() {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind emulator");
            addrs.push(listener.local_addr().expect("addr").to_string());
            let (tx, rx) = mpsc::channel::<String>();
            let a = air.clone();
            std::thread::spawn(move || transmitter(a, i, rx));
            let a = air.clone();
            std::thread::spawn(move || serve(a, i, listener, tx));
        }
        Js8Pair { air, addrs }
    }

    /// API address of station `i` (0 is A, 1 is B).
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// Change the loss probability.
    pub fn set_loss(&self, p: f64) {
        *self.air.loss.lock().expect("loss") = p;
    }

    /// Everything put on air so far, in the order receivers decoded it.
    pub fn aired(&self) -> Vec<Aired> {
        self.air.log.lock().expect("log").clone()
    }

    /// Length of one period at `speed` on this air.
    pub fn slot(&self, speed: Js8Speed) -> Duration {
        Duration::from_secs_f64(self.air.scaled(speed).period)
    }

    /// Sleep until `phase` (0 to 1) into the next period at `speed`.
    pub fn wait_slot_phase(&self, speed: Js8Speed, phase: f64) {
        let p = self.air.scaled(speed).period;
        let next = (self.air.now() / p).floor() + 1.0;
        self.air.sleep_until((next + phase) * p);
    }

    /// Time on the air's clock (from its epoch).
    pub fn now(&self) -> Duration {
        self.air.epoch.elapsed()
    }

    /// When station `i`'s current client connected, from the air's epoch.
    pub fn connected_at(&self, i: usize) -> Option<Duration> {
        *self.air.stations[i]
            .connected_at
            .lock()
            .expect("connected_at")
    }

    /// Wait until no station has anything left to transmit (JS8Call keeps sending what it
    /// was given after its client goes away). False on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while self.air.pending.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Request types station `i` received from its client, in order.
    pub fn requests(&self, i: usize) -> Vec<String> {
        self.air.stations[i].requests.lock().expect("req").clone()
    }

    /// Is a client connected to station `i`?
    pub fn connected(&self, i: usize) -> bool {
        self.air.stations[i]
            .client
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(false)
    }

    /// Send raw bytes to station `i`'s client (malformed lines and the like).
    pub fn inject_raw(&self, i: usize, bytes: &[u8]) {
        self.air.stations[i].send_raw(bytes);
    }

    /// Deliver a directed message to station `i`'s client as if `from` had sent `text`.
    pub fn inject_directed(&self, i: usize, from: &str, to: &str, text: &str) {
        let st = &self.air.stations[i];
        let speed = *st.speed.lock().expect("speed");
        st.send(&directed(from, to, text, speed));
    }

    /// Drop station `i`'s client connection (JS8Call closed).
    pub fn disconnect(&self, i: usize) {
        if let Ok(mut c) = self.air.stations[i].client.lock() {
            if let Some(s) = c.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Js8Pair {
    fn drop(&mut self) {
        self.air.stop.store(true, Ordering::SeqCst);
        for i in 0..self.addrs.len() {
            self.disconnect(i);
            // Wake the accept loop so it sees `stop`.
            let _ = TcpStream::connect(&self.addrs[i]);
        }
    }
}

fn directed(from: &str, to: &str, text: &str, speed: Js8Speed) -> Value {
    let full = format!("{from}: {to} {text} \u{2662}");
    json!({"type": "RX.DIRECTED", "value": full, "params": {
        "FROM": from, "TO": to, "CMD": " ", "TEXT": full, "GRID": "", "SNR": -12,
        "SPEED": speed.api_value(), "FREQ": 7_079_000, "OFFSET": 1000, "_ID": -1,
    }})
}

fn ptt(on: bool) -> Value {
    let utc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({"type": "RIG.PTT", "value": if on { "on" } else { "off" },
        "params": {"PTT": on, "UTC": utc, "_ID": -1}})
}

/// Accept clients one at a time (JS8Call serves several; one is all the node needs).
fn serve(air: Arc<Air>, i: usize, listener: TcpListener, tx: mpsc::Sender<String>) {
    for conn in listener.incoming() {
        if air.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let st = air.stations[i].clone();
        let Ok(w) = conn.try_clone() else { continue };
        if let Ok(mut c) = st.client.lock() {
            *c = Some(w);
        }
        if let Ok(mut at) = st.connected_at.lock() {
            *at = Some(air.epoch.elapsed());
        }
        let tx = tx.clone();
        let air = air.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let kind = v["type"].as_str().unwrap_or("").to_string();
                let id = v["params"]["_ID"].clone();
                if let Ok(mut r) = st.requests.lock() {
                    r.push(kind.clone());
                }
                match kind.as_str() {
                    "STATION.GET_CALLSIGN" => st.send(
                        &json!({"type": "STATION.CALLSIGN", "value": st.call, "params": {"_ID": id}}),
                    ),
                    "MODE.SET_SPEED" | "MODE.GET_SPEED" => {
                        let want = v["params"]["SPEED"].as_u64().and_then(Js8Speed::from_api);
                        let mut s = st.speed.lock().expect("speed");
                        if let (true, Some(w)) = (kind == "MODE.SET_SPEED", want) {
                            *s = w;
                        }
                        let cur = s.api_value();
                        drop(s);
                        st.send(&json!({"type": "MODE.SPEED", "value": "", "params": {"SPEED": cur, "_ID": id}}));
                    }
                    "PING" => st.send(&json!({"type": "PING", "value": "", "params": {"_ID": id}})),
                    "TX.SEND_MESSAGE" => {
                        air.pending.fetch_add(1, Ordering::SeqCst);
                        let _ = tx.send(v["value"].as_str().unwrap_or("").to_string());
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Transmit queued messages one after the other, like JS8Call's TX queue: each from the
/// current period if it arrived early enough in it, else from the next boundary, and never
/// before the previous message's last period is over.
fn transmitter(air: Arc<Air>, i: usize, rx: mpsc::Receiver<String>) {
    let me = air.stations[i].clone();
    // Seconds from the epoch before which this station's next message cannot start.
    let mut free_from = 0.0f64;
    while let Ok(value) = rx.recv() {
        if air.stop.load(Ordering::SeqCst) {
            return;
        }
        // JS8Call uppercases and sends only what its compressor knows.
        let clean: String = value
            .to_uppercase()
            .chars()
            .filter(|c| *c == ' ' || JS8_CHARS.contains(*c))
            .collect();
        let clean = clean.trim().to_string();
        let (to, text) = clean.split_once(' ').unwrap_or((clean.as_str(), ""));
        let speed = *me.speed.lock().expect("speed");
        let frames = js8text::message_frames(text, speed, to.starts_with('@'));
        let t = air.scaled(speed);
        let p = t.period;
        let on_air = t.start_delay + t.symbols;

        // Pick the first period and publish the frames, under the schedule lock.
        let (id, first) = {
            let mut sched = air.schedule.lock().expect("schedule");
            let now = air.now();
            let cur = (now / p).floor();
            let mut first = if now / p - cur < t.late {
                cur
            } else {
                cur + 1.0
            };
            let earliest = (free_from / p - 1e-9).ceil();
            if first < earliest {
                first = earliest;
            }
            let id = air.next_id.fetch_add(1, Ordering::SeqCst);
            let spans = (0..frames)
                .map(|f| {
                    let s = (first + f as f64) * p;
                    (s, s + on_air)
                })
                .collect();
            sched.push(OnAir {
                id,
                station: i,
                frames: spans,
            });
            (id, first)
        };

        // `loss` takes the whole message, at every station.
        let dropped = air.random() < *air.loss.lock().expect("loss");
        let texts = frame_texts(&me.call, to, text, speed);
        // Stations that were on the air during one of our frames.
        let mut collided_with: Vec<String> = Vec::new();
        for f in 0..frames {
            let start = (first + f as f64) * p;
            air.sleep_until(start);
            me.send(&ptt(true));
            me.send(&json!({"type": "TX.FRAME", "value": "", "params": {"_ID": -1}}));
            air.sleep_until(start + (on_air + PTT_TAIL_S / air.time_scale).min(0.98 * p));
            me.send(&ptt(false));
            // The others decode the frame once its audio is in, half a second later. By
            // then everything that could overlap it has been scheduled.
            air.sleep_until(start + (on_air + 0.5 / air.time_scale).min(p));
            let overlapping = overlapping(&air, id, i, f);
            let clean = overlapping.is_empty();
            for call in overlapping {
                if !collided_with.contains(&call) {
                    collided_with.push(call);
                }
            }
            if clean && !dropped {
                let line = activity(texts.get(f).map(String::as_str).unwrap_or(""), speed);
                for (j, other) in air.stations.iter().enumerate() {
                    if j != i {
                        other.send(&line);
                    }
                }
            }
        }
        let last = first + frames.saturating_sub(1) as f64;
        free_from = (last + 1.0) * p;

        let heard = !dropped && collided_with.is_empty();
        let receivers: Vec<&Arc<Station>> = air
            .stations
            .iter()
            .enumerate()
            .filter(|(j, other)| {
                *j != i && heard && (to == other.call || to == "@SKYWAVE" || to == "@ALLCALL")
            })
            .map(|(_, other)| other)
            .collect();
        let delivered = !receivers.is_empty();
        // Logged before it is delivered, so a client that got it finds it in the log.
        air.log.lock().expect("log").push(Aired {
            from: me.call.clone(),
            to: to.to_string(),
            text: text.to_string(),
            frames,
            lost: !delivered,
            collided_with,
            dropped,
            first_slot: first as u64,
            start: Duration::from_secs_f64(first * p),
            end: Duration::from_secs_f64(free_from),
        });
        for other in receivers {
            other.send(&directed(&me.call, to, text, speed));
        }
        air.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stations other than `station` on the air during frame `f` of message `id`.
fn overlapping(air: &Air, id: u64, station: usize, f: usize) -> Vec<String> {
    let sched = air.schedule.lock().expect("schedule");
    let Some((s, e)) = sched
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.frames.get(f).copied())
    else {
        return Vec::new();
    };
    let mut calls: Vec<String> = Vec::new();
    for m in sched.iter().filter(|m| m.station != station) {
        let call = &air.stations[m.station].call;
        if m.frames.iter().any(|(s2, e2)| s < *e2 && *s2 < e) && !calls.contains(call) {
            calls.push(call.clone());
        }
    }
    calls
}

/// What each frame of a message decodes to, roughly as JS8Call shows it: the directed
/// header (`FROM: TO `; a group takes a compound frame for the sender and one for the
/// group), then the words packed into each data frame as JS8Call packs them.
fn frame_texts(from: &str, to: &str, text: &str, speed: Js8Speed) -> Vec<String> {
    let mut out = if to.starts_with('@') {
        vec![format!("{from}: "), format!("{to} ")]
    } else {
        vec![format!("{from}: {to} ")]
    };
    let cap = speed.data_bits_per_frame();
    let mut used = cap;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let bits = js8text::jsc_word_bits(word).unwrap_or(8 * word.len() as u32) + 1;
        if used + bits > cap {
            out.push(String::new());
            used = 0;
        }
        used += bits;
        if let Some(last) = out.last_mut() {
            last.push_str(word);
            last.push(' ');
        }
    }
    out
}

/// `RX.ACTIVITY`: one decoded frame, whoever it was for (JS8Call reports every frame).
fn activity(text: &str, speed: Js8Speed) -> Value {
    let utc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({"type": "RX.ACTIVITY", "value": text, "params": {
        "DIAL": 7_078_000, "FREQ": 7_079_000, "OFFSET": 1000, "SNR": -12,
        "SPEED": speed.api_value(), "TDRIFT": 0.0, "UTC": utc, "_ID": -1,
    }})
}
