//! The `tessera` binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Per-thread heaps: the executor's workers allocate and free per transaction, and glibc's
/// shared arenas make them contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tessera", version, about = "A sharded EVM blockchain node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One process, prefunded dev accounts, JSON-RPC on 127.0.0.1:8545.
    Dev(tessera_node::dev::DevArgs),
    /// Write a local network: validator keys, genesis, and DIR/node<i>/node.toml.
    Testnet(tessera_node::testnet::TestnetArgs),
    /// Run a validator from its home directory (written by `tessera testnet`).
    Run(tessera_node::run::RunArgs),
}

fn main() -> ExitCode {
    tessera_execution::allocator::keep_freed_memory();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Dev(args) => runtime
            .block_on(tessera_node::dev::run(args))
            .map_err(Into::into),
        Command::Run(args) => runtime
            .block_on(tessera_node::run::run(args))
            .map_err(Into::into),
        Command::Testnet(args) => match tessera_node::testnet::write(&args) {
            Ok(homes) => {
                for home in homes {
                    println!("{}", home.display());
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
