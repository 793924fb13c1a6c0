//! The per-shard state commitment: an Ethereum Merkle-Patricia trie, updated incrementally.
//!
//! # What is committed
//! The same structure, encoding and roots as Ethereum's state trie, so that a shard's state
//! root means what Ethereum tooling expects and proofs have the shape of `eth_getProof`:
//! - The account trie maps `keccak256(address)` to `rlp([nonce, balance, storage_root,
//!   code_hash])`. Code is committed through `code_hash`; the code itself lives in the flat
//!   tables.
//! - Each account's storage trie maps `keccak256(slot as 32 bytes big-endian)` to `rlp(value)`
//!   (minimal big-endian); a zero value is an absent slot.
//! - Hexary nodes: leaf and extension with hex-prefix paths, 17-item branch; a node whose RLP
//!   is under 32 bytes is embedded in its parent instead of referenced by hash. With hashed,
//!   32-byte keys that only happens deep in the trie (a leaf needs roughly ten shared leading
//!   nibbles before it is that short), but the encoding handles it wherever it occurs.
//!
//! # Incremental updates
//! [`apply_diff`] opens the tries at the previous roots and loads only the nodes on the paths
//! of changed keys. All changes of one diff are applied in memory, then each changed node is
//! encoded and hashed once. The cost is proportional to the changed keys times the trie depth
//! (about log16 of the number of keys), not to the state size.
//!
//! # Node storage
//! Nodes are content-addressed: stored under keccak256 of their RLP through [`NodeStore`]. An
//! update only adds nodes and nothing is ever deleted, so every past root stays readable (for
//! historical proofs) and a crash between writing nodes and recording the new root is harmless.
//! The price is that the store grows with every block: pruning unreachable nodes (by reference
//! counts or by copying live nodes forward) is later work.
//!
//! # Checking
//! [`state_root_from_scratch`] computes a root with alloy-trie's `HashBuilder`, an independent
//! implementation, and the tests compare the two on random and adversarial states.

mod node;
mod proof;
mod trie;

#[cfg(test)]
mod tests;

pub use proof::{prove, verify_proof, ProofError, ProofTrie, StateProof, StorageProof};

use alloy_primitives::{keccak256, map::B256Map, Address, B256, U256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use alloy_trie::{HashBuilder, Nibbles};
use std::collections::BTreeMap;
use tessera_primitives::{Account, StateDiff, EMPTY_ROOT_HASH};
use trie::{NodeSink, Trie};

/// Errors of the state commitment.
#[derive(Debug, thiserror::Error)]
pub enum CommitmentError {
    /// A node referenced by hash is not in the node store: the store is corrupt or incomplete.
    #[error("trie node {0} missing from the node store")]
    MissingNode(B256),
    /// A stored node does not decode.
    #[error("trie node {hash} is malformed: {reason}")]
    MalformedNode { hash: B256, reason: String },
    /// The node store failed.
    #[error("node store: {0}")]
    Store(String),
}

/// Where trie nodes live, content-addressed by keccak256 of their RLP encoding.
/// RocksDB implements it in `store`; [`MemNodeStore`] keeps nodes in memory for tools and benches.
pub trait NodeStore {
    /// The RLP of the node with this hash, if stored.
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, CommitmentError>;
}

/// The outcome of [`apply_diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentUpdate {
    /// The new state root.
    pub root: B256,
    /// Every node, as (keccak256 of its RLP, RLP), that the store needs for `root` to be complete,
    /// given the nodes of the previous root. Each appears once, children before parents. A node
    /// may already be in the store (for example when a value returns to an earlier one); writing
    /// it again is harmless.
    pub nodes: Vec<(B256, Vec<u8>)>,
}

/// Trie nodes in a hash map, for tests, benches and tools. Like every [`NodeStore`], it only grows.
#[derive(Debug, Clone, Default)]
pub struct MemNodeStore {
    nodes: B256Map<Vec<u8>>,
}

impl MemNodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the nodes of `update`, after which its root can be read, proven and updated.
    pub fn insert(&mut self, update: &CommitmentUpdate) {
        for (hash, rlp) in &update.nodes {
            self.nodes.entry(*hash).or_insert_with(|| rlp.clone());
        }
    }

    /// Number of stored nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Adds (hash, RLP) pairs without copying them, e.g. `store.extend(update.nodes)`.
impl Extend<(B256, Vec<u8>)> for MemNodeStore {
    fn extend<I: IntoIterator<Item = (B256, Vec<u8>)>>(&mut self, nodes: I) {
        self.nodes.extend(nodes);
    }
}

impl NodeStore for MemNodeStore {
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, CommitmentError> {
        Ok(self.nodes.get(hash).cloned())
    }
}

/// Applies `diff` to the state with root `root` (`EMPTY_ROOT_HASH` for the empty state), reading
/// nodes from `store`, and returns the new root with the nodes to add to the store.
///
/// For each changed account: a deletion (`info: None`) removes its leaf, storage included.
/// Otherwise its storage trie is opened at the storage root in its current leaf (or empty, for a
/// new account or when `storage_cleared`), the slot changes are applied (zero deletes), and the
/// leaf is rewritten with the new storage root. `diff.codes` needs no work: code is committed by
/// the `code_hash` in the account.
pub fn apply_diff(
    store: &impl NodeStore,
    root: B256,
    diff: &StateDiff,
) -> Result<CommitmentUpdate, CommitmentError> {
    let mut sink = NodeSink::default();
    let mut accounts = Trie::open(store, root);
    for (address, change) in &diff.accounts {
        let key = keccak256(address);
        let Some(info) = change.info else {
            accounts.remove(&key)?;
            continue;
        };
        let previous_storage_root = if change.storage_cleared {
            EMPTY_ROOT_HASH
        } else {
            match accounts.get(&key)? {
                Some(leaf) => {
                    decode_account(&leaf)
                        .map_err(|e| malformed_account(root, address, e))?
                        .1
                }
                None => EMPTY_ROOT_HASH,
            }
        };
        let storage_root = if change.storage.is_empty() {
            previous_storage_root
        } else {
            let mut storage = Trie::open(store, previous_storage_root);
            for (slot, value) in &change.storage {
                let slot_key = storage_key(*slot);
                if value.is_zero() {
                    storage.remove(&slot_key)?;
                } else {
                    storage.insert(&slot_key, alloy_rlp::encode(value))?;
                }
            }
            storage.commit(&mut sink)
        };
        accounts.insert(&key, encode_account(&info, storage_root))?;
    }
    let root = accounts.commit(&mut sink);
    Ok(CommitmentUpdate {
        root,
        nodes: sink.into_nodes(),
    })
}

/// The account at `address` and its storage root in the state with root `root`, read through
/// the trie: any root whose nodes are stored can be read, which is how historical state is
/// served.
pub fn read_account(
    store: &impl NodeStore,
    root: B256,
    address: &Address,
) -> Result<Option<(Account, B256)>, CommitmentError> {
    let leaf = Trie::open(store, root).get(&keccak256(address))?;
    leaf.map(|rlp| decode_account(&rlp).map_err(|e| malformed_account(root, address, e)))
        .transpose()
}

/// A storage slot's value in the storage trie with root `storage_root`; zero when absent.
pub fn read_storage(
    store: &impl NodeStore,
    storage_root: B256,
    slot: U256,
) -> Result<U256, CommitmentError> {
    match Trie::open(store, storage_root).get(&storage_key(slot))? {
        Some(rlp) => alloy_rlp::decode_exact(&rlp).map_err(|e| CommitmentError::MalformedNode {
            hash: storage_root,
            reason: format!("storage leaf of slot {slot}: {e}"),
        }),
        None => Ok(U256::ZERO),
    }
}

/// An account leaf that does not decode; the state root names the trie it is in.
fn malformed_account(root: B256, address: &Address, error: alloy_rlp::Error) -> CommitmentError {
    CommitmentError::MalformedNode {
        hash: root,
        reason: format!("account leaf of {address} under this state root: {error}"),
    }
}

/// The state root of the given accounts (with their storage; zero-valued slots are ignored),
/// computed from scratch with alloy-trie's `HashBuilder`: an implementation independent of the
/// incremental trie, for cross-checking it. If an address repeats, the last entry counts.
pub fn state_root_from_scratch(
    accounts: impl IntoIterator<Item = (Address, Account, BTreeMap<U256, U256>)>,
) -> B256 {
    let leaves: BTreeMap<B256, Vec<u8>> = accounts
        .into_iter()
        .map(|(address, account, storage)| {
            let storage_root = storage_root_from_scratch(&storage);
            (keccak256(address), encode_account(&account, storage_root))
        })
        .collect();
    root_from_sorted_leaves(leaves)
}

fn storage_root_from_scratch(storage: &BTreeMap<U256, U256>) -> B256 {
    let leaves: BTreeMap<B256, Vec<u8>> = storage
        .iter()
        .filter(|(_, value)| !value.is_zero())
        .map(|(slot, value)| (storage_key(*slot), alloy_rlp::encode(value)))
        .collect();
    root_from_sorted_leaves(leaves)
}

fn root_from_sorted_leaves(leaves: BTreeMap<B256, Vec<u8>>) -> B256 {
    let mut builder = HashBuilder::default();
    for (key, value) in &leaves {
        builder.add_leaf(Nibbles::unpack(key), value);
    }
    // `HashBuilder::root` of no leaves is the empty root as well.
    builder.root()
}

/// The storage-trie key of a slot.
fn storage_key(slot: U256) -> B256 {
    keccak256(slot.to_be_bytes::<32>())
}

/// An account leaf's value, as Ethereum lays it out.
#[derive(RlpEncodable, RlpDecodable)]
struct AccountLeaf {
    nonce: u64,
    balance: U256,
    storage_root: B256,
    code_hash: B256,
}

fn encode_account(account: &Account, storage_root: B256) -> Vec<u8> {
    alloy_rlp::encode(AccountLeaf {
        nonce: account.nonce,
        balance: account.balance,
        storage_root,
        code_hash: account.code_hash,
    })
}

fn decode_account(rlp: &[u8]) -> Result<(Account, B256), alloy_rlp::Error> {
    let leaf: AccountLeaf = alloy_rlp::decode_exact(rlp)?;
    let account = Account {
        nonce: leaf.nonce,
        balance: leaf.balance,
        code_hash: leaf.code_hash,
    };
    Ok((account, leaf.storage_root))
}
