//! BFT ordering for one shard as a pure state machine: [`Engine::handle`] takes an [`Input`]
//! (a network message, a timer expiry, an application answer) and returns the [`Output`]s the
//! driver must carry out (persist, broadcast, arm a timer, ask the application, fetch a block,
//! commit a finalized block). No clock, sockets, threads or randomness inside, so whole networks
//! run deterministically in [`sim`].
//!
//! # Protocol
//!
//! Simplex consensus: B. Y. Chan and R. Pass, "Simplex Consensus: A Simple and Fast Consensus
//! Protocol", TCC 2023 (IACR ePrint 2023/463); the variant with nullify and finalize votes of
//! commonware's `consensus::simplex`. `n` validators tolerate `f = (n - 1) / 3` Byzantine ones;
//! a certificate is `q = n - f` votes of distinct validators (`2f + 1` when `n = 3f + 1`).
//!
//! - Views `1, 2, ...`; the leader of view `v` is validator `v mod n`. Genesis is block
//!   `(view 0, height 0)`, final by definition.
//! - On entering `v` a node arms the view timer. The leader builds on the block notarized in the
//!   highest view `u < v` such that it holds a nullification of every view in `(u, v)` (the
//!   last finalized block stands for its own view), with height `parent + 1`.
//! - A node votes `Notarize(v, d)` for the first correctly signed proposal of `v`'s leader
//!   if it has not nullified `v`, the parent is its finalized block or a notarized block above
//!   it, it holds nullifications of all views between the parent's view and `v`, it holds the
//!   parent's whole un-finalized ancestry, and the application accepted the payload.
//! - `q` notarize votes for `(v, d)` are a notarization. A node holding one passes it on, enters
//!   `v + 1` (pipelining: `v + 1` starts while `v`'s finalize votes are in flight) and, if it
//!   did not nullify `v`, votes `Finalize(v, d)`.
//! - When the timer fires in `v` (or `v`'s proposal is unusable) a node votes `Nullify(v)`;
//!   `q` of them are a nullification, on which a node passes it on and enters `v + 1`.
//! - `q` finalize votes for `(v, d)` are a finalization: `d` and all its ancestors are final.
//! - Any valid certificate for a view `w >=` the current one moves a node to `w + 1`. A node
//!   leaving a notarized view that it did not nullify votes to finalize it; it does not vote
//!   for views it skipped.
//!
//! Signatures cover `(namespace, kind, view, digest)`; the namespace (chain id and shard) comes
//! from the [`Config`], so signatures do not transfer between chains or shards. Nothing is
//! used before its signatures are verified against the validator set, but votes are verified
//! lazily: they wait unverified until, counted with the verified ones, they could make a
//! certificate, and are then checked in one batch (falling back to one by one if the batch
//! fails); votes arriving after the certificate are never checked, and signatures already
//! verified (as votes or inside certificates) are not checked again. A signer gets one waiting
//! slot for notarize votes and one for nullify or finalize votes, and a second, different vote
//! in a slot settles both at once, so a forgery cannot crowd out the real vote. A validator that signs two conflicting messages for
//! one view (two proposals, two notarize or two finalize votes for different blocks, a nullify
//! and a finalize vote) is reported as [`Output::Evidence`] carrying both signed messages;
//! the second one is ignored.
//!
//! # Safety
//!
//! With at most `f` Byzantine validators, no two honest nodes finalize different blocks at
//! one height. This is the consistency argument of Chan and Pass, restated for separate
//! nullify and finalize votes:
//!
//! 1. *One notarization per view.* Two notarizations of `v` for different blocks would need
//!    `2q > n + f` votes, so some honest node voted twice in `v`; honest nodes vote notarize
//!    at most once per view, across restarts thanks to the write-ahead log.
//! 2. *A finalized view is never nullified.* A finalization of `v` holds `q` finalize votes, at
//!    least `q - f >= f + 1` of them honest. An honest node votes finalize only if it has not
//!    nullified `v`, and only when leaving `v`, after which it never nullifies `v`. So at most
//!    `n - (f + 1) < q` nullify votes for `v` exist, too few for a nullification.
//! 3. *Every later notarized block extends the finalized one.* Let `B` be finalized in view
//!    `v`. A block notarized in a view `w > v` has at least one honest voter, which checked
//!    that its parent was notarized in a view `u < w` and that every view in `(u, w)` was
//!    nullified. By (2) `v` is not nullified, so `u >= v`; if `u = v` the parent is `B` by (1),
//!    and if `u > v` the parent extends `B` by induction on `w`.
//!
//! A finalization of a block at height `h` in view `w >= v` therefore names a descendant of
//! `B` (or `B` itself), so both agree at every height up to `B`'s.
//!
//! # Liveness
//!
//! After the network stabilises (messages between honest nodes arrive within some `Δ`), views
//! whose timeout exceeds the time for a proposal, its checking and two vote rounds (about
//! `3Δ` plus the application's time) and whose leader is honest notarize that leader's block,
//! and honest nodes then finalize it (the liveness argument of Chan and Pass). Timeouts grow by
//! `growth_percent` per consecutive nullified view up to `max_ms`, so an unknown `Δ` is
//! eventually covered; they fall back to `base_ms` after a notarized view. Because lost
//! messages (before or after stabilisation) would otherwise leave nodes in different views,
//! a node whose view timed out re-sends its votes of the view, the certificates that justify
//! its view and its block requests every `retry_ms` until it leaves the view; missing blocks are
//! also asked for again, from the next peer, on every new view. Crashed validators count
//! towards `f`.
//!
//! # Write-ahead log
//!
//! Before any vote or proposal leaves, the engine emits [`Output::Persist`] with the signed
//! message, ahead of the [`Output::Broadcast`] in the same batch; the driver must make it
//! durable before acting on the outputs after it. This is what safety needs. Certificates the
//! node assembles or receives are persisted too ([`WalEntry::Certified`]): they are not needed
//! for safety, but when every validator restarts at once they are the only record of how the
//! views since the last finalized block ended, without which no later proposal could be
//! justified. On restart, [`Engine::new`] receives the last finalized block and the persisted
//! entries ([`Recovery`]); it never signs a vote or proposal conflicting with one of them,
//! re-sends those of the view it resumes in, resumes after the highest view it acted in or
//! holds a certificate for, and catches up from the certificates it receives. The driver may
//! drop entries at or below the finalized block's view.
//!
//! After such a restart of every validator, the block of a notarized but not yet final view
//! survives only in its proposer's WAL; should that be lost too, honest nodes that voted to
//! finalize the view can never nullify it, and the chain stalls. That takes more than `f`
//! faults at once, including lost storage.
//!
//! # Driver contract
//!
//! - Feed every message from a peer as [`Input::Message`]; the engine verifies it and drops
//!   garbage silently ([`Message::verify`] lets the network layer drop and penalise it first).
//! - Carry out each batch of outputs in order. `SetTimer` replaces the one pending timer;
//!   expiry is [`Input::Timeout`] with the view it was set for.
//! - `Propose` asks for a payload on the given parent (answer [`Input::Proposal`]; to pace
//!   blocks, the leader's driver may delay the answer, staying well within the view timeout).
//!   `Verify` asks for a verdict (answer [`Input::Verified`]). Both pass the un-finalized
//!   ancestry, so the application keeps no pending-block state of its own.
//! - `Fetch` asks for a block: ask the first of `peers` (the engine rotates the list when it
//!   repeats an unanswered request). The peer serves it from [`Engine::block`] or, for a
//!   finalized block, from its own block store (a restarted engine holds only its last
//!   finalized block and its own WAL's proposals). The answer comes back as
//!   [`Input::Fetched`].
//! - `Finalized` comes in height order, each height once; commit it and keep the latest as
//!   [`Recovery::finalized`]. `Evidence` is for logging and slashing; the engine has already
//!   dealt with it.
//! - A node lagging by more than `retain` heights cannot fetch the missing finalized blocks
//!   from its peers' engines: the node must sync finalized blocks another way and restart the
//!   engine from the newer finalized block.

mod config;
mod engine;
mod error;
pub mod sim;
#[cfg(test)]
mod tests;
mod types;

pub use config::{Config, Timeouts};
pub use engine::{Engine, Input, Output, Recovery, MAX_VIEWS_AHEAD};
pub use error::ConsensusError;
pub use types::{
    Block, Certificate, Digest, Evidence, Message, Proposal, ValidatorIndex, ValidatorSet, Vote,
    VoteKind, WalEntry,
};
