//! Errors of the network crate.

use libp2p::{Multiaddr, PeerId};

/// What can go wrong when starting the network or using a [`Network`](crate::Network) handle.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration is unusable.
    #[error("invalid network config: {0}")]
    Config(String),
    /// The secret key bytes are not an ed25519 secret key.
    #[error("invalid ed25519 secret key: {0}")]
    Key(String),
    /// [`build`](crate::build) was called outside a tokio runtime; the transport needs one.
    #[error("the network must be built inside a tokio runtime")]
    NoRuntime,
    /// Setting up the transport (TCP, noise, yamux, DNS) failed.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// Listening on an address failed (port in use, bad address, ...).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address from the config.
        addr: Multiaddr,
        /// What the transport said.
        reason: String,
    },
    /// No connected peer is subscribed to the topic yet. Not a failure of the caller: the message
    /// simply had nobody to go to (e.g. a single node, or peers still connecting). Callers that
    /// publish best-effort can ignore this variant.
    #[error("no peers subscribed to the topic")]
    InsufficientPeers,
    /// The payload is larger than the limit for its kind.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size of the payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Publishing failed for another reason (e.g. every peer's send queue is full).
    #[error("publish failed: {0}")]
    Publish(String),
    /// The peer could not be reached (dial failed, or it is banned).
    #[error("peer {0} unreachable")]
    Unreachable(PeerId),
    /// The request got no response within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The request failed: the peer refused it (e.g. too large), closed the stream without
    /// answering, answered with more than our response limit, or the connection broke.
    #[error("request failed: {0}")]
    Request(String),
    /// The network driver is not running (shut down, or never spawned and dropped).
    #[error("network is shut down")]
    Shutdown,
}
