//! The tokio driver: the only place with time and I/O. It owns the node (behind a mutex
//! that the API and the miner also take briefly), runs the link tasks, feeds the node
//! what they report with the current time, and carries out what the node asks.

use crate::chain::{pow, Address};
use crate::link::{
    self, LinkCaps, LinkCommand, LinkContext, LinkEvent, LinkId, LinkUrl, PeerId, PeerIds,
};
use crate::node::{Dest, Node, NodeEvent};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc, Notify};
use tracing::{debug, info, warn};

/// Commands queued per link task.
const LINK_QUEUE: usize = 4096;
/// Events queued from all links.
const EVENT_QUEUE: usize = 4096;
/// Shortest interval between session requests to on-demand links.
const CONNECT_EVERY_MS: u64 = 60_000;
/// Name of the link that carries sessions to addresses learned by peer exchange.
pub const PEX_LINK_NAME: &str = "peer-exchange";

/// Milliseconds since the Unix epoch: the node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A link as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    /// Link id.
    pub id: LinkId,
    /// Its URL.
    pub url: String,
    /// Up (listening, dialling, open) or not.
    pub up: bool,
    /// Capabilities once up.
    pub caps: Option<LinkCaps>,
    /// Last error, if it went down.
    pub error: Option<String>,
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
}

impl Shared {
    /// Lock the node. A panic while holding the lock does not make the node unusable:
    /// the chain's own invariants are kept by the store transactions, not by the mutex.
    pub fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Options for [`run`].
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

/// Start the driver. Returns the shared state and a future that runs until `shutdown`
/// resolves.
pub fn start(
    node: Node,
    opts: DriverOptions,
) -> (Arc<Shared>, impl std::future::Future<Output = ()>) {
    let (events_tx, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        wake: Notify::new(),
        links: Mutex::new(Vec::new()),
        events: events_tx,
        stopping: AtomicBool::new(false),
        misbehaviours: AtomicU64::new(0),
        links_started: AtomicBool::new(false),
    });
    let fut = drive(shared.clone(), opts);
    (shared, fut)
}

/// Ask a running driver to stop (it then aborts its links and returns).
pub fn stop(shared: &Shared) {
    shared.stopping.store(true, Ordering::SeqCst);
    shared.wake.notify_one();
}

async fn drive(shared: Arc<Shared>, opts: DriverOptions) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<LinkEvent>(EVENT_QUEUE);
    let peer_ids = PeerIds::default();
    let mut link_cmds: HashMap<LinkId, mpsc::Sender<LinkCommand>> = HashMap::new();
    let mut tasks = Vec::new();
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
    let tcp = opts
        .links
        .iter()
        .any(|u| matches!(u, LinkUrl::TcpDial(_) | LinkUrl::TcpListen(_)));
    let pex = tcp && shared.node().config().peers.peer_exchange;
    let named: Vec<(String, Option<LinkUrl>)> = if pex {
        named
            .into_iter()
            .chain(std::iter::once((PEX_LINK_NAME.to_string(), None)))
            .collect()
    } else {
        named
    };
    let mut pex_link = None;
    for (i, (name, url)) in named.into_iter().enumerate() {
        let id = i as LinkId + 1;
        let is_pex = pex && url.is_none() && name == PEX_LINK_NAME;
        let (cmd_tx, cmd_rx) = mpsc::channel(LINK_QUEUE);
        link_cmds.insert(id, cmd_tx);
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
                url: name,
                up: false,
                caps: None,
                error: None,
            });
        }
        tasks.push(match url {
            Some(LinkUrl::TcpDial(a)) => tokio::spawn(link::tcp::run_dial(a, ctx)),
            Some(LinkUrl::TcpListen(a)) => tokio::spawn(link::tcp::run_listen(a, ctx)),
            Some(LinkUrl::Kiss(k)) => tokio::spawn(link::kiss::run_kiss(k, ctx)),
            Some(LinkUrl::Vara(v)) => {
                if v.peer.is_some() {
                    on_demand.push(id);
                }
                tokio::spawn(link::vara::run_vara(v, ctx))
            }
            Some(LinkUrl::Js8(j)) => tokio::spawn(link::js8call::run_js8(j, ctx)),
            None if is_pex => {
                pex_link = Some(id);
                tokio::spawn(link::tcp::run_pex(ctx))
            }
            None => match custom_iter.next() {
                Some((_, spawn)) => spawn(ctx),
                None => continue,
            },
        });
    }
    drop(ev_tx);
    shared.links_started.store(true, Ordering::SeqCst);

    let until = opts.mine_until_height;
    let miner = opts.mine_to.map(|addr| {
        let s = shared.clone();
        std::thread::spawn(move || mine_loop(s, addr, until))
    });

    let mut peer_link: HashMap<PeerId, LinkId> = HashMap::new();
    let mut last_connect: Option<u64> = None;
    loop {
        flush(&shared, &link_cmds, &mut peer_link, pex_link).await;
        if !on_demand.is_empty() {
            ask_for_sessions(&shared, &link_cmds, &on_demand, &mut last_connect);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let deadline = shared.node().poll_timeout();
        let wait = deadline.saturating_sub(now_ms()).min(60_000);
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(ev) => on_link_event(&shared, ev, &mut peer_link),
                None => {
                    // Every link task ended (none configured): run on timers alone.
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                        _ = shared.wake.notified() => {}
                    }
                    shared.node().handle_timeout(now_ms());
                }
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {
                shared.node().handle_timeout(now_ms());
            }
            _ = shared.wake.notified() => {}
        }
    }
    info!("shutting down");
    for t in &tasks {
        t.abort();
    }
    if let Some(m) = miner {
        let _ = tokio::task::spawn_blocking(move || m.join()).await;
    }
}

fn on_link_event(shared: &Shared, ev: LinkEvent, peer_link: &mut HashMap<PeerId, LinkId>) {
    let now = now_ms();
    match ev {
        LinkEvent::Up { link, caps } => {
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    s.up = true;
                    s.caps = Some(caps.clone());
                    s.error = None;
                }
            }
            shared.node().link_up(now, link, caps);
        }
        LinkEvent::Caps { link, caps } => {
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    s.caps = Some(caps.clone());
                }
            }
            shared.node().link_caps(now, link, caps);
        }
        LinkEvent::Down { link, reason } => {
            warn!(link, "link down: {reason}");
            if let Ok(mut l) = shared.links.lock() {
                if let Some(s) = l.iter_mut().find(|s| s.id == link) {
                    s.up = false;
                    s.error = Some(reason);
                }
            }
            shared.node().link_down(link);
        }
        LinkEvent::PeerUp {
            link,
            peer,
            remote,
            outbound,
        } => {
            debug!(link, peer, %remote, outbound, "peer session open");
            peer_link.insert(peer, link);
            shared
                .node()
                .peer_connected(now, peer, link, remote, outbound);
        }
        LinkEvent::Frame { peer, bytes } => shared.node().handle_frame(now, peer, &bytes),
        LinkEvent::Garbage { peer, reason } => shared.node().peer_garbage(now, peer, reason),
        LinkEvent::PeerDown { peer, reason } => {
            debug!(peer, %reason, "peer session closed");
            peer_link.remove(&peer);
            shared.node().peer_disconnected(now, peer);
        }
    }
}

/// Ask on-demand links for a session while the outbox has items waiting, at most once
/// per `CONNECT_EVERY_MS` (a dial costs air time; the link retries failed dials itself).
fn ask_for_sessions(
    shared: &Shared,
    link_cmds: &HashMap<LinkId, mpsc::Sender<LinkCommand>>,
    on_demand: &[LinkId],
    last: &mut Option<u64>,
) {
    let now = now_ms();
    if last.is_some_and(|t| now.saturating_sub(t) < CONNECT_EVERY_MS) {
        return;
    }
    let waiting = shared.node().outbox_waiting();
    if waiting == 0 {
        return;
    }
    *last = Some(now);
    for id in on_demand {
        debug!(
            link = id,
            waiting, "outbox items waiting: asking for a session"
        );
        if let Some(tx) = link_cmds.get(id) {
            // A full queue means the link is busy anyway; the next minute asks again.
            let _ = tx.try_send(LinkCommand::Connect);
        }
    }
}

/// Carry out everything the node has queued.
async fn flush(
    shared: &Shared,
    link_cmds: &HashMap<LinkId, mpsc::Sender<LinkCommand>>,
    peer_link: &mut HashMap<PeerId, LinkId>,
    pex_link: Option<LinkId>,
) {
    let (transmits, events) = {
        let mut node = shared.node();
        let mut t = Vec::new();
        while let Some(x) = node.poll_transmit() {
            t.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = node.poll_event() {
            e.push(x);
        }
        (t, e)
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
        if let Some(tx) = link.and_then(|l| link_cmds.get(&l)) {
            let _ = tx.send(cmd).await;
        }
    }
    for e in events {
        match &e {
            NodeEvent::Disconnect { peer, reason } => {
                info!(peer, "disconnecting peer: {reason}");
                if let Some(cmd) = peer_link.get(peer).and_then(|l| link_cmds.get(l)) {
                    let _ = cmd.send(LinkCommand::Disconnect { peer: *peer }).await;
                }
            }
            NodeEvent::Misbehaviour { .. } => {
                shared.misbehaviours.fetch_add(1, Ordering::Relaxed);
            }
            NodeEvent::TipChanged { tip, from, .. } => {
                info!(height = tip.height, tip = %tip.hash, from = ?from, "new tip");
            }
            NodeEvent::TxAccepted { id, from } => debug!(%id, from = ?from, "tx accepted"),
            NodeEvent::PeerReady { .. } => {}
            NodeEvent::Dial { addr } => {
                if let Some(tx) = pex_link.and_then(|l| link_cmds.get(&l)) {
                    let _ = tx.send(LinkCommand::Dial { addr: addr.clone() }).await;
                }
            }
        }
        let _ = shared.events.send(e);
    }
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
            let now = now_ms();
            if now < due {
                std::thread::sleep(std::time::Duration::from_millis((due - now).min(200)));
                continue;
            }
        }
        let (mut block, tip) = {
            let node = shared.node();
            let chain = node.chain();
            (chain.block_template(to, now_ms() / 1000), chain.tip().hash)
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
        let res = shared.node().submit_block(now_ms(), block);
        match res {
            Ok(_) => info!(height, "mined a block"),
            Err(e) => warn!(height, "mined block refused: {e}"),
        }
        last_found = now_ms();
        shared.wake.notify_one();
    }
}
