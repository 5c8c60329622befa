//! A whole sans-IO `Node` (regtest, in-memory store, fixed seed) driven by arbitrary
//! events from two peer slots.
//!
//! Each event starts with an op byte: `op & 1` = peer slot, `op >> 1` (mod 8) = action:
//! * 0 raw: `len_hi len_lo bytes` handed to `handle_frame` as they are;
//! * 1 wrapped: `kind len_hi len_lo body` sealed in a valid envelope (right network id,
//!   version 1, fresh msg_id, correct CRC-32), so the bytes reach the message handlers;
//! * 2 hello: `h w` a valid `Hello` (height `h`, work `w`, node id per slot) completing
//!   the handshake;
//! * 3 time: `dt` advance the clock by `dt` seconds (x4 above 127) and `handle_timeout`;
//! * 4 mine: `n` mine `n % 4 + 1` blocks on the slot's own shadow chain (both slots
//!   start at the node's genesis and pay different addresses, so they fork);
//! * 5 block: `i` send shadow block `i` (mod count) as a `Block`;
//! * 6 headers: `i n` send shadow headers `i..i+n` as `Headers`, or an `Inv` of block `i`
//!   if `n` is odd;
//! * 7 echo: send back the last envelope the node sent to this slot.
//!
//! A `Disconnect` event is answered like a driver would: `peer_disconnected`, then a new
//! session (new peer id) on the same slot. Transmits and events are drained after every
//! action; asserts no panic and fewer than 20 000 transmits queued at any drain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::chain::{params, pow, Address, Block, Chain};
use skywave::link::{LinkCaps, PeerId};
use skywave::node::{Node, NodeConfig, NodeEvent};
use skywave::store::Store;
use skywave::wire::envelope::{self, CRC32, ENVELOPE_VERSION};
use skywave::wire::message::{features, Hello, InvItem, InvKind, Message, PROTOCOL_VERSION};

const MAX_TRANSMITS: usize = 20_000;
const MAX_EVENTS: usize = 64;
const MAX_SHADOW_BLOCKS: usize = 24;

struct Slot {
    peer: PeerId,
    last_sent: Option<Vec<u8>>,
    shadow: Option<Chain>,
    blocks: Vec<Block>,
}

struct Harness {
    node: Node,
    now: u64,
    network: [u8; 4],
    next_peer: PeerId,
    next_msg_id: u64,
    slots: [Slot; 2],
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Harness {
    fn new() -> Harness {
        let p = params::regtest();
        let network = p.network_id();
        let now = p.genesis.header.time * 1000 + 60_000;
        let store = Store::open_in_memory().expect("in-memory store");
        let chain = Chain::open(p, store).expect("regtest chain");
        let node = Node::new(
            chain,
            NodeConfig {
                node_key: ed25519_dalek::SigningKey::from_bytes(&[0xAA; 32]),
                callsign: "N0FUZ".into(),
                seed: 0x5eed,
                user_agent: "skywave-fuzz".into(),
                peers: Default::default(),
            },
        );
        let slot = |peer| Slot {
            peer,
            last_sent: None,
            shadow: None,
            blocks: Vec::new(),
        };
        let mut h = Harness {
            node,
            now,
            network,
            next_peer: 3,
            next_msg_id: 1,
            slots: [slot(1), slot(2)],
        };
        h.node.link_up(0, 0, LinkCaps::tcp());
        h.node.peer_connected(now, 1, 0, "fuzz:1".into(), true);
        h.node.peer_connected(now, 2, 0, "fuzz:2".into(), false);
        h.drain();
        h
    }

    /// A valid envelope around raw `body` bytes of `kind`.
    fn seal(&mut self, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![ENVELOPE_VERSION];
        b.extend_from_slice(&self.network);
        b.push(kind);
        put_varint(&mut b, self.next_msg_id);
        self.next_msg_id += 1;
        b.extend_from_slice(body);
        let crc = CRC32.checksum(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn encode(&mut self, msg: &Message) -> Vec<u8> {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        envelope::encode(self.network, id, msg)
    }

    fn frame(&mut self, slot: usize, bytes: &[u8]) {
        let peer = self.slots[slot].peer;
        self.node.handle_frame(self.now, peer, bytes);
        self.drain();
    }

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(t) = self.node.poll_transmit() {
            n += 1;
            assert!(n < MAX_TRANSMITS, "transmit queue grew past {MAX_TRANSMITS}");
            assert!(t.bytes.len() <= envelope::MAX_MESSAGE_LEN);
            let to = match t.to {
                skywave::node::Dest::Peer(p) => p,
                skywave::node::Dest::Broadcast(_) => continue,
            };
            if let Some(s) = self.slots.iter_mut().find(|s| s.peer == to) {
                s.last_sent = Some(t.bytes);
            }
        }
        let mut gone = Vec::new();
        while let Some(ev) = self.node.poll_event() {
            if let NodeEvent::Disconnect { peer, .. } = ev {
                gone.push(peer);
            }
        }
        for peer in gone {
            let Some(i) = self.slots.iter().position(|s| s.peer == peer) else {
                continue;
            };
            self.node.peer_disconnected(self.now, peer);
            let new = self.next_peer;
            self.next_peer += 1;
            self.slots[i].peer = new;
            self.slots[i].last_sent = None;
            self.node
                .peer_connected(self.now, new, 0, format!("fuzz:{new}"), i == 0);
            // The new session's Hello (and anything else) is drained next time round.
        }
    }

    fn hello(&mut self, slot: usize, height: u8, work: u8) {
        let tip = self.node.chain().tip();
        let msg = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            network: self.network,
            height: u64::from(height),
            tip: tip.hash,
            work: tip.work + u128::from(work),
            node_id: [slot as u8 + 1; 32],
            callsign: format!("N0P-{slot}"),
            features: features::FULL_BLOCKS,
            nonce: 1000 + slot as u64,
            user_agent: "fuzz-peer".into(),
        });
        let b = self.encode(&msg);
        self.frame(slot, &b);
    }

    fn mine(&mut self, slot: usize, n: u8) {
        if self.slots[slot].shadow.is_none() {
            let store = Store::open_in_memory().expect("in-memory store");
            let chain = Chain::open(params::regtest(), store).expect("regtest chain");
            self.slots[slot].shadow = Some(chain);
        }
        let now = self.now;
        let s = &mut self.slots[slot];
        let Some(chain) = s.shadow.as_mut() else {
            return;
        };
        for _ in 0..(n % 4 + 1) {
            if s.blocks.len() >= MAX_SHADOW_BLOCKS {
                break;
            }
            let mut block = chain.block_template(Address([slot as u8 + 0x10; 32]), now / 1000);
            while !pow::mine(&mut block.header, 1_000_000) {}
            if chain.submit_block(block.clone(), now / 1000).is_ok() {
                s.blocks.push(block);
            }
        }
    }

    fn step(&mut self, data: &mut &[u8]) -> Option<()> {
        let op = take(data)?;
        let slot = usize::from(op & 1);
        match (op >> 1) % 8 {
            0 => {
                let len = take_len(data)?;
                let (bytes, rest) = data.split_at(len.min(data.len()));
                *data = rest;
                self.frame(slot, bytes);
            }
            1 => {
                let kind = take(data)?;
                let len = take_len(data)?;
                let (body, rest) = data.split_at(len.min(data.len()));
                *data = rest;
                let b = self.seal(kind % 12, body);
                self.frame(slot, &b);
            }
            2 => {
                let (h, w) = (take(data)?, take(data)?);
                self.hello(slot, h, w);
            }
            3 => {
                let dt = u64::from(take(data)?);
                let secs = if dt > 127 { (dt - 127) * 4 + 127 } else { dt };
                self.now += secs * 1000;
                self.node.handle_timeout(self.now);
                self.drain();
            }
            4 => {
                let n = take(data)?;
                self.mine(slot, n);
            }
            5 => {
                let i = usize::from(take(data)?);
                let blocks = &self.slots[slot].blocks;
                if let Some(b) = blocks.get(i % blocks.len().max(1)).cloned() {
                    let bytes = self.encode(&Message::Block(b));
                    self.frame(slot, &bytes);
                }
            }
            6 => {
                let (i, n) = (usize::from(take(data)?), usize::from(take(data)?));
                let blocks = &self.slots[slot].blocks;
                if blocks.is_empty() {
                    return Some(());
                }
                let i = i % blocks.len();
                let msg = if n % 2 == 1 {
                    Message::Inv(vec![InvItem {
                        kind: InvKind::Block,
                        hash: blocks[i].hash(),
                    }])
                } else {
                    let end = (i + n / 2).min(blocks.len());
                    Message::Headers(blocks[i..end].iter().map(|b| b.header.clone()).collect())
                };
                let bytes = self.encode(&msg);
                self.frame(slot, &bytes);
            }
            _ => {
                if let Some(b) = self.slots[slot].last_sent.clone() {
                    self.frame(slot, &b);
                }
            }
        }
        Some(())
    }
}

fn take(data: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = data.split_first()?;
    *data = rest;
    Some(b)
}

fn take_len(data: &mut &[u8]) -> Option<usize> {
    let hi = take(data)?;
    let lo = take(data)?;
    Some(usize::from(u16::from_be_bytes([hi, lo])))
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut data = data;
    for _ in 0..MAX_EVENTS {
        if h.step(&mut data).is_none() {
            break;
        }
    }
});
