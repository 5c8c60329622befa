//! [`Chain`]: the block index, fork choice, the active chain's account state, the orphan
//! pool and the mempool, persisted through [`Store`].
//!
//! Headers of every block we know stay in memory with their cumulative work and status.
//! Bodies and undo data live in the store. The active chain is the valid chain with the
//! most cumulative work whose bodies we all have; on equal work the first seen stays.

use super::mempool::{Mempool, MempoolLimits, MempoolReject};
use super::orphans::OrphanPool;
use super::params::NetworkParams;
use super::pow;
use super::state::{apply_changes, Overlay};
use super::types::{Address, Block, Coinbase, Hash, Header, Transaction};
use super::validate::{self, HeaderContext, ValidationError};
use crate::store::{BlockStatus, ConnectWrite, DisconnectWrite, Store, StoreError};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

pub use super::state::Account;

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
    /// Stored and valid as far as checked, but not on the best chain.
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
    next_seq: u64,
}

fn internal(msg: impl Into<String>) -> ChainError {
    ChainError::Internal(msg.into())
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
            next_seq: 0,
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

    fn rescan_best_header(&mut self) {
        let best = self
            .index
            .iter()
            .filter(|(_, n)| n.status != BlockStatus::Invalid)
            .max_by(|a, b| a.1.work.cmp(&b.1.work).then(b.1.seq.cmp(&a.1.seq)))
            .map(|(h, _)| *h);
        self.best_header = best.unwrap_or_else(|| self.params.genesis_hash());
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

    /// True if the block's body is stored or held as an orphan.
    pub fn has_block(&self, h: &Hash) -> bool {
        self.index.get(h).is_some_and(|n| n.has_body) || self.orphans.contains(h)
    }

    /// True if the header is in the index (valid or not).
    pub fn has_header(&self, h: &Hash) -> bool {
        self.index.contains_key(h)
    }

    /// A known header.
    pub fn header(&self, h: &Hash) -> Option<Header> {
        self.index.get(h).map(|n| n.header.clone())
    }

    /// True if the block is known invalid.
    pub fn is_invalid(&self, h: &Hash) -> bool {
        self.index
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

    /// Contextual header checks and insertion into the in-memory index (not persisted).
    /// Returns the new node's (work, seq), or `None` if already known.
    fn index_header(
        &mut self,
        header: &Header,
        now: u64,
    ) -> Result<Option<(u128, u64)>, ChainError> {
        let hash = header.hash();
        if let Some(n) = self.index.get(&hash) {
            if n.status == BlockStatus::Invalid {
                return Err(ChainError::KnownInvalid(hash));
            }
            return Ok(None);
        }
        let Some(parent) = self.index.get(&header.prev) else {
            return Err(ChainError::UnknownParent {
                hash,
                prev: header.prev,
            });
        };
        if parent.status == BlockStatus::Invalid {
            // Remember it, so its own children are refused instead of becoming orphans.
            if validate::check_header_alone(header).is_ok() {
                self.remember_invalid(header)?;
            }
            return Err(ChainError::KnownInvalid(hash));
        }
        let parent_work = parent.work;
        let ctx = HeaderContext {
            parent_height: parent.header.height,
            expected_bits: self.bits_after(&header.prev),
            median_time_past: self.median_time_past(&header.prev),
        };
        validate::check_header(&self.params, header, &ctx, now)
            .map_err(|reason| ChainError::InvalidHeader { hash, reason })?;
        let work = parent_work.saturating_add(pow::work(header.bits));
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
            },
        );
        self.children.entry(header.prev).or_default().push(hash);
        let best = self.index.get(&self.best_header).map_or(0, |n| n.work);
        if work > best {
            self.best_header = hash;
        }
        Ok(Some((work, seq)))
    }

    /// Add headers (in chain order) to the index after contextual checks. Returns how
    /// many were new; stops at the first invalid one with an error (the valid ones
    /// before it are kept).
    pub fn accept_headers(&mut self, headers: &[Header], now: u64) -> Result<usize, ChainError> {
        let mut rows = Vec::new();
        let mut result = Ok(());
        for h in headers {
            match self.index_header(h, now) {
                Ok(Some((work, seq))) => rows.push((h.clone(), work, seq)),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.store.put_headers(&rows)?;
        result.map(|()| rows.len())
    }

    /// Bodies missing on the best header chain, lowest height first.
    pub fn missing_blocks(&self, max: usize) -> Vec<Hash> {
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
    pub fn submit_block(&mut self, block: Block, now: u64) -> Result<BlockOutcome, ChainError> {
        let hash = block.hash();
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
        if let Err(e) = self.check_block_alone(&block) {
            if !matches!(
                e,
                ChainError::InvalidBlock {
                    reason: ValidationError::BadMerkle,
                    ..
                }
            ) {
                self.drop_orphans_of(hash);
            }
            return Err(e);
        }
        if !self.index.contains_key(&block.header.prev) {
            tracing::debug!(%hash, prev = %block.header.prev, "orphan block");
            self.orphans.insert(block);
            return Ok(BlockOutcome::Orphan);
        }
        let old_tip = self.tip_hash();
        if let Err(e) = self.accept_body(block, now) {
            self.drop_orphans_of(hash);
            return Err(e);
        }
        // Orphans waiting for this block (and their own children) can now be indexed.
        let mut queue = vec![hash];
        while let Some(parent) = queue.pop() {
            for child in self.orphans.take_children(&parent) {
                let ch = child.hash();
                match self.accept_body(child, now) {
                    Ok(()) => queue.push(ch),
                    Err(e) => {
                        tracing::debug!(block = %ch, "dropped orphan: {e}");
                        self.drop_orphans_of(ch);
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

    /// Add a header (whose parent is indexed) to the index as invalid, and persist it.
    fn remember_invalid(&mut self, header: &Header) -> Result<(), ChainError> {
        let hash = header.hash();
        let Some(parent) = self.index.get(&header.prev) else {
            return Ok(());
        };
        if self.index.contains_key(&hash) {
            return self.mark_invalid(hash);
        }
        let work = parent.work.saturating_add(pow::work(header.bits));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(
            hash,
            Node {
                header: header.clone(),
                work,
                status: BlockStatus::Invalid,
                has_body: false,
                seq,
                connectable: false,
            },
        );
        self.children.entry(header.prev).or_default().push(hash);
        self.store.put_headers(&[(header.clone(), work, seq)])?;
        self.store.mark_invalid(&[hash])?;
        Ok(())
    }

    /// Drop orphans descending from a block we refused: they can never connect. Where
    /// the refused parent is indexed as invalid, each dropped header is remembered as
    /// invalid too, so a descendant that arrives later is refused at once instead of
    /// waiting in the orphan pool for a parent that will never come.
    fn drop_orphans_of(&mut self, root: Hash) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let parent_invalid = self.is_invalid(&h);
            for b in self.orphans.take_children(&h) {
                if parent_invalid {
                    if let Err(e) = self.remember_invalid(&b.header) {
                        tracing::warn!(block = %b.hash(), "could not record invalid header: {e}");
                    }
                }
                stack.push(b.hash());
            }
        }
    }

    /// Context-free block checks. A body failure other than a merkle mismatch condemns
    /// the header too (the header commits to that body), so it is marked invalid.
    fn check_block_alone(&mut self, block: &Block) -> Result<(), ChainError> {
        let hash = block.hash();
        validate::check_header_alone(&block.header)
            .map_err(|reason| ChainError::InvalidBlock { hash, reason })?;
        if let Err(reason) = validate::check_body(&self.params, block, self.network_id) {
            if reason != ValidationError::BadMerkle {
                if self.index.contains_key(&hash) {
                    self.mark_invalid(hash)?;
                } else {
                    self.remember_invalid(&block.header)?;
                }
            }
            return Err(ChainError::InvalidBlock { hash, reason });
        }
        Ok(())
    }

    /// Index (if new) and store a checked block whose parent is known; update
    /// connectability. Does not change the active chain.
    fn accept_body(&mut self, block: Block, now: u64) -> Result<(), ChainError> {
        let hash = block.hash();
        let (work, seq) = match self.index_header(&block.header, now) {
            Ok(Some(ws)) => ws,
            Ok(None) => match self.index.get(&hash) {
                Some(n) if n.has_body => return Ok(()),
                Some(n) => (n.work, n.seq),
                None => return Err(internal("indexed header vanished")),
            },
            Err(ChainError::InvalidHeader { hash, reason }) => {
                return Err(ChainError::InvalidBlock { hash, reason })
            }
            Err(e) => return Err(e),
        };
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
        Ok(())
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
        self.mempool
            .rebuild(first, |a| accounts.get(a).copied().unwrap_or_default(), min);
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
        if let Err(e) = validate::apply_block(&self.params, &mut ov, &block) {
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
        let acc = self.account(&tx.from);
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
