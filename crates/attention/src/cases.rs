//! Attention case files (docs/attention.md): externally computed reference cases in safetensors.
//!
//! For each case `NAME` a file holds `NAME.q`, `NAME.k`, `NAME.v` (batch, heads, seq, dim),
//! the expected `NAME.out` and optionally `NAME.lse`; for backward `NAME.dout` and the expected
//! `NAME.dq`, `NAME.dk`, `NAME.dv`; optionally `NAME.seqlens_k` (integers, one per batch
//! entry). The safetensors metadata maps `NAME` to a JSON object:
//!
//! ```json
//! {"causal": true, "scale": 0.125, "window": [16, 0], "softcap": null,
//!  "atol": 2e-5, "rtol": 2e-4, "atol_dq": 1e-4}
//! ```
//!
//! Every key is optional (`causal` false, `scale` 1/sqrt(head_dim), no window, no softcap);
//! unknown keys are ignored. Tolerances not given take the defaults of the input dtype when the
//! case is checked (see [`check_case`]). [`load_cases`] reads a file, [`check_case`] runs one
//! case on a [`Backend`] and compares every expected tensor.

mod check;
mod lowp;

pub use check::{Backend, Bound, CaseResult, DEFAULT_ATOL, DEFAULT_RTOL, Metric, check_case, compare};
pub use lowp::{LowpForward, lowp_backward, lowp_forward};

use crate::error::{AttentionError, Result};
use crate::params::{AttentionParams, validate};
use attune_tensor::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Tolerances a case sets explicitly; `None` means the default of the input dtype.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tolerances {
    /// Absolute tolerance of `out` and `lse` (and of gradients without their own).
    pub atol: Option<f64>,
    /// Relative tolerance of every compared tensor.
    pub rtol: Option<f64>,
    /// Absolute tolerance of `dq`, replacing `atol`.
    pub atol_dq: Option<f64>,
    /// Absolute tolerance of `dk`, replacing `atol`.
    pub atol_dk: Option<f64>,
    /// Absolute tolerance of `dv`, replacing `atol`.
    pub atol_dv: Option<f64>,
}

/// One reference case: inputs, parameters and expected results.
///
/// Expected tensors may have any float dtype (files store f32; an in-memory grid may keep the
/// oracle's f64). Inputs may be non-contiguous views.
#[derive(Clone)]
pub struct Case {
    /// The case name (the tensor-name prefix in a file).
    pub name: String,
    /// Queries `(batch, heads_q, seq_q, head_dim)`; its dtype is the case's input dtype.
    pub q: Tensor,
    /// Keys `(batch, heads_kv, seq_k, head_dim)`.
    pub k: Tensor,
    /// Values, like `k`.
    pub v: Tensor,
    /// Everything else that defines the call.
    pub params: AttentionParams,
    /// Expected output, like `q`.
    pub out: Tensor,
    /// Expected logsumexp `(batch, heads_q, seq_q)`, if checked.
    pub lse: Option<Tensor>,
    /// Output gradient for the backward check (converted to the input dtype before use).
    pub dout: Option<Tensor>,
    /// Expected gradient of q.
    pub dq: Option<Tensor>,
    /// Expected gradient of k.
    pub dk: Option<Tensor>,
    /// Expected gradient of v.
    pub dv: Option<Tensor>,
    /// Explicit tolerances.
    pub tol: Tolerances,
}

impl Case {
    /// The input dtype (that of `q`).
    pub fn dtype(&self) -> DType {
        self.q.dtype()
    }

    /// Whether the case checks a backward pass.
    pub fn has_backward(&self) -> bool {
        self.dout.is_some()
    }

    /// Checks that every expected tensor has the shape the inputs imply and that the inputs
    /// and parameters are valid together.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, t: &Tensor, want: &[usize]| {
            AttentionError::Shape(format!(
                "case '{}': {what} has shape {:?} but the inputs imply {want:?}",
                self.name,
                t.dims()
            ))
        };
        let pb = validate(&self.q, &self.k, &self.v, &self.params)
            .map_err(|e| AttentionError::Param(format!("case '{}': {e}", self.name)))?;
        let (qd, kd) = (self.q.dims(), self.k.dims());
        let lse_dims = [pb.batch, pb.heads_q, pb.seq_q];
        let checks: [(&str, Option<&Tensor>, &[usize]); 6] = [
            ("out", Some(&self.out), qd),
            ("lse", self.lse.as_ref(), &lse_dims),
            ("dout", self.dout.as_ref(), qd),
            ("dq", self.dq.as_ref(), qd),
            ("dk", self.dk.as_ref(), kd),
            ("dv", self.dv.as_ref(), kd),
        ];
        for (what, t, want) in checks {
            if let Some(t) = t {
                if t.dims() != want {
                    return Err(bad(what, t, want));
                }
                if !t.dtype().is_float() {
                    return Err(AttentionError::Shape(format!(
                        "case '{}': {what} is {} but expected values must be floats (f32 in files)",
                        self.name,
                        t.dtype()
                    )));
                }
            }
        }
        let any_grad = self.dq.is_some() || self.dk.is_some() || self.dv.is_some();
        if any_grad != self.dout.is_some() {
            return Err(AttentionError::Param(format!(
                "case '{}': a backward case needs dout and at least one of dq, dk, dv; it has dout: {}, gradients: {}",
                self.name,
                self.dout.is_some(),
                any_grad
            )));
        }
        Ok(())
    }
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> AttentionError {
    AttentionError::Param(format!("case file {}: {msg}", path.display()))
}

/// Reads every case of a safetensors case file, sorted by name.
///
/// Errors name the file, the case and the problem: a missing required tensor (`q`, `k`, `v`,
/// `out`), a case without metadata, malformed JSON or a value of the wrong type, shapes that do
/// not fit together, or an unsupported dtype.
pub fn load_cases(path: impl AsRef<Path>) -> Result<Vec<Case>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read it: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| file_err(path, format!("not safetensors: {e}")))?;
    let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, format!("not safetensors: {e}")))?;
    let views: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let names: BTreeSet<&str> = views.keys().filter_map(|n| n.strip_suffix(".q")).collect();
    if names.is_empty() {
        return Err(file_err(path, "holds no case (no tensor named NAME.q)"));
    }
    names.into_iter().map(|name| load_one(path, name, &views, &meta)).collect()
}

fn load_one(
    path: &Path,
    name: &str,
    views: &HashMap<String, TensorView<'_>>,
    meta: &HashMap<String, String>,
) -> Result<Case> {
    let err = |msg: String| file_err(path, format!("case '{name}': {msg}"));
    let get = |suffix: &str| -> Result<Option<Tensor>> {
        views
            .get(&format!("{name}.{suffix}"))
            .map(|v| to_tensor(v).map_err(|m| err(format!("{suffix}: {m}"))))
            .transpose()
    };
    let need = |suffix: &str| -> Result<Tensor> {
        get(suffix)?
            .ok_or_else(|| err(format!("tensor '{name}.{suffix}' is missing; every case needs q, k, v and out")))
    };
    let json = meta.get(name).ok_or_else(|| {
        err(format!(
            "no metadata entry '{name}'; the metadata must map each case name to its parameters, e.g. {{\"causal\": false}}"
        ))
    })?;
    let obj: Value = serde_json::from_str(json).map_err(|e| err(format!("metadata is not JSON ({e}): {json}")))?;
    let obj = obj.as_object().ok_or_else(|| err(format!("metadata must be a JSON object, got {json}")))?;
    let num = |key: &str| -> Result<Option<f64>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| err(format!("'{key}' must be a number or null, got {v}"))),
        }
    };
    let mut params = AttentionParams::new();
    match obj.get("causal") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => params.causal = *b,
        Some(v) => return Err(err(format!("'causal' must be true or false, got {v}"))),
    }
    params.scale = num("scale")?;
    params.softcap = num("softcap")?;
    match obj.get("window") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.len() == 2 && a.iter().all(|x| x.as_i64().is_some()) => {
            params.window = Some((a[0].as_i64().unwrap_or(-1), a[1].as_i64().unwrap_or(-1)));
        }
        Some(v) => return Err(err(format!("'window' must be [left, right] integers (-1 unbounded) or null, got {v}"))),
    }
    if let Some(v) = views.get(&format!("{name}.seqlens_k")) {
        params.seqlens_k = Some(to_lengths(v).map_err(|m| err(format!("seqlens_k: {m}")))?);
    }
    let tol = Tolerances {
        atol: num("atol")?,
        rtol: num("rtol")?,
        atol_dq: num("atol_dq")?,
        atol_dk: num("atol_dk")?,
        atol_dv: num("atol_dv")?,
    };
    let case = Case {
        name: name.to_string(),
        q: need("q")?,
        k: need("k")?,
        v: need("v")?,
        params,
        out: need("out")?,
        lse: get("lse")?,
        dout: get("dout")?,
        dq: get("dq")?,
        dk: get("dk")?,
        dv: get("dv")?,
        tol,
    };
    case.validate().map_err(|e| file_err(path, e))?;
    Ok(case)
}

/// A float tensor from little-endian safetensors bytes.
fn to_tensor(v: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    fn le<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        // Safetensors data need not be aligned for T, so decode from bytes.
        data.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
    }
    let (data, shape) = (v.data(), v.shape().to_vec());
    let dev = Device::Cpu;
    let t = match v.dtype() {
        StDtype::F32 => Tensor::from_vec(le(data, f32::from_le_bytes), shape, &dev),
        StDtype::F64 => Tensor::from_vec(le(data, f64::from_le_bytes), shape, &dev),
        StDtype::F16 => Tensor::from_vec(le(data, |b| f16::from_bits(u16::from_le_bytes(b))), shape, &dev),
        StDtype::BF16 => Tensor::from_vec(le(data, |b| bf16::from_bits(u16::from_le_bytes(b))), shape, &dev),
        other => return Err(format!("dtype {other:?} is not supported; store inputs as f32, f16 or bf16")),
    };
    t.map_err(|e| e.to_string())
}

/// Integer lengths (any integer dtype) as usize, rejecting negative values.
fn to_lengths(v: &TensorView<'_>) -> std::result::Result<Vec<usize>, String> {
    fn le<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> i128) -> Vec<i128> {
        data.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
    }
    let d = v.data();
    let vals = match v.dtype() {
        StDtype::I32 => le(d, |b| i32::from_le_bytes(b) as i128),
        StDtype::I64 => le(d, |b| i64::from_le_bytes(b) as i128),
        StDtype::U32 => le(d, |b| u32::from_le_bytes(b) as i128),
        StDtype::U64 => le(d, |b| u64::from_le_bytes(b) as i128),
        StDtype::I16 => le(d, |b| i16::from_le_bytes(b) as i128),
        StDtype::U8 => le(d, |b: [u8; 1]| b[0] as i128),
        other => return Err(format!("dtype {other:?} is not an integer dtype; store the lengths as i32")),
    };
    if v.shape().len() != 1 {
        return Err(format!("must be 1-D (one length per batch entry), got shape {:?}", v.shape()));
    }
    vals.into_iter()
        .map(|x| usize::try_from(x).map_err(|_| format!("length {x} is negative; lengths must be >= 0")))
        .collect()
}
