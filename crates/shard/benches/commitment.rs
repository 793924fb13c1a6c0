//! State commitment candidates, measured on the same workload: the incremental Ethereum
//! Merkle-Patricia trie of `tessera_shard::commitment` (keccak256, hexary, RLP nodes in a
//! content-addressed store) against the `jmt` crate's Jellyfish Merkle Tree (SHA-256, versioned
//! node keys), both over in-memory stores so that the numbers are about the trees, not the disk.
//!
//! Workload: a state of N accounts (no storage; `TESSERA_BENCH_ACCOUNTS`, default 1,000,000),
//! then blocks that each update K random existing accounts (K = 1,000 and 10,000,
//! `TESSERA_BENCH_BLOCKS` blocks each, default 5). Both candidates start every block from the same
//! `StateDiff` and end with a new root and their new nodes written to their store. Reported per
//! updated key: update time (root and new nodes computed, written to the in-memory store), nodes
//! written, and the cost of producing and verifying an inclusion proof.
//!
//! The bench checks itself: after the blocks, the trie's root must equal a root computed from
//! scratch by alloy-trie's `HashBuilder` over the final state, and every proof taken (from both
//! candidates, after each round of blocks) must verify against the latest root and show the
//! latest value.
//!
//! Run: `cargo bench -p tessera-shard --bench commitment`.

use alloy_primitives::{keccak256, map::HashMap, Address, B256, U256};
use alloy_rlp::RlpEncodable;
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeWriter};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, Version};
use rand::{rngs::StdRng, seq::index::sample, Rng, SeedableRng};
use sha2::Sha256;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tessera_primitives::{Account, AccountChange, StateDiff, EMPTY_CODE_HASH, EMPTY_ROOT_HASH};
use tessera_shard::commitment::{
    apply_diff, prove, state_root_from_scratch, verify_proof, MemNodeStore,
};

type Jmt<'a> = JellyfishMerkleTree<'a, JmtStore, Sha256>;

/// Accounts per block while building the initial state (bounds the memory of one update).
const BUILD_CHUNK: usize = 100_000;
/// Updated keys whose proofs are produced and verified after each round.
const PROOF_SAMPLE: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// The account leaf value, the same bytes for both candidates: Ethereum's account RLP with the
/// empty storage root.
#[derive(RlpEncodable)]
struct AccountValue {
    nonce: u64,
    balance: U256,
    storage_root: B256,
    code_hash: B256,
}

fn account_value(account: &Account) -> Vec<u8> {
    alloy_rlp::encode(AccountValue {
        nonce: account.nonce,
        balance: account.balance,
        storage_root: EMPTY_ROOT_HASH,
        code_hash: account.code_hash,
    })
}

fn change(account: Account) -> AccountChange {
    AccountChange {
        info: Some(account),
        storage_cleared: false,
        storage: Default::default(),
    }
}

/// A key's values by version, oldest first; `None` for deleted.
type ValueHistory = Vec<(Version, Option<OwnedValue>)>;

/// In-memory node and value store for the JMT: nodes by versioned key, values by key hash with
/// their version history (the JMT reads values at a version when proving).
#[derive(Default)]
struct JmtStore {
    nodes: RefCell<HashMap<NodeKey, Node>>,
    values: RefCell<HashMap<KeyHash, ValueHistory>>,
}

impl TreeReader for JmtStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.borrow().get(node_key).cloned())
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let values = self.values.borrow();
        let history = values.get(&key_hash).map(Vec::as_slice).unwrap_or_default();
        Ok(history
            .iter()
            .rev()
            .find(|(v, _)| *v <= max_version)
            .and_then(|(_, val)| val.clone()))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only used by state restoration, which the bench does not do; a scan is enough.
        let nodes = self.nodes.borrow();
        let rightmost = nodes
            .iter()
            .filter_map(|(key, node)| match node {
                Node::Leaf(leaf) => Some((key.clone(), leaf.clone())),
                _ => None,
            })
            .max_by_key(|(_, leaf)| leaf.key_hash());
        Ok(rightmost)
    }
}

impl TreeWriter for JmtStore {
    fn write_node_batch(&self, batch: &NodeBatch) -> anyhow::Result<()> {
        let mut nodes = self.nodes.borrow_mut();
        for (key, node) in batch.nodes() {
            nodes.insert(key.clone(), node.clone());
        }
        let mut values = self.values.borrow_mut();
        for ((version, key_hash), value) in batch.values() {
            values
                .entry(*key_hash)
                .or_default()
                .push((*version, value.clone()));
        }
        Ok(())
    }
}

/// The MPT candidate: a root over a content-addressed node store.
struct Mpt {
    store: MemNodeStore,
    root: B256,
}

impl Mpt {
    /// Applies `diff`, writes its nodes, and returns how many nodes were written.
    fn commit(&mut self, diff: &StateDiff) -> usize {
        let update = apply_diff(&self.store, self.root, diff).expect("MPT update");
        assert_ne!(
            update.root, self.root,
            "a block of changes must change the MPT root"
        );
        self.root = update.root;
        let written = update.nodes.len();
        self.store.extend(update.nodes);
        written
    }
}

/// The JMT candidate: one version per block.
struct JmtState {
    store: JmtStore,
    version: Option<Version>,
    root: RootHash,
}

impl JmtState {
    /// Applies `diff` as the next version, writes its nodes, and returns how many were written.
    fn commit(&mut self, diff: &StateDiff) -> usize {
        let version = self.version.map_or(0, |v| v + 1);
        let values = diff.accounts.iter().map(|(address, change)| {
            (
                KeyHash::with::<Sha256>(address),
                change.info.as_ref().map(account_value),
            )
        });
        let (root, batch) = Jmt::new(&self.store)
            .put_value_set(values, version)
            .expect("JMT update");
        assert_ne!(
            root, self.root,
            "a block of changes must change the JMT root"
        );
        self.store
            .write_node_batch(&batch.node_batch)
            .expect("JMT write");
        (self.version, self.root) = (Some(version), root);
        batch.node_batch.nodes().len()
    }
}

#[derive(Default)]
struct Row {
    keys: usize,
    blocks: usize,
    update: Duration,
    nodes: usize,
    proofs: usize,
    prove: Duration,
    verify: Duration,
    proof_bytes: usize,
}

impl Row {
    fn print(&self, name: &str, k: usize) {
        let per_key = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let proof_bytes = if self.proof_bytes == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", self.proof_bytes as f64 / self.proofs as f64)
        };
        println!(
            "| {name:<4} | {k:>6} | {:>6} | {:>14.2} | {:>10.2} | {:>11.2} | {:>12.2} | {:>11} |",
            self.blocks,
            per_key(self.update, self.keys),
            self.nodes as f64 / self.keys as f64,
            per_key(self.prove, self.proofs),
            per_key(self.verify, self.proofs),
            proof_bytes,
        );
    }
}

fn main() {
    let n = env_usize("TESSERA_BENCH_ACCOUNTS", 1_000_000);
    let blocks = env_usize("TESSERA_BENCH_BLOCKS", 5);
    let ks: Vec<usize> = [1_000, 10_000].into_iter().filter(|&k| k <= n).collect();
    let mut rng = StdRng::seed_from_u64(0x7e55e4a);

    let addresses: Vec<Address> = (0..n)
        .map(|_| Address::from(rng.gen::<[u8; 20]>()))
        .collect();
    let mut accounts: Vec<Account> = (0..n)
        .map(|_| Account {
            nonce: rng.gen_range(0..1_000),
            balance: U256::from(rng.gen::<u64>()),
            code_hash: if rng.gen_bool(0.1) {
                keccak256(rng.gen::<[u8; 8]>())
            } else {
                EMPTY_CODE_HASH
            },
        })
        .collect();

    println!("state: {n} accounts; blocks of K random updates, {blocks} blocks per K");
    let mut mpt = Mpt {
        store: MemNodeStore::new(),
        root: EMPTY_ROOT_HASH,
    };
    let mut jmt = JmtState {
        store: JmtStore::default(),
        version: None,
        root: RootHash([0; 32]),
    };
    let (mut mpt_build, mut jmt_build) = (Duration::ZERO, Duration::ZERO);
    for chunk in (0..n).collect::<Vec<_>>().chunks(BUILD_CHUNK) {
        let diff = StateDiff {
            accounts: chunk
                .iter()
                .map(|&i| (addresses[i], change(accounts[i])))
                .collect(),
            codes: Default::default(),
        };
        let start = Instant::now();
        mpt.commit(&diff);
        mpt_build += start.elapsed();
        let start = Instant::now();
        jmt.commit(&diff);
        jmt_build += start.elapsed();
    }
    println!(
        "build: MPT {:.1} s ({} nodes), JMT {:.1} s ({} nodes), in blocks of {BUILD_CHUNK}",
        mpt_build.as_secs_f64(),
        mpt.store.len(),
        jmt_build.as_secs_f64(),
        jmt.store.nodes.borrow().len(),
    );

    let mut rows = Vec::new();
    for &k in &ks {
        let (mut mpt_row, mut jmt_row) = (Row::default(), Row::default());
        let mut touched = Vec::new();
        for _ in 0..blocks {
            touched = sample(&mut rng, n, k).into_vec();
            for &i in &touched {
                let account = &mut accounts[i];
                account.nonce += 1;
                account.balance = U256::from(rng.gen::<u64>());
            }
            let diff = StateDiff {
                accounts: touched
                    .iter()
                    .map(|&i| (addresses[i], change(accounts[i])))
                    .collect(),
                codes: Default::default(),
            };
            let start = Instant::now();
            mpt_row.nodes += mpt.commit(&diff);
            mpt_row.update += start.elapsed();
            let start = Instant::now();
            jmt_row.nodes += jmt.commit(&diff);
            jmt_row.update += start.elapsed();
            for row in [&mut mpt_row, &mut jmt_row] {
                row.keys += k;
                row.blocks += 1;
            }
        }

        // Proofs of keys updated by the last block, against the latest roots, with the latest
        // values: produced, then verified, each timed over the whole sample.
        let sample_keys = &touched[..touched.len().min(PROOF_SAMPLE)];
        let start = Instant::now();
        let mpt_proofs: Vec<_> = sample_keys
            .iter()
            .map(|&i| prove(&mpt.store, mpt.root, addresses[i], &[]).expect("MPT proof"))
            .collect();
        mpt_row.prove = start.elapsed();
        let start = Instant::now();
        for proof in &mpt_proofs {
            verify_proof(mpt.root, proof).expect("MPT proof verifies");
        }
        mpt_row.verify = start.elapsed();
        for (proof, &i) in mpt_proofs.iter().zip(sample_keys) {
            assert_eq!(
                proof.account.map(|(a, _)| a),
                Some(accounts[i]),
                "MPT proves the new value"
            );
            mpt_row.proof_bytes += proof
                .account_proof
                .iter()
                .map(|node| node.len())
                .sum::<usize>();
        }
        mpt_row.proofs = mpt_proofs.len();

        let version = jmt.version.expect("at least one version");
        let tree = Jmt::new(&jmt.store);
        let start = Instant::now();
        let jmt_proofs: Vec<_> = sample_keys
            .iter()
            .map(|&i| {
                let key = KeyHash::with::<Sha256>(addresses[i]);
                let (value, proof) = tree.get_with_proof(key, version).expect("JMT proof");
                (key, value.expect("updated key present"), proof)
            })
            .collect();
        jmt_row.prove = start.elapsed();
        let start = Instant::now();
        for (key, value, proof) in &jmt_proofs {
            proof
                .verify_existence(jmt.root, *key, value)
                .expect("JMT proof verifies");
        }
        jmt_row.verify = start.elapsed();
        for ((_, value, _), &i) in jmt_proofs.iter().zip(sample_keys) {
            assert_eq!(
                *value,
                account_value(&accounts[i]),
                "JMT proves the new value"
            );
        }
        jmt_row.proofs = jmt_proofs.len();
        rows.push((k, mpt_row, jmt_row));
    }

    // The incremental root must be the root of the final state computed from scratch.
    let start = Instant::now();
    let expected = state_root_from_scratch(
        addresses
            .iter()
            .zip(&accounts)
            .map(|(a, acc)| (*a, *acc, BTreeMap::new())),
    );
    assert_eq!(
        mpt.root, expected,
        "incremental MPT root differs from the from-scratch root"
    );
    println!(
        "check: MPT root {} equals the from-scratch root ({:.1} s); all proofs verified",
        mpt.root,
        start.elapsed().as_secs_f64()
    );

    println!();
    println!(
        "| tree |      K | blocks | update µs/key | nodes/key | prove µs/key | verify µs/key | \
         proof bytes |"
    );
    println!(
        "|------|-------:|-------:|--------------:|----------:|-------------:|--------------:|\
         ------------:|"
    );
    for (k, mpt_row, jmt_row) in &rows {
        mpt_row.print("MPT", *k);
        jmt_row.print("JMT", *k);
    }
}
