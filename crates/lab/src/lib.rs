//! attune-lab: tasks, training loop and reports behind the `attune` binary.
//!
//! - [`tasks`]: MQAR, induction heads, selective copying and JSONL text classification,
//!   generated deterministically from (seed, split, batch index).
//! - [`config`]: run settings from flags or TOML/JSON; `config.json` in every run directory.
//! - [`train`]: the loop (accumulation, clipping, schedules, evaluation, early stopping,
//!   checkpoints on Ctrl-C, exact resume); [`evaluate`] for held-out metrics.
//! - [`metrics`] (with [`tensorboard`] event files), [`plots`], [`probe`]: what a run leaves
//!   behind.
//! - [`bench`]: `attune bench-step`, training-step timing against the PyTorch peer.

pub mod batch;
pub mod bench;
pub mod config;
pub mod evaluate;
pub mod metrics;
pub mod plots;
pub mod probe;
mod progress;
pub mod runstate;
pub mod tasks;
pub mod tensorboard;
pub mod train;
