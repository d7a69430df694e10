//! The safetensors container: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! header `{name: {dtype, shape, data_offsets: [start, end]}, "__metadata__"?: {str: str}}`,
//! then the raw little-endian data, offsets relative to its start.
//!
//! Every number in the header is checked against the bytes that actually exist before anything
//! is allocated for a tensor: a hostile header can make the reader fail, never panic or
//! reserve memory the file cannot back.

use super::dtype::Dtype;
use crate::primitives::error::{Error, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};

/// Largest header accepted (the reference implementation's limit too).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor's header entry, validated against the data region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type on disk.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Byte range `[start, end)` relative to the start of the data region.
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// Number of elements (the product of the shape; checked not to overflow when parsed).
    pub fn numel(&self) -> usize {
        // Saturating: a hand-built `TensorInfo` may not have been checked.
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
}

/// A parsed and validated header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The `__metadata__` map (empty if absent).
    pub metadata: BTreeMap<String, String>,
}

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::Format(msg.into())
}

/// Header entries in file order, duplicates kept so they can be rejected (a JSON object with a
/// repeated key means different readers may see different tensors).
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Value>()? {
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn as_u64_list(v: &Value, name: &str, what: &str) -> Result<Vec<u64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| fmt_err(format!("tensor \"{name}\": \"{what}\" is not a list")))?;
    arr.iter()
        .map(|x| {
            x.as_u64().ok_or_else(|| {
                fmt_err(format!(
                    "tensor \"{name}\": \"{what}\" entry {x} is not a non-negative integer"
                ))
            })
        })
        .collect()
}

/// Parses and validates a header against a data region of `data_len` bytes.
///
/// # Errors
/// [`Error::Format`] naming the tensor for: invalid UTF-8 or JSON, a repeated name, an unknown
/// dtype, a shape whose byte size overflows or disagrees with its offsets, offsets out of the data
/// region, two tensors whose byte ranges overlap, or bytes of the data region that no tensor
/// covers (a gap between tensors, before the first or after the last).
pub fn parse_header(bytes: &[u8], data_len: u64) -> Result<Header> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| fmt_err(format!("safetensors header is not valid UTF-8: {e}")))?;
    let entries: Entries = serde_json::from_str(text)
        .map_err(|e| fmt_err(format!("safetensors header is not a JSON object: {e}")))?;
    let mut seen = HashSet::new();
    let mut header = Header::default();
    for (name, val) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(fmt_err(format!(
                "tensor \"{name}\": appears twice in the header"
            )));
        }
        if name == "__metadata__" {
            let obj = val
                .as_object()
                .ok_or_else(|| fmt_err("\"__metadata__\" is not a JSON object"))?;
            for (k, v) in obj {
                let s = v.as_str().ok_or_else(|| {
                    fmt_err(format!("\"__metadata__\" entry \"{k}\" is not a string"))
                })?;
                header.metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        let obj = val
            .as_object()
            .ok_or_else(|| fmt_err(format!("tensor \"{name}\": entry is not a JSON object")))?;
        let dtype_str = obj
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| fmt_err(format!("tensor \"{name}\": missing string \"dtype\"")))?;
        let dtype = Dtype::parse(dtype_str)
            .ok_or_else(|| fmt_err(format!("tensor \"{name}\": unknown dtype \"{dtype_str}\"")))?;
        let shape64 = as_u64_list(
            obj.get("shape")
                .ok_or_else(|| fmt_err(format!("tensor \"{name}\": missing \"shape\"")))?,
            &name,
            "shape",
        )?;
        let offs = as_u64_list(
            obj.get("data_offsets")
                .ok_or_else(|| fmt_err(format!("tensor \"{name}\": missing \"data_offsets\"")))?,
            &name,
            "data_offsets",
        )?;
        let &[start, end] = offs.as_slice() else {
            return Err(fmt_err(format!(
                "tensor \"{name}\": \"data_offsets\" must be [start, end], found {} numbers",
                offs.len()
            )));
        };
        if start > end || end > data_len {
            return Err(fmt_err(format!(
                "tensor \"{name}\": data_offsets [{start}, {end}] outside the {data_len}-byte data region"
            )));
        }
        // The byte size is bounded by `end ≤ data_len`, so every declared size is checked
        // against real bytes before anything is allocated.
        let mut nbytes: u64 = dtype.size() as u64;
        let mut shape = Vec::with_capacity(shape64.len().min(64));
        for &d in &shape64 {
            nbytes = nbytes.checked_mul(d).ok_or_else(|| {
                fmt_err(format!(
                    "tensor \"{name}\": shape {shape64:?} of {dtype} overflows a 64-bit byte count"
                ))
            })?;
            shape.push(usize::try_from(d).map_err(|_| {
                fmt_err(format!(
                    "tensor \"{name}\": dimension {d} does not fit in usize"
                ))
            })?);
        }
        if nbytes != end - start {
            return Err(fmt_err(format!(
                "tensor \"{name}\": shape {shape64:?} of {dtype} needs {nbytes} bytes but data_offsets [{start}, {end}] hold {}",
                end - start
            )));
        }
        header.tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape,
                data_offsets: (start, end),
            },
        );
    }
    let mut ranges: Vec<(u64, u64, &str)> = header
        .tensors
        .iter()
        .filter(|(_, t)| t.data_offsets.0 < t.data_offsets.1)
        .map(|(n, t)| (t.data_offsets.0, t.data_offsets.1, n.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(fmt_err(format!(
                "tensor \"{}\": bytes [{}, {}) overlap tensor \"{}\" at [{}, {})",
                w[1].2, w[1].0, w[1].1, w[0].2, w[0].0, w[0].1
            )));
        }
        // The format forbids holes: every byte of the data region belongs to one tensor.
        if w[1].0 > w[0].1 {
            return Err(fmt_err(format!(
                "tensor \"{}\": bytes [{}, {}) leave a gap of {} bytes after tensor \"{}\" at [{}, {})",
                w[1].2, w[1].0, w[1].1, w[1].0 - w[0].1, w[0].2, w[0].0, w[0].1
            )));
        }
    }
    let (first, last) = (
        ranges.first().map_or(0, |r| r.0),
        ranges.last().map_or(0, |r| r.1),
    );
    if first != 0 || last != data_len {
        return Err(fmt_err(format!(
            "the tensors cover bytes [{first}, {last}) of the {data_len}-byte data region; the format forbids unused bytes"
        )));
    }
    Ok(header)
}

/// Reads the length prefix and header of a safetensors stream of `total_len` bytes; returns the
/// header and the absolute offset of the data region.
pub(crate) fn read_header<R: Read>(r: &mut R, total_len: u64) -> Result<(Header, u64)> {
    if total_len < 8 {
        return Err(fmt_err(format!(
            "safetensors data is {total_len} bytes, shorter than its 8-byte header length"
        )));
    }
    let mut len8 = [0u8; 8];
    r.read_exact(&mut len8)
        .map_err(|e| Error::io("reading the safetensors header length", e))?;
    let n = u64::from_le_bytes(len8);
    if n > total_len - 8 {
        return Err(fmt_err(format!(
            "safetensors header length {n} exceeds the {} bytes after the length prefix",
            total_len - 8
        )));
    }
    if n > MAX_HEADER_LEN {
        return Err(Error::TooLarge {
            context: "safetensors header length".into(),
            value: n as usize,
            max: MAX_HEADER_LEN as usize,
        });
    }
    let mut hb = vec![0u8; n as usize];
    r.read_exact(&mut hb)
        .map_err(|e| Error::io("reading the safetensors header", e))?;
    let header = parse_header(&hb, total_len - 8 - n)?;
    Ok((header, 8 + n))
}

/// Reads one validated tensor's raw bytes.
pub(crate) fn read_tensor_bytes<R: Read + Seek>(
    r: &mut R,
    data_start: u64,
    name: &str,
    info: &TensorInfo,
) -> Result<Vec<u8>> {
    let (s, e) = info.data_offsets;
    r.seek(SeekFrom::Start(data_start + s))
        .map_err(|err| Error::io(format!("tensor \"{name}\": seeking to its data"), err))?;
    // `e - s ≤ data_len` was checked against the real length, so this allocation is justified.
    let mut buf = vec![0u8; (e - s) as usize];
    r.read_exact(&mut buf)
        .map_err(|err| Error::io(format!("tensor \"{name}\": reading its data"), err))?;
    Ok(buf)
}

/// Serialises tensors (already little-endian bytes) and metadata: header padded with spaces to a
/// multiple of 8 bytes, as the reference writer does, so the data region is 8-byte aligned.
pub(crate) fn write_container(
    tensors: &[(&str, Dtype, &[usize], Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut obj = serde_json::Map::new();
    if !metadata.is_empty() {
        obj.insert(
            "__metadata__".into(),
            Value::Object(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut offset = 0u64;
    for (name, dtype, shape, data) in tensors {
        if *name == "__metadata__" {
            return Err(Error::invalid(
                "a tensor cannot be named \"__metadata__\" in a safetensors file",
            ));
        }
        let end = offset + data.len() as u64;
        obj.insert(
            (*name).to_string(),
            serde_json::json!({
                "dtype": dtype.name(),
                "shape": shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| Error::io("serialising the safetensors header", e.into()))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset as usize);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    Ok(out)
}
