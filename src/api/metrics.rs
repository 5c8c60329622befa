//! `GET /metrics`: the node's figures in the Prometheus text format (version 0.0.4).
//!
//! Only figures the node and driver already keep are shown. Traffic per link is the sum
//! over the sessions open now (the node forgets a session's counters when it closes), so
//! it is a gauge, not a counter.

use crate::driver::{Shared, Unanswered};
use crate::link::LinkId;
use crate::outbox::State as ItemState;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Prometheus text exposition.
#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP skywave_{name} {help}");
        let _ = writeln!(self.0, "# TYPE skywave_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "skywave_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Default)]
struct LinkFigures {
    peers: u64,
    ready: u64,
    bytes_in: u64,
    bytes_out: u64,
    msgs_in: u64,
    msgs_out: u64,
}

/// What the figures need from the node, taken in one request.
struct Snapshot {
    network: &'static str,
    height: u64,
    header_height: u64,
    mempool: usize,
    peers: Vec<crate::node::PeerSummary>,
    packet: BTreeMap<LinkId, crate::node::PacketStats>,
    outbox: crate::node::OutboxView,
    bans: usize,
    misbehaviour: Vec<(&'static str, u64)>,
    commits: u64,
    traffic: BTreeMap<LinkId, crate::node::PeerStats>,
}

/// Render every figure.
pub async fn render(s: &Shared) -> Result<String, Unanswered> {
    let links = s.links.lock().map(|l| l.clone()).unwrap_or_default();
    let ids: Vec<LinkId> = links.iter().map(|l| l.id).collect();
    let snap = s
        .call(move |node, now| {
            let chain = node.chain();
            Snapshot {
                network: chain.params().name,
                height: chain.tip().height,
                header_height: chain.best_header().height,
                mempool: chain.mempool_len(),
                peers: node.peers(now),
                packet: ids
                    .iter()
                    .filter_map(|id| Some((*id, node.packet_stats(*id)?)))
                    .collect(),
                outbox: node.outbox(),
                bans: node.bans(now).len(),
                misbehaviour: node
                    .misbehaviour_counts()
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                commits: chain.store().commits(),
                traffic: node.link_traffic(),
            }
        })
        .await?;
    let network = snap.network;
    let mut o = Out::default();

    o.family(
        "info",
        "gauge",
        "Always 1; labels give the network and version.",
    );
    o.sample(
        "info",
        &[("network", network), ("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.single("height", "gauge", "Height of the best chain.", snap.height);
    o.single(
        "header_height",
        "gauge",
        "Height of the best known header chain (ahead of height while syncing).",
        snap.header_height,
    );
    o.single(
        "mempool_transactions",
        "gauge",
        "Transactions waiting in the mempool.",
        snap.mempool,
    );

    let mut per_link: BTreeMap<LinkId, LinkFigures> = BTreeMap::new();
    for p in &snap.peers {
        let f = per_link.entry(p.link).or_default();
        f.peers += 1;
        f.ready += u64::from(p.ready);
        f.bytes_in += p.stats.bytes_in;
        f.bytes_out += p.stats.bytes_out;
        f.msgs_in += p.stats.msgs_in;
        f.msgs_out += p.stats.msgs_out;
    }
    type Pick = fn(&LinkFigures) -> u64;
    let per_link_families: [(&str, &str, Pick); 6] = [
        ("peers", "Peer sessions open on the link.", |f| f.peers),
        (
            "peers_ready",
            "Peer sessions on the link that completed the handshake.",
            |f| f.ready,
        ),
        (
            "link_session_bytes_in",
            "Envelope bytes received over the sessions open now on the link.",
            |f| f.bytes_in,
        ),
        (
            "link_session_bytes_out",
            "Envelope bytes sent over the sessions open now on the link.",
            |f| f.bytes_out,
        ),
        (
            "link_session_messages_in",
            "Messages received over the sessions open now on the link.",
            |f| f.msgs_in,
        ),
        (
            "link_session_messages_out",
            "Messages sent over the sessions open now on the link.",
            |f| f.msgs_out,
        ),
    ];
    o.family(
        "link_up",
        "gauge",
        "1 while the link is up, 0 while it is down.",
    );
    for l in &links {
        o.sample(
            "link_up",
            &[("link", &l.id.to_string()), ("url", &l.url)],
            u8::from(l.up),
        );
    }
    for (name, help, pick) in per_link_families {
        o.family(name, "gauge", help);
        for l in &links {
            let v = per_link.get(&l.id).map(pick).unwrap_or(0);
            o.sample(name, &[("link", &l.id.to_string()), ("url", &l.url)], v);
        }
    }

    type Total = fn(&crate::node::PeerStats) -> u64;
    let totals: [(&str, &str, Total); 4] = [
        (
            "link_bytes_in_total",
            "Envelope bytes received on the link since the node started.",
            |t| t.bytes_in,
        ),
        (
            "link_bytes_out_total",
            "Envelope bytes sent on the link since the node started.",
            |t| t.bytes_out,
        ),
        (
            "link_messages_in_total",
            "Messages received on the link since the node started.",
            |t| t.msgs_in,
        ),
        (
            "link_messages_out_total",
            "Messages sent on the link since the node started.",
            |t| t.msgs_out,
        ),
    ];
    for (name, help, pick) in totals {
        o.family(name, "counter", help);
        for l in &links {
            let v = snap.traffic.get(&l.id).map(pick).unwrap_or(0);
            o.sample(name, &[("link", &l.id.to_string()), ("url", &l.url)], v);
        }
    }

    // Radio (packet) links: what the core handed to the TNC. Reset when the link
    // goes down and comes back, as counters may be.
    let radio: Vec<_> = links
        .iter()
        .filter_map(|l| snap.packet.get(&l.id).map(|p| (l, p)))
        .collect();
    o.family(
        "radio_air_seconds_total",
        "counter",
        "Air time handed to the radio link, in seconds.",
    );
    for (l, p) in &radio {
        let id = l.id.to_string();
        o.sample(
            "radio_air_seconds_total",
            &[("link", &id), ("url", &l.url)],
            p.air_ms as f64 / 1000.0,
        );
    }
    o.family(
        "radio_packets_out_total",
        "counter",
        "Packets handed to the radio link.",
    );
    for (l, p) in &radio {
        let id = l.id.to_string();
        o.sample(
            "radio_packets_out_total",
            &[("link", &id), ("url", &l.url)],
            p.packets_out,
        );
    }
    o.family(
        "radio_fragments_repaired_total",
        "counter",
        "Fragments sent again on a receiver's request (selective repeat).",
    );
    for (l, p) in &radio {
        let id = l.id.to_string();
        o.sample(
            "radio_fragments_repaired_total",
            &[("link", &id), ("url", &l.url)],
            p.repaired,
        );
    }
    o.family(
        "radio_duty_budget_seconds",
        "gauge",
        "Air time the duty-cycle cap allows at once now on the radio link (absent: no cap).",
    );
    for (l, p) in &radio {
        if let Some((left, _)) = p.duty_budget_ms {
            let id = l.id.to_string();
            o.sample(
                "radio_duty_budget_seconds",
                &[("link", &id), ("url", &l.url)],
                left as f64 / 1000.0,
            );
        }
    }
    o.family(
        "radio_duty_cycle_waits_total",
        "counter",
        "Times the duty-cycle cap held traffic back on the radio link.",
    );
    for (l, p) in &radio {
        let id = l.id.to_string();
        o.sample(
            "radio_duty_cycle_waits_total",
            &[("link", &id), ("url", &l.url)],
            p.duty_waits,
        );
    }

    let ob = &snap.outbox;
    o.family("outbox_items", "gauge", "Outbox items by state.");
    for (state, name) in [
        (ItemState::Pending, "pending"),
        (ItemState::Held, "held"),
        (ItemState::Expired, "expired"),
    ] {
        let n = ob.items.iter().filter(|i| i.state == state).count();
        o.sample("outbox_items", &[("state", name)], n);
    }
    o.single(
        "outbox_enqueued_total",
        "counter",
        "Outbox items ever queued (kept in the store).",
        ob.totals.enqueued,
    );
    o.single(
        "outbox_delivered_total",
        "counter",
        "Outbox items acknowledged or proven held (kept in the store).",
        ob.totals.delivered,
    );
    o.single(
        "outbox_dropped_total",
        "counter",
        "Outbox items dropped by an operator (kept in the store).",
        ob.totals.dropped,
    );
    o.single(
        "outbox_retransmissions_total",
        "counter",
        "Outbox attempts after the first, since start.",
        ob.stats.retries,
    );
    o.single(
        "outbox_refused_total",
        "counter",
        "Items the outbox refused for lack of room, since start.",
        ob.refused,
    );
    o.single(
        "bans",
        "gauge",
        "Bans in force (addresses, subnets, callsigns).",
        snap.bans,
    );
    o.family(
        "misbehaviour_by_reason_total",
        "counter",
        "Peers disconnected for misbehaviour since start, by reject code.",
    );
    for (reason, n) in &snap.misbehaviour {
        o.sample("misbehaviour_by_reason_total", &[("reason", reason)], n);
    }
    o.single(
        "store_commits_total",
        "counter",
        "Store commits that wrote something since start (one WAL fsync each).",
        snap.commits,
    );
    o.single(
        "misbehaviour_total",
        "counter",
        "Peers disconnected for misbehaviour since start (all reasons).",
        s.misbehaviours.load(Ordering::Relaxed),
    );
    Ok(o.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut o = Out::default();
        o.sample("x", &[("url", "tcp://\"h\"")], 1);
        assert_eq!(o.0, "skywave_x{url=\"tcp://\\\"h\\\"\"} 1\n");
    }
}
