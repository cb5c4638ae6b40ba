//! `image`: classification of whole images by a Vision Transformer (docs/model.md), on
//! Fashion-MNIST or scikit-learn's 8x8 digits.
//!
//! **Splits.** Fashion-MNIST trains on 54,000 of its 60,000 training images (every tenth held
//! out as the valid split, as the RAM tasks do) and tests on its own 10,000. The digits have
//! no split of their own: every fifth image (in file order) is the test split, and every tenth
//! of the rest the valid split, leaving 1,294 to train on; the file cycles through the classes,
//! so each split holds about its share of every class.
//!
//! **Augmentation** (training batches only, off by default): each image is shifted by up to
//! `shift` pixels in each direction (the uncovered border is zero, the background) and, with
//! `flip`, mirrored left to right with probability 1/2 — the usual recipe for Fashion-MNIST,
//! whose garments are symmetric; not for digits.
//!
//! **Determinism.** As the RAM tasks: train batch `i` of size `B` holds positions
//! `i B .. i B + B` of an endless stream in which epoch `e` visits the training images in a
//! permutation keyed by `(seed, e)`, and each position's augmentation is keyed by
//! `(seed, position)`, so a resumed run regenerates any batch from its index.

use attune_data::{DataDir, Images, digits, fashion_mnist};
use serde::{Deserialize, Serialize};

use super::ram::ImageBatch;
use super::rng::{Rng, tag};
use super::{Batch, Split, Task, TaskConfig, TaskError};

const TAG: u64 = tag(b"image");
const NAME: &str = "image";

/// Which image set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageDataset {
    /// Fashion-MNIST, 28x28: 54,000 train, 6,000 valid, 10,000 test.
    #[default]
    FashionMnist,
    /// scikit-learn's digits, 8x8: 1,294 train, 144 valid, 359 test.
    Digits,
}

/// The image task's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageTaskConfig {
    /// `fashion-mnist` or `digits`.
    pub dataset: ImageDataset,
    /// Largest random shift, in pixels, of a training image in each direction (0: none).
    pub shift: usize,
    /// Mirror training images left to right with probability 1/2.
    pub flip: bool,
}

impl Default for ImageTaskConfig {
    /// Fashion-MNIST without augmentation.
    fn default() -> Self {
        ImageTaskConfig { dataset: ImageDataset::FashionMnist, shift: 0, flip: false }
    }
}

/// The image task with its three splits loaded.
pub struct ImageTask {
    cfg: ImageTaskConfig,
    seed: u64,
    train: Images,
    valid: Images,
    test: Images,
}

impl ImageTask {
    /// Loads the data set from the cache (`$ATTUNE_DATA`; `cargo xtask data` fills it).
    pub fn new(cfg: ImageTaskConfig, seed: u64) -> Result<ImageTask, TaskError> {
        let dir = DataDir::from_env();
        let (train, valid, test) = match cfg.dataset {
            ImageDataset::FashionMnist => {
                let split = fashion_mnist::load(&dir, fashion_mnist::Split::Train)?.split_every(10);
                (split.train, split.held_out, fashion_mnist::load(&dir, fashion_mnist::Split::Test)?)
            }
            ImageDataset::Digits => {
                let outer = digits::load(&dir)?.split_every(5);
                let inner = outer.train.split_every(10);
                (inner.train, inner.held_out, outer.held_out)
            }
        };
        Self::from_images(cfg, seed, train, valid, test)
    }

    /// The task over given splits (tests build small ones).
    pub fn from_images(
        cfg: ImageTaskConfig,
        seed: u64,
        train: Images,
        valid: Images,
        test: Images,
    ) -> Result<ImageTask, TaskError> {
        let invalid = |msg: String| TaskError::InvalidConfig { task: NAME, msg };
        for (what, set) in [("train", &train), ("valid", &valid), ("test", &test)] {
            if set.is_empty() {
                return Err(invalid(format!("the {what} split has no images")));
            }
            if (set.rows, set.cols) != (train.rows, train.cols) {
                return Err(invalid(format!(
                    "the {what} split's images are {}x{}, the train split's {}x{}",
                    set.rows, set.cols, train.rows, train.cols
                )));
            }
        }
        if cfg.shift >= train.rows.min(train.cols) {
            return Err(invalid(format!(
                "shift {} must be smaller than the {}x{} images (2 is usual on 28x28)",
                cfg.shift, train.rows, train.cols
            )));
        }
        Ok(ImageTask { cfg, seed, train, valid, test })
    }

    fn images(&self, split: Split) -> &Images {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// Intensities of image `i` of `set`, shifted by `(dy, dx)` and mirrored with `flip`.
    fn draw(set: &Images, i: usize, (dy, dx): (isize, isize), flip: bool, out: &mut Vec<f32>) {
        let (rows, cols) = (set.rows as isize, set.cols as isize);
        let scale = 1.0 / f32::from(set.pixel_max.max(1));
        let img = set.image(i);
        for r in 0..rows {
            for c in 0..cols {
                let (sr, shifted) = (r - dy, c - dx);
                let inside = (0..rows).contains(&sr) && (0..cols).contains(&shifted);
                let sc = if flip { cols - 1 - shifted } else { shifted };
                out.push(if inside { f32::from(img[(sr * cols + sc) as usize]) * scale } else { 0.0 });
            }
        }
    }
}

impl Task for ImageTask {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Images have no tokens; 1 keeps the transformer-shaped fields of config.json valid.
    fn vocab_size(&self) -> usize {
        1
    }

    /// Pixel rows (the model's sequence is its patches, [`Task::image_shape`]).
    fn seq_len(&self) -> usize {
        self.train.rows
    }

    fn num_classes(&self) -> Option<usize> {
        Some(10)
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::Image(self.cfg.clone())
    }

    fn split_size(&self, split: Split) -> Option<usize> {
        match split {
            Split::Train => None,
            s => Some(self.images(s).len()),
        }
    }

    fn train_size(&self) -> Option<usize> {
        Some(self.train.len())
    }

    fn class_name(&self, id: usize) -> String {
        match self.cfg.dataset {
            ImageDataset::FashionMnist => fashion_mnist::CLASS_NAMES.get(id).map_or(id.to_string(), |s| s.to_string()),
            ImageDataset::Digits => id.to_string(),
        }
    }

    fn image_shape(&self) -> Option<(usize, usize)> {
        Some((self.train.rows, self.train.cols))
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> Result<Batch, TaskError> {
        let invalid = |msg: String| TaskError::InvalidConfig { task: NAME, msg };
        if batch_size == 0 {
            return Err(invalid("batch_size must be at least 1".into()));
        }
        let set = self.images(split);
        let (rows, cols) = (set.rows, set.cols);
        let mut pixels = Vec::with_capacity(batch_size * rows * cols);
        let mut labels = Vec::with_capacity(batch_size);
        if split == Split::Train {
            let n = set.len() as u64;
            let first = index * batch_size as u64;
            let mut order: Option<(u64, Vec<usize>)> = None;
            for p in first..first + batch_size as u64 {
                let epoch = p / n;
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let perm = Rng::from_key(&[self.seed, TAG, tag(b"epoch"), epoch]).permutation(set.len());
                    order = Some((epoch, perm));
                }
                let i = order.as_ref().map_or(0, |(_, perm)| perm[(p % n) as usize]);
                let mut aug = Rng::from_key(&[self.seed, TAG, tag(b"augment"), p]);
                let s = self.cfg.shift as u64;
                let mut offset = || aug.below(2 * s + 1) as isize - s as isize;
                let shift = (offset(), offset());
                let flip = self.cfg.flip && aug.chance(0.5);
                Self::draw(set, i, shift, flip, &mut pixels);
                labels.push(i64::from(set.labels[i]));
            }
        } else {
            let start = index as usize * batch_size;
            if start >= set.len() {
                return Err(invalid(format!(
                    "{split} batch {index} of size {batch_size} starts past its {} images",
                    set.len()
                )));
            }
            for i in start..(start + batch_size).min(set.len()) {
                Self::draw(set, i, (0, 0), false, &mut pixels);
                labels.push(i64::from(set.labels[i]));
            }
        }
        Ok(Batch::Image(ImageBatch { batch: labels.len(), pixels, labels, rows, cols }))
    }
}
