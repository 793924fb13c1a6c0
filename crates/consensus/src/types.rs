//! Blocks, votes, certificates and the wire messages, with their signing rules.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tessera_primitives::codec;

use crate::error::ConsensusError;

/// A block digest: SHA-256 of the block's canonical encoding.
pub type Digest = alloy_primitives::B256;

/// Position of a validator in the [`ValidatorSet`].
pub type ValidatorIndex = u32;

/// The validators of one consensus instance, in a fixed order that every node agrees on (the
/// order of genesis). Quorums are counted in distinct members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    keys: Vec<VerifyingKey>,
    index: BTreeMap<[u8; 32], ValidatorIndex>,
}

impl ValidatorSet {
    /// A set of the given keys; refuses an empty set and repeated keys.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, ConsensusError> {
        if keys.is_empty() {
            return Err(ConsensusError::EmptyValidatorSet);
        }
        if u32::try_from(keys.len()).is_err() {
            return Err(ConsensusError::TooManyValidators(keys.len()));
        }
        let mut index = BTreeMap::new();
        for (i, key) in (0..).zip(&keys) {
            if let Some(first) = index.insert(key.to_bytes(), i) {
                return Err(ConsensusError::DuplicateValidator { first, second: i });
            }
        }
        Ok(Self { keys, index })
    }

    /// Number of validators, `n`.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a set has at least one member. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The most Byzantine validators the protocol tolerates: `f = (n - 1) / 3`.
    pub fn max_faulty(&self) -> usize {
        (self.keys.len() - 1) / 3
    }

    /// Votes needed for a certificate: `n - f` (`2f + 1` when `n = 3f + 1`).
    pub fn quorum(&self) -> usize {
        self.keys.len() - self.max_faulty()
    }

    /// The key of validator `i`, if there is one.
    pub fn key(&self, i: ValidatorIndex) -> Option<&VerifyingKey> {
        self.keys.get(usize::try_from(i).ok()?)
    }

    /// The index of `key` in the set.
    pub fn index_of(&self, key: &VerifyingKey) -> Option<ValidatorIndex> {
        self.index.get(key.as_bytes()).copied()
    }

    /// The leader of `view`: validator `view mod n`, a plain round-robin every node computes
    /// alike. View 0 is genesis and nobody proposes in it.
    pub fn leader(&self, view: u64) -> ValidatorIndex {
        // The remainder is below n, which fits a u32 by construction.
        (view % self.keys.len() as u64) as ValidatorIndex
    }

    /// All keys in index order.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }
}

/// A block as consensus sees it: the payload is opaque bytes owned by the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The view in which the block was proposed (0 for genesis).
    pub view: u64,
    /// Distance from genesis: parent's height + 1.
    pub height: u64,
    /// Digest of the parent block (zero for genesis).
    pub parent: Digest,
    /// Application data, e.g. an encoded shard block.
    pub payload: Vec<u8>,
}

impl Block {
    /// SHA-256 of the canonical encoding. It binds every field, so a digest from a certificate
    /// or a parent link identifies exactly one block.
    pub fn digest(&self) -> Digest {
        Digest::from_slice(&Sha256::digest(codec::encode(self)))
    }

    /// The genesis block of view 0 and height 0. The application passes something that
    /// identifies its genesis (e.g. the shard's genesis header hash), so that chains with
    /// different genesis states have different block digests from the start.
    pub fn genesis(payload: Vec<u8>) -> Block {
        Block {
            view: 0,
            height: 0,
            parent: Digest::ZERO,
            payload,
        }
    }
}

/// What a vote says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// The block `digest` is a valid proposal for `view`.
    Notarize {
        /// The view voted in.
        view: u64,
        /// The proposed block.
        digest: Digest,
    },
    /// Give up on `view`: it timed out or its proposal was unusable.
    Nullify {
        /// The view given up.
        view: u64,
    },
    /// `view` was notarized for `digest` and this validator did not nullify it.
    Finalize {
        /// The notarized view.
        view: u64,
        /// The notarized block.
        digest: Digest,
    },
}

impl VoteKind {
    /// The view the vote is about.
    pub fn view(&self) -> u64 {
        match *self {
            VoteKind::Notarize { view, .. }
            | VoteKind::Nullify { view }
            | VoteKind::Finalize { view, .. } => view,
        }
    }

    /// The block the vote is about; nullify votes name none.
    pub fn digest(&self) -> Option<Digest> {
        match *self {
            VoteKind::Notarize { digest, .. } | VoteKind::Finalize { digest, .. } => Some(digest),
            VoteKind::Nullify { .. } => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            VoteKind::Notarize { .. } => TAG_NOTARIZE,
            VoteKind::Nullify { .. } => TAG_NULLIFY,
            VoteKind::Finalize { .. } => TAG_FINALIZE,
        }
    }

    /// The bytes a validator signs for this vote under `namespace`.
    pub fn signing_bytes(&self, namespace: &[u8]) -> Vec<u8> {
        signing_bytes(namespace, self.tag(), self.view(), self.digest().as_ref())
    }
}

const TAG_PROPOSE: u8 = 0;
const TAG_NOTARIZE: u8 = 1;
const TAG_NULLIFY: u8 = 2;
const TAG_FINALIZE: u8 = 3;

/// `(namespace, kind tag, view, digest)` with a length prefix on the namespace, so that no
/// namespace is a prefix-extension of another's signed bytes. The namespace carries chain id and
/// shard, so a signature is worthless on any other chain or shard.
fn signing_bytes(namespace: &[u8], tag: u8, view: u64, digest: Option<&Digest>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + namespace.len() + 1 + 8 + 32);
    bytes.extend_from_slice(&(namespace.len() as u64).to_be_bytes());
    bytes.extend_from_slice(namespace);
    bytes.push(tag);
    bytes.extend_from_slice(&view.to_be_bytes());
    if let Some(digest) = digest {
        bytes.extend_from_slice(digest.as_slice());
    }
    bytes
}

/// A signed vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// What is voted for.
    pub kind: VoteKind,
    /// Who votes.
    pub signer: ValidatorIndex,
    /// Signature of `signer` over [`VoteKind::signing_bytes`].
    pub signature: Signature,
}

impl Vote {
    /// Signs `kind` as validator `signer`.
    pub fn sign(
        kind: VoteKind,
        signer: ValidatorIndex,
        namespace: &[u8],
        key: &SigningKey,
    ) -> Vote {
        Vote {
            kind,
            signer,
            signature: key.sign(&kind.signing_bytes(namespace)),
        }
    }

    /// Checks the signature against the signer's key in `validators`.
    pub fn verify(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
    ) -> Result<(), ConsensusError> {
        if self.kind.view() == 0 {
            return Err(ConsensusError::GenesisView);
        }
        let key = validators
            .key(self.signer)
            .ok_or(ConsensusError::UnknownSigner(self.signer))?;
        key.verify_strict(&self.kind.signing_bytes(namespace), &self.signature)
            .map_err(|_| ConsensusError::BadSignature(self.signer))
    }
}

/// A quorum of votes of one kind: proof that `n - f` distinct validators signed `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// What the signers voted for.
    pub kind: VoteKind,
    /// `(signer, signature)` in strictly increasing signer order.
    pub signatures: Vec<(ValidatorIndex, Signature)>,
}

impl Certificate {
    /// Checks the shape (between `quorum` and `n` signers, strictly increasing, all in the set)
    /// and every signature (batch-verified).
    pub fn verify(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
    ) -> Result<(), ConsensusError> {
        self.verify_except(namespace, validators, |_, _| false)
    }

    /// Like [`Certificate::verify`], but skips signatures for which `known(signer, signature)`
    /// says they were verified before.
    pub(crate) fn verify_except(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
        known: impl Fn(ValidatorIndex, &Signature) -> bool,
    ) -> Result<(), ConsensusError> {
        self.check_shape(validators)?;
        let message = self.kind.signing_bytes(namespace);
        let mut keys = Vec::new();
        let mut signatures = Vec::new();
        for (signer, signature) in &self.signatures {
            if known(*signer, signature) {
                continue;
            }
            keys.push(
                *validators
                    .key(*signer)
                    .ok_or(ConsensusError::UnknownSigner(*signer))?,
            );
            signatures.push(*signature);
        }
        if verify_same_message(&message, &keys, &signatures) {
            Ok(())
        } else {
            Err(ConsensusError::BadCertificate)
        }
    }

    fn check_shape(&self, validators: &ValidatorSet) -> Result<(), ConsensusError> {
        if self.kind.view() == 0 {
            return Err(ConsensusError::GenesisView);
        }
        let got = self.signatures.len();
        if got < validators.quorum() || got > validators.len() {
            return Err(ConsensusError::SignerCount {
                got,
                need: validators.quorum(),
                max: validators.len(),
            });
        }
        let mut previous: Option<ValidatorIndex> = None;
        for (signer, _) in &self.signatures {
            if validators.key(*signer).is_none() {
                return Err(ConsensusError::UnknownSigner(*signer));
            }
            if previous.is_some_and(|p| p >= *signer) {
                return Err(ConsensusError::UnorderedSigners(*signer));
            }
            previous = Some(*signer);
        }
        Ok(())
    }

    /// The signers, in increasing order.
    pub fn signers(&self) -> Vec<ValidatorIndex> {
        self.signatures.iter().map(|(s, _)| *s).collect()
    }

    /// The individual votes the certificate is made of.
    pub fn votes(&self) -> impl Iterator<Item = Vote> + '_ {
        self.signatures.iter().map(|(signer, signature)| Vote {
            kind: self.kind,
            signer: *signer,
            signature: *signature,
        })
    }
}

/// Whether every signature is valid for `message` under the key at the same position: one
/// batch verification (deterministic in ed25519-dalek) for two or more.
pub(crate) fn verify_same_message(
    message: &[u8],
    keys: &[VerifyingKey],
    signatures: &[Signature],
) -> bool {
    match (keys, signatures) {
        ([], []) => true,
        ([key], [signature]) => key.verify_strict(message, signature).is_ok(),
        _ if keys.len() == signatures.len() => {
            let messages = vec![message; keys.len()];
            ed25519_dalek::verify_batch(&messages, signatures, keys).is_ok()
        }
        _ => false,
    }
}

/// A block proposed by the leader of `block.view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposed block.
    pub block: Block,
    /// The leader's signature over `(namespace, propose tag, view, block digest)`.
    pub signature: Signature,
}

impl Proposal {
    /// Signs `block` (as the leader of its view).
    pub fn sign(block: Block, namespace: &[u8], key: &SigningKey) -> Proposal {
        let bytes = signing_bytes(namespace, TAG_PROPOSE, block.view, Some(&block.digest()));
        Proposal {
            signature: key.sign(&bytes),
            block,
        }
    }

    /// Checks that the block's view is not genesis and that its leader signed it.
    pub fn verify(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
    ) -> Result<(), ConsensusError> {
        self.verify_with_digest(namespace, validators, &self.block.digest())
    }

    pub(crate) fn verify_with_digest(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
        digest: &Digest,
    ) -> Result<(), ConsensusError> {
        let view = self.block.view;
        if view == 0 {
            return Err(ConsensusError::GenesisView);
        }
        let leader = validators.leader(view);
        let key = validators
            .key(leader)
            .ok_or(ConsensusError::UnknownSigner(leader))?;
        key.verify_strict(
            &signing_bytes(namespace, TAG_PROPOSE, view, Some(digest)),
            &self.signature,
        )
        .map_err(|_| ConsensusError::NotLeader { view, leader })
    }
}

/// Everything validators send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A leader's block for its view.
    Propose(Proposal),
    /// One validator's vote.
    Vote(Vote),
    /// A quorum of votes.
    Certificate(Certificate),
}

impl Message {
    /// The canonical encoding (the wire format).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes untrusted bytes, refusing more than `limit` bytes and trailing garbage. The
    /// result is not verified: call [`Message::verify`] or let the engine do it.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Message, ConsensusError> {
        codec::decode_bounded(bytes, limit).map_err(|e| ConsensusError::Decode(e.to_string()))
    }

    /// Checks every signature against `validators`, without any consensus state. Meant for the
    /// network layer, to drop and penalise garbage before it reaches an engine; the engine
    /// verifies again (with a cache), so calling this is optional.
    pub fn verify(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
    ) -> Result<(), ConsensusError> {
        match self {
            Message::Propose(p) => p.verify(namespace, validators),
            Message::Vote(v) => v.verify(namespace, validators),
            Message::Certificate(c) => c.verify(namespace, validators),
        }
    }

    /// The view the message is about.
    pub fn view(&self) -> u64 {
        match self {
            Message::Propose(p) => p.block.view,
            Message::Vote(v) => v.kind.view(),
            Message::Certificate(c) => c.kind.view(),
        }
    }
}

/// What the engine makes durable before acting on it: its own signed votes and proposals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    /// A vote this validator signed.
    Voted(Vote),
    /// A block this validator proposed as leader.
    Proposed(Proposal),
    /// A certificate this validator assembled or received. Not needed for safety, but after
    /// all validators restart at once, these are the only record of which views ended and
    /// how, without which no later proposal could be justified.
    Certified(Certificate),
}

impl WalEntry {
    /// The view the entry is about.
    pub fn view(&self) -> u64 {
        match self {
            WalEntry::Voted(v) => v.kind.view(),
            WalEntry::Proposed(p) => p.block.view,
            WalEntry::Certified(c) => c.kind.view(),
        }
    }
}

/// Two signed messages from one validator that no honest validator would sign both of: two
/// proposals or two notarize votes for different blocks in one view, two finalize votes for
/// different blocks, or a nullify and a finalize vote for one view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The misbehaving validator.
    pub signer: ValidatorIndex,
    /// The view of both messages.
    pub view: u64,
    /// The message seen first.
    pub first: Message,
    /// The conflicting message.
    pub second: Message,
}

impl Evidence {
    /// Checks that both messages are correctly signed by `signer`, are for `view`, and
    /// conflict. Anyone holding the validator set can check evidence this way.
    pub fn verify(
        &self,
        namespace: &[u8],
        validators: &ValidatorSet,
    ) -> Result<(), ConsensusError> {
        for message in [&self.first, &self.second] {
            message.verify(namespace, validators)?;
            let signer = match message {
                Message::Propose(p) => validators.leader(p.block.view),
                Message::Vote(v) => v.signer,
                Message::Certificate(_) => return Err(ConsensusError::NotConflicting),
            };
            if signer != self.signer || message.view() != self.view {
                return Err(ConsensusError::NotConflicting);
            }
        }
        let conflicting = match (&self.first, &self.second) {
            (Message::Propose(a), Message::Propose(b)) => a.block != b.block,
            (Message::Vote(a), Message::Vote(b)) => conflicts(&a.kind, &b.kind),
            _ => false,
        };
        if conflicting {
            Ok(())
        } else {
            Err(ConsensusError::NotConflicting)
        }
    }
}

/// Whether one honest validator could never sign both votes (both assumed for one view).
pub(crate) fn conflicts(a: &VoteKind, b: &VoteKind) -> bool {
    match (a, b) {
        (VoteKind::Notarize { digest: x, .. }, VoteKind::Notarize { digest: y, .. })
        | (VoteKind::Finalize { digest: x, .. }, VoteKind::Finalize { digest: y, .. }) => x != y,
        (VoteKind::Nullify { .. }, VoteKind::Finalize { .. })
        | (VoteKind::Finalize { .. }, VoteKind::Nullify { .. }) => true,
        _ => false,
    }
}
