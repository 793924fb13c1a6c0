//! Block-STM's collaborative scheduler (Gelashvili et al., "Block-STM: Scaling Blockchain
//! Execution by Turning Ordering Curse to a Performance Blessing", 2022, algorithms 4 and 5).
//!
//! Two shared indices hand out work in transaction order: `execution_idx` the next transaction
//! to execute, `validation_idx` the next to validate; validation goes first when it is behind.
//! An abort or a write to a new location pulls an index back down. Per transaction, a status
//! (with its incarnation) and the list of transactions waiting for it are behind their own
//! small locks; there is no lock over the whole block.
//!
//! Unlike the paper, a worker claims a run of consecutive indices at once ([`Claim`]) and works
//! through it before touching the shared indices again. Moving a cache line between cores costs
//! hundreds of nanoseconds on common hardware, as much as a plain transfer's whole execution, so
//! per-transaction updates of shared counters would cost more than they parallelise. Claiming a
//! run is the same as claiming its indices one after another, with two refinements:
//! - a validation run stops before the first transaction that has not executed, so that
//!   validation never runs ahead of execution only to be pulled back when that transaction
//!   writes; and
//! - `active` counts workers holding a claim rather than tasks in flight: every task a worker
//!   runs, follow-ups included, belongs to its current claim, which it gives up only when the
//!   claim is used up and nothing else could be claimed.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    Mutex,
};

use super::{lock, mv::TxIdx, Padded, PerTx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
}

/// The current incarnation of a transaction and its status.
type Incarnation = (usize, Status);

/// One incarnation of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub idx: TxIdx,
    pub incarnation: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    Execute(Version),
    Validate(Version),
}

/// The indices one worker claimed and has not yet turned into tasks.
#[derive(Debug, Default)]
struct Claim {
    validate: bool,
    next: TxIdx,
    end: TxIdx,
    /// Whether this worker is counted in `active`.
    counted: bool,
}

pub(crate) struct Scheduler {
    n: usize,
    /// How many indices a worker claims at once.
    run: usize,
    execution_idx: Padded<AtomicUsize>,
    validation_idx: Padded<AtomicUsize>,
    /// Bumped whenever an index is pulled back, so `check_done` can tell it raced one.
    decrease_cnt: Padded<AtomicUsize>,
    /// Workers holding a claim, and so possibly about to run a task.
    active: Padded<AtomicUsize>,
    done: Padded<AtomicBool>,
    /// Per transaction: its incarnation and status.
    status: PerTx<Mutex<Incarnation>>,
    dependents: PerTx<Mutex<Vec<TxIdx>>>,
}

impl Scheduler {
    pub(crate) fn new(n: usize, threads: usize) -> Self {
        Scheduler {
            n,
            // Several runs per worker, so that one slow run does not leave the others idle at
            // the end, and at most 32 transactions, so that validation stays close behind.
            run: (n / (8 * threads.max(1))).clamp(1, 32),
            execution_idx: Padded(AtomicUsize::new(0)),
            validation_idx: Padded(AtomicUsize::new(0)),
            decrease_cnt: Padded(AtomicUsize::new(0)),
            active: Padded(AtomicUsize::new(0)),
            done: Padded(AtomicBool::new(n == 0)),
            status: PerTx::new(n, || Mutex::new((0, Status::ReadyToExecute))),
            dependents: PerTx::new(n, Mutex::default),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(SeqCst)
    }

    /// Stops every worker (a fallback or an error was decided).
    pub(crate) fn halt(&self) {
        self.done.store(true, SeqCst);
    }

    fn decrease_execution_idx(&self, target: TxIdx) {
        self.execution_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn decrease_validation_idx(&self, target: TxIdx) {
        self.validation_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(SeqCst);
        let execution = self.execution_idx.load(SeqCst);
        let validation = self.validation_idx.load(SeqCst);
        if execution.min(validation) >= self.n
            && self.active.load(SeqCst) == 0
            && observed == self.decrease_cnt.load(SeqCst)
        {
            self.done.store(true, SeqCst);
        }
    }

    /// Claims `idx` for execution if it is ready.
    fn try_incarnate(&self, idx: TxIdx) -> Option<Version> {
        if idx >= self.n {
            return None;
        }
        let mut status = lock(&self.status[idx]);
        if status.1 == Status::ReadyToExecute {
            status.1 = Status::Executing;
            Some(Version {
                idx,
                incarnation: status.0,
            })
        } else {
            None
        }
    }

    /// The version of `idx` to validate, if it has executed.
    fn executed(&self, idx: TxIdx) -> Option<Version> {
        let (incarnation, status) = *lock(&self.status[idx]);
        (status == Status::Executed).then_some(Version { idx, incarnation })
    }

    /// Claims the executed transactions from `validation_idx` on, up to a run, if validation is
    /// behind execution.
    fn claim_validation(&self, claim: &mut Claim) -> bool {
        loop {
            let start = self.validation_idx.load(SeqCst);
            let limit = self.execution_idx.load(SeqCst).min(self.n);
            if start >= limit {
                return false;
            }
            let stop = limit.min(start + self.run);
            let end = (start..stop)
                .find(|&idx| self.executed(idx).is_none())
                .unwrap_or(stop);
            if end == start {
                // The next one to validate is still executing; whoever runs it goes on.
                return false;
            }
            if self
                .validation_idx
                .compare_exchange(start, end, SeqCst, SeqCst)
                .is_ok()
            {
                *claim = Claim {
                    validate: true,
                    next: start,
                    end,
                    counted: claim.counted,
                };
                return true;
            }
        }
    }

    /// Claims a run of transactions to execute from `execution_idx` on.
    fn claim_execution(&self, claim: &mut Claim) -> bool {
        if self.execution_idx.load(SeqCst) >= self.n {
            return false;
        }
        let start = self.execution_idx.fetch_add(self.run, SeqCst);
        if start >= self.n {
            return false;
        }
        *claim = Claim {
            validate: false,
            next: start,
            end: (start + self.run).min(self.n),
            counted: claim.counted,
        };
        true
    }

    /// The next task, or `None` when there is nothing to do right now.
    fn next_task(&self, claim: &mut Claim) -> Option<Task> {
        loop {
            while claim.next < claim.end {
                let idx = claim.next;
                claim.next += 1;
                let task = if claim.validate {
                    self.executed(idx).map(Task::Validate)
                } else {
                    self.try_incarnate(idx).map(Task::Execute)
                };
                if task.is_some() {
                    return task;
                }
            }
            if !claim.counted {
                // Counted before claiming: a worker that sees both indices at the end and no
                // one counted knows that no claim is being worked on.
                self.active.fetch_add(1, SeqCst);
                claim.counted = true;
            }
            if self.claim_validation(claim) || self.claim_execution(claim) {
                continue;
            }
            self.active.fetch_sub(1, SeqCst);
            claim.counted = false;
            self.check_done();
            return None;
        }
    }

    /// One worker's loop: runs `task` on each task it takes (which may hand back a follow-up)
    /// until the block is done.
    pub(crate) fn work(&self, mut task: impl FnMut(Task) -> Option<Task>) {
        let mut next = None;
        let mut claim = Claim::default();
        let mut idle = 0u32;
        while !self.done() {
            next = match next {
                Some(t) => task(t),
                None => {
                    let next = self.next_task(&mut claim);
                    if next.is_some() {
                        idle = 0;
                    } else if idle < 64 {
                        // Usually another worker is about to finish the transaction this one
                        // could not take yet: a moment, not a system call.
                        idle += 1;
                        std::hint::spin_loop();
                    } else {
                        // Others hold the remaining work; with more workers than cores,
                        // spinning would take the core from the one that could finish it.
                        std::thread::yield_now();
                    }
                    next
                }
            };
        }
    }

    /// `idx` read an ESTIMATE (or a missing fee) of `blocking`: park it until `blocking` has
    /// executed. Returns false if `blocking` already has, in which case the caller retries.
    pub(crate) fn add_dependency(&self, idx: TxIdx, blocking: TxIdx) -> bool {
        let mut dependents = lock(&self.dependents[blocking]);
        if lock(&self.status[blocking]).1 == Status::Executed {
            return false;
        }
        lock(&self.status[idx]).1 = Status::Aborting;
        dependents.push(idx);
        true
    }

    fn set_ready(&self, idx: TxIdx) {
        let mut status = lock(&self.status[idx]);
        *status = (status.0 + 1, Status::ReadyToExecute);
    }

    /// Records that `version` executed; `wrote_new` if it wrote a location its previous
    /// incarnation did not. May return the validation of this same version as the next task.
    pub(crate) fn finish_execution(&self, version: Version, wrote_new: bool) -> Option<Task> {
        let idx = version.idx;
        {
            let mut status = lock(&self.status[idx]);
            debug_assert_eq!(status.1, Status::Executing);
            status.1 = Status::Executed;
        }
        let waiting = std::mem::take(&mut *lock(&self.dependents[idx]));
        if let Some(&first) = waiting.iter().min() {
            for &d in &waiting {
                self.set_ready(d);
            }
            self.decrease_execution_idx(first);
        }
        if self.validation_idx.load(SeqCst) > idx {
            if wrote_new {
                self.decrease_validation_idx(idx);
            } else {
                return Some(Task::Validate(version));
            }
        }
        None
    }

    /// Whether this validation gets to abort `version` (only one of concurrent failures does).
    pub(crate) fn try_validation_abort(&self, version: Version) -> bool {
        let mut status = lock(&self.status[version.idx]);
        if *status == (version.incarnation, Status::Executed) {
            status.1 = Status::Aborting;
            true
        } else {
            false
        }
    }

    /// Records a validation; after an abort, everything above must be validated again and the
    /// aborted transaction is returned for re-execution if execution has already passed it.
    pub(crate) fn finish_validation(&self, idx: TxIdx, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready(idx);
            self.decrease_validation_idx(idx + 1);
            if self.execution_idx.load(SeqCst) > idx {
                if let Some(version) = self.try_incarnate(idx) {
                    return Some(Task::Execute(version));
                }
            }
        }
        None
    }
}
