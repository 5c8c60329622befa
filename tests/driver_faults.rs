//! The driver under faults, in process: a link task that dies, a poisoned node, a link
//! that stops taking commands, and steps of the wall clock (in virtual time).

use skywave::chain::{params, Chain};
use skywave::driver::{self, Clock, DriverOptions, LinkSpawner, Shared};
use skywave::link::{LinkCaps, LinkCommand, LinkContext, LinkEvent, PeerId};
use skywave::node::{Node, NodeConfig};
use skywave::store::Store;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

fn node(id: u8) -> Node {
    let chain =
        Chain::open(params::regtest(), Store::open_in_memory().expect("store")).expect("chain");
    Node::new(
        chain,
        NodeConfig {
            node_key: ed25519_dalek::SigningKey::from_bytes(&[id; 32]),
            callsign: format!("N0CALL-{id}"),
            seed: u64::from(id),
            user_agent: "driver-test".into(),
            peers: Default::default(),
        },
    )
}

fn opts(custom_links: Vec<(String, LinkSpawner)>) -> DriverOptions {
    DriverOptions {
        links: Vec::new(),
        mine_to: None,
        callsign: "N0CALL-1".into(),
        custom_links,
        mine_until_height: None,
    }
}

/// Run a driver to its end, or fail the test if it does not end.
async fn ends(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("the driver kept running")
}

#[tokio::test]
async fn a_panicking_link_task_stops_the_driver_with_an_error() {
    let spawn: LinkSpawner = Box::new(|ctx: LinkContext| {
        tokio::spawn(async move {
            let _ = ctx
                .events
                .send(LinkEvent::Up {
                    link: ctx.id,
                    caps: LinkCaps::tcp(),
                })
                .await;
            panic!("modem driver bug");
        })
    });
    let (shared, fut) = driver::start(node(1), opts(vec![("flaky".into(), spawn)]));
    let err = ends(fut).await.expect_err("a dead link is an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("flaky") && msg.contains("panicked") && msg.contains("modem driver bug"),
        "{msg}"
    );
    assert!(
        shared.stopping.load(Ordering::SeqCst),
        "/api/ready must go 503"
    );
}

#[tokio::test]
async fn a_link_task_that_ends_stops_the_driver_with_an_error() {
    let spawn: LinkSpawner = Box::new(|_ctx: LinkContext| tokio::spawn(async {}));
    let (_shared, fut) = driver::start(node(1), opts(vec![("quitter".into(), spawn)]));
    let err = ends(fut).await.expect_err("a link that ends is an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("quitter") && msg.contains("ended unexpectedly"),
        "{msg}"
    );
}

/// A link that never ends and never reads its commands.
fn idle_link() -> LinkSpawner {
    Box::new(|ctx: LinkContext| {
        tokio::spawn(async move {
            let _keep = ctx;
            std::future::pending::<()>().await
        })
    })
}

#[tokio::test]
async fn a_poisoned_node_stops_the_driver_instead_of_limping_on() {
    let (shared, fut) = driver::start(node(1), opts(vec![("idle".into(), idle_link())]));
    let driver = tokio::spawn(fut);
    // A request panics half way through changing the node.
    let asked = shared
        .call(|_: &mut Node, _| -> () { panic!("handler bug while changing the node") })
        .await;
    assert_eq!(
        asked,
        Err(driver::Unanswered::Stopped),
        "no answer from half an input"
    );
    let r = tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the driver kept running on a poisoned node")
        .expect("the driver itself does not panic");
    let msg = format!("{:#}", r.expect_err("a poisoned node is an error"));
    assert!(msg.contains("poisoned"), "{msg}");
    assert!(shared.stopping.load(Ordering::SeqCst));
    assert!(shared.fault().is_some_and(|f| f.contains("poisoned")));
}

/// One link reports thousands of sessions and never reads a command (a stuck modem);
/// a second link must still get its greeting.
#[tokio::test]
async fn a_link_that_takes_no_commands_does_not_stall_the_others() {
    const SESSIONS: u64 = 6000;
    let stuck_done = Arc::new(tokio::sync::Notify::new());
    let done = stuck_done.clone();
    let stuck: LinkSpawner = Box::new(move |ctx: LinkContext| {
        tokio::spawn(async move {
            let _ = ctx
                .events
                .send(LinkEvent::Up {
                    link: ctx.id,
                    caps: LinkCaps::tcp(),
                })
                .await;
            for i in 0..SESSIONS {
                let _ = ctx
                    .events
                    .send(LinkEvent::PeerUp {
                        link: ctx.id,
                        peer: ctx.peer_ids.next(),
                        remote: format!("10.{}.{}.{}:7300", i >> 16, (i >> 8) & 255, i & 255),
                        outbound: true,
                    })
                    .await;
            }
            done.notify_one();
            // Holds its command queue and never reads it.
            let _keep = ctx;
            std::future::pending::<()>().await
        })
    });
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<(PeerId, LinkCommand)>();
    let healthy: LinkSpawner = Box::new(move |mut ctx: LinkContext| {
        tokio::spawn(async move {
            stuck_done.notified().await;
            let peer = ctx.peer_ids.next();
            let _ = ctx
                .events
                .send(LinkEvent::Up {
                    link: ctx.id,
                    caps: LinkCaps::tcp(),
                })
                .await;
            let _ = ctx
                .events
                .send(LinkEvent::PeerUp {
                    link: ctx.id,
                    peer,
                    remote: "192.0.2.7:7300".into(),
                    outbound: true,
                })
                .await;
            while let Some(cmd) = ctx.commands.recv().await {
                let _ = got_tx.send((peer, cmd));
            }
        })
    });
    let (shared, fut) = driver::start(
        node(1),
        opts(vec![("stuck".into(), stuck), ("healthy".into(), healthy)]),
    );
    let driver = tokio::spawn(fut);
    let greeted = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((peer, cmd)) = got_rx.recv().await {
            if matches!(cmd, LinkCommand::Send { peer: p, .. } if p == peer) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        greeted,
        Ok(true),
        "the healthy link got nothing while the other was stuck"
    );
    driver::stop(&shared);
    let r = tokio::time::timeout(Duration::from_secs(20), driver).await;
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "stops cleanly with a stuck link: {r:?}"
    );
}

/// One end of an in-memory connection between two drivers.
struct Pipe {
    /// Frames from the other side are dropped while set.
    deaf: Arc<AtomicBool>,
    /// Disconnect commands this side's link was given.
    disconnects: Arc<AtomicU64>,
}

fn pipe_end(
    to_other: mpsc::UnboundedSender<Vec<u8>>,
    mut from_other: mpsc::UnboundedReceiver<Vec<u8>>,
    remote: &'static str,
    outbound: bool,
) -> (Pipe, LinkSpawner) {
    let deaf = Arc::new(AtomicBool::new(false));
    let disconnects = Arc::new(AtomicU64::new(0));
    let pipe = Pipe {
        deaf: deaf.clone(),
        disconnects: disconnects.clone(),
    };
    let spawn: LinkSpawner = Box::new(move |mut ctx: LinkContext| {
        tokio::spawn(async move {
            let peer = ctx.peer_ids.next();
            let _ = ctx
                .events
                .send(LinkEvent::Up {
                    link: ctx.id,
                    caps: LinkCaps::tcp(),
                })
                .await;
            let _ = ctx
                .events
                .send(LinkEvent::PeerUp {
                    link: ctx.id,
                    peer,
                    remote: remote.into(),
                    outbound,
                })
                .await;
            loop {
                tokio::select! {
                    cmd = ctx.commands.recv() => match cmd {
                        Some(LinkCommand::Send { bytes, .. }) => {
                            let _ = to_other.send(bytes);
                        }
                        Some(LinkCommand::Disconnect { .. }) => {
                            disconnects.fetch_add(1, Ordering::SeqCst);
                            let _ = ctx
                                .events
                                .send(LinkEvent::PeerDown {
                                    peer,
                                    reason: "closed by us".into(),
                                })
                                .await;
                        }
                        Some(_) => {}
                        None => return,
                    },
                    Some(bytes) = from_other.recv() => {
                        if !deaf.load(Ordering::SeqCst) {
                            let _ = ctx.events.send(LinkEvent::Frame { peer, bytes }).await;
                        }
                    }
                }
            }
        })
    });
    (pipe, spawn)
}

const HOUR_MS: i64 = 3_600_000;

/// Node A's wall clock can be stepped; its timers must not notice. A forward step must
/// not time out a healthy session; after a backward step a silent peer must still be
/// dropped in its time.
#[tokio::test(start_paused = true)]
async fn wall_clock_steps_neither_drop_healthy_sessions_nor_freeze_timeouts() {
    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let (pipe_a, link_a) = pipe_end(b_tx, a_rx, "198.51.100.2:7300", true);
    let (_pipe_b, link_b) = pipe_end(a_tx, b_rx, "198.51.100.1:50000", false);
    let step = Arc::new(AtomicI64::new(0));
    let origin = tokio::time::Instant::now();
    let s = step.clone();
    let wall = move || {
        let t = 1_800_000_000_000i64
            + i64::try_from(origin.elapsed().as_millis()).unwrap_or(0)
            + s.load(Ordering::SeqCst);
        u64::try_from(t).unwrap_or(0)
    };
    let clock = Clock::with_wall(Arc::new(wall));
    let (a, fut_a) = driver::start_with_clock(node(1), opts(vec![("pipe".into(), link_a)]), clock);
    // B keeps true time (its own clock, not the process's: this runtime's time is virtual).
    let b_wall = move || 1_800_000_000_000u64 + origin.elapsed().as_millis() as u64;
    let (b, fut_b) = driver::start_with_clock(
        node(2),
        opts(vec![("pipe".into(), link_b)]),
        Clock::with_wall(Arc::new(b_wall)),
    );
    let da = tokio::spawn(fut_a);
    let db = tokio::spawn(fut_b);
    let ready = |s: Arc<Shared>| async move {
        s.call(|n, now| n.peers(now).iter().filter(|p| p.ready).count())
            .await
            .expect("the node answers")
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        (ready(a.clone()).await, ready(b.clone()).await),
        (1, 1),
        "handshake"
    );

    // NTP steps A's clock two hours forward. Pings keep the session alive.
    step.store(2 * HOUR_MS, Ordering::SeqCst);
    a.wake.notify_one();
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(
        pipe_a.disconnects.load(Ordering::SeqCst),
        0,
        "a forward step dropped a healthy session"
    );
    assert_eq!(ready(a.clone()).await, 1);

    // Then four hours back (two behind the truth), and B goes silent towards A: A must
    // still drop it after its silence timeout, not once the clock has caught up.
    step.store(-2 * HOUR_MS, Ordering::SeqCst);
    pipe_a.deaf.store(true, Ordering::SeqCst);
    a.wake.notify_one();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        pipe_a.disconnects.load(Ordering::SeqCst) >= 1,
        "timers froze after a backward step: a silent peer was kept"
    );
    assert_eq!(ready(a.clone()).await, 0);

    driver::stop(&a);
    driver::stop(&b);
    let _ = da.await;
    let _ = db.await;
}

/// Block times are consensus: the core checks them against the wall clock it was told,
/// not against its monotonic timer clock. Here the timer clock is three hours behind the
/// wall clock (the wall clock stepped forward after start): a block stamped with the
/// true time is accepted, one stamped three hours past the true time is refused.
#[test]
fn block_times_are_checked_against_the_wall_clock() {
    use skywave::chain::pow;
    let mono: u64 = 1_800_000_000_000;
    let wall = mono + 3 * 3_600_000;
    let mut n = node(1);
    n.set_wall_clock(mono, wall);
    let to = skywave::chain::Address([9; 32]);
    let mut block = n.chain().block_template(to, wall / 1000);
    while !pow::mine(&mut block.header, 1_000_000) {}
    assert!(
        n.submit_block(mono, block).is_ok(),
        "a block stamped with the true time was refused"
    );
    let mut ahead = n.chain().block_template(to, (wall + 3 * 3_600_000) / 1000);
    while !pow::mine(&mut ahead.header, 1_000_000) {}
    assert!(
        n.submit_block(mono, ahead).is_err(),
        "a block three hours in the future was accepted"
    );
}

/// A store write that fails (here the disk refuses the block's main-chain row) stops the
/// driver with an error that says what failed, rather than a warning and a node whose
/// memory is ahead of its store (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_write_stops_the_driver_with_a_clear_error() {
    let n = node(1);
    n.chain()
        .store()
        .conn()
        .execute_batch(
            "CREATE TRIGGER disk_full BEFORE INSERT ON main_chain
             BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END;",
        )
        .expect("fault injection");
    let mut o = opts(Vec::new());
    o.mine_to = Some(skywave::chain::Address([7; 32]));
    let (shared, fut) = driver::start(n, o);
    let err = ends(fut)
        .await
        .expect_err("a failed store write is an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("store") && msg.contains("disk full (injected)"),
        "{msg}"
    );
    assert!(shared.stopping.load(Ordering::SeqCst));
    // Nobody was told of the failed input's block.
    assert_eq!(shared.summary().height, 0);
}

/// A request's answer waits for its input to commit: when the commit fails (the disk
/// refuses the block's main-chain row), the caller hears that the node stopped, never
/// that the block was taken.
#[tokio::test]
async fn a_request_whose_input_does_not_commit_gets_no_answer() {
    use skywave::chain::pow;
    let n = node(1);
    n.chain()
        .store()
        .conn()
        .execute_batch(
            "CREATE TRIGGER disk_full BEFORE INSERT ON main_chain
             BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END;",
        )
        .expect("fault injection");
    let to = skywave::chain::Address([9; 32]);
    let mut block = n.chain().block_template(to, driver::wall_ms() / 1000);
    while !pow::mine(&mut block.header, 1_000_000) {}
    let (shared, fut) = driver::start(n, opts(Vec::new()));
    let driver = tokio::spawn(fut);
    let asked = shared
        .call(move |n, now| n.submit_block(now, block).is_ok())
        .await;
    assert_eq!(asked, Err(driver::Unanswered::Stopped));
    let r = ends(async { driver.await.expect("the driver itself does not panic") }).await;
    assert!(format!("{:#}", r.expect_err("a failed commit is an error")).contains("disk full"));
}
