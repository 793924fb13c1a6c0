//! What a shard block carries through consensus: the proposer's timestamp, its transactions in
//! full, and a checkpoint, the state root the proposer computed after an earlier block.
//!
//! Execution is deferred: a block is executed once it is final, so a block cannot carry its own
//! post-state root. Instead it attests the root of an earlier block (DESIGN.md section 3 step 5)
//! that every validator voting for it must have computed identically. A validator that cannot
//! confirm the checkpoint yet (it has not executed that far) waits; one that computed a different
//! root refuses to vote; and a finalized block whose checkpoint differs from the local root means
//! this node's state diverged from a quorum's, which halts the node.

use alloy_primitives::{Bytes, B256};
use serde::{Deserialize, Serialize};
use tessera_primitives::codec::{self, DecodeError};

/// The oldest block a checkpoint may name, counted back from the block carrying it. A proposer
/// further behind than this cannot propose a block others accept, so a stale leader times out
/// rather than dragging the attested root arbitrarily far back.
pub const MAX_CHECKPOINT_LAG: u64 = 64;

/// Largest encoded payload accepted from the network (a full block of small transactions is
/// well below this).
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// The state root after block `number` of this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub number: u64,
    pub state_root: B256,
}

/// A shard block as proposed and finalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Unix seconds chosen by the proposer; applied as at least the parent's timestamp.
    pub timestamp: u64,
    pub checkpoint: Checkpoint,
    /// Raw EIP-2718 transactions, in block order.
    pub transactions: Vec<Bytes>,
}

impl Payload {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes untrusted bytes, bounded by [`MAX_PAYLOAD_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode_bounded(bytes, MAX_PAYLOAD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let payload = Payload {
            timestamp: 7,
            checkpoint: Checkpoint {
                number: 3,
                state_root: B256::repeat_byte(9),
            },
            transactions: vec![Bytes::from_static(&[2, 1, 0]), Bytes::new()],
        };
        let bytes = payload.encode();
        assert_eq!(Payload::decode(&bytes).unwrap(), payload);
        assert!(Payload::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Payload::decode(&[0xff; 40]).is_err());
    }
}
