//! Block-STM over batches of consecutive transactions, for large blocks.
//!
//! The unit Block-STM schedules, versions and validates here is a batch, not a transaction:
//! a batch runs its transactions in order on the sequential executor
//! ([`execute_txs`](crate::executor::execute_txs)), over a view ([`BatchView`]) that reads
//! each location as the highest lower batch published it, or as the state before the block.
//! A batch's published output (its receipts and [`StateDiff`]) is its multi-version entry for
//! every location it wrote; the values stay in that diff instead of being copied into a version
//! per location, and reads made inside the batch from its own writes are neither kept nor
//! validated. What the view hands out is kept (location and value) and validated once lower
//! batches have published: not at all if the lower outputs are those the batch ran against,
//! against the outputs published since if those are all that changed, and otherwise by
//! resolving every read again. A batch that read a changed value is aborted, its output becomes
//! an ESTIMATE (a reader of it waits for the re-execution), and it runs again. The
//! collaborative scheduler is [`super::scheduler`]'s, over batch indices.
//!
//! Why: Block-STM's per-transaction bookkeeping (a multi-version entry per write, a kept read
//! per read, locks per transaction) cost a third of a transaction's execution on blocks of
//! independent token transfers, so two workers gained little over one sequential run. Per
//! batch, the bookkeeping is one output, one list of reads from outside, and its bit in an
//! index of which batches may have written which locations ([`Writers`]).
//!
//! The fee recipient: each batch notes its fees instead of reading the account (see
//! `Overlay::fee_log`), so batches do not all depend on each other through it. A batch that does
//! read it sees the state before the block with every lower batch's changes and noted fees
//! applied in order, which makes it depend on all of them, as it must.
//!
//! Batch sizes start small (so that a contended block shows its aborts before much work is
//! wasted) and end small (so that the workers finish together).

use super::{
    lock, on_workers,
    scheduler::{Scheduler, Task, Version},
    Halt,
};
use crate::{
    executor::{execute_txs, make_room, BlockOutput, TxOutcome},
    state::{StateError, StateView},
    transfer::credit_fee,
    BlockEnv, ChainRules, ParallelStats, RecoveredTx,
};
use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, Bytes, B256, U256};
use std::{
    cell::{Cell, RefCell},
    collections::hash_map::Entry,
    ops::Range,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};
use tessera_primitives::{Account, AccountChange, StateDiff};

/// The largest batch: large enough that a batch's fixed costs (an EVM context, a diff) are
/// small against its transactions.
const MAX_BATCH: usize = 1024;

/// The batches `n` transactions are cut into for `threads` workers: doubling from a small first
/// size up to a middle size, middle-sized batches, then halving back down.
pub(super) fn batch_ranges(n: usize, threads: usize) -> Vec<Range<usize>> {
    let first = (n / 512).clamp(1, 16);
    let middle = (n / (4 * threads.max(1))).clamp(first, MAX_BATCH);
    let mut ramp = Vec::new();
    let mut size = first;
    while size < middle && 2 * (ramp.iter().sum::<usize>() + size) <= n {
        ramp.push(size);
        size *= 2;
    }
    let rest = n - 2 * ramp.iter().sum::<usize>();
    let middles = rest.div_ceil(middle);
    let mut sizes = ramp.clone();
    sizes.extend((0..middles).map(|i| rest / middles + usize::from(i < rest % middles)));
    sizes.extend(ramp.iter().rev());
    let mut start = 0;
    sizes
        .into_iter()
        .filter(|s| *s > 0)
        .map(|size| {
            start += size;
            start - size..start
        })
        .collect()
}

/// Which batches may have written which locations, as one worker knows it: a Bloom filter per
/// batch, stored bit-sliced so that one load answers for 64 batches. A location's key sets the
/// batch's bit in two of `2^BUCKET_BITS` buckets; a batch may have written it only if both bits
/// are set. It says for certain that a batch did not write a location, so that a read looks
/// into the diffs of only those lower batches that may have written it. Two probes rather than
/// one: a batch of a thousand token transfers writes some three thousand locations, which with
/// one probe set one bucket in twenty, so that half the reads of a block's later batches looked
/// into a diff for nothing. Bits are only ever set: an incarnation that no longer writes a
/// location its previous one wrote leaves its bits, which costs a lookup that finds nothing,
/// never a wrong answer.
///
/// Each worker keeps its own, and adds an output's keys ([`BatchOut::keys`]) to it the first
/// time it looks at that output ([`Run::lower`]). One index shared by the workers had each
/// publication set some six thousand bits with atomic read-modify-writes on cache lines the
/// other worker had just read: each one waited for the line to come over from the other core,
/// which on a machine whose two cores were 330 ns apart took 2.2 ms of each worker's time per
/// block of 10,000 token transfers, against 0.15 ms for the private index. That costs each
/// worker the bits of every batch instead of its own, set in its own cache without atomics.
struct Writers {
    /// Words of bits per bucket: one per 64 batches.
    words: usize,
    /// Bucket-major: bucket `b`'s words are `bits[b * words..(b + 1) * words]`.
    bits: Box<[u64]>,
    /// The [`BatchOut::serial`] of the output of each batch whose keys are in `bits`; 0 for none.
    indexed: Box<[u64]>,
}

impl Writers {
    const BUCKET_BITS: u32 = 16;

    fn new(batches: usize) -> Self {
        let words = batches.div_ceil(64).max(1);
        Writers {
            words,
            bits: vec![0; words << Self::BUCKET_BITS].into_boxed_slice(),
            indexed: vec![0; batches].into_boxed_slice(),
        }
    }

    /// The first words of a key's two buckets, from disjoint bits of the key.
    fn starts(&self, key: u64) -> [usize; 2] {
        let bucket = |shift: u32| (key >> shift) as usize & ((1 << Self::BUCKET_BITS) - 1);
        [
            bucket(64 - Self::BUCKET_BITS) * self.words,
            bucket(64 - 2 * Self::BUCKET_BITS) * self.words,
        ]
    }

    /// Notes the locations batch `batch`'s output `out` wrote, unless this output is noted
    /// already.
    fn index(&mut self, batch: usize, out: &BatchOut) {
        if self.indexed[batch] != out.serial {
            self.record(batch, &out.keys);
            self.indexed[batch] = out.serial;
        }
    }

    /// Notes the locations with `keys` as written by `batch`.
    fn record(&mut self, batch: usize, keys: &[u64]) {
        let bit = 1 << (batch % 64);
        for key in keys {
            for start in self.starts(*key) {
                self.bits[start + batch / 64] |= bit;
            }
        }
    }

    /// Word `word` of the bits set in both of a key's buckets (`starts`).
    fn both(&self, [a, b]: [usize; 2], word: usize) -> u64 {
        self.bits[a + word] & self.bits[b + word]
    }

    /// Whether one of the batches in `batches` (bits by batch, as in a bucket) may have
    /// written a location with one of `keys`.
    fn hits(&self, keys: &[u64], batches: &[u64]) -> bool {
        keys.iter().any(|key| {
            let starts = self.starts(*key);
            batches
                .iter()
                .enumerate()
                .any(|(word, mask)| *mask != 0 && self.both(starts, word) & mask != 0)
        })
    }

    /// The batches below `below` that may have written a location with one of `keys`, highest
    /// first.
    fn below<const K: usize>(
        &self,
        keys: [u64; K],
        below: usize,
    ) -> impl Iterator<Item = usize> + '_ {
        let starts = keys.map(|key| self.starts(key));
        (0..below.div_ceil(64)).rev().flat_map(move |word| {
            let mut mask = starts
                .iter()
                .fold(0u64, |mask, starts| mask | self.both(*starts, word));
            if word == below / 64 {
                mask &= (1 << (below % 64)) - 1;
            }
            std::iter::from_fn(move || {
                let top = 63_usize.checked_sub(mask.leading_zeros() as usize)?;
                mask &= !(1 << top);
                Some(word * 64 + top)
            })
        })
    }
}

fn mix(h: u64, word: u64) -> u64 {
    (h ^ word)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(31)
}

fn account_key(address: &Address) -> u64 {
    let b = &address.0 .0;
    let word = |r: Range<usize>| {
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    mix(mix(mix(0, word(0..8)), word(8..16)), word(16..20)).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn slot_key(account: u64, slot: &U256) -> u64 {
    let [a, b, c, d] = *slot.as_limbs();
    mix(mix(mix(mix(account ^ 0x5bd1_e995, a), b), c), d).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn cleared_key(account: u64) -> u64 {
    mix(account, 0xc1ea_4ed0_0000_0001).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The keys of the locations `diff` writes, for [`Writers`].
fn written_keys(diff: &StateDiff) -> Vec<u64> {
    let mut keys = Vec::with_capacity(diff.key_count() + diff.accounts.len());
    for (address, change) in &diff.accounts {
        let key = account_key(address);
        keys.push(key);
        if change.storage_cleared || change.info.is_none() {
            keys.push(cleared_key(key));
        }
        keys.extend(change.storage.keys().map(|slot| slot_key(key, slot)));
    }
    keys
}

/// The largest gas limit of `txs` plus the gas used before it in their batch (`outcomes` are
/// theirs). The block has room for every one of them, where the batch stands in it, if it has
/// this much gas left when the batch starts: a transaction is rejected when its gas limit is
/// more than the block has left. Computed as the batch is published, while its transactions
/// are still in the cache, rather than in assembly, the one serial part of the block, where
/// reading every transaction again missed the cache each time: 0.3 ms of a block of 10,000
/// token transfers.
fn gas_reach(txs: &[RecoveredTx], outcomes: &[TxOutcome]) -> u64 {
    let mut used = 0u64;
    let mut reach = 0u64;
    for (tx, outcome) in txs.iter().zip(outcomes) {
        reach = reach.max(used.saturating_add(tx.envelope.gas_limit()));
        if let TxOutcome::Included(receipt) = outcome {
            used += receipt.gas_used;
        }
    }
    reach
}

/// One incarnation of one batch, as published.
struct BatchOut {
    output: BlockOutput,
    /// The fees its transactions paid, in order, if none of them read the fee recipient;
    /// otherwise the fee recipient's entry in `output.diff` holds them.
    fees: Option<Vec<U256>>,
    /// What it read from outside itself, to validate.
    reads: Vec<Read>,
    /// The keys of the locations it wrote, for each worker's [`Writers`].
    keys: Vec<u64>,
    /// Which output of each lower batch it ran against, by [`BatchOut::serial`]; 0 where none
    /// was published.
    saw: Box<[u64]>,
    /// The gas the block must have left when the batch starts for none of its transactions to
    /// exceed what is left ([`gas_reach`]).
    reach: u64,
    /// Tells this incarnation's output from every other one of the block.
    serial: u64,
    /// Aborted: what it wrote is an estimate until it has run again.
    estimate: AtomicBool,
}

/// A value a batch read from outside itself; `before` if it was the state before the block
/// (no lower batch's output held it).
#[derive(Clone, Copy)]
enum Read {
    Account {
        address: Address,
        before: bool,
        value: Option<Account>,
    },
    Storage {
        address: Address,
        slot: U256,
        before: bool,
        value: U256,
    },
    /// The fee recipient, with every lower batch's changes and fees applied.
    Beneficiary(Option<Account>),
}

impl Read {
    /// Whether one of `batches` may have written what this read, as far as [`Writers`] can
    /// tell. The fee recipient's value depends on every lower batch's fees.
    fn may_be_written_by(&self, writers: &Writers, batches: &[u64]) -> bool {
        match self {
            Read::Account { address, .. } => writers.hits(&[account_key(address)], batches),
            Read::Storage { address, slot, .. } => {
                let key = account_key(address);
                writers.hits(&[slot_key(key, slot), cleared_key(key)], batches)
            }
            Read::Beneficiary(_) => true,
        }
    }
}

/// Where a location's value comes from, for a batch.
enum Found<T> {
    Batch(T),
    Before,
    /// The highest lower batch that wrote it was aborted: wait for it.
    Estimate(usize),
}

/// The lower batches' outputs as one batch sees them: `outs[i]` is batch `i`'s, if it had
/// published one when the batch looked.
struct Lower<'r> {
    writers: &'r Writers,
    outs: Vec<Option<Arc<BatchOut>>>,
}

impl Lower<'_> {
    /// Which output of each batch this holds, as [`BatchOut::saw`] keeps it.
    fn serials(&self) -> Box<[u64]> {
        self.outs
            .iter()
            .map(|out| out.as_ref().map_or(0, |out| out.serial))
            .collect()
    }

    /// The batches published since a batch ran against `saw`, as bits by batch, if nothing it
    /// saw has changed since: no output it read from was replaced or aborted. Then a read
    /// finds what it found unless one of these batches wrote it.
    fn published_since(&self, saw: &[u64]) -> Option<Vec<u64>> {
        let mut since = vec![0u64; self.outs.len().div_ceil(64)];
        for (idx, (now, saw)) in self.outs.iter().zip(saw).enumerate() {
            match now {
                None if *saw == 0 => {}
                Some(now) if now.estimate.load(Ordering::Acquire) => return None,
                Some(now) if now.serial == *saw => {}
                Some(_) if *saw == 0 => since[idx / 64] |= 1 << (idx % 64),
                _ => return None,
            }
        }
        Some(since)
    }

    /// The published outputs, in batch order.
    fn published(&self) -> impl DoubleEndedIterator<Item = (usize, &BatchOut)> {
        self.outs
            .iter()
            .enumerate()
            .filter_map(|(idx, out)| Some((idx, &**out.as_ref()?)))
    }

    /// The published outputs that may hold a location with one of `keys`, highest first.
    fn may_hold<const K: usize>(&self, keys: [u64; K]) -> impl Iterator<Item = (usize, &BatchOut)> {
        self.writers
            .below(keys, self.outs.len())
            .filter_map(|idx| Some((idx, &**self.outs[idx].as_ref()?)))
    }

    fn account(&self, address: &Address) -> Found<Option<Account>> {
        for (idx, out) in self.may_hold([account_key(address)]) {
            if let Some(change) = out.output.diff.accounts.get(address) {
                if out.estimate.load(Ordering::Acquire) {
                    return Found::Estimate(idx);
                }
                return Found::Batch(change.info);
            }
        }
        Found::Before
    }

    fn storage(&self, address: &Address, slot: &U256) -> Found<U256> {
        let key = account_key(address);
        for (idx, out) in self.may_hold([slot_key(key, slot), cleared_key(key)]) {
            let Some(change) = out.output.diff.accounts.get(address) else {
                continue;
            };
            let value = match change.storage.get(slot) {
                Some(v) => *v,
                None if change.storage_cleared || change.info.is_none() => U256::ZERO,
                None => continue,
            };
            if out.estimate.load(Ordering::Acquire) {
                return Found::Estimate(idx);
            }
            return Found::Batch(value);
        }
        Found::Before
    }
}

/// Why a batch's incarnation stopped.
enum Stop {
    /// It read an estimate of this lower batch.
    Blocked(usize),
    Fallback(&'static str),
}

/// The state as one incarnation of one batch sees it: implements [`StateView`] for the
/// sequential executor, and keeps what it handed out.
struct BatchView<'r, 'a> {
    run: &'r Run<'a>,
    lower: Lower<'r>,
    reads: RefCell<Vec<Read>>,
    stop: Cell<Option<Stop>>,
}

impl BatchView<'_, '_> {
    fn stopped(&self, stop: Stop) -> StateError {
        self.stop.set(Some(stop));
        StateError("the batch stopped".into())
    }
}

impl StateView for BatchView<'_, '_> {
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        if *address == self.run.env.beneficiary {
            let value = match self.run.beneficiary(&self.lower) {
                Found::Estimate(idx) => return Err(self.stopped(Stop::Blocked(idx))),
                Found::Batch(value) => value,
                Found::Before => self.run.beneficiary_before,
            };
            self.reads.borrow_mut().push(Read::Beneficiary(value));
            return Ok(value);
        }
        let (before, value) = match self.lower.account(address) {
            Found::Estimate(idx) => return Err(self.stopped(Stop::Blocked(idx))),
            Found::Batch(value) => (false, value),
            Found::Before => (true, self.run.view.account(address)?),
        };
        self.reads.borrow_mut().push(Read::Account {
            address: *address,
            before,
            value,
        });
        Ok(value)
    }

    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError> {
        let (before, value) = match self.lower.storage(address, slot) {
            Found::Estimate(idx) => return Err(self.stopped(Stop::Blocked(idx))),
            Found::Batch(value) => (false, value),
            Found::Before => (true, self.run.view.storage(address, slot)?),
        };
        self.reads.borrow_mut().push(Read::Storage {
            address: *address,
            slot: *slot,
            before,
            value,
        });
        Ok(value)
    }

    fn has_storage(&self, address: &Address) -> Result<bool, StateError> {
        // Asked only about an account with no nonce and no code (EIP-7610), which this
        // executor leaves to the sequential one, as Block-STM per transaction does. Read as the
        // overlay reads its own changes: the highest lower batch that wrote the account
        // decides, unless it wrote no storage and did not clear it.
        let collides = || {
            Err(self.stopped(Stop::Fallback(
                "an account with storage but no nonce or code",
            )))
        };
        for (_, out) in self.lower.published().rev() {
            let Some(change) = out.output.diff.accounts.get(address) else {
                continue;
            };
            if change.storage.values().any(|v| !v.is_zero()) {
                return collides();
            }
            if change.storage_cleared || change.info.is_none() {
                return Ok(false);
            }
        }
        if self.run.view.has_storage(address)? {
            return collides();
        }
        Ok(false)
    }

    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        // Code is named by its hash: whoever deployed it, it is the same code, so it needs no
        // validation (the account that pointed to it is validated).
        for (_, out) in self.lower.published().rev() {
            if let Some(code) = out.output.diff.codes.get(code_hash) {
                return Ok(Some(code.clone()));
            }
        }
        self.run.view.code(code_hash)
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.run.view.block_hash(number)
    }
}

struct Run<'a> {
    rules: &'a ChainRules,
    env: &'a BlockEnv,
    txs: &'a [RecoveredTx],
    view: &'a (dyn StateView + Sync),
    ranges: Vec<Range<usize>>,
    beneficiary_before: Option<Account>,
    state_clear: bool,
    scheduler: Scheduler,
    threads: usize,
    published: Vec<Mutex<Option<Arc<BatchOut>>>>,
    merged: Mutex<Merged>,
    halt: Mutex<Option<Halt>>,
    executions: AtomicUsize,
    /// Incarnations aborted by validation or stopped to wait for a lower batch.
    lost: AtomicUsize,
    aborts: AtomicUsize,
    contention_fallback: bool,
    /// The next [`BatchOut::serial`]; 0 stands for no output.
    serials: AtomicU64,
}

/// Executes `txs` with Block-STM over batches; the output is identical to
/// [`execute_block`](crate::execute_block)'s.
pub(super) fn execute(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    view: &(dyn StateView + Sync),
    threads: usize,
    contention_fallback: bool,
    stats: &mut ParallelStats,
) -> Result<BlockOutput, Halt> {
    let beneficiary_before = view.account(&env.beneficiary)?;
    if beneficiary_before.is_some_and(|b| b.is_empty()) && view.has_storage(&env.beneficiary)? {
        // Crediting it a zero fee would delete it with its storage mid-block, which the reads
        // of its storage do not see.
        return Err(Halt::Fallback("the fee recipient is empty but has storage"));
    }
    let ranges = batch_ranges(txs.len(), threads);
    let run = Run {
        beneficiary_before,
        contention_fallback,
        ..Run::new(rules, env, txs, view, ranges, threads)
    };
    on_workers(threads, |_| {
        let mut writers = Writers::new(run.ranges.len());
        run.scheduler.work(|task| match task {
            Task::Execute(version) => run.try_execute(version, &mut writers),
            Task::Validate(version) => run.validate(version, &mut writers),
        })
    })?;
    stats.executions = run.executions.load(Ordering::Relaxed);
    stats.aborts = run.aborts.load(Ordering::Relaxed);
    if let Some(halt) = lock(&run.halt).take() {
        return Err(halt);
    }
    run.assemble()
}

/// The block's changes so far, layered batch by batch while later batches execute, so that
/// little is left to layer once the block is done. Speculative: a batch merged here may yet be
/// aborted and run again, so the outputs merged are kept, and the block uses this only if they
/// are the final ones.
#[derive(Default)]
struct Merged {
    diff: StateDiff,
    /// The outputs merged, in batch order.
    batches: Vec<Arc<BatchOut>>,
    /// A batch merged here was replaced: this is of no further use.
    stale: bool,
}

impl<'a> Run<'a> {
    /// A run of `txs` cut into `ranges`, with a fee recipient that does not exist before the
    /// block and no fallback for contention.
    fn new(
        rules: &'a ChainRules,
        env: &'a BlockEnv,
        txs: &'a [RecoveredTx],
        view: &'a (dyn StateView + Sync),
        ranges: Vec<Range<usize>>,
        threads: usize,
    ) -> Self {
        Run {
            rules,
            env,
            txs,
            view,
            beneficiary_before: None,
            state_clear: rules.fork >= crate::Fork::SpuriousDragon,
            scheduler: Scheduler::new(ranges.len(), threads),
            threads,
            published: ranges.iter().map(|_| Mutex::new(None)).collect(),
            ranges,
            merged: Mutex::default(),
            halt: Mutex::new(None),
            executions: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            aborts: AtomicUsize::new(0),
            contention_fallback: false,
            serials: AtomicU64::new(1),
        }
    }

    /// Publishes an incarnation of batch `idx` that ran against the lower outputs `saw`.
    fn publish(
        &self,
        idx: usize,
        (output, fees): (BlockOutput, Option<Vec<U256>>),
        reads: Vec<Read>,
        saw: Box<[u64]>,
    ) {
        let out = BatchOut {
            keys: written_keys(&output.diff),
            reach: gas_reach(&self.txs[self.ranges[idx].clone()], &output.outcomes),
            output,
            fees,
            reads,
            saw,
            serial: self.serials.fetch_add(1, Ordering::Relaxed),
            estimate: AtomicBool::new(false),
        };
        *lock(&self.published[idx]) = Some(Arc::new(out));
    }

    fn stop(&self, halt: Halt) {
        lock(&self.halt).get_or_insert(halt);
        self.scheduler.halt();
    }

    /// The published outputs of the batches below `idx`, with what they wrote added to this
    /// worker's `writers`.
    fn lower<'r>(&'r self, idx: usize, writers: &'r mut Writers) -> Lower<'r> {
        let outs: Vec<_> = self.published[..idx]
            .iter()
            .map(|slot| lock(slot).clone())
            .collect();
        for (batch, out) in outs.iter().enumerate() {
            if let Some(out) = out {
                writers.index(batch, out);
            }
        }
        Lower { writers, outs }
    }

    /// The fee recipient as a batch above `lower` finds it: `Before` if none of them touched
    /// it.
    fn beneficiary(&self, lower: &Lower<'_>) -> Found<Option<Account>> {
        let address = &self.env.beneficiary;
        let mut now = self.beneficiary_before;
        let mut found = false;
        for (idx, out) in lower.published() {
            if let Some(change) = out.output.diff.accounts.get(address) {
                now = change.info;
            } else if let Some(fees) = &out.fees {
                for fee in fees {
                    now = credit_fee(now, *fee, self.state_clear);
                }
            } else {
                continue;
            }
            if out.estimate.load(Ordering::Acquire) {
                return Found::Estimate(idx);
            }
            found = true;
        }
        if found {
            Found::Batch(now)
        } else {
            Found::Before
        }
    }

    fn try_execute(&self, version: Version, writers: &mut Writers) -> Option<Task> {
        let idx = version.idx;
        loop {
            self.executions.fetch_add(1, Ordering::Relaxed);
            let txs = &self.txs[self.ranges[idx].clone()];
            let view = BatchView {
                run: self,
                lower: self.lower(idx, writers),
                // A transaction reads a few locations from outside its batch: its sender, the
                // account it calls, a slot or two. Room for them up front saves copying the
                // list as it grows.
                reads: RefCell::new(Vec::with_capacity(4 * txs.len())),
                stop: Cell::new(None),
            };
            let result = execute_txs(self.rules, self.env, txs, &view, true, true);
            let BatchView {
                lower, reads, stop, ..
            } = view;
            match (result, stop.into_inner()) {
                (_, Some(Stop::Blocked(blocking))) => {
                    if self.scheduler.add_dependency(idx, blocking) {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        self.check_contention();
                        return None;
                    }
                }
                (_, Some(Stop::Fallback(why))) => {
                    self.stop(Halt::Fallback(why));
                    return None;
                }
                (Err(e), None) => {
                    self.stop(Halt::Error(e));
                    return None;
                }
                (Ok(output), None) => {
                    self.publish(idx, output, reads.into_inner(), lower.serials());
                    // Whether it wrote somewhere new is not tracked: the batches above are
                    // validated again after every execution.
                    let next = self.scheduler.finish_execution(version, true);
                    self.merge_published();
                    return next;
                }
            }
        }
    }

    fn check_contention(&self) {
        if !self.contention_fallback {
            return;
        }
        let executions = self.executions.load(Ordering::Relaxed);
        let lost = self.lost.load(Ordering::Relaxed);
        // Judged after a few batches, which are small at first: a block of transactions that
        // all write one slot aborts nearly every batch once.
        if executions >= 4 && 3 * lost >= executions {
            self.stop(Halt::Fallback("contention"));
        }
    }

    /// Whether every read of the batch's last incarnation still finds the value it found.
    /// Usually the outputs below it are those it ran against, or those and some published
    /// since: then only the reads of locations the new ones may have written are resolved
    /// again.
    fn still_valid(&self, idx: usize, writers: &mut Writers) -> bool {
        let Some(out) = lock(&self.published[idx]).clone() else {
            return false;
        };
        let lower = self.lower(idx, writers);
        match lower.published_since(&out.saw) {
            Some(since) if since.iter().all(|bits| *bits == 0) => true,
            Some(since) => out.reads.iter().all(|read| {
                !read.may_be_written_by(lower.writers, &since) || self.finds_again(read, &lower)
            }),
            None => out.reads.iter().all(|read| self.finds_again(read, &lower)),
        }
    }

    /// Whether `read`, resolved again over `lower`, finds the value it found.
    fn finds_again(&self, read: &Read, lower: &Lower<'_>) -> bool {
        match *read {
            Read::Account {
                address,
                before,
                value,
            } => match lower.account(&address) {
                Found::Batch(now) => now == value,
                Found::Before if before => true,
                Found::Before => self.view.account(&address).is_ok_and(|now| now == value),
                Found::Estimate(_) => false,
            },
            Read::Storage {
                address,
                slot,
                before,
                value,
            } => match lower.storage(&address, &slot) {
                Found::Batch(now) => now == value,
                Found::Before if before => true,
                Found::Before => self
                    .view
                    .storage(&address, &slot)
                    .is_ok_and(|now| now == value),
                Found::Estimate(_) => false,
            },
            Read::Beneficiary(value) => match self.beneficiary(lower) {
                Found::Batch(now) => now == value,
                Found::Before => self.beneficiary_before == value,
                Found::Estimate(_) => false,
            },
        }
    }

    fn validate(&self, version: Version, writers: &mut Writers) -> Option<Task> {
        let valid = self.still_valid(version.idx, writers);
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            self.aborts.fetch_add(1, Ordering::Relaxed);
            self.lost.fetch_add(1, Ordering::Relaxed);
            if let Some(out) = &*lock(&self.published[version.idx]) {
                out.estimate.store(true, Ordering::Release);
            }
            self.check_contention();
        }
        self.scheduler.finish_validation(version.idx, aborted)
    }

    /// Layers the published outputs that follow those already merged, in order, unless
    /// another worker is at it.
    fn merge_published(&self) {
        let Some(mut merged) = super::try_lock(&self.merged) else {
            return;
        };
        if merged.stale {
            return;
        }
        if let Some(last) = merged.batches.last() {
            let idx = merged.batches.len() - 1;
            if !lock(&self.published[idx])
                .as_ref()
                .is_some_and(|out| Arc::ptr_eq(out, last))
            {
                merged.stale = true;
                return;
            }
        }
        while merged.batches.len() < self.ranges.len() {
            let Some(out) = lock(&self.published[merged.batches.len()]).clone() else {
                break;
            };
            let range = &self.ranges[merged.batches.len()];
            let (txs, rest) = (range.len(), self.txs.len() - range.start);
            let accounts = &out.output.diff.accounts;
            make_room(&mut merged.diff.accounts, accounts.len(), txs, rest);
            // Entry by entry rather than `StateDiff::merge` of a clone: no second table, and
            // slots copied where they go instead of into a cloned map first.
            for (address, change) in accounts {
                match merged.diff.accounts.entry(*address) {
                    Entry::Occupied(mut e) if !change.storage_cleared => {
                        let existing = e.get_mut();
                        existing.info = change.info;
                        make_room(&mut existing.storage, change.storage.len(), txs, rest);
                        existing
                            .storage
                            .extend(change.storage.iter().map(|(s, v)| (*s, *v)));
                    }
                    Entry::Occupied(mut e) => *e.get_mut() = change.clone(),
                    Entry::Vacant(e) => {
                        e.insert(change.clone());
                    }
                }
            }
            merged
                .diff
                .codes
                .extend(out.output.diff.codes.iter().map(|(h, c)| (*h, c.clone())));
            if let Some(fees) = &out.fees {
                self.credit_fees(&mut merged.diff, fees);
            }
            merged.batches.push(out);
        }
    }

    /// The block from its batches' outputs: receipts with the gas of the batches below added,
    /// the diffs layered in order with each batch's noted fees credited after its changes.
    fn assemble(&self) -> Result<BlockOutput, Halt> {
        let mut outcomes = Vec::with_capacity(self.txs.len());
        let mut gas_used = 0u64;
        let Merged {
            mut diff,
            batches,
            stale,
        } = std::mem::take(&mut *lock(&self.merged));
        // How many leading batches `diff` holds in their final form: all it merged, or none if
        // one of them was run again since.
        let current = batches.iter().zip(&self.published).all(|(merged, slot)| {
            lock(slot)
                .as_ref()
                .is_some_and(|out| Arc::ptr_eq(out, merged))
        });
        let kept = if stale || !current { 0 } else { batches.len() };
        drop(batches);
        if kept == 0 {
            diff = StateDiff::default();
        }
        // What is left of the batches' outputs once their outcomes are taken (their reads,
        // their keys, the diffs already layered into `diff`) is freed on a helper thread: for a
        // block of 10,000 token transfers, 0.1 ms the block need not wait for.
        let mut spent = Vec::with_capacity(self.ranges.len());
        let mut spent_diffs = Vec::with_capacity(kept);
        for idx in 0..self.ranges.len() {
            let BatchOut {
                output,
                fees,
                reads,
                keys,
                reach,
                ..
            } = lock(&self.published[idx])
                .take()
                .and_then(Arc::into_inner)
                .ok_or(Halt::Fallback("a batch's output is missing"))?;
            spent.push((reads, keys));
            if reach > self.env.gas_limit - gas_used {
                // One of its transactions is rejected in its place in the block: the
                // sequential executor says so.
                return Err(Halt::Fallback("a transaction does not fit the block's gas"));
            }
            for mut outcome in output.outcomes {
                if let TxOutcome::Included(receipt) = &mut outcome {
                    gas_used += receipt.gas_used;
                    receipt.cumulative_gas_used = gas_used;
                }
                outcomes.push(outcome);
            }
            if idx < kept {
                spent_diffs.push(output.diff);
                continue;
            }
            if idx == 0 {
                diff = output.diff;
            } else {
                diff.merge(output.diff);
            }
            if let Some(fees) = fees {
                self.credit_fees(&mut diff, &fees);
            }
        }
        super::drop_elsewhere(self.threads, (spent, spent_diffs));
        Ok(BlockOutput {
            outcomes,
            diff,
            gas_used,
        })
    }

    /// Credits `fees` to the fee recipient in `diff`, as the sequential executor's overlay
    /// credits and then writes them (`Overlay::credit_fee`, `Overlay::flush_fees`): a zero
    /// fee to an empty account deletes it (EIP-161), storage and all.
    fn credit_fees(&self, diff: &mut StateDiff, fees: &[U256]) {
        let address = self.env.beneficiary;
        let mut now = match diff.accounts.get(&address) {
            Some(change) => change.info,
            None => self.beneficiary_before,
        };
        let mut changed = false;
        let mut cleared = false;
        for fee in fees {
            let after = credit_fee(now, *fee, self.state_clear);
            if after != now {
                changed = true;
                cleared |= after.is_none();
                now = after;
            }
        }
        if !changed {
            return;
        }
        match diff.accounts.entry(address) {
            Entry::Occupied(mut existing) if !cleared => existing.get_mut().info = now,
            entry => {
                entry.insert_entry(AccountChange {
                    info: now,
                    storage_cleared: cleared,
                    storage: Default::default(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::growth;

    #[test]
    fn batches_cover_the_block_in_order() {
        for n in [1, 2, 3, 15, 16, 17, 100, 145, 1000, 4097, 10_000, 100_000] {
            for threads in [1, 2, 4, 8] {
                let ranges = batch_ranges(n, threads);
                assert_eq!(ranges.first().unwrap().start, 0, "{n} {threads}");
                assert_eq!(ranges.last().unwrap().end, n, "{n} {threads}");
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
                assert!(ranges.iter().all(|r| !r.is_empty() && r.len() <= MAX_BATCH));
            }
        }
        let sizes: Vec<usize> = batch_ranges(10_000, 2).iter().map(|r| r.len()).collect();
        assert_eq!(sizes[0], 16);
        assert_eq!(sizes[sizes.len() - 1], 16);
        assert!(sizes.len() < 32, "{sizes:?}");
    }

    #[test]
    fn a_map_the_whole_block_writes_grows_a_few_times() {
        // A token's slots in a block of 10,000 transfers cut as `batch_ranges` cuts it, two
        // per transfer, layered into a map that grows as hashbrown's does (to a power of two
        // of buckets, seven eighths of them usable).
        let (mut held, mut capacity, mut growths, mut moved) = (0, 0, 0, 0);
        for range in batch_ranges(10_000, 2) {
            let len = 2 * range.len();
            if capacity - held < len {
                let want = held + growth(held, len, range.len(), 10_000 - range.start);
                capacity = (want * 8 / 7).next_power_of_two() * 7 / 8;
                growths += 1;
                moved += held;
            }
            held += len;
        }
        assert_eq!(held, 20_000);
        assert!(growths <= 4, "{growths} growths");
        assert!(moved < 4_000, "{moved} slots moved");
        assert!(capacity < 64_000, "room for {capacity} slots");
        // The same block on the sequential executor, which layers one transaction at a time.
        let (mut held, mut capacity, mut growths, mut moved) = (0, 0, 0, 0);
        for tx in 0..10_000 {
            if capacity - held < 2 {
                let want = held + growth(held, 2, 1, 10_000 - tx);
                capacity = (want * 8 / 7).next_power_of_two() * 7 / 8;
                growths += 1;
                moved += held;
            }
            held += 2;
        }
        assert!(growths <= 5, "{growths} growths");
        assert!(moved < 8_000, "{moved} slots moved");
        assert!(capacity < 64_000, "room for {capacity} slots");
        // A batch of 16 that writes a thousand slots of an account: not a map for a block.
        assert_eq!(growth(0, 1_000, 16, 10_000), 16_000);
        assert_eq!(growth(100, 1_000, 16, 10_000), 17_600);
        // Never less than the batch's own entries, also at the end of the block.
        assert_eq!(growth(500, 50, 16, 16), 50);
        assert_eq!(growth(0, 7, 0, 0), 7);
    }

    #[test]
    fn writers_hold_what_was_written() {
        let a = Address::repeat_byte(1);
        let mut change = AccountChange {
            info: Some(Account::default()),
            ..Default::default()
        };
        change.storage.insert(U256::from(7), U256::from(1));
        let mut diff = StateDiff::default();
        diff.accounts.insert(a, change);
        // Three words of bits per bucket, with a batch in each.
        let mut writers = Writers::new(130);
        for batch in [0, 70, 129] {
            writers.record(batch, &written_keys(&diff));
        }
        let key = account_key(&a);
        let slot = slot_key(key, &U256::from(7));
        fn below_in(writers: &Writers, keys: &[u64], idx: usize) -> Vec<usize> {
            match *keys {
                [k] => writers.below([k], idx).collect(),
                [k, l] => writers.below([k, l], idx).collect(),
                _ => unreachable!(),
            }
        }
        let below = |keys: &[u64], idx| below_in(&writers, keys, idx);
        assert_eq!(below(&[key], 130), [129, 70, 0]);
        assert_eq!(below(&[slot], 130), [129, 70, 0]);
        assert_eq!(below(&[slot], 129), [70, 0]);
        assert_eq!(below(&[slot], 71), [70, 0]);
        assert_eq!(below(&[slot], 70), [0]);
        assert_eq!(below(&[slot], 64), [0]);
        assert!(below(&[slot], 0).is_empty());
        assert!(below(&[cleared_key(key)], 130).is_empty());

        // A deleted account clears its storage: any of its slots may have been written.
        let mut deleted = StateDiff::default();
        deleted.accounts.insert(a, AccountChange::default());
        writers.record(5, &written_keys(&deleted));
        let below = |keys: &[u64], idx| below_in(&writers, keys, idx);
        let other = slot_key(key, &U256::from(8));
        assert_eq!(below(&[other, cleared_key(key)], 130), [5]);
        assert_eq!(below(&[slot, cleared_key(key)], 130), [129, 70, 5, 0]);

        let misses = (0..1000u64)
            .filter(|i| !below(&[slot_key(key, &U256::from(1000 + i))], 130).is_empty())
            .count();
        assert!(misses < 10, "{misses} of 1000 unwritten slots look written");

        // A batch of a thousand token transfers writes some three thousand slots: with one
        // probe per key that would make one unwritten slot in twenty look written by it.
        let mut full = StateDiff::default();
        let mut token = AccountChange {
            info: Some(Account::default()),
            ..Default::default()
        };
        token
            .storage
            .extend((0..3000u64).map(|i| (U256::from(i), U256::from(1))));
        full.accounts.insert(a, token);
        let mut writers = Writers::new(1);
        writers.record(0, &written_keys(&full));
        let misses = (3000..13_000u64)
            .filter(|i| {
                writers
                    .below([slot_key(key, &U256::from(*i))], 1)
                    .next()
                    .is_some()
            })
            .count();
        assert!(
            misses < 200,
            "{misses} of 10,000 unwritten slots look written"
        );
    }

    /// A later batch that ran before a lower one published must be checked against what the
    /// lower one wrote: only the reads it may have changed, each against its value before the
    /// block when that is what the later batch found.
    #[test]
    fn validation_looks_at_what_lower_batches_published_since() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let (slot, other) = (U256::from(7), U256::from(8));
        let mut pre = crate::mem::MemState::default();
        let account = Account {
            nonce: 1,
            ..Account::default()
        };
        pre.accounts.insert(a, account);
        pre.accounts.insert(b, account);
        pre.storage
            .entry(a)
            .or_default()
            .insert(slot, U256::from(5));
        let rules = ChainRules {
            chain_id: 1,
            fork: crate::Fork::Cancun,
        };
        let env = BlockEnv {
            number: 1,
            timestamp: 1,
            beneficiary: Address::repeat_byte(0xfe),
            gas_limit: 30_000_000,
            base_fee: 1,
            prevrandao: Some(B256::ZERO),
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        };
        let run = Run::new(&rules, &env, &[], &pre, vec![0..0, 0..0, 0..0], 1);
        // One worker's index throughout, which must notice outputs replaced since it last
        // looked.
        let mut writers = Writers::new(3);
        let output = |writes: &[(Address, Option<U256>, U256)]| {
            let mut diff = StateDiff::default();
            for (address, slot, value) in writes {
                let change = diff.accounts.entry(*address).or_default();
                change.info = Some(Account {
                    nonce: 1,
                    ..Account::default()
                });
                match slot {
                    Some(slot) => {
                        change.storage.insert(*slot, *value);
                    }
                    None => {
                        change.info = Some(Account {
                            nonce: 2,
                            ..account
                        })
                    }
                }
            }
            let block = BlockOutput {
                outcomes: Vec::new(),
                diff,
                gas_used: 0,
            };
            (block, Some(Vec::new()))
        };
        // Reads of the state before the block: a's slot is 5, b is `account`.
        let reads = |slots: Vec<(Address, U256)>, accounts: Vec<Address>| {
            let slots = slots.into_iter().map(|(address, slot)| Read::Storage {
                address,
                slot,
                before: true,
                value: U256::from(5),
            });
            let accounts = accounts.into_iter().map(|address| Read::Account {
                address,
                before: true,
                value: Some(account),
            });
            slots.chain(accounts).collect::<Vec<_>>()
        };
        let serial = |idx: usize| lock(&run.published[idx]).as_ref().unwrap().serial;

        // Batch 1 read a's slot as it was before the block, before batch 0 had published.
        run.publish(
            1,
            output(&[]),
            reads(vec![(a, slot)], vec![]),
            vec![0].into(),
        );
        assert!(run.still_valid(1, &mut writers));
        run.publish(
            0,
            output(&[(a, Some(other), U256::from(1))]),
            Vec::new(),
            vec![].into(),
        );
        assert!(
            run.still_valid(1, &mut writers),
            "batch 0 wrote another slot"
        );
        run.publish(
            0,
            output(&[(a, Some(slot), U256::from(5))]),
            Vec::new(),
            vec![].into(),
        );
        assert!(
            run.still_valid(1, &mut writers),
            "batch 0 wrote the value it had"
        );
        run.publish(
            0,
            output(&[(a, Some(slot), U256::from(6))]),
            Vec::new(),
            vec![].into(),
        );
        assert!(
            !run.still_valid(1, &mut writers),
            "batch 0 changed the slot batch 1 read"
        );

        // Batch 2 read account b before the block, having seen batch 0's output: a new output
        // of batch 1 is checked against what it wrote.
        run.publish(0, output(&[]), Vec::new(), vec![].into());
        let saw = vec![serial(0), 0].into();
        run.publish(2, output(&[]), reads(vec![], vec![b]), saw);
        assert!(run.still_valid(2, &mut writers));
        run.publish(
            1,
            output(&[(b, None, U256::ZERO)]),
            Vec::new(),
            vec![0].into(),
        );
        assert!(
            !run.still_valid(2, &mut writers),
            "batch 1 changed the account batch 2 read"
        );

        // Batch 2 found account b in batch 1's output, having seen both lower outputs.
        let run = Run::new(&rules, &env, &[], &pre, vec![0..0, 0..0, 0..0], 1);
        // One worker's index throughout, which must notice outputs replaced since it last
        // looked.
        let mut writers = Writers::new(3);
        let serial = |idx: usize| lock(&run.published[idx]).as_ref().unwrap().serial;
        let changed = Some(Account {
            nonce: 2,
            ..account
        });
        let found = || {
            let mut reads = reads(vec![], vec![a]);
            reads.push(Read::Account {
                address: b,
                before: false,
                value: changed,
            });
            reads
        };
        run.publish(0, output(&[]), Vec::new(), vec![].into());
        run.publish(
            1,
            output(&[(b, None, U256::ZERO)]),
            Vec::new(),
            vec![serial(0)].into(),
        );
        run.publish(2, output(&[]), found(), vec![serial(0), serial(1)].into());
        assert!(run.still_valid(2, &mut writers));
        run.publish(
            0,
            output(&[(a, None, U256::ZERO)]),
            Vec::new(),
            vec![].into(),
        );
        assert!(
            !run.still_valid(2, &mut writers),
            "batch 0 ran again and changed account a"
        );
        run.publish(0, output(&[]), Vec::new(), vec![].into());
        run.publish(2, output(&[]), found(), vec![serial(0), serial(1)].into());
        assert!(run.still_valid(2, &mut writers));
        lock(&run.published[1])
            .as_ref()
            .unwrap()
            .estimate
            .store(true, Ordering::Release);
        assert!(
            !run.still_valid(2, &mut writers),
            "batch 2 read from batch 1, which was aborted"
        );
        run.publish(1, output(&[]), Vec::new(), vec![serial(0)].into());
        assert!(
            !run.still_valid(2, &mut writers),
            "batch 1 no longer writes account b"
        );
        run.publish(
            1,
            output(&[(b, None, U256::ZERO)]),
            Vec::new(),
            vec![serial(0)].into(),
        );
        assert!(
            run.still_valid(2, &mut writers),
            "batch 1 wrote the same again"
        );
        run.publish(
            1,
            output(&[(b, Some(slot), U256::ZERO)]),
            Vec::new(),
            vec![serial(0)].into(),
        );
        assert!(
            !run.still_valid(2, &mut writers),
            "batch 1 wrote account b another way"
        );
    }
}
