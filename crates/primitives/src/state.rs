use alloy_primitives::{
    b256,
    map::{AddressMap, B256Map, HashMap},
    Bytes, B256, U256,
};
use serde::{Deserialize, Serialize};

/// keccak256 of the empty byte string: the code hash of an account without code.
pub const EMPTY_CODE_HASH: B256 =
    b256!("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");

/// Root of an empty Merkle-Patricia trie: keccak256(rlp("")).
pub const EMPTY_ROOT_HASH: B256 =
    b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");

/// The flat part of an account as execution sees it. The storage root is not here: it belongs
/// to the state commitment, which derives it from the storage slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: EMPTY_CODE_HASH,
        }
    }
}

impl Account {
    /// Empty in the sense of EIP-161: no nonce, no balance, no code.
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && self.code_hash == EMPTY_CODE_HASH
    }
}

/// What one block (or one transaction) did to one account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    /// The account after the change; `None` when it was deleted (self-destruct, or touched while
    /// empty under EIP-161).
    pub info: Option<Account>,
    /// All storage the account had before is gone (deleted or re-created); `storage` then holds
    /// the complete new storage.
    pub storage_cleared: bool,
    /// Slots written, with their new values; a zero value deletes the slot.
    pub storage: StorageChanges,
}

impl AccountChange {
    /// Layers `later` on top, as if the two were applied one after the other: a change that
    /// clears the storage replaces everything before it.
    pub fn merge(&mut self, later: AccountChange) {
        if later.storage_cleared {
            *self = later;
        } else {
            self.info = later.info;
            self.storage.extend(later.storage);
        }
    }
}

/// Slot changes of one account, by slot.
pub type StorageChanges = HashMap<U256, U256, SlotHashing>;

/// Hashing for maps keyed by storage slot. A slot is four words: two independent folded
/// multiplies take two words each and a third joins them, where the general-purpose hasher
/// runs its loop for byte strings of any length; executors hash a slot several times per
/// storage access. Seeded once per process from the standard library's random keys, so that
/// slots chosen by a contract cannot be made to collide without knowing the seeds.
#[derive(Clone, Copy, Debug)]
pub struct SlotHashing(&'static [u64; 4]);

impl Default for SlotHashing {
    fn default() -> Self {
        static SEEDS: std::sync::OnceLock<[u64; 4]> = std::sync::OnceLock::new();
        SlotHashing(SEEDS.get_or_init(|| {
            use std::hash::BuildHasher as _;
            let random = std::collections::hash_map::RandomState::new();
            std::array::from_fn(|i| random.hash_one(i))
        }))
    }
}

impl std::hash::BuildHasher for SlotHashing {
    type Hasher = SlotHasher;

    fn build_hasher(&self) -> SlotHasher {
        SlotHasher {
            seeds: self.0,
            hash: self.0[0],
        }
    }
}

/// The hasher [`SlotHashing`] builds.
#[derive(Clone, Copy, Debug)]
pub struct SlotHasher {
    seeds: &'static [u64; 4],
    hash: u64,
}

/// The high and low halves of the full product, xored.
#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

impl std::hash::Hasher for SlotHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let [s0, s1, s2, s3] = *self.seeds;
        if let Ok(slot) = <&[u8; 32]>::try_from(bytes) {
            // A slot: a U256 hashes as its 32 bytes.
            let low = folded_multiply(word(&slot[..8]) ^ s0, word(&slot[8..16]) ^ s1);
            let high = folded_multiply(word(&slot[16..24]) ^ s2, word(&slot[24..]) ^ s3);
            self.hash = folded_multiply(self.hash ^ low, high ^ s1.rotate_left(32));
            return;
        }
        for chunk in bytes.chunks(8) {
            self.write_u64(word(chunk));
        }
        self.write_u64(bytes.len() as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.hash = folded_multiply(self.hash ^ n, self.seeds[2] | 1);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The effect of a block on state.
///
/// Hash maps, in no particular order: nothing derived from a diff depends on the order of its
/// entries (the state root comes from tries keyed by hashed address and slot, and the store
/// writes one batch of distinct keys), so executors hand over the maps they built instead of
/// sorting them for nobody. Whoever needs an order (a printout, a comparison) sorts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDiff {
    pub accounts: AddressMap<AccountChange>,
    /// Bytecode first deployed in this block, by code hash.
    pub codes: B256Map<Bytes>,
}

impl StateDiff {
    /// Layers `later` on top of `self`, as if the two were applied one after the other.
    pub fn merge(&mut self, later: StateDiff) {
        for (addr, change) in later.accounts {
            match self.accounts.entry(addr) {
                std::collections::hash_map::Entry::Occupied(mut existing) => {
                    existing.get_mut().merge(change)
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(change);
                }
            }
        }
        self.codes.extend(later.codes);
    }

    /// Number of changed keys (accounts plus storage slots).
    pub fn key_count(&self) -> usize {
        self.accounts.values().map(|c| 1 + c.storage.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{keccak256, Address};

    /// Slots as contracts use them: small indexes (fixed variables) and keccak outputs
    /// (mappings). Both must spread over a table's buckets and its control bytes (hashbrown
    /// takes the bucket from the low bits and a tag from the top seven).
    #[test]
    fn slot_hashes_spread_small_and_hashed_slots() {
        use std::hash::BuildHasher;
        let hashing = SlotHashing::default();
        let small = (0u64..4096).map(U256::from);
        let hashed = (0u64..4096).map(|i| U256::from_be_bytes(keccak256(i.to_be_bytes()).0));
        for (name, slots) in [
            ("small", small.collect::<Vec<_>>()),
            ("hashed", hashed.collect()),
        ] {
            let hashes: Vec<u64> = slots.iter().map(|s| hashing.hash_one(s)).collect();
            let mut buckets = vec![0u32; 1024];
            let mut tags = [false; 128];
            for h in &hashes {
                buckets[(*h % 1024) as usize] += 1;
                tags[(*h >> 57) as usize] = true;
            }
            // Four per bucket on average: a good hash fills nearly all and piles up few.
            let empty = buckets.iter().filter(|b| **b == 0).count();
            let fullest = *buckets.iter().max().unwrap();
            assert!(empty < 60, "{name}: {empty} of 1024 buckets empty");
            assert!(fullest <= 16, "{name}: {fullest} slots in one bucket");
            assert!(tags.iter().all(|t| *t), "{name}: a tag never used");
            // The same slot hashes the same.
            assert_eq!(hashing.hash_one(slots[7]), hashes[7]);
            assert_eq!(SlotHashing::default().hash_one(slots[7]), hashes[7]);
        }
        // Anything other than a slot goes through the general path, by its length too.
        assert_ne!(hashing.hash_one([0u8; 0]), hashing.hash_one([0u8; 8]));
    }

    #[test]
    fn a_storage_map_keeps_what_was_put_in() {
        // Distinct slots, some with high words set.
        let slot = |i: u64| U256::from(i) + (U256::from(i % 7) << 200);
        let mut storage = StorageChanges::default();
        for i in 0u64..10_000 {
            storage.insert(slot(i), U256::from(i + 1));
        }
        assert_eq!(storage.len(), 10_000);
        for i in 0u64..10_000 {
            assert_eq!(storage.get(&slot(i)), Some(&U256::from(i + 1)));
        }
        assert_eq!(storage.get(&U256::MAX), None);
    }

    #[test]
    fn merge_respects_storage_clear() {
        let a = Address::repeat_byte(1);
        let mut first = StateDiff::default();
        first.accounts.insert(
            a,
            AccountChange {
                info: Some(Account::default()),
                storage_cleared: false,
                storage: [(U256::from(1), U256::from(5))].into_iter().collect(),
            },
        );
        let mut second = StateDiff::default();
        second.accounts.insert(
            a,
            AccountChange {
                info: Some(Account {
                    nonce: 1,
                    ..Default::default()
                }),
                storage_cleared: true,
                storage: [(U256::from(2), U256::from(7))].into_iter().collect(),
            },
        );
        first.merge(second.clone());
        assert_eq!(first.accounts[&a], second.accounts[&a]);
        assert_eq!(keccak(&[]), EMPTY_CODE_HASH);
    }

    fn keccak(b: &[u8]) -> B256 {
        alloy_primitives::keccak256(b)
    }
}
