//! Sanitizer mode: kernels compiled with AddressSanitizer (a separate cache entry), blocks run
//! one at a time, static `__shared__` arrays become plain globals and dynamic shared memory is
//! malloc'd per block, so ASan's redzones guard every kind of memory a kernel touches. An
//! out-of-bounds access ends the process with ASan's report, preceded by a line
//! `attune-emu sanitizer: <kind> in kernel NAME, block (x,y,z), thread (x,y,z)`.
//!
//! The ASan runtime must be the first library of the process, so a driver re-executes itself
//! with the environment [`sanitizer_env`] returns (see crates/cuda/tests/emu_sanitize.rs).

use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static DEFAULT_ON: AtomicBool = AtomicBool::new(false);

/// Turns sanitizer mode on (or off) for emulator executors created after this call, including
/// the process's `GpuDevice::emu()` if it has not been created yet.
pub fn set_sanitize_default(on: bool) {
    DEFAULT_ON.store(on, Ordering::Relaxed);
}

/// Whether new executors sanitize: [`set_sanitize_default`], or `ATTUNE_EMU_SANITIZE` set to
/// `1`, `true`, `yes` or `on`.
pub fn sanitize_requested() -> bool {
    DEFAULT_ON.load(Ordering::Relaxed)
        || std::env::var("ATTUNE_EMU_SANITIZE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

/// The ASan runtime to preload: `c++ -print-file-name=libasan.so` of the emulator's compiler.
pub fn sanitizer_preload() -> Result<PathBuf> {
    let cxx = super::compile::host_compiler()?;
    let out = std::process::Command::new(&cxx.argv[0])
        .args(&cxx.argv[1..])
        .arg("-print-file-name=libasan.so")
        .output()
        .map_err(|e| Error::io("asking the host compiler for libasan.so", &cxx.argv[0], e))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_absolute() && path.exists() {
        Ok(path.canonicalize().unwrap_or(path))
    } else {
        Err(Error::ToolchainMissing {
            what: "the AddressSanitizer runtime (libasan.so)",
            looked: format!("`{} -print-file-name=libasan.so` gave '{}'", cxx.display(), path.display()),
            env: "CXX (a compiler with -fsanitize=address support)",
        })
    }
}

/// The environment of a process that runs kernels under the sanitizer: `LD_PRELOAD` (the ASan
/// runtime first, then any preload already set), `ASAN_OPTIONS=detect_leaks=0` (the host
/// program's own allocations are not the kernels' business) and `ATTUNE_EMU_SANITIZE=1`.
pub fn sanitizer_env() -> Result<Vec<(String, String)>> {
    let asan = sanitizer_preload()?.display().to_string();
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.trim().is_empty() && !p.contains(&asan) => format!("{asan}:{p}"),
        _ => asan,
    };
    let options = match std::env::var("ASAN_OPTIONS") {
        Ok(o) if !o.trim().is_empty() => format!("detect_leaks=0:{o}"),
        _ => "detect_leaks=0".to_string(),
    };
    Ok(vec![
        ("LD_PRELOAD".into(), preload),
        ("ASAN_OPTIONS".into(), options),
        ("ATTUNE_EMU_SANITIZE".into(), "1".into()),
    ])
}

/// Whether the ASan runtime is loaded in this process.
pub fn sanitizer_runtime_loaded() -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
    !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__asan_init".as_ptr()) }.is_null()
}

/// Fails unless the ASan runtime is already in the process: loading an instrumented module
/// without it would abort the process.
pub(crate) fn check_runtime_loaded() -> Result<()> {
    if sanitizer_runtime_loaded() {
        return Ok(());
    }
    let env = sanitizer_env()
        .map(|v| v.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| e.to_string());
    Err(Error::NoGpu {
        why: format!(
            "emu sanitizer mode needs the AddressSanitizer runtime loaded before anything else; re-run the \
             program with {env} (attune_cuda::emu::sanitizer_env)"
        ),
    })
}
