//! The study directory: exports that parse back to the stored trials, refusals that leave
//! foreign directories untouched, and the lock against a second process.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use attune_search::sampler::SamplerConfig;
use attune_search::studydir::{STUDY_DB, STUDY_JSON, SUMMARY_JSON, TRIALS_JSONL};
use attune_search::{Finish, SearchError, Space, Storage, Study, StudyDir, StudyRecord, Summary};
use serde_json::{Value, json};

/// Held by the tests that spawn a child process and by those that drop a directory's lock and
/// take it again at once: a child being spawned holds copies of every descriptor of this
/// process, the lock file's included, until it execs (they close on exec), so for that moment
/// the lock is not free even though its `StudyDir` is gone.
static FORK_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_guard() -> std::sync::MutexGuard<'static, ()> {
    FORK_GUARD.lock().unwrap_or_else(|e| e.into_inner())
}

fn record() -> StudyRecord {
    let space = Space::from_toml(
        r#"
        direction = "minimize"
        [params]
        lr = { type = "float", low = 1e-4, high = 0.1, log = true }
        layers = { type = "int", low = 1, high = 6, step = 1 }
        act = { type = "categorical", choices = ["relu", "gelu", true] }
        "#,
        "<test>",
    )
    .unwrap();
    StudyRecord {
        space,
        sampler: serde_json::to_value(SamplerConfig::Random).unwrap(),
        pruner: None,
        seed: 11,
        driver: json!({"metric": "valid_loss"}),
    }
}

fn open_study(dir: &StudyDir) -> Study {
    let storage: Arc<dyn Storage> = dir.storage();
    Study::open(storage, record(), SamplerConfig::Random.build(), None).unwrap()
}

/// Sorted names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn as_f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn exports_parse_back_to_the_stored_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StudyDir::create(&tmp.path().join("study")).unwrap();
    let study = open_study(&dir);
    // Six trials: complete (two of them), pruned, failed, a non-finite value (stored as
    // failed), and one left running.
    let outcomes = [
        Some(Finish::complete(vec![0.75])),
        Some(Finish::pruned()),
        Some(Finish::complete(vec![0.1 + 0.2])),
        Some(Finish::failed("exit 2: boom")),
        Some(Finish::complete(vec![f64::NAN])),
        None,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let asked = study.ask(&format!("worker{}", i % 2)).unwrap();
        for step in 0..i as u64 {
            study.report(asked.number, step * 10, 1.0 / (step + 2) as f64).unwrap();
        }
        study.storage().set_attr(asked.number, "order", &json!(i)).unwrap();
        if let Some(finish) = outcome {
            study.tell(asked.number, finish).unwrap();
        }
        dir.export(&study).unwrap();
    }

    let trials = study.trials().unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.dir().join(name)).unwrap();
    let stored_record: StudyRecord = serde_json::from_str(&read(STUDY_JSON)).unwrap();
    assert_eq!(&stored_record, study.record());

    let lines: Vec<Value> = read(TRIALS_JSONL).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    let space = study.space();
    for (line, t) in lines.iter().zip(&trials) {
        let n = t.number;
        assert_eq!(line["number"], json!(n));
        // External values, and each maps back to exactly the stored internal value.
        let params = line["params"].as_object().unwrap();
        assert_eq!(params.len(), 3, "trial {n}: {params:?}");
        for (p, &x) in space.params.iter().zip(&t.params) {
            assert_eq!(p.dist.internal(&params[&p.name]), Some(x), "trial {n}: {}", p.name);
        }
        assert!(params["layers"].is_i64() && params["lr"].is_f64(), "trial {n}: {params:?}");
        assert_eq!(line["state"], json!(t.state.name()));
        assert_eq!(line["values"].as_array().map(|_| as_f64s(&line["values"])), t.values);
        let steps: Vec<(u64, f64)> = line["intermediate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        assert_eq!(steps, t.intermediate);
        assert_eq!(steps.len(), n as usize, "trial {n} reported {n} steps");
        assert_eq!(line["worker"], json!(format!("worker{}", n % 2)));
        assert_eq!(line["started"].as_f64(), Some(t.started));
        assert_eq!(line["finished"].as_f64(), t.finished);
        assert_eq!(line["duration"].as_f64(), t.finished.map(|f| f - t.started));
        assert_eq!(line["error"].as_str(), t.error.as_deref());
        assert_eq!(line["attrs"], json!({"order": n}));
    }
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["complete", "pruned", "complete", "failed", "failed", "running"]);
    assert!(lines[4]["error"].as_str().unwrap().contains("non-finite"), "{}", lines[4]);

    let summary: Summary = serde_json::from_str(&read(SUMMARY_JSON)).unwrap();
    assert_eq!(summary, study.summary().unwrap());
    assert_eq!((summary.best_trial, summary.best_value), (Some(2), Some(0.1 + 0.2)));
    assert_eq!((summary.n_complete, summary.n_pruned, summary.n_failed, summary.n_running), (2, 1, 2, 1));
    // Nothing but the study's files (and SQLite's WAL beside its database while it is open): no
    // temporaries left by the atomic writes.
    let names: Vec<String> = listing(dir.dir()).into_iter().filter(|n| !n.starts_with("study.db-")).collect();
    assert_eq!(names, [".attune.lock", STUDY_DB, STUDY_JSON, SUMMARY_JSON, TRIALS_JSONL]);
}

#[test]
fn a_reopened_directory_resumes_its_study() {
    let _guard = fork_guard();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("study");
    let dir = StudyDir::create(&path).unwrap();
    let study = open_study(&dir);
    let a = study.ask("w").unwrap();
    study.tell(a.number, Finish::complete(vec![2.0])).unwrap();
    let before = study.trials().unwrap();
    drop((study, dir));

    let dir = StudyDir::open(&path).unwrap();
    let study = open_study(&dir);
    assert_eq!(study.trials().unwrap(), before);
    assert_eq!(study.ask("w").unwrap().number, 1);
}

#[test]
fn create_refuses_a_non_empty_directory_and_leaves_it_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let err = StudyDir::create(&foreign).unwrap_err().to_string();
    assert!(err.contains("not empty") && err.contains("notes.txt") && err.contains("fix:"), "{err}");
    assert_eq!(listing(&foreign), ["notes.txt"], "not even a lock file may be left");

    let study = tmp.path().join("study");
    drop(StudyDir::create(&study).unwrap());
    let names = listing(&study);
    let err = StudyDir::create(&study).unwrap_err().to_string();
    assert!(err.contains("already holds a study") && err.contains("--resume"), "{err}");
    assert_eq!(listing(&study), names);

    // An empty directory (one the user made for the study) is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(StudyDir::create(&empty).is_ok());
}

#[test]
fn open_refuses_a_directory_without_a_study() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let missing = tmp.path().join("missing");
    for dir in [&foreign, &missing] {
        match StudyDir::open(dir) {
            Err(e @ SearchError::NotAStudy { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&dir.display().to_string()) && msg.contains("fix:"), "{msg}");
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
    }
    assert_eq!(listing(&foreign), ["notes.txt"]);
    assert!(!missing.exists(), "open must not create the directory");
    assert!(StudyDir::open(&foreign).unwrap_err().to_string().contains(STUDY_DB));
}

/// Names the directory when this test binary runs as the second process.
const LOCK_CHILD_ENV: &str = "ATTUNE_STUDYDIR_LOCK_CHILD";

/// The second process's role (a no-op in a normal run): try to open the directory and say how
/// it went.
#[test]
fn lock_child_role() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else { return };
    match StudyDir::open(Path::new(&dir)) {
        Ok(_) => println!("OPENED"),
        Err(e) => println!("REFUSED: {e}"),
    }
}

fn open_from_child(dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["lock_child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_held_directory_refuses_a_second_opener_in_this_process_or_another() {
    let _guard = fork_guard();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("study");
    let held = StudyDir::create(&path).unwrap();
    let pid = format!("pid {}", std::process::id());

    let err = StudyDir::open(&path).unwrap_err().to_string();
    assert!(err.contains("in use by another attune process") && err.contains(&pid), "{err}");
    let child = open_from_child(&path);
    assert!(child.contains("REFUSED") && child.contains("in use by another attune process"), "{child}");
    assert!(child.contains(&pid), "the message names the holder: {child}");

    drop(held);
    assert!(StudyDir::open(&path).is_ok());
    assert!(open_from_child(&path).contains("OPENED"));
}
