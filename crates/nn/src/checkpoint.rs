//! Checkpoints in safetensors with PyTorch's names and layouts.
//!
//! Writing goes to a temporary file in the same directory, is flushed and synced, then renamed
//! over the target, so a crash never leaves a half-written checkpoint. Loading reports missing,
//! unexpected and mis-shaped tensors by name and converts dtypes on request.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use attune_tensor::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use crate::error::{NnError, Result};
use crate::store::ParamStore;

fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::U8 => StDtype::U8,
        DType::U32 => StDtype::U32,
        DType::I64 => StDtype::I64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
    }
}

/// Little-endian bytes of a tensor in row-major order.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t.dtype() {
        DType::U8 => t.to_vec::<u8>()?,
        DType::U32 => t.to_vec::<u32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.to_vec::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => t.to_vec::<f16>()?.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        DType::BF16 => t.to_vec::<bf16>()?.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
        DType::F32 => t.to_vec::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => t.to_vec::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// Writes named tensors (and string metadata) to `path` atomically (attune-persist's
/// `write_atomic`: temporary file, fsync, rename, directory fsync).
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = serialize_tensors(path, tensors, metadata)?;
    attune_persist::write_atomic(path, &bytes).map_err(|e| NnError::checkpoint(path, e.to_string()))
}

/// The safetensors bytes of named tensors (and string metadata); `path` only names the file in
/// errors (checkpoint directories commit these bytes themselves).
pub fn serialize_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(NnError::checkpoint(path, format!("tensor name {name:?} appears twice")));
        }
        owned.push((name.clone(), t.dtype(), t.dims().to_vec(), tensor_bytes(t)?));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(st_dtype(*d), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| NnError::checkpoint(path, format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| NnError::checkpoint(path, e.to_string()))
}

/// The tensors of a safetensors file, by name, and its metadata.
pub struct TensorFile {
    /// Tensors by name (sorted).
    pub tensors: BTreeMap<String, Tensor>,
    /// The string metadata of the header.
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors file onto the CPU (a truncated or corrupt file is an error).
pub fn load_tensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| NnError::checkpoint(path, format!("cannot read: {e}")))?;
    parse_tensors(path, &bytes)
}

/// Parses safetensors bytes (read and verified elsewhere, e.g. from a committed checkpoint);
/// `path` only names the file in errors.
pub fn parse_tensors(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
    let bad = |e: safetensors::SafeTensorError| NnError::checkpoint(path, format!("not a valid safetensors file: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = from_view(&view).map_err(|m| NnError::checkpoint(path, format!("tensor {name}: {m}")))?;
        tensors.insert(name, t);
    }
    Ok(TensorFile { tensors, metadata: header.metadata().clone().unwrap_or_default() })
}

fn from_view(v: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    fn le<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        // Safetensors data need not be aligned for T, so decode from bytes.
        data.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
    }
    let (d, shape, dev) = (v.data(), v.shape().to_vec(), Device::Cpu);
    let t = match v.dtype() {
        StDtype::U8 => Tensor::from_vec(d.to_vec(), shape, &dev),
        StDtype::U32 => Tensor::from_vec(le(d, u32::from_le_bytes), shape, &dev),
        StDtype::I64 => Tensor::from_vec(le(d, i64::from_le_bytes), shape, &dev),
        StDtype::F16 => Tensor::from_vec(le(d, |b| f16::from_bits(u16::from_le_bytes(b))), shape, &dev),
        StDtype::BF16 => Tensor::from_vec(le(d, |b| bf16::from_bits(u16::from_le_bytes(b))), shape, &dev),
        StDtype::F32 => Tensor::from_vec(le(d, f32::from_le_bytes), shape, &dev),
        StDtype::F64 => Tensor::from_vec(le(d, f64::from_le_bytes), shape, &dev),
        StDtype::I32 => Tensor::from_vec(le(d, |b| i32::from_le_bytes(b) as i64), shape, &dev),
        other => {
            return Err(format!("dtype {other:?} is not supported (use f32, f64, f16, bf16, i64, i32, u32 or u8)"));
        }
    };
    t.map_err(|e| e.to_string())
}

/// How [`load_params`] treats differences between the file and the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Fail on any missing, unexpected or mis-shaped tensor (PyTorch's `strict=True`).
    pub strict: bool,
    /// Convert tensors whose dtype differs from the parameter's; without it a dtype
    /// difference is an error.
    pub convert_dtype: bool,
}

/// What a load found, by parameter name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters of the model absent from the file (left as they were).
    pub missing: Vec<String>,
    /// Tensors in the file that the model has no parameter for (ignored).
    pub unexpected: Vec<String>,
    /// `(name, model shape, file shape)` of tensors whose shapes differ (not loaded).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Parameters loaded.
    pub loaded: usize,
}

impl LoadReport {
    /// True when every parameter was loaded and nothing else was in the file.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing {:?}", self.missing));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {:?}", self.unexpected));
        }
        for (n, want, got) in &self.mismatched {
            parts.push(format!("{n}: model has shape {want:?}, file has {got:?}"));
        }
        parts.join("; ")
    }
}

/// Saves the parameters of `store` to `path` (f32 stays f32; names are the dotted tree names).
pub fn save_params(path: &Path, store: &ParamStore, metadata: Option<HashMap<String, String>>) -> Result<()> {
    save_tensors(path, &store.state_dict(), metadata)
}

/// Loads `path` into the parameters of `store` in place.
pub fn load_params(path: &Path, store: &ParamStore, opts: LoadOptions) -> Result<LoadReport> {
    let file = load_tensors(path)?;
    load_state_dict(path, store, file.tensors, opts)
}

/// Loads named tensors into `store`; `path` only names the source in errors.
pub fn load_state_dict(
    path: &Path,
    store: &ParamStore,
    mut tensors: BTreeMap<String, Tensor>,
    opts: LoadOptions,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut updates = Vec::new();
    for (name, var) in store.named() {
        let Some(t) = tensors.remove(&name) else {
            report.missing.push(name);
            continue;
        };
        if t.dims() != var.dims() {
            report.mismatched.push((name, var.dims().to_vec(), t.dims().to_vec()));
            continue;
        }
        if t.dtype() != var.dtype() && !opts.convert_dtype {
            return Err(NnError::checkpoint(
                path,
                format!(
                    "tensor {name} is {} but the parameter is {}; load with convert_dtype to convert",
                    t.dtype(),
                    var.dtype()
                ),
            ));
        }
        updates.push((var, t));
    }
    report.unexpected = tensors.into_keys().collect();
    if opts.strict && !report.is_exact() {
        return Err(NnError::checkpoint(path, format!("does not match the model: {}", report.describe())));
    }
    // Only now, once the whole file is known to fit, are parameters overwritten.
    for (var, t) in &updates {
        var.set(&t.to_device(&var.device())?)?;
    }
    report.loaded = updates.len();
    Ok(report)
}
