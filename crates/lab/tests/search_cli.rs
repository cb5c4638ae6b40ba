//! `attune search` end to end through the binary: command objectives (values, pruning,
//! parallel workers, every kind of bad objective), training objectives, bad spaces and
//! studies, and kill -9 then `--resume` (docs/search.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::run_dir::{BIN, TINY_SETS};
use serde_json::Value;

/// One variable in [0, 1]; the objective (x - 0.3)^2 is minimised at 0.3.
const SPACE_1D: &str = "direction = \"minimize\"\n[params]\nx = { type = \"float\", low = 0.0, high = 1.0 }\n";

/// The protocol's reference objective: reports `steps` intermediate values that approach the
/// final value (x - 0.3)^2 from above, then prints it.
const QUADRATIC: &str = r#"
import json, sys
req = json.loads(sys.stdin.readline())
x = req["params"]["x"]
final = (x - 0.3) ** 2
for step in range(1, 6):
    print(json.dumps({"step": step, "value": final + 1.0 / step}), flush=True)
print(json.dumps({"value": final}))
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn search(args: &[&str]) -> Output {
    Command::new(BIN).arg("search").args(args).output().expect("running attune search")
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "attune search failed:\n{text}");
    text
}

fn err_text(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn trials(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("trials.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn summary(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

fn python_objective(dir: &Path, name: &str, body: &str) -> String {
    format!("python3 {}", write(dir, name, body).display())
}

/// Writes `space` and the Python `program` into `dir`, runs `attune search --command` on them
/// with `flags` into `dir/study` (quietly), and returns the study directory.
fn command_study(dir: &Path, space: &str, program: &str, flags: &[&str]) -> PathBuf {
    let space = write(dir, "space.toml", space);
    let cmd = python_objective(dir, "obj.py", program);
    let out = dir.join("study");
    let fixed = ["--space", space.to_str().unwrap(), "--command", &cmd, "--out", out.to_str().unwrap(), "--quiet"];
    ok(&search(&[&fixed[..], flags].concat()));
    out
}

#[test]
fn a_command_study_records_every_trial_and_its_best() {
    let tmp = tempfile::tempdir().unwrap();
    let out = command_study(tmp.path(), SPACE_1D, QUADRATIC, &["--trials", "12", "--sampler", "random", "--seed", "3"]);
    let t = trials(&out);
    assert_eq!(t.len(), 12);
    let mut best = f64::INFINITY;
    for (i, trial) in t.iter().enumerate() {
        assert_eq!(trial["number"], i as u64);
        assert_eq!(trial["state"], "complete", "{trial}");
        let x = trial["params"]["x"].as_f64().unwrap();
        let v = trial["values"][0].as_f64().unwrap();
        // The value is the objective's own at the parameter it was given, to the digit.
        assert!((v - (x - 0.3f64).powi(2)).abs() < 1e-12, "{trial}");
        assert_eq!(trial["intermediate"].as_array().unwrap().len(), 5);
        best = best.min(v);
    }
    let s = summary(&out);
    assert_eq!(s["n_complete"], 12);
    assert_eq!(s["best_value"].as_f64().unwrap(), best);
    for plot in ["history", "parallel", "importance", "intermediate"] {
        assert!(out.join(format!("plots/{plot}.png")).is_file(), "{plot}.png missing");
    }
    let study: Value = serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(study["seed"], 3);
}

#[test]
fn a_pruned_trial_is_stopped_before_its_end() {
    // Trials report 1..=20; the median pruner stops the ones behind the median from step 2 on.
    let slow = r#"
import json, sys, time
x = json.loads(sys.stdin.readline())["params"]["x"]
for step in range(1, 21):
    print(json.dumps({"step": step, "value": x}), flush=True)
    time.sleep(0.02)
print(json.dumps({"value": x}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let out = command_study(
        tmp.path(),
        SPACE_1D,
        slow,
        &["--trials", "16", "--sampler", "random", "--pruner", "median", "--no-plots"],
    );
    let t = trials(&out);
    let pruned: Vec<&Value> = t.iter().filter(|t| t["state"] == "pruned").collect();
    assert!(!pruned.is_empty(), "no trial was pruned: {t:?}");
    for p in &pruned {
        let steps = p["intermediate"].as_array().unwrap();
        assert!(steps.len() < 20, "a pruned trial ran to its end: {p}");
    }
    assert_eq!(summary(&out)["n_pruned"].as_u64().unwrap() as usize, pruned.len());
}

#[test]
fn parallel_workers_run_trials_at_the_same_time() {
    let sleepy = r#"
import json, sys, time
x = json.loads(sys.stdin.readline())["params"]["x"]
time.sleep(0.4)
print(json.dumps({"value": x}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let out = command_study(
        tmp.path(),
        SPACE_1D,
        sleepy,
        &["--trials", "6", "--sampler", "tpe", "--parallel", "3", "--no-plots"],
    );
    let t = trials(&out);
    assert_eq!(t.len(), 6);
    let workers: std::collections::BTreeSet<&str> = t.iter().map(|t| t["worker"].as_str().unwrap()).collect();
    assert!(workers.len() >= 2, "one worker ran everything: {workers:?}");
    // Some two trials overlap in time.
    let spans: Vec<(f64, f64)> =
        t.iter().map(|t| (t["started"].as_f64().unwrap(), t["finished"].as_f64().unwrap())).collect();
    let overlap = spans.iter().enumerate().any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "no two trials ran at once: {spans:?}");
}

#[test]
fn bad_objectives_fail_their_trial_with_the_reason_and_keep_the_study() {
    let cases: [(&str, &str, &str); 5] = [
        ("garbage", "print('epoch 1 loss 0.5')", "stdout line 1 is not a protocol line"),
        ("crash", "import sys\nsys.stderr.write('boom: out of cheese\\n')\nsys.exit(3)", "out of cheese"),
        ("nonfinite", "print('{\"value\": \"NaN\"}')", "non-finite"),
        ("novalue", "print('{\"step\": 1, \"value\": 0.5}')", "without a final"),
        ("hang", "import time\ntime.sleep(60)", "timed out"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let space = write(tmp.path(), "space.toml", SPACE_1D);
    for (name, body, expected) in cases {
        let cmd = python_objective(
            tmp.path(),
            &format!("{name}.py"),
            &format!("import sys, json\nsys.stdin.readline()\n{body}\n"),
        );
        let out = tmp.path().join(name);
        let start = Instant::now();
        let args = ["--space", space.to_str().unwrap(), "--trials", "2", "--sampler", "random", "--trial-timeout", "2"];
        ok(&search(
            &[&args[..], &["--command", &cmd, "--out", out.to_str().unwrap(), "--quiet", "--no-plots"]].concat(),
        ));
        assert!(start.elapsed() < Duration::from_secs(30), "{name}: the timeout did not stop it");
        let t = trials(&out);
        assert_eq!(t.len(), 2, "{name}");
        for trial in &t {
            assert_eq!(trial["state"], "failed", "{name}: {trial}");
            let error = trial["error"].as_str().unwrap();
            assert!(error.contains(expected), "{name}: error {error:?} should say {expected:?}");
        }
        assert_eq!(summary(&out)["n_failed"], 2, "{name}");
    }
}

#[test]
fn bad_spaces_and_studies_are_refused_with_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cmd = "true";
    let spaces = [
        ("unknown-type", "[params]\nx = { type = \"complex\", low = 0, high = 1 }\n", "params.x.type"),
        ("low-high", "[params]\nx = { type = \"float\", low = 1.0, high = 1.0 }\n", "low 1 >= high 1"),
        (
            "log-zero",
            "[params]\nx = { type = \"float\", low = 0.0, high = 1.0, log = true }\n",
            "log range must be positive",
        ),
        ("empty-choices", "[params]\nx = { type = \"categorical\", choices = [] }\n", "the list is empty"),
    ];
    for (name, text, expected) in spaces {
        let space = write(tmp.path(), &format!("{name}.toml"), text);
        let out = tmp.path().join(name);
        let e =
            err_text(&search(&["--space", space.to_str().unwrap(), "--command", cmd, "--out", out.to_str().unwrap()]));
        assert!(e.contains(expected) && e.contains(&format!("{name}.toml")) && e.contains("fix"), "{name}: {e}");
    }
    // A train-config key that does not exist, named with the space file.
    let space =
        write(tmp.path(), "bad-key.toml", "[params]\n\"model.d_modle\" = { type = \"int\", low = 16, high = 32 }\n");
    let e = err_text(&search(&["--space", space.to_str().unwrap(), "--out", tmp.path().join("k").to_str().unwrap()]));
    assert!(e.contains("model.d_modle") && e.contains("bad-key.toml") && e.contains("d_model"), "{e}");
    // --resume of a directory that is not a study.
    let not_study = tmp.path().join("not-a-study");
    std::fs::create_dir_all(&not_study).unwrap();
    std::fs::write(not_study.join("study.db"), b"this is not sqlite").unwrap();
    let e = err_text(&search(&["--resume", not_study.to_str().unwrap()]));
    assert!(e.contains("not an attune study") || e.contains("not a study"), "{e}");
    assert_eq!(std::fs::read(not_study.join("study.db")).unwrap(), b"this is not sqlite");
}

#[test]
fn a_resumed_study_refuses_another_space_and_keeps_its_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let space = write(tmp.path(), "space.toml", SPACE_1D);
    let cmd = python_objective(tmp.path(), "obj.py", QUADRATIC);
    let out = tmp.path().join("study");
    ok(&search(&[
        "--space",
        space.to_str().unwrap(),
        "--trials",
        "3",
        "--command",
        &cmd,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--no-plots",
    ]));
    let before = trials(&out);
    let other = write(tmp.path(), "other.toml", &SPACE_1D.replace("high = 1.0", "high = 2.0"));
    let e = err_text(&search(&["--resume", out.to_str().unwrap(), "--space", other.to_str().unwrap()]));
    assert!(e.contains("differs"), "{e}");
    ok(&search(&["--resume", out.to_str().unwrap(), "--trials", "5", "--quiet", "--no-plots"]));
    let after = trials(&out);
    assert_eq!(after.len(), 5);
    assert_eq!(&after[..3], &before[..], "resuming changed stored trials");
}

#[test]
fn kill_9_loses_at_most_the_running_trial_and_resume_finishes_the_study() {
    let slowish = r#"
import json, sys, time
x = json.loads(sys.stdin.readline())["params"]["x"]
time.sleep(0.25)
print(json.dumps({"value": (x - 0.3) ** 2}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let space = write(tmp.path(), "space.toml", SPACE_1D);
    let cmd = python_objective(tmp.path(), "obj.py", slowish);
    let out = tmp.path().join("study");
    let mut child = Command::new(BIN)
        .args(["search", "--space", space.to_str().unwrap(), "--trials", "40", "--sampler", "tpe", "--command", &cmd])
        .args(["--out", out.to_str().unwrap(), "--quiet", "--no-plots"])
        .spawn()
        .unwrap();
    // Wait for a few complete trials, then kill -9 mid-trial.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let done = std::fs::read_to_string(out.join("trials.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
        if done >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(120));
    child.kill().unwrap();
    child.wait().unwrap();
    let exported = trials(&out);
    let complete_before: Vec<&Value> = exported.iter().filter(|t| t["state"] == "complete").collect();
    assert!(complete_before.len() >= 4);
    let text = ok(&search(&["--resume", out.to_str().unwrap(), "--trials", "12", "--quiet", "--no-plots"]));
    let after = trials(&out);
    assert_eq!(after.len(), 12);
    // Every trial complete before the kill is still complete with the same values.
    for t in complete_before {
        let n = t["number"].as_u64().unwrap() as usize;
        assert_eq!(after[n]["values"], t["values"]);
        assert_eq!(after[n]["state"], "complete");
    }
    let lost: Vec<&Value> = after.iter().filter(|t| t["state"] == "failed").collect();
    assert!(lost.len() <= 1, "more than the running trial was lost: {lost:?}\n{text}");
    for t in lost {
        assert!(t["error"].as_str().unwrap().contains("lost"), "{t}");
    }
}

#[test]
fn a_training_study_overlays_config_keys_and_reads_the_run_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let space = write(
        tmp.path(),
        "space.toml",
        "direction = \"maximize\"\n[params]\n\"optimizer.lr\" = { type = \"float\", low = 1e-3, high = 1e-2, log = true }\n\"model.positions\" = { type = \"categorical\", choices = [\"learned\", \"rope\"] }\n",
    );
    let out = tmp.path().join("study");
    let mut args: Vec<&str> = vec!["--space", space.to_str().unwrap(), "--trials", "3", "--sampler", "random"];
    for s in TINY_SETS {
        args.extend(["--set", s]);
    }
    args.extend([
        "--metric",
        "eval_accuracy",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--no-plots",
        "--threads",
        "1",
    ]);
    ok(&search(&args));
    let t = trials(&out);
    assert_eq!(t.len(), 3);
    for trial in &t {
        assert_eq!(trial["state"], "complete", "{trial}");
        let run = out.join(trial["attrs"]["run_dir"].as_str().unwrap());
        let run_summary: Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(trial["values"][0], run_summary["eval_accuracy"]);
        let cfg: Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["optimizer"]["lr"], trial["params"]["optimizer.lr"]);
        assert_eq!(cfg["model"]["positions"], trial["params"]["model.positions"]);
        // Validation every 4 of 8 steps: two intermediate values, at steps 4 and 8.
        let steps: Vec<u64> =
            trial["intermediate"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect();
        assert_eq!(steps, [4, 8]);
    }
}

/// A program that "trains" in PBT segments: its state is a score that grows by
/// `gain(lr) = 1 - (log10(lr) + 1)^2` per step (best at lr = 0.1); it restores the score from
/// `restore_from` and saves it to `save_to`.
const PBT_PROGRAM: &str = r#"
import json, math, os, sys
req = json.loads(sys.stdin.readline())
lr, pbt = req["params"]["lr"], req["pbt"]
score = 0.0
if pbt["restore_from"]:
    score = json.load(open(os.path.join(pbt["restore_from"], "state.json")))["score"]
start = score
score += pbt["interval"] * (1 - (math.log10(lr) + 1) ** 2)
json.dump({"score": score, "start": start, "lr": lr}, open(os.path.join(pbt["save_to"], "state.json"), "w"))
print(json.dumps({"value": score}))
"#;

#[test]
fn pbt_copies_the_top_members_weights_and_perturbs_their_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let space = write(
        tmp.path(),
        "space.toml",
        "direction = \"maximize\"\n[params]\nlr = { type = \"float\", low = 1e-4, high = 1.0, log = true }\n",
    );
    let cmd = python_objective(tmp.path(), "pbt.py", PBT_PROGRAM);
    let out = tmp.path().join("study");
    let args =
        ["--space", space.to_str().unwrap(), "--pbt", "--population", "4", "--generations", "3", "--interval", "10"];
    ok(&search(
        &[&args[..], &["--command", &cmd, "--seed", "5", "--out", out.to_str().unwrap(), "--quiet", "--no-plots"]]
            .concat(),
    ));
    let t = trials(&out);
    assert_eq!(t.len(), 12, "4 members x 3 generations");
    let state = |n: u64| -> Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("trials/{n:05}/state.json"))).unwrap()).unwrap()
    };
    let segment =
        |m: u64, g: u64| t.iter().find(|x| x["attrs"]["pbt_member"] == m && x["attrs"]["pbt_generation"] == g).unwrap();
    for g in 1..3u64 {
        // 4 members, quantile 0.25: exactly one exploits, the worst of the previous generation.
        let prev: Vec<f64> = (0..4).map(|m| segment(m, g - 1)["values"][0].as_f64().unwrap()).collect();
        let worst = (0..4u64).min_by(|&a, &b| prev[a as usize].total_cmp(&prev[b as usize])).unwrap();
        let best = (0..4u64).max_by(|&a, &b| prev[a as usize].total_cmp(&prev[b as usize])).unwrap();
        for m in 0..4u64 {
            let seg = segment(m, g);
            let start = state(seg["number"].as_u64().unwrap())["start"].as_f64().unwrap();
            let parent = &seg["attrs"]["pbt_parent"];
            if m == worst {
                assert_eq!(parent, best, "generation {g}: member {m} should copy the best member {best}");
                // It starts from the donor's weights (score) with the donor's lr times 0.8 or 1.2.
                assert_eq!(start, prev[best as usize]);
                let donor_lr = segment(best, g - 1)["params"]["lr"].as_f64().unwrap();
                let lr = seg["params"]["lr"].as_f64().unwrap();
                let ratio = lr / donor_lr;
                assert!((ratio - 0.8).abs() < 1e-9 || (ratio - 1.2).abs() < 1e-9, "lr {lr} from {donor_lr}");
            } else {
                assert!(parent.is_null(), "generation {g}: member {m} should continue");
                assert_eq!(start, prev[m as usize]);
                assert_eq!(seg["params"], segment(m, g - 1)["params"]);
            }
        }
    }
    let schedule: Value = serde_json::from_slice(&std::fs::read(out.join("pbt_schedule.json")).unwrap()).unwrap();
    assert_eq!(schedule["entries"].as_array().unwrap().len(), 12);
    assert_eq!(schedule["best_lineage"].as_array().unwrap().len(), 3);
}

#[test]
fn pbt_training_segments_start_from_the_previous_segments_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let space = write(
        tmp.path(),
        "space.toml",
        "direction = \"maximize\"\n[params]\n\"optimizer.lr\" = { type = \"float\", low = 1e-3, high = 1e-2, log = true }\n",
    );
    let out = tmp.path().join("study");
    let mut args: Vec<&str> =
        vec!["--space", space.to_str().unwrap(), "--pbt", "--population", "2", "--generations", "2", "--interval", "4"];
    // PBT sets each segment's steps itself.
    for s in TINY_SETS.iter().filter(|s| !s.starts_with("train.steps=")) {
        args.extend(["--set", s]);
    }
    args.extend(["--out", out.to_str().unwrap(), "--quiet", "--no-plots", "--threads", "1"]);
    ok(&search(&args));
    for trial in trials(&out) {
        assert_eq!(trial["state"], "complete", "{trial}");
        let run = out.join(trial["attrs"]["run_dir"].as_str().unwrap());
        let summary: Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
        let g = trial["attrs"]["pbt_generation"].as_u64().unwrap();
        // Generation g trains to step 4 (g + 1); a later segment continues from step 4 g, so it
        // validates only at its own steps.
        assert_eq!(summary["steps"], 4 * (g + 1));
        let steps: Vec<u64> =
            trial["intermediate"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect();
        assert_eq!(steps, [4 * (g + 1)], "generation {g}");
    }
}

#[test]
fn a_two_objective_study_reports_its_pareto_front() {
    // f1 = x^2, f2 = (x - 2)^2 on [-1, 3]: the front is x in [0, 2].
    let program = r#"
import json, sys
x = json.loads(sys.stdin.readline())["params"]["x"]
print(json.dumps({"values": [x * x, (x - 2) ** 2]}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let space = write(
        tmp.path(),
        "space.toml",
        "directions = [\"minimize\", \"minimize\"]\n[params]\nx = { type = \"float\", low = -1.0, high = 3.0 }\n",
    );
    let cmd = python_objective(tmp.path(), "obj.py", program);
    let out = tmp.path().join("study");
    let args = ["--space", space.to_str().unwrap(), "--trials", "16", "--sampler", "ga", "--command", &cmd];
    ok(&search(&[&args[..], &["--out", out.to_str().unwrap(), "--quiet"]].concat()));
    let front = summary(&out)["pareto_front"].as_array().unwrap().clone();
    let t = trials(&out);
    let xs: Vec<f64> = t.iter().map(|t| t["params"]["x"].as_f64().unwrap()).collect();
    // Exactly the trials with x in [0, 2] are on the front (no two have the same x).
    let expected: Vec<u64> = (0..t.len() as u64).filter(|&i| (0.0..=2.0).contains(&xs[i as usize])).collect();
    let mut got: Vec<u64> = front.iter().map(|p| p["number"].as_u64().unwrap()).collect();
    got.sort();
    assert_eq!(got, expected, "x = {xs:?}");
    assert!(out.join("plots/pareto.png").is_file());
}

#[test]
fn a_grid_study_stops_when_every_point_is_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let space = write(
        tmp.path(),
        "space.toml",
        "[params]\na = { type = \"int\", low = 0, high = 2 }\nb = { type = \"categorical\", choices = [\"x\", \"y\"] }\n",
    );
    let cmd = python_objective(
        tmp.path(),
        "obj.py",
        "import json, sys\np = json.loads(sys.stdin.readline())['params']\nprint(json.dumps({'value': p['a']}))\n",
    );
    let out = tmp.path().join("study");
    let args = [
        "--space",
        space.to_str().unwrap(),
        "--trials",
        "50",
        "--sampler",
        "grid",
        "--parallel",
        "2",
        "--command",
        &cmd,
    ];
    ok(&search(&[&args[..], &["--out", out.to_str().unwrap(), "--quiet", "--no-plots"]].concat()));
    let t = trials(&out);
    let mut points: Vec<String> = t.iter().map(|t| t["params"].to_string()).collect();
    points.sort();
    points.dedup();
    assert_eq!((t.len(), points.len()), (6, 6), "3 x 2 grid points, each once: {points:?}");
}
