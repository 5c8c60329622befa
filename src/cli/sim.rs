//! `skywave sim`: run a many-node scenario on the deterministic simulator and print its
//! figures (same seed, same figures).

use crate::sim::scenario::{run as run_scenario, Scenario, Topology};
use anyhow::{bail, Result};

/// Run `skywave sim`.
pub fn run(seed: u64, nodes: usize, topology: &str, hours: f64, as_json: bool) -> Result<()> {
    let Some(t) = Topology::parse(topology) else {
        bail!("unknown topology '{topology}' (line, star, mesh, islands)");
    };
    if nodes < 2 {
        bail!("a simulation needs at least 2 nodes");
    }
    let r = run_scenario(&Scenario::new(seed, nodes, t, hours))?;
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "seed": r.seed, "converged": r.converged, "converge_ms": r.converge_ms,
                "tips_ms": r.tips_ms, "elapsed_ms": r.elapsed_ms,
                "busiest_link_load": r.busiest_link_load,
                "height": r.height, "bytes_by_kind": r.bytes_by_kind,
                "txs_accepted": r.txs_accepted, "txs_missing": r.txs_missing,
                "txs_twice": r.txs_twice, "outbox": r.outbox, "enqueued": r.enqueued,
                "delivered": r.delivered, "pending": r.pending, "expired": r.expired,
                "vanished": r.vanished, "restarts": r.restarts, "sessions": r.sessions,
            })
        );
    } else {
        println!("{nodes} nodes, {topology}, {hours} h of activity then heal");
        println!("{r}");
    }
    Ok(())
}
