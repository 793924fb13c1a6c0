//! libp2p networking for Tessera. It connects a node to its peers (TCP + noise + yamux, identify,
//! bootnodes by `/dns` or `/ip4` multiaddr that are redialed with backoff until connected), carries
//! gossip on three topics per shard (`/tessera/<chain>/shard/<id>/{tx,consensus,xshard}`) and one
//! request-response protocol (`/tessera/<chain>/req/1`: opaque request bytes to opaque response
//! bytes, for block sync, missing messages and RPC forwarding). The network knows message kinds,
//! not their meaning: the node supplies a [`Validator`] that judges each inbound gossip message
//! before it is forwarded, and only accepted messages reach the node.
//!
//! Everything that arrives is bounded: gossip per topic kind, requests and responses by
//! [`Limits`]; a length prefix above the limit is refused before anything is allocated. Peers that
//! send rejected or oversized messages, or that the node [`penalizes`](Network::penalize), are
//! disconnected and refused for a while according to the [`BanPolicy`].
//!
//! The crate spawns no tasks of its own (project rule: only the node does): [`build`] returns a
//! [`Network`] handle, a [`NetworkDriver`] for the node to spawn, and the receiver of [`Event`]s.
//! The node must keep draining that receiver; if it falls far behind, events are dropped (an
//! unanswered request then fails for its sender) rather than stalling the network.

mod codec;
mod config;
mod driver;
mod error;
mod topic;

use std::{fmt, sync::Arc, time::Duration};

pub use config::{BanPolicy, Limits, NetworkConfig};
pub use driver::NetworkDriver;
pub use error::NetworkError;
pub use libp2p::{Multiaddr, PeerId};
pub use topic::Topic;

use libp2p::identity;
use tokio::sync::{mpsc, oneshot};

use driver::Command;

/// The node's verdict on an inbound gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid: forward it to other peers and deliver it to the node.
    Accept,
    /// Not wanted (e.g. stale or a duplicate in the application's sense) but not malicious: drop
    /// it without forwarding and without penalty.
    Ignore,
    /// Invalid: drop it and count a strike against the peer that sent it.
    Reject,
}

/// Judges an inbound gossip message: `(topic, peer that forwarded it, payload)`. Called on the
/// driver's task for every message, before it is forwarded, so it must be cheap and must not
/// block. It is not called for messages above the topic's size limit (those are rejected).
pub type Validator = Arc<dyn Fn(&Topic, &PeerId, &[u8]) -> Validity + Send + Sync>;

/// What the network tells the node.
pub enum Event {
    /// A gossip message the validator accepted. `from` is the peer that forwarded it to us (the
    /// one to [`penalize`](Network::penalize) if the message turns out to be bad), not
    /// necessarily its author.
    Gossip {
        /// The topic it arrived on.
        topic: Topic,
        /// The directly connected peer that sent it.
        from: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A request from a peer. Answer with [`Reply::send`]; dropping the reply makes the request
    /// fail for the sender but keeps the connection.
    Request {
        /// The requesting peer.
        from: PeerId,
        /// The request payload (at most [`Limits::request`] bytes).
        data: Vec<u8>,
        /// Where the response goes.
        reply: Reply,
    },
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer was closed.
    PeerDisconnected(PeerId),
}

// By hand so that logging an event prints payload sizes, not megabytes of bytes.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Gossip { topic, from, data } => f
                .debug_struct("Gossip")
                .field("topic", topic)
                .field("from", from)
                .field("len", &data.len())
                .finish(),
            Event::Request { from, data, .. } => f
                .debug_struct("Request")
                .field("from", from)
                .field("len", &data.len())
                .finish(),
            Event::PeerConnected(p) => f.debug_tuple("PeerConnected").field(p).finish(),
            Event::PeerDisconnected(p) => f.debug_tuple("PeerDisconnected").field(p).finish(),
        }
    }
}

/// The response channel of an inbound [`Event::Request`].
pub struct Reply {
    tx: oneshot::Sender<Vec<u8>>,
}

impl Reply {
    /// Sends the response. It is not sent if it exceeds this node's [`Limits::response`] (peers
    /// are assumed to use the same limits, so the requester would refuse it) or if the request
    /// already timed out; the requester then gets an error.
    pub fn send(self, response: Vec<u8>) {
        // A closed channel means the request timed out or the driver stopped: the requester
        // has been (or will be) told by its own side, so there is nobody to report to here.
        let _ = self.tx.send(response);
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

/// A cheap, cloneable handle to the running network. The driver stops when every handle is
/// dropped or [`shutdown`](Network::shutdown) is called.
#[derive(Clone)]
pub struct Network {
    local_peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    // Separate and unbounded because `penalize` is synchronous; its rate is bounded by the rate
    // of messages the node receives.
    penalties: mpsc::UnboundedSender<(PeerId, String)>,
    request_timeout: Duration,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// This node's peer id (derived from the configured secret key).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Publishes `data` on `topic` to every connected peer subscribed to it (flood publish, so
    /// nothing waits for a mesh to form). The node does not receive its own message.
    ///
    /// [`NetworkError::InsufficientPeers`] means nobody is subscribed yet; best-effort callers
    /// can ignore it.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Publish { topic, data, reply })
            .await?;
        rx.await.map_err(|_| NetworkError::Shutdown)?
    }

    /// Sends `data` to `peer` and waits for its response, at most the configured request timeout
    /// (which includes dialing the peer if it is not connected).
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetworkError> {
        let call = async {
            let (reply, rx) = oneshot::channel();
            self.command(Command::Request { peer, data, reply }).await?;
            rx.await.map_err(|_| NetworkError::Shutdown)?
        };
        tokio::time::timeout(self.request_timeout, call)
            .await
            .unwrap_or(Err(NetworkError::Timeout))
    }

    /// Peers with at least one established connection (empty once the driver has stopped).
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::ConnectedPeers(reply)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The addresses actually listened on (with the real port when the config said port 0).
    /// Waits until the configured listeners have reported an address.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::ListenAddrs(reply)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Reports that `peer` sent something the node found invalid after the network delivered it
    /// (e.g. an accepted gossip message or a response that failed deeper checks). Counts as a
    /// strike towards the [`BanPolicy`].
    pub fn penalize(&self, peer: PeerId, reason: &str) {
        // If the driver is gone there is no connection left to protect.
        let _ = self.penalties.send((peer, reason.to_owned()));
    }

    /// Stops the driver: connections are closed and every later call fails with
    /// [`NetworkError::Shutdown`].
    pub async fn shutdown(&self) {
        // An error means the driver already stopped, which is what was asked for.
        let _ = self.commands.send(Command::Shutdown).await;
    }

    async fn command(&self, command: Command) -> Result<(), NetworkError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::Shutdown)
    }
}

/// Starts the network described by `config`: binds the listeners, subscribes to the shards'
/// topics and prepares the bootnode dials. Must be called inside a tokio runtime. Nothing runs
/// until the node spawns [`NetworkDriver::run`].
pub fn build(
    config: NetworkConfig,
    validator: Validator,
) -> Result<(Network, NetworkDriver, mpsc::Receiver<Event>), NetworkError> {
    driver::build(config, validator)
}

/// The `PeerId` of the node whose libp2p identity is the ed25519 key with this public key, i.e.
/// of a validator started with the matching secret.
pub fn peer_id_of(ed25519_public_key_bytes: [u8; 32]) -> PeerId {
    if let Ok(pk) = identity::ed25519::PublicKey::try_from_bytes(&ed25519_public_key_bytes) {
        return identity::PublicKey::from(pk).to_peer_id();
    }
    // Not a point on the curve, so no node can have this key. Still return the id libp2p would
    // derive from these bytes (an identity multihash of the protobuf-encoded key), so the
    // function stays total and deterministic: protobuf field 1 (key type) = 1 (Ed25519),
    // field 2 (data) = 32 bytes; multihash code 0 (identity), length 36.
    let mut bytes = Vec::with_capacity(38);
    bytes.extend_from_slice(&[0x00, 36, 0x08, 0x01, 0x12, 32]);
    bytes.extend_from_slice(&ed25519_public_key_bytes);
    PeerId::from_bytes(&bytes).expect("an identity multihash of 36 bytes is a valid peer id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_of_matches_libp2p_for_valid_keys() {
        for seed in [[1u8; 32], [42; 32], [0xff; 32]] {
            let mut s = seed;
            let sk = identity::ed25519::SecretKey::try_from_bytes(&mut s).unwrap();
            let kp = identity::ed25519::Keypair::from(sk);
            let pk = kp.public().to_bytes();
            let expected = identity::Keypair::from(kp).public().to_peer_id();
            assert_eq!(peer_id_of(pk), expected);
        }
    }

    #[test]
    fn peer_id_of_invalid_point_is_the_same_encoding() {
        // Find bytes that do not decode as a curve point; the fallback must not panic and must
        // be stable.
        let mut found = 0;
        for b in 0u8..=255 {
            let mut key = [b; 32];
            key[31] &= 0x7f;
            key[0] = b.wrapping_mul(7);
            if identity::ed25519::PublicKey::try_from_bytes(&key).is_err() {
                let a = peer_id_of(key);
                assert_eq!(a, peer_id_of(key));
                assert_eq!(&a.to_bytes()[6..], &key);
                found += 1;
            }
        }
        assert!(found > 0, "no invalid point found to exercise the fallback");
        // For a valid key the fallback encoding equals the libp2p one.
        let mut s = [9u8; 32];
        let kp = identity::ed25519::Keypair::from(
            identity::ed25519::SecretKey::try_from_bytes(&mut s).unwrap(),
        );
        let pk = kp.public().to_bytes();
        assert_eq!(
            &peer_id_of(pk).to_bytes()[..6],
            &[0x00, 36, 0x08, 0x01, 0x12, 32]
        );
    }
}
