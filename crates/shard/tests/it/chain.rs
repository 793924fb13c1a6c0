//! The shard chain as the node drives it: admission, proposal, application, the pool after a
//! block, state at past blocks, simulated calls, and the genesis check on reopen.

use alloy_consensus::TxEip1559;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use tessera_config::{
    keys::{derive_accounts, DevAccount, DEV_MNEMONIC},
    Genesis,
};
use tessera_execution::{call, estimate_gas, BlockEnv, CallOutcome, CallRequest, StateView};
use tessera_primitives::ShardId;
use tessera_shard::{
    chain::{Chain, ChainError, SubmitError},
    history::StateAt,
    mempool::MempoolConfig,
};

fn sign_transfer(
    from: &DevAccount,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: u64,
    tip: u128,
) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(to),
        value: U256::from(value),
        ..Default::default()
    };
    let secret = secp256k1::SecretKey::from_secret_bytes(from.secret.0).unwrap();
    let envelope = crate::common::sign_envelope(&secret, tx);
    envelope.encoded_2718()
}

fn balance(state: &impl StateView, address: Address) -> U256 {
    state
        .account(&address)
        .unwrap()
        .map_or(U256::ZERO, |a| a.balance)
}

#[test]
fn transfers_flow_from_pool_to_block_with_exact_fees() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis::dev(1);
    let chain = Chain::open(dir.path(), &genesis, ShardId(0), MempoolConfig::default()).unwrap();
    let accounts = derive_accounts(DEV_MNEMONIC, 2);
    let (alice, bob) = (accounts[0], accounts[1]);
    let recipient = genesis.fee_recipient;
    let store = chain.store();
    let alice_before = balance(store, alice.address);

    let first = sign_transfer(
        &alice,
        genesis.chain_id,
        0,
        bob.address,
        1_000,
        2_000_000_000,
    );
    let second = sign_transfer(
        &alice,
        genesis.chain_id,
        1,
        bob.address,
        2_000,
        2_000_000_000,
    );
    let h1 = chain.submit_raw(&first).unwrap();
    let h2 = chain.submit_raw(&second).unwrap();
    assert_eq!(chain.pending_nonce(&alice.address).unwrap(), 2);
    assert_eq!(chain.pool_len(), 2);
    // The same bytes again are refused, and say why.
    let again = chain.submit_raw(&first).unwrap_err();
    assert!(matches!(again, SubmitError::Pool(_)));
    assert!(again.to_string().contains("already known"), "{again}");
    // A wrong chain id is refused.
    let wrong = sign_transfer(&alice, genesis.chain_id + 1, 2, bob.address, 1, 1);
    assert!(chain
        .submit_raw(&wrong)
        .unwrap_err()
        .to_string()
        .contains("chain id"));

    let (template, txs) = chain.propose(1_700_000_000).unwrap();
    assert_eq!(txs.iter().map(|t| t.hash).collect::<Vec<_>>(), vec![h1, h2]);
    let applied = chain.apply(&template, &txs).unwrap();
    assert_eq!(applied.header.number, 1);
    assert_eq!(chain.pool_len(), 0, "mined transactions leave the pool");
    assert_eq!(chain.pending_nonce(&alice.address).unwrap(), 2);

    let base_fee = template.base_fee as u128;
    let price = base_fee + 2_000_000_000;
    let spent = U256::from(2 * 21_000 * price + 3_000);
    assert_eq!(balance(store, alice.address), alice_before - spent);
    assert_eq!(
        balance(store, recipient),
        U256::from(2 * 21_000 * 2_000_000_000u128),
        "the fee recipient gets exactly the priority fees"
    );

    // The state after genesis is still readable through the trie.
    let genesis_header = store.header(0).unwrap().unwrap();
    let past = StateAt::new(store, genesis_header.state_root);
    assert_eq!(balance(&past, alice.address), alice_before);
    assert_eq!(balance(&past, recipient), U256::ZERO);
    let now = StateAt::new(store, applied.header.state_root);
    assert_eq!(balance(&now, alice.address), balance(store, alice.address));

    // A simulated transfer needs exactly 21000 gas, and a call with one less fails.
    let env = BlockEnv {
        number: 1,
        timestamp: template.timestamp,
        beneficiary: recipient,
        gas_limit: genesis.gas_limit,
        base_fee: template.base_fee,
        prevrandao: Some(B256::ZERO),
        difficulty: U256::ZERO,
        excess_blob_gas: None,
    };
    let req = CallRequest {
        from: alice.address,
        to: Some(bob.address),
        value: U256::from(5),
        input: Bytes::new(),
        ..Default::default()
    };
    let rules = genesis.rules();
    assert_eq!(estimate_gas(&rules, &env, &req, store).unwrap(), 21_000);
    let short = CallRequest {
        gas: Some(20_999),
        ..req.clone()
    };
    assert!(call(&rules, &env, &short, store).is_err());
    assert!(matches!(
        call(&rules, &env, &req, store).unwrap(),
        CallOutcome::Success { .. }
    ));
}

#[test]
fn reopening_continues_and_another_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis::dev(1);
    let head = {
        let chain =
            Chain::open(dir.path(), &genesis, ShardId(0), MempoolConfig::default()).unwrap();
        let (template, txs) = chain.propose(10).unwrap();
        chain.apply(&template, &txs).unwrap();
        chain.head().unwrap()
    };
    let chain = Chain::open(dir.path(), &genesis, ShardId(0), MempoolConfig::default()).unwrap();
    assert_eq!(chain.head().unwrap(), head);
    // Timestamps never go backwards, even if the proposer's clock does.
    assert_eq!(chain.next_template(5).unwrap().timestamp, 10);
    drop(chain);

    let mut other = genesis.clone();
    other.gas_limit += 1;
    let err = Chain::open(dir.path(), &other, ShardId(0), MempoolConfig::default()).unwrap_err();
    assert!(matches!(err, ChainError::GenesisMismatch { .. }), "{err}");
}

#[test]
fn payloads_skip_pending_transactions_attest_roots_and_divergence_stops_the_chain() {
    use tessera_shard::{
        chain::Verdict,
        payload::{Checkpoint, Payload},
    };
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis::dev(1);
    let chain = Chain::open(dir.path(), &genesis, ShardId(0), MempoolConfig::default()).unwrap();
    let accounts = derive_accounts(DEV_MNEMONIC, 2);
    let (alice, bob) = (accounts[0], accounts[1]);
    let raws: Vec<Vec<u8>> = (0..3)
        .map(|n| sign_transfer(&alice, genesis.chain_id, n, bob.address, 1, 1))
        .collect();
    for raw in &raws {
        chain.submit_raw(raw).unwrap();
    }
    let genesis_root = chain.head().unwrap().state_root;

    // Block 1 takes all three; block 2, proposed on top of it before it executes, takes none
    // of them again.
    let first = chain.build_payload(100, 1, &[]).unwrap();
    assert_eq!(first.transactions.len(), 3);
    assert_eq!(
        first.checkpoint,
        Checkpoint {
            number: 0,
            state_root: genesis_root
        }
    );
    let second = chain.build_payload(100, 2, &[&first]).unwrap();
    assert!(second.transactions.is_empty());
    // A fourth transaction from alice follows the pending nonces.
    chain
        .submit_raw(&sign_transfer(
            &alice,
            genesis.chain_id,
            3,
            bob.address,
            1,
            1,
        ))
        .unwrap();
    assert_eq!(
        chain
            .build_payload(100, 2, &[&first])
            .unwrap()
            .transactions
            .len(),
        1
    );

    assert_eq!(
        chain.verify_payload(&first, 1, 1_000).unwrap(),
        Verdict::Valid
    );
    let mut wrong_root = first.clone();
    wrong_root.checkpoint.state_root = B256::repeat_byte(1);
    assert!(matches!(
        chain.verify_payload(&wrong_root, 1, 1_000).unwrap(),
        Verdict::Invalid(reason) if reason.contains("state root")
    ));
    assert!(matches!(
        chain.verify_payload(&first, 1, 99).unwrap(),
        Verdict::Invalid(reason) if reason.contains("timestamp")
    ));
    let mut garbage = first.clone();
    garbage
        .transactions
        .push(Bytes::from_static(b"not a transaction"));
    assert!(matches!(
        chain.verify_payload(&garbage, 1, 1_000).unwrap(),
        Verdict::Invalid(reason) if reason.contains("transaction 3")
    ));
    let mut ahead = second.clone();
    ahead.checkpoint.number = 1;
    assert_eq!(
        chain.verify_payload(&ahead, 2, 1_000).unwrap(),
        Verdict::NotYet { number: 1 }
    );
    let mut stale = second.clone();
    stale.checkpoint.number = 0;
    assert!(matches!(
        chain.verify_payload(&stale, 70, 1_000).unwrap(),
        Verdict::Invalid(_)
    ));

    // A finalized block whose checkpoint disagrees with this node's root stops it, and
    // commits nothing.
    assert!(matches!(
        chain.apply_payload(&wrong_root, b"record"),
        Err(ChainError::Divergence { number: 0, .. })
    ));
    assert_eq!(chain.head().unwrap().number, 0);

    let applied = chain.apply_payload(&first, b"record 1").unwrap();
    assert_eq!(applied.header.number, 1);
    assert_eq!(applied.output.gas_used, 3 * 21_000);
    assert_eq!(
        chain.store().consensus_record().unwrap().unwrap(),
        b"record 1"
    );
    let next = Payload {
        timestamp: 50, // earlier than the parent's: applied as the parent's
        checkpoint: Checkpoint {
            number: 1,
            state_root: applied.header.state_root,
        },
        transactions: vec![],
    };
    assert_eq!(
        chain.verify_payload(&next, 2, 1_000).unwrap(),
        Verdict::Valid
    );
    let header = chain.apply_payload(&next, b"record 2").unwrap().header;
    assert_eq!(header.timestamp, 100);
}

#[test]
fn the_consensus_wal_keeps_entries_in_order_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let store = tessera_shard::store::Store::open(dir.path()).unwrap();
    assert!(store.wal_entries().unwrap().is_empty());
    for sequence in [0u64, 1, 2, 300] {
        store
            .wal_append(sequence, format!("entry {sequence}").as_bytes())
            .unwrap();
    }
    let sequences: Vec<u64> = store.wal_entries().unwrap().iter().map(|e| e.0).collect();
    assert_eq!(sequences, vec![0, 1, 2, 300]);
    store.wal_truncate(2).unwrap();
    let entries = store.wal_entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], (2, b"entry 2".to_vec()));
    drop(store);
    let reopened = tessera_shard::store::Store::open(dir.path()).unwrap();
    assert_eq!(reopened.wal_entries().unwrap().len(), 2);
    assert_eq!(reopened.consensus_record().unwrap(), None);
}
