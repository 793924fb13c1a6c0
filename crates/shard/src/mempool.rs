//! The shard's transaction pool: signed transactions waiting for a block, the admission rules
//! that decide which ones get in, and the selection of what the next block proposes.
//!
//! The pool is a plain synchronous data structure: no IO, no clock, no locks (the node wraps it
//! in a mutex). It does not read state either. Whoever calls it passes what the chain says right
//! now: the rules ([`PoolRules`]), the sender's nonce and balance ([`SenderState`]) on admission,
//! each sender's nonce on selection. Transactions are held per sender in nonce order, with an
//! index from hash to (sender, nonce).
//!
//! What is subtle:
//!
//! - **Determinism.** [`Mempool::select`] is a function of the pool's contents and its
//!   arguments only: never of arrival order or hash-map iteration. Senders are kept in ordered
//!   maps, and equal tips are broken by sender address, then nonce. Two nodes holding the same
//!   transactions propose the same block.
//! - **Nonces and gaps.** A sender's transactions are *pending* when their nonces run without a
//!   gap from the account's nonce; the rest are *queued* until the gap fills. Only pending ones
//!   are selected, a sender's lower nonce always before its higher one, and a transaction that
//!   cannot be taken (fee cap below the base fee, gas does not fit) holds back every later one of
//!   that sender. [`Mempool::remove`] can open a gap.
//! - **Stale transactions.** The pool does not learn about blocks by itself: after each block
//!   the caller calls [`Mempool::prune_sender`] for the senders whose nonce moved. Until then,
//!   mined transactions stay in the pool, are never selected (selection starts at the state
//!   nonce), and still count toward the per-sender and total limits. The nonce window of
//!   admission (at most `max_per_sender` nonces past the account's) already bounds the live
//!   transactions of a sender, so the per-sender limit only refuses while pruning lags.
//! - **Replacement.** A transaction with the nonce of a pooled one replaces it only if both its
//!   fee cap and its tip cap are at least `price_bump_percent` higher, rounded up, so that the
//!   bump is really paid and replacing cannot be used to churn the pool for free.
//! - **Balance.** Admission checks that the balance covers `gas_limit * max_fee + value` of the
//!   transaction alone, not the sum over the sender's queued transactions; the executor refuses
//!   (as an outcome) whatever the balance no longer covers when it runs, and the caller then
//!   drops it with [`Mempool::remove`].
//! - **A full pool refuses** new transactions; it does not evict cheaper ones to make room.
//! - A fee cap below the current base fee is admitted (the base fee may fall) but not selected.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, B256, U256};
use tessera_execution::{intrinsic_gas, Fork, RecoveredTx};

/// EIP-7825: from Osaka, no transaction may have a gas limit above 2^24, whatever the block's.
const EIP7825_TX_GAS_LIMIT_CAP: u64 = 1 << 24;

/// Limits of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Transactions one sender may have pooled, and how far past its account nonce they reach.
    pub max_per_sender: usize,
    /// Transactions in the whole pool.
    pub max_total: usize,
    /// Size of one transaction's EIP-2718 encoding.
    pub max_tx_bytes: usize,
    /// How much higher both fee caps of a replacement must be, in percent.
    pub price_bump_percent: u128,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_per_sender: 64,
            max_total: 10_000,
            max_tx_bytes: 128 * 1024,
            price_bump_percent: 10,
        }
    }
}

/// What admission needs to know about the chain right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRules {
    pub chain_id: u64,
    pub fork: Fork,
    pub block_gas_limit: u64,
}

/// The sender's account in the latest state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderState {
    pub nonce: u64,
    pub balance: U256,
}

/// How an admitted transaction entered the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It took a nonce no pooled transaction of its sender had.
    New,
    /// It replaced the pooled transaction with this hash (same sender and nonce, higher fees).
    Replaced(B256),
}

/// Counts of pooled transactions, as `txpool_status` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Contiguous from their sender's account nonce: selectable now.
    pub pending: usize,
    /// Everything else: after a nonce gap, or below the account nonce and not yet pruned.
    pub queued: usize,
}

/// Why a transaction was refused. The messages start with the phrases geth uses, which
/// clients match on; the numbers after them explain the refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("oversized data: transaction of {size} bytes exceeds the limit of {max} bytes")]
    Oversized { size: usize, max: usize },
    #[error("transaction type not supported: blob transactions (type 3) are not accepted")]
    BlobTransaction,
    #[error("only replay-protected (EIP-155) transactions allowed")]
    NotReplayProtected,
    #[error("invalid chain id: transaction has {tx}, this chain is {chain}")]
    WrongChainId { tx: u64, chain: u64 },
    #[error("exceeds block gas limit: gas limit {gas_limit} > block gas limit {block_gas_limit}")]
    ExceedsBlockGasLimit {
        gas_limit: u64,
        block_gas_limit: u64,
    },
    #[error("transaction gas limit too high: gas limit {gas_limit} > per-transaction cap {cap} (EIP-7825)")]
    GasLimitAboveCap { gas_limit: u64, cap: u64 },
    #[error("intrinsic gas too low: gas limit {gas_limit} < intrinsic gas {intrinsic}")]
    IntrinsicGasTooLow { gas_limit: u64, intrinsic: u64 },
    #[error(
        "max priority fee per gas higher than max fee per gas: {max_priority_fee} > {max_fee}"
    )]
    TipAboveFeeCap {
        max_priority_fee: u128,
        max_fee: u128,
    },
    #[error("already known")]
    AlreadyKnown,
    #[error("nonce too low: next nonce {next}, transaction nonce {tx}")]
    NonceTooLow { next: u64, tx: u64 },
    /// `max_ahead` is `max_per_sender`: nonces from the account's up to `max_ahead - 1` past it
    /// are admitted.
    #[error("nonce too high: transaction nonce {tx} is {max_ahead} or more beyond the account's next nonce {next}")]
    NonceTooHigh {
        tx: u64,
        max_ahead: usize,
        next: u64,
    },
    #[error("replacement transaction underpriced: needs max fee >= {min_max_fee} and priority fee >= {min_priority_fee}")]
    ReplacementUnderpriced {
        min_max_fee: U256,
        min_priority_fee: U256,
    },
    #[error("insufficient funds for gas * price + value: balance {balance}, cost {cost}")]
    InsufficientFunds { balance: U256, cost: U256 },
    #[error("txpool is full for this sender: {max} transactions")]
    SenderFull { max: usize },
    #[error("txpool is full: {max} transactions")]
    PoolFull { max: usize },
}

/// Pending and queued signed transactions of one shard.
#[derive(Debug, Clone)]
pub struct Mempool {
    cfg: MempoolConfig,
    /// Never holds an empty inner map.
    by_sender: BTreeMap<Address, BTreeMap<u64, RecoveredTx>>,
    /// Exactly one entry per transaction in `by_sender`. Only looked up, never iterated.
    by_hash: HashMap<B256, (Address, u64)>,
}

impl Mempool {
    pub fn new(cfg: MempoolConfig) -> Self {
        Self {
            cfg,
            by_sender: BTreeMap::new(),
            by_hash: HashMap::new(),
        }
    }

    pub fn config(&self) -> &MempoolConfig {
        &self.cfg
    }

    /// Admits `tx` if it passes every check, in the order of [`PoolError`]'s variants; a refused
    /// transaction leaves the pool unchanged. `encoded_len` is the length of the raw EIP-2718
    /// bytes.
    pub fn add(
        &mut self,
        tx: RecoveredTx,
        encoded_len: usize,
        sender: SenderState,
        rules: &PoolRules,
    ) -> Result<Added, PoolError> {
        let envelope = &tx.envelope;
        if encoded_len > self.cfg.max_tx_bytes {
            return Err(PoolError::Oversized {
                size: encoded_len,
                max: self.cfg.max_tx_bytes,
            });
        }
        if envelope.is_eip4844() {
            return Err(PoolError::BlobTransaction);
        }
        match envelope.chain_id() {
            None => return Err(PoolError::NotReplayProtected),
            Some(id) if id != rules.chain_id => {
                return Err(PoolError::WrongChainId {
                    tx: id,
                    chain: rules.chain_id,
                })
            }
            Some(_) => {}
        }
        let gas_limit = envelope.gas_limit();
        if gas_limit > rules.block_gas_limit {
            return Err(PoolError::ExceedsBlockGasLimit {
                gas_limit,
                block_gas_limit: rules.block_gas_limit,
            });
        }
        if rules.fork >= Fork::Osaka && gas_limit > EIP7825_TX_GAS_LIMIT_CAP {
            return Err(PoolError::GasLimitAboveCap {
                gas_limit,
                cap: EIP7825_TX_GAS_LIMIT_CAP,
            });
        }
        let intrinsic = intrinsic_gas(rules.fork, envelope);
        if gas_limit < intrinsic {
            return Err(PoolError::IntrinsicGasTooLow {
                gas_limit,
                intrinsic,
            });
        }
        let (max_fee, max_priority_fee) = fee_caps(envelope);
        if max_priority_fee > max_fee {
            return Err(PoolError::TipAboveFeeCap {
                max_priority_fee,
                max_fee,
            });
        }
        if self.by_hash.contains_key(&tx.hash) {
            return Err(PoolError::AlreadyKnown);
        }
        let nonce = envelope.nonce();
        if nonce < sender.nonce {
            return Err(PoolError::NonceTooLow {
                next: sender.nonce,
                tx: nonce,
            });
        }
        let window = u64::try_from(self.cfg.max_per_sender).unwrap_or(u64::MAX);
        if nonce - sender.nonce >= window {
            return Err(PoolError::NonceTooHigh {
                tx: nonce,
                max_ahead: self.cfg.max_per_sender,
                next: sender.nonce,
            });
        }
        let pooled = self.by_sender.get(&tx.sender);
        let replaced = pooled.and_then(|txs| txs.get(&nonce));
        if let Some(old) = replaced {
            let (old_fee, old_tip) = fee_caps(&old.envelope);
            let min_max_fee = bumped(old_fee, self.cfg.price_bump_percent);
            let min_priority_fee = bumped(old_tip, self.cfg.price_bump_percent);
            if U256::from(max_fee) < min_max_fee || U256::from(max_priority_fee) < min_priority_fee
            {
                return Err(PoolError::ReplacementUnderpriced {
                    min_max_fee,
                    min_priority_fee,
                });
            }
        }
        // At most 2^64 * 2^128 before the value: only adding the value can overflow, and a cost
        // above U256::MAX is above every balance anyway.
        let cost = (U256::from(gas_limit) * U256::from(max_fee)).saturating_add(envelope.value());
        if sender.balance < cost {
            return Err(PoolError::InsufficientFunds {
                balance: sender.balance,
                cost,
            });
        }
        let replaced = replaced.map(|old| old.hash);
        if replaced.is_none() {
            if pooled.map_or(0, BTreeMap::len) >= self.cfg.max_per_sender {
                return Err(PoolError::SenderFull {
                    max: self.cfg.max_per_sender,
                });
            }
            if self.len() >= self.cfg.max_total {
                return Err(PoolError::PoolFull {
                    max: self.cfg.max_total,
                });
            }
        }

        if let Some(old) = replaced {
            self.by_hash.remove(&old);
        }
        self.by_hash.insert(tx.hash, (tx.sender, nonce));
        self.by_sender
            .entry(tx.sender)
            .or_default()
            .insert(nonce, tx);
        Ok(replaced.map_or(Added::New, Added::Replaced))
    }

    pub fn get(&self, hash: &B256) -> Option<&RecoveredTx> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.by_sender.get(sender)?.get(nonce)
    }

    pub fn contains(&self, hash: &B256) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The nonce `sender`'s next transaction should have: `state_nonce` advanced past its pooled
    /// transactions that are contiguous from it.
    pub fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let Some(txs) = self.by_sender.get(sender) else {
            return state_nonce;
        };
        let mut next = state_nonce;
        for nonce in txs.range(state_nonce..).map(|(nonce, _)| *nonce) {
            if nonce != next {
                break;
            }
            // A pooled nonce of u64::MAX (invalid under EIP-2681) must not overflow here.
            next = next.saturating_add(1);
        }
        next
    }

    /// Transactions ready for the next block, in the order to include them.
    ///
    /// Per sender: contiguous nonces from its state nonce (`nonce_of` gives it), lower nonce
    /// first. Across senders: highest effective tip at `base_fee` first
    /// (`min(max_priority_fee, max_fee - base_fee)`), equal tips by sender address, then nonce.
    /// A transaction whose fee cap is below `base_fee`, or whose gas limit no longer fits in
    /// what is left of `gas_limit`, is skipped together with the rest of its sender's; other
    /// senders are still tried.
    pub fn select(
        &self,
        gas_limit: u64,
        base_fee: u64,
        mut nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<RecoveredTx> {
        // One candidate per sender at a time: its lowest unselected nonce.
        let mut heads = BinaryHeap::new();
        for (sender, txs) in &self.by_sender {
            let nonce = nonce_of(sender);
            if let Some(head) = Candidate::new(sender, txs, nonce, base_fee) {
                heads.push(head);
            }
        }
        let mut selected = Vec::new();
        let mut used = 0u64;
        while let Some(head) = heads.pop() {
            let gas = head.tx.envelope.gas_limit();
            let Some(total) = used.checked_add(gas).filter(|total| *total <= gas_limit) else {
                continue;
            };
            used = total;
            selected.push(head.tx.clone());
            if let Some(next) = head
                .nonce
                .checked_add(1)
                .and_then(|nonce| Candidate::new(head.sender, head.txs, nonce, base_fee))
            {
                heads.push(next);
            }
        }
        selected
    }

    /// After a block: drops every transaction of `sender` with a nonce below `state_nonce`,
    /// mined or made stale.
    pub fn prune_sender(&mut self, sender: &Address, state_nonce: u64) {
        let Some(txs) = self.by_sender.get_mut(sender) else {
            return;
        };
        let kept = txs.split_off(&state_nonce);
        let dropped = std::mem::replace(txs, kept);
        if txs.is_empty() {
            self.by_sender.remove(sender);
        }
        for tx in dropped.values() {
            self.by_hash.remove(&tx.hash);
        }
    }

    /// Drops one transaction (the executor refused it, say) and returns it. Its sender's later
    /// transactions stay, queued behind the gap.
    pub fn remove(&mut self, hash: &B256) -> Option<RecoveredTx> {
        let (sender, nonce) = self.by_hash.remove(hash)?;
        let txs = self.by_sender.get_mut(&sender)?;
        let tx = txs.remove(&nonce);
        if txs.is_empty() {
            self.by_sender.remove(&sender);
        }
        tx
    }

    /// Senders with pooled transactions, in address order.
    pub fn senders(&self) -> impl Iterator<Item = &Address> {
        self.by_sender.keys()
    }

    /// `sender`'s pooled transactions in nonce order, stale and queued ones included.
    pub fn sender_txs(&self, sender: &Address) -> impl Iterator<Item = &RecoveredTx> {
        self.by_sender
            .get(sender)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// How many transactions are pending and queued, given each sender's state nonce.
    pub fn status(&self, mut nonce_of: impl FnMut(&Address) -> u64) -> PoolStatus {
        let mut status = PoolStatus::default();
        for (sender, txs) in &self.by_sender {
            let state_nonce = nonce_of(sender);
            let pending = self.pending_nonce(sender, state_nonce) - state_nonce;
            // At most `txs.len()`: counted from distinct pooled nonces.
            let pending = usize::try_from(pending).unwrap_or(usize::MAX);
            status.pending += pending;
            status.queued += txs.len() - pending;
        }
        status
    }
}

/// The fee cap and the tip cap; a legacy or EIP-2930 gas price is both.
fn fee_caps(envelope: &TxEnvelope) -> (u128, u128) {
    let max_fee = envelope.max_fee_per_gas();
    let max_priority_fee = if envelope.is_dynamic_fee() {
        envelope.max_priority_fee_per_gas().unwrap_or(max_fee)
    } else {
        max_fee
    };
    (max_fee, max_priority_fee)
}

/// `fee` raised by `percent`, rounded up: the least fee a replacement may offer.
fn bumped(fee: u128, percent: u128) -> U256 {
    let scaled = U256::from(fee) * (U256::from(100u8) + U256::from(percent));
    scaled.div_ceil(U256::from(100u8))
}

/// What a transaction pays the block's beneficiary per gas at `base_fee`, or `None` if its fee
/// cap does not cover the base fee.
fn effective_tip(envelope: &TxEnvelope, base_fee: u64) -> Option<u128> {
    let (max_fee, max_priority_fee) = fee_caps(envelope);
    let headroom = max_fee.checked_sub(u128::from(base_fee))?;
    Some(max_priority_fee.min(headroom))
}

/// A sender's next transaction in [`Mempool::select`], ordered for a max-heap: higher tip
/// first, then lower sender address, then lower nonce.
struct Candidate<'a> {
    tip: u128,
    sender: &'a Address,
    nonce: u64,
    tx: &'a RecoveredTx,
    txs: &'a BTreeMap<u64, RecoveredTx>,
}

impl<'a> Candidate<'a> {
    fn new(
        sender: &'a Address,
        txs: &'a BTreeMap<u64, RecoveredTx>,
        nonce: u64,
        base_fee: u64,
    ) -> Option<Self> {
        let tx = txs.get(&nonce)?;
        let tip = effective_tip(&tx.envelope, base_fee)?;
        Some(Self {
            tip,
            sender,
            nonce,
            tx,
            txs,
        })
    }

    fn key(&self) -> (u128, Reverse<&'a Address>, Reverse<u64>) {
        (self.tip, Reverse(self.sender), Reverse(self.nonce))
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Candidate<'_> {}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, Signed, TxEip1559, TxEip4844, TxLegacy};
    use alloy_primitives::{Bytes, Signature, TxKind};
    use proptest::prelude::*;
    use secp256k1::{
        ecdsa::{RecoverableSignature, RecoveryId},
        SecretKey,
    };
    use std::sync::OnceLock;

    const CHAIN: u64 = 7;
    const RULES: PoolRules = PoolRules {
        chain_id: CHAIN,
        fork: Fork::Prague,
        block_gas_limit: 30_000_000,
    };

    fn secret(i: u8) -> SecretKey {
        SecretKey::from_secret_bytes([i; 32]).unwrap()
    }

    fn sign<T>(secret: &SecretKey, tx: T) -> RecoveredTx
    where
        T: SignableTransaction<Signature>,
        TxEnvelope: From<Signed<T>>,
    {
        let msg = secp256k1::Message::from_digest(tx.signature_hash().0);
        let sig = RecoverableSignature::sign_ecdsa_recoverable(msg, secret);
        let (recid, rs) = sig.serialize_compact();
        let signature = Signature::new(
            U256::from_be_slice(&rs[..32]),
            U256::from_be_slice(&rs[32..]),
            recid == RecoveryId::One,
        );
        RecoveredTx::from_envelope(TxEnvelope::from(tx.into_signed(signature))).unwrap()
    }

    fn transfer(nonce: u64, max_fee: u128, tip: u128) -> TxEip1559 {
        TxEip1559 {
            chain_id: CHAIN,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::repeat_byte(0xee)),
            value: U256::from(1),
            ..Default::default()
        }
    }

    /// A signed EIP-1559 transfer from key `k`.
    fn tx(k: u8, nonce: u64, max_fee: u128, tip: u128) -> RecoveredTx {
        sign(&secret(k), transfer(nonce, max_fee, tip))
    }

    /// A signed EIP-1559 transfer from key `k` with this gas limit.
    fn tx_gas(k: u8, nonce: u64, tip: u128, gas_limit: u64) -> RecoveredTx {
        sign(
            &secret(k),
            TxEip1559 {
                gas_limit,
                ..transfer(nonce, 1_000, tip)
            },
        )
    }

    fn legacy(k: u8, nonce: u64, gas_price: u128, chain_id: Option<u64>) -> RecoveredTx {
        sign(
            &secret(k),
            TxLegacy {
                chain_id,
                nonce,
                gas_price,
                gas_limit: 21_000,
                to: TxKind::Call(Address::repeat_byte(0xee)),
                value: U256::from(1),
                ..Default::default()
            },
        )
    }

    fn rich(nonce: u64) -> SenderState {
        SenderState {
            nonce,
            balance: U256::from(10u128.pow(30)),
        }
    }

    fn add_with(
        pool: &mut Mempool,
        tx: RecoveredTx,
        sender: SenderState,
        rules: &PoolRules,
    ) -> Result<Added, PoolError> {
        let len = tx.encoded().len();
        pool.add(tx, len, sender, rules)
    }

    fn add(pool: &mut Mempool, tx: RecoveredTx, state_nonce: u64) -> Result<Added, PoolError> {
        add_with(pool, tx, rich(state_nonce), &RULES)
    }

    /// The refusal's message, checked to start with `prefix`, with the pool left as it was.
    fn refused(
        pool: &mut Mempool,
        tx: RecoveredTx,
        sender: SenderState,
        rules: &PoolRules,
        prefix: &str,
    ) -> PoolError {
        let before: Vec<B256> = pool.by_hash.keys().copied().collect();
        let err = add_with(pool, tx, sender, rules).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(prefix),
            "{message:?} does not start with {prefix:?}"
        );
        let mut after: Vec<B256> = pool.by_hash.keys().copied().collect();
        let mut before = before;
        before.sort();
        after.sort();
        assert_eq!(before, after, "a refusal changed the pool");
        pool.check_invariants();
        err
    }

    fn pool() -> Mempool {
        Mempool::new(MempoolConfig::default())
    }

    fn hashes(txs: &[RecoveredTx]) -> Vec<B256> {
        txs.iter().map(|tx| tx.hash).collect()
    }

    impl Mempool {
        /// Panics unless the hash index and the per-sender maps describe the same transactions.
        fn check_invariants(&self) {
            let mut count = 0;
            for (sender, txs) in &self.by_sender {
                assert!(!txs.is_empty(), "empty entry for {sender}");
                for (nonce, tx) in txs {
                    assert_eq!(tx.sender, *sender);
                    assert_eq!(tx.envelope.nonce(), *nonce);
                    assert_eq!(self.by_hash.get(&tx.hash), Some(&(*sender, *nonce)));
                    count += 1;
                }
            }
            assert_eq!(self.by_hash.len(), count);
            assert_eq!(self.len(), count);
            for hash in self.by_hash.keys() {
                assert_eq!(self.get(hash).map(|tx| tx.hash), Some(*hash));
            }
        }
    }

    #[test]
    fn default_config() {
        let cfg = MempoolConfig::default();
        assert_eq!(
            (
                cfg.max_per_sender,
                cfg.max_total,
                cfg.max_tx_bytes,
                cfg.price_bump_percent
            ),
            (64, 10_000, 128 * 1024, 10)
        );
    }

    #[test]
    fn admits_and_finds() {
        let mut pool = pool();
        assert!(pool.is_empty());
        let a = tx(1, 0, 100, 10);
        let l = legacy(2, 0, 100, Some(CHAIN));
        assert_eq!(add(&mut pool, a.clone(), 0), Ok(Added::New));
        assert_eq!(add(&mut pool, l.clone(), 0), Ok(Added::New));
        assert_eq!(pool.len(), 2);
        assert!(pool.contains(&a.hash) && pool.contains(&l.hash));
        assert_eq!(pool.get(&a.hash).unwrap().sender, a.sender);
        assert!(!pool.contains(&B256::ZERO) && pool.get(&B256::ZERO).is_none());
        let mut senders: Vec<Address> = vec![a.sender, l.sender];
        senders.sort();
        assert_eq!(pool.senders().copied().collect::<Vec<_>>(), senders);
        pool.check_invariants();
    }

    #[test]
    fn refuses_oversized() {
        let big = sign(
            &secret(1),
            TxEip1559 {
                gas_limit: 100_000,
                input: Bytes::from(vec![1u8; 200]),
                ..transfer(0, 100, 1)
            },
        );
        let len = big.encoded().len();
        let mut pool = Mempool::new(MempoolConfig {
            max_tx_bytes: len - 1,
            ..Default::default()
        });
        let err = refused(
            &mut pool,
            big.clone(),
            rich(0),
            &RULES,
            "oversized data: transaction of",
        );
        assert_eq!(
            err,
            PoolError::Oversized {
                size: len,
                max: len - 1
            }
        );
        let mut pool = Mempool::new(MempoolConfig {
            max_tx_bytes: len,
            ..Default::default()
        });
        assert_eq!(add(&mut pool, big, 0), Ok(Added::New));
    }

    #[test]
    fn refuses_blob_transactions() {
        let blob = sign(
            &secret(1),
            TxEip4844 {
                chain_id: CHAIN,
                gas_limit: 21_000,
                max_fee_per_gas: 100,
                max_priority_fee_per_gas: 1,
                to: Address::repeat_byte(0xee),
                blob_versioned_hashes: vec![B256::repeat_byte(1)],
                max_fee_per_blob_gas: 100,
                ..Default::default()
            },
        );
        refused(
            &mut pool(),
            blob,
            rich(0),
            &RULES,
            "transaction type not supported",
        );
    }

    #[test]
    fn refuses_other_chains_and_unprotected_legacy() {
        let mut pool = pool();
        refused(
            &mut pool,
            legacy(1, 0, 100, None),
            rich(0),
            &RULES,
            "only replay-protected (EIP-155) transactions allowed",
        );
        let err = refused(
            &mut pool,
            legacy(1, 0, 100, Some(CHAIN + 1)),
            rich(0),
            &RULES,
            "invalid chain id",
        );
        assert_eq!(
            err,
            PoolError::WrongChainId {
                tx: CHAIN + 1,
                chain: CHAIN
            }
        );
        let other = sign(
            &secret(1),
            TxEip1559 {
                chain_id: 1,
                ..transfer(0, 100, 1)
            },
        );
        refused(&mut pool, other, rich(0), &RULES, "invalid chain id");
        assert_eq!(
            add(&mut pool, legacy(1, 0, 100, Some(CHAIN)), 0),
            Ok(Added::New)
        );
    }

    #[test]
    fn refuses_gas_above_the_block_limit() {
        let rules = PoolRules {
            block_gas_limit: 1_000_000,
            ..RULES
        };
        let mut pool = pool();
        let err = refused(
            &mut pool,
            tx_gas(1, 0, 1, 1_000_001),
            rich(0),
            &rules,
            "exceeds block gas limit",
        );
        assert_eq!(
            err,
            PoolError::ExceedsBlockGasLimit {
                gas_limit: 1_000_001,
                block_gas_limit: 1_000_000
            }
        );
        assert!(add_with(&mut pool, tx_gas(1, 0, 1, 1_000_000), rich(0), &rules).is_ok());
    }

    #[test]
    fn refuses_gas_above_the_eip7825_cap_from_osaka() {
        let osaka = PoolRules {
            fork: Fork::Osaka,
            block_gas_limit: 100_000_000,
            ..RULES
        };
        let prague = PoolRules {
            fork: Fork::Prague,
            ..osaka
        };
        let mut pool = pool();
        refused(
            &mut pool,
            tx_gas(1, 0, 1, (1 << 24) + 1),
            rich(0),
            &osaka,
            "transaction gas limit too high",
        );
        assert!(add_with(&mut pool, tx_gas(1, 0, 1, 1 << 24), rich(0), &osaka).is_ok());
        assert!(add_with(&mut pool, tx_gas(2, 0, 1, (1 << 24) + 1), rich(0), &prague).is_ok());
    }

    #[test]
    fn refuses_gas_below_intrinsic() {
        let mut pool = pool();
        let err = refused(
            &mut pool,
            tx_gas(1, 0, 1, 20_999),
            rich(0),
            &RULES,
            "intrinsic gas too low",
        );
        assert_eq!(
            err,
            PoolError::IntrinsicGasTooLow {
                gas_limit: 20_999,
                intrinsic: 21_000
            }
        );
        // 1000 nonzero calldata bytes: 37000 before Prague, the EIP-7623 floor 61000 after.
        let calldata = sign(
            &secret(1),
            TxEip1559 {
                gas_limit: 40_000,
                input: Bytes::from(vec![0xff; 1000]),
                ..transfer(0, 100, 1)
            },
        );
        let err = refused(
            &mut pool,
            calldata.clone(),
            rich(0),
            &RULES,
            "intrinsic gas too low",
        );
        assert_eq!(
            err,
            PoolError::IntrinsicGasTooLow {
                gas_limit: 40_000,
                intrinsic: 61_000
            }
        );
        let cancun = PoolRules {
            fork: Fork::Cancun,
            ..RULES
        };
        assert!(add_with(&mut pool, calldata, rich(0), &cancun).is_ok());
    }

    #[test]
    fn refuses_tip_above_fee_cap() {
        let err = refused(
            &mut pool(),
            tx(1, 0, 10, 11),
            rich(0),
            &RULES,
            "max priority fee per gas higher than max fee per gas",
        );
        assert_eq!(
            err,
            PoolError::TipAboveFeeCap {
                max_priority_fee: 11,
                max_fee: 10
            }
        );
        assert!(add(&mut pool(), tx(1, 0, 10, 10), 0).is_ok());
    }

    #[test]
    fn refuses_known_transactions() {
        let mut pool = pool();
        let a = tx(1, 0, 100, 1);
        add(&mut pool, a.clone(), 0).unwrap();
        let err = refused(&mut pool, a, rich(0), &RULES, "already known");
        assert_eq!(err.to_string(), "already known");
    }

    #[test]
    fn refuses_nonces_outside_the_window() {
        let mut pool = Mempool::new(MempoolConfig {
            max_per_sender: 4,
            ..Default::default()
        });
        let err = refused(
            &mut pool,
            tx(1, 4, 100, 1),
            rich(5),
            &RULES,
            "nonce too low",
        );
        assert_eq!(err, PoolError::NonceTooLow { next: 5, tx: 4 });
        let err = refused(
            &mut pool,
            tx(1, 9, 100, 1),
            rich(5),
            &RULES,
            "nonce too high",
        );
        assert_eq!(
            err,
            PoolError::NonceTooHigh {
                tx: 9,
                max_ahead: 4,
                next: 5
            }
        );
        assert!(add(&mut pool, tx(1, 5, 100, 1), 5).is_ok());
        assert!(add(&mut pool, tx(1, 8, 100, 1), 5).is_ok());
    }

    #[test]
    fn replacement_needs_both_fees_bumped() {
        let mut pool = pool();
        let old = tx(1, 0, 100, 10);
        add(&mut pool, old.clone(), 0).unwrap();
        // +9% on the fee cap.
        let err = refused(
            &mut pool,
            tx(1, 0, 109, 11),
            rich(0),
            &RULES,
            "replacement transaction underpriced",
        );
        assert_eq!(
            err,
            PoolError::ReplacementUnderpriced {
                min_max_fee: U256::from(110),
                min_priority_fee: U256::from(11)
            }
        );
        // Fee cap bumped, tip not.
        refused(
            &mut pool,
            tx(1, 0, 200, 10),
            rich(0),
            &RULES,
            "replacement transaction underpriced",
        );
        assert!(pool.contains(&old.hash));
        // Exactly +10% on both.
        let new = tx(1, 0, 110, 11);
        assert_eq!(
            add(&mut pool, new.clone(), 0),
            Ok(Added::Replaced(old.hash))
        );
        assert!(!pool.contains(&old.hash));
        assert!(pool.get(&old.hash).is_none());
        assert_eq!(pool.get(&new.hash).unwrap().hash, new.hash);
        assert_eq!(pool.len(), 1);
        pool.check_invariants();
    }

    #[test]
    fn replacement_bump_rounds_up() {
        let mut pool = pool();
        // Legacy: the gas price is both caps. 101 * 1.1 = 111.1, so 111 is not enough.
        let old = legacy(1, 0, 101, Some(CHAIN));
        add(&mut pool, old.clone(), 0).unwrap();
        let err = refused(
            &mut pool,
            legacy(1, 0, 111, Some(CHAIN)),
            rich(0),
            &RULES,
            "replacement transaction underpriced",
        );
        assert_eq!(
            err,
            PoolError::ReplacementUnderpriced {
                min_max_fee: U256::from(112),
                min_priority_fee: U256::from(112)
            }
        );
        // A dynamic-fee replacement of a legacy transaction compares both caps to its price.
        assert_eq!(
            add(&mut pool, tx(1, 0, 112, 112), 0),
            Ok(Added::Replaced(old.hash))
        );
        // The least replacement of the highest fee is beyond u128: refused, not overflowed.
        let whale = SenderState {
            nonce: 0,
            balance: U256::MAX,
        };
        add_with(
            &mut pool,
            tx(2, 0, u128::MAX - 1, u128::MAX - 1),
            whale,
            &RULES,
        )
        .unwrap();
        let err = refused(
            &mut pool,
            tx(2, 0, u128::MAX, u128::MAX),
            whale,
            &RULES,
            "replacement transaction underpriced",
        );
        assert!(
            matches!(err, PoolError::ReplacementUnderpriced { min_max_fee, .. }
                if min_max_fee > U256::from(u128::MAX)),
            "{err}"
        );
    }

    #[test]
    fn replacement_at_nine_percent_is_refused_at_ten_accepted() {
        let mut pool = pool();
        let old = legacy(1, 0, 1_000, Some(CHAIN));
        add(&mut pool, old.clone(), 0).unwrap();
        refused(
            &mut pool,
            legacy(1, 0, 1_090, Some(CHAIN)),
            rich(0),
            &RULES,
            "replacement transaction underpriced",
        );
        let new = legacy(1, 0, 1_100, Some(CHAIN));
        assert_eq!(
            add(&mut pool, new.clone(), 0),
            Ok(Added::Replaced(old.hash))
        );
        assert_eq!(
            hashes(&pool.sender_txs(&new.sender).cloned().collect::<Vec<_>>()),
            vec![new.hash]
        );
    }

    #[test]
    fn refuses_what_the_balance_does_not_cover() {
        let mut pool = pool();
        // 21000 gas at fee cap 100, plus a value of 1.
        let cost = U256::from(21_000 * 100 + 1);
        let poor = SenderState {
            nonce: 0,
            balance: cost - U256::ONE,
        };
        let err = refused(
            &mut pool,
            tx(1, 0, 100, 1),
            poor,
            &RULES,
            "insufficient funds for gas * price + value",
        );
        assert_eq!(
            err,
            PoolError::InsufficientFunds {
                balance: cost - U256::ONE,
                cost
            }
        );
        let enough = SenderState {
            nonce: 0,
            balance: cost,
        };
        assert!(add_with(&mut pool, tx(1, 0, 100, 1), enough, &RULES).is_ok());
        // A value near U256::MAX saturates the cost instead of wrapping round to a small one.
        let whale = sign(
            &secret(2),
            TxEip1559 {
                value: U256::MAX,
                ..transfer(0, 100, 1)
            },
        );
        let err = refused(&mut pool, whale, rich(0), &RULES, "insufficient funds");
        assert!(matches!(err, PoolError::InsufficientFunds { cost, .. } if cost == U256::MAX));
    }

    #[test]
    fn per_sender_limit_holds_while_pruning_lags() {
        let mut pool = Mempool::new(MempoolConfig {
            max_per_sender: 3,
            ..Default::default()
        });
        for nonce in 0..3 {
            add(&mut pool, tx(1, nonce, 100, 1), 0).unwrap();
        }
        // The window already keeps live transactions to 3.
        refused(
            &mut pool,
            tx(1, 3, 100, 1),
            rich(0),
            &RULES,
            "nonce too high",
        );
        // Two were mined, but the pool has not been pruned yet: it still holds 3.
        let err = refused(
            &mut pool,
            tx(1, 3, 100, 1),
            rich(2),
            &RULES,
            "txpool is full for this sender",
        );
        assert_eq!(err, PoolError::SenderFull { max: 3 });
        // Replacing a pooled nonce is not adding one.
        assert!(matches!(
            add(&mut pool, tx(1, 2, 200, 2), 2),
            Ok(Added::Replaced(_))
        ));
        pool.prune_sender(&tx(1, 0, 1, 1).sender, 2);
        assert!(add(&mut pool, tx(1, 3, 100, 1), 2).is_ok());
        // Other senders are not affected.
        assert!(add(&mut pool, tx(2, 0, 100, 1), 0).is_ok());
    }

    #[test]
    fn total_limit() {
        let mut pool = Mempool::new(MempoolConfig {
            max_total: 3,
            ..Default::default()
        });
        add(&mut pool, tx(1, 0, 100, 1), 0).unwrap();
        add(&mut pool, tx(1, 1, 100, 1), 0).unwrap();
        add(&mut pool, tx(2, 0, 100, 1), 0).unwrap();
        let err = refused(
            &mut pool,
            tx(3, 0, 100, 1),
            rich(0),
            &RULES,
            "txpool is full",
        );
        assert_eq!(err, PoolError::PoolFull { max: 3 });
        assert_eq!(err.to_string(), "txpool is full: 3 transactions");
        // A replacement still gets in when the pool is full.
        assert!(matches!(
            add(&mut pool, tx(2, 0, 200, 2), 0),
            Ok(Added::Replaced(_))
        ));
        let removed = pool.remove(&tx(1, 1, 100, 1).hash).unwrap();
        assert_eq!(removed.envelope.nonce(), 1);
        assert!(add(&mut pool, tx(3, 0, 100, 1), 0).is_ok());
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let mut pool = Mempool::new(MempoolConfig {
            max_tx_bytes: 50,
            ..Default::default()
        });
        // Oversized and from another chain: size first.
        let bad = sign(
            &secret(1),
            TxEip1559 {
                chain_id: 1,
                gas_limit: 1,
                input: Bytes::from(vec![1; 100]),
                ..transfer(0, 1, 2)
            },
        );
        refused(&mut pool, bad, rich(5), &RULES, "oversized data");
        let mut pool = self::pool();
        // Wrong chain, gas too low and tip above cap: chain first.
        let bad = sign(
            &secret(1),
            TxEip1559 {
                chain_id: 1,
                gas_limit: 1,
                ..transfer(0, 1, 2)
            },
        );
        refused(&mut pool, bad, rich(5), &RULES, "invalid chain id");
        // Gas too low, tip above cap, nonce too low: gas first.
        let bad = sign(
            &secret(1),
            TxEip1559 {
                gas_limit: 1,
                ..transfer(0, 1, 2)
            },
        );
        refused(&mut pool, bad, rich(5), &RULES, "intrinsic gas too low");
        // Nonce too low and unaffordable: nonce first.
        let poor = SenderState {
            nonce: 5,
            balance: U256::ZERO,
        };
        refused(&mut pool, tx(1, 0, 100, 1), poor, &RULES, "nonce too low");
        // Underpriced replacement and unaffordable: replacement first.
        add(&mut pool, tx(1, 0, 100, 1), 0).unwrap();
        let poor = SenderState {
            nonce: 0,
            balance: U256::ZERO,
        };
        refused(
            &mut pool,
            tx(1, 0, 101, 1),
            poor,
            &RULES,
            "replacement transaction underpriced",
        );
    }

    #[test]
    fn pending_nonce_stops_at_a_gap() {
        let mut pool = pool();
        for nonce in [0, 1, 3] {
            add(&mut pool, tx(1, nonce, 100, 1), 0).unwrap();
        }
        let sender = tx(1, 0, 1, 1).sender;
        assert_eq!(pool.pending_nonce(&sender, 0), 2);
        assert_eq!(pool.pending_nonce(&sender, 1), 2);
        assert_eq!(pool.pending_nonce(&sender, 2), 2);
        assert_eq!(pool.pending_nonce(&sender, 3), 4);
        assert_eq!(pool.pending_nonce(&sender, 9), 9);
        assert_eq!(pool.pending_nonce(&Address::ZERO, 5), 5);
        assert_eq!(
            pool.status(|_| 0),
            PoolStatus {
                pending: 2,
                queued: 1
            }
        );
        add(&mut pool, tx(1, 2, 100, 1), 0).unwrap();
        assert_eq!(pool.pending_nonce(&sender, 0), 4);
        assert_eq!(
            pool.status(|_| 0),
            PoolStatus {
                pending: 4,
                queued: 0
            }
        );
        // Nonces 0 and 1 mined, not yet pruned: they are neither pending nor selectable.
        assert_eq!(
            pool.status(|_| 2),
            PoolStatus {
                pending: 2,
                queued: 2
            }
        );
    }

    #[test]
    fn select_orders_by_effective_tip() {
        let mut pool = pool();
        let a = tx(1, 0, 1_000, 5);
        let b = tx(2, 0, 1_000, 3);
        let c = tx(3, 0, 1_000, 9);
        // Tip cap 50, but only 20 above the base fee of 80.
        let d = tx(4, 0, 100, 50);
        // A legacy gas price of 90 pays 10 above the base fee.
        let e = legacy(5, 0, 90, Some(CHAIN));
        for t in [&a, &b, &c, &d, &e] {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        assert_eq!(
            hashes(&pool.select(30_000_000, 80, |_| 0)),
            hashes(&[d.clone(), e.clone(), c.clone(), a.clone(), b.clone()])
        );
        // At base fee 0 every tip is its cap (the legacy price 90 is its tip).
        assert_eq!(
            hashes(&pool.select(30_000_000, 0, |_| 0)),
            hashes(&[e, d, c, a, b])
        );
    }

    #[test]
    fn select_keeps_each_senders_nonce_order() {
        let mut pool = pool();
        let a0 = tx(1, 0, 1_000, 1);
        let a1 = tx(1, 1, 1_000, 100);
        let b0 = tx(2, 0, 1_000, 50);
        for t in [&a1, &b0, &a0] {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        assert_eq!(
            hashes(&pool.select(30_000_000, 0, |_| 0)),
            hashes(&[b0, a0, a1])
        );
    }

    #[test]
    fn select_starts_at_the_state_nonce_and_stops_at_gaps() {
        let mut pool = pool();
        let a: Vec<_> = (0..5).map(|n| tx(1, n, 1_000, 1)).collect();
        for (i, t) in a.iter().enumerate() {
            if i != 3 {
                add(&mut pool, t.clone(), 0).unwrap();
            }
        }
        let b0 = tx(2, 0, 1_000, 1);
        add(&mut pool, b0.clone(), 0).unwrap();
        let sender_a = a[0].sender;
        let selected = pool.select(30_000_000, 0, |s| if *s == sender_a { 1 } else { 0 });
        let mut expected = vec![a[1].clone(), a[2].clone(), b0.clone()];
        if b0.sender < sender_a {
            expected.rotate_right(1);
        }
        assert_eq!(hashes(&selected), hashes(&expected));
        // A sender whose state nonce has no pooled transaction contributes nothing.
        assert_eq!(
            hashes(&pool.select(30_000_000, 0, |_| 3)),
            Vec::<B256>::new()
        );
    }

    #[test]
    fn select_respects_the_gas_limit() {
        let mut pool = pool();
        let a = tx_gas(1, 0, 10, 21_000);
        let b0 = tx_gas(2, 0, 5, 50_000);
        let b1 = tx_gas(2, 1, 5, 21_000);
        let c = tx_gas(3, 0, 1, 21_000);
        for t in [&a, &b0, &b1, &c] {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        // b0 does not fit after a; b1 would, but cannot come before b0; c still does.
        assert_eq!(
            hashes(&pool.select(65_000, 0, |_| 0)),
            hashes(&[a.clone(), c.clone()])
        );
        assert_eq!(
            hashes(&pool.select(71_000, 0, |_| 0)),
            hashes(&[a.clone(), b0.clone()])
        );
        assert_eq!(
            hashes(&pool.select(113_000, 0, |_| 0)),
            hashes(&[a, b0, b1, c])
        );
        assert!(pool.select(20_999, 0, |_| 0).is_empty());
    }

    #[test]
    fn select_skips_fee_caps_below_the_base_fee() {
        let mut pool = pool();
        let a0 = tx(1, 0, 50, 1);
        let a1 = tx(1, 1, 1_000, 1);
        let b = tx(2, 0, 60, 1);
        for t in [&a0, &a1, &b] {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        // a0 cannot pay 60, and a1 must wait for it; b pays exactly the base fee.
        assert_eq!(
            hashes(&pool.select(30_000_000, 60, |_| 0)),
            hashes(std::slice::from_ref(&b))
        );
        assert_eq!(pool.select(30_000_000, 61, |_| 0).len(), 0);
        assert_eq!(pool.select(30_000_000, 50, |_| 0).len(), 3);
    }

    #[test]
    fn select_is_deterministic() {
        // Equal tips everywhere: the order is by sender address, whatever the insertion order.
        let txs: Vec<_> = (1..=8)
            .flat_map(|k| (0..3).map(move |n| tx(k, n, 1_000, 7)))
            .collect();
        let mut forward = pool();
        for t in &txs {
            add(&mut forward, t.clone(), 0).unwrap();
        }
        let mut backward = pool();
        for t in txs.iter().rev() {
            add(&mut backward, t.clone(), 0).unwrap();
        }
        let selected = forward.select(30_000_000, 0, |_| 0);
        assert_eq!(
            hashes(&selected),
            hashes(&backward.select(30_000_000, 0, |_| 0))
        );
        let mut expected = txs.clone();
        expected.sort_by_key(|t| (t.sender, t.envelope.nonce()));
        assert_eq!(hashes(&selected), hashes(&expected));
    }

    #[test]
    fn prune_sender_drops_mined_and_stale() {
        let mut pool = pool();
        let a: Vec<_> = (0..5).map(|n| tx(1, n, 1_000, 1)).collect();
        for t in &a {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        let b = tx(2, 0, 1_000, 1);
        add(&mut pool, b.clone(), 0).unwrap();
        let sender = a[0].sender;
        pool.prune_sender(&sender, 3);
        assert_eq!(pool.len(), 3);
        assert!(a[..3].iter().all(|t| !pool.contains(&t.hash)));
        assert!(a[3..].iter().all(|t| pool.contains(&t.hash)));
        pool.check_invariants();
        // Pruning below what is left, or an unknown sender, changes nothing.
        pool.prune_sender(&sender, 1);
        pool.prune_sender(&Address::ZERO, 100);
        assert_eq!(pool.len(), 3);
        pool.prune_sender(&sender, 10);
        assert_eq!(pool.senders().copied().collect::<Vec<_>>(), vec![b.sender]);
        assert_eq!(pool.len(), 1);
        pool.check_invariants();
    }

    #[test]
    fn remove_opens_a_gap() {
        let mut pool = pool();
        let a: Vec<_> = (0..3).map(|n| tx(1, n, 1_000, 1)).collect();
        for t in &a {
            add(&mut pool, t.clone(), 0).unwrap();
        }
        let removed = pool.remove(&a[1].hash).unwrap();
        assert_eq!(removed.hash, a[1].hash);
        assert!(pool.remove(&a[1].hash).is_none());
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.pending_nonce(&a[0].sender, 0), 1);
        assert_eq!(hashes(&pool.select(30_000_000, 0, |_| 0)), hashes(&a[..1]));
        pool.remove(&a[0].hash).unwrap();
        pool.remove(&a[2].hash).unwrap();
        assert!(pool.is_empty());
        assert_eq!(pool.senders().count(), 0);
        pool.check_invariants();
    }

    // Random sequences of operations against a model of what the pool should hold.

    const KEYS: usize = 3;
    const NONCES: u64 = 6;
    const FEES: [u128; 3] = [10, 11, 20];
    const PROP_MAX_PER_SENDER: usize = 4;
    const PROP_MAX_TOTAL: usize = 8;

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            key: usize,
            nonce: u64,
            fee: usize,
        },
        /// A block raised the sender's nonce; the pool is not told.
        Mine {
            key: usize,
            count: u64,
        },
        Prune {
            key: usize,
        },
        Remove {
            pick: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..KEYS, 0..NONCES, 0..FEES.len())
                .prop_map(|(key, nonce, fee)| Op::Add { key, nonce, fee }),
            1 => (0..KEYS, 0..3u64).prop_map(|(key, count)| Op::Mine { key, count }),
            1 => (0..KEYS).prop_map(|key| Op::Prune { key }),
            1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        ]
    }

    /// Signing is the slow part: every transaction the test can use, signed once.
    fn signed(key: usize, nonce: u64, fee: usize) -> &'static RecoveredTx {
        static TXS: OnceLock<Vec<RecoveredTx>> = OnceLock::new();
        let txs = TXS.get_or_init(|| {
            let mut txs = Vec::new();
            for k in 0..KEYS {
                for n in 0..NONCES {
                    for f in FEES {
                        txs.push(tx(k as u8 + 1, n, f, f));
                    }
                }
            }
            txs
        });
        &txs[(key * NONCES as usize + nonce as usize) * FEES.len() + fee]
    }

    proptest! {
        #[test]
        fn random_operations_keep_the_pool_consistent(ops in prop::collection::vec(op(), 1..60)) {
            let mut pool = Mempool::new(MempoolConfig {
                max_per_sender: PROP_MAX_PER_SENDER,
                max_total: PROP_MAX_TOTAL,
                ..Default::default()
            });
            let senders: Vec<Address> = (0..KEYS).map(|k| signed(k, 0, 0).sender).collect();
            let mut state = [0u64; KEYS];
            // (key, nonce) -> (hash, fee) of what the pool should hold.
            let mut model: BTreeMap<(usize, u64), (B256, u128)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add { key, nonce, fee } => {
                        let tx = signed(key, nonce, fee).clone();
                        let fee = FEES[fee];
                        let held = model.range((key, 0)..(key + 1, 0)).count();
                        let expected = if model.values().any(|(h, _)| *h == tx.hash) {
                            Err("already known")
                        } else if nonce < state[key] {
                            Err("nonce too low")
                        } else if nonce >= state[key] + PROP_MAX_PER_SENDER as u64 {
                            Err("nonce too high")
                        } else if let Some((old, old_fee)) = model.get(&(key, nonce)) {
                            if fee * 100 >= old_fee * 110 { Ok(Added::Replaced(*old)) } else { Err("replacement") }
                        } else if held >= PROP_MAX_PER_SENDER {
                            Err("txpool is full for this sender")
                        } else if model.len() >= PROP_MAX_TOTAL {
                            Err("txpool is full")
                        } else {
                            Ok(Added::New)
                        };
                        let hash = tx.hash;
                        let got = add(&mut pool, tx, state[key]);
                        match (&got, expected) {
                            (Ok(got), Ok(expected)) => {
                                prop_assert_eq!(*got, expected);
                                model.insert((key, nonce), (hash, fee));
                            }
                            (Err(err), Err(prefix)) => {
                                prop_assert!(err.to_string().starts_with(prefix), "{} / {}", err, prefix);
                            }
                            (got, expected) => prop_assert!(false, "got {:?}, expected {:?}", got, expected),
                        }
                    }
                    Op::Mine { key, count } => state[key] += count,
                    Op::Prune { key } => {
                        pool.prune_sender(&senders[key], state[key]);
                        model.retain(|(k, n), _| *k != key || *n >= state[key]);
                    }
                    Op::Remove { pick } => {
                        // A pooled transaction, or a hash the pool never saw.
                        let picked = (!model.is_empty()).then(|| {
                            let (slot, (hash, _)) = model.iter().nth(pick % model.len()).unwrap();
                            (*slot, *hash)
                        });
                        let hash = picked.map_or(B256::repeat_byte(0xab), |(_, hash)| hash);
                        if let Some((slot, _)) = picked {
                            model.remove(&slot);
                        }
                        let removed = pool.remove(&hash).map(|tx| tx.hash);
                        prop_assert_eq!(removed, picked.map(|(_, hash)| hash));
                    }
                }
                pool.check_invariants();
                prop_assert_eq!(pool.len(), model.len());
                prop_assert_eq!(pool.is_empty(), model.is_empty());
                for ((key, nonce), (hash, _)) in &model {
                    let held = pool.get(hash);
                    prop_assert!(held.is_some());
                    let held = held.unwrap();
                    prop_assert_eq!((held.sender, held.envelope.nonce()), (senders[*key], *nonce));
                }
                // Selection: per sender, contiguous nonces from the state nonce, within the gas.
                let selected = pool.select(5 * 21_000, 0, |s| {
                    state[senders.iter().position(|x| x == s).unwrap()]
                });
                prop_assert!(selected.len() <= 5);
                let mut next = state;
                for tx in &selected {
                    let key = senders.iter().position(|x| *x == tx.sender).unwrap();
                    prop_assert_eq!(tx.envelope.nonce(), next[key]);
                    next[key] += 1;
                }
                let status = pool.status(|s| state[senders.iter().position(|x| x == s).unwrap()]);
                prop_assert_eq!(status.pending + status.queued, model.len());
                if selected.len() < 5 {
                    prop_assert_eq!(selected.len(), status.pending);
                }
            }
        }
    }
}
