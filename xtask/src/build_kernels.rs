//! `cargo xtask build-kernels [--arch sm_80,sm_90] [--files F,..] [--json FILE]`: compiles
//! every kernel module variant with NVRTC to PTX for each arch, assembles it with the
//! installed ptxas (`-arch=sm_XX -v`), and prints per entry the registers, spills, shared and
//! constant memory and the theoretical occupancy at its block size (static figures: no GPU is
//! needed, docs/benchmarks.md). Exits non-zero on any spill or compile error.

use crate::occupancy::{ArchLimits, occupancy};
use crate::ptxas::{self, FunctionResources};
use anyhow::{Context, Result, bail};
use attune_cuda::nvrtc::{self, Target};
use attune_cuda::{ModuleSpec, toolchain};
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Options of `cargo xtask build-kernels`.
#[derive(clap::Args, Debug)]
pub struct BuildKernelsArgs {
    /// Architectures, comma-separated (sm_80 and sm_90 have occupancy limits).
    #[arg(long, default_value = "sm_80,sm_90", value_delimiter = ',')]
    arch: Vec<String>,
    /// Only these kernel files (paths under kernels/, e.g. test/nvrtc_smoke.cu); files under
    /// kernels/test/ are skipped unless named here.
    #[arg(long, value_delimiter = ',')]
    files: Vec<String>,
    /// Also write the table as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Attention kernels for every head_dim they support (`attune_attention::supports`) instead of the
    /// parity grid's head dims.
    #[arg(long)]
    all_head_dims: bool,
}

/// A module variant: its entries' launch sizes, and the one arch it is for (tile tables that
/// differ per arch), or `None` for every arch.
pub type Variant = (ModuleSpec, Vec<EntryLaunch>, Option<u32>);

/// One entry of a module variant and the block size it is launched with.
#[derive(Debug, Clone)]
pub struct EntryLaunch {
    /// The `extern "C"` entry name.
    pub entry: String,
    /// Threads per block.
    pub block_threads: u32,
    /// Dynamic shared memory per block, bytes.
    pub dynamic_smem: u32,
}

impl EntryLaunch {
    /// `entry` launched with `block_threads` threads and no dynamic shared memory.
    pub fn new(entry: &str, block_threads: u32) -> EntryLaunch {
        EntryLaunch { entry: entry.to_string(), block_threads, dynamic_smem: 0 }
    }

    /// With `bytes` of dynamic shared memory.
    pub fn with_dynamic_smem(mut self, bytes: u32) -> EntryLaunch {
        self.dynamic_smem = bytes;
        self
    }
}

/// Block size assumed for entries of a module listed without entries.
const DEFAULT_BLOCK: u32 = 256;

// ---------------------------------------------------------------------------------------------
// THE KERNEL VARIANTS. Extend this list with each kernel family's specialisations (defines)
// and the block size each entry is launched with. A module listed with no entries reports
// every entry ptxas finds, at DEFAULT_BLOCK threads (marked `*` in the table).
// ---------------------------------------------------------------------------------------------
/// Every kernel module variant to build for `archs`, with its entries' launch sizes; the
/// attention kernels for `head_dims`.
pub fn variants(archs: &[u32], head_dims: &[usize]) -> Vec<Variant> {
    // The tensor ops' modules with every entry the dispatcher can launch and its block size.
    let mut out: Vec<Variant> = attune_tensor::gpu::kernel_variants()
        .into_iter()
        .map(|(spec, entries)| (spec, entries.iter().map(|(e, threads)| EntryLaunch::new(e, *threads)).collect(), None))
        .collect();
    // The attention kernels the dispatcher can launch, per head dim (and per arch for the
    // tensor-core tile table).
    for (spec, entries, arch) in attune_attention::gpu::kernel_variants(head_dims, archs) {
        let launches =
            entries.iter().map(|(e, threads, smem)| EntryLaunch::new(e, *threads).with_dynamic_smem(*smem)).collect();
        out.push((spec, launches, arch));
    }
    // Any other family under kernels/ is built with no defines, every entry reported.
    for f in attune_cuda::sources::kernel_families() {
        if !f.starts_with("test/") && !out.iter().any(|(spec, _, _)| spec.file == f) {
            out.push((ModuleSpec::new(f, []), Vec::new(), None));
        }
    }
    out
}

/// Variants of the test kernels under kernels/test/, built only when `--files` names them.
fn test_variants() -> Vec<Variant> {
    let smoke = |defines: &[(&str, &str)]| {
        ModuleSpec::new("test/nvrtc_smoke.cu", defines.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    };
    vec![
        // smoke_block_sum runs SMOKE_BLOCK (default 128) threads per block.
        (smoke(&[]), vec![EntryLaunch::new("smoke_axpy", 256), EntryLaunch::new("smoke_block_sum", 128)], None),
        (smoke(&[("SMOKE_BLOCK", "1024")]), vec![EntryLaunch::new("smoke_block_sum", 1024)], None),
    ]
}

/// One table row.
#[derive(Debug, Clone)]
pub struct Row {
    file: String,
    defines: String,
    entry: String,
    arch: String,
    block: u32,
    block_assumed: bool,
    res: FunctionResources,
    dynamic_smem: u32,
    occupancy: Option<f64>,
}

fn run_ptxas(ptxas: &Path, ptx: &[u8], sm: u32, dir: &Path, stem: &str) -> Result<String> {
    let input = dir.join(format!("{stem}.sm_{sm}.ptx"));
    std::fs::write(&input, ptx).with_context(|| format!("writing {}", input.display()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch=sm_{sm}"))
        .arg("-v")
        .arg(&input)
        .arg("-o")
        .arg(dir.join(format!("{stem}.sm_{sm}.cubin")))
        .output()
        .with_context(|| format!("running {}", ptxas.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("ptxas -arch=sm_{sm} failed on {}:\n{text}", input.display());
    }
    Ok(text)
}

/// Runs the command.
pub fn run(args: &BuildKernelsArgs) -> Result<ExitCode> {
    let nv = toolchain::nvrtc().context("NVRTC is needed (run `cargo xtask cuda-tools`)")?;
    let ptxas = nv.toolchain.ptxas().context("ptxas is needed")?.to_path_buf();
    let archs: Vec<u32> = args
        .arch
        .iter()
        .map(|a| {
            a.trim()
                .strip_prefix("sm_")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("--arch {a}: expected sm_XX"))
        })
        .collect::<Result<_>>()?;
    let head_dims: Vec<usize> = if args.all_head_dims {
        attune_attention::support::gpu_head_dims().collect()
    } else {
        crate::gpu_grid::HEAD_DIMS.to_vec()
    };
    let mut variants = variants(&archs, &head_dims);
    if !args.files.is_empty() {
        variants.extend(test_variants());
        for f in &args.files {
            if !variants.iter().any(|(m, _, _)| &m.file == f) {
                attune_cuda::sources::kernel_file(f)?;
                variants.push((ModuleSpec::new(f.clone(), []), Vec::new(), None));
            }
        }
        variants.retain(|(m, _, _)| args.files.contains(&m.file));
    }
    let work = std::env::temp_dir().join(format!("attune-build-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    // Progress on a terminal only (docs/architecture.md); the table is the output.
    let progress = std::io::stderr().is_terminal();
    let jobs: Vec<(&Variant, u32)> = variants
        .iter()
        .flat_map(|v| archs.iter().filter(move |&&sm| v.2.is_none_or(|a| a == sm)).map(move |&sm| (v, sm)))
        .collect();
    // NVRTC and ptxas run one core each, for up to seconds per variant: a variant per core,
    // the rows kept in the variants' order.
    let finished = AtomicUsize::new(0);
    let results: Vec<(Vec<Row>, Vec<String>)> = jobs
        .par_iter()
        .map(|&((spec, launches, _), sm)| {
            let (mut rows, mut failures) = (Vec::new(), Vec::new());
            analyse(spec, launches, sm, &ptxas, &work, &mut rows, &mut failures);
            let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
            if progress {
                eprint!("\r\x1b[K[{done}/{}] {} [{}] sm_{sm}", jobs.len(), spec.file, spec.defines_string());
            }
            (rows, failures)
        })
        .collect();
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    for (r, f) in results {
        rows.extend(r);
        failures.extend(f);
    }
    let _ = std::fs::remove_dir_all(&work);
    if progress {
        eprint!("\r\x1b[K");
    }

    print_table(&rows);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json(&rows))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{} entries from {} module variants; {} problem(s)", rows.len(), variants.len(), failures.len());
    for f in &failures {
        eprintln!("error: {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Compiles one module variant for `sm` with NVRTC, runs ptxas on it, and adds a row per
/// entry (or a failure: compile errors, missing entries, spills).
pub fn analyse(
    spec: &ModuleSpec,
    launches: &[EntryLaunch],
    sm: u32,
    ptxas: &Path,
    work: &Path,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) {
    let ptx = match nvrtc::compile(spec, Target::Compute(sm)) {
        Ok(c) => c.image,
        Err(e) => {
            failures.push(format!("{e}"));
            return;
        }
    };
    let stem = nvrtc::dump_name(spec, Target::Compute(sm)).trim_end_matches(".ptx").to_string();
    let report = match run_ptxas(ptxas, &ptx, sm, work, &stem) {
        Ok(r) => ptxas::parse(&r),
        Err(e) => {
            failures.push(format!("{e:#}"));
            return;
        }
    };
    for f in report.iter().filter(|f| !f.entry && (f.spill_stores > 0 || f.spill_loads > 0)) {
        failures.push(format!(
            "{} [{}] sm_{sm}: device function {} spills {} B stores / {} B loads",
            spec.file,
            spec.defines_string(),
            f.name,
            f.spill_stores,
            f.spill_loads
        ));
    }
    let wanted: Vec<(EntryLaunch, bool)> = if launches.is_empty() {
        report
            .iter()
            .filter(|f| f.entry)
            .map(|f| (EntryLaunch { entry: f.name.clone(), block_threads: DEFAULT_BLOCK, dynamic_smem: 0 }, true))
            .collect()
    } else {
        launches.iter().map(|l| (l.clone(), false)).collect()
    };
    for (launch, assumed) in wanted {
        let Some(res) = report.iter().find(|f| f.entry && f.name == launch.entry) else {
            failures.push(format!(
                "{} [{}] sm_{sm}: ptxas reported no entry {}",
                spec.file,
                spec.defines_string(),
                launch.entry
            ));
            continue;
        };
        let occ = ArchLimits::of(sm)
            .map(|l| occupancy(&l, res.registers, res.smem + launch.dynamic_smem, launch.block_threads).fraction);
        if res.spill_stores > 0 || res.spill_loads > 0 {
            failures.push(format!("{} [{}] sm_{sm}: {} spills", spec.file, spec.defines_string(), res.name));
        }
        rows.push(Row {
            file: spec.file.clone(),
            defines: spec.defines_string(),
            entry: launch.entry.clone(),
            arch: format!("sm_{sm}"),
            block: launch.block_threads,
            block_assumed: assumed,
            res: res.clone(),
            dynamic_smem: launch.dynamic_smem,
            occupancy: occ,
        });
    }
}

/// Prints the resource table of `rows`.
pub fn print_table(rows: &[Row]) {
    let header =
        ["kernel file", "defines", "entry", "arch", "block", "regs", "spill st/ld B", "smem B", "cmem B", "occupancy"];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.file.clone(),
                if r.defines.is_empty() { "-".into() } else { r.defines.clone() },
                r.entry.clone(),
                r.arch.clone(),
                format!("{}{}", r.block, if r.block_assumed { "*" } else { "" }),
                r.res.registers.to_string(),
                format!("{}/{}", r.res.spill_stores, r.res.spill_loads),
                if r.dynamic_smem > 0 { format!("{}+{}", r.res.smem, r.dynamic_smem) } else { r.res.smem.to_string() },
                r.res.cmem.to_string(),
                r.occupancy.map(|o| format!("{:.1}%", o * 100.0)).unwrap_or_else(|| "n/a".into()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let parts: Vec<String> = cols.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for c in &cells {
        line(c.iter().map(|s| s.as_str()).collect());
    }
    if rows.iter().any(|r| r.block_assumed) {
        println!("* block size assumed ({DEFAULT_BLOCK}); list the entry in build_kernels::variants() to set it");
    }
    println!("(static figures from ptxas: theoretical occupancy, no GPU timing)");
}

/// The rows as a JSON array (the `--json` output).
pub fn json(rows: &[Row]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file, "defines": r.defines, "entry": r.entry, "arch": r.arch,
                    "block_threads": r.block, "block_assumed": r.block_assumed,
                    "registers": r.res.registers, "spill_stores": r.res.spill_stores,
                    "spill_loads": r.res.spill_loads, "stack": r.res.stack, "smem": r.res.smem,
                    "dynamic_smem": r.dynamic_smem, "cmem": r.res.cmem, "occupancy": r.occupancy,
                })
            })
            .collect(),
    )
}
