//! Exact softmax attention, computed flash-style.
//!
//! Each task owns one tile of query rows of one `(batch, head)`. It walks the keys in tiles:
//! scores `s·Q_t K_tᵀ` through the crate's GEMM (`general_mat_mul`, matrixmultiply's AVX-512
//! kernels), a running row maximum `m` and sum `ℓ`, and an accumulator `O ← e^{m_old − m_new}·O +
//! exp(S − m_new)·V_t`. Memory per task is one `q_tile × k_tile` score tile, never `N × N`.
//! Each output row is produced by one task in a fixed key order, so results do not depend on
//! the thread count.

use super::kernels::{pack_kt_blocks, tile_pv, tile_qk};
use super::softmax::{exp_shift_sum, row_max};
use super::{check_qkv, resolve_scale};
use crate::primitives::error::{Error, Result};
use crate::{Par, RealScalar};
use ndarray::{
    s, Array2, Array3, Array4, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3,
    ArrayViewMut4, Axis,
};
use rayon::prelude::*;

/// Exact scaled-dot-product attention `softmax(s·Q Kᵀ + mask) V` (flash-style, streaming).
///
/// A builder: `ExactAttention::new().scale(0.125).forward(q, k, v, mask)`. Query and key
/// lengths may differ (cross-attention); `v` has as many rows as `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExactAttention {
    scale: Option<f64>,
    par: Par,
    q_tile: usize,
    k_tile: usize,
}

impl Default for ExactAttention {
    fn default() -> Self {
        Self::new()
    }
}

/// Exact softmax attention with the default scale `1/√d`, multithreaded.
///
/// `q`, `k`: `(batch, heads, N, d)`; `v`: `(batch, heads, N, d_v)`; `mask`: optional
/// `(batch, N)`, `true` where a key takes part. Returns `(batch, heads, N, d_v)`.
///
/// # Errors
/// As [`ExactAttention::forward`].
pub fn softmax_attention<T: RealScalar>(
    q: ArrayView4<T>,
    k: ArrayView4<T>,
    v: ArrayView4<T>,
    mask: Option<ArrayView2<bool>>,
) -> Result<Array4<T>> {
    ExactAttention::new().forward(q, k, v, mask)
}

impl ExactAttention {
    /// Default settings: scale `1/√d`, [`Par::Rayon`], 128-row query tiles, 256-key tiles.
    pub fn new() -> Self {
        ExactAttention {
            scale: None,
            par: Par::Rayon,
            q_tile: 128,
            k_tile: 256,
        }
    }

    /// Sets the score scale `s` in `softmax(s·Q Kᵀ)` (default `1/√d`).
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Sets the threading policy (results are identical either way).
    pub fn par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// Sets the query and key tile sizes (rows per task, keys per streaming step); zero values
    /// are replaced by 1. Results change only by rounding.
    pub fn tiles(mut self, q_tile: usize, k_tile: usize) -> Self {
        self.q_tile = q_tile.max(1);
        self.k_tile = k_tile.max(1);
        self
    }

    /// Attention output `(batch, heads, N_q, d_v)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for an empty length or feature size (a batch or head count of 0
    /// gives an empty result), [`Error::ShapeMismatch`] when `q`, `k`, `v`
    /// or `mask` disagree, [`Error::NonFinite`] for NaN/∞ inputs or scale, and for scores that
    /// can overflow the float type (`max(|scale|, 1)·max‖q‖·max‖k‖` per head above its range),
    /// [`Error::InvalidArgument`] when all keys of a batch element are masked.
    pub fn forward<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<Array4<T>> {
        let (b, h, nq, dv) = (q.dim().0, q.dim().1, q.dim().2, v.dim().3);
        let mut out = Array4::zeros((b, h, nq, dv));
        self.forward_into(q, k, v, mask, out.view_mut(), None)?;
        Ok(out)
    }

    /// Attention output and each query row's log-sum-exp `ln Σ_keys exp(s·q·k)` over the
    /// unmasked keys, shape `(batch, heads, N_q)`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_with_lse<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<(Array4<T>, Array3<T>)> {
        let (b, h, nq, dv) = (q.dim().0, q.dim().1, q.dim().2, v.dim().3);
        let mut out = Array4::zeros((b, h, nq, dv));
        let mut lse = Array3::zeros((b, h, nq));
        self.forward_into(q, k, v, mask, out.view_mut(), Some(lse.view_mut()))?;
        Ok((out, lse))
    }

    /// Writes the output into `out` `(batch, heads, N_q, d_v)` and, if given, the per-row
    /// log-sum-exp into `lse` `(batch, heads, N_q)`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), plus [`Error::ShapeMismatch`] for `out` or `lse`.
    pub fn forward_into<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
        mut out: ArrayViewMut4<T>,
        mut lse: Option<ArrayViewMut3<T>>,
    ) -> Result<()> {
        let (nb, nh, nq, nk, d, dv) =
            check_qkv("softmax attention", &q, &k, &v, mask.as_ref(), self.par)?;
        if out.dim() != (nb, nh, nq, dv) {
            return Err(Error::shape(
                "softmax attention: output",
                (nb, nh, nq, dv),
                out.dim(),
            ));
        }
        if let Some(l) = &lse {
            if l.dim() != (nb, nh, nq) {
                return Err(Error::shape(
                    "softmax attention: log-sum-exp output",
                    (nb, nh, nq),
                    l.dim(),
                ));
            }
        }
        let scale: T = resolve_scale(self.scale, d)?;
        super::check_score_range("softmax attention", &q, &k, scale, self.par)?;
        let (qt, kt) = (self.q_tile, self.k_tile);
        let n_ktiles = nk.div_ceil(kt);

        // Per batch element: additive key bias (0 or −∞) and which key tiles hold any key.
        let keys: Vec<KeyInfo<T>> = (0..nb)
            .map(|b| KeyInfo::new(mask.as_ref().map(|m| m.row(b)), nk, kt, n_ktiles))
            .collect();

        // The head views borrow `out` and `lse` until the scope ends.
        {
            let mut lse_heads: Vec<Option<ArrayViewMut1<T>>> = match lse.as_mut() {
                Some(l) => l
                    .view_mut()
                    .into_outer_iter_mut()
                    .flat_map(|lb| lb.into_outer_iter_mut())
                    .map(Some)
                    .collect(),
                None => (0..nb * nh).map(|_| None).collect(),
            };
            let mut lse_heads = lse_heads.drain(..);
            let mut heads = Vec::with_capacity(nb * nh);
            for (b, ob) in out.outer_iter_mut().enumerate() {
                for (h, oh) in ob.into_outer_iter_mut().enumerate() {
                    let lh = lse_heads.next().flatten();
                    let mut lchunks = lh.map(|l| l.into_axis_chunks_iter_mut(Axis(0), qt));
                    let mut tasks = Vec::with_capacity(nq.div_ceil(qt));
                    for (t, ot) in oh.into_axis_chunks_iter_mut(Axis(0), qt).enumerate() {
                        let lt = lchunks.as_mut().and_then(|it| it.next());
                        tasks.push(Task {
                            row0: t * qt,
                            out: ot,
                            lse: lt,
                        });
                    }
                    heads.push((b, h, tasks));
                }
            }

            let work = nb * nh * nq * nk * (d + dv);
            let split = self.par.should_split(work);
            let run_head = |(b, h, tasks): (usize, usize, Vec<Task<T>>)| {
                let kv = k.slice(s![b, h, .., ..]);
                let vv = v.slice(s![b, h, .., ..]);
                // Kᵀ packed once per head for the f32 kernels (a tile per key tile), shared by
                // all query tiles.
                let packed = pack_kt_blocks(&kv, kt);
                let one = |task: Task<T>, ws: &mut Workspace<T>| {
                    let rows = task.out.nrows();
                    let qv = q.slice(s![b, h, task.row0..task.row0 + rows, ..]);
                    let kt_packed = packed.as_deref();
                    stream_tile(
                        qv, kv, vv, kt_packed, &keys[b], scale, kt, ws, task.out, task.lse,
                    );
                };
                if split && tasks.len() > 1 {
                    tasks
                        .into_par_iter()
                        .for_each_init(|| Workspace::new(qt, kt, dv), |ws, t| one(t, ws));
                } else {
                    let mut ws = Workspace::new(qt, kt, dv);
                    for t in tasks {
                        one(t, &mut ws);
                    }
                }
            };
            if split && heads.len() > 1 {
                heads.into_par_iter().for_each(run_head);
            } else {
                heads.into_iter().for_each(run_head);
            }
        }
        super::check_overflow("softmax attention", &[out.view()], self.par)?;
        if let Some(l) = &lse {
            super::check_overflow("softmax attention: log-sum-exp", &[l.view()], self.par)?;
        }
        Ok(())
    }
}

struct Task<'a, T> {
    row0: usize,
    out: ArrayViewMut2<'a, T>,
    lse: Option<ArrayViewMut1<'a, T>>,
}

/// Key-side facts of one batch element.
struct KeyInfo<T> {
    /// `0` for keys that take part, `−∞` for masked ones; `None` without a mask.
    bias: Option<Vec<T>>,
    /// Whether key tile `t` holds at least one unmasked key.
    tile_live: Vec<bool>,
}

impl<T: RealScalar> KeyInfo<T> {
    fn new(mask: Option<ndarray::ArrayView1<bool>>, nk: usize, kt: usize, ntiles: usize) -> Self {
        match mask {
            None => KeyInfo {
                bias: None,
                tile_live: vec![true; ntiles],
            },
            Some(m) => {
                let bias: Vec<T> = m
                    .iter()
                    .map(|&keep| if keep { T::zero() } else { T::neg_infinity() })
                    .collect();
                let tile_live = (0..ntiles)
                    .map(|t| m.iter().skip(t * kt).take(kt.min(nk - t * kt)).any(|&x| x))
                    .collect();
                KeyInfo {
                    bias: Some(bias),
                    tile_live,
                }
            }
        }
    }
}

/// Scratch reused by one thread across tasks.
struct Workspace<T> {
    scores: Array2<T>,
    acc: Array2<T>,
    max: Vec<T>,
    sum: Vec<T>,
}

impl<T: RealScalar> Workspace<T> {
    fn new(qt: usize, kt: usize, dv: usize) -> Self {
        Workspace {
            scores: Array2::zeros((qt, kt)),
            acc: Array2::zeros((qt, dv)),
            max: vec![T::zero(); qt],
            sum: vec![T::zero(); qt],
        }
    }
}

/// Streams all key tiles past one tile of query rows.
#[allow(clippy::too_many_arguments)]
fn stream_tile<T: RealScalar>(
    q: ArrayView2<T>,
    k: ArrayView2<T>,
    v: ArrayView2<T>,
    kt_packed: Option<&[T]>,
    keys: &KeyInfo<T>,
    scale: T,
    kt: usize,
    ws: &mut Workspace<T>,
    mut out: ArrayViewMut2<T>,
    lse: Option<ArrayViewMut1<T>>,
) {
    let rows = q.nrows();
    let nk = k.nrows();
    let mut acc = ws.acc.slice_mut(s![..rows, ..]);
    acc.fill(T::zero());
    let mx = &mut ws.max[..rows];
    let sm = &mut ws.sum[..rows];
    mx.fill(T::neg_infinity());
    sm.fill(T::zero());
    for (t, &live) in keys.tile_live.iter().enumerate() {
        if !live {
            continue;
        }
        let c0 = t * kt;
        let cols = kt.min(nk - c0);
        let kt_view = k.slice(s![c0..c0 + cols, ..]);
        let vt_view = v.slice(s![c0..c0 + cols, ..]);
        let mut sc = ws.scores.slice_mut(s![..rows, ..cols]);
        let d = k.ncols();
        let packed = kt_packed.map(|p| (&p[t * kt * d..(t + 1) * kt * d], kt, 0));
        tile_qk(scale, &q, &kt_view, packed, &mut sc);
        for (r, mut srow) in sc.outer_iter_mut().enumerate() {
            let srow = srow.as_slice_mut().expect("score tile rows are contiguous");
            if let Some(bias) = &keys.bias {
                for (x, &bb) in srow.iter_mut().zip(&bias[c0..c0 + cols]) {
                    *x += bb;
                }
            }
            // The tile holds a live key, so the row maximum is finite.
            let m_new = {
                let m = row_max(srow);
                if m > mx[r] {
                    m
                } else {
                    mx[r]
                }
            };
            let alpha = (mx[r] - m_new).exp();
            sm[r] = sm[r] * alpha + exp_shift_sum(srow, m_new);
            mx[r] = m_new;
            if alpha != T::one() {
                acc.row_mut(r).mapv_inplace(|x| x * alpha);
            }
        }
        tile_pv(&sc, &vt_view, &mut acc);
    }
    for (r, (mut orow, arow)) in out.outer_iter_mut().zip(acc.outer_iter()).enumerate() {
        let inv = T::one() / sm[r];
        orow.zip_mut_with(&arow, |o, &a| *o = a * inv);
    }
    if let Some(mut l) = lse {
        for (r, x) in l.iter_mut().enumerate() {
            *x = mx[r] + sm[r].ln();
        }
    }
}
