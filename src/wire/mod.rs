//! The wire protocol: messages, the envelope around them, and stream framing.

pub mod message;

pub use message::Message;
