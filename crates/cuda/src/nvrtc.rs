//! Compiling kernel modules with NVRTC (through cudarc's bindings), cached on disk.
//!
//! Options, and why:
//! - `--gpu-architecture=sm_XX` gives a cubin for exactly that GPU (no JIT at load time);
//!   `compute_XX` gives PTX, which the driver JIT-compiles for any GPU of that arch or newer
//!   (forward compatibility).
//! - `-std=c++17`: the dialect the kernels and the emulator's host compiler share.
//! - `--fmad=true`: lets NVRTC contract `a * b + c` into FMA, as nvcc does by default. The
//!   tolerances of docs/attention.md cover the difference from the unfused CPU reference, and
//!   attention kernels lose 10-20% of their arithmetic throughput without it.
//! - `-default-device`: unannotated functions are device functions, so shared helpers in
//!   headers need no `__device__` (and still compile for the host in the emulator).
//! - `-lineinfo`: source lines in profiles and sanitizer reports, without debug codegen.
//! - `-I <CUDA include>` for `cuda_fp16.h` and friends; the kernel's own headers are handed to
//!   NVRTC in memory under every name they are included by (from the embedded tree), so what
//!   is compiled is exactly what the cache key hashed.
//! - the module's defines as `-D NAME=VALUE`.
//!
//! Entry points are `extern "C"`, so the names in the module are the names in the source.

use crate::cache::DiskCache;
use crate::sources::SourceSet;
use crate::toolchain;
use crate::{Error, ModuleSpec, Result};
use cudarc::nvrtc::sys;
use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What NVRTC produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A cubin for one real architecture (`sm_80` is `Sm(80)`).
    Sm(u32),
    /// PTX for a virtual architecture (`compute_80`), JIT-compiled by the driver for that arch
    /// or any newer one.
    Compute(u32),
}

impl Target {
    /// Parses `sm_80` or `compute_90`.
    pub fn parse(s: &str) -> Option<Target> {
        if let Some(n) = s.strip_prefix("sm_") {
            return n.parse().ok().map(Target::Sm);
        }
        s.strip_prefix("compute_").and_then(|n| n.parse().ok()).map(Target::Compute)
    }

    /// The architecture number (80 for `sm_80` and `compute_80`).
    pub fn arch(self) -> u32 {
        match self {
            Target::Sm(a) | Target::Compute(a) => a,
        }
    }

    /// Whether the output is a cubin (else PTX).
    pub fn is_cubin(self) -> bool {
        matches!(self, Target::Sm(_))
    }

    /// The cache file extension.
    fn ext(self) -> &'static str {
        if self.is_cubin() { "cubin" } else { "ptx" }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sm(a) => write!(f, "sm_{a}"),
            Target::Compute(a) => write!(f, "compute_{a}"),
        }
    }
}

/// A compiled module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// What was compiled for.
    pub target: Target,
    /// The cubin, or the PTX text (without a terminating NUL).
    pub image: Vec<u8>,
    /// Whether this came from the disk cache (no NVRTC run).
    pub from_cache: bool,
    /// The cache key (hash of sources, defines, target, options, NVRTC version).
    pub key: String,
    /// NVRTC's log (warnings) when it ran; empty on a cache hit.
    pub log: String,
}

impl Compiled {
    /// The PTX text when the target is PTX.
    pub fn ptx(&self) -> Option<&str> {
        (!self.target.is_cubin()).then(|| std::str::from_utf8(&self.image).ok()).flatten()
    }
}

/// Where compiled modules go and what else to do with them.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The cache for compiled modules.
    pub cache: DiskCache,
    /// Write the PTX of every module compiled or fetched into this folder.
    pub dump_ptx: Option<PathBuf>,
}

impl CompileOptions {
    /// The default cache (`<cache root>/nvrtc`) and `ATTUNE_DUMP_PTX`.
    pub fn from_env() -> CompileOptions {
        CompileOptions {
            cache: DiskCache::default_for("nvrtc"),
            dump_ptx: std::env::var_os("ATTUNE_DUMP_PTX").filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }
}

static NVRTC_RUNS: AtomicU64 = AtomicU64::new(0);

/// How many times NVRTC has run in this process (cache hits do not count).
pub fn nvrtc_runs() -> u64 {
    NVRTC_RUNS.load(Ordering::Relaxed)
}

/// Compiles `spec` for `target` with the default cache and `ATTUNE_DUMP_PTX`.
pub fn compile(spec: &ModuleSpec, target: Target) -> Result<Compiled> {
    compile_with(spec, target, &CompileOptions::from_env())
}

/// The NVRTC options for `spec` and `target` (see the module docs).
pub fn options(spec: &ModuleSpec, target: Target, include_dir: &Path) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture={target}"),
        "-std=c++17".to_string(),
        "--fmad=true".to_string(),
        "-default-device".to_string(),
        "-lineinfo".to_string(),
        format!("-I{}", include_dir.display()),
    ];
    opts.extend(spec.defines.iter().map(|(k, v)| format!("-D{k}={v}")));
    opts
}

/// Compiles `spec` for `target`, using and filling `opts.cache`.
pub fn compile_with(spec: &ModuleSpec, target: Target, opts: &CompileOptions) -> Result<Compiled> {
    let nv = toolchain::nvrtc()?;
    let set = SourceSet::load(&spec.file)?;
    let options = options(spec, target, &nv.toolchain.include_dir);
    let version = format!("nvrtc {}.{}", nv.version.0, nv.version.1);
    let key = set.hash(&["nvrtc", &options.join("\n"), &version]);
    let ext = target.ext();

    if let Some(image) = opts.cache.get(&key, ext) {
        if let Some(dir) = &opts.dump_ptx {
            // A cubin entry has its PTX stored beside it (see below).
            let ptx = if target.is_cubin() { opts.cache.get(&key, "ptx") } else { Some(image.clone()) };
            if let Some(ptx) = ptx {
                dump(dir, spec, target, &ptx)?;
            }
        }
        return Ok(Compiled { target, image, from_cache: true, key, log: String::new() });
    }

    let out = run_nvrtc(&set, spec, target, &options)?;
    NVRTC_RUNS.fetch_add(1, Ordering::Relaxed);
    // PTX first, the requested entry last: a present entry implies its PTX was stored.
    opts.cache.put(&key, "ptx", &out.ptx)?;
    if let Some(cubin) = &out.cubin {
        opts.cache.put(&key, "cubin", cubin)?;
    }
    if let Some(dir) = &opts.dump_ptx {
        dump(dir, spec, target, &out.ptx)?;
    }
    let image = out.cubin.unwrap_or(out.ptx);
    Ok(Compiled { target, image, from_cache: false, key, log: out.log })
}

/// The real architectures this NVRTC can compile for (`nvrtcGetSupportedArchs`), ascending.
pub fn supported_archs() -> Result<Vec<u32>> {
    toolchain::nvrtc()?;
    let mut n = 0;
    // SAFETY: NVRTC is loaded and verified (above); the buffer has the reported length.
    unsafe {
        check(sys::nvrtcGetNumSupportedArchs(&mut n), "nvrtcGetNumSupportedArchs")?;
        let mut archs = vec![0i32; n.max(0) as usize];
        check(sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()), "nvrtcGetSupportedArchs")?;
        let mut archs: Vec<u32> = archs.into_iter().filter_map(|a| u32::try_from(a).ok()).collect();
        archs.sort_unstable();
        Ok(archs)
    }
}

/// What to compile for a GPU of compute capability `sm` (e.g. 86): its exact cubin when NVRTC
/// supports it, else PTX for the newest supported arch below it (the driver JIT-compiles PTX
/// for newer GPUs).
pub fn target_for_device(sm: u32, supported: &[u32]) -> Option<Target> {
    if supported.contains(&sm) {
        return Some(Target::Sm(sm));
    }
    supported.iter().copied().filter(|&a| a <= sm).max().map(Target::Compute)
}

/// The dump file name: kernel file, defines and target, with path separators and other
/// characters that are awkward in file names replaced.
pub fn dump_name(spec: &ModuleSpec, target: Target) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "_-=.".contains(c) { c } else { '_' }).collect()
    };
    let defines: Vec<String> = spec.defines.iter().map(|(k, v)| clean(&format!("{k}={v}"))).collect();
    let mut name = clean(spec.file.trim_end_matches(".cu"));
    if !defines.is_empty() {
        name.push_str("__");
        name.push_str(&defines.join("__"));
    }
    format!("{name}.{target}.ptx")
}

fn dump(dir: &Path, spec: &ModuleSpec, target: Target, ptx: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the ATTUNE_DUMP_PTX folder", dir, e))?;
    let path = dir.join(dump_name(spec, target));
    std::fs::write(&path, ptx).map_err(|e| Error::io("writing PTX for ATTUNE_DUMP_PTX", path, e))
}

struct NvrtcOutput {
    ptx: Vec<u8>,
    cubin: Option<Vec<u8>>,
    log: String,
}

/// Destroys the program however compilation ends.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Driver { op: "nvrtc", msg: format!("{what} contains a NUL byte: {s:?}") })
}

fn check(rc: sys::nvrtcResult, op: &'static str) -> Result<()> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS { Ok(()) } else { Err(Error::Driver { op, msg: format!("{rc:?}") }) }
}

fn run_nvrtc(set: &SourceSet, spec: &ModuleSpec, target: Target, options: &[String]) -> Result<NvrtcOutput> {
    let nvrtc_error = |log: String| Error::Nvrtc {
        file: spec.file.clone(),
        arch: target.to_string(),
        defines: spec.defines_string(),
        log,
    };
    // Each header under its resolved path and under every name it is included by.
    let mut headers: BTreeMap<String, &str> = set.headers.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for (written, resolved) in set.include_names() {
        let text = set.headers.get(&resolved).copied().unwrap_or(set.source);
        match headers.get(&written) {
            Some(existing) if *existing != text => {
                return Err(nvrtc_error(format!(
                    "`#include \"{written}\"` names different files from different includers; NVRTC resolves a name to one header, so include it by a path that is the same everywhere (e.g. from kernels/)"
                )));
            }
            _ => {
                headers.insert(written, text);
            }
        }
    }
    let names: Vec<CString> = headers.keys().map(|k| cstring("a header name", k)).collect::<Result<_>>()?;
    let texts: Vec<CString> = headers.values().map(|t| cstring("a header", t)).collect::<Result<_>>()?;
    let name_ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|c| c.as_ptr()).collect();
    let src = cstring(&spec.file, set.source)?;
    let prog_name = cstring("the kernel file name", &spec.file)?;
    let copts: Vec<CString> = options.iter().map(|o| cstring("an option", o)).collect::<Result<_>>()?;
    let opt_ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();

    let mut raw = std::ptr::null_mut();
    // SAFETY: every pointer is a NUL-terminated string alive until the program is destroyed
    // (all are locals of this function and the program is dropped before they are).
    unsafe {
        check(
            sys::nvrtcCreateProgram(
                &mut raw,
                src.as_ptr(),
                prog_name.as_ptr(),
                headers.len() as i32,
                text_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            ),
            "nvrtcCreateProgram",
        )?;
    }
    let prog = Program(raw);
    // SAFETY: the program is valid; the options outlive the call.
    let rc = unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    let log = program_log(&prog)?;
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        let log = if log.trim().is_empty() { format!("{rc:?} with an empty log") } else { log };
        return Err(nvrtc_error(log));
    }
    let ptx = fetch(&prog, sys::nvrtcGetPTXSize, sys::nvrtcGetPTX, "nvrtcGetPTX")?;
    let ptx = strip_nul(ptx);
    let cubin = if target.is_cubin() {
        Some(fetch(&prog, sys::nvrtcGetCUBINSize, sys::nvrtcGetCUBIN, "nvrtcGetCUBIN")?)
    } else {
        None
    };
    Ok(NvrtcOutput { ptx, cubin, log })
}

fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

type SizeFn = unsafe fn(sys::nvrtcProgram, *mut usize) -> sys::nvrtcResult;
type DataFn = unsafe fn(sys::nvrtcProgram, *mut c_char) -> sys::nvrtcResult;

fn fetch(prog: &Program, size: SizeFn, data: DataFn, op: &'static str) -> Result<Vec<u8>> {
    let mut n = 0usize;
    // SAFETY: the program compiled successfully; the buffer has the size NVRTC reported.
    unsafe {
        check(size(prog.0, &mut n), op)?;
        let mut buf = vec![0u8; n];
        check(data(prog.0, buf.as_mut_ptr().cast()), op)?;
        Ok(buf)
    }
}

fn program_log(prog: &Program) -> Result<String> {
    let log = fetch(prog, sys::nvrtcGetProgramLogSize, sys::nvrtcGetProgramLog, "nvrtcGetProgramLog")?;
    Ok(String::from_utf8_lossy(&strip_nul(log)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        assert_eq!(Target::parse("sm_80"), Some(Target::Sm(80)));
        assert_eq!(Target::parse("compute_90"), Some(Target::Compute(90)));
        assert_eq!(Target::parse("sm_x"), None);
        assert_eq!(Target::parse("90"), None);
        assert_eq!(Target::Sm(90).to_string(), "sm_90");
        assert_eq!(Target::Compute(80).to_string(), "compute_80");
    }

    #[test]
    fn device_targets_prefer_exact_cubins_then_older_ptx() {
        let supported = [75, 80, 86, 89, 90];
        assert_eq!(target_for_device(90, &supported), Some(Target::Sm(90)));
        assert_eq!(target_for_device(87, &supported), Some(Target::Compute(86)));
        assert_eq!(target_for_device(120, &supported), Some(Target::Compute(90)));
        assert_eq!(target_for_device(70, &supported), None);
    }

    #[test]
    fn options_carry_target_and_defines() {
        let spec = ModuleSpec::new("a/b.cu", [("N".to_string(), "4".to_string()), ("D".to_string(), "x".to_string())]);
        let o = options(&spec, Target::Sm(80), Path::new("/inc"));
        assert_eq!(o[0], "--gpu-architecture=sm_80");
        assert!(o.contains(&"-I/inc".to_string()));
        // Sorted by name by ModuleSpec::new.
        assert_eq!(&o[o.len() - 2..], ["-DD=x", "-DN=4"]);
        assert_eq!(dump_name(&spec, Target::Compute(90)), "a_b__D=x__N=4.compute_90.ptx");
    }
}
