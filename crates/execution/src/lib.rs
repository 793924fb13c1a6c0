//! Ethereum-equivalent execution of ordered blocks of transactions on `revm`.
//!
//! The executor turns a block environment, a list of signed transactions with their recovered
//! senders, and a read-only view of the state before the block into receipts and a
//! [`StateDiff`](tessera_primitives::StateDiff). It is synchronous and does no IO: all state is
//! read through [`StateView`], which storage implements. Transactions that cannot be included
//! (bad nonce, too little balance, ...) are an outcome ([`TxOutcome::Rejected`]), not an error;
//! errors are reserved for failures of the state view itself.
//!
//! Fees follow EIP-1559: the base fee is burned, the priority fee goes to the block's
//! beneficiary. The fork ([`Fork`]) is a chain rule fixed in genesis.

pub mod allocator;
pub mod call;
mod collision;
mod executor;
mod fork;
mod keccak;
pub mod mem;
mod parallel;
pub mod receipts;
pub mod senders;
mod state;
mod transfer;
pub mod tx;

pub use call::{call, estimate_gas, CallError, CallOutcome, CallRequest, EstimateError};
pub use executor::{
    cfg_env, execute_block, execute_block_reference, revm_block_env, BlockEnv, BlockOutput,
    ChainRules, ExecError, Rejection, TxOutcome,
};
pub use fork::{Fork, UnknownFork};
pub use parallel::{
    execute_block_parallel, execute_block_parallel_with_stats, first_difference, ParallelConfig,
    ParallelStats,
};
pub use revm::primitives::hardfork::SpecId;
pub use senders::SenderCache;
pub use state::{StateError, StateView};
pub use tx::{intrinsic_gas, RecoveredTx, TxError};
