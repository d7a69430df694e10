//! [`StateDict`]: named real tensors, the unit that layers load from and save to.

use super::dtype::{bf16_to_f32, decode_into, f16_to_f32, f64_to_bf16, f64_to_f16, Dtype};
use super::format::{read_header, read_tensor_bytes, write_container};
use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::{Array1, Array2, Array3, ArrayD, Dimension, IxDyn};
use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek};
use std::path::Path;

/// The full name of parameter `name` inside the module at `prefix`, PyTorch style: an empty
/// prefix or one ending in `.` is used as is, otherwise a `.` is inserted
/// (`join_name("encoder.fc1", "bias") == "encoder.fc1.bias"`).
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}.{name}")
    }
}

/// Named real tensors (`f32` or `f64`) with the file's string metadata: what a PyTorch
/// `state_dict()` holds, loaded from or saved to safetensors.
///
/// Loading converts every floating-point tensor on disk (F32, F64, F16, BF16) to `T`; tensors of
/// other types (integer buffers such as `position_ids`) are not converted but remembered, so that
/// asking for one gives an error naming its dtype rather than "missing".
#[derive(Debug, Clone, PartialEq)]
pub struct StateDict<T> {
    tensors: BTreeMap<String, ArrayD<T>>,
    skipped: BTreeMap<String, Dtype>,
    metadata: BTreeMap<String, String>,
}

impl<T> Default for StateDict<T> {
    fn default() -> Self {
        StateDict {
            tensors: BTreeMap::new(),
            skipped: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }
}

/// The loaders' NaN policy: [`Error::NonFinite`] naming the tensor unless every value is finite.
fn check_weights_finite<T: RealScalar>(name: &str, a: &ArrayD<T>) -> Result<()> {
    match a.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite {
            context: format!(
                "tensor \"{name}\": element {i} of {} (a loader takes finite weights only)",
                a.len()
            ),
        }),
    }
}

fn missing(name: &str) -> Error {
    Error::Format(format!("tensor \"{name}\": missing from the checkpoint"))
}

impl<T: RealScalar> StateDict<T> {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a safetensors file held in memory, converting every floating-point tensor.
    ///
    /// # Errors
    /// [`Error::Format`] (naming the tensor where there is one) for any malformed, truncated or
    /// inconsistent content; see [`parse_header`](super::parse_header).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_prefix(bytes, "")
    }

    /// Like [`from_bytes`](StateDict::from_bytes), converting only the tensors whose names start
    /// with `prefix` (names are kept whole). The whole header is still validated.
    ///
    /// # Errors
    /// As [`from_bytes`](StateDict::from_bytes).
    pub fn from_bytes_prefix(bytes: &[u8], prefix: &str) -> Result<Self> {
        Self::read_from(&mut Cursor::new(bytes), bytes.len() as u64, prefix)
    }

    /// Loads a safetensors file, converting every floating-point tensor.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; otherwise as [`from_bytes`](StateDict::from_bytes).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_prefix(path, "")
    }

    /// Loads only the tensors whose names start with `prefix` (e.g. one layer of a large
    /// model): only those tensors' bytes are read.
    ///
    /// # Errors
    /// As [`load`](StateDict::load).
    pub fn load_prefix(path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::io(path.display().to_string(), e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        Self::read_from(&mut f, len, prefix)
    }

    fn read_from<R: Read + Seek>(r: &mut R, total_len: u64, prefix: &str) -> Result<Self> {
        let (header, data_start) = read_header(r, total_len)?;
        let mut sd = StateDict {
            metadata: header.metadata,
            ..Self::default()
        };
        for (name, info) in header.tensors {
            if !name.starts_with(prefix) {
                continue;
            }
            if !info.dtype.is_float() {
                sd.skipped.insert(name, info.dtype);
                continue;
            }
            let bytes = read_tensor_bytes(r, data_start, &name, &info)?;
            let mut data = Vec::with_capacity(info.numel());
            decode_into(info.dtype, &bytes, &mut data, &name)?;
            let arr = ArrayD::from_shape_vec(IxDyn(&info.shape), data).map_err(|e| {
                Error::Format(format!("tensor \"{name}\": shape {:?}: {e}", info.shape))
            })?;
            sd.tensors.insert(name, arr);
        }
        Ok(sd)
    }

    /// Serialises to safetensors bytes with every tensor stored as `dtype` (`F32`, `F64`, `F16`
    /// or `BF16`), names in sorted order, header padded to 8 bytes. `F16` is rounded to nearest
    /// even from the value; `BF16` is rounded to nearest even through `f32`, as PyTorch
    /// converts. Rounding to the nearest representable value is the only loss accepted: a
    /// finite value that would become ±infinity (beyond `F16`'s 65504, or `F32`/`BF16`'s
    /// 3.4e38) or a non-zero value that would become zero (below half the smallest subnormal)
    /// is an error. [`to_bytes_lossy`](StateDict::to_bytes_lossy) converts them anyway.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another `dtype`, a tensor named `__metadata__`, or a value
    /// out of the range of `dtype` (naming the tensor, the index and the value).
    pub fn to_bytes(&self, dtype: Dtype) -> Result<Vec<u8>> {
        self.encode(dtype, false)
    }

    /// [`to_bytes`](StateDict::to_bytes) that accepts out-of-range values, as PyTorch's
    /// `.half()` does: they silently become ±infinity (overflow) or ±0 (underflow). Explicitly
    /// lossy: prefer [`to_bytes`](StateDict::to_bytes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another `dtype` or a tensor named `__metadata__`.
    pub fn to_bytes_lossy(&self, dtype: Dtype) -> Result<Vec<u8>> {
        self.encode(dtype, true)
    }

    fn encode(&self, dtype: Dtype, lossy: bool) -> Result<Vec<u8>> {
        if !dtype.is_float() {
            return Err(Error::invalid(format!(
                "StateDict::to_bytes: saving as {dtype} is not supported (use F32, F64, F16 or BF16)"
            )));
        }
        let mut entries: Vec<(&str, Dtype, &[usize], Vec<u8>)> = Vec::new();
        for (name, a) in &self.tensors {
            let size = a.len().saturating_mul(dtype.size());
            let mut data = Vec::new();
            data.try_reserve_exact(size).map_err(|_| Error::TooLarge {
                context: format!("StateDict::to_bytes: tensor \"{name}\" (allocation failed)"),
                value: size,
                max: 0,
            })?;
            // `iter()` walks in logical row-major order whatever the memory layout.
            for (i, &v) in a.iter().enumerate() {
                let v = v.to_f64_val();
                let back = match dtype {
                    Dtype::F32 => {
                        let h = v as f32;
                        data.extend_from_slice(&h.to_le_bytes());
                        h as f64
                    }
                    Dtype::F16 => {
                        let h = f64_to_f16(v);
                        data.extend_from_slice(&h.to_le_bytes());
                        f16_to_f32(h) as f64
                    }
                    Dtype::BF16 => {
                        let h = f64_to_bf16(v);
                        data.extend_from_slice(&h.to_le_bytes());
                        bf16_to_f32(h) as f64
                    }
                    _ => {
                        data.extend_from_slice(&v.to_le_bytes());
                        v
                    }
                };
                let lost = (v.is_finite() && back.is_infinite()) || (v != 0.0 && back == 0.0);
                if lost && !lossy {
                    return Err(Error::invalid(format!(
                        "StateDict::to_bytes: tensor \"{name}\", element {i}: {v:e} is out of the range of {dtype} (it would become {back}); use to_bytes_lossy to accept that"
                    )));
                }
            }
            entries.push((name.as_str(), dtype, a.shape(), data));
        }
        write_container(&entries, &self.metadata)
    }

    /// Writes a safetensors file (see [`to_bytes`](StateDict::to_bytes) for the dtypes).
    ///
    /// # Errors
    /// As [`to_bytes`](StateDict::to_bytes), or [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>, dtype: Dtype) -> Result<()> {
        let bytes = self.to_bytes(dtype)?;
        let path = path.as_ref();
        std::fs::write(path, bytes).map_err(|e| Error::io(path.display().to_string(), e))
    }

    /// [`save`](StateDict::save) through [`to_bytes_lossy`](StateDict::to_bytes_lossy):
    /// out-of-range values become ±infinity or ±0 (explicitly lossy).
    ///
    /// # Errors
    /// As [`to_bytes_lossy`](StateDict::to_bytes_lossy), or [`Error::Io`].
    pub fn save_lossy(&self, path: impl AsRef<Path>, dtype: Dtype) -> Result<()> {
        let bytes = self.to_bytes_lossy(dtype)?;
        let path = path.as_ref();
        std::fs::write(path, bytes).map_err(|e| Error::io(path.display().to_string(), e))
    }

    /// Writes a safetensors file holding what `fill` stores into a fresh state dict: how every
    /// layer's `save_safetensors` saves itself alone.
    ///
    /// # Errors
    /// Those of `fill`, then as [`save`](StateDict::save).
    pub fn save_new(
        path: impl AsRef<Path>,
        dtype: Dtype,
        fill: impl FnOnce(&mut StateDict<T>) -> Result<()>,
    ) -> Result<()> {
        let mut sd = StateDict::new();
        fill(&mut sd)?;
        sd.save(path, dtype)
    }

    /// Number of (converted) tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// True if there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    /// True if a tensor of this name was loaded or inserted.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    /// Tensors of the file that are not floating point (not converted), with their dtype.
    pub fn skipped(&self) -> &BTreeMap<String, Dtype> {
        &self.skipped
    }
    /// The file's `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    /// Mutable metadata (saved with the tensors).
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }
    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&ArrayD<T>> {
        self.tensors.get(name)
    }
    /// Adds or replaces a tensor (any dimensionality), returning the previous one.
    pub fn insert<D: Dimension>(
        &mut self,
        name: impl Into<String>,
        a: ndarray::Array<T, D>,
    ) -> Option<ArrayD<T>> {
        let name = name.into();
        self.skipped.remove(&name);
        self.tensors.insert(name, a.into_dyn())
    }
    /// Removes a tensor.
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<T>> {
        self.tensors.remove(name)
    }

    /// The tensor called `name`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the tensor if it is missing or was not floating point.
    pub fn tensor(&self, name: &str) -> Result<&ArrayD<T>> {
        match self.tensors.get(name) {
            Some(a) => Ok(a),
            None => Err(match self.skipped.get(name) {
                Some(d) => Error::Format(format!(
                    "tensor \"{name}\": dtype {d} is not a floating-point type (F32, F64, F16 or BF16 load)"
                )),
                None => missing(name),
            }),
        }
    }

    /// The tensor called `name` as an array of exactly `shape`, every value finite.
    ///
    /// This and the typed getters below (`array1`, `array2`, `array3`, `array3_any`) are what
    /// every layer loader of the crate reads its weights with, so they share one NaN policy:
    /// a weight that is NaN or ±infinity is an error naming the tensor. [`tensor`] and [`get`]
    /// return the values as stored.
    ///
    /// [`tensor`]: StateDict::tensor
    /// [`get`]: StateDict::get
    ///
    /// # Errors
    /// As [`tensor`](StateDict::tensor), [`Error::ShapeMismatch`] naming the tensor, or
    /// [`Error::NonFinite`] naming the tensor and the first non-finite element.
    pub fn array(&self, name: &str, shape: &[usize]) -> Result<ArrayD<T>> {
        let a = self.tensor(name)?;
        if a.shape() != shape {
            return Err(Error::shape(
                format!("tensor \"{name}\": shape"),
                shape,
                a.shape(),
            ));
        }
        check_weights_finite(name, a)?;
        Ok(a.clone())
    }

    /// The 1-D tensor `name` of length `len`.
    ///
    /// # Errors
    /// As [`array`](StateDict::array) (NaN/±infinity included).
    pub fn array1(&self, name: &str, len: usize) -> Result<Array1<T>> {
        self.array_nd(name, Some(&[len]))
    }

    /// The 2-D tensor `name` of shape `shape`.
    ///
    /// # Errors
    /// As [`array`](StateDict::array) (NaN/±infinity included).
    pub fn array2(&self, name: &str, shape: (usize, usize)) -> Result<Array2<T>> {
        self.array_nd(name, Some(&[shape.0, shape.1]))
    }

    /// The 3-D tensor `name` of shape `shape`.
    ///
    /// # Errors
    /// As [`array`](StateDict::array) (NaN/±infinity included).
    pub fn array3(&self, name: &str, shape: (usize, usize, usize)) -> Result<Array3<T>> {
        self.array_nd(name, Some(&[shape.0, shape.1, shape.2]))
    }

    /// The tensor `name`, required to be 3-D, whatever its sizes.
    ///
    /// # Errors
    /// As [`tensor`](StateDict::tensor), [`Error::ShapeMismatch`] if it is not 3-D, or
    /// [`Error::NonFinite`] as [`array`](StateDict::array).
    pub fn array3_any(&self, name: &str) -> Result<Array3<T>> {
        self.array_nd(name, None)
    }

    fn array_nd<D: Dimension>(
        &self,
        name: &str,
        shape: Option<&[usize]>,
    ) -> Result<ndarray::Array<T, D>> {
        let a = self.tensor(name)?;
        let ndim = D::NDIM.unwrap_or(a.ndim());
        if a.ndim() != ndim || shape.is_some_and(|s| s != a.shape()) {
            let expected = match shape {
                Some(s) => format!("{s:?}"),
                None => format!("{ndim} dimensions"),
            };
            return Err(Error::ShapeMismatch {
                context: format!("tensor \"{name}\": shape"),
                expected,
                found: format!("{:?}", a.shape()),
            });
        }
        check_weights_finite(name, a)?;
        a.clone()
            .into_dimensionality::<D>()
            .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
    }
}
