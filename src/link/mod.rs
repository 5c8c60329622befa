//! Links: the transports at the edge. Each link runs as its own tokio task, reports what
//! it can carry ([`LinkCaps`]) and the peers it reaches, and moves whole envelopes; the
//! core never sees a socket and never decides anything from a link's name. The names
//! and capabilities shared with the core live in [`crate::net`], re-exported here.

pub mod aprs;
pub mod backoff;
pub mod js8call;
pub mod kiss;
pub mod lines;
pub mod noise;
pub mod params;
pub mod simtnc;
pub mod stations;
pub mod tcp;
pub mod vara;

pub use crate::net::{LinkCaps, LinkId, PeerId, MAX_BITRATE_BPS};

use std::fmt;
use tokio::sync::mpsc;

/// One transport's link, as its URL configures it: parsed and validated parameters,
/// and how to start the link task. `Display` gives the canonical URL.
pub trait Transport: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// What the link does, for the start-up banner.
    fn role(&self) -> String;

    /// Start the link task. `env` holds the node key only if
    /// [`Transport::holds_node_key`].
    fn start(&self, env: LinkEnv, ctx: LinkContext) -> Started;

    /// Whether the link encrypts with the node key (TCP with Noise, ADR 0011): only
    /// such links are handed it.
    fn holds_node_key(&self) -> bool {
        false
    }

    /// Whether peers are reached over TCP (peer exchange and DNS seeds need one).
    fn is_tcp(&self) -> bool {
        false
    }

    /// The address of an encrypted listener, which peers may be told.
    fn listens_on(&self) -> Option<&str> {
        None
    }

    /// The address an encrypted dialler keeps a connection to.
    fn dials(&self) -> Option<&str> {
        None
    }

    /// For [`LinkUrl::get`].
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What the driver gives a link it starts, besides its [`LinkContext`].
pub struct LinkEnv {
    /// The node key, for links that hold it (see [`Transport::holds_node_key`]).
    pub node_key: Option<ed25519_dalek::SigningKey>,
    /// The network's name (`main`, `regtest`, ...).
    pub network: String,
}

/// A started link.
pub struct Started {
    /// The link task.
    pub task: tokio::task::JoinHandle<()>,
    /// Opens sessions only when asked ([`LinkCommand::Connect`]).
    pub on_demand: bool,
    /// Sends the APRS status beacon the driver hands it, every so many minutes.
    pub aprs_every_min: Option<u32>,
}

impl Started {
    /// A link task with no extras.
    pub fn task(task: tokio::task::JoinHandle<()>) -> Started {
        Started {
            task,
            on_demand: false,
            aprs_every_min: None,
        }
    }
}

/// A URL scheme and how to parse a link URL of it.
pub struct Scheme {
    /// The scheme, as in `name://...`.
    pub name: &'static str,
    /// Parse and validate a whole URL of this scheme.
    pub parse: fn(&str) -> Result<Box<dyn Transport>, String>,
    /// A radio link: never encrypted.
    pub radio: bool,
}

/// Every transport's schemes: one line per transport.
const TRANSPORTS: [&[Scheme]; 4] = [tcp::SCHEMES, kiss::SCHEMES, vara::SCHEMES, js8call::SCHEMES];

/// Every known scheme, in registry order.
pub fn schemes() -> impl Iterator<Item = &'static Scheme> {
    TRANSPORTS.iter().flat_map(|t| t.iter())
}

/// A link address, as written in config, on the command line and in the API: a parsed
/// link of one of the registered transports. Equal when their canonical URLs are.
#[derive(Clone, Debug)]
pub struct LinkUrl(std::sync::Arc<dyn Transport>);

impl LinkUrl {
    /// Parse a link URL; the error names the supported schemes.
    pub fn parse(s: &str) -> Result<LinkUrl, String> {
        let s = s.trim();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("link '{s}' is not a URL (expected scheme://...)"))?;
        refuse_radio_encryption(s, scheme, rest)?;
        match schemes().find(|k| k.name == scheme) {
            Some(k) => (k.parse)(s).map(|t| LinkUrl(t.into())),
            None => {
                let known: Vec<&str> = schemes().map(|k| k.name).collect();
                Err(format!(
                    "link '{s}': unsupported scheme '{scheme}' (supported: {}; tcp and \
                     tcp-listen are Noise-encrypted, the +plain ones are not, for tests and \
                     old nodes)",
                    known.join(", ")
                ))
            }
        }
    }

    /// The link's transport.
    pub fn transport(&self) -> &dyn Transport {
        self.0.as_ref()
    }

    /// The link's configuration if it is a `T` (for tools made for one transport).
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// A TCP link, encrypted or plain.
    pub fn is_tcp(&self) -> bool {
        self.0.is_tcp()
    }

    /// Start the link. The node key is fetched (`node_key`) only for a link that holds
    /// it.
    pub fn start<E>(
        &self,
        network: &str,
        node_key: impl FnOnce() -> Result<ed25519_dalek::SigningKey, E>,
        ctx: LinkContext,
    ) -> Result<Started, E> {
        let node_key = match self.0.holds_node_key() {
            true => Some(node_key()?),
            false => None,
        };
        let env = LinkEnv {
            node_key,
            network: network.to_string(),
        };
        Ok(self.0.start(env, ctx))
    }
}

impl PartialEq for LinkUrl {
    fn eq(&self, other: &LinkUrl) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for LinkUrl {}

impl fmt::Display for LinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Words that ask for encryption, in a scheme or a parameter name.
const CRYPTO_WORDS: [&str; 8] = [
    "noise", "encrypt", "tls", "ssl", "crypt", "cipher", "secure", "psk",
];

/// Radio links are never encrypted (amateur radio rules forbid obscuring the meaning of a
/// transmission): a radio scheme or parameter that asks for it is refused by name, not
/// as one more unknown option. A scheme is radio if it starts as a radio scheme does
/// (`kiss+tls` as `kiss+tcp`).
fn refuse_radio_encryption(url: &str, scheme: &str, rest: &str) -> Result<(), String> {
    let family = |s: &str| s.split('+').next().unwrap_or(s).to_ascii_lowercase();
    let radio = schemes().any(|k| k.radio && family(k.name) == family(scheme));
    if !radio {
        return Ok(());
    }
    let asks = |w: &str| {
        let w = w.to_ascii_lowercase();
        CRYPTO_WORDS.iter().any(|c| w.contains(c))
    };
    let param = params::query_keys(rest).into_iter().find(|k| asks(k));
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
        let tcp = |s: &str| LinkUrl::parse(s).unwrap().get::<tcp::TcpLink>().cloned();
        let t = tcp("tcp://127.0.0.1:7300").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.listen, t.noise),
            ("127.0.0.1:7300", false, true)
        );
        let t = tcp("tcp-listen://0.0.0.0:7300/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.listen, t.noise),
            ("0.0.0.0:7300", true, true)
        );
        assert_eq!(t.to_string(), "tcp-listen://0.0.0.0:7300");
        assert_eq!(
            LinkUrl::parse("tcp://[::1]:7300").unwrap().to_string(),
            "tcp://[::1]:7300"
        );
        let t = tcp("tcp+plain://127.0.0.1:7300").unwrap();
        assert_eq!((t.listen, t.noise), (false, false));
        assert_eq!(
            LinkUrl::parse("tcp-listen+plain://[::]:7300")
                .unwrap()
                .to_string(),
            "tcp-listen+plain://[::]:7300"
        );
        let e = LinkUrl::parse("carrier-pigeon://x:1").unwrap_err();
        assert!(e.contains("unsupported scheme 'carrier-pigeon'"), "{e}");
        // The error lists every registered scheme.
        for k in schemes() {
            assert!(e.contains(k.name), "{e} lacks {}", k.name);
        }
        assert!(e.contains("tcp+plain") && e.contains("Noise"), "{e}");
        assert!(LinkUrl::parse("tcp+plain://host:0").is_err());
        assert!(LinkUrl::parse("tcp://host").is_err());
        assert!(LinkUrl::parse("tcp://host:99999").is_err());
        assert!(LinkUrl::parse("127.0.0.1:7300").is_err());
    }

    #[test]
    fn every_scheme_parses_its_own_urls_and_round_trips() {
        let names: Vec<&str> = schemes().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "tcp",
                "tcp-listen",
                "tcp+plain",
                "tcp-listen+plain",
                "kiss+tcp",
                "kiss+serial",
                "vara+tcp",
                "js8call"
            ]
        );
        for url in [
            "tcp://127.0.0.1:7300",
            "tcp-listen://0.0.0.0:7300",
            "tcp+plain://h:1",
            "tcp-listen+plain://h:1",
            "kiss+tcp://127.0.0.1:8001",
            "kiss+serial:///dev/ttyUSB0?baud=57600",
            "vara+tcp://127.0.0.1:8300?peer=N0CALL",
            "js8call://127.0.0.1:2442",
        ] {
            let u = LinkUrl::parse(url).unwrap();
            assert_eq!(u.to_string(), url);
            assert_eq!(LinkUrl::parse(&u.to_string()).unwrap(), u);
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            let radio = schemes().any(|k| k.name == scheme && k.radio);
            assert_eq!(radio, !u.is_tcp(), "{url}");
            // Only the encrypted TCP links are handed the node key.
            let noise = matches!(scheme, "tcp" | "tcp-listen");
            assert_eq!(u.transport().holds_node_key(), noise, "{url}");
            assert!(u.transport().role().starts_with(url), "{url}");
        }
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
