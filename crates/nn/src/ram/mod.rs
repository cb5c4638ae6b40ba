//! The Recurrent Attention Model (Mnih, Heess, Graves and Kavukcuoglu 2014, "Recurrent
//! Models of Visual Attention"; docs/ram.md): a recurrent network that sees an image only
//! through a few glimpses and chooses where to look next by sampling a location.
//!
//! One episode of `glimpses` steps, from the core state `h_0 = 0`:
//!
//! 1. the location network gives the mean `mu_t = tanh(Linear(h_{t-1}))` and the baseline
//!    network `b_t = Linear(h_{t-1})`, both from the state **detached** (unless
//!    [`RamConfig::policy_trains_core`]: then the mean sees the attached state);
//! 2. the location `l_t ~ N(mu_t, sigma^2 I)` is sampled (detached, [`crate::reinforce`]), or
//!    drawn uniformly in `[-1, 1]` by the random policy, and clamped to `[-1, 1]`;
//! 3. the glimpse network reads the sensor's patches there:
//!    `g_t = ReLU(Linear(ReLU(Linear(glimpse))) + Linear(ReLU(Linear(l_t))))`;
//! 4. the core, a rectifier RNN ([`RnnCell`]), updates `h_t = ReLU(Linear(h_{t-1}) + Linear(g_t))`.
//!
//! The classifier reads `h_T`. The first location comes from `h_0 = 0`, so it is a learned
//! constant (the location network's bias) rather than a fixed point.
//!
//! Why the location and baseline networks see a detached state: the classifier's gradient
//! then trains the glimpse network, core and classifier, and REINFORCE trains the location
//! network alone, so the high-variance policy term cannot disturb the features the classifier
//! relies on (the choice of the common PyTorch reproductions; the paper lets REINFORCE reach
//! the core too, [`RamConfig::policy_trains_core`]). The baseline must not train the core in any case: it only predicts the reward.

use attune_tensor::{DType, Device, Rng, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::hybrid_loss::{HybridLoss, hybrid_loss};
use crate::layers::glimpse::GlimpseSensor;
use crate::layers::linear::Linear;
use crate::reinforce::{gaussian_log_prob, sample_gaussian};
use crate::store::{ParamBuilder, ParamStore};

const MODULE: &str = "RecurrentAttentionModel";

/// Where the glimpses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GlimpsePolicy {
    /// Sampled from the Gaussian location policy, trained by REINFORCE.
    #[default]
    Learned,
    /// Uniform in `[-1, 1]` per coordinate: the paper's control, the same network with no
    /// say in where it looks (no policy or baseline loss).
    Random,
}

/// How a forward pass picks locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamMode {
    /// Sample each location (training, and the paths averaged at test time).
    Sample,
    /// Look at the policy's mean: deterministic evaluation. The random policy still draws
    /// uniform locations, since it has no mean to look at.
    Mean,
}

/// The architecture of a [`RecurrentAttentionModel`] (serialised in a run's config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RamConfig {
    /// Side `g` of every glimpse patch (8 on centred MNIST, 12 on the 60x60 tasks).
    pub glimpse_size: usize,
    /// Patches per glimpse, of sides `g, 2g, 4g, ...` (1 on centred MNIST, 3 on 60x60).
    pub scales: usize,
    /// Glimpses per image (6 on centred MNIST, 8 on 60x60).
    pub glimpses: usize,
    /// Width of the glimpse network's "what" layer (128).
    pub what_hidden: usize,
    /// Width of its "where" layer (128).
    pub where_hidden: usize,
    /// Width of the glimpse feature `g_t` (256).
    pub glimpse_features: usize,
    /// Width of the core state `h_t` (256).
    pub hidden: usize,
    /// Classes of the classifier.
    pub num_classes: usize,
    /// The location policy's fixed standard deviation, on the `[-1, 1]` scale.
    pub sigma: f64,
    /// Learned or random glimpse locations.
    #[serde(default)]
    pub policy: GlimpsePolicy,
    /// Whether REINFORCE reaches the core and glimpse network through the location network's
    /// input (the paper's hybrid loss), or trains the location network alone (`false`, the
    /// common reproductions' detached state). The baseline sees a detached state either way.
    #[serde(default)]
    pub policy_trains_core: bool,
}

impl RamConfig {
    /// The paper's centred 28x28 MNIST model: 6 glimpses of 8x8 at one scale, sizes
    /// 128/128/256/256, sigma 0.15.
    pub fn centred(num_classes: usize) -> RamConfig {
        RamConfig {
            glimpse_size: 8,
            scales: 1,
            glimpses: 6,
            what_hidden: 128,
            where_hidden: 128,
            glimpse_features: 256,
            hidden: 256,
            num_classes,
            sigma: 0.15,
            policy: GlimpsePolicy::Learned,
            policy_trains_core: false,
        }
    }

    /// The paper's 60x60 (translated, cluttered) model: 8 glimpses of 12x12 at 3 scales.
    pub fn translated(num_classes: usize) -> RamConfig {
        RamConfig { glimpse_size: 12, scales: 3, glimpses: 8, ..RamConfig::centred(num_classes) }
    }

    fn check(&self) -> Result<()> {
        let sizes = [self.glimpses, self.what_hidden, self.where_hidden, self.glimpse_features, self.hidden];
        if sizes.contains(&0) {
            return Err(NnError::config(
                MODULE,
                format!(
                    "glimpses {}, what_hidden {}, where_hidden {}, glimpse_features {} and hidden {} must all be \
                     positive (the paper: 6 or 8 glimpses, 128/128/256/256)",
                    self.glimpses, self.what_hidden, self.where_hidden, self.glimpse_features, self.hidden
                ),
            ));
        }
        if self.num_classes < 2 {
            return Err(NnError::config(MODULE, format!("num_classes must be >= 2, got {}", self.num_classes)));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(NnError::config(
                MODULE,
                format!("sigma must be finite and > 0, got {}; the paper's range is about 0.05 to 0.2", self.sigma),
            ));
        }
        Ok(())
    }
}

/// A rectifier RNN cell, `h' = ReLU(W_h h + b_h + W_x x + b_x)`: the RAM's core on MNIST
/// (parameters `hidden.*` and `input.*` under its prefix).
#[derive(Debug, Clone)]
pub struct RnnCell {
    hidden: Linear,
    input: Linear,
}

impl RnnCell {
    /// A cell from inputs of `input_size` to a state of `hidden_size`.
    pub fn new(pb: &ParamBuilder, input_size: usize, hidden_size: usize) -> Result<RnnCell> {
        Ok(RnnCell {
            hidden: Linear::new(&pb.sub("hidden"), hidden_size, hidden_size, true)?,
            input: Linear::new(&pb.sub("input"), input_size, hidden_size, true)?,
        })
    }

    /// The next state from `h (batch, hidden)` and `x (batch, input)`.
    pub fn forward(&self, h: &Tensor, x: &Tensor) -> Result<Tensor> {
        Ok(self.hidden.forward(h)?.add(&self.input.forward(x)?)?.relu()?)
    }
}

/// What one forward pass of the RAM returns.
#[derive(Debug, Clone)]
pub struct RamOutput {
    /// Class logits from the final core state, `(batch, classes)`.
    pub logits: Tensor,
    /// The locations looked at, clamped to `[-1, 1]`, `(batch, glimpses, 2)` as `(row, col)`;
    /// detached.
    pub locations: Tensor,
    /// `log p(l_t)` of each sampled (unclamped) location, `(batch, glimpses)`, differentiable
    /// in the location network only; `None` for the random policy and in [`RamMode::Mean`].
    pub log_probs: Option<Tensor>,
    /// The baseline's reward prediction per glimpse, `(batch, glimpses)`, differentiable in the
    /// baseline network only; `None` for the random policy.
    pub baselines: Option<Tensor>,
}

/// The Recurrent Attention Model, owning its [`ParamStore`] (names `glimpse.*`, `core.*`,
/// `locator.*`, `baseline.*`, `classifier.*`).
pub struct RecurrentAttentionModel {
    cfg: RamConfig,
    store: ParamStore,
    sensor: GlimpseSensor,
    what: Linear,
    where_: Linear,
    what_out: Linear,
    where_out: Linear,
    core: RnnCell,
    locator: Linear,
    baseline: Linear,
    classifier: Linear,
}

impl std::fmt::Debug for RecurrentAttentionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(MODULE).field("cfg", &self.cfg).field("store", &self.store).finish()
    }
}

impl RecurrentAttentionModel {
    /// Builds the model with parameters drawn from `seed`. The locator and baseline exist for
    /// the random policy too, so both policies have the same network and checkpoint names.
    pub fn new(cfg: &RamConfig, seed: u64, dtype: DType, device: &Device) -> Result<RecurrentAttentionModel> {
        cfg.check()?;
        let sensor = GlimpseSensor::new(cfg.glimpse_size, cfg.scales)?;
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, seed, dtype, device);
        let g = pb.sub("glimpse");
        Ok(RecurrentAttentionModel {
            what: Linear::new(&g.sub("what"), sensor.out_dim(), cfg.what_hidden, true)?,
            where_: Linear::new(&g.sub("where"), 2, cfg.where_hidden, true)?,
            what_out: Linear::new(&g.sub("what_out"), cfg.what_hidden, cfg.glimpse_features, true)?,
            where_out: Linear::new(&g.sub("where_out"), cfg.where_hidden, cfg.glimpse_features, true)?,
            core: RnnCell::new(&pb.sub("core"), cfg.glimpse_features, cfg.hidden)?,
            locator: Linear::new(&pb.sub("locator"), cfg.hidden, 2, true)?,
            baseline: Linear::new(&pb.sub("baseline"), cfg.hidden, 1, true)?,
            classifier: Linear::new(&pb.sub("classifier"), cfg.hidden, cfg.num_classes, true)?,
            cfg: cfg.clone(),
            store,
            sensor,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &RamConfig {
        &self.cfg
    }

    /// Every parameter by name.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The glimpse sensor.
    pub fn sensor(&self) -> &GlimpseSensor {
        &self.sensor
    }

    /// `g_t` from the glimpse at `loc (batch, 2)` of `images (batch, rows, cols)`.
    fn glimpse(&self, images: &Tensor, loc: &Tensor) -> Result<Tensor> {
        let batch = images.dims()[0];
        let patches = self.sensor.forward(images, loc)?.reshape([batch, self.sensor.out_dim()])?;
        let what = self.what_out.forward(&self.what.forward(&patches)?.relu()?)?;
        let where_ = self.where_out.forward(&self.where_.forward(loc)?.relu()?)?;
        Ok(what.add(&where_)?.relu()?)
    }

    /// One episode on `images (batch, rows, cols)` (data: they must not require gradients).
    /// `rng` draws the sampled or random locations; [`RamMode::Mean`] with the learned policy
    /// draws nothing.
    pub fn forward(&self, images: &Tensor, mode: RamMode, rng: &mut Rng) -> Result<RamOutput> {
        let &[batch, _, _] = images.dims() else {
            return Err(NnError::input(
                MODULE,
                format!("images must be (batch, rows, cols), got {:?}", images.shape()),
            ));
        };
        if batch == 0 {
            return Err(NnError::input(MODULE, "an empty batch has no episodes; pass at least one image"));
        }
        let dtype = self.store.vars().first().map(|v| v.dtype()).unwrap_or(DType::F32);
        let images = images.to_dtype(dtype)?;
        let learned = self.cfg.policy == GlimpsePolicy::Learned;
        let mut h = Tensor::zeros([batch, self.cfg.hidden], dtype, &images.device())?;
        let (mut locations, mut log_probs, mut baselines) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.cfg.glimpses {
            let state = h.detach();
            let loc = if learned {
                let policy_input = if self.cfg.policy_trains_core { &h } else { &state };
                let mean = self.locator.forward(policy_input)?.tanh()?;
                baselines.push(self.baseline.forward(&state)?.squeeze(1usize)?);
                match mode {
                    RamMode::Mean => mean.detach(),
                    RamMode::Sample => {
                        let sample = sample_gaussian(&mean, self.cfg.sigma, rng)?;
                        log_probs.push(gaussian_log_prob(&mean, &sample, self.cfg.sigma)?);
                        sample.clamp(-1.0, 1.0)?
                    }
                }
            } else {
                rng.uniform(-1.0, 1.0, [batch, 2], dtype, &images.device())?
            };
            h = self.core.forward(&h, &self.glimpse(&images, &loc)?)?;
            locations.push(loc);
        }
        let stack = |v: &[Tensor]| -> Result<Option<Tensor>> {
            Ok(if v.is_empty() { None } else { Some(Tensor::stack(v, 1usize)?) })
        };
        Ok(RamOutput {
            logits: self.classifier.forward(&h)?,
            locations: Tensor::stack(&locations, 1usize)?,
            log_probs: stack(&log_probs)?,
            baselines: stack(&baselines)?,
        })
    }

    /// Class probabilities `(batch, classes)` averaged over `paths` sampled glimpse paths
    /// (the paper's test-time averaging), computed without gradients.
    pub fn predict_averaged(&self, images: &Tensor, paths: usize, rng: &mut Rng) -> Result<Tensor> {
        if paths == 0 {
            return Err(NnError::input(MODULE, "predict_averaged needs at least one path"));
        }
        attune_tensor::with_no_grad(|| {
            let probs = |rng: &mut Rng| -> Result<Tensor> {
                Ok(self.forward(images, RamMode::Sample, rng)?.logits.softmax(1usize)?)
            };
            let mut sum = probs(rng)?;
            for _ in 1..paths {
                sum = sum.add(&probs(rng)?)?;
            }
            Ok(sum.mul_scalar(1.0 / paths as f64)?)
        })
    }
}

/// The RAM's hybrid loss ([`hybrid_loss`]) of `out` against `targets (batch,)`: the
/// cross-entropy of its logits plus REINFORCE on its sampled locations with its baselines.
pub fn ram_loss(out: &RamOutput, targets: &Tensor) -> Result<HybridLoss> {
    hybrid_loss(&out.logits, targets, out.log_probs.as_ref(), out.baselines.as_ref())
}
