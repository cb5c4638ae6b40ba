//! attune-lab: tasks, training loop and reports behind the `attune` binary.
//!
//! - [`tasks`]: MQAR, induction heads, selective copying, JSONL text classification and the
//!   RAM's image tasks, generated deterministically from (seed, split, batch index).
//! - [`net`]: the network a run trains, the transformer or the Recurrent Attention Model.
//! - [`config`]: the run config and its `resolve` step; `config.json` in every run directory.
//! - [`flags`]: `attune train`'s flags as overlays on the config, and what `--resume` may change.
//! - [`overlay`]: dotted-key access (`model.d_model`) shared by flags, resume and searches.
//! - [`train`]: the loop (accumulation, clipping, schedules, evaluation, early stopping,
//!   checkpoints on Ctrl-C, exact resume); [`evaluate`] for held-out metrics.
//! - [`metrics`] (with [`tensorboard`] event files), [`plots`], [`probe`]: what a run leaves
//!   behind.
//! - [`bench`]: `attune bench-step`, training-step timing against the PyTorch peer.

pub mod batch;
pub mod bench;
pub mod config;
pub mod crossval;
pub mod distributed;
pub mod evaluate;
pub mod flags;
pub mod jsonfloat;
pub mod metrics;
pub mod net;
pub mod overlay;
pub mod plots;
pub mod probe;
mod progress;
pub mod ranking;
pub mod rundir;
pub mod runstate;
pub mod search;
pub mod tasks;
pub mod tensorboard;
pub mod train;
