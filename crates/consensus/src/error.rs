use crate::types::ValidatorIndex;

/// Why a configuration, a recovery or a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// A validator set needs at least one member.
    #[error("the validator set is empty")]
    EmptyValidatorSet,
    /// Two validators with one key would let one signer count twice towards a quorum.
    #[error("validator {second} has the same key as validator {first}")]
    DuplicateValidator {
        /// Index of the first occurrence.
        first: ValidatorIndex,
        /// Index of the repeated key.
        second: ValidatorIndex,
    },
    /// The validator set does not fit the `u32` index space.
    #[error("the validator set has {0} members, more than a u32 index can name")]
    TooManyValidators(usize),
    /// The engine's own signing key must belong to the validator set.
    #[error("the signing key is not in the validator set")]
    NotAValidator,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// Bytes that are not a message.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// A signer index outside the validator set.
    #[error("signer {0} is not in the validator set")]
    UnknownSigner(ValidatorIndex),
    /// A proposal signed by someone other than the view's leader, or for view 0.
    #[error("proposal for view {view} is not signed by its leader {leader}")]
    NotLeader {
        /// View of the proposal.
        view: u64,
        /// Leader of that view.
        leader: ValidatorIndex,
    },
    /// The genesis view has no proposals, votes or certificates.
    #[error("messages for view 0 do not exist")]
    GenesisView,
    /// A signature that does not verify.
    #[error("bad signature from validator {0}")]
    BadSignature(ValidatorIndex),
    /// A certificate with fewer distinct signers than a quorum, or more than the set.
    #[error("certificate has {got} signatures, needs between {need} and {max}")]
    SignerCount {
        /// Signatures in the certificate.
        got: usize,
        /// The quorum.
        need: usize,
        /// The validator count.
        max: usize,
    },
    /// Certificate signers must be strictly increasing, which also rules out duplicates.
    #[error("certificate signers are not strictly increasing at signer {0}")]
    UnorderedSigners(ValidatorIndex),
    /// At least one signature of a certificate does not verify.
    #[error("a certificate signature does not verify")]
    BadCertificate,
    /// Evidence whose two messages do not conflict.
    #[error("the two messages do not conflict")]
    NotConflicting,
}
