//! One shard's chain as a node runs it: the store, the mempool, and the two things that change
//! them, admitting a transaction and applying a decided block.
//!
//! Synchronous and free of timers: the node decides when to propose and commit (a dev timer
//! today, the consensus engine later) and calls in. A read-write lock orders block
//! application against admission and against readers that need one consistent state (calls,
//! gas estimates): the store's reads are not snapshots, so a reader overlapping a commit could
//! otherwise mix the states before and after a block.

use crate::{
    apply::{apply_block, commit_genesis, AppliedBlock, ApplyError, BlockTemplate},
    commitment::{self, MemNodeStore},
    fees::next_base_fee,
    mempool::{Added, Mempool, MempoolConfig, PoolError, PoolRules, SenderState},
    payload::{Checkpoint, Payload, MAX_CHECKPOINT_LAG},
    store::{Store, StoreError},
};
use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Mutex, MutexGuard, PoisonError, RwLock},
};
use tessera_config::Genesis;
use tessera_execution::{
    ChainRules, ParallelConfig, RecoveredTx, Rejection, SenderCache, TxError, TxOutcome,
};
use tessera_primitives::{Header, ShardId, EMPTY_ROOT_HASH};

/// Failures of the chain (not refusals of transactions).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the database holds a different chain: its genesis block is {stored}, this genesis gives {expected}")]
    GenesisMismatch { stored: B256, expected: B256 },
    #[error("the database has no head block")]
    NoHead,
    /// A finalized block attests a state root this node did not compute: its state diverged
    /// from a quorum's. Never papered over: the node must stop.
    #[error("state divergence: block {block} attests state root {attested} after block {number}, but this node computed {ours}")]
    Divergence {
        block: u64,
        number: u64,
        attested: B256,
        ours: B256,
    },
}

/// A validator's judgement of a proposed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Refuse to vote, for this reason.
    Invalid(String),
    /// The checkpoint names block `number`, which this node has not executed yet: ask again
    /// once it has.
    NotYet {
        number: u64,
    },
}

/// Why a submitted transaction was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The bytes are not a signed transaction.
    #[error(transparent)]
    Decode(#[from] TxError),
    /// The mempool refused it.
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Parameters of one shard's chain, from genesis.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub shard: ShardId,
    pub rules: ChainRules,
    pub gas_limit: u64,
    pub min_base_fee: u64,
    pub fee_recipient: Address,
    /// How blocks are executed: Block-STM threads, and the size below which a block runs
    /// sequentially.
    pub execution: ParallelConfig,
}

impl ChainSpec {
    pub fn from_genesis(genesis: &Genesis, shard: ShardId) -> Self {
        Self {
            shard,
            rules: genesis.rules(),
            gas_limit: genesis.gas_limit,
            min_base_fee: genesis.min_base_fee,
            fee_recipient: genesis.fee_recipient,
            execution: ParallelConfig::available(),
        }
    }
}

/// A shard's chain: store, mempool, and the lock that orders them.
#[derive(Debug)]
pub struct Chain {
    spec: ChainSpec,
    store: Store,
    pool: Mutex<Mempool>,
    state_lock: RwLock<()>,
    /// Senders recovered at admission, so that executing, importing or serving a transaction
    /// never recovers its signature again.
    senders: SenderCache,
}

/// The genesis header of `shard` under `genesis`, computed without a database.
pub fn genesis_header(genesis: &Genesis, shard: ShardId) -> Header {
    let alloc = genesis.shard_alloc(shard);
    let update = commitment::apply_diff(&MemNodeStore::new(), EMPTY_ROOT_HASH, &alloc)
        .expect("an empty in-memory trie has every node");
    Header {
        shard,
        number: 0,
        parent_hash: B256::ZERO,
        timestamp: genesis.timestamp,
        beneficiary: Address::ZERO,
        gas_limit: genesis.gas_limit,
        gas_used: 0,
        base_fee: genesis.base_fee,
        state_root: update.root,
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Default::default(),
    }
}

impl Chain {
    /// Opens the shard's database at `path`: a new one starts from `genesis`; an existing one
    /// must hold the same genesis block and continues from its head.
    pub fn open(
        path: impl AsRef<Path>,
        genesis: &Genesis,
        shard: ShardId,
        pool: MempoolConfig,
    ) -> Result<Self, ChainError> {
        let store = Store::open(path)?;
        let expected = genesis_header(genesis, shard);
        match store.header(0)? {
            Some(stored) if stored.hash() != expected.hash() => {
                return Err(ChainError::GenesisMismatch {
                    stored: stored.hash(),
                    expected: expected.hash(),
                })
            }
            Some(_) => {}
            None => {
                let header = commit_genesis(
                    &store,
                    shard,
                    genesis.gas_limit,
                    genesis.base_fee,
                    genesis.timestamp,
                    &genesis.shard_alloc(shard),
                )
                .map_err(ChainError::Apply)?;
                debug_assert_eq!(header, expected);
            }
        }
        Ok(Self {
            spec: ChainSpec::from_genesis(genesis, shard),
            store,
            pool: Mutex::new(Mempool::new(pool)),
            state_lock: RwLock::new(()),
            senders: SenderCache::default(),
        })
    }

    /// Executes blocks with `config` instead of one Block-STM worker per core.
    pub fn with_execution(mut self, config: ParallelConfig) -> Self {
        self.spec.execution = config;
        self
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// The sender cache shared by the mempool, block execution and RPC lookups.
    pub fn senders(&self) -> &SenderCache {
        &self.senders
    }

    /// The store, for reads of immutable per-block data (headers, bodies, receipts, logs).
    /// State reads that must be consistent go through [`Chain::read_state`].
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The head block's header.
    pub fn head(&self) -> Result<Header, ChainError> {
        let (number, _) = self.store.head()?.ok_or(ChainError::NoHead)?;
        self.store.header(number)?.ok_or(ChainError::NoHead)
    }

    /// Runs `f` on the store while no block is being applied.
    pub fn read_state<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let _guard = self
            .state_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&self.store)
    }

    fn pool(&self) -> MutexGuard<'_, Mempool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decodes, recovers and admits raw EIP-2718 bytes; returns the transaction hash.
    pub fn submit_raw(&self, raw: &[u8]) -> Result<B256, SubmitError> {
        let tx = self.senders.decode(raw)?;
        let hash = tx.hash;
        self.submit(tx, raw.len())?;
        Ok(hash)
    }

    /// Admits a recovered transaction whose encoding is `encoded_len` bytes long.
    pub fn submit(&self, tx: RecoveredTx, encoded_len: usize) -> Result<Added, SubmitError> {
        let _guard = self
            .state_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let account = self.store.account(&tx.sender).map_err(ChainError::from)?;
        let sender = SenderState {
            nonce: account.map_or(0, |a| a.nonce),
            balance: account.map_or(Default::default(), |a| a.balance),
        };
        let rules = PoolRules {
            chain_id: self.spec.rules.chain_id,
            fork: self.spec.rules.fork,
            block_gas_limit: self.spec.gas_limit,
        };
        Ok(self.pool().add(tx, encoded_len, sender, &rules)?)
    }

    /// A transaction waiting in the mempool.
    pub fn pending_transaction(&self, hash: &B256) -> Option<RecoveredTx> {
        self.pool().get(hash).cloned()
    }

    /// Number of transactions in the mempool.
    pub fn pool_len(&self) -> usize {
        self.pool().len()
    }

    /// The next nonce of `address`, counting its transactions pending in the mempool.
    ///
    /// Under the state lock, as admission reads it: a block applied between reading the nonce
    /// and reading the pool would take the transactions it included out of the pool after the
    /// nonce that does not count them was read, and a wallet would be told to reuse a nonce.
    pub fn pending_nonce(&self, address: &Address) -> Result<u64, ChainError> {
        let _guard = self
            .state_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let nonce = self.store.account(address)?.map_or(0, |a| a.nonce);
        Ok(self.pool().pending_nonce(address, nonce))
    }

    /// What the block after the head would be: its base fee, and a timestamp no earlier than
    /// the parent's (block timestamps never go backwards, and several blocks may share a
    /// second).
    pub fn next_template(&self, timestamp: u64) -> Result<BlockTemplate, ChainError> {
        let parent = self.head()?;
        Ok(BlockTemplate {
            shard: self.spec.shard,
            timestamp: timestamp.max(parent.timestamp),
            beneficiary: self.spec.fee_recipient,
            gas_limit: self.spec.gas_limit,
            base_fee: next_base_fee(&parent, self.spec.min_base_fee),
        })
    }

    /// A proposal for the next block: its template and the mempool's ready transactions.
    pub fn propose(&self, timestamp: u64) -> Result<(BlockTemplate, Vec<RecoveredTx>), ChainError> {
        let template = self.next_template(timestamp)?;
        let store = &self.store;
        let txs = self
            .pool()
            .select(template.gas_limit, template.base_fee, |sender| {
                store.account(sender).ok().flatten().map_or(0, |a| a.nonce)
            });
        Ok((template, txs))
    }

    /// Executes and commits a decided block on top of the head, then drops from the mempool
    /// what it mined and what the executor refused as invalid.
    pub fn apply(
        &self,
        template: &BlockTemplate,
        txs: &[RecoveredTx],
    ) -> Result<AppliedBlock, ChainError> {
        self.apply_with(template, txs, None)
    }

    /// [`Chain::apply`], storing the consensus layer's `consensus` record with the block.
    pub fn apply_with(
        &self,
        template: &BlockTemplate,
        txs: &[RecoveredTx],
        consensus: Option<&[u8]>,
    ) -> Result<AppliedBlock, ChainError> {
        let _guard = self
            .state_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let applied = apply_block(
            &self.store,
            &self.spec.rules,
            template,
            txs,
            self.spec.execution,
            consensus,
        )?;
        let mut senders = BTreeSet::new();
        let mut pool = self.pool();
        for (tx, outcome) in txs.iter().zip(&applied.output.outcomes) {
            match outcome {
                TxOutcome::Included(_) => {
                    senders.insert(tx.sender);
                }
                // No longer valid (the node logs why, from the block output).
                TxOutcome::Rejected(Rejection::Invalid(_)) => {
                    pool.remove(&tx.hash);
                    senders.insert(tx.sender);
                }
                // It may fit a later block.
                TxOutcome::Rejected(Rejection::BlockGasExceeded { .. }) => {}
            }
        }
        for sender in senders {
            let nonce = self.store.account(&sender)?.map_or(0, |a| a.nonce);
            pool.prune_sender(&sender, nonce);
        }
        Ok(applied)
    }

    /// A payload for the block at `height`, whose ancestors above the head are `pending`
    /// (decided or proposed, not yet executed, in height order): the mempool's ready
    /// transactions minus those `pending` already carries, and the head's state root as the
    /// checkpoint.
    pub fn build_payload(
        &self,
        timestamp: u64,
        height: u64,
        pending: &[&Payload],
    ) -> Result<Payload, ChainError> {
        let head = self.head()?;
        let template = self.next_template(timestamp)?;
        // Transactions already on the way in an ancestor: skip them, and count their nonces.
        let mut taken = BTreeSet::new();
        let mut next_nonce: BTreeMap<Address, u64> = BTreeMap::new();
        for payload in pending {
            for raw in &payload.transactions {
                if let Ok(tx) = self.senders.decode(raw) {
                    taken.insert(tx.hash);
                    let nonce = tx.envelope.nonce().saturating_add(1);
                    let entry = next_nonce.entry(tx.sender).or_default();
                    *entry = (*entry).max(nonce);
                }
            }
        }
        let store = &self.store;
        let txs = self
            .pool()
            .select(template.gas_limit, template.base_fee, |sender| {
                let stored = store.account(sender).ok().flatten().map_or(0, |a| a.nonce);
                stored.max(next_nonce.get(sender).copied().unwrap_or(0))
            });
        debug_assert!(head.number < height);
        Ok(Payload {
            timestamp: template.timestamp,
            checkpoint: Checkpoint {
                number: head.number,
                state_root: head.state_root,
            },
            transactions: txs
                .into_iter()
                .filter(|tx| !taken.contains(&tx.hash))
                .map(|tx| tx.encoded())
                .collect(),
        })
    }

    /// Whether to vote for `payload` as the block at `height`: its transactions decode and
    /// carry valid signatures, it fits the block, its timestamp is at most `max_timestamp`, and
    /// its checkpoint matches the root this node computed.
    pub fn verify_payload(
        &self,
        payload: &Payload,
        height: u64,
        max_timestamp: u64,
    ) -> Result<Verdict, ChainError> {
        let checkpoint = payload.checkpoint;
        if checkpoint.number >= height || height - checkpoint.number > MAX_CHECKPOINT_LAG {
            return Ok(Verdict::Invalid(format!(
                "checkpoint of block {} is for block {}, outside the {MAX_CHECKPOINT_LAG} blocks before it",
                height, checkpoint.number
            )));
        }
        if payload.timestamp > max_timestamp {
            return Ok(Verdict::Invalid(format!(
                "timestamp {} is ahead of the local clock's {max_timestamp}",
                payload.timestamp
            )));
        }
        let max_txs = self.spec.gas_limit / 21_000;
        if payload.transactions.len() as u64 > max_txs {
            return Ok(Verdict::Invalid(format!(
                "{} transactions cannot fit a {} gas block",
                payload.transactions.len(),
                self.spec.gas_limit
            )));
        }
        for (i, raw) in payload.transactions.iter().enumerate() {
            if let Err(e) = self.senders.decode(raw) {
                return Ok(Verdict::Invalid(format!("transaction {i}: {e}")));
            }
        }
        let head = self.head()?;
        if checkpoint.number > head.number {
            return Ok(Verdict::NotYet {
                number: checkpoint.number,
            });
        }
        let ours = self
            .store
            .header(checkpoint.number)?
            .ok_or(ChainError::NoHead)?;
        if ours.state_root != checkpoint.state_root {
            return Ok(Verdict::Invalid(format!(
                "checkpoint says the state root after block {} is {}, this node computed {}",
                checkpoint.number, checkpoint.state_root, ours.state_root
            )));
        }
        Ok(Verdict::Valid)
    }

    /// Executes and commits a finalized payload as the block after the head, storing the
    /// consensus layer's `record` with it. Fails with [`ChainError::Divergence`] when the
    /// payload's checkpoint differs from this node's root.
    pub fn apply_payload(
        &self,
        payload: &Payload,
        record: &[u8],
    ) -> Result<AppliedBlock, ChainError> {
        let head = self.head()?;
        let checkpoint = payload.checkpoint;
        let ours = self
            .store
            .header(checkpoint.number)?
            .filter(|_| checkpoint.number <= head.number)
            .map(|h| h.state_root);
        if ours != Some(checkpoint.state_root) {
            return Err(ChainError::Divergence {
                block: head.number + 1,
                number: checkpoint.number,
                attested: checkpoint.state_root,
                ours: ours.unwrap_or_default(),
            });
        }
        let template = self.next_template(payload.timestamp)?;
        // A quorum checked that every transaction decodes; should one not, leaving it out is
        // the answer every node reaches.
        let txs: Vec<RecoveredTx> = payload
            .transactions
            .iter()
            .filter_map(|raw| self.senders.decode(raw).ok())
            .collect();
        self.apply_with(&template, &txs, Some(record))
    }
}
