//! `LaunchPlan`: everything needed to run one kernel, built by plain Rust and handed to either
//! executor (the CUDA driver or the emulator; docs/architecture.md). Only the executor differs between
//! devices, so a plan that passes on the emulator runs the same code on a GPU.

/// Grid or block dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim3 {
    /// x extent.
    pub x: u32,
    /// y extent.
    pub y: u32,
    /// z extent.
    pub z: u32,
}

impl Dim3 {
    /// `(x, 1, 1)`.
    pub const fn x(x: u32) -> Dim3 {
        Dim3 { x, y: 1, z: 1 }
    }
    /// `(x, y, z)`.
    pub const fn new(x: u32, y: u32, z: u32) -> Dim3 {
        Dim3 { x, y, z }
    }
    /// `x * y * z`.
    pub fn count(self) -> u64 {
        self.x as u64 * self.y as u64 * self.z as u64
    }
    /// As an array, for error messages.
    pub fn to_array(self) -> [u32; 3] {
        [self.x, self.y, self.z]
    }
}

/// One kernel argument, passed by value as `cuLaunchKernel` passes it: the executor builds a
/// `void*` array pointing at each argument's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelArg {
    /// A device address (from [`crate::GpuBuffer::device_ptr`] plus a byte offset).
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `long long`.
    I64(i64),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
    /// A plain-old-data struct passed by value (its bytes, laid out as the C struct is).
    Pod(Vec<u8>),
}

impl KernelArg {
    /// The argument's bytes as the kernel reads them.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => v.to_ne_bytes().to_vec(),
            KernelArg::I32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::U32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::I64(v) => v.to_ne_bytes().to_vec(),
            KernelArg::F32(v) => v.to_ne_bytes().to_vec(),
            KernelArg::F64(v) => v.to_ne_bytes().to_vec(),
            KernelArg::Pod(b) => b.clone(),
        }
    }

    /// A POD struct argument from any `bytemuck::Pod` value.
    pub fn pod<T: bytemuck::Pod>(value: &T) -> KernelArg {
        KernelArg::Pod(bytemuck::bytes_of(value).to_vec())
    }
}

/// A compile-time specialisation: `-D NAME=VALUE`.
pub type Define = (String, String);

/// Which compiled module a kernel comes from: a kernel family file and its defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleSpec {
    /// Path of the kernel family under kernels/ (e.g. `tensor/unary.cu`).
    pub file: String,
    /// Defines, sorted by name so equal specialisations share one module.
    pub defines: Vec<Define>,
}

impl ModuleSpec {
    /// A module of `file` specialised with `defines` (sorted here).
    pub fn new(file: impl Into<String>, defines: impl IntoIterator<Item = (String, String)>) -> ModuleSpec {
        let mut defines: Vec<Define> = defines.into_iter().collect();
        defines.sort();
        ModuleSpec { file: file.into(), defines }
    }

    /// The defines as `A=1 B=2`, for messages and cache keys.
    pub fn defines_string(&self) -> String {
        self.defines.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    /// The module (kernel file + defines).
    pub module: ModuleSpec,
    /// The `extern "C" __global__` entry point.
    pub entry: String,
    /// Number of blocks.
    pub grid: Dim3,
    /// Threads per block (a multiple of 32, docs/kernels.md).
    pub block: Dim3,
    /// Dynamic shared memory in bytes (`extern __shared__`).
    pub shared_mem_bytes: u32,
    /// The arguments, in the kernel's parameter order.
    pub args: Vec<KernelArg>,
}

impl LaunchPlan {
    /// A plan with no dynamic shared memory.
    pub fn new(module: ModuleSpec, entry: impl Into<String>, grid: Dim3, block: Dim3, args: Vec<KernelArg>) -> Self {
        LaunchPlan { module, entry: entry.into(), grid, block, shared_mem_bytes: 0, args }
    }

    /// Sets the dynamic shared memory.
    pub fn with_shared(mut self, bytes: u32) -> Self {
        self.shared_mem_bytes = bytes;
        self
    }

    /// The usual 1-D plan: `n` work items, `threads` per block, one item per thread.
    pub fn linear(module: ModuleSpec, entry: impl Into<String>, n: usize, threads: u32, args: Vec<KernelArg>) -> Self {
        let blocks = n.div_ceil(threads as usize).max(1) as u32;
        LaunchPlan::new(module, entry, Dim3::x(blocks), Dim3::x(threads), args)
    }
}
