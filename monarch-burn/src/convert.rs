//! Moving parameters and data between the core crate's ndarray arrays and burn tensors.
//!
//! Both sides store row-major with the same axis order (blocks out×in, `w1 (k, q, p)`,
//! `w2 (l, s, r)`), so a conversion copies values and never reshuffles them.
//!
//! ```
//! use monarch::ndarray::Array3;
//! use monarch_burn::convert::{array_from_tensor, tensor_from_array};
//! use burn::tensor::Device;
//! let device = Device::flex();
//! let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
//! let t = tensor_from_array::<3, _>(a.view(), &device);
//! assert_eq!(t.dims(), [2, 3, 4]);
//! let back: Array3<f32> = array_from_tensor(t).unwrap();
//! assert_eq!(back, a);
//! ```

use burn::tensor::{Device, Tensor, TensorData};
use monarch::ndarray::{Array, ArrayBase, Data, Dimension, IxDyn};
use monarch::{Error, Result};

/// A burn tensor of rank `D` holding a copy of `a` (f32, the same shape).
///
/// # Panics
/// If `a` does not have rank `D` (a programming error: the rank is in both types).
pub fn tensor_from_array<const D: usize, S>(
    a: ArrayBase<S, impl Dimension>,
    device: &Device,
) -> Tensor<D>
where
    S: Data<Elem = f32>,
{
    assert_eq!(
        a.ndim(),
        D,
        "tensor_from_array: array of rank {} into Tensor<{D}>",
        a.ndim()
    );
    let shape = a.shape().to_vec();
    let values: Vec<f32> = a.iter().copied().collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A copy of a burn tensor as an ndarray array of dimension `Dim` (f32).
///
/// # Errors
/// [`Error::InvalidArgument`] if the tensor's data cannot be read as f32, or its rank is not
/// that of `Dim`.
pub fn array_from_tensor<const D: usize, Dim: Dimension>(t: Tensor<D>) -> Result<Array<f32, Dim>> {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>();
    let values = data.try_to_vec::<f32>().map_err(|e| {
        Error::InvalidArgument(format!("array_from_tensor: tensor data as f32: {e:?}"))
    })?;
    Array::from_shape_vec(IxDyn(&shape), values)
        .map_err(|e| Error::InvalidArgument(format!("array_from_tensor: shape {shape:?}: {e}")))?
        .into_dimensionality::<Dim>()
        .map_err(|e| Error::InvalidArgument(format!("array_from_tensor: rank of {shape:?}: {e}")))
}
