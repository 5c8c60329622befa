//! Headers-first sync against peers on different forks (driven through the simulator).

use crate::chain::{params, Address};
use crate::sim::{LinkSpec, Sim};

/// A node that follows one fork (its neighbour's) learns of a heavier fork from another
/// peer. The neighbour is as high as the blocks it lacks, so height alone says it might
/// have them; it answers `NotFound`. Those blocks must then come from the peer that sent
/// the headers, instead of being asked of the neighbour again and again (in the islands
/// scenario the gateways never switched fork, and their radio links carried a GetData /
/// NotFound exchange every second for hours).
#[test]
fn blocks_a_peer_on_another_fork_lacks_come_from_the_peer_that_has_them() {
    let p = params::regtest();
    // Node 0 syncs; node 1 is its neighbour on the light fork; node 2 holds the heavy one.
    let mut sim = Sim::new(&p, 3, 3).unwrap();
    sim.connect(0, 1, LinkSpec::fast());
    for _ in 0..3 {
        sim.mine(1, Address([1; 32])).unwrap();
    }
    for _ in 0..5 {
        sim.mine(2, Address([2; 32])).unwrap();
    }
    sim.run_for(10_000);
    assert_eq!(sim.nodes[0].chain().tip().height, 3);
    // The heavy fork's node comes in on a later session (a higher peer id than node 1's).
    sim.connect(0, 2, LinkSpec::fast());
    sim.run_for(60_000);
    let heavy = sim.nodes[2].chain().tip();
    assert_eq!(heavy.height, 5);
    assert_eq!(
        sim.nodes[0].chain().tip().hash,
        heavy.hash,
        "node 0 still on the light fork (best header at height {})",
        sim.nodes[0].chain().best_header().height
    );
    assert!(sim.converged(), "the neighbour follows through node 0");
}
