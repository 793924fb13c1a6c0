use alloy_primitives::B256;
use std::path::PathBuf;

/// Failures of the shard database, and blocks it refuses to commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("opening RocksDB at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// A read in one column family failed.
    #[error("RocksDB {op} in column family `{cf}`: {source}")]
    Db {
        op: &'static str,
        cf: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// The write batch of a block failed; nothing of the block was written.
    #[error("writing block {number}: {source}")]
    Write {
        number: u64,
        #[source]
        source: rocksdb::Error,
    },
    /// A column family the schema needs is not open (a bug: `open` creates all of them).
    #[error("column family `{0}` is not open")]
    MissingColumnFamily(&'static str),
    /// A stored key or value does not decode: the database is corrupt or from another format.
    #[error("corrupt entry in column family `{cf}` at key 0x{key}: {reason}")]
    Corrupt {
        cf: &'static str,
        key: String,
        reason: String,
    },
    /// The block's number is not the head's plus one (or 0 on an empty store).
    #[error("block {number} does not follow the head (head: {head:?})")]
    NotNextBlock { number: u64, head: Option<u64> },
    /// The block's parent hash is not the head's hash.
    #[error("block {number} has parent {parent_hash}, but the head is {head_hash}")]
    ParentMismatch {
        number: u64,
        parent_hash: B256,
        head_hash: B256,
    },
    /// The parts handed to `commit_block` do not fit together.
    #[error("block {number} is malformed: {reason}")]
    MalformedBlock { number: u64, reason: String },
}
