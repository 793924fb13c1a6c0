use alloy_primitives::{
    b256,
    map::{AddressMap, B256Map, HashMap},
    Bytes, B256, U256,
};
use serde::{Deserialize, Serialize};

/// keccak256 of the empty byte string: the code hash of an account without code.
pub const EMPTY_CODE_HASH: B256 =
    b256!("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");

/// Root of an empty Merkle-Patricia trie: keccak256(rlp("")).
pub const EMPTY_ROOT_HASH: B256 =
    b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");

/// The flat part of an account as execution sees it. The storage root is not here: it belongs
/// to the state commitment, which derives it from the storage slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: EMPTY_CODE_HASH,
        }
    }
}

impl Account {
    /// Empty in the sense of EIP-161: no nonce, no balance, no code.
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && self.code_hash == EMPTY_CODE_HASH
    }
}

/// What one block (or one transaction) did to one account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    /// The account after the change; `None` when it was deleted (self-destruct, or touched while
    /// empty under EIP-161).
    pub info: Option<Account>,
    /// All storage the account had before is gone (deleted or re-created); `storage` then holds
    /// the complete new storage.
    pub storage_cleared: bool,
    /// Slots written, with their new values; a zero value deletes the slot.
    pub storage: StorageChanges,
}

impl AccountChange {
    /// Layers `later` on top, as if the two were applied one after the other: a change that
    /// clears the storage replaces everything before it.
    pub fn merge(&mut self, later: AccountChange) {
        if later.storage_cleared {
            *self = later;
        } else {
            self.info = later.info;
            self.storage.extend(later.storage);
        }
    }
}

/// Slot changes of one account, by slot.
pub type StorageChanges = HashMap<U256, U256>;

/// The effect of a block on state.
///
/// Hash maps, in no particular order: nothing derived from a diff depends on the order of its
/// entries (the state root comes from tries keyed by hashed address and slot, and the store
/// writes one batch of distinct keys), so executors hand over the maps they built instead of
/// sorting them for nobody. Whoever needs an order (a printout, a comparison) sorts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDiff {
    pub accounts: AddressMap<AccountChange>,
    /// Bytecode first deployed in this block, by code hash.
    pub codes: B256Map<Bytes>,
}

impl StateDiff {
    /// Layers `later` on top of `self`, as if the two were applied one after the other.
    pub fn merge(&mut self, later: StateDiff) {
        for (addr, change) in later.accounts {
            match self.accounts.entry(addr) {
                std::collections::hash_map::Entry::Occupied(mut existing) => {
                    existing.get_mut().merge(change)
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(change);
                }
            }
        }
        self.codes.extend(later.codes);
    }

    /// Number of changed keys (accounts plus storage slots).
    pub fn key_count(&self) -> usize {
        self.accounts.values().map(|c| 1 + c.storage.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    #[test]
    fn merge_respects_storage_clear() {
        let a = Address::repeat_byte(1);
        let mut first = StateDiff::default();
        first.accounts.insert(
            a,
            AccountChange {
                info: Some(Account::default()),
                storage_cleared: false,
                storage: [(U256::from(1), U256::from(5))].into_iter().collect(),
            },
        );
        let mut second = StateDiff::default();
        second.accounts.insert(
            a,
            AccountChange {
                info: Some(Account {
                    nonce: 1,
                    ..Default::default()
                }),
                storage_cleared: true,
                storage: [(U256::from(2), U256::from(7))].into_iter().collect(),
            },
        );
        first.merge(second.clone());
        assert_eq!(first.accounts[&a], second.accounts[&a]);
        assert_eq!(keccak(&[]), EMPTY_CODE_HASH);
    }

    fn keccak(b: &[u8]) -> B256 {
        alloy_primitives::keccak256(b)
    }
}
