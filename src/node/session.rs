//! Peer sessions: opening and closing them, the handshake (`Hello` and the network-key
//! proof), per-link session limits and rate buckets, and refusing or dropping a peer
//! that breaks the rules.

use super::{auth, is_narrow, peers, rtt, truncate, Node, NodeEvent, Peer, PeerKey, PeerStats};
use crate::chain::Hash;
use crate::net::{LinkId, PeerId};
use crate::wire::message::{
    features, limits, Auth, Hello, InvItem, InvKind, Message, Reject, RejectCode, PROTOCOL_VERSION,
};
use std::collections::{HashSet, VecDeque};
use tracing::{debug, info, warn};

/// Nonces of a station's recent `Hello`s we accept a proof for (its beacons and its
/// greeting can cross ours on a shared channel).
const THEIR_NONCES: usize = 4;

impl Node {
    /// A peer session opened: we greet it first.
    pub fn peer_connected(
        &mut self,
        now: u64,
        peer: PeerId,
        link: LinkId,
        remote: String,
        outbound: bool,
    ) {
        self.now = now;
        if let Some(reason) = self.refused(now, peer, &remote) {
            // No Hello: a banned peer learns nothing about us.
            self.refuse(peer, reason);
            return;
        }
        if let Some(reason) = self.over_session_limits(peer, link, &remote) {
            self.refuse(peer, reason);
            return;
        }
        let (msg_bucket, byte_bucket) = self.buckets_for(link, now);
        let nonce = self.nonce();
        self.peers.insert(
            peer,
            Peer {
                link,
                remote,
                outbound,
                connected_at: now,
                hello_nonce: nonce,
                new_session_at: None,
                hello: None,
                pending_hello: None,
                their_nonces: VecDeque::new(),
                auth_due: false,
                held_nonce: None,
                early_auth: None,
                proof_at: now,
                proof_tries: 0,
                greeted_unproven: false,
                closing: false,
                best_height: 0,
                best_work: 0,
                tip: None,
                last_recv: now,
                last_send: now,
                ping: None,
                headers_asked_at: None,
                headers_max: limits::MAX_HEADERS as u16,
                known: Default::default(),
                inv_txs: Vec::new(),
                lacks: HashSet::new(),
                stats: PeerStats::default(),
                msg_bucket,
                byte_bucket,
                rtt: rtt::Rtt::default(),
                headers_deadline: 0,
                headers_timing: None,
                want_headers: false,
                hello_due: false,
                answered: false,
                pushed_at: None,
                asked_at: None,
                early: Vec::new(),
                early_bytes: 0,
                tag_key: None,
            },
        );
        if self.packet_links.contains_key(&link) {
            // A station heard on a radio channel: its frame follows, and maybe more of its
            // burst. Our greeting goes in our turn, with our tip as it is by then.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.hello_due = true;
            }
            if outbound && callsign_order(&self.cfg.callsign, &self.peers[&peer].remote).is_gt() {
                // A station named by the operator, not heard yet: it greets us too.
                if let Some(l) = self.packet_links.get_mut(&link) {
                    l.yield_first();
                }
            }
            return;
        }
        let hello = self.hello(nonce);
        self.send(peer, Message::Hello(hello));
        self.pump(now);
    }

    /// Refuse a session beyond the per-link or per-address limits.
    fn over_session_limits(&self, peer: PeerId, link: LinkId, remote: &str) -> Option<String> {
        let pol = &self.cfg.peers;
        let on_link = self.peers.values().filter(|p| p.link == link).count();
        if on_link >= pol.max_peers_per_link {
            warn!(peer, %remote, on_link, "refusing peer: link full");
            return Some(format!("too many peers on this link ({on_link})"));
        }
        let key = PeerKey::of(remote);
        let same = self
            .peers
            .values()
            .filter(|p| !p.closing && PeerKey::of(&p.remote) == key)
            .count();
        if same >= pol.max_sessions_per_key {
            warn!(peer, %remote, same, "refusing peer: too many sessions from one address");
            return Some(format!(
                "too many sessions from {} ({same})",
                key.as_string()
            ));
        }
        None
    }

    /// Rate limits for a new peer on `link`. On radio the channel's bit rate already
    /// bounds an honest station: four times that (a minute's burst) is a flood, with
    /// room left for a modem that runs faster than it reported.
    pub(super) fn buckets_for(&self, link: LinkId, now: u64) -> (peers::Bucket, peers::Bucket) {
        let pol = &self.cfg.peers;
        match self.links.get(&link) {
            Some(c) if c.bitrate_bps > 0 => {
                let bytes = (c.bitrate_bps / 8 * 4).max(64);
                let msgs = (bytes / 16).max(2);
                (
                    peers::Bucket::new(msgs, msgs * 60, now),
                    peers::Bucket::new(bytes, bytes * 60, now),
                )
            }
            _ => (
                peers::Bucket::new(pol.msgs_per_sec, pol.msgs_per_sec * 10, now),
                peers::Bucket::new(pol.bytes_per_sec, pol.bytes_per_sec * 10, now),
            ),
        }
    }

    /// A peer session closed.
    pub fn peer_disconnected(&mut self, now: u64, peer: PeerId) {
        self.now = now;
        if let Some(p) = self.peers.remove(&peer) {
            if let Some(l) = self.packet_links.get_mut(&p.link) {
                l.forget_peer(peer);
            }
            self.closed_traffic.entry(p.link).or_default().add(&p.stats);
        }
        self.outbox_peer_gone(peer);
        self.pex_gone(peer);
        self.in_flight.retain(|_, r| r.peer != peer);
        // Bodies it was fetching are re-requested from others on the next tick.
    }

    /// The link could not frame what `peer` sent (a bad length prefix, a broken KISS
    /// escape): the same as an undecodable message.
    pub fn peer_garbage(&mut self, now: u64, peer: PeerId, reason: String) {
        self.now = now;
        if self.peers.get(&peer).is_some_and(|p| !p.closing) {
            self.misbehave(peer, RejectCode::Malformed, reason, None);
        }
    }

    /// Our answer to a broadcast from `peer` waits a random moment (see
    /// `PacketLink::defer_answer`).
    pub(super) fn defer_answer(&mut self, peer: PeerId, now: u64) {
        let link = self.peers.get(&peer).map(|p| p.link);
        if let Some(l) = link.and_then(|l| self.packet_links.get_mut(&l)) {
            l.defer_answer(now);
        }
    }

    /// Does another station we have a session with share `peer`'s broadcast channel
    /// (so it heard what `peer` broadcast, as we did)?
    pub(super) fn heard_by_others(&self, peer: PeerId) -> bool {
        let Some(link) = self.peers.get(&peer).map(|p| p.link) else {
            return false;
        };
        self.links.get(&link).is_some_and(|c| c.broadcast)
            && self
                .peers
                .iter()
                .any(|(&id, p)| id != peer && p.link == link && p.ready())
    }

    pub(super) fn on_hello(&mut self, now: u64, peer: PeerId, h: Hello) {
        // A station banned by callsign is refused on every link, TCP included.
        if let Some(reason) = self.callsign_refused(now, peer, &h.callsign) {
            self.disconnect(peer, reason);
            return;
        }
        let on_broadcast = self
            .peers
            .get(&peer)
            .and_then(|p| self.links.get(&p.link))
            .is_some_and(|c| c.broadcast);
        if on_broadcast && self.peers.get(&peer).is_some_and(|p| p.hello.is_some()) {
            if h.features & features::NEW_SESSION != 0
                && h.network == self.network
                && h.node_id != self.node_id
            {
                // The station restarted (or lost our greeting): what we knew of its
                // session is stale. Start a new one and greet it back.
                info!(peer, callsign = %h.callsign, "station opened a new session");
                if let Some((link, remote, rtt, pushed_at)) = self
                    .peers
                    .get(&peer)
                    .map(|p| (p.link, p.remote.clone(), p.rtt.clone(), p.pushed_at))
                {
                    self.peer_disconnected(now, peer);
                    self.peer_connected(now, peer, link, remote, false);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        // The path is the same, and what we pushed it a moment ago it may
                        // well hold (kept until our greeting came): no second push yet.
                        p.rtt = rtt;
                        p.pushed_at = pushed_at;
                    }
                    if self.peers.get(&peer).is_some_and(|p| p.hello.is_none()) {
                        self.on_hello(now, peer, h);
                    }
                }
                return;
            }
            // A station's periodic beacon (or its greeting in its turn): news of its tip,
            // not a protocol error.
            if h.network == self.network && h.node_id != self.node_id {
                // Only its beacons since we greeted it, well after an answer was due: our
                // greeting was lost (a hidden station keyed up over it). Greet it again
                // in our turn; its beacons back off, and so do these.
                let rto = self.peers.get(&peer).map_or(0, |p| p.rtt.rto());
                let beacon = h.features & features::BEACON != 0;
                let mut owe = !beacon;
                if beacon {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        if !p.answered && now > p.connected_at + 2 * rto {
                            debug!(peer, "only beacons from a station we greeted: again");
                            p.hello_due = true;
                            owe = true;
                        }
                    }
                }
                if owe {
                    // Its greeting (or only beacons where an answer was due): our proof
                    // was lost, so it cannot finish its side. Prove again, answering this;
                    // and if no proof of its own follows in its burst, it lacks our Hello
                    // too (see `take_turn`).
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.greeted_unproven = !beacon;
                        if p.their_nonces.len() >= THEIR_NONCES {
                            p.their_nonces.pop_front();
                        }
                        p.their_nonces.push_back(h.nonce);
                    }
                    self.owe_proof(peer);
                }
                if beacon {
                    // Every station that heard the beacon may answer it: the first answer
                    // to a new station goes at once (the usual case, two stations), what
                    // follows a beacon from a known one at a random moment.
                    self.defer_answer(peer, now);
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.saw_tip(h.height, h.tip);
                    p.best_work = p.best_work.max(h.work);
                    p.learn(h.tip);
                }
                self.outbox_peer_has(now, peer, h.tip);
                if h.work > self.chain.best_header().work {
                    self.ask_headers(now, peer, None);
                }
                self.push_to_behind(now, peer, &h);
            }
            return;
        }
        let second = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.hello.is_some() || (!on_broadcast && p.pending_hello.is_some()));
        if second {
            self.misbehave(peer, RejectCode::Protocol, "second hello".into(), None);
            return;
        }
        if h.network != self.network {
            self.misbehave(
                peer,
                RejectCode::WrongNetwork,
                format!(
                    "wrong network in hello: {} (this node is {} {})",
                    hex::encode(h.network),
                    self.chain.params().name,
                    hex::encode(self.network)
                ),
                None,
            );
            return;
        }
        if h.version != PROTOCOL_VERSION {
            self.misbehave(
                peer,
                RejectCode::Version,
                format!(
                    "protocol version {} not supported (we speak {PROTOCOL_VERSION})",
                    h.version
                ),
                None,
            );
            return;
        }
        if self.peers.values().any(|p| p.hello_nonce == h.nonce) || h.node_id == self.node_id {
            self.reject_and_close(peer, RejectCode::Duplicate, "connected to ourselves".into());
            return;
        }
        if self.proven_elsewhere(peer, &h.node_id) {
            self.reject_and_close(
                peer,
                RejectCode::Duplicate,
                "already connected to this node".into(),
            );
            return;
        }
        if on_broadcast && h.features & features::BEACON != 0 {
            // Still only its beacons, well after our greeting went out: that was lost (a
            // hidden station keyed up over it). Greet it again, at a random moment, since
            // the stations that lost theirs the same way answer this beacon too.
            let rto = self.peers.get(&peer).map_or(0, |p| p.rtt.rto());
            let again = self.peers.get_mut(&peer).is_some_and(|p| {
                let lost = !p.answered
                    && !p.hello_due
                    && p.pending_hello.is_some()
                    && now > p.connected_at + 2 * rto;
                if lost {
                    p.hello_due = true;
                }
                lost
            });
            if again {
                debug!(peer, "only beacons from a station we greeted: again");
                self.defer_answer(peer, now);
            }
        }
        if on_broadcast && h.features & features::BEACON == 0 {
            // A greeting: unless its proof follows in the same burst (naming a Hello of
            // ours it holds), the station lacks our Hello (see `take_turn`).
            if let Some(p) = self.peers.get_mut(&peer) {
                p.greeted_unproven = true;
            }
        }
        // Held until the peer proves it holds the key of the id it claims; we prove ours
        // (at once, or in our turn on a packet link, after our greeting if one is due).
        let early = self.peers.get_mut(&peer).and_then(|p| {
            p.pending_hello = Some(h.clone());
            if p.their_nonces.len() >= THEIR_NONCES {
                p.their_nonces.pop_front();
            }
            p.their_nonces.push_back(h.nonce);
            p.early_auth.take()
        });
        self.owe_proof(peer);
        if let Some(a) = early {
            self.on_auth(now, peer, a);
        }
        // On a shared channel the blocks it lacks go with our proof (see
        // `push_to_behind`; once pushed, not again when the session opens).
        self.push_to_behind(now, peer, &h);
    }

    /// On a packet link, a station whose greeting we hold but whose proof has not come
    /// (it was lost, or keyed over by a hidden station) is greeted and proven to again,
    /// after twice the retransmission timeout, backing off. A station that finished its
    /// side answers a repeated greeting with its proof (see `on_hello`). So is a station
    /// we greeted and never heard from (a configured peer: both greetings collide when
    /// two stations come up together), `GREET_TRIES` times; then beacons take over.
    pub(super) fn proof_retries(&mut self, now: u64) {
        let mut due = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            let Some(l) = self.packet_links.get(&p.link) else {
                continue;
            };
            let waiting = (p.pending_hello.is_some() || p.greeting_unanswered())
                && p.hello.is_none()
                && !p.closing
                && !p.hello_due
                && !p.auth_due;
            if !waiting {
                continue;
            }
            if l.holding(now) || l.air_ahead(now) > 0 {
                // Our greeting is still queued or on the air, or theirs is coming: the
                // wait starts when the channel is ours and empty.
                p.proof_at = now;
                continue;
            }
            // Their answer: a greeting and a proof (about 250 bytes) on the air; from a
            // silent station, the first packet of any answer (we hold the channel while
            // we hear it).
            let answer = if p.pending_hello.is_some() {
                l.airtime_ms(250)
            } else {
                l.airtime_ms(l.caps.mtu) + 2 * l.caps.slot_ms
            };
            let wait = (2 * p.rtt.rto() + answer) << p.proof_tries.min(4);
            if now > p.proof_at + wait {
                debug!(remote = %p.remote, "no handshake proof yet: greeting again");
                p.hello_due = true;
                p.auth_due = true;
                p.proof_tries += 1;
                due.push(id);
            }
        }
        if !due.is_empty() {
            // At a random moment: a hidden station that lost its proof the same way
            // retries on the same schedule.
            for id in due {
                self.defer_answer(id, now);
            }
            self.pump(now);
        }
    }

    /// Is `node_id` already the proven identity of another open session? A claim alone
    /// (an unproven `Hello`) never blocks anyone: a squatter cannot finish its handshake.
    fn proven_elsewhere(&self, peer: PeerId, node_id: &[u8; 32]) -> bool {
        self.peers.iter().any(|(&id, p)| {
            id != peer && !p.closing && p.hello.as_ref().is_some_and(|o| o.node_id == *node_id)
        })
    }

    /// We owe `peer` our proof: now on a stream link, in our turn on a packet link.
    fn owe_proof(&mut self, peer: PeerId) {
        let on_packet = self
            .peers
            .get(&peer)
            .is_some_and(|p| self.packet_links.contains_key(&p.link));
        if on_packet {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.auth_due = true;
            }
        } else if let Some(a) = self.proof_for(peer) {
            self.send(peer, Message::Auth(a));
        }
    }

    /// Our proof for `peer`: it answers the newest of its nonces we hold, and names the
    /// nonce of our `Hello` that it holds (a beacon it answered, or our greeting).
    pub(super) fn proof_for(&self, peer: PeerId) -> Option<Auth> {
        let p = self.peers.get(&peer)?;
        let h = p.pending_hello.as_ref().or(p.hello.as_ref())?;
        let t = auth::Transcript {
            network: self.network,
            prover: self.node_id,
            verifier: h.node_id,
            seen: *p.their_nonces.back()?,
            nonce: p.held_nonce.unwrap_or(p.hello_nonce),
        };
        Some(auth::prove(
            &self.cfg.node_key,
            self.cfg.peers.network_key.as_ref(),
            &t,
        ))
    }

    /// The peer's handshake proof (see `auth`): with it, its `Hello` counts.
    pub(super) fn on_auth(&mut self, now: u64, peer: PeerId, a: Auth) {
        let on_broadcast = self.peer_caps(peer).is_some_and(|c| c.broadcast);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.hello.is_some() {
            // A second proof for a proven session (it answered a later beacon of ours,
            // or its greeting again): it holds our Hello.
            p.greeted_unproven = false;
            return;
        }
        let Some(h) = p.pending_hello.clone() else {
            if on_broadcast {
                // Its greeting is still being reassembled (or was lost): keep the proof.
                p.early_auth = Some(a);
                return;
            }
            self.misbehave(
                peer,
                RejectCode::Protocol,
                "handshake proof before hello".into(),
                None,
            );
            return;
        };
        let ours = a.seen == p.hello_nonce || self.beacon_nonces.contains(&a.seen);
        let theirs = p.their_nonces.contains(&a.nonce);
        if !(ours && theirs) {
            if on_broadcast {
                // A proof from an older session of ours (we restarted it, or our nonce
                // aged out): greet it again so it can answer this one.
                debug!(peer, "handshake proof for an older session; greeting again");
                p.hello_due = true;
                p.held_nonce = None;
                return;
            }
            self.misbehave(
                peer,
                RejectCode::Protocol,
                "handshake proof answers a nonce this session did not issue".into(),
                None,
            );
            return;
        }
        let t = auth::Transcript {
            network: self.network,
            prover: h.node_id,
            verifier: self.node_id,
            seen: a.seen,
            nonce: a.nonce,
        };
        if let Err(e) = auth::verify(self.cfg.peers.network_key.as_ref(), &t, &a) {
            self.misbehave(
                peer,
                RejectCode::Protocol,
                format!("handshake refused: {e}"),
                None,
            );
            return;
        }
        if self.proven_elsewhere(peer, &h.node_id) {
            self.reject_and_close(
                peer,
                RejectCode::Duplicate,
                "already connected to this node".into(),
            );
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            // It holds the Hello of ours it answered: a beacon will do for a greeting.
            p.greeted_unproven = false;
            p.held_nonce = Some(a.seen);
            p.hello_due = false;
            p.pending_hello = None;
        }
        self.finish_hello(now, peer, h);
    }

    /// The handshake is complete: the peer is ready.
    fn finish_hello(&mut self, now: u64, peer: PeerId, h: Hello) {
        let (remote, height) = {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            p.best_height = h.height;
            p.tip = Some(h.tip);
            p.best_work = h.work;
            p.learn(h.tip);
            let out = (p.remote.clone(), h.height);
            p.hello = Some(h.clone());
            out
        };
        info!(peer, %remote, callsign = %h.callsign, height, agent = %h.user_agent, "peer ready");
        let link = self.peers.get(&peer).map(|p| p.link);
        if let Some(l) = link.and_then(|l| self.packet_links.get_mut(&l)) {
            if l.caps.broadcast {
                // Found: discovery beacons give way to the slow ones (a queued discovery
                // beacon would only delay what the new session carries).
                l.drop_queued_beacon();
                let air = l.airtime_ms(l.caps.mtu);
                l.next_beacon = l
                    .next_beacon
                    .max(now + super::BEACON_INTERVAL_MS.max(air * 50));
            }
        }
        self.events.push_back(NodeEvent::PeerReady {
            peer,
            remote,
            callsign: h.callsign.clone(),
            height,
        });
        if h.work > self.chain.best_header().work {
            self.ask_headers(now, peer, None);
        }
        // Before the outbox: blocks pushed now come ahead of the tip the outbox offers,
        // so the peer holds them when it reads that offer and acks it at once.
        self.push_to_behind(now, peer, &h);
        self.outbox_peer_ready(now, peer);
        self.pex_ready(now, peer);
        // Offer what we hold for relay: a peer that was away may lack it. On a slow link
        // only the best-paying few (about 3 s of air): each id costs 33 bytes, and the
        // outbox delivers what this peer is owed anyway.
        let offer = match self.peer_caps(peer) {
            Some(c) if is_narrow(c) => 0,
            Some(c) if c.bitrate_bps > 0 => ((c.bitrate_bps / 8 * 3) / 33).clamp(4, 64) as usize,
            _ => limits::MAX_INV,
        };
        let items: Vec<InvItem> = self
            .chain
            .mempool_txs()
            .iter()
            .take(offer)
            .map(|tx| InvItem {
                kind: InvKind::Tx,
                hash: tx.id(),
            })
            .collect();
        if !items.is_empty() {
            if let Some(p) = self.peers.get_mut(&peer) {
                for it in &items {
                    p.learn(it.hash);
                }
            }
            self.send(peer, Message::Inv(items));
        }
        // What it said before we had its greeting (see `EARLY_BYTES`).
        let early = self
            .peers
            .get_mut(&peer)
            .map(|p| {
                p.early_bytes = 0;
                std::mem::take(&mut p.early)
            })
            .unwrap_or_default();
        for env in early {
            self.handle_envelope(now, peer, &env);
        }
    }

    /// Our handshake, as sent to a peer or broadcast as a beacon.
    pub(super) fn hello(&self, nonce: u64) -> Hello {
        let tip = self.chain.tip();
        Hello {
            version: PROTOCOL_VERSION,
            network: self.network,
            height: tip.height,
            tip: tip.hash,
            work: tip.work,
            node_id: self.node_id,
            callsign: self.cfg.callsign.clone(),
            features: features::FULL_BLOCKS | features::CODED,
            nonce,
            user_agent: self.cfg.user_agent.clone(),
        }
    }

    pub(super) fn remote(&self, peer: PeerId) -> String {
        self.peers
            .get(&peer)
            .map(|p| p.remote.clone())
            .unwrap_or_default()
    }

    fn reject_and_close(&mut self, peer: PeerId, code: RejectCode, reason: String) {
        self.send(
            peer,
            Message::Reject(Reject {
                code,
                reason: truncate(&reason, limits::MAX_REASON),
                about: None,
            }),
        );
        self.disconnect(peer, reason);
    }

    /// Refuse, report and disconnect a peer that broke the rules.
    pub(super) fn misbehave(
        &mut self,
        peer: PeerId,
        code: RejectCode,
        reason: String,
        about: Option<Hash>,
    ) {
        let remote = self.remote(peer);
        warn!(peer, %remote, "misbehaving peer: {reason}");
        self.send(
            peer,
            Message::Reject(Reject {
                code,
                reason: truncate(&reason, limits::MAX_REASON),
                about,
            }),
        );
        self.score_misbehaviour(&remote, code, &reason);
        *self
            .misbehaviour_counts
            .entry(reject_code_name(code))
            .or_default() += 1;
        self.events.push_back(NodeEvent::Misbehaviour {
            peer,
            remote,
            reason: reason.clone(),
        });
        self.disconnect(peer, reason);
    }

    pub(super) fn disconnect(&mut self, peer: PeerId, reason: String) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.closing {
                return;
            }
            p.closing = true;
        }
        self.in_flight.retain(|_, r| r.peer != peer);
        self.events
            .push_back(NodeEvent::Disconnect { peer, reason });
    }
}

/// Which of two stations yields on a channel they meet on: by base callsign (the part
/// before the SSID, which not every mode carries: JS8Call names stations without it),
/// then by the whole, so both stations reach opposite answers.
fn callsign_order(ours: &str, theirs: &str) -> std::cmp::Ordering {
    let base = |c: &str| c.split('-').next().unwrap_or(c).to_ascii_uppercase();
    base(ours)
        .cmp(&base(theirs))
        .then_with(|| ours.to_ascii_uppercase().cmp(&theirs.to_ascii_uppercase()))
}

/// A reject code as `/metrics` labels it.
fn reject_code_name(code: RejectCode) -> &'static str {
    match code {
        RejectCode::Malformed => "malformed",
        RejectCode::Invalid => "invalid",
        RejectCode::WrongNetwork => "wrong_network",
        RejectCode::Version => "version",
        RejectCode::Protocol => "protocol",
        RejectCode::Duplicate => "duplicate",
        RejectCode::RateLimited => "rate_limited",
    }
}
