//! Learning-rate schedules as pure functions of the step, so a resumed run needs nothing but
//! its step count.
//!
//! `step` counts optimizer steps already taken: the first update uses `lr_at(0, base)`.
//! Warm-up is linear and reaches the base rate on its last step: `base (step + 1) / warmup`
//! for `step < warmup_steps` (unlike schedules that start at exactly 0, no update is wasted
//! on a zero rate).

use crate::error::{Result, ensure};
use serde::{Deserialize, Serialize};

const OP: &str = "schedule";

/// A learning-rate schedule, tagged by `name` in JSON:
/// `{"name": "cosine", "warmup_steps": 100, "total_steps": 10000, "min_lr": 1e-5}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// The base rate at every step.
    #[default]
    Constant,
    /// Linear warm-up, then the base rate.
    LinearWarmup {
        /// Steps of warm-up (0: none).
        warmup_steps: u64,
    },
    /// Linear warm-up, then a half cosine from the base rate down to `min_lr` at
    /// `total_steps`, and `min_lr` after.
    Cosine {
        /// Steps of warm-up (default 0).
        #[serde(default)]
        warmup_steps: u64,
        /// The step at which the rate reaches `min_lr` (> warmup_steps). Omitted or 0: not
        /// yet known; a caller that knows the run's length fills it in before [`validate`](Self::validate).
        #[serde(default)]
        total_steps: u64,
        /// The final rate (absolute, default 0).
        #[serde(default)]
        min_lr: f64,
    },
    /// Linear warm-up, then a straight line from the base rate to `min_lr` at `total_steps`.
    Linear {
        /// Steps of warm-up (default 0).
        #[serde(default)]
        warmup_steps: u64,
        /// The step at which the rate reaches `min_lr` (> warmup_steps). Omitted or 0: not
        /// yet known; a caller that knows the run's length fills it in before [`validate`](Self::validate).
        #[serde(default)]
        total_steps: u64,
        /// The final rate (absolute, default 0).
        #[serde(default)]
        min_lr: f64,
    },
    /// `base * gamma^floor(step / step_size)` (PyTorch's `StepLR`).
    Step {
        /// Steps between decays (>= 1). Omitted or 0: not yet known, filled in by the caller
        /// from the run's length.
        #[serde(default)]
        step_size: u64,
        /// Factor per decay (default 0.1).
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

/// `base (step + 1) / warmup` during warm-up, `None` after it.
fn warmup(step: u64, warmup_steps: u64, base: f64) -> Option<f64> {
    (step < warmup_steps).then(|| base * (step + 1) as f64 / warmup_steps as f64)
}

/// Progress through the decay phase, in [0, 1].
fn progress(step: u64, warmup_steps: u64, total_steps: u64) -> f64 {
    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    ((step - warmup_steps) as f64 / span).min(1.0)
}

impl ScheduleConfig {
    /// Checks the schedule's parameters, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let check_decay = |kind: &str, warmup_steps: u64, total_steps: u64, min_lr: f64| -> Result<()> {
            ensure(OP, total_steps > warmup_steps, || {
                format!(
                    "{kind}: total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps}); \
                     set total_steps to the length of the run"
                )
            })?;
            ensure(OP, min_lr.is_finite() && min_lr >= 0.0, || {
                format!("{kind}: min_lr must be finite and >= 0, got {min_lr}")
            })
        };
        match *self {
            ScheduleConfig::Constant | ScheduleConfig::LinearWarmup { .. } => Ok(()),
            ScheduleConfig::Cosine { warmup_steps, total_steps, min_lr } => {
                check_decay("cosine", warmup_steps, total_steps, min_lr)
            }
            ScheduleConfig::Linear { warmup_steps, total_steps, min_lr } => {
                check_decay("linear", warmup_steps, total_steps, min_lr)
            }
            ScheduleConfig::Step { step_size, gamma } => {
                ensure(OP, step_size >= 1, || "step: step_size must be >= 1, got 0".into())?;
                ensure(OP, gamma.is_finite() && gamma >= 0.0, || {
                    format!("step: gamma must be finite and >= 0, got {gamma}")
                })
            }
        }
    }

    /// The learning rate for the update after `step` updates, given the base rate.
    pub fn lr_at(&self, step: u64, base_lr: f64) -> f64 {
        match *self {
            ScheduleConfig::Constant => base_lr,
            ScheduleConfig::LinearWarmup { warmup_steps } => warmup(step, warmup_steps, base_lr).unwrap_or(base_lr),
            ScheduleConfig::Cosine { warmup_steps, total_steps, min_lr } => warmup(step, warmup_steps, base_lr)
                .unwrap_or_else(|| {
                    let t = progress(step, warmup_steps, total_steps);
                    min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }),
            ScheduleConfig::Linear { warmup_steps, total_steps, min_lr } => warmup(step, warmup_steps, base_lr)
                .unwrap_or_else(|| {
                    let t = progress(step, warmup_steps, total_steps);
                    min_lr + (base_lr - min_lr) * (1.0 - t)
                }),
            ScheduleConfig::Step { step_size, gamma } => base_lr * gamma.powf((step / step_size.max(1)) as f64),
        }
    }
}
