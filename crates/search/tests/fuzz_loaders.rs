//! Fuzz-style tests of the search crate's loaders of user files: the TOML space file and a
//! study database (`study.db`, opened for `--resume` or by a worker). Seeded mutants each load
//! or fail with an error naming the file: never a panic, never an allocation beyond a small
//! multiple of the file's size (crates/fuzzkit).

use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, bytes, text};
use attune_search::storage::DEFAULT_STUDY;
use attune_search::{Finish, Space, SqliteStorage, Storage, StudyRecord};
use serde_json::{Map, json};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const SPACE: &str = r#"directions = ["maximize", "minimize"]
[params]
"optimizer.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }
"model.n_layers" = { type = "int", low = 1, high = 4, step = 1 }
"model.dropout" = { type = "float", low = 0.0, high = 0.3, step = 0.1 }
"model.positions" = { type = "categorical", choices = ["learned", "rope", "alibi"] }
"#;

#[test]
fn fuzz_space_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz_space.toml");
    let tally = Fuzz::new("search space (toml)", 0x5ea1).cases(2000).errors_name("fuzz_space").run(
        |rng: &mut Rng| {
            let mut doc = SPACE.as_bytes().to_vec();
            let what = text::mutate(rng, &mut doc, true);
            (doc, what)
        },
        |b| {
            std::fs::write(&path, b).unwrap();
            Space::from_file(&path)
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 50 && tally.errors > tally.cases / 2, "{}", tally.summary());
}

#[test]
fn fuzz_study_databases() {
    let dir = tempfile::tempdir().unwrap();
    let valid_path = dir.path().join("valid.db");
    {
        let s = SqliteStorage::create(&valid_path, DEFAULT_STUDY).unwrap();
        let space = Space::from_toml(SPACE, "<fuzz>").unwrap();
        let record =
            StudyRecord { space, sampler: json!({"kind": "random"}), pruner: None, seed: 1, driver: json!({}) };
        s.init_study(&record).unwrap();
        for n in 0..6u64 {
            let number = s.create_trial(&[1e-3, 2.0, 0.1, 1.0], "fuzz", &Map::new()).unwrap();
            s.report(number, 1, 0.5).unwrap();
            if n % 2 == 0 {
                s.finish(number, &Finish::complete(vec![0.9, 3.0])).unwrap();
            }
        }
    }
    // One file: SQLite's WAL is checkpointed into it when the last connection closes.
    let valid = std::fs::read(&valid_path).unwrap();
    let path = dir.path().join("fuzz_study.db");
    let tally = Fuzz::new("study database (sqlite)", 0x5ea2).cases(400).errors_name("fuzz_study").run(
        |rng: &mut Rng| {
            let mut doc = valid.clone();
            let what = bytes::mutate(rng, &mut doc);
            (doc, what)
        },
        |b| {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            std::fs::write(&path, b).unwrap();
            // What `--resume` and a worker do with it: open, read the record and every trial.
            let s = SqliteStorage::open(&path, DEFAULT_STUDY)?;
            s.study()?;
            s.trials()
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 10 && tally.errors > 10, "{}", tally.summary());
}
