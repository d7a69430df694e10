//! Monarch Mixer layers: FFT and long convolution against naive loops, every VJP against
//! finite differences (f64), bad input → Error.

use crate::common;
use crate::mx;
use common::assert_close;
use monarch::mixer::fft::FftPlan;
use monarch::mixer::*;
use monarch::ndarray::{s, Array1, Array2, Array3};
use monarch::num_complex::Complex64;
use monarch::primitives::nn::{gelu, Activation, LayerNorm};
use monarch::primitives::random::normal_matrix;
use monarch::Monarch;
use mx::{bump, bump_param, check_grad, dot, fill_params, flat, set_param};
use proptest::prelude::*;

fn rand3(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    normal_matrix::<f64>((1, shape.0 * shape.1 * shape.2), 1.0, seed)
        .into_shape_with_order(shape)
        .unwrap()
}

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16),
    )
}

#[test]
fn fft_matches_naive_dft() {
    for n in [1usize, 2, 3, 5, 6, 8, 12, 16, 30, 49, 64] {
        let plan = FftPlan::<f64>::new(n).unwrap();
        let x: Vec<Complex64> = (0..n)
            .map(|i| Complex64::new((i as f64 * 0.37).sin(), (i as f64 * 1.3).cos()))
            .collect();
        let naive: Vec<Complex64> = (0..n)
            .map(|k| {
                (0..n)
                    .map(|j| {
                        let a = -2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
                        x[j] * Complex64::new(a.cos(), a.sin())
                    })
                    .sum()
            })
            .collect();
        let mut y = x.clone();
        plan.forward(&mut y);
        assert_close(&y, &naive, 1e-12, &format!("fft n={n}"));
        plan.inverse(&mut y);
        assert_close(&y, &x, 1e-12, &format!("ifft n={n}"));
    }
    assert!(FftPlan::<f64>::new(0).is_err());
}

/// The defining sums, written independently of the crate.
fn naive_conv(
    u: &Array3<f64>,
    kf: &Array2<f64>,
    kr: Option<&Array2<f64>>,
    d: &Array1<f64>,
) -> Array3<f64> {
    let (b, h, l) = u.dim();
    Array3::from_shape_fn((b, h, l), |(bi, c, t)| {
        let mut acc = d[c] * u[[bi, c, t]];
        for s in 0..l {
            if s <= t {
                acc += kf[[c, t - s]] * u[[bi, c, s]];
            } else if let Some(kr) = kr {
                acc += kr[[c, s - t - 1]] * u[[bi, c, s]];
            }
        }
        acc
    })
}

const METHODS: [ConvMethod; 3] = [ConvMethod::Direct, ConvMethod::Fft, ConvMethod::MonarchDft];

proptest! {
    #![proptest_config(cases())]
    #[test]
    fn long_conv_all_methods_match_naive(b in 1usize..3, h in 1usize..4, l in 1usize..40, bidir: bool, seed in 0u64..1000) {
        let kf = normal_matrix::<f64>((h, l), 1.0, seed);
        let kr = normal_matrix::<f64>((h, l), 1.0, seed + 1);
        let d = normal_matrix::<f64>((1, h), 1.0, seed + 2).row(0).to_owned();
        let u = rand3((b, h, l), seed + 3);
        let conv = LongConv::new(kf.clone(), bidir.then(|| kr.clone()), d.clone()).unwrap();
        let want = naive_conv(&u, &kf, bidir.then_some(&kr), &d);
        for m in METHODS {
            let y = conv.forward(u.view(), m).unwrap();
            assert_close(y.as_slice().unwrap(), want.as_slice().unwrap(), 1e-10, &format!("{m:?}"));
        }
    }
}

#[test]
fn long_conv_vjp_matches_finite_differences() {
    for (bidir, l) in [(true, 12), (false, 9), (true, 16)] {
        let (b, h) = (2, 3);
        let kf = normal_matrix::<f64>((h, l), 1.0, 1);
        let kr = normal_matrix::<f64>((h, l), 1.0, 2);
        let d = Array1::from_vec(vec![0.3, -0.7, 1.1]);
        let u = rand3((b, h, l), 3);
        let g = rand3((b, h, l), 4);
        let mk = |kf: &Array2<f64>, kr: &Array2<f64>, d: &Array1<f64>| {
            LongConv::new(kf.clone(), bidir.then(|| kr.clone()), d.clone()).unwrap()
        };
        let conv = mk(&kf, &kr, &d);
        let grads: Vec<LongConvGrad<f64>> = METHODS
            .iter()
            .map(|&m| conv.vjp(u.view(), g.view(), m).unwrap())
            .collect();
        for gr in &grads[1..] {
            assert_close(
                gr.u.as_slice().unwrap(),
                grads[0].u.as_slice().unwrap(),
                1e-10,
                "grad u methods",
            );
            assert_close(
                gr.k_fwd.as_slice().unwrap(),
                grads[0].k_fwd.as_slice().unwrap(),
                1e-10,
                "grad k_fwd methods",
            );
            if bidir {
                assert_close(
                    gr.k_rev.as_ref().unwrap().as_slice().unwrap(),
                    grads[0].k_rev.as_ref().unwrap().as_slice().unwrap(),
                    1e-10,
                    "grad k_rev methods",
                );
            }
        }
        let gr = &grads[2];
        let loss = |c: &LongConv<f64>, u: &Array3<f64>| {
            dot(&c.forward(u.view(), ConvMethod::Direct).unwrap(), &g)
        };
        check_grad(
            "u",
            &flat(&gr.u),
            |i, dl| {
                let mut u2 = u.clone();
                bump(&mut u2, i, dl);
                loss(&conv, &u2)
            },
            1e-7,
        );
        check_grad(
            "k_fwd",
            &flat(&gr.k_fwd),
            |i, dl| {
                let mut k = kf.clone();
                bump(&mut k, i, dl);
                loss(&mk(&k, &kr, &d), &u)
            },
            1e-7,
        );
        check_grad(
            "D",
            &flat(&gr.d),
            |i, dl| {
                let mut dd = d.clone();
                bump(&mut dd, i, dl);
                loss(&mk(&kf, &kr, &dd), &u)
            },
            1e-7,
        );
        if bidir {
            check_grad(
                "k_rev",
                &flat(gr.k_rev.as_ref().unwrap()),
                |i, dl| {
                    let mut k = kr.clone();
                    bump(&mut k, i, dl);
                    loss(&mk(&kf, &k, &d), &u)
                },
                1e-7,
            );
        } else {
            assert!(gr.k_rev.is_none());
        }
    }
}

#[test]
fn long_conv_rejects_bad_input() {
    let k = Array2::<f64>::ones((2, 8));
    assert!(LongConv::causal(k.clone(), Array1::ones(3)).is_err());
    assert!(LongConv::bidirectional(k.clone(), Array2::ones((2, 7)), Array1::ones(2)).is_err());
    assert!(LongConv::causal(Array2::<f64>::zeros((2, 0)), Array1::ones(2)).is_err());
    let mut bad = k.clone();
    bad[[0, 0]] = f64::NAN;
    assert!(LongConv::causal(bad, Array1::ones(2)).is_err());
    let c = LongConv::causal(k, Array1::ones(2)).unwrap();
    for m in METHODS {
        // Kernel length 8 but sequence length 9, wrong channel count; an empty batch is an
        // empty result.
        assert!(c.forward(Array3::zeros((1, 2, 9)).view(), m).is_err());
        assert!(c.forward(Array3::zeros((1, 3, 8)).view(), m).is_err());
        let empty = c.forward(Array3::zeros((0, 2, 8)).view(), m).unwrap();
        assert_eq!(empty.dim(), (0, 2, 8));
        assert!(c
            .vjp(
                Array3::zeros((1, 2, 8)).view(),
                Array3::zeros((1, 2, 7)).view(),
                m
            )
            .is_err());
        // A plan for another length is refused; a matching one gives the same result.
        let wrong = ConvPlan::<f64>::new(m, 7).unwrap();
        assert!(c
            .forward_with(Array3::zeros((1, 2, 8)).view(), &wrong)
            .is_err());
        assert!(ConvPlan::<f64>::new(m, 0).is_err());
        let u = Array3::from_shape_fn((1, 2, 8), |(_, h, t)| (h * 8 + t) as f64);
        let plan = ConvPlan::new(m, 8).unwrap();
        assert_eq!(
            c.forward_with(u.view(), &plan).unwrap(),
            c.forward(u.view(), m).unwrap()
        );
    }
}

#[test]
fn gelu_and_layernorm_reference_values() {
    // Φ values from tables: GELU(x) = x·Φ(x).
    for (x, phi) in [
        (0.5f64, 0.6914624612740131),
        (-1.5, 0.0668072012688581),
        (2.0, 0.9772498680518208),
    ] {
        assert!((gelu(x) - x * phi).abs() < 1e-15, "gelu({x})");
    }
    let ln = LayerNorm::<f64>::new(3, 1e-12).unwrap();
    let x = Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 6.0]).unwrap();
    let y = ln.forward(x.view()).unwrap();
    let (m, v) = (3.0, (4.0 + 1.0 + 9.0) / 3.0f64);
    for j in 0..3 {
        assert!((y[[0, j]] - (x[[0, j]] - m) / v.sqrt()).abs() < 1e-12);
    }
}

#[test]
fn layernorm_and_activations_vjp() {
    let ln = LayerNorm::from_params(
        Array1::from_vec(vec![1.1, 0.9, -0.5, 2.0]),
        Array1::from_vec(vec![0.1, 0.0, -0.2, 0.3]),
        1e-5,
    )
    .unwrap();
    let x = normal_matrix::<f64>((3, 4), 1.0, 5);
    let g = normal_matrix::<f64>((3, 4), 1.0, 6);
    let gr = ln.vjp(x.view(), g.view()).unwrap();
    check_grad(
        "ln x",
        &flat(&gr.x),
        |i, d| {
            let mut x2 = x.clone();
            bump(&mut x2, i, d);
            dot(&ln.forward(x2.view()).unwrap(), &g)
        },
        1e-7,
    );
    check_grad(
        "ln w",
        &flat(&gr.weight),
        |i, d| {
            let mut l2 = ln.clone();
            bump(&mut l2.weight, i, d);
            dot(&l2.forward(x.view()).unwrap(), &g)
        },
        1e-7,
    );
    check_grad(
        "ln b",
        &flat(&gr.bias),
        |i, d| {
            let mut l2 = ln.clone();
            bump(&mut l2.bias, i, d);
            dot(&l2.forward(x.view()).unwrap(), &g)
        },
        1e-7,
    );
    for act in [Activation::Gelu, Activation::Relu, Activation::Identity] {
        for x in [-2.3, -0.4, 0.7, 3.1f64] {
            let fd = (act.apply(x + 1e-6) - act.apply(x - 1e-6)) / 2e-6;
            assert!((fd - act.grad(x)).abs() < 1e-7, "{act:?}'({x})");
        }
    }
}

#[test]
fn implicit_filter_matches_formula_and_vjp() {
    let (h, lmax, order, emb) = (3, 10, 4, 5);
    let f = ImplicitFilter::<f64>::random(h, lmax, order, emb, true, 9).unwrap();
    // Positional features from the authors' formula, independently.
    for i in 0..lmax {
        let w = 2.0 * std::f64::consts::PI * i as f64 / lmax as f64;
        assert!((f.z()[[i, 0]] - i as f64 / (lmax - 1) as f64).abs() < 1e-15);
        for (j, fr) in [1e-4, 1.0].iter().enumerate() {
            assert!((f.z()[[i, 1 + j]] - (fr * w).cos()).abs() < 1e-15);
            assert!((f.z()[[i, 3 + j]] + (fr * w).sin()).abs() < 1e-15);
        }
    }
    // Kernels by a plain loop: MLP with sin(freq·x), then × exp(−t|δ|).
    let l = 7;
    let (kf, kr) = f.kernels(l).unwrap();
    for (mlp, k) in [
        (f.mlp_fwd(), &kf),
        (f.mlp_rev().unwrap(), kr.as_ref().unwrap()),
    ] {
        for t in 0..l {
            let mut x: Vec<f64> = f.z().row(t).to_vec();
            for (li, layer) in mlp.layers().iter().enumerate() {
                let mut y: Vec<f64> = (0..layer.weight.nrows())
                    .map(|o| {
                        (0..x.len())
                            .map(|i| layer.weight[[o, i]] * x[i])
                            .sum::<f64>()
                            + layer.bias.as_ref().map_or(0.0, |b| b[o])
                    })
                    .collect();
                if li + 1 < mlp.layers().len() {
                    for (o, v) in y.iter_mut().enumerate() {
                        *v = (f.freq()[o] * *v).sin();
                    }
                }
                x = y;
            }
            for c in 0..h {
                let want = x[c] * (-f.t()[t] * f.deltas()[c].abs()).exp();
                assert!((k[[c, t]] - want).abs() < 1e-13);
            }
        }
    }
    assert!(f.kernels(lmax + 1).is_err());
    // A time buffer shorter than l_max is refused when the filter is built.
    assert!(ImplicitFilter::new(
        f.z().clone(),
        Array1::zeros(lmax - 1),
        f.mlp_fwd().clone(),
        f.mlp_rev().cloned(),
        f.freq().clone(),
        f.w_mod(),
        f.deltas().clone(),
        f.shift(),
        f.bias().clone(),
    )
    .is_err());
    assert!(ImplicitFilter::<f64>::random(3, 8, 4, 4, true, 0).is_err()); // even emb_dim
                                                                          // VJP (sines slowed down so central differences stay accurate; freq = 10 is checked above).
    let mut f = f;
    set_param(
        &mut f,
        "implicit_filter.1.freq",
        &Array1::from_vec(vec![1.5, -0.8, 2.0, 1.1]),
    );
    let gf = normal_matrix::<f64>((h, l), 1.0, 1);
    let grv = normal_matrix::<f64>((h, l), 1.0, 2);
    let loss = |f: &ImplicitFilter<f64>| {
        let (a, b) = f.kernels(l).unwrap();
        dot(&a, &gf) + dot(&b.unwrap(), &grv)
    };
    let gr = f.vjp(l, gf.view(), Some(grv.view())).unwrap();
    check_grad(
        "freq",
        &flat(&gr.freq),
        |i, d| {
            let mut f2 = f.clone();
            bump_param(&mut f2, "implicit_filter.1.freq", i, d);
            loss(&f2)
        },
        1e-6,
    );
    check_grad(
        "z",
        &flat(&gr.z),
        |i, d| {
            let mut f2 = f.clone();
            bump_param(&mut f2, "pos_emb.z", i, d);
            loss(&f2)
        },
        1e-6,
    );
    for li in 0..4 {
        check_grad(
            "fwd W",
            &flat(&gr.mlp_fwd[li].weight),
            |i, d| {
                let mut f2 = f.clone();
                bump_param(&mut f2, &format!("implicit_filter.{}.weight", 2 * li), i, d);
                loss(&f2)
            },
            1e-6,
        );
        check_grad(
            "rev W",
            &flat(&gr.mlp_rev.as_ref().unwrap()[li].weight),
            |i, d| {
                let mut f2 = f.clone();
                bump_param(
                    &mut f2,
                    &format!("implicit_filter_rev.{}.weight", 2 * li),
                    i,
                    d,
                );
                loss(&f2)
            },
            1e-6,
        );
        if li < 3 {
            check_grad(
                "fwd b",
                &flat(gr.mlp_fwd[li].bias.as_ref().unwrap()),
                |i, d| {
                    let mut f2 = f.clone();
                    bump_param(&mut f2, &format!("implicit_filter.{}.bias", 2 * li), i, d);
                    loss(&f2)
                },
                1e-6,
            );
        }
    }
}

#[test]
fn gated_mlp_vjp_and_bad_input() {
    let mlp = GatedMlp::<f64>::random(8, 12, 4, 3).unwrap();
    let mut mlp = mlp;
    set_param(
        &mut mlp,
        "layernorm.weight",
        &Array1::from_shape_fn(8, |i| 1.0 + 0.1 * i as f64),
    );
    set_param(
        &mut mlp,
        "layernorm.bias",
        &Array1::from_shape_fn(8, |i| 0.05 * i as f64),
    );
    let x = normal_matrix::<f64>((5, 8), 1.0, 1);
    let g = normal_matrix::<f64>((5, 8), 1.0, 2);
    let gr = mlp.vjp(x.view(), g.view()).unwrap();
    let loss = |m: &GatedMlp<f64>, x: &Array2<f64>| dot(&m.forward(x.view()).unwrap(), &g);
    check_grad(
        "x",
        &flat(&gr.x),
        |i, d| {
            let mut x2 = x.clone();
            bump(&mut x2, i, d);
            loss(&mlp, &x2)
        },
        1e-6,
    );
    check_grad(
        "gated",
        &flat(&gr.gated),
        |i, d| {
            let mut w = mlp.gated().weights().to_owned();
            bump(&mut w, i, d);
            let m = GatedMlp::new(
                w,
                mlp.wo().weights().to_owned(),
                mlp.wo_bias().clone(),
                mlp.ln().clone(),
            )
            .unwrap();
            loss(&m, &x)
        },
        1e-6,
    );
    check_grad(
        "wo",
        &flat(&gr.wo),
        |i, d| {
            let mut w = mlp.wo().weights().to_owned();
            bump(&mut w, i, d);
            let m = GatedMlp::new(
                mlp.gated().weights().to_owned(),
                w,
                mlp.wo_bias().clone(),
                mlp.ln().clone(),
            )
            .unwrap();
            loss(&m, &x)
        },
        1e-6,
    );
    check_grad(
        "wo_bias",
        &flat(&gr.wo_bias),
        |i, d| {
            let mut m = mlp.clone();
            bump_param(&mut m, "wo.bias", i, d);
            loss(&m, &x)
        },
        1e-6,
    );
    check_grad(
        "ln w",
        &flat(&gr.ln.weight),
        |i, d| {
            let mut m = mlp.clone();
            bump_param(&mut m, "layernorm.weight", i, d);
            loss(&m, &x)
        },
        1e-6,
    );
    assert!(mlp.forward(Array2::zeros((2, 7)).view()).is_err());
    assert!(GatedMlp::<f64>::random(8, 12, 5, 0).is_err()); // 5 does not divide 8
    assert!(GatedMlp::new(
        Array3::<f64>::zeros((4, 6, 2)),
        Array3::zeros((4, 2, 4)),
        Array1::zeros(8),
        LayerNorm::new(8, 1e-12).unwrap()
    )
    .is_err());
}

/// The M2-BERT sequence mixer written as plain loops over the six steps of the module docs.
fn naive_seq_mixer(m: &M2SequenceMixer<f64>, u: &Array3<f64>) -> Array3<f64> {
    let (b, l, h) = u.dim();
    let lin = |w: &Array2<f64>, bias: &Array1<f64>, x: &[f64]| -> Vec<f64> {
        (0..w.nrows())
            .map(|o| bias[o] + (0..x.len()).map(|i| w[[o, i]] * x[i]).sum::<f64>())
            .collect()
    };
    let conv_of = |f: &ImplicitFilter<f64>, x: &Array3<f64>| {
        let (kf, kr) = f.kernels(l).unwrap();
        naive_conv(x, &kf, kr.as_ref(), f.bias())
    };
    let mut p = Array3::zeros((b, l, 3 * h));
    for bi in 0..b {
        for t in 0..l {
            let row = lin(
                &m.in_linear().weight,
                m.in_linear().bias.as_ref().unwrap(),
                u.slice(s![bi, t, ..]).as_slice().unwrap(),
            );
            for c in 0..3 * h {
                p[[bi, t, c]] = row[c];
            }
        }
    }
    let w = m.short_conv_weight();
    let uc = Array3::from_shape_fn((b, l, 3 * h), |(bi, t, c)| {
        let at = |tt: isize| if tt < 0 { 0.0 } else { p[[bi, tt as usize, c]] };
        m.short_conv_bias()[c]
            + w[[c, 0]] * at(t as isize - 2)
            + w[[c, 1]] * at(t as isize - 1)
            + w[[c, 2]] * at(t as isize)
    });
    let v = Array3::from_shape_fn((b, h, l), |(bi, c, t)| {
        uc[[bi, t, 2 * h + c]] * uc[[bi, t, c]]
    });
    let y = conv_of(m.filter(), &v);
    let ut = Array3::from_shape_fn((b, h, l), |(bi, c, t)| u[[bi, t, c]]);
    let y2 = m.filter2().map(|f2| conv_of(f2, &ut));
    let mut out = Array3::zeros((b, l, h));
    for bi in 0..b {
        for t in 0..l {
            let yy: Vec<f64> = (0..h)
                .map(|c| {
                    y[[bi, c, t]] * uc[[bi, t, h + c]]
                        + y2.as_ref().map_or(0.0, |y2| y2[[bi, c, t]])
                })
                .collect();
            let o = lin(
                &m.out_linear().weight,
                m.out_linear().bias.as_ref().unwrap(),
                &yy,
            );
            for c in 0..h {
                out[[bi, t, c]] = o[c];
            }
        }
    }
    out
}

#[test]
fn m2_sequence_mixer_forward_and_vjp() {
    let (b, l, h) = (2, 6, 4);
    for residual in [false, true] {
        let mut m = M2SequenceMixer::<f64>::random(h, 8, residual, 21).unwrap();
        // Keep the sines in a tame range so finite differences stay accurate.
        fill_params(&mut m, "filter_fn.implicit_filter.1.freq", 1.3);
        if residual {
            fill_params(&mut m, "filter_fn2.implicit_filter.1.freq", 0.7);
        }
        let u = rand3((b, l, h), 1);
        let want = naive_seq_mixer(&m, &u);
        for method in METHODS {
            m.set_method(method);
            let y = m.forward(u.view()).unwrap();
            assert_close(
                y.as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-10,
                &format!("mixer {method:?}"),
            );
        }
        let g = rand3((b, l, h), 2);
        let gr = m.vjp(u.view(), g.view()).unwrap();
        let loss =
            |m: &M2SequenceMixer<f64>, u: &Array3<f64>| dot(&m.forward(u.view()).unwrap(), &g);
        check_grad(
            "u",
            &flat(&gr.u),
            |i, d| {
                let mut u2 = u.clone();
                bump(&mut u2, i, d);
                loss(&m, &u2)
            },
            1e-6,
        );
        check_grad(
            "in W",
            &flat(&gr.in_linear.weight),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "in_linear.weight", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "out b",
            &flat(gr.out_linear.bias.as_ref().unwrap()),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "out_linear.bias", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "short w",
            &flat(&gr.short_conv_weight),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "short_filter.weight", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "short b",
            &flat(&gr.short_conv_bias),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "short_filter.bias", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "D",
            &flat(&gr.filter_bias),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "filter_fn.bias", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "freq",
            &flat(&gr.filter.freq),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "filter_fn.implicit_filter.1.freq", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        check_grad(
            "rev W0",
            &flat(&gr.filter.mlp_rev.as_ref().unwrap()[0].weight),
            |i, d| {
                let mut m2 = m.clone();
                bump_param(&mut m2, "filter_fn.implicit_filter_rev.0.weight", i, d);
                loss(&m2, &u)
            },
            1e-6,
        );
        if residual {
            check_grad(
                "D2",
                gr.filter2_bias.as_ref().unwrap().as_slice().unwrap(),
                |i, d| {
                    let mut m2 = m.clone();
                    bump_param(&mut m2, "filter_fn2.bias", i, d);
                    loss(&m2, &u)
                },
                1e-6,
            );
            check_grad(
                "filter2 W3",
                &flat(&gr.filter2.as_ref().unwrap().mlp_fwd[3].weight),
                |i, d| {
                    let mut m2 = m.clone();
                    bump_param(&mut m2, "filter_fn2.implicit_filter.6.weight", i, d);
                    loss(&m2, &u)
                },
                1e-6,
            );
        }
        assert!(m.forward(Array3::zeros((1, 9, h)).view()).is_err()); // L > l_max
        assert!(m.forward(Array3::zeros((1, 4, h + 1)).view()).is_err());
    }
}

#[test]
fn m2_bert_encoder_vjp() {
    let (b, l, h) = (1, 5, 4);
    let mut enc = M2BertEncoder::<f64>::random(2, h, 8, 8, 2, 4).unwrap();
    fill_params(&mut enc, "attention.filter_fn.implicit_filter.1.freq", 1.1);
    enc.set_method(ConvMethod::Fft);
    let u = rand3((b, l, h), 7);
    let g = rand3((b, l, h), 8);
    // The stack is the layers in sequence, each the mixer then the MLP.
    let mut x = u.clone();
    for layer in enc.layers() {
        let a = layer.mixer().forward(x.view()).unwrap();
        x = layer
            .mlp()
            .forward(a.into_shape_with_order((b * l, h)).unwrap().view())
            .unwrap()
            .into_shape_with_order((b, l, h))
            .unwrap();
    }
    let y = enc.forward(u.view()).unwrap();
    assert_close(y.as_slice().unwrap(), x.as_slice().unwrap(), 1e-13, "stack");
    let gr = enc.vjp(u.view(), g.view()).unwrap();
    let loss = |e: &M2BertEncoder<f64>, u: &Array3<f64>| dot(&e.forward(u.view()).unwrap(), &g);
    check_grad(
        "u",
        &flat(&gr.u),
        |i, d| {
            let mut u2 = u.clone();
            bump(&mut u2, i, d);
            loss(&enc, &u2)
        },
        1e-6,
    );
    check_grad(
        "layer0 in W",
        &flat(&gr.layers[0].mixer.in_linear.weight),
        |i, d| {
            let mut e = enc.clone();
            bump_param(&mut e, "layer.0.attention.in_linear.weight", i, d);
            loss(&e, &u)
        },
        1e-6,
    );
    check_grad(
        "layer0 ln w",
        &flat(&gr.layers[0].mlp.ln.weight),
        |i, d| {
            let mut e = enc.clone();
            bump_param(&mut e, "layer.0.mlp.layernorm.weight", i, d);
            loss(&e, &u)
        },
        1e-6,
    );
    check_grad(
        "layer1 D",
        &flat(&gr.layers[1].mixer.filter_bias),
        |i, d| {
            let mut e = enc.clone();
            bump_param(&mut e, "layer.1.attention.filter_fn.bias", i, d);
            loss(&e, &u)
        },
        1e-6,
    );
}

/// The paper layer with dense matrices and loops.
fn naive_paper(layer: &M2Layer<f64>, x: &Array3<f64>) -> Array3<f64> {
    let (b, n, d) = x.dim();
    let mut out = Array3::zeros((b, n, d));
    for bi in 0..b {
        let xb = x.slice(s![bi, .., ..]).to_owned();
        let xt = match layer.seq() {
            SequenceMixing::Monarch { m1, k1, m2 } => {
                let s1 = m1.to_dense().dot(&xb) * k1;
                m2.to_dense().dot(&s1)
            }
            SequenceMixing::Conv(c) => {
                let u = xb.t().to_owned().insert_axis(monarch::ndarray::Axis(0));
                let y = naive_conv(&u, c.k_fwd(), c.k_rev(), c.d());
                y.index_axis(monarch::ndarray::Axis(0), 0).t().to_owned()
            }
        };
        let a = layer.m3().to_dense().dot(&xt.t()) * layer.k2();
        let hdn = a.mapv(|v| layer.act().apply(v));
        let y = layer.m4().to_dense().dot(&hdn).t().to_owned() + &xt;
        out.slice_mut(s![bi, .., ..])
            .assign(&layer.ln().forward(y.view()).unwrap());
    }
    out
}

#[test]
fn paper_m2_layer_forward_and_vjp() {
    let (b, n, d) = (2, 8, 6);
    let base = M2Layer::<f64>::random_monarch(n, d, 2, 3).unwrap();
    let SequenceMixing::Monarch { m1, m2, .. } = base.seq().clone() else {
        unreachable!()
    };
    // Rectangular Monarchs along the width: d = 6 → d' = 12 → 6.
    let learned = M2Layer::new(
        SequenceMixing::Monarch {
            m1,
            k1: normal_matrix((n, d), 1.0, 4),
            m2,
        },
        Monarch::random_factors((2, 6, 3), (2, 6, 6), 6).unwrap(),
        normal_matrix((12, n), 1.0, 5),
        Monarch::random_factors((2, 3, 6), (3, 2, 2), 7).unwrap(),
        base.act(),
        base.ln().clone(),
    )
    .unwrap();
    let conv = LongConv::causal(normal_matrix((d, n), 0.5, 8), Array1::from_elem(d, 0.2)).unwrap();
    let mut causal = M2Layer::random_conv(conv, d, 3, 9).unwrap();
    set_param(&mut causal, "k2", &normal_matrix((d, n), 1.0, 10));
    let bconv = LongConv::bidirectional(
        normal_matrix((d, n), 0.5, 11),
        normal_matrix((d, n), 0.5, 12),
        Array1::from_elem(d, -0.1),
    )
    .unwrap();
    let bidir = M2Layer::random_conv(bconv, d, 2, 13).unwrap();
    let x = rand3((b, n, d), 14);
    let g = rand3((b, n, d), 15);
    for layer in [&learned, &causal, &bidir] {
        let y = layer.forward(x.view()).unwrap();
        assert_close(
            y.as_slice().unwrap(),
            naive_paper(layer, &x).as_slice().unwrap(),
            1e-10,
            "paper layer",
        );
        let gr = layer.vjp(x.view(), g.view()).unwrap();
        let loss = |l: &M2Layer<f64>, x: &Array3<f64>| dot(&l.forward(x.view()).unwrap(), &g);
        check_grad(
            "x",
            &flat(&gr.x),
            |i, dd| {
                let mut x2 = x.clone();
                bump(&mut x2, i, dd);
                loss(layer, &x2)
            },
            1e-6,
        );
        check_grad(
            "k2",
            &flat(&gr.k2),
            |i, dd| {
                let mut l2 = layer.clone();
                bump_param(&mut l2, "k2", i, dd);
                loss(&l2, &x)
            },
            1e-6,
        );
        check_grad(
            "m3 w1",
            &flat(&gr.m3.w1),
            |i, dd| {
                let mut l2 = layer.clone();
                bump_param(&mut l2, "m3.w1", i, dd);
                loss(&l2, &x)
            },
            1e-6,
        );
        check_grad(
            "m4 w2",
            &flat(&gr.m4.w2),
            |i, dd| {
                let mut l2 = layer.clone();
                bump_param(&mut l2, "m4.w2", i, dd);
                loss(&l2, &x)
            },
            1e-6,
        );
        check_grad(
            "ln b",
            &flat(&gr.ln.bias),
            |i, dd| {
                let mut l2 = layer.clone();
                bump_param(&mut l2, "ln.bias", i, dd);
                loss(&l2, &x)
            },
            1e-6,
        );
        match (layer.seq(), &gr.seq) {
            (SequenceMixing::Monarch { .. }, SequenceMixingGrad::Monarch { m1, k1, m2 }) => {
                check_grad(
                    "k1",
                    &flat(k1),
                    |i, dd| {
                        let mut l2 = layer.clone();
                        bump_param(&mut l2, "seq.k1", i, dd);
                        loss(&l2, &x)
                    },
                    1e-6,
                );
                check_grad(
                    "m1 w1",
                    &flat(&m1.w1),
                    |i, dd| {
                        let mut l2 = layer.clone();
                        bump_param(&mut l2, "seq.m1.w1", i, dd);
                        loss(&l2, &x)
                    },
                    1e-6,
                );
                check_grad(
                    "m2 w2",
                    &flat(&m2.w2),
                    |i, dd| {
                        let mut l2 = layer.clone();
                        bump_param(&mut l2, "seq.m2.w2", i, dd);
                        loss(&l2, &x)
                    },
                    1e-6,
                );
            }
            (SequenceMixing::Conv(_), SequenceMixingGrad::Conv(cg)) => {
                check_grad(
                    "k_fwd",
                    &flat(&cg.k_fwd),
                    |i, dd| {
                        let mut l2 = layer.clone();
                        bump_param(&mut l2, "seq.k_fwd", i, dd);
                        loss(&l2, &x)
                    },
                    1e-6,
                );
            }
            _ => panic!("gradient variant differs from the layer's"),
        }
    }
    assert!(learned
        .forward(Array3::zeros((1, n, d + 1)).view())
        .is_err());
    assert!(causal.forward(Array3::zeros((1, n + 1, d)).view()).is_err());
    assert!(M2Layer::<f64>::random_monarch(10, 6, 4, 0).is_err()); // 4 does not divide 10
}
