//! RocksDB storage of one shard: blocks, receipts, their indexes, the flat account/storage/code
//! tables execution reads, and the state commitment's trie nodes, in one database with one
//! column family (CF) per table.
//!
//! # Schema
//!
//! Integers in keys are big-endian, so that byte order is numeric order for range scans.
//! `‖` is concatenation; "codec" is [`tessera_primitives::codec`].
//!
//! | CF              | key                                             | value                                        |
//! |-----------------|-------------------------------------------------|----------------------------------------------|
//! | `meta`          | `"head"`                                        | head number (8) ‖ head hash (32)             |
//! | `headers`       | number (8)                                      | codec([`Header`])                            |
//! | `block_hashes`  | block hash (32)                                 | number (8)                                   |
//! | `bodies`        | number (8)                                      | codec(`Vec<Bytes>`): raw EIP-2718 transactions |
//! | `receipts`      | number (8)                                      | codec(`Vec<Receipt>`), one per transaction   |
//! | `tx_index`      | tx hash (32)                                    | number (8) ‖ index in block (4)              |
//! | `logs_index`    | `0x00` ‖ address (20) ‖ number (8) ‖ log index (4)  | tx index (4) ‖ log index in receipt (4)  |
//! |                 | `0x01` ‖ position (1) ‖ topic (32) ‖ number (8) ‖ log index (4) | same                         |
//! | `accounts`      | address (20)                                    | compact account (below)                      |
//! | `storage`       | address (20) ‖ slot (32)                        | value, big-endian without leading zeros      |
//! | `code`          | code hash (32)                                  | bytecode                                     |
//! | `trie_nodes`    | node hash (32)                                  | node RLP (see [`crate::commitment`])         |
//! | `consensus_wal` | `"finalized"`                                   | the consensus layer's record of the head block (opaque bytes) |
//! |                 | `"w"` ‖ sequence (8)                            | one write-ahead-log entry of the consensus engine (opaque) |
//! | `outbox`, `inbox` | reserved, empty for now                       |                                              |
//!
//! "Log index" is the log's position among all logs of its block (Ethereum's `logIndex`);
//! "position" is the topic's place in the log (0..4), so a topic filter is positional as in
//! `eth_getLogs`. A compact account is `flags (1) ‖ nonce length (1) ‖ nonce ‖ balance length
//! (1) ‖ balance [‖ code hash (32)]`, the code hash present only when flag bit 0 says the
//! account has code. Zero storage values are never stored; writing zero deletes the slot.
//!
//! Because storage keys start with the address, all storage of one account is one contiguous
//! key range, so clearing it (self-destruct, re-creation) is a single range tombstone inside
//! the block's write batch rather than a scan.
//!
//! # Atomicity
//!
//! [`Store::commit_block`] puts everything a block changes — header, body, receipts, indexes,
//! flat state, trie nodes and the new head — into one `WriteBatch` and writes it with default
//! write options (write-ahead log on). RocksDB appends a batch to the WAL as one checksummed
//! record shared by all column families, then applies it to the memtables and publishes its
//! sequence numbers only once the whole batch is in, so readers see all of a block or none of
//! it. On restart the WAL is replayed in point-in-time recovery mode: a record torn by a crash
//! fails its checksum and is dropped with everything after it, and column families already
//! flushed past a record skip it. A crash (even `kill -9` mid-write) therefore leaves the store
//! at the last block whose batch was fully written, with header, state and head agreeing; the
//! integration test `store_crash` checks exactly that with a real `SIGKILL`.
//!
//! Writes are not fsynced per block: a killed process loses nothing the OS has accepted, while
//! a power loss may lose the last few blocks (never part of one). That is acceptable because
//! finalized blocks can be fetched again from peers (DESIGN.md section 8).
//!
//! Block numbers and parent hashes are checked against the head under a lock, so commits are
//! serialized and the chain on disk is always contiguous from genesis.
//!
//! # Reads
//!
//! Reads see the latest committed block; there is no historical state yet (the flat tables
//! hold only the state after the head). Per-block data (headers, bodies, receipts, indexes) is
//! immutable once written. Two reads are not a snapshot: a reader racing a commit may see the
//! state before the block in one call and after it in the next, so block application, which
//! reads the state it builds on, must not run concurrently with a commit.
//!
//! # Not yet
//!
//! No historical state, and no pruning: trie nodes and code are content-addressed and never
//! deleted, so nodes of old roots accumulate. The `outbox` and `inbox` tables exist but nothing
//! writes them.
//!
//! # The consensus write-ahead log
//!
//! Unlike blocks, WAL entries are written with `sync`: a validator must not send a vote it
//! could forget in a power loss, or it might sign a conflicting one after restarting. The
//! record of the finalized head (what consensus needs to resume) is written in the block's own
//! batch, so it always names the block the head is.

mod error;
mod logs;
mod schema;

pub use error::StoreError;
pub use logs::{LogEntry, LogFilter};

use crate::commitment::{CommitmentError, NodeStore};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRecoveryMode, Direction, IteratorMode, Options, ReadOptions, WriteBatch, DB,
};
use schema::Cf;
use serde::de::DeserializeOwned;
use std::{
    fmt,
    path::Path,
    sync::{Mutex, PoisonError},
};
use tessera_execution::{StateError, StateView};
use tessera_primitives::{codec, Account, Header, Receipt, StateDiff, EMPTY_CODE_HASH};

/// Block cache shared by all column families.
const BLOCK_CACHE_BYTES: usize = 128 << 20;

/// One shard's database. Cheap to share by reference across threads; see the module docs for
/// the schema and the crash-consistency argument.
pub struct Store {
    db: DB,
    /// Held from the head check to the end of the batch write, so two commits cannot both
    /// extend the same head.
    commit_lock: Mutex<()>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

/// Everything one executed block writes.
#[derive(Clone, Copy, Debug)]
pub struct BlockCommit<'a> {
    pub header: &'a Header,
    /// The block's transactions, raw EIP-2718 bytes, in block order.
    pub transactions: &'a [Bytes],
    /// `tx_hashes[i]` is keccak256 of `transactions[i]` (not re-hashed here).
    pub tx_hashes: &'a [B256],
    /// `receipts[i]` belongs to `transactions[i]`.
    pub receipts: &'a [Receipt],
    /// The block's effect on state, applied to the flat tables.
    pub diff: &'a StateDiff,
    /// Trie nodes the state commitment created for this block (hash, RLP).
    pub trie_nodes: &'a [(B256, Vec<u8>)],
    /// The consensus layer's record of this block (opaque here), kept as the finalized head's.
    pub consensus: Option<&'a [u8]>,
}

/// Where a transaction was included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxLocation {
    pub block_number: u64,
    /// Position of the transaction in its block.
    pub index: u32,
}

type RawEntry = (Box<[u8]>, Box<[u8]>);

impl Store {
    /// Opens the database at `path`, creating it and any missing column family.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // The default, stated because the atomicity argument depends on it: replay stops at the
        // first torn record instead of skipping it or refusing to open.
        db_opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let descriptors = Cf::ALL.iter().map(|cf| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // Most reads are point lookups of keys that may not exist (fresh accounts, empty
            // slots): a bloom filter answers those without touching data blocks.
            table.set_bloom_filter(10.0, false);
            let mut opts = Options::default();
            opts.set_block_based_table_factory(&table);
            opts.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(cf.name(), opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(|source| {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        let store = Store {
            db,
            commit_lock: Mutex::new(()),
        };
        for cf in Cf::ALL {
            store.cf(cf)?;
        }
        Ok(store)
    }

    /// Writes `block` and makes it the head, atomically (see the module docs).
    ///
    /// Refuses, writing nothing, a block that is not the head's child (number head + 1 and
    /// parent hash equal to the head's hash), or block 0 when the store is not empty, or any
    /// other first block; and a block whose transactions, hashes and receipts do not line up.
    ///
    /// The diff is applied to the flat tables as follows: an account with `info: None` is
    /// deleted together with all its storage (slot writes in the same change are ignored:
    /// a deleted account has no storage); `storage_cleared` deletes all previous storage
    /// before the change's slots are written; a zero slot value deletes the slot.
    pub fn commit_block(&self, block: BlockCommit<'_>) -> Result<(), StoreError> {
        let header = block.header;
        let number = header.number;
        block.check_shape()?;
        let hash = header.hash();

        let _writer = self
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.head()? {
            None if number == 0 => {}
            None => return Err(StoreError::NotNextBlock { number, head: None }),
            Some((head, head_hash)) => {
                if head.checked_add(1) != Some(number) {
                    return Err(StoreError::NotNextBlock {
                        number,
                        head: Some(head),
                    });
                }
                if header.parent_hash != head_hash {
                    return Err(StoreError::ParentMismatch {
                        number,
                        parent_hash: header.parent_hash,
                        head_hash,
                    });
                }
            }
        }

        let mut batch = WriteBatch::default();
        self.put_block(&mut batch, &block, &hash)?;
        self.put_state(&mut batch, block.diff)?;
        let nodes = self.cf(Cf::TrieNodes)?;
        for (node_hash, rlp) in block.trie_nodes {
            batch.put_cf(nodes, node_hash, rlp);
        }
        batch.put_cf(
            self.cf(Cf::Meta)?,
            schema::HEAD_KEY,
            schema::encode_head(number, &hash),
        );
        if let Some(record) = block.consensus {
            batch.put_cf(self.cf(Cf::ConsensusWal)?, schema::FINALIZED_KEY, record);
        }
        self.db
            .write(batch)
            .map_err(|source| StoreError::Write { number, source })
    }

    /// Header, body, receipts, transaction index and logs index of one block.
    fn put_block(
        &self,
        batch: &mut WriteBatch,
        block: &BlockCommit<'_>,
        hash: &B256,
    ) -> Result<(), StoreError> {
        let number = block.header.number;
        let key = schema::block_key(number);
        batch.put_cf(self.cf(Cf::Headers)?, key, codec::encode(block.header));
        batch.put_cf(self.cf(Cf::BlockHashes)?, hash, key);
        batch.put_cf(self.cf(Cf::Bodies)?, key, codec::encode(block.transactions));
        batch.put_cf(self.cf(Cf::Receipts)?, key, codec::encode(block.receipts));

        let tx_index = self.cf(Cf::TxIndex)?;
        for (index, tx_hash) in (0u32..).zip(block.tx_hashes) {
            batch.put_cf(tx_index, tx_hash, schema::encode_tx_location(number, index));
        }

        let logs_index = self.cf(Cf::LogsIndex)?;
        let mut log_index = 0u32;
        for (tx, receipt) in (0u32..).zip(block.receipts) {
            for (in_tx, log) in (0u32..).zip(&receipt.logs) {
                let position = schema::encode_log_position(tx, in_tx);
                let by_address = schema::log_address_prefix(&log.address);
                batch.put_cf(
                    logs_index,
                    schema::log_key(&by_address, number, log_index),
                    position,
                );
                for (topic_position, topic) in (0u8..).zip(log.topics()) {
                    let by_topic = schema::log_topic_prefix(topic_position, topic);
                    batch.put_cf(
                        logs_index,
                        schema::log_key(&by_topic, number, log_index),
                        position,
                    );
                }
                log_index += 1;
            }
        }
        Ok(())
    }

    /// The diff applied to the flat account, storage and code tables.
    fn put_state(&self, batch: &mut WriteBatch, diff: &StateDiff) -> Result<(), StoreError> {
        let accounts = self.cf(Cf::Accounts)?;
        let storage = self.cf(Cf::Storage)?;
        for (address, change) in &diff.accounts {
            // Operations in a batch take effect in order, so slots written after the range
            // tombstone survive it.
            let clear_storage = |batch: &mut WriteBatch| {
                let (start, end) = schema::storage_range(address);
                batch.delete_range_cf(storage, &start[..], &end[..]);
            };
            let Some(account) = &change.info else {
                batch.delete_cf(accounts, address);
                clear_storage(batch);
                continue;
            };
            batch.put_cf(accounts, address, schema::encode_account(account));
            if change.storage_cleared {
                clear_storage(batch);
            }
            for (slot, value) in &change.storage {
                let key = schema::storage_key(address, slot);
                if value.is_zero() {
                    batch.delete_cf(storage, key);
                } else {
                    batch.put_cf(storage, key, schema::encode_storage_value(value));
                }
            }
        }
        let code = self.cf(Cf::Code)?;
        for (code_hash, bytecode) in &diff.codes {
            batch.put_cf(code, code_hash, bytecode);
        }
        Ok(())
    }

    /// The consensus record stored with the head block, if the head was committed with one.
    pub fn consensus_record(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Cf::ConsensusWal, schema::FINALIZED_KEY, |v| Ok(v.to_vec()))
    }

    /// Appends entry `sequence` to the consensus write-ahead log and syncs it to disk before
    /// returning (see the module docs).
    pub fn wal_append(&self, sequence: u64, entry: &[u8]) -> Result<(), StoreError> {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(
                self.cf(Cf::ConsensusWal)?,
                schema::wal_key(sequence),
                entry,
                &options,
            )
            .map_err(|source| StoreError::Db {
                op: "put",
                cf: Cf::ConsensusWal.name(),
                source,
            })
    }

    /// The write-ahead log's entries, in sequence order.
    pub fn wal_entries(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let cf = self.cf(Cf::ConsensusWal)?;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf,
            IteratorMode::From(schema::WAL_PREFIX, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|source| StoreError::Db {
                op: "iterate",
                cf: Cf::ConsensusWal.name(),
                source,
            })?;
            let Some(sequence) = schema::decode_wal_key(&key) else {
                break;
            };
            out.push((sequence, value.to_vec()));
        }
        Ok(out)
    }

    /// Deletes the write-ahead log's entries below `sequence`.
    pub fn wal_truncate(&self, sequence: u64) -> Result<(), StoreError> {
        let cf = self.cf(Cf::ConsensusWal)?;
        self.db
            .delete_range_cf(cf, schema::wal_key(0), schema::wal_key(sequence))
            .map_err(|source| StoreError::Db {
                op: "delete_range",
                cf: Cf::ConsensusWal.name(),
                source,
            })
    }

    /// Number and hash of the last committed block; `None` before genesis.
    pub fn head(&self) -> Result<Option<(u64, B256)>, StoreError> {
        self.get(Cf::Meta, schema::HEAD_KEY, schema::decode_head)
    }

    /// Header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>, StoreError> {
        self.get(Cf::Headers, &schema::block_key(number), decode_codec)
    }

    /// Number of the block with this hash.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>, StoreError> {
        self.get(
            Cf::BlockHashes,
            hash.as_slice(),
            schema::decode_block_number,
        )
    }

    /// Header of the block with this hash.
    pub fn header_by_hash(&self, hash: &B256) -> Result<Option<Header>, StoreError> {
        match self.block_number(hash)? {
            Some(number) => self.header(number),
            None => Ok(None),
        }
    }

    /// Raw EIP-2718 transactions of block `number`, in block order.
    pub fn block_transactions(&self, number: u64) -> Result<Option<Vec<Bytes>>, StoreError> {
        self.get(Cf::Bodies, &schema::block_key(number), decode_codec)
    }

    /// Receipts of block `number`, one per transaction.
    pub fn receipts(&self, number: u64) -> Result<Option<Vec<Receipt>>, StoreError> {
        self.get(Cf::Receipts, &schema::block_key(number), decode_codec)
    }

    /// Block and position of an included transaction.
    pub fn tx_location(&self, tx_hash: &B256) -> Result<Option<TxLocation>, StoreError> {
        let location = self.get(Cf::TxIndex, tx_hash.as_slice(), schema::decode_tx_location)?;
        Ok(location.map(|(block_number, index)| TxLocation {
            block_number,
            index,
        }))
    }

    /// The account at `address` after the head block.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StoreError> {
        self.get(Cf::Accounts, address.as_slice(), schema::decode_account)
    }

    /// A storage slot after the head block; zero when unset.
    pub fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StoreError> {
        let key = schema::storage_key(address, slot);
        Ok(self
            .get(Cf::Storage, &key, schema::decode_storage_value)?
            .unwrap_or_default())
    }

    /// Whether the account at `address` has any nonzero storage slot (one seek).
    pub fn has_storage(&self, address: &Address) -> Result<bool, StoreError> {
        Ok(self
            .iter_account_storage(address)?
            .next()
            .transpose()?
            .is_some())
    }

    /// Bytecode by hash. The empty code is always known.
    pub fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StoreError> {
        if *code_hash == EMPTY_CODE_HASH {
            return Ok(Some(Bytes::new()));
        }
        self.get(Cf::Code, code_hash.as_slice(), |v| {
            Ok(Bytes::copy_from_slice(v))
        })
    }

    /// RLP of a state-commitment trie node.
    pub fn trie_node(&self, hash: &B256) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Cf::TrieNodes, hash.as_slice(), |v| Ok(v.to_vec()))
    }

    /// All accounts, in address order.
    pub fn iter_accounts(
        &self,
    ) -> Result<impl Iterator<Item = Result<(Address, Account), StoreError>> + '_, StoreError> {
        Ok(self.scan(Cf::Accounts, &[], None)?.map(|entry| {
            let (key, value) = entry?;
            if key.len() != 20 {
                return Err(corrupt(Cf::Accounts, &key, "key is not a 20-byte address"));
            }
            let account =
                schema::decode_account(&value).map_err(|r| corrupt(Cf::Accounts, &key, r))?;
            Ok((Address::from_slice(&key), account))
        }))
    }

    /// All nonzero storage slots of all accounts, in (address, slot) order.
    pub fn iter_storage(
        &self,
    ) -> Result<impl Iterator<Item = Result<(Address, U256, U256), StoreError>> + '_, StoreError>
    {
        Ok(self.scan(Cf::Storage, &[], None)?.map(decode_storage_entry))
    }

    /// The nonzero storage slots of one account, in slot order.
    pub fn iter_account_storage(
        &self,
        address: &Address,
    ) -> Result<impl Iterator<Item = Result<(U256, U256), StoreError>> + '_, StoreError> {
        let (start, end) = schema::storage_range(address);
        let entries = self.scan(Cf::Storage, &start, Some(&end))?;
        Ok(entries.map(|entry| decode_storage_entry(entry).map(|(_, slot, value)| (slot, value))))
    }

    /// All stored bytecode, in hash order.
    pub fn iter_codes(
        &self,
    ) -> Result<impl Iterator<Item = Result<(B256, Bytes), StoreError>> + '_, StoreError> {
        Ok(self.scan(Cf::Code, &[], None)?.map(|entry| {
            let (key, value) = entry?;
            if key.len() != 32 {
                return Err(corrupt(Cf::Code, &key, "key is not a 32-byte hash"));
            }
            Ok((B256::from_slice(&key), Bytes::from(value.into_vec())))
        }))
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StoreError::MissingColumnFamily(cf.name()))
    }

    /// Point read of `key`, decoded; a value that does not decode is reported as corrupt.
    fn get<T>(
        &self,
        cf: Cf,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(cf)?, key)
            .map_err(|source| StoreError::Db {
                op: "get",
                cf: cf.name(),
                source,
            })?;
        match value {
            Some(value) => decode(&value)
                .map(Some)
                .map_err(|reason| corrupt(cf, key, reason)),
            None => Ok(None),
        }
    }

    /// Entries with `start <= key < end` (no upper bound when `end` is `None`), in key order.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<RawEntry, StoreError>> + '_, StoreError> {
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end);
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        let name = cf.name();
        Ok(self
            .db
            .iterator_cf_opt(self.cf(cf)?, opts, mode)
            .map(move |entry| {
                entry.map_err(|source| StoreError::Db {
                    op: "iterate",
                    cf: name,
                    source,
                })
            }))
    }
}

impl BlockCommit<'_> {
    /// The parts line up: one hash and one receipt per transaction, counts fit the index
    /// formats, logs have at most four topics.
    fn check_shape(&self) -> Result<(), StoreError> {
        let number = self.header.number;
        let malformed = |reason: String| Err(StoreError::MalformedBlock { number, reason });
        let txs = self.transactions.len();
        if self.tx_hashes.len() != txs || self.receipts.len() != txs {
            return malformed(format!(
                "{txs} transactions, {} hashes and {} receipts",
                self.tx_hashes.len(),
                self.receipts.len()
            ));
        }
        debug_assert!(
            self.transactions
                .iter()
                .zip(self.tx_hashes)
                .all(|(tx, h)| keccak256(tx) == *h),
            "tx_hashes must be the keccak256 of the transactions"
        );
        if u32::try_from(txs).is_err() {
            return malformed(format!("{txs} transactions do not fit the index"));
        }
        let logs: usize = self.receipts.iter().map(|r| r.logs.len()).sum();
        if u32::try_from(logs).is_err() {
            return malformed(format!("{logs} logs do not fit the index"));
        }
        if let Some(log) = self
            .receipts
            .iter()
            .flat_map(|r| &r.logs)
            .find(|l| !l.data.is_valid())
        {
            return malformed(format!(
                "a log of {} has {} topics",
                log.address,
                log.topics().len()
            ));
        }
        Ok(())
    }
}

fn decode_codec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    codec::decode(bytes).map_err(|e| e.to_string())
}

fn corrupt(cf: Cf, key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        cf: cf.name(),
        key: schema::hex(key),
        reason: reason.into(),
    }
}

fn decode_storage_entry(
    entry: Result<RawEntry, StoreError>,
) -> Result<(Address, U256, U256), StoreError> {
    let (key, value) = entry?;
    let (address, slot) =
        schema::decode_storage_key(&key).map_err(|r| corrupt(Cf::Storage, &key, r))?;
    let value = schema::decode_storage_value(&value).map_err(|r| corrupt(Cf::Storage, &key, r))?;
    Ok((address, slot, value))
}

impl NodeStore for Store {
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, CommitmentError> {
        self.trie_node(hash)
            .map_err(|e| CommitmentError::Store(e.to_string()))
    }
}

impl StateView for Store {
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        Store::account(self, address).map_err(StateError::new)
    }

    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError> {
        Store::storage(self, address, slot).map_err(StateError::new)
    }

    fn has_storage(&self, address: &Address) -> Result<bool, StateError> {
        Store::has_storage(self, address).map_err(StateError::new)
    }

    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        Store::code(self, code_hash).map_err(StateError::new)
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        let header = self.header(number).map_err(StateError::new)?;
        Ok(header.map(|h| h.hash()).unwrap_or_default())
    }
}
