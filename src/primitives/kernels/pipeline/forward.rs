//! Forward products: a Monarch's two stages over row panels, and the single block-diagonal
//! product, its transpose and its weight-gradient outer sum.

use super::vjp::stage_outer;
use super::*;

/// `out = x · Mᵀ` row by row (`out[b] = M x[b]`) with backend `be`; when `mid` is given
/// (`rows × h`, row-major) it receives the first factor's output `BD(w1) · P_in x`.
pub(crate) fn monarch_forward<T: Scalar>(
    m: &MonarchParts<T>,
    x: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
    mid: Option<&mut [T]>,
    par: Par,
    be: Backend,
) {
    let rows = x.nrows();
    if rows == 0 {
        return;
    }
    let split = par.should_split(rows * m.num_params());
    let plan = Plan::forward(m, rows, split);
    let (n, mo) = (m.in_features(), m.out_features());
    let width = n.max(mo).max(plan.s1.out_len());
    let threads = rayon::current_num_threads();
    let chunk = if split {
        row_chunk(width)
            .min(rows.div_ceil(2 * threads))
            .max(MIN_PANEL)
    } else {
        row_chunk(width)
    };
    let panel_parallel = split && rows >= 2 * MIN_PANEL;
    // Output: write straight into `out` when it is one contiguous row-major block.
    let mut tmp = Vec::new();
    let direct = out.is_standard_layout();
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    {
        let dst: &mut [T] = if direct {
            out.as_slice_mut().expect("standard layout")
        } else {
            tmp = vec![T::zero(); rows * mo];
            &mut tmp
        };
        let h = plan.s1.out_len();
        // Runs the panels of one group (rows from `r0`), each with its rows of `mid`.
        let group_body = |y1: &mut Vec<T>, r0: usize, gc: &mut [T], mg: Option<&mut [T]>| {
            let mut mids = mg.map(|m| m.chunks_mut(chunk * h));
            for (ci, oc) in gc.chunks_mut(chunk * mo).enumerate() {
                let (p0, nr) = (r0 + ci * chunk, oc.len() / mo);
                let mp = mids.as_mut().and_then(|it| it.next());
                let xp = xr.rows(p0..p0 + nr);
                plan.run_panel(be, xp, oc, !panel_parallel && split, y1, mp);
            }
        };
        if panel_parallel {
            // One task per group of panels, each with one intermediate buffer: allocating a
            // fresh buffer per panel costs page faults comparable to the panel's work.
            let group = rows.div_ceil(2 * threads).div_ceil(chunk) * chunk;
            let groups = rows.div_ceil(group);
            let mids: Vec<Option<&mut [T]>> = match mid {
                Some(m) => m.chunks_mut(group * h).map(Some).collect(),
                None => (0..groups).map(|_| None).collect(),
            };
            dst.par_chunks_mut(group * mo)
                .zip(mids)
                .enumerate()
                .for_each(|(gi, (gc, mg))| with_scratch(|y1| group_body(y1, gi * group, gc, mg)));
        } else {
            with_scratch(|y1| group_body(y1, 0, dst, mid));
        }
    }
    if !direct {
        for (o, v) in out.iter_mut().zip(tmp) {
            *o = v;
        }
    }
}

/// `y = BD(w) x` row by row with backend `be`.
pub(crate) fn blockdiag_forward<T: Scalar>(
    w: ArrayView3<T>,
    x: ArrayView2<T>,
    mut y: ArrayViewMut2<T>,
    par: Par,
    be: Backend,
) {
    let rows = x.nrows();
    if rows == 0 {
        return;
    }
    let packed = Packed::forward(Kind::Blocked, w, rows);
    let m = w.dim().0 * w.dim().1;
    let split = par.should_split(rows * w.len());
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    if y.is_standard_layout() {
        packed.apply_all(be, xr, y.as_slice_mut().expect("standard layout"), split);
    } else {
        let mut tmp = vec![T::zero(); rows * m];
        packed.apply_all(be, xr, &mut tmp, split);
        for (o, v) in y.iter_mut().zip(tmp) {
            *o = v;
        }
    }
}

/// `(Σ_b g ⊗ x)` restricted to `nb` blocks of `rows × cols`, with backend `be`.
pub(crate) fn blocks_outer<T: Scalar>(
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    (nb, rows, cols): (usize, usize, usize),
    par: Par,
    be: Backend,
) -> Array3<T> {
    let mut gbuf = Vec::new();
    let gr = contiguous(&g, &mut gbuf);
    let mut xbuf = Vec::new();
    let xr = contiguous(&x, &mut xbuf);
    stage_outer(be, Kind::Blocked, (nb, rows, cols), gr, xr, par)
}

/// Transpose product `BD(w)ᵀ g` with backend `be`.
pub(crate) fn blockdiag_transpose<T: Scalar>(
    w: ArrayView3<T>,
    g: ArrayView2<T>,
    par: Par,
    be: Backend,
) -> Array2<T> {
    let rows = g.nrows();
    let n = w.dim().0 * w.dim().2;
    let packed = Packed::new(Kind::Blocked, w, true);
    let split = par.should_split(rows * w.len());
    let mut gbuf = Vec::new();
    let gr = contiguous(&g, &mut gbuf);
    let mut out = vec![T::zero(); rows * n];
    if rows > 0 {
        packed.apply_all(be, gr, &mut out, split);
    }
    Array2::from_shape_vec((rows, n), out).expect("shape")
}
