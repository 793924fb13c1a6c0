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
