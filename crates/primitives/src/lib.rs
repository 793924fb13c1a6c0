//! Types shared by every Tessera crate: shard, height and round newtypes, accounts and state
//! diffs, block headers and receipts, the address-to-shard mapping, and the one canonical binary
//! encoding (`codec`) used on disk and on the wire, with bounded decoding of untrusted bytes.
//!
//! Nothing here does IO or knows about RocksDB, revm or libp2p; higher crates agree on these
//! types so that storage, execution and consensus can be tested apart.

mod block;
pub mod codec;
mod ids;
mod state;

pub use alloy_primitives::{keccak256, Address, Bloom, Bytes, Log, LogData, B256, U256};
pub use block::{Header, Receipt, TxStatus};
pub use ids::{shard_of, Height, Round, ShardId};
pub use state::{
    Account, AccountChange, SlotHashing, StateDiff, StorageChanges, EMPTY_CODE_HASH,
    EMPTY_ROOT_HASH,
};
