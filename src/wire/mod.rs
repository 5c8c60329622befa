//! The wire protocol: messages, the envelope around them, and stream framing.
//! docs/PROTOCOL.md describes the bytes; the tests in `examples` keep it honest.

pub mod ax25;
pub mod envelope;
pub mod fountain;
pub mod frag;
pub mod js8text;
pub mod kiss;
pub mod message;
pub mod stream;

#[cfg(test)]
mod examples;
#[cfg(test)]
pub(crate) mod strategies;

pub use envelope::{
    decode, encode, peek_network, Envelope, WireError, ENVELOPE_VERSION, MAX_MESSAGE_LEN,
};
pub use message::Message;
pub use stream::{frame, StreamDecoder};
