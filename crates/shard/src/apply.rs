//! Applying a block to a shard: execute its transactions on the stored state, update the state
//! commitment, build the header that carries the new root, and commit everything in one RocksDB
//! write batch. Pure with respect to time: everything that decides the result is in the input.

use crate::{
    commitment::{self, CommitmentError},
    store::{BlockCommit, Store, StoreError},
};
use alloy_primitives::{Address, Bytes, B256};
use alloy_rlp::BufMut;
use tessera_execution::{
    execute_block_parallel, BlockEnv, BlockOutput, ChainRules, ExecError, ParallelConfig,
    RecoveredTx, TxOutcome,
};
use tessera_primitives::{Header, ShardId, StateDiff, EMPTY_ROOT_HASH};

/// Failures while applying a block. A refused transaction is not one of them: it is reported
/// in the block output and left out of the block.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Execution(#[from] ExecError),
    #[error(transparent)]
    Commitment(#[from] CommitmentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {number} does not follow the head {head:?}")]
    NotNext { number: u64, head: Option<u64> },
}

/// What the proposer (or the consensus layer) decided about a block, besides its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTemplate {
    pub shard: ShardId,
    pub timestamp: u64,
    pub beneficiary: Address,
    pub gas_limit: u64,
    pub base_fee: u64,
}

/// A block as committed, with the execution results that went into it.
#[derive(Debug, Clone)]
pub struct AppliedBlock {
    pub header: Header,
    pub output: BlockOutput,
}

/// Commits the genesis block (number 0): `alloc` becomes the initial state.
pub fn commit_genesis(
    store: &Store,
    shard: ShardId,
    gas_limit: u64,
    base_fee: u64,
    timestamp: u64,
    alloc: &StateDiff,
) -> Result<Header, ApplyError> {
    if let Some((number, _)) = store.head()? {
        return Err(ApplyError::NotNext {
            number: 0,
            head: Some(number),
        });
    }
    let update = commitment::apply_diff(store, EMPTY_ROOT_HASH, alloc)?;
    let header = Header {
        shard,
        number: 0,
        parent_hash: B256::ZERO,
        timestamp,
        beneficiary: Address::ZERO,
        gas_limit,
        gas_used: 0,
        base_fee,
        state_root: update.root,
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Default::default(),
    };
    store.commit_block(BlockCommit {
        header: &header,
        transactions: &[],
        tx_hashes: &[],
        receipts: &[],
        diff: alloc,
        trie_nodes: &update.nodes,
        consensus: None,
    })?;
    Ok(header)
}

/// Executes `txs` as the next block on top of the store's head (with Block-STM as `execution`
/// says) and commits it atomically, together with the consensus layer's `consensus` record of
/// the block when there is one. Transactions the executor refuses are left out of the block
/// (see `output.outcomes`).
pub fn apply_block(
    store: &Store,
    rules: &ChainRules,
    template: &BlockTemplate,
    txs: &[RecoveredTx],
    execution: ParallelConfig,
    consensus: Option<&[u8]>,
) -> Result<AppliedBlock, ApplyError> {
    let (head_number, head_hash) = store.head()?.ok_or(ApplyError::NotNext {
        number: 0,
        head: None,
    })?;
    let parent = store.header(head_number)?.ok_or(ApplyError::NotNext {
        number: head_number + 1,
        head: Some(head_number),
    })?;
    let number = head_number + 1;
    let env = BlockEnv {
        number,
        timestamp: template.timestamp,
        beneficiary: template.beneficiary,
        gas_limit: template.gas_limit,
        base_fee: template.base_fee,
        // Tessera has no beacon chain; PREVRANDAO is the parent hash, which every validator
        // agrees on (and which, like any on-chain value, is not a source of secure randomness).
        prevrandao: Some(head_hash),
        difficulty: Default::default(),
        excess_blob_gas: None,
    };
    let output = execute_block_parallel(rules, &env, txs, store, execution)?;
    let update = commitment::apply_diff(store, parent.state_root, &output.diff)?;

    let mut transactions: Vec<Bytes> = Vec::with_capacity(txs.len());
    let mut tx_hashes = Vec::with_capacity(txs.len());
    let mut receipts = Vec::with_capacity(txs.len());
    for (tx, outcome) in txs.iter().zip(&output.outcomes) {
        if let TxOutcome::Included(receipt) = outcome {
            transactions.push(tx.encoded());
            tx_hashes.push(tx.hash);
            receipts.push(receipt.clone());
        }
    }
    let header = Header {
        shard: template.shard,
        number,
        parent_hash: head_hash,
        timestamp: template.timestamp,
        beneficiary: template.beneficiary,
        gas_limit: template.gas_limit,
        gas_used: output.gas_used,
        base_fee: template.base_fee,
        state_root: update.root,
        transactions_root: alloy_trie::root::ordered_trie_root_with_encoder(
            &transactions,
            |t, buf| buf.put_slice(t),
        ),
        receipts_root: output.receipts_root(),
        logs_bloom: output.logs_bloom(),
    };
    store.commit_block(BlockCommit {
        header: &header,
        transactions: &transactions,
        tx_hashes: &tx_hashes,
        receipts: &receipts,
        diff: &output.diff,
        trie_nodes: &update.nodes,
        consensus,
    })?;
    Ok(AppliedBlock { header, output })
}
