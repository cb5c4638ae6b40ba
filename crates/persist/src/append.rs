//! Append-only logs (metrics rows, event files) whose committed length is recorded by the
//! checkpoint that covers them, so that a resume cuts them back to exactly that length with one
//! `ftruncate` — never a moment with the history missing.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::atomic::parent_of;
use crate::fsops;
use crate::{PersistError, Result};

/// An append-only file and its current length.
#[derive(Debug)]
pub struct AppendLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AppendLog {
    /// Starts an empty log at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<AppendLog> {
        fsops::create_dir_all(parent_of(path))?;
        fsops::write_synced(path, b"")?;
        fsops::sync_dir(parent_of(path))?;
        Self::open_at(path, 0)
    }

    /// Opens the log to continue after `committed` bytes: a longer file (rows written after the
    /// last checkpoint) is cut back to `committed`; a missing file is created when `committed` is
    /// 0; a shorter file is an error (rows the checkpoint covers are gone).
    pub fn open_at(path: &Path, committed: u64) -> Result<AppendLog> {
        let have = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && committed == 0 => return Self::create(path),
            Err(e) => return Err(PersistError::io("opening", path, None, e)),
        };
        if have < committed {
            return Err(PersistError::io(
                "resuming",
                path,
                None,
                std::io::Error::other(format!(
                    "the file has {have} bytes but the checkpoint covers {committed}; rows it recorded are missing"
                )),
            ));
        }
        if have > committed {
            fsops::truncate_synced(path, committed)?;
        }
        let file =
            OpenOptions::new().append(true).open(path).map_err(|e| PersistError::io("opening", path, None, e))?;
        Ok(AppendLog { path: path.to_path_buf(), file, len: committed })
    }

    /// Appends bytes (not yet durable: [`AppendLog::sync`] makes them so).
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = fsops::append(&mut self.file, &self.path, bytes) {
            // A partial append (a full disk) is cut off again so the file stays whole rows.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Fsyncs the file and returns its length, the value a checkpoint records.
    pub fn sync(&self) -> Result<u64> {
        fsops::sync_file(&self.file, &self.path)?;
        Ok(self.len)
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
