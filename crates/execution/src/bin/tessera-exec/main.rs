//! `tessera-exec`: runs external Ethereum conformance fixtures through Tessera's own execution
//! path (transaction decoding, sender recovery, the block executor) and compares the results.
//!
//! Every subcommand prints one line per failure and ends with `N passed, N failed, N skipped`;
//! it exits non-zero when anything failed.

mod bench;
mod blocks;
mod statetest;

use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

/// The node's allocator, so that the executor (and the baseline beside it, in the same process)
/// are measured as the node runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        #[command(flatten)]
        parallel: ParallelArgs,
    },
    /// Run a folder of mainnet blocks (`blocks/<N>/{block,pre_state,bytecodes}.json` and
    /// `block_hashes.json`) and check gasUsed, logsBloom and receiptsRoot against the headers.
    Blocks {
        dir: PathBuf,
        #[command(flatten)]
        parallel: ParallelArgs,
    },
    /// Time a plain revm loop, the sequential executor and Block-STM on synthetic and mainnet
    /// workloads; every run's final state is checked against the plain loop's.
    Bench(bench::Args),
}

/// Also run each case through Block-STM and require the same results as the sequential path.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ParallelArgs {
    /// Run Block-STM (on every block, however small) besides the sequential executor and
    /// compare receipts, gas, logs and the full state diff.
    #[arg(long)]
    pub parallel: bool,
    /// Block-STM worker threads.
    #[arg(long, default_value_t = 2, requires = "parallel")]
    pub threads: usize,
    /// Block-STM over batches of transactions (what large blocks run) instead of per
    /// transaction.
    #[arg(long, requires = "parallel")]
    pub batched: bool,
}

impl ParallelArgs {
    /// The configuration to compare against the sequential executor, if asked to.
    pub fn config(self) -> Option<tessera_execution::ParallelConfig> {
        self.parallel.then(|| {
            if self.batched {
                tessera_execution::ParallelConfig::batched(self.threads)
            } else {
                tessera_execution::ParallelConfig::always(self.threads)
            }
        })
    }
}

/// How many parallel runs fell back to the sequential executor, and why.
#[derive(Debug, Default)]
pub struct Fallbacks(pub std::collections::BTreeMap<&'static str, usize>);

impl Fallbacks {
    pub fn note(&mut self, stats: &tessera_execution::ParallelStats) {
        if let Some(why) = stats.fallback {
            *self.0.entry(why).or_default() += 1;
        }
    }

    pub fn print(&self, ran: usize) {
        let fell_back: usize = self.0.values().sum();
        println!(
            "parallel: {} of {ran} ran on Block-STM, {fell_back} fell back to sequential",
            ran - fell_back
        );
        for (why, n) in &self.0 {
            println!("  fallback ({n}): {why}");
        }
    }
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
    tessera_execution::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let tally = match cli.command {
        Command::Statetest { paths, parallel } => statetest::run(&paths, parallel.config()),
        Command::Blocks { dir, parallel } => blocks::run(&dir, parallel.config()),
        Command::Bench(args) => return bench::run(&args),
    };
    tally.finish()
}
