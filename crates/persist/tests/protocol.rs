//! The commit protocol's guarantees, checked on a real file system.

use attune_persist::{
    AppendLog, Committed, DirLock, MANIFEST, PersistError, Staging, TEMP_MARKER, list_committed, remove_committed,
    remove_temporaries, write_atomic,
};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("sub/summary.json");
    write_atomic(&p, b"old contents, longer than the new").unwrap();
    write_atomic(&p, b"new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(names(&tmp.path().join("sub")), vec!["summary.json"]);
}

#[test]
fn a_committed_directory_reads_back_verified_and_a_flipped_bit_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("checkpoints/step-000000004");
    let mut s = Staging::begin(&target).unwrap();
    let model: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.add("model.safetensors", &model).unwrap();
    s.add("state.json", b"{\"step\": 4}").unwrap();
    assert!(!target.exists(), "nothing carries the final name before the commit");
    let c = s.commit(serde_json::json!({"step": 4})).unwrap();
    assert_eq!(c.meta()["step"], 4);
    let c = Committed::open(&target).unwrap();
    assert_eq!(c.read("model.safetensors").unwrap(), model);
    c.verify().unwrap();
    assert_eq!(names(&target), vec![MANIFEST, "model.safetensors", "state.json"]);
    assert_eq!(list_committed(&tmp.path().join("checkpoints"), "step-").unwrap(), vec![target.clone()]);

    // Every bit position class: first byte, middle, last.
    for at in [0usize, 5_000, 9_999] {
        let mut bad = model.clone();
        bad[at] ^= 0x10;
        std::fs::write(target.join("model.safetensors"), &bad).unwrap();
        let err = Committed::open(&target).unwrap().read("model.safetensors").unwrap_err();
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors is damaged"), "{err}");
    }
    // Truncation too.
    std::fs::write(target.join("model.safetensors"), &model[..100]).unwrap();
    assert!(matches!(Committed::open(&target).unwrap().verify(), Err(PersistError::Corrupt { .. })));
    // A manifest damaged into other valid JSON (a renamed file) is caught by its own checksum.
    std::fs::write(target.join("model.safetensors"), &model).unwrap();
    let text = std::fs::read_to_string(target.join(MANIFEST)).unwrap();
    std::fs::write(target.join(MANIFEST), text.replace("model.safetensors", "model.safetensorx")).unwrap();
    let err = Committed::open(&target).unwrap_err();
    assert!(err.to_string().contains("no longer match its own BLAKE3"), "{err}");
    // A damaged manifest is reported as such.
    std::fs::write(target.join(MANIFEST), b"{\"format\": 1, \"fil").unwrap();
    let err = Committed::open(&target).unwrap_err();
    assert!(err.to_string().contains("manifest is damaged"), "{err}");
}

#[test]
fn an_abandoned_staging_directory_is_never_listed_and_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("checkpoints");
    let target = parent.join("step-000000002");
    let mut s = Staging::begin(&target).unwrap();
    s.add("model.safetensors", b"abc").unwrap();
    // A crash: the staging directory stays (forget skips its Drop clean-up).
    std::mem::forget(s);
    assert!(list_committed(&parent, "step-").unwrap().is_empty());
    let removed = remove_temporaries(&parent).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(removed[0].to_string_lossy().contains(TEMP_MARKER));
    assert!(names(&parent).is_empty());
    // An error path (dropped without commit) cleans up by itself.
    let s = Staging::begin(&target).unwrap();
    drop(s);
    assert!(names(&parent).is_empty());
}

#[test]
fn recommitting_a_name_replaces_it_and_retention_removes_whole_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("checkpoints");
    for (step, body) in [(2u64, "a"), (4, "b"), (4, "c")] {
        let mut s = Staging::begin(&parent.join(format!("step-{step:09}"))).unwrap();
        s.add("state.json", body.as_bytes()).unwrap();
        s.commit(serde_json::json!({ "step": step })).unwrap();
    }
    let all = list_committed(&parent, "step-").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(Committed::open(&all[1]).unwrap().read("state.json").unwrap(), b"c");
    remove_committed(&all[0]).unwrap();
    assert_eq!(names(&parent), vec!["step-000000004"]);
}

#[test]
fn a_second_lock_on_a_directory_fails_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let held = DirLock::acquire(tmp.path()).unwrap();
    let err = DirLock::acquire(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PersistError::Locked { pid: Some(p), .. } if p == std::process::id()), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    drop(held);
    DirLock::acquire(tmp.path()).expect("the lock is free once its holder is gone");
}

#[test]
fn an_append_log_is_cut_back_to_its_committed_length() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("metrics.jsonl");
    let mut log = AppendLog::create(&p).unwrap();
    log.append(b"row 1\n").unwrap();
    log.append(b"row 2\n").unwrap();
    let committed = log.sync().unwrap();
    log.append(b"row 3 after the checkpoint\n").unwrap();
    drop(log);
    let mut log = AppendLog::open_at(&p, committed).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"row 1\nrow 2\n");
    log.append(b"row 3\n").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"row 1\nrow 2\nrow 3\n");
    // A file shorter than the checkpoint says so instead of silently continuing.
    let err = AppendLog::open_at(&p, 1_000).unwrap_err();
    assert!(err.to_string().contains("rows it recorded are missing"), "{err}");
}

#[test]
fn out_of_space_errors_name_the_bytes_and_the_way_back() {
    let e = PersistError::Io {
        op: "writing",
        path: "runs/x/checkpoints/step-000000004/model.safetensors".into(),
        bytes: Some(123_456),
        source: std::io::Error::from_raw_os_error(28),
    };
    assert!(e.is_out_of_space());
    let msg = e.to_string();
    assert!(msg.contains("123456 bytes needed") && msg.contains("--resume"), "{msg}");
}
