//! A deterministic simulator of whole networks of engines, for tests and soak runs.
//!
//! One thread, one seeded PRNG, one discrete-event queue ordered by `(time, sequence)`: the
//! same [`Scenario`] always produces the same run and the same [`Report::trace`] (SHA-256 over
//! every delivered input and every output, in order). The network has per-message latency and
//! jitter, random loss and partitions that heal; nodes crash and restart from their persisted
//! WAL entries and last finalized block (all volatile state is lost); Byzantine [`Behavior`]s
//! are small wrappers around an honest engine's outputs. The application proposes
//! deterministic payloads and accepts every payload not marked invalid; block fetches are
//! answered from the asked peer's [`Engine::block`] after a network round trip.
//!
//! After every finalized block of an honest node, the simulator checks safety (no other block
//! was finalized at that height by any honest node, and the node's finalized blocks are
//! contiguous and parent-linked); after every message an honest node sends, it checks that the
//! node never signed two conflicting messages (the WAL rule across restarts); every evidence
//! output must verify and accuse a non-honest validator. At the end it checks liveness.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use crate::{
    Block, Certificate, Config, Digest, Engine, Evidence, Input, Message, Output, Proposal,
    Recovery, Timeouts, ValidatorIndex, ValidatorSet, Vote, VoteKind, WalEntry,
};

/// xoshiro256** seeded through splitmix64: small, fast and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut splitmix = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            state: [splitmix(), splitmix(), splitmix(), splitmix()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// `k` distinct members of `0..n`, in increasing order.
    pub fn pick(&mut self, n: usize, k: usize) -> Vec<ValidatorIndex> {
        let mut all: Vec<ValidatorIndex> = (0..n as ValidatorIndex).collect();
        for i in (1..all.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    }
}

/// How a simulated validator behaves. Everything but `Honest` counts towards `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol (its engine's outputs are carried out faithfully).
    Honest,
    /// Never starts: sends nothing, answers nothing.
    Silent,
    /// As leader, sends its proposal to some peers, a conflicting twin to others and both to
    /// the rest, and sends notarize votes for both to everyone.
    Equivocator,
    /// Sends each notarize vote together with one for a made-up block, each finalize vote
    /// together with a nullify vote, and each nullify vote with a finalize vote, in random
    /// order per peer.
    DoubleVoter,
    /// Sends its notarize and nullify votes to a fixed half of its peers only, never sends
    /// finalize votes and never passes certificates on.
    Withholder,
    /// Follows the protocol but, as leader, proposes payloads the application rejects.
    InvalidProposer,
    /// As leader, proposes on the grandparent of the block it should extend, which would fork
    /// off a notarized (possibly finalized) block.
    Forker,
}

/// Links between `side` and the other nodes are cut from `from_ms` until `heal_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// When the cut starts.
    pub from_ms: u64,
    /// When it heals.
    pub heal_ms: u64,
    /// One side of the cut.
    pub side: Vec<ValidatorIndex>,
}

/// A node crashes at `at_ms` and restarts at `restart_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// The crashing node.
    pub node: ValidatorIndex,
    /// Crash time.
    pub at_ms: u64,
    /// Restart time.
    pub restart_ms: u64,
}

/// The leader of `view` crashes in the middle of sending its proposal (after persisting it;
/// a random subset of peers gets it) and restarts `down_ms` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderCrash {
    /// The view whose leader crashes.
    pub view: u64,
    /// Downtime.
    pub down_ms: u64,
}

/// The progress required of a run: every honest node's finalized height must exceed by
/// `min_heights` the highest height any honest node had finalized at `from_ms`, by the end of
/// the run (`duration_ms`), so the bound is `duration_ms - from_ms` of simulated time. The run
/// stops as soon as this holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// When the faults are over (partitions healed, crashed nodes restarted).
    pub from_ms: u64,
    /// New heights every honest node must finalize after `from_ms`.
    pub min_heights: u64,
}

/// One simulated run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The seed of every random choice.
    pub seed: u64,
    /// Minimum one-way message delay.
    pub latency_ms: u64,
    /// Extra delay, uniform in `0..=jitter_ms`, per message.
    pub jitter_ms: u64,
    /// Probability of losing a message, in thousandths.
    pub loss_per_mille: u32,
    /// The engines' timers.
    pub timeouts: Timeouts,
    /// One behaviour per validator; the number of validators is its length.
    pub behaviors: Vec<Behavior>,
    /// Network partitions.
    pub partitions: Vec<Partition>,
    /// Crashes and restarts of given nodes.
    pub crashes: Vec<Crash>,
    /// Crashes of a view's leader while it sends its proposal.
    pub leader_crashes: Vec<LeaderCrash>,
    /// Simulated time the run lasts.
    pub duration_ms: u64,
    /// The progress to check at the end, if any.
    pub liveness: Option<Liveness>,
}

impl Scenario {
    /// `n` honest validators on a network of 20-50 ms delays without loss, for 3 simulated
    /// seconds, required to finalize 10 heights.
    pub fn new(n: usize, seed: u64) -> Scenario {
        Scenario {
            seed,
            latency_ms: 20,
            jitter_ms: 30,
            loss_per_mille: 0,
            timeouts: Timeouts {
                base_ms: 400,
                growth_percent: 150,
                max_ms: 3_000,
                retry_ms: 250,
            },
            behaviors: vec![Behavior::Honest; n],
            partitions: Vec::new(),
            crashes: Vec::new(),
            leader_crashes: Vec::new(),
            duration_ms: 3_000,
            liveness: Some(Liveness {
                from_ms: 0,
                min_heights: 10,
            }),
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// SHA-256 over every delivered input and every output, in order.
    pub trace: [u8; 32],
    /// Last finalized height per node.
    pub heights: Vec<u64>,
    /// View per node at the end (0 for nodes down or silent).
    pub views: Vec<u64>,
    /// Evidence reported by honest nodes (each verified).
    pub evidence: Vec<Evidence>,
    /// Inputs delivered to engines.
    pub delivered: u64,
    /// Messages lost to loss, partitions or down nodes.
    pub dropped: u64,
    /// When the liveness requirement was met (the end of the run), if there was one.
    pub live_at_ms: Option<u64>,
}

/// A broken property, with the simulated time it was found at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Two honest nodes finalized different blocks at one height.
    #[error("at {at_ms} ms node {node} finalized {got} at height {height}, but {expected} was finalized there")]
    Conflict {
        /// Simulated time.
        at_ms: u64,
        /// The node that finalized the second block.
        node: ValidatorIndex,
        /// The height.
        height: u64,
        /// The block finalized first.
        expected: Digest,
        /// The conflicting block.
        got: Digest,
    },
    /// A node's finalized blocks skip a height or do not link to their parent.
    #[error("at {at_ms} ms node {node} finalized height {height} out of order or off its chain")]
    Chain {
        /// Simulated time.
        at_ms: u64,
        /// The node.
        node: ValidatorIndex,
        /// The height of the offending block.
        height: u64,
    },
    /// A finalized block came with a certificate that does not name it.
    #[error("at {at_ms} ms node {node} finalized height {height} with a foreign certificate")]
    Certificate {
        /// Simulated time.
        at_ms: u64,
        /// The node.
        node: ValidatorIndex,
        /// The height.
        height: u64,
    },
    /// An honest node signed two conflicting messages for one view.
    #[error("at {at_ms} ms honest node {node} signed conflicting messages for view {view}")]
    Equivocation {
        /// Simulated time.
        at_ms: u64,
        /// The node.
        node: ValidatorIndex,
        /// The view.
        view: u64,
    },
    /// Evidence that does not verify or accuses an honest node.
    #[error("at {at_ms} ms node {node} reported bad evidence against {accused}")]
    Evidence {
        /// Simulated time.
        at_ms: u64,
        /// The reporting node.
        node: ValidatorIndex,
        /// The accused node.
        accused: ValidatorIndex,
    },
    /// An engine refused to (re)start.
    #[error("node {node} could not start: {reason}")]
    Start {
        /// The node.
        node: ValidatorIndex,
        /// The engine's error.
        reason: String,
    },
    /// An honest node made too little progress.
    #[error("liveness: node {node} is at height {height}, needed {needed} by {at_ms} ms")]
    Liveness {
        /// End of the run.
        at_ms: u64,
        /// The slow node.
        node: ValidatorIndex,
        /// Its height.
        height: u64,
        /// The required height.
        needed: u64,
    },
}

/// The namespace of every simulated network.
pub const NAMESPACE: &[u8] = b"tessera-sim";

/// The simulated validator's key: fixed per index.
pub fn signing_key(index: ValidatorIndex) -> SigningKey {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"tessera-sim-key")
        .chain_update(index.to_be_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&seed)
}

/// The genesis block of every simulated network.
pub fn genesis() -> Block {
    Block::genesis(b"tessera-sim-genesis".to_vec())
}

/// Payloads starting with this byte are rejected by the simulated application.
const INVALID: u8 = 0xff;

/// Runs `scenario` to its end and checks it.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    let mut sim = Sim::new(scenario)?;
    sim.run()?;
    Ok(sim.report())
}

#[derive(Debug)]
enum Event {
    /// Over the network: subject to partitions at arrival and to the node being up.
    Deliver {
        from: ValidatorIndex,
        to: ValidatorIndex,
        input: Input,
    },
    /// From the node's own application or timer: void if the node restarted since.
    Local {
        node: ValidatorIndex,
        incarnation: u64,
        input: Input,
    },
    Timer {
        node: ValidatorIndex,
        incarnation: u64,
        generation: u64,
        view: u64,
    },
    FetchRequest {
        from: ValidatorIndex,
        to: ValidatorIndex,
        digest: Digest,
    },
    Crash {
        node: ValidatorIndex,
        restart_ms: u64,
    },
    Restart {
        node: ValidatorIndex,
    },
    Snapshot,
}

#[derive(Debug)]
struct Node {
    behavior: Behavior,
    key: SigningKey,
    engine: Option<Engine>,
    incarnation: u64,
    timer_generation: u64,
    wal: Vec<WalEntry>,
    finalized: Block,
    finalized_digest: Digest,
    /// The driver's durable store of finalized blocks, which serves peers' fetches besides the
    /// engine (whose own copies do not survive a restart).
    store: BTreeMap<Digest, Block>,
    /// What the node signed, by (view, kind), across restarts: the sim's own record, not the
    /// node's.
    signed: BTreeMap<(u64, u8), Option<Digest>>,
    proposals: u64,
    /// Peers a withholder sends votes to.
    favoured: BTreeSet<ValidatorIndex>,
}

#[derive(Debug)]
struct Sim<'a> {
    scenario: &'a Scenario,
    config: Config,
    nodes: Vec<Node>,
    queue: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    now: u64,
    rng: Rng,
    trace: Sha256,
    finalized: BTreeMap<u64, Digest>,
    evidence: Vec<Evidence>,
    delivered: u64,
    dropped: u64,
    leader_crashes_done: BTreeSet<u64>,
    baseline: Option<u64>,
    live_at: Option<u64>,
}

impl<'a> Sim<'a> {
    fn new(scenario: &'a Scenario) -> Result<Sim<'a>, Violation> {
        let n = scenario.behaviors.len();
        let keys: Vec<SigningKey> = (0..n as ValidatorIndex).map(signing_key).collect();
        let validators = ValidatorSet::new(keys.iter().map(SigningKey::verifying_key).collect())
            .map_err(|e| Violation::Start {
                node: 0,
                reason: e.to_string(),
            })?;
        let config = Config {
            namespace: NAMESPACE.to_vec(),
            validators,
            timeouts: scenario.timeouts,
            // Small, so that pruning runs and lagging nodes also fetch from peers' stores.
            retain: 8,
        };
        let genesis = genesis();
        let genesis_digest = genesis.digest();
        let nodes = keys
            .into_iter()
            .zip(&scenario.behaviors)
            .enumerate()
            .map(|(i, (key, behavior))| {
                let others: Vec<ValidatorIndex> = (0..n as ValidatorIndex)
                    .filter(|j| *j as usize != i)
                    .collect();
                Node {
                    behavior: *behavior,
                    key,
                    engine: None,
                    incarnation: 0,
                    timer_generation: 0,
                    wal: Vec::new(),
                    finalized: genesis.clone(),
                    finalized_digest: genesis_digest,
                    store: BTreeMap::from([(genesis_digest, genesis.clone())]),
                    signed: BTreeMap::new(),
                    proposals: 0,
                    favoured: others[..others.len() / 2].iter().copied().collect(),
                }
            })
            .collect();
        let mut sim = Sim {
            scenario,
            config,
            nodes,
            queue: BTreeMap::new(),
            sequence: 0,
            now: 0,
            rng: Rng::new(scenario.seed),
            trace: Sha256::new(),
            finalized: BTreeMap::new(),
            evidence: Vec::new(),
            delivered: 0,
            dropped: 0,
            leader_crashes_done: BTreeSet::new(),
            baseline: None,
            live_at: None,
        };
        for crash in &scenario.crashes {
            sim.schedule(
                crash.at_ms,
                Event::Crash {
                    node: crash.node,
                    restart_ms: crash.restart_ms,
                },
            );
        }
        if let Some(liveness) = scenario.liveness {
            sim.schedule(liveness.from_ms, Event::Snapshot);
        }
        for node in 0..n as ValidatorIndex {
            if sim.nodes[node as usize].behavior != Behavior::Silent {
                sim.start(node)?;
            }
        }
        Ok(sim)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), event);
    }

    fn honest(&self, node: ValidatorIndex) -> bool {
        self.nodes[node as usize].behavior == Behavior::Honest
    }

    fn start(&mut self, node: ValidatorIndex) -> Result<(), Violation> {
        let state = &mut self.nodes[node as usize];
        state.incarnation += 1;
        let recovery = Recovery {
            finalized: state.finalized.clone(),
            wal: state.wal.clone(),
        };
        let (engine, outputs) = Engine::new(self.config.clone(), state.key.clone(), recovery)
            .map_err(|e| Violation::Start {
                node,
                reason: e.to_string(),
            })?;
        state.engine = Some(engine);
        self.outputs(node, outputs)
    }

    fn run(&mut self) -> Result<(), Violation> {
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > self.scenario.duration_ms {
                break;
            }
            self.now = at;
            self.event(event)?;
            if self.live() {
                self.live_at = Some(self.now);
                return Ok(());
            }
        }
        self.now = self.scenario.duration_ms;
        self.check_liveness()
    }

    /// The height every honest node must reach, once the baseline is taken.
    fn needed(&self) -> Option<u64> {
        Some(self.baseline? + self.scenario.liveness?.min_heights)
    }

    fn live(&self) -> bool {
        self.needed().is_some_and(|needed| {
            self.nodes
                .iter()
                .all(|n| n.behavior != Behavior::Honest || n.finalized.height >= needed)
        })
    }

    fn event(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver { from, to, input } => {
                if self.cut(from, to) {
                    self.dropped += 1;
                    return Ok(());
                }
                self.input(to, input)
            }
            Event::Local {
                node,
                incarnation,
                input,
            } => {
                if self.nodes[node as usize].incarnation != incarnation {
                    return Ok(());
                }
                self.input(node, input)
            }
            Event::Timer {
                node,
                incarnation,
                generation,
                view,
            } => {
                let state = &self.nodes[node as usize];
                if state.incarnation != incarnation || state.timer_generation != generation {
                    return Ok(());
                }
                self.input(node, Input::Timeout { view })
            }
            Event::FetchRequest { from, to, digest } => {
                if self.cut(from, to) {
                    self.dropped += 1;
                    return Ok(());
                }
                let peer = &self.nodes[to as usize];
                let block = peer
                    .engine
                    .as_ref()
                    .and_then(|e| e.block(&digest).or_else(|| peer.store.get(&digest)))
                    .cloned();
                if let Some(block) = block {
                    self.send(to, from, Input::Fetched { block });
                }
                Ok(())
            }
            Event::Crash { node, restart_ms } => {
                self.crash(node, restart_ms);
                Ok(())
            }
            Event::Restart { node } => self.start(node),
            Event::Snapshot => {
                self.baseline = Some(self.max_honest_height());
                Ok(())
            }
        }
    }

    fn crash(&mut self, node: ValidatorIndex, restart_ms: u64) {
        let state = &mut self.nodes[node as usize];
        if state.engine.take().is_some() {
            // Timers and application answers of the dead incarnation must not reach the next.
            state.incarnation += 1;
            self.schedule(restart_ms.max(self.now), Event::Restart { node });
        }
    }

    fn input(&mut self, node: ValidatorIndex, input: Input) -> Result<(), Violation> {
        let Some(engine) = self.nodes[node as usize].engine.as_mut() else {
            self.dropped += 1;
            return Ok(());
        };
        self.trace.update(self.now.to_be_bytes());
        self.trace.update(node.to_be_bytes());
        trace_input(&mut self.trace, &input);
        self.delivered += 1;
        let outputs = engine.handle(input);
        self.outputs(node, outputs)
    }

    /// Whether the link between two nodes is cut now.
    fn cut(&self, a: ValidatorIndex, b: ValidatorIndex) -> bool {
        self.scenario.partitions.iter().any(|p| {
            p.from_ms <= self.now
                && self.now < p.heal_ms
                && p.side.contains(&a) != p.side.contains(&b)
        })
    }

    /// Sends over the network: lost with the scenario's probability or when the link is cut at
    /// either end of the trip.
    fn send(&mut self, from: ValidatorIndex, to: ValidatorIndex, input: Input) {
        if self.cut(from, to) || self.rng.chance(self.scenario.loss_per_mille) {
            self.dropped += 1;
            return;
        }
        let delay = self.delay();
        self.schedule(self.now + delay, Event::Deliver { from, to, input });
    }

    fn delay(&mut self) -> u64 {
        self.scenario.latency_ms.max(1) + self.rng.below(self.scenario.jitter_ms + 1)
    }

    fn others(&self, node: ValidatorIndex) -> Vec<ValidatorIndex> {
        (0..self.nodes.len() as ValidatorIndex)
            .filter(|j| *j != node)
            .collect()
    }

    fn outputs(&mut self, node: ValidatorIndex, outputs: Vec<Output>) -> Result<(), Violation> {
        for output in outputs {
            self.trace.update(node.to_be_bytes());
            trace_output(&mut self.trace, &output);
            match output {
                Output::Persist(entry) => self.nodes[node as usize].wal.push(entry),
                Output::Broadcast(message) => {
                    if self.broadcast(node, message)? {
                        // The node crashed half-way through this batch.
                        return Ok(());
                    }
                }
                Output::SetTimer { view, after_ms } => {
                    let state = &mut self.nodes[node as usize];
                    state.timer_generation += 1;
                    let event = Event::Timer {
                        node,
                        incarnation: state.incarnation,
                        generation: state.timer_generation,
                        view,
                    };
                    self.schedule(self.now + after_ms, event);
                }
                Output::Propose { view, parent, .. } => {
                    let state = &mut self.nodes[node as usize];
                    state.proposals += 1;
                    let mut payload = Vec::with_capacity(21);
                    payload.push(if state.behavior == Behavior::InvalidProposer {
                        INVALID
                    } else {
                        0
                    });
                    payload.extend_from_slice(&node.to_be_bytes());
                    payload.extend_from_slice(&view.to_be_bytes());
                    payload.extend_from_slice(&state.proposals.to_be_bytes());
                    let input = Input::Proposal {
                        view,
                        parent,
                        payload,
                    };
                    self.local(node, input);
                }
                Output::Verify { block, .. } => {
                    let input = Input::Verified {
                        digest: block.digest(),
                        valid: block.payload.first() != Some(&INVALID),
                    };
                    self.local(node, input);
                }
                Output::Fetch { digest, peers } => {
                    let peers = if peers.is_empty() {
                        let others = self.others(node);
                        vec![others[self.rng.below(others.len() as u64) as usize]]
                    } else {
                        peers
                    };
                    let Some(&peer) = peers.first() else {
                        continue;
                    };
                    if self.cut(node, peer) || self.rng.chance(self.scenario.loss_per_mille) {
                        self.dropped += 1;
                        continue;
                    }
                    let delay = self.delay();
                    let request = Event::FetchRequest {
                        from: node,
                        to: peer,
                        digest,
                    };
                    self.schedule(self.now + delay, request);
                }
                Output::Finalized { block, certificate } => {
                    self.finalized_block(node, block, certificate)?;
                }
                Output::Evidence(evidence) => self.reported(node, evidence)?,
            }
        }
        Ok(())
    }

    /// An answer of the node's own application, a few milliseconds later.
    fn local(&mut self, node: ValidatorIndex, input: Input) {
        let delay = 1 + self.rng.below(3);
        let incarnation = self.nodes[node as usize].incarnation;
        self.schedule(
            self.now + delay,
            Event::Local {
                node,
                incarnation,
                input,
            },
        );
    }

    fn finalized_block(
        &mut self,
        node: ValidatorIndex,
        block: Block,
        certificate: Option<Certificate>,
    ) -> Result<(), Violation> {
        let digest = block.digest();
        let height = block.height;
        let honest = self.honest(node);
        let state = &mut self.nodes[node as usize];
        if honest {
            if height != state.finalized.height + 1 || block.parent != state.finalized_digest {
                return Err(Violation::Chain {
                    at_ms: self.now,
                    node,
                    height,
                });
            }
            if let Some(cert) = &certificate {
                let names = cert.kind
                    == (VoteKind::Finalize {
                        view: block.view,
                        digest,
                    });
                if !names || cert.signatures.len() < self.config.validators.quorum() {
                    return Err(Violation::Certificate {
                        at_ms: self.now,
                        node,
                        height,
                    });
                }
            }
            match self.finalized.get(&height) {
                Some(expected) if *expected != digest => {
                    return Err(Violation::Conflict {
                        at_ms: self.now,
                        node,
                        height,
                        expected: *expected,
                        got: digest,
                    });
                }
                Some(_) => {}
                None => {
                    self.finalized.insert(height, digest);
                }
            }
        }
        // The driver's duty: the WAL below the finalized view is no longer needed.
        let view = block.view;
        state.wal.retain(|entry| entry.view() > view);
        state.store.insert(digest, block.clone());
        state.finalized = block;
        state.finalized_digest = digest;
        Ok(())
    }

    fn reported(&mut self, node: ValidatorIndex, evidence: Evidence) -> Result<(), Violation> {
        let accused = evidence.signer;
        let valid = evidence
            .verify(&self.config.namespace, &self.config.validators)
            .is_ok();
        if !valid || (accused as usize) >= self.nodes.len() || self.honest(accused) {
            return Err(Violation::Evidence {
                at_ms: self.now,
                node,
                accused,
            });
        }
        if self.honest(node) {
            self.evidence.push(evidence);
        }
        Ok(())
    }

    /// Records what an honest node signs and fails on a conflict with anything it signed
    /// before, in this life or an earlier one.
    fn check_signed(&mut self, node: ValidatorIndex, message: &Message) -> Result<(), Violation> {
        let (view, class, digest) = match message {
            Message::Propose(p) => (p.block.view, 0, Some(p.block.digest())),
            Message::Vote(v) => {
                let class = match v.kind {
                    VoteKind::Notarize { .. } => 1,
                    VoteKind::Nullify { .. } => 2,
                    VoteKind::Finalize { .. } => 3,
                };
                (v.kind.view(), class, v.kind.digest())
            }
            Message::Certificate(_) => return Ok(()),
        };
        let signed = &mut self.nodes[node as usize].signed;
        let conflict = signed.get(&(view, class)).is_some_and(|d| *d != digest)
            || (class == 2 && signed.contains_key(&(view, 3)))
            || (class == 3 && signed.contains_key(&(view, 2)));
        if conflict {
            return Err(Violation::Equivocation {
                at_ms: self.now,
                node,
                view,
            });
        }
        signed.insert((view, class), digest);
        Ok(())
    }

    /// Sends a node's broadcast according to its behaviour. Returns whether the node crashed
    /// while sending.
    fn broadcast(&mut self, node: ValidatorIndex, message: Message) -> Result<bool, Violation> {
        let behavior = self.nodes[node as usize].behavior;
        if behavior == Behavior::Honest {
            self.check_signed(node, &message)?;
        }
        let others = self.others(node);
        match (behavior, &message) {
            (Behavior::Honest, Message::Propose(p)) => {
                let view = p.block.view;
                let crash = self
                    .scenario
                    .leader_crashes
                    .iter()
                    .find(|c| c.view == view)
                    .map(|c| c.down_ms);
                if let Some(down_ms) = crash {
                    if self.leader_crashes_done.insert(view) {
                        for peer in others {
                            if self.rng.chance(500) {
                                self.send(node, peer, Input::Message(message.clone()));
                            }
                        }
                        self.crash(node, self.now + down_ms);
                        return Ok(true);
                    }
                }
                self.send_all(node, &others, &message);
            }
            (Behavior::Withholder, Message::Vote(vote)) => {
                if !matches!(vote.kind, VoteKind::Finalize { .. }) {
                    let favoured: Vec<_> =
                        self.nodes[node as usize].favoured.iter().copied().collect();
                    self.send_all(node, &favoured, &message);
                }
            }
            (Behavior::Withholder, Message::Certificate(_)) => {}
            (Behavior::Equivocator, Message::Propose(p)) => {
                let mut block = p.block.clone();
                block.payload.push(0xee);
                let twin = Message::Propose(Proposal::sign(
                    block,
                    NAMESPACE,
                    &self.nodes[node as usize].key,
                ));
                for peer in others {
                    match self.rng.below(3) {
                        0 => self.send(node, peer, Input::Message(message.clone())),
                        1 => self.send(node, peer, Input::Message(twin.clone())),
                        _ => {
                            self.send(node, peer, Input::Message(twin.clone()));
                            self.send(node, peer, Input::Message(message.clone()));
                        }
                    }
                }
            }
            (Behavior::Forker, Message::Propose(p)) => {
                let state = &self.nodes[node as usize];
                let parent = state.engine.as_ref().and_then(|e| e.block(&p.block.parent));
                let fork = match parent {
                    Some(parent) if parent.height > 0 => {
                        let block = Block {
                            view: p.block.view,
                            height: parent.height,
                            parent: parent.parent,
                            payload: p.block.payload.clone(),
                        };
                        Message::Propose(Proposal::sign(block, NAMESPACE, &state.key))
                    }
                    _ => message.clone(),
                };
                self.send_all(node, &others, &fork);
            }
            (Behavior::Equivocator, Message::Vote(vote)) => {
                // Vote for the twin as well wherever the twin may have landed.
                if let VoteKind::Notarize { view, .. } = vote.kind {
                    let twin = self.twin_digest(node, view);
                    self.double(
                        node,
                        &others,
                        vote,
                        twin.map(|digest| VoteKind::Notarize { view, digest }),
                    );
                } else {
                    self.send_all(node, &others, &message);
                }
            }
            (Behavior::DoubleVoter, Message::Vote(vote)) => {
                let view = vote.kind.view();
                let made_up = Digest::from_slice(
                    &Sha256::new()
                        .chain_update(b"made-up")
                        .chain_update(view.to_be_bytes())
                        .finalize(),
                );
                let extra = match vote.kind {
                    VoteKind::Notarize { .. } => VoteKind::Notarize {
                        view,
                        digest: made_up,
                    },
                    VoteKind::Finalize { .. } => VoteKind::Nullify { view },
                    VoteKind::Nullify { .. } => VoteKind::Finalize {
                        view,
                        digest: made_up,
                    },
                };
                self.double(node, &others, vote, Some(extra));
            }
            _ => self.send_all(node, &others, &message),
        }
        Ok(false)
    }

    /// The digest of the twin an equivocating leader made for `view`, if it led it.
    fn twin_digest(&self, node: ValidatorIndex, view: u64) -> Option<Digest> {
        // The engine's own proposal is in its WAL; the twin differs by one payload byte.
        let mut twin = self.nodes[node as usize].wal.iter().find_map(|e| match e {
            WalEntry::Proposed(p) if p.block.view == view => Some(p.block.clone()),
            _ => None,
        })?;
        twin.payload.push(0xee);
        Some(twin.digest())
    }

    /// Sends `vote` and, if given, a second vote of `extra` signed by the same node, to every
    /// peer in random order.
    fn double(
        &mut self,
        node: ValidatorIndex,
        peers: &[ValidatorIndex],
        vote: &Vote,
        extra: Option<VoteKind>,
    ) {
        let first = Input::Message(Message::Vote(vote.clone()));
        let Some(extra) = extra else {
            for peer in peers {
                self.send(node, *peer, first.clone());
            }
            return;
        };
        let second = Input::Message(Message::Vote(Vote::sign(
            extra,
            node,
            NAMESPACE,
            &self.nodes[node as usize].key,
        )));
        for peer in peers {
            if self.rng.chance(500) {
                self.send(node, *peer, first.clone());
                self.send(node, *peer, second.clone());
            } else {
                self.send(node, *peer, second.clone());
                self.send(node, *peer, first.clone());
            }
        }
    }

    fn send_all(&mut self, node: ValidatorIndex, peers: &[ValidatorIndex], message: &Message) {
        for peer in peers {
            self.send(node, *peer, Input::Message(message.clone()));
        }
    }

    fn max_honest_height(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.behavior == Behavior::Honest)
            .map(|n| n.finalized.height)
            .max()
            .unwrap_or(0)
    }

    fn check_liveness(&self) -> Result<(), Violation> {
        let Some(liveness) = self.scenario.liveness else {
            return Ok(());
        };
        let needed = self.baseline.unwrap_or(0) + liveness.min_heights;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.behavior == Behavior::Honest && node.finalized.height < needed {
                return Err(Violation::Liveness {
                    at_ms: self.now,
                    node: i as ValidatorIndex,
                    height: node.finalized.height,
                    needed,
                });
            }
        }
        Ok(())
    }

    fn report(self) -> Report {
        Report {
            trace: self.trace.finalize().into(),
            heights: self.nodes.iter().map(|n| n.finalized.height).collect(),
            views: self
                .nodes
                .iter()
                .map(|n| n.engine.as_ref().map_or(0, Engine::view))
                .collect(),
            evidence: self.evidence,
            delivered: self.delivered,
            dropped: self.dropped,
            live_at_ms: self.live_at,
        }
    }
}

// The trace feeds every field of inputs and outputs to the hash by hand: going through the
// serde encoding costs a third of a simulation's time in unoptimised test builds.

fn trace_input(h: &mut Sha256, input: &Input) {
    match input {
        Input::Message(m) => {
            h.update([0]);
            trace_message(h, m);
        }
        Input::Timeout { view } => {
            h.update([1]);
            h.update(view.to_be_bytes());
        }
        Input::Proposal {
            view,
            parent,
            payload,
        } => {
            h.update([2]);
            h.update(view.to_be_bytes());
            h.update(parent);
            trace_bytes(h, payload);
        }
        Input::Verified { digest, valid } => {
            h.update([3, u8::from(*valid)]);
            h.update(digest);
        }
        Input::Fetched { block } => {
            h.update([4]);
            trace_block(h, block);
        }
    }
}

fn trace_output(h: &mut Sha256, output: &Output) {
    match output {
        Output::Persist(WalEntry::Voted(vote)) => {
            h.update([10]);
            trace_vote(h, vote);
        }
        Output::Persist(WalEntry::Proposed(proposal)) => {
            h.update([11]);
            trace_block(h, &proposal.block);
            h.update(proposal.signature.to_bytes());
        }
        Output::Persist(WalEntry::Certified(cert)) => {
            h.update([19]);
            trace_certificate(h, cert);
        }
        Output::Broadcast(m) => {
            h.update([12]);
            trace_message(h, m);
        }
        Output::SetTimer { view, after_ms } => {
            h.update([13]);
            h.update(view.to_be_bytes());
            h.update(after_ms.to_be_bytes());
        }
        Output::Propose {
            view,
            height,
            parent,
            ancestry,
        } => {
            h.update([14]);
            h.update(view.to_be_bytes());
            h.update(height.to_be_bytes());
            h.update(parent);
            trace_blocks(h, ancestry);
        }
        Output::Verify { block, ancestry } => {
            h.update([15]);
            trace_block(h, block);
            trace_blocks(h, ancestry);
        }
        Output::Fetch { digest, peers } => {
            h.update([16]);
            h.update(digest);
            h.update((peers.len() as u64).to_be_bytes());
            for peer in peers {
                h.update(peer.to_be_bytes());
            }
        }
        Output::Finalized { block, certificate } => {
            h.update([17]);
            trace_block(h, block);
            match certificate {
                Some(cert) => {
                    h.update([1]);
                    trace_certificate(h, cert);
                }
                None => h.update([0]),
            }
        }
        Output::Evidence(evidence) => {
            h.update([18]);
            h.update(evidence.signer.to_be_bytes());
            h.update(evidence.view.to_be_bytes());
            trace_message(h, &evidence.first);
            trace_message(h, &evidence.second);
        }
    }
}

fn trace_message(h: &mut Sha256, message: &Message) {
    match message {
        Message::Propose(p) => {
            h.update([0]);
            trace_block(h, &p.block);
            h.update(p.signature.to_bytes());
        }
        Message::Vote(vote) => {
            h.update([1]);
            trace_vote(h, vote);
        }
        Message::Certificate(cert) => {
            h.update([2]);
            trace_certificate(h, cert);
        }
    }
}

fn trace_kind(h: &mut Sha256, kind: &VoteKind) {
    let tag = match kind {
        VoteKind::Notarize { .. } => 0,
        VoteKind::Nullify { .. } => 1,
        VoteKind::Finalize { .. } => 2,
    };
    h.update([tag]);
    h.update(kind.view().to_be_bytes());
    if let Some(digest) = kind.digest() {
        h.update(digest);
    }
}

fn trace_vote(h: &mut Sha256, vote: &Vote) {
    trace_kind(h, &vote.kind);
    h.update(vote.signer.to_be_bytes());
    h.update(vote.signature.to_bytes());
}

fn trace_certificate(h: &mut Sha256, cert: &Certificate) {
    trace_kind(h, &cert.kind);
    h.update((cert.signatures.len() as u64).to_be_bytes());
    for (signer, signature) in &cert.signatures {
        h.update(signer.to_be_bytes());
        h.update(signature.to_bytes());
    }
}

fn trace_block(h: &mut Sha256, block: &Block) {
    h.update(block.view.to_be_bytes());
    h.update(block.height.to_be_bytes());
    h.update(block.parent);
    trace_bytes(h, &block.payload);
}

fn trace_blocks(h: &mut Sha256, blocks: &[Block]) {
    h.update((blocks.len() as u64).to_be_bytes());
    for block in blocks {
        trace_block(h, block);
    }
}

fn trace_bytes(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(height: u64, parent: &Block, payload: u8) -> Block {
        Block {
            view: height,
            height,
            parent: parent.digest(),
            payload: vec![payload],
        }
    }

    // The checkers themselves must be able to fail.
    #[test]
    fn checkers_catch_violations() {
        let scenario = Scenario::new(4, 1);
        let mut sim = Sim::new(&scenario).unwrap();
        let b1 = block(1, &genesis(), 1);
        let other = block(1, &genesis(), 2);
        sim.finalized_block(0, b1.clone(), None).unwrap();
        assert!(matches!(
            sim.finalized_block(1, other, None),
            Err(Violation::Conflict { height: 1, .. })
        ));
        let b3 = block(3, &block(2, &b1, 1), 1);
        assert!(matches!(
            sim.finalized_block(0, b3, None),
            Err(Violation::Chain { height: 3, .. })
        ));
        let key = signing_key(2);
        let vote = |kind| Message::Vote(Vote::sign(kind, 2, NAMESPACE, &key));
        sim.check_signed(2, &vote(VoteKind::Nullify { view: 5 }))
            .unwrap();
        let finalize = VoteKind::Finalize {
            view: 5,
            digest: b1.digest(),
        };
        assert!(matches!(
            sim.check_signed(2, &vote(finalize)),
            Err(Violation::Equivocation { view: 5, .. })
        ));
        let honest_accused = Evidence {
            signer: 2,
            view: 5,
            first: vote(VoteKind::Nullify { view: 5 }),
            second: vote(finalize),
        };
        assert!(matches!(
            sim.reported(0, honest_accused),
            Err(Violation::Evidence { accused: 2, .. })
        ));
    }

    #[test]
    fn rng_is_fixed_and_bounded() {
        let mut rng = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(42);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, {
            let mut other = Rng::new(43);
            (0..3).map(|_| other.next_u64()).collect::<Vec<_>>()
        });
        assert!((0..1_000).all(|_| rng.below(7) < 7));
        assert_eq!(rng.below(0), 0);
        let picked = rng.pick(7, 3);
        assert_eq!(picked.len(), 3);
        assert!(picked.windows(2).all(|w| w[0] < w[1]) && picked.iter().all(|i| *i < 7));
    }
}
