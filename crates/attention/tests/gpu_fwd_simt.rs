//! The SIMT forward (fwd_simt.cu) and the split-KV forward (fwd_split.cu) on the CUDA emulator
//! against the f64 oracle (docs/attention.md): f32 elementwise within atol 2e-5 / rtol 2e-4, f16/bf16
//! within twice the error of the naive low-precision implementation plus 1e-5. Every head_dim
//! class, awkward lengths, every mask and feature, GQA/MQA, key padding, packed sequences,
//! dropout (the oracle's Philox mask), fully masked rows, x20 outlier rows and a strided
//! (batch, seq, heads, dim) view. The ignored `ptxas_no_spills` compiles every variant for
//! sm_80/sm_90 with NVRTC + ptxas and asserts zero spills.

use attune_attention::cases::{Bound, compare, lowp_forward};
use attune_attention::gpu::GpuCall;
use attune_attention::gpu::fwd_simt::{SimtConfig, launch_fwd_simt, simt_variants};
use attune_attention::gpu::fwd_split::{launch_fwd_split, split_variants};
use attune_attention::support::gpu_head_dims;
use attune_attention::{oracle, validate};
use attune_tensor::{DType, Tensor};

mod common;
use common::{BSHD, CPU, Case, EMU, Layout, case, max_abs_diff, on_emu, p};

/// Which kernel runs a case.
#[derive(Clone, Copy, Debug)]
enum Path {
    Simt,
    /// Split-KV with this many splits.
    Split(usize),
}

/// The CPU tensor on the emulator; with `bshd`, stored as (batch, seq, heads, dim) memory and
/// viewed as (batch, heads, seq, dim) there (strided, no copy in the kernel); with `padded`,
/// stored with rows of `dim + 1` elements (the extra one NaN, which must never be read).
fn to_emu(t: &Tensor, bshd: bool, padded: bool) -> Tensor {
    if padded {
        let [b, h, s, d] = [t.dims()[0], t.dims()[1], t.dims()[2], t.dims()[3]];
        let nan = Tensor::full(f64::NAN, [b, h, s, 1], t.dtype(), &CPU).unwrap();
        let wide = Tensor::cat(&[t.clone(), nan], 3).unwrap().to_device(&EMU).unwrap();
        let view = wide.narrow(3, 0, d).unwrap();
        assert!(!view.is_contiguous());
        return view;
    }
    if !bshd {
        return t.to_device(&EMU).unwrap();
    }
    let view = on_emu(t, BSHD);
    assert!(!view.is_contiguous() || t.dims()[1] == 1 || t.dims()[2] == 1);
    view
}

/// Runs `c` on `path` and checks out and lse against the oracle; returns the worst error.
fn check(c: &Case, path: Path) -> f64 {
    let [q, k, v] = c.qkv(c.dtype).unwrap();
    let emu = |t: &Tensor| to_emu(t, c.layout == Layout::Bshd, c.padded);
    let (qe, ke, ve) = (emu(&q), emu(&k), emu(&v));
    let pb = validate(&qe, &ke, &ve, &c.params).unwrap();
    let call = GpuCall::new(&qe, &ke, &ve, &pb).unwrap();
    let (out, lse) = call.alloc_forward_outputs().unwrap();
    match path {
        Path::Simt => launch_fwd_simt(&call, &out, &lse).unwrap(),
        Path::Split(s) => launch_fwd_split(&call, &out, &lse, s).unwrap(),
    }
    let (out, lse) = (out.to_device(&CPU).unwrap(), lse.to_device(&CPU).unwrap());
    let want = oracle::forward(&q, &k, &v, &c.params).unwrap();
    let (bo, bl) = if matches!(c.dtype, DType::F16 | DType::BF16) {
        // The low-precision criterion: twice the naive implementation's error, plus 1e-5.
        let naive = lowp_forward(&q, &k, &v, &c.params).unwrap();
        (
            Bound::MaxAbs(2.0 * max_abs_diff(&naive.out, &want.out) + 1e-5),
            Bound::MaxAbs(2.0 * max_abs_diff(&naive.lse, &want.lse) + 1e-5),
        )
    } else {
        let b = Bound::Elementwise { atol: 2e-5, rtol: 2e-4 };
        (b, b)
    };
    let mo = compare("out", &out, &want.out, bo).unwrap();
    let ml = compare("lse", &lse, &want.lse, bl).unwrap();
    assert!(mo.pass, "{} {:?} {path:?}: out {mo:?}", c.name, c.dtype);
    assert!(ml.pass, "{} {:?} {path:?}: lse {ml:?}", c.name, c.dtype);
    mo.max_err.max(ml.max_err)
}

#[test]
fn simt_head_dims_and_lengths() {
    // Every head_dim class: tiny, not a multiple of 32 (padded tiles), swizzled, 2 rows per
    // warp above 128; seq 1, 17, 128, 255 and seq_q != seq_k in both directions.
    let cases = [
        case("d8", 2, 2, 2, 1, 1, 8, p()),
        case("d40", 1, 2, 2, 17, 17, 40, p()),
        case("d64", 1, 2, 2, 128, 128, 64, p()),
        case("d72", 1, 1, 1, 17, 255, 72, p()),
        case("d96", 1, 1, 1, 255, 17, 96, p()),
        case("d128", 1, 2, 1, 33, 70, 128, p().causal(true)),
        case("d160", 1, 1, 1, 20, 45, 160, p().window(7, 3)),
        case("d256", 1, 2, 2, 17, 45, 256, p()),
    ];
    for c in &cases {
        check(c, Path::Simt);
    }
}

#[test]
fn simt_masks_and_features() {
    let cases = [
        case("causal", 1, 2, 2, 70, 90, 64, p().causal(true)),
        // seq_q > seq_k causal: the first 20 rows see no key (out 0, lse -inf).
        case("causal_masked_rows", 1, 1, 1, 40, 20, 64, p().causal(true)),
        case("window", 1, 2, 2, 100, 100, 64, p().window(16, 8)),
        case("window_left_only", 1, 1, 1, 50, 130, 64, p().window(5, -1)),
        case("softcap_outliers", 1, 2, 2, 60, 75, 64, p().softcap(5.0)).outliers(),
        case("outliers", 2, 2, 2, 45, 66, 64, p()).outliers(),
        case("gqa", 1, 8, 2, 20, 40, 64, p().causal(true)),
        case("mqa", 2, 4, 1, 19, 37, 64, p()),
        case("seqlens_k", 3, 2, 2, 30, 90, 64, p().seqlens_k(vec![37, 0, 90])),
        case("cu_seqlens", 1, 2, 2, 45, 60, 64, p().cu_seqlens(vec![0, 10, 30, 45], vec![0, 20, 20, 60])),
        case(
            "cu_seqlens_causal",
            1,
            2,
            1,
            45,
            60,
            64,
            p().causal(true).cu_seqlens(vec![0, 10, 30, 45], vec![0, 25, 40, 60]),
        ),
        case("dropout", 2, 2, 2, 33, 50, 64, p().dropout(0.2, 1234, 77)),
        case("dropout_causal_gqa", 1, 4, 2, 40, 40, 40, p().causal(true).dropout(0.3, 9, 5)),
        case("bshd", 2, 3, 3, 21, 34, 64, p().causal(true)).bshd(),
        case("bshd_gqa_d72", 1, 4, 2, 17, 29, 72, p()).bshd(),
        case("padded_rows", 1, 2, 1, 19, 40, 48, p().causal(true)).padded(),
    ];
    for c in &cases {
        check(c, Path::Simt);
    }
}

#[test]
fn simt_low_precision() {
    let cases = [
        case("f16_causal_outliers", 1, 2, 2, 40, 50, 64, p().causal(true)).outliers().dtype(DType::F16),
        case("bf16_gqa_softcap", 1, 4, 2, 33, 47, 128, p().softcap(10.0)).dtype(DType::BF16),
        case("f16_d40_bshd", 1, 2, 2, 17, 30, 40, p()).bshd().dtype(DType::F16),
        case("bf16_padded", 1, 2, 2, 17, 30, 64, p().window(4, 4)).padded().dtype(DType::BF16),
    ];
    for c in &cases {
        check(c, Path::Simt);
    }
}

#[test]
fn split_kv_equals_the_oracle() {
    for s in [1, 3, 7] {
        check(&case("split_q1", 1, 2, 2, 1, 1000, 64, p()), Path::Split(s));
    }
    let cases = [
        // Causal decoding of 4 rows over 1500 keys.
        (case("split_q4_causal", 1, 2, 2, 4, 1500, 64, p().causal(true)), 3),
        (case("split_q4_causal", 1, 2, 2, 4, 1500, 64, p().causal(true)), 7),
        // 16 rows with key padding; the third batch entry has no key (every split empty).
        (case("split_q16_pad", 3, 1, 1, 16, 1100, 64, p().seqlens_k(vec![1100, 700, 0])), 7),
        // A diagonal band: each row sees 1 key, so most splits are entirely masked for most
        // rows, and with one row some splits have no keys at all.
        (case("split_band", 1, 1, 1, 16, 1200, 64, p().window(0, 0)), 7),
        (case("split_band_q1", 1, 1, 1, 1, 1200, 64, p().window(0, 0)), 7),
        (case("split_mqa_dropout", 1, 4, 1, 4, 1000, 64, p().dropout(0.1, 42, 3)), 3),
        (case("split_varlen", 1, 2, 2, 16, 2000, 64, p().cu_seqlens(vec![0, 1, 5, 16], vec![0, 700, 1500, 2000])), 7),
        (case("split_softcap_outliers", 1, 1, 1, 4, 1000, 40, p().softcap(8.0)).outliers(), 3),
        // HD 256: the probabilities travel by warp shuffles (no room for the P buffer).
        (case("split_d256", 1, 1, 1, 16, 1000, 256, p().causal(true)), 3),
        (case("split_bf16_d128", 1, 2, 2, 4, 1000, 128, p()).dtype(DType::BF16), 7),
        (case("split_f16_bshd", 1, 2, 2, 16, 1000, 64, p().causal(true)).bshd().dtype(DType::F16), 3),
        (case("split_padded", 1, 1, 1, 3, 1000, 64, p()).padded(), 3),
    ];
    for (c, s) in &cases {
        check(c, Path::Split(*s));
    }
}

#[test]
fn launchers_reject_bad_input() {
    let t = |s: usize, d: usize| Tensor::zeros([1, 1, s, d], DType::F32, &EMU).unwrap();
    let (q, k) = (t(4, 12), t(8, 12));
    let pb = validate(&q, &k, &k, &p()).unwrap();
    let call = GpuCall::new(&q, &k, &k, &pb).unwrap();
    let (out, lse) = call.alloc_forward_outputs().unwrap();
    let e = launch_fwd_simt(&call, &out, &lse).unwrap_err().to_string();
    assert!(e.contains("head_dim") && e.contains("12"), "{e}");
    let (q, k) = (t(17, 64), t(600, 64));
    let pb = validate(&q, &k, &k, &p()).unwrap();
    let call = GpuCall::new(&q, &k, &k, &pb).unwrap();
    let (out, lse) = call.alloc_forward_outputs().unwrap();
    let e = launch_fwd_split(&call, &out, &lse, 3).unwrap_err().to_string();
    assert!(e.contains("16") && e.contains("17"), "{e}");
    let e = launch_fwd_simt(&call, &lse, &out).unwrap_err().to_string();
    assert!(e.contains("alloc_forward_outputs"), "{e}");
}

/// Compiles every variant to PTX with NVRTC and assembles it with ptxas for sm_80 and sm_90;
/// asserts zero spill stores/loads and prints registers and shared memory per entry. Needs
/// NVRTC and ptxas (`ATTUNE_CUDA_TOOLS=<cuda-tools folder>`).
#[test]
#[ignore = "needs NVRTC and ptxas (set ATTUNE_CUDA_TOOLS)"]
fn ptxas_no_spills() {
    use attune_cuda::nvrtc::{Target, compile};
    let ptxas = attune_cuda::toolchain::find().unwrap().ptxas().unwrap().to_path_buf();
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    // ATTUNE_PTXAS_HD=64,256 narrows the head dims (for quick iteration).
    let hds: Vec<usize> = match std::env::var("ATTUNE_PTXAS_HD") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => gpu_head_dims().collect(),
    };
    let mut variants = simt_variants(&dtypes, &hds);
    variants.extend(split_variants(&dtypes, &hds));
    let dir = std::env::temp_dir().join(format!("attune-simt-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bad = Vec::new();
    for (spec, _) in &variants {
        let ptx = compile(spec, Target::Compute(80)).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        let file = dir.join("m.ptx");
        std::fs::write(&file, ptx.ptx().unwrap()).unwrap();
        for sm in [80, 90] {
            let o = std::process::Command::new(&ptxas)
                .args([format!("-arch=sm_{sm}"), "-v".into(), file.display().to_string(), "-o".into()])
                .arg(dir.join("m.cubin"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "ptxas failed for {spec:?}:\n{text}");
            let mut entry = String::new();
            for line in text.lines() {
                if let Some(i) = line.find("Compiling entry function '") {
                    entry = line[i + 26..].trim_end_matches("' for 'sm_80'").trim_end_matches("' for 'sm_90'").into();
                }
                if line.contains("spill stores") && !line.contains(" 0 bytes spill stores, 0 bytes spill loads") {
                    bad.push(format!("{} sm_{sm} {entry}: {}", spec.defines_string(), line.trim()));
                }
                if line.contains("Used ") {
                    let used = line.split("Used ").nth(1).unwrap_or("");
                    println!("{} {} sm_{sm} {entry}: {used}", spec.file, spec.defines_string());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "spills:\n{}", bad.join("\n"));
    // The launchers' shared memory needs no opt-in.
    for hd in hds {
        assert!(SimtConfig::split(hd).shared_bytes() <= 48 * 1024);
    }
}
