//! The incremental trie against independent references: Ethereum's own test vector, alloy-trie's
//! `HashBuilder` (from-scratch roots) and alloy-trie's proof verifier.

use super::node::{decode_node, Child, Node, KEY_NIBBLES};
use super::proof::{prove_key, verify_key};
use super::trie::{NodeSink, Trie};
use super::*;
use alloy_primitives::{b256, hex, Bytes};
use alloy_trie::proof::verify_proof as alloy_verify_proof;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_primitives::{AccountChange, EMPTY_CODE_HASH};

/// Flat state as the tests model it: account and non-zero storage.
type Model = BTreeMap<Address, (Account, BTreeMap<U256, U256>)>;

fn apply_to_model(model: &mut Model, diff: &StateDiff) {
    for (address, change) in &diff.accounts {
        let Some(info) = change.info else {
            model.remove(address);
            continue;
        };
        let (account, storage) = model.entry(*address).or_default();
        *account = info;
        if change.storage_cleared {
            storage.clear();
        }
        for (slot, value) in &change.storage {
            if value.is_zero() {
                storage.remove(slot);
            } else {
                storage.insert(*slot, *value);
            }
        }
    }
}

fn scratch_root(model: &Model) -> B256 {
    state_root_from_scratch(model.iter().map(|(a, (acc, st))| (*a, *acc, st.clone())))
}

/// Applies `diff` and adds its nodes to `store`, returning the new root.
fn commit(store: &mut MemNodeStore, root: B256, diff: &StateDiff) -> B256 {
    let update = apply_diff(store, root, diff).expect("apply_diff");
    for (hash, rlp) in &update.nodes {
        assert_eq!(keccak256(rlp), *hash, "emitted node under a wrong hash");
        assert!(
            rlp.len() >= 32 || *hash == update.root,
            "embeddable node emitted separately"
        );
    }
    store.insert(&update);
    update.root
}

fn account(nonce: u64, balance: u64) -> Account {
    Account {
        nonce,
        balance: U256::from(balance),
        code_hash: EMPTY_CODE_HASH,
    }
}

fn set(info: Account, storage: &[(u64, u64)]) -> AccountChange {
    AccountChange {
        info: Some(info),
        storage_cleared: false,
        storage: storage
            .iter()
            .map(|&(s, v)| (U256::from(s), U256::from(v)))
            .collect(),
    }
}

/// A deletion, which (per `AccountChange`) takes the account's storage with it.
fn deleted() -> AccountChange {
    AccountChange {
        info: None,
        storage_cleared: true,
        storage: Default::default(),
    }
}

fn diff_of(changes: impl IntoIterator<Item = (Address, AccountChange)>) -> StateDiff {
    StateDiff {
        accounts: changes.into_iter().collect(),
        codes: Default::default(),
    }
}

/// Number of nodes embedded in their parent anywhere in the trie under `root`.
fn embedded_nodes(store: &MemNodeStore, root: B256) -> usize {
    fn count(store: &MemNodeStore, child: Child, remaining: usize) -> usize {
        let node = match child {
            Child::Empty => return 0,
            Child::Stored(hash) => {
                let rlp = store.node(&hash).unwrap().expect("node in store");
                decode_node(&rlp, remaining).unwrap()
            }
            Child::Node { node, .. } => return 1 + count_node(store, *node, remaining),
        };
        count_node(store, node, remaining)
    }
    fn count_node(store: &MemNodeStore, node: Node, remaining: usize) -> usize {
        match node {
            Node::Leaf { .. } => 0,
            Node::Extension { path, child } => count(store, child, remaining - path.len()),
            Node::Branch { children } => {
                let children: [Child; 16] = *children;
                children
                    .into_iter()
                    .map(|child| count(store, child, remaining - 1))
                    .sum()
            }
        }
    }
    if root == EMPTY_ROOT_HASH {
        return 0;
    }
    count(store, Child::Stored(root), KEY_NIBBLES)
}

#[test]
fn empty_state_has_the_empty_root() {
    let store = MemNodeStore::new();
    let update = apply_diff(&store, EMPTY_ROOT_HASH, &StateDiff::default()).unwrap();
    assert_eq!(
        update,
        CommitmentUpdate {
            root: EMPTY_ROOT_HASH,
            nodes: vec![]
        }
    );
    let delete_absent = diff_of([(Address::repeat_byte(1), AccountChange::default())]);
    assert_eq!(
        apply_diff(&store, EMPTY_ROOT_HASH, &delete_absent)
            .unwrap()
            .root,
        EMPTY_ROOT_HASH
    );
    assert_eq!(state_root_from_scratch([]), EMPTY_ROOT_HASH);
    assert_eq!(keccak256([alloy_rlp::EMPTY_STRING_CODE]), EMPTY_ROOT_HASH);
}

/// `TrieTests/hex_encoded_securetrie_test.json`, test1, from ethereum/tests: five accounts of a
/// real state (one with storage, one with code) and their state root.
#[test]
fn ethereum_secure_trie_vector() {
    let data: [(Address, &[u8]); 5] = [
        (
            Address::from(hex!("a94f5374fce5edbc8e2a8697c15331677e6ebf0b")),
            &hex!("f848018405f446a7a056e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421a0c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        ),
        (
            Address::from(hex!("095e7baea6a6c7c4c2dfeb977efac326af552d87")),
            &hex!("f8440101a056e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421a004bccc5d94f4d1f99aab44369a910179931772f2a5c001c3229f57831c102769"),
        ),
        (
            Address::from(hex!("d2571607e241ecf590ed94b12d87c94babe36db6")),
            &hex!("f8440180a0ba4b47865c55a341a4a78759bb913cd15c3ee8eaf30a62fa8d1c8863113d84e8a0c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        ),
        (
            Address::from(hex!("62c01474f089b07dae603491675dc5b5748f7049")),
            &hex!("f8448080a056e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421a0c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        ),
        (
            Address::from(hex!("2adc25665018aa1fe0e6bc666dac8fc2697ff9ba")),
            &hex!("f8478083019a59a056e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421a0c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        ),
    ];
    let expected = b256!("730a444e08ab4b8dee147c9b232fc52d34a223d600031c1e9d25bfc985cbd797");

    // Our account encoding reproduces every leaf value.
    for (_, rlp) in &data {
        let (account, storage_root) = decode_account(rlp).unwrap();
        assert_eq!(encode_account(&account, storage_root), *rlp);
    }
    assert_eq!(
        encode_account(&account(1, 0x05f446a7), EMPTY_ROOT_HASH),
        data[0].1
    );

    // The trie over the raw leaf values...
    let store = MemNodeStore::new();
    let mut trie = Trie::open(&store, EMPTY_ROOT_HASH);
    for (address, rlp) in &data {
        trie.insert(&keccak256(address), rlp.to_vec()).unwrap();
    }
    let mut sink = NodeSink::default();
    assert_eq!(trie.commit(&mut sink), expected);

    // ...and through `apply_diff`, for the accounts whose storage root is the empty one. The
    // third account's storage is not part of the vector, so it goes in as a raw leaf first.
    let mut store = MemNodeStore::new();
    let mut trie = Trie::open(&store, EMPTY_ROOT_HASH);
    trie.insert(&keccak256(data[2].0), data[2].1.to_vec())
        .unwrap();
    let mut sink = NodeSink::default();
    let root = trie.commit(&mut sink);
    store.extend(sink.into_nodes());
    let rest = [0, 1, 3, 4].map(|i| {
        let (account, _) = decode_account(data[i].1).unwrap();
        (data[i].0, set(account, &[]))
    });
    assert_eq!(commit(&mut store, root, &diff_of(rest)), expected);
}

/// Roots of small fixed states, taken from alloy-trie's `HashBuilder` when this test was written:
/// a change to the encoding shows up here as a deliberate decision.
#[test]
fn fixed_state_roots() {
    let code_hash = keccak256(b"code");
    let a = (
        Address::repeat_byte(0x11),
        account(1, 1_000_000_000_000_000_000),
        [(1, 1), (2, 0xdead_beef)],
    );
    let b = (
        Address::repeat_byte(0x22),
        Account {
            code_hash,
            ..account(0, 5)
        },
        [(0, 7), (u64::MAX, 1)],
    );
    let single = diff_of([(a.0, set(a.1, &a.2))]);
    let both = diff_of([(a.0, set(a.1, &a.2)), (b.0, set(b.1, &b.2))]);
    let expected_single = b256!("db919cf0493bf4e4723ffc1b6b97ad3feaa34df90ff9bdc2f5adc3823fba9b6d");
    let expected_both = b256!("6c4613f452d82fedcf518bfed4a0a70262c2753f5196e7164c652a19b30772d1");

    let mut store = MemNodeStore::new();
    assert_eq!(
        commit(&mut store, EMPTY_ROOT_HASH, &single),
        expected_single
    );
    let mut model = Model::new();
    apply_to_model(&mut model, &single);
    assert_eq!(scratch_root(&model), expected_single);

    let mut store = MemNodeStore::new();
    assert_eq!(commit(&mut store, EMPTY_ROOT_HASH, &both), expected_both);
    apply_to_model(&mut model, &both);
    assert_eq!(scratch_root(&model), expected_both);

    // Storage leaf values are minimal big-endian RLP.
    assert_eq!(
        alloy_rlp::encode(U256::from(0xdead_beef_u64)),
        hex!("84deadbeef")
    );
    assert_eq!(alloy_rlp::encode(U256::from(1)), hex!("01"));
}

/// A generated change to one account.
#[derive(Debug, Clone)]
enum Op {
    Delete,
    Set {
        nonce: u8,
        balance: u64,
        code: bool,
        cleared: bool,
        slots: Vec<(u8, u8)>,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Delete),
        5 => (
            any::<u8>(),
            any::<u64>(),
            any::<bool>(),
            prop::bool::weighted(0.15),
            // Values 0..4: a quarter of the writes delete.
            prop::collection::vec((0u8..48, 0u8..4), 0..24),
        )
            .prop_map(|(nonce, balance, code, cleared, slots)| Op::Set {
                nonce,
                balance,
                code,
                cleared,
                slots
            }),
    ]
}

/// Up to five blocks of up to ten changes each, to sixteen accounts.
fn blocks_strategy() -> impl Strategy<Value = Vec<Vec<(u8, Op)>>> {
    let block = prop::collection::vec((0u8..16, op_strategy()), 0..10);
    prop::collection::vec(block, 1..6)
}

fn block_diff(block: &[(u8, Op)]) -> StateDiff {
    diff_of(block.iter().map(|(who, op)| {
        let change = match op {
            Op::Delete => deleted(),
            Op::Set {
                nonce,
                balance,
                code,
                cleared,
                slots,
            } => AccountChange {
                info: Some(Account {
                    nonce: u64::from(*nonce),
                    balance: U256::from(*balance),
                    code_hash: if *code {
                        keccak256([*who])
                    } else {
                        EMPTY_CODE_HASH
                    },
                }),
                storage_cleared: *cleared,
                storage: slots
                    .iter()
                    .map(|&(s, v)| (U256::from(s), U256::from(v)))
                    .collect(),
            },
        };
        (Address::with_last_byte(*who), change)
    }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Blocks of creations, updates, deletions and storage clears over a small set of accounts
    /// (so changes keep hitting existing keys): after every block, the incremental root is the
    /// from-scratch root of the model state.
    #[test]
    fn random_blocks_match_hash_builder(blocks in blocks_strategy()) {
        let mut store = MemNodeStore::new();
        let mut root = EMPTY_ROOT_HASH;
        let mut model = Model::new();
        for block in &blocks {
            let diff = block_diff(block);
            root = commit(&mut store, root, &diff);
            apply_to_model(&mut model, &diff);
            prop_assert_eq!(root, scratch_root(&model));
        }
    }
}

fn random_diff(rng: &mut StdRng, accounts: u64, max_touched: usize) -> StateDiff {
    let mut diff = StateDiff::default();
    for _ in 0..rng.gen_range(1..=max_touched) {
        let address = Address::left_padding_from(&rng.gen_range(0..accounts).to_be_bytes());
        let change = if rng.gen_bool(0.08) {
            deleted()
        } else {
            let slots = rng.gen_range(0..20);
            AccountChange {
                info: Some(account(rng.gen_range(0..1000), rng.gen())),
                storage_cleared: rng.gen_bool(0.05),
                storage: (0..slots)
                    .map(|_| {
                        let value = if rng.gen_bool(0.2) {
                            0
                        } else {
                            rng.gen::<u64>()
                        };
                        (U256::from(rng.gen_range(0..200u64)), U256::from(value))
                    })
                    .collect(),
            }
        };
        diff.accounts.insert(address, change);
    }
    diff
}

/// Forty blocks applied one by one, against a store holding only what the updates emitted, end
/// at the from-scratch root and at the root of the merged diff applied in one go.
#[test]
fn blocks_one_by_one_equal_merged_diff_and_scratch() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut store = MemNodeStore::new();
    let mut root = EMPTY_ROOT_HASH;
    let mut model = Model::new();
    let mut merged = StateDiff::default();
    for height in 0..40 {
        let diff = random_diff(&mut rng, 300, 40);
        root = commit(&mut store, root, &diff);
        apply_to_model(&mut model, &diff);
        merged.merge(diff);
        if height % 10 == 9 {
            assert_eq!(root, scratch_root(&model), "block {height}");
        }
    }
    assert!(
        model.len() > 100,
        "the state should be sizeable, has {} accounts",
        model.len()
    );
    assert!(model.values().any(|(_, storage)| storage.len() > 30));
    assert_eq!(root, scratch_root(&model));
    let mut fresh = MemNodeStore::new();
    assert_eq!(commit(&mut fresh, EMPTY_ROOT_HASH, &merged), root);

    // Every account and slot of the final state is reachable from the final root.
    for (address, (account, storage)) in &model {
        let slots: Vec<U256> = storage.keys().copied().collect();
        let proof = prove(&store, root, *address, &slots).unwrap();
        assert_eq!(proof.account.map(|(a, _)| a), Some(*account));
        for (sp, (slot, value)) in proof.storage_proofs.iter().zip(storage) {
            assert_eq!((sp.slot, sp.value), (*slot, *value));
        }
    }
}

/// Applying what is already there changes nothing and emits no node.
#[test]
fn no_op_changes_emit_nothing() {
    let mut store = MemNodeStore::new();
    let a = Address::repeat_byte(0xaa);
    let b = Address::repeat_byte(0xbb);
    let diff = diff_of([
        (a, set(account(1, 2), &[(1, 1), (2, 2)])),
        (b, set(account(3, 4), &[])),
    ]);
    let root = commit(&mut store, EMPTY_ROOT_HASH, &diff);
    let again = diff_of([
        (a, set(account(1, 2), &[(1, 1), (3, 0)])),
        (b, set(account(3, 4), &[])),
        (Address::repeat_byte(0xcc), AccountChange::default()),
    ]);
    let update = apply_diff(&store, root, &again).unwrap();
    assert_eq!(update.root, root);
    assert!(
        update.nodes.is_empty(),
        "emitted {} nodes",
        update.nodes.len()
    );

    // A real change to one account emits only the nodes on its paths.
    let one = diff_of([(a, set(account(1, 2), &[(1, 5)]))]);
    let update = apply_diff(&store, root, &one).unwrap();
    assert_ne!(update.root, root);
    assert!(
        update.nodes.len() <= 4,
        "emitted {} nodes",
        update.nodes.len()
    );
}

/// Keys that share long prefixes, with short values: extensions split and merge at every depth,
/// and leaves, branches and extensions small enough to be embedded in their parent occur
/// throughout. Raw keys, so the shapes do not depend on finding hash collisions.
mod crafted {
    use super::*;

    /// Nibble positions that vary between keys; all others are fixed.
    const VARYING: [usize; 8] = [2, 17, 40, 55, 59, 61, 62, 63];

    fn key(choices: &[u8; 8]) -> B256 {
        let mut nibbles = [0x7u8; KEY_NIBBLES];
        for (position, choice) in VARYING.iter().zip(choices) {
            nibbles[*position] = *choice;
        }
        B256::from(std::array::from_fn(|i| {
            (nibbles[2 * i] << 4) | nibbles[2 * i + 1]
        }))
    }

    fn hash_builder_root(model: &BTreeMap<B256, Vec<u8>>) -> B256 {
        root_from_sorted_leaves(model.clone())
    }

    fn value_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            1 => Just(None),
            4 => prop::collection::vec(any::<u8>(), 1..3).prop_map(Some),
            1 => prop::collection::vec(any::<u8>(), 30..40).prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn crafted_keys_match_hash_builder(
            batches in prop::collection::vec(
                prop::collection::vec((prop::array::uniform8(0u8..3), value_strategy()), 1..30),
                1..6,
            )
        ) {
            let mut store = MemNodeStore::new();
            let mut root = EMPTY_ROOT_HASH;
            let mut model = BTreeMap::new();
            for batch in &batches {
                let mut trie = Trie::open(&store, root);
                for (choices, value) in batch {
                    let key = key(choices);
                    match value {
                        Some(value) => {
                            trie.insert(&key, value.clone()).unwrap();
                            model.insert(key, value.clone());
                        }
                        None => {
                            trie.remove(&key).unwrap();
                            model.remove(&key);
                        }
                    }
                }
                let mut sink = NodeSink::default();
                root = trie.commit(&mut sink);
                store.extend(sink.into_nodes());
                prop_assert_eq!(root, hash_builder_root(&model));
            }
            // Reads and proofs agree with the model for present and absent keys alike, and
            // alloy-trie's verifier accepts the proofs.
            let mut trie = Trie::open(&store, root);
            for choices in [[0u8; 8], [1; 8], [2; 8], [0, 1, 2, 0, 1, 2, 0, 1]]
                .into_iter()
                .chain(batches.iter().flatten().map(|(choices, _)| *choices))
            {
                let key = key(&choices);
                let expected = model.get(&key).cloned();
                prop_assert_eq!(trie.get(&key).unwrap(), expected.clone());
                let (proof, value) = prove_key(&store, root, &key).unwrap();
                prop_assert_eq!(&value, &expected);
                let verified = verify_key(root, &key, &proof, ProofTrie::Account).unwrap();
                prop_assert_eq!(&verified, &expected);
                let alloy = alloy_verify_proof(root, Nibbles::unpack(key), expected, &proof);
                prop_assert!(alloy.is_ok(), "alloy-trie rejects the proof: {:?}", alloy);
            }
        }
    }

    #[test]
    fn crafted_tries_contain_embedded_nodes() {
        let store = MemNodeStore::new();
        let mut trie = Trie::open(&store, EMPTY_ROOT_HASH);
        let mut model = BTreeMap::new();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let key = key(&std::array::from_fn(|_| rng.gen_range(0..3)));
            let value = vec![rng.gen_range(1..=255)];
            trie.insert(&key, value.clone()).unwrap();
            model.insert(key, value);
        }
        let mut sink = NodeSink::default();
        let root = trie.commit(&mut sink);
        let mut store = MemNodeStore::new();
        store.extend(sink.into_nodes());
        assert_eq!(root, hash_builder_root(&model));
        let embedded = embedded_nodes(&store, root);
        assert!(embedded > 50, "only {embedded} embedded nodes");
    }
}

/// Two slots whose hashed keys share their first eight nibbles, found by a birthday search over
/// slots 0..2^17. Their leaves sit nine nibbles deep, and with small values their RLP is
/// 31 bytes: embedded in the branch above them, in a real (hashed-key) storage trie.
const CLOSE_SLOTS: (u64, u64) = (40_364, 105_566);

#[test]
fn storage_trie_with_embedded_leaves() {
    let (s1, s2) = (U256::from(CLOSE_SLOTS.0), U256::from(CLOSE_SLOTS.1));
    assert_eq!(
        storage_key(s1)[..4],
        storage_key(s2)[..4],
        "slots must share eight nibbles"
    );
    let address = Address::repeat_byte(0x42);
    let diff = diff_of([(
        address,
        set(account(1, 1), &[(CLOSE_SLOTS.0, 1), (CLOSE_SLOTS.1, 2)]),
    )]);
    let mut store = MemNodeStore::new();
    let root = commit(&mut store, EMPTY_ROOT_HASH, &diff);
    let mut model = Model::new();
    apply_to_model(&mut model, &diff);
    assert_eq!(root, scratch_root(&model));

    let proof = prove(&store, root, address, &[s1, s2, U256::from(12345)]).unwrap();
    verify_proof(root, &proof).unwrap();
    let (_, storage_root) = proof.account.unwrap();
    assert_eq!(embedded_nodes(&store, storage_root), 2);
    for sp in &proof.storage_proofs[..2] {
        // The root extension and the branch; the leaves are inside the branch.
        assert_eq!(sp.proof.len(), 2);
    }
    for sp in &proof.storage_proofs {
        let expected = (!sp.value.is_zero()).then(|| alloy_rlp::encode(sp.value));
        let key = Nibbles::unpack(storage_key(sp.slot));
        assert!(alloy_verify_proof(storage_root, key, expected, &sp.proof).is_ok());
    }
    assert_eq!(proof.storage_proofs[0].value, U256::from(1));
    assert_eq!(proof.storage_proofs[1].value, U256::from(2));

    // Deleting one slot folds the other back into a single (hashed) root leaf.
    let delete = diff_of([(address, set(account(1, 1), &[(CLOSE_SLOTS.0, 0)]))]);
    let root = commit(&mut store, root, &delete);
    apply_to_model(&mut model, &delete);
    assert_eq!(root, scratch_root(&model));
}

/// A state with some storage, for the proof tests.
fn proof_fixture() -> (MemNodeStore, B256, Model) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut store = MemNodeStore::new();
    let mut root = EMPTY_ROOT_HASH;
    let mut model = Model::new();
    for _ in 0..5 {
        let diff = random_diff(&mut rng, 500, 100);
        root = commit(&mut store, root, &diff);
        apply_to_model(&mut model, &diff);
    }
    (store, root, model)
}

#[test]
fn proofs_verify_for_present_and_absent_keys() {
    let (store, root, model) = proof_fixture();
    let (present, (account, storage)) = model
        .iter()
        .find(|(_, (_, storage))| storage.len() > 3)
        .expect("account with storage");
    let absent_slot = (0..)
        .map(U256::from)
        .find(|s| !storage.contains_key(s))
        .unwrap();
    let slots: Vec<U256> = storage.keys().copied().chain([absent_slot]).collect();

    let proof = prove(&store, root, *present, &slots).unwrap();
    verify_proof(root, &proof).unwrap();
    let (proven, storage_root) = proof.account.unwrap();
    assert_eq!(proven, *account);
    assert_eq!(storage_root, storage_root_from_scratch(storage));
    for sp in &proof.storage_proofs {
        assert_eq!(sp.value, storage.get(&sp.slot).copied().unwrap_or_default());
        let expected = (!sp.value.is_zero()).then(|| alloy_rlp::encode(sp.value));
        let key = Nibbles::unpack(storage_key(sp.slot));
        assert!(alloy_verify_proof(storage_root, key, expected, &sp.proof).is_ok());
    }
    let key = Nibbles::unpack(keccak256(present));
    let leaf = Some(encode_account(account, storage_root));
    assert!(alloy_verify_proof(root, key, leaf, &proof.account_proof).is_ok());

    // Absent accounts, whose slots are all absent too.
    for n in 1_000..1_020u64 {
        let absent = Address::left_padding_from(&n.to_be_bytes());
        let proof = prove(&store, root, absent, &[U256::from(1)]).unwrap();
        assert_eq!(proof.account, None);
        assert_eq!(proof.storage_proofs[0].value, U256::ZERO);
        assert!(proof.storage_proofs[0].proof.is_empty());
        verify_proof(root, &proof).unwrap();
        let key = Nibbles::unpack(keccak256(absent));
        assert!(alloy_verify_proof(root, key, None, &proof.account_proof).is_ok());
    }

    // The empty state proves every account absent with no nodes at all.
    let proof = prove(&store, EMPTY_ROOT_HASH, *present, &[U256::from(1)]).unwrap();
    assert!(proof.account_proof.is_empty() && proof.account.is_none());
    verify_proof(EMPTY_ROOT_HASH, &proof).unwrap();
}

#[test]
fn tampered_proofs_fail() {
    let (store, root, model) = proof_fixture();
    let (address, (_, storage)) = model
        .iter()
        .find(|(_, (_, storage))| storage.len() > 3)
        .expect("account with storage");
    let slot = *storage.keys().next().unwrap();
    let absent_address = Address::repeat_byte(0xee);
    let good = prove(&store, root, *address, &[slot]).unwrap();
    let absent = prove(&store, root, absent_address, &[slot]).unwrap();
    verify_proof(root, &good).unwrap();
    verify_proof(root, &absent).unwrap();
    let trie = ProofTrie::Account;
    let last = good.account_proof.len() - 1;

    let tamper = |f: &dyn Fn(&mut StateProof)| {
        let mut proof = good.clone();
        f(&mut proof);
        verify_proof(root, &proof)
    };
    let flip = |bytes: &mut Bytes, at: usize| {
        let mut v = bytes.to_vec();
        v[at] ^= 1;
        *bytes = v.into();
    };

    // A changed byte anywhere in a node breaks the hash link to it.
    let err = tamper(&|p| flip(&mut p.account_proof[last], 40)).unwrap_err();
    assert!(
        matches!(err, ProofError::HashMismatch { trie: t, index, .. } if t == trie && index == last)
    );
    let err = tamper(&|p| flip(&mut p.account_proof[0], 3)).unwrap_err();
    assert!(matches!(err, ProofError::HashMismatch { index: 0, .. }));
    let err = tamper(&|p| flip(&mut p.storage_proofs[0].proof[0], 5)).unwrap_err();
    assert!(
        matches!(err, ProofError::HashMismatch { trie: ProofTrie::Storage(s), .. } if s == slot)
    );

    // Claims that differ from what the nodes show.
    let err = tamper(&|p| p.account.as_mut().unwrap().0.balance += U256::from(1)).unwrap_err();
    assert_eq!(err, ProofError::AccountMismatch { address: *address });
    let err = tamper(&|p| p.account.as_mut().unwrap().0.nonce += 1).unwrap_err();
    assert_eq!(err, ProofError::AccountMismatch { address: *address });
    let err = tamper(&|p| p.account.as_mut().unwrap().1 = EMPTY_ROOT_HASH).unwrap_err();
    assert_eq!(err, ProofError::AccountMismatch { address: *address });
    let err = tamper(&|p| p.account = None).unwrap_err();
    assert_eq!(err, ProofError::AccountMismatch { address: *address });
    let err = tamper(&|p| p.storage_proofs[0].value += U256::from(1)).unwrap_err();
    assert!(matches!(err, ProofError::StorageMismatch { slot: s, .. } if s == slot));
    let err = tamper(&|p| p.storage_proofs[0].value = U256::ZERO).unwrap_err();
    assert!(matches!(err, ProofError::StorageMismatch { .. }));

    // Claiming presence for an absent account or slot.
    let mut forged = absent.clone();
    forged.account = good.account;
    assert_eq!(
        verify_proof(root, &forged),
        Err(ProofError::AccountMismatch {
            address: absent_address
        })
    );
    let mut forged = good.clone();
    let missing_slot = (0..)
        .map(U256::from)
        .find(|s| !storage.contains_key(s))
        .unwrap();
    forged.storage_proofs[0].slot = missing_slot;
    assert!(verify_proof(root, &forged).is_err());
    let mut forged = absent.clone();
    forged.storage_proofs[0].value = U256::from(1);
    assert!(matches!(
        verify_proof(root, &forged),
        Err(ProofError::StorageMismatch { .. })
    ));
    // A proof for one account passed off as another's.
    let mut forged = good.clone();
    forged.address = absent_address;
    assert!(verify_proof(root, &forged).is_err());

    // Missing, reordered and extra nodes.
    let err = tamper(&|p| {
        p.account_proof.pop();
    })
    .unwrap_err();
    assert!(matches!(err, ProofError::Truncated { trie: t, .. } if t == trie));
    let err = tamper(&|p| {
        p.account_proof.remove(0);
    })
    .unwrap_err();
    assert!(matches!(err, ProofError::HashMismatch { index: 0, .. }));
    let err = tamper(&|p| p.storage_proofs[0].proof.clear()).unwrap_err();
    assert!(matches!(
        err,
        ProofError::Truncated {
            trie: ProofTrie::Storage(_),
            ..
        }
    ));
    let err = tamper(&|p| p.account_proof.push(p.account_proof[0].clone())).unwrap_err();
    assert_eq!(err, ProofError::ExtraNodes { trie, count: 1 });

    // The right proof against the wrong root.
    let mut other_store = store.clone();
    let other_root = commit(
        &mut other_store,
        root,
        &diff_of([(Address::repeat_byte(0xdd), set(account(1, 1), &[]))]),
    );
    assert!(matches!(
        verify_proof(other_root, &good),
        Err(ProofError::HashMismatch { index: 0, expected, .. }) if expected == other_root
    ));
}

#[test]
fn missing_and_malformed_nodes_are_errors() {
    let (store, root, model) = proof_fixture();
    let address = *model.keys().next().unwrap();
    let touch = diff_of([(address, set(account(9, 9), &[(1, 1)]))]);

    let mut without_root = MemNodeStore::new();
    without_root.extend(
        store
            .nodes
            .iter()
            .filter(|(hash, _)| **hash != root)
            .map(|(h, rlp)| (*h, rlp.clone())),
    );
    let err = apply_diff(&without_root, root, &touch).unwrap_err();
    assert!(
        matches!(err, CommitmentError::MissingNode(h) if h == root),
        "{err}"
    );
    let err = prove(&without_root, root, address, &[]).unwrap_err();
    assert!(
        matches!(err, CommitmentError::MissingNode(h) if h == root),
        "{err}"
    );

    let mut corrupt = store.clone();
    corrupt.nodes.insert(root, hex!("c3010203").to_vec());
    let err = apply_diff(&corrupt, root, &touch).unwrap_err();
    assert!(
        matches!(err, CommitmentError::MalformedNode { hash, .. } if hash == root),
        "{err}"
    );
    let err = prove(&corrupt, root, address, &[]).unwrap_err();
    assert!(
        matches!(err, CommitmentError::MalformedNode { hash, .. } if hash == root),
        "{err}"
    );
}
