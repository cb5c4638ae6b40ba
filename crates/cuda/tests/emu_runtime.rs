//! The emulator's runtime: shared memory, barriers, warp collectives, atomics, early exit,
//! indices, argument passing, errors. References are computed here from CUDA's documented
//! semantics, independently of the emulator's code.

mod emu_util;

use attune_cuda::{Dim3, Error, KernelArg, ModuleSpec};
use emu_util::*;

fn m() -> ModuleSpec {
    test_module("test/runtime.cu")
}

#[test]
fn block_reversal_through_static_shared_memory() {
    let d = dev();
    for threads in [32u32, 256, 1024] {
        let blocks = 3u32;
        let n = (threads * blocks) as usize;
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
        let (xb, yb) = (upload(&d, &x), zeros::<f32>(&d, n));
        d.launch(&plan(&m(), "reverse_static", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&xb), ptr(&yb)])).unwrap();
        let y: Vec<f32> = download(&yb);
        for b in 0..blocks as usize {
            for t in 0..threads as usize {
                let tt = threads as usize;
                assert_eq!(y[b * tt + t], x[b * tt + tt - 1 - t], "block {b} thread {t} of {threads}");
            }
        }
    }
}

#[test]
fn dynamic_shared_memory_holds_two_arrays() {
    let d = dev();
    let (threads, blocks) = (128u32, 5u32);
    let n = (threads * blocks) as usize;
    let x: Vec<f32> = (0..n).map(|i| (i * 3 % 17) as f32).collect();
    let (xb, yb) = (upload(&d, &x), zeros::<f32>(&d, n));
    let p = plan(&m(), "reverse_dynamic", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&xb), ptr(&yb)]);
    d.launch(&p.with_shared(2 * threads * 4)).unwrap();
    let y: Vec<f32> = download(&yb);
    let tt = threads as usize;
    for i in 0..n {
        let (b, t) = (i / tt, i % tt);
        assert_eq!(y[i], x[b * tt + tt - 1 - t] + 2.0 * x[i], "element {i}");
    }
}

/// CUDA programming guide semantics of the four shuffles with `width`.
fn shuffle_reference(v: &[i32; 32], lane: usize, src: usize, delta: usize, width: usize) -> [i32; 4] {
    let seg = lane / width * width;
    let idx = v[seg + src % width];
    let up = if lane % width >= delta { v[lane - delta] } else { v[lane] };
    let down = if lane % width + delta < width { v[lane + delta] } else { v[lane] };
    let j = lane ^ delta;
    let xor = if j < seg + width { v[j] } else { v[lane] };
    [idx, up, down, xor]
}

#[test]
fn shuffles_match_the_documented_formulas() {
    let d = dev();
    let threads = 64usize;
    for width in [32usize, 16, 8, 4, 2] {
        for delta in [0usize, 1, 2, 3, 5, 8, 16, 31] {
            let out = zeros::<i32>(&d, 4 * threads);
            let args = vec![ptr(&out), KernelArg::I32(width as i32), KernelArg::I32(delta as i32)];
            d.launch(&plan(&m(), "shuffles", Dim3::x(1), Dim3::x(threads as u32), args)).unwrap();
            let got: Vec<i32> = download(&out);
            for t in 0..threads {
                let (warp, lane) = (t / 32, t % 32);
                let v: [i32; 32] = std::array::from_fn(|l| 1000 * warp as i32 + l as i32);
                let src = (lane * 7 + 3) % 37;
                let want = shuffle_reference(&v, lane, src, delta, width);
                assert_eq!(
                    &got[4 * t..4 * t + 4],
                    &want,
                    "thread {t}, width {width}, delta {delta} (idx, up, down, xor)"
                );
            }
        }
    }
}

#[test]
fn ballot_any_all() {
    let d = dev();
    let warps = 4usize;
    let out = zeros::<u32>(&d, 3 * warps);
    d.launch(&plan(&m(), "votes", Dim3::x(1), Dim3::x(32 * warps as u32), vec![ptr(&out)])).unwrap();
    let got: Vec<u32> = download(&out);
    for w in 0..warps {
        let ballot = (0..32).filter(|l| l % (w + 2) == 0).fold(0u32, |b, l| b | 1 << l);
        assert_eq!(got[3 * w], ballot, "ballot of warp {w}");
        assert_eq!(got[3 * w + 1], (w % 2 == 1) as u32, "any of warp {w}");
        assert_eq!(got[3 * w + 2], (w == 0) as u32, "all of warp {w}");
    }
}

#[test]
fn atomics_over_many_blocks() {
    let d = dev();
    let (blocks, threads) = (64u32, 256u32);
    let n = (blocks * threads) as u64;
    let f = zeros::<f32>(&d, 1);
    let dd = zeros::<f64>(&d, 1);
    let i = zeros::<i32>(&d, 1);
    let u = zeros::<u64>(&d, 1);
    let mx = zeros::<u32>(&d, 1);
    let mn = zeros::<i32>(&d, 1);
    let cas = zeros::<i32>(&d, 1);
    let args = vec![ptr(&f), ptr(&dd), ptr(&i), ptr(&u), ptr(&mx), ptr(&mn), ptr(&cas)];
    d.launch(&plan(&m(), "atomics", Dim3::x(blocks), Dim3::x(threads), args)).unwrap();
    assert_eq!(download::<f32>(&f)[0], 0.5 * n as f32);
    assert_eq!(download::<f64>(&dd)[0], 0.25 * n as f64);
    assert_eq!(download::<i32>(&i)[0], (0..n).map(|g| (g % 7) as i32 - 3).sum::<i32>());
    assert_eq!(download::<u64>(&u)[0], n * (n - 1) / 2);
    assert_eq!(download::<u32>(&mx)[0], 3 * (n as u32 - 1));
    assert_eq!(download::<i32>(&mn)[0], -(n as i32 - 1));
    assert_eq!(download::<i32>(&cas)[0], n as i32);
}

#[test]
fn exited_threads_count_as_arrived_at_barriers() {
    let d = dev();
    for (threads, live) in [(256u32, 100i32), (64, 33), (64, 1), (128, 0)] {
        let blocks = 2u32;
        let out = zeros::<f32>(&d, (threads * blocks) as usize);
        let p = plan(&m(), "early_exit", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&out), KernelArg::I32(live)]);
        d.launch(&p).unwrap();
        let got: Vec<f32> = download(&out);
        for b in 0..blocks as usize {
            let row = &got[b * threads as usize..(b + 1) * threads as usize];
            for (t, &got) in row.iter().enumerate().take(live as usize) {
                assert_eq!(
                    got,
                    ((t + 1) % live as usize) as f32,
                    "block {b} thread {t} ({threads} threads, {live} live)"
                );
            }
            if live > 0 {
                let evens = (0..live).filter(|t| t % 2 == 0).count();
                assert_eq!(row[threads as usize - 1], evens as f32, "__syncthreads_count over the live threads");
            }
        }
    }
}

#[test]
fn multi_block_grids_with_2d_and_3d_indices() {
    let d = dev();
    for (grid, block) in [
        (Dim3::new(3, 2, 2), Dim3::new(32, 2, 2)),
        (Dim3::new(5, 3, 1), Dim3::new(8, 4, 1)),
        (Dim3::new(1, 1, 7), Dim3::new(64, 1, 1)),
    ] {
        let tpb = block.count() as usize;
        let total = grid.count() as usize * tpb;
        let out = zeros::<u32>(&d, 12 * total);
        d.launch(&plan(&m(), "indices", grid, block, vec![ptr(&out)])).unwrap();
        let got: Vec<u32> = download(&out);
        for bz in 0..grid.z {
            for by in 0..grid.y {
                for bx in 0..grid.x {
                    for tz in 0..block.z {
                        for ty in 0..block.y {
                            for tx in 0..block.x {
                                let b = (bx + grid.x * (by + grid.y * bz)) as usize;
                                let t = (tx + block.x * (ty + block.y * tz)) as usize;
                                let o = &got[12 * (b * tpb + t)..12 * (b * tpb + t + 1)];
                                let want = [tx, ty, tz, bx, by, bz, block.x, block.y, block.z, grid.x, grid.y, grid.z];
                                assert_eq!(o, &want, "grid {grid:?} block {block:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn pod_struct_arguments_by_value() {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ScaleParams {
        n: i32,
        scale: f32,
        offset: f64,
    }
    // SAFETY: repr(C), no padding (4 + 4 + 8 bytes), every bit pattern valid.
    unsafe impl bytemuck::Zeroable for ScaleParams {}
    unsafe impl bytemuck::Pod for ScaleParams {}
    let d = dev();
    let n = 300usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let (xb, yb) = (upload(&d, &x), zeros::<f32>(&d, n + 20));
    let p = ScaleParams { n: n as i32, scale: 1.5, offset: -2.0 };
    let plan = attune_cuda::LaunchPlan::linear(m(), "scale_pod", n, 128, vec![ptr(&xb), KernelArg::pod(&p), ptr(&yb)]);
    d.launch(&plan).unwrap();
    let y: Vec<f32> = download(&yb);
    for i in 0..n {
        assert_eq!(y[i], x[i] * 1.5 - 2.0);
    }
    assert!(y[n..].iter().all(|&v| v == 0.0), "threads past n wrote nothing");
}

#[test]
fn wrong_arguments_and_geometry_are_bad_launches() {
    let d = dev();
    let out = zeros::<f32>(&d, 64);
    let few = plan(&m(), "reverse_static", Dim3::x(1), Dim3::x(32), vec![ptr(&out)]);
    let err = d.launch(&few).unwrap_err().to_string();
    assert!(err.contains("takes 2 arguments") && err.contains("passes 1"), "{err}");
    let wrong = plan(&m(), "reverse_static", Dim3::x(1), Dim3::x(32), vec![ptr(&out), KernelArg::I32(1)]);
    assert!(matches!(d.launch(&wrong), Err(Error::BadLaunch { .. })));
    for (block, shared, what) in
        [(Dim3::x(48), 0, "multiple of 32"), (Dim3::x(2048), 0, "1 to 1024"), (Dim3::x(64), 300 << 10, "227 KiB")]
    {
        let p = plan(&m(), "reverse_static", Dim3::x(1), block, vec![ptr(&out), ptr(&out)]).with_shared(shared);
        match d.launch(&p) {
            Err(e @ Error::BadLaunch { .. }) => assert!(e.to_string().contains(what), "{e}"),
            other => panic!("expected BadLaunch ({what}), got {other:?}"),
        }
    }
    let missing = plan(&m(), "no_such_kernel", Dim3::x(1), Dim3::x(32), vec![]);
    let err = d.launch(&missing).unwrap_err().to_string();
    assert!(err.contains("no_such_kernel") && err.contains("reverse_static"), "lists the entries: {err}");
}

#[test]
fn a_divergent_warp_collective_is_a_reported_deadlock() {
    let d = dev();
    let out = zeros::<i32>(&d, 128);
    let err = d.launch(&plan(&m(), "divergent_collective", Dim3::x(2), Dim3::x(128), vec![ptr(&out)])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::EmuFault { .. }), "{msg}");
    for needle in ["divergent_collective", "deadlock", "__shfl_xor_sync", "warp 1", "block [0, 0, 0]"] {
        assert!(msg.contains(needle), "'{needle}' missing from: {msg}");
    }
}

#[test]
fn a_partial_warp_mask_is_refused_and_a_full_one_runs() {
    let d = dev();
    let out = zeros::<i32>(&d, 64);
    let run = |mask: u32| {
        d.launch(&plan(&m(), "partial_mask", Dim3::x(1), Dim3::x(64), vec![ptr(&out), KernelArg::U32(mask)]))
    };
    run(0xffff_ffff).unwrap();
    let err = run(0x0000_ffff).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::EmuFault { .. }), "{msg}");
    for needle in ["partial_mask", "__shfl_xor_sync", "0x0000ffff", "full mask"] {
        assert!(msg.contains(needle), "'{needle}' missing from: {msg}");
    }
}

#[test]
fn trap_fails_the_launch_naming_the_thread() {
    let d = dev();
    let out = zeros::<i32>(&d, 64);
    let msg = d.launch(&plan(&m(), "traps", Dim3::x(1), Dim3::x(64), vec![ptr(&out)])).unwrap_err().to_string();
    assert!(msg.contains("traps") && msg.contains("__trap") && msg.contains("thread (37,0,0)"), "{msg}");
}

#[test]
fn compile_errors_carry_the_log_file_and_defines() {
    let d = dev();
    let spec = ModuleSpec::new("test/runtime.cu", [("ATTUNE_TEST_BROKEN".to_string(), "1".to_string())]);
    let out = zeros::<f32>(&d, 1);
    let err = d.launch(&plan(&spec, "broken", Dim3::x(1), Dim3::x(32), vec![ptr(&out)])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::EmuCompile { .. }), "{msg}");
    for needle in ["this_name_does_not_exist", "test/runtime.cu", "ATTUNE_TEST_BROKEN=1"] {
        assert!(msg.contains(needle), "'{needle}' missing from: {msg}");
    }
}

#[test]
fn results_do_not_depend_on_the_number_of_host_threads() {
    let d = dev();
    let (threads, blocks) = (256u32, 37u32);
    let n = (threads * blocks) as usize;
    let x: Vec<f32> = (0..n).map(|i| ((i * 2654435761) % 1000) as f32 / 7.0).collect();
    let run = |pool_threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(pool_threads).build().unwrap();
        pool.install(|| {
            let (xb, yb) = (upload(&d, &x), zeros::<f32>(&d, n));
            let p = plan(&m(), "reverse_dynamic", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&xb), ptr(&yb)]);
            d.launch(&p.with_shared(2 * threads * 4)).unwrap();
            download::<f32>(&yb)
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
}

#[test]
fn large_per_thread_locals_fit_the_default_stack() {
    let d = dev();
    let (blocks, threads) = (2u32, 64u32);
    let out = zeros::<f32>(&d, (blocks * threads) as usize);
    d.launch(&plan(&m(), "big_locals", Dim3::x(blocks), Dim3::x(threads), vec![ptr(&out)])).unwrap();
    let got: Vec<f32> = download(&out);
    for (g, &v) in got.iter().enumerate() {
        let t = g % threads as usize;
        let want: f32 = (0..32768).step_by(97).map(|i| ((i + t) % 7) as f32).sum();
        assert_eq!(v, want, "thread {g}");
    }
}

#[test]
fn describe_names_the_emulator() {
    let s = dev().describe();
    assert!(s.starts_with("CUDA emulator"), "{s}");
}
