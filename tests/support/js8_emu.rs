//! An emulated pair of JS8Call stations for tests: two JS8Call TCP API servers on
//! ephemeral ports, joined by an in-process "air".
//!
//! Each server speaks the published API (one JSON object per line): it answers
//! `STATION.GET_CALLSIGN`, `MODE.GET_SPEED`/`MODE.SET_SPEED`, `PING`, and takes
//! `TX.SEND_MESSAGE`. A message is uppercased and stripped of what JS8 cannot send, like
//! JS8Call does, then "transmitted": per frame `RIG.PTT` on, `TX.FRAME`, the frame's air
//! time (72 bits per frame; slow 30 s, normal 15 s, fast 10 s, turbo 6 s, divided by
//! `time_scale`), `RIG.PTT` off. After the last frame the other station gets
//! `RX.DIRECTED {FROM, TO, CMD, TEXT: "FROM: TO text ♢", SNR, SPEED}` if the message was
//! for it (its callsign, `@SKYWAVE` or `@ALLCALL`) and was not lost (`loss` drops whole
//! messages). Everything put on air is logged for the test to inspect.

use serde_json::{json, Value};
use skywave::wire::js8text::{self, Js8Speed};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Characters JS8Call transmits (besides space): its compressor's single characters.
const JS8_CHARS: &str = "ETAOINSHRDLCUMWFGYPB,.VK-+\"?!'X)(0J1Q=2:Z3549867_/&$%#@*><[]{}|;^`~";

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
    /// Lost on the way (not delivered).
    pub lost: bool,
}

struct Station {
    call: String,
    speed: Mutex<Js8Speed>,
    client: Mutex<Option<TcpStream>>,
    requests: Mutex<Vec<String>>,
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

struct Air {
    stations: [Arc<Station>; 2],
    time_scale: f64,
    loss: Mutex<f64>,
    rng: Mutex<u64>,
    log: Mutex<Vec<Aired>>,
    stop: AtomicBool,
    /// Messages taken by either station and not yet fully transmitted.
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
}

/// Two emulated JS8Call stations on one channel.
pub struct Js8Pair {
    air: Arc<Air>,
    addrs: [String; 2],
}

impl Js8Pair {
    /// Start stations `call_a` and `call_b` (JS8 callsigns), frames `time_scale` times
    /// faster than real, losing each message with probability `loss`.
    pub fn start(call_a: &str, call_b: &str, time_scale: f64, loss: f64) -> Js8Pair {
        let mk = |c: &str| {
            Arc::new(Station {
                call: c.to_string(),
                speed: Mutex::new(Js8Speed::Normal),
                client: Mutex::new(None),
                requests: Mutex::new(Vec::new()),
            })
        };
        let air = Arc::new(Air {
            stations: [mk(call_a), mk(call_b)],
            time_scale,
            loss: Mutex::new(loss),
            rng: Mutex::new(0x2545_F491_4F6C_DD1D),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
        });
        let mut addrs = [String::new(), String::new()];
        for (i, addr) in addrs.iter_mut().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind emulator");
            *addr = listener.local_addr().expect("addr").to_string();
            let (tx, rx) = mpsc::channel::<String>();
            let a = air.clone();
            std::thread::spawn(move || transmitter(a, i, rx));
            let a = air.clone();
            std::thread::spawn(move || serve(a, i, listener, tx));
        }
        Js8Pair { air, addrs }
    }

    /// API address of station 0 (A) or 1 (B).
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// Change the loss probability.
    pub fn set_loss(&self, p: f64) {
        *self.air.loss.lock().expect("loss") = p;
    }

    /// Everything put on air so far.
    pub fn aired(&self) -> Vec<Aired> {
        self.air.log.lock().expect("log").clone()
    }

    /// Wait until neither station has anything left to transmit (JS8Call keeps sending
    /// what it was given after its client goes away). False on timeout.
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
        for i in 0..2 {
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

/// Transmit queued messages one after the other, like JS8Call's TX queue.
fn transmitter(air: Arc<Air>, i: usize, rx: mpsc::Receiver<String>) {
    let me = air.stations[i].clone();
    let other = air.stations[1 - i].clone();
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
        let frame = Duration::from_secs_f64(speed.frame_ms() as f64 / 1000.0 / air.time_scale);
        for _ in 0..frames {
            me.send(&json!({"type": "RIG.PTT", "value": "on", "params": {"PTT": true, "_ID": -1}}));
            me.send(&json!({"type": "TX.FRAME", "value": "", "params": {"_ID": -1}}));
            std::thread::sleep(frame.mul_f64(0.85));
            me.send(
                &json!({"type": "RIG.PTT", "value": "off", "params": {"PTT": false, "_ID": -1}}),
            );
            std::thread::sleep(frame.mul_f64(0.15));
        }
        let lost = air.random() < *air.loss.lock().expect("loss");
        air.log.lock().expect("log").push(Aired {
            from: me.call.clone(),
            to: to.to_string(),
            text: text.to_string(),
            frames,
            lost,
        });
        let for_other = to == other.call || to == "@SKYWAVE" || to == "@ALLCALL";
        if !lost && for_other {
            let speed = *other.speed.lock().expect("speed");
            other.send(&directed(&me.call, to, text, speed));
        }
        air.pending.fetch_sub(1, Ordering::SeqCst);
    }
}
