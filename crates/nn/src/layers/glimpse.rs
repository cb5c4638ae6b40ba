//! The glimpse sensor ("retina") of the Recurrent Attention Model (Mnih et al. 2014,
//! "Recurrent Models of Visual Attention"; docs/ram.md, "The glimpse sensor"): around a
//! location it takes `scales` square patches of sides `g, 2g, 4g, ...`, each shrunk to
//! `g x g` by averaging, so the glimpse sees fine detail at the centre and coarse context
//! around it with a fixed number of values.

use attune_tensor::Tensor;

use crate::error::{NnError, Result};

const MODULE: &str = "GlimpseSensor";

/// The largest patch side accepted: far beyond any image, and small enough that every
/// coordinate computed from it is exact in f64 and fits in i64.
const MAX_SIDE: usize = 1 << 24;

/// The RAM glimpse sensor: `scales` patches of sides `size * 2^i` (`i = 0..scales`) centred at
/// a location, each area-downsampled (averaged over `2^i x 2^i` blocks) to `size x size`.
///
/// **Locations** are `(row, col)` in `[-1, 1]`, normalised per axis: `-1` is the top (left)
/// edge of the image, `+1` the bottom (right) edge, `0` the centre; along an axis of `n`
/// pixels, `l` is the continuous coordinate `y = (l + 1) / 2 * n`, where pixel `p` covers
/// `[p, p + 1)`. A patch of side `s` starts at pixel `round(y - s / 2)`, rounding halves up,
/// so it is the `s`-pixel window whose centre is nearest `y`, ties going down (right): at the
/// centre of a 6-pixel axis a 2-pixel patch is pixels 2 and 3 exactly, and at the centre of a
/// 5-pixel axis (y = 2.5, the middle of pixel 2) it is pixels 2 and 3.
///
/// **Padding**: pixels outside the image are 0 and count in the averages (a patch half off the
/// image averages its image half with zeros), as when the image is padded with zeros.
///
/// **Gradients**: none. The output is a new tensor outside the autograd graph. Locations are
/// sampled in the RAM and trained by REINFORCE (`crate::reinforce`), never by backpropagating
/// through the sensor, which is a piecewise-constant function of the location anyway; a
/// location that requires gradients is taken as a constant. Images are data, so images that
/// require gradients are refused rather than silently cut from the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlimpseSensor {
    size: usize,
    scales: usize,
}

impl GlimpseSensor {
    /// A sensor with `scales` patches of output side `size`; the largest patch has side
    /// `size * 2^(scales - 1)`. The paper uses `size` 8 with 1 scale on 28x28 MNIST and
    /// 12 with 3 scales on 60x60 cluttered MNIST.
    pub fn new(size: usize, scales: usize) -> Result<GlimpseSensor> {
        if size == 0 || scales == 0 {
            return Err(NnError::config(
                MODULE,
                format!(
                    "size {size} and scales {scales} must both be at least 1 (the paper's retina: size 8, 1 to 3 scales)"
                ),
            ));
        }
        let largest =
            u32::try_from(scales - 1).ok().and_then(|e| 1usize.checked_shl(e)).and_then(|f| f.checked_mul(size));
        if largest.is_none_or(|side| side > MAX_SIDE) {
            return Err(NnError::config(
                MODULE,
                format!(
                    "size {size} with {scales} scales makes a largest patch of side {size} * 2^{} > {MAX_SIDE} pixels; \
                     use fewer scales",
                    scales - 1
                ),
            ));
        }
        Ok(GlimpseSensor { size, scales })
    }

    /// The side `g` of every output patch.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of patches `k`.
    pub fn scales(&self) -> usize {
        self.scales
    }

    /// Values per glimpse, `k * g * g`: the width of the flattened output.
    pub fn out_dim(&self) -> usize {
        self.scales * self.size * self.size
    }

    /// Glimpses of `images (batch, rows, cols)` at `locations (batch, 2)` (`(row, col)` in
    /// `[-1, 1]`, see the type's docs): `(batch, scales, size, size)`, patch `i` being the one
    /// of side `size * 2^i`, in the images' dtype and on their device. Reshape to
    /// `(batch, out_dim())` for a flat glimpse vector.
    ///
    /// Errors: images not rank 3, with no pixels, not floating point or requiring gradients;
    /// locations not `(batch, 2)` of a float dtype, or with a value outside `[-1, 1]` (a
    /// sampled location must be clamped first, as the RAM does) or not finite.
    pub fn forward(&self, images: &Tensor, locations: &Tensor) -> Result<Tensor> {
        let (batch, rows, cols) = self.check(images, locations)?;
        let pixels = images.to_f64_vec()?;
        let locs = locations.detach().to_f64_vec()?;
        if let Some((k, v)) = locs.iter().enumerate().find(|(_, v)| !(-1.0..=1.0).contains(*v)) {
            return Err(NnError::input(
                MODULE,
                format!(
                    "location [{}][{}] is {v}, outside [-1, 1] (-1: top/left edge, +1: bottom/right edge); clamp \
                     sampled locations to [-1, 1] before the sensor",
                    k / 2,
                    k % 2
                ),
            ));
        }
        let g = self.size;
        let per_image = self.scales * g * g;
        let mut out = vec![0.0; batch * per_image];
        for (b, glimpse) in out.chunks_exact_mut(per_image).enumerate() {
            let image = &pixels[b * rows * cols..(b + 1) * rows * cols];
            for (scale, patch) in glimpse.chunks_exact_mut(g * g).enumerate() {
                self.patch(image, rows, cols, [locs[2 * b], locs[2 * b + 1]], scale, patch);
            }
        }
        let out = Tensor::from_vec(out, [batch, self.scales, g, g], &images.device())?;
        Ok(out.to_dtype(images.dtype())?)
    }

    /// Validates the shapes and dtypes; returns `(batch, rows, cols)`.
    fn check(&self, images: &Tensor, locations: &Tensor) -> Result<(usize, usize, usize)> {
        let &[batch, rows, cols] = images.dims() else {
            return Err(NnError::input(
                MODULE,
                format!(
                    "images must be (batch, rows, cols) with one channel, got {:?}; squeeze a channel dim of 1",
                    images.shape()
                ),
            ));
        };
        if rows == 0 || cols == 0 {
            return Err(NnError::input(
                MODULE,
                format!("images are {rows}x{cols}; a glimpse needs at least one pixel"),
            ));
        }
        for (what, t) in [("images", images), ("locations", locations)] {
            if !t.dtype().is_float() {
                return Err(NnError::input(
                    MODULE,
                    format!("{what} have dtype {:?}; convert to a float dtype (f32 or f64) first", t.dtype()),
                ));
            }
        }
        if images.requires_grad() {
            return Err(NnError::input(
                MODULE,
                "images require gradients, but the sensor passes none to them (images are data in the RAM); pass \
                 `images.detach()` if that is intended",
            ));
        }
        if locations.dims() != [batch, 2] {
            return Err(NnError::input(
                MODULE,
                format!(
                    "locations must be (batch, 2) = [{batch}, 2] (one (row, col) per image), got {:?}",
                    locations.shape()
                ),
            ));
        }
        Ok((batch, rows, cols))
    }

    /// Writes patch `scale` of `image (rows x cols)` at `loc` into `out (g x g)`.
    fn patch(&self, image: &[f64], rows: usize, cols: usize, loc: [f64; 2], scale: usize, out: &mut [f64]) {
        let g = self.size;
        // `new` bounds size * 2^(scales-1) by MAX_SIDE, so these are exact and cannot overflow.
        let factor = 1usize << scale;
        let side = g * factor;
        let r0 = patch_start(loc[0], rows, side);
        let c0 = patch_start(loc[1], cols, side);
        let area = (factor * factor) as f64;
        for u in 0..g {
            // Only the part of each block inside the image is summed: the rest is zero
            // padding, and skipping it bounds the work by the image's size, not the patch's.
            let rs = clip(r0 + (u * factor) as i64, factor, rows);
            for v in 0..g {
                let cs = clip(c0 + (v * factor) as i64, factor, cols);
                let mut sum = 0.0;
                for r in rs.clone() {
                    sum += image[r * cols + cs.start..r * cols + cs.end].iter().sum::<f64>();
                }
                out[u * g + v] = sum / area;
            }
        }
    }
}

/// The first pixel of the `side`-pixel window whose centre is nearest the continuous
/// coordinate of location `l` on an axis of `n` pixels, halves rounded up.
fn patch_start(l: f64, n: usize, side: usize) -> i64 {
    let y = (l + 1.0) * 0.5 * n as f64;
    (y - side as f64 * 0.5 + 0.5).floor() as i64
}

/// The pixels of `[start, start + len)` that lie in `0..n` (possibly none).
fn clip(start: i64, len: usize, n: usize) -> std::ops::Range<usize> {
    let lo = start.clamp(0, n as i64) as usize;
    let hi = (start + len as i64).clamp(0, n as i64) as usize;
    lo..hi.max(lo)
}
