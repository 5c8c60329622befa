//! Frames a hostile peer sends, shared by the bad-input and ban tests.

use skywave::chain::{merkle, params, pow, Address, Block, Coinbase, Header};
use skywave::wire::envelope;
use skywave::wire::message::{Hello, Message, PROTOCOL_VERSION};
use skywave::wire::stream::frame;

/// A well-formed handshake from a stranger on `network`.
pub fn hello(network: [u8; 4]) -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        network,
        height: 0,
        tip: params::regtest().genesis_hash(),
        work: 0,
        node_id: [7u8; 32],
        callsign: "N0EVIL".into(),
        features: 0,
        nonce: 42,
        user_agent: "hostile-test".into(),
    })
}

/// `m` in an envelope, length-prefixed for a TCP stream.
pub fn framed(network: [u8; 4], id: u64, m: &Message) -> Vec<u8> {
    frame(&envelope::encode(network, id, m))
}

/// A regtest block at height 1 whose proof of work is wrong (everything else is valid).
pub fn bad_pow_block() -> Block {
    let p = params::regtest();
    let coinbase = Coinbase {
        height: 1,
        to: Address([1; 32]),
        amount: p.subsidy(1),
    };
    let mut header = Header {
        version: 1,
        prev: p.genesis_hash(),
        merkle_root: merkle::root(&[coinbase.id()]),
        time: p.genesis.header.time + 60,
        bits: p.pow_limit_bits,
        nonce: 0,
        height: 1,
    };
    while pow::check_pow(&p, &header) {
        header.nonce += 1;
    }
    Block {
        header,
        coinbase,
        txs: vec![],
    }
}
