//! The CUDA executor: the driver API through cudarc (loaded at run time, so nothing CUDA is
//! needed to build), one primary context and one stream per device.
//!
//! Modules are compiled by [`crate::nvrtc`] (a cubin for the device's exact `sm_XX` when NVRTC
//! supports it, else PTX for the nearest older arch, which the driver JIT-compiles) and kept
//! in a map that launches read without locking (`ArcSwap`); the rare writers (first use of a
//! module or entry) are serialised by a mutex and publish a new map.
//!
//! Launches go through raw `cuLaunchKernel` with a `void*` array pointing at each argument's
//! bytes ([`KernelArg::bytes`]), the convention the emulator follows too. The driver copies
//! the arguments at launch, so the array lives only for the call.
//!
//! The arguments are not checked against the kernel's parameter list (cudarc exposes no
//! `cuFuncGetParamInfo`): a plan with the wrong arguments is a bug in the plan, which the
//! emulator catches first.

use crate::nvrtc::{self, Target};
use crate::{Allocation, Backend, Error, Executor, KernelArg, LaunchPlan, ModuleSpec, Result};
use arc_swap::ArcSwap;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, result};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Dynamic shared memory a kernel may use without opting in (48 KiB on every arch since sm_20).
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

fn driver(op: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::Driver { op, msg: format!("{e:?}") }
}

/// Loads libcuda, runs `cuInit` and counts devices, once per process: `Err` says why no GPU
/// is usable. Never panics (cudarc's loader panics when the library is absent, so presence is
/// checked first).
fn probe() -> &'static std::result::Result<usize, String> {
    static PROBE: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        // SAFETY: only tries to open the candidate library names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("the CUDA driver library (libcuda.so.1) is not installed or not on the loader path".into());
        }
        result::init().map_err(|e| format!("cuInit failed with code {:?} ({e:?})", e.0))?;
        let n = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
        if n <= 0 { Err("the CUDA driver reports zero devices".into()) } else { Ok(n as usize) }
    })
}

/// Number of usable CUDA devices (0 when libcuda is absent, `cuInit` fails or no GPU is present).
pub fn device_count() -> usize {
    probe().as_ref().copied().unwrap_or(0)
}

/// Why no GPU is usable, or `None` when one is.
pub fn unavailable_reason() -> Option<String> {
    probe().as_ref().err().cloned()
}

/// A kernel entry ready to launch.
struct Function {
    func: CudaFunction,
    /// The dynamic shared memory limit set with `cuFuncSetAttribute` so far.
    max_dynamic_shared: AtomicU32,
}

/// A loaded module and its entries looked up so far.
struct Module {
    module: Arc<CudaModule>,
    target: Target,
    functions: ArcSwap<HashMap<String, Arc<Function>>>,
}

/// Runs kernels on one GPU.
pub struct CudaExecutor {
    /// cuBLAS state, created on first use by [`crate::blas`]. First, so it is dropped before
    /// the stream it is bound to.
    pub(crate) blas: Mutex<Option<crate::blas::BlasHandle>>,
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// Compute capability as `major * 10 + minor`.
    sm: u32,
    max_shared_optin: u32,
    max_threads_per_block: u32,
    sm_count: u32,
    modules: ArcSwap<HashMap<ModuleSpec, Arc<Module>>>,
    /// Serialises writers of `modules` and of each module's `functions`.
    writer: Mutex<()>,
}

impl CudaExecutor {
    /// Opens GPU `ordinal`: its primary context and a new stream.
    pub fn new(ordinal: usize) -> Result<CudaExecutor> {
        let count = probe().clone().map_err(|why| Error::NoGpu { why })?;
        if ordinal >= count {
            return Err(Error::NoGpu {
                why: format!("there is no GPU {ordinal}; the driver reports {count} device(s)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("opening the device's primary context"))?;
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let attr = |a: CUdevice_attribute| ctx.attribute(a).map_err(driver("cuDeviceGetAttribute"));
        let major = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let max_shared_optin = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let max_threads = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let name = ctx.name().unwrap_or_else(|_| "unnamed GPU".into());
        Ok(CudaExecutor {
            ordinal,
            ctx,
            stream,
            name,
            sm: (major * 10 + minor) as u32,
            max_shared_optin: max_shared_optin.max(0) as u32,
            max_threads_per_block: max_threads.max(0) as u32,
            sm_count: sm_count.max(1) as u32,
            modules: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
            blas: Mutex::new(None),
        })
    }

    /// The device's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation of this executor is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compute capability as `major * 10 + minor` (90 for an H100).
    pub fn compute_capability(&self) -> u32 {
        self.sm
    }

    /// GPU time of the work `f` queues on this executor's stream, in milliseconds, measured
    /// with CUDA events recorded before and after it (not host wall time).
    pub fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timing).map_err(driver("cuEventRecord"))?;
        f()?;
        let end = self.stream.record_event(timing).map_err(driver("cuEventRecord"))?;
        Ok(start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))? as f64)
    }

    /// The device name the driver reports (e.g. "NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Streaming multiprocessors (sizing split-KV grids).
    pub fn sm_count(&self) -> usize {
        self.sm_count as usize
    }

    /// The ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("binding the CUDA context to this thread"))
    }

    /// What modules are compiled for on this device.
    pub fn target(&self) -> Result<Target> {
        static SUPPORTED: OnceLock<Vec<u32>> = OnceLock::new();
        let supported = match SUPPORTED.get() {
            Some(s) => s,
            None => {
                let s = nvrtc::supported_archs()?;
                SUPPORTED.get_or_init(|| s)
            }
        };
        nvrtc::target_for_device(self.sm, supported).ok_or_else(|| Error::NoGpu {
            why: format!("this NVRTC compiles for sm_{supported:?} but the GPU is sm_{}", self.sm),
        })
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded module for `spec`, compiling and loading it on first use.
    fn module(&self, spec: &ModuleSpec) -> Result<Arc<Module>> {
        if let Some(m) = self.modules.load().get(spec) {
            return Ok(m.clone());
        }
        let _w = self.lock_writer();
        // Another thread may have loaded it while this one waited.
        if let Some(m) = self.modules.load().get(spec) {
            return Ok(m.clone());
        }
        let target = self.target()?;
        let compiled = nvrtc::compile(spec, target)?;
        let image = if target.is_cubin() {
            cudarc::nvrtc::Ptx::from_binary(compiled.image)
        } else {
            cudarc::nvrtc::Ptx::from_src(String::from_utf8_lossy(&compiled.image).into_owned())
        };
        let module = self.ctx.load_module(image).map_err(|e| Error::Driver {
            op: "cuModuleLoadData",
            msg: format!("{} [{}] for {target}: {e:?}", spec.file, spec.defines_string()),
        })?;
        let loaded = Arc::new(Module { module, target, functions: ArcSwap::from_pointee(HashMap::new()) });
        let mut map = HashMap::clone(&self.modules.load());
        map.insert(spec.clone(), loaded.clone());
        self.modules.store(Arc::new(map));
        Ok(loaded)
    }

    /// The entry `entry` of `spec`.
    fn function(&self, spec: &ModuleSpec, entry: &str) -> Result<Arc<Function>> {
        let module = self.module(spec)?;
        if let Some(f) = module.functions.load().get(entry) {
            return Ok(f.clone());
        }
        let _w = self.lock_writer();
        if let Some(f) = module.functions.load().get(entry) {
            return Ok(f.clone());
        }
        let missing = || Error::MissingEntry {
            backend: "cuda",
            entry: entry.to_string(),
            file: spec.file.clone(),
            defines: spec.defines_string(),
        };
        if entry.contains('\0') {
            return Err(missing());
        }
        let func = module.module.load_function(entry).map_err(|e| match e.0 {
            cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_FOUND => missing(),
            _ => Error::Driver {
                op: "cuModuleGetFunction",
                msg: format!("{entry} in {} ({}): {e:?}", spec.file, module.target),
            },
        })?;
        let f = Arc::new(Function { func, max_dynamic_shared: AtomicU32::new(DEFAULT_DYNAMIC_SHARED) });
        let mut map = HashMap::clone(&module.functions.load());
        map.insert(entry.to_string(), f.clone());
        module.functions.store(Arc::new(map));
        Ok(f)
    }

    fn check_geometry(&self, plan: &LaunchPlan) -> Result<()> {
        let bad = |why: String| Error::BadLaunch {
            backend: "cuda",
            entry: plan.entry.clone(),
            grid: plan.grid.to_array(),
            block: plan.block.to_array(),
            shared: plan.shared_mem_bytes,
            why,
        };
        let (g, b) = (plan.grid, plan.block);
        if g.count() == 0 || b.count() == 0 {
            return Err(bad("grid and block extents must be at least 1".into()));
        }
        if g.x > i32::MAX as u32 || g.y > 65_535 || g.z > 65_535 {
            return Err(bad("grid extents are limited to (2^31 - 1, 65535, 65535)".into()));
        }
        if b.count() > self.max_threads_per_block as u64 || b.z > 64 {
            return Err(bad(format!("at most {} threads per block and block.z <= 64", self.max_threads_per_block)));
        }
        if plan.shared_mem_bytes > self.max_shared_optin {
            return Err(bad(format!(
                "{} on sm_{} allows at most {} B of shared memory per block",
                self.name, self.sm, self.max_shared_optin
            )));
        }
        Ok(())
    }
}

/// Device memory from `cuMemAllocAsync` (stream-ordered) or `cuMemAlloc`.
struct CudaAllocation {
    ptr: u64,
    bytes: usize,
    stream_ordered: bool,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for CudaAllocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaAllocation({:#x}, {} B)", self.ptr, self.bytes)
    }
}

impl Allocation for CudaAllocation {
    fn device_ptr(&self) -> u64 {
        self.ptr
    }
    fn host_ptr(&self) -> Option<*mut u8> {
        None
    }
}

impl Drop for CudaAllocation {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        let ctx = self.stream.context();
        // A failure here cannot be returned; the context records it and reports it at the
        // next call that binds the context.
        ctx.record_err(ctx.bind_to_thread());
        // SAFETY: the pointer came from the matching allocation call and is freed once.
        let freed = unsafe {
            if self.stream_ordered {
                result::free_async(self.ptr, self.stream.cu_stream())
            } else {
                result::free_sync(self.ptr)
            }
        };
        ctx.record_err(freed);
    }
}

/// The device address of `alloc` + `offset`, checked to be one of ours.
fn address(alloc: &dyn Allocation, offset: usize) -> Result<u64> {
    if alloc.host_ptr().is_some() {
        return Err(Error::WrongDevice { op: "cuda copy", got: "emu".into(), expected: "cuda".into() });
    }
    Ok(alloc.device_ptr() + offset as u64)
}

/// Each argument's bytes in 16-byte aligned storage (the strictest alignment of a by-value
/// kernel parameter), and the `void*` array pointing at them.
fn param_storage(args: &[KernelArg]) -> Vec<Vec<u128>> {
    args.iter()
        .map(|a| {
            let bytes = a.bytes();
            let mut words = vec![0u128; bytes.len().div_ceil(16).max(1)];
            bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
            words
        })
        .collect()
}

impl Executor for CudaExecutor {
    fn backend(&self) -> Backend {
        Backend::Cuda(self.ordinal)
    }

    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<Box<dyn Allocation>> {
        let stream_ordered = self.ctx.has_async_alloc();
        let mut a = CudaAllocation { ptr: 0, bytes, stream_ordered, stream: self.stream.clone() };
        if bytes == 0 {
            return Ok(Box::new(a));
        }
        self.bind()?;
        let oom = |e: DriverError| Error::Driver {
            op: "cuMemAlloc",
            msg: format!("{bytes} B on {} (cuda:{}): {e:?}", self.name, self.ordinal),
        };
        // SAFETY: the stream belongs to the bound context; the memory is freed by Drop.
        a.ptr = unsafe {
            if stream_ordered {
                result::malloc_async(self.stream.cu_stream(), bytes).map_err(oom)?
            } else {
                result::malloc_sync(bytes).map_err(oom)?
            }
        };
        if zeroed {
            // SAFETY: `a.ptr` holds `bytes` bytes; the memset is ordered after the allocation.
            unsafe { result::memset_d8_async(a.ptr, 0, bytes, self.stream.cu_stream()) }
                .map_err(driver("cuMemsetD8Async"))?;
        }
        Ok(Box::new(a))
    }

    fn htod(&self, src: &[u8], dst: &dyn Allocation, offset: usize) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let dst = address(dst, offset)?;
        self.bind()?;
        // SAFETY: the caller (GpuBuffer) checked the range. The stream is synchronised before
        // returning because `src` may be page-locked memory, which the copy reads
        // asynchronously, and the borrow ends here.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(driver("cuMemcpyHtoDAsync"))?;
        self.stream.synchronize().map_err(driver("cuStreamSynchronize after a host-to-device copy"))
    }

    fn dtoh(&self, src: &dyn Allocation, offset: usize, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let src = address(src, offset)?;
        self.bind()?;
        // SAFETY: range checked by the caller; the copy completes before `out` is released.
        unsafe { result::memcpy_dtoh_async(out, src, self.stream.cu_stream()) }.map_err(driver("cuMemcpyDtoHAsync"))?;
        self.stream.synchronize().map_err(driver("cuStreamSynchronize after a device-to-host copy"))
    }

    fn dtod(
        &self,
        src: &dyn Allocation,
        src_offset: usize,
        dst: &dyn Allocation,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (src, dst) = (address(src, src_offset)?, address(dst, dst_offset)?);
        self.bind()?;
        // SAFETY: ranges checked by the caller; stream-ordered like every other operation.
        unsafe { result::memcpy_dtod_async(dst, src, len, self.stream.cu_stream()) }
            .map_err(driver("cuMemcpyDtoDAsync"))
    }

    fn launch(&self, plan: &LaunchPlan) -> Result<()> {
        self.check_geometry(plan)?;
        self.bind()?;
        let f = self.function(&plan.module, &plan.entry)?;
        let shared = plan.shared_mem_bytes;
        if shared > f.max_dynamic_shared.load(Ordering::Acquire) {
            // Above 48 KiB a kernel must opt in, per function.
            // SAFETY: a valid function handle of the bound context.
            unsafe {
                result::function::set_function_attribute(
                    f.func.cu_function(),
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
            }
            .map_err(|e| Error::BadLaunch {
                backend: "cuda",
                entry: plan.entry.clone(),
                grid: plan.grid.to_array(),
                block: plan.block.to_array(),
                shared,
                why: format!("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) refused it: {e:?} (static + dynamic shared memory must fit in {} B)", self.max_shared_optin),
            })?;
            f.max_dynamic_shared.fetch_max(shared, Ordering::AcqRel);
        }
        let mut storage = param_storage(&plan.args);
        let mut params: Vec<*mut c_void> = storage.iter_mut().map(|s| s.as_mut_ptr().cast::<c_void>()).collect();
        let (g, b) = (plan.grid, plan.block);
        // SAFETY: `params` points at one buffer per kernel parameter, laid out as the C
        // parameter (KernelArg::bytes); the driver copies them before returning.
        unsafe {
            result::launch_kernel(
                f.func.cu_function(),
                (g.x, g.y, g.z),
                (b.x, b.y, b.z),
                shared,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Driver {
            op: "cuLaunchKernel",
            msg: format!(
                "{} in {} [{}] with grid {:?}, block {:?}, {shared} B shared: {e:?}",
                plan.entry,
                plan.module.file,
                plan.module.defines_string(),
                g.to_array(),
                b.to_array()
            ),
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    fn describe(&self) -> String {
        format!("{} (sm_{}, cuda:{})", self.name, self.sm, self.ordinal)
    }

    fn as_cuda(&self) -> Option<&CudaExecutor> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gpu_is_an_error_with_a_reason_not_a_panic() {
        match CudaExecutor::new(0) {
            Ok(exec) => println!("a GPU is present: {}", exec.describe()),
            Err(Error::NoGpu { why }) => {
                assert_eq!(device_count(), 0);
                assert_eq!(unavailable_reason().as_deref(), Some(why.as_str()));
                assert!(!why.is_empty());
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        // An ordinal past the end is NoGpu whether or not a GPU exists.
        assert!(matches!(CudaExecutor::new(usize::MAX), Err(Error::NoGpu { .. })));
    }

    #[test]
    fn parameters_are_the_argument_bytes_aligned() {
        let args = [KernelArg::F32(1.5), KernelArg::Ptr(0x1234_5678_9abc), KernelArg::Pod(vec![7; 20])];
        let storage = param_storage(&args);
        for (arg, words) in args.iter().zip(&storage) {
            let bytes = arg.bytes();
            assert_eq!(&bytemuck::cast_slice::<u128, u8>(words)[..bytes.len()], &bytes[..]);
            assert_eq!(words.as_ptr() as usize % 16, 0);
        }
    }
}
