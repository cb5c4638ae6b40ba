//! [`TaskError`]: what went wrong building a task or drawing a batch, and how to fix it.

use std::path::PathBuf;

use super::Split;

/// Errors from [`super::build`] and [`super::Task::batch`]. Each message names the task or
/// file (with its 1-based line number) and the offending values, and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A configuration value is out of range or inconsistent with another.
    #[error("task {task}: {msg}")]
    InvalidConfig {
        /// The task's config name (`mqar`, `induction`, ...).
        task: &'static str,
        /// What is wrong and how to fix it.
        msg: String,
    },

    /// A data file could not be read.
    #[error("text task: cannot read {}: {source}; check the path in the task config", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// One line of a JSONL data file is malformed.
    #[error("text task: {}:{line}: {msg}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line and what a valid line looks like.
        msg: String,
    },

    /// A data file holds no examples.
    #[error(
        "text task: {} holds no examples; write one JSON object per line, e.g. {{\"text\": \"great film\", \"label\": \"positive\"}}",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },

    /// The labels of the training file (or the given `classes`) form fewer than two classes.
    #[error("text task: {}: every example has label {label}; classification needs at least two classes", path.display())]
    SingleClass {
        /// The file.
        path: PathBuf,
        /// The one label seen.
        label: String,
    },

    /// The image data set of a RAM task is missing or damaged (the message names
    /// `cargo xtask data`).
    #[error(transparent)]
    Data(#[from] attune_data::DataError),

    /// A batch was asked of a split the task does not have, or past its end.
    #[error("{task}: {msg}")]
    BadBatch {
        /// The task name.
        task: &'static str,
        /// The split asked for.
        split: Split,
        /// What is wrong and how to fix it.
        msg: String,
    },
}

impl TaskError {
    /// An [`TaskError::InvalidConfig`] for `task`.
    pub(crate) fn config(task: &'static str, msg: impl Into<String>) -> TaskError {
        TaskError::InvalidConfig { task, msg: msg.into() }
    }
}
