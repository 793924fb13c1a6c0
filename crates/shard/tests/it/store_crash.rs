//! Crash consistency under a real `kill -9`.
//!
//! The parent test re-runs this test binary as a child that commits deterministic blocks in a
//! loop and reports progress on stdout; the parent kills it with SIGKILL at various instants,
//! reopens the store and checks that it holds exactly the chain and state up to its head,
//! where the head is the last block the child reported or the one after (committed, not yet
//! reported), and nothing of the next block. Each round continues from the reopened head.
//!
//! Every block touches about two thirds of the accounts (deletions, cleared storage and slot
//! zeroing included), deploys code, writes trie nodes, transactions and logs; its header's
//! `state_root` is a digest of the whole expected flat state after it, so a header paired with
//! any other state is caught as well.

use crate::common::{header, log, FlatState, TestBlock};
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};
use tessera_primitives::{
    keccak256, Account, AccountChange, Address, Bytes, StateDiff, B256, U256,
};
use tessera_shard::commitment::NodeStore;
use tessera_shard::store::{LogFilter, Store};

/// Set for the child: the store directory it writes to.
const CHILD_DIR_ENV: &str = "TESSERA_CRASH_CHILD_DIR";
/// Full name of the child test in this binary.
const CHILD_TEST: &str = "store_crash::crash_writer_child";
const ROUNDS: u64 = 9;
/// Blocks the child must report committed in a round before the parent may kill it.
const BLOCKS_PER_ROUND: u64 = 40;
const ACCOUNTS: u64 = 64;
const SLOTS: u64 = 16;
const TXS: u64 = 6;
const NODES: u64 = 48;

/// A deterministic 64-bit hash (splitmix64 finalizer over the inputs).
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
        .wrapping_add(c.wrapping_mul(0x1656_67b1_9e37_79f9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn account_address(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xa0;
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(bytes)
}

fn log_address(t: u64) -> Address {
    Address::with_last_byte(0x10 + (t % 3) as u8)
}

fn block_topic(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

fn code_of(n: u64) -> Bytes {
    format!("code deployed in block {n}").into_bytes().into()
}

/// Block `n`'s effect on state.
fn block_diff(n: u64) -> StateDiff {
    let mut diff = StateDiff::default();
    let code = code_of(n);
    let code_hash = keccak256(&code);
    diff.codes.insert(code_hash, code);
    for i in (0..ACCOUNTS).filter(|i| !mix(n, *i, 1).is_multiple_of(3)) {
        let info = Account {
            nonce: n,
            balance: U256::from(mix(n, i, 2)) << 64,
            code_hash: if i % 4 == 0 {
                code_hash
            } else {
                Account::default().code_hash
            },
        };
        let slot_writes = |count: u64, allow_zero: bool| {
            (0..count)
                .map(|j| {
                    let slot = U256::from(mix(n, i, 10 + j) % SLOTS);
                    let value = mix(n, i, 100 + j);
                    let value = if allow_zero && value.is_multiple_of(4) {
                        0
                    } else {
                        value | 1
                    };
                    (slot, U256::from(value))
                })
                .collect()
        };
        let change = match (n + i) % 13 {
            0 => AccountChange {
                info: None,
                storage_cleared: false,
                storage: Default::default(),
            },
            1 => AccountChange {
                info: Some(info),
                storage_cleared: true,
                storage: slot_writes(2, false),
            },
            _ => AccountChange {
                info: Some(info),
                storage_cleared: false,
                storage: slot_writes(6, true),
            },
        };
        diff.accounts.insert(account_address(i), change);
    }
    diff
}

/// Block `n` on top of `parent_hash`, given the state after it.
fn make_block(n: u64, parent_hash: B256, diff: StateDiff, state_after: &FlatState) -> TestBlock {
    let mut block = TestBlock::new(header(n, parent_hash, state_after.digest()), diff);
    for t in 0..TXS {
        let mut raw = vec![0x02];
        raw.extend_from_slice(&n.to_be_bytes());
        raw.extend_from_slice(&t.to_be_bytes());
        raw.resize(120, (mix(n, t, 3) & 0xff) as u8);
        let topic_t = B256::with_last_byte(t as u8);
        let logs = vec![
            log(
                log_address(t),
                vec![block_topic(n), topic_t],
                &n.to_be_bytes(),
            ),
            log(log_address(t + 1), vec![topic_t], b""),
        ];
        block = block.with_tx(raw, logs);
    }
    for k in 0..NODES {
        let node: Vec<u8> = (0..32)
            .flat_map(|w| mix(n, k, 1000 + w).to_le_bytes())
            .collect();
        block.add_node(node);
    }
    block
}

/// The state after blocks `0..=n`.
fn state_after(n: u64) -> FlatState {
    let mut state = FlatState::default();
    for k in 0..=n {
        state.apply(&block_diff(k));
    }
    state
}

/// The writer. Does nothing unless started by the parent test with the store directory set.
#[test]
#[ignore = "child process of store_crash_kill_9_leaves_a_consistent_store"]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let store = Store::open(&dir).unwrap();
    let (mut next, mut parent, mut state) = match store.head().unwrap() {
        None => (0, B256::ZERO, FlatState::default()),
        Some((head, hash)) => (head + 1, hash, state_after(head)),
    };
    // Bounded, in case the parent dies without killing us.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let diff = block_diff(next);
        state.apply(&diff);
        let block = make_block(next, parent, diff, &state);
        // Each println is one write(2) to the pipe: once it returns, the parent will read it
        // even if we are killed on the next instruction.
        println!("BEGIN {next}");
        let started = Instant::now();
        store.commit_block(block.commit()).unwrap();
        println!("COMMITTED {next} {}", started.elapsed().as_micros());
        parent = block.header.hash();
        next += 1;
    }
}

/// What the parent has read from the child.
#[derive(Debug, Default)]
struct Progress {
    committed: Option<u64>,
    begun: Option<u64>,
    /// How long the last reported commit took.
    commit_micros: u64,
}

impl Progress {
    fn observe(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("COMMITTED ") {
            let mut fields = rest
                .split_whitespace()
                .map(|f| f.parse().expect("a number"));
            self.committed = fields.next();
            self.commit_micros = fields.next().expect("commit duration");
        } else if let Some(n) = line.strip_prefix("BEGIN ") {
            self.begun = Some(n.trim().parse().expect("block number"));
        }
    }
}

/// Kills the child if the parent fails before doing so.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks the reopened store against the deterministic chain; returns its head.
fn verify(store: &Store, last_reported: u64) -> u64 {
    let (head, head_hash) = store
        .head()
        .unwrap()
        .expect("a head after committed blocks");
    assert!(
        head == last_reported || head == last_reported + 1,
        "head {head}, but the child last reported block {last_reported} committed"
    );

    // The chain 0..=head, linked by parent hashes, ending at the head hash.
    let mut parent = B256::ZERO;
    for n in 0..=head {
        let h = store
            .header(n)
            .unwrap()
            .unwrap_or_else(|| panic!("header {n} missing"));
        assert_eq!((h.number, h.parent_hash), (n, parent), "header {n}");
        parent = h.hash();
    }
    assert_eq!(parent, head_hash);
    assert_eq!(store.block_number(&head_hash).unwrap(), Some(head));

    // The whole flat state is exactly the state after the head block.
    let expected = state_after(head);
    let actual = FlatState::read(store);
    assert!(
        actual == expected,
        "state differs from block {head}:\n{}",
        expected.difference(&actual)
    );
    let head_header = store.header(head).unwrap().unwrap();
    assert_eq!(head_header.state_root, actual.digest());

    // The head block in full.
    let block = make_block(head, head_header.parent_hash, block_diff(head), &expected);
    assert_eq!(head_header, block.header);
    assert_eq!(
        store.block_transactions(head).unwrap(),
        Some(block.transactions.clone())
    );
    assert_eq!(store.receipts(head).unwrap(), Some(block.receipts.clone()));
    for (i, h) in block.tx_hashes.iter().enumerate() {
        let location = store
            .tx_location(h)
            .unwrap()
            .expect("head block tx indexed");
        assert_eq!((location.block_number, location.index), (head, i as u32));
    }
    for (hash, rlp) in &block.trie_nodes {
        assert_eq!(store.node(hash).unwrap().as_ref(), Some(rlp));
    }
    let by_topic = LogFilter {
        from_block: head,
        to_block: head,
        topics: vec![vec![block_topic(head)]],
        ..Default::default()
    };
    assert_eq!(store.logs(&by_topic).unwrap().len() as u64, TXS);

    // Nothing of the next block.
    let next_diff = block_diff(head + 1);
    let mut next_state = expected;
    next_state.apply(&next_diff);
    let next = make_block(head + 1, head_hash, next_diff, &next_state);
    assert_eq!(store.header(head + 1).unwrap(), None);
    assert_eq!(store.block_number(&next.header.hash()).unwrap(), None);
    assert_eq!(store.block_transactions(head + 1).unwrap(), None);
    assert_eq!(store.receipts(head + 1).unwrap(), None);
    for h in &next.tx_hashes {
        assert_eq!(
            store.tx_location(h).unwrap(),
            None,
            "tx of block {}",
            head + 1
        );
    }
    for (hash, _) in &next.trie_nodes {
        assert_eq!(
            store.node(hash).unwrap(),
            None,
            "trie node of block {}",
            head + 1
        );
    }
    let beyond = LogFilter {
        from_block: head + 1,
        to_block: u64::MAX,
        addresses: (0..3).map(log_address).collect(),
        ..Default::default()
    };
    assert_eq!(
        store.logs(&beyond).unwrap(),
        vec![],
        "logs indexed past the head"
    );
    head
}

#[test]
fn store_crash_kill_9_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut previous_head: Option<u64> = None;
    let mut killed_mid_commit = 0;
    for round in 0..ROUNDS {
        let mut child = ChildGuard(
            Command::new(&exe)
                .args([
                    CHILD_TEST,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Let it commit a while, then pick the instant: right after a commit was reported,
        // during a commit (after it was reported begun), or a little later.
        let target = previous_head.map_or(0, |h| h + 1) + BLOCKS_PER_ROUND;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut progress = Progress::default();
        let next_line = |progress: &mut Progress| {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(wait).expect("child stalled or died");
            progress.observe(&line);
        };
        while progress.committed < Some(target) {
            next_line(&mut progress);
        }
        match round % 3 {
            0 => {}
            1 => {
                while progress.begun <= progress.committed {
                    next_line(&mut progress);
                }
                // Spread these kills over the commit: at its start, a third and two thirds in
                // (judged by how long the previous commit took).
                let thirds = round / 3;
                thread::sleep(Duration::from_micros(progress.commit_micros * thirds / 3));
            }
            _ => thread::sleep(Duration::from_micros(200 + 450 * round)),
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        drop(child);
        reader.join().unwrap();
        lines.try_iter().for_each(|line| progress.observe(&line));

        let last_reported = progress.committed.unwrap();
        let store = Store::open(dir.path()).unwrap();
        let head = verify(&store, last_reported);
        if progress.begun > progress.committed {
            killed_mid_commit += 1;
        }
        assert!(previous_head < Some(head), "round {round} made no progress");
        eprintln!("round {round}: killed after {progress:?}, reopened at head {head}");
        previous_head = Some(head);
    }
    eprintln!("{killed_mid_commit} of {ROUNDS} kills landed between BEGIN and COMMITTED");
}
