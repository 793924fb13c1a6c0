//! The canonical binary encoding of Tessera's own types (headers, blocks, receipts, diffs), on
//! disk and on the wire. Everything goes through these two functions so that the format can be
//! replaced in one place. Decoding of untrusted bytes is bounded by `limit`: a length prefix
//! larger than the input cannot make the decoder allocate past it.

use serde::{de::DeserializeOwned, Serialize};

/// Upper bound for one decoded value when the caller does not give a tighter one.
pub const DEFAULT_LIMIT: usize = 64 * 1024 * 1024;

/// Failure to decode bytes into a value.
#[derive(Debug, thiserror::Error)]
#[error("undecodable bytes: {0}")]
pub struct DecodeError(String);

/// Encodes `value` canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into a Vec cannot fail for plain data types")
}

/// Decodes a value from `bytes`, refusing inputs longer than `limit` and trailing bytes.
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError(format!(
            "{} bytes exceed the limit of {limit}",
            bytes.len()
        )));
    }
    let config = bincode::config::standard().with_limit::<{ DEFAULT_LIMIT }>();
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| DecodeError(e.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// Decodes a value with the default limit.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_bounded(bytes, DEFAULT_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Account, Header, ShardId};
    use alloy_primitives::{Address, Bloom, B256, U256};

    #[test]
    fn round_trip_and_garbage() {
        let acc = Account {
            nonce: 7,
            balance: U256::from(10u64).pow(U256::from(20)),
            code_hash: B256::repeat_byte(3),
        };
        let bytes = encode(&acc);
        assert_eq!(decode::<Account>(&bytes).unwrap(), acc);
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<Account>(&long).is_err());
        assert!(decode::<Account>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_bounded::<Account>(&bytes, 3).is_err());
        // A huge length prefix must fail cleanly, not allocate.
        assert!(
            decode::<Vec<u8>>(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err()
        );
    }

    #[test]
    fn header_hash_changes_with_content() {
        let h = Header {
            shard: ShardId(0),
            number: 1,
            parent_hash: B256::ZERO,
            timestamp: 2,
            beneficiary: Address::ZERO,
            gas_limit: 30_000_000,
            gas_used: 0,
            base_fee: 7,
            state_root: B256::ZERO,
            transactions_root: B256::ZERO,
            receipts_root: B256::ZERO,
            logs_bloom: Bloom::default(),
        };
        let mut h2 = h.clone();
        h2.state_root = B256::repeat_byte(1);
        assert_ne!(h.hash(), h2.hash());
        assert_eq!(decode::<Header>(&encode(&h)).unwrap(), h);
    }
}
