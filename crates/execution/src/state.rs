use alloy_primitives::{Address, Bytes, B256, U256};
use tessera_primitives::Account;

/// A failure to read state (disk error, corruption). Fatal for the block being executed.
#[derive(Debug, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct StateError(pub String);

impl StateError {
    /// Wraps any displayable error.
    pub fn new(e: impl std::fmt::Display) -> Self {
        StateError(e.to_string())
    }
}

/// Read-only view of the state a block executes on: the flat account, storage and code tables.
/// Implemented by RocksDB storage in `shard` and by in-memory states in tests and tools.
pub trait StateView {
    /// The account at `address`, or `None` if it does not exist.
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError>;
    /// The value of a storage slot; zero when unset.
    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError>;
    /// Whether the account at `address` has at least one nonzero storage slot. Creating a
    /// contract over such an account fails (EIP-7610); the executor asks only about existing
    /// accounts with nonce 0 and no code, at most once per address and block.
    fn has_storage(&self, address: &Address) -> Result<bool, StateError>;
    /// Bytecode by its keccak256 hash.
    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError>;
    /// Hash of an earlier block, for the BLOCKHASH opcode; zero when unknown.
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
}
