//! Labelled grey-scale images: the one output of the image loaders (Fashion-MNIST, MNIST JSON,
//! digits 8x8), one byte per pixel so a 60,000-image set takes 47 MB rather than 188 MB.

/// `len()` labelled images of `rows x cols` pixels, row-major, one `u8` per pixel in
/// `0..=pixel_max` (255 for the MNIST family, 16 for digits 8x8). Image `i` is
/// `pixels[i * rows * cols..(i + 1) * rows * cols]` with label `labels[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Pixel rows per image.
    pub rows: usize,
    /// Pixel columns per image.
    pub cols: usize,
    /// The value of a fully inked pixel; divide by it to get intensities in [0, 1].
    pub pixel_max: u8,
    /// All images, row-major, concatenated: `len() * rows * cols` bytes.
    pub pixels: Vec<u8>,
    /// One class label per image.
    pub labels: Vec<u8>,
}

/// A data set cut in two by a fixed rule (see [`Images::split_every`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainHeldOut {
    /// The images to train on.
    pub train: Images,
    /// The images kept out of training, for evaluation.
    pub held_out: Images,
}

impl Images {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, row-major.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_size();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    ///
    /// # Panics
    /// When an index is `>= self.len()`.
    pub fn select(&self, indices: &[usize]) -> Images {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_size());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Images {
            rows: self.rows,
            cols: self.cols,
            pixel_max: self.pixel_max,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits by position: image `i` is held out when `i % every == every - 1`, so every
    /// `every`-th image in load order is held out and the rest are for training. The rule
    /// needs no random numbers, and where a loader groups images by class (MNIST JSON) it
    /// holds out about `1 / every` of each class.
    ///
    /// # Panics
    /// When `every` is 0.
    pub fn split_every(&self, every: usize) -> TrainHeldOut {
        assert!(every > 0, "split_every: `every` must be at least 1");
        let (held, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|i| i % every == every - 1);
        TrainHeldOut { train: self.select(&train), held_out: self.select(&held) }
    }

    /// All pixels as `f32` intensities in [0, 1] (`pixel / pixel_max`), image after image.
    pub fn to_f32(&self) -> Vec<f32> {
        let scale = 1.0 / f32::from(self.pixel_max.max(1));
        self.pixels.iter().map(|&p| f32::from(p) * scale).collect()
    }

    /// How many images carry each label, indexed by label (length: the largest label + 1).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.iter().map(|&l| usize::from(l) + 1).max().unwrap_or(0)];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }
}
