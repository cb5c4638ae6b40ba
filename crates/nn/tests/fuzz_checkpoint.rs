//! Fuzz-style tests of the safetensors checkpoint loader: thousands of seeded mutants of valid
//! checkpoints (truncation, bit flips, huge header lengths, wrong dtypes and shapes, broken
//! offsets, deep nesting) must each load or fail with an `NnError` naming the file: never a
//! panic, and never one allocation beyond a small multiple of the file's size. A failed
//! `load_params` must leave every parameter as it was.

use std::collections::HashMap;
use std::path::Path;

use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, safetensors};
use attune_nn::checkpoint::{load_params, load_tensors, save_params, save_tensors};
use attune_nn::{LoadOptions, ParamStore};
use attune_tensor::{DType, Device, Tensor, Var};
use half::{bf16, f16};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const FILE: &str = "fuzz.safetensors";

fn every_dtype() -> Vec<(String, Tensor)> {
    let d = Device::Cpu;
    vec![
        ("u8".into(), Tensor::from_vec(vec![0u8, 1, 255, 7], [2, 2], &d).unwrap()),
        ("u32".into(), Tensor::from_vec(vec![0u32, u32::MAX, 5], [3], &d).unwrap()),
        ("i64".into(), Tensor::from_vec(vec![i64::MIN, -1, 0, i64::MAX], [2, 1, 2], &d).unwrap()),
        ("f16".into(), Tensor::from_vec([0.5f32, -2.0, 6e-8].map(f16::from_f32).to_vec(), [3], &d).unwrap()),
        ("bf16".into(), Tensor::from_vec([1.0f32, -3e38].map(bf16::from_f32).to_vec(), [2], &d).unwrap()),
        ("f32".into(), Tensor::from_vec(vec![0.1f32, f32::MAX, -0.0, 1.0, 2.0, 3.0], [2, 3], &d).unwrap()),
        ("f64".into(), Tensor::from_vec(vec![std::f64::consts::PI, -1e-310], [2], &d).unwrap()),
        ("scalar".into(), Tensor::from_vec(vec![2.5f32], Vec::<usize>::new(), &d).unwrap()),
        ("empty".into(), Tensor::zeros([0, 3], DType::F32, &d).unwrap()),
    ]
}

/// A small model's parameters: f32 and bf16, a matrix, a vector and a scalar.
fn params() -> ParamStore {
    let store = ParamStore::new();
    let d = Device::Cpu;
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let w = Tensor::from_vec(vals, [3, 4], &d).unwrap();
    store.insert("layer.weight", Var::from_tensor(&w).unwrap()).unwrap();
    store.insert("layer.bias", Var::from_tensor(&Tensor::zeros([4], DType::F32, &d).unwrap()).unwrap()).unwrap();
    let h = Tensor::from_vec([1.0f32, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(), [2, 2], &d).unwrap();
    store.insert("half", Var::from_tensor(&h).unwrap()).unwrap();
    let s = Tensor::from_vec(vec![0.5f32], Vec::<usize>::new(), &d).unwrap();
    store.insert("scale", Var::from_tensor(&s).unwrap()).unwrap();
    store
}

fn snapshot(store: &ParamStore) -> Vec<(String, Vec<f64>)> {
    store.named().into_iter().map(|(n, v)| (n, v.as_tensor().to_f64_vec().unwrap())).collect()
}

fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(FILE);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn meta() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string()), ("step".to_string(), "3".to_string())]))
}

#[test]
fn fuzz_load_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.safetensors");
    save_tensors(&seed_path, &every_dtype(), meta()).unwrap();
    let valid = std::fs::read(&seed_path).unwrap();
    let tally = Fuzz::new("checkpoint load_tensors", 0x5afe)
        .cases(4000)
        .errors_name(FILE)
        .run(|rng: &mut Rng| safetensors::mutate(rng, &valid, false), |bytes| load_tensors(&write(dir.path(), bytes)));
    tally.assert_clean();
    // Both outcomes occur: mutants that keep the file valid load, the others are rejected.
    assert!(tally.loaded > 100 && tally.errors > tally.cases / 2, "{}", tally.summary());
}

#[test]
fn fuzz_load_params() {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.safetensors");
    save_params(&seed_path, &params(), meta()).unwrap();
    let valid = std::fs::read(&seed_path).unwrap();
    let mut untouched_failures = 0;
    let tally = Fuzz::new("checkpoint load_params", 0x9a7a).cases(3000).errors_name(FILE).run(
        |rng: &mut Rng| safetensors::mutate(rng, &valid, false),
        |bytes| {
            let store = params();
            let before = snapshot(&store);
            let opts = LoadOptions { strict: bytes.len() % 2 == 0, convert_dtype: bytes.len() % 3 == 0 };
            let result = load_params(&write(dir.path(), bytes), &store, opts);
            if result.is_err() {
                assert_eq!(snapshot(&store), before, "a failed load changed the parameters");
                untouched_failures += 1;
            }
            result
        },
    );
    tally.assert_clean();
    assert!(tally.loaded > 100 && tally.errors > tally.cases / 2, "{}", tally.summary());
    assert_eq!(untouched_failures, tally.errors);
}
