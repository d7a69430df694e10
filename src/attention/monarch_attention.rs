//! MonarchAttention forward: alternating exact maximisation of `⟨A, S⟩ + H(A)` over
//! row-stochastic Monarch matrices.
//!
//! With block size `b`, `m = ⌈N/b⌉` and padded length `N_p = m·b`, query `l·b + j` and key
//! `a·b + i` meet with weight `A[l·b+j, a·b+i] = L_j[a, l]·R_a[j, i]`. One round is
//! - **R-update**, per key block `a`: `R_a[j, ·] = softmax_i(s·⟨u[a, j], k_{a·b+i}⟩)` with
//!   `u = α_R / c_R` the `L`-weighted mean of the queries `l·b + j`; it yields
//!   `α_L[j, a] = s·Σ_i R_a[j, i]·k_{a·b+i}` and `c_L[j, a] = Σ_i R log R`;
//! - **L-update**, per `j`: `L_j[·, l] = softmax_a(⟨q_{l·b+j}, α_L[j, a]⟩ − c_L[j, a])`, whose
//!   log-sum-exp is the row's objective `⟨A, S⟩ + H(A)`; then either the next round's
//!   `α_R, c_R` or the output `o_{l·b+j} = Σ_a L_j[a, l]·Σ_i R_a[j, i]·v_{a·b+i}`.
//!
//! The first round starts from `L_j = I`, so it is block-local attention. Only `O(N·d)` state
//! (`u`, `c_R`, `α_L`, `c_L`) lives between phases; each phase runs `m` (or `b`) small GEMMs.
//! Rows are stored block-major: state row `a·b + j` holds the `(a, j)` entry, so the rows that
//! the L-update for one `j` needs are a stride-`b` slice.

use super::kernels::{pack_kt_blocks, tile_pv_set, tile_qk};
use super::softmax::softmax_row;
use super::{check_qkv, resolve_scale};
use crate::primitives::error::{check_nonzero, Error, Result};
use crate::{Par, RealScalar};
use ndarray::linalg::general_mat_mul;
use ndarray::{
    s, Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2,
    Axis, CowArray, Ix2,
};
use rayon::prelude::*;

/// Where the zero padding goes when the block size does not divide `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// Pad at the front: token `t` sits at padded position `t + (N_p − N)`.
    Pre,
    /// Pad at the back: token `t` sits at padded position `t` (the default).
    #[default]
    Post,
}

/// MonarchAttention (Yaras et al., 2025): a drop-in, zero-shot replacement of softmax attention
/// by a Monarch-structured attention matrix found in `steps` rounds of alternating exact
/// maximisation.
///
/// Block size `b ≈ √N` gives `Θ(N^1.5·d)` time and `Θ(N·d)` memory. `b ≥ N` is exact softmax
/// attention. Masked keys (and padding) get weight zero; masked and padded queries carry no
/// weight in the R-update (they do not pull the shared factors towards themselves); a masked
/// query still receives a finite output row (a convex combination of live values computed from
/// the final factors), but not SDPA's output for that row: ignore it as you would padding.
///
/// Errors for `block_size == 0`, `steps == 0` or `steps > `[`MAX_STEPS`] are reported by the
/// methods that compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonarchAttention {
    pub(crate) block_size: usize,
    pub(crate) steps: usize,
    pub(crate) padding: Padding,
    pub(crate) scale: Option<f64>,
    pub(crate) par: Par,
}

/// Most rounds `T` MonarchAttention runs (the paper uses `T ≤ 3`; the factors have converged
/// long before): more is [`Error::TooLarge`], so a caller's number cannot make it run for ever.
pub const MAX_STEPS: usize = 64;

impl MonarchAttention {
    /// Block size `b` and number of rounds `1 ≤ T ≤ `[`MAX_STEPS`] (the paper uses `T ≤ 3`);
    /// post-padding, scale `1/√d`, [`Par::Rayon`].
    pub fn new(block_size: usize, steps: usize) -> Self {
        MonarchAttention {
            block_size,
            steps,
            padding: Padding::Post,
            scale: None,
            par: Par::Rayon,
        }
    }

    /// Where to pad when `b` does not divide `N`.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Score scale `s` in `S = s·Q Kᵀ` (default `1/√d`).
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Threading policy: heads run in parallel under [`Par::Rayon`]; results are identical.
    pub fn par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// Block size `b`.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of rounds `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The attention output `(batch, heads, N, d_v)`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for `b = 0`, `T = 0` or an empty length or feature size (a batch
    /// or head count of 0 gives an empty result); [`Error::TooLarge`] for `T > `[`MAX_STEPS`];
    /// [`Error::ShapeMismatch`] when `q`, `k`, `v` (all with the same `N`) or the `(batch, N)`
    /// mask disagree; [`Error::NonFinite`] for NaN/∞ inputs or scale, and for scores that can
    /// overflow the float type (`max(|scale|, 1)·max‖q‖·max‖k‖` per head above its range);
    /// [`Error::InvalidArgument`] when every key of a batch element is masked.
    pub fn forward<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<Array4<T>> {
        Ok(self.forward_impl(q, k, v, mask, false)?.0)
    }

    /// The output and, per query row `(batch, heads, N)`, the objective `⟨A_row, S_row⟩ +
    /// H(A_row)` reached by the Monarch factors. It is a lower bound of the row's exact
    /// log-sum-exp `ln Σ_keys exp(S)` (equal when `b ≥ N`), so it can stand in for it when
    /// merging this attention with attention over other keys.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_with_objective<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<(Array4<T>, Array3<T>)> {
        let (o, obj) = self.forward_impl(q, k, v, mask, true)?;
        Ok((o, obj.expect("objective requested")))
    }

    /// The Monarch attention matrix `A` `(batch, heads, N, N)` itself, for tests and pictures:
    /// row-stochastic over the unmasked keys, `forward = A·V`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::TooLarge`] for `N > 4096`.
    pub fn attention_matrix<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
    ) -> Result<Array4<T>> {
        let (nb, nh, n, _) = q.dim();
        // A one-column V stands in for the values, which A does not depend on.
        let v = Array4::<T>::zeros((nb, nh, n, 1));
        let setup = self.setup(&q, &k, &v.view(), mask.as_ref())?;
        const MAX_N: usize = 4096;
        if n > MAX_N {
            return Err(Error::TooLarge {
                context: "MonarchAttention::attention_matrix: N".into(),
                value: n,
                max: MAX_N,
            });
        }
        let ctx = "MonarchAttention::attention_matrix";
        let mut out: Array4<T> =
            crate::primitives::error::try_zeros(ndarray::Dim([nb, nh, n, n]), ctx)?;
        let work = out.len();
        let geo = setup.geo;
        let items: Vec<_> = out
            .outer_iter_mut()
            .enumerate()
            .flat_map(|(b, ob)| {
                ob.into_outer_iter_mut()
                    .enumerate()
                    .map(move |(h, oh)| (b, h, oh))
            })
            .collect();
        let run = |(b, h, mut oh): (usize, usize, ArrayViewMut2<T>)| {
            let qh = geo.pad(q.slice(s![b, h, .., ..]));
            let kh = geo.pad(k.slice(s![b, h, .., ..]));
            let ctx = HeadCtx::new(&geo, &setup.keys[b], qh.view(), kh.view(), setup.scale);
            let st = ctx.run(self.steps, false).pop().expect("steps ≥ 1");
            let (bs, m) = (geo.b, geo.m);
            let mut ws = ctx.workspace();
            // R_a for every block, then combine with each L_j.
            let mut rall = Array3::<T>::zeros((m, bs, bs));
            for a in 0..m {
                let mut r = rall.index_axis_mut(Axis(0), a);
                ctx.r_probs(a, st.u.view(), &mut r, &mut ws.lse_b);
            }
            for j in 0..bs {
                ctx.l_probs(j, &st, &mut ws.p, &mut ws.lse_m);
                for l in 0..m {
                    let Some(row) = geo.unpad(l * bs + j) else {
                        continue;
                    };
                    for a in 0..m {
                        let w = ws.p[[l, a]];
                        for i in 0..bs {
                            if let Some(col) = geo.unpad(a * bs + i) {
                                oh[[row, col]] = w * rall[[a, j, i]];
                            }
                        }
                    }
                }
            }
        };
        if self.par.should_split(work) {
            items.into_par_iter().for_each(run);
        } else {
            items.into_iter().for_each(run);
        }
        super::check_overflow(
            "MonarchAttention::attention_matrix",
            &[out.view()],
            self.par,
        )?;
        Ok(out)
    }

    fn forward_impl<T: RealScalar>(
        &self,
        q: ArrayView4<T>,
        k: ArrayView4<T>,
        v: ArrayView4<T>,
        mask: Option<ArrayView2<bool>>,
        want_obj: bool,
    ) -> Result<(Array4<T>, Option<Array3<T>>)> {
        let setup = self.setup(&q, &k, &v, mask.as_ref())?;
        let (nb, nh, n, _) = q.dim();
        let dv = v.dim().3;
        let geo = setup.geo;
        let mut out = Array4::<T>::zeros((nb, nh, n, dv));
        let mut obj = want_obj.then(|| Array3::<T>::zeros((nb, nh, n)));
        let mut items = Vec::with_capacity(nb * nh);
        {
            let mut objs: Vec<Option<ArrayViewMut1<T>>> = match obj.as_mut() {
                Some(o) => o
                    .outer_iter_mut()
                    .flat_map(|ob| ob.into_outer_iter_mut().map(Some))
                    .collect(),
                None => (0..nb * nh).map(|_| None).collect(),
            };
            let mut objs = objs.drain(..);
            for (b, ob) in out.outer_iter_mut().enumerate() {
                for (h, oh) in ob.into_outer_iter_mut().enumerate() {
                    items.push((b, h, oh, objs.next().flatten()));
                }
            }
        }
        let work = nb * nh * n * (geo.b + geo.m) * (q.dim().3 + dv) * self.steps;
        // Fewer heads than about two per thread leave threads idle: split inside each head too.
        let inner = self.par.should_split(work / items.len().max(1))
            && items.len() < 2 * rayon::current_num_threads();
        let run = |(b, h, oh, objh): (usize, usize, ArrayViewMut2<T>, Option<ArrayViewMut1<T>>)| {
            let qh = geo.pad(q.slice(s![b, h, .., ..]));
            let kh = geo.pad(k.slice(s![b, h, .., ..]));
            let vh = geo.pad(v.slice(s![b, h, .., ..]));
            let ctx =
                HeadCtx::new(&geo, &setup.keys[b], qh.view(), kh.view(), setup.scale).split(inner);
            let (mut sts, y) = ctx.run_with_values(self.steps, false, Some(vh.view()));
            let st = sts.pop().expect("steps ≥ 1");
            ctx.output(&st, &y.expect("values requested"), oh, objh);
        };
        if self.par.should_split(work) && items.len() > 1 {
            items.into_par_iter().for_each(run);
        } else {
            items.into_iter().for_each(run);
        }
        super::check_overflow("MonarchAttention", &[out.view()], self.par)?;
        if let Some(o) = &obj {
            super::check_overflow("MonarchAttention: objective", &[o.view()], self.par)?;
        }
        Ok((out, obj))
    }

    /// Validates everything and precomputes the per-batch key/query facts.
    pub(crate) fn setup<T: RealScalar>(
        &self,
        q: &ArrayView4<T>,
        k: &ArrayView4<T>,
        v: &ArrayView4<T>,
        mask: Option<&ArrayView2<bool>>,
    ) -> Result<Setup<T>> {
        check_nonzero(self.block_size, "MonarchAttention: block size")?;
        check_nonzero(self.steps, "MonarchAttention: steps")?;
        if self.steps > MAX_STEPS {
            return Err(Error::TooLarge {
                context: "MonarchAttention: steps (rounds T)".into(),
                value: self.steps,
                max: MAX_STEPS,
            });
        }
        let (nb, _, nq, nk, d, _) = check_qkv("MonarchAttention", q, k, v, mask, self.par)?;
        if nq != nk {
            return Err(Error::shape(
                "MonarchAttention: key length (self-attention needs N_k = N_q)",
                nq,
                nk,
            ));
        }
        let scale: T = resolve_scale(self.scale, d)?;
        super::check_score_range("MonarchAttention", q, k, scale, self.par)?;
        let geo = Geometry::new(nq, self.block_size, self.padding);
        let keys = (0..nb)
            .map(|b| BatchKeys::new(&geo, mask.map(|m| m.row(b))))
            .collect();
        Ok(Setup { geo, keys, scale })
    }
}

pub(crate) struct Setup<T> {
    pub geo: Geometry,
    pub keys: Vec<BatchKeys<T>>,
    pub scale: T,
}

/// Block geometry shared by all heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Sequence length.
    pub n: usize,
    /// Block size (clamped to `N`: a larger block is one block of `N`).
    pub b: usize,
    /// Number of blocks.
    pub m: usize,
    /// Padded length `m·b`.
    pub np: usize,
    /// Padding in front (0 for post-padding).
    pub pre: usize,
}

impl Geometry {
    fn new(n: usize, block: usize, padding: Padding) -> Self {
        let b = block.min(n);
        let m = n.div_ceil(b);
        let np = m * b;
        let pre = match padding {
            Padding::Pre => np - n,
            Padding::Post => 0,
        };
        Geometry { n, b, m, np, pre }
    }

    /// Original index of padded position `p`, if it is a real token.
    #[inline]
    pub fn unpad(&self, p: usize) -> Option<usize> {
        p.checked_sub(self.pre).filter(|&t| t < self.n)
    }

    /// A head's `(N, d)` rows at their padded positions (a borrow when nothing is padded).
    pub fn pad<'a, T: RealScalar>(&self, x: ArrayView2<'a, T>) -> CowArray<'a, T, Ix2> {
        if self.np == self.n {
            return CowArray::from(x);
        }
        let mut p = Array2::zeros((self.np, x.ncols()));
        p.slice_mut(s![self.pre..self.pre + self.n, ..]).assign(&x);
        CowArray::from(p)
    }
}

/// Which padded positions take part, for one batch element.
pub(crate) struct BatchKeys<T> {
    /// Query weight in the R-update: 1 for real unmasked tokens, 0 for padding and masked ones.
    pub qw: Vec<T>,
    /// Additive key bias (0 or −∞); `None` when every padded position is a live key.
    pub bias: Option<Vec<T>>,
    /// Whether key block `a` holds at least one live key.
    pub block_live: Vec<bool>,
}

impl<T: RealScalar> BatchKeys<T> {
    fn new(geo: &Geometry, mask: Option<ArrayView1<bool>>) -> Self {
        let live: Vec<bool> = (0..geo.np)
            .map(|p| match geo.unpad(p) {
                None => false,
                Some(t) => mask.as_ref().is_none_or(|m| m[t]),
            })
            .collect();
        let qw = live
            .iter()
            .map(|&x| if x { T::one() } else { T::zero() })
            .collect();
        let bias = (!live.iter().all(|&x| x)).then(|| {
            live.iter()
                .map(|&x| if x { T::zero() } else { T::neg_infinity() })
                .collect()
        });
        let block_live = live.chunks(geo.b).map(|c| c.iter().any(|&x| x)).collect();
        BatchKeys {
            qw,
            bias,
            block_live,
        }
    }
}

/// State of one round: the R-update's input (`u`, `c_R`) and output (`α_L`, `c_L`), all
/// `N_p` rows in block-major order (row `a·b + j`).
#[derive(Debug, Clone)]
pub(crate) struct StepState<T> {
    pub u: Array2<T>,
    pub cr: Vec<T>,
    pub al: Array2<T>,
    pub cl: Vec<T>,
}

/// Scratch of one head.
pub(crate) struct Workspace<T> {
    /// `m × m` L-probabilities `P[l, a] = L_j[a, l]`.
    pub p: Array2<T>,
    /// `b × b` R-probabilities.
    pub r: Array2<T>,
    pub lse_b: Vec<T>,
    pub lse_m: Vec<T>,
}

/// One head's padded inputs.
pub(crate) struct HeadCtx<'a, T> {
    pub geo: &'a Geometry,
    pub keys: &'a BatchKeys<T>,
    pub q: ArrayView2<'a, T>,
    pub k: ArrayView2<'a, T>,
    pub scale: T,
    /// `Kᵀ` of each key block packed for the f32 kernels (`None` when they do not apply).
    pub kt: Option<Vec<T>>,
    /// Split each phase's independent blocks over the rayon pool (for few heads on many
    /// threads); the arithmetic is the same either way, so results are bitwise identical.
    pub split: bool,
}

impl<'a, T: RealScalar> HeadCtx<'a, T> {
    pub fn new(
        geo: &'a Geometry,
        keys: &'a BatchKeys<T>,
        q: ArrayView2<'a, T>,
        k: ArrayView2<'a, T>,
        scale: T,
    ) -> Self {
        let kt = pack_kt_blocks(&k, geo.b);
        HeadCtx {
            geo,
            keys,
            q,
            k,
            scale,
            kt,
            split: false,
        }
    }

    /// Sets [`split`](Self::split).
    pub fn split(mut self, split: bool) -> Self {
        self.split = split;
        self
    }

    pub fn workspace(&self) -> Workspace<T> {
        let (b, m) = (self.geo.b, self.geo.m);
        Workspace {
            p: Array2::zeros((m, m)),
            r: Array2::zeros((b, b)),
            lse_b: vec![T::zero(); b],
            lse_m: vec![T::zero(); m],
        }
    }

    /// Runs `steps` rounds up to the last R-update. Returns every round's state when
    /// `keep_all` (for the VJP), else only the last.
    pub fn run(&self, steps: usize, keep_all: bool) -> Vec<StepState<T>> {
        self.run_with_values(steps, keep_all, None).0
    }

    /// As [`run`](Self::run), and if `v` is given also the last round's values
    /// `y[a·b + j] = Σ_i R_a[j, i]·v_{a·b+i}`, computed while `R` is at hand.
    pub fn run_with_values(
        &self,
        steps: usize,
        keep_all: bool,
        v: Option<ArrayView2<T>>,
    ) -> (Vec<StepState<T>>, Option<Array2<T>>) {
        let (np, d) = (self.geo.np, self.q.ncols());
        let qw = &self.keys.qw;
        // Round 1 starts from L = I: u = q, c_R = 1 for live queries, 0 (and u = 0) otherwise.
        let mut u = self.q.to_owned();
        for (mut row, &w) in u.outer_iter_mut().zip(qw) {
            if w == T::zero() {
                row.fill(T::zero());
            }
        }
        let mut st = StepState {
            u,
            cr: qw.clone(),
            al: Array2::zeros((np, d)),
            cl: vec![T::zero(); np],
        };
        let mut ws = self.workspace();
        let mut all = Vec::new();
        let mut y = v.map(|v| (v, Array2::zeros((np, v.ncols()))));
        for t in 0..steps {
            let last = t + 1 == steps;
            let yy = if last {
                y.as_mut().map(|(v, y)| (*v, y))
            } else {
                None
            };
            self.r_phase(&mut st, &mut ws, yy);
            if last {
                break;
            }
            if keep_all {
                all.push(st.clone());
            }
            self.l_to_next(&mut st, &mut ws);
        }
        all.push(st);
        (all, y.map(|(_, y)| y))
    }

    /// `R_a` (`b × b`) from `u`: `softmax(s·U_a K_aᵀ + bias)`; `lse[j]` gets each row's
    /// log-sum-exp. A block without live keys gets all-zero rows.
    pub fn r_probs(&self, a: usize, u: ArrayView2<T>, r: &mut ArrayViewMut2<T>, lse: &mut [T]) {
        let bs = self.geo.b;
        let rows = a * bs..(a + 1) * bs;
        if !self.keys.block_live[a] {
            r.fill(T::zero());
            lse.fill(T::neg_infinity());
            return;
        }
        let ua = u.slice(s![rows.clone(), ..]);
        let ka = self.k.slice(s![rows.clone(), ..]);
        let d = self.k.ncols();
        let packed = self
            .kt
            .as_deref()
            .map(|p| (&p[a * bs * d..(a + 1) * bs * d], bs, 0));
        tile_qk(self.scale, &ua, &ka, packed, r);
        for (j, mut row) in r.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("contiguous R rows");
            if let Some(bias) = &self.keys.bias {
                for (x, &bb) in row.iter_mut().zip(&bias[rows.clone()]) {
                    *x += bb;
                }
            }
            let (mx, sum) = softmax_row(row);
            lse[j] = mx + sum.ln();
        }
    }

    /// Runs `f` on every item of a phase, over the pool with per-task scratch when
    /// [`split`](Self::split), else in order with `ws`. Items are independent and `f` does the
    /// same arithmetic either way, so results do not depend on it.
    fn each<I: Send>(
        &self,
        items: Vec<I>,
        ws: &mut Workspace<T>,
        f: impl Fn(&mut Workspace<T>, I) + Sync,
    ) {
        if self.split {
            items
                .into_par_iter()
                .for_each_init(|| self.workspace(), |w, it| f(w, it));
        } else {
            for it in items {
                f(ws, it);
            }
        }
    }

    /// R-update for every block: fills `st.al`, `st.cl` from `st.u` (and `y` from `v` when
    /// `values` are given). Blocks are independent, so with [`split`](Self::split) they run in
    /// parallel with the same arithmetic as in sequence.
    fn r_phase(
        &self,
        st: &mut StepState<T>,
        ws: &mut Workspace<T>,
        values: Option<(ArrayView2<T>, &mut Array2<T>)>,
    ) {
        let (bs, m) = (self.geo.b, self.geo.m);
        let StepState { u, al, cl, .. } = st;
        let u = u.view();
        let ys: Vec<Option<(ArrayView2<T>, ArrayViewMut2<T>)>> = match values {
            Some((v, y)) => (0..m)
                .map(|a| v.slice_move(s![a * bs..(a + 1) * bs, ..]))
                .zip(y.axis_chunks_iter_mut(Axis(0), bs))
                .map(Some)
                .collect(),
            None => (0..m).map(|_| None).collect(),
        };
        let items: Vec<_> = al
            .axis_chunks_iter_mut(Axis(0), bs)
            .zip(cl.chunks_mut(bs))
            .zip(ys)
            .enumerate()
            .collect();
        self.each(items, ws, |w, (a, ((ala, cla), ya))| {
            self.r_block(a, u, ala, cla, ya, w)
        });
    }

    /// R-update of key block `a`: its rows `ala` of `α_L`, `cla` of `c_L` and, with `values`
    /// (`v`'s rows of the block, `y`'s rows to fill), `y`.
    fn r_block(
        &self,
        a: usize,
        u: ArrayView2<T>,
        mut ala: ArrayViewMut2<T>,
        cla: &mut [T],
        values: Option<(ArrayView2<T>, ArrayViewMut2<T>)>,
        ws: &mut Workspace<T>,
    ) {
        let bs = self.geo.b;
        let rows = a * bs..(a + 1) * bs;
        let mut r = ws.r.view_mut();
        self.r_probs(a, u, &mut r, &mut ws.lse_b);
        if !self.keys.block_live[a] {
            ala.fill(T::zero());
            cla.fill(T::zero());
            return;
        }
        let ka = self.k.slice(s![rows.clone(), ..]);
        tile_pv_set(&ws.r.view_mut(), &ka, &mut ala);
        if let Some((va, mut ya)) = values {
            tile_pv_set(&ws.r.view_mut(), &va, &mut ya);
        }
        // Σ_i R log R = Σ_i R·(z_i − lse) = ⟨u, α_L⟩ − lse: no per-entry logarithm. Each row is
        // scaled (α_L = s·R·K) in the same pass, on slices so the loops vectorise.
        let sc = self.scale;
        for (j, p) in rows.enumerate() {
            let mut arow = ala.row_mut(j);
            let ur = u.row(p);
            let dot = match (ur.as_slice(), arow.as_slice_mut()) {
                (Some(ur), Some(ar)) => {
                    let mut acc = [T::zero(); 8];
                    let (mut uc, mut ac) = (ur.chunks_exact(8), ar.chunks_exact_mut(8));
                    for (x8, y8) in (&mut uc).zip(&mut ac) {
                        for ((a, &x), y) in acc.iter_mut().zip(x8).zip(y8) {
                            *y *= sc;
                            *a += x * *y;
                        }
                    }
                    let mut rest = T::zero();
                    for (&x, y) in uc.remainder().iter().zip(ac.into_remainder()) {
                        *y *= sc;
                        rest += x * *y;
                    }
                    acc.iter().fold(rest, |s, &a| s + a)
                }
                _ => {
                    arow.mapv_inplace(|x| x * sc);
                    ur.iter().zip(arow.iter()).map(|(&x, &y)| x * y).sum()
                }
            };
            cla[j] = dot - ws.lse_b[j];
        }
    }

    /// `P[l, a] = L_j[a, l] = softmax_a(⟨q_{l·b+j}, α_L[j, a]⟩ − c_L[j, a])`; `lse[l]` gets the
    /// row objective.
    pub fn l_probs(&self, j: usize, st: &StepState<T>, p: &mut Array2<T>, lse: &mut [T]) {
        self.l_probs_of(j, st.al.view(), &st.cl, p, lse);
    }

    /// [`l_probs`](Self::l_probs) from `α_L` and `c_L` alone (so a caller may write the rest of
    /// the state meanwhile).
    fn l_probs_of(&self, j: usize, al: ArrayView2<T>, cl: &[T], p: &mut Array2<T>, lse: &mut [T]) {
        let bs = self.geo.b;
        let qj = self.q.slice(s![j..;bs, ..]);
        let alj = al.slice(s![j..;bs, ..]);
        let m = self.geo.m;
        let packed = pack_kt_blocks(&alj, m);
        tile_qk(
            T::one(),
            &qj,
            &alj,
            packed.as_deref().map(|x| (x, m, 0)),
            &mut p.view_mut(),
        );
        for (l, mut row) in p.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("contiguous P rows");
            for (a, x) in row.iter_mut().enumerate() {
                *x = if self.keys.block_live[a] {
                    *x - cl[a * bs + j]
                } else {
                    T::neg_infinity()
                };
            }
            let (mx, sum) = softmax_row(row);
            lse[l] = mx + sum.ln();
        }
    }

    /// L-update followed by the next round's `u = α_R / c_R`, `c_R` (overwrites `st.u`, `st.cr`).
    /// Each `j` writes its own stride-`b` rows, so with [`split`](Self::split) they run in
    /// parallel with the same arithmetic as in sequence.
    fn l_to_next(&self, st: &mut StepState<T>, ws: &mut Workspace<T>) {
        let (bs, m) = (self.geo.b, self.geo.m);
        let StepState { u, cr, al, cl } = st;
        let (al, cl) = (al.view(), &cl[..]);
        let d = u.ncols();
        // Row `a·b + j` of `u` (entry `a·b + j` of `c_R`) as entry `[j, a]`.
        let mut uv = u
            .view_mut()
            .into_shape_with_order((m, bs, d))
            .expect("u is m·b standard-layout rows")
            .permuted_axes([1, 0, 2]);
        let mut cv = ArrayViewMut1::from(&mut cr[..])
            .into_shape_with_order((m, bs))
            .expect("c_R has m·b entries")
            .reversed_axes();
        let items: Vec<_> = uv
            .axis_iter_mut(Axis(0))
            .zip(cv.axis_iter_mut(Axis(0)))
            .enumerate()
            .collect();
        let body =
            |ws: &mut Workspace<T>,
             (j, (mut uj, mut crj)): (usize, (ArrayViewMut2<T>, ArrayViewMut1<T>))| {
                let qw = &self.keys.qw;
                self.l_probs_of(j, al, cl, &mut ws.p, &mut ws.lse_m);
                // Padded and masked queries carry no weight.
                for (l, mut row) in ws.p.outer_iter_mut().enumerate() {
                    let w = qw[l * bs + j];
                    if w != T::one() {
                        row.mapv_inplace(|x| x * w);
                    }
                }
                let qj = self.q.slice(s![j..;bs, ..]);
                general_mat_mul(T::one(), &ws.p.t(), &qj, T::zero(), &mut uj);
                for (a, mut row) in uj.outer_iter_mut().enumerate() {
                    let c: T = ws.p.column(a).sum();
                    crj[a] = c;
                    if c > T::zero() {
                        // Divide, not multiply by 1/c: c may be subnormal, where 1/c overflows to
                        // infinity and an underflowed (zero) entry would turn into NaN.
                        row.mapv_inplace(|x| x / c);
                    } else {
                        row.fill(T::zero());
                    }
                }
            };
        self.each(items, ws, body);
    }

    /// Final L-update and output rows (and objective) for the real tokens.
    fn output(
        &self,
        st: &StepState<T>,
        y: &Array2<T>,
        mut out: ArrayViewMut2<T>,
        mut obj: Option<ArrayViewMut1<T>>,
    ) {
        let (bs, m, dv) = (self.geo.b, self.geo.m, y.ncols());
        // Each `j` into its own slab, then the rows in place (O(N·d) copies against O(N·m·d)
        // work): the output rows of one `j` are strided and shifted by padding.
        let mut slab = Array3::<T>::zeros((bs, m, dv));
        let mut lses = Array2::<T>::zeros((bs, m));
        let items: Vec<_> = slab
            .outer_iter_mut()
            .zip(lses.outer_iter_mut())
            .enumerate()
            .collect();
        self.each(items, &mut self.workspace(), |ws, (j, (mut oj, mut lj))| {
            self.l_probs(j, st, &mut ws.p, &mut ws.lse_m);
            let yj = y.slice(s![j..;bs, ..]);
            tile_pv_set(&ws.p.view_mut(), &yj, &mut oj);
            lj.assign(&ArrayView1::from(&ws.lse_m[..]));
        });
        for j in 0..bs {
            for l in 0..m {
                if let Some(t) = self.geo.unpad(l * bs + j) {
                    out.row_mut(t).assign(&slab.slice(s![j, l, ..]));
                    if let Some(o) = obj.as_mut() {
                        o[t] = lses[[j, l]];
                    }
                }
            }
        }
    }
}
