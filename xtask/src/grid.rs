//! The parity grid: geometries and features of generated attention cases (every feature,
//! the bug-finding inputs of docs/testing.md), with expected values from the f64 oracle. The case
//! type and its input generator are the tests' own ([`GridCase`], attune_attention::testing).

pub use attune_attention::testing::GridCase;
use attune_tensor::DType;

/// The default grid: every feature at least once, in f32, f16 and bf16, forward and backward;
/// under two minutes in release on two cores.
pub fn default_grid() -> Vec<GridCase> {
    let g = GridCase::new;
    let (f16, bf16) = (DType::F16, DType::BF16);
    let mut v = vec![
        // Lengths that are no multiple of any tile, seq_q != seq_k both ways.
        g(2, 4, 4, 1, 1, 64),
        g(2, 4, 4, 17, 17, 64),
        g(2, 4, 4, 127, 127, 64),
        g(2, 4, 4, 127, 127, 64).causal(),
        g(1, 2, 2, 1000, 1000, 64).causal(),
        g(1, 2, 2, 1000, 1000, 64),
        g(2, 4, 4, 1, 300, 64).causal(),
        g(2, 8, 2, 1, 1000, 128).causal().fwd_only(), // decoding
        g(2, 4, 4, 17, 127, 64).causal(),
        g(2, 4, 4, 127, 17, 64).causal(), // rows 0..110 see no key
        g(2, 4, 4, 33, 100, 64),
        // Windows, alone and with causal.
        g(2, 4, 4, 127, 127, 64).window(16, 0),
        g(2, 4, 4, 127, 127, 64).window(8, 8),
        g(2, 4, 4, 127, 127, 64).window(-1, 4),
        g(2, 4, 4, 100, 127, 64).window(32, -1).causal(),
        // Softcap, with logits large enough that the cap matters.
        g(2, 4, 4, 127, 127, 64).softcap(5.0).outliers(),
        g(2, 4, 4, 127, 127, 64).softcap(30.0).causal(),
        // GQA 4:1 and MQA.
        g(2, 8, 2, 127, 127, 64).causal(),
        g(2, 8, 1, 127, 90, 64),
        // Key padding (a zero-length entry: every row masked) and packed varlen.
        g(2, 4, 4, 127, 127, 64).seqlens(&[127, 50]),
        g(2, 4, 4, 127, 127, 64).seqlens(&[0, 90]).causal(),
        g(1, 4, 2, 144, 172, 64).varlen(&[0, 17, 17, 144], &[0, 30, 45, 172]).causal(),
        g(1, 4, 4, 100, 80, 64).varlen(&[0, 1, 60, 100], &[0, 40, 41, 80]),
        // Dropout with the shared Philox stream.
        g(2, 4, 4, 127, 127, 64).dropout(0.1),
        g(2, 4, 2, 127, 127, 64).dropout(0.5).causal(),
        // Outlier rows, and non-contiguous (B, S, H, D) inputs.
        g(2, 4, 4, 127, 127, 64).outliers(),
        g(2, 8, 2, 127, 127, 64).causal().bshd(),
        g(2, 4, 4, 33, 77, 64).seqlens(&[77, 20]).bshd(),
    ];
    // Long sequences: several key blocks per row, masks that cut blocks, masked rows.
    v.extend([
        g(1, 4, 1, 1000, 1000, 64).causal().window(256, 0),
        g(2, 2, 2, 1000, 1000, 64).causal().seqlens(&[1000, 617]),
        g(1, 8, 2, 1000, 1000, 128).causal().bshd(),
        g(1, 2, 2, 1000, 513, 64).causal(),
        g(1, 2, 2, 513, 1000, 64).softcap(20.0).outliers(),
        g(1, 4, 4, 1000, 1000, 64).dropout(0.1).causal(),
        g(1, 4, 2, 1000, 1000, 64).varlen(&[0, 300, 301, 1000], &[0, 500, 520, 1000]).causal().bshd(),
    ]);
    // Head dims at every size the kernels may specialise, in every dtype.
    for dt in [DType::F32, f16, bf16] {
        for d in [8, 16, 32, 40, 80, 96, 128, 160, 192, 256] {
            v.push(g(1, 2, 2, 65, 65, d).causal().dtype(dt));
        }
    }
    // Low precision: each feature family once per dtype.
    for dt in [f16, bf16] {
        v.extend([
            g(2, 4, 4, 127, 127, 64).dtype(dt),
            g(2, 8, 2, 127, 127, 64).causal().bshd().dtype(dt),
            g(2, 4, 4, 127, 127, 64).window(16, 0).softcap(30.0).dtype(dt),
            g(2, 4, 4, 127, 127, 64).seqlens(&[127, 0]).causal().dtype(dt),
            g(1, 4, 4, 144, 172, 128).varlen(&[0, 17, 17, 144], &[0, 30, 45, 172]).dtype(dt),
            g(2, 4, 4, 127, 127, 64).outliers().dtype(dt),
            g(2, 4, 4, 127, 127, 64).dropout(0.2).dtype(dt),
            g(1, 2, 1, 1000, 1000, 64).causal().dtype(dt),
            g(2, 4, 4, 1, 1, 256).dtype(dt),
            g(1, 8, 2, 1000, 1000, 128).window(128, 128).bshd().dtype(dt),
            g(2, 4, 4, 127, 300, 64).seqlens(&[300, 77]).dropout(0.1).causal().dtype(dt),
        ]);
    }
    v
}

/// The larger grid of `--full`: a product of dtypes, masks, lengths, head dims, head ratios and
/// layouts, plus the default grid.
pub fn full_grid() -> Vec<GridCase> {
    let mut v = default_grid();
    let lens = [(1, 1), (1, 300), (17, 17), (127, 127), (17, 300), (300, 17), (257, 1000), (1000, 1000)];
    let mut n = 0usize;
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for mask in 0..5 {
            for &(sq, sk) in &lens {
                for d in [8, 64, 128, 256] {
                    n += 1;
                    // Long sequences with the widest heads cost the oracle most: keep them lean.
                    let big = sq * sk * d > 300 * 300 * 128;
                    if big && d > 128 {
                        continue;
                    }
                    let (hq, hkv) = [(4, 4), (8, 2), (4, 1)][n % 3];
                    let b = if big { 1 } else { 2 };
                    let mut c = GridCase::new(b, hq, hkv, sq, sk, d).dtype(dt);
                    c = match mask {
                        0 => c,
                        1 => c.causal(),
                        2 => c.window(32, 8),
                        3 => c.window(-1, 16).softcap(20.0),
                        _ => {
                            let lens = if b == 1 { vec![sk - sk / 3] } else { vec![sk, sk / 3] };
                            c.seqlens(&lens).causal()
                        }
                    };
                    if n.is_multiple_of(4) {
                        c = c.bshd();
                    }
                    if n.is_multiple_of(7) {
                        c = c.outliers();
                    }
                    if n.is_multiple_of(11) {
                        c = c.dropout(0.15);
                    }
                    v.push(c);
                }
            }
        }
    }
    v
}
