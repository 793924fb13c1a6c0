//! Genesis and keys: the chain parameters every node of a network must agree on (chain id,
//! fork rules, shard count, gas limit, base-fee floor, initial allocations), and the
//! deterministic development accounts derived from the well-known test mnemonic, as anvil and
//! `reth --dev` use, so that every Ethereum tool works against `tessera dev` out of the box.
//!
//! The genesis also lists each shard's validators (ed25519 public keys); [`node`] is a
//! validator's configuration file, and [`keys`] generates and stores validator keys.

mod genesis;
pub mod keys;
pub mod node;

pub use genesis::{Genesis, GenesisAccount, GenesisError, DEV_CHAIN_ID};
pub use node::{ConfigError, NodeConfig};
