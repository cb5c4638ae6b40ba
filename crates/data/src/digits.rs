//! scikit-learn's handwritten digits (the UCI optical recognition test set, CC BY 4.0): 1,797
//! images of 8x8 pixels with values 0 to 16, as `sklearn/datasets/data/digits.csv.gz` in a
//! scikit-learn wheel. Each CSV line is 65 integers: the 64 pixels row-major, then the label
//! 0 to 9. There is no header and no split; use [`crate::Images::split_every`] for one.

use std::path::Path;

use crate::dir::{DataDir, Dataset};
use crate::error::{DataError, Result};
use crate::images::Images;
use crate::read::{gunzip, is_gzip, read_file};

/// The CSV file (gzip), in the data set's directory.
pub const CSV_FILE: &str = "digits.csv.gz";

/// Image side in pixels.
pub const SIDE: usize = 8;

/// The value of a fully inked pixel (each pixel counts the set bits of a 4x4 block).
pub const PIXEL_MAX: u8 = 16;

/// The largest compressed or decompressed file read (the real one is 57 kB, 270 kB unpacked).
const MAX_BYTES: u64 = 64 << 20;

const OP: &str = "loading digits 8x8";

/// Loads the digits from the cache: 8x8 images, `pixel_max` 16, labels 0 to 9.
pub fn load(dir: &DataDir) -> Result<Images> {
    let path = dir.require(OP, Dataset::Digits, CSV_FILE)?;
    load_file(&path)
}

/// Loads a digits CSV file, gzip-compressed or not (told apart by the gzip magic).
pub fn load_file(path: &Path) -> Result<Images> {
    let bytes = read_file(OP, path, MAX_BYTES)?;
    let text = if is_gzip(&bytes) { gunzip(OP, path, &bytes, MAX_BYTES)? } else { bytes };
    parse_csv(&text, path)
}

/// Parses the CSV text; `path` only names the file in errors.
pub fn parse_csv(text: &[u8], path: &Path) -> Result<Images> {
    let text = std::str::from_utf8(text).map_err(|e| {
        DataError::invalid(OP, path, None, format!("not UTF-8 text (at byte {}): {e}", e.valid_up_to()))
    })?;
    let per_image = SIDE * SIDE;
    let mut images = Images { rows: SIDE, cols: SIDE, pixel_max: PIXEL_MAX, pixels: Vec::new(), labels: Vec::new() };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |reason: String| DataError::invalid(OP, path, Some(i + 1), reason);
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != per_image + 1 {
            return Err(bad(format!(
                "{} comma-separated values, expected {} ({per_image} pixels and a label)",
                fields.len(),
                per_image + 1
            )));
        }
        for (col, field) in fields.iter().enumerate() {
            let max = if col < per_image { PIXEL_MAX } else { 9 };
            let what = if col < per_image { "pixel" } else { "label" };
            let value = field.trim().parse::<u8>().ok().filter(|v| *v <= max).ok_or_else(|| {
                bad(format!("column {} ({what}) is {field:?}, expected an integer 0 to {max}", col + 1))
            })?;
            if col < per_image {
                images.pixels.push(value);
            } else {
                images.labels.push(value);
            }
        }
    }
    if images.is_empty() {
        return Err(DataError::invalid(OP, path, None, "the file holds no digits".into()));
    }
    Ok(images)
}
