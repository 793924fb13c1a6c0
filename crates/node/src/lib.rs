//! The `tessera` node: CLI, JSON-RPC server and the wiring of tokio tasks, the network, the
//! consensus state machines and the shards. The only crate that spawns tasks or opens sockets.
//!
//! Not written yet; this crate only reserves the place in the dependency graph.
