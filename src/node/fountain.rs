//! Coded broadcast of new blocks on a shared radio channel (ADR 0014): the block goes out
//! once to every station, as the source symbols of a `wire::fountain` transfer followed
//! by repair symbols sized to the worst loss the stations reported, instead of once per
//! station that asks for it, each with its own NACK rounds. A station that still lacks
//! symbols asks for a count of them (`PacketLink::coded`); the new repair symbols serve
//! every station that lacks any. Point-to-point links and channels with one other station
//! keep the plain path (the header, then the block on request, repaired by NACK).

use super::Node;
use crate::chain::Hash;
use crate::net::{LinkId, PeerId};
use crate::wire::message::{features, Message};

/// Frames a block must fill before it goes coded.
const MIN_CODED_FRAMES: usize = 4;

impl Node {
    /// Broadcast block `hash` coded on `link` if it is a shared turn-taking channel with
    /// at least two other stations in session, all reading coded transfers. True if it
    /// was queued (the plain announcement is then not needed: the block is on its way).
    pub(super) fn broadcast_block_coded(&mut self, link: LinkId, hash: &Hash) -> bool {
        let Some(l) = self.packet_links.get(&link) else {
            return false;
        };
        if !l.coding || !l.takes_turns() || !l.caps.broadcast || !l.caps.blocks {
            return false;
        }
        let on_link = self
            .peers
            .iter()
            .filter(|(_, p)| p.link == link && !p.closing);
        let mut stations: Vec<PeerId> = Vec::new();
        for (&id, p) in on_link {
            match &p.hello {
                Some(h) if h.features & features::CODED != 0 => stations.push(id),
                // A station that cannot read it would take the symbols for garbage.
                _ => return false,
            }
        }
        if stations.len() < 2 {
            return false;
        }
        let Ok(Some(block)) = self.chain.block(hash) else {
            return false;
        };
        // Stations that hold every transaction of the block get it cheaper as a compact
        // block (a frame or two each, on request).
        let all_known = block.txs.iter().all(|tx| {
            let id = tx.id();
            stations
                .iter()
                .all(|s| self.peers.get(s).is_some_and(|p| p.known.contains(&id)))
        });
        if all_known {
            return false;
        }
        let bytes = self.encode(&Message::Block(block));
        // Tagged for every station here, as any broadcast (docs/adr/0015).
        let bytes = self.seal_broadcast(link, bytes);
        let mtu = self.packet_links.get(&link).map_or(0, |l| l.caps.mtu);
        if bytes.len() < MIN_CODED_FRAMES * mtu {
            // A block of a few frames costs little either way, and the plain path's
            // compact blocks serve stations that hold some of its transactions.
            return false;
        }
        let now = self.now;
        self.packet_links
            .get_mut(&link)
            .is_some_and(|l| l.enqueue_coded(now, link, &bytes, &stations))
    }
}
