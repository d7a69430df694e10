//! Every kernel path (portable, AVX2+FMA, AVX-512) against the portable oracle and against naive
//! loops written from the formulas, over sizes straddling the vector widths; Monarch products,
//! transposes and gradients through every path; strided inputs; thread-count independence.

use crate::common;

use common::{assert_close, naive_dense};
use monarch::ndarray::{s, Array2, Array3};
use monarch::num_complex::Complex;
use monarch::primitives::kernels::{
    blocked_backward_into, blocked_dot_into, blocked_into, blocked_outer_into,
    blocks_outer_sum_with, interleaved_backward_into, interleaved_into,
    interleaved_outer_chunks_into, interleaved_outer_into, Backend, PackedBlocked,
    PackedInterleaved, Rows, RowsMut,
};
use monarch::primitives::random::{normal_matrix, uniform_array3};
use monarch::{BlockDiag, Monarch, Par, Perm, Scalar};

const SIZES: [usize; 11] = [1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64];
const BATCHES: [usize; 5] = [1, 2, 5, 17, 64];

/// The backends this CPU runs; the others are reported and skipped.
fn backends() -> Vec<Backend> {
    Backend::ALL
        .into_iter()
        .filter(|b| {
            let ok = b.is_available();
            if !ok {
                eprintln!("skipping {b:?}: not supported by this CPU");
            }
            ok
        })
        .collect()
}

fn rand3<T: Scalar>(shape: (usize, usize, usize), seed: u64) -> Array3<T> {
    uniform_array3::<f64>(shape, 1.0, seed).mapv(T::from_f64)
}

fn rand2<T: Scalar>(shape: (usize, usize), seed: u64) -> Array2<T> {
    normal_matrix::<f64>(shape, 1.0, seed).mapv(T::from_f64)
}

fn tol<T: Scalar>() -> f64 {
    if <T::Real as Scalar>::from_f64(1.0 + 1e-10) == <T::Real as Scalar>::from_f64(1.0) {
        2e-5
    } else {
        1e-12
    }
}

/// The whole blocked product of `x` by `w` on backend `be`, as a new row-major buffer.
fn blocked_product<T: Scalar>(be: Backend, w: &PackedBlocked<T>, x: Rows<T>) -> Vec<T> {
    let (nb, batch) = (w.nblocks(), x.nrows());
    let width = nb * w.block_rows();
    let mut y = vec![T::zero(); batch * width];
    blocked_into(be, w, 0..nb, x, RowsMut::new(&mut y, width, batch, width));
    y
}

fn check_blocked<T: Scalar>() {
    for (si, &rows) in SIZES.iter().enumerate() {
        let cols = SIZES[(si * 7 + 3) % SIZES.len()];
        for &batch in &BATCHES {
            let nb = 1 + (rows + batch) % 3;
            let w = rand3::<T>((nb, rows, cols), (rows * 100 + batch) as u64);
            let x = rand2::<T>((batch, nb * cols), 7 + rows as u64);
            // Naive loop from the formula.
            let mut naive = Array2::<T>::zeros((batch, nb * rows));
            for b in 0..batch {
                for a in 0..nb {
                    for i in 0..rows {
                        naive[[b, a * rows + i]] =
                            (0..cols).map(|j| w[[a, i, j]] * x[[b, a * cols + j]]).sum();
                    }
                }
            }
            let pw = PackedBlocked::pack(w.view());
            let xr = Rows::new(x.as_slice().unwrap(), nb * cols, batch, nb * cols);
            let run = |be: Backend| blocked_product(be, &pw, xr);
            let oracle = run(Backend::Portable);
            let what = format!("blocked nb={nb} {rows}x{cols} batch={batch}");
            assert_close(&oracle, naive.as_slice().unwrap(), tol::<T>(), &what);
            for be in backends() {
                assert_close(&run(be), &oracle, tol::<T>(), &format!("{what} {be:?}"));
                // The dot-product form on unpacked weights.
                let mut y = vec![T::zero(); batch * nb * rows];
                blocked_dot_into(
                    be,
                    w.as_slice().unwrap(),
                    (nb, rows, cols),
                    0..nb,
                    Rows::new(x.as_slice().unwrap(), nb * cols, batch, nb * cols),
                    RowsMut::new(&mut y, nb * rows, batch, nb * rows),
                );
                let wn = format!("{what} dot {be:?}");
                assert_close(&y, naive.as_slice().unwrap(), tol::<T>(), &wn);
            }
            // Transposed packing is the product with every block transposed.
            let pt = PackedBlocked::pack_transposed(w.view());
            let g = rand2::<T>((batch, nb * rows), 11);
            let mut naive_t = Array2::<T>::zeros((batch, nb * cols));
            for b in 0..batch {
                for a in 0..nb {
                    for j in 0..cols {
                        naive_t[[b, a * cols + j]] =
                            (0..rows).map(|i| w[[a, i, j]] * g[[b, a * rows + i]]).sum();
                    }
                }
            }
            for be in backends() {
                let gr = Rows::new(g.as_slice().unwrap(), nb * rows, batch, nb * rows);
                let y = blocked_product(be, &pt, gr);
                let w = format!("{what} transposed {be:?}");
                assert_close(&y, naive_t.as_slice().unwrap(), tol::<T>(), &w);
            }
        }
    }
}

fn check_interleaved<T: Scalar>() {
    for (si, &nb) in SIZES.iter().enumerate() {
        let rows = SIZES[(si * 5 + 1) % SIZES.len()].min(17);
        let cols = SIZES[(si * 3 + 2) % SIZES.len()].min(33);
        for &batch in &BATCHES {
            let w = rand3::<T>((nb, rows, cols), (nb * 31 + batch) as u64);
            let x = rand2::<T>((batch, cols * nb), 5 + nb as u64);
            let mut naive = Array2::<T>::zeros((batch, rows * nb));
            for b in 0..batch {
                for c in 0..nb {
                    for i in 0..rows {
                        naive[[b, i * nb + c]] =
                            (0..cols).map(|t| w[[c, i, t]] * x[[b, t * nb + c]]).sum();
                    }
                }
            }
            let pw = PackedInterleaved::pack(w.view());
            let run = |be: Backend| {
                let mut y = vec![T::zero(); batch * rows * nb];
                interleaved_into(
                    be,
                    &pw,
                    0..rows,
                    Rows::new(x.as_slice().unwrap(), cols * nb, batch, cols * nb),
                    RowsMut::new(&mut y, rows * nb, batch, rows * nb),
                );
                y
            };
            let oracle = run(Backend::Portable);
            let what = format!("interleaved nb={nb} {rows}x{cols} batch={batch}");
            assert_close(&oracle, naive.as_slice().unwrap(), tol::<T>(), &what);
            for be in backends() {
                assert_close(&run(be), &oracle, tol::<T>(), &format!("{what} {be:?}"));
            }
        }
    }
}

fn check_outer<T: Scalar>() {
    for (si, &nb) in SIZES.iter().enumerate() {
        let rows = SIZES[(si * 5 + 4) % SIZES.len()].min(33);
        let cols = SIZES[(si * 7 + 2) % SIZES.len()];
        for &batch in &BATCHES {
            let g = rand2::<T>((batch, nb * rows), 3 + batch as u64);
            let x = rand2::<T>((batch, nb * cols), 4 + nb as u64);
            // Blocked layout.
            let naive_b = Array3::from_shape_fn((nb, rows, cols), |(a, i, j)| {
                (0..batch)
                    .map(|b| g[[b, a * rows + i]] * x[[b, a * cols + j]])
                    .sum::<T>()
            });
            // Interleaved layout: out[i][t][c] = Σ_b g[b, i·nb + c] · x[b, t·nb + c].
            let naive_i = Array3::from_shape_fn((rows, cols, nb), |(i, t, c)| {
                (0..batch)
                    .map(|b| g[[b, i * nb + c]] * x[[b, t * nb + c]])
                    .sum::<T>()
            });
            let gr = Rows::new(g.as_slice().unwrap(), nb * rows, batch, nb * rows);
            let xr = Rows::new(x.as_slice().unwrap(), nb * cols, batch, nb * cols);
            let what = format!("outer nb={nb} {rows}x{cols} batch={batch}");
            for be in backends() {
                let mut ob = vec![T::zero(); nb * rows * cols];
                blocked_outer_into(be, (rows, cols), gr, xr, &mut ob);
                let t = tol::<T>() * (batch as f64).sqrt();
                assert_close(
                    &ob,
                    naive_b.as_slice().unwrap(),
                    t,
                    &format!("{what} blocked {be:?}"),
                );
                let mut oi = vec![T::zero(); nb * rows * cols];
                interleaved_outer_into(be, nb, gr, xr, &mut oi);
                assert_close(
                    &oi,
                    naive_i.as_slice().unwrap(),
                    t,
                    &format!("{what} inter {be:?}"),
                );
                // Chunked layout, every contiguous run of chunks: out[k−k0][i][t][c mod 16],
                // lanes past nb zero.
                let nch = nb.div_ceil(16);
                for k0 in 0..nch {
                    for k1 in k0 + 1..=nch {
                        let blk = rows * cols * 16;
                        let mut oc = vec![T::from_f64(7.0); (k1 - k0) * blk];
                        interleaved_outer_chunks_into(be, nb, k0..k1, gr, xr, &mut oc);
                        let want: Vec<T> = (0..(k1 - k0) * blk)
                            .map(|e| {
                                let (k, it, lane) = (k0 + e / blk, (e % blk) / 16, e % 16);
                                let c = k * 16 + lane;
                                if c < nb {
                                    naive_i[[it / cols, it % cols, c]]
                                } else {
                                    T::zero()
                                }
                            })
                            .collect();
                        let w = format!("{what} inter chunks {k0}..{k1} {be:?}");
                        assert_close(&oc, &want, t, &w);
                    }
                }
            }
        }
    }
}

#[test]
fn blocked_every_backend_f32() {
    check_blocked::<f32>();
}
#[test]
fn blocked_every_backend_f64() {
    check_blocked::<f64>();
}
#[test]
fn interleaved_every_backend_f32() {
    check_interleaved::<f32>();
}
#[test]
fn interleaved_every_backend_f64() {
    check_interleaved::<f64>();
}
#[test]
fn outer_sums_every_backend_f32() {
    check_outer::<f32>();
}
#[test]
fn outer_sums_every_backend_f64() {
    check_outer::<f64>();
}

/// Monarchs covering the three plans: reference layout (square and rectangular), its
/// transpose, and arbitrary permutations.
/// Each gradient of `got` (first factor, second factor, input) within `tol` of `want`'s.
fn assert_grads_close<T: Scalar>(
    got: &monarch::MonarchGrad<T>,
    (w1, w2, x): (&Array3<T>, &Array3<T>, &Array2<T>),
    tol: f64,
    what: &str,
) {
    let pairs = [
        (got.w1.as_slice().unwrap(), w1.as_slice().unwrap(), "w1"),
        (got.w2.as_slice().unwrap(), w2.as_slice().unwrap(), "w2"),
        (got.x.as_slice().unwrap(), x.as_slice().unwrap(), "x"),
    ];
    for (a, e, which) in pairs {
        assert_close(a, e, tol, &format!("{what}: {which}"));
    }
}

fn monarchs<T: Scalar>() -> Vec<(String, Monarch<T>)> {
    let mut v = Vec::new();
    for &(w1, w2) in &[
        ((4, 4, 4), (4, 4, 4)),
        ((8, 8, 8), (8, 8, 8)),
        ((17, 3, 5), (3, 7, 17)),
        ((2, 16, 33), (16, 9, 2)),
        ((32, 32, 32), (32, 32, 32)),
    ] {
        let m = Monarch::<f64>::random_factors(w1, w2, 42)
            .unwrap()
            .map(T::from_f64);
        v.push((format!("ref {w1:?} {w2:?}"), m.clone()));
        v.push((format!("transpose {w1:?} {w2:?}"), m.transpose()));
    }
    let (k, q, p, l, s, r) = (3, 4, 5, 6, 7, 2);
    let w1 = BlockDiag::new(rand3::<T>((k, q, p), 1)).unwrap();
    let w2 = BlockDiag::new(rand3::<T>((l, s, r), 2)).unwrap();
    let g = Monarch::from_parts(
        Perm::random(k * p, 3),
        w1,
        Perm::random(k * q, 4),
        w2,
        Perm::random(l * s, 5),
    )
    .unwrap();
    v.push(("general perms".into(), g));
    v
}

fn check_monarch_products<T: Scalar>() {
    for (name, m) in monarchs::<T>() {
        let dense = m.to_dense();
        // Independent dense reference for the reference layout.
        if name.starts_with("ref") {
            let nd = naive_dense(m.w1(), m.w2());
            assert_close(
                dense.as_slice().unwrap(),
                nd.as_slice().unwrap(),
                tol::<T>(),
                &name,
            );
        }
        for &batch in &BATCHES {
            let x = rand2::<T>((batch, m.in_features()), batch as u64);
            let want = x.dot(&dense.t());
            for be in backends() {
                let mut out = Array2::zeros((batch, m.out_features()));
                m.matmul_into_with(be, x.view(), out.view_mut(), Par::Seq)
                    .unwrap();
                let what = format!("{name} batch={batch} {be:?}");
                assert_close(
                    out.as_slice().unwrap(),
                    want.as_slice().unwrap(),
                    tol::<T>(),
                    &what,
                );
            }
        }
    }
}

#[test]
fn monarch_products_every_backend_f32() {
    check_monarch_products::<f32>();
}
#[test]
fn monarch_products_every_backend_f64() {
    check_monarch_products::<f64>();
}
#[test]
fn monarch_products_complex_portable() {
    let m = Monarch::<Complex<f64>>::dft_natural(64).unwrap();
    let x = rand2::<f64>((5, 64), 9).mapv(|v| Complex::new(v, 0.5 * v));
    let want = x.dot(&m.to_dense().t());
    let got = m.matmul(x.view()).unwrap();
    assert_close(
        got.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-12,
        "dft",
    );
}

/// Inputs that are not contiguous row-major: a column window of a wider array and a
/// transposed (column-major) array; outputs written into a transposed view.
#[test]
fn strided_views_every_backend() {
    let m = Monarch::<f32>::random(64, 8, 5).unwrap();
    let dense = m.to_dense();
    let wide = rand2::<f32>((17, 100), 1);
    let window = wide.slice(s![.., 10..74]);
    let colmajor = rand2::<f32>((64, 17), 2).reversed_axes();
    for be in backends() {
        for (what, x) in [("window", window), ("column-major", colmajor.view())] {
            let want = x.dot(&dense.t()).as_standard_layout().into_owned();
            let mut out_t = Array2::<f32>::zeros((64, 17));
            let out = out_t.view_mut().reversed_axes();
            m.matmul_into_with(be, x, out, Par::Rayon).unwrap();
            let got = out_t.t().as_standard_layout().into_owned();
            let w = format!("{what} {be:?}");
            assert_close(got.as_slice().unwrap(), want.as_slice().unwrap(), 2e-5, &w);
        }
        let bd = m.factor1();
        let want = window
            .dot(&bd.to_dense().t())
            .as_standard_layout()
            .into_owned();
        let mut y = Array2::zeros((17, 64));
        bd.matmul_into_with(be, window, y.view_mut(), Par::Seq)
            .unwrap();
        assert_close(
            y.as_slice().unwrap(),
            want.as_slice().unwrap(),
            2e-5,
            "blockdiag window",
        );
    }
}

/// `Par::Seq` and `Par::Rayon` (on a 3-thread pool, so splits really happen) agree bitwise,
/// for large batches (row panels) and small ones (block windows).
#[test]
fn thread_count_does_not_change_bits() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for (n, nb) in [(1024, 32), (256, 16)] {
        let m = Monarch::<f32>::random(n, nb, 8).unwrap();
        let mt = m.transpose();
        for batch in [1, 3, 40, 100] {
            let x = rand2::<f32>((batch, n), 3);
            let g = rand2::<f32>((batch, n), 4);
            for be in backends() {
                for mm in [&m, &mt] {
                    let mut a = Array2::zeros((batch, n));
                    let mut b = Array2::zeros((batch, n));
                    mm.matmul_into_with(be, x.view(), a.view_mut(), Par::Seq)
                        .unwrap();
                    pool.install(|| {
                        mm.matmul_into_with(be, x.view(), b.view_mut(), Par::Rayon)
                            .unwrap()
                    });
                    assert_eq!(a, b, "forward n={n} batch={batch} {be:?}");
                    let ga = mm.vjp_with(be, x.view(), g.view(), Par::Seq).unwrap();
                    let gb = pool
                        .install(|| mm.vjp_with(be, x.view(), g.view(), Par::Rayon))
                        .unwrap();
                    assert_eq!(ga, gb, "vjp n={n} batch={batch} {be:?}");
                }
            }
        }
    }
}

/// Finite differences (exact for this bilinear form up to rounding) in f64, every backend and
/// every plan, plus the dense formula `grad_x = g · M`.
#[test]
fn vjp_every_backend_matches_finite_differences() {
    for (name, m) in monarchs::<f64>()
        .into_iter()
        .filter(|(n, _)| !n.contains("32, 32"))
    {
        let batch = 5;
        let x = rand2::<f64>((batch, m.in_features()), 21);
        let g = rand2::<f64>((batch, m.out_features()), 22);
        let loss = |mm: &Monarch<f64>| (&mm.to_dense().dot(&x.t()).t() * &g).sum();
        let h = 1e-3;
        let mut fd1 = Array3::<f64>::zeros(m.w1().dim());
        for (idx, v) in fd1.indexed_iter_mut() {
            let (mut p, mut q) = (m.clone(), m.clone());
            p.w1_mut()[idx] += h;
            q.w1_mut()[idx] -= h;
            *v = (loss(&p) - loss(&q)) / (2.0 * h);
        }
        let mut fd2 = Array3::<f64>::zeros(m.w2().dim());
        for (idx, v) in fd2.indexed_iter_mut() {
            let (mut p, mut q) = (m.clone(), m.clone());
            p.w2_mut()[idx] += h;
            q.w2_mut()[idx] -= h;
            *v = (loss(&p) - loss(&q)) / (2.0 * h);
        }
        let gx = g.dot(&m.to_dense());
        for be in backends() {
            let d = m.vjp_with(be, x.view(), g.view(), Par::Rayon).unwrap();
            let w = format!("{name} {be:?}");
            assert_close(d.w1.as_slice().unwrap(), fd1.as_slice().unwrap(), 1e-7, &w);
            assert_close(d.w2.as_slice().unwrap(), fd2.as_slice().unwrap(), 1e-7, &w);
            assert_close(d.x.as_slice().unwrap(), gx.as_slice().unwrap(), 1e-12, &w);
        }
    }
}

/// The weight gradient of larger shapes through every SIMD path against the portable one,
/// with strided inputs.
#[test]
fn vjp_large_every_backend_matches_portable() {
    for (name, m) in monarchs::<f32>() {
        let wide = rand2::<f32>((64, m.in_features() + 3), 1);
        let x = wide.slice(s![.., 3..]);
        let g = rand2::<f32>((64, m.out_features()), 2);
        let oracle = m
            .vjp_with(Backend::Portable, x, g.view(), Par::Seq)
            .unwrap();
        for be in backends() {
            let d = m.vjp_with(be, x, g.view(), Par::Rayon).unwrap();
            let w = format!("{name} {be:?}");
            let want = (&oracle.w1, &oracle.w2, &oracle.x);
            assert_grads_close(&d, want, 1e-4, &w);
        }
        // The public entry point takes the detected path.
        let d = m.vjp(x, g.view()).unwrap();
        assert_close(
            d.w1.as_slice().unwrap(),
            oracle.w1.as_slice().unwrap(),
            1e-4,
            &name,
        );
    }
}

/// The kept-intermediate forward and VJP at sizes where the products run in parallel panels
/// (row counts that do not divide into panels, factors above the small-factor threshold and
/// below it): the output is bitwise `matmul`'s, `mid` is the first factor's output, and the
/// gradients from it match `vjp` (which recomputes it, by other code paths).
#[test]
fn kept_intermediate_large_matches_recomputed() {
    use monarch::MonarchGrad;
    for (n, b, rows) in [(1024, 32, 300), (256, 16, 203), (64, 8, 77)] {
        let m = Monarch::<f32>::random(n, b, 9).unwrap();
        for (name, mm) in [("ref", m.clone()), ("transpose", m.transpose())] {
            let w = format!("{name} n {n} rows {rows}");
            let x = rand2::<f32>((rows, n), 1);
            let g = rand2::<f32>((rows, n), 2);
            let mut y = Array2::zeros((rows, n));
            let mut mid = Array2::zeros((rows, mm.hidden_features()));
            mm.matmul_keep_into(x.view(), y.view_mut(), mid.view_mut(), Par::Rayon)
                .unwrap();
            assert_eq!(y, mm.matmul(x.view()).unwrap(), "{w}: output");
            let xin = mm.perms().0.apply_rows(x.view()).unwrap();
            let y1 = mm.factor1().matmul(xin.view()).unwrap();
            let (a, e) = (mid.as_slice().unwrap(), y1.as_slice().unwrap());
            assert_close(a, e, 1e-5, &format!("{w}: mid"));
            let full = mm.vjp(x.view(), g.view()).unwrap();
            let mut grads = MonarchGrad::zeros(&mm, rows);
            mm.vjp_kept_into(x.view(), mid.view(), g.view(), &mut grads)
                .unwrap();
            for (k, (a, e)) in [(&grads.w1, &full.w1), (&grads.w2, &full.w2)]
                .into_iter()
                .enumerate()
            {
                let (a, e) = (a.as_slice().unwrap(), e.as_slice().unwrap());
                assert_close(a, e, 1e-4, &format!("{w}: w{}", k + 1));
            }
            let (a, e) = (grads.x.as_slice().unwrap(), full.x.as_slice().unwrap());
            assert_close(a, e, 1e-4, &format!("{w}: x"));
        }
    }
}

#[test]
fn blockdiag_paths_match_dense() {
    let bd = BlockDiag::new(rand3::<f64>((5, 17, 9), 3)).unwrap();
    let x = rand2::<f64>((33, 45), 4);
    let g = rand2::<f64>((33, 85), 5);
    let dense = bd.to_dense();
    for be in backends() {
        let mut y = Array2::zeros((33, 85));
        bd.matmul_into_with(be, x.view(), y.view_mut(), Par::Rayon)
            .unwrap();
        let want = x.dot(&dense.t());
        assert_close(
            y.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "bd forward",
        );
        let gw = blocks_outer_sum_with(be, g.view(), x.view(), (5, 17, 9), Par::Rayon).unwrap();
        let full = g.t().dot(&x);
        for a in 0..5 {
            let blk = full.slice(s![a * 17..(a + 1) * 17, a * 9..(a + 1) * 9]);
            let got = gw.index_axis(monarch::ndarray::Axis(0), a).to_owned();
            assert_close(
                got.as_slice().unwrap(),
                blk.to_owned().as_slice().unwrap(),
                1e-12,
                "gw",
            );
        }
    }
    let v = bd.vjp(x.view(), g.view()).unwrap();
    let want = g.dot(&dense);
    assert_close(
        v.x.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-12,
        "bd vjp x",
    );
    assert!(
        blocks_outer_sum_with(Backend::Portable, g.view(), x.view(), (5, 17, 8), Par::Seq).is_err()
    );
    let mut y = Array2::zeros((33, 84));
    assert!(Monarch::<f64>::random(45, 5, 1)
        .unwrap()
        .matmul_into_with(Backend::Portable, x.view(), y.view_mut(), Par::Seq)
        .is_err());
}

/// Output-feature windows (`irange` not starting at 0) and reductions longer than one slice of
/// the interleaved kernel (65 inputs per block), with row counts that leave partial row tiles.
fn check_interleaved_windows<T: Scalar>() {
    for &(nb, rows, cols, batch) in &[
        (33usize, 9usize, 65usize, 29usize),
        (16, 5, 70, 13),
        (3, 7, 40, 25),
    ] {
        let w = rand3::<T>((nb, rows, cols), (nb * 7 + rows) as u64);
        let x = rand2::<T>((batch, cols * nb), 11 + cols as u64);
        let pw = PackedInterleaved::pack(w.view());
        for irange in [0..rows, 1..rows - 1, 2..3] {
            let ni = irange.len();
            let mut naive = Array2::<T>::zeros((batch, ni * nb));
            for b in 0..batch {
                for c in 0..nb {
                    for (ii, i) in irange.clone().enumerate() {
                        naive[[b, ii * nb + c]] =
                            (0..cols).map(|t| w[[c, i, t]] * x[[b, t * nb + c]]).sum();
                    }
                }
            }
            for be in std::iter::once(Backend::Portable).chain(backends()) {
                let mut y = vec![T::zero(); batch * ni * nb];
                interleaved_into(
                    be,
                    &pw,
                    irange.clone(),
                    Rows::new(x.as_slice().unwrap(), cols * nb, batch, cols * nb),
                    RowsMut::new(&mut y, ni * nb, batch, ni * nb),
                );
                let what = format!(
                    "interleaved window {irange:?} nb={nb} {rows}x{cols} batch={batch} {be:?}"
                );
                assert_close(&y, naive.as_slice().unwrap(), tol::<T>(), &what);
            }
        }
    }
}

#[test]
fn interleaved_windows_every_backend() {
    check_interleaved_windows::<f32>();
    check_interleaved_windows::<f64>();
}

/// Wide blocks (256 inputs: the kernel's copied input panel gets a padded stride) read from a
/// strided window of a wider buffer, against the naive formula.
fn check_blocked_wide<T: Scalar>() {
    let (nb, rows, cols, batch, ld) = (2usize, 20usize, 256usize, 13usize, 600usize);
    let w = rand3::<T>((nb, rows, cols), 99);
    let x = rand2::<T>((batch, ld), 98);
    let pw = PackedBlocked::pack(w.view());
    let mut naive = Array2::<T>::zeros((batch, nb * rows));
    for b in 0..batch {
        for a in 0..nb {
            for i in 0..rows {
                naive[[b, a * rows + i]] =
                    (0..cols).map(|j| w[[a, i, j]] * x[[b, a * cols + j]]).sum();
            }
        }
    }
    for be in std::iter::once(Backend::Portable).chain(backends()) {
        let y = blocked_product(
            be,
            &pw,
            Rows::new(x.as_slice().unwrap(), ld, batch, nb * cols),
        );
        let what = format!("blocked wide {rows}x{cols} ld={ld} {be:?}");
        assert_close(&y, naive.as_slice().unwrap(), tol::<T>(), &what);
    }
}

#[test]
fn blocked_wide_blocks_every_backend() {
    check_blocked_wide::<f32>();
    check_blocked_wide::<f64>();
}

/// The blocked product and the blocked backward pass stage whole rows block-major when rows
/// are at least 4 KB apart and 32 of them fit 256 KB, and copy one block's column window at a
/// time otherwise: factors on both sides of both limits (in f32 and f64, with one and two tasks
/// splitting the blocks), at row counts below, at and past one 32-row chunk, with padded row
/// strides, against the naive sums.
fn check_blocked_staging<T: Scalar>() {
    for &(nb, rows, cols) in &[
        (16usize, 16usize, 16usize),
        (32, 32, 32),
        (64, 8, 32),
        (80, 8, 32),
    ] {
        for &batch in &[3usize, 32, 45] {
            let w = rand3::<T>((nb, rows, cols), (nb * 7 + batch) as u64);
            let (ldx, ldg) = (nb * cols + 5, nb * rows + 3);
            let x = rand2::<T>((batch, ldx), 31 + batch as u64);
            let g = rand2::<T>((batch, ldg), 37 + batch as u64);
            let xr = Rows::new(x.as_slice().unwrap(), ldx, batch, nb * cols);
            let gr = Rows::new(g.as_slice().unwrap(), ldg, batch, nb * rows);
            let y_naive = Array2::from_shape_fn((batch, nb * rows), |(b, o)| {
                let (a, i) = (o / rows, o % rows);
                (0..cols)
                    .map(|j| w[[a, i, j]] * x[[b, a * cols + j]])
                    .sum::<T>()
            });
            let gx_naive = Array2::from_shape_fn((batch, nb * cols), |(b, o)| {
                let (a, j) = (o / cols, o % cols);
                (0..rows)
                    .map(|i| w[[a, i, j]] * g[[b, a * rows + i]])
                    .sum::<T>()
            });
            let wg_naive = Array3::from_shape_fn((nb, rows, cols), |(a, i, j)| {
                (0..batch)
                    .map(|b| g[[b, a * rows + i]] * x[[b, a * cols + j]])
                    .sum::<T>()
            });
            let (pw, pt) = (
                PackedBlocked::pack(w.view()),
                PackedBlocked::pack_transposed(w.view()),
            );
            let what = format!("blocked staging nb={nb} {rows}x{cols} batch={batch}");
            let t = tol::<T>() * (batch as f64).sqrt();
            for be in std::iter::once(Backend::Portable).chain(backends()) {
                let y = blocked_product(be, &pw, xr);
                assert_close(
                    &y,
                    y_naive.as_slice().unwrap(),
                    tol::<T>(),
                    &format!("{what} {be:?} product"),
                );
                for tasks in [1, 2] {
                    let mut wg = vec![T::from_f64(9.0); nb * rows * cols];
                    let mut gx = vec![T::from_f64(9.0); batch * nb * cols];
                    blocked_backward_into(be, &pt, gr, xr, &mut wg, &mut gx, tasks, false);
                    let w = format!("{what} {be:?} tasks={tasks}");
                    assert_close(
                        &gx,
                        gx_naive.as_slice().unwrap(),
                        tol::<T>(),
                        &format!("{w} input gradient"),
                    );
                    assert_close(
                        &wg,
                        wg_naive.as_slice().unwrap(),
                        t,
                        &format!("{w} weight gradient"),
                    );
                }
            }
        }
    }
}

#[test]
fn blocked_staged_and_windowed_paths_match_naive() {
    check_blocked_staging::<f32>();
    check_blocked_staging::<f64>();
}

/// The fused VJP pass (small factors, many rows, two threads) gives bitwise the same gradients
/// as the stage-by-stage pass (`Par::Seq`), for the reference layout and its transpose, and
/// its input gradient equals the dense `g · M`.
#[test]
fn fused_vjp_matches_stagewise_bitwise() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for m in [
        // f64 factors up to 48 KB take the fused pass: 144 (b = 12) is 27 KB, 64 (b = 8) 8 KB;
        // 256 (b = 16, 64 KB) takes the staged pass on both sides.
        Monarch::<f64>::random(144, 12, 9).unwrap(),
        Monarch::<f64>::random(144, 12, 8).unwrap().transpose(),
        Monarch::<f64>::random(64, 8, 6).unwrap(),
        Monarch::<f64>::random(256, 16, 7).unwrap(),
    ] {
        let batch = 100;
        let x = rand2::<f64>((batch, m.in_features()), 31);
        let g = rand2::<f64>((batch, m.out_features()), 32);
        for be in std::iter::once(Backend::Portable).chain(backends()) {
            let fused = pool
                .install(|| m.vjp_with(be, x.view(), g.view(), Par::Rayon))
                .unwrap();
            let staged = m.vjp_with(be, x.view(), g.view(), Par::Seq).unwrap();
            assert_eq!(fused, staged, "{be:?}");
            let gx = g.dot(&m.to_dense());
            assert_close(
                fused.x.as_slice().unwrap(),
                gx.as_slice().unwrap(),
                1e-12,
                "fused gx",
            );
        }
    }
}

/// The one-pass VJP of the reference layout and its transpose (factors up to 1 MB, rows cut
/// into parts), from the input and (reference layout) from a kept intermediate: gradients bitwise the same on one thread and on two or
/// three, and equal to the factor-by-factor chain (each factor's own VJP with the permutations
/// as explicit gathers: other code paths) and the input gradient to the dense `g · M`, for
/// square and rectangular factors, batches of no rows, one row, and parts that do not divide
/// into panels, on every backend.
#[test]
fn one_pass_vjp_matches_factor_chain() {
    use monarch::MonarchGrad;
    let pools: Vec<_> = [2, 3]
        .into_iter()
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut cases = Vec::new();
    for (w1, w2) in [
        ((32, 32, 32), (32, 32, 32)),
        ((17, 3, 5), (3, 7, 17)),
        ((2, 16, 33), (16, 9, 2)),
        ((8, 8, 8), (8, 8, 8)),
    ] {
        let m = Monarch::<f64>::random_factors(w1, w2, 17).unwrap();
        cases.push((format!("ref {w1:?} {w2:?}"), m.clone()));
        cases.push((format!("transpose {w1:?} {w2:?}"), m.transpose()));
    }
    for (name, m) in cases {
        let (p_in, p_mid, p_out) = m.perms();
        let dense = m.to_dense();
        for batch in [0, 1, 130, 517] {
            let what = format!("{name} batch {batch}");
            let x = rand2::<f64>((batch, m.in_features()), 51);
            let g = rand2::<f64>((batch, m.out_features()), 52);
            // The chain: z = P_mid · BD(w1) · P_in x, out = P_out · BD(w2) z.
            let xin = p_in.apply_rows(x.view()).unwrap();
            let y1 = m.factor1().matmul(xin.view()).unwrap();
            let z = p_mid.apply_rows(y1.view()).unwrap();
            let g2 = p_out.inverse().apply_rows(g.view()).unwrap();
            let d2 = m.factor2().vjp(z.view(), g2.view()).unwrap();
            let gz = p_mid.inverse().apply_rows(d2.x.view()).unwrap();
            let d1 = m.factor1().vjp(xin.view(), gz.view()).unwrap();
            let gx = g.dot(&dense);
            for be in std::iter::once(Backend::Portable).chain(backends()) {
                let seq = m.vjp_with(be, x.view(), g.view(), Par::Seq).unwrap();
                for pool in &pools {
                    let par = pool
                        .install(|| m.vjp_with(be, x.view(), g.view(), Par::Rayon))
                        .unwrap();
                    assert_eq!(par, seq, "{what} {be:?}: threads");
                }
                let w = format!("{what} {be:?}");
                assert_grads_close(&seq, (&d1.w, &d2.w, &gx), 1e-12, &w);
            }
            // From a kept intermediate (the detected backend), on one thread and on two.
            let mut mid = Array2::zeros((batch, m.hidden_features()));
            let mut y = Array2::zeros((batch, m.out_features()));
            m.matmul_keep_into(x.view(), y.view_mut(), mid.view_mut(), Par::Seq)
                .unwrap();
            let mut kept = MonarchGrad::zeros(&m, batch);
            m.vjp_kept_into(x.view(), mid.view(), g.view(), &mut kept)
                .unwrap();
            let mut kept2 = MonarchGrad::zeros(&m, batch);
            pools[0].install(|| {
                m.vjp_kept_into(x.view(), mid.view(), g.view(), &mut kept2)
                    .unwrap()
            });
            assert_eq!(kept, kept2, "{what}: kept, threads");
            let w = format!("{what}: kept");
            assert_grads_close(&kept, (&d1.w, &d2.w, &gx), 1e-12, &w);
        }
    }
}

/// The fused backward passes (one copy of each chunk of rows for the weight gradient and the
/// input gradient) give bitwise the results of the separate outer sum and transposed product on
/// the same backend — for the blocked one with 1, 2 and 3 tasks — and the portable passes'
/// results match the naive sums.
fn check_fused_backward<T: Scalar + PartialEq>() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (si, &rows) in SIZES.iter().enumerate() {
        let cols = SIZES[(si * 5 + 2) % SIZES.len()];
        for &batch in &[1usize, 17, 70] {
            let nb = [1, 3, 16, 17, 33][(si + batch) % 5];
            let w = rand3::<T>((nb, rows, cols), (rows * 31 + batch) as u64);
            // Blocked: g has nb·rows columns (the factor's output), x nb·cols.
            let g = rand2::<T>((batch, nb * rows), 5 + si as u64);
            let x = rand2::<T>((batch, nb * cols), 6 + batch as u64);
            let gr = Rows::new(g.as_slice().unwrap(), nb * rows, batch, nb * rows);
            let xr = Rows::new(x.as_slice().unwrap(), nb * cols, batch, nb * cols);
            let wt = PackedBlocked::pack_transposed(w.view());
            let what = format!("blocked backward nb={nb} {rows}x{cols} batch={batch}");
            for be in std::iter::once(Backend::Portable).chain(backends()) {
                let mut out = vec![T::zero(); nb * rows * cols];
                blocked_outer_into(be, (rows, cols), gr, xr, &mut out);
                let mut gx = vec![T::zero(); batch * nb * cols];
                let gxm = RowsMut::new(&mut gx, nb * cols, batch, nb * cols);
                blocked_into(be, &wt, 0..nb, gr, gxm);
                for tasks in 1..=3 {
                    let mut fo = vec![T::from_f64(9.0); nb * rows * cols];
                    let mut fgx = vec![T::from_f64(9.0); batch * nb * cols];
                    pool.install(|| {
                        blocked_backward_into(be, &wt, gr, xr, &mut fo, &mut fgx, tasks, false)
                    });
                    assert!(fo == out, "{what} {be:?} tasks={tasks}: weight gradient");
                    assert!(fgx == gx, "{what} {be:?} tasks={tasks}: input gradient");
                }
                // The rows fed in two panels, the second continuing the first's sums.
                let k = batch / 3;
                let mut po = vec![T::from_f64(9.0); nb * rows * cols];
                let mut pgx = vec![T::zero(); batch * nb * cols];
                let (g1, g2) = pgx.split_at_mut(k * nb * cols);
                let (ga, xa) = (gr.rows(0..k), xr.rows(0..k));
                blocked_backward_into(be, &wt, ga, xa, &mut po, g1, 2, false);
                let (gb, xb) = (gr.rows(k..batch), xr.rows(k..batch));
                blocked_backward_into(be, &wt, gb, xb, &mut po, g2, 1, true);
                assert!(po == out, "{what} {be:?}: weight gradient in two panels");
                assert!(pgx == gx, "{what} {be:?}: input gradient in two panels");
                if be == Backend::Portable {
                    let naive = Array3::from_shape_fn((nb, rows, cols), |(a, i, j)| {
                        (0..batch)
                            .map(|b| g[[b, a * rows + i]] * x[[b, a * cols + j]])
                            .sum::<T>()
                    });
                    let t = tol::<T>() * (batch as f64).sqrt();
                    assert_close(&out, naive.as_slice().unwrap(), t, &what);
                }
            }
            // Interleaved: g has rows·nb columns, x cols·nb.
            let wi = PackedInterleaved::pack_transposed(w.view());
            let gr = Rows::new(g.as_slice().unwrap(), nb * rows, batch, nb * rows);
            let xr = Rows::new(x.as_slice().unwrap(), nb * cols, batch, nb * cols);
            let nch = nb.div_ceil(16);
            let what = format!("interleaved backward nb={nb} {rows}x{cols} batch={batch}");
            for be in std::iter::once(Backend::Portable).chain(backends()) {
                let mut out = vec![T::zero(); nch * rows * cols * 16];
                interleaved_outer_chunks_into(be, nb, 0..nch, gr, xr, &mut out);
                let mut gx = vec![T::zero(); batch * nb * cols];
                let gxm = RowsMut::new(&mut gx, nb * cols, batch, nb * cols);
                interleaved_into(be, &wi, 0..cols, gr, gxm);
                let mut fo = vec![T::from_f64(9.0); nch * rows * cols * 16];
                let mut fgx = vec![T::from_f64(9.0); batch * nb * cols];
                interleaved_backward_into(be, &wi, gr, xr, &mut fo, &mut fgx, false);
                assert!(fo == out, "{what} {be:?}: weight gradient");
                assert!(fgx == gx, "{what} {be:?}: input gradient");
                // The rows fed in two panels, the second continuing the first's sums.
                let k = batch / 3;
                let (mut po, mut pgx) =
                    (vec![T::from_f64(9.0); fo.len()], vec![T::zero(); fgx.len()]);
                let (g1, g2) = pgx.split_at_mut(k * nb * cols);
                interleaved_backward_into(
                    be,
                    &wi,
                    gr.rows(0..k),
                    xr.rows(0..k),
                    &mut po,
                    g1,
                    false,
                );
                interleaved_backward_into(
                    be,
                    &wi,
                    gr.rows(k..batch),
                    xr.rows(k..batch),
                    &mut po,
                    g2,
                    true,
                );
                assert!(po == out, "{what} {be:?}: weight gradient in two panels");
                assert!(pgx == gx, "{what} {be:?}: input gradient in two panels");
            }
        }
    }
}

#[test]
fn fused_backward_matches_separate_passes() {
    check_fused_backward::<f32>();
    check_fused_backward::<f64>();
}

/// Weight gradients at batches cut into several row parts (and recomputed intermediates) are
/// exact derivatives: `M` is linear in each factor, so `⟨∂W, D⟩ = Σ g ⊙ (M_{W+D} − M_W) x` for
/// any direction `D`, checked in f64 for the reference layout, its transpose and a small
/// factor, with the input gradient against the dense `g · M`.
#[test]
fn vjp_weight_gradients_are_exact_directional_derivatives() {
    for m in [
        Monarch::<f64>::random(1024, 32, 11).unwrap(),
        Monarch::<f64>::random(1024, 32, 12).unwrap().transpose(),
        Monarch::<f64>::random(256, 16, 13).unwrap(),
    ] {
        // One part at n = 1024 and 130 rows; two and four at 300 and 600 (two at n = 256, 600).
        for batch in [130, 300, 600] {
            let x = rand2::<f64>((batch, m.in_features()), 41);
            let g = rand2::<f64>((batch, m.out_features()), 42);
            let d = m.vjp(x.view(), g.view()).unwrap();
            let y = m.matmul(x.view()).unwrap();
            let what = format!("n={} batch={batch}", m.in_features());
            for which in 0..2 {
                let mut mp = m.clone();
                let dir = if which == 0 {
                    rand3::<f64>(m.w1().dim(), 43)
                } else {
                    rand3::<f64>(m.w2().dim(), 44)
                };
                if which == 0 {
                    let mut w = mp.w1_mut();
                    w += &dir;
                } else {
                    let mut w = mp.w2_mut();
                    w += &dir;
                }
                let dy = mp.matmul(x.view()).unwrap() - &y;
                let want = (&dy * &g).sum();
                let gw = if which == 0 { &d.w1 } else { &d.w2 };
                let got = (gw * &dir).sum();
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{what} factor {}: {got} vs {want}",
                    which + 1
                );
            }
            let gx = g.dot(&m.to_dense());
            assert_close(
                d.x.as_slice().unwrap(),
                gx.as_slice().unwrap(),
                1e-10,
                &what,
            );
        }
    }
}
