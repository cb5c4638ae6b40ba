//! Population-based training as a shared study (docs/search.md "Shared studies"): worker
//! processes run the segments while they are killed at random, and a killed segment continues
//! from its own last checkpoint. The result must equal the same population trained in one
//! process, segment for segment and in its schedule.

mod common;

use std::path::Path;
use std::time::Duration;

use common::shared::{attune, exported, kill_at_random};
use serde_json::Value;

/// A program "training" in PBT segments, one step every 30 ms: its state is a score that grows
/// by `1 - (log10(lr) + 1)^2` per step, saved after every step into the trial's folder. A
/// re-queued segment (`resume`) continues from its own saved state and notes the step it
/// resumed at in `resumed`; a new one starts from `restore_from`'s final state. JSON floats
/// round-trip exactly, so a resumed segment ends with the very score of an uninterrupted one.
const PROGRAM: &str = r#"
import json, math, os, sys, time
req = json.loads(sys.stdin.readline())
lr, pbt = req["params"]["lr"], req["pbt"]
save = os.path.join(pbt["save_to"], "state.json")
gain = 1 - (math.log10(lr) + 1) ** 2
if pbt["resume"] and os.path.exists(save):
    with open(save) as f:
        st = json.load(f)
    score, step, start = st["score"], st["step"], st["start"]
    with open(os.path.join(pbt["save_to"], "resumed"), "a") as f:
        f.write(f"{step}\n")
else:
    score = 0.0
    if pbt["restore_from"]:
        with open(os.path.join(pbt["restore_from"], "state.json")) as f:
            score = json.load(f)["score"]
    step, start = pbt["until_step"] - pbt["interval"], score
while step < pbt["until_step"]:
    time.sleep(0.03)
    score += gain
    step += 1
    with open(save + ".tmp", "w") as f:
        json.dump({"score": score, "step": step, "start": start}, f)
    os.replace(save + ".tmp", save)
    print(json.dumps({"step": step, "value": score}), flush=True)
print(json.dumps({"value": score}))
"#;

const SPACE: &str =
    "direction = \"maximize\"\n[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }\n";

/// The flags of the population, shared by the one-process run and the shared study.
fn population_args(dir: &Path) -> Vec<String> {
    std::fs::write(dir.join("space.toml"), SPACE).unwrap();
    std::fs::write(dir.join("pbt.py"), PROGRAM).unwrap();
    let cmd = format!("python3 {}", dir.join("pbt.py").display());
    let space = dir.join("space.toml").display().to_string();
    [
        "search",
        "--space",
        &space,
        "--command",
        &cmd,
        "--pbt",
        "--population",
        "4",
        "--generations",
        "3",
        "--interval",
        "20",
        "--seed",
        "5",
        "--quiet",
        "--no-plots",
    ]
    .map(String::from)
    .to_vec()
}

fn run(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = attune(&args);
    assert!(out.status.success(), "attune {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// (member, generation) -> (params, values) of a study's segments.
fn segments(trials: &[Value]) -> Vec<((u64, u64), (Value, Value))> {
    let mut s: Vec<_> = trials
        .iter()
        .map(|t| {
            let key = (t["attrs"]["pbt_member"].as_u64().unwrap(), t["attrs"]["pbt_generation"].as_u64().unwrap());
            (key, (t["params"].clone(), t["values"].clone()))
        })
        .collect();
    s.sort_by_key(|(k, _)| *k);
    s
}

#[test]
fn workers_killed_at_random_train_the_population_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let base = population_args(tmp.path());

    let reference = tmp.path().join("reference");
    run(&[&base[..], &["--out".into(), reference.display().to_string(), "--parallel".into(), "2".into()]].concat());
    let expected: Vec<Value> = std::fs::read_to_string(reference.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let storage = format!("sqlite:{}", tmp.path().join("pbt.db").display());
    let shared = |workers: &str| {
        let flags = ["--storage", &storage, "--study", "pbt", "--workers", workers, "--lease", "1"];
        let more = ["--max-retries", "100", "--artifacts", tmp.path().to_str().unwrap()];
        [&base[..], &flags.map(String::from), &more.map(String::from)].concat()
    };
    run(&shared("0"));
    let (secs, kills) = kill_at_random(&storage, "pbt", 3, Duration::from_millis(700));
    // The same command again finds the population trained, and writes its schedule.
    run(&shared("1"));

    let trials = exported(&storage, "pbt");
    assert_eq!(trials.len(), 12, "4 members x 3 generations, each segment once");
    for (i, t) in trials.iter().enumerate() {
        assert_eq!((t["number"].as_u64(), t["state"].as_str()), (Some(i as u64), Some("complete")), "{t}");
        // Trial n is member n % 4 of generation n / 4.
        assert_eq!(t["attrs"]["pbt_member"], i as u64 % 4);
        assert_eq!(t["attrs"]["pbt_generation"], i as u64 / 4);
    }
    assert_eq!(segments(&trials), segments(&expected), "every segment's parameters and score");
    let schedule = |dir: &Path| {
        let s = json_file(&dir.join("pbt_schedule.json"));
        (s["entries"].clone(), s["best_lineage"].clone(), s["best_value"].clone())
    };
    assert_eq!(schedule(&tmp.path().join("pbt")), schedule(&reference), "the schedule and the best lineage");

    let resumed = (0..12)
        .filter_map(|n| std::fs::read_to_string(tmp.path().join(format!("pbt/trials/{n:05}/resumed"))).ok())
        .count();
    eprintln!("shared PBT (sqlite, 3 workers, 12 segments): {secs:.1} s, {kills} kills, {resumed} segments resumed");
    assert!(kills >= 4, "too few kills to mean anything ({kills})");
    assert!(resumed >= 1, "no killed segment continued from its own checkpoint ({kills} kills)");
}
