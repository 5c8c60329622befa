//! The tokio driver: the only place with time and I/O. Its task owns the node: it runs
//! the link tasks, feeds the node what they report with the current time, and carries out
//! what the node asks. The API, the miner and DNS seeding ask the node through a bounded
//! queue of requests ([`Shared::call`], [`REQUEST_QUEUE`]); nobody else touches it.
//!
//! Each input to the node (link events, a timeout, requests) runs in one store
//! transaction, committed before anything the input queued is handed to a link and
//! before a request hears its answer: nothing is sent or reported that is not durable.
//! Link events, and requests, that queued up while the node was busy are fed as one
//! input, sharing one commit (`INPUT_BATCH`).
//!
//! It fails loudly: a link task that panics or ends, a miner thread that panics, a
//! request that panics or a store write that fails ends [`start`]'s future with an
//! error, and `skywave run` exits non-zero so that a supervisor (systemd's
//! `Restart=on-failure`) starts it afresh from what the store holds.

use crate::chain::{pow, Address};
use crate::link::{
    self, DialState, LinkCaps, LinkCommand, LinkContext, LinkEvent, LinkId, LinkUrl, PeerId,
    PeerIds,
};
use crate::node::{Dest, Node, NodeEvent, Transmit};
use anyhow::anyhow;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tracing::{debug, error, info, warn};

/// Commands queued in each link task's channel; the driver's backlog for the link (in
/// bytes, below) holds the rest.
const LINK_QUEUE: usize = 256;
/// Envelope bytes the driver holds for one link that is not taking its commands (a
/// stuck modem); beyond this, further envelopes for it are dropped (the core's own
/// retries and the outbox cover them) and the other links carry on. On a link with
/// sessions (TCP) the session holding the most of it is closed instead, as a peer that
/// does not read: a dropped envelope would be a hole in its stream.
pub const LINK_BACKLOG_BYTES: usize = 4 << 20;
/// Control commands (disconnect, dial, connect) held for such a link.
const LINK_BACKLOG_CONTROL: usize = 4096;
/// Events queued from all links.
const EVENT_QUEUE: usize = 4096;
/// Most link events fed to the node as one input (one store commit): initial sync then
/// commits once per batch of blocks instead of once per block (docs/BENCHMARKS.md). The
/// answers to a batch can outrun a link's forwarder; a full backlog on a session link
/// then closes the peer that fills it (see [`LinkQueue::push`]) instead of dropping its
/// answers.
const INPUT_BATCH: usize = 64;
/// No further events join an input once it has queued this many bytes to send: what one
/// input sends reaches the links in one go, and a burst beyond their backlog
/// ([`LINK_BACKLOG_BYTES`]) would be dropped there.
const INPUT_BATCH_BYTES: usize = 256 << 10;
/// Shortest interval between session requests to on-demand links.
const CONNECT_EVERY_MS: u64 = 60_000;
/// Name of the link that carries sessions to addresses learned by peer exchange.
pub const PEX_LINK_NAME: &str = "peer-exchange";

/// Milliseconds since the Unix epoch by the system clock, which steps (NTP, a Raspberry
/// Pi without a real-time clock). For consensus timestamps only.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The source of wall-clock time a [`Clock`] reads.
pub type WallSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The node's clocks. `now_ms` drives every timer in the core: it is monotonic, and equal
/// to the wall clock when the clock was made, so that times the core keeps across a
/// restart stay roughly comparable. A step of the system clock moves neither: a backwards
/// step no longer freezes pings, beacons and timeouts, and a forward one no longer times
/// out every session. `wall_ms` follows the system clock, steps included, for block
/// timestamps.
///
/// Emulator tests run a whole station fast (`SKYWAVE_TIME_SCALE`, see [`Clock::system`]):
/// then the core's time runs that many times faster than real time, so every timer of
/// the core keeps its proportion to the emulated air.
#[derive(Clone)]
pub struct Clock {
    origin: tokio::time::Instant,
    anchor_ms: u64,
    wall: WallSource,
    scale: u64,
}

/// Most a test may speed the core's clock up by.
const MAX_TIME_SCALE: u64 = 1_000;

impl Clock {
    /// The system's clocks. For tests against emulators that run the air N times fast
    /// (the JS8Call emulator), `SKYWAVE_TIME_SCALE=N` runs the core's clock N times fast
    /// too; real stations never set it.
    pub fn system() -> Clock {
        let scale = std::env::var("SKYWAVE_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(1, |s| s.clamp(1, MAX_TIME_SCALE));
        Clock {
            scale,
            ..Clock::with_wall(Arc::new(wall_ms))
        }
    }

    /// A clock whose wall time comes from `wall` (tests step it). The monotonic part is
    /// tokio's, so a paused test runtime drives it.
    pub fn with_wall(wall: WallSource) -> Clock {
        Clock {
            origin: tokio::time::Instant::now(),
            anchor_ms: wall(),
            wall,
            scale: 1,
        }
    }

    /// The core's time in milliseconds: monotonic.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.anchor_ms
            .saturating_add(elapsed.saturating_mul(self.scale))
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> u64 {
        (self.wall)()
    }

    /// How many times faster than real time the core's clock runs (1 but in tests).
    pub fn scale(&self) -> u64 {
        self.scale
    }

    /// The real time `ms` of the core's time takes.
    pub fn real(&self, ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(ms.div_ceil(self.scale))
    }
}

/// The process's clock, shared by the driver, the API and the command line.
pub fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::system)
}

/// The core's time (see [`Clock::now_ms`]): what every `Node` method is given.
pub fn now_ms() -> u64 {
    clock().now_ms()
}

/// The same to the minute: `2026-12-02 04:40 UTC`.
pub fn utc_minutes(ms: u64) -> String {
    let t = utc_text(ms);
    // "YYYY-MM-DD HH:MM:SS UTC": drop ":SS".
    format!("{} UTC", &t[..t.len() - 7])
}

/// Wall-clock milliseconds since the epoch as people read them: `2026-12-02 04:40:12 UTC`.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm), valid for any u64 input here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A link as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    /// Link id.
    pub id: LinkId,
    /// Its URL.
    pub url: String,
    /// Usable: listening, connected (a `tcp://` link), or its modem answering.
    pub up: bool,
    /// `starting`, `up`, `dialling` (a `tcp://` link trying to connect) or `down`.
    pub state: String,
    /// Capabilities once up.
    pub caps: Option<LinkCaps>,
    /// The last error, in words (kept while the link dials again).
    pub error: Option<String>,
    /// When a link that is down tries again (wall-clock ms since the epoch), if it says.
    pub next_retry_ms: Option<u64>,
    /// The same, readable (UTC).
    pub next_retry: Option<String>,
    /// Since when the link is in this state (wall-clock ms since the epoch).
    pub since_ms: u64,
}

impl LinkStatus {
    fn set_state(&mut self, state: &str, wall: u64) {
        if self.state != state {
            self.state = state.to_string();
            self.since_ms = wall;
        }
        self.up = state == "up";
    }
}

/// Requests waiting for the node's owner (the API, the miner, DNS seeding). When full,
/// the API answers 503 at once; the miner and the driver's own helpers wait.
pub const REQUEST_QUEUE: usize = 64;

/// Work for the node, run by its owner as one input; what it returns is the reply,
/// handed back only once the input has committed.
type Job = Box<dyn FnOnce(&mut Node, u64) -> Reply + Send>;
type Reply = Box<dyn FnOnce() + Send>;

/// Why a request to the node got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// [`REQUEST_QUEUE`] requests are already waiting.
    Busy,
    /// The node stopped (or failed) before answering.
    Stopped,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::Busy => write!(
                f,
                "the node is busy ({REQUEST_QUEUE} requests waiting); try again"
            ),
            Unanswered::Stopped => write!(f, "the node is stopping"),
        }
    }
}

impl std::error::Error for Unanswered {}

/// What anyone may read without asking the node: published by its owner after every
/// input.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Network name.
    pub network: &'static str,
    /// Best chain height.
    pub height: u64,
    /// Best block hash.
    pub tip: crate::chain::Hash,
    /// Height of the best known header chain.
    pub header_height: u64,
}

impl Summary {
    fn of(n: &Node) -> Summary {
        let c = n.chain();
        Summary {
            network: c.params().name,
            height: c.tip().height,
            tip: c.tip().hash,
            header_height: c.best_header().height,
        }
    }
}

/// State shared by the driver, the API and the miner. The node itself is not here: the
/// driver's task owns it, and everyone else asks through [`Shared::call`].
pub struct Shared {
    requests: mpsc::Sender<Job>,
    summary: watch::Sender<Summary>,
    /// Wakes the driver (to stop, or to record a fault).
    pub wake: Notify,
    /// Links and their state.
    pub links: Mutex<Vec<LinkStatus>>,
    /// Node events, for progress displays (the demo); lagging receivers just miss some.
    pub events: broadcast::Sender<NodeEvent>,
    /// Set when the node is shutting down.
    pub stopping: AtomicBool,
    /// Misbehaviour reports since start.
    pub misbehaviours: AtomicU64,
    /// Set once every configured link task has been started (for `/api/ready`).
    pub links_started: AtomicBool,
    /// Envelopes dropped because their link did not take them (see [`LINK_BACKLOG_BYTES`]).
    pub link_drops: AtomicU64,
    /// The first fatal fault: the driver stops with it.
    fault: OnceLock<String>,
    clock: Clock,
}

impl Shared {
    fn job<T: Send + 'static>(
        f: impl FnOnce(&mut Node, u64) -> T + Send + 'static,
    ) -> (Job, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |n, now| {
            let v = f(n, now);
            Box::new(move || {
                let _ = tx.send(v);
            })
        });
        (job, rx)
    }

    /// Ask the node: `f` runs on its owner as one input (its writes commit before the
    /// answer comes back), given the core's time. Keep `f` short (take what is needed
    /// and build answers outside): the node does nothing else meanwhile. Refused at once
    /// when [`REQUEST_QUEUE`] requests are waiting (the API answers 503).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, u64) -> T + Send + 'static,
    ) -> Result<T, Unanswered> {
        let (job, rx) = Self::job(f);
        self.requests.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Unanswered::Busy,
            mpsc::error::TrySendError::Closed(_) => Unanswered::Stopped,
        })?;
        rx.await.map_err(|_| Unanswered::Stopped)
    }

    /// [`Shared::call`], waiting for room in the queue instead of being refused.
    pub async fn call_wait<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, u64) -> T + Send + 'static,
    ) -> Result<T, Unanswered> {
        let (job, rx) = Self::job(f);
        self.requests
            .send(job)
            .await
            .map_err(|_| Unanswered::Stopped)?;
        rx.await.map_err(|_| Unanswered::Stopped)
    }

    /// [`Shared::call_wait`] from a thread outside the runtime (the miner). Must not be
    /// called from async code.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, u64) -> T + Send + 'static,
    ) -> Result<T, Unanswered> {
        let (job, rx) = Self::job(f);
        self.requests
            .blocking_send(job)
            .map_err(|_| Unanswered::Stopped)?;
        rx.blocking_recv().map_err(|_| Unanswered::Stopped)
    }

    /// Tip, header height and network as of the last input, without asking the node.
    pub fn summary(&self) -> Summary {
        self.summary.borrow().clone()
    }

    /// Record a fatal fault and wake the driver, which then stops with it.
    pub fn fail(&self, why: String) {
        if self.fault.set(why.clone()).is_ok() {
            error!("fatal: {why}");
        }
        self.wake.notify_one();
    }

    /// The fatal fault recorded, if any.
    pub fn fault(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    /// The core's time (monotonic, see [`Clock`]).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Run one input on the node (link events, a timeout, a request, a mined block): its
/// store writes commit in one transaction before the driver hands what it queued to the
/// links. If a write failed (whatever the code that made it did with the error), the
/// commit fails, or `f` panicked, the input is rolled back and the driver stops: the
/// node's memory may be ahead of its store, so nothing may go on with it.
fn input<T>(
    shared: &Shared,
    node: &mut Node,
    f: impl FnOnce(&mut Node, u64) -> T,
) -> anyhow::Result<T> {
    let now = shared.clock.now_ms();
    node.set_wall_clock(now, shared.clock.wall_ms());
    node.set_air_clock(
        now,
        shared.clock.wall_ms().saturating_mul(shared.clock.scale()),
    );
    node.chain().store().begin_input();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(node, now)));
    let store = node.chain().store();
    match r {
        Ok(v) => match store.end_input() {
            Ok(()) => {
                let now = Summary::of(node);
                shared.summary.send_if_modified(|s| {
                    let changed = s.tip != now.tip || s.header_height != now.header_height;
                    *s = now;
                    changed
                });
                Ok(v)
            }
            Err(e) => {
                let why = format!(
                    "store failure, stopping so that the node's memory and its store \
                     cannot disagree: {e}"
                );
                shared.fail(why.clone());
                Err(anyhow!(why))
            }
        },
        Err(p) => {
            // Half an input: none of it may become durable.
            store.abandon_input();
            let why = format!(
                "node state poisoned: a panic while changing it ({})",
                panic_text(p.as_ref())
            );
            shared.fail(why.clone());
            Err(anyhow!(why))
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Options for [`start`].
pub struct DriverOptions {
    /// Links to open.
    pub links: Vec<LinkUrl>,
    /// Mine continuously, paying this address.
    pub mine_to: Option<Address>,
    /// Station callsign for radio links.
    pub callsign: String,
    /// Links built by the caller (name for the API, and a function that starts the link
    /// task), e.g. the demo's simulated radio hop.
    pub custom_links: Vec<(String, LinkSpawner)>,
    /// Pause mining while the chain is at or above this height (the caller may raise it).
    pub mine_until_height: Option<Arc<AtomicU64>>,
}

/// Starts a link task given its context.
pub type LinkSpawner = Box<dyn FnOnce(LinkContext) -> tokio::task::JoinHandle<()> + Send>;

/// Start the driver. Returns the shared state and a future that runs until [`stop`] is
/// called (then `Ok`) or something fatal happens: a link task panicked or ended, the
/// miner panicked, an input panicked or did not commit (then `Err`, already logged).
pub fn start(
    node: Node,
    opts: DriverOptions,
) -> (
    Arc<Shared>,
    impl std::future::Future<Output = anyhow::Result<()>>,
) {
    start_with_clock(node, opts, clock().clone())
}

/// [`start`] on a clock of the caller's (tests step its wall clock).
pub fn start_with_clock(
    node: Node,
    opts: DriverOptions,
    clock: Clock,
) -> (
    Arc<Shared>,
    impl std::future::Future<Output = anyhow::Result<()>>,
) {
    let (events_tx, _) = broadcast::channel(1024);
    let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let (summary, _) = watch::channel(Summary::of(&node));
    let shared = Arc::new(Shared {
        requests,
        summary,
        wake: Notify::new(),
        links: Mutex::new(Vec::new()),
        events: events_tx,
        stopping: AtomicBool::new(false),
        misbehaviours: AtomicU64::new(0),
        links_started: AtomicBool::new(false),
        link_drops: AtomicU64::new(0),
        fault: OnceLock::new(),
        clock,
    });
    let fut = drive(shared.clone(), node, requests_rx, opts);
    (shared, fut)
}

/// Ask a running driver to stop (it then aborts its links and returns).
pub fn stop(shared: &Shared) {
    shared.stopping.store(true, Ordering::SeqCst);
    shared.wake.notify_one();
}

/// Commands waiting for one link. A forwarding task hands them to the link's bounded
/// channel, so a link that stops taking commands stalls only its own forwarder, never the
/// driver's loop (and with it every other link and timer).
struct LinkQueue {
    inner: Arc<Mutex<Backlog>>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Backlog {
    q: VecDeque<LinkCommand>,
    bytes: usize,
    /// `Send` bytes held per peer: on a link with sessions the peer holding the most is
    /// the one closed when the backlog is full.
    per_peer: HashMap<PeerId, usize>,
    control: usize,
    /// The link's peers are sessions (TCP): an envelope dropped here would be a hole in
    /// a stream that the core takes as reliable, so a full backlog closes a session
    /// instead. On packet links the core's retries cover what is dropped.
    sessions: bool,
    /// Dropping since the link last took a command (one warning per stall).
    stalled: bool,
}

/// What became of a command handed to a [`LinkQueue`].
#[derive(Debug, PartialEq)]
enum Queued {
    Yes,
    /// Dropped: the link is not taking commands.
    Dropped,
    /// The backlog was full and this peer held the most of it: what was held for it is
    /// gone and its session must close (the command itself is queued unless it was for
    /// this peer).
    Evicted {
        peer: PeerId,
        envelopes: u64,
        queued: bool,
    },
}

impl Backlog {
    fn take(&mut self, cmd: &LinkCommand) {
        match cmd {
            LinkCommand::Send { peer, bytes } => {
                self.bytes -= bytes.len();
                if let Some(b) = self.per_peer.get_mut(peer) {
                    *b -= bytes.len();
                    if *b == 0 {
                        self.per_peer.remove(peer);
                    }
                }
            }
            c => match cmd_bytes(c) {
                Some(n) => self.bytes -= n,
                None => self.control -= 1,
            },
        }
    }

    fn add(&mut self, cmd: LinkCommand) {
        match &cmd {
            LinkCommand::Send { peer, bytes } => {
                self.bytes += bytes.len();
                *self.per_peer.entry(*peer).or_default() += bytes.len();
            }
            c => match cmd_bytes(c) {
                Some(n) => self.bytes += n,
                None => self.control += 1,
            },
        }
        self.q.push_back(cmd);
    }

    /// Drop every envelope held for `peer`; the bytes and envelopes freed.
    fn evict(&mut self, peer: PeerId) -> (usize, u64) {
        let Some(freed) = self.per_peer.remove(&peer) else {
            return (0, 0);
        };
        let before = self.q.len();
        self.q
            .retain(|c| !matches!(c, LinkCommand::Send { peer: p, .. } if *p == peer));
        self.bytes -= freed;
        (freed, (before - self.q.len()) as u64)
    }
}

fn cmd_bytes(cmd: &LinkCommand) -> Option<usize> {
    match cmd {
        LinkCommand::Send { bytes, .. }
        | LinkCommand::Broadcast { bytes }
        | LinkCommand::Aprs { info: bytes } => Some(bytes.len()),
        LinkCommand::Disconnect { .. } | LinkCommand::Dial { .. } | LinkCommand::Connect => None,
    }
}

impl LinkQueue {
    fn new(
        link: LinkId,
        tx: mpsc::Sender<LinkCommand>,
    ) -> (LinkQueue, tokio::task::JoinHandle<()>) {
        let inner = Arc::new(Mutex::new(Backlog::default()));
        let wake = Arc::new(Notify::new());
        let fwd = tokio::spawn(forward(link, inner.clone(), wake.clone(), tx));
        (LinkQueue { inner, wake }, fwd)
    }

    /// The link's caps are known: whether its peers are sessions.
    fn set_sessions(&self, sessions: bool) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sessions = sessions;
    }

    /// Queue a command, or say why not.
    fn push(&self, link: LinkId, cmd: LinkCommand) -> Queued {
        // The backlog is a plain queue and no code that can panic runs under its lock, so
        // a poisoned lock still holds a consistent queue.
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fits = |b: &Backlog| match cmd_bytes(&cmd) {
            Some(n) => b.bytes.saturating_add(n) <= LINK_BACKLOG_BYTES || b.q.is_empty(),
            None => b.control < LINK_BACKLOG_CONTROL,
        };
        if !fits(&b) {
            if let (LinkCommand::Send { peer, bytes }, true) = (&cmd, b.sessions) {
                // The session whose envelopes fill the backlog is not read fast enough:
                // it goes, rather than holes in anyone's stream.
                let peer = *peer;
                let mine = b.per_peer.get(&peer).copied().unwrap_or(0) + bytes.len();
                let victim = b
                    .per_peer
                    .iter()
                    .map(|(p, n)| (*p, *n))
                    .chain(std::iter::once((peer, mine)))
                    .max_by_key(|(_, n)| *n)
                    .map_or(peer, |(p, _)| p);
                let (freed, envelopes) = b.evict(victim);
                let queued = victim != peer && fits(&b);
                warn!(
                    link,
                    peer = victim,
                    bytes = freed,
                    "link backlog full: closing the session holding most of it (peer does not read)"
                );
                if queued {
                    b.add(cmd);
                    drop(b);
                    self.wake.notify_one();
                }
                return Queued::Evicted {
                    peer: victim,
                    envelopes: envelopes + u64::from(!queued),
                    queued,
                };
            }
            if !std::mem::replace(&mut b.stalled, true) {
                warn!(
                    link,
                    queued = b.q.len(),
                    bytes = b.bytes,
                    "link is not taking commands: dropping what it cannot hold"
                );
            }
            return Queued::Dropped;
        }
        b.add(cmd);
        drop(b);
        self.wake.notify_one();
        Queued::Yes
    }
}

async fn forward(
    link: LinkId,
    inner: Arc<Mutex<Backlog>>,
    wake: Arc<Notify>,
    tx: mpsc::Sender<LinkCommand>,
) {
    loop {
        let next = {
            let mut b = inner.lock().unwrap_or_else(|p| p.into_inner());
            let next = b.q.pop_front();
            if let Some(c) = &next {
                b.take(c);
            }
            next
        };
        match next {
            Some(cmd) => {
                if tx.send(cmd).await.is_err() {
                    // The link task ended; the driver hears of it from the task itself.
                    debug!(link, "link task gone: forwarder stops");
                    return;
                }
                let mut b = inner.lock().unwrap_or_else(|p| p.into_inner());
                if std::mem::replace(&mut b.stalled, false) {
                    info!(link, "link takes commands again");
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Why a task the driver depends on ended, for the log and the exit status.
fn task_end(what: &str, r: Result<(), tokio::task::JoinError>) -> String {
    match r {
        Ok(()) => format!("{what} ended unexpectedly"),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("{what} panicked: {msg}")
        }
        Err(e) => format!("{what} was cancelled: {e}"),
    }
}

async fn drive(
    shared: Arc<Shared>,
    node: Node,
    requests: mpsc::Receiver<Job>,
    opts: DriverOptions,
) -> anyhow::Result<()> {
    let r = drive_inner(&shared, node, requests, opts).await;
    // Whatever ended the loop, the miner must see it.
    shared.stopping.store(true, Ordering::SeqCst);
    if let Err(e) = &r {
        // Already logged by the loop; recorded for whoever asks (`Shared::fault`).
        let _ = shared.fault.set(format!("{e:#}"));
    }
    r
}

async fn drive_inner(
    shared: &Arc<Shared>,
    mut node: Node,
    mut requests: mpsc::Receiver<Job>,
    opts: DriverOptions,
) -> anyhow::Result<()> {
    let (ev_tx, mut ev_rx) = mpsc::channel::<LinkEvent>(EVENT_QUEUE);
    // Link tasks, forwarders and the miner report here when they end.
    let (dead_tx, mut dead_rx) = mpsc::unbounded_channel::<(Option<LinkId>, String)>();
    let peer_ids = PeerIds::default();
    let mut link_cmds: HashMap<LinkId, LinkQueue> = HashMap::new();
    let mut tasks: Vec<tokio::task::AbortHandle> = Vec::new();
    let mut custom = opts.custom_links;
    let named: Vec<(String, Option<LinkUrl>)> = opts
        .links
        .iter()
        .map(|u| (u.to_string(), Some(u.clone())))
        .chain(custom.iter().map(|(name, _)| (name.clone(), None)))
        .collect();
    let mut custom_iter = custom.drain(..);
    // Links that open sessions only when asked (VARA with a peer to dial).
    let mut on_demand: Vec<LinkId> = Vec::new();
    // Peers learned by exchange are dialled on a link of their own, when the node
    // speaks TCP at all.
    let tcp = opts.links.iter().any(|u| u.is_tcp());
    let pex = tcp && node.config().peers.peer_exchange;
    let named: Vec<(String, Option<LinkUrl>)> = if pex {
        named
            .into_iter()
            .chain(std::iter::once((PEX_LINK_NAME.to_string(), None)))
            .collect()
    } else {
        named
    };
    let mut pex_link = None;
    let network = node.chain().params().name.to_string();
    // TCP links (only those) hold the node key: it is their Noise static key.
    let key = node.config().node_key.clone();
    let node_key = || -> anyhow::Result<_> { Ok(key.clone()) };
    let noise = || -> anyhow::Result<_> { Ok(link::tcp::Security::noise(node_key()?)) };
    let mut beacons: Vec<link::aprs::Beacon> = Vec::new();
    for (i, (name, url)) in named.into_iter().enumerate() {
        let id = i as LinkId + 1;
        let is_pex = pex && url.is_none() && name == PEX_LINK_NAME;
        let (cmd_tx, cmd_rx) = mpsc::channel(LINK_QUEUE);
        let ctx = LinkContext {
            id,
            events: ev_tx.clone(),
            commands: cmd_rx,
            peer_ids: peer_ids.clone(),
            callsign: opts.callsign.clone(),
        };
        if let Ok(mut l) = shared.links.lock() {
            l.push(LinkStatus {
                id,
                url: name.clone(),
                up: false,
                state: "starting".into(),
                caps: None,
                error: None,
                next_retry_ms: None,
                next_retry: None,
                since_ms: shared.clock.wall_ms(),
            });
        }
        let task = match url {
            Some(url) => {
                let started = url.start(&network, node_key, ctx)?;
                if started.on_demand {
                    on_demand.push(id);
                }
                if let Some(every) = started.aprs_every_min {
                    beacons.push(link::aprs::Beacon::new(id, every, shared.now_ms()));
                }
                started.task
            }
            None if is_pex => {
                pex_link = Some(id);
                tokio::spawn(link::tcp::run_pex(noise()?, ctx))
            }
            None => match custom_iter.next() {
                Some((_, spawn)) => spawn(ctx),
                None => continue,
            },
        };
        let (queue, fwd) = LinkQueue::new(id, cmd_tx);
        link_cmds.insert(id, queue);
        for (what, handle) in [
            (format!("link {id} ({name}) task"), task),
            (format!("link {id} ({name}) command forwarder"), fwd),
        ] {
            tasks.push(handle.abort_handle());
            let dead = dead_tx.clone();
            tokio::spawn(async move {
                let _ = dead.send((Some(id), task_end(&what, handle.await)));
            });
        }
    }
    drop(ev_tx);
    shared.links_started.store(true, Ordering::SeqCst);

    let until = opts.mine_until_height;
    let miner = opts.mine_to.map(|addr| {
        let s = shared.clone();
        let dead = dead_tx.clone();
        std::thread::spawn(move || {
            // Reports the thread's end, panics included (the guard drops while unwinding).
            struct Watch(mpsc::UnboundedSender<(Option<LinkId>, String)>);
            impl Drop for Watch {
                fn drop(&mut self) {
                    let why = if std::thread::panicking() {
                        "miner thread panicked"
                    } else {
                        "miner thread ended"
                    };
                    let _ = self.0.send((None, why.to_string()));
                }
            }
            let _watch = Watch(dead);
            mine_loop(s, addr, until)
        })
    });
    drop(dead_tx);

    let mut peer_link: HashMap<PeerId, LinkId> = HashMap::new();
    // What the last input queued to send, held until it committed (see `on_link_events`).
    let mut held: Vec<Transmit> = Vec::new();
    let mut last_connect: Option<u64> = None;
    let outcome = loop {
        if let Some(f) = shared.fault() {
            break Err(anyhow!("{f}"));
        }
        if let Err(e) = flush(
            shared,
            &mut node,
            &link_cmds,
            &mut peer_link,
            pex_link,
            &mut held,
        ) {
            break Err(e);
        }
        if !on_demand.is_empty() {
            if let Err(e) =
                ask_for_sessions(shared, &mut node, &link_cmds, &on_demand, &mut last_connect)
            {
                break Err(e);
            }
        }
        if let Err(e) = send_beacons(shared, &mut node, &link_cmds, &mut beacons) {
            break Err(e);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break Ok(());
        }
        let deadline = node.poll_timeout().min(link::aprs::next_due(&beacons));
        let wait = shared
            .clock
            .real(deadline.saturating_sub(shared.now_ms()).min(60_000));
        let sleep = tokio::time::sleep(wait);
        let r = tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(ev) => on_link_events(shared, &mut node, &link_cmds, ev, &mut ev_rx, &mut peer_link, &mut held),
                None => {
                    // No links at all: run on timers alone.
                    let job = tokio::select! {
                        _ = tokio::time::sleep(wait) => None,
                        _ = shared.wake.notified() => None,
                        Some(job) = requests.recv() => Some(job),
                    };
                    match job {
                        Some(job) => on_requests(shared, &mut node, job, &mut requests),
                        None => timeout(shared, &mut node),
                    }
                }
            },
            _ = sleep => timeout(shared, &mut node),
            _ = shared.wake.notified() => Ok(()),
            Some(job) = requests.recv() => on_requests(shared, &mut node, job, &mut requests),
            Some((dead_link, why)) = dead_rx.recv() => {
                if shared.stopping.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    // What the link said before it ended (its Down reason) goes to the
                    // log first.
                    while let Ok(ev) = ev_rx.try_recv() {
                        let _ = on_link_events(shared, &mut node, &link_cmds, ev, &mut ev_rx, &mut peer_link, &mut held);
                    }
                    // A link that ended names its cause ("cannot listen on ...: Address
                    // already in use"), not only that it ended.
                    let cause = dead_link.and_then(|id| {
                        let l = shared.links.lock().ok()?;
                        l.iter().find(|s| s.id == id)?.error.clone()
                    });
                    match cause {
                        Some(c) => Err(anyhow!("{why}: {c}")),
                        None => Err(anyhow!("{why}")),
                    }
                }
            }
        };
        if let Err(e) = r {
            break Err(e);
        }
    };
    match &outcome {
        Ok(()) => info!("shutting down"),
        Err(e) => error!("stopping the node: {e:#}"),
    }
    shared.stopping.store(true, Ordering::SeqCst);
    for t in &tasks {
        t.abort();
    }
    // Whoever waits for the node (the miner, a handler) hears that it stopped.
    drop(requests);
    if let Some(m) = miner {
        let _ = tokio::task::spawn_blocking(move || m.join()).await;
    }
    outcome
}

fn timeout(shared: &Shared, node: &mut Node) -> anyhow::Result<()> {
    input(shared, node, |n, now| n.handle_timeout(now))
}

/// Run `first` and the requests queued behind it, up to [`INPUT_BATCH`], as one input;
/// their answers go out once it has committed. If it did not, they are dropped unsent
/// (their callers hear [`Unanswered::Stopped`]) and the driver stops.
fn on_requests(
    shared: &Shared,
    node: &mut Node,
    first: Job,
    more: &mut mpsc::Receiver<Job>,
) -> anyhow::Result<()> {
    let replies = input(shared, node, |n, now| {
        let mut replies = vec![first(n, now)];
        while replies.len() < INPUT_BATCH {
            match more.try_recv() {
                Ok(job) => replies.push(job(n, now)),
                Err(_) => break,
            }
        }
        replies
    })?;
    for r in replies {
        r();
    }
    Ok(())
}

/// Caps as a link reports them, with the bit rate held to what any modem reaches: the
/// core multiplies with it, and a link passes on numbers a modem told it.
fn sane(mut caps: LinkCaps) -> LinkCaps {
    caps.bitrate_bps = caps.bitrate_bps.min(link::MAX_BITRATE_BPS);
    caps
}

/// Feed `first` and the link events queued behind it to the node as one input (one
/// store transaction), up to [`INPUT_BATCH`] events or [`INPUT_BATCH_BYTES`] queued to
/// send. What the node queues moves to `held`, which [`flush`] sends once the input has
/// committed.
fn on_link_events(
    shared: &Shared,
    node: &mut Node,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    first: LinkEvent,
    more: &mut mpsc::Receiver<LinkEvent>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    held: &mut Vec<Transmit>,
) -> anyhow::Result<()> {
    input(shared, node, |n, _| {
        let (mut events, mut bytes) = (0, 0);
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            if let LinkEvent::Up { link, caps } | LinkEvent::Caps { link, caps } = &ev {
                if let Some(q) = link_cmds.get(link) {
                    q.set_sessions(caps.connection_oriented);
                }
            }
            on_link_event(shared, n, ev, peer_link);
            events += 1;
            while let Some(t) = n.poll_transmit() {
                bytes += t.bytes.len();
                held.push(t);
            }
            if events < INPUT_BATCH && bytes < INPUT_BATCH_BYTES {
                next = more.try_recv().ok();
            }
        }
    })
}

fn on_link_event(
    shared: &Shared,
    n: &mut Node,
    ev: LinkEvent,
    peer_link: &mut HashMap<PeerId, LinkId>,
) {
    let now = shared.now_ms();
    match ev {
        LinkEvent::Up { link, caps } => {
            let caps = sane(caps);
            let wall = shared.clock.wall_ms();
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    if s.state == "down" {
                        info!("link {link} ({}) is up again", s.url);
                    }
                    s.set_state("up", wall);
                    s.caps = Some(caps.clone());
                    s.error = None;
                    s.next_retry_ms = None;
                    s.next_retry = None;
                }
            }
            n.link_up(now, link, caps);
        }
        LinkEvent::Dial { link, state } => on_dial(shared, link, state),
        LinkEvent::Caps { link, caps } => {
            let caps = sane(caps);
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    s.caps = Some(caps.clone());
                }
            }
            n.link_caps(now, link, caps);
        }
        LinkEvent::Down { link, reason } => {
            let wall = shared.clock.wall_ms();
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    warn!("link {link} ({}) is down: {reason}", s.url);
                    s.set_state("down", wall);
                    s.error = Some(reason);
                    s.next_retry_ms = None;
                    s.next_retry = None;
                }
            }
            n.link_down(link);
        }
        LinkEvent::PeerUp {
            link,
            peer,
            remote,
            outbound,
        } => {
            debug!(link, peer, %remote, outbound, "peer session open");
            peer_link.insert(peer, link);
            n.peer_connected(now, peer, link, remote, outbound);
        }
        LinkEvent::Frame { peer, bytes } => {
            n.handle_frame(now, peer, &bytes);
        }
        LinkEvent::Garbage { peer, reason } => {
            n.peer_garbage(now, peer, reason);
        }
        LinkEvent::PeerDown { peer, reason } => {
            debug!(peer, %reason, "peer session closed");
            peer_link.remove(&peer);
            n.peer_disconnected(now, peer);
        }
    }
}

/// A dialling link's progress: its status for people, and the log. The first failure,
/// a new error and every change between up and down are logged; the same failure
/// repeated at each redial is not.
fn on_dial(shared: &Shared, link: LinkId, state: DialState) {
    let wall = shared.clock.wall_ms();
    let Ok(mut l) = shared.links.lock() else {
        return;
    };
    let Some(s) = l.iter_mut().find(|s| s.id == link) else {
        return;
    };
    match state {
        DialState::Dialling => {
            if s.state == "starting" {
                info!("link {link} ({}): dialling", s.url);
            }
            s.set_state("dialling", wall);
            s.next_retry_ms = None;
            s.next_retry = None;
        }
        DialState::Connected => {
            info!("link {link} ({}) is up: connected", s.url);
            s.set_state("up", wall);
            s.error = None;
        }
        DialState::Failed { error, retry_in_ms } => {
            let at = wall.saturating_add(retry_in_ms);
            let secs = retry_in_ms.div_ceil(1000);
            if s.up || s.error.as_deref() != Some(error.as_str()) {
                warn!(
                    "link {link} ({}) is down: {error}; next try at {} (in {secs} s)",
                    s.url,
                    utc_text(at)
                );
            } else {
                debug!(
                    "link {link} ({}) still down: {error}; next try in {secs} s",
                    s.url
                );
            }
            s.set_state("down", wall);
            s.error = Some(error);
            s.next_retry_ms = Some(at);
            s.next_retry = Some(utc_text(at));
        }
    }
}

/// Ask on-demand links for a session while the outbox has items waiting, at most once
/// per `CONNECT_EVERY_MS` (a dial costs air time; the link retries failed dials itself).
fn ask_for_sessions(
    shared: &Shared,
    node: &mut Node,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    on_demand: &[LinkId],
    last: &mut Option<u64>,
) -> anyhow::Result<()> {
    let now = shared.now_ms();
    if last.is_some_and(|t| now.saturating_sub(t) < CONNECT_EVERY_MS) {
        return Ok(());
    }
    let waiting = input(shared, node, |n, _| n.outbox_waiting())?;
    if waiting == 0 {
        return Ok(());
    }
    *last = Some(now);
    for id in on_demand {
        debug!(
            link = id,
            waiting, "outbox items waiting: asking for a session"
        );
        if let Some(q) = link_cmds.get(id) {
            let _ = q.push(*id, LinkCommand::Connect);
        }
    }
    Ok(())
}

/// Hand the APRS presence beacons that are due to their KISS links.
fn send_beacons(
    shared: &Shared,
    node: &mut Node,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    beacons: &mut [link::aprs::Beacon],
) -> anyhow::Result<()> {
    let now = shared.now_ms();
    // Most turns of the loop have none due: no input needed.
    if link::aprs::next_due(beacons) > now {
        return Ok(());
    }
    let due = input(shared, node, |n, _| link::aprs::due(beacons, now, n))?;
    for (id, info) in due {
        debug!(link = id, "APRS presence beacon");
        if let Some(q) = link_cmds.get(&id) {
            let _ = q.push(id, LinkCommand::Aprs { info });
        }
    }
    Ok(())
}

/// Hand everything the node has queued to the links' queues. Never waits on a link.
fn flush(
    shared: &Shared,
    node: &mut Node,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    pex_link: Option<LinkId>,
    held: &mut Vec<Transmit>,
) -> anyhow::Result<()> {
    let mut evicted: Vec<PeerId> = Vec::new();
    loop {
        flush_once(
            shared,
            node,
            link_cmds,
            peer_link,
            pex_link,
            held,
            &mut evicted,
        )?;
        if evicted.is_empty() {
            return Ok(());
        }
        // Closed for not reading: counted against the peer as the link does when its own
        // queue for the peer overflows, and what that queues (the disconnect) goes out
        // in the next round.
        input(shared, node, |n, now| {
            for peer in evicted.drain(..) {
                n.peer_garbage(
                    now,
                    peer,
                    format!("over {LINK_BACKLOG_BYTES} bytes held for it: peer does not read"),
                );
            }
        })?;
    }
}

fn flush_once(
    shared: &Shared,
    node: &mut Node,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    pex_link: Option<LinkId>,
    held: &mut Vec<Transmit>,
    evicted: &mut Vec<PeerId>,
) -> anyhow::Result<()> {
    if let Some(f) = shared.fault() {
        // A fault was recorded after the loop last looked: what the node queued may not
        // be durable.
        return Err(anyhow!("{f}"));
    }
    let (transmits, events) = input(shared, node, |node, _| {
        let mut t = std::mem::take(held);
        while let Some(x) = node.poll_transmit() {
            t.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = node.poll_event() {
            e.push(x);
        }
        (t, e)
    })?;
    let mut push = |link: Option<LinkId>, cmd: LinkCommand| {
        if let Some((l, q)) = link.and_then(|l| link_cmds.get(&l).map(|q| (l, q))) {
            match q.push(l, cmd) {
                Queued::Yes => {}
                Queued::Dropped => {
                    shared.link_drops.fetch_add(1, Ordering::Relaxed);
                }
                Queued::Evicted {
                    peer, envelopes, ..
                } => {
                    shared.link_drops.fetch_add(envelopes, Ordering::Relaxed);
                    q.push(l, LinkCommand::Disconnect { peer });
                    evicted.push(peer);
                }
            }
        }
    };
    for t in transmits {
        let (link, cmd) = match t.to {
            Dest::Peer(peer) => (
                peer_link.get(&peer).copied(),
                LinkCommand::Send {
                    peer,
                    bytes: t.bytes,
                },
            ),
            Dest::Broadcast(link) => (Some(link), LinkCommand::Broadcast { bytes: t.bytes }),
        };
        push(link, cmd);
    }
    for e in events {
        match &e {
            NodeEvent::Disconnect { peer, reason } => {
                info!(peer, "disconnecting peer: {reason}");
                push(
                    peer_link.get(peer).copied(),
                    LinkCommand::Disconnect { peer: *peer },
                );
            }
            NodeEvent::Misbehaviour { .. } => {
                shared.misbehaviours.fetch_add(1, Ordering::Relaxed);
            }
            // `skywave run` logs each tip as an `UpdateTip` line, with sync progress.
            NodeEvent::TipChanged { tip, from, .. } => match from {
                Some(p) => debug!(
                    "new tip {} at height {} from peer {p}",
                    tip.hash, tip.height
                ),
                None => debug!("new tip {} at height {} mined here", tip.hash, tip.height),
            },
            NodeEvent::TxAccepted { id, from } => match from {
                Some(p) => debug!("tx {id} accepted from peer {p}"),
                None => debug!("tx {id} accepted, submitted here"),
            },
            NodeEvent::PeerReady { .. } => {}
            NodeEvent::Dial { addr } => {
                push(pex_link, LinkCommand::Dial { addr: addr.clone() });
            }
        }
        let _ = shared.events.send(e);
    }
    Ok(())
}

/// Grind blocks on the current tip until the node stops. Runs on its own thread: hashing
/// must not stall the event loop.
fn mine_loop(shared: Arc<Shared>, to: Address, until: Option<Arc<AtomicU64>>) {
    const BATCH: u64 = 100_000;
    let Ok(pacing) = shared.call_blocking(|n, _| n.chain().params().mine_pacing_ms) else {
        return;
    };
    let mut last_found = 0u64;
    while !shared.stopping.load(Ordering::SeqCst) {
        if until
            .as_ref()
            .is_some_and(|h| shared.summary().height >= h.load(Ordering::SeqCst))
        {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        if pacing > 0 {
            let due = last_found + pacing;
            let now = shared.now_ms();
            if now < due {
                std::thread::sleep(std::time::Duration::from_millis((due - now).min(200)));
                continue;
            }
        }
        // A block's time is consensus: the wall clock, steps and all.
        let time = shared.clock.wall_ms() / 1000;
        let Ok((mut block, tip)) = shared.call_blocking(move |n, _| {
            let chain = n.chain();
            (chain.block_template(to, time), chain.tip().hash)
        }) else {
            return;
        };
        let found = loop {
            if pow::mine(&mut block.header, BATCH) {
                break true;
            }
            if shared.stopping.load(Ordering::SeqCst) || shared.summary().tip != tip {
                break false;
            }
        };
        if !found {
            continue;
        }
        let height = block.header.height;
        let Ok(res) = shared.call_blocking(move |n, now| n.submit_block(now, block)) else {
            return;
        };
        match res {
            Ok(_) => info!(height, "mined a block"),
            Err(e) => warn!(height, "mined block refused: {e}"),
        }
        last_found = shared.now_ms();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that never takes a command costs at most its channel and the byte bound
    /// (and the one command its forwarder holds); what does not fit is refused (and
    /// counted by the caller), and control commands still get through.
    #[tokio::test]
    async fn a_stuck_link_holds_a_bounded_number_of_bytes() {
        const ENVELOPE: usize = 64 * 1024;
        let (tx, _never_read) = mpsc::channel(LINK_QUEUE);
        let (q, fwd) = LinkQueue::new(1, tx);
        let mut accepted = 0usize;
        for _ in 0..1000 {
            let cmd = LinkCommand::Send {
                peer: 1,
                bytes: vec![0; ENVELOPE],
            };
            if q.push(1, cmd) == Queued::Yes {
                accepted += 1;
            }
            // Let the forwarder fill the link's channel.
            tokio::task::yield_now().await;
        }
        assert!(accepted < 1000, "a stuck link took everything");
        assert!(
            accepted * ENVELOPE <= (LINK_QUEUE + 1) * ENVELOPE + LINK_BACKLOG_BYTES,
            "{accepted} envelopes held"
        );
        assert_eq!(q.push(1, LinkCommand::Disconnect { peer: 1 }), Queued::Yes);
        fwd.abort();
    }

    /// On a link with sessions a full backlog closes the session that fills it, and
    /// nothing is dropped from the others' streams: the silent peer's envelopes go with
    /// it, and a small answer to another peer is still queued.
    #[tokio::test]
    async fn a_full_backlog_on_a_session_link_closes_the_peer_that_fills_it() {
        const ENVELOPE: usize = 64 * 1024;
        let (tx, _never_read) = mpsc::channel(1);
        let (q, fwd) = LinkQueue::new(1, tx);
        q.set_sessions(true);
        let send = |peer, n| LinkCommand::Send {
            peer,
            bytes: vec![0; n],
        };
        let mut outcome = Queued::Yes;
        for i in 0..1000 {
            if i == 10 {
                // Behind the two the forwarder holds: still in the backlog when it fills.
                assert_eq!(q.push(1, send(2, 100)), Queued::Yes);
            }
            outcome = q.push(1, send(1, ENVELOPE));
            if outcome != Queued::Yes {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            matches!(
                outcome,
                Queued::Evicted {
                    peer: 1,
                    queued: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
        {
            let b = q.inner.lock().unwrap();
            assert!(
                !b.per_peer.contains_key(&1),
                "the silent peer's envelopes stay"
            );
            assert_eq!(
                b.per_peer.get(&2),
                Some(&100),
                "another peer lost its answer"
            );
        }
        // Its session is closed by a control command, which always fits.
        assert_eq!(q.push(1, LinkCommand::Disconnect { peer: 1 }), Queued::Yes);
        assert_eq!(q.push(1, send(2, 100)), Queued::Yes);
        fwd.abort();
    }
}
