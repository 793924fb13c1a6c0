//! Integration tests of `tessera-shard`, in one binary to keep link times down.

mod apply;
mod chain;
mod common;
mod store_crash;
mod store_roundtrip;
