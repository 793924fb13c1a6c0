use crate::{codec, ids::ShardId};
use alloy_primitives::{keccak256, Address, Bloom, Bytes, Log, B256};
use serde::{Deserialize, Serialize};

/// A shard block header. Its hash is keccak256 of its canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub shard: ShardId,
    pub number: u64,
    pub parent_hash: B256,
    pub timestamp: u64,
    pub beneficiary: Address,
    pub gas_limit: u64,
    pub gas_used: u64,
    pub base_fee: u64,
    /// Root of the shard's state commitment after this block.
    pub state_root: B256,
    /// Ethereum-style root of the block's transactions (ordered trie of their EIP-2718 bytes).
    pub transactions_root: B256,
    /// Ethereum-style root of the block's receipts.
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> B256 {
        keccak256(codec::encode(self))
    }
}

/// How a transaction that was included ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    Success,
    /// REVERT: state rolled back, remaining gas returned, revert data in `output`.
    Revert,
    /// Exceptional halt (out of gas, invalid opcode, ...): all gas consumed.
    Halt,
}

/// Receipt of one included transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// EIP-2718 type of the transaction.
    pub tx_type: u8,
    pub status: TxStatus,
    /// Gas charged to the sender for this transaction (after refunds).
    pub gas_used: u64,
    pub cumulative_gas_used: u64,
    pub effective_gas_price: u128,
    pub logs: Vec<Log>,
    /// Address of the contract a creation deployed.
    pub contract_address: Option<Address>,
    /// Return data, or revert data when `status` is `Revert`.
    pub output: Bytes,
}

impl Receipt {
    /// Bloom filter over this receipt's logs.
    pub fn bloom(&self) -> Bloom {
        let mut bloom = Bloom::default();
        for log in &self.logs {
            bloom.accrue_log(log);
        }
        bloom
    }
}
