//! BFT ordering for one shard as a pure state machine: `(state, input) -> (state, outputs)`,
//! with messages, timer expiries and application answers as inputs, and messages to send, timers
//! to set and blocks to commit as outputs. No clock, sockets or threads inside.
//!
//! Not written yet; this crate only reserves the place in the dependency graph.
