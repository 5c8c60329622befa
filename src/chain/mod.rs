//! The chain: blocks, transactions, validation, state, mempool and fork choice.

pub mod invalid;
pub mod ledger;
pub mod mempool;
pub mod merkle;
pub mod orphans;
pub mod params;
pub mod pow;
pub mod sigcache;
pub mod state;
pub mod types;
pub mod validate;

pub use ledger::{Account, BlockOutcome, Chain, ChainError, TipInfo, TxOutcome};
pub use mempool::{MempoolLimits, MempoolReject};
pub use params::NetworkParams;
pub use types::{Address, Block, Coinbase, Hash, Header, Sig, Transaction, VerifiedTx};
pub use validate::ValidationError;
