//! PostgresStorage on a throwaway cluster (tests/pg_cluster): the shared storage contract
//! (tests/storage_contract), the same answers as MemoryStorage for a script of every method, many workers on one study, several studies in one database,
//! databases it must refuse and leave untouched, servers it cannot reach, a broken connection,
//! a worker killed with SIGKILL mid-transaction, and reading 10,000 trials.

mod pg_cluster;
mod pg_script;
mod storage_contract;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use attune_search::storage::{PostgresStorage, list_studies};
use attune_search::{Finish, SearchError, Storage, TrialState};
use serde_json::{Map, json};
use storage_contract::Fresh;

/// A new study for a contract test: its own name in one database of the shared cluster;
/// every further handle its own connection, so the racing tests race real transactions.
fn postgres() -> Fresh {
    static DATABASE: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let url = DATABASE.get_or_init(|| pg_cluster::shared().database("contract")).clone();
    let name = format!("contract{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let store = Arc::new(PostgresStorage::connect(&url, &name).unwrap());
    let handle = move || Arc::new(PostgresStorage::connect(&url, &name).unwrap()) as Arc<dyn Storage>;
    Fresh { store, handle: Box::new(handle), guard: Box::new(()) }
}

// Never skipped: a missing PostgreSQL fails the tests (tests/pg_cluster says how to install it).
storage_contract::contract!(postgres_store, postgres);

fn bits(xs: &[f64]) -> Vec<u64> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// A fresh database named after the test, and a study in it.
fn fresh(test: &str, study: &str) -> (String, PostgresStorage) {
    let url = pg_cluster::shared().database(test);
    let s = PostgresStorage::connect(&url, study).unwrap();
    (url, s)
}

#[test]
fn every_method_answers_as_memory_storage_does() {
    let (_, pg) = fresh("script", "s");
    pg_script::run_against_memory(&pg);
}

#[test]
fn values_come_back_bit_for_bit() {
    let (url, s) = fresh("exact", "s");
    let awkward =
        [0.1 + 0.2, 1.0 / 3.0, f64::MIN_POSITIVE, 5e-324, -0.0, -1.234_567_890_123_456_7e300, f64::INFINITY, f64::NAN];
    let n = s.create_trial(&awkward, "w", &Map::new()).unwrap();
    for (step, v) in awkward.iter().enumerate() {
        s.report(n, step as u64, *v).unwrap();
    }
    s.finish(n, &Finish::complete(awkward.to_vec())).unwrap();
    // Read through a second connection, so nothing can come from a cache.
    let t = &PostgresStorage::connect(&url, "s").unwrap().trials().unwrap()[0];
    assert_eq!(bits(&t.params), bits(&awkward));
    assert_eq!(bits(t.values.as_ref().unwrap()), bits(&awkward));
    assert_eq!(bits(&t.intermediate.iter().map(|&(_, v)| v).collect::<Vec<_>>()), bits(&awkward));
}

/// 16 workers, each with its own connection, create and claim trials of one study under a
/// limit of 300. Trials whose number ends in 3 are abandoned once by their creator (no
/// renewal, no finish), so they must be re-queued when their lease lapses and finished by
/// someone else. Every number 0..299 must be created once and finished once.
#[test]
fn sixteen_workers_create_and_claim_each_number_below_the_limit_exactly_once() {
    const LIMIT: u64 = 300;
    const WORKERS: usize = 16;
    let url = pg_cluster::shared().database("sixteen");
    let lease = Duration::from_millis(300);
    let finished = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let s = PostgresStorage::connect(&url, "shared").unwrap();
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || {
                let me = format!("w{w}");
                // (number, the parameter its creator gave), (number, parameters as claimed), finished.
                let (mut created, mut claimed, mut done) = (Vec::new(), Vec::new(), Vec::new());
                let deadline = Instant::now() + Duration::from_secs(30);
                while finished.load(Ordering::SeqCst) < LIMIT as usize {
                    assert!(Instant::now() < deadline, "{me}: the study did not finish in 30 s");
                    s.expire_leases(3).unwrap();
                    let tag = (w * 1000 + created.len()) as f64;
                    let (number, abandon) = if let Some(t) = s.claim_queued(&me, lease).unwrap() {
                        claimed.push((t.number, t.params));
                        (t.number, false)
                    } else if let Some(n) = s.create_leased(&[tag], &me, &Map::new(), lease, Some(LIMIT)).unwrap() {
                        created.push((n, tag));
                        (n, n % 10 == 3)
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    if abandon {
                        continue;
                    }
                    s.report(number, 0, number as f64).unwrap();
                    if s.finish_leased(number, &me, &Finish::complete(vec![number as f64 * 0.5])).unwrap() {
                        done.push(number);
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                }
                (created, claimed, done)
            })
        })
        .collect();
    let (mut created, mut claimed, mut done) = (Vec::new(), Vec::new(), Vec::new());
    for h in handles {
        let (c, cl, d) = h.join().unwrap();
        created.extend(c);
        claimed.extend(cl);
        done.extend(d);
    }
    let elapsed = start.elapsed();
    created.sort_by_key(|&(n, _)| n);
    done.sort_unstable();
    let all: Vec<u64> = (0..LIMIT).collect();
    assert_eq!(created.iter().map(|&(n, _)| n).collect::<Vec<_>>(), all, "each number created exactly once");
    assert_eq!(done, all, "each number finished exactly once");
    let trials = PostgresStorage::connect(&url, "shared").unwrap().trials().unwrap();
    assert_eq!(trials.len(), LIMIT as usize);
    for t in &trials {
        assert_eq!(t.state, TrialState::Complete, "trial {}", t.number);
        assert_eq!(t.params, vec![created[t.number as usize].1], "trial {}: its creator's parameters", t.number);
        assert_eq!(t.values.as_deref().map(bits), Some(bits(&[t.number as f64 * 0.5])));
        assert_eq!(t.retries, u32::from(t.number % 10 == 3), "trial {}: retries", t.number);
        assert_eq!(t.intermediate, vec![(0, t.number as f64)], "trial {}: reports", t.number);
    }
    let mut requeued: Vec<u64> = claimed.iter().map(|(n, _)| *n).collect();
    requeued.sort_unstable();
    assert_eq!(requeued, (0..LIMIT).filter(|n| n % 10 == 3).collect::<Vec<_>>(), "each abandoned trial claimed once");
    for (n, params) in &claimed {
        assert_eq!(params, &trials[*n as usize].params, "claimed trial {n} keeps its parameters");
    }
    eprintln!("{WORKERS} workers: {LIMIT} trials (30 abandoned and re-queued) in {elapsed:.2?}");
}

#[test]
fn two_studies_in_one_database_are_independent() {
    let url = pg_cluster::shared().database("two_studies");
    assert_eq!(list_studies(&url).unwrap(), Vec::<String>::new());
    let a = PostgresStorage::connect(&url, "alpha").unwrap();
    let b = PostgresStorage::connect(&url, "beta").unwrap();
    a.init_study(&storage_contract::record(1)).unwrap();
    b.init_study(&storage_contract::record(2)).unwrap();
    for i in 0..3 {
        assert_eq!(a.create_trial(&[i as f64], "a", &Map::new()).unwrap(), i);
    }
    assert_eq!(b.create_leased(&[9.0], "b", &Map::new(), Duration::from_secs(60), Some(1)).unwrap(), Some(0));
    assert_eq!(b.create_leased(&[9.5], "b", &Map::new(), Duration::from_secs(60), Some(1)).unwrap(), None);
    assert_eq!(a.create_leased(&[3.0], "a", &Map::new(), Duration::from_secs(60), Some(4)).unwrap(), Some(3));
    a.set_attr(0, "k", &json!("alpha")).unwrap();
    a.finish(0, &Finish::complete(vec![1.0])).unwrap();
    b.report(0, 0, 0.5).unwrap();
    let (ta, tb) = (a.trials().unwrap(), b.trials().unwrap());
    assert_eq!(ta.iter().map(|t| t.params[0]).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0, 3.0]);
    assert_eq!((tb.len(), tb[0].params.as_slice(), tb[0].state), (1, [9.0].as_slice(), TrialState::Running));
    assert_eq!((ta[0].state, ta[0].intermediate.len()), (TrialState::Complete, 0));
    assert_eq!((tb[0].intermediate.as_slice(), tb[0].attrs.len()), ([(0, 0.5)].as_slice(), 0));
    assert_eq!(a.study().unwrap(), Some(storage_contract::record(1)));
    assert_eq!(b.study().unwrap(), Some(storage_contract::record(2)));
    // A second handle on "alpha" is the same study.
    let a2 = PostgresStorage::connect(&url, "alpha").unwrap();
    assert_eq!(a2.trials().unwrap(), ta);
    assert_eq!(a2.init_study(&storage_contract::record(3)).unwrap(), storage_contract::record(1));
    assert_eq!(list_studies(&url).unwrap(), vec!["alpha".to_string(), "beta".to_string()]);
    assert!(a.location().to_string_lossy().contains("study 'alpha'"), "{:?}", a.location());
}

/// Every row of attune's tables and the list of its relations, as text: equal fingerprints
/// mean nothing was changed.
fn fingerprint(url: &str) -> String {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let relations: String = c
        .query_one(
            "SELECT coalesce(string_agg(relname || ':' || relkind::text, ',' ORDER BY relname), '')
             FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'attune')",
            &[],
        )
        .unwrap()
        .get(0);
    let mut out = relations;
    let tables: Vec<String> = c
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'attune' ORDER BY tablename", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        let rows: String = c
            .query_one(
                &format!("SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM attune.{t} t"),
                &[],
            )
            .unwrap()
            .get(0);
        out.push_str(&format!("\n{t}: {rows}"));
    }
    out
}

fn assert_refused(url: &str, expect: &[&str]) {
    let before = fingerprint(url);
    for result in [PostgresStorage::connect(url, "s").map(|_| ()), list_studies(url).map(|_| ())] {
        let err = result.expect_err("the database must be refused");
        let text = err.to_string();
        assert!(matches!(err, SearchError::NotAStudy { .. }), "{err:?}");
        assert!(text.contains(url), "the error names the URL: {text}");
        for e in expect {
            assert!(text.contains(e), "the error says '{e}': {text}");
        }
    }
    assert_eq!(fingerprint(url), before, "a refused database is left untouched");
}

#[test]
fn a_newer_or_foreign_schema_is_refused_and_left_untouched() {
    let cluster = pg_cluster::shared();
    let url = cluster.database("newer");
    let s = PostgresStorage::connect(&url, "s").unwrap();
    s.init_study(&storage_contract::record(1)).unwrap();
    s.create_trial(&[1.0], "w", &Map::new()).unwrap();
    drop(s);
    cluster.client("newer").batch_execute("UPDATE attune.schema_version SET version = 2").unwrap();
    assert_refused(&url, &["schema version 2", "newer attune", "left unchanged", "fix:"]);

    let url = cluster.database("foreign");
    cluster.client("foreign").batch_execute("CREATE SCHEMA attune; CREATE TABLE attune.trials (x int)").unwrap();
    assert_refused(&url, &["without attune's schema_version table", "fix:"]);

    let url = cluster.database("other_format");
    cluster
        .client("other_format")
        .batch_execute(
            "CREATE SCHEMA attune; CREATE TABLE attune.schema_version (format text, version int);
             INSERT INTO attune.schema_version VALUES ('someone-else', 1)",
        )
        .unwrap();
    assert_refused(&url, &["format 'someone-else'", "fix:"]);

    // Listing an empty database creates nothing.
    let url = cluster.database("untouched");
    assert_eq!(list_studies(&url).unwrap(), Vec::<String>::new());
    assert_eq!(fingerprint(&url), "", "list_studies wrote to an empty database");
}

#[test]
fn racing_first_connections_create_the_tables_once() {
    let url = pg_cluster::shared().database("race");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = PostgresStorage::connect(&url, if i % 2 == 0 { "even" } else { "odd" }).unwrap();
                s.create_trial(&[i as f64], "w", &Map::new()).unwrap()
            })
        })
        .collect();
    let mut numbers: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    assert_eq!(list_studies(&url).unwrap(), vec!["even".to_string(), "odd".to_string()]);
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The error of connecting to `url`, and how long it took.
fn failed_connect(url: &str) -> (String, Duration) {
    let start = Instant::now();
    let err = PostgresStorage::connect(url, "s").expect_err("nothing listens there");
    (err.to_string(), start.elapsed())
}

#[test]
fn an_unreachable_server_fails_within_seconds_naming_the_url_without_its_password() {
    let port = closed_port();
    let (text, took) = failed_connect(&format!("postgresql://ann:topsecret@127.0.0.1:{port}/lab"));
    assert!(took < Duration::from_secs(5), "a closed port took {took:?}");
    assert!(text.contains(&format!("postgresql://ann:***@127.0.0.1:{port}/lab")), "{text}");
    assert!(!text.contains("topsecret"), "the password leaked: {text}");
    assert!(text.contains("fix: start the PostgreSQL server or correct the URL"), "{text}");
    let listed = list_studies(&format!("host=127.0.0.1 port={port} password=topsecret")).unwrap_err().to_string();
    assert!(listed.contains("password=***") && !listed.contains("topsecret"), "{listed}");

    // A host that accepts the connection and never answers (a hung server): the handshake is
    // bounded too, by CONNECT_TIMEOUT (5 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (text, took) = failed_connect(&format!("postgresql://ann:topsecret@127.0.0.1:{port}/lab"));
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(7), "a silent server took {took:?}");
    assert!(text.contains("no answer from the server within 5 s") && text.contains("fix:"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
    eprintln!("closed port: refused at once; silent server: gave up after {took:.2?}");
}

#[test]
fn a_missing_database_says_how_to_create_it() {
    let url = pg_cluster::shared().url("no_such_database");
    let (text, _) = failed_connect(&url);
    assert!(text.contains("no_such_database") && text.contains("fix: create the database first"), "{text}");
}

#[test]
fn a_broken_connection_is_reopened_once() {
    let cluster = pg_cluster::shared();
    let (_, s) = fresh("broken", "s");
    s.create_trial(&[1.0], "w", &Map::new()).unwrap();
    // The server ends every session of the database but the admin's: as after a restart.
    let killed: i64 = cluster
        .client("postgres")
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'broken'", &[])
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the storage's one session");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.create_trial(&[2.0], "w", &Map::new()).unwrap(), 1, "the next call reconnects and runs once");
    assert_eq!(s.trials().unwrap().len(), 2);
}

/// 10,000 trials with 10 reports and 2 attributes each, written with SQL (the write path is
/// tested elsewhere); `trials()` must read them in one snapshot, fast.
#[test]
fn ten_thousand_trials_are_read_in_well_under_a_second() {
    let cluster = pg_cluster::shared();
    let (_, s) = fresh("ten_thousand", "big");
    s.create_trial(&[0.0], "w", &Map::new()).unwrap();
    cluster
        .client("ten_thousand")
        .batch_execute(
            "INSERT INTO attune.trials (study_id, number, state, params, objective_values, worker, started, finished)
                 SELECT 1, n, 'complete', ARRAY[n * 0.5, 1.0 / (n + 1)], ARRAY[n::float8], 'w', now(), now()
                 FROM generate_series(1, 9999) n;
             UPDATE attune.studies SET trial_count = 10000 WHERE id = 1;
             INSERT INTO attune.intermediate SELECT 1, n, st, n + st * 0.1
                 FROM generate_series(0, 9999) n, generate_series(0, 9) st;
             INSERT INTO attune.attrs SELECT 1, n, k, to_jsonb(n) FROM generate_series(0, 9999) n,
                 unnest(ARRAY['seed', 'run']) k;
             ANALYZE",
        )
        .unwrap();
    s.trials().unwrap();
    let start = Instant::now();
    let trials = s.trials().unwrap();
    let took = start.elapsed();
    assert_eq!(trials.len(), 10_000);
    let t = &trials[4321];
    assert_eq!((t.number, bits(&t.params)), (4321, bits(&[4321.0 * 0.5, 1.0 / 4322.0])));
    assert_eq!(t.intermediate.len(), 10);
    assert_eq!(t.intermediate[7], (7, 4321.0 + 7.0 * 0.1));
    assert_eq!(t.attrs.get("seed"), Some(&json!(4321)));
    assert!(took < Duration::from_secs(1), "reading 10,000 trials took {took:?}");
    eprintln!("trials(): 10,000 trials, 100,000 reports, 20,000 attributes in {took:.2?}");
}

/// Names the database and study when this test binary runs as the killed worker.
const KILL_CHILD_ENV: &str = "ATTUNE_PG_KILL_CHILD";

/// The worker role (a no-op in a normal run): a worker holding a transaction open, or one
/// running trials as fast as it can, until it is killed (tests/pg_script).
#[test]
fn kill_child_role() {
    let Ok(url) = std::env::var(KILL_CHILD_ENV) else { return };
    pg_script::killed_worker(&url);
}

#[test]
fn a_worker_killed_mid_transaction_leaves_the_study_consistent_and_its_trial_requeued() {
    let url = pg_cluster::shared().database("killed");
    pg_script::kill_worker_mid_transaction(&url, KILL_CHILD_ENV);
}

#[test]
fn a_worker_killed_at_random_moments_loses_at_most_its_trial_in_flight() {
    let url = pg_cluster::shared().database("busy");
    pg_script::kill_busy_worker_at_random_moments(&url, KILL_CHILD_ENV);
}
