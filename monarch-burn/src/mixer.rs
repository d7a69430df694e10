//! M2-BERT's sequence mixer and gated block-diagonal MLP as burn modules: [`ImplicitFilter`]
//! (with its sine [`FilterMlp`]s), [`M2SequenceMixer`], [`GatedMlp`] and [`M2BertLayer`],
//! written in burn tensor ops so burn's autodiff gives every gradient.
//!
//! The math, the parameter layout and the error messages are the core crate's
//! ([`monarch::mixer`]); inputs are `(batch, L, H)` as there. Dense linears are
//! [`burn::nn::Linear`] (weight stored `(in, out)`, the transpose of the core's `(out, in)`);
//! block-diagonal ones are [`BlockDiagLinear`] (blocks out×in, as the core's).
//!
//! burn has no FFT, so the bidirectional long convolution is computed with dense real DFT
//! matrices of length `2L`, shared by every channel (see [`long_conv`]).
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use monarch_burn::mixer::M2BertLayer;
//! let device = Device::flex();
//! let core = monarch::mixer::M2BertLayer::<f32>::random(8, 16, 16, 4, 0).unwrap();
//! let layer = M2BertLayer::from_core(&core, &device);
//! let y = layer.forward(Tensor::<3>::ones([2, 12, 8], &device)); // L = 12 ≤ l_max = 16
//! assert_eq!(y.dims(), [2, 12, 8]);
//! assert!(layer.try_forward(Tensor::<3>::ones([1, 17, 8], &device)).is_err()); // L > l_max
//! ```

use crate::convert::{array_from_tensor, tensor_from_array};
use crate::error::expect_ok;
use crate::linear::BlockDiagLinear;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::{Error, Result};

/// A [`burn::nn::Linear`] holding the core's dense layer (`W` transposed to burn's `(in, out)`).
fn linear_from_core(core: &monarch::mixer::nn::Linear<f32>, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(tensor_from_array(core.weight.t(), device)),
        bias: core
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(tensor_from_array(b.view(), device))),
    }
}

/// The core's dense layer from a [`burn::nn::Linear`] (`W` back to `(out, in)`).
fn linear_to_core(l: &Linear) -> Result<monarch::mixer::nn::Linear<f32>> {
    let w: Array2<f32> = array_from_tensor(l.weight.val())?;
    let bias: Option<Array1<f32>> = l
        .bias
        .as_ref()
        .map(|b| array_from_tensor(b.val()))
        .transpose()?;
    monarch::mixer::nn::Linear::new(w.reversed_axes().as_standard_layout().into_owned(), bias)
}

/// Output width of a [`burn::nn::Linear`] (its weight is `(in, out)`).
fn linear_out(l: &Linear) -> usize {
    l.weight.dims()[1]
}

/// The sine-activated MLP of one filter direction (the core's
/// [`FilterMlp`](monarch::mixer::FilterMlp)): a sine `sin(w_mod·freq·x)` follows every layer
/// but the last.
#[derive(Module, Debug)]
pub struct FilterMlp {
    /// The linear layers, in order (`emb_dim → order`, `order → order`…, `order → H` without
    /// bias).
    pub layers: Vec<Linear>,
}

impl FilterMlp {
    /// The same MLP as burn modules, parameters copied unchanged.
    pub fn from_core(core: &monarch::mixer::FilterMlp<f32>, device: &Device) -> Self {
        FilterMlp {
            layers: core
                .layers()
                .iter()
                .map(|l| linear_from_core(l, device))
                .collect(),
        }
    }

    /// The parameters as the core's MLP.
    ///
    /// # Errors
    /// As [`monarch::mixer::FilterMlp::new`] if the layers were replaced by ones that do not
    /// chain.
    pub fn to_core(&self) -> Result<monarch::mixer::FilterMlp<f32>> {
        monarch::mixer::FilterMlp::new(
            self.layers
                .iter()
                .map(linear_to_core)
                .collect::<Result<_>>()?,
        )
    }

    /// The MLP on positional features `z` `(L, emb_dim)`, with the sine frequencies
    /// `w_freq = w_mod·freq` `(order,)`; returns `(L, H)`.
    pub fn forward(&self, z: Tensor<2>, w_freq: Tensor<1>) -> Tensor<2> {
        let n = self.layers.len();
        let mut h = z;
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer.forward(h);
            h = if i + 1 < n {
                (a * w_freq.clone().unsqueeze_dim::<2>(0)).sin()
            } else {
                a
            };
        }
        h
    }
}

/// M2-BERT's implicit long-convolution filter (the core's
/// [`ImplicitFilter`](monarch::mixer::ImplicitFilter)): kernels generated from positional
/// features by sine MLPs, times the modulation `exp(−t·|δ_h|) + shift`.
///
/// `z`, both MLPs, `freq` and `bias` (`D`) are trained; `t`, `deltas`, `w_mod` and `shift` are
/// fixed.
#[derive(Module, Debug)]
pub struct ImplicitFilter {
    /// Positional features `(l_max, emb_dim)`.
    pub z: Param<Tensor<2>>,
    /// Normalised time `(l_max,)` (a fixed buffer).
    pub t: Tensor<1>,
    /// The MLP producing `k_fwd`.
    pub mlp_fwd: FilterMlp,
    /// The MLP producing `k_rev` (bidirectional filters only).
    pub mlp_rev: Option<FilterMlp>,
    /// Sine frequencies `(order,)`, shared by every sine layer of both MLPs.
    pub freq: Param<Tensor<1>>,
    /// Fixed multiplier of `freq`.
    pub w_mod: f32,
    /// Decay rates `δ` `(H,)` (a fixed buffer).
    pub deltas: Tensor<1>,
    /// Added to the decay.
    pub shift: f32,
    /// Skip weights `D` `(H,)` of the convolution that uses these kernels.
    pub bias: Param<Tensor<1>>,
}

impl ImplicitFilter {
    /// A seeded filter with the core's initialisation ([`monarch::mixer::ImplicitFilter::random`]).
    ///
    /// # Errors
    /// As the core's constructor.
    pub fn random(
        channels: usize,
        l_max: usize,
        order: usize,
        emb_dim: usize,
        bidirectional: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let core = monarch::mixer::ImplicitFilter::<f32>::random(
            channels,
            l_max,
            order,
            emb_dim,
            bidirectional,
            seed,
        )?;
        Ok(Self::from_core(&core, device))
    }

    /// The same filter as a burn module, parameters and buffers copied unchanged.
    pub fn from_core(core: &monarch::mixer::ImplicitFilter<f32>, device: &Device) -> Self {
        ImplicitFilter {
            z: Param::from_tensor(tensor_from_array(core.z().view(), device)),
            t: tensor_from_array(core.t().view(), device),
            mlp_fwd: FilterMlp::from_core(core.mlp_fwd(), device),
            mlp_rev: core.mlp_rev().map(|m| FilterMlp::from_core(m, device)),
            freq: Param::from_tensor(tensor_from_array(core.freq().view(), device)),
            w_mod: core.w_mod(),
            deltas: tensor_from_array(core.deltas().view(), device),
            shift: core.shift(),
            bias: Param::from_tensor(tensor_from_array(core.bias().view(), device)),
        }
    }

    /// The parameters as the core's filter.
    ///
    /// # Errors
    /// As [`monarch::mixer::ImplicitFilter::new`] if parameters were replaced by ones of other
    /// shapes.
    pub fn to_core(&self) -> Result<monarch::mixer::ImplicitFilter<f32>> {
        monarch::mixer::ImplicitFilter::new(
            array_from_tensor(self.z.val())?,
            array_from_tensor(self.t.clone())?,
            self.mlp_fwd.to_core()?,
            self.mlp_rev.as_ref().map(FilterMlp::to_core).transpose()?,
            array_from_tensor(self.freq.val())?,
            self.w_mod,
            array_from_tensor(self.deltas.clone())?,
            self.shift,
            array_from_tensor(self.bias.val())?,
        )
    }

    /// Number of channels `H`.
    pub fn channels(&self) -> usize {
        self.deltas.dims()[0]
    }

    /// Longest sequence the filter was built for.
    pub fn l_max(&self) -> usize {
        self.z.dims()[0]
    }

    /// True if it also generates `k_rev`.
    pub fn is_bidirectional(&self) -> bool {
        self.mlp_rev.is_some()
    }

    fn check_len(&self, l: usize) -> Result<()> {
        if l == 0 {
            return Err(Error::zero("ImplicitFilter: sequence length"));
        }
        if l > self.l_max() {
            return Err(Error::TooLarge {
                context: "ImplicitFilter: sequence length vs l_max".into(),
                value: l,
                max: self.l_max(),
            });
        }
        Ok(())
    }

    /// The kernels `(k_fwd, k_rev)` for sequence length `l ≤ l_max`, each `(H, l)`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `l > l_max`, [`Error::ZeroSize`] if `l == 0`.
    pub fn kernels(&self, l: usize) -> Result<(Tensor<2>, Option<Tensor<2>>)> {
        self.check_len(l)?;
        let z = self.z.val().narrow(0, 0, l);
        let t = self.t.clone().narrow(0, 0, l).unsqueeze_dim::<2>(1);
        let d = self.deltas.clone().abs().unsqueeze_dim::<2>(0);
        // exp(−t·|δ|) + shift, (l, H).
        let md = (t * d).neg().exp().add_scalar(self.shift);
        let w_freq = self.freq.val().mul_scalar(self.w_mod);
        let one =
            |mlp: &FilterMlp| (mlp.forward(z.clone(), w_freq.clone()) * md.clone()).transpose();
        let kf = one(&self.mlp_fwd);
        let kr = self.mlp_rev.as_ref().map(one);
        Ok((kf, kr))
    }
}

/// Dense real DFT matrices of length `N = 2L` for linear convolutions of length `L`: only the
/// `M = L + 1` non-redundant frequencies of a real signal are kept, and only the rows (and
/// inverse columns) that a zero-padded length-`L` signal touches. All are `O(L²)` and shared by
/// every channel and batch row.
struct DftPlan {
    /// `cos(2πks/N)`, `(L, M)`, for signals at positions `s = 0..L`.
    cos_u: Tensor<2>,
    /// `sin(2πks/N)`, `(L, M)`.
    sin_u: Tensor<2>,
    /// `cos(2πk(N−1−m)/N)`, `(L, M)`: `k_rev[m]` sits at position `N−1−m` of the combined
    /// circular kernel `pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0))`.
    cos_r: Tensor<2>,
    /// `sin(2πk(N−1−m)/N)`, `(L, M)`.
    sin_r: Tensor<2>,
    /// `w_k/N · cos(2πkt/N)`, `(M, L)`, `w_0 = w_L = 1`, else 2 (conjugate symmetry).
    icos: Tensor<2>,
    /// `w_k/N · sin(2πkt/N)`, `(M, L)`.
    isin: Tensor<2>,
}

impl DftPlan {
    fn new(l: usize, device: &Device) -> Self {
        let n = 2 * l;
        let m = l + 1;
        // Angles reduced modulo N in integers and evaluated in f64: twiddles exact to f32.
        let angle =
            |k: usize, p: usize| 2.0 * std::f64::consts::PI * ((k * p) % n) as f64 / n as f64;
        let build = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f64| {
            let v: Vec<f32> = (0..rows * cols)
                .map(|i| f(i / cols, i % cols) as f32)
                .collect();
            Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), device)
        };
        let w = |k: usize| if k == 0 || k == l { 1.0 } else { 2.0 } / n as f64;
        DftPlan {
            cos_u: build(l, m, &|s, k| angle(k, s).cos()),
            sin_u: build(l, m, &|s, k| angle(k, s).sin()),
            cos_r: build(l, m, &|j, k| angle(k, n - 1 - j).cos()),
            sin_r: build(l, m, &|j, k| angle(k, n - 1 - j).sin()),
            icos: build(m, l, &|k, t| w(k) * angle(k, t).cos()),
            isin: build(m, l, &|k, t| w(k) * angle(k, t).sin()),
        }
    }
}

/// The bidirectional long convolution of the core's [`LongConv`](monarch::mixer::LongConv) on
/// `x` `(batch, L, H)`: `y[t] = Σ_{s≤t} k_fwd[t−s]·x[s] + Σ_{s>t} k_rev[s−t−1]·x[s] + D·x[t]`
/// per channel, kernels `(H, L)`, `D` `(H,)`; `k_rev = None` is causal.
///
/// It is the circular convolution of length `2L` with the combined kernel
/// `pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0))` (the core's and M2-BERT's), computed with
/// dense real DFT matrices: spectra of `x` and of the kernels as GEMMs against `(L, L+1)`
/// cosine and sine matrices, a complex product per channel, and the real inverse as a GEMM
/// against `(L+1, L)` matrices. Why DFT matrices and not a Toeplitz product: a Toeplitz matrix
/// per channel holds `H·L²` values (3·10⁹ for `H = 768`, `L = 2048`), the DFT matrices `O(L²)`
/// shared by all channels; both are exact to f32 rounding (the twiddles are computed in f64),
/// and the products stay GEMM-shaped, which is what every burn backend is fast at.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the kernels are not `(H, L)` or `D` not `(H,)`.
pub fn long_conv(
    x: Tensor<3>,
    k_fwd: Tensor<2>,
    k_rev: Option<Tensor<2>>,
    d: Tensor<1>,
) -> Result<Tensor<3>> {
    let [_, l, _] = x.dims();
    if l == 0 {
        return Err(Error::zero("long_conv: sequence length"));
    }
    let plan = DftPlan::new(l, &x.device());
    long_conv_with(&plan, x, k_fwd, k_rev, d)
}

fn long_conv_with(
    plan: &DftPlan,
    x: Tensor<3>,
    k_fwd: Tensor<2>,
    k_rev: Option<Tensor<2>>,
    d: Tensor<1>,
) -> Result<Tensor<3>> {
    let [b, l, h] = x.dims();
    let ctx = "long_conv";
    if k_fwd.dims() != [h, l] {
        return Err(Error::shape(
            format!("{ctx}: k_fwd (H, L)"),
            (h, l),
            k_fwd.dims(),
        ));
    }
    if let Some(kr) = &k_rev {
        if kr.dims() != [h, l] {
            return Err(Error::shape(
                format!("{ctx}: k_rev (H, L)"),
                (h, l),
                kr.dims(),
            ));
        }
    }
    if d.dims() != [h] {
        return Err(Error::shape(format!("{ctx}: D (H,)"), h, d.dims()[0]));
    }
    let m = l + 1;
    let rows = x.clone().swap_dims(1, 2).reshape([b * h, l]);
    // Spectra with the sign of the imaginary part flipped: X = Xr − i·Xs.
    let xr = rows.clone().matmul(plan.cos_u.clone()).reshape([b, h, m]);
    let xs = rows.matmul(plan.sin_u.clone()).reshape([b, h, m]);
    let mut kr = k_fwd.clone().matmul(plan.cos_u.clone());
    let mut ks = k_fwd.matmul(plan.sin_u.clone());
    if let Some(rev) = k_rev {
        kr = kr + rev.clone().matmul(plan.cos_r.clone());
        ks = ks + rev.matmul(plan.sin_r.clone());
    }
    let kr = kr.unsqueeze_dim::<3>(0);
    let ks = ks.unsqueeze_dim::<3>(0);
    // P = X·K with P = Pr − i·Ps.
    let pr = xr.clone() * kr.clone() - xs.clone() * ks.clone();
    let ps = xr * ks + xs * kr;
    // Re(IDFT): y[t] = Σ_k w_k/N (Pr cos + Ps sin).
    let y = pr.reshape([b * h, m]).matmul(plan.icos.clone())
        + ps.reshape([b * h, m]).matmul(plan.isin.clone());
    let y = y.reshape([b, h, l]).swap_dims(1, 2);
    Ok(y + x * d.reshape([1, 1, h]))
}

/// M2-BERT's sequence mixer (the core's [`M2SequenceMixer`](monarch::mixer::M2SequenceMixer)),
/// input `u` `(batch, L, H)`, `L ≤ l_max`:
/// `p = in_linear(u)` (`H → 3H`); causal depthwise short conv, kernel 3,
/// `uc[t] = b + w₂·p[t] + w₁·p[t−1] + w₀·p[t−2]`; split `x1, x2, v`, `v ← v ⊙ x1`;
/// `y = long_conv(k_fwd, k_rev, D)(v) ⊙ x2`, plus `long_conv₂(u)` with `filter2` if present;
/// `out = out_linear(y)`.
///
/// Bad input: [`try_forward`](Self::try_forward) returns the core's [`Error`];
/// [`forward`](Self::forward) panics with its message (burn's module convention).
#[derive(Module, Debug)]
pub struct M2SequenceMixer {
    /// `H → 3H` with bias.
    pub in_linear: Linear,
    /// Depthwise short-conv weights `(3H, 3)` (PyTorch's `(3H, 1, 3)` squeezed).
    pub short_conv_weight: Param<Tensor<2>>,
    /// Short-conv bias `(3H,)`.
    pub short_conv_bias: Param<Tensor<1>>,
    /// Generates `k_fwd`, `k_rev` and holds `D` (its `bias`).
    pub filter: ImplicitFilter,
    /// The residual long convolution's filter, if enabled.
    pub filter2: Option<ImplicitFilter>,
    /// `H → H` with bias.
    pub out_linear: Linear,
}

impl M2SequenceMixer {
    /// A seeded mixer with the core's initialisation
    /// ([`monarch::mixer::M2SequenceMixer::random`]).
    ///
    /// # Errors
    /// As the core's constructor.
    pub fn random(
        hidden: usize,
        l_max: usize,
        residual_long_conv: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let core = monarch::mixer::M2SequenceMixer::<f32>::random(
            hidden,
            l_max,
            residual_long_conv,
            seed,
        )?;
        Ok(Self::from_core(&core, device))
    }

    /// The same mixer as a burn module, parameters copied unchanged.
    pub fn from_core(core: &monarch::mixer::M2SequenceMixer<f32>, device: &Device) -> Self {
        M2SequenceMixer {
            in_linear: linear_from_core(core.in_linear(), device),
            short_conv_weight: Param::from_tensor(tensor_from_array(
                core.short_conv_weight().view(),
                device,
            )),
            short_conv_bias: Param::from_tensor(tensor_from_array(
                core.short_conv_bias().view(),
                device,
            )),
            filter: ImplicitFilter::from_core(core.filter(), device),
            filter2: core.filter2().map(|f| ImplicitFilter::from_core(f, device)),
            out_linear: linear_from_core(core.out_linear(), device),
        }
    }

    /// The parameters as the core's mixer (computing its long convolutions with the core's
    /// default method).
    ///
    /// # Errors
    /// As [`monarch::mixer::M2SequenceMixer::new`] if parameters were replaced by ones of other
    /// shapes.
    pub fn to_core(&self) -> Result<monarch::mixer::M2SequenceMixer<f32>> {
        monarch::mixer::M2SequenceMixer::new(
            linear_to_core(&self.in_linear)?,
            array_from_tensor(self.short_conv_weight.val())?,
            array_from_tensor(self.short_conv_bias.val())?,
            self.filter.to_core()?,
            self.filter2
                .as_ref()
                .map(ImplicitFilter::to_core)
                .transpose()?,
            linear_to_core(&self.out_linear)?,
        )
    }

    /// Hidden width `H`.
    pub fn hidden(&self) -> usize {
        linear_out(&self.out_linear)
    }

    /// Applies the mixer to `u` `(batch, L, H)`.
    ///
    /// # Errors
    /// As the core's `forward`: [`Error::ShapeMismatch`] for a wrong width,
    /// [`Error::TooLarge`] if `L > l_max`, [`Error::ZeroSize`] for `L = 0`.
    pub fn try_forward(&self, u: Tensor<3>) -> Result<Tensor<3>> {
        let ctx = "M2SequenceMixer::forward";
        let [b, l, h] = u.dims();
        if l == 0 {
            return Err(Error::zero(format!("{ctx}: sequence length")));
        }
        let hh = self.hidden();
        if h != hh {
            return Err(Error::shape(
                format!("{ctx}: input (batch, L, H)"),
                (b, l, hh),
                (b, l, h),
            ));
        }
        // Kernels first: they carry the L > l_max check.
        let (kf, kr) = self.filter.kernels(l)?;
        let k2 = self.filter2.as_ref().map(|f| f.kernels(l)).transpose()?;
        let device = u.device();
        let p = self.in_linear.forward(u.clone());
        let h3 = 3 * h;
        let w = self.short_conv_weight.val();
        let tap = |j: usize| w.clone().narrow(1, j, 1).reshape([1, 1, h3]);
        let padded = Tensor::cat(vec![Tensor::zeros([b, 2, h3], &device), p.clone()], 1);
        let uc = self.short_conv_bias.val().reshape([1, 1, h3])
            + p * tap(2)
            + padded.clone().narrow(1, 1, l) * tap(1)
            + padded.narrow(1, 0, l) * tap(0);
        let x1 = uc.clone().narrow(2, 0, h);
        let x2 = uc.clone().narrow(2, h, h);
        let v = uc.narrow(2, 2 * h, h) * x1;
        let plan = DftPlan::new(l, &device);
        let mut y = long_conv_with(&plan, v, kf, kr, self.filter.bias.val())? * x2;
        if let (Some(f2), Some((kf2, kr2))) = (&self.filter2, k2) {
            y = y + long_conv_with(&plan, u, kf2, kr2, f2.bias.val())?;
        }
        Ok(self.out_linear.forward(y))
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// On the inputs for which `try_forward` returns an error.
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        expect_ok(self.try_forward(u))
    }
}

/// M2-BERT's dimension mixer (the core's [`GatedMlp`](monarch::mixer::GatedMlp)) on rows of
/// width `H`: `a = BD(gated)·h` (`H → 2I`, no bias), `m = GELU(a[..I]) ⊙ a[I..]` (exact erf
/// GELU), `o = BD(wo)·m + b`, `out = LayerNorm(o + h)` (post-LayerNorm, eps `1e-12` in
/// M2-BERT).
///
/// Bad input follows [`M2SequenceMixer`]'s rule.
#[derive(Module, Debug)]
pub struct GatedMlp {
    /// `H → 2I` blocks `(nb, 2I/nb, H/nb)`, no bias.
    pub gated: BlockDiagLinear,
    /// `I → H` blocks `(nb, H/nb, I/nb)` with the bias `(H,)`.
    pub wo: BlockDiagLinear,
    /// LayerNorm scale `(H,)`.
    pub ln_weight: Param<Tensor<1>>,
    /// LayerNorm shift `(H,)`.
    pub ln_bias: Param<Tensor<1>>,
    /// Added to the variance (the core's f32 `eps`, widened).
    pub ln_eps: f64,
}

impl GatedMlp {
    /// A seeded layer with the core's initialisation ([`monarch::mixer::GatedMlp::random`]).
    ///
    /// # Errors
    /// As the core's constructor.
    pub fn random(
        hidden: usize,
        intermediate: usize,
        nblocks: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let core = monarch::mixer::GatedMlp::<f32>::random(hidden, intermediate, nblocks, seed)?;
        Ok(Self::from_core(&core, device))
    }

    /// The same layer as a burn module, parameters copied unchanged.
    pub fn from_core(core: &monarch::mixer::GatedMlp<f32>, device: &Device) -> Self {
        let ln = core.ln();
        GatedMlp {
            gated: BlockDiagLinear {
                weight: Param::from_tensor(tensor_from_array(core.gated().weights(), device)),
                bias: None,
            },
            wo: BlockDiagLinear {
                weight: Param::from_tensor(tensor_from_array(core.wo().weights(), device)),
                bias: Some(Param::from_tensor(tensor_from_array(
                    core.wo_bias().view(),
                    device,
                ))),
            },
            ln_weight: Param::from_tensor(tensor_from_array(ln.weight.view(), device)),
            ln_bias: Param::from_tensor(tensor_from_array(ln.bias.view(), device)),
            ln_eps: f64::from(ln.eps),
        }
    }

    /// The parameters as the core's layer.
    ///
    /// # Errors
    /// As [`monarch::mixer::GatedMlp::new`] if parameters were replaced by ones of other shapes
    /// (or `wo` lost its bias).
    pub fn to_core(&self) -> Result<monarch::mixer::GatedMlp<f32>> {
        let gated: Array3<f32> = array_from_tensor(self.gated.weight.val())?;
        let wo: Array3<f32> = array_from_tensor(self.wo.weight.val())?;
        let wo_bias: Array1<f32> = match &self.wo.bias {
            Some(b) => array_from_tensor(b.val())?,
            None => return Err(Error::invalid("GatedMlp::to_core: wo has no bias")),
        };
        let ln = monarch::mixer::nn::LayerNorm::from_params(
            array_from_tensor(self.ln_weight.val())?,
            array_from_tensor(self.ln_bias.val())?,
            self.ln_eps as f32,
        )?;
        monarch::mixer::GatedMlp::new(gated, wo, wo_bias, ln)
    }

    /// Hidden width `H`.
    pub fn hidden(&self) -> usize {
        self.gated.in_features()
    }

    /// Intermediate width `I`.
    pub fn intermediate(&self) -> usize {
        self.wo.in_features()
    }

    /// Applies the layer over the last axis of `h` (any leading axes).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the last axis of `h` is not `H`.
    pub fn try_forward<const D: usize>(&self, h: Tensor<D>) -> Result<Tensor<D>> {
        let found = h.dims()[D - 1];
        if found != self.hidden() {
            return Err(Error::shape(
                "GatedMlp::forward: input columns (H)",
                self.hidden(),
                found,
            ));
        }
        let i = self.intermediate();
        let a = self.gated.try_forward(h.clone())?;
        let m = gelu(a.clone().narrow(D - 1, 0, i)) * a.narrow(D - 1, i, i);
        let x = self.wo.try_forward(m)? + h;
        // LayerNorm over the last axis, biased variance.
        let xc = x.clone() - x.mean_dim(D - 1);
        let var = (xc.clone() * xc.clone()).mean_dim(D - 1);
        let rstd = var.add_scalar(self.ln_eps).sqrt().recip();
        Ok(xc * rstd * self.ln_weight.val().unsqueeze::<D>() + self.ln_bias.val().unsqueeze::<D>())
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// If the last axis of `h` is not `H`.
    pub fn forward<const D: usize>(&self, h: Tensor<D>) -> Tensor<D> {
        expect_ok(self.try_forward(h))
    }
}

/// One M2-BERT layer (the core's [`M2BertLayer`](monarch::mixer::M2BertLayer)):
/// [`M2SequenceMixer`] then [`GatedMlp`], whose post-LayerNorm carries the layer's only
/// residual.
///
/// Bad input follows [`M2SequenceMixer`]'s rule.
#[derive(Module, Debug)]
pub struct M2BertLayer {
    /// Sequence mixing.
    pub mixer: M2SequenceMixer,
    /// Dimension mixing with the post-LayerNorm.
    pub mlp: GatedMlp,
}

impl M2BertLayer {
    /// A seeded layer with the core's initialisation ([`monarch::mixer::M2BertLayer::random`]).
    ///
    /// # Errors
    /// As the core's constructor.
    pub fn random(
        hidden: usize,
        l_max: usize,
        intermediate: usize,
        nblocks: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let core =
            monarch::mixer::M2BertLayer::<f32>::random(hidden, l_max, intermediate, nblocks, seed)?;
        Ok(Self::from_core(&core, device))
    }

    /// The same layer as a burn module, parameters copied unchanged.
    pub fn from_core(core: &monarch::mixer::M2BertLayer<f32>, device: &Device) -> Self {
        M2BertLayer {
            mixer: M2SequenceMixer::from_core(core.mixer(), device),
            mlp: GatedMlp::from_core(core.mlp(), device),
        }
    }

    /// The parameters as the core's layer.
    ///
    /// # Errors
    /// As [`M2SequenceMixer::to_core`], [`GatedMlp::to_core`] and
    /// [`monarch::mixer::M2BertLayer::new`].
    pub fn to_core(&self) -> Result<monarch::mixer::M2BertLayer<f32>> {
        monarch::mixer::M2BertLayer::new(self.mixer.to_core()?, self.mlp.to_core()?)
    }

    /// `mlp(mixer(u))` for `u` `(batch, L, H)`.
    ///
    /// # Errors
    /// As [`M2SequenceMixer::try_forward`].
    pub fn try_forward(&self, u: Tensor<3>) -> Result<Tensor<3>> {
        let a = self.mixer.try_forward(u)?;
        self.mlp.try_forward(a)
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// On the inputs for which `try_forward` returns an error.
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        expect_ok(self.try_forward(u))
    }
}
