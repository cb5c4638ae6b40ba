//! Reading inputs in place and writing outputs: element conversion to and from the f32
//! compute type, strided views of `(batch, heads, seq, head_dim)` tensors with unit stride on
//! head_dim, tile loads, and the safe split of output buffers into disjoint per-task slices.

use crate::error::{AttentionError, Result};
use crate::params::Segment;
use attune_tensor::{FloatElem, Tensor};
use half::{bf16, f16};

/// Input element types: f32 is read in place, f16/bf16/f64 are converted to f32 tile by tile
/// (f64 inputs are therefore computed in f32; the f64 oracle is the f64 implementation).
pub trait Elem: FloatElem {
    /// The buffer itself when it already holds f32.
    fn direct(s: &[Self]) -> Option<&[f32]>;
    /// The buffer itself, writable, when it already holds f32.
    fn direct_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The buffer itself when it holds bf16 (the elements the bf16 dot-product path reads).
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
    /// `dst[i] = src[i] as f32` over `dst.len()` elements.
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// `dst[i] = src[i]` rounded to the element type.
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }
}

impl Elem for f32 {
    fn direct(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    fn direct_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn widen(src: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
    }
    fn narrow(src: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
    }
}
impl Elem for f16 {
    fn direct(_: &[f16]) -> Option<&[f32]> {
        None
    }
    fn direct_mut(_: &mut [f16]) -> Option<&mut [f32]> {
        None
    }
}
impl Elem for bf16 {
    fn direct(_: &[bf16]) -> Option<&[f32]> {
        None
    }
    fn as_bf16(s: &[bf16]) -> Option<&[bf16]> {
        Some(s)
    }
    fn direct_mut(_: &mut [bf16]) -> Option<&mut [f32]> {
        None
    }
}
impl Elem for f64 {
    fn direct(_: &[f64]) -> Option<&[f32]> {
        None
    }
    fn direct_mut(_: &mut [f64]) -> Option<&mut [f32]> {
        None
    }
}

/// A `(batch, heads, seq, head_dim)` tensor read in place: element `(b, h, s, x)` is
/// `data[off + b * sb + h * sh + s * ss + x]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    data: &'a [T],
    off: usize,
    sb: usize,
    sh: usize,
    ss: usize,
    d: usize,
}

impl<'a, T: Elem> View<'a, T> {
    /// A view of `t` over its storage slice `data`. `t` must have unit stride on its last dim
    /// (the caller makes it contiguous otherwise). Checks that every element lies in `data`.
    pub fn new(name: &str, t: &Tensor, data: &'a [T]) -> Result<Self> {
        let (dims, st) = (t.dims(), t.stride());
        let off = t.layout().offset();
        let [_, _, _, d] = [dims[0], dims[1], dims[2], dims[3]];
        if t.elem_count() > 0 {
            let last = off + dims.iter().zip(st).map(|(&n, &s)| (n - 1) * s).sum::<usize>();
            if last >= data.len() || (d > 1 && st[3] != 1) {
                return Err(AttentionError::Shape(format!(
                    "{name} with shape {dims:?}, strides {st:?} and offset {off} does not fit its buffer of {} elements \
                     with unit head_dim stride; pass a contiguous tensor",
                    data.len()
                )));
            }
        }
        Ok(View { data, off, sb: st[0], sh: st[1], ss: st[2], d })
    }

    /// Index of element `(b, h, s, 0)`.
    #[inline]
    pub fn at(&self, b: usize, h: usize, s: usize) -> usize {
        self.off + b * self.sb + h * self.sh + s * self.ss
    }

    /// The same view over bf16 elements, when `T` is bf16.
    pub fn as_bf16(&self) -> Option<View<'a, bf16>> {
        let View { data, off, sb, sh, ss, d } = *self;
        T::as_bf16(data).map(|data| View { data, off, sb, sh, ss, d })
    }

    /// The head dim (elements per row).
    #[inline]
    pub fn head_dim(&self) -> usize {
        self.d
    }

    /// Rows `s0 .. s0 + rows` of `(b, h)` in place (`rows >= 1`): the buffer from the first
    /// row's start to the last row's end, and the row stride.
    pub fn span(&self, b: usize, h: usize, s0: usize, rows: usize) -> (&'a [T], usize) {
        let start = self.at(b, h, s0);
        (&self.data[start..self.at(b, h, s0 + rows - 1) + self.d], self.ss)
    }

    /// Row `(b, h, s, ..)`.
    #[inline]
    pub fn row(&self, b: usize, h: usize, s: usize) -> &'a [T] {
        &self.data[self.at(b, h, s)..][..self.d]
    }

    /// Rows `s0 .. s0 + rows` of `(b, h)` as f32 with their row stride: the input itself
    /// when it is f32, else converted into `buf` (row stride head_dim).
    pub fn rows<'b>(&self, b: usize, h: usize, s0: usize, rows: usize, buf: &'b mut [f32]) -> (&'b [f32], usize)
    where
        'a: 'b,
    {
        let d = self.d;
        if rows == 0 || d == 0 {
            return (&buf[..0], d);
        }
        if let Some(all) = T::direct(self.data) {
            let start = self.at(b, h, s0);
            let end = self.at(b, h, s0 + rows - 1) + d;
            return (&all[start..end], self.ss);
        }
        for r in 0..rows {
            T::widen(self.row(b, h, s0 + r), &mut buf[r * d..][..d]);
        }
        (&buf[..rows * d], d)
    }

    /// Rows `s0 .. s0 + rows` transposed and scaled into `dst[x * ld + r]` (`x < head_dim`).
    #[allow(clippy::too_many_arguments)]
    pub fn load_t(&self, b: usize, h: usize, s0: usize, rows: usize, scale: f32, dst: &mut [f32], ld: usize) {
        for r in 0..rows {
            for (x, v) in self.row(b, h, s0 + r).iter().enumerate() {
                dst[x * ld + r] = v.to_f32() * scale;
            }
        }
    }
}

/// Splits a `(batch, heads, seq, width)` row-major buffer into the rows of each segment:
/// returns `(head, segment index, slice of span.1 rows)` for every segment of every head,
/// in the order (batch, head, segment), where `span(seg) = (first row, rows)`. Segments of
/// one batch entry come sorted and disjoint from `validate`.
pub fn split_segments<'a, T>(
    mut buf: &'a mut [T],
    batch: usize,
    heads: usize,
    seq: usize,
    width: usize,
    segs: &[Segment],
    span: impl Fn(&Segment) -> (usize, usize),
) -> Vec<(usize, usize, &'a mut [T])> {
    let mut parts = Vec::new();
    for b in 0..batch {
        for h in 0..heads {
            let (mut block, rest) = std::mem::take(&mut buf).split_at_mut(seq * width);
            buf = rest;
            let mut pos = 0;
            for (si, seg) in segs.iter().enumerate().filter(|(_, s)| s.batch == b) {
                let (start, len) = span(seg);
                let (_, tail) = std::mem::take(&mut block).split_at_mut((start - pos) * width);
                let (mine, tail) = tail.split_at_mut(len * width);
                block = tail;
                pos = start + len;
                parts.push((h, si, mine));
            }
        }
    }
    parts
}

/// Splits `rows * width` elements into consecutive tiles of `tile` rows (the last shorter):
/// `(first row, rows, slice)`.
pub fn tiles<T>(mut buf: &mut [T], rows: usize, width: usize, tile: usize) -> Vec<(usize, usize, &mut [T])> {
    let mut out = Vec::with_capacity(rows.div_ceil(tile));
    let mut t0 = 0;
    while t0 < rows {
        let n = tile.min(rows - t0);
        let (mine, rest) = std::mem::take(&mut buf).split_at_mut(n * width);
        buf = rest;
        out.push((t0, n, mine));
        t0 += n;
    }
    out
}
