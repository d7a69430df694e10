//! Group-and-Shuffle orthogonal matrices ([`OrthGs`]) and GSOFT fine-tuning layers
//! ([`GsoftLinear`], [`DoubleGsoft`]) as burn modules, following the core's [`monarch::gs`]:
//! `Q = (P^{m−1})ᵀ · BD_m · P ⋯ P · BD_1`, orthogonal `b × b` blocks from unconstrained
//! parameters `A` by `K = (A − Aᵀ)/2` and Cayley `(I + K)(I − K)⁻¹` or `exp(K)`.
//!
//! Everything is tensor ops, so burn's autodiff differentiates the orthogonal map too: Cayley
//! is a Gauss–Jordan solve `(I − K)⁻¹(I + K)` without pivoting (safe: every leading block of
//! `I − K` has symmetric part `I`, so no pivot vanishes), `exp` a degree-18 Taylor polynomial
//! after scaling to 1-norm ≤ ½, then squaring.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use monarch::gs::OrthMap;
//! use monarch_burn::GsoftLinear;
//! let device = Device::flex();
//! let base = LinearConfig::new(16, 8).init(&device);
//! let layer = GsoftLinear::new(base.clone(), 4, 2, OrthMap::Cayley, &device).unwrap();
//! let x = Tensor::<2>::ones([2, 16], &device);
//! // Q = I and s = 1 at initialisation: the base layer.
//! let d: f32 = (layer.forward(x.clone()) - base.forward(x)).abs().max().into_scalar();
//! assert!(d < 1e-6);
//! ```

use crate::adapters::{base_from_core, base_to_core};
use crate::convert::{array_from_tensor, tensor_from_array};
use crate::error::{expect_ok, last_dim};
use crate::linear::{blockdiag_matmul, flatten_rows, unflatten_rows};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use monarch::gs::OrthMap;
use monarch::ndarray::Array3;
use monarch::Result;

/// Orthogonal blocks `(k, b, b)` from parameters `(k, b, b)`.
pub fn orthogonal_blocks(a: Tensor<3>, map: OrthMap) -> Tensor<3> {
    let [k, b, _] = a.dims();
    let device = a.device();
    let kk = (a.clone() - a.swap_dims(1, 2)).mul_scalar(0.5);
    let eye = Tensor::<2>::eye(b, &device)
        .unsqueeze::<3>()
        .expand([k, b, b]);
    match map {
        OrthMap::Cayley => solve_no_pivot(eye.clone() - kk.clone(), eye + kk),
        OrthMap::Exp => {
            // One scaling for all blocks (the largest 1-norm): exp is the same function either
            // way and the scaling is piecewise constant, so it carries no gradient.
            let norm: f32 = kk.clone().abs().sum_dim(1).max().into_scalar();
            let s = if norm > 0.5 {
                (norm as f64 / 0.5).log2().ceil() as i32
            } else {
                0
            };
            let x = kk.mul_scalar(0.5f64.powi(s) as f32);
            let mut p = eye.clone();
            for d in (1..=18).rev() {
                p = eye.clone() + x.clone().matmul(p).mul_scalar(1.0 / d as f32);
            }
            for _ in 0..s {
                p = p.clone().matmul(p);
            }
            p
        }
    }
}

/// `A⁻¹ B` for a batch of `(k, b, b)` systems by Gauss–Jordan elimination without pivoting.
fn solve_no_pivot(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    let [k, n, _] = a.dims();
    let device = a.device();
    let mut aug = Tensor::cat(vec![a, b], 2); // (k, n, 2n)
    for c in 0..n {
        let pivot = aug.clone().slice([0..k, c..c + 1, c..c + 1]);
        let prow = aug.clone().slice([0..k, c..c + 1, 0..2 * n]) / pivot;
        let col = aug.clone().slice([0..k, 0..n, c..c + 1]);
        let mut onehot = vec![0.0f32; n];
        onehot[c] = 1.0;
        let e = Tensor::<3>::from_data(TensorData::new(onehot, [1, n, 1]), &device);
        // Row c becomes the normalised pivot row; every other row loses its column-c entry.
        aug = aug - col * prow.clone() + e * prow;
    }
    aug.slice([0..k, 0..n, n..2 * n])
}

/// An orthogonal GS matrix of size `n = k·b` with `m` factors (see the module docs).
#[derive(Module, Debug)]
pub struct OrthGs {
    /// Unconstrained parameters, one `(k, b, b)` tensor per factor, first applied first.
    pub params: Vec<Param<Tensor<3>>>,
    /// Skew-to-orthogonal map.
    #[module(skip)]
    pub map: OrthMap,
    /// Gather index of the shuffle `P` between factors.
    #[module(skip)]
    shuffle: Vec<usize>,
    /// Gather index of the final `(P^{m−1})ᵀ`.
    #[module(skip)]
    p_out: Vec<usize>,
}

fn gather_index(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), device)
}

impl OrthGs {
    /// The core's matrix as a burn module (parameters copied unchanged).
    pub fn from_core(core: &monarch::gs::OrthGs<f32>, device: &Device) -> Self {
        let shuffle = core.shuffle().clone();
        let mut pm = monarch::Perm::identity(core.n());
        for _ in 1..core.nfactors() {
            pm = shuffle.compose(&pm);
        }
        OrthGs {
            params: core
                .params()
                .iter()
                .map(|p| Param::from_tensor(tensor_from_array(p.view(), device)))
                .collect(),
            map: core.map(),
            shuffle: shuffle.index().to_vec(),
            p_out: pm.inverse().index().to_vec(),
        }
    }

    /// The identity (all parameters zero): size `n`, block `b`, `nfactors` factors.
    ///
    /// # Errors
    /// As [`monarch::gs::OrthGs::identity`]: zero sizes, `b` not dividing `n`.
    pub fn identity(
        n: usize,
        block: usize,
        nfactors: usize,
        map: OrthMap,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self::from_core(
            &monarch::gs::OrthGs::identity(n, block, nfactors, map)?,
            device,
        ))
    }

    /// The parameters as the core's matrix.
    ///
    /// # Errors
    /// [`Error::NonFinite`](monarch::Error::NonFinite) if a parameter became NaN/∞, or shapes no longer chain.
    pub fn to_core(&self) -> Result<monarch::gs::OrthGs<f32>> {
        let params = self
            .params
            .iter()
            .map(|p| array_from_tensor::<3, _>(p.val()))
            .collect::<Result<Vec<Array3<f32>>>>()?;
        monarch::gs::OrthGs::from_params(params, self.map)
    }

    /// Size `n`.
    pub fn n(&self) -> usize {
        self.shuffle.len()
    }

    /// `Q x` on the last axis of `x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](monarch::Error::ShapeMismatch) if the last axis of `x` is not `n`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        last_dim("OrthGs: input width (n)", &x, self.n())?;
        let (mut h, dims) = flatten_rows(x);
        let device = h.device();
        let shuffle = gather_index(&self.shuffle, &device);
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                h = h.select(1, shuffle.clone());
            }
            h = blockdiag_matmul(h, orthogonal_blocks(p.val(), self.map))?;
        }
        if self.p_out.iter().enumerate().any(|(i, &j)| i != j) {
            h = h.select(1, gather_index(&self.p_out, &device));
        }
        Ok(unflatten_rows(h, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not `n`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }
}

/// The base weight `W0` as burn stores it, `(in, out)`, and the bias.
fn frozen_parts(base: &Linear) -> (Tensor<2>, Option<Tensor<1>>) {
    (
        base.weight.val().detach(),
        base.bias.as_ref().map(|b| b.val().detach()),
    )
}

/// GSOFT: `y = s ⊙ (W0 Q x) + b` over a frozen burn `Linear` (`W0`, `b`).
#[derive(Module, Debug)]
pub struct GsoftLinear {
    /// The frozen base layer.
    pub base: Linear,
    /// The orthogonal GS matrix on the input side.
    pub q: OrthGs,
    /// Per-output scale `s`, `(out,)`, ones at initialisation.
    pub scale: Param<Tensor<1>>,
}

impl GsoftLinear {
    /// GSOFT over `base` with `Q` of block size `block` and `nfactors` factors, at the identity.
    ///
    /// # Errors
    /// As [`monarch::gs::GsoftLinear::new`].
    pub fn new(
        base: Linear,
        block: usize,
        nfactors: usize,
        map: OrthMap,
        device: &Device,
    ) -> Result<Self> {
        let (w, b) = base_to_core(&base)?;
        Ok(Self::from_core(
            &monarch::gs::GsoftLinear::new(w, b, block, nfactors, map)?,
            device,
        ))
    }

    /// The core's layer as a burn module.
    pub fn from_core(core: &monarch::gs::GsoftLinear<f32>, device: &Device) -> Self {
        GsoftLinear {
            base: base_from_core(core.weight(), core.bias(), device),
            q: OrthGs::from_core(core.q(), device),
            scale: Param::from_tensor(tensor_from_array(core.scale().view(), device)),
        }
    }

    /// `s ⊙ (W0 Q x) + b` on the last axis of `x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](monarch::Error::ShapeMismatch) if the last axis of `x` is not the input width.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        let (w, b) = frozen_parts(&self.base);
        last_dim("GsoftLinear: input width", &x, w.dims()[0])?;
        let (x, dims) = flatten_rows(x);
        let mut y = self.q.try_forward(x)?.matmul(w) * self.scale.val().unsqueeze::<2>();
        if let Some(b) = b {
            y = y + b.unsqueeze::<2>();
        }
        Ok(unflatten_rows(y, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not the input width.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }
}

/// Double GSOFT: `y = s ⊙ (Q_out W0 Q_in x) + b` over a frozen burn `Linear`.
#[derive(Module, Debug)]
pub struct DoubleGsoft {
    /// The frozen base layer.
    pub base: Linear,
    /// The orthogonal GS matrix on the input side.
    pub q_in: OrthGs,
    /// The orthogonal GS matrix on the output side.
    pub q_out: OrthGs,
    /// Per-output scale `s`, `(out,)`.
    pub scale: Param<Tensor<1>>,
}

impl DoubleGsoft {
    /// The core's layer as a burn module.
    pub fn from_core(core: &monarch::gs::DoubleGsoft<f32>, device: &Device) -> Self {
        DoubleGsoft {
            base: base_from_core(core.weight(), core.bias(), device),
            q_in: OrthGs::from_core(core.q_in(), device),
            q_out: OrthGs::from_core(core.q_out(), device),
            scale: Param::from_tensor(tensor_from_array(core.scale().view(), device)),
        }
    }

    /// `s ⊙ (Q_out W0 Q_in x) + b` on the last axis of `x`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](monarch::Error::ShapeMismatch) if the last axis of `x` is not the input width.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        let (w, b) = frozen_parts(&self.base);
        last_dim("DoubleGsoft: input width", &x, w.dims()[0])?;
        let (x, dims) = flatten_rows(x);
        let v = self.q_in.try_forward(x)?.matmul(w);
        let mut y = self.q_out.try_forward(v)? * self.scale.val().unsqueeze::<2>();
        if let Some(b) = b {
            y = y + b.unsqueeze::<2>();
        }
        Ok(unflatten_rows(y, dims))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `x` is not the input width.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(x))
    }
}
