//! `tessera run --home DIR`: one validator of a network: its shard's chain in RocksDB, the
//! libp2p network, the consensus driver and the JSON-RPC server, until SIGINT or SIGTERM or a
//! failure (a state divergence among them) stops it.

use crate::{
    dev::{server_stop, shutdown_signal},
    rpc,
    validator::{self, DriverConfig, DriverError, MAX_CONSENSUS_MESSAGE},
};
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use tessera_config::{keys::read_validator_key, ConfigError, Genesis, NodeConfig};
use tessera_consensus::{Message, ValidatorSet};
use tessera_execution::ParallelConfig;
use tessera_network::{Limits, NetworkConfig, Topic, Validity};
use tessera_primitives::ShardId;
use tessera_shard::{chain::Chain, mempool::MempoolConfig};
use tokio::sync::{broadcast, mpsc, watch};

/// Options of `tessera run`; flags override `node.toml` and `TESSERA_*` variables.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The node's home directory (holds node.toml).
    #[arg(long)]
    pub home: PathBuf,
    /// JSON-RPC address.
    #[arg(long)]
    pub rpc: Option<SocketAddr>,
    /// libp2p listen multiaddr.
    #[arg(long)]
    pub p2p_listen: Option<String>,
    /// A bootnode multiaddr (repeat for several); replaces the configured list.
    #[arg(long = "bootnode")]
    pub bootnodes: Vec<String>,
}

/// Why `tessera run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("genesis {path}: {reason}")]
    Genesis { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] tessera_config::keys::KeyError),
    #[error(
        "this node's validator key {key} is not among shard {shard}'s validators in the genesis"
    )]
    NotAValidator {
        key: alloy_primitives::B256,
        shard: u16,
    },
    #[error("shard {shard} does not exist: the genesis has {shards}")]
    NoShard { shard: u16, shards: u16 },
    #[error("{what} {value}: {reason}")]
    Address {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("network: {0}")]
    Network(#[from] tessera_network::NetworkError),
    #[error("cannot serve JSON-RPC on {addr}: {source}")]
    Rpc {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Chain(#[from] tessera_shard::chain::ChainError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("consensus configuration: {0}")]
    Consensus(#[from] tessera_consensus::ConsensusError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

fn multiaddr(what: &'static str, value: &str) -> Result<tessera_network::Multiaddr, RunError> {
    value
        .parse::<tessera_network::Multiaddr>()
        .map_err(|e| RunError::Address {
            what,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// Runs the validator configured in `args.home` until a signal or a failure.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let mut config = NodeConfig::load(&args.home)?;
    if let Some(rpc) = args.rpc {
        config.rpc = rpc;
    }
    if let Some(listen) = args.p2p_listen {
        config.p2p_listen = listen;
    }
    if !args.bootnodes.is_empty() {
        config.bootnodes = args.bootnodes;
    }
    let genesis_path = NodeConfig::resolve(&args.home, &config.genesis);
    let genesis = std::fs::read_to_string(&genesis_path)
        .map_err(|e| e.to_string())
        .and_then(|json| Genesis::from_json(&json).map_err(|e| e.to_string()))
        .map_err(|reason| RunError::Genesis {
            path: genesis_path.clone(),
            reason,
        })?;
    let shard = ShardId(config.shard);
    if config.shard >= genesis.num_shards {
        return Err(RunError::NoShard {
            shard: config.shard,
            shards: genesis.num_shards,
        });
    }
    let secret = read_validator_key(&NodeConfig::resolve(&args.home, &config.validator_key))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let public = alloy_primitives::B256::from(key.verifying_key().to_bytes());
    if !genesis.shard_validators(shard).contains(&public) {
        return Err(RunError::NotAValidator {
            key: public,
            shard: config.shard,
        });
    }

    let data_dir = NodeConfig::resolve(&args.home, &config.data_dir);
    let chain = Arc::new(
        Chain::open(
            data_dir.join(format!("shard-{}", config.shard)),
            &genesis,
            shard,
            MempoolConfig::default(),
        )?
        .with_execution(match config.exec_threads {
            Some(n) => ParallelConfig::with_threads(n),
            None => ParallelConfig::available(),
        }),
    );
    let head = chain.head()?;
    tracing::info!(number = head.number, hash = %head.hash(), "chain opened");

    let consensus = validator::consensus_config(
        &genesis,
        shard,
        Duration::from_millis(config.view_timeout_ms),
    )?;
    let peers = genesis
        .shard_validators(shard)
        .iter()
        .map(|k| tessera_network::peer_id_of(k.0))
        .collect();
    let network_config = NetworkConfig {
        secret,
        listen: vec![multiaddr("p2p_listen", &config.p2p_listen)?],
        bootnodes: config
            .bootnodes
            .iter()
            .map(|b| multiaddr("bootnode", b))
            .collect::<Result<_, _>>()?,
        chain: genesis.chain_id.to_string(),
        shards: vec![shard],
        limits: Limits {
            consensus: MAX_CONSENSUS_MESSAGE,
            ..Limits::default()
        },
        ban: Default::default(),
        request_timeout: Duration::from_secs(5),
    };
    let gossip_check = gossip_validator(
        chain.clone(),
        consensus.namespace.clone(),
        consensus.validators.clone(),
    );
    let (network, network_driver, inbound) = tessera_network::build(network_config, gossip_check)?;
    tracing::info!(peer_id = %network.local_peer_id(), listen = %config.p2p_listen, "p2p started");
    let network_task = tokio::spawn(network_driver.run());

    let (relay_tx, mut relay_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let relay_network = network.clone();
    let relay_task = tokio::spawn(async move {
        while let Some(raw) = relay_rx.recv().await {
            if let Err(e) = relay_network.publish(Topic::Tx(shard), raw).await {
                tracing::debug!("transaction not gossiped: {e}");
            }
        }
    });

    let (events, _) = broadcast::channel(1024);
    let (rpc_addr, server) = rpc::start(
        config.rpc,
        rpc::Rpc::new(chain.clone(), genesis.clone(), events.clone()).with_relay(relay_tx),
    )
    .await
    .map_err(|source| RunError::Rpc {
        addr: config.rpc,
        source,
    })?;
    tracing::info!(%rpc_addr, "JSON-RPC listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut driver = tokio::spawn(validator::run(
        chain.clone(),
        DriverConfig {
            consensus,
            key,
            block_time: Duration::from_millis(config.block_time_ms),
            network: Some((network, peers, inbound)),
            shard,
        },
        events,
        stop_rx,
    ));
    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{}, shutting down", signal.map_err(RunError::Signal)?);
            let _ = stop_tx.send(true);
            driver.await.expect("consensus driver does not panic").map_err(RunError::from)
        }
        result = &mut driver => {
            let result = result.expect("consensus driver does not panic");
            if let Err(e) = &result {
                tracing::error!("consensus stopped: {e}");
            }
            result.map_err(RunError::from)
        }
    };
    server_stop(server).await;
    relay_task.abort();
    network_task.abort();
    drop(chain);
    tracing::info!("stopped");
    outcome
}

/// Checks gossip before the network forwards it: consensus messages must decode and carry
/// valid signatures of this shard's validators; transactions must decode with a valid
/// signature. Anything else is rejected, which penalises the peer that sent it.
fn gossip_validator(
    chain: Arc<Chain>,
    namespace: Vec<u8>,
    validators: ValidatorSet,
) -> tessera_network::Validator {
    Arc::new(move |topic, peer, data| match topic {
        Topic::Consensus(_) => match Message::decode(data, MAX_CONSENSUS_MESSAGE)
            .and_then(|m| m.verify(&namespace, &validators))
        {
            Ok(()) => Validity::Accept,
            Err(e) => {
                tracing::warn!(%peer, "rejected a consensus message: {e}");
                Validity::Reject
            }
        },
        Topic::Tx(_) => match chain.senders().decode(data) {
            Ok(_) => Validity::Accept,
            Err(e) => {
                tracing::debug!(%peer, "rejected a gossiped transaction: {e}");
                Validity::Reject
            }
        },
        Topic::XShard(_) => Validity::Ignore,
    })
}
