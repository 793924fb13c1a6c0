//! Block-STM against the sequential executor: generated blocks mixing ETH transfers (to fresh,
//! hot and code-bearing recipients, and to the fee recipient), ERC-20 transfers on the real
//! OpenZeppelin bytecode, deployments, reverts, self-destructs (of a contract whose slots the
//! block wrote before, spread over the shards), reads of the fee recipient's balance, payments
//! to it from contracts, chains of transactions from one sender, refused transactions, repeated
//! hashes and a hot storage slot must give identical outcomes, receipts and state diffs at
//! several thread counts, without falling back to the sequential executor.

use alloy_consensus::{SignableTransaction, TxEnvelope, TxLegacy};
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use proptest::prelude::*;
use secp256k1::{ecdsa::RecoverableSignature, Message, PublicKey, SecretKey};
use std::{path::PathBuf, sync::OnceLock};
use tessera_execution::{
    execute_block, execute_block_parallel_with_stats, execute_block_reference, first_difference,
    intrinsic_gas, mem::MemState, BlockEnv, BlockOutput, ChainRules, Fork, ParallelConfig,
    RecoveredTx,
};
use tessera_primitives::{Account, EMPTY_CODE_HASH};

const SENDERS: usize = 6;
const ETHER: u64 = 1_000_000_000_000_000_000;
const BASE_FEE: u64 = 7;
const BENEFICIARY: Address = Address::new([0xbe; 20]);
const TOKEN: Address = Address::new([0xe2; 20]);
const COUNTER: Address = Address::new([0xc0; 20]);
const REVERTER: Address = Address::new([0x4e; 20]);
const COINBASE_READER: Address = Address::new([0xcb; 20]);
const COINBASE_PAYER: Address = Address::new([0xca; 20]);
const DESTRUCTOR: Address = Address::new([0xde; 20]);
const HASHER: Address = Address::new([0x5a; 20]);
/// An EOA many transactions pay, which also sends.
fn hot() -> Address {
    signer(0).1
}
const IDENTITY_PRECOMPILE: Address = Address::with_last_byte(4);

/// SSTORE(0, SLOAD(0) + 1)
const COUNTER_CODE: &[u8] = &[0x60, 0x00, 0x54, 0x60, 0x01, 0x01, 0x60, 0x00, 0x55, 0x00];
/// REVERT(0, 0)
const REVERTER_CODE: &[u8] = &[0x60, 0x00, 0x60, 0x00, 0xfd];
/// SSTORE(0, BALANCE(COINBASE))
const COINBASE_READER_CODE: &[u8] = &[0x41, 0x31, 0x60, 0x00, 0x55, 0x00];
/// CALL(GAS, COINBASE, CALLVALUE, 0, 0, 0, 0)
const COINBASE_PAYER_CODE: &[u8] = &[
    0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x34, 0x41, 0x5a, 0xf1, 0x00,
];
/// Copies 64 bytes of calldata to memory and stores the sum of three hashes: of those 64
/// bytes twice (the executor's memo of recent inputs answers the second), and of 32 bytes that
/// reach past the memory expanded so far (revm's own instruction, charging the expansion).
const HASHER_CODE: &[u8] = &[
    0x60, 0x40, 0x60, 0x00, 0x60, 0x00, 0x37, // CALLDATACOPY(0, 0, 64)
    0x60, 0x40, 0x60, 0x00, 0x20, // SHA3(0, 64)
    0x60, 0x40, 0x60, 0x00, 0x20, // SHA3(0, 64)
    0x01, // ADD
    0x60, 0x20, 0x60, 0x30, 0x20, // SHA3(48, 32)
    0x01, // ADD
    0x60, 0x00, 0x55, 0x00, // SSTORE(0, sum) STOP
];
/// SSTORE(1, 1); return the one-byte runtime STOP.
const INIT_STORE: &[u8] = &[
    0x60, 0x01, 0x60, 0x01, 0x55, 0x60, 0x00, 0x60, 0x00, 0x53, 0x60, 0x01, 0x60, 0x00, 0xf3,
];
/// SELFDESTRUCT(CALLER) from init code: created and destroyed in one transaction.
const INIT_SELFDESTRUCT: &[u8] = &[0x33, 0xff];

/// Called with value: SSTORE(CALLVALUE, 1), a slot anywhere, so that the multi-version
/// memory's shards all hold some of its storage. Without: SELFDESTRUCT(hot), which before
/// Cancun deletes it and the slots written earlier in the block.
fn destructor_code() -> Vec<u8> {
    // CALLVALUE DUP1 PUSH1 28 JUMPI POP PUSH20 hot SELFDESTRUCT
    let mut code = vec![0x34, 0x80, 0x60, 28, 0x57, 0x50, 0x73];
    code.extend_from_slice(hot().as_slice());
    code.push(0xff);
    // 28: JUMPDEST PUSH1 1 SWAP1 SSTORE STOP
    code.extend_from_slice(&[0x5b, 0x60, 0x01, 0x90, 0x55, 0x00]);
    assert_eq!(code[28], 0x5b);
    code
}

fn signer(i: usize) -> (SecretKey, Address) {
    let key = SecretKey::from_secret_bytes(keccak256([i as u8; 7]).0).unwrap();
    let public = PublicKey::from_secret_key(&key).serialize_uncompressed();
    (key, Address::from_slice(&keccak256(&public[1..])[12..]))
}

fn token_code() -> &'static Bytes {
    static CODE: OnceLock<Bytes> = OnceLock::new();
    CODE.get_or_init(|| {
        let fixtures = std::env::var_os("TESSERA_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
            });
        let path = fixtures.join("contract-bytecode/ERC20Token.hex");
        let hex = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set TESSERA_FIXTURES)", path.display()));
        hex.trim().parse().expect("hex bytecode")
    })
}

fn balance_slot(holder: Address) -> U256 {
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(holder.as_slice());
    U256::from_be_bytes(keccak256(key).0)
}

/// Calldata for [`HASHER_CODE`]: one of four 64-byte inputs.
fn hash_input(seed: u8) -> Bytes {
    let seed = seed % 4;
    [keccak256([seed]), keccak256([seed, 1])].concat().into()
}

fn erc20_transfer(to: Address, amount: u64) -> Bytes {
    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(to.as_slice());
    input.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    input.into()
}

/// What the fee recipient looks like before the block.
#[derive(Debug, Clone, Copy)]
enum Recipient {
    Missing,
    Empty,
    Funded,
}

#[derive(Debug, Clone)]
enum Action {
    /// ETH to one of the recipients of [`target`].
    Transfer {
        to: u8,
        value: u64,
    },
    Erc20 {
        to: u8,
        amount: u64,
    },
    Counter,
    /// [`HASHER_CODE`] on one of a few inputs, sometimes with so little gas that it runs out
    /// among the hashes.
    Hash {
        input: u8,
        gas_limit: u64,
    },
    Revert,
    ReadCoinbase,
    /// A transfer of nothing to the fee recipient: touches it (EIP-161) without paying it.
    TouchCoinbase,
    PayCoinbase {
        value: u64,
    },
    Deploy,
    DeployAndDestroy,
    Destroy,
    /// A transaction that skips a nonce: refused.
    NonceGap,
    /// More value than the sender has: refused.
    Overspend,
}

fn target(i: u8, tx_index: usize) -> Address {
    match i % 10 {
        0..=2 => hot(),
        3 => signer(usize::from(i) % SENDERS).1,
        4 => BENEFICIARY,
        5 => COUNTER,
        6 => IDENTITY_PRECOMPILE,
        7 => DESTRUCTOR,
        _ => Address::from_slice(&keccak256((tx_index as u64).to_be_bytes())[12..]),
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<u8>(), 0..ETHER / 10).prop_map(|(to, value)| Action::Transfer { to, value }),
        3 => (any::<u8>(), 0..2_000u64).prop_map(|(to, amount)| Action::Erc20 { to, amount }),
        2 => Just(Action::Counter),
        1 => (any::<u8>(), prop_oneof![22_000..22_400u64, Just(100_000u64)])
            .prop_map(|(input, gas_limit)| Action::Hash { input, gas_limit }),
        1 => Just(Action::Revert),
        1 => Just(Action::ReadCoinbase),
        1 => Just(Action::TouchCoinbase),
        1 => (0..ETHER / 100).prop_map(|value| Action::PayCoinbase { value }),
        1 => Just(Action::Deploy),
        1 => Just(Action::DeployAndDestroy),
        1 => Just(Action::Destroy),
        1 => Just(Action::NonceGap),
        1 => Just(Action::Overspend),
    ]
}

fn sign(key: &SecretKey, sender: Address, tx: TxLegacy) -> RecoveredTx {
    let digest = Message::from_digest(tx.signature_hash().0);
    let (recid, compact) =
        RecoverableSignature::sign_ecdsa_recoverable(digest, key).serialize_compact();
    let signature = Signature::new(
        U256::from_be_slice(&compact[..32]),
        U256::from_be_slice(&compact[32..]),
        recid.to_u8() == 1,
    );
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    RecoveredTx {
        hash: *envelope.tx_hash(),
        envelope,
        sender,
    }
}

fn contract(state: &mut MemState, address: Address, code: &[u8], balance: u64) {
    let code = Bytes::copy_from_slice(code);
    let code_hash = keccak256(&code);
    state.codes.insert(code_hash, code);
    state.accounts.insert(
        address,
        Account {
            nonce: 1,
            balance: U256::from(balance),
            code_hash,
        },
    );
}

fn pre_state(recipient: Recipient) -> MemState {
    let mut state = MemState::default();
    let mut token_storage = tessera_execution::mem::Slots::default();
    for i in 0..SENDERS {
        let address = signer(i).1;
        state.accounts.insert(
            address,
            Account {
                nonce: 0,
                balance: U256::from(ETHER) * U256::from(100),
                code_hash: EMPTY_CODE_HASH,
            },
        );
        token_storage.insert(balance_slot(address), U256::from(10_000));
    }
    contract(&mut state, TOKEN, token_code(), 0);
    state.storage.insert(TOKEN, token_storage);
    contract(&mut state, COUNTER, COUNTER_CODE, 0);
    contract(&mut state, HASHER, HASHER_CODE, 0);
    contract(&mut state, REVERTER, REVERTER_CODE, 0);
    contract(&mut state, COINBASE_READER, COINBASE_READER_CODE, 0);
    contract(&mut state, COINBASE_PAYER, COINBASE_PAYER_CODE, 0);
    contract(&mut state, DESTRUCTOR, &destructor_code(), ETHER);
    match recipient {
        Recipient::Missing => {}
        Recipient::Empty => {
            state.accounts.insert(BENEFICIARY, Account::default());
        }
        Recipient::Funded => {
            state.accounts.insert(
                BENEFICIARY,
                Account {
                    balance: U256::from(ETHER),
                    ..Account::default()
                },
            );
        }
    }
    state
}

/// Signed transactions for `actions`; EIP-155 chain ids only from Spurious Dragon on.
fn block_txs(actions: &[(usize, Action, u64)], fork: Fork) -> Vec<RecoveredTx> {
    let chain_id = (fork >= Fork::SpuriousDragon).then_some(1);
    let keys: Vec<_> = (0..SENDERS).map(signer).collect();
    let mut nonces = [0u64; SENDERS];
    actions
        .iter()
        .enumerate()
        .map(|(index, (sender, action, tip))| {
            let (key, from) = &keys[*sender];
            let nonce = &mut nonces[*sender];
            let mut tx = TxLegacy {
                chain_id,
                nonce: *nonce,
                gas_price: u128::from(BASE_FEE + tip),
                gas_limit: 200_000,
                to: TxKind::Call(COUNTER),
                value: U256::ZERO,
                input: Bytes::new(),
            };
            *nonce += 1;
            match action {
                Action::Transfer { to, value } => {
                    tx.to = TxKind::Call(target(*to, index));
                    tx.value = U256::from(*value);
                    tx.gas_limit = 60_000;
                }
                Action::Erc20 { to, amount } => {
                    tx.to = TxKind::Call(TOKEN);
                    tx.input = erc20_transfer(target(*to, index), *amount);
                }
                Action::Counter => {}
                Action::Hash { input, gas_limit } => {
                    tx.to = TxKind::Call(HASHER);
                    tx.input = hash_input(*input);
                    tx.gas_limit = *gas_limit;
                }
                Action::Revert => tx.to = TxKind::Call(REVERTER),
                Action::ReadCoinbase => tx.to = TxKind::Call(COINBASE_READER),
                Action::TouchCoinbase => {
                    tx.to = TxKind::Call(BENEFICIARY);
                    tx.gas_limit = 60_000;
                }
                Action::PayCoinbase { value } => {
                    tx.to = TxKind::Call(COINBASE_PAYER);
                    tx.value = U256::from(*value);
                }
                Action::Deploy => {
                    tx.to = TxKind::Create;
                    tx.input = Bytes::from_static(INIT_STORE);
                }
                Action::DeployAndDestroy => {
                    tx.to = TxKind::Create;
                    tx.input = Bytes::from_static(INIT_SELFDESTRUCT);
                }
                Action::Destroy => tx.to = TxKind::Call(DESTRUCTOR),
                Action::NonceGap => {
                    tx.nonce += 1;
                    *nonce -= 1;
                }
                Action::Overspend => {
                    *nonce -= 1;
                    tx.to = TxKind::Call(hot());
                    tx.value = U256::from(ETHER) * U256::from(1_000);
                }
            }
            sign(key, *from, tx)
        })
        .collect()
}

fn env() -> BlockEnv {
    BlockEnv {
        number: 1,
        timestamp: 1_700_000_000,
        beneficiary: BENEFICIARY,
        gas_limit: 1 << 32,
        base_fee: BASE_FEE,
        prevrandao: Some(B256::ZERO),
        difficulty: U256::ZERO,
        excess_blob_gas: Some(0),
    }
}

/// Runs `txs` on revm alone, sequentially with the shortcuts (plain transfers, the deferred fee
/// credit) and through Block-STM, per transaction and over batches, at 1, 2 and 4 threads, and
/// requires identical results, from Block-STM itself (no fallback).
fn assert_equivalent(fork: Fork, pre: &MemState, txs: &[RecoveredTx]) -> Result<(), TestCaseError> {
    let rules = ChainRules { chain_id: 1, fork };
    let env = env();
    let sequential = execute_block(&rules, &env, txs, pre).expect("sequential execution");
    let reference = execute_block_reference(&rules, &env, txs, pre).expect("reference execution");
    if let Some(difference) = first_difference(&reference, &sequential) {
        return Err(TestCaseError::fail(format!(
            "{fork:?}, sequential: {difference}"
        )));
    }
    for (threads, config) in [1, 2, 4].into_iter().flat_map(|threads| {
        [
            (threads, ParallelConfig::always(threads)),
            (threads, ParallelConfig::batched(threads)),
        ]
    }) {
        let (parallel, stats) = execute_block_parallel_with_stats(&rules, &env, txs, pre, config)
            .expect("parallel execution");
        // Before EIP-161, touching a deleted account re-creates it empty; the parallel executor
        // may leave the EIP-7610 question about such an account to the sequential one.
        if fork >= Fork::SpuriousDragon || stats.fallback.is_some() {
            let allowed = (fork < Fork::SpuriousDragon)
                .then_some("an account with storage but no nonce or code");
            prop_assert_eq!(stats.fallback, allowed);
        }
        if let Some(difference) = first_difference(&sequential, &parallel) {
            return Err(TestCaseError::fail(format!(
                "{fork:?}, {threads} threads, {config:?}: {difference}"
            )));
        }
    }
    Ok(())
}

fn fork() -> impl Strategy<Value = Fork> {
    prop_oneof![
        Just(Fork::Prague),
        Just(Fork::Cancun),
        Just(Fork::Shanghai),
        Just(Fork::Berlin),
        Just(Fork::Byzantium),
        Just(Fork::Homestead),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    prop_oneof![
        Just(Recipient::Missing),
        Just(Recipient::Empty),
        Just(Recipient::Funded)
    ]
}

/// `PROPTEST_CASES`, if set.
fn env_cases() -> Option<u32> {
    std::env::var("PROPTEST_CASES").ok()?.parse().ok()
}

/// The block of `actions` runs to the same result sequentially and on Block-STM.
fn random_block_is_equivalent(
    fork: Fork,
    recipient: Recipient,
    actions: &[(usize, Action, u64)],
) -> Result<(), TestCaseError> {
    assert_equivalent(fork, &pre_state(recipient), &block_txs(actions, fork))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_cases().unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parallel_matches_sequential(
        fork in fork(),
        recipient in recipient(),
        actions in prop::collection::vec((0..SENDERS, action(), 0..3u64), 1..48),
    ) {
        random_block_is_equivalent(fork, recipient, &actions)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case is a dozen times the work of one above.
        cases: env_cases().map_or(8, |c| (c / 12).max(4)),
        ..ProptestConfig::default()
    })]

    /// Blocks large enough that workers claim runs of many transactions at once (the run
    /// length grows with the block), so that runs, and validation stopping at the first
    /// transaction that has not executed, are exercised with every kind of action.
    #[test]
    fn parallel_matches_sequential_on_large_blocks(
        fork in fork(),
        recipient in recipient(),
        actions in prop::collection::vec((0..SENDERS, action(), 0..3u64), 300..700),
    ) {
        random_block_is_equivalent(fork, recipient, &actions)?;
    }
}

/// Before Cancun a self-destruct deletes the contract with every slot the block wrote to it
/// before, whichever shard of the multi-version memory each slot is in.
#[test]
fn slots_written_before_a_self_destruct_go_with_it() {
    let mut actions: Vec<_> = (1..=24u64)
        .map(|i| {
            let value = i * 0x0101_0101_0101;
            (
                usize::try_from(i).unwrap() % SENDERS,
                Action::Transfer { to: 7, value },
                1,
            )
        })
        .collect();
    actions.push((0, Action::Destroy, 1));
    // Written again after the deletion: plain value to an account without code.
    actions.push((1, Action::Transfer { to: 7, value: 5 }, 1));
    for fork in [Fork::Shanghai, Fork::Cancun] {
        assert_equivalent(
            fork,
            &pre_state(Recipient::Funded),
            &block_txs(&actions, fork),
        )
        .unwrap();
    }
}

/// Many transfers to one address, which also sends: the lazy credits must add up, and its own
/// transactions must see them.
#[test]
fn hot_recipient_credits_add_up() {
    let mut actions = Vec::new();
    for i in 0..40 {
        actions.push((
            1 + i % (SENDERS - 1),
            Action::Transfer {
                to: 0,
                value: 1_000 + i as u64,
            },
            1,
        ));
        if i % 8 == 7 {
            // `hot()` pays someone everything it can see.
            actions.push((
                0,
                Action::Transfer {
                    to: 9,
                    value: ETHER,
                },
                0,
            ));
        }
    }
    let pre = pre_state(Recipient::Missing);
    assert_equivalent(Fork::Prague, &pre, &block_txs(&actions, Fork::Prague)).unwrap();
}

/// The fee recipient is missing or empty, and the first transaction touches it without paying
/// it while paying a fee: the sequential executor credits the fee in the same transaction, so
/// the recipient is neither deleted (EIP-161) nor, before Spurious Dragon, materialised empty.
#[test]
fn empty_fee_recipient_touched_before_any_fee() {
    let actions = [
        (0, Action::TouchCoinbase, 2),
        (1, Action::Counter, 1),
        (2, Action::TouchCoinbase, 0),
        (3, Action::ReadCoinbase, 1),
    ];
    for recipient in [Recipient::Missing, Recipient::Empty] {
        let pre = pre_state(recipient);
        for fork in [Fork::Prague, Fork::SpuriousDragon, Fork::Homestead] {
            assert_equivalent(fork, &pre, &block_txs(&actions, fork)).unwrap();
        }
    }
    // Empty but for storage (EIP-7610's case): deleting it would take the storage with it.
    // Block-STM leaves such a fee recipient to the sequential executor.
    let mut pre = pre_state(Recipient::Empty);
    let mut slots = tessera_execution::mem::Slots::default();
    slots.insert(U256::from(1), U256::from(7));
    pre.storage.insert(BENEFICIARY, slots);
    for fork in [Fork::Prague, Fork::SpuriousDragon, Fork::Homestead] {
        let rules = ChainRules { chain_id: 1, fork };
        let txs = block_txs(&actions, fork);
        let reference = execute_block_reference(&rules, &env(), &txs, &pre).unwrap();
        let sequential = execute_block(&rules, &env(), &txs, &pre).unwrap();
        assert_eq!(first_difference(&reference, &sequential), None, "{fork:?}");
        let kept = &sequential.diff.accounts[&BENEFICIARY];
        assert!(!kept.storage_cleared, "{fork:?}: {kept:?}");
        let (parallel, stats) = execute_block_parallel_with_stats(
            &rules,
            &env(),
            &txs,
            &pre,
            ParallelConfig::always(2),
        )
        .unwrap();
        assert_eq!(
            stats.fallback,
            Some("the fee recipient is empty but has storage")
        );
        assert_eq!(first_difference(&sequential, &parallel), None, "{fork:?}");
    }
}

/// Every transaction writes one slot and reads the fee recipient.
#[test]
fn hot_slot_and_fee_reads() {
    let actions: Vec<_> = (0..60)
        .map(|i| {
            let action = if i % 5 == 0 {
                Action::ReadCoinbase
            } else {
                Action::Counter
            };
            (i % SENDERS, action, (i % 3) as u64)
        })
        .collect();
    for recipient in [Recipient::Missing, Recipient::Empty, Recipient::Funded] {
        let pre = pre_state(recipient);
        for fork in [Fork::Prague, Fork::Homestead] {
            assert_equivalent(fork, &pre, &block_txs(&actions, fork)).unwrap();
        }
    }
}

/// Hashing through the executor's memo charges what revm's instruction does: a sweep of gas
/// limits runs out of gas before, among and after the hashes, repeats inputs across
/// transactions, and gives revm's own results, sequentially and in parallel.
#[test]
fn hashes_cost_what_revm_charges_at_every_gas_limit() {
    let pre = pre_state(Recipient::Funded);
    // Cancun: no calldata floor, so every limit from the intrinsic cost up is included.
    let intrinsic = |input: u8| {
        let probe = Action::Hash {
            input,
            gas_limit: 0,
        };
        intrinsic_gas(
            Fork::Cancun,
            &block_txs(&[(0, probe, 1)], Fork::Cancun)[0].envelope,
        )
    };
    // Limits from the intrinsic cost up run out of gas in the copy, in one of the three hashes
    // (about 170 gas in all) or at the store; the last transactions have enough.
    let actions: Vec<_> = (0..252u64)
        .map(|i| {
            let input = i as u8;
            let gas_limit = if i < 240 {
                intrinsic(input) + i
            } else {
                100_000
            };
            (i as usize % SENDERS, Action::Hash { input, gas_limit }, 1)
        })
        .collect();
    let txs = block_txs(&actions, Fork::Cancun);
    assert_equivalent(Fork::Cancun, &pre, &txs).unwrap();
    let rules = ChainRules {
        chain_id: 1,
        fork: Fork::Cancun,
    };
    let output = execute_block(&rules, &env(), &txs, &pre).unwrap();
    let receipts: Vec<_> = output.receipts().collect();
    assert_eq!(receipts.len(), actions.len(), "all included");
    for (receipt, (_, action, _)) in receipts.iter().zip(&actions) {
        let Action::Hash { gas_limit, .. } = action else {
            unreachable!()
        };
        if *gas_limit < 100_000 {
            assert_eq!(receipt.status, tessera_primitives::TxStatus::Halt);
            assert_eq!(receipt.gas_used, *gas_limit);
        } else {
            assert_eq!(receipt.status, tessera_primitives::TxStatus::Success);
        }
    }
}

/// The equivalence check itself notices a different result.
#[test]
fn a_different_block_is_noticed() {
    let pre = pre_state(Recipient::Funded);
    let a = block_txs(&[(1, Action::Counter, 1)], Fork::Prague);
    let b = block_txs(
        &[(1, Action::Transfer { to: 9, value: 5 }, 1)],
        Fork::Prague,
    );
    let rules = ChainRules {
        chain_id: 1,
        fork: Fork::Prague,
    };
    let left = execute_block(&rules, &env(), &a, &pre).unwrap();
    let right =
        execute_block_parallel_with_stats(&rules, &env(), &b, &pre, ParallelConfig::always(2))
            .unwrap()
            .0;
    assert!(first_difference(&left, &right).is_some());
    assert!(first_difference(&left, &left).is_none());
}

/// `actions` as a Prague block on the funded pre-state, with the sequential executor's output.
fn prague_block(
    actions: &[(usize, Action, u64)],
) -> (ChainRules, MemState, Vec<RecoveredTx>, BlockOutput) {
    let pre = pre_state(Recipient::Funded);
    let txs = block_txs(actions, Fork::Prague);
    let rules = ChainRules {
        chain_id: 1,
        fork: Fork::Prague,
    };
    let sequential = execute_block(&rules, &env(), &txs, &pre).unwrap();
    (rules, pre, txs, sequential)
}

/// A block where every transaction writes one slot, as the node runs it: Block-STM may give up
/// on it for the sequential executor part way (when it does depends on timing), and the output
/// is the same either way; with the fallback off, Block-STM finishes it alone.
#[test]
fn contended_block_falls_back_with_the_same_output() {
    let actions: Vec<_> = (0..400)
        .map(|i| (i % SENDERS, Action::Counter, 1))
        .collect();
    let (rules, pre, txs, sequential) = prague_block(&actions);
    let node = ParallelConfig {
        min_txs: 0,
        ..ParallelConfig::with_threads(2)
    };
    for _ in 0..20 {
        let (output, stats) =
            execute_block_parallel_with_stats(&rules, &env(), &txs, &pre, node).unwrap();
        assert!(matches!(stats.fallback, None | Some("contention")));
        assert_eq!(first_difference(&sequential, &output), None);
        let (output, stats) = execute_block_parallel_with_stats(
            &rules,
            &env(),
            &txs,
            &pre,
            ParallelConfig::always(2),
        )
        .unwrap();
        assert_eq!(stats.fallback, None);
        assert_eq!(first_difference(&sequential, &output), None);
    }
}

/// A block of more than `ParallelConfig::DEFAULT_BATCHES_FROM` transactions, as the node runs
/// it: Block-STM over batches (which may give up on contention: six senders' nonce chains run
/// through every batch), and forced to finish over batches alone, both with the sequential
/// executor's output.
#[test]
fn large_block_runs_over_batches_with_the_same_output() {
    let kinds = |i: usize| match i % 5 {
        0 => Action::Transfer {
            to: (i * 7 % 256) as u8,
            value: 1_000 + i as u64,
        },
        1 | 3 => Action::Erc20 {
            to: (i * 13 % 256) as u8,
            amount: i as u64 % 50,
        },
        2 if i % 300 == 2 => Action::ReadCoinbase,
        2 => Action::Revert,
        _ => Action::Hash {
            input: i as u8,
            gas_limit: 60_000,
        },
    };
    let actions: Vec<_> = (0..ParallelConfig::DEFAULT_BATCHES_FROM + 76)
        .map(|i| (i % SENDERS, kinds(i), (i % 3) as u64))
        .collect();
    let (rules, pre, txs, sequential) = prague_block(&actions);
    assert!(sequential.outcomes.iter().all(|o| o.receipt().is_some()));
    let (output, stats) = execute_block_parallel_with_stats(
        &rules,
        &env(),
        &txs,
        &pre,
        ParallelConfig::with_threads(2),
    )
    .unwrap();
    assert!(
        matches!(stats.fallback, None | Some("contention")),
        "{stats:?}"
    );
    assert_eq!(first_difference(&sequential, &output), None);
    let (output, stats) =
        execute_block_parallel_with_stats(&rules, &env(), &txs, &pre, ParallelConfig::batched(2))
            .unwrap();
    assert_eq!(stats.fallback, None);
    assert_eq!(first_difference(&sequential, &output), None);
}

/// A block whose gas runs out part way: the sequential executor rejects the transactions that
/// do not fit, and Block-STM over batches, which runs every batch as if the block's gas were
/// all its own, notices when it assembles the block and hands it to the sequential executor.
#[test]
fn batches_notice_a_block_that_runs_out_of_gas() {
    let actions: Vec<_> = (0..ParallelConfig::DEFAULT_BATCHES_FROM + 76)
        .map(|i| {
            let to = (i * 13 % 256) as u8;
            (i % SENDERS, Action::Erc20 { to, amount: 1 }, 1)
        })
        .collect();
    let (rules, pre, txs, whole) = prague_block(&actions);
    assert!(whole.outcomes.iter().all(|o| o.receipt().is_some()));
    let env = BlockEnv {
        gas_limit: whole.gas_used * 2 / 3,
        ..env()
    };
    let sequential = execute_block(&rules, &env, &txs, &pre).unwrap();
    let rejected = sequential
        .outcomes
        .iter()
        .filter(|o| o.receipt().is_none())
        .count();
    assert!(rejected > 0);
    let (output, stats) =
        execute_block_parallel_with_stats(&rules, &env, &txs, &pre, ParallelConfig::batched(2))
            .unwrap();
    assert_eq!(
        stats.fallback,
        Some("a transaction does not fit the block's gas")
    );
    assert_eq!(first_difference(&sequential, &output), None);
}

/// Before Cancun a contract that self-destructs loses its storage, and one created again at
/// its address by CREATE2 starts with none: a batch above the one that re-created it reads a
/// slot the new contract never wrote as zero, not as the value before the block.
#[test]
fn a_slot_of_a_recreated_contract_reads_as_zero_in_later_batches() {
    // Called without data: SSTORE(1, SLOAD(0) + 1). With data: SELFDESTRUCT(CALLER).
    const RUNTIME: &[u8] = &[
        0x36, 0x15, 0x60, 0x07, 0x57, 0x33, 0xff, // CALLDATASIZE ISZERO JUMPI(7) ...
        0x5b, 0x60, 0x00, 0x54, 0x60, 0x01, 0x01, 0x60, 0x01, 0x55, 0x00,
    ];
    // CREATE2(0, 0, CALLDATASIZE, 0) of the calldata.
    const FACTORY: &[u8] = &[
        0x36, 0x60, 0x00, 0x60, 0x00, 0x37, 0x60, 0x00, 0x36, 0x60, 0x00, 0x60, 0x00, 0xf5, 0x00,
    ];
    // Returns RUNTIME, which follows these twelve bytes.
    let mut init = vec![
        0x60, 0x12, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 0x12, 0x60, 0x00, 0xf3,
    ];
    init.extend_from_slice(RUNTIME);
    let factory = Address::repeat_byte(0xfa);
    let metamorphic = factory.create2(B256::ZERO, keccak256(&init));

    let mut pre = pre_state(Recipient::Funded);
    contract(&mut pre, factory, FACTORY, 0);
    contract(&mut pre, metamorphic, RUNTIME, 0);
    let mut slots = tessera_execution::mem::Slots::default();
    slots.insert(U256::ZERO, U256::from(5));
    pre.storage.insert(metamorphic, slots);

    let fork = Fork::Shanghai;
    let (key, from) = signer(SENDERS - 1);
    let call = |nonce: u64, to: Address, input: Vec<u8>| {
        let tx = TxLegacy {
            chain_id: Some(1),
            nonce,
            gas_price: u128::from(BASE_FEE + 1),
            gas_limit: 200_000,
            to: TxKind::Call(to),
            value: U256::ZERO,
            input: input.into(),
        };
        sign(&key, from, tx)
    };
    let filler: Vec<_> = (0..597)
        .map(|i| {
            let to = 8 + (i % 2) as u8;
            (i % (SENDERS - 1), Action::Transfer { to, value: 1 }, 1)
        })
        .collect();
    let mut txs = block_txs(&filler, fork);
    txs.insert(0, call(0, metamorphic, vec![1]));
    txs.insert(1, call(1, factory, init.clone()));
    txs.insert(550, call(2, metamorphic, Vec::new()));

    let rules = ChainRules { chain_id: 1, fork };
    let sequential = execute_block(&rules, &env(), &txs, &pre).unwrap();
    assert!(sequential.outcomes.iter().all(|o| o.receipt().is_some()));
    let recreated = &sequential.diff.accounts[&metamorphic];
    assert!(recreated.storage_cleared);
    assert_eq!(recreated.storage.get(&U256::from(1)), Some(&U256::from(1)));
    let (output, stats) =
        execute_block_parallel_with_stats(&rules, &env(), &txs, &pre, ParallelConfig::batched(2))
            .unwrap();
    assert_eq!(stats.fallback, None);
    assert_eq!(first_difference(&sequential, &output), None);
}
