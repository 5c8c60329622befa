//! The tokio driver: the only place with time and I/O. It owns the node (behind a mutex
//! that the API and the miner also take briefly), runs the link tasks, feeds the node
//! what they report with the current time, and carries out what the node asks.
//!
//! Each input to the node runs in one store transaction (see [`NodeGuard`]), committed
//! before anything the input queued is handed to a link: nothing is sent that is not
//! durable. Link events that queued up while the node was busy are fed as one input,
//! sharing one commit (`INPUT_BATCH`).
//!
//! It fails loudly: a link task that panics or ends, a miner thread that panics, a
//! poisoned node mutex or a store write that fails ends [`start`]'s future with an
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
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{broadcast, mpsc, Notify};
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

/// State shared by the driver, the API and the miner.
pub struct Shared {
    node: Mutex<Node>,
    /// Wakes the driver after someone else changed the node (API submit, mined block).
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
    /// Lock the node for one input.
    ///
    /// # Panics
    ///
    /// If a thread panicked while holding the lock. The node's memory may then disagree
    /// with its store (a handler stopped half way), so nothing may go on with it: the
    /// fault is recorded, the driver stops with an error, and this caller panics too.
    pub fn node(&self) -> NodeGuard<'_> {
        match self.try_node() {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        }
    }

    /// Lock the node for one input, or the fault that made it unusable.
    pub fn try_node(&self) -> anyhow::Result<NodeGuard<'_>> {
        match self.node.lock() {
            Ok(node) => {
                node.chain().store().begin_input();
                Ok(NodeGuard { shared: self, node })
            }
            Err(_) => {
                let why = "node state poisoned: a thread panicked while changing it";
                self.fail(why.to_string());
                Err(anyhow!("{why}"))
            }
        }
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

    /// Lock the node with its wall clock brought up to date, and the core's time.
    fn node_now(&self) -> anyhow::Result<(NodeGuard<'_>, u64)> {
        let mut n = self.try_node()?;
        let now = self.clock.now_ms();
        n.set_wall_clock(now, self.clock.wall_ms());
        n.set_air_clock(now, self.clock.wall_ms().saturating_mul(self.clock.scale()));
        Ok((n, now))
    }
}

/// The node, locked for one input (link events, a timeout, an API call, a mined block).
/// The store writes made through it commit in one transaction when it is dropped, before
/// the driver hands what the input queued to the links. If a write failed (whatever the
/// code that made it did with the error) or the commit fails, the input is rolled back
/// and the driver stops (see [`Shared::fail`]): the node's memory may be ahead of its
/// store, so nothing may go on with it.
pub struct NodeGuard<'a> {
    shared: &'a Shared,
    node: MutexGuard<'a, Node>,
}

impl Deref for NodeGuard<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for NodeGuard<'_> {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        let store = self.node.chain().store();
        if std::thread::panicking() {
            // Half an input: the mutex is poisoned as this guard goes, and that stops
            // the driver; none of it may become durable.
            store.abandon_input();
            return;
        }
        if let Err(e) = store.end_input() {
            self.shared.fail(format!(
                "store failure, stopping so that the node's memory and its store cannot \
                 disagree: {e}"
            ));
        }
    }
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
/// miner panicked, the node's mutex was poisoned (then `Err`, already logged).
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
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
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
    let fut = drive(shared.clone(), opts);
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

async fn drive(shared: Arc<Shared>, opts: DriverOptions) -> anyhow::Result<()> {
    let r = drive_inner(&shared, opts).await;
    // Whatever ended the loop, the miner must see it.
    shared.stopping.store(true, Ordering::SeqCst);
    if let Err(e) = &r {
        // Already logged by the loop; recorded for whoever asks (`Shared::fault`).
        let _ = shared.fault.set(format!("{e:#}"));
    }
    r
}

async fn drive_inner(shared: &Arc<Shared>, opts: DriverOptions) -> anyhow::Result<()> {
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
    let pex = tcp && shared.try_node()?.config().peers.peer_exchange;
    let named: Vec<(String, Option<LinkUrl>)> = if pex {
        named
            .into_iter()
            .chain(std::iter::once((PEX_LINK_NAME.to_string(), None)))
            .collect()
    } else {
        named
    };
    let mut pex_link = None;
    let network = shared.try_node()?.chain().params().name.to_string();
    // TCP links (only those) hold the node key: it is their Noise static key.
    let node_key = || -> anyhow::Result<_> { Ok(shared.try_node()?.config().node_key.clone()) };
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
        if let Err(e) = flush(shared, &link_cmds, &mut peer_link, pex_link, &mut held) {
            break Err(e);
        }
        if !on_demand.is_empty() {
            if let Err(e) = ask_for_sessions(shared, &link_cmds, &on_demand, &mut last_connect) {
                break Err(e);
            }
        }
        if let Err(e) = send_beacons(shared, &link_cmds, &mut beacons) {
            break Err(e);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break Ok(());
        }
        let deadline = match shared.try_node() {
            Ok(n) => n.poll_timeout().min(link::aprs::next_due(&beacons)),
            Err(e) => break Err(e),
        };
        let wait = shared
            .clock
            .real(deadline.saturating_sub(shared.now_ms()).min(60_000));
        let sleep = tokio::time::sleep(wait);
        let r = tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(ev) => on_link_events(shared, &link_cmds, ev, &mut ev_rx, &mut peer_link, &mut held),
                None => {
                    // No links at all: run on timers alone.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shared.wake.notified() => {}
                    }
                    timeout(shared)
                }
            },
            _ = sleep => timeout(shared),
            _ = shared.wake.notified() => Ok(()),
            Some((dead_link, why)) = dead_rx.recv() => {
                if shared.stopping.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    // What the link said before it ended (its Down reason) goes to the
                    // log first.
                    while let Ok(ev) = ev_rx.try_recv() {
                        let _ = on_link_events(shared, &link_cmds, ev, &mut ev_rx, &mut peer_link, &mut held);
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
    if let Some(m) = miner {
        let _ = tokio::task::spawn_blocking(move || m.join()).await;
    }
    outcome
}

fn timeout(shared: &Shared) -> anyhow::Result<()> {
    let (mut n, now) = shared.node_now()?;
    n.handle_timeout(now);
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
    link_cmds: &HashMap<LinkId, LinkQueue>,
    first: LinkEvent,
    more: &mut mpsc::Receiver<LinkEvent>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    held: &mut Vec<Transmit>,
) -> anyhow::Result<()> {
    let (mut n, _) = shared.node_now()?;
    let (mut events, mut bytes) = (0, 0);
    let mut next = Some(first);
    while let Some(ev) = next.take() {
        if let LinkEvent::Up { link, caps } | LinkEvent::Caps { link, caps } = &ev {
            if let Some(q) = link_cmds.get(link) {
                q.set_sessions(caps.connection_oriented);
            }
        }
        on_link_event(shared, &mut n, ev, peer_link);
        events += 1;
        while let Some(t) = n.poll_transmit() {
            bytes += t.bytes.len();
            held.push(t);
        }
        if events < INPUT_BATCH && bytes < INPUT_BATCH_BYTES {
            next = more.try_recv().ok();
        }
    }
    Ok(())
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
    link_cmds: &HashMap<LinkId, LinkQueue>,
    on_demand: &[LinkId],
    last: &mut Option<u64>,
) -> anyhow::Result<()> {
    let now = shared.now_ms();
    if last.is_some_and(|t| now.saturating_sub(t) < CONNECT_EVERY_MS) {
        return Ok(());
    }
    let waiting = shared.try_node()?.outbox_waiting();
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
    link_cmds: &HashMap<LinkId, LinkQueue>,
    beacons: &mut [link::aprs::Beacon],
) -> anyhow::Result<()> {
    let now = shared.now_ms();
    // Most turns of the loop have none due: no need to take the node's lock.
    if link::aprs::next_due(beacons) > now {
        return Ok(());
    }
    let due = link::aprs::due(beacons, now, &mut *shared.try_node()?);
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
    link_cmds: &HashMap<LinkId, LinkQueue>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    pex_link: Option<LinkId>,
    held: &mut Vec<Transmit>,
) -> anyhow::Result<()> {
    let mut evicted: Vec<PeerId> = Vec::new();
    loop {
        flush_once(shared, link_cmds, peer_link, pex_link, held, &mut evicted)?;
        if evicted.is_empty() {
            return Ok(());
        }
        // Closed for not reading: counted against the peer as the link does when its own
        // queue for the peer overflows, and what that queues (the disconnect) goes out
        // in the next round.
        let (mut n, now) = shared.node_now()?;
        for peer in evicted.drain(..) {
            n.peer_garbage(
                now,
                peer,
                format!("over {LINK_BACKLOG_BYTES} bytes held for it: peer does not read"),
            );
        }
    }
}

fn flush_once(
    shared: &Shared,
    link_cmds: &HashMap<LinkId, LinkQueue>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    pex_link: Option<LinkId>,
    held: &mut Vec<Transmit>,
    evicted: &mut Vec<PeerId>,
) -> anyhow::Result<()> {
    let (transmits, events) = {
        let mut node = shared.try_node()?;
        if let Some(f) = shared.fault() {
            // An input failed after the loop last looked (an API call, the miner): what
            // the node queued may not be durable.
            return Err(anyhow!("{f}"));
        }
        let mut t = std::mem::take(held);
        while let Some(x) = node.poll_transmit() {
            t.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = node.poll_event() {
            e.push(x);
        }
        (t, e)
    };
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
    let pacing = shared.node().chain().params().mine_pacing_ms;
    let mut last_found = 0u64;
    while !shared.stopping.load(Ordering::SeqCst) {
        if until
            .as_ref()
            .is_some_and(|h| shared.node().chain().tip().height >= h.load(Ordering::SeqCst))
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
        let (mut block, tip) = {
            let node = shared.node();
            let chain = node.chain();
            // A block's time is consensus: the wall clock, steps and all.
            (
                chain.block_template(to, shared.clock.wall_ms() / 1000),
                chain.tip().hash,
            )
        };
        let found = loop {
            if pow::mine(&mut block.header, BATCH) {
                break true;
            }
            if shared.stopping.load(Ordering::SeqCst) || shared.node().chain().tip().hash != tip {
                break false;
            }
        };
        if !found {
            continue;
        }
        let height = block.header.height;
        let res = match shared.node_now() {
            Ok((mut n, now)) => n.submit_block(now, block),
            Err(_) => return,
        };
        match res {
            Ok(_) => info!(height, "mined a block"),
            Err(e) => warn!(height, "mined block refused: {e}"),
        }
        last_found = shared.now_ms();
        shared.wake.notify_one();
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
