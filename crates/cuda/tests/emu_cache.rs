//! The emulator's module cache: a built module is reused from disk by a fresh executor, and a
//! corrupted cache entry is detected and rebuilt.

mod emu_util;

use attune_cuda::emu::{EmuExecutor, EmuOptions, EmuStats};
use attune_cuda::{Dim3, Executor, KernelArg, LaunchPlan, ModuleSpec};

/// Runs `reverse_static` on one block of 64 through the executor's own calls.
fn reverse_once(exec: &EmuExecutor) {
    reverse_once_in(exec, emu_util::test_module("test/runtime.cu"));
}

/// [`reverse_once`] from the module `spec` (test/runtime.cu with any defines).
fn reverse_once_in(exec: &EmuExecutor, spec: ModuleSpec) {
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let input = exec.alloc(256, false).unwrap();
    let output = exec.alloc(256, true).unwrap();
    exec.htod(bytemuck::cast_slice(&x), &*input, 0).unwrap();
    let plan = LaunchPlan::new(
        spec,
        "reverse_static",
        Dim3::x(1),
        Dim3::x(64),
        vec![KernelArg::Ptr(input.device_ptr()), KernelArg::Ptr(output.device_ptr())],
    );
    exec.launch(&plan).unwrap();
    let mut bytes = vec![0u8; 256];
    exec.dtoh(&*output, 0, &mut bytes).unwrap();
    let y: Vec<f32> = bytes.chunks(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
    assert_eq!(y, x.iter().rev().copied().collect::<Vec<_>>());
}

#[test]
fn built_modules_are_reused_and_corrupt_ones_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = EmuOptions { cache_dir: Some(tmp.path().to_path_buf()), sanitize: false };

    let first = EmuExecutor::with_options(opts.clone()).unwrap();
    reverse_once(&first);
    reverse_once(&first);
    assert_eq!(first.stats(), EmuStats { compiled: 1, loaded_from_disk: 0 }, "compiled once, then in memory");

    let second = EmuExecutor::with_options(opts.clone()).unwrap();
    reverse_once(&second);
    assert_eq!(second.stats(), EmuStats { compiled: 0, loaded_from_disk: 1 }, "a fresh executor loads from disk");

    // Corrupt the cached library (a new file renamed over it, as a crashed writer might leave).
    let dir = first.cache_dir();
    let so: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .collect();
    assert_eq!(so.len(), 1, "one module in {}", dir.display());
    let mut bytes = std::fs::read(&so[0]).unwrap();
    bytes.truncate(bytes.len() / 2);
    let tmp_file = dir.join("corrupt.tmp");
    std::fs::write(&tmp_file, &bytes).unwrap();
    std::fs::rename(&tmp_file, &so[0]).unwrap();

    let third = EmuExecutor::with_options(opts).unwrap();
    reverse_once(&third);
    assert_eq!(third.stats(), EmuStats { compiled: 1, loaded_from_disk: 0 }, "the corrupt entry is rebuilt");
}

#[test]
fn concurrent_callers_build_each_module_once() {
    let tmp = tempfile::tempdir().unwrap();
    let exec =
        EmuExecutor::with_options(EmuOptions { cache_dir: Some(tmp.path().to_path_buf()), sanitize: false }).unwrap();
    // Two modules (a define the source ignores makes a second one), each asked for by two
    // threads at once: both build, neither twice, and every launch runs.
    let variant =
        |v: usize| ModuleSpec::new("test/runtime.cu", vec![("ATTUNE_TEST_VARIANT".to_string(), v.to_string())]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let exec = &exec;
            s.spawn(move || reverse_once_in(exec, variant(t % 2)));
        }
    });
    assert_eq!(exec.stats(), EmuStats { compiled: 2, loaded_from_disk: 0 });
}
