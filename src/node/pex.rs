//! Peer exchange over TCP: nodes tell each other addresses of nodes that accept
//! connections, and a node short of outbound peers dials some of them.
//!
//! Only fast links (TCP, no bit rate, not radio) take part: on radio an address is
//! useless and its bytes cost air. Learned addresses are hearsay until a dial succeeds;
//! the book is bounded, loopback addresses are taken only from loopback peers and
//! private or link-local ones only from peers on such addresses (a public peer cannot
//! aim us at the gateway's own network), and a failed address waits longer before each
//! new try.

use super::{Node, NodeEvent};
use crate::net::PeerId;
use crate::wire::message::{limits, Message, RejectCode};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use tracing::debug;

/// Addresses remembered at once.
const BOOK_CAP: usize = 1000;
/// Addresses given in one answer.
const ANSWER: usize = 32;
/// Addresses taken from one session in all (more is ignored).
const PER_SESSION: usize = 256;
/// First wait before dialling an address again; doubles per failure, up to a day.
const RETRY_MS: u64 = 10 * 60 * 1000;
const RETRY_MAX_MS: u64 = 24 * 3600 * 1000;
/// How often the node considers dialling.
const DIAL_EVERY_MS: u64 = 10_000;
/// Hearsay younger than this is passed on (a node's own advertisement is hearsay to
/// everyone but itself, so proven addresses alone would never spread).
const PASS_ON_MS: u64 = 3 * 3600 * 1000;

/// Where an address in the book came from. An address known several ways keeps the
/// first in this order: the operator's config, a DNS seed, peer exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddrSource {
    /// A `tcp://` link in the config (its own link dials it).
    Config,
    /// A DNS seed's A or AAAA record.
    Dns,
    /// Told by a peer.
    #[default]
    PeerExchange,
}

/// An address in the book, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AddrInfo {
    /// `ip:port`.
    pub addr: String,
    /// Where it came from.
    pub source: AddrSource,
    /// A session with it completed a handshake.
    pub good: bool,
    /// Dials since the last success.
    pub fails: u32,
    /// Milliseconds since it was last heard of.
    pub heard_ms_ago: u64,
    /// Milliseconds since it was last dialled (None: never).
    pub tried_ms_ago: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    heard: u64,
    tried: u64,
    fails: u32,
    /// A session with it completed a handshake.
    good: bool,
    source: AddrSource,
}

/// Known addresses and the exchange's own state.
#[derive(Default)]
pub(super) struct AddrBook {
    book: BTreeMap<SocketAddr, Entry>,
    next_dial: u64,
    /// Addresses taken per session, and whether it already asked us.
    taken: BTreeMap<PeerId, (usize, bool)>,
}

impl AddrBook {
    fn insert(&mut self, a: SocketAddr, now: u64, good: bool) {
        self.insert_from(a, now, good, AddrSource::PeerExchange);
    }

    fn insert_from(&mut self, a: SocketAddr, now: u64, good: bool, source: AddrSource) {
        if !self.book.contains_key(&a) && self.book.len() >= BOOK_CAP {
            // Forget the stalest hearsay first, then the stalest of all.
            let victim = self
                .book
                .iter()
                .min_by_key(|(k, e)| (e.good, std::cmp::Reverse(e.source), e.heard, **k))
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.book.remove(&v);
            }
        }
        let new = !self.book.contains_key(&a);
        let e = self.book.entry(a).or_default();
        if new || source < e.source {
            e.source = source;
        }
        e.heard = e.heard.max(now);
        if good {
            e.good = true;
            e.fails = 0;
        }
    }
}

/// How far an address reaches: only a public address means the same node to everyone
/// who hears it. A private, link-local or loopback address passed on by a peer on the
/// internet names a machine on *our* network, and dialling it would let any peer aim us
/// at hosts behind the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    Loopback,
    /// RFC 1918, shared (CGNAT), link-local, IPv6 unique-local and link-local.
    Local,
    Public,
}

fn reach(ip: IpAddr) -> Reach {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Reach::Loopback
            } else if v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
            {
                Reach::Local
            } else {
                Reach::Public
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            if v6.is_loopback() {
                Reach::Loopback
            } else if (seg & 0xfe00) == 0xfc00 || (seg & 0xffc0) == 0xfe80 {
                Reach::Local
            } else {
                Reach::Public
            }
        }
    }
}

fn fast(caps: &crate::net::LinkCaps) -> bool {
    caps.bitrate_bps == 0 && !caps.radio && caps.connection_oriented
}

impl Node {
    fn pex_peer(&self, peer: PeerId) -> bool {
        self.cfg.peers.peer_exchange && self.peer_caps(peer).is_some_and(fast)
    }

    /// Handshake done: ask for addresses, offer ours, and remember a dialled address
    /// as good.
    pub(super) fn pex_ready(&mut self, now: u64, peer: PeerId) {
        if !self.pex_peer(peer) {
            return;
        }
        if let Some(p) = self.peers.get(&peer) {
            if p.outbound {
                if let Ok(a) = p.remote.parse::<SocketAddr>() {
                    self.addrs.insert(a, now, true);
                }
            }
        }
        self.send(peer, Message::GetAddr);
        if let Some(own) = self.cfg.peers.advertise {
            self.send(peer, Message::Addr(vec![own.to_string()]));
        }
    }

    pub(super) fn pex_gone(&mut self, peer: PeerId) {
        self.addrs.taken.remove(&peer);
    }

    pub(super) fn on_getaddr(&mut self, now: u64, peer: PeerId) {
        if !self.pex_peer(peer) {
            return;
        }
        let asked = &mut self.addrs.taken.entry(peer).or_default().1;
        if *asked {
            // Once per session: a repeat would only map our book for a scraper.
            return;
        }
        *asked = true;
        let theirs = self.peers.get(&peer).map(|p| p.remote.clone());
        let mut good: Vec<SocketAddr> = self
            .addrs
            .book
            .iter()
            .filter(|(a, e)| {
                (e.good || now.saturating_sub(e.heard) < PASS_ON_MS)
                    && Some(a.to_string()) != theirs
            })
            .map(|(a, _)| *a)
            .collect();
        // A random sample, so no one peer learns the whole book in order.
        let mut out = Vec::new();
        while !good.is_empty() && out.len() < ANSWER {
            let i = self.rng.below(good.len() as u64) as usize;
            out.push(good.swap_remove(i).to_string());
        }
        if let Some(own) = self.cfg.peers.advertise {
            if out.len() < limits::MAX_ADDRS {
                out.push(own.to_string());
            }
        }
        if !out.is_empty() {
            self.send(peer, Message::Addr(out));
        }
    }

    pub(super) fn on_addr(&mut self, now: u64, peer: PeerId, addrs: Vec<String>) {
        if !self.pex_peer(peer) {
            return;
        }
        // A peer reachable only on our own host or network may tell us addresses of
        // that reach; a public peer (or one whose address we cannot read) only public
        // ones.
        let from = self
            .peers
            .get(&peer)
            .and_then(|p| p.remote.parse::<SocketAddr>().ok())
            .map_or(Reach::Public, |a| reach(a.ip()));
        let taken = self.addrs.taken.entry(peer).or_default().0;
        let room = PER_SESSION.saturating_sub(taken);
        let mut bad = 0;
        let mut took = 0;
        for s in addrs.iter().take(room) {
            let Ok(a) = s.parse::<SocketAddr>() else {
                bad += 1;
                continue;
            };
            let ip = a.ip();
            if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
                bad += 1;
                continue;
            }
            if reach(ip) < from {
                continue;
            }
            if Some(a) == self.cfg.peers.advertise {
                continue;
            }
            self.addrs.insert(a, now, false);
            took += 1;
        }
        self.addrs.taken.entry(peer).or_default().0 += took;
        if bad > 0 {
            self.misbehave(
                peer,
                RejectCode::Malformed,
                format!("{bad} unusable addresses in addr"),
                None,
            );
        }
    }

    /// Short of outbound peers? Ask the driver to dial one learned address.
    pub(super) fn pex_tick(&mut self, now: u64) {
        if !self.cfg.peers.peer_exchange || now < self.addrs.next_dial {
            return;
        }
        self.addrs.next_dial = now + DIAL_EVERY_MS;
        let outbound = self.fast_outbound();
        if outbound >= self.cfg.peers.max_outbound {
            return;
        }
        let connected: Vec<String> = self.peers.values().map(|p| p.remote.clone()).collect();
        let pick = self
            .addrs
            .book
            .iter()
            .filter(|(a, e)| {
                let wait = (RETRY_MS << e.fails.min(10)).min(RETRY_MAX_MS);
                // A configured address has a link of its own that dials it.
                e.source != AddrSource::Config
                    && (e.tried == 0 || now.saturating_sub(e.tried) >= wait)
                    && !connected.contains(&a.to_string())
                    && Some(**a) != self.cfg.peers.advertise
                    && self.guard_banned(&a.to_string(), now).is_none()
            })
            // Proven addresses first, then the freshest hearsay.
            .max_by_key(|(a, e)| (e.good, e.heard, **a))
            .map(|(a, _)| *a);
        let Some(addr) = pick else {
            return;
        };
        if let Some(e) = self.addrs.book.get_mut(&addr) {
            // Counted as failed until a handshake proves otherwise (`pex_ready`).
            e.tried = now;
            e.fails = e.fails.saturating_add(1);
        }
        debug!(%addr, outbound, "dialling an address learned from peers");
        self.events.push_back(NodeEvent::Dial {
            addr: addr.to_string(),
        });
    }

    /// Put addresses from the operator's side in the book: `Config` (the config's
    /// `tcp://` links) or `Dns` (a seed's records, `told_by` the DNS server asked, if not
    /// the system's resolver). Like a peer's, a resolver's answer may name loopback or
    /// private hosts only when the resolver itself is that close: a public seed cannot
    /// aim us at the gateway's own network. Returns how many were new.
    pub fn add_addresses(
        &mut self,
        now: u64,
        addrs: &[SocketAddr],
        source: AddrSource,
        told_by: Option<IpAddr>,
    ) -> usize {
        let from = match source {
            AddrSource::Config => Reach::Loopback,
            _ => told_by.map_or(Reach::Public, reach),
        };
        let mut new = 0;
        for a in addrs {
            let ip = a.ip();
            if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || reach(ip) < from {
                continue;
            }
            if Some(*a) == self.cfg.peers.advertise {
                continue;
            }
            new += usize::from(!self.addrs.book.contains_key(a));
            self.addrs.insert_from(*a, now, false, source);
        }
        new
    }

    /// The address book, for the API.
    pub fn address_book(&self, now: u64) -> Vec<AddrInfo> {
        self.addrs
            .book
            .iter()
            .map(|(a, e)| AddrInfo {
                addr: a.to_string(),
                source: e.source,
                good: e.good,
                fails: e.fails,
                heard_ms_ago: now.saturating_sub(e.heard),
                tried_ms_ago: (e.tried != 0).then(|| now.saturating_sub(e.tried)),
            })
            .collect()
    }

    /// Fewer outbound sessions on fast links than `max_outbound` (DNS seeds are asked
    /// again then).
    pub fn short_of_peers(&self) -> bool {
        self.cfg.peers.peer_exchange && self.fast_outbound() < self.cfg.peers.max_outbound
    }

    fn fast_outbound(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.outbound && !p.closing)
            .filter(|p| self.links.get(&p.link).is_some_and(fast))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{params, Chain};
    use crate::net::{LinkCaps, LinkId};
    use crate::node::{NodeConfig, PeerPolicy};
    use crate::store::Store;

    const LINK: LinkId = 1;
    const T: u64 = 1_700_000_000_000;

    fn node() -> Node {
        let chain = Chain::open(params::regtest(), Store::open_in_memory().unwrap()).unwrap();
        let mut n = Node::new(
            chain,
            NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                callsign: "N0CALL-1".into(),
                seed: 1,
                user_agent: "pex-test".into(),
                peers: PeerPolicy::default(),
            },
        );
        n.link_up(T, LINK, LinkCaps::tcp());
        n
    }

    const HEARD: [&str; 10] = [
        "192.168.1.1:80",
        "10.0.0.5:7300",
        "172.16.3.4:22",
        "100.64.1.1:7300",
        "169.254.169.254:80",
        "127.0.0.1:7300",
        "[::1]:7300",
        "[fe80::1]:7300",
        "[fd00::5]:7300",
        "[::ffff:10.1.2.3]:7300",
    ];

    /// Every address the node asks the driver to dial over `rounds` dial rounds.
    fn dials(n: &mut Node, rounds: u64) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..rounds {
            n.pex_tick(T + i * DIAL_EVERY_MS);
            while let Some(e) = n.poll_event() {
                if let NodeEvent::Dial { addr } = e {
                    out.push(addr);
                }
            }
        }
        out
    }

    #[test]
    fn a_public_peer_cannot_aim_us_at_private_loopback_or_link_local_hosts() {
        let mut n = node();
        n.peer_connected(T, 7, LINK, "203.0.113.9:7300".into(), false);
        let mut heard: Vec<String> = HEARD.iter().map(|s| s.to_string()).collect();
        heard.push("198.51.100.20:7300".into());
        n.on_addr(T, 7, heard);
        let dialled = dials(&mut n, 20);
        assert_eq!(dialled, vec!["198.51.100.20:7300".to_string()]);
        let book: Vec<String> = n.address_book(T).into_iter().map(|a| a.addr).collect();
        assert_eq!(book, vec!["198.51.100.20:7300".to_string()]);
    }

    #[test]
    fn a_peer_on_the_local_network_may_name_local_hosts_but_not_ours() {
        let mut n = node();
        n.peer_connected(T, 7, LINK, "192.168.1.20:7300".into(), false);
        n.on_addr(T, 7, HEARD.iter().map(|s| s.to_string()).collect());
        let mut dialled = dials(&mut n, 20);
        dialled.sort();
        let mut want: Vec<String> = HEARD
            .iter()
            .filter(|s| !matches!(**s, "127.0.0.1:7300" | "[::1]:7300"))
            .map(|s| s.parse::<SocketAddr>().unwrap().to_string())
            .collect();
        want.sort();
        assert_eq!(dialled, want);
    }

    #[test]
    fn seeds_from_a_public_resolver_name_public_hosts_only_and_config_is_not_dialled_twice() {
        let mut n = node();
        let public: SocketAddr = "198.51.100.7:7300".parse().unwrap();
        let mut heard: Vec<SocketAddr> = HEARD.iter().map(|s| s.parse().unwrap()).collect();
        heard.push(public);
        assert_eq!(n.add_addresses(T, &heard, AddrSource::Dns, None), 1);
        // A resolver on this host may name hosts here (a lab, a test).
        let local: SocketAddr = "127.0.0.9:7300".parse().unwrap();
        assert_eq!(
            n.add_addresses(
                T,
                &[local],
                AddrSource::Dns,
                Some("127.0.0.1".parse().unwrap())
            ),
            1
        );
        let configured: SocketAddr = "192.168.1.1:7300".parse().unwrap();
        assert_eq!(
            n.add_addresses(T, &[configured], AddrSource::Config, None),
            1
        );
        // Heard again from a peer: still the seed's.
        n.peer_connected(T, 7, LINK, "203.0.113.9:7300".into(), false);
        n.on_addr(T, 7, vec![public.to_string()]);
        let book = n.address_book(T);
        let source = |a: SocketAddr| {
            book.iter()
                .find(|i| i.addr == a.to_string())
                .map(|i| i.source)
        };
        assert_eq!(source(public), Some(AddrSource::Dns));
        assert_eq!(source(local), Some(AddrSource::Dns));
        assert_eq!(source(configured), Some(AddrSource::Config));
        assert_eq!(book.len(), 3);
        let mut dialled = dials(&mut n, 20);
        dialled.sort();
        assert_eq!(dialled, vec![local.to_string(), public.to_string()]);
        assert!(n.short_of_peers());
    }
}
