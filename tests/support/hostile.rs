//! Frames a hostile peer sends, shared by the bad-input and ban tests.

use skywave::chain::{merkle, params, pow, Address, Block, Coinbase, Header};
use skywave::node::auth;
use skywave::wire::envelope;
use skywave::wire::message::{Hello, Message, PROTOCOL_VERSION};
use skywave::wire::stream::{frame, StreamDecoder};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The hostile peer's node key: it holds the key of the id it claims, so it passes the
/// handshake and reaches the checks after it.
fn hostile_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// A well-formed handshake from a stranger on `network`.
pub fn hello(network: [u8; 4]) -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        network,
        height: 0,
        tip: params::regtest().genesis_hash(),
        work: 0,
        node_id: hostile_key().verifying_key().to_bytes(),
        callsign: "N0EVIL".into(),
        features: 0,
        nonce: 42,
        user_agent: "hostile-test".into(),
    })
}

/// Connect to a node on `port` and finish the handshake as a well-formed stranger: our
/// `Hello`, the node's `Hello`, and our signed proof answering its nonce. Whatever the
/// test writes next reaches the node's checks beyond the handshake.
/// Returns the stream and the node's id (what it sends next needs a session tag for it:
/// [`framed_to`]).
pub fn handshake(port: u16, network: [u8; 4]) -> std::io::Result<(TcpStream, [u8; 32])> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let node = handshake_on(&mut s, network)?;
    Ok((s, node))
}

/// [`handshake`] on a connection the caller opened (with its own socket options); the
/// node's id.
pub fn handshake_on(s: &mut TcpStream, network: [u8; 4]) -> std::io::Result<[u8; 32]> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&framed(network, 1, &hello(network)))?;
    let mut dec = StreamDecoder::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        while let Some(f) = dec.next_frame() {
            let f = f.map_err(|e| std::io::Error::other(e.to_string()))?;
            let env = envelope::decode(&f).map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Message::Hello(h) = env.message {
                let t = auth::Transcript {
                    network,
                    prover: hostile_key().verifying_key().to_bytes(),
                    verifier: h.node_id,
                    seen: h.nonce,
                    nonce: 42,
                };
                let proof = auth::prove(&hostile_key(), None, &t);
                s.write_all(&framed(network, 2, &Message::Auth(proof)))?;
                return Ok(h.node_id);
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
    }
    Err(std::io::Error::other("no Hello from the node"))
}

/// `m` in an envelope, length-prefixed for a TCP stream (untagged: a handshake message,
/// or one sent before a handshake).
pub fn framed(network: [u8; 4], id: u64, m: &Message) -> Vec<u8> {
    frame(&envelope::encode(network, id, m))
}

/// `m` as the hostile peer sends it after its handshake with the node whose id is
/// `node`: with their session tag, so that it reaches the node's checks behind the tag.
pub fn framed_to(network: [u8; 4], node: &[u8; 32], id: u64, m: &Message) -> Vec<u8> {
    let bytes = envelope::encode(network, id, m);
    frame(&auth::seal_for(&hostile_key(), node, network, &bytes).expect("the node's id is a point"))
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
