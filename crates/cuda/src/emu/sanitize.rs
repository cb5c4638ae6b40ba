//! Sanitizer mode: kernels compiled with AddressSanitizer. Being completed (milestone 3).

use crate::{Error, Result};
use std::path::PathBuf;

/// Whether `ATTUNE_EMU_SANITIZE` asks for sanitizer mode (`1`, `true`, `yes`).
pub fn sanitize_from_env() -> bool {
    std::env::var("ATTUNE_EMU_SANITIZE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

/// The ASan runtime to preload (`c++ -print-file-name=libasan.so`).
pub fn sanitizer_preload() -> Result<PathBuf> {
    let cxx = super::compile::host_compiler()?;
    let out = std::process::Command::new(&cxx.argv[0])
        .args(&cxx.argv[1..])
        .arg("-print-file-name=libasan.so")
        .output()
        .map_err(|e| Error::io("asking the host compiler for libasan.so", &cxx.argv[0], e))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_absolute() && path.exists() {
        Ok(path)
    } else {
        Err(Error::ToolchainMissing {
            what: "the AddressSanitizer runtime (libasan.so)",
            looked: format!("`{} -print-file-name=libasan.so` gave '{}'", cxx.display(), path.display()),
            env: "CXX (a compiler with -fsanitize=address support)",
        })
    }
}

/// Fails unless the ASan runtime is already in the process (it must come first, via
/// LD_PRELOAD, or loading an instrumented module aborts the process).
pub(crate) fn check_runtime_loaded() -> Result<()> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__asan_init".as_ptr()) };
    if sym.is_null() {
        let preload = sanitizer_preload().map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string());
        return Err(Error::NoGpu {
            why: format!(
                "emu sanitizer mode needs the AddressSanitizer runtime loaded first: re-run with \
                 LD_PRELOAD={preload} ASAN_OPTIONS=detect_leaks=0"
            ),
        });
    }
    Ok(())
}
