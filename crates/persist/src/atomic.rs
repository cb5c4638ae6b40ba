//! Single files replaced whole: the old content or the new, never a mix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsops;
use crate::{PersistError, Result};

/// The marker in the name of every temporary entry this crate creates; [`remove_temporaries`]
/// recognises them by it.
pub const TEMP_MARKER: &str = ".attune-tmp-";

/// A fresh temporary name beside `path`: hidden, marked, unique in this process and across
/// processes (the pid).
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "entry".into());
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    // The name stays last, so the extension survives (image encoders choose the format by it).
    parent_of(path).join(format!("{TEMP_MARKER}{}-{serial}.{name}", std::process::id()))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Replaces `path` with `bytes`: written to a temporary sibling, fsynced, renamed over `path`,
/// and the directory fsynced, so that after a crash or power cut `path` holds the old bytes or
/// the new ones. On an error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    fsops::create_dir_all(dir)?;
    let tmp = temp_sibling(path);
    let result = fsops::write_synced(&tmp, bytes).and_then(|()| fsops::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    fsops::sync_dir(dir)
}

/// [`write_atomic`] for writers that need a path to write to (an image encoder): `write` fills
/// the temporary file (whose name keeps `path`'s extension); it is then fsynced and renamed over
/// `path`. A `write` error removes the temporary and leaves `path` untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::result::Result<(), String>) -> Result<()> {
    let dir = parent_of(path);
    fsops::create_dir_all(dir)?;
    let tmp = temp_sibling(path);
    let result = fsops::step_write(&tmp)
        .and_then(|()| write(&tmp).map_err(|e| PersistError::io("writing", &tmp, None, std::io::Error::other(e))))
        .and_then(|()| fsops::sync_path(&tmp))
        .and_then(|()| fsops::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    fsops::sync_dir(dir)
}

/// Makes `path` name the same file as `existing` (a hard link, so no bytes are copied; a copy
/// where the file system has no hard links), replacing whatever `path` held atomically.
pub fn link_atomic(existing: &Path, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = parent_of(path);
    // Already that file: nothing to do (and rename(2) of two links to one file does nothing,
    // which would leave the temporary link behind).
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    if let (Ok(a), Ok(b)) = (std::fs::metadata(existing), std::fs::metadata(path))
        && same(&a, &b)
    {
        return Ok(());
    }
    let tmp = temp_sibling(path);
    if std::fs::hard_link(existing, &tmp).is_err() {
        let bytes = std::fs::read(existing).map_err(|e| PersistError::io("reading", existing, None, e))?;
        if let Err(e) = fsops::write_synced(&tmp, &bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    if let Err(e) = fsops::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    fsops::sync_dir(dir)
}

/// Removes every temporary entry (file or directory) that a crashed writer left in `dir`, and
/// returns what it removed. Only for directories one process owns (see [`crate::DirLock`]):
/// another live writer's temporaries would be removed too.
pub fn remove_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(PersistError::io("listing", dir, None, e)),
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
            fsops::remove(&entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        fsops::sync_dir(dir)?;
    }
    Ok(removed)
}
