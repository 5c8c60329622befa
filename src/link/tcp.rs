//! TCP links: `tcp-listen://` accepts peers, `tcp://` dials one peer and redials with
//! backoff. Envelopes travel length-prefixed (see `wire::stream`), inside the Noise layer
//! ([`super::noise`]) unless the link is `tcp+plain://` or `tcp-listen+plain://`.

use super::backoff::Backoff;
use super::noise;
use super::{
    DialState, LinkCaps, LinkCommand, LinkContext, LinkEnv, LinkEvent, LinkId, PeerId, Scheme,
    Started, Transport,
};
use crate::wire::envelope;
use crate::wire::stream::{frame, StreamDecoder};
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

/// A frame whose block signatures were checked on a blocking thread, so the node's
/// thread finds them known good (issue 14: a sync of full blocks waited on them there).
/// Small frames go straight on.
async fn prevalidated(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() < PREVALIDATE_MIN {
        return bytes;
    }
    let back = bytes.clone();
    tokio::task::spawn_blocking(move || {
        crate::chain::sigcache::prevalidate(&bytes);
        bytes
    })
    .await
    .unwrap_or(back)
}

/// Frames below this are not worth a blocking thread: a block of a few transactions.
const PREVALIDATE_MIN: usize = 2048;

/// Envelope bytes queued for one connection before it counts as a peer that does not
/// read and is dropped. Counted in bytes, not envelopes: a 50-byte `GetHeaders` is
/// answered with about 90 KB, so a count of envelopes let one silent reader pin tens of
/// megabytes. This holds one full `GetData` answer (32 blocks of up to 256 KB).
pub const CONN_QUEUE_BYTES: usize = 8 << 20;
/// Longest wait for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redial backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted longer than this resets the redial backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Accepted connections still in their Noise handshake at once; more are closed at
/// accept. With [`noise::HANDSHAKE_TIMEOUT`] this bounds what strangers who never finish
/// the handshake hold (they are not yet peers, so the node's session limits do not
/// apply to them).
pub const MAX_HANDSHAKES: usize = 64;
/// `Message::Hello(_).kind()`: the one message the link reads, to bind its node id to the
/// Noise key.
const HELLO_KIND: u8 = 1;

/// How a TCP link protects its connections.
#[derive(Clone)]
pub struct Security {
    /// The node key, whose X25519 form is our Noise static key; `None`: plain TCP.
    noise: Option<Arc<SigningKey>>,
    /// Longest wait for the Noise handshake.
    handshake_timeout: Duration,
}

impl Security {
    /// Noise with the node key (the default of `tcp://` and `tcp-listen://`).
    pub fn noise(node_key: SigningKey) -> Security {
        Security {
            noise: Some(Arc::new(node_key)),
            handshake_timeout: noise::HANDSHAKE_TIMEOUT,
        }
    }

    /// Plain TCP (`tcp+plain://`, `tcp-listen+plain://`): for tests and old nodes.
    pub fn plain() -> Security {
        Security {
            noise: None,
            handshake_timeout: noise::HANDSHAKE_TIMEOUT,
        }
    }
}

/// Whether the peer whose Noise handshake proved `remote_static` may send `bytes`: a
/// `Hello` must claim the node id that key belongs to. Other messages, and bytes that do
/// not decode (the node refuses those itself), pass.
fn check_hello(bytes: &[u8], remote_static: &[u8; 32]) -> Result<(), String> {
    if envelope::peek_kind(bytes) != Some(HELLO_KIND) {
        return Ok(());
    }
    let Ok(env) = envelope::decode(bytes) else {
        return Ok(());
    };
    let crate::wire::message::Message::Hello(h) = env.message else {
        return Ok(());
    };
    if noise::static_public(&h.node_id) == Some(*remote_static) {
        return Ok(());
    }
    Err(format!(
        "its Hello claims node id {} but its Noise handshake proved another key",
        hex::encode(h.node_id)
    ))
}

/// The TCP transport's schemes: dial or listen, with Noise or without.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        name: "tcp",
        parse: |s| TcpLink::parse(s, false, true),
        radio: false,
    },
    Scheme {
        name: "tcp-listen",
        parse: |s| TcpLink::parse(s, true, true),
        radio: false,
    },
    Scheme {
        name: "tcp+plain",
        parse: |s| TcpLink::parse(s, false, false),
        radio: false,
    },
    Scheme {
        name: "tcp-listen+plain",
        parse: |s| TcpLink::parse(s, true, false),
        radio: false,
    },
];

/// A TCP link: `tcp://` dials one peer and redials, `tcp-listen://` accepts peers; the
/// `+plain` ones without Noise, for tests and nodes that predate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpLink {
    /// `host:port`.
    pub addr: String,
    /// Accepts rather than dials.
    pub listen: bool,
    /// Inside Noise, keyed by the node key.
    pub noise: bool,
}

impl TcpLink {
    fn parse(s: &str, listen: bool, noise: bool) -> Result<Box<dyn Transport>, String> {
        let rest = s.split_once("://").map_or(s, |(_, r)| r);
        let addr = parse_hostport(s, rest.trim_end_matches('/'), listen)?;
        Ok(Box::new(TcpLink {
            addr,
            listen,
            noise,
        }))
    }
}

impl fmt::Display for TcpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.listen { "tcp-listen" } else { "tcp" };
        let plain = if self.noise { "" } else { "+plain" };
        write!(f, "{scheme}{plain}://{}", self.addr)
    }
}

impl Transport for TcpLink {
    fn role(&self) -> String {
        let a = &self.addr;
        let what = if self.listen {
            format!("listens for TCP peers on {a}")
        } else {
            format!("dials {a} (and redials)")
        };
        let plain = if self.noise { "" } else { ", unencrypted" };
        format!("{self}: {what}{plain}")
    }

    fn start(&self, env: LinkEnv, ctx: LinkContext) -> Started {
        let security = match env.node_key {
            Some(k) if self.noise => Security::noise(k),
            _ => Security::plain(),
        };
        let addr = self.addr.clone();
        Started::task(if self.listen {
            tokio::spawn(run_listen(addr, security, ctx))
        } else {
            tokio::spawn(run_dial(addr, security, ctx))
        })
    }

    fn holds_node_key(&self) -> bool {
        self.noise
    }

    fn is_tcp(&self) -> bool {
        true
    }

    fn listens_on(&self) -> Option<&str> {
        (self.listen && self.noise).then_some(self.addr.as_str())
    }

    fn dials(&self) -> Option<&str> {
        (!self.listen && self.noise).then_some(self.addr.as_str())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Check the `host:port` part of a `tcp://` or `tcp-listen://` URL (`url` is the whole
/// URL, for the message). A malformed address (`[::1`, `::1:80`, `host:`) is refused
/// here, when the config or command line is read, rather than failing at every redial.
pub fn parse_hostport(url: &str, hp: &str, listen: bool) -> Result<String, String> {
    let bad = |why: String| format!("link '{url}': {why}");
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(|| {
            bad("an IPv6 address opened with '[' is not closed with ']' (expected tcp://[::1]:port)".into())
        })?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad(format!("'{ip}' is not an IPv6 address")))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("expected [ipv6]:port".into()))?;
        (ip, port)
    } else {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port".into()))?;
        if host.contains(':') {
            return Err(bad(format!(
                "an IPv6 address goes in brackets: [{host}]:{port}"
            )));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if let Some(c) = host.chars().find(|c| !ok(*c)) {
            return Err(bad(format!("'{host}' is not a host name ('{c}')")));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("empty host".into()));
    }
    let n: u16 = port
        .parse()
        .map_err(|_| bad(format!("bad port '{port}' (expected 1 to 65535)")))?;
    if n == 0 && !listen {
        return Err(bad("port 0 cannot be dialled".into()));
    }
    Ok(hp.to_string())
}

enum ConnCmd {
    Send(Vec<u8>),
    Close,
}

/// The link task's handle on one connection task.
struct Conn {
    tx: mpsc::UnboundedSender<ConnCmd>,
    /// Bytes handed to the connection task and not yet written to the socket.
    queued: Arc<AtomicUsize>,
    /// Ends the connection at once, even in the middle of a write that cannot finish.
    kill: Arc<Notify>,
}

/// Routes driver commands to connection tasks, and forgets each connection when its
/// task ends.
struct Conns {
    map: HashMap<PeerId, Conn>,
    done_tx: mpsc::UnboundedSender<PeerId>,
    done_rx: mpsc::UnboundedReceiver<PeerId>,
    /// Connections in `map`, for tests.
    open: Arc<AtomicUsize>,
}

impl Conns {
    fn new(open: Arc<AtomicUsize>) -> Conns {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Conns {
            map: HashMap::new(),
            done_tx,
            done_rx,
            open,
        }
    }

    fn insert(&mut self, peer: PeerId, c: Conn) {
        self.map.insert(peer, c);
        self.open.store(self.map.len(), Ordering::Relaxed);
    }

    fn remove(&mut self, peer: PeerId) -> Option<Conn> {
        let c = self.map.remove(&peer);
        self.open.store(self.map.len(), Ordering::Relaxed);
        c
    }

    /// Forget connections whose tasks ended (without waiting).
    fn reap(&mut self) {
        while let Ok(peer) = self.done_rx.try_recv() {
            self.remove(peer);
        }
    }

    fn dispatch(&mut self, cmd: LinkCommand) {
        match cmd {
            LinkCommand::Send { peer, bytes } => {
                let Some(c) = self.map.get(&peer) else {
                    return;
                };
                let n = bytes.len();
                let queued = c.queued.load(Ordering::Relaxed);
                if queued.saturating_add(n) > CONN_QUEUE_BYTES {
                    // A peer that does not read is dropped rather than buffered for; its
                    // task reports why (counted against it) and then PeerDown.
                    warn!(
                        peer,
                        queued, "send queue full; closing a peer that does not read"
                    );
                    c.kill.notify_one();
                    self.remove(peer);
                    return;
                }
                c.queued.fetch_add(n, Ordering::Relaxed);
                if c.tx.send(ConnCmd::Send(bytes)).is_err() {
                    // The connection already ended; its PeerDown is on the way.
                    self.remove(peer);
                }
            }
            // TCP has no broadcast medium; the core sends per peer on such links. Dials
            // of learned addresses go to the peer-exchange link (`run_pex`); TCP links
            // are always connected (or redialling by themselves).
            LinkCommand::Broadcast { .. }
            | LinkCommand::Dial { .. }
            | LinkCommand::Connect
            | LinkCommand::Aprs { .. } => {}
            LinkCommand::Disconnect { peer } => {
                if let Some(c) = self.remove(peer) {
                    let _ = c.tx.send(ConnCmd::Close);
                }
            }
        }
    }
}

/// Why a connection is dropped for not reading.
fn not_reading() -> String {
    format!("send queue over {CONN_QUEUE_BYTES} bytes: peer does not read")
}

/// Who a connection is with, for its events.
struct Who {
    link: LinkId,
    peer: PeerId,
    remote: String,
    /// We dialled (the Noise initiator).
    outbound: bool,
    /// The connection of a `tcp://` link: it reports `DialState::Connected` once the
    /// session is up (after the handshake, so a peer that cannot finish it never shows
    /// the link up).
    dial_link: bool,
}

/// Marks a connection as in its handshake for as long as it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Run one connection until either side closes it: the Noise handshake first (unless
/// plain), then `PeerUp`, the session, and exactly one `PeerDown` at the end. A
/// connection whose handshake fails reports neither (it never was a peer). Then its peer
/// id on `done`.
fn spawn_conn(
    stream: TcpStream,
    who: Who,
    security: Security,
    handshaking: Option<Handshaking>,
    events: mpsc::Sender<LinkEvent>,
    done: mpsc::UnboundedSender<PeerId>,
) -> (Conn, tokio::task::JoinHandle<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ConnCmd>();
    let queued = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(Notify::new());
    let conn = Conn {
        tx,
        queued: queued.clone(),
        kill: kill.clone(),
    };
    let _ = stream.set_nodelay(true);
    let handle = tokio::spawn(async move {
        let peer = who.peer;
        let reason = match secure(stream, &who, &security, handshaking).await {
            Ok((stream, session)) => {
                run_conn(stream, session, who, &events, &mut rx, &queued, &kill).await
            }
            Err(reason) => {
                debug!(peer, remote = %who.remote, %reason, "tcp connection ended before the session");
                reason
            }
        };
        let _ = done.send(peer);
        reason
    });
    (conn, handle)
}

/// The Noise handshake on a new connection, bounded in time (nothing on a plain link).
async fn secure(
    mut stream: TcpStream,
    who: &Who,
    security: &Security,
    handshaking: Option<Handshaking>,
) -> Result<(TcpStream, Option<noise::Session>), String> {
    let Some(key) = &security.noise else {
        return Ok((stream, None));
    };
    let hs = noise::handshake(&mut stream, key, who.outbound);
    let session = match tokio::time::timeout(security.handshake_timeout, hs).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            return Err(format!(
                "no Noise handshake within {} ms",
                security.handshake_timeout.as_millis()
            ))
        }
    };
    drop(handshaking);
    Ok((stream, Some(session)))
}

async fn run_conn(
    stream: TcpStream,
    session: Option<noise::Session>,
    who: Who,
    events: &mpsc::Sender<LinkEvent>,
    rx: &mut mpsc::UnboundedReceiver<ConnCmd>,
    queued: &AtomicUsize,
    kill: &Notify,
) -> String {
    let Who {
        link,
        peer,
        remote,
        outbound,
        dial_link,
    } = who;
    if dial_link {
        let state = DialState::Connected;
        if events.send(LinkEvent::Dial { link, state }).await.is_err() {
            return "driver stopped".to_string();
        }
    }
    if events
        .send(LinkEvent::PeerUp {
            link,
            peer,
            remote: remote.clone(),
            outbound,
        })
        .await
        .is_err()
    {
        return "driver stopped".to_string();
    }
    let (mut sealer, opener, remote_static) = match session {
        Some(s) => (Some(s.sealer), Some(s.opener), Some(s.remote_static)),
        None => (None, None, None),
    };
    let (mut rd, mut wr) = stream.into_split();
    let reader_events = events.clone();
    let mut reader = tokio::spawn(async move {
        let mut opener = opener;
        let mut dec = StreamDecoder::new();
        let mut buf = vec![0u8; 16 * 1024];
        // The bad input that ends the session: counted against the peer (`Garbage`).
        let garbage = |reason: String| async {
            let _ = reader_events
                .send(LinkEvent::Garbage {
                    peer,
                    reason: reason.clone(),
                })
                .await;
            reason
        };
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => return "closed by peer".to_string(),
                Ok(n) => n,
                Err(e) => return format!("read error: {e}"),
            };
            match opener.as_mut() {
                None => dec.push(&buf[..n]),
                Some(o) => {
                    o.push(&buf[..n]);
                    while let Some(piece) = o.next_piece() {
                        match piece {
                            Ok(p) => dec.push(&p),
                            Err(e) => return garbage(e.to_string()).await,
                        }
                    }
                }
            }
            while let Some(item) = dec.next_frame() {
                match item {
                    Ok(bytes) => {
                        if let Some(rs) = &remote_static {
                            if let Err(why) = check_hello(&bytes, rs) {
                                return garbage(why).await;
                            }
                        }
                        let bytes = prevalidated(bytes).await;
                        if reader_events
                            .send(LinkEvent::Frame { peer, bytes })
                            .await
                            .is_err()
                        {
                            return "driver stopped".to_string();
                        }
                    }
                    Err(e) => return garbage(format!("bad stream framing: {e}")).await,
                }
            }
        }
    });
    let mut slow = false;
    let reason = loop {
        tokio::select! {
            r = &mut reader => {
                break r.unwrap_or_else(|e| format!("reader failed: {e}"));
            }
            _ = kill.notified() => {
                slow = true;
                break not_reading();
            }
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(bytes)) => {
                    let n = bytes.len();
                    let framed = frame(&bytes);
                    drop(bytes);
                    let wire = match sealer.as_mut().map(|s| s.seal(&framed)) {
                        None => framed,
                        Some(Ok(sealed)) => sealed,
                        Some(Err(e)) => break format!("cannot seal: {e}"),
                    };
                    // A peer that does not read blocks this write for good: the link
                    // task's kill must still get through.
                    tokio::select! {
                        r = wr.write_all(&wire) => {
                            if let Err(e) = r {
                                break format!("write error: {e}");
                            }
                        }
                        _ = kill.notified() => {
                            slow = true;
                            break not_reading();
                        }
                    }
                    queued.fetch_sub(n, Ordering::Relaxed);
                }
                Some(ConnCmd::Close) | None => {
                    // Whatever was queued before the close has been written above.
                    let _ = wr.shutdown().await;
                    break "closed by us".to_string();
                }
            }
        }
    };
    reader.abort();
    debug!(peer, %remote, %reason, "tcp connection ended");
    if slow {
        let _ = events
            .send(LinkEvent::Garbage {
                peer,
                reason: reason.clone(),
            })
            .await;
    }
    let _ = events
        .send(LinkEvent::PeerDown {
            peer,
            reason: reason.clone(),
        })
        .await;
    reason
}

/// `tcp-listen://addr`: accept connections until the driver goes away.
pub async fn run_listen(addr: String, security: Security, ctx: LinkContext) {
    listen(addr, security, ctx, Arc::default()).await
}

/// [`run_listen`], keeping the number of open connections in `open`.
async fn listen(addr: String, security: Security, mut ctx: LinkContext, open: Arc<AtomicUsize>) {
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ctx
                .events
                .send(LinkEvent::Down {
                    link: ctx.id,
                    reason: format!("cannot listen on {addr}: {e}"),
                })
                .await;
            return;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(addr.clone());
    info!(link = ctx.id, %local, "listening for TCP peers");
    let _ = ctx
        .events
        .send(LinkEvent::Up {
            link: ctx.id,
            caps: LinkCaps::tcp(),
        })
        .await;
    let mut conns = Conns::new(open);
    let in_handshake = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, remote)) => {
                    let handshaking = if security.noise.is_some() {
                        if in_handshake.load(Ordering::Relaxed) >= MAX_HANDSHAKES {
                            debug!(link = ctx.id, %remote, "{MAX_HANDSHAKES} Noise handshakes under way; connection closed");
                            continue;
                        }
                        in_handshake.fetch_add(1, Ordering::Relaxed);
                        Some(Handshaking(in_handshake.clone()))
                    } else {
                        None
                    };
                    let peer = ctx.peer_ids.next();
                    let who = Who {
                        link: ctx.id,
                        peer,
                        remote: remote.to_string(),
                        outbound: false,
                        dial_link: false,
                    };
                    let (c, _) = spawn_conn(
                        stream,
                        who,
                        security.clone(),
                        handshaking,
                        ctx.events.clone(),
                        conns.done_tx.clone(),
                    );
                    conns.insert(peer, c);
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(link = ctx.id, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            cmd = ctx.commands.recv() => match cmd {
                Some(cmd) => conns.dispatch(cmd),
                None => return,
            },
            Some(peer) = conns.done_rx.recv() => {
                conns.remove(peer);
            }
        }
    }
}

/// `tcp://addr`: keep one connection to `addr` open, redialling with backoff. Each
/// attempt, connection and failure (with the wait before the next try) is reported as
/// [`LinkEvent::Dial`], so that status shows the link down while it cannot connect.
pub async fn run_dial(addr: String, security: Security, mut ctx: LinkContext) {
    // The core needs the link's caps before the first session; the link's state for
    // people follows from the Dial events.
    let _ = ctx
        .events
        .send(LinkEvent::Up {
            link: ctx.id,
            caps: LinkCaps::tcp(),
        })
        .await;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_RESET);
    let mut conns = Conns::new(Arc::default());
    loop {
        let _ = ctx
            .events
            .send(LinkEvent::Dial {
                link: ctx.id,
                state: DialState::Dialling,
            })
            .await;
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr));
        tokio::pin!(connect);
        let stream = loop {
            tokio::select! {
                r = &mut connect => break r,
                cmd = ctx.commands.recv() => match cmd {
                    Some(cmd) => conns.dispatch(cmd),
                    None => return,
                }
            }
        };
        let error = match stream {
            Ok(Ok(stream)) => {
                let started = tokio::time::Instant::now();
                let peer = ctx.peer_ids.next();
                let who = Who {
                    link: ctx.id,
                    peer,
                    remote: addr.clone(),
                    outbound: true,
                    dial_link: true,
                };
                let (c, mut handle) = spawn_conn(
                    stream,
                    who,
                    security.clone(),
                    None,
                    ctx.events.clone(),
                    conns.done_tx.clone(),
                );
                conns.insert(peer, c);
                let reason = loop {
                    tokio::select! {
                        r = &mut handle => break r.unwrap_or_else(|e| format!("connection task failed: {e}")),
                        cmd = ctx.commands.recv() => match cmd {
                            Some(cmd) => conns.dispatch(cmd),
                            None => return,
                        }
                    }
                };
                conns.reap();
                backoff.ended_after(started.elapsed());
                format!("connection to {addr} ended: {reason}")
            }
            Ok(Err(e)) => format!("cannot connect to {addr}: {e}"),
            Err(_) => format!(
                "cannot connect to {addr}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        };
        let wait = backoff.next_wait();
        let _ = ctx
            .events
            .send(LinkEvent::Dial {
                link: ctx.id,
                state: DialState::Failed {
                    error,
                    retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                },
            })
            .await;
        let wait = tokio::time::sleep(wait);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                cmd = ctx.commands.recv() => match cmd {
                    Some(cmd) => conns.dispatch(cmd),
                    None => return,
                }
            }
        }
    }
}

/// Dials made at once by the peer-exchange link.
const PEX_DIALS: usize = 8;

/// The peer-exchange link: dials the addresses the core learned from peers, once each
/// (no redial: the core decides when to try again), and carries those sessions.
pub async fn run_pex(security: Security, mut ctx: LinkContext) {
    let _ = ctx
        .events
        .send(LinkEvent::Up {
            link: ctx.id,
            caps: LinkCaps::tcp(),
        })
        .await;
    let (done_tx, mut done_rx) = mpsc::channel::<(String, Option<TcpStream>)>(PEX_DIALS);
    let mut dialling = 0usize;
    let mut conns = Conns::new(Arc::default());
    loop {
        tokio::select! {
            cmd = ctx.commands.recv() => match cmd {
                Some(LinkCommand::Dial { addr }) => {
                    if dialling >= PEX_DIALS {
                        debug!(%addr, "peer exchange: too many dials under way; skipped");
                        continue;
                    }
                    dialling += 1;
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await;
                        let stream = match r {
                            Ok(Ok(s)) => Some(s),
                            Ok(Err(e)) => {
                                debug!(%addr, "peer exchange dial failed: {e}");
                                None
                            }
                            Err(_) => None,
                        };
                        let _ = done.send((addr, stream)).await;
                    });
                }
                Some(cmd) => conns.dispatch(cmd),
                None => return,
            },
            Some((addr, stream)) = done_rx.recv() => {
                dialling = dialling.saturating_sub(1);
                if let Some(stream) = stream {
                    let peer = ctx.peer_ids.next();
                    info!(link = ctx.id, %addr, peer, "connected to an address learned from peers");
                    let who = Who {
                        link: ctx.id,
                        peer,
                        remote: addr,
                        outbound: true,
                        dial_link: false,
                    };
                    let (c, _) = spawn_conn(
                        stream,
                        who,
                        security.clone(),
                        None,
                        ctx.events.clone(),
                        conns.done_tx.clone(),
                    );
                    conns.insert(peer, c);
                }
            }
            Some(peer) = conns.done_rx.recv() => {
                conns.remove(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::PeerIds;
    use super::*;

    fn ctx(
        id: LinkId,
        ids: &PeerIds,
    ) -> (
        LinkContext,
        mpsc::Receiver<LinkEvent>,
        mpsc::Sender<LinkCommand>,
    ) {
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        (
            LinkContext {
                id,
                events: ev_tx,
                commands: cmd_rx,
                peer_ids: ids.clone(),
                callsign: String::new(),
            },
            ev_rx,
            cmd_tx,
        )
    }

    fn noise(k: u8) -> Security {
        Security::noise(SigningKey::from_bytes(&[k; 32]))
    }

    async fn next_peer_event(rx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("link event in time")
                .expect("link task alive");
            if !matches!(ev, LinkEvent::Up { .. } | LinkEvent::Dial { .. }) {
                return ev;
            }
        }
    }

    #[tokio::test]
    async fn dialler_and_listener_exchange_envelopes_and_redial_after_a_close() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let ids = PeerIds::default();
        let (lctx, mut lev, lcmd) = ctx(1, &ids);
        let (dctx, mut dev, dcmd) = ctx(2, &ids);
        tokio::spawn(run_listen(format!("127.0.0.1:{port}"), noise(1), lctx));
        tokio::spawn(run_dial(format!("127.0.0.1:{port}"), noise(2), dctx));
        let LinkEvent::PeerUp {
            peer: dpeer,
            outbound: true,
            ..
        } = next_peer_event(&mut dev).await
        else {
            panic!("dialler did not connect")
        };
        let LinkEvent::PeerUp {
            peer: lpeer,
            outbound: false,
            ..
        } = next_peer_event(&mut lev).await
        else {
            panic!("listener did not accept")
        };
        dcmd.send(LinkCommand::Send {
            peer: dpeer,
            bytes: vec![1, 2, 3],
        })
        .await
        .unwrap();
        match next_peer_event(&mut lev).await {
            LinkEvent::Frame { peer, bytes } => {
                assert_eq!(peer, lpeer);
                assert_eq!(bytes, vec![1, 2, 3]);
            }
            e => panic!("expected a frame, got {e:?}"),
        }
        // The listener closes the session: both sides see it end, the dialler redials.
        lcmd.send(LinkCommand::Disconnect { peer: lpeer })
            .await
            .unwrap();
        assert!(matches!(
            next_peer_event(&mut lev).await,
            LinkEvent::PeerDown { .. }
        ));
        assert!(matches!(
            next_peer_event(&mut dev).await,
            LinkEvent::PeerDown { .. }
        ));
        let LinkEvent::PeerUp { peer: again, .. } = next_peer_event(&mut dev).await else {
            panic!("dialler did not redial")
        };
        assert_ne!(again, dpeer, "a new session gets a new peer id");
    }

    #[test]
    fn malformed_tcp_urls_are_refused_when_parsed() {
        use super::super::LinkUrl;
        for bad in [
            "tcp://[::1",
            "tcp://[::1]",
            "tcp://[::1]80",
            "tcp://[nope]:80",
            "tcp://::1:80",
            "tcp://host:",
            "tcp://host:99999",
            "tcp://:80",
            "tcp://ho st:80",
            "tcp://host:0",
        ] {
            assert!(LinkUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let e = LinkUrl::parse("tcp://[::1").unwrap_err();
        assert!(e.contains("not closed"), "{e}");
        for good in [
            "tcp://[::1]:80",
            "tcp://127.0.0.1:9000",
            "tcp://node.example.org:9000/",
            "tcp-listen://0.0.0.0:0",
            "tcp-listen://[::]:9000",
        ] {
            assert!(LinkUrl::parse(good).is_ok(), "{good} refused");
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    /// A peer that connects and never reads: big answers pile up for it. The link drops
    /// it once its queue holds `CONN_QUEUE_BYTES`, says why (counted against the peer),
    /// and forgets the connection.
    #[tokio::test]
    async fn a_peer_that_never_reads_is_dropped_at_the_byte_bound() {
        let port = free_port();
        let ids = PeerIds::default();
        let (lctx, mut lev, lcmd) = ctx(1, &ids);
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(listen(
            format!("127.0.0.1:{port}"),
            Security::plain(),
            lctx,
            open.clone(),
        ));
        let mut silent = None;
        for _ in 0..100 {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    silent = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let _silent = silent.expect("connect to the listener");
        let LinkEvent::PeerUp { peer, .. } = next_peer_event(&mut lev).await else {
            panic!("listener did not accept")
        };
        // Answers of 90 KB each, as to a stream of GetHeaders: 30 MB in all, far more
        // than the socket buffers and the byte bound together.
        for _ in 0..330 {
            lcmd.send(LinkCommand::Send {
                peer,
                bytes: vec![7; 90 * 1024],
            })
            .await
            .unwrap();
        }
        let mut why = Vec::new();
        loop {
            match next_peer_event(&mut lev).await {
                LinkEvent::Garbage { peer: p, reason } => {
                    assert_eq!(p, peer);
                    why.push(reason);
                }
                LinkEvent::PeerDown { peer: p, reason } => {
                    assert_eq!(p, peer);
                    assert!(reason.contains("does not read"), "{reason}");
                    break;
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert!(
            why.iter().any(|r| r.contains("does not read")),
            "the drop is reported as the peer's fault: {why:?}"
        );
        assert_eq!(open.load(Ordering::Relaxed), 0, "connection forgotten");
    }

    /// Connections that end are forgotten by the listener: its map shrinks back.
    #[tokio::test]
    async fn the_listener_forgets_finished_connections() {
        let port = free_port();
        let ids = PeerIds::default();
        let (lctx, mut lev, _lcmd) = ctx(1, &ids);
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(listen(
            format!("127.0.0.1:{port}"),
            Security::plain(),
            lctx,
            open.clone(),
        ));
        let mut clients = Vec::new();
        while clients.len() < 20 {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => clients.push(s),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        for _ in 0..20 {
            assert!(matches!(
                next_peer_event(&mut lev).await,
                LinkEvent::PeerUp { .. }
            ));
        }
        assert_eq!(open.load(Ordering::Relaxed), 20);
        drop(clients);
        for _ in 0..20 {
            assert!(matches!(
                next_peer_event(&mut lev).await,
                LinkEvent::PeerDown { .. }
            ));
        }
        // The listener hears of each end after its PeerDown: wait for it to catch up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::Relaxed) != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open.load(Ordering::Relaxed), 0, "finished connections kept");
    }

    /// A stranger's Noise client: handshake with `key` on a new connection to `port`.
    async fn noise_client(
        port: u16,
        key: &SigningKey,
    ) -> (TcpStream, noise::Sealer, noise::Opener) {
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let sess = noise::handshake(&mut s, key, true)
            .await
            .expect("handshake with the listener");
        (s, sess.sealer, sess.opener)
    }

    fn hello_from(id: [u8; 32]) -> Vec<u8> {
        use crate::wire::message::{Hello, Message, PROTOCOL_VERSION};
        let m = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            network: [1, 2, 3, 4],
            height: 0,
            tip: Default::default(),
            work: 0,
            node_id: id,
            callsign: String::new(),
            features: 0,
            nonce: 1,
            user_agent: "test".into(),
        });
        assert_eq!(m.kind(), HELLO_KIND);
        envelope::encode([1, 2, 3, 4], 1, &m)
    }

    async fn noise_listener(
        ids: &PeerIds,
        sec: Security,
    ) -> (u16, mpsc::Receiver<LinkEvent>, Arc<AtomicUsize>) {
        let port = free_port();
        let (lctx, lev, lcmd) = ctx(1, ids);
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(listen(format!("127.0.0.1:{port}"), sec, lctx, open.clone()));
        // The command sender must outlive the test or the listener stops.
        std::mem::forget(lcmd);
        (port, lev, open)
    }

    /// The Noise key proves the node id: a peer that completes the handshake with key K
    /// and then claims node id V in its `Hello` is refused and counted against it, and
    /// its `Hello` never reaches the node. With its own id it passes.
    #[tokio::test]
    async fn a_hello_must_claim_the_node_id_of_the_noise_key() {
        let ids = PeerIds::default();
        let (port, mut lev, _) = noise_listener(&ids, noise(1)).await;
        let k = SigningKey::from_bytes(&[5; 32]);
        let v = SigningKey::from_bytes(&[6; 32]);

        let (mut s, mut sealer, _) = noise_client(port, &k).await;
        let LinkEvent::PeerUp { peer, .. } = next_peer_event(&mut lev).await else {
            panic!("no PeerUp after the handshake")
        };
        let lie = sealer
            .seal(&frame(&hello_from(v.verifying_key().to_bytes())))
            .unwrap();
        s.write_all(&lie).await.unwrap();
        match next_peer_event(&mut lev).await {
            LinkEvent::Garbage { peer: p, reason } => {
                assert_eq!(p, peer);
                assert!(
                    reason.contains("Noise handshake proved another key"),
                    "{reason}"
                );
            }
            e => panic!("a Hello claiming another node's id went through: {e:?}"),
        }
        assert!(matches!(
            next_peer_event(&mut lev).await,
            LinkEvent::PeerDown { .. }
        ));

        let (mut s, mut sealer, _) = noise_client(port, &k).await;
        let LinkEvent::PeerUp { peer, .. } = next_peer_event(&mut lev).await else {
            panic!("no PeerUp after the handshake")
        };
        let hello = hello_from(k.verifying_key().to_bytes());
        s.write_all(&sealer.seal(&frame(&hello)).unwrap())
            .await
            .unwrap();
        match next_peer_event(&mut lev).await {
            LinkEvent::Frame { peer: p, bytes } => {
                assert_eq!(p, peer);
                assert_eq!(bytes, hello);
            }
            e => panic!("its own id was refused: {e:?}"),
        }
    }

    /// After the handshake, a message that does not decrypt ends the session and is
    /// counted against the peer; a plain-TCP client never becomes a peer at all.
    #[tokio::test]
    async fn bad_ciphertext_is_garbage_and_plain_bytes_never_make_a_peer() {
        let ids = PeerIds::default();
        let (port, mut lev, open) = noise_listener(&ids, noise(1)).await;
        let k = SigningKey::from_bytes(&[5; 32]);
        let (mut s, mut sealer, _) = noise_client(port, &k).await;
        let LinkEvent::PeerUp { peer, .. } = next_peer_event(&mut lev).await else {
            panic!("no PeerUp after the handshake")
        };
        let mut m = sealer.seal(&frame(&[1, 2, 3])).unwrap();
        m[5] ^= 0x40;
        s.write_all(&m).await.unwrap();
        match next_peer_event(&mut lev).await {
            LinkEvent::Garbage { peer: p, reason } => {
                assert_eq!(p, peer);
                assert!(reason.contains("does not decrypt"), "{reason}");
            }
            e => panic!("tampered bytes went through: {e:?}"),
        }
        assert!(matches!(
            next_peer_event(&mut lev).await,
            LinkEvent::PeerDown { .. }
        ));

        // An old node speaking plain TCP: closed during the handshake, no event.
        let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        plain
            .write_all(&frame(&hello_from(k.verifying_key().to_bytes())))
            .await
            .unwrap();
        let mut b = [0u8; 256];
        // The listener may have sent its first handshake message before closing.
        while plain.read(&mut b).await.map(|n| n > 0).unwrap_or(false) {}
        // A Noise peer comes up next: nothing was reported for the plain one.
        let _c = noise_client(port, &k).await;
        assert!(matches!(
            next_peer_event(&mut lev).await,
            LinkEvent::PeerUp { .. }
        ));
        assert_eq!(
            open.load(Ordering::Relaxed),
            1,
            "the plain connection is forgotten"
        );
    }

    /// Strangers who open connections and never finish the handshake are closed after the
    /// handshake timeout, and at most `MAX_HANDSHAKES` are held at once: the next is
    /// closed at accept.
    #[tokio::test]
    async fn unfinished_handshakes_are_bounded_in_time_and_number() {
        let ids = PeerIds::default();
        let mut quick = noise(1);
        quick.handshake_timeout = Duration::from_millis(300);
        let (port, _lev, open) = noise_listener(&ids, quick).await;
        let mut idle = loop {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut b = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            while idle.read(&mut b).await.map(|n| n > 0).unwrap_or(false) {}
        })
        .await;
        assert!(closed.is_ok(), "an idle handshake was never dropped");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::Relaxed) != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open.load(Ordering::Relaxed), 0);

        // The cap: with a long timeout, MAX_HANDSHAKES idle connections are held and the
        // next one is closed at once.
        let mut patient = noise(1);
        patient.handshake_timeout = Duration::from_secs(3600);
        let (port, _lev, open) = noise_listener(&ids, patient).await;
        let mut held = Vec::new();
        while held.len() < MAX_HANDSHAKES {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                held.push(s);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::Relaxed) < MAX_HANDSHAKES
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open.load(Ordering::Relaxed), MAX_HANDSHAKES);
        let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            while extra.read(&mut b).await.map(|n| n > 0).unwrap_or(false) {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "a connection over the handshake cap was kept"
        );
        assert_eq!(open.load(Ordering::Relaxed), MAX_HANDSHAKES);
    }

    /// A `tcp://` link that reaches a node without Noise (it speaks first, in plain
    /// framing) never shows connected: the dial fails with the handshake's reason.
    #[tokio::test]
    async fn a_dial_to_a_plain_node_fails_with_the_handshake_reason_and_never_shows_up() {
        let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = old.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = old.accept().await {
                let _ = s.write_all(&frame(&hello_from([9; 32]))).await;
                let mut b = [0u8; 256];
                while s.read(&mut b).await.map(|n| n > 0).unwrap_or(false) {}
            }
        });
        let ids = PeerIds::default();
        let (dctx, mut dev, _dcmd) = ctx(2, &ids);
        tokio::spawn(run_dial(format!("127.0.0.1:{port}"), noise(2), dctx));
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), dev.recv())
                .await
                .expect("link event in time")
                .expect("link task alive");
            match ev {
                LinkEvent::Dial {
                    state: DialState::Failed { error, .. },
                    ..
                } => {
                    assert!(error.contains("Noise handshake"), "{error}");
                    break;
                }
                LinkEvent::Dial {
                    state: DialState::Connected,
                    ..
                } => panic!("shown connected before the handshake"),
                LinkEvent::PeerUp { .. } => panic!("a session without the handshake"),
                _ => {}
            }
        }
    }
}
