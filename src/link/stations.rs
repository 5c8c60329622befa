//! The stations a broadcast radio link has heard (KISS, JS8Call), each a peer of its
//! own. The table is bounded: a new station, when it is full, takes the place of the
//! one heard least recently, so a busy channel keeps the stations that are talking.
//! Stations the operator named (`peer=`) are pinned and never evicted.

use super::{LinkEvent, LinkId, PeerId, PeerIds};
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;

struct Entry {
    peer: PeerId,
    last_heard: u64,
    pinned: bool,
}

/// Callsign (of type `K`) to peer id and back, bounded (see the module doc).
pub struct Stations<K> {
    max: usize,
    ids: PeerIds,
    by_call: HashMap<K, Entry>,
    by_peer: HashMap<PeerId, K>,
    tick: u64,
}

impl<K: Clone + Eq + Hash + Display> Stations<K> {
    /// An empty table of at most `max` stations, ids from the shared allocator so they
    /// never clash across links.
    pub fn new(max: usize, ids: PeerIds) -> Stations<K> {
        Stations {
            max,
            ids,
            by_call: HashMap::new(),
            by_peer: HashMap::new(),
            tick: 0,
        }
    }

    /// The peer id of `call`, heard just now (`outbound`: named by the operator, and
    /// pinned). A new station gets an id and a `PeerUp` in `events`, after the
    /// `PeerDown` of the station it evicts. `None` only when every entry is pinned.
    pub fn heard(
        &mut self,
        link: LinkId,
        call: &K,
        outbound: bool,
        events: &mut Vec<LinkEvent>,
    ) -> Option<PeerId> {
        self.tick += 1;
        if let Some(e) = self.by_call.get_mut(call) {
            e.last_heard = self.tick;
            e.pinned |= outbound;
            return Some(e.peer);
        }
        if self.by_call.len() >= self.max {
            let oldest = self
                .by_call
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| e.last_heard)
                .map(|(c, e)| (c.clone(), e.peer))?;
            let (old, peer) = oldest;
            self.by_call.remove(&old);
            self.by_peer.remove(&peer);
            events.push(LinkEvent::PeerDown {
                peer,
                reason: format!("{old} not heard for a while (station table full)"),
            });
        }
        let peer = self.ids.next();
        self.by_call.insert(
            call.clone(),
            Entry {
                peer,
                last_heard: self.tick,
                pinned: outbound,
            },
        );
        self.by_peer.insert(peer, call.clone());
        events.push(LinkEvent::PeerUp {
            link,
            peer,
            remote: call.to_string(),
            outbound,
        });
        Some(peer)
    }

    /// Whether `call` is in the table.
    pub fn contains(&self, call: &K) -> bool {
        self.by_call.contains_key(call)
    }

    /// The callsign of `peer`.
    pub fn call(&self, peer: PeerId) -> Option<&K> {
        self.by_peer.get(&peer)
    }

    /// Forget `peer`; returns its callsign if it was known.
    pub fn remove(&mut self, peer: PeerId) -> Option<K> {
        let call = self.by_peer.remove(&peer)?;
        self.by_call.remove(&call);
        Some(call)
    }

    /// Forget every station (the channel is gone); returns their `PeerDown`s.
    pub fn forget_all(&mut self, reason: &str) -> Vec<LinkEvent> {
        self.by_call.clear();
        self.by_peer
            .drain()
            .map(|(peer, _)| LinkEvent::PeerDown {
                peer,
                reason: reason.to_string(),
            })
            .collect()
    }

    /// Stations in the table.
    pub fn len(&self) -> usize {
        self.by_call.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_call.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups_downs(evs: &[LinkEvent]) -> (usize, usize) {
        let up = evs
            .iter()
            .filter(|e| matches!(e, LinkEvent::PeerUp { .. }))
            .count();
        let down = evs
            .iter()
            .filter(|e| matches!(e, LinkEvent::PeerDown { .. }))
            .count();
        (up, down)
    }

    #[test]
    fn full_table_evicts_the_least_recently_heard_but_never_a_pinned_station() {
        let mut t: Stations<String> = Stations::new(3, PeerIds::default());
        let mut evs = Vec::new();
        let pinned = t.heard(1, &"P1N".into(), true, &mut evs).unwrap();
        let a = t.heard(1, &"A1A".into(), false, &mut evs).unwrap();
        t.heard(1, &"B1B".into(), false, &mut evs).unwrap();
        assert_eq!(ups_downs(&evs), (3, 0));
        // A is heard again, so B is now the least recently heard unpinned station.
        assert_eq!(t.heard(1, &"A1A".into(), false, &mut evs), Some(a));
        evs.clear();
        t.heard(1, &"C1C".into(), false, &mut evs).unwrap();
        assert_eq!(ups_downs(&evs), (1, 1));
        assert!(!t.contains(&"B1B".into()) && t.contains(&"P1N".into()));
        assert_eq!(t.len(), 3);
        assert_eq!(t.call(pinned).map(String::as_str), Some("P1N"));
        assert_eq!(t.remove(a).as_deref(), Some("A1A"));
        assert!(t.call(a).is_none());
        // Full of pinned stations: a newcomer is refused.
        let mut all: Stations<String> = Stations::new(1, PeerIds::default());
        all.heard(1, &"P1N".into(), true, &mut evs).unwrap();
        assert!(all.heard(1, &"X1X".into(), false, &mut evs).is_none());
        assert_eq!(t.forget_all("gone").len(), 2);
        assert!(t.is_empty());
    }
}
