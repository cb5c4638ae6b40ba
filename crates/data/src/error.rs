//! The one error type of attune-data. Every message names what was being done, the file, the
//! values involved and the fix; a missing or damaged cache file names `cargo xtask data`.

use std::path::PathBuf;

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// What every message about a malformed file ends with: loaders cannot tell a damaged cache
/// file from a user's own file, and for the former the fetch command is the fix.
const REFETCH_HINT: &str = "if the file is in the data cache, `cargo xtask data` checks every cached file's sha256 \
                            and fetches a damaged one again";

/// What can go wrong while loading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A data set's file is not in the cache.
    #[error(
        "{op}: {path} does not exist; fetch {dataset} once with `cargo xtask data --only {dataset}` (or every data \
         set with `cargo xtask data`), or set ATTUNE_DATA to the directory that holds it (docs/data.md)",
        path = path.display()
    )]
    Missing {
        /// What was being done (`loading Fashion-MNIST train`, ...).
        op: &'static str,
        /// The data set's name as `cargo xtask data --only` takes it.
        dataset: &'static str,
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A file-system call failed.
    #[error("{op}: {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file that ends before the data its header or format promises.
    #[error(
        "{op}: {path}: {what} needs {needed} bytes but only {available} are there; the file is truncated or its \
         header is damaged ({REFETCH_HINT})",
        path = path.display()
    )]
    Truncated {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What needed the bytes (`the header of 3 dimensions`, `60000 x 28 x 28 pixels`, ...).
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A file whose first bytes are not the format's magic number.
    #[error(
        "{op}: {path} starts with {found}, not the magic of {format} ({expected}); it is another kind of file \
         ({REFETCH_HINT})",
        path = path.display()
    )]
    BadMagic {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The format that was expected (`an IDX file`).
        format: &'static str,
        /// The magic bytes expected, in hex.
        expected: String,
        /// The bytes found, in hex.
        found: String,
    },
    /// A file, or the data it declares or decompresses to, past a loader's size limit.
    #[error(
        "{op}: {path}: {what} is {size} bytes, more than the limit of {limit}; no data set of this kind is that \
         large, so the file is damaged or not what it claims ({REFETCH_HINT})",
        path = path.display()
    )]
    TooLarge {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What is too large (`the file`, `the decompressed stream`, `the declared data`).
        what: String,
        /// Its size (at least this much, for a stream that was cut off at the limit).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file that is complete but holds something the format does not allow.
    #[error("{op}: {path}{at}: {reason} ({REFETCH_HINT})", path = path.display(), at = line_suffix(*line))]
    Invalid {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The 1-based line, for text formats.
        line: Option<usize>,
        /// What is wrong, with the values.
        reason: String,
    },
    /// Files that are each valid but do not belong together (an image file and a label file
    /// of different lengths, a directory with no classes).
    #[error("{op}: {reason}")]
    Mismatch {
        /// What was being done.
        op: &'static str,
        /// What does not match, naming the files and the values.
        reason: String,
    },
    /// A caller's argument that cannot work, whatever the files hold: images of a size a task
    /// cannot place, an index past the set, a task whose pieces do not fit.
    #[error("{op}: {reason}")]
    BadArgument {
        /// What was being done (`generating RAM task images`, ...).
        op: &'static str,
        /// What is wrong, with the values and the fix.
        reason: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

impl DataError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { op, path: path.into(), source }
    }

    pub(crate) fn invalid(op: &'static str, path: impl Into<PathBuf>, line: Option<usize>, reason: String) -> Self {
        DataError::Invalid { op, path: path.into(), line, reason }
    }
}
