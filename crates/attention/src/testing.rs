//! The one generated attention test case (test-only: behind the `testing` feature, which
//! release builds leave off). [`GridCase`] describes a problem — geometry, dtype, parameters,
//! x20 outlier rows, memory layout — and [`normals`] generates its inputs; the crate's tests
//! and `cargo xtask parity`'s grids both build on them (docs/testing.md, bug-finding inputs).
//! [`GridCase::build`] turns one into a checkable [`Case`] with the f64 oracle's expected
//! values.

use crate::cases::{Case, DEFAULT_ATOL, Tolerances};
use crate::error::Result;
use crate::oracle;
use crate::params::AttentionParams;
use attune_tensor::{DType, Device, Rng, Tensor};

/// Dropout stream of the builder's [`GridCase::dropout`]: `(seed, offset)`.
const GRID_DROPOUT_STREAM: (u64, u64) = (0xD50F, 7);

/// How q, k and v are laid out in memory (all are viewed as `(batch, heads, seq, head_dim)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `(batch, heads, seq, head_dim)` contiguous.
    Bhsd,
    /// `(batch, seq, heads, head_dim)` memory (a fused QKV projection), a strided view.
    Bshd,
    /// `(batch, heads, head_dim, seq)` memory transposed: head_dim's stride is not 1.
    Bhds,
}

impl Layout {
    /// The memory order of the logical dims.
    pub const fn perm(self) -> [usize; 4] {
        match self {
            Layout::Bhsd => [0, 1, 2, 3],
            Layout::Bshd => [0, 2, 1, 3],
            Layout::Bhds => [0, 1, 3, 2],
        }
    }
}

/// `t` (logical `(b, h, s, d)`) on `dev`, laid out in memory as `perm` of its dims and viewed
/// back as `(b, h, s, d)` (strided unless `perm` is the identity).
pub fn in_memory_order(t: &Tensor, perm: [usize; 4], dev: &Device) -> Result<Tensor> {
    let mut inv = [0; 4];
    for (i, &x) in perm.iter().enumerate() {
        inv[x] = i;
    }
    Ok(t.permute(perm)?.contiguous()?.to_device(dev)?.permute(inv)?)
}

/// Seeded standard normals `(b, h, s, d)` on the CPU, rounded to `dtype`; with `outliers`, the
/// rows `s % 5 == 2` of every head are scaled by 20 (x20 outlier logits when applied to q).
/// The one input generator of the attention tests and grids.
pub fn normals(shape: [usize; 4], seed: u64, dtype: DType, outliers: bool) -> Result<Tensor> {
    let [_, _, s, d] = shape;
    let cpu = Device::Cpu;
    let mut x = Rng::new(seed).randn(shape, DType::F32, &cpu)?.to_vec::<f32>()?;
    if outliers {
        for (row, chunk) in x.chunks_mut(d.max(1)).enumerate() {
            if (row % s.max(1)) % 5 == 2 {
                chunk.iter_mut().for_each(|v| *v *= 20.0);
            }
        }
    }
    Ok(Tensor::from_vec(x, shape, &cpu)?.to_dtype(dtype)?)
}

/// One generated attention problem.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCase {
    /// An explicit name (tests); empty: [`GridCase::name`] derives one from the features.
    pub name: String,
    /// Input dtype (tests may run a case in other dtypes too).
    pub dtype: DType,
    /// Batch.
    pub batch: usize,
    /// Query heads.
    pub heads_q: usize,
    /// Key/value heads.
    pub heads_kv: usize,
    /// Query length (packed total with varlen).
    pub seq_q: usize,
    /// Key length (packed total with varlen).
    pub seq_k: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Masks, softcap, padding, varlen, dropout, determinism.
    pub params: AttentionParams,
    /// Every fifth query row x20 (rows of large logits), see [`normals`].
    pub outliers: bool,
    /// The memory layout of q, k and v.
    pub layout: Layout,
    /// Rows stored `head_dim + 1` apart (a narrowed view), not 16-byte aligned: the kernels'
    /// scalar load path (placement is up to the test that sets it).
    pub padded: bool,
    /// Check the backward pass too.
    pub backward: bool,
}

impl GridCase {
    /// A plain f32 case `(b, hq, hkv, sq, sk, d)` with forward and backward, named by its
    /// features.
    pub fn new(b: usize, hq: usize, hkv: usize, sq: usize, sk: usize, d: usize) -> Self {
        GridCase {
            name: String::new(),
            dtype: DType::F32,
            batch: b,
            heads_q: hq,
            heads_kv: hkv,
            seq_q: sq,
            seq_k: sk,
            head_dim: d,
            params: AttentionParams::new(),
            outliers: false,
            layout: Layout::Bhsd,
            padded: false,
            backward: true,
        }
    }

    /// A named case with explicit parameters (the tests' form).
    #[allow(clippy::too_many_arguments)]
    pub fn named(
        name: &str,
        b: usize,
        hq: usize,
        hkv: usize,
        sq: usize,
        sk: usize,
        d: usize,
        params: AttentionParams,
    ) -> Self {
        GridCase { name: name.into(), params, ..GridCase::new(b, hq, hkv, sq, sk, d) }
    }

    /// In `dt`.
    pub fn dtype(mut self, dt: DType) -> Self {
        self.dtype = dt;
        self
    }
    /// Causal.
    pub fn causal(mut self) -> Self {
        self.params.causal = true;
        self
    }
    /// Sliding window `(l, r)`.
    pub fn window(mut self, l: i64, r: i64) -> Self {
        self.params.window = Some((l, r));
        self
    }
    /// Softcap `c`.
    pub fn softcap(mut self, c: f64) -> Self {
        self.params.softcap = Some(c);
        self
    }
    /// Key padding lengths.
    pub fn seqlens(mut self, l: &[usize]) -> Self {
        self.params.seqlens_k = Some(l.to_vec());
        self
    }
    /// Packed sequences; batch must be 1.
    pub fn varlen(mut self, q: &[usize], k: &[usize]) -> Self {
        self.params.cu_seqlens = Some((q.to_vec(), k.to_vec()));
        self
    }
    /// Dropout probability `p` on a fixed Philox stream.
    pub fn dropout(mut self, p: f64) -> Self {
        let (seed, offset) = GRID_DROPOUT_STREAM;
        self.params = self.params.dropout(p, seed, offset);
        self
    }
    /// Deterministic backward (GPU devices: dQ without atomics).
    pub fn deterministic(mut self) -> Self {
        self.params.deterministic = true;
        self
    }
    /// Forward only.
    pub fn fwd_only(mut self) -> Self {
        self.backward = false;
        self
    }
    /// x20 outlier query rows.
    pub fn outliers(mut self) -> Self {
        self.outliers = true;
        self
    }
    /// `(batch, seq, heads, dim)` memory.
    pub fn bshd(mut self) -> Self {
        self.layout = Layout::Bshd;
        self
    }
    /// Memory layout `layout`.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Unaligned rows (see [`GridCase::padded`]).
    pub fn padded(mut self) -> Self {
        self.padded = true;
        self
    }

    /// The explicit name, or one derived from the geometry then the features.
    pub fn name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let p = &self.params;
        let mut n = format!("b{}h{}", self.batch, self.heads_q);
        if self.heads_kv != self.heads_q {
            n += &format!("kv{}", self.heads_kv);
        }
        n += &format!("_q{}k{}_d{}", self.seq_q, self.seq_k, self.head_dim);
        if p.causal {
            n += "_causal";
        }
        if let Some((l, r)) = p.window {
            n += &format!("_win{l},{r}");
        }
        if let Some(c) = p.softcap {
            n += &format!("_cap{c}");
        }
        if let Some(l) = &p.seqlens_k {
            n += &format!("_pad{}", l.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
        }
        if p.cu_seqlens.is_some() {
            n += "_varlen";
        }
        if let Some(d) = p.dropout {
            n += &format!("_drop{}", d.p);
        }
        if self.outliers {
            n += "_x20";
        }
        if self.layout == Layout::Bshd {
            n += "_bshd";
        }
        if p.deterministic {
            n += "_det";
        }
        if !self.backward {
            n += "_fwd";
        }
        n
    }

    /// A seed from the name (so adding a case changes no other case's inputs).
    pub fn seed(&self) -> u64 {
        self.name().bytes().fold(17u64, |h, x| h.wrapping_mul(31).wrapping_add(x as u64))
    }

    /// The CPU q, k, v in `dtype`, logical `(b, h, s, d)` and contiguous, from [`Self::seed`].
    pub fn qkv(&self, dtype: DType) -> Result<[Tensor; 3]> {
        self.qkv_from(dtype, self.seed())
    }

    /// [`Self::qkv`] from `seed`: seeds `seed`, `+1`, `+2`; outlier rows in q only.
    pub fn qkv_from(&self, dtype: DType, seed: u64) -> Result<[Tensor; 3]> {
        let (b, d) = (self.batch, self.head_dim);
        Ok([
            normals([b, self.heads_q, self.seq_q, d], seed, dtype, self.outliers)?,
            normals([b, self.heads_kv, self.seq_k, d], seed + 1, dtype, false)?,
            normals([b, self.heads_kv, self.seq_k, d], seed + 2, dtype, false)?,
        ])
    }

    /// The output gradient in `dtype` from `seed` (`seed + 3`, after q, k and v).
    pub fn dout_from(&self, dtype: DType, seed: u64) -> Result<Tensor> {
        normals([self.batch, self.heads_q, self.seq_q, self.head_dim], seed + 3, dtype, false)
    }

    /// Builds the case in its dtype and layout: inputs from `seed`, expected values from the
    /// oracle.
    pub fn build(&self, seed: u64) -> Result<Case> {
        let cpu = Device::Cpu;
        let place = |t: Tensor| in_memory_order(&t, self.layout.perm(), &cpu);
        let [q, k, v] = self.qkv_from(self.dtype, seed)?;
        let (q, k, v) = (place(q)?, place(k)?, place(v)?);
        let params = self.params.clone();
        let f = oracle::forward(&q, &k, &v, &params)?;
        let (mut dout, mut dq, mut dk, mut dv) = (None, None, None, None);
        if self.backward {
            let g = self.dout_from(self.dtype, seed)?;
            let b = oracle::backward(&q, &k, &v, &g, &params)?;
            (dout, dq, dk, dv) = (Some(g), Some(b.dq), Some(b.dk), Some(b.dv));
        }
        Ok(Case {
            name: self.name(),
            q,
            k,
            v,
            params,
            out: f.out,
            lse: Some(f.lse),
            dout,
            dq,
            dk,
            dv,
            tol: self.tolerances(),
        })
    }

    /// The f32 tolerances of docs/attention.md are for unit-scale inputs. Outlier rows multiply
    /// q by 20, and dk = scale * sum_i dS_ij q_i inherits that factor, so its absolute tolerance
    /// does too. So does the output's: an f32 dot product q.k carries an absolute error of
    /// about eps * |q| |k| sqrt(d), twenty times larger on those rows, and exp turns it into a
    /// relative error of the probabilities. (Measured on the CPU flash kernel at seq 1000,
    /// d 128, causal: 1.3e-6 on unit rows and 3-5e-5 on outlier rows; a reference that takes
    /// its dot products in f64 stays 6x lower on both, so this is the f32 accumulation, not a
    /// bug.) Low-precision cases keep the relative FlashAttention criterion.
    pub fn tolerances(&self) -> Tolerances {
        if self.outliers && self.dtype == DType::F32 {
            let atol = 20.0 * DEFAULT_ATOL;
            Tolerances { atol: Some(atol), atol_dk: Some(atol), ..Tolerances::default() }
        } else {
            Tolerances::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_rows_are_every_fifth_row_of_each_head_times_20() {
        let plain = normals([1, 2, 12, 4], 5, DType::F32, false).unwrap().to_vec::<f32>().unwrap();
        let out = normals([1, 2, 12, 4], 5, DType::F32, true).unwrap().to_vec::<f32>().unwrap();
        for (i, (p, o)) in plain.iter().zip(&out).enumerate() {
            let row = (i / 4) % 12;
            assert_eq!(*o, if row % 5 == 2 { 20.0 * p } else { *p }, "element {i}");
        }
    }

    #[test]
    fn layouts_are_strided_views_of_the_same_values() {
        let t = normals([2, 3, 5, 4], 1, DType::F32, false).unwrap();
        for l in [Layout::Bhsd, Layout::Bshd, Layout::Bhds] {
            let v = in_memory_order(&t, l.perm(), &Device::Cpu).unwrap();
            assert_eq!(v.dims(), t.dims());
            assert_eq!(v.is_contiguous(), l == Layout::Bhsd, "{l:?}");
            assert_eq!(v.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap(), "{l:?}");
        }
    }
}
