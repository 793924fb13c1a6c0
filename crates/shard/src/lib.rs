//! One shard's pipeline: RocksDB storage ([`store`]), the state commitment over accounts,
//! storage and code ([`commitment`]), and applying executed blocks atomically ([`apply`]).
//!
//! A block is applied by executing it on the stored state (`tessera-execution` reads through
//! the store's `StateView`), updating the Merkle-Patricia commitment incrementally from the
//! block's state diff, building the header that carries the new root, and writing header, body,
//! receipts, indexes, flat state and trie nodes in one write batch. A crash at any instant leaves
//! the database at the last committed block.
//!
//! The shard's transaction pool ([`mempool`]) admits signed transactions under the chain's
//! rules and selects, deterministically, the ones the next block proposes. [`chain`] ties store
//! and mempool together for the node: admission, proposals, applying decided blocks, with the
//! EIP-1559 base fee of [`fees`]; [`payload`] is what a block carries through consensus. [`history`] reads the state of past blocks through the trie.

pub mod apply;
pub mod chain;
pub mod commitment;
pub mod fees;
pub mod history;
pub mod mempool;
pub mod payload;
pub mod store;
