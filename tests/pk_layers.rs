//! PK family: layers against dense Kronecker references, the PK ↔ Monarch conversion, the
//! effective-width rule, VJPs by finite differences, bad input → Error.

use crate::common;
use crate::mx;
use common::assert_close;
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::pk::*;
use monarch::primitives::nn::{Activation, LayerNorm};
use monarch::primitives::random::normal_matrix;
use monarch::{Monarch, Perm};
use mx::{bump, check_grad, dot, flat};
use proptest::prelude::*;

fn kron(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let (ar, ac) = a.dim();
    let (br, bc) = b.dim();
    Array2::from_shape_fn((ar * br, ac * bc), |(i, j)| {
        a[[i / br, j / bc]] * b[[i % br, j % bc]]
    })
}

fn eye(n: usize) -> Array2<f64> {
    Array2::eye(n)
}

/// Column-major vec of each `S × C` matrix in the batch, computed by index arithmetic.
fn vec_col(x: &Array3<f64>) -> Array2<f64> {
    let (b, s, c) = x.dim();
    Array2::from_shape_fn((b, s * c), |(bi, i)| x[[bi, i % s, i / s]])
}

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16),
    )
}

proptest! {
    #![proptest_config(cases())]
    #[test]
    fn token_and_channel_mixing_are_kronecker_products(s in 1usize..6, c in 1usize..6, so in 1usize..6, co in 1usize..6, seed in 0u64..1000) {
        let w_t = normal_matrix::<f64>((so, s), 1.0, seed);
        let w_c = normal_matrix::<f64>((co, c), 1.0, seed + 1);
        let x3 = normal_matrix::<f64>((1, 2 * s * c), 1.0, seed + 2).into_shape_with_order((2, s, c)).unwrap();
        let x = vec_col(&x3);
        let tok = PkLayer::token_mixing(w_t.clone(), None, c, Activation::Identity).unwrap();
        let ch = PkLayer::channel_mixing(w_c.clone(), None, s, Activation::Identity).unwrap();
        // (I_C ⊗ W_t) vec X = vec(W_t X);  channel: vec(X W_cᵀ) = (W_c ⊗ I_S) vec X.
        let yt = tok.forward(x.view()).unwrap();
        let want_t = x.dot(&kron(&eye(c), &w_t).t());
        assert_close(yt.as_standard_layout().as_slice().unwrap(), want_t.as_standard_layout().as_slice().unwrap(), 1e-12, "token");
        let yc = ch.forward(x.view()).unwrap();
        let want_c = x.dot(&kron(&w_c, &eye(s)).t());
        assert_close(yc.as_standard_layout().as_slice().unwrap(), want_c.as_standard_layout().as_slice().unwrap(), 1e-12, "channel");
        // Also against the matrix products directly: vec(X W_cᵀ).
        for bi in 0..2 {
            let xw = x3.index_axis(monarch::ndarray::Axis(0), bi).dot(&w_c.t());
            for i in 0..s { for o in 0..co {
                prop_assert!((yc[[bi, o * s + i]] - xw[[i, o]]).abs() < 1e-12);
            }}
        }
        assert_close(tok.linear_dense().as_slice().unwrap(), kron(&eye(c), &w_t).as_slice().unwrap(), 1e-15, "token dense");
        // The PK pair is W_c ⊗ W_t, and a Monarch with tied blocks.
        let m = pk_pair_to_monarch(&w_t, &w_c).unwrap();
        let pair = PkLayer::channel_mixing(w_c.clone(), None, so, Activation::Identity).unwrap()
            .forward(yt.view()).unwrap();
        let via_m = m.matmul(x.view()).unwrap();
        assert_close(via_m.as_slice().unwrap(), pair.as_slice().unwrap(), 1e-12, "pair vs monarch");
        assert_close(m.to_dense().as_slice().unwrap(), kron(&w_c, &w_t).as_slice().unwrap(), 1e-12, "monarch dense");
        let (bt, bc) = monarch_to_pk_pair(&m, 0.0).unwrap();
        prop_assert_eq!(bt, w_t);
        prop_assert_eq!(bc, w_c);
    }
}

#[test]
fn commutation_permutation_direction() {
    // J_c gathers K[s·C + c] = c·S + s.
    let (s, c) = (3, 5);
    let ch = PkLayer::<f64>::channel_mixing(eye(c), None, s, Activation::Identity).unwrap();
    for si in 0..s {
        for ci in 0..c {
            assert_eq!(ch.j1.index()[si * c + ci], ci * s + si);
        }
    }
    assert_eq!(ch.j2, ch.j1.inverse());
    // An untied Monarch is not a PK pair.
    let m = Monarch::<f64>::random(16, 4, 1).unwrap();
    assert!(monarch_to_pk_pair(&m, 1e-9).is_err());
}

#[test]
fn rp_mixer_layer_forward_vjp() {
    let (a, ib, ob) = (4, 3, 5);
    let w = normal_matrix::<f64>((ob, ib), 1.0, 1);
    let bias = Array1::from_vec(vec![0.1, -0.2, 0.3, 0.0, 0.5]);
    for act in [Activation::Gelu, Activation::Relu, Activation::Identity] {
        let layer = PkLayer::random_perms(w.clone(), Some(bias.clone()), a, act, 42).unwrap();
        assert_eq!(
            layer.j1,
            PkLayer::random_perms(w.clone(), None, a, act, 42)
                .unwrap()
                .j1
        );
        let x = normal_matrix::<f64>((3, a * ib), 1.0, 2);
        // Dense reference: J₂ φ(K J₁ x + 1⊗b).
        let p1: Array2<f64> = layer.j1.to_dense();
        let p2: Array2<f64> = layer.j2.to_dense();
        let k = kron(&eye(a), &w);
        let bb = Array1::from_shape_fn(a * ob, |i| bias[i % ob]);
        let pre = x.dot(&p1.t()).dot(&k.t()) + &bb;
        let want = pre.mapv(|v| act.apply(v)).dot(&p2.t());
        let y = layer.forward(x.view()).unwrap();
        assert_close(
            y.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "rp forward",
        );
        let g = normal_matrix::<f64>((3, a * ob), 1.0, 3);
        let gr = layer.vjp(x.view(), g.view()).unwrap();
        let loss = |l: &PkLayer<f64>, x: &Array2<f64>| dot(&l.forward(x.view()).unwrap(), &g);
        check_grad(
            "x",
            &flat(&gr.x),
            |i, d| {
                let mut x2 = x.clone();
                bump(&mut x2, i, d);
                loss(&layer, &x2)
            },
            1e-6,
        );
        check_grad(
            "w",
            &flat(&gr.w),
            |i, d| {
                let mut l2 = layer.clone();
                bump(&mut l2.w, i, d);
                loss(&l2, &x)
            },
            1e-6,
        );
        check_grad(
            "b",
            &flat(gr.bias.as_ref().unwrap()),
            |i, d| {
                let mut l2 = layer.clone();
                bump(l2.bias.as_mut().unwrap(), i, d);
                loss(&l2, &x)
            },
            1e-6,
        );
    }
    // Bad input.
    assert!(PkLayer::new(
        Perm::identity(11),
        w.clone(),
        None,
        a,
        Activation::Gelu,
        Perm::identity(20)
    )
    .is_err());
    assert!(PkLayer::new(
        Perm::identity(12),
        w.clone(),
        Some(Array1::zeros(3)),
        a,
        Activation::Gelu,
        Perm::identity(20)
    )
    .is_err());
    assert!(PkLayer::new(
        Perm::identity(0),
        Array2::<f64>::zeros((0, 0)),
        None,
        0,
        Activation::Gelu,
        Perm::identity(0)
    )
    .is_err());
    let l = PkLayer::random_perms(w, None, a, Activation::Gelu, 1).unwrap();
    assert!(l.forward(Array2::zeros((2, 13)).view()).is_err());
    assert!(l
        .vjp(Array2::zeros((2, 12)).view(), Array2::zeros((2, 19)).view())
        .is_err());
}

#[test]
fn mlp_mixer_block_matches_matrix_form_and_vjp() {
    let (b, s, c, ds, dc) = (2, 4, 3, 6, 5);
    let mut blk = MlpMixerBlock::<f64>::random(s, c, ds, dc, 7).unwrap();
    blk.tok1.bias = Some(normal_matrix::<f64>((1, ds), 0.3, 1).row(0).to_owned());
    blk.ch2.bias = Some(normal_matrix::<f64>((1, c), 0.3, 2).row(0).to_owned());
    blk.ln2 = LayerNorm::from_params(
        Array1::from_vec(vec![1.2, 0.8, 1.0]),
        Array1::from_vec(vec![0.0, 0.1, -0.1]),
        1e-6,
    )
    .unwrap();
    let x = normal_matrix::<f64>((1, b * s * c), 1.0, 3)
        .into_shape_with_order((b, s, c))
        .unwrap();
    // Matrix form of MLP-Mixer: X₁ = X + W₂ᵗ GELU(W₁ᵗ LN(X) + b₁) + b₂ (token MLP acts on columns),
    // out = X₁ + GELU(LN(X₁) W₁ᶜᵀ + b₁) W₂ᶜᵀ + b₂.
    let gelu = |a: Array2<f64>| a.mapv(monarch::primitives::nn::gelu);
    let y = blk.forward(x.view()).unwrap();
    for bi in 0..b {
        let xb = x.index_axis(monarch::ndarray::Axis(0), bi).to_owned();
        let n1 = blk.ln1.forward(xb.view()).unwrap();
        let col = |v: &Array1<f64>| v.clone().insert_axis(monarch::ndarray::Axis(1));
        let t = blk.tok2.w.dot(&gelu(
            blk.tok1.w.dot(&n1) + &col(blk.tok1.bias.as_ref().unwrap()),
        )) + &col(blk.tok2.bias.as_ref().unwrap());
        let x1 = &xb + &t;
        let n2 = blk.ln2.forward(x1.view()).unwrap();
        let h = gelu(n2.dot(&blk.ch1.w.t()) + blk.ch1.bias.as_ref().unwrap());
        let want = &x1 + &(h.dot(&blk.ch2.w.t()) + blk.ch2.bias.as_ref().unwrap());
        let got = y.index_axis(monarch::ndarray::Axis(0), bi).to_owned();
        assert_close(
            got.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            "mixer block",
        );
    }
    let g = normal_matrix::<f64>((1, b * s * c), 1.0, 4)
        .into_shape_with_order((b, s, c))
        .unwrap();
    let gr = blk.vjp(x.view(), g.view()).unwrap();
    let loss = |k: &MlpMixerBlock<f64>, x: &Array3<f64>| dot(&k.forward(x.view()).unwrap(), &g);
    check_grad(
        "x",
        &flat(&gr.x),
        |i, d| {
            let mut x2 = x.clone();
            bump(&mut x2, i, d);
            loss(&blk, &x2)
        },
        1e-6,
    );
    check_grad(
        "tok1 w",
        &flat(&gr.tok1.w),
        |i, d| {
            let mut k = blk.clone();
            bump(&mut k.tok1.w, i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    check_grad(
        "tok2 b",
        &flat(gr.tok2.bias.as_ref().unwrap()),
        |i, d| {
            let mut k = blk.clone();
            bump(k.tok2.bias.as_mut().unwrap(), i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    check_grad(
        "ch1 w",
        &flat(&gr.ch1.w),
        |i, d| {
            let mut k = blk.clone();
            bump(&mut k.ch1.w, i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    check_grad(
        "ch2 w",
        &flat(&gr.ch2.w),
        |i, d| {
            let mut k = blk.clone();
            bump(&mut k.ch2.w, i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    check_grad(
        "ln1 w",
        &flat(&gr.ln1.weight),
        |i, d| {
            let mut k = blk.clone();
            bump(&mut k.ln1.weight, i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    check_grad(
        "ln2 b",
        &flat(&gr.ln2.bias),
        |i, d| {
            let mut k = blk.clone();
            bump(&mut k.ln2.bias, i, d);
            loss(&k, &x)
        },
        1e-6,
    );
    assert!(blk.forward(Array3::zeros((1, s, c + 1)).view()).is_err());
    assert!(MlpMixerBlock::<f64>::random(0, c, ds, dc, 0).is_err());
    // vec helpers round-trip and follow vec X[c·S + s] = X[s, c].
    let v = to_vec_colmajor(x.view());
    assert_eq!(v, vec_col(&x));
    assert_eq!(from_vec_colmajor(v, s, c), x);
}

#[test]
fn effective_width_rule() {
    assert_eq!(effective_width(16, 32), 512);
    assert_eq!(weight_budget(3, 4), 25);
    // Ω = 2·S² is exactly maximised at S = C with width Ω/2.
    assert_eq!(widest_for_budget(2 * 64 * 64).unwrap(), (64, 64, 4096));
    // Brute force over all (S, C) for a few budgets: the helper's width is the maximum, and
    // S = C (or as close as integers allow) attains it.
    for omega in [2usize, 5, 50, 99, 1000, 4097] {
        let (s, c, m) = widest_for_budget(omega).unwrap();
        assert!(s * s + c * c <= omega && m == s * c);
        let mut best = 0;
        for a in 1..=omega {
            for b in 1..=omega {
                if a * a + b * b <= omega {
                    best = best.max(a * b);
                }
            }
        }
        assert_eq!(m, best, "Ω = {omega}");
        assert!(s.abs_diff(c) <= 2, "Ω = {omega}: ({s}, {c})");
    }
    assert!(widest_for_budget(1).is_err());
}
