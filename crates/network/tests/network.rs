//! End-to-end tests of the network crate: real swarms on 127.0.0.1 with OS-assigned ports.
//! Every wait is bounded so a broken build fails instead of hanging.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    identity, multiaddr::Protocol, noise, request_response, swarm::SwarmEvent, tcp, yamux,
    StreamProtocol,
};
use tessera_network::{
    build, peer_id_of, BanPolicy, Event, Multiaddr, Network, NetworkConfig, NetworkError, PeerId,
    Topic, Validator, Validity,
};
use tessera_primitives::ShardId;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc::Receiver,
    task::JoinHandle,
    time::{sleep, timeout, timeout_at, Instant},
};

const CHAIN: &str = "4242";
/// Upper bound for anything that should happen "soon"; generous because the test machine is
/// shared with other builds.
const WAIT: Duration = Duration::from_secs(30);
const S0: ShardId = ShardId(0);
const S1: ShardId = ShardId(1);

struct Node {
    net: Network,
    events: Receiver<Event>,
    /// First listen address, with `/p2p/<id>`.
    addr: Multiaddr,
    driver: JoinHandle<()>,
}

impl Node {
    fn peer(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// The listen address without the `/p2p` suffix.
    fn bare_addr(&self) -> Multiaddr {
        let mut a = self.addr.clone();
        a.pop();
        a
    }
}

fn accept_all() -> Validator {
    Arc::new(|_: &Topic, _: &PeerId, _: &[u8]| Validity::Accept)
}

fn config(seed: u8) -> NetworkConfig {
    let mut c = NetworkConfig::new([seed; 32], CHAIN);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.request_timeout = Duration::from_secs(5);
    c
}

async fn start(cfg: NetworkConfig, validator: Validator) -> Node {
    let (net, driver, events) = build(cfg, validator).expect("build network");
    let driver = tokio::spawn(driver.run());
    let addrs = timeout(WAIT, net.listen_addrs())
        .await
        .expect("listen address in time");
    let addr = addrs
        .first()
        .expect("one listen address")
        .clone()
        .with(Protocol::P2p(net.local_peer_id()));
    Node {
        net,
        events,
        addr,
        driver,
    }
}

async fn wait_connected(net: &Network, peer: PeerId) {
    timeout(WAIT, async {
        while !net.connected_peers().await.contains(&peer) {
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never connected to {peer}", net.local_peer_id()));
}

async fn wait_disconnected(net: &Network, peer: PeerId) {
    timeout(WAIT, async {
        while net.connected_peers().await.contains(&peer) {
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never disconnected from {peer}", net.local_peer_id()));
}

/// Publishes `data` (again every 300 ms, as meshes may still be forming) until every receiver
/// got it; returns the `from` each receiver saw and the other events that arrived meanwhile.
async fn publish_until_received(
    publisher: &Network,
    topic: Topic,
    data: &[u8],
    receivers: &mut [&mut Receiver<Event>],
) -> (Vec<PeerId>, Vec<Event>) {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Option<PeerId>> = vec![None; receivers.len()];
    let mut others = Vec::new();
    while got.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "{topic} message {:?} not delivered to all receivers: {got:?}",
            String::from_utf8_lossy(data)
        );
        match publisher.publish(topic, data.to_vec()).await {
            Ok(()) | Err(NetworkError::InsufficientPeers) => {}
            Err(e) => panic!("publish failed: {e}"),
        }
        let round_end = Instant::now() + Duration::from_millis(300);
        for (i, rx) in receivers.iter_mut().enumerate() {
            while got[i].is_none() {
                match timeout_at(round_end, rx.recv()).await {
                    Ok(Some(Event::Gossip {
                        topic: t,
                        from,
                        data: d,
                    })) if t == topic && d == data => got[i] = Some(from),
                    Ok(Some(other)) => others.push(other),
                    Ok(None) => panic!("driver stopped"),
                    Err(_) => break,
                }
            }
        }
    }
    (got.into_iter().flatten().collect(), others)
}

/// Everything `rx` yields within `d`.
async fn collect_for(rx: &mut Receiver<Event>, d: Duration) -> Vec<Event> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

/// A validator that accepts everything except payloads starting with "bad" (rejected) and
/// panics on "boom" (a node bug the network must survive).
fn picky() -> Validator {
    Arc::new(|_: &Topic, _: &PeerId, data: &[u8]| {
        if data.starts_with(b"bad") {
            Validity::Reject
        } else if data == b"boom" {
            panic!("validator bug");
        } else {
            Validity::Accept
        }
    })
}

fn gossip_on(events: &[Event], pred: impl Fn(&Topic, &[u8]) -> bool) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Gossip { topic, data, .. } if pred(topic, data)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_subscribed_nodes_only() {
    let mut cfg = config(1);
    cfg.shards = vec![S0, S1];
    let mut b = start(cfg, accept_all()).await;

    let mut cfg = config(2);
    cfg.shards = vec![S0, S1];
    cfg.bootnodes = vec![b.addr.clone()];
    let mut a = start(cfg, accept_all()).await;

    // C is not subscribed to shard 1, and dials the bootnode without a /p2p suffix.
    let mut cfg = config(3);
    cfg.shards = vec![S0];
    cfg.bootnodes = vec![b.bare_addr()];
    let mut c = start(cfg, accept_all()).await;

    wait_connected(&b.net, a.peer()).await;
    wait_connected(&b.net, c.peer()).await;

    // Consensus on shard 0 from A reaches B directly and C through B.
    let (froms, _) = publish_until_received(
        &a.net,
        Topic::Consensus(S0),
        b"proposal-1",
        &mut [&mut b.events, &mut c.events],
    )
    .await;
    assert_eq!(
        froms,
        vec![a.peer(), b.peer()],
        "`from` is the forwarding peer"
    );
    // A never gets its own message back.
    let own = collect_for(&mut a.events, Duration::from_millis(500)).await;
    assert_eq!(gossip_on(&own, |_, d| d == b"proposal-1"), 0);

    // Consensus messages carry whole blocks: a multi-megabyte one gets through as well.
    let block: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    publish_until_received(
        &a.net,
        Topic::Consensus(S0),
        &block,
        &mut [&mut b.events, &mut c.events],
    )
    .await;

    // Tx on shard 0 from C reaches B and A.
    publish_until_received(
        &c.net,
        Topic::Tx(S0),
        b"tx-1",
        &mut [&mut b.events, &mut a.events],
    )
    .await;

    // Shard 1 consensus from A reaches B, but not C, which did not subscribe to shard 1.
    publish_until_received(
        &a.net,
        Topic::Consensus(S1),
        b"proposal-s1",
        &mut [&mut b.events],
    )
    .await;
    // XShard to shard 1 as well, to cover the third kind.
    publish_until_received(&b.net, Topic::XShard(S1), b"xmsg", &mut [&mut a.events]).await;
    let c_events = collect_for(&mut c.events, Duration::from_secs(1)).await;
    assert_eq!(
        gossip_on(&c_events, |t, _| t.shard() == S1),
        0,
        "{c_events:?}"
    );

    // Payloads above the local limit are refused before sending.
    let too_big = vec![0u8; tessera_network::Limits::default().tx + 1];
    assert!(matches!(
        a.net.publish(Topic::Tx(S0), too_big).await,
        Err(NetworkError::TooLarge { .. })
    ));

    for n in [a, b, c] {
        drop(n.net);
        timeout(WAIT, n.driver)
            .await
            .expect("driver stops")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_peers_is_a_soft_error() {
    let mut cfg = config(5);
    cfg.shards = vec![S0];
    let n = start(cfg, accept_all()).await;
    assert!(matches!(
        n.net.publish(Topic::Tx(S0), b"x".to_vec()).await,
        Err(NetworkError::InsufficientPeers)
    ));
    n.net.shutdown().await;
    timeout(WAIT, n.driver)
        .await
        .expect("driver stops")
        .unwrap();
    // Calls after shutdown fail cleanly.
    assert!(matches!(
        n.net.publish(Topic::Tx(S0), b"x".to_vec()).await,
        Err(NetworkError::Shutdown)
    ));
    assert!(n.net.connected_peers().await.is_empty());
}

/// Serves requests on `events`: echoes reversed, except "drop" (no answer), "big" (8 KiB),
/// "large" (8 MiB) and "slow" (answers after 4 s). Records peers that disconnect.
fn serve(mut events: Receiver<Event>) -> Arc<Mutex<Vec<PeerId>>> {
    let disconnects = Arc::new(Mutex::new(Vec::new()));
    let d = disconnects.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Request { data, reply, .. } => match &data[..] {
                    b"drop" => drop(reply),
                    b"big" => reply.send(vec![1; 8192]),
                    b"large" => reply.send(vec![2; 8 << 20]),
                    b"slow" => {
                        tokio::spawn(async move {
                            sleep(Duration::from_secs(4)).await;
                            reply.send(b"late".to_vec());
                        });
                    }
                    _ => reply.send(data.iter().rev().copied().collect()),
                },
                Event::PeerDisconnected(p) => d.lock().unwrap().push(p),
                _ => {}
            }
        }
    });
    disconnects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip_and_limits() {
    let mut cfg = config(11);
    cfg.limits.request = 1024;
    let b = start(cfg, accept_all()).await;
    let b_peer = b.peer();
    let b_addr = b.addr.clone();
    let disconnects = serve(b.events);

    // A allows itself larger requests than B accepts, and smaller responses than B sends.
    let mut cfg = config(12);
    cfg.limits.request = 1 << 20;
    cfg.limits.response = 4096;
    cfg.request_timeout = Duration::from_secs(2);
    cfg.bootnodes = vec![b_addr.clone()];
    let a = start(cfg, accept_all()).await;
    let cfg = config(13);
    let c = start(cfg, accept_all()).await;
    wait_connected(&a.net, b_peer).await;

    assert_eq!(
        a.net.request(b_peer, b"hello".to_vec()).await.unwrap(),
        b"olleh"
    );
    // C knows no address for B: unreachable. Its own request limit is checked first.
    assert!(matches!(
        c.net.request(b_peer, vec![0; (1 << 20) + 1]).await,
        Err(NetworkError::TooLarge { .. })
    ));
    assert!(matches!(
        c.net.request(b_peer, b"x".to_vec()).await,
        Err(NetworkError::Unreachable(_))
    ));

    // Above B's request limit: B refuses it, A gets an error, nobody crashes.
    let err = a
        .net
        .request(b_peer, vec![7; 2048])
        .await
        .map(|r| r.len())
        .unwrap_err();
    assert!(matches!(err, NetworkError::Request(_)), "{err}");
    // Exactly at the limit is fine.
    let at_limit = a.net.request(b_peer, vec![3; 1024]).await.unwrap();
    assert_eq!(at_limit.len(), 1024);

    // B drops the reply: an error for A, the connection stays.
    let err = a
        .net
        .request(b_peer, b"drop".to_vec())
        .await
        .map(|r| r.len())
        .unwrap_err();
    assert!(matches!(err, NetworkError::Request(_)), "{err}");
    // B's response is above A's response limit: refused by A.
    let err = a
        .net
        .request(b_peer, b"big".to_vec())
        .await
        .map(|r| r.len())
        .unwrap_err();
    assert!(matches!(err, NetworkError::Request(_)), "{err}");
    // B answers after A's timeout.
    let err = a
        .net
        .request(b_peer, b"slow".to_vec())
        .await
        .map(|r| r.len())
        .unwrap_err();
    assert!(matches!(err, NetworkError::Timeout), "{err}");

    // B keeps serving A, and serves a new peer too.
    assert_eq!(a.net.request(b_peer, b"ab".to_vec()).await.unwrap(), b"ba");
    let mut cfg = config(14);
    cfg.bootnodes = vec![b_addr];
    let d = start(cfg, accept_all()).await;
    wait_connected(&d.net, b_peer).await;
    assert_eq!(
        d.net.request(b_peer, b"xyz".to_vec()).await.unwrap(),
        b"zyx"
    );
    // Requests to ourselves are refused without touching the network.
    assert!(matches!(
        d.net.request(d.peer(), b"me".to_vec()).await,
        Err(NetworkError::Unreachable(_))
    ));

    assert!(a.net.connected_peers().await.contains(&b_peer));
    assert!(
        !disconnects.lock().unwrap().contains(&a.peer()),
        "A was disconnected by B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_gossip_is_dropped_and_repeat_offenders_are_banned() {
    let validator = picky();
    let ban = Duration::from_secs(4);
    let mut cfg = config(21);
    cfg.shards = vec![S0];
    cfg.limits.tx = 1024;
    cfg.ban = BanPolicy {
        threshold: 3,
        window: Duration::from_secs(60),
        duration: ban,
    };
    let mut v = start(cfg, validator).await;

    let mut cfg = config(22);
    cfg.shards = vec![S0];
    cfg.bootnodes = vec![v.addr.clone()];
    let g = start(cfg, accept_all()).await;
    let mut cfg = config(23);
    cfg.shards = vec![S0];
    cfg.bootnodes = vec![v.addr.clone()];
    let m = start(cfg, accept_all()).await;
    wait_connected(&v.net, g.peer()).await;
    wait_connected(&v.net, m.peer()).await;

    publish_until_received(&g.net, Topic::Tx(S0), b"good-1", &mut [&mut v.events]).await;

    // From G: one message above V's tx limit (but within gossipsub's envelope allowance, so
    // the driver's own size check is what drops it), then a good one on the same connection.
    g.net
        .publish(Topic::Tx(S0), vec![b'x'; 1500])
        .await
        .unwrap();
    let (_, mut seen) =
        publish_until_received(&g.net, Topic::Tx(S0), b"good-2", &mut [&mut v.events]).await;

    // M keeps sending rejected messages until V disconnects it.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    loop {
        assert!(Instant::now() < deadline, "M was never banned");
        let _ = m
            .net
            .publish(Topic::Tx(S0), format!("bad-{sent}").into_bytes())
            .await;
        sent += 1;
        let batch = collect_for(&mut v.events, Duration::from_millis(100)).await;
        let banned = batch
            .iter()
            .any(|e| matches!(e, Event::PeerDisconnected(p) if *p == m.peer()));
        seen.extend(batch);
        if banned {
            break;
        }
    }
    let banned_at = Instant::now();
    assert!(sent > 3, "banned after {sent} messages, threshold is 3");

    // During the ban M keeps redialing (V is its bootnode) and is refused every time.
    let during = collect_for(&mut v.events, ban - Duration::from_millis(1500)).await;
    assert!(
        !during
            .iter()
            .any(|e| matches!(e, Event::PeerConnected(p) if *p == m.peer())),
        "banned peer reconnected during the ban: {during:?}"
    );
    assert!(!v.net.connected_peers().await.contains(&m.peer()));
    seen.extend(during);
    assert_eq!(
        gossip_on(&seen, |_, d| d.starts_with(b"bad")),
        0,
        "rejected gossip delivered"
    );
    assert_eq!(
        gossip_on(&seen, |_, d| d.len() == 1500),
        0,
        "oversized gossip delivered"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::PeerDisconnected(p) if *p == g.peer())),
        "well-behaved peer was disconnected"
    );
    assert!(v.net.connected_peers().await.contains(&g.peer()));
    // G's messages still get through.
    publish_until_received(&g.net, Topic::Tx(S0), b"good-3", &mut [&mut v.events]).await;

    // After the ban M may come back (its bootnode redial brings it).
    let back = timeout(WAIT, async {
        loop {
            match v.events.recv().await {
                Some(Event::PeerConnected(p)) if p == m.peer() => return Instant::now(),
                Some(_) => {}
                None => panic!("driver stopped"),
            }
        }
    })
    .await
    .expect("M reconnects after the ban");
    assert!(back.duration_since(banned_at) >= ban - Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_validator_does_not_stop_the_network() {
    let mut cfg = config(27);
    cfg.shards = vec![S0];
    let mut v = start(cfg, picky()).await;
    let mut cfg = config(28);
    cfg.shards = vec![S0];
    cfg.bootnodes = vec![v.addr.clone()];
    let p = start(cfg, accept_all()).await;
    wait_connected(&v.net, p.peer()).await;
    publish_until_received(
        &p.net,
        Topic::Consensus(S0),
        b"before",
        &mut [&mut v.events],
    )
    .await;
    p.net
        .publish(Topic::Consensus(S0), b"boom".to_vec())
        .await
        .unwrap();
    let (_, seen) =
        publish_until_received(&p.net, Topic::Consensus(S0), b"after", &mut [&mut v.events]).await;
    assert_eq!(gossip_on(&seen, |_, d| d == b"boom"), 0);
    assert!(!v.driver.is_finished());
    assert!(v.net.connected_peers().await.contains(&p.peer()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_chain_are_disconnected() {
    let mut v = start(config(29), accept_all()).await;
    let mut cfg = config(30);
    cfg.chain = "9999".into();
    cfg.bootnodes = vec![v.addr.clone()];
    let other = start(cfg, accept_all()).await;
    let other_peer = other.peer();
    let events = timeout(WAIT, async {
        let mut seen = Vec::new();
        loop {
            let ev = v.events.recv().await.expect("driver running");
            let done = matches!(ev, Event::PeerDisconnected(p) if p == other_peer);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    })
    .await
    .expect("peer of another chain is disconnected after identify");
    assert!(
        matches!(events.first(), Some(Event::PeerConnected(p)) if *p == other_peer),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalize_counts_towards_the_ban() {
    let mut cfg = config(25);
    cfg.ban = BanPolicy {
        threshold: 2,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(60),
    };
    let v = start(cfg, accept_all()).await;
    let mut cfg = config(26);
    cfg.bootnodes = vec![v.addr.clone()];
    let p = start(cfg, accept_all()).await;
    wait_connected(&v.net, p.peer()).await;
    v.net.penalize(p.peer(), "bad block");
    v.net.penalize(p.peer(), "bad block");
    sleep(Duration::from_millis(500)).await;
    assert!(
        v.net.connected_peers().await.contains(&p.peer()),
        "banned at the threshold"
    );
    v.net.penalize(p.peer(), "bad block");
    wait_disconnected(&v.net, p.peer()).await;
    // Requests to a banned peer fail at once.
    assert!(matches!(
        v.net.request(p.peer(), b"x".to_vec()).await,
        Err(NetworkError::Unreachable(_))
    ));
    sleep(Duration::from_secs(2)).await;
    assert!(!v.net.connected_peers().await.contains(&p.peer()));
}

// ---- garbage on the wire -------------------------------------------------------------------

/// A request-response codec that writes requests verbatim (no length prefix) and reads the raw
/// response bytes, to feed the node malformed frames over a real, authenticated stream.
#[derive(Clone, Default)]
struct RawCodec;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    fn read_request<'l0, 'l1, 'l2, 'at, T>(
        &'l0 mut self,
        _: &'l1 StreamProtocol,
        io: &'l2 mut T,
    ) -> BoxFuture<'at, io::Result<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send + 'at,
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            let mut v = Vec::new();
            io.take(1 << 20).read_to_end(&mut v).await?;
            Ok(v)
        })
    }

    fn read_response<'l0, 'l1, 'l2, 'at, T>(
        &'l0 mut self,
        _: &'l1 StreamProtocol,
        io: &'l2 mut T,
    ) -> BoxFuture<'at, io::Result<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send + 'at,
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            let mut v = Vec::new();
            io.take(1 << 20).read_to_end(&mut v).await?;
            if v.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(v)
        })
    }

    fn write_request<'l0, 'l1, 'l2, 'at, T>(
        &'l0 mut self,
        _: &'l1 StreamProtocol,
        io: &'l2 mut T,
        req: Vec<u8>,
    ) -> BoxFuture<'at, io::Result<()>>
    where
        T: AsyncWrite + Unpin + Send + 'at,
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        Box::pin(async move { io.write_all(&req).await })
    }

    fn write_response<'l0, 'l1, 'l2, 'at, T>(
        &'l0 mut self,
        _: &'l1 StreamProtocol,
        io: &'l2 mut T,
        res: Vec<u8>,
    ) -> BoxFuture<'at, io::Result<()>>
    where
        T: AsyncWrite + Unpin + Send + 'at,
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        Box::pin(async move { io.write_all(&res).await })
    }
}

/// Sends each payload verbatim on the node's request protocol from a fresh libp2p peer and
/// returns what came back for each (raw response bytes, or the failure).
async fn send_raw(
    peer: PeerId,
    addr: Multiaddr,
    payloads: Vec<Vec<u8>>,
) -> Vec<Result<Vec<u8>, String>> {
    let protocol = StreamProtocol::try_from_owned(format!("/tessera/{CHAIN}/req/1")).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<RawCodec>::new(
                [(protocol, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .unwrap()
        .build();
    let ids: Vec<_> = payloads
        .into_iter()
        .map(|p| {
            swarm
                .behaviour_mut()
                .send_request_with_addresses(&peer, p, vec![addr.clone()])
        })
        .collect();
    let mut results: Vec<Option<Result<Vec<u8>, String>>> = vec![None; ids.len()];
    timeout(WAIT, async {
        while results.iter().any(Option::is_none) {
            if let SwarmEvent::Behaviour(ev) = swarm.select_next_some().await {
                let (id, r) = match ev {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } => (request_id, Ok(response)),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } => (request_id, Err(error.to_string())),
                    _ => continue,
                };
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    results[i] = Some(r);
                }
            }
        }
    })
    .await
    .expect("raw requests resolve");
    results.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_does_not_hurt_the_node() {
    let mut cfg = config(31);
    cfg.limits.request = 4096;
    let Node {
        net: v_net,
        events,
        addr: v_addr,
        driver: v_driver,
    } = start(cfg, accept_all()).await;
    let v_peer = v_net.local_peer_id();
    let port = v_addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    serve(events);

    // Raw TCP: junk instead of a handshake, a plausible multistream header followed by junk,
    // and a connection that sends nothing and hangs up.
    let junk: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for payload in [
        junk.clone(),
        [b"\x13/multistream/1.0.0\n\x07/noise\n".as_slice(), &junk].concat(),
        Vec::new(),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = s.write_all(&payload).await;
        let mut buf = [0u8; 1024];
        let _ = timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    }

    // Authenticated peer, our protocol, malformed frames.
    let mut valid = 2u32.to_be_bytes().to_vec();
    valid.extend_from_slice(b"hi");
    let mut bare = v_addr.clone();
    bare.pop();
    let results = send_raw(
        v_peer,
        bare,
        vec![
            [&u32::MAX.to_be_bytes()[..], &junk].concat(), // length far above the limit
            4097u32.to_be_bytes().to_vec(),                // just above, no body
            vec![0, 0, 0, 10, 1, 2, 3],                    // truncated body
            vec![0, 0],                                    // truncated prefix
            Vec::new(),                                    // nothing at all
            valid,                                         // control: a well-formed frame
        ],
    )
    .await;
    for (i, r) in results[..5].iter().enumerate() {
        assert!(r.is_err(), "malformed request {i} got a response: {r:?}");
    }
    let mut expected = 2u32.to_be_bytes().to_vec();
    expected.extend_from_slice(b"ih");
    assert_eq!(results[5].as_deref(), Ok(&expected[..]), "{results:?}");

    // The node still serves well-behaved peers.
    let mut cfg = config(32);
    cfg.bootnodes = vec![v_addr];
    let g = start(cfg, accept_all()).await;
    wait_connected(&g.net, v_peer).await;
    assert_eq!(
        g.net.request(v_peer, b"ok?".to_vec()).await.unwrap(),
        b"?ko"
    );
    assert!(!v_driver.is_finished());
    drop(v_net);
}

// ---- identity and bootnodes ----------------------------------------------------------------

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_id_of_matches_a_running_node() {
    // RFC 8032, section 7.1, test 1: an independent source for the secret/public pair.
    let secret: [u8; 32] =
        unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .try_into()
            .unwrap();
    let public: [u8; 32] =
        unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .try_into()
            .unwrap();
    let mut cfg = config(0);
    cfg.secret = secret;
    let n = start(cfg, accept_all()).await;
    let expected = peer_id_of(public);
    assert_eq!(n.peer(), expected);
    assert_ne!(expected, peer_id_of([0x42; 32]));

    // A peer dialing `/p2p/<peer_id_of(public)>` gets through (the id is checked in the noise
    // handshake), so the derived id is what the network sees.
    let mut bare = n.addr.clone();
    bare.pop();
    let mut cfg = config(40);
    cfg.bootnodes = vec![bare.with(Protocol::P2p(expected))];
    let other = start(cfg, accept_all()).await;
    wait_connected(&other.net, expected).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peer_of_secret(secret: [u8; 32]) -> PeerId {
    let mut s = secret;
    let sk = identity::ed25519::SecretKey::try_from_bytes(&mut s).unwrap();
    identity::Keypair::from(identity::ed25519::Keypair::from(sk))
        .public()
        .to_peer_id()
}

async fn start_on_port(seed: u8, port: u16) -> Node {
    let mut cfg = config(seed);
    cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    // The port may still be held for a moment by the previous incarnation.
    for _ in 0..50 {
        match build(cfg.clone(), accept_all()) {
            Ok((net, driver, events)) => {
                let driver = tokio::spawn(driver.run());
                let addr = net
                    .listen_addrs()
                    .await
                    .first()
                    .expect("listening")
                    .clone()
                    .with(Protocol::P2p(net.local_peer_id()));
                return Node {
                    net,
                    events,
                    addr,
                    driver,
                };
            }
            Err(NetworkError::Listen { .. }) => sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("port {port} never became free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_before_their_bootnode_connect_when_it_comes_up() {
    let port = free_port();
    let b_seed = 51;
    let b_peer = peer_of_secret([b_seed; 32]);

    // One bootnode entry with the peer id, one by DNS name without it.
    let mut cfg = config(52);
    cfg.bootnodes = vec![format!("/ip4/127.0.0.1/tcp/{port}/p2p/{b_peer}")
        .parse()
        .unwrap()];
    let a1 = start(cfg, accept_all()).await;
    let mut cfg = config(53);
    cfg.bootnodes = vec![format!("/dns4/localhost/tcp/{port}").parse().unwrap()];
    let a2 = start(cfg, accept_all()).await;

    sleep(Duration::from_millis(1500)).await;
    assert!(a1.net.connected_peers().await.is_empty());
    assert!(a2.net.connected_peers().await.is_empty());

    let b = start_on_port(b_seed, port).await;
    assert_eq!(b.peer(), b_peer);
    wait_connected(&a1.net, b_peer).await;
    wait_connected(&a2.net, b_peer).await;

    // Restart the bootnode: both come back.
    b.net.shutdown().await;
    timeout(WAIT, b.driver)
        .await
        .expect("driver stops")
        .unwrap();
    wait_disconnected(&a1.net, b_peer).await;
    wait_disconnected(&a2.net, b_peer).await;
    let b = start_on_port(b_seed, port).await;
    wait_connected(&a1.net, b_peer).await;
    wait_connected(&a2.net, b_peer).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_address_in_the_bootnode_list_is_harmless() {
    // Compose setups often give every node the same bootnode list, including itself.
    let port = free_port();
    let seed = 61;
    let me = peer_of_secret([seed; 32]);
    let mut cfg = config(seed);
    cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    cfg.bootnodes = vec![
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{me}")
            .parse()
            .unwrap(),
    ];
    let n = start(cfg, accept_all()).await;
    sleep(Duration::from_secs(2)).await;
    assert!(n.net.connected_peers().await.is_empty());
    assert!(!n.driver.is_finished());
}
