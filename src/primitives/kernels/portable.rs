//! Portable implementations: plain loops over any scalar, the oracle of the SIMD paths.
//!
//! Inner loops run over contiguous memory (a block's output features, or the block index of
//! the interleaved layout) so compilers vectorise them without fast-math.

use super::{BlockedShape, InterShape, OuterLayout, Rows, RowsMut, PAD};
use crate::Scalar;

pub(super) fn blocked<T: Scalar>(sh: BlockedShape, w: &[T], x: &Rows<T>, y: &mut RowsMut<T>) {
    let (ldx, ldy) = (x.ld, y.ld);
    let xd = x.data;
    for b in 0..x.nrows {
        for a in 0..sh.nb {
            let wa = &w[a * sh.cols * sh.rpad..];
            let xa = &xd[b * ldx + a * sh.cols..][..sh.cols];
            let ya = &mut y.data[b * ldy + a * sh.rows..][..sh.rows];
            ya.fill(T::zero());
            for (j, &xj) in xa.iter().enumerate() {
                let wrow = &wa[j * sh.rpad..][..sh.rows];
                for (yi, &wij) in ya.iter_mut().zip(wrow) {
                    *yi = wij.mul_add_val(xj, *yi);
                }
            }
        }
    }
}

pub(super) fn interleaved<T: Scalar>(sh: InterShape, w: &[T], x: &Rows<T>, y: &mut RowsMut<T>) {
    let nb = sh.nb;
    let chunk = sh.wrows * sh.cols * PAD;
    for b in 0..x.nrows {
        let xr = &x.data[b * x.ld..][..sh.cols * nb];
        let yr = &mut y.data[b * y.ld..][..sh.rows * nb];
        for i in 0..sh.rows {
            let yi = &mut yr[i * nb..][..nb];
            yi.fill(T::zero());
            for t in 0..sh.cols {
                let xt = &xr[t * nb..][..nb];
                let off = ((sh.ioff + i) * sh.cols + t) * PAD;
                for (c, (o, &xc)) in yi.iter_mut().zip(xt).enumerate() {
                    let wc = w[(c / PAD) * chunk + off + c % PAD];
                    *o = wc.mul_add_val(xc, *o);
                }
            }
        }
    }
}

pub(super) fn blocked_outer<T: Scalar>(
    sh: BlockedShape,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    if !accumulate {
        out.fill(T::zero());
    }
    for b in 0..g.nrows {
        let gr = &g.data[b * g.ld..][..sh.nb * sh.rows];
        let xr = &x.data[b * x.ld..][..sh.nb * sh.cols];
        for a in 0..sh.nb {
            let xa = &xr[a * sh.cols..][..sh.cols];
            for i in 0..sh.rows {
                let gi = gr[a * sh.rows + i];
                let o = &mut out[(a * sh.rows + i) * sh.cols..][..sh.cols];
                for (oj, &xj) in o.iter_mut().zip(xa) {
                    *oj = gi.mul_add_val(xj, *oj);
                }
            }
        }
    }
}

pub(super) fn interleaved_outer<T: Scalar>(
    sh: InterShape,
    lay: OuterLayout,
    g: &Rows<T>,
    x: &Rows<T>,
    out: &mut [T],
    accumulate: bool,
) {
    let nb = sh.nb;
    // Runs of block indices that are contiguous in `out`.
    let mut c = lay.c0;
    while c < lay.c1 {
        let len = (lay.cw - c % lay.cw).min(lay.c1 - c);
        for i in (0..sh.rows).filter(|_| !accumulate) {
            for t in 0..sh.cols {
                out[lay.at(i, t, c)..][..len].fill(T::zero());
            }
        }
        for b in 0..g.nrows {
            let gr = &g.data[b * g.ld..][..sh.rows * nb];
            let xr = &x.data[b * x.ld..][..sh.cols * nb];
            for i in 0..sh.rows {
                let gi = &gr[i * nb + c..][..len];
                for t in 0..sh.cols {
                    let xt = &xr[t * nb + c..][..len];
                    let o = &mut out[lay.at(i, t, c)..][..len];
                    for ((oc, &gc), &xc) in o.iter_mut().zip(gi).zip(xt) {
                        *oc = gc.mul_add_val(xc, *oc);
                    }
                }
            }
        }
        c += len;
    }
}

pub(super) fn blocked_dot<T: Scalar>(sh: BlockedShape, w: &[T], x: &Rows<T>, y: &mut RowsMut<T>) {
    for b in 0..x.nrows {
        for a in 0..sh.nb {
            let xa = &x.data[b * x.ld + a * sh.cols..][..sh.cols];
            for i in 0..sh.rows {
                let wr = &w[(a * sh.rows + i) * sh.cols..][..sh.cols];
                let acc = wr
                    .iter()
                    .zip(xa)
                    .fold(T::zero(), |acc, (&wj, &xj)| wj.mul_add_val(xj, acc));
                y.data[b * y.ld + a * sh.rows + i] = acc;
            }
        }
    }
}
