//! The EIP-1559 base fee of the next block, from its parent.

use tessera_primitives::Header;

/// At most this fraction (1/8) of the base fee is added or removed per block.
const BASE_FEE_CHANGE_DENOMINATOR: u128 = 8;
/// The gas target is the gas limit divided by this.
const ELASTICITY_MULTIPLIER: u64 = 2;

/// The base fee of the block after `parent`: up by at most 12.5% when the parent used more gas
/// than the target (half the limit), down by at most 12.5% when less, never below `min`.
/// Integer arithmetic exactly as EIP-1559 specifies, then the floor.
pub fn next_base_fee(parent: &Header, min: u64) -> u64 {
    let target = parent.gas_limit / ELASTICITY_MULTIPLIER;
    let base = parent.base_fee as u128;
    let next = if target == 0 || parent.gas_used == target {
        base
    } else if parent.gas_used > target {
        let excess = (parent.gas_used - target) as u128;
        base + (base * excess / target as u128 / BASE_FEE_CHANGE_DENOMINATOR).max(1)
    } else {
        let shortfall = (target - parent.gas_used) as u128;
        base - base * shortfall / target as u128 / BASE_FEE_CHANGE_DENOMINATOR
    };
    u64::try_from(next).unwrap_or(u64::MAX).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(gas_used: u64, base_fee: u64) -> Header {
        Header {
            shard: Default::default(),
            number: 1,
            parent_hash: Default::default(),
            timestamp: 0,
            beneficiary: Default::default(),
            gas_limit: 30_000_000,
            gas_used,
            base_fee,
            state_root: Default::default(),
            transactions_root: Default::default(),
            receipts_root: Default::default(),
            logs_bloom: Default::default(),
        }
    }

    #[test]
    fn follows_eip1559() {
        let gwei = 1_000_000_000;
        assert_eq!(next_base_fee(&parent(15_000_000, gwei), 0), gwei);
        assert_eq!(next_base_fee(&parent(30_000_000, gwei), 0), 1_125_000_000);
        assert_eq!(next_base_fee(&parent(0, gwei), 0), 875_000_000);
        assert_eq!(next_base_fee(&parent(22_500_000, gwei), 0), 1_062_500_000);
        // An increase is at least one wei.
        assert_eq!(next_base_fee(&parent(15_000_001, 7), 0), 8);
    }

    #[test]
    fn never_below_the_floor() {
        assert_eq!(next_base_fee(&parent(0, 1_000), 990), 990);
        assert_eq!(next_base_fee(&parent(0, 1_000), 0), 875);
    }
}
