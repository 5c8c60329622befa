//! The chain: blocks, transactions, validation, state, mempool and fork choice.

pub mod merkle;
pub mod params;
pub mod types;

pub use params::NetworkParams;
pub use types::{Address, Block, Coinbase, Hash, Header, Sig, Transaction};
