//! Node configuration and genesis for Tessera: typed structs with defaults and validation, read
//! from TOML with CLI-flag and `TESSERA_*` environment overrides.
//!
//! Not written yet: the node that consumes it arrives with `tessera dev`. Until then the fork
//! and chain id are chosen by the callers of `tessera-execution` directly.
