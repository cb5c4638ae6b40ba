//! Sanitizer mode: the test binary re-executes itself with the ASan runtime preloaded
//! (`attune_cuda::emu::sanitizer_env`), the child runs one case (selected by an environment
//! variable) and the parent checks what the child printed and how it ended.

mod emu_util;

use attune_cuda::emu::sanitizer_env;
use attune_cuda::{Dim3, KernelArg, ModuleSpec};
use emu_util::*;
use std::process::Command;

const CASE_VAR: &str = "ATTUNE_EMU_SANITIZE_TEST_CASE";

fn m() -> ModuleSpec {
    test_module("test/sanitize.cu")
}

/// The child's side: runs `case` on the sanitized emulator.
fn run_case(case: &str) {
    let d = dev();
    assert!(d.describe().contains("AddressSanitizer"), "the child runs sanitized: {}", d.describe());
    match case {
        "oob_global" => {
            let n = 96;
            let x = zeros::<f32>(&d, n);
            let args = vec![ptr(&x), KernelArg::I32(n as i32)];
            d.launch(&plan(&m(), "oob_global", Dim3::x(3), Dim3::x(32), args)).unwrap();
        }
        "oob_static_shared" => {
            let out = zeros::<f32>(&d, 3 * 64);
            d.launch(&plan(&m(), "oob_static_shared", Dim3::x(3), Dim3::new(32, 2, 1), vec![ptr(&out)])).unwrap();
        }
        "oob_dynamic_shared" => {
            let out = zeros::<f32>(&d, 32);
            let p = plan(&m(), "oob_dynamic_shared", Dim3::x(2), Dim3::x(32), vec![ptr(&out), KernelArg::I32(32)]);
            d.launch(&p.with_shared(32 * 4)).unwrap();
        }
        "in_bounds" => {
            let (n, threads) = (1000usize, 256u32);
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let (xb, yb) = (upload(&d, &x), zeros::<f32>(&d, n));
            let p = attune_cuda::LaunchPlan::linear(
                m(),
                "in_bounds",
                n,
                threads,
                vec![ptr(&xb), ptr(&yb), KernelArg::I32(n as i32)],
            );
            d.launch(&p.with_shared(threads * 4)).unwrap();
            let y: Vec<f32> = download(&yb);
            let xv = |i: usize| if i < n { x[i] } else { 0.0 };
            for (i, &got) in y.iter().enumerate() {
                let (b, t) = (i / threads as usize, i % threads as usize);
                let rev = xv(b * threads as usize + threads as usize - 1 - t);
                assert_eq!(got, rev + 2.0 * x[i] + xv(i ^ 1), "element {i}");
            }
            // The other test kernels run clean too (shuffles, barriers, mma, cp.async).
            let r = test_module("test/fragments.cu");
            let src: Vec<f32> = (0..12 * 64).map(|i| i as f32).collect();
            let (sb, ob) = (upload(&d, &src), zeros::<f32>(&d, 6 * 64));
            let p = plan(&r, "cp_async_groups", Dim3::x(1), Dim3::x(64), vec![ptr(&sb), ptr(&ob)]);
            d.launch(&p.with_shared(3 * 4 * 64 * 4)).unwrap();
            println!("in-bounds kernels passed");
        }
        other => panic!("unknown sanitizer case {other}"),
    }
}

/// Runs `case` in a child process under the sanitizer; None when no ASan runtime is available.
fn run_child(case: &str) -> Option<(bool, String)> {
    let env = match sanitizer_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("skipping the sanitizer test: {e}");
            return None;
        }
    };
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args(["sanitizer_child", "--exact", "--nocapture", "--test-threads=1"])
        .envs(env)
        .env(CASE_VAR, case)
        .output()
        .expect("re-running the test binary");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Some((out.status.success(), text))
}

/// Not a test on its own: the body of the re-executed child.
#[test]
fn sanitizer_child() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        run_case(&case);
    }
}

#[test]
fn out_of_bounds_accesses_name_the_kernel_block_and_thread() {
    for (case, line) in [
        ("oob_global", "heap-buffer-overflow in kernel oob_global, block (1,0,0), thread (5,0,0)"),
        ("oob_static_shared", "global-buffer-overflow in kernel oob_static_shared, block (2,0,0), thread (31,1,0)"),
        ("oob_dynamic_shared", "heap-buffer-overflow in kernel oob_dynamic_shared, block (0,0,0), thread (7,0,0)"),
    ] {
        let Some((ok, out)) = run_child(case) else { return };
        assert!(!ok, "{case}: the child should have been stopped by ASan:\n{out}");
        assert!(out.contains(&format!("attune-emu sanitizer: {line}")), "{case}: expected '{line}' in:\n{out}");
        assert!(out.contains("AddressSanitizer"), "{case}: ASan's own report follows:\n{out}");
    }
}

#[test]
fn in_bounds_kernels_pass_under_the_sanitizer() {
    let Some((ok, out)) = run_child("in_bounds") else { return };
    assert!(ok && out.contains("in-bounds kernels passed"), "the child failed:\n{out}");
    assert!(!out.contains("AddressSanitizer"), "no ASan report expected:\n{out}");
}

#[test]
fn sanitized_modules_refuse_to_load_without_the_runtime() {
    if attune_cuda::emu::sanitizer_runtime_loaded() {
        return; // this process is a sanitized child
    }
    let exec =
        attune_cuda::emu::EmuExecutor::with_options(attune_cuda::emu::EmuOptions { cache_dir: None, sanitize: true })
            .expect("executor");
    let err = exec.prepare(&m()).unwrap_err().to_string();
    assert!(err.contains("LD_PRELOAD") && err.contains("detect_leaks=0"), "{err}");
}
