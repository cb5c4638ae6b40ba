//! `cargo xtask`: Attune's developer commands.
//!
//! - `bench [--filter F] [--threads N] [--jemalloc]`: runs the criterion benches of
//!   `attune-benches` and prints one table: median time, throughput, and the ratio of each
//!   `attune` bench to its peer measured in the same run (for example `gemm_direct`).

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Attune's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the criterion benches and summarise them with peer ratios.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
    }
}
