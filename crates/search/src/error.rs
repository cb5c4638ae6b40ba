//! The search crate's one error type: each variant names what failed, the values involved and
//! the fix.

use std::path::PathBuf;

/// Everything the search crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A search-space declaration is invalid.
    #[error("search space {source_name}: {field}: {problem}; fix: {fix}")]
    Space {
        /// The file (or "<inline>") the space came from.
        source_name: String,
        /// The offending field, e.g. `params.lr.low`.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A stored study does not match what was asked of it (another space, other directions).
    #[error("study {path}: {what}; fix: {fix}")]
    StudyMismatch {
        /// The study's location.
        path: PathBuf,
        /// What differs.
        what: String,
        /// How to fix it.
        fix: String,
    },
    /// A file or database that should hold a study does not.
    #[error("{path} is not an attune study: {why}")]
    NotAStudy {
        /// The path given.
        path: PathBuf,
        /// Why it is not one.
        why: String,
    },
    /// A storage operation failed.
    #[error("study storage: {op}: {detail}")]
    Storage {
        /// The operation (`create trial`, `report`, ...).
        op: String,
        /// The underlying error.
        detail: String,
    },
    /// A trial number that the study does not have, or a trial in the wrong state.
    #[error("trial {number}: {problem}")]
    Trial {
        /// The trial's number.
        number: u64,
        /// What is wrong.
        problem: String,
    },
    /// A sampler, pruner or scheduler setting is invalid.
    #[error("{component}: {problem}; fix: {fix}")]
    Config {
        /// The component (`tpe`, `asha`, ...).
        component: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// The search crate's result type.
pub type Result<T> = std::result::Result<T, SearchError>;

impl SearchError {
    /// A storage error for `op` from any displayable cause.
    pub fn storage(op: &str, detail: impl std::fmt::Display) -> SearchError {
        SearchError::Storage { op: op.to_string(), detail: detail.to_string() }
    }

    /// A configuration error of `component`.
    pub fn config(component: &str, problem: impl Into<String>, fix: impl Into<String>) -> SearchError {
        SearchError::Config { component: component.to_string(), problem: problem.into(), fix: fix.into() }
    }
}
