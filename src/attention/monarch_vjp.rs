//! Reverse mode of MonarchAttention through all `T` rounds in `O(T·N·d)` memory.
//!
//! The forward pass is re-run keeping each round's `O(N·d)` state (`u`, `c_R`, `α_L`, `c_L`);
//! the `b × b` factors `R_a` and `m × m` factors `L_j` are recomputed from it block by block
//! when the backward sweep needs them, never stored for all blocks at once.
//!
//! Backward of one round `t`, given the gradient with respect to its `L_j` (from the output
//! for the last round, from the next round's `α_R, c_R` otherwise):
//! `∂Z = P ⊙ (∂P − rowsum(P ⊙ ∂P))` for `Z[l, a] = ⟨q_{l·b+j}, α_L[j, a]⟩ − c_L[j, a]` gives
//! `∂q`, `∂α_L`, `∂c_L`; then per block `∂R = s·∂α_L·K_aᵀ + ∂c_L·(log R + 1)` (+ the output
//! term), the softmax backward to the scores `s·U_a K_aᵀ`, and finally `∂u` is split into
//! `∂α_R = ∂u / c_R` and `∂c_R = −⟨∂u, u⟩ / c_R`.

use super::monarch_attention::{HeadCtx, MonarchAttention, StepState};
use crate::primitives::error::{Error, Result};
use crate::RealScalar;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Array4, ArrayView2, ArrayView4, ArrayViewMut2, Zip};
use rayon::prelude::*;

/// Gradients of `sum(out ⊙ grad_out)` for MonarchAttention's `out`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonarchAttentionGrad<T> {
    /// With respect to `q`, `(batch, heads, N, d)`.
    pub q: Array4<T>,
    /// With respect to `k`, `(batch, heads, N, d)`.
    pub k: Array4<T>,
    /// With respect to `v`, `(batch, heads, N, d_v)`.
    pub v: Array4<T>,
}

impl MonarchAttention {
    /// Vector-Jacobian product: gradients of `sum(forward(q, k, v, mask) ⊙ grad_out)` with
    /// respect to `q`, `k` and `v`, differentiating through all `T` rounds. Extra memory is
    /// `O(T·N·d)` per head in flight.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::ShapeMismatch`] when `grad_out` is not
    /// `(batch, heads, N, d_v)`.
    pub fn vjp<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
        grad_out: ArrayView4<T>,
    ) -> Result<MonarchAttentionGrad<T>> {
        let setup = self.setup(&q, &k, &v, mask.as_ref())?;
        if grad_out.dim() != v.dim() {
            return Err(Error::shape(
                "MonarchAttention::vjp: grad_out (batch, heads, N, d_v)",
                v.dim(),
                grad_out.dim(),
            ));
        }
        if !super::all_finite(&grad_out, self.par) {
            return Err(Error::NonFinite {
                context: "MonarchAttention::vjp: grad_out".into(),
            });
        }
        let (nb, nh, n, d) = q.dim();
        let dv = v.dim().3;
        let geo = setup.geo;
        let mut gq = Array4::<T>::zeros((nb, nh, n, d));
        let mut gk = Array4::<T>::zeros((nb, nh, n, d));
        let mut gv = Array4::<T>::zeros((nb, nh, n, dv));
        let mut items = Vec::with_capacity(nb * nh);
        for (b, ((bq, bk), bv)) in gq
            .outer_iter_mut()
            .zip(gk.outer_iter_mut())
            .zip(gv.outer_iter_mut())
            .enumerate()
        {
            for (h, ((hq, hk), hv)) in bq
                .into_outer_iter_mut()
                .zip(bk.into_outer_iter_mut())
                .zip(bv.into_outer_iter_mut())
                .enumerate()
            {
                items.push((b, h, hq, hk, hv));
            }
        }
        let steps = self.steps;
        type Item<'a, T> = (
            usize,
            usize,
            ArrayViewMut2<'a, T>,
            ArrayViewMut2<'a, T>,
            ArrayViewMut2<'a, T>,
        );
        let run = |(b, h, mut oq, mut ok, mut ov): Item<T>| {
            let qh = geo.pad(q.slice(s![b, h, .., ..]));
            let kh = geo.pad(k.slice(s![b, h, .., ..]));
            let vh = geo.pad(v.slice(s![b, h, .., ..]));
            let gh = geo.pad(grad_out.slice(s![b, h, .., ..]));
            let ctx = HeadCtx::new(&geo, &setup.keys[b], qh.view(), kh.view(), setup.scale);
            let (pq, pk, pv) = head_vjp(&ctx, vh.view(), gh.view(), steps);
            let r = geo.pre..geo.pre + geo.n;
            oq.assign(&pq.slice(s![r.clone(), ..]));
            ok.assign(&pk.slice(s![r.clone(), ..]));
            ov.assign(&pv.slice(s![r, ..]));
        };
        let work = nb * nh * n * (geo.b + geo.m) * (d + dv) * steps * 3;
        if self.par.should_split(work) && items.len() > 1 {
            items.into_par_iter().for_each(run);
        } else {
            items.into_iter().for_each(run);
        }
        super::check_overflow(
            "MonarchAttention::vjp",
            &[gq.view(), gk.view(), gv.view()],
            self.par,
        )?;
        Ok(MonarchAttentionGrad {
            q: gq,
            k: gk,
            v: gv,
        })
    }
}

/// Gradients `(∂q, ∂k, ∂v)` of one head in padded coordinates. `g` is zero on padded rows.
fn head_vjp<T: RealScalar>(
    ctx: &HeadCtx<T>,
    v: ArrayView2<T>,
    g: ArrayView2<T>,
    steps: usize,
) -> (Array2<T>, Array2<T>, Array2<T>) {
    let geo = ctx.geo;
    let (bs, m, np) = (geo.b, geo.m, geo.np);
    let (d, dv) = (ctx.q.ncols(), v.ncols());
    let qw = &ctx.keys.qw;
    let s_ = ctx.scale;
    let (states, y): (Vec<StepState<T>>, _) = ctx.run_with_values(steps, true, Some(v));
    let y = y.expect("values requested");
    let mut ws = ctx.workspace();

    let mut gq = Array2::<T>::zeros((np, d));
    let mut gk = Array2::<T>::zeros((np, d));
    let mut gv = Array2::<T>::zeros((np, dv));
    let mut gy = Array2::<T>::zeros((np, dv));
    let mut gal = Array2::<T>::zeros((np, d));
    let mut gcl = vec![T::zero(); np];
    // Gradients with respect to the R-update inputs α_R, c_R of the round after the current.
    let mut gar = Array2::<T>::zeros((np, d));
    let mut gcr = vec![T::zero(); np];
    let mut gp = Array2::<T>::zeros((m, m));
    let mut tmp_m = Array2::<T>::zeros((m, d));
    let mut z = Array2::<T>::zeros((bs, bs));
    let mut gr = Array2::<T>::zeros((bs, bs));
    let mut gu = Array2::<T>::zeros((bs, d));

    for t in (0..steps).rev() {
        let st = &states[t];
        let last = t + 1 == steps;
        // ---- L-update backward, one j at a time.
        for j in 0..bs {
            ctx.l_probs(j, st, &mut ws.p, &mut ws.lse_m);
            let p = &ws.p;
            let qj = ctx.q.slice(s![j..;bs, ..]);
            if last {
                let gj = g.slice(s![j..;bs, ..]);
                let yj = y.slice(s![j..;bs, ..]);
                general_mat_mul(T::one(), &gj, &yj.t(), T::zero(), &mut gp);
                let mut gyj = gy.slice_mut(s![j..;bs, ..]);
                general_mat_mul(T::one(), &p.t(), &gj, T::zero(), &mut gyj);
            } else {
                // Next round: α_R[a] = Σ_l P[l, a]·w_l·q_l, c_R[a] = Σ_l P[l, a]·w_l.
                let garj = gar.slice(s![j..;bs, ..]);
                general_mat_mul(T::one(), &qj, &garj.t(), T::zero(), &mut gp);
                for (l, mut row) in gp.outer_iter_mut().enumerate() {
                    let w = qw[l * bs + j];
                    for (a, x) in row.iter_mut().enumerate() {
                        *x = (*x + gcr[a * bs + j]) * w;
                    }
                }
                general_mat_mul(T::one(), p, &garj, T::zero(), &mut tmp_m);
                let mut gqj = gq.slice_mut(s![j..;bs, ..]);
                for (l, (mut gr_, tr)) in gqj.outer_iter_mut().zip(tmp_m.outer_iter()).enumerate() {
                    let w = qw[l * bs + j];
                    if w != T::zero() {
                        gr_.zip_mut_with(&tr, |x, &y| *x += w * y);
                    }
                }
            }
            // Softmax backward over a, in place in gp.
            Zip::from(gp.rows_mut())
                .and(p.rows())
                .for_each(|mut grow, prow| {
                    let dot: T = grow.iter().zip(prow.iter()).map(|(&x, &y)| x * y).sum();
                    grow.zip_mut_with(&prow, |x, &pp| *x = pp * (*x - dot));
                });
            let alj = st.al.slice(s![j..;bs, ..]);
            let mut gqj = gq.slice_mut(s![j..;bs, ..]);
            general_mat_mul(T::one(), &gp, &alj, T::one(), &mut gqj);
            let mut galj = gal.slice_mut(s![j..;bs, ..]);
            general_mat_mul(T::one(), &gp.t(), &qj, T::zero(), &mut galj);
            for a in 0..m {
                gcl[a * bs + j] = -gp.column(a).sum();
            }
        }
        // ---- R-update backward, one key block at a time.
        for a in 0..m {
            let rows = a * bs..(a + 1) * bs;
            if !ctx.keys.block_live[a] {
                gar.slice_mut(s![rows.clone(), ..]).fill(T::zero());
                gcr[rows].fill(T::zero());
                continue;
            }
            let ua = st.u.slice(s![rows.clone(), ..]);
            let ka = ctx.k.slice(s![rows.clone(), ..]);
            let mut r = ws.r.view_mut();
            ctx.r_probs(a, st.u.view(), &mut r, &mut ws.lse_b);
            let r = &ws.r;
            general_mat_mul(s_, &ua, &ka.t(), T::zero(), &mut z);
            let gala = gal.slice(s![rows.clone(), ..]);
            general_mat_mul(s_, &gala, &ka.t(), T::zero(), &mut gr);
            let bias = ctx.keys.bias.as_ref().map(|b| &b[rows.clone()]);
            for j in 0..bs {
                let c = gcl[a * bs + j];
                let lse = ws.lse_b[j];
                for i in 0..bs {
                    let live = bias.is_none_or(|bb| bb[i] == T::zero());
                    gr[[j, i]] = if live {
                        gr[[j, i]] + c * (z[[j, i]] - lse + T::one())
                    } else {
                        T::zero()
                    };
                }
            }
            let mut gka = gk.slice_mut(s![rows.clone(), ..]);
            if last {
                let gya = gy.slice(s![rows.clone(), ..]);
                let va = v.slice(s![rows.clone(), ..]);
                general_mat_mul(T::one(), &gya, &va.t(), T::one(), &mut gr);
                let mut gva = gv.slice_mut(s![rows.clone(), ..]);
                general_mat_mul(T::one(), &r.t(), &gya, T::one(), &mut gva);
            }
            general_mat_mul(s_, &r.t(), &gala, T::one(), &mut gka);
            // Softmax backward over i, in place in gr.
            Zip::from(gr.rows_mut())
                .and(r.rows())
                .for_each(|mut grow, rrow| {
                    let dot: T = grow.iter().zip(rrow.iter()).map(|(&x, &y)| x * y).sum();
                    grow.zip_mut_with(&rrow, |x, &rr| *x = rr * (*x - dot));
                });
            general_mat_mul(s_, &gr, &ka, T::zero(), &mut gu);
            general_mat_mul(s_, &gr.t(), &ua, T::one(), &mut gka);
            // u = α_R / c_R.
            for (jj, p) in rows.enumerate() {
                let c = st.cr[p];
                let mut garow = gar.row_mut(p);
                if c > T::zero() {
                    let dot: T = gu
                        .row(jj)
                        .iter()
                        .zip(ua.row(jj))
                        .map(|(&x, &y)| x * y)
                        .sum();
                    garow.zip_mut_with(&gu.row(jj), |x, &y| *x = y / c);
                    gcr[p] = -dot / c;
                } else {
                    garow.fill(T::zero());
                    gcr[p] = T::zero();
                }
            }
        }
    }
    // Round 1: α_R = w·q, c_R = w (constant).
    for (p, (mut gqr, gar_r)) in gq.outer_iter_mut().zip(gar.outer_iter()).enumerate() {
        let w = qw[p];
        if w != T::zero() {
            gqr.zip_mut_with(&gar_r, |x, &y| *x += w * y);
        }
    }
    (gq, gk, gv)
}
