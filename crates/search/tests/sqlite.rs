//! The storage contract (tests/storage_contract) run against both stores, memory and SQLite,
//! then what only a file can show: reopening, several handles and threads on one file, files that
//! are not studies (refused and left byte-identical), and a worker killed with SIGKILL.

mod storage_contract;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use attune_search::{Finish, MemoryStorage, SearchError, SqliteStorage, Storage, TrialState};
use serde_json::{Map, json};
use storage_contract::{AWKWARD, Fresh, attrs, bits, record};

fn memory() -> Fresh {
    Fresh::shared(Arc::new(MemoryStorage::new()))
}

fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let store = Arc::new(SqliteStorage::create(&path).unwrap());
    // Each handle is a connection of its own, as another process's would be.
    let handle = Box::new(move || Arc::new(SqliteStorage::open(&path).unwrap()) as Arc<dyn Storage>);
    Fresh { store, handle, guard: Box::new(dir) }
}

storage_contract::contract!(memory_store, memory);
storage_contract::contract!(sqlite_store, sqlite);

#[test]
fn a_reopened_study_holds_everything_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let s = SqliteStorage::create(&path).unwrap();
    s.init_study(&record(9)).unwrap();
    for i in 0..4 {
        let n = s.create_trial(&[AWKWARD[i], i as f64], &format!("w{i}"), &attrs(&[("i", json!(i))])).unwrap();
        s.report(n, 0, AWKWARD[3 - i]).unwrap();
        s.report(n, 10, 0.5 * i as f64).unwrap();
    }
    s.finish(0, &Finish::complete(vec![AWKWARD[2]])).unwrap();
    s.finish(1, &Finish::pruned()).unwrap();
    s.finish(2, &Finish::failed("nan loss")).unwrap();
    s.set_attr(3, "parent", &json!(1)).unwrap();
    let written = s.trials().unwrap();
    drop(s);

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.study().unwrap(), Some(record(9)));
    let read = s.trials().unwrap();
    assert_eq!(read, written);
    // PartialEq on floats would let 0.0 and -0.0 pass; the bits must match too.
    for (a, b) in read.iter().zip(&written) {
        assert_eq!(bits(&a.params), bits(&b.params));
        assert_eq!(a.started.to_bits(), b.started.to_bits());
    }
    assert_eq!(SqliteStorage::open_or_create(&path).unwrap().trials().unwrap(), written);
}

#[test]
fn create_refuses_an_existing_file_and_open_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let missing = SqliteStorage::open(&path);
    assert!(matches!(&missing, Err(SearchError::NotAStudy { path: p, .. }) if p == &path), "{missing:?}");
    assert!(!path.exists(), "open must not create the file");

    SqliteStorage::create(&path).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let err = SqliteStorage::create(&path).unwrap_err().to_string();
    assert!(err.contains("study.db") && err.contains("fix:"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(SqliteStorage::open(&path).unwrap().trials().unwrap().len(), 1);
}

#[test]
fn open_or_create_makes_a_study_of_a_missing_or_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("new.db");
    SqliteStorage::open_or_create(&missing).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    assert_eq!(SqliteStorage::open(&missing).unwrap().trials().unwrap().len(), 1);

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(SqliteStorage::open(&empty), Err(SearchError::NotAStudy { .. })));
    assert_eq!(std::fs::read(&empty).unwrap(), b"", "open must not initialise an empty file");
    SqliteStorage::open_or_create(&empty).unwrap();
    assert!(SqliteStorage::open(&empty).is_ok());
}

/// Sorted names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every way of opening `path` is refused with NotAStudy naming it and `expect`, and neither
/// the file nor its directory changes.
fn assert_refused_untouched(path: &Path, expect: &str) {
    let bytes = std::fs::read(path).unwrap();
    let names = listing(path.parent().unwrap());
    for (how, result) in [("open", SqliteStorage::open(path)), ("open_or_create", SqliteStorage::open_or_create(path))]
    {
        match result {
            Err(e @ SearchError::NotAStudy { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{how}: {msg}");
                assert!(msg.contains(expect) && msg.contains("fix:"), "{how}: {msg}");
            }
            other => panic!("{how} of {} gave {other:?}, not NotAStudy", path.display()),
        }
        assert!(std::fs::read(path).unwrap() == bytes, "{how} changed {}", path.display());
        assert_eq!(listing(path.parent().unwrap()), names, "{how} left files beside {}", path.display());
    }
    assert!(SqliteStorage::create(path).is_err());
    assert!(std::fs::read(path).unwrap() == bytes);
}

#[test]
fn files_that_are_not_studies_are_refused_and_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();

    let random = dir.path().join("random.db");
    let mut rng = attune_rng::Rng::from_key(&[42]);
    std::fs::write(&random, (0..8192).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()).unwrap();
    assert_refused_untouched(&random, "not a SQLite database");

    let foreign = dir.path().join("notes.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes VALUES (1, 'hi');")
        .unwrap();
    drop(conn);
    assert_refused_untouched(&foreign, "without attune's tables (it has notes)");

    let future = dir.path().join("future.db");
    SqliteStorage::create(&future).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    let conn = rusqlite::Connection::open(&future).unwrap();
    conn.execute("UPDATE schema_version SET version = ?1", [attune_search::storage::SCHEMA_VERSION + 1]).unwrap();
    drop(conn);
    assert_refused_untouched(&future, "newer attune");
}

// --- SIGKILL ----------------------------------------------------------------------------------

/// Names the study file when this test binary runs as the killed worker.
const KILL_CHILD_ENV: &str = "ATTUNE_SQLITE_KILL_CHILD";
/// Steps each worker trial reports before it is told.
const STEPS: u64 = 4;

fn expected_value(n: u64) -> f64 {
    (n as f64 + 2.0).sqrt() / 3.0
}

fn expected_step(n: u64, step: u64) -> f64 {
    1.0 / (n + step + 1) as f64
}

/// The worker role (a no-op in a normal run): ask / report / tell trials on the file in
/// `KILL_CHILD_ENV`, printing `told N` after each tell returns, until it is killed (or a bound
/// runs out, so an orphan cannot run forever).
#[test]
fn kill_child_role() {
    let Ok(path) = std::env::var(KILL_CHILD_ENV) else { return };
    let s = SqliteStorage::open(Path::new(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let n = s.create_trial(&[0.5], "child", &Map::new()).unwrap();
        for step in 0..STEPS {
            s.report(n, step, expected_step(n, step)).unwrap();
        }
        s.finish(n, &Finish::complete(vec![expected_value(n)])).unwrap();
        writeln!(out, "told {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Runs the worker on `path` and kills it with SIGKILL once it has told `kill_after` trials
/// (at once when 0); returns the numbers it said were told.
fn run_and_kill(path: &Path, kill_after: usize, extra_delay: std::time::Duration) -> BTreeSet<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill_child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut told = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    if kill_after == 0 {
        std::thread::sleep(extra_delay);
        child.kill().unwrap();
    }
    let mut killed = kill_after == 0;
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("told ") {
            told.insert(n.trim().parse::<u64>().unwrap());
        }
        if !killed && told.len() >= kill_after {
            std::thread::sleep(extra_delay);
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the worker should have died of SIGKILL: {status:?}");
    told
}

#[test]
fn a_killed_worker_loses_at_most_its_running_trial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    SqliteStorage::create(&path).unwrap();
    let mut told_before = BTreeSet::new();
    let mut lost_before = BTreeSet::new();
    // Different moments: at once (before the worker has opened the file), a few milliseconds in
    // (while it starts up or runs its first trials), and after 1, 6 and 20 trials at various
    // phases of the next one.
    let rounds = [(0usize, 0u64), (0, 15), (1, 0), (6, 1), (20, 3)];
    for (round, (kill_after, delay_ms)) in rounds.into_iter().enumerate() {
        let delay = std::time::Duration::from_millis(delay_ms);
        let told = run_and_kill(&path, kill_after, delay);
        assert!(told.len() >= kill_after, "round {round}: the worker told {} trials", told.len());

        let s = SqliteStorage::open(&path).expect("a killed worker's study reopens");
        let check: String =
            rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "round {round}");
        let trials = s.trials().unwrap();
        assert_eq!(trials.iter().map(|t| t.number).collect::<Vec<_>>(), (0..trials.len() as u64).collect::<Vec<_>>());
        for t in &trials {
            let n = t.number;
            let reported: Vec<(u64, f64)> =
                (0..t.intermediate.len() as u64).map(|s| (s, expected_step(n, s))).collect();
            assert_eq!(t.intermediate, reported, "round {round}: trial {n}'s reports");
            match t.state {
                TrialState::Complete => {
                    assert_eq!(t.values.as_deref().map(bits), Some(bits(&[expected_value(n)])), "trial {n}");
                    assert_eq!(t.intermediate.len() as u64, STEPS, "trial {n}");
                }
                TrialState::Running => assert!(!told.contains(&n) && !told_before.contains(&n), "told {n} is running"),
                other => panic!("round {round}: trial {n} is {other:?}"),
            }
        }
        for &n in told.iter().chain(&told_before) {
            assert_eq!(trials[n as usize].state, TrialState::Complete, "round {round}: told trial {n}");
        }
        let running: BTreeSet<u64> =
            trials.iter().filter(|t| t.state == TrialState::Running).map(|t| t.number).collect();
        let new_running: Vec<&u64> = running.difference(&lost_before).collect();
        assert!(new_running.len() <= 1, "round {round}: running after the kill: {new_running:?}");
        eprintln!(
            "round {round}: told {} (kill after {kill_after}), stored {}, newly running {new_running:?}",
            told.len(),
            trials.len()
        );
        told_before.extend(told);
        lost_before = running;
    }
    assert!(told_before.len() >= 27, "the worker told {} trials over all rounds", told_before.len());
}
