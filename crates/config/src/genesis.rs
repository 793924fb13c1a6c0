//! The genesis of a network: what every node must agree on before the first block.

use crate::keys::{
    derive_accounts, dev_validator_secret, validator_public_key, DEV_ACCOUNTS, DEV_MNEMONIC,
};
use alloy_primitives::{address, keccak256, Address, Bytes, B256, U256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tessera_execution::{ChainRules, Fork};
use tessera_primitives::{shard_of, Account, AccountChange, ShardId, StateDiff, EMPTY_CODE_HASH};

/// Chain id of `tessera dev`, the one local development tools expect (anvil, hardhat).
pub const DEV_CHAIN_ID: u64 = 31337;

/// 10,000 ether (10^22 wei), what each development account starts with.
const DEV_BALANCE: U256 = U256::from_limbs([0x19e0_c9ba_b240_0000, 0x21e, 0, 0]);

/// Why a genesis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis: {0}")]
    Invalid(String),
    #[error("genesis JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An account in the initial state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub balance: U256,
    #[serde(default)]
    pub nonce: u64,
    #[serde(default, skip_serializing_if = "is_empty_code")]
    pub code: Bytes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<U256, U256>,
}

fn is_empty_code(code: &Bytes) -> bool {
    code.is_empty()
}

/// Chain parameters and initial state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Genesis {
    pub chain_id: u64,
    /// Ethereum fork whose execution rules every shard applies.
    #[serde(with = "fork_name")]
    pub fork: Fork,
    pub num_shards: u16,
    /// Gas limit of every block of every shard.
    pub gas_limit: u64,
    /// Base fee of the first block after genesis.
    pub base_fee: u64,
    /// The EIP-1559 base fee never falls below this, so that an idle chain does not end up
    /// with a base fee of a few wei.
    pub min_base_fee: u64,
    pub timestamp: u64,
    /// Receives the priority fees of every block (a chain parameter until validators have
    /// addresses of their own).
    pub fee_recipient: Address,
    pub alloc: BTreeMap<Address, GenesisAccount>,
    /// The ed25519 public keys of each shard's validators (entry `i` for shard `i`), in the
    /// order that gives them their index in consensus.
    pub validators: Vec<Vec<B256>>,
}

impl Genesis {
    /// The development chain: Prague rules, 30M gas blocks, 1 gwei base fee (also the floor),
    /// and the 20 well-known dev accounts with 10,000 ETH each.
    pub fn dev(num_shards: u16) -> Self {
        let alloc = derive_accounts(DEV_MNEMONIC, DEV_ACCOUNTS)
            .into_iter()
            .map(|a| {
                (
                    a.address,
                    GenesisAccount {
                        balance: DEV_BALANCE,
                        nonce: 0,
                        code: Bytes::new(),
                        storage: BTreeMap::new(),
                    },
                )
            })
            .collect();
        Genesis {
            chain_id: DEV_CHAIN_ID,
            fork: Fork::Prague,
            num_shards,
            gas_limit: 30_000_000,
            base_fee: 1_000_000_000,
            min_base_fee: 1_000_000_000,
            timestamp: 0,
            fee_recipient: address!("000000000000000000000000000000000000fee0"),
            alloc,
            validators: (0..num_shards)
                .map(|shard| vec![validator_public_key(&dev_validator_secret(shard))])
                .collect(),
        }
    }

    /// Identifies this genesis: keccak256 of its JSON form. Nodes of one network share it; it
    /// separates the signatures of different networks.
    pub fn hash(&self) -> B256 {
        keccak256(self.to_json())
    }

    /// The validators of `shard`.
    pub fn shard_validators(&self, shard: ShardId) -> &[B256] {
        self.validators
            .get(usize::from(shard.0))
            .map_or(&[], Vec::as_slice)
    }

    /// Checks the parameters make a usable chain.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let fail = |m: String| Err(GenesisError::Invalid(m));
        if self.num_shards == 0 {
            return fail("numShards must be at least 1".into());
        }
        if self.gas_limit < 21_000 {
            return fail(format!(
                "gasLimit {} is below the 21000 a transfer needs",
                self.gas_limit
            ));
        }
        if self.base_fee < self.min_base_fee {
            return fail(format!(
                "baseFee {} is below minBaseFee {}",
                self.base_fee, self.min_base_fee
            ));
        }
        if self.validators.len() != usize::from(self.num_shards) {
            return fail(format!(
                "validators lists {} shards, numShards is {}",
                self.validators.len(),
                self.num_shards
            ));
        }
        for (shard, keys) in self.validators.iter().enumerate() {
            if keys.is_empty() {
                return fail(format!("shard {shard} has no validators"));
            }
            let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
            if distinct.len() != keys.len() {
                return fail(format!("shard {shard} lists a validator key twice"));
            }
            if let Some(bad) = keys
                .iter()
                .find(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0).is_err())
            {
                return fail(format!("shard {shard}: {bad} is not an ed25519 public key"));
            }
        }
        if self.fork < Fork::London {
            return fail(format!(
                "fork {} predates EIP-1559 (London), which Tessera's fee market needs",
                self.fork
            ));
        }
        Ok(())
    }

    pub fn from_json(json: &str) -> Result<Self, GenesisError> {
        let genesis: Genesis = serde_json::from_str(json)?;
        genesis.validate()?;
        Ok(genesis)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serializes")
    }

    /// The execution rules of every shard.
    pub fn rules(&self) -> ChainRules {
        ChainRules {
            chain_id: self.chain_id,
            fork: self.fork,
        }
    }

    /// The initial state of `shard`: the allocations whose address the shard owns.
    pub fn shard_alloc(&self, shard: ShardId) -> StateDiff {
        let mut diff = StateDiff::default();
        for (address, account) in &self.alloc {
            if shard_of(address, self.num_shards) != shard {
                continue;
            }
            let code_hash = if account.code.is_empty() {
                EMPTY_CODE_HASH
            } else {
                let hash = keccak256(&account.code);
                diff.codes.insert(hash, account.code.clone());
                hash
            };
            diff.accounts.insert(
                *address,
                AccountChange {
                    info: Some(Account {
                        nonce: account.nonce,
                        balance: account.balance,
                        code_hash,
                    }),
                    storage_cleared: true,
                    storage: account.storage.iter().map(|(k, v)| (*k, *v)).collect(),
                },
            );
        }
        diff
    }
}

mod fork_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use tessera_execution::Fork;

    pub(super) fn serialize<S: Serializer>(fork: &Fork, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(fork)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fork, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_genesis_funds_twenty_accounts_with_ten_thousand_ether() {
        let genesis = Genesis::dev(1);
        genesis.validate().unwrap();
        assert_eq!(genesis.alloc.len(), 20);
        let ether = U256::from(10u64).pow(U256::from(18));
        for account in genesis.alloc.values() {
            assert_eq!(account.balance, U256::from(10_000) * ether);
        }
        assert_eq!(genesis.shard_alloc(ShardId(0)).accounts.len(), 20);
    }

    #[test]
    fn json_round_trip_and_validation() {
        let genesis = Genesis::dev(2);
        let back = Genesis::from_json(&genesis.to_json()).unwrap();
        assert_eq!(back, genesis);
        let split: usize = (0..2)
            .map(|s| genesis.shard_alloc(ShardId(s)).accounts.len())
            .sum();
        assert_eq!(split, 20);

        let mut bad = genesis.clone();
        bad.num_shards = 0;
        assert!(Genesis::from_json(&bad.to_json()).is_err());
        let mut bad = genesis.clone();
        bad.validators[1].clear();
        assert!(Genesis::from_json(&bad.to_json()).is_err());
        let mut bad = genesis.clone();
        let first = bad.validators[0][0];
        bad.validators[0].push(first);
        assert!(Genesis::from_json(&bad.to_json()).is_err());
        assert_ne!(genesis.hash(), Genesis::dev(1).hash());
        let json = genesis.to_json().replace("\"Prague\"", "\"Nonsense\"");
        assert!(Genesis::from_json(&json).is_err());
    }
}
