//! Study storage behind one trait: in memory ([`MemoryStorage`]) for tests and benchmarks,
//! SQLite ([`SqliteStorage`], any number of named studies in one file) as the on-disk default, and PostgreSQL ([`PostgresStorage`]) for
//! studies shared by workers on many machines. Every method is one atomic state change, so
//! several workers (threads, processes, machines: docs/search.md) may share one study, and
//! samplers rebuild everything they know from [`Storage::trials`].

mod memory;
mod postgres;
mod sqlite;
pub mod url;

pub use self::postgres::{CONNECT_TIMEOUT, LOCK_TIMEOUT, POSTGRES_SCHEMA_VERSION, PostgresStorage, list_studies};
pub use memory::{MemoryStorage, lease_failure};
pub use sqlite::{BUSY_TIMEOUT, DEFAULT_STUDY, SCHEMA_VERSION, SqliteStorage};

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Result;
use crate::space::Space;
use crate::trial::{Finish, Trial};

/// What a study is: its space and directions, how it samples and prunes, its seed, and
/// free-form settings of the driver (the objective, the metric names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// The search space and directions.
    pub space: Space,
    /// The sampler's configuration (`sampler::SamplerConfig` as JSON).
    pub sampler: Value,
    /// The pruner's configuration, if any.
    pub pruner: Option<Value>,
    /// The study's seed: every random draw is keyed by it and the trial number.
    pub seed: u64,
    /// The driver's settings (objective, metrics, ...), stored so a resume can check them.
    pub driver: Value,
}

/// One store of one study.
pub trait Storage: Send + Sync {
    /// Where the study lives (a file, or `:memory:`), for messages.
    fn location(&self) -> PathBuf;

    /// Stores `record` if the study is new; returns the stored record either way (the caller
    /// compares it with what it was given).
    fn init_study(&self, record: &StudyRecord) -> Result<StudyRecord>;

    /// The stored record, if the study has been created.
    fn study(&self) -> Result<Option<StudyRecord>>;

    /// Creates a running trial at `params` with the next free number and returns the number.
    fn create_trial(&self, params: &[f64], worker: &str, attrs: &Map<String, Value>) -> Result<u64>;

    /// Records an intermediate value of a running trial.
    fn report(&self, number: u64, step: u64, value: f64) -> Result<()>;

    /// Sets one attribute of an unfinished trial (a finished trial is final).
    fn set_attr(&self, number: u64, key: &str, value: &Value) -> Result<()>;

    /// Finishes a running trial; finishing a finished trial is an error.
    fn finish(&self, number: u64, finish: &Finish) -> Result<()>;

    /// Every trial, in number order.
    fn trials(&self) -> Result<Vec<Trial>>;

    /// The trials numbered `from` or more and those numbered in `open`, in number order: what
    /// a reader holding every other trial finished needs to be up to date, since a finished
    /// trial never changes (`Study` reads this way, so an ask costs the trials that changed,
    /// not the whole study). Numbers that do not exist are left out.
    fn trials_since(&self, from: u64, open: &[u64]) -> Result<Vec<Trial>> {
        Ok(self.trials()?.into_iter().filter(|t| t.number >= from || open.contains(&t.number)).collect())
    }

    // Shared studies (many workers on one study; docs/search.md "Shared studies"). A running
    // trial created or claimed by these methods holds a lease: `worker` owns it until
    // `lease` from now, measured by the storage's own clock, and keeps it by `renew`.

    /// Creates a running trial leased to `worker`, unless the study already holds `limit`
    /// trials (queued, running and finished all count): then `None`. The check and the insert
    /// are one transaction, so workers racing for the last trial create exactly `limit`.
    fn create_leased(
        &self,
        params: &[f64],
        worker: &str,
        attrs: &Map<String, Value>,
        lease: Duration,
        limit: Option<u64>,
    ) -> Result<Option<u64>>;

    /// Extends `worker`'s lease on a running trial; `false` when the trial is no longer this
    /// worker's to run (its lease expired and it was re-queued, or it finished).
    fn renew(&self, number: u64, worker: &str, lease: Duration) -> Result<bool>;

    /// Re-queues every running trial whose lease has expired: same number and parameters,
    /// intermediate values dropped, `retries` + 1; one that has already been re-queued
    /// `max_retries` times is failed instead, with the worker and the count in its error.
    /// Returns the numbers it touched.
    fn expire_leases(&self, max_retries: u32) -> Result<Vec<u64>>;

    /// Claims the lowest-numbered queued trial for `worker` with a fresh lease (one
    /// transaction; no two workers ever claim the same trial).
    fn claim_queued(&self, worker: &str, lease: Duration) -> Result<Option<Trial>>;

    /// Records an intermediate value only if `worker` still holds the trial's lease; `false`
    /// (and nothing written) when it does not, so a stalled worker cannot report into a trial
    /// that was re-queued and that someone else runs now.
    fn report_leased(&self, number: u64, worker: &str, step: u64, value: f64) -> Result<bool>;

    /// Finishes a trial only if `worker` still holds its lease; `false` (and nothing written)
    /// when it does not, so a worker presumed dead cannot finish a trial someone else now runs.
    fn finish_leased(&self, number: u64, worker: &str, finish: &Finish) -> Result<bool>;
}
