//! Compact blocks: a peer that holds most of a block's transactions in its mempool gets
//! the header, the coinbase and a 6-byte short id per transaction, and asks only for the
//! transactions it lacks. On a 1200-baud link a 150-byte transaction costs a second of
//! air; its short id costs 40 ms.

use super::{Node, PeerId};
use crate::chain::{Block, Coinbase, Hash, Header, Transaction};
use crate::wire::message::{
    short_id, BlockTxn, CompactBlock, GetBlockTxn, InvItem, InvKind, Message, RejectCode, ShortId,
};
use std::collections::HashMap;
use tracing::debug;

/// Compact blocks held while their missing transactions are fetched.
pub const MAX_PENDING: usize = 8;

/// A compact block waiting for transactions.
pub(super) struct Pending {
    peer: PeerId,
    header: Header,
    coinbase: Coinbase,
    slots: Vec<Option<Transaction>>,
}

/// The compact form of `b`.
pub(super) fn compact_of(b: &Block) -> Message {
    let hash = b.hash();
    Message::CompactBlock(CompactBlock {
        header: b.header.clone(),
        coinbase: b.coinbase.clone(),
        short_ids: b.txs.iter().map(|t| short_id(&hash, &t.id())).collect(),
    })
}

impl Node {
    pub(super) fn on_compact(&mut self, now: u64, peer: PeerId, c: CompactBlock) {
        let hash = c.header.hash();
        if self.chain.has_block(&hash) {
            self.in_flight.remove_block(&hash);
            return;
        }
        // The header's proof of work is checked before any work is done on the body.
        if let Err(e) = self
            .chain
            .accept_headers(std::slice::from_ref(&c.header), self.wall_s(now))
        {
            if e.is_peer_fault() {
                self.misbehave(
                    peer,
                    RejectCode::Invalid,
                    format!("invalid compact block header: {e}"),
                    Some(hash),
                );
            } else {
                self.ask_headers(now, peer, None);
            }
            return;
        }
        let pool: HashMap<ShortId, Transaction> = self
            .chain
            .mempool_txs()
            .into_iter()
            .map(|t| (short_id(&hash, &t.id()), t))
            .collect();
        let slots: Vec<Option<Transaction>> =
            c.short_ids.iter().map(|s| pool.get(s).cloned()).collect();
        let missing: Vec<u16> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| i as u16)
            .collect();
        let pending = Pending {
            peer,
            header: c.header,
            coinbase: c.coinbase,
            slots,
        };
        if missing.is_empty() {
            self.complete_compact(now, hash, pending);
            return;
        }
        debug!(peer, %hash, missing = missing.len(), "compact block: asking for missing transactions");
        if self.compact_pending.len() >= MAX_PENDING {
            if let Some(oldest) = self.compact_pending.keys().next().copied() {
                self.compact_pending.remove(&oldest);
            }
        }
        self.compact_pending.insert(hash, pending);
        self.send(
            peer,
            Message::GetBlockTxn(GetBlockTxn {
                block: hash,
                indexes: missing,
            }),
        );
    }

    pub(super) fn on_getblocktxn(&mut self, peer: PeerId, g: GetBlockTxn) {
        let block = match self.chain.block(&g.block) {
            Ok(Some(b)) => b,
            _ => {
                self.send(
                    peer,
                    Message::NotFound(vec![InvItem {
                        kind: InvKind::Block,
                        hash: g.block,
                    }]),
                );
                return;
            }
        };
        // Each index at most once: the answer is then no larger than the block (which
        // came in one envelope), where 1000 copies of one index asked for 150 KB.
        let mut asked = vec![false; block.txs.len()];
        let mut txs = Vec::with_capacity(g.indexes.len().min(block.txs.len()));
        for i in g.indexes {
            if asked.get(i as usize).copied().unwrap_or(false) {
                self.misbehave(
                    peer,
                    RejectCode::Malformed,
                    format!("getblocktxn asks for index {i} twice"),
                    Some(g.block),
                );
                return;
            }
            match block.txs.get(i as usize) {
                Some(t) => {
                    asked[i as usize] = true;
                    txs.push(t.clone());
                }
                None => {
                    self.misbehave(
                        peer,
                        RejectCode::Malformed,
                        format!(
                            "getblocktxn index {i} beyond the block's {} transactions",
                            block.txs.len()
                        ),
                        Some(g.block),
                    );
                    return;
                }
            }
        }
        self.send(
            peer,
            Message::BlockTxn(BlockTxn {
                block: g.block,
                txs,
            }),
        );
    }

    pub(super) fn on_blocktxn(&mut self, now: u64, peer: PeerId, b: BlockTxn) {
        let Some(mut pending) = self.compact_pending.remove(&b.block) else {
            return;
        };
        if pending.peer != peer {
            self.compact_pending.insert(b.block, pending);
            return;
        }
        let mut txs = b.txs.into_iter();
        for slot in pending.slots.iter_mut().filter(|s| s.is_none()) {
            match txs.next() {
                Some(t) => *slot = Some(t),
                None => break,
            }
        }
        if pending.slots.iter().any(Option::is_none) || txs.next().is_some() {
            self.misbehave(
                peer,
                RejectCode::Malformed,
                "blocktxn does not match the transactions asked for".into(),
                Some(b.block),
            );
            return;
        }
        self.complete_compact(now, b.block, pending);
    }

    fn complete_compact(&mut self, now: u64, hash: Hash, p: Pending) {
        let block = Block {
            header: p.header,
            coinbase: p.coinbase,
            txs: p.slots.into_iter().flatten().collect(),
        };
        // The header, and so the hash, is the one received: only the transactions the
        // short ids picked can be wrong.
        if crate::chain::merkle::root(&block.leaf_ids()) != block.header.merkle_root {
            // A short-id collision filled a slot with the wrong transaction: fetch it whole.
            debug!(%hash, "compact block did not rebuild; fetching the full block");
            self.send(
                p.peer,
                Message::GetData(vec![InvItem {
                    kind: InvKind::Block,
                    hash,
                }]),
            );
            return;
        }
        self.block_arrived(now, p.peer, block);
    }
}
