//! The Simplex state machine: inputs in, outputs out, no IO.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, SigningKey};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ConsensusError;
use crate::types::{
    verify_same_message, Block, Certificate, Digest, Evidence, Message, Proposal, ValidatorIndex,
    Vote, VoteKind, WalEntry,
};

/// Votes and proposals further than this many views ahead of the engine's view are dropped
/// unseen: a Byzantine validator could otherwise make every node store votes for any number of
/// future views. Certificates are exempt (they carry a quorum, so they are never spam), and a
/// lagging node catches up from them.
pub const MAX_VIEWS_AHEAD: u64 = 256;

/// What the engine restarts from: the durable state its driver kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last block the driver committed from an [`Output::Finalized`]; the genesis block at
    /// first start.
    pub finalized: Block,
    /// Every [`Output::Persist`] entry made durable since (entries at or below the finalized
    /// block's view may be pruned by the driver; the engine ignores them).
    pub wal: Vec<WalEntry>,
}

/// Something that happened to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A message from the network, not yet verified: the engine verifies it.
    Message(Message),
    /// The timer set by the latest [`Output::SetTimer`] fired.
    Timeout {
        /// The view the timer was set for.
        view: u64,
    },
    /// The application's payload, answering [`Output::Propose`]. Ignored when stale.
    Proposal {
        /// The view of the request.
        view: u64,
        /// The parent named in the request.
        parent: Digest,
        /// The block's payload.
        payload: Vec<u8>,
    },
    /// The application's verdict on a block, answering [`Output::Verify`].
    Verified {
        /// The checked block.
        digest: Digest,
        /// Whether the payload is valid on top of the given ancestry.
        valid: bool,
    },
    /// A block a peer returned, answering [`Output::Fetch`]. Accepted only when its digest was
    /// requested.
    Fetched {
        /// The block.
        block: Block,
    },
}

/// Something the driver must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Make this entry durable before acting on any later output of the same batch.
    Persist(WalEntry),
    /// Send to every other validator.
    Broadcast(Message),
    /// (Re)arm the engine's single timer, replacing any pending one; on expiry, feed
    /// [`Input::Timeout`] with this view.
    SetTimer {
        /// The view the timer belongs to.
        view: u64,
        /// Delay from now.
        after_ms: u64,
    },
    /// This node leads `view`: build a payload on top of `parent` and answer with
    /// [`Input::Proposal`].
    Propose {
        /// The view to propose in.
        view: u64,
        /// The height of the block to build.
        height: u64,
        /// The block to build on.
        parent: Digest,
        /// Un-finalized ancestors from just above the last finalized block up to and including
        /// `parent`, in height order; empty when `parent` is the last finalized block.
        ancestry: Vec<Block>,
    },
    /// Check the payload of `block` on top of `ancestry` (same convention as in `Propose`, for
    /// the block's parent) and answer with [`Input::Verified`].
    Verify {
        /// The proposed block.
        block: Block,
        /// Its un-finalized ancestors, in height order.
        ancestry: Vec<Block>,
    },
    /// Ask a peer for the block with this digest and feed the answer as [`Input::Fetched`].
    /// Repeated while the block is missing.
    Fetch {
        /// The wanted block.
        digest: Digest,
        /// Validators likely to have it (its proposer, a certificate's signers), best first:
        /// ask the first. Each repetition rotates the list, so asking the first every time
        /// tries them all in turn. Empty when there is no better guess than anyone.
        peers: Vec<ValidatorIndex>,
    },
    /// `block` is final. Emitted in height order, each height once, starting just above the
    /// recovered finalized block.
    Finalized {
        /// The final block.
        block: Block,
        /// The finalization certificate naming this block, or `None` for an ancestor that
        /// became final with a later block.
        certificate: Option<Certificate>,
    },
    /// A validator signed two conflicting messages; the second one was ignored.
    Evidence(Evidence),
}

/// How far the application's check of a view's proposal got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Check {
    #[default]
    Unchecked,
    Pending,
    Valid,
    Invalid,
}

/// Evidence classes, so each misbehaviour of a signer in a view is reported once.
const EVIDENCE_PROPOSAL: u8 = 0;
const EVIDENCE_NOTARIZE: u8 = 1;
const EVIDENCE_FINALIZE: u8 = 2;
const EVIDENCE_NULLIFY_FINALIZE: u8 = 3;

/// What this node itself signed in a view.
#[derive(Clone, Debug, Default)]
struct Mine {
    proposal: Option<Proposal>,
    notarize: Option<Vote>,
    nullify: Option<Vote>,
    finalize: Option<Vote>,
}

/// Everything known about one view.
#[derive(Clone, Debug, Default)]
struct ViewState {
    /// The first correctly signed proposal of the view's leader.
    proposal: Option<Proposal>,
    proposal_digest: Option<Digest>,
    check: Check,
    /// The first vote of each kind per signer; a conflicting second one is evidence.
    notarize: BTreeMap<ValidatorIndex, (Digest, Signature)>,
    nullify: BTreeMap<ValidatorIndex, Signature>,
    finalize: BTreeMap<ValidatorIndex, (Digest, Signature)>,
    /// Votes not verified yet, at most one per `(slot, signer)`; see [`Engine::tally`].
    pending: BTreeMap<(u8, ValidatorIndex), Vote>,
    notarization: Option<Certificate>,
    nullification: Option<Certificate>,
    finalization: Option<Certificate>,
    mine: Mine,
    /// The parent asked of the application, once asked.
    propose_requested: Option<Digest>,
    reported: BTreeSet<(ValidatorIndex, u8)>,
}

impl ViewState {
    /// The block this view is known to have notarized (a finalization implies a notarization).
    fn notarized(&self) -> Option<Digest> {
        self.notarization
            .as_ref()
            .or(self.finalization.as_ref())
            .and_then(|c| c.kind.digest())
    }

    /// Whether some certificate lets a node leave this view.
    fn ended(&self) -> bool {
        self.notarization.is_some() || self.nullification.is_some() || self.finalization.is_some()
    }

    /// Whether `signer` has a verified vote in the pending slot of `kind`.
    fn verified_in_slot(&self, kind: &VoteKind, signer: ValidatorIndex) -> bool {
        match kind {
            VoteKind::Notarize { .. } => self.notarize.contains_key(&signer),
            VoteKind::Nullify { .. } | VoteKind::Finalize { .. } => {
                self.nullify.contains_key(&signer) || self.finalize.contains_key(&signer)
            }
        }
    }

    /// Verified votes for exactly `kind`.
    fn count(&self, kind: &VoteKind) -> usize {
        match kind {
            VoteKind::Notarize { digest, .. } => {
                self.notarize.values().filter(|(d, _)| d == digest).count()
            }
            VoteKind::Nullify { .. } => self.nullify.len(),
            VoteKind::Finalize { digest, .. } => {
                self.finalize.values().filter(|(d, _)| d == digest).count()
            }
        }
    }

    /// Whether the certificate `kind`'s votes would form is held (for another digest too:
    /// one per view is all that matters).
    fn certified(&self, kind: &VoteKind) -> bool {
        match kind {
            VoteKind::Notarize { .. } => self.notarization.is_some(),
            VoteKind::Nullify { .. } => self.nullification.is_some(),
            VoteKind::Finalize { .. } => self.finalization.is_some(),
        }
    }

    fn holds(&self, kind: &VoteKind, signer: ValidatorIndex, signature: &Signature) -> bool {
        match kind {
            VoteKind::Notarize { digest, .. } => {
                self.notarize.get(&signer) == Some(&(*digest, *signature))
            }
            VoteKind::Nullify { .. } => self.nullify.get(&signer) == Some(signature),
            VoteKind::Finalize { digest, .. } => {
                self.finalize.get(&signer) == Some(&(*digest, *signature))
            }
        }
    }
}

/// A requested block.
#[derive(Clone, Debug)]
struct Want {
    /// In order of preference, without this node.
    peers: Vec<ValidatorIndex>,
    /// Requests made so far: each repetition rotates `peers` by one.
    attempts: usize,
    /// The view whose progress needs the block; the request is dropped once that view is final.
    context: u64,
    /// The engine's count of handled inputs when last requested, so that one input asks at
    /// most once.
    asked_at: u64,
}

impl Want {
    /// The next request: the preferred peer first, then each other one in turn.
    fn request(&mut self, digest: Digest) -> Output {
        let mut peers = self.peers.clone();
        let len = peers.len();
        if len > 0 {
            peers.rotate_left(self.attempts % len);
        }
        self.attempts += 1;
        Output::Fetch { digest, peers }
    }
}

/// The chain from just above the finalized block up to a tip.
enum Chain<'a> {
    Complete(Vec<&'a Block>),
    Missing(Digest),
    /// The links are inconsistent or do not reach the finalized block.
    Invalid,
}

/// Whether a proposal may be voted for yet.
enum ParentCheck {
    Ok,
    Wait,
    Invalid,
}

/// One validator's Simplex state machine. See the crate docs for the protocol and the contract.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    key: SigningKey,
    me: ValidatorIndex,
    view: u64,
    /// Consecutive nullified views before the current one; sets the view timeout.
    failures: u32,
    /// Inputs handled so far, to pace repeated block requests.
    inputs: u64,
    finalized: Block,
    finalized_digest: Digest,
    /// Retained finalized heights, for serving fetches.
    final_chain: BTreeMap<u64, Digest>,
    blocks: BTreeMap<Digest, Block>,
    views: BTreeMap<u64, ViewState>,
    wanted: BTreeMap<Digest, Want>,
    /// Proposals sent to the application for checking, by digest, with their view.
    pending_verify: BTreeMap<Digest, u64>,
    last_finalization: Option<Certificate>,
}

impl Engine {
    /// Starts (or restarts) an engine. `key` must belong to the validator set. Entries of
    /// `recovery.wal` above the finalized view are restored as this node's own votes and
    /// proposals, so it never signs a conflicting one; it resumes in the highest view it acted
    /// in (the view after a finalize vote) and catches up from the certificates it receives.
    /// The returned outputs arm the first timer, re-send the votes of the resumed view and
    /// possibly ask for a proposal.
    pub fn new(
        config: Config,
        key: SigningKey,
        recovery: Recovery,
    ) -> Result<(Engine, Vec<Output>), ConsensusError> {
        config.timeouts.validate()?;
        let me = config
            .validators
            .index_of(&key.verifying_key())
            .ok_or(ConsensusError::NotAValidator)?;
        let finalized = recovery.finalized;
        let finalized_digest = finalized.digest();
        let mut engine = Engine {
            view: finalized.view + 1,
            failures: 0,
            inputs: 0,
            final_chain: BTreeMap::from([(finalized.height, finalized_digest)]),
            blocks: BTreeMap::from([(finalized_digest, finalized.clone())]),
            finalized,
            finalized_digest,
            config,
            key,
            me,
            views: BTreeMap::new(),
            wanted: BTreeMap::new(),
            pending_verify: BTreeMap::new(),
            last_finalization: None,
        };
        let mut out = Vec::new();
        let mut own = Vec::new();
        for entry in recovery.wal {
            if let WalEntry::Voted(vote) = &entry {
                own.push(vote.kind);
            }
            engine.restore(entry, &mut out)?;
        }
        // Only now, with the persisted certificates back, can quorums of restored votes be
        // told apart from certificates that were never persisted (a crash between the two).
        for kind in own {
            engine.tally(kind, &mut out);
        }
        // Evidence against ourselves cannot arise from our own WAL; certificates assembled
        // from restored votes (n = 1) stay in `out`.
        out.retain(|o| !matches!(o, Output::Evidence(_)));
        let resume = engine.view;
        engine.enter_view(resume, &mut out);
        engine.resend_own(&mut out);
        engine.progress(&mut out);
        Ok((engine, out))
    }

    fn restore(&mut self, entry: WalEntry, out: &mut Vec<Output>) -> Result<(), ConsensusError> {
        let view = entry.view();
        let foreign = ConsensusError::InvalidConfig("a WAL entry was not signed by this key");
        match entry {
            WalEntry::Voted(vote) => {
                if vote.signer != self.me {
                    return Err(foreign);
                }
                vote.verify(&self.config.namespace, &self.config.validators)
                    .map_err(|_| foreign)?;
                if view <= self.finalized.view {
                    return Ok(());
                }
                let resume = match vote.kind {
                    VoteKind::Finalize { .. } => view + 1,
                    _ => view,
                };
                self.view = self.view.max(resume);
                let mine = &mut self.state(view).mine;
                let slot = match vote.kind {
                    VoteKind::Notarize { .. } => &mut mine.notarize,
                    VoteKind::Nullify { .. } => &mut mine.nullify,
                    VoteKind::Finalize { .. } => &mut mine.finalize,
                };
                if slot.is_none() {
                    *slot = Some(vote.clone());
                }
                self.insert_vote(vote, out);
            }
            WalEntry::Certified(cert) => {
                cert.verify(&self.config.namespace, &self.config.validators)
                    .map_err(|_| {
                        ConsensusError::InvalidConfig("a WAL certificate does not verify")
                    })?;
                if view <= self.finalized.view {
                    return Ok(());
                }
                // A certificate ends its view: the node was at least in the next one.
                self.view = self.view.max(view + 1);
                self.keep_certificate(cert, out);
            }
            WalEntry::Proposed(proposal) => {
                if self.config.validators.leader(view) != self.me {
                    return Err(foreign);
                }
                proposal
                    .verify(&self.config.namespace, &self.config.validators)
                    .map_err(|_| foreign)?;
                if view <= self.finalized.view {
                    return Ok(());
                }
                self.view = self.view.max(view);
                let digest = proposal.block.digest();
                self.blocks.insert(digest, proposal.block.clone());
                let state = self.state(view);
                if state.proposal.is_none() {
                    state.proposal = Some(proposal.clone());
                    state.proposal_digest = Some(digest);
                    state.check = Check::Valid;
                    state.mine.proposal = Some(proposal);
                }
            }
        }
        Ok(())
    }

    /// Re-sends what this node already signed in its current view (and its finalize vote for
    /// the previous one): after a restart, peers may have missed it.
    fn resend_own(&mut self, out: &mut Vec<Output>) {
        let view = self.view;
        if let Some(mine) = self.views.get(&(view - 1)).map(|s| s.mine.clone()) {
            if let Some(vote) = mine.finalize {
                out.push(Output::Broadcast(Message::Vote(vote)));
            }
        }
        if let Some(mine) = self.views.get(&view).map(|s| s.mine.clone()) {
            if let Some(proposal) = mine.proposal {
                out.push(Output::Broadcast(Message::Propose(proposal)));
            }
            for vote in [mine.notarize, mine.nullify].into_iter().flatten() {
                out.push(Output::Broadcast(Message::Vote(vote)));
            }
        }
    }

    /// Feeds one input and returns what the driver must do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.inputs += 1;
        match input {
            Input::Message(Message::Propose(proposal)) => self.on_proposal(proposal, &mut out),
            Input::Message(Message::Vote(vote)) => self.on_vote(vote, &mut out),
            Input::Message(Message::Certificate(cert)) => self.on_certificate(cert, &mut out),
            Input::Timeout { view } => self.on_timeout(view, &mut out),
            Input::Proposal {
                view,
                parent,
                payload,
            } => self.on_payload(view, parent, payload, &mut out),
            Input::Verified { digest, valid } => self.on_verified(digest, valid),
            Input::Fetched { block } => self.on_fetched(block),
        }
        self.progress(&mut out);
        out
    }

    /// The view this node is in.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// The last finalized block.
    pub fn finalized(&self) -> &Block {
        &self.finalized
    }

    /// A block this engine holds: un-finalized ones it saw, and finalized ones of the last
    /// `retain` heights. For serving peers' fetches.
    pub fn block(&self, digest: &Digest) -> Option<&Block> {
        self.blocks.get(digest)
    }

    /// This node's index in the validator set.
    pub fn me(&self) -> ValidatorIndex {
        self.me
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The finalization certificate of the highest finalized view this engine holds.
    pub fn last_finalization(&self) -> Option<&Certificate> {
        self.last_finalization.as_ref()
    }

    fn state(&mut self, view: u64) -> &mut ViewState {
        self.views.entry(view).or_default()
    }

    /// Whether a vote or proposal for `view` is worth looking at.
    fn in_window(&self, view: u64) -> bool {
        view > self.finalized.view && view <= self.view.saturating_add(MAX_VIEWS_AHEAD)
    }

    fn on_proposal(&mut self, proposal: Proposal, out: &mut Vec<Output>) {
        let view = proposal.block.view;
        if !self.in_window(view) {
            return;
        }
        let digest = proposal.block.digest();
        if self
            .views
            .get(&view)
            .is_some_and(|s| s.proposal_digest == Some(digest))
        {
            return;
        }
        if proposal
            .verify_with_digest(&self.config.namespace, &self.config.validators, &digest)
            .is_err()
        {
            return;
        }
        let leader = self.config.validators.leader(view);
        let state = self.state(view);
        match &state.proposal {
            Some(first) => {
                let first = Message::Propose(first.clone());
                self.report(
                    leader,
                    view,
                    EVIDENCE_PROPOSAL,
                    first,
                    Message::Propose(proposal),
                    out,
                );
            }
            None => {
                state.proposal = Some(proposal.clone());
                state.proposal_digest = Some(digest);
                self.wanted.remove(&digest);
                self.blocks.insert(digest, proposal.block);
            }
        }
    }

    fn on_vote(&mut self, vote: Vote, out: &mut Vec<Output>) {
        let view = vote.kind.view();
        if !self.in_window(view) || self.config.validators.key(vote.signer).is_none() {
            return;
        }
        let slot = (slot(&vote.kind), vote.signer);
        let state = self.state(view);
        if state.holds(&vote.kind, vote.signer, &vote.signature)
            || state.pending.get(&slot) == Some(&vote)
        {
            return;
        }
        if state.verified_in_slot(&vote.kind, vote.signer) || state.pending.contains_key(&slot) {
            // A second, different vote of this signer in the slot: a conflict worth evidence,
            // or a forgery meant to crowd out the real vote. Both are checked at once, which
            // costs no more than checking every vote on arrival, and only for such pairs.
            if let Some(first) = state.pending.remove(&slot) {
                if self.verify_vote(&first) {
                    let kind = first.kind;
                    self.insert_vote(first, out);
                    self.tally(kind, out);
                }
            }
            if self.verify_vote(&vote) {
                let kind = vote.kind;
                self.insert_vote(vote, out);
                self.tally(kind, out);
            }
            return;
        }
        let kind = vote.kind;
        state.pending.insert(slot, vote);
        self.tally(kind, out);
    }

    fn verify_vote(&self, vote: &Vote) -> bool {
        vote.verify(&self.config.namespace, &self.config.validators)
            .is_ok()
    }

    /// The valid ones among `votes`, which all share one kind: one batch verification, and
    /// one by one only if the batch fails.
    fn verify_votes(&self, votes: Vec<Vote>) -> Vec<Vote> {
        let Some(kind) = votes.first().map(|v| v.kind) else {
            return votes;
        };
        let keys: Option<Vec<_>> = votes
            .iter()
            .map(|v| self.config.validators.key(v.signer).copied())
            .collect();
        let signatures: Vec<Signature> = votes.iter().map(|v| v.signature).collect();
        let message = kind.signing_bytes(&self.config.namespace);
        if keys.is_some_and(|keys| verify_same_message(&message, &keys, &signatures)) {
            return votes;
        }
        votes.into_iter().filter(|v| self.verify_vote(v)).collect()
    }

    /// Assembles the certificate for `kind` once verified votes reach the quorum, verifying
    /// the pending votes for it (in one batch) only when they could complete it. Votes that
    /// arrive after the certificate stay unverified: they can no longer change anything.
    fn tally(&mut self, kind: VoteKind, out: &mut Vec<Output>) {
        let view = kind.view();
        let quorum = self.config.validators.quorum();
        let Some(state) = self.views.get_mut(&view) else {
            return;
        };
        if state.certified(&kind) {
            return;
        }
        if state.count(&kind) < quorum {
            let slots: Vec<(u8, ValidatorIndex)> = state
                .pending
                .iter()
                .filter(|(_, v)| v.kind == kind)
                .map(|(slot, _)| *slot)
                .collect();
            if state.count(&kind) + slots.len() < quorum {
                return;
            }
            let batch: Vec<Vote> = slots
                .iter()
                .filter_map(|slot| state.pending.remove(slot))
                .collect();
            for vote in self.verify_votes(batch) {
                self.insert_vote(vote, out);
            }
        }
        let Some(state) = self.views.get(&view) else {
            return;
        };
        if state.count(&kind) < quorum {
            return;
        }
        let signatures: Vec<(ValidatorIndex, Signature)> = match kind {
            VoteKind::Notarize { digest, .. } => matching(&state.notarize, digest),
            VoteKind::Finalize { digest, .. } => matching(&state.finalize, digest),
            VoteKind::Nullify { .. } => state.nullify.iter().map(|(i, s)| (*i, *s)).collect(),
        };
        self.store_certificate(Certificate { kind, signatures }, out);
    }

    fn on_certificate(&mut self, cert: Certificate, out: &mut Vec<Output>) {
        let view = cert.kind.view();
        if view <= self.finalized.view {
            return;
        }
        let state = self.views.get(&view);
        let held = match cert.kind {
            VoteKind::Notarize { .. } => state.is_some_and(|s| s.notarization.is_some()),
            VoteKind::Nullify { .. } => state.is_some_and(|s| s.nullification.is_some()),
            VoteKind::Finalize { .. } => state.is_some_and(|s| s.finalization.is_some()),
        };
        if held {
            return;
        }
        let verified = cert.verify_except(
            &self.config.namespace,
            &self.config.validators,
            |signer, signature| state.is_some_and(|s| s.holds(&cert.kind, signer, signature)),
        );
        if verified.is_err() {
            return;
        }
        let votes: Vec<Vote> = cert.votes().collect();
        self.store_certificate(cert, out);
        // The certificate's votes are verified now: recording them spares verifying them again
        // when they arrive alone, and exposes signers who voted differently elsewhere.
        for vote in votes {
            self.insert_vote(vote, out);
        }
    }

    /// Records a verified vote, or reports its conflict with the signer's earlier vote (and
    /// ignores it). A different vote of the signer still pending in the slot is settled: it is
    /// either the same message or evidence.
    fn insert_vote(&mut self, vote: Vote, out: &mut Vec<Output>) {
        let view = vote.kind.view();
        let signer = vote.signer;
        let state = self.state(view);
        let mut conflict = None;
        match vote.kind {
            VoteKind::Notarize { digest, .. } => match state.notarize.get(&signer) {
                Some((first, signature)) => {
                    if *first != digest {
                        let kind = VoteKind::Notarize {
                            view,
                            digest: *first,
                        };
                        conflict = Some((EVIDENCE_NOTARIZE, kind, *signature));
                    }
                }
                None => {
                    state.notarize.insert(signer, (digest, vote.signature));
                }
            },
            VoteKind::Nullify { .. } => {
                if let Some((first, signature)) = state.finalize.get(&signer) {
                    let kind = VoteKind::Finalize {
                        view,
                        digest: *first,
                    };
                    conflict = Some((EVIDENCE_NULLIFY_FINALIZE, kind, *signature));
                } else {
                    state.nullify.entry(signer).or_insert(vote.signature);
                }
            }
            VoteKind::Finalize { digest, .. } => {
                if let Some((first, signature)) = state.finalize.get(&signer) {
                    if *first != digest {
                        let kind = VoteKind::Finalize {
                            view,
                            digest: *first,
                        };
                        conflict = Some((EVIDENCE_FINALIZE, kind, *signature));
                    }
                } else if let Some(signature) = state.nullify.get(&signer) {
                    let kind = VoteKind::Nullify { view };
                    conflict = Some((EVIDENCE_NULLIFY_FINALIZE, kind, *signature));
                } else {
                    state.finalize.insert(signer, (digest, vote.signature));
                }
            }
        }
        let pending = state
            .pending
            .remove(&(slot(&vote.kind), signer))
            .filter(|p| *p != vote);
        if let Some((class, kind, signature)) = conflict {
            let first = Message::Vote(Vote {
                kind,
                signer,
                signature,
            });
            self.report(signer, view, class, first, Message::Vote(vote), out);
        }
        if let Some(pending) = pending {
            if self.verify_vote(&pending) {
                self.insert_vote(pending, out);
            }
        }
    }

    fn report(
        &mut self,
        signer: ValidatorIndex,
        view: u64,
        class: u8,
        first: Message,
        second: Message,
        out: &mut Vec<Output>,
    ) {
        if self.state(view).reported.insert((signer, class)) {
            out.push(Output::Evidence(Evidence {
                signer,
                view,
                first,
                second,
            }));
        }
    }

    /// Keeps the first verified certificate of each kind per view, persists it (so that after
    /// a restart of every node the views and parents can still be justified), passes it on
    /// when it can move others forward, and asks for the block it names if that is missing.
    fn store_certificate(&mut self, cert: Certificate, out: &mut Vec<Output>) {
        let view = cert.kind.view();
        if !self.keep_certificate(cert.clone(), out) {
            return;
        }
        let is_finalization = matches!(cert.kind, VoteKind::Finalize { .. });
        let passes_on = view >= self.view || is_finalization;
        out.push(Output::Persist(WalEntry::Certified(cert.clone())));
        if passes_on {
            out.push(Output::Broadcast(Message::Certificate(cert)));
        }
    }

    /// Stores a verified certificate unless one of its kind is held for its view; returns
    /// whether it was new.
    fn keep_certificate(&mut self, cert: Certificate, out: &mut Vec<Output>) -> bool {
        let view = cert.kind.view();
        if view <= self.finalized.view {
            return false;
        }
        let state = self.state(view);
        let slot = match cert.kind {
            VoteKind::Notarize { .. } => &mut state.notarization,
            VoteKind::Nullify { .. } => &mut state.nullification,
            VoteKind::Finalize { .. } => &mut state.finalization,
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(cert.clone());
        if matches!(cert.kind, VoteKind::Finalize { .. })
            && self
                .last_finalization
                .as_ref()
                .is_none_or(|c| c.kind.view() < view)
        {
            self.last_finalization = Some(cert.clone());
        }
        if let Some(digest) = cert.kind.digest() {
            let peers = self.holders(&cert);
            self.want(digest, peers, view, out);
        }
        true
    }

    /// Requests a block unless it is held or already requested.
    fn want(
        &mut self,
        digest: Digest,
        peers: Vec<ValidatorIndex>,
        context: u64,
        out: &mut Vec<Output>,
    ) {
        if self.blocks.contains_key(&digest) {
            return;
        }
        if let Some(want) = self.wanted.get_mut(&digest) {
            want.context = want.context.max(context);
            return;
        }
        let mut unique = Vec::with_capacity(peers.len());
        for peer in peers {
            if peer != self.me && !unique.contains(&peer) {
                unique.push(peer);
            }
        }
        let mut want = Want {
            peers: unique,
            attempts: 0,
            context,
            asked_at: self.inputs,
        };
        out.push(want.request(digest));
        self.wanted.insert(digest, want);
    }

    fn on_timeout(&mut self, view: u64, out: &mut Vec<Output>) {
        if view != self.view {
            return;
        }
        let mine = self.state(view).mine.clone();
        match mine.nullify {
            Some(vote) => out.push(Output::Broadcast(Message::Vote(vote))),
            None => self.nullify(view, out),
        }
        if let Some(vote) = mine.notarize {
            out.push(Output::Broadcast(Message::Vote(vote)));
        }
        for cert in self.justification() {
            out.push(Output::Broadcast(Message::Certificate(cert)));
        }
        out.push(Output::SetTimer {
            view,
            after_ms: self.config.timeouts.retry_ms,
        });
        let inputs = self.inputs;
        for (digest, want) in &mut self.wanted {
            want.asked_at = inputs;
            out.push(want.request(*digest));
        }
    }

    /// The certificates that let a peer reach this node's view and check proposals in it: the
    /// last finalization, and going down from the previous view the nullifications back to and
    /// including the first notarization.
    fn justification(&self) -> Vec<Certificate> {
        let mut certs = Vec::new();
        if let Some(cert) = &self.last_finalization {
            certs.push(cert.clone());
        }
        let mut view = self.view - 1;
        while view > self.finalized.view {
            let Some(state) = self.views.get(&view) else {
                break;
            };
            if let Some(cert) = &state.notarization {
                certs.push(cert.clone());
                break;
            }
            match &state.nullification {
                Some(cert) => certs.push(cert.clone()),
                None => break,
            }
            view -= 1;
        }
        certs
    }

    fn on_payload(&mut self, view: u64, parent: Digest, payload: Vec<u8>, out: &mut Vec<Output>) {
        if view != self.view {
            return;
        }
        let parent_height = match self.blocks.get(&parent) {
            Some(block) => block.height,
            None => return,
        };
        let state = self.state(view);
        if state.propose_requested != Some(parent)
            || state.proposal.is_some()
            || state.mine.nullify.is_some()
        {
            return;
        }
        let block = Block {
            view,
            height: parent_height + 1,
            parent,
            payload,
        };
        let digest = block.digest();
        let proposal = Proposal::sign(block, &self.config.namespace, &self.key);
        let state = self.state(view);
        state.proposal = Some(proposal.clone());
        state.proposal_digest = Some(digest);
        state.mine.proposal = Some(proposal.clone());
        // The application built this payload itself; asking it to check it is pointless.
        state.check = Check::Valid;
        self.blocks.insert(digest, proposal.block.clone());
        out.push(Output::Persist(WalEntry::Proposed(proposal.clone())));
        out.push(Output::Broadcast(Message::Propose(proposal)));
    }

    fn on_verified(&mut self, digest: Digest, valid: bool) {
        let Some(view) = self.pending_verify.remove(&digest) else {
            return;
        };
        if let Some(state) = self.views.get_mut(&view) {
            if state.proposal_digest == Some(digest) && state.check == Check::Pending {
                state.check = if valid { Check::Valid } else { Check::Invalid };
            }
        }
    }

    fn on_fetched(&mut self, block: Block) {
        let digest = block.digest();
        if self.wanted.remove(&digest).is_some() {
            self.blocks.insert(digest, block);
        }
    }

    /// Applies every consequence of the state until nothing changes: leave ended views, finalize,
    /// propose, vote.
    fn progress(&mut self, out: &mut Vec<Output>) {
        loop {
            let mark = (self.view, self.finalized.height, out.len());
            self.advance(out);
            self.try_finalize(out);
            self.try_propose(out);
            self.try_notarize(out);
            if mark == (self.view, self.finalized.height, out.len()) {
                break;
            }
        }
    }

    /// Leaves the current view for the view after the highest one (>= current) that holds a
    /// certificate ending it. A node leaving a notarized view it did not nullify votes to
    /// finalize it; it does not vote for views it skips.
    fn advance(&mut self, out: &mut Vec<Output>) {
        let Some((ended, notarized)) = self
            .views
            .range(self.view..)
            .rev()
            .find(|(_, s)| s.ended())
            .map(|(v, s)| (*v, s.notarized().is_some()))
        else {
            return;
        };
        let current = self.view;
        let finalize = self.views.get(&current).and_then(|state| {
            match (&state.notarization, &state.finalization) {
                (Some(cert), None)
                    if state.mine.nullify.is_none() && state.mine.finalize.is_none() =>
                {
                    cert.kind.digest()
                }
                _ => None,
            }
        });
        if let Some(digest) = finalize {
            let vote = self.sign(VoteKind::Finalize {
                view: current,
                digest,
            });
            self.state(current).mine.finalize = Some(vote.clone());
            self.cast(vote, out);
        }
        self.failures = if notarized {
            0
        } else {
            self.failures.saturating_add(1)
        };
        self.enter_view(ended + 1, out);
    }

    fn enter_view(&mut self, view: u64, out: &mut Vec<Output>) {
        self.view = view;
        out.push(Output::SetTimer {
            view,
            after_ms: self.config.timeouts.view_timeout(self.failures),
        });
        // Unanswered block requests are repeated on each new view, besides on retry timers.
        for (digest, want) in &mut self.wanted {
            if want.asked_at < self.inputs {
                want.asked_at = self.inputs;
                out.push(want.request(*digest));
            }
        }
    }

    /// Finalizes the chain below the highest finalization certificate held, once all its
    /// blocks are present.
    fn try_finalize(&mut self, out: &mut Vec<Output>) {
        let Some((view, digest, signers)) = self
            .views
            .range(self.finalized.view + 1..)
            .rev()
            .find_map(|(v, s)| {
                let cert = s.finalization.as_ref()?;
                Some((*v, cert.kind.digest()?, self.holders(cert)))
            })
        else {
            return;
        };
        let chain: Vec<Block> = match self.ancestry(digest) {
            Chain::Complete(chain) => chain.into_iter().cloned().collect(),
            Chain::Missing(missing) => {
                self.want(missing, signers, view, out);
                return;
            }
            // Only reachable if more than f validators are faulty: nothing safe to do.
            Chain::Invalid => return,
        };
        for block in &chain {
            let certificate = self
                .views
                .get(&block.view)
                .and_then(|s| s.finalization.clone())
                .filter(|c| c.kind.digest() == Some(block.digest()));
            out.push(Output::Finalized {
                block: block.clone(),
                certificate,
            });
        }
        for block in &chain {
            self.final_chain.insert(block.height, block.digest());
        }
        if let Some(last) = chain.into_iter().last() {
            self.finalized_digest = last.digest();
            self.finalized = last;
            self.prune();
        }
    }

    /// Forgets what a finalized view makes useless: views below it, blocks off the final
    /// chain at or below its view, finalized blocks older than `retain`, stale requests.
    fn prune(&mut self) {
        let final_view = self.finalized.view;
        self.views = self.views.split_off(&final_view);
        let keep_from = self.finalized.height.saturating_sub(self.config.retain);
        let kept = self.final_chain.split_off(&keep_from);
        let dropped = std::mem::replace(&mut self.final_chain, kept);
        for digest in dropped.into_values() {
            self.blocks.remove(&digest);
        }
        let final_chain: BTreeSet<Digest> = self.final_chain.values().copied().collect();
        self.blocks
            .retain(|digest, block| block.view > final_view || final_chain.contains(digest));
        self.wanted.retain(|_, want| want.context > final_view);
        self.pending_verify.retain(|_, view| *view > final_view);
    }

    /// The chain from just above the finalized block up to and including `tip`.
    fn ancestry(&self, tip: Digest) -> Chain<'_> {
        let mut chain: Vec<&Block> = Vec::new();
        let mut cursor = tip;
        loop {
            if cursor == self.finalized_digest {
                let linked = chain.last().is_none_or(|lowest| {
                    lowest.height == self.finalized.height + 1 && lowest.view > self.finalized.view
                });
                if !linked {
                    return Chain::Invalid;
                }
                chain.reverse();
                return Chain::Complete(chain);
            }
            let Some(block) = self.blocks.get(&cursor) else {
                return Chain::Missing(cursor);
            };
            if block.height <= self.finalized.height {
                return Chain::Invalid;
            }
            if let Some(child) = chain.last() {
                if child.height != block.height + 1 || child.view <= block.view {
                    return Chain::Invalid;
                }
            }
            chain.push(block);
            cursor = block.parent;
        }
    }

    /// The parent an honest leader of `view` must use: the block notarized in the highest
    /// earlier view such that every view in between is nullified (the finalized block stands
    /// for the finalized view). `None` while a certificate on the way down is missing.
    fn select_parent(&self, view: u64) -> Option<Digest> {
        let mut below = view - 1;
        loop {
            if below <= self.finalized.view {
                return Some(self.finalized_digest);
            }
            let state = self.views.get(&below)?;
            if let Some(digest) = state.notarized() {
                return Some(digest);
            }
            state.nullification.as_ref()?;
            below -= 1;
        }
    }

    fn try_propose(&mut self, out: &mut Vec<Output>) {
        let view = self.view;
        if self.config.validators.leader(view) != self.me {
            return;
        }
        if let Some(state) = self.views.get(&view) {
            if state.propose_requested.is_some()
                || state.proposal.is_some()
                || state.mine.nullify.is_some()
            {
                return;
            }
        }
        let Some(parent) = self.select_parent(view) else {
            return;
        };
        let (height, ancestry) = match self.ancestry(parent) {
            Chain::Complete(chain) => {
                let height = chain.last().map_or(self.finalized.height, |b| b.height) + 1;
                (height, chain.into_iter().cloned().collect())
            }
            Chain::Missing(missing) => {
                let peers = self.certificate_signers(parent);
                self.want(missing, peers, view, out);
                return;
            }
            Chain::Invalid => return,
        };
        self.state(view).propose_requested = Some(parent);
        out.push(Output::Propose {
            view,
            height,
            parent,
            ancestry,
        });
    }

    /// Who holds the block a notarization or finalization names: its proposer first (it
    /// persisted it, so it has it even after a restart), then the certificate's signers.
    fn certificate_signers(&self, digest: Digest) -> Vec<ValidatorIndex> {
        self.views
            .values()
            .rev()
            .flat_map(|s| [&s.notarization, &s.finalization])
            .flatten()
            .find(|c| c.kind.digest() == Some(digest))
            .map(|c| self.holders(c))
            .unwrap_or_default()
    }

    fn holders(&self, cert: &Certificate) -> Vec<ValidatorIndex> {
        let mut peers = vec![self.config.validators.leader(cert.kind.view())];
        peers.extend(cert.signers());
        peers
    }

    fn try_notarize(&mut self, out: &mut Vec<Output>) {
        let view = self.view;
        let Some(state) = self.views.get(&view) else {
            return;
        };
        if state.mine.notarize.is_some() || state.mine.nullify.is_some() {
            return;
        }
        let (Some(proposal), Some(digest)) = (&state.proposal, state.proposal_digest) else {
            return;
        };
        match state.check {
            Check::Pending => return,
            Check::Invalid => {
                // An unusable proposal cannot be notarized by this node: give up on the view now
                // rather than waiting for the timer.
                self.nullify(view, out);
                return;
            }
            Check::Unchecked | Check::Valid => {}
        }
        let check = state.check;
        let block = proposal.block.clone();
        let leader = self.config.validators.leader(view);
        match self.check_parent(&block, leader, out) {
            ParentCheck::Ok => {}
            ParentCheck::Wait => return,
            ParentCheck::Invalid => {
                self.state(view).check = Check::Invalid;
                self.nullify(view, out);
                return;
            }
        }
        let ancestry: Vec<Block> = match self.ancestry(block.parent) {
            Chain::Complete(chain) => chain.into_iter().cloned().collect(),
            Chain::Missing(missing) => {
                let mut peers = vec![leader];
                peers.extend(self.certificate_signers(block.parent));
                self.want(missing, peers, view, out);
                return;
            }
            Chain::Invalid => {
                self.state(view).check = Check::Invalid;
                self.nullify(view, out);
                return;
            }
        };
        match check {
            Check::Unchecked => {
                self.state(view).check = Check::Pending;
                self.pending_verify.insert(digest, view);
                out.push(Output::Verify { block, ancestry });
            }
            Check::Valid => {
                let vote = self.sign(VoteKind::Notarize { view, digest });
                self.state(view).mine.notarize = Some(vote.clone());
                self.cast(vote, out);
            }
            Check::Pending | Check::Invalid => {}
        }
    }

    /// The parent rule of Simplex: the parent is the finalized block or a notarized block
    /// above it, every view between the parent's and the proposal's is nullified, and heights
    /// link up.
    fn check_parent(
        &mut self,
        block: &Block,
        leader: ValidatorIndex,
        out: &mut Vec<Output>,
    ) -> ParentCheck {
        let (parent_view, parent_height) = if block.parent == self.finalized_digest {
            (self.finalized.view, self.finalized.height)
        } else {
            let Some(parent) = self.blocks.get(&block.parent) else {
                let mut peers = vec![leader];
                peers.extend(self.certificate_signers(block.parent));
                self.want(block.parent, peers, block.view, out);
                return ParentCheck::Wait;
            };
            let (parent_view, parent_height) = (parent.view, parent.height);
            if parent_view <= self.finalized.view {
                return ParentCheck::Invalid;
            }
            match self.views.get(&parent_view).and_then(ViewState::notarized) {
                Some(digest) if digest == block.parent => {}
                Some(_) => return ParentCheck::Invalid,
                None => return ParentCheck::Wait,
            }
            (parent_view, parent_height)
        };
        if parent_view >= block.view || block.height != parent_height + 1 {
            return ParentCheck::Invalid;
        }
        let all_nullified = (parent_view + 1..block.view).all(|v| {
            self.views
                .get(&v)
                .is_some_and(|s| s.nullification.is_some())
        });
        if all_nullified {
            ParentCheck::Ok
        } else {
            ParentCheck::Wait
        }
    }

    /// Signs, persists and sends this node's nullify vote for `view` (its current view).
    /// Nullifying is safe even after a notarize vote: it only forbids this node's finalize vote
    /// for the view, which is what the safety argument relies on.
    fn nullify(&mut self, view: u64, out: &mut Vec<Output>) {
        if self.state(view).mine.nullify.is_some() {
            return;
        }
        let vote = self.sign(VoteKind::Nullify { view });
        self.state(view).mine.nullify = Some(vote.clone());
        self.cast(vote, out);
    }

    fn sign(&self, kind: VoteKind) -> Vote {
        Vote::sign(kind, self.me, &self.config.namespace, &self.key)
    }

    /// Persists, sends and counts one of this node's own votes, in that order.
    fn cast(&mut self, vote: Vote, out: &mut Vec<Output>) {
        out.push(Output::Persist(WalEntry::Voted(vote.clone())));
        out.push(Output::Broadcast(Message::Vote(vote.clone())));
        let kind = vote.kind;
        self.insert_vote(vote, out);
        self.tally(kind, out);
    }
}

/// Pending-vote slots per signer: one for notarize votes, one shared by nullify and finalize
/// votes (an honest validator sends only one of those per view).
fn slot(kind: &VoteKind) -> u8 {
    match kind {
        VoteKind::Notarize { .. } => 0,
        VoteKind::Nullify { .. } | VoteKind::Finalize { .. } => 1,
    }
}

/// The `(signer, signature)` pairs of the votes for `digest`, in signer order.
fn matching(
    votes: &BTreeMap<ValidatorIndex, (Digest, Signature)>,
    digest: Digest,
) -> Vec<(ValidatorIndex, Signature)> {
    votes
        .iter()
        .filter(|(_, (d, _))| *d == digest)
        .map(|(i, (_, s))| (*i, *s))
        .collect()
}
