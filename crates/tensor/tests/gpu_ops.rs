//! The reduction, softmax, norm, index, dropout/random and cross-entropy kernels on the GPU
//! devices (Emu always, Cuda when present) against the CPU backend: forward values and
//! gradients through autograd, for shapes that are not multiples of any block size,
//! non-contiguous inputs, several reduced dims and special rows (NaN, -inf, +inf).

use attune_tensor::testing::{check, gpu_devices, param, with_grads};
use attune_tensor::{CrossEntropyOpts, DType, Device, Reduction, Result, Rng, Tensor, Var};

/// A tensor from f64 values, converted to `dtype`, on `dev`.
fn from_f64(v: &[f64], dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(v.to_vec(), dims.to_vec(), &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

#[test]
fn reductions_over_several_dims_of_transposed_inputs_with_gradients() {
    for t in FLOATS {
        // [17, 33, 5] seen through a transpose: the kernels read strided memory.
        check(&format!("sum/mean/var {t}"), 2.0, |d| {
            let x = param(1, &[5, 33, 17], t, d)?;
            // A fresh view per backward (each backward releases the graph it ran).
            let xt = || x.transpose(0, 2);
            let mut out = with_grads(xt()?.sum([0usize, 2], true)?, &[&x])?;
            out.extend(with_grads(xt()?.mean(1usize, false)?, &[&x])?);
            out.extend(with_grads(xt()?.var([1usize, 2], 1, false)?, &[&x])?);
            out.extend(with_grads(xt()?.std(0usize, 0, true)?, &[&x])?);
            Ok(out)
        });
        check(&format!("max/min/logsumexp {t}"), 2.0, |d| {
            let x = param(2, &[5, 33, 17], t, d)?;
            let xt = || x.transpose(0, 2);
            let mut out = with_grads(xt()?.max([0usize, 1], false)?, &[&x])?;
            out.extend(with_grads(xt()?.min(2usize, true)?, &[&x])?);
            out.extend(with_grads(xt()?.logsumexp([1usize, 2], false)?, &[&x])?);
            out.extend(with_grads(xt()?.sum_all()?, &[&x])?);
            Ok(out)
        });
    }
}

#[test]
fn reductions_of_long_rows_columns_and_single_elements() {
    for t in [DType::F32, DType::BF16] {
        check(&format!("long rows and columns {t}"), 2.0, |d| {
            let a = param(3, &[3, 1000], t, d)?;
            let b = param(4, &[1000, 3], t, d)?;
            let one = param(5, &[1, 1], t, d)?;
            let mut out = with_grads(a.sum(1usize, false)?, &[&a])?;
            out.extend(with_grads(a.logsumexp(1usize, true)?, &[&a])?);
            out.extend(with_grads(b.sum(0usize, false)?, &[&b])?);
            out.extend(with_grads(b.mean(0usize, true)?, &[&b])?);
            out.extend(with_grads(b.max(0usize, false)?, &[&b])?);
            out.extend(with_grads(one.var_all(0)?, &[&one])?);
            out.push(b.argmax(0usize, false)?);
            out.push(a.argmin(1usize, true)?);
            Ok(out)
        });
    }
}

#[test]
fn reductions_follow_the_cpu_on_nan_inf_ties_and_empty_sets() {
    let inf = f64::INFINITY;
    #[rustfmt::skip]
    let v = [
        1.0, 3.0, 3.0, -2.0,            // a tie for the max: first index, gradient split
        -inf, -inf, -inf, -inf,         // all -inf: logsumexp -inf with gradient 0
        0.5, f64::NAN, 2.0, f64::NAN,   // NaN wins max, min, argmax and argmin (first NaN)
        inf, 1.0, inf, -1.0,            // +inf
        -1.0, -1.0, -1.0, -1.0,         // all equal
    ];
    for t in FLOATS {
        check(&format!("special rows {t}"), 1.0, |d| {
            let x = Var::from_tensor(&from_f64(&v, &[5, 4], t, d)?)?;
            let mut out = with_grads(x.max(1usize, false)?, &[&x])?;
            out.extend(with_grads(x.min(1usize, true)?, &[&x])?);
            out.extend(with_grads(x.logsumexp(1usize, false)?, &[&x])?);
            out.push(x.argmax(1usize, false)?);
            out.push(x.argmin(1usize, false)?);
            out.push(x.sum(1usize, false)?);
            out.push(x.var(1usize, 1, false)?);
            // Empty sets: sum 0, mean NaN, logsumexp -inf, var NaN.
            let e = Tensor::zeros([3, 0], t, d)?;
            out.extend([
                e.sum(1usize, false)?,
                e.mean(1usize, false)?,
                e.logsumexp(1usize, true)?,
                e.var(1usize, 0, false)?,
            ]);
            Ok(out)
        });
    }
    // Integers: sums wrap in the dtype, extrema and indices are exact.
    for t in [DType::U8, DType::U32, DType::I64] {
        check(&format!("integer reductions {t}"), 1.0, |d| {
            let x =
                Tensor::from_vec((0..60i64).map(|v| (v * 37) % 251).collect::<Vec<_>>(), [6, 10], d)?.to_dtype(t)?;
            let xt = x.t()?;
            Ok(vec![
                x.sum(1usize, false)?,
                xt.sum(1usize, true)?,
                x.max(0usize, false)?,
                xt.min(0usize, false)?,
                x.argmax(1usize, false)?,
                xt.argmin(1usize, false)?,
                x.sum_all()?,
            ])
        });
    }
}

#[test]
fn softmax_and_log_softmax_along_every_dim() {
    for t in FLOATS {
        check(&format!("softmax {t}"), 2.0, |d| {
            let mut out = Vec::new();
            for (seed, dims, dim) in [
                (6, &[5, 17][..], 1usize),
                (7, &[2, 1000], 1),
                (8, &[1000, 3], 0),
                (9, &[4, 7, 300], 1),
                (10, &[1, 1], 0),
            ] {
                let x = param(seed, dims, t, d)?;
                out.extend(with_grads(x.softmax(dim)?, &[&x])?);
                out.extend(with_grads(x.log_softmax(dim)?, &[&x])?);
            }
            // Non-contiguous: a transposed [33, 19] along both dims.
            let x = param(11, &[19, 33], t, d)?;
            out.extend(with_grads(x.t()?.softmax(1usize)?, &[&x])?);
            out.extend(with_grads(x.t()?.log_softmax(0usize)?, &[&x])?);
            Ok(out)
        });
    }
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let v = [-inf, -inf, -inf, -inf, 1.0, -inf, 2.0, -inf, 0.0, nan, 1.0, 2.0, inf, 1.0, 0.0, 3.0];
    for t in [DType::F32, DType::F16] {
        check(&format!("softmax special rows {t}"), 1.0, |d| {
            let x = Var::from_tensor(&from_f64(&v, &[4, 4], t, d)?)?;
            let mut out = with_grads(x.softmax(1usize)?, &[&x])?;
            out.extend(with_grads(x.log_softmax(1usize)?, &[&x])?);
            // The same rows as columns: the outer-dim schedule.
            out.push(x.t()?.contiguous()?.softmax(0usize)?);
            out.push(x.t()?.contiguous()?.log_softmax(0usize)?);
            Ok(out)
        });
    }
}

#[test]
fn layer_norm_and_rms_norm_forward_and_backward() {
    for t in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        check(&format!("norms {t}"), 4.0, |d| {
            let mut out = Vec::new();
            for (seed, rows, n) in [(20u64, 1usize, 17usize), (21, 37, 1000), (22, 300, 8), (23, 5, 1)] {
                let x = param(seed, &[rows, n], t, d)?;
                let w = param(seed + 100, &[n], t, d)?;
                let b = param(seed + 200, &[n], t, d)?;
                out.extend(with_grads(x.layer_norm(Some(&w), Some(&b), 1e-5)?, &[&x, &w, &b])?);
                out.extend(with_grads(x.layer_norm(None, None, 1e-5)?, &[&x])?);
                out.extend(with_grads(x.rms_norm(Some(&w), 1e-6)?, &[&x, &w])?);
                out.extend(with_grads(x.rms_norm(None, 1e-6)?, &[&x])?);
            }
            // A transposed input of rank 3 with only a bias.
            let x = param(24, &[19, 2, 3], t, d)?;
            let b = param(25, &[19], t, d)?;
            out.extend(with_grads(x.permute([1, 2, 0])?.layer_norm(None, Some(&b), 1e-5)?, &[&x, &b])?);
            Ok(out)
        });
    }
}

#[test]
fn index_select_embedding_and_index_add_with_gradients() {
    for t in [DType::F32, DType::F16, DType::BF16] {
        check(&format!("index_select/index_add {t}"), 2.0, |d| {
            let x = param(30, &[7, 9, 5], t, d)?;
            let idx = Tensor::from_vec(vec![3u32, 0, 3, 6, 3], 5, d)?;
            let idx64 = Tensor::from_vec(vec![8i64, 1, 1, 0], 4, d)?;
            let mut out = with_grads(x.index_select(0usize, &idx)?, &[&x])?;
            // Non-contiguous input, a strided index and i64 indices.
            let strided = Tensor::from_vec(vec![4u32, 9, 0, 9, 2, 9, 4, 9], 8, d)?
                .reshape([4, 2])?
                .narrow(1, 0, 1)?
                .squeeze(1)?;
            out.extend(with_grads(x.transpose(0, 2)?.index_select(1usize, &idx64)?, &[&x])?);
            out.extend(with_grads(x.index_select(2usize, &strided)?, &[&x])?);
            let src = param(31, &[7, 4, 5], t, d)?;
            out.extend(with_grads(x.index_add(1usize, &idx64, &src)?, &[&x, &src])?);
            let table = param(32, &[11, 6], t, d)?;
            let ids = Tensor::from_vec(vec![10i64, 0, 3, 3, 7, 10], [2, 3], d)?;
            out.extend(with_grads(table.embedding(&ids)?, &[&table])?);
            Ok(out)
        });
    }
    // Integer index_add wraps like the CPU.
    check("index_add u8", 1.0, |d| {
        let x = Tensor::full(250.0, [4, 3], DType::U8, d)?;
        let src = Tensor::full(3.0, [5, 3], DType::U8, d)?;
        let idx = Tensor::from_vec(vec![1u32, 1, 3, 1, 0], 5, d)?;
        Ok(vec![x.index_add(0usize, &idx, &src)?])
    });
}

#[test]
fn gather_scatter_add_and_one_hot() {
    for t in [DType::F32, DType::BF16] {
        check(&format!("gather/scatter_add {t}"), 2.0, |d| {
            let x = param(40, &[6, 5], t, d)?;
            let idx = Tensor::from_vec(vec![0i64, 4, 4, 1, 2, 2, 3, 0, 1, 1, 0, 0], [4, 3], d)?;
            let mut out = with_grads(x.gather(1usize, &idx)?, &[&x])?;
            out.extend(with_grads(x.t()?.gather(0usize, &idx.narrow(1, 0, 2)?.t()?)?, &[&x])?);
            let src = param(41, &[5, 4], t, d)?;
            let sidx = Tensor::from_vec(vec![5u32, 0, 5, 5, 2, 1, 1, 4, 0, 0, 3, 3], [4, 3], d)?;
            out.extend(with_grads(x.scatter_add(0usize, &sidx, &src.t()?)?, &[&x, &src])?);
            out.extend(with_grads(
                x.t()?.scatter_add(
                    1usize,
                    &sidx.narrow(0, 0, 2)?.t()?.contiguous()?.narrow(0, 0, 3)?,
                    &src.narrow(0, 0, 3)?,
                )?,
                &[&x, &src],
            )?);
            Ok(out)
        });
    }
    check("one_hot", 1.0, |d| {
        let labels = Tensor::from_vec(vec![2i64, 0, 4, 4, 1, 3], [2, 3], d)?;
        let u = Tensor::from_vec(vec![1u32, 0, 2], 3, d)?;
        Ok(vec![labels.one_hot(5, DType::F32)?, labels.t()?.one_hot(5, DType::U8)?, u.one_hot(3, DType::BF16)?])
    });
}

#[test]
fn dropout_masks_and_random_streams_are_the_cpus_bit_for_bit() {
    for t in FLOATS {
        for (dims, p) in [(&[1usize][..], 0.5), (&[17, 33][..], 0.1), (&[1000, 3][..], 0.9), (&[5, 7][..], 1.0)] {
            let run = |d: &Device| -> Result<(Vec<f64>, Vec<f64>, u64)> {
                let x = param(50, dims, t, d)?;
                let mut rng = Rng::from_state(0x5eed, u64::MAX - 2);
                // Through a transpose when rank 2, so the mask indexes the logical order.
                let xv = if dims.len() == 2 { x.t()? } else { x.as_tensor().clone() };
                let y = xv.dropout(p, true, &mut rng)?;
                let g = y.sum_all()?.backward()?.get(&x).cloned().expect("grad");
                Ok((y.to_f64_vec()?, g.to_f64_vec()?, rng.offset()))
            };
            let want = run(&Device::Cpu).unwrap();
            for dev in gpu_devices() {
                let got = run(&dev).unwrap();
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.0), bits(&want.0), "dropout {t} {dims:?} p {p} on {dev}: outputs");
                assert_eq!(bits(&got.1), bits(&want.1), "dropout {t} {dims:?} p {p} on {dev}: mask (gradient)");
                assert_eq!(got.2, want.2, "dropout {t} on {dev}: generator offset");
            }
        }
    }
    let all = [DType::U8, DType::U32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];
    for t in all {
        let draw = |d: &Device| -> Result<Vec<Vec<f64>>> {
            let mut rng = Rng::from_state(7, 3);
            let mut out = vec![rng.bernoulli(0.3, [3, 67], t, d)?.to_f64_vec()?];
            if t.is_float() {
                out.push(rng.rand([1001], t, d)?.to_f64_vec()?);
                out.push(rng.randn([5], t, d)?.to_f64_vec()?);
                out.push(rng.uniform(-2.0, 3.0, [9], t, d)?.to_f64_vec()?);
            }
            out.push(vec![rng.offset() as f64]);
            Ok(out)
        };
        let want = draw(&Device::Cpu).unwrap();
        for dev in gpu_devices() {
            let got = draw(&dev).unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(g), bits(w), "random stream {k} {t} on {dev}");
            }
        }
    }
}

#[test]
fn cross_entropy_forward_and_backward_with_every_option() {
    let opts = |ignore: Option<i64>, smoothing: f64, reduction: Reduction| CrossEntropyOpts {
        ignore_index: ignore,
        label_smoothing: smoothing,
        reduction,
    };
    for t in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        check(&format!("cross_entropy {t}"), 2.0, |d| {
            let mut out = Vec::new();
            let cases = [
                (60u64, &[17usize, 10][..], opts(Some(-100), 0.0, Reduction::Mean)),
                (61, &[3, 1000], opts(Some(2), 0.1, Reduction::Sum)),
                (62, &[5, 7, 13], opts(Some(4), 0.2, Reduction::None)),
                (63, &[1, 1], CrossEntropyOpts::default()),
                (64, &[300, 5], opts(None, 0.05, Reduction::Mean)),
            ];
            for (seed, dims, o) in cases {
                let x = param(seed, dims, t, d)?;
                let c = *dims.last().unwrap() as i64;
                let n: usize = dims[..dims.len() - 1].iter().product();
                let targets: Vec<i64> = (0..n as i64).map(|i| if i % 5 == 2 { 2 } else { (i * 7) % c }).collect();
                let targets = Tensor::from_vec(targets, &dims[..dims.len() - 1], d)?;
                out.extend(with_grads(x.cross_entropy(&targets, o)?, &[&x])?);
            }
            // Non-contiguous logits and u32 targets where every target is ignored.
            let x = param(65, &[6, 4], t, d)?;
            let targets = Tensor::from_vec(vec![1u32, 1, 1, 1], 4, d)?;
            out.extend(with_grads(x.t()?.cross_entropy(&targets, opts(Some(1), 0.0, Reduction::Mean))?, &[&x])?);
            Ok(out)
        });
    }
}

#[test]
fn parity_table_cases_of_these_families_pass_on_every_gpu_device() {
    use attune_tensor::testing::{op_cases, run_case};
    let families = ["reductions", "softmax", "layer_norm", "index_select", "dropout", "cross_entropy"];
    let cases: Vec<_> = op_cases().into_iter().filter(|c| families.iter().any(|f| c.name.starts_with(f))).collect();
    assert_eq!(cases.len(), 4 * families.len(), "one case per family and float dtype");
    for case in &cases {
        for dev in gpu_devices() {
            let o = run_case(case, dev).unwrap_or_else(|e| panic!("{} on {dev}: {e}", case.name));
            assert!(o.passed, "{} on {dev}: {:?} (max abs error {})", case.name, o.detail, o.max_abs_err);
        }
    }
}
