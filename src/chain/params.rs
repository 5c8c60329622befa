//! Network definitions: a genesis block and the consensus parameters that go with it.
//!
//! The network id on the wire is the first four bytes of the genesis hash, so two networks
//! with different genesis blocks can never be confused, whatever their names.

use super::types::{Address, Block, Coinbase, Hash, Header};

/// Consensus and relay parameters of one network.
#[derive(Clone, Debug)]
pub struct NetworkParams {
    /// Short name used in config files and on the command line.
    pub name: &'static str,
    /// The genesis block (trusted by definition: not checked for proof of work).
    pub genesis: Block,
    /// Target seconds between blocks.
    pub block_interval_secs: u64,
    /// Retarget every this many blocks; 0 disables retargeting (regtest).
    pub retarget_interval: u64,
    /// Easiest allowed target, compact form.
    pub pow_limit_bits: u32,
    /// Maximum block size in bytes (postcard encoding). Small: blocks cross radio links.
    pub max_block_bytes: usize,
    /// Maximum number of transactions in one block.
    pub max_block_txs: usize,
    /// How far a block's timestamp may be ahead of the receiver's clock.
    pub max_future_secs: u64,
    /// Number of previous blocks whose median time a new block must exceed.
    pub median_time_span: usize,
    /// Subsidy of the first blocks, in base units.
    pub initial_subsidy: u64,
    /// Subsidy halves every this many blocks (0 = never).
    pub halving_interval: u64,
    /// Minimum fee for mempool acceptance and relay.
    pub min_relay_fee: u64,
    /// On networks without real difficulty, the shortest time between blocks that
    /// `run --mine` produces, in milliseconds (0 = no pacing).
    pub mine_pacing_ms: u64,
    /// Default TCP port.
    pub default_port: u16,
    /// Blocks a coinbase must wait before it can be spent: funds credited by the coinbase
    /// of block `h` are spendable by transactions in blocks at heights `h + maturity` and
    /// later (see [`NetworkParams::maturity_active`]). A reorg can make a coinbase
    /// vanish; the wait keeps payments from it out of blocks until that is unlikely.
    pub coinbase_maturity: u64,
    /// First height whose blocks obey the coinbase maturity rule (consensus version 2,
    /// docs/adr/0008-coinbase-maturity.md). Blocks below it keep the version 1 rules.
    pub maturity_height: u64,
    /// Cumulative work a header chain must show before its headers are stored (like
    /// Bitcoin's minimum chain work): below it, headers are checked and held in a
    /// bounded in-memory presync area, never persisted.
    pub min_chain_work: u128,
}

impl NetworkParams {
    /// The 4-byte network id carried in every message envelope.
    pub fn network_id(&self) -> [u8; 4] {
        let h = self.genesis.hash();
        [h.0[0], h.0[1], h.0[2], h.0[3]]
    }

    /// Hash of the genesis block.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis.hash()
    }

    /// Block subsidy at `height`.
    pub fn subsidy(&self, height: u64) -> u64 {
        if self.halving_interval == 0 {
            return self.initial_subsidy;
        }
        let halvings = height / self.halving_interval;
        if halvings >= 64 {
            0
        } else {
            self.initial_subsidy >> halvings
        }
    }

    /// True if the block at `height` obeys the coinbase maturity rule.
    pub fn maturity_active(&self, height: u64) -> bool {
        height >= self.maturity_height
    }

    /// Look a network up by name.
    pub fn by_name(name: &str) -> Option<NetworkParams> {
        match name {
            "main" => Some(main()),
            "regtest" => Some(regtest()),
            _ => None,
        }
    }

    /// Names of all built-in networks.
    pub fn names() -> &'static [&'static str] {
        &["main", "regtest"]
    }
}

fn genesis(time: u64, bits: u32, tag: u8) -> Block {
    let coinbase = Coinbase {
        height: 0,
        // Unspendable: no one holds the key of an all-`tag` address.
        to: Address([tag; 32]),
        amount: 0,
    };
    let merkle_root = super::merkle::root(&[coinbase.id()]);
    Block {
        header: Header {
            version: 1,
            prev: Hash::ZERO,
            merkle_root,
            time,
            bits,
            nonce: 0,
            height: 0,
        },
        coinbase,
        txs: Vec::new(),
    }
}

/// The default network: ten-minute blocks, 16 KB blocks, real proof of work.
pub fn main() -> NetworkParams {
    NetworkParams {
        name: "main",
        // 2026-11-01T00:00:00Z
        genesis: genesis(1_793_491_200, 0x1f00_ffff, 0x4d),
        block_interval_secs: 600,
        retarget_interval: 36,
        // About 2^16 hashes per block at the limit: a CPU mines the first blocks quickly,
        // retargeting then raises the difficulty to the network's hash rate.
        pow_limit_bits: 0x1f00_ffff,
        max_block_bytes: 16 * 1024,
        max_block_txs: 100,
        max_future_secs: 2 * 60 * 60,
        median_time_span: 11,
        initial_subsidy: 50 * 100_000_000,
        halving_interval: 210_000,
        min_relay_fee: 1000,
        mine_pacing_ms: 0,
        default_port: 7300,
        coinbase_maturity: 100,
        // Consensus version 2 from sixty days of blocks after genesis, so blocks mined
        // under version 1 before this release stay valid (docs/adr/0008).
        maturity_height: 8_640,
        // A day of blocks at the easiest difficulty (144 * 65 537 hashes): a header chain
        // cheaper than that is not worth a row in the store; the chain passed it in its
        // first day. The presync area holds far more than 144 headers
        // (`ledger::MAX_PRESYNC_HEADERS`), so a node syncing from genesis gets there.
        min_chain_work: 144 * 65_537,
    }
}

/// Regression-test network: trivial difficulty, no retargeting, blocks paced by the miner.
pub fn regtest() -> NetworkParams {
    NetworkParams {
        name: "regtest",
        genesis: genesis(1_793_491_200, 0x207f_ffff, 0x52),
        block_interval_secs: 1,
        retarget_interval: 0,
        pow_limit_bits: 0x207f_ffff,
        max_block_bytes: 16 * 1024,
        max_block_txs: 100,
        max_future_secs: 2 * 60 * 60,
        median_time_span: 11,
        initial_subsidy: 50 * 100_000_000,
        halving_interval: 150,
        min_relay_fee: 1000,
        mine_pacing_ms: 1000,
        default_port: 17300,
        // 1: a coinbase is spendable from the next block, as before version 2, so the
        // node and simulator tests that mine a block and pay from it at once still hold.
        // The rule itself is tested with larger values (`chain::ledger::tests`).
        coinbase_maturity: 1,
        maturity_height: 0,
        // Regtest headers cost nothing; a work floor would only hold tests up.
        min_chain_work: 0,
    }
}
