//! skywave: a store-and-forward proof-of-work blockchain node for slow, lossy,
//! half-duplex radio links.
//!
//! Layer map (top to bottom):
//! - `cli`, `api`: the command line and the HTTP API.
//! - `driver`: the tokio event loop, the only place with time and I/O. It owns the
//!   [`node::Node`], the links and the store.
//! - `sim`: the deterministic simulator, many nodes on a virtual clock over simulated
//!   links and radio channels; it drives the core as the driver does.
//! - `link`: the transports at the edge (TCP, KISS, VARA, JS8Call), one tokio task each.
//! - `node`: the sans-IO core. It never reads a clock, a socket or an RNG; the driver
//!   feeds it events with the current time and drains what it wants sent. Its files:
//!   `session` (handshake, limits), `sync` (headers, block download), `relay`
//!   (inventory, transactions, announcements), `io` (input dispatch, radio turns,
//!   encode and route), `packet` (the radio packet layer), `outbox`, `peers`, `pex`.
//! - `outbox`: the durable outbox, what each peer is owed until it acknowledges it.
//! - `chain`: blocks, transactions, validation, state, mempool, fork choice; `Chain` in
//!   `ledger` (`index`, `reorg`, `submit`).
//! - `wire`: messages, envelope, CRC, framing.
//! - `store`: SQLite persistence (WAL), called synchronously by the chain so nothing is
//!   reported accepted before it is durable.
//! - `net`: the vocabulary shared by the core and the transports (`LinkId`, `PeerId`,
//!   `LinkCaps`). `node`, `outbox` and `chain` import it, never `link`.

pub mod api;
pub mod callsign;
pub mod chain;
pub mod cli;
pub mod config;
pub mod dns;
pub mod driver;
pub mod keys;
pub mod lab;
pub mod link;
pub mod net;
pub mod node;
pub mod outbox;
pub mod rng;
pub mod sim;
pub mod store;
pub mod wire;
