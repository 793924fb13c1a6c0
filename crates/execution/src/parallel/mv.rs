//! Multi-version memory: for every location some transaction of the block wrote, the value each
//! writer left, by transaction index. A read by transaction `i` sees the latest write below `i`,
//! or the state before the block when there is none.
//!
//! Reads are validated by value: a transaction's execution is a function of the values it read,
//! so if every value it read resolves to the same thing again (and no read meets an ESTIMATE),
//! executing it again would give the same writes. A read that resolved to the state before the
//! block is recorded as such and compared without reading that state again.

use crate::state::StateError;
use alloy_primitives::{
    map::{AddressMap, DefaultHashBuilder, HashMap},
    Address, Bytes, B256, U256,
};
use smallvec::SmallVec;
use std::{
    collections::hash_map::Entry as MapEntry,
    hash::{BuildHasher, Hash, Hasher},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Mutex, MutexGuard,
    },
};
use tessera_primitives::{Account, AccountChange};

use super::{lock, Padded, PerTx};

/// Index of a transaction in its block.
pub(crate) type TxIdx = usize;

/// Lock shards of the location map: enough that two workers rarely meet on one lock. An
/// account's own locations (account, clear) are in the shard of its address's first byte; its
/// slots are spread over all shards by slot, so that a contract every transaction writes (a
/// token) is not one lock and one map for the whole block. The block's final state is gathered
/// shard by shard, in parallel, and the parts of one account put together.
pub(crate) const SHARDS: usize = 256;

/// A unit of state a transaction reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Location {
    /// Nonce, balance, code hash and existence.
    Account(Address),
    Storage(Address, U256),
    /// The account's storage was emptied (created or deleted) by the writer.
    Cleared(Address),
}

/// Whole words into the hasher: an address hashed as bytes takes foldhash's long-input path,
/// and every read and write of every transaction looks a location up two or three times.
impl Hash for Location {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (address, kind, slot) = match self {
            Location::Account(a) => (a, 0, None),
            Location::Cleared(a) => (a, 1, None),
            Location::Storage(a, slot) => (a, 2, Some(slot)),
        };
        let [head, middle, tail] = address_words(address);
        state.write_u64(head ^ kind);
        state.write_u64(middle);
        state.write_u64(tail);
        if let Some(slot) = slot {
            for limb in slot.as_limbs() {
                state.write_u64(*limb);
            }
        }
    }
}

/// An address as three words, the last one holding its final four bytes.
fn address_words(address: &Address) -> [u64; 3] {
    let a = &address.0 .0;
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    [word(&a[..8]), word(&a[8..16]), word(&a[16..])]
}

impl Location {
    /// The account the location belongs to.
    pub(crate) fn address(&self) -> &Address {
        match self {
            Location::Account(a) | Location::Cleared(a) | Location::Storage(a, _) => a,
        }
    }
}

/// What a transaction wrote to a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    /// The account as the writer left it; `None` deletes it.
    Account(Option<Account>),
    /// A plain transfer's credit to a codeless recipient, added to whatever balance the
    /// recipient has when the transfer runs (the transfer never observed it).
    Credit(U256),
    Storage(U256),
    Cleared,
}

/// An entry in a location's history: a value, or ESTIMATE (its writer is being re-executed and
/// will probably write here again).
type Entry = Option<Value>;

/// How a read resolved, apart from the state before the block (which does not change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountRead {
    /// An absolute write below the reader, plus the credits written after it.
    Written(Option<Account>, U256),
    /// No absolute write below the reader: the state before the block plus these credits.
    Base(U256),
}

impl AccountRead {
    /// The account the reader sees, given the account before the block.
    pub(crate) fn resolve(
        self,
        base: impl FnOnce() -> Result<Option<Account>, super::db::DbError>,
    ) -> Result<Option<Account>, super::db::DbError> {
        let (account, credit) = match self {
            AccountRead::Written(account, credit) => (account, credit),
            AccountRead::Base(credit) => (base()?, credit),
        };
        Ok(add_credit(account, credit))
    }
}

/// `account` with `credit` added to its balance; a credit creates a missing account.
pub(crate) fn add_credit(account: Option<Account>, credit: U256) -> Option<Account> {
    if credit.is_zero() {
        return account;
    }
    let mut account = account.unwrap_or_default();
    account.balance += credit;
    Some(account)
}

/// How a storage read resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageRead {
    Written(U256),
    /// A lower transaction emptied the account's storage after any write to the slot.
    Cleared,
    Base,
}

/// The shape of an account (existence, nonce, code hash) without its balance: what a plain
/// transfer to it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShapeRead {
    Written(Option<(u64, B256)>),
    Base,
}

/// A read that could not be resolved: the transaction at this index has not (re-)executed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked(pub TxIdx);

/// What the fee recipient receives for a transaction, once it has executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fee {
    /// Not executed yet, or being re-executed.
    Pending,
    /// The transaction was not included: the recipient is not even touched.
    None,
    /// Priority fee; a zero credit still touches the recipient.
    Credit(U256),
}

/// The entries of one location by writer, in index order. Most locations have one writer, whose
/// entry is kept inline: no allocation per location.
#[derive(Default)]
pub(crate) struct History(SmallVec<[(TxIdx, Entry); 1]>);

impl History {
    /// Position of the first entry at or above `idx`.
    fn position(&self, idx: TxIdx) -> usize {
        self.0.partition_point(|(writer, _)| *writer < idx)
    }

    /// Entries below `idx`, latest first.
    fn below(&self, idx: TxIdx) -> impl Iterator<Item = (TxIdx, &Entry)> {
        self.0[..self.position(idx)]
            .iter()
            .rev()
            .map(|(writer, entry)| (*writer, entry))
    }

    fn get(&self, idx: TxIdx) -> Option<&Entry> {
        self.0
            .get(self.position(idx))
            .filter(|(writer, _)| *writer == idx)
            .map(|(_, entry)| entry)
    }

    fn get_mut(&mut self, idx: TxIdx) -> Option<&mut Entry> {
        let at = self.position(idx);
        match self.0.get_mut(at) {
            Some((writer, entry)) if *writer == idx => Some(entry),
            _ => None,
        }
    }

    fn insert(&mut self, idx: TxIdx, entry: Entry) {
        let at = self.position(idx);
        match self.0.get_mut(at) {
            Some((writer, old)) if *writer == idx => *old = entry,
            _ => self.0.insert(at, (idx, entry)),
        }
    }

    fn remove(&mut self, idx: TxIdx) {
        let at = self.position(idx);
        if self.0.get(at).is_some_and(|(writer, _)| *writer == idx) {
            self.0.remove(at);
        }
    }

    /// All entries, in index order.
    pub(crate) fn entries(&self) -> &[(TxIdx, Entry)] {
        &self.0
    }
}

/// The shard of `location`: an account's own locations by the first byte of its address, a
/// slot also by its slot's lowest byte (mapping slots are hashes; plain ones count up).
fn shard_index(location: &Location) -> usize {
    match location {
        Location::Account(a) | Location::Cleared(a) => a[0] as usize % SHARDS,
        Location::Storage(a, slot) => {
            (a[0] as usize).wrapping_add(slot.as_limbs()[0] as usize) % SHARDS
        }
    }
}

/// One shard's part of an account's final change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FinalPart {
    /// The account as the block leaves it, if its account location is in this shard and was
    /// written; otherwise it comes from another part or, failing that, the state before.
    pub info: Option<Option<Account>>,
    /// Whether the block emptied its storage (only in the part with its account location).
    pub cleared: bool,
    /// The final value of its slots that are in this shard; no slot is in two parts.
    pub storage: Vec<(U256, U256)>,
}

/// The block's final account changes, put together from the shards' parts.
#[derive(Default)]
pub(crate) struct Finals {
    accounts: AddressMap<AccountChange>,
    /// Slots of accounts that came in several parts, beyond those of their first part, merged
    /// by [`finish`](Self::finish) once every part is in: extending an account's map part by
    /// part would regrow a busy contract's map (a token's, a slot per holder, from every shard)
    /// many times over, on fresh pages each time, while the other workers wait for the lock.
    more_slots: Vec<(Address, Vec<(U256, U256)>)>,
}

impl Finals {
    /// Room for `accounts` accounts, if there is none yet.
    pub(crate) fn reserve(&mut self, accounts: usize) {
        if self.accounts.capacity() == 0 {
            self.accounts.reserve(accounts);
        }
    }

    /// Adds `part` of `address`'s final change. An account whose own location no part has
    /// (only its slots changed) keeps its state from before the block, read with `base`.
    pub(crate) fn join(
        &mut self,
        address: Address,
        part: FinalPart,
        base: impl FnOnce(&Address) -> Result<Option<Account>, StateError>,
    ) -> Result<(), StateError> {
        match self.accounts.entry(address) {
            MapEntry::Occupied(mut existing) => {
                let existing = existing.get_mut();
                if let Some(info) = part.info {
                    existing.info = info;
                }
                existing.storage_cleared |= part.cleared;
                if !part.storage.is_empty() {
                    self.more_slots.push((address, part.storage));
                }
            }
            MapEntry::Vacant(vacant) => {
                let info = match part.info {
                    Some(info) => info,
                    None => base(&address)?,
                };
                vacant.insert(AccountChange {
                    info,
                    storage_cleared: part.cleared,
                    storage: part.storage.into_iter().collect(),
                });
            }
        }
        Ok(())
    }

    /// Merges the slots held back, once every part has been joined: each account's into a map
    /// sized once for all of them.
    pub(crate) fn finish(&mut self) {
        self.more_slots
            .sort_unstable_by_key(|(address, _)| *address);
        for group in self.more_slots.chunk_by(|a, b| a.0 == b.0) {
            let account = self
                .accounts
                .get_mut(&group[0].0)
                .expect("an account's first part is joined before its later ones");
            account
                .storage
                .reserve(group.iter().map(|(_, slots)| slots.len()).sum());
            for (_, slots) in group {
                account.storage.extend(slots.iter().copied());
            }
        }
        self.more_slots = Vec::new();
    }

    /// The changes, once every part has been joined.
    pub(crate) fn take_accounts(&mut self) -> AddressMap<AccountChange> {
        self.finish();
        std::mem::take(&mut self.accounts)
    }
}

/// The histories of the locations in one shard.
type Shard = HashMap<Location, History>;

pub(crate) struct MvMemory {
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Code deployed by the block's transactions, by hash. Content-addressed, so an entry left
    /// by an aborted incarnation is still correct for anyone who finds its hash.
    codes: Mutex<HashMap<B256, Bytes>>,
    /// Whether any transaction wrote a `Cleared` location; storage reads skip that lookup
    /// until one has.
    any_cleared: AtomicBool,
    /// Per transaction: the locations its last incarnation wrote.
    written: PerTx<Mutex<Vec<Location>>>,
    fees: PerTx<Mutex<Fee>>,
    /// Per bucket of locations (by hash): the lowest transaction that wrote any of them in this
    /// block, `u32::MAX` for none. A read by a transaction at or below it needs no shard lock:
    /// nothing below the reader wrote the location. That is most reads of most blocks, and
    /// taking the shard's lock for them would move the lock's cache line between the cores
    /// for nothing. Buckets are only ever lowered; an aborted write leaves its bucket low,
    /// which costs a lookup, never a wrong answer.
    lowest_writer: Box<[AtomicU32]>,
    hasher: DefaultHashBuilder,
}

impl MvMemory {
    pub(crate) fn new(txs: usize) -> Self {
        // Room for a few locations per transaction, so that shards rarely grow mid-block.
        let per_shard = txs * 3 / SHARDS;
        MvMemory {
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(Mutex::new(HashMap::with_capacity_and_hasher(
                        per_shard,
                        Default::default(),
                    )))
                })
                .collect(),
            codes: Mutex::default(),
            any_cleared: AtomicBool::new(false),
            written: PerTx::new(txs, Mutex::default),
            fees: PerTx::new(txs, || Mutex::new(Fee::Pending)),
            lowest_writer: (0..(4 * txs).next_power_of_two().clamp(1 << 10, 1 << 20))
                .map(|_| AtomicU32::new(u32::MAX))
                .collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn lowest_writer(&self, location: &Location) -> &AtomicU32 {
        let mask = self.lowest_writer.len() - 1;
        &self.lowest_writer[self.hasher.hash_one(location) as usize & mask]
    }

    /// Whether no transaction below `idx` can have written `location`. Sequentially consistent
    /// with the writers' lowering: a validation that starts after a writer finished publishing
    /// (which the scheduler's indices order) sees the bucket lowered.
    fn unwritten_below(&self, location: &Location, idx: TxIdx) -> bool {
        self.lowest_writer(location).load(Ordering::SeqCst) as usize >= idx
    }

    fn shard(&self, location: &Location) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_index(location)])
    }

    /// The latest entry below `idx` at `location`, with its writer.
    fn latest(&self, location: &Location, idx: TxIdx) -> Option<(TxIdx, Entry)> {
        if self.unwritten_below(location, idx) {
            return None;
        }
        let shard = self.shard(location);
        let history = shard.get(location)?;
        let latest = history
            .below(idx)
            .next()
            .map(|(writer, entry)| (writer, *entry));
        latest
    }

    /// The account as transaction `idx` sees it: the latest absolute write below it plus the
    /// credits above that write.
    pub(crate) fn read_account(
        &self,
        address: Address,
        idx: TxIdx,
    ) -> Result<AccountRead, Blocked> {
        let location = Location::Account(address);
        if self.unwritten_below(&location, idx) {
            return Ok(AccountRead::Base(U256::ZERO));
        }
        let shard = self.shard(&location);
        let mut credit = U256::ZERO;
        if let Some(history) = shard.get(&location) {
            for (writer, entry) in history.below(idx) {
                match entry {
                    None => return Err(Blocked(writer)),
                    Some(Value::Credit(c)) => credit += *c,
                    Some(Value::Account(a)) => return Ok(AccountRead::Written(*a, credit)),
                    Some(_) => unreachable!("only account values are written to accounts"),
                }
            }
        }
        Ok(AccountRead::Base(credit))
    }

    /// The account's shape as transaction `idx` sees it: credits change only its balance.
    pub(crate) fn read_shape(&self, address: Address, idx: TxIdx) -> Result<ShapeRead, Blocked> {
        let location = Location::Account(address);
        if self.unwritten_below(&location, idx) {
            return Ok(ShapeRead::Base);
        }
        let shard = self.shard(&location);
        if let Some(history) = shard.get(&location) {
            for (writer, entry) in history.below(idx) {
                match entry {
                    None => return Err(Blocked(writer)),
                    Some(Value::Credit(_)) => continue,
                    Some(Value::Account(a)) => {
                        return Ok(ShapeRead::Written(a.map(|a| (a.nonce, a.code_hash))))
                    }
                    Some(_) => unreachable!("only account values are written to accounts"),
                }
            }
        }
        Ok(ShapeRead::Base)
    }

    /// The latest absolute write to `address` below `idx`, as `(writer, account)`.
    pub(crate) fn last_account_write(
        &self,
        address: Address,
        idx: TxIdx,
    ) -> Result<Option<(TxIdx, Option<Account>)>, Blocked> {
        match self.latest(&Location::Account(address), idx) {
            None => Ok(None),
            Some((writer, None)) => Err(Blocked(writer)),
            Some((writer, Some(Value::Account(a)))) => Ok(Some((writer, a))),
            // Credits never go to the fee recipient (a transfer to it is not lazy).
            Some((writer, Some(_))) => Err(Blocked(writer)),
        }
    }

    pub(crate) fn read_storage(
        &self,
        address: Address,
        slot: U256,
        idx: TxIdx,
    ) -> Result<StorageRead, Blocked> {
        let written = match self.latest(&Location::Storage(address, slot), idx) {
            None => None,
            Some((writer, None)) => return Err(Blocked(writer)),
            Some((writer, Some(Value::Storage(v)))) => Some((writer, v)),
            Some(_) => unreachable!("only storage values are written to slots"),
        };
        let cleared = self.cleared_below(address, idx)?;
        Ok(match (written, cleared) {
            // Within one transaction the clear comes first (creation), then the writes.
            (Some((w, v)), Some(c)) if w >= c => StorageRead::Written(v),
            (_, Some(_)) => StorageRead::Cleared,
            (Some((_, v)), None) => StorageRead::Written(v),
            (None, None) => StorageRead::Base,
        })
    }

    /// The last transaction below `idx` that emptied `address`'s storage.
    pub(crate) fn cleared_below(
        &self,
        address: Address,
        idx: TxIdx,
    ) -> Result<Option<TxIdx>, Blocked> {
        if !self.any_cleared.load(Ordering::Acquire) {
            return Ok(None);
        }
        match self.latest(&Location::Cleared(address), idx) {
            None => Ok(None),
            Some((writer, None)) => Err(Blocked(writer)),
            Some((writer, Some(_))) => Ok(Some(writer)),
        }
    }

    /// Whether transaction `writer` deleted `address` (as opposed to creating it).
    pub(crate) fn deleted_by(&self, address: Address, writer: TxIdx) -> Result<bool, Blocked> {
        let location = Location::Account(address);
        match self
            .shard(&location)
            .get(&location)
            .and_then(|h| h.get(writer))
        {
            Some(None) => Err(Blocked(writer)),
            Some(Some(Value::Account(None))) => Ok(true),
            _ => Ok(false),
        }
    }

    /// The fee recipient's credit for transaction `idx`.
    pub(crate) fn fee(&self, idx: TxIdx) -> Result<Fee, Blocked> {
        match *lock(&self.fees[idx]) {
            Fee::Pending => Err(Blocked(idx)),
            fee => Ok(fee),
        }
    }

    pub(crate) fn code(&self, hash: &B256) -> Option<Bytes> {
        lock(&self.codes).get(hash).cloned()
    }

    /// Publishes the writes of an incarnation of `idx` and removes those of the previous one it
    /// did not repeat. Returns whether it wrote a location the previous incarnation did not
    /// (readers above may then have missed it and must all be validated again).
    pub(crate) fn publish(
        &self,
        idx: TxIdx,
        writes: Vec<(Location, Value)>,
        codes: impl IntoIterator<Item = (B256, Bytes)>,
        fee: Fee,
    ) -> bool {
        // Code first: whoever reads a code hash from the writes below finds the code.
        {
            let mut known = None;
            for (hash, code) in codes {
                known
                    .get_or_insert_with(|| lock(&self.codes))
                    .entry(hash)
                    .or_insert(code);
            }
        }
        if writes
            .iter()
            .any(|(l, _)| matches!(l, Location::Cleared(_)))
        {
            self.any_cleared.store(true, Ordering::Release);
        }
        let mut locations: Vec<Location> = writes.iter().map(|(l, _)| *l).collect();
        locations.sort_unstable();
        let mut writes = writes;
        // By shard, so that each shard's lock is taken once for all of the writes it holds.
        writes.sort_unstable_by_key(|(location, _)| shard_index(location));
        let mut held: Option<(usize, MutexGuard<'_, Shard>)> = None;
        for (location, value) in writes {
            // Lowered before the write is visible, so that no reader skips a lookup that would
            // find it. Read first: most buckets are lowered once, and a read does not take the
            // line from the other cores the way an update does.
            let lowest = self.lowest_writer(&location);
            if lowest.load(Ordering::SeqCst) as usize > idx {
                let idx = u32::try_from(idx).expect("a block holds fewer than 2^32 transactions");
                lowest.fetch_min(idx, Ordering::SeqCst);
            }
            let index = shard_index(&location);
            if held.as_ref().is_none_or(|(i, _)| *i != index) {
                // One shard lock at a time: the previous one is released first.
                drop(held.take());
                held = Some((index, lock(&self.shards[index])));
            }
            let (_, shard) = held.as_mut().expect("the location's shard is held");
            shard.entry(location).or_default().insert(idx, Some(value));
        }
        drop(held);
        *lock(&self.fees[idx]) = fee;

        let mut written = lock(&self.written[idx]);
        if written.is_empty() {
            // The usual case, a first incarnation: everything is new and nothing to remove.
            let wrote_new = !locations.is_empty();
            *written = locations;
            return wrote_new;
        }
        let wrote_new = locations
            .iter()
            .any(|location| written.binary_search(location).is_err());
        for old in written.iter() {
            if locations.binary_search(old).is_err() {
                let mut shard = self.shard(old);
                if let Some(history) = shard.get_mut(old) {
                    history.remove(idx);
                    if history.entries().is_empty() {
                        // Nobody writes it any more: it must not look written at the end.
                        shard.remove(old);
                    }
                }
            }
        }
        *written = locations;
        wrote_new
    }

    /// Frees what is kept to replace `idx`'s writes, once the block is done.
    pub(crate) fn release(&self, idx: TxIdx) {
        drop(std::mem::take(&mut *lock(&self.written[idx])));
    }

    /// Marks every write of `idx`'s last incarnation as ESTIMATE: readers above wait for its
    /// re-execution instead of using values it is likely to change.
    pub(crate) fn mark_estimates(&self, idx: TxIdx) {
        let written = lock(&self.written[idx]);
        for location in written.iter() {
            if let Some(entry) = self
                .shard(location)
                .get_mut(location)
                .and_then(|h| h.get_mut(idx))
            {
                *entry = None;
            }
        }
        *lock(&self.fees[idx]) = Fee::Pending;
    }

    /// Whether any transaction wrote a clear: the block's final state must then drop the slot
    /// writes below the last clear of their account, which may be in another shard.
    pub(crate) fn any_cleared(&self) -> bool {
        self.any_cleared.load(Ordering::Acquire)
    }

    /// The last writer of every account's clear, once the block is done.
    pub(crate) fn last_clears(&self) -> AddressMap<TxIdx> {
        let mut clears = AddressMap::default();
        for shard in self.shards.iter() {
            for (location, history) in lock(shard).iter() {
                if let (Location::Cleared(address), Some(&(writer, _))) =
                    (location, history.entries().last())
                {
                    clears.insert(*address, writer);
                }
            }
        }
        clears
    }

    /// The final state, in parts, of every account with a location in `shard` except `skip`,
    /// from the last incarnations' writes (once the block is done: no ESTIMATE is left then):
    /// what merging each transaction's changes in order gives. `clears` is
    /// [`last_clears`](Self::last_clears) when [`any_cleared`](Self::any_cleared). The shard
    /// is emptied.
    pub(crate) fn final_changes(
        &self,
        shard: usize,
        skip: &Address,
        clears: Option<&AddressMap<TxIdx>>,
        base: impl Fn(&Address) -> Result<Option<Account>, StateError>,
    ) -> Result<Vec<(Address, FinalPart)>, StateError> {
        let histories = std::mem::take(&mut *lock(&self.shards[shard]));
        // An account's locations brought together by sorting on a word of its address, copied
        // out so that sorting compares contiguous integers instead of chasing each entry into
        // the map. Two addresses that share that word may interleave and so come out in several
        // parts, which `Finals::join` puts together like parts from different shards.
        let mut entries: Vec<(u64, &Location, &History)> = histories
            .iter()
            .map(|(location, history)| (address_words(location.address())[0], location, history))
            .collect();
        entries.sort_unstable_by_key(|(key, _, _)| *key);
        let mut changes = Vec::with_capacity(entries.len());
        for group in entries.chunk_by(|a, b| a.1.address() == b.1.address()) {
            let address = *group[0].1.address();
            if address == *skip {
                continue;
            }
            let mut info = None;
            let mut cleared = false;
            // Slots written below this are wiped by the account's last clear.
            let clear = clears.and_then(|c| c.get(&address)).copied();
            // Sized once. Most groups are an account alone (a sender), which then allocates
            // nothing.
            let slots = group
                .iter()
                .filter(|(_, location, _)| matches!(location, Location::Storage(..)))
                .count();
            let mut storage = Vec::with_capacity(slots);
            for (_, location, history) in group {
                let entries = history.entries();
                let Some(&(writer, _)) = entries.last() else {
                    continue;
                };
                match location {
                    Location::Account(_) => {
                        // The last absolute write plus the credits after it.
                        let mut credit = U256::ZERO;
                        let mut absolute = None;
                        for (_, entry) in entries.iter().rev() {
                            match entry {
                                Some(Value::Credit(c)) => credit += *c,
                                Some(Value::Account(a)) => {
                                    absolute = Some(*a);
                                    break;
                                }
                                _ => unreachable!("an account location holds accounts"),
                            }
                        }
                        let account = match absolute {
                            Some(account) => account,
                            None => base(&address)?,
                        };
                        info = Some(add_credit(account, credit));
                    }
                    Location::Cleared(_) => cleared = true,
                    Location::Storage(_, slot) => {
                        if clear.is_none_or(|c| writer >= c) {
                            if let Some((_, Some(Value::Storage(v)))) = entries.last() {
                                storage.push((*slot, *v));
                            }
                        }
                    }
                }
            }
            if info.is_none() && storage.is_empty() && !cleared {
                // Only histories emptied by re-executions that stopped writing here.
                continue;
            }
            changes.push((
                address,
                FinalPart {
                    info,
                    cleared,
                    storage,
                },
            ));
        }
        drop(entries);
        // Freed here, on the worker that gathered it.
        drop(histories);
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: u64) -> Value {
        Value::Account(Some(Account {
            balance: U256::from(balance),
            ..Account::default()
        }))
    }

    /// The block's final changes, gathered from every shard as the executor does, with every
    /// account `before` the block.
    fn gathered(mv: &MvMemory, before: Option<Account>) -> AddressMap<AccountChange> {
        let clears = mv.any_cleared().then(|| mv.last_clears());
        let mut finals = Finals::default();
        for shard in 0..SHARDS {
            let parts = mv
                .final_changes(shard, &Address::ZERO, clears.as_ref(), |_| Ok(before))
                .expect("no state reads fail here");
            for (address, part) in parts {
                finals
                    .join(address, part, |_| Ok(before))
                    .expect("no state reads fail here");
            }
        }
        finals.take_accounts()
    }

    /// The block's final changes, by address, with no accounts before the block.
    fn finals(mv: &MvMemory) -> Vec<(Address, AccountChange)> {
        let mut finals: Vec<_> = gathered(mv, None).into_iter().collect();
        finals.sort_by_key(|(address, _)| *address);
        finals
    }

    /// A re-execution that no longer writes an account leaves nothing behind for it.
    #[test]
    fn a_write_dropped_by_a_re_execution_is_gone() {
        let x = Address::repeat_byte(0x11);
        let mv = MvMemory::new(2);
        let slot = Location::Storage(x, U256::from(7));
        assert!(mv.publish(
            1,
            vec![
                (Location::Account(x), account(5)),
                (slot, Value::Storage(U256::from(9)))
            ],
            [],
            Fee::Credit(U256::ZERO),
        ));
        mv.mark_estimates(1);
        assert_eq!(mv.read_storage(x, U256::from(7), 2), Err(Blocked(1)));
        assert!(!mv.publish(1, Vec::new(), [], Fee::Credit(U256::ZERO)));
        assert_eq!(mv.read_storage(x, U256::from(7), 2), Ok(StorageRead::Base));
        assert_eq!(finals(&mv), Vec::new());
    }

    /// The final change is the last write, with the writes of others kept.
    #[test]
    fn the_last_write_wins_and_others_stay() {
        let x = Address::repeat_byte(0x22);
        let mv = MvMemory::new(3);
        let slot = |s: u64| Location::Storage(x, U256::from(s));
        let fee = Fee::Credit(U256::ZERO);
        mv.publish(
            0,
            vec![
                (Location::Account(x), account(1)),
                (slot(1), Value::Storage(U256::from(10))),
            ],
            [],
            fee,
        );
        mv.publish(
            2,
            vec![
                (Location::Account(x), account(3)),
                (slot(2), Value::Storage(U256::from(30))),
            ],
            [],
            fee,
        );
        mv.publish(1, vec![(Location::Account(x), account(2))], [], fee);
        // Transaction 2 runs again and writes only the account.
        mv.publish(2, vec![(Location::Account(x), account(4))], [], fee);
        let changes = finals(&mv);
        assert_eq!(changes.len(), 1);
        let (address, change) = &changes[0];
        assert_eq!(*address, x);
        assert_eq!(change.info.map(|a| a.balance), Some(U256::from(4)));
        assert!(!change.storage_cleared);
        assert_eq!(
            change.storage.iter().collect::<Vec<_>>(),
            vec![(&U256::from(1), &U256::from(10))]
        );
    }

    /// Accounts whose addresses share the word gathering sorts by are still told apart, and
    /// each gets all of its own locations, however they interleave in a shard.
    #[test]
    fn addresses_alike_in_their_first_word_stay_apart() {
        let address = |last: u8| {
            let mut a = [0x44; 20];
            a[19] = last;
            Address::from(a)
        };
        let (x, y) = (address(1), address(2));
        let mv = MvMemory::new(8);
        let fee = Fee::Credit(U256::ZERO);
        // Slot numbers that land in the accounts' own shard (by the first byte, 0x44).
        let slot = |s: u64| U256::from(s << 8);
        for (tx, (owner, balance)) in [(x, 1), (y, 2), (x, 3), (y, 4)].into_iter().enumerate() {
            let writes = vec![
                (Location::Account(owner), account(balance)),
                (
                    Location::Storage(owner, slot(tx as u64)),
                    Value::Storage(U256::from(balance)),
                ),
            ];
            mv.publish(tx, writes, [], fee);
        }
        mv.publish(
            4,
            vec![(Location::Storage(y, slot(9)), Value::Storage(U256::from(9)))],
            [],
            fee,
        );
        assert!([x, y]
            .iter()
            .flat_map(|a| [Location::Account(*a), Location::Storage(*a, slot(9))])
            .all(|l| shard_index(&l) == shard_index(&Location::Account(x))));
        let finals = finals(&mv);
        assert_eq!(finals.len(), 2);
        let expected = |balance: u64, slots: &[(u64, u64)]| AccountChange {
            info: Some(Account {
                balance: U256::from(balance),
                ..Account::default()
            }),
            storage_cleared: false,
            storage: slots
                .iter()
                .map(|(s, v)| (slot(*s), U256::from(*v)))
                .collect(),
        };
        assert_eq!(finals[0], (x, expected(3, &[(0, 1), (2, 3)])));
        assert_eq!(finals[1], (y, expected(4, &[(1, 2), (3, 4), (9, 9)])));
    }

    /// A contract's slots are spread over the shards; gathering puts them back together, with
    /// the account as it was before the block when only its storage changed.
    #[test]
    fn slots_from_every_shard_make_one_change() {
        let x = Address::repeat_byte(0x33);
        let mv = MvMemory::new(4);
        let fee = Fee::Credit(U256::ZERO);
        let slots: Vec<U256> = (0..64u64).map(|i| U256::from(i * 37 + 5)).collect();
        assert!(slots
            .iter()
            .any(|s| shard_index(&Location::Storage(x, *s)) != shard_index(&Location::Account(x))));
        // Each of the four transactions writes a run of sixteen slots.
        for (tx, run) in slots.chunks(16).enumerate() {
            let writes = run
                .iter()
                .enumerate()
                .map(|(j, slot)| {
                    let i = tx * 16 + j;
                    (
                        Location::Storage(x, *slot),
                        Value::Storage(U256::from(i + 1)),
                    )
                })
                .collect();
            mv.publish(tx, writes, [], fee);
        }
        let before = Account {
            nonce: 1,
            balance: U256::from(7),
            ..Account::default()
        };
        let finals = gathered(&mv, Some(before));
        assert_eq!(finals.len(), 1);
        let change = &finals[&x];
        assert_eq!(change.info, Some(before));
        assert!(!change.storage_cleared);
        assert_eq!(change.storage.len(), slots.len());
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(change.storage[slot], U256::from(i + 1));
        }
    }

    /// A clear wipes the writes below it even when they are in other shards, and keeps the
    /// ones at and above it.
    #[test]
    fn a_clear_wipes_lower_writes_in_every_shard() {
        let x = Address::repeat_byte(0x44);
        let mv = MvMemory::new(3);
        let fee = Fee::Credit(U256::ZERO);
        let slot = |s: u64| Location::Storage(x, U256::from(s));
        let old: Vec<u64> = (1..40).collect();
        mv.publish(
            0,
            old.iter()
                .map(|s| (slot(*s), Value::Storage(U256::from(100))))
                .collect(),
            [],
            fee,
        );
        // Transaction 1 creates the account afresh and writes one slot; 2 writes another.
        mv.publish(
            1,
            vec![
                (Location::Account(x), account(1)),
                (Location::Cleared(x), Value::Cleared),
                (slot(1), Value::Storage(U256::from(11))),
            ],
            [],
            fee,
        );
        mv.publish(2, vec![(slot(2), Value::Storage(U256::from(22)))], [], fee);
        let changes = finals(&mv);
        assert_eq!(changes.len(), 1);
        let (_, change) = &changes[0];
        assert!(change.storage_cleared);
        assert_eq!(change.info.map(|a| a.balance), Some(U256::from(1)));
        let mut storage: Vec<_> = change.storage.iter().map(|(k, v)| (*k, *v)).collect();
        storage.sort();
        assert_eq!(
            storage,
            vec![
                (U256::from(1), U256::from(11)),
                (U256::from(2), U256::from(22))
            ]
        );
    }
}
