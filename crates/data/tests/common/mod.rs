//! Small files the tests write: IDX arrays, gzip streams, a cache directory.

#![allow(dead_code)] // Each test binary uses its own part of these helpers.

use std::io::Write;
use std::path::Path;

use attune_data::{DataDir, DataError, Dataset};

/// An unsigned-byte IDX file of `dims` holding `data`.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `bytes` as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A cache in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_cache() -> (tempfile::TempDir, DataDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::at(tmp.path().join("cache"));
    (tmp, dir)
}

/// Writes `bytes` as `relative` in `dataset`'s directory of `dir`, creating directories.
pub fn put(dir: &DataDir, dataset: Dataset, relative: &str, bytes: &[u8]) {
    let path = dir.dataset_dir(dataset).join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Asserts that `err` is [`DataError::Missing`] for `dataset` and that its message names the
/// file and tells the reader to run `cargo xtask data`.
pub fn assert_missing(err: &DataError, dataset: Dataset, file: &str) {
    let msg = err.to_string();
    assert!(matches!(err, DataError::Missing { dataset: d, .. } if *d == dataset.name()), "{err:?}");
    assert!(msg.contains("cargo xtask data"), "{msg}");
    assert!(msg.contains(&format!("--only {}", dataset.name())), "{msg}");
    assert!(msg.contains(file), "{msg}");
}

/// Asserts that the message of `err` names the file at `path` (by its file name).
pub fn assert_names(err: &DataError, path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.to_string().contains(name.as_ref()), "{err} does not name {name}");
}
