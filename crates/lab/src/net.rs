//! The network a run trains: the transformer [`Model`] every sequence and text task uses, or
//! the [`RecurrentAttentionModel`] of the RAM image tasks (docs/ram.md). The training loop,
//! checkpoints, evaluation and plots handle both through this one type.

use anyhow::{Context, Result};
use attune_nn::{Model, ModelConfig, ParamStore, RecurrentAttentionModel};
use attune_tensor::{DType, Device};

use crate::tasks::Task;

/// A run's network.
pub enum Net {
    /// The transformer language model or classifier.
    Transformer(Model),
    /// The Recurrent Attention Model, with the sampled paths its final `error_averaged` averages.
    Ram {
        /// The model.
        model: RecurrentAttentionModel,
        /// Sampled glimpse paths averaged at test time.
        test_paths: usize,
    },
}

impl Net {
    /// The network `task` trains, in f32 with parameters drawn from `seed`: the task's RAM
    /// when it has one, else the transformer of `model` (the run's resolved model config).
    pub fn build(task: &dyn Task, model: &ModelConfig, seed: u64, device: &Device) -> Result<Net> {
        Ok(match task.ram_model() {
            Some((cfg, test_paths)) => Net::Ram {
                model: RecurrentAttentionModel::new(&cfg, seed, DType::F32, device)
                    .context("building the recurrent attention model")?,
                test_paths,
            },
            None => Net::Transformer(Model::new(model, seed, DType::F32, device).context("building the model")?),
        })
    }

    /// Every parameter by name (what checkpoints save and optimizers update).
    pub fn store(&self) -> &ParamStore {
        match self {
            Net::Transformer(m) => m.store(),
            Net::Ram { model, .. } => model.store(),
        }
    }

    /// The transformer, for what only it has (attention plots, the PyTorch probe).
    pub fn transformer(&self) -> Option<&Model> {
        match self {
            Net::Transformer(m) => Some(m),
            Net::Ram { .. } => None,
        }
    }

    /// The RAM's architecture, for config.json; `None` for the transformer.
    pub fn ram_config(&self) -> Option<attune_nn::RamConfig> {
        match self {
            Net::Ram { model, .. } => Some(model.config().clone()),
            Net::Transformer(_) => None,
        }
    }
}
