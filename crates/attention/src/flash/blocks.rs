//! The register-block walk shared by the AVX-512 tile kernels (f32 in [`super::kernel`], bf16
//! dot products in [`super::dot`]): C in column strips of up to 4 vectors of 16 lanes (the
//! last masked), each strip in row blocks sized so the accumulators fill 24 of the 32 zmm
//! registers (6 x 4, 8 x 3, 12 x 2; 12 x 1 as more rows would only add broadcasts), and the
//! dispatch of each block to a kernel monomorphised on its rows and vectors.

/// Runs `$body` for every register block of an `$m x $n` product, with `$i0`, `$j0` its first
/// row and column, `$masks` the lane masks of its vectors (`[__mmask16; 4]`), `$rows` its rows
/// and `$nv` its vectors.
macro_rules! for_register_blocks {
    ($m:expr, $n:expr, |$i0:ident, $j0:ident, $masks:ident, $rows:ident, $nv:ident| $body:block) => {{
        let (m, n): (usize, usize) = ($m, $n);
        let mut $j0 = 0;
        while $j0 < n {
            let w = (n - $j0).min(64);
            let $nv = w.div_ceil(16);
            let mut $masks = [0 as __mmask16; 4];
            for (v, mk) in $masks.iter_mut().enumerate() {
                let lanes = w.saturating_sub(v * 16).min(16);
                *mk = ((1u32 << lanes) - 1) as __mmask16;
            }
            let most = match $nv {
                4 => 6,
                3 => 8,
                _ => 12,
            };
            let mut $i0 = 0;
            while $i0 < m {
                let $rows = (m - $i0).min(most);
                $body
                $i0 += $rows;
            }
            $j0 += w;
        }
    }};
}

/// Calls `$go!(R, V)` with the literals of a block of `$rows` rows and `$nv` vectors.
macro_rules! dispatch_block {
    ($go:ident, $rows:expr, $nv:expr) => {
        match ($nv, $rows) {
            (4, 6) => $go!(6, 4),
            (4, 5) => $go!(5, 4),
            (4, 4) => $go!(4, 4),
            (4, 3) => $go!(3, 4),
            (4, 2) => $go!(2, 4),
            (4, _) => $go!(1, 4),
            (3, 8) => $go!(8, 3),
            (3, 7) => $go!(7, 3),
            (3, 6) => $go!(6, 3),
            (3, 5) => $go!(5, 3),
            (3, 4) => $go!(4, 3),
            (3, 3) => $go!(3, 3),
            (3, 2) => $go!(2, 3),
            (3, _) => $go!(1, 3),
            (2, 12) => $go!(12, 2),
            (2, 11) => $go!(11, 2),
            (2, 10) => $go!(10, 2),
            (2, 9) => $go!(9, 2),
            (2, 8) => $go!(8, 2),
            (2, 7) => $go!(7, 2),
            (2, 6) => $go!(6, 2),
            (2, 5) => $go!(5, 2),
            (2, 4) => $go!(4, 2),
            (2, 3) => $go!(3, 2),
            (2, 2) => $go!(2, 2),
            (2, _) => $go!(1, 2),
            (_, 12) => $go!(12, 1),
            (_, 11) => $go!(11, 1),
            (_, 10) => $go!(10, 1),
            (_, 9) => $go!(9, 1),
            (_, 8) => $go!(8, 1),
            (_, 7) => $go!(7, 1),
            (_, 6) => $go!(6, 1),
            (_, 5) => $go!(5, 1),
            (_, 4) => $go!(4, 1),
            (_, 3) => $go!(3, 1),
            (_, 2) => $go!(2, 1),
            (_, _) => $go!(1, 1),
        }
    };
}
