//! Directories committed whole: a checkpoint is written under a temporary name, every file
//! fsynced, a manifest with each file's size and BLAKE3 written last, the directory fsynced,
//! then renamed to its final name in one step and the parent fsynced. A directory with its
//! final name therefore always holds a complete, checksummed set; anything else is a
//! temporary that [`crate::remove_temporaries`] clears.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{parent_of, temp_sibling};
use crate::fsops;
use crate::{PersistError, Result};

/// The manifest's file name inside a committed directory.
pub const MANIFEST: &str = "MANIFEST.json";

/// The manifest format this crate writes and reads.
const FORMAT: u32 = 1;

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Length in bytes.
    pub bytes: u64,
    /// BLAKE3 of the contents, hex.
    pub blake3: String,
}

/// What a committed directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Every file, by name.
    pub files: BTreeMap<String, FileEntry>,
    /// The writer's own record (a step number, a metric, ...).
    pub meta: serde_json::Value,
}

/// The manifest file: the manifest and the BLAKE3 of its compact JSON, so that damage to the
/// manifest itself (a file name, a size, a checksum) is caught like damage to any file.
#[derive(Serialize, Deserialize)]
struct ManifestFile {
    #[serde(flatten)]
    manifest: Manifest,
    blake3: String,
}

fn manifest_digest(m: &Manifest) -> String {
    // serde_json writes maps in key order (BTreeMap), so the compact form is canonical.
    blake3::hash(&serde_json::to_vec(m).unwrap_or_default()).to_hex().to_string()
}

fn entry_of(bytes: &[u8]) -> FileEntry {
    FileEntry { bytes: bytes.len() as u64, blake3: blake3::hash(bytes).to_hex().to_string() }
}

/// A directory being written; nothing of it is visible under its final name until
/// [`Staging::commit`].
pub struct Staging {
    target: PathBuf,
    dir: PathBuf,
    files: BTreeMap<String, FileEntry>,
    committed: bool,
}

impl Staging {
    /// Starts writing the directory that will be committed as `target`.
    pub fn begin(target: &Path) -> Result<Staging> {
        fsops::create_dir_all(parent_of(target))?;
        let dir = temp_sibling(target);
        fsops::create_dir_all(&dir)?;
        Ok(Staging { target: target.to_path_buf(), dir, files: BTreeMap::new(), committed: false })
    }

    /// Writes one file (fsynced) and records its size and checksum.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        fsops::write_synced(&self.dir.join(name), bytes)?;
        self.files.insert(name.to_string(), entry_of(bytes));
        Ok(())
    }

    /// Writes the manifest, fsyncs the directory and renames it to its final name (replacing a
    /// committed directory of that name), then fsyncs the parent.
    pub fn commit(mut self, meta: serde_json::Value) -> Result<Committed> {
        let manifest = Manifest { format: FORMAT, files: std::mem::take(&mut self.files), meta };
        let file = ManifestFile { blake3: manifest_digest(&manifest), manifest };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| PersistError::BadManifest {
            path: self.dir.join(MANIFEST),
            reason: format!("cannot serialise the manifest: {e}"),
        })?;
        fsops::write_synced(&self.dir.join(MANIFEST), &text)?;
        fsops::sync_dir(&self.dir)?;
        let parent = parent_of(&self.target).to_path_buf();
        if self.target.exists() {
            // A directory cannot be renamed over a non-empty one: move the old one aside under a
            // temporary name first. A crash between the two renames leaves the older commits and
            // a temporary; nothing half-written carries the final name.
            let old = temp_sibling(&self.target);
            fsops::rename(&self.target, &old)?;
            fsops::rename(&self.dir, &self.target)?;
            self.committed = true;
            fsops::sync_dir(&parent)?;
            fsops::remove(&old)?;
        } else {
            fsops::rename(&self.dir, &self.target)?;
            self.committed = true;
        }
        fsops::sync_dir(&parent)?;
        Ok(Committed { dir: self.target.clone(), manifest: file.manifest })
    }
}

impl Drop for Staging {
    /// A staging directory abandoned by an error is removed (a crash leaves it to
    /// [`crate::remove_temporaries`]).
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A committed directory: its manifest, and reads that verify what they return.
#[derive(Debug, Clone)]
pub struct Committed {
    dir: PathBuf,
    manifest: Manifest,
}

impl Committed {
    /// Opens a committed directory by reading its manifest (files are verified as they are read).
    pub fn open(dir: &Path) -> Result<Committed> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|e| PersistError::BadManifest {
            path: path.clone(),
            reason: format!("cannot read the manifest ({e}); the directory was not committed by attune"),
        })?;
        let file: ManifestFile = serde_json::from_slice(&text).map_err(|e| PersistError::BadManifest {
            path: path.clone(),
            reason: format!("the manifest is damaged ({e})"),
        })?;
        let manifest = file.manifest;
        if manifest_digest(&manifest) != file.blake3 {
            return Err(PersistError::BadManifest {
                path,
                reason: "the manifest is damaged: its contents no longer match its own BLAKE3".into(),
            });
        }
        if manifest.format != FORMAT {
            return Err(PersistError::BadManifest {
                path,
                reason: format!(
                    "manifest format {} but this attune reads format {FORMAT}; use the attune version that wrote it",
                    manifest.format
                ),
            });
        }
        Ok(Committed { dir: dir.to_path_buf(), manifest })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The writer's record.
    pub fn meta(&self) -> &serde_json::Value {
        &self.manifest.meta
    }

    /// Whether the directory holds a committed file `name`.
    pub fn has(&self, name: &str) -> bool {
        self.manifest.files.contains_key(name)
    }

    /// The path of committed file `name` (not verified: use [`Committed::read`] to load it).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads committed file `name`, checking its size and BLAKE3 against the manifest.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let entry = self.manifest.files.get(name).ok_or_else(|| PersistError::NotCommitted {
            dir: self.dir.clone(),
            name: name.to_string(),
            listed: self.manifest.files.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| PersistError::io("reading", &path, None, e))?;
        let found = entry_of(&bytes);
        if found != *entry {
            return Err(PersistError::Corrupt {
                path,
                expected: entry.blake3.clone(),
                actual: found.blake3,
                expected_len: entry.bytes,
                actual_len: found.bytes,
            });
        }
        Ok(bytes)
    }

    /// Verifies every committed file.
    pub fn verify(&self) -> Result<()> {
        for name in self.manifest.files.keys() {
            self.read(name)?;
        }
        Ok(())
    }
}

/// The committed directories directly under `parent` whose names start with `prefix`, sorted
/// by name (zero-padded step numbers sort by step). Temporaries are never listed.
pub fn list_committed(parent: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PersistError::io("listing", parent, None, e)),
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && !name.contains(crate::TEMP_MARKER) && e.path().join(MANIFEST).is_file()
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// Removes a committed directory (retention): renamed to a temporary name first, so that a crash
/// in the middle of the removal never leaves a partial directory under a committed name.
pub fn remove_committed(dir: &Path) -> Result<()> {
    let doomed = temp_sibling(dir);
    fsops::rename(dir, &doomed)?;
    fsops::sync_dir(parent_of(dir))?;
    fsops::remove(&doomed)
}
