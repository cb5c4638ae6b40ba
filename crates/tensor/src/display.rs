//! `Display` for tensors, laid out like PyTorch's:
//!
//! ```text
//! tensor([[ 1.0000, -2.5000],
//!         [ 3.0000,  4.0000]], dtype=f32, device=cpu)
//! ```
//!
//! Columns are right-aligned to the widest shown element; floats use 4 decimals (or the
//! `{:.N}` precision) and switch to scientific notation under PyTorch's rule (largest
//! magnitude >= 1e8, smallest non-zero < 1e-4, or a ratio above 1000); integers print without
//! decimals. Tensors of more than 1000 elements show the first and last 3 entries of every
//! dim longer than 6, with `...` in between.

use crate::storage::CpuStorage;
use crate::{Layout, Tensor};
use std::fmt;

/// Element count above which tensors are summarised.
const THRESHOLD: usize = 1000;
/// Entries shown at each end of a summarised dim.
const EDGE: usize = 3;
/// Target line width for wrapping long rows.
const LINE_WIDTH: usize = 80;
/// Default number of decimals for floats.
const PRECISION: usize = 4;
/// Indent of the outermost bracket: `tensor(`.
const PREFIX: &str = "tensor(";

/// The shown elements, row-major.
enum Shown {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

/// Per dim, the indices shown in order; `None` marks the `...` gap.
fn shown_indices(dims: &[usize], summarize: bool) -> Vec<Vec<Option<usize>>> {
    dims.iter()
        .map(|&n| {
            if summarize && n > 2 * EDGE {
                (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
            } else {
                (0..n).map(Some).collect()
            }
        })
        .collect()
}

/// Storage offsets of the shown elements, row-major.
fn shown_offsets(layout: &Layout, shown: &[Vec<Option<usize>>]) -> Vec<usize> {
    let mut offsets = vec![layout.offset()];
    for (idx, &stride) in shown.iter().zip(layout.strides()) {
        offsets = offsets.iter().flat_map(|&o| idx.iter().flatten().map(move |&i| o + i * stride)).collect();
    }
    offsets
}

fn gather(s: &CpuStorage, offsets: &[usize]) -> Shown {
    fn pick<T: Copy + Default, U>(v: &[T], offsets: &[usize], f: impl Fn(T) -> U) -> Vec<U> {
        offsets.iter().map(|&o| f(v.get(o).copied().unwrap_or_default())).collect()
    }
    match s {
        CpuStorage::U8(v) => Shown::Int(pick(v, offsets, i64::from)),
        CpuStorage::U32(v) => Shown::Int(pick(v, offsets, i64::from)),
        CpuStorage::I64(v) => Shown::Int(pick(v, offsets, |x| x)),
        CpuStorage::F16(v) => Shown::Float(pick(v, offsets, |x| x.to_f64())),
        CpuStorage::BF16(v) => Shown::Float(pick(v, offsets, |x| x.to_f64())),
        CpuStorage::F32(v) => Shown::Float(pick(v, offsets, f64::from)),
        CpuStorage::F64(v) => Shown::Float(pick(v, offsets, |x| x)),
    }
}

/// `1.2346e+03`-style scientific notation (two-digit exponent with sign, as PyTorch).
fn sci(v: f64, precision: usize) -> String {
    let s = format!("{v:.precision$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let e: i32 = exp.parse().unwrap_or(0);
            format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.unsigned_abs())
        }
        None => s,
    }
}

/// Formats the shown floats with one shared notation.
fn format_floats(vals: &[f64], precision: usize) -> Vec<String> {
    let finite = vals.iter().map(|v| v.abs()).filter(|a| a.is_finite() && *a > 0.0);
    let (lo, hi) = finite.fold((f64::INFINITY, 0f64), |(lo, hi), a| (lo.min(a), hi.max(a)));
    let use_sci = hi > 0.0 && (hi >= 1e8 || lo < 1e-4 || hi / lo > 1000.0);
    vals.iter()
        .map(|&v| match v {
            v if v.is_nan() => "nan".to_string(),
            v if v.is_infinite() => (if v > 0.0 { "inf" } else { "-inf" }).to_string(),
            v if use_sci => sci(v, precision),
            v => format!("{v:.precision$}"),
        })
        .collect()
}

/// Writes the bracketed body for dims `dim..` at column `indent`, consuming shown elements.
fn render(
    out: &mut String,
    shown: &[Vec<Option<usize>>],
    dim: usize,
    items: &mut impl Iterator<Item = String>,
    indent: usize,
    width: usize,
) {
    let rank = shown.len();
    out.push('[');
    if dim + 1 == rank {
        let cells: Vec<String> = shown[dim]
            .iter()
            .map(|i| match i {
                Some(_) => format!("{:>width$}", items.next().unwrap_or_default()),
                // PyTorch's row gap has a leading space: `2,  ..., 997`.
                None => " ...".to_string(),
            })
            .collect();
        let per_line = (LINE_WIDTH.saturating_sub(indent) / (width + 2)).max(1);
        let sep = format!(",\n{}", " ".repeat(indent + 1));
        let lines: Vec<String> = cells.chunks(per_line).map(|c| c.join(", ")).collect();
        out.push_str(&lines.join(&sep));
    } else {
        let sep = format!(",{}{}", "\n".repeat(rank - dim - 1), " ".repeat(indent + 1));
        for (k, i) in shown[dim].iter().enumerate() {
            if k > 0 {
                out.push_str(&sep);
            }
            match i {
                Some(_) => render(out, shown, dim + 1, items, indent + 1, width),
                None => out.push_str("..."),
            }
        }
    }
    out.push(']');
}

/// Appends `, suffix` for each suffix and the closing parenthesis; like PyTorch, a suffix that
/// would push the last line past the line width starts a new line.
fn push_suffixes(out: &mut String, suffixes: &[String]) {
    let mut last = out.rsplit('\n').next().map_or(0, |l| l.chars().count());
    for s in suffixes {
        if last + s.len() + 2 > LINE_WIDTH {
            out.push_str(",\n");
            out.push_str(&" ".repeat(PREFIX.len()));
            last = PREFIX.len();
        } else {
            out.push_str(", ");
            last += 2;
        }
        out.push_str(s);
        last += s.len();
    }
    out.push(')');
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut suffixes = vec![format!("dtype={}", self.dtype()), format!("device={}", self.device())];
        let mut out = String::from(PREFIX);
        if self.elem_count() == 0 {
            out.push_str("[]");
            if self.rank() != 1 {
                suffixes.insert(0, format!("shape={:?}", self.dims()));
            }
            push_suffixes(&mut out, &suffixes);
            return f.write_str(&out);
        }
        let shown = shown_indices(self.dims(), self.elem_count() > THRESHOLD);
        let offsets = shown_offsets(self.layout(), &shown);
        // GPU tensors are shown from a host copy of their buffer (like PyTorch's cuda tensors).
        let host = match &*self.storage() {
            crate::storage::Storage::Gpu(g) => g.download("display").ok(),
            crate::storage::Storage::Cpu(_) => None,
        };
        let vals = match &host {
            Some(h) => Ok(gather(h, &offsets)),
            None => self.with_cpu("display", |s, _| Ok(gather(s, &offsets))),
        };
        let Ok(vals) = vals else {
            out.push_str(&format!("<data on {}>", self.device()));
            suffixes.insert(0, format!("shape={:?}", self.dims()));
            push_suffixes(&mut out, &suffixes);
            return f.write_str(&out);
        };
        let strings = match vals {
            Shown::Float(v) => format_floats(&v, f.precision().unwrap_or(PRECISION)),
            Shown::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        };
        let width = strings.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        if self.rank() == 0 {
            out.push_str(strings.first().map_or("", |s| s.as_str()));
        } else {
            render(&mut out, &shown, 0, &mut strings.into_iter(), PREFIX.len(), width);
        }
        push_suffixes(&mut out, &suffixes);
        f.write_str(&out)
    }
}
