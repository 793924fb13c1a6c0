//! The Ethereum JSON-RPC server, HTTP and WebSocket on one port (jsonrpsee).
//!
//! Handlers are synchronous functions of the shared [`Rpc`] context; the ones that execute
//! (calls, estimates) or scan (logs) run on the blocking pool. Limits protect the node: request
//! bodies up to 5 MiB, batches up to 100 calls, 10,000 logs per query.

mod eth;
mod filters;
mod json;
mod params;
mod pubsub;

use crate::validator::BlockEvent;
use jsonrpsee::{
    server::{BatchRequestConfig, Server, ServerConfig, ServerHandle},
    types::{ErrorObjectOwned, Params},
    RpcModule,
};
use serde_json::Value;
use std::{net::SocketAddr, sync::Arc};
use tessera_config::Genesis;
use tessera_shard::chain::Chain;
use tokio::sync::{broadcast, mpsc};

pub use params::Args;

/// Largest request body accepted: room for a 128 KiB transaction in hex and then some.
const MAX_REQUEST_BYTES: u32 = 5 * 1024 * 1024;
const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;
const MAX_BATCH: u32 = 100;

/// What every handler can reach.
#[derive(Debug)]
pub struct Rpc {
    pub chain: Arc<Chain>,
    pub genesis: Genesis,
    pub events: broadcast::Sender<Arc<BlockEvent>>,
    /// Where admitted transactions go to reach the shard's other validators.
    relay: Option<mpsc::UnboundedSender<Vec<u8>>>,
    filters: filters::Filters,
}

impl Rpc {
    pub fn new(
        chain: Arc<Chain>,
        genesis: Genesis,
        events: broadcast::Sender<Arc<BlockEvent>>,
    ) -> Self {
        Self {
            chain,
            genesis,
            events,
            relay: None,
            filters: filters::Filters::default(),
        }
    }

    /// Sends every transaction this node admits from a client to `relay` too (for gossip).
    pub fn with_relay(mut self, relay: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Hands an admitted transaction to the relay, if there is one.
    fn relay(&self, raw: &[u8]) {
        if let Some(relay) = &self.relay {
            // The relay task gone means the node is shutting down.
            let _ = relay.send(raw.to_vec());
        }
    }
}

type Handler = fn(&Rpc, Args) -> Result<Value, ErrorObjectOwned>;

fn register(module: &mut RpcModule<Rpc>, name: &'static str, handler: Handler) {
    module
        .register_method(name, move |params: Params<'_>, rpc: &Rpc, _| {
            handler(rpc, Args::new(&params)?)
        })
        .expect("method names are unique");
}

fn register_blocking(module: &mut RpcModule<Rpc>, name: &'static str, handler: Handler) {
    module
        .register_blocking_method(name, move |params: Params<'_>, rpc: Arc<Rpc>, _| {
            handler(&rpc, Args::new(&params)?)
        })
        .expect("method names are unique");
}

/// All methods of the node.
pub fn module(rpc: Rpc) -> RpcModule<Rpc> {
    let mut m = RpcModule::new(rpc);
    for (name, handler) in eth::METHODS {
        register(&mut m, name, *handler);
    }
    for (name, handler) in eth::BLOCKING_METHODS {
        register_blocking(&mut m, name, *handler);
    }
    pubsub::register(&mut m);
    m
}

/// Starts serving `rpc` on `addr` (HTTP and WebSocket).
pub async fn start(addr: SocketAddr, rpc: Rpc) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .set_id_provider(pubsub::HexIds)
        .build();
    let server = Server::builder().set_config(config).build(addr).await?;
    let local = server.local_addr()?;
    Ok((local, server.start(module(rpc))))
}
