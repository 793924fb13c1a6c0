//! Merkle proofs of accounts and storage slots, shaped like `eth_getProof`.
//!
//! A proof lists the nodes on the key's path from the root down, each as its RLP. Nodes embedded
//! in their parent (under 32 bytes) are not listed separately, as in `eth_getProof`. The same
//! list proves absence: the walk ends at an empty branch slot, at an extension the key leaves,
//! or at a leaf for another key. Verification walks it the same way, trusting nothing but the
//! root: each listed node must hash to the reference that led to it, in order, with no node
//! missing or left over.

use super::node::{decode_node, key_nibbles, Child, Node};
use super::{decode_account, encode_account, storage_key, CommitmentError, NodeStore};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use std::{fmt, mem};
use tessera_primitives::{Account, EMPTY_ROOT_HASH};

/// One account and some of its storage slots, proven against a state root.
///
/// The proof is about `address` and the listed slots; a verifier must check that these are the
/// ones it asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateProof {
    pub address: Address,
    /// Account-trie nodes on the path of `keccak256(address)`, root first.
    pub account_proof: Vec<Bytes>,
    /// The account and its storage root, or `None` for an absent account.
    pub account: Option<(Account, B256)>,
    /// Proofs against the storage root in `account` (the empty root for an absent account).
    pub storage_proofs: Vec<StorageProof>,
}

/// One storage slot, proven against its account's storage root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProof {
    pub slot: U256,
    /// The slot's value; zero for an absent slot.
    pub value: U256,
    /// Storage-trie nodes on the path of `keccak256(slot)`, root first.
    pub proof: Vec<Bytes>,
}

/// Which trie a proof error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofTrie {
    Account,
    Storage(U256),
}

impl fmt::Display for ProofTrie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Account => f.write_str("account trie"),
            Self::Storage(slot) => write!(f, "storage trie (slot {slot})"),
        }
    }
}

/// Why a proof does not establish its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A proof node is not the node its parent (or, for the first one, the root) refers to.
    #[error("{trie}: proof node {index} hashes to {got}, but the path refers to {expected}")]
    HashMismatch {
        trie: ProofTrie,
        index: usize,
        expected: B256,
        got: B256,
    },
    /// The proof ends before the walk reaches the key or shows it absent.
    #[error("{trie}: proof ends early; the node {expected} on the path is missing")]
    Truncated { trie: ProofTrie, expected: B256 },
    /// Nodes follow the end of the walk: not a proof this verifier would produce or accept.
    #[error("{trie}: {count} proof node(s) beyond the end of the path")]
    ExtraNodes { trie: ProofTrie, count: usize },
    /// A proof node does not decode as a node at its position.
    #[error("{trie}: proof node {index} is malformed: {reason}")]
    MalformedNode {
        trie: ProofTrie,
        index: usize,
        reason: String,
    },
    /// The proof shows a different account (or presence or absence) than claimed.
    #[error("account {address}: the proof does not show the claimed account")]
    AccountMismatch { address: Address },
    /// The proof shows a different value for the slot than claimed.
    #[error("storage slot {slot}: the proof does not show the claimed value {claimed}")]
    StorageMismatch { slot: U256, claimed: U256 },
}

/// Proves `address` and its `slots` against the state root `root`, whether present or absent.
pub fn prove(
    store: &impl NodeStore,
    root: B256,
    address: Address,
    slots: &[U256],
) -> Result<StateProof, CommitmentError> {
    let (account_proof, leaf) = prove_key(store, root, &keccak256(address))?;
    let account = leaf
        .map(|rlp| decode_account(&rlp).map_err(|e| malformed_leaf(&account_proof, "account", e)))
        .transpose()?;
    let storage_root = account.map_or(EMPTY_ROOT_HASH, |(_, storage_root)| storage_root);
    let storage_proofs = slots
        .iter()
        .map(|&slot| {
            let (proof, leaf) = prove_key(store, storage_root, &storage_key(slot))?;
            let value = match leaf {
                Some(rlp) => alloy_rlp::decode_exact(&rlp)
                    .map_err(|e| malformed_leaf(&proof, "storage", e))?,
                None => U256::ZERO,
            };
            Ok(StorageProof { slot, value, proof })
        })
        .collect::<Result<_, CommitmentError>>()?;
    Ok(StateProof {
        address,
        account_proof,
        account,
        storage_proofs,
    })
}

/// Checks every claim of `proof` (the account, or its absence, and each slot's value, zero
/// meaning absent) against the state root `root`, using only the nodes in the proof.
pub fn verify_proof(root: B256, proof: &StateProof) -> Result<(), ProofError> {
    let trie = ProofTrie::Account;
    let leaf = verify_key(root, &keccak256(proof.address), &proof.account_proof, trie)?;
    let claimed = proof
        .account
        .map(|(account, storage_root)| encode_account(&account, storage_root));
    if leaf != claimed {
        return Err(ProofError::AccountMismatch {
            address: proof.address,
        });
    }
    let storage_root = proof
        .account
        .map_or(EMPTY_ROOT_HASH, |(_, storage_root)| storage_root);
    for StorageProof {
        slot,
        value,
        proof: nodes,
    } in &proof.storage_proofs
    {
        let trie = ProofTrie::Storage(*slot);
        let leaf = verify_key(storage_root, &storage_key(*slot), nodes, trie)?;
        // Compare encodings, so that only the canonical encoding of the value is accepted.
        let claimed = (!value.is_zero()).then(|| alloy_rlp::encode(value));
        if leaf != claimed {
            return Err(ProofError::StorageMismatch {
                slot: *slot,
                claimed: *value,
            });
        }
    }
    Ok(())
}

/// The path of `key` from `root`, collected from the store.
pub(super) fn prove_key(
    store: &impl NodeStore,
    root: B256,
    key: &B256,
) -> Result<(Vec<Bytes>, Option<Vec<u8>>), CommitmentError> {
    let mut proof = Vec::new();
    let leaf = walk(root, key, |hash, remaining| {
        let rlp = store
            .node(&hash)?
            .ok_or(CommitmentError::MissingNode(hash))?;
        let node = decode_node(&rlp, remaining)
            .map_err(|reason| CommitmentError::MalformedNode { hash, reason })?;
        proof.push(Bytes::from(rlp));
        Ok(node)
    })?;
    Ok((proof, leaf))
}

/// The value the proof shows for `key` under `root`, or `None` when it shows the key absent.
pub(super) fn verify_key(
    root: B256,
    key: &B256,
    proof: &[Bytes],
    trie: ProofTrie,
) -> Result<Option<Vec<u8>>, ProofError> {
    let mut nodes = proof.iter().enumerate();
    let leaf = walk(root, key, |expected, remaining| {
        let (index, rlp) = nodes
            .next()
            .ok_or(ProofError::Truncated { trie, expected })?;
        let got = keccak256(rlp);
        if got != expected {
            return Err(ProofError::HashMismatch {
                trie,
                index,
                expected,
                got,
            });
        }
        decode_node(rlp, remaining).map_err(|reason| ProofError::MalformedNode {
            trie,
            index,
            reason,
        })
    })?;
    match nodes.count() {
        0 => Ok(leaf),
        count => Err(ProofError::ExtraNodes { trie, count }),
    }
}

/// Follows `key` down from `root`, getting each hashed node from `fetch` (given its hash and the
/// number of key nibbles left at it). Returns the key's value, or `None` where the path shows
/// the key absent.
fn walk<E>(
    root: B256,
    key: &B256,
    mut fetch: impl FnMut(B256, usize) -> Result<Node, E>,
) -> Result<Option<Vec<u8>>, E> {
    let nibbles = key_nibbles(key);
    let mut rest = &nibbles[..];
    let mut next = if root == EMPTY_ROOT_HASH {
        Child::Empty
    } else {
        Child::Stored(root)
    };
    loop {
        let node = match next {
            Child::Empty => return Ok(None),
            Child::Stored(hash) => fetch(hash, rest.len())?,
            Child::Node { node, .. } => *node,
        };
        match node {
            Node::Leaf { path, value } => return Ok((path == rest).then_some(value)),
            Node::Extension { path, child } => match rest.strip_prefix(path.as_slice()) {
                Some(after) => (rest, next) = (after, child),
                None => return Ok(None),
            },
            Node::Branch { mut children } => match rest.split_first() {
                Some((&nibble, after)) => {
                    (rest, next) = (after, mem::take(&mut children[usize::from(nibble)]));
                }
                // The decoder rejects a branch where no nibble is left.
                None => return Ok(None),
            },
        }
    }
}

fn malformed_leaf(proof: &[Bytes], what: &str, error: alloy_rlp::Error) -> CommitmentError {
    // The leaf sits in the last node of the path (itself, or embedded in it).
    let hash = proof.last().map(keccak256).unwrap_or_default();
    CommitmentError::MalformedNode {
        hash,
        reason: format!("{what} leaf value: {error}"),
    }
}
