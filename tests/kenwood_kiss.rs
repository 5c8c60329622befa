//! A Kenwood TM-D710/TH-D72 TNC that drops out of KISS (power cycle, TNC mode change),
//! emulated on a socat pty (tests/support/kenwood_emu.rs): with `tnc=kenwood` the link
//! sees the `cmd:` prompt and takes the TNC back into KISS as tmd710_tncsetup does;
//! without it the link goes down and says what to do. Skipped without socat.

#[path = "support/kenwood_emu.rs"]
mod kenwood_emu;

use kenwood_emu::{KenwoodTnc, Mode};
use skywave::lab::socat_available;
use skywave::link::kiss::{run_kiss, KissLinkConfig};
use skywave::link::{LinkCommand, LinkContext, LinkEvent, LinkUrl, PeerIds};
use skywave::wire::ax25::{decode_ui, encode_ui, Callsign, BROADCAST};
use skywave::wire::kiss::encode_data;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ME: &str = "N0CALL-1";

struct TestLink {
    events: mpsc::Receiver<LinkEvent>,
    commands: mpsc::Sender<LinkCommand>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_link(url: &str) -> TestLink {
    let cfg = LinkUrl::parse(url)
        .ok()
        .and_then(|u| u.get::<KissLinkConfig>().cloned())
        .expect("a link URL of this transport");
    let (ev_tx, events) = mpsc::channel(256);
    let (commands, cmd_rx) = mpsc::channel(256);
    let ctx = LinkContext {
        id: 1,
        events: ev_tx,
        commands: cmd_rx,
        peer_ids: PeerIds::default(),
        callsign: ME.into(),
    };
    TestLink {
        events,
        commands,
        task: tokio::spawn(run_kiss(cfg, ctx)),
    }
}

impl TestLink {
    async fn wait(
        &mut self,
        what: &str,
        secs: u64,
        want: impl Fn(&LinkEvent) -> bool,
    ) -> LinkEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if want(&ev) => return ev,
                Ok(Some(_)) => {}
                Ok(None) => panic!("{what}: link task ended"),
                Err(_) => panic!("{what}: nothing within {secs} s"),
            }
        }
    }

    async fn broadcast(&self, bytes: &[u8]) {
        self.commands
            .send(LinkCommand::Broadcast {
                bytes: bytes.to_vec(),
            })
            .await
            .expect("link alive");
    }
}

/// Poll until `f` holds, for up to `secs`.
async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Data frames the radio received, as their information fields.
fn sent_infos(tnc: &KenwoodTnc) -> Vec<Vec<u8>> {
    tnc.frames()
        .into_iter()
        .filter(|f| f.command == 0)
        .filter_map(|f| decode_ui(&f.payload).ok().map(|u| u.info))
        .collect()
}

fn txdelay_frames(tnc: &KenwoodTnc) -> usize {
    tnc.frames()
        .iter()
        .filter(|f| f.command == 1 && f.payload == [25])
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kenwood_preset_takes_a_power_cycled_tnc_back_into_kiss() {
    if !socat_available() {
        eprintln!("skipping: socat not on PATH");
        return;
    }
    let tnc = KenwoodTnc::start(true).expect("emulated radio");
    let mut link = spawn_link(&format!(
        "kiss+serial://{}?tnc=kenwood",
        tnc.path().display()
    ));
    link.wait("Up", 10, |e| matches!(e, LinkEvent::Up { .. }))
        .await;
    // The preset's KISS parameters (TXDELAY 25, P 63, SLOTTIME 10) on open.
    until("parameters on open", 5, || txdelay_frames(&tnc) == 1).await;
    link.broadcast(b"before").await;
    until("frame in KISS mode", 5, || {
        sent_infos(&tnc).contains(&b"before".to_vec())
    })
    .await;

    tnc.power_cycle();
    assert_eq!(tnc.mode(), Mode::Command);
    // The link sees the prompt and sends tmd710_tncsetup's lines, in order.
    until("back in KISS", 20, || tnc.mode() == Mode::Kiss).await;
    let lines = tnc.lines();
    assert_eq!(
        lines,
        ["", "TC 1", "TN 2,0", "HBAUD 1200", "KISS ON", "RESTART"],
        "{lines:?}"
    );
    assert_eq!(tnc.hbaud(), Some(1200));
    // Parameters again (a power cycle lost them), then traffic flows both ways.
    until("parameters after re-entry", 5, || txdelay_frames(&tnc) == 2).await;
    link.broadcast(b"after").await;
    until("frame after re-entry", 5, || {
        sent_infos(&tnc).contains(&b"after".to_vec())
    })
    .await;
    assert_eq!(
        tnc.binary_in_command_mode(),
        0,
        "KISS written to a command-mode TNC"
    );
    let mut heard = Vec::new();
    let src: Callsign = "N0CALL-2".parse().expect("call");
    encode_data(
        0,
        &encode_ui(&src, &BROADCAST, &[], b"from the air").expect("encode"),
        &mut heard,
    );
    tnc.send(&heard);
    link.wait(
        "frame from the radio",
        5,
        |e| matches!(e, LinkEvent::Frame { bytes, .. } if bytes == b"from the air"),
    )
    .await;
    // The link never went down for it.
    while let Ok(ev) = link.events.try_recv() {
        assert!(!matches!(ev, LinkEvent::Down { .. }), "{ev:?}");
    }
    link.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_preset_a_command_mode_tnc_takes_the_link_down_with_advice() {
    if !socat_available() {
        eprintln!("skipping: socat not on PATH");
        return;
    }
    let tnc = KenwoodTnc::start(true).expect("emulated radio");
    let mut link = spawn_link(&format!("kiss+serial://{}?baud=9600", tnc.path().display()));
    link.wait("Up", 10, |e| matches!(e, LinkEvent::Up { .. }))
        .await;
    tnc.power_cycle();
    match link
        .wait("Down", 10, |e| matches!(e, LinkEvent::Down { .. }))
        .await
    {
        LinkEvent::Down { reason, .. } => {
            assert!(reason.contains("command mode"), "{reason}");
            assert!(reason.contains("cmd:"), "{reason}");
            assert!(reason.contains("KISS ON"), "{reason}");
            assert!(reason.contains("tnc=kenwood"), "{reason}");
        }
        _ => unreachable!(),
    }
    assert!(
        !tnc.lines().iter().any(|l| l == "KISS ON"),
        "only tnc=kenwood sends commands: {:?}",
        tnc.lines()
    );
    link.task.abort();
}
