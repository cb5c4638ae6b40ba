//! The report: median simple regret over seeds per task x implementation x sampler at each
//! checkpoint, the goal checks, and the overhead ratios, as markdown. Pure functions of the
//! JSON lines both sides print (docs/benchmarks-search.md).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::tasks::{ALL_TASKS, HPOLIB_TASKS};

/// One study's result line.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// `attune` or `optuna`.
    pub implementation: String,
    /// The sampler's name on its side.
    pub sampler: String,
    /// The task.
    pub task: String,
    /// The objective's minimum.
    pub optimum: f64,
    /// The best value among the first n trials, by n.
    pub best_after: BTreeMap<u64, f64>,
    /// Wall seconds of the study.
    pub secs: f64,
}

/// One overhead line: seconds per ask + tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Overhead {
    /// `attune` or `optuna`.
    pub implementation: String,
    /// The sampler.
    pub sampler: String,
    /// `memory` or `sqlite`.
    pub storage: String,
    /// Seconds per trial.
    pub secs_per_trial: f64,
}

/// A result line of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A study.
    Run(Run),
    /// An overhead timing.
    Overhead(Overhead),
}

/// Parses one JSON line of either side.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or(format!("no string '{k}'"));
    let num = |k: &str| v.get(k).and_then(Value::as_f64).ok_or(format!("no number '{k}'"));
    if v.get("mode").and_then(Value::as_str) == Some("overhead") {
        return Ok(Record::Overhead(Overhead {
            implementation: text("impl")?,
            sampler: text("sampler")?,
            storage: text("storage")?,
            secs_per_trial: num("secs_per_trial")?,
        }));
    }
    let best = v.get("best_after").and_then(Value::as_object).ok_or("no object 'best_after'")?;
    let best_after = best
        .iter()
        .map(|(n, b)| {
            Ok((n.parse::<u64>().map_err(|_| format!("best_after key '{n}'"))?, b.as_f64().ok_or("best_after value")?))
        })
        .collect::<Result<_, String>>()?;
    Ok(Record::Run(Run {
        implementation: text("impl")?,
        sampler: text("sampler")?,
        task: text("task")?,
        optimum: num("optimum")?,
        best_after,
        secs: num("secs")?,
    }))
}

/// The median (the mean of the two middle values for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Simple regret: how far the best value found is above the minimum.
pub fn regret(best: f64, optimum: f64) -> f64 {
    best - optimum
}

/// The medians of one task x implementation x sampler.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The task.
    pub task: String,
    /// `attune` or `optuna`.
    pub implementation: String,
    /// The sampler.
    pub sampler: String,
    /// How many seeds.
    pub seeds: usize,
    /// Median simple regret over seeds, by checkpoint (only checkpoints every seed has).
    pub regret: BTreeMap<u64, f64>,
    /// Median wall seconds per study.
    pub secs: f64,
}

/// Groups runs by task (report order), implementation and sampler (first appearance) and
/// takes the medians.
pub fn summarize(runs: &[Run]) -> Vec<Row> {
    let task_rank = |t: &str| ALL_TASKS.iter().position(|&a| a == t).unwrap_or(ALL_TASKS.len());
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for r in runs {
        let key = (r.task.clone(), r.implementation.clone(), r.sampler.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // Stable: within a task and implementation, samplers keep the order they ran in.
    keys.sort_by(|a, b| (task_rank(&a.0), &a.0, &a.1).cmp(&(task_rank(&b.0), &b.0, &b.1)));
    keys.into_iter()
        .map(|(task, implementation, sampler)| {
            let group: Vec<&Run> = runs
                .iter()
                .filter(|r| r.task == task && r.implementation == implementation && r.sampler == sampler)
                .collect();
            let checkpoints = group[0].best_after.keys().filter(|n| group.iter().all(|r| r.best_after.contains_key(n)));
            let regret = checkpoints
                .map(|&n| {
                    let regrets: Vec<f64> = group.iter().map(|r| regret(r.best_after[&n], r.optimum)).collect();
                    (n, median(&regrets).unwrap_or(f64::NAN))
                })
                .collect();
            let secs = median(&group.iter().map(|r| r.secs).collect::<Vec<_>>()).unwrap_or(f64::NAN);
            Row { task, implementation, sampler, seeds: group.len(), regret, secs }
        })
        .collect()
}

/// The outcome of one goal on one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is claimed, e.g. `attune tpe <= optuna tpe`.
    pub goal: String,
    /// The task.
    pub task: String,
    /// The checkpoint compared (the largest both rows have).
    pub at: Option<u64>,
    /// The two median regrets compared, when both exist.
    pub values: Option<(f64, f64)>,
    /// Whether the claim holds (`None`: a side is missing).
    pub pass: Option<bool>,
}

fn compare(rows: &[Row], task: &str, left: (&str, &str), right: (&str, &str), strict: bool) -> Check {
    let find =
        |(imp, s): (&str, &str)| rows.iter().find(|r| r.task == task && r.implementation == imp && r.sampler == s);
    let goal = format!("{} {} {} {} {}", left.0, left.1, if strict { "<" } else { "<=" }, right.0, right.1);
    let (Some(a), Some(b)) = (find(left), find(right)) else {
        return Check { goal, task: task.into(), at: None, values: None, pass: None };
    };
    let Some(&at) = a.regret.keys().rev().find(|n| b.regret.contains_key(n)) else {
        return Check { goal, task: task.into(), at: None, values: None, pass: None };
    };
    let (x, y) = (a.regret[&at], b.regret[&at]);
    Check {
        goal,
        task: task.into(),
        at: Some(at),
        values: Some((x, y)),
        pass: Some(if strict { x < y } else { x <= y }),
    }
}

/// The issue's goals: our TPE's median regret at most Optuna TPE's on each HPOLib task, and
/// our GA and SA strictly below our random search on every task (at the last checkpoint both
/// rows share: 200 trials in a full run).
pub fn goal_checks(rows: &[Row]) -> Vec<Check> {
    let mut checks: Vec<Check> =
        HPOLIB_TASKS.iter().map(|t| compare(rows, t, ("attune", "tpe"), ("optuna", "tpe"), false)).collect();
    for sampler in ["ga", "sa"] {
        checks.extend(ALL_TASKS.iter().map(|t| compare(rows, t, ("attune", sampler), ("attune", "random"), true)));
    }
    checks
}

/// Ours / Optuna's seconds per trial, by storage and sampler (medians of repeated lines).
pub fn overhead_ratios(overheads: &[Overhead]) -> Vec<(String, String, Option<f64>, Option<f64>)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for o in overheads {
        let key = (o.storage.clone(), o.sampler.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort();
    let secs = |imp: &str, storage: &str, sampler: &str| {
        let v: Vec<f64> = overheads
            .iter()
            .filter(|o| o.implementation == imp && o.storage == storage && o.sampler == sampler)
            .map(|o| o.secs_per_trial)
            .collect();
        median(&v)
    };
    keys.into_iter()
        .map(|(storage, sampler)| {
            let (ours, theirs) = (secs("attune", &storage, &sampler), secs("optuna", &storage, &sampler));
            (storage, sampler, ours, theirs)
        })
        .collect()
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3e}"))
}

/// The whole report as markdown.
pub fn render(records: &[Record]) -> String {
    let runs: Vec<Run> =
        records.iter().filter_map(|r| if let Record::Run(r) = r { Some(r.clone()) } else { None }).collect();
    let overheads: Vec<Overhead> =
        records.iter().filter_map(|r| if let Record::Overhead(o) = r { Some(o.clone()) } else { None }).collect();
    let rows = summarize(&runs);
    let mut checkpoints: Vec<u64> = rows.iter().flat_map(|r| r.regret.keys().copied()).collect();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let mut out = String::from("## Median simple regret over seeds\n\n| task | impl | sampler | seeds |");
    for n in &checkpoints {
        let _ = write!(out, " @{n} |");
    }
    out.push_str(" secs/study |\n|---|---|---|---:|");
    out.push_str(&"---:|".repeat(checkpoints.len() + 1));
    out.push('\n');
    for r in &rows {
        let _ = write!(out, "| {} | {} | {} | {} |", r.task, r.implementation, r.sampler, r.seeds);
        for n in &checkpoints {
            let _ = write!(out, " {} |", fmt_opt(r.regret.get(n).copied()));
        }
        let _ = writeln!(out, " {} |", fmt_opt(Some(r.secs)));
    }
    out.push_str("\n## Goals\n\n| goal | task | at | left | right | verdict |\n|---|---|---:|---:|---:|---|\n");
    for c in goal_checks(&rows) {
        let verdict = match c.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "missing",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {verdict} |",
            c.goal,
            c.task,
            c.at.map_or("-".into(), |n| n.to_string()),
            fmt_opt(c.values.map(|v| v.0)),
            fmt_opt(c.values.map(|v| v.1))
        );
    }
    out.push_str(
        "\n## Overhead: seconds per ask + tell\n\n| storage | sampler | attune | optuna | attune / optuna |\n",
    );
    out.push_str("|---|---|---:|---:|---:|\n");
    for (storage, sampler, ours, theirs) in overhead_ratios(&overheads) {
        let ratio = ours.zip(theirs).map(|(a, b)| format!("{:.3}", a / b)).unwrap_or("-".into());
        let _ = writeln!(out, "| {storage} | {sampler} | {} | {} | {ratio} |", fmt_opt(ours), fmt_opt(theirs));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_by_hand() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        // Sorted: 1, 2, 4, 10 -> (2 + 4) / 2.
        assert_eq!(median(&[10.0, 4.0, 1.0, 2.0]), Some(3.0));
        assert_eq!(median(&[-1.5]), Some(-1.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn regret_is_distance_above_the_minimum_also_for_negative_minima() {
        assert_eq!(regret(0.75, 0.5), 0.25);
        // Hartmann-6-like: best -3.0 against a minimum of -3.25.
        assert_eq!(regret(-3.0, -3.25), 0.25);
    }

    fn run(imp: &str, sampler: &str, task: &str, optimum: f64, best: &[(u64, f64)], secs: f64) -> Run {
        Run {
            implementation: imp.into(),
            sampler: sampler.into(),
            task: task.into(),
            optimum,
            best_after: best.iter().copied().collect(),
            secs,
        }
    }

    #[test]
    fn summarize_takes_median_regret_per_checkpoint_every_seed_has() {
        let runs = vec![
            run("attune", "tpe", "branin", 1.0, &[(50, 3.0), (100, 2.0)], 1.0),
            run("attune", "tpe", "branin", 1.0, &[(50, 5.0), (100, 1.5)], 3.0),
            // A shorter run: checkpoint 100 is not shared, so it drops out.
            run("attune", "tpe", "branin", 1.0, &[(50, 1.5)], 2.0),
        ];
        let rows = summarize(&runs);
        assert_eq!(rows.len(), 1);
        // Regrets at 50: 2.0, 4.0, 0.5 -> median 2.0. Secs 1, 3, 2 -> 2.
        assert_eq!(rows[0].regret, BTreeMap::from([(50, 2.0)]));
        assert_eq!((rows[0].seeds, rows[0].secs), (3, 2.0));
    }

    #[test]
    fn rows_follow_task_order_then_implementation() {
        let runs = vec![
            run("optuna", "tpe", "hartmann6", -3.0, &[(50, -2.0)], 1.0),
            run("optuna", "tpe", "naval_propulsion", 0.0, &[(50, 1.0)], 1.0),
            run("attune", "random", "hartmann6", -3.0, &[(50, -2.0)], 1.0),
        ];
        let order: Vec<(String, String)> = summarize(&runs).into_iter().map(|r| (r.task, r.implementation)).collect();
        assert_eq!(
            order,
            vec![
                ("naval_propulsion".into(), "optuna".into()),
                ("hartmann6".into(), "attune".into()),
                ("hartmann6".into(), "optuna".into())
            ]
        );
    }

    #[test]
    fn goal_checks_compare_at_the_last_shared_checkpoint() {
        let runs = vec![
            run("attune", "tpe", "naval_propulsion", 0.0, &[(50, 0.4), (200, 0.2)], 1.0),
            run("optuna", "tpe", "naval_propulsion", 0.0, &[(50, 0.3), (200, 0.2)], 1.0),
            run("attune", "random", "branin", 0.0, &[(50, 0.5)], 1.0),
            run("attune", "ga", "branin", 0.0, &[(50, 0.5)], 1.0),
        ];
        let checks = goal_checks(&summarize(&runs));
        let naval =
            checks.iter().find(|c| c.goal == "attune tpe <= optuna tpe" && c.task == "naval_propulsion").unwrap();
        // Equal at 200 (worse at 50, which does not count): <= holds.
        assert_eq!((naval.at, naval.pass), (Some(200), Some(true)));
        let ga = checks.iter().find(|c| c.goal == "attune ga < attune random" && c.task == "branin").unwrap();
        // A tie is not "beats".
        assert_eq!(ga.pass, Some(false));
        let sa = checks.iter().find(|c| c.goal == "attune sa < attune random" && c.task == "branin").unwrap();
        assert_eq!(sa.pass, None);
    }

    #[test]
    fn lines_of_both_sides_parse() {
        let ours = r#"{"impl":"attune","sampler":"random","task":"branin","seed":0,"trials":50,"optimum":0.5,"best_after":{"50":0.75},"secs":0.01}"#;
        let theirs = r#"{"impl": "optuna", "mode": "overhead", "sampler": "tpe", "storage": "sqlite", "trials": 1000, "secs_per_trial": 0.02}"#;
        match parse_line(ours).unwrap() {
            Record::Run(r) => assert_eq!(r.best_after, BTreeMap::from([(50, 0.75)])),
            other => panic!("{other:?}"),
        }
        let Record::Overhead(o) = parse_line(theirs).unwrap() else { panic!("not an overhead line") };
        assert_eq!((o.storage.as_str(), o.secs_per_trial), ("sqlite", 0.02));
        assert!(parse_line(r#"{"impl":"attune"}"#).is_err());
    }

    #[test]
    fn overhead_ratio_pairs_the_same_storage_and_sampler() {
        let o = |imp: &str, storage: &str, s: f64| Overhead {
            implementation: imp.into(),
            sampler: "tpe".into(),
            storage: storage.into(),
            secs_per_trial: s,
        };
        let ratios =
            overhead_ratios(&[o("attune", "memory", 0.001), o("optuna", "memory", 0.004), o("optuna", "sqlite", 0.01)]);
        assert_eq!(ratios[0], ("memory".into(), "tpe".into(), Some(0.001), Some(0.004)));
        assert_eq!(ratios[1], ("sqlite".into(), "tpe".into(), None, Some(0.01)));
        let text =
            render(&[Record::Overhead(o("attune", "memory", 0.001)), Record::Overhead(o("optuna", "memory", 0.004))]);
        assert!(text.contains("| memory | tpe | 1.000e-3 | 4.000e-3 | 0.250 |"), "{text}");
    }
}
