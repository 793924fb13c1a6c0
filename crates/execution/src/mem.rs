//! A complete state held in memory, for the conformance runners (whose fixtures are small,
//! self-contained states) and for tests. Its root is Ethereum's state root, computed from scratch
//! with alloy-trie's `HashBuilder`: an implementation independent of the shard's incremental
//! commitment. Hash maps, like the caches of the state a real node reads through: iteration
//! order does not matter here (the root sorts by hashed key), lookups dominate.

use crate::state::{StateError, StateView};
use alloy_primitives::{
    map::{AddressMap, B256Map, HashMap},
    Address, Bytes, B256, U256,
};
use alloy_trie::{root, TrieAccount};
use std::collections::BTreeMap;
use tessera_primitives::{Account, StateDiff};

/// One account's storage slots.
pub type Slots = HashMap<U256, U256>;

/// Accounts, storage, code and block hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState {
    pub accounts: AddressMap<Account>,
    pub storage: AddressMap<Slots>,
    pub codes: B256Map<Bytes>,
    pub block_hashes: BTreeMap<u64, B256>,
}

impl MemState {
    /// Applies a diff: deletions, storage clears, slot writes (zero deletes) and new code.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (address, change) in &diff.accounts {
            if change.storage_cleared || change.info.is_none() {
                self.storage.remove(address);
            }
            match change.info {
                Some(info) => {
                    self.accounts.insert(*address, info);
                    let slots = self.storage.entry(*address).or_default();
                    for (slot, value) in &change.storage {
                        if value.is_zero() {
                            slots.remove(slot);
                        } else {
                            slots.insert(*slot, *value);
                        }
                    }
                    if slots.is_empty() {
                        self.storage.remove(address);
                    }
                }
                None => {
                    self.accounts.remove(address);
                }
            }
        }
        for (hash, code) in &diff.codes {
            self.codes.insert(*hash, code.clone());
        }
    }

    /// Storage root of one account.
    pub fn storage_root(&self, address: &Address) -> B256 {
        let slots = self.storage.get(address);
        root::storage_root_unhashed(
            slots
                .into_iter()
                .flatten()
                .map(|(k, v)| (B256::from(*k), *v)),
        )
    }

    /// Ethereum's state root over all accounts.
    pub fn state_root(&self) -> B256 {
        root::state_root_unhashed(self.accounts.iter().map(|(address, a)| {
            let account = TrieAccount {
                nonce: a.nonce,
                balance: a.balance,
                storage_root: self.storage_root(address),
                code_hash: a.code_hash,
            };
            (*address, account)
        }))
    }
}

impl StateView for MemState {
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        Ok(self.accounts.get(address).copied())
    }

    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError> {
        Ok(self
            .storage
            .get(address)
            .and_then(|s| s.get(slot))
            .copied()
            .unwrap_or_default())
    }

    fn has_storage(&self, address: &Address) -> Result<bool, StateError> {
        // `apply` never keeps zero values, but a state built by hand might.
        Ok(self
            .storage
            .get(address)
            .is_some_and(|slots| slots.values().any(|v| !v.is_zero())))
    }

    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        Ok(self.codes.get(code_hash).cloned())
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Ok(self.block_hashes.get(&number).copied().unwrap_or_default())
    }
}
