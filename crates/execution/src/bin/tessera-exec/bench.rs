//! `tessera-exec bench`: Block-STM against a plain revm loop over the same in-memory state.
//!
//! Each workload is timed six ways, interleaved run by run so that machine noise falls on all
//! of them alike: the baseline (revm's own `transact_commit` over a `CacheDB`, no Block-STM
//! machinery), Tessera's sequential executor, the parallel executor exactly as the node
//! configures it for one thread (which runs blocks sequentially) and for N threads (Block-STM,
//! unless a block has too few transactions that run the EVM), and Block-STM forced on every
//! block at one worker and at N, which shows what its machinery costs and gains.
//! Senders are recovered before timing for every variant alike (in the node the mempool has
//! already recovered them). Every run's final state and gas are checked against the baseline's,
//! so a fast wrong answer fails the benchmark instead of winning it.

use crate::blocks;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{keccak256, map::HashMap, Address, Bytes, Signature, TxKind, B256, U256};
use revm::{
    bytecode::Bytecode,
    database::{CacheDB, DatabaseRef},
    database_interface::DBErrorMarker,
    state::AccountInfo,
    Context, ExecuteCommitEvm, MainBuilder, MainContext,
};
use secp256k1::{ecdsa::RecoverableSignature, Message, PublicKey, SecretKey};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};
use tessera_execution::{
    cfg_env, execute_block, execute_block_parallel_with_stats, mem::MemState, revm_block_env,
    BlockEnv, BlockOutput, ChainRules, Fork, ParallelConfig, RecoveredTx, TxOutcome,
};
use tessera_primitives::{Account, TxStatus, EMPTY_CODE_HASH};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object per workload and thread count (1 and N) instead of a table.
    #[arg(long)]
    json: bool,
    /// Block-STM worker threads for the parallel runs [default: the available cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs of every variant; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(5..))]
    runs: u32,
    /// Transactions in each synthetic workload.
    #[arg(long, default_value_t = 10_000)]
    txs: usize,
    /// The shared fixtures (contract-bytecode/ERC20Token.hex and mainnet-blocks/).
    #[arg(long, default_value = "../shared/fixtures")]
    fixtures: PathBuf,
    /// Run only these workloads (transfers, erc20, contention, mixed, mainnet).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// For profiling: run only this variant (baseline, sequential, parallel, block-stm: forced
    /// even on one thread) `runs` times at `threads`, checking the first result, and print nothing but failures.
    #[arg(long, hide = true)]
    profile: Option<String>,
}

/// One block of a workload.
struct Case {
    rules: ChainRules,
    env: BlockEnv,
    pre: MemState,
    txs: Vec<RecoveredTx>,
}

struct Workload {
    name: &'static str,
    cases: Vec<Case>,
}

impl Workload {
    fn txs(&self) -> usize {
        self.cases.iter().map(|c| c.txs.len()).sum()
    }
}

const GWEI: u64 = 1_000_000_000;
const TOKEN: Address = Address::new([0xe2; 20]);
const COUNTER: Address = Address::new([0xc0; 20]);
/// SSTORE(0, SLOAD(0) + 1); STOP.
const COUNTER_CODE: [u8; 10] = [0x60, 0x00, 0x54, 0x60, 0x01, 0x01, 0x60, 0x00, 0x55, 0x00];

fn rules() -> ChainRules {
    ChainRules {
        chain_id: 1,
        fork: Fork::Prague,
    }
}

fn block_env() -> BlockEnv {
    BlockEnv {
        number: 1,
        timestamp: 1_700_000_000,
        beneficiary: Address::new([0xfe; 20]),
        // Room for every transaction: the workloads measure execution, not block packing.
        gas_limit: 1 << 40,
        base_fee: GWEI,
        prevrandao: Some(B256::ZERO),
        difficulty: U256::ZERO,
        excess_blob_gas: Some(0),
    }
}

struct Signer {
    key: SecretKey,
    address: Address,
}

fn signer(i: usize) -> Signer {
    let seed = keccak256([b"tessera-bench".as_slice(), &(i as u64).to_be_bytes()].concat());
    let key = SecretKey::from_secret_bytes(seed.0).expect("a keccak digest is a valid key");
    let public = PublicKey::from_secret_key(&key).serialize_uncompressed();
    let address = Address::from_slice(&keccak256(&public[1..])[12..]);
    Signer { key, address }
}

/// A fresh recipient address, distinct per index.
fn recipient(i: usize) -> Address {
    Address::from_slice(
        &keccak256([b"recipient".as_slice(), &(i as u64).to_be_bytes()].concat())[12..],
    )
}

fn sign(from: &Signer, to: Address, value: U256, input: Bytes, gas_limit: u64) -> RecoveredTx {
    let tx = TxEip1559 {
        chain_id: 1,
        nonce: 0,
        gas_limit,
        max_fee_per_gas: 2 * GWEI as u128,
        max_priority_fee_per_gas: GWEI as u128,
        to: TxKind::Call(to),
        value,
        input,
        access_list: Default::default(),
    };
    let digest = Message::from_digest(tx.signature_hash().0);
    let (recid, compact) =
        RecoverableSignature::sign_ecdsa_recoverable(digest, &from.key).serialize_compact();
    let signature = Signature::new(
        U256::from_be_slice(&compact[..32]),
        U256::from_be_slice(&compact[32..]),
        recid.to_u8() == 1,
    );
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    RecoveredTx {
        hash: *envelope.tx_hash(),
        envelope,
        sender: from.address,
    }
}

fn fund(pre: &mut MemState, address: Address) {
    pre.accounts.insert(
        address,
        Account {
            nonce: 0,
            balance: U256::from(10u64).pow(U256::from(19)),
            code_hash: EMPTY_CODE_HASH,
        },
    );
}

fn deploy(pre: &mut MemState, address: Address, code: Bytes) {
    let code_hash = keccak256(&code);
    pre.codes.insert(code_hash, code);
    pre.accounts.insert(
        address,
        Account {
            nonce: 1,
            balance: U256::ZERO,
            code_hash,
        },
    );
}

/// OpenZeppelin's ERC20: `_balances` is the mapping at slot 0.
fn balance_slot(holder: Address) -> U256 {
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(holder.as_slice());
    U256::from_be_bytes(keccak256(key).0)
}

fn erc20_transfer(to: Address, amount: u64) -> Bytes {
    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(to.as_slice());
    input.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    input.into()
}

#[derive(Clone, Copy)]
enum Kind {
    Transfer,
    Erc20,
    Counter,
}

/// `n` transactions from distinct senders, of the kind `kind_of(i)` picks.
fn synthetic(n: usize, token: &Bytes, kind_of: impl Fn(usize) -> Kind) -> Case {
    let mut pre = MemState::default();
    deploy(&mut pre, TOKEN, token.clone());
    deploy(&mut pre, COUNTER, Bytes::from_static(&COUNTER_CODE));
    let mut token_storage = tessera_execution::mem::Slots::default();
    let txs = (0..n)
        .map(|i| {
            let from = signer(i);
            fund(&mut pre, from.address);
            match kind_of(i) {
                Kind::Transfer => sign(&from, recipient(i), U256::from(1), Bytes::new(), 21_000),
                Kind::Erc20 => {
                    token_storage.insert(balance_slot(from.address), U256::from(1_000_000u64));
                    sign(
                        &from,
                        TOKEN,
                        U256::ZERO,
                        erc20_transfer(recipient(i), 1),
                        100_000,
                    )
                }
                Kind::Counter => sign(&from, COUNTER, U256::ZERO, Bytes::new(), 100_000),
            }
        })
        .collect();
    if !token_storage.is_empty() {
        pre.storage.insert(TOKEN, token_storage);
    }
    Case {
        rules: rules(),
        env: block_env(),
        pre,
        txs,
    }
}

/// Which kind of transaction the i-th of a synthetic workload is.
type KindOf = fn(usize) -> Kind;

fn workloads(args: &Args) -> Result<Vec<Workload>, String> {
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let token_path = args.fixtures.join("contract-bytecode/ERC20Token.hex");
    let token_hex = std::fs::read_to_string(&token_path)
        .map_err(|e| format!("{}: {e}", token_path.display()))?;
    let token: Bytes = token_hex
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", token_path.display()))?;
    let n = args.txs;
    let mut out = Vec::new();
    let synthetic_workloads: [(&'static str, KindOf); 4] = [
        ("transfers", |_| Kind::Transfer),
        ("erc20", |_| Kind::Erc20),
        ("contention", |_| Kind::Counter),
        ("mixed", |i| {
            if i % 2 == 0 {
                Kind::Transfer
            } else {
                Kind::Erc20
            }
        }),
    ];
    for (name, kind_of) in synthetic_workloads {
        if wanted(name) {
            out.push(Workload {
                name,
                cases: vec![synthetic(n, &token, kind_of)],
            });
        }
    }
    if wanted("mainnet") {
        let cases = blocks::load(&args.fixtures.join("mainnet-blocks"))?
            .into_iter()
            .map(|b| Case {
                rules: b.rules,
                env: b.env,
                pre: b.pre,
                txs: b.txs,
            })
            .collect();
        out.push(Workload {
            name: "mainnet",
            cases,
        });
    }
    Ok(out)
}

/// Block hashes for the baseline's `CacheDB`; every account is preloaded into the cache.
struct Hashes(BTreeMap<u64, B256>);

#[derive(Debug, thiserror::Error)]
#[error("the baseline asked its backing store for {0}, which the cache should have held")]
struct Missing(&'static str);

impl DBErrorMarker for Missing {}

impl DatabaseRef for Hashes {
    type Error = Missing;

    fn basic_ref(&self, _: Address) -> Result<Option<AccountInfo>, Missing> {
        Ok(None)
    }

    fn code_by_hash_ref(&self, _: B256) -> Result<Bytecode, Missing> {
        Err(Missing("code"))
    }

    fn storage_ref(&self, _: Address, _: U256) -> Result<U256, Missing> {
        Ok(U256::ZERO)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Missing> {
        Ok(self.0.get(&number).copied().unwrap_or_default())
    }
}

/// Final accounts and storage, normalised: an empty account is no account (EIP-161), and zero
/// slots are absent.
type Final = BTreeMap<Address, (Option<Account>, BTreeMap<U256, U256>)>;

fn normal(account: Option<Account>) -> Option<Account> {
    account.filter(|a| !a.is_empty())
}

/// The plain revm loop. Returns its time, the gas it used and the final state.
fn baseline(case: &Case) -> Result<(Duration, u64, Final), String> {
    let mut db = CacheDB::new(Hashes(case.pre.block_hashes.clone()));
    for (address, account) in &case.pre.accounts {
        let code = case
            .pre
            .codes
            .get(&account.code_hash)
            .map(|c| Bytecode::new_raw(c.clone()));
        db.insert_account_info(
            *address,
            AccountInfo {
                balance: account.balance,
                nonce: account.nonce,
                code_hash: account.code_hash,
                code,
                ..Default::default()
            },
        );
    }
    for (address, slots) in &case.pre.storage {
        for (slot, value) in slots {
            db.insert_account_storage(*address, *slot, *value)
                .map_err(|e| e.to_string())?;
        }
    }
    let cfg = cfg_env(&case.rules);
    let block = revm_block_env(&case.env, &cfg);
    let mut evm = Context::mainnet()
        .with_cfg(cfg)
        .with_block(block)
        .with_db(db)
        .build_mainnet();
    let start = Instant::now();
    let gas = baseline_loop(&mut evm, &case.txs)?;
    let elapsed = start.elapsed();
    let state = evm
        .ctx
        .journaled_state
        .database
        .cache
        .accounts
        .iter()
        .map(|(address, account)| {
            let info = account.info().map(|i| Account {
                nonce: i.nonce,
                balance: i.balance,
                code_hash: i.code_hash,
            });
            let storage = account
                .storage
                .iter()
                .map(|(k, v)| (*k, *v))
                .filter(|(_, v)| !v.is_zero())
                .collect();
            (*address, (normal(info), storage))
        })
        .collect();
    Ok((elapsed, gas, state))
}

/// The baseline's timed part: revm's `transact_commit` for every transaction in turn. Not
/// inlined, so that profilers can tell it from the setup around it.
#[inline(never)]
fn baseline_loop<E>(evm: &mut E, txs: &[RecoveredTx]) -> Result<u64, String>
where
    E: ExecuteCommitEvm<
        Tx = revm::context::TxEnv,
        ExecutionResult = revm::context::result::ExecutionResult,
    >,
    E::Error: std::fmt::Display,
{
    let mut gas = 0;
    for (i, tx) in txs.iter().enumerate() {
        let result = evm
            .transact_commit(tx.tx_env())
            .map_err(|e| format!("baseline: tx {i}: {e}"))?;
        gas += result.tx_gas_used();
    }
    Ok(gas)
}

/// Checks a Tessera run of `case` against the baseline's final state and gas.
fn check(case: &Case, output: &BlockOutput, gas: u64, expected: &Final) -> Result<(), String> {
    if output.gas_used != gas {
        return Err(format!("gas used {} != baseline {gas}", output.gas_used));
    }
    if let Some((i, r)) = output
        .outcomes
        .iter()
        .enumerate()
        .find_map(|(i, o)| match o {
            TxOutcome::Rejected(r) => Some((i, r.to_string())),
            TxOutcome::Included(_) => None,
        })
    {
        return Err(format!("tx {i} refused: {r}"));
    }
    let mut post = case.pre.clone();
    post.apply(&output.diff);
    let empty = tessera_execution::mem::Slots::default();
    for address in expected.keys().chain(output.diff.accounts.keys()) {
        let got_account = normal(post.accounts.get(address).copied());
        let got_storage = post.storage.get(address).unwrap_or(&empty);
        let Some((account, storage)) = expected.get(address) else {
            return Err(format!("{address} changed, but not in the baseline"));
        };
        if got_account != *account {
            return Err(format!(
                "{address}: {got_account:?} != baseline {account:?}"
            ));
        }
        let got: HashMap<U256, U256> = got_storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (*k, *v))
            .collect();
        for (slot, value) in storage {
            if got.get(slot) != Some(value) {
                return Err(format!(
                    "{address} slot {slot}: {:?} != baseline {value}",
                    got.get(slot)
                ));
            }
        }
    }
    Ok(())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

struct Measured {
    baseline: Duration,
    sequential: Duration,
    parallel_1: Duration,
    parallel_n: Duration,
    /// Block-STM forced onto one worker, which the node never does: its overhead alone.
    block_stm_1: Duration,
    /// Block-STM at N threads on every block, however few transactions run the EVM.
    block_stm_n: Duration,
    aborts_n: usize,
    fallbacks: usize,
    reverted: usize,
}

fn measure(workload: &Workload, threads: usize, runs: u32) -> Result<Measured, String> {
    let mut reference = Vec::new();
    for case in &workload.cases {
        let (_, gas, state) = baseline(case)?;
        reference.push((gas, state));
    }
    let mut times: [Vec<Duration>; 6] = Default::default();
    let mut aborts_n = Vec::new();
    let mut fallbacks = 0;
    let mut reverted = 0;
    for run in 0..runs {
        let mut total = [Duration::ZERO; 6];
        let mut aborts = 0;
        for (case, (gas, expected)) in workload.cases.iter().zip(&reference) {
            let (t, g, state) = baseline(case)?;
            if g != *gas || state != *expected {
                return Err("the baseline is not deterministic".into());
            }
            total[0] += t;

            let start = Instant::now();
            let output = execute_block(&case.rules, &case.env, &case.txs, &case.pre)
                .map_err(|e| e.to_string())?;
            total[1] += start.elapsed();
            check(case, &output, *gas, expected).map_err(|e| format!("sequential: {e}"))?;
            if run == 0 {
                reverted += output
                    .outcomes
                    .iter()
                    .filter(|o| o.receipt().is_some_and(|r| r.status != TxStatus::Success))
                    .count();
            }

            for (slot, config) in [
                (2, ParallelConfig::with_threads(1)),
                (3, ParallelConfig::with_threads(threads)),
                (4, block_stm(1)),
                (5, block_stm(threads)),
            ] {
                let start = Instant::now();
                let (output, stats) = execute_block_parallel_with_stats(
                    &case.rules,
                    &case.env,
                    &case.txs,
                    &case.pre,
                    config,
                )
                .map_err(|e| e.to_string())?;
                total[slot] += start.elapsed();
                check(case, &output, *gas, expected)
                    .map_err(|e| format!("parallel, {config:?}: {e}"))?;
                if slot == 3 {
                    fallbacks += usize::from(stats.fallback.is_some() && run == 0);
                }
                if slot == 5 {
                    aborts += stats.aborts;
                }
            }
        }
        for (t, v) in total.into_iter().zip(times.iter_mut()) {
            v.push(t);
        }
        aborts_n.push(aborts);
    }
    let [b, s, p1, pn, bs1, bsn] = times.map(median);
    aborts_n.sort();
    Ok(Measured {
        baseline: b,
        sequential: s,
        parallel_1: p1,
        parallel_n: pn,
        block_stm_1: bs1,
        block_stm_n: bsn,
        aborts_n: aborts_n[aborts_n.len() / 2],
        fallbacks,
        reverted,
    })
}

/// Block-STM at `threads` on every block, even one whose transactions are all plain transfers,
/// or on one worker, which the node never does: what its machinery costs and gains.
fn block_stm(threads: usize) -> ParallelConfig {
    ParallelConfig {
        min_txs: 0,
        ..ParallelConfig::with_threads(threads)
    }
}

fn us_per_tx(d: Duration, txs: usize) -> f64 {
    d.as_secs_f64() * 1e6 / txs as f64
}

/// Runs one variant only, for a profiler to look at.
fn profile(workloads: &[Workload], variant: &str, threads: usize, runs: u32) -> Result<(), String> {
    for workload in workloads {
        for case in &workload.cases {
            let (_, gas, expected) = baseline(case)?;
            for run in 0..runs {
                let output = match variant {
                    "baseline" => {
                        baseline(case)?;
                        continue;
                    }
                    "sequential" => execute_block(&case.rules, &case.env, &case.txs, &case.pre),
                    "parallel" | "block-stm" => execute_block_parallel_with_stats(
                        &case.rules,
                        &case.env,
                        &case.txs,
                        &case.pre,
                        if variant == "parallel" {
                            ParallelConfig::with_threads(threads)
                        } else {
                            block_stm(threads)
                        },
                    )
                    .map(|(output, _)| output),
                    other => return Err(format!("unknown variant {other}")),
                }
                .map_err(|e| e.to_string())?;
                if run == 0 {
                    // Only the first: checking costs as much as executing, and would drown
                    // the executor in the profile.
                    check(case, &output, gas, &expected)?;
                }
            }
        }
    }
    Ok(())
}

pub fn run(args: &Args) -> ExitCode {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workloads = match workloads(args) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(variant) = &args.profile {
        return match profile(&workloads, variant, threads, args.runs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.json {
        println!(
            "median of {} runs; µs per transaction (ratio: baseline time / this time)",
            args.runs
        );
        println!(
            "{:<11} {:>6} {:>9} {:>17} {:>17} {:>17} {:>17} {:>17} {:>7}",
            "workload",
            "txs",
            "baseline",
            "sequential",
            "parallel 1t",
            format!("parallel {threads}t"),
            "block-stm 1t",
            format!("block-stm {threads}t"),
            "aborts"
        );
    }
    for workload in &workloads {
        let m = match measure(workload, threads, args.runs) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("bench: {}: {e}", workload.name);
                return ExitCode::FAILURE;
            }
        };
        let txs = workload.txs();
        let base = us_per_tx(m.baseline, txs);
        let cell = |d: Duration| {
            let us = us_per_tx(d, txs);
            format!("{us:.2} ({:.2}x)", base / us)
        };
        if args.json {
            for (n, time, block_stm) in [
                (1, m.parallel_1, m.block_stm_1),
                (threads, m.parallel_n, m.block_stm_n),
            ] {
                let parallel = us_per_tx(time, txs);
                println!(
                    "{}",
                    serde_json::json!({
                        "workload": workload.name,
                        "txs": txs,
                        "threads": n,
                        "baseline_us_per_tx": base,
                        "sequential_us_per_tx": us_per_tx(m.sequential, txs),
                        "parallel_us_per_tx": parallel,
                        "speedup": base / parallel,
                        "block_stm_us_per_tx": us_per_tx(block_stm, txs),
                        "block_stm_1t_us_per_tx": us_per_tx(m.block_stm_1, txs),
                        "runs": args.runs,
                        "fallbacks": m.fallbacks,
                    })
                );
            }
        } else {
            println!(
                "{:<11} {:>6} {:>9.2} {:>17} {:>17} {:>17} {:>17} {:>17} {:>7}",
                workload.name,
                txs,
                base,
                cell(m.sequential),
                cell(m.parallel_1),
                cell(m.parallel_n),
                cell(m.block_stm_1),
                cell(m.block_stm_n),
                m.aborts_n
            );
        }
        if m.fallbacks > 0 {
            eprintln!(
                "bench: {}: at {threads} threads, {} of {} blocks fell back to the sequential executor",
                workload.name,
                m.fallbacks,
                workload.cases.len()
            );
        }
        if m.reverted > 0 {
            eprintln!(
                "bench: {}: {} transactions did not succeed",
                workload.name, m.reverted
            );
        }
    }
    ExitCode::SUCCESS
}
