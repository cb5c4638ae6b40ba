//! Parity cases of the reduction, softmax, norm, index, dropout and loss families (their
//! kernels are in this module's siblings).

use super::ops::Build;
use super::{OpCase, input, param, with_grads};
use crate::{CrossEntropyOpts, DType, Reduction, Rng, Tensor};

/// The cases of the row/index/random/loss families.
pub fn op_cases() -> Vec<OpCase> {
    let floats = [DType::F32, DType::F16, DType::BF16, DType::F64];
    let families: [(&str, f64, Build); 6] = [
        ("reductions+grad (strided, several dims)", 2.0, |d, t| {
            let x = param(20, &[5, 33, 17], t, d)?;
            let xt = || x.transpose(0, 2);
            let mut out = with_grads(xt()?.sum([0usize, 2], true)?, &[&x])?;
            out.extend(with_grads(xt()?.max([0usize, 1], false)?, &[&x])?);
            out.extend(with_grads(xt()?.logsumexp([1usize, 2], false)?, &[&x])?);
            out.extend(with_grads(xt()?.var(1usize, 1, false)?, &[&x])?);
            out.push(xt()?.argmax(1usize, false)?);
            Ok(out)
        }),
        ("softmax+grad", 2.0, |d, t| {
            let x = param(21, &[7, 1000], t, d)?;
            let y = param(22, &[4, 9, 300], t, d)?;
            let mut out = with_grads(x.softmax(1usize)?, &[&x])?;
            out.extend(with_grads(y.log_softmax(1usize)?, &[&y])?);
            Ok(out)
        }),
        ("layer_norm/rms_norm+grad", 4.0, |d, t| {
            let x = param(23, &[37, 1000], t, d)?;
            let (w, b) = (param(24, &[1000], t, d)?, param(25, &[1000], t, d)?);
            let mut out = with_grads(x.layer_norm(Some(&w), Some(&b), 1e-5)?, &[&x, &w, &b])?;
            out.extend(with_grads(x.rms_norm(Some(&w), 1e-6)?, &[&x, &w])?);
            Ok(out)
        }),
        ("index_select/gather/scatter_add+grad", 2.0, |d, t| {
            let x = param(26, &[7, 9, 5], t, d)?;
            let idx = Tensor::from_vec(vec![3i64, 0, 3, 6], 4, d)?;
            let g = Tensor::from_vec(vec![0u32, 4, 4, 1, 2, 2], [2, 3], d)?;
            let src = param(27, &[2, 3], t, d)?;
            let m = || x.narrow(2, 0, 1)?.squeeze(2);
            let mut out = with_grads(x.index_select(0usize, &idx)?, &[&x])?;
            out.extend(with_grads(m()?.gather(1usize, &g)?, &[&x])?);
            out.extend(with_grads(m()?.scatter_add(1usize, &g, &src)?, &[&x, &src])?);
            Ok(out)
        }),
        ("dropout (same stream)", 1.0, |d, t| {
            let x = param(28, &[33, 17], t, d)?;
            let y = x.t()?.dropout(0.3, true, &mut Rng::new(5))?;
            with_grads(y, &[&x])
        }),
        ("cross_entropy+grad", 2.0, |d, t| {
            let x = param(29, &[19, 300], t, d)?;
            let targets = Tensor::from_vec((0..19i64).map(|i| (i * 37) % 300).collect::<Vec<_>>(), 19, d)?;
            let opts = CrossEntropyOpts { ignore_index: Some(37), label_smoothing: 0.1, reduction: Reduction::Mean };
            let mut out = with_grads(x.cross_entropy(&targets, opts)?, &[&x])?;
            let none = CrossEntropyOpts { reduction: Reduction::None, ..opts };
            out.push(input(30, &[19, 300], t, d)?.cross_entropy(&targets, none)?);
            Ok(out)
        }),
    ];
    let mut cases = Vec::new();
    for (name, scale, build) in families {
        for t in floats {
            cases.push(OpCase { name: format!("{name} {t}"), scale, run: Box::new(move |d| build(d, t)) });
        }
    }
    cases
}
