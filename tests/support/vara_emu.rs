//! An emulated pair of VARA modems, built to the published TCP interface (see
//! hardware/vara.md): each modem listens on a command port and a data port (command + 1);
//! the two are joined by an in-process "air" with a bit rate, a latency and losses that
//! cost retransmission time (VARA is ARQ: nothing is lost, it arrives later).
//!
//! What it does: answers every command OK or WRONG; needs MYCALL before CONNECT;
//! CONNECT to the other modem's MYCALL gives `CONNECTED src dst bw` on both sides if the
//! callee said LISTEN ON (else DISCONNECTED after a timeout). As VARA HF (the default,
//! `EmuOpts::hf`), a session is a Winlink session unless the caller sent `P2P SESSION`
//! (EA5HVK, VARA TNC commands: "must be used for P2P connections"); a call made as a
//! Winlink session reaches no gateway here and ends in DISCONNECTED. As VARA FM there is
//! no session kind, and `P2P SESSION`, like `BWnnnn`, is answered WRONG (the emulator's
//! choice for commands outside a modem's set; what real VARA FM answers is unchecked).
//! BUFFER as data waits and
//! drains; PTT ON/OFF around transmissions; DISCONNECT after the buffer has drained;
//! ABORT at once; IAMALIVE at an interval; BITRATE on connect and on request. Test hooks:
//! BUSY, a dead modem, a bit rate change, a forced disconnect once a side went quiet, a
//! mode in which data reaches the application later than the command port's
//! DISCONNECTED, and the log of commands received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Emulator settings; the defaults make tests fast.
#[derive(Clone, Debug)]
pub struct EmuOpts {
    /// Air bit rate.
    pub bitrate: u64,
    /// One-way delay per transmission.
    pub latency: Duration,
    /// Probability that a transmission must be repeated (ARQ), 0..1.
    pub loss: f64,
    /// IAMALIVE interval.
    pub alive_every: Duration,
    /// Time from CONNECT to CONNECTED.
    pub connect_delay: Duration,
    /// Time from CONNECT to DISCONNECTED when nobody answers.
    pub connect_timeout: Duration,
    /// If set, data reaches the application this much later than it arrived over the
    /// air, so a DISCONNECTED can overtake the last data.
    pub data_lag: Option<Duration>,
    /// Bandwidth shown in CONNECTED (None: omitted, as VARA FM).
    pub bw: Option<u32>,
    /// VARA HF (session kinds, BW commands) rather than VARA FM.
    pub hf: bool,
    /// BITRATE lines as VARA FM 4.3.8 writes them (`BITRATE (9)  9567 bps TX`).
    pub bitrate_dir: bool,
}

impl Default for EmuOpts {
    fn default() -> Self {
        EmuOpts {
            bitrate: 9600,
            latency: Duration::from_millis(20),
            loss: 0.0,
            alive_every: Duration::from_millis(500),
            connect_delay: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(1500),
            data_lag: None,
            bw: Some(2300),
            hf: true,
            bitrate_dir: false,
        }
    }
}

#[derive(Default)]
struct Side {
    cmd_port: u16,
    /// Lines to the current command client, and its generation.
    to_app: Option<mpsc::UnboundedSender<String>>,
    cmd_gen: u64,
    data_to_app: Option<mpsc::UnboundedSender<Vec<u8>>>,
    data_gen: u64,
    mycall: Option<String>,
    /// `P2P SESSION` received since this client connected (VARA HF).
    p2p: bool,
    listen: bool,
    busy: bool,
    dead: bool,
    dialing: Option<String>,
    buffer: VecDeque<u8>,
    disconnect_pending: bool,
    ptt: bool,
    log: Vec<String>,
    /// When this side last finished a transmission.
    last_tx: Option<Instant>,
    /// Most bytes ever waiting in this side's buffer.
    max_buffer: usize,
}

struct World {
    sides: [Side; 2],
    connected: bool,
    /// Bumped on every session start and end, so stale timers do nothing.
    session: u64,
    bitrate: u64,
    level: i32,
    opts: EmuOpts,
    rng: u64,
    /// Disconnect once this side has been quiet this long after transmitting.
    cut: Option<(usize, Duration)>,
    sessions: u32,
}

impl World {
    /// A line to side `i`'s application (a dead modem says nothing).
    fn say(&mut self, i: usize, line: &str) {
        let s = &mut self.sides[i];
        if s.dead {
            return;
        }
        if let Some(tx) = &s.to_app {
            let _ = tx.send(line.to_string());
        }
    }

    fn rand(&mut self) -> f64 {
        // xorshift64*: deterministic, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn teardown(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.session += 1;
        for i in 0..2 {
            let s = &mut self.sides[i];
            s.buffer.clear();
            s.disconnect_pending = false;
            let ptt = std::mem::take(&mut s.ptt);
            if ptt {
                self.say(i, "PTT OFF");
            }
            self.say(i, "DISCONNECTED");
        }
    }

    fn bitrate_line(&self) -> String {
        if self.opts.bitrate_dir {
            format!("BITRATE ({})  {} bps TX", self.level, self.bitrate)
        } else {
            format!("BITRATE ({}) {} bps", self.level, self.bitrate)
        }
    }
}

/// Two emulated modems, A (index 0) and B (index 1).
pub struct VaraPair {
    world: Arc<Mutex<World>>,
    air: Arc<Notify>,
    rt: Option<tokio::runtime::Runtime>,
}

/// Index of modem A.
pub const A: usize = 0;
/// Index of modem B.
pub const B: usize = 1;

fn lock(w: &Mutex<World>) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bind a command port whose successor is free for the data port.
fn bind_pair() -> (std::net::TcpListener, std::net::TcpListener) {
    for _ in 0..200 {
        let Ok(cmd) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = cmd.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port == u16::MAX {
            continue;
        }
        if let Ok(data) = std::net::TcpListener::bind(("127.0.0.1", port + 1)) {
            return (cmd, data);
        }
    }
    panic!("no free pair of adjacent ports");
}

impl VaraPair {
    /// Start both modems.
    pub fn start(opts: EmuOpts) -> VaraPair {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("emulator runtime");
        let world = Arc::new(Mutex::new(World {
            sides: [Side::default(), Side::default()],
            connected: false,
            session: 0,
            bitrate: opts.bitrate,
            level: 7,
            opts: opts.clone(),
            rng: 0x9E37_79B9_7F4A_7C15,
            cut: None,
            sessions: 0,
        }));
        let air = Arc::new(Notify::new());
        for i in 0..2 {
            let (cmd, data) = bind_pair();
            lock(&world).sides[i].cmd_port = cmd.local_addr().expect("addr").port();
            cmd.set_nonblocking(true).expect("nonblocking");
            data.set_nonblocking(true).expect("nonblocking");
            let (w1, w2, n) = (world.clone(), world.clone(), air.clone());
            rt.spawn(async move {
                let l = TcpListener::from_std(cmd).expect("tokio listener");
                accept_cmd(l, i, w1).await
            });
            rt.spawn(async move {
                let l = TcpListener::from_std(data).expect("tokio listener");
                accept_data(l, i, w2, n).await
            });
        }
        let (w, n) = (world.clone(), air.clone());
        rt.spawn(air_loop(w, n));
        let w = world.clone();
        rt.spawn(async move {
            let every = opts.alive_every;
            loop {
                tokio::time::sleep(every).await;
                let mut w = lock(&w);
                w.say(A, "IAMALIVE");
                w.say(B, "IAMALIVE");
            }
        });
        VaraPair {
            world,
            air,
            rt: Some(rt),
        }
    }

    /// Command port of modem `i` (the data port is the next one).
    pub fn cmd_port(&self, i: usize) -> u16 {
        lock(&self.world).sides[i].cmd_port
    }

    /// Commands modem `i` received, in order. DISCONNECT is logged as
    /// `DISCONNECT buffer=N` with the bytes still waiting when it came.
    pub fn log(&self, i: usize) -> Vec<String> {
        lock(&self.world).sides[i].log.clone()
    }

    /// How many logged commands of modem `i` start with `prefix`.
    pub fn count(&self, i: usize, prefix: &str) -> usize {
        self.log(i).iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Most bytes that ever waited in modem `i`'s transmit buffer.
    pub fn max_buffer(&self, i: usize) -> usize {
        lock(&self.world).sides[i].max_buffer
    }

    /// Is a session up?
    pub fn connected(&self) -> bool {
        lock(&self.world).connected
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> u32 {
        lock(&self.world).sessions
    }

    /// Channel occupied (BUSY ON) or free on modem `i`.
    pub fn set_busy(&self, i: usize, busy: bool) {
        let mut w = lock(&self.world);
        w.sides[i].busy = busy;
        w.say(i, if busy { "BUSY ON" } else { "BUSY OFF" });
    }

    /// Modem `i` stops (or resumes) answering anything on its command port.
    pub fn set_dead(&self, i: usize, dead: bool) {
        lock(&self.world).sides[i].dead = dead;
    }

    /// Change the air bit rate; both applications get a BITRATE line.
    pub fn set_bitrate(&self, bps: u64) {
        let mut w = lock(&self.world);
        w.bitrate = bps;
        w.level = w.level.saturating_sub(1);
        let line = w.bitrate_line();
        w.say(A, &line);
        w.say(B, &line);
    }

    /// Once side `i` has transmitted and then been quiet for `quiet`, drop the session
    /// (both sides get DISCONNECTED at once).
    pub fn cut_when_quiet(&self, i: usize, quiet: Duration) {
        let mut w = lock(&self.world);
        w.sides[i].last_tx = None;
        w.cut = Some((i, quiet));
        drop(w);
        self.air.notify_one();
    }
}

impl Drop for VaraPair {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_cmd(l: TcpListener, i: usize, world: Arc<Mutex<World>>) {
    loop {
        let Ok((sock, _)) = l.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (mut rd, mut wr) = sock.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let gen = {
            let mut w = lock(&world);
            // A new client replaces the old one, as with one VARA instance.
            w.teardown();
            let s = &mut w.sides[i];
            s.cmd_gen += 1;
            s.to_app = Some(tx);
            s.mycall = None;
            s.p2p = false;
            s.listen = false;
            s.dialing = None;
            if s.busy {
                w.say(i, "BUSY ON");
            }
            w.sides[i].cmd_gen
        };
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut b = line.into_bytes();
                b.push(b'\r');
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        let w = world.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut line = Vec::new();
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    if b == b'\r' || b == b'\n' {
                        if !line.is_empty() {
                            let l = String::from_utf8_lossy(&line).to_string();
                            line.clear();
                            if lock(&w).sides[i].cmd_gen != gen {
                                return;
                            }
                            command(&w, i, &l);
                        }
                    } else {
                        line.push(b);
                    }
                }
            }
        });
    }
}

async fn accept_data(l: TcpListener, i: usize, world: Arc<Mutex<World>>, air: Arc<Notify>) {
    loop {
        let Ok((sock, _)) = l.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (mut rd, mut wr) = sock.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let gen = {
            let mut w = lock(&world);
            let s = &mut w.sides[i];
            s.data_gen += 1;
            s.data_to_app = Some(tx);
            s.data_gen
        };
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        let (w, air) = (world.clone(), air.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut w = lock(&w);
                if w.sides[i].data_gen != gen {
                    return;
                }
                if w.connected && !w.sides[i].disconnect_pending {
                    w.sides[i].buffer.extend(&buf[..n]);
                    let len = w.sides[i].buffer.len();
                    w.sides[i].max_buffer = w.sides[i].max_buffer.max(len);
                    let line = format!("BUFFER {len}");
                    w.say(i, &line);
                    drop(w);
                    air.notify_one();
                } else {
                    w.sides[i]
                        .log
                        .push(format!("(data outside a session: {n} bytes)"));
                }
            }
        });
    }
}

/// One command line from side `i`'s application.
fn command(world: &Arc<Mutex<World>>, i: usize, line: &str) {
    let mut w = lock(world);
    let logged = if line.eq_ignore_ascii_case("DISCONNECT") {
        format!("DISCONNECT buffer={}", w.sides[i].buffer.len())
    } else {
        line.to_string()
    };
    w.sides[i].log.push(logged);
    if w.sides[i].dead {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|x| x.to_ascii_uppercase()).collect();
    let u: Vec<&str> = upper.iter().map(|s| s.as_str()).collect();
    match u.as_slice() {
        ["MYCALL", calls @ ..] if !calls.is_empty() && calls.len() <= 5 => {
            w.sides[i].mycall = Some(calls[0].to_string());
            w.say(i, "OK");
        }
        ["LISTEN", x @ ("ON" | "OFF")] => {
            w.sides[i].listen = *x == "ON";
            w.say(i, "OK");
        }
        ["COMPRESSION", "OFF" | "TEXT" | "FILES"] | ["CWID", _] | ["PUBLIC", _] => w.say(i, "OK"),
        ["BW500" | "BW2300" | "BW2750"] if w.opts.hf => w.say(i, "OK"),
        ["P2P", "SESSION"] if w.opts.hf => {
            w.sides[i].p2p = true;
            w.say(i, "OK");
        }
        ["WINLINK", "SESSION"] if w.opts.hf => {
            w.sides[i].p2p = false;
            w.say(i, "OK");
        }
        ["VERSION"] => {
            w.say(i, "OK");
            w.say(i, "VERSION 4.8.7-emu");
        }
        ["CLEANTXBUFFER"] => {
            w.sides[i].buffer.clear();
            w.say(i, "OK");
        }
        ["CONNECT", src, dst] => {
            let ok = w.sides[i].mycall.is_some() && !w.connected && w.sides[i].dialing.is_none();
            if !ok {
                w.say(i, "WRONG");
                return;
            }
            w.say(i, "OK");
            let (src, dst) = (src.to_string(), dst.to_string());
            w.sides[i].dialing = Some(dst.clone());
            let (delay, timeout) = (w.opts.connect_delay, w.opts.connect_timeout);
            let world = world.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                {
                    let mut w = lock(&world);
                    let o = 1 - i;
                    // VARA HF: without P2P SESSION the call is a Winlink session, which
                    // only a gateway answers; the other modem here is a peer.
                    let kind_ok = !w.opts.hf || w.sides[i].p2p;
                    if !kind_ok {
                        w.sides[i]
                            .log
                            .push("(call made as a Winlink session: not answered)".into());
                    }
                    let answers = w.sides[o].mycall.as_deref() == Some(dst.as_str())
                        && w.sides[o].listen
                        && !w.sides[o].dead
                        && kind_ok;
                    if w.sides[i].dialing.as_deref() == Some(dst.as_str())
                        && answers
                        && !w.connected
                    {
                        w.sides[i].dialing = None;
                        w.connected = true;
                        w.session += 1;
                        w.sessions += 1;
                        for s in &mut w.sides {
                            s.buffer.clear();
                            s.disconnect_pending = false;
                            s.last_tx = None;
                        }
                        w.say(o, "PENDING");
                        let bw = w.opts.bw.map(|b| format!(" {b}")).unwrap_or_default();
                        let line = format!("CONNECTED {src} {dst}{bw}");
                        w.say(i, &line);
                        w.say(o, &line);
                        let br = w.bitrate_line();
                        w.say(i, &br);
                        w.say(o, &br);
                        return;
                    }
                }
                tokio::time::sleep(timeout.saturating_sub(delay)).await;
                let mut w = lock(&world);
                if w.sides[i].dialing.as_deref() == Some(dst.as_str()) {
                    w.sides[i].dialing = None;
                    w.say(i, "DISCONNECTED");
                }
            });
        }
        ["DISCONNECT"] => {
            w.say(i, "OK");
            if w.connected {
                w.sides[i].disconnect_pending = true;
            } else if w.sides[i].dialing.take().is_some() {
                w.say(i, "DISCONNECTED");
            }
        }
        ["ABORT"] => {
            w.say(i, "OK");
            w.sides[i].buffer.clear();
            w.sides[i].dialing = None;
            if w.connected {
                // The remote side learns of it; the local application gets nothing
                // (Pat's driver fakes its own DISCONNECTED after ABORT).
                w.connected = false;
                w.session += 1;
                let o = 1 - i;
                w.sides[o].buffer.clear();
                w.say(o, "DISCONNECTED");
            }
        }
        _ => w.say(i, "WRONG"),
    }
}

/// The shared channel: one transmission at a time, chunks of about 250 ms of air.
async fn air_loop(world: Arc<Mutex<World>>, air: Arc<Notify>) {
    let mut turn = 0usize;
    loop {
        let job = {
            let mut w = lock(&world);
            let now = Instant::now();
            if !w.connected {
                None
            } else if let Some(s) = (0..2)
                .map(|k| (turn + k) % 2)
                .find(|&s| !w.sides[s].buffer.is_empty())
            {
                turn = s + 1;
                let chunk_len = ((w.bitrate / 8 / 4) as usize)
                    .max(64)
                    .min(w.sides[s].buffer.len());
                let chunk: Vec<u8> = w.sides[s].buffer.drain(..chunk_len).collect();
                if !w.sides[s].ptt {
                    w.sides[s].ptt = true;
                    w.say(s, "PTT ON");
                }
                let mut air_ms = (chunk.len() as u64 * 8 * 1000).div_ceil(w.bitrate.max(1));
                while w.opts.loss > 0.0 && w.rand() < w.opts.loss {
                    air_ms += (chunk.len() as u64 * 8 * 1000).div_ceil(w.bitrate.max(1));
                }
                let d = Duration::from_millis(air_ms) + w.opts.latency;
                Some((s, chunk, d, w.session))
            } else {
                // Nothing to send: finish a pending DISCONNECT, or a test's cut.
                if let Some(i) = (0..2).find(|&i| w.sides[i].disconnect_pending) {
                    let _ = i;
                    w.teardown();
                } else if let Some((i, quiet)) = w.cut {
                    if w.sides[i]
                        .last_tx
                        .is_some_and(|t| now.saturating_duration_since(t) >= quiet)
                    {
                        w.cut = None;
                        w.teardown();
                    }
                }
                None
            }
        };
        let Some((s, chunk, d, session)) = job else {
            tokio::select! {
                _ = air.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            continue;
        };
        tokio::time::sleep(d).await;
        let mut w = lock(&world);
        if w.session != session || !w.connected {
            continue;
        }
        let o = 1 - s;
        if let Some(tx) = w.sides[o].data_to_app.clone() {
            match w.opts.data_lag {
                Some(lag) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(lag).await;
                        let _ = tx.send(chunk);
                    });
                }
                None => {
                    let _ = tx.send(chunk);
                }
            }
        }
        let left = w.sides[s].buffer.len();
        w.say(s, &format!("BUFFER {left}"));
        if left == 0 {
            w.sides[s].ptt = false;
            w.say(s, "PTT OFF");
        }
        w.sides[s].last_tx = Some(Instant::now());
    }
}
