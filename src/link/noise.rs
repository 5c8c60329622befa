//! The Noise layer of `tcp://` and `tcp-listen://` links (docs/PROTOCOL.md, "Noise on
//! TCP links"; ADR 0011). Internet side only: radio links never reach this module.
//!
//! `Noise_XX_25519_ChaChaPoly_BLAKE2s`, prologue `skywave-noise-v1`. Each side's Noise
//! static key is the X25519 form of its Ed25519 node key, so the remote static key the
//! handshake proves is a function of the node id: [`static_public`] maps a `Hello`'s
//! node id to the only Noise key allowed to send it.
//!
//! On the wire every Noise message, handshake or transport, is a u16 big-endian length
//! and the message. The plaintext carried by transport messages is the plain TCP byte
//! stream (u32 length + envelope, `wire::stream`), cut into pieces of at most
//! [`MAX_PIECE`] bytes.

use ed25519_dalek::{SigningKey, VerifyingKey};
use snow::StatelessTransportState;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another protocol over XX fails.
pub const PROLOGUE: &[u8] = b"skywave-noise-v1";
/// Largest Noise message (the Noise specification's limit).
pub const MAX_NOISE_MSG: usize = 65535;
/// The ChaCha20-Poly1305 tag on every transport message.
pub const TAG_LEN: usize = 16;
/// Largest plaintext piece in one transport message.
pub const MAX_PIECE: usize = MAX_NOISE_MSG - TAG_LEN;
/// Largest handshake message accepted. XX with empty payloads sends 32, 96 and 64 bytes;
/// the rest is room for a payload a later version may add (ignored today).
pub const MAX_HANDSHAKE_MSG: usize = 256;
/// A connection that has not finished the handshake by then is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Noise connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// A handshake message over [`MAX_HANDSHAKE_MSG`] (or of length 0).
    #[error(
        "Noise handshake message of {0} bytes (1 to {MAX_HANDSHAKE_MSG} expected): \
         not a skywave Noise peer (a node without Noise is reached with tcp+plain://)"
    )]
    BadHandshakeLen(usize),
    /// The handshake did not verify or could not be made.
    #[error("Noise handshake failed: {0}")]
    Handshake(String),
    /// The socket failed or closed during the handshake.
    #[error("connection ended during the Noise handshake: {0}")]
    Io(String),
    /// A transport message shorter than a tag and one byte.
    #[error("Noise message of {0} bytes: at least {min} expected", min = TAG_LEN + 1)]
    TooShort(usize),
    /// A transport message that does not authenticate.
    #[error(
        "Noise message does not decrypt: tampered with, or not from the peer of the handshake"
    )]
    Decrypt,
}

/// The X25519 public key that belongs to Ed25519 node id `node_id`, or `None` if the id
/// is not a usable public key (not a curve point, or of small order: such a key proves
/// nothing in a Diffie-Hellman).
pub fn static_public(node_id: &[u8; 32]) -> Option<[u8; 32]> {
    let vk = VerifyingKey::from_bytes(node_id).ok()?;
    if vk.is_weak() {
        return None;
    }
    Some(vk.to_montgomery().to_bytes())
}

/// A finished handshake: the two directions of the session and the peer's proven key.
pub struct Session {
    /// Seals what we send.
    pub sealer: Sealer,
    /// Opens what we receive.
    pub opener: Opener,
    /// The peer's X25519 static key, proven by the handshake.
    pub remote_static: [u8; 32],
}

fn hs_err(e: snow::Error) -> NoiseError {
    NoiseError::Handshake(e.to_string())
}

fn io_err(e: std::io::Error) -> NoiseError {
    NoiseError::Io(e.to_string())
}

/// Run the XX handshake on `io` as initiator (the side that dialled) or responder, with
/// `key`'s X25519 form as our static key. The caller bounds it in time
/// ([`HANDSHAKE_TIMEOUT`]); every message read is bounded by [`MAX_HANDSHAKE_MSG`].
pub async fn handshake<S>(
    io: &mut S,
    key: &SigningKey,
    initiator: bool,
) -> Result<Session, NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let params: snow::params::NoiseParams = PATTERN.parse().map_err(hs_err)?;
    // X25519 clamps this scalar itself; its public key is then the Montgomery form of
    // the Ed25519 public key, which is what `static_public` computes from a node id.
    let private = key.to_scalar_bytes();
    let builder = snow::Builder::new(params)
        .local_private_key(&private)
        .map_err(hs_err)?
        .prologue(PROLOGUE)
        .map_err(hs_err)?;
    let mut hs = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(hs_err)?;
    let mut msg = [0u8; 2 + MAX_HANDSHAKE_MSG];
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    while !hs.is_handshake_finished() {
        if hs.is_my_turn() {
            let n = hs.write_message(&[], &mut msg[2..]).map_err(hs_err)?;
            let len = u16::try_from(n).map_err(|_| NoiseError::BadHandshakeLen(n))?;
            msg[..2].copy_from_slice(&len.to_be_bytes());
            io.write_all(&msg[..2 + n]).await.map_err(io_err)?;
        } else {
            let mut len = [0u8; 2];
            io.read_exact(&mut len).await.map_err(io_err)?;
            let n = usize::from(u16::from_be_bytes(len));
            if n == 0 || n > MAX_HANDSHAKE_MSG {
                return Err(NoiseError::BadHandshakeLen(n));
            }
            io.read_exact(&mut msg[..n]).await.map_err(io_err)?;
            hs.read_message(&msg[..n], &mut payload).map_err(hs_err)?;
        }
    }
    let remote_static = hs
        .get_remote_static()
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or_else(|| NoiseError::Handshake("no remote static key".into()))?;
    let t = Arc::new(hs.into_stateless_transport_mode().map_err(hs_err)?);
    Ok(Session {
        sealer: Sealer {
            t: t.clone(),
            nonce: 0,
        },
        opener: Opener {
            t,
            nonce: 0,
            buf: Vec::new(),
            poisoned: None,
        },
        remote_static,
    })
}

/// The sending half: seals plaintext into length-prefixed transport messages.
pub struct Sealer {
    t: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// `plaintext` as transport messages of at most [`MAX_PIECE`] plaintext bytes each,
    /// each with its u16 length, ready to write.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let pieces = plaintext.len().div_ceil(MAX_PIECE);
        let mut out = Vec::with_capacity(plaintext.len() + pieces * (2 + TAG_LEN));
        for piece in plaintext.chunks(MAX_PIECE) {
            let n = piece.len() + TAG_LEN;
            let len = u16::try_from(n).map_err(|_| NoiseError::TooShort(n))?;
            out.extend_from_slice(&len.to_be_bytes());
            let at = out.len();
            out.resize(at + n, 0);
            self.t
                .write_message(self.nonce, piece, &mut out[at..])
                .map_err(|e| NoiseError::Handshake(e.to_string()))?;
            self.nonce += 1;
        }
        Ok(out)
    }
}

/// The receiving half: splits the byte stream into transport messages and opens them.
///
/// Push each read, then take [`next_piece`](Self::next_piece) until `None`. Holds at most one
/// message (2 + 65535 bytes) plus one read. The first error ends the stream for good:
/// every later call returns it.
pub struct Opener {
    t: Arc<StatelessTransportState>,
    nonce: u64,
    buf: Vec<u8>,
    poisoned: Option<NoiseError>,
}

impl Opener {
    /// Append bytes read from the socket (ignored once an error ended the stream).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next piece of plaintext, `None` if more bytes are needed, or the error that
    /// ended the stream.
    pub fn next_piece(&mut self) -> Option<Result<Vec<u8>, NoiseError>> {
        if let Some(e) = &self.poisoned {
            return Some(Err(e.clone()));
        }
        let len = self.buf.get(..2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if n <= TAG_LEN {
            return Some(Err(self.poison(NoiseError::TooShort(n))));
        }
        let msg = self.buf.get(2..2 + n)?;
        let mut out = vec![0u8; n - TAG_LEN];
        match self.t.read_message(self.nonce, msg, &mut out) {
            Ok(k) => {
                out.truncate(k);
                self.nonce += 1;
                self.buf.drain(..2 + n);
                Some(Ok(out))
            }
            Err(_) => Some(Err(self.poison(NoiseError::Decrypt))),
        }
    }

    /// Bytes held, not yet opened.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn poison(&mut self, e: NoiseError) -> NoiseError {
        self.poisoned = Some(e.clone());
        self.buf = Vec::new();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    async fn pair(a: &SigningKey, b: &SigningKey) -> (Session, Session) {
        let (mut x, mut y) = tokio::io::duplex(4096);
        let (ra, rb) = tokio::join!(handshake(&mut x, a, true), handshake(&mut y, b, false));
        (ra.expect("initiator"), rb.expect("responder"))
    }

    fn open_all(o: &mut Opener, bytes: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = Vec::new();
        for c in bytes.chunks(1000) {
            o.push(c);
            assert!(o.buffered() <= 2 + MAX_NOISE_MSG + c.len());
            while let Some(r) = o.next_piece() {
                out.extend(r?);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn the_handshake_proves_each_sides_node_key() {
        let (a, b) = (key(1), key(2));
        let (sa, sb) = pair(&a, &b).await;
        let id = |k: &SigningKey| k.verifying_key().to_bytes();
        assert_eq!(Some(sa.remote_static), static_public(&id(&b)));
        assert_eq!(Some(sb.remote_static), static_public(&id(&a)));
        assert_ne!(static_public(&id(&a)), static_public(&id(&b)));
        // Not a point, or of small order (the identity): no key.
        let off_curve = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .expect("some repeated byte is not a point");
        assert_eq!(static_public(&off_curve), None);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(static_public(&identity), None);
    }

    #[tokio::test]
    async fn big_plaintext_is_cut_into_noise_messages_and_put_back() {
        let (mut sa, mut sb) = pair(&key(1), &key(2)).await;
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let wire = sa.sealer.seal(&big).unwrap();
        // Five messages: four full, one of the rest; none over the Noise limit.
        let mut at = 0;
        let mut lens = Vec::new();
        while at < wire.len() {
            let n = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
            assert!(n <= MAX_NOISE_MSG);
            lens.push(n);
            at += 2 + n;
        }
        assert_eq!(lens.len(), 5, "{lens:?}");
        assert_eq!(open_all(&mut sb.opener, &wire).unwrap(), big);
        // The other direction has its own nonces.
        let back = sb.sealer.seal(b"pong").unwrap();
        assert_eq!(open_all(&mut sa.opener, &back).unwrap(), b"pong");
        // Nothing of the plaintext shows on the wire.
        let secret = &big[100_000..100_032];
        assert!(!wire.windows(32).any(|w| w == secret));
    }

    #[tokio::test]
    async fn tampered_replayed_or_short_messages_end_the_stream() {
        let (mut sa, mut sb) = pair(&key(1), &key(2)).await;
        let m1 = sa.sealer.seal(b"first").unwrap();
        let mut bad = m1.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(open_all(&mut sb.opener, &bad), Err(NoiseError::Decrypt));
        // Sticky: the good message no longer opens on this stream.
        assert_eq!(open_all(&mut sb.opener, &m1), Err(NoiseError::Decrypt));

        let (mut sa2, mut sb2) = pair(&key(1), &key(2)).await;
        let m = sa2.sealer.seal(b"once").unwrap();
        assert_eq!(open_all(&mut sb2.opener, &m).unwrap(), b"once");
        assert_eq!(open_all(&mut sb2.opener, &m), Err(NoiseError::Decrypt));
        // Another session's message does not open here.
        let other = sa.sealer.seal(b"x").unwrap();
        let (_, mut sb3) = pair(&key(1), &key(2)).await;
        assert_eq!(open_all(&mut sb3.opener, &other), Err(NoiseError::Decrypt));
        // Lengths of 0 to 16 cannot hold a piece.
        let (_, mut sb4) = pair(&key(1), &key(2)).await;
        assert_eq!(
            open_all(&mut sb4.opener, &[0, 16, 1, 2]),
            Err(NoiseError::TooShort(16))
        );
    }

    #[tokio::test]
    async fn a_plain_peer_or_an_oversized_handshake_is_refused_without_waiting() {
        // A plain-TCP node starts with a u32 length (here of a 300-byte envelope): the
        // first two bytes read as a length of 0.
        let (mut x, mut y) = tokio::io::duplex(4096);
        y.write_all(&[0, 0, 1, 44, 1, 2, 3]).await.unwrap();
        let r = handshake(&mut x, &key(1), false).await;
        assert!(matches!(r, Err(NoiseError::BadHandshakeLen(0))));
        let (mut x, mut y) = tokio::io::duplex(4096);
        y.write_all(&[0xff, 0xff]).await.unwrap();
        let r = handshake(&mut x, &key(1), false).await;
        assert!(matches!(r, Err(NoiseError::BadHandshakeLen(65535))));
        // Garbage of a plausible length fails to verify.
        let (mut x, mut y) = tokio::io::duplex(4096);
        let k = key(1);
        let (_, r) = tokio::join!(
            async {
                y.write_all(&[0, 32]).await.unwrap();
                y.write_all(&[9; 32]).await.unwrap();
                let mut m = [0u8; 98];
                let _ = y.read_exact(&mut m).await;
                y.write_all(&[0, 64]).await.unwrap();
                y.write_all(&[9; 64]).await.unwrap();
            },
            handshake(&mut x, &k, false)
        );
        assert!(matches!(r, Err(NoiseError::Handshake(_))), "{:?}", r.err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        /// Random bytes after a real handshake: never a panic, never more than one
        /// message and one push buffered, and nothing opens.
        #[test]
        fn random_bytes_never_open_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096), 0..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (_, mut sb) = rt.block_on(pair(&key(1), &key(2)));
            for c in &chunks {
                sb.opener.push(c);
                proptest::prop_assert!(sb.opener.buffered() <= 2 + MAX_NOISE_MSG + c.len());
                if let Some(r) = sb.opener.next_piece() {
                    proptest::prop_assert!(r.is_err());
                }
            }
        }
    }
}
