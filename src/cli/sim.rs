//! `skywave sim`: run a many-node scenario on the deterministic simulator and print its
//! figures (same seed, same figures), with what the run cost on this machine.

use crate::sim::scenario::{run_with, Progress, Scenario, Topology};
use anyhow::{bail, Result};
use std::time::Instant;

/// How the scenario is sized from the command line.
pub struct Sizing {
    /// Seed: same seed, same run.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// line, star, mesh or islands.
    pub topology: String,
    /// Hours of activity before the heal.
    pub hours: f64,
    /// Payments per node per hour (None: the scenario's default).
    pub payments: Option<f64>,
    /// Blocks per hour, network-wide.
    pub blocks: Option<f64>,
    /// Node crashes per hour, network-wide.
    pub restarts: Option<f64>,
}

/// Peak resident memory of this process in MB (Linux; None elsewhere).
fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Resident memory of this process now, in MB (Linux; None elsewhere).
fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds this process has used (user and system; Linux; None elsewhere): on a
/// shared machine a fairer cost than wall time.
fn cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Run `skywave sim`. Fails (exit status 1) when the run does not converge cleanly.
pub fn run(z: Sizing, as_json: bool) -> Result<()> {
    let Some(t) = Topology::parse(&z.topology) else {
        bail!(
            "unknown topology '{}' (line, star, mesh, islands)",
            z.topology
        );
    };
    if z.nodes < 2 {
        bail!("a simulation needs at least 2 nodes");
    }
    if !(z.hours.is_finite() && z.hours >= 0.0) {
        bail!("--hours must be a number of hours");
    }
    let mut sc = Scenario::new(z.seed, z.nodes, t, z.hours);
    for (v, field) in [
        (z.payments, &mut sc.payments_per_node_hour),
        (z.blocks, &mut sc.blocks_per_hour),
        (z.restarts, &mut sc.restarts_per_hour),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                bail!("rates must be non-negative numbers");
            }
            *field = v;
        }
    }
    let started = Instant::now();
    // A large run takes minutes: say where it is on stderr (stdout keeps the report).
    let mut tell = |p: &Progress| {
        eprintln!(
            "  {:.0} h simulated{}: {} events, {} outbox items waiting, {} transactions in mempools, {:.0} s, {} resident",
            p.sim_ms as f64 / 3_600_000.0,
            if p.healing { " (healing)" } else { "" },
            p.events,
            p.outbox_pending,
            p.mempool_txs,
            started.elapsed().as_secs_f64(),
            rss_mb().map_or("? MB".into(), |m| format!("{m:.0} MB")),
        )
    };
    let r = run_with(&sc, &mut tell)?;
    let wall = started.elapsed().as_secs_f64();
    let node_hours = z.nodes as f64 * r.elapsed_ms as f64 / 3_600_000.0;
    let per_node_hour_ms = if node_hours > 0.0 {
        wall * 1000.0 / node_hours
    } else {
        0.0
    };
    let rss = peak_rss_mb();
    let cpu = cpu_s();
    let per_node_hour_cpu_ms = cpu
        .filter(|_| node_hours > 0.0)
        .map(|c| c * 1000.0 / node_hours);
    if as_json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("wall_s".into(), serde_json::json!(wall));
            o.insert("peak_rss_mb".into(), serde_json::json!(rss));
            o.insert("cpu_s".into(), serde_json::json!(cpu));
            o.insert(
                "cpu_ms_per_node_hour".into(),
                serde_json::json!(per_node_hour_cpu_ms),
            );
            o.insert(
                "wall_ms_per_node_hour".into(),
                serde_json::json!(per_node_hour_ms),
            );
        }
        println!("{v}");
    } else {
        println!("{r}");
        println!(
            "  cost on this machine: {wall:.1} s of wall time ({per_node_hour_ms:.2} ms per simulated node-hour), {} of CPU ({}), peak memory {}; {node_hours:.0} node-hours, {} simulator events",
            cpu.map_or("unknown".into(), |c| format!("{c:.1} s")),
            per_node_hour_cpu_ms.map_or("unknown".into(), |c| format!("{c:.2} ms per node-hour")),
            rss.map_or("unknown".into(), |m| format!("{m:.0} MB")),
            r.events
        );
    }
    if !r.ok {
        bail!("{}", r.verdict);
    }
    Ok(())
}
