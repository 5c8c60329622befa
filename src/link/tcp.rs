//! TCP links: `tcp-listen://` accepts peers, `tcp://` dials one peer and redials with
//! backoff. Envelopes travel length-prefixed (see `wire::stream`).

use super::{LinkCaps, LinkCommand, LinkContext, LinkEvent, LinkId, PeerId};
use crate::wire::stream::{frame, StreamDecoder};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Envelopes queued for one connection before it counts as too slow and is dropped.
const CONN_QUEUE: usize = 1024;
/// Longest wait for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redial backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

enum ConnCmd {
    Send(Vec<u8>),
    Close,
}

/// Routes driver commands to connection tasks.
#[derive(Default)]
struct Conns(HashMap<PeerId, mpsc::Sender<ConnCmd>>);

impl Conns {
    fn dispatch(&mut self, cmd: LinkCommand) {
        match cmd {
            LinkCommand::Send { peer, bytes } => {
                if let Some(tx) = self.0.get(&peer) {
                    match tx.try_send(ConnCmd::Send(bytes)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // A peer that cannot keep up is dropped rather than buffered
                            // without bound; dropping the sender closes the connection.
                            warn!(peer, "send queue full; closing slow connection");
                            self.0.remove(&peer);
                        }
                        // The connection already ended; its PeerDown is on the way.
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.0.remove(&peer);
                        }
                    }
                }
            }
            // TCP has no broadcast medium; the core sends per peer on such links. Dials
            // of learned addresses go to the peer-exchange link (`run_pex`); TCP links
            // are always connected (or redialling by themselves).
            LinkCommand::Broadcast { .. } | LinkCommand::Dial { .. } | LinkCommand::Connect => {}
            LinkCommand::Disconnect { peer } => {
                if let Some(tx) = self.0.remove(&peer) {
                    let _ = tx.try_send(ConnCmd::Close);
                }
            }
        }
    }
}

/// Run one connection until either side closes it. Reports `PeerUp` first and exactly one
/// `PeerDown` at the end.
fn spawn_conn(
    stream: TcpStream,
    link: LinkId,
    peer: PeerId,
    remote: String,
    outbound: bool,
    events: mpsc::Sender<LinkEvent>,
) -> (mpsc::Sender<ConnCmd>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ConnCmd>(CONN_QUEUE);
    let _ = stream.set_nodelay(true);
    let handle = tokio::spawn(async move {
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
            return;
        }
        let (mut rd, mut wr) = stream.into_split();
        let reader_events = events.clone();
        let mut reader = tokio::spawn(async move {
            let mut dec = StreamDecoder::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => return "closed by peer".to_string(),
                    Ok(n) => n,
                    Err(e) => return format!("read error: {e}"),
                };
                dec.push(&buf[..n]);
                while let Some(item) = dec.next_frame() {
                    match item {
                        Ok(bytes) => {
                            if reader_events
                                .send(LinkEvent::Frame { peer, bytes })
                                .await
                                .is_err()
                            {
                                return "driver stopped".to_string();
                            }
                        }
                        Err(e) => {
                            let reason = format!("bad stream framing: {e}");
                            let _ = reader_events
                                .send(LinkEvent::Garbage {
                                    peer,
                                    reason: reason.clone(),
                                })
                                .await;
                            return reason;
                        }
                    }
                }
            }
        });
        let reason = loop {
            tokio::select! {
                r = &mut reader => {
                    break r.unwrap_or_else(|e| format!("reader failed: {e}"));
                }
                cmd = rx.recv() => match cmd {
                    Some(ConnCmd::Send(bytes)) => {
                        if let Err(e) = wr.write_all(&frame(&bytes)).await {
                            break format!("write error: {e}");
                        }
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
        let _ = events.send(LinkEvent::PeerDown { peer, reason }).await;
    });
    (tx, handle)
}

/// `tcp-listen://addr`: accept connections until the driver goes away.
pub async fn run_listen(addr: String, mut ctx: LinkContext) {
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
    let mut conns = Conns::default();
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, remote)) => {
                    let peer = ctx.peer_ids.next();
                    let (tx, _) = spawn_conn(stream, ctx.id, peer, remote.to_string(), false, ctx.events.clone());
                    conns.0.insert(peer, tx);
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
            }
        }
    }
}

/// `tcp://addr`: keep one connection to `addr` open, redialling with backoff.
pub async fn run_dial(addr: String, mut ctx: LinkContext) {
    let _ = ctx
        .events
        .send(LinkEvent::Up {
            link: ctx.id,
            caps: LinkCaps::tcp(),
        })
        .await;
    let mut backoff = BACKOFF_MIN;
    let mut conns = Conns::default();
    loop {
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
        match stream {
            Ok(Ok(stream)) => {
                let started = tokio::time::Instant::now();
                let peer = ctx.peer_ids.next();
                info!(link = ctx.id, %addr, peer, "connected");
                let (tx, mut handle) =
                    spawn_conn(stream, ctx.id, peer, addr.clone(), true, ctx.events.clone());
                conns.0.insert(peer, tx);
                loop {
                    tokio::select! {
                        _ = &mut handle => break,
                        cmd = ctx.commands.recv() => match cmd {
                            Some(cmd) => conns.dispatch(cmd),
                            None => return,
                        }
                    }
                }
                conns.0.remove(&peer);
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = BACKOFF_MIN;
                }
            }
            Ok(Err(e)) => debug!(link = ctx.id, %addr, "dial failed: {e}"),
            Err(_) => debug!(link = ctx.id, %addr, "dial timed out"),
        }
        let wait = tokio::time::sleep(backoff);
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
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Dials made at once by the peer-exchange link.
const PEX_DIALS: usize = 8;

/// The peer-exchange link: dials the addresses the core learned from peers, once each
/// (no redial: the core decides when to try again), and carries those sessions.
pub async fn run_pex(mut ctx: LinkContext) {
    let _ = ctx
        .events
        .send(LinkEvent::Up {
            link: ctx.id,
            caps: LinkCaps::tcp(),
        })
        .await;
    let (done_tx, mut done_rx) = mpsc::channel::<(String, Option<TcpStream>)>(PEX_DIALS);
    let mut dialling = 0usize;
    let mut conns = Conns::default();
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
                    let (tx, _handle) =
                        spawn_conn(stream, ctx.id, peer, addr, true, ctx.events.clone());
                    conns.0.insert(peer, tx);
                }
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

    async fn next_peer_event(rx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("link event in time")
                .expect("link task alive");
            if !matches!(ev, LinkEvent::Up { .. }) {
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
        tokio::spawn(run_listen(format!("127.0.0.1:{port}"), lctx));
        tokio::spawn(run_dial(format!("127.0.0.1:{port}"), dctx));
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
}
