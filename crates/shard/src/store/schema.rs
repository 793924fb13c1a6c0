//! Column families and the byte layout of their keys and values.
//!
//! Integers in keys are big-endian so that RocksDB's bytewise order is numeric order, which the
//! range scans (logs index, per-account storage) rely on. Every layout here is pinned by a
//! fixed-bytes test below: changing one is a deliberate on-disk format change.

use alloy_primitives::{Address, B256, U256};
use tessera_primitives::{Account, EMPTY_CODE_HASH};

/// The column families of a shard database. The set is fixed: opening a database that lacks one
/// creates it, and RocksDB refuses to open a database that has one not listed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cf {
    Meta,
    Headers,
    BlockHashes,
    Bodies,
    Receipts,
    TxIndex,
    LogsIndex,
    Accounts,
    Storage,
    Code,
    TrieNodes,
    Outbox,
    Inbox,
    ConsensusWal,
}

impl Cf {
    pub(crate) const ALL: [Cf; 14] = [
        Cf::Meta,
        Cf::Headers,
        Cf::BlockHashes,
        Cf::Bodies,
        Cf::Receipts,
        Cf::TxIndex,
        Cf::LogsIndex,
        Cf::Accounts,
        Cf::Storage,
        Cf::Code,
        Cf::TrieNodes,
        Cf::Outbox,
        Cf::Inbox,
        Cf::ConsensusWal,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Headers => "headers",
            Cf::BlockHashes => "block_hashes",
            Cf::Bodies => "bodies",
            Cf::Receipts => "receipts",
            Cf::TxIndex => "tx_index",
            Cf::LogsIndex => "logs_index",
            Cf::Accounts => "accounts",
            Cf::Storage => "storage",
            Cf::Code => "code",
            Cf::TrieNodes => "trie_nodes",
            Cf::Outbox => "outbox",
            Cf::Inbox => "inbox",
            Cf::ConsensusWal => "consensus_wal",
        }
    }
}

/// Key in `meta` of the head: value `number (8) ‖ hash (32)`.
pub(crate) const HEAD_KEY: &[u8] = b"head";

/// Key in `consensus_wal` of the finalized head's consensus record.
pub(crate) const FINALIZED_KEY: &[u8] = b"finalized";

/// Prefix of write-ahead-log keys in `consensus_wal`.
pub(crate) const WAL_PREFIX: &[u8] = b"w";

pub(crate) fn wal_key(sequence: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = WAL_PREFIX[0];
    key[1..].copy_from_slice(&sequence.to_be_bytes());
    key
}

pub(crate) fn decode_wal_key(key: &[u8]) -> Option<u64> {
    match key {
        [b'w', rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// Key of per-block tables (`headers`, `bodies`, `receipts`): the block number.
pub(crate) fn block_key(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

pub(crate) fn encode_head(number: u64, hash: &B256) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&number.to_be_bytes());
    out[8..].copy_from_slice(hash.as_slice());
    out
}

pub(crate) fn decode_head(bytes: &[u8]) -> Result<(u64, B256), String> {
    if bytes.len() != 40 {
        return Err(format!("head record is {} bytes, expected 40", bytes.len()));
    }
    Ok((be_u64(&bytes[..8]), B256::from_slice(&bytes[8..])))
}

pub(crate) fn decode_block_number(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != 8 {
        return Err(format!("block number is {} bytes, expected 8", bytes.len()));
    }
    Ok(be_u64(bytes))
}

/// `tx_index` value: `block number (8) ‖ index in block (4)`.
pub(crate) fn encode_tx_location(number: u64, index: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&number.to_be_bytes());
    out[8..].copy_from_slice(&index.to_be_bytes());
    out
}

pub(crate) fn decode_tx_location(bytes: &[u8]) -> Result<(u64, u32), String> {
    if bytes.len() != 12 {
        return Err(format!("tx location is {} bytes, expected 12", bytes.len()));
    }
    Ok((be_u64(&bytes[..8]), be_u32(&bytes[8..])))
}

/// Tag of the by-address entries in `logs_index`.
pub(crate) const LOG_BY_ADDRESS: u8 = 0;
/// Tag of the by-topic entries in `logs_index`.
pub(crate) const LOG_BY_TOPIC: u8 = 1;

/// Prefix of the by-address entries of one address; a full key appends
/// `block number (8) ‖ log index in block (4)`.
pub(crate) fn log_address_prefix(address: &Address) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 20 + 12);
    out.push(LOG_BY_ADDRESS);
    out.extend_from_slice(address.as_slice());
    out
}

/// Prefix of the by-topic entries of one topic at one position (0..4); a full key appends
/// `block number (8) ‖ log index in block (4)`.
pub(crate) fn log_topic_prefix(position: u8, topic: &B256) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 32 + 12);
    out.push(LOG_BY_TOPIC);
    out.push(position);
    out.extend_from_slice(topic.as_slice());
    out
}

/// `prefix ‖ number ‖ log_index`.
pub(crate) fn log_key(prefix: &[u8], number: u64, log_index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 12);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&log_index.to_be_bytes());
    out
}

/// The block number and log index at the end of a `logs_index` key.
pub(crate) fn decode_log_key_suffix(key: &[u8]) -> Result<(u64, u32), String> {
    let n = key.len();
    if n < 12 {
        return Err(format!("logs index key is {n} bytes, too short"));
    }
    Ok((be_u64(&key[n - 12..n - 4]), be_u32(&key[n - 4..])))
}

/// `logs_index` value: `tx index in block (4) ‖ log index within the tx's receipt (4)`.
pub(crate) fn encode_log_position(tx_index: u32, log_in_tx: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&tx_index.to_be_bytes());
    out[4..].copy_from_slice(&log_in_tx.to_be_bytes());
    out
}

pub(crate) fn decode_log_position(bytes: &[u8]) -> Result<(u32, u32), String> {
    if bytes.len() != 8 {
        return Err(format!("log position is {} bytes, expected 8", bytes.len()));
    }
    Ok((be_u32(&bytes[..4]), be_u32(&bytes[4..])))
}

/// `storage` key: `address (20) ‖ slot (32, big-endian)`.
pub(crate) fn storage_key(address: &Address, slot: &U256) -> [u8; 52] {
    let mut out = [0u8; 52];
    out[..20].copy_from_slice(address.as_slice());
    out[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    out
}

/// The half-open key range holding all storage of `address`: from the bare address (which sorts
/// before any of its 52-byte keys) to `address ‖ 0xff × 33` (which sorts after all of them and
/// before any key of the next address). Works for the all-`0xff` address too, which has no
/// successor to use as an exclusive bound.
pub(crate) fn storage_range(address: &Address) -> ([u8; 20], [u8; 53]) {
    let mut end = [0xffu8; 53];
    end[..20].copy_from_slice(address.as_slice());
    (address.0 .0, end)
}

pub(crate) fn decode_storage_key(key: &[u8]) -> Result<(Address, U256), String> {
    if key.len() != 52 {
        return Err(format!("storage key is {} bytes, expected 52", key.len()));
    }
    Ok((
        Address::from_slice(&key[..20]),
        U256::from_be_slice(&key[20..]),
    ))
}

/// A nonzero storage value: its big-endian bytes without leading zeros (1 to 32 bytes). Zero is
/// never stored: writing zero deletes the slot.
pub(crate) fn encode_storage_value(value: &U256) -> Vec<u8> {
    minimal_be(&value.to_be_bytes::<32>()).to_vec()
}

pub(crate) fn decode_storage_value(bytes: &[u8]) -> Result<U256, String> {
    if bytes.is_empty() || bytes.len() > 32 || bytes[0] == 0 {
        return Err(format!(
            "storage value 0x{} is not a minimal nonzero word",
            hex(bytes)
        ));
    }
    Ok(U256::from_be_slice(bytes))
}

/// Account flag: the account has code, and its 32-byte code hash ends the record.
const ACCOUNT_HAS_CODE: u8 = 1;

/// `accounts` value: `flags (1) ‖ nonce length (1) ‖ nonce ‖ balance length (1) ‖ balance
/// [‖ code hash (32)]`, integers big-endian without leading zeros. The code hash is left out
/// when it is the empty-code hash, so a plain account takes a dozen bytes.
pub(crate) fn encode_account(account: &Account) -> Vec<u8> {
    let has_code = account.code_hash != EMPTY_CODE_HASH;
    let nonce = account.nonce.to_be_bytes();
    let nonce = minimal_be(&nonce);
    let balance = account.balance.to_be_bytes::<32>();
    let balance = minimal_be(&balance);
    let mut out = Vec::with_capacity(3 + nonce.len() + balance.len() + 32);
    out.push(if has_code { ACCOUNT_HAS_CODE } else { 0 });
    out.push(nonce.len() as u8);
    out.extend_from_slice(nonce);
    out.push(balance.len() as u8);
    out.extend_from_slice(balance);
    if has_code {
        out.extend_from_slice(account.code_hash.as_slice());
    }
    out
}

pub(crate) fn decode_account(bytes: &[u8]) -> Result<Account, String> {
    let mut rest = bytes;
    let flags = take(&mut rest, 1)?[0];
    if flags & !ACCOUNT_HAS_CODE != 0 {
        return Err(format!("unknown account flags {flags:#04x}"));
    }
    let nonce = take_int(&mut rest, 8)?;
    let balance = take_int(&mut rest, 32)?;
    let code_hash = if flags & ACCOUNT_HAS_CODE != 0 {
        let hash = B256::from_slice(take(&mut rest, 32)?);
        if hash == EMPTY_CODE_HASH {
            return Err("empty-code hash stored explicitly".into());
        }
        hash
    } else {
        EMPTY_CODE_HASH
    };
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after account", rest.len()));
    }
    Ok(Account {
        nonce: be_u64_padded(nonce),
        balance: U256::from_be_slice(balance),
        code_hash,
    })
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err(format!(
            "truncated: needed {n} more bytes, {} left",
            rest.len()
        ));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// A length-prefixed minimal big-endian integer of at most `max` bytes.
fn take_int<'a>(rest: &mut &'a [u8], max: usize) -> Result<&'a [u8], String> {
    let len = usize::from(take(rest, 1)?[0]);
    if len > max {
        return Err(format!("integer of {len} bytes exceeds {max}"));
    }
    let bytes = take(rest, len)?;
    if bytes.first() == Some(&0) {
        return Err("integer with a leading zero byte".into());
    }
    Ok(bytes)
}

fn minimal_be(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    u64::from_be_bytes(buf)
}

/// A big-endian integer of at most 8 bytes.
fn be_u64_padded(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    u64::from_be_bytes(buf)
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(bytes);
    u32::from_be_bytes(buf)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    alloy_primitives::hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256};

    #[test]
    fn column_family_names_are_distinct() {
        let mut names: Vec<_> = Cf::ALL.iter().map(|cf| cf.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Cf::ALL.len());
    }

    #[test]
    fn account_encoding_is_pinned() {
        let plain = Account {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: EMPTY_CODE_HASH,
        };
        assert_eq!(encode_account(&plain), [0, 0, 0]);
        let eoa = Account {
            nonce: 0x0102,
            balance: U256::from(0x0a0b0cu64),
            ..Default::default()
        };
        assert_eq!(encode_account(&eoa), [0, 2, 1, 2, 3, 0x0a, 0x0b, 0x0c]);
        let code_hash = b256!("1111111111111111111111111111111111111111111111111111111111111111");
        let contract = Account {
            nonce: 1,
            balance: U256::MAX,
            code_hash,
        };
        let bytes = encode_account(&contract);
        assert_eq!(&bytes[..4], &[1, 1, 1, 32]);
        assert_eq!(&bytes[4..36], &[0xff; 32]);
        assert_eq!(&bytes[36..], code_hash.as_slice());
        for account in [plain, eoa, contract] {
            assert_eq!(decode_account(&encode_account(&account)).unwrap(), account);
        }
    }

    #[test]
    fn account_decoding_rejects_non_canonical_bytes() {
        let bad: [&[u8]; 8] = [
            &[],
            &[2, 0, 0],                            // unknown flag
            &[0, 1, 0, 0],                         // nonce with a leading zero
            &[0, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], // nonce longer than 8 bytes
            &[0, 0, 33],                           // balance longer than 32 bytes
            &[0, 0, 1],                            // truncated balance
            &[0, 0, 0, 7],                         // trailing byte
            &[1, 0, 0, 1, 2],                      // truncated code hash
        ];
        for bytes in bad {
            assert!(decode_account(bytes).is_err(), "accepted {bytes:?}");
        }
        let mut explicit_empty = vec![1, 0, 0];
        explicit_empty.extend_from_slice(EMPTY_CODE_HASH.as_slice());
        assert!(decode_account(&explicit_empty).is_err());
    }

    #[test]
    fn storage_layout_is_pinned() {
        let a = address!("00000000000000000000000000000000000000aa");
        let key = storage_key(&a, &U256::from(0x0102u64));
        assert_eq!(&key[..20], a.as_slice());
        assert_eq!(&key[20..50], &[0u8; 30]);
        assert_eq!(&key[50..], &[1, 2]);
        assert_eq!(
            decode_storage_key(&key).unwrap(),
            (a, U256::from(0x0102u64))
        );

        assert_eq!(encode_storage_value(&U256::from(0x0100u64)), [1, 0]);
        assert_eq!(
            decode_storage_value(&[1, 0]).unwrap(),
            U256::from(0x0100u64)
        );
        assert_eq!(
            decode_storage_value(&encode_storage_value(&U256::MAX)).unwrap(),
            U256::MAX
        );
        for bad in [&[][..], &[0][..], &[0, 1][..], &[1; 33][..]] {
            assert!(decode_storage_value(bad).is_err());
        }
    }

    #[test]
    fn storage_range_covers_exactly_one_account() {
        for a in [
            Address::ZERO,
            Address::repeat_byte(0x42),
            Address::repeat_byte(0xff),
        ] {
            let (start, end) = storage_range(&a);
            let inside = [storage_key(&a, &U256::ZERO), storage_key(&a, &U256::MAX)];
            for key in inside {
                assert!(key[..] >= start[..] && key[..] < end[..]);
            }
            let mut below = a.0 .0;
            let mut above = a.0 .0;
            if let Some(b) = below.iter_mut().rev().find(|b| **b != 0) {
                *b -= 1;
                let key = storage_key(&Address::from(below), &U256::MAX);
                assert!(key[..] < start[..]);
            }
            if let Some(b) = above.iter_mut().rev().find(|b| **b != 0xff) {
                *b += 1;
                let key = storage_key(&Address::from(above), &U256::ZERO);
                assert!(key[..] >= end[..]);
            }
        }
    }

    #[test]
    fn index_layouts_are_pinned() {
        assert_eq!(block_key(0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
        let hash = B256::repeat_byte(7);
        let head = encode_head(5, &hash);
        assert_eq!(&head[..8], &[0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(decode_head(&head).unwrap(), (5, hash));
        assert_eq!(
            encode_tx_location(1, 2),
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
        );
        assert_eq!(
            decode_tx_location(&encode_tx_location(9, 3)).unwrap(),
            (9, 3)
        );

        let a = Address::repeat_byte(0xaa);
        let key = log_key(&log_address_prefix(&a), 3, 4);
        assert_eq!(key.len(), 33);
        assert_eq!(key[0], LOG_BY_ADDRESS);
        assert_eq!(&key[1..21], a.as_slice());
        assert_eq!(&key[21..], &[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4]);
        assert_eq!(decode_log_key_suffix(&key).unwrap(), (3, 4));
        let key = log_key(&log_topic_prefix(2, &hash), 3, 4);
        assert_eq!(key.len(), 46);
        assert_eq!(&key[..2], &[LOG_BY_TOPIC, 2]);
        assert_eq!(&key[2..34], hash.as_slice());
        assert_eq!(
            decode_log_position(&encode_log_position(5, 6)).unwrap(),
            (5, 6)
        );
    }
}
