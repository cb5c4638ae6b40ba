//! bf16 matrix multiply on Intel's tile unit (AMX: `tdpbf16ps`), the faster kernel of
//! [`crate::cpu::bf16dot::gemm`] where the CPU has it.
//!
//! One `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one (as 16 rows of 16 VNNI
//! pairs) into a 16 x 16 f32 tile: 16,384 flops per instruction. `cargo xtask peak` measures it
//! next to the f32 FMA and `vdpbf16ps` peaks; on the Xeon of one development machine the tiles
//! gave about 3.7 TFLOP/s per thread where its `vdpbf16ps` gave 123 GFLOP/s and its f32 FMA 245:
//! there the dot-product instruction runs at half the FMA rate, so without the tiles bf16 is
//! slower than f32.
//!
//! The operands are bf16dot's packed buffers: a lhs row of pairs is a tile row (16 pairs, 64
//! bytes, rows `stride` words apart) and a 16-column rhs panel is exactly a tile of VNNI pairs
//! (16 pair rows of 64 bytes). Both are packed with their pair count padded to a multiple of
//! [`K_PAIRS`] and the lhs rows to a multiple of [`TILE_ROWS`], zero-filled, so every tile load
//! is whole and the padding adds zeros.
//!
//! Linux hands out the tile registers only to a process that asked (`arch_prctl` with
//! `ARCH_REQ_XCOMP_PERM`); [`available`] asks once and uses the tiles only if it was granted.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Pairs of k per tile (a tile row is 64 bytes of 32-bit words).
pub const K_PAIRS: usize = 16;
/// Rows of a lhs tile and of a result tile.
pub const TILE_ROWS: usize = 16;
/// Columns of a result tile (one 16-column rhs panel).
const TILE_COLS: usize = 16;

/// Whether this CPU has AMX-BF16 and the kernel let this process use the tiles. The
/// permission request runs once per process. `ATTUNE_NO_AMX=1` turns the tiles off (to time
/// or test the `vdpbf16ps` kernel on a machine that has both).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("ATTUNE_NO_AMX").is_none_or(|v| v == "0") && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let (max_leaf, leaf7) = (__cpuid_count(0, 0).eax, __cpuid_count(7, 0));
    // CPUID.(7,0).EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    if max_leaf < 7 || leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with ARCH_REQ_XCOMP_PERM only changes this process's
    // permission to use the tile state; the registers the syscall instruction clobbers are
    // declared.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `c` (rows x n, row-major) += packed_a @ packed_b, or `=` with `store` (then `c` may be
/// uninitialised). `packed_a` holds `rows.next_multiple_of(16)` rows of `stride` words;
/// `packed_b` holds an even number of 16-column panels of `stride` pair rows each; `stride` is a
/// multiple of [`K_PAIRS`].
///
/// # Safety
/// [`available`] must be true, and the buffers must have the lengths above.
pub unsafe fn block(
    packed_a: &[u32],
    packed_b: &[u32],
    rows: usize,
    n: usize,
    stride: usize,
    c: &mut [MaybeUninit<f32>],
    store: bool,
) {
    debug_assert!(stride.is_multiple_of(K_PAIRS));
    debug_assert!(packed_a.len() >= rows.next_multiple_of(TILE_ROWS) * stride);
    let panels = n.div_ceil(TILE_COLS).next_multiple_of(2);
    debug_assert!(packed_b.len() >= panels * stride * TILE_COLS);
    // SAFETY: as promised by the caller.
    unsafe { x86::block(packed_a, packed_b, rows, n, stride, panels, c, store) }
}

/// `C (+)= A B` on whole tiles read in place at any row strides: `mt x nt` result tiles of
/// 16 x 16 f32 (rows `ldc` floats apart, loaded first with `load`, else overwritten), `kt`
/// tiles of 16 pairs along the reduction; A is `16 mt` rows of `16 kt` words (`lda` words
/// apart), B `16 kt` pair rows of `16 nt` words (`ldb` apart). The flash attention's products
/// (`attune_attention`'s `flash/tiles.rs`) read its operands where they lie with this.
///
/// # Safety
/// [`available`] must be true; A, B and C must be readable (C writable) at the extents above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    mt: usize,
    nt: usize,
    kt: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    // SAFETY: as promised by the caller.
    unsafe { x86::product(mt, nt, kt, a, lda, b, ldb, c, ldc, load) }
}

/// `iters` rounds of four independent `tdpbf16ps` (65,536 flops a round) on tiles loaded
/// once: the tile unit's peak, for `cargo xtask peak`. Returns a value of the results so the
/// work is not optimised away.
///
/// # Safety
/// [`available`] must be true.
#[cfg(feature = "testing")]
pub unsafe fn peak_loop(iters: u64) -> f32 {
    // SAFETY: as promised by the caller.
    unsafe { x86::peak_loop(iters) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{K_PAIRS, TILE_COLS, TILE_ROWS};

    /// Panels per column block: their packed pairs (256 KiB at 256 pairs) stay in L2 while
    /// every row group passes over them.
    const PANELS_PER_BLOCK: usize = 16;

    /// The tile configuration (palette 1): tiles 0-3 hold results, 4-5 lhs tiles and 6-7 rhs
    /// panels; each is 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn new() -> Self {
            let mut bytes = [0u8; 64];
            bytes[0] = 1;
            for t in 0..8 {
                bytes[16 + 2 * t] = 64;
                bytes[48 + t] = TILE_ROWS as u8;
            }
            Config(bytes)
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        packed_a: &[u32],
        packed_b: &[u32],
        rows: usize,
        n: usize,
        stride: usize,
        panels: usize,
        c: &mut [MaybeUninit<f32>],
        store: bool,
    ) {
        let config = Config::new();
        // Two 16 x 16 result tiles side by side per row tile: 2 x 16 rows of 32 floats.
        let mut scratch = Scratch([0f32; 2 * TILE_ROWS * 2 * TILE_COLS]);
        let a_bytes = stride * 4;
        // SAFETY: available() granted the tile state; the configuration is valid palette 1.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
        for qb in (0..panels).step_by(PANELS_PER_BLOCK) {
            let mut r = 0;
            while r < rows {
                let two = rows - r > TILE_ROWS;
                for q in (qb..(qb + PANELS_PER_BLOCK).min(panels)).step_by(2) {
                    let a0 = packed_a[r * stride..].as_ptr();
                    let b0 = packed_b[q * stride * TILE_COLS..].as_ptr();
                    let b1 = packed_b[(q + 1) * stride * TILE_COLS..].as_ptr();
                    let take = (rows - r).min(2 * TILE_ROWS);
                    let col0 = q * TILE_COLS;
                    // Whole result tiles inside `c` are loaded and stored there in place; the
                    // others go through the scratch and a masked write.
                    let direct = col0 + 2 * TILE_COLS <= n && take == if two { 2 * TILE_ROWS } else { TILE_ROWS };
                    // SAFETY: each load reads 16 rows of 64 bytes: lhs rows r..r+16 (and
                    // r+16..r+32 when `two`) of the padded lhs, pair rows p..p+16 of panels q and
                    // q+1; all inside the buffers by the caller's lengths. Result tiles are 16
                    // rows of 64 bytes: in place only when all of their rows and columns are
                    // inside rows r..r+take, columns col0..col0+32 of `c` (read only when it is
                    // initialised: not `store`), else in the 64-byte-aligned scratch (128-byte
                    // rows).
                    unsafe {
                        let (home, ld) = if direct {
                            (c.as_mut_ptr().add(r * n + col0) as *mut f32, n)
                        } else {
                            (scratch.0.as_mut_ptr(), 2 * TILE_COLS)
                        };
                        let (h0, h1) = (home, home.add(TILE_COLS));
                        // Past `c`'s end for a single row tile in place: formed, never used.
                        let (h2, h3) =
                            (home.wrapping_add(TILE_ROWS * ld), home.wrapping_add(TILE_ROWS * ld + TILE_COLS));
                        let ldb = ld * 4;
                        if direct && !store {
                            asm!(
                                "tileloadd tmm0, [{h0} + {s}*1]",
                                "tileloadd tmm1, [{h1} + {s}*1]",
                                h0 = in(reg) h0, h1 = in(reg) h1, s = in(reg) ldb,
                                options(nostack, readonly),
                            );
                            if two {
                                asm!(
                                    "tileloadd tmm2, [{h2} + {s}*1]",
                                    "tileloadd tmm3, [{h3} + {s}*1]",
                                    h2 = in(reg) h2, h3 = in(reg) h3, s = in(reg) ldb,
                                    options(nostack, readonly),
                                );
                            }
                        } else {
                            asm!(
                                "tilezero tmm0",
                                "tilezero tmm1",
                                "tilezero tmm2",
                                "tilezero tmm3",
                                options(nostack, nomem)
                            );
                        }
                        // Each load is placed right before the first product that needs it, so
                        // it overlaps the products before (the tiles are not renamed).
                        if two {
                            let a1 = a0.add(TILE_ROWS * stride);
                            for p in (0..stride).step_by(K_PAIRS) {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {sa}*1]",
                                    "tileloadd tmm6, [{b0} + {sb}*1]",
                                    "tdpbf16ps tmm0, tmm4, tmm6",
                                    "tileloadd tmm7, [{b1} + {sb}*1]",
                                    "tdpbf16ps tmm1, tmm4, tmm7",
                                    "tileloadd tmm5, [{a1} + {sa}*1]",
                                    "tdpbf16ps tmm2, tmm5, tmm6",
                                    "tdpbf16ps tmm3, tmm5, tmm7",
                                    a0 = in(reg) a0.add(p),
                                    a1 = in(reg) a1.add(p),
                                    b0 = in(reg) b0.add(p * TILE_COLS),
                                    b1 = in(reg) b1.add(p * TILE_COLS),
                                    sa = in(reg) a_bytes,
                                    sb = in(reg) 64usize,
                                    options(nostack, readonly),
                                );
                            }
                        } else {
                            for p in (0..stride).step_by(K_PAIRS) {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {sa}*1]",
                                    "tileloadd tmm6, [{b0} + {sb}*1]",
                                    "tdpbf16ps tmm0, tmm4, tmm6",
                                    "tileloadd tmm7, [{b1} + {sb}*1]",
                                    "tdpbf16ps tmm1, tmm4, tmm7",
                                    a0 = in(reg) a0.add(p),
                                    b0 = in(reg) b0.add(p * TILE_COLS),
                                    b1 = in(reg) b1.add(p * TILE_COLS),
                                    sa = in(reg) a_bytes,
                                    sb = in(reg) 64usize,
                                    options(nostack, readonly),
                                );
                            }
                        }
                        asm!(
                            "tilestored [{h0} + {s}*1], tmm0",
                            "tilestored [{h1} + {s}*1], tmm1",
                            h0 = in(reg) h0, h1 = in(reg) h1, s = in(reg) ldb,
                            options(nostack),
                        );
                        if two {
                            asm!(
                                "tilestored [{h2} + {s}*1], tmm2",
                                "tilestored [{h3} + {s}*1], tmm3",
                                h2 = in(reg) h2, h3 = in(reg) h3, s = in(reg) ldb,
                                options(nostack),
                            );
                        }
                        if !direct {
                            write_out(&scratch.0, c, r, take, col0, n, store);
                        }
                    }
                }
                r += 2 * TILE_ROWS;
            }
        }
        // SAFETY: releases the tile state this call configured.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// `C (+)= A B` over `mt x nt` result tiles and `kt` pair tiles: A rows `lda` words apart,
    /// B pair rows `ldb` words apart, C rows `ldc` floats apart, C loaded first with `load`.
    ///
    /// # Safety
    /// The tile unit is available to this process; A is readable at `16 mt` rows of `16 kt`
    /// words, B at `16 kt` rows of `16 nt` words, C readable (with `load`) and writable at
    /// `16 mt` rows of `16 nt` floats.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn product(
        mt: usize,
        nt: usize,
        kt: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        let config = Config::new();
        let (sa, sb, sc) = (lda * 4, ldb * 4, ldc * 4);
        // SAFETY (whole body): every tile load or store below touches 16 rows of 64 bytes at
        // the given stride inside the extents the caller promised; pointers past them are
        // formed with wrapping_add and never used (the `two_*` flags).
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            for ti in (0..mt).step_by(2) {
                let two_i = ti + 1 < mt;
                for tj in (0..nt).step_by(2) {
                    let two_j = tj + 1 < nt;
                    let c00 = c.add(ti * TILE_ROWS * ldc + tj * TILE_COLS);
                    let (c01, c10) = (c00.wrapping_add(TILE_COLS), c00.wrapping_add(TILE_ROWS * ldc));
                    let c11 = c10.wrapping_add(TILE_COLS);
                    if load {
                        asm!("tileloadd tmm0, [{p} + {s}*1]", p = in(reg) c00, s = in(reg) sc, options(nostack, readonly));
                        if two_j {
                            asm!("tileloadd tmm1, [{p} + {s}*1]", p = in(reg) c01, s = in(reg) sc, options(nostack, readonly));
                        }
                        if two_i {
                            asm!("tileloadd tmm2, [{p} + {s}*1]", p = in(reg) c10, s = in(reg) sc, options(nostack, readonly));
                        }
                        if two_i && two_j {
                            asm!("tileloadd tmm3, [{p} + {s}*1]", p = in(reg) c11, s = in(reg) sc, options(nostack, readonly));
                        }
                    } else {
                        asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            "tilezero tmm3",
                            options(nostack, nomem)
                        );
                    }
                    for p in 0..kt {
                        let a0 = a.add(ti * TILE_ROWS * lda + p * K_PAIRS);
                        let a1 = a0.wrapping_add(TILE_ROWS * lda);
                        let b0 = b.add(p * K_PAIRS * ldb + tj * TILE_COLS);
                        let b1 = b0.wrapping_add(TILE_COLS);
                        asm!(
                            "tileloadd tmm4, [{a0} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            a0 = in(reg) a0, b0 = in(reg) b0, sa = in(reg) sa, sb = in(reg) sb,
                            options(nostack, readonly),
                        );
                        if two_j {
                            asm!(
                                "tileloadd tmm7, [{b1} + {sb}*1]",
                                "tdpbf16ps tmm1, tmm4, tmm7",
                                b1 = in(reg) b1, sb = in(reg) sb,
                                options(nostack, readonly),
                            );
                        }
                        if two_i {
                            asm!(
                                "tileloadd tmm5, [{a1} + {sa}*1]",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                a1 = in(reg) a1, sa = in(reg) sa,
                                options(nostack, readonly),
                            );
                            if two_j {
                                asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                            }
                        }
                    }
                    asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) c00, s = in(reg) sc, options(nostack));
                    if two_j {
                        asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) c01, s = in(reg) sc, options(nostack));
                    }
                    if two_i {
                        asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) c10, s = in(reg) sc, options(nostack));
                    }
                    if two_i && two_j {
                        asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) c11, s = in(reg) sc, options(nostack));
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    #[cfg(feature = "testing")]
    pub unsafe fn peak_loop(iters: u64) -> f32 {
        let config = Config::new();
        let ones = vec![0x3f80_3f80u32; TILE_ROWS * K_PAIRS];
        let mut out = Scratch([0f32; 2 * TILE_ROWS * 2 * TILE_COLS]);
        // SAFETY: the caller checked available(); every load reads 16 rows of 64 bytes of
        // `ones`, the store 16 rows of 64 bytes into the scratch.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            asm!(
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "tileloadd tmm4, [{a} + {s}*1]", "tileloadd tmm5, [{a} + {s}*1]",
                "tileloadd tmm6, [{a} + {s}*1]", "tileloadd tmm7, [{a} + {s}*1]",
                a = in(reg) ones.as_ptr(), s = in(reg) 64usize, options(nostack, readonly),
            );
            for _ in 0..iters {
                asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nostack, nomem),
                );
            }
            asm!("tilestored [{o} + {s}*1], tmm0", o = in(reg) out.0.as_mut_ptr(), s = in(reg) 64usize, options(nostack));
            asm!("tilerelease", options(nostack, nomem));
        }
        out.0[0]
    }

    #[repr(C, align(64))]
    struct Scratch([f32; 2 * TILE_ROWS * 2 * TILE_COLS]);

    /// Adds (or stores) `take` rows of the 32-column scratch into `c` from row `r0`, column
    /// `col0`, masked at `n`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn write_out(
        scratch: &[f32],
        c: &mut [MaybeUninit<f32>],
        r0: usize,
        take: usize,
        col0: usize,
        n: usize,
        store: bool,
    ) {
        let mask = |col: usize| -> __mmask16 {
            let valid = n.saturating_sub(col).min(TILE_COLS);
            ((1u32 << valid) - 1) as __mmask16
        };
        let masks = [mask(col0), mask(col0 + TILE_COLS)];
        for r in 0..take {
            // SAFETY: rows r0..r0 + take of c exist (the caller's rows); masks keep each store
            // inside its row.
            unsafe {
                let dst = c.as_mut_ptr().add((r0 + r) * n + col0) as *mut f32;
                for (v, &mk) in masks.iter().enumerate() {
                    if mk != 0 {
                        let x = _mm512_loadu_ps(scratch.as_ptr().add(r * 2 * TILE_COLS + v * TILE_COLS));
                        let d = dst.add(v * TILE_COLS);
                        let x = if store { x } else { _mm512_add_ps(_mm512_maskz_loadu_ps(mk, d), x) };
                        _mm512_mask_storeu_ps(d, mk, x);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        _: &[u32],
        _: &[u32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [std::mem::MaybeUninit<f32>],
        _: bool,
    ) {
        unreachable!("amx::available() is false off x86_64")
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn product(
        _: usize,
        _: usize,
        _: usize,
        _: *const u32,
        _: usize,
        _: *const u32,
        _: usize,
        _: *mut f32,
        _: usize,
        _: bool,
    ) {
        unreachable!("amx::available() is false off x86_64")
    }

    #[cfg(feature = "testing")]
    pub unsafe fn peak_loop(_: u64) -> f32 {
        unreachable!("amx::available() is false off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// The strided tile product against an f64 loop over the word pairs, on small integers
    /// (exact in f32): odd and even tile counts in both directions (the 2 x 2 blocking's
    /// edges), operands at strides wider than their tiles, C added to and overwritten.
    #[test]
    fn strided_product_matches_the_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no tile unit (AMX), or ATTUNE_NO_AMX is set");
            return;
        }
        let value = |i: usize| ((i * 7919 + 13) % 9) as f32 - 4.0;
        let word = |i: usize| {
            let (lo, hi) = (bf16::from_f32(value(2 * i)), bf16::from_f32(value(2 * i + 1)));
            lo.to_bits() as u32 | (hi.to_bits() as u32) << 16
        };
        let half = |w: u32, hi: bool| bf16::from_bits(if hi { (w >> 16) as u16 } else { w as u16 }).to_f64();
        for &(mt, nt, kt) in &[(1, 1, 1), (3, 2, 2), (2, 3, 1), (3, 3, 3)] {
            let (m, n, kp) = (mt * TILE_ROWS, nt * TILE_COLS, kt * K_PAIRS);
            let (lda, ldb, ldc) = (kp + 5, n + 3, n + 7);
            let a: Vec<u32> = (0..m * lda).map(word).collect();
            let b: Vec<u32> = (0..kp * ldb).map(|i| word(i + 100_000)).collect();
            let before: Vec<f32> = (0..m * ldc).map(|i| value(i + 7)).collect();
            for load in [false, true] {
                let mut c = before.clone();
                // SAFETY: available() checked; A is m rows of lda >= kp words, B kp rows of
                // ldb >= n words, C m rows of ldc >= n floats.
                unsafe { product(mt, nt, kt, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), ldc, load) };
                for i in 0..m {
                    for j in 0..ldc {
                        let want = if j < n {
                            let dot: f64 = (0..kp)
                                .map(|p| {
                                    let (x, y) = (a[i * lda + p], b[p * ldb + j]);
                                    half(x, false) * half(y, false) + half(x, true) * half(y, true)
                                })
                                .sum();
                            dot + if load { before[i * ldc + j] as f64 } else { 0.0 }
                        } else {
                            before[i * ldc + j] as f64
                        };
                        assert_eq!(c[i * ldc + j] as f64, want, "tiles {mt}x{nt}x{kt} load {load} C[{i}][{j}]");
                    }
                }
            }
        }
    }
}
