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
with_dtype!(f16, F16, f16::from_f64, |v: f16| v.to_f64());
with_dtype!(bf16, BF16, bf16::from_f64, |v: bf16| v.to_f64());
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
