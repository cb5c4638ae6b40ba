//! The file-system steps everything else is built from. Each one is a fault-injection point
//! ([`crate::fault`]) and maps its failure to a [`PersistError`] naming the path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::fault::step;
use crate::{PersistError, Result};

/// Creates (or truncates) `path`, writes `bytes` and fsyncs the file.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let len = Some(bytes.len() as u64);
    step("write", path).map_err(|e| PersistError::io("writing", path, len, e))?;
    let mut f = File::create(path).map_err(|e| PersistError::io("creating", path, len, e))?;
    f.write_all(bytes).map_err(|e| PersistError::io("writing", path, len, e))?;
    step("fsync", path).map_err(|e| PersistError::io("syncing", path, len, e))?;
    f.sync_all().map_err(|e| PersistError::io("syncing", path, len, e))
}

/// The fault-injection point of a write done by someone else's code (an image encoder).
pub(crate) fn step_write(path: &Path) -> Result<()> {
    step("write", path).map_err(|e| PersistError::io("writing", path, None, e))
}

/// Fsyncs the file at `path`.
pub(crate) fn sync_path(path: &Path) -> Result<()> {
    step("fsync", path).map_err(|e| PersistError::io("syncing", path, None, e))?;
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| PersistError::io("syncing", path, None, e))
}

/// Renames `from` to `to` (atomic on one file system; replaces a file, or an empty directory).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    step("rename", to).map_err(|e| PersistError::io("renaming into place", to, None, e))?;
    std::fs::rename(from, to).map_err(|e| PersistError::io("renaming into place", to, None, e))
}

/// Fsyncs a directory, so that the entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    step("fsync-dir", dir).map_err(|e| PersistError::io("syncing directory", dir, None, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| PersistError::io("syncing directory", dir, None, e))
}

/// Removes a file or a directory tree; one that is already gone is not an error.
pub(crate) fn remove(path: &Path) -> Result<()> {
    step("remove", path).map_err(|e| PersistError::io("removing", path, None, e))?;
    let res = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PersistError::io("removing", path, None, e)),
        _ => Ok(()),
    }
}

/// Cuts `path` back to `len` bytes and fsyncs it (one `ftruncate`: never a moment without the
/// rows before `len`).
pub(crate) fn truncate_synced(path: &Path, len: u64) -> Result<()> {
    step("truncate", path).map_err(|e| PersistError::io("truncating", path, None, e))?;
    let f = OpenOptions::new().write(true).open(path).map_err(|e| PersistError::io("opening", path, None, e))?;
    f.set_len(len).map_err(|e| PersistError::io("truncating", path, None, e))?;
    f.sync_all().map_err(|e| PersistError::io("syncing", path, None, e))
}

/// Appends `bytes` to an open file.
pub(crate) fn append(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    let len = Some(bytes.len() as u64);
    step("append", path).map_err(|e| PersistError::io("appending to", path, len, e))?;
    file.write_all(bytes).map_err(|e| PersistError::io("appending to", path, len, e))
}

/// Fsyncs an open file.
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    step("fsync", path).map_err(|e| PersistError::io("syncing", path, None, e))?;
    file.sync_all().map_err(|e| PersistError::io("syncing", path, None, e))
}

/// Creates a directory and its parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    step("mkdir", dir).map_err(|e| PersistError::io("creating directory", dir, None, e))?;
    std::fs::create_dir_all(dir).map_err(|e| PersistError::io("creating directory", dir, None, e))
}
