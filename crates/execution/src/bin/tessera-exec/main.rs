//! `tessera-exec`: runs external Ethereum conformance fixtures through Tessera's own execution
//! path (transaction decoding, sender recovery, the block executor) and compares the results.
//!
//! Every subcommand prints one line per failure and ends with `N passed, N failed, N skipped`;
//! it exits non-zero when anything failed.

mod blocks;
mod statetest;

use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser, Debug)]
#[command(
    name = "tessera-exec",
    version,
    about = "Run Ethereum conformance fixtures through Tessera's executor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run GeneralStateTests JSON files or folders of them.
    Statetest {
        /// Files or folders (searched recursively for `*.json`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run a folder of mainnet blocks (`blocks/<N>/{block,pre_state,bytecodes}.json` and
    /// `block_hashes.json`) and check gasUsed, logsBloom and receiptsRoot against the headers.
    Blocks { dir: PathBuf },
}

/// Counts of a run, printed as the closing line.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    fn finish(&self) -> ExitCode {
        println!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tally = match cli.command {
        Command::Statetest { paths } => statetest::run(&paths),
        Command::Blocks { dir } => blocks::run(&dir),
    };
    tally.finish()
}
