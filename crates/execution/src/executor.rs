//! The sequential block executor: transactions one after another on revm, each seeing the
//! effects of the ones before it through an in-memory overlay over the [`StateView`].

use crate::{
    collision::{Eip7610, StorageCollisions},
    fork::{eip1283_sstore, Fork},
    receipts::receipts_root,
    state::{StateError, StateView},
    transfer::{credit_fee, PlainTransfer, TRANSFER_GAS},
    tx::RecoveredTx,
};
use alloy_consensus::Transaction as _;
use alloy_primitives::{
    map::{AddressMap, AddressSet, B256Map, HashMap},
    Address, Bloom, Bytes, B256, U256,
};
use revm::{
    bytecode::opcode::SSTORE,
    bytecode::Bytecode,
    context::{
        result::{EVMError, ExecutionResult, HaltReason, Output, ResultAndState},
        BlockEnv as RevmBlockEnv, CfgEnv, Context, ContextSetters, Journal, TxEnv,
    },
    context_interface::{ContextTr, JournalTr},
    database_interface::{DBErrorMarker, Database},
    handler::{EvmTr, EvmTrError, FrameResult, FrameTr, Handler},
    interpreter::interpreter_action::FrameInit,
    interpreter::Instruction,
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
    state::{AccountInfo, EvmState},
    ExecuteEvm, InspectEvm, MainBuilder, MainContext, MainnetEvm,
};
use std::{collections::hash_map::Entry, marker::PhantomData};
use tessera_primitives::{Account, AccountChange, Receipt, StateDiff, TxStatus};

impl DBErrorMarker for StateError {}

/// Chain-wide execution rules, fixed in genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRules {
    pub chain_id: u64,
    /// The Ethereum fork whose rules apply.
    pub fork: Fork,
}

/// The block a list of transactions executes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEnv {
    pub number: u64,
    pub timestamp: u64,
    /// Receives the priority fees.
    pub beneficiary: Address,
    pub gas_limit: u64,
    /// EIP-1559 base fee per gas; burned.
    pub base_fee: u64,
    /// PREVRANDAO after the merge; `None` before.
    pub prevrandao: Option<B256>,
    /// DIFFICULTY before the merge.
    pub difficulty: U256,
    /// EIP-4844 excess blob gas, from Cancun on.
    pub excess_blob_gas: Option<u64>,
}

/// Why a transaction could not be included in the block. State is untouched by it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The transaction breaks a validity rule (nonce, balance, intrinsic gas, fee caps, ...).
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// Its gas limit does not fit in what is left of the block's gas.
    #[error("gas limit {gas_limit} exceeds the block's remaining gas {remaining}")]
    BlockGasExceeded { gas_limit: u64, remaining: u64 },
}

/// What happened to one transaction of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    Included(Receipt),
    Rejected(Rejection),
}

impl TxOutcome {
    /// The receipt, if the transaction was included.
    pub fn receipt(&self) -> Option<&Receipt> {
        match self {
            TxOutcome::Included(r) => Some(r),
            TxOutcome::Rejected(_) => None,
        }
    }
}

/// The result of executing a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutput {
    /// One outcome per input transaction, in order.
    pub outcomes: Vec<TxOutcome>,
    /// The combined effect of all included transactions.
    pub diff: StateDiff,
    pub gas_used: u64,
}

impl BlockOutput {
    /// Receipts of the included transactions, in order.
    pub fn receipts(&self) -> impl Iterator<Item = &Receipt> {
        self.outcomes.iter().filter_map(TxOutcome::receipt)
    }

    /// The block's logs bloom. Computed on demand: it is part of the header, not of execution.
    pub fn logs_bloom(&self) -> Bloom {
        let mut bloom = Bloom::default();
        for r in self.receipts() {
            bloom.accrue_bloom(&r.bloom());
        }
        bloom
    }

    /// Ethereum receipts root over the included transactions' receipts. Computed on demand, like
    /// the state root, by whoever builds the header.
    pub fn receipts_root(&self) -> B256 {
        receipts_root(&self.receipts().collect::<Vec<_>>())
    }
}

/// revm's mainnet handler without the fee recipient's credit, which the block applies later.
pub(crate) struct DeferredReward<EVM, ERROR>(pub PhantomData<(EVM, ERROR)>);

impl<EVM, ERROR> Handler for DeferredReward<EVM, ERROR>
where
    EVM: EvmTr<
        Context: ContextTr<Journal: JournalTr<State = EvmState>>,
        Frame: FrameTr<FrameResult = FrameResult, FrameInit = FrameInit>,
    >,
    ERROR: EvmTrError<EVM>,
{
    type Evm = EVM;
    type Error = ERROR;
    type HaltReason = HaltReason;

    fn reward_beneficiary(
        &self,
        _evm: &mut Self::Evm,
        _exec_result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What the fee recipient earns for a transaction, as revm's `reward_beneficiary` computes it:
/// the price above the base fee (the whole price before London) for each unit of gas used.
pub(crate) fn priority_fee(
    effective_gas_price: u128,
    base_fee: u64,
    spec: SpecId,
    gas: u64,
) -> U256 {
    let tip = if spec.is_enabled_in(SpecId::LONDON) {
        effective_gas_price.saturating_sub(u128::from(base_fee))
    } else {
        effective_gas_price
    };
    U256::from(tip) * U256::from(gas)
}

/// A failure that stops the block: state could not be read, or revm failed internally.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("block environment rejected: {0}")]
    Header(String),
    #[error("evm failure: {0}")]
    Evm(String),
}

/// Room to make in a map of a block's changes holding `held` entries that `len` entries from
/// `txs` transactions do not fit, with `rest` transactions left in the block from those on: as
/// many as the rest of the block adds at their rate, so that a map the whole block writes to
/// (the accounts, a token's slots) grows two or three times instead of a dozen, each time
/// moving everything it holds. At most sixteen times what it will hold, so that an account a
/// few early transactions wrote and no others does not get a map sized for the block.
pub(crate) fn growth(held: usize, len: usize, txs: usize, rest: usize) -> usize {
    (len * rest / txs.max(1)).min(16 * (held + len)).max(len)
}

/// Makes room in `map` for `len` entries from `txs` transactions, with `rest` left in the block
/// from those on, by [`growth`] if they do not fit.
pub(crate) fn make_room<K, V, S>(map: &mut HashMap<K, V, S>, len: usize, txs: usize, rest: usize)
where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    if map.capacity() - map.len() < len {
        map.reserve(growth(map.len(), len, txs, rest));
    }
}

/// About how many accounts `txs` change: every sender, and the recipient of every transaction
/// that moves value (a contract call without value, such as a token transfer, changes the
/// contract's storage but seldom another account), judged from a sample of 64 transactions.
///
/// Room for twice as many as a block changes (a sender and a recipient for every transaction)
/// spreads a block of 10,000 counter increments over a table of 5 MB instead of 2.5 MB, which
/// made it about 8% slower in `tessera-exec bench`; room for too few makes the map grow in the
/// middle of the block, moving every entry.
fn accounts_changed(txs: &[RecoveredTx]) -> usize {
    const SAMPLE: usize = 64;
    let step = (txs.len() / SAMPLE).max(1);
    let (sampled, paying) = txs.iter().step_by(step).fold((0, 0), |(n, p), tx| {
        (n + 1, p + usize::from(!tx.envelope.value().is_zero()))
    });
    txs.len() + txs.len() * paying / sampled.max(1)
}

/// Layers a transaction's effects on top of the block's changes so far, as [`StateDiff::merge`]
/// does; `rest` transactions are left in the block from this one on.
fn merge_effects(
    diff: &mut StateDiff,
    state: &EvmState,
    spec: SpecId,
    kept: Option<Address>,
    rest: usize,
) {
    for (address, effect) in effects(state, spec) {
        if Some(address) == kept && effect.left().is_empty() {
            // A fee recipient the transaction touched and left empty, as it found it: revm
            // deletes it (EIP-161) or, before Spurious Dragon, marks it created, where with its
            // fee credited inside the transaction it would have stayed as it was. The fee is
            // credited after, so nothing of it is merged.
            continue;
        }
        if let Some((hash, code)) = effect.new_code() {
            diff.codes.insert(hash, code);
        }
        let storage = effect.storage();
        match diff.accounts.entry(address) {
            Entry::Occupied(mut existing) if !effect.cleared => {
                let existing = existing.get_mut();
                existing.info = effect.info;
                make_room(&mut existing.storage, storage.clone().count(), 1, rest);
                existing.storage.extend(storage);
            }
            entry => {
                entry.insert_entry(AccountChange {
                    info: effect.info,
                    storage_cleared: effect.cleared,
                    storage: storage.collect(),
                });
            }
        }
    }
}

/// The state as transactions of the block see it: the view, with the block's changes so far on
/// top. Implements revm's `Database`.
pub(crate) struct Overlay<'a, S: ?Sized> {
    view: &'a S,
    /// The block's changes so far: the block's output once every transaction has run.
    diff: StateDiff,
    /// `view.has_storage` by address: the view does not change during the block.
    view_has_storage: AddressMap<bool>,
    /// Accounts the current transaction loaded that a creation may not overwrite because of
    /// their storage alone (EIP-7610). Almost always empty.
    storage_collisions: AddressSet,
    /// The current transaction's sender: never the target of a creation in its own transaction
    /// (that would take a hash collision), so not checked.
    sender: Address,
    /// Analysed bytecode by hash: revm asks again in every transaction.
    codes: CodeCache,
    /// The block's fee recipient, whose fees are credited here rather than by revm.
    beneficiary: Address,
    /// EIP-161: a touched empty account is deleted.
    state_clear: bool,
    /// The fee recipient with the fees credited since its entry in `diff` was last written;
    /// written there before anything reads it and at the end of the block.
    fees: Option<PendingFees>,
    /// While `Some`, fees are only noted, in order, without reading the fee recipient: a batch
    /// of Block-STM over batches (see `parallel::batches`) does not know the fees of the
    /// batches below it, and reading the account would make every batch depend on all of
    /// them. The first read of the fee recipient credits the noted fees and ends this.
    fee_log: Option<Vec<U256>>,
}

/// Fees credited to the fee recipient but not yet in the block's changes.
#[derive(Clone, Copy)]
struct PendingFees {
    account: Option<Account>,
    /// Whether one of the credits deleted it (a zero fee to an empty account, EIP-161), which
    /// takes its storage with it.
    cleared: bool,
}

impl<'a, S: StateView + ?Sized> Overlay<'a, S> {
    pub(crate) fn new(view: &'a S) -> Self {
        Self::with_capacity(view, 0, Address::ZERO, true)
    }

    /// An overlay with room for `accounts` changed accounts.
    fn with_capacity(
        view: &'a S,
        accounts: usize,
        beneficiary: Address,
        state_clear: bool,
    ) -> Self {
        Overlay {
            view,
            diff: StateDiff {
                accounts: AddressMap::with_capacity_and_hasher(accounts, Default::default()),
                codes: Default::default(),
            },
            view_has_storage: AddressMap::default(),
            storage_collisions: AddressSet::default(),
            sender: Address::ZERO,
            codes: CodeCache::default(),
            beneficiary,
            state_clear,
            fees: None,
            fee_log: None,
        }
    }

    /// Credits the fee recipient one transaction's fee, as revm's handler would at the end of
    /// that transaction: paying touches it, so a zero fee deletes an empty one (EIP-161).
    fn credit_fee(&mut self, fee: U256) -> Result<(), StateError> {
        if let Some(log) = &mut self.fee_log {
            log.push(fee);
            return Ok(());
        }
        if let Some(PendingFees {
            account: Some(account),
            ..
        }) = &mut self.fees
        {
            if !account.balance.is_zero() {
                // Credited before and not empty: a credit only adds, in place, without the
                // copies and comparisons below (a block of small transactions credits one
                // after another).
                account.balance += fee;
                return Ok(());
            }
        }
        let (now, cleared) = match self.fees {
            Some(pending) => (pending.account, pending.cleared),
            None => (self.account(&self.beneficiary)?, false),
        };
        let after = credit_fee(now, fee, self.state_clear);
        if after != now {
            self.fees = Some(PendingFees {
                account: after,
                cleared: cleared || after.is_none(),
            });
        }
        Ok(())
    }

    /// Credits the noted fees, if fees are being noted: the fee recipient is about to be read.
    fn credit_noted_fees(&mut self) -> Result<(), StateError> {
        if let Some(log) = self.fee_log.take() {
            for fee in log {
                self.credit_fee(fee)?;
            }
        }
        Ok(())
    }

    /// Writes the pending fees into the fee recipient's entry, as merging each credit's change
    /// in turn would have.
    fn flush_fees(&mut self) {
        let Some(pending) = self.fees.take() else {
            return;
        };
        match self.diff.accounts.entry(self.beneficiary) {
            Entry::Occupied(mut existing) if !pending.cleared => {
                existing.get_mut().info = pending.account;
            }
            entry => {
                entry.insert_entry(AccountChange {
                    info: pending.account,
                    storage_cleared: pending.cleared,
                    storage: Default::default(),
                });
            }
        }
    }

    /// Starts a transaction (or its re-execution): collisions are noted per transaction,
    /// against the state as the transaction finds it.
    fn begin_tx(&mut self, sender: Address) {
        self.storage_collisions.clear();
        self.sender = sender;
    }

    /// The account with the block's changes so far.
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        match self.diff.accounts.get(address) {
            Some(change) => Ok(change.info),
            None => self.view.account(address),
        }
    }

    /// Sets an account's fields, keeping its storage; `None` deletes it with its storage. The
    /// same as merging a transaction's effect on it that writes no slot.
    fn set_account(&mut self, address: Address, account: Option<Account>) {
        match (self.diff.accounts.entry(address), account) {
            (Entry::Occupied(mut existing), Some(info)) => existing.get_mut().info = Some(info),
            (entry, info) => {
                entry.insert_entry(AccountChange {
                    info,
                    storage_cleared: info.is_none(),
                    storage: Default::default(),
                });
            }
        }
    }

    /// Applies `tx` if it turns out to be a plain transfer between accounts without code,
    /// paying its tip as revm would. `None` leaves it, untouched, to revm.
    fn transfer(
        &mut self,
        transfer: &PlainTransfer,
        tx: &RecoveredTx,
    ) -> Result<Option<()>, StateError> {
        let sender = self.account(&tx.sender)?;
        let recipient = self.account(&transfer.to)?;
        let Some(done) = transfer.apply(sender, recipient) else {
            return Ok(None);
        };
        self.set_account(tx.sender, Some(done.sender));
        self.set_account(transfer.to, Some(done.recipient));
        self.credit_fee(transfer.tip)?;
        Ok(Some(()))
    }

    /// Whether the current transaction loaded an account only EIP-7610 forbids creating over.
    fn saw_storage_collision(&self) -> bool {
        !self.storage_collisions.is_empty()
    }

    /// Whether the account has nonzero storage in the view with the block's changes on top.
    fn has_storage(&mut self, address: &Address) -> Result<bool, StateError> {
        if let Some(change) = self.diff.accounts.get(address) {
            if change.storage.values().any(|v| !v.is_zero()) {
                return Ok(true);
            }
            if change.storage_cleared || change.info.is_none() {
                return Ok(false);
            }
            // Not cleared and no nonzero write: the view decides. Zero writes could in theory
            // have emptied the view's storage, but this is only asked about accounts with nonce
            // 0 and no code, whose storage the block can change only by deleting or creating
            // them, both of which clear it.
        }
        if let Some(&has) = self.view_has_storage.get(address) {
            return Ok(has);
        }
        let has = self.view.has_storage(address)?;
        self.view_has_storage.insert(*address, has);
        Ok(has)
    }
}

impl<S: ?Sized> StorageCollisions for Overlay<'_, S> {
    fn collides_by_storage(&self, address: &Address) -> bool {
        self.storage_collisions.contains(address)
    }
}

impl<S: StateView + ?Sized> Database for Overlay<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        if address == self.beneficiary {
            self.credit_noted_fees()?;
            self.flush_fees();
        }
        let account = self.account(&address)?;
        // revm refuses creation over a nonce or code by itself; storage is for us to check.
        if let Some(a) = &account {
            let bare = a.nonce == 0 && a.code_hash == KECCAK_EMPTY && address != self.sender;
            if bare && self.has_storage(&address)? {
                self.storage_collisions.insert(address);
            }
        }
        Ok(account.map(account_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        let (view, diff) = (self.view, &self.diff);
        self.codes
            .get(code_hash, || match diff.codes.get(&code_hash) {
                Some(b) => Ok(Some(b.clone())),
                None => view.code(&code_hash),
            })
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, StateError> {
        if address == self.beneficiary {
            // A pending credit may have deleted it, storage and all.
            self.credit_noted_fees()?;
            self.flush_fees();
        }
        if let Some(change) = self.diff.accounts.get(&address) {
            if let Some(v) = change.storage.get(&slot) {
                return Ok(*v);
            }
            if change.storage_cleared || change.info.is_none() {
                return Ok(U256::ZERO);
            }
        }
        self.view.storage(&address, &slot)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.view.block_hash(number)
    }
}

/// What one transaction did to one account it changed, read off revm's post-transaction state.
pub(crate) struct Effect<'a> {
    /// The account afterwards; `None` deletes it with its storage.
    pub info: Option<Account>,
    /// Whether its storage was emptied first (created, or deleted).
    pub cleared: bool,
    /// Whether its code hash changed.
    code_changed: bool,
    /// Whether its nonce, balance, code or existence may have changed: false when only its
    /// storage did.
    pub info_changed: bool,
    account: &'a revm::state::Account,
}

impl Effect<'_> {
    /// The slots written, with their new values; none when the account is deleted.
    pub(crate) fn storage(&self) -> impl Iterator<Item = (U256, U256)> + Clone + '_ {
        let created = self.info.is_some() && self.cleared;
        let deleted = self.info.is_none();
        self.account
            .storage
            .iter()
            .filter(move |(_, slot)| !deleted && (created || slot.is_changed()))
            .map(|(k, slot)| (*k, slot.present_value()))
    }

    /// The account as revm left it, even when it is deleted for being empty.
    pub(crate) fn left(&self) -> Account {
        Account {
            nonce: self.account.info.nonce,
            balance: self.account.info.balance,
            code_hash: self.account.info.code_hash,
        }
    }

    /// Code the account was given, if any.
    pub(crate) fn new_code(&self) -> Option<(B256, Bytes)> {
        let info = &self.account.info;
        let fresh = self.account.is_created() || self.code_changed;
        if self.info.is_none() || !fresh || info.code_hash == KECCAK_EMPTY {
            return None;
        }
        info.code
            .as_ref()
            .map(|code| (info.code_hash, code.original_bytes()))
    }
}

/// The accounts a transaction changed, in revm's (unordered) post-state. Self-destructed
/// accounts and accounts left empty after being touched (EIP-161) are deleted with their
/// storage. Accounts touched without being changed are left out, so that what a transaction
/// changed is the same whichever executor ran it.
pub(crate) fn effects(
    state: &EvmState,
    spec: SpecId,
) -> impl Iterator<Item = (Address, Effect<'_>)> + '_ {
    state.iter().filter_map(move |(address, account)| {
        if !account.is_touched() {
            return None;
        }
        let existed = !account.is_loaded_as_not_existing();
        if account.is_selfdestructed() || account.state_clear_aware_is_empty(spec) {
            return existed.then_some((
                *address,
                Effect {
                    info: None,
                    cleared: true,
                    code_changed: false,
                    info_changed: true,
                    account,
                },
            ));
        }
        let created = account.is_created();
        // Balance, nonce or code hash differ from what the transaction found.
        let info_changed = account.is_changed();
        if existed && !created && !info_changed && !account.storage.values().any(|s| s.is_changed())
        {
            return None;
        }
        // Only code an account keeps counts as new: the original is a clone (revm boxes it,
        // with its code), so it is only looked at when there is code to compare.
        let code_changed = !created
            && info_changed
            && account.info.code_hash != KECCAK_EMPTY
            && account.info.code_hash != account.original_info().code_hash;
        let info = Account {
            nonce: account.info.nonce,
            balance: account.info.balance,
            code_hash: account.info.code_hash,
        };
        Some((
            *address,
            Effect {
                info: Some(info),
                cleared: created,
                code_changed,
                info_changed: created || !existed || info_changed,
                account,
            },
        ))
    })
}

impl Effect<'_> {
    /// The effect as a state diff's entry.
    pub(crate) fn change(&self) -> AccountChange {
        AccountChange {
            info: self.info,
            storage_cleared: self.cleared,
            storage: self.storage().collect(),
        }
    }
}

/// revm's view of an account. Code is left for `code_by_hash`, unless there is none.
pub(crate) fn account_info(a: Account) -> AccountInfo {
    // Every field spelled out: `..Default::default()` would build and drop a default code, two
    // atomic reference-count updates on every account load.
    AccountInfo {
        balance: a.balance,
        nonce: a.nonce,
        code_hash: a.code_hash,
        account_id: None,
        // `None` makes revm fetch the code through `code_by_hash` when it needs it.
        code: (a.code_hash == KECCAK_EMPTY).then(Bytecode::default),
    }
}

/// Analysed bytecode by hash, for one executor and one block: revm asks for the code of every
/// contract a transaction calls, in every transaction. The code handed out last is kept beside
/// the map: transactions in a row often call the same contract (a token, a pool, a counter),
/// and comparing two hashes costs less than hashing one.
#[derive(Default)]
pub(crate) struct CodeCache {
    last: Option<(B256, Bytecode)>,
    codes: B256Map<Bytecode>,
}

impl CodeCache {
    /// Analysed bytecode for `code_hash`: from here, from the analysed code kept across
    /// blocks, or fetched, analysed and kept in both.
    pub(crate) fn get(
        &mut self,
        code_hash: B256,
        fetch: impl FnOnce() -> Result<Option<Bytes>, StateError>,
    ) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        if let Some((hash, code)) = &self.last {
            if *hash == code_hash {
                return Ok(code.clone());
            }
        }
        let code = match self.codes.get(&code_hash) {
            Some(code) => code.clone(),
            None => {
                let code = match AnalysedCode::get(&code_hash) {
                    Some(code) => code,
                    None => {
                        let bytes = fetch()?
                            .ok_or_else(|| StateError(format!("code {code_hash} missing")))?;
                        let code = analyse(bytes);
                        AnalysedCode::insert(code_hash, &code);
                        code
                    }
                };
                self.codes.insert(code_hash, code.clone());
                code
            }
        };
        self.last = Some((code_hash, code.clone()));
        Ok(code)
    }
}

/// Analysed bytecode kept from block to block, by code hash. Code never changes under its hash,
/// so what is kept is right for every block and every state; and analysing a large contract's
/// jump table costs more than a typical call into it (an eighth of the mainnet fixture blocks'
/// execution when every block analysed afresh). Bounded by code size: when full it starts over.
///
/// Kept twice: once for the process, and once per thread in a copy of that thread's own. revm
/// clones and drops the `Bytecode` (an `Arc`) it runs several times per transaction, and with
/// one copy for all threads every clone moved the cache line of its reference count between
/// the cores executing: with two workers on a block of token transfers, 7% of their execution.
#[derive(Default)]
struct AnalysedCode {
    codes: HashMap<B256, Bytecode>,
    bytes: usize,
}

thread_local! {
    static THREAD_CODE: std::cell::RefCell<AnalysedCode> =
        std::cell::RefCell::new(AnalysedCode::default());
}

impl AnalysedCode {
    /// About 2,700 contracts of the 24 KiB maximum; mainnet blocks call far fewer.
    const MAX_BYTES: usize = 64 << 20;
    /// Per thread: a quarter of the process's, since every executing thread holds its own.
    const THREAD_MAX_BYTES: usize = Self::MAX_BYTES / 4;

    fn shared() -> std::sync::MutexGuard<'static, AnalysedCode> {
        static SHARED: std::sync::OnceLock<std::sync::Mutex<AnalysedCode>> =
            std::sync::OnceLock::new();
        SHARED
            .get_or_init(Default::default)
            .lock()
            // Entries are whole values, inserted under the lock: a panic elsewhere cannot leave
            // a torn one.
            .unwrap_or_else(|e| e.into_inner())
    }

    /// This thread's analysed copy of the code under `code_hash`, if the process has one.
    fn get(code_hash: &B256) -> Option<Bytecode> {
        if let Some(code) = THREAD_CODE.with_borrow(|own| own.codes.get(code_hash).cloned()) {
            return Some(code);
        }
        let shared = Self::shared().codes.get(code_hash).cloned()?;
        // Analysed again rather than cloned: a clone would share the reference count.
        let own = analyse(Bytes::copy_from_slice(shared.original_byte_slice()));
        THREAD_CODE.with_borrow_mut(|mine| mine.keep(*code_hash, &own, Self::THREAD_MAX_BYTES));
        Some(own)
    }

    /// Keeps `code`, analysed on this thread, for this thread and for the process.
    fn insert(code_hash: B256, code: &Bytecode) {
        Self::shared().keep(code_hash, code, Self::MAX_BYTES);
        THREAD_CODE.with_borrow_mut(|own| own.keep(code_hash, code, Self::THREAD_MAX_BYTES));
    }

    fn keep(&mut self, code_hash: B256, code: &Bytecode, max_bytes: usize) {
        let len = code.original_byte_slice().len();
        if self.bytes + len > max_bytes {
            self.codes.clear();
            self.bytes = 0;
        }
        if self.codes.insert(code_hash, code.clone()).is_none() {
            self.bytes += len;
        }
    }
}

/// Bytecode as revm runs it, with its jump table analysed. Code that is not valid EOF or
/// legacy-with-prefix is taken as legacy, as Ethereum does.
pub(crate) fn analyse(bytes: Bytes) -> Bytecode {
    Bytecode::new_raw_checked(bytes.clone()).unwrap_or_else(|_| Bytecode::new_legacy(bytes))
}

/// revm's block environment for `env` (for tools that drive revm directly).
pub fn revm_block_env(env: &BlockEnv, cfg: &CfgEnv) -> RevmBlockEnv {
    let mut block = RevmBlockEnv {
        number: U256::from(env.number),
        beneficiary: env.beneficiary,
        timestamp: U256::from(env.timestamp),
        gas_limit: env.gas_limit,
        basefee: env.base_fee,
        difficulty: env.difficulty,
        prevrandao: env.prevrandao,
        ..Default::default()
    };
    if let Some(excess) = env.excess_blob_gas {
        block.set_blob_excess_gas_and_price(excess, cfg.blob_base_fee_update_fraction());
    }
    if cfg.spec.is_enabled_in(SpecId::MERGE) && block.prevrandao.is_none() {
        block.prevrandao = Some(B256::ZERO);
    }
    block
}

/// Configuration revm runs with for these chain rules.
pub fn cfg_env(rules: &ChainRules) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(rules.fork.spec_id());
    cfg.chain_id = rules.chain_id;
    rules.fork.configure(&mut cfg);
    cfg
}

/// Executes `txs` in order on top of `state`, as Ethereum would in a block with `env`.
pub fn execute_block<S: StateView>(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &S,
) -> Result<BlockOutput, ExecError> {
    // One instantiation of the interpreter, inside this crate, whatever the caller's state type.
    execute_block_dyn(rules, env, txs, state)
}

/// Executes `txs` as [`execute_block`] does, but with revm's own handler for every transaction:
/// no plain transfers without revm, the fee recipient credited inside each transaction. Slower;
/// it is the reference the shortcuts are checked against.
pub fn execute_block_reference<S: StateView>(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &S,
) -> Result<BlockOutput, ExecError> {
    execute_block_with(rules, env, txs, state, false)
}

pub(crate) fn execute_block_dyn(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &dyn StateView,
) -> Result<BlockOutput, ExecError> {
    execute_block_with(rules, env, txs, state, true)
}

/// The sequential executor. With `shortcuts` off, plain transfers run on revm like any other
/// transaction and revm's handler credits the fee recipient after each: the tests compare the
/// shortcuts against that.
pub(crate) fn execute_block_with(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &dyn StateView,
    shortcuts: bool,
) -> Result<BlockOutput, ExecError> {
    execute_txs(rules, env, txs, state, shortcuts, false).map(|(output, _)| output)
}

/// The sequential executor over `txs`. With `note_fees`, the fee recipient's credits are only
/// noted until something reads it, and returned if nothing did (the output's diff then has no
/// entry for it): how a batch of Block-STM over batches runs.
pub(crate) fn execute_txs(
    rules: &ChainRules,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    state: &dyn StateView,
    shortcuts: bool,
    note_fees: bool,
) -> Result<(BlockOutput, Option<Vec<U256>>), ExecError> {
    let cfg = cfg_env(rules);
    let block = revm_block_env(env, &cfg);
    // The inspector only runs for transactions re-executed under EIP-7610 (`inspect_tx`
    // below); `transact` ignores it, so ordinary transactions run uninspected.
    let mut evm = Context::mainnet()
        .with_cfg(cfg)
        .with_block(block)
        .with_db(Overlay::with_capacity(
            state,
            accounts_changed(txs),
            env.beneficiary,
            rules.fork >= Fork::SpuriousDragon,
        ))
        .build_mainnet_with_inspector(Eip7610);
    if note_fees {
        evm.ctx.journaled_state.database.fee_log = Some(Vec::with_capacity(txs.len()));
    }
    if rules.fork.needs_eip1283_sstore() {
        evm.instruction
            .insert_instruction(SSTORE, Instruction::new(eip1283_sstore), 0);
    }
    if shortcuts {
        crate::keccak::install(&mut evm.instruction);
    }

    let mut outcomes = Vec::with_capacity(txs.len());
    let mut gas_used = 0u64;
    for tx in txs {
        let remaining = env.gas_limit - gas_used;
        let gas_limit = tx.envelope.gas_limit();
        if gas_limit > remaining {
            outcomes.push(TxOutcome::Rejected(Rejection::BlockGasExceeded {
                gas_limit,
                remaining,
            }));
            continue;
        }
        let effective_gas_price = tx.envelope.effective_gas_price(Some(env.base_fee));
        let transfer = shortcuts
            .then(|| PlainTransfer::new(tx, &evm.ctx.cfg, env))
            .flatten();
        if let Some(transfer) = transfer {
            let overlay = &mut evm.ctx.journaled_state.database;
            if overlay.transfer(&transfer, tx)?.is_some() {
                gas_used += TRANSFER_GAS;
                outcomes.push(TxOutcome::Included(receipt_from(
                    PlainTransfer::result(evm.ctx.cfg.spec),
                    tx,
                    TRANSFER_GAS,
                    gas_used,
                    effective_gas_price,
                )));
                continue;
            }
        }
        evm.ctx.journaled_state.database.begin_tx(tx.sender);
        let mut deferred = shortcuts;
        let mut result = if deferred {
            transact_deferred(&mut evm, tx)
        } else {
            transact_reference(&mut evm, tx)
        };
        if result.is_ok() && evm.ctx.journaled_state.database.saw_storage_collision() {
            // The transaction loaded an account with storage but no nonce or code, which revm
            // would let a creation overwrite. Nothing of this run has reached the overlay (its
            // diff is merged below; pending fees it made visible were due anyway), so running
            // the transaction again, this time with the EIP-7610 inspector and revm's own fee
            // credit, starts from the same state.
            evm.ctx.journaled_state.database.begin_tx(tx.sender);
            result = transact_inspected(&mut evm, tx);
            deferred = false;
        }
        let result = match result {
            Ok(r) => r,
            Err(EVMError::Transaction(invalid)) => {
                outcomes.push(TxOutcome::Rejected(Rejection::Invalid(invalid.to_string())));
                continue;
            }
            Err(EVMError::Database(e)) => return Err(ExecError::State(e)),
            Err(EVMError::Header(h)) => return Err(ExecError::Header(h.to_string())),
            Err(other) => return Err(ExecError::Evm(other.to_string())),
        };
        let tx_gas = result.result.tx_gas_used();
        let overlay = &mut evm.ctx.journaled_state.database;
        let fee = deferred.then(|| {
            priority_fee(
                effective_gas_price,
                env.base_fee,
                rules.fork.spec_id(),
                tx_gas,
            )
        });
        // revm would credit a self-destructed fee recipient and then delete it, fee and all.
        let destroyed = result
            .state
            .get(&env.beneficiary)
            .is_some_and(|a| a.is_selfdestructed());
        let paid = fee.filter(|fee| !fee.is_zero() && !destroyed);
        merge_effects(
            &mut overlay.diff,
            &result.state,
            rules.fork.spec_id(),
            paid.is_some().then_some(env.beneficiary),
            txs.len() - outcomes.len(),
        );
        if let Some(fee) = fee.filter(|_| !destroyed) {
            overlay.credit_fee(fee)?;
        }

        gas_used += tx_gas;
        let ResultAndState { result, state } = result;
        reuse_state(&mut evm.ctx.journaled_state.inner.state, state);
        outcomes.push(TxOutcome::Included(receipt_from(
            result,
            tx,
            tx_gas,
            gas_used,
            effective_gas_price,
        )));
    }

    let overlay = &mut evm.ctx.journaled_state.database;
    overlay.flush_fees();
    let diff = std::mem::take(&mut overlay.diff);
    let fees = overlay.fee_log.take();
    Ok((
        BlockOutput {
            outcomes,
            diff,
            gas_used,
        },
        fees,
    ))
}

/// revm as the sequential executor drives it: over the overlay, with the EIP-7610 inspector
/// (which only [`transact_inspected`] runs).
type SequentialEvm<'a> = MainnetEvm<
    Context<
        RevmBlockEnv,
        TxEnv,
        CfgEnv,
        Overlay<'a, dyn StateView + 'a>,
        Journal<Overlay<'a, dyn StateView + 'a>>,
    >,
    Eip7610,
>;

/// One transaction without the fee recipient's credit, which the overlay applies: revm's handler
/// would load, credit and hand back the fee recipient in every transaction.
///
/// The three ways of running a transaction are functions of their own, not inlined into the
/// block's loop: each instantiates revm's handler, and inlined together they spread the loop's
/// hot path over several times the instruction cache.
#[inline(never)]
fn transact_deferred(
    evm: &mut SequentialEvm<'_>,
    tx: &RecoveredTx,
) -> Result<ResultAndState, EVMError<StateError>> {
    evm.ctx.set_tx(tx.tx_env());
    let result = DeferredReward::<_, EVMError<StateError>>(PhantomData).run(evm);
    let state = evm.finalize();
    result.map(|result| ResultAndState { result, state })
}

/// One transaction with revm's own handler, fee credit included: the reference the shortcuts
/// are checked against.
#[cold]
#[inline(never)]
fn transact_reference(
    evm: &mut SequentialEvm<'_>,
    tx: &RecoveredTx,
) -> Result<ResultAndState, EVMError<StateError>> {
    evm.transact(tx.tx_env())
}

/// One transaction under the EIP-7610 inspector, fee credit included.
#[cold]
#[inline(never)]
fn transact_inspected(
    evm: &mut SequentialEvm<'_>,
    tx: &RecoveredTx,
) -> Result<ResultAndState, EVMError<StateError>> {
    evm.inspect_tx(tx.tx_env())
}

/// Hands revm's per-transaction state back, emptied, for the next transaction: revm takes it
/// out when a transaction ends (`finalize`) and would otherwise grow a new map from nothing in
/// every transaction. `journal` is the map `finalize` left empty. A map grown large by an
/// unusual transaction is dropped rather than cleared again and again.
pub(crate) fn reuse_state(journal: &mut EvmState, mut state: EvmState) {
    const KEEP: usize = 64;
    if journal.is_empty() && state.capacity() <= KEEP {
        state.clear();
        *journal = state;
    }
}

pub(crate) fn receipt_from(
    result: ExecutionResult,
    tx: &RecoveredTx,
    gas_used: u64,
    cumulative_gas_used: u64,
    effective_gas_price: u128,
) -> Receipt {
    let (status, logs, output, contract_address) = match result {
        ExecutionResult::Success { logs, output, .. } => match output {
            Output::Call(out) => (TxStatus::Success, logs, out, None),
            Output::Create(out, addr) => (TxStatus::Success, logs, out, addr),
        },
        // A failed transaction's logs are rolled back with its state.
        ExecutionResult::Revert { output, .. } => (TxStatus::Revert, Vec::new(), output, None),
        ExecutionResult::Halt { .. } => (TxStatus::Halt, Vec::new(), Bytes::new(), None),
    };
    Receipt {
        tx_type: tx.envelope.tx_type() as u8,
        status,
        gas_used,
        cumulative_gas_used,
        effective_gas_price,
        logs,
        contract_address,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room is made for every sender and for the recipient of every transaction that moves
    /// value, as a sample of the block shows them.
    #[test]
    fn room_for_senders_and_the_recipients_of_value() {
        use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
        use alloy_primitives::{Signature, TxKind};
        let tx = |value: u64| RecoveredTx {
            envelope: TxEnvelope::from(
                TxEip1559 {
                    to: TxKind::Call(Address::repeat_byte(7)),
                    value: U256::from(value),
                    ..Default::default()
                }
                .into_signed(Signature::new(U256::ONE, U256::ONE, false)),
            ),
            sender: Address::repeat_byte(1),
            hash: B256::ZERO,
        };
        let block = |n: usize, value_of: &dyn Fn(usize) -> u64| -> Vec<RecoveredTx> {
            (0..n).map(|i| tx(value_of(i))).collect()
        };
        assert_eq!(accounts_changed(&block(10_000, &|_| 0)), 10_000);
        assert_eq!(accounts_changed(&block(10_000, &|_| 1)), 20_000);
        assert_eq!(accounts_changed(&block(3, &|_| 1)), 6);
        assert_eq!(accounts_changed(&[]), 0);
        // Value in the second half only: about half the sample moves value.
        let half = accounts_changed(&block(10_000, &|i| u64::from(i >= 5_000)));
        assert!((14_000..=16_000).contains(&half), "{half}");
    }

    /// The code last handed out is kept beside the map: asking for another and then for it
    /// again must give each its own code, fetching each once.
    #[test]
    fn the_code_cache_hands_out_the_code_asked_for() {
        let codes: Vec<Bytes> = (0u8..3).map(|i| Bytes::from(vec![0x60, i, 0x00])).collect();
        let hashes: Vec<B256> = codes.iter().map(alloy_primitives::keccak256).collect();
        let mut cache = CodeCache::default();
        let fetched = std::cell::Cell::new(0);
        for i in [0, 0, 1, 0, 2, 1, 1, 2, 0] {
            let code = cache
                .get(hashes[i], || {
                    fetched.set(fetched.get() + 1);
                    Ok(Some(codes[i].clone()))
                })
                .unwrap();
            assert_eq!(code.original_bytes(), codes[i], "code {i}");
        }
        // Fetched at most once each: the analysed code kept across blocks may hold them from
        // another test already.
        assert!(fetched.get() <= 3, "fetched {} times", fetched.get());
        assert_eq!(
            cache.get(KECCAK_EMPTY, || unreachable!()).unwrap(),
            Bytecode::default()
        );
    }

    /// Another thread gets the code analysed here without fetching it, in a copy of its own
    /// (its bytes elsewhere in memory, so its reference count is elsewhere too), with the same
    /// code and jump table.
    #[test]
    fn each_thread_runs_its_own_copy_of_analysed_code() {
        // JUMPDEST at 0 and 3: a jump table with something in it. Unique to this test.
        let code = Bytes::from(vec![0x5b, 0x60, 0x03, 0x5b, 0x60, 0x00, 0x56, 0xfe, 0x42]);
        let hash = alloy_primitives::keccak256(&code);
        let here = CodeCache::default()
            .get(hash, || Ok(Some(code.clone())))
            .unwrap();
        let again = CodeCache::default().get(hash, || unreachable!()).unwrap();
        assert_eq!(here.bytecode().as_ptr(), again.bytecode().as_ptr());
        let there = std::thread::spawn(move || {
            let code = CodeCache::default().get(hash, || unreachable!()).unwrap();
            let again = CodeCache::default().get(hash, || unreachable!()).unwrap();
            assert_eq!(code.bytecode().as_ptr(), again.bytecode().as_ptr());
            code
        })
        .join()
        .unwrap();
        assert_ne!(here.bytecode().as_ptr(), there.bytecode().as_ptr());
        assert_eq!(there.original_bytes(), code);
        assert_eq!(there.bytecode(), here.bytecode());
        assert_eq!(there.legacy_jump_table(), here.legacy_jump_table());
        assert!(there.legacy_jump_table().unwrap().is_valid(3));
    }
}
