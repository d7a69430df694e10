//! MoRe and LoRA adapters over a frozen burn [`Linear`]: `y = W0 x + b + dropout(ΔW x)`, with
//! `ΔW` a rectangular Monarch ([`MoReAdapter`]) or `s·B A` ([`LoraAdapter`]), as the core's
//! [`monarch::more`] defines them (factor layout `blkdiag1 (N, r, ib)`, `blkdiag2 (N, ob, r)`;
//! `A (r, in)`, `B (out, r)`).
//!
//! The base layer is frozen with burn's [`Module::no_grad`]: autodiff still carries the input
//! gradient through it but records no gradient for its weight. `merge` adds `ΔW` into the base
//! weight (then the forward is one dense product) and `unmerge` takes it out again.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use monarch_burn::MoReAdapter;
//! let device = Device::flex();
//! let base = LinearConfig::new(32, 48).init(&device);
//! let mut ad = MoReAdapter::new(base, 4, 2, 0.0, 7, &device).unwrap();
//! let x = Tensor::<2>::ones([3, 32], &device);
//! let before = ad.forward(x.clone());
//! ad.merge().unwrap();
//! let after = ad.forward(x);
//! assert!((before - after).abs().max().into_scalar::<f32>() < 1e-5);
//! ```

use crate::convert::{array_from_tensor, tensor_from_array};
use crate::error::{expect_ok, last_dim};
use crate::linear::{flatten_rows, monarch_matmul, unflatten_rows};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor};
use monarch::more::Adapter;
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::{Error, Result};

/// The base layer's weight as the core's `out × in` matrix and its bias.
pub(crate) fn base_to_core(base: &Linear) -> Result<(Array2<f32>, Option<Array1<f32>>)> {
    // burn's `Linear` stores `(in, out)`; the core (like PyTorch) stores `out × in`.
    let w: Array2<f32> = array_from_tensor(base.weight.val())?;
    let b = base
        .bias
        .as_ref()
        .map(|b| array_from_tensor(b.val()))
        .transpose()?;
    Ok((w.reversed_axes().as_standard_layout().to_owned(), b))
}

/// A frozen burn `Linear` from the core's `out × in` weight and bias.
pub(crate) fn base_from_core(w: &Array2<f32>, b: Option<&Array1<f32>>, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(tensor_from_array(w.t(), device)),
        bias: b.map(|b| Param::from_tensor(tensor_from_array(b.view(), device))),
    }
    .no_grad()
}

fn check_dropout(p: f64, ctx: &str) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(format!(
            "{ctx}: dropout probability {p} is not in [0, 1)"
        )));
    }
    Ok(())
}

/// A MoRe adapter over a frozen burn `Linear` (see the module docs).
#[derive(Module, Debug)]
pub struct MoReAdapter {
    /// The frozen base layer (burn layout: weight `(in, out)`).
    pub base: Linear,
    /// First factor `(N, r, ib)`.
    pub blkdiag1: Param<Tensor<3>>,
    /// Second factor `(N, ob, r)`, zero at initialisation.
    pub blkdiag2: Param<Tensor<3>>,
    /// Dropout on the adapter output (active only when training on an autodiff device).
    pub dropout: Dropout,
    /// Whether `ΔW` is currently added into the base weight.
    pub merged: bool,
}

impl MoReAdapter {
    /// An adapter over `base` with the paper's initialisation (the core's, seeded):
    /// `blkdiag1` uniform in `±1/√ib`, `blkdiag2 = 0`.
    ///
    /// # Errors
    /// As [`monarch::more::MoReAdapter::new`]: zero sizes, `nblocks > in`, a rank above a block's
    /// width, a non-finite base, `dropout` outside `[0, 1)`.
    pub fn new(
        base: Linear,
        nblocks: usize,
        rank: usize,
        dropout: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (w, b) = base_to_core(&base)?;
        let core = monarch::more::MoReAdapter::new(w, b, nblocks, rank, dropout, seed)?;
        Self::from_core(&core, device)
    }

    /// The core's adapter as a burn module (base weight transposed to burn's layout, factors
    /// unchanged). A merged core adapter gives a merged module.
    ///
    /// # Errors
    /// If the core adapter's dropout is not in `[0, 1)` (it cannot be).
    pub fn from_core(core: &monarch::more::MoReAdapter<f32>, device: &Device) -> Result<Self> {
        check_dropout(core.dropout(), "MoReAdapter")?;
        Ok(MoReAdapter {
            base: base_from_core(core.weight(), core.bias(), device),
            blkdiag1: Param::from_tensor(tensor_from_array(core.blkdiag1().view(), device)),
            blkdiag2: Param::from_tensor(tensor_from_array(core.blkdiag2().view(), device)),
            dropout: DropoutConfig::new(core.dropout()).init(),
            merged: core.is_merged(),
        })
    }

    /// The parameters as the core's adapter (unmerged or merged as this one is).
    ///
    /// # Errors
    /// If the parameters no longer have the shapes the core requires.
    pub fn to_core(&self) -> Result<monarch::more::MoReAdapter<f32>> {
        let (w, b) = base_to_core(&self.base)?;
        let b1: Array3<f32> = array_from_tensor(self.blkdiag1.val())?;
        let b2: Array3<f32> = array_from_tensor(self.blkdiag2.val())?;
        let p = self.dropout.prob;
        let core = monarch::more::MoReAdapter::from_factors(
            w.clone(),
            b.clone(),
            b1.clone(),
            b2.clone(),
            p,
        )?;
        if !self.merged {
            return Ok(core);
        }
        // A merged base holds W0 + ΔW, and `from_factors` takes W0: rebuild from it, merge again.
        let w0 = &w - &core.delta_weight();
        let mut core = monarch::more::MoReAdapter::from_factors(w0, b, b1, b2, p)?;
        core.merge()?;
        Ok(core)
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// `ΔW x` on rows `(batch, in)`: zero-pad to `N·ib`, Monarch product, truncate to `out`.
    fn delta_rows(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let [b, n] = x.dims();
        let [nb, _, ib] = self.blkdiag1.dims();
        let x = if nb * ib > n {
            Tensor::cat(
                vec![x.clone(), Tensor::zeros([b, nb * ib - n], &x.device())],
                1,
            )
        } else {
            x
        };
        let y = monarch_matmul(x, self.blkdiag1.val(), self.blkdiag2.val())?;
        let out = self.out_features();
        Ok(if y.dims()[1] > out {
            y.narrow(1, 0, out)
        } else {
            y
        })
    }

    /// `ΔWᵀ` in burn's `(in, out)` layout: the adapter applied to the identity's rows.
    fn delta_weight_t(&self) -> Result<Tensor<2>> {
        let n = self.in_features();
        let eye = Tensor::<2>::eye(n, &self.blkdiag1.device());
        self.delta_rows(eye)
    }

    /// `W0 x + b + dropout(ΔW x)` (after a merge: `(W0 + ΔW) x + b`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the last axis of `x` is not `in_features`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        last_dim("MoReAdapter: input width", &x, self.in_features())?;
        let (x, dims) = flatten_rows(x);
        let y = self.base.forward(x.clone());
        if self.merged {
            return Ok(unflatten_rows(y, dims));
        }
        let a = self.dropout.forward(self.delta_rows(x)?);
        Ok(unflatten_rows(y + a, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }

    /// Adds `ΔW` into the frozen base weight.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if already merged.
    pub fn merge(&mut self) -> Result<()> {
        if self.merged {
            return Err(Error::invalid("MoReAdapter::merge: already merged"));
        }
        let delta = self.delta_weight_t()?.detach();
        self.base.weight = self.base.weight.clone().map(|w| w + delta);
        self.merged = true;
        Ok(())
    }

    /// Subtracts `ΔW` again, restoring the base weight (to rounding).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if not merged.
    pub fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Err(Error::invalid(
                "MoReAdapter::unmerge: the adapter is not merged",
            ));
        }
        let delta = self.delta_weight_t()?.detach();
        self.base.weight = self.base.weight.clone().map(|w| w - delta);
        self.merged = false;
        Ok(())
    }
}

/// A LoRA adapter over a frozen burn `Linear`: `y = W0 x + b + dropout(s·B A x)`.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// The frozen base layer (burn layout: weight `(in, out)`).
    pub base: Linear,
    /// `A`, `(r, in)`.
    pub lora_a: Param<Tensor<2>>,
    /// `B`, `(out, r)`, zero at initialisation.
    pub lora_b: Param<Tensor<2>>,
    /// The scaling `s = α/r`.
    pub scaling: f32,
    /// Dropout on the adapter output (active only when training on an autodiff device).
    pub dropout: Dropout,
    /// Whether `s·B A` is currently added into the base weight.
    pub merged: bool,
}

impl LoraAdapter {
    /// A rank-`rank` adapter with PEFT's initialisation (the core's, seeded), scaling 1.
    ///
    /// # Errors
    /// As [`monarch::more::LoraAdapter::new`].
    pub fn new(
        base: Linear,
        rank: usize,
        dropout: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (w, b) = base_to_core(&base)?;
        let core = monarch::more::LoraAdapter::new(w, b, rank, dropout, seed)?;
        Self::from_core(&core, device)
    }

    /// The core's adapter as a burn module.
    ///
    /// # Errors
    /// If the core adapter's dropout is not in `[0, 1)` (it cannot be).
    pub fn from_core(core: &monarch::more::LoraAdapter<f32>, device: &Device) -> Result<Self> {
        check_dropout(core.dropout(), "LoraAdapter")?;
        Ok(LoraAdapter {
            base: base_from_core(core.weight(), core.bias(), device),
            lora_a: Param::from_tensor(tensor_from_array(core.lora_a().view(), device)),
            lora_b: Param::from_tensor(tensor_from_array(core.lora_b().view(), device)),
            scaling: core.scaling(),
            dropout: DropoutConfig::new(core.dropout()).init(),
            merged: core.is_merged(),
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.base.weight.dims()[1]
    }

    fn delta_weight_t(&self) -> Tensor<2> {
        // (B A)ᵀ = Aᵀ Bᵀ in burn's (in, out) layout.
        self.lora_a
            .val()
            .transpose()
            .matmul(self.lora_b.val().transpose())
            .mul_scalar(self.scaling)
    }

    /// `W0 x + b + dropout(s·B A x)` (after a merge: `(W0 + s·B A) x + b`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the last axis of `x` is not `in_features`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        last_dim("LoraAdapter: input width", &x, self.in_features())?;
        let (x, dims) = flatten_rows(x);
        let y = self.base.forward(x.clone());
        if self.merged {
            return Ok(unflatten_rows(y, dims));
        }
        let a = x
            .matmul(self.lora_a.val().transpose())
            .matmul(self.lora_b.val().transpose())
            .mul_scalar(self.scaling);
        Ok(unflatten_rows(y + self.dropout.forward(a), dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }

    /// Adds `s·B A` into the frozen base weight.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if already merged.
    pub fn merge(&mut self) -> Result<()> {
        if self.merged {
            return Err(Error::invalid("LoraAdapter::merge: already merged"));
        }
        let delta = self.delta_weight_t().detach();
        self.base.weight = self.base.weight.clone().map(|w| w + delta);
        self.merged = true;
        Ok(())
    }

    /// Subtracts `s·B A` again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if not merged.
    pub fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Err(Error::invalid(
                "LoraAdapter::unmerge: the adapter is not merged",
            ));
        }
        let delta = self.delta_weight_t().detach();
        self.base.weight = self.base.weight.clone().map(|w| w - delta);
        self.merged = false;
        Ok(())
    }
}
