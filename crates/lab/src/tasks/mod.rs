//! The tasks the `attune` binary trains on: three synthetic sequence tasks generated on the fly
//! from a seed, and classification of the texts in a user JSONL file.
//!
//! | `"task"` | module | batches |
//! |---|---|---|
//! | `mqar` | [`mqar`] | [`SeqBatch`]: multi-query associative recall (Zoology) |
//! | `induction` | [`induction`] | [`SeqBatch`]: induction heads (H3, Mamba) |
//! | `selective-copying` | [`selective_copying`] | [`SeqBatch`]: selective copying (Mamba) |
//! | `text` | [`text`] | [`ClassBatch`]: byte-level text classification |
//! | `ram-centred`, `ram-translated`, `ram-cluttered` | [`ram`] | [`ImageBatch`]: MNIST or Fashion-MNIST images for the Recurrent Attention Model |
//! | `image` | [`image`] | [`ImageBatch`]: Fashion-MNIST or digits 8x8 for the Vision Transformer |
//! | `recsys` | [`recsys`] | [`SeqBatch`]: users' item sequences (MovieLens-100K) for SASRec, leave-one-out |
//!
//! This is pure data code: batches are plain `Vec`s that the trainer turns into tensors.
//!
//! **Determinism.** A batch is a pure function of (task config, seed, split, batch index,
//! batch size). For the synthetic tasks, example `j` of a split is drawn from its own
//! counter-based stream keyed by `(seed, task, split, j)` ([`rng::Rng::from_key`]) and batch
//! `i` of size `B` holds examples `i B .. i B + B`, so a resumed run needs only its step
//! number, and the valid and test splits are fresh held-out streams that never share a draw
//! with training. The synthetic splits never end; the text task's valid and test splits are
//! finite ([`Task::split_size`]).

pub mod config;
pub mod error;
pub mod image;
pub mod induction;
pub mod mqar;
pub mod ram;
pub mod recsys;
pub use attune_rng as rng;
pub mod selective_copying;
mod synthetic;
pub mod text;
pub mod words;

use serde::{Deserialize, Serialize};

pub use config::{
    InductionConfig, MqarConfig, SelectiveCopyingConfig, TaskConfig, TextConfig, TextDataset, TextTokens,
};
pub use error::TaskError;
pub use image::{ImageDataset, ImageTaskConfig};
pub use ram::{ImageBatch, RamDataset, RamTaskConfig};
pub use recsys::{RecsysConfig, RecsysDataset};
pub use text::{Label, PAD_ID};

use rng::tag;

/// The target of a position that takes no part in the loss or the metrics (PyTorch's
/// `ignore_index` default, which Zoology and the H3 synthetics also use).
pub const IGNORE_INDEX: i64 = -100;

/// Which stream of examples a batch is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Held-out data for model selection during training.
    Valid,
    /// Held-out data for the final report.
    Test,
}

impl Split {
    /// The lowercase name (`"train"`, `"valid"`, `"test"`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// The key part that separates this split's random streams from the others'.
    pub(crate) fn stream_tag(self) -> u64 {
        tag(self.name().as_bytes())
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A batch for next-token-style sequence tasks, row-major `(batch, seq_len)`.
///
/// `targets[b * seq_len + t]` is the token the model must output at position `t` of row `b`
/// after reading `inputs[b * seq_len ..= b * seq_len + t]`, or [`IGNORE_INDEX`] where the
/// position is not supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqBatch {
    /// Input token ids, `batch * seq_len` of them.
    pub inputs: Vec<u32>,
    /// Target token ids or [`IGNORE_INDEX`], `batch * seq_len` of them.
    pub targets: Vec<i64>,
    /// Rows in the batch.
    pub batch: usize,
    /// Positions per row.
    pub seq_len: usize,
}

impl SeqBatch {
    /// The inputs and targets of row `b`, or `None` past the last row.
    pub fn row(&self, b: usize) -> Option<(&[u32], &[i64])> {
        let range = b.checked_mul(self.seq_len)?..(b.checked_add(1)?).checked_mul(self.seq_len)?;
        Some((self.inputs.get(range.clone())?, self.targets.get(range)?))
    }

    /// How many positions are supervised (target not [`IGNORE_INDEX`]).
    pub fn supervised(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
    }
}

/// A batch for sequence classification, tokens row-major `(batch, seq_len)`.
///
/// Row `b` holds `lengths[b]` real tokens followed by [`PAD_ID`] up to `seq_len`, which is the
/// longest length in this batch (at most [`Task::seq_len`]); `labels[b]` is its class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassBatch {
    /// Token ids, `batch * seq_len` of them, padded with [`PAD_ID`].
    pub tokens: Vec<u32>,
    /// Real (unpadded) tokens per row, each in `1..=seq_len`.
    pub lengths: Vec<usize>,
    /// Class id per row, in `0..num_classes`.
    pub labels: Vec<i64>,
    /// Rows in the batch (the last batch of a finite split may be short).
    pub batch: usize,
    /// Positions per row.
    pub seq_len: usize,
}

impl ClassBatch {
    /// The tokens of row `b` without padding, or `None` past the last row.
    pub fn row(&self, b: usize) -> Option<&[u32]> {
        let start = b.checked_mul(self.seq_len)?;
        let len = *self.lengths.get(b)?;
        self.tokens.get(start..start.checked_add(len)?)
    }
}

/// A batch of either kind; which one a task yields is fixed by the task
/// ([`Task::num_classes`] is `Some` exactly for classification tasks).
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// From a sequence task.
    Seq(SeqBatch),
    /// From a classification task.
    Class(ClassBatch),
    /// From an image task (the RAM's).
    Image(ImageBatch),
}

impl Batch {
    /// Rows in the batch.
    pub fn batch_size(&self) -> usize {
        match self {
            Batch::Seq(b) => b.batch,
            Batch::Class(b) => b.batch,
            Batch::Image(b) => b.batch,
        }
    }

    /// Positions per row.
    pub fn seq_len(&self) -> usize {
        match self {
            Batch::Seq(b) => b.seq_len,
            Batch::Class(b) => b.seq_len,
            Batch::Image(b) => b.rows,
        }
    }

    /// Rows `range` of the batch (a data-parallel rank's shard); a range past the end is an
    /// error.
    pub fn rows(&self, range: std::ops::Range<usize>) -> anyhow::Result<Batch> {
        let n = self.batch_size();
        if range.start > range.end || range.end > n {
            anyhow::bail!("rows {range:?} of a batch of {n}");
        }
        let per = |width: usize| range.start * width..range.end * width;
        let rows = range.len();
        Ok(match self {
            Batch::Seq(b) => Batch::Seq(SeqBatch {
                inputs: b.inputs[per(b.seq_len)].to_vec(),
                targets: b.targets[per(b.seq_len)].to_vec(),
                batch: rows,
                seq_len: b.seq_len,
            }),
            Batch::Class(b) => Batch::Class(ClassBatch {
                tokens: b.tokens[per(b.seq_len)].to_vec(),
                lengths: b.lengths[range.clone()].to_vec(),
                labels: b.labels[range].to_vec(),
                batch: rows,
                seq_len: b.seq_len,
            }),
            Batch::Image(b) => Batch::Image(ImageBatch {
                pixels: b.pixels[per(b.rows * b.cols)].to_vec(),
                labels: b.labels[range].to_vec(),
                batch: rows,
                rows: b.rows,
                cols: b.cols,
            }),
        })
    }

    /// The sequence batch, if this is one.
    pub fn as_seq(&self) -> Option<&SeqBatch> {
        match self {
            Batch::Seq(b) => Some(b),
            _ => None,
        }
    }

    /// The classification batch, if this is one.
    pub fn as_class(&self) -> Option<&ClassBatch> {
        match self {
            Batch::Class(b) => Some(b),
            _ => None,
        }
    }
}

/// Positions of one sequence example worth marking on a plot of the model's attention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Supervised positions: where the model must answer (MQAR's queries, the final trigger).
    pub queries: Vec<usize>,
    /// Positions holding what the answers need, in increasing order (MQAR: the queried keys,
    /// each followed by its value; induction: the earlier trigger and the token after it;
    /// selective copying: the data tokens).
    pub sources: Vec<usize>,
    /// What `sources` are, for a plot's legend; empty when there are none.
    pub source_name: &'static str,
}

/// A task: a deterministic source of batches plus the sizes a model needs to be built for it.
pub trait Task: Send + Sync {
    /// The config name (`"mqar"`, `"induction"`, `"selective-copying"`, `"text"`).
    fn name(&self) -> &'static str;

    /// Token ids are in `0..vocab_size` (inputs and, for sequence tasks, targets).
    fn vocab_size(&self) -> usize;

    /// The (maximum) sequence length of a batch.
    fn seq_len(&self) -> usize;

    /// Number of classes for classification tasks ([`Batch::Class`]); `None` for sequence tasks
    /// ([`Batch::Seq`]), whose targets are token ids.
    fn num_classes(&self) -> Option<usize>;

    /// The complete config, defaults and the text task's class mapping filled in: save it with
    /// a checkpoint and [`build`] from it to get the same task back.
    fn config(&self) -> TaskConfig;

    /// Examples in `split` when it is finite (the text task's valid and test files), so that
    /// evaluation covers each once; `None` for a stream without end (the synthetic tasks, and
    /// the text task's train split, which reshuffles every epoch); `Some(0)` for a split
    /// the task does not have.
    fn split_size(&self, split: Split) -> Option<usize>;

    /// Examples in the training set when it is finite (one epoch), `None` for a stream.
    fn train_size(&self) -> Option<usize> {
        None
    }

    /// Batch `index` of `split` with `batch_size` rows.
    ///
    /// Errors when `batch_size` is 0, when the task has no such split, or when `index` is past
    /// the end of a finite split (whose last batch may be short).
    fn batch(&self, split: Split, index: u64, batch_size: usize) -> Result<Batch, TaskError>;

    /// The Recurrent Attention Model an image task trains, and how many sampled glimpse paths
    /// its final `error_averaged` averages; `None` for the tasks the transformer trains.
    fn ram_model(&self) -> Option<(attune_nn::RamConfig, usize)> {
        None
    }

    /// Whether the model's outputs are its input vocabulary, scored against the token table
    /// (recommendation: SASRec's shared item embeddings).
    fn tied_output(&self) -> bool {
        false
    }

    /// For a ranking task (recommendation): the sampled negatives of each row of held-out
    /// batch `index` of size `batch_size`, against which the sampled metrics rank the row's
    /// target; `None` for every other task.
    fn sampled_negatives(&self, split: Split, index: u64, batch_size: usize) -> Option<Vec<Vec<u32>>> {
        let _ = (split, index, batch_size);
        None
    }

    /// How plots name token `token` (the default: its id; recommendation: the item's id in
    /// the data file).
    fn token_label(&self, token: u32) -> String {
        token.to_string()
    }

    /// The name of class `id` for plots (the default: the id).
    fn class_name(&self, id: usize) -> String {
        id.to_string()
    }

    /// `(rows, cols)` of the images of a task the Vision Transformer reads; `None` for tokens.
    fn image_shape(&self) -> Option<(usize, usize)> {
        None
    }

    /// The positions of one example of a sequence batch (its `inputs` and `targets` row) that
    /// plots mark. The default marks the supervised positions and no sources.
    fn marks(&self, inputs: &[u32], targets: &[i64]) -> Marks {
        let _ = inputs;
        Marks { queries: supervised_positions(targets), ..Marks::default() }
    }
}

/// The positions whose target is not [`IGNORE_INDEX`].
pub fn supervised_positions(targets: &[i64]) -> Vec<usize> {
    targets.iter().enumerate().filter(|&(_, &t)| t != IGNORE_INDEX).map(|(i, _)| i).collect()
}

/// Builds the task of `config`, drawing its data with `seed`. Validates the config, and for
/// the text task reads and checks its files, so later [`Task::batch`] calls fail only on bad
/// batch arguments.
pub fn build(config: &TaskConfig, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    Ok(match config {
        TaskConfig::Mqar(c) => Box::new(mqar::Mqar::new(c.clone(), seed)?),
        TaskConfig::InductionHeads(c) => Box::new(induction::InductionHeads::new(c.clone(), seed)?),
        TaskConfig::SelectiveCopying(c) => Box::new(selective_copying::SelectiveCopying::new(c.clone(), seed)?),
        TaskConfig::TextClassification(c) => Box::new(text::TextClassification::new(c.clone(), seed)?),
        TaskConfig::RamCentred(c) => Box::new(ram::RamImageTask::new("ram-centred", c.clone(), seed)?),
        TaskConfig::RamTranslated(c) => Box::new(ram::RamImageTask::new("ram-translated", c.clone(), seed)?),
        TaskConfig::RamCluttered(c) => Box::new(ram::RamImageTask::new("ram-cluttered", c.clone(), seed)?),
        TaskConfig::Image(c) => Box::new(image::ImageTask::new(c.clone(), seed)?),
        TaskConfig::Recsys(c) => Box::new(recsys::RecsysTask::new(c.clone(), seed)?),
    })
}
