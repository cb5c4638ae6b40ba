//! The attention kernel variants for `cargo xtask build-kernels` ([`kernel_variants`]) and
//! `bench-attn`'s static report ([`planned_variants`]): tooling only, behind the `testing`
//! feature.

use super::{FwdKernel, bwd, dtype_code, fwd_mma, fwd_simt, fwd_split, pick_forward};
use crate::error::{AttentionError, Result};
use crate::params::Problem;
use attune_cuda::ModuleSpec;
use attune_tensor::{DType, Device};

/// An entry of a module: `(name, block threads, dynamic shared bytes)`.
pub type EntryLaunch = (String, u32, u32);
/// A module variant with its entries.
pub type Variant = (ModuleSpec, Vec<EntryLaunch>);
/// A module variant and the one arch it is for (`None`: every arch).
pub type ArchVariant = (ModuleSpec, Vec<EntryLaunch>, Option<u32>);
/// A planned launch: a label (`forward: mma`, `backward`), the module and its entries.
pub type PlannedVariant = (String, ModuleSpec, Vec<EntryLaunch>);

fn define(spec: &ModuleSpec, name: &str) -> usize {
    spec.defines.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Adds each entry's dynamic shared memory, as its launcher sizes it, to a family's variants.
fn with_smem(family: &str, variants: Vec<(ModuleSpec, Vec<(String, u32)>)>) -> Vec<Variant> {
    variants
        .into_iter()
        .map(|(spec, entries)| {
            let hd = define(&spec, "HD");
            let smem = |entry: &str| -> u32 {
                match (family, entry) {
                    ("simt", _) => fwd_simt::SimtConfig::forward(hd).shared_bytes() as u32,
                    ("split", "attn_fwd_split") => fwd_simt::SimtConfig::split(hd).shared_bytes() as u32,
                    ("mma", _) => {
                        let t = fwd_mma::MmaTiles {
                            bm: define(&spec, "BM"),
                            bn: define(&spec, "BN"),
                            warps: define(&spec, "WARPS"),
                        };
                        t.smem_bytes(hd) as u32
                    }
                    _ => 0,
                }
            };
            let entries = entries.into_iter().map(|(e, t)| (e.clone(), t, smem(&e))).collect();
            (spec, entries)
        })
        .collect()
}

/// Adds the launches of `plan` whose arch tag `keep` accepts to `out`: one variant per
/// (module, arch), entries in first-launch order.
fn add_plan(out: &mut Vec<ArchVariant>, plan: &bwd::BwdPlan, keep: impl Fn(Option<u32>) -> bool) {
    for l in plan.launches.iter().filter(|l| keep(l.arch)) {
        let entry = (l.entry.to_string(), l.threads, l.smem);
        match out.iter_mut().find(|(s, _, a)| *s == l.module && *a == l.arch) {
            Some((_, entries, _)) if entries.iter().any(|(e, _, _)| *e == entry.0) => {}
            Some((_, entries, _)) => entries.push(entry),
            None => out.push((l.module.clone(), vec![entry], l.arch)),
        }
    }
}

/// Every attention module variant the dispatcher can launch for `head_dims` on `archs`, each
/// with the one arch it is for (`None`: the same module on every arch), for `cargo xtask
/// build-kernels`. The backward's come from its plans ([`bwd::plan`]) for every dtype, kernel
/// kind and dQ mode.
pub fn kernel_variants(head_dims: &[usize], archs: &[u32]) -> Vec<ArchVariant> {
    let all = [DType::F32, DType::F16, DType::BF16];
    let mut out: Vec<ArchVariant> = Vec::new();
    for v in [
        with_smem("simt", fwd_simt::simt_variants(&all, head_dims)),
        with_smem("split", fwd_split::split_variants(&all, head_dims)),
    ] {
        out.extend(v.into_iter().map(|(s, e)| (s, e, None)));
    }
    let supported = || head_dims.iter().copied().filter(|&d| crate::support::gpu_head_dim(d));
    // The SIMT backward (every arch): unaligned rows take it on any GPU.
    for dtype in all {
        for d in supported() {
            for deterministic in [true, false] {
                if let Ok(p) = bwd::plan(dtype, d, 0, false, deterministic, None) {
                    add_plan(&mut out, &p, |a| a.is_none());
                }
            }
        }
    }
    for &arch in archs {
        for (s, e) in with_smem("mma", fwd_mma::mma_variants(head_dims, &[arch])) {
            out.push((s, e, Some(arch)));
        }
        // The arch-specific launches (the tensor-core dK/dV kernel) of aligned calls.
        for dtype in all {
            for d in supported() {
                if let Ok(p) = bwd::plan(dtype, d, arch, true, false, None) {
                    add_plan(&mut out, &p, |a| a == Some(arch));
                }
            }
        }
    }
    out
}

/// The kernels a call of geometry `pb` in `dtype` would launch on an `arch` GPU with `sms`
/// multiprocessors (16-byte aligned inputs assumed), labelled `forward: simt|mma|split` or
/// `backward`: what `cargo xtask bench-attn --backend cuda` reports statically without a GPU.
pub fn planned_variants(
    pb: &Problem,
    dtype: DType,
    arch: u32,
    sms: usize,
    with_backward: bool,
    deterministic: bool,
) -> Result<Vec<PlannedVariant>> {
    let code = dtype_code(dtype)?.to_string();
    let d = [pb.head_dim];
    let kernel = pick_forward(pb, dtype, arch, true, sms);
    let fwd = match kernel {
        FwdKernel::Split(_) => with_smem("split", fwd_split::split_variants(&[dtype], &d)),
        FwdKernel::Mma => with_smem("mma", fwd_mma::mma_variants(&d, &[arch])),
        FwdKernel::Simt => with_smem("simt", fwd_simt::simt_variants(&[dtype], &d)),
    };
    let kind = kernel.name();
    let of_dtype = |s: &ModuleSpec| s.defines.iter().any(|(k, v)| k == "ATTN_DTYPE" && *v == code);
    let mut out: Vec<_> =
        fwd.into_iter().filter(|(s, _)| of_dtype(s)).map(|(s, e)| (format!("forward: {kind}"), s, e)).collect();
    if with_backward && crate::support::gpu_head_dim(pb.head_dim) {
        // The plan the backward runs, one row per module: the SIMT module's launches, then the
        // tensor-core dK/dV kernel's when the plan takes it.
        let plan = bwd::plan(dtype, pb.head_dim, arch, true, deterministic, None)?;
        let mut modules: Vec<ArchVariant> = Vec::new();
        add_plan(&mut modules, &plan, |_| true);
        for (s, e, a) in modules {
            let label = if a.is_some() { format!("backward: {}", plan.kernel.name()) } else { "backward".into() };
            out.push((label, s, e));
        }
    }
    if out.is_empty() {
        // No kernel: say why with the rule every caller asks (a GPU device stands for the arch).
        crate::supports(Device::Cuda(0), dtype, pb.head_dim)?;
        return Err(AttentionError::Shape(format!("no attention kernel for head_dim {} in {dtype}", pb.head_dim)));
    }
    Ok(out)
}
