//! [`MonarchLinear`] and [`BlockDiagLinear`] as burn modules, and the Monarch product written in
//! burn tensor ops ([`monarch_matmul`], [`blockdiag_matmul`]).
//!
//! The factors keep the core crate's layout: blocks stored out×in, `w1 (k, q, p)`,
//! `w2 (l, s, r)`, `M = P_out · BD(w2) · P_mid · BD(w1)` with `P_mid = stride(r, l)` and
//! `P_out = stride(l, s)`. The product is the PyTorch reference codes' two batched matmuls with
//! reshapes and transposes between them, so burn's autodiff differentiates it with no
//! hand-written backward.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use monarch_burn::MonarchLinear;
//! let device = Device::flex();
//! let layer = MonarchLinear::new(64, 128, 4, true, 0, &device).unwrap();
//! let y = layer.forward(Tensor::<2>::ones([3, 64], &device));
//! assert_eq!(y.dims(), [3, 128]);
//! // Parameters move back to the core crate unchanged.
//! let core = layer.to_core().unwrap();
//! assert_eq!(core.monarch().w1().dim(), (4, 16, 16));
//! ```

use crate::convert::{array_from_tensor, tensor_from_array};
use crate::error::{expect_ok, last_dim};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use monarch::ndarray::{Array1, Array3};
use monarch::{Error, Result};

/// `y = M x` for rows `x` of shape `(batch, k·p)`: `w1 (k, q, p)`, `w2 (l, s, r)`, `k·q == l·r`.
///
/// Two batched matmuls with the stride permutations as reshape-transposes between them (the
/// reference codes' path). The output is `(batch, l·s)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the factors do not chain or `x` is not `(batch, k·p)`.
pub fn monarch_matmul(x: Tensor<2>, w1: Tensor<3>, w2: Tensor<3>) -> Result<Tensor<2>> {
    let [b, n] = x.dims();
    let [k, q, p] = w1.dims();
    let [l, s, r] = w2.dims();
    if k * q != l * r {
        return Err(Error::shape(
            format!("monarch_matmul: w1 (k,q,p)=({k},{q},{p}) and w2 (l,s,r)=({l},{s},{r}) must chain, k·q == l·r"),
            format!("l·r = {}", k * q),
            format!("l·r = {}", l * r),
        ));
    }
    if n != k * p {
        return Err(Error::shape("monarch_matmul: input width (k·p)", k * p, n));
    }
    if b == 0 {
        return Ok(Tensor::zeros([0, l * s], &x.device()));
    }
    // (k, b, p) · (k, p, q) -> (k, b, q): block a of w1 applied to slice a of every row.
    let y1 = x
        .reshape([b, k, p])
        .swap_dims(0, 1)
        .matmul(w1.swap_dims(1, 2));
    // Flatten each row as k·q, view it (r, l) and transpose: P_mid = stride(r, l).
    let y1 = y1.swap_dims(0, 1).reshape([b, r, l]).permute([2, 0, 1]);
    // (l, b, r) · (l, r, s) -> (l, b, s), then P_out = stride(l, s) reads it as (b, s, l).
    let y2 = y1.matmul(w2.swap_dims(1, 2));
    Ok(y2.permute([1, 2, 0]).reshape([b, s * l]))
}

/// `y = BD(w) x` for rows `x` of shape `(batch, nb·cols)` and blocks `w (nb, rows, cols)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `x` is not `(batch, nb·cols)`.
pub fn blockdiag_matmul(x: Tensor<2>, w: Tensor<3>) -> Result<Tensor<2>> {
    let [b, n] = x.dims();
    let [nb, rows, cols] = w.dims();
    if n != nb * cols {
        return Err(Error::shape(
            "blockdiag_matmul: input width (nb·cols)",
            nb * cols,
            n,
        ));
    }
    if b == 0 {
        return Ok(Tensor::zeros([0, nb * rows], &x.device()));
    }
    let y = x
        .reshape([b, nb, cols])
        .swap_dims(0, 1)
        .matmul(w.swap_dims(1, 2));
    Ok(y.swap_dims(0, 1).reshape([b, nb * rows]))
}

/// Flattens the leading axes of `x` into one batch axis: `(…, n)` -> `(batch, n)`.
pub(crate) fn flatten_rows<const D: usize>(x: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let dims = x.dims();
    let n = dims[D - 1];
    let batch: usize = dims[..D - 1].iter().product();
    (x.reshape([batch, n]), dims)
}

/// Restores the leading axes of `dims` on `(batch, m)` rows: `-> (…, m)`.
pub(crate) fn unflatten_rows<const D: usize>(y: Tensor<2>, mut dims: [usize; D]) -> Tensor<D> {
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// The core crate's `MonarchLinear` as a burn module: `y = M · pad(x)[..out] + bias`.
///
/// For `nblocks = nb`, `ib = ⌈in/nb⌉`, `ob = ⌈out/nb⌉`: the input is zero-padded to `nb·ib`, the
/// Monarch applied, the output truncated to `out`. Factor shapes are those of
/// [`monarch::primitives::linear::monarch_linear_shapes`].
///
/// Bad input: constructors return the core's [`Error`]; [`forward`](Self::forward) follows
/// burn's convention for modules and panics with the error's message on a wrong input width,
/// while [`try_forward`](Self::try_forward) returns it.
#[derive(Module, Debug)]
pub struct MonarchLinear {
    /// First factor, `(nb, q, ib)`, blocks out×in.
    pub w1: Param<Tensor<3>>,
    /// Second factor, `(nb, ob, r)`, blocks out×in.
    pub w2: Param<Tensor<3>>,
    /// Optional bias, `(out,)`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
}

impl MonarchLinear {
    /// A layer with the reference initialisation (the core crate's, seeded).
    ///
    /// # Errors
    /// As [`monarch::MonarchLinear::new`]: zero sizes, sizes too large to allocate.
    pub fn new(
        in_features: usize,
        out_features: usize,
        nblocks: usize,
        bias: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let core =
            monarch::MonarchLinear::<f32>::new(in_features, out_features, nblocks, bias, seed)?;
        Ok(Self::from_core(&core, device))
    }

    /// The same layer as a burn module, parameters copied unchanged.
    pub fn from_core(core: &monarch::MonarchLinear<f32>, device: &Device) -> Self {
        let m = core.monarch();
        MonarchLinear {
            w1: Param::from_tensor(tensor_from_array(m.w1().view(), device)),
            w2: Param::from_tensor(tensor_from_array(m.w2().view(), device)),
            bias: core
                .bias()
                .map(|b| Param::from_tensor(tensor_from_array(b.view(), device))),
            in_features: core.in_features(),
            out_features: core.out_features(),
        }
    }

    /// The parameters as the core crate's layer (for its checkpoints, kernels and tests).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the parameters were replaced by ones of other shapes.
    pub fn to_core(&self) -> Result<monarch::MonarchLinear<f32>> {
        let w1: Array3<f32> = array_from_tensor(self.w1.val())?;
        let w2: Array3<f32> = array_from_tensor(self.w2.val())?;
        let bias: Option<Array1<f32>> = self
            .bias
            .as_ref()
            .map(|b| array_from_tensor(b.val()))
            .transpose()?;
        monarch::MonarchLinear::from_weights(self.in_features, self.out_features, w1, w2, bias)
    }

    /// Number of diagonal blocks.
    pub fn nblocks(&self) -> usize {
        self.w1.dims()[0]
    }

    /// `y = M · pad(x)[..out] + bias` over the last axis of `x` (any leading axes).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the last axis of `x` is not `in_features`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        last_dim("MonarchLinear: input width", &x, self.in_features)?;
        let (x, dims) = flatten_rows(x);
        let [b, n] = x.dims();
        let padded = self.nblocks() * self.w1.dims()[2];
        let x = if padded > n {
            Tensor::cat(
                vec![x.clone(), Tensor::zeros([b, padded - n], &x.device())],
                1,
            )
        } else {
            x
        };
        let mut y = monarch_matmul(x, self.w1.val(), self.w2.val())?;
        if y.dims()[1] > self.out_features {
            y = y.narrow(1, 0, self.out_features);
        }
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<2>();
        }
        Ok(unflatten_rows(y, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message (burn's module
    /// convention).
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }
}

/// A block-diagonal linear layer `y = BD(w) x + bias`: `nb` dense blocks `rows × cols`, stored
/// out×in as the core's [`monarch::BlockDiag`].
///
/// Bad input follows [`MonarchLinear`]'s rule.
#[derive(Module, Debug)]
pub struct BlockDiagLinear {
    /// Blocks, `(nb, rows, cols)`.
    pub weight: Param<Tensor<3>>,
    /// Optional bias, `(nb·rows,)`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl BlockDiagLinear {
    /// `nb` blocks mapping `in_features` to `out_features`, uniform in `±1/√(in/nb)` (the
    /// reference's block-diagonal init), seeded; bias uniform in `±1/√(in/nb)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero size, [`Error::NotDivisible`] if `nb` does not divide both
    /// widths.
    pub fn new(
        in_features: usize,
        out_features: usize,
        nblocks: usize,
        bias: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        for (v, name) in [
            (in_features, "in_features"),
            (out_features, "out_features"),
            (nblocks, "nblocks"),
        ] {
            if v == 0 {
                return Err(Error::zero(format!("BlockDiagLinear: {name}")));
            }
        }
        for (v, name) in [(in_features, "in_features"), (out_features, "out_features")] {
            if v % nblocks != 0 {
                return Err(Error::NotDivisible {
                    context: format!("BlockDiagLinear: {name} into nblocks blocks"),
                    size: v,
                    divisor: nblocks,
                });
            }
        }
        let (rows, cols) = (out_features / nblocks, in_features / nblocks);
        let bound = 1.0 / (cols as f64).sqrt();
        let w = monarch::primitives::random::try_uniform_array3::<f32>(
            (nblocks, rows, cols),
            bound,
            seed,
        )?;
        let b = bias
            .then(|| {
                monarch::primitives::random::try_uniform_vec::<f32>(
                    out_features,
                    bound,
                    seed.wrapping_add(1),
                )
            })
            .transpose()?;
        Self::from_core(&monarch::BlockDiag::new(w)?, b.as_ref(), device)
    }

    /// From the core's blocks and an optional bias of length `nb·rows`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the bias length is not the output width.
    pub fn from_core(
        blocks: &monarch::BlockDiag<f32>,
        bias: Option<&Array1<f32>>,
        device: &Device,
    ) -> Result<Self> {
        if let Some(b) = bias {
            if b.len() != blocks.out_features() {
                return Err(Error::shape(
                    "BlockDiagLinear: bias length",
                    blocks.out_features(),
                    b.len(),
                ));
            }
        }
        Ok(BlockDiagLinear {
            weight: Param::from_tensor(tensor_from_array(blocks.weights(), device)),
            bias: bias.map(|b| Param::from_tensor(tensor_from_array(b.view(), device))),
        })
    }

    /// The blocks as the core's [`monarch::BlockDiag`], and the bias.
    ///
    /// # Errors
    /// If the tensors cannot be read back as f32.
    pub fn to_core(&self) -> Result<(monarch::BlockDiag<f32>, Option<Array1<f32>>)> {
        let w: Array3<f32> = array_from_tensor(self.weight.val())?;
        let b = self
            .bias
            .as_ref()
            .map(|b| array_from_tensor(b.val()))
            .transpose()?;
        Ok((monarch::BlockDiag::new(w)?, b))
    }

    /// Input width `nb·cols`.
    pub fn in_features(&self) -> usize {
        let [nb, _, cols] = self.weight.dims();
        nb * cols
    }

    /// Output width `nb·rows`.
    pub fn out_features(&self) -> usize {
        let [nb, rows, _] = self.weight.dims();
        nb * rows
    }

    /// `y = BD(w) x + bias` over the last axis of `x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the last axis of `x` is not `in_features`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        last_dim("BlockDiagLinear: input width", &x, self.in_features())?;
        let (x, dims) = flatten_rows(x);
        let mut y = blockdiag_matmul(x, self.weight.val())?;
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<2>();
        }
        Ok(unflatten_rows(y, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }
}
