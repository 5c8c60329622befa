//! The quick-start command works: `skywave demo` converges, the transaction is confirmed
//! everywhere, and the radio hop carried traffic.

use std::process::Command;

#[test]
fn demo_converges_with_a_radio_hop() {
    let out = Command::new(env!("CARGO_BIN_EXE_skywave"))
        .args(["--json", "demo", "--simulated-radio", "--blocks", "3"])
        .env("SKYWAVE_LOG", "warn")
        .output()
        .expect("run skywave demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("demo --json prints one JSON object");
    assert_eq!(v["converged"], true);
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    let tip = &nodes[0]["tip"];
    assert!(nodes.iter().all(|n| &n["tip"] == tip), "{v}");
    assert!(nodes[0]["height"].as_u64().unwrap_or(0) >= 3);
    assert!(
        v["radio"]["frames"].as_u64().unwrap_or(0) > 0,
        "radio hop used: {v}"
    );
    assert!(v["radio"]["air_seconds"].as_f64().unwrap_or(0.0) > 1.0);
}
