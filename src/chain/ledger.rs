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

use super::invalid::InvalidSet;
use super::mempool::{Mempool, MempoolLimits, MempoolReject};
use super::orphans::OrphanPool;
use super::params::NetworkParams;
use super::pow;
use super::state::{apply_changes, Overlay};
use super::types::{Address, Block, Coinbase, Hash, Header, Transaction};
use super::validate::{self, HeaderContext, ValidationError};
use crate::store::{BlockStatus, ConnectWrite, DisconnectWrite, Store, StoreError};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

pub use super::state::Account;

/// Most headers held in the presync area (below the storing threshold). Well above the
/// 144 blocks of `main`'s minimum chain work at the easiest difficulty.
pub const MAX_PRESYNC_HEADERS: usize = 4096;
/// How long a presync header waits for the rest of its chain, in seconds.
pub const PRESYNC_TTL_SECS: u64 = 60 * 60;
/// A header chain this many blocks (of the tip's difficulty) short of the tip's work is
/// still stored: a fork near the tip is worth keeping, a cheap one from far back is not.
pub const PRESYNC_MARGIN_BLOCKS: u128 = 144;

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

#[derive(Clone, Debug)]
struct Node {
    header: Header,
    work: u128,
    status: BlockStatus,
    has_body: bool,
    seq: u64,
    // This block and all its ancestors have bodies and none is known invalid.
    connectable: bool,
    // In the presync area: checked, in memory only, on a chain below the threshold.
    presync: bool,
}

/// The chain state machine. See the module docs.
pub struct Chain {
    params: NetworkParams,
    network_id: [u8; 4],
    store: Store,
    index: HashMap<Hash, Node>,
    children: HashMap<Hash, Vec<Hash>>,
    main: Vec<Hash>,
    accounts: HashMap<Address, Account>,
    mempool: Mempool,
    orphans: OrphanPool,
    // Connectable blocks that may beat the tip, ordered by (work, first seen).
    candidates: BTreeSet<(u128, Reverse<u64>, Hash)>,
    best_header: Hash,
    // The best header chain by height (`best_chain[h]` is `best_header`'s ancestor at
    // height `h`); `Hash::ZERO` below an ancestor missing from the index.
    best_chain: Vec<Hash>,
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
            index: HashMap::new(),
            children: HashMap::new(),
            main: Vec::new(),
            accounts: HashMap::new(),
            mempool: Mempool::new(limits),
            orphans: OrphanPool::default(),
            candidates: BTreeSet::new(),
            best_header: ghash,
            best_chain: vec![ghash],
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
        let rows = self.store.load_index()?;
        let ghash = self.params.genesis_hash();
        for r in rows {
            let connectable = r.status == BlockStatus::HaveBody
                && (r.hash == ghash
                    || self
                        .index
                        .get(&r.header.prev)
                        .is_some_and(|p| p.connectable));
            if r.hash != ghash {
                if !self.index.contains_key(&r.header.prev) {
                    return Err(internal(format!("block {} has no parent in store", r.hash)));
                }
                self.children.entry(r.header.prev).or_default().push(r.hash);
            }
            self.next_seq = self.next_seq.max(r.seq.saturating_add(1));
            self.index.insert(
                r.hash,
                Node {
                    header: r.header,
                    work: r.work,
                    status: r.status,
                    has_body: r.has_body,
                    seq: r.seq,
                    connectable,
                    presync: false,
                },
            );
        }
        self.main = self.store.load_main_chain()?;
        if self.main.first() != Some(&ghash) {
            return Err(internal("main chain does not start at genesis"));
        }
        for (h, hash) in self.main.iter().enumerate() {
            match self.index.get(hash) {
                Some(n) if n.header.height == h as u64 => {}
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

    fn rescan_candidates(&mut self) {
        let tip_work = self.tip().work;
        self.candidates = self
            .index
            .iter()
            .filter(|(_, n)| n.connectable && n.work >= tip_work)
            .map(|(h, n)| (n.work, Reverse(n.seq), *h))
            .collect();
    }

    fn load_recent_coinbases(&mut self) -> Result<(), ChainError> {
        self.recent_coinbases.clear();
        let tip = self.main.len().saturating_sub(1) as u64;
        let first = tip
            .saturating_add(1)
            .saturating_sub(self.params.coinbase_maturity)
            .max(1);
        for h in first..=tip {
            self.push_recent_coinbase_front_or_back(h, false)?;
        }
        Ok(())
    }

    // Read the coinbase of the main block at `height` into the maturity window.
    fn push_recent_coinbase_front_or_back(
        &mut self,
        height: u64,
        front: bool,
    ) -> Result<(), ChainError> {
        let hash = self
            .main_hash_at(height)
            .ok_or_else(|| internal(format!("no main block at height {height}")))?;
        let b = self
            .store
            .get_block(&hash)?
            .ok_or_else(|| internal(format!("body of block {hash} missing from store")))?;
        let e = (height, b.coinbase.to, b.coinbase.amount);
        if front {
            self.recent_coinbases.push_front(e);
        } else {
            self.recent_coinbases.push_back(e);
        }
        Ok(())
    }

    fn rescan_best_header(&mut self) {
        let best = self
            .index
            .iter()
            .filter(|(_, n)| n.status != BlockStatus::Invalid && !n.presync)
            .max_by(|a, b| a.1.work.cmp(&b.1.work).then(b.1.seq.cmp(&a.1.seq)))
            .map(|(h, _)| *h);
        self.set_best_header(best.unwrap_or_else(|| self.params.genesis_hash()));
    }

    /// Move the best header to `best`, updating `best_chain` from the fork point up
    /// (O(reorg depth)) and bringing the download cursor down to the fork point.
    fn set_best_header(&mut self, best: Hash) {
        self.best_header = best;
        let mut path = Vec::new();
        let mut cur = best;
        // `Some(f)`: `best_chain[..f]` is still right.
        let mut keep = None;
        while let Some(n) = self.index.get(&cur) {
            let h = n.header.height;
            if self.best_chain.get(h as usize) == Some(&cur) {
                keep = Some(h + 1);
                break;
            }
            path.push(cur);
            if h == 0 {
                keep = Some(0);
                break;
            }
            cur = n.header.prev;
        }
        let base = match keep {
            Some(f) => f,
            None => {
                // An ancestor missing from the index: nothing below it is known.
                let low = path
                    .last()
                    .and_then(|h| self.index.get(h))
                    .map_or(0, |n| n.header.height);
                self.best_chain.clear();
                self.dl_cursor.store(0, Ordering::Relaxed);
                low
            }
        };
        let base_len = usize::try_from(base).unwrap_or(usize::MAX);
        self.best_chain.truncate(base_len);
        self.best_chain.resize(base_len, Hash::ZERO);
        self.best_chain.extend(path.into_iter().rev());
        self.dl_cursor.fetch_min(base, Ordering::Relaxed);
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

    fn info(&self, h: &Hash) -> TipInfo {
        match self.index.get(h) {
            Some(n) => TipInfo {
                hash: *h,
                height: n.header.height,
                work: n.work,
                time: n.header.time,
            },
            None => TipInfo {
                hash: *h,
                height: 0,
                work: 0,
                time: 0,
            },
        }
    }

    fn tip_hash(&self) -> Hash {
        self.main
            .last()
            .copied()
            .unwrap_or_else(|| self.params.genesis_hash())
    }

    /// The active chain's tip.
    pub fn tip(&self) -> TipInfo {
        self.info(&self.tip_hash())
    }

    /// Tip of the most-work header chain not known invalid (may be ahead of the tip).
    pub fn best_header(&self) -> TipInfo {
        self.info(&self.best_header)
    }

    /// Cumulative work a header chain needs before its headers are stored: the
    /// network's `min_chain_work`, or the tip's work less [`PRESYNC_MARGIN_BLOCKS`]
    /// blocks at the tip's difficulty if that is more. Below it a peer's headers cost
    /// us only a bounded, expiring slot in the presync area.
    pub fn store_threshold(&self) -> u128 {
        let tip = self.tip();
        let bits = self
            .index
            .get(&tip.hash)
            .map_or(self.params.pow_limit_bits, |n| n.header.bits);
        let margin = pow::work(bits).saturating_mul(PRESYNC_MARGIN_BLOCKS);
        self.params
            .min_chain_work
            .max(tip.work.saturating_sub(margin))
    }

    /// Number of headers held in the presync area.
    pub fn presync_len(&self) -> usize {
        self.presync_count
    }

    /// Number of block hashes remembered as invalid without being indexed.
    pub fn invalid_len(&self) -> usize {
        self.invalid.len()
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

    /// True if the block's body is stored or held as an orphan.
    pub fn has_block(&self, h: &Hash) -> bool {
        self.index.get(h).is_some_and(|n| n.has_body) || self.orphans.contains(h)
    }

    /// True if the header is in the index (valid or not), stored or in presync.
    pub fn has_header(&self, h: &Hash) -> bool {
        self.index.contains_key(h)
    }

    /// A known header.
    pub fn header(&self, h: &Hash) -> Option<Header> {
        self.index.get(h).map(|n| n.header.clone())
    }

    /// True if the block is known invalid.
    pub fn is_invalid(&self, h: &Hash) -> bool {
        self.invalid.contains(h)
            || self
                .index
                .get(h)
                .is_some_and(|n| n.status == BlockStatus::Invalid)
    }

    /// Hash of the main-chain block at `height`.
    pub fn main_hash_at(&self, height: u64) -> Option<Hash> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.main.get(h))
            .copied()
    }

    /// True if the block is on the active chain.
    pub fn is_on_main_chain(&self, h: &Hash) -> bool {
        self.index
            .get(h)
            .is_some_and(|n| self.main_hash_at(n.header.height) == Some(*h))
    }

    /// A stored block (main or side chain), or an orphan.
    pub fn block(&self, h: &Hash) -> Result<Option<Block>, ChainError> {
        if let Some(b) = self.orphans.get(h) {
            return Ok(Some(b.clone()));
        }
        Ok(self.store.get_block(h)?)
    }

    /// Block locator: hashes from the tip back to genesis, one by one for the first ten,
    /// then doubling the step; at most 64 entries, always ending with genesis.
    pub fn locator(&self) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut h = self.main.len().saturating_sub(1);
        let mut step = 1usize;
        loop {
            if h == 0 || out.len() == 63 {
                break;
            }
            out.push(self.main[h]);
            if out.len() >= 10 {
                step = step.saturating_mul(2);
            }
            h = h.saturating_sub(step);
        }
        out.push(self.params.genesis_hash());
        out
    }

    /// Main-chain headers after the first locator hash found on our main chain (after
    /// genesis if none is), at most `max`, ending early after `stop`.
    pub fn headers_after(&self, locator: &[Hash], stop: Option<Hash>, max: usize) -> Vec<Header> {
        let start = locator
            .iter()
            .find_map(|h| {
                self.is_on_main_chain(h)
                    .then(|| self.index.get(h).map(|n| n.header.height))
                    .flatten()
            })
            .unwrap_or(0)
            .saturating_add(1);
        let mut out = Vec::new();
        let mut height = start;
        while out.len() < max {
            let Some(h) = self.main_hash_at(height) else {
                break;
            };
            let Some(n) = self.index.get(&h) else { break };
            out.push(n.header.clone());
            if Some(h) == stop {
                break;
            }
            height += 1;
        }
        out
    }

    /// The ancestor of `h` at `height` (or `h` itself).
    fn ancestor(&self, h: &Hash, height: u64) -> Option<Hash> {
        let mut cur = *h;
        loop {
            let n = self.index.get(&cur)?;
            if n.header.height == height {
                return Some(cur);
            }
            if n.header.height < height {
                return None;
            }
            if self.main_hash_at(n.header.height) == Some(cur) {
                return self.main_hash_at(height);
            }
            cur = n.header.prev;
        }
    }

    fn median_time_past(&self, h: &Hash) -> u64 {
        let mut times = Vec::with_capacity(self.params.median_time_span);
        let mut cur = Some(*h);
        while times.len() < self.params.median_time_span {
            let Some(n) = cur.and_then(|c| self.index.get(&c)) else {
                break;
            };
            times.push(n.header.time);
            cur = (n.header.height > 0).then_some(n.header.prev);
        }
        validate::median_time(&mut times)
    }

    fn bits_after(&self, parent: &Hash) -> u32 {
        let Some(p) = self.index.get(parent) else {
            return self.params.pow_limit_bits;
        };
        let next = p.header.height.saturating_add(1);
        match pow::retarget_window(&self.params, next) {
            None => p.header.bits,
            Some((first, _)) => {
                let first_time = self
                    .ancestor(parent, first)
                    .and_then(|a| self.index.get(&a))
                    .map_or(p.header.time, |n| n.header.time);
                pow::next_bits(&self.params, next, p.header.bits, first_time, p.header.time)
            }
        }
    }

    /// Bits required for the block after the tip.
    pub fn next_bits(&self) -> u32 {
        self.bits_after(&self.tip_hash())
    }

    /// Contextual checks of a header (against its parent: height, bits, proof of work,
    /// time). `Ok(None)` if already indexed; `Ok(Some(work))` with the chain work it
    /// would have. A header that breaks a rule is remembered as invalid by hash (unless
    /// it is only early: its time may become acceptable), and so is one whose parent is
    /// invalid, so its own children are refused instead of becoming orphans.
    fn check_in_context(&mut self, header: &Header, now: u64) -> Result<Option<u128>, ChainError> {
        let hash = header.hash();
        if self.invalid.contains(&hash) {
            return Err(ChainError::KnownInvalid(hash));
        }
        if let Some(n) = self.index.get(&hash) {
            if n.status == BlockStatus::Invalid {
                return Err(ChainError::KnownInvalid(hash));
            }
            return Ok(None);
        }
        if self.invalid.contains(&header.prev) {
            if validate::check_header_alone(&self.params, header).is_ok() {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::KnownInvalid(hash));
        }
        let Some(parent) = self.index.get(&header.prev) else {
            return Err(ChainError::UnknownParent {
                hash,
                prev: header.prev,
            });
        };
        if parent.status == BlockStatus::Invalid {
            if validate::check_header_alone(&self.params, header).is_ok() {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::KnownInvalid(hash));
        }
        let parent_work = parent.work;
        let ctx = HeaderContext {
            parent_height: parent.header.height,
            expected_bits: self.bits_after(&header.prev),
            median_time_past: self.median_time_past(&header.prev),
        };
        if let Err(reason) = validate::check_header(&self.params, header, &ctx, now) {
            // A header with bad proof of work cost nothing: not worth a slot.
            if !matches!(
                reason,
                ValidationError::TimeTooNew { .. } | ValidationError::BadPow
            ) {
                self.invalid.insert(hash, now);
            }
            return Err(ChainError::InvalidHeader { hash, reason });
        }
        Ok(Some(parent_work.saturating_add(pow::work(header.bits))))
    }

    /// Insert a checked header into the in-memory index, in the presync area if its
    /// chain work is below the threshold (and `store` is false). A header stored takes
    /// its presync ancestors out of the area with it. Returns the rows to persist
    /// (ancestors first) and whether this header is in presync.
    fn insert_header(
        &mut self,
        header: &Header,
        work: u128,
        now: u64,
        store: bool,
    ) -> (Vec<(Header, u128, u64)>, bool) {
        let hash = header.hash();
        let presync = !store && work < self.store_threshold();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(
            hash,
            Node {
                header: header.clone(),
                work,
                status: BlockStatus::HeaderOnly,
                has_body: false,
                seq,
                connectable: false,
                presync,
            },
        );
        self.children.entry(header.prev).or_default().push(hash);
        if presync {
            self.presync.push_back((hash, now));
            self.presync_count += 1;
            self.trim_presync(now);
            return (Vec::new(), true);
        }
        (self.leave_presync(hash), false)
    }

    /// Take `hash` (stored or presync) and its presync ancestors out of the presync
    /// area; returns their rows to persist, oldest first.
    fn leave_presync(&mut self, hash: Hash) -> Vec<(Header, u128, u64)> {
        let mut rows = Vec::new();
        let mut cur = hash;
        while let Some(n) = self.index.get_mut(&cur) {
            if !n.presync && cur != hash {
                break;
            }
            if n.presync {
                n.presync = false;
                self.presync_count = self.presync_count.saturating_sub(1);
            }
            rows.push((n.header.clone(), n.work, n.seq));
            cur = n.header.prev;
        }
        rows.reverse();
        for (h, w, _) in &rows {
            let best = self.index.get(&self.best_header).map_or(0, |n| n.work);
            if *w > best {
                self.set_best_header(h.hash());
            }
        }
        rows
    }

    /// Drop presync headers past their time or beyond the cap, oldest first, each with
    /// its descendants (which cannot be checked without it).
    fn trim_presync(&mut self, now: u64) {
        while let Some(&(h, t)) = self.presync.front() {
            let live = self.index.get(&h).is_some_and(|n| n.presync);
            let over = self.presync_count > MAX_PRESYNC_HEADERS;
            if live && !over && now.saturating_sub(t) <= PRESYNC_TTL_SECS {
                break;
            }
            self.presync.pop_front();
            if live {
                self.remove_presync_subtree(h);
            }
        }
        // Promotions leave stale entries; keep the queue within twice the cap.
        if self.presync.len() > 2 * MAX_PRESYNC_HEADERS {
            let index = &self.index;
            self.presync
                .retain(|(h, _)| index.get(h).is_some_and(|n| n.presync));
        }
    }

    fn remove_presync_subtree(&mut self, root: Hash) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get(&h) else {
                continue;
            };
            if !n.presync {
                continue;
            }
            let prev = n.header.prev;
            self.index.remove(&h);
            self.presync_count = self.presync_count.saturating_sub(1);
            if let Some(v) = self.children.get_mut(&prev) {
                v.retain(|x| *x != h);
                if v.is_empty() {
                    self.children.remove(&prev);
                }
            }
            if let Some(c) = self.children.remove(&h) {
                stack.extend(c);
            }
        }
    }

    /// Contextual header checks and insertion into the index; rows for the store are
    /// appended to `rows`. Returns the node's (work, seq) if it was new and is stored
    /// (not in presync), `None` otherwise.
    fn index_header(
        &mut self,
        header: &Header,
        now: u64,
        rows: &mut Vec<(Header, u128, u64)>,
    ) -> Result<Option<(u128, u64)>, ChainError> {
        let Some(work) = self.check_in_context(header, now)? else {
            return Ok(None);
        };
        let (new_rows, presync) = self.insert_header(header, work, now, false);
        rows.extend(new_rows);
        if presync {
            return Ok(None);
        }
        Ok(self.index.get(&header.hash()).map(|n| (n.work, n.seq)))
    }

    /// Forget what has outlived its time: orphans, invalid hashes, presync headers.
    fn expire(&mut self, now: u64) {
        self.orphans.expire(now);
        self.invalid.expire(now);
        self.trim_presync(now);
    }

    /// Add headers (in chain order) to the index after contextual checks. Headers on a
    /// chain whose work is below [`Chain::store_threshold`] are held in the presync area
    /// and stored once a later header brings their chain to it. Returns how many headers
    /// were stored; stops at the first invalid one with an error (the valid ones before
    /// it are kept).
    pub fn accept_headers(&mut self, headers: &[Header], now: u64) -> Result<usize, ChainError> {
        self.expire(now);
        let mut rows = Vec::new();
        let mut result = Ok(());
        for h in headers {
            if let Err(e) = self.index_header(h, now, &mut rows) {
                result = Err(e);
                break;
            }
        }
        self.store.put_headers(&rows)?;
        result.map(|()| rows.len())
    }

    /// Bodies missing on the best header chain above its last connectable block, lowest
    /// height first, at most `max`.
    ///
    /// Starts from the download cursor rather than walking down from the best header,
    /// so a call costs O(`max`) amortised plus the bodies already held above the first
    /// gap (bounded by what was requested out of order), not O(chain length).
    pub fn missing_blocks(&self, max: usize) -> Vec<Hash> {
        let mut out = Vec::new();
        let len = self.best_chain.len() as u64;
        let mut cursor = self.dl_cursor.load(Ordering::Relaxed);
        while cursor < len {
            let connectable = self
                .best_chain
                .get(cursor as usize)
                .and_then(|h| self.index.get(h))
                .is_some_and(|n| n.connectable);
            if !connectable {
                break;
            }
            cursor += 1;
        }
        self.dl_cursor.store(cursor, Ordering::Relaxed);
        // Genesis is never fetched.
        let from = usize::try_from(cursor.max(1)).unwrap_or(usize::MAX);
        for h in self.best_chain.iter().skip(from) {
            if out.len() >= max {
                break;
            }
            if self.index.get(h).is_some_and(|n| !n.has_body) {
                out.push(*h);
            }
        }
        out
    }

    /// The walk [`Chain::missing_blocks`] replaced: the reference its tests compare with.
    #[cfg(test)]
    pub(crate) fn missing_blocks_walk(&self, max: usize) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut cur = self.best_header;
        while let Some(n) = self.index.get(&cur) {
            if n.connectable || n.header.height == 0 {
                break;
            }
            if !n.has_body {
                out.push(cur);
            }
            cur = n.header.prev;
        }
        out.reverse();
        out.truncate(max);
        out
    }

    /// Submit a block from anywhere (peer, miner, API). On `Ok` everything it changed is
    /// durable in the store.
    ///
    /// The order of checks bounds what a peer can make us do: proof of work (under the
    /// network limit) first; then, for a block whose parent is unknown, only size bounds
    /// before it waits in the orphan pool; for a known parent, the header's context
    /// (height, bits, time) before the merkle root and the signatures.
    pub fn submit_block(&mut self, block: Block, now: u64) -> Result<BlockOutcome, ChainError> {
        self.expire(now);
        let hash = block.hash();
        if self.invalid.contains(&hash) {
            return Err(ChainError::KnownInvalid(hash));
        }
        if let Some(n) = self.index.get(&hash) {
            if n.status == BlockStatus::Invalid {
                return Err(ChainError::KnownInvalid(hash));
            }
            if n.has_body {
                return Ok(BlockOutcome::Duplicate);
            }
        }
        if self.orphans.contains(&hash) {
            return Ok(BlockOutcome::Duplicate);
        }
        validate::check_header_alone(&self.params, &block.header)
            .map_err(|reason| ChainError::InvalidBlock { hash, reason })?;
        let prev = block.header.prev;
        if !self.index.contains_key(&prev) && !self.is_invalid(&prev) {
            // Nothing to check it against yet: hold it, cheaply bounded.
            validate::check_body_bounds(&self.params, &block)
                .map_err(|reason| ChainError::InvalidBlock { hash, reason })?;
            tracing::debug!(%hash, %prev, "orphan block");
            self.orphans.insert(block, now);
            return Ok(BlockOutcome::Orphan);
        }
        let old_tip = self.tip_hash();
        match self.accept_body(block, now) {
            Ok(true) => {}
            Ok(false) => return Ok(BlockOutcome::SideChain),
            Err(e) => {
                self.drop_orphans_of(hash, now);
                return Err(e);
            }
        }
        // Orphans waiting for this block (and their own children) can now be checked.
        let mut queue = vec![hash];
        while let Some(parent) = queue.pop() {
            for child in self.orphans.take_children(&parent) {
                let ch = child.hash();
                match self.accept_body(child, now) {
                    Ok(true) => queue.push(ch),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(block = %ch, "dropped orphan: {e}");
                        self.drop_orphans_of(ch, now);
                    }
                }
            }
        }
        let failures = self.activate()?;
        if self.is_invalid(&hash) {
            let reason = failures
                .into_iter()
                .find(|(h, _)| *h == hash)
                .map(|(_, r)| r);
            return Err(match reason {
                Some(reason) => ChainError::InvalidBlock { hash, reason },
                None => ChainError::KnownInvalid(hash),
            });
        }
        let new_tip = self.tip_hash();
        if new_tip == old_tip {
            return Ok(BlockOutcome::SideChain);
        }
        let (connected, disconnected) = self.diff(&old_tip, &new_tip);
        Ok(BlockOutcome::Connected {
            tip: self.tip(),
            connected,
            disconnected,
        })
    }

    /// Drop orphans descending from a block we refused: they can never connect. Where
    /// the refused block is known invalid, each dropped orphan's hash is remembered as
    /// invalid too, so a descendant that arrives later is refused at once instead of
    /// waiting in the orphan pool for a parent that will never come.
    fn drop_orphans_of(&mut self, root: Hash, now: u64) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let parent_invalid = self.is_invalid(&h);
            for b in self.orphans.take_children(&h) {
                let bh = b.hash();
                if parent_invalid {
                    self.invalid.insert(bh, now);
                }
                stack.push(bh);
            }
        }
    }

    /// Check a block whose parent is indexed (context first, then the body) and, if its
    /// chain has enough work, index and store it; update connectability. Does not change
    /// the active chain. `Ok(false)`: valid as far as checked but below the storing
    /// threshold, so only its header was kept (in presync).
    fn accept_body(&mut self, block: Block, now: u64) -> Result<bool, ChainError> {
        let hash = block.hash();
        let new_work = match self.check_in_context(&block.header, now) {
            Ok(w) => w,
            Err(ChainError::InvalidHeader { hash, reason }) => {
                return Err(ChainError::InvalidBlock { hash, reason })
            }
            Err(e) => return Err(e),
        };
        if let Some(n) = self.index.get(&hash) {
            if n.has_body {
                return Ok(true);
            }
        }
        let presync_now = self.index.get(&hash).is_some_and(|n| n.presync);
        let work = match new_work {
            Some(w) => w,
            None => self.index.get(&hash).map_or(0, |n| n.work),
        };
        // A block that would beat the tip is kept whatever the threshold: that is how a
        // young chain (our own miner's included) grows past the network minimum.
        if work < self.store_threshold() && work <= self.tip().work {
            // Not worth storing a body on a chain this cheap; the header is kept.
            if let Some(w) = new_work {
                self.insert_header(&block.header, w, now, false);
            }
            return Ok(false);
        }
        if let Err(reason) = validate::check_body(&self.params, &block, self.network_id) {
            // A wrong merkle root is the sender's fault, not the header's.
            if reason != ValidationError::BadMerkle {
                if presync_now {
                    self.remove_presync_subtree(hash);
                    self.invalid.insert(hash, now);
                } else if self.index.contains_key(&hash) {
                    self.mark_invalid(hash)?;
                } else {
                    self.invalid.insert(hash, now);
                }
            }
            return Err(ChainError::InvalidBlock { hash, reason });
        }
        let mut rows = match new_work {
            Some(w) => self.insert_header(&block.header, w, now, true).0,
            None if presync_now => self.leave_presync(hash),
            None => Vec::new(),
        };
        // Presync ancestors this block brought to the threshold are stored first.
        rows.retain(|(h, _, _)| h.hash() != hash);
        self.store.put_headers(&rows)?;
        let (work, seq) = self
            .index
            .get(&hash)
            .map(|n| (n.work, n.seq))
            .ok_or_else(|| internal("indexed header vanished"))?;
        self.store.put_block(&block, work, seq)?;
        let parent_ok = self
            .index
            .get(&block.header.prev)
            .is_some_and(|p| p.connectable);
        if let Some(n) = self.index.get_mut(&hash) {
            n.has_body = true;
            n.status = BlockStatus::HaveBody;
        }
        if parent_ok {
            self.propagate_connectable(hash);
        }
        Ok(true)
    }

    fn propagate_connectable(&mut self, start: Hash) {
        let tip_work = self.tip().work;
        let mut stack = vec![start];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get_mut(&h) else {
                continue;
            };
            if !n.has_body || n.status == BlockStatus::Invalid || n.connectable {
                continue;
            }
            n.connectable = true;
            if n.work >= tip_work {
                self.candidates.insert((n.work, Reverse(n.seq), h));
            }
            if let Some(c) = self.children.get(&h) {
                stack.extend(c.iter().copied());
            }
        }
    }

    /// Mark a block and all its descendants invalid (memory and store).
    fn mark_invalid(&mut self, root: Hash) -> Result<(), ChainError> {
        let mut marked = Vec::new();
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let Some(n) = self.index.get_mut(&h) else {
                continue;
            };
            if n.status != BlockStatus::Invalid {
                n.status = BlockStatus::Invalid;
                n.connectable = false;
                self.candidates.remove(&(n.work, Reverse(n.seq), h));
                marked.push(h);
            }
            if let Some(c) = self.children.get(&h) {
                stack.extend(c.iter().copied());
            }
        }
        self.store.mark_invalid(&marked)?;
        let lowest = marked
            .iter()
            .filter_map(|h| self.index.get(h))
            .map(|n| n.header.height)
            .min();
        if let Some(low) = lowest {
            self.dl_cursor.fetch_min(low, Ordering::Relaxed);
        }
        if marked.contains(&self.best_header) {
            self.rescan_best_header();
        }
        Ok(())
    }

    /// Move the active chain to the best connectable candidate, reorganising as needed;
    /// a block that fails on the way is marked invalid (with its descendants) and the
    /// best remaining chain is chosen. Returns the blocks found invalid.
    fn activate(&mut self) -> Result<Vec<(Hash, ValidationError)>, ChainError> {
        let mut failures = Vec::new();
        let mut returned: Vec<Transaction> = Vec::new();
        let mut changed = false;
        loop {
            let tip = self.tip();
            let Some(&(work, _, best)) = self.candidates.last() else {
                break;
            };
            if best == tip.hash || work <= tip.work {
                break;
            }
            changed = true;
            let mut path = Vec::new();
            let mut cur = best;
            while !self.is_on_main_chain(&cur) {
                path.push(cur);
                cur = self
                    .index
                    .get(&cur)
                    .map(|n| n.header.prev)
                    .ok_or_else(|| internal(format!("block {cur} lost its parent")))?;
            }
            path.reverse();
            while self.tip_hash() != cur {
                returned.extend(self.disconnect_tip()?);
            }
            for h in path {
                match self.connect(h)? {
                    Ok(()) => {}
                    Err(reason) => {
                        tracing::warn!(block = %h, "invalid block: {reason}");
                        failures.push((h, reason));
                        self.mark_invalid(h)?;
                        break;
                    }
                }
            }
        }
        if changed {
            let tip_work = self.tip().work;
            self.candidates.retain(|c| c.0 >= tip_work);
            if self.candidates.is_empty() {
                let t = self.tip();
                if let Some(n) = self.index.get(&t.hash) {
                    self.candidates.insert((n.work, Reverse(n.seq), t.hash));
                }
            }
            let before = self.mempool.ids();
            let snapshot: HashMap<Hash, Transaction> =
                returned.iter().map(|t| (t.id(), t.clone())).collect();
            self.rebuild_mempool(returned);
            let after = self.mempool.ids();
            let added: Vec<&Transaction> = after
                .difference(&before)
                .filter_map(|id| snapshot.get(id))
                .collect();
            let removed: Vec<Hash> = before.difference(&after).copied().collect();
            self.store.update_mempool(&added, &removed)?;
        }
        Ok(failures)
    }

    fn rebuild_mempool(&mut self, first: Vec<Transaction>) {
        let accounts = &self.accounts;
        let min = self.params.min_relay_fee;
        let (params, window) = (&self.params, &self.recent_coinbases);
        let next = (self.main.len() as u64).max(1);
        // The mempool sees only what the next block may spend: immature coinbase funds
        // are left out of the balance it checks spends against.
        self.mempool.rebuild(
            first,
            |a| {
                let mut acc = accounts.get(a).copied().unwrap_or_default();
                acc.balance = acc
                    .balance
                    .saturating_sub(immature_in(params, window, a, next));
                acc
            },
            min,
        );
    }

    /// Connect the block `h` (child of the tip). The outer error is a store failure;
    /// the inner one a consensus failure.
    fn connect(&mut self, h: Hash) -> Result<Result<(), ValidationError>, ChainError> {
        let block = self
            .store
            .get_block(&h)?
            .ok_or_else(|| internal(format!("body of block {h} missing from store")))?;
        if block.header.prev != self.tip_hash() {
            return Err(internal(format!("block {h} does not extend the tip")));
        }
        let mut ov = Overlay::new(&self.accounts);
        let height = block.header.height;
        let (params, window) = (&self.params, &self.recent_coinbases);
        if let Err(e) = validate::apply_block(&self.params, &mut ov, &block, |a| {
            immature_in(params, window, a, height)
        }) {
            return Ok(Err(e));
        }
        let (changes, undo) = ov.into_parts();
        let tx_ids: Vec<Hash> = block.txs.iter().map(Transaction::id).collect();
        self.store.connect_block(&ConnectWrite {
            hash: h,
            height: block.header.height,
            accounts: &changes,
            undo: &undo,
            tx_ids: &tx_ids,
        })?;
        apply_changes(&mut self.accounts, &changes);
        self.main.push(h);
        self.recent_coinbases
            .push_back((height, block.coinbase.to, block.coinbase.amount));
        while self
            .recent_coinbases
            .front()
            .is_some_and(|(ch, _, _)| ch.saturating_add(self.params.coinbase_maturity) <= height)
        {
            self.recent_coinbases.pop_front();
        }
        for id in &tx_ids {
            self.mempool.remove(id);
        }
        Ok(Ok(()))
    }

    /// Disconnect the tip, restoring the accounts from its undo record; returns its
    /// transactions.
    fn disconnect_tip(&mut self) -> Result<Vec<Transaction>, ChainError> {
        if self.main.len() <= 1 {
            return Err(internal("cannot disconnect genesis"));
        }
        let h = self.tip_hash();
        let block = self
            .store
            .get_block(&h)?
            .ok_or_else(|| internal(format!("body of block {h} missing from store")))?;
        let undo = self
            .store
            .get_undo(&h)?
            .ok_or_else(|| internal(format!("undo data of block {h} missing")))?;
        let tx_ids: Vec<Hash> = block.txs.iter().map(Transaction::id).collect();
        self.store.disconnect_block(&DisconnectWrite {
            hash: h,
            height: block.header.height,
            accounts: &undo.prev,
            tx_ids: &tx_ids,
        })?;
        apply_changes(&mut self.accounts, &undo.prev);
        self.main.pop();
        // The maturity window slides back: the block that leaves it at the top lets the
        // one below its bottom back in.
        if self
            .recent_coinbases
            .back()
            .is_some_and(|(ch, _, _)| *ch == block.header.height)
        {
            self.recent_coinbases.pop_back();
        }
        let tip = block.header.height.saturating_sub(1);
        let bottom = tip
            .saturating_add(1)
            .saturating_sub(self.params.coinbase_maturity);
        if (1..=tip).contains(&bottom)
            && self
                .recent_coinbases
                .front()
                .is_none_or(|(ch, _, _)| *ch > bottom)
        {
            self.push_recent_coinbase_front_or_back(bottom, true)?;
        }
        Ok(block.txs)
    }

    /// Blocks between two tips: (connected in height order, disconnected tip first).
    fn diff(&self, old: &Hash, new: &Hash) -> (Vec<Hash>, Vec<Hash>) {
        let (mut a, mut b) = (*old, *new);
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        let height = |h: &Hash| self.index.get(h).map_or(0, |n| n.header.height);
        let prev = |h: &Hash| self.index.get(h).map_or(Hash::ZERO, |n| n.header.prev);
        while a != b {
            let (ha, hb) = (height(&a), height(&b));
            if ha == 0 && hb == 0 {
                break;
            }
            if ha >= hb {
                gone.push(a);
                a = prev(&a);
            }
            if hb >= ha {
                came.push(b);
                b = prev(&b);
            }
        }
        came.reverse();
        (came, gone)
    }

    /// Submit a transaction to the mempool. On `Ok` the mempool change is durable.
    pub fn submit_tx(&mut self, tx: Transaction, _now: u64) -> Result<TxOutcome, ChainError> {
        let id = tx.id();
        if self.mempool.contains(&id) || self.store.tx_block(&id)?.is_some() {
            return Ok(TxOutcome::Duplicate);
        }
        if tx.amount.checked_add(tx.fee).is_none() {
            return Err(ChainError::InvalidTx {
                id,
                reason: ValidationError::AmountOverflow(id),
            });
        }
        if !tx.verify(self.network_id) {
            return Err(ChainError::InvalidTx {
                id,
                reason: ValidationError::BadSignature(id),
            });
        }
        let mut acc = self.account(&tx.from);
        acc.balance = self.spendable_balance(&tx.from);
        let evicted = self
            .mempool
            .add(tx.clone(), id, acc, self.params.min_relay_fee)
            .map_err(|reason| ChainError::TxRefused { id, reason })?;
        if let Err(e) = self.store.update_mempool(&[&tx], &evicted) {
            self.mempool.remove_with_successors(&id);
            return Err(e.into());
        }
        Ok(TxOutcome::Accepted)
    }

    /// Mempool transactions, highest fee first.
    pub fn mempool_txs(&self) -> Vec<Transaction> {
        self.mempool.by_fee_desc().into_iter().cloned().collect()
    }

    /// A mempool transaction.
    pub fn mempool_get(&self, id: &Hash) -> Option<Transaction> {
        self.mempool.get(id).cloned()
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
    pub fn accounts(&self) -> &HashMap<Address, Account> {
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

    /// A block on the tip, ready to mine: required bits, time = max(now, median + 1),
    /// mempool transactions by fee within the limits, coinbase = subsidy + fees.
    pub fn block_template(&self, miner: Address, now: u64) -> Block {
        let tip = self.tip();
        let height = tip.height.saturating_add(1);
        let time = now.max(self.median_time_past(&tip.hash).saturating_add(1));
        let subsidy = self.params.subsidy(height);
        let mut block = Block {
            header: Header {
                version: validate::BLOCK_VERSION,
                prev: tip.hash,
                merkle_root: Hash::ZERO,
                time,
                bits: self.next_bits(),
                nonce: 0,
                height,
            },
            coinbase: Coinbase {
                height,
                to: miner,
                amount: u64::MAX, // widest varint, so the size estimate is an upper bound
            },
            txs: Vec::new(),
        };
        // Slack for the transaction count's varint growing.
        let base = block.encoded_len().saturating_add(4);
        let budget = self.params.max_block_bytes.saturating_sub(base);
        let mut txs = self.mempool.select(self.params.max_block_txs, budget);
        let mut fees = 0u64;
        for (i, t) in txs.iter().enumerate() {
            match fees
                .checked_add(t.fee)
                .and_then(|f| subsidy.checked_add(f).map(|_| f))
            {
                Some(f) => fees = f,
                None => {
                    txs.truncate(i);
                    break;
                }
            }
        }
        block.coinbase.amount = subsidy.saturating_add(fees);
        block.txs = txs;
        block.header.merkle_root = super::merkle::root(&block.leaf_ids());
        block
    }
}

#[cfg(test)]
mod tests;
