//! The Vision Transformer's front end: an image `(batch, rows, cols)` cut into square patches
//! (`size` pixels a side, a new one every `stride` pixels, so patches overlap when
//! `stride < size`), each flattened row by row and mapped to `d_model` by one linear layer,
//! `patch_embed` (a convolution with kernel `size` and stride `stride`, as ViT writes it).
//!
//! Patches are numbered row by row: patch `n` has its top-left pixel at
//! `(n / per_row * stride, n % per_row * stride)`; [`PatchSpec::indices`] is the one place that
//! layout is stated, and plots map attention over patches back to pixels with it.

use attune_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layers::linear::Linear;
use crate::layers::stem::{self, ConvStem, StemConv};
use crate::store::ParamBuilder;

/// How a one-channel image is cut into patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSpec {
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
    /// Patch side in pixels.
    pub size: usize,
    /// Pixels between the top-left corners of neighbouring patches (`size`: no overlap).
    pub stride: usize,
}

impl PatchSpec {
    /// Checks that the patches tile the image exactly: `size <= rows, cols`, `stride >= 1`,
    /// and `(rows - size)` and `(cols - size)` divisible by `stride`.
    pub fn validate(&self) -> Result<()> {
        let PatchSpec { rows, cols, size, stride } = *self;
        if size == 0 || stride == 0 || size > rows || size > cols {
            return Err(NnError::config(
                "PatchSpec",
                format!(
                    "patch size {size} and stride {stride} must be positive and size at most the image's {rows}x{cols}"
                ),
            ));
        }
        if !(rows - size).is_multiple_of(stride) || !(cols - size).is_multiple_of(stride) {
            return Err(NnError::config(
                "PatchSpec",
                format!(
                    "patches of {size} every {stride} pixels do not tile a {rows}x{cols} image: (side - size) must divide by the stride (e.g. size 4 stride 4, or size 7 stride 3 on 28x28)"
                ),
            ));
        }
        Ok(())
    }

    /// Patches down the image (saturating, so a spec that fails [`Self::validate`] still counts).
    pub fn per_col(&self) -> usize {
        self.rows.saturating_sub(self.size) / self.stride.max(1) + 1
    }

    /// Patches across the image.
    pub fn per_row(&self) -> usize {
        self.cols.saturating_sub(self.size) / self.stride.max(1) + 1
    }

    /// Patches per image: the sequence length the transformer sees.
    pub fn count(&self) -> usize {
        self.per_col() * self.per_row()
    }

    /// Pixels per patch: the input width of `patch_embed`.
    pub fn pixels(&self) -> usize {
        self.size * self.size
    }

    /// The top-left pixel `(row, col)` of patch `n`.
    pub fn origin(&self, n: usize) -> (usize, usize) {
        (n / self.per_row() * self.stride, n % self.per_row() * self.stride)
    }

    /// For each patch in order, the row-major indices into one image of its pixels, row by row:
    /// `count() * pixels()` values, the gather that turns an image into its patch sequence.
    pub fn indices(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.count() * self.pixels());
        for n in 0..self.count() {
            let (r0, c0) = self.origin(n);
            for r in r0..r0 + self.size {
                out.extend((c0..c0 + self.size).map(|c| r * self.cols + c));
            }
        }
        out
    }

    /// Checks that `images` is `(batch, rows, cols)` of this spec; `op` names the caller.
    fn check_images(&self, images: &Tensor, op: &'static str) -> Result<()> {
        self.validate()?;
        if images.rank() != 3 || images.dims()[1] != self.rows || images.dims()[2] != self.cols {
            return Err(NnError::input(
                op,
                format!("images must be (batch, {}, {}), got {:?}", self.rows, self.cols, images.shape()),
            ));
        }
        Ok(())
    }

    /// Cuts `images (batch, rows, cols)` into `(batch, count, pixels)`.
    pub fn patchify(&self, images: &Tensor) -> Result<Tensor> {
        self.check_images(images, "PatchSpec::patchify")?;
        let b = images.dims()[0];
        self.cut(&images.reshape([b, self.rows * self.cols, 1])?)
    }

    /// Cuts a map `(batch, rows * cols, channels)`, positions row by row, into
    /// `(batch, count, pixels * channels)`: each patch's positions row by row, channels fastest.
    fn cut(&self, map: &Tensor) -> Result<Tensor> {
        let (b, c) = (map.dims()[0], map.dims()[2]);
        let idx: Vec<i64> = self.indices().into_iter().map(|i| i as i64).collect();
        let idx = Tensor::from_vec(idx, [self.count() * self.pixels()], &map.device())?;
        Ok(map.index_select(1usize, &idx)?.reshape([b, self.count(), self.pixels() * c])?)
    }
}

/// [`PatchSpec::patchify`] followed by the linear map `patch_embed` to `d_model`; with a
/// [`ConvStem`] (`patch_embed.stem`), the patches are cut from the stem's feature map instead,
/// each still covering the same pixels.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    spec: PatchSpec,
    /// The stem and the patches of its feature map (boxed: most ViTs have none, and the
    /// model's size stays that of the plain one).
    stem: Option<Box<(ConvStem, PatchSpec)>>,
    proj: Linear,
}

impl PatchEmbedding {
    /// Creates `weight (d_model, size*size)` and `bias` under `pb`; with `stem` layers, those
    /// layers and `weight (d_model, (size/s)^2 * channels)` where `s` is the stem's total stride,
    /// which must divide the patch size and stride.
    pub fn new(pb: &ParamBuilder, spec: PatchSpec, stem: &[StemConv], d_model: usize) -> Result<PatchEmbedding> {
        spec.validate()?;
        if stem.is_empty() {
            return Ok(PatchEmbedding { spec, stem: None, proj: Linear::new(pb, spec.pixels(), d_model, true)? });
        }
        let s = stem::total_stride(stem);
        stem::validate(stem, spec.rows, spec.cols)?;
        if !spec.size.is_multiple_of(s) || !spec.stride.is_multiple_of(s) {
            return Err(NnError::config(
                "PatchEmbedding",
                format!(
                    "the stem's strides multiply to {s}, which must divide the patch size {} and stride {} (e.g. patch 4 with strides 1 and 2)",
                    spec.size, spec.stride
                ),
            ));
        }
        let on_map =
            PatchSpec { rows: spec.rows / s, cols: spec.cols / s, size: spec.size / s, stride: spec.stride / s };
        // `weight` and `bias` before the stem's: the order of the peer's state_dict.
        let channels = stem.last().map_or(1, |l| l.channels);
        let proj = Linear::new(pb, on_map.pixels() * channels, d_model, true)?;
        let conv = ConvStem::new(&pb.sub("stem"), stem, spec.rows, spec.cols)?;
        Ok(PatchEmbedding { spec, stem: Some(Box::new((conv, on_map))), proj })
    }

    /// The patch layout.
    pub fn spec(&self) -> &PatchSpec {
        &self.spec
    }

    /// Embeds `images (batch, rows, cols)` as `(batch, count, d_model)`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        if !images.dtype().is_float() {
            return Err(NnError::input(
                "PatchEmbedding",
                format!("images must be floating point intensities, got {}", images.dtype()),
            ));
        }
        let Some((conv, on_map)) = self.stem.as_deref() else {
            return self.proj.forward(&self.spec.patchify(images)?);
        };
        self.spec.check_images(images, "PatchEmbedding")?;
        self.proj.forward(&on_map.cut(&conv.forward(images)?)?)
    }
}
