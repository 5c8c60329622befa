//! Account state: balances and nonces, with undo records so blocks can be disconnected.

use super::types::Address;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One account's confirmed state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance in base units.
    pub balance: u64,
    /// Number of transactions this account has sent (the next one must carry this nonce).
    pub nonce: u64,
}

impl Account {
    /// An account that was never touched (or is back to its untouched state).
    pub fn is_empty(&self) -> bool {
        *self == Account::default()
    }
}

/// What a block changed: each touched account's value before the block, in first-touch
/// order. Restoring these values disconnects the block exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    /// Previous values (an absent account is [`Account::default`]).
    pub prev: Vec<(Address, Account)>,
}

/// Read access to confirmed accounts.
pub trait AccountView {
    /// The account's state (default if unknown).
    fn get(&self, a: &Address) -> Account;
}

/// Confirmed accounts at the tip, in address order. A B-tree, not a hash map: built from
/// the store's address-ordered rows its nodes are full, where a hash table rounds up to a
/// power of two (a thousand accounts cost 100 KB of table, twice the B-tree; every
/// simulated node holds every account).
pub type Accounts = BTreeMap<Address, Account>;

impl AccountView for HashMap<Address, Account> {
    fn get(&self, a: &Address) -> Account {
        HashMap::get(self, a).copied().unwrap_or_default()
    }
}

impl AccountView for Accounts {
    fn get(&self, a: &Address) -> Account {
        BTreeMap::get(self, a).copied().unwrap_or_default()
    }
}

/// Pending changes on top of a base view; records undo data as accounts are first touched.
pub struct Overlay<'a, V: AccountView> {
    base: &'a V,
    changes: HashMap<Address, Account>,
    undo: Undo,
}

impl<'a, V: AccountView> Overlay<'a, V> {
    /// An overlay with no changes.
    pub fn new(base: &'a V) -> Self {
        Overlay {
            base,
            changes: HashMap::new(),
            undo: Undo::default(),
        }
    }

    /// Current value, with pending changes.
    pub fn get(&self, a: &Address) -> Account {
        match self.changes.get(a) {
            Some(acc) => *acc,
            None => self.base.get(a),
        }
    }

    /// Set a value, remembering the base value the first time an account is touched.
    pub fn set(&mut self, a: Address, acc: Account) {
        if !self.changes.contains_key(&a) {
            self.undo.prev.push((a, self.base.get(&a)));
        }
        self.changes.insert(a, acc);
    }

    /// The changed accounts (new values) and the undo record.
    pub fn into_parts(self) -> (Vec<(Address, Account)>, Undo) {
        let changes = self
            .undo
            .prev
            .iter()
            .map(|(a, _)| (*a, self.changes.get(a).copied().unwrap_or_default()))
            .collect();
        (changes, self.undo)
    }
}

/// Write `changes` into `accounts`, dropping accounts that became empty.
pub fn apply_changes(accounts: &mut Accounts, changes: &[(Address, Account)]) {
    for (a, acc) in changes {
        if acc.is_empty() {
            accounts.remove(a);
        } else {
            accounts.insert(*a, *acc);
        }
    }
}
