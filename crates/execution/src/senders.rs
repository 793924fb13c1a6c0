//! Sender recovery, once per transaction: a cache by transaction hash that the mempool fills at
//! admission and block import reads, and a parallel pre-pass for the transactions it misses.
//!
//! A transaction hash covers the signature, so a hash names exactly one sender. Recovering a
//! secp256k1 public key costs tens of microseconds, more than executing a plain transfer, so it
//! is done before execution and never again for re-executions or for later lookups.

use crate::tx::{decode_envelope, recover_sender, RecoveredTx, TxError};
use alloy_consensus::TxEnvelope;
use alloy_primitives::{map::HashMap, Address, B256};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// Recovered senders by transaction hash, bounded: a shard that fills up starts over.
#[derive(Debug)]
pub struct SenderCache {
    shards: Box<[Mutex<HashMap<B256, Address>>]>,
    per_shard: usize,
}

impl Default for SenderCache {
    /// Room for about a million senders (roughly 60 MiB).
    fn default() -> Self {
        Self::with_capacity(1 << 20)
    }
}

impl SenderCache {
    pub fn with_capacity(capacity: usize) -> Self {
        SenderCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: &B256) -> MutexGuard<'_, HashMap<B256, Address>> {
        // The hash is uniformly distributed already.
        let i = usize::from(hash[0]) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, hash: &B256) -> Option<Address> {
        self.shard(hash).get(hash).copied()
    }

    /// Records a sender recovered elsewhere (the mempool, at admission).
    pub fn insert(&self, hash: B256, sender: Address) {
        let mut shard = self.shard(&hash);
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(hash, sender);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The transaction with its sender, recovered only if the cache does not know it.
    pub fn recover(&self, envelope: TxEnvelope) -> Result<RecoveredTx, TxError> {
        let hash = *envelope.tx_hash();
        let sender = match self.get(&hash) {
            Some(sender) => sender,
            None => {
                let sender = recover_sender(&envelope)?;
                self.insert(hash, sender);
                sender
            }
        };
        Ok(RecoveredTx {
            envelope,
            sender,
            hash,
        })
    }

    /// Decodes EIP-2718 bytes and recovers the sender through the cache.
    pub fn decode(&self, bytes: &[u8]) -> Result<RecoveredTx, TxError> {
        self.recover(decode_envelope(bytes)?)
    }

    /// Recovers the senders of a block's transactions on up to `threads` threads, in order.
    pub fn recover_all(
        &self,
        envelopes: Vec<TxEnvelope>,
        threads: usize,
    ) -> Vec<Result<RecoveredTx, TxError>> {
        let threads = threads.clamp(1, envelopes.len().max(1));
        if threads == 1 {
            return envelopes.into_iter().map(|e| self.recover(e)).collect();
        }
        let chunk = envelopes.len().div_ceil(threads);
        let mut chunks: Vec<Vec<TxEnvelope>> = Vec::with_capacity(threads);
        let mut rest = envelopes.into_iter();
        loop {
            let next: Vec<TxEnvelope> = rest.by_ref().take(chunk).collect();
            if next.is_empty() {
                break;
            }
            chunks.push(next);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|c| {
                    s.spawn(move || c.into_iter().map(|e| self.recover(e)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("sender recovery does not panic"))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxLegacy};
    use alloy_primitives::{Signature, U256};
    use secp256k1::{ecdsa::RecoverableSignature, Message, SecretKey};

    fn signed(nonce: u64) -> TxEnvelope {
        let tx = TxLegacy {
            chain_id: Some(1),
            nonce,
            gas_price: 1,
            gas_limit: 21_000,
            ..Default::default()
        };
        let key = SecretKey::from_secret_bytes([0x11; 32]).unwrap();
        let (recid, compact) = RecoverableSignature::sign_ecdsa_recoverable(
            Message::from_digest(tx.signature_hash().0),
            &key,
        )
        .serialize_compact();
        let signature = Signature::new(
            U256::from_be_slice(&compact[..32]),
            U256::from_be_slice(&compact[32..]),
            recid.to_u8() == 1,
        );
        TxEnvelope::from(tx.into_signed(signature))
    }

    #[test]
    fn parallel_pre_pass_matches_one_by_one_and_fills_the_cache() {
        let envelopes: Vec<_> = (0..37).map(signed).collect();
        let expected: Vec<_> = envelopes
            .iter()
            .map(|e| recover_sender(e).unwrap())
            .collect();
        let cache = SenderCache::default();
        let recovered = cache.recover_all(envelopes.clone(), 4);
        let senders: Vec<_> = recovered
            .iter()
            .map(|r| r.as_ref().unwrap().sender)
            .collect();
        assert_eq!(senders, expected);
        assert_eq!(cache.len(), 37);
        let hashes: Vec<_> = envelopes.iter().map(|e| *e.tx_hash()).collect();
        let in_order: Vec<_> = recovered.iter().map(|r| r.as_ref().unwrap().hash).collect();
        assert_eq!(in_order, hashes);
    }

    #[test]
    fn a_cached_sender_is_used_without_recovery() {
        let envelope = signed(0);
        let cache = SenderCache::default();
        // A sender planted under the hash shows the cache is consulted first.
        let planted = Address::repeat_byte(9);
        cache.insert(*envelope.tx_hash(), planted);
        assert_eq!(cache.recover(envelope).unwrap().sender, planted);
    }

    #[test]
    fn bounded() {
        let cache = SenderCache::with_capacity(SHARDS);
        for i in 0..10_000u64 {
            cache.insert(alloy_primitives::keccak256(i.to_be_bytes()), Address::ZERO);
        }
        assert!(cache.len() <= SHARDS);
    }
}
