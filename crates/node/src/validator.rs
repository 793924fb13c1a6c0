//! The consensus driver of one shard: the task that owns the shard's Simplex engine
//! (`tessera-consensus`) and turns its outputs into IO, and IO into its inputs.
//!
//! - Votes and proposals go to the write-ahead log (synced) before they are broadcast.
//! - Proposals are built from the mempool, paced to the configured block interval.
//! - Proposals are checked against the chain (`Chain::verify_payload`); one whose checkpoint
//!   names a block not executed yet waits for it.
//! - Finalized blocks are executed in order on a dedicated thread; each commit also stores the
//!   consensus record the engine resumes from after a restart.
//! - Blocks a lagging node lacks are fetched from peers by request-response.
//!
//! With no network (the dev chain's single validator), the same engine runs alone: its own
//! vote is a quorum.

use alloy_primitives::B256;
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tessera_consensus::{
    Block, Certificate, Config as ConsensusConfig, ConsensusError, Digest, Engine, Input, Message,
    Output, Recovery, ValidatorIndex, ValidatorSet, WalEntry,
};
use tessera_execution::{Rejection, TxOutcome};
use tessera_network::{Event, Network, PeerId, Topic};
use tessera_primitives::{codec, Header, Receipt};
use tessera_shard::{
    apply::AppliedBlock,
    chain::{Chain, ChainError, Verdict},
    payload::Payload,
};
use tokio::sync::{broadcast, mpsc, watch};

/// A committed block, as subscribers see it.
#[derive(Debug, Clone)]
pub struct BlockEvent {
    pub header: Header,
    pub hash: B256,
    pub receipts: Vec<Receipt>,
    /// Hashes of the included transactions, in block order (one per receipt).
    pub tx_hashes: Vec<B256>,
}

impl BlockEvent {
    fn new(applied: AppliedBlock, payload: &Payload, chain: &Chain) -> Self {
        let mut receipts = Vec::new();
        let mut tx_hashes = Vec::new();
        let mut outcomes = applied.output.outcomes.into_iter();
        for raw in &payload.transactions {
            let Ok(tx) = chain.senders().decode(raw) else {
                continue;
            };
            match outcomes.next() {
                Some(TxOutcome::Included(receipt)) => {
                    receipts.push(receipt);
                    tx_hashes.push(tx.hash);
                }
                Some(TxOutcome::Rejected(Rejection::Invalid(reason))) => {
                    tracing::debug!(tx = %tx.hash, %reason, "finalized block carried a transaction the executor refused");
                }
                Some(TxOutcome::Rejected(Rejection::BlockGasExceeded { .. })) | None => {}
            }
        }
        let hash = applied.header.hash();
        Self {
            header: applied.header,
            hash,
            receipts,
            tx_hashes,
        }
    }
}

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] tessera_shard::store::StoreError),
    #[error("consensus: {0}")]
    Consensus(#[from] ConsensusError),
    #[error("consensus record of the head block does not decode: {0}")]
    Record(String),
    #[error("write-ahead log entry {sequence} does not decode: {reason}")]
    Wal { sequence: u64, reason: String },
    #[error("block execution thread stopped")]
    Executor,
}

/// What the store keeps with each finalized block so that consensus can resume from it.
type Record = (Block, Option<Certificate>);

/// Requests of the block-sync protocol (answers are `Option<Block>`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum SyncRequest {
    Block(Digest),
}

/// Largest sync request accepted.
const MAX_SYNC_REQUEST: usize = 1024;
/// Largest consensus message accepted (a proposal carries a whole block).
pub const MAX_CONSENSUS_MESSAGE: usize = 16 << 20;
/// Finalized blocks the engine keeps for peers that fetch them.
const RETAIN_HEIGHTS: u64 = 1024;
/// How far ahead of the local clock a proposal's timestamp may be.
const MAX_CLOCK_DRIFT_SECS: u64 = 15;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The consensus genesis of `chain`'s shard: a block naming the shard's genesis header.
pub fn genesis_block(chain: &Chain) -> Result<Block, ChainError> {
    let header = chain.store().header(0)?.ok_or(ChainError::NoHead)?;
    Ok(Block::genesis(header.hash().to_vec()))
}

/// Signatures of one network and shard are useless on another: the namespace names the
/// genesis and the shard.
pub fn namespace(genesis_hash: B256, shard: u16) -> Vec<u8> {
    let mut ns = b"tessera/consensus/".to_vec();
    ns.extend_from_slice(genesis_hash.as_slice());
    ns.extend_from_slice(&shard.to_be_bytes());
    ns
}

/// Everything the driver needs besides the chain.
#[derive(Debug)]
pub struct DriverConfig {
    pub consensus: ConsensusConfig,
    pub key: ed25519_dalek::SigningKey,
    pub block_time: Duration,
    /// The network and the peer id of every validator (by index); `None` for a lone validator.
    pub network: Option<(Network, Vec<PeerId>, mpsc::Receiver<Event>)>,
    pub shard: tessera_primitives::ShardId,
}

/// Results of work done off the driver's task.
#[derive(Debug)]
enum Done {
    Applied(Box<Result<BlockEvent, ChainError>>, u64),
    Fetched(Block),
}

/// A proposal the engine asked for, waiting for the block interval.
#[derive(Debug)]
struct PendingProposal {
    view: u64,
    height: u64,
    parent: Digest,
    ancestry: Vec<Block>,
    at: Instant,
}

#[derive(Debug)]
struct Driver {
    engine: Engine,
    chain: Arc<Chain>,
    network: Option<Network>,
    peers: Vec<PeerId>,
    topic: Topic,
    block_time: Duration,
    /// The engine's single timer: when it fires and for which view.
    timer: Option<(Instant, u64)>,
    wal_sequence: u64,
    /// (sequence, view) of every WAL entry still on disk, oldest first.
    wal_views: VecDeque<(u64, u64)>,
    proposal: Option<PendingProposal>,
    /// Proposals whose checkpoint is not executed yet.
    waiting: Vec<(Block, Payload)>,
    /// Finalized, handed to the execution thread, not committed yet: (height, view, payload)
    /// in height order.
    unapplied: VecDeque<(u64, u64, Payload)>,
    last_block_at: Instant,
    /// Hands finalized blocks to the execution thread; taken at shutdown.
    execute: Option<ExecuteSender>,
    done_tx: mpsc::UnboundedSender<Done>,
    events: broadcast::Sender<Arc<BlockEvent>>,
}

/// Runs the shard's consensus until `stop` changes or a failure stops it (a state divergence
/// among them).
pub async fn run(
    chain: Arc<Chain>,
    config: DriverConfig,
    events: broadcast::Sender<Arc<BlockEvent>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let store = chain.store();
    let finalized = match store.consensus_record()? {
        Some(bytes) => {
            let (block, _): Record = codec::decode_bounded(&bytes, MAX_CONSENSUS_MESSAGE)
                .map_err(|e| DriverError::Record(e.to_string()))?;
            block
        }
        None => genesis_block(&chain)?,
    };
    let mut wal = Vec::new();
    let mut wal_views = VecDeque::new();
    let mut wal_sequence = 0;
    for (sequence, bytes) in store.wal_entries()? {
        let entry: WalEntry =
            codec::decode_bounded(&bytes, MAX_CONSENSUS_MESSAGE).map_err(|e| DriverError::Wal {
                sequence,
                reason: e.to_string(),
            })?;
        wal_views.push_back((sequence, entry.view()));
        wal.push(entry);
        wal_sequence = sequence + 1;
    }
    tracing::info!(
        height = finalized.height,
        view = finalized.view,
        wal_entries = wal.len(),
        "consensus resuming"
    );
    let (engine, initial) = Engine::new(config.consensus, config.key, Recovery { finalized, wal })?;

    let (network, peers, mut inbound) = match config.network {
        Some((network, peers, inbound)) => (Some(network), peers, Some(inbound)),
        None => (None, Vec::new(), None),
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (execute, executor) = spawn_executor(chain.clone(), done_tx.clone());
    let mut driver = Driver {
        engine,
        chain,
        network,
        peers,
        topic: Topic::Consensus(config.shard),
        block_time: config.block_time,
        timer: None,
        wal_sequence,
        wal_views,
        proposal: None,
        waiting: Vec::new(),
        unapplied: VecDeque::new(),
        last_block_at: Instant::now(),
        execute: Some(execute),
        done_tx,
        events,
    };
    driver.outputs(initial).await?;

    loop {
        let next_timer = driver.timer.map(|(at, _)| at);
        let next_proposal = driver.proposal.as_ref().map(|p| p.at);
        let wake = [next_timer, next_proposal].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let network_event = async {
            match inbound.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {
                // Let the execution thread commit what is already final before the store
                // closes (a restart would otherwise fetch it again, or, alone, re-finalize it
                // from the write-ahead log).
                driver.execute = None;
                let _ = tokio::task::spawn_blocking(move || executor.join()).await;
                return Ok(());
            }
            () = sleep => driver.wake().await?,
            event = network_event => match event {
                Some(event) => driver.network_event(event).await?,
                // The network stopped: nothing more can arrive, keep serving local work.
                None => inbound = None,
            },
            Some(done) = done_rx.recv() => driver.done(done).await?,
        }
    }
}

/// Executes finalized blocks in order on their own thread, so that a long block does not hold
/// up voting.
type ExecuteSender = std::sync::mpsc::Sender<(Payload, Vec<u8>, u64)>;

fn spawn_executor(
    chain: Arc<Chain>,
    done: mpsc::UnboundedSender<Done>,
) -> (ExecuteSender, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<(Payload, Vec<u8>, u64)>();
    let handle = std::thread::Builder::new()
        .name("block-executor".into())
        .spawn(move || {
            for (payload, record, height) in rx {
                let result = chain
                    .apply_payload(&payload, &record)
                    .map(|applied| BlockEvent::new(applied, &payload, &chain));
                let failed = result.is_err();
                // Stop at the first failure: later blocks cannot apply on top of it. The
                // driver may be gone at shutdown; committing is what matters then.
                let _ = done.send(Done::Applied(Box::new(result), height));
                if failed {
                    return;
                }
            }
        })
        .expect("the OS can start a thread");
    (tx, handle)
}

impl Driver {
    async fn handle(&mut self, input: Input) -> Result<(), DriverError> {
        let outputs = self.engine.handle(input);
        self.outputs(outputs).await
    }

    async fn outputs(&mut self, outputs: Vec<Output>) -> Result<(), DriverError> {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Persist(entry) => self.persist(&entry)?,
                Output::Broadcast(message) => self.broadcast(message).await,
                Output::SetTimer { view, after_ms } => {
                    // Replaces any pending timer, as the engine's contract says.
                    self.timer = Some((Instant::now() + Duration::from_millis(after_ms), view));
                }
                Output::Propose {
                    view,
                    height,
                    parent,
                    ancestry,
                } => {
                    self.proposal = Some(PendingProposal {
                        view,
                        height,
                        parent,
                        ancestry,
                        at: self.last_block_at + self.block_time,
                    });
                }
                Output::Verify { block, ancestry: _ } => {
                    self.last_block_at = Instant::now();
                    let more = self.verify(block)?;
                    queue.extend(more);
                }
                Output::Fetch { digest, peers } => self.fetch(digest, peers),
                Output::Finalized { block, certificate } => self.finalized(block, certificate)?,
                Output::Evidence(evidence) => {
                    tracing::warn!(
                        ?evidence,
                        "equivocation: a validator signed two conflicting messages"
                    );
                }
            }
        }
        Ok(())
    }

    fn persist(&mut self, entry: &WalEntry) -> Result<(), DriverError> {
        let sequence = self.wal_sequence;
        let bytes = codec::encode(entry);
        let store = self.chain.store();
        // An fsync: must complete before the vote can leave.
        tokio::task::block_in_place(|| store.wal_append(sequence, &bytes))?;
        self.wal_views.push_back((sequence, entry.view()));
        self.wal_sequence += 1;
        Ok(())
    }

    async fn broadcast(&self, message: Message) {
        let Some(network) = &self.network else {
            return;
        };
        if let Err(e) = network.publish(self.topic, message.encode()).await {
            tracing::debug!("consensus broadcast not sent: {e}");
        }
    }

    /// Checks a proposal; returns the engine's outputs for the answer, or nothing when the
    /// answer must wait for execution to reach the checkpoint.
    fn verify(&mut self, block: Block) -> Result<Vec<Output>, DriverError> {
        let digest = block.digest();
        let payload = match Payload::decode(&block.payload) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(view = block.view, %digest, "refusing a proposal: payload does not decode: {e}");
                return Ok(self.engine.handle(Input::Verified {
                    digest,
                    valid: false,
                }));
            }
        };
        let chain = &self.chain;
        let verdict = tokio::task::block_in_place(|| {
            chain.verify_payload(&payload, block.height, unix_now() + MAX_CLOCK_DRIFT_SECS)
        })?;
        match verdict {
            Verdict::Valid => Ok(self.engine.handle(Input::Verified {
                digest,
                valid: true,
            })),
            Verdict::Invalid(reason) => {
                tracing::warn!(view = block.view, height = block.height, %digest, "refusing a proposal: {reason}");
                Ok(self.engine.handle(Input::Verified {
                    digest,
                    valid: false,
                }))
            }
            Verdict::NotYet { number } => {
                tracing::debug!(
                    view = block.view,
                    checkpoint = number,
                    "proposal waits for execution"
                );
                self.waiting.push((block, payload));
                Ok(Vec::new())
            }
        }
    }

    fn fetch(&self, digest: Digest, candidates: Vec<ValidatorIndex>) {
        let Some(network) = self.network.clone() else {
            return;
        };
        let peers: Vec<PeerId> = candidates
            .iter()
            .filter_map(|i| self.peers.get(*i as usize).copied())
            .collect();
        let done = self.done_tx.clone();
        let request = codec::encode(&SyncRequest::Block(digest));
        tokio::spawn(async move {
            for peer in peers {
                match network.request(peer, request.clone()).await {
                    Ok(bytes) => {
                        match codec::decode_bounded::<Option<Block>>(&bytes, MAX_CONSENSUS_MESSAGE)
                        {
                            Ok(Some(block)) if block.digest() == digest => {
                                let _ = done.send(Done::Fetched(block));
                                return;
                            }
                            Ok(None) => {}
                            Ok(Some(_)) | Err(_) => {
                                network
                                    .penalize(peer, "answered a block request with a wrong block");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(%peer, "block request failed: {e}"),
                }
            }
        });
    }

    fn finalized(
        &mut self,
        block: Block,
        certificate: Option<Certificate>,
    ) -> Result<(), DriverError> {
        let payload = match Payload::decode(&block.payload) {
            Ok(payload) => payload,
            Err(e) => {
                // A quorum voted for it, so honest validators decoded it.
                return Err(DriverError::Record(format!(
                    "finalized block {} has an undecodable payload: {e}",
                    block.height
                )));
            }
        };
        let height = block.height;
        let view = block.view;
        let record = codec::encode(&(block, certificate));
        self.unapplied.push_back((height, view, payload.clone()));
        self.execute
            .as_ref()
            .ok_or(DriverError::Executor)?
            .send((payload, record, height))
            .map_err(|_| DriverError::Executor)?;
        Ok(())
    }

    /// Drops write-ahead-log entries of views below `view`, the view of a block now committed
    /// with its consensus record: the engine resumes above it and never signs for those views
    /// again. (Entries of views above it stay: until the blocks finalized there are committed,
    /// a restart needs them, a lone validator above all, whose own proposals and votes are the
    /// only copy.)
    fn truncate_wal(&mut self, view: u64) -> Result<(), DriverError> {
        let mut keep_from = None;
        while let Some(&(sequence, entry_view)) = self.wal_views.front() {
            if entry_view >= view {
                break;
            }
            self.wal_views.pop_front();
            keep_from = Some(sequence + 1);
        }
        if let Some(sequence) = keep_from {
            let store = self.chain.store();
            tokio::task::block_in_place(|| store.wal_truncate(sequence))?;
        }
        Ok(())
    }

    async fn done(&mut self, done: Done) -> Result<(), DriverError> {
        match done {
            Done::Fetched(block) => self.handle(Input::Fetched { block }).await,
            Done::Applied(result, height) => {
                let event = (*result)?;
                let mut committed_view = None;
                while let Some(&(h, view, _)) = self.unapplied.front() {
                    if h > height {
                        break;
                    }
                    committed_view = Some(view);
                    self.unapplied.pop_front();
                }
                if let Some(view) = committed_view {
                    self.truncate_wal(view)?;
                }
                if event.tx_hashes.is_empty() {
                    tracing::debug!(number = event.header.number, hash = %event.hash, "empty block committed");
                } else {
                    tracing::info!(
                        number = event.header.number,
                        txs = event.tx_hashes.len(),
                        gas = event.header.gas_used,
                        hash = %event.hash,
                        "block committed"
                    );
                }
                let _ = self.events.send(Arc::new(event));
                // Proposals that waited for this block's state root.
                let waiting = std::mem::take(&mut self.waiting);
                for (block, _) in waiting {
                    let outputs = self.verify(block)?;
                    self.outputs(outputs).await?;
                }
                Ok(())
            }
        }
    }

    async fn wake(&mut self) -> Result<(), DriverError> {
        let now = Instant::now();
        if let Some((_, view)) = self.timer.filter(|(at, _)| *at <= now) {
            self.timer = None;
            self.handle(Input::Timeout { view }).await?;
        }
        if self.proposal.as_ref().is_some_and(|p| p.at <= now) {
            let proposal = self.proposal.take().expect("checked above");
            self.propose(proposal).await?;
        }
        Ok(())
    }

    async fn propose(&mut self, proposal: PendingProposal) -> Result<(), DriverError> {
        if proposal.view != self.engine.view() {
            return Ok(());
        }
        let mut pending: Vec<Payload> = self.unapplied.iter().map(|(_, _, p)| p.clone()).collect();
        for block in &proposal.ancestry {
            if let Ok(payload) = Payload::decode(&block.payload) {
                pending.push(payload);
            }
        }
        let refs: Vec<&Payload> = pending.iter().collect();
        let chain = &self.chain;
        let payload = tokio::task::block_in_place(|| {
            chain.build_payload(unix_now(), proposal.height, &refs)
        })?;
        self.last_block_at = Instant::now();
        tracing::debug!(
            view = proposal.view,
            height = proposal.height,
            txs = payload.transactions.len(),
            "proposing"
        );
        self.handle(Input::Proposal {
            view: proposal.view,
            parent: proposal.parent,
            payload: payload.encode(),
        })
        .await
    }

    async fn network_event(&mut self, event: Event) -> Result<(), DriverError> {
        match event {
            Event::Gossip { topic, from, data } => match topic {
                Topic::Consensus(_) => match Message::decode(&data, MAX_CONSENSUS_MESSAGE) {
                    Ok(message) => self.handle(Input::Message(message)).await?,
                    Err(e) => {
                        if let Some(network) = &self.network {
                            network.penalize(from, &format!("undecodable consensus message: {e}"));
                        }
                    }
                },
                Topic::Tx(_) => {
                    if let Err(e) = self.chain.submit_raw(&data) {
                        tracing::trace!(%from, "gossiped transaction not admitted: {e}");
                    }
                }
                Topic::XShard(_) => {}
            },
            Event::Request { from, data, reply } => {
                let answer = match codec::decode_bounded::<SyncRequest>(&data, MAX_SYNC_REQUEST) {
                    Ok(SyncRequest::Block(digest)) => self.engine.block(&digest).cloned(),
                    Err(e) => {
                        if let Some(network) = &self.network {
                            network.penalize(from, &format!("undecodable sync request: {e}"));
                        }
                        None
                    }
                };
                reply.send(codec::encode(&answer));
            }
            Event::PeerConnected(peer) => tracing::debug!(%peer, "peer connected"),
            Event::PeerDisconnected(peer) => tracing::debug!(%peer, "peer disconnected"),
        }
        Ok(())
    }
}

/// The consensus configuration of a shard from its genesis validator keys.
pub fn consensus_config(
    genesis: &tessera_config::Genesis,
    shard: tessera_primitives::ShardId,
    view_timeout: Duration,
) -> Result<ConsensusConfig, ConsensusError> {
    let keys = genesis
        .shard_validators(shard)
        .iter()
        .map(|k| {
            ed25519_dalek::VerifyingKey::from_bytes(&k.0).map_err(|_| {
                ConsensusError::InvalidConfig(
                    "a validator key in the genesis is not an ed25519 public key",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let base = view_timeout.as_millis() as u64;
    Ok(ConsensusConfig {
        namespace: namespace(genesis.hash(), shard.0),
        validators: ValidatorSet::new(keys)?,
        timeouts: tessera_consensus::Timeouts {
            base_ms: base,
            growth_percent: 150,
            max_ms: base.saturating_mul(16),
            retry_ms: base,
        },
        retain: RETAIN_HEIGHTS,
    })
}
