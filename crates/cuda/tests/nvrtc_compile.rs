//! NVRTC through cudarc on kernels/test/nvrtc_smoke.cu: PTX and cubin for sm_80 and sm_90,
//! the disk cache (hits, rebuilds of truncated entries), PTX dumps, and compile errors.
//!
//! These need NVRTC but no GPU. When no toolchain is found the CUDA wheels are installed into
//! the workspace's target/cuda-tools (what `cargo xtask cuda-tools` does); when that fails
//! too (no pip, no network) each test prints why and returns.

use attune_cuda::cache::DiskCache;
use attune_cuda::nvrtc::{self, CompileOptions, Target};
use attune_cuda::{Error, ModuleSpec, toolchain};
use std::sync::{Mutex, MutexGuard, OnceLock};

const FILE: &str = "test/nvrtc_smoke.cu";

/// Serialises the tests (they count NVRTC runs) and readies the toolchain once; `None` means
/// skip, after printing why.
fn ready(test: &str) -> Option<MutexGuard<'static, ()>> {
    static LOCK: Mutex<()> = Mutex::new(());
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let ready = READY.get_or_init(|| {
        if toolchain::find().is_err() {
            let dir = toolchain::default_tools_dir();
            eprintln!("no CUDA toolchain found; installing the pinned wheels into {}", dir.display());
            toolchain::install_tools(&dir).map_err(|e| e.to_string())?;
        }
        toolchain::nvrtc().map(|_| ()).map_err(|e| e.to_string())
    });
    match ready {
        Ok(()) => Some(guard),
        Err(why) => {
            eprintln!("{test}: skipped: NVRTC is not available: {why}");
            None
        }
    }
}

fn fresh_options() -> (tempfile::TempDir, CompileOptions) {
    let dir = tempfile::tempdir().unwrap();
    let opts = CompileOptions { cache: DiskCache::new(dir.path(), "nvrtc"), dump_ptx: None };
    (dir, opts)
}

fn smoke(defines: &[(&str, &str)]) -> ModuleSpec {
    ModuleSpec::new(FILE, defines.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// The ELF header fields a cubin must have: magic, 64-bit class, machine EM_CUDA (190).
fn assert_cuda_elf(image: &[u8]) {
    assert_eq!(&image[..4], b"\x7fELF", "a cubin is an ELF file");
    assert_eq!(image[4], 2, "ELFCLASS64");
    assert_eq!(u16::from_le_bytes([image[18], image[19]]), 190, "e_machine is EM_CUDA");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn compiles_to_ptx_and_cubin_for_sm80_and_sm90() {
    let Some(_g) = ready("compiles_to_ptx_and_cubin_for_sm80_and_sm90") else { return };
    let (_dir, opts) = fresh_options();
    let spec = smoke(&[]);
    for arch in [80, 90] {
        let ptx = nvrtc::compile_with(&spec, Target::Compute(arch), &opts).unwrap();
        let text = ptx.ptx().expect("PTX target gives PTX text");
        // The PTX ISA's module directives: `.target sm_XX` names the virtual arch's number.
        assert!(text.lines().any(|l| l.trim() == format!(".target sm_{arch}")), "{text}");
        // extern "C": entries keep their source names.
        for entry in ["smoke_axpy", "smoke_block_sum"] {
            assert!(text.contains(&format!(".entry {entry}(")), "{entry} missing from\n{text}");
        }

        let cubin = nvrtc::compile_with(&spec, Target::Sm(arch), &opts).unwrap();
        assert!(cubin.ptx().is_none());
        assert_cuda_elf(&cubin.image);
        assert!(contains(&cubin.image, b"smoke_axpy\0") && contains(&cubin.image, b"smoke_block_sum\0"));
    }
}

#[test]
fn a_second_compile_hits_the_cache() {
    let Some(_g) = ready("a_second_compile_hits_the_cache") else { return };
    let (_dir, opts) = fresh_options();
    let spec = smoke(&[("SMOKE_BLOCK", "64")]);
    let before = nvrtc::nvrtc_runs();
    let first = nvrtc::compile_with(&spec, Target::Sm(80), &opts).unwrap();
    assert_eq!(nvrtc::nvrtc_runs(), before + 1);
    assert!(!first.from_cache);
    let second = nvrtc::compile_with(&spec, Target::Sm(80), &opts).unwrap();
    assert_eq!(nvrtc::nvrtc_runs(), before + 1, "the second compile must not run NVRTC");
    assert!(second.from_cache);
    assert_eq!(first.image, second.image);
    assert_eq!(first.key, second.key);

    // Another define value or target is another module.
    let other = nvrtc::compile_with(&smoke(&[("SMOKE_BLOCK", "256")]), Target::Sm(80), &opts).unwrap();
    let other_arch = nvrtc::compile_with(&spec, Target::Sm(90), &opts).unwrap();
    assert!(!other.from_cache && !other_arch.from_cache);
    assert_eq!(nvrtc::nvrtc_runs(), before + 3);
}

#[test]
fn defines_reach_the_compiler() {
    let Some(_g) = ready("defines_reach_the_compiler") else { return };
    let (_dir, opts) = fresh_options();
    for block in [64usize, 256] {
        let spec = smoke(&[("SMOKE_BLOCK", &block.to_string())]);
        let out = nvrtc::compile_with(&spec, Target::Compute(80), &opts).unwrap();
        // `__shared__ float buf[SMOKE_BLOCK]` is a .shared array of 4 * SMOKE_BLOCK bytes.
        let want = format!("[{}]", 4 * block);
        let text = out.ptx().unwrap();
        assert!(text.lines().any(|l| l.contains(".shared") && l.contains(&want)), "no {want} shared array in\n{text}");
    }
}

#[test]
fn a_syntax_error_reports_log_file_defines_and_arch() {
    let Some(_g) = ready("a_syntax_error_reports_log_file_defines_and_arch") else { return };
    let (_dir, opts) = fresh_options();
    let spec = smoke(&[("SMOKE_BREAK", "1"), ("SMOKE_BLOCK", "32")]);
    let err = nvrtc::compile_with(&spec, Target::Sm(90), &opts).unwrap_err();
    assert!(matches!(err, Error::Nvrtc { .. }), "{err:?}");
    let msg = err.to_string();
    // The line of the deliberate error, found independently in the embedded source.
    let source = attune_cuda::sources::kernel_file(FILE).unwrap();
    let line = source.lines().position(|l| l.starts_with("this line is not C++")).unwrap() + 1;
    assert!(msg.contains(&format!("{FILE}({line}): error")), "log with file and line missing:\n{msg}");
    assert!(msg.contains("SMOKE_BREAK=1") && msg.contains("SMOKE_BLOCK=32"), "defines missing:\n{msg}");
    assert!(msg.contains("sm_90"), "arch missing:\n{msg}");
    assert!(
        std::fs::read_dir(opts.cache.dir()).map(|d| d.count() == 0).unwrap_or(true),
        "a failed compile caches nothing"
    );
}

#[test]
fn a_truncated_cache_entry_is_rebuilt() {
    let Some(_g) = ready("a_truncated_cache_entry_is_rebuilt") else { return };
    let (_dir, opts) = fresh_options();
    let spec = smoke(&[]);
    let first = nvrtc::compile_with(&spec, Target::Sm(90), &opts).unwrap();
    let path = opts.cache.path(&first.key, "cubin");
    std::fs::write(&path, &first.image[..first.image.len() / 2]).unwrap();
    let before = nvrtc::nvrtc_runs();
    let again = nvrtc::compile_with(&spec, Target::Sm(90), &opts).unwrap();
    assert!(!again.from_cache, "a truncated entry must not be used");
    assert_eq!(nvrtc::nvrtc_runs(), before + 1);
    assert_eq!(again.image, first.image, "the rebuilt entry is the whole cubin");
    assert_eq!(std::fs::read(&path).unwrap(), first.image);
    assert!(nvrtc::compile_with(&spec, Target::Sm(90), &opts).unwrap().from_cache);
}

#[test]
fn ptx_is_dumped_for_compiled_and_cached_modules() {
    let Some(_g) = ready("ptx_is_dumped_for_compiled_and_cached_modules") else { return };
    let (_dir, mut opts) = fresh_options();
    let spec = smoke(&[("SMOKE_BLOCK", "32")]);
    nvrtc::compile_with(&spec, Target::Sm(80), &opts).unwrap();
    let dump = tempfile::tempdir().unwrap();
    opts.dump_ptx = Some(dump.path().to_path_buf());
    // A cache hit still dumps (the PTX is stored beside the cubin).
    assert!(nvrtc::compile_with(&spec, Target::Sm(80), &opts).unwrap().from_cache);
    let file = dump.path().join("test_nvrtc_smoke__SMOKE_BLOCK=32.sm_80.ptx");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(text.contains(".entry smoke_axpy("));
    nvrtc::compile_with(&spec, Target::Compute(90), &opts).unwrap();
    assert!(dump.path().join("test_nvrtc_smoke__SMOKE_BLOCK=32.compute_90.ptx").is_file());
}

/// The emulator's self-test kernels are CUDA too: they must build for real GPUs (ptxas checks
/// the inline PTX of the mma/ldmatrix/cp.async helpers), so the fragment tests can run on one.
#[test]
fn the_emulator_test_kernels_compile_for_gpus_too() {
    let Some(_g) = ready("the_emulator_test_kernels_compile_for_gpus_too") else { return };
    let (_dir, opts) = fresh_options();
    let files: [(&str, &[&str]); 2] = [
        ("test/fragments.cu", &["ldmatrix_record", "mma_registers", "mma_tile", "cp_async_groups"]),
        ("test/runtime.cu", &["shuffles", "votes", "atomics", "divergent_collective", "partial_mask"]),
    ];
    for (file, entries) in files {
        let spec = ModuleSpec::new(file, Vec::<(String, String)>::new());
        for arch in [80, 90] {
            let cubin = nvrtc::compile_with(&spec, Target::Sm(arch), &opts)
                .unwrap_or_else(|e| panic!("{file} for sm_{arch}: {e}"));
            assert_cuda_elf(&cubin.image);
            for entry in entries {
                assert!(contains(&cubin.image, format!("{entry}\0").as_bytes()), "{entry} missing from {file}");
            }
        }
    }
}

#[test]
fn nvrtc_is_the_one_cudarc_loads() {
    let Some(_g) = ready("nvrtc_is_the_one_cudarc_loads") else { return };
    let nv = toolchain::nvrtc().unwrap();
    // nvrtc() checked that cudarc's nvrtcVersion is ours; the version is what the wheel's
    // file name says (libnvrtc-builtins.so.MAJOR.MINOR) when the builtins were found.
    assert!(nv.version.0 >= 12, "{:?}", nv.version);
    if let Some(b) = &nv.toolchain.nvrtc_builtins {
        let name = b.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(&format!(".so.{}.{}", nv.version.0, nv.version.1)), "{name} vs {:?}", nv.version);
    }
    // SAFETY: NVRTC is loaded (checked by nvrtc()).
    assert!(unsafe { cudarc::nvrtc::sys::is_culib_present() });
}
