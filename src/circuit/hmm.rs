//! A hidden Markov model whose transition matrix is a row-stochastic [`MonarchChain`]:
//! log-space forward algorithm, forward–backward posteriors and EM on expected flows.
//!
//! `T[i, j] = P(z_{t+1} = j | z_t = i)` is the chain `M` (every block row-stochastic), the
//! emissions `E[i, o] = P(x_t = o | z_t = i)` are categorical. In log space
//! `log α_{t+1} = log(Mᵀ exp(log α_t)) + log E[:, x_{t+1}]` runs through the transposed chain
//! and `log β_t = log(M exp(log E[:, x_{t+1}] + log β_{t+1}))` through the chain, factor by
//! factor with [`MonarchChain::log_matmul`]'s kernel.
//!
//! EM treats every block row as a categorical choice of the path from `z_t` to `z_{t+1}`
//! through the factors, so it is exact EM on that latent-path model and never decreases the
//! likelihood. The expected flow through entry `(u, v)` of factor `B` is
//! `Σ_t B[u, v] · D_t(u) · V_t(v) / P(x)`, with `D_t` the forward (top-down) value at the
//! factor's output and `V_t` the backward (bottom-up) value at its input; the new block rows
//! are the normalised flows.

use crate::circuit::stochastic::{
    check_chain_stochastic, check_distribution, check_row_stochastic,
};
use crate::circuit::MonarchChain;
use crate::primitives::blockdiag::BlockDiag;
use crate::primitives::error::{Error, Result};
use crate::{Par, Perm, RealScalar};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// A hidden Markov model with a (Monarch-chain or dense) row-stochastic transition matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Hmm<T> {
    pi: Array1<T>,
    trans: MonarchChain<T>,
    emit: Array2<T>,
}

/// Expected sufficient statistics of a batch of sequences (the E-step's output).
#[derive(Debug, Clone, PartialEq)]
pub struct Flows<T> {
    /// `log P(x)` of each sequence under the current parameters.
    pub log_likelihood: Array1<T>,
    /// Expected count of each initial state (sums to the number of sequences).
    pub initial: Array1<T>,
    /// Expected flow through every entry of every transition factor, shaped like the factors;
    /// each factor's flows sum to the number of transitions `nseq·(len − 1)`.
    pub transition: Vec<Array3<T>>,
    /// Expected count of (state, symbol) pairs, `(states, vocab)`.
    pub emission: Array2<T>,
}

impl<T: RealScalar> Hmm<T> {
    /// An HMM from its initial distribution `pi` (`h`), a square transition chain whose blocks
    /// are all row-stochastic, and emissions `emit` (`h × vocab`, rows summing to one).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the sizes disagree, [`Error::ZeroSize`] for an empty
    /// vocabulary, [`Error::InvalidArgument`] / [`Error::NonFinite`] for a negative, non-finite
    /// or non-normalised probability.
    pub fn new(pi: Array1<T>, trans: MonarchChain<T>, emit: Array2<T>) -> Result<Self> {
        let h = pi.len();
        if h == 0 {
            return Err(Error::zero("Hmm: number of states"));
        }
        if trans.in_features() != h || trans.out_features() != h {
            return Err(Error::shape(
                "Hmm: transition shape (states × states)",
                (h, h),
                (trans.out_features(), trans.in_features()),
            ));
        }
        if emit.nrows() != h {
            return Err(Error::shape("Hmm: emission rows (states)", h, emit.nrows()));
        }
        if emit.ncols() == 0 {
            return Err(Error::zero("Hmm: vocabulary size (emission columns)"));
        }
        check_distribution(pi.view(), "Hmm: initial distribution")?;
        check_chain_stochastic(&trans, "Hmm: transition")?;
        check_row_stochastic(emit.view(), "Hmm: emissions")?;
        Ok(Hmm { pi, trans, emit })
    }

    /// An HMM from weights laid out as the public MonarchHMM code stores them: the transition
    /// factors `factors` in its list order (applied last to first, each followed by the
    /// transpose of its `(n/bs, bs)` view: [`MonarchChain::from_factors_hmm`]), every block
    /// row-stochastic, with `pi` and `emit` as in [`Hmm::new`]. For three or more factors this
    /// is not the matrix [`MonarchChain::from_factors`] would build from the same list.
    ///
    /// # Errors
    /// As [`MonarchChain::from_factors_hmm`] and [`Hmm::new`].
    pub fn from_monarch_hmm(
        pi: Array1<T>,
        factors: Vec<Array3<T>>,
        emit: Array2<T>,
    ) -> Result<Self> {
        Self::new(pi, MonarchChain::from_factors_hmm(factors)?, emit)
    }

    /// A dense HMM (the baseline): the transition is one `h × h` block, rows summing to one.
    /// It runs the same log-space code as the Monarch one, with a single dense factor.
    ///
    /// # Errors
    /// As [`Hmm::new`]; [`Error::ShapeMismatch`] if `trans` is not square.
    pub fn dense(pi: Array1<T>, trans: Array2<T>, emit: Array2<T>) -> Result<Self> {
        let (r, c) = trans.dim();
        if r != c {
            return Err(Error::shape(
                "Hmm::dense: transition must be square",
                (r, r),
                (r, c),
            ));
        }
        if r == 0 {
            return Err(Error::zero("Hmm::dense: number of states"));
        }
        let bd = BlockDiag::new(trans.insert_axis(Axis(0)))?;
        let chain =
            MonarchChain::from_parts_any(vec![Perm::identity(r), Perm::identity(r)], vec![bd])?;
        Self::new(pi, chain, emit)
    }

    /// The product of two HMMs over the same vocabulary (circuit multiplication): states
    /// `(i1, i2)` with index `i1·h2 + i2`, initial `π1 ⊗ π2`, transition `T1 ⊗ T2` as a
    /// tied-block Monarch ([`MonarchChain::kronecker`] of the dense transitions), emissions
    /// `E1[i1, o]·E2[i2, o]` renormalised per state.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the vocabularies differ; [`Error::InvalidArgument`] if some
    /// pair of states has no symbol in common (its emission row would be all zero).
    pub fn product(&self, other: &Hmm<T>) -> Result<Hmm<T>> {
        let (h1, v) = self.emit.dim();
        let (h2, v2) = other.emit.dim();
        if v != v2 {
            return Err(Error::shape("Hmm::product: vocabulary sizes", v, v2));
        }
        let t1 = self.trans.to_dense();
        let t2 = other.trans.to_dense();
        let trans = MonarchChain::kronecker(t1.view(), t2.view())?;
        let pi = Array1::from_shape_fn(h1 * h2, |i| self.pi[i / h2] * other.pi[i % h2]);
        let mut emit = Array2::from_shape_fn((h1 * h2, v), |(i, o)| {
            self.emit[[i / h2, o]] * other.emit[[i % h2, o]]
        });
        for (i, mut row) in emit.rows_mut().into_iter().enumerate() {
            let s: T = row.sum();
            if s <= T::zero() {
                return Err(Error::invalid(format!(
                    "Hmm::product: states ({}, {}) share no symbol; their product emits nothing",
                    i / h2,
                    i % h2
                )));
            }
            row.mapv_inplace(|e| e / s);
        }
        // Renormalise away the rounding of the products so the checks in `new` hold exactly.
        let s: T = pi.sum();
        Hmm::new(pi.mapv(|p| p / s), trans, emit)
    }

    /// Number of hidden states.
    pub fn num_states(&self) -> usize {
        self.pi.len()
    }
    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.emit.ncols()
    }
    /// Initial distribution.
    pub fn initial(&self) -> ArrayView1<'_, T> {
        self.pi.view()
    }
    /// The transition chain (`T = M`, rows = current state).
    pub fn transition(&self) -> &MonarchChain<T> {
        &self.trans
    }
    /// Emission probabilities `(states, vocab)`.
    pub fn emission(&self) -> ArrayView2<'_, T> {
        self.emit.view()
    }
    /// Free parameters stored (initial + transition + emission entries).
    pub fn num_params(&self) -> usize {
        self.pi.len() + self.trans.num_params() + self.emit.len()
    }

    fn check_obs(&self, obs: ArrayView2<usize>, ctx: &str) -> Result<()> {
        // No sequences is an empty batch (empty results); empty sequences are an error.
        let len = obs.ncols();
        if len == 0 {
            return Err(Error::zero(format!("{ctx}: sequence length")));
        }
        if let Some(((sq, t), &o)) = obs.indexed_iter().find(|(_, &o)| o >= self.vocab()) {
            return Err(Error::TooLarge {
                context: format!("{ctx}: symbol of sequence {sq} at position {t}"),
                value: o,
                max: self.vocab() - 1,
            });
        }
        Ok(())
    }

    /// `log E` transposed: row `o` holds `log E[:, o]`.
    fn log_emit_t(&self) -> Array2<T> {
        self.emit.t().mapv(|e| e.ln())
    }

    fn add_emission(x: &mut Array2<T>, log_et: &Array2<T>, obs: ArrayView1<usize>) {
        for (mut row, &o) in x.rows_mut().into_iter().zip(obs.iter()) {
            row += &log_et.row(o);
        }
    }

    /// Forward pass: `log α_t` for every position, `(nseq, h)` each, and `log P(x)` per sequence.
    fn forward(&self, obs: ArrayView2<usize>, par: Par) -> (Vec<Array2<T>>, Array1<T>) {
        let (nseq, len) = obs.dim();
        let h = self.num_states();
        let log_et = self.log_emit_t();
        let mt = self.trans.transpose();
        let mut la = Vec::with_capacity(len);
        let mut a0 = Array2::from_shape_fn((nseq, h), |(_, i)| self.pi[i].ln());
        Self::add_emission(&mut a0, &log_et, obs.column(0));
        la.push(a0);
        for t in 1..len {
            let mut a = mt
                .log_trace(la[t - 1].view(), par, false)
                .pop()
                .expect("k ≥ 1");
            Self::add_emission(&mut a, &log_et, obs.column(t));
            la.push(a);
        }
        let ll = la[len - 1].rows().into_iter().map(logsumexp).collect();
        (la, ll)
    }

    /// `log P(x)` of each sequence (rows of `obs`, shape `(nseq, len)`, symbols `< vocab`), by
    /// the forward algorithm in log space.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for empty sequences (no sequences give an empty result),
    /// [`Error::TooLarge`] for a symbol
    /// outside the vocabulary.
    pub fn log_likelihood(&self, obs: ArrayView2<usize>) -> Result<Array1<T>> {
        self.check_obs(obs, "Hmm::log_likelihood")?;
        Ok(self.forward(obs, Par::Rayon).1)
    }

    /// Posterior marginals `P(z_t = i | x)` by forward–backward, shape `(nseq, len, h)`; each
    /// `(s, t)` row sums to one (sequences of probability zero give NaN rows).
    ///
    /// # Errors
    /// As [`Hmm::log_likelihood`].
    pub fn posteriors(&self, obs: ArrayView2<usize>) -> Result<Array3<T>> {
        self.check_obs(obs, "Hmm::posteriors")?;
        let (nseq, len) = obs.dim();
        let mut post = Array3::zeros((nseq, len, self.num_states()));
        self.forward_backward(obs, Some(&mut post), None, Par::Rayon);
        Ok(post)
    }

    /// The E-step: expected initial, transition-flow and emission counts summed over the
    /// sequences, and each sequence's log-likelihood. A sequence of probability zero
    /// (log-likelihood `−∞`) makes the counts NaN; [`em_step`](Hmm::em_step) rejects it.
    ///
    /// # Errors
    /// As [`Hmm::log_likelihood`].
    pub fn expected_flows(&self, obs: ArrayView2<usize>) -> Result<Flows<T>> {
        self.check_obs(obs, "Hmm::expected_flows")?;
        let mut flows = Flows {
            log_likelihood: Array1::zeros(obs.nrows()),
            initial: Array1::zeros(self.num_states()),
            transition: self
                .trans
                .factors()
                .iter()
                .map(|f| Array3::zeros(f.weights().dim()))
                .collect(),
            emission: Array2::zeros(self.emit.dim()),
        };
        self.forward_backward(obs, None, Some(&mut flows), Par::Rayon);
        Ok(flows)
    }

    /// One EM step on the sequences `obs`: E-step, then every block row, the initial
    /// distribution and every emission row set to its normalised expected counts (rows that
    /// received no flow are kept). Returns the total log-likelihood *before* the update; the
    /// likelihood after it is never lower.
    ///
    /// # Errors
    /// As [`Hmm::log_likelihood`], and [`Error::ZeroSize`] for no sequences; [`Error::NonFinite`]
    /// if some sequence has probability zero
    /// under the current model (the model is then left unchanged).
    pub fn em_step(&mut self, obs: ArrayView2<usize>) -> Result<T> {
        if obs.nrows() == 0 {
            return Err(Error::zero(
                "Hmm::em_step: number of sequences (EM has nothing to fit)",
            ));
        }
        let f = self.expected_flows(obs)?;
        if f.log_likelihood.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                context: "Hmm::em_step: a sequence has probability zero or the E-step overflowed"
                    .into(),
            });
        }
        let s: T = f.initial.sum();
        self.pi = f.initial.mapv(|c| c / s);
        normalise_rows_into(f.emission.view(), self.emit.view_mut());
        for (bd, fl) in self.trans.factors.iter_mut().zip(&f.transition) {
            let mut w = bd.weights_mut();
            for (src, dst) in fl.outer_iter().zip(w.outer_iter_mut()) {
                normalise_rows_into(src, dst);
            }
        }
        Ok(f.log_likelihood.sum())
    }

    /// Backward pass; fills posteriors and/or flows.
    fn forward_backward(
        &self,
        obs: ArrayView2<usize>,
        mut post: Option<&mut Array3<T>>,
        mut flows: Option<&mut Flows<T>>,
        par: Par,
    ) {
        let (nseq, len) = obs.dim();
        let h = self.num_states();
        let (la, ll) = self.forward(obs, par);
        let log_et = self.log_emit_t();
        let mt = self.trans.transpose();
        let k = self.trans.num_factors();
        let mut lb = Array2::<T>::zeros((nseq, h));
        for t in (0..len).rev() {
            let mut g = &la[t] + &lb;
            for (mut row, &l) in g.rows_mut().into_iter().zip(ll.iter()) {
                row.mapv_inplace(|v| (v - l).exp());
            }
            if let Some(p) = post.as_deref_mut() {
                p.slice_mut(s![.., t, ..]).assign(&g);
            }
            if let Some(f) = flows.as_deref_mut() {
                for (row, &o) in g.rows().into_iter().zip(obs.column(t)) {
                    let mut col = f.emission.column_mut(o);
                    col += &row;
                }
                if t == 0 {
                    f.initial += &g.sum_axis(Axis(0));
                }
            }
            if t == 0 {
                break;
            }
            let mut v = lb;
            Self::add_emission(&mut v, &log_et, obs.column(t));
            let mut vtrace = self.trans.log_trace(v.view(), par, flows.is_some());
            if let Some(f) = flows.as_deref_mut() {
                let dtrace = mt.log_trace(la[t - 1].view(), par, true);
                for (l, acc) in f.transition.iter_mut().enumerate() {
                    accumulate_flows(dtrace[k - 1 - l].view(), vtrace[l].view(), &ll, acc);
                }
            }
            lb = vtrace.pop().expect("k ≥ 1");
        }
        if let Some(f) = flows {
            for (acc, bd) in f.transition.iter_mut().zip(self.trans.factors()) {
                *acc *= &bd.weights();
            }
            f.log_likelihood = ll;
        }
    }

    /// Samples `nseq` sequences of length `len` (seeded), `(nseq, len)` symbols.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] if `len` is zero (`nseq == 0` gives an empty `(0, len)` array);
    /// [`Error::TooLarge`] if the result cannot be allocated.
    pub fn sample(&self, nseq: usize, len: usize, seed: u64) -> Result<Array2<usize>> {
        if len == 0 {
            return Err(Error::zero(format!(
                "Hmm::sample: sequence length (nseq, len) = ({nseq}, {len})"
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let h = self.num_states();
        let size = std::mem::size_of::<usize>().max(std::mem::size_of::<T>());
        crate::primitives::error::check_alloc(&[nseq, len.max(h)], size, "Hmm::sample")?;
        let mt = self.trans.transpose();
        let mut out: Array2<usize> =
            crate::primitives::error::try_zeros(ndarray::Dim([nseq, len]), "Hmm::sample")?;
        let mut state: Vec<usize> = (0..nseq).map(|_| draw(&mut rng, self.pi.view())).collect();
        for t in 0..len {
            for (sq, &z) in state.iter().enumerate() {
                out[[sq, t]] = draw(&mut rng, self.emit.row(z));
            }
            if t + 1 == len {
                break;
            }
            // Rows of T for the current states: Tᵀ e_z, all sequences in one product.
            let mut onehot = Array2::<T>::zeros((nseq, h));
            for (sq, &z) in state.iter().enumerate() {
                onehot[[sq, z]] = T::one();
            }
            let rows = mt.matmul(onehot.view()).expect("width h");
            for (sq, z) in state.iter_mut().enumerate() {
                *z = draw(&mut rng, rows.row(sq));
            }
        }
        Ok(out)
    }
}

fn draw<T: RealScalar, R: Rng>(rng: &mut R, p: ArrayView1<T>) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let total: f64 = p.iter().map(|v| v.to_f64_val()).sum();
    for (i, &v) in p.iter().enumerate() {
        acc += v.to_f64_val() / total;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

fn logsumexp<T: RealScalar>(x: ArrayView1<T>) -> T {
    let m = x.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    if m == T::neg_infinity() {
        return m;
    }
    m + x.iter().map(|&v| (v - m).exp()).sum::<T>().ln()
}

fn normalise_rows_into<T: RealScalar>(src: ArrayView2<T>, mut dst: ArrayViewMut2<T>) {
    for (s, mut d) in src.rows().into_iter().zip(dst.rows_mut()) {
        let tot: T = s.sum();
        if tot > T::zero() && tot.is_finite() {
            d.zip_mut_with(&s, |di, &si| *di = si / tot);
        }
    }
}

/// `acc[a, i, j] += Σ_s exp(d[s, a·rows+i] + v[s, a·cols+j] − ll[s])`, one GEMM per block with
/// per-row, per-block max shifts; blocks in parallel (each on one thread: deterministic).
fn accumulate_flows<T: RealScalar>(
    d: ArrayView2<T>,
    v: ArrayView2<T>,
    ll: &Array1<T>,
    acc: &mut Array3<T>,
) {
    let (nb, rows, cols) = acc.dim();
    let nseq = d.nrows();
    let body = |(a, mut acc_a): (usize, ndarray::ArrayViewMut2<T>)| {
        let da = d.slice(s![.., a * rows..(a + 1) * rows]);
        let va = v.slice(s![.., a * cols..(a + 1) * cols]);
        let mut de = Array2::<T>::zeros((nseq, rows));
        let mut ve = Array2::<T>::zeros((nseq, cols));
        for sq in 0..nseq {
            let cd = da.row(sq).iter().fold(T::neg_infinity(), |m, &x| m.max(x));
            let cv = va.row(sq).iter().fold(T::neg_infinity(), |m, &x| m.max(x));
            if cd == T::neg_infinity() || cv == T::neg_infinity() {
                continue;
            }
            let scale = (cd + cv - ll[sq]).exp();
            de.row_mut(sq)
                .zip_mut_with(&da.row(sq), |o, &x| *o = (x - cd).exp() * scale);
            ve.row_mut(sq)
                .zip_mut_with(&va.row(sq), |o, &x| *o = (x - cv).exp());
        }
        let threads = rayon::current_num_threads();
        if nb < threads && Par::Rayon.should_split(nseq * rows * cols) {
            // Few (dense) blocks: split the block's rows instead, each row range on one thread.
            let chunk = rows.div_ceil(threads);
            acc_a
                .axis_chunks_iter_mut(Axis(0), chunk)
                .into_par_iter()
                .enumerate()
                .for_each(|(c, mut acc_c)| {
                    let dc = de.slice(s![.., c * chunk..c * chunk + acc_c.nrows()]);
                    general_mat_mul(T::one(), &dc.t(), &ve, T::one(), &mut acc_c);
                });
        } else {
            general_mat_mul(T::one(), &de.t(), &ve, T::one(), &mut acc_a);
        }
    };
    if Par::Rayon.should_split(nseq * nb * rows * cols) && nb > 1 {
        acc.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(body);
    } else {
        acc.axis_iter_mut(Axis(0)).enumerate().for_each(body);
    }
}
