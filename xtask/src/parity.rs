//! `cargo xtask parity`: an attention backend against the f64 oracle over a grid of inputs
//! that find bugs (GUIDE.md §3), plus the cases of reference files.
//!
//! Each grid entry builds q, k, v (and dout) in its dtype, computes the expected values with
//! the oracle from exactly those inputs, and hands the [`Case`] to the same checker the tests
//! use ([`check_case`]), so tolerances are those of GUIDE.md §3 everywhere.

use anyhow::{Context, Result};
use attune_attention::cases::{Backend, Case, CaseResult, Metric, Tolerances, check_case, load_cases};
use attune_attention::{AttentionParams, oracle};
use attune_tensor::{DType, Device, Rng, Tensor};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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
            BackendArg::Emu | BackendArg::Cuda => None,
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
    /// A case file (GUIDE.md §3) whose cases run after the grid; repeatable.
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
}

/// One grid entry: the geometry and features of a generated case.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCase {
    /// Input dtype.
    pub dtype: DType,
    /// Batch.
    pub batch: usize,
    /// Query heads.
    pub heads_q: usize,
    /// Key/value heads.
    pub heads_kv: usize,
    /// Query length (packed total with varlen).
    pub seq_q: usize,
    /// Key length (packed total with varlen).
    pub seq_k: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Causal mask.
    pub causal: bool,
    /// Sliding window.
    pub window: Option<(i64, i64)>,
    /// Softcap.
    pub softcap: Option<f64>,
    /// Key padding lengths.
    pub seqlens_k: Option<Vec<usize>>,
    /// Packed sequences `(cu_seqlens_q, cu_seqlens_k)`; batch must be 1.
    pub varlen: Option<(Vec<usize>, Vec<usize>)>,
    /// Dropout probability.
    pub dropout: Option<f64>,
    /// Every 5th query row scaled by 20 (rows of large logits).
    pub outliers: bool,
    /// Inputs as `(batch, seq, heads, dim)` memory seen through a permuted view.
    pub bshd: bool,
    /// Check the backward pass too.
    pub backward: bool,
}

impl GridCase {
    /// A plain f32 case `(b, hq, hkv, sq, sk, d)` with forward and backward.
    pub fn new(b: usize, hq: usize, hkv: usize, sq: usize, sk: usize, d: usize) -> Self {
        GridCase {
            dtype: DType::F32,
            batch: b,
            heads_q: hq,
            heads_kv: hkv,
            seq_q: sq,
            seq_k: sk,
            head_dim: d,
            causal: false,
            window: None,
            softcap: None,
            seqlens_k: None,
            varlen: None,
            dropout: None,
            outliers: false,
            bshd: false,
            backward: true,
        }
    }
    fn dtype(mut self, dt: DType) -> Self {
        self.dtype = dt;
        self
    }
    fn causal(mut self) -> Self {
        self.causal = true;
        self
    }
    fn window(mut self, l: i64, r: i64) -> Self {
        self.window = Some((l, r));
        self
    }
    fn softcap(mut self, c: f64) -> Self {
        self.softcap = Some(c);
        self
    }
    fn seqlens(mut self, l: &[usize]) -> Self {
        self.seqlens_k = Some(l.to_vec());
        self
    }
    fn varlen(mut self, q: &[usize], k: &[usize]) -> Self {
        self.varlen = Some((q.to_vec(), k.to_vec()));
        self
    }
    fn dropout(mut self, p: f64) -> Self {
        self.dropout = Some(p);
        self
    }
    fn outliers(mut self) -> Self {
        self.outliers = true;
        self
    }
    fn bshd(mut self) -> Self {
        self.bshd = true;
        self
    }
    fn fwd_only(mut self) -> Self {
        self.backward = false;
        self
    }

    /// A readable, unique-enough name: geometry then features.
    pub fn name(&self) -> String {
        let mut n = format!("b{}h{}", self.batch, self.heads_q);
        if self.heads_kv != self.heads_q {
            n += &format!("kv{}", self.heads_kv);
        }
        n += &format!("_q{}k{}_d{}", self.seq_q, self.seq_k, self.head_dim);
        if self.causal {
            n += "_causal";
        }
        if let Some((l, r)) = self.window {
            n += &format!("_win{l},{r}");
        }
        if let Some(c) = self.softcap {
            n += &format!("_cap{c}");
        }
        if let Some(l) = &self.seqlens_k {
            n += &format!("_pad{}", l.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
        }
        if self.varlen.is_some() {
            n += "_varlen";
        }
        if let Some(p) = self.dropout {
            n += &format!("_drop{p}");
        }
        if self.outliers {
            n += "_x20";
        }
        if self.bshd {
            n += "_bshd";
        }
        if !self.backward {
            n += "_fwd";
        }
        n
    }

    fn params(&self, seed: u64) -> AttentionParams {
        let mut p = AttentionParams::new().causal(self.causal);
        p.window = self.window;
        p.softcap = self.softcap;
        p.seqlens_k = self.seqlens_k.clone();
        p.cu_seqlens = self.varlen.clone();
        if let Some(dp) = self.dropout {
            p = p.dropout(dp, seed ^ 0xD50F, 7);
        }
        p
    }

    /// Random inputs `(batch, heads, seq, dim)` in the case's dtype, optionally viewed from
    /// `(batch, seq, heads, dim)` memory, with outlier rows when asked.
    fn input(&self, rng: &mut Rng, heads: usize, seq: usize, outliers: bool) -> Result<Tensor> {
        let (b, d) = (self.batch, self.head_dim);
        let dims = if self.bshd { [b, seq, heads, d] } else { [b, heads, seq, d] };
        let mut x = rng.randn(dims, DType::F64, &Device::Cpu)?.to_f64_vec()?;
        if outliers {
            for (i, v) in x.iter_mut().enumerate() {
                let s = if self.bshd { (i / (d * heads)) % seq } else { (i / d) % seq };
                if s % 5 == 0 {
                    *v *= 20.0;
                }
            }
        }
        let t = Tensor::from_vec(x, dims, &Device::Cpu)?.to_dtype(self.dtype)?;
        Ok(if self.bshd { t.permute([0, 2, 1, 3])? } else { t })
    }

    /// Builds the case: inputs from `seed`, expected values from the oracle.
    pub fn build(&self, seed: u64) -> Result<Case> {
        let mut rng = Rng::new(seed);
        let q = self.input(&mut rng, self.heads_q, self.seq_q, self.outliers)?;
        let k = self.input(&mut rng, self.heads_kv, self.seq_k, false)?;
        let v = self.input(&mut rng, self.heads_kv, self.seq_k, false)?;
        let params = self.params(seed);
        let f = oracle::forward(&q, &k, &v, &params)?;
        let (mut dout, mut dq, mut dk, mut dv) = (None, None, None, None);
        if self.backward {
            let g = rng.randn(q.dims(), self.dtype, &Device::Cpu)?;
            let b = oracle::backward(&q, &k, &v, &g, &params)?;
            (dout, dq, dk, dv) = (Some(g), Some(b.dq), Some(b.dk), Some(b.dv));
        }
        Ok(Case {
            name: self.name(),
            q,
            k,
            v,
            params,
            out: f.out,
            lse: Some(f.lse),
            dout,
            dq,
            dk,
            dv,
            tol: self.tolerances(),
        })
    }

    /// GUIDE.md §3's f32 tolerances are for unit-scale inputs. Outlier rows multiply q by 20,
    /// and dk = scale * sum_i dS_ij q_i inherits that factor, so its absolute tolerance does
    /// too. Low-precision cases keep the relative FlashAttention criterion.
    fn tolerances(&self) -> Tolerances {
        if self.outliers && self.dtype == DType::F32 {
            Tolerances { atol_dk: Some(20.0 * attune_attention::cases::DEFAULT_ATOL), ..Tolerances::default() }
        } else {
            Tolerances::default()
        }
    }
}

/// The default grid: every feature at least once, in f32, f16 and bf16, forward and backward;
/// under two minutes in release on two cores.
pub fn default_grid() -> Vec<GridCase> {
    let g = GridCase::new;
    let (f16, bf16) = (DType::F16, DType::BF16);
    let mut v = vec![
        // Lengths that are no multiple of any tile, seq_q != seq_k both ways.
        g(2, 4, 4, 1, 1, 64),
        g(2, 4, 4, 17, 17, 64),
        g(2, 4, 4, 127, 127, 64),
        g(2, 4, 4, 127, 127, 64).causal(),
        g(1, 2, 2, 1000, 1000, 64).causal(),
        g(1, 2, 2, 1000, 1000, 64),
        g(2, 4, 4, 1, 300, 64).causal(),
        g(2, 8, 2, 1, 1000, 128).causal().fwd_only(), // decoding
        g(2, 4, 4, 17, 127, 64).causal(),
        g(2, 4, 4, 127, 17, 64).causal(), // rows 0..110 see no key
        g(2, 4, 4, 33, 100, 64),
        // Windows, alone and with causal.
        g(2, 4, 4, 127, 127, 64).window(16, 0),
        g(2, 4, 4, 127, 127, 64).window(8, 8),
        g(2, 4, 4, 127, 127, 64).window(-1, 4),
        g(2, 4, 4, 100, 127, 64).window(32, -1).causal(),
        // Softcap, with logits large enough that the cap matters.
        g(2, 4, 4, 127, 127, 64).softcap(5.0).outliers(),
        g(2, 4, 4, 127, 127, 64).softcap(30.0).causal(),
        // GQA 4:1 and MQA.
        g(2, 8, 2, 127, 127, 64).causal(),
        g(2, 8, 1, 127, 90, 64),
        // Key padding (a zero-length entry: every row masked) and packed varlen.
        g(2, 4, 4, 127, 127, 64).seqlens(&[127, 50]),
        g(2, 4, 4, 127, 127, 64).seqlens(&[0, 90]).causal(),
        g(1, 4, 2, 144, 172, 64).varlen(&[0, 17, 17, 144], &[0, 30, 45, 172]).causal(),
        g(1, 4, 4, 100, 80, 64).varlen(&[0, 1, 60, 100], &[0, 40, 41, 80]),
        // Dropout with the shared Philox stream.
        g(2, 4, 4, 127, 127, 64).dropout(0.1),
        g(2, 4, 2, 127, 127, 64).dropout(0.5).causal(),
        // Outlier rows, and non-contiguous (B, S, H, D) inputs.
        g(2, 4, 4, 127, 127, 64).outliers(),
        g(2, 8, 2, 127, 127, 64).causal().bshd(),
        g(2, 4, 4, 33, 77, 64).seqlens(&[77, 20]).bshd(),
    ];
    // Long sequences: several key blocks per row, masks that cut blocks, masked rows.
    v.extend([
        g(1, 4, 1, 1000, 1000, 64).causal().window(256, 0),
        g(2, 2, 2, 1000, 1000, 64).causal().seqlens(&[1000, 617]),
        g(1, 8, 2, 1000, 1000, 128).causal().bshd(),
        g(1, 2, 2, 1000, 513, 64).causal(),
        g(1, 2, 2, 513, 1000, 64).softcap(20.0).outliers(),
        g(1, 4, 4, 1000, 1000, 64).dropout(0.1).causal(),
        g(1, 4, 2, 1000, 1000, 64).varlen(&[0, 300, 301, 1000], &[0, 500, 520, 1000]).causal().bshd(),
    ]);
    // Head dims at every size the kernels may specialise, in every dtype.
    for dt in [DType::F32, f16, bf16] {
        for d in [8, 16, 32, 40, 80, 96, 128, 160, 192, 256] {
            v.push(g(1, 2, 2, 65, 65, d).causal().dtype(dt));
        }
    }
    // Low precision: each feature family once per dtype.
    for dt in [f16, bf16] {
        v.extend([
            g(2, 4, 4, 127, 127, 64).dtype(dt),
            g(2, 8, 2, 127, 127, 64).causal().bshd().dtype(dt),
            g(2, 4, 4, 127, 127, 64).window(16, 0).softcap(30.0).dtype(dt),
            g(2, 4, 4, 127, 127, 64).seqlens(&[127, 0]).causal().dtype(dt),
            g(1, 4, 4, 144, 172, 128).varlen(&[0, 17, 17, 144], &[0, 30, 45, 172]).dtype(dt),
            g(2, 4, 4, 127, 127, 64).outliers().dtype(dt),
            g(2, 4, 4, 127, 127, 64).dropout(0.2).dtype(dt),
            g(1, 2, 1, 1000, 1000, 64).causal().dtype(dt),
            g(2, 4, 4, 1, 1, 256).dtype(dt),
            g(1, 8, 2, 1000, 1000, 128).window(128, 128).bshd().dtype(dt),
            g(2, 4, 4, 127, 300, 64).seqlens(&[300, 77]).dropout(0.1).causal().dtype(dt),
        ]);
    }
    v
}

/// The larger grid of `--full`: a product of dtypes, masks, lengths, head dims, head ratios and
/// layouts, plus the default grid.
pub fn full_grid() -> Vec<GridCase> {
    let mut v = default_grid();
    let lens = [(1, 1), (1, 300), (17, 17), (127, 127), (17, 300), (300, 17), (257, 1000), (1000, 1000)];
    let mut n = 0usize;
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for mask in 0..5 {
            for &(sq, sk) in &lens {
                for d in [8, 64, 128, 256] {
                    n += 1;
                    // Long sequences with the widest heads cost the oracle most: keep them lean.
                    let big = sq * sk * d > 300 * 300 * 128;
                    if big && d > 128 {
                        continue;
                    }
                    let (hq, hkv) = [(4, 4), (8, 2), (4, 1)][n % 3];
                    let b = if big { 1 } else { 2 };
                    let mut c = GridCase::new(b, hq, hkv, sq, sk, d).dtype(dt);
                    c = match mask {
                        0 => c,
                        1 => c.causal(),
                        2 => c.window(32, 8),
                        3 => c.window(-1, 16).softcap(20.0),
                        _ => {
                            let lens = if b == 1 { vec![sk - sk / 3] } else { vec![sk, sk / 3] };
                            c.seqlens(&lens).causal()
                        }
                    };
                    if n.is_multiple_of(4) {
                        c = c.bshd();
                    }
                    if n.is_multiple_of(7) {
                        c = c.outliers();
                    }
                    if n.is_multiple_of(11) {
                        c = c.dropout(0.15);
                    }
                    v.push(c);
                }
            }
        }
    }
    v
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

/// Checks every case on `backend`, writing one row per case as it finishes.
pub fn run_cases(
    cases: impl IntoIterator<Item = (String, Result<Case>)>,
    backend: Backend,
    out: &mut impl Write,
) -> Result<Summary> {
    let mut sum = Summary::default();
    // Rows time the building of a case (the oracle) and its check together.
    let mut last = Instant::now();
    for (name, case) in cases {
        let r = match case {
            Ok(c) => check_case(&c, backend),
            Err(e) => CaseResult {
                name,
                dtype: DType::F32,
                backend,
                metrics: Vec::new(),
                error: Some(format!("building the case failed: {e:#}")),
            },
        };
        if r.passed() {
            sum.passed += 1;
        } else {
            sum.failed += 1;
        }
        writeln!(out, "{}", row(&r, last.elapsed().as_secs_f64()))?;
        last = Instant::now();
        out.flush()?;
    }
    Ok(sum)
}

/// Runs a grid: seeds are the grid index, so a failing case reproduces from its position.
pub fn run_grid(grid: &[GridCase], backend: Backend, out: &mut impl Write) -> Result<Summary> {
    let cases = grid.iter().enumerate().map(|(i, g)| (g.name(), g.build(1 + i as u64)));
    run_cases(cases, backend, out)
}

/// `cargo xtask parity`.
pub fn run(args: &ParityArgs) -> Result<ExitCode> {
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
            add(run_grid(&grid, backend, &mut out)?);
        }
        for (file, cases) in files {
            writeln!(out, "\n{}: {} cases\n{}", file.display(), cases.len(), header())?;
            add(run_cases(cases.into_iter().map(|c| (c.name.clone(), Ok(c))), backend, &mut out)?);
        }
        writeln!(out, "\n({:.1} s)", start.elapsed().as_secs_f64())?;
        writeln!(out, "{} passed, {} failed", total.passed, total.failed)?;
        Ok(if total.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut buf = Vec::new();
        let s = run_grid(&tiny_grid(), Backend::Flash, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(s, Summary { passed: 4, failed: 0 }, "{text}");
        assert_eq!(text.lines().filter(|l| l.contains(" PASS ")).count(), 4, "{text}");
        // Forward-only rows show '-' for the gradients.
        let fwd = text.lines().find(|l| l.contains("_fwd")).unwrap();
        assert_eq!(fwd.split_whitespace().filter(|c| *c == "-").count(), 3, "{fwd}");
    }

    #[test]
    fn grid_inputs_have_the_asked_layout_and_dtype() {
        let c = tiny_grid()[1].build(3).unwrap();
        assert_eq!(c.q.dims(), &[1, 4, 11, 16]);
        assert!(!c.q.is_contiguous(), "bshd inputs are permuted views");
        assert_eq!(c.q.stride(), &[11 * 4 * 16, 16, 4 * 16, 1]);
        assert_eq!((c.q.dtype(), c.k.dtype(), c.k.dims()), (DType::F16, DType::F16, &[1, 2, 11, 16][..]));
        // Outlier rows: query row 0 is 20x larger in scale than row 1 on average.
        let q = c.q.to_f64_vec().unwrap();
        let norm = |row: usize| q[row * 16..][..16].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm(0) > 5.0 * norm(1) && norm(5) > 5.0 * norm(1));
    }

    #[test]
    fn failures_and_build_errors_are_counted() {
        let mut c = tiny_grid()[0].build(1).unwrap();
        c.out = c.out.affine_for_test(1e-3);
        let bad = GridCase::new(1, 3, 2, 4, 4, 8); // 3 heads over 2 kv heads: invalid
        let items = vec![("perturbed".to_string(), Ok(c)), (bad.name(), bad.build(2))];
        let mut buf = Vec::new();
        let s = run_cases(items, Backend::Flash, &mut buf).unwrap();
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
        assert!(any(&|c| c.causal) && any(&|c| c.window.is_some()) && any(&|c| c.softcap.is_some()));
        assert!(any(&|c| c.heads_q == 4 * c.heads_kv) && any(&|c| c.heads_kv == 1));
        assert!(any(&|c| c.seqlens_k.is_some()) && any(&|c| c.varlen.is_some()) && any(&|c| c.dropout.is_some()));
        assert!(any(&|c| c.outliers) && any(&|c| c.bshd) && any(&|c| c.seq_q != c.seq_k));
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
