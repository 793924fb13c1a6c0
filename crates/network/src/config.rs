//! Configuration of the network: identity, addresses, topics, size limits and the ban policy.

use std::{fmt, time::Duration};

use libp2p::Multiaddr;
use tessera_primitives::ShardId;

use crate::{NetworkError, Topic};

/// Everything [`build`](crate::build) needs to start a node's network.
#[derive(Clone)]
pub struct NetworkConfig {
    /// ed25519 secret key bytes (the 32-byte seed). A validator passes its validator key, so its
    /// `PeerId` can be derived from its public key with [`peer_id_of`](crate::peer_id_of).
    pub secret: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/30333` (port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to and keep connected to: `/dns/<name>/tcp/<port>` or
    /// `/ip4/<ip>/tcp/<port>`, each optionally followed by `/p2p/<peer id>`.
    pub bootnodes: Vec<Multiaddr>,
    /// Chain name used in topic and protocol names, e.g. the chain id in decimal.
    pub chain: String,
    /// Shards whose topics (tx, consensus, xshard) this node subscribes to.
    pub shards: Vec<ShardId>,
    /// Size limits on inbound messages.
    pub limits: Limits,
    /// When a misbehaving peer gets disconnected and for how long.
    pub ban: BanPolicy,
    /// How long an outbound request may take, from the call to the response (dialing included);
    /// also how long the node has to answer an inbound request.
    pub request_timeout: Duration,
}

impl NetworkConfig {
    /// A config with the given identity and chain, no listeners, no bootnodes, no shards and the
    /// default limits, ban policy and a 10 s request timeout.
    pub fn new(secret: [u8; 32], chain: impl Into<String>) -> Self {
        NetworkConfig {
            secret,
            listen: Vec::new(),
            bootnodes: Vec::new(),
            chain: chain.into(),
            shards: Vec::new(),
            limits: Limits::default(),
            ban: BanPolicy::default(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Checks what the types cannot express, so that a bad config fails at startup rather than
    /// as a confusing runtime error.
    pub(crate) fn validate(&self) -> Result<(), NetworkError> {
        let chain_ok = !self.chain.is_empty()
            && self
                .chain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !chain_ok {
            return Err(NetworkError::Config(format!(
                "chain name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.chain
            )));
        }
        self.limits.validate()?;
        if self.ban.threshold == 0 {
            return Err(NetworkError::Config(
                "ban threshold must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(NetworkError::Config(
                "request timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

// The secret must never end up in logs, so Debug is written by hand.
impl fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("secret", &"<redacted>")
            .field("listen", &self.listen)
            .field("bootnodes", &self.bootnodes)
            .field("chain", &self.chain)
            .field("shards", &self.shards)
            .field("limits", &self.limits)
            .field("ban", &self.ban)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Largest payload, in bytes, accepted per message kind. Anything larger is dropped before it
/// reaches the node and counts against the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Gossip on `.../tx` topics.
    pub tx: usize,
    /// Gossip on `.../consensus` topics (a proposal carries a whole block).
    pub consensus: usize,
    /// Gossip on `.../xshard` topics.
    pub xshard: usize,
    /// Inbound requests.
    pub request: usize,
    /// Responses to our requests. Peers are assumed to share limits, so this is also the
    /// largest response this node sends.
    pub response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * KIB;
        Limits {
            tx: 128 * KIB,
            consensus: 16 * MIB,
            xshard: 4 * MIB,
            request: MIB,
            response: 16 * MIB,
        }
    }
}

/// Ceiling on any configured limit: request/response frames carry a `u32` length, and a
/// gossip limit beyond this would let one message hold gigabytes in memory.
pub(crate) const MAX_LIMIT: usize = 1 << 30;

impl Limits {
    /// The limit for gossip on `topic`.
    pub fn for_topic(&self, topic: &Topic) -> usize {
        match topic {
            Topic::Tx(_) => self.tx,
            Topic::Consensus(_) => self.consensus,
            Topic::XShard(_) => self.xshard,
        }
    }

    /// The largest of the gossip limits.
    pub(crate) fn max_gossip(&self) -> usize {
        self.tx.max(self.consensus).max(self.xshard)
    }

    fn validate(&self) -> Result<(), NetworkError> {
        for (name, v) in [
            ("tx", self.tx),
            ("consensus", self.consensus),
            ("xshard", self.xshard),
            ("request", self.request),
            ("response", self.response),
        ] {
            if v == 0 || v > MAX_LIMIT {
                return Err(NetworkError::Config(format!(
                    "{name} size limit {v} must be between 1 and {MAX_LIMIT}"
                )));
            }
        }
        Ok(())
    }
}

/// A peer that collects more than `threshold` strikes within `window` is disconnected and its
/// connections are refused for `duration`. Strikes are: gossip the validator rejected, requests or
/// responses above the size limit, and [`Network::penalize`](crate::Network::penalize) calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Strikes tolerated within `window`; one more bans the peer.
    pub threshold: u32,
    /// Sliding window over which strikes are counted.
    pub window: Duration,
    /// How long a banned peer's connections are refused.
    pub duration: Duration,
}

impl Default for BanPolicy {
    fn default() -> Self {
        BanPolicy {
            threshold: 10,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_secret() {
        let cfg = NetworkConfig::new([0xab; 32], "7");
        let s = format!("{cfg:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains("171"), "secret byte 0xab printed: {s}");
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert!(NetworkConfig::new([1; 32], "1337").validate().is_ok());
        for chain in ["", "a/b", "a b", "é"] {
            assert!(
                NetworkConfig::new([1; 32], chain).validate().is_err(),
                "{chain:?}"
            );
        }
        let mut cfg = NetworkConfig::new([1; 32], "1");
        cfg.limits.request = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = NetworkConfig::new([1; 32], "1");
        cfg.limits.consensus = MAX_LIMIT + 1;
        assert!(cfg.validate().is_err());
        let mut cfg = NetworkConfig::new([1; 32], "1");
        cfg.ban.threshold = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = NetworkConfig::new([1; 32], "1");
        cfg.request_timeout = Duration::ZERO;
        assert!(cfg.validate().is_err());
    }
}
