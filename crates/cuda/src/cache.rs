//! The on-disk kernel cache shared by NVRTC (cubin/PTX) and the emulator (shared libraries).
//!
//! Entries are keyed by a hash of the source, its includes, the defines, the target and the
//! compiler version (see [`crate::sources::SourceSet::hash`]). Each entry `KEY.EXT` has a
//! sidecar `KEY.EXT.sha256` holding the hash of its contents: writes go to a temporary file and
//! are renamed into place (entry first, sidecar last), so a reader never sees a half-written
//! entry as valid, and a corrupt or truncated entry fails the check and is rebuilt.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A cache directory for one kind of artefact.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

/// The cache root: `ATTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/attune`, else `~/.cache/attune`,
/// else the system temp dir.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ATTUNE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("attune");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("attune");
    }
    std::env::temp_dir().join("attune-cache")
}

fn digest_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl DiskCache {
    /// The cache `root/kind`, created on demand.
    pub fn new(root: impl Into<PathBuf>, kind: &str) -> DiskCache {
        DiskCache { dir: root.into().join(kind) }
    }

    /// The default cache for `kind` under [`cache_root`].
    pub fn default_for(kind: &str) -> DiskCache {
        DiskCache::new(cache_root(), kind)
    }

    /// The directory of this cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where entry `key.ext` lives (whether or not it exists).
    pub fn path(&self, key: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{key}.{ext}"))
    }

    /// The entry's path when it exists and its contents match the sidecar hash; a missing,
    /// truncated or corrupt entry returns `None` (and is removed, so it will be rebuilt).
    pub fn lookup(&self, key: &str, ext: &str) -> Option<PathBuf> {
        let path = self.path(key, ext);
        let sidecar = sidecar(&path);
        let expected = std::fs::read_to_string(&sidecar).ok()?;
        let bytes = std::fs::read(&path).ok();
        match bytes {
            Some(b) if digest_hex(&b) == expected.trim() => Some(path),
            _ => {
                let _ = std::fs::remove_file(&sidecar);
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Reads a valid entry's bytes.
    pub fn get(&self, key: &str, ext: &str) -> Option<Vec<u8>> {
        self.lookup(key, ext).and_then(|p| std::fs::read(p).ok())
    }

    /// Stores `bytes` as entry `key.ext` atomically and returns its path.
    pub fn put(&self, key: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the kernel cache directory", &self.dir, e))?;
        let path = self.path(key, ext);
        write_atomic(&path, bytes)?;
        write_atomic(&sidecar(&path), digest_hex(bytes).as_bytes())?;
        Ok(path)
    }

    /// Stores the file at `src` (e.g. a freshly linked shared library) as entry `key.ext`.
    pub fn put_file(&self, key: &str, ext: &str, src: &Path) -> Result<PathBuf> {
        let bytes = std::fs::read(src).map_err(|e| Error::io("reading a built kernel", src, e))?;
        self.put(key, ext, &bytes)
    }

    /// A fresh temporary path inside the cache directory (same filesystem, so rename is atomic).
    pub fn temp_path(&self, ext: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the kernel cache directory", &self.dir, e))?;
        Ok(self.dir.join(format!(".tmp-{}-{}.{ext}", std::process::id(), next_serial())))
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// Writes `bytes` to `path` through attune-persist's commit protocol (temporary file, fsync,
/// rename, directory fsync; docs/persistence.md), so a crash leaves the old entry or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    attune_persist::write_atomic(path, bytes)
        .map_err(|e| Error::io("writing a kernel cache entry", path, std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detection() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(tmp.path(), "test");
        assert!(cache.lookup("k", "bin").is_none());
        let payload: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        cache.put("k", "bin", &payload).unwrap();
        assert_eq!(cache.get("k", "bin").unwrap(), payload);

        // Truncation (a crash mid-copy by another tool) must be detected and the entry dropped.
        std::fs::write(cache.path("k", "bin"), &payload[..5000]).unwrap();
        assert!(cache.get("k", "bin").is_none());
        assert!(!cache.path("k", "bin").exists(), "a corrupt entry is removed so it is rebuilt");

        // A flipped byte too.
        cache.put("k", "bin", &payload).unwrap();
        let mut bad = payload.clone();
        bad[1234] ^= 1;
        std::fs::write(cache.path("k", "bin"), &bad).unwrap();
        assert!(cache.get("k", "bin").is_none());

        // An entry whose sidecar never got written (crash between the renames) is not valid.
        std::fs::write(cache.path("j", "bin"), &payload).unwrap();
        assert!(cache.get("j", "bin").is_none());
    }
}
