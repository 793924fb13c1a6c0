//! Input -> output tables for the engine, and the wire format.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use crate::sim::signing_key;
use crate::*;

const NS: &[u8] = b"tessera/test/0";

struct Net {
    keys: Vec<SigningKey>,
    config: Config,
}

fn net(n: u32) -> Net {
    let keys: Vec<SigningKey> = (0..n).map(signing_key).collect();
    let validators =
        ValidatorSet::new(keys.iter().map(SigningKey::verifying_key).collect()).unwrap();
    Net {
        config: Config {
            namespace: NS.to_vec(),
            validators,
            timeouts: Timeouts::default(),
            retain: 16,
        },
        keys,
    }
}

impl Net {
    fn start(&self, i: ValidatorIndex) -> (Engine, Vec<Output>) {
        self.restart(i, genesis(), Vec::new())
    }

    fn restart(
        &self,
        i: ValidatorIndex,
        finalized: Block,
        wal: Vec<WalEntry>,
    ) -> (Engine, Vec<Output>) {
        Engine::new(
            self.config.clone(),
            self.keys[i as usize].clone(),
            Recovery { finalized, wal },
        )
        .unwrap()
    }

    fn vote(&self, i: ValidatorIndex, kind: VoteKind) -> Vote {
        Vote::sign(kind, i, NS, &self.keys[i as usize])
    }

    fn vote_msg(&self, i: ValidatorIndex, kind: VoteKind) -> Input {
        Input::Message(Message::Vote(self.vote(i, kind)))
    }

    /// A block of `view` on `parent`, proposed by the view's leader.
    fn propose(&self, view: u64, parent: &Block, payload: &[u8]) -> Proposal {
        let block = Block {
            view,
            height: parent.height + 1,
            parent: parent.digest(),
            payload: payload.to_vec(),
        };
        let leader = self.config.validators.leader(view);
        Proposal::sign(block, NS, &self.keys[leader as usize])
    }

    fn cert(&self, kind: VoteKind, signers: &[ValidatorIndex]) -> Certificate {
        Certificate {
            kind,
            signatures: signers
                .iter()
                .map(|i| (*i, self.vote(*i, kind).signature))
                .collect(),
        }
    }

    fn cert_msg(&self, kind: VoteKind, signers: &[ValidatorIndex]) -> Input {
        Input::Message(Message::Certificate(self.cert(kind, signers)))
    }
}

fn genesis() -> Block {
    Block::genesis(b"test genesis".to_vec())
}

fn notarize(view: u64, block: &Block) -> VoteKind {
    VoteKind::Notarize {
        view,
        digest: block.digest(),
    }
}

fn finalize(view: u64, block: &Block) -> VoteKind {
    VoteKind::Finalize {
        view,
        digest: block.digest(),
    }
}

fn nullify(view: u64) -> VoteKind {
    VoteKind::Nullify { view }
}

fn timer(view: u64, after_ms: u64) -> Output {
    Output::SetTimer { view, after_ms }
}

fn persist_vote(vote: &Vote) -> Output {
    Output::Persist(WalEntry::Voted(vote.clone()))
}

fn send_vote(vote: &Vote) -> Output {
    Output::Broadcast(Message::Vote(vote.clone()))
}

fn persist_cert(cert: &Certificate) -> Output {
    Output::Persist(WalEntry::Certified(cert.clone()))
}

fn send_cert(cert: &Certificate) -> Output {
    Output::Broadcast(Message::Certificate(cert.clone()))
}

fn wal(outputs: &[Output]) -> Vec<WalEntry> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Persist(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Node 0 of four, having voted for the leader's block `b1` of view 1.
fn voted_in_view_1(net: &Net) -> (Engine, Block, Vec<Output>) {
    let (mut e, _) = net.start(0);
    let p1 = net.propose(1, &genesis(), b"one");
    let b1 = p1.block.clone();
    assert_eq!(
        e.handle(Input::Message(Message::Propose(p1))),
        vec![Output::Verify {
            block: b1.clone(),
            ancestry: vec![]
        }]
    );
    let out = e.handle(Input::Verified {
        digest: b1.digest(),
        valid: true,
    });
    (e, b1, out)
}

#[test]
fn validator_set_rules() {
    assert_eq!(
        ValidatorSet::new(vec![]),
        Err(ConsensusError::EmptyValidatorSet)
    );
    let k = signing_key(0).verifying_key();
    let l = signing_key(1).verifying_key();
    assert_eq!(
        ValidatorSet::new(vec![k, l, k]),
        Err(ConsensusError::DuplicateValidator {
            first: 0,
            second: 2
        })
    );
    for (n, f, q) in [
        (1, 0, 1),
        (2, 0, 2),
        (3, 0, 3),
        (4, 1, 3),
        (5, 1, 4),
        (7, 2, 5),
        (10, 3, 7),
    ] {
        let set = net(n).config.validators;
        assert_eq!(
            (set.len(), set.max_faulty(), set.quorum()),
            (n as usize, f, q),
            "n = {n}"
        );
    }
    let set = net(4).config.validators;
    assert_eq!(
        (1..=8).map(|v| set.leader(v)).collect::<Vec<_>>(),
        vec![1, 2, 3, 0, 1, 2, 3, 0]
    );
    assert_eq!(set.index_of(&l), Some(1));
    assert_eq!(set.index_of(&signing_key(9).verifying_key()), None);
    assert_eq!(set.key(4), None);
}

#[test]
fn timeouts_grow_and_cap() {
    let t = Timeouts {
        base_ms: 100,
        growth_percent: 150,
        max_ms: 400,
        retry_ms: 50,
    };
    let grown: Vec<u64> = (0..6).map(|k| t.view_timeout(k)).collect();
    assert_eq!(grown, vec![100, 150, 225, 337, 400, 400]);
    assert_eq!(t.view_timeout(u32::MAX), 400);
    let net4 = net(4);
    for bad in [
        Timeouts { base_ms: 0, ..t },
        Timeouts {
            growth_percent: 99,
            ..t
        },
        Timeouts { max_ms: 99, ..t },
        Timeouts { retry_ms: 0, ..t },
    ] {
        let config = Config {
            timeouts: bad,
            ..net4.config.clone()
        };
        let started = Engine::new(
            config,
            net4.keys[0].clone(),
            Recovery {
                finalized: genesis(),
                wal: vec![],
            },
        );
        assert!(matches!(started, Err(ConsensusError::InvalidConfig(_))));
    }
}

#[test]
fn key_must_be_in_the_set() {
    let net4 = net(4);
    let started = Engine::new(
        net4.config.clone(),
        signing_key(4),
        Recovery {
            finalized: genesis(),
            wal: vec![],
        },
    );
    assert!(matches!(started, Err(ConsensusError::NotAValidator)));
}

#[test]
fn leader_asks_for_a_payload_on_entering_its_view() {
    let net4 = net(4);
    let (_, out) = net4.start(1);
    assert_eq!(
        out,
        vec![
            timer(1, 1_000),
            Output::Propose {
                view: 1,
                height: 1,
                parent: genesis().digest(),
                ancestry: vec![]
            }
        ]
    );
    let (e, out) = net4.start(0);
    assert_eq!(out, vec![timer(1, 1_000)]);
    assert_eq!((e.view(), e.me(), e.finalized()), (1, 0, &genesis()));
}

#[test]
fn leader_persists_then_sends_its_proposal_and_vote() {
    let net4 = net(4);
    let (mut e, _) = net4.start(1);
    let out = e.handle(Input::Proposal {
        view: 1,
        parent: genesis().digest(),
        payload: b"one".to_vec(),
    });
    let p = net4.propose(1, &genesis(), b"one");
    let v = net4.vote(1, notarize(1, &p.block));
    assert_eq!(
        out,
        vec![
            Output::Persist(WalEntry::Proposed(p.clone())),
            Output::Broadcast(Message::Propose(p.clone())),
            persist_vote(&v),
            send_vote(&v),
        ]
    );
    assert_eq!(e.block(&p.block.digest()), Some(&p.block));
    // A late or repeated answer changes nothing.
    let again = e.handle(Input::Proposal {
        view: 1,
        parent: genesis().digest(),
        payload: b"other".to_vec(),
    });
    assert_eq!(again, vec![]);
}

#[test]
fn votes_once_for_the_first_proposal_and_reports_the_second() {
    let net4 = net(4);
    let (mut e, b1, out) = voted_in_view_1(&net4);
    let v = net4.vote(0, notarize(1, &b1));
    assert_eq!(out, vec![persist_vote(&v), send_vote(&v)]);
    // The same proposal again is a duplicate; a different one is evidence, not a second vote.
    let p1 = net4.propose(1, &genesis(), b"one");
    assert_eq!(
        e.handle(Input::Message(Message::Propose(p1.clone()))),
        vec![]
    );
    let twin = net4.propose(1, &genesis(), b"twin");
    let out = e.handle(Input::Message(Message::Propose(twin.clone())));
    let evidence = Evidence {
        signer: 1,
        view: 1,
        first: Message::Propose(p1),
        second: Message::Propose(twin),
    };
    assert_eq!(out, vec![Output::Evidence(evidence.clone())]);
    assert_eq!(evidence.verify(NS, &net4.config.validators), Ok(()));
    assert_eq!(
        e.handle(Input::Verified {
            digest: b1.digest(),
            valid: true
        }),
        vec![]
    );
}

#[test]
fn rejected_payload_nullifies_at_once() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    let p1 = net4.propose(1, &genesis(), b"bad");
    e.handle(Input::Message(Message::Propose(p1.clone())));
    let out = e.handle(Input::Verified {
        digest: p1.block.digest(),
        valid: false,
    });
    let x = net4.vote(0, nullify(1));
    assert_eq!(out, vec![persist_vote(&x), send_vote(&x)]);
}

#[test]
fn proposal_from_a_non_leader_or_on_a_bad_parent_is_not_voted() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    // Signed by validator 2, but view 1 belongs to validator 1.
    let block = Block {
        view: 1,
        height: 1,
        parent: genesis().digest(),
        payload: vec![],
    };
    let forged = Proposal::sign(block, NS, &net4.keys[2]);
    assert_eq!(e.handle(Input::Message(Message::Propose(forged))), vec![]);
    // The leader's block with a wrong height is unusable: nullify without asking the app.
    let mut block = net4.propose(1, &genesis(), b"x").block;
    block.height = 5;
    let wrong_height = Proposal::sign(block, NS, &net4.keys[1]);
    let out = e.handle(Input::Message(Message::Propose(wrong_height)));
    let x = net4.vote(0, nullify(1));
    assert_eq!(out, vec![persist_vote(&x), send_vote(&x)]);
}

#[test]
fn notarization_brings_a_finalize_vote_and_the_next_view() {
    let net4 = net(4);
    let (mut e, b1, _) = voted_in_view_1(&net4);
    assert_eq!(e.handle(net4.vote_msg(1, notarize(1, &b1))), vec![]);
    let out = e.handle(net4.vote_msg(2, notarize(1, &b1)));
    let notarization = net4.cert(notarize(1, &b1), &[0, 1, 2]);
    let f0 = net4.vote(0, finalize(1, &b1));
    assert_eq!(
        out,
        vec![
            persist_cert(&notarization),
            send_cert(&notarization),
            persist_vote(&f0),
            send_vote(&f0),
            timer(2, 1_000),
        ]
    );
    assert_eq!(e.view(), 2);
    // A fourth notarize vote arrives after the certificate: nothing to do.
    assert_eq!(e.handle(net4.vote_msg(3, notarize(1, &b1))), vec![]);
    assert_eq!(e.handle(net4.vote_msg(1, finalize(1, &b1))), vec![]);
    let out = e.handle(net4.vote_msg(3, finalize(1, &b1)));
    let finalization = net4.cert(finalize(1, &b1), &[0, 1, 3]);
    assert_eq!(
        out,
        vec![
            persist_cert(&finalization),
            send_cert(&finalization),
            Output::Finalized {
                block: b1.clone(),
                certificate: Some(finalization.clone())
            },
        ]
    );
    assert_eq!(e.finalized(), &b1);
    assert_eq!(e.last_finalization(), Some(&finalization));
    // The same finalization again does not finalize twice.
    assert_eq!(
        e.handle(Input::Message(Message::Certificate(finalization))),
        vec![]
    );
}

#[test]
fn timeout_nullifies_and_then_no_finalize_vote() {
    let net4 = net(4);
    let (mut e, b1, _) = voted_in_view_1(&net4);
    let x0 = net4.vote(0, nullify(1));
    let n0 = net4.vote(0, notarize(1, &b1));
    assert_eq!(
        e.handle(Input::Timeout { view: 1 }),
        vec![
            persist_vote(&x0),
            send_vote(&x0),
            send_vote(&n0),
            timer(1, 1_000)
        ]
    );
    // While stuck, every retry re-sends the node's votes of the view.
    assert_eq!(
        e.handle(Input::Timeout { view: 1 }),
        vec![send_vote(&x0), send_vote(&n0), timer(1, 1_000)]
    );
    let notarization = net4.cert(notarize(1, &b1), &[1, 2, 3]);
    let out = e.handle(Input::Message(Message::Certificate(notarization.clone())));
    assert_eq!(
        out,
        vec![
            persist_cert(&notarization),
            send_cert(&notarization),
            timer(2, 1_000)
        ]
    );
    assert_eq!(e.view(), 2);
    // Stale timers are ignored.
    assert_eq!(e.handle(Input::Timeout { view: 1 }), vec![]);
}

#[test]
fn nullification_moves_on_with_a_longer_timeout() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    e.handle(Input::Timeout { view: 1 });
    assert_eq!(e.handle(net4.vote_msg(1, nullify(1))), vec![]);
    let out = e.handle(net4.vote_msg(3, nullify(1)));
    let nullification = net4.cert(nullify(1), &[0, 1, 3]);
    assert_eq!(
        out,
        vec![
            persist_cert(&nullification),
            send_cert(&nullification),
            timer(2, 1_500)
        ]
    );
    // The leader of view 2 builds on genesis through the nullified view 1.
    let (mut leader, _) = net4.start(2);
    let out = leader.handle(Input::Message(Message::Certificate(nullification.clone())));
    assert_eq!(
        out,
        vec![
            persist_cert(&nullification),
            send_cert(&nullification),
            timer(2, 1_500),
            Output::Propose {
                view: 2,
                height: 1,
                parent: genesis().digest(),
                ancestry: vec![]
            },
        ]
    );
    // A proposal of view 2 on genesis is voted by a node holding the nullification.
    let p2 = net4.propose(2, &genesis(), b"two");
    let out = e.handle(Input::Message(Message::Propose(p2.clone())));
    assert_eq!(
        out,
        vec![Output::Verify {
            block: p2.block,
            ancestry: vec![]
        }]
    );
}

#[test]
fn proposal_skipping_a_view_without_nullification_waits() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    // View 1 ended by a nullification of view 2 only (a jump): view 1 itself is unknown.
    e.handle(net4.cert_msg(nullify(2), &[1, 2, 3]));
    assert_eq!(e.view(), 3);
    let p3 = net4.propose(3, &genesis(), b"three");
    assert_eq!(
        e.handle(Input::Message(Message::Propose(p3.clone()))),
        vec![]
    );
    // Once view 1's nullification arrives, the proposal can be checked.
    let out = e.handle(net4.cert_msg(nullify(1), &[1, 2, 3]));
    let nullification = net4.cert(nullify(1), &[1, 2, 3]);
    assert_eq!(
        out,
        vec![
            persist_cert(&nullification),
            Output::Verify {
                block: p3.block,
                ancestry: vec![]
            }
        ]
    );
}

#[test]
fn equivocating_votes_give_evidence() {
    let net4 = net(4);
    let (mut e, b1, _) = voted_in_view_1(&net4);
    let other = net4.propose(1, &genesis(), b"twin").block;
    let first = net4.vote(2, notarize(1, &b1));
    let second = net4.vote(2, notarize(1, &other));
    assert_eq!(
        e.handle(Input::Message(Message::Vote(first.clone()))),
        vec![]
    );
    let out = e.handle(Input::Message(Message::Vote(second.clone())));
    let evidence = Evidence {
        signer: 2,
        view: 1,
        first: Message::Vote(first),
        second: Message::Vote(second),
    };
    assert_eq!(out, vec![Output::Evidence(evidence.clone())]);
    assert_eq!(evidence.verify(NS, &net4.config.validators), Ok(()));
    // A nullify and a finalize vote for one view conflict as well.
    let (mut e, _) = net4.start(0);
    let x = net4.vote(3, nullify(1));
    let f = net4.vote(3, finalize(1, &b1));
    assert_eq!(e.handle(Input::Message(Message::Vote(x.clone()))), vec![]);
    let out = e.handle(Input::Message(Message::Vote(f.clone())));
    assert_eq!(
        out,
        vec![Output::Evidence(Evidence {
            signer: 3,
            view: 1,
            first: Message::Vote(x.clone()),
            second: Message::Vote(f),
        })]
    );
    // Reported once per signer and kind of misbehaviour.
    let f2 = net4.vote(3, finalize(1, &other));
    assert_eq!(e.handle(Input::Message(Message::Vote(f2))), vec![]);
    // Evidence must really conflict.
    let not_conflicting = Evidence {
        signer: 3,
        view: 1,
        first: Message::Vote(x.clone()),
        second: Message::Vote(x),
    };
    assert_eq!(
        not_conflicting.verify(NS, &net4.config.validators),
        Err(ConsensusError::NotConflicting)
    );
}

#[test]
fn bad_signatures_and_foreign_namespaces_are_ignored() {
    let net4 = net(4);
    let (mut e, b1, _) = voted_in_view_1(&net4);
    let kind = notarize(1, &b1);
    // Votes of validators 1 and 2 signed for another shard's namespace, and one claiming to be
    // validator 3 signed by validator 2: with node 0's own vote they would be a quorum.
    let foreign =
        |i: ValidatorIndex| Vote::sign(kind, i, b"tessera/test/1", &net4.keys[i as usize]);
    let impostor = Vote::sign(kind, 3, NS, &net4.keys[2]);
    for vote in [foreign(1), foreign(2), impostor] {
        assert!(Message::Vote(vote.clone())
            .verify(NS, &net4.config.validators)
            .is_err());
        assert_eq!(e.handle(Input::Message(Message::Vote(vote))), vec![]);
    }
    assert_eq!(e.view(), 1);
    // The forgeries occupy no one's place: the real votes still count.
    assert_eq!(e.handle(net4.vote_msg(1, kind)), vec![]);
    let out = e.handle(net4.vote_msg(3, kind));
    assert_eq!(out[0], persist_cert(&net4.cert(kind, &[0, 1, 3])));
    assert_eq!(e.view(), 2);
    // Unknown signers and view 0 are refused outright.
    let ghost = Vote::sign(kind, 7, NS, &net4.keys[0]);
    assert_eq!(
        Message::Vote(ghost.clone()).verify(NS, &net4.config.validators),
        Err(ConsensusError::UnknownSigner(7))
    );
    assert_eq!(e.handle(Input::Message(Message::Vote(ghost))), vec![]);
    let genesis_vote = net4.vote(1, nullify(0));
    assert_eq!(
        genesis_vote.verify(NS, &net4.config.validators),
        Err(ConsensusError::GenesisView)
    );
}

#[test]
fn certificates_need_a_quorum_of_distinct_valid_signers() {
    let net4 = net(4);
    let set = &net4.config.validators;
    let kind = nullify(1);
    let good = net4.cert(kind, &[0, 2, 3]);
    assert_eq!(good.verify(NS, set), Ok(()));
    assert_eq!(net4.cert(kind, &[0, 1, 2, 3]).verify(NS, set), Ok(()));
    let too_few = net4.cert(kind, &[0, 2]);
    let mut duplicate = net4.cert(kind, &[0, 2]);
    duplicate.signatures.push(duplicate.signatures[1]);
    let mut unordered = good.clone();
    unordered.signatures.swap(0, 1);
    let mut unknown = good.clone();
    unknown.signatures[2].0 = 4;
    let mut forged = good.clone();
    forged.signatures[1].1 = net4.vote(2, nullify(2)).signature;
    let mut too_many = net4.cert(kind, &[0, 1, 2, 3]);
    too_many.signatures.push((4, too_many.signatures[0].1));
    let cases = [
        (
            too_few,
            ConsensusError::SignerCount {
                got: 2,
                need: 3,
                max: 4,
            },
        ),
        (duplicate, ConsensusError::UnorderedSigners(2)),
        (unordered, ConsensusError::UnorderedSigners(0)),
        (unknown, ConsensusError::UnknownSigner(4)),
        (forged, ConsensusError::BadCertificate),
        (
            too_many,
            ConsensusError::SignerCount {
                got: 5,
                need: 3,
                max: 4,
            },
        ),
    ];
    for (cert, error) in cases {
        assert_eq!(cert.verify(NS, set), Err(error.clone()), "{error}");
        let (mut e, _) = net4.start(0);
        assert_eq!(
            e.handle(Input::Message(Message::Certificate(cert))),
            vec![],
            "{error}"
        );
        assert_eq!(e.view(), 1);
    }
    assert_eq!(
        good.verify(b"tessera/test/1", set),
        Err(ConsensusError::BadCertificate)
    );
}

#[test]
fn lagging_node_jumps_on_certificates_without_finalize_votes() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    let nullification = net4.cert(nullify(5), &[1, 2, 3]);
    let out = e.handle(Input::Message(Message::Certificate(nullification.clone())));
    assert_eq!(
        out,
        vec![
            persist_cert(&nullification),
            send_cert(&nullification),
            timer(6, 1_500)
        ]
    );
    let b9 = Block {
        view: 9,
        height: 1,
        parent: genesis().digest(),
        payload: vec![9],
    };
    let notarization = net4.cert(notarize(9, &b9), &[1, 2, 3]);
    let out = e.handle(Input::Message(Message::Certificate(notarization.clone())));
    assert_eq!(
        out,
        vec![
            Output::Fetch {
                digest: b9.digest(),
                peers: vec![1, 2, 3]
            },
            persist_cert(&notarization),
            send_cert(&notarization),
            timer(10, 1_000),
        ]
    );
    assert_eq!(e.view(), 10);
}

#[test]
fn missing_parent_is_fetched_then_verified_with_its_ancestry() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    let b1 = net4.propose(1, &genesis(), b"one").block;
    let p2 = net4.propose(2, &b1, b"two");
    e.handle(net4.cert_msg(notarize(1, &b1), &[1, 2, 3]));
    assert_eq!(e.view(), 2);
    // The parent is being fetched already; the proposal waits for it.
    assert_eq!(
        e.handle(Input::Message(Message::Propose(p2.clone()))),
        vec![]
    );
    let unasked = net4.propose(5, &genesis(), b"five").block;
    assert_eq!(
        e.handle(Input::Fetched {
            block: unasked.clone()
        }),
        vec![]
    );
    assert_eq!(e.block(&unasked.digest()), None);
    let out = e.handle(Input::Fetched { block: b1.clone() });
    assert_eq!(
        out,
        vec![Output::Verify {
            block: p2.block.clone(),
            ancestry: vec![b1.clone()]
        }]
    );
    let vote = net4.vote(0, notarize(2, &p2.block));
    assert_eq!(
        e.handle(Input::Verified {
            digest: p2.block.digest(),
            valid: true
        }),
        vec![persist_vote(&vote), send_vote(&vote)]
    );
}

#[test]
fn finalization_fetches_the_chain_and_finalizes_each_height_once() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    let b1 = net4.propose(1, &genesis(), b"one").block;
    let b2 = net4.propose(2, &b1, b"two").block;
    let finalization = net4.cert(finalize(2, &b2), &[1, 2, 3]);
    let out = e.handle(Input::Message(Message::Certificate(finalization.clone())));
    assert_eq!(
        out,
        vec![
            Output::Fetch {
                digest: b2.digest(),
                peers: vec![2, 1, 3]
            },
            persist_cert(&finalization),
            send_cert(&finalization),
            timer(3, 1_000),
        ]
    );
    assert_eq!(
        e.handle(Input::Fetched { block: b2.clone() }),
        vec![Output::Fetch {
            digest: b1.digest(),
            peers: vec![2, 1, 3]
        }]
    );
    assert_eq!(
        e.handle(Input::Fetched { block: b1.clone() }),
        vec![
            Output::Finalized {
                block: b1.clone(),
                certificate: None
            },
            Output::Finalized {
                block: b2.clone(),
                certificate: Some(finalization.clone())
            },
        ]
    );
    assert_eq!(e.finalized(), &b2);
    assert_eq!(e.block(&b1.digest()), Some(&b1));
    assert_eq!(
        e.handle(Input::Message(Message::Certificate(finalization))),
        vec![]
    );
    assert_eq!(e.handle(Input::Fetched { block: b1 }), vec![]);
}

#[test]
fn unanswered_fetches_are_repeated_with_rotated_peers() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    let b1 = net4.propose(1, &genesis(), b"one").block;
    let out = e.handle(net4.cert_msg(nullify(1), &[1, 2, 3]));
    assert_eq!(out.len(), 3);
    // Block b1 of view 1 is notarized too; nobody has sent it.
    let out = e.handle(net4.cert_msg(notarize(1, &b1), &[1, 2, 3]));
    let fetch = |peers: Vec<ValidatorIndex>| Output::Fetch {
        digest: b1.digest(),
        peers,
    };
    assert_eq!(
        out,
        vec![
            fetch(vec![1, 2, 3]),
            persist_cert(&net4.cert(notarize(1, &b1), &[1, 2, 3]))
        ]
    );
    let x0 = net4.vote(0, nullify(2));
    let out = e.handle(Input::Timeout { view: 2 });
    let justification = net4.cert(notarize(1, &b1), &[1, 2, 3]);
    assert_eq!(
        out,
        vec![
            persist_vote(&x0),
            send_vote(&x0),
            send_cert(&justification),
            timer(2, 1_000),
            fetch(vec![2, 3, 1]),
        ]
    );
    let out = e.handle(Input::Timeout { view: 2 });
    assert_eq!(out.last(), Some(&fetch(vec![3, 1, 2])));
}

#[test]
fn restart_never_signs_differently() {
    let net4 = net(4);
    let (_, b1, out) = voted_in_view_1(&net4);
    let n0 = net4.vote(0, notarize(1, &b1));
    let (mut e, out) = net4.restart(0, genesis(), wal(&out));
    assert_eq!(out, vec![timer(1, 1_000), send_vote(&n0)]);
    // A conflicting proposal of the (equivocating) leader is not voted after the restart.
    let twin = net4.propose(1, &genesis(), b"twin");
    assert_eq!(e.handle(Input::Message(Message::Propose(twin))), vec![]);
    assert_eq!(e.handle(net4.vote_msg(2, notarize(1, &b1))), vec![]);
    let out = e.handle(net4.vote_msg(3, notarize(1, &b1)));
    let f0 = net4.vote(0, finalize(1, &b1));
    assert!(out.contains(&send_vote(&f0)));

    // A nullify vote in the WAL forbids the finalize vote after the restart.
    let (mut e, _) = net4.start(0);
    let persisted = wal(&e.handle(Input::Timeout { view: 1 }));
    let (mut e, out) = net4.restart(0, genesis(), persisted);
    let x0 = net4.vote(0, nullify(1));
    assert_eq!(out, vec![timer(1, 1_000), send_vote(&x0)]);
    let out = e.handle(net4.cert_msg(notarize(1, &b1), &[1, 2, 3]));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Broadcast(Message::Vote(_)))));
    assert_eq!(e.view(), 2);

    // A leader that proposed does not ask for another payload for that view.
    let (mut leader, _) = net4.start(1);
    let persisted = wal(&leader.handle(Input::Proposal {
        view: 1,
        parent: genesis().digest(),
        payload: b"one".to_vec(),
    }));
    let p1 = net4.propose(1, &genesis(), b"one");
    let (mut leader, out) = net4.restart(1, genesis(), persisted);
    let n1 = net4.vote(1, notarize(1, &p1.block));
    assert_eq!(
        out,
        vec![
            timer(1, 1_000),
            Output::Broadcast(Message::Propose(p1)),
            send_vote(&n1)
        ]
    );
    let stale = leader.handle(Input::Proposal {
        view: 1,
        parent: genesis().digest(),
        payload: b"other".to_vec(),
    });
    assert_eq!(stale, vec![]);
}

#[test]
fn restart_resumes_after_the_highest_view_acted_in() {
    let net4 = net(4);
    let (mut e, b1, _) = voted_in_view_1(&net4);
    e.handle(net4.vote_msg(1, notarize(1, &b1)));
    let out = e.handle(net4.vote_msg(2, notarize(1, &b1)));
    let mut persisted = wal(&out);
    // Finalize vote for view 1 and the notarization are in the WAL: resume in view 2.
    let (e, out) = net4.restart(0, genesis(), persisted.clone());
    assert_eq!(e.view(), 2);
    let fetch = Output::Fetch {
        digest: b1.digest(),
        peers: vec![1, 2],
    };
    assert_eq!(
        out,
        vec![
            fetch,
            timer(2, 1_000),
            send_vote(&net4.vote(0, finalize(1, &b1)))
        ]
    );
    // Entries at or below the finalized block are ignored.
    let (e, _) = net4.restart(0, b1.clone(), persisted.clone());
    assert_eq!((e.view(), e.finalized()), (2, &b1));
    // Someone else's entries are refused.
    persisted.push(WalEntry::Voted(net4.vote(3, nullify(4))));
    let started = Engine::new(
        net4.config.clone(),
        net4.keys[0].clone(),
        Recovery {
            finalized: genesis(),
            wal: persisted,
        },
    );
    assert!(matches!(started, Err(ConsensusError::InvalidConfig(_))));
}

#[test]
fn single_validator_finalizes_every_view() {
    let net1 = net(1);
    let (mut e, out) = net1.start(0);
    let mut parent = genesis();
    assert_eq!(
        out,
        vec![
            timer(1, 1_000),
            Output::Propose {
                view: 1,
                height: 1,
                parent: parent.digest(),
                ancestry: vec![]
            }
        ]
    );
    for view in 1..=5 {
        let out = e.handle(Input::Proposal {
            view,
            parent: parent.digest(),
            payload: vec![view as u8],
        });
        let finalized: Vec<&Block> = out
            .iter()
            .filter_map(|o| match o {
                Output::Finalized {
                    block,
                    certificate: Some(cert),
                } if cert.signatures.len() == 1 => Some(block),
                _ => None,
            })
            .collect();
        assert_eq!(finalized.len(), 1);
        let block = finalized[0].clone();
        assert_eq!(
            (block.view, block.height, block.parent),
            (view, view, parent.digest())
        );
        assert_eq!(
            out.last(),
            Some(&Output::Propose {
                view: view + 1,
                height: view + 1,
                parent: block.digest(),
                ancestry: vec![]
            })
        );
        parent = block;
    }
    assert_eq!(e.finalized(), &parent);
    // A restart from the last finalized block goes on from there.
    let (_, out) = net1.restart(0, parent.clone(), vec![]);
    assert_eq!(
        out[1],
        Output::Propose {
            view: 6,
            height: 6,
            parent: parent.digest(),
            ancestry: vec![]
        }
    );
}

#[test]
fn stale_and_unsolicited_inputs_change_nothing() {
    let net4 = net(4);
    let (mut e, _) = net4.start(0);
    for input in [
        Input::Timeout { view: 0 },
        Input::Timeout { view: 2 },
        Input::Verified {
            digest: Digest::repeat_byte(1),
            valid: true,
        },
        Input::Proposal {
            view: 1,
            parent: genesis().digest(),
            payload: vec![],
        },
        Input::Fetched { block: genesis() },
        net4.vote_msg(1, nullify(MAX_VIEWS_AHEAD + 2)),
    ] {
        assert_eq!(e.handle(input), vec![]);
    }
    assert_eq!(e.view(), 1);
}

#[test]
fn signing_bytes_and_encoding_are_fixed() {
    // A format change must be a deliberate decision: these bytes are what validators sign and
    // send.
    let kind = VoteKind::Finalize {
        view: 0x0102,
        digest: Digest::repeat_byte(0xab),
    };
    let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 14];
    expected.extend_from_slice(NS);
    expected.push(3);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    expected.extend_from_slice(&[0xab; 32]);
    assert_eq!(kind.signing_bytes(NS), expected);
    assert_eq!(
        hex(&genesis().digest()[..]),
        "189c64bc60ba9d92eba70cec98b0983605e1c507c0e158b01e057c28824cdf7e"
    );
    let vote = Message::Vote(net(4).vote(2, kind));
    let bytes = vote.encode();
    // Variant Vote, kind Finalize, view 0x0102 as a varint, 32-byte digest, signer 2, then the
    // 64 signature bytes.
    assert_eq!(
        hex(&bytes[..39]),
        "0102fb020120abababababababababababababababababababababababababababababababab02"
    );
    assert_eq!(bytes.len(), 39 + 64);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn garbage_and_oversized_bytes_are_rejected() {
    let message = Message::Vote(net(4).vote(1, nullify(3)));
    let bytes = message.encode();
    assert_eq!(Message::decode(&bytes, 1_000), Ok(message));
    assert!(Message::decode(&bytes[..bytes.len() - 1], 1_000).is_err());
    let mut long = bytes.clone();
    long.push(0);
    assert!(Message::decode(&long, 1_000).is_err());
    assert!(Message::decode(&bytes, bytes.len() - 1).is_err());
    assert!(Message::decode(&[], 1_000).is_err());
    assert!(Message::decode(&[7, 1, 2, 3], 1_000).is_err());
    // A proposal claiming a huge payload must fail without allocating it.
    let mut huge = vec![0, 1, 1, 32];
    huge.extend_from_slice(&[0; 32]);
    huge.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(Message::decode(&huge, 1_000).is_err());
}

fn arb_kind() -> impl Strategy<Value = VoteKind> {
    (0u8..3, any::<u64>(), any::<[u8; 32]>()).prop_map(|(k, view, d)| {
        let digest = Digest::from(d);
        match k {
            0 => VoteKind::Notarize { view, digest },
            1 => VoteKind::Nullify { view },
            _ => VoteKind::Finalize { view, digest },
        }
    })
}

fn arb_signature() -> impl Strategy<Value = ed25519_dalek::Signature> {
    any::<[[u8; 32]; 2]>().prop_map(|[r, s]| {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&r);
        bytes[32..].copy_from_slice(&s);
        ed25519_dalek::Signature::from_bytes(&bytes)
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let block = (
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(view, height, parent, payload)| Block {
            view,
            height,
            parent: Digest::from(parent),
            payload,
        });
    prop_oneof![
        (block, arb_signature())
            .prop_map(|(block, signature)| Message::Propose(Proposal { block, signature })),
        (arb_kind(), any::<u32>(), arb_signature()).prop_map(|(kind, signer, signature)| {
            Message::Vote(Vote {
                kind,
                signer,
                signature,
            })
        }),
        (
            arb_kind(),
            proptest::collection::vec((any::<u32>(), arb_signature()), 0..8)
        )
            .prop_map(|(kind, signatures)| Message::Certificate(Certificate { kind, signatures })),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(message in arb_message()) {
        let bytes = message.encode();
        prop_assert_eq!(Message::decode(&bytes, bytes.len()), Ok(message));
        prop_assert!(Message::decode(&bytes, bytes.len() - 1).is_err());
        prop_assert!(Message::decode(&bytes[..bytes.len() - 1], bytes.len()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let net4 = net(4);
        if let Ok(message) = Message::decode(&bytes, 256) {
            // Whatever decodes is handled without panicking, and forged content is ignored.
            let (mut e, _) = net4.start(0);
            let verified = message.verify(NS, &net4.config.validators).is_ok();
            let out = e.handle(Input::Message(message));
            prop_assert!(verified || out.is_empty());
        }
    }
}
