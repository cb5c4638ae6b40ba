//! Reading a file whole, and gunzipping, with size limits: what a loader allocates is bounded
//! by bytes that exist (the file's length, the stream actually decompressed), never by a
//! length a header declares.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// The gzip magic (RFC 1952): a file starting with it is decompressed first.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` start like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// The whole of `path`, refusing files over `limit` bytes before reading them.
pub fn read_file(op: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(op, path, e))?;
    if meta.len() > limit {
        return Err(DataError::TooLarge { op, path: path.into(), what: "the file".into(), size: meta.len(), limit });
    }
    std::fs::read(path).map_err(|e| DataError::io(op, path, e))
}

/// The decompressed contents of the gzip stream `bytes` (read from `path`), at most `limit`
/// bytes. Concatenated gzip members are read as one stream, as `gzip -d` does.
pub fn gunzip(op: &'static str, path: &Path, bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    // One byte past the limit tells a stream of exactly `limit` bytes from a longer one.
    decoder.take(limit + 1).read_to_end(&mut out).map_err(|e| gzip_error(op, path, e))?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge {
            op,
            path: path.into(),
            what: "the decompressed gzip stream".into(),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// A damaged gzip stream as [`DataError::Invalid`] (flate2 reports damage as an I/O error).
pub(crate) fn gzip_error(op: &'static str, path: &Path, e: std::io::Error) -> DataError {
    DataError::invalid(op, path, None, format!("the gzip stream is damaged or cut short: {e}"))
}
