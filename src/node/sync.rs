//! Headers-first sync: asking a peer with more work for headers, checking them,
//! fetching block bodies in a bounded window per peer with deadlines from the measured
//! round trip, and pushing blocks unasked to a radio peer that is behind.

use super::{
    is_narrow, packet, Node, Request, BLOCK_TIMEOUT_MS, BLOCK_WINDOW, HEADERS_TIMEOUT_MS,
    PUSH_AIR_MS, PUSH_HEADERS,
};
use crate::chain::{BlockOutcome, ChainError, Hash};
use crate::net::PeerId;
use crate::wire::message::{limits, GetHeaders, Hello, InvItem, InvKind, Message, RejectCode};
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::{debug, warn};

impl Node {
    /// `peer` is behind us on our own chain and its link has a bit rate: send what it
    /// would ask for, unasked, because on radio every round trip costs seconds of air.
    /// On half duplex the next blocks go whole in this turn (about `PUSH_AIR_MS` of
    /// air), then the headers of the ones after; elsewhere the headers only. Not again
    /// while an earlier push or the peer's own requests may still be under way.
    pub(super) fn push_to_behind(&mut self, now: u64, peer: PeerId, h: &Hello) {
        let Some(caps) = self.peer_caps(peer).cloned() else {
            return;
        };
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let tip = self.chain.tip();
        let quiet = 2 * p.rtt.rto() + PUSH_AIR_MS;
        // On a shared half-duplex channel the push goes in the turn that answers its
        // greeting, with our proof, before its own proof has come: blocks are public
        // (every station on the channel hears them anyway, and the peer checks their
        // work), and waiting for its proof costs a round trip of both turns. A block pushed
        // then delivers an outbox item only once the session opens with that proof (see
        // `outbox_msg_id_for_block`).
        let unproven_ok =
            p.pending_hello.is_some() && caps.half_duplex && !caps.connection_oriented;
        if caps.bitrate_bps == 0
            || is_narrow(&caps)
            || !(p.ready() || unproven_ok)
            || h.work >= tip.work
            || !self.chain.is_on_main_chain(&h.tip)
            || p.pushed_at.is_some_and(|t| now < t + quiet)
            || p.asked_at.is_some_and(|t| now < t + quiet)
        {
            return;
        }
        let headers = self.chain.headers_after(&[h.tip], None, PUSH_HEADERS * 2);
        // What we pushed it in this session (or it told us of) is on its way: a Hello
        // that still shows the old tip comes from a station that has not connected those
        // blocks yet (its fragments are being repaired, or it holds them until our proof
        // comes). Pushing them again would air every block twice; what is really lost it
        // gets by repair, or asks for.
        let known = |hash: &Hash| p.known.contains(hash);
        if headers.iter().all(|hd| known(&hd.hash())) {
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pushed_at = Some(now);
        }
        let mut air = 0;
        let mut blocks = Vec::new();
        if caps.half_duplex && caps.blocks {
            for hd in &headers {
                let hash = hd.hash();
                if self.heard_where_peer_is(peer, &hash) {
                    // It heard the same broadcast we did.
                    return;
                }
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.known.contains(&hash))
                {
                    continue;
                }
                let Ok(Some(b)) = self.chain.block(&hash) else {
                    break;
                };
                let cost = packet::airtime_ms(&caps, b.encoded_len());
                if !blocks.is_empty() && air + cost > PUSH_AIR_MS {
                    break;
                }
                air += cost;
                blocks.push((hd.height, hash, b));
            }
        }
        // Where blocks remain beyond those pushed, the headers go first, those of the
        // pushed blocks included so that they connect (about 100 bytes each): when our
        // burst ends, the peer asks in one turn for every block it still lacks, not only
        // once the pushed ones have arrived.
        let rest: Vec<crate::chain::Header> = if headers.len() > blocks.len() {
            headers
                .into_iter()
                .take(blocks.len() + PUSH_HEADERS)
                .collect()
        } else {
            Vec::new()
        };
        debug!(
            peer,
            blocks = blocks.len(),
            headers = rest.len(),
            from = h.height,
            "peer is behind: pushing"
        );
        if !rest.is_empty() {
            if let Some(p) = self.peers.get_mut(&peer) {
                for hd in &rest {
                    p.learn(hd.hash());
                }
            }
            self.send(peer, Message::Headers(rest));
        }
        for (height, hash, b) in blocks {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.learn(hash);
                p.saw_tip(height, hash);
            }
            // Pushed under the outbox item's id where there is one: the peer's ack then
            // delivers the item (and proves the transactions below it).
            match self.outbox_msg_id_for_block(peer, hash) {
                Some(id) => self.send_as(peer, id, &Message::Block(b)),
                None => self.send(peer, Message::Block(b)),
            }
        }
    }

    pub(super) fn on_headers(
        &mut self,
        now: u64,
        peer: PeerId,
        headers: Vec<crate::chain::Header>,
    ) {
        let mut asked_for = false;
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.headers_asked_at.take().is_some() {
                asked_for = true;
                // A Headers after the deadline is more likely an announcement than the
                // answer: no sample from it.
                if let Some((sent, air)) = p.headers_timing.take() {
                    if now <= p.headers_deadline {
                        p.rtt.sample(now.saturating_sub(sent).saturating_sub(air));
                    }
                }
                p.rtt.answered();
            }
        }
        let Some(last) = headers.last().cloned() else {
            return;
        };
        match self.chain.accept_headers(&headers, self.wall_s(now)) {
            Ok(new) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.saw_tip(last.height, last.hash());
                    for h in &headers {
                        p.learn(h.hash());
                    }
                }
                debug!(peer, got = headers.len(), new, to = last.height, "headers");
                let asked = self
                    .peers
                    .get(&peer)
                    .map(|p| p.headers_max as usize)
                    .unwrap_or(limits::MAX_HEADERS);
                if headers.len() >= asked {
                    self.ask_headers(now, peer, Some(last.hash()));
                }
                if !asked_for && headers.len() == 1 && new > 0 && self.heard_by_others(peer) {
                    // A new tip announced on a shared channel: every station that heard it
                    // asks for the block at the same moment, and on a channel with carrier
                    // sense their requests still collide often. Ours goes at a random
                    // moment, like an answer to a beacon.
                    self.defer_answer(peer, now);
                }
                self.request_blocks(now);
            }
            Err(e) if e.is_peer_fault() => self.misbehave(
                peer,
                RejectCode::Invalid,
                format!("invalid headers: {e}"),
                None,
            ),
            // An announced header whose parent we lack: fetch the chain that leads to it.
            Err(ChainError::UnknownParent { .. }) => self.ask_headers(now, peer, None),
            Err(e) => warn!("could not store headers: {e}"),
        }
    }

    pub(super) fn ask_headers(&mut self, now: u64, peer: PeerId, from: Option<Hash>) {
        let slow = self.peer_caps(peer).filter(|c| c.bitrate_bps > 0).cloned();
        if self.link_holding(peer, now) {
            // The peer's burst is still on the air and may hold the headers already:
            // decide when it is over (`take_turn`).
            if let Some(p) = self.peers.get_mut(&peer) {
                p.want_headers = true;
            }
            return;
        }
        // One outstanding request per peer: its answer will show what else is missing,
        // and on a slow link a duplicate answer costs seconds of air.
        let pending = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.headers_asked_at.is_some() && now < p.headers_deadline);
        if from.is_none() && pending {
            return;
        }
        let mut full = self.chain.locator();
        if slow.is_some() && full.len() > 8 {
            // Every locator hash is 32 bytes of air: on a slow link a sparse locator
            // (tip, then exponentially further back, then genesis) is plenty.
            let last = full[full.len() - 1];
            let mut sparse: Vec<Hash> = [0usize, 1, 2, 4, 8, 16, 32]
                .iter()
                .filter_map(|&i| full.get(i).copied())
                .collect();
            if sparse.last() != Some(&last) {
                sparse.push(last);
            }
            full = sparse;
        }
        let mut locator = Vec::with_capacity(limits::MAX_LOCATOR);
        if let Some(h) = from {
            locator.push(h);
        }
        for h in full {
            if locator.len() >= limits::MAX_LOCATOR {
                break;
            }
            if Some(h) != from {
                locator.push(h);
            }
        }
        // Ask for about 30 s of air worth of headers on slow links (~90 B each).
        let max = match &slow {
            Some(c) => {
                let floor = if is_narrow(c) { 2 } else { 16 };
                ((c.bitrate_bps / 8 * 30) / 90).clamp(floor, limits::MAX_HEADERS as u64) as u16
            }
            None => limits::MAX_HEADERS as u16,
        };
        let msg = Message::GetHeaders(GetHeaders {
            locator,
            stop: None,
            max,
        });
        // Deadline: the measured turnaround plus the air time of what goes out before
        // the request, the request and the answer we asked for (about 90 B a header,
        // no more than the peer is ahead).
        let timing = slow.as_ref().map(|c| {
            let ahead = self.peers.get(&peer).map_or(0, |p| {
                p.best_height
                    .saturating_sub(self.chain.best_header().height)
            });
            let answer = packet::airtime_ms(c, (ahead.clamp(1, u64::from(max)) as usize) * 90);
            let queue = self.link_air_ahead(peer, now);
            (
                now,
                queue + packet::airtime_ms(c, self.encode_len(&msg)) + answer,
            )
        });
        if let Some(p) = self.peers.get_mut(&peer) {
            p.headers_asked_at = Some(now);
            p.headers_max = max;
            p.headers_deadline = match timing {
                Some((_, air)) => now + air + p.rtt.rto(),
                None => now + HEADERS_TIMEOUT_MS,
            };
            // Karn: a request asked again gives no sample.
            p.headers_timing = if from.is_none() && p.rtt.backoff > 0 {
                None
            } else {
                timing
            };
        }
        self.send(peer, msg);
    }

    pub(super) fn asked(&mut self, now: u64, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.asked_at = Some(now);
        }
    }

    /// May we call an answer from `peer` overdue now? On a shared half-duplex channel the
    /// peer answers only after our whole burst (it holds until our OVER) and its answer
    /// may be on the air right now: not before our burst ended one RTO ago, nor while we
    /// hear it.
    pub(super) fn answer_overdue(&self, peer: PeerId, now: u64) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return true;
        };
        match self.packet_links.get(&p.link) {
            Some(l) if l.takes_turns() => {
                !l.holding(now) && l.queued() == 0 && now >= l.burst_end() + p.rtt.rto()
            }
            _ => true,
        }
    }

    /// Blocks in flight per peer on its link.
    fn block_window(&self, peer: PeerId) -> usize {
        match self.peer_caps(peer) {
            Some(c) if c.bitrate_bps > 0 => 4,
            _ => BLOCK_WINDOW,
        }
    }

    /// Deadline and expected air time of the `k`-th block (from 1) of one `GetData` to
    /// `peer`: on links with a bit rate the measured turnaround plus the air time of the
    /// queue, the request and `k` blocks; a request that is being answered keeps its
    /// deadline moving (see `handle_packet`), so this only has to catch what is lost
    /// whole.
    pub(super) fn block_deadline(&self, peer: PeerId, now: u64, k: usize) -> (u64, u64) {
        match (self.peer_caps(peer), self.peers.get(&peer)) {
            (Some(c), Some(p)) if c.bitrate_bps > 0 => {
                let air = self.link_air_ahead(peer, now)
                    + packet::airtime_ms(c, 40 + 33 * k)
                    + packet::airtime_ms(c, k * self.avg_block_bytes as usize);
                (now + air + p.rtt.rto(), air)
            }
            _ => (now + BLOCK_TIMEOUT_MS, 0),
        }
    }

    /// Fetch missing bodies of the best header chain, a bounded window per peer.
    pub(super) fn request_blocks(&mut self, now: u64) {
        let missing = self.chain.missing_blocks(256);
        if missing.is_empty() {
            return;
        }
        let mut per_peer: HashMap<PeerId, Vec<InvItem>> = HashMap::new();
        let mut load = self.in_flight.block_load();
        // Not now from a peer whose burst is still on the air (it may be bringing the
        // blocks). A peer with transfers to us under way (cut by its burst's length, or
        // being repaired by NACK) is bringing that many blocks: it sends in height
        // order, so the lowest missing ones it has are left to those transfers, and the
        // rest asked for now, in this turn, rather than after another round.
        // A block whose transfer is under way (named by its first fragment) is left to
        // it, however long its repair takes: asked for again, it would cross twice.
        let now_ms = self.now;
        let mut busy: HashSet<PeerId> = HashSet::new();
        let mut coming: BTreeMap<PeerId, usize> = BTreeMap::new();
        let mut arriving: HashSet<Hash> = HashSet::new();
        for (&id, p) in &self.peers {
            let Some(l) = self.packet_links.get(&p.link) else {
                continue;
            };
            let (named, unnamed) = l.blocks_coming(id);
            arriving.extend(named);
            if l.holding(now_ms) {
                busy.insert(id);
            } else if unnamed > 0 && l.receiving_from(now_ms, id, 3 * l.stall_ms()) {
                coming.insert(id, unnamed);
            }
        }
        for hash in missing {
            if self.in_flight.has_block(&hash) || arriving.contains(&hash) {
                continue;
            }
            let height = self.chain.header(&hash).map(|h| h.height).unwrap_or(0);
            let bringing = coming.iter_mut().find(|(id, n)| {
                **n > 0
                    && self
                        .peers
                        .get(id)
                        .is_some_and(|p| p.best_height >= height || p.known.contains(&hash))
            });
            if let Some((_, n)) = bringing {
                *n -= 1;
                continue;
            }
            // Least-loaded ready peer that has (or claims) a chain that high, preferring
            // one known to hold the block: a peer as high on another fork lacks it.
            let pick = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    p.ready()
                        && !busy.contains(*id)
                        && self.links.get(&p.link).is_none_or(|c| c.blocks)
                        && (p.best_height >= height || p.known.contains(&hash))
                        && !p.lacks.contains(&hash)
                        && load.get(*id).copied().unwrap_or(0) < self.block_window(**id)
                })
                .min_by_key(|(id, p)| {
                    let load = load.get(*id).copied().unwrap_or(0);
                    (!p.known.contains(&hash), load, **id)
                })
                .map(|(&id, _)| id);
            let Some(id) = pick else {
                continue;
            };
            let k = {
                let e = load.entry(id).or_default();
                *e += 1;
                *e
            };
            let (deadline, air) = self.block_deadline(id, now, k);
            let retry = self.retry_later.remove(&hash);
            self.in_flight.insert_block(
                hash,
                Request {
                    peer: id,
                    deadline,
                    sent_at: now,
                    air,
                    retry,
                },
            );
            // On slow links ask for the compact form of a block at the tip: the peer
            // sends short ids for the transactions, which we mostly hold in our mempool
            // already. A station catching up on older blocks (or with an empty mempool)
            // lacks their transactions: short ids would only cost a GetBlockTxn round.
            let near_tip = height + 1 >= self.chain.best_header().height;
            let slow = self.peer_caps(id).is_some_and(|c| c.bitrate_bps > 0)
                && near_tip
                && self.chain.mempool_len() > 0;
            per_peer.entry(id).or_default().push(InvItem {
                kind: if slow {
                    InvKind::CompactBlock
                } else {
                    InvKind::Block
                },
                hash,
            });
        }
        let mut ids: Vec<PeerId> = per_peer.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(items) = per_peer.remove(&id) {
                self.send(id, Message::GetData(items));
            }
        }
    }

    /// A whole block from `peer`, however it came (full, or rebuilt from a compact one).
    pub(super) fn block_arrived(&mut self, now: u64, peer: PeerId, block: crate::chain::Block) {
        let hash = block.hash();
        self.retry_later.remove(&hash);
        if let Some(r) = self.in_flight.remove_block(&hash) {
            if let Some(p) = self.peers.get_mut(&r.peer) {
                if r.peer == peer && !r.retry && r.air > 0 {
                    // The answer's own air time is in `air` as the average block; close
                    // enough for a turnaround estimate.
                    p.rtt
                        .sample(now.saturating_sub(r.sent_at).saturating_sub(r.air));
                }
                p.rtt.answered();
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.learn(hash);
            p.saw_tip(block.header.height, hash);
        }
        self.accept_block(now, Some(peer), block);
        self.request_blocks(now);
    }

    fn accept_block(&mut self, now: u64, from: Option<PeerId>, block: crate::chain::Block) {
        let hash = block.hash();
        match self.chain.submit_block(block, self.wall_s(now)) {
            Ok(out) => {
                if matches!(out, BlockOutcome::Orphan) {
                    if let Some(peer) = from {
                        self.ask_headers(now, peer, None);
                    }
                }
                if let Err(e) = self.outbox_block_outcome(now, from, &out) {
                    warn!(%hash, "cannot queue block in the outbox: {e}");
                }
                self.after_block(from, &out);
            }
            Err(e) if e.is_peer_fault() => {
                if let Some(peer) = from {
                    self.misbehave(
                        peer,
                        RejectCode::Invalid,
                        format!("invalid block: {e}"),
                        Some(hash),
                    );
                }
            }
            Err(e) => warn!("could not store block {hash}: {e}"),
        }
    }
}
