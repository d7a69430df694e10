//! Per-channel long convolution, causal or bidirectional, computed three ways: directly
//! (`O(L²)`), through an FFT of length `2L` (`O(L log L)`), and through the DFT written as a
//! complex Monarch (`O(L^1.5)`, GEMM-shaped).
//!
//! Layout is the authors' `(batch, H, L)`. With `k_fwd`, `k_rev` of shape `(H, L)` and `D` of
//! shape `(H,)`:
//! `y[t] = Σ_{s≤t} k_fwd[t−s]·u[s] + Σ_{s>t} k_rev[s−t−1]·u[s] + D·u[t]`;
//! the causal case drops the `k_rev` term. Both are a circular convolution of length `2L` with
//! the combined kernel `kc = pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0))` of M2-BERT's
//! `HyenaFilter.forward`; the zero padding is what makes the circular convolution linear.
//!
//! ```
//! use monarch::mixer::{ConvMethod, LongConv};
//! use monarch::ndarray::{array, Array3};
//! // k_fwd = δ₁ shifts the sequence right by one.
//! let conv = LongConv::causal(array![[0.0, 1.0, 0.0, 0.0]], array![0.0]).unwrap();
//! let u = Array3::from_shape_vec((1, 1, 4), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! for m in [ConvMethod::Direct, ConvMethod::Fft, ConvMethod::MonarchDft] {
//!     let y = conv.forward(u.view(), m).unwrap();
//!     let want = [0.0, 1.0, 2.0, 3.0];
//!     assert!(y.iter().zip(want).all(|(a, b): (&f64, f64)| (a - b).abs() < 1e-12));
//! }
//! ```

use super::fft::is_f32;
use super::nn::check_finite;
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::primitives::scalar::same_type_mut;
use crate::{Monarch, Par, RealScalar, Scalar};
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis};
use num_complex::Complex;
use rayon::prelude::*;
use realfft::{ComplexToReal, FftNum, RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// How a long convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvMethod {
    /// The defining double sum, `O(L²)` per channel.
    Direct,
    /// Real-input FFT of length `2L` (`realfft` over `rustfft`; the complex transform is
    /// [`FftPlan`](super::fft::FftPlan)).
    Fft,
    /// DFT of length `2L` as a complex [`Monarch`] product (`M₁ = F`, `M₂ = F⁻¹`).
    #[default]
    MonarchDft,
}

/// The largest divisor of `n` not above `√n`: the block count of the DFT Monarch of length `n`.
pub fn dft_block_count(n: usize) -> usize {
    let mut best = 1;
    let mut k = 1;
    while k * k <= n {
        if n.is_multiple_of(k) {
            best = k;
        }
        k += 1;
    }
    best
}

/// An unnormalised length-`n` transform pair applied to rows.
pub(crate) enum Spectral<R: RealScalar>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Real-to-complex and back: spectra keep the `n/2 + 1` non-redundant bins, which is all
    /// the convolutions need since every spectrum they multiply or add is of a real signal.
    Fft(RealPlan),
    Monarch {
        fwd: Box<Monarch<Complex<R>>>,
        inv: Box<Monarch<Complex<R>>>,
        sqrt_n: R,
    },
}

impl<R: RealScalar> Spectral<R>
where
    Complex<R>: Scalar<Real = R>,
{
    pub(crate) fn new(method: ConvMethod, n: usize) -> Result<Option<Self>> {
        Ok(match method {
            ConvMethod::Direct => None,
            ConvMethod::Fft => Some(Spectral::Fft(RealPlan::new::<R>(n))),
            ConvMethod::MonarchDft => {
                let k = dft_block_count(n);
                Some(Spectral::Monarch {
                    fwd: Box::new(Monarch::dft_natural_factored(n, k, false)?),
                    inv: Box::new(Monarch::dft_natural_factored(n, k, true)?),
                    sqrt_n: R::from_f64((n as f64).sqrt()),
                })
            }
        })
    }

    fn n(&self) -> usize {
        match self {
            Spectral::Fft(p) => p.len(),
            Spectral::Monarch { fwd, .. } => fwd.in_features(),
        }
    }

    /// Unnormalised DFT of every row of `x`, zero-padded to `n`: all `n` bins for the Monarch
    /// path, the first `n/2 + 1` for the FFT path.
    pub(crate) fn forward(&self, x: ArrayView2<R>) -> Array2<Complex<R>> {
        let n = self.n();
        let zero = Complex::new(R::zero(), R::zero());
        match self {
            Spectral::Fft(plan) => {
                let mut out = Array2::from_elem((x.nrows(), n / 2 + 1), zero);
                match plan {
                    RealPlan::F32(r2c, _) => r2c_rows(r2c.as_ref(), x, &mut out),
                    RealPlan::F64(r2c, _) => r2c_rows(r2c.as_ref(), x, &mut out),
                }
                out
            }
            Spectral::Monarch { fwd, sqrt_n, .. } => {
                let mut buf = Array2::from_elem((x.nrows(), n), zero);
                buf.slice_mut(s![.., ..x.ncols()])
                    .zip_mut_with(&x, |b, &v| *b = Complex::new(v, R::zero()));
                let mut out = fwd.matmul(buf.view()).expect("DFT width is n");
                out.mapv_inplace(|v| Complex::new(v.re * *sqrt_n, v.im * *sqrt_n));
                out
            }
        }
    }

    /// Real part of the inverse DFT (with `1/n`) of every row of a spectrum from
    /// [`forward`](Spectral::forward) (or a product or sum of such spectra).
    pub(crate) fn inverse_real(&self, x: Array2<Complex<R>>) -> Array2<R> {
        match self {
            Spectral::Fft(plan) => {
                let mut out = Array2::zeros((x.nrows(), plan.len()));
                match plan {
                    RealPlan::F32(_, c2r) => c2r_rows(c2r.as_ref(), x.view(), &mut out),
                    RealPlan::F64(_, c2r) => c2r_rows(c2r.as_ref(), x.view(), &mut out),
                }
                out
            }
            Spectral::Monarch { inv, sqrt_n, .. } => {
                let out = inv.matmul(x.view()).expect("DFT width is n");
                out.mapv(|v| v.re / *sqrt_n)
            }
        }
    }
}

/// Real-input transforms of one length in the precision of the `RealScalar` they were made
/// for (see `FftPlan` for why the precision is an enum and not a bound).
pub(crate) enum RealPlan {
    F32(Arc<dyn RealToComplex<f32>>, Arc<dyn ComplexToReal<f32>>),
    F64(Arc<dyn RealToComplex<f64>>, Arc<dyn ComplexToReal<f64>>),
}

impl RealPlan {
    fn new<R: RealScalar>(n: usize) -> Self {
        if is_f32::<R>() {
            let mut p = RealFftPlanner::<f32>::new();
            RealPlan::F32(p.plan_fft_forward(n), p.plan_fft_inverse(n))
        } else {
            let mut p = RealFftPlanner::<f64>::new();
            RealPlan::F64(p.plan_fft_forward(n), p.plan_fft_inverse(n))
        }
    }

    fn len(&self) -> usize {
        match self {
            RealPlan::F32(p, _) => p.len(),
            RealPlan::F64(p, _) => p.len(),
        }
    }
}

const SAME: &str = "real FFT plan made for this scalar type";

/// The first `n/2 + 1` DFT bins of every row of `x` zero-padded to `n`, into `out`.
fn r2c_rows<R: RealScalar, F: FftNum>(
    r2c: &dyn RealToComplex<F>,
    x: ArrayView2<R>,
    out: &mut Array2<Complex<R>>,
) {
    let (n, w) = (r2c.len(), x.ncols());
    let init = || (vec![R::zero(); n], r2c.make_scratch_vec());
    rows_par(x, out, init, |(buf, scratch), src, dst| {
        // realfft uses its input as scratch, so the padding is rewritten for every row.
        buf[..w].iter_mut().zip(&src).for_each(|(b, &v)| *b = v);
        buf[w..].fill(R::zero());
        let (buf, dst) = (
            same_type_mut(buf).expect(SAME),
            same_type_mut(dst).expect(SAME),
        );
        r2c.process_with_scratch(buf, dst, scratch)
            .expect("buffer lengths match the plan");
    });
}

/// Real part of the inverse DFT (with `1/n`) of every row of half-spectra `x`, into `out`.
fn c2r_rows<R: RealScalar, F: FftNum>(
    c2r: &dyn ComplexToReal<F>,
    x: ArrayView2<Complex<R>>,
    out: &mut Array2<R>,
) {
    let n = c2r.len();
    let scale = R::one() / R::from_f64(n as f64);
    let zero = Complex::new(R::zero(), R::zero());
    let init = || (vec![zero; n / 2 + 1], c2r.make_scratch_vec());
    rows_par(x, out, init, |(buf, scratch), src, dst| {
        buf.iter_mut().zip(&src).for_each(|(b, &v)| *b = v);
        // The real part of the full inverse sees only the real parts of the DC and (n even)
        // Nyquist bins, and realfft requires their imaginary parts to be zero.
        buf[0].im = R::zero();
        if n % 2 == 0 {
            buf[n / 2].im = R::zero();
        }
        {
            let (b, d) = (
                same_type_mut(buf).expect(SAME),
                same_type_mut(dst).expect(SAME),
            );
            c2r.process_with_scratch(b, d, scratch)
                .expect("buffer lengths match the plan");
        }
        dst.iter_mut().for_each(|v| *v *= scale);
    });
}

/// Runs `f(state, src_row, dst_row)` on every pair of rows, over rayon when the job is large,
/// with one `init()` state (buffers) per rayon job rather than one per row.
fn rows_par<A: Sync, B: Send + Sync, S>(
    src: ArrayView2<A>,
    dst: &mut Array2<B>,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, ArrayView1<A>, &mut [B]) + Sync + Send,
) {
    let work = dst.len() * 16;
    let run = |st: &mut S, (mut d, a): (ndarray::ArrayViewMut1<B>, ArrayView1<A>)| {
        f(st, a, d.as_slice_mut().expect("standard layout"))
    };
    let (rows_d, rows_s) = (dst.axis_iter_mut(Axis(0)), src.axis_iter(Axis(0)));
    if Par::Rayon.should_split(work) {
        rows_d
            .into_par_iter()
            .zip(rows_s.into_par_iter())
            .for_each_init(init, run);
    } else {
        let mut st = init();
        rows_d.zip(rows_s).for_each(|p| run(&mut st, p));
    }
}

/// A reusable transform plan for convolutions of length `L` (transforms of length `2L`).
///
/// Building the Monarch DFT factors costs `O(L^1.5)` sines and cosines, about as much as one
/// convolution; hot loops build a plan once and call [`LongConv::forward_with`].
pub struct ConvPlan<R: RealScalar>
where
    Complex<R>: Scalar<Real = R>,
{
    method: ConvMethod,
    len: usize,
    spectral: Option<Spectral<R>>,
}

impl<R: RealScalar> ConvPlan<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// Plans `method` for sequences of length `len`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `len == 0`; [`Error::TooLarge`] if `2·len` overflows or its
    /// buffers cannot be allocated.
    pub fn new(method: ConvMethod, len: usize) -> Result<Self> {
        check_nonzero(len, "ConvPlan: sequence length")?;
        // The transforms have length 2·len and complex buffers of that length.
        let size = 2 * std::mem::size_of::<R>();
        let n2 = crate::primitives::error::check_alloc(&[2, len], size, "ConvPlan: 2·len")?;
        Ok(ConvPlan {
            method,
            len,
            spectral: Spectral::new(method, n2)?,
        })
    }
    /// The method planned for.
    pub fn method(&self) -> ConvMethod {
        self.method
    }
    /// The sequence length planned for.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A bank of per-channel long convolutions (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LongConv<R> {
    k_fwd: Array2<R>,
    k_rev: Option<Array2<R>>,
    d: Array1<R>,
}

/// Gradients of `sum(y ⊙ grad_out)` for a [`LongConv`].
#[derive(Debug, Clone, PartialEq)]
pub struct LongConvGrad<R> {
    /// With respect to the input `(batch, H, L)`.
    pub u: Array3<R>,
    /// With respect to `k_fwd`, `(H, L)`.
    pub k_fwd: Array2<R>,
    /// With respect to `k_rev` (bidirectional only).
    pub k_rev: Option<Array2<R>>,
    /// With respect to `D`, `(H,)`.
    pub d: Array1<R>,
}

impl<R: RealScalar> LongConv<R>
where
    Complex<R>: Scalar<Real = R>,
{
    /// A convolution from kernels `(H, L)` and skip weights `(H,)`; `k_rev = None` is causal.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for empty kernels, [`Error::ShapeMismatch`] if the shapes disagree,
    /// [`Error::NonFinite`] for NaN/Inf parameters.
    pub fn new(k_fwd: Array2<R>, k_rev: Option<Array2<R>>, d: Array1<R>) -> Result<Self> {
        let (h, l) = k_fwd.dim();
        check_nonzero(h, "LongConv: channels H (k_fwd rows)")?;
        check_nonzero(l, "LongConv: kernel length L (k_fwd columns)")?;
        if let Some(kr) = &k_rev {
            if kr.dim() != (h, l) {
                return Err(Error::shape(
                    "LongConv: k_rev shape (H, L)",
                    (h, l),
                    kr.dim(),
                ));
            }
            check_finite(kr.iter(), "LongConv: k_rev")?;
        }
        if d.len() != h {
            return Err(Error::shape("LongConv: D length (H)", h, d.len()));
        }
        check_finite(k_fwd.iter(), "LongConv: k_fwd")?;
        check_finite(d.iter(), "LongConv: D")?;
        Ok(LongConv { k_fwd, k_rev, d })
    }

    /// Causal convolution `y[t] = Σ_{s≤t} k[t−s]·u[s] + D·u[t]`.
    ///
    /// # Errors
    /// As [`new`](LongConv::new).
    pub fn causal(k: Array2<R>, d: Array1<R>) -> Result<Self> {
        Self::new(k, None, d)
    }

    /// Bidirectional convolution with `(k_fwd, k_rev, D)` (M2-BERT's).
    ///
    /// # Errors
    /// As [`new`](LongConv::new).
    pub fn bidirectional(k_fwd: Array2<R>, k_rev: Array2<R>, d: Array1<R>) -> Result<Self> {
        Self::new(k_fwd, Some(k_rev), d)
    }

    /// Number of channels `H`.
    pub fn channels(&self) -> usize {
        self.k_fwd.nrows()
    }
    /// Sequence (and kernel) length `L`.
    pub fn len(&self) -> usize {
        self.k_fwd.ncols()
    }
    /// Always false (kernels are non-empty).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// True if there is an anti-causal kernel.
    pub fn is_bidirectional(&self) -> bool {
        self.k_rev.is_some()
    }
    /// Causal kernels `(H, L)`.
    pub fn k_fwd(&self) -> &Array2<R> {
        &self.k_fwd
    }
    /// Anti-causal kernels `(H, L)` if bidirectional.
    pub fn k_rev(&self) -> Option<&Array2<R>> {
        self.k_rev.as_ref()
    }
    /// Skip weights `D`, `(H,)`.
    pub fn d(&self) -> &Array1<R> {
        &self.d
    }

    /// The combined length-`2L` circular kernel `pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0))`.
    pub fn combined_kernel(&self) -> Array2<R> {
        let (h, l) = self.k_fwd.dim();
        let mut kc = Array2::zeros((h, 2 * l));
        kc.slice_mut(s![.., ..l]).assign(&self.k_fwd);
        if let Some(kr) = &self.k_rev {
            kc.slice_mut(s![.., l..]).assign(&kr.slice(s![.., ..;-1]));
        }
        kc
    }

    fn check_u(&self, u: ArrayView3<R>, ctx: &str) -> Result<()> {
        let (b, h, l) = u.dim();
        if (h, l) != (self.channels(), self.len()) {
            return Err(Error::shape(
                format!(
                    "{ctx}: input (batch, H, L) — the sequence length must equal the kernel length"
                ),
                (b, self.channels(), self.len()),
                u.dim(),
            ));
        }
        Ok(())
    }

    /// Applies the convolution to `u` of shape `(batch, H, L)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `u` does not have `H` channels of length `L`;
    /// [`Error::ZeroSize`] for an empty batch.
    pub fn forward(&self, u: ArrayView3<R>, method: ConvMethod) -> Result<Array3<R>> {
        self.check_u(u, "LongConv::forward")?;
        self.forward_with(u, &ConvPlan::new(method, self.len())?)
    }

    fn check_plan(&self, plan: &ConvPlan<R>, ctx: &str) -> Result<()> {
        if plan.len != self.len() {
            return Err(Error::shape(
                format!("{ctx}: plan length"),
                self.len(),
                plan.len,
            ));
        }
        Ok(())
    }

    /// Like [`forward`](LongConv::forward) with a prebuilt [`ConvPlan`].
    ///
    /// # Errors
    /// As [`forward`](LongConv::forward); [`Error::ShapeMismatch`] if the plan's length differs.
    pub fn forward_with(&self, u: ArrayView3<R>, plan: &ConvPlan<R>) -> Result<Array3<R>> {
        self.check_u(u, "LongConv::forward")?;
        self.check_plan(plan, "LongConv::forward_with")?;
        let (b, h, l) = u.dim();
        let rows = to_rows(u);
        let mut y = match &plan.spectral {
            None => self.direct(rows.view()),
            Some(sp) => {
                let uf = sp.forward(rows.view());
                let kf = sp.forward(self.combined_kernel().view());
                let mut p = uf;
                for (r, mut row) in p.rows_mut().into_iter().enumerate() {
                    row *= &kf.row(r % h);
                }
                sp.inverse_real(p)
                    .slice_move(s![.., ..l])
                    .as_standard_layout()
                    .into_owned()
            }
        };
        for (r, (mut yr, ur)) in y.rows_mut().into_iter().zip(rows.rows()).enumerate() {
            let d = self.d[r % h];
            yr.zip_mut_with(&ur, |a, &v| *a += d * v);
        }
        Ok(y.into_shape_with_order((b, h, l)).expect("rows reshape"))
    }

    fn direct(&self, rows: ArrayView2<R>) -> Array2<R> {
        let (nr, l) = rows.dim();
        let h = self.channels();
        let mut y = Array2::zeros((nr, l));
        for (r, (ur, mut yr)) in rows.rows().into_iter().zip(y.rows_mut()).enumerate() {
            let kf = self.k_fwd.row(r % h);
            let kr = self.k_rev.as_ref().map(|k| k.row(r % h));
            for t in 0..l {
                let mut acc = R::zero();
                for s in 0..=t {
                    acc += kf[t - s] * ur[s];
                }
                if let Some(kr) = &kr {
                    for s in t + 1..l {
                        acc += kr[s - t - 1] * ur[s];
                    }
                }
                yr[t] = acc;
            }
        }
        y
    }

    /// VJP of [`forward`](LongConv::forward): gradients of `sum(y ⊙ grad_out)` with respect to
    /// the input and every kernel, computed with the same `method`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes do not fit.
    pub fn vjp(
        &self,
        u: ArrayView3<R>,
        grad_out: ArrayView3<R>,
        method: ConvMethod,
    ) -> Result<LongConvGrad<R>> {
        self.check_u(u, "LongConv::vjp")?;
        self.vjp_with(u, grad_out, &ConvPlan::new(method, self.len())?)
    }

    /// Like [`vjp`](LongConv::vjp) with a prebuilt [`ConvPlan`].
    ///
    /// # Errors
    /// As [`vjp`](LongConv::vjp); [`Error::ShapeMismatch`] if the plan's length differs.
    pub fn vjp_with(
        &self,
        u: ArrayView3<R>,
        grad_out: ArrayView3<R>,
        plan: &ConvPlan<R>,
    ) -> Result<LongConvGrad<R>> {
        self.check_u(u, "LongConv::vjp")?;
        self.check_plan(plan, "LongConv::vjp_with")?;
        if grad_out.dim() != u.dim() {
            return Err(Error::shape(
                "LongConv::vjp: grad_out shape",
                u.dim(),
                grad_out.dim(),
            ));
        }
        let (b, h, l) = u.dim();
        let ur = to_rows(u);
        let gr = to_rows(grad_out);
        let bidir = self.is_bidirectional();
        let (mut gu, gkc) = match &plan.spectral {
            None => self.direct_vjp(ur.view(), gr.view()),
            Some(sp) => {
                let uf = sp.forward(ur.view());
                let gf = sp.forward(gr.view());
                let kf = sp.forward(self.combined_kernel().view());
                // grad_u[s] = Σ_t g[t]·kc[(t−s) mod 2L]: spectrum G·conj(K).
                let mut p = gf.clone();
                for (r, mut row) in p.rows_mut().into_iter().enumerate() {
                    row.zip_mut_with(&kf.row(r % h), |a, k| *a *= k.conj());
                }
                let gu = sp
                    .inverse_real(p)
                    .slice_move(s![.., ..l])
                    .as_standard_layout()
                    .into_owned();
                // grad_kc[m] = Σ_b Σ_t g[t]·u[(t−m) mod 2L]: spectrum Σ_b G·conj(U).
                let zero = Complex::new(R::zero(), R::zero());
                let mut acc = Array2::from_elem((h, gf.ncols()), zero);
                for (r, (grow, urow)) in gf.rows().into_iter().zip(uf.rows()).enumerate() {
                    let mut a = acc.row_mut(r % h);
                    for ((a, g), uu) in a.iter_mut().zip(grow).zip(urow) {
                        *a += *g * uu.conj();
                    }
                }
                (gu, sp.inverse_real(acc))
            }
        };
        let mut gd = Array1::zeros(h);
        for (r, ((mut gur, grow), urow)) in gu
            .rows_mut()
            .into_iter()
            .zip(gr.rows())
            .zip(ur.rows())
            .enumerate()
        {
            let d = self.d[r % h];
            gur.zip_mut_with(&grow, |a, &g| *a += d * g);
            gd[r % h] += grow.iter().zip(urow).map(|(&g, &v)| g * v).sum::<R>();
        }
        let k_fwd = gkc.slice(s![.., ..l]).to_owned();
        let k_rev = bidir.then(|| gkc.slice(s![.., l..;-1]).to_owned());
        Ok(LongConvGrad {
            u: gu.into_shape_with_order((b, h, l)).expect("rows reshape"),
            k_fwd,
            k_rev,
            d: gd,
        })
    }

    /// Direct gradients: `(grad_u rows without the D term, grad_kc (H, 2L))`.
    fn direct_vjp(&self, ur: ArrayView2<R>, gr: ArrayView2<R>) -> (Array2<R>, Array2<R>) {
        let (nr, l) = ur.dim();
        let h = self.channels();
        let mut gu = Array2::zeros((nr, l));
        let mut gkc = Array2::zeros((h, 2 * l));
        for r in 0..nr {
            let (u, g) = (ur.row(r), gr.row(r));
            let kf = self.k_fwd.row(r % h);
            let kr = self.k_rev.as_ref().map(|k| k.row(r % h));
            for s in 0..l {
                let mut acc = R::zero();
                for t in s..l {
                    acc += kf[t - s] * g[t];
                }
                if let Some(kr) = &kr {
                    for t in 0..s {
                        acc += kr[s - t - 1] * g[t];
                    }
                }
                gu[[r, s]] = acc;
            }
            for j in 0..l {
                let mut a = R::zero();
                for t in j..l {
                    a += g[t] * u[t - j];
                }
                gkc[[r % h, j]] += a;
                if kr.is_some() {
                    // k_rev[j] multiplies u[t+j+1] and sits at kc[2L−1−j].
                    let mut a = R::zero();
                    for t in 0..l.saturating_sub(j + 1) {
                        a += g[t] * u[t + j + 1];
                    }
                    gkc[[r % h, 2 * l - 1 - j]] += a;
                }
            }
        }
        (gu, gkc)
    }
}

/// `(B, H, L)` → `(B·H, L)` rows, standard layout.
fn to_rows<R: RealScalar>(u: ArrayView3<R>) -> Array2<R> {
    let (b, h, l) = u.dim();
    u.as_standard_layout()
        .into_owned()
        .into_shape_with_order((b * h, l))
        .expect("standard layout")
}

/// `k_fwd`, then `k_rev` if bidirectional, then `d`.
impl<R: RealScalar> crate::primitives::params::Params<R> for LongConv<R>
where
    Complex<R>: Scalar<Real = R>,
{
    type Grad = LongConvGrad<R>;
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        f("k_fwd", self.k_fwd.view().into_dyn());
        if let Some(k) = &self.k_rev {
            f("k_rev", k.view().into_dyn());
        }
        f("d", self.d.view().into_dyn());
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'a, R>)) {
        f("k_fwd", self.k_fwd.view_mut().into_dyn());
        if let Some(k) = &mut self.k_rev {
            f("k_rev", k.view_mut().into_dyn());
        }
        f("d", self.d.view_mut().into_dyn());
    }
}

impl<R> crate::primitives::params::Grads<R> for LongConvGrad<R> {
    fn visit_grads<'a>(&'a self, f: &mut dyn FnMut(&str, ndarray::ArrayViewD<'a, R>)) {
        f("k_fwd", self.k_fwd.view().into_dyn());
        if let Some(k) = &self.k_rev {
            f("k_rev", k.view().into_dyn());
        }
        f("d", self.d.view().into_dyn());
    }
}
