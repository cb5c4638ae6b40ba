//! Fuzz-style tests of `Optimizer::load_state_dict`: the saved state of every optimizer
//! (SGD with momentum, Adam with AMSGrad, AdamW, Adafactor; f32, bf16 and f64 parameters),
//! written as one JSON document (scalars, and each tensor's dtype, shape and values), gets
//! thousands of seeded text mutations: boundary numbers in step counts, learning rates,
//! shapes and values, wrong types, renamed or missing entries, deep nesting, truncation.
//! Each mutant that still decodes into an `OptimizerState` must load or fail with the
//! optimizer's typed error, never panic; a failed load must leave the optimizer's state as it
//! was, and a successful one must be followed by a step that does not panic.

use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, text};
use attune_optim::{AdamConfig, Optimizer, OptimizerConfig, OptimizerState, ParamGroup, SgdConfig};
use attune_tensor::{DType, Device, GradStore, Tensor, Var};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F64 => "f64",
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
        DType::U32 => "u32",
        DType::U8 => "u8",
    }
}

/// The state as the JSON document the mutations edit.
fn encode(state: &OptimizerState) -> Vec<u8> {
    let tensors: serde_json::Map<String, Value> = state
        .tensors
        .iter()
        .map(|(k, t)| {
            let v = json!({"dtype": dtype_name(t.dtype()), "shape": t.dims(), "values": t.to_f64_vec().unwrap()});
            (k.clone(), v)
        })
        .collect();
    serde_json::to_vec_pretty(&json!({"scalars": state.scalars, "tensors": tensors})).unwrap()
}

/// The inverse of [`encode`]; its errors stand for what safetensors and serde_json reject
/// before an optimizer sees the state.
fn decode(bytes: &[u8]) -> Result<OptimizerState, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    for (name, t) in doc.get("tensors").and_then(Value::as_object).ok_or("no tensors")? {
        let dtype = match t.get("dtype").and_then(Value::as_str) {
            Some("f64") => DType::F64,
            Some("f32") => DType::F32,
            Some("f16") => DType::F16,
            Some("bf16") => DType::BF16,
            Some("i64") => DType::I64,
            Some("u32") => DType::U32,
            Some("u8") => DType::U8,
            other => return Err(format!("dtype {other:?}")),
        };
        let shape: Vec<usize> =
            serde_json::from_value(t.get("shape").cloned().unwrap_or(Value::Null)).map_err(|e| e.to_string())?;
        // Lenient, so that mutated values reach the optimizer: a non-number is read as a
        // special float ("inf", "-inf", anything else NaN), as a bit-flipped file would hold.
        let values: Vec<f64> = t
            .get("values")
            .and_then(Value::as_array)
            .ok_or("no values")?
            .iter()
            .map(|v| v.as_f64().unwrap_or_else(|| v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)))
            .collect();
        let t = Tensor::from_vec(values, shape, &Device::Cpu).and_then(|t| t.to_dtype(dtype));
        tensors.insert(name.clone(), t.map_err(|e| e.to_string())?);
    }
    Ok(OptimizerState { tensors, scalars: doc.get("scalars").cloned().unwrap_or(Value::Null) })
}

fn params() -> Vec<(String, Var)> {
    let t = |v: Vec<f64>, shape: &[usize], dtype: DType| {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_var().unwrap()
    };
    vec![
        ("w".into(), t((0..12).map(|i| i as f64 / 7.0 - 0.8).collect(), &[3, 4], DType::F32)),
        ("h".into(), t(vec![0.5, -1.0, 2.0, 0.25], &[4], DType::BF16)),
        ("s".into(), t(vec![0.3], &[], DType::F64)),
    ]
}

fn grads(named: &[(String, Var)], k: f64) -> GradStore {
    let mut g = GradStore::default();
    for (i, (_, v)) in named.iter().enumerate() {
        let vals: Vec<f64> = (0..v.elem_count()).map(|j| ((i + j) as f64 * 0.37 + k).sin()).collect();
        let t = Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap().to_dtype(v.dtype()).unwrap();
        g.insert(v, t);
    }
    g
}

fn configs() -> Vec<OptimizerConfig> {
    vec![
        OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, nesterov: true, ..SgdConfig::default() }),
        OptimizerConfig::Adam(AdamConfig { amsgrad: true, ..AdamConfig::default() }),
        OptimizerConfig::from_name("adamw").unwrap(),
        OptimizerConfig::from_name("adafactor").unwrap(),
    ]
}

/// An optimizer of `cfg` on fresh parameters, stepped `steps` times.
fn stepped(cfg: &OptimizerConfig, steps: u64) -> (Vec<(String, Var)>, Box<dyn Optimizer>) {
    let named = params();
    let mut opt = cfg.build(vec![ParamGroup::new(named.clone())]).unwrap();
    for k in 0..steps {
        opt.step(&grads(&named, k as f64)).unwrap();
    }
    (named, opt)
}

/// Scalars (as JSON text), then each tensor's name, dtype, shape and value bits.
type Fingerprint = (String, Vec<(String, DType, Vec<usize>, Vec<u64>)>);

/// What a state holds, comparable bit for bit.
fn fingerprint(s: &OptimizerState) -> Fingerprint {
    let t = s.tensors.iter().map(|(k, t)| {
        (k.clone(), t.dtype(), t.dims().to_vec(), t.to_f64_vec().unwrap().iter().map(|x| x.to_bits()).collect())
    });
    (s.scalars.to_string(), t.collect())
}

#[test]
fn fuzz_optimizer_load_state_dict() {
    for (i, cfg) in configs().iter().enumerate() {
        let (_, saved) = stepped(cfg, 3);
        let valid = encode(&saved.state_dict().unwrap());
        let (mut reached, mut stepped_after) = (0, 0);
        let name = format!("optimizer state {}", cfg.name());
        let tally = Fuzz::new(&name, 0x0b7 + i as u64).cases(1500).run(
            |rng: &mut Rng| {
                let mut doc = valid.clone();
                let what = text::mutate(rng, &mut doc, false);
                (doc, what)
            },
            |bytes| {
                let state = decode(bytes)?;
                reached += 1;
                let (named, mut opt) = stepped(cfg, 1);
                let before = fingerprint(&opt.state_dict().map_err(|e| e.to_string())?);
                match opt.load_state_dict(&state) {
                    Ok(()) => {
                        // Loaded state must be usable: a step may fail with an error, not panic.
                        let _ = opt.step(&grads(&named, 0.5));
                        stepped_after += 1;
                        Ok(())
                    }
                    Err(e) => {
                        let after = fingerprint(&opt.state_dict().map_err(|e| e.to_string())?);
                        assert!(before == after, "a failed load changed the optimizer's state: {e}");
                        Err(e.to_string())
                    }
                }
            },
        );
        tally.assert_clean();
        println!("  decoded into an OptimizerState and loaded: {reached}; stepped after loading: {stepped_after}");
        // Most mutants keep the document valid JSON and reach the optimizer; some of those load.
        assert!(tally.loaded > 50 && reached > tally.cases / 5, "{}", tally.summary());
    }
}
