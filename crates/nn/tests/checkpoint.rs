//! Checkpoints: byte-exact round trips of every dtype, the file layout against the safetensors
//! format written out by hand, strict / non-strict loading reports, dtype conversion, loads
//! that fail leaving parameters untouched, atomic writes, corrupt files, and PyTorch-written
//! checkpoints (tests/data/torch_*, from benches/peers/torch_train.py export) loading into
//! the same names and layouts and reproducing PyTorch's logits.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use attune_nn::checkpoint::{load_params, load_state_dict, load_tensors, save_params, save_tensors};
use attune_nn::{Ctx, LoadOptions, Model, ModelConfig, ParamBuilder, ParamStore};
use attune_persist::write_atomic;
use attune_tensor::{DType, Device, Tensor};
use half::{bf16, f16};

fn dev() -> Device {
    Device::Cpu
}

/// A safetensors file built by hand from the format's definition: an 8-byte little-endian
/// header length, a JSON header mapping names to dtype / shape / data_offsets (and
/// `__metadata__`), then the data.
fn handmade_safetensors(entries: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// The header and data section of a safetensors file, parsed by hand.
fn parse_by_hand(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), &bytes[8 + n..])
}

fn one_of_each_dtype() -> Vec<(String, Tensor)> {
    let d = dev();
    vec![
        ("u8".into(), Tensor::from_vec(vec![0u8, 1, 127, 255, 42, 7], [2, 3], &d).unwrap()),
        ("u32".into(), Tensor::from_vec(vec![0u32, 1, u32::MAX, 123_456_789], [4], &d).unwrap()),
        ("i64".into(), Tensor::from_vec(vec![i64::MIN, -1, 0, i64::MAX, 5, -100], [3, 1, 2], &d).unwrap()),
        (
            "f16".into(),
            Tensor::from_vec(
                [0.0f32, -0.0, 1.5, -65504.0, 6.0e-8, f32::INFINITY].map(f16::from_f32).to_vec(),
                [2, 3],
                &d,
            )
            .unwrap(),
        ),
        (
            "bf16".into(),
            Tensor::from_vec([1.0f32, -3.0e38, 1.0e-38, 0.1].map(bf16::from_f32).to_vec(), [2, 2], &d).unwrap(),
        ),
        (
            "f32".into(),
            Tensor::from_vec(vec![0.1f32, -0.0, f32::MIN_POSITIVE / 4.0, f32::MAX, f32::NEG_INFINITY, 1.0], [6], &d)
                .unwrap(),
        ),
        ("f64".into(), Tensor::from_vec(vec![std::f64::consts::PI, -1e-310, 1e300, -0.0], [2, 2], &d).unwrap()),
        ("scalar".into(), Tensor::from_vec(vec![2.5f32], Vec::<usize>::new(), &d).unwrap()),
        ("empty".into(), Tensor::zeros([0, 3], DType::F32, &d).unwrap()),
    ]
}

/// Little-endian bytes of a tensor written out per dtype.
fn expected_bytes(t: &Tensor) -> Vec<u8> {
    match t.dtype() {
        DType::U8 => t.to_vec::<u8>().unwrap(),
        DType::U32 => t.to_vec::<u32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.to_vec::<i64>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => t.to_vec::<f16>().unwrap().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        DType::BF16 => t.to_vec::<bf16>().unwrap().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        DType::F32 => t.to_vec::<f32>().unwrap().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        DType::F64 => t.to_vec::<f64>().unwrap().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
    }
}

#[test]
fn every_dtype_round_trips_bit_exactly_in_the_safetensors_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.safetensors");
    let tensors = one_of_each_dtype();
    let meta = HashMap::from([("step".to_string(), "17".to_string()), ("note".to_string(), "ü".to_string())]);
    save_tensors(&path, &tensors, Some(meta.clone())).unwrap();

    // The file read by hand: dtype names, shapes and little-endian data at the stated offsets.
    let bytes = std::fs::read(&path).unwrap();
    let (header, data) = parse_by_hand(&bytes);
    let st_name = |d: DType| match d {
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
    };
    for (name, t) in &tensors {
        let e = &header[name];
        assert_eq!(e["dtype"], st_name(t.dtype()), "{name}");
        assert_eq!(e["shape"], serde_json::json!(t.dims()), "{name}");
        let (a, b) = (e["data_offsets"][0].as_u64().unwrap() as usize, e["data_offsets"][1].as_u64().unwrap() as usize);
        assert_eq!(&data[a..b], &expected_bytes(t)[..], "{name}: data bytes");
    }
    assert_eq!(header["__metadata__"]["step"], "17");

    let file = load_tensors(&path).unwrap();
    assert_eq!(file.metadata, meta);
    assert_eq!(file.tensors.len(), tensors.len());
    for (name, t) in &tensors {
        let got = &file.tensors[name];
        assert_eq!((got.dtype(), got.dims()), (t.dtype(), t.dims()), "{name}");
        assert_eq!(expected_bytes(got), expected_bytes(t), "{name}: bits changed");
    }
}

#[test]
fn handmade_files_load_including_i32_as_i64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.safetensors");
    let f32s: Vec<u8> = [1.0f32, -2.0, 0.5, 3.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    let i32s: Vec<u8> = [-7i32, 0, i32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, handmade_safetensors(&[("w", "F32", vec![2, 2], f32s), ("lens", "I32", vec![3], i32s)]))
        .unwrap();
    let file = load_tensors(&path).unwrap();
    assert_eq!(file.tensors["w"].to_vec2::<f32>().unwrap(), vec![vec![1.0, -2.0], vec![0.5, 3.25]]);
    assert_eq!(file.tensors["lens"].dtype(), DType::I64);
    assert_eq!(file.tensors["lens"].to_vec::<i64>().unwrap(), vec![-7, 0, i32::MAX as i64]);
    // A dtype the loader does not support is an error naming the tensor.
    std::fs::write(&path, handmade_safetensors(&[("flags", "BOOL", vec![2], vec![0, 1])])).unwrap();
    let e = load_tensors(&path).err().unwrap().to_string();
    assert!(e.contains("flags") && e.contains(path.to_str().unwrap()), "{e}");
}

/// A store `a.weight (2, 3)`, `a.bias (2)`, `b.weight (4)` with known values.
fn small_store(dtype: DType) -> ParamStore {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, dtype, &dev());
    pb.sub("a").param("weight", [2, 3], attune_nn::Init::Const(1.0)).unwrap();
    pb.sub("a").param("bias", 2, attune_nn::Init::Const(2.0)).unwrap();
    pb.sub("b").param("weight", 4, attune_nn::Init::Const(3.0)).unwrap();
    store
}

fn values(store: &ParamStore) -> BTreeMap<String, Vec<f64>> {
    store.state_dict().into_iter().map(|(n, t)| (n, t.to_f64_vec().unwrap())).collect()
}

fn t32(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape.to_vec(), &dev()).unwrap()
}

#[test]
fn strict_and_non_strict_reports_name_every_difference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    let file = vec![
        ("a.weight".to_string(), t32(vec![9.0; 6], &[2, 3])),
        ("b.weight".to_string(), t32(vec![8.0; 5], &[5])),
        ("c.extra".to_string(), t32(vec![7.0], &[1])),
    ];
    save_tensors(&path, &file, None).unwrap();

    let store = small_store(DType::F32);
    let before = values(&store);
    let e = load_params(&path, &store, LoadOptions { strict: true, convert_dtype: false }).unwrap_err().to_string();
    for needle in ["a.bias", "c.extra", "b.weight", "[4]", "[5]", path.to_str().unwrap()] {
        assert!(e.contains(needle), "strict error lacks {needle}: {e}");
    }
    assert_eq!(values(&store), before, "a failed strict load changed parameters");

    let report = load_params(&path, &store, LoadOptions::default()).unwrap();
    assert_eq!(report.missing, vec!["a.bias".to_string()]);
    assert_eq!(report.unexpected, vec!["c.extra".to_string()]);
    assert_eq!(report.mismatched, vec![("b.weight".to_string(), vec![4], vec![5])]);
    assert_eq!(report.loaded, 1);
    assert!(!report.is_exact());
    let after = values(&store);
    assert_eq!(after["a.weight"], vec![9.0; 6], "the matching tensor is loaded");
    assert_eq!(after["a.bias"], vec![2.0; 2], "a missing tensor leaves the parameter as it was");
    assert_eq!(after["b.weight"], vec![3.0; 4], "a mis-shaped tensor is not loaded");

    // An exact file loads strictly and reports so.
    let exact = vec![
        ("a.weight".to_string(), t32((0..6).map(|i| i as f32).collect(), &[2, 3])),
        ("a.bias".to_string(), t32(vec![-1.0, -2.0], &[2])),
        ("b.weight".to_string(), t32(vec![0.5; 4], &[4])),
    ];
    save_tensors(&path, &exact, None).unwrap();
    let report = load_params(&path, &store, LoadOptions { strict: true, convert_dtype: false }).unwrap();
    assert!(report.is_exact() && report.loaded == 3, "{report:?}");
    assert_eq!(values(&store)["a.weight"], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(store.get("a.weight").unwrap().dims(), &[2, 3]);
}

#[test]
fn dtype_differences_need_convert_dtype() {
    let store = small_store(DType::F32);
    let before = values(&store);
    // a.weight is fine, a.bias is f64: without convert_dtype the whole load fails and nothing
    // (not even a.weight, checked first) changes.
    let a_bias = [0.1f64, 1.0 / 3.0];
    let mut tensors = BTreeMap::from([
        ("a.weight".to_string(), t32(vec![5.0; 6], &[2, 3])),
        ("a.bias".to_string(), Tensor::from_vec(a_bias.to_vec(), [2], &dev()).unwrap()),
        (
            "b.weight".to_string(),
            Tensor::from_vec([1.5f32, -2.0, 0.25, 1e-3].map(f16::from_f32).to_vec(), [4], &dev()).unwrap(),
        ),
    ]);
    let p = Path::new("mem://dtypes");
    let e = load_state_dict(p, &store, tensors.clone(), LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("a.bias") && e.contains("f64") && e.contains("f32") && e.contains("convert_dtype"), "{e}");
    assert_eq!(values(&store), before);

    let report =
        load_state_dict(p, &store, tensors.clone(), LoadOptions { strict: true, convert_dtype: true }).unwrap();
    assert_eq!(report.loaded, 3);
    let after = values(&store);
    assert_eq!(after["a.bias"], a_bias.map(|v| v as f32 as f64).to_vec(), "f64 -> f32 rounds to nearest");
    assert_eq!(
        after["b.weight"],
        [1.5f32, -2.0, 0.25, 1e-3].map(|v| f16::from_f32(v).to_f64()).to_vec(),
        "f16 -> f32 is exact"
    );
    assert!(store.named().iter().all(|(_, v)| v.dtype() == DType::F32), "parameters keep their dtype");

    // f32 file into an f64 model (the interop test uses this too), and bf16 into f32.
    let store64 = small_store(DType::F64);
    tensors.insert("a.bias".into(), t32(vec![0.1, 0.2], &[2]));
    tensors.insert(
        "b.weight".into(),
        Tensor::from_vec([0.1f32, 3.0, -7.5, 1e10].map(bf16::from_f32).to_vec(), [4], &dev()).unwrap(),
    );
    load_state_dict(p, &store64, tensors, LoadOptions { strict: true, convert_dtype: true }).unwrap();
    let v = values(&store64);
    assert_eq!(v["a.bias"], vec![0.1f32 as f64, 0.2f32 as f64]);
    assert_eq!(v["b.weight"], [0.1f32, 3.0, -7.5, 1e10].map(|x| bf16::from_f32(x).to_f64()).to_vec());
}

#[test]
fn models_round_trip_through_save_params() {
    let cfg = ModelConfig { positions: attune_nn::Positions::Rope, n_kv_heads: 1, ..ModelConfig::lm(30, 8, 16, 2, 2) };
    let a = Model::new(&cfg, 1, DType::F32, &dev()).unwrap();
    let b = Model::new(&cfg, 2, DType::F32, &dev()).unwrap();
    let toks = Tensor::from_vec((0..10i64).collect::<Vec<_>>(), [2, 5], &dev()).unwrap();
    let (ya, yb) =
        (a.forward(&toks, None, &mut Ctx::eval()).unwrap(), b.forward(&toks, None, &mut Ctx::eval()).unwrap());
    assert_ne!(ya.to_vec::<f32>().unwrap(), yb.to_vec::<f32>().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/run/model.safetensors");
    save_params(&path, a.store(), Some(HashMap::from([("format".into(), "pt".into())]))).unwrap();
    let report = load_params(&path, b.store(), LoadOptions { strict: true, convert_dtype: false }).unwrap();
    assert_eq!(report.loaded, a.store().len());
    for ((na, ta), (nb, tb)) in a.store().state_dict().into_iter().zip(b.store().state_dict()) {
        assert_eq!(na, nb);
        assert_eq!(expected_bytes(&ta), expected_bytes(&tb), "{na}");
    }
    let yb = b.forward(&toks, None, &mut Ctx::eval()).unwrap();
    assert_eq!(ya.to_vec::<f32>().unwrap(), yb.to_vec::<f32>().unwrap());
    assert_eq!(load_tensors(&path).unwrap().metadata["format"], "pt");
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn atomic_writes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
    assert_eq!(dir_entries(dir.path()), ["w.bin"]);
    save_tensors(&dir.path().join("t.safetensors"), &one_of_each_dtype(), None).unwrap();
    assert_eq!(dir_entries(dir.path()), ["t.safetensors", "w.bin"]);

    // A target that cannot be replaced (a directory) fails, names the path and cleans up.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("inside"), b"x").unwrap();
    let e = write_atomic(&blocked, b"data").unwrap_err().to_string();
    assert!(e.contains(blocked.to_str().unwrap()), "{e}");
    assert_eq!(dir_entries(dir.path()), ["blocked", "t.safetensors", "w.bin"]);

    // Duplicate names are refused before anything is written.
    let t = Tensor::zeros([1], DType::F32, &dev()).unwrap();
    let dup = dir.path().join("dup.safetensors");
    let e = save_tensors(&dup, &[("x".into(), t.clone()), ("x".into(), t)], None).unwrap_err().to_string();
    assert!(e.contains("\"x\"") && e.contains("twice"), "{e}");
    assert!(!dup.exists());
}

#[test]
fn truncated_corrupt_and_missing_files_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let store = small_store(DType::F32);
    save_params(&good, &store, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (header, _) = parse_by_hand(&bytes);
    assert!(header.get("a.weight").is_some());

    let target = small_store(DType::F32);
    for v in target.vars() {
        v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
    }
    let before = values(&target);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated data", bytes[..bytes.len() - 3].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("shorter than the length prefix", bytes[..5].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
        ("header length past the end", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            b
        }),
        ("header not json", {
            let mut b = bytes.clone();
            b[8] = b'#';
            b
        }),
    ];
    for (what, content) in cases {
        let path = dir.path().join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&path, content).unwrap();
        let e = load_tensors(&path).err().unwrap_or_else(|| panic!("{what}: loaded")).to_string();
        assert!(e.contains(path.to_str().unwrap()), "{what}: error does not name the file: {e}");
        let e = load_params(&path, &target, LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains(path.to_str().unwrap()), "{what}: {e}");
        assert_eq!(values(&target), before, "{what}: a failed load changed parameters");
    }
    let missing: PathBuf = dir.path().join("absent.safetensors");
    let e = load_tensors(&missing).err().unwrap().to_string();
    assert!(e.contains(missing.to_str().unwrap()) && e.contains("cannot read"), "{e}");
}

// ---------------------------------------------------------------------------------------
// PyTorch interop. Each fixture directory was written by
//   python benches/peers/torch_train.py export --model '<json>' --seed N --out DIR --batch B --seq S
// (see benches/peers/README.md): PyTorch-initialised weights saved from `state_dict()` as f32,
// the run config, and probe tokens (classifier: lengths) with the logits PyTorch computed in
// f64 from those f32 weights, stored as f32.

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn fixture_config(dir: &Path) -> ModelConfig {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(json["model"].clone()).unwrap()
}

/// Builds the fixture's model in `dtype`, loads the PyTorch weights strictly and returns the
/// max |attune - torch| over the probe logits.
fn torch_fixture_error(name: &str, dtype: DType) -> f64 {
    let dir = fixture(name);
    let cfg = fixture_config(&dir);
    // A seed unrelated to PyTorch's: every value must come from the file.
    let model = Model::new(&cfg, 12345, dtype, &dev()).unwrap();
    let opts = LoadOptions { strict: true, convert_dtype: dtype != DType::F32 };
    let report = load_params(&dir.join("model.safetensors"), model.store(), opts).unwrap();
    assert!(report.is_exact() && report.loaded == model.store().len(), "{name}: {report:?}");
    let probe = load_tensors(&dir.join("probe.safetensors")).unwrap().tensors;
    let tokens = &probe["tokens"];
    let lengths: Option<Vec<usize>> =
        probe.get("lengths").map(|l| l.to_vec::<i64>().unwrap().into_iter().map(|v| v as usize).collect());
    let want = &probe["logits"];
    let got = model.forward(tokens, lengths.as_deref(), &mut Ctx::eval()).unwrap();
    assert_eq!(got.dims(), want.dims(), "{name}");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    assert!(w.iter().any(|v| v.abs() > 0.1), "{name}: degenerate stored logits");
    g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// True when the fixture `name` holds the architecture this test means it to cover.
fn fixture_covers(name: &str, c: &ModelConfig) -> bool {
    use attune_nn::{MlpKind, ModelKind, NormKind, Positions};
    match name {
        "torch_lm" => {
            c.kind == ModelKind::Lm
                && c.positions == Positions::Rope
                && c.n_kv_heads < c.n_heads
                && c.mlp == MlpKind::SwiGlu
                && c.norm == NormKind::RmsNorm
        }
        "torch_classifier" => c.kind == ModelKind::Classifier && c.positions == Positions::Learned,
        "torch_classifier_alibi" => {
            c.kind == ModelKind::Classifier && c.positions == Positions::Alibi && c.window.is_some()
        }
        "torch_lm_alibi" => {
            c.positions == Positions::Alibi && c.window.is_some() && c.softcap.is_some() && c.n_kv_heads == 1
        }
        _ => false,
    }
}

#[test]
fn pytorch_checkpoints_load_strictly_and_reproduce_torch_logits() {
    for name in ["torch_lm", "torch_classifier", "torch_lm_alibi", "torch_classifier_alibi"] {
        assert!(
            fixture_covers(name, &fixture_config(&fixture(name))),
            "{name}: the fixture is not the architecture meant"
        );
        // f32, as the lab runs: PyTorch's f64 logits of the same weights within 1e-4.
        let e32 = torch_fixture_error(name, DType::F32);
        assert!(e32 < 1e-4, "{name}: f32 logits differ from PyTorch's by {e32}");
        // f64 from the same f32 weights: only the f32 rounding of the stored logits remains.
        let e64 = torch_fixture_error(name, DType::F64);
        assert!(e64 < 1e-5, "{name}: f64 logits differ from PyTorch's by {e64}");
    }
}

#[test]
fn the_classifier_fixtures_have_padding() {
    // The padding checks above only mean something if some probe rows are padded.
    for name in ["torch_classifier", "torch_classifier_alibi"] {
        let probe = load_tensors(&fixture(name).join("probe.safetensors")).unwrap().tensors;
        let s = probe["tokens"].dims()[1] as i64;
        let lens = probe["lengths"].to_vec::<i64>().unwrap();
        assert!(lens.iter().any(|&l| l < s) && lens.iter().all(|&l| (1..=s).contains(&l)), "{name}: {lens:?}");
    }
}
