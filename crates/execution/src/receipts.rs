//! Ethereum encodings of execution results: the receipts root, and the logs hash used by the
//! state tests.

use alloy_consensus::{Eip658Value, ReceiptEnvelope, ReceiptWithBloom, TxType};
use alloy_primitives::{keccak256, Log, B256};
use tessera_primitives::{Receipt, TxStatus};

/// The receipt as Ethereum encodes it (EIP-2718 typed, with status and bloom).
pub fn ethereum_receipt(receipt: &Receipt) -> ReceiptEnvelope {
    let tx_type = TxType::try_from(receipt.tx_type).unwrap_or(TxType::Legacy);
    let inner = alloy_consensus::Receipt {
        status: Eip658Value::Eip658(receipt.status == TxStatus::Success),
        cumulative_gas_used: receipt.cumulative_gas_used,
        logs: receipt.logs.clone(),
    };
    ReceiptEnvelope::from_typed(tx_type, ReceiptWithBloom::new(inner, receipt.bloom()))
}

/// Root of the ordered trie of the block's receipts, as in an Ethereum header (Byzantium on).
pub fn receipts_root(receipts: &[&Receipt]) -> B256 {
    let envelopes: Vec<ReceiptEnvelope> = receipts.iter().map(|r| ethereum_receipt(r)).collect();
    alloy_consensus::proofs::calculate_receipt_root(&envelopes)
}

/// keccak256 of the RLP list of logs, as the state tests' `logs` field.
pub fn logs_hash(logs: &[Log]) -> B256 {
    let mut out = Vec::new();
    alloy_rlp::encode_list(logs, &mut out);
    keccak256(out)
}
