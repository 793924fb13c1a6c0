//! Plain value transfers executed without the interpreter.
//!
//! A transaction that only moves ether from an account without code to another account without
//! code runs no bytecode: its whole effect is the sender's nonce and balance, the recipient's
//! balance and the fee recipient's tip, and its gas is exactly 21,000. Building revm's context,
//! journal and per-transaction state for it costs several times what the transfer itself does,
//! so both executors apply such transfers directly.
//!
//! The shortcut only takes transactions that are plainly valid: anything revm could refuse or
//! treat specially (a wrong nonce or chain id, too little balance, fee caps below the base fee,
//! code at either end, a precompile, a zero value, access lists, a fee recipient at either end,
//! forks before London) goes to revm, which decides it as for any transaction. Within what it
//! takes, its result is revm's to the wei; the tests compare the two on blocks built to hit
//! every condition at its edge.

use crate::executor::BlockEnv;
use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, Bytes, U256};
use revm::{
    context::{
        result::{ExecutionResult, Output, ResultGas, SuccessReason},
        CfgEnv,
    },
    context_interface::Cfg,
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
};
use tessera_primitives::Account;

use crate::RecoveredTx;

/// The gas of a plain transfer: the base cost, with no calldata and no access list. From Prague
/// on the EIP-7623 floor is the same number.
pub(crate) const TRANSFER_GAS: u64 = 21_000;

/// A transaction whose own fields make it a plain transfer; whether it is one depends on the
/// accounts it finds ([`PlainTransfer::apply`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlainTransfer {
    pub to: Address,
    value: U256,
    nonce: u64,
    /// The most the sender must hold: the gas limit at the fee cap, plus the value.
    max_cost: U256,
    /// What the sender pays in the end: 21,000 gas at the effective price, plus the value.
    cost: U256,
    /// The fee recipient's share: 21,000 gas at the effective price less the base fee.
    pub tip: U256,
}

/// What a plain transfer does to its two accounts. The tip is credited separately, since the
/// parallel executor defers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transferred {
    pub sender: Account,
    pub recipient: Account,
}

impl PlainTransfer {
    /// `tx` as a plain transfer, if nothing in its fields, the block or the rules could make
    /// revm treat it otherwise.
    pub(crate) fn new(tx: &RecoveredTx, cfg: &CfgEnv, env: &BlockEnv) -> Option<Self> {
        let spec = cfg.spec;
        // Before London there is no base fee to burn; after Osaka gas is priced differently.
        if !spec.is_enabled_in(SpecId::LONDON) || spec.is_enabled_in(SpecId::AMSTERDAM) {
            return None;
        }
        let envelope = &tx.envelope;
        let (gas_price, max_fee) = match envelope {
            TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) => {
                let price = envelope.max_fee_per_gas();
                (price, price)
            }
            TxEnvelope::Eip1559(t) => {
                let t = t.tx();
                if t.max_priority_fee_per_gas > t.max_fee_per_gas {
                    return None;
                }
                let base = u128::from(env.base_fee);
                let price = t
                    .max_fee_per_gas
                    .min(base.saturating_add(t.max_priority_fee_per_gas));
                (price, t.max_fee_per_gas)
            }
            _ => return None,
        };
        let to = envelope.to()?;
        let value = envelope.value();
        let gas_limit = envelope.gas_limit();
        let plain = envelope.input().is_empty()
            && envelope.access_list().is_none_or(|l| l.is_empty())
            && !value.is_zero()
            && to != tx.sender
            && to != env.beneficiary
            && tx.sender != env.beneficiary
            // Every precompile, present or future, lives at a small address.
            && !to.0[..18].iter().all(|b| *b == 0);
        let valid = envelope.chain_id().is_none_or(|id| id == cfg.chain_id)
            && gas_limit >= TRANSFER_GAS
            && gas_limit <= env.gas_limit
            && gas_limit <= cfg.tx_gas_limit_cap()
            && envelope.nonce() < u64::MAX
            && gas_price >= u128::from(env.base_fee);
        if !plain || !valid {
            return None;
        }
        let max_cost =
            U256::from(u128::from(gas_limit).checked_mul(max_fee)?).checked_add(value)?;
        let fee = U256::from(gas_price) * U256::from(TRANSFER_GAS);
        let tip = U256::from(gas_price - u128::from(env.base_fee)) * U256::from(TRANSFER_GAS);
        Some(PlainTransfer {
            to,
            value,
            nonce: envelope.nonce(),
            max_cost,
            cost: fee + value,
            tip,
        })
    }

    /// The transfer between `sender` and `recipient` as the transaction finds them, or `None`
    /// when they make it something else (code at either end) or something revm refuses (a
    /// nonce that does not match, a balance that cannot cover the fee cap).
    pub(crate) fn apply(
        &self,
        sender: Option<Account>,
        recipient: Option<Account>,
    ) -> Option<Transferred> {
        let sender = sender?;
        if sender.code_hash != KECCAK_EMPTY
            || sender.nonce != self.nonce
            || sender.balance < self.max_cost
        {
            return None;
        }
        let recipient = recipient.unwrap_or_default();
        if recipient.code_hash != KECCAK_EMPTY {
            return None;
        }
        Some(Transferred {
            sender: Account {
                nonce: sender.nonce + 1,
                balance: sender.balance - self.cost,
                code_hash: sender.code_hash,
            },
            recipient: Account {
                balance: recipient.balance.checked_add(self.value)?,
                ..recipient
            },
        })
    }

    /// The execution result revm reports for a transfer: success, no output, no logs.
    pub(crate) fn result(spec: SpecId) -> ExecutionResult {
        let floor = if spec.is_enabled_in(SpecId::PRAGUE) {
            TRANSFER_GAS
        } else {
            0
        };
        ExecutionResult::Success {
            reason: SuccessReason::Stop,
            gas: ResultGas::default()
                .with_total_gas_spent(TRANSFER_GAS)
                .with_floor_gas(floor),
            logs: Vec::new(),
            output: Output::Call(Bytes::new()),
        }
    }
}

/// The fee recipient after being paid `fee` for one transaction. Paying touches it, so under
/// EIP-161 an empty recipient is deleted even by a zero fee; before it, a missing one is created.
pub(crate) fn credit_fee(
    account: Option<Account>,
    fee: U256,
    state_clear: bool,
) -> Option<Account> {
    if state_clear && fee.is_zero() && account.is_none() {
        return None;
    }
    let mut paid = account.unwrap_or_default();
    paid.balance += fee;
    if state_clear && paid.is_empty() {
        None
    } else {
        Some(paid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        executor::{cfg_env, execute_block_with},
        mem::MemState,
        parallel::{execute_block_parallel, first_difference, ParallelConfig},
        ChainRules, Fork,
    };
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
    use alloy_eips::eip2930::{AccessList, AccessListItem};
    use alloy_primitives::{keccak256, Signature, TxKind, B256};
    use proptest::prelude::*;
    use secp256k1::{ecdsa::RecoverableSignature, Message, PublicKey, SecretKey};

    const BASE_FEE: u64 = 10;
    const BLOCK_GAS: u64 = 1 << 26;
    const BENEFICIARY: Address = Address::new([0xbe; 20]);
    /// Code: STOP.
    const CONTRACT: Address = Address::new([0xc0; 20]);
    /// Code: an EIP-7702 delegation to `CONTRACT`.
    const DELEGATED: Address = Address::new([0xd7; 20]);
    const FUNDED: Address = Address::new([0xf0; 20]);
    const EMPTY: Address = Address::new([0xe0; 20]);
    const PRECOMPILE: Address = Address::with_last_byte(4);
    const ETHER: u64 = 1_000_000_000_000_000_000;

    fn signer(i: usize) -> (SecretKey, Address) {
        let key = SecretKey::from_secret_bytes(keccak256([i as u8 + 1]).0).expect("valid key");
        let public = PublicKey::from_secret_key(&key).serialize_uncompressed();
        (key, Address::from_slice(&keccak256(&public[1..])[12..]))
    }

    /// Senders 0 and 1 are rich, 2 can pay for about one transfer, 3 is delegated (EIP-7702)
    /// and 4 has code (EIP-3607 refuses it).
    const SENDERS: usize = 5;

    fn code(state: &mut MemState, address: Address, code: Vec<u8>, balance: u64) {
        let code = Bytes::from(code);
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

    fn pre_state(beneficiary: u8) -> MemState {
        let mut state = MemState::default();
        for i in 0..SENDERS {
            let balance = match i {
                2 => U256::from(30_000 * (BASE_FEE + 5)),
                _ => U256::from(ETHER) * U256::from(10),
            };
            state.accounts.insert(
                signer(i).1,
                Account {
                    nonce: 0,
                    balance,
                    code_hash: KECCAK_EMPTY,
                },
            );
        }
        code(&mut state, CONTRACT, vec![0x00], 0);
        let mut delegation = vec![0xef, 0x01, 0x00];
        delegation.extend_from_slice(CONTRACT.as_slice());
        code(&mut state, DELEGATED, delegation.clone(), 5);
        code(&mut state, signer(3).1, delegation, ETHER);
        code(&mut state, signer(4).1, vec![0x00], ETHER);
        state.accounts.insert(
            FUNDED,
            Account {
                balance: U256::from(ETHER),
                ..Account::default()
            },
        );
        state.accounts.insert(EMPTY, Account::default());
        match beneficiary {
            0 => {}
            1 => {
                state.accounts.insert(BENEFICIARY, Account::default());
            }
            _ => {
                state.accounts.insert(
                    BENEFICIARY,
                    Account {
                        balance: U256::from(1),
                        ..Account::default()
                    },
                );
            }
        }
        state
    }

    /// One transaction, each field drawn from values at the edges of what the shortcut takes.
    #[derive(Debug, Clone)]
    struct Draw {
        sender: usize,
        to: u8,
        kind: u8,
        price: u8,
        gas: u8,
        nonce: u8,
        value: u8,
    }

    fn draw() -> impl Strategy<Value = Draw> {
        (
            0..SENDERS,
            any::<u8>(),
            0..6u8,
            0..9u8,
            0..6u8,
            0..10u8,
            0..8u8,
        )
            .prop_map(|(sender, to, kind, price, gas, nonce, value)| Draw {
                sender,
                to,
                kind,
                price,
                gas,
                nonce,
                value,
            })
    }

    fn sign<T: SignableTransaction<Signature>>(
        key: &SecretKey,
        sender: Address,
        tx: T,
    ) -> RecoveredTx
    where
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
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

    fn block(draws: &[Draw]) -> Vec<RecoveredTx> {
        let mut nonces = [0u64; SENDERS];
        draws
            .iter()
            .enumerate()
            .map(|(index, d)| {
                let (key, from) = signer(d.sender);
                let to = match d.to % 12 {
                    0 => CONTRACT,
                    1 => DELEGATED,
                    2 => FUNDED,
                    3 => EMPTY,
                    4 => PRECOMPILE,
                    5 => BENEFICIARY,
                    6 => from,
                    7 => signer(usize::from(d.to) % SENDERS).1,
                    _ => Address::from_slice(&keccak256((index as u64).to_be_bytes())[12..]),
                };
                let expected = nonces[d.sender];
                let nonce = match d.nonce {
                    0 => expected + 1,
                    1 => expected.saturating_sub(1),
                    _ => expected,
                };
                if nonce == expected {
                    nonces[d.sender] += 1;
                }
                let value = match d.value {
                    0 => U256::ZERO,
                    1 => U256::from(1),
                    2 => U256::from(30_000 * (BASE_FEE + 5)),
                    // More than any sender has.
                    3 => U256::from(ETHER) * U256::from(100),
                    v => U256::from(u64::from(v) * 1_000_003),
                };
                let gas_limit = match d.gas {
                    0 => TRANSFER_GAS - 1,
                    1 => TRANSFER_GAS,
                    // Above the EIP-7825 cap of Osaka, within the block.
                    2 => 1 << 25,
                    3 => BLOCK_GAS + 1,
                    _ => 30_000,
                };
                let price = u128::from(BASE_FEE) + u128::from(d.price % 3) - 1;
                let tip = u128::from(d.price / 3) * 4;
                match d.kind {
                    0..=2 => sign(
                        &key,
                        from,
                        TxLegacy {
                            chain_id: [Some(1), None, Some(2)][usize::from(d.kind)],
                            nonce,
                            gas_price: price + tip,
                            gas_limit,
                            to: TxKind::Call(to),
                            value,
                            input: Bytes::new(),
                        },
                    ),
                    3 => sign(
                        &key,
                        from,
                        TxEip2930 {
                            chain_id: 1,
                            nonce,
                            gas_price: price + tip,
                            gas_limit,
                            to: TxKind::Call(to),
                            value,
                            access_list: if d.to % 2 == 0 {
                                AccessList::default()
                            } else {
                                AccessList(vec![AccessListItem {
                                    address: to,
                                    storage_keys: vec![B256::ZERO],
                                }])
                            },
                            input: Bytes::new(),
                        },
                    ),
                    _ => sign(
                        &key,
                        from,
                        TxEip1559 {
                            chain_id: 1,
                            nonce,
                            gas_limit,
                            max_fee_per_gas: price + tip,
                            // Sometimes above the fee cap, which is refused.
                            max_priority_fee_per_gas: if d.kind == 5 {
                                price + tip + 1
                            } else {
                                tip / 2
                            },
                            to: TxKind::Call(to),
                            value,
                            access_list: AccessList::default(),
                            input: Bytes::new(),
                        },
                    ),
                }
            })
            .collect()
    }

    fn env() -> BlockEnv {
        BlockEnv {
            number: 1,
            timestamp: 1_700_000_000,
            beneficiary: BENEFICIARY,
            gas_limit: BLOCK_GAS,
            base_fee: BASE_FEE,
            prevrandao: Some(B256::ZERO),
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        }
    }

    fn fork() -> impl Strategy<Value = Fork> {
        prop_oneof![
            Just(Fork::Berlin),
            Just(Fork::London),
            Just(Fork::Shanghai),
            Just(Fork::Cancun),
            Just(Fork::Prague),
            Just(Fork::Osaka),
        ]
    }

    proptest! {
        /// The shortcut, sequentially and under Block-STM, against revm running every transfer.
        #[test]
        fn transfers_match_revm(
            fork in fork(),
            beneficiary in 0..3u8,
            draws in prop::collection::vec(draw(), 1..40),
        ) {
            let rules = ChainRules { chain_id: 1, fork };
            let (env, pre, txs) = (env(), pre_state(beneficiary), block(&draws));
            let revm = execute_block_with(&rules, &env, &txs, &pre, false).expect("revm");
            let native = execute_block_with(&rules, &env, &txs, &pre, true).expect("native");
            if let Some(difference) = first_difference(&revm, &native) {
                return Err(TestCaseError::fail(format!("sequential: {difference}")));
            }
            let parallel =
                execute_block_parallel(&rules, &env, &txs, &pre, ParallelConfig::always(2))
                    .expect("parallel");
            if let Some(difference) = first_difference(&revm, &parallel) {
                return Err(TestCaseError::fail(format!("Block-STM: {difference}")));
            }
        }
    }

    /// The shortcut takes an ordinary transfer and leaves what it must to revm.
    #[test]
    fn takes_plain_transfers_only() {
        let cfg = cfg_env(&ChainRules {
            chain_id: 1,
            fork: Fork::Prague,
        });
        let plain = Draw {
            sender: 0,
            to: 8,
            kind: 4,
            price: 4,
            gas: 1,
            nonce: 2,
            value: 5,
        };
        let takes = |d: &Draw| PlainTransfer::new(&block(std::slice::from_ref(d))[0], &cfg, &env());
        let transfer = takes(&plain).expect("a plain transfer");
        assert_eq!(transfer.tip, U256::from(2 * TRANSFER_GAS));
        for (change, d) in [
            (
                "to a precompile",
                Draw {
                    to: 4,
                    ..plain.clone()
                },
            ),
            (
                "to the fee recipient",
                Draw {
                    to: 5,
                    ..plain.clone()
                },
            ),
            (
                "to itself",
                Draw {
                    to: 6,
                    ..plain.clone()
                },
            ),
            (
                "zero value",
                Draw {
                    value: 0,
                    ..plain.clone()
                },
            ),
            (
                "below intrinsic gas",
                Draw {
                    gas: 0,
                    ..plain.clone()
                },
            ),
            (
                "above the block's gas",
                Draw {
                    gas: 3,
                    ..plain.clone()
                },
            ),
            (
                "fee cap below the base fee",
                Draw {
                    price: 0,
                    ..plain.clone()
                },
            ),
            (
                "tip above the fee cap",
                Draw {
                    kind: 5,
                    ..plain.clone()
                },
            ),
            (
                "wrong chain id",
                Draw {
                    kind: 2,
                    ..plain.clone()
                },
            ),
        ] {
            assert!(takes(&d).is_none(), "{change}");
        }
        let sender = Account {
            nonce: 0,
            balance: U256::from(ETHER),
            code_hash: KECCAK_EMPTY,
        };
        let done = transfer.apply(Some(sender), None).expect("applies");
        assert_eq!(done.sender.nonce, 1);
        assert_eq!(done.recipient.balance, U256::from(5 * 1_000_003u64));
        let coded = Account {
            code_hash: keccak256([0x00]),
            ..sender
        };
        assert!(
            transfer.apply(Some(coded), None).is_none(),
            "sender with code"
        );
        assert!(
            transfer.apply(Some(sender), Some(coded)).is_none(),
            "recipient with code"
        );
        assert!(transfer.apply(None, None).is_none(), "missing sender");
        let poor = Account {
            balance: U256::from(21_000 * 14),
            ..sender
        };
        assert!(
            transfer.apply(Some(poor), None).is_none(),
            "cannot cover the fee cap"
        );
        let ahead = Account { nonce: 1, ..sender };
        assert!(transfer.apply(Some(ahead), None).is_none(), "nonce too low");
    }
}
