//! Fuzz-style tests of every loader of user files in the lab: run configs (TOML and JSON),
//! a run directory's `config.json`, `metrics.jsonl`, JSONL text-classification data, and a
//! checkpoint (`state.json`, `model.safetensors`, `optimizer.safetensors`) on resume.
//! Thousands of seeded mutants each load or fail with an error naming the file: never a
//! panic, and never one allocation beyond a small multiple of the file's size.

use std::cell::Cell;
use std::path::Path;

use anyhow::Context;
use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, safetensors as st_mut, text};
use attune_lab::config::{ModelSpec, RunConfig, SavedConfig};
use attune_lab::metrics::{self, MetricRow};
use attune_lab::net::Net;
use attune_lab::runstate::{self, CheckpointParts, OnDamage, RunState};
use attune_lab::tasks::{self, Split, TaskConfig, TextConfig};
use attune_nn::{Model, ModelConfig};
use attune_optim::{
    EarlyStopping, EarlyStoppingConfig, Optimizer, OptimizerConfig, ParamGroup, PlateauConfig, ReduceOnPlateau,
};
use attune_tensor::{DType, Device};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn mutate_text(valid: &[u8], toml: bool) -> impl FnMut(&mut Rng) -> (Vec<u8>, &'static str) {
    move |rng| {
        let mut doc = valid.to_vec();
        let what = text::mutate(rng, &mut doc, toml);
        (doc, what)
    }
}

#[test]
fn fuzz_run_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::default();
    cfg.train.early_stopping = Some(EarlyStoppingConfig::default());
    cfg.train.plateau = Some(PlateauConfig::default());
    cfg.model.window = Some([8, 0]);
    for (ext, valid, seed) in [
        ("toml", toml::to_string(&cfg).unwrap(), 0x7031),
        ("json", serde_json::to_string_pretty(&cfg).unwrap(), 0x7032),
    ] {
        let path = dir.path().join(format!("fuzz_run.{ext}"));
        let tally = Fuzz::new(&format!("run config ({ext})"), seed).cases(1500).errors_name("fuzz_run").run(
            mutate_text(valid.as_bytes(), ext == "toml"),
            |bytes| {
                std::fs::write(&path, bytes).unwrap();
                // What `attune train --config` does with it: parse (errors name the file),
                // then check the values (errors name the values; the caller names the file).
                let cfg = RunConfig::from_file(&path)?;
                cfg.validate().with_context(|| format!("{}", path.display()))
            },
        );
        tally.assert_clean();
        assert!(tally.loaded > 50 && tally.errors > tally.cases / 2, "{}", tally.summary());
    }
}

#[test]
fn fuzz_saved_config() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig::default();
    let task = tasks::build(&run.task, 0).unwrap();
    let saved = SavedConfig {
        task: task.config(),
        model: run.model.resolve(task.as_ref()),
        model_spec: ModelSpec::default(),
        ram: None,
        optimizer: run.optimizer.clone(),
        schedule: run.schedule.clone(),
        train: run.train.clone(),
        device: run.device.clone(),
    };
    let valid = serde_json::to_string_pretty(&saved).unwrap();
    let run_dir = dir.path().join("fuzzrun");
    std::fs::create_dir_all(&run_dir).unwrap();
    let tally = Fuzz::new("run dir config.json", 0xc0f1).cases(1500).errors_name("fuzzrun").run(
        mutate_text(valid.as_bytes(), false),
        |bytes| {
            std::fs::write(run_dir.join("config.json"), bytes).unwrap();
            SavedConfig::load(&run_dir, OnDamage::FallBack)?
                .run()
                .validate()
                .with_context(|| format!("{}", run_dir.display()))
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 50 && tally.errors > tally.cases / 2, "{}", tally.summary());
}

#[test]
fn fuzz_metrics_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..6u64)
        .map(|i| {
            let row = MetricRow {
                step: i * 10,
                split: if i % 2 == 0 { "train" } else { "valid" }.into(),
                loss: 2.0 / (i + 1) as f64,
                accuracy: i as f64 / 6.0,
                lr: 1e-3,
                grad_norm: (i % 2 == 0).then_some(0.5),
                tokens_per_s: (i % 2 == 0).then_some(12345.0),
                elapsed_s: i as f64,
                rl: None,
                eval_metrics: (i == 3).then(|| [("ndcg@10".to_string(), 0.25)].into_iter().collect()),
                comm_fraction: (i == 2).then_some(0.125),
            };
            serde_json::to_string(&row).unwrap()
        })
        .collect();
    let valid = rows.join("\n") + "\n";
    let path = dir.path().join("fuzz_metrics.jsonl");
    let tally = Fuzz::new("metrics.jsonl", 0x3e7).cases(1500).errors_name("fuzz_metrics.jsonl").run(
        |rng: &mut Rng| {
            let mut doc = valid.as_bytes().to_vec();
            let what = text::mutate_lines(rng, &mut doc);
            (doc, what)
        },
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            metrics::read(&path)
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 50 && tally.errors > tally.cases / 4, "{}", tally.summary());
}

#[test]
fn fuzz_text_jsonl_data() {
    let dir = tempfile::tempdir().unwrap();
    let sample =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample_sentiment.jsonl")).unwrap();
    let mut valid: String = sample.lines().take(24).map(|l| format!("{l}\n")).collect();
    valid.push_str("{\"text\": \"ünïcödé 😀\", \"label\": 3}\n\n{\"text\": \"x\", \"label\": -1, \"extra\": [1]}\n");
    let path = dir.path().join("fuzz_data.jsonl");
    let config: TextConfig = serde_json::from_value(serde_json::json!({"path": path, "max_len": 64})).unwrap();
    let tally = Fuzz::new("text JSONL data", 0x7e47).cases(1500).errors_name("fuzz_data.jsonl").run(
        |rng: &mut Rng| {
            let mut doc = valid.as_bytes().to_vec();
            let what = text::mutate_lines(rng, &mut doc);
            (doc, what)
        },
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            let task = tasks::build(&TaskConfig::TextClassification(config.clone()), 1)?;
            // The loaded task must also batch: every split, a batch larger than the split.
            for split in [Split::Train, Split::Valid] {
                task.batch(split, 0, 5)?;
            }
            task.batch(Split::Train, 1 << 40, 3).map(drop)
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 50 && tally.errors > tally.cases / 4, "{}", tally.summary());
}

fn tiny_model() -> Net {
    let cfg = ModelConfig::lm(16, 8, 8, 1, 2);
    Net::Transformer(Model::new(&cfg, 3, DType::F32, &Device::Cpu).unwrap())
}

fn tiny_optimizer(model: &Net) -> Box<dyn Optimizer> {
    let groups = vec![ParamGroup::new(model.store().named())];
    OptimizerConfig::from_name("adamw").unwrap().build(groups).unwrap()
}

fn stoppers() -> (EarlyStopping, ReduceOnPlateau) {
    (
        EarlyStopping::new(EarlyStoppingConfig::default()).unwrap(),
        ReduceOnPlateau::new(PlateauConfig::default()).unwrap(),
    )
}

#[test]
fn fuzz_checkpoint_resume() {
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let model = tiny_model();
    let optimizer = tiny_optimizer(&model);
    let (early, plateau) = stoppers();
    let mut state = RunState::fresh(0, 1e-3);
    state.step = 7;
    state.early_stopping = Some(early.state().clone());
    state.plateau = Some(plateau.state().clone());
    state.best_accuracy = Some((5, 0.75));
    let parts = CheckpointParts {
        model: &model,
        optimizer: optimizer.as_ref(),
        early: Some(&early),
        state: &state,
        config_json: b"{}",
    };
    let seed_ckpt = runstate::save(&seed_dir, &parts, 2).unwrap();
    let files = ["state.json", "model.safetensors", "optimizer.safetensors"];
    let valid: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(seed_ckpt.join(f)).unwrap()).collect();

    // A mutated file under the manifest that committed the valid one is always caught by its
    // checksum; the parsers behind the checksum are fuzzed by committing each mutant with a
    // manifest of its own (as a writer with a bug would), so they see the damage.
    let run_dir = dir.path().join("fuzzrun");
    let target = attune_lab::rundir::checkpoint_dir(&run_dir, 7);
    // Which of the three files the current mutant replaces.
    let which = Cell::new(0);
    let tally = Fuzz::new("checkpoint resume", 0x2e5).cases(2000).errors_name("fuzzrun").run(
        |rng: &mut Rng| {
            which.set(rng.below(files.len()));
            match which.get() {
                0 => mutate_text(&valid[0], false)(rng),
                k => st_mut::mutate(rng, &valid[k], false),
            }
        },
        |bytes| {
            let mut stage = attune_persist::Staging::begin(&target)?;
            for (k, f) in files.iter().enumerate() {
                stage.add(f, if k == which.get() { bytes } else { &valid[k] })?;
            }
            let committed = stage.commit(serde_json::json!({"step": 7}))?;
            let model = tiny_model();
            let mut optimizer = tiny_optimizer(&model);
            let (mut early, mut plateau) = stoppers();
            runstate::load(&committed, &model, optimizer.as_mut(), Some(&mut early), Some(&mut plateau)).map(drop)
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 50 && tally.errors > tally.cases / 2, "{}", tally.summary());
}
