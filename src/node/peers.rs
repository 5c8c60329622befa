//! Misbehaviour scores and the ban list.
//!
//! Every misbehaviour adds points (by [`RejectCode`]) to a *ban key*: the IP address of a
//! TCP peer (without the port, so reconnecting does not reset it), or the callsign-SSID
//! of a radio station exactly as the link reports it (`N0CALL-2`; a station keying up
//! with another SSID is another key). Points decay linearly with time. A key reaching
//! the threshold is banned for a while: its sessions are refused at `peer_connected`.
//!
//! Bans are keyed by address or callsign, never by `PeerId`: a radio station heard again
//! gets a new session id. Operators may also ban CIDR subnets (`10.0.0.0/8`,
//! `2001:db8::/32`). Bans live in the store (`bans` table) and survive restarts.
//!
//! Loopback peers are scored but not banned automatically unless
//! [`PeerPolicy::ban_loopback`] is set: a local tool, or every inbound connection of a
//! Tor hidden service, comes from 127.0.0.1. Operator bans apply to loopback too.

use super::{Node, NodeEvent};
use crate::net::PeerId;
use crate::store::BanRow;
use crate::wire::message::RejectCode;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use tracing::{info, warn};

/// Ban keys whose score is tracked at once; the lowest score is forgotten first.
const MAX_SCORED: usize = 4096;
/// Bans held at once; the one ending soonest goes first.
const MAX_BANS: usize = 10_000;
/// Longest ban an operator may set (10 years).
pub const MAX_BAN_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// How misbehaviour is scored and punished.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerPolicy {
    /// A key whose score reaches this is banned.
    pub ban_threshold: u32,
    /// How long an automatic ban lasts, in milliseconds.
    pub ban_duration_ms: u64,
    /// Points forgiven per hour (linear decay).
    pub decay_per_hour: u32,
    /// Ban loopback peers automatically too (off by default, see the module doc).
    pub ban_loopback: bool,
    /// Share of air time a radio link may take over the long run, in percent (the
    /// channel is shared: a busy node must leave room for the others).
    pub duty_cycle_pct: u8,
    /// Sessions (TCP connections, stations heard) held at once per link.
    pub max_peers_per_link: usize,
    /// Sessions held at once per ban key (one IP address, one callsign).
    pub max_sessions_per_key: usize,
    /// Messages per second a peer on a fast (TCP) link may send, sustained; bursts of
    /// ten seconds' worth pass. Radio links derive theirs from the bit rate.
    pub msgs_per_sec: u64,
    /// Bytes per second a peer on a fast link may send, sustained (bursts as above).
    pub bytes_per_sec: u64,
    /// Shared secret that peers must prove at the handshake (see `node::auth`).
    pub network_key: Option<[u8; 32]>,
    /// Exchange TCP addresses with peers and dial learned ones (see `node::pex`).
    pub peer_exchange: bool,
    /// Outbound TCP sessions the node keeps up by dialling learned addresses.
    pub max_outbound: usize,
    /// Our own address as others can dial it, given to peers.
    pub advertise: Option<std::net::SocketAddr>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy {
            ban_threshold: 100,
            ban_duration_ms: 24 * 3600 * 1000,
            decay_per_hour: 60,
            ban_loopback: false,
            duty_cycle_pct: 50,
            max_peers_per_link: 125,
            max_sessions_per_key: 8,
            msgs_per_sec: 200,
            bytes_per_sec: 2 * 1024 * 1024,
            network_key: None,
            peer_exchange: true,
            max_outbound: 8,
            advertise: None,
        }
    }
}

/// A token bucket: `rate` units per second, holding at most `cap`.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    cap: u64,
    rate: u64,
    /// Level in thousandths of a unit, so slow rates refill smoothly.
    milli: u64,
    last: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64, cap: u64, now: u64) -> Bucket {
        Bucket {
            cap,
            rate,
            milli: cap.saturating_mul(1000),
            last: now,
        }
    }

    fn refill(&mut self, now: u64) {
        let dt = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.milli = self
            .milli
            .saturating_add(dt.saturating_mul(self.rate))
            .min(self.cap.saturating_mul(1000));
    }

    /// Units it holds at `now`, without taking any.
    pub fn level(&self, now: u64) -> u64 {
        let dt = now.saturating_sub(self.last);
        self.milli
            .saturating_add(dt.saturating_mul(self.rate))
            .min(self.cap.saturating_mul(1000))
            / 1000
    }

    /// Give back `n` units taken for something that proved not to count (up to the
    /// bucket's capacity).
    pub fn give(&mut self, now: u64, n: u64) {
        self.refill(now);
        self.milli = self
            .milli
            .saturating_add(n.saturating_mul(1000))
            .min(self.cap.saturating_mul(1000));
    }

    /// Take `n` units if the bucket holds them.
    pub fn take(&mut self, now: u64, n: u64) -> bool {
        self.refill(now);
        let need = n.saturating_mul(1000);
        if self.milli >= need {
            self.milli -= need;
            true
        } else {
            false
        }
    }
}

/// Points a misbehaviour costs.
pub fn points(code: RejectCode) -> u32 {
    match code {
        RejectCode::Malformed => 20,
        RejectCode::Invalid => 50,
        RejectCode::WrongNetwork => 100,
        RejectCode::Protocol => 20,
        RejectCode::RateLimited => 20,
        // An old version or a duplicate session is not hostile.
        RejectCode::Version | RejectCode::Duplicate => 0,
    }
}

/// What a ban key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    /// One IP address.
    Ip(IpAddr),
    /// A subnet: network address (host bits zero) and prefix length.
    Net(IpAddr, u8),
    /// A radio callsign (uppercase, with SSID if any).
    Call(String),
}

impl BanTarget {
    /// Parse a ban key: an IP address, a CIDR subnet or a callsign. Returns the
    /// canonical key (as stored) and the target.
    pub fn parse(s: &str) -> Result<(String, BanTarget), String> {
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("'{s}': '{addr}' is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0-{max}"))?;
            let net = mask(ip, len);
            if net != ip {
                return Err(format!(
                    "'{s}' has host bits set (did you mean {net}/{len}?)"
                ));
            }
            return Ok((format!("{net}/{len}"), BanTarget::Net(net, len)));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return Ok((ip.to_string(), BanTarget::Ip(ip)));
        }
        let call = s.to_ascii_uppercase();
        let ok = !call.is_empty()
            && call.len() <= 16
            && call.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && call
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "'{s}' is not an IP address, a CIDR subnet (10.0.0.0/8) or a callsign"
            ));
        }
        Ok((call.clone(), BanTarget::Call(call)))
    }

    /// Does this target cover the peer with this key?
    pub fn covers(&self, who: &PeerKey) -> bool {
        match (self, who) {
            (BanTarget::Ip(a), PeerKey::Ip(b)) => a == b,
            (BanTarget::Net(net, len), PeerKey::Ip(b)) => {
                net.is_ipv4() == b.is_ipv4() && mask(*b, *len) == *net
            }
            (BanTarget::Call(a), PeerKey::Call(b)) => a == b,
            _ => false,
        }
    }
}

/// `ip` with all but the first `len` bits cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Who a peer is, for scores and bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerKey {
    /// A TCP peer's address (port dropped).
    Ip(IpAddr),
    /// Anything else: the link's name for the station (a callsign on radio).
    Call(String),
}

impl PeerKey {
    /// The key of a session's remote address (`ip:port` on TCP, a callsign on radio).
    pub fn of(remote: &str) -> PeerKey {
        if let Ok(sa) = remote.parse::<SocketAddr>() {
            return PeerKey::Ip(sa.ip().to_canonical());
        }
        if let Ok(ip) = remote.parse::<IpAddr>() {
            return PeerKey::Ip(ip.to_canonical());
        }
        PeerKey::Call(remote.trim().to_ascii_uppercase())
    }

    /// The key as a string (what scores and automatic bans are filed under).
    pub fn as_string(&self) -> String {
        match self {
            PeerKey::Ip(ip) => ip.to_string(),
            PeerKey::Call(c) => c.clone(),
        }
    }

    fn is_loopback(&self) -> bool {
        matches!(self, PeerKey::Ip(ip) if ip.is_loopback())
    }

    fn target(&self) -> BanTarget {
        match self {
            PeerKey::Ip(ip) => BanTarget::Ip(*ip),
            PeerKey::Call(c) => BanTarget::Call(c.clone()),
        }
    }
}

/// A ban as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BanView {
    /// IP address, CIDR subnet or callsign.
    pub key: String,
    /// Refused until then (ms since the Unix epoch).
    pub until_ms: u64,
    /// Why.
    pub reason: String,
    /// When it was made.
    pub created_ms: u64,
}

#[derive(Clone, Debug)]
struct Ban {
    target: BanTarget,
    row: BanRow,
}

#[derive(Clone, Copy, Debug)]
struct Score {
    /// Thousandths of a point, as of `at`.
    milli: u64,
    at: u64,
}

/// Scores and bans, without I/O: the node writes the store.
#[derive(Debug, Default)]
pub struct PeerGuard {
    policy: PeerPolicy,
    scores: HashMap<String, Score>,
    bans: BTreeMap<String, Ban>,
}

impl PeerGuard {
    /// Empty, with this policy.
    pub fn new(policy: PeerPolicy) -> PeerGuard {
        PeerGuard {
            policy,
            ..Default::default()
        }
    }

    fn decayed(&self, s: &Score, now: u64) -> u64 {
        let forgiven = now
            .saturating_sub(s.at)
            .saturating_mul(u64::from(self.policy.decay_per_hour))
            / 3600;
        s.milli.saturating_sub(forgiven)
    }

    /// Current score of a key, in whole points.
    pub fn score(&self, key: &str, now: u64) -> u32 {
        self.scores
            .get(key)
            .map(|s| (self.decayed(s, now) / 1000).min(u64::from(u32::MAX)) as u32)
            .unwrap_or(0)
    }

    /// Add points to a key; its new score.
    pub fn add(&mut self, key: &str, points: u32, now: u64) -> u32 {
        let cur = self
            .scores
            .get(key)
            .map(|s| self.decayed(s, now))
            .unwrap_or(0);
        if !self.scores.contains_key(key) && self.scores.len() >= MAX_SCORED {
            // Forget the least suspicious key to make room.
            let lowest = self
                .scores
                .iter()
                .map(|(k, s)| (self.decayed(s, now), k.clone()))
                .min();
            if let Some((_, k)) = lowest {
                self.scores.remove(&k);
            }
        }
        let milli = cur.saturating_add(u64::from(points) * 1000);
        self.scores
            .insert(key.to_string(), Score { milli, at: now });
        self.score(key, now)
    }

    /// The ban covering `who` at `now`, if any.
    pub fn banned(&self, who: &PeerKey, now: u64) -> Option<&BanRow> {
        if let Some(b) = self.bans.get(&who.as_string()) {
            if b.row.until_ms > now && b.target.covers(who) {
                return Some(&b.row);
            }
        }
        self.bans
            .values()
            .find(|b| b.row.until_ms > now && b.target.covers(who))
            .map(|b| &b.row)
    }

    /// Add or replace a ban; the key of one evicted to stay bounded, if any.
    fn insert(&mut self, target: BanTarget, row: BanRow) -> Option<String> {
        let mut evicted = None;
        if !self.bans.contains_key(&row.key) && self.bans.len() >= MAX_BANS {
            if let Some(k) = self
                .bans
                .iter()
                .min_by_key(|(_, b)| b.row.until_ms)
                .map(|(k, _)| k.clone())
            {
                self.bans.remove(&k);
                evicted = Some(k);
            }
        }
        self.scores.remove(&row.key);
        self.bans.insert(row.key.clone(), Ban { target, row });
        evicted
    }

    /// Drop bans that ended; whether any did.
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.bans.len();
        self.bans.retain(|_, b| b.row.until_ms > now);
        // Scores that decayed to nothing are forgotten too.
        let policy = self.policy.clone();
        self.scores.retain(|_, s| {
            let forgiven = now
                .saturating_sub(s.at)
                .saturating_mul(u64::from(policy.decay_per_hour))
                / 3600;
            s.milli > forgiven
        });
        self.bans.len() != before
    }

    /// Bans in force at `now`, by key.
    pub fn list(&self, now: u64) -> Vec<BanView> {
        self.bans
            .values()
            .filter(|b| b.row.until_ms > now)
            .map(|b| BanView {
                key: b.row.key.clone(),
                until_ms: b.row.until_ms,
                reason: b.row.reason.clone(),
                created_ms: b.row.created_ms,
            })
            .collect()
    }
}

impl Node {
    /// Load the ban list from the store (malformed rows are skipped with a warning).
    pub(super) fn load_bans(&mut self) {
        let rows = match self.chain.store().bans_load() {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot load the ban list: {e}");
                return;
            }
        };
        for row in rows {
            match BanTarget::parse(&row.key) {
                Ok((_, target)) => {
                    self.guard.insert(target, row);
                }
                Err(e) => warn!("ignoring stored ban: {e}"),
            }
        }
    }

    /// Is a new session from `remote` refused? Logs why.
    /// The ban covering `remote`, if any.
    pub(super) fn guard_banned(&self, remote: &str, now: u64) -> Option<String> {
        self.guard
            .banned(&PeerKey::of(remote), now)
            .map(|b| b.key.clone())
    }

    /// The ban on the callsign a peer gave in its Hello, if any (logged): a station
    /// banned by callsign is refused on TCP too.
    pub(super) fn callsign_refused(&self, now: u64, peer: PeerId, call: &str) -> Option<String> {
        let b = self
            .guard
            .banned(&PeerKey::Call(call.trim().to_ascii_uppercase()), now)?;
        let reason = format!("callsign banned ({}): {}", b.key, b.reason);
        warn!(peer, callsign = %call, "refusing banned station: {reason}");
        Some(reason)
    }

    pub(super) fn refused(&self, now: u64, peer: PeerId, remote: &str) -> Option<String> {
        let who = PeerKey::of(remote);
        let b = self.guard.banned(&who, now)?;
        let reason = format!("banned ({}) until {} ms: {}", b.key, b.until_ms, b.reason);
        warn!(peer, %remote, "refusing banned peer: {reason}");
        Some(reason)
    }

    /// Score a misbehaviour; ban the key if it reached the threshold.
    pub(super) fn score_misbehaviour(&mut self, remote: &str, code: RejectCode, reason: &str) {
        let pts = points(code);
        if pts == 0 || remote.is_empty() {
            return;
        }
        let now = self.now;
        let who = PeerKey::of(remote);
        let key = who.as_string();
        let score = self.guard.add(&key, pts, now);
        if score < self.guard.policy.ban_threshold {
            return;
        }
        if who.is_loopback() && !self.guard.policy.ban_loopback {
            info!(%key, score, "loopback peer over the ban threshold: not banned (ban_loopback is off)");
            return;
        }
        let row = BanRow {
            key: key.clone(),
            until_ms: now.saturating_add(self.guard.policy.ban_duration_ms),
            reason: format!("score {score}: {reason}"),
            created_ms: now,
        };
        warn!(
            %key,
            score,
            hours = self.guard.policy.ban_duration_ms / 3_600_000,
            "banning peer: {reason}"
        );
        let target = who.target();
        let others: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                // A callsign ban reaches the station on every link: by the callsign the
                // link reports (radio) and by the one it gave in its Hello (TCP too).
                !p.closing
                    && (target.covers(&PeerKey::of(&p.remote))
                        || p.hello.as_ref().is_some_and(|h| {
                            target.covers(&PeerKey::Call(h.callsign.trim().to_ascii_uppercase()))
                        }))
            })
            .map(|(&id, _)| id)
            .collect();
        self.put_ban(target, row);
        // Other sessions from the same address or station go too.
        for id in others {
            self.disconnect(id, format!("banned ({key})"));
        }
    }

    fn put_ban(&mut self, target: BanTarget, row: BanRow) {
        if let Err(e) = self.chain.store_mut().ban_put(&row) {
            warn!(key = %row.key, "cannot store ban: {e}");
        }
        if let Some(old) = self.guard.insert(target, row) {
            if let Err(e) = self.chain.store_mut().ban_delete(&old) {
                warn!(key = %old, "cannot delete evicted ban: {e}");
            }
        }
    }

    /// Drop bans that ended (memory and store).
    pub(super) fn expire_bans(&mut self, now: u64) {
        if self.guard.expire(now) {
            match self.chain.store_mut().bans_expire(now) {
                Ok(n) => info!(count = n, "bans expired"),
                Err(e) => warn!("cannot delete expired bans: {e}"),
            }
        }
    }

    /// Current misbehaviour score of a session's key.
    pub(super) fn score_of(&self, remote: &str, now: u64) -> u32 {
        self.guard.score(&PeerKey::of(remote).as_string(), now)
    }

    /// Bans in force.
    pub fn bans(&self, now: u64) -> Vec<BanView> {
        self.guard.list(now)
    }

    /// Ban `key` (IP, CIDR subnet or callsign) for `duration_ms` and drop matching
    /// sessions. Errors on a malformed key or duration.
    pub fn ban(
        &mut self,
        now: u64,
        key: &str,
        duration_ms: u64,
        reason: &str,
    ) -> Result<BanView, String> {
        let (key, target) = BanTarget::parse(key)?;
        if duration_ms == 0 || duration_ms > MAX_BAN_MS {
            return Err(format!(
                "ban duration must be between 1 ms and {} hours",
                MAX_BAN_MS / 3_600_000
            ));
        }
        self.now = now;
        let reason = if reason.trim().is_empty() {
            "banned by the operator".to_string()
        } else {
            super::truncate(reason.trim(), 200)
        };
        let row = BanRow {
            key: key.clone(),
            until_ms: now.saturating_add(duration_ms),
            reason,
            created_ms: now,
        };
        info!(%key, until_ms = row.until_ms, "ban added: {}", row.reason);
        let view = BanView {
            key,
            until_ms: row.until_ms,
            reason: row.reason.clone(),
            created_ms: now,
        };
        let drop: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                // A callsign ban reaches the station on every link: by the callsign the
                // link reports (radio) and by the one it gave in its Hello (TCP too).
                !p.closing
                    && (target.covers(&PeerKey::of(&p.remote))
                        || p.hello.as_ref().is_some_and(|h| {
                            target.covers(&PeerKey::Call(h.callsign.trim().to_ascii_uppercase()))
                        }))
            })
            .map(|(&id, _)| id)
            .collect();
        self.put_ban(target, row);
        for id in drop {
            self.disconnect(id, format!("banned ({})", view.key));
        }
        Ok(view)
    }

    /// Lift a ban; whether there was one.
    pub fn unban(&mut self, key: &str) -> Result<bool, String> {
        let (key, _) = BanTarget::parse(key)?;
        let had = self.guard.bans.remove(&key).is_some();
        let stored = self
            .chain
            .store_mut()
            .ban_delete(&key)
            .map_err(|e| format!("cannot delete ban: {e}"))?;
        if had || stored {
            info!(%key, "ban lifted");
        }
        Ok(had || stored)
    }

    /// Refuse a session at connection: nothing is sent, the link closes it.
    pub(super) fn refuse(&mut self, peer: PeerId, reason: String) {
        self.events
            .push_back(NodeEvent::Disconnect { peer, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn key(s: &str) -> PeerKey {
        PeerKey::of(s)
    }

    #[test]
    fn scores_accumulate_and_decay_linearly() {
        let mut g = PeerGuard::new(PeerPolicy::default());
        assert_eq!(g.add("1.2.3.4", 20, 0), 20);
        assert_eq!(g.add("1.2.3.4", 50, 0), 70);
        // One point per minute.
        assert_eq!(g.score("1.2.3.4", 10 * MIN), 60);
        assert_eq!(g.add("1.2.3.4", 20, 10 * MIN), 80);
        assert_eq!(g.score("1.2.3.4", 90 * MIN), 0);
        assert_eq!(g.score("5.6.7.8", 0), 0);
        // Forgotten once decayed to nothing.
        g.expire(90 * MIN);
        assert!(g.scores.is_empty());
    }

    #[test]
    fn score_map_is_bounded_and_forgets_the_lowest() {
        let mut g = PeerGuard::new(PeerPolicy::default());
        g.add("hot", 90, 0);
        for i in 0..MAX_SCORED + 10 {
            g.add(&format!("k{i}"), 10, 0);
        }
        assert_eq!(g.scores.len(), MAX_SCORED);
        assert_eq!(g.score("hot", 0), 90);
    }

    #[test]
    fn points_by_reason() {
        assert_eq!(points(RejectCode::WrongNetwork), 100);
        assert_eq!(points(RejectCode::Invalid), 50);
        assert_eq!(points(RejectCode::Malformed), 20);
        assert_eq!(points(RejectCode::Duplicate), 0);
    }

    #[test]
    fn peer_keys_drop_the_port_and_keep_the_ssid() {
        assert_eq!(key("10.1.2.3:7300").as_string(), "10.1.2.3");
        assert_eq!(key("[2001:db8::1]:7300").as_string(), "2001:db8::1");
        assert_eq!(key("[::ffff:10.1.2.3]:1").as_string(), "10.1.2.3");
        assert_eq!(key("n0call-2").as_string(), "N0CALL-2");
        assert_ne!(key("N0CALL-2"), key("N0CALL-3"));
    }

    #[test]
    fn cidr_matching_v4() {
        let (k, t) = BanTarget::parse("10.0.0.0/8").unwrap();
        assert_eq!(k, "10.0.0.0/8");
        assert!(t.covers(&key("10.255.1.2:1")));
        assert!(t.covers(&key("10.0.0.0:1")));
        assert!(!t.covers(&key("11.0.0.0:1")));
        assert!(!t.covers(&key("9.255.255.255:1")));
        assert!(!t.covers(&key("[::a00:1]:1")), "no v4/v6 cross match");
        let (_, all) = BanTarget::parse("0.0.0.0/0").unwrap();
        assert!(all.covers(&key("203.0.113.9:1")));
        assert!(!all.covers(&key("[2001:db8::1]:1")));
        let (_, one) = BanTarget::parse("192.0.2.7/32").unwrap();
        assert!(one.covers(&key("192.0.2.7:5")));
        assert!(!one.covers(&key("192.0.2.6:5")));
        let (_, lo) = BanTarget::parse("127.0.0.0/8").unwrap();
        assert!(lo.covers(&key("127.0.0.1:40000")));
        assert!(!lo.covers(&key("N0CALL")));
    }

    #[test]
    fn cidr_matching_v6() {
        let (k, t) = BanTarget::parse("2001:DB8::/32").unwrap();
        assert_eq!(k, "2001:db8::/32");
        assert!(t.covers(&key("[2001:db8:ffff::1]:1")));
        assert!(!t.covers(&key("[2001:db9::1]:1")));
        let (_, one) = BanTarget::parse("2001:db8::1/128").unwrap();
        assert!(one.covers(&key("[2001:db8::1]:1")));
        assert!(!one.covers(&key("[2001:db8::2]:1")));
        let (_, all) = BanTarget::parse("::/0").unwrap();
        assert!(all.covers(&key("[fe80::1]:1")));
        assert!(!all.covers(&key("1.2.3.4:1")));
        let (_, odd) = BanTarget::parse("2001:db8:8000::/33").unwrap();
        assert!(odd.covers(&key("[2001:db8:8000::1]:1")));
        assert!(!odd.covers(&key("[2001:db8:7fff::1]:1")));
    }

    #[test]
    fn malformed_keys_are_refused_clearly() {
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.1/8",
            "10.0.0/8",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
            "",
            "N0 CALL",
            "-N0CALL",
            "a-very-long-callsign-x",
        ] {
            let e = BanTarget::parse(bad).expect_err(bad);
            assert!(!e.is_empty());
        }
        assert!(BanTarget::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert_eq!(BanTarget::parse("n0call-2").unwrap().0, "N0CALL-2");
        assert_eq!(BanTarget::parse("::ffff:1.2.3.4").unwrap().0, "1.2.3.4");
    }

    #[test]
    fn bans_expire_on_time() {
        let mut g = PeerGuard::new(PeerPolicy::default());
        let (k, t) = BanTarget::parse("192.0.2.0/24").unwrap();
        g.insert(
            t,
            BanRow {
                key: k,
                until_ms: 1000,
                reason: "test".into(),
                created_ms: 0,
            },
        );
        let who = key("192.0.2.9:1");
        assert!(g.banned(&who, 999).is_some());
        assert!(g.banned(&who, 1000).is_none());
        assert_eq!(g.list(999).len(), 1);
        assert!(!g.expire(999));
        assert!(g.expire(1000));
        assert!(g.list(0).is_empty());
    }

    #[test]
    fn ban_list_is_bounded() {
        let mut g = PeerGuard::new(PeerPolicy::default());
        for i in 0..MAX_BANS as u64 + 5 {
            let k = format!("CALL{i}");
            g.insert(
                BanTarget::Call(k.clone()),
                BanRow {
                    key: k,
                    until_ms: 1_000_000 + i,
                    reason: String::new(),
                    created_ms: 0,
                },
            );
        }
        assert_eq!(g.bans.len(), MAX_BANS);
        // The soonest-ending went first.
        assert!(g.banned(&key("CALL0"), 0).is_none());
        assert!(g.banned(&key("CALL10004"), 0).is_some());
    }

    fn node(chain: crate::chain::Chain, ban_loopback: bool) -> Node {
        Node::new(
            chain,
            super::super::NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                callsign: "N0CALL-1".into(),
                seed: 1,
                user_agent: "test".into(),
                peers: PeerPolicy {
                    ban_loopback,
                    ..PeerPolicy::default()
                },
            },
        )
    }

    fn drain(n: &mut Node) -> (usize, Vec<NodeEvent>) {
        let mut t = 0;
        while n.poll_transmit().is_some() {
            t += 1;
        }
        let mut e = Vec::new();
        while let Some(x) = n.poll_event() {
            e.push(x);
        }
        (t, e)
    }

    #[test]
    fn node_bans_over_threshold_refuses_and_remembers() {
        use crate::chain::{params, Chain};
        use crate::wire::{envelope, message::Message};
        let p = params::regtest();
        let chain = Chain::open(p.clone(), crate::store::Store::open_in_memory().unwrap()).unwrap();
        let mut n = node(chain, false);
        let t0 = p.genesis.header.time * 1000;
        let wrong = envelope::encode(params::main().network_id(), 1, &Message::Ping(1));
        let garbage = [0xEEu8; 40];

        // Malformed input from one address: 20 points a time, still below 100.
        for i in 0..4u64 {
            n.peer_connected(t0, 10 + i, 1, format!("203.0.113.5:{}", 1000 + i), false);
            n.handle_frame(t0, 10 + i, &garbage);
            drain(&mut n);
        }
        assert_eq!(n.guard.score("203.0.113.5", t0), 80);
        assert!(n.bans(t0).is_empty());
        // A fifth strike reaches the threshold: banned.
        n.peer_connected(t0, 20, 1, "203.0.113.5:2000".into(), false);
        n.handle_frame(t0, 20, &garbage);
        drain(&mut n);
        let bans = n.bans(t0);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].key, "203.0.113.5");
        assert_eq!(bans[0].until_ms, t0 + 24 * 3600 * 1000);

        // A new session from that address (any port) is refused without a Hello.
        n.peer_connected(t0 + 1, 21, 1, "203.0.113.5:3000".into(), false);
        let (sent, ev) = drain(&mut n);
        assert_eq!(sent, 0, "nothing sent to a banned peer");
        assert!(
            matches!(&ev[..], [NodeEvent::Disconnect { peer: 21, .. }]),
            "{ev:?}"
        );
        assert!(n.peers(t0 + 1).iter().all(|p| p.id != 21));
        // Another address is fine.
        n.peer_connected(t0 + 1, 22, 1, "203.0.113.6:3000".into(), false);
        assert_eq!(drain(&mut n).0, 1, "hello sent");

        // Wrong network from a loopback peer: scored, not banned by default.
        n.peer_connected(t0, 30, 1, "127.0.0.1:5000".into(), false);
        n.handle_frame(t0, 30, &wrong);
        drain(&mut n);
        assert_eq!(n.guard.score("127.0.0.1", t0), 100);
        assert_eq!(n.bans(t0).len(), 1);

        // The ban survives a restart, and ends on time (the row too).
        let chain = n.into_chain();
        let mut n = node(chain, true);
        assert_eq!(n.bans(t0).len(), 1);
        n.peer_connected(t0 + 2, 40, 1, "203.0.113.5:1".into(), false);
        assert_eq!(drain(&mut n).0, 0);
        let end = t0 + 24 * 3600 * 1000;
        n.handle_timeout(end);
        assert!(n.bans(end).is_empty());
        assert!(n.chain.store().bans_load().unwrap().is_empty());
        n.peer_connected(end, 41, 1, "203.0.113.5:1".into(), false);
        assert_eq!(drain(&mut n).0, 1);

        // With ban_loopback on, loopback is banned too; operator bans and unbans.
        n.peer_connected(end, 50, 1, "127.0.0.1:5000".into(), false);
        n.handle_frame(end, 50, &wrong);
        drain(&mut n);
        assert_eq!(n.bans(end)[0].key, "127.0.0.1");
        assert!(n.unban("127.0.0.1").unwrap());
        assert!(!n.unban("127.0.0.1").unwrap());
        n.peer_connected(end, 51, 1, "10.9.8.7:1".into(), false);
        drain(&mut n);
        n.ban(end, "10.0.0.0/8", 3_600_000, "test").unwrap();
        let (_, ev) = drain(&mut n);
        assert!(ev
            .iter()
            .any(|e| matches!(e, NodeEvent::Disconnect { peer: 51, .. })));
        assert!(n.ban(end, "10.0.0.1/8", 1, "").is_err());
        assert!(n.ban(end, "10.0.0.0/8", 0, "").is_err());

        // Radio: keyed by callsign-SSID as the link reports it.
        n.ban(end, "n0evil-3", 3_600_000, "").unwrap();
        n.peer_connected(end, 60, 2, "N0EVIL-3".into(), false);
        assert_eq!(drain(&mut n).0, 0);
        n.peer_connected(end, 61, 2, "N0EVIL-4".into(), false);
        assert_eq!(drain(&mut n).0, 1);
    }
}
