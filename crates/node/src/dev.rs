//! `tessera dev`: a one-process development chain with the well-known prefunded accounts.

use crate::{
    rpc,
    validator::{self, DriverConfig, DriverError},
};
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tessera_config::{
    keys::{derive_accounts, dev_validator_secret, DEV_ACCOUNTS, DEV_MNEMONIC},
    Genesis,
};
use tessera_execution::ParallelConfig;
use tessera_primitives::ShardId;
use tessera_shard::{
    chain::{Chain, ChainError},
    mempool::MempoolConfig,
};
use tokio::sync::{broadcast, watch};

/// Options of `tessera dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Milliseconds between blocks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub block_time: u64,
    /// Where the chain is stored; restarting with the same directory continues the chain.
    /// Without it, a fresh temporary directory is used and removed at exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// JSON-RPC port (HTTP and WebSocket).
    #[arg(long, default_value_t = 8545)]
    pub port: u16,
    /// JSON-RPC address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Number of shards.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Block-STM worker threads per shard [default: the available cores].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub exec_threads: Option<u64>,
}

/// Why `tessera dev` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("--shards {0}: only 1 shard is supported until cross-shard messaging lands")]
    Shards(u16),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} was created for a different genesis; use another directory")]
    OtherGenesis { path: PathBuf },
    #[error("cannot serve JSON-RPC on {addr}: {source}")]
    Rpc {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("consensus configuration: {0}")]
    Consensus(#[from] tessera_consensus::ConsensusError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// Keeps the data directory's genesis next to the chain, so a restart with other parameters is
/// refused instead of silently mixing chains.
fn check_genesis_file(dir: &Path, genesis: &Genesis) -> Result<(), DevError> {
    let io = |source| DevError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("genesis.json");
    match std::fs::read_to_string(&path) {
        Ok(stored) => match Genesis::from_json(&stored) {
            Ok(stored) if stored == *genesis => Ok(()),
            _ => Err(DevError::OtherGenesis {
                path: dir.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, genesis.to_json()).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

fn print_banner(genesis: &Genesis, addr: SocketAddr, dir: &Path) {
    let accounts = derive_accounts(DEV_MNEMONIC, DEV_ACCOUNTS);
    let mut out = String::new();
    out.push_str("\nTessera dev chain\n\nAvailable Accounts\n==================\n");
    for (i, a) in accounts.iter().enumerate() {
        out.push_str(&format!("({i}) {} (10000 ETH)\n", a.address));
    }
    out.push_str("\nPrivate Keys\n==================\n");
    for (i, a) in accounts.iter().enumerate() {
        out.push_str(&format!("({i}) {}\n", a.secret));
    }
    out.push_str(&format!(
        "\nMnemonic:          {DEV_MNEMONIC}\nDerivation path:   m/44'/60'/0'/0/\nChain ID:          {}\nData directory:    {}\n\nListening on {addr} (HTTP: http://{addr}, WebSocket: ws://{addr})\n",
        genesis.chain_id,
        dir.display(),
    ));
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the node.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Waits for SIGTERM or SIGINT; returns which.
pub(crate) async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

pub(crate) async fn server_stop(server: jsonrpsee::server::ServerHandle) {
    // Already stopped is fine.
    let _ = server.stop();
    server.stopped().await;
}

/// Runs the dev chain until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), DevError> {
    if args.shards != 1 {
        return Err(DevError::Shards(args.shards));
    }
    let genesis = Genesis::dev(args.shards);
    let (dir, _temp) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("tessera-dev-")
                .tempdir()
                .map_err(|source| DevError::DataDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    check_genesis_file(&dir, &genesis)?;
    let chain = Arc::new(
        Chain::open(
            dir.join("shard-0"),
            &genesis,
            ShardId(0),
            MempoolConfig::default(),
        )?
        .with_execution(match args.exec_threads {
            Some(n) => ParallelConfig::with_threads(n as usize),
            None => ParallelConfig::available(),
        }),
    );
    let head = chain.head()?;
    tracing::info!(number = head.number, hash = %head.hash(), "chain opened");

    let (events, _) = broadcast::channel(1024);
    let addr = SocketAddr::new(args.host, args.port);
    let (addr, server) = rpc::start(
        addr,
        rpc::Rpc::new(chain.clone(), genesis.clone(), events.clone()),
    )
    .await
    .map_err(|source| DevError::Rpc { addr, source })?;
    print_banner(&genesis, addr, &dir);

    // The same consensus engine as a network's, with this node as the shard's only validator:
    // its own vote is a quorum, so every proposal is final at once.
    let block_time = Duration::from_millis(args.block_time);
    let consensus = validator::consensus_config(
        &genesis,
        ShardId(0),
        (block_time * 4).max(Duration::from_secs(2)),
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producer = tokio::spawn(validator::run(
        chain.clone(),
        DriverConfig {
            consensus,
            key: ed25519_dalek::SigningKey::from_bytes(&dev_validator_secret(0)),
            block_time,
            network: None,
            shard: ShardId(0),
        },
        events,
        stop_rx,
    ));
    // Either a signal asks us to stop, or block production fails by itself.
    let signal = tokio::select! {
        signal = shutdown_signal() => signal,
        result = &mut producer => {
            let result = result.expect("consensus driver does not panic");
            if let Err(e) = &result {
                tracing::error!("block production failed: {e}");
            }
            server_stop(server).await;
            return result.map_err(DevError::from);
        }
    };
    tracing::info!("{}, shutting down", signal.map_err(DevError::Signal)?);
    let _ = stop_tx.send(true);
    // Let a block in progress finish committing before the store closes.
    let outcome = producer
        .await
        .expect("consensus driver does not panic")
        .map_err(DevError::from);
    server_stop(server).await;
    drop(chain);
    tracing::info!("stopped");
    outcome
}
