//! Simulated transactions for `eth_call` and `eth_estimateGas`: one unsigned transaction run
//! against a state view and thrown away. The nonce is not checked; everything else (value
//! against balance, fee caps against the base fee, gas against the block limit) is, as geth
//! does. A call that names no fee runs at a base fee of zero, so that it costs nothing.

use crate::{
    executor::{cfg_env, revm_block_env, Overlay},
    fork::eip1283_sstore,
    BlockEnv, ChainRules, ExecError, StateView,
};
use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, Bytes, Log, TxKind, U256};
use revm::{
    bytecode::opcode::SSTORE,
    context::{
        result::{EVMError, ExecutionResult, Output},
        Context, TxEnv,
    },
    interpreter::Instruction,
    ExecuteEvm, MainBuilder, MainContext,
};

/// An unsigned transaction to simulate; fields follow `eth_call`'s transaction object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRequest {
    pub from: Address,
    /// `None` creates a contract from `input`.
    pub to: Option<Address>,
    /// Defaults to the block gas limit (less, when a fee is given and the balance is short).
    pub gas: Option<u64>,
    pub gas_price: Option<u128>,
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub value: U256,
    pub input: Bytes,
    pub access_list: AccessList,
}

/// How a simulated transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Success {
        output: Bytes,
        gas_used: u64,
        logs: Vec<Log>,
    },
    /// REVERT, with the revert data.
    Revert { output: Bytes, gas_used: u64 },
    /// Exceptional halt: out of gas, invalid opcode, stack errors...
    Halt { reason: String, gas_used: u64 },
}

impl CallOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, CallOutcome::Success { .. })
    }
}

/// Why a simulation could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The transaction is not valid in this block: funds, fee caps, gas limits.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Why a gas estimate has no answer.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// The transaction fails even with the most gas it may have.
    #[error("transaction fails with the maximum gas")]
    Fails(CallOutcome),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Runs `req` on `state` in the block `env` and returns its outcome; nothing is committed.
pub fn call<S: StateView>(
    rules: &ChainRules,
    env: &BlockEnv,
    req: &CallRequest,
    state: &S,
) -> Result<CallOutcome, CallError> {
    let gas = gas_cap(env, req, state)?;
    run(rules, env, req, gas, state).map(|(outcome, _)| outcome)
}

/// The smallest gas limit with which `req` succeeds, by binary search over runs of it: the
/// answer succeeds and one gas less does not (for transactions whose success does not depend on
/// the gas they are given in other ways than running out).
pub fn estimate_gas<S: StateView>(
    rules: &ChainRules,
    env: &BlockEnv,
    req: &CallRequest,
    state: &S,
) -> Result<u64, EstimateError> {
    let cap = gas_cap(env, req, state)?;
    let (outcome, spent) = run(rules, env, req, cap, state)?;
    let gas_used = match &outcome {
        CallOutcome::Success { gas_used, .. } => *gas_used,
        _ => return Err(EstimateError::Fails(outcome)),
    };
    let succeeds = |gas: u64| -> Result<bool, EstimateError> {
        match run(rules, env, req, gas, state) {
            Ok((outcome, _)) => Ok(outcome.is_success()),
            // Too little gas for the intrinsic cost is just another failure here.
            Err(CallError::Invalid(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    // Refunds are paid after execution, so the gas used is a lower bound: with less, the
    // execution that used it could not have run.
    let mut lo = gas_used.saturating_sub(1);
    let mut hi = cap;
    // Most transactions need what they spent plus what the 63/64 rule withholds from calls;
    // trying that first usually leaves a short search.
    let optimistic = (spent.saturating_add(2300)).saturating_mul(64) / 63;
    if optimistic < hi {
        if succeeds(optimistic)? {
            hi = optimistic;
        } else {
            lo = lo.max(optimistic);
        }
    }
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if succeeds(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The gas a simulation gets when the request names none: the block gas limit, or, when a fee
/// is given, what the sender's balance pays for after the value.
fn gas_cap<S: StateView>(env: &BlockEnv, req: &CallRequest, state: &S) -> Result<u64, CallError> {
    if let Some(gas) = req.gas {
        return Ok(gas);
    }
    let price = req.max_fee_per_gas.or(req.gas_price).unwrap_or(0);
    if price == 0 {
        return Ok(env.gas_limit);
    }
    let balance = state
        .account(&req.from)
        .map_err(ExecError::State)?
        .map_or(U256::ZERO, |a| a.balance);
    let available = balance.checked_sub(req.value).ok_or_else(|| {
        CallError::Invalid(format!(
            "insufficient funds for value: balance {balance}, value {}",
            req.value
        ))
    })?;
    let affordable = available / U256::from(price);
    Ok(u64::try_from(affordable)
        .unwrap_or(u64::MAX)
        .min(env.gas_limit))
}

/// One run with gas limit `gas`; also returns the gas spent before refunds.
fn run<S: StateView>(
    rules: &ChainRules,
    env: &BlockEnv,
    req: &CallRequest,
    gas: u64,
    state: &S,
) -> Result<(CallOutcome, u64), CallError> {
    let mut cfg = cfg_env(rules);
    cfg.disable_nonce_check = true;
    let priced = req.gas_price.is_some()
        || req.max_fee_per_gas.is_some()
        || req.max_priority_fee_per_gas.is_some();
    let mut env = env.clone();
    if !priced {
        env.base_fee = 0;
    }
    let block = revm_block_env(&env, &cfg);
    let dynamic = req.max_fee_per_gas.is_some() || req.max_priority_fee_per_gas.is_some();
    let (tx_type, gas_price, gas_priority_fee) = if dynamic {
        let priority = req.max_priority_fee_per_gas.unwrap_or(0);
        let max_fee = req
            .max_fee_per_gas
            .unwrap_or(env.base_fee as u128 + priority);
        (2, max_fee, Some(priority.min(max_fee)))
    } else {
        let kind = if req.access_list.is_empty() { 0 } else { 1 };
        (kind, req.gas_price.unwrap_or(0), None)
    };
    let tx = TxEnv {
        tx_type,
        caller: req.from,
        gas_limit: gas,
        gas_price,
        gas_priority_fee,
        kind: req.to.map_or(TxKind::Create, TxKind::Call),
        value: req.value,
        data: req.input.clone(),
        nonce: 0,
        chain_id: Some(rules.chain_id),
        access_list: req.access_list.clone(),
        ..Default::default()
    };
    let view: &dyn StateView = state;
    let mut evm = Context::mainnet()
        .with_cfg(cfg)
        .with_block(block)
        .with_db(Overlay::new(view))
        .build_mainnet();
    if rules.fork.needs_eip1283_sstore() {
        evm.instruction
            .insert_instruction(SSTORE, Instruction::new(eip1283_sstore), 0);
    }
    let result = match evm.transact(tx) {
        Ok(r) => r.result,
        Err(EVMError::Transaction(invalid)) => return Err(CallError::Invalid(invalid.to_string())),
        Err(EVMError::Database(e)) => return Err(ExecError::State(e).into()),
        Err(EVMError::Header(h)) => return Err(ExecError::Header(h.to_string()).into()),
        Err(other) => return Err(ExecError::Evm(other.to_string()).into()),
    };
    let gas_used = result.tx_gas_used();
    let spent = result.gas().total_gas_spent();
    let outcome = match result {
        ExecutionResult::Success { output, logs, .. } => CallOutcome::Success {
            output: match output {
                Output::Call(out) => out,
                Output::Create(out, _) => out,
            },
            gas_used,
            logs,
        },
        ExecutionResult::Revert { output, .. } => CallOutcome::Revert { output, gas_used },
        ExecutionResult::Halt { reason, .. } => CallOutcome::Halt {
            reason: format!("{reason:?}"),
            gas_used,
        },
    };
    Ok((outcome, spent))
}
