//! Block production with a single local validator: every tick, propose the mempool's ready
//! transactions and commit them at once. This is where the BFT engine plugs in: it replaces
//! "decide immediately" with a round of votes, and everything around it (proposal from the
//! mempool, application through `Chain::apply`, the block event) stays the same.

use alloy_primitives::B256;
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tessera_execution::{Rejection, TxOutcome};
use tessera_primitives::{Header, Receipt};
use tessera_shard::chain::{Chain, ChainError};
use tokio::sync::{broadcast, watch};

/// A committed block, as subscribers see it.
#[derive(Debug, Clone)]
pub struct BlockEvent {
    pub header: Header,
    pub hash: B256,
    pub receipts: Vec<Receipt>,
    /// Hashes of the included transactions, in block order (one per receipt).
    pub tx_hashes: Vec<B256>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Proposes and commits one block; the decision is immediate because this node is the only
/// validator. Returns the committed block.
pub fn produce_block(chain: &Chain) -> Result<BlockEvent, ChainError> {
    // The proposer picks the timestamp; validators only check it does not go backwards.
    let (template, txs) = chain.propose(unix_now())?;
    let applied = chain.apply(&template, &txs)?;
    let mut receipts = Vec::new();
    let mut tx_hashes = Vec::new();
    for (tx, outcome) in txs.iter().zip(applied.output.outcomes) {
        match outcome {
            TxOutcome::Included(receipt) => {
                receipts.push(receipt);
                tx_hashes.push(tx.hash);
            }
            TxOutcome::Rejected(Rejection::Invalid(reason)) => {
                tracing::warn!(tx = %tx.hash, %reason, "dropped a transaction the executor refused");
            }
            TxOutcome::Rejected(Rejection::BlockGasExceeded { .. }) => {}
        }
    }
    let hash = applied.header.hash();
    Ok(BlockEvent {
        header: applied.header,
        hash,
        receipts,
        tx_hashes,
    })
}

/// Produces a block every `block_time` until `stop` changes; a failure to apply a block stops
/// the loop and is returned, because a node that cannot commit must not go on serving as if
/// it could.
pub async fn run(
    chain: Arc<Chain>,
    block_time: Duration,
    events: broadcast::Sender<Arc<BlockEvent>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ChainError> {
    let mut ticks = tokio::time::interval(block_time);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let chain = chain.clone();
        let event = tokio::task::spawn_blocking(move || produce_block(&chain))
            .await
            .expect("block production does not panic")?;
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
        // No subscribers is fine.
        let _ = events.send(Arc::new(event));
    }
}
