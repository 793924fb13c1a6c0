use crate::error::ConsensusError;
use crate::types::ValidatorSet;

/// View timers, in milliseconds of the driver's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a view may take before this node nullifies it, after a notarized view.
    pub base_ms: u64,
    /// Growth of the timeout per consecutive nullified view, in percent (150 means x1.5), so
    /// that a network slower than `base_ms` still gets views long enough to finish.
    pub growth_percent: u32,
    /// Upper bound of the grown timeout.
    pub max_ms: u64,
    /// After a view timed out: how often to re-send this node's nullify vote and the
    /// certificates that justify its view, and to re-request missing blocks, so that lost
    /// messages cannot stall the network.
    pub retry_ms: u64,
}

impl Default for Timeouts {
    /// Values for validators on one LAN or region: a view needs three message delays plus
    /// block building and checking, far below one second there.
    fn default() -> Self {
        Timeouts {
            base_ms: 1_000,
            growth_percent: 150,
            max_ms: 30_000,
            retry_ms: 1_000,
        }
    }
}

impl Timeouts {
    /// The timeout of a view entered after `failures` consecutive nullified views:
    /// `base * growth^failures`, capped at `max`.
    pub fn view_timeout(&self, failures: u32) -> u64 {
        let mut timeout = self.base_ms;
        for _ in 0..failures {
            if timeout >= self.max_ms {
                break;
            }
            timeout = timeout.saturating_mul(u64::from(self.growth_percent)) / 100;
        }
        timeout.min(self.max_ms)
    }

    pub(crate) fn validate(&self) -> Result<(), ConsensusError> {
        if self.base_ms == 0 || self.retry_ms == 0 {
            return Err(ConsensusError::InvalidConfig(
                "base_ms and retry_ms must be positive",
            ));
        }
        if self.growth_percent < 100 {
            return Err(ConsensusError::InvalidConfig(
                "growth_percent below 100 would shrink timeouts",
            ));
        }
        if self.max_ms < self.base_ms {
            return Err(ConsensusError::InvalidConfig("max_ms is below base_ms"));
        }
        Ok(())
    }
}

/// Everything an engine needs besides its key and its recovered state.
#[derive(Clone, Debug)]
pub struct Config {
    /// Domain of every signature, e.g. chain id and shard id encoded by the node: a vote for one
    /// chain or shard does not verify on another.
    pub namespace: Vec<u8>,
    /// The validators, in the order all nodes agree on.
    pub validators: ValidatorSet,
    /// View timers.
    pub timeouts: Timeouts,
    /// How many finalized heights below the last finalized block the engine keeps, to serve
    /// peers that fetch them while catching up.
    pub retain: u64,
}
