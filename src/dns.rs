//! DNS seeds: names whose A and AAAA records are addresses of skywave nodes, for a node
//! that knows no peers on the internet side yet. Resolution is I/O and runs here, in the
//! driver's runtime; the core only sees the addresses, in its address book (source
//! `dns`), and dials them like peer-exchange addresses: bounded, and backed off.
//!
//! Names are resolved through the system resolver (getaddrinfo: `/etc/hosts`, then the
//! system's DNS servers), or, with `[peers] dns_resolver = "ip:port"`, by asking that DNS
//! server directly over UDP. The second exists for a resolver the operator runs on the
//! gateway or its network, and for tests, which cannot change the system's resolver.

use crate::driver::Shared;
use crate::node::AddrSource;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Addresses taken from one name at one resolution (the book's own bound applies too).
pub const MAX_PER_NAME: usize = 32;
/// Names resolved (more in the config is refused).
pub const MAX_SEEDS: usize = 16;
/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Resolving again while short of peers: first after this long, doubling per round up to
/// a day, as the address book retries a failed address.
const RETRY: Duration = Duration::from_secs(10 * 60);
const RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// How often the seeder looks whether the node is short of peers.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Bytes of a DNS message over UDP without EDNS (RFC 1035 4.2.1); more is not read.
const UDP_MAX: usize = 512;
/// Resource record types.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// How names are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// The system resolver (getaddrinfo).
    System,
    /// This DNS server, asked directly over UDP.
    Server(SocketAddr),
}

/// Resolve `name` to socket addresses with `port`: at most [`MAX_PER_NAME`], A and AAAA
/// records both.
pub async fn resolve(name: &str, port: u16, how: &Resolver) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = match how {
        Resolver::System => tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| format!("{name}: no answer in {} s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("{name}: {e}"))?
            .take(MAX_PER_NAME * 2)
            .collect(),
        Resolver::Server(server) => {
            let mut v = Vec::new();
            let mut errors = Vec::new();
            for qtype in [TYPE_A, TYPE_AAAA] {
                match ask(*server, name, qtype).await {
                    Ok(ips) => v.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port))),
                    Err(e) => errors.push(e),
                }
            }
            if v.is_empty() && !errors.is_empty() {
                return Err(format!("{name}: {}", errors.join("; ")));
            }
            v
        }
    };
    out.sort();
    out.dedup();
    out.truncate(MAX_PER_NAME);
    Ok(out)
}

/// One question to a DNS server over UDP; the addresses in its answer.
async fn ask(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
    let id: u16 = rand::random();
    let query = encode_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    sock.send(&query)
        .await
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let mut buf = [0u8; UDP_MAX];
    let wait = async {
        loop {
            // A connected UDP socket only delivers datagrams from the server; one with
            // another id (a late answer, a forgery) is skipped.
            let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
            match parse_answer(id, qtype, &buf[..n]) {
                Err(Bad::Id) => continue,
                r => return r.map_err(|e| e.to_string()),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .map_err(|_| format!("DNS server {server}: no answer in {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("DNS server {server}: {e}"))
}

/// A query with recursion desired (RFC 1035 4.1).
fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00]); // RD
    q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(format!("'{name}' is not a host name"));
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("'{name}' is not a host name"));
        }
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes()); // IN
    Ok(q)
}

/// Why an answer was not taken.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    /// Not the answer to our question (id differs).
    Id,
    /// The server said so (RCODE).
    Rcode(u8),
    /// Cut short or malformed.
    Malformed,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Id => f.write_str("answer to another question"),
            Bad::Rcode(3) => f.write_str("no such name"),
            Bad::Rcode(c) => write!(f, "server error (rcode {c})"),
            Bad::Malformed => f.write_str("malformed answer"),
        }
    }
}

/// The addresses of type `qtype` in the answer section of `msg`, the answer to query
/// `id`. Everything is bounds-checked: a hostile server gets an error, never a panic or
/// an allocation beyond [`MAX_PER_NAME`] addresses.
fn parse_answer(id: u16, qtype: u16, msg: &[u8]) -> Result<Vec<IpAddr>, Bad> {
    let u16_at = |i: usize| -> Result<u16, Bad> {
        msg.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(Bad::Malformed)
    };
    if u16_at(0)? != id {
        return Err(Bad::Id);
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        // A query, not a response.
        return Err(Bad::Id);
    }
    let rcode = (flags & 0x000f) as u8;
    if rcode != 0 {
        return Err(Bad::Rcode(rcode));
    }
    let qdcount = u16_at(4)?;
    let ancount = u16_at(6)?;
    let mut at = 12;
    for _ in 0..qdcount {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..ancount {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let class = u16_at(at + 2)?;
        let len = usize::from(u16_at(at + 8)?);
        let data = msg.get(at + 10..at + 10 + len).ok_or(Bad::Malformed)?;
        at += 10 + len;
        // CNAMEs and anything else in the chain are skipped; the recursive server
        // follows them and gives the addresses too.
        if class != 1 || rtype != qtype {
            continue;
        }
        let ip = match (rtype, data.len()) {
            (TYPE_A, 4) => IpAddr::from([data[0], data[1], data[2], data[3]]),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                IpAddr::from(b)
            }
            _ => return Err(Bad::Malformed),
        };
        if out.len() < MAX_PER_NAME {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Offset just past the name at `at`: labels, ending in a zero byte or a compression
/// pointer (which ends the name where it stands; its target needs no reading here).
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, Bad> {
    loop {
        let len = *msg.get(at).ok_or(Bad::Malformed)?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1).ok_or(Bad::Malformed)?;
                return Ok(at + 2);
            }
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return Err(Bad::Malformed),
        }
    }
}

/// When to resolve the seeds again: once the node has been short of outbound peers for
/// [`RETRY`] since the last time, then for twice as long each round, up to a day; a node
/// that has enough peers again starts over.
struct Backoff {
    retry: Duration,
    short_for: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            retry: RETRY,
            short_for: Duration::ZERO,
        }
    }

    /// `dt` has passed and the node is `short` of peers (or not): resolve again now?
    fn tick(&mut self, dt: Duration, short: bool) -> bool {
        if !short {
            *self = Backoff::new();
            return false;
        }
        self.short_for += dt;
        if self.short_for < self.retry {
            return false;
        }
        self.retry = (self.retry * 2).min(RETRY_MAX);
        self.short_for = Duration::ZERO;
        true
    }
}

/// Resolve the seeds at start, then again whenever the node is short of outbound peers,
/// backed off (see [`Backoff`]). Runs until the node stops.
pub async fn seed(shared: Arc<Shared>, names: Vec<String>, port: u16, how: Resolver) {
    let told_by = match &how {
        Resolver::Server(s) => Some(s.ip()),
        Resolver::System => None,
    };
    let mut backoff = Backoff::new();
    loop {
        let mut found = Vec::new();
        for name in &names {
            match resolve(name, port, &how).await {
                Ok(addrs) => {
                    debug!(seed = %name, count = addrs.len(), "DNS seed resolved");
                    found.extend(addrs);
                }
                Err(e) => warn!("DNS seed {e}"),
            }
        }
        let count = found.len();
        let taken = match shared
            .call_wait(move |n, now| n.add_addresses(now, &found, AddrSource::Dns, told_by))
            .await
        {
            Ok(t) => t,
            Err(_) => return,
        };
        info!("DNS seeds: {count} address(es) resolved, {taken} new in the address book");
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let short = match shared.call_wait(|n, _| n.short_of_peers()).await {
                Ok(s) => s,
                Err(_) => return,
            };
            if backoff.tick(CHECK_EVERY, short) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `q` (a query) with these records, the name compressed as a pointer
    /// to the question's.
    pub(crate) fn answer(q: &[u8], records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81; // QR, RD
        r[3] = 0x80; // RA
        r[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (t, data) in records {
            r.extend([0xc0, 12]);
            r.extend(t.to_be_bytes());
            r.extend([0, 1, 0, 0, 0x0e, 0x10]);
            r.extend((data.len() as u16).to_be_bytes());
            r.extend(data);
        }
        r
    }

    #[test]
    fn reads_a_and_aaaa_records_and_skips_the_rest() {
        let q = encode_query(0x1234, "seed.example.net", TYPE_A).unwrap();
        assert_eq!(&q[12..30], b"\x04seed\x07example\x03net\x00");
        let cname = b"\x03foo\xc0\x0c".to_vec();
        let r = answer(
            &q,
            &[
                (5, cname),
                (TYPE_A, vec![192, 0, 2, 1]),
                (TYPE_A, vec![192, 0, 2, 2]),
            ],
        );
        assert_eq!(
            parse_answer(0x1234, TYPE_A, &r),
            Ok(vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.2".parse().unwrap()
            ])
        );
        assert_eq!(parse_answer(0x1235, TYPE_A, &r), Err(Bad::Id));
        let q6 = encode_query(7, "seed.example.net", TYPE_AAAA).unwrap();
        let v6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let r6 = answer(&q6, &[(TYPE_AAAA, v6.octets().to_vec())]);
        assert_eq!(parse_answer(7, TYPE_AAAA, &r6), Ok(vec![IpAddr::V6(v6)]));
        let mut nx = answer(&q, &[]);
        nx[3] |= 3;
        assert_eq!(parse_answer(0x1234, TYPE_A, &nx), Err(Bad::Rcode(3)));
        assert!(encode_query(1, "bad name", TYPE_A).is_err());
        assert!(encode_query(1, "", TYPE_A).is_err());
    }

    #[test]
    fn hostile_answers_are_bounded_and_never_panic() {
        let q = encode_query(9, "seed.example.net", TYPE_A).unwrap();
        // More records than we take.
        let many: Vec<(u16, Vec<u8>)> = (0..200u8).map(|i| (TYPE_A, vec![192, 0, 2, i])).collect();
        let r = answer(&q, &many);
        assert_eq!(parse_answer(9, TYPE_A, &r).unwrap().len(), MAX_PER_NAME);
        // Claims 65535 answers and carries one.
        let mut lying = answer(&q, &[(TYPE_A, vec![1, 2, 3, 4])]);
        lying[6] = 0xff;
        lying[7] = 0xff;
        assert_eq!(parse_answer(9, TYPE_A, &lying), Err(Bad::Malformed));
        // An A record of the wrong length.
        let r = answer(&q, &[(TYPE_A, vec![1, 2, 3])]);
        assert_eq!(parse_answer(9, TYPE_A, &r), Err(Bad::Malformed));
        // Every truncation of a good answer, and bytes flipped.
        let good = answer(&q, &[(TYPE_A, vec![1, 2, 3, 4])]);
        for i in 0..good.len() {
            let _ = parse_answer(9, TYPE_A, &good[..i]);
            for x in [0x00, 0x3f, 0xc0, 0xff] {
                let mut b = good.clone();
                b[i] = x;
                let _ = parse_answer(9, TYPE_A, &b);
            }
        }
    }

    #[test]
    fn seeds_are_asked_again_only_while_short_of_peers_and_ever_less_often() {
        let mut b = Backoff::new();
        // Minutes of being short before each new resolution.
        let mut rounds = Vec::new();
        let mut minutes = 0;
        while rounds.len() < 10 {
            minutes += 1;
            if b.tick(CHECK_EVERY, true) {
                rounds.push(minutes);
                minutes = 0;
            }
        }
        assert_eq!(rounds, [10, 20, 40, 80, 160, 320, 640, 1280, 1440, 1440]);
        // Enough peers for a while: never; short again, the first wait is 10 min again.
        for _ in 0..10_000 {
            assert!(!b.tick(CHECK_EVERY, false));
        }
        assert_eq!((1..=10).find(|_| b.tick(CHECK_EVERY, true)), Some(10));
    }

    #[tokio::test]
    async fn resolves_through_a_dns_server_on_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..2 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let q = &buf[..n];
                let qtype = u16::from_be_bytes([q[n - 4], q[n - 3]]);
                let recs = if qtype == TYPE_A {
                    vec![(TYPE_A, vec![127, 9, 0, 1]), (TYPE_A, vec![127, 9, 0, 1])]
                } else {
                    vec![(TYPE_AAAA, Ipv6Addr::LOCALHOST.octets().to_vec())]
                };
                server.send_to(&answer(q, &recs), from).unwrap();
            }
        });
        let got = resolve("seed.skywave.test", 17300, &Resolver::Server(addr))
            .await
            .unwrap();
        t.join().unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.9.0.1:17300".parse().unwrap(),
            "[::1]:17300".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }
}
