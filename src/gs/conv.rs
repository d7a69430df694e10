//! The GS orthogonal convolution: channel shuffle → grouped orthogonal convolution → shuffle →
//! grouped 1×1 orthogonal convolution.
//!
//! The grouped convolution is `exp(A)` for the skew-symmetric convolution
//! `A = (conv_K − conv_K*)/2`, `K*[o, i, u, v] = K[i, o, s−1−u, s−1−v]` (stride 1, odd kernel,
//! zero "same" padding: then `conv_K*` is exactly the adjoint of `conv_K`), evaluated by the
//! truncated series `Σ_{j ≤ T} Aʲ x / j!`. The 1×1 convolution applies an orthogonal
//! `cpg × cpg` block per group (Cayley of skew-symmetric parameters) at every pixel. The whole
//! map is orthogonal up to the series' truncation, so it preserves the norm of its input.
//!
//! ```
//! use monarch::gs::GsOrthConv2d;
//! use monarch::ndarray::Array4;
//! let mut conv = GsOrthConv2d::<f64>::identity(8, 2, 3, 16).unwrap();
//! conv.kernel_mut().iter_mut().enumerate().for_each(|(i, v)| *v = ((i % 7) as f64 - 3.0) * 0.05);
//! conv.pointwise_mut().fill(0.2);
//! let x = Array4::from_shape_fn((1, 8, 5, 5), |(_, c, h, w)| (c + 2 * h + 3 * w) as f64 % 4.0 - 1.5);
//! let y = conv.forward(x.view()).unwrap();
//! let (nx, ny) = (x.iter().map(|v| v * v).sum::<f64>(), y.iter().map(|v| v * v).sum::<f64>());
//! assert!((nx - ny).abs() < 1e-10 * nx);
//! ```

use super::orthogonal::{orthogonal_block, OrthMap};
use crate::primitives::error::{check_divides, check_nonzero, Error, Result};
use crate::{Perm, RealScalar};
use ndarray::{Array2, Array3, Array4, ArrayView4, Axis};

/// Channel shuffle for `groups` groups of `cpg` channels: gather `idx[g·cpg + c] = c·groups + g`.
///
/// With `paired` (gsoft's `channel_shuffle(x, groups, paired=True)`) the same rule moves pairs
/// of adjacent channels, each pair kept together: with `cpg/2` pairs per group, pair
/// `g·(cpg/2) + c` gathers pair `c·groups + g`, so `idx[2·(g·(cpg/2) + c) + e] =
/// 2·(c·groups + g) + e` for `e ∈ {0, 1}`.
///
/// ```
/// use monarch::gs::channel_shuffle;
/// assert_eq!(channel_shuffle(2, 3, false).unwrap().index(), &[0, 2, 4, 1, 3, 5]);
/// // Pairs (0 1) (2 3) | (4 5) (6 7) shuffled as whole pairs.
/// assert_eq!(channel_shuffle(2, 4, true).unwrap().index(), &[0, 1, 4, 5, 2, 3, 6, 7]);
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for `paired` with an odd `cpg`; [`Error::TooLarge`] if
/// `groups·cpg` overflows or cannot be allocated.
pub fn channel_shuffle(groups: usize, cpg: usize, paired: bool) -> Result<Perm> {
    if !paired {
        return Perm::stride(cpg, groups);
    }
    if !cpg.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "channel_shuffle: a paired shuffle needs an even number of channels per group, got {cpg} ({groups} groups)"
        )));
    }
    let pairs = Perm::stride(cpg / 2, groups)?;
    let idx = pairs
        .index()
        .iter()
        .flat_map(|&q| [2 * q, 2 * q + 1])
        .collect();
    Perm::from_index(idx)
}

/// A GS orthogonal 2-D convolution layer on `(batch, channels, height, width)` inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct GsOrthConv2d<T> {
    groups: usize,
    kernel: Array4<T>,
    pointwise: Array3<T>,
    terms: usize,
    paired: bool,
}

/// Most terms of the exponential series [`GsOrthConv2d`] accepts: each term is one more
/// convolution, and the series has long converged (for parameters of any sensible size) well
/// before.
pub const MAX_EXP_TERMS: usize = 1024;

impl<T: RealScalar> GsOrthConv2d<T> {
    /// The identity layer (zero parameters): `channels` split in `groups`, odd spatial kernel
    /// `ksize`, `terms` terms of the exponential series.
    ///
    /// # Errors
    /// [`Error::ZeroSize`]; [`Error::NotDivisible`] unless `groups` divides `channels`;
    /// [`Error::InvalidArgument`] for an even kernel size; [`Error::TooLarge`] for more than
    /// [`MAX_EXP_TERMS`] terms or parameters that cannot be allocated.
    pub fn identity(channels: usize, groups: usize, ksize: usize, terms: usize) -> Result<Self> {
        check_nonzero(channels, "GsOrthConv2d: channels")?;
        check_divides(channels, groups, "GsOrthConv2d: channels by groups")?;
        let cpg = channels / groups;
        let ctx = "GsOrthConv2d::identity";
        Self::from_params(
            crate::primitives::error::try_zeros(ndarray::Dim([channels, cpg, ksize, ksize]), ctx)?,
            crate::primitives::error::try_zeros(ndarray::Dim([groups, cpg, cpg]), ctx)?,
            terms,
        )
    }

    /// A layer from a grouped kernel `(channels, cpg, s, s)` (PyTorch's grouped-conv layout,
    /// group `g` owning output channels `g·cpg..(g+1)·cpg`) and 1×1 parameters
    /// `(groups, cpg, cpg)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`]; [`Error::ShapeMismatch`] if the shapes disagree;
    /// [`Error::InvalidArgument`] for an even or non-square kernel; [`Error::NonFinite`];
    /// [`Error::TooLarge`] for more than [`MAX_EXP_TERMS`] terms.
    pub fn from_params(kernel: Array4<T>, pointwise: Array3<T>, terms: usize) -> Result<Self> {
        let (c, cpg, kh, kw) = kernel.dim();
        check_nonzero(c, "GsOrthConv2d: channels")?;
        check_nonzero(cpg, "GsOrthConv2d: channels per group")?;
        check_nonzero(kh, "GsOrthConv2d: kernel size")?;
        check_divides(c, cpg, "GsOrthConv2d: channels by channels per group")?;
        if kh != kw || kh % 2 == 0 {
            return Err(Error::invalid(format!(
                "GsOrthConv2d: kernel must be square with odd size, got {kh}×{kw}"
            )));
        }
        let groups = c / cpg;
        if pointwise.dim() != (groups, cpg, cpg) {
            return Err(Error::shape(
                "GsOrthConv2d: 1×1 parameters (groups, cpg, cpg)",
                (groups, cpg, cpg),
                pointwise.dim(),
            ));
        }
        if !kernel.iter().chain(pointwise.iter()).all(|v| v.is_finite()) {
            return Err(Error::NonFinite {
                context: "GsOrthConv2d: parameters".into(),
            });
        }
        if terms > MAX_EXP_TERMS {
            return Err(Error::TooLarge {
                context: "GsOrthConv2d: terms of the exponential series".into(),
                value: terms,
                max: MAX_EXP_TERMS,
            });
        }
        Ok(GsOrthConv2d {
            groups,
            kernel,
            pointwise,
            terms,
            paired: false,
        })
    }

    /// The same layer with paired channel shuffles ([`channel_shuffle`] with `paired`, as
    /// gsoft's orthogonal convolution uses them) or plain ones (the default).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `paired` with an odd number of channels per group.
    pub fn with_paired_shuffle(mut self, paired: bool) -> Result<Self> {
        channel_shuffle(self.groups, self.channels() / self.groups, paired)?;
        self.paired = paired;
        Ok(self)
    }

    /// True if the shuffles move pairs of adjacent channels.
    pub fn paired_shuffle(&self) -> bool {
        self.paired
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.kernel.dim().0
    }
    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// Terms of the exponential series.
    pub fn terms(&self) -> usize {
        self.terms
    }
    /// The grouped kernel `(channels, cpg, s, s)` (before skew-symmetrisation).
    pub fn kernel(&self) -> &Array4<T> {
        &self.kernel
    }
    /// Mutable kernel.
    pub fn kernel_mut(&mut self) -> &mut Array4<T> {
        &mut self.kernel
    }
    /// The 1×1 parameters `(groups, cpg, cpg)`.
    pub fn pointwise(&self) -> &Array3<T> {
        &self.pointwise
    }
    /// Mutable 1×1 parameters.
    pub fn pointwise_mut(&mut self) -> &mut Array3<T> {
        &mut self.pointwise
    }

    fn check_input(&self, x: &ArrayView4<T>) -> Result<()> {
        let (_, c, h, w) = x.dim();
        if c != self.channels() {
            return Err(Error::shape(
                "GsOrthConv2d: input channels (batch, C, H, W)",
                self.channels(),
                c,
            ));
        }
        check_nonzero(h, "GsOrthConv2d: input height")?;
        check_nonzero(w, "GsOrthConv2d: input width")?;
        Ok(())
    }

    /// The skew-symmetric kernel `K − K*` per group.
    fn skew_kernel(&self) -> Array4<T> {
        let (c, cpg, s, _) = self.kernel.dim();
        let half = T::from_f64(0.5);
        Array4::from_shape_fn((c, cpg, s, s), |(o, i, u, v)| {
            let g = o / cpg;
            let ol = o % cpg;
            let a = self.kernel[[o, i, u, v]];
            let b = self.kernel[[g * cpg + i, ol, s - 1 - u, s - 1 - v]];
            (a - b) * half
        })
    }

    /// `A x` for the skew-symmetric grouped convolution (zero "same" padding, stride 1).
    fn apply_skew(k: &Array4<T>, x: &Array4<T>) -> Array4<T> {
        let (bn, c, h, w) = x.dim();
        let (_, cpg, s, _) = k.dim();
        let p = s / 2;
        let mut y = Array4::zeros((bn, c, h, w));
        for b in 0..bn {
            for o in 0..c {
                let g0 = (o / cpg) * cpg;
                for i in 0..cpg {
                    for u in 0..s {
                        for v in 0..s {
                            let kv = k[[o, i, u, v]];
                            if kv == T::zero() {
                                continue;
                            }
                            for hh in 0..h {
                                let hi = hh + u;
                                if hi < p || hi - p >= h {
                                    continue;
                                }
                                for ww in 0..w {
                                    let wi = ww + v;
                                    if wi < p || wi - p >= w {
                                        continue;
                                    }
                                    y[[b, o, hh, ww]] += kv * x[[b, g0 + i, hi - p, wi - p]];
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    fn shuffle(&self, x: &Array4<T>) -> Result<Array4<T>> {
        let c = self.channels();
        let perm = channel_shuffle(self.groups, c / self.groups, self.paired)?;
        let mut y = Array4::zeros(x.raw_dim());
        for (dst, &src) in perm.index().iter().enumerate() {
            y.index_axis_mut(Axis(1), dst)
                .assign(&x.index_axis(Axis(1), src));
        }
        Ok(y)
    }

    /// `exp(A) x` by the truncated series (the grouped orthogonal convolution alone).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong channel count; [`Error::ZeroSize`] for empty images.
    pub fn grouped_exp_conv(&self, x: ArrayView4<T>) -> Result<Array4<T>> {
        self.check_input(&x)?;
        let k = self.skew_kernel();
        let mut y = x.to_owned();
        let mut term = x.to_owned();
        for j in 1..=self.terms {
            term = Self::apply_skew(&k, &term);
            let inv = T::from_f64(1.0 / j as f64);
            term.mapv_inplace(|v| v * inv);
            y += &term;
        }
        Ok(y)
    }

    /// The orthogonal 1×1 blocks, `(groups, cpg, cpg)`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN parameters.
    pub fn pointwise_blocks(&self) -> Result<Array3<T>> {
        let mut q = Array3::zeros(self.pointwise.dim());
        for (g, p) in self.pointwise.axis_iter(Axis(0)).enumerate() {
            q.index_axis_mut(Axis(0), g)
                .assign(&orthogonal_block(p, OrthMap::Cayley)?);
        }
        Ok(q)
    }

    /// Shuffle → grouped `exp` convolution → shuffle → grouped 1×1 orthogonal convolution.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong channel count; [`Error::ZeroSize`] for empty images.
    pub fn forward(&self, x: ArrayView4<T>) -> Result<Array4<T>> {
        self.check_input(&x)?;
        let s1 = self.shuffle(&x.to_owned())?;
        let e = self.grouped_exp_conv(s1.view())?;
        let s2 = self.shuffle(&e)?;
        let q = self.pointwise_blocks()?;
        let (bn, c, h, w) = s2.dim();
        let cpg = c / self.groups;
        let mut y = Array4::zeros((bn, c, h, w));
        for b in 0..bn {
            for g in 0..self.groups {
                let xin = s2
                    .index_axis(Axis(0), b)
                    .slice(ndarray::s![g * cpg..(g + 1) * cpg, .., ..])
                    .to_owned()
                    .into_shape_with_order((cpg, h * w))
                    .map_err(|e| Error::invalid(e.to_string()))?;
                let out: Array2<T> = q.index_axis(Axis(0), g).dot(&xin);
                let out = out
                    .into_shape_with_order((cpg, h, w))
                    .map_err(|e| Error::invalid(e.to_string()))?;
                y.index_axis_mut(Axis(0), b)
                    .slice_mut(ndarray::s![g * cpg..(g + 1) * cpg, .., ..])
                    .assign(&out);
            }
        }
        Ok(y)
    }
}
