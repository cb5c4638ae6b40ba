//! `cargo xtask bench`: run criterion, then read its estimates into one table.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only benches whose id contains this text (criterion filter).
    #[arg(long)]
    filter: Option<String>,
    /// Rayon threads for the run (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use jemalloc instead of mimalloc as the benches' global allocator.
    #[arg(long)]
    jemalloc: bool,
    /// Only print the table from the last run's results.
    #[arg(long)]
    report_only: bool,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let root = workspace_root();
    if !args.report_only {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).args(["bench", "-p", "attune-benches"]);
        if args.jemalloc {
            cmd.args(["--no-default-features", "--features", "jemalloc"]);
        }
        cmd.arg("--");
        if let Some(f) = &args.filter {
            cmd.arg(f);
        }
        if let Some(t) = args.threads {
            cmd.env("RAYON_NUM_THREADS", t.to_string());
        }
        let status = cmd.status().context("running cargo bench")?;
        if !status.success() {
            bail!("cargo bench failed with {status}");
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let rows = collect(&target.join("criterion"))?;
    print_table(&rows);
    Ok(())
}

/// One measured bench: group, function, parameter, median ns, elements per iteration.
struct Row {
    group: String,
    function: String,
    param: String,
    median_ns: f64,
    elements: Option<f64>,
}

fn collect(dir: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some(r) = read_row(&p)? {
                        rows.push(r);
                    }
                } else if p.file_name().is_none_or(|n| n != "base" && n != "report") {
                    stack.push(p);
                }
            }
        }
    }
    rows.sort_by(|a, b| (&a.group, &a.param, &a.function).cmp(&(&b.group, &b.param, &b.function)));
    Ok(rows)
}

fn read_row(new_dir: &Path) -> Result<Option<Row>> {
    let (Ok(est), Ok(meta)) = (
        std::fs::read_to_string(new_dir.join("estimates.json")),
        std::fs::read_to_string(new_dir.join("benchmark.json")),
    ) else {
        return Ok(None);
    };
    let est: serde_json::Value = serde_json::from_str(&est).context("criterion estimates.json")?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("criterion benchmark.json")?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    Ok(Some(Row {
        group: s(&meta["group_id"]),
        function: s(&meta["function_id"]),
        param: s(&meta["value_str"]),
        median_ns: est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
        elements: meta["throughput"]["Elements"].as_f64(),
    }))
}

fn print_table(rows: &[Row]) {
    println!("{:<28} {:<28} {:>8} {:>12} {:>14} {:>10}", "group", "bench", "param", "median", "throughput", "vs peer");
    for r in rows {
        let tput = r.elements.map(|e| format!("{:.2} G/s", e / r.median_ns)).unwrap_or_default();
        // A peer is any other function of the same group and parameter; ratio = peer / attune
        // time, so > 1 means attune is faster.
        let ratio = if r.function == "attune" {
            rows.iter()
                .filter(|p| p.group == r.group && p.param == r.param && p.function != "attune")
                .map(|p| format!("{:.2}x {}", p.median_ns / r.median_ns, p.function))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        };
        println!(
            "{:<28} {:<28} {:>8} {:>12} {:>14} {:>10}",
            r.group,
            r.function,
            r.param,
            fmt_ns(r.median_ns),
            tput,
            ratio
        );
    }
}

fn fmt_ns(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.1} ns"),
        n if n < 1e6 => format!("{:.2} us", n / 1e3),
        n => format!("{:.3} ms", n / 1e6),
    }
}
