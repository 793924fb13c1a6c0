//! Blocks of real signed transactions applied through the executor to RocksDB: the header's
//! state root must equal Ethereum's state root computed from scratch (alloy-trie) over the same
//! state, block after block, and after reopening the store.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use std::collections::BTreeMap;
use tessera_execution::{mem::MemState, ChainRules, Fork, ParallelConfig, RecoveredTx, TxOutcome};
use tessera_primitives::{Account, AccountChange, ShardId, StateDiff, EMPTY_CODE_HASH};
use tessera_shard::{
    apply::{apply_block, commit_genesis, BlockTemplate},
    commitment,
    store::Store,
};

const CHAIN_ID: u64 = 7_777;
const BASE_FEE: u64 = 7;

struct Key {
    secret: secp256k1::SecretKey,
    address: Address,
}

fn key(seed: u8) -> Key {
    let secret = secp256k1::SecretKey::from_secret_bytes([seed; 32]).unwrap();
    let public = secp256k1::PublicKey::from_secret_key(&secret);
    let address = Address::from_slice(&keccak256(&public.serialize_uncompressed()[1..])[12..]);
    Key { secret, address }
}

fn sign<T: SignableTransaction<Signature>>(key: &Key, tx: T) -> RecoveredTx
where
    TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let envelope = crate::common::sign_envelope(&key.secret, tx);
    let recovered = RecoveredTx::from_envelope(envelope).unwrap();
    assert_eq!(recovered.sender, key.address);
    recovered
}

fn transfer(key: &Key, nonce: u64, to: Address, value: u64) -> RecoveredTx {
    sign(
        key,
        TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 100,
            max_priority_fee_per_gas: 2,
            to: TxKind::Call(to),
            value: U256::from(value),
            ..Default::default()
        },
    )
}

/// Init code that stores CALLVALUE+1 in slot 0 and 0x2a in slot 1, and deploys a runtime that
/// returns slot 0.
fn deploy(key: &Key, nonce: u64) -> RecoveredTx {
    // runtime: PUSH1 0 SLOAD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
    let runtime = [
        0x60, 0x00, 0x54, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
    ];
    let mut init = vec![
        0x34,
        0x60,
        0x01,
        0x01,
        0x60,
        0x00,
        0x55, // CALLVALUE 1 ADD 0 SSTORE
        0x60,
        0x2a,
        0x60,
        0x01,
        0x55, // 0x2a 1 SSTORE
        0x60,
        runtime.len() as u8,
        0x80, // len len
        0x60,
        0x00, // code offset placeholder, patched below
        0x60,
        0x00,
        0x39, // CODECOPY(0, offset, len)
        0x60,
        0x00,
        0xf3, // RETURN(0, len)
    ];
    let offset = init.len() as u8;
    init[16] = offset;
    init.extend_from_slice(&runtime);
    sign(
        key,
        TxLegacy {
            chain_id: Some(CHAIN_ID),
            nonce,
            gas_price: 50,
            gas_limit: 200_000,
            to: TxKind::Create,
            value: U256::from(5),
            input: Bytes::from(init),
        },
    )
}

/// Recomputes the state root from every account and slot in the store's flat tables.
fn root_from_flat_tables(store: &Store) -> B256 {
    let mut storage: BTreeMap<Address, BTreeMap<U256, U256>> = BTreeMap::new();
    for entry in store.iter_storage().unwrap() {
        let (address, slot, value) = entry.unwrap();
        storage.entry(address).or_default().insert(slot, value);
    }
    let accounts: Vec<_> = store
        .iter_accounts()
        .unwrap()
        .map(|e| {
            let (address, account) = e.unwrap();
            (
                address,
                account,
                storage.remove(&address).unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        storage.is_empty(),
        "storage without an account: {storage:?}"
    );
    commitment::state_root_from_scratch(accounts)
}

#[test]
fn applied_blocks_carry_ethereum_state_roots() {
    let dir = tempfile::tempdir().unwrap();
    let alice = key(1);
    let bob = key(2);
    let carol = key(3);
    let beneficiary = Address::repeat_byte(0xbe);
    let rules = ChainRules {
        chain_id: CHAIN_ID,
        fork: Fork::Cancun,
    };
    let template = BlockTemplate {
        shard: ShardId(0),
        timestamp: 1_700_000_000,
        beneficiary,
        gas_limit: 30_000_000,
        base_fee: BASE_FEE,
    };

    let mut alloc = StateDiff::default();
    for k in [&alice, &bob] {
        alloc.accounts.insert(
            k.address,
            AccountChange {
                info: Some(Account {
                    nonce: 0,
                    balance: U256::from(10u64.pow(18)),
                    code_hash: EMPTY_CODE_HASH,
                }),
                ..Default::default()
            },
        );
    }
    let mut mirror = MemState::default();
    mirror.apply(&alloc);

    let store = Store::open(dir.path()).unwrap();
    let genesis = commit_genesis(&store, ShardId(0), 30_000_000, BASE_FEE, 0, &alloc).unwrap();
    assert_eq!(genesis.state_root, mirror.state_root());

    let blocks = [
        vec![
            transfer(&alice, 0, carol.address, 1_000),
            transfer(&bob, 0, carol.address, 2_000),
        ],
        vec![
            deploy(&alice, 1),
            transfer(&alice, 2, bob.address, 3),
            transfer(&bob, 0, alice.address, 1),
        ],
        vec![
            transfer(&carol, 0, alice.address, 500),
            transfer(&bob, 1, Address::repeat_byte(9), 0),
        ],
    ];
    let mut included = 0;
    for (i, txs) in blocks.iter().enumerate() {
        // Block-STM on every block, even these small ones, over RocksDB.
        let applied = apply_block(
            &store,
            &rules,
            &template,
            txs,
            ParallelConfig::always(2),
            None,
        )
        .unwrap();
        mirror.apply(&applied.output.diff);
        assert_eq!(applied.header.number, i as u64 + 1);
        assert_eq!(
            applied.header.state_root,
            mirror.state_root(),
            "block {}",
            i + 1
        );
        assert_eq!(
            applied.header.state_root,
            root_from_flat_tables(&store),
            "block {}",
            i + 1
        );
        assert_eq!(
            store.head().unwrap(),
            Some((applied.header.number, applied.header.hash()))
        );
        included += applied
            .output
            .outcomes
            .iter()
            .filter(|o| o.receipt().is_some())
            .count();
    }
    // Refused and left out: bob's replayed nonce 0 in block 2, and in block 3 carol, whose
    // 3,000 wei cannot cover 21,000 gas at a fee cap of 100.
    assert_eq!(included, 5);
    assert_eq!(store.account(&carol.address).unwrap().unwrap().nonce, 0);
    let contract = alice.address.create(1);
    assert_eq!(
        store.storage(&contract, &U256::ZERO).unwrap(),
        U256::from(6)
    );
    assert_eq!(
        store.storage(&contract, &U256::from(1)).unwrap(),
        U256::from(0x2a)
    );
    let receipts = store.receipts(2).unwrap().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].contract_address, Some(contract));

    let head = store.head().unwrap().unwrap();
    let root = store.header(head.0).unwrap().unwrap().state_root;
    drop(store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.head().unwrap(), Some(head));
    assert_eq!(root_from_flat_tables(&reopened), root);
    assert!(matches!(
        apply_block(
            &reopened,
            &rules,
            &template,
            &[transfer(&alice, 3, bob.address, 1)],
            ParallelConfig::always(2),
            None,
        )
        .unwrap()
        .output
        .outcomes[0],
        TxOutcome::Included(_)
    ));
}
