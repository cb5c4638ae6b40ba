//! The CUDA emulator (`Device::Emu`, docs/kernels.md): the same .cu sources the GPU runs, compiled
//! by the host C++ compiler against kernels/emu/ and run on the CPU.
//!
//! - Device memory is host memory (256-byte aligned). Uninitialised allocations are filled with
//!   0xFF bytes, so a kernel that reads before writing sees NaNs.
//! - A module (kernel file + defines) is compiled once into a shared library, cached on disk
//!   ([`crate::cache::DiskCache`] kind "emu") and loaded with libloading.
//! - A block's threads are cooperative fibers on one OS thread (kernels/emu/runtime.h); blocks
//!   run in parallel on rayon's pool. Results do not depend on the number of threads except
//!   through the order of floating-point atomics.
//! - Sanitizer mode (`ATTUNE_EMU_SANITIZE=1` or [`EmuOptions::sanitize`]) compiles with
//!   AddressSanitizer and runs blocks serially; see [`sanitizer_env`].

mod compile;
mod module;
mod run;
mod sanitize;

pub use module::EmuStats;
pub use run::stack_size;
pub use sanitize::{
    sanitize_requested, sanitizer_env, sanitizer_preload, sanitizer_runtime_loaded, set_sanitize_default,
};

use crate::cache::DiskCache;
use crate::{Allocation, Backend, Error, Executor, LaunchPlan, Result};
use module::ModuleMap;
use std::alloc::Layout;
use std::path::PathBuf;

/// How an [`EmuExecutor`] is set up.
#[derive(Debug, Clone, Default)]
pub struct EmuOptions {
    /// Where compiled modules are cached; `None`: [`crate::cache::cache_root`]`/emu`.
    pub cache_dir: Option<PathBuf>,
    /// Compile with AddressSanitizer and run blocks serially (the process must have the ASan
    /// runtime preloaded, see [`sanitizer_preload`]).
    pub sanitize: bool,
}

impl EmuOptions {
    /// The defaults, with `sanitize` from [`sanitize_requested`] (`ATTUNE_EMU_SANITIZE`).
    pub fn from_env() -> EmuOptions {
        EmuOptions { cache_dir: None, sanitize: sanitize_requested() }
    }
}

/// Runs kernels on the host.
pub struct EmuExecutor {
    modules: ModuleMap,
    sanitize: bool,
}

impl EmuExecutor {
    /// The emulator with [`EmuOptions::from_env`]. Fails when no host C++ compiler runs.
    pub fn new() -> Result<EmuExecutor> {
        EmuExecutor::with_options(EmuOptions::from_env())
    }

    /// The emulator with explicit options.
    pub fn with_options(options: EmuOptions) -> Result<EmuExecutor> {
        compile::host_compiler()?;
        let cache = match options.cache_dir {
            Some(dir) => DiskCache::new(dir, "emu"),
            None => DiskCache::default_for("emu"),
        };
        Ok(EmuExecutor { modules: ModuleMap::new(cache), sanitize: options.sanitize })
    }

    /// Whether kernels run under AddressSanitizer.
    pub fn sanitize(&self) -> bool {
        self.sanitize
    }

    /// How many modules were compiled and how many came from the disk cache.
    pub fn stats(&self) -> EmuStats {
        self.modules.stats()
    }

    /// The directory of compiled modules.
    pub fn cache_dir(&self) -> PathBuf {
        self.modules.cache().dir().to_path_buf()
    }

    /// Compiles (or loads) the module of `spec` without launching anything.
    pub fn prepare(&self, spec: &crate::ModuleSpec) -> Result<()> {
        self.modules.get(spec, self.sanitize).map(|_| ())
    }
}

/// Host memory standing in for device memory.
#[derive(Debug)]
struct EmuAllocation {
    ptr: *mut u8,
}

// SAFETY: the allocation is plain memory owned by this value; kernels and copies synchronise
// through the executor's calls, as device memory does through stream order.
unsafe impl Send for EmuAllocation {}
unsafe impl Sync for EmuAllocation {}

impl Allocation for EmuAllocation {
    fn device_ptr(&self) -> u64 {
        self.ptr as u64
    }
    fn host_ptr(&self) -> Option<*mut u8> {
        Some(self.ptr)
    }
}

impl Drop for EmuAllocation {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc` by posix_memalign.
        unsafe { libc::free(self.ptr.cast()) };
    }
}

fn host_ptr(op: &'static str, a: &dyn Allocation) -> Result<*mut u8> {
    a.host_ptr().ok_or_else(|| Error::WrongDevice { op, got: "a GPU".into(), expected: "emu".into() })
}

impl Executor for EmuExecutor {
    fn backend(&self) -> Backend {
        Backend::Emu
    }

    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<Box<dyn Allocation>> {
        // cudaMalloc alignment; a zero-byte buffer still gets a unique address.
        let layout = Layout::from_size_align(bytes.max(1), 256).map_err(|_| Error::OutOfRange {
            op: "emu alloc",
            offset: 0,
            end: bytes,
            len: isize::MAX as usize,
        })?;
        // Straight from libc, not the program's global allocator (xtask uses mimalloc): under
        // the sanitizer, ASan intercepts malloc-family calls, so device buffers get redzones
        // and a kernel's out-of-bounds global access is reported.
        let mut raw: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: posix_memalign writes a pointer to `raw` on success; the size is non-zero.
        let rc = unsafe { libc::posix_memalign(&mut raw, layout.align(), layout.size()) };
        let ptr = if rc == 0 { raw.cast::<u8>() } else { std::ptr::null_mut() };
        if zeroed && !ptr.is_null() {
            // SAFETY: `ptr` is valid for `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        if ptr.is_null() {
            return Err(Error::Io {
                what: "emu: allocating device memory",
                path: format!("{bytes} bytes"),
                source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            });
        }
        if !zeroed {
            // SAFETY: `ptr` is valid for `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, 0xff, layout.size()) };
        }
        Ok(Box::new(EmuAllocation { ptr }))
    }

    fn htod(&self, src: &[u8], dst: &dyn Allocation, offset: usize) -> Result<()> {
        let d = host_ptr("emu htod", dst)?;
        // SAFETY: GpuBuffer checked the range against the allocation's length.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), d.add(offset), src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: &dyn Allocation, offset: usize, out: &mut [u8]) -> Result<()> {
        let s = host_ptr("emu dtoh", src)?;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(s.add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn dtod(
        &self,
        src: &dyn Allocation,
        src_offset: usize,
        dst: &dyn Allocation,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let s = host_ptr("emu dtod", src)?;
        let d = host_ptr("emu dtod", dst)?;
        // SAFETY: ranges checked by GpuBuffer; `copy` allows overlap within one buffer.
        unsafe { std::ptr::copy(s.add(src_offset), d.add(dst_offset), len) };
        Ok(())
    }

    fn launch(&self, plan: &LaunchPlan) -> Result<()> {
        run::validate(plan)?;
        let module = self.modules.get(&plan.module, self.sanitize)?;
        let entry = module.entry(&plan.entry)?;
        let given: Vec<usize> = plan.args.iter().map(|a| a.bytes().len()).collect();
        let expected: Vec<usize> = entry.arg_sizes.iter().map(|&s| s as usize).collect();
        if given != expected {
            return Err(Error::BadLaunch {
                backend: "emu",
                entry: plan.entry.clone(),
                grid: plan.grid.to_array(),
                block: plan.block.to_array(),
                shared: plan.shared_mem_bytes,
                why: format!(
                    "the kernel takes {} arguments of {:?} bytes but the plan passes {} of {:?} bytes",
                    expected.len(),
                    expected,
                    given.len(),
                    given
                ),
            });
        }
        run::run(&module, entry, plan, self.sanitize)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        if self.sanitize {
            "CUDA emulator (AddressSanitizer, blocks run serially)".into()
        } else {
            let n = rayon::current_num_threads();
            format!("CUDA emulator ({n} host thread{})", if n == 1 { "" } else { "s" })
        }
    }
}
