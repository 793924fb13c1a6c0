//! libp2p networking for Tessera: the swarm, gossip topics per shard, request-response for block
//! sync, size limits and bounded decoding of everything that arrives.
//!
//! Not written yet; this crate only reserves the place in the dependency graph.
