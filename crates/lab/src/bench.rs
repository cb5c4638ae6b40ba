//! `attune bench-step`: the time of one training step (forward, loss, backward, AdamW step)
//! on random data, the Attune side of `benches/peers/torch_train.py bench` (the transformer, on
//! random tokens) and of `benches/peers/torch_ram.py bench` (the Recurrent Attention Model, on
//! random images).
//!
//! The work per step is the peer's: the same architecture (presets `mqar-default` and `large`
//! are the peer's `PRESETS`), every position supervised, mean cross entropy, AdamW with
//! lr 1e-3 and PyTorch's other defaults, no clipping and no gradient norm. The optimizer's
//! groups come from [`split_decay`] as in `attune train` (biases and norm gains get no weight
//! decay; the peer decays them too, which costs the same element-wise work). The loss is read
//! back to the host every step, like the peer's `loss.item()`. Flags and JSON keys match the
//! peer's, so `cargo xtask bench-train` can put the two side by side. `--precision bf16` runs
//! the step under `attune train --precision bf16`'s autocast (docs/model.md, "Mixed
//! precision"), the peer under `torch.autocast("cpu", dtype=torch.bfloat16)`.
//!
//! A model with `patches` (a Vision Transformer, e.g. `--model runs/image/config.json`) is timed
//! on random images of its size, and `--seq` is its patch count.
//!
//! The RAM presets `ram-centred` and `ram-cluttered` (docs/ram.md) time the step of
//! `attune train --task ram-*` through the training loop's own forward ([`crate::batch::forward`]:
//! an episode of sampled glimpses and the hybrid loss `ram_loss`), on one fixed batch of random
//! images with random labels, then backward and the same AdamW; `--seq` is the image side.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use attune_nn::{Ctx, Model, ModelConfig, ModelKind, ParamStore, RamConfig, RecurrentAttentionModel, StemConv, loss};
use attune_optim::{DecaySplit, Optimizer, OptimizerConfig, split_decay};
use attune_tensor::{CrossEntropyOpts, DType, Device, Tensor};
use serde_json::{Value, json};

use crate::batch::DeviceBatch;
use crate::config::Precision;
use crate::net::Net;
use crate::tasks::{Batch, ImageBatch};

/// The peers' presets, by name: the transformer's (torch_train.py) and the RAM's (torch_ram.py).
pub const PRESETS: [&str; 6] =
    ["mqar-default", "large", "vit-fashion", "sasrec-ml100k", "ram-centred", "ram-cluttered"];

/// Options of `attune bench-step` (the peer's `bench` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchStepArgs {
    /// A preset (mqar-default, large, vit-fashion, sasrec-ml100k, ram-centred, ram-cluttered), a
    /// JSON transformer object, or
    /// a JSON file holding one (a run's config.json works: its "model" is used). Omitted fields
    /// take the peer's defaults.
    #[arg(long, default_value = "mqar-default")]
    pub model: String,
    /// Sequences (images) per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence (default 64); for a RAM preset the side of the square images
    /// (default the task's canvas: 28 for ram-centred, 60 for ram-cluttered).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Timed steps (at least 10, docs/benchmarks.md); the median is reported.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// f32, or bf16: mixed precision as `attune train --precision bf16` runs it (the peer's
    /// `torch.autocast("cpu", dtype=torch.bfloat16)`).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Print one JSON line (the peer's keys) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The peer's preset `name` as a full [`ModelConfig`].
pub fn preset(name: &str) -> Option<ModelConfig> {
    match name {
        // The default model of `attune train` on the default MQAR task (V 128, S 64).
        "mqar-default" => Some(ModelConfig::lm(128, 64, 128, 2, 2)),
        "large" => Some(ModelConfig::lm(128, 256, 256, 4, 8)),
        // The README's Fashion-MNIST ViT: 28x28 in 4x4 patches, d 96, 4 layers, 4 heads.
        "vit-fashion" => {
            Some(ModelConfig::vit(attune_nn::PatchSpec { rows: 28, cols: 28, size: 4, stride: 4 }, 96, 4, 4, 10))
        }
        // The same ViT with the convolutional stem of the README's row (3x3 convolutions to 32
        // channels, then to 64 at stride 2; its 4x4 patches are 2x2 positions of that map).
        "vit-stem" => preset("vit-fashion").map(|v| ModelConfig {
            stem: vec![StemConv { channels: 32, stride: 1 }, StemConv { channels: 64, stride: 2 }],
            ..v
        }),
        // The README's SASRec: MovieLens-100K's 1,682 items and padding, 50 items of history.
        "sasrec-ml100k" => Some(ModelConfig { tie_embeddings: true, ..ModelConfig::lm(1683, 50, 64, 2, 2) }),
        _ => None,
    }
}

/// The RAM preset `name`: the model `attune train --task <name>` builds by default (10
/// classes) and the side of its images.
pub fn ram_preset(name: &str) -> Option<(RamConfig, usize)> {
    match name {
        "ram-centred" => Some((RamConfig::centred(10), 28)),
        // ram-translated trains the same model on the same 60x60 canvas.
        "ram-cluttered" => Some((RamConfig::translated(10), 60)),
        _ => None,
    }
}

/// Reads `--model`: a transformer preset, a JSON file or inline JSON; the object may be the model itself
/// or a run's config.json with the model under `"model"`. Fills the fields the peer's
/// `complete_config` defaults ([`ModelConfig::default_n_kv_heads`], [`ModelConfig::default_d_ff`],
/// `causal` for an lm).
pub fn parse_model(arg: &str) -> Result<ModelConfig> {
    if let Some(cfg) = preset(arg) {
        return Ok(cfg);
    }
    if ram_preset(arg).is_some() {
        bail!("--model {arg} is a RAM preset, not a transformer config; `attune bench-step` times it with measure_ram");
    }
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading --model file {arg}"))?
    } else {
        arg.to_string()
    };
    let mut obj: Value = serde_json::from_str(&text).with_context(|| {
        format!("--model '{arg}' is not a preset ({}), a JSON file or a JSON object", PRESETS.join(", "))
    })?;
    if let Some(inner) = obj.get("model").filter(|m| m.is_object()) {
        obj = inner.clone();
    }
    let Some(map) = obj.as_object_mut() else { bail!("--model JSON must be an object, got {obj}") };
    let (heads, d_model) = (map.get("n_heads").and_then(Value::as_u64), map.get("d_model").and_then(Value::as_u64));
    let is_lm = map.get("kind").is_none_or(|k| k == "lm");
    if let Some(h) = heads {
        map.entry("n_kv_heads").or_insert(json!(ModelConfig::default_n_kv_heads(h as usize)));
    }
    if let Some(d) = d_model {
        map.entry("d_ff").or_insert(json!(ModelConfig::default_d_ff(d as usize)));
    }
    map.entry("causal").or_insert(json!(is_lm));
    serde_json::from_value(obj).context("--model: not a valid model config (docs/model.md lists the fields)")
}

/// Quartiles by Python's `statistics.quantiles(data, n=4)` (the default "exclusive" method),
/// so the two sides report the same statistic. `data` must hold at least 2 values.
pub fn quartiles(data: &[f64]) -> [f64; 3] {
    let mut d = data.to_vec();
    d.sort_by(f64::total_cmp);
    let (ld, n) = (d.len(), 4usize);
    let m = ld + 1;
    let q = |i: usize| {
        let j = (i * m / n).clamp(1, ld.saturating_sub(1).max(1));
        let delta = (i * m) as f64 - (j * n) as f64;
        (d[j - 1] * (n as f64 - delta) + d[j.min(ld - 1)] * delta) / n as f64
    };
    [q(1), q(2), q(3)]
}

/// Median (the mean of the middle two for an even count).
pub fn median(data: &[f64]) -> f64 {
    let mut d = data.to_vec();
    d.sort_by(f64::total_cmp);
    let n = d.len();
    if n % 2 == 1 { d[n / 2] } else { 0.5 * (d[n / 2 - 1] + d[n / 2]) }
}

/// splitmix64: a fixed stream of random token ids, independent of any library's generator.
fn random_ids(seed: u64, n: usize, below: usize) -> Vec<i64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % below as u64) as i64
        })
        .collect()
}

/// What one `bench-step` measured.
#[derive(Debug, Clone)]
pub struct StepTimes {
    /// Per-step wall times of the timed steps, in ms.
    pub times_ms: Vec<f64>,
    /// Trainable parameters.
    pub parameters: usize,
    /// Threads of the pool the steps ran in.
    pub threads: usize,
    /// Loss of the last step (a sanity check: about ln(vocab) at the start).
    pub last_loss: f64,
}

/// AdamW at lr 1e-3 with PyTorch's other defaults over `store`, its groups split as
/// `attune train` splits them.
fn adamw(store: &ParamStore) -> Result<Box<dyn Optimizer>> {
    let mut opt_cfg = OptimizerConfig::from_name("adamw")?;
    opt_cfg.set_lr(1e-3);
    Ok(opt_cfg.build(split_decay(store.named(), &DecaySplit::default()))?)
}

/// Runs `warmup` untimed and then `steps` timed calls of `step` (which returns the loss) in the
/// current rayon pool.
fn time_steps(
    store: &ParamStore,
    steps: usize,
    warmup: usize,
    mut step: impl FnMut() -> Result<f64>,
) -> Result<StepTimes> {
    let mut last_loss = f64::NAN;
    for _ in 0..warmup {
        last_loss = step()?;
    }
    let mut times_ms = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        last_loss = step()?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(StepTimes { times_ms, parameters: store.num_elements(), threads: rayon::current_num_threads(), last_loss })
}

/// Builds the transformer and optimizer and times `warmup + steps` training steps in the current
/// rayon pool.
pub fn measure(cfg: &ModelConfig, batch: usize, seq: usize, steps: usize, warmup: usize) -> Result<StepTimes> {
    if batch == 0 || seq == 0 {
        bail!("--batch {batch} and --seq {seq} must be positive");
    }
    let dev = Device::Cpu;
    let model = Model::new(cfg, 0, DType::F32, &dev).context("building the model")?;
    let mut optimizer = adamw(model.store())?;
    // A Vision Transformer reads images (pixels in [0, 1]); `seq` is then its patch count.
    let input = match &cfg.patches {
        Some(p) => {
            let pixels: Vec<f32> =
                random_ids(1, batch * p.rows * p.cols, 256).into_iter().map(|v| v as f32 / 255.0).collect();
            Tensor::from_vec(pixels, [batch, p.rows, p.cols], &dev)?
        }
        None => Tensor::from_vec(random_ids(1, batch * seq, cfg.vocab_size), [batch, seq], &dev)?,
    };
    let targets = match cfg.kind {
        ModelKind::Lm => Tensor::from_vec(random_ids(2, batch * seq, cfg.vocab_size), [batch * seq], &dev)?,
        ModelKind::Classifier => {
            let classes = cfg.num_classes.context("a classifier config needs num_classes")?;
            Tensor::from_vec(random_ids(2, batch, classes), [batch], &dev)?
        }
    };
    let mut ctx = Ctx::train(3);
    time_steps(model.store(), steps, warmup, || {
        let logits = model.forward(&input, None, &mut ctx)?;
        let classes = *logits.dims().last().unwrap_or(&1);
        let flat = logits.reshape([logits.elem_count() / classes.max(1), classes])?;
        let loss = loss::cross_entropy(&flat, &targets, CrossEntropyOpts::default())?;
        let grads = loss.backward()?;
        optimizer.step(&grads)?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    })
}

/// Builds the RAM of `cfg` and the optimizer and times `warmup + steps` training steps on one
/// batch of `batch` random `side x side` images (pixels in `[0, 1]`, random labels) in the current
/// rayon pool. Each step is `attune train`'s: [`crate::batch::forward`] (sampled glimpses, the
/// hybrid loss and its logged figures), backward of the hybrid objective, AdamW; the
/// cross-entropy is read back like the transformer's loss.
pub fn measure_ram(cfg: &RamConfig, batch: usize, side: usize, steps: usize, warmup: usize) -> Result<StepTimes> {
    if batch == 0 || side == 0 {
        bail!("--batch {batch} and --seq {side} (the image side) must be positive");
    }
    let dev = Device::Cpu;
    let model = RecurrentAttentionModel::new(cfg, 0, DType::F32, &dev).context("building the RAM")?;
    let net = Net::Ram { model, test_paths: 1 };
    let mut optimizer = adamw(net.store())?;
    let pixels = random_ids(1, batch * side * side, 256).into_iter().map(|v| v as f32 / 255.0).collect();
    let labels = random_ids(2, batch, cfg.num_classes);
    let images = DeviceBatch::new(&Batch::Image(ImageBatch { pixels, labels, batch, rows: side, cols: side }), &dev)?;
    let mut ctx = Ctx::train(3);
    time_steps(net.store(), steps, warmup, || {
        let out = crate::batch::forward(&net, &images, &mut ctx, 0.0)?;
        let grads = out.objective.backward()?;
        optimizer.step(&grads)?;
        Ok(out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    })
}

/// The JSON line (the peer's keys, with `"peer": "attune"`); `seq` is the one measured.
pub fn to_json(a: &BenchStepArgs, seq: usize, r: &StepTimes) -> Result<Value> {
    let [q1, _, q3] = quartiles(&r.times_ms);
    let round = |x: f64| (x * 1e4).round() / 1e4;
    let model = if PRESETS.contains(&a.model.as_str()) {
        json!(a.model)
    } else {
        serde_json::to_value(parse_model(&a.model)?)?
    };
    Ok(json!({
        "peer": "attune",
        "model": model,
        "batch": a.batch,
        "seq": seq,
        "threads": r.threads,
        "steps": a.steps,
        "precision": a.precision,
        "median_ms": round(median(&r.times_ms)),
        "q1_ms": round(q1),
        "q3_ms": round(q3),
        "parameters": r.parameters,
        "last_loss": r.last_loss,
        "attune_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `f` under `precision`'s autocast, entered on the calling thread (the one whose forward
/// passes build the graph).
fn under<T>(precision: Precision, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _guard = precision.enter()?;
    f()
}

/// `attune bench-step`. The binary runs it on a worker of the pool that `--threads` sizes
/// (`on_pool` in `crates/lab/src/main.rs`), as it runs `attune train`.
pub fn run(a: &BenchStepArgs) -> Result<()> {
    if a.steps < 10 {
        bail!("--steps {} is too few: report medians of at least 10 timed steps, docs/benchmarks.md", a.steps);
    }
    let (r, seq) = match ram_preset(&a.model) {
        Some((cfg, side)) => {
            let side = a.seq.unwrap_or(side);
            (under(a.precision, || measure_ram(&cfg, a.batch, side, a.steps, a.warmup))?, side)
        }
        None => {
            let cfg = parse_model(&a.model)?;
            let seq = cfg.patches.map_or(a.seq.unwrap_or(64), |p| p.count());
            (under(a.precision, || measure(&cfg, a.batch, seq, a.steps, a.warmup))?, seq)
        }
    };
    if a.json {
        println!("{}", to_json(a, seq, &r)?);
    } else {
        let [q1, _, q3] = quartiles(&r.times_ms);
        println!(
            "attune {} ({:?}) B={} S={} threads={}: median {:.2} ms/step (q1 {q1:.2}, q3 {q3:.2}) over {} steps, {} parameters",
            a.model,
            a.precision,
            a.batch,
            seq,
            r.threads,
            median(&r.times_ms),
            a.steps,
            r.parameters
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_nn::{MlpKind, NormKind, Positions};

    #[test]
    fn quartiles_match_python_statistics() {
        // statistics.quantiles(range(1, 11), n=4) == [2.75, 5.5, 8.25]: m = 11, i = 1 gives
        // j = 2, delta = 3, (2 * 1 + 3 * 3) / 4; i = 3 gives j = 8, delta = 1, (8 * 3 + 9) / 4.
        let d: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(quartiles(&d), [2.75, 5.5, 8.25]);
        // statistics.quantiles([1, 2], n=4) == [0.75, 1.5, 2.25] (extrapolated, like Python).
        assert_eq!(quartiles(&[2.0, 1.0]), [0.75, 1.5, 2.25]);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn presets_are_the_peers() {
        // torch_train.py PRESETS after complete_config.
        let m = preset("mqar-default").unwrap();
        assert_eq!((m.vocab_size, m.max_seq_len, m.d_model, m.n_layers, m.n_heads), (128, 64, 128, 2, 2));
        let l = preset("large").unwrap();
        assert_eq!((l.vocab_size, l.max_seq_len, l.d_model, l.n_layers, l.n_heads), (128, 256, 256, 4, 8));
        for c in [m, l] {
            assert_eq!((c.kind, c.n_kv_heads, c.d_ff, c.causal), (ModelKind::Lm, c.n_heads, 4 * c.d_model, true));
            assert_eq!((c.mlp, c.norm, c.positions), (MlpKind::Gelu, NormKind::LayerNorm, Positions::Learned));
            assert_eq!((c.window, c.softcap, c.dropout), (None, None, 0.0));
        }
        // The stem preset is the plain ViT plus the peer's two convolutions.
        let (v, s) = (preset("vit-fashion").unwrap(), preset("vit-stem").unwrap());
        assert_eq!(ModelConfig { stem: Vec::new(), ..s.clone() }, v);
        let stem: Vec<_> = s.stem.iter().map(|l| (l.channels, l.stride)).collect();
        assert_eq!(stem, [(32, 1), (64, 2)]);
    }

    #[test]
    fn model_json_takes_the_peers_defaults() {
        let small = r#"{"kind":"lm","vocab_size":16,"max_seq_len":8,"d_model":12,"n_layers":1,"n_heads":3}"#;
        assert_eq!(parse_model(small).unwrap(), ModelConfig::lm(16, 8, 12, 1, 3));
        let wrapped = format!(r#"{{"task": {{}}, "model": {small}}}"#);
        assert_eq!(parse_model(&wrapped).unwrap(), ModelConfig::lm(16, 8, 12, 1, 3));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, &wrapped).unwrap();
        assert_eq!(parse_model(path.to_str().unwrap()).unwrap(), ModelConfig::lm(16, 8, 12, 1, 3));
        let cls = r#"{"kind":"classifier","vocab_size":16,"max_seq_len":8,"d_model":12,"n_layers":1,"n_heads":3,"num_classes":4,"d_ff":20}"#;
        let c = parse_model(cls).unwrap();
        assert_eq!((c.causal, c.d_ff, c.num_classes), (false, 20, Some(4)));
        let e = parse_model("nope").unwrap_err();
        assert!(format!("{e:#}").contains("mqar-default"), "{e:#}");
    }

    #[test]
    fn random_ids_stay_in_range_and_vary() {
        let ids = random_ids(1, 1000, 7);
        assert!(ids.iter().all(|&t| (0..7).contains(&t)));
        assert!((0..7).all(|v| ids.contains(&v)));
        assert_ne!(random_ids(1, 8, 1 << 30), random_ids(2, 8, 1 << 30));
    }

    #[test]
    fn steps_train_the_model() {
        // Fixed random targets are learnable by memorisation: the loss starts near ln(16)
        // (uniform predictions) and 13 AdamW steps at lr 1e-3 must lower it.
        let cfg = ModelConfig::lm(16, 8, 16, 1, 2);
        let r = measure(&cfg, 2, 8, 10, 3).unwrap();
        assert_eq!(r.times_ms.len(), 10);
        assert!(r.times_ms.iter().all(|&t| t > 0.0));
        assert!(r.last_loss.is_finite() && r.last_loss < (16f64).ln(), "loss {}", r.last_loss);
        let cls = ModelConfig::classifier(16, 8, 16, 1, 2, 3);
        assert!(measure(&cls, 2, 8, 10, 0).unwrap().last_loss.is_finite());
        assert!(measure(&cfg, 2, 9, 10, 0).is_err(), "seq beyond max_seq_len with learned positions");
        // A Vision Transformer and a tied LM (SASRec) train too.
        let vit = ModelConfig::vit(attune_nn::PatchSpec { rows: 8, cols: 8, size: 4, stride: 4 }, 16, 1, 2, 3);
        assert!(measure(&vit, 2, 4, 10, 0).unwrap().last_loss < 3f64.ln() + 0.5);
        let tied = ModelConfig { tie_embeddings: true, ..cfg };
        assert!(measure(&tied, 2, 8, 10, 3).unwrap().last_loss < 16f64.ln());
    }

    #[test]
    fn ram_presets_are_the_peers() {
        // torch_ram.py PRESETS and SIZES.
        for (name, side, g, k, t) in [("ram-centred", 28, 8, 1, 6), ("ram-cluttered", 60, 12, 3, 8)] {
            let (c, s) = ram_preset(name).unwrap();
            assert_eq!((s, c.glimpse_size, c.scales, c.glimpses), (side, g, k, t), "{name}");
            assert_eq!((c.what_hidden, c.where_hidden, c.glimpse_features, c.hidden), (128, 128, 256, 256));
            assert_eq!((c.num_classes, c.sigma, c.policy), (10, 0.15, attune_nn::GlimpsePolicy::Learned));
            assert!(PRESETS.contains(&name));
            assert!(format!("{:#}", parse_model(name).unwrap_err()).contains("RAM preset"));
        }
    }

    #[test]
    fn ram_steps_train_the_model() {
        // Four images with fixed labels of 3 classes: the hybrid loss's cross-entropy starts
        // near ln 3 (uniform predictions) and 40 AdamW steps at lr 1e-3 must lower it (to about
        // 1.06), as the transformer's test asks of its steps.
        let cfg = RamConfig {
            glimpse_size: 4,
            scales: 2,
            glimpses: 2,
            what_hidden: 16,
            where_hidden: 8,
            glimpse_features: 16,
            hidden: 16,
            num_classes: 3,
            ..RamConfig::centred(3)
        };
        let r = measure_ram(&cfg, 4, 12, 10, 30).unwrap();
        assert_eq!(r.times_ms.len(), 10);
        assert!(r.times_ms.iter().all(|&t| t > 0.0));
        assert!(r.last_loss.is_finite() && r.last_loss < (3f64).ln(), "loss {}", r.last_loss);
        assert!(measure_ram(&cfg, 0, 12, 10, 0).is_err() && measure_ram(&cfg, 4, 0, 10, 0).is_err());
    }
}
