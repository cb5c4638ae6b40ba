//! `cargo xtask parity`: an attention backend against the f64 oracle over a grid of inputs
//! that find bugs (docs/testing.md), plus the cases of reference files.
//!
//! Each grid entry builds q, k, v (and dout) in its dtype, computes the expected values with
//! the oracle from exactly those inputs, and hands the [`Case`] to the same checker the tests
//! use ([`check_case`]), so tolerances are those of docs/attention.md everywhere.

use anyhow::{Context, Result};
use attune_attention::cases::{Backend, Case, CaseResult, Metric, check_case, load_cases};
use attune_tensor::DType;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::Instant;

pub use crate::grid::{GridCase, default_grid, full_grid};

/// Which implementation `--backend` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The CPU flash attention.
    Cpu,
    /// The CUDA kernels on the emulator.
    Emu,
    /// The CUDA kernels on a GPU.
    Cuda,
    /// The f64 oracle itself (checks reference files against Attune's semantics).
    Oracle,
}

impl BackendArg {
    /// The library backend, or `None` for one that is not built yet.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendArg::Cpu => Some(Backend::Flash),
            BackendArg::Oracle => Some(Backend::Oracle),
            BackendArg::Emu => Some(Backend::Emu),
            BackendArg::Cuda => Some(Backend::Cuda),
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            BackendArg::Cpu => "cpu",
            BackendArg::Emu => "emu",
            BackendArg::Cuda => "cuda",
            BackendArg::Oracle => "oracle",
        }
    }
}

/// Exit code for a backend that the flags name but this build does not have.
pub const EXIT_NOT_BUILT: u8 = 2;

/// Reports that a backend is missing and returns exit code 2.
pub fn not_built(b: BackendArg) -> ExitCode {
    eprintln!(
        "backend {} is not built yet: only cpu (the CPU flash attention) and oracle run in this version",
        b.name()
    );
    ExitCode::from(EXIT_NOT_BUILT)
}

/// Options of `cargo xtask parity`.
#[derive(clap::Args)]
pub struct ParityArgs {
    /// Implementation to check.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// A case file (docs/attention.md) whose cases run after the grid; repeatable.
    #[arg(long = "cases", value_name = "FILE")]
    cases: Vec<PathBuf>,
    /// Run the larger grid (minutes to tens of minutes).
    #[arg(long)]
    full: bool,
    /// Skip the built-in grid (only the case files).
    #[arg(long)]
    no_grid: bool,
    /// Only cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Rayon threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// With --backend emu, skip the AddressSanitizer run of the emulated kernels (on by default:
    /// the command re-executes itself with the ASan runtime preloaded).
    #[arg(long)]
    no_sanitize: bool,
}

/// Pass/fail counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases within tolerance.
    pub passed: usize,
    /// Cases outside tolerance or that errored.
    pub failed: usize,
}

const NAME_W: usize = 46;

/// How to read a cell of the table.
pub const LEGEND: &str = "cells: error / bound at the element nearest its bound (f32: atol + rtol*|ref|; \
f16/bf16: max error / (2 * naive low-precision error + 1e-5)); '!' marks the failing tensor";

/// The table header.
pub fn header() -> String {
    format!(
        "{:<NAME_W$} {:<5} {:>19} {:>19} {:>19} {:>19} {:>19}  {} {:>7}",
        "case", "dtype", "out err/tol", "lse err/tol", "dq err/tol", "dk err/tol", "dv err/tol", "result", "time"
    )
}

fn cell(m: Option<&Metric>) -> String {
    match m {
        None => "-".into(),
        Some(m) => format!("{:.2e}/{:.2e}{}", m.worst_err, m.worst_tol, if m.pass { "" } else { "!" }),
    }
}

/// One table row for a result that took `secs`, then a line per failure detail.
pub fn row(r: &CaseResult, secs: f64) -> String {
    let mut name = r.name.clone();
    if name.len() > NAME_W {
        name.truncate(NAME_W - 1);
        name.push('~');
    }
    let mut s = format!(
        "{name:<NAME_W$} {:<5} {:>19} {:>19} {:>19} {:>19} {:>19}  {} {secs:>6.2}s",
        r.dtype.as_str(),
        cell(r.metric("out")),
        cell(r.metric("lse")),
        cell(r.metric("dq")),
        cell(r.metric("dk")),
        cell(r.metric("dv")),
        if r.passed() { "PASS" } else { "FAIL" },
    );
    if let Some(e) = &r.error {
        s += &format!("\n    error: {e}");
    }
    for m in r.metrics.iter().filter(|m| !m.pass) {
        if let Some(n) = &m.note {
            s += &format!("\n    {}: {n}", m.tensor);
        }
    }
    s
}

/// Checks every case on `backend`, `workers` at a time ([`map_ordered`]), writing one row per
/// case in the cases' order. More than one worker pays off on the emulator, whose first use of
/// a kernel variant runs the host compiler on one core for seconds; the CPU kernels use every
/// core themselves, so they run one case at a time.
pub fn run_cases<I>(cases: I, backend: Backend, workers: usize, out: &mut impl Write) -> Result<Summary>
where
    I: IntoIterator<Item = (String, Result<Case>)>,
    I::IntoIter: Send,
{
    let mut sum = Summary::default();
    // Rows time the building of a case (the oracle) and its check together.
    map_ordered(
        cases,
        workers,
        |(name, case)| check_built(name, case, backend),
        |r, secs| {
            if r.passed() {
                sum.passed += 1;
            } else {
                sum.failed += 1;
            }
            writeln!(out, "{}", row(&r, secs))?;
            out.flush()?;
            Ok(())
        },
    )?;
    Ok(sum)
}

/// Runs `work` on every item, `workers` items at a time, and hands each result with its
/// seconds (taking the item from `items` included) to `sink` in the items' order, as soon as
/// it and every item before it are done. Items are taken one at a time under a lock, so a
/// lazy iterator builds them one at a time. One worker runs on this thread (inside the
/// caller's rayon pool).
pub fn map_ordered<T, R, I, W, S>(items: I, workers: usize, work: W, mut sink: S) -> Result<()>
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send,
    R: Send,
    W: Fn(T) -> R + Sync,
    S: FnMut(R, f64) -> Result<()>,
{
    let mut items = items.into_iter();
    if workers <= 1 {
        loop {
            let start = Instant::now();
            let Some(item) = items.next() else { return Ok(()) };
            let r = work(item);
            sink(r, start.elapsed().as_secs_f64())?;
        }
    }
    let source = Mutex::new(items.enumerate());
    let (tx, rx) = mpsc::channel::<(usize, R, f64)>();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            let (tx, source, work) = (tx.clone(), &source, &work);
            s.spawn(move || {
                loop {
                    let start = Instant::now();
                    let next = source.lock().unwrap_or_else(PoisonError::into_inner).next();
                    let Some((i, item)) = next else { break };
                    let r = work(item);
                    if tx.send((i, r, start.elapsed().as_secs_f64())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let (mut done, mut next) = (BTreeMap::new(), 0);
        for (i, r, secs) in rx {
            done.insert(i, (r, secs));
            while let Some((r, secs)) = done.remove(&next) {
                sink(r, secs)?;
                next += 1;
            }
        }
        Ok(())
    })
}

/// The check of a case, or a failed result naming why it could not be built.
fn check_built(name: String, case: Result<Case>, backend: Backend) -> CaseResult {
    match case {
        Ok(c) => check_case(&c, backend),
        Err(e) => CaseResult {
            name,
            dtype: DType::F32,
            backend,
            metrics: Vec::new(),
            error: Some(format!("building the case failed: {e:#}")),
        },
    }
}

/// Runs a grid: seeds are the grid index, so a failing case reproduces from its position.
pub fn run_grid(grid: &[GridCase], backend: Backend, workers: usize, out: &mut impl Write) -> Result<Summary> {
    let cases = grid.iter().enumerate().map(|(i, g)| (g.name(), g.build(1 + i as u64).map_err(Into::into)));
    run_cases(cases, backend, workers, out)
}

/// `cargo xtask parity`.
pub fn run(args: &ParityArgs) -> Result<ExitCode> {
    let device = match args.backend {
        BackendArg::Emu => Some(attune_tensor::Device::Emu),
        BackendArg::Cuda if !attune_tensor::Device::cuda_is_available() => return Ok(crate::op_parity::no_gpu()),
        BackendArg::Cuda => Some(attune_tensor::Device::Cuda(0)),
        _ => None,
    };
    if let Some(device) = device {
        return run_device(args, device);
    }
    let Some(backend) = args.backend.backend() else {
        return Ok(not_built(args.backend));
    };
    if args.no_grid && args.cases.is_empty() {
        anyhow::bail!("nothing to check: --no-grid skips the grid, so name at least one --cases FILE");
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = args.threads {
        builder = builder.num_threads(t);
    }
    let pool = builder.build().context("building the rayon pool")?;
    let keep = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    pool.install(|| -> Result<ExitCode> {
        let start = Instant::now();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut total = Summary::default();
        let mut add = |s: Summary| {
            total.passed += s.passed;
            total.failed += s.failed;
        };
        // Files load first, so a bad path or file fails before minutes of grid.
        let mut files = Vec::new();
        for file in &args.cases {
            let cases = load_cases(file).with_context(|| format!("loading {}", file.display()))?;
            files.push((file, cases.into_iter().filter(|c| keep(&c.name)).collect::<Vec<Case>>()));
        }
        writeln!(
            out,
            "parity: backend {} vs the f64 oracle, {} threads\n{LEGEND}",
            args.backend.name(),
            rayon::current_num_threads()
        )?;
        if !args.no_grid {
            let grid: Vec<GridCase> =
                if args.full { full_grid() } else { default_grid() }.into_iter().filter(|g| keep(&g.name())).collect();
            writeln!(out, "\n{} grid: {} cases\n{}", if args.full { "full" } else { "default" }, grid.len(), header())?;
            add(run_grid(&grid, backend, 1, &mut out)?);
        }
        for (file, cases) in files {
            writeln!(out, "\n{}: {} cases\n{}", file.display(), cases.len(), header())?;
            add(run_cases(cases.into_iter().map(|c| (c.name.clone(), Ok(c))), backend, 1, &mut out)?);
        }
        writeln!(out, "\n({:.1} s)", start.elapsed().as_secs_f64())?;
        writeln!(out, "{} passed, {} failed", total.passed, total.failed)?;
        Ok(if total.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// Cases checked at once on `device`: on the emulator one per core, since most of its time is
/// compiling kernel variants, one core each (crates/cuda/src/emu/module.rs builds different
/// modules at once); one GPU runs one.
pub fn device_workers(device: attune_tensor::Device) -> usize {
    match device {
        attune_tensor::Device::Emu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        _ => 1,
    }
}

/// `--backend emu|cuda`: the tensor-op table, then the attention kernels over the GPU grid
/// ([`crate::gpu_grid`]) and the `--cases` files.
fn run_device(args: &ParityArgs, device: attune_tensor::Device) -> Result<ExitCode> {
    if device == attune_tensor::Device::Emu && !args.no_sanitize && !attune_cuda::emu::sanitizer_runtime_loaded() {
        // ASan must be the first library loaded, so run this command again with it preloaded;
        // the emulator then builds every kernel with -fsanitize=address and reports
        // out-of-bounds global/shared accesses with the kernel's name.
        let env = attune_cuda::emu::sanitizer_env().context("setting up the emulator's sanitizer (install a compiler with AddressSanitizer, or pass --no-sanitize to run the kernels without it)")?;
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let status = std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(env).status()?;
        return Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8));
    }
    let keep = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let start = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let sanitized = attune_cuda::emu::sanitize_requested() && device == attune_tensor::Device::Emu;
    writeln!(
        out,
        "parity: backend {} vs the CPU, {} host threads{}",
        args.backend.name(),
        rayon::current_num_threads(),
        if sanitized { ", kernels under AddressSanitizer" } else { "" }
    )?;
    let (mut passed, mut failed) = crate::op_parity::run(device, &keep, &mut out)?;
    let backend = if device == attune_tensor::Device::Emu { Backend::Emu } else { Backend::Cuda };
    let workers = device_workers(device);
    let mut files = Vec::new();
    for file in &args.cases {
        let cases = load_cases(file).with_context(|| format!("loading {}", file.display()))?;
        files.push((file, cases.into_iter().filter(|c| keep(&c.name)).collect::<Vec<Case>>()));
    }
    writeln!(out, "\nattention kernels on {device} vs the f64 oracle\n{LEGEND}")?;
    let mut add = |s: Summary| {
        passed += s.passed;
        failed += s.failed;
    };
    if !args.no_grid {
        let grid: Vec<GridCase> =
            if args.full { crate::gpu_grid::gpu_full_grid() } else { crate::gpu_grid::gpu_grid() }
                .into_iter()
                .filter(|g| keep(&g.name()))
                .collect();
        writeln!(
            out,
            "\n{} attention grid: {} cases\n{}",
            if args.full { "full" } else { "default" },
            grid.len(),
            header()
        )?;
        add(run_grid(&grid, backend, workers, &mut out)?);
    }
    for (file, cases) in files {
        writeln!(out, "\n{}: {} cases\n{}", file.display(), cases.len(), header())?;
        add(run_cases(cases.into_iter().map(|c| (c.name.clone(), Ok(c))), backend, workers, &mut out)?);
    }
    writeln!(out, "\n({:.1} s)", start.elapsed().as_secs_f64())?;
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_attention::testing::Layout;
    use attune_tensor::{Device, Tensor};

    fn tiny_grid() -> Vec<GridCase> {
        let g = GridCase::new;
        vec![
            g(1, 2, 2, 9, 13, 8).causal(),
            g(1, 4, 2, 11, 11, 16).dtype(DType::F16).bshd().softcap(5.0).outliers(),
            g(1, 2, 1, 12, 14, 8).varlen(&[0, 5, 12], &[0, 9, 14]).dropout(0.3).dtype(DType::BF16),
            g(2, 2, 2, 6, 4, 8).causal().seqlens(&[4, 0]).window(1, -1).fwd_only(),
        ]
    }

    #[test]
    fn tiny_grid_passes_and_counts() {
        let names: Vec<String> = tiny_grid().iter().map(GridCase::name).collect();
        // One worker, and more workers than cases: the same rows, in the grid's order.
        for workers in [1, 3] {
            let mut buf = Vec::new();
            let s = run_grid(&tiny_grid(), Backend::Flash, workers, &mut buf).unwrap();
            let text = String::from_utf8(buf).unwrap();
            assert_eq!(s, Summary { passed: 4, failed: 0 }, "{text}");
            let rows: Vec<&str> = text.lines().filter(|l| l.contains(" PASS ")).collect();
            let row_names: Vec<&str> = rows.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
            assert_eq!(row_names, names, "{workers} workers: {text}");
            // Forward-only rows show '-' for the gradients.
            let fwd = text.lines().find(|l| l.contains("_fwd")).unwrap();
            assert_eq!(fwd.split_whitespace().filter(|c| *c == "-").count(), 3, "{fwd}");
        }
    }

    #[test]
    fn grid_inputs_have_the_asked_layout_and_dtype() {
        let c = tiny_grid()[1].build(3).unwrap();
        assert_eq!(c.q.dims(), &[1, 4, 11, 16]);
        assert!(!c.q.is_contiguous(), "bshd inputs are permuted views");
        assert_eq!(c.q.stride(), &[11 * 4 * 16, 16, 4 * 16, 1]);
        assert_eq!((c.q.dtype(), c.k.dtype(), c.k.dims()), (DType::F16, DType::F16, &[1, 2, 11, 16][..]));
        // Outlier rows (attune_attention::testing::normals): query rows 2 and 7 of a head are
        // 20x larger in scale than row 1 on average; the view reads them through the layout.
        let q = c.q.contiguous().unwrap().to_f64_vec().unwrap();
        let norm = |row: usize| q[row * 16..][..16].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm(2) > 5.0 * norm(1) && norm(7) > 5.0 * norm(1));
    }

    #[test]
    fn failures_and_build_errors_are_counted() {
        let mut c = tiny_grid()[0].build(1).unwrap();
        c.out = c.out.affine_for_test(1e-3);
        let bad = GridCase::new(1, 3, 2, 4, 4, 8); // 3 heads over 2 kv heads: invalid
        let items = vec![("perturbed".to_string(), Ok(c)), (bad.name(), bad.build(2).map_err(Into::into))];
        let mut buf = Vec::new();
        let s = run_cases(items, Backend::Flash, 2, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(s, Summary { passed: 0, failed: 2 }, "{text}");
        assert!(text.contains("out: first failure") && text.contains("multiple of heads_kv"), "{text}");
    }

    trait Perturb {
        fn affine_for_test(&self, add: f64) -> Tensor;
    }
    impl Perturb for Tensor {
        fn affine_for_test(&self, add: f64) -> Tensor {
            let v: Vec<f64> = self.to_f64_vec().unwrap().into_iter().map(|x| x + add).collect();
            Tensor::from_vec(v, self.dims(), &Device::Cpu).unwrap()
        }
    }

    #[test]
    fn default_grid_covers_every_feature() {
        let g = default_grid();
        let any = |f: &dyn Fn(&GridCase) -> bool| g.iter().any(f);
        assert!(
            any(&|c| c.params.causal) && any(&|c| c.params.window.is_some()) && any(&|c| c.params.softcap.is_some())
        );
        assert!(any(&|c| c.heads_q == 4 * c.heads_kv) && any(&|c| c.heads_kv == 1));
        assert!(
            any(&|c| c.params.seqlens_k.is_some())
                && any(&|c| c.params.cu_seqlens.is_some())
                && any(&|c| c.params.dropout.is_some())
        );
        assert!(any(&|c| c.outliers) && any(&|c| c.layout == Layout::Bshd) && any(&|c| c.seq_q != c.seq_k));
        for s in [1, 17, 127, 1000] {
            assert!(any(&|c| c.seq_q == s), "seq {s}");
        }
        for d in [8, 64, 128, 256] {
            assert!(any(&|c| c.head_dim == d), "head dim {d}");
        }
        for dt in [DType::F32, DType::F16, DType::BF16] {
            assert!(any(&|c| c.dtype == dt));
        }
        assert!(full_grid().len() > 2 * g.len());
    }
}
