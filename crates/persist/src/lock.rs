//! One process per directory: an exclusive `flock` on a lock file inside it. The kernel drops
//! the lock when the process ends, however it ends, so a lock is never stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsops;
use crate::{PersistError, Result};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".attune.lock";

/// An exclusive lock on a directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir` (creating the directory), or fails at once naming the holder.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        fsops::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| PersistError::io("opening the lock file", &path, None, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(PersistError::Locked { dir: dir.to_path_buf(), lock: path, pid: text.trim().parse().ok() });
            }
            Err(TryLockError::Error(e)) => return Err(PersistError::io("locking", &path, None, e)),
        }
        // The holder's pid, for the message a second process prints; not needed for the lock.
        let _ = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| {
            write!(file, "{}", std::process::id())?;
            file.flush()
        });
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
