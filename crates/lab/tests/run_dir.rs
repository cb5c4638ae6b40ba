//! Run directories: one process per directory, no silent overwrite, corruption reported and
//! never loaded, and kill -9 at random moments (docs/persistence.md).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::run_dir::{BIN, assert_ok, attune, outcome, recover, resume_args, run_args, temporaries};

/// Every file under `dir` with the BLAKE3 of its bytes, for "nothing changed" checks (the lock
/// file, which each process that takes the directory rewrites with its pid, left out).
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else if e.file_name() != attune_persist::LOCK_FILE {
                files.push((e.path(), blake3::hash(&std::fs::read(e.path()).unwrap()).to_hex().to_string()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_second_process_and_a_new_run_into_an_existing_directory_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    assert_ok(&attune(&run_args(&dir, 4), &[]), "the first run");
    let before = snapshot(&dir);

    // A new run into it: refused, naming both ways forward.
    let out = attune(&run_args(&dir, 4), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already holds a run"), "{err}");
    assert!(err.contains("--resume") && err.contains("--overwrite"), "{err}");
    assert_eq!(snapshot(&dir), before, "a refused run changed the directory");

    // A second process while another holds the directory: refused at once, naming the holder.
    let held = attune_persist::DirLock::acquire(&dir).unwrap();
    let before = snapshot(&dir);
    let out = attune(&resume_args(&dir), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use by another attune process"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("run"), "{err}");
    assert_eq!(snapshot(&dir), before, "a refused process changed the directory");
    drop(held);

    // --overwrite starts over.
    let mut args = run_args(&dir, 2);
    args.push("--overwrite".into());
    assert_ok(&attune(&args, &[]), "--overwrite");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 2);
}

#[test]
fn the_default_run_directory_never_replaces_an_earlier_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = run_args(Path::new("unused"), 2);
    let out_at = args.iter().position(|a| a == "--out").unwrap();
    args.drain(out_at..out_at + 2);
    for _ in 0..2 {
        let out = std::process::Command::new(BIN).args(&args).current_dir(tmp.path()).output().unwrap();
        assert_ok(&out, "a run with the default directory");
    }
    assert!(tmp.path().join("runs/mqar-seed0/summary.json").is_file());
    assert!(tmp.path().join("runs/mqar-seed0-2/summary.json").is_file());
}

#[test]
fn a_flipped_bit_in_any_committed_file_is_reported_and_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    assert_ok(&attune(&run_args(&dir, 4), &[]), "the run");
    let checkpoints = attune_lab::rundir::checkpoints(&dir).unwrap();
    let newest = checkpoints.last().unwrap().clone();
    let files: Vec<PathBuf> = std::fs::read_dir(&newest).unwrap().flatten().map(|e| e.path()).collect();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let good = std::fs::read(&file).unwrap();
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x04;
        std::fs::write(&file, &bad).unwrap();
        // eval refuses, naming the damaged file (or the manifest).
        let out = attune(&["eval".into(), "--checkpoint".into(), dir.display().to_string()], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "eval loaded a damaged {name}");
        assert!(err.contains(&name) || err.contains("MANIFEST"), "{name}: {err}");
        std::fs::write(&file, &good).unwrap();
    }
    // --resume falls back to the previous checkpoint with a warning naming the damaged file.
    let model = newest.join("model.safetensors");
    let mut bad = std::fs::read(&model).unwrap();
    bad[100] ^= 0x01;
    std::fs::write(&model, &bad).unwrap();
    let mut args = resume_args(&dir);
    args.extend(["--steps".into(), "6".into()]);
    let out = attune(&args, &[]);
    assert_ok(&out, "resume past a damaged checkpoint");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipping damaged checkpoint") && err.contains("model.safetensors"), "{err}");
}

#[test]
fn kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 12;
    let reference_dir = tmp.path().join("reference");
    assert_ok(&attune(&run_args(&reference_dir, steps), &[]), "the uninterrupted run");
    let reference = outcome(&reference_dir);
    // Retention: of the 6 checkpoints the newest 2 are kept, plus the best (which may be one of them).
    let kept = attune_lab::rundir::checkpoints(&reference_dir).unwrap();
    assert!((2..=3).contains(&kept.len()), "{kept:?}");
    assert!(kept.iter().any(|p| p.ends_with("step-000000012")) && kept.iter().any(|p| p.ends_with("step-000000010")));
    // How long a whole run takes here, to spread the kills over it (and its first moments).
    let started = std::time::Instant::now();
    assert_ok(&attune(&run_args(&tmp.path().join("timing"), steps), &[]), "timing run");
    let whole = started.elapsed().as_secs_f64();
    let mut rng = attune_tensor::Rng::new(2026);
    for i in 0..20 {
        let dir = tmp.path().join(format!("kill-{i}"));
        // Two kills per trial: one into the first run (some in its first instants), one into the
        // first resume; then resume to the end.
        for round in 0..2 {
            let args = if round == 0 || !dir.join("config.json").is_file() {
                run_args(&dir, steps)
            } else {
                resume_args(&dir)
            };
            let u: f64 =
                rng.rand(1, attune_tensor::DType::F64, &attune_tensor::Device::Cpu).unwrap().to_vec::<f64>().unwrap()
                    [0];
            let delay = if i % 4 == 0 { u * 0.05 } else { u * whole };
            let mut child = std::process::Command::new(BIN)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_secs_f64(delay));
            let _ = child.kill(); // SIGKILL; the run may already have finished
            let _ = child.wait();
        }
        let out = recover(&dir, steps);
        assert_ok(&out, &format!("recovery after kills in trial {i}"));
        let got = outcome(&dir);
        assert!(got == reference, "trial {i}: the recovered run differs: {}", got.diff(&reference));
        assert!(temporaries(&dir).is_empty(), "trial {i}: temporaries left: {:?}", temporaries(&dir));
    }
}
