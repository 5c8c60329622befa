//! The node's input and output: frames from the links (packets on packet links,
//! envelopes on stream links) and the message dispatcher; the radio turn (beacons,
//! NACKs, turn-taking, pacing); encoding and routing what is sent.

use super::{
    auth, outbox, packet, Dest, Node, Priority, Transmit, BEACON_INTERVAL_MS, DISCOVERY_FAST_TRIES,
    DISCOVERY_FIRST_MS, DISCOVERY_INTERVAL_MS, EARLY_BYTES, KNOWN_CAP, MAX_BLOCKS_PER_GETDATA,
    MAX_QUEUED_TRANSMITS, SLOTTED_QUICK_TRIES,
};
use crate::chain::Hash;
use crate::net::{LinkCaps, LinkId, PeerId};
use crate::wire::envelope::{self, Envelope, WireError};
use crate::wire::frag;
use crate::wire::message::{features, limits, InvKind, Message, RejectCode};
use tracing::{debug, warn};

impl Node {
    /// What a link delivered from `peer`: a whole envelope on stream links, one
    /// `wire::frag` packet on packet links.
    pub fn handle_frame(&mut self, now: u64, peer: PeerId, bytes: &[u8]) {
        self.now = now;
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.closing {
            return;
        }
        let link = p.link;
        // On a stream link the frame is a whole envelope: read it first, because what
        // is part of a sync is not charged to the rate limits (see `sync_traffic`). A
        // packet is a fragment and is charged unread; on packet links the limits are
        // four times the channel's bit rate, which no sync reaches.
        let stream = (!self.packet_links.contains_key(&link)).then(|| envelope::decode(bytes));
        let free = matches!(&stream, Some(Ok(env)) if self.sync_traffic(peer, env));
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_recv = now;
        p.stats.bytes_in += bytes.len() as u64;
        if !free && (!p.msg_bucket.take(now, 1) || !p.byte_bucket.take(now, bytes.len() as u64)) {
            // Dropped unread: a flood costs the flooder, not us.
            self.misbehave(
                peer,
                RejectCode::RateLimited,
                "flooding: over the message or byte rate limit".into(),
                None,
            );
            self.pump(now);
            return;
        }
        match stream {
            Some(env) => self.handle_decoded(now, peer, bytes, env),
            None => self.handle_packet(now, peer, link, bytes),
        }
        self.pump(now);
    }

    /// Is this envelope from `peer` part of a sync rather than traffic the peer chose to
    /// send: an answer to a request of ours that is still open, an ack of our pushes, or a
    /// request for blocks that we hold and it lacks (as far as we know)? A sync at any
    /// speed carries one of each per block, so charging them to the peer's message limit
    /// made every fast sync a "flood" on both sides (issue 14). Anything else is charged: unasked blocks,
    /// headers and transactions, repeated requests for what we already sent it, requests
    /// for what we lack, and every other message.
    fn sync_traffic(&self, peer: PeerId, env: &Envelope) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        if env.network != self.network || p.hello.is_none() {
            return false;
        }
        let block = |h: &Hash| self.in_flight.block_from(h, peer);
        let tx = |h: &Hash| self.in_flight.tx_from(h, peer);
        match &env.message {
            Message::Block(b) => block(&b.hash()),
            Message::CompactBlock(c) => block(&c.header.hash()),
            Message::Tx(t) => tx(&t.id()),
            Message::NotFound(items) => {
                !items.is_empty()
                    && items.iter().all(|i| match i.kind {
                        InvKind::Tx => tx(&i.hash),
                        _ => block(&i.hash),
                    })
            }
            Message::Headers(_) => p.headers_asked_at.is_some(),
            Message::Pong(n) => p.ping.is_some_and(|(nonce, _)| nonce == *n),
            Message::Ack(ids) => self.acks_in_flight(peer, ids),
            Message::GetData(items) => {
                !items.is_empty()
                    && items.len() <= MAX_BLOCKS_PER_GETDATA
                    && items.iter().all(|i| {
                        i.kind != InvKind::Tx
                            && !p.known.contains(&i.hash)
                            && self.chain.has_block(&i.hash)
                    })
            }
            _ => false,
        }
    }

    fn handle_packet(&mut self, now: u64, peer: PeerId, link: LinkId, bytes: &[u8]) {
        let rto = self.peers.get(&peer).map_or(0, |p| p.rtt.rto());
        let Some(l) = self.packet_links.get_mut(&link) else {
            return;
        };
        let over = l.heard(now, bytes);
        // The peer is talking: whatever we asked of it may be on its way, so give the
        // requests time for the rest of its burst rather than declaring them lost.
        let extend = now + rto + 2 * l.airtime_ms(l.caps.mtu);
        for r in self.in_flight.values_mut() {
            if r.peer == peer && r.deadline < extend {
                r.deadline = extend;
            }
        }
        let mut over_repaired = None;
        let parsed = match frag::parse(bytes) {
            Ok(frag::Packet::Nack(nack)) => {
                match l.repair(now, peer, &nack) {
                    packet::Repair::Done => {}
                    packet::Repair::NotHeld => debug!(
                        peer,
                        transfer = nack.transfer_id,
                        "nack for a transfer no longer held"
                    ),
                    packet::Repair::OverBudget => over_repaired = Some(nack.transfer_id),
                }
                Ok(None)
            }
            Ok(frag::Packet::Whole(_)) | Ok(frag::Packet::Fragment(_)) => {
                l.reasm.insert(now, peer, bytes)
            }
            // Coded broadcast transfers (node/fountain.rs).
            Err(frag::FragError::UnknownTag(_)) => l.coded(now, peer, bytes),
            Err(e) => Err(e),
        };
        if let Some(more) = over {
            // Its burst is over, so what is missing of its transfers was lost: ask in the
            // turn we are about to take, not after a stall timer.
            for (tid, nack) in l.nacks_after_over(now, peer, more) {
                debug!(
                    peer,
                    transfer = tid,
                    "asking for fragments lost in its burst"
                );
                l.queue_nack(now, peer, tid, nack);
            }
        }
        if let Some(tid) = over_repaired {
            self.misbehave(
                peer,
                RejectCode::RateLimited,
                format!(
                    "NACKs for transfer {tid} beyond {}x its size",
                    packet::REPAIR_FACTOR
                ),
                None,
            );
            return;
        }
        match parsed {
            Ok(Some(envelope)) => self.handle_envelope(now, peer, &envelope),
            Ok(None) => {}
            Err(e) => self.misbehave(
                peer,
                RejectCode::Malformed,
                format!("bad packet: {e}"),
                None,
            ),
        }
    }

    pub(super) fn handle_envelope(&mut self, now: u64, peer: PeerId, bytes: &[u8]) {
        self.handle_decoded(now, peer, bytes, envelope::decode(bytes));
    }

    /// An envelope `bytes` from `peer`, decoded as `env`.
    fn handle_decoded(
        &mut self,
        now: u64,
        peer: PeerId,
        bytes: &[u8],
        env: Result<Envelope, WireError>,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stats.msgs_in += 1;
        }
        let env = match env {
            Ok(env) => env,
            Err(e) => {
                let code = match e {
                    WireError::UnsupportedVersion(_) => RejectCode::Version,
                    _ => RejectCode::Malformed,
                };
                self.misbehave(peer, code, format!("undecodable message: {e}"), None);
                return;
            }
        };
        if env.network != self.network {
            self.misbehave(
                peer,
                RejectCode::WrongNetwork,
                format!(
                    "wrong network: peer speaks network {}, this node is {} ({})",
                    hex::encode(env.network),
                    self.chain.params().name,
                    hex::encode(self.network)
                ),
                None,
            );
            return;
        }
        if !self.tag_checked(peer, bytes, &env) {
            return;
        }
        let msg_id = env.msg_id;
        let msg = env.message;
        let beacon = matches!(&msg, Message::Hello(h) if h.features & features::BEACON != 0);
        if !beacon {
            if let Some(p) = self.peers.get_mut(&peer) {
                // Something meant for us: it holds our session (see `on_hello`).
                p.answered = true;
            }
        }
        self.note_heard(peer, &msg);
        // Outbox: proofs of delivery, and a repeated push acked from the seen-set.
        let pushed = match self.outbox_inspect(now, peer, msg_id, &msg) {
            outbox::Pushed::Done => return,
            p => p,
        };
        let ready = self.peers.get(&peer).is_some_and(|p| p.hello.is_some());
        match msg {
            Message::Hello(h) => self.on_hello(now, peer, h),
            Message::Auth(a) => self.on_auth(now, peer, a),
            _ if !ready && self.peer_caps(peer).is_some_and(|c| c.broadcast) => {
                // On a shared channel this is a station that greeted us before we
                // restarted, or whose Hello we lost: not an offence. Ask it for a new
                // session (at most once per handshake timeout); it greets us back.
                let name = msg.name();
                debug!(
                    peer,
                    "'{name}' from a station we have no session with; asking for one"
                );
                let again = self.peers.get(&peer).is_some_and(|p| {
                    p.new_session_at
                        .is_none_or(|t| now.saturating_sub(t) > 2 * p.rtt.rto())
                });
                if let Some(p) = self.peers.get_mut(&peer) {
                    // Kept until its Hello comes: blocks and transactions prove themselves,
                    // and a lost greeting should not cost the whole burst that followed.
                    if p.early_bytes + bytes.len() <= EARLY_BYTES {
                        p.early_bytes += bytes.len();
                        p.early.push(bytes.to_vec());
                    }
                }
                // We heard its greeting or its proof and lost the rest: our session is
                // half made, not gone. A plain greeting of ours (no proof with it) makes
                // it send its Hello again; a new session would throw away what it holds
                // of ours, transfers half received included.
                let half_made = self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.pending_hello.is_some() || p.early_auth.is_some());
                if again {
                    let nonce = self.peers.get(&peer).map_or(0, |p| p.hello_nonce);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.new_session_at = Some(now);
                        // This greeting is the one we owed it.
                        p.hello_due = false;
                        p.held_nonce = None;
                    }
                    let mut hello = self.hello(nonce);
                    if !half_made {
                        hello.features |= features::NEW_SESSION;
                    }
                    self.send(peer, Message::Hello(hello));
                }
            }
            _ if !ready => {
                let name = msg.name();
                self.misbehave(
                    peer,
                    RejectCode::Protocol,
                    format!("'{name}' before the handshake"),
                    None,
                );
            }
            Message::Ping(n) => self.send(peer, Message::Pong(n)),
            Message::Pong(n) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.ping.is_some_and(|(nonce, _)| nonce == n) {
                        p.ping = None;
                    }
                }
            }
            Message::Inv(items) => self.on_inv(now, peer, items),
            Message::GetData(items) => {
                self.asked(now, peer);
                self.on_getdata(peer, items)
            }
            Message::GetHeaders(gh) => {
                self.asked(now, peer);
                let max = (gh.max as usize).min(limits::MAX_HEADERS);
                let headers = self.chain.headers_after(&gh.locator, gh.stop, max);
                self.send(peer, Message::Headers(headers));
            }
            Message::Headers(headers) => self.on_headers(now, peer, headers),
            Message::Block(block) => {
                self.avg_block_bytes = (self.avg_block_bytes * 7 + bytes.len() as u64) / 8;
                self.block_arrived(now, peer, block);
            }
            Message::CompactBlock(c) => self.on_compact(now, peer, c),
            Message::GetBlockTxn(g) => self.on_getblocktxn(peer, g),
            Message::BlockTxn(b) => self.on_blocktxn(now, peer, b),
            Message::Tx(tx) => self.on_tx(now, peer, tx),
            Message::NotFound(items) => {
                for it in items {
                    if it.kind != InvKind::Tx {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            if p.lacks.len() >= KNOWN_CAP {
                                p.lacks.clear();
                            }
                            p.lacks.insert(it.hash);
                        }
                    }
                    self.in_flight
                        .not_found(peer, &it.hash, it.kind == InvKind::Tx);
                }
            }
            Message::Reject(r) => {
                let remote = self.remote(peer);
                warn!(peer, %remote, code = ?r.code, about = ?r.about, "peer rejected: {}", r.reason);
            }
            Message::Ack(ids) => self.outbox_on_ack(now, peer, ids),
            Message::GetAddr => self.on_getaddr(now, peer),
            Message::Addr(v) => self.on_addr(now, peer, v),
        }
        self.outbox_after(now, peer, pushed);
    }

    /// Beacons, NACKs for stalled transfers, expiry of partial transfers.
    pub(super) fn packet_timers(&mut self, now: u64) {
        let links: Vec<LinkId> = self.packet_links.keys().copied().collect();
        for link in links {
            let beacon_due = self
                .packet_links
                .get(&link)
                .is_some_and(|l| l.caps.broadcast && now >= l.next_beacon);
            // A greeting or proof we owe a station here says all a beacon would, to the
            // one that is listening: the beacon waits (on JS8 it is five frames). So it
            // does while a station we greeted has yet to prove itself (`proof_retries`
            // greets it again if our greeting was lost).
            // Nor does it join a greeting or beacon of ours still queued (on a slow
            // channel the next beacon comes due before the last has aired).
            let greeting = self.peers.values().any(|p| {
                p.link == link
                    && (p.hello_due
                        || p.auth_due
                        || p.greeting_unanswered()
                        || (p.pending_hello.is_some() && p.hello.is_none() && !p.closing))
            }) || self
                .packet_links
                .get(&link)
                .is_some_and(|l| l.holding(now) || l.hello_queued_any());
            if beacon_due && greeting {
                if let Some(l) = self.packet_links.get_mut(&link) {
                    l.next_beacon = now + l.airtime_ms(l.caps.mtu).max(1_000);
                }
            } else if beacon_due {
                let nonce = self.nonce();
                self.beacon_nonces.push_back(nonce);
                if self.beacon_nonces.len() > 8 {
                    self.beacon_nonces.pop_front();
                }
                let mut hello = self.hello(nonce);
                hello.features |= features::BEACON;
                let bytes = self.encode(&Message::Hello(hello));
                let jitter = self.rng.below(1_000_000);
                // Until some station answers, beacon after 5 s, 10 s, 20 s... up to every
                // minute (two stations that start together may collide, and nobody should
                // wait long to be found); then every five minutes. Each with up to a quarter
                // of random jitter, and never more than ~2 % of the channel.
                let alone = !self.peers.values().any(|p| p.link == link && p.ready());
                if let Some(l) = self.packet_links.get_mut(&link) {
                    let air = l.airtime_ms(bytes.len());
                    let slotted = l.slotted();
                    let quick = alone && slotted && l.alone_beacons < SLOTTED_QUICK_TRIES;
                    let interval = if quick {
                        // Without carrier sense two stations started together beacon into
                        // each other, both deaf. Try again right after this beacon, in a
                        // random one of a few slots (a window doubled each time): the one
                        // that goes first is heard, and the other answers it.
                        let n = l.alone_beacons;
                        l.alone_beacons += 1;
                        let slots = packet::CONTENTION_SLOTS << (n + 1);
                        air + l.caps.slot_ms * (1 + jitter % slots)
                    } else if alone && l.alone_beacons < DISCOVERY_FAST_TRIES {
                        // The first few also on a slow channel (JS8): a collision of the
                        // first beacons must not cost the 2 % rule's hour.
                        let n = l.alone_beacons;
                        l.alone_beacons += 1;
                        (DISCOVERY_FIRST_MS << n)
                            .min(DISCOVERY_INTERVAL_MS)
                            .max(3 * air)
                    } else if alone {
                        DISCOVERY_INTERVAL_MS.max(air * 50)
                    } else {
                        l.alone_beacons = 0;
                        BEACON_INTERVAL_MS.max(air * 50)
                    };
                    // Without carrier sense (JS8Call) two beacons overlap unless they start
                    // a whole beacon apart: spread over a few beacon lengths, or stations
                    // that collided once stay in step.
                    let spread = if quick {
                        0
                    } else if alone && slotted {
                        (interval / 4).max(3 * air)
                    } else {
                        interval / 4
                    };
                    let jitter = spread * jitter / 1_000_000;
                    l.next_beacon = now + interval + jitter;
                    l.note_beacon(nonce);
                    l.enqueue(now, Dest::Broadcast(link), &bytes, Priority::Control);
                }
            }
            let Some(l) = self.packet_links.get_mut(&link) else {
                continue;
            };
            l.reasm.expire(now);
            let stall = l.stall_ms();
            for (peer, tid) in l.reasm.stalled(now, stall) {
                if l.receiving_from(now, peer, stall) || l.quiet_for(now) < stall {
                    // Its burst goes on with other transfers, or the channel (our own
                    // burst included) was busy a moment ago and the peer may be about to
                    // answer: what this one lacks is asked for at its OVER
                    // (`nacks_after_over`). A NACK now waits in our TNC
                    // behind its carrier, and a second one follows at the OVER: the sender
                    // would repair the same fragments twice.
                    continue;
                }
                l.reasm.touch(peer, tid, now);
                if !l.may_nack(now, peer, tid) || !l.nack_round(peer, tid) {
                    continue;
                }
                if let Some(nack) = l.reasm.nack(peer, tid) {
                    debug!(peer, transfer = tid, "asking for missing fragments");
                    l.queue_nack(now, peer, tid, nack);
                }
            }
        }
    }

    /// Take our turn on packet links where it is due, then move paced packets to the
    /// transmit queue.
    pub(super) fn pump(&mut self, now: u64) {
        for (&id, l) in self.packet_links.iter_mut() {
            let stations = self
                .peers
                .values()
                .filter(|p| p.link == id && p.ready())
                .count();
            l.shared = l.caps.broadcast && stations > 1;
        }
        let free: Vec<(LinkId, bool)> = self
            .packet_links
            .iter()
            .filter(|(_, l)| !l.holding(now))
            .map(|(&id, l)| (id, l.turn_due))
            .collect();
        let mut turn = false;
        for (link, due) in free {
            turn |= due;
            self.take_turn(now, link, due);
        }
        if turn {
            // Blocks wanted from peers whose burst just ended.
            self.request_blocks(now);
        }
        let mut out = Vec::new();
        for l in self.packet_links.values_mut() {
            l.release(now, &mut out);
        }
        for (to, bytes) in out {
            self.transmits.push_back(Transmit { to, bytes });
        }
    }

    /// Our turn on a packet link whose channel is free: the greetings we owe, and after
    /// a burst we heard, the acks and header requests held back while it was on the air.
    /// They all leave in one key-up, with whatever else this turn sends.
    fn take_turn(&mut self, now: u64, link: LinkId, after_burst: bool) {
        let more = self.packet_links.get_mut(&link).is_some_and(|l| {
            l.turn_due = false;
            l.heard_more
        });
        // Our beacon waiting in the TNC behind the burst we just heard (see below).
        let behind = self
            .packet_links
            .get(&link)
            .and_then(|l| l.beacon_behind())
            .filter(|_| after_burst);
        let on_link: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link == link && !p.closing)
            .map(|(&id, _)| id)
            .collect();
        for id in on_link {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if after_burst && !more && std::mem::take(&mut p.greeted_unproven) {
                // Its burst ended (with nothing more to come) after a greeting and no
                // proof: it lacks our Hello (our session may be ready: it lost our
                // greeting and kept our proof).
                p.hello_due = true;
            }
            let queued = self
                .packet_links
                .get(&link)
                .is_some_and(|l| l.hello_queued(id));
            if let Some(beacon) = behind.filter(|_| p.hello_due && !queued) {
                // Our beacon waits in the TNC behind the burst we just heard, and airs
                // first: it greets the station, and our proof names its nonce.
                p.hello_due = false;
                p.held_nonce = Some(beacon);
            }
            if std::mem::take(&mut p.hello_due) && !queued {
                // (One still queued says the same: the nonce is the session's.)
                let nonce = p.hello_nonce;
                // They will hold this greeting: our proof names its nonce.
                p.held_nonce = None;
                if let Some(l) = self.packet_links.get_mut(&link) {
                    l.drop_queued_beacon();
                }
                let hello = self.hello(nonce);
                self.send(id, Message::Hello(hello));
            }
            let owe = self
                .peers
                .get_mut(&id)
                .is_some_and(|p| std::mem::take(&mut p.auth_due));
            if owe {
                if let Some(a) = self.proof_for(id) {
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.proof_at = now;
                    }
                    self.send(id, Message::Auth(a));
                }
            }
            if !after_burst {
                continue;
            }
            self.flush_acks(id);
            let best = self.chain.best_header().work;
            let want = self
                .peers
                .get_mut(&id)
                .is_some_and(|p| std::mem::take(&mut p.want_headers) && p.best_work > best);
            if want {
                self.ask_headers(now, id, None);
            }
        }
    }

    /// Is the channel of `peer`'s link busy with another station's burst (half duplex)?
    pub(super) fn link_holding(&self, peer: PeerId, now: u64) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| self.packet_links.get(&p.link))
            .is_some_and(|l| l.holding(now))
    }

    /// Air time before something sent to `peer` now would be on the air.
    pub(super) fn link_air_ahead(&self, peer: PeerId, now: u64) -> u64 {
        self.peers
            .get(&peer)
            .and_then(|p| self.packet_links.get(&p.link))
            .map_or(0, |l| l.air_ahead(now))
    }

    fn note_heard(&mut self, peer: PeerId, msg: &Message) {
        let Some(link) = self.peers.get(&peer).map(|p| p.link) else {
            return;
        };
        if !self.links.get(&link).is_some_and(|c| c.broadcast) {
            return;
        }
        let hashes: Vec<Hash> = match msg {
            Message::Tx(tx) => vec![tx.id()],
            Message::Block(b) => vec![b.hash()],
            Message::Headers(hs) if hs.len() == 1 => vec![hs[0].hash()],
            Message::Inv(items) => items.iter().map(|i| i.hash).collect(),
            _ => return,
        };
        for h in hashes {
            if self.heard_on.insert(h, link).is_none() {
                self.heard_order.push_back(h);
                if self.heard_order.len() > KNOWN_CAP {
                    if let Some(old) = self.heard_order.pop_front() {
                        self.heard_on.remove(&old);
                    }
                }
            }
        }
    }

    /// Was `hash` first heard on the broadcast link this peer is on?
    pub(super) fn heard_where_peer_is(&self, peer: PeerId, hash: &Hash) -> bool {
        let link = self.peers.get(&peer).map(|p| p.link);
        link.is_some() && self.heard_on.get(hash).copied() == link
    }

    pub(super) fn peer_caps(&self, peer: PeerId) -> Option<&LinkCaps> {
        self.peers.get(&peer).and_then(|p| self.links.get(&p.link))
    }

    pub(super) fn send(&mut self, peer: PeerId, msg: Message) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            // The driver is not draining: shed the peer rather than grow without bound.
            self.disconnect(peer, "output queue overflow".into());
            return;
        }
        let bytes = self.encode(&msg);
        self.route(peer, bytes, &msg);
    }

    /// Hand an encoded envelope to the peer's link: straight out on stream links, through
    /// the packet layer (fragmented, paced) on packet links.
    pub(super) fn route(&mut self, peer: PeerId, bytes: Vec<u8>, msg: &Message) {
        let bytes = if is_handshake(msg) {
            bytes
        } else {
            self.seal(peer, bytes)
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.stats.bytes_out += bytes.len() as u64;
        p.stats.msgs_out += 1;
        p.last_send = self.now;
        let link = p.link;
        if let Some(l) = self.packet_links.get_mut(&link) {
            let prio = match msg {
                Message::Hello(_) => Priority::Greeting,
                Message::Block(_) | Message::Headers(_) | Message::Tx(_) => Priority::Bulk,
                _ => Priority::Control,
            };
            let now = self.now;
            if !l.enqueue(now, Dest::Peer(peer), &bytes, prio) {
                warn!(peer, link, "radio queue full; {} not sent", msg.name());
            }
        } else {
            self.transmits.push_back(Transmit {
                to: Dest::Peer(peer),
                bytes,
            });
        }
    }

    /// The key for session tags with `peer` and its id, once a `Hello` of its is held
    /// (its proven one, or the one waiting for its proof).
    fn tag_key(&mut self, peer: PeerId) -> Option<([u8; 32], [u8; 32])> {
        let p = self.peers.get(&peer)?;
        let id = p.hello.as_ref().or(p.pending_hello.as_ref())?.node_id;
        if let Some((made_for, key)) = p.tag_key {
            if made_for == id {
                return Some((id, key));
            }
        }
        let key = auth::pair_key(&self.cfg.node_key, &id, self.network)?;
        self.peers.get_mut(&peer)?.tag_key = Some((id, key));
        Some((id, key))
    }

    /// The untagged envelope `bytes` with a session tag for `peer` (unchanged while we
    /// hold no `Hello` of its: only the handshake goes before that).
    fn seal(&mut self, peer: PeerId, bytes: Vec<u8>) -> Vec<u8> {
        let Some((id, key)) = self.tag_key(peer) else {
            return bytes;
        };
        let prefix = envelope::tag_prefix(&bytes);
        let t = auth::tag(&key, &self.node_id(), &id, &prefix);
        envelope::seal(prefix, &[t])
    }

    /// The untagged envelope `bytes`, for every station with a session on broadcast
    /// link `link`, with a tag for each whose `Hello` we hold (proven ones first, at
    /// most `MAX_TAGS`; the rest take what they hear as from a station that does not
    /// know them yet).
    pub(super) fn seal_broadcast(&mut self, link: LinkId, bytes: Vec<u8>) -> Vec<u8> {
        let mut stations: Vec<(bool, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link == link && !p.closing)
            .map(|(&id, p)| (p.hello.is_none(), id))
            .collect();
        stations.sort_unstable();
        let prefix = envelope::tag_prefix(&bytes);
        let ours = self.node_id();
        let mut tags = Vec::new();
        for (_, peer) in stations {
            if tags.len() == envelope::MAX_TAGS {
                break;
            }
            if let Some((id, key)) = self.tag_key(peer) {
                tags.push(auth::tag(&key, &ours, &id, &prefix));
            }
        }
        if tags.is_empty() {
            return bytes;
        }
        envelope::seal(prefix, &tags)
    }

    /// Is a message from a peer whose id is proven (`Some(id)`) what it claims to be? A
    /// handshake message needs no tag (it proves itself); anything else must carry one
    /// made with the key only that peer and we hold. Untagged: dropped, not counted
    /// against the peer (a broadcast handed over before it knew us can arrive after its
    /// proof). A tag that does not verify is counted: it is not the peer's.
    fn tag_checked(&mut self, peer: PeerId, bytes: &[u8], env: &Envelope) -> bool {
        if is_handshake(&env.message) {
            return true;
        }
        if self.peers.get(&peer).is_none_or(|p| p.hello.is_none()) {
            // Not proven yet: kept or refused by the handshake rules, and checked when
            // its proof comes (early messages are handled again then).
            return true;
        }
        let Some((id, key)) = self.tag_key(peer) else {
            return false;
        };
        if env.tags.is_empty() {
            debug!(
                peer,
                kind = env.message.name(),
                "message without a session tag dropped"
            );
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stats.untagged_dropped += 1;
            }
            return false;
        }
        let prefix = &bytes[..env.tagged_len.min(bytes.len())];
        let expected = auth::tag(&key, &id, &self.node_id(), prefix);
        if auth::has_tag(&env.tags, &expected) {
            return true;
        }
        if env.tags.len() > 1 {
            // A broadcast that names other stations but not us (it was made before the
            // sender held our Hello).
            debug!(
                peer,
                kind = env.message.name(),
                "broadcast without our session tag dropped"
            );
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stats.untagged_dropped += 1;
            }
            return false;
        }
        let name = env.message.name();
        self.misbehave(
            peer,
            RejectCode::Protocol,
            format!("'{name}' with a session tag that does not verify: not from the node that proved its id"),
            None,
        );
        false
    }

    /// Size of `msg` as an envelope (the id's varint width aside).
    pub(super) fn encode_len(&self, msg: &Message) -> usize {
        envelope::encode(self.network, self.next_msg_id, msg).len()
    }

    pub(super) fn encode(&mut self, msg: &Message) -> Vec<u8> {
        let id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        envelope::encode(self.network, id, msg)
    }
}

/// The handshake messages, which prove themselves and go without a session tag.
fn is_handshake(msg: &Message) -> bool {
    matches!(msg, Message::Hello(_) | Message::Auth(_))
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
