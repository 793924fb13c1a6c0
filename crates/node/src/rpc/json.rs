//! The JSON shapes Ethereum clients expect for blocks, transactions, receipts and logs, with
//! geth's field names and hex quantities.

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, B256};
use serde_json::{json, Value};
use tessera_execution::RecoveredTx;
use tessera_primitives::{Header, Receipt, TxStatus};
use tessera_shard::store::LogEntry;

/// keccak256(rlp([])): the uncles hash of a block without uncles.
const EMPTY_UNCLES_HASH: &str =
    "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347";

pub fn qty(n: impl Into<u128>) -> String {
    format!("{:#x}", n.into())
}

/// Where a mined transaction is.
#[derive(Debug, Clone, Copy)]
pub struct TxPlace {
    pub block_hash: B256,
    pub block_number: u64,
    pub index: u32,
    pub base_fee: u64,
}

pub fn block(header: &Header, hash: B256, transactions: Vec<Value>, size: usize) -> Value {
    json!({
        "number": qty(header.number),
        "hash": hash,
        "parentHash": header.parent_hash,
        "nonce": "0x0000000000000000",
        "sha3Uncles": EMPTY_UNCLES_HASH,
        "logsBloom": header.logs_bloom,
        "transactionsRoot": header.transactions_root,
        "stateRoot": header.state_root,
        "receiptsRoot": header.receipts_root,
        "miner": header.beneficiary,
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "size": qty(size as u64),
        "gasLimit": qty(header.gas_limit),
        "gasUsed": qty(header.gas_used),
        "timestamp": qty(header.timestamp),
        "transactions": transactions,
        "uncles": [],
        "baseFeePerGas": qty(header.base_fee),
        // PREVRANDAO is the parent hash (see tessera-shard's apply).
        "mixHash": header.parent_hash,
        "withdrawals": [],
        "withdrawalsRoot": tessera_primitives::EMPTY_ROOT_HASH,
        "blobGasUsed": "0x0",
        "excessBlobGas": "0x0",
        "shard": qty(header.shard.0 as u64),
    })
}

/// A transaction object; `place` is `None` while it is pending.
pub fn transaction(tx: &RecoveredTx, place: Option<TxPlace>) -> Value {
    let env = &tx.envelope;
    let sig = env.signature();
    let parity = sig.v() as u64;
    let mut obj = json!({
        "hash": tx.hash,
        "nonce": qty(env.nonce()),
        "blockHash": place.map(|p| p.block_hash),
        "blockNumber": place.map(|p| qty(p.block_number)),
        "transactionIndex": place.map(|p| qty(p.index as u64)),
        "from": tx.sender,
        "to": env.to(),
        "value": format!("{:#x}", env.value()),
        "gas": qty(env.gas_limit()),
        "input": env.input(),
        "r": format!("{:#x}", sig.r()),
        "s": format!("{:#x}", sig.s()),
        "type": qty(env.tx_type() as u8 as u64),
    });
    let map = obj.as_object_mut().expect("object");
    let gas_price = match place {
        Some(p) => env.effective_gas_price(Some(p.base_fee)),
        None => env.max_fee_per_gas(),
    };
    map.insert("gasPrice".into(), qty(gas_price).into());
    if let Some(chain_id) = env.chain_id() {
        map.insert("chainId".into(), qty(chain_id).into());
    }
    match env {
        TxEnvelope::Legacy(_) => {
            let v = match env.chain_id() {
                Some(id) => id * 2 + 35 + parity,
                None => 27 + parity,
            };
            map.insert("v".into(), qty(v).into());
        }
        _ => {
            map.insert("v".into(), qty(parity).into());
            map.insert("yParity".into(), qty(parity).into());
            if let Some(list) = env.access_list() {
                map.insert(
                    "accessList".into(),
                    serde_json::to_value(list).unwrap_or_default(),
                );
            }
        }
    }
    if env.is_dynamic_fee() {
        map.insert("maxFeePerGas".into(), qty(env.max_fee_per_gas()).into());
        map.insert(
            "maxPriorityFeePerGas".into(),
            qty(env.max_priority_fee_per_gas().unwrap_or_default()).into(),
        );
    }
    if let Some(list) = env.authorization_list() {
        map.insert(
            "authorizationList".into(),
            serde_json::to_value(list).unwrap_or_default(),
        );
    }
    obj
}

pub fn log(entry: &LogEntry) -> Value {
    json!({
        "address": entry.log.address,
        "topics": entry.log.topics(),
        "data": entry.log.data.data,
        "blockNumber": qty(entry.block_number),
        "blockHash": entry.block_hash,
        "transactionHash": entry.tx_hash,
        "transactionIndex": qty(entry.tx_index as u64),
        "logIndex": qty(entry.log_index as u64),
        "removed": false,
    })
}

/// The logs of one receipt with their block context; `first_log_index` is the block-wide index
/// of its first log.
pub fn receipt_logs(
    receipt: &Receipt,
    tx_hash: B256,
    place: TxPlace,
    first_log_index: u32,
) -> Vec<LogEntry> {
    receipt
        .logs
        .iter()
        .enumerate()
        .map(|(i, log)| LogEntry {
            block_number: place.block_number,
            block_hash: place.block_hash,
            tx_index: place.index,
            tx_hash,
            log_index: first_log_index + i as u32,
            log: log.clone(),
        })
        .collect()
}

pub fn receipt(receipt: &Receipt, tx: &RecoveredTx, place: TxPlace, first_log_index: u32) -> Value {
    let env = &tx.envelope;
    let contract_address: Option<Address> = receipt
        .contract_address
        .or_else(|| env.to().is_none().then(|| tx.sender.create(env.nonce())));
    let logs: Vec<Value> = receipt_logs(receipt, tx.hash, place, first_log_index)
        .iter()
        .map(log)
        .collect();
    json!({
        "transactionHash": tx.hash,
        "transactionIndex": qty(place.index as u64),
        "blockHash": place.block_hash,
        "blockNumber": qty(place.block_number),
        "from": tx.sender,
        "to": env.to(),
        "cumulativeGasUsed": qty(receipt.cumulative_gas_used),
        "gasUsed": qty(receipt.gas_used),
        "contractAddress": contract_address,
        "logs": logs,
        "logsBloom": receipt.bloom(),
        "type": qty(receipt.tx_type as u64),
        "status": if receipt.status == TxStatus::Success { "0x1" } else { "0x0" },
        "effectiveGasPrice": qty(receipt.effective_gas_price),
        "blobGasUsed": "0x0",
    })
}

/// Size in bytes of a block as reported in `size`: its transactions plus a header's worth.
pub fn block_size(transactions: &[alloy_primitives::Bytes]) -> usize {
    const HEADER_SIZE: usize = 508;
    HEADER_SIZE + transactions.iter().map(|t| t.len()).sum::<usize>()
}
