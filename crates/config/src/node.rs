//! A validator node's configuration: `node.toml` in the node's home directory, overridden by
//! `TESSERA_*` environment variables, overridden in turn by command-line flags (the node applies
//! those). Paths in the file are relative to the home directory.

use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Name of the configuration file inside a node's home directory.
pub const CONFIG_FILE: &str = "node.toml";

/// Why a node configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}={value}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// The contents of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The network's genesis file.
    pub genesis: PathBuf,
    /// This validator's ed25519 secret key, hex.
    pub validator_key: PathBuf,
    /// Where the node keeps its databases.
    pub data_dir: PathBuf,
    /// The shard this validator orders.
    #[serde(default)]
    pub shard: u16,
    /// JSON-RPC (HTTP and WebSocket) address.
    pub rpc: SocketAddr,
    /// libp2p listen address (multiaddr), e.g. `/ip4/0.0.0.0/tcp/30300`.
    pub p2p_listen: String,
    /// Peers to connect to at start and keep connected (multiaddrs, `/dns/...` allowed).
    #[serde(default)]
    pub bootnodes: Vec<String>,
    /// Target interval between blocks, in milliseconds.
    #[serde(default = "default_block_time")]
    pub block_time_ms: u64,
    /// A view's first timeout, in milliseconds (it grows while views fail).
    #[serde(default = "default_view_timeout")]
    pub view_timeout_ms: u64,
    /// Block-STM worker threads; the available cores when absent.
    #[serde(default)]
    pub exec_threads: Option<usize>,
}

fn default_block_time() -> u64 {
    500
}

fn default_view_timeout() -> u64 {
    2000
}

impl NodeConfig {
    /// Reads `home/node.toml` and applies the environment's overrides.
    pub fn load(home: &Path) -> Result<Self, ConfigError> {
        let path = home.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|source| ConfigError::Toml {
            path,
            source: Box::new(source),
        })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies `TESSERA_RPC`, `TESSERA_P2P_LISTEN`, `TESSERA_BOOTNODES` (comma-separated),
    /// `TESSERA_BLOCK_TIME_MS` and `TESSERA_EXEC_THREADS`, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: e.to_string(),
                value,
            })
        }
        if let Some(v) = var("TESSERA_RPC") {
            self.rpc = parse("TESSERA_RPC", v)?;
        }
        if let Some(v) = var("TESSERA_P2P_LISTEN") {
            self.p2p_listen = v;
        }
        if let Some(v) = var("TESSERA_BOOTNODES") {
            self.bootnodes = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = var("TESSERA_BLOCK_TIME_MS") {
            self.block_time_ms = parse("TESSERA_BLOCK_TIME_MS", v)?;
        }
        if let Some(v) = var("TESSERA_EXEC_THREADS") {
            self.exec_threads = Some(parse("TESSERA_EXEC_THREADS", v)?);
        }
        Ok(())
    }

    /// The configuration as `node.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the node configuration serializes")
    }

    /// `path` resolved against the home directory.
    pub fn resolve(home: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            home.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            genesis: "../genesis.json".into(),
            validator_key: "validator.key".into(),
            data_dir: "data".into(),
            shard: 0,
            rpc: "127.0.0.1:8545".parse().unwrap(),
            p2p_listen: "/ip4/127.0.0.1/tcp/30300".into(),
            bootnodes: vec!["/ip4/127.0.0.1/tcp/30301".into()],
            block_time_ms: 500,
            view_timeout_ms: 2000,
            exec_threads: None,
        }
    }

    #[test]
    fn toml_round_trip_and_env_overrides() {
        let config = sample();
        let back: NodeConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(back, config);

        let mut overridden = config.clone();
        overridden
            .apply_env(|name| match name {
                "TESSERA_RPC" => Some("0.0.0.0:9000".into()),
                "TESSERA_BOOTNODES" => Some("/dns/node1/tcp/30300, /dns/node2/tcp/30300".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(overridden.rpc, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(overridden.bootnodes.len(), 2);
        assert_eq!(overridden.p2p_listen, config.p2p_listen);

        let err = config
            .clone()
            .apply_env(|name| (name == "TESSERA_BLOCK_TIME_MS").then(|| "soon".into()))
            .unwrap_err();
        assert!(err.to_string().contains("TESSERA_BLOCK_TIME_MS"), "{err}");
        assert!(toml::from_str::<NodeConfig>("rpc = 1").is_err());
    }
}
