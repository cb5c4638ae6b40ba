//! Fuzz-style tests of the attention case-file loader (and the checker behind it): thousands
//! of seeded mutants of a valid case file (truncation, bit flips, huge header lengths, wrong
//! dtypes and shapes, broken offsets, mutated per-case JSON metadata) must each load or fail
//! with an error naming the file: never a panic, and never one allocation beyond a small
//! multiple of the file's size. Mutants that load are also run through `check_case` on the
//! oracle and the CPU flash backend, which must report rather than panic.

use attune_attention::cases::{Backend, check_case, load_cases};
use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, safetensors as st_mut};
use safetensors::{Dtype, serialize, tensor::TensorView};
use std::collections::HashMap;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const FILE: &str = "fuzz_cases.safetensors";

/// A stored tensor: dtype, shape and little-endian bytes.
type Raw = (Dtype, Vec<usize>, Vec<u8>);

fn f32s(shape: &[usize], seed: usize) -> Raw {
    let n: usize = shape.iter().product();
    let bytes = (0..n).flat_map(|i| (((i * 7 + seed) % 13) as f32 / 13.0 - 0.5).to_le_bytes()).collect();
    (Dtype::F32, shape.to_vec(), bytes)
}

fn f16s(shape: &[usize], seed: usize) -> Raw {
    let n: usize = shape.iter().product();
    let bytes = (0..n).flat_map(|i| half::f16::from_f32(((i * 5 + seed) % 11) as f32 / 11.0 - 0.5).to_le_bytes());
    (Dtype::F16, shape.to_vec(), bytes.collect())
}

/// Two small cases: f32 forward with lse and a window; f16 GQA backward with `seqlens_k`.
fn valid_file() -> Vec<u8> {
    let mut t: Vec<(String, Raw)> = Vec::new();
    let (q, kv, lse) = ([1, 2, 3, 4], [1, 1, 5, 4], [1, 2, 3]);
    for (i, (name, shape)) in [("q", &q[..]), ("k", &kv), ("v", &kv), ("out", &q), ("lse", &lse)].iter().enumerate() {
        t.push((format!("fwd.{name}"), f32s(shape, i)));
    }
    for (i, (name, shape)) in [("q", &q[..]), ("k", &kv), ("v", &kv), ("dout", &q)].iter().enumerate() {
        t.push((format!("bwd.{name}"), f16s(shape, i)));
    }
    for (i, (name, shape)) in [("out", &q[..]), ("dq", &q), ("dk", &kv), ("dv", &kv)].iter().enumerate() {
        t.push((format!("bwd.{name}"), f32s(shape, 10 + i)));
    }
    t.push(("bwd.seqlens_k".into(), (Dtype::I32, vec![1], 4i32.to_le_bytes().to_vec())));
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .map(|(n, (dt, shape, bytes))| (n.clone(), TensorView::new(*dt, shape.clone(), bytes).unwrap()))
        .collect();
    let meta = HashMap::from([
        ("fwd".to_string(), r#"{"causal": true, "scale": 0.5, "window": [2, 0], "atol": 1e-4}"#.to_string()),
        ("bwd".to_string(), r#"{"causal": false, "softcap": 30.0, "rtol": 1e-3, "atol_dq": 1e-3}"#.to_string()),
    ]);
    serialize(views, Some(meta)).unwrap()
}

#[test]
fn fuzz_load_cases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    let valid = valid_file();
    std::fs::write(&path, &valid).unwrap();
    assert_eq!(load_cases(&path).unwrap().len(), 2, "the seed file must itself load");
    let mut checked = 0;
    let tally = Fuzz::new("attention load_cases", 0xca5e).cases(4000).errors_name(FILE).run(
        |rng: &mut Rng| st_mut::mutate(rng, &valid, true),
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            let cases = load_cases(&path)?;
            for case in &cases {
                for backend in [Backend::Oracle, Backend::Flash] {
                    // Errors are reported in the result; only a panic would escape.
                    let _ = check_case(case, backend);
                    checked += 1;
                }
            }
            Ok::<_, attune_attention::AttentionError>(())
        },
    );
    tally.assert_clean();
    println!("  check_case runs on loaded mutants: {checked}");
    assert!(tally.loaded > 100 && tally.errors > tally.cases / 2, "{}", tally.summary());
}
