//! The `tessera` node: CLI, JSON-RPC server and the wiring of tokio tasks, the network, the
//! consensus state machines and the shards. The only crate that spawns tasks or opens sockets.
//!
//! Today it runs `tessera dev`: one shard with a single local validator ([`sequencer`]) that
//! commits a block every tick, and the Ethereum JSON-RPC server ([`rpc`]) over HTTP and
//! WebSocket. Networking and the BFT engine are not wired in yet.

pub mod dev;
pub mod rpc;
pub mod sequencer;
