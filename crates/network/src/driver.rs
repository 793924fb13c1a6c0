//! The swarm and its event loop: gossip validation, request bookkeeping, strikes and bans,
//! bootnode redials.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use libp2p::{
    allow_block_list, connection_limits,
    core::{transport::ListenerId, ConnectedPoint},
    gossipsub::{self, MessageAcceptance, TopicHash},
    identify, identity,
    multiaddr::Protocol,
    noise, request_response,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, DialError, NetworkBehaviour, SwarmEvent,
    },
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};
use tracing::{debug, info, trace, warn};

use crate::{
    codec::{WireCodec, WireError},
    config::{BanPolicy, Limits, NetworkConfig},
    Event, Network, NetworkError, Reply, Topic, Validator, Validity,
};

/// Gossipsub wraps each payload in a signed protobuf envelope (author, sequence number, topic,
/// signature); the per-topic transmit limit must leave room for it. Payload sizes are checked
/// exactly against [`Limits`] by the driver itself.
const GOSSIP_ENVELOPE: usize = 1024;
/// Short so that a small network forms its meshes within a second or two.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Housekeeping: ban expiry, strike expiry, bootnode redials.
const TICK: Duration = Duration::from_millis(250);
const BOOTNODE_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BOOTNODE_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A bootnode connection that lasted this long was healthy, so after it drops the backoff starts
/// over. Shorter connections (e.g. refused right after the handshake because we are banned)
/// keep growing the backoff instead of redialing in a tight loop.
const BOOTNODE_STABLE: Duration = Duration::from_secs(10);
/// Connections are kept: peers are few and long-lived, and gossipsub only keeps mesh
/// connections alive by itself.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
const COMMAND_CAPACITY: usize = 1024;
const EVENT_CAPACITY: usize = 1024;
/// Events waiting for room in the node's channel; beyond this they are dropped.
const MAX_OUTBOX: usize = 8192;
/// Concurrent request-response streams per connection (inbound + outbound).
const MAX_STREAMS_PER_CONNECTION: usize = 64;
/// Remote subscriptions tracked per peer: 3 topics for each of up to 1024 shards.
const MAX_REMOTE_TOPICS: usize = 3 * 1024;
/// Bound on remembered bans, so peers churning through fresh identities cannot grow it forever.
const MAX_BANS: usize = 10_000;

type Gossipsub = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    gossipsub::MaxCountSubscriptionFilter<ChainTopics>,
>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so a banned peer is refused before the other behaviours set up state for it.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    gossipsub: Gossipsub,
    rr: request_response::Behaviour<WireCodec>,
}

/// Only this chain's shard topics are tracked for remote peers, so a peer cannot make us
/// remember arbitrary topic names.
struct ChainTopics {
    chain: String,
}

impl gossipsub::TopicSubscriptionFilter for ChainTopics {
    fn can_subscribe(&mut self, topic_hash: &TopicHash) -> bool {
        Topic::parse(&self.chain, topic_hash.as_str()).is_some()
    }
}

/// Requests from [`Network`] handles to the driver.
pub(crate) enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetworkError>>,
    },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Shutdown,
}

/// An inbound request waiting for the node's answer: resolves to the answer (or `None` if the
/// node dropped the [`Reply`] or took longer than the request timeout).
type PendingReply = Pin<
    Box<
        dyn Future<
                Output = (
                    PeerId,
                    Option<Vec<u8>>,
                    request_response::ResponseChannel<Vec<u8>>,
                ),
            > + Send,
    >,
>;

type PendingRequest = (PeerId, oneshot::Sender<Result<Vec<u8>, NetworkError>>);

#[derive(Debug)]
struct Bootnode {
    /// Without the `/p2p` suffix.
    addr: Multiaddr,
    /// From the `/p2p` suffix, or learned from the first successful dial.
    peer: Option<PeerId>,
    /// True if `peer` came from the config; a learned id may change when the node is re-keyed.
    pinned: bool,
    dialing: Option<ConnectionId>,
    connected_since: Option<Instant>,
    next_attempt: Instant,
    backoff: Duration,
    /// The address turned out to be this node itself (a shared bootnode list): never dialed.
    is_self: bool,
}

/// Runs the swarm. Spawn [`run`](NetworkDriver::run) on the tokio runtime; it returns when every
/// [`Network`] handle is dropped or [`Network::shutdown`] is called.
pub struct NetworkDriver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    penalties: mpsc::UnboundedReceiver<(PeerId, String)>,
    events: mpsc::Sender<Event>,
    events_open: bool,
    outbox: VecDeque<Event>,
    dropped_events: u64,
    validator: Validator,
    chain: String,
    topics: HashMap<TopicHash, Topic>,
    limits: Limits,
    ban: BanPolicy,
    request_timeout: Duration,
    identify_protocol: String,
    pending_requests: HashMap<request_response::OutboundRequestId, PendingRequest>,
    pending_replies: FuturesUnordered<PendingReply>,
    strikes: HashMap<PeerId, VecDeque<Instant>>,
    bans: HashMap<PeerId, Instant>,
    bootnodes: Vec<Bootnode>,
    pending_listeners: HashSet<ListenerId>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
}

impl fmt::Debug for NetworkDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkDriver")
            .field("local_peer_id", self.swarm.local_peer_id())
            .field("chain", &self.chain)
            .field("bootnodes", &self.bootnodes)
            .finish_non_exhaustive()
    }
}

/// `now + d`, saturating far in the future instead of panicking on overflow.
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn gossipsub_config(config: &NetworkConfig) -> Result<gossipsub::Config, NetworkError> {
    let mut b = gossipsub::ConfigBuilder::default();
    b.validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .flood_publish(true)
        .allow_self_origin(false)
        .heartbeat_interval(HEARTBEAT)
        .heartbeat_initial_delay(Duration::from_millis(100))
        // D = 8 within [4, 16]: with 2..16 peers everyone who is there ends up in the mesh, and
        // a hub with 15 leaves keeps them all instead of pruning to gossip.
        .mesh_n(8)
        .mesh_n_low(4)
        .mesh_n_high(16)
        .mesh_outbound_min(2)
        .gossip_lazy(8)
        // 10 heartbeats = 5 s of message history to answer IWANTs from.
        .history_length(10)
        .history_gossip(3)
        .max_transmit_size(config.limits.max_gossip() + GOSSIP_ENVELOPE);
    for shard in &config.shards {
        for topic in Topic::all(*shard) {
            b.set_topic_max_transmit_size(
                TopicHash::from_raw(topic.name(&config.chain)),
                config.limits.for_topic(&topic) + GOSSIP_ENVELOPE,
            );
        }
    }
    b.build()
        .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))
}

fn strip_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

pub(crate) fn build(
    config: NetworkConfig,
    validator: Validator,
) -> Result<(Network, NetworkDriver, mpsc::Receiver<Event>), NetworkError> {
    config.validate()?;
    // The tokio TCP transport registers sockets with the runtime and would panic without one.
    tokio::runtime::Handle::try_current().map_err(|_| NetworkError::NoRuntime)?;

    let mut secret = config.secret;
    let secret = identity::ed25519::SecretKey::try_from_bytes(&mut secret)
        .map_err(|e| NetworkError::Key(e.to_string()))?;
    let keypair = identity::Keypair::from(identity::ed25519::Keypair::from(secret));
    let local_peer_id = keypair.public().to_peer_id();

    let protocol = StreamProtocol::try_from_owned(format!("/tessera/{}/req/1", config.chain))
        .map_err(|e| NetworkError::Config(format!("request protocol name: {e}")))?;
    let identify_protocol = format!("/tessera/{}/1.0.0", config.chain);

    let gossipsub = Gossipsub::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config(&config)?,
        gossipsub::MaxCountSubscriptionFilter {
            filter: ChainTopics {
                chain: config.chain.clone(),
            },
            max_subscribed_topics: MAX_REMOTE_TOPICS,
            max_subscriptions_per_request: MAX_REMOTE_TOPICS,
        },
    )
    .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))?;
    let behaviour = Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(64))
                .with_max_established_per_peer(Some(4))
                .with_max_established(Some(1024)),
        ),
        identify: identify::Behaviour::new(
            identify::Config::new(identify_protocol.clone(), keypair.public())
                .with_agent_version(format!("tessera/{}", env!("CARGO_PKG_VERSION"))),
        ),
        gossipsub,
        rr: request_response::Behaviour::with_codec(
            WireCodec {
                max_request: config.limits.request,
                max_response: config.limits.response,
            },
            [(protocol, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
        ),
    };

    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_dns()
        .map_err(|e| NetworkError::Transport(format!("DNS resolver: {e}")))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| match e {})?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();

    let mut pending_listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        pending_listeners.insert(id);
    }

    let mut topics = HashMap::new();
    for shard in &config.shards {
        for topic in Topic::all(*shard) {
            let ident = gossipsub::IdentTopic::new(topic.name(&config.chain));
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&ident)
                .map_err(|e| NetworkError::Config(format!("subscribe to {topic}: {e}")))?;
            topics.insert(ident.hash(), topic);
        }
    }

    let now = Instant::now();
    let bootnodes = config
        .bootnodes
        .iter()
        .map(|a| {
            let (addr, peer) = strip_p2p(a);
            if let Some(peer) = peer {
                swarm.add_peer_address(peer, addr.clone());
            }
            Bootnode {
                addr,
                peer,
                pinned: peer.is_some(),
                dialing: None,
                connected_since: None,
                next_attempt: now,
                backoff: BOOTNODE_BACKOFF_INITIAL,
                is_self: peer == Some(local_peer_id),
            }
        })
        .collect();

    let (command_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
    let (penalty_tx, penalties) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::channel(EVENT_CAPACITY);
    let network = Network {
        local_peer_id,
        commands: command_tx,
        penalties: penalty_tx,
        request_timeout: config.request_timeout,
    };
    let driver = NetworkDriver {
        swarm,
        commands,
        penalties,
        events,
        events_open: true,
        outbox: VecDeque::new(),
        dropped_events: 0,
        validator,
        chain: config.chain,
        topics,
        limits: config.limits,
        ban: config.ban,
        request_timeout: config.request_timeout,
        identify_protocol,
        pending_requests: HashMap::new(),
        pending_replies: FuturesUnordered::new(),
        strikes: HashMap::new(),
        bans: HashMap::new(),
        bootnodes,
        pending_listeners,
        listen_waiters: Vec::new(),
    };
    info!(peer = %local_peer_id, "network built");
    Ok((network, driver, event_rx))
}

impl NetworkDriver {
    /// Runs the swarm until every [`Network`] handle is dropped or one calls
    /// [`Network::shutdown`]. Dropping the future closes all connections.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A permit borrows its sender for as long as the `select!` output lives, which would
        // lock all of `self`; a local clone of the sender keeps that borrow off `self`.
        let events = self.events.clone();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                Some((peer, reason)) = self.penalties.recv() => {
                    self.strike(peer, &format!("penalized by node: {reason}"));
                }
                Some((peer, response, channel)) = self.pending_replies.next(),
                    if !self.pending_replies.is_empty() =>
                {
                    self.on_reply(peer, response, channel);
                }
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.outbox.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => {
                        debug!("event receiver dropped; events are discarded from now on");
                        self.events_open = false;
                        self.outbox.clear();
                    }
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        info!(peer = %self.swarm.local_peer_id(), "network driver stopped");
    }

    /// Queues an event for the node. Never waits: the node may itself be waiting on this
    /// driver (e.g. inside `request`), so blocking here could deadlock.
    fn emit(&mut self, event: Event) {
        if !self.events_open {
            return;
        }
        if self.outbox.len() >= MAX_OUTBOX {
            self.dropped_events += 1;
            // Logged at 1, 2, 4, 8, ... so a stalled node does not also flood the log.
            if self.dropped_events.is_power_of_two() {
                warn!(
                    ?event,
                    total = self.dropped_events,
                    "node is not draining network events; dropping"
                );
            }
            return;
        }
        self.outbox.push_back(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Request { peer, data, reply } => {
                let limit = self.limits.request;
                if data.len() > limit {
                    let _ = reply.send(Err(NetworkError::TooLarge {
                        size: data.len(),
                        limit,
                    }));
                } else if peer == *self.swarm.local_peer_id() || self.bans.contains_key(&peer) {
                    let _ = reply.send(Err(NetworkError::Unreachable(peer)));
                } else {
                    let id = self.swarm.behaviour_mut().rr.send_request(&peer, data);
                    self.pending_requests.insert(id, (peer, reply));
                }
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs(reply) => {
                if self.pending_listeners.is_empty() || self.swarm.listeners().next().is_some() {
                    let _ = reply.send(self.swarm.listeners().cloned().collect());
                } else {
                    self.listen_waiters.push(reply);
                }
            }
            // Handled in `run`, which owns the loop.
            Command::Shutdown => {}
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        let size = data.len();
        let limit = self.limits.for_topic(&topic);
        if size > limit {
            return Err(NetworkError::TooLarge { size, limit });
        }
        let hash = TopicHash::from_raw(topic.name(&self.chain));
        match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetworkError::InsufficientPeers)
            }
            Err(gossipsub::PublishError::MessageTooLarge) => {
                Err(NetworkError::TooLarge { size, limit })
            }
            Err(e) => Err(NetworkError::Publish(e.to_string())),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(other)) => trace!(?other, "gossipsub"),
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_request_response(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version != self.identify_protocol => {
                // A node of another chain (or another network entirely): nothing it sends can be
                // valid here, so it must not hold a connection slot.
                warn!(peer = %peer_id, theirs = %info.protocol_version,
                    ours = %self.identify_protocol, "peer is on a different network");
                self.strike(peer_id, "different network");
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(other)) => trace!(?other, "identify"),
            SwarmEvent::Behaviour(BehaviourEvent::Blocked(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, ?endpoint, "connection established");
                let now = Instant::now();
                for b in &mut self.bootnodes {
                    if b.dialing == Some(connection_id) {
                        b.dialing = None;
                        if b.peer != Some(peer_id) {
                            info!(addr = %b.addr, peer = %peer_id, "connected to bootnode");
                        }
                        b.peer = Some(peer_id);
                        b.connected_since = Some(now);
                    } else if b.peer == Some(peer_id) && b.connected_since.is_none() {
                        b.connected_since = Some(now);
                    }
                }
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    // Lets a later request to this peer redial it after a disconnect.
                    self.swarm.add_peer_address(peer_id, address.clone());
                }
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    let now = Instant::now();
                    for b in &mut self.bootnodes {
                        if b.peer != Some(peer_id) {
                            continue;
                        }
                        if let Some(since) = b.connected_since.take() {
                            if now.duration_since(since) >= BOOTNODE_STABLE {
                                b.backoff = BOOTNODE_BACKOFF_INITIAL;
                                b.next_attempt = deadline(now, BOOTNODE_BACKOFF_INITIAL);
                            }
                        }
                    }
                    self.emit(Event::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, %error, "outgoing connection failed");
                self.on_bootnode_dial_failure(connection_id, &error);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => debug!(from = %send_back_addr, %error, "incoming connection failed"),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "listening");
                self.pending_listeners.remove(&listener_id);
                self.answer_listen_waiters();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                warn!(?reason, "listener closed");
                self.pending_listeners.remove(&listener_id);
                self.answer_listen_waiters();
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    fn answer_listen_waiters(&mut self) {
        let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        for waiter in self.listen_waiters.drain(..) {
            let _ = waiter.send(addrs.clone());
        }
    }

    fn on_gossip(
        &mut self,
        source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let topic = self.topics.get(&message.topic).copied();
        let verdict = match topic {
            // Gossipsub only delivers topics we subscribed to; anything else is not ours.
            None => Validity::Ignore,
            Some(topic) if message.data.len() > self.limits.for_topic(&topic) => Validity::Reject,
            Some(topic) => {
                // The validator is the node's code; a panic in it must not take the whole
                // network down with it, so it is contained and treated as "not for us".
                let validator = &self.validator;
                catch_unwind(AssertUnwindSafe(|| {
                    validator(&topic, &source, &message.data)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!(%topic, peer = %source, "gossip validator panicked");
                    Validity::Ignore
                })
            }
        };
        let acceptance = match verdict {
            Validity::Accept => MessageAcceptance::Accept,
            Validity::Ignore => MessageAcceptance::Ignore,
            Validity::Reject => MessageAcceptance::Reject,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &source, acceptance);
        match (verdict, topic) {
            (Validity::Accept, Some(topic)) => self.emit(Event::Gossip {
                topic,
                from: source,
                data: message.data,
            }),
            (Validity::Reject, _) => self.strike(source, "gossip rejected"),
            _ => {}
        }
    }

    fn on_request_response(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, InboundFailure, Message, OutboundFailure};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let (tx, rx) = oneshot::channel();
                let timeout = self.request_timeout;
                self.pending_replies.push(Box::pin(async move {
                    let response = tokio::time::timeout(timeout, rx)
                        .await
                        .ok()
                        .and_then(Result::ok);
                    (peer, response, channel)
                }));
                self.emit(Event::Request {
                    from: peer,
                    data: request,
                    reply: Reply { tx },
                });
            }
            E::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let error = match error {
                    OutboundFailure::DialFailure => NetworkError::Unreachable(peer),
                    OutboundFailure::Timeout => NetworkError::Timeout,
                    OutboundFailure::ConnectionClosed => {
                        NetworkError::Request("connection closed".into())
                    }
                    OutboundFailure::UnsupportedProtocols => {
                        NetworkError::Request("peer does not support the request protocol".into())
                    }
                    OutboundFailure::Io(e) => match WireError::from_io(&e) {
                        Some(WireError::TooLarge { .. }) => {
                            let msg = format!("response refused: {e}");
                            self.strike(peer, "oversized response");
                            NetworkError::Request(msg)
                        }
                        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            NetworkError::Request(
                                "peer closed the stream without a response \
                                 (request refused or not answered)"
                                    .into(),
                            )
                        }
                        _ => NetworkError::Request(e.to_string()),
                    },
                };
                debug!(%peer, %error, "outbound request failed");
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(error));
                }
            }
            E::InboundFailure { peer, error, .. } => {
                if let InboundFailure::Io(e) = &error {
                    if let Some(WireError::TooLarge { .. }) = WireError::from_io(e) {
                        debug!(%peer, %e, "refused oversized request");
                        self.strike(peer, "oversized request");
                        return;
                    }
                }
                debug!(%peer, %error, "inbound request failed");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn on_reply(
        &mut self,
        peer: PeerId,
        response: Option<Vec<u8>>,
        channel: request_response::ResponseChannel<Vec<u8>>,
    ) {
        match response {
            Some(data) if data.len() <= self.limits.response => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, data)
                    .is_err()
                {
                    debug!(%peer, "response not sent: the request stream is gone");
                }
            }
            Some(data) => warn!(
                %peer,
                len = data.len(),
                limit = self.limits.response,
                "not sending a response above the response limit"
            ),
            // Dropping the channel closes just this stream; the requester gets an error and the
            // connection stays up.
            None => debug!(%peer, "request not answered"),
        }
    }

    /// Counts a strike against `peer`; one more than the policy's threshold within its window
    /// gets the peer disconnected and refused for the ban duration.
    fn strike(&mut self, peer: PeerId, reason: &str) {
        if peer == *self.swarm.local_peer_id() || self.bans.contains_key(&peer) {
            return;
        }
        let now = Instant::now();
        let window = self.ban.window;
        let strikes = self.strikes.entry(peer).or_default();
        strikes.push_back(now);
        while strikes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            strikes.pop_front();
        }
        let count = strikes.len();
        debug!(%peer, reason, count, "strike");
        if count > self.ban.threshold as usize {
            self.strikes.remove(&peer);
            self.ban_peer(peer, reason, now);
        }
    }

    fn ban_peer(&mut self, peer: PeerId, reason: &str, now: Instant) {
        if self.bans.len() >= MAX_BANS {
            if let Some(oldest) = self
                .bans
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(p, _)| *p)
            {
                self.bans.remove(&oldest);
                self.swarm.behaviour_mut().blocked.unblock_peer(oldest);
            }
        }
        warn!(%peer, reason, duration = ?self.ban.duration, "banning peer");
        self.bans.insert(peer, deadline(now, self.ban.duration));
        // Closes its connections now and refuses new ones until unblocked.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.bans.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            info!(%peer, "ban expired");
        }
        let window = self.ban.window;
        self.strikes.retain(|_, strikes| {
            strikes
                .back()
                .is_some_and(|t| now.duration_since(*t) <= window)
        });
        // Callers that gave up (timeout) leave their entry behind until libp2p reports the
        // request's fate; drop those early.
        self.pending_requests
            .retain(|_, (_, reply)| !reply.is_closed());
        self.redial_bootnodes(now);
    }

    fn redial_bootnodes(&mut self, now: Instant) {
        for i in 0..self.bootnodes.len() {
            let b = &self.bootnodes[i];
            if b.is_self || b.dialing.is_some() || now < b.next_attempt {
                continue;
            }
            if let Some(peer) = b.peer {
                if self.swarm.is_connected(&peer) || self.bans.contains_key(&peer) {
                    continue;
                }
            }
            // An unpinned id may be stale (the node behind the address was re-keyed), so such
            // bootnodes are dialed by address alone and the id is learned again.
            let opts = match (b.pinned, b.peer) {
                (true, Some(peer)) => DialOpts::peer_id(peer)
                    .addresses(vec![b.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                _ => DialOpts::unknown_peer_id().address(b.addr.clone()).build(),
            };
            let connection_id = opts.connection_id();
            let result = self.swarm.dial(opts);
            let b = &mut self.bootnodes[i];
            b.next_attempt = deadline(now, b.backoff);
            b.backoff = (b.backoff * 2).min(BOOTNODE_BACKOFF_MAX);
            match result {
                Ok(()) => {
                    trace!(addr = %b.addr, "dialing bootnode");
                    b.dialing = Some(connection_id);
                }
                Err(DialError::LocalPeerId { .. }) => {
                    debug!(addr = %b.addr, "bootnode is this node itself");
                    b.is_self = true;
                }
                Err(e) => debug!(addr = %b.addr, %e, "cannot dial bootnode"),
            }
        }
    }

    fn on_bootnode_dial_failure(&mut self, connection_id: ConnectionId, error: &DialError) {
        for b in &mut self.bootnodes {
            if b.dialing != Some(connection_id) {
                continue;
            }
            b.dialing = None;
            if let DialError::LocalPeerId { .. } = error {
                debug!(addr = %b.addr, "bootnode is this node itself");
                b.is_self = true;
            } else {
                debug!(addr = %b.addr, %error, retry_in = ?b.backoff, "bootnode dial failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_primitives::ShardId;

    #[test]
    fn gossipsub_config_is_valid_for_any_limits_and_shards() {
        for limits in [
            Limits::default(),
            Limits {
                tx: 1,
                consensus: 1,
                xshard: 1,
                request: 1,
                response: 1,
            },
        ] {
            for shards in [vec![], vec![ShardId(0)], (0..64).map(ShardId).collect()] {
                let mut cfg = NetworkConfig::new([1; 32], "1");
                cfg.limits = limits;
                cfg.shards = shards;
                let g = gossipsub_config(&cfg).unwrap();
                assert!(g.validate_messages());
                assert!(g.flood_publish());
                assert!(g.heartbeat_interval() <= Duration::from_millis(500));
                for s in &cfg.shards {
                    for t in Topic::all(*s) {
                        assert_eq!(
                            g.max_transmit_size_for_topic(&TopicHash::from_raw(t.name("1"))),
                            limits.for_topic(&t) + GOSSIP_ENVELOPE
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strip_p2p_splits_the_peer_id() {
        let peer = PeerId::random();
        let with: Multiaddr = format!("/dns/node1/tcp/30333/p2p/{peer}").parse().unwrap();
        let (addr, p) = strip_p2p(&with);
        assert_eq!(addr.to_string(), "/dns/node1/tcp/30333");
        assert_eq!(p, Some(peer));
        let without: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(strip_p2p(&without), (without.clone(), None));
    }

    #[test]
    fn deadline_saturates() {
        let now = Instant::now();
        assert!(deadline(now, Duration::MAX) > now);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn build_outside_a_runtime_is_an_error_not_a_panic() {
        let cfg = NetworkConfig::new([1; 32], "1");
        let r = build(
            cfg,
            std::sync::Arc::new(|_: &Topic, _: &PeerId, _: &[u8]| Validity::Accept),
        );
        assert!(matches!(r, Err(NetworkError::NoRuntime)));
    }
}
