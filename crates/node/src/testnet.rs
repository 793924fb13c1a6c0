//! `tessera testnet`: writes a local network of validators, ready for `tessera run --home
//! DIR/node<i>`: fresh ed25519 keys, one genesis naming them, and each node's `node.toml` with
//! JSON-RPC on 127.0.0.1:(rpc-base-port + i), libp2p on 127.0.0.1:(p2p-base-port + i), and
//! every other node as a bootnode.

use std::path::PathBuf;
use tessera_config::{
    keys::{generate_validator_secret, validator_public_key, write_validator_key, KeyError},
    node::CONFIG_FILE,
    Genesis, NodeConfig,
};

/// Options of `tessera testnet`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestnetArgs {
    /// Number of validators (n = 3f + 1 tolerates f faulty ones).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub validators: u32,
    /// Number of shards.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Directory to write (created; must not hold a testnet already).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 8545)]
    pub rpc_base_port: u16,
    #[arg(long, default_value_t = 30300)]
    pub p2p_base_port: u16,
    /// Chain id of the network.
    #[arg(long, default_value_t = tessera_config::DEV_CHAIN_ID)]
    pub chain_id: u64,
    /// Target block interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub block_time: u64,
    /// A view's first timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub view_timeout: u64,
}

/// Why `tessera testnet` failed.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    #[error("--shards {0}: only 1 shard is supported until cross-shard messaging lands")]
    Shards(u16),
    #[error("{0} already holds a genesis.json; choose an empty directory")]
    Exists(PathBuf),
    #[error("port {base} + {count} does not fit in 16 bits")]
    Ports { base: u16, count: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Writes the testnet; returns the node directories.
pub fn write(args: &TestnetArgs) -> Result<Vec<PathBuf>, TestnetError> {
    if args.shards != 1 {
        return Err(TestnetError::Shards(args.shards));
    }
    for base in [args.rpc_base_port, args.p2p_base_port] {
        if u32::from(base) + args.validators > u32::from(u16::MAX) {
            return Err(TestnetError::Ports {
                base,
                count: args.validators,
            });
        }
    }
    let genesis_path = args.out.join("genesis.json");
    if genesis_path.exists() {
        return Err(TestnetError::Exists(args.out.clone()));
    }
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| TestnetError::Io { path, source }
    };
    let secrets = (0..args.validators)
        .map(|_| generate_validator_secret())
        .collect::<Result<Vec<_>, _>>()?;
    let mut genesis = Genesis::dev(args.shards);
    genesis.chain_id = args.chain_id;
    genesis.validators = vec![secrets.iter().map(validator_public_key).collect()];

    let p2p = |i: u32| format!("/ip4/127.0.0.1/tcp/{}", u32::from(args.p2p_base_port) + i);
    let mut homes = Vec::new();
    for (i, secret) in (0u32..).zip(&secrets) {
        let home = args.out.join(format!("node{i}"));
        std::fs::create_dir_all(&home).map_err(io(&home))?;
        write_validator_key(&home.join("validator.key"), secret)?;
        let bootnodes = (0u32..)
            .zip(&secrets)
            .filter(|(j, _)| *j != i)
            .map(|(j, other)| {
                let peer = tessera_network::peer_id_of(validator_public_key(other).0);
                format!("{}/p2p/{peer}", p2p(j))
            })
            .collect();
        let config = NodeConfig {
            genesis: "../genesis.json".into(),
            validator_key: "validator.key".into(),
            data_dir: "data".into(),
            shard: 0,
            rpc: std::net::SocketAddr::from((
                [127, 0, 0, 1],
                (u32::from(args.rpc_base_port) + i) as u16,
            )),
            p2p_listen: p2p(i),
            bootnodes,
            block_time_ms: args.block_time,
            view_timeout_ms: args.view_timeout,
            exec_threads: None,
        };
        let path = home.join(CONFIG_FILE);
        std::fs::write(&path, config.to_toml()).map_err(io(&path))?;
        homes.push(home);
    }
    std::fs::write(&genesis_path, genesis.to_json()).map_err(io(&genesis_path))?;
    Ok(homes)
}
