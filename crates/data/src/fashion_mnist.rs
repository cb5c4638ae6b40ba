//! Fashion-MNIST (Zalando, MIT licence): 60,000 training and 10,000 test images of 28x28
//! pixels in 10 classes, as the four gzip IDX files of Debian's `dataset-fashion-mnist`
//! package. Also loads any pair of IDX image and label files ([`load_pair`]), such as the
//! original MNIST files.

use std::path::Path;

use crate::dir::{DataDir, Dataset};
use crate::error::{DataError, Result};
use crate::idx::read_idx;
use crate::images::Images;

/// The training images, in the data set's directory.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
/// The training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// The test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
/// The test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// The class of each label, from the data set's README.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Image side in pixels.
pub const SIDE: usize = 28;

/// The two halves Fashion-MNIST ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 60,000 images.
    Train,
    /// 10,000 images.
    Test,
}

/// Loads one split from the cache: `pixel_max` 255, 28x28, labels `0..10` (see [`CLASS_NAMES`]).
pub fn load(dir: &DataDir, split: Split) -> Result<Images> {
    let (op, images, labels) = match split {
        Split::Train => ("loading Fashion-MNIST train", TRAIN_IMAGES, TRAIN_LABELS),
        Split::Test => ("loading Fashion-MNIST test", TEST_IMAGES, TEST_LABELS),
    };
    let images_path = dir.require(op, Dataset::FashionMnist, images)?;
    let labels_path = dir.require(op, Dataset::FashionMnist, labels)?;
    let set = load_pair(&images_path, &labels_path)?;
    if (set.rows, set.cols) != (SIDE, SIDE) {
        return Err(DataError::invalid(
            op,
            &images_path,
            None,
            format!("images are {}x{}, Fashion-MNIST's are {SIDE}x{SIDE}", set.rows, set.cols),
        ));
    }
    if let Some(i) = set.labels.iter().position(|&l| usize::from(l) >= CLASS_NAMES.len()) {
        return Err(DataError::invalid(
            op,
            &labels_path,
            None,
            format!("label {i} is {}, Fashion-MNIST's labels are 0 to 9", set.labels[i]),
        ));
    }
    Ok(set)
}

/// Loads an IDX image file of dimensions (n, rows, cols) and an IDX label file of dimension
/// (n), each raw or gzip; `pixel_max` is 255.
pub fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Images> {
    const OP: &str = "loading IDX images and labels";
    let images = read_idx(images_path)?;
    let labels = read_idx(labels_path)?;
    let &[n, rows, cols] = images.dims.as_slice() else {
        return Err(DataError::invalid(
            OP,
            images_path,
            None,
            format!("an image file has 3 dimensions (count, rows, columns), this one has {:?}", images.dims),
        ));
    };
    let &[n_labels] = labels.dims.as_slice() else {
        return Err(DataError::invalid(
            OP,
            labels_path,
            None,
            format!("a label file has 1 dimension (count), this one has {:?}", labels.dims),
        ));
    };
    if n != n_labels {
        return Err(DataError::Mismatch {
            op: OP,
            reason: format!(
                "{} holds {n} images but {} holds {n_labels} labels; the two files must come from the same split",
                images_path.display(),
                labels_path.display()
            ),
        });
    }
    Ok(Images { rows, cols, pixel_max: 255, pixels: images.data, labels: labels.data })
}
