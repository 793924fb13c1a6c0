//! EIP-7610: contract creation at an address whose storage is not empty fails like a creation
//! over an address with a nonce or code (a "create collision").
//!
//! revm only compares nonce and code (`create_account_checkpoint`), and its journal cannot tell
//! whether an account has storage without a full scan. Such accounts are rare: an account with
//! storage but nonce 0 and no code only exists when pre-EIP-161 init code wrote storage and
//! returned empty code, or in a genesis. So the executor does not pay for the rule on every
//! transaction: its state overlay notes when a transaction loads one of them
//! ([`StorageCollisions`]), and only then runs that transaction again with [`Eip7610`], an
//! inspector that makes creations at those addresses fail before revm creates anything.

use revm::{
    context_interface::{
        journaled_state::account::JournaledAccountTr, ContextError, ContextTr, JournalTr,
    },
    interpreter::{CreateInputs, CreateOutcome, Gas, InstructionResult, InterpreterResult},
    primitives::{constants::CALL_STACK_LIMIT, Address, Bytes, KECCAK_EMPTY},
    Database, Inspector,
};

/// A database that knows which accounts creation may not overwrite because of their storage.
pub(crate) trait StorageCollisions {
    /// Whether `address` was loaded by the current transaction as an existing account with
    /// nonce 0, no code and non-empty storage, as of the start of that transaction.
    ///
    /// Being as of the start of the transaction is exact: within a transaction such an account
    /// cannot lose its storage (that takes a self-destruct, which needs code, or a re-creation,
    /// which this rule forbids), and an account cannot gain storage while keeping nonce 0 and no
    /// code except by being created, at an address no later creation of the same transaction
    /// can reach (CREATE addresses are unique per sender nonce; CREATE2 is post-EIP-161, where
    /// created accounts get nonce 1 and revm sees the collision itself).
    fn collides_by_storage(&self, address: &Address) -> bool;
}

/// Makes creations at addresses reported by [`StorageCollisions`] fail with `CreateCollision`,
/// exactly as revm's `make_create_frame` fails a nonce or code collision: the caller's nonce is
/// bumped, the target is warm, and the frame's whole gas limit is returned with a halting result,
/// so the parent (or the transaction) consumes it. Every other creation is left to revm.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Eip7610;

impl<CTX> Inspector<CTX> for Eip7610
where
    CTX: ContextTr<Db: StorageCollisions>,
{
    fn create(&mut self, context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        match storage_collision(context, inputs) {
            Ok(false) => None,
            Ok(true) => Some(failed_create(inputs, InstructionResult::CreateCollision)),
            Err(e) => {
                // As revm's host does for a failed read: the error is stored in the context and
                // the frame halts; the handler then returns the error instead of a result.
                *context.error() = Err(ContextError::Db(e));
                Some(failed_create(inputs, InstructionResult::FatalExternalError))
            }
        }
    }
}

/// Replays `make_create_frame` up to its collision check and returns whether the creation
/// collides by storage alone. Only in that case is the caller's nonce bumped; otherwise nothing
/// observable changed and revm runs its own prologue (the created address may already be warm,
/// which `make_create_frame` neither checks nor charges).
fn storage_collision<CTX>(
    context: &mut CTX,
    inputs: &CreateInputs,
) -> Result<bool, <CTX::Db as Database>::Error>
where
    CTX: ContextTr<Db: StorageCollisions>,
{
    // Each running frame holds one journal checkpoint, so the journal's depth is the depth
    // `make_create_frame` is given for this frame. Too deep: revm fails it (CallTooDeep).
    if context.journal().depth() > CALL_STACK_LIMIT as usize {
        return Ok(false);
    }
    let journal = context.journal_mut();
    let nonce = {
        let caller = journal.load_account_mut(inputs.caller())?.data;
        // Too little balance (OutOfFunds) or a nonce that cannot be bumped: revm fails these
        // before it looks at the target.
        if *caller.balance() < inputs.value() || caller.nonce() == u64::MAX {
            return Ok(false);
        }
        caller.nonce()
    };
    // Cached in `inputs`, where `make_create_frame` finds it.
    let created = inputs.created_address(nonce);
    let target = journal.load_account(created)?.data;
    // A nonce or code collision is revm's own; a creation that collides with nothing proceeds.
    if target.info.nonce != 0
        || target.info.code_hash != KECCAK_EMPTY
        || !journal.db().collides_by_storage(&created)
    {
        return Ok(false);
    }
    // `make_create_frame` bumps the nonce before it loads the target; both are journal entries
    // of the parent frame, reverted together or not at all, so their order is not observable.
    let bumped = journal.load_account_mut(inputs.caller())?.data.bump_nonce();
    debug_assert!(bumped, "nonce below u64::MAX was checked above");
    Ok(true)
}

/// The outcome `make_create_frame` returns for a creation that fails before its frame starts.
fn failed_create(inputs: &CreateInputs, result: InstructionResult) -> CreateOutcome {
    CreateOutcome {
        result: InterpreterResult {
            result,
            gas: Gas::new_with_regular_gas_and_reservoir(inputs.gas_limit(), inputs.reservoir()),
            output: Bytes::new(),
        },
        address: None,
        charged_create_state_gas: inputs.charged_create_state_gas(),
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        execute_block, mem::MemState, BlockEnv, BlockOutput, ChainRules, Fork, RecoveredTx,
        TxOutcome,
    };
    use alloy_consensus::{SignableTransaction, TxEnvelope, TxLegacy};
    use alloy_primitives::{bytes, keccak256, Address, Bytes, Signature, TxKind, U256};
    use secp256k1::{ecdsa::RecoverableSignature, Message, SecretKey};
    use tessera_primitives::{Account, Receipt, TxStatus, EMPTY_CODE_HASH};

    const CHAIN_ID: u64 = 1;
    /// Enough for CREATE's 1/64 reserve to cover a cold SSTORE above the EIP-2200 stipend.
    const GAS_LIMIT: u64 = 300_000;
    /// Init code deploying the one-byte contract `STOP`: MSTORE8(0, 0), RETURN(0, 1).
    const INIT_CODE: Bytes = bytes!("600060005360016000f3");

    fn rules() -> ChainRules {
        ChainRules {
            chain_id: CHAIN_ID,
            fork: Fork::Cancun,
        }
    }

    fn block() -> BlockEnv {
        BlockEnv {
            number: 1,
            timestamp: 1,
            beneficiary: Address::repeat_byte(0xcb),
            gas_limit: 30_000_000,
            base_fee: 7,
            prevrandao: Some(Default::default()),
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        }
    }

    /// A legacy (EIP-155) transaction from the test key, signed with libsecp256k1.
    fn signed(nonce: u64, to: TxKind, input: Bytes) -> RecoveredTx {
        let tx = TxLegacy {
            chain_id: Some(CHAIN_ID),
            nonce,
            gas_price: 10,
            gas_limit: GAS_LIMIT,
            to,
            value: U256::ZERO,
            input,
        };
        let key = SecretKey::from_secret_bytes([0x42; 32]).unwrap();
        let digest = Message::from_digest(tx.signature_hash().0);
        let (recid, compact) =
            RecoverableSignature::sign_ecdsa_recoverable(digest, &key).serialize_compact();
        let signature = Signature::new(
            U256::from_be_slice(&compact[..32]),
            U256::from_be_slice(&compact[32..]),
            recid.to_u8() == 1,
        );
        RecoveredTx::from_envelope(TxEnvelope::from(tx.into_signed(signature))).unwrap()
    }

    /// The sender funded, and an account at `target` with nonce 0, no code and `storage`.
    fn state(sender: Address, target: Address, storage: &[(u64, u64)]) -> MemState {
        let mut state = MemState::default();
        let funded = Account {
            nonce: 0,
            balance: U256::from(10u64).pow(U256::from(18)),
            code_hash: EMPTY_CODE_HASH,
        };
        state.accounts.insert(sender, funded);
        state.accounts.insert(
            target,
            Account {
                nonce: 0,
                balance: U256::ZERO,
                code_hash: EMPTY_CODE_HASH,
            },
        );
        let slots: crate::mem::Slots = storage
            .iter()
            .map(|&(k, v)| (U256::from(k), U256::from(v)))
            .collect();
        if !slots.is_empty() {
            state.storage.insert(target, slots);
        }
        state
    }

    fn run(state: &MemState, txs: &[RecoveredTx]) -> BlockOutput {
        execute_block(&rules(), &block(), txs, state).unwrap()
    }

    fn included(output: &BlockOutput, i: usize) -> &Receipt {
        match &output.outcomes[i] {
            TxOutcome::Included(r) => r,
            TxOutcome::Rejected(r) => panic!("transaction {i} rejected: {r}"),
        }
    }

    #[test]
    fn creation_tx_over_storage_fails_like_a_collision() {
        let tx = signed(0, TxKind::Create, INIT_CODE);
        let target = tx.sender.create(0);
        let mut pre = state(tx.sender, target, &[(1, 1)]);
        let output = run(&pre, std::slice::from_ref(&tx));

        let receipt = included(&output, 0);
        assert_eq!(receipt.status, TxStatus::Halt);
        assert_eq!(
            receipt.gas_used, GAS_LIMIT,
            "a collision consumes all the gas"
        );
        assert_eq!(receipt.contract_address, None);
        assert_eq!(
            output.diff.accounts[&tx.sender].info.unwrap().nonce,
            1,
            "nonce bumped"
        );
        assert!(
            !output.diff.accounts.contains_key(&target),
            "target left as it was"
        );
        pre.apply(&output.diff);
        assert_eq!(pre.storage[&target][&U256::from(1)], U256::from(1));
    }

    #[test]
    fn creation_tx_over_account_without_storage_succeeds() {
        let tx = signed(0, TxKind::Create, INIT_CODE);
        let target = tx.sender.create(0);
        let output = run(&state(tx.sender, target, &[]), std::slice::from_ref(&tx));

        let receipt = included(&output, 0);
        assert_eq!(receipt.status, TxStatus::Success);
        assert!(receipt.gas_used < GAS_LIMIT);
        assert_eq!(receipt.contract_address, Some(target));
        assert_eq!(output.diff.accounts[&tx.sender].info.unwrap().nonce, 1);
        let created = output.diff.accounts[&target].info.unwrap();
        assert_eq!((created.nonce, created.code_hash), (1, keccak256([0x00])));
    }

    /// The target's storage is what the block left of it when the creation runs: an earlier
    /// transaction that touches the empty target deletes it with its storage (EIP-161).
    #[test]
    fn storage_deleted_earlier_in_the_block_no_longer_collides() {
        let create = signed(1, TxKind::Create, INIT_CODE);
        let sender = create.sender;
        let target = sender.create(1);
        let pre = state(sender, target, &[(1, 1)]);

        let touch = signed(0, TxKind::Call(target), Bytes::new());
        let output = run(&pre, &[touch, create.clone()]);
        assert!(output.diff.accounts[&target].storage_cleared);
        assert_eq!(included(&output, 1).status, TxStatus::Success);
        assert_eq!(included(&output, 1).contract_address, Some(target));

        let elsewhere = signed(0, TxKind::Call(Address::repeat_byte(0xee)), Bytes::new());
        let output = run(&pre, &[elsewhere, create]);
        assert_eq!(included(&output, 1).status, TxStatus::Halt);
        assert_eq!(included(&output, 1).gas_used, GAS_LIMIT);
    }

    /// CREATE inside a call: the opcode pushes 0, the forwarded gas is consumed, and the
    /// factory's nonce is bumped.
    #[test]
    fn create_opcode_over_storage_collides() {
        // SSTORE(0, CREATE(0, 0, 0)); STOP
        let factory_code = bytes!("600060006000f060005500");
        let factory = Address::repeat_byte(0xfa);
        let target = factory.create(1);
        let call = signed(0, TxKind::Call(factory), Bytes::new());

        let run_with = |storage: &[(u64, u64)]| {
            let mut pre = state(call.sender, target, storage);
            let code_hash = keccak256(&factory_code);
            pre.codes.insert(code_hash, factory_code.clone());
            pre.accounts.insert(
                factory,
                Account {
                    nonce: 1,
                    balance: U256::ZERO,
                    code_hash,
                },
            );
            run(&pre, std::slice::from_ref(&call))
        };

        let collided = run_with(&[(1, 1)]);
        let succeeded = run_with(&[]);
        for output in [&collided, &succeeded] {
            assert_eq!(included(output, 0).status, TxStatus::Success);
            assert_eq!(output.diff.accounts[&factory].info.unwrap().nonce, 2);
        }
        let created = |output: &BlockOutput| {
            output.diff.accounts[&factory]
                .storage
                .get(&U256::ZERO)
                .copied()
                .unwrap_or_default()
        };
        assert_eq!(created(&collided), U256::ZERO);
        assert_eq!(created(&succeeded), U256::from_be_slice(target.as_slice()));
        assert!(!collided.diff.accounts.contains_key(&target));
        // All but the 1/64 CREATE keeps is gone.
        assert!(included(&collided, 0).gas_used > GAS_LIMIT - GAS_LIMIT / 64 - 30_000);
        assert!(included(&succeeded, 0).gas_used < GAS_LIMIT / 2);
    }
}
