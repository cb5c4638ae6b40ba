//! IDX, the file format of MNIST and Fashion-MNIST: a 4-byte magic (two zero bytes, the
//! element type, the number of dimensions), one big-endian `u32` per dimension, then the
//! elements row-major. Only unsigned bytes (type `0x08`) are read, which is what image and
//! label files hold. A file starting with the gzip magic is decompressed as it is read.
//!
//! The declared size is checked before anything of that size is allocated: against the file's
//! length for a raw file, and against [`MAX_IDX_DATA`] for a gzip stream, whose data is then
//! read only as far as the stream really goes.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::read::{gzip_error, is_gzip, read_file};

/// The element type code of unsigned bytes.
pub const TYPE_U8: u8 = 0x08;

/// The most dimensions a file may declare (images have 3, labels 1).
pub const MAX_DIMS: u8 = 8;

/// The largest data an IDX file may declare: 1 GiB, 20x Fashion-MNIST's training images.
pub const MAX_IDX_DATA: u64 = 1 << 30;

/// The largest IDX file read (raw or gzip).
const MAX_IDX_FILE: u64 = MAX_IDX_DATA + 4 + 4 * MAX_DIMS as u64;

const OP: &str = "reading IDX";

/// An n-dimensional array of unsigned bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[60000, 28, 28]` for Fashion-MNIST's training images).
    pub dims: Vec<usize>,
    /// The elements, row-major: the product of `dims` bytes.
    pub data: Vec<u8>,
}

/// Reads the IDX file at `path`, raw or gzip-compressed (told apart by the gzip magic, not
/// by the file name).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_file(OP, path, MAX_IDX_FILE)?;
    parse_idx(&bytes, path)
}

/// Parses an IDX file's bytes (raw or gzip); `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if is_gzip(bytes) {
        let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
        parse_stream(&mut decoder, path, None)
    } else {
        parse_stream(&mut { bytes }, path, Some(bytes.len() as u64))
    }
}

/// Parses from `reader`; `available` is the total length when known (a raw file), so the
/// declared size is checked against it before the data is read.
fn parse_stream(reader: &mut impl Read, path: &Path, available: Option<u64>) -> Result<IdxArray> {
    let mut magic = [0u8; 4];
    let got = read_up_to(reader, &mut magic, path)?;
    if got < 4 {
        return Err(truncated(path, "the 4-byte IDX magic".into(), 4, got as u64));
    }
    let [zero0, zero1, elem_type, ndims] = magic;
    if zero0 != 0 || zero1 != 0 || !(0x08..=0x0e).contains(&elem_type) || elem_type == 0x0a {
        return Err(DataError::BadMagic {
            op: OP,
            path: path.into(),
            format: "an IDX file",
            expected: "00 00 <type 08..0e> <dims>".into(),
            found: hex(&magic),
        });
    }
    if elem_type != TYPE_U8 {
        return Err(DataError::invalid(
            OP,
            path,
            None,
            format!(
                "element type 0x{elem_type:02x} ({}) is not supported; only unsigned-byte IDX files (type 0x08) are read",
                type_name(elem_type)
            ),
        ));
    }
    if ndims == 0 || ndims > MAX_DIMS {
        return Err(DataError::invalid(
            OP,
            path,
            None,
            format!("the header declares {ndims} dimensions; an IDX data file has 1 to {MAX_DIMS}"),
        ));
    }
    let header_len = 4 + 4 * u64::from(ndims);
    let mut dim_bytes = vec![0u8; 4 * usize::from(ndims)];
    let got = read_up_to(reader, &mut dim_bytes, path)?;
    if got < dim_bytes.len() {
        return Err(truncated(path, format!("the header of {ndims} dimensions"), header_len, 4 + got as u64));
    }
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let shape = dims.iter().map(usize::to_string).collect::<Vec<_>>().join(" x ");
    let data_len = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).unwrap_or(u64::MAX);
    if data_len > MAX_IDX_DATA {
        return Err(DataError::TooLarge {
            op: OP,
            path: path.into(),
            what: format!("the declared data ({shape} bytes)"),
            size: data_len,
            limit: MAX_IDX_DATA,
        });
    }
    if let Some(total) = available
        && header_len + data_len > total
    {
        return Err(truncated(path, format!("{shape} elements after the header"), header_len + data_len, total));
    }
    // `take` bounds the read to the declared size; the buffer grows only with bytes that
    // arrive, so a gzip stream that ends early costs no more than it holds.
    let mut data = Vec::new();
    reader.take(data_len).read_to_end(&mut data).map_err(|e| gzip_error(OP, path, e))?;
    if (data.len() as u64) < data_len {
        return Err(truncated(
            path,
            format!("{shape} elements after the header"),
            header_len + data_len,
            header_len + data.len() as u64,
        ));
    }
    let mut extra = [0u8; 1];
    if read_up_to(reader, &mut extra, path)? > 0 {
        let trailing = match available {
            Some(total) => format!("{} bytes", total - header_len - data_len),
            None => "bytes".into(),
        };
        return Err(DataError::invalid(
            OP,
            path,
            None,
            format!("{trailing} follow the {shape} elements the header declares; the header or the file is damaged"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Fills as much of `buf` as the stream holds; the count is short only at the end.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_error(OP, path, e)),
        }
    }
    Ok(filled)
}

fn truncated(path: &Path, what: String, needed: u64, available: u64) -> DataError {
    DataError::Truncated { op: OP, path: path.into(), what, needed, available }
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        _ => "f64",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}
