//! The one error type of attune-persist: every message names the path, what was being done and,
//! where there is one, the fix.

use std::path::PathBuf;

/// Result with [`PersistError`].
pub type Result<T, E = PersistError> = std::result::Result<T, E>;

/// What can go wrong while writing or reading committed state.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file-system call failed (a full disk, an I/O error, a missing directory, ...).
    #[error("{op} {path}: {source}{hint}", path = path.display(), hint = io_hint(source, *bytes))]
    Io {
        /// What was being done (`writing`, `syncing`, `renaming into place`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Bytes the step needed to write, when it wrote.
        bytes: Option<u64>,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A committed file whose bytes differ from what its manifest recorded.
    #[error(
        "{path} is damaged: its manifest records {expected_len} bytes with BLAKE3 {expected}, the file has {actual_len} bytes with BLAKE3 {actual}; it was changed after it was committed (disk corruption or an edit), so it is not loaded",
        path = path.display()
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Recorded checksum.
        expected: String,
        /// Checksum of the bytes found.
        actual: String,
        /// Recorded length.
        expected_len: u64,
        /// Length found.
        actual_len: u64,
    },
    /// A committed directory without a readable manifest, or a manifest that does not parse.
    #[error("{path}: {reason}", path = path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file a manifest does not list.
    #[error("{dir} has no committed file named '{name}' (its manifest lists: {listed})", dir = dir.display())]
    NotCommitted {
        /// The committed directory.
        dir: PathBuf,
        /// The name asked for.
        name: String,
        /// What the manifest does list.
        listed: String,
    },
    /// Another process holds the directory.
    #[error(
        "{dir} is in use by another attune process{holder} (lock file {lock}); wait for it to finish or stop it — two processes writing one run directory would interleave their files",
        dir = dir.display(),
        holder = pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        lock = lock.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// A fault injected by a crash test (feature `failpoints`).
    #[error("injected fault at file-system step {step} ({what} {path})", path = path.display())]
    Injected {
        /// The step counter value.
        step: u64,
        /// The kind of step.
        what: &'static str,
        /// The path of the step.
        path: PathBuf,
    },
}

impl PersistError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, bytes: Option<u64>, source: std::io::Error) -> Self {
        PersistError::Io { op, path: path.into(), bytes, source }
    }

    /// Whether this is a full disk or a quota.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, PersistError::Io { source, .. } if is_enospc(source))
    }
}

fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || e.raw_os_error() == Some(28)
}

fn io_hint(e: &std::io::Error, bytes: Option<u64>) -> String {
    if is_enospc(e) {
        let need = bytes.map(|b| format!(" ({b} bytes needed)")).unwrap_or_default();
        format!(
            "{need}; free disk space and continue with `attune train --resume DIR`: the last committed checkpoint is intact"
        )
    } else if e.kind() == std::io::ErrorKind::NotFound {
        "; does the directory exist?".into()
    } else {
        String::new()
    }
}
