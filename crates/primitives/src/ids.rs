use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a shard, `0..num_shards`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ShardId(pub u16);

/// Height of a block within one shard's chain; genesis is height 0.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Height(pub u64);

/// Consensus round within one height.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Round(pub u64);

impl Height {
    /// The next height.
    pub fn next(self) -> Self {
        Height(self.0 + 1)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard that owns `addr`: contiguous ranges of the address space by its first two bytes,
/// so that a shard can later be split in two by range.
pub fn shard_of(addr: &alloy_primitives::Address, num_shards: u16) -> ShardId {
    let prefix = u16::from_be_bytes([addr[0], addr[1]]) as u32;
    ShardId(((prefix * num_shards as u32) >> 16) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    #[test]
    fn shard_of_splits_ranges() {
        let mut a = [0u8; 20];
        assert_eq!(shard_of(&Address::from(a), 4), ShardId(0));
        a[0] = 0x40;
        assert_eq!(shard_of(&Address::from(a), 4), ShardId(1));
        a[0] = 0xff;
        a[1] = 0xff;
        assert_eq!(shard_of(&Address::from(a), 4), ShardId(3));
        assert_eq!(shard_of(&Address::from(a), 1), ShardId(0));
    }
}
