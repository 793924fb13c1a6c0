//! The `eth_*`, `net_*`, `web3_*` and `tessera_*` methods.

use super::{
    json::{self, qty, TxPlace},
    params::{invalid_params, Args, BlockId, CallObject, FilterObject, Quantity},
    Rpc,
};
use alloy_primitives::{hex, Address, Bytes, B256, U256};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{json, Value};
use tessera_execution::{
    call, estimate_gas, BlockEnv, CallError, CallOutcome, EstimateError, StateError, StateView,
};
use tessera_primitives::{Account, Header};
use tessera_shard::{
    chain::SubmitError,
    history::StateAt,
    store::{LogEntry, LogFilter, Store},
};

pub(super) type Method = (&'static str, super::Handler);

/// Methods answered from indexes and point reads.
pub(super) const METHODS: &[Method] = &[
    ("web3_clientVersion", client_version),
    ("net_version", net_version),
    ("net_listening", net_listening),
    ("eth_chainId", chain_id),
    ("eth_blockNumber", block_number),
    ("eth_syncing", syncing),
    ("eth_accounts", accounts),
    ("eth_gasPrice", gas_price),
    ("eth_maxPriorityFeePerGas", max_priority_fee),
    ("eth_feeHistory", fee_history),
    ("eth_getBalance", get_balance),
    ("eth_getTransactionCount", get_transaction_count),
    ("eth_getCode", get_code),
    ("eth_getStorageAt", get_storage_at),
    ("eth_sendRawTransaction", send_raw_transaction),
    ("eth_getTransactionByHash", get_transaction_by_hash),
    ("eth_getTransactionReceipt", get_transaction_receipt),
    ("eth_getBlockByNumber", get_block_by_number),
    ("eth_getBlockByHash", get_block_by_hash),
    (
        "eth_getBlockTransactionCountByNumber",
        block_tx_count_by_number,
    ),
    ("eth_getBlockTransactionCountByHash", block_tx_count_by_hash),
    ("eth_getBlockReceipts", get_block_receipts),
    ("eth_newFilter", super::filters::new_filter),
    ("eth_newBlockFilter", super::filters::new_block_filter),
    (
        "eth_newPendingTransactionFilter",
        super::filters::new_pending_filter,
    ),
    ("eth_uninstallFilter", super::filters::uninstall_filter),
    ("tessera_shardOf", shard_of),
    ("tessera_shards", shards),
];

/// Methods that execute or scan; they run on the blocking pool.
pub(super) const BLOCKING_METHODS: &[Method] = &[
    ("eth_call", eth_call),
    ("eth_estimateGas", eth_estimate_gas),
    ("eth_getLogs", get_logs),
    ("eth_getFilterChanges", super::filters::filter_changes),
    ("eth_getFilterLogs", super::filters::filter_logs),
];

/// Most logs one query may return.
pub(super) const MAX_LOGS: usize = 10_000;
/// Tip `eth_maxPriorityFeePerGas` suggests: 1 gwei.
const SUGGESTED_TIP: u64 = 1_000_000_000;
/// Largest `blockCount` of `eth_feeHistory`.
const MAX_FEE_HISTORY: u64 = 1024;

pub(super) type RpcResult = Result<Value, ErrorObjectOwned>;

pub(super) fn server_error(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, message.into(), None::<()>)
}

pub(super) fn internal(e: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32603, format!("internal error: {e}"), None::<()>)
}

fn to_json<T: serde::Serialize>(v: T) -> RpcResult {
    serde_json::to_value(v).map_err(internal)
}

fn client_version(_: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(format!("tessera/v{}", env!("CARGO_PKG_VERSION")))
}

fn net_version(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(rpc.genesis.chain_id.to_string())
}

fn net_listening(_: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(true)
}

fn chain_id(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(qty(rpc.genesis.chain_id))
}

fn block_number(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(qty(rpc.head()?.number))
}

fn syncing(_: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(false)
}

fn accounts(_: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    Ok(json!([]))
}

fn gas_price(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    let base_fee = rpc.next_base_fee()?;
    to_json(qty(base_fee as u128 + SUGGESTED_TIP as u128))
}

fn max_priority_fee(_: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    to_json(qty(SUGGESTED_TIP))
}

fn fee_history(rpc: &Rpc, mut args: Args) -> RpcResult {
    let count: Quantity = args.required("blockCount")?;
    let newest: BlockId = args.required("newestBlock")?;
    let percentiles: Option<Vec<f64>> = args.optional("rewardPercentiles")?;
    args.finish()?;
    let percentiles = percentiles.unwrap_or_default();
    if percentiles.len() > 100
        || percentiles.iter().any(|p| !(0.0..=100.0).contains(p))
        || percentiles.windows(2).any(|w| w[0] > w[1])
    {
        return Err(invalid_params(
            "rewardPercentiles must be at most 100 increasing values in [0, 100]",
        ));
    }
    let newest = rpc.header(newest)?;
    let count = count.0.min(MAX_FEE_HISTORY).min(newest.number + 1);
    if count == 0 {
        return Ok(json!({"oldestBlock": qty(0u64), "baseFeePerGas": [], "gasUsedRatio": []}));
    }
    let oldest = newest.number + 1 - count;
    let store = rpc.chain.store();
    let mut base_fees = Vec::new();
    let mut ratios = Vec::new();
    let mut rewards = Vec::new();
    for number in oldest..=newest.number {
        let header = store
            .header(number)
            .map_err(internal)?
            .ok_or_else(|| internal(format!("block {number} missing")))?;
        base_fees.push(qty(header.base_fee));
        ratios.push(header.gas_used as f64 / header.gas_limit as f64);
        if !percentiles.is_empty() {
            let receipts = store
                .receipts(number)
                .map_err(internal)?
                .unwrap_or_default();
            rewards.push(block_rewards(&header, &receipts, &percentiles));
        }
    }
    base_fees.push(qty(tessera_shard::fees::next_base_fee(
        &newest,
        rpc.genesis.min_base_fee,
    )));
    let mut out = json!({
        "oldestBlock": qty(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
    });
    if !percentiles.is_empty() {
        out["reward"] = json!(rewards);
    }
    Ok(out)
}

/// Priority fees paid at the given percentiles of the block's gas, as geth computes them:
/// transactions sorted by tip, each weighted by the gas it used.
fn block_rewards(
    header: &Header,
    receipts: &[tessera_primitives::Receipt],
    percentiles: &[f64],
) -> Vec<String> {
    let mut tips: Vec<(u128, u64)> = receipts
        .iter()
        .map(|r| {
            (
                r.effective_gas_price
                    .saturating_sub(header.base_fee as u128),
                r.gas_used,
            )
        })
        .collect();
    if tips.is_empty() {
        return percentiles.iter().map(|_| qty(0u64)).collect();
    }
    tips.sort_unstable();
    let total: u64 = tips.iter().map(|(_, g)| g).sum();
    let mut out = Vec::with_capacity(percentiles.len());
    let (mut i, mut cumulative) = (0, tips[0].1);
    for p in percentiles {
        let threshold = (total as f64 * p / 100.0) as u64;
        while cumulative < threshold && i + 1 < tips.len() {
            i += 1;
            cumulative += tips[i].1;
        }
        out.push(qty(tips[i].0));
    }
    out
}

fn get_balance(rpc: &Rpc, mut args: Args) -> RpcResult {
    let address: Address = args.required("address")?;
    let block: Option<BlockId> = args.optional("block")?;
    args.finish()?;
    let account = rpc.with_state(block, |state, _| state.account(&address))?;
    to_json(format!("{:#x}", account.map_or(U256::ZERO, |a| a.balance)))
}

fn get_transaction_count(rpc: &Rpc, mut args: Args) -> RpcResult {
    let address: Address = args.required("address")?;
    let block: Option<BlockId> = args.optional("block")?;
    args.finish()?;
    if block == Some(BlockId::Pending) {
        return to_json(qty(rpc.chain.pending_nonce(&address).map_err(internal)?));
    }
    let account = rpc.with_state(block, |state, _| state.account(&address))?;
    to_json(qty(account.map_or(0, |a| a.nonce)))
}

fn get_code(rpc: &Rpc, mut args: Args) -> RpcResult {
    let address: Address = args.required("address")?;
    let block: Option<BlockId> = args.optional("block")?;
    args.finish()?;
    let code = rpc.with_state(block, |state, _| -> Result<Bytes, StateError> {
        match state.account(&address)? {
            Some(Account { code_hash, .. }) => Ok(state.code(&code_hash)?.unwrap_or_default()),
            None => Ok(Bytes::new()),
        }
    })?;
    to_json(code)
}

fn get_storage_at(rpc: &Rpc, mut args: Args) -> RpcResult {
    let address: Address = args.required("address")?;
    let slot: U256 = args.required("slot")?;
    let block: Option<BlockId> = args.optional("block")?;
    args.finish()?;
    let value = rpc.with_state(block, |state, _| state.storage(&address, &slot))?;
    to_json(B256::from(value))
}

fn send_raw_transaction(rpc: &Rpc, mut args: Args) -> RpcResult {
    let raw: String = args.required("data")?;
    args.finish()?;
    let bytes = hex::decode(&raw)
        .map_err(|e| invalid_params(format!("transaction data is not valid hex: {e}")))?;
    match rpc.chain.submit_raw(&bytes) {
        Ok(hash) => {
            rpc.filters.on_pending(hash);
            rpc.relay(&bytes);
            to_json(hash)
        }
        Err(SubmitError::Decode(e)) => {
            Err(server_error(format!("failed to decode transaction: {e}")))
        }
        Err(SubmitError::Pool(e)) => Err(server_error(e.to_string())),
        Err(SubmitError::Chain(e)) => Err(internal(e)),
    }
}

fn get_transaction_by_hash(rpc: &Rpc, mut args: Args) -> RpcResult {
    let hash: B256 = args.required("hash")?;
    args.finish()?;
    if let Some((tx, place)) = rpc.mined_tx(&hash)? {
        return Ok(json::transaction(&tx, Some(place)));
    }
    Ok(match rpc.chain.pending_transaction(&hash) {
        Some(tx) => json::transaction(&tx, None),
        None => Value::Null,
    })
}

fn get_transaction_receipt(rpc: &Rpc, mut args: Args) -> RpcResult {
    let hash: B256 = args.required("hash")?;
    args.finish()?;
    let store = rpc.chain.store();
    let Some(location) = store.tx_location(&hash).map_err(internal)? else {
        return Ok(Value::Null);
    };
    let receipts = rpc.block_receipts(location.block_number)?;
    Ok(receipts
        .into_iter()
        .nth(location.index as usize)
        .unwrap_or(Value::Null))
}

fn get_block_by_number(rpc: &Rpc, mut args: Args) -> RpcResult {
    let block: BlockId = args.required("block")?;
    let full: bool = args.required("fullTransactions")?;
    args.finish()?;
    rpc.block_json(block, full)
}

fn get_block_by_hash(rpc: &Rpc, mut args: Args) -> RpcResult {
    let hash: B256 = args.required("hash")?;
    let full: bool = args.required("fullTransactions")?;
    args.finish()?;
    rpc.block_json(BlockId::Hash(hash), full)
}

fn block_tx_count_by_number(rpc: &Rpc, mut args: Args) -> RpcResult {
    let block: BlockId = args.required("block")?;
    args.finish()?;
    rpc.tx_count(block)
}

fn block_tx_count_by_hash(rpc: &Rpc, mut args: Args) -> RpcResult {
    let hash: B256 = args.required("hash")?;
    args.finish()?;
    rpc.tx_count(BlockId::Hash(hash))
}

fn get_block_receipts(rpc: &Rpc, mut args: Args) -> RpcResult {
    let block: BlockId = args.required("block")?;
    args.finish()?;
    match rpc.find_header(block)? {
        Some(header) => Ok(Value::Array(rpc.block_receipts(header.number)?)),
        None => Ok(Value::Null),
    }
}

fn eth_call(rpc: &Rpc, mut args: Args) -> RpcResult {
    let call_object: CallObject = args.required("transaction")?;
    let block: Option<BlockId> = args.optional("block")?;
    // State and block overrides are not supported; refusing beats silently ignoring them.
    let overrides: Option<Value> = args.optional("stateOverrides")?;
    args.finish()?;
    if overrides.is_some() {
        return Err(invalid_params("state overrides are not supported"));
    }
    let request = call_object.into_request()?;
    let rules = rpc.genesis.rules();
    let outcome = rpc.with_state(block, |state, header| {
        Ok::<_, StateError>(call(&rules, &block_env(header), &request, &state))
    })?;
    match outcome.map_err(call_error)? {
        CallOutcome::Success { output, .. } => to_json(output),
        CallOutcome::Revert { output, .. } => Err(revert_error(&output)),
        CallOutcome::Halt { reason, .. } => {
            Err(server_error(format!("execution halted: {reason}")))
        }
    }
}

fn eth_estimate_gas(rpc: &Rpc, mut args: Args) -> RpcResult {
    let call_object: CallObject = args.required("transaction")?;
    let block: Option<BlockId> = args.optional("block")?;
    args.finish()?;
    let request = call_object.into_request()?;
    let rules = rpc.genesis.rules();
    let result = rpc.with_state(block, |state, header| {
        Ok::<_, StateError>(estimate_gas(&rules, &block_env(header), &request, &state))
    })?;
    match result {
        Ok(gas) => to_json(qty(gas)),
        Err(EstimateError::Fails(CallOutcome::Revert { output, .. })) => Err(revert_error(&output)),
        Err(EstimateError::Fails(CallOutcome::Halt { reason, .. })) => Err(server_error(format!(
            "gas required exceeds allowance or always failing transaction: {reason}"
        ))),
        Err(EstimateError::Fails(CallOutcome::Success { .. })) => {
            Err(internal("estimate failed on a successful run"))
        }
        Err(EstimateError::Call(e)) => Err(call_error(e)),
    }
}

fn call_error(e: CallError) -> ErrorObjectOwned {
    match e {
        CallError::Invalid(reason) => server_error(reason),
        CallError::Exec(e) => internal(e),
    }
}

/// Code 3 with the revert data, and the reason decoded when it is `Error(string)` or
/// `Panic(uint256)`, as geth reports reverts.
pub(super) fn revert_error(output: &Bytes) -> ErrorObjectOwned {
    let message = match decode_revert_reason(output) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    ErrorObjectOwned::owned(3, message, Some(output.clone()))
}

fn decode_revert_reason(output: &[u8]) -> Option<String> {
    const ERROR_SELECTOR: [u8; 4] = [0x08, 0xc3, 0x79, 0xa0];
    const PANIC_SELECTOR: [u8; 4] = [0x4e, 0x48, 0x7b, 0x71];
    let (selector, body) = output.split_at_checked(4)?;
    if selector == PANIC_SELECTOR && body.len() == 32 {
        return Some(format!("panic code {:#x}", U256::from_be_slice(body)));
    }
    if selector != ERROR_SELECTOR || body.len() < 64 {
        return None;
    }
    let offset = usize::try_from(U256::from_be_slice(&body[..32])).ok()?;
    let len_end = offset.checked_add(32)?;
    let len = usize::try_from(U256::from_be_slice(body.get(offset..len_end)?)).ok()?;
    let text = body.get(len_end..len_end.checked_add(len)?)?;
    String::from_utf8(text.to_vec()).ok()
}

fn get_logs(rpc: &Rpc, mut args: Args) -> RpcResult {
    let filter: FilterObject = args.required("filter")?;
    args.finish()?;
    let query = rpc.log_query(&filter)?;
    let logs = rpc.logs(&query)?;
    Ok(Value::Array(logs.iter().map(json::log).collect()))
}

fn shard_of(rpc: &Rpc, mut args: Args) -> RpcResult {
    let address: Address = args.required("address")?;
    args.finish()?;
    to_json(tessera_primitives::shard_of(&address, rpc.genesis.num_shards).0)
}

fn shards(rpc: &Rpc, args: Args) -> RpcResult {
    args.finish()?;
    let head = rpc.head()?;
    Ok(json!([{
        "shard": head.shard.0,
        "height": qty(head.number),
        "hash": head.hash(),
        "stateRoot": head.state_root,
        "pendingTransactions": rpc.chain.pool_len(),
    }]))
}

/// The execution environment of calls "at" a block: that block's own header.
fn block_env(header: &Header) -> BlockEnv {
    BlockEnv {
        number: header.number,
        timestamp: header.timestamp,
        beneficiary: header.beneficiary,
        gas_limit: header.gas_limit,
        base_fee: header.base_fee,
        prevrandao: Some(header.parent_hash),
        difficulty: U256::ZERO,
        excess_blob_gas: None,
    }
}

/// State of the head (flat tables) or of an earlier block (through the trie).
#[derive(Debug, Clone, Copy)]
pub(super) enum AnyState<'a> {
    Head(&'a Store),
    Past(StateAt<'a>),
}

impl StateView for AnyState<'_> {
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        match self {
            AnyState::Head(s) => StateView::account(*s, address),
            AnyState::Past(s) => s.account(address),
        }
    }
    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StateError> {
        match self {
            AnyState::Head(s) => StateView::storage(*s, address, slot),
            AnyState::Past(s) => s.storage(address, slot),
        }
    }
    fn has_storage(&self, address: &Address) -> Result<bool, StateError> {
        match self {
            AnyState::Head(s) => StateView::has_storage(*s, address),
            AnyState::Past(s) => s.has_storage(address),
        }
    }
    fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        match self {
            AnyState::Head(s) => StateView::code(*s, code_hash),
            AnyState::Past(s) => s.code(code_hash),
        }
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        match self {
            AnyState::Head(s) => StateView::block_hash(*s, number),
            AnyState::Past(s) => s.block_hash(number),
        }
    }
}

impl Rpc {
    pub(super) fn head(&self) -> Result<Header, ErrorObjectOwned> {
        self.chain.head().map_err(internal)
    }

    fn next_base_fee(&self) -> Result<u64, ErrorObjectOwned> {
        Ok(tessera_shard::fees::next_base_fee(
            &self.head()?,
            self.genesis.min_base_fee,
        ))
    }

    /// The header `id` names, if that block exists.
    pub(super) fn find_header(&self, id: BlockId) -> Result<Option<Header>, ErrorObjectOwned> {
        let store = self.chain.store();
        match id {
            BlockId::Latest | BlockId::Pending => self.head().map(Some),
            BlockId::Earliest => store.header(0).map_err(internal),
            BlockId::Number(n) => store.header(n).map_err(internal),
            BlockId::Hash(h) => store.header_by_hash(&h).map_err(internal),
        }
    }

    /// The header `id` names; an error when there is no such block.
    pub(super) fn header(&self, id: BlockId) -> Result<Header, ErrorObjectOwned> {
        self.find_header(id)?
            .ok_or_else(|| server_error("header not found"))
    }

    /// Runs `f` on the state after block `id` (default: latest), with that block's header.
    /// The head is read from the flat tables while no block is being applied; earlier blocks
    /// through the trie at their state root.
    fn with_state<R, E: std::fmt::Display>(
        &self,
        id: Option<BlockId>,
        f: impl FnOnce(AnyState<'_>, &Header) -> Result<R, E>,
    ) -> Result<R, ErrorObjectOwned> {
        let id = id.unwrap_or(BlockId::Latest);
        let result = self.chain.read_state(|store| {
            let head = self.chain.head().map_err(internal)?;
            let header = match id {
                BlockId::Latest | BlockId::Pending => head.clone(),
                other => self.header(other)?,
            };
            let state = if header.number == head.number {
                AnyState::Head(store)
            } else {
                AnyState::Past(StateAt::new(store, header.state_root))
            };
            Ok::<_, ErrorObjectOwned>(f(state, &header))
        })?;
        result.map_err(internal)
    }

    /// A mined transaction and where it is.
    fn mined_tx(
        &self,
        hash: &B256,
    ) -> Result<Option<(tessera_execution::RecoveredTx, TxPlace)>, ErrorObjectOwned> {
        let store = self.chain.store();
        let Some(location) = store.tx_location(hash).map_err(internal)? else {
            return Ok(None);
        };
        let header = self.header(BlockId::Number(location.block_number))?;
        let body = self.block_body(location.block_number)?;
        let tx = body
            .get(location.index as usize)
            .and_then(|raw| self.stored_tx(raw))
            .ok_or_else(|| internal(format!("transaction {hash} missing from its block")))?;
        Ok(Some((tx, place(&header, header.hash(), location.index))))
    }

    fn block_json(&self, id: BlockId, full: bool) -> RpcResult {
        let Some(header) = self.find_header(id)? else {
            return Ok(Value::Null);
        };
        let body = self.block_body(header.number)?;
        let size = json::block_size(&body);
        let hash = header.hash();
        let mut txs = Vec::with_capacity(body.len());
        for (i, raw) in body.iter().enumerate() {
            let tx = self.stored_tx(raw).ok_or_else(|| {
                internal(format!("block {} holds an undecodable tx", header.number))
            })?;
            txs.push(if full {
                json::transaction(&tx, Some(place(&header, hash, i as u32)))
            } else {
                json!(tx.hash)
            });
        }
        Ok(json::block(&header, hash, txs, size))
    }

    fn tx_count(&self, id: BlockId) -> RpcResult {
        let Some(header) = self.find_header(id)? else {
            return Ok(Value::Null);
        };
        to_json(qty(self.block_body(header.number)?.len() as u64))
    }

    /// Decodes a stored transaction; stored bytes were validated before they were committed, and
    /// their senders are usually in the chain's cache.
    fn stored_tx(&self, raw: &[u8]) -> Option<tessera_execution::RecoveredTx> {
        self.chain.senders().decode(raw).ok()
    }

    /// The raw transactions of block `number`; empty for a block without any.
    fn block_body(&self, number: u64) -> Result<Vec<Bytes>, ErrorObjectOwned> {
        Ok(self
            .chain
            .store()
            .block_transactions(number)
            .map_err(internal)?
            .unwrap_or_default())
    }

    /// Receipt objects of every transaction of block `number`.
    pub(super) fn block_receipts(&self, number: u64) -> Result<Vec<Value>, ErrorObjectOwned> {
        let store = self.chain.store();
        let header = self.header(BlockId::Number(number))?;
        let hash = header.hash();
        let body = self.block_body(number)?;
        let receipts = store
            .receipts(number)
            .map_err(internal)?
            .unwrap_or_default();
        let mut log_index = 0u32;
        let mut out = Vec::with_capacity(receipts.len());
        for (i, (raw, receipt)) in body.iter().zip(&receipts).enumerate() {
            let tx = self
                .stored_tx(raw)
                .ok_or_else(|| internal(format!("block {number} holds an undecodable tx")))?;
            out.push(json::receipt(
                receipt,
                &tx,
                place(&header, hash, i as u32),
                log_index,
            ));
            log_index += receipt.logs.len() as u32;
        }
        Ok(out)
    }

    /// Turns a filter object into a store query over concrete block numbers.
    pub(super) fn log_query(&self, filter: &FilterObject) -> Result<LogFilter, ErrorObjectOwned> {
        let (from_block, to_block) = if let Some(hash) = filter.block_hash {
            if filter.from_block.is_some() || filter.to_block.is_some() {
                return Err(invalid_params(
                    "blockHash cannot be combined with fromBlock or toBlock",
                ));
            }
            let header = self.header(BlockId::Hash(hash))?;
            (header.number, header.number)
        } else {
            let head = self.head()?.number;
            let resolve = |id: Option<BlockId>| -> Result<u64, ErrorObjectOwned> {
                Ok(match id {
                    None | Some(BlockId::Latest) | Some(BlockId::Pending) => head,
                    Some(BlockId::Earliest) => 0,
                    Some(BlockId::Number(n)) => n,
                    Some(BlockId::Hash(h)) => self.header(BlockId::Hash(h))?.number,
                })
            };
            let from = resolve(filter.from_block)?;
            let to = resolve(filter.to_block)?;
            // A range that starts after the head and ends at "latest" is not an error, just
            // empty for now (filters created with a future fromBlock rely on this).
            let open_ended = matches!(
                filter.to_block,
                None | Some(BlockId::Latest) | Some(BlockId::Pending)
            );
            if from > to && open_ended {
                return Ok(LogFilter {
                    from_block: from,
                    to_block: from.saturating_sub(1).max(to),
                    addresses: filter.addresses(),
                    topics: filter.topics(),
                });
            }
            (from, to)
        };
        if from_block > to_block {
            return Err(invalid_params(format!(
                "invalid block range: fromBlock {from_block} is after toBlock {to_block}"
            )));
        }
        Ok(LogFilter {
            from_block,
            to_block,
            addresses: filter.addresses(),
            topics: filter.topics(),
        })
    }

    /// Runs a log query, refusing more than [`MAX_LOGS`] results.
    pub(super) fn logs(&self, query: &LogFilter) -> Result<Vec<LogEntry>, ErrorObjectOwned> {
        let logs = self.chain.store().logs(query).map_err(internal)?;
        if logs.len() > MAX_LOGS {
            return Err(server_error(format!(
                "query returned more than {MAX_LOGS} results; narrow the block range or filter"
            )));
        }
        Ok(logs)
    }
}

/// Where transaction `index` of the block with this header and hash is.
pub(super) fn place(header: &Header, block_hash: B256, index: u32) -> TxPlace {
    TxPlace {
        block_hash,
        block_number: header.number,
        index,
        base_fee: header.base_fee,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_reasons_decode() {
        // Error("insufficient balance")
        let data = hex::decode(concat!(
            "08c379a0",
            "0000000000000000000000000000000000000000000000000000000000000020",
            "0000000000000000000000000000000000000000000000000000000000000014",
            "696e73756666696369656e742062616c616e6365000000000000000000000000"
        ))
        .unwrap();
        assert_eq!(
            decode_revert_reason(&data).as_deref(),
            Some("insufficient balance")
        );
        let err = revert_error(&Bytes::from(data));
        assert_eq!(err.code(), 3);
        assert_eq!(err.message(), "execution reverted: insufficient balance");
        // Panic(0x11)
        let mut panic = hex::decode("4e487b71").unwrap();
        panic.extend_from_slice(&B256::with_last_byte(0x11).0);
        assert_eq!(
            decode_revert_reason(&panic).as_deref(),
            Some("panic code 0x11")
        );
        assert_eq!(decode_revert_reason(&[1, 2, 3]), None);
        assert_eq!(revert_error(&Bytes::new()).message(), "execution reverted");
    }
}
