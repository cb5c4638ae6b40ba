//! What the emulator kernel tests (gpu_bwd, gpu_fwd_mma, gpu_fwd_simt) share: the `Case`
//! description of one attention problem, its seeded inputs (with x20 outlier rows) and their
//! placement on the emulator in a chosen memory layout (flash.rs uses its segment case list).
//! Each test file uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use attune_attention::AttentionParams;
use attune_tensor::{DType, Device, Rng, Tensor};

pub const CPU: Device = Device::Cpu;
pub const EMU: Device = Device::Emu;

/// The memory order `(batch, seq, heads, dim)` of a logical `(batch, heads, seq, dim)` tensor.
pub const BSHD: [usize; 4] = [0, 2, 1, 3];
/// Logical order: contiguous `(batch, heads, seq, dim)` memory.
pub const BHSD: [usize; 4] = [0, 1, 2, 3];

/// One attention problem: `b` batches, `hq`/`hkv` query/key heads, `sq`/`sk` queries/keys,
/// head dim `d`.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub params: AttentionParams,
    /// Every fifth query row x20 (rows of large logits).
    pub outliers: bool,
    /// q, k, v as `(batch, seq, heads, dim)` memory viewed as `(batch, heads, seq, dim)`
    /// (gpu_bwd also lays dout out as `(seq, batch, heads, dim)` memory).
    pub bshd: bool,
    /// Rows stored `head_dim + 1` apart (a narrowed view): not 16-byte aligned, so the kernels
    /// take their scalar load path (gpu_fwd_simt).
    pub padded: bool,
    /// The input dtype where the case carries it (gpu_fwd_simt); f32 unless set.
    pub dtype: DType,
}

#[allow(clippy::too_many_arguments)]
pub fn case(
    name: &str,
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    params: AttentionParams,
) -> Case {
    Case {
        name: name.into(),
        b,
        hq,
        hkv,
        sq,
        sk,
        d,
        params,
        outliers: false,
        bshd: false,
        padded: false,
        dtype: DType::F32,
    }
}

impl Case {
    pub fn outliers(mut self) -> Self {
        self.outliers = true;
        self
    }
    pub fn bshd(mut self) -> Self {
        self.bshd = true;
        self
    }
    pub fn padded(mut self) -> Self {
        self.padded = true;
        self
    }
    pub fn dtype(mut self, dt: DType) -> Self {
        self.dtype = dt;
        self
    }
    /// The case's seed, a hash of its name (so adding a case changes no other case's inputs).
    pub fn seed(&self) -> u64 {
        self.name.bytes().fold(17u64, |h, x| h.wrapping_mul(31).wrapping_add(x as u64))
    }
    /// The CPU q, k, v in `dtype`: seeds `seed()`, `+1`, `+2`; outlier rows in q only.
    pub fn qkv(&self, dtype: DType) -> [Tensor; 3] {
        let seed = self.seed();
        [
            normals([self.b, self.hq, self.sq, self.d], seed, dtype, self.outliers),
            normals([self.b, self.hkv, self.sk, self.d], seed + 1, dtype, false),
            normals([self.b, self.hkv, self.sk, self.d], seed + 2, dtype, false),
        ]
    }
}

pub fn p() -> AttentionParams {
    AttentionParams::new()
}

/// Key padding, packed (varlen) sequences and dropout, alone and with masks, softcap and GQA:
/// the segment cases that gpu_bwd, gpu_fwd_mma and the CPU flash tests (flash.rs) all run.
pub fn segment_and_dropout_cases() -> Vec<Case> {
    vec![
        case("padding", 3, 2, 1, 50, 100, 64, p().seqlens_k(vec![0, 37, 100])),
        case("padding causal", 2, 2, 2, 60, 80, 64, p().seqlens_k(vec![80, 21]).causal(true)),
        case(
            "varlen",
            1,
            4,
            2,
            199,
            170,
            64,
            p().cu_seqlens(vec![0, 5, 5, 70, 199], vec![0, 30, 60, 60, 170]).causal(true),
        ),
        case("varlen window", 1, 2, 2, 150, 150, 48, p().cu_seqlens(vec![0, 64, 150], vec![0, 100, 150]).window(7, 3)),
        case("dropout", 2, 2, 2, 70, 90, 64, p().dropout(0.2, 42, 7)),
        case("dropout gqa causal", 1, 4, 2, 65, 65, 64, p().dropout(0.5, 3, u64::MAX - 2).causal(true)),
        case(
            "dropout varlen softcap",
            1,
            2,
            1,
            100,
            80,
            32,
            p().cu_seqlens(vec![0, 40, 100], vec![0, 50, 80]).dropout(0.1, 9, 0).softcap(3.0),
        ),
    ]
}

/// Seeded normals `(b, h, s, d)` rounded to `dtype` on the CPU, optionally with every fifth
/// row x20 (x20 outlier logits when applied to q).
pub fn normals(shape: [usize; 4], seed: u64, dtype: DType, outliers: bool) -> Tensor {
    let [_, _, s, d] = shape;
    let mut x = Rng::new(seed).randn(shape, DType::F32, &CPU).unwrap().to_vec::<f32>().unwrap();
    if outliers {
        for (row, chunk) in x.chunks_mut(d.max(1)).enumerate() {
            if (row % s.max(1)) % 5 == 2 {
                chunk.iter_mut().for_each(|v| *v *= 20.0);
            }
        }
    }
    Tensor::from_vec(x, shape, &CPU).unwrap().to_dtype(dtype).unwrap()
}

/// `t` (CPU, logical `(b, h, s, d)`) on the emulator, laid out in memory as `perm` of its dims
/// and viewed back as `(b, h, s, d)` (strided unless `perm` is the identity).
pub fn on_emu(t: &Tensor, perm: [usize; 4]) -> Tensor {
    let mut inv = [0; 4];
    for (i, &x) in perm.iter().enumerate() {
        inv[x] = i;
    }
    let mem = t.permute(perm).unwrap().contiguous().unwrap().to_device(&EMU).unwrap();
    mem.permute(inv).unwrap()
}

/// Largest finite `|a - b|`.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter().zip(&b).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
