//! State as it was after an earlier block, read through the state commitment's trie.
//!
//! The flat tables hold only the head's state, but trie nodes are never deleted, so the state
//! root in any stored header still opens the complete state of that block. Reads walk the trie
//! (a few node lookups per account or slot instead of one), which is fine for RPC queries at
//! past blocks and keeps block application on the fast flat tables.

use crate::{
    commitment::{read_account, read_storage},
    store::Store,
};
use alloy_primitives::{Address, Bytes, B256, U256};
use tessera_execution::{StateError, StateView};
use tessera_primitives::{Account, EMPTY_ROOT_HASH};

/// The state with root `root` in `store`, read-only.
#[derive(Debug, Clone, Copy)]
pub struct StateAt<'a> {
    store: &'a Store,
    root: B256,
}

impl<'a> StateAt<'a> {
    /// The state committed by a header's `state_root`.
    pub fn new(store: &'a Store, root: B256) -> Self {
        Self { store, root }
    }

    fn account_and_storage_root(
        &self,
        address: &Address,
    ) -> Result<Option<(Account, B256)>, StateError> {
        read_account(self.store, self.root, address).map_err(StateError::new)
    }
}

impl StateView for StateAt<'_> {
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        Ok(self.account_and_storage_root(address)?.map(|(a, _)| a))
    }

    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError> {
        match self.account_and_storage_root(address)? {
            Some((_, storage_root)) => {
                read_storage(self.store, storage_root, *slot).map_err(StateError::new)
            }
            None => Ok(U256::ZERO),
        }
    }

    fn has_storage(&self, address: &Address) -> Result<bool, StateError> {
        Ok(self
            .account_and_storage_root(address)?
            .is_some_and(|(_, root)| root != EMPTY_ROOT_HASH))
    }

    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        self.store.code(code_hash).map_err(StateError::new)
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        StateView::block_hash(self.store, number)
    }
}
