//! A convolutional stem for the Vision Transformer (a "hybrid" ViT; Xiao et al. 2021, "Early
//! convolutions help transformers see better"): 3x3 convolutions, zero padding 1, each followed
//! by GELU (the erf form, `nn.GELU()`'s), turn a one-channel image into a feature map that [`super::patches::PatchEmbedding`]
//! then cuts into patches. The patches keep their size in pixels, so a stem changes what a
//! token sees (a receptive field past its patch, non-linear features) but not the token count,
//! the positions or the plots.
//!
//! A convolution is a gather and a linear map: the feature map `(batch, rows * cols, channels)`
//! gets one zero position appended, each output position gathers its 3x3 neighbourhood (the
//! zero position where the neighbour is off the map), and `weight (out, 9 * in)` maps the
//! gathered `(ky, kx, channel)` values, in that order, to the output channels. The PyTorch peer
//! (benches/peers/torch_train.py) holds the same weights as `Conv2d` kernels.

use attune_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layers::linear::Linear;
use crate::store::ParamBuilder;

/// The side of every stem kernel.
pub const KERNEL: usize = 3;

/// One 3x3 convolution of the stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StemConv {
    /// Output channels.
    pub channels: usize,
    /// Step between output positions (1 keeps the map's size, 2 halves it).
    pub stride: usize,
}

impl StemConv {
    /// Parses the command-line form `C[:S]` (channels, then an optional stride, default 1).
    pub fn parse(text: &str) -> Result<StemConv> {
        let bad = || {
            NnError::config(
                "StemConv",
                format!(
                    "stem layer {text:?} must be CHANNELS or CHANNELS:STRIDE with positive integers, e.g. 32 or 64:2"
                ),
            )
        };
        let (c, s) = text.split_once(':').unwrap_or((text, "1"));
        let channels: usize = c.trim().parse().map_err(|_| bad())?;
        let stride: usize = s.trim().parse().map_err(|_| bad())?;
        if channels == 0 || stride == 0 {
            return Err(bad());
        }
        Ok(StemConv { channels, stride })
    }
}

/// Parses a stem written `C[:S],C[:S],...` (e.g. `32,64:2`); `none` or an empty text is no stem.
pub fn parse_list(text: &str) -> Result<Vec<StemConv>> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',').map(StemConv::parse).collect()
}

/// The product of a stem's strides: how many pixels one feature-map position steps over.
pub fn total_stride(layers: &[StemConv]) -> usize {
    layers.iter().map(|l| l.stride).product()
}

/// Checks that every stride divides the map it steps over, so the final map is exactly
/// `rows / total_stride` by `cols / total_stride`.
pub fn validate(layers: &[StemConv], rows: usize, cols: usize) -> Result<()> {
    let (mut r, mut c) = (rows, cols);
    for (i, l) in layers.iter().enumerate() {
        if l.channels == 0 || l.stride == 0 || !r.is_multiple_of(l.stride) || !c.is_multiple_of(l.stride) {
            return Err(NnError::config(
                "ConvStem",
                format!(
                    "stem layer {i} ({} channels, stride {}) must have positive channels and a stride dividing its {r}x{c} input",
                    l.channels, l.stride
                ),
            ));
        }
        r /= l.stride;
        c /= l.stride;
    }
    Ok(())
}

/// For a `rows x cols` map and a stride, the gather of every output position's 3x3
/// neighbourhood, row by row and `(ky, kx)` within a position: indices into the map's
/// positions, `rows * cols` (the appended zero position) where a neighbour is off the map.
pub fn neighbourhoods(rows: usize, cols: usize, stride: usize) -> Vec<usize> {
    let pad = KERNEL / 2;
    let mut out = Vec::with_capacity(rows.div_ceil(stride) * cols.div_ceil(stride) * KERNEL * KERNEL);
    for r in (0..rows).step_by(stride) {
        for c in (0..cols).step_by(stride) {
            for ky in 0..KERNEL {
                for kx in 0..KERNEL {
                    let (y, x) = ((r + ky).checked_sub(pad), (c + kx).checked_sub(pad));
                    out.push(match (y, x) {
                        (Some(y), Some(x)) if y < rows && x < cols => y * cols + x,
                        _ => rows * cols,
                    });
                }
            }
        }
    }
    out
}

/// One convolution: its gather ([`neighbourhoods`], 9 indices per output position) and its
/// `(out, 9 * in)` linear map.
#[derive(Debug, Clone)]
struct Conv {
    gather: Vec<i64>,
    proj: Linear,
}

/// The stem's layers, each a 3x3 convolution and GELU (parameters `<i>.weight`, `<i>.bias`).
#[derive(Debug, Clone)]
pub struct ConvStem {
    convs: Vec<Conv>,
}

impl ConvStem {
    /// Creates the layers for `rows x cols` one-channel images under `pb`.
    pub fn new(pb: &ParamBuilder, layers: &[StemConv], rows: usize, cols: usize) -> Result<ConvStem> {
        validate(layers, rows, cols)?;
        let (mut r, mut c, mut channels) = (rows, cols, 1);
        let mut convs = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let gather = neighbourhoods(r, c, l.stride).into_iter().map(|i| i as i64).collect();
            let proj = Linear::new(&pb.sub(i), KERNEL * KERNEL * channels, l.channels, true)?;
            convs.push(Conv { gather, proj });
            (r, c, channels) = (r / l.stride, c / l.stride, l.channels);
        }
        Ok(ConvStem { convs })
    }

    /// Maps `images (batch, rows, cols)` to the feature map `(batch, rows' * cols', channels)`,
    /// positions row by row.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let b = images.dims()[0];
        let mut x = images.reshape([b, images.dims()[1] * images.dims()[2], 1])?;
        for conv in &self.convs {
            let positions = conv.gather.len() / (KERNEL * KERNEL);
            let idx = Tensor::from_vec(conv.gather.clone(), [conv.gather.len()], &x.device())?;
            let window = x.pad_with_zeros(1usize, 0, 1)?.index_select(1usize, &idx)?;
            let window = window.reshape([b, positions, KERNEL * KERNEL * x.dims()[2]])?;
            x = conv.proj.forward(&window)?.gelu_erf()?;
        }
        Ok(x)
    }
}
