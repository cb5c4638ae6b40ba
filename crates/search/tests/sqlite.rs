//! The storage contract (tests/storage_contract) run against both stores, memory and SQLite,
//! then what only a file can show: reopening, several handles and threads on one file, files that
//! are not studies (refused and left byte-identical), and a worker killed with SIGKILL.

mod storage_contract;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use attune_search::{Finish, MemoryStorage, SearchError, SqliteStorage, Storage, TrialState};
use serde_json::{Map, json};
use storage_contract::{AWKWARD, Fresh, attrs, bits, record};

/// The study every single-study test here uses.
const STUDY: &str = attune_search::storage::DEFAULT_STUDY;

fn memory() -> Fresh {
    Fresh::shared(Arc::new(MemoryStorage::new()))
}

fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let store = Arc::new(SqliteStorage::create(&path, STUDY).unwrap());
    // Each handle is a connection of its own, as another process's would be.
    let handle = Box::new(move || Arc::new(SqliteStorage::open(&path, STUDY).unwrap()) as Arc<dyn Storage>);
    Fresh { store, handle, guard: Box::new(dir) }
}

storage_contract::contract!(memory_store, memory);
storage_contract::contract!(sqlite_store, sqlite);

#[test]
fn a_reopened_study_holds_everything_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let s = SqliteStorage::create(&path, STUDY).unwrap();
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

    let s = SqliteStorage::open(&path, STUDY).unwrap();
    assert_eq!(s.study().unwrap(), Some(record(9)));
    let read = s.trials().unwrap();
    assert_eq!(read, written);
    // PartialEq on floats would let 0.0 and -0.0 pass; the bits must match too.
    for (a, b) in read.iter().zip(&written) {
        assert_eq!(bits(&a.params), bits(&b.params));
        assert_eq!(a.started.to_bits(), b.started.to_bits());
    }
    assert_eq!(SqliteStorage::open_or_create(&path, STUDY).unwrap().trials().unwrap(), written);
}

#[test]
fn create_refuses_an_existing_study_and_open_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    let missing = SqliteStorage::open(&path, STUDY);
    assert!(matches!(&missing, Err(SearchError::NotAStudy { path: p, .. }) if p == &path), "{missing:?}");
    assert!(!path.exists(), "open must not create the file");

    SqliteStorage::create(&path, STUDY).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let err = SqliteStorage::create(&path, STUDY).unwrap_err().to_string();
    assert!(err.contains("study.db") && err.contains(&format!("'{STUDY}'")) && err.contains("fix:"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(SqliteStorage::open(&path, STUDY).unwrap().trials().unwrap().len(), 1);

    let err = SqliteStorage::open(&path, "nightly").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SearchError::NotAStudy { .. }), "{msg}");
    assert!(
        msg.contains("'nightly'") && msg.contains(&format!("'{STUDY}' (1 trials)")) && msg.contains("fix:"),
        "{msg}"
    );
    assert!(matches!(SqliteStorage::create(&path, ""), Err(SearchError::Config { .. })));
    assert_eq!(SqliteStorage::list_studies(&path).unwrap(), vec![(STUDY.to_string(), 1)]);
}

#[test]
fn a_file_holds_several_studies_each_numbered_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("studies.db");
    let a = SqliteStorage::create(&path, "a").unwrap();
    let b = SqliteStorage::create(&path, "b").unwrap();
    assert_eq!((a.study_name(), b.study_name()), ("a", "b"));
    a.init_study(&record(1)).unwrap();
    assert_eq!(b.study().unwrap(), None, "b has no record of its own yet");
    b.init_study(&record(2)).unwrap();
    // The same trial numbers in both studies, with different params, reports and attributes.
    for i in 0..3 {
        let n = a.create_leased(&[i as f64], "wa", &attrs(&[("s", json!("a"))]), Duration::ZERO, None).unwrap();
        a.report(n.unwrap(), 0, 10.0 + i as f64).unwrap();
    }
    for i in 0..2 {
        let n = b.create_leased(&[-(i as f64)], "wb", &attrs(&[("s", json!("b"))]), Duration::ZERO, None).unwrap();
        b.report(n.unwrap(), 0, 20.0 + i as f64).unwrap();
    }
    assert_eq!(a.create_leased(&[0.0], "wa", &Map::new(), Duration::ZERO, Some(3)).unwrap(), None, "a's limit");
    assert_eq!(b.create_leased(&[0.0], "wb", &Map::new(), Duration::ZERO, Some(3)).unwrap(), Some(2), "b's own");
    let a_trials = a.trials().unwrap();
    let b_trials = b.trials().unwrap();
    assert_eq!(a_trials.iter().map(|t| (t.number, t.params[0])).collect::<Vec<_>>(), [(0, 0.0), (1, 1.0), (2, 2.0)]);
    assert_eq!(b_trials.iter().map(|t| (t.number, t.params[0])).collect::<Vec<_>>(), [(0, -0.0), (1, -1.0), (2, 0.0)]);
    assert!(a_trials.iter().all(|t| t.attrs == attrs(&[("s", json!("a"))]) && t.intermediate[0].1 >= 10.0));
    assert_eq!(b_trials[1].intermediate, vec![(0, 21.0)]);

    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.expire_leases(5).unwrap(), vec![0, 1, 2], "a's leases only");
    assert_eq!(b.trials().unwrap(), b_trials, "b's lapsed leases are b's to expire");
    assert!(b.claim_queued("wb", Duration::ZERO).unwrap().is_none(), "a's queued trials are not b's");
    assert_eq!(a.claim_queued("wa", Duration::ZERO).unwrap().map(|t| t.params), Some(vec![0.0]));
    assert!(!b.finish_leased(0, "wa", &Finish::pruned()).unwrap(), "b's trial 0 is not wa's");
    assert!(a.finish_leased(0, "wa", &Finish::pruned()).unwrap());
    assert_eq!(b.trials().unwrap()[0].state, TrialState::Running);

    let names = |l: Vec<(String, u64)>| l.into_iter().map(|(n, c)| format!("{n}:{c}")).collect::<Vec<_>>();
    assert_eq!(names(SqliteStorage::list_studies(&path).unwrap()), ["a:3", "b:3"]);
    drop((a, b));
    let c = SqliteStorage::open_or_create(&path, "c").unwrap();
    assert!(c.trials().unwrap().is_empty() && c.study().unwrap().is_none());
    assert_eq!(names(SqliteStorage::list_studies(&path).unwrap()), ["a:3", "b:3", "c:0"]);
    assert_eq!(SqliteStorage::open(&path, "b").unwrap().study().unwrap(), Some(record(2)));
}

#[test]
fn processes_racing_to_open_or_create_one_study_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("race.db"));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || {
                let s = SqliteStorage::open_or_create(&path, "race").unwrap();
                s.create_trial(&[i as f64], "w", &Map::new()).unwrap()
            })
        })
        .collect();
    let mut numbers: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [0, 1, 2, 3]);
    assert_eq!(SqliteStorage::list_studies(&path).unwrap(), vec![("race".to_string(), 4)]);
}

#[test]
fn the_hot_queries_read_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.db");
    SqliteStorage::create(&path, STUDY).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    };
    // The shapes of ops.rs's claim, expiry and per-study queries.
    let claim = plan("SELECT number FROM trials WHERE study_id = 1 AND state = 'queued' ORDER BY number LIMIT 1");
    assert!(claim.contains("trials_queued"), "{claim}");
    let expiry = plan("SELECT number FROM trials WHERE study_id = 1 AND state = 'running' AND lease_expires < 5.0");
    assert!(expiry.contains("trials_lease_expiry"), "{expiry}");
    let next = plan("SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = 1");
    assert!(next.contains("PRIMARY KEY") && !next.contains("SCAN trials"), "{next}");
}

#[test]
fn open_or_create_makes_a_study_of_a_missing_or_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("new.db");
    SqliteStorage::open_or_create(&missing, STUDY).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    assert_eq!(SqliteStorage::open(&missing, STUDY).unwrap().trials().unwrap().len(), 1);

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(SqliteStorage::open(&empty, STUDY), Err(SearchError::NotAStudy { .. })));
    assert_eq!(std::fs::read(&empty).unwrap(), b"", "open must not initialise an empty file");
    SqliteStorage::open_or_create(&empty, STUDY).unwrap();
    assert!(SqliteStorage::open(&empty, STUDY).is_ok());
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
    let ways = [
        ("open", SqliteStorage::open(path, STUDY).map(|_| ())),
        ("open_or_create", SqliteStorage::open_or_create(path, STUDY).map(|_| ())),
        ("list_studies", SqliteStorage::list_studies(path).map(|_| ())),
    ];
    for (how, result) in ways {
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
    assert!(SqliteStorage::create(path, STUDY).is_err());
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
    SqliteStorage::create(&future, STUDY).unwrap().create_trial(&[1.0], "w", &Map::new()).unwrap();
    let conn = rusqlite::Connection::open(&future).unwrap();
    conn.execute("UPDATE schema_version SET version = ?1", [attune_search::storage::SCHEMA_VERSION + 1]).unwrap();
    drop(conn);
    assert_refused_untouched(&future, "newer attune");

    // Schema version 1 (one study per file, no leases) is refused, not read or converted.
    let v1 = dir.path().join("v1.db");
    let conn = rusqlite::Connection::open(&v1).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_version (format TEXT NOT NULL, version INTEGER NOT NULL);
         INSERT INTO schema_version VALUES ('attune-study', 1);
         CREATE TABLE study (id INTEGER PRIMARY KEY CHECK (id = 0), record TEXT NOT NULL);
         CREATE TABLE trials (number INTEGER PRIMARY KEY, state TEXT NOT NULL, params BLOB NOT NULL,
             objective_values BLOB, worker TEXT NOT NULL, started REAL NOT NULL, heartbeat REAL NOT NULL,
             finished REAL, error TEXT);
         INSERT INTO trials VALUES (0, 'running', x'000000000000F03F', NULL, 'w', 1.0, 1.0, NULL, NULL);",
    )
    .unwrap();
    drop(conn);
    assert_refused_untouched(&v1, "schema version 1, written by a development build");
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
    let s = SqliteStorage::open(Path::new(&path), STUDY).unwrap();
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
    SqliteStorage::create(&path, STUDY).unwrap();
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

        let s = SqliteStorage::open(&path, STUDY).expect("a killed worker's study reopens");
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
