//! `eth_subscribe` over WebSocket: `newHeads` and `logs`, fed by the block events the
//! consensus driver broadcasts after each committed block.

use super::{
    eth::place,
    json,
    params::{invalid_params, FilterObject},
    Rpc,
};
use crate::validator::BlockEvent;
use jsonrpsee::{
    core::traits::IdProvider, types::SubscriptionId, PendingSubscriptionSink, RpcModule,
    SubscriptionMessage,
};
use serde_json::Value;
use std::{
    borrow::Cow,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};
use tessera_shard::store::LogFilter;
use tokio::sync::broadcast::error::RecvError;

/// A fresh 128-bit identifier in geth's format (`0x` and 32 hex digits), for subscriptions
/// and filters. Unpredictable (std's randomly keyed SipHash over a counter), which matters
/// because knowing an id is all it takes to poll or remove a filter.
pub(super) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    format!("0x{:016x}{:016x}", word(0), word(1))
}

/// Subscription ids like geth's.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HexIds;

impl IdProvider for HexIds {
    fn next_id(&self) -> SubscriptionId<'static> {
        SubscriptionId::Str(Cow::Owned(new_id()))
    }
}

enum Kind {
    NewHeads,
    Logs(LogFilter),
}

pub(super) fn register(module: &mut RpcModule<Rpc>) {
    module
        .register_subscription(
            "eth_subscribe",
            "eth_subscription",
            "eth_unsubscribe",
            |params, pending: PendingSubscriptionSink, rpc: Arc<Rpc>, _| async move {
                let kind = match parse(&params) {
                    Ok(kind) => kind,
                    Err(e) => {
                        pending.reject(e).await;
                        return;
                    }
                };
                let mut events = rpc.events.subscribe();
                let Ok(sink) = pending.accept().await else {
                    return;
                };
                loop {
                    let event = tokio::select! {
                        _ = sink.closed() => return,
                        event = events.recv() => event,
                    };
                    let event = match event {
                        Ok(event) => event,
                        // A slow subscriber misses blocks rather than stalling the node.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return,
                    };
                    for message in messages(&kind, &event) {
                        let Ok(raw) = serde_json::value::to_raw_value(&message) else {
                            return;
                        };
                        if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                            return;
                        }
                    }
                }
            },
        )
        .expect("subscription names are unique");
}

fn parse(
    params: &jsonrpsee::types::Params<'_>,
) -> Result<Kind, jsonrpsee::types::ErrorObjectOwned> {
    let mut args = super::Args::new(params)?;
    let name: String = args.required("subscription")?;
    match name.as_str() {
        "newHeads" => {
            args.finish()?;
            Ok(Kind::NewHeads)
        }
        "logs" => {
            let filter: Option<FilterObject> = args.optional("filter")?;
            args.finish()?;
            let filter = filter.unwrap_or_default();
            if filter.block_hash.is_some()
                || filter.from_block.is_some()
                || filter.to_block.is_some()
            {
                return Err(invalid_params(
                    "logs subscriptions follow new blocks; fromBlock, toBlock and blockHash are not allowed",
                ));
            }
            Ok(Kind::Logs(LogFilter {
                from_block: 0,
                to_block: u64::MAX,
                addresses: filter.addresses(),
                topics: filter.topics(),
            }))
        }
        other => Err(invalid_params(format!(
            "unsupported subscription {other:?}; supported: newHeads, logs"
        ))),
    }
}

fn messages(kind: &Kind, event: &BlockEvent) -> Vec<Value> {
    match kind {
        Kind::NewHeads => {
            let mut head = json::block(&event.header, event.hash, Vec::new(), 0);
            if let Some(map) = head.as_object_mut() {
                map.remove("transactions");
                map.remove("uncles");
                map.remove("size");
                map.remove("totalDifficulty");
            }
            vec![head]
        }
        Kind::Logs(filter) => {
            let mut out = Vec::new();
            let mut log_index = 0u32;
            for (i, (receipt, tx_hash)) in event.receipts.iter().zip(&event.tx_hashes).enumerate() {
                let at = place(&event.header, event.hash, i as u32);
                for entry in json::receipt_logs(receipt, *tx_hash, at, log_index) {
                    if filter.matches(&entry.log) {
                        out.push(json::log(&entry));
                    }
                }
                log_index += receipt.logs.len() as u32;
            }
            out
        }
    }
}
