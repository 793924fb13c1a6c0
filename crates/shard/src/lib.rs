//! One shard's pipeline: RocksDB storage ([`store`]), the state commitment over accounts,
//! storage and code ([`commitment`]), and applying executed blocks atomically ([`apply`]).
//!
//! A block is applied by executing it on the stored state (`tessera-execution` reads through
//! the store's `StateView`), updating the Merkle-Patricia commitment incrementally from the
//! block's state diff, building the header that carries the new root, and writing header, body,
//! receipts, indexes, flat state and trie nodes in one write batch. A crash at any instant leaves
//! the database at the last committed block.

pub mod apply;
pub mod commitment;
pub mod store;
