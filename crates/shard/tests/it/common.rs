//! Builders for test blocks and an in-memory model of the flat state.

use std::collections::BTreeMap;
use tessera_primitives::{
    keccak256, Account, Address, Bloom, Bytes, Header, Log, Receipt, ShardId, StateDiff, TxStatus,
    B256, U256,
};
use tessera_shard::store::{BlockCommit, Store};

/// A header with the fields storage cares about; the rest fixed.
pub fn header(number: u64, parent_hash: B256, state_root: B256) -> Header {
    Header {
        shard: ShardId(0),
        number,
        parent_hash,
        timestamp: 1_700_000_000 + number,
        beneficiary: Address::ZERO,
        gas_limit: 30_000_000,
        gas_used: 0,
        base_fee: 7,
        state_root,
        transactions_root: B256::ZERO,
        receipts_root: B256::ZERO,
        logs_bloom: Bloom::default(),
    }
}

/// An owned block, lent to [`Store::commit_block`] through [`TestBlock::commit`].
#[derive(Clone, Debug)]
pub struct TestBlock {
    pub header: Header,
    pub transactions: Vec<Bytes>,
    pub tx_hashes: Vec<B256>,
    pub receipts: Vec<Receipt>,
    pub diff: StateDiff,
    pub trie_nodes: Vec<(B256, Vec<u8>)>,
}

impl TestBlock {
    pub fn new(header: Header, diff: StateDiff) -> Self {
        Self {
            header,
            transactions: Vec::new(),
            tx_hashes: Vec::new(),
            receipts: Vec::new(),
            diff,
            trie_nodes: Vec::new(),
        }
    }

    /// Appends a transaction with these raw bytes and a successful receipt carrying `logs`.
    pub fn with_tx(mut self, raw: Vec<u8>, logs: Vec<Log>) -> Self {
        let cumulative = 21_000 * (self.receipts.len() as u64 + 1);
        self.tx_hashes.push(keccak256(&raw));
        self.transactions.push(raw.into());
        self.receipts.push(Receipt {
            tx_type: 2,
            status: TxStatus::Success,
            gas_used: 21_000,
            cumulative_gas_used: cumulative,
            effective_gas_price: 7,
            logs,
            contract_address: None,
            output: Bytes::new(),
        });
        self
    }

    /// Adds a trie node with this RLP, keyed by its hash; returns the hash.
    pub fn add_node(&mut self, rlp: Vec<u8>) -> B256 {
        let hash = keccak256(&rlp);
        self.trie_nodes.push((hash, rlp));
        hash
    }

    pub fn commit(&self) -> BlockCommit<'_> {
        BlockCommit {
            header: &self.header,
            transactions: &self.transactions,
            tx_hashes: &self.tx_hashes,
            receipts: &self.receipts,
            diff: &self.diff,
            trie_nodes: &self.trie_nodes,
            consensus: None,
        }
    }
}

pub fn log(address: Address, topics: Vec<B256>, data: &[u8]) -> Log {
    Log::new(address, topics, Bytes::copy_from_slice(data)).expect("at most four topics")
}

/// The flat state as plain maps: what the store should hold, or what it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatState {
    pub accounts: BTreeMap<Address, Account>,
    /// Nonzero slots only.
    pub storage: BTreeMap<(Address, U256), U256>,
    pub codes: BTreeMap<B256, Bytes>,
}

impl FlatState {
    /// Applies `diff` with the documented semantics of `Store::commit_block`.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (address, change) in &diff.accounts {
            let Some(info) = change.info else {
                self.accounts.remove(address);
                self.storage.retain(|(a, _), _| a != address);
                continue;
            };
            self.accounts.insert(*address, info);
            if change.storage_cleared {
                self.storage.retain(|(a, _), _| a != address);
            }
            for (slot, value) in &change.storage {
                if value.is_zero() {
                    self.storage.remove(&(*address, *slot));
                } else {
                    self.storage.insert((*address, *slot), *value);
                }
            }
        }
        self.codes
            .extend(diff.codes.iter().map(|(h, c)| (*h, c.clone())));
    }

    /// Everything the store's flat tables hold.
    pub fn read(store: &Store) -> FlatState {
        let accounts = store
            .iter_accounts()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let storage = store
            .iter_storage()
            .unwrap()
            .map(|entry| entry.map(|(a, slot, value)| ((a, slot), value)))
            .collect::<Result<_, _>>()
            .unwrap();
        let codes = store
            .iter_codes()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        FlatState {
            accounts,
            storage,
            codes,
        }
    }

    /// A hash of the whole state, order-independent of how it was built.
    pub fn digest(&self) -> B256 {
        let mut bytes = Vec::new();
        for (address, account) in &self.accounts {
            bytes.extend_from_slice(address.as_slice());
            bytes.extend_from_slice(&account.nonce.to_be_bytes());
            bytes.extend_from_slice(&account.balance.to_be_bytes::<32>());
            bytes.extend_from_slice(account.code_hash.as_slice());
        }
        bytes.push(0xee);
        for ((address, slot), value) in &self.storage {
            bytes.extend_from_slice(address.as_slice());
            bytes.extend_from_slice(&slot.to_be_bytes::<32>());
            bytes.extend_from_slice(&value.to_be_bytes::<32>());
        }
        bytes.push(0xee);
        for (hash, code) in &self.codes {
            bytes.extend_from_slice(hash.as_slice());
            bytes.extend_from_slice(code);
        }
        keccak256(bytes)
    }

    /// A short account of how `actual` differs from `self`, for assertion messages.
    pub fn difference(&self, actual: &FlatState) -> String {
        let mut out = Vec::new();
        for (a, acc) in &self.accounts {
            match actual.accounts.get(a) {
                Some(got) if got == acc => {}
                got => out.push(format!("account {a}: expected {acc:?}, found {got:?}")),
            }
        }
        for a in actual
            .accounts
            .keys()
            .filter(|a| !self.accounts.contains_key(*a))
        {
            out.push(format!("unexpected account {a}"));
        }
        for (key, value) in &self.storage {
            match actual.storage.get(key) {
                Some(got) if got == value => {}
                got => out.push(format!("slot {key:?}: expected {value}, found {got:?}")),
            }
        }
        for key in actual
            .storage
            .keys()
            .filter(|k| !self.storage.contains_key(*k))
        {
            out.push(format!("unexpected slot {key:?} = {}", actual.storage[key]));
        }
        for hash in self.codes.keys().filter(|h| !actual.codes.contains_key(*h)) {
            out.push(format!("missing code {hash}"));
        }
        for hash in actual.codes.keys().filter(|h| !self.codes.contains_key(*h)) {
            out.push(format!("unexpected code {hash}"));
        }
        out.truncate(20);
        out.join("\n")
    }
}

/// Signs `tx` with `secret` (libsecp256k1, low-s) into an EIP-2718 envelope.
pub fn sign_envelope<T>(secret: &secp256k1::SecretKey, tx: T) -> alloy_consensus::TxEnvelope
where
    T: alloy_consensus::SignableTransaction<alloy_primitives::Signature>,
    alloy_consensus::TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let msg = secp256k1::Message::from_digest(tx.signature_hash().0);
    let sig = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(msg, secret);
    let (recid, bytes) = sig.serialize_compact();
    let signature = alloy_primitives::Signature::new(
        U256::from_be_slice(&bytes[..32]),
        U256::from_be_slice(&bytes[32..]),
        recid == secp256k1::ecdsa::RecoveryId::One,
    );
    tx.into_signed(signature).into()
}
