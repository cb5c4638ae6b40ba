//! The tensor-core forward (kernels/attention/fwd_mma.cu) on the CUDA emulator against the f64
//! oracle, with the low-precision criterion of docs/attention.md (at most twice the error of the
//! naive f16/bf16 implementation, plus 1e-5) for out and lse: every head_dim class, awkward
//! lengths, seq_q != seq_k, causal, windows, softcap, GQA/MQA, key padding, varlen, dropout
//! (the same Philox mask as the oracle), fully masked rows, x20 outlier rows, strided (bshd)
//! inputs, both tile tables (sm_80 and sm_90) and the launcher's errors.
//! `ptxas_reports_no_spills` (ignored: it needs NVRTC and ptxas) checks every shipped tile
//! configuration for register spills on sm_80 and sm_90.

use attune_attention::cases::{Bound, compare, lowp_forward};
use attune_attention::gpu::GpuCall;
use attune_attention::gpu::fwd_mma::{MmaTiles, launch_fwd_mma, launch_fwd_mma_tiles, mma_tiles, mma_variants};
use attune_attention::{oracle, validate};
use attune_tensor::{DType, Tensor};

mod common;
use common::{BHSD, BSHD, CPU, Case, Layout, case, max_abs_diff, normals, on_emu, p, segment_and_dropout_cases};

const F16: DType = DType::F16;
const BF16: DType = DType::BF16;

/// `t` on the emulator, as bshd memory when asked.
fn emu(t: &Tensor, bshd: bool) -> Tensor {
    on_emu(t, if bshd { BSHD } else { BHSD })
}

/// Runs the kernel on the emulator (with `tiles`, or the launcher's table) and returns out and
/// lse on the CPU.
fn run(
    c: &Case,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tiles: Option<MmaTiles>,
) -> attune_attention::Result<(Tensor, Tensor)> {
    let pb = validate(q, k, v, &c.params)?;
    let call = GpuCall::new(q, k, v, &pb)?;
    let (out, lse) = call.alloc_forward_outputs()?;
    match tiles {
        Some(t) => launch_fwd_mma_tiles(&call, &out, &lse, t)?,
        None => launch_fwd_mma(&call, &out, &lse)?,
    }
    Ok((out.to_device(&CPU)?, lse.to_device(&CPU)?))
}

/// One case in `dtype` against the oracle (on the f64 values of the rounded inputs).
fn check(c: &Case, dtype: DType, tiles: Option<MmaTiles>) {
    let [q, k, v] = c.qkv(dtype).unwrap();
    let (qd, kd, vd) =
        (emu(&q, c.layout == Layout::Bshd), emu(&k, c.layout == Layout::Bshd), emu(&v, c.layout == Layout::Bshd));
    if c.layout == Layout::Bshd && c.heads_q > 1 && c.seq_q > 1 {
        assert!(!qd.is_contiguous(), "{}: the bshd view should be strided", c.name);
    }
    let (out, lse) = run(c, &qd, &kd, &vd, tiles).unwrap_or_else(|e| panic!("{} {dtype}: {e}", c.name));
    assert_eq!(out.dtype(), dtype);
    assert_eq!(lse.dtype(), DType::F32);
    let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let want = oracle::forward(&f64s(&q), &f64s(&k), &f64s(&v), &c.params).unwrap();
    let naive = lowp_forward(&q, &k, &v, &c.params).unwrap();
    for (name, got, want, naive) in [("out", &out, &want.out, &naive.out), ("lse", &lse, &want.lse, &naive.lse)] {
        let bound = Bound::MaxAbs(2.0 * max_abs_diff(naive, want) + 1e-5);
        let m = compare(name, got, want, bound).unwrap();
        assert!(
            m.pass,
            "{} {dtype} {name}: max err {:e} (naive {:e}); {}",
            c.name,
            m.max_err,
            max_abs_diff(naive, want),
            m.note.unwrap_or_default()
        );
    }
    // Rows with no visible key: out exactly 0 and lse -inf (the oracle's -inf matched above).
    let (o, l, wl) = (out.to_f64_vec().unwrap(), lse.to_f64_vec().unwrap(), want.lse.to_f64_vec().unwrap());
    for (row, (&lv, &wv)) in l.iter().zip(&wl).enumerate() {
        if wv == f64::NEG_INFINITY {
            assert_eq!(lv, f64::NEG_INFINITY, "{}: row {row} lse", c.name);
            assert!(o[row * c.head_dim..][..c.head_dim].iter().all(|&x| x == 0.0), "{}: row {row} should be 0", c.name);
        }
    }
}

#[test]
fn every_head_dim_class_matches_the_oracle() {
    for d in [8, 40, 64, 72, 96, 128, 160, 256] {
        check(&case(&format!("d {d}"), 1, 2, 1, 37, 53, d, p()), F16, None);
    }
    for d in [40, 128, 256] {
        check(&case(&format!("bf16 d {d} causal"), 1, 1, 1, 70, 66, d, p().causal(true)), BF16, None);
    }
}

#[test]
fn lengths_that_are_not_tile_multiples() {
    for (sq, sk) in [(1, 1), (17, 17), (128, 128), (255, 255), (1, 255), (255, 17), (130, 1)] {
        check(&case(&format!("seq {sq}x{sk}"), 1, 1, 1, sq, sk, 64, p()), F16, None);
    }
    check(&case("seq 255 causal outliers", 1, 1, 1, 255, 200, 128, p().causal(true)).outliers(), BF16, None);
}

#[test]
fn masks_softcap_and_head_groups() {
    let cases = [
        case("causal", 1, 2, 2, 127, 127, 64, p().causal(true)).outliers(),
        case("causal sq<sk", 1, 1, 1, 50, 170, 40, p().causal(true)),
        case("causal sq>sk (empty rows)", 1, 1, 1, 150, 60, 72, p().causal(true)),
        case("window", 1, 2, 2, 200, 200, 64, p().window(32, 8)).bshd(),
        case("window left only", 1, 1, 1, 150, 90, 64, p().window(5, -1)),
        case("window right only", 1, 1, 1, 90, 150, 64, p().window(-1, 3)),
        case("window empty rows", 1, 2, 2, 80, 30, 64, p().window(2, 0)),
        case("softcap", 1, 2, 2, 65, 129, 64, p().softcap(5.0)).outliers(),
        case("softcap causal", 1, 1, 1, 65, 65, 96, p().softcap(2.0).causal(true)).outliers(),
        case("gqa 4:1", 1, 8, 2, 77, 77, 64, p().causal(true)).bshd(),
        case("mqa", 2, 4, 1, 50, 90, 64, p().window(10, 10)),
        case("bshd outliers", 2, 2, 2, 65, 63, 64, p()).bshd().outliers(),
    ];
    for c in &cases {
        check(c, F16, None);
    }
    check(&cases[7], BF16, None);
}

#[test]
fn padding_varlen_and_dropout() {
    let cases = segment_and_dropout_cases();
    for c in &cases {
        check(c, F16, None);
    }
    check(cases.iter().find(|c| c.name == "dropout").unwrap(), BF16, None);
}

#[test]
fn the_sm90_tile_table_runs_on_the_emulator() {
    // The emulator reports sm_80, so the launcher picks the sm_80 table; run sm_90's explicitly.
    for d in [64, 96, 128, 256] {
        let t = mma_tiles(d, 90);
        check(&case(&format!("sm_90 tiles d {d}"), 1, 2, 1, 100, 130, d, p().causal(true)), F16, Some(t));
    }
    // And a tile shape outside the table: 2 warps, 16-key tiles.
    let t = MmaTiles { bm: 32, bn: 16, warps: 2 };
    check(&case("bm 32 bn 16", 1, 1, 1, 70, 45, 40, p().window(20, 3)), F16, Some(t));
}

#[test]
fn unsupported_inputs_are_errors_naming_the_fix() {
    let c = case("errors", 1, 1, 1, 16, 16, 64, p());
    let err = |q: &Tensor, k: &Tensor, v: &Tensor| run(&c, q, k, v, None).unwrap_err().to_string();
    // f32 inputs.
    let x = emu(&normals([1, 1, 16, 64], 1, DType::F32, false), false);
    let e = err(&x, &x, &x);
    assert!(e.contains("f16 or bf16") && e.contains("f32"), "{e}");
    // head_dim not a multiple of 8.
    let x = emu(&normals([1, 1, 16, 12], 2, F16, false), false);
    let e = err(&x, &x, &x);
    assert!(e.contains("head_dim") && e.contains("12"), "{e}");
    // Rows 136 bytes apart: not 16-byte aligned for cp.async.
    let wide = emu(&normals([1, 1, 16, 68], 3, F16, false), false);
    let x = wide.narrow(3, 0, 64).unwrap();
    let e = err(&x, &x, &x);
    assert!(e.contains("16-byte aligned") && e.contains("68"), "{e}");
    // Bad explicit tiles.
    let x = emu(&normals([1, 1, 16, 64], 4, F16, false), false);
    let pb = validate(&x, &x, &x, &c.params).unwrap();
    let call = GpuCall::new(&x, &x, &x, &pb).unwrap();
    let (out, lse) = call.alloc_forward_outputs().unwrap();
    let e = launch_fwd_mma_tiles(&call, &out, &lse, MmaTiles { bm: 64, bn: 24, warps: 4 }).unwrap_err().to_string();
    assert!(e.contains("multiple of 16"), "{e}");
}

#[test]
fn variants_cover_every_head_dim_and_dtype() {
    let dims: Vec<usize> = (8..=256).step_by(8).collect();
    let v = mma_variants(&dims, &[80, 90]);
    // Per head_dim: f16 and bf16, plus sm_90's own tiles for 72..128.
    assert_eq!(v.len(), 2 * dims.len() + 2 * (72..=128).step_by(8).count());
    assert!(
        v.iter().all(|(spec, entries)| spec.file == "attention/fwd_mma.cu"
            && entries == &vec![("attn_fwd_mma".to_string(), 128)])
    );
    assert!(mma_variants(&[12, 264], &[80]).is_empty());
    assert!(mma_variants(&[64], &[75]).is_empty());
}

/// Registers and spills of every shipped tile configuration (head_dim 8..256 step 8, f16 and
/// bf16, sm_80 and sm_90) from NVRTC + ptxas. Needs `ATTUNE_CUDA_TOOLS` (NVRTC and ptxas).
#[test]
#[ignore = "needs NVRTC and ptxas (ATTUNE_CUDA_TOOLS); run with --ignored --nocapture"]
fn ptxas_reports_no_spills() {
    use attune_cuda::nvrtc::{Target, compile};
    let ptxas = attune_cuda::toolchain::find().unwrap().ptxas().unwrap().to_path_buf();
    let dir = std::env::temp_dir().join(format!("attune-fwd-mma-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bad = Vec::new();
    println!(
        "{:<8} {:<5} {:<6} {:>3} {:>3} {:>5} {:>8} {:>6} {:>9}",
        "dtype", "hd", "arch", "bm", "bn", "regs", "spill", "stack", "smem B"
    );
    for arch in [80u32, 90] {
        for d in (8..=256).step_by(8) {
            let t = mma_tiles(d, arch);
            for (spec, _) in mma_variants(&[d], &[arch]) {
                let ptx = compile(&spec, Target::Compute(arch)).unwrap_or_else(|e| panic!("{e}"));
                let file = dir.join(format!("d{d}_{arch}.ptx"));
                std::fs::write(&file, ptx.ptx().expect("PTX target")).unwrap();
                let o = std::process::Command::new(&ptxas)
                    .args([format!("-arch=sm_{arch}"), "-v".into(), file.display().to_string()])
                    .arg("-o")
                    .arg(dir.join("out.cubin"))
                    .output()
                    .unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                assert!(o.status.success(), "ptxas failed: {text}");
                // The number just before each occurrence of `key`, summed.
                let num_before = |key: &str| -> u64 {
                    let parts: Vec<&str> = text.split(key).collect();
                    parts[..parts.len() - 1]
                        .iter()
                        .filter_map(|s| s.split_whitespace().last())
                        .filter_map(|n| n.parse::<u64>().ok())
                        .sum()
                };
                let regs = text
                    .split("Used ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                let (st, ld) = (num_before(" bytes spill stores"), num_before(" bytes spill loads"));
                // Local memory besides spills (a runtime index into a register array).
                let stack = num_before(" bytes stack frame");
                let dtype = spec.defines.iter().find(|(k, _)| k == "ATTN_DTYPE").map(|(_, v)| v.clone()).unwrap();
                let dtype = if dtype == "1" { "f16" } else { "bf16" };
                println!(
                    "{dtype:<8} {d:<5} sm_{arch:<3} {:>3} {:>3} {regs:>5} {:>8} {stack:>6} {:>9}",
                    t.bm,
                    t.bn,
                    format!("{st}/{ld}"),
                    t.smem_bytes(d)
                );
                if st > 0 || ld > 0 || stack > 0 || regs == 0 {
                    bad.push(format!("{dtype} d {d} sm_{arch}: regs {regs}, spills {st}/{ld}, stack {stack}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bad.is_empty(), "spills: {bad:#?}");
}
