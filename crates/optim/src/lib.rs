//! attune-optim: optimizers, learning-rate schedules, gradient clipping and accumulation,
//! early stopping, with states that resume bit for bit.
//!
//! - [`Optimizer`]: [`Sgd`], [`Adam`] (and AdamW), [`Adafactor`], with PyTorch's semantics,
//!   hyper-parameter names and defaults; chosen at run time with the serde-tagged
//!   [`OptimizerConfig`]. Parameters come in [`ParamGroup`]s ([`split_decay`] builds the usual
//!   decay / no-decay pair); gradients come from `loss.backward()` as a `GradStore`.
//! - [`OptimizerState`]: named tensors and JSON scalars; loading checks names and shapes.
//! - [`ScheduleConfig`] (pure functions of the step) and [`ReduceOnPlateau`].
//! - [`clip_grad_norm`], [`GradAccumulator`] and [`EarlyStopping`].
//!
//! Updates are tensor ops under `no_grad` computed in f64 for f64 parameters and in f32
//! otherwise (Adam's is also one fused pass for contiguous CPU f32 tensors, with the same
//! bits). f16/bf16 parameters are updated through an f32 master copy kept (and saved,
//! as `"{name}.master"`) by the optimizer, with f32 optimizer state; the parameter holds
//! the rounded master. If such a parameter is written outside the optimizer, the next step
//! notices (the master no longer rounds to it) and starts again from the parameter.

mod accumulate;
mod adafactor;
mod adam;
mod adam_fused;
mod base;
mod clip;
mod early_stop;
mod error;
mod group;
mod optimizer;
mod plateau;
mod schedule;
mod sgd;
mod slot;
mod state;

pub use accumulate::GradAccumulator;
pub use adafactor::{Adafactor, AdafactorConfig};
pub use adam::{Adam, AdamConfig, AdamWConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use early_stop::{EarlyStopping, EarlyStoppingConfig, EarlyStoppingState, Observation};
pub use error::{Error, Result};
pub use group::{DecaySplit, ParamGroup, split_decay};
pub use optimizer::{Optimizer, OptimizerConfig};
pub use plateau::{Mode, PlateauConfig, PlateauState, ReduceOnPlateau, ThresholdMode};
pub use schedule::ScheduleConfig;
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;
