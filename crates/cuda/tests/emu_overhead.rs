//! Launch overhead of the emulator for a trivial kernel (one `__syncthreads`), printed rather
//! than asserted: `cargo test --release -p attune-cuda --test emu_overhead -- --ignored --nocapture`.

mod emu_util;

use attune_cuda::Dim3;
use emu_util::*;
use std::time::Instant;

/// User + system CPU time of the process, in seconds (the machine may be shared, so wall time
/// alone overstates the cost).
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
#[ignore = "a measurement; run explicitly in release"]
fn launch_overhead_of_a_trivial_kernel() {
    let d = dev();
    let m = test_module("test/runtime.cu");
    let out = zeros::<f32>(&d, 64);
    for (blocks, threads) in [(1u32, 32u32), (1, 256), (64, 256), (1, 1024)] {
        let p = plan(&m, "trivial", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&out)]);
        for _ in 0..20 {
            d.launch(&p).unwrap();
        }
        let iters = if blocks > 1 { 200 } else { 2000 };
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        for _ in 0..iters {
            d.launch(&p).unwrap();
        }
        let per = start.elapsed().as_secs_f64() / iters as f64;
        let cpu = (cpu_seconds() - cpu0) / iters as f64;
        println!(
            "trivial kernel, {blocks} block(s) x {threads} threads: {:.1} us wall per launch, {:.1} us CPU ({:.0} ns CPU per thread), {}",
            per * 1e6,
            cpu * 1e6,
            cpu * 1e9 / (blocks * threads) as f64,
            d.describe()
        );
    }
}
