//! Block-STM's collaborative scheduler (Gelashvili et al., "Block-STM: Scaling Blockchain
//! Execution by Turning Ordering Curse to a Performance Blessing", 2022, algorithms 4 and 5).
//!
//! Two shared indices hand out work in transaction order: `execution_idx` the next transaction
//! to execute, `validation_idx` the next to validate; validation goes first when it is behind.
//! An abort or a write to a new location pulls an index back down. Per transaction, a status
//! (with its incarnation) and the list of transactions waiting for it are behind their own
//! small locks; there is no lock over the whole block.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    Mutex,
};

use super::{lock, mv::TxIdx, Padded};

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

pub(crate) struct Scheduler {
    n: usize,
    execution_idx: Padded<AtomicUsize>,
    validation_idx: Padded<AtomicUsize>,
    /// Bumped whenever an index is pulled back, so `check_done` can tell it raced one.
    decrease_cnt: Padded<AtomicUsize>,
    /// Tasks handed out and not finished.
    active: Padded<AtomicUsize>,
    done: Padded<AtomicBool>,
    /// Per transaction: its incarnation and status.
    status: Box<[Padded<Mutex<Incarnation>>]>,
    dependents: Box<[Padded<Mutex<Vec<TxIdx>>>]>,
}

impl Scheduler {
    pub(crate) fn new(n: usize) -> Self {
        Scheduler {
            n,
            execution_idx: Padded(AtomicUsize::new(0)),
            validation_idx: Padded(AtomicUsize::new(0)),
            decrease_cnt: Padded(AtomicUsize::new(0)),
            active: Padded(AtomicUsize::new(0)),
            done: Padded(AtomicBool::new(n == 0)),
            status: (0..n)
                .map(|_| Padded(Mutex::new((0, Status::ReadyToExecute))))
                .collect(),
            dependents: (0..n).map(|_| Padded::default()).collect(),
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

    /// Claims `idx` for execution if it is ready. Does not touch the active count.
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

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.active.fetch_add(1, SeqCst);
        let idx = self.execution_idx.fetch_add(1, SeqCst);
        let version = self.try_incarnate(idx);
        if version.is_none() {
            self.active.fetch_sub(1, SeqCst);
        }
        version
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.active.fetch_add(1, SeqCst);
        let idx = self.validation_idx.fetch_add(1, SeqCst);
        if idx < self.n {
            let (incarnation, status) = *lock(&self.status[idx]);
            if status == Status::Executed {
                return Some(Version { idx, incarnation });
            }
        }
        self.active.fetch_sub(1, SeqCst);
        None
    }

    /// The next task, or `None` when there is nothing to do right now.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if self.validation_idx.load(SeqCst) < self.execution_idx.load(SeqCst) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
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
        self.active.fetch_sub(1, SeqCst);
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
        self.active.fetch_sub(1, SeqCst);
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
        self.active.fetch_sub(1, SeqCst);
        None
    }
}
