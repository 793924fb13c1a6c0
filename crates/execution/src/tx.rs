//! Transactions as the executor takes them: decoded from EIP-2718 bytes, sender recovered with
//! libsecp256k1, and translated into revm's `TxEnv`.

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{keccak256, uint, Address, Bytes, B256, U256};
use revm::{
    context::{either::Either, TxEnv},
    interpreter::gas::calculate_initial_tx_gas,
    primitives::hardfork::SpecId,
};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};

use crate::Fork;

/// Half the secp256k1 group order: EIP-2 rejects signatures with a larger `s`.
const SECP256K1N_HALF: U256 =
    uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// Why bytes are not a usable signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction encoding: {0}")]
    Decode(String),
    #[error("trailing bytes after the transaction encoding")]
    TrailingBytes,
    #[error("invalid signature: {0}")]
    Signature(&'static str),
}

/// A signed transaction with its sender recovered and its hash computed once.
#[derive(Debug, Clone)]
pub struct RecoveredTx {
    pub envelope: TxEnvelope,
    pub sender: Address,
    pub hash: B256,
}

impl RecoveredTx {
    /// Decodes EIP-2718 bytes (legacy RLP or typed) and recovers the sender.
    pub fn decode(bytes: &[u8]) -> Result<Self, TxError> {
        let envelope = decode_envelope(bytes)?;
        Self::from_envelope(envelope)
    }

    /// Recovers the sender of an already decoded transaction.
    pub fn from_envelope(envelope: TxEnvelope) -> Result<Self, TxError> {
        let sender = recover_sender(&envelope)?;
        let hash = *envelope.tx_hash();
        Ok(Self {
            envelope,
            sender,
            hash,
        })
    }

    /// The canonical EIP-2718 encoding.
    pub fn encoded(&self) -> Bytes {
        self.envelope.encoded_2718().into()
    }

    /// The revm transaction environment for this transaction.
    pub fn tx_env(&self) -> TxEnv {
        to_tx_env(&self.envelope, self.sender)
    }
}

/// Decodes one EIP-2718 transaction, refusing trailing bytes.
pub fn decode_envelope(bytes: &[u8]) -> Result<TxEnvelope, TxError> {
    let mut buf = bytes;
    let envelope = TxEnvelope::decode_2718(&mut buf).map_err(|e| TxError::Decode(e.to_string()))?;
    if !buf.is_empty() {
        return Err(TxError::TrailingBytes);
    }
    Ok(envelope)
}

/// Recovers the signer's address from the signature over the transaction's signing hash.
pub fn recover_sender(envelope: &TxEnvelope) -> Result<Address, TxError> {
    let sig = envelope.signature();
    if sig.s() > SECP256K1N_HALF {
        return Err(TxError::Signature("s is above secp256k1n/2 (EIP-2)"));
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let recid =
        RecoveryId::try_from(sig.v() as i32).map_err(|_| TxError::Signature("bad recovery id"))?;
    let recoverable = RecoverableSignature::from_compact(&compact, recid)
        .map_err(|_| TxError::Signature("r or s out of range"))?;
    let msg = secp256k1::Message::from_digest(envelope.signature_hash().0);
    let key = recoverable
        .recover_ecdsa(msg)
        .map_err(|_| TxError::Signature("no public key recovers from it"))?;
    let uncompressed = key.serialize_uncompressed();
    Ok(Address::from_slice(&keccak256(&uncompressed[1..])[12..]))
}

/// Translates a transaction into revm's environment. Gas price is the fee cap for dynamic-fee
/// transactions; revm derives the effective price from the block's base fee.
pub fn to_tx_env(envelope: &TxEnvelope, sender: Address) -> TxEnv {
    let access_list = envelope.access_list().cloned().unwrap_or_default();
    let authorization_list = envelope
        .authorization_list()
        .map(|list| list.iter().cloned().map(Either::Left).collect())
        .unwrap_or_default();
    TxEnv {
        tx_type: envelope.tx_type() as u8,
        caller: sender,
        gas_limit: envelope.gas_limit(),
        gas_price: envelope.max_fee_per_gas(),
        gas_priority_fee: envelope
            .max_priority_fee_per_gas()
            .filter(|_| envelope.is_dynamic_fee()),
        kind: envelope.kind(),
        value: envelope.value(),
        data: envelope.input().clone(),
        nonce: envelope.nonce(),
        chain_id: envelope.chain_id(),
        access_list,
        blob_hashes: envelope
            .blob_versioned_hashes()
            .map(|h| h.to_vec())
            .unwrap_or_default(),
        max_fee_per_blob_gas: envelope.max_fee_per_blob_gas().unwrap_or_default(),
        authorization_list,
    }
}

/// The least gas limit `envelope` can have under `fork`'s rules: the base cost (plus the
/// creation cost and EIP-3860 initcode words for a create), calldata, EIP-2930 access-list
/// addresses and storage keys, and EIP-7702 authorizations; from Prague on, at least the
/// EIP-7623 calldata floor, which execution charges whatever the transaction actually uses.
///
/// This is the same number revm checks the gas limit against before executing, so a
/// transaction whose gas limit is below it can never be included.
pub fn intrinsic_gas(fork: Fork, envelope: &TxEnvelope) -> u64 {
    let (addresses, storage_keys) = envelope.access_list().map_or((0, 0), |list| {
        list.iter().fold((0u64, 0u64), |(addresses, keys), item| {
            (addresses + 1, keys + item.storage_keys.len() as u64)
        })
    });
    let authorizations = envelope
        .authorization_list()
        .map_or(0, |list| list.len() as u64);
    let spec = fork.spec_id();
    let gas = calculate_initial_tx_gas(
        spec,
        envelope.input(),
        envelope.kind().is_create(),
        addresses,
        storage_keys,
        authorizations,
        // EIP-2780's re-priced base cost is not part of any fork Tessera runs.
        None,
    );
    if spec.is_enabled_in(SpecId::PRAGUE) {
        gas.initial_total_gas().max(gas.floor_gas())
    } else {
        gas.initial_total_gas()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip7702, TxLegacy};
    use alloy_eips::{
        eip2930::{AccessList, AccessListItem},
        eip7702::Authorization,
    };
    use alloy_primitives::{address, b256, Signature, TxKind};

    /// Signs with the first key of the well-known test mnemonic, whose address is public.
    fn signed_bytes() -> Vec<u8> {
        let secret = secp256k1::SecretKey::from_secret_bytes(
            b256!("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").0,
        )
        .unwrap();
        let tx = TxEip1559 {
            chain_id: 1,
            nonce: 3,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(7)),
            value: U256::from(5),
            ..Default::default()
        };
        let msg = secp256k1::Message::from_digest(tx.signature_hash().0);
        let sig = RecoverableSignature::sign_ecdsa_recoverable(msg, &secret);
        let (recid, rs) = sig.serialize_compact();
        let signature = Signature::new(
            U256::from_be_slice(&rs[..32]),
            U256::from_be_slice(&rs[32..]),
            recid == RecoveryId::One,
        );
        TxEnvelope::from(tx.into_signed(signature)).encoded_2718()
    }

    #[test]
    fn garbage_is_refused_with_reason() {
        assert!(matches!(
            RecoveredTx::decode(&[0xde, 0xad]),
            Err(TxError::Decode(_))
        ));
        assert!(matches!(RecoveredTx::decode(&[]), Err(TxError::Decode(_))));
        let mut bytes = signed_bytes();
        bytes.push(0);
        assert_eq!(
            RecoveredTx::decode(&bytes).unwrap_err(),
            TxError::TrailingBytes
        );
    }

    #[test]
    fn decodes_and_recovers() {
        let bytes = signed_bytes();
        let tx = RecoveredTx::decode(&bytes).unwrap();
        assert_eq!(
            tx.sender,
            address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        assert_eq!(tx.hash, keccak256(&bytes));
        assert_eq!(tx.encoded().as_ref(), bytes.as_slice());
        let env = tx.tx_env();
        assert_eq!((env.nonce, env.gas_limit, env.gas_price), (3, 21_000, 10));
        // A flipped bit in `s` recovers someone else, or nobody.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        match RecoveredTx::decode(&bad) {
            Ok(other) => assert_ne!(other.sender, tx.sender),
            Err(e) => assert!(matches!(e, TxError::Signature(_))),
        }
    }

    /// A transaction with a placeholder signature: intrinsic gas does not look at the signer.
    fn unsigned<T>(tx: T) -> TxEnvelope
    where
        T: SignableTransaction<Signature>,
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
        TxEnvelope::from(tx.into_signed(Signature::new(U256::ONE, U256::ONE, false)))
    }

    fn call(input: Vec<u8>, access_list: AccessList) -> TxEnvelope {
        unsigned(TxEip1559 {
            chain_id: 1,
            gas_limit: 1_000_000,
            to: TxKind::Call(Address::repeat_byte(7)),
            input: input.into(),
            access_list,
            ..Default::default()
        })
    }

    fn create(initcode: Vec<u8>) -> TxEnvelope {
        unsigned(TxLegacy {
            chain_id: Some(1),
            gas_limit: 1_000_000,
            to: TxKind::Create,
            input: initcode.into(),
            ..Default::default()
        })
    }

    #[test]
    fn intrinsic_gas_of_a_plain_transfer_is_21000_in_every_fork() {
        for fork in Fork::ALL {
            assert_eq!(
                intrinsic_gas(fork, &call(vec![], AccessList::default())),
                21_000,
                "{fork}"
            );
        }
    }

    #[test]
    fn intrinsic_gas_of_creates() {
        // Frontier charged creates like calls; Homestead (EIP-2) added 32000.
        assert_eq!(intrinsic_gas(Fork::Frontier, &create(vec![])), 21_000);
        assert_eq!(intrinsic_gas(Fork::Homestead, &create(vec![])), 53_000);
        assert_eq!(intrinsic_gas(Fork::Shanghai, &create(vec![])), 53_000);
        // 33 nonzero bytes: 16 each since Istanbul, plus two initcode words at 2 (EIP-3860,
        // Shanghai on).
        let initcode = vec![0x60; 33];
        assert_eq!(
            intrinsic_gas(Fork::London, &create(initcode.clone())),
            53_000 + 33 * 16
        );
        assert_eq!(
            intrinsic_gas(Fork::Shanghai, &create(initcode.clone())),
            53_000 + 33 * 16 + 2 * 2
        );
        assert_eq!(
            intrinsic_gas(Fork::Cancun, &create(initcode)),
            53_000 + 33 * 16 + 2 * 2
        );
    }

    #[test]
    fn intrinsic_gas_of_calldata() {
        // Two zero bytes at 4, three nonzero ones at 68 before Istanbul (EIP-2028), 16 after.
        let data = vec![0, 1, 0, 2, 3];
        let tx = call(data, AccessList::default());
        assert_eq!(
            intrinsic_gas(Fork::Petersburg, &tx),
            21_000 + 2 * 4 + 3 * 68
        );
        assert_eq!(intrinsic_gas(Fork::Istanbul, &tx), 21_000 + 2 * 4 + 3 * 16);
        assert_eq!(intrinsic_gas(Fork::Cancun, &tx), 21_000 + 2 * 4 + 3 * 16);
        // From Prague the EIP-7623 floor (10 gas per token, a nonzero byte being 4 tokens) is
        // above the calldata cost of any call without an access list.
        assert_eq!(intrinsic_gas(Fork::Prague, &tx), 21_000 + 10 * (2 + 3 * 4));
    }

    #[test]
    fn intrinsic_gas_of_access_lists() {
        let list = AccessList(vec![
            AccessListItem {
                address: Address::repeat_byte(1),
                storage_keys: vec![B256::ZERO, B256::repeat_byte(1)],
            },
            AccessListItem {
                address: Address::repeat_byte(2),
                storage_keys: vec![],
            },
        ]);
        let tx = call(vec![], list);
        // EIP-2930: 2400 per address, 1900 per storage key.
        let expected = 21_000 + 2 * 2_400 + 2 * 1_900;
        assert_eq!(intrinsic_gas(Fork::Berlin, &tx), expected);
        assert_eq!(intrinsic_gas(Fork::Prague, &tx), expected);
        assert_eq!(intrinsic_gas(Fork::Osaka, &tx), expected);
    }

    #[test]
    fn intrinsic_gas_from_prague_is_at_least_the_calldata_floor() {
        // 1000 nonzero bytes: 16000 as calldata, but 4 tokens each at 10 gas as the floor.
        let tx = call(vec![0xff; 1000], AccessList::default());
        assert_eq!(intrinsic_gas(Fork::Cancun, &tx), 21_000 + 16_000);
        assert_eq!(intrinsic_gas(Fork::Prague, &tx), 21_000 + 40_000);
        assert_eq!(intrinsic_gas(Fork::Osaka, &tx), 21_000 + 40_000);
        // Zero bytes: 4 gas as calldata, 1 token (10 gas) for the floor.
        let zeros = call(vec![0; 1000], AccessList::default());
        assert_eq!(intrinsic_gas(Fork::Cancun, &zeros), 21_000 + 4_000);
        assert_eq!(intrinsic_gas(Fork::Prague, &zeros), 21_000 + 10_000);
    }

    #[test]
    fn intrinsic_gas_counts_eip7702_authorizations() {
        let auth = Authorization {
            chain_id: U256::from(1),
            address: Address::repeat_byte(9),
            nonce: 0,
        }
        .into_signed(Signature::new(U256::ONE, U256::ONE, false));
        let tx = unsigned(TxEip7702 {
            chain_id: 1,
            gas_limit: 1_000_000,
            to: Address::repeat_byte(7),
            authorization_list: vec![auth.clone(), auth],
            ..Default::default()
        });
        // EIP-7702: PER_EMPTY_ACCOUNT_COST (25000) per authorization, refunded in part later.
        assert_eq!(intrinsic_gas(Fork::Prague, &tx), 21_000 + 2 * 25_000);
    }
}
