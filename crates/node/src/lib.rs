//! The `tessera` node: CLI, JSON-RPC server and the wiring of tokio tasks, the network, the
//! consensus state machines and the shards. The only crate that spawns tasks or opens sockets.
//!
//! [`run`] runs one validator of a network (`tessera run`): RocksDB chain, libp2p network,
//! the shard's Simplex consensus ([`validator`], the driver of `tessera-consensus`'s engine) and
//! JSON-RPC ([`rpc`]). [`dev`] runs the same engine as the only validator of a one-process
//! development chain (`tessera dev`); [`testnet`] writes a local network's keys and configs.

pub mod dev;
pub mod rpc;
pub mod run;
pub mod testnet;
pub mod validator;
