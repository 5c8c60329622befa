//! One shared radio channel with a KISS TNC per station, in virtual time: a sans-IO model
//! of what the air does to frames, so that tests cannot pass only because the simulated
//! channel is kinder than the real one.
//!
//! The model follows Direwolf 1.6 (`xmit.c`, `wait_for_clear_channel`, `xmit_ax25_frames`;
//! DCD in `demod_afsk.c`):
//!
//! - A node hands frames to its station's TNC queue ([`Channel::send`]); the queue is
//!   bounded (Direwolf discards a UI frame when more than 100 are waiting).
//! - p-persistent CSMA: a station with queued frames waits until it senses the channel
//!   clear, then every SLOTTIME re-checks the channel and keys up with probability
//!   p = (PERSIST+1)/256 (Direwolf: `rand() & 0xff <= persist`). Even with PERSIST 255 it
//!   first waits one SLOTTIME. Sensing a carrier again sends it back to waiting for clear.
//!   After 60 s of busy channel Direwolf discards the frame it was trying to send.
//! - Carrier detect is not instant: a transmission is sensed by a station only `dcd_ms`
//!   after it started, and only if that station hears the sender. Two stations that key
//!   up within that time both transmit.
//! - A key-up sends TXDELAY of flags, then every queued frame back to back (frames handed
//!   while it sends join the same transmission), then TXTAIL.
//! - Half duplex: a keyed station (TXDELAY through TXTAIL) hears nothing.
//! - A receiver decodes a frame only if it hears the sender, was not keyed at any moment of
//!   the frame, and no other transmission it hears overlapped the frame (no capture
//!   effect: FM capture would sometimes save the stronger one; we assume it does not).
//! - Audibility is a matrix ([`Channel::set_hears`]): hidden terminals do not sense each
//!   other and collide at a station in the middle.
//! - Random loss (`loss_ppm`) per frame per receiver on top, from the seeded RNG.
//! - Slotted mode (`carrier_sense: false`, `slot_ms > 0`, like JS8Call): a station keys up
//!   at the next slot boundary whatever is on the air, one frame per key-up; two stations
//!   in the same slot collide.
//!
//! Time is whatever the caller says (`now`, ms); randomness comes from
//! [`crate::rng::Rng`] seeded at construction, so the same seed and the same calls give the
//! same run. Call [`Channel::advance`] at [`Channel::next_event`] to interleave exactly with
//! the nodes: every delivery it returns is then at that instant, and what the nodes send in
//! response is handed in at the same instant.

use crate::rng::Rng;
use std::collections::VecDeque;

/// Timing and physics of the channel. [`ChannelConfig::default`] is Direwolf 1.6's
/// defaults on a 1200 bit/s AFSK VHF channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Line rate in bit/s (0: frames take no time).
    pub bitrate_bps: u64,
    /// Flags sent after keying up, before the first frame (Direwolf TXDELAY 30 × 10 ms:
    /// radios need this long to reach full power and open the far squelch).
    pub txdelay_ms: u64,
    /// Flags sent after the last frame, before unkeying (Direwolf TXTAIL 10 × 10 ms).
    pub txtail_ms: u64,
    /// Time between channel-access attempts (Direwolf SLOTTIME 10 × 10 ms).
    pub slottime_ms: u64,
    /// Persistence: key up at a slot with probability (persist+1)/256 (Direwolf 63: 1/4).
    pub persist: u8,
    /// Time from the start of a transmission until a station hearing it senses the
    /// carrier. Direwolf's DCD for 1200 bit/s AFSK is a PLL lock score (30 of the last 32
    /// symbol transitions where expected: ≥ 25 ms of signal), behind the receiver's audio
    /// path and the sender's transmitter rise time (tens of ms on FM radios; TXDELAY
    /// exists because of it), and the TNC polls DCD every 10 ms: about 60 ms in all.
    pub dcd_ms: u64,
    /// Bytes added to each frame on the air: AX.25 UI header (two addresses, control, PID:
    /// 16), FCS (2) and the opening and closing flags (2).
    pub frame_overhead: usize,
    /// HDLC bit stuffing, in bits per thousand (a zero after five ones: 1.6 % on random
    /// bytes, less on data with zeros; 2 % assumed).
    pub stuffing_permille: u64,
    /// Probability, per frame and receiver, that a frame that would be decoded is lost
    /// anyway (noise, fading), in parts per million.
    pub loss_ppm: u32,
    /// Frames a station's TNC holds waiting; more are dropped (Direwolf: 100).
    pub queue_frames: usize,
    /// A station that sensed the channel busy this long drops the frame it was trying to
    /// send (Direwolf's WAIT_TIMEOUT_MS, 60 s); 0: never.
    pub busy_timeout_ms: u64,
    /// Listen before keying up (p-persistent CSMA). False on JS8Call, and on Direwolf in
    /// full-duplex mode (key up at once, no random wait) when `slot_ms` is 0.
    pub carrier_sense: bool,
    /// A frame handed to a keyed-up station joins the transmission only if handed at least
    /// this long before the frame on the air ends. Direwolf bundles whatever is queued
    /// when it finishes generating the previous frame's audio, and generation runs ahead
    /// of the air by the sound card's output buffer (device dependent, up to a second or
    /// more). Default 200 ms, a typical output buffer; 0 lets every frame handed before
    /// the last one ends join.
    pub bundle_lead_ms: u64,
    /// Without carrier sense: key up only at multiples of this (JS8Call's frame period),
    /// one frame per key-up, no TXDELAY or TXTAIL (the period includes JS8's own); 0: not
    /// slotted.
    pub slot_ms: u64,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            bitrate_bps: 1200,
            txdelay_ms: 300,
            txtail_ms: 100,
            slottime_ms: 100,
            persist: 63,
            dcd_ms: 60,
            frame_overhead: 20,
            stuffing_permille: 20,
            loss_ppm: 0,
            queue_frames: 100,
            busy_timeout_ms: 60_000,
            carrier_sense: true,
            bundle_lead_ms: 200,
            slot_ms: 0,
        }
    }
}

impl ChannelConfig {
    /// A slotted channel without carrier sense (JS8Call-like): `bitrate_bps` of payload,
    /// key-ups on multiples of `slot_ms`, no AX.25 framing.
    pub fn slotted(bitrate_bps: u64, slot_ms: u64) -> ChannelConfig {
        ChannelConfig {
            bitrate_bps,
            txdelay_ms: 0,
            txtail_ms: 0,
            frame_overhead: 0,
            stuffing_permille: 0,
            carrier_sense: false,
            slot_ms,
            ..ChannelConfig::default()
        }
    }

    /// Key-ups only on slot boundaries?
    pub fn is_slotted(&self) -> bool {
        !self.carrier_sense && self.slot_ms > 0
    }

    /// Air time of a frame carrying `len` bytes: (len + overhead) × 8 × (1 + stuffing) /
    /// bitrate, rounded up to the millisecond.
    pub fn airtime_ms(&self, len: usize) -> u64 {
        if self.bitrate_bps == 0 {
            return 0;
        }
        let bits_x1000 = (len + self.frame_overhead) as u64 * 8 * (1000 + self.stuffing_permille);
        bits_x1000.div_ceil(self.bitrate_bps)
    }
}

/// A frame decoded by one station.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When the frame ended (ms): when the receiver has it.
    pub at: u64,
    /// Sending station.
    pub from: usize,
    /// Receiving station.
    pub to: usize,
    /// The AX.25 destination the sender gave (None: broadcast). Every station that hears
    /// the frame decodes it; the receiver's link filters on this, not the channel.
    pub dest: Option<usize>,
    /// The frame's information field.
    pub bytes: Vec<u8>,
}

/// What one station's TNC did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StationStats {
    /// Times the transmitter was keyed up.
    pub key_ups: u64,
    /// Frames sent.
    pub frames: u64,
    /// Information bytes sent (framing not counted).
    pub bytes: u64,
    /// Time keyed up, TXDELAY and TXTAIL included (ms).
    pub air_ms: u64,
    /// Frames refused because the TNC queue was full.
    pub dropped_full: u64,
    /// Frames dropped after waiting `busy_timeout_ms` for a clear channel.
    pub dropped_busy: u64,
}

/// What happened to frames at receivers. Each (frame, station that hears its sender) pair
/// counts once, in the first matching category: deaf, collision, lost, delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Decoded.
    pub delivered: u64,
    /// Destroyed by another transmission the receiver hears.
    pub collisions: u64,
    /// The receiver was keyed up during the frame.
    pub deaf: u64,
    /// Lost to random loss (`loss_ppm`).
    pub lost: u64,
}

/// One transmission (PTT on to PTT off).
#[derive(Clone, Debug)]
struct KeyUp {
    id: u64,
    station: usize,
    start: u64,
    /// None while still keyed.
    end: Option<u64>,
}

impl KeyUp {
    /// Does this transmission overlap `[from, to)`?
    fn overlaps(&self, from: u64, to: u64) -> bool {
        self.start < to && self.end.is_none_or(|e| e > from)
    }
}

#[derive(Clone, Debug)]
enum Phase {
    TxDelay,
    Frame {
        start: u64,
        dest: Option<usize>,
        bytes: Vec<u8>,
    },
    Tail,
}

#[derive(Clone, Debug)]
enum State {
    /// Nothing queued.
    Idle,
    /// Waiting for the channel to be sensed clear; look again at `check` (busy since
    /// `last` at least).
    WaitClear { check: u64, last: u64 },
    /// Channel was clear: at `at`, sense again, then draw against PERSIST.
    Persist { at: u64 },
    /// Key up at `at` without listening (slot boundary, or no carrier sense).
    KeyAt { at: u64 },
    /// Transmitting transmission `key`; the current phase ends at `until`.
    Keyed { key: u64, phase: Phase, until: u64 },
}

struct Station {
    /// (destination, bytes, when handed).
    queue: VecDeque<(Option<usize>, Vec<u8>, u64)>,
    state: State,
    /// Time spent sensing a busy channel for the frame at the head of the queue.
    busy_waited: u64,
    stats: StationStats,
}

/// The shared channel. Stations are numbered `0..n`.
pub struct Channel {
    cfg: ChannelConfig,
    stations: Vec<Station>,
    /// `hears[listener * n + sender]`.
    hears: Vec<bool>,
    /// Transmissions that may still matter (ongoing, or overlapping a frame on the air).
    keyups: Vec<KeyUp>,
    next_key: u64,
    now: u64,
    rng: Rng,
    stats: ChannelStats,
    trace: bool,
    describe: Option<fn(&[u8]) -> String>,
}

impl Channel {
    /// `n` stations that all hear each other, seeded from `seed`. Tracing is on when the
    /// `AIR_TRACE` environment variable is set.
    pub fn new(n: usize, cfg: ChannelConfig, seed: u64) -> Channel {
        let stations = (0..n)
            .map(|_| Station {
                queue: VecDeque::new(),
                state: State::Idle,
                busy_waited: 0,
                stats: StationStats::default(),
            })
            .collect();
        Channel {
            cfg,
            stations,
            hears: vec![true; n * n],
            keyups: Vec::new(),
            next_key: 1,
            now: 0,
            rng: Rng::new(seed),
            stats: ChannelStats::default(),
            trace: std::env::var_os("AIR_TRACE").is_some(),
            describe: None,
        }
    }

    /// Number of stations.
    pub fn stations(&self) -> usize {
        self.stations.len()
    }

    /// The configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Change the configuration (loss, PERSIST, ...); takes effect from the next event.
    pub fn config_mut(&mut self) -> &mut ChannelConfig {
        &mut self.cfg
    }

    /// Print key-ups, frames and their fate on stderr (also on with `AIR_TRACE`).
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    /// How the trace names a frame's contents.
    pub fn set_describe(&mut self, f: fn(&[u8]) -> String) {
        self.describe = Some(f);
    }

    /// Can `a` and `b` hear each other (both directions: radio paths are reciprocal)?
    pub fn set_hears(&mut self, a: usize, b: usize, hears: bool) {
        self.set_hears_one_way(a, b, hears);
        self.set_hears_one_way(b, a, hears);
    }

    /// Can `listener` hear `sender` (one direction only: different power or antennas)?
    pub fn set_hears_one_way(&mut self, listener: usize, sender: usize, hears: bool) {
        let n = self.stations.len();
        if listener < n && sender < n {
            self.hears[listener * n + sender] = hears;
        }
    }

    /// Does `listener` hear `sender`?
    pub fn hears(&self, listener: usize, sender: usize) -> bool {
        let n = self.stations.len();
        listener < n && sender < n && self.hears[listener * n + sender]
    }

    /// Channel-wide counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// One station's counters (default for an unknown station).
    pub fn station_stats(&self, s: usize) -> StationStats {
        self.stations
            .get(s)
            .map(|st| st.stats.clone())
            .unwrap_or_default()
    }

    /// Frames waiting in a station's TNC (the one on the air not counted).
    pub fn queued(&self, s: usize) -> usize {
        self.stations.get(s).map_or(0, |st| st.queue.len())
    }

    /// Is station `s` keyed up?
    pub fn keyed(&self, s: usize) -> bool {
        self.stations
            .get(s)
            .is_some_and(|st| matches!(st.state, State::Keyed { .. }))
    }

    /// Nothing queued and nobody keyed?
    pub fn idle(&self) -> bool {
        self.stations
            .iter()
            .all(|st| matches!(st.state, State::Idle))
    }

    /// Hand a frame for `dest` (None: broadcast) to station `s`'s TNC at `now`. False if
    /// the station does not exist or its queue is full (the frame is dropped, as a TNC
    /// does).
    pub fn send(&mut self, now: u64, s: usize, dest: Option<usize>, bytes: Vec<u8>) -> bool {
        let now = now.max(self.now);
        let limit = self.cfg.queue_frames;
        let Some(st) = self.stations.get_mut(s) else {
            return false;
        };
        if st.queue.len() >= limit {
            st.stats.dropped_full += 1;
            if self.trace {
                eprintln!("[air] {now} st{s} TNC queue full: frame dropped");
            }
            return false;
        }
        st.queue.push_back((dest, bytes, now));
        if matches!(st.state, State::Idle) {
            self.begin_access(s, now);
        }
        true
    }

    /// When the channel next does something (ms; `u64::MAX` when idle).
    pub fn next_event(&self) -> u64 {
        self.next_station_event().map_or(u64::MAX, |(t, _)| t)
    }

    /// Run the channel up to `now` and return the frames decoded meanwhile, in time order.
    pub fn advance(&mut self, now: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some((t, s)) = self.next_station_event() {
            if t > now {
                break;
            }
            self.now = self.now.max(t);
            self.step(s, t, &mut out);
        }
        self.now = self.now.max(now);
        self.prune();
        out
    }

    /// The earliest pending event: (time, station). Phase ends of keyed stations come
    /// first at equal times, so a carrier that stops at `t` is not sensed at `t`.
    fn next_station_event(&self) -> Option<(u64, usize)> {
        self.stations
            .iter()
            .enumerate()
            .filter_map(|(i, st)| match st.state {
                State::Idle => None,
                State::Keyed { until, .. } => Some((until, 0u8, i)),
                State::WaitClear { check: t, .. }
                | State::Persist { at: t }
                | State::KeyAt { at: t } => Some((t, 1u8, i)),
            })
            .min()
            .map(|(t, _, i)| (t, i))
    }

    /// A station with frames starts contending for the channel at `t`.
    fn begin_access(&mut self, s: usize, t: u64) {
        let state = if self.cfg.is_slotted() {
            State::KeyAt {
                at: t.div_ceil(self.cfg.slot_ms) * self.cfg.slot_ms,
            }
        } else if !self.cfg.carrier_sense {
            State::KeyAt { at: t }
        } else {
            State::WaitClear { check: t, last: t }
        };
        self.stations[s].busy_waited = 0;
        self.stations[s].state = state;
    }

    /// If `s` senses a carrier at `t`: the earliest time it might stop.
    fn sensed_busy(&self, s: usize, t: u64) -> Option<u64> {
        self.keyups
            .iter()
            .filter(|k| {
                k.station != s
                    && self.hears(s, k.station)
                    && k.start + self.cfg.dcd_ms <= t
                    && k.end.is_none_or(|e| e > t)
            })
            .map(|k| match (k.end, &self.stations[k.station].state) {
                (Some(e), _) => e,
                // Still keyed: it ends no earlier than its current phase.
                (None, State::Keyed { until, .. }) => *until,
                (None, _) => t,
            })
            .min()
            .map(|e| e.max(t + 1))
    }

    fn step(&mut self, s: usize, t: u64, out: &mut Vec<Delivery>) {
        let state = std::mem::replace(&mut self.stations[s].state, State::Idle);
        match state {
            State::Idle => {}
            State::WaitClear { last, .. } => match self.sensed_busy(s, t) {
                Some(lb) => {
                    let st = &mut self.stations[s];
                    st.busy_waited += t - last;
                    if self.cfg.busy_timeout_ms > 0 && st.busy_waited >= self.cfg.busy_timeout_ms {
                        st.busy_waited = 0;
                        st.queue.pop_front();
                        st.stats.dropped_busy += 1;
                        if self.trace {
                            eprintln!("[air] {t} st{s} channel busy too long: frame dropped");
                        }
                        if st.queue.is_empty() {
                            return;
                        }
                    }
                    self.stations[s].state = State::WaitClear { check: lb, last: t };
                }
                None => {
                    self.stations[s].state = State::Persist {
                        at: t + self.cfg.slottime_ms,
                    };
                }
            },
            State::Persist { .. } => {
                if self.sensed_busy(s, t).is_some() {
                    if self.trace {
                        eprintln!("[air] {t} st{s} senses a carrier: defers");
                    }
                    self.stations[s].state = State::WaitClear { check: t, last: t };
                } else if self.rng.below(256) <= u64::from(self.cfg.persist) {
                    self.key_up(s, t);
                } else {
                    self.stations[s].state = State::Persist {
                        at: t + self.cfg.slottime_ms,
                    };
                }
            }
            State::KeyAt { .. } => self.key_up(s, t),
            State::Keyed { key, phase, .. } => match phase {
                Phase::TxDelay => self.next_frame(s, key, t, true),
                Phase::Frame { start, dest, bytes } => {
                    self.finish_frame(s, key, start, t, dest, bytes, out);
                    if self.cfg.is_slotted() {
                        self.key_down(s, key, t);
                    } else {
                        self.next_frame(s, key, t, false);
                    }
                }
                Phase::Tail => self.key_down(s, key, t),
            },
        }
    }

    fn key_up(&mut self, s: usize, t: u64) {
        let key = self.next_key;
        self.next_key += 1;
        self.keyups.push(KeyUp {
            id: key,
            station: s,
            start: t,
            end: None,
        });
        self.stations[s].stats.key_ups += 1;
        if self.trace {
            eprintln!(
                "[air] {t} st{s} KEY UP with {} frame(s) queued",
                self.stations[s].queue.len()
            );
        }
        if self.cfg.is_slotted() {
            // JS8Call: one frame per period, starting at the boundary.
            self.next_frame(s, key, t, true);
        } else {
            self.stations[s].state = State::Keyed {
                key,
                phase: Phase::TxDelay,
                until: t + self.cfg.txdelay_ms,
            };
        }
    }

    /// Send the next queued frame at `t`, or start TXTAIL if there is none (or, after a
    /// frame, if it came too late to be bundled).
    fn next_frame(&mut self, s: usize, key: u64, t: u64, first: bool) {
        let lead = self.cfg.bundle_lead_ms;
        let st = &mut self.stations[s];
        let joins = |handed: u64| first || handed.saturating_add(lead) <= t;
        let next = match st.queue.front() {
            Some((_, _, handed)) if joins(*handed) => st.queue.pop_front(),
            _ => None,
        };
        match next {
            Some((dest, bytes, _)) => {
                st.busy_waited = 0;
                let until = t + self.cfg.airtime_ms(bytes.len());
                st.state = State::Keyed {
                    key,
                    phase: Phase::Frame {
                        start: t,
                        dest,
                        bytes,
                    },
                    until,
                };
            }
            None => {
                st.state = State::Keyed {
                    key,
                    phase: Phase::Tail,
                    until: t + self.cfg.txtail_ms,
                };
            }
        }
    }

    fn key_down(&mut self, s: usize, key: u64, t: u64) {
        if let Some(k) = self.keyups.iter_mut().find(|k| k.id == key) {
            k.end = Some(t);
            self.stations[s].stats.air_ms += t - k.start;
            if self.trace {
                eprintln!("[air] {t} st{s} key down after {} ms", t - k.start);
            }
        }
        if self.stations[s].queue.is_empty() {
            self.stations[s].state = State::Idle;
        } else {
            self.begin_access(s, t);
        }
    }

    /// The frame `[start, end)` from `s` is over: who decoded it?
    #[allow(clippy::too_many_arguments)]
    fn finish_frame(
        &mut self,
        s: usize,
        key: u64,
        start: u64,
        end: u64,
        dest: Option<usize>,
        bytes: Vec<u8>,
        out: &mut Vec<Delivery>,
    ) {
        let st = &mut self.stations[s].stats;
        st.frames += 1;
        st.bytes += bytes.len() as u64;
        let mut fates = Vec::new();
        for r in 0..self.stations.len() {
            if r == s || !self.hears(r, s) {
                continue;
            }
            let deaf = self
                .keyups
                .iter()
                .any(|k| k.station == r && k.overlaps(start, end));
            let collided = self.keyups.iter().any(|k| {
                k.id != key
                    && k.station != r
                    && k.station != s
                    && self.hears(r, k.station)
                    && k.overlaps(start, end)
            });
            let fate = if deaf {
                self.stats.deaf += 1;
                "deaf"
            } else if collided {
                self.stats.collisions += 1;
                "collision"
            } else if self.cfg.loss_ppm > 0
                && self.rng.below(1_000_000) < u64::from(self.cfg.loss_ppm)
            {
                self.stats.lost += 1;
                "lost"
            } else {
                self.stats.delivered += 1;
                out.push(Delivery {
                    at: end,
                    from: s,
                    to: r,
                    dest,
                    bytes: bytes.clone(),
                });
                "ok"
            };
            if self.trace {
                fates.push(format!("st{r} {fate}"));
            }
        }
        if self.trace {
            let what = self.describe.map(|f| f(&bytes)).unwrap_or_default();
            let to = dest.map_or("all".to_string(), |d| format!("st{d}"));
            eprintln!(
                "[air] {end} st{s} frame {start}..{end} -> {to} {what} {} B: {}",
                bytes.len(),
                fates.join(", ")
            );
        }
    }

    /// Forget transmissions that can no longer overlap a frame still to be judged.
    fn prune(&mut self) {
        let oldest = self
            .stations
            .iter()
            .filter_map(|st| match &st.state {
                State::Keyed {
                    phase: Phase::Frame { start, .. },
                    ..
                } => Some(*start),
                _ => None,
            })
            .min()
            .unwrap_or(self.now)
            .min(self.now);
        self.keyups.retain(|k| k.end.is_none_or(|e| e > oldest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    /// Run until nothing is queued or keyed, collecting deliveries.
    fn run(ch: &mut Channel) -> Vec<Delivery> {
        let mut out = Vec::new();
        while !ch.idle() {
            let t = ch.next_event();
            out.extend(ch.advance(t));
        }
        out
    }

    fn to(d: &[Delivery], r: usize) -> Vec<(usize, Vec<u8>)> {
        d.iter()
            .filter(|x| x.to == r)
            .map(|x| (x.from, x.bytes.clone()))
            .collect()
    }

    fn persist(p: u8) -> ChannelConfig {
        ChannelConfig {
            persist: p,
            ..ChannelConfig::default()
        }
    }

    /// Two stations answering the same event with PERSIST 255 both key up one SLOTTIME
    /// later, neither senses the other in time (carrier detect latency), and a third
    /// station decodes neither frame.
    #[test]
    fn two_stations_keying_together_collide() {
        for seed in 0..20 {
            let mut ch = Channel::new(3, persist(255), seed);
            ch.advance(T0);
            assert!(ch.send(T0, 0, None, vec![1; 50]));
            assert!(ch.send(T0, 1, None, vec![2; 50]));
            let d = run(&mut ch);
            assert!(to(&d, 2).is_empty(), "seed {seed}: {d:?}");
            assert_eq!(ch.stats().collisions, 2);
            // And each was keyed while the other's frame was on the air.
            assert_eq!(ch.stats().deaf, 2);
            assert_eq!(ch.stats().delivered, 0);
            assert_eq!(ch.station_stats(0).key_ups, 1);
            assert_eq!(ch.station_stats(1).key_ups, 1);
        }
    }

    /// With the default PERSIST 63 the stations draw different slots most of the time
    /// (both in the same slot first: p²/(1-(1-p)²) = 1/7), and the later one senses the
    /// earlier and waits.
    #[test]
    fn default_persist_mostly_resolves_the_same_event() {
        let mut ok = 0;
        let mut first_keyup_delay = Vec::new();
        for seed in 0..200 {
            let mut ch = Channel::new(3, ChannelConfig::default(), seed);
            ch.advance(T0);
            ch.send(T0, 0, None, vec![1; 50]);
            ch.send(T0, 1, None, vec![2; 50]);
            let d = run(&mut ch);
            let got = to(&d, 2);
            if got.len() == 2 {
                ok += 1;
            }
            let air = ch.config().airtime_ms(50);
            let first = d.iter().map(|x| x.at).min().unwrap_or(u64::MAX);
            first_keyup_delay.push(first.saturating_sub(T0 + 300 + air));
        }
        assert!((150..200).contains(&ok), "{ok}/200 resolved");
        // Half the first key-ups come within two slots.
        first_keyup_delay.sort_unstable();
        assert!(first_keyup_delay[100] <= 200, "{first_keyup_delay:?}");
    }

    /// Half duplex: a station keyed up hears nothing, even a frame nobody else disturbs.
    #[test]
    fn a_transmitting_station_hears_nothing() {
        let mut ch = Channel::new(2, persist(255), 1);
        ch.advance(T0);
        // Both key up at T0 + 100; 0's long frame runs from T0 + 400 to ~T0 + 2300, while
        // 1 is keyed until T0 + 400 + 140 + 100.
        ch.send(T0, 0, Some(1), vec![0; 256]);
        ch.send(T0, 1, Some(0), vec![1; 1]);
        let d = run(&mut ch);
        assert!(to(&d, 1).is_empty(), "{d:?}");
        assert!(to(&d, 0).is_empty(), "{d:?}");
        assert_eq!(ch.stats().deaf, 2);
        assert_eq!(ch.stats().collisions, 0, "only two stations: nobody else");
    }

    /// Frames queued together go out in one key-up: TXDELAY once, frames back to back,
    /// one TXTAIL; a frame handed during the transmission joins it.
    #[test]
    fn queued_frames_go_out_in_one_key_up() {
        let mut ch = Channel::new(2, persist(255), 3);
        ch.advance(T0);
        for i in 0..5u8 {
            ch.send(T0, 0, Some(1), vec![i; 100]);
        }
        let air = ch.config().airtime_ms(100);
        let mut d = Vec::new();
        // Keyed at T0 + 100; hand one more during the second frame.
        let mid = T0 + 100 + 300 + air + air / 2;
        while ch.next_event() <= mid {
            let t = ch.next_event();
            d.extend(ch.advance(t));
        }
        d.extend(ch.advance(mid));
        ch.send(mid, 0, Some(1), vec![9; 100]);
        d.extend(run(&mut ch));
        let st = ch.station_stats(0);
        assert_eq!((st.key_ups, st.frames, st.bytes), (1, 6, 600));
        let at: Vec<u64> = d.iter().map(|x| x.at).collect();
        let want: Vec<u64> = (1..=6).map(|k| T0 + 100 + 300 + k * air).collect();
        assert_eq!(at, want);
        assert_eq!(st.air_ms, 300 + 6 * air + 100);
    }

    /// With an audio lead, a frame handed late in the last frame misses the bundle and
    /// waits for a key-up of its own.
    #[test]
    fn a_frame_handed_too_late_misses_the_bundle() {
        let cfg = ChannelConfig {
            persist: 255,
            bundle_lead_ms: 500,
            ..ChannelConfig::default()
        };
        let air = cfg.airtime_ms(100);
        for (at, key_ups) in [(T0 + 400 + air - 600, 1), (T0 + 400 + air - 400, 2)] {
            let mut ch = Channel::new(2, cfg.clone(), 3);
            ch.advance(T0);
            ch.send(T0, 0, Some(1), vec![0; 100]);
            let mut d = Vec::new();
            while ch.next_event() <= at {
                let t = ch.next_event();
                d.extend(ch.advance(t));
            }
            d.extend(ch.advance(at));
            ch.send(at, 0, Some(1), vec![1; 100]);
            d.extend(run(&mut ch));
            assert_eq!(d.len(), 2);
            assert_eq!(
                ch.station_stats(0).key_ups,
                key_ups,
                "handed at {}",
                at - T0
            );
        }
    }

    /// A station that senses a carrier waits for the channel to clear, then for its slot,
    /// and its frame gets through.
    #[test]
    fn a_station_that_senses_a_carrier_defers_then_sends() {
        let mut ch = Channel::new(3, persist(255), 5);
        ch.advance(T0);
        ch.send(T0, 0, None, vec![0; 200]);
        // Station 0 keys up at T0 + 100; 1 gets its frame well after carrier detect.
        ch.advance(T0 + 500);
        ch.send(T0 + 500, 1, None, vec![1; 20]);
        let d = run(&mut ch);
        let got = to(&d, 2);
        assert_eq!(got.len(), 2, "{d:?}");
        let end0 = T0 + 100 + 300 + ch.config().airtime_ms(200) + 100;
        let from1 = d.iter().find(|x| x.from == 1 && x.to == 2).map(|x| x.at);
        assert_eq!(
            from1,
            Some(end0 + 100 + 300 + ch.config().airtime_ms(20)),
            "1 keys up one slot after 0 unkeys"
        );
        assert_eq!(ch.stats().collisions + ch.stats().deaf, 0);
    }

    /// Hidden terminals: 0 and 2 both hear 1 but not each other, so carrier sense does not
    /// help and their frames collide at 1; with a clear path the same traffic gets through.
    #[test]
    fn hidden_terminals_collide_at_the_middle_station() {
        for hidden in [true, false] {
            let mut ch = Channel::new(3, persist(255), 7);
            ch.set_hears(0, 2, !hidden);
            ch.advance(T0);
            ch.send(T0, 0, Some(1), vec![0; 200]);
            ch.advance(T0 + 500);
            ch.send(T0 + 500, 2, Some(1), vec![2; 200]);
            let d = run(&mut ch);
            let got = to(&d, 1);
            if hidden {
                assert!(got.is_empty(), "{d:?}");
                assert_eq!(ch.stats().collisions, 2);
            } else {
                assert_eq!(got.len(), 2, "{d:?}");
            }
        }
    }

    /// Random loss applies per frame and receiver, on top of the physics.
    #[test]
    fn random_loss_takes_its_share() {
        let mut ch = Channel::new(
            2,
            ChannelConfig {
                loss_ppm: 250_000,
                ..ChannelConfig::default()
            },
            9,
        );
        ch.advance(T0);
        for _ in 0..100 {
            ch.send(T0, 0, Some(1), vec![0; 10]);
        }
        let d = run(&mut ch);
        let lost = ch.stats().lost;
        assert_eq!(d.len() as u64 + lost, 100);
        assert!((10..45).contains(&lost), "lost {lost}");
    }

    /// The TNC queue is bounded; extra frames are counted as dropped.
    #[test]
    fn a_full_tnc_queue_drops_frames() {
        let mut ch = Channel::new(
            2,
            ChannelConfig {
                queue_frames: 3,
                ..ChannelConfig::default()
            },
            1,
        );
        let sent: Vec<bool> = (0..5).map(|_| ch.send(T0, 0, None, vec![0; 5])).collect();
        assert_eq!(sent, [true, true, true, false, false]);
        assert_eq!(ch.station_stats(0).dropped_full, 2);
        assert_eq!(run(&mut ch).len(), 3);
    }

    /// JS8Call-like slots: frames queued in the same slot key up together at the next
    /// boundary and always collide; in different slots both get through.
    #[test]
    fn slotted_stations_collide_in_the_same_slot_only() {
        let cfg = ChannelConfig::slotted(6, 15_000);
        let air = cfg.airtime_ms(8);
        assert!(air <= 15_000);
        for seed in 0..10 {
            let mut ch = Channel::new(3, cfg.clone(), seed);
            ch.advance(T0 + 6_000);
            ch.send(T0 + 6_000, 0, None, vec![0; 8]);
            ch.advance(T0 + 9_000);
            ch.send(T0 + 9_000, 1, None, vec![1; 8]);
            let d = run(&mut ch);
            assert!(to(&d, 2).is_empty(), "seed {seed}: {d:?}");
            assert_eq!(ch.stats().collisions, 2);

            let mut ch = Channel::new(3, cfg.clone(), seed);
            ch.advance(T0 + 1_000);
            ch.send(T0 + 1_000, 0, None, vec![0; 8]);
            let mut d = ch.advance(T0 + 16_000);
            ch.send(T0 + 16_000, 1, None, vec![1; 8]);
            d.extend(run(&mut ch));
            let got: Vec<u64> = d.iter().filter(|x| x.to == 2).map(|x| x.at).collect();
            // T0 is a multiple of 15 s plus 10 s: boundaries at T0 + 5 s, T0 + 20 s.
            assert_eq!(
                got,
                vec![T0 + 5_000 + air, T0 + 20_000 + air],
                "seed {seed}"
            );
        }
    }

    /// No carrier sense: a slotted station keys up even over a transmission it hears.
    #[test]
    fn slotted_stations_do_not_listen() {
        let cfg = ChannelConfig::slotted(6, 15_000);
        let mut ch = Channel::new(2, cfg, 1);
        ch.send(0, 0, Some(1), vec![0; 8]);
        ch.send(0, 1, Some(0), vec![1; 8]);
        let d = run(&mut ch);
        assert!(d.is_empty());
        assert_eq!(ch.stats().deaf, 2);
        assert_eq!(ch.station_stats(0).key_ups, 1);
    }

    /// Same seed, same calls: identical deliveries and counters.
    #[test]
    fn same_seed_same_deliveries() {
        let go = |seed| {
            let mut ch = Channel::new(
                4,
                ChannelConfig {
                    loss_ppm: 50_000,
                    ..ChannelConfig::default()
                },
                seed,
            );
            ch.set_hears(0, 3, false);
            let mut rng = Rng::new(seed ^ 0x55);
            let mut d = Vec::new();
            let mut t = T0;
            for _ in 0..200 {
                t += rng.below(3_000);
                while ch.next_event() <= t {
                    let e = ch.next_event();
                    d.extend(ch.advance(e));
                }
                ch.advance(t);
                let s = rng.below(4) as usize;
                ch.send(t, s, None, vec![s as u8; 1 + rng.below(200) as usize]);
            }
            d.extend(run(&mut ch));
            let st: Vec<StationStats> = (0..4).map(|s| ch.station_stats(s)).collect();
            (d, ch.stats().clone(), st)
        };
        let a = go(3);
        assert_eq!(a, go(3));
        assert_ne!(a.0, go(4).0);
        assert!(a.1.collisions > 0 && a.1.delivered > 0, "{:?}", a.1);
    }
}
