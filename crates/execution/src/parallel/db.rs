//! The state one incarnation of one transaction sees: the multi-version memory over the state
//! before the block. Every read is recorded for validation.

use super::mv::{AccountRead, Blocked, Fee, MvMemory, ShapeRead, StorageRead, TxIdx};
use crate::{
    executor::{account_info, CodeCache},
    state::{StateError, StateView},
    transfer::credit_fee,
};
use alloy_primitives::{map::HashMap, Address, B256, U256};
use revm::{
    bytecode::Bytecode,
    database_interface::{DBErrorMarker, Database},
    primitives::KECCAK_EMPTY,
    state::AccountInfo,
};
use tessera_primitives::Account;

/// Why an incarnation stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// It read an ESTIMATE or a fee not yet known: it waits for that transaction.
    #[error("waiting for transaction {0}")]
    Blocked(TxIdx),
    /// The block needs something this executor leaves to the sequential one.
    #[error("sequential fallback: {0}")]
    Fallback(&'static str),
    #[error(transparent)]
    State(#[from] StateError),
}

impl DBErrorMarker for DbError {}

impl From<Blocked> for DbError {
    fn from(b: Blocked) -> Self {
        DbError::Blocked(b.0)
    }
}

/// A read and how it resolved, to be resolved again at validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    Account(Address, AccountRead),
    /// A plain transfer's recipient, whose balance the transfer does not observe.
    Shape(Address, ShapeRead),
    /// The fee recipient, with every earlier transaction's fee.
    FeeRecipient(Option<Account>),
    Storage(Address, U256, StorageRead),
}

/// What every transaction of the block shares.
pub(crate) struct BlockState<'a> {
    pub mv: MvMemory,
    pub view: &'a (dyn StateView + Sync),
    pub beneficiary: Address,
    /// The fee recipient before the block.
    pub beneficiary_before: Option<Account>,
    /// EIP-161: touched empty accounts are deleted.
    pub state_clear: bool,
}

impl BlockState<'_> {
    /// The fee recipient as transaction `idx` sees it: its last write below `idx` (or the state
    /// before the block) with the fees of every transaction from that writer on credited.
    pub(crate) fn read_fee_recipient(&self, idx: TxIdx) -> Result<Option<Account>, Blocked> {
        let (mut account, from) = match self.mv.last_account_write(self.beneficiary, idx)? {
            Some((writer, account)) => (account, writer),
            None => (self.beneficiary_before, 0),
        };
        for earlier in from..idx {
            if let Fee::Credit(fee) = self.mv.fee(earlier)? {
                account = credit_fee(account, fee, self.state_clear);
            }
        }
        Ok(account)
    }

    pub(crate) fn validate(&self, idx: TxIdx, reads: &[Read]) -> bool {
        reads.iter().all(|read| match *read {
            Read::Account(address, seen) => self.mv.read_account(address, idx) == Ok(seen),
            Read::Shape(address, seen) => self.mv.read_shape(address, idx) == Ok(seen),
            Read::FeeRecipient(seen) => self.read_fee_recipient(idx) == Ok(seen),
            Read::Storage(address, slot, seen) => {
                self.mv.read_storage(address, slot, idx) == Ok(seen)
            }
        })
    }
}

/// The database of one worker: it runs one incarnation at a time.
pub(crate) struct TxDb<'a> {
    block: &'a BlockState<'a>,
    pub idx: TxIdx,
    /// The transaction's sender: never the target of a creation in its own transaction (that
    /// would take a hash collision), so not checked for EIP-7610.
    sender: Address,
    /// The recipient of a plain value transfer, read lazily if it has no code.
    pub lazy_recipient: Option<Address>,
    /// Whether this incarnation read the recipient lazily.
    pub lazy_used: bool,
    pub reads: Vec<Read>,
    /// Analysed bytecode by hash, kept across this worker's transactions.
    codes: CodeCache,
    /// `view.has_storage`, which does not change during the block.
    has_storage: HashMap<Address, bool>,
}

impl<'a> TxDb<'a> {
    pub(crate) fn new(block: &'a BlockState<'a>) -> Self {
        TxDb {
            block,
            idx: 0,
            sender: Address::ZERO,
            lazy_recipient: None,
            lazy_used: false,
            reads: Vec::new(),
            codes: CodeCache::default(),
            has_storage: HashMap::default(),
        }
    }

    pub(crate) fn begin(&mut self, idx: TxIdx, sender: Address, lazy_recipient: Option<Address>) {
        self.idx = idx;
        self.sender = sender;
        self.lazy_recipient = lazy_recipient;
        self.lazy_used = false;
        self.reads.clear();
    }

    /// EIP-7610 (creation over an account with storage) is left to the sequential executor,
    /// whose overlay tracks it. Such accounts have nonce 0 and no code, and are rare: they exist
    /// only in genesis allocations or through pre-EIP-161 init code that wrote storage.
    fn check_storage_collision(
        &mut self,
        address: Address,
        account: &Option<Account>,
        written: bool,
    ) -> Result<(), DbError> {
        let Some(a) = account else { return Ok(()) };
        if a.nonce != 0 || a.code_hash != KECCAK_EMPTY {
            return Ok(());
        }
        let collides = if written {
            // Storage can only have been given to such an account in this block by creating it
            // (which also clears it); a deletion took its storage with it, and an account without
            // code cannot write storage afterwards.
            match self.block.mv.cleared_below(address, self.idx)? {
                Some(writer) => !self.block.mv.deleted_by(address, writer)?,
                None => false,
            }
        } else {
            match self.has_storage.get(&address) {
                Some(&has) => has,
                None => {
                    let has = self.block.view.has_storage(&address)?;
                    self.has_storage.insert(address, has);
                    has
                }
            }
        };
        if collides {
            return Err(DbError::Fallback(
                "an account with storage but no nonce or code",
            ));
        }
        Ok(())
    }

    pub(crate) fn basic_account(&mut self, address: Address) -> Result<Option<Account>, DbError> {
        let block = self.block;
        if address == block.beneficiary {
            let account = block.read_fee_recipient(self.idx)?;
            self.reads.push(Read::FeeRecipient(account));
            return Ok(account);
        }
        if self.lazy_recipient == Some(address) {
            let shape = block.mv.read_shape(address, self.idx)?;
            let account = match shape {
                ShapeRead::Written(s) => s.map(|(nonce, code_hash)| Account {
                    nonce,
                    balance: U256::ZERO,
                    code_hash,
                }),
                ShapeRead::Base => block.view.account(&address)?.map(|a| Account {
                    balance: U256::ZERO,
                    ..a
                }),
            };
            if account.is_none_or(|a| a.code_hash == KECCAK_EMPTY) {
                // The transfer only adds to the balance: it runs against a zero balance and
                // its effect is published as a credit.
                self.lazy_used = true;
                self.reads.push(Read::Shape(address, shape));
                return Ok(account);
            }
        }
        let read = block.mv.read_account(address, self.idx)?;
        let account = read.resolve(|| Ok(block.view.account(&address)?))?;
        self.reads.push(Read::Account(address, read));
        if address != self.sender {
            let written = matches!(read, AccountRead::Written(..));
            self.check_storage_collision(address, &account, written)?;
        }
        Ok(account)
    }
}

impl Database for TxDb<'_> {
    type Error = DbError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, DbError> {
        Ok(self.basic_account(address)?.map(account_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, DbError> {
        let block = self.block;
        Ok(self
            .codes
            .get(code_hash, || match block.mv.code(&code_hash) {
                Some(b) => Ok(Some(b)),
                None => block.view.code(&code_hash),
            })?)
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, DbError> {
        let read = self.block.mv.read_storage(address, slot, self.idx)?;
        let value = match read {
            StorageRead::Written(v) => v,
            StorageRead::Cleared => U256::ZERO,
            StorageRead::Base => self.block.view.storage(&address, &slot)?,
        };
        self.reads.push(Read::Storage(address, slot, read));
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, DbError> {
        Ok(self.block.view.block_hash(number)?)
    }
}
