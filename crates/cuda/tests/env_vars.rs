//! The environment variables users set: `ATTUNE_CACHE_DIR` moves every cache (NVRTC and the
//! emulator's), `ATTUNE_DUMP_PTX` names where compiled PTX is dumped. This file is its own test
//! process with one test, so setting the variables races with nothing.

mod emu_util;

use attune_cuda::cache::{DiskCache, cache_root};
use attune_cuda::emu::EmuExecutor;
use attune_cuda::nvrtc::CompileOptions;
use emu_util::test_module;

#[test]
fn cache_dir_and_dump_ptx_are_taken_from_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    let dump = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process, and it starts no threads before these calls.
    unsafe {
        std::env::set_var("ATTUNE_CACHE_DIR", cache.path());
        std::env::set_var("ATTUNE_DUMP_PTX", dump.path());
    }
    assert_eq!(cache_root(), cache.path());
    assert_eq!(DiskCache::default_for("nvrtc").dir(), cache.path().join("nvrtc"));
    let opts = CompileOptions::from_env();
    assert_eq!(opts.cache.dir(), cache.path().join("nvrtc"));
    assert_eq!(opts.dump_ptx.as_deref(), Some(dump.path()));

    // The emulator builds its modules into the moved cache.
    let emu = EmuExecutor::new().expect("the emulator needs a host C++ compiler");
    assert_eq!(emu.cache_dir(), cache.path().join("emu"));
    emu.prepare(&test_module("test/runtime.cu")).unwrap();
    let built = std::fs::read_dir(cache.path().join("emu")).unwrap().count();
    assert!(built > 0, "no module was written under {}", cache.path().display());

    // An empty value means unset, as for the other variables.
    unsafe {
        std::env::set_var("ATTUNE_CACHE_DIR", "");
        std::env::set_var("ATTUNE_DUMP_PTX", "");
    }
    assert_ne!(cache_root(), cache.path());
    assert_eq!(CompileOptions::from_env().dump_ptx, None);
}
