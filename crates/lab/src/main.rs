//! `attune`: train and evaluate attention models.
//!
//! `attune train` with no flags trains the default 2-layer attention model on MQAR on the CPU
//! (or the GPU when one is present) and prints where its checkpoint and plots are.
//! This file parses and dispatches; the flags become a run config in `attune_lab::flags`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use attune_lab::config::SavedConfig;
use attune_lab::flags::TrainFlags;
use attune_lab::runstate::OnDamage;
use attune_lab::train::{Ending, LoopOptions, train};
use clap::{Args, Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, mimalloc.h of v2 and
/// v3; libmimalloc-sys gives it no name). A test checks it reads v3's default (options.c).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the pages a training step frees for the next step instead of handing them back to
/// the OS a second later (mimalloc v3's default): every step allocates the same activations again,
/// and a returned page is faulted in and cleared by the kernel on its next use (6-7% of the
/// d256 4-layer step in `perf`). The process keeps its peak footprint, like PyTorch's caching
/// allocators and jemalloc's 10 s decay (docs/model.md, "Memory").
fn retain_freed_pages() {
    // SAFETY: mi_option_set only stores the value of a valid option index.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[derive(Parser)]
#[command(name = "attune", version, about = "Train and evaluate attention models (Attune)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (default: MQAR with a 2-layer attention model).
    Train(Box<TrainFlags>),
    /// Measure a trained model on fresh held-out data.
    Eval(EvalArgs),
    /// Search configurations: samplers, pruners and a study directory (docs/search.md).
    Search(Box<attune_lab::search::SearchFlags>),
    /// Join a shared study as one of its workers (docs/search.md "Shared studies").
    Worker(attune_lab::search::worker::WorkerFlags),
    /// List, show or export the studies in a storage.
    #[command(subcommand)]
    Study(attune_lab::search::study_cmd::StudyCommand),
    /// Time training steps on random tokens (the peer of benches/peers/torch_train.py bench).
    BenchStep(attune_lab::bench::BenchStepArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory written by `attune train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Held-out batches (fresh data from the test stream).
    #[arg(long, default_value_t = 32)]
    batches: usize,
    /// CPU threads.
    #[arg(long)]
    threads: Option<usize>,
}

/// Sizes the global pool (`--threads`; all cores when absent) and runs `f` on one of its
/// workers: `train`, `eval` and `bench-step` run this way, so the timed steps run as training
/// does. Every op that splits its work over the pool then runs a share on the calling worker;
/// from a thread outside the pool each such op would hand all its work to the pool and sleep
/// until woken, which cost the Fashion-MNIST ViT 13% of its training throughput
/// (docs/model.md, "Threads").
fn on_pool<T: Send>(threads: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting the thread count")?;
    }
    rayon::scope(|_| f())
}

fn main() -> Result<()> {
    retain_freed_pages();
    match Cli::parse().command {
        Command::Train(args) => on_pool(args.threads, || run_train(*args)),
        Command::Eval(args) => on_pool(args.threads, || run_eval(args)),
        Command::BenchStep(args) => on_pool(args.threads, || attune_lab::bench::run(&args)),
        Command::Search(args) => attune_lab::search::run(&args),
        Command::Worker(args) => attune_lab::search::worker::run(&args),
        Command::Study(c) => attune_lab::search::study_cmd::run(&c),
    }
}

fn run_train(a: TrainFlags) -> Result<()> {
    let cfg = a.run_config()?;
    let dir = a.run_dir(&cfg);
    let opts = LoopOptions {
        resume: a.resume.is_some(),
        interrupt_after: a.interrupt_after,
        quiet: a.quiet,
        no_plots: a.no_plots,
        overwrite: a.overwrite,
        report_json: a.report_json,
        init_from: a.init_from.clone(),
        distributed: a.distributed_options(),
    };
    if let Some(folds) = attune_lab::crossval::folds_to_run(&cfg) {
        if a.distributed {
            anyhow::bail!("--distributed trains one run: give it one fold with --fold <i> (one job per fold)");
        }
        if a.resume.is_some() {
            anyhow::bail!("--resume continues one run: give it a fold's directory, {}/fold-<i>", dir.display());
        }
        if let Some(s) = attune_lab::crossval::cross_validate(&cfg, folds, &dir, &opts)? {
            println!(
                "attune: {} {folds}-fold cross-validation: test accuracy {:.2}% ± {:.2}% ({} texts, {:.1}s of training); {}/summary.json",
                s.total.task,
                100.0 * s.total.eval_accuracy,
                100.0 * s.total.eval_metrics.get("accuracy_std").copied().unwrap_or(f64::NAN),
                s.total.eval_targets,
                s.total.elapsed_s,
                dir.display()
            );
        }
        return Ok(());
    }
    match train(cfg, &dir, &opts)? {
        Ending::Interrupted { .. } | Ending::Follower { .. } => Ok(()),
        // stdout belongs to the search protocol; summary.json holds the outcome.
        Ending::Done(_) if a.report_json => Ok(()),
        Ending::Done(s) => {
            println!(
                "attune: {} finished after {} steps in {:.1}s ({}): held-out {} accuracy {:.2}%, loss {:.4} ({} targets)",
                s.task,
                s.steps,
                s.elapsed_s,
                s.stopped,
                s.eval_split,
                100.0 * s.eval_accuracy,
                s.eval_loss,
                s.eval_targets
            );
            if s.skipped_steps > 0 {
                println!(
                    "attune: {} steps skipped for a non-finite loss or gradient (--on-nonfinite skip)",
                    s.skipped_steps
                );
            }
            println!("attune: checkpoint {}/model.safetensors, metrics {}/metrics.jsonl", dir.display(), dir.display());
            if !a.no_plots {
                // The RAM draws its glimpse paths where the transformer draws attention.
                let model_plot = if s.task.starts_with("ram-") { "glimpses" } else { "attention" };
                println!("attune: plots {}/plots/{{loss,accuracy,{model_plot}}}.png", dir.display());
            }
            Ok(())
        }
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    // Evaluation never falls back: a damaged newest checkpoint is an error naming the file.
    let saved = SavedConfig::load(&a.checkpoint, OnDamage::Refuse)?;
    let report = attune_lab::evaluate::evaluate_checkpoint(&a.checkpoint, &saved, a.batches)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The work handed to `on_pool` runs on a worker of the global pool, not on the caller.
    #[test]
    fn on_pool_runs_the_work_on_a_pool_worker() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is not a worker");
        let index = on_pool(None, || Ok(rayon::current_thread_index())).unwrap();
        assert!(index.is_some_and(|i| i < rayon::current_num_threads()), "{index:?}");
    }

    /// The index names the purge delay: it reads mimalloc v3's default for it (1000 ms; the
    /// options next to it default to 1 and 0) unless the environment sets it, and takes the
    /// value set.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and writes of a valid option index.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            }
            retain_freed_pages();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}
