//! The task generators: determinism, the defining invariants of each synthetic task checked by
//! re-reading the generated sequences, the MQAR gap distribution against Zoology's formula,
//! the text task's tokens, splits and label mapping, and the error messages.

use std::collections::HashMap;
use std::path::PathBuf;

use attune_lab::tasks::rng::Rng;
use attune_lab::tasks::{
    Batch, ClassBatch, IGNORE_INDEX, InductionConfig, Label, MqarConfig, PAD_ID, SelectiveCopyingConfig, SeqBatch,
    Split, Task, TaskConfig, TaskError, TextConfig, TextTokens, build,
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample_sentiment.jsonl");

fn seq(task: &dyn Task, split: Split, index: u64, batch: usize) -> SeqBatch {
    match task.batch(split, index, batch).unwrap() {
        Batch::Seq(b) => b,
        other => panic!("{} gave a batch of another kind: {other:?}", task.name()),
    }
}

fn class(task: &dyn Task, split: Split, index: u64, batch: usize) -> ClassBatch {
    match task.batch(split, index, batch).unwrap() {
        Batch::Class(b) => b,
        other => panic!("{} gave a batch of another kind: {other:?}", task.name()),
    }
}

fn mqar(v: usize, s: usize, n: usize, a: f64) -> TaskConfig {
    TaskConfig::Mqar(MqarConfig { vocab_size: v, seq_len: s, num_kv_pairs: n, power_a: a })
}

fn synthetic_configs() -> Vec<TaskConfig> {
    vec![
        TaskConfig::Mqar(MqarConfig::default()),
        TaskConfig::InductionHeads(InductionConfig::default()),
        TaskConfig::SelectiveCopying(SelectiveCopyingConfig::default()),
    ]
}

/// Writes `content` to a fresh file under cargo's per-test temp dir.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tasks-{name}.jsonl"));
    std::fs::write(&path, content).unwrap();
    path
}

fn text_task(config: TextConfig, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    build(&TaskConfig::TextClassification(config), seed)
}

fn err_msg(r: Result<Box<dyn Task>, TaskError>) -> String {
    match r {
        Ok(t) => panic!("expected an error, built {}", t.name()),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- determinism

#[test]
fn synthetic_batches_are_pure_functions_of_their_coordinates() {
    for config in synthetic_configs() {
        let t = build(&config, 7).unwrap();
        let again = build(&config, 7).unwrap();
        let a = seq(t.as_ref(), Split::Train, 3, 4);
        assert_eq!(a.batch, 4);
        assert_eq!(a.seq_len, t.seq_len());
        assert_eq!(a.inputs.len(), 4 * t.seq_len());
        assert_eq!(a, seq(t.as_ref(), Split::Train, 3, 4), "{}: same call", t.name());
        assert_eq!(a, seq(again.as_ref(), Split::Train, 3, 4), "{}: rebuilt task", t.name());
        assert_ne!(a, seq(t.as_ref(), Split::Train, 4, 4), "{}: next index", t.name());
        assert_ne!(a, seq(t.as_ref(), Split::Valid, 3, 4), "{}: valid split", t.name());
        assert_ne!(a.inputs, seq(t.as_ref(), Split::Test, 3, 4).inputs, "{}: test split", t.name());
        let other_seed = build(&config, 8).unwrap();
        assert_ne!(a, seq(other_seed.as_ref(), Split::Train, 3, 4), "{}: other seed", t.name());
        // Row b of batch i (size B) is example i B + b whatever the batch size.
        for b in 0..4 {
            let single = seq(t.as_ref(), Split::Train, 12 + b as u64, 1);
            assert_eq!(a.row(b).unwrap(), single.row(0).unwrap(), "{}: row {b}", t.name());
        }
        // Rows within a batch differ (each has its own stream).
        assert_ne!(a.row(0).unwrap().0, a.row(1).unwrap().0);
        assert_eq!(build(&t.config(), 7).unwrap().config(), config);
    }
}

#[test]
fn synthetic_tasks_report_their_sizes_and_reject_bad_batches() {
    for config in synthetic_configs() {
        let t = build(&config, 0).unwrap();
        assert_eq!(t.num_classes(), None);
        assert_eq!(t.split_size(Split::Valid), None);
        let msg = t.batch(Split::Train, 0, 0).unwrap_err().to_string();
        assert!(msg.contains("batch_size is 0"), "{msg}");
        let msg = t.batch(Split::Train, u64::MAX, 2).unwrap_err().to_string();
        assert!(msg.contains("overflows"), "{msg}");
    }
    let t = build(&TaskConfig::SelectiveCopying(SelectiveCopyingConfig::default()), 0).unwrap();
    assert_eq!((t.vocab_size(), t.seq_len()), (16, 256 + 16));
}

// ---------------------------------------------------------------- MQAR

/// Checks one MQAR row from scratch; returns the query gaps `(pos - 2N) / 2` in key order.
fn check_mqar_row(x: &[u32], y: &[i64], v: usize, n: usize) -> Vec<usize> {
    let half = v as u32 / 2;
    let ctx = 2 * n;
    let keys: Vec<u32> = (0..n).map(|i| x[2 * i]).collect();
    let values: Vec<u32> = (0..n).map(|i| x[2 * i + 1]).collect();
    for (&k, &val) in keys.iter().zip(&values) {
        assert!((1..half).contains(&k), "key {k} not in 1..{half}");
        assert!((half..v as u32).contains(&val), "value {val} not in {half}..{v}");
    }
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "keys repeat: {keys:?}");
    let mut sorted = values.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "values repeat: {values:?}");
    assert!(x.iter().all(|&t| (t as usize) < v));
    assert!(y[..ctx].iter().all(|&t| t == IGNORE_INDEX), "context is supervised");

    let supervised: Vec<usize> = (0..y.len()).filter(|&p| y[p] != IGNORE_INDEX).collect();
    assert_eq!(supervised.len(), n, "supervised positions {supervised:?}");
    let mut gaps = vec![usize::MAX; n];
    for &p in &supervised {
        assert!(p >= ctx && (p - ctx).is_multiple_of(2), "query at {p}: not an even offset after the context {ctx}");
        let i = keys.iter().position(|&k| k == x[p]).unwrap_or_else(|| panic!("query {} at {p} is no key", x[p]));
        assert_eq!(gaps[i], usize::MAX, "key {} queried twice", keys[i]);
        gaps[i] = (p - ctx) / 2;
        assert_eq!(y[p], i64::from(values[i]), "target at {p} for key {}", keys[i]);
    }
    gaps
}

#[test]
fn mqar_rows_follow_zoology_layout() {
    for (v, s, n) in [(128, 64, 8), (8192, 256, 64), (34, 32, 8), (10, 4, 1)] {
        let t = build(&mqar(v, s, n, 0.01), 11).unwrap();
        assert_eq!((t.vocab_size(), t.seq_len()), (v, s));
        for split in [Split::Train, Split::Valid] {
            for index in 0..5 {
                let b = seq(t.as_ref(), split, index, 8);
                assert_eq!(b.supervised(), 8 * n);
                for r in 0..8 {
                    let (x, y) = b.row(r).unwrap();
                    check_mqar_row(x, y, v, n);
                }
            }
        }
    }
}

#[test]
fn mqar_filler_is_random_tokens() {
    // With random_non_queries, non-query positions after the context are uniform on 0..V:
    // a position that is never a query holds each token with frequency ~1/V.
    let t = build(&mqar(128, 64, 8, 0.01), 1).unwrap();
    let b = seq(t.as_ref(), Split::Train, 0, 2000);
    let mut counts = vec![0usize; 128];
    for r in 0..b.batch {
        let (x, y) = b.row(r).unwrap();
        // Odd offsets after the context are never queries.
        assert_eq!(y[17], IGNORE_INDEX);
        counts[x[17] as usize] += 1;
    }
    // 2000 draws over 128 tokens: expected 15.6 each, so zero hits or > 50 would be a bug.
    assert!(counts.iter().all(|&c| (1..50).contains(&c)), "{counts:?}");
}

/// Zoology's gap weights `a (g + 1)^(a - 1)` for `g in 0..space`, normalised.
fn power_law(space: usize, a: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=space).map(|i| a * (i as f64).powf(a - 1.0)).collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

#[test]
fn mqar_single_query_gap_matches_the_power_law() {
    // With one pair the gap is one draw from p, so each gap's frequency must match p(g)
    // within binomial noise (5 sigma, so the test is not flaky).
    let (v, s, n, draws) = (128, 64, 1, 20_000);
    let p = power_law((s - 2 * n) / 2, 0.01);
    let t = build(&mqar(v, s, n, 0.01), 3).unwrap();
    let b = seq(t.as_ref(), Split::Train, 0, draws);
    let mut counts = vec![0usize; p.len()];
    for r in 0..draws {
        let (x, y) = b.row(r).unwrap();
        counts[check_mqar_row(x, y, v, n)[0]] += 1;
    }
    for (g, (&c, &pg)) in counts.iter().zip(&p).enumerate() {
        let freq = c as f64 / draws as f64;
        let sigma = (pg * (1.0 - pg) / draws as f64).sqrt();
        assert!((freq - pg).abs() <= 5.0 * sigma + 1e-4, "gap {g}: frequency {freq}, p {pg}");
    }
    // p(0) = 1 / sum_i i^-0.99, about a quarter: small gaps dominate.
    assert!(p[0] > 0.2 && counts[0] > 5 * counts[30]);
}

#[test]
fn mqar_gaps_favour_short_distances_and_flatten_with_power_one() {
    let (v, s, n) = (128, 64, 8);
    let space = (s - 2 * n) / 2;
    let histogram = |a: f64| {
        let t = build(&mqar(v, s, n, a), 5).unwrap();
        let b = seq(t.as_ref(), Split::Train, 0, 4000);
        let mut counts = vec![0usize; space];
        for r in 0..b.batch {
            let (x, y) = b.row(r).unwrap();
            for g in check_mqar_row(x, y, v, n) {
                counts[g] += 1;
            }
        }
        counts
    };
    let skewed = histogram(0.01);
    assert!(skewed[0] > skewed[4] && skewed[4] > skewed[12] && skewed[12] > skewed[space - 1], "{skewed:?}");
    // 4000 rows x 8 queries over 24 gaps: uniform gives 1333 per gap; a = 1 must be flat.
    let flat = histogram(1.0);
    assert!(flat.iter().all(|&c| (1150..1520).contains(&c)), "{flat:?}");
}

#[test]
fn mqar_rejects_configs_zoology_rejects() {
    let cases = [
        (mqar(128, 63, 8, 0.01), "seq_len 63 must be even"),
        (mqar(64, 64, 8, 0.01), "vocab_size 64 must exceed seq_len 64"),
        (mqar(128, 64, 17, 0.01), "seq_len >= 4 * 17 = 68"),
        (mqar(128, 64, 0, 0.01), "num_kv_pairs is 0"),
        (mqar(128, 64, 8, 0.0), "power_a 0 must be"),
        (mqar(128, 64, 8, f64::NAN), "power_a NaN"),
    ];
    for (config, want) in cases {
        let msg = err_msg(build(&config, 0));
        assert!(msg.starts_with("task mqar: ") && msg.contains(want), "{msg}");
    }
}

// ---------------------------------------------------------------- induction heads

#[test]
fn induction_target_is_the_token_after_the_first_trigger() {
    for (v, s) in [(16, 256), (3, 4), (40, 33)] {
        let trigger = (v - 1) as u32;
        let t = build(&TaskConfig::InductionHeads(InductionConfig { vocab_size: v, seq_len: s }), 2).unwrap();
        let b = seq(t.as_ref(), Split::Train, 0, 500);
        assert_eq!(b.supervised(), 500);
        let mut first_positions = Vec::new();
        for r in 0..b.batch {
            let (x, y) = b.row(r).unwrap();
            let triggers: Vec<usize> = (0..s).filter(|&p| x[p] == trigger).collect();
            assert_eq!(triggers.len(), 2, "row {r}: triggers at {triggers:?}");
            let p = triggers[0];
            assert_eq!(triggers[1], s - 1, "the sequence ends with the trigger");
            assert!(p + 1 < s - 1);
            assert_eq!(y[s - 1], i64::from(x[p + 1]));
            assert!(y[..s - 1].iter().all(|&t| t == IGNORE_INDEX));
            assert!(x.iter().all(|&t| t <= trigger));
            first_positions.push(p);
        }
        // The first trigger ranges over 0..=S-4 (as in H3's generator).
        assert_eq!(*first_positions.iter().max().unwrap(), s - 4, "V={v} S={s}");
        if s <= 40 {
            assert_eq!(*first_positions.iter().min().unwrap(), 0);
        }
    }
}

#[test]
fn induction_rejects_degenerate_configs() {
    for (v, s, want) in [(2, 256, "vocab_size 2 must be in 3..="), (16, 3, "seq_len 3 must be in 4..=")] {
        let msg = err_msg(build(&TaskConfig::InductionHeads(InductionConfig { vocab_size: v, seq_len: s }), 0));
        assert!(msg.starts_with("task induction: ") && msg.contains(want), "{msg}");
    }
}

// ---------------------------------------------------------------- selective copying

#[test]
fn selective_copying_targets_are_the_data_tokens_in_order() {
    for (v, l, n) in [(16, 256, 16), (3, 5, 5), (10, 40, 1)] {
        let config = SelectiveCopyingConfig { vocab_size: v, region_len: l, num_tokens: n };
        let t = build(&TaskConfig::SelectiveCopying(config), 4).unwrap();
        let marker = (v - 1) as u32;
        let b = seq(t.as_ref(), Split::Valid, 1, 300);
        assert_eq!(b.seq_len, l + n);
        let mut hits = vec![0usize; l];
        for r in 0..b.batch {
            let (x, y) = b.row(r).unwrap();
            let data: Vec<(usize, u32)> = (0..l).filter(|&p| x[p] != 0).map(|p| (p, x[p])).collect();
            assert_eq!(data.len(), n, "row {r}: data tokens {data:?}");
            assert!(data.iter().all(|&(_, t)| (1..marker).contains(&t)));
            assert!(x[l..].iter().all(|&t| t == marker), "answer slots hold markers");
            let want: Vec<i64> = data.iter().map(|&(_, t)| i64::from(t)).collect();
            assert_eq!(&y[l..], want.as_slice());
            assert!(y[..l].iter().all(|&t| t == IGNORE_INDEX));
            for (p, _) in data {
                hits[p] += 1;
            }
        }
        // Every region position can hold data: each is hit with probability n / l.
        let expected = 300.0 * n as f64 / l as f64;
        if expected >= 15.0 {
            assert!(hits.iter().all(|&h| h > 0 && (h as f64) < 3.0 * expected), "{hits:?}");
        }
    }
}

#[test]
fn selective_copying_rejects_degenerate_configs() {
    let cases = [
        (2, 256, 16, "vocab_size 2 must be in 3..="),
        (16, 256, 0, "num_tokens is 0"),
        (16, 8, 9, "num_tokens 9 exceeds region_len 8"),
    ];
    for (v, l, n, want) in cases {
        let config = SelectiveCopyingConfig { vocab_size: v, region_len: l, num_tokens: n };
        let msg = err_msg(build(&TaskConfig::SelectiveCopying(config), 0));
        assert!(msg.starts_with("task selective-copying: ") && msg.contains(want), "{msg}");
    }
}

// ---------------------------------------------------------------- text classification

/// The (text, label) lines of a JSONL file, parsed independently of the task.
fn file_rows(path: &str) -> Vec<(Vec<u8>, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["text"].as_str().unwrap().as_bytes().to_vec(), v["label"].as_str().unwrap().to_string())
        })
        .collect()
}

fn class_rows(b: &ClassBatch, classes: &[&str]) -> Vec<(Vec<u8>, String)> {
    (0..b.batch)
        .map(|r| {
            let tokens = b.row(r).unwrap().iter().map(|&t| u8::try_from(t).unwrap()).collect();
            (tokens, classes[b.labels[r] as usize].to_string())
        })
        .collect()
}

#[test]
fn text_sample_splits_partition_the_file() {
    let t = text_task(TextConfig::new(SAMPLE), 0).unwrap();
    assert_eq!((t.name(), t.vocab_size(), t.seq_len(), t.num_classes()), ("text", 257, 256, Some(2)));
    let TaskConfig::TextClassification(c) = t.config() else { panic!() };
    assert_eq!(c.classes, Some(vec![Label::Str("negative".into()), Label::Str("positive".into())]));
    // valid_fraction 0.1 of the file's lines are valid, the rest train; no test file.
    let lines = file_rows(SAMPLE).len();
    let (n_valid, n_train) = (lines / 10, lines - lines / 10);
    assert!(lines.is_multiple_of(10), "the sample has {lines} lines");
    assert_eq!(t.split_size(Split::Valid), Some(n_valid));
    assert_eq!(t.split_size(Split::Test), Some(0));
    assert_eq!(t.split_size(Split::Train), None);

    let classes = ["negative", "positive"];
    let valid = class_rows(&class(t.as_ref(), Split::Valid, 0, n_valid), &classes);
    let epoch0 = class_rows(&class(t.as_ref(), Split::Train, 0, n_train), &classes);
    let mut together = [valid.clone(), epoch0.clone()].concat();
    let mut file = file_rows(SAMPLE);
    together.sort();
    file.sort();
    assert_eq!(together, file, "train epoch 0 + valid = the file, each line once");

    // The next epoch visits the same examples in another order.
    let epoch1 = class_rows(&class(t.as_ref(), Split::Train, 1, n_train), &classes);
    assert_ne!(epoch1, epoch0);
    let (mut a, mut b) = (epoch0.clone(), epoch1.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Train batches straddle epochs: with B a little over half an epoch, batch 1 holds stream
    // positions B..2B, the end of epoch 0 and then the first 2B - n_train of epoch 1.
    let half = n_train / 2 + 10;
    let extra = 2 * half - n_train;
    let straddle = class_rows(&class(t.as_ref(), Split::Train, 1, half), &classes);
    assert_eq!(straddle[..half - extra], epoch0[half..]);
    assert_eq!(straddle[half - extra..], epoch1[..extra]);

    // Another seed holds out another valid set; the same seed the same one.
    let same = text_task(TextConfig::new(SAMPLE), 0).unwrap();
    assert_eq!(class(same.as_ref(), Split::Valid, 0, n_valid), class(t.as_ref(), Split::Valid, 0, n_valid));
    let other = text_task(TextConfig::new(SAMPLE), 1).unwrap();
    assert_ne!(class(other.as_ref(), Split::Valid, 0, n_valid), class(t.as_ref(), Split::Valid, 0, n_valid));
}

#[test]
fn text_valid_batches_cover_the_split_once_then_stop() {
    let t = text_task(TextConfig::new(SAMPLE), 9).unwrap();
    // Batches of 7 over the valid split: full ones, then a short one, then an error.
    let n = t.split_size(Split::Valid).unwrap();
    let batches = n.div_ceil(7);
    assert!(!n.is_multiple_of(7), "the split of {n} must end in a short batch for this test");
    let sizes: Vec<usize> = (0..batches as u64).map(|i| class(t.as_ref(), Split::Valid, i, 7).batch).collect();
    assert_eq!(sizes[..batches - 1], vec![7; batches - 1][..]);
    assert_eq!(sizes[batches - 1], n % 7);
    let msg = t.batch(Split::Valid, batches as u64, 7).unwrap_err().to_string();
    let want =
        format!("batch index {batches} is past the end: the valid split has {n} examples, {batches} batch(es) of 7");
    assert!(msg.contains(&want), "{msg}");
    let msg = t.batch(Split::Test, 0, 7).unwrap_err().to_string();
    assert!(msg.contains("no test split; set test_path"), "{msg}");
    let msg = t.batch(Split::Train, 0, 0).unwrap_err().to_string();
    assert!(msg.contains("batch_size is 0"), "{msg}");
}

#[test]
fn text_tokens_are_utf8_bytes_padded_and_truncated() {
    let texts = ["café ☕", "a", "naïve résumé"];
    let content: String =
        texts.iter().enumerate().map(|(i, t)| format!("{{\"text\": \"{t}\", \"label\": {i}}}\n")).collect();
    let test = temp_file("bytes-test", &content);
    let train = temp_file("bytes-train", &content);
    let mut config = TextConfig::new(&train);
    config.test_path = Some(test);
    config.valid_fraction = 0.0;
    config.max_len = 10;
    let t = text_task(config, 0).unwrap();
    let b = class(t.as_ref(), Split::Test, 0, 3);
    // "café ☕" is 9 bytes (é is 2, ☕ is 3); "naïve résumé" is 15, truncated to 10.
    assert_eq!(b.lengths, [9, 1, 10]);
    assert_eq!(b.seq_len, 10);
    assert_eq!(b.labels, [0, 1, 2], "test file in file order; integer labels 0 < 1 < 2");
    for (r, text) in texts.iter().enumerate() {
        let bytes: Vec<u32> = text.bytes().take(10).map(u32::from).collect();
        let row = &b.tokens[r * 10..r * 10 + 10];
        assert_eq!(&row[..bytes.len()], bytes.as_slice());
        assert!(row[bytes.len()..].iter().all(|&t| t == PAD_ID));
    }
    // A batch is padded to its own longest row.
    let single = class(t.as_ref(), Split::Test, 1, 1);
    assert_eq!((single.seq_len, single.tokens.as_slice()), (1, [u32::from(b'a')].as_slice()));
}

#[test]
fn text_label_mapping_is_sorted_or_given_and_survives_a_rebuild() {
    let lines = [(r#""x""#, "10"), (r#""y""#, "9"), (r#""z""#, r#""b""#), (r#""w""#, r#""a""#), (r#""v""#, "9")];
    let content: String =
        lines.iter().map(|(t, l)| format!("{{\"text\": {t}, \"label\": {l}, \"id\": 1}}\n")).collect();
    let path = temp_file("labels", &content);
    let mut config = TextConfig::new(&path);
    config.valid_fraction = 0.0;
    let t = text_task(config.clone(), 0).unwrap();
    let TaskConfig::TextClassification(resolved) = t.config() else { panic!() };
    let sorted = vec![Label::Int(9), Label::Int(10), Label::Str("a".into()), Label::Str("b".into())];
    assert_eq!(resolved.classes.as_ref(), Some(&sorted), "integers numerically, then strings");
    // Label of each text under the mapping, read back from an epoch of train batches.
    let label_of = |t: &dyn Task| -> HashMap<u8, i64> {
        let b = class(t, Split::Train, 0, 5);
        (0..5).map(|r| (b.row(r).unwrap()[0] as u8, b.labels[r])).collect()
    };
    let want: HashMap<u8, i64> = [(b'x', 1), (b'y', 0), (b'z', 3), (b'w', 2), (b'v', 0)].into();
    assert_eq!(label_of(t.as_ref()), want);
    // Rebuilt from its saved config (JSON round trip), the task maps and batches identically.
    let json = serde_json::to_string(&t.config()).unwrap();
    let rebuilt = build(&serde_json::from_str(&json).unwrap(), 0).unwrap();
    assert_eq!(class(rebuilt.as_ref(), Split::Train, 0, 5), class(t.as_ref(), Split::Train, 0, 5));
    // Given classes fix the order, even when the file lacks one of them.
    config.classes =
        Some(vec![Label::Str("b".into()), Label::Int(10), Label::Str("a".into()), Label::Int(9), Label::Int(3)]);
    let given = text_task(config.clone(), 0).unwrap();
    assert_eq!(given.num_classes(), Some(5));
    let want: HashMap<u8, i64> = [(b'x', 1), (b'y', 3), (b'z', 0), (b'w', 2), (b'v', 3)].into();
    assert_eq!(label_of(given.as_ref()), want);
    // A label outside the classes names its file and line.
    config.classes = Some(vec![Label::Int(9), Label::Int(10)]);
    let msg = err_msg(text_task(config, 0));
    assert!(msg.contains(&format!("{}:3: label \"b\" is not one of the classes [9, 10]", path.display())), "{msg}");
}

#[test]
fn text_test_file_labels_must_be_training_classes() {
    let train = temp_file(
        "unknown-train",
        "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n",
    );
    let test = temp_file(
        "unknown-test",
        "{\"text\": \"meh\", \"label\": \"neg\"}\n\n{\"text\": \"so-so\", \"label\": \"mixed\"}\n",
    );
    let mut config = TextConfig::new(&train);
    config.valid_fraction = 0.0;
    config.test_path = Some(test.clone());
    let msg = err_msg(text_task(config, 0));
    assert!(
        msg.contains(&format!("{}:3: label \"mixed\" is not one of the classes [\"neg\", \"pos\"]", test.display())),
        "{msg}"
    );
}

#[test]
fn text_errors_name_the_file_and_line() {
    let ok = "{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"good\", \"label\": \"b\"}\n";
    let cases: [(&str, String, &str); 9] = [
        ("bad-json", format!("{ok}{{\"text\": \"x\", \"label\": }}\n"), ":3: not valid JSON"),
        ("no-text", format!("{ok}\n{{\"label\": \"a\"}}\n"), ":4: missing field \"text\""),
        ("no-label", format!("{{\"text\": \"x\"}}\n{ok}"), ":1: missing field \"label\""),
        ("float-label", format!("{ok}{{\"text\": \"x\", \"label\": 1.5}}\n"), ":3: field \"label\" is 1.5"),
        (
            "bool-label",
            format!("{ok}{{\"text\": \"x\", \"label\": true}}\n"),
            ":3: field \"label\" must be a string or an integer, found a boolean",
        ),
        (
            "text-number",
            format!("{{\"text\": 5, \"label\": \"a\"}}\n{ok}"),
            ":1: field \"text\" must be a string, found a number",
        ),
        ("empty-text", format!("{ok}{{\"text\": \"\", \"label\": \"a\"}}\n"), ":3: field \"text\" is empty"),
        ("array", format!("{ok}[1, 2]\n"), ":3: expected a JSON object"),
        (
            "one-class",
            "{\"text\": \"x\", \"label\": 4}\n{\"text\": \"y\", \"label\": 4}\n".into(),
            ": every example has label 4; classification needs at least two classes",
        ),
    ];
    for (name, content, want) in cases {
        let path = temp_file(name, &content);
        let msg = err_msg(text_task(TextConfig::new(&path), 0));
        assert!(msg.starts_with(&format!("text task: {}", path.display())) && msg.contains(want), "{name}: {msg}");
    }
    for (name, content) in [("empty", ""), ("blank", "\n  \n\n")] {
        let path = temp_file(name, content);
        let msg = err_msg(text_task(TextConfig::new(&path), 0));
        assert!(msg.contains(&format!("{} holds no examples", path.display())), "{msg}");
    }
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tasks-does-not-exist.jsonl");
    let msg = err_msg(text_task(TextConfig::new(&missing), 0));
    assert!(msg.contains(&format!("cannot read {}", missing.display())), "{msg}");
}

#[test]
fn text_rejects_bad_settings() {
    let mut config = TextConfig::new(SAMPLE);
    config.max_len = 0;
    assert!(err_msg(text_task(config, 0)).contains("max_len is 0"));
    for f in [1.0, -0.1, f64::NAN] {
        let mut config = TextConfig::new(SAMPLE);
        config.valid_fraction = f;
        let msg = err_msg(text_task(config, 0));
        assert!(msg.contains(&format!("valid_fraction {f} must be in [0, 1)")), "{msg}");
    }
    // Two examples and a fraction of 0.9 would leave nothing to train on.
    let path = temp_file("tiny", "{\"text\": \"x\", \"label\": 1}\n{\"text\": \"y\", \"label\": 2}\n");
    let mut config = TextConfig::new(&path);
    config.valid_fraction = 0.9;
    assert!(err_msg(text_task(config.clone(), 0)).contains("has 2 examples and valid_fraction 0.9 holds out 2"));
    config.valid_fraction = 0.1;
    let t = text_task(config.clone(), 0).unwrap();
    assert_eq!(t.split_size(Split::Valid), Some(1), "a positive fraction holds out at least one example");
    config.classes = Some(vec![Label::Int(1), Label::Int(1)]);
    assert!(err_msg(text_task(config.clone(), 0)).contains("classes lists 1 twice"));
    config.classes = Some(vec![Label::Int(1)]);
    assert!(err_msg(text_task(config, 0)).contains("classes lists 1 label(s)"));
}

// ---------------------------------------------------------------- config files and rng

#[test]
fn configs_parse_with_defaults_and_reject_unknown_fields() {
    let parse = |s: &str| serde_json::from_str::<TaskConfig>(s);
    assert_eq!(parse(r#"{"task": "mqar"}"#).unwrap(), TaskConfig::Mqar(MqarConfig::default()));
    let c = parse(r#"{"task": "mqar", "seq_len": 128, "num_kv_pairs": 16, "vocab_size": 8192}"#).unwrap();
    assert_eq!(c, mqar(8192, 128, 16, 0.01));
    assert_eq!(parse(r#"{"task": "induction"}"#).unwrap(), TaskConfig::InductionHeads(InductionConfig::default()));
    let c = parse(r#"{"task": "selective-copying", "region_len": 64}"#).unwrap();
    assert_eq!(c, TaskConfig::SelectiveCopying(SelectiveCopyingConfig { region_len: 64, ..Default::default() }));
    let c = parse(r#"{"task": "text", "path": "d.jsonl", "classes": ["b", 2]}"#).unwrap();
    let mut want = TextConfig::new("d.jsonl");
    want.classes = Some(vec![Label::Str("b".into()), Label::Int(2)]);
    assert_eq!(c, TaskConfig::TextClassification(want));
    assert!(parse(r#"{"task": "mqar", "seqlen": 128}"#).unwrap_err().to_string().contains("unknown field `seqlen`"));
    // A text task reads a file or a built-in data set: neither, or both, is refused when built.
    for (text, needle) in [
        (r#"{"task": "text"}"#, "needs path (a JSONL file"),
        (r#"{"task": "text", "path": "d.jsonl", "dataset": "bbc-news"}"#, "not both"),
        (r#"{"task": "text", "path": "d.jsonl", "fold": 1}"#, "fold 1 needs folds"),
        (r#"{"task": "text", "path": "d.jsonl", "folds": 5, "fold": 5}"#, "fold 5 is not one of the 5 folds"),
        (r#"{"task": "text", "path": "d.jsonl", "folds": 1}"#, "at least 2 folds"),
    ] {
        let e = attune_lab::tasks::build(&parse(text).unwrap(), 0).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(needle), "{text}: {e}");
    }
    assert!(parse(r#"{"task": "copying"}"#).is_err());
    for c in synthetic_configs() {
        assert_eq!(parse(&serde_json::to_string(&c).unwrap()).unwrap(), c);
        assert_eq!(serde_json::to_value(&c).unwrap()["task"], c.name());
    }
}

#[test]
fn rng_streams_are_keyed_and_below_is_uniform() {
    let draw = |key: &[u64]| Rng::from_key(key).next_u64();
    assert_eq!(draw(&[1, 2, 3]), draw(&[1, 2, 3]));
    assert_ne!(draw(&[1, 2, 3]), draw(&[1, 2, 4]));
    assert_ne!(draw(&[1, 2]), draw(&[2, 1]));
    assert_ne!(draw(&[1, 2]), draw(&[1, 2, 0]));
    // 60000 draws over 6 values: 10000 expected each, sigma ~91.
    let mut rng = Rng::from_key(&[42]);
    let mut counts = [0usize; 6];
    for _ in 0..60_000 {
        counts[rng.below(6) as usize] += 1;
    }
    assert!(counts.iter().all(|&c| (9_550..10_450).contains(&c)), "{counts:?}");
    let mut perm = rng.permutation(50);
    perm.sort();
    assert_eq!(perm, (0..50).collect::<Vec<_>>());
    assert!((0..1000).map(|_| rng.unit_f64()).all(|u| (0.0..1.0).contains(&u)));
}

/// The positions plots mark: queries are the supervised positions, and the sources hold what
/// each answer is read from (checked against the targets, not against the generators).
#[test]
fn marks_point_at_the_queries_and_the_tokens_their_answers_need() {
    for config in synthetic_configs() {
        let task = build(&config, 5).unwrap();
        let b = seq(task.as_ref(), Split::Valid, 0, 16);
        for r in 0..b.batch {
            let (x, y) = b.row(r).unwrap();
            let m = task.marks(x, y);
            let supervised: Vec<usize> = (0..y.len()).filter(|&p| y[p] != IGNORE_INDEX).collect();
            assert_eq!(m.queries, supervised, "{}", task.name());
            assert!(!m.source_name.is_empty());
            assert!(m.sources.windows(2).all(|w| w[0] < w[1]), "sources in order");
            match &config {
                TaskConfig::Mqar(c) => {
                    // One key per query; the value after the key is the query's target.
                    assert_eq!(m.sources.len(), c.num_kv_pairs);
                    for &q in &m.queries {
                        let keys: Vec<usize> = m.sources.iter().copied().filter(|&k| x[k] == x[q]).collect();
                        assert_eq!(keys.len(), 1, "query {q} has one key");
                        assert_eq!(i64::from(x[keys[0] + 1]), y[q]);
                    }
                }
                TaskConfig::InductionHeads(c) => {
                    let trigger = (c.vocab_size - 1) as u32;
                    assert_eq!(m.sources.len(), 2);
                    assert_eq!(x[m.sources[0]], trigger);
                    assert_eq!(m.sources[1], m.sources[0] + 1);
                    assert_eq!(i64::from(x[m.sources[1]]), y[y.len() - 1]);
                }
                TaskConfig::SelectiveCopying(_) => {
                    let copied: Vec<i64> = m.sources.iter().map(|&s| i64::from(x[s])).collect();
                    let answers: Vec<i64> = m.queries.iter().map(|&q| y[q]).collect();
                    assert_eq!(copied, answers);
                }
                _ => unreachable!("synthetic_configs holds the sequence tasks only"),
            }
        }
    }
}

// ---------------------------------------------------------------- folds and words

/// 3 classes of 7, 5 and 4 texts in interleaved file order; text `j` of class `c` is
/// `"c<c> t<j> common"` (class `b` also says `"bee bee"`, and its last text says `"zebra zebra"`).
fn fold_file() -> PathBuf {
    let mut lines = Vec::new();
    let counts = [("a", 7), ("b", 5), ("c", 4)];
    for j in 0..7 {
        for (c, n) in counts {
            if j < n {
                let extra = match (c, j) {
                    ("b", 4) => " zebra zebra",
                    ("b", _) => " bee bee",
                    _ => "",
                };
                lines.push(format!("{{\"text\": \"c{c} t{j} common{extra}\", \"label\": \"{c}\"}}"));
            }
        }
    }
    temp_file("folds", &(lines.join("\n") + "\n"))
}

fn texts(t: &dyn Task, split: Split) -> Vec<Vec<u32>> {
    let n = t.split_size(split).unwrap();
    let b = class(t, split, 0, n.max(1));
    (0..b.batch).map(|r| b.row(r).unwrap().to_vec()).collect()
}

#[test]
fn stratified_folds_partition_the_texts_and_keep_each_class_spread() {
    let path = fold_file();
    let mut tested: Vec<Vec<u32>> = Vec::new();
    for i in 0..3 {
        let mut cfg = TextConfig::new(&path);
        (cfg.folds, cfg.fold, cfg.valid_fraction) = (Some(3), Some(i), 0.2);
        let t = text_task(cfg, 7).unwrap();
        let test = texts(t.as_ref(), Split::Test);
        // Within each class, text j is in fold j % 3: a: 7 -> 3,2,2; b: 5 -> 2,2,1; c: 4 -> 2,1,1.
        let want = [7, 5, 4].iter().map(|&n: &usize| (0..n).filter(|j| j % 3 == i).count()).sum::<usize>();
        assert_eq!(test.len(), want, "fold {i}");
        let epoch = class(t.as_ref(), Split::Train, 0, 16 - want - t.split_size(Split::Valid).unwrap());
        let train: Vec<Vec<u32>> = (0..epoch.batch).map(|r| epoch.row(r).unwrap().to_vec()).collect();
        let train_valid = [texts(t.as_ref(), Split::Valid), train].concat();
        for x in &test {
            assert!(!train_valid.contains(x), "fold {i}: a test text is also trained on");
        }
        tested.extend(test);
    }
    tested.sort();
    tested.dedup();
    assert_eq!(tested.len(), 16, "every text is tested in exactly one fold");
    // The listing peers read names the same folds.
    let mut cfg = TextConfig::new(&path);
    cfg.folds = Some(3);
    let listing = attune_lab::tasks::text::fold_listing(&cfg, 3).unwrap();
    assert_eq!(listing.len(), 16);
    assert_eq!(listing[0], ("line 1".to_string(), "a".to_string(), 0));
    // Line 4 is class a's second text, line 16 class a's last (its seventh: fold 0).
    assert_eq!((listing[3].2, listing[15].2), (1, 0));
    assert_eq!(attune_lab::tasks::text::stratified_folds(&[0, 1, 0, 0, 1, 0], 2), [0, 0, 1, 0, 1, 1]);
}

#[test]
fn word_tokens_come_from_a_vocabulary_of_the_train_split_alone() {
    let mut cfg = TextConfig::new(fold_file());
    (cfg.folds, cfg.fold, cfg.valid_fraction, cfg.tokens) = (Some(5), Some(4), 0.0, TextTokens::Words);
    let t = text_task(cfg, 0).unwrap();
    // Train texts: the words seen at least twice there are "common", "ca", "cb", "cc", "bee"
    // and the t<j> of texts tested elsewhere... "zebra" is in class b's 5th text (j = 4), which
    // is in fold 4: the test split. It must be unknown (id 1).
    let test = texts(t.as_ref(), Split::Test);
    let zebra_row = test.iter().find(|r| r.len() == 5).expect("class b's last text, 5 words");
    assert_eq!(&zebra_row[3..], &[1, 1], "a word seen only in the test fold is unknown");
    assert_eq!(t.token_label(zebra_row[2]), "common");
    assert_eq!((t.token_label(0), t.token_label(1)), ("<pad>".to_string(), "<unk>".to_string()));
    // Vocabulary: the special ids plus the words seen twice or more in the train split.
    assert!(t.vocab_size() >= 7 && t.vocab_size() < 20, "{}", t.vocab_size());
    let mut cfg = TextConfig::new(fold_file());
    (cfg.tokens, cfg.vocab_size) = (TextTokens::Words, 0);
    assert!(err_msg(text_task(cfg, 0)).contains("vocab_size is 0"));
}
