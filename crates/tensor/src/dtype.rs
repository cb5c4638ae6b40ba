//! Element types. f16/bf16 are stored as such and computed in f32.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// Unsigned byte; masks from comparisons.
    U8,
    /// Unsigned 32-bit integer; indices.
    U32,
    /// Signed 64-bit integer; indices and labels.
    I64,
    /// IEEE half precision (computed in f32).
    F16,
    /// bfloat16 (computed in f32).
    BF16,
    /// Single precision.
    F32,
    /// Double precision (reference computations and gradient checks).
    F64,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 7] = [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];
    /// Every floating-point dtype.
    pub const FLOATS: [DType; 4] = [DType::F16, DType::BF16, DType::F32, DType::F64];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// Whether the dtype is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// Whether the dtype is an integer type.
    pub fn is_int(self) -> bool {
        !self.is_float()
    }

    /// The lower-case name used in messages and files (`f32`, `bf16`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown dtype '{s}'; expected one of u8, u32, i64, f16, bf16, f32, f64"))
    }
}

/// A Rust type that is the element of some [`DType`].
pub trait WithDType:
    Copy + Clone + Send + Sync + 'static + fmt::Debug + fmt::Display + PartialOrd + Default + bytemuck::Pod
{
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts from f64 (rounding, saturating for integers).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// Wraps a vector in CPU storage.
    fn into_storage(data: Vec<Self>) -> crate::storage::CpuStorage;
    /// Borrows the slice if the storage holds this type.
    fn slice(storage: &crate::storage::CpuStorage) -> Option<&[Self]>;
}

macro_rules! with_dtype {
    ($ty:ty, $variant:ident, $from:expr, $to:expr) => {
        impl WithDType for $ty {
            const DTYPE: DType = DType::$variant;
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn into_storage(data: Vec<Self>) -> crate::storage::CpuStorage {
                crate::storage::CpuStorage::$variant(data)
            }
            fn slice(storage: &crate::storage::CpuStorage) -> Option<&[Self]> {
                match storage {
                    crate::storage::CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

with_dtype!(u8, U8, |v: f64| v as u8, |v: u8| v as f64);
with_dtype!(u32, U32, |v: f64| v as u32, |v: u32| v as f64);
with_dtype!(i64, I64, |v: f64| v as i64, |v: i64| v as f64);
with_dtype!(f16, F16, f64_to_f16, |v: f16| v.to_f64());
with_dtype!(bf16, BF16, f64_to_bf16, |v: bf16| v.to_f64());

/// `v` rounded to f32 *to odd*: truncated toward zero, with the lowest mantissa bit set when
/// inexact. Rounding that f32 again to a format of at most 22 significant bits gives `v`
/// correctly rounded to nearest even (double rounding through round-to-odd is exact when the
/// intermediate has at least two more bits than the target).
fn f64_to_f32_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f;
    }
    // Step back toward zero when round-to-nearest went away from zero.
    let t = if (f as f64).abs() > v.abs() { f32::from_bits(f.to_bits() - 1) } else { f };
    f32::from_bits(t.to_bits() | 1)
}

/// `v` correctly rounded (to nearest, ties to even) to f16. `half`'s own `f16::from_f64`
/// (2.7) ignores the low 32 bits of the f64 when it breaks ties, so values just above a tie
/// (including f32 values) can round down; its f32 conversion is exact, so this goes through it.
pub fn f64_to_f16(v: f64) -> f16 {
    f16::from_f32(f64_to_f32_odd(v))
}

/// `v` correctly rounded (to nearest, ties to even) to bf16 (see [`f64_to_f16`] for why not
/// `bf16::from_f64`).
pub fn f64_to_bf16(v: f64) -> bf16 {
    bf16::from_f32(f64_to_f32_odd(v))
}
with_dtype!(f32, F32, |v: f64| v as f32, |v: f32| v as f64);
with_dtype!(f64, F64, |v: f64| v, |v: f64| v);

/// Floating-point element types. Low-precision types are computed in f32, others in themselves.
pub trait FloatElem: WithDType {
    /// Converts to f32.
    fn to_f32(self) -> f32;
    /// Converts from f32 (round to nearest even).
    fn from_f32(v: f32) -> Self;
}

impl FloatElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl FloatElem for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}
impl FloatElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FloatElem for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

#[cfg(test)]
mod rounding_tests {
    use super::*;

    /// `x` rounded to nearest even on a grid of `bits` significant bits (normal range only):
    /// scaling by a power of two is exact, so `round_ties_even` sees the true tie.
    fn rne(x: f64, bits: i32) -> f64 {
        let e = x.abs().log2().floor() as i32;
        let ulp = 2f64.powi(e - bits + 1);
        (x / ulp).round_ties_even() * ulp
    }

    #[test]
    fn f64_to_half_rounds_correctly_just_above_a_tie() {
        // 1 + 2^-8 is the bf16 tie between 1 and 1 + 2^-7; anything above it rounds up, even
        // when the excess sits in bits an f32 keeps but half's from_f64 ignores.
        for excess in [2f64.powi(-23), 2f64.powi(-40), 2f64.powi(-52)] {
            assert_eq!(f64_to_bf16(1.0 + 2f64.powi(-8) + excess).to_f64(), 1.0 + 2f64.powi(-7), "excess {excess:e}");
            assert_eq!(f64_to_f16(1.0 + 2f64.powi(-11) + excess).to_f64(), 1.0 + 2f64.powi(-10), "excess {excess:e}");
        }
        // Exact ties go to even.
        assert_eq!(f64_to_bf16(1.0 + 2f64.powi(-8)).to_f64(), 1.0);
        assert_eq!(f64_to_f16(1.0 + 3.0 * 2f64.powi(-11)).to_f64(), 1.0 + 2f64.powi(-9));
    }

    #[test]
    fn f64_to_half_matches_exact_rounding_on_random_values() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Values in [0.5, 2) * 2^k with all 52 mantissa bits random, both signs.
            let m = f64::from_bits(0x3ff0_0000_0000_0000 | (state >> 12));
            let k = ((state >> 3) % 20) as i32 - 10;
            let x = if state & 1 == 0 { m * 2f64.powi(k) } else { -m * 2f64.powi(k) };
            assert_eq!(f64_to_bf16(x).to_f64(), rne(x, 8), "bf16 of {x:e}");
            assert_eq!(f64_to_f16(x).to_f64(), rne(x, 11), "f16 of {x:e}");
            // f32 inputs agree with half's (exact) f32 conversions.
            let f = x as f32;
            assert_eq!(f64_to_bf16(f as f64), bf16::from_f32(f));
            assert_eq!(f64_to_f16(f as f64), f16::from_f32(f));
        }
    }
}
