//! [`MonarchAttention`] in burn tensor ops: the core crate's alternating maximisation over
//! row-stochastic Monarch matrices, `T` rounds, differentiated by burn's autodiff.
//!
//! Inputs are `(batch, heads, N, d)`. With block size `b`, `m = ⌈N/b⌉` blocks and padded length
//! `N_p = m·b`, a round is one R-update (a softmax over the `b` keys of each block, for every
//! block at once: a `(…, m, b, b)` tensor) and one L-update (a softmax over the `m` blocks for
//! each of the `b` in-block positions: a `(…, b, m, m)` tensor). No tensor has `N × N` entries:
//! per head the largest hold `N·b` and `N·m` values (`N^1.5` for `b ≈ √N`), where the core
//! crate's streaming CPU version holds `O(N·d)` between phases. Conventions (padding, masks,
//! the objective) are the core's: see [`monarch::attention::MonarchAttention`].
//!
//! ```
//! use burn::tensor::{Device, Tensor, Distribution};
//! use monarch_burn::MonarchAttention;
//! let device = Device::flex();
//! let q = Tensor::<4>::random([1, 2, 10, 8], Distribution::Default, &device);
//! let att = MonarchAttention::new(4, 2);
//! let out = att.forward(q.clone(), q.clone(), q, None);
//! assert_eq!(out.dims(), [1, 2, 10, 8]);
//! ```

use crate::error::expect_ok;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use monarch::attention::{Padding, MAX_STEPS};
use monarch::{Error, Result};

/// Stands in for −∞ in additive masks: `exp` of it relative to any live score is exactly 0 in
/// f32, while a row whose entries are all masked stays finite (and is then zeroed explicitly)
/// instead of turning into NaN, which autodiff would carry into every gradient.
const MASKED: f32 = -1.0e30;

/// MonarchAttention with block size `b` and `T` rounds (see the module docs).
///
/// Configuration errors (`b = 0`, `T = 0`, `T > MAX_STEPS`) and input errors are reported by
/// [`try_forward`](Self::try_forward); [`forward`](Self::forward) panics with the same message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonarchAttention {
    block_size: usize,
    steps: usize,
    padding: Padding,
    scale: Option<f64>,
}

/// Padded geometry and masks of one call.
struct Plan {
    b: usize,
    m: usize,
    np: usize,
    pre: usize,
    n: usize,
    /// `(batch, 1, m, b, 1)`: 1 for live queries, 0 for padding and masked tokens.
    qw: Tensor<5>,
    /// `(batch, 1, m, 1, b)`: 0 for live keys, [`MASKED`] otherwise.
    key_bias: Tensor<5>,
    /// `(batch, 1, m, 1, 1)`: 1 where block `a` holds a live key.
    block_live: Tensor<5>,
    /// `(batch, 1, 1, 1, m)`: 0 for live blocks, [`MASKED`] otherwise.
    block_bias: Tensor<5>,
}

impl MonarchAttention {
    /// Block size `b` and rounds `T` (the paper uses `T ≤ 3`); post-padding, scale `1/√d`.
    pub fn new(block_size: usize, steps: usize) -> Self {
        MonarchAttention {
            block_size,
            steps,
            padding: Padding::Post,
            scale: None,
        }
    }

    /// Where to pad when `b` does not divide `N`.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Score scale `s` in `S = s·QKᵀ` (default `1/√d`).
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Block size `b`.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Rounds `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The same configuration in the core crate (its CPU implementation and VJP).
    pub fn to_core(&self) -> monarch::attention::MonarchAttention {
        let mut a = monarch::attention::MonarchAttention::new(self.block_size, self.steps)
            .padding(self.padding);
        if let Some(s) = self.scale {
            a = a.scale(s);
        }
        a
    }

    fn plan(
        &self,
        dims: [usize; 4],
        mask: Option<Tensor<2, Bool>>,
        device: &Device,
    ) -> Result<Plan> {
        let [batch, _, n, d] = dims;
        if self.block_size == 0 {
            return Err(Error::zero("MonarchAttention: block size"));
        }
        if self.steps == 0 {
            return Err(Error::zero("MonarchAttention: steps"));
        }
        if self.steps > MAX_STEPS {
            return Err(Error::TooLarge {
                context: "MonarchAttention: steps (rounds T)".into(),
                value: self.steps,
                max: MAX_STEPS,
            });
        }
        if n == 0 || d == 0 {
            return Err(Error::zero(format!(
                "MonarchAttention: sequence length or head size of (batch, heads, N, d) = {dims:?}"
            )));
        }
        let b = self.block_size.min(n);
        let m = n.div_ceil(b);
        let np = m * b;
        let pre = match self.padding {
            Padding::Pre => np - n,
            Padding::Post => 0,
        };
        let mask_host: Option<Vec<bool>> = match mask {
            None => None,
            Some(t) => {
                let md = t.dims();
                if md != [batch, n] {
                    return Err(Error::shape(
                        "MonarchAttention: key mask (batch, N)",
                        (batch, n),
                        (md[0], md[1]),
                    ));
                }
                // Backends store bools differently (native bytes on flex, u32 words on wgpu
                // over lavapipe): convert rather than read the bytes as `bool`.
                let v = t.into_data().try_into_vec_as::<bool>().map_err(|e| {
                    Error::invalid(format!("MonarchAttention: key mask as bool: {e:?}"))
                })?;
                Some(v)
            }
        };
        let mut live = vec![false; batch * np];
        for bi in 0..batch {
            for t in 0..n {
                live[bi * np + pre + t] = mask_host.as_ref().is_none_or(|mk| mk[bi * n + t]);
            }
            if !live[bi * np..(bi + 1) * np].iter().any(|&x| x) {
                return Err(Error::invalid(format!(
                    "MonarchAttention: every key of batch element {bi} is masked"
                )));
            }
        }
        let qw: Vec<f32> = live.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect();
        let kb: Vec<f32> = live.iter().map(|&x| if x { 0.0 } else { MASKED }).collect();
        let bl: Vec<f32> = live
            .chunks(b)
            .map(|c| if c.iter().any(|&x| x) { 1.0 } else { 0.0 })
            .collect();
        let bb: Vec<f32> = bl
            .iter()
            .map(|&x| if x > 0.0 { 0.0 } else { MASKED })
            .collect();
        let t5 = |v: Vec<f32>, shape: [usize; 5]| {
            Tensor::<5>::from_data(TensorData::new(v, shape), device)
        };
        Ok(Plan {
            b,
            m,
            np,
            pre,
            n,
            qw: t5(qw, [batch, 1, m, b, 1]),
            key_bias: t5(kb, [batch, 1, m, 1, b]),
            block_live: t5(bl.clone(), [batch, 1, m, 1, 1]),
            block_bias: t5(bb, [batch, 1, 1, 1, m]),
        })
    }

    /// The attention output `(batch, heads, N, d_v)`; `mask` is `(batch, N)`, `true` for keys
    /// that take part.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for `b = 0`, `T = 0`, `N = 0` or `d = 0`; [`Error::TooLarge`] for
    /// `T > MAX_STEPS`; [`Error::ShapeMismatch`] when `q`, `k`, `v` or the mask disagree;
    /// [`Error::InvalidArgument`] when every key of a batch element is masked.
    pub fn try_forward(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<4>> {
        let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
        if kd != qd {
            return Err(Error::shape(
                "MonarchAttention: k (batch, heads, N, d) like q",
                format!("{qd:?}"),
                format!("{kd:?}"),
            ));
        }
        if vd[..3] != qd[..3] {
            return Err(Error::shape(
                "MonarchAttention: v (batch, heads, N, d_v) like q",
                format!("{:?}", &qd[..3]),
                format!("{:?}", &vd[..3]),
            ));
        }
        let [batch, heads, _, d] = qd;
        let dv = vd[3];
        if batch == 0 || heads == 0 {
            return Ok(Tensor::zeros([batch, heads, qd[2], dv], &q.device()));
        }
        let device = q.device();
        let p = self.plan(qd, mask, &device)?;
        let scale = self.scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
        let (b, m, np) = (p.b, p.m, p.np);
        let pad = |x: Tensor<4>, w: usize| -> Tensor<5> {
            let x = if np > p.n {
                let mut parts = Vec::with_capacity(3);
                if p.pre > 0 {
                    parts.push(Tensor::zeros([batch, heads, p.pre, w], &device));
                }
                parts.push(x);
                if np - p.n - p.pre > 0 {
                    parts.push(Tensor::zeros([batch, heads, np - p.n - p.pre, w], &device));
                }
                Tensor::cat(parts, 2)
            } else {
                x
            };
            // Position a·b + j as [a, j]: block-major, as the core stores its state.
            x.reshape([batch, heads, m, b, w])
        };
        let q = pad(q, d);
        let k = pad(k, d);
        let v = pad(v, dv);
        // The queries in [j, l] order (position l·b + j), for the L-update.
        let q_t = q.clone().swap_dims(2, 3);
        let k_t = k.clone().swap_dims(3, 4);

        // Round 1 starts from L = I: u = q for live queries, 0 otherwise.
        let mut u = q.clone() * p.qw.clone();
        let mut out = None;
        for t in 0..self.steps {
            let last = t + 1 == self.steps;
            // R-update, every block at once: R_a[j, i] = softmax_i(s·⟨u[a,j], k[a,i]⟩ + bias).
            let z = u.clone().matmul(k_t.clone()).mul_scalar(scale) + p.key_bias.clone();
            let r = softmax(z.clone(), 4) * p.block_live.clone();
            let al = r.clone().matmul(k.clone()).mul_scalar(scale); // α_L, (…, m, b, d)
                                                                    // c_L = Σ_i R log R (zero for dead blocks, where R = 0).
            let cl = (r.clone() * log_softmax(z, 4)).sum_dim(4); // (…, m, b, 1)
                                                                 // L-update: P[j, l, a] = L_j[a, l] = softmax_a(⟨q[l,j], α_L[a,j]⟩ − c_L[a,j]).
            let al_t = al.swap_dims(2, 3); // (…, b, m(a), d)
            let cl_t = cl.swap_dims(2, 3).swap_dims(3, 4); // (…, b, 1, m(a))
            let zl = q_t.clone().matmul(al_t.swap_dims(3, 4)) - cl_t + p.block_bias.clone();
            let pl = softmax(zl, 4); // (…, b, m(l), m(a))
            if last {
                let y = r.matmul(v.clone()).swap_dims(2, 3); // (…, b, m(a), d_v)
                let o = pl.matmul(y).swap_dims(2, 3); // (…, m(l), b, d_v)
                out = Some(o);
                break;
            }
            // Next round: u[a, j] = Σ_l P[j,l,a]·q[l,j] / c, c = Σ_l P[j,l,a] over live queries.
            let pw = pl * p.qw.clone().swap_dims(2, 3); // (…, b, m(l), m(a)) with qw[l, j]
            let c = pw.clone().sum_dim(3).swap_dims(3, 4); // (…, b, m(a), 1)
            let ar = pw.swap_dims(3, 4).matmul(q_t.clone()); // (…, b, m(a), d)

            // c = 0 only where α_R = 0 too (no live query weighs on the block): u = 0 there.
            u = (ar / c.clamp_min(f32::MIN_POSITIVE)).swap_dims(2, 3);
        }
        let o = out.expect("steps >= 1").reshape([batch, heads, np, dv]);
        Ok(if np > p.n { o.narrow(2, p.pre, p.n) } else { o })
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    ///
    /// # Panics
    /// On every error of `try_forward`.
    pub fn forward(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<4> {
        expect_ok(self.try_forward(q, k, v, mask))
    }
}
