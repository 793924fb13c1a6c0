//! Real mainnet blocks: each block's transactions are decoded from their JSON, their senders
//! recovered (and checked against `from`), executed in order on the block's pre-state, and the
//! results compared with the header: gasUsed, logsBloom and, from Byzantium on (before it,
//! receipts carry intermediate state roots), receiptsRoot.

use crate::Tally;
use alloy_consensus::TxEnvelope;
use alloy_primitives::{Address, Bloom, Bytes, B256, U256};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
use tessera_execution::{
    execute_block, execute_block_parallel_with_stats, first_difference, mem::MemState, BlockEnv,
    ChainRules, Fork, ParallelConfig, RecoveredTx, TxOutcome,
};
use tessera_primitives::{Account, EMPTY_CODE_HASH};

const BYZANTIUM_BLOCK: u64 = 4_370_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderJson {
    number: U256,
    timestamp: U256,
    miner: Address,
    gas_limit: U256,
    gas_used: U256,
    difficulty: U256,
    mix_hash: Option<B256>,
    base_fee_per_gas: Option<U256>,
    excess_blob_gas: Option<U256>,
    logs_bloom: Bloom,
    receipts_root: B256,
    transactions: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct PreAccount {
    balance: U256,
    nonce: u64,
    code_hash: Option<B256>,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

/// Ethereum mainnet's fork schedule, by block number and (after the merge) timestamp.
fn mainnet_fork(number: u64, timestamp: u64) -> Fork {
    match (number, timestamp) {
        (_, t) if t >= 1_710_338_135 => Fork::Cancun,
        (_, t) if t >= 1_681_338_455 => Fork::Shanghai,
        (n, _) if n >= 15_537_394 => Fork::Merge,
        (n, _) if n >= 12_965_000 => Fork::London,
        (n, _) if n >= 12_244_000 => Fork::Berlin,
        (n, _) if n >= 9_069_000 => Fork::Istanbul,
        (n, _) if n >= 7_280_000 => Fork::Petersburg,
        (n, _) if n >= BYZANTIUM_BLOCK => Fork::Byzantium,
        (n, _) if n >= 2_675_000 => Fork::SpuriousDragon,
        (n, _) if n >= 2_463_000 => Fork::Tangerine,
        (n, _) if n >= 1_150_000 => Fork::Homestead,
        _ => Fork::Frontier,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Block folders under `dir/blocks`, in block-number order.
fn block_dirs(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let root = dir.join("blocks");
    let entries = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut out: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

pub fn run(dir: &Path, parallel: Option<ParallelConfig>) -> Tally {
    let mut tally = Tally::default();
    let hashes: BTreeMap<u64, B256> =
        match read_json::<BTreeMap<String, B256>>(&dir.join("block_hashes.json")) {
            Ok(m) => m
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect(),
            Err(e) => {
                println!("FAIL {e}");
                tally.failed += 1;
                return tally;
            }
        };
    let dirs = match block_dirs(dir) {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL {e}");
            tally.failed += 1;
            return tally;
        }
    };
    let mut fallbacks = crate::Fallbacks::default();
    let ran = dirs.len();
    for (number, path) in dirs {
        match run_block(&path, &hashes, parallel, &mut fallbacks) {
            Ok(()) => tally.passed += 1,
            Err(why) => {
                println!("FAIL block {number}: {why}");
                tally.failed += 1;
            }
        }
    }
    if parallel.is_some() {
        fallbacks.print(ran);
    }
    tally
}

/// A mainnet block ready to execute: its rules, environment, pre-state and transactions.
pub struct MainnetBlock {
    pub number: u64,
    pub rules: ChainRules,
    pub env: BlockEnv,
    pub pre: MemState,
    pub txs: Vec<RecoveredTx>,
    header: HeaderJson,
}

/// Every block of a fixture folder, in order.
pub fn load(dir: &Path) -> Result<Vec<MainnetBlock>, String> {
    let hashes: BTreeMap<u64, B256> =
        read_json::<BTreeMap<String, B256>>(&dir.join("block_hashes.json"))?
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
    block_dirs(dir)?
        .into_iter()
        .map(|(number, path)| {
            load_block(&path, &hashes).map_err(|e| format!("block {number}: {e}"))
        })
        .collect()
}

fn run_block(
    path: &Path,
    hashes: &BTreeMap<u64, B256>,
    parallel: Option<ParallelConfig>,
    fallbacks: &mut crate::Fallbacks,
) -> Result<(), String> {
    let MainnetBlock {
        number,
        rules,
        env,
        pre: state,
        txs,
        header: block,
    } = load_block(path, hashes)?;
    let output = execute_block(&rules, &env, &txs, &state).map_err(|e| e.to_string())?;
    if let Some(config) = parallel {
        let (parallel_output, stats) =
            execute_block_parallel_with_stats(&rules, &env, &txs, &state, config)
                .map_err(|e| format!("parallel: {e}"))?;
        fallbacks.note(&stats);
        if let Some(difference) = first_difference(&output, &parallel_output) {
            return Err(format!(
                "parallel ({} threads) differs from sequential: {difference}",
                config.threads
            ));
        }
    }
    for (i, outcome) in output.outcomes.iter().enumerate() {
        if let TxOutcome::Rejected(r) = outcome {
            return Err(format!("tx {i} refused: {r}"));
        }
    }
    let expected_gas: u64 = block.gas_used.saturating_to();
    if output.gas_used != expected_gas {
        return Err(format!(
            "gasUsed {} != header {expected_gas}",
            output.gas_used
        ));
    }
    if output.logs_bloom() != block.logs_bloom {
        return Err("logsBloom differs from the header".into());
    }
    if number >= BYZANTIUM_BLOCK && output.receipts_root() != block.receipts_root {
        return Err(format!(
            "receiptsRoot {} != header {}",
            output.receipts_root(),
            block.receipts_root
        ));
    }
    Ok(())
}

fn load_block(path: &Path, hashes: &BTreeMap<u64, B256>) -> Result<MainnetBlock, String> {
    let block: HeaderJson = read_json(&path.join("block.json"))?;
    let pre: BTreeMap<Address, PreAccount> = read_json(&path.join("pre_state.json"))?;
    let bytecodes: BTreeMap<B256, Bytes> = read_json(&path.join("bytecodes.json"))?;

    let mut state = MemState {
        block_hashes: hashes.clone(),
        ..Default::default()
    };
    for (hash, code) in bytecodes {
        state.codes.insert(hash, code);
    }
    for (address, acc) in pre {
        let code_hash = acc.code_hash.unwrap_or(EMPTY_CODE_HASH);
        state.accounts.insert(
            address,
            Account {
                nonce: acc.nonce,
                balance: acc.balance,
                code_hash,
            },
        );
        let slots: tessera_execution::mem::Slots = acc
            .storage
            .into_iter()
            .filter(|(_, v)| !v.is_zero())
            .collect();
        if !slots.is_empty() {
            state.storage.insert(address, slots);
        }
    }

    let number: u64 = block.number.saturating_to();
    let timestamp: u64 = block.timestamp.saturating_to();
    let fork = mainnet_fork(number, timestamp);
    let mut txs = Vec::with_capacity(block.transactions.len());
    for (i, json) in block.transactions.iter().enumerate() {
        let envelope: TxEnvelope = serde_json::from_value(json.clone())
            .map_err(|e| format!("tx {i}: undecodable: {e}"))?;
        let tx = RecoveredTx::from_envelope(envelope).map_err(|e| format!("tx {i}: {e}"))?;
        let from: Option<Address> = json
            .get("from")
            .and_then(|f| serde_json::from_value(f.clone()).ok());
        if from != Some(tx.sender) {
            return Err(format!(
                "tx {i}: recovered sender {} but the block says {from:?}",
                tx.sender
            ));
        }
        let hash: Option<B256> = json
            .get("hash")
            .and_then(|h| serde_json::from_value(h.clone()).ok());
        if hash != Some(tx.hash) {
            return Err(format!(
                "tx {i}: hash {} but the block says {hash:?}",
                tx.hash
            ));
        }
        txs.push(tx);
    }

    let env = BlockEnv {
        number,
        timestamp,
        beneficiary: block.miner,
        gas_limit: block.gas_limit.saturating_to(),
        base_fee: block.base_fee_per_gas.unwrap_or_default().saturating_to(),
        prevrandao: if fork >= Fork::Merge {
            block.mix_hash
        } else {
            None
        },
        difficulty: block.difficulty,
        excess_blob_gas: block.excess_blob_gas.map(|e| e.saturating_to()),
    };
    let rules = ChainRules { chain_id: 1, fork };
    Ok(MainnetBlock {
        number,
        rules,
        env,
        pre: state,
        txs,
        header: block,
    })
}
