//! Storage: the buffer behind one or more tensors. `Storage` is the device-level enum (host
//! memory, or a GPU's or the CUDA emulator's behind one `GpuStorage`; the Tensor API is the same),
//! `CpuStorage` the dtype-level enum of host vectors.

use crate::{DType, Device, Layout, WithDType};
use half::{bf16, f16};

/// A host buffer of one dtype.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    /// u8 elements.
    U8(Vec<u8>),
    /// u32 elements.
    U32(Vec<u32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any `CpuStorage` variant, binding it to `$v`.
#[macro_export]
#[doc(hidden)]
macro_rules! cpu_storage_apply {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::storage::CpuStorage::U8($v) => $body,
            $crate::storage::CpuStorage::U32($v) => $body,
            $crate::storage::CpuStorage::I64($v) => $body,
            $crate::storage::CpuStorage::F16($v) => $body,
            $crate::storage::CpuStorage::BF16($v) => $body,
            $crate::storage::CpuStorage::F32($v) => $body,
            $crate::storage::CpuStorage::F64($v) => $body,
        }
    };
}

/// Like [`cpu_storage_apply`] but rebuilds a storage of the same variant from the result.
#[macro_export]
#[doc(hidden)]
macro_rules! cpu_storage_map {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::storage::CpuStorage::U8($v) => $crate::storage::CpuStorage::U8($body),
            $crate::storage::CpuStorage::U32($v) => $crate::storage::CpuStorage::U32($body),
            $crate::storage::CpuStorage::I64($v) => $crate::storage::CpuStorage::I64($body),
            $crate::storage::CpuStorage::F16($v) => $crate::storage::CpuStorage::F16($body),
            $crate::storage::CpuStorage::BF16($v) => $crate::storage::CpuStorage::BF16($body),
            $crate::storage::CpuStorage::F32($v) => $crate::storage::CpuStorage::F32($body),
            $crate::storage::CpuStorage::F64($v) => $crate::storage::CpuStorage::F64($body),
        }
    };
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        cpu_storage_apply!(self, v => v.len())
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Borrows the buffer as a slice of `T`, if that is its dtype.
    pub fn as_slice<T: WithDType>(&self) -> Option<&[T]> {
        T::slice(self)
    }

    /// Copies the elements selected by `layout` into a new contiguous buffer.
    pub fn copy_strided(&self, layout: &Layout) -> CpuStorage {
        if let Some((a, b)) = layout.contiguous_range() {
            return cpu_storage_map!(self, v => v[a..b].to_vec());
        }
        cpu_storage_map!(self, v => crate::cpu::strided::map1(v, layout.dims(), layout.strides(), layout.offset(), |x| x))
    }

    /// A buffer of `n` zeros.
    pub fn zeros(dtype: DType, n: usize) -> CpuStorage {
        match dtype {
            DType::U8 => CpuStorage::U8(vec![0; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
        }
    }

    /// A buffer of `n` copies of `value` (converted from f64).
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuStorage {
        match dtype {
            DType::U8 => CpuStorage::U8(vec![u8::from_f64(value); n]),
            DType::U32 => CpuStorage::U32(vec![u32::from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![i64::from_f64(value); n]),
            DType::F16 => CpuStorage::F16(vec![crate::f64_to_f16(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![crate::f64_to_bf16(value); n]),
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
        }
    }

    /// The elements selected by `layout` converted to `dtype` in a new contiguous buffer.
    pub fn to_dtype(&self, layout: &Layout, dtype: DType) -> CpuStorage {
        macro_rules! conv {
            ($src:expr, $f:expr) => {{
                let src = $src;
                let d = layout.dims();
                let (s, o) = (layout.strides(), layout.offset());
                match dtype {
                    DType::U8 => CpuStorage::U8(crate::cpu::strided::map1(src, d, s, o, |x| u8::from_f64($f(x)))),
                    DType::U32 => CpuStorage::U32(crate::cpu::strided::map1(src, d, s, o, |x| u32::from_f64($f(x)))),
                    DType::I64 => CpuStorage::I64(crate::cpu::strided::map1(src, d, s, o, |x| i64::from_f64($f(x)))),
                    DType::F16 => {
                        CpuStorage::F16(crate::cpu::strided::map1(src, d, s, o, |x| crate::f64_to_f16($f(x))))
                    }
                    DType::BF16 => {
                        CpuStorage::BF16(crate::cpu::strided::map1(src, d, s, o, |x| crate::f64_to_bf16($f(x))))
                    }
                    DType::F32 => CpuStorage::F32(crate::cpu::strided::map1(src, d, s, o, |x| $f(x) as f32)),
                    DType::F64 => CpuStorage::F64(crate::cpu::strided::map1(src, d, s, o, |x| $f(x))),
                }
            }};
        }
        if self.dtype() == dtype {
            return self.copy_strided(layout);
        }
        cpu_storage_apply!(self, v => conv!(v.as_slice(), WithDType::to_f64))
    }
}

/// The device-level storage enum.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// Memory of a GPU or of the CUDA emulator.
    Gpu(crate::gpu::GpuStorage),
}

impl Storage {
    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(g) => g.device(),
        }
    }
    /// The element dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(g) => g.dtype(),
        }
    }
}
