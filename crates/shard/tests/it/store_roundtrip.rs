//! Blocks written, refused, reopened and read back through every read path.

use crate::common::{header, log, FlatState, TestBlock};
use tessera_execution::StateView;
use tessera_primitives::{
    keccak256, Account, AccountChange, Address, Bytes, StateDiff, StorageChanges, B256,
    EMPTY_CODE_HASH, U256,
};
use tessera_shard::commitment::NodeStore;
use tessera_shard::store::{LogFilter, Store, StoreError, TxLocation};

const A: Address = Address::with_last_byte(1);
/// Next to `A` in key order: clearing `A`'s storage must not touch it.
const A2: Address = Address::with_last_byte(2);
const C: Address = Address::with_last_byte(3);
const B: Address = Address::with_last_byte(0x10);
const D: Address = Address::with_last_byte(0x20);
/// The last address: its storage range has no successor address to bound it.
const MAX: Address = Address::repeat_byte(0xff);
const MAX_MINUS: Address = {
    let mut bytes = [0xff; 20];
    bytes[19] = 0xfe;
    Address::new(bytes)
};
const T1: B256 = B256::repeat_byte(0x71);
const T2: B256 = B256::repeat_byte(0x72);

fn u(v: u64) -> U256 {
    U256::from(v)
}

fn slots(pairs: &[(u64, u64)]) -> StorageChanges {
    pairs.iter().map(|(k, v)| (u(*k), u(*v))).collect()
}

fn eoa(nonce: u64, balance: u64) -> Account {
    Account {
        nonce,
        balance: u(balance),
        code_hash: EMPTY_CODE_HASH,
    }
}

fn set(info: Account, storage: &[(u64, u64)]) -> AccountChange {
    AccountChange {
        info: Some(info),
        storage_cleared: false,
        storage: slots(storage),
    }
}

fn code_x() -> Bytes {
    Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3])
}

fn code_y() -> Bytes {
    Bytes::from_static(&[0x60, 0x2a, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3])
}

/// Blocks 0 (genesis), 1 and 2: creations, slot updates and deletions, a cleared storage
/// (next to an untouched account and at the end of the key space), a deleted and later
/// re-created account, new code, transactions with logs.
fn chain() -> Vec<TestBlock> {
    let mut genesis = StateDiff::default();
    genesis
        .accounts
        .insert(A, set(eoa(0, 100), &[(1, 10), (2, 20), (3, 30)]));
    genesis.accounts.insert(A2, set(eoa(0, 200), &[(1, 11)]));
    let contract_x = Account {
        nonce: 1,
        balance: U256::ZERO,
        code_hash: keccak256(code_x()),
    };
    genesis
        .accounts
        .insert(B, set(contract_x, &[(1, 1), (2, 2)]));
    genesis.accounts.insert(C, set(eoa(0, 5), &[(5, 5)]));
    let mut max_slots = slots(&[(0, 8)]);
    max_slots.insert(U256::MAX, U256::MAX);
    genesis.accounts.insert(
        MAX,
        AccountChange {
            info: Some(eoa(0, 1)),
            storage_cleared: false,
            storage: max_slots,
        },
    );
    genesis
        .accounts
        .insert(MAX_MINUS, set(eoa(0, 1), &[(7, 7)]));
    genesis.codes.insert(keccak256(code_x()), code_x());
    let mut b0 = TestBlock::new(header(0, B256::ZERO, B256::repeat_byte(0xa0)), genesis);
    b0.add_node(b"node of block 0".to_vec());

    let mut d1 = StateDiff::default();
    d1.accounts.insert(
        A,
        AccountChange {
            info: Some(eoa(1, 90)),
            storage_cleared: true,
            storage: slots(&[(7, 70)]),
        },
    );
    d1.accounts
        .insert(B, set(contract_x, &[(1, 0), (2, 22), (3, 33)]));
    // Deleted: its storage goes, and the slot written alongside is ignored.
    d1.accounts.insert(
        C,
        AccountChange {
            info: None,
            storage_cleared: false,
            storage: slots(&[(6, 6)]),
        },
    );
    d1.accounts.insert(
        MAX,
        AccountChange {
            info: Some(eoa(0, 1)),
            storage_cleared: true,
            storage: StorageChanges::default(),
        },
    );
    let contract_y = Account {
        nonce: 1,
        balance: U256::ZERO,
        code_hash: keccak256(code_y()),
    };
    d1.accounts.insert(D, set(contract_y, &[(1, 1)]));
    d1.codes.insert(keccak256(code_y()), code_y());
    let mut b1 = TestBlock::new(header(1, b0.header.hash(), B256::repeat_byte(0xa1)), d1)
        .with_tx(
            b"\x02tx one".to_vec(),
            vec![log(B, vec![T1, T2], b"b1"), log(D, vec![T1], b"d1")],
        )
        .with_tx(b"\x02tx two".to_vec(), vec![]);
    b1.add_node(b"node of block 1".to_vec());

    let mut d2 = StateDiff::default();
    d2.accounts.insert(C, set(eoa(0, 1), &[(9, 9)]));
    d2.accounts.insert(A, set(eoa(1, 90), &[(7, 71), (8, 80)]));
    let mut b2 = TestBlock::new(header(2, b1.header.hash(), B256::repeat_byte(0xa2)), d2).with_tx(
        b"\x02tx three".to_vec(),
        vec![log(B, vec![T2, T1], b"b2"), log(B, vec![T1], b"")],
    );
    b2.add_node(b"node of block 2".to_vec());

    vec![b0, b1, b2]
}

/// The state after block 2, written out by hand.
fn expected_state() -> FlatState {
    let mut s = FlatState::default();
    let contract = |code: Bytes| Account {
        nonce: 1,
        balance: U256::ZERO,
        code_hash: keccak256(code),
    };
    s.accounts.insert(A, eoa(1, 90));
    s.accounts.insert(A2, eoa(0, 200));
    s.accounts.insert(B, contract(code_x()));
    s.accounts.insert(C, eoa(0, 1));
    s.accounts.insert(D, contract(code_y()));
    s.accounts.insert(MAX, eoa(0, 1));
    s.accounts.insert(MAX_MINUS, eoa(0, 1));
    for (a, slot, value) in [
        (A, 7, 71),
        (A, 8, 80),
        (A2, 1, 11),
        (B, 2, 22),
        (B, 3, 33),
        (C, 9, 9),
        (D, 1, 1),
        (MAX_MINUS, 7, 7),
    ] {
        s.storage.insert((a, u(slot)), u(value));
    }
    s.codes.insert(keccak256(code_x()), code_x());
    s.codes.insert(keccak256(code_y()), code_y());
    s
}

fn positions(store: &Store, filter: LogFilter) -> Vec<(u64, u32)> {
    store
        .logs(&filter)
        .unwrap()
        .iter()
        .map(|e| (e.block_number, e.log_index))
        .collect()
}

fn filter(from: u64, to: u64, addresses: &[Address], topics: &[&[B256]]) -> LogFilter {
    LogFilter {
        from_block: from,
        to_block: to,
        addresses: addresses.to_vec(),
        topics: topics.iter().map(|t| t.to_vec()).collect(),
    }
}

/// Everything `chain()` wrote, through every read path.
fn check_contents(store: &Store, blocks: &[TestBlock]) {
    let last = blocks.last().unwrap();
    assert_eq!(store.head().unwrap(), Some((2, last.header.hash())));
    for b in blocks {
        let n = b.header.number;
        assert_eq!(store.header(n).unwrap().as_ref(), Some(&b.header));
        assert_eq!(
            store.header_by_hash(&b.header.hash()).unwrap().as_ref(),
            Some(&b.header)
        );
        assert_eq!(store.block_number(&b.header.hash()).unwrap(), Some(n));
        assert_eq!(
            store.block_transactions(n).unwrap().as_ref(),
            Some(&b.transactions)
        );
        assert_eq!(store.receipts(n).unwrap().as_ref(), Some(&b.receipts));
        for (i, h) in b.tx_hashes.iter().enumerate() {
            let expected = TxLocation {
                block_number: n,
                index: i as u32,
            };
            assert_eq!(store.tx_location(h).unwrap(), Some(expected));
        }
        for (hash, rlp) in &b.trie_nodes {
            assert_eq!(store.node(hash).unwrap().as_ref(), Some(rlp));
        }
        assert_eq!(StateView::block_hash(store, n).unwrap(), b.header.hash());
    }
    assert_eq!(store.header(3).unwrap(), None);
    assert_eq!(store.header_by_hash(&B256::repeat_byte(9)).unwrap(), None);
    assert_eq!(store.receipts(3).unwrap(), None);
    assert_eq!(store.tx_location(&B256::repeat_byte(9)).unwrap(), None);
    assert_eq!(store.node(&B256::repeat_byte(9)).unwrap(), None);
    assert_eq!(StateView::block_hash(store, 3).unwrap(), B256::ZERO);

    // Flat state: point reads, then the whole tables.
    let expected = expected_state();
    assert_eq!(store.account(&A).unwrap(), Some(eoa(1, 90)));
    assert_eq!(
        store.storage(&A, &u(1)).unwrap(),
        U256::ZERO,
        "cleared in block 1"
    );
    assert_eq!(store.storage(&A, &u(7)).unwrap(), u(71));
    assert_eq!(
        store.storage(&A2, &u(1)).unwrap(),
        u(11),
        "neighbour of a cleared account"
    );
    assert_eq!(
        store.storage(&B, &u(1)).unwrap(),
        U256::ZERO,
        "zero deletes"
    );
    assert_eq!(
        store.storage(&C, &u(5)).unwrap(),
        U256::ZERO,
        "gone with the deleted account"
    );
    assert_eq!(
        store.storage(&C, &u(6)).unwrap(),
        U256::ZERO,
        "written while deleted"
    );
    assert_eq!(store.storage(&MAX, &U256::MAX).unwrap(), U256::ZERO);
    assert_eq!(store.storage(&MAX_MINUS, &u(7)).unwrap(), u(7));
    assert_eq!(store.account(&Address::with_last_byte(0x99)).unwrap(), None);
    assert_eq!(StateView::account(store, &C).unwrap(), Some(eoa(0, 1)));
    assert_eq!(StateView::storage(store, &C, &u(9)).unwrap(), u(9));
    assert_eq!(store.code(&keccak256(code_y())).unwrap(), Some(code_y()));
    assert_eq!(
        StateView::code(store, &keccak256(code_x())).unwrap(),
        Some(code_x())
    );
    assert_eq!(store.code(&EMPTY_CODE_HASH).unwrap(), Some(Bytes::new()));
    assert_eq!(store.code(&B256::repeat_byte(9)).unwrap(), None);
    let a_storage: Vec<_> = store
        .iter_account_storage(&A)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(a_storage, vec![(u(7), u(71)), (u(8), u(80))]);
    assert_eq!(store.iter_account_storage(&MAX).unwrap().count(), 0);
    for (address, has) in [
        (A, true),
        (A2, true),
        (MAX, false),
        (MAX_MINUS, true),
        (D, true),
    ] {
        assert_eq!(
            StateView::has_storage(store, &address).unwrap(),
            has,
            "{address}"
        );
    }
    assert!(!store.has_storage(&Address::with_last_byte(0x99)).unwrap());
    let actual = FlatState::read(store);
    assert_eq!(actual, expected, "\n{}", expected.difference(&actual));
    let mut replayed = FlatState::default();
    blocks.iter().for_each(|b| replayed.apply(&b.diff));
    assert_eq!(
        replayed, expected,
        "the model used by the crash test agrees"
    );

    // Logs: block 1 has B[T1,T2] and D[T1]; block 2 has B[T2,T1] and B[T1].
    let all = vec![(1, 0), (1, 1), (2, 0), (2, 1)];
    assert_eq!(
        positions(store, filter(0, u64::MAX, &[], &[])),
        all,
        "full scan"
    );
    assert_eq!(
        positions(store, filter(0, 2, &[B], &[])),
        vec![(1, 0), (2, 0), (2, 1)]
    );
    assert_eq!(
        positions(store, filter(2, 2, &[B], &[])),
        vec![(2, 0), (2, 1)]
    );
    assert_eq!(positions(store, filter(0, 1, &[B], &[])), vec![(1, 0)]);
    assert_eq!(positions(store, filter(0, 9, &[B, D], &[])), all);
    assert_eq!(
        positions(store, filter(0, 9, &[], &[&[T1]])),
        vec![(1, 0), (1, 1), (2, 1)]
    );
    assert_eq!(
        positions(store, filter(0, 9, &[], &[&[], &[T1]])),
        vec![(2, 0)]
    );
    assert_eq!(positions(store, filter(0, 9, &[], &[&[T1, T2]])), all);
    assert_eq!(positions(store, filter(0, 9, &[D], &[&[T1]])), vec![(1, 1)]);
    assert_eq!(
        positions(store, filter(0, 9, &[B, D], &[&[T2]])),
        vec![(2, 0)]
    );
    assert_eq!(positions(store, filter(0, 9, &[A], &[])), vec![]);
    assert_eq!(positions(store, filter(2, 1, &[], &[])), vec![]);
    let entry = &store.logs(&filter(0, 9, &[D], &[])).unwrap()[0];
    assert_eq!(entry.block_hash, blocks[1].header.hash());
    assert_eq!((entry.tx_index, entry.tx_hash), (0, blocks[1].tx_hashes[0]));
    assert_eq!(entry.log, blocks[1].receipts[0].logs[1]);
}

fn assert_refused(store: &Store, block: &TestBlock, check: impl Fn(&StoreError) -> bool) {
    let before = FlatState::read(store);
    let head = store.head().unwrap();
    let err = store.commit_block(block.commit()).unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    assert_eq!(store.head().unwrap(), head);
    assert_eq!(FlatState::read(store), before);
    for h in &block.tx_hashes {
        assert_eq!(store.tx_location(h).unwrap(), None);
    }
    if head.is_none_or(|(n, _)| n < block.header.number) {
        assert_eq!(store.header(block.header.number).unwrap(), None);
    }
    assert_eq!(store.block_number(&block.header.hash()).unwrap(), None);
}

#[test]
fn store_round_trip_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = chain();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), None);
        assert_eq!(positions(&store, filter(0, 9, &[], &[])), vec![]);
        assert_refused(&store, &blocks[1], |e| {
            matches!(
                e,
                StoreError::NotNextBlock {
                    number: 1,
                    head: None
                }
            )
        });
        for b in &blocks {
            store.commit_block(b.commit()).unwrap();
        }
        check_contents(&store, &blocks);

        // A refused block changes nothing, whatever is wrong with it.
        let touch_a = |number: u64, parent: B256| {
            let mut diff = StateDiff::default();
            diff.accounts.insert(
                A,
                AccountChange {
                    info: None,
                    storage_cleared: true,
                    storage: StorageChanges::default(),
                },
            );
            TestBlock::new(header(number, parent, B256::ZERO), diff).with_tx(
                format!("refused {number}").into_bytes(),
                vec![log(A, vec![T1], b"")],
            )
        };
        let head_hash = blocks[2].header.hash();
        assert_refused(&store, &touch_a(4, head_hash), |e| {
            matches!(
                e,
                StoreError::NotNextBlock {
                    number: 4,
                    head: Some(2)
                }
            )
        });
        assert_refused(&store, &touch_a(2, blocks[1].header.hash()), |e| {
            matches!(
                e,
                StoreError::NotNextBlock {
                    number: 2,
                    head: Some(2)
                }
            )
        });
        assert_refused(&store, &touch_a(0, B256::ZERO), |e| {
            matches!(
                e,
                StoreError::NotNextBlock {
                    number: 0,
                    head: Some(2)
                }
            )
        });
        assert_refused(
            &store,
            &touch_a(3, blocks[1].header.hash()),
            |e| matches!(e, StoreError::ParentMismatch { number: 3, head_hash: h, .. } if *h == head_hash),
        );
        let mut no_receipt = touch_a(3, head_hash);
        no_receipt.receipts.clear();
        assert_refused(&store, &no_receipt, |e| {
            matches!(e, StoreError::MalformedBlock { number: 3, .. })
        });
        check_contents(&store, &blocks);
    }
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store, &blocks);
}
