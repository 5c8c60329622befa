//! Consensus rules for headers, blocks and transactions.
//!
//! Checks are split by what they need: [`check_header_alone`] and [`check_body`] look at
//! the data only, [`check_header`] needs the parent's context, and [`apply_block`] needs
//! the account state at the parent.

use super::merkle;
use super::params::NetworkParams;
use super::pow;
use super::state::{AccountView, Overlay};
use super::types::{Address, Block, Hash, Header, Transaction};
use std::collections::HashSet;
use std::sync::OnceLock;

/// The only block version this build accepts.
pub const BLOCK_VERSION: u32 = 1;

/// Why a header, block or transaction breaks a consensus rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Unknown block version.
    #[error("unsupported block version {0}")]
    BadVersion(u32),
    /// Hash does not meet the target, or the bits are malformed.
    #[error("bad proof of work")]
    BadPow,
    /// `bits` differ from the retarget rule's result.
    #[error("wrong difficulty bits {got:#010x}, expected {expected:#010x}")]
    BadBits {
        /// Required bits.
        expected: u32,
        /// Bits in the header.
        got: u32,
    },
    /// Height is not parent height + 1.
    #[error("wrong height {got}, expected {expected}")]
    BadHeight {
        /// Parent height + 1.
        expected: u64,
        /// Height in the header.
        got: u64,
    },
    /// Time not above the median of recent blocks.
    #[error("time {time} is not after the median time {median} of recent blocks")]
    TimeTooOld {
        /// Header time.
        time: u64,
        /// Median of the previous blocks' times.
        median: u64,
    },
    /// Time too far ahead of our clock.
    #[error("time {time} is more than the allowed drift ahead of now (latest allowed {max})")]
    TimeTooNew {
        /// Header time.
        time: u64,
        /// Latest acceptable time.
        max: u64,
    },
    /// Merkle root does not match the block's contents.
    #[error("merkle root does not match the transactions")]
    BadMerkle,
    /// Block larger than `max_block_bytes`.
    #[error("block is {size} bytes, limit {max}")]
    TooBig {
        /// Encoded size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// More transactions than `max_block_txs`.
    #[error("block has {count} transactions, limit {max}")]
    TooManyTxs {
        /// Transactions in the block.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The same transaction twice in one block.
    #[error("duplicate transaction {0}")]
    DuplicateTx(Hash),
    /// Signature does not verify for this network.
    #[error("transaction {0}: bad signature")]
    BadSignature(Hash),
    /// Coinbase height differs from the header's.
    #[error("coinbase height {got}, expected {expected}")]
    CoinbaseHeight {
        /// Header height.
        expected: u64,
        /// Coinbase height.
        got: u64,
    },
    /// Coinbase pays the wrong amount.
    #[error("coinbase pays {got}, expected subsidy + fees = {expected}")]
    CoinbaseAmount {
        /// Subsidy + fees.
        expected: u64,
        /// Coinbase amount.
        got: u64,
    },
    /// Subsidy plus fees overflows u64.
    #[error("fees overflow")]
    FeeOverflow,
    /// `amount + fee` overflows u64.
    #[error("transaction {0}: amount + fee overflows")]
    AmountOverflow(Hash),
    /// A recipient's balance would overflow u64.
    #[error("transaction {0}: recipient balance overflows")]
    BalanceOverflow(Hash),
    /// Sender cannot pay amount + fee.
    #[error("transaction {tx}: sender balance {balance} < amount + fee {needed}")]
    Overspend {
        /// Transaction id.
        tx: Hash,
        /// Sender's balance at that point.
        balance: u64,
        /// amount + fee.
        needed: u64,
    },
    /// The sender's balance covers the spend only with coinbase funds that have not
    /// matured yet (consensus version 2).
    #[error(
        "transaction {tx}: spends immature coinbase funds (spendable {spendable}, needed {needed})"
    )]
    ImmatureSpend {
        /// Transaction id.
        tx: Hash,
        /// Balance minus the coinbase funds still maturing.
        spendable: u64,
        /// amount + fee.
        needed: u64,
    },
    /// Nonce is not the sender's current nonce.
    #[error("transaction {tx}: nonce {got}, expected {expected}")]
    BadNonce {
        /// Transaction id.
        tx: Hash,
        /// Sender's current nonce.
        expected: u64,
        /// Nonce in the transaction.
        got: u64,
    },
}

/// What a header's parent tells about it.
#[derive(Clone, Copy, Debug)]
pub struct HeaderContext {
    /// Parent height.
    pub parent_height: u64,
    /// Bits the retarget rule requires for this header.
    pub expected_bits: u32,
    /// Median time of the last `median_time_span` blocks ending at the parent.
    pub median_time_past: u64,
}

/// Checks that need only the header: version and proof of work (against the network's
/// `pow_limit`).
pub fn check_header_alone(params: &NetworkParams, header: &Header) -> Result<(), ValidationError> {
    if header.version != BLOCK_VERSION {
        return Err(ValidationError::BadVersion(header.version));
    }
    if !pow::check_pow(params, header) {
        return Err(ValidationError::BadPow);
    }
    Ok(())
}

/// All header rules, given the parent's context and the current time.
pub fn check_header(
    params: &NetworkParams,
    header: &Header,
    ctx: &HeaderContext,
    now: u64,
) -> Result<(), ValidationError> {
    let expected_height = ctx.parent_height.saturating_add(1);
    if header.height != expected_height {
        return Err(ValidationError::BadHeight {
            expected: expected_height,
            got: header.height,
        });
    }
    if header.bits != ctx.expected_bits {
        return Err(ValidationError::BadBits {
            expected: ctx.expected_bits,
            got: header.bits,
        });
    }
    check_header_alone(params, header)?;
    if header.time <= ctx.median_time_past {
        return Err(ValidationError::TimeTooOld {
            time: header.time,
            median: ctx.median_time_past,
        });
    }
    let max = now.saturating_add(params.max_future_secs);
    if header.time > max {
        return Err(ValidationError::TimeTooNew {
            time: header.time,
            max,
        });
    }
    Ok(())
}

/// Median of `times` (the upper middle for an even count); 0 for none.
pub fn median_time(times: &mut [u64]) -> u64 {
    if times.is_empty() {
        return 0;
    }
    times.sort_unstable();
    times[times.len() / 2]
}

/// The cheap bounds of a block body: transaction count, encoded size and coinbase
/// height. They need no hashing of the body, so they are all an orphan (a block whose
/// parent is unknown) gets before it is pooled.
pub fn check_body_bounds(params: &NetworkParams, block: &Block) -> Result<(), ValidationError> {
    if block.txs.len() > params.max_block_txs {
        return Err(ValidationError::TooManyTxs {
            count: block.txs.len(),
            max: params.max_block_txs,
        });
    }
    let size = block.encoded_len();
    if size > params.max_block_bytes {
        return Err(ValidationError::TooBig {
            size,
            max: params.max_block_bytes,
        });
    }
    if block.coinbase.height != block.header.height {
        return Err(ValidationError::CoinbaseHeight {
            expected: block.header.height,
            got: block.coinbase.height,
        });
    }
    Ok(())
}

/// Checks of a block's contents that need no state: merkle root, size, count,
/// duplicates, signatures and coinbase height. The merkle root is checked first so that
/// any later failure is a fault of the block the header commits to.
pub fn check_body(
    params: &NetworkParams,
    block: &Block,
    network: [u8; 4],
) -> Result<(), ValidationError> {
    let ids = block.leaf_ids();
    if merkle::root(&ids) != block.header.merkle_root {
        return Err(ValidationError::BadMerkle);
    }
    check_body_bounds(params, block)?;
    let mut seen = HashSet::with_capacity(block.txs.len());
    for id in &ids[1..] {
        if !seen.insert(*id) {
            return Err(ValidationError::DuplicateTx(*id));
        }
    }
    match first_bad_signature(&block.txs, network) {
        Some(i) => Err(ValidationError::BadSignature(ids[1 + i])),
        None => Ok(()),
    }
}

/// Blocks with fewer transactions have their signatures checked on the calling thread:
/// starting threads would cost more than it saves.
const PARALLEL_VERIFY_MIN: usize = 16;
/// Threads that check one block's signatures, at most.
const MAX_VERIFY_THREADS: usize = 4;

/// Position of the first transaction, in block order, whose signature is bad. A large
/// block's are checked on as many threads as there are cores (up to
/// [`MAX_VERIFY_THREADS`]): signatures are most of the CPU a block costs (issue 14).
/// The answer does not depend on the split.
pub(crate) fn first_bad_signature(txs: &[Transaction], network: [u8; 4]) -> Option<usize> {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_VERIFY_THREADS))
    });
    let bad_in = move |c: &[Transaction]| c.iter().position(|t| !t.verify(network));
    if cores <= 1 || txs.len() < PARALLEL_VERIFY_MIN {
        return bad_in(txs);
    }
    let chunk = txs.len().div_ceil(cores);
    std::thread::scope(|s| {
        let mut chunks = txs.chunks(chunk).enumerate();
        let first = chunks.next();
        let others: Vec<_> = chunks
            .map(|(i, c)| {
                let job = move || bad_in(c).map(|p| i * chunk + p);
                // A thread that cannot start leaves its share to this one.
                std::thread::Builder::new()
                    .spawn_scoped(s, job)
                    .map_err(|_| job)
            })
            .collect();
        let mine = first.and_then(|(_, c)| bad_in(c));
        let theirs = others.into_iter().map(|o| match o {
            Ok(h) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            Err(job) => job(),
        });
        // In block order (every thread joined): the first chunk with a bad signature
        // holds the first one.
        std::iter::once(mine)
            .chain(theirs)
            .fold(None, |first, r| first.or(r))
    })
}

/// Apply one transaction's account rules; returns its fee. `immature` is the part of
/// the sender's balance that is coinbase funds not yet spendable (0 before consensus
/// version 2): the spend must leave at least that much.
pub fn apply_tx<V: AccountView>(
    view: &mut Overlay<'_, V>,
    tx: &Transaction,
    id: Hash,
    immature: u64,
) -> Result<u64, ValidationError> {
    let needed = tx
        .amount
        .checked_add(tx.fee)
        .ok_or(ValidationError::AmountOverflow(id))?;
    let mut sender = view.get(&tx.from);
    if tx.nonce != sender.nonce {
        return Err(ValidationError::BadNonce {
            tx: id,
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if sender.balance < needed {
        return Err(ValidationError::Overspend {
            tx: id,
            balance: sender.balance,
            needed,
        });
    }
    let spendable = sender.balance.saturating_sub(immature);
    if spendable < needed {
        return Err(ValidationError::ImmatureSpend {
            tx: id,
            spendable,
            needed,
        });
    }
    sender.balance -= needed;
    // A nonce of u64::MAX can never be followed; treat as exhausted rather than wrap.
    sender.nonce = sender
        .nonce
        .checked_add(1)
        .ok_or(ValidationError::BadNonce {
            tx: id,
            expected: sender.nonce,
            got: tx.nonce,
        })?;
    view.set(tx.from, sender);
    let mut recipient = view.get(&tx.to);
    recipient.balance = recipient
        .balance
        .checked_add(tx.amount)
        .ok_or(ValidationError::BalanceOverflow(id))?;
    view.set(tx.to, recipient);
    Ok(tx.fee)
}

/// Apply a block's transactions and coinbase on top of the parent state, checking the
/// account rules in order and the coinbase amount. `immature(a)` is the sum of the
/// coinbases paid to `a` by the blocks at heights above `height - coinbase_maturity` on
/// the chain this block extends; it is consulted only where the maturity rule is active.
pub fn apply_block<V: AccountView>(
    params: &NetworkParams,
    view: &mut Overlay<'_, V>,
    block: &Block,
    immature: impl Fn(&Address) -> u64,
) -> Result<(), ValidationError> {
    let mature_rule = params.maturity_active(block.header.height);
    let mut fees: u64 = 0;
    for tx in &block.txs {
        let id = tx.id();
        let locked = if mature_rule { immature(&tx.from) } else { 0 };
        let fee = apply_tx(view, tx, id, locked)?;
        fees = fees.checked_add(fee).ok_or(ValidationError::FeeOverflow)?;
    }
    let expected = params
        .subsidy(block.header.height)
        .checked_add(fees)
        .ok_or(ValidationError::FeeOverflow)?;
    if block.coinbase.amount != expected {
        return Err(ValidationError::CoinbaseAmount {
            expected,
            got: block.coinbase.amount,
        });
    }
    let mut miner = view.get(&block.coinbase.to);
    miner.balance = miner
        .balance
        .checked_add(expected)
        .ok_or(ValidationError::BalanceOverflow(block.coinbase.id()))?;
    view.set(block.coinbase.to, miner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::types::Sig;

    /// Whatever the split among threads, the first bad signature in block order is the
    /// one reported.
    #[test]
    fn the_first_bad_signature_is_found_in_block_order() {
        let net = [1, 2, 3, 4];
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let good: Vec<Transaction> = (0..40)
            .map(|n| Transaction::sign(net, &key, Address([2; 32]), 1, 1000, n))
            .collect();
        let with_bad = |bad: &[usize]| {
            let mut txs = good.clone();
            for &i in bad {
                txs[i].sig = Sig([0; 64]);
            }
            first_bad_signature(&txs, net)
        };
        assert_eq!(with_bad(&[]), None);
        for i in [0, 9, 10, 19, 20, 29, 30, 39] {
            assert_eq!(with_bad(&[i]), Some(i));
        }
        assert_eq!(with_bad(&[35, 25, 5]), Some(5));
        assert_eq!(with_bad(&[39, 21]), Some(21));
        assert_eq!(first_bad_signature(&good[..3], [0; 4]), Some(0));
    }
}
