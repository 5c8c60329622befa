//! Peer exchange over TCP: nodes tell each other addresses of nodes that accept
//! connections, and a node short of outbound peers dials some of them.
//!
//! Only fast links (TCP, no bit rate, not radio) take part: on radio an address is
//! useless and its bytes cost air. Learned addresses are hearsay until a dial succeeds;
//! the book is bounded, loopback addresses are taken only from loopback peers, and a
//! failed address waits longer before each new try.

use super::{Node, NodeEvent};
use crate::link::PeerId;
use crate::wire::message::{limits, Message, RejectCode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
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

#[derive(Clone, Debug, Default)]
struct Entry {
    heard: u64,
    tried: u64,
    fails: u32,
    /// A session with it completed a handshake.
    good: bool,
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
        if !self.book.contains_key(&a) && self.book.len() >= BOOK_CAP {
            // Forget the stalest hearsay first, then the stalest of all.
            let victim = self
                .book
                .iter()
                .min_by_key(|(k, e)| (e.good, e.heard, **k))
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.book.remove(&v);
            }
        }
        let e = self.book.entry(a).or_default();
        e.heard = e.heard.max(now);
        if good {
            e.good = true;
            e.fails = 0;
        }
    }

    /// Addresses known, for the API and tests.
    pub fn len(&self) -> usize {
        self.book.len()
    }
}

fn fast(caps: &crate::link::LinkCaps) -> bool {
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
        let from_loopback = self
            .peers
            .get(&peer)
            .and_then(|p| p.remote.parse::<SocketAddr>().ok())
            .is_some_and(|a| a.ip().is_loopback());
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
            if ip.is_loopback() && !from_loopback {
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
        let outbound = self
            .peers
            .values()
            .filter(|p| p.outbound && !p.closing)
            .filter(|p| self.links.get(&p.link).is_some_and(fast))
            .count();
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
                (e.tried == 0 || now.saturating_sub(e.tried) >= wait)
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

    /// Addresses in the book.
    pub fn known_addresses(&self) -> usize {
        self.addrs.len()
    }
}
