//! Links: the transports at the edge. Each link runs as its own tokio task, reports what
//! it can carry ([`LinkCaps`]) and the peers it reaches, and moves whole envelopes; the
//! core never sees a socket and never decides anything from a link's name. The names
//! and capabilities shared with the core live in [`crate::net`], re-exported here.

pub mod aprs;
pub mod js8call;
pub mod kiss;
pub mod noise;
pub mod simtnc;
pub mod tcp;
pub mod vara;

pub use crate::net::{LinkCaps, LinkId, PeerId, MAX_BITRATE_BPS};

use std::fmt;
use tokio::sync::mpsc;

/// A link address, as written in config, on the command line and in the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkUrl {
    /// `tcp://host:port`: dial a peer, redial when the connection drops. Noise-encrypted.
    TcpDial(String),
    /// `tcp-listen://addr:port`: accept peers. Noise-encrypted.
    TcpListen(String),
    /// `tcp+plain://host:port`: [`LinkUrl::TcpDial`] without Noise, for tests and nodes
    /// that predate it.
    TcpPlainDial(String),
    /// `tcp-listen+plain://addr:port`: [`LinkUrl::TcpListen`] without Noise.
    TcpPlainListen(String),
    /// `kiss+tcp://host:port?...` or `kiss+serial:///dev/ttyUSB0?baud=9600&...`: a TNC.
    Kiss(kiss::KissLinkConfig),
    /// `vara+tcp://host:port?peer=CALL&...`: a VARA HF/FM modem.
    Vara(vara::VaraLinkConfig),
    /// `js8call://host:port?peer=...&speed=...&blocks=0`: JS8Call's TCP API.
    Js8(js8call::Js8LinkConfig),
}

impl LinkUrl {
    /// Parse a link URL; the error names the supported schemes.
    pub fn parse(s: &str) -> Result<LinkUrl, String> {
        let s = s.trim();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("link '{s}' is not a URL (expected scheme://...)"))?;
        refuse_radio_encryption(s, scheme, rest)?;
        if matches!(scheme, "kiss+tcp" | "kiss+serial") {
            return kiss::KissLinkConfig::parse_url(s).map(LinkUrl::Kiss);
        }
        if scheme == "vara+tcp" {
            return vara::VaraLinkConfig::parse_url(s).map(LinkUrl::Vara);
        }
        if scheme == "js8call" {
            return js8call::Js8LinkConfig::parse_url(s).map(LinkUrl::Js8);
        }
        let hostport = rest.trim_end_matches('/');
        match scheme {
            "tcp" => Ok(LinkUrl::TcpDial(tcp::parse_hostport(s, hostport, false)?)),
            "tcp-listen" => Ok(LinkUrl::TcpListen(tcp::parse_hostport(s, hostport, true)?)),
            "tcp+plain" => Ok(LinkUrl::TcpPlainDial(tcp::parse_hostport(
                s, hostport, false,
            )?)),
            "tcp-listen+plain" => Ok(LinkUrl::TcpPlainListen(tcp::parse_hostport(
                s, hostport, true,
            )?)),
            other => Err(format!(
                "link '{s}': unsupported scheme '{other}' (supported: tcp, tcp-listen (both \
                 Noise-encrypted), tcp+plain, tcp-listen+plain (unencrypted, for tests and old \
                 nodes), kiss+tcp, kiss+serial, vara+tcp, js8call)"
            )),
        }
    }
}

impl LinkUrl {
    /// A TCP link, encrypted or plain.
    pub fn is_tcp(&self) -> bool {
        matches!(
            self,
            LinkUrl::TcpDial(_)
                | LinkUrl::TcpListen(_)
                | LinkUrl::TcpPlainDial(_)
                | LinkUrl::TcpPlainListen(_)
        )
    }
}

impl fmt::Display for LinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkUrl::TcpDial(a) => write!(f, "tcp://{a}"),
            LinkUrl::TcpListen(a) => write!(f, "tcp-listen://{a}"),
            LinkUrl::TcpPlainDial(a) => write!(f, "tcp+plain://{a}"),
            LinkUrl::TcpPlainListen(a) => write!(f, "tcp-listen+plain://{a}"),
            LinkUrl::Kiss(k) => write!(f, "{k}"),
            LinkUrl::Vara(v) => write!(f, "{v}"),
            LinkUrl::Js8(j) => write!(f, "{j}"),
        }
    }
}

/// Words that ask for encryption, in a scheme or a parameter name.
const CRYPTO_WORDS: [&str; 8] = [
    "noise", "encrypt", "tls", "ssl", "crypt", "cipher", "secure", "psk",
];

/// Radio links are never encrypted (amateur radio rules forbid obscuring the meaning of a
/// transmission): a radio scheme or parameter that asks for it is refused by name, not
/// as one more unknown option.
fn refuse_radio_encryption(url: &str, scheme: &str, rest: &str) -> Result<(), String> {
    let radio = ["kiss", "vara", "js8"]
        .iter()
        .any(|r| scheme.starts_with(r));
    if !radio {
        return Ok(());
    }
    let asks = |w: &str| {
        let w = w.to_ascii_lowercase();
        CRYPTO_WORDS.iter().any(|c| w.contains(c))
    };
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = query
        .split('&')
        .map(|kv| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv))
        .find(|k| asks(k));
    if asks(scheme) || param.is_some() {
        let what = param.map_or_else(|| format!("scheme '{scheme}'"), |k| format!("'{k}'"));
        return Err(format!(
            "link '{url}': radio links cannot be encrypted ({what}): amateur radio rules forbid \
             obscuring a transmission. Radio sessions are signed, not encrypted; only tcp:// \
             and tcp-listen:// links are encrypted (Noise)"
        ));
    }
    Ok(())
}

/// What a link task tells the driver.
#[derive(Debug)]
pub enum LinkEvent {
    /// The link is usable (a listener bound, a dialer started).
    Up { link: LinkId, caps: LinkCaps },
    /// The link failed; it may come back.
    Down { link: LinkId, reason: String },
    /// A peer session opened.
    PeerUp {
        link: LinkId,
        peer: PeerId,
        remote: String,
        outbound: bool,
    },
    /// One whole envelope from a peer.
    Frame { peer: PeerId, bytes: Vec<u8> },
    /// The link's capabilities changed (a modem reported a new bit rate).
    Caps { link: LinkId, caps: LinkCaps },
    /// A peer sent bytes the link could not even frame (the session is closing).
    Garbage { peer: PeerId, reason: String },
    /// A peer session closed.
    PeerDown { peer: PeerId, reason: String },
    /// Where a link that dials one peer stands, for status displays and the log (the
    /// core does not see it: it learns of sessions from `PeerUp` and `PeerDown`).
    Dial { link: LinkId, state: DialState },
}

/// See [`LinkEvent::Dial`].
#[derive(Debug, Clone)]
pub enum DialState {
    /// Dialling now.
    Dialling,
    /// Connected to the peer.
    Connected,
    /// The dial failed or the connection ended; the next try is in `retry_in_ms`.
    Failed { error: String, retry_in_ms: u64 },
}

/// What the driver asks of a link task.
#[derive(Debug)]
pub enum LinkCommand {
    /// Send one envelope to a peer.
    Send { peer: PeerId, bytes: Vec<u8> },
    /// Close a peer session after what is already queued has been written.
    Disconnect { peer: PeerId },
    /// Send one packet to every station on a broadcast link (beacons, announcements).
    Broadcast { bytes: Vec<u8> },
    /// Open one outbound session to this address (peer exchange); links that cannot
    /// dial arbitrary addresses ignore it.
    Dial { addr: String },
    /// Open a session if the link opens sessions on demand (a VARA modem): the node has
    /// something to deliver. Other links ignore it.
    Connect,
    /// Send this APRS information field (a presence beacon) to the APRS tocall through
    /// the link's APRS path. KISS links with `aprs_status` only; others ignore it.
    Aprs { info: Vec<u8> },
}

/// Hands out process-unique peer ids, so peers of all links share one id space.
#[derive(Clone, Default)]
pub struct PeerIds(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl PeerIds {
    /// The next unused id (starting at 1).
    pub fn next(&self) -> PeerId {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }
}

/// Everything a link task needs from the driver.
pub struct LinkContext {
    /// This link's id.
    pub id: LinkId,
    /// Where to report events.
    pub events: mpsc::Sender<LinkEvent>,
    /// Commands from the driver.
    pub commands: mpsc::Receiver<LinkCommand>,
    /// Shared peer id allocator.
    pub peer_ids: PeerIds,
    /// The station's callsign (with SSID), used as the source address on radio links.
    pub callsign: String,
}

/// Report events in order; false once the driver has gone away.
pub(crate) async fn emit(ctx: &LinkContext, events: Vec<LinkEvent>) -> bool {
    for ev in events {
        if ctx.events.send(ev).await.is_err() {
            return false;
        }
    }
    true
}

/// A radio link without a usable station callsign must not transmit: report it down
/// and drain commands (so the driver never blocks) until the driver goes away.
pub(crate) async fn stay_down(ctx: &mut LinkContext, reason: String) {
    let _ = ctx
        .events
        .send(LinkEvent::Down {
            link: ctx.id,
            reason,
        })
        .await;
    while ctx.commands.recv().await.is_some() {}
}

/// Await `fut` while handing driver commands to `on_command` (whose events are
/// reported). `None` when the driver went away first.
pub(crate) async fn serving<F: std::future::Future>(
    ctx: &mut LinkContext,
    fut: F,
    mut on_command: impl FnMut(LinkCommand) -> Vec<LinkEvent>,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            cmd = ctx.commands.recv() => {
                let evs = on_command(cmd?);
                if !emit(ctx, evs).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_urls_and_names_supported_schemes() {
        assert_eq!(
            LinkUrl::parse("tcp://127.0.0.1:7300").unwrap(),
            LinkUrl::TcpDial("127.0.0.1:7300".into())
        );
        assert_eq!(
            LinkUrl::parse("tcp-listen://0.0.0.0:7300/").unwrap(),
            LinkUrl::TcpListen("0.0.0.0:7300".into())
        );
        assert_eq!(
            LinkUrl::parse("tcp://[::1]:7300").unwrap().to_string(),
            "tcp://[::1]:7300"
        );
        let e = LinkUrl::parse("carrier-pigeon://x:1").unwrap_err();
        assert!(
            e.contains("unsupported scheme") && e.contains("js8call"),
            "{e}"
        );
        assert_eq!(
            LinkUrl::parse("tcp+plain://127.0.0.1:7300").unwrap(),
            LinkUrl::TcpPlainDial("127.0.0.1:7300".into())
        );
        assert_eq!(
            LinkUrl::parse("tcp-listen+plain://[::]:7300")
                .unwrap()
                .to_string(),
            "tcp-listen+plain://[::]:7300"
        );
        assert!(e.contains("tcp+plain") && e.contains("Noise"), "{e}");
        assert!(LinkUrl::parse("tcp+plain://host:0").is_err());
        assert!(LinkUrl::parse("tcp://host").is_err());
        assert!(LinkUrl::parse("tcp://host:99999").is_err());
        assert!(LinkUrl::parse("127.0.0.1:7300").is_err());
    }

    #[test]
    fn radio_links_refuse_any_encryption_option_by_name() {
        for bad in [
            "kiss+tcp://127.0.0.1:8001?encrypt=1",
            "kiss+serial:///dev/ttyUSB0?baud=9600&noise=xx",
            "kiss+tcp+noise://127.0.0.1:8001",
            "kiss+tls://127.0.0.1:8001",
            "vara+tcp://127.0.0.1:8300?peer=N0CALL&Encryption=on",
            "vara+tcp://127.0.0.1:8300?psk=secret",
            "js8call://127.0.0.1:2442?cipher=aes",
            "js8call+noise://127.0.0.1:2442",
        ] {
            let e = LinkUrl::parse(bad).unwrap_err();
            assert!(
                e.contains("radio links cannot be encrypted") && e.contains("amateur radio"),
                "{bad}: {e}"
            );
        }
        // The same links without it are fine, and TCP links have no such option either.
        for good in [
            "kiss+tcp://127.0.0.1:8001",
            "vara+tcp://127.0.0.1:8300?peer=N0CALL",
            "js8call://127.0.0.1:2442",
        ] {
            assert!(LinkUrl::parse(good).is_ok(), "{good}");
        }
    }
}
