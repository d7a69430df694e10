//! Recovery after projection: a few steps of training the projected Monarch factors of a dense
//! layer so that, on inputs recorded from the exact model, they reproduce the exact layer's
//! outputs (a layer-local distillation; the gradients are the core's [`Monarch::vjp`]).
//!
//! For inputs `X` (rows) and the dense weight `W`, the loss is the relative error
//! `‖X·M̂ᵀ − X·Wᵀ‖²_F / ‖X·Wᵀ‖²_F`, minimised by Adam over both factors of `M̂`. The projection
//! minimises `‖W − M̂‖_F`, which weighs every input direction alike; the fit weighs them by how
//! much the data uses them. [`distill`] applies it to every projected layer of an encoder,
//! either on the exact model's inputs (local) or in order on the compressed model's own inputs
//! (sequential, so that each layer also makes up for the error of the layers before it).

use crate::bert::{BertLayer, BertModel, Dense, TokenBatch};
use monarch::ndarray::{concatenate, s, Array2, Array3, ArrayView2, Axis, Zip};
use monarch::{Error, Monarch, RealScalar, Result};
use rayon::prelude::*;

/// Settings of [`fit_monarch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Adam steps (full batch).
    pub steps: usize,
    /// Adam learning rate, relative to the RMS of each factor's entries at the start.
    pub lr: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            steps: 60,
            lr: 0.02,
        }
    }
}

/// Relative output error of [`fit_monarch`] before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// `‖X·M̂ᵀ − X·Wᵀ‖_F / ‖X·Wᵀ‖_F` with the projected factors.
    pub before: f64,
    /// The same after training.
    pub after: f64,
}

struct Adam<T> {
    m: Array3<T>,
    v: Array3<T>,
    lr: T,
}

impl<T: RealScalar> Adam<T> {
    fn new(w: &Array3<T>, lr: f64) -> Self {
        let rms = (w.iter().map(|&x| x * x).sum::<T>() / T::from_f64(w.len().max(1) as f64)).sqrt();
        Adam {
            m: Array3::zeros(w.raw_dim()),
            v: Array3::zeros(w.raw_dim()),
            lr: T::from_f64(lr) * rms,
        }
    }

    fn step(&mut self, mut w: monarch::ndarray::ArrayViewMut3<T>, g: &Array3<T>, t: usize) {
        let (b1, b2, eps) = (0.9, 0.999, 1e-12);
        let c1 = T::from_f64(1.0 - f64::powi(b1, t as i32));
        let c2 = T::from_f64(1.0 - f64::powi(b2, t as i32));
        let (b1, b2, eps) = (T::from_f64(b1), T::from_f64(b2), T::from_f64(eps));
        let lr = self.lr;
        Zip::from(&mut w)
            .and(&mut self.m)
            .and(&mut self.v)
            .and(g)
            .for_each(|w, m, v, &g| {
                *m = b1 * *m + (T::one() - b1) * g;
                *v = b2 * *v + (T::one() - b2) * g * g;
                *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            });
    }
}

fn frob2<T: RealScalar>(a: &Array2<T>) -> f64 {
    a.iter().map(|&x| x.to_f64_val() * x.to_f64_val()).sum()
}

/// Trains `m` so that `x·mᵀ ≈ target` (`x`: `(rows, in)`, `target`: `(rows, out)`, usually
/// `x·Wᵀ` of the dense weight the Monarch was projected from). Keeps the best iterate.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shapes disagree, [`Error::InvalidArgument`] for a zero
/// target.
pub fn fit_monarch<T: RealScalar>(
    m: &mut Monarch<T>,
    x: ArrayView2<T>,
    target: ArrayView2<T>,
    opts: FitOptions,
) -> Result<FitReport> {
    if target.dim() != (x.nrows(), m.out_features()) {
        return Err(Error::shape(
            "fit_monarch: target (rows, out_features)",
            (x.nrows(), m.out_features()),
            target.dim(),
        ));
    }
    let norm2 = frob2(&target.to_owned());
    if norm2 == 0.0 {
        return Err(Error::invalid("fit_monarch: the target is zero"));
    }
    let scale = T::from_f64(2.0 / norm2);
    let mut a1 = Adam::new(m.w1(), opts.lr);
    let mut a2 = Adam::new(m.w2(), opts.lr);
    let mut best = (f64::INFINITY, m.clone());
    let mut first = None;
    for t in 0..=opts.steps {
        let mut r = m.matmul(x)?;
        r -= &target;
        let loss = frob2(&r) / norm2;
        first.get_or_insert(loss);
        if loss < best.0 {
            best = (loss, m.clone());
        }
        if t == opts.steps {
            break;
        }
        r.mapv_inplace(|e| e * scale);
        let g = m.vjp(x, r.view())?;
        a1.step(m.w1_mut(), &g.w1, t + 1);
        a2.step(m.w2_mut(), &g.w2, t + 1);
    }
    *m = best.1;
    Ok(FitReport {
        before: first.unwrap_or(f64::NAN).sqrt(),
        after: best.0.sqrt(),
    })
}

/// Inputs of every dense layer of `model` on `batches`, per layer in the order of
/// [`DENSE_NAMES`](crate::bert::DENSE_NAMES): rows of all batches concatenated, then every
/// `stride`-th row kept so that at most `max_rows` remain.
///
/// # Errors
/// Those of [`BertModel::forward_traced`].
pub fn layer_inputs<T: RealScalar>(
    model: &BertModel<T>,
    batches: &[TokenBatch],
    max_rows: usize,
) -> Result<Vec<[Array2<T>; 6]>> {
    let traces = batches
        .par_iter()
        .map(|b| model.forward_traced(b).map(|(_, t)| t))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(model.layers.len());
    for li in 0..model.layers.len() {
        let gather = |di: usize| -> Result<Array2<T>> {
            let parts: Vec<_> = traces
                .iter()
                .map(|t| BertLayer::trace_input(&t[li], di).view())
                .collect();
            let x = concatenate(Axis(0), &parts)
                .map_err(|e| Error::invalid(format!("layer_inputs: {e}")))?;
            let stride = x.nrows().div_ceil(max_rows.max(1)).max(1);
            Ok(x.slice(s![..;stride, ..]).to_owned())
        };
        let (x, c, m, a) = (gather(0)?, gather(3)?, gather(4)?, gather(5)?);
        out.push([x.clone(), x.clone(), x, c, m, a]);
    }
    Ok(out)
}

/// Fits every Monarch dense layer of `student` (a projected copy of `teacher`) to reproduce
/// the teacher's layer outputs `X_teacher·Wᵀ` on `batches`, with [`fit_monarch`].
///
/// `sequential = false` fits each layer on the teacher's own inputs (independent, local
/// problems). `sequential = true` goes through the network in order and fits each layer on the
/// inputs that the *student* gives it, with earlier layers already fitted, so that a layer can
/// also make up for the errors that reach it. Returns one report per fitted layer.
///
/// # Errors
/// Those of [`layer_inputs`] and [`fit_monarch`]; [`Error::ShapeMismatch`] if the two models'
/// layer counts differ.
pub fn distill<T: RealScalar>(
    student: &mut BertModel<T>,
    teacher: &BertModel<T>,
    batches: &[TokenBatch],
    max_rows: usize,
    opts: FitOptions,
    sequential: bool,
) -> Result<Vec<FitReport>> {
    if student.layers.len() != teacher.layers.len() {
        return Err(Error::shape(
            "distill: layer count",
            teacher.layers.len(),
            student.layers.len(),
        ));
    }
    let t_in = layer_inputs(teacher, batches, max_rows)?;
    let targets: Vec<Vec<Array2<T>>> = teacher
        .layers
        .iter()
        .zip(&t_in)
        .map(|(l, xs)| {
            l.dense()
                .iter()
                .zip(xs)
                .map(|(d, x)| x.dot(&d.dense_weight().t()))
                .collect()
        })
        .collect();
    let stages: [&[usize]; 4] = [&[0, 1, 2], &[3], &[4], &[5]];
    let mut reports = Vec::new();
    let fit_set = |student: &mut BertModel<T>,
                   li: usize,
                   set: &[usize],
                   inputs: &[Array2<T>; 6]|
     -> Result<Vec<FitReport>> {
        let jobs: Vec<(usize, Monarch<T>)> = set
            .iter()
            .filter_map(|&di| match student.layers[li].dense()[di] {
                Dense::Monarch { weight, .. } => Some((di, weight.clone())),
                Dense::Full(_) => None,
            })
            .collect();
        let fitted = jobs
            .into_par_iter()
            .map(|(di, mut w)| {
                let r = fit_monarch(&mut w, inputs[di].view(), targets[li][di].view(), opts)?;
                Ok((di, w, r))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut reps = Vec::new();
        for (di, w, r) in fitted {
            if let Dense::Monarch { weight, .. } = student.layers[li].dense_mut()[di] {
                *weight = w;
            }
            reps.push(r);
        }
        Ok(reps)
    };
    if !sequential {
        let all: Vec<usize> = (0..6).collect();
        for (li, inputs) in t_in.iter().enumerate() {
            reports.extend(fit_set(student, li, &all, inputs)?);
        }
        return Ok(reports);
    }
    for li in 0..student.layers.len() {
        for set in stages {
            let s_in = layer_inputs(student, batches, max_rows)?;
            if s_in[li][0].nrows() != t_in[li][0].nrows() {
                return Err(Error::shape(
                    "distill: rows of student and teacher traces",
                    t_in[li][0].nrows(),
                    s_in[li][0].nrows(),
                ));
            }
            reports.extend(fit_set(student, li, set, &s_in[li])?);
        }
    }
    Ok(reports)
}
