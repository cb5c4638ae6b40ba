//! attune-search: decision optimisation of attention models (docs/search.md).
//!
//! - [`space`]: search spaces declared in TOML, validated with named errors.
//! - [`sampler`]: random, grid, TPE, genetic (NSGA-II for several objectives), simulated
//!   annealing and a REINFORCE controller; each a pure function of the stored trials.
//! - [`pruner`]: median, ASHA and Hyperband on intermediate values.
//! - [`pbt`]: population-based training's exploit/explore decisions.
//! - [`storage`]: one trait, in memory, SQLite and PostgreSQL.
//! - [`importance`]: random-forest parameter importance for the study's plot.
//! - [`study`]: ask / report / tell over a storage, and the summary.
//! - [`studydir`]: a study's directory: its database, its lock and its exports.
//!
//! The crate depends on no tensor code: the lab (crates/lab) drives it with training runs,
//! any program drives it through `attune search --command`.

pub mod error;
pub mod importance;
pub mod pareto;
pub mod pbt;
pub mod pruner;
pub mod sampler;
pub mod space;
pub mod storage;
pub mod study;
pub mod studydir;
pub mod trial;

pub use error::{Result, SearchError};
pub use space::{Direction, Distribution, Param, Space};
pub use storage::{MemoryStorage, PostgresStorage, SqliteStorage, Storage, StudyRecord};
pub use study::{Asked, Study, Summary};
pub use studydir::StudyDir;
pub use trial::{Finish, Trial, TrialState};
