//! Parallel block execution: Block-STM (Gelashvili et al., 2022) on revm, with results identical
//! to [`execute_block`](crate::execute_block).
//!
//! Transactions execute optimistically on several threads against a multi-version memory
//! ([`mv`]): each read sees the latest write of a lower transaction, or the state before the
//! block. After executing, a transaction is validated by resolving its reads again; if any value
//! changed it is aborted, its writes become ESTIMATE markers (readers above wait for its
//! re-execution instead of using them), and it runs again. The collaborative scheduler
//! ([`scheduler`]) hands out executions and validations in transaction order so that the block
//! is done exactly when every transaction has executed and validated against the final writes
//! below it, which is the sequential result.
//!
//! Three things keep ordinary blocks from conflicting on accounts every transaction touches:
//! - **Deferred fee credit.** revm's handler credits the fee recipient after each transaction,
//!   which would make every transaction read and write one balance. Here that step is skipped
//!   ([`DeferredReward`]); each transaction publishes its fee, and the credits are applied in
//!   order when the block is assembled. A transaction that does look at the fee recipient (a
//!   payment to the miner, `BALANCE(COINBASE)`) reads it with every lower transaction's fee
//!   credited, and so depends on all of them, as it must.
//! - **Lazy transfer credits.** A plain value transfer to an account without code runs against a
//!   zero balance for the recipient and publishes the amount as a credit. Many transfers to one
//!   address then do not conflict; a transaction that reads that balance sums the credits.
//! - **Senders recovered beforehand** (see [`crate::senders`]), once per transaction, not per
//!   incarnation.
//!
//! What the block needs but this executor does not model goes to the sequential executor, which
//! gives the same results: blocks below [`ParallelConfig::min_txs`], a transaction that does not
//! fit the block's remaining gas, EIP-7610 accounts (storage without nonce or code), and a fee
//! recipient that self-destructs.

mod batches;
mod db;
mod mv;
mod scheduler;

use crate::{
    executor::{
        cfg_env, effects, execute_block_dyn, priority_fee, receipt_from, reuse_state,
        revm_block_env, BlockOutput, DeferredReward, ExecError, Rejection, TxOutcome,
    },
    fork::eip1283_sstore,
    state::StateView,
    transfer::{credit_fee, PlainTransfer},
    BlockEnv, ChainRules, RecoveredTx,
};
use alloy_consensus::Transaction as _;
use alloy_primitives::{
    map::{AddressMap, B256Map},
    Address, Bytes, TxKind, B256,
};
use db::{BlockState, DbError, Read, TxDb};
use mv::{Fee, FinalPart, Location, MvMemory, Value};
use revm::{
    bytecode::opcode::SSTORE,
    context::{
        result::{EVMError, ExecutionResult},
        ContextSetters,
    },
    handler::{Handler, MainBuilder, MainContext, MainnetContext, MainnetEvm},
    interpreter::Instruction,
    primitives::hardfork::SpecId,
    Context, ExecuteEvm,
};
use scheduler::{Scheduler, Task, Version};
use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock, TryLockError,
    },
};
use tessera_primitives::{Account, AccountChange, StateDiff};

/// How blocks are executed in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelConfig {
    /// Worker threads, the calling thread included.
    pub threads: usize,
    /// Blocks with fewer transactions that run the EVM run sequentially: starting workers and
    /// keeping versions costs more than it gains on them. Plain transfers do not count: applied
    /// directly they cost a fraction of what Block-STM's bookkeeping for them does.
    pub min_txs: usize,
    /// Give up on Block-STM for the block, and run it sequentially, once many incarnations end
    /// in an abort or a wait (a block of transactions that all touch one slot): each one then
    /// waits for the one before it, and the versions only add cost.
    pub contention_fallback: bool,
    /// Blocks with at least this many transactions run Block-STM over batches of transactions
    /// ([`batches`]), smaller ones Block-STM per transaction. Per batch, the bookkeeping of a
    /// large block of independent transactions costs a small part of what it does per
    /// transaction; per transaction, a conflict costs one transaction's re-execution, not a
    /// batch's.
    pub batches_from: usize,
}

impl ParallelConfig {
    /// Below this many transactions a block runs sequentially by default.
    pub const DEFAULT_MIN_TXS: usize = 16;

    /// From this many transactions a block runs Block-STM over batches by default.
    pub const DEFAULT_BATCHES_FROM: usize = 1024;

    /// `threads` workers. With a single thread there is nothing to gain, so every block runs
    /// sequentially.
    pub fn with_threads(threads: usize) -> Self {
        let threads = threads.max(1);
        ParallelConfig {
            threads,
            min_txs: if threads == 1 {
                usize::MAX
            } else {
                Self::DEFAULT_MIN_TXS
            },
            contention_fallback: true,
            batches_from: Self::DEFAULT_BATCHES_FROM,
        }
    }

    /// One worker per available core.
    pub fn available() -> Self {
        Self::with_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Block-STM for every block, however small or contended, even on one thread: what the
    /// equivalence tests of the parallel path use.
    pub fn always(threads: usize) -> Self {
        ParallelConfig {
            threads: threads.max(1),
            min_txs: 0,
            contention_fallback: false,
            batches_from: usize::MAX,
        }
    }

    /// [`always`](Self::always), over batches of transactions: what the equivalence tests of
    /// Block-STM over batches use.
    pub fn batched(threads: usize) -> Self {
        ParallelConfig {
            batches_from: 0,
            ..Self::always(threads)
        }
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self::available()
    }
}

/// What a parallel run did, for tests, tools and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Incarnations started, including those that stopped to wait for another transaction.
    pub executions: usize,
    /// Validations that failed and sent a transaction back to execution.
    pub aborts: usize,
    /// Why the block ran on the sequential executor instead, if it did.
    pub fallback: Option<&'static str>,
}

/// Executes `txs` on top of `state` with Block-STM; the output is identical to
/// [`execute_block`](crate::execute_block)'s.
pub fn execute_block_parallel<S: StateView + Sync>(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &S,
    config: ParallelConfig,
) -> Result<BlockOutput, ExecError> {
    execute_block_parallel_with_stats(rules, env, txs, state, config).map(|(output, _)| output)
}

/// [`execute_block_parallel`], also reporting what the parallel run did.
pub fn execute_block_parallel_with_stats<S: StateView + Sync>(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &S,
    config: ParallelConfig,
) -> Result<(BlockOutput, ParallelStats), ExecError> {
    let mut stats = ParallelStats::default();
    if txs.len() < config.min_txs || evm_txs(rules, env, txs, config.min_txs) < config.min_txs {
        stats.fallback = Some("small block");
    } else {
        let result = if txs.len() >= config.batches_from {
            batches::execute(
                rules,
                env,
                txs,
                state,
                config.threads,
                config.contention_fallback,
                &mut stats,
            )
        } else {
            block_stm(rules, env, txs, state, config, &mut stats)
        };
        match result {
            Ok(output) => return Ok((output, stats)),
            Err(Halt::Fallback(why)) => stats.fallback = Some(why),
            Err(Halt::Error(e)) => return Err(e),
        }
    }
    Ok((execute_block_dyn(rules, env, txs, state)?, stats))
}

/// How many of `txs` need the EVM (are not plain transfers by their own fields), counted up
/// to `enough`.
fn evm_txs(rules: &ChainRules, env: &BlockEnv, txs: &[RecoveredTx], enough: usize) -> usize {
    if enough == 0 {
        return 0;
    }
    let cfg = cfg_env(rules);
    txs.iter()
        .filter(|tx| PlainTransfer::new(tx, &cfg, env).is_none())
        .take(enough)
        .count()
}

/// Whether a block of `txs` transactions, `lost` of whose `executions` incarnations so far were
/// aborted or had to wait, is better left to the sequential executor: after a first stretch, a
/// fifth of them lost. A block of transactions that all write one slot loses a quarter to a
/// third on two workers, ordinary blocks under a tenth (most of the mainnet fixtures); a
/// contended block's rate hovers around its mean, so a threshold at the mean would let it run
/// on for hundreds of incarnations before a fluctuation crossed it. A block is not given up
/// once it has had half as many incarnations as transactions: starting over on the sequential
/// executor then costs more than finishing.
fn contended(executions: usize, lost: usize, txs: usize) -> bool {
    /// Incarnations before the rate is judged: enough that a few early conflicts in an
    /// ordinary block do not decide it.
    const WINDOW: usize = 64;
    executions >= WINDOW && 5 * lost >= executions && 2 * executions <= txs
}

/// The threads that work beside the calling one, `count` of them, kept from block to block:
/// each thread's allocator heap then keeps the memory of earlier blocks, where fresh threads
/// for every block would fault in fresh pages for all of their allocations (a tenth of the
/// block's time). A block's calling thread can finish it alone, so blocks that share helpers
/// (two shards, or tests, executing at once) wait for each other's helpers, never deadlock.
fn helpers(count: usize) -> Result<Arc<rayon::ThreadPool>, Halt> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = lock(POOLS.get_or_init(Default::default));
    if let Some(pool) = pools.get(&count) {
        return Ok(pool.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(count)
        .thread_name(|i| format!("block-stm-{i}"))
        .build()
        .map_err(|_| Halt::Fallback("no worker threads could be started"))?;
    let pool = Arc::new(pool);
    pools.insert(count, pool.clone());
    Ok(pool)
}

/// Drops `garbage` on a helper thread, if the block had any, so that the caller does not wait
/// for the freeing.
fn drop_elsewhere<T: Send + 'static>(threads: usize, garbage: T) {
    match (threads > 1).then(|| helpers(threads - 1)) {
        Some(Ok(pool)) => pool.spawn(move || drop(garbage)),
        _ => drop(garbage),
    }
}

/// Runs `work` on `threads` workers, the calling thread (worker 0) among them, and returns when
/// all have.
fn on_workers(threads: usize, work: impl Fn(usize) + Sync) -> Result<(), Halt> {
    if threads <= 1 {
        work(0);
        return Ok(());
    }
    helpers(threads - 1)?.in_place_scope(|s| {
        for worker in 1..threads {
            let work = &work;
            s.spawn(move |_| work(worker));
        }
        work(0);
    });
    Ok(())
}

/// Why the parallel run stopped short.
enum Halt {
    Fallback(&'static str),
    Error(ExecError),
}

/// Why an incarnation did not finish.
enum Stop {
    /// It must wait for this lower transaction.
    Blocked(usize),
    Halt(Halt),
}

impl From<DbError> for Stop {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Blocked(idx) => Stop::Blocked(idx),
            DbError::Fallback(why) => Stop::Halt(Halt::Fallback(why)),
            DbError::State(e) => Stop::Halt(Halt::Error(ExecError::State(e))),
        }
    }
}

impl From<crate::state::StateError> for Halt {
    fn from(e: crate::state::StateError) -> Self {
        Halt::Error(ExecError::State(e))
    }
}

/// revm as one worker runs it.
type ParallelEvm<'a> = MainnetEvm<MainnetContext<TxDb<'a>>>;

/// The last execution of one transaction. Its writes are in the multi-version memory, where
/// the block's final state is read from once every transaction has validated.
struct TxResult {
    outcome: Result<ExecutionResult, Rejection>,
    /// Code it deployed.
    codes: Vec<(B256, Bytes)>,
    /// What it did to the fee recipient, whose final state is put together in order. Boxed:
    /// few transactions touch it, and every result is written out in full.
    beneficiary: Option<Box<AccountChange>>,
    fee: Fee,
}

/// What one incarnation produced: its result and the writes to publish.
type Incarnation = (TxResult, Vec<(Location, Value)>);

/// Per transaction: its last result and the reads it was made from.
#[derive(Default)]
struct Slot {
    /// Boxed, so that building a chunk of slots ([`PerTx`]) writes a few words per
    /// transaction rather than a whole result each.
    result: Option<Box<TxResult>>,
    reads: Vec<Read>,
}

/// A value on a cache line of its own: the scheduler's shared counters and the multi-version
/// memory's shard locks, which every worker writes. Per-transaction state is not padded: a
/// worker claims runs of neighbouring transactions, so neighbours are mostly on one worker, and
/// padding would spread each transaction's bookkeeping over more cache lines.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Per-transaction state, built in chunks on first use rather than for the whole block up front.
/// A contended block falls back to the sequential executor after its first hundred or so
/// incarnations, and building the state of the thousands of transactions it never reached took
/// longer than those incarnations (10,000 transactions: about 0.2 ms of 0.6 ms). An ordinary
/// block builds every chunk, each on whichever worker first needs it.
pub(super) struct PerTx<T> {
    chunks: Box<[OnceLock<Box<[T]>>]>,
    len: usize,
    init: fn() -> T,
}

impl<T> PerTx<T> {
    /// Transactions per chunk: small enough that a fallback builds little, large enough that
    /// an ordinary block builds few.
    const CHUNK: usize = 256;

    /// State for `len` transactions, each made by `init` when its chunk is first used.
    pub(super) fn new(len: usize, init: fn() -> T) -> Self {
        PerTx {
            chunks: (0..len.div_ceil(Self::CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            len,
            init,
        }
    }
}

impl<T> std::ops::Index<usize> for PerTx<T> {
    type Output = T;

    fn index(&self, idx: usize) -> &T {
        let start = idx - idx % Self::CHUNK;
        let chunk = self.chunks[idx / Self::CHUNK].get_or_init(|| {
            let end = (start + Self::CHUNK).min(self.len);
            (start..end).map(|_| (self.init)()).collect()
        });
        &chunk[idx - start]
    }
}

/// Locks `m` if no one holds it (see [`lock`] on poisoning).
pub(super) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Locks `m`. A worker that panicked propagates its panic out of the thread scope, so data it
/// left behind a poisoned lock is never used for a result.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Run<'a> {
    rules: &'a ChainRules,
    env: &'a BlockEnv,
    txs: &'a [RecoveredTx],
    cfg: revm::context::CfgEnv,
    block_env: revm::context::BlockEnv,
    spec: SpecId,
    state: BlockState<'a>,
    scheduler: Scheduler,
    slots: PerTx<Mutex<Slot>>,
    halt: Mutex<Option<Halt>>,
    executions: Executions,
    aborts: AtomicUsize,
    /// Incarnations that stopped to wait for a lower transaction.
    waits: AtomicUsize,
    contention_fallback: bool,
    /// The next item of work once the block is done: a shard of the multi-version memory to
    /// gather, then a chunk of transactions whose buffers to free.
    next_item: AtomicUsize,
    /// The block's final account changes, filled shard by shard by the workers as they gather
    /// them, so that the calling thread does not insert them all alone afterwards.
    finals: Mutex<mv::Finals>,
    /// Shards whose parts are in `finals`: the worker that joins the last one finishes it.
    joined: AtomicUsize,
    /// The outcomes, put together by the calling thread while the others start gathering.
    assembled: Mutex<Option<Result<Assembled, Halt>>>,
}

/// The block's outcomes in order, and what they did to the fee recipient.
struct Assembled {
    outcomes: Vec<TxOutcome>,
    codes: B256Map<Bytes>,
    gas_used: u64,
    beneficiary: Option<AccountChange>,
}

/// Incarnations started, one count per worker, each on a cache line of its own and written only
/// by its worker (a load and a store, no locked instruction). One counter that every worker
/// bumped moved its cache line between the cores once per transaction; the contention check,
/// which runs only after an abort or a wait, adds them up.
struct Executions(Box<[Padded<AtomicUsize>]>);

impl Executions {
    fn new(workers: usize) -> Self {
        Executions((0..workers).map(|_| Padded::default()).collect())
    }

    fn add(&self, worker: usize) {
        let count = &self.0[worker];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn total(&self) -> usize {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// A transaction the executor can credit lazily: a plain value transfer (no calldata, no
/// authorizations) to someone other than its sender, the fee recipient or a precompile. Whether
/// the recipient has code is only known when the transfer runs.
fn lazy_recipient(tx: &RecoveredTx, beneficiary: Address) -> Option<Address> {
    let TxKind::Call(to) = tx.envelope.kind() else {
        return None;
    };
    let envelope = &tx.envelope;
    let plain = envelope.input().is_empty()
        && !envelope.value().is_zero()
        && envelope.authorization_list().is_none_or(|l| l.is_empty());
    let precompile_range = to.0[..18].iter().all(|b| *b == 0);
    (plain && to != tx.sender && to != beneficiary && !precompile_range).then_some(to)
}

fn block_stm(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    view: &(dyn StateView + Sync),
    config: ParallelConfig,
    stats: &mut ParallelStats,
) -> Result<BlockOutput, Halt> {
    let cfg = cfg_env(rules);
    let block_env = revm_block_env(env, &cfg);
    let spec = rules.fork.spec_id();
    let beneficiary_before = view.account(&env.beneficiary)?;
    if beneficiary_before.is_some_and(|b| b.is_empty()) && view.has_storage(&env.beneficiary)? {
        // Crediting it a zero fee would delete it with its storage mid-block.
        return Err(Halt::Fallback("the fee recipient is empty but has storage"));
    }
    let run = Run {
        rules,
        env,
        txs,
        cfg,
        block_env,
        spec,
        state: BlockState {
            mv: MvMemory::new(txs.len()),
            view,
            beneficiary: env.beneficiary,
            beneficiary_before,
            state_clear: spec.is_enabled_in(SpecId::SPURIOUS_DRAGON),
        },
        scheduler: Scheduler::new(txs.len(), config.threads),
        slots: PerTx::new(txs.len(), Mutex::default),
        halt: Mutex::new(None),
        executions: Executions::new(config.threads),
        aborts: AtomicUsize::new(0),
        waits: AtomicUsize::new(0),
        contention_fallback: config.contention_fallback,
        next_item: AtomicUsize::new(0),
        finals: Mutex::default(),
        joined: AtomicUsize::new(0),
        assembled: Mutex::new(None),
    };
    on_workers(config.threads, |worker| run.work(worker))?;
    stats.executions = run.executions.total();
    stats.aborts = run.aborts.load(Ordering::Relaxed);
    if let Some(halt) = lock(&run.halt).take() {
        return Err(halt);
    }
    let assembled = lock(&run.assembled)
        .take()
        .expect("the calling thread assembles a block that did not halt")?;
    let mut accounts = lock(&run.finals).take_accounts();
    if let Some(change) = assembled.beneficiary {
        accounts.insert(env.beneficiary, change);
    }
    Ok(BlockOutput {
        outcomes: assembled.outcomes,
        diff: StateDiff {
            accounts,
            codes: assembled.codes,
        },
        gas_used: assembled.gas_used,
    })
}

impl Run<'_> {
    fn stop(&self, halt: Halt) {
        lock(&self.halt).get_or_insert(halt);
        self.scheduler.halt();
    }

    /// One worker: takes tasks until the block is done. The calling thread (worker 0) then puts
    /// the outcomes together while the others start on the final state, which it then joins.
    fn work(&self, worker: usize) {
        let caller = worker == 0;
        let mut evm = Context::mainnet()
            .with_cfg(self.cfg.clone())
            .with_block(self.block_env.clone())
            .with_db(TxDb::new(&self.state))
            .build_mainnet();
        if self.rules.fork.needs_eip1283_sstore() {
            evm.instruction
                .insert_instruction(SSTORE, Instruction::new(eip1283_sstore), 0);
        }
        crate::keccak::install(&mut evm.instruction);
        self.scheduler.work(|task| match task {
            Task::Execute(version) => self.try_execute(&mut evm, version, worker),
            Task::Validate(version) => self.validate(version),
        });
        if lock(&self.halt).is_none() {
            if caller {
                let assembled = self.assemble();
                *lock(&self.assembled) = Some(assembled);
            }
            self.gather();
        }
    }

    /// Once every transaction has validated: the final account changes, shard by shard, shared
    /// among the workers, which then free the per-transaction buffers (so that the calling
    /// thread does not free them all alone).
    fn gather(&self) {
        const CHUNK: usize = 512;
        let items = mv::SHARDS + self.txs.len().div_ceil(CHUNK);
        // Shards' parts gathered but not yet joined into `finals`, one list per shard. They are
        // joined whenever the lock is free: a worker that finds it taken goes on with the next
        // shard instead of waiting for another worker's joins.
        let mut pending = Vec::new();
        let gathered = (|| {
            loop {
                let item = self.next_item.fetch_add(1, Ordering::Relaxed);
                if item >= items {
                    break;
                }
                if item >= mv::SHARDS {
                    // Every shard is taken: joined now, so that the last join (and the merge
                    // after it) overlaps with the freeing.
                    self.join_pending(&mut pending, true)?;
                    let start = (item - mv::SHARDS) * CHUNK;
                    for idx in start..(start + CHUNK).min(self.txs.len()) {
                        self.state.mv.release(idx);
                        drop(std::mem::take(&mut lock(&self.slots[idx]).reads));
                    }
                    continue;
                }
                if self.state.mv.any_cleared() {
                    // A slot's shard may not hold its account's clear, which wipes the writes
                    // below it: the clears are collected first, and one worker gathers every
                    // shard. Only blocks that create or delete accounts.
                    if item != 0 {
                        continue;
                    }
                    let clears = self.state.mv.last_clears();
                    for shard in 0..mv::SHARDS {
                        pending.push(self.shard_parts(shard, Some(&clears))?);
                        self.join_pending(&mut pending, false)?;
                    }
                } else {
                    pending.push(self.shard_parts(item, None)?);
                }
                self.join_pending(&mut pending, false)?;
            }
            self.join_pending(&mut pending, true)
        })();
        if let Err(e) = gathered {
            self.stop(e.into());
        }
    }

    /// One shard's parts of the final account changes.
    fn shard_parts(
        &self,
        shard: usize,
        clears: Option<&AddressMap<usize>>,
    ) -> Result<Vec<(Address, FinalPart)>, crate::state::StateError> {
        let view = self.state.view;
        self.state
            .mv
            .final_changes(shard, &self.env.beneficiary, clears, |address| {
                view.account(address)
            })
    }

    /// Joins the `pending` shards' parts into the block's final changes, waiting for the lock
    /// only if `wait`.
    fn join_pending(
        &self,
        pending: &mut Vec<Vec<(Address, FinalPart)>>,
        wait: bool,
    ) -> Result<(), crate::state::StateError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut finals = if wait {
            lock(&self.finals)
        } else {
            match try_lock(&self.finals) {
                Some(finals) => finals,
                None => return Ok(()),
            }
        };
        // A sender and a recipient for most transactions: rarely grown. Sized here, not up
        // front: a block that falls back never needs it, and a large allocation costs its
        // pages' faults.
        finals.reserve(2 * self.txs.len() + 1);
        let view = self.state.view;
        let shards = pending.len();
        for parts in pending.drain(..) {
            for (address, part) in parts {
                finals.join(address, part, |address| view.account(address))?;
            }
        }
        if self.joined.fetch_add(shards, Ordering::AcqRel) + shards == mv::SHARDS {
            // The last shard: the slots held back for accounts that came in several parts are
            // merged now, while the other workers free buffers, not by the calling thread after.
            finals.finish();
        }
        Ok(())
    }

    /// Executes `version` until it finishes or has to wait for a lower transaction.
    fn try_execute<'s>(
        &'s self,
        evm: &mut ParallelEvm<'s>,
        version: Version,
        worker: usize,
    ) -> Option<Task> {
        let idx = version.idx;
        loop {
            self.executions.add(worker);
            match self.execute(evm, idx) {
                Ok((result, writes)) => {
                    let codes = result.codes.clone();
                    let fee = result.fee;
                    {
                        let mut slot = lock(&self.slots[idx]);
                        match &mut slot.result {
                            Some(kept) => **kept = result,
                            None => slot.result = Some(Box::new(result)),
                        }
                        // Copied, not swapped: the worker's buffer keeps its capacity, so that
                        // reads are not regrown from nothing in every incarnation.
                        slot.reads.clear();
                        slot.reads
                            .extend_from_slice(&evm.ctx.journaled_state.database.reads);
                    }
                    let wrote_new = self.state.mv.publish(idx, writes, codes, fee);
                    return self.scheduler.finish_execution(version, wrote_new);
                }
                Err(Stop::Blocked(blocking)) => {
                    if self.scheduler.add_dependency(idx, blocking) {
                        self.waits.fetch_add(1, Ordering::Relaxed);
                        self.check_contention();
                        return None;
                    }
                    // It finished in the meantime: read again.
                }
                Err(Stop::Halt(halt)) => {
                    self.stop(halt);
                    return None;
                }
            }
        }
    }

    /// One incarnation of transaction `idx`: its result and the writes to publish.
    fn execute<'s>(&'s self, evm: &mut ParallelEvm<'s>, idx: usize) -> Result<Incarnation, Stop> {
        let tx = &self.txs[idx];
        // Both worked out from the transaction's own fields in every incarnation, not up front
        // for the whole block: a few comparisons each, where a pass over every transaction
        // before the first runs would bring all of them into the cache twice, and a block that
        // falls back early would pay for it all.
        let lazy = lazy_recipient(tx, self.env.beneficiary);
        let db = &mut evm.ctx.journaled_state.database;
        db.begin(idx, tx.sender, lazy);
        if let Some(transfer) = PlainTransfer::new(tx, &self.cfg, self.env) {
            if let Some(done) = self.transfer(db, &transfer)? {
                return Ok(done);
            }
            // Not a plain transfer after all: revm runs it, reading afresh.
            db.begin(idx, tx.sender, lazy);
        }
        evm.ctx.set_tx(tx.tx_env());
        let outcome = DeferredReward::<_, EVMError<DbError>>(PhantomData).run(evm);
        let state = evm.finalize();
        let execution = match outcome {
            Ok(execution) => execution,
            Err(EVMError::Database(e)) => return Err(e.into()),
            Err(EVMError::Transaction(invalid)) => {
                let result = TxResult {
                    outcome: Err(Rejection::Invalid(invalid.to_string())),
                    codes: Vec::new(),
                    beneficiary: None,
                    fee: Fee::None,
                };
                return Ok((result, Vec::new()));
            }
            Err(EVMError::Header(h)) => {
                return Err(Stop::Halt(Halt::Error(ExecError::Header(h.to_string()))))
            }
            Err(other) => return Err(Stop::Halt(Halt::Error(ExecError::Evm(other.to_string())))),
        };
        if state
            .get(&self.env.beneficiary)
            .is_some_and(|a| a.is_selfdestructed())
        {
            // Its fee would be credited to an account the sequential executor deletes.
            return Err(Stop::Halt(Halt::Fallback(
                "the fee recipient self-destructs",
            )));
        }
        let db = &evm.ctx.journaled_state.database;
        let lazy_recipient = if db.lazy_used { lazy } else { None };
        let fee_amount = priority_fee(
            tx.envelope.effective_gas_price(Some(self.env.base_fee)),
            self.env.base_fee,
            self.spec,
            execution.tx_gas_used(),
        );
        let fee = Fee::Credit(fee_amount);
        let mut result = TxResult {
            outcome: Ok(execution),
            codes: Vec::new(),
            beneficiary: None,
            fee,
        };
        let mut writes = Vec::with_capacity(state.len() + 1);
        for (address, effect) in effects(&state, self.spec) {
            if let Some(code) = effect.new_code() {
                result.codes.push(code);
            }
            if lazy_recipient == Some(address) {
                if let Some(info) = effect.info {
                    writes.push((Location::Account(address), Value::Credit(info.balance)));
                }
                continue;
            }
            if address == self.env.beneficiary {
                let mut change = effect.change();
                if effect.left().is_empty() && !fee_amount.is_zero() {
                    // Left empty only because its fee is credited later, and so deleted
                    // (EIP-161) or, before Spurious Dragon, materialised as created by revm;
                    // self-destruction fell back above. The sequential executor pays the fee
                    // within the transaction and does neither: the entry is the account as
                    // left, which the fee is then credited to.
                    change = AccountChange {
                        info: Some(effect.left()),
                        storage_cleared: false,
                        storage: Default::default(),
                    };
                }
                result.beneficiary = Some(Box::new(change));
            }
            // An account whose storage alone changed keeps its info: not writing it spares
            // every later reader of a busy contract a dependency and a lookup.
            if effect.info_changed || address == self.env.beneficiary {
                writes.push((Location::Account(address), Value::Account(effect.info)));
            }
            if effect.cleared {
                writes.push((Location::Cleared(address), Value::Cleared));
            }
            writes.extend(
                effect
                    .storage()
                    .map(|(slot, value)| (Location::Storage(address, slot), Value::Storage(value))),
            );
        }
        reuse_state(&mut evm.ctx.journaled_state.inner.state, state);
        Ok((result, writes))
    }

    /// Applies transaction `db.idx` without revm if it is a plain transfer between accounts
    /// without code: the sender's new state, the amount as a credit to the recipient (whose
    /// balance it does not read) and the tip as the fee.
    fn transfer(
        &self,
        db: &mut TxDb<'_>,
        transfer: &PlainTransfer,
    ) -> Result<Option<Incarnation>, Stop> {
        let sender = self.txs[db.idx].sender;
        let sender_before = db.basic_account(sender)?;
        let recipient_before = db.basic_account(transfer.to)?;
        let Some(done) = transfer.apply(sender_before, recipient_before) else {
            return Ok(None);
        };
        let recipient = if db.lazy_used {
            // Read as a zero balance: what it ends with is what it was given.
            Value::Credit(done.recipient.balance)
        } else {
            Value::Account(Some(done.recipient))
        };
        let writes = vec![
            (Location::Account(sender), Value::Account(Some(done.sender))),
            (Location::Account(transfer.to), recipient),
        ];
        let result = TxResult {
            outcome: Ok(PlainTransfer::result(self.spec)),
            codes: Vec::new(),
            beneficiary: None,
            fee: Fee::Credit(transfer.tip),
        };
        Ok(Some((result, writes)))
    }

    /// Falls back to sequential execution once the block looks contended (see [`contended`]).
    /// Whichever way it goes, the output is the same.
    fn check_contention(&self) {
        if !self.contention_fallback {
            return;
        }
        let executions = self.executions.total();
        let lost = self.aborts.load(Ordering::Relaxed) + self.waits.load(Ordering::Relaxed);
        if contended(executions, lost, self.txs.len()) {
            self.stop(Halt::Fallback("contention"));
        }
    }

    fn validate(&self, version: Version) -> Option<Task> {
        let valid = {
            let slot = lock(&self.slots[version.idx]);
            self.state.validate(version.idx, &slot.reads)
        };
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            self.aborts.fetch_add(1, Ordering::Relaxed);
            self.state.mv.mark_estimates(version.idx);
            self.check_contention();
        }
        self.scheduler.finish_validation(version.idx, aborted)
    }

    /// The block's outcomes: receipts with cumulative gas, and the fee recipient's credits, in
    /// transaction order.
    fn assemble(&self) -> Result<Assembled, Halt> {
        let mut outcomes = Vec::with_capacity(self.txs.len());
        let mut codes = B256Map::default();
        let mut gas_used = 0u64;
        // The fee recipient's entry in the block's diff, merged transaction by transaction as
        // the sequential executor would. Its credits are kept in `recipient` and written to
        // the entry only before a transaction that changes it and at the end; `pending` says
        // whether they changed it since, and whether one deleted it (EIP-161).
        let mut beneficiary: Option<AccountChange> = None;
        let mut recipient = self.state.beneficiary_before;
        let mut pending: Option<bool> = None;
        for (idx, tx) in self.txs.iter().enumerate() {
            let slot = &self.slots[idx];
            let result = *lock(slot)
                .result
                .take()
                .expect("every transaction executed before the block is done");
            let remaining = self.env.gas_limit - gas_used;
            let gas_limit = tx.envelope.gas_limit();
            if gas_limit > remaining {
                if result.outcome.is_ok() {
                    // The sequential executor refuses it, and every later transaction sees the
                    // state without it: not what the parallel run assumed.
                    return Err(Halt::Fallback(
                        "a transaction exceeds the block's remaining gas",
                    ));
                }
                // Refused either way, and a refused transaction changes nothing.
                outcomes.push(TxOutcome::Rejected(Rejection::BlockGasExceeded {
                    gas_limit,
                    remaining,
                }));
                continue;
            }
            let execution = match result.outcome {
                Ok(execution) => execution,
                Err(rejection) => {
                    outcomes.push(TxOutcome::Rejected(rejection));
                    continue;
                }
            };
            codes.extend(result.codes);
            if let Some(change) = result.beneficiary.map(|change| *change) {
                flush(&mut beneficiary, recipient, &mut pending);
                recipient = change.info;
                match &mut beneficiary {
                    Some(existing) => existing.merge(change),
                    None => beneficiary = Some(change),
                }
            }
            if let Fee::Credit(fee) = result.fee {
                let after = credit_fee(recipient, fee, self.state.state_clear);
                if after != recipient {
                    pending = Some(pending.unwrap_or(false) || after.is_none());
                    recipient = after;
                }
            }
            let tx_gas = execution.tx_gas_used();
            gas_used += tx_gas;
            let effective_gas_price = tx.envelope.effective_gas_price(Some(self.env.base_fee));
            outcomes.push(TxOutcome::Included(receipt_from(
                execution,
                tx,
                tx_gas,
                gas_used,
                effective_gas_price,
            )));
        }
        flush(&mut beneficiary, recipient, &mut pending);
        Ok(Assembled {
            outcomes,
            codes,
            gas_used,
            beneficiary,
        })
    }
}

/// Writes the fee recipient's credits since the last flush into its entry, as merging each
/// credit's change in turn would have: a deletion among them empties the entry's storage.
fn flush(
    entry: &mut Option<AccountChange>,
    recipient: Option<Account>,
    pending: &mut Option<bool>,
) {
    let Some(cleared) = pending.take() else {
        return;
    };
    match entry {
        Some(entry) if !cleared => entry.info = recipient,
        _ => {
            *entry = Some(AccountChange {
                info: recipient,
                storage_cleared: cleared,
                storage: Default::default(),
            });
        }
    }
}

/// The first way `got` differs from `expected` (outcomes, receipts, gas, bloom, receipts root,
/// then the state diff account by account), or `None` if they are identical.
pub fn first_difference(expected: &BlockOutput, got: &BlockOutput) -> Option<String> {
    if expected.outcomes.len() != got.outcomes.len() {
        return Some(format!(
            "{} outcomes != {}",
            got.outcomes.len(),
            expected.outcomes.len()
        ));
    }
    for (i, (e, g)) in expected.outcomes.iter().zip(&got.outcomes).enumerate() {
        if e != g {
            return Some(format!("tx {i}: {g:?} != {e:?}"));
        }
    }
    if expected.gas_used != got.gas_used {
        return Some(format!(
            "gas used {} != {}",
            got.gas_used, expected.gas_used
        ));
    }
    if expected.logs_bloom() != got.logs_bloom() {
        return Some("logs bloom differs".into());
    }
    if expected.receipts_root() != got.receipts_root() {
        return Some(format!(
            "receipts root {} != {}",
            got.receipts_root(),
            expected.receipts_root()
        ));
    }
    let addresses: std::collections::BTreeSet<&Address> = expected
        .diff
        .accounts
        .keys()
        .chain(got.diff.accounts.keys())
        .collect();
    for address in addresses {
        let (e, g) = (
            expected.diff.accounts.get(address),
            got.diff.accounts.get(address),
        );
        if e != g {
            return Some(format!("state of {address}: {g:?} != {e:?}"));
        }
    }
    if expected.diff.codes != got.diff.codes {
        return Some("deployed code differs".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{contended, PerTx};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn per_transaction_state_is_built_a_chunk_at_a_time() {
        const CHUNK: usize = PerTx::<AtomicUsize>::CHUNK;
        let len = 2 * CHUNK + 3;
        let per_tx = PerTx::new(len, || AtomicUsize::new(usize::MAX));
        let built = |per_tx: &PerTx<AtomicUsize>| -> Vec<Option<usize>> {
            per_tx
                .chunks
                .iter()
                .map(|c| c.get().map(|c| c.len()))
                .collect()
        };
        assert_eq!(built(&per_tx), vec![None, None, None]);
        // Using the last transaction builds only its chunk, which stops at the block's end.
        assert_eq!(per_tx[len - 1].load(Ordering::Relaxed), usize::MAX);
        assert_eq!(built(&per_tx), vec![None, None, Some(3)]);
        for idx in 0..len {
            per_tx[idx].store(idx, Ordering::Relaxed);
        }
        assert_eq!(built(&per_tx), vec![Some(CHUNK), Some(CHUNK), Some(3)]);
        assert!((0..len).all(|idx| per_tx[idx].load(Ordering::Relaxed) == idx));
    }

    #[test]
    #[should_panic]
    fn per_transaction_state_ends_with_the_block() {
        let per_tx = PerTx::new(3, || AtomicUsize::new(0));
        per_tx[3].load(Ordering::Relaxed);
    }

    #[test]
    fn contention_is_judged_early_at_a_fifth_of_incarnations_lost() {
        // Too early to judge, however bad.
        assert!(!contended(63, 63, 10_000));
        // A fifth lost after the first stretch, and not below it.
        assert!(contended(64, 13, 10_000));
        assert!(!contended(64, 12, 10_000));
        assert!(contended(1_000, 200, 10_000));
        assert!(!contended(1_000, 199, 10_000));
        // Past half as many incarnations as transactions, the block is finished in parallel.
        assert!(contended(5_000, 5_000, 10_000));
        assert!(!contended(5_001, 5_001, 10_000));
        // So a block of fewer than twice the first stretch is never given up.
        assert!(!contended(64, 64, 127));
    }
}
