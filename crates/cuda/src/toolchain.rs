//! Finding NVRTC, the CUDA headers and ptxas, and making cudarc use the NVRTC found.
//!
//! Search order (first hit wins, per item):
//! 1. `ATTUNE_CUDA_TOOLS`: a cuda-tools folder (the PyPI wheels unpacked by `pip --target`);
//! 2. `CUDA_HOME`, then `CUDA_PATH`: a CUDA toolkit;
//! 3. `/usr/local/cuda`;
//! 4. the workspace's `target/cuda-tools` (`CARGO_TARGET_DIR` when set, else the target dir
//!    beside this crate's workspace, known at compile time), where `cargo xtask cuda-tools`
//!    installs the wheels.
//!
//! cudarc opens NVRTC by name with `dlopen`, and the loader's search path (`LD_LIBRARY_PATH`)
//! is read once at process start, so a library in a folder of our choosing cannot be found by
//! name. [`nvrtc`] therefore loads `libnvrtc-builtins` and `libnvrtc` by full path with
//! `RTLD_GLOBAL` first: the loader then answers cudarc's later `dlopen("libnvrtc.so.12")`
//! with the already-loaded object (it matches loaded objects by soname). It then checks that
//! cudarc's copy really is ours (same address of `nvrtcVersion`) instead of trusting that.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The CUDA major version whose libraries are loaded (cudarc's `cuda-12090` feature), as the
/// `.so.MAJOR` suffix begins.
const REQUIRED_MAJOR: &str = ".12";

/// The PyPI wheels `cargo xtask cuda-tools` installs, pinned to CUDA 12.9 (cudarc's
/// `cuda-12090` feature): NVRTC, the runtime headers (cuda_fp16.h, cuda_bf16.h) and ptxas.
pub const PINNED_WHEELS: &[(&str, &str)] = &[
    ("nvidia-cuda-nvrtc-cu12", "12.9.86"),
    ("nvidia-cuda-runtime-cu12", "12.9.79"),
    ("nvidia-cuda-nvcc-cu12", "12.9.86"),
];

/// cuBLAS for [`crate::blas`] on machines without a CUDA toolkit (`cargo xtask cuda-tools
/// --cublas`; about 600 MB, so opt-in), installed into the `cublas/` subfolder of cuda-tools
/// (pip's `--target` replaces rather than merges an existing `nvidia/` folder).
pub const CUBLAS_WHEELS: &[(&str, &str)] = &[("nvidia-cublas-cu12", "12.9.1.4")];

/// NCCL for multi-GPU training (crates/dist; `cargo xtask cuda-tools --nccl`): the CUDA 12
/// build of the release current when CUDA 12.9 was, for cudarc's run-time loading.
pub const NCCL_WHEELS: &[(&str, &str)] = &[("nvidia-nccl-cu12", "2.27.5")];

/// The stamp file inside a cuda-tools folder, holding the installed pins (one `name==version`
/// a line), written last so that a folder with a matching stamp is complete.
pub const STAMP_FILE: &str = "attune-cuda-tools.stamp";

/// The environment variable naming a cuda-tools folder.
pub const TOOLS_ENV: &str = "ATTUNE_CUDA_TOOLS";

/// Where each CUDA tool was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// Full path of the NVRTC shared library (`libnvrtc.so.12`).
    pub nvrtc_lib: PathBuf,
    /// Full path of `libnvrtc-builtins.so.*` beside it, when present.
    pub nvrtc_builtins: Option<PathBuf>,
    /// The folder holding `cuda_fp16.h` (passed to NVRTC as `-I`).
    pub include_dir: PathBuf,
    /// `ptxas`, when found (only `cargo xtask build-kernels` needs it).
    pub ptxas: Option<PathBuf>,
    /// `libcublasLt` and `libcublas`, when found (in that load order).
    pub cublas_libs: Vec<PathBuf>,
    /// The roots searched, in order, for messages.
    pub looked: Vec<PathBuf>,
}

/// The roots searched, in order, each with the name of what put it on the list.
pub fn search_roots() -> Vec<(&'static str, PathBuf)> {
    let mut roots = Vec::new();
    for var in [TOOLS_ENV, "CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            roots.push((var, PathBuf::from(v)));
        }
    }
    roots.push(("/usr/local/cuda", PathBuf::from("/usr/local/cuda")));
    roots.push(("target/cuda-tools", default_tools_dir()));
    roots
}

/// The workspace root, known at compile time (this crate lives in `crates/cuda`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target dir: `CARGO_TARGET_DIR` now, else as it was when this crate was built, else
/// `target/` in the workspace. A relative value is taken from the workspace root, as cargo does
/// when run there.
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    if dir.is_absolute() { dir } else { workspace_root().join(dir) }
}

/// `<target dir>/cuda-tools`, where `cargo xtask cuda-tools` installs the wheels.
pub fn default_tools_dir() -> PathBuf {
    target_dir().join("cuda-tools")
}

fn lib_dirs(root: &Path) -> Vec<PathBuf> {
    ["nvidia/cuda_nvrtc/lib", "lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"]
        .iter()
        .map(|d| root.join(d))
        .collect()
}

/// The first file in `dir` named `prefix` + a version suffix (`.12`, `.12.9`), preferring
/// `preferred`, then the plain `prefix` (a development symlink). `.alt` variants are skipped.
fn versioned_lib(dir: &Path, prefix: &str, preferred: &str) -> Option<PathBuf> {
    let exact = dir.join(preferred);
    if exact.is_file() {
        return Some(exact);
    }
    // Only the major version cudarc was built for (`cuda-12090`): an older toolkit earlier in
    // the search order (CUDA 11 in /usr/local/cuda, say) must not shadow the pinned wheels.
    let is_major =
        |rest: &str| rest.strip_prefix(REQUIRED_MAJOR).is_some_and(|tail| tail.is_empty() || tail.starts_with('.'));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.strip_prefix(prefix).is_some_and(|rest| !rest.contains("alt") && is_major(rest)))
        })
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().or_else(|| {
        // The bare `libX.so` is a link to some version: follow it and check which.
        let bare = dir.join(prefix);
        let target = std::fs::canonicalize(&bare).ok()?;
        let rest = target.file_name()?.to_str()?.strip_prefix(prefix)?.to_string();
        (bare.is_file() && is_major(&rest)).then_some(bare)
    })
}

/// NVRTC in `root`: (library, builtins).
fn nvrtc_in(root: &Path) -> Option<(PathBuf, Option<PathBuf>)> {
    lib_dirs(root).into_iter().find_map(|dir| {
        let lib = versioned_lib(&dir, "libnvrtc.so", "libnvrtc.so.12")?;
        let builtins = versioned_lib(&dir, "libnvrtc-builtins.so", "libnvrtc-builtins.so.12.9");
        Some((lib, builtins))
    })
}

fn include_in(root: &Path) -> Option<PathBuf> {
    ["nvidia/cuda_runtime/include", "include", "targets/x86_64-linux/include", "targets/sbsa-linux/include"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.join("cuda_fp16.h").is_file())
}

fn ptxas_in(root: &Path) -> Option<PathBuf> {
    ["nvidia/cuda_nvcc/bin/ptxas", "bin/ptxas"].iter().map(|p| root.join(p)).find(|p| p.is_file())
}

fn cublas_in(root: &Path) -> Option<Vec<PathBuf>> {
    let mut dirs = vec![root.join("nvidia/cublas/lib"), root.join("cublas/nvidia/cublas/lib")];
    dirs.extend(lib_dirs(root));
    dirs.into_iter().find_map(|dir| {
        let lt = versioned_lib(&dir, "libcublasLt.so", "libcublasLt.so.12")?;
        let blas = versioned_lib(&dir, "libcublas.so", "libcublas.so.12")?;
        Some(vec![lt, blas])
    })
}

fn looked_list(roots: &[PathBuf]) -> String {
    roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Searches [`search_roots`] for NVRTC and the headers (required) and ptxas and cuBLAS
/// (optional). Loads nothing.
pub fn find() -> Result<Toolchain> {
    let roots: Vec<PathBuf> = search_roots().into_iter().map(|(_, p)| p).collect();
    find_in(&roots)
}

/// [`find`] over explicit roots, in order.
pub fn find_in(roots: &[PathBuf]) -> Result<Toolchain> {
    let missing = |what| Error::ToolchainMissing { what, looked: looked_list(roots), env: TOOLS_ENV };
    let (nvrtc_root, (nvrtc_lib, nvrtc_builtins)) = roots
        .iter()
        .find_map(|r| nvrtc_in(r).map(|found| (r, found)))
        .ok_or_else(|| missing("NVRTC (libnvrtc.so.12)"))?;
    // The headers of NVRTC's own release when its root has them, so that an older toolkit
    // earlier in the order does not lend NVRTC 12 its headers.
    let include_dir = include_in(nvrtc_root)
        .or_else(|| roots.iter().find_map(|r| include_in(r)))
        .ok_or_else(|| missing("the CUDA headers (cuda_fp16.h)"))?;
    Ok(Toolchain {
        nvrtc_lib,
        nvrtc_builtins,
        include_dir,
        ptxas: roots.iter().find_map(|r| ptxas_in(r)),
        cublas_libs: roots.iter().find_map(|r| cublas_in(r)).unwrap_or_default(),
        looked: roots.to_vec(),
    })
}

impl Toolchain {
    /// ptxas, or [`Error::ToolchainMissing`] naming where it was looked for.
    pub fn ptxas(&self) -> Result<&Path> {
        self.ptxas.as_deref().ok_or_else(|| Error::ToolchainMissing {
            what: "ptxas",
            looked: looked_list(&self.looked),
            env: TOOLS_ENV,
        })
    }
}

/// NVRTC loaded into this process, verified to be the library cudarc calls.
#[derive(Debug)]
pub struct Nvrtc {
    /// Where the tools were found.
    pub toolchain: Toolchain,
    /// `nvrtcVersion()`: (major, minor).
    pub version: (i32, i32),
    // Kept loaded for the life of the process (the static owning this struct is never dropped).
    _libs: Vec<libloading::os::unix::Library>,
}

/// Loads a library by full path, visible to later loads by soname.
fn preload(path: &Path) -> Result<libloading::os::unix::Library> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a vendor library runs its initialisers; NVIDIA's libraries have no
    // initialisers with preconditions on the caller.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| Error::Driver { op: "loading a CUDA library", msg: format!("{}: {e}", path.display()) })
}

fn setup_nvrtc() -> Result<Nvrtc> {
    let toolchain = find()?;
    let mut libs = Vec::new();
    if let Some(b) = &toolchain.nvrtc_builtins {
        libs.push(preload(b)?);
    }
    let ours = preload(&toolchain.nvrtc_lib)?;
    // SAFETY: symbol lookups only; the pointers are compared, never called through these types.
    let our_fn = unsafe { ours.get::<unsafe extern "C" fn()>(b"nvrtcVersion") }
        .map_err(|e| Error::Driver {
            op: "nvrtc setup",
            msg: format!("{} has no nvrtcVersion: {e}", toolchain.nvrtc_lib.display()),
        })?
        .into_raw();
    libs.push(ours);
    // SAFETY: is_culib_present only tries to open the candidate names; culib is called only
    // once it is known to succeed, so cudarc cannot panic here.
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !present {
        return Err(Error::Driver {
            op: "nvrtc setup",
            msg: format!(
                "{} was loaded, but cudarc still finds no NVRTC by name; this NVRTC's soname is not among cudarc's candidates (expects libnvrtc.so.12)",
                toolchain.nvrtc_lib.display()
            ),
        });
    }
    let theirs = unsafe { cudarc::nvrtc::sys::culib().get::<unsafe extern "C" fn()>(b"nvrtcVersion") }
        .map(|s| *s as *const ())
        .map_err(|e| Error::Driver { op: "nvrtc setup", msg: format!("cudarc's NVRTC has no nvrtcVersion: {e}") })?;
    if theirs != our_fn as *const () {
        return Err(Error::Driver {
            op: "nvrtc setup",
            msg: format!(
                "cudarc opened a different NVRTC than {} (one found by name on the loader path); set {TOOLS_ENV} or CUDA_HOME to the toolkit that library belongs to, or remove it from LD_LIBRARY_PATH",
                toolchain.nvrtc_lib.display()
            ),
        });
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: cudarc's NVRTC is loaded (checked above); nvrtcVersion writes two ints.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Driver { op: "nvrtcVersion", msg: format!("{rc:?}") });
    }
    Ok(Nvrtc { toolchain, version: (major, minor), _libs: libs })
}

/// A copy of an error kept in a process-wide cell.
fn replay(e: &Error) -> Error {
    match e {
        Error::ToolchainMissing { what, looked, env } => Error::ToolchainMissing { what, looked: looked.clone(), env },
        Error::Driver { op, msg } => Error::Driver { op, msg: msg.clone() },
        other => Error::Driver { op: "nvrtc setup", msg: other.to_string() },
    }
}

/// NVRTC for this process: found, loaded, and checked to be what cudarc calls. The first call
/// decides; later calls return the same library (or the same error).
pub fn nvrtc() -> Result<&'static Nvrtc> {
    static NVRTC: OnceLock<std::result::Result<Nvrtc, Error>> = OnceLock::new();
    NVRTC.get_or_init(setup_nvrtc).as_ref().map_err(replay)
}

/// Loads cuBLAS (`libcublasLt`, then `libcublas`) from the toolchain roots by full path so that
/// cudarc's by-name lookups find it; a no-op when none is found there (cudarc may still find a
/// system copy). Returns whether cudarc can now load cuBLAS.
pub fn preload_cublas() -> bool {
    static DONE: OnceLock<Vec<libloading::os::unix::Library>> = OnceLock::new();
    DONE.get_or_init(|| {
        let roots: Vec<PathBuf> = search_roots().into_iter().map(|(_, p)| p).collect();
        let libs = roots.iter().find_map(|r| cublas_in(r)).unwrap_or_default();
        libs.iter().map_while(|p| preload(p).ok()).collect()
    });
    // SAFETY: only tries to open candidate names.
    unsafe { cudarc::cublas::sys::is_culib_present() && cudarc::cublaslt::sys::is_culib_present() }
}

/// Whether `dir` holds a complete install of [`PINNED_WHEELS`].
pub fn tools_installed(dir: &Path) -> bool {
    wheels_installed(dir, PINNED_WHEELS)
}

fn wheels_installed(dir: &Path, wheels: &[(&str, &str)]) -> bool {
    std::fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|s| s == stamp_text(wheels))
}

fn stamp_text(wheels: &[(&str, &str)]) -> String {
    wheels.iter().map(|(n, v)| format!("{n}=={v}\n")).collect()
}

/// Installs [`CUBLAS_WHEELS`] into `tools_dir/cublas`, like [`install_tools`].
pub fn install_cublas(tools_dir: &Path) -> Result<bool> {
    install_wheels(&tools_dir.join("cublas"), CUBLAS_WHEELS)
}

/// Installs [`NCCL_WHEELS`] into `tools_dir/nccl`, like [`install_tools`], and adds the
/// `libnccl.so` link beside the wheel's `libnccl.so.2` (cudarc opens the unversioned name).
/// Returns the folder that must be on `LD_LIBRARY_PATH`.
pub fn install_nccl(tools_dir: &Path) -> Result<PathBuf> {
    let root = tools_dir.join("nccl");
    install_wheels(&root, NCCL_WHEELS)?;
    let lib = root.join("nvidia/nccl/lib");
    let link = lib.join("libnccl.so");
    if !link.exists() {
        std::os::unix::fs::symlink("libnccl.so.2", &link).map_err(|e| Error::io("linking libnccl.so", &link, e))?;
    }
    Ok(lib)
}

/// Installs [`PINNED_WHEELS`] into `dir` with `python3 -m pip install --target --no-deps`
/// (`ATTUNE_PYTHON` names another interpreter). Idempotent: returns `Ok(false)` without
/// running pip when the stamp matches. Atomic: pip writes a sibling folder that is renamed
/// into place with the stamp inside, so an interrupted install leaves no half folder behind.
pub fn install_tools(dir: &Path) -> Result<bool> {
    install_wheels(dir, PINNED_WHEELS)
}

fn install_wheels(dir: &Path, wheels: &[(&str, &str)]) -> Result<bool> {
    if wheels_installed(dir, wheels) {
        return Ok(false);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io("creating the cuda-tools parent folder", parent, e))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("cuda-tools");
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let python = std::env::var("ATTUNE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        // No cache: the stamp already keeps pip from running twice, and a cached copy of the
        // wheels (~200 MB) once filled a CI machine's last free space mid-install.
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-deps", "--no-cache-dir"])
        .arg("--target")
        .arg(&staging)
        .args(wheels.iter().map(|(n, v)| format!("{n}=={v}")))
        .output()
        .map_err(|e| Error::io("running pip (set ATTUNE_PYTHON to a python with pip)", &python, e))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(Error::Driver {
            op: "pip install of the CUDA wheels",
            msg: format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    crate::cache::write_atomic(&staging.join(STAMP_FILE), stamp_text(wheels).as_bytes())?;
    if dir.exists() {
        // An old or incomplete install (a complete current one returned above).
        std::fs::remove_dir_all(dir).map_err(|e| Error::io("removing an outdated cuda-tools folder", dir, e))?;
    }
    if let Err(e) = std::fs::rename(&staging, dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another process may have finished the same install first.
        if !wheels_installed(dir, wheels) {
            return Err(Error::io("moving the installed CUDA wheels into place", dir, e));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn finds_each_item_in_root_order_and_names_the_roots_when_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("tools");
        let kit = tmp.path().join("kit");
        touch(&wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        touch(&wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc.alt.so.12"));
        touch(&wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9"));
        touch(&wheel.join("nvidia/cuda_runtime/include/cuda_fp16.h"));
        touch(&kit.join("lib64/libnvrtc.so.12"));
        touch(&kit.join("include/cuda_fp16.h"));
        touch(&kit.join("bin/ptxas"));
        let tc = find_in(&[wheel.clone(), kit.clone()]).unwrap();
        assert_eq!(tc.nvrtc_lib, wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        assert_eq!(tc.nvrtc_builtins, Some(wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9")));
        assert_eq!(tc.include_dir, wheel.join("nvidia/cuda_runtime/include"));
        // ptxas is only in the second root.
        assert_eq!(tc.ptxas, Some(kit.join("bin/ptxas")));

        // An older toolkit first in the search order does not shadow the wheels.
        let old = tmp.path().join("cuda11");
        touch(&old.join("lib64/libnvrtc.so.11.2"));
        touch(&old.join("lib64/libnvrtc.so.112"));
        touch(&old.join("include/cuda_fp16.h"));
        let tc = find_in(&[old.clone(), wheel.clone()]).unwrap();
        assert_eq!(tc.nvrtc_lib, wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        assert_eq!(tc.include_dir, wheel.join("nvidia/cuda_runtime/include"));
        let err = find_in(std::slice::from_ref(&old)).unwrap_err().to_string();
        assert!(err.contains("libnvrtc.so.12"), "{err}");

        let empty = tmp.path().join("empty");
        let err = find_in(std::slice::from_ref(&empty)).unwrap_err().to_string();
        assert!(err.contains("NVRTC") && err.contains(&empty.display().to_string()), "{err}");
        assert!(err.contains("cargo xtask cuda-tools") && err.contains(TOOLS_ENV), "{err}");
    }

    #[test]
    fn the_stamp_must_match_the_pins() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!tools_installed(tmp.path()));
        std::fs::write(tmp.path().join(STAMP_FILE), "nvidia-cuda-nvrtc-cu12==12.0.0\n").unwrap();
        assert!(!tools_installed(tmp.path()));
        std::fs::write(tmp.path().join(STAMP_FILE), stamp_text(PINNED_WHEELS)).unwrap();
        assert!(tools_installed(tmp.path()));
        assert!(
            stamp_text(PINNED_WHEELS).lines().chain(stamp_text(CUBLAS_WHEELS).lines()).all(|l| l.contains("==12.9.")),
            "pins match cudarc's cuda-12090"
        );
    }
}
