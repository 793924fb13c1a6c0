//! GeneralStateTests: every (fork, data, gas, value) case is the transaction in `txbytes`,
//! decoded and executed by Tessera on the `pre` state, then checked against the expected state
//! root and logs hash, or expected to be refused when `expectException` is set.

use crate::Tally;
use alloy_primitives::{keccak256, Address, B256, U256};
use revm_statetest_types::{SpecName, Test, TestUnit};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};
use tessera_execution::{
    execute_block, execute_block_parallel_with_stats, first_difference, mem::MemState,
    receipts::logs_hash, BlockEnv, ChainRules, Fork, ParallelConfig, RecoveredTx, StateError,
    StateView, TxOutcome,
};
use tessera_primitives::{Account, Bytes};

/// The pre-state of a test, with the test suite's convention for BLOCKHASH
/// (keccak256 of the decimal block number).
struct TestState(MemState);

impl StateView for TestState {
    fn account(&self, a: &Address) -> Result<Option<Account>, StateError> {
        self.0.account(a)
    }
    fn storage(&self, a: &Address, s: &U256) -> Result<U256, StateError> {
        self.0.storage(a, s)
    }
    fn has_storage(&self, a: &Address) -> Result<bool, StateError> {
        self.0.has_storage(a)
    }
    fn code(&self, h: &B256) -> Result<Option<Bytes>, StateError> {
        self.0.code(h)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Ok(keccak256(number.to_string().as_bytes()))
    }
}

/// Collects `*.json` files under `paths`, sorted so that runs are reproducible.
pub fn json_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out.sort();
    out
}

/// Forks whose rules Tessera's executor implements, by state-test name.
fn supported_fork(name: &SpecName) -> Result<Fork, String> {
    Ok(match name {
        SpecName::Frontier => Fork::Frontier,
        SpecName::Homestead => Fork::Homestead,
        SpecName::EIP150 => Fork::Tangerine,
        SpecName::EIP158 => Fork::SpuriousDragon,
        SpecName::Byzantium => Fork::Byzantium,
        SpecName::Constantinople => Fork::Constantinople,
        SpecName::ConstantinopleFix => Fork::Petersburg,
        SpecName::Istanbul => Fork::Istanbul,
        SpecName::Berlin => Fork::Berlin,
        SpecName::London => Fork::London,
        SpecName::Paris | SpecName::Merge => Fork::Merge,
        SpecName::Shanghai => Fork::Shanghai,
        SpecName::Cancun => Fork::Cancun,
        SpecName::Prague => Fork::Prague,
        SpecName::Osaka => Fork::Osaka,
        SpecName::Amsterdam => return Err("Amsterdam is not a supported fork yet".into()),
        SpecName::Unknown => return Err("unknown fork name".into()),
        SpecName::FrontierToHomesteadAt5
        | SpecName::HomesteadToDaoAt5
        | SpecName::HomesteadToEIP150At5
        | SpecName::EIP158ToByzantiumAt5
        | SpecName::ByzantiumToConstantinopleFixAt5
        | SpecName::ByzantiumToConstantinopleAt5
        | SpecName::BerlinToLondonAt5 => {
            return Err("fork transitions within one test need a chain of blocks".into())
        }
    })
}

pub fn run(paths: &[PathBuf], parallel: Option<ParallelConfig>) -> Tally {
    let mut tally = Tally::default();
    let mut skip_reasons = BTreeSet::new();
    let mut fallbacks = crate::Fallbacks::default();
    let mut ran = 0;
    for file in json_files(paths) {
        let suite: BTreeMap<String, TestUnit> = match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            })
            .and_then(parse_suite)
        {
            Ok(s) => s,
            Err(e) => {
                println!("FAIL {}: unreadable test file: {e}", file.display());
                tally.failed += 1;
                continue;
            }
        };
        for (name, unit) in &suite {
            let pre = pre_state(unit);
            for (spec_name, cases) in &unit.post {
                let fork = match supported_fork(spec_name) {
                    Ok(s) => s,
                    Err(reason) => {
                        if skip_reasons.insert(format!("{spec_name:?}")) {
                            println!("SKIP fork {spec_name:?}: {reason}");
                        }
                        tally.skipped += cases.len();
                        continue;
                    }
                };
                for case in cases {
                    let id = format!(
                        "{}::{name}::{spec_name:?}[d{} g{} v{}]",
                        file.display(),
                        case.indexes.data,
                        case.indexes.gas,
                        case.indexes.value
                    );
                    ran += 1;
                    match run_case(unit, &pre, fork, case, parallel, &mut fallbacks) {
                        Ok(()) => tally.passed += 1,
                        Err(why) => {
                            println!("FAIL {id}: {why}");
                            tally.failed += 1;
                        }
                    }
                }
            }
        }
    }
    if parallel.is_some() {
        fallbacks.print(ran);
    }
    tally
}

/// Parses a test file. Values wider than 256 bits (written `0x:bigint 0x...`) can only occur in
/// the `transaction` template, which the runner does not execute (it decodes `txbytes`, where
/// such a value makes the RLP undecodable); they are read as zero so the file still loads.
fn parse_suite(mut json: serde_json::Value) -> Result<BTreeMap<String, TestUnit>, String> {
    if let Some(units) = json.as_object_mut() {
        for unit in units.values_mut() {
            if let Some(values) = unit
                .pointer_mut("/transaction/value")
                .and_then(|v| v.as_array_mut())
            {
                for v in values {
                    if v.as_str().is_some_and(|s| s.starts_with("0x:bigint ")) {
                        *v = serde_json::Value::String("0x00".into());
                    }
                }
            }
        }
    }
    serde_json::from_value(json).map_err(|e| e.to_string())
}

fn pre_state(unit: &TestUnit) -> MemState {
    let mut state = MemState::default();
    for (address, info) in &unit.pre {
        let code_hash = keccak256(&info.code);
        if !info.code.is_empty() {
            state.codes.insert(code_hash, info.code.clone());
        }
        state.accounts.insert(
            *address,
            Account {
                nonce: info.nonce,
                balance: info.balance,
                code_hash,
            },
        );
        let slots: tessera_execution::mem::Slots = info
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (*k, *v))
            .collect();
        if !slots.is_empty() {
            state.storage.insert(*address, slots);
        }
    }
    state
}

fn block_env(unit: &TestUnit) -> BlockEnv {
    let env = &unit.env;
    BlockEnv {
        number: env.current_number.saturating_to(),
        timestamp: env.current_timestamp.saturating_to(),
        beneficiary: env.current_coinbase,
        gas_limit: env.current_gas_limit.saturating_to(),
        base_fee: env.current_base_fee.unwrap_or_default().saturating_to(),
        prevrandao: env.current_random,
        difficulty: env.current_difficulty,
        excess_blob_gas: env.current_excess_blob_gas.map(|e| e.saturating_to()),
    }
}

fn run_case(
    unit: &TestUnit,
    pre: &MemState,
    fork: Fork,
    case: &Test,
    parallel: Option<ParallelConfig>,
    fallbacks: &mut crate::Fallbacks,
) -> Result<(), String> {
    let rules = ChainRules {
        chain_id: unit
            .env
            .current_chain_id
            .map(|c| c.saturating_to())
            .unwrap_or(1),
        fork,
    };
    let expect_exception = case.expect_exception.is_some();
    let txbytes = case.txbytes.as_ref().ok_or("case has no txbytes")?;
    let tx = match RecoveredTx::decode(txbytes) {
        Ok(tx) => tx,
        Err(e) if expect_exception => {
            let _ = e;
            return Ok(());
        }
        Err(e) => return Err(format!("transaction refused at decoding: {e}")),
    };
    let state = TestState(pre.clone());
    let txs = std::slice::from_ref(&tx);
    let output = execute_block(&rules, &block_env(unit), txs, &state)
        .map_err(|e| format!("execution error: {e}"))?;
    if let Some(config) = parallel {
        let (parallel_output, stats) =
            execute_block_parallel_with_stats(&rules, &block_env(unit), txs, &state, config)
                .map_err(|e| format!("parallel execution error: {e}"))?;
        fallbacks.note(&stats);
        if let Some(difference) = first_difference(&output, &parallel_output) {
            return Err(format!("parallel differs from sequential: {difference}"));
        }
    }
    let receipt = match (&output.outcomes[0], expect_exception) {
        (TxOutcome::Rejected(_), true) => return Ok(()),
        (TxOutcome::Rejected(r), false) => return Err(format!("transaction refused: {r}")),
        (TxOutcome::Included(_), true) => {
            return Err(format!(
                "expected exception {} but the transaction was included",
                case.expect_exception.as_deref().unwrap_or_default()
            ))
        }
        (TxOutcome::Included(r), false) => r,
    };
    let got_logs = logs_hash(&receipt.logs);
    if got_logs != case.logs {
        return Err(format!("logs hash {got_logs} != expected {}", case.logs));
    }
    let mut post = state.0;
    post.apply(&output.diff);
    let root = post.state_root();
    if root != case.hash {
        return Err(format!("state root {root} != expected {}", case.hash));
    }
    Ok(())
}
