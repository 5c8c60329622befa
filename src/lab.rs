//! The radio lab: two real Direwolf soft TNCs joined by real-time audio on one machine,
//! the closest thing to a 1200-baud packet channel without radios. Used by the demo (when
//! Direwolf is installed), the integration tests and the radio benchmark.
//!
//! Direwolf 1.6 can only transmit to an ALSA device, so each instance gets its
//! own HOME whose `.asoundrc` points the `file` plugin (over `null`) at a FIFO;
//! it receives raw S16_LE samples on stdin. The "air" thread in between is
//! required: the `null` device swallows a transmission instantly and nothing is
//! written between transmissions, so without real-time playout and silence
//! fill the peer decodes too fast and its carrier detect never drops.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Audio sample rate on the air (1200 baud: 40 samples per bit).
pub const SAMPLE_RATE: u32 = 48_000;
const BYTES_PER_SAMPLE: usize = 2;
/// TX audio collected before playout starts, so playout never underruns.
const PREBUFFER: Duration = Duration::from_millis(40);
const TICK: Duration = Duration::from_millis(5);
/// Most TX audio held per direction (one transmission is seldom over 30 s).
const MAX_TX_QUEUE_SECONDS: usize = 120;
/// Receiver not reading for this long: drop its backlog (it is stuck or dead).
const MAX_RX_BACKLOG_SECONDS: usize = 2;

/// Whether the `direwolf` binary is on PATH.
pub fn direwolf_available() -> bool {
    on_path("direwolf")
}

/// Whether `socat` is on PATH (needed for [`DirewolfPair::pty_b`]).
pub fn socat_available() -> bool {
    on_path("socat")
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()))
}

/// Prints why a test is skipped; returns true when direwolf is missing.
pub fn skip_without_direwolf(test: &str) -> bool {
    if direwolf_available() {
        return false;
    }
    eprintln!("SKIPPED {test}: direwolf not installed (apt-get install -y direwolf)");
    true
}

/// Options for [`DirewolfPair::start`].
#[derive(Debug, Clone)]
pub struct DirewolfOpts {
    /// 1200 (AFSK) or 9600 (G3RUH).
    pub baud: u32,
    /// Receive bit error rate (`direwolf -e`), applied by both receivers.
    pub ber: Option<f64>,
    /// Appended to the MODEM line, e.g. `"E"` (one slicer at 1200).
    pub modem_opts: String,
    /// `FIX_BITS n`; 0 disables single-bit repair so BER costs whole frames.
    pub fix_bits: Option<u8>,
    /// A station hears silence while it transmits (simplex radio).
    pub half_duplex: bool,
    /// Audio scale factor on the air (Direwolf says "too high" at 1.0).
    pub gain: f32,
    /// Extra config lines for both instances (e.g. `"TXDELAY 30"`).
    pub extra_config: Vec<String>,
    /// How long to wait for both KISS ports.
    pub start_timeout: Duration,
}

impl Default for DirewolfOpts {
    fn default() -> Self {
        DirewolfOpts {
            baud: 1200,
            ber: None,
            modem_opts: String::new(),
            fix_bits: None,
            half_duplex: true,
            gain: 0.5,
            extra_config: Vec::new(),
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// Air usage in one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirStats {
    /// Completed transmissions.
    pub bursts: u64,
    /// Seconds of audio played, i.e. transmitter keyed time.
    pub air_seconds: f64,
    /// Bursts that overlapped a transmission the other way.
    pub collided: u64,
    /// A transmission is on the air or waiting to start.
    pub busy: bool,
    /// Receive audio discarded because the receiver was not reading.
    pub dropped_rx_bytes: u64,
}

/// One transmission as played on the air (see [`DirewolfPair::air_log`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AirBurst {
    /// A transmitted (else B).
    pub from_a: bool,
    /// When its first sample was played.
    pub start: Instant,
    /// Seconds of audio played.
    pub secs: f64,
    /// The other station was keyed at some point during it.
    pub collided: bool,
}

/// Air usage in both directions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AirStats {
    /// A transmits, B receives.
    pub a_to_b: DirStats,
    /// B transmits, A receives.
    pub b_to_a: DirStats,
}

/// A running pair of Direwolf instances, A (N0CALL-1) and B (N0CALL-2).
///
/// Dropping it kills exactly the processes it started and removes its temp dir.
pub struct DirewolfPair {
    children: Vec<(&'static str, Child)>,
    air: Option<Air>,
    kiss_a: SocketAddr,
    kiss_b: SocketAddr,
    dir: tempfile::TempDir,
    _serial: SerialToken,
}

impl DirewolfPair {
    /// Starts both modems and the air; returns once both KISS ports accept.
    pub fn start(opts: DirewolfOpts) -> io::Result<DirewolfPair> {
        if !direwolf_available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "direwolf not on PATH",
            ));
        }
        if opts.baud != 1200 && opts.baud != 9600 {
            return Err(io::Error::other("baud must be 1200 or 9600"));
        }
        // Real-time demodulation needs the CPU: one pair per test binary at a time.
        let serial = SerialToken::acquire();
        let dir = tempfile::Builder::new().prefix("skywave-dw.").tempdir()?;
        let root = dir.path().to_path_buf();
        for f in ["txA", "rxA", "txB", "rxB"] {
            let status = Command::new("mkfifo").arg(root.join(f)).status()?;
            if !status.success() {
                return Err(io::Error::other(format!("mkfifo {f} failed: {status}")));
            }
        }
        let ports = free_ports(4)?;
        let (kiss_a, kiss_b) = (ports[0], ports[1]);
        let air = Air::spawn(&root, opts.half_duplex, opts.gain)?;
        let mut pair = DirewolfPair {
            children: Vec::new(),
            air: Some(air),
            kiss_a: SocketAddr::from(([127, 0, 0, 1], kiss_a)),
            kiss_b: SocketAddr::from(([127, 0, 0, 1], kiss_b)),
            dir,
            _serial: serial,
        };
        for (name, ssid, kiss, agw) in [("A", 1, kiss_a, ports[2]), ("B", 2, kiss_b, ports[3])] {
            let child = spawn_direwolf(&root, name, ssid, kiss, agw, &opts)?;
            pair.children
                .push((if name == "A" { "A" } else { "B" }, child));
        }
        pair.wait_for_kiss(opts.start_timeout)?;
        Ok(pair)
    }

    fn wait_for_kiss(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut up = [false, false];
        while Instant::now() < deadline {
            for (i, addr) in [self.kiss_a, self.kiss_b].iter().enumerate() {
                if !up[i] {
                    up[i] = TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok();
                }
            }
            if up == [true, true] {
                return Ok(());
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, c)| c.try_wait().ok().flatten().map(|st| (*name, st)));
            if let Some((name, status)) = exited {
                return Err(io::Error::other(format!(
                    "direwolf {name} exited with {status}\n{}",
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("KISS ports not up after {timeout:?}\n{}", self.logs()),
        ))
    }

    /// A's KISS TCP address.
    pub fn kiss_addr_a(&self) -> SocketAddr {
        self.kiss_a
    }

    /// B's KISS TCP address.
    pub fn kiss_addr_b(&self) -> SocketAddr {
        self.kiss_b
    }

    /// The run directory (configs, logs, FIFOs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Snapshot of air usage.
    pub fn air_stats(&self) -> AirStats {
        self.air.as_ref().map(Air::stats).unwrap_or_default()
    }

    /// Every completed transmission so far, in the order they ended.
    pub fn air_log(&self) -> Vec<AirBurst> {
        self.air.as_ref().map(Air::log).unwrap_or_default()
    }

    /// Blocks until no transmission has been on the air for `quiet`, or `timeout`.
    pub fn wait_air_idle(&self, quiet: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            let s = self.air_stats();
            if s.a_to_b.busy || s.b_to_a.busy {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= quiet {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Tail of both Direwolf logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["A", "B"] {
            let text = fs::read_to_string(self.dir().join(format!("{name}.log")))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            out.push_str(&format!(
                "--- direwolf {name} log (tail) ---\n{}\n",
                tail.join("\n")
            ));
        }
        out
    }

    /// Bridges B's KISS TCP port to a pseudo-terminal with socat; returns its path.
    pub fn pty_b(&mut self) -> io::Result<PathBuf> {
        if !socat_available() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "socat not on PATH"));
        }
        let link = self.dir().join("ttyB");
        let log = File::create(self.dir().join("socat.log"))?;
        let child = Command::new("socat")
            .arg(format!("pty,link={},raw,echo=0", link.display()))
            .arg(format!("tcp:{}", self.kiss_b))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children.push(("socat", child));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if link.exists() {
                return Ok(link);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other(format!(
            "socat pty did not appear: {}",
            fs::read_to_string(self.dir().join("socat.log")).unwrap_or_default()
        )))
    }
}

impl Drop for DirewolfPair {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(air) = self.air.take() {
            air.stop();
        }
    }
}

fn spawn_direwolf(
    root: &Path,
    name: &str,
    ssid: u8,
    kiss: u16,
    agw: u16,
    opts: &DirewolfOpts,
) -> io::Result<Child> {
    let home = root.join(format!("home{name}"));
    fs::create_dir_all(&home)?;
    fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.radio {{ type file slave.pcm \"null\" file \"{}\" format \"raw\" }}\n",
            root.join(format!("tx{name}")).display()
        ),
    )?;
    let mut conf = format!(
        "ADEVICE stdin radio\nARATE {SAMPLE_RATE}\nCHANNEL 0\nMYCALL N0CALL-{ssid}\n\
         MODEM {} {}\nKISSPORT {kiss}\nAGWPORT {agw}\n",
        opts.baud, opts.modem_opts
    );
    if let Some(n) = opts.fix_bits {
        conf.push_str(&format!("FIX_BITS {n}\n"));
    }
    for line in &opts.extra_config {
        conf.push_str(line);
        conf.push('\n');
    }
    let conf_path = root.join(format!("{name}.conf"));
    fs::write(&conf_path, conf)?;
    // O_RDWR on a FIFO never blocks on Linux, and direwolf never sees EOF.
    let rx = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join(format!("rx{name}")))?;
    let log = File::create(root.join(format!("{name}.log")))?;
    let mut cmd = Command::new("direwolf");
    cmd.arg("-c").arg(&conf_path).args(["-t", "0", "-q", "h"]);
    if let Some(ber) = opts.ber {
        cmd.arg("-e").arg(ber.to_string());
    }
    cmd.arg("-")
        .current_dir(root)
        .env("HOME", &home)
        .stdin(rx)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// Ports the OS just handed out; bound together so they are distinct.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Serialises pairs within one test binary (a guard that is `Send`).
struct SerialToken;

static SERIAL: Mutex<bool> = Mutex::new(false);
static SERIAL_CV: Condvar = Condvar::new();

impl SerialToken {
    fn acquire() -> SerialToken {
        let mut busy = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = SERIAL_CV.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        SerialToken
    }
}

impl Drop for SerialToken {
    fn drop(&mut self) {
        *SERIAL.lock().unwrap_or_else(|e| e.into_inner()) = false;
        SERIAL_CV.notify_one();
    }
}

/// The real-time audio relay thread.
struct Air {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<AirStats>>,
    log: Arc<Mutex<Vec<AirBurst>>>,
    thread: JoinHandle<()>,
}

impl Air {
    /// Opens all FIFOs before returning, so direwolf's opens never block.
    fn spawn(root: &Path, half_duplex: bool, gain: f32) -> io::Result<Air> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(AirStats::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let root = root.to_path_buf();
        let (stop2, stats2, log2) = (stop.clone(), stats.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("air".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let shared = AirShared {
                    stop: stop2,
                    stats: stats2,
                    log: log2,
                };
                rt.block_on(run_air(root, half_duplex, gain, shared, ready_tx));
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Air {
                stop,
                stats,
                log,
                thread,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("air thread died during setup")),
        }
    }

    fn stats(&self) -> AirStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn log(&self) -> Vec<AirBurst> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// One direction: a transmitter's FIFO to the other station's receive FIFO.
struct Link {
    tx: tokio::net::unix::pipe::Receiver,
    rx: tokio::net::unix::pipe::Sender,
    /// TX audio not yet played; `queue[off..]` is live (avoids shifting megabytes).
    queue: Vec<u8>,
    off: usize,
    start_at: Option<Instant>,
    active: bool,
    collided: bool,
    pending: Vec<u8>,
    /// When the current transmission started playing, and samples played in it.
    burst_start: Option<Instant>,
    burst_samples: u64,
}

impl Link {
    fn open(root: &Path, tx: &str, rx: &str) -> io::Result<Link> {
        let mut o = tokio::net::unix::pipe::OpenOptions::new();
        o.read_write(true);
        Ok(Link {
            tx: o.open_receiver(root.join(tx))?,
            rx: o.open_sender(root.join(rx))?,
            queue: Vec::new(),
            off: 0,
            start_at: None,
            active: false,
            collided: false,
            pending: Vec::new(),
            burst_start: None,
            burst_samples: 0,
        })
    }

    fn queued(&self) -> usize {
        self.queue.len() - self.off
    }

    fn read_tx(&mut self, now: Instant) {
        let mut buf = [0u8; 65536];
        loop {
            match self.tx.try_read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if self.queued() == 0 && !self.active && self.start_at.is_none() {
                        self.start_at = Some(now + PREBUFFER);
                    }
                    let cap = MAX_TX_QUEUE_SECONDS * SAMPLE_RATE as usize * BYTES_PER_SAMPLE;
                    if self.queued() + n <= cap {
                        self.queue.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
    }

    /// Up to `max` bytes of TX audio (whole samples) if transmitting.
    fn take(&mut self, now: Instant, max: usize, gain: f32) -> Vec<u8> {
        if !self.active && self.start_at.is_some_and(|t| now >= t) && self.queued() > 0 {
            self.active = true;
            self.start_at = None;
            self.burst_start = Some(now);
            self.burst_samples = 0;
        }
        if !self.active {
            return Vec::new();
        }
        let n = (self.queued() / BYTES_PER_SAMPLE * BYTES_PER_SAMPLE).min(max);
        let mut out = Vec::with_capacity(n);
        for s in self.queue[self.off..self.off + n].chunks_exact(2) {
            let v = f32::from(i16::from_le_bytes([s[0], s[1]])) * gain;
            out.extend_from_slice(&(v as i16).to_le_bytes());
        }
        self.off += n;
        if self.off > self.queue.len() / 2 {
            self.queue.drain(..self.off);
            self.off = 0;
        }
        out
    }

    fn write_rx(&mut self) -> u64 {
        while !self.pending.is_empty() {
            match self.rx.try_write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(_) => break,
            }
        }
        let max = MAX_RX_BACKLOG_SECONDS * SAMPLE_RATE as usize * BYTES_PER_SAMPLE;
        if self.pending.len() > max {
            let dropped = self.pending.len() as u64;
            self.pending.clear();
            return dropped;
        }
        0
    }
}

/// What the air thread shares with [`Air`].
struct AirShared {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<AirStats>>,
    log: Arc<Mutex<Vec<AirBurst>>>,
}

async fn run_air(
    root: PathBuf,
    half_duplex: bool,
    gain: f32,
    shared: AirShared,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let AirShared { stop, stats, log } = shared;
    let links =
        Link::open(&root, "txA", "rxB").and_then(|ab| Ok([ab, Link::open(&root, "txB", "rxA")?]));
    let mut links = match links {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let t0 = Instant::now();
    let mut emitted: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        for l in &mut links {
            l.read_tx(now);
        }
        let due_samples = ((now.duration_since(t0).as_secs_f64() * f64::from(SAMPLE_RATE)) as u64)
            .saturating_sub(emitted);
        if due_samples == 0 {
            continue;
        }
        emitted += due_samples;
        let nbytes = due_samples as usize * BYTES_PER_SAMPLE;
        let chunks = [
            links[0].take(now, nbytes, gain),
            links[1].take(now, nbytes, gain),
        ];
        let keyed = [links[0].active, links[1].active];
        let Ok(mut st) = stats.lock() else { return };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let other = 1 - i;
            let l = &mut links[i];
            if keyed[0] && keyed[1] {
                l.collided = true;
            }
            let played = chunk.len();
            // Half duplex: the receiving station is deaf while it transmits.
            let mut out = if half_duplex && keyed[other] {
                Vec::new()
            } else {
                chunk
            };
            out.resize(nbytes, 0);
            l.pending.extend_from_slice(&out);
            let dropped = l.write_rx();
            let d = if i == 0 {
                &mut st.a_to_b
            } else {
                &mut st.b_to_a
            };
            d.air_seconds += played as f64 / (BYTES_PER_SAMPLE as f64 * f64::from(SAMPLE_RATE));
            d.dropped_rx_bytes += dropped;
            l.burst_samples += (played / BYTES_PER_SAMPLE) as u64;
            if l.active && l.queued() < BYTES_PER_SAMPLE {
                l.active = false;
                d.bursts += 1;
                let collided = std::mem::take(&mut l.collided);
                d.collided += u64::from(collided);
                if let Ok(mut log) = log.lock() {
                    log.push(AirBurst {
                        from_a: i == 0,
                        start: l.burst_start.take().unwrap_or(now),
                        secs: l.burst_samples as f64 / f64::from(SAMPLE_RATE),
                        collided,
                    });
                }
            }
            d.busy = l.active || l.start_at.is_some();
        }
    }
}

/// One KISS data frame seen by a [`KissTap`].
#[derive(Debug, Clone, PartialEq)]
pub struct TappedFrame {
    /// When the tap saw its closing FEND.
    pub at: Instant,
    /// Client to TNC (handed over to be keyed up); else TNC to client (received).
    pub to_tnc: bool,
    /// Unescaped frame length without the KISS type byte: the AX.25 frame (or whatever
    /// raw payload the client sends) without HDLC flags and FCS.
    pub len: usize,
    /// The first byte of the AX.25 information field (a skywave packet's tag, whose
    /// high bits are OVER and MORE), if the frame has one.
    pub info_tag: Option<u8>,
    /// What the frame carries, for logs: a skywave message's name (a whole message or
    /// the first fragment of one), "fragment", "nack", or `None` for anything else.
    pub info_kind: Option<&'static str>,
}

/// Frames and bytes through a [`KissTap`] in some window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapTotals {
    /// Data frames handed to the TNC.
    pub frames_to_tnc: u64,
    /// Their bytes (see [`TappedFrame::len`]).
    pub bytes_to_tnc: u64,
    /// Data frames the TNC delivered to the client.
    pub frames_from_tnc: u64,
    /// Their bytes.
    pub bytes_from_tnc: u64,
}

/// A KISS TCP proxy that counts data frames each way: put it between a client and a
/// TNC's KISS port to measure the bytes a station keys up. Bytes pass through unchanged
/// and as soon as they arrive. Dropping it closes the listener and every connection.
pub struct KissTap {
    addr: SocketAddr,
    frames: Arc<Mutex<Vec<TappedFrame>>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl KissTap {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<KissTap> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (f, s, c) = (frames.clone(), stop.clone(), conns.clone());
        let thread = std::thread::Builder::new()
            .name("kiss-tap".into())
            .spawn(move || tap_accept(listener, upstream, f, s, c))?;
        Ok(KissTap {
            addr,
            frames,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// The address clients connect to instead of the TNC's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every data frame seen so far.
    pub fn frames(&self) -> Vec<TappedFrame> {
        self.frames.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Totals of the frames seen at or after `from` and before `to` (`None`: until now).
    pub fn totals(&self, from: Instant, to: Option<Instant>) -> TapTotals {
        let mut t = TapTotals::default();
        for f in self.frames() {
            if f.at < from || to.is_some_and(|to| f.at >= to) {
                continue;
            }
            if f.to_tnc {
                t.frames_to_tnc += 1;
                t.bytes_to_tnc += f.len as u64;
            } else {
                t.frames_from_tnc += 1;
                t.bytes_from_tnc += f.len as u64;
            }
        }
        t
    }
}

impl Drop for KissTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(conns) = self.conns.lock() {
            for c in conns.iter() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tap_accept(
    listener: TcpListener,
    upstream: SocketAddr,
    frames: Arc<Mutex<Vec<TappedFrame>>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => return,
        };
        let Ok(tnc) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = tnc.set_nodelay(true);
        let (Ok(c2), Ok(t2), Ok(c3), Ok(t3)) = (
            client.try_clone(),
            tnc.try_clone(),
            client.try_clone(),
            tnc.try_clone(),
        ) else {
            continue;
        };
        if let Ok(mut v) = conns.lock() {
            v.push(c3);
            v.push(t3);
        }
        for (from, to, to_tnc) in [(client, tnc, true), (t2, c2, false)] {
            let frames = frames.clone();
            let _ = std::thread::Builder::new()
                .name("kiss-tap-copy".into())
                .spawn(move || tap_copy(from, to, to_tnc, &frames));
        }
    }
}

/// The information field of an AX.25 UI frame: after the addresses (the last one has
/// bit 0 of its seventh byte set), the control and the PID byte.
fn ax25_info(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    loop {
        let last = frame.get(at + 6)? & 1 == 1;
        at += 7;
        if last {
            break;
        }
    }
    frame.get(at + 2..)
}

/// The first information byte of an AX.25 UI frame (a skywave packet's tag).
fn ax25_info_tag(frame: &[u8]) -> Option<u8> {
    ax25_info(frame)?.first().copied()
}

/// What a skywave packet carries (see [`crate::wire::frag`]'s layout): the message's name
/// for a whole message or a transfer's first fragment (the envelope's kind byte follows
/// its version and four network bytes), else the packet type.
fn skywave_packet_kind(frame: &[u8]) -> Option<&'static str> {
    use crate::wire::frag::{TAG_FRAGMENT, TAG_NACK_BITMAP, TAG_NACK_RANGES, TAG_WHOLE};
    fn varint(b: &[u8], at: &mut usize) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let x = *b.get(*at)?;
            *at += 1;
            v |= u32::from(x & 0x7F).checked_shl(shift)?;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let info = ax25_info(frame)?;
    let envelope_kind = |env: &[u8]| {
        env.get(5)
            .and_then(|&k| crate::wire::message::Message::kind_name(k))
    };
    match info.first()? & 0x3F {
        TAG_WHOLE => envelope_kind(info.get(1..)?),
        TAG_FRAGMENT => {
            let mut at = 1;
            let _id = varint(info, &mut at)?;
            let index = varint(info, &mut at)?;
            let _count = varint(info, &mut at)?;
            if index == 0 {
                envelope_kind(info.get(at..)?).or(Some("fragment"))
            } else {
                Some("fragment")
            }
        }
        TAG_NACK_RANGES | TAG_NACK_BITMAP => Some("nack"),
        _ => None,
    }
}

/// Copies one direction, counting KISS data frames (command 0) as they complete.
fn tap_copy(
    mut from: TcpStream,
    mut to: TcpStream,
    to_tnc: bool,
    frames: &Mutex<Vec<TappedFrame>>,
) {
    use std::io::{Read, Write};
    const FEND: u8 = 0xC0;
    const FESC: u8 = 0xDB;
    let mut buf = [0u8; 8192];
    // Bytes of the current frame (type byte included, escapes still in).
    let mut len = 0usize;
    let mut escapes = 0usize;
    let mut kind: Option<u8> = None;
    // The first unescaped bytes of the frame, enough to find the info field's first byte.
    let mut head: Vec<u8> = Vec::with_capacity(80);
    let mut escaped = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let now = Instant::now();
        for &b in &buf[..n] {
            if b == FEND {
                if len > 1 && kind.is_some_and(|k| k & 0x0F == 0) {
                    if let Ok(mut f) = frames.lock() {
                        f.push(TappedFrame {
                            at: now,
                            to_tnc,
                            len: len - 1 - escapes,
                            info_tag: ax25_info_tag(&head),
                            info_kind: skywave_packet_kind(&head),
                        });
                    }
                }
                len = 0;
                escapes = 0;
                kind = None;
                head.clear();
                escaped = false;
                continue;
            }
            if len == 0 {
                kind = Some(b);
            } else if b == FESC {
                escaped = true;
            } else if head.len() < 80 {
                head.push(match (escaped, b) {
                    (true, 0xDC) => FEND,
                    (true, 0xDD) => FESC,
                    _ => b,
                });
                escaped = false;
            }
            if b == FESC {
                escapes += 1;
            }
            len += 1;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The tap passes bytes through unchanged both ways and counts data frames by their
    /// unescaped length (type byte excluded); non-data commands are not counted.
    #[test]
    fn kiss_tap_counts_data_frames_each_way() {
        let start = Instant::now();
        let tnc = TcpListener::bind("127.0.0.1:0").unwrap();
        let tap = KissTap::start(tnc.local_addr().unwrap()).unwrap();
        let mut client = TcpStream::connect(tap.addr()).unwrap();
        let (mut tnc_side, _) = tnc.accept().unwrap();
        // Data frame of 4 bytes, one escaped FEND among them; then a TXDELAY command.
        let to_tnc = [0xC0, 0x00, 1, 0xDB, 0xDC, 2, 3, 0xC0, 0xC0, 0x01, 30, 0xC0];
        client.write_all(&to_tnc).unwrap();
        let mut got = [0u8; 12];
        tnc_side.read_exact(&mut got).unwrap();
        assert_eq!(got, to_tnc);
        let from_tnc = [0xC0, 0x00, 9, 9, 0xC0];
        tnc_side.write_all(&from_tnc).unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, from_tnc);
        // The counting thread records a frame after forwarding it: wait for both.
        let t0 = Instant::now();
        let mut totals = TapTotals::default();
        while t0.elapsed() < Duration::from_secs(10) {
            totals = tap.totals(start, None);
            if totals.frames_to_tnc == 1 && totals.frames_from_tnc == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            totals,
            TapTotals {
                frames_to_tnc: 1,
                bytes_to_tnc: 4,
                frames_from_tnc: 1,
                bytes_from_tnc: 2,
            }
        );
    }
}
