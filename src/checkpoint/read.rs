//! Reading and checking tensors of a [`StateDict`] for the name mappings beside each module:
//! shapes, finiteness, presence and absence, each failure naming the tensor.

use super::state_dict::{join_name, StateDict};
use crate::primitives::error::{Error, Result};
use crate::primitives::nn::Linear;
use crate::RealScalar;
use ndarray::{Array1, Array2, Array3, ArrayD, Ix2, Ix3};

/// The 2-D tensor `name`, whatever its sizes.
pub(crate) fn array2_any<T: RealScalar>(sd: &StateDict<T>, name: &str) -> Result<Array2<T>> {
    let a = sd.tensor(name)?;
    if a.ndim() != 2 {
        return Err(Error::ShapeMismatch {
            context: format!("tensor \"{name}\": shape"),
            expected: "2 dimensions".into(),
            found: format!("{:?}", a.shape()),
        });
    }
    a.clone()
        .into_dimensionality()
        .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
}

/// `Err` naming the tensor unless every value of `a` is finite.
pub(crate) fn check_finite<'a, T: RealScalar + 'a>(
    name: &str,
    a: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    if a.into_iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            context: format!("tensor \"{name}\""),
        })
    }
}

/// The frozen base layer `{prefix}.weight` `(out, in)` and, if `bias`, `{prefix}.bias` `(out,)`.
pub(crate) fn load_base<T: RealScalar>(
    sd: &StateDict<T>,
    prefix: &str,
    bias: bool,
) -> Result<(Array2<T>, Option<Array1<T>>)> {
    let wn = join_name(prefix, "weight");
    let bn = join_name(prefix, "bias");
    let w = array2_any(sd, &wn)?;
    if w.is_empty() {
        return Err(Error::zero(format!(
            "tensor \"{wn}\": shape {:?}",
            w.shape()
        )));
    }
    check_finite(&wn, w.iter())?;
    let b = if bias {
        let b = sd.array1(&bn, w.nrows())?;
        check_finite(&bn, b.iter())?;
        Some(b)
    } else {
        if sd.contains(&bn) {
            return Err(Error::Format(format!(
                "tensor \"{bn}\": present but the layer was requested without bias"
            )));
        }
        None
    };
    Ok((w, b))
}

/// Prefixes a shape/size error's context with the names of the tensors involved.
pub(crate) fn name_err(names: &str, e: Error) -> Error {
    match e {
        Error::ShapeMismatch {
            context,
            expected,
            found,
        } => Error::ShapeMismatch {
            context: format!("{names}: {context}"),
            expected,
            found,
        },
        Error::ZeroSize { context } => Error::ZeroSize {
            context: format!("{names}: {context}"),
        },
        Error::TooLarge {
            context,
            value,
            max,
        } => Error::TooLarge {
            context: format!("{names}: {context}"),
            value,
            max,
        },
        Error::NonFinite { context } => Error::NonFinite {
            context: format!("{names}: {context}"),
        },
        other => other,
    }
}

/// The tensor `name` with exactly `ndim` dimensions, finite.
pub(crate) fn tensor_nd<T: RealScalar>(
    sd: &StateDict<T>,
    name: &str,
    ndim: usize,
) -> Result<ArrayD<T>> {
    let a = sd.tensor(name)?;
    if a.ndim() != ndim {
        return Err(Error::ShapeMismatch {
            context: format!("tensor \"{name}\": shape"),
            expected: format!("{ndim} dimensions"),
            found: format!("{:?}", a.shape()),
        });
    }
    if a.is_empty() {
        return Err(Error::zero(format!(
            "tensor \"{name}\": shape {:?}",
            a.shape()
        )));
    }
    check_finite(name, a.iter())?;
    Ok(a.clone())
}

/// The tensor `name` of exactly `shape`, finite.
pub(crate) fn tensor_shape<T: RealScalar>(
    sd: &StateDict<T>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<T>> {
    let a = sd.array(name, shape)?;
    check_finite(name, a.iter())?;
    Ok(a)
}

pub(crate) fn to2<T>(a: ArrayD<T>, name: &str) -> Result<Array2<T>> {
    a.into_dimensionality::<Ix2>()
        .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
}

pub(crate) fn to3<T>(a: ArrayD<T>, name: &str) -> Result<Array3<T>> {
    a.into_dimensionality::<Ix3>()
        .map_err(|e| Error::Format(format!("tensor \"{name}\": {e}")))
}

pub(crate) fn to1<T: Clone>(a: ArrayD<T>) -> Array1<T> {
    Array1::from_iter(a.iter().cloned())
}

/// `Err` naming `name` if it is present: a tensor the configuration says the module lacks.
pub(crate) fn absent<T: RealScalar>(sd: &StateDict<T>, name: &str, why: &str) -> Result<()> {
    if sd.contains(name) || sd.skipped().contains_key(name) {
        Err(Error::Format(format!(
            "tensor \"{name}\": present but {why}"
        )))
    } else {
        Ok(())
    }
}

/// `Err` naming the first tensor under `prefix` (module path), if any.
pub(crate) fn no_module<T: RealScalar>(sd: &StateDict<T>, prefix: &str, why: &str) -> Result<()> {
    let start = join_name(prefix, "");
    match sd.names().find(|n| n.starts_with(&start)) {
        Some(n) => Err(Error::Format(format!("tensor \"{n}\": present but {why}"))),
        None => Ok(()),
    }
}

/// An `nn.Linear` at `prefix` with weight `(out, in)` and bias `(out,)`.
pub(crate) fn load_linear<T: RealScalar>(
    sd: &StateDict<T>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Linear<T>> {
    let wn = join_name(prefix, "weight");
    let bn = join_name(prefix, "bias");
    let w = to2(tensor_shape(sd, &wn, &[out, inp])?, &wn)?;
    let b = to1(tensor_shape(sd, &bn, &[out])?);
    Linear::new(w, Some(b)).map_err(|e| name_err(&format!("tensor \"{wn}\""), e))
}

pub(crate) fn save_linear<T: RealScalar>(
    sd: &mut StateDict<T>,
    prefix: &str,
    l: &Linear<T>,
    what: &str,
) -> Result<()> {
    let b = l.bias.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "{what}: the released module has a bias (\"{}\"); this layer has none",
            join_name(prefix, "bias")
        ))
    })?;
    sd.insert(join_name(prefix, "weight"), l.weight.clone());
    sd.insert(join_name(prefix, "bias"), b.clone());
    Ok(())
}
