//! Header-aware mutations of safetensors files (an 8-byte little-endian header length, a JSON
//! header mapping names to `{dtype, shape, data_offsets}` plus `__metadata__`, then the data).
//!
//! Half of the structural mutations keep the file self-consistent (offsets and data re-laid
//! out to match a changed shape or dtype), so they pass the container's own checks and reach
//! the loader's; the others break the container on purpose (declared sizes larger than the
//! file, overlapping offsets, shape x dtype != bytes).

use serde_json::{Map, Value, json};

use crate::{Rng, bytes, text};

/// Dtype strings: the ones Attune reads, ones it does not, and ones nobody does.
pub const DTYPES: &[&str] = &[
    "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
    "F4", "E8M0", "f32", "", "F128", "C64",
];

/// Bytes per element of the dtypes whose data can be re-laid out.
fn dtype_size(d: &str) -> Option<usize> {
    Some(match d {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// A parsed safetensors file that mutations edit.
#[derive(Debug, Clone)]
pub struct StFile {
    /// The header object (tensor entries and `__metadata__`).
    pub header: Map<String, Value>,
    /// The bytes after the header.
    pub data: Vec<u8>,
}

impl StFile {
    /// Parses a well-formed file (`None` when it is not one).
    pub fn parse(bytes: &[u8]) -> Option<StFile> {
        let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        let header: Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
        Some(StFile { header: header.as_object()?.clone(), data: bytes[8 + n..].to_vec() })
    }

    /// The file's bytes, with the header length written as `len` (the true length when `None`).
    pub fn to_bytes(&self, len: Option<u64>) -> Vec<u8> {
        let header = Value::Object(self.header.clone()).to_string();
        let mut out = len.unwrap_or(header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Tensor names (every key but `__metadata__`), sorted.
    pub fn names(&self) -> Vec<String> {
        self.header.keys().filter(|k| *k != "__metadata__").cloned().collect()
    }

    fn offsets(&self, name: &str) -> Option<(usize, usize)> {
        let o = self.header.get(name)?.get("data_offsets")?.as_array()?;
        Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize))
    }

    /// Re-lays out the data so every offset is consistent again after an edit of the header:
    /// tensor `name`'s bytes are cut or extended (with random bytes) to `new_size`.
    fn relayout(&mut self, rng: &mut Rng, name: &str, new_size: usize) {
        let mut order: Vec<(usize, usize, String)> =
            self.names().into_iter().filter_map(|n| self.offsets(&n).map(|(s, e)| (s, e, n))).collect();
        order.sort();
        let mut data = Vec::new();
        for (s, e, n) in order {
            let mut bytes = self.data.get(s..e).unwrap_or(&[]).to_vec();
            if n == name {
                bytes.resize_with(new_size, || rng.next_u64() as u8);
            }
            let start = data.len();
            data.extend_from_slice(&bytes);
            if let Some(entry) = self.header.get_mut(&n).and_then(Value::as_object_mut) {
                entry.insert("data_offsets".into(), json!([start, data.len()]));
            }
        }
        self.data = data;
    }

    /// Bytes that shape x dtype of `name` need, when small enough to re-lay out.
    fn byte_size(&self, name: &str) -> Option<usize> {
        let e = self.header.get(name)?;
        let size = dtype_size(e.get("dtype")?.as_str()?)?;
        let shape = e.get("shape")?.as_array()?;
        let n = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(d.as_u64()? as usize))?;
        n.checked_mul(size).filter(|&b| b <= 1 << 22)
    }
}

/// A changed shape: valid reshapes, wrong ranks, zero and huge dims, non-integers.
fn new_shape(rng: &mut Rng, shape: &[Value]) -> Value {
    let mut dims: Vec<Value> = shape.to_vec();
    let k = rng.below(dims.len().max(1));
    match rng.below(11) {
        0 if !dims.is_empty() => dims[k] = json!(dims[k].as_u64().unwrap_or(1) + 1),
        1 if !dims.is_empty() => dims[k] = json!(0),
        2 => dims.insert(0, json!(1)),
        3 if !dims.is_empty() => {
            dims.remove(k);
        }
        4 => dims.reverse(),
        5 => return json!([0, 1u64 << 40, 1u64 << 40]),
        6 => return json!([1u64 << 40, 1u64 << 40]),
        7 => return json!([u64::MAX]),
        8 => return json!([]),
        9 if !dims.is_empty() => dims[k] = json!(*rng.pick(&[json!(-1), json!(2.5), json!("4"), json!(null)])),
        _ => dims.push(json!(rng.below(4))),
    }
    Value::Array(dims)
}

/// Broken `data_offsets`: overlapping, past the end, reversed, huge, malformed.
fn bad_offsets(rng: &mut Rng, (s, e): (usize, usize), other: Option<(usize, usize)>) -> Value {
    match rng.below(8) {
        0 => other.map_or(json!([s, e + 1]), |(a, b)| json!([a, b])),
        1 => json!([s.saturating_sub(1), e]),
        2 => json!([s, 1u64 << 40]),
        3 => json!([s, u64::MAX]),
        4 => json!([e, s]),
        5 => json!([-1, e]),
        6 => json!([s]),
        _ => json!([s, e, e]),
    }
}

/// Applies one mutation to a safetensors file and names it; `meta_json` says the metadata
/// values are themselves JSON documents (attention case files), which then get text mutations.
pub fn mutate(rng: &mut Rng, file: &[u8], meta_json: bool) -> (Vec<u8>, &'static str) {
    let Some(mut st) = StFile::parse(file) else {
        let mut out = file.to_vec();
        let what = bytes::mutate(rng, &mut out);
        return (out, what);
    };
    let names = st.names();
    let name = if names.is_empty() { String::new() } else { rng.pick(&names).clone() };
    let true_len = Value::Object(st.header.clone()).to_string().len() as u64;
    let what = match rng.below(12) {
        0 => {
            let len = *rng.pick(&[u64::MAX, 1 << 40, 1 << 32, 100_000_001, true_len + 1, true_len - 1, 0]);
            return (st.to_bytes(Some(len)), "header length");
        }
        1 | 2 if !name.is_empty() => {
            let d = *rng.pick(DTYPES);
            st.header[&name]["dtype"] = json!(d);
            if rng.chance(0.5)
                && let Some(size) = st.byte_size(&name)
            {
                st.relayout(rng, &name, size);
                "dtype (consistent)"
            } else {
                "dtype (raw)"
            }
        }
        3 | 4 if !name.is_empty() => {
            let shape = st.header[&name].get("shape").and_then(Value::as_array).cloned().unwrap_or_default();
            st.header[&name]["shape"] = new_shape(rng, &shape);
            if rng.chance(0.6)
                && let Some(size) = st.byte_size(&name)
            {
                st.relayout(rng, &name, size);
                "shape (consistent)"
            } else {
                "shape (raw: shape x dtype != bytes)"
            }
        }
        5 if !name.is_empty() => {
            let own = st.offsets(&name).unwrap_or((0, 0));
            let other = names.iter().filter(|n| **n != name).find_map(|n| st.offsets(n));
            st.header[&name]["data_offsets"] = bad_offsets(rng, own, other);
            "data offsets"
        }
        6 if !name.is_empty() => {
            match rng.below(3) {
                0 => {
                    // Dropped with its bytes, so the rest of the file stays consistent.
                    st.header.remove(&name);
                    if let Some(n) = st.names().first().cloned() {
                        let (s, e) = st.offsets(&n).unwrap_or((0, 0));
                        st.relayout(rng, &n, e.saturating_sub(s));
                    }
                }
                1 => {
                    let entry = st.header.remove(&name).unwrap_or(Value::Null);
                    let new = format!("{name}{}", rng.pick(&["x", ".q", ".seqlens_k", ".dout", "_"]));
                    st.header.insert(new, entry);
                }
                _ => {
                    // The same bytes under a second name: overlapping offsets.
                    let entry = st.header[&name].clone();
                    st.header.insert(format!("{name}.copy"), entry);
                }
            }
            "tensor set"
        }
        7 | 8 if meta_json => {
            let meta = st.header.entry("__metadata__").or_insert_with(|| json!({}));
            let keys: Vec<String> = meta.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            if keys.is_empty() {
                return (st.to_bytes(None), "metadata (none)");
            }
            let key = rng.pick(&keys).clone();
            let mut doc = meta[&key].as_str().unwrap_or("").as_bytes().to_vec();
            text::mutate(rng, &mut doc, false);
            meta[&key] = json!(String::from_utf8_lossy(&doc));
            "metadata JSON"
        }
        7 | 8 => {
            let meta = st.header.entry("__metadata__").or_insert_with(|| json!({}));
            let v = match rng.below(5) {
                0 => json!(18446744073709551615u64),
                1 => json!({"a": [1]}),
                2 => json!(null),
                3 => json!("x".repeat(rng.below(3) * 1000)),
                _ => json!("-1"),
            };
            let key = rng.pick(&["step", "format", "x"]).to_string();
            match meta.as_object_mut() {
                Some(m) => {
                    m.insert(key, v);
                }
                None => *meta = v,
            }
            "metadata value"
        }
        9 if !st.data.is_empty() => {
            // Special float bit patterns in the data: NaN, inf, subnormals, -0.
            let pat = *rng.pick(&[0x7fc0_0000u32, 0x7f80_0000, 0xff80_0000, 0x0000_0001, 0x8000_0000, 0xffff_ffff]);
            let at = rng.below(st.data.len()) & !3;
            for (k, b) in pat.to_le_bytes().iter().enumerate() {
                if let Some(d) = st.data.get_mut(at + k) {
                    *d = *b;
                }
            }
            "special floats in data"
        }
        10 => {
            // Spliced in as text: a serde_json::Value this deep would overflow the stack here.
            let mut out = st.to_bytes(None);
            let deep = format!("\"deep\": {},", text::deep_nesting(rng, false));
            out.splice(9..9, deep.bytes());
            let len = (out.len() - 8 - st.data.len()) as u64;
            out[..8].copy_from_slice(&len.to_le_bytes());
            return (out, "deep nesting in header");
        }
        _ => {
            let mut out = st.to_bytes(None);
            let what = bytes::mutate(rng, &mut out);
            return (out, what);
        }
    };
    // Sometimes a second, format-blind mutation on top.
    let mut out = st.to_bytes(None);
    if rng.chance(0.15) {
        bytes::mutate(rng, &mut out);
    }
    (out, what)
}
