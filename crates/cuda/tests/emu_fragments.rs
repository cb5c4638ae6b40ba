//! The emulated tensor-core and async-copy helpers against the PTX ISA fragment tables, which
//! this test re-derives (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"
//! and "Warp-level matrix load instruction: ldmatrix"): kernels record each lane's registers
//! verbatim and the mapping is checked here; the mma is checked against a CPU matmul.
//! Every test also runs on a GPU when one is present, where the same kernels execute the real
//! instructions: the emulated twins and the hardware are held to the same tables.

mod emu_util;

use attune_cuda::{Backend, Dim3, GpuDevice, KernelArg, ModuleSpec};
use emu_util::*;
use half::{bf16, f16};

fn m() -> ModuleSpec {
    test_module("test/fragments.cu")
}

/// A operand (16x16): element i of lane's fragment (a0..a7, two per register, low half first).
fn a_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) { g } else { g + 8 };
    let col = t * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// B operand (16x8, k x n): element i of b0..b3.
fn b_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (t * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}

/// C/D (16x8): element i of c0..c3.
fn c_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}

/// ldmatrix: (row, col) within matrix m of the low (h = 0) or high (h = 1) half of lane's
/// register m.
fn ldmatrix_pos(lane: usize, h: usize, trans: bool) -> (usize, usize) {
    let (a, b) = (lane / 4, 2 * (lane % 4) + h);
    if trans { (b, a) } else { (a, b) }
}

const LD_STRIDE: usize = 24;
const BASE: [usize; 4] = [16, 0, 24, 8];

#[test]
fn ldmatrix_registers_follow_the_isa_table() {
    for d in devices() {
        ldmatrix_on(&d);
    }
}

fn ldmatrix_on(d: &GpuDevice) {
    // Element (r, c) of matrix m holds m << 8 | r << 4 | c; everything else 0xdead.
    let mut image = vec![0xdeadu16; 32 * LD_STRIDE];
    for (mat, base) in BASE.iter().enumerate() {
        for r in 0..8 {
            for c in 0..8 {
                image[(base + r) * LD_STRIDE + c] = (mat << 8 | r << 4 | c) as u16;
            }
        }
    }
    let img = upload(d, &image);
    for variant in 0..6 {
        let (num, trans) = ([1, 2, 4][variant % 3], variant >= 3);
        let out = zeros::<u32>(d, 128);
        let args = vec![ptr(&img), ptr(&out), KernelArg::I32(variant as i32)];
        d.launch(&plan(&m(), "ldmatrix_record", Dim3::x(1), Dim3::x(32), args)).unwrap();
        let got: Vec<u32> = download(&out);
        for lane in 0..32 {
            for mat in 0..4 {
                let want = if mat < num {
                    let id = |h| {
                        let (r, c) = ldmatrix_pos(lane, h, trans);
                        (mat << 8 | r << 4 | c) as u32
                    };
                    id(0) | id(1) << 16
                } else {
                    0
                };
                assert_eq!(
                    got[4 * lane + mat],
                    want,
                    "{}: x{num} trans={trans}: lane {lane} register {mat}",
                    d.describe()
                );
            }
        }
    }
}

/// Packs two 16-bit values into a register, the lower-indexed element in the low half.
fn pack(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

fn run_mma(d: &GpuDevice, bf: bool, seed: u64) {
    let mut rng = Rng(seed);
    let to16 = |x: f32| if bf { bf16::from_f32(x).to_bits() } else { f16::from_f32(x).to_bits() };
    let from16 = |b: u16| if bf { bf16::from_bits(b).to_f64() } else { f16::from_bits(b).to_f64() };
    let a: Vec<u16> = (0..16 * 16).map(|_| to16(rng.uniform() * 2.0)).collect();
    let b: Vec<u16> = (0..16 * 8).map(|_| to16(rng.uniform() * 2.0)).collect();
    let c: Vec<f32> = (0..16 * 8).map(|_| rng.uniform()).collect();
    // Registers per lane, from the tables above.
    let mut ra = vec![0u32; 128];
    let mut rb = vec![0u32; 64];
    let mut rc = vec![0f32; 128];
    for lane in 0..32 {
        for r in 0..4 {
            let ((r0, c0), (r1, c1)) = (a_pos(lane, 2 * r), a_pos(lane, 2 * r + 1));
            ra[4 * lane + r] = pack(a[r0 * 16 + c0], a[r1 * 16 + c1]);
        }
        for r in 0..2 {
            let ((k0, n0), (k1, n1)) = (b_pos(lane, 2 * r), b_pos(lane, 2 * r + 1));
            rb[2 * lane + r] = pack(b[k0 * 8 + n0], b[k1 * 8 + n1]);
        }
        for i in 0..4 {
            let (row, col) = c_pos(lane, i);
            rc[4 * lane + i] = c[row * 8 + col];
        }
    }
    let (ab, bb, cb, db) = (upload(d, &ra), upload(d, &rb), upload(d, &rc), zeros::<f32>(d, 128));
    let args = vec![ptr(&ab), ptr(&bb), ptr(&cb), ptr(&db), KernelArg::I32(bf as i32)];
    d.launch(&plan(&m(), "mma_registers", Dim3::x(1), Dim3::x(32), args)).unwrap();
    let rd: Vec<f32> = download(&db);
    for lane in 0..32 {
        for i in 0..4 {
            let (row, col) = c_pos(lane, i);
            let mut want = c[row * 8 + col] as f64;
            let mut scale = want.abs();
            for k in 0..16 {
                let p = from16(a[row * 16 + k]) * from16(b[k * 8 + col]);
                want += p;
                scale += p.abs();
            }
            let got = rd[4 * lane + i] as f64;
            // f32 accumulation (the GPU's, or the emulator's single rounding) stays within a few
            // ulp of the magnitudes summed.
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON as f64 * scale,
                "{}: {} mma: D[{row}][{col}] (lane {lane}, d{i}) = {got}, want {want}",
                d.describe(),
                if bf { "bf16" } else { "f16" }
            );
        }
    }
}

#[test]
fn mma_f16_matches_a_cpu_matmul() {
    for d in devices() {
        for seed in [1, 2, 3] {
            run_mma(&d, false, seed);
        }
    }
}

#[test]
fn mma_bf16_matches_a_cpu_matmul() {
    for d in devices() {
        for seed in [4, 5, 6] {
            run_mma(&d, true, seed);
        }
    }
}

#[test]
fn cp_async_ldmatrix_and_mma_compose_into_a_tile_matmul() {
    for d in devices() {
        tile_matmul_on(&d);
    }
}

fn tile_matmul_on(d: &GpuDevice) {
    let mut rng = Rng(77);
    let a: Vec<f16> = (0..256).map(|_| f16::from_f32(rng.uniform())).collect();
    let b: Vec<f16> = (0..128).map(|_| f16::from_f32(rng.uniform())).collect();
    let reps = 3;
    let (ab, bb, db) = (upload(d, &a), upload(d, &b), zeros::<f32>(d, 128));
    let args = vec![ptr(&ab), ptr(&bb), ptr(&db), KernelArg::I32(reps)];
    d.launch(&plan(&m(), "mma_tile", Dim3::x(1), Dim3::x(32), args)).unwrap();
    let got: Vec<f32> = download(&db);
    for i in 0..16 {
        for j in 0..8 {
            let dot: f64 = (0..16).map(|k| a[i * 16 + k].to_f64() * b[k * 8 + j].to_f64()).sum();
            let scale: f64 = (0..16).map(|k| (a[i * 16 + k].to_f64() * b[k * 8 + j].to_f64()).abs()).sum();
            let want = reps as f64 * dot;
            let g = got[i * 8 + j] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * reps as f64 * scale.max(1e-3),
                "{}: D[{i}][{j}] = {g}, want {want}",
                d.describe()
            );
        }
    }
}

#[test]
fn cp_async_groups_land_at_their_waits() {
    for d in devices() {
        cp_async_groups_on(&d);
    }
}

fn cp_async_groups_on(d: &GpuDevice) {
    let emulated = d.backend() == Backend::Emu;
    let n = 64usize;
    let src: Vec<f32> = (0..12 * n).map(|i| i as f32).collect();
    let (sb, ob) = (upload(d, &src), zeros::<f32>(d, 6 * n));
    let p = plan(&m(), "cp_async_groups", Dim3::x(1), Dim3::x(n as u32), vec![ptr(&sb), ptr(&ob)]);
    d.launch(&p.with_shared((3 * 4 * n * 4) as u32)).unwrap();
    let out: Vec<f32> = download(&ob);
    for t in 0..n {
        let next = (t + 1) % n;
        let o = &out[6 * t..6 * t + 6];
        // The emulator completes copies only at a wait covering them: before it, fresh dynamic
        // shared memory still reads as NaN (a GPU may or may not have landed the copy).
        if emulated {
            assert!(o[0].is_nan(), "thread {t}: a copy is visible before its wait ({})", o[0]);
        }
        assert_eq!(o[1], src[4 * t + 1], "thread {t}: own group 0 after wait<1>");
        assert_eq!(o[2], src[4 * next + 2], "thread {t}: neighbour's group 0 after wait<1> + barrier");
        assert_eq!(o[3], src[4 * (n + next) + 3], "thread {t}: neighbour's group 1 after wait<0> + barrier");
        assert_eq!(o[4], src[4 * (2 * n + next)], "thread {t}: uncommitted copy after wait_all + barrier");
    }
}
