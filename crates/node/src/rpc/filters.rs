//! Polling filters: `eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`.
//!
//! A filter remembers the first block it has not reported yet and answers a poll from the
//! store's indexes, so nothing is buffered per block. Filters not polled for five minutes are
//! dropped, as geth does; at most [`MAX_FILTERS`] exist at once.

use super::{
    eth::{server_error, RpcResult},
    json,
    params::{Args, FilterObject},
    pubsub::new_id,
    Rpc,
};
use alloy_primitives::B256;
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_FILTERS: usize = 10_000;
/// Pending-transaction hashes a filter keeps between polls.
const MAX_PENDING_PER_FILTER: usize = 10_000;

#[derive(Debug)]
enum Kind {
    Blocks,
    Logs(FilterObject),
    PendingTransactions(Vec<B256>),
}

#[derive(Debug)]
struct Filter {
    kind: Kind,
    /// First block not reported yet.
    next_block: u64,
    last_poll: Instant,
}

/// The installed filters, by id.
#[derive(Debug, Default)]
pub(super) struct Filters {
    map: Mutex<HashMap<String, Filter>>,
}

impl Filters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Filter>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn install(
        &self,
        kind: Kind,
        next_block: u64,
    ) -> Result<String, jsonrpsee::types::ErrorObjectOwned> {
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, f| now.duration_since(f.last_poll) < FILTER_TIMEOUT);
        if map.len() >= MAX_FILTERS {
            return Err(server_error(format!(
                "too many filters installed ({MAX_FILTERS}); uninstall some"
            )));
        }
        let id = new_id();
        map.insert(
            id.clone(),
            Filter {
                kind,
                next_block,
                last_poll: now,
            },
        );
        Ok(id)
    }

    /// Records a newly admitted transaction for pending-transaction filters.
    pub(super) fn on_pending(&self, hash: B256) {
        let mut map = self.lock();
        for filter in map.values_mut() {
            if let Kind::PendingTransactions(hashes) = &mut filter.kind {
                if hashes.len() < MAX_PENDING_PER_FILTER {
                    hashes.push(hash);
                }
            }
        }
    }
}

fn not_found() -> jsonrpsee::types::ErrorObjectOwned {
    server_error("filter not found")
}

pub(super) fn new_filter(rpc: &Rpc, mut args: Args) -> RpcResult {
    let filter: FilterObject = args.required("filter")?;
    args.finish()?;
    // Validate now, so a bad filter fails here and not at every poll.
    rpc.log_query(&filter)?;
    let head = rpc.head()?.number;
    Ok(json!(rpc.filters.install(Kind::Logs(filter), head + 1)?))
}

pub(super) fn new_block_filter(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    let head = rpc.head()?.number;
    Ok(json!(rpc.filters.install(Kind::Blocks, head + 1)?))
}

pub(super) fn new_pending_filter(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    let head = rpc.head()?.number;
    Ok(json!(rpc.filters.install(
        Kind::PendingTransactions(Vec::new()),
        head + 1
    )?))
}

pub(super) fn uninstall_filter(rpc: &Rpc, mut args: Args) -> RpcResult {
    let id: String = args.required("id")?;
    args.finish()?;
    let mut map = rpc.filters.lock();
    Ok(json!(map.remove(&id).is_some()))
}

pub(super) fn filter_changes(rpc: &Rpc, mut args: Args) -> RpcResult {
    let id: String = args.required("id")?;
    args.finish()?;
    let head = rpc.head()?.number;
    // Take what the poll needs under the lock, query the store without it.
    let (kind, from) = {
        let mut map = rpc.filters.lock();
        let filter = map.get_mut(&id).ok_or_else(not_found)?;
        filter.last_poll = Instant::now();
        let from = filter.next_block;
        match &mut filter.kind {
            Kind::PendingTransactions(hashes) => {
                return Ok(json!(std::mem::take(hashes)));
            }
            Kind::Blocks => {
                filter.next_block = filter.next_block.max(head + 1);
                (None, from)
            }
            Kind::Logs(object) => (Some(object.clone()), from),
        }
    };
    match kind {
        None => {
            let store = rpc.chain.store();
            let mut hashes = Vec::new();
            for number in from..=head {
                if let Some(header) = store.header(number).map_err(super::eth::internal)? {
                    hashes.push(json!(header.hash()));
                }
            }
            Ok(Value::Array(hashes))
        }
        Some(object) => {
            let mut query = rpc.log_query(&object)?;
            // Only blocks not reported yet, within the filter's own range.
            let explicit_to = object.to_block.is_some_and(|b| {
                !matches!(
                    b,
                    super::params::BlockId::Latest | super::params::BlockId::Pending
                )
            });
            // A filter from "latest" (or with no fromBlock) starts at the head it was installed
            // at, not at each poll's head: a block finalized between two polls is reported.
            let from_latest = matches!(
                object.from_block,
                None | Some(super::params::BlockId::Latest) | Some(super::params::BlockId::Pending)
            );
            query.from_block = if from_latest {
                from
            } else {
                query.from_block.max(from)
            };
            query.to_block = if explicit_to {
                query.to_block.min(head)
            } else {
                head
            };
            let logs = if query.from_block > query.to_block {
                Vec::new()
            } else {
                rpc.logs(&query)?
            };
            let mut map = rpc.filters.lock();
            if let Some(filter) = map.get_mut(&id) {
                filter.next_block = filter.next_block.max(head + 1);
            }
            Ok(Value::Array(logs.iter().map(json::log).collect()))
        }
    }
}

pub(super) fn filter_logs(rpc: &Rpc, mut args: Args) -> RpcResult {
    let id: String = args.required("id")?;
    args.finish()?;
    let object = {
        let mut map = rpc.filters.lock();
        let filter = map.get_mut(&id).ok_or_else(not_found)?;
        filter.last_poll = Instant::now();
        match &filter.kind {
            Kind::Logs(object) => object.clone(),
            _ => return Err(server_error("filter is not a log filter")),
        }
    };
    let query = rpc.log_query(&object)?;
    let logs = rpc.logs(&query)?;
    Ok(Value::Array(logs.iter().map(json::log).collect()))
}
