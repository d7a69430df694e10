//! Group-and-Shuffle: shuffles, orthogonal blocks, orthogonal GS layers, GSOFT, Double GSOFT and
//! the GS orthogonal convolution against dense references and finite differences.

use crate::adapters;
use crate::common;

use adapters::{cases, check_fd, dot_all};
use common::assert_close;
use monarch::gs::{
    butterfly_factors, cayley, channel_shuffle, expm, min_dense_factors, orthogonal_block,
    orthogonal_block_vjp, orthogonality_defect, shuffle, skew, DoubleGsoft, GsMatrix, GsOrthConv2d,
    GsoftLinear, OrthGs, OrthMap,
};
use monarch::ndarray::{array, Array1, Array2, Array3, Array4, Axis};
use monarch::primitives::random::{normal_matrix, uniform_array3};
use monarch::{BlockDiag, Error, Perm};
use proptest::prelude::*;

const MAPS: [OrthMap; 2] = [OrthMap::Cayley, OrthMap::Exp];

/// The shuffle written from the note: `z[l·b + t] = v[t·k + l]`, as a dense matrix.
fn shuffle_dense(k: usize, b: usize) -> Array2<f64> {
    let n = k * b;
    let mut p = Array2::zeros((n, n));
    for l in 0..k {
        for t in 0..b {
            p[[l * b + t, t * k + l]] = 1.0;
        }
    }
    p
}

fn blockdiag_dense(blocks: &Array3<f64>) -> Array2<f64> {
    let (k, r, c) = blocks.dim();
    let mut d = Array2::zeros((k * r, k * c));
    for a in 0..k {
        for i in 0..r {
            for j in 0..c {
                d[[a * r + i, a * c + j]] = blocks[[a, i, j]];
            }
        }
    }
    d
}

fn random_gs(k: usize, b: usize, m: usize, scale: f64, map: OrthMap, seed: u64) -> OrthGs<f64> {
    let params = (0..m)
        .map(|i| uniform_array3::<f64>((k, b, b), scale, seed + i as u64))
        .collect();
    OrthGs::from_params(params, map).unwrap()
}

/// `Q = (P^{m−1})ᵀ BD_m P ⋯ P BD_1` from dense pieces and per-block orthogonal maps.
fn reference_q(q: &OrthGs<f64>) -> Array2<f64> {
    let (k, b) = (q.nblocks(), q.block());
    let p = shuffle_dense(k, b);
    let mut acc = Array2::<f64>::eye(k * b);
    let mut pow = Array2::<f64>::eye(k * b);
    for (i, par) in q.params().iter().enumerate() {
        if i > 0 {
            acc = p.dot(&acc);
            pow = p.dot(&pow);
        }
        let mut blocks = Array3::zeros(par.dim());
        for a in 0..k {
            blocks
                .index_axis_mut(Axis(0), a)
                .assign(&orthogonal_block(par.index_axis(Axis(0), a), q.map()).unwrap());
        }
        acc = blockdiag_dense(&blocks).dot(&acc);
    }
    pow.t().dot(&acc)
}

#[test]
fn shuffles_follow_the_note() {
    assert_eq!(
        shuffle(3, 4).unwrap().index(),
        &[0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    );
    for &(k, b) in &[(3, 4), (4, 3), (2, 8), (5, 1)] {
        let p = shuffle(k, b).unwrap();
        assert_eq!(p.to_dense::<f64>(), shuffle_dense(k, b));
        assert!(p.compose(&p.inverse()).is_identity());
    }
    // Channel shuffle: idx[g·cpg + c] = c·groups + g.
    let (groups, cpg) = (3, 4);
    let p = channel_shuffle(groups, cpg, false).unwrap();
    for g in 0..groups {
        for c in 0..cpg {
            assert_eq!(p.index()[g * cpg + c], c * groups + g);
        }
    }
}

#[test]
fn orthogonal_blocks_closed_forms() {
    // 2×2: K = [[0, θ], [−θ, 0]] from A = [[0, 2θ], [0, 0]].
    let th = 0.7f64;
    let a = array![[0.0, 2.0 * th], [0.0, 0.0]];
    let e = orthogonal_block(a.view(), OrthMap::Exp).unwrap();
    let want = array![[th.cos(), th.sin()], [-th.sin(), th.cos()]];
    assert_close(
        e.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-15,
        "exp rotation",
    );
    let c = orthogonal_block(a.view(), OrthMap::Cayley).unwrap();
    let d = 1.0 + th * th;
    let want = array![
        [(1.0 - th * th) / d, 2.0 * th / d],
        [-2.0 * th / d, (1.0 - th * th) / d]
    ];
    assert_close(
        c.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-15,
        "cayley rotation",
    );
    // Larger: Cayley satisfies Q (I − K) = I + K; exp matches the unscaled series, and exp of a
    // general matrix matches e^{λ} on a triangular one's diagonal.
    let a = normal_matrix::<f64>((6, 6), 1.5, 3);
    let k = skew(a.view());
    assert_close(
        k.as_slice().unwrap(),
        (-&k.t()).as_standard_layout().as_slice().unwrap(),
        0.0,
        "skew",
    );
    let q = cayley(k.view()).unwrap();
    let eye = Array2::<f64>::eye(6);
    let lhs = q.dot(&(&eye - &k));
    assert_close(
        lhs.as_slice().unwrap(),
        (&eye + &k).as_slice().unwrap(),
        1e-14,
        "cayley equation",
    );
    let mut series = eye.clone();
    let mut term = eye.clone();
    for j in 1..60 {
        term = term.dot(&k) / j as f64;
        series += &term;
    }
    let e = expm(k.view()).unwrap();
    assert_close(
        e.as_slice().unwrap(),
        series.as_slice().unwrap(),
        1e-13,
        "expm series",
    );
    let tri = array![[1.0, 2.0, 0.5], [0.0, -0.5, 3.0], [0.0, 0.0, 2.0]];
    let et = expm(tri.view()).unwrap();
    for i in 0..3 {
        assert!((et[[i, i]] - f64::exp(tri[[i, i]])).abs() < 1e-13 * f64::exp(2.0));
    }
    for map in MAPS {
        let q = orthogonal_block(a.view(), map).unwrap();
        assert!(orthogonality_defect(q.view()) < 1e-14, "{map:?}");
        let z = orthogonal_block(Array2::<f64>::zeros((5, 5)).view(), map).unwrap();
        assert_eq!(z, Array2::<f64>::eye(5));
    }
}

#[test]
fn orthogonal_block_vjp_matches_finite_differences() {
    for map in MAPS {
        let a = normal_matrix::<f64>((5, 5), 0.8, 10);
        let g = normal_matrix::<f64>((5, 5), 1.0, 11);
        let grad = orthogonal_block_vjp(a.view(), g.view(), map).unwrap();
        check_fd(
            &a,
            &grad,
            |ap| dot_all(orthogonal_block(ap.view(), map).unwrap().view(), g.view()),
            1e-8,
            &format!("block {map:?}"),
        );
    }
}

#[test]
fn orth_gs_matches_dense_reference_and_is_orthogonal() {
    for map in MAPS {
        for &(k, b, m) in &[(3, 4, 2), (4, 4, 2), (4, 2, 3), (2, 3, 1), (8, 2, 4)] {
            let q = random_gs(k, b, m, 1.0, map, 20);
            let want = reference_q(&q);
            let dense = q.to_dense().unwrap();
            assert_close(
                dense.as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-13,
                &format!("Q {k}x{b} m={m}"),
            );
            let x = normal_matrix::<f64>((3, k * b), 1.0, 21);
            let y = q.forward(x.view()).unwrap();
            assert_close(
                y.as_slice().unwrap(),
                x.dot(&want.t()).as_slice().unwrap(),
                1e-13,
                "forward",
            );
            let err = q.orthogonality_error().unwrap();
            assert!(err <= 1e-12, "{map:?} {k}x{b} m={m}: {err:e}");
            // Large parameters stay orthogonal too.
            let big = random_gs(k, b, m, 20.0, map, 22);
            assert!(big.orthogonality_error().unwrap() <= 1e-12, "{map:?} big");
        }
        // m = 2 is Pᵀ BD(L) P BD(R) literally.
        let q = random_gs(3, 4, 2, 1.0, map, 23);
        let p = shuffle_dense(3, 4);
        let bl = |i: usize| {
            let mut w = Array3::zeros((3, 4, 4));
            for a in 0..3 {
                w.index_axis_mut(Axis(0), a)
                    .assign(&orthogonal_block(q.params()[i].index_axis(Axis(0), a), map).unwrap());
            }
            blockdiag_dense(&w)
        };
        let want = p.t().dot(&bl(1)).dot(&p).dot(&bl(0));
        assert_close(
            q.to_dense().unwrap().as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-13,
            "PᵀLPR",
        );
        // Zero parameters: the identity.
        let id = OrthGs::<f64>::identity(12, 4, 3, map).unwrap();
        assert_eq!(id.to_dense().unwrap(), Array2::<f64>::eye(12));
    }
    let q = random_gs(3, 4, 2, 1.0, OrthMap::Cayley, 1);
    assert_eq!(q.num_params(), 2 * 3 * 16);
    assert_eq!(q.num_free_params(), 2 * 3 * 6);
}

#[test]
fn density_rule() {
    for &(b, k) in &[
        (2, 2),
        (2, 4),
        (2, 8),
        (3, 3),
        (3, 9),
        (3, 4),
        (4, 2),
        (4, 4),
        (4, 8),
        (4, 16),
        (2, 3),
        (3, 2),
    ] {
        let need = min_dense_factors(b, k).unwrap();
        for m in 1..=need + 1 {
            let q = random_gs(k, b, m, 1.0, OrthMap::Cayley, 30 + m as u64);
            let d = q.to_dense().unwrap();
            let dense = d.iter().all(|v| v.abs() > 1e-12);
            assert_eq!(dense, m >= need, "b={b} k={k} m={m} (need {need})");
        }
    }
    assert_eq!(min_dense_factors(32, 32).unwrap(), 2);
    assert_eq!(butterfly_factors(32).unwrap(), 6);
    // n = 1024, b = 32: GS needs 2 factors (65,536 parameters), BOFT 6 factors of 2·2 blocks… as
    // the paper counts, 6 × 1024 × 32 = 196,608 at the same block size.
    let gs = OrthGs::<f32>::identity(
        1024,
        32,
        min_dense_factors(32, 32).unwrap(),
        OrthMap::Cayley,
    )
    .unwrap();
    assert_eq!(gs.num_params(), 65_536);
    assert_eq!(butterfly_factors(32).unwrap() * 1024 * 32, 196_608);
    assert!(min_dense_factors(1, 4).is_err());
    assert!(min_dense_factors(0, 4).is_err());
    assert_eq!(min_dense_factors(1, 1).unwrap(), 1);
}

#[test]
fn orth_gs_vjp_matches_finite_differences() {
    for map in MAPS {
        for &(k, b, m) in &[(3, 2, 2), (2, 3, 3)] {
            let q = random_gs(k, b, m, 0.8, map, 40);
            let x = normal_matrix::<f64>((3, k * b), 1.0, 41);
            let g = normal_matrix::<f64>((3, k * b), 1.0, 42);
            let gr = q.vjp(x.view(), g.view()).unwrap();
            check_fd(
                &x,
                &gr.x,
                |xp| dot_all(q.forward(xp.view()).unwrap().view(), g.view()),
                1e-8,
                "gs x",
            );
            for i in 0..m {
                check_fd(
                    &q.params()[i],
                    &gr.params[i],
                    |pp| {
                        let mut qq = q.clone();
                        qq.params_mut()[i].assign(pp);
                        dot_all(qq.forward(x.view()).unwrap().view(), g.view())
                    },
                    1e-8,
                    &format!("gs params {i} {map:?}"),
                );
            }
        }
    }
}

#[test]
fn gs_matrix_general_class() {
    // P_L (L P R) P_R with rectangular blocks and random permutations.
    let l = BlockDiag::new(uniform_array3::<f64>((2, 5, 3), 1.0, 50)).unwrap();
    let r = BlockDiag::new(uniform_array3::<f64>((3, 2, 4), 1.0, 51)).unwrap();
    let (pl, p, pr) = (Perm::random(10, 1), Perm::random(6, 2), Perm::random(12, 3));
    let a = GsMatrix::new(pl.clone(), l.clone(), p.clone(), r.clone(), pr.clone()).unwrap();
    let want = pl
        .to_dense::<f64>()
        .dot(&l.to_dense())
        .dot(&p.to_dense::<f64>())
        .dot(&r.to_dense())
        .dot(&pr.to_dense::<f64>());
    assert_close(
        a.to_dense().as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-14,
        "GS dense",
    );
    assert_close(
        a.transpose().to_dense().as_slice().unwrap(),
        want.t().as_standard_layout().as_slice().unwrap(),
        1e-14,
        "GS transpose",
    );
    let x = normal_matrix::<f64>((3, 12), 1.0, 52);
    let g = normal_matrix::<f64>((3, 10), 1.0, 53);
    let gr = a.vjp(x.view(), g.view()).unwrap();
    check_fd(
        &x,
        &gr.x,
        |xp| dot_all(a.matmul(xp.view()).unwrap().view(), g.view()),
        1e-8,
        "GS x",
    );
    let lw = l.weights().to_owned();
    check_fd(
        &lw,
        &gr.l,
        |lp| {
            let aa = GsMatrix::new(
                pl.clone(),
                BlockDiag::new(lp.clone()).unwrap(),
                p.clone(),
                r.clone(),
                pr.clone(),
            )
            .unwrap();
            dot_all(aa.matmul(x.view()).unwrap().view(), g.view())
        },
        1e-8,
        "GS L",
    );
    let rw = r.weights().to_owned();
    check_fd(
        &rw,
        &gr.r,
        |rp| {
            let aa = GsMatrix::new(
                pl.clone(),
                l.clone(),
                p.clone(),
                BlockDiag::new(rp.clone()).unwrap(),
                pr.clone(),
            )
            .unwrap();
            dot_all(aa.matmul(x.view()).unwrap().view(), g.view())
        },
        1e-8,
        "GS R",
    );
    assert!(GsMatrix::new(Perm::random(9, 1), l, p, r, pr).is_err());
}

fn random_gsoft(out: usize, inp: usize, b: usize, map: OrthMap, seed: u64) -> GsoftLinear<f64> {
    let w0 = normal_matrix::<f64>((out, inp), 0.5, seed);
    let mut l = GsoftLinear::new(w0, Some(Array1::from_elem(out, 0.3)), b, 2, map).unwrap();
    for (i, p) in l.q_mut().params_mut().iter_mut().enumerate() {
        {
            let d = p.dim();
            p.assign(&uniform_array3::<f64>(d, 0.8, seed + 1 + i as u64));
        }
    }
    l.scale_mut()
        .assign(&Array1::from_iter((0..out).map(|i| 1.0 + 0.1 * i as f64)));
    l
}

#[test]
fn gsoft_forward_merge_and_vjp() {
    for map in MAPS {
        let base =
            GsoftLinear::new(normal_matrix::<f64>((10, 12), 0.5, 1), None, 4, 2, map).unwrap();
        let x = normal_matrix::<f64>((4, 12), 1.0, 60);
        assert_close(
            base.forward(x.view()).unwrap().as_slice().unwrap(),
            x.dot(&base.weight().t()).as_slice().unwrap(),
            1e-15,
            "gsoft init",
        );

        let l = random_gsoft(10, 12, 4, map, 61);
        let q = reference_q(l.q());
        let want = &(&x.dot(&q.t()).dot(&l.weight().t()) * l.scale()) + &Array1::from_elem(10, 0.3);
        let y = l.forward(x.view()).unwrap();
        assert_close(
            y.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-13,
            "gsoft forward",
        );
        let mw = l.merged_weight().unwrap();
        assert_close(
            (&x.dot(&mw.t()) + &Array1::from_elem(10, 0.3))
                .as_slice()
                .unwrap(),
            y.as_slice().unwrap(),
            1e-13,
            "merged",
        );
        let mut lm = l.clone();
        lm.merge_and_reset().unwrap();
        assert_close(
            lm.forward(x.view()).unwrap().as_slice().unwrap(),
            y.as_slice().unwrap(),
            1e-13,
            "merge_and_reset",
        );
        assert_eq!(lm.q().to_dense().unwrap(), Array2::<f64>::eye(12));

        let g = normal_matrix::<f64>((4, 10), 1.0, 62);
        let gr = l.vjp(x.view(), g.view()).unwrap();
        let f = |ll: &GsoftLinear<f64>, xx: &Array2<f64>| {
            dot_all(ll.forward(xx.view()).unwrap().view(), g.view())
        };
        check_fd(&x, &gr.x, |xp| f(&l, xp), 1e-8, "gsoft x");
        check_fd(
            l.scale(),
            &gr.scale,
            |sp| {
                let mut ll = l.clone();
                ll.scale_mut().assign(sp);
                f(&ll, &x)
            },
            1e-8,
            "gsoft scale",
        );
        for i in 0..2 {
            check_fd(
                &l.q().params()[i],
                &gr.params[i],
                |pp| {
                    let mut ll = l.clone();
                    ll.q_mut().params_mut()[i].assign(pp);
                    f(&ll, &x)
                },
                1e-8,
                "gsoft params",
            );
        }
    }
}

#[test]
fn double_gsoft_forward_merge_and_vjp() {
    let map = OrthMap::Exp;
    let w0 = normal_matrix::<f64>((6, 8), 0.5, 70);
    let mut d =
        DoubleGsoft::new(w0.clone(), Some(Array1::from_elem(6, -0.2)), 2, 3, 2, map).unwrap();
    let x = normal_matrix::<f64>((3, 8), 1.0, 71);
    assert_close(
        d.forward(x.view()).unwrap().as_slice().unwrap(),
        (&x.dot(&w0.t()) - 0.2).as_slice().unwrap(),
        1e-15,
        "double init",
    );
    for (i, p) in d.q_in_mut().params_mut().iter_mut().enumerate() {
        {
            let d = p.dim();
            p.assign(&uniform_array3::<f64>(d, 0.8, 72 + i as u64));
        }
    }
    for (i, p) in d.q_out_mut().params_mut().iter_mut().enumerate() {
        {
            let d = p.dim();
            p.assign(&uniform_array3::<f64>(d, 0.8, 74 + i as u64));
        }
    }
    d.scale_mut().assign(&Array1::linspace(0.5, 1.5, 6));
    let (qi, qo) = (reference_q(d.q_in()), reference_q(d.q_out()));
    let want = &(&x.dot(&qi.t()).dot(&w0.t()).dot(&qo.t()) * d.scale()) - 0.2;
    let y = d.forward(x.view()).unwrap();
    assert_close(
        y.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-13,
        "double forward",
    );
    let mw = d.merged_weight().unwrap();
    assert_close(
        (&x.dot(&mw.t()) - 0.2).as_slice().unwrap(),
        y.as_slice().unwrap(),
        1e-13,
        "double merged",
    );
    let g = normal_matrix::<f64>((3, 6), 1.0, 76);
    let gr = d.vjp(x.view(), g.view()).unwrap();
    let f = |dd: &DoubleGsoft<f64>, xx: &Array2<f64>| {
        dot_all(dd.forward(xx.view()).unwrap().view(), g.view())
    };
    check_fd(&x, &gr.x, |xp| f(&d, xp), 1e-8, "double x");
    check_fd(
        d.scale(),
        &gr.scale,
        |sp| {
            let mut dd = d.clone();
            dd.scale_mut().assign(sp);
            f(&dd, &x)
        },
        1e-8,
        "double scale",
    );
    for i in 0..2 {
        check_fd(
            &d.q_in().params()[i],
            &gr.params_in[i],
            |pp| {
                let mut dd = d.clone();
                dd.q_in_mut().params_mut()[i].assign(pp);
                f(&dd, &x)
            },
            1e-8,
            "double q_in",
        );
        check_fd(
            &d.q_out().params()[i],
            &gr.params_out[i],
            |pp| {
                let mut dd = d.clone();
                dd.q_out_mut().params_mut()[i].assign(pp);
                f(&dd, &x)
            },
            1e-8,
            "double q_out",
        );
    }
    let mut dm = d.clone();
    dm.merge_and_reset().unwrap();
    assert_close(
        dm.forward(x.view()).unwrap().as_slice().unwrap(),
        y.as_slice().unwrap(),
        1e-13,
        "double merge_and_reset",
    );
}

#[test]
fn orthogonality_survives_1000_training_steps() {
    // Fit a GSOFT layer to a rotated target with plain SGD; Q stays orthogonal to rounding.
    for map in MAPS {
        let (n, out, b) = (16, 8, 4);
        let w0 = normal_matrix::<f64>((out, n), 0.5, 80);
        let target = random_gs(n / b, b, 2, 1.0, map, 81).to_dense().unwrap();
        let wt = w0.dot(&target);
        let mut l = GsoftLinear::new(w0, None, b, 2, map).unwrap();
        assert!(l.q().orthogonality_error().unwrap() <= 1e-12);
        let first = l.q().orthogonality_error().unwrap();
        let mut loss0 = None;
        let mut loss = 0.0;
        for step in 0..1000u64 {
            let x = normal_matrix::<f64>((16, n), 1.0, 1000 + step);
            let y = l.forward(x.view()).unwrap();
            let diff = &y - &x.dot(&wt.t());
            loss = diff.iter().map(|v| v * v).sum::<f64>() / 16.0;
            loss0.get_or_insert(loss);
            let g = diff * (2.0 / 16.0);
            let gr = l.vjp(x.view(), g.view()).unwrap();
            for (p, gp) in l.q_mut().params_mut().iter_mut().zip(&gr.params) {
                p.scaled_add(-0.05, gp);
            }
            l.scale_mut().scaled_add(-0.05, &gr.scale);
        }
        let err = l.q().orthogonality_error().unwrap();
        assert!(
            err <= 1e-12,
            "{map:?}: ‖QᵀQ − I‖ = {err:e} after 1000 steps (start {first:e})"
        );
        assert!(
            loss < 0.5 * loss0.unwrap(),
            "{map:?}: training did not reduce the loss ({loss0:?} → {loss})"
        );
        assert!(l
            .q()
            .params()
            .iter()
            .any(|p| p.iter().any(|v| v.abs() > 1e-3)));
    }
}

/// Dense matrix of the zero-padded grouped convolution `conv_K` on one `(C, H, W)` image.
fn conv_dense(k: &Array4<f64>, h: usize, w: usize) -> Array2<f64> {
    let (c, cpg, s, _) = k.dim();
    let p = s / 2;
    let n = c * h * w;
    let mut d = Array2::zeros((n, n));
    for o in 0..c {
        let g0 = (o / cpg) * cpg;
        for i in 0..cpg {
            for y in 0..h {
                for x in 0..w {
                    for u in 0..s {
                        for v in 0..s {
                            let (yy, xx) = (
                                y as isize + u as isize - p as isize,
                                x as isize + v as isize - p as isize,
                            );
                            if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                d[[
                                    (o * h + y) * w + x,
                                    ((g0 + i) * h + yy as usize) * w + xx as usize,
                                ]] += k[[o, i, u, v]];
                            }
                        }
                    }
                }
            }
        }
    }
    d
}

#[test]
fn gs_conv_matches_dense_exponential_and_keeps_norms() {
    let (c, groups, ks, h, w) = (6, 2, 3, 4, 5);
    let kernel = Array4::from_shape_fn((c, c / groups, ks, ks), |(o, i, u, v)| {
        (((o * 7 + i * 5 + u * 3 + v) % 11) as f64 - 5.0) * 0.04
    });
    let pw = uniform_array3::<f64>((groups, 3, 3), 1.0, 90);
    let conv = GsOrthConv2d::from_params(kernel.clone(), pw, 30).unwrap();
    let x = Array4::from_shape_fn((2, c, h, w), |(b, ch, y, xx)| {
        ((b * 31 + ch * 7 + y * 3 + xx * 5) % 13) as f64 / 6.0 - 1.0
    });
    // The grouped exponential against expm of the dense skew operator (C − Cᵀ)/2.
    let cd = conv_dense(&kernel, h, w);
    let a = (&cd - &cd.t()) / 2.0;
    let e = expm(a.view()).unwrap();
    let ge = conv.grouped_exp_conv(x.view()).unwrap();
    for b in 0..2 {
        let xv = x
            .index_axis(Axis(0), b)
            .to_owned()
            .into_shape_with_order(c * h * w)
            .unwrap();
        let want = e.dot(&xv);
        let got = ge
            .index_axis(Axis(0), b)
            .to_owned()
            .into_shape_with_order(c * h * w)
            .unwrap();
        assert_close(
            got.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "grouped exp conv",
        );
    }
    // The full layer against its dense pieces.
    let sh = channel_shuffle(groups, c / groups, false).unwrap();
    let shd = {
        let pc = sh.to_dense::<f64>();
        let mut big = Array2::zeros((c * h * w, c * h * w));
        for (i, j) in (0..c).flat_map(|i| (0..c).map(move |j| (i, j))) {
            if pc[[i, j]] == 1.0 {
                for t in 0..h * w {
                    big[[i * h * w + t, j * h * w + t]] = 1.0;
                }
            }
        }
        big
    };
    let qb = conv.pointwise_blocks().unwrap();
    let mut pwd = Array2::zeros((c * h * w, c * h * w));
    for g in 0..groups {
        for o in 0..3 {
            for i in 0..3 {
                for t in 0..h * w {
                    pwd[[(g * 3 + o) * h * w + t, (g * 3 + i) * h * w + t]] = qb[[g, o, i]];
                }
            }
        }
    }
    let full = pwd.dot(&shd).dot(&e).dot(&shd);
    assert!(orthogonality_defect(full.view()) < 1e-12);
    let y = conv.forward(x.view()).unwrap();
    for b in 0..2 {
        let xv = x
            .index_axis(Axis(0), b)
            .to_owned()
            .into_shape_with_order(c * h * w)
            .unwrap();
        let got = y
            .index_axis(Axis(0), b)
            .to_owned()
            .into_shape_with_order(c * h * w)
            .unwrap();
        assert_close(
            got.as_slice().unwrap(),
            full.dot(&xv).as_slice().unwrap(),
            1e-12,
            "gs conv",
        );
    }
    // Norms: to rounding with enough terms; the error shrinks as terms grow.
    let norm = |a: &Array4<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        (norm(&y) - norm(&x)).abs() <= 1e-12 * norm(&x),
        "{} vs {}",
        norm(&y),
        norm(&x)
    );
    let mut big = conv.clone();
    big.kernel_mut().mapv_inplace(|v| v * 3.0);
    let errs: Vec<f64> = [2usize, 4, 8, 16, 40]
        .iter()
        .map(|&t| {
            let cv = GsOrthConv2d::from_params(big.kernel().clone(), big.pointwise().clone(), t)
                .unwrap();
            (norm(&cv.forward(x.view()).unwrap()) - norm(&x)).abs() / norm(&x)
        })
        .collect();
    assert!(errs[0] > 1e-3 && errs[4] < 1e-10, "{errs:?}");
    assert!(
        errs[4] < errs[3] && errs[3] < errs[2] && errs[2] < errs[0],
        "{errs:?}"
    );
    println!("norm errors for 2, 4, 8, 16, 40 terms: {errs:?}");
    // Zero parameters: the identity (the two shuffles compose to the identity only for
    // groups² | …, so compare with the shuffles applied twice).
    let id = GsOrthConv2d::<f64>::identity(c, groups, 3, 5).unwrap();
    let yi = id.forward(x.view()).unwrap();
    let sh2 = sh.compose(&sh);
    for (dst, &src) in sh2.index().iter().enumerate() {
        assert_eq!(yi.index_axis(Axis(1), dst), x.index_axis(Axis(1), src));
    }
}

#[test]
fn bad_input_is_an_error() {
    assert!(matches!(
        OrthGs::<f64>::identity(12, 5, 2, OrthMap::Cayley),
        Err(Error::NotDivisible { .. })
    ));
    assert!(matches!(
        OrthGs::<f64>::identity(12, 4, 0, OrthMap::Cayley),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        OrthGs::<f64>::from_params(vec![], OrthMap::Cayley),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        OrthGs::<f64>::from_params(vec![Array3::zeros((2, 3, 4))], OrthMap::Cayley),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        OrthGs::<f64>::from_params(
            vec![Array3::zeros((2, 3, 3)), Array3::zeros((3, 2, 2))],
            OrthMap::Exp
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut nan = Array3::<f64>::zeros((2, 2, 2));
    nan[[0, 0, 1]] = f64::NAN;
    assert!(matches!(
        OrthGs::from_params(vec![nan.clone()], OrthMap::Cayley),
        Err(Error::NonFinite { .. })
    ));
    let mut q = OrthGs::<f64>::identity(4, 2, 2, OrthMap::Cayley).unwrap();
    assert!(matches!(
        q.forward(Array2::zeros((1, 5)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    q.params_mut()[0].assign(&nan);
    assert!(matches!(
        q.forward(Array2::zeros((1, 4)).view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        orthogonal_block(Array2::<f64>::zeros((2, 3)).view(), OrthMap::Exp),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(orthogonal_block_vjp(
        Array2::<f64>::zeros((2, 2)).view(),
        Array2::zeros((3, 3)).view(),
        OrthMap::Exp
    )
    .is_err());
    assert!(matches!(
        GsoftLinear::new(Array2::<f64>::zeros((4, 6)), None, 4, 2, OrthMap::Cayley),
        Err(Error::NotDivisible { .. })
    ));
    assert!(matches!(
        GsoftLinear::new(
            Array2::<f64>::zeros((4, 8)),
            Some(Array1::zeros(3)),
            4,
            2,
            OrthMap::Cayley
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let l = GsoftLinear::new(Array2::<f64>::zeros((4, 8)), None, 4, 2, OrthMap::Cayley).unwrap();
    assert!(l
        .vjp(Array2::zeros((2, 8)).view(), Array2::zeros((2, 5)).view())
        .is_err());
    assert!(l
        .clone()
        .with_q(OrthGs::identity(4, 2, 2, OrthMap::Cayley).unwrap())
        .is_err());
    assert!(
        DoubleGsoft::new(Array2::<f64>::zeros((6, 8)), None, 4, 4, 2, OrthMap::Cayley).is_err()
    );
    assert!(matches!(
        GsOrthConv2d::<f64>::identity(6, 4, 3, 5),
        Err(Error::NotDivisible { .. })
    ));
    assert!(matches!(
        GsOrthConv2d::<f64>::identity(6, 2, 2, 5),
        Err(Error::InvalidArgument(_))
    ));
    let conv = GsOrthConv2d::<f64>::identity(6, 2, 3, 5).unwrap();
    assert!(matches!(
        conv.forward(Array4::zeros((1, 5, 3, 3)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        conv.forward(Array4::zeros((1, 6, 0, 3)).view()),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        GsOrthConv2d::from_params(
            Array4::<f64>::zeros((6, 3, 3, 3)),
            Array3::zeros((2, 2, 2)),
            4
        ),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn f32_layer_is_orthogonal_to_f32_rounding() {
    let q = OrthGs::<f32>::from_params(
        vec![
            uniform_array3::<f32>((4, 8, 8), 1.0, 1),
            uniform_array3::<f32>((4, 8, 8), 1.0, 2),
        ],
        OrthMap::Cayley,
    )
    .unwrap();
    assert!(q.orthogonality_error().unwrap() < 1e-5);
    let x = normal_matrix::<f32>((2, 32), 1.0, 3);
    let y = q.forward(x.view()).unwrap();
    let (nx, ny): (f32, f32) = (x.iter().map(|v| v * v).sum(), y.iter().map(|v| v * v).sum());
    assert!((nx - ny).abs() < 1e-5 * nx);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(16)))]
    #[test]
    fn prop_orth_gs_dense_and_orthogonal(k in 1usize..6, b in 1usize..6, m in 1usize..4, exp in any::<bool>(), seed in 0u64..1000) {
        let map = if exp { OrthMap::Exp } else { OrthMap::Cayley };
        let q = random_gs(k, b, m, 2.0, map, seed);
        let want = reference_q(&q);
        let got = q.to_dense().unwrap();
        prop_assert!(common::rel_max_diff(got.as_slice().unwrap(), want.as_slice().unwrap()) < 1e-12);
        prop_assert!(q.orthogonality_error().unwrap() <= 1e-12);
        let x = normal_matrix::<f64>((2, k * b), 1.0, seed + 1);
        let y = q.forward(x.view()).unwrap();
        for (xr, yr) in x.rows().into_iter().zip(y.rows()) {
            let (nx, ny) = (xr.dot(&xr), yr.dot(&yr));
            prop_assert!((nx - ny).abs() <= 1e-12 * nx.max(1.0));
        }
    }
}
