//! Keys: secp256k1 account keys derived from a BIP-39 mnemonic along BIP-44's Ethereum path
//! `m/44'/60'/0'/0/i`, the derivation every wallet uses; and ed25519 validator keys, generated
//! from the OS's randomness and stored as hex files.
//!
//! Only the seed derivation and BIP-32 child derivation are implemented; the mnemonic's words
//! and checksum are not validated, since the node only ever derives from mnemonics it was given
//! (the dev default among them).

use alloy_primitives::{keccak256, Address, B256};
use hmac::{Hmac, Mac};
use secp256k1::{PublicKey, Scalar, SecretKey};
use sha2::Sha512;

/// The mnemonic of the well-known development accounts (anvil, hardhat, reth --dev).
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// How many development accounts `tessera dev` funds.
pub const DEV_ACCOUNTS: usize = 20;

const HARDENED: u32 = 1 << 31;

/// Why a validator key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("validator key {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("validator key {path}: expected 64 hex digits (an ed25519 secret key)")]
    Format { path: std::path::PathBuf },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// A fresh ed25519 validator secret key from the operating system's randomness.
pub fn generate_validator_secret() -> Result<[u8; 32], KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(secret)
}

/// The single validator of `tessera dev`'s shard `shard`. Public on purpose: the dev chain has
/// no secrets.
pub fn dev_validator_secret(shard: u16) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"tessera dev validator");
    hasher.update(shard.to_be_bytes());
    hasher.finalize().into()
}

/// The ed25519 public key of a validator secret key.
pub fn validator_public_key(secret: &[u8; 32]) -> B256 {
    B256::from(
        ed25519_dalek::SigningKey::from_bytes(secret)
            .verifying_key()
            .to_bytes(),
    )
}

/// Writes a validator secret key as hex, readable only by the owner.
pub fn write_validator_key(path: &std::path::Path, secret: &[u8; 32]) -> Result<(), KeyError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(file, "{}", hex::encode(secret)).map_err(io)
}

/// Reads a validator secret key written by [`write_validator_key`].
pub fn read_validator_key(path: &std::path::Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = || KeyError::Format {
        path: path.to_path_buf(),
    };
    let bytes = hex::decode(text.trim().trim_start_matches("0x")).map_err(|_| format())?;
    bytes.try_into().map_err(|_| format())
}

/// A funded development account and its private key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevAccount {
    pub address: Address,
    pub secret: B256,
}

impl std::fmt::Debug for DevAccount {
    // Keys stay out of debug output; they are printed on purpose, once, at `tessera dev` start.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccount")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The Ethereum address of a secret key: the last 20 bytes of keccak256 of the public key.
pub fn address_of(secret: &SecretKey) -> Address {
    let public = PublicKey::from_secret_key(secret).serialize_uncompressed();
    Address::from_slice(&keccak256(&public[1..])[12..])
}

/// The first `count` accounts of `mnemonic` (empty passphrase) on `m/44'/60'/0'/0/i`.
pub fn derive_accounts(mnemonic: &str, count: usize) -> Vec<DevAccount> {
    let seed = bip39_seed(mnemonic, "");
    let (mut key, mut chain) = master_key(&seed);
    for index in [44 | HARDENED, 60 | HARDENED, HARDENED, 0] {
        (key, chain) = child_key(&key, &chain, index);
    }
    (0..count as u32)
        .map(|i| {
            let (secret, _) = child_key(&key, &chain, i);
            DevAccount {
                address: address_of(&secret),
                secret: B256::from(secret.to_secret_bytes()),
            }
        })
        .collect()
}

/// BIP-39: PBKDF2-HMAC-SHA512 over the mnemonic, salted with "mnemonic" ‖ passphrase, 2048
/// rounds. The inputs are ASCII here, so NFKD normalisation changes nothing.
fn bip39_seed(mnemonic: &str, passphrase: &str) -> [u8; 64] {
    let mut seed = [0u8; 64];
    let salt = format!("mnemonic{passphrase}");
    pbkdf2::pbkdf2_hmac::<Sha512>(mnemonic.as_bytes(), salt.as_bytes(), 2048, &mut seed);
    seed
}

fn hmac_sha512(key: &[u8], data: &[&[u8]]) -> [u8; 64] {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in data {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn split(i: [u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut left = [0u8; 32];
    let mut right = [0u8; 32];
    left.copy_from_slice(&i[..32]);
    right.copy_from_slice(&i[32..]);
    (left, right)
}

fn master_key(seed: &[u8]) -> (SecretKey, [u8; 32]) {
    let (key, chain) = split(hmac_sha512(b"Bitcoin seed", &[seed]));
    // A master key out of range has probability below 2^-127; BIP-32 says to give up then.
    let key = SecretKey::from_secret_bytes(key).expect("BIP-32 master key in range");
    (key, chain)
}

/// BIP-32 private child derivation (CKDpriv).
fn child_key(parent: &SecretKey, chain: &[u8; 32], index: u32) -> (SecretKey, [u8; 32]) {
    let index_bytes = index.to_be_bytes();
    let i = if index & HARDENED != 0 {
        let secret = parent.to_secret_bytes();
        hmac_sha512(chain, &[&[0u8], &secret, &index_bytes])
    } else {
        let public = PublicKey::from_secret_key(parent).serialize();
        hmac_sha512(chain, &[&public, &index_bytes])
    };
    let (tweak, child_chain) = split(i);
    // Out-of-range tweaks or a zero child key have probability below 2^-127 (BIP-32 would skip
    // to the next index); the dev accounts are known not to hit them.
    let tweak = Scalar::from_be_bytes(tweak).expect("BIP-32 tweak in range");
    let child = parent.add_tweak(&tweak).expect("BIP-32 child key valid");
    (child, child_chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256};

    #[test]
    fn dev_mnemonic_gives_the_well_known_accounts() {
        let accounts = derive_accounts(DEV_MNEMONIC, DEV_ACCOUNTS);
        assert_eq!(accounts.len(), 20);
        assert_eq!(
            accounts[0].address,
            address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        assert_eq!(
            accounts[0].secret,
            b256!("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
        );
        assert_eq!(
            accounts[1].address,
            address!("70997970C51812dc3A010C7d01b50e0d17dc79C8")
        );
        assert_eq!(
            accounts[19].address,
            address!("8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199")
        );
        assert_eq!(
            accounts[19].secret,
            b256!("df57089febbacf7ba0bc227dafbffa9fc08a93fdc68e1e42411a14efcf23656e")
        );
    }

    #[test]
    fn validator_key_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("tessera-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("validator.key");
        let secret = generate_validator_secret().unwrap();
        assert_ne!(secret, generate_validator_secret().unwrap());
        write_validator_key(&path, &secret).unwrap();
        assert_eq!(read_validator_key(&path).unwrap(), secret);
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            read_validator_key(&path),
            Err(KeyError::Format { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(
            validator_public_key(&dev_validator_secret(0)),
            validator_public_key(&dev_validator_secret(1))
        );
    }

    #[test]
    fn another_mnemonic_gives_other_accounts() {
        let other = derive_accounts(
            "test test test test test test test test test test test test",
            1,
        );
        assert_ne!(
            other[0].address,
            address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
    }
}
