//! Packet links (radio): fragmentation to the link's MTU, selective repeat, pacing and
//! turn-taking.
//!
//! On a link whose MTU is smaller than an envelope can be, or that has no sessions of its
//! own (a radio channel), every envelope travels in `wire::frag` packets. The sender keeps
//! the fragments of recent transfers; the receiver asks for exactly the ones it lacks
//! (NACK), so a lost frame costs one frame. Nothing is acknowledged frame by frame: on a
//! half-duplex channel every turnaround costs the TXDELAY and the channel-access wait of
//! both stations.
//!
//! Turns (half duplex): everything a station has to say when it takes the channel goes
//! out in one burst, and the last packet of a burst carries the OVER flag. A station that
//! is hearing another one's burst holds its own traffic until the OVER (or until the
//! sender has been quiet for about a frame's air time), so its replies, acks, NACKs and
//! requests leave together in one key-up. After its own burst a station leaves the
//! channel to the others for a moment before it starts anything unasked. On a channel
//! without carrier sense (JS8Call) a station picks a random slot before anything that is
//! not an immediate answer, so two stations that react to the same event fall out of
//! step.
//!
//! Pacing: the core releases packets to the driver only while its estimate of the air time
//! already handed to the TNC stays under a window. The TNC's queue is kept fed (it sends
//! queued frames in one transmission, paying TXDELAY once) without being flooded, and
//! control traffic (requests, NACKs, announcements) overtakes bulk data.

use crate::net::{LinkCaps, LinkId, PeerId};
use crate::rng::Rng;
use crate::wire::envelope;
use crate::wire::fountain;
use crate::wire::frag::{self, Reassembler, ReassemblerConfig};
use std::collections::{BTreeMap, VecDeque};

/// Air time the core may have handed to a TNC ahead of the clock.
const WINDOW_MS: u64 = 10_000;
/// On half duplex, the most air one burst may take before the channel is left free. A
/// station waiting to transmit gives up on its frame after 60 s of busy channel
/// (Direwolf's `WAIT_TIMEOUT_MS`), so a burst stays well under that.
const BURST_MS: u64 = 45_000;
/// Right after hearing another station (its TXTAIL and our TNC's channel access are
/// still to come), frames handed to the TNC join what is waiting there.
const APPEND_MS: u64 = 150;
/// Frames a burst may always hold, however long they take (see `burst_limit_ms`).
const MIN_BURST_FRAMES: u64 = 4;
/// Frames a burst may hold on a slotted link (JS8Call), greetings and proofs apart (see
/// `handshake_part`). Four cut a payment short (left to a NACK a turn later) once bursts
/// were decided at the slot edge (`at_slot_edge`): before that, ten let a station without
/// carrier sense key up into a long burst it had not yet heard the end of.
const SLOTTED_BURST_FRAMES: u64 = 10;
/// Frames of air a slotted link's duty-cycle bucket holds at least: a greeting and its
/// proof (five and four 32-byte JS8 frames) must go in one turn, or the peer greets
/// again and each side loses a round trip of minutes.
const SLOTTED_DUTY_FRAMES: u64 = 10;
/// On half duplex, the most bytes one burst hands to the TNC at once (a hardware TNC
/// queues frames in its own small RAM). At 1200 bit/s `BURST_MS` binds first.
const BURST_BYTES: usize = 8 * 1024;
/// After a burst that ended with OVER, time left to the other stations to take the
/// channel (their TNC's channel access and TXDELAY) before we start anything unasked.
const YIELD_MS: u64 = 2_000;
/// A burst we are hearing is over when nothing more came for a frame's air time plus this.
/// (2.5 s, to cover a TNC that ends one transmission and keys up the next, measured worse
/// on the 16 KB bench: 176 s against 161 s.)
const HOLD_MARGIN_MS: u64 = 1_000;
/// The longest a frame's air time is waited for when holding (a very slow link).
const MAX_FRAME_WAIT_MS: u64 = 600_000;
/// Key-up overhead assumed per transmission burst (TXDELAY plus channel access).
const BURST_OVERHEAD_MS: u64 = 500;
/// Per-frame bytes added below us: AX.25 addresses, control, PID, FCS, flags.
const FRAME_OVERHEAD: usize = 20;
/// Bytes of sent fragments kept per link for NACK repair.
const SENT_CACHE_BYTES: usize = 512 * 1024;
/// How long sent fragments are kept for repair.
const SENT_CACHE_MS: u64 = 30 * 60 * 1000;
/// Bytes queued per link before bulk data is refused.
pub const QUEUE_BYTES: usize = 512 * 1024;
/// Control bytes (answers, repairs, requests) queued for one destination before more are
/// refused: the largest envelope, fragmented, with room for the small ones around it.
/// Control traffic skips `QUEUE_BYTES`, so without this a peer's cheap requests (compact
/// blocks, `BlockTxn`, repairs) could queue without bound.
pub const PEER_CONTROL_BYTES: usize = 384 * 1024;
/// Bytes of one transfer repaired for one peer, as a multiple of the transfer: a lossy
/// channel needs well under one (each NACK names only what is missing, at most
/// `MAX_NACK_ROUNDS` times); a 5-byte NACK of "all missing" sent again and again is not
/// loss, and beyond this it is refused and counted against the peer.
pub const REPAIR_FACTOR: usize = 3;
/// NACK rounds per transfer before the receiver gives up on it.
const MAX_NACK_ROUNDS: u32 = 8;
/// A new burst starts this long after the first packet for it was queued, so that what
/// several inputs of the same moment produce (a wallet's five transactions, an answer and
/// its acks) leaves in one key-up with one OVER.
const GATHER_MS: u64 = 100;
/// Random-access window on channels without carrier sense, in slots: a station waits
/// 0..CONTENTION_SLOTS slots before a transmission that is not an immediate answer.
pub(super) const CONTENTION_SLOTS: u64 = 4;
/// Slotted channels: a new burst is handed to the modem this long before the slot
/// boundary (see `at_slot_edge`), at most; a fifteenth of the slot where that is less
/// (1 s of JS8's normal 15-s slot, after the last frame's decode). JS8Call takes text
/// for the next slot until it starts, and a little after.
const SLOT_EDGE_MS: u64 = 1_000;
/// Air time a radio link may spend at full rate before the duty-cycle cap paces it
/// (the bucket's depth); the long-run share is `PeerPolicy::duty_cycle_pct`. Two minutes:
/// a 16 KB sync at 1200 bit/s runs at full rate.
pub const DUTY_BURST_MS: u64 = 120_000;
/// The same on a narrow link (a few bit/s), where two minutes are two frames and a long
/// allowance only lets stations talk over each other's minute-long frames.
pub const NARROW_DUTY_BURST_MS: u64 = 60_000;

/// Key of broadcast transfers in the repair cache (no peer session has this id).
const BROADCAST_KEY: PeerId = PeerId::MAX;

/// Where a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// One peer session.
    Peer(PeerId),
    /// Every station on a broadcast link.
    Broadcast(LinkId),
}

/// Urgency of an outgoing message on a paced link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A greeting: ahead of everything else, since the peer reads nothing of ours
    /// before it.
    Greeting,
    /// Requests, NACKs, announcements: small and they unblock the peer.
    Control,
    /// Blocks, headers, transactions.
    Bulk,
}

/// Loss assumed for a station that has not reported any (parts per million).
const PRIOR_LOSS_PPM: u32 = 50_000;
/// Standard deviations of margin in the symbols a coded burst carries for its worst
/// station: each station then decodes from the first burst about nine times in ten, and
/// the rest ask for a few symbols more, which serve them all at once.
const CODED_MARGIN_SD: f64 = 1.3;

/// Symbols to send so that a station losing `loss_ppm` of frames receives `need` of them,
/// with `CODED_MARGIN_SD` of margin (the count received is binomial).
pub(super) fn symbols_for(need: u32, loss_ppm: u32) -> u32 {
    let p = f64::from(loss_ppm.min(800_000)) / 1e6;
    let mut n = need;
    while n < need.saturating_mul(8).max(need + 8) {
        let nf = f64::from(n);
        if nf * (1.0 - p) - CODED_MARGIN_SD * (nf * p * (1.0 - p)).sqrt() >= f64::from(need) {
            break;
        }
        n += 1;
    }
    n
}

/// A coded broadcast transfer (`wire::fountain`) kept for more repair symbols.
struct CodedSent {
    enc: fountain::Encoder,
    dest: Dest,
    /// Index of the next repair symbol.
    next: u32,
    /// Symbols queued so far.
    queued: u32,
}

struct SentTransfer {
    frags: Vec<Vec<u8>>,
    /// The block a directed transfer carries (see [`PacketLink::block_queued`]).
    block: Option<crate::chain::Hash>,
    coded: Option<CodedSent>,
    at: u64,
    bytes: usize,
    /// Bytes repaired so far, per peer that asked (a broadcast's by many).
    repaired: BTreeMap<PeerId, usize>,
}

/// What became of a NACK (see [`PacketLink::repair`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repair {
    /// The fragments asked for are queued (or were already), or it was an ACK.
    Done,
    /// The transfer is no longer held.
    NotHeld,
    /// The peer asked for more than `REPAIR_FACTOR` times the transfer: the rest is
    /// refused.
    OverBudget,
}

/// Per-link state of a packet link.
pub(super) struct PacketLink {
    pub caps: LinkCaps,
    pub reasm: Reassembler,
    sent: BTreeMap<(PeerId, u32), SentTransfer>,
    sent_bytes: usize,
    next_transfer: u32,
    control: VecDeque<(Dest, Vec<u8>)>,
    bulk: VecDeque<(Dest, Vec<u8>)>,
    queued_bytes: usize,
    backlog_until: u64,
    /// Air released in the current burst (half duplex).
    burst_air: u64,
    /// When we last asked for fragments of a transfer.
    last_nack: BTreeMap<(PeerId, u32), u64>,
    /// When the next beacon is due.
    pub next_beacon: u64,
    /// Discovery beacons sent since a station last answered (their interval backs off).
    pub alone_beacons: u32,
    /// Air time handed to the TNC so far, in milliseconds (estimate).
    pub air_ms: u64,
    /// Packets and bytes handed to the link.
    pub packets_out: u64,
    /// Bytes handed to the link (packet payloads, before AX.25 framing).
    pub bytes_out: u64,
    /// Fragments sent again because a peer asked.
    pub repaired: u64,
    /// Duty-cycle budget in air milliseconds (None: no cap).
    duty: Option<super::peers::Bucket>,
    /// Times release stopped because the duty-cycle budget was spent.
    pub duty_waits: u64,
    /// Depth of the duty-cycle bucket (air ms at full rate).
    duty_depth: u64,
    /// Another station's burst is on the air until about then (half duplex): we hold.
    hold_until: u64,
    /// When we last heard another station.
    heard_at: u64,
    /// A burst we heard ended: our turn has to be taken (acks, requests, answers).
    pub turn_due: bool,
    /// The last burst we heard end said it has more to send (OVER|MORE).
    pub heard_more: bool,
    /// When the burst we are hearing (or heard last) began.
    heard_burst_from: u64,
    /// Bursts heard ending in OVER|MORE with a fragment: (its transfer, when, the burst's
    /// length). The transfer goes on in the sender's next burst (see `receiving_from`).
    more_heard: VecDeque<(u32, u64, u64)>,
    /// After our own burst, the channel is left to the others until then.
    quiet_until: u64,
    /// Channels without carrier sense: the slot chosen for our next transmission.
    access_at: Option<u64>,
    /// Slotted channels: a burst that may go waits until just before the slot boundary.
    edge_at: Option<u64>,
    /// Our bursts since we last heard another station (the contention window's exponent).
    unheard_bursts: u32,
    /// Slotted channels: contention units added to the next random slot we draw, until
    /// we hear anything (see `yield_first`).
    yield_units: u64,
    /// More than one other station has a session here (set by the core): what one
    /// broadcasts, several react to at once.
    pub shared: bool,
    /// Broadcast blocks go out coded where every station reads it (switched off only to
    /// measure against the plain path).
    pub coding: bool,
    /// Frame loss of each station, as it reported it asking for symbols (ppm).
    loss: BTreeMap<PeerId, u32>,
    /// Wall clock minus `now`, for the slot boundaries (JS8Call keeps UTC slots).
    pub wall_offset_ms: i64,
    /// Until then we are answering a burst we heard: no random wait.
    answer_until: u64,
    /// A new burst waits until then for the rest of what this moment produces.
    gather_until: Option<u64>,
    /// The nonce of our last beacon, and when its first packet went to the TNC (and that
    /// packet's air time).
    beacon: Option<(u64, Option<(u64, u64)>)>,
    /// Our last beacon went to the TNC while the burst we heard was on the air: it waits
    /// there and airs before anything we hand over now (its nonce).
    beacon_behind: Option<u64>,
    rng: Rng,
}

impl PacketLink {
    /// Air ms the duty-cycle cap lets through at `now`, and the cap's depth.
    pub(super) fn duty_left(&self, now: u64) -> Option<(u64, u64)> {
        self.duty.as_ref().map(|d| (d.level(now), self.duty_depth))
    }

    /// A packet link; on radio with `duty_pct` < 100 its air time is capped to that share.
    pub fn new(
        caps: LinkCaps,
        now: u64,
        first_beacon_in: u64,
        duty_pct: u8,
        seed: u64,
    ) -> PacketLink {
        // Slotted links (JS8Call) have no carrier sense to talk over: stations keep to
        // their slots, and a message of a few frames must fit the allowance whole.
        let duty_depth = if caps.slot_ms > 0 {
            DUTY_BURST_MS.max(SLOTTED_DUTY_FRAMES * airtime_ms(&caps, caps.mtu))
        } else if super::is_narrow(&caps) {
            NARROW_DUTY_BURST_MS
        } else {
            DUTY_BURST_MS
        };
        let duty = (caps.radio && duty_pct < 100).then(|| {
            // Air ms earned per second of clock: 10 * percent.
            super::peers::Bucket::new(u64::from(duty_pct) * 10, duty_depth, now)
        });
        PacketLink {
            duty,
            duty_depth,
            duty_waits: 0,
            caps,
            reasm: Reassembler::new(ReassemblerConfig {
                timeout_ms: 30 * 60 * 1000,
                ..ReassemblerConfig::default()
            }),
            sent: BTreeMap::new(),
            sent_bytes: 0,
            next_transfer: 1,
            control: VecDeque::new(),
            bulk: VecDeque::new(),
            queued_bytes: 0,
            backlog_until: now,
            burst_air: 0,
            last_nack: BTreeMap::new(),
            next_beacon: now + first_beacon_in,
            alone_beacons: 0,
            air_ms: 0,
            packets_out: 0,
            bytes_out: 0,
            repaired: 0,
            hold_until: 0,
            heard_at: 0,
            turn_due: false,
            heard_more: false,
            heard_burst_from: 0,
            more_heard: VecDeque::new(),
            quiet_until: 0,
            access_at: None,
            edge_at: None,
            unheard_bursts: 0,
            shared: false,
            coding: true,
            loss: BTreeMap::new(),
            wall_offset_ms: 0,
            answer_until: 0,
            gather_until: None,
            beacon: None,
            beacon_behind: None,
            yield_units: 0,
            rng: Rng::new(seed),
        }
    }

    /// A packet from another station was heard. On half duplex its burst goes on until
    /// its OVER, or until it has been quiet for a frame's air time: we hold till then.
    /// Returns true if this packet ended the burst.
    pub fn heard(&mut self, now: u64, packet: &[u8]) -> Option<bool> {
        let over = frag::is_over(packet).then(|| frag::is_more(packet));
        if !self.takes_turns() {
            self.quiet_until = 0;
            return over;
        }
        // A half-duplex TNC sends nothing while another station is on the air: what we
        // handed it and did not see go out yet waits behind this packet, so our burst
        // ends (and our yield runs) that much later than estimated. Only a packet heard
        // after our burst is the other station taking its turn.
        let air = self.airtime_ms(packet.len());
        if self.slotted() {
            // A slotted modem without carrier sense sends what it holds in the next
            // slots whatever it hears, and a station keyed up hears nothing: a frame heard
            // means ours are all gone, whatever our estimate said (a burst "still on the
            // air" by the estimate took this as its moment to append, and keyed up into
            // the other station's burst).
            self.backlog_until = self.backlog_until.min(now);
        } else if self.backlog_until > now.saturating_sub(air) {
            if let Some((nonce, Some((handed, beacon_air)))) = self.beacon {
                // We heard this packet whole, so we were not transmitting while it was on
                // the air; and a beacon handed over less than its own air time before the
                // packet began could not have aired whole before it: it waits behind it.
                if self.caps.carrier_sense && handed + beacon_air > now.saturating_sub(air) {
                    self.beacon_behind = Some(nonce);
                }
            }
            self.backlog_until += air;
            if self.quiet_until > 0 {
                self.quiet_until += air;
            }
        } else {
            self.quiet_until = 0;
        }
        if now >= self.hold_until {
            // The previous burst ended (its OVER, or silence): this packet begins one.
            self.heard_burst_from = now.saturating_sub(air);
        }
        self.heard_at = now;
        self.turn_due = true;
        if let Some(more) = over {
            self.heard_more = more;
            if let (true, Ok(frag::Packet::Fragment(f))) = (more, frag::parse(packet)) {
                if self.more_heard.len() >= 16 {
                    self.more_heard.pop_front();
                }
                let len = now.saturating_sub(self.heard_burst_from);
                self.more_heard.push_back((f.transfer_id, now, len));
            }
        }
        self.hold_until = if over.is_some() {
            now
        } else {
            // The next packet of the burst may also wait for the next slot boundary.
            now + self.airtime_ms(self.caps.mtu).min(MAX_FRAME_WAIT_MS)
                + self.caps.slot_ms
                + HOLD_MARGIN_MS
        };
        // Hearing the channel busy restarts the random access of a slotted channel;
        // an answer to this burst goes at once (the sender is waiting for it).
        self.access_at = None;
        self.edge_at = None;
        self.unheard_bursts = 0;
        self.yield_units = 0;
        self.answer_until = self.hold_until + self.caps.slot_ms;
        over
    }

    /// A channel of time slots without carrier sense (JS8Call): stations key up at slot
    /// boundaries, deaf to each other.
    pub fn slotted(&self) -> bool {
        self.caps.slot_ms > 0 && !self.caps.carrier_sense
    }

    /// A shared half-duplex channel (a TNC, JS8Call), where the stations take turns
    /// themselves. A connected modem session (VARA) runs its own ARQ turns.
    pub fn takes_turns(&self) -> bool {
        self.caps.half_duplex && !self.caps.connection_oriented
    }

    /// When our last burst ends (or ended), by our estimate.
    pub fn burst_end(&self) -> u64 {
        self.backlog_until
    }

    /// Is another station's burst still on the air (half duplex)?
    pub fn holding(&self, now: u64) -> bool {
        self.takes_turns() && now < self.hold_until
    }

    /// When the core must look at this link again for turn-taking (hold, yield, slot).
    pub fn wake_at(&self, now: u64) -> Option<u64> {
        let mut t = u64::MAX;
        if self.caps.broadcast {
            t = t.min(self.next_beacon);
        }
        if self.turn_due {
            t = t.min(self.hold_until);
        }
        if self.queued() > 0 {
            if self.quiet_until > now {
                t = t.min(self.quiet_until);
            }
            if let Some(a) = self.access_at.filter(|a| *a > now) {
                t = t.min(a);
            }
            if let Some(e) = self.edge_at.filter(|e| *e > now) {
                t = t.min(e);
            }
            if let Some(g) = self.gather_until.filter(|g| *g > now) {
                t = t.min(g);
            }
            let window = self.window_ms();
            if !self.takes_turns() && self.backlog_until >= now + window {
                // Pacing: more can be handed over once the window moves (a duty-cycle wait
                // is left to the core's tick).
                t = t.min(self.backlog_until + 1 - window);
            }
        }
        (t != u64::MAX).then_some(t.max(now))
    }

    /// Air time handed to the TNC ahead of the clock: at least a few packets, so that on
    /// a very slow link (JS8Call) a burst's packets still go back to back.
    fn window_ms(&self) -> u64 {
        WINDOW_MS.max(self.airtime_ms(self.caps.mtu))
    }

    /// May a new burst start now? Without turns, appending to what is on the air always
    /// may; with turns, a burst is handed over whole when it starts (see `release`).
    fn may_key_up(&mut self, now: u64) -> bool {
        if !self.takes_turns() {
            return true;
        }
        if self.backlog_until > now {
            // While the channel was busy up to a moment ago, what we handed over has not
            // gone yet: more joins the same key-up.
            return now <= self.heard_at + APPEND_MS;
        }
        if now < self.hold_until
            || now < self.quiet_until
            || self.gather_until.is_some_and(|g| now < g)
        {
            return false;
        }
        if self.caps.carrier_sense && self.access_at.is_some() {
            // An answer to a broadcast, deferred (see `defer_answer`).
            if self.access_at.is_some_and(|a| now < a) {
                return false;
            }
            self.access_at = None;
            return true;
        }
        if !self.slotted() {
            if self.shared && self.unheard_bursts > 0 && now >= self.answer_until {
                // A shared channel, and our last burst met silence: it was lost, or it
                // collided with another station's that reacted to the same broadcast,
                // whose timers now run in step with ours (carrier sense does not part
                // two stations that start together). A random wait parts them.
                let unit = self.airtime_ms(self.caps.mtu);
                let window = CONTENTION_SLOTS << self.unheard_bursts.min(2);
                let at = now + self.rng.below(window) * unit;
                if now < at {
                    self.access_at = Some(at);
                    return false;
                }
            }
            return true;
        }
        if now < self.answer_until {
            return self.at_slot_edge(now);
        }
        // No carrier sense: a random slot, so that stations that react to the same event
        // (or came up in the same second) do not transmit in lock step for ever.
        // The unit of contention is one packet's air time in whole slots: a JS8 message
        // spans several slots, and a shift of one slot would still overlap it.
        let slot = self.caps.slot_ms;
        let unit = self.airtime_ms(self.caps.mtu).div_ceil(slot).max(1) * slot;
        let at = match self.access_at {
            Some(at) => at,
            None => {
                // Whole slots from the next boundary: two stations' random waits that
                // end inside the same slot would still key up together at its end.
                // The window doubles after a burst of ours that nothing was heard after:
                // stations that collided went quiet together and come back together.
                // Once only: a window of up to 32 units made the JS8 emulator's block
                // test a quarter slower (194 s against 153 s) and won no seed more.
                let window = CONTENTION_SLOTS << self.unheard_bursts.min(1);
                let k = std::mem::take(&mut self.yield_units) + self.rng.below(window);
                let at = self.slot_edge_after(now) + k * unit;
                *self.access_at.insert(at)
            }
        };
        if now < at || !self.at_slot_edge(now) {
            return false;
        }
        self.access_at = None;
        true
    }

    /// Slotted channel: our first burst draws its slot from after the window another
    /// station draws from, unless we hear it first. Two stations configured with each
    /// other and started together both greet at once, deaf while they transmit, and a
    /// shared window makes them collide one time in four (a whole greeting lost each
    /// time, minutes of air at JS8's speeds); the station whose callsign sorts later
    /// yields (see `Node::peer_connected`), so neither greeting is lost when both are there.
    pub fn yield_first(&mut self) {
        if self.slotted() && self.unheard_bursts == 0 {
            self.yield_units = CONTENTION_SLOTS;
        }
    }

    /// Slotted channel: is it the moment to hand a new burst over, just before the next
    /// slot boundary? The modem keys up only at the boundary whatever we do, and what
    /// the last slot carried is heard only at its end: a burst handed over earlier is
    /// committed before we know whether another station has taken the channel (two
    /// stations whose random slots differ by one then still collide).
    fn at_slot_edge(&mut self, now: u64) -> bool {
        let at = self.slot_edge_after(now);
        if at <= now {
            self.edge_at = None;
            return true;
        }
        self.edge_at = Some(at);
        false
    }

    /// The moment to hand over a burst for the next slot boundary (`now` itself if that
    /// moment has come).
    fn slot_edge_after(&self, now: u64) -> u64 {
        let slot = self.caps.slot_ms.max(1);
        let wall = now.saturating_add_signed(self.wall_offset_ms);
        let left = (slot - wall % slot) % slot;
        now + left.saturating_sub(SLOT_EDGE_MS.min(slot / 15))
    }

    /// The most air one burst may take: `BURST_MS`, or a few frames where one frame takes
    /// most of that (a narrow link, JS8Call), since a burst that stops after every frame
    /// hands the turn over for every frame.
    fn burst_limit_ms(&self) -> u64 {
        let frames = if self.caps.slot_ms > 0 {
            SLOTTED_BURST_FRAMES
        } else {
            MIN_BURST_FRAMES
        };
        BURST_MS.max(frames * self.airtime_ms(self.caps.mtu))
    }

    /// Is the next queued packet the last fragment of the transfer whose previous
    /// fragment `last` (sent in this burst) carried? Then it goes past the burst limit:
    /// one frame more costs less than a message left undecodable for a whole turn (a
    /// 120-byte `Hello` is five 32-byte JS8 frames against a four-frame burst).
    fn finishes_transfer(&self, last: Option<&(Dest, Vec<u8>)>) -> bool {
        let Some((_, prev)) = last else {
            return false;
        };
        let Some((_, next)) = self.control.front().or(self.bulk.front()) else {
            return false;
        };
        match (frag::parse(prev), frag::parse(next)) {
            (Ok(frag::Packet::Fragment(a)), Ok(frag::Packet::Fragment(b))) => {
                a.transfer_id == b.transfer_id && b.index == a.index + 1 && b.index + 1 == b.count
            }
            _ => false,
        }
    }

    /// We are about to answer a broadcast (a beacon) that other stations heard too: wait
    /// a random 0-3 units of a packet's air time first. Stations hidden from each other
    /// (both hear the beacon's sender, not each other) would otherwise answer in the same
    /// moment, carrier sense or not, and collide at the sender every time.
    pub fn defer_answer(&mut self, now: u64) {
        if !self.takes_turns() {
            return;
        }
        let unit = match self.caps.slot_ms {
            0 => self.airtime_ms(self.caps.mtu),
            slot => self.airtime_ms(self.caps.mtu).div_ceil(slot).max(1) * slot,
        };
        // On a slotted channel the window doubles after a burst nothing was heard after,
        // as in `ready_to_send`: two stations whose greetings collided retry together.
        let window = if self.slotted() {
            CONTENTION_SLOTS << self.unheard_bursts.min(1)
        } else {
            CONTENTION_SLOTS
        };
        self.access_at = Some(now + self.rng.below(window) * unit);
        self.answer_until = 0;
    }

    /// Estimated air time of one packet of `len` bytes on this link.
    pub fn airtime_ms(&self, len: usize) -> u64 {
        airtime_ms(&self.caps, len)
    }

    /// Does an idle transfer count as stalled? A few frames' worth of silence.
    pub fn stall_ms(&self) -> u64 {
        2_000 + 2 * self.airtime_ms(self.caps.mtu)
    }

    /// How long the channel has been quiet: nothing heard, and our own burst over by
    /// our estimate.
    pub fn quiet_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.heard_at.max(self.backlog_until))
    }

    /// Estimated air time of everything handed to the TNC and not yet on air, plus what
    /// waits here: how long before the peer can answer what we send now.
    pub fn air_ahead(&self, now: u64) -> u64 {
        // On a shared channel the answer comes after our whole burst, bulk included.
        let queued: u64 = self
            .control
            .iter()
            .chain(self.bulk.iter())
            .map(|(_, p)| self.airtime_ms(p.len()))
            .sum();
        self.backlog_until.saturating_sub(now) + queued
    }

    /// Incomplete transfers from `peer`: the sender ended its burst, so whatever is
    /// missing was lost (only the gaps below the highest fragment received, if it has
    /// `more` to send). NACKs for them, each counted as a round.
    pub fn nacks_after_over(&mut self, now: u64, peer: PeerId, more: bool) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        for (p, tid) in self.reasm.stalled(now, 0) {
            if p != peer || !self.may_nack(now, p, tid) {
                continue;
            }
            if more {
                let gaps = self.reasm.missing_below_highest(p, tid);
                if gaps.is_empty() {
                    continue;
                }
                self.reasm.touch(p, tid, now);
                if self.nack_round(p, tid) {
                    out.push((tid, frag::encode_nack(tid, &gaps)));
                }
                continue;
            }
            self.reasm.touch(p, tid, now);
            if !self.nack_round(p, tid) {
                continue;
            }
            if let Some(n) = self.reasm.nack(p, tid) {
                out.push((tid, n));
            }
        }
        out
    }

    /// May we ask again for what transfer `tid` of `peer` lacks? Not while a NACK of
    /// ours for it is still waiting here (`queue_nack` replaces it), and not within a
    /// stall time of the last one: that one may still be queued in the TNC behind the
    /// sender's burst, and a second copy would have the same fragments sent twice.
    pub fn may_nack(&self, now: u64, peer: PeerId, tid: u32) -> bool {
        let queued = self
            .control
            .iter()
            .any(|(d, p)| *d == Dest::Peer(peer) && nack_tid(p) == Some(tid));
        queued
            || self
                .last_nack
                .get(&(peer, tid))
                .is_none_or(|t| now.saturating_sub(*t) >= self.stall_ms())
    }

    /// Queue a NACK for transfer `tid` of `peer`, replacing one still waiting here.
    pub fn queue_nack(&mut self, now: u64, peer: PeerId, tid: u32, nack: Vec<u8>) {
        let before = self.control.len();
        self.control
            .retain(|(d, p)| !(*d == Dest::Peer(peer) && nack_tid(p) == Some(tid)));
        if self.control.len() != before {
            self.recount_queued();
        }
        if self.last_nack.len() >= 4096 {
            self.last_nack.clear();
        }
        self.last_nack.insert((peer, tid), now);
        self.enqueue_raw(now, Dest::Peer(peer), nack);
    }

    /// Has `peer` a transfer to us under way (heard from within `within_ms`)? Its
    /// missing parts will be asked for by NACK; asking for the same message again
    /// would send it twice.
    ///
    /// A transfer whose fragment ended a burst cut with OVER|MORE is under way longer: its
    /// sender goes on after our turn, and once its duty-cycle budget is spent only when it
    /// has earned the air again (at 50 %, as long again as the burst it cut). A NACK for
    /// it before then names fragments still in the sender's queue or on the air, costs a
    /// round (after eight the receiver gives up and asks for the whole message again),
    /// and repairs what crosses it.
    pub fn receiving_from(&self, now: u64, peer: PeerId, within_ms: u64) -> bool {
        self.reasm.active_within(peer, now, within_ms)
            || self.more_heard.iter().any(|&(tid, at, len)| {
                now < at.saturating_add(len).saturating_add(within_ms)
                    && self.reasm.holds(peer, tid)
            })
    }

    /// A frame the driver sends on this link outside the core (an APRS beacon) of `len`
    /// bytes, in a key-up of its own: charged to the duty-cycle budget and to our air
    /// estimate like our own traffic. False (and nothing charged) while the budget is
    /// spent: the frame waits.
    pub fn charge_foreign(&mut self, now: u64, len: usize) -> bool {
        let t = self.airtime_ms(len) + BURST_OVERHEAD_MS;
        if let Some(d) = self.duty.as_mut() {
            if !d.take(now, t.min(self.duty_depth)) {
                self.duty_waits += 1;
                return false;
            }
        }
        self.backlog_until = self.backlog_until.max(now) + t;
        self.air_ms += t;
        true
    }

    /// Blocks `peer` is bringing us in transfers under way (their first fragments name
    /// them), and how many of its transfers under way are still unnamed (first fragment
    /// lost). A transfer is under way until it completes, or the NACK rounds for its gaps
    /// give up, or it expires.
    pub fn blocks_coming(&self, peer: PeerId) -> (Vec<crate::chain::Hash>, usize) {
        let mut named = Vec::new();
        let mut unnamed = 0;
        for first in self.reasm.partial_firsts(peer) {
            match first {
                Some(f) => named.extend(envelope::peek_block_hash(f)),
                None => unnamed += 1,
            }
        }
        (named, unnamed)
    }

    /// Queue an envelope: split to the MTU, keep the fragments for repair if directed.
    /// Returns false (and queues nothing) if bulk data would overflow the queue.
    pub fn enqueue(&mut self, now: u64, dest: Dest, envelope: &[u8], prio: Priority) -> bool {
        if prio == Priority::Bulk && self.queued_bytes + envelope.len() > QUEUE_BYTES {
            return false;
        }
        let block = match dest {
            Dest::Peer(_) => envelope::peek_block_hash(envelope),
            Dest::Broadcast(_) => None,
        };
        if let (Dest::Peer(p), Some(h)) = (dest, block) {
            // A station whose request waited in its TNC behind another station's long
            // burst asks again before our answer reaches it, and its requests may all go
            // out in one key-up. The block still queued for it answers them all: a copy
            // per request spent our duty-cycle budget with five stations on the channel.
            // (A push asking for an end-to-end ack still goes: the outbox waits for it.)
            if !asks_ack(envelope) && self.block_queued(p, &h) {
                return true;
            }
        }
        let tid = self.next_transfer;
        self.next_transfer = self.next_transfer.checked_add(1).unwrap_or(1);
        let Ok(packets) = frag::split(tid, envelope, self.caps.mtu) else {
            return false;
        };
        if prio != Priority::Bulk
            && self.control_bytes(dest) + packets.iter().map(Vec::len).sum::<usize>()
                > PEER_CONTROL_BYTES
        {
            return false;
        }
        self.gather(now);
        if packets.len() > 1 {
            // Broadcast transfers are kept too: a station that missed a fragment of a
            // beacon or an announcement asks for it like any other.
            let key = match dest {
                Dest::Peer(p) => p,
                Dest::Broadcast(_) => BROADCAST_KEY,
            };
            {
                let p = key;
                let bytes: usize = packets.iter().map(Vec::len).sum();
                self.sent.insert(
                    (p, tid),
                    SentTransfer {
                        frags: packets.clone(),
                        block,
                        coded: None,
                        at: now,
                        bytes,
                        repaired: BTreeMap::new(),
                    },
                );
                self.sent_bytes += bytes;
                self.trim_sent(now);
            }
        }
        if prio == Priority::Greeting {
            for p in packets.into_iter().rev() {
                self.queued_bytes += p.len();
                self.control.push_front((dest, p));
            }
            return true;
        }
        for p in packets {
            self.queued_bytes += p.len();
            match prio {
                Priority::Control | Priority::Greeting => self.control.push_back((dest, p)),
                Priority::Bulk => self.bulk.push_back((dest, p)),
            }
        }
        true
    }

    /// Is a transfer carrying block `hash` to `peer` still (partly) waiting in our queue?
    fn block_queued(&self, peer: PeerId, hash: &crate::chain::Hash) -> bool {
        let tids: Vec<u32> = self
            .sent
            .range((peer, 0)..=(peer, u32::MAX))
            .filter(|(_, t)| t.block.as_ref() == Some(hash))
            .map(|((_, tid), _)| *tid)
            .collect();
        !tids.is_empty()
            && self
                .control
                .iter()
                .chain(self.bulk.iter())
                .any(|(d, p)| {
                    *d == Dest::Peer(peer)
                        && matches!(frag::parse(p), Ok(frag::Packet::Fragment(f)) if tids.contains(&f.transfer_id))
                })
    }

    /// Transfers in the control queue that carry a `Hello` to a destination `to` accepts,
    /// their first packet not on the air yet; `whole` if one fits a packet.
    fn queued_hellos(&self, to: impl Fn(&Dest) -> bool) -> (Vec<u32>, bool) {
        let is_hello = |m: &[u8]| envelope::peek_kind(m) == Some(1);
        let mut tids = Vec::new();
        let mut whole = false;
        for (d, p) in &self.control {
            if !to(d) {
                continue;
            }
            match frag::parse(p) {
                Ok(frag::Packet::Fragment(f)) if f.index == 0 && is_hello(f.payload) => {
                    tids.push(f.transfer_id)
                }
                Ok(frag::Packet::Whole(m)) if is_hello(m) => whole = true,
                _ => {}
            }
        }
        (tids, whole)
    }

    /// Is a greeting to `peer` still waiting in the queue? A second one would say the
    /// same (the nonce is the session's) and cost as much air again.
    pub fn hello_queued(&self, peer: PeerId) -> bool {
        let (tids, whole) = self.queued_hellos(|d| *d == Dest::Peer(peer));
        whole || !tids.is_empty()
    }

    /// Is a beacon or a greeting of ours still waiting in the queue? A beacon queued now
    /// would go out behind it, saying the same.
    pub fn hello_queued_any(&self) -> bool {
        let (tids, whole) = self.queued_hellos(|_| true);
        whole || !tids.is_empty()
    }

    /// Our beacon with this nonce is queued for a broadcast (see [`PacketLink::beacon_behind`]).
    pub fn note_beacon(&mut self, nonce: u64) {
        self.beacon = Some((nonce, None));
    }

    /// The nonce of our beacon that waits in the TNC behind the burst just heard: every
    /// station that heard that burst end will hear the beacon before anything we hand over
    /// now, so it serves them as our greeting (one less on the air).
    pub fn beacon_behind(&self) -> Option<u64> {
        self.beacon_behind
    }

    /// Drop a beacon still waiting in the queue, whole (none of its packets on the air
    /// yet): a greeting we are about to send a station says the same to the one that is
    /// listening, and on a slow channel the beacon costs as much again.
    pub fn drop_queued_beacon(&mut self) {
        let is_hello = |m: &[u8]| envelope::peek_kind(m) == Some(1);
        let (tids, whole) = self.queued_hellos(|d| matches!(d, Dest::Broadcast(_)));
        if tids.is_empty() && !whole {
            return;
        }
        let before = self.control.len();
        let mut freed = 0;
        self.control.retain(|(d, p)| {
            let beacon = matches!(d, Dest::Broadcast(_))
                && match frag::parse(p) {
                    Ok(frag::Packet::Fragment(f)) => tids.contains(&f.transfer_id),
                    Ok(frag::Packet::Whole(m)) => is_hello(m),
                    _ => false,
                };
            if beacon {
                freed += p.len();
            }
            !beacon
        });
        if self.control.len() < before {
            self.queued_bytes = self.queued_bytes.saturating_sub(freed);
        }
    }

    /// Queue a raw packet (a NACK, a repaired fragment) ahead of bulk data.
    pub fn enqueue_raw(&mut self, now: u64, dest: Dest, packet: Vec<u8>) {
        self.gather(now);
        self.queued_bytes += packet.len();
        self.control.push_back((dest, packet));
    }

    /// Something is queued for a new burst: start it after `GATHER_MS`.
    fn gather(&mut self, now: u64) {
        if self.takes_turns() && self.backlog_until <= now && self.gather_until.is_none() {
            self.gather_until = Some(now + GATHER_MS);
        }
    }

    /// Control bytes queued for `dest`.
    pub fn control_bytes(&self, dest: Dest) -> usize {
        self.control
            .iter()
            .filter(|(d, _)| *d == dest)
            .map(|(_, p)| p.len())
            .sum()
    }

    /// The most control bytes queued for any one destination.
    pub fn max_control_bytes(&self) -> usize {
        let mut per: Vec<(Dest, usize)> = Vec::new();
        for (d, p) in &self.control {
            match per.iter_mut().find(|(x, _)| x == d) {
                Some((_, n)) => *n += p.len(),
                None => per.push((*d, p.len())),
            }
        }
        per.into_iter().map(|(_, n)| n).max().unwrap_or(0)
    }

    /// Bytes queued on this link, control and bulk.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Fragments `peer` asked for again, within `REPAIR_FACTOR` times the transfer for
    /// that peer and `PEER_CONTROL_BYTES` queued for it.
    pub fn repair(&mut self, now: u64, peer: PeerId, nack: &frag::Nack) -> Repair {
        let key = if self.sent.contains_key(&(peer, nack.transfer_id)) {
            (peer, nack.transfer_id)
        } else {
            (BROADCAST_KEY, nack.transfer_id)
        };
        let Some(t) = self.sent.get(&key) else {
            return Repair::NotHeld;
        };
        let count = t.frags.len() as u32;
        let want = nack.indices(count);
        if want.is_empty() {
            // An ACK: the peer has it all; free the repair copy (a broadcast's stays for
            // the other stations).
            if key.0 != BROADCAST_KEY {
                if let Some(t) = self.sent.remove(&key) {
                    self.sent_bytes -= t.bytes;
                }
            }
            return Repair::Done;
        }
        let dest = Dest::Peer(peer);
        let mut budget =
            (REPAIR_FACTOR * t.bytes).saturating_sub(t.repaired.get(&peer).copied().unwrap_or(0));
        let mut room = PEER_CONTROL_BYTES.saturating_sub(self.control_bytes(dest));
        let frags: Vec<Vec<u8>> = want
            .iter()
            .filter_map(|&i| t.frags.get(i as usize).cloned())
            .collect();
        let mut outcome = Repair::Done;
        let mut spent = 0;
        for f in frags {
            // Two NACKs that crossed our repair name the same fragments, and a NACK sent
            // while our burst was cut (OVER|MORE) names fragments still waiting here for
            // the next one: send each once.
            if self
                .control
                .iter()
                .chain(self.bulk.iter())
                .any(|(d, p)| *d == dest && *p == f)
            {
                continue;
            }
            if f.len() > budget {
                outcome = Repair::OverBudget;
                break;
            }
            if f.len() > room {
                // Asked again later, once what is queued for it has gone.
                break;
            }
            budget -= f.len();
            room -= f.len();
            spent += f.len();
            self.repaired += 1;
            self.enqueue_raw(now, dest, f);
        }
        if let Some(t) = self.sent.get_mut(&key) {
            *t.repaired.entry(peer).or_default() += spent;
        }
        outcome
    }

    /// Queue `envelope` as one coded broadcast transfer (`wire::fountain`) to every
    /// station on the link: its source symbols and as many repair symbols as the worst
    /// of `stations` needs by the loss it reported. False (nothing queued) if it does not
    /// code (one packet, too many symbols) or the queue is full.
    pub fn enqueue_coded(
        &mut self,
        now: u64,
        link: LinkId,
        envelope: &[u8],
        stations: &[PeerId],
    ) -> bool {
        if self.queued_bytes + envelope.len() > QUEUE_BYTES {
            return false;
        }
        let tid = self.next_transfer;
        let Some(enc) = fountain::Encoder::new(tid, envelope, self.caps.mtu) else {
            return false;
        };
        self.next_transfer = self.next_transfer.checked_add(1).unwrap_or(1);
        let worst = stations
            .iter()
            .map(|p| self.loss.get(p).copied().unwrap_or(PRIOR_LOSS_PPM))
            .max()
            .unwrap_or(PRIOR_LOSS_PPM);
        let count = enc.count();
        let total = symbols_for(count, worst);
        self.gather(now);
        let dest = Dest::Broadcast(link);
        for i in 0..total {
            let p = enc.packet(i);
            self.queued_bytes += p.len();
            self.bulk.push_back((dest, p));
        }
        let bytes = count as usize * enc.chunk();
        self.sent.insert(
            (BROADCAST_KEY, tid),
            SentTransfer {
                frags: Vec::new(),
                block: None,
                coded: Some(CodedSent {
                    enc,
                    dest,
                    next: total,
                    queued: total,
                }),
                at: now,
                bytes,
                repaired: BTreeMap::new(),
            },
        );
        self.sent_bytes += bytes;
        self.trim_sent(now);
        true
    }

    /// A packet of a coded transfer (`wire::fountain`): a symbol for the reassembler (the
    /// message once it decodes), or a station's request for more symbols of ours.
    pub fn coded(
        &mut self,
        now: u64,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, frag::FragError> {
        match bytes.first().map(|t| t & 0x3F) {
            Some(fountain::TAG_SYMBOL) => self.reasm.insert(now, peer, bytes),
            Some(fountain::TAG_MORE) => {
                let more = fountain::parse_more(bytes)?;
                match self.more_symbols(now, peer, more) {
                    Repair::OverBudget => Err(frag::FragError::RepairBudget),
                    Repair::Done | Repair::NotHeld => Ok(None),
                }
            }
            other => Err(frag::FragError::UnknownTag(other.unwrap_or(0))),
        }
    }

    /// `peer` lacks `more.need` symbols of a coded transfer of ours: note the loss it
    /// reports, and queue new repair symbols for every station (those queued and not yet
    /// on the air count: what several stations ask in one round goes once).
    fn more_symbols(&mut self, now: u64, peer: PeerId, more: fountain::More) -> Repair {
        let key = (BROADCAST_KEY, more.transfer_id);
        let tid = more.transfer_id;
        // Repair symbols of this transfer still waiting here.
        let waiting = self
            .control
            .iter()
            .chain(self.bulk.iter())
            .filter(|(_, p)| fountain::parse_symbol(p).is_ok_and(|s| s.transfer_id == tid))
            .count() as u32;
        let Some(t) = self.sent.get_mut(&key) else {
            return Repair::NotHeld;
        };
        let Some(c) = t.coded.as_mut() else {
            return Repair::NotHeld;
        };
        let aired = c.queued.saturating_sub(waiting).max(1);
        let lost = 1.0 - f64::from(more.got.min(aired)) / f64::from(aired);
        let seen = (lost * 1e6) as u32;
        let est = match self.loss.get(&peer) {
            Some(&old) => (old + seen) / 2,
            None => seen,
        };
        if self.loss.len() < 1024 || self.loss.contains_key(&peer) {
            self.loss.insert(peer, est);
        }
        let need = more.need.min(c.enc.count());
        if need == 0 {
            return Repair::Done;
        }
        let fresh = symbols_for(need, est).saturating_sub(waiting);
        let budget =
            (REPAIR_FACTOR * t.bytes).saturating_sub(t.repaired.get(&peer).copied().unwrap_or(0));
        let mut spent = 0;
        let mut outcome = Repair::Done;
        let mut packets = Vec::new();
        for _ in 0..fresh {
            let p = c.enc.packet(c.next);
            if spent + p.len() > budget {
                outcome = Repair::OverBudget;
                break;
            }
            spent += p.len();
            c.next = c.next.saturating_add(1).min(fountain::MAX_INDEX - 1);
            c.queued += 1;
            packets.push(p);
        }
        let dest = c.dest;
        *t.repaired.entry(peer).or_default() += spent;
        for p in packets {
            self.repaired += 1;
            self.enqueue_raw(now, dest, p);
        }
        outcome
    }

    /// Frame loss of `peer` as it reported it (ppm), if it did.
    #[cfg(test)]
    pub fn reported_loss(&self, peer: PeerId) -> Option<u32> {
        self.loss.get(&peer).copied()
    }

    /// Count a NACK round for a transfer; false once the receiver gives up, and then the
    /// partial transfer is dropped, so that it is not asked for again and again (the
    /// message itself is asked for again by the timers of whatever needed it). Only rounds
    /// that brought nothing count: a sender whose duty-cycle budget is spent goes on a
    /// frame or two per turn, each turn a round at 10 % loss, and a transfer dropped while
    /// it was still arriving was asked for whole again.
    pub fn nack_round(&mut self, peer: PeerId, tid: u32) -> bool {
        // The count lives with the partial transfer (`Reassembler::nack_round`), so it
        // goes when the transfer does, without a sweep.
        if self.reasm.nack_round(peer, tid) <= MAX_NACK_ROUNDS {
            return true;
        }
        self.reasm.abandon(peer, tid);
        false
    }

    /// Drop state of a peer whose session ended.
    pub fn forget_peer(&mut self, peer: PeerId) {
        self.reasm.forget_peer(peer);
        let gone: Vec<(PeerId, u32)> = self
            .sent
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for k in gone {
            if let Some(t) = self.sent.remove(&k) {
                self.sent_bytes -= t.bytes;
            }
        }
        for t in self.sent.values_mut() {
            t.repaired.remove(&peer);
        }
        self.last_nack.retain(|(p, _), _| *p != peer);
        self.loss.remove(&peer);
        let before = self.control.len() + self.bulk.len();
        self.control.retain(|(d, _)| *d != Dest::Peer(peer));
        self.bulk.retain(|(d, _)| *d != Dest::Peer(peer));
        if before != self.control.len() + self.bulk.len() {
            self.recount_queued();
        }
    }

    /// NACKs waiting for our turn name what was missing when they were made; the burst
    /// we held for may have brought it since. Ask for what is missing now, and drop a
    /// NACK whose transfer is complete (its fragments would be sent twice).
    fn refresh_nacks(&mut self) {
        let reasm = &self.reasm;
        let mut changed = false;
        self.control.retain_mut(|(d, p)| {
            let Dest::Peer(peer) = *d else {
                return true;
            };
            let Some(tid) = nack_tid(p) else {
                return true;
            };
            match reasm.missing(peer, tid) {
                Some(m) if !m.is_empty() => {
                    let Some(fresh) = reasm.nack(peer, tid) else {
                        return true;
                    };
                    if *p != fresh {
                        *p = fresh;
                        changed = true;
                    }
                    true
                }
                // Complete (or given up): nothing to ask for.
                _ => {
                    changed = true;
                    false
                }
            }
        });
        if changed {
            self.recount_queued();
        }
    }

    /// Bytes queued, counted again after packets were taken out of the middle.
    fn recount_queued(&mut self) {
        self.queued_bytes = self
            .control
            .iter()
            .chain(self.bulk.iter())
            .map(|(_, p)| p.len())
            .sum();
    }

    fn trim_sent(&mut self, now: u64) {
        while self.sent_bytes > SENT_CACHE_BYTES
            || self
                .sent
                .values()
                .next()
                .is_some_and(|t| now.saturating_sub(t.at) > SENT_CACHE_MS)
        {
            // Transfer ids grow, so the first key per peer is the oldest; pick the
            // globally oldest by time.
            let Some(oldest) = self
                .sent
                .iter()
                .min_by_key(|(k, t)| (t.at, **k))
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(t) = self.sent.remove(&oldest) {
                self.sent_bytes -= t.bytes;
            }
        }
    }

    /// Hand packets to the driver while the air-time window allows. On half duplex a
    /// new burst starts only when the channel is ours (see the module docs); the last
    /// packet of a burst carries OVER.
    pub fn release(&mut self, now: u64, out: &mut Vec<(Dest, Vec<u8>)>) {
        if self.queued() == 0 || !self.may_key_up(now) {
            return;
        }
        if self.takes_turns() && self.backlog_until <= now {
            self.refresh_nacks();
        }
        let first = out.len();
        let mut capped = false;
        // With turns, the whole burst goes to the TNC at once: a TNC sends in one key-up
        // what it holds by the time it has generated the last frame (Direwolf with a
        // large audio buffer: when it keys up), so a frame handed over later can become
        // a transmission of its own, after a gap in which the peer, having heard our
        // OVER, starts its answer.
        let turns = self.takes_turns();
        let mut burst_bytes = 0usize;
        // Transfers of a greeting or proof in this burst (see `handshake_part`).
        let mut handshake_tids: Vec<u32> = Vec::new();
        loop {
            if !turns && self.backlog_until.saturating_sub(now) >= self.window_ms() {
                break;
            }
            if self.backlog_until <= now {
                // A new burst.
                if out.len() == first {
                    self.unheard_bursts = self.unheard_bursts.saturating_add(1);
                }
                self.burst_air = 0;
            }
            let Some(next_len) = self
                .control
                .front()
                .or(self.bulk.front())
                .map(|(_, p)| p.len())
            else {
                break;
            };
            let mut t = self.airtime_ms(next_len);
            let handshake = self
                .control
                .front()
                .and_then(|(d, p)| handshake_part(d, p, &handshake_tids));
            if turns
                && self.burst_air > 0
                && (self.burst_air + t > self.burst_limit_ms()
                    || burst_bytes + next_len > BURST_BYTES)
                && !self.finishes_transfer(out.get(first..).and_then(|o| o.last()))
                && handshake.is_none()
            {
                capped = true;
                break;
            }
            burst_bytes += next_len;
            let idle = self.backlog_until <= now;
            if idle && self.caps.slot_ms == 0 {
                // (On a slotted link the key-up is inside the slot already counted.)
                t += BURST_OVERHEAD_MS;
            }
            if let Some(d) = self.duty.as_mut() {
                // The duty-cycle cap: everything we key up counts, control traffic too
                // (a flood must not make us answer it at the channel's full rate).
                if !d.take(now, t.min(self.duty_depth)) {
                    self.duty_waits += 1;
                    // The rest waits for the budget: let the others have their turn.
                    capped = true;
                    break;
                }
            }
            let Some((dest, p)) = self.control.pop_front().or_else(|| self.bulk.pop_front()) else {
                break;
            };
            if let Some(Some(tid)) = handshake {
                handshake_tids.push(tid);
            }
            if let Some((_, handed @ None)) = self.beacon.as_mut() {
                if matches!(dest, Dest::Broadcast(_)) && is_hello_start(&p) {
                    *handed = Some((now, airtime_ms(&self.caps, p.len())));
                }
            }
            self.queued_bytes = self.queued_bytes.saturating_sub(p.len());
            self.backlog_until = self.backlog_until.max(now) + t;
            self.burst_air += t;
            self.air_ms += t;
            self.packets_out += 1;
            self.bytes_out += p.len() as u64;
            out.push((dest, p));
        }
        if out.len() > first {
            self.gather_until = None;
            // This burst airs after the beacon that waited: what it said is said.
            self.beacon_behind = None;
        }
        let more = capped && self.takes_turns();
        if out.len() > first && (self.queued() == 0 || more) {
            // All we had is on its way, or a burst is as long as it may be (keeping the
            // TNC fed for ever would hold the channel for ever): say so, and leave the
            // channel to the others before going on.
            if let Some((_, last)) = out.last_mut() {
                frag::set_over(last, more);
            }
            // Without carrier sense the answer is heard only once its first packet is
            // complete, a slot or two later: leave the channel that long.
            let slotted = if self.caps.slot_ms > 0 {
                2 * self.caps.slot_ms + self.airtime_ms(self.caps.mtu)
            } else {
                0
            };
            // Our estimate of when the TNC finishes drifts with the length of the burst
            // (bit stuffing depends on the data): a long burst leaves a little more room.
            self.quiet_until = self.backlog_until + YIELD_MS + self.burst_air / 50 + slotted;
        }
    }

    /// Packets waiting for air time.
    pub fn queued(&self) -> usize {
        self.control.len() + self.bulk.len()
    }
}

/// The transfer a NACK or MORE packet asks about.
fn nack_tid(p: &[u8]) -> Option<u32> {
    match frag::parse(p) {
        Ok(frag::Packet::Nack(n)) => Some(n.transfer_id),
        _ => fountain::parse_more(p).ok().map(|m| m.transfer_id),
    }
}

/// Does this envelope ask for an end-to-end `Ack` (a pushed `Tx` or `Block`)?
fn asks_ack(envelope: &[u8]) -> bool {
    // msg_id: an LEB128 varint after version, network and kind.
    let mut id: u64 = 0;
    for (i, b) in envelope.iter().skip(6).take(10).enumerate() {
        id |= u64::from(b & 0x7F).checked_shl(7 * i as u32).unwrap_or(0);
        if b & 0x80 == 0 {
            return id >= crate::wire::message::ACK_REQUESTED_MIN_ID;
        }
    }
    false
}

/// Is this packet a whole `Hello` or a transfer's first fragment of one?
fn is_hello_start(p: &[u8]) -> bool {
    let is_hello = |m: &[u8]| envelope::peek_kind(m) == Some(1);
    match frag::parse(p) {
        Ok(frag::Packet::Whole(m)) => is_hello(m),
        Ok(frag::Packet::Fragment(f)) => f.index == 0 && is_hello(f.payload),
        _ => false,
    }
}

/// Is this packet part of a greeting (`Hello`) or handshake proof (`Auth`) to one
/// station? Such packets may run past the burst limit: on a slotted link a greeting
/// takes five frames and its proof four, and a proof left for the next turn costs the
/// peer a turn of its own (it greets again) and both a round trip of a minute or more.
/// `Some(Some(tid))` for the first fragment of such a transfer (later fragments are
/// recognised by `tids`), `Some(None)` for the rest.
fn handshake_part(dest: &Dest, p: &[u8], tids: &[u32]) -> Option<Option<u32>> {
    if !matches!(dest, Dest::Peer(_)) {
        return None;
    }
    // Kinds 1 and 16: `Hello` and `Auth`.
    let handshake = |m: &[u8]| matches!(envelope::peek_kind(m), Some(1 | 16));
    match frag::parse(p).ok()? {
        frag::Packet::Whole(m) if handshake(m) => Some(None),
        frag::Packet::Fragment(f) if f.index == 0 && handshake(f.payload) => {
            Some(Some(f.transfer_id))
        }
        frag::Packet::Fragment(f) if f.index > 0 && tids.contains(&f.transfer_id) => Some(None),
        _ => None,
    }
}

/// Estimated air time of a packet of `len` bytes: AX.25 frame overhead and 2 % bit
/// stuffing (1.6 % on random bytes, what signatures and hashes are); on a slotted link (JS8Call, whose framing is in its effective bit rate)
/// whole slots.
pub fn airtime_ms(caps: &LinkCaps, len: usize) -> u64 {
    if caps.bitrate_bps == 0 {
        return 0;
    }
    if caps.slot_ms > 0 {
        let ms = (len as u64 * 8 * 1000).div_ceil(caps.bitrate_bps);
        return ms.div_ceil(caps.slot_ms).max(1) * caps.slot_ms;
    }
    let bits = ((len + FRAME_OVERHEAD) as u64) * 8 * 102 / 100;
    (bits * 1000).div_ceil(caps.bitrate_bps)
}

/// Does this link need the packet layer? Radio channels and small MTUs need it for
/// fragmentation; any link with a known, finite bit rate needs it for pacing, so that
/// requests and acknowledgements are not stuck behind minutes of queued bulk data.
pub fn is_packet_link(caps: &LinkCaps) -> bool {
    !caps.connection_oriented
        || caps.mtu < crate::wire::envelope::MAX_MESSAGE_LEN
        || caps.bitrate_bps > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn radio() -> LinkCaps {
        LinkCaps {
            mtu: 256,
            bitrate_bps: 1200,
            half_duplex: true,
            broadcast: true,
            text_only: false,
            connection_oriented: false,
            radio: true,
            blocks: true,
            carrier_sense: true,
            slot_ms: 0,
        }
    }

    #[test]
    fn airtime_matches_1200_baud() {
        // 256 + 20 bytes at 1200 bit/s with stuffing: about 1.9 s.
        let t = airtime_ms(&radio(), 256);
        assert!((1850..1950).contains(&t), "{t}");
        assert_eq!(airtime_ms(&LinkCaps::tcp(), 1000), 0);
    }

    #[test]
    fn release_is_paced_and_control_overtakes_bulk() {
        // Full duplex (no turns): the TNC is kept fed about 10 s ahead.
        let caps = LinkCaps {
            half_duplex: false,
            ..radio()
        };
        let mut l = PacketLink::new(caps, 0, 0, 100, 1);
        let big = vec![7u8; 4000];
        assert!(l.enqueue(0, Dest::Peer(1), &big, Priority::Bulk));
        let n_frags = l.queued();
        assert!(n_frags >= 16);
        l.enqueue(0, Dest::Peer(1), &[1, 2, 3], Priority::Control);
        let mut out = Vec::new();
        l.release(100, &mut out);
        // The control packet went first, and only ~10 s of air was released.
        assert_eq!(out[0].1, vec![0, 1, 2, 3]);
        assert!(
            out.len() < n_frags,
            "released {} of {}",
            out.len(),
            n_frags + 1
        );
        let released = out.len();
        l.release(60_000, &mut out);
        assert!(
            out.len() > released,
            "more released once the air time has passed"
        );
    }

    /// With turns, a burst goes to the TNC whole when it starts (a TNC keys up for what it
    /// holds, so a frame handed over later is a key-up of its own, after a gap the peer
    /// takes for its answer), up to the burst's length, ending with OVER|MORE; the next
    /// waits for the peer's turn.
    #[test]
    fn a_burst_is_handed_over_whole_and_cut_at_its_length() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        assert!(l.takes_turns());
        let big = vec![7u8; 12_000];
        assert!(l.enqueue(0, Dest::Peer(1), &big, Priority::Bulk));
        let total = l.queued();
        let mut out = Vec::new();
        l.release(100, &mut out);
        let air: u64 = out.iter().map(|(_, p)| l.airtime_ms(p.len())).sum();
        assert!((40_000..=BURST_MS).contains(&air), "{air} ms in one burst");
        assert!(out.len() < total);
        let last = &out.last().unwrap().1;
        assert!(frag::is_over(last) && frag::is_more(last));
        assert!(out[..out.len() - 1].iter().all(|(_, p)| !frag::is_over(p)));
        // Nothing is appended while the burst is on the air, nor right after it.
        let n = out.len();
        l.release(30_000, &mut out);
        l.release(l.burst_end() + 1, &mut out);
        assert_eq!(out.len(), n);
        // After the yield the rest goes, a burst at a time.
        for _ in 0..2 {
            l.release(l.burst_end() + 10_000, &mut out);
        }
        assert_eq!(out.len(), total);
        assert!(frag::is_over(&out.last().unwrap().1));
    }

    /// A frame heard from another station while part of our burst should have been on
    /// the air: our TNC sent nothing then, so our burst ends that much later, and our yield
    /// is not cut short (only a station heard after our burst is taking its turn).
    #[test]
    fn a_frame_heard_during_our_burst_moves_its_end() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        l.enqueue(0, Dest::Peer(1), &vec![7u8; 2000], Priority::Bulk);
        let mut out = Vec::new();
        l.release(1_000, &mut out);
        let end = l.burst_end();
        let quiet = l.quiet_until;
        assert!(end > 10_000 && quiet > end);
        let other = frag::split(9, &[1u8; 200], 256).unwrap().remove(0);
        let air = l.airtime_ms(other.len());
        l.heard(3_000, &other);
        assert_eq!(l.burst_end(), end + air);
        assert_eq!(l.quiet_until, quiet + air);
        // Heard after our burst: the other station's turn; our yield is over.
        l.heard(l.burst_end() + air + 500, &other);
        assert_eq!(l.quiet_until, 0);
    }

    /// After its last NACK round a receiver drops the partial transfer, so that it is not
    /// asked for again every stall time for ever (the count used to start over).
    #[test]
    fn nack_rounds_end_and_the_partial_transfer_is_dropped() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let frags = frag::split(4, &[5u8; 1000], 256).unwrap();
        assert!(l.reasm.insert(0, 9, &frags[0]).unwrap().is_none());
        for _ in 0..MAX_NACK_ROUNDS {
            assert!(l.nack_round(9, 4));
        }
        assert!(l.reasm.missing(9, 4).is_some());
        assert!(!l.nack_round(9, 4), "gave up");
        assert!(!l.reasm.holds(9, 4), "partial transfer dropped");
        assert!(l.reasm.stalled(u64::MAX / 2, 0).is_empty());
    }

    /// A station that asks for a block again while our answer still waits in our queue
    /// (its request sat in its TNC behind another station's burst) gets it once; a push
    /// asking for an end-to-end ack still goes, and once the answer has left, a new
    /// request is answered.
    #[test]
    fn a_block_asked_for_again_while_queued_goes_once() {
        let caps = LinkCaps { mtu: 64, ..radio() };
        let mut l = PacketLink::new(caps, 0, 0, 100, 1);
        let net = crate::chain::params::regtest().network_id();
        let block = crate::chain::params::regtest().genesis;
        let msg = crate::wire::Message::Block(block);
        let answer = |id| envelope::encode(net, id, &msg);
        assert!(l.enqueue(0, Dest::Peer(5), &answer(1), Priority::Bulk));
        let one = l.queued();
        assert!(one > 1, "a transfer of {one} packets");
        assert!(l.enqueue(0, Dest::Peer(5), &answer(2), Priority::Bulk));
        assert_eq!(l.queued(), one, "the second request queued a second copy");
        // Another station, or another message, is another transfer.
        assert!(l.enqueue(0, Dest::Peer(6), &answer(3), Priority::Bulk));
        assert_eq!(l.queued(), 2 * one);
        let push = answer(crate::wire::message::ACK_REQUESTED_MIN_ID + 1);
        assert!(l.enqueue(0, Dest::Peer(5), &push, Priority::Bulk));
        assert_eq!(l.queued(), 3 * one);
        let mut out = Vec::new();
        let mut t = 0;
        while l.queued() > 0 {
            t += 60_000;
            l.release(t, &mut out);
        }
        assert!(l.enqueue(t, Dest::Peer(5), &answer(4), Priority::Bulk));
        assert_eq!(l.queued(), one);
    }

    /// A transfer whose fragment ended a burst cut with OVER|MORE is under way until the
    /// sender could have earned its next burst (as long again, at a 50 % duty cycle), not
    /// only a stall time: a NACK before then names what is still to come.
    #[test]
    fn a_transfer_cut_with_more_is_under_way_until_its_sender_goes_on() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let mut frags = frag::split(3, &[7u8; 4000], 256).unwrap();
        let stall = l.stall_ms();
        // A burst of eight fragments, cut: the last carries OVER|MORE.
        frag::set_over(&mut frags[7], true);
        let mut t = 10_000;
        for f in &frags[..8] {
            t += l.airtime_ms(f.len());
            l.heard(t, f);
            l.reasm.insert(t, 9, f).unwrap();
        }
        let burst = 8 * l.airtime_ms(256);
        assert!(burst > 2 * stall, "a burst of {burst} ms");
        // The stall path asks `receiving_from` before a NACK.
        assert!(l.receiving_from(t + 2 * stall, 9, stall));
        assert!(l.receiving_from(t + burst, 9, stall));
        assert!(!l.receiving_from(t + burst + stall + 1, 9, stall));
        // Another station has nothing under way.
        assert!(!l.receiving_from(t + 2 * stall, 8, stall));
    }

    /// NACK rounds that bring fragments do not count towards giving up: a sender whose
    /// duty-cycle budget is spent answers a frame or two per round.
    #[test]
    fn nack_rounds_that_bring_fragments_do_not_count() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let frags = frag::split(4, &[5u8; 6000], 256).unwrap();
        assert!(frags.len() > 2 * MAX_NACK_ROUNDS as usize);
        assert!(l.reasm.insert(0, 9, &frags[0]).unwrap().is_none());
        for f in &frags[1..2 * MAX_NACK_ROUNDS as usize] {
            assert!(l.nack_round(9, 4), "gave up while fragments came");
            assert!(l.reasm.insert(1, 9, f).unwrap().is_none());
        }
        for _ in 0..MAX_NACK_ROUNDS {
            assert!(l.nack_round(9, 4));
        }
        assert!(!l.nack_round(9, 4), "eight rounds that brought nothing");
    }

    /// A NACK made while the sender's burst was still on the air is brought up to date
    /// when our turn comes: it asks only for what is still missing then, or goes.
    #[test]
    fn a_queued_nack_asks_for_what_is_missing_when_it_leaves() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let frags = frag::split(7, &[9u8; 1000], 256).unwrap();
        assert!(l.reasm.insert(0, 4, &frags[0]).unwrap().is_none());
        let stale = l.reasm.nack(4, 7).unwrap();
        l.queue_nack(0, 4, 7, stale.clone());
        // The rest of the transfer arrives before our turn.
        for f in &frags[1..] {
            let _ = l.reasm.insert(1, 4, f).unwrap();
        }
        let mut out = Vec::new();
        l.release(60_000, &mut out);
        assert!(
            out.is_empty(),
            "a NACK for a complete transfer went out: {out:?}"
        );
        // A transfer still missing its last fragment: the NACK names only that one.
        let frags = frag::split(8, &[9u8; 1000], 256).unwrap();
        l.reasm.insert(60_000, 4, &frags[0]).unwrap();
        let stale = l.reasm.nack(4, 8).unwrap();
        l.queue_nack(60_000, 4, 8, stale.clone());
        for f in &frags[1..frags.len() - 1] {
            let _ = l.reasm.insert(60_001, 4, f).unwrap();
        }
        l.release(120_000, &mut out);
        assert_eq!(out.len(), 1);
        let frag::Packet::Nack(n) = frag::parse(&out[0].1).unwrap() else {
            panic!("not a nack")
        };
        assert_eq!(n.indices(frags.len() as u32), vec![frags.len() as u32 - 1]);
    }

    /// A NACK naming fragments that are still queued here (our burst was cut, the rest
    /// goes in the next one) does not queue them a second time.
    #[test]
    fn a_nack_for_fragments_still_queued_sends_them_once() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        l.enqueue(0, Dest::Peer(5), &vec![3u8; 12_000], Priority::Bulk);
        let total = l.queued();
        let mut out = Vec::new();
        l.release(100, &mut out);
        assert!(out.len() < total, "the burst was cut");
        let all: Vec<u32> = (0..total as u32).collect();
        let nack = frag::Nack::from_indices(1, &all);
        assert_eq!(l.repair(200, 5, &nack), Repair::Done);
        // Only what already went out is queued again.
        assert_eq!(l.queued(), total);
        assert_eq!(l.repaired as usize, out.len());
    }

    #[test]
    fn nack_repairs_exactly_the_missing_fragments_and_ack_frees_them() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let msg: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        l.enqueue(0, Dest::Peer(5), &msg, Priority::Bulk);
        let mut out = Vec::new();
        let mut t = 0;
        while l.queued() > 0 {
            t += 60_000;
            l.release(t, &mut out);
        }
        let frags: Vec<Vec<u8>> = out.iter().map(|(_, p)| p.clone()).collect();
        // Receiver gets all but fragments 2 and 5.
        let mut r = Reassembler::new(ReassemblerConfig::default());
        for (i, f) in frags.iter().enumerate() {
            if i != 2 && i != 5 {
                assert_eq!(r.insert(0, 5, f).unwrap(), None);
            }
        }
        let nack_bytes = r.nack(5, 1).unwrap();
        let frag::Packet::Nack(nack) = frag::parse(&nack_bytes).unwrap() else {
            panic!("not a nack")
        };
        assert_eq!(l.repair(0, 5, &nack), Repair::Done);
        let mut again = Vec::new();
        l.release(t + 60_000, &mut again);
        assert_eq!(
            again.len(),
            2,
            "exactly the two missing fragments are resent"
        );
        let mut done = None;
        for (_, f) in again {
            done = r.insert(1, 5, &f).unwrap().or(done);
        }
        assert_eq!(done, Some(msg));
        let ack = r.nack(5, 1).unwrap();
        let frag::Packet::Nack(ack) = frag::parse(&ack).unwrap() else {
            panic!()
        };
        assert_eq!(l.repair(0, 5, &ack), Repair::Done);
        assert_eq!(
            l.repair(0, 5, &ack),
            Repair::NotHeld,
            "an ACK frees the repair copy"
        );
    }

    /// Two stations that lack different symbols of a coded broadcast ask for a count each;
    /// the sender queues new repair symbols once for both (what the worse one needs, not
    /// the sum), and each station decodes from what it got plus those.
    #[test]
    fn requests_for_more_symbols_are_served_once_for_every_station() {
        let mut l = PacketLink::new(radio(), 0, 0, 100, 1);
        let msg: Vec<u8> = (0..8000u32).map(|i| (i * 7) as u8).collect();
        assert!(l.enqueue_coded(0, 1, &msg, &[5, 6]));
        let mut out = Vec::new();
        let mut t = 0;
        while l.queued() > 0 {
            t += 60_000;
            l.release(t, &mut out);
        }
        let sent: Vec<Vec<u8>> = out.iter().map(|(_, p)| p.clone()).collect();
        let count = fountain::parse_symbol(&sent[0]).unwrap().count as usize;
        assert!(
            sent.len() > count,
            "repair symbols follow the source symbols"
        );
        // Station 5 loses every fourth frame, station 6 every third from the second.
        let mut a = Reassembler::default();
        let mut b = Reassembler::default();
        for (i, p) in sent.iter().enumerate() {
            if i % 4 != 0 {
                assert_eq!(a.insert(1, 9, p), Ok(None));
            }
            if i % 3 != 1 {
                assert_eq!(b.insert(1, 9, p), Ok(None));
            }
        }
        let (ra, rb) = (a.nack(9, 1).unwrap(), b.nack(9, 1).unwrap());
        let (ma, mb) = (
            fountain::parse_more(&ra).unwrap(),
            fountain::parse_more(&rb).unwrap(),
        );
        assert!(ma.need > 0 && mb.need > ma.need, "{ma:?} {mb:?}");
        assert_eq!(l.coded(t, 5, &ra), Ok(None));
        assert_eq!(l.coded(t, 6, &rb), Ok(None));
        let fresh = l.queued() as u32;
        // The loss each reported: a quarter and a third of what aired.
        let (la, lb) = (l.reported_loss(5).unwrap(), l.reported_loss(6).unwrap());
        assert!((200_000..300_000).contains(&la), "{la}");
        assert!((280_000..400_000).contains(&lb), "{lb}");
        let (na, nb) = (symbols_for(ma.need, la), symbols_for(mb.need, lb));
        assert!(
            fresh >= nb && fresh < na + nb,
            "{fresh} symbols for requests of {na} and {nb}"
        );
        let mut again = Vec::new();
        l.release(t + 60_000, &mut again);
        assert!(again.iter().all(|(d, _)| *d == Dest::Broadcast(1)));
        let mut got = (None, None);
        for (_, p) in &again {
            got.0 = a.insert(2, 9, p).unwrap().or(got.0);
            got.1 = b.insert(2, 9, p).unwrap().or(got.1);
        }
        assert_eq!(got.0.as_deref(), Some(&msg[..]));
        assert_eq!(got.1.as_deref(), Some(&msg[..]));
    }

    /// The repair a coded burst carries follows the loss reported: none reported is a
    /// small margin, a third lost is about half as much again.
    #[test]
    fn repair_follows_the_loss_reported() {
        assert_eq!(symbols_for(33, 0), 33);
        let low = symbols_for(33, PRIOR_LOSS_PPM);
        let ten = symbols_for(33, 100_000);
        let third = symbols_for(33, 333_000);
        assert!(33 < low && low < ten && ten < third, "{low} {ten} {third}");
        assert!((38..44).contains(&ten), "{ten}");
        assert!((55..65).contains(&third), "{third}");
        assert_eq!(symbols_for(0, 100_000), 0);
    }
}
