//! Ethereum forks as a chain rule. Most map directly onto a revm `SpecId`; Constantinople
//! (EIP-1283 net gas metering for SSTORE, withdrawn by Petersburg before mainnet activation) has
//! no `SpecId` of its own and is Petersburg with EIP-1283's SSTORE pricing restored.

use revm::{
    context::CfgEnv,
    context_interface::{cfg::GasId, Host},
    interpreter::{
        instructions::host::sstore_with_gas_accounting, interpreter_types::InterpreterTypes,
        InstructionContext, InstructionExecResult, InstructionResult,
    },
    primitives::hardfork::SpecId,
};
use std::{fmt, str::FromStr};

/// An Ethereum fork whose rules the executor applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fork {
    Frontier,
    Homestead,
    Tangerine,
    SpuriousDragon,
    Byzantium,
    Constantinople,
    Petersburg,
    Istanbul,
    Berlin,
    London,
    Merge,
    Shanghai,
    Cancun,
    Prague,
    Osaka,
}

impl Fork {
    /// All forks, oldest first.
    pub const ALL: [Fork; 15] = [
        Fork::Frontier,
        Fork::Homestead,
        Fork::Tangerine,
        Fork::SpuriousDragon,
        Fork::Byzantium,
        Fork::Constantinople,
        Fork::Petersburg,
        Fork::Istanbul,
        Fork::Berlin,
        Fork::London,
        Fork::Merge,
        Fork::Shanghai,
        Fork::Cancun,
        Fork::Prague,
        Fork::Osaka,
    ];

    /// The revm rule set this fork runs on.
    pub fn spec_id(self) -> SpecId {
        match self {
            Fork::Frontier => SpecId::FRONTIER,
            Fork::Homestead => SpecId::HOMESTEAD,
            Fork::Tangerine => SpecId::TANGERINE,
            Fork::SpuriousDragon => SpecId::SPURIOUS_DRAGON,
            Fork::Byzantium => SpecId::BYZANTIUM,
            Fork::Constantinople | Fork::Petersburg => SpecId::PETERSBURG,
            Fork::Istanbul => SpecId::ISTANBUL,
            Fork::Berlin => SpecId::BERLIN,
            Fork::London => SpecId::LONDON,
            Fork::Merge => SpecId::MERGE,
            Fork::Shanghai => SpecId::SHANGHAI,
            Fork::Cancun => SpecId::CANCUN,
            Fork::Prague => SpecId::PRAGUE,
            Fork::Osaka => SpecId::OSAKA,
        }
    }

    /// The name used in genesis files and in the Ethereum test suites.
    pub fn name(self) -> &'static str {
        match self {
            Fork::Frontier => "Frontier",
            Fork::Homestead => "Homestead",
            Fork::Tangerine => "Tangerine",
            Fork::SpuriousDragon => "SpuriousDragon",
            Fork::Byzantium => "Byzantium",
            Fork::Constantinople => "Constantinople",
            Fork::Petersburg => "Petersburg",
            Fork::Istanbul => "Istanbul",
            Fork::Berlin => "Berlin",
            Fork::London => "London",
            Fork::Merge => "Merge",
            Fork::Shanghai => "Shanghai",
            Fork::Cancun => "Cancun",
            Fork::Prague => "Prague",
            Fork::Osaka => "Osaka",
        }
    }

    /// Adjusts revm's configuration for rules that differ from the fork's `SpecId`.
    pub(crate) fn configure(self, cfg: &mut CfgEnv) {
        // Blob limits per transaction: the block maximum in Cancun (EIP-4844) and Prague
        // (EIP-7691), an explicit per-transaction cap from Osaka (EIP-7594).
        cfg.max_blobs_per_tx = match self {
            Fork::Cancun | Fork::Osaka => Some(6),
            Fork::Prague => Some(9),
            _ => None,
        };
        if self == Fork::Constantinople {
            // EIP-1283 prices: SLOAD_GAS 200 charged up front, the rest of SSTORE_SET (20000)
            // and SSTORE_RESET (5000) when a clean slot changes, refunds of the same sizes
            // when a dirty slot returns to its original value.
            cfg.gas_params.override_gas([
                (GasId::sstore_static(), 200),
                (GasId::sstore_set_without_load_cost(), 19_800),
                (GasId::sstore_reset_without_cold_load_cost(), 4_800),
                (GasId::sstore_set_refund(), 19_800),
                (GasId::sstore_reset_refund(), 4_800),
                (GasId::sstore_clearing_slot_refund(), 15_000),
            ]);
        }
    }

    /// Whether SSTORE must be replaced by [`eip1283_sstore`].
    pub(crate) fn needs_eip1283_sstore(self) -> bool {
        self == Fork::Constantinople
    }
}

/// SSTORE with EIP-1283 net gas metering: the EIP-2200 accounting without its stipend sentry
/// (revm applies the sentry only from Istanbul on, and this runs with Petersburg's spec).
pub(crate) fn eip1283_sstore<W: InterpreterTypes, H: Host + ?Sized>(
    context: InstructionContext<'_, H, W>,
) -> InstructionExecResult {
    sstore_with_gas_accounting(context, |ctx, _target, load| {
        let gas = ctx
            .host
            .gas_params()
            .sstore_dynamic_gas(true, &load.data, load.is_cold);
        if !ctx.interpreter.gas.record_regular_cost(gas) {
            return Err(InstructionResult::OutOfGas);
        }
        let refund = ctx.host.gas_params().sstore_refund(true, &load.data);
        ctx.interpreter.gas.record_refund(refund);
        Ok(())
    })
}

/// A fork name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fork {0:?}")]
pub struct UnknownFork(pub String);

impl FromStr for Fork {
    type Err = UnknownFork;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fork::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFork(s.to_string()))
    }
}

impl fmt::Display for Fork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
