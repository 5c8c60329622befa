//! [`Chain`]: the block index, fork choice, the active chain's account state, the orphan
//! pool and the mempool, persisted through [`Store`].
//!
//! Headers of every block we know stay in memory with their cumulative work and status.
//! Bodies and undo data live in the store. The active chain is the valid chain with the
//! most cumulative work whose bodies we all have; on equal work the first seen stays.
//!
//! What a peer can make us hold is bounded: a block is checked against its parent's
//! context (height, difficulty, time) before its merkle root or signatures; orphans get
//! only cheap checks and wait in a bounded, expiring pool; headers that failed are
//! remembered by hash only, in a bounded, expiring set ([`InvalidSet`]); and a header
//! chain is stored only once its cumulative work reaches [`Chain::store_threshold`]:
//! until then its headers wait in a bounded, expiring presync area in memory.
//!
//! `Chain`'s methods are split by concern into child modules, each an `impl Chain`
//! block: `index` (the block index, presync area, best header chain and download
//! cursor), `reorg` (connecting, disconnecting and switching branches) and `submit`
//! (accepting blocks and transactions).

use super::invalid::InvalidSet;
use super::mempool::{Mempool, MempoolLimits, MempoolReject};
use super::orphans::OrphanPool;
use super::params::NetworkParams;
use super::pow;
use super::types::{Address, Block, Hash, Transaction};
use super::validate::ValidationError;
use crate::store::{BlockStatus, Store, StoreError};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;

pub use super::state::Account;
use super::state::Accounts;

mod index;

use index::{BlockIndex, Node};
mod reorg;
mod submit;

/// Most headers held in the presync area (below the storing threshold). Well above the
/// 144 blocks of `main`'s minimum chain work at the easiest difficulty.
pub const MAX_PRESYNC_HEADERS: usize = 4096;
/// How long a presync header waits for the rest of its chain, in seconds.
pub const PRESYNC_TTL_SECS: u64 = 60 * 60;
/// A header chain this many blocks (of the tip's difficulty) short of the tip's work is
/// still stored: a fork near the tip is worth keeping, a cheap one from far back is not.
pub const PRESYNC_MARGIN_BLOCKS: u128 = 144;
/// Rows the index is sized for up front when it loads (a damaged count cannot make it
/// reserve without bound; past this it grows as it must).
const MAX_INDEX_RESERVE: usize = 10_000_000;

/// Where a chain ends: hash, height, cumulative work and block time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TipInfo {
    /// Block hash.
    pub hash: Hash,
    /// Height.
    pub height: u64,
    /// Cumulative work up to and including this block.
    pub work: u128,
    /// Block time.
    pub time: u64,
}

/// What happened to a submitted block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// The best chain changed (possibly by a reorg). `connected` is in height order and
    /// includes orphans that got connected; `disconnected` is tip first.
    Connected {
        /// The new tip.
        tip: TipInfo,
        /// Blocks that joined the main chain.
        connected: Vec<Hash>,
        /// Blocks that left the main chain.
        disconnected: Vec<Hash>,
    },
    /// Stored and valid as far as checked, but not on the best chain; or, on a chain
    /// with less work than [`Chain::store_threshold`], its header checked and held in
    /// the presync area and its body not stored.
    SideChain,
    /// Parent unknown: held in the orphan pool.
    Orphan,
    /// Already known.
    Duplicate,
}

/// What happened to a submitted transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// Added to the mempool.
    Accepted,
    /// Already in the mempool or confirmed.
    Duplicate,
}

/// Errors of [`Chain`] operations.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A block breaks a consensus rule.
    #[error("block {hash}: {reason}")]
    InvalidBlock {
        /// The offending block.
        hash: Hash,
        /// The rule broken.
        reason: ValidationError,
    },
    /// A header breaks a consensus rule.
    #[error("header {hash}: {reason}")]
    InvalidHeader {
        /// The offending header.
        hash: Hash,
        /// The rule broken.
        reason: ValidationError,
    },
    /// The block is known invalid or descends from an invalid block.
    #[error("block {0}: known invalid or descends from an invalid block")]
    KnownInvalid(Hash),
    /// A header whose parent we do not know (headers must arrive in chain order).
    #[error("header {hash}: parent {prev} unknown")]
    UnknownParent {
        /// The header.
        hash: Hash,
        /// Its missing parent.
        prev: Hash,
    },
    /// A transaction breaks a consensus rule (bad signature, overflow).
    #[error("transaction {id}: {reason}")]
    InvalidTx {
        /// Transaction id.
        id: Hash,
        /// The rule broken.
        reason: ValidationError,
    },
    /// The mempool's policy refused a (possibly valid) transaction.
    #[error("transaction {id} refused: {reason}")]
    TxRefused {
        /// Transaction id.
        id: Hash,
        /// Why.
        reason: MempoolReject,
    },
    /// The store belongs to another network.
    #[error("store belongs to network {found:?} (genesis {genesis}), not {expected:?}")]
    WrongNetwork {
        /// Network we were asked to run.
        expected: String,
        /// Network recorded in the store.
        found: String,
        /// Genesis hash recorded in the store.
        genesis: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Our own state is inconsistent (a bug or a damaged store).
    #[error("internal chain error: {0}")]
    Internal(String),
}

impl ChainError {
    /// True if the error is caused by data a peer sent us (penalise the peer), false if
    /// it is our own failure or a policy refusal of data that may be valid.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            ChainError::InvalidBlock { reason, .. } | ChainError::InvalidHeader { reason, .. } => {
                // A block from the near future may become valid: clock skew, not malice.
                !matches!(reason, ValidationError::TimeTooNew { .. })
            }
            ChainError::KnownInvalid(_) | ChainError::InvalidTx { .. } => true,
            ChainError::UnknownParent { .. }
            | ChainError::TxRefused { .. }
            | ChainError::WrongNetwork { .. }
            | ChainError::Store(_)
            | ChainError::Internal(_) => false,
        }
    }
}

/// The chain state machine. See the module docs.
pub struct Chain {
    params: NetworkParams,
    network_id: [u8; 4],
    store: Store,
    index: BlockIndex,
    // The active chain by height, as positions in `index`.
    main: Vec<u32>,
    accounts: Accounts,
    mempool: Mempool,
    orphans: OrphanPool,
    // Connectable blocks that may beat the tip, ordered by (work, first seen).
    candidates: BTreeSet<(u128, Reverse<u64>, Hash)>,
    best_header: Hash,
    // The best header chain by height (`best_chain[h]` is the position of
    // `best_header`'s ancestor at height `h`); `NONE` below an ancestor missing from
    // the index.
    best_chain: Vec<u32>,
    // Download cursor: every block of `best_chain` below this height is connectable.
    // A lower bound, advanced lazily by `missing_blocks` (hence atomic: `&self`) and
    // lowered when the header chain reorganises or a block on it turns invalid.
    dl_cursor: AtomicU64,
    next_seq: u64,
    invalid: InvalidSet,
    // Presync headers in arrival order, with the time they came (seconds).
    presync: VecDeque<(Hash, u64)>,
    presync_count: usize,
    // Coinbases (height, to, amount) of the main chain's last `coinbase_maturity` blocks.
    recent_coinbases: VecDeque<(u64, Address, u64)>,
}

fn internal(msg: impl Into<String>) -> ChainError {
    ChainError::Internal(msg.into())
}

/// Sum of the coinbases in `window` paid to `a` that a block at `height` may not spend:
/// those of heights above `height - coinbase_maturity`, where the rule is active.
fn immature_in(
    params: &NetworkParams,
    window: &VecDeque<(u64, Address, u64)>,
    a: &Address,
    height: u64,
) -> u64 {
    if !params.maturity_active(height) {
        return 0;
    }
    let floor = height.saturating_sub(params.coinbase_maturity);
    window
        .iter()
        .filter(|(h, to, _)| *h > floor && to == a)
        .fold(0u64, |s, (_, _, v)| s.saturating_add(*v))
}

impl Chain {
    /// Open a chain on `store`: a new store gets the genesis block; an existing one is
    /// loaded (index, active chain, accounts, mempool). A store of another network is
    /// refused.
    pub fn open(params: NetworkParams, store: Store) -> Result<Chain, ChainError> {
        Self::open_with_limits(params, store, MempoolLimits::default())
    }

    /// [`Chain::open`] with explicit mempool limits.
    pub fn open_with_limits(
        params: NetworkParams,
        mut store: Store,
        limits: MempoolLimits,
    ) -> Result<Chain, ChainError> {
        let genesis = params.genesis.clone();
        let ghash = genesis.hash();
        match store.get_meta("genesis")? {
            None => {
                let mut accounts = HashMap::new();
                let cb = Account {
                    balance: genesis.coinbase.amount,
                    nonce: 0,
                };
                if !cb.is_empty() {
                    accounts.insert(genesis.coinbase.to, cb);
                }
                let list: Vec<_> = accounts.into_iter().collect();
                store.init_genesis(params.name, &genesis, pow::work(genesis.header.bits), &list)?;
            }
            Some(g) if g[..] == ghash.0[..] => {}
            Some(g) => {
                let found = store
                    .get_meta("network")?
                    .map(|n| String::from_utf8_lossy(&n).into_owned())
                    .unwrap_or_default();
                return Err(ChainError::WrongNetwork {
                    expected: params.name.to_string(),
                    found,
                    genesis: hex::encode(g),
                });
            }
        }
        let network_id = params.network_id();
        let mut chain = Chain {
            params,
            network_id,
            store,
            index: BlockIndex::default(),
            main: Vec::new(),
            accounts: Accounts::new(),
            mempool: Mempool::new(limits),
            orphans: OrphanPool::default(),
            candidates: BTreeSet::new(),
            best_header: ghash,
            best_chain: Vec::new(),
            dl_cursor: AtomicU64::new(0),
            next_seq: 0,
            invalid: InvalidSet::default(),
            presync: VecDeque::new(),
            presync_count: 0,
            recent_coinbases: VecDeque::new(),
        };
        chain.load()?;
        // A crash between the disconnects and connects of a reorg leaves a better chain
        // unconnected: finish the job.
        let old = chain.tip().hash;
        chain.activate()?;
        if chain.tip().hash != old {
            tracing::info!(tip = %chain.tip().hash, "resumed an interrupted chain switch");
        }
        Ok(chain)
    }

    fn load(&mut self) -> Result<(), ChainError> {
        let ghash = self.params.genesis_hash();
        // Sized once: growing by doubling would hold the old and the new copy at once.
        let rows = usize::try_from(self.store.index_len()?).unwrap_or(usize::MAX);
        self.index.reserve(rows.min(MAX_INDEX_RESERVE));
        let store = &self.store;
        let (index, next_seq) = (&mut self.index, &mut self.next_seq);
        store.for_each_index_row(|r| -> Result<(), ChainError> {
            let connectable = r.status == BlockStatus::HaveBody
                && (r.hash == ghash || index.get(&r.header.prev).is_some_and(|p| p.connectable));
            if r.hash != ghash && !index.contains_key(&r.header.prev) {
                return Err(internal(format!("block {} has no parent in store", r.hash)));
            }
            *next_seq = (*next_seq).max(r.seq.saturating_add(1));
            let mut node = Node::new(r.hash, r.header, r.work, r.seq, r.status);
            node.has_body = r.has_body;
            node.connectable = connectable;
            index
                .insert(node)
                .ok_or_else(|| internal("block index full"))?;
            Ok(())
        })?;
        let main = self.store.load_main_chain()?;
        if main.first() != Some(&ghash) {
            return Err(internal("main chain does not start at genesis"));
        }
        self.main = Vec::with_capacity(main.len());
        for (h, hash) in main.iter().enumerate() {
            match self.index.pos(hash) {
                Some(p)
                    if self
                        .index
                        .at(p)
                        .is_some_and(|n| n.header.height == h as u64) =>
                {
                    self.main.push(p)
                }
                _ => return Err(internal(format!("main chain block {hash} not in index"))),
            }
        }
        self.accounts = self.store.load_accounts()?.into_iter().collect();
        self.load_recent_coinbases()?;
        self.rescan_candidates();
        self.rescan_best_header();
        let txs = self.store.load_mempool()?;
        let before: HashSet<Hash> = txs.iter().map(Transaction::id).collect();
        self.rebuild_mempool(txs);
        let after = self.mempool.ids();
        let gone: Vec<Hash> = before.difference(&after).copied().collect();
        self.store.update_mempool(&[], &gone)?;
        Ok(())
    }

    /// The network's parameters.
    pub fn params(&self) -> &NetworkParams {
        &self.params
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, mutably (for metadata and peers; chain tables belong to `Chain`).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Give back the store, dropping the in-memory state (a restart reopens it).
    pub fn into_store(self) -> Store {
        self.store
    }

    /// The active chain's tip.
    pub fn tip(&self) -> TipInfo {
        self.info(&self.tip_hash())
    }

    /// Coinbase funds of `a` that blocks at `height` may not spend yet: the coinbases
    /// paid to `a` by main-chain blocks above `height - coinbase_maturity`. Valid for
    /// `height` = tip height + 1 (the window follows the tip).
    fn immature(&self, a: &Address, height: u64) -> u64 {
        immature_in(&self.params, &self.recent_coinbases, a, height)
    }

    /// What `a` can spend in the next block: its confirmed balance less the coinbase
    /// funds that have not matured by then.
    pub fn spendable_balance(&self, a: &Address) -> u64 {
        let next = self.tip().height.saturating_add(1);
        self.account(a)
            .balance
            .saturating_sub(self.immature(a, next))
    }

    /// A stored block (main or side chain), or an orphan.
    pub fn block(&self, h: &Hash) -> Result<Option<Block>, ChainError> {
        if let Some(b) = self.orphans.get(h) {
            return Ok(Some(b.clone()));
        }
        Ok(self.store.get_block(h)?)
    }

    /// Mempool transactions, highest fee first.
    pub fn mempool_txs(&self) -> Vec<Transaction> {
        self.mempool.by_fee_desc().into_iter().cloned().collect()
    }

    /// A mempool transaction.
    pub fn mempool_get(&self, id: &Hash) -> Option<Transaction> {
        self.mempool.get(id).cloned()
    }

    /// The mempool transaction that comes before `id` in its sender's chain (the same
    /// sender, the nonce before), if it is pending too.
    pub fn mempool_before(&self, id: &Hash) -> Option<Hash> {
        let tx = self.mempool.get(id)?;
        let prev = tx.nonce.checked_sub(1)?;
        self.mempool.id_at(&tx.from, prev).copied()
    }

    /// The mempool's bounds.
    pub fn mempool_limits(&self) -> crate::chain::MempoolLimits {
        self.mempool.limits()
    }

    /// Number of mempool transactions.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// A transaction with, if confirmed on the main chain, its block and height
    /// (`None` for a mempool transaction).
    #[allow(clippy::type_complexity)]
    pub fn find_tx(
        &self,
        id: &Hash,
    ) -> Result<Option<(Transaction, Option<(Hash, u64)>)>, ChainError> {
        if let Some(tx) = self.mempool.get(id) {
            return Ok(Some((tx.clone(), None)));
        }
        let Some(bh) = self.store.tx_block(id)? else {
            return Ok(None);
        };
        let block = self
            .store
            .get_block(&bh)?
            .ok_or_else(|| internal(format!("indexed block {bh} has no body")))?;
        let tx = block
            .txs
            .into_iter()
            .find(|t| t.id() == *id)
            .ok_or_else(|| internal(format!("tx {id} not in its indexed block {bh}")))?;
        Ok(Some((tx, Some((bh, block.header.height)))))
    }

    /// Confirmed account state at the tip.
    pub fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).copied().unwrap_or_default()
    }

    /// All confirmed accounts at the tip.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Nonce for the sender's next transaction: confirmed nonce plus pending ones.
    pub fn next_nonce(&self, a: &Address) -> u64 {
        self.account(a)
            .nonce
            .saturating_add(self.mempool.pending_count(a) as u64)
    }

    /// Number of orphan blocks held.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }
}

#[cfg(test)]
mod tests;
