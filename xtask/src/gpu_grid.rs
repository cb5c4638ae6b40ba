//! The attention grids of the GPU backends (`parity --backend emu|cuda`): every head_dim the
//! issue names, lengths that are no multiple of any tile, and every feature, per dtype, each
//! kernel family at least once (f32 -> SIMT, f16/bf16 -> tensor cores, decoding -> split-KV).
//! The emulator runs kernels ~100x slower than a CPU, so the default grid keeps batch and heads
//! small; `--full` multiplies it out.

use crate::grid::GridCase;
use attune_tensor::DType;

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
/// Head dims of the issue's grid (every multiple of 8 compiles; these cover the tile table's
/// edges: smallest, not a multiple of 16, each tile class, largest).
pub const HEAD_DIMS: [usize; 8] = [8, 40, 64, 72, 96, 128, 160, 256];
/// Sequence lengths of the issue's grid.
const SEQS: [usize; 5] = [1, 17, 128, 255, 513];

/// The default GPU grid (CI): under ~10 minutes on the emulator under ASan on two cores.
pub fn gpu_grid() -> Vec<GridCase> {
    let g = GridCase::new;
    let mut v = Vec::new();
    // Every head dim in every dtype, forward and backward, alternating causal.
    for dt in DTYPES {
        for (i, d) in HEAD_DIMS.into_iter().enumerate() {
            let c = g(1, 2, 2, 17, 40, d).dtype(dt);
            v.push(if i % 2 == 0 { c.causal() } else { c });
        }
    }
    // Every length, self- and cross-attention.
    for dt in [DType::F32, DType::F16] {
        for s in SEQS {
            v.push(g(1, 2, 2, s, s, 64).causal().dtype(dt));
        }
        v.push(g(1, 2, 2, 17, 255, 64).dtype(dt));
        v.push(g(1, 2, 2, 255, 17, 64).causal().dtype(dt)); // most rows see no key
        v.push(g(1, 2, 2, 128, 513, 64).causal().dtype(dt));
    }
    // Every feature in every dtype.
    for dt in DTYPES {
        v.extend([
            g(1, 2, 2, 128, 128, 64).window(16, 0).dtype(dt),
            g(1, 2, 2, 128, 128, 64).window(8, 8).dtype(dt),
            g(1, 2, 2, 100, 128, 64).window(32, -1).causal().dtype(dt),
            g(1, 2, 2, 128, 128, 64).softcap(5.0).outliers().dtype(dt),
            g(1, 8, 2, 128, 128, 64).causal().dtype(dt),
            g(1, 4, 1, 128, 90, 64).dtype(dt),
            g(2, 2, 2, 128, 128, 64).seqlens(&[128, 0]).causal().dtype(dt),
            g(2, 2, 2, 33, 77, 64).seqlens(&[77, 20]).bshd().dtype(dt),
            g(1, 2, 2, 144, 172, 64).varlen(&[0, 17, 17, 144], &[0, 30, 45, 172]).causal().dtype(dt),
            g(1, 2, 2, 128, 128, 64).dropout(0.2).dtype(dt),
            g(1, 4, 2, 128, 128, 64).dropout(0.1).causal().deterministic().dtype(dt),
            g(1, 8, 2, 128, 128, 64).causal().bshd().deterministic().dtype(dt),
            g(1, 2, 2, 128, 128, 64).outliers().dtype(dt),
        ]);
    }
    // Three query heads per kv head at head_dim 112: the backward sums dK/dV over the group's
    // 600 query rows (the f32 precision case of issue 13; gpu_bwd.rs checks it against twice
    // the naive f32 error).
    for dt in DTYPES {
        v.push(g(1, 6, 2, 200, 200, 112).dtype(dt));
    }
    // Decoding shapes (split-KV): few queries, long keys, forward only.
    for dt in DTYPES {
        v.extend([
            g(2, 8, 2, 1, 1500, 64).causal().dtype(dt).fwd_only(),
            g(2, 4, 4, 4, 2000, 128).seqlens(&[2000, 700]).dtype(dt).fwd_only(),
            g(1, 4, 1, 16, 1200, 64).window(300, 0).dtype(dt).fwd_only(),
        ]);
    }
    v
}

/// The full GPU grid (`--full`): the product of dtypes, head dims, lengths and masks, plus the
/// default grid.
pub fn gpu_full_grid() -> Vec<GridCase> {
    let mut v = gpu_grid();
    let lens = [(1, 1), (1, 513), (17, 17), (128, 128), (17, 255), (255, 17), (255, 513), (513, 513)];
    let mut n = 0usize;
    for dt in DTYPES {
        for d in HEAD_DIMS {
            for &(sq, sk) in &lens {
                for mask in 0..4 {
                    n += 1;
                    let (hq, hkv) = [(2, 2), (4, 1), (8, 2)][n % 3];
                    let mut c = GridCase::new(1, hq, hkv, sq, sk, d).dtype(dt);
                    c = match mask {
                        0 => c,
                        1 => c.causal(),
                        2 => c.window(32, 8).softcap(20.0),
                        _ => c.seqlens(&[sk - sk / 3]).causal(),
                    };
                    if n.is_multiple_of(5) {
                        c = c.bshd();
                    }
                    if n.is_multiple_of(7) {
                        c = c.dropout(0.15);
                    }
                    if n.is_multiple_of(3) {
                        c = c.deterministic();
                    }
                    v.push(c);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_attention::testing::Layout;

    #[test]
    fn gpu_grid_covers_the_issue_grid() {
        let g = gpu_grid();
        let any = |f: &dyn Fn(&GridCase) -> bool| g.iter().any(f);
        for dt in DTYPES {
            for d in HEAD_DIMS {
                assert!(any(&|c| c.dtype == dt && c.head_dim == d && c.backward), "{dt} d{d}");
            }
            assert!(any(&|c| c.dtype == dt && c.params.dropout.is_some() && c.backward));
            assert!(any(&|c| c.dtype == dt && c.params.deterministic));
            assert!(
                any(&|c| c.dtype == dt && c.params.cu_seqlens.is_some())
                    && any(&|c| c.dtype == dt && c.params.seqlens_k.is_some())
            );
            assert!(any(&|c| c.dtype == dt && c.seq_q == 1 && c.seq_k >= 1000), "decoding {dt}");
        }
        for s in SEQS {
            assert!(any(&|c| c.seq_q == s && c.seq_k == s), "seq {s}");
        }
        assert!(
            any(&|c| c.params.causal) && any(&|c| c.params.window.is_some()) && any(&|c| c.params.softcap.is_some())
        );
        assert!(any(&|c| c.heads_q == 4 * c.heads_kv) && any(&|c| c.heads_kv == 1 && c.heads_q > 1));
        for dt in DTYPES {
            assert!(any(&|c| c.dtype == dt && c.heads_q == 3 * c.heads_kv && c.head_dim == 112 && c.backward));
        }
        assert!(any(&|c| c.seq_q != c.seq_k) && any(&|c| c.layout == Layout::Bshd) && any(&|c| c.outliers));
        assert!(gpu_full_grid().len() > 4 * g.len());
    }
}
