//! The typed error of attune-cuda. Messages name the operation, the kernel, the values involved
//! and the fix (docs/architecture.md, "Errors").

/// Errors of the GPU runtime (toolchain discovery, compilation, launches, memory).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CUDA driver or GPU.
    #[error("cuda: no GPU is usable: {why}; run on Device::Cpu or Device::Emu (the CUDA emulator)")]
    NoGpu { why: String },

    /// NVRTC, the CUDA headers or ptxas were not found.
    #[error(
        "cuda toolchain: {what} not found (looked in: {looked}); run `cargo xtask cuda-tools` to install it from PyPI, or set {env}"
    )]
    ToolchainMissing { what: &'static str, looked: String, env: &'static str },

    /// A kernel file name that is not under kernels/.
    #[error("kernel source '{file}' is not embedded; kernel files live under kernels/ (known: {known})")]
    UnknownKernelFile { file: String, known: String },

    /// An `#include "..."` that names no embedded file.
    #[error("kernel source '{file}' includes '{include}', which is not under kernels/")]
    MissingInclude { file: String, include: String },

    /// NVRTC rejected a kernel.
    #[error("nvrtc: compiling {file} for {arch} with defines [{defines}] failed:\n{log}")]
    Nvrtc { file: String, arch: String, defines: String, log: String },

    /// The host C++ compiler rejected a kernel for the emulator.
    #[error("emu: compiling {file} with defines [{defines}] using `{compiler}` failed:\n{log}")]
    EmuCompile { file: String, defines: String, compiler: String, log: String },

    /// A compiled module has no such entry point.
    #[error(
        "{backend}: kernel '{entry}' is not defined in {file} (defines [{defines}]); check the entry name and that it is `extern \"C\" __global__`"
    )]
    MissingEntry { backend: &'static str, entry: String, file: String, defines: String },

    /// Launch geometry the device cannot run.
    #[error(
        "{backend}: launch of '{entry}' with grid {grid:?}, block {block:?}, {shared} B dynamic shared memory is invalid: {why}"
    )]
    BadLaunch { backend: &'static str, entry: String, grid: [u32; 3], block: [u32; 3], shared: u32, why: String },

    /// A kernel failed while running on the emulator (deadlock at a barrier or warp collective,
    /// `__trap()`, a failed `assert`, or a sanitizer setup problem).
    #[error("emu: kernel '{entry}' ({file}, defines [{defines}]) failed in block {block:?}: {why}")]
    EmuFault { entry: String, file: String, defines: String, block: [u32; 3], why: String },

    /// A CUDA driver or library call failed.
    #[error("cuda: {op} failed: {msg}")]
    Driver { op: &'static str, msg: String },

    /// A buffer access outside its allocation.
    #[error("{op}: range {offset}..{end} is outside a buffer of {len} bytes")]
    OutOfRange { op: &'static str, offset: usize, end: usize, len: usize },

    /// Two objects from different devices were mixed.
    #[error("{op}: buffer is on {got} but the operation runs on {expected}; move it with to_device first")]
    WrongDevice { op: &'static str, got: String, expected: String },

    /// Filesystem trouble with the kernel cache or the toolchain folder.
    #[error("{what} ({path}): {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
}

/// `Result` with attune-cuda's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(what: &'static str, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io { what, path: path.as_ref().display().to_string(), source }
    }
}
