//! Pruners: stop unpromising trials early from their intermediate values. Like samplers they
//! decide from the stored trials alone, so every worker of a shared study agrees.

use crate::space::Direction;
use crate::trial::Trial;

/// What a pruner sees when a trial reports a value.
#[derive(Debug, Clone, Copy)]
pub struct PruneContext<'a> {
    /// The direction of the (first) objective, which intermediate values share.
    pub direction: Direction,
    /// Every trial, the reporting one included with its new value.
    pub trials: &'a [Trial],
    /// The reporting trial's number.
    pub number: u64,
    /// The step it just reported.
    pub step: u64,
}

impl<'a> PruneContext<'a> {
    /// The reporting trial.
    pub fn trial(&self) -> Option<&'a Trial> {
        self.trials.iter().find(|t| t.number == self.number)
    }
}

/// Decides whether a trial stops.
pub trait Pruner: Send + Sync {
    /// Whether the trial of `ctx` should stop now.
    fn should_prune(&self, ctx: &PruneContext) -> bool;
}
