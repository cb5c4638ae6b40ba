//! `attune study list|show|export --storage URL`: what a shared study holds, for the people
//! watching it (docs/search.md "Shared studies").

use std::path::PathBuf;

use anyhow::{Context, Result};
use attune_search::storage::url::{self, Open};
use attune_search::studydir::ExportedTrial;
use clap::{Args, Subcommand};

/// `attune study`'s subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum StudyCommand {
    /// The studies in a storage, with their trial counts.
    List(StorageArg),
    /// One study's settings and summary.
    Show(StudyArg),
    /// One study's trials as CSV or JSON lines.
    Export(ExportArgs),
}

/// `--storage URL`.
#[derive(Args, Debug, Clone)]
pub struct StorageArg {
    /// sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub storage: String,
}

/// `--storage URL --study NAME`.
#[derive(Args, Debug, Clone)]
pub struct StudyArg {
    /// sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    pub storage: String,
    /// The study's name.
    #[arg(long)]
    pub study: String,
}

/// `attune study export`'s flags.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    study: StudyArg,
    /// csv or json (one JSON object per trial per line).
    #[arg(long, default_value = "csv")]
    format: String,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `attune study ...`.
pub fn run(c: &StudyCommand) -> Result<()> {
    match c {
        StudyCommand::List(a) => {
            for (name, n) in url::list(&a.storage)? {
                println!("{name}\t{n} trials");
            }
            Ok(())
        }
        StudyCommand::Show(a) => {
            let storage = url::open(&a.storage, &a.study, Open::Existing)?;
            let record = storage.study()?.with_context(|| format!("no study '{}' in {}", a.study, a.storage))?;
            let summary = attune_search::study::summarize(&record.space, &storage.trials()?);
            let shown = serde_json::json!({"study": a.study, "record": record, "summary": summary});
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
        StudyCommand::Export(a) => {
            let storage = url::open(&a.study.storage, &a.study.study, Open::Existing)?;
            let record =
                storage.study()?.with_context(|| format!("no study '{}' in {}", a.study.study, a.study.storage))?;
            let rows: Vec<ExportedTrial> =
                storage.trials()?.iter().map(|t| ExportedTrial::new(&record.space, t)).collect();
            let text = match a.format.as_str() {
                "json" => rows.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?.join("\n") + "\n",
                "csv" => csv(&record.space, &rows),
                other => anyhow::bail!("--format {other}: use csv or json"),
            };
            match &a.out {
                Some(p) => attune_persist::write_atomic(p, text.as_bytes())?,
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}

/// One row per trial: number, state, each value, each parameter, duration, worker, error.
fn csv(space: &attune_search::Space, rows: &[ExportedTrial]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    };
    let n_values = space.directions.len();
    let mut header = vec!["number".to_string(), "state".into()];
    header.extend((0..n_values).map(|i| format!("value_{i}")));
    header.extend(space.params.iter().map(|p| quote(&p.name)));
    header.extend(["duration_s".into(), "worker".into(), "error".into()]);
    let mut out = header.join(",") + "\n";
    for r in rows {
        let mut cells = vec![r.number.to_string(), r.state.name().to_string()];
        cells.extend(
            (0..n_values).map(|i| r.values.as_ref().and_then(|v| v.get(i)).map(|v| v.to_string()).unwrap_or_default()),
        );
        cells.extend(space.params.iter().map(|p| match r.params.get(&p.name) {
            Some(serde_json::Value::String(s)) => quote(s),
            Some(v) => v.to_string(),
            None => String::new(),
        }));
        cells.push(r.duration.map(|d| d.to_string()).unwrap_or_default());
        cells.push(quote(&r.worker));
        cells.push(quote(r.error.as_deref().unwrap_or("")));
        out += &(cells.join(",") + "\n");
    }
    out
}
