//! The M2-BERT sequence mixer, implicit filter, gated MLP and layer in burn against the core
//! crate: forward, and every gradient from burn's autodiff (input and all parameters) against
//! the core's hand-written VJPs; with and without the residual long convolution, `L = l_max`
//! and `L < l_max`; and the core's errors for bad input.

use crate::common::{assert_close, device, random};
use burn::module::Module;
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Gradients, Tensor};
use monarch::mixer::nn::LinearGrad;
use monarch::mixer::ImplicitFilterGrad;
use monarch::ndarray::{Array1, Array3};
use monarch_burn::convert::tensor_from_array;
use monarch_burn::mixer::{long_conv, GatedMlp, ImplicitFilter, M2BertLayer, M2SequenceMixer};

const H: usize = 8;
const L_MAX: usize = 16;
const BATCH: usize = 2;

/// `(y · g).sum()` backward, with `y` and the gradients.
fn backward(y: Tensor<3>, g: &Array3<f32>) -> Gradients {
    let gt = tensor_from_array::<3, _>(g.view(), &y.device());
    (y * gt).sum().backward()
}

/// A burn `Linear`'s gradients (weight stored `(in, out)`) against the core's (`(out, in)`).
#[track_caller]
fn check_linear(l: &Linear, want: &LinearGrad<f32>, grads: &Gradients, what: &str) {
    assert_close(
        l.weight.val().grad(grads).unwrap(),
        &want.weight.t().to_owned(),
        &format!("{what} weight"),
    );
    match (&l.bias, &want.bias) {
        (Some(b), Some(wb)) => {
            assert_close(b.val().grad(grads).unwrap(), wb, &format!("{what} bias"))
        }
        (None, None) => {}
        _ => panic!("{what}: bias presence differs"),
    }
}

/// Every gradient of an implicit filter: both MLPs, the shared `freq`, `z` and `D`.
#[track_caller]
fn check_filter(
    f: &ImplicitFilter,
    want: &ImplicitFilterGrad<f32>,
    want_d: &Array1<f32>,
    grads: &Gradients,
    what: &str,
) {
    for (i, (l, w)) in f.mlp_fwd.layers.iter().zip(&want.mlp_fwd).enumerate() {
        check_linear(l, w, grads, &format!("{what} mlp_fwd.{i}"));
    }
    match (&f.mlp_rev, &want.mlp_rev) {
        (Some(m), Some(wm)) => {
            for (i, (l, w)) in m.layers.iter().zip(wm).enumerate() {
                check_linear(l, w, grads, &format!("{what} mlp_rev.{i}"));
            }
        }
        (None, None) => {}
        _ => panic!("{what}: reverse MLP presence differs"),
    }
    assert_close(
        f.freq.val().grad(grads).unwrap(),
        &want.freq,
        &format!("{what} freq"),
    );
    assert_close(
        f.z.val().grad(grads).unwrap(),
        &want.z,
        &format!("{what} z"),
    );
    assert_close(
        f.bias.val().grad(grads).unwrap(),
        want_d,
        &format!("{what} bias (D)"),
    );
}

fn check_mixer(residual: bool, l: usize, seed: u64) {
    let device = device();
    let core = monarch::mixer::M2SequenceMixer::<f32>::random(H, L_MAX, residual, seed).unwrap();
    let mixer = M2SequenceMixer::from_core(&core, &device);
    let u = random((BATCH, l, H), seed + 10);
    let g = random((BATCH, l, H), seed + 11);
    let want_y = core.forward(u.view()).unwrap();
    let want = core.vjp(u.view(), g.view()).unwrap();
    let what = format!("M2SequenceMixer(residual={residual}, L={l})");

    let ut = tensor_from_array::<3, _>(u.view(), &device).require_grad();
    let y = mixer.forward(ut.clone());
    assert_close(y.clone(), &want_y, &format!("{what} forward"));
    let grads = backward(y, &g);
    assert_close(ut.grad(&grads).unwrap(), &want.u, &format!("{what} grad u"));
    check_linear(
        &mixer.in_linear,
        &want.in_linear,
        &grads,
        &format!("{what} in_linear"),
    );
    assert_close(
        mixer.short_conv_weight.val().grad(&grads).unwrap(),
        &want.short_conv_weight,
        &format!("{what} short conv weight"),
    );
    assert_close(
        mixer.short_conv_bias.val().grad(&grads).unwrap(),
        &want.short_conv_bias,
        &format!("{what} short conv bias"),
    );
    check_filter(
        &mixer.filter,
        &want.filter,
        &want.filter_bias,
        &grads,
        &format!("{what} filter"),
    );
    match (&mixer.filter2, &want.filter2, &want.filter2_bias) {
        (Some(f2), Some(w2), Some(d2)) => {
            check_filter(f2, w2, d2, &grads, &format!("{what} filter2"))
        }
        (None, None, None) => {}
        _ => panic!("{what}: filter2 presence differs"),
    }
    check_linear(
        &mixer.out_linear,
        &want.out_linear,
        &grads,
        &format!("{what} out_linear"),
    );
    assert_eq!(mixer.to_core().unwrap(), core);
}

#[test]
fn mixer_without_residual_long_conv() {
    check_mixer(false, L_MAX, 1);
}

#[test]
fn mixer_with_residual_long_conv() {
    check_mixer(true, L_MAX, 2);
}

#[test]
fn mixer_shorter_than_l_max() {
    check_mixer(true, 11, 3);
    check_mixer(false, 5, 4);
}

#[test]
fn filter_kernels_match_core() {
    let device = device();
    for (bidir, l) in [(true, L_MAX), (true, 9), (false, 12)] {
        let core =
            monarch::mixer::ImplicitFilter::<f32>::random(H, L_MAX, 16, 5, bidir, 5).unwrap();
        let f = ImplicitFilter::from_core(&core, &device);
        let (kf, kr) = core.kernels(l).unwrap();
        let gf = random((H, l), 20);
        let gr = random((H, l), 21);
        let want = core
            .vjp(l, gf.view(), kr.as_ref().map(|_| gr.view()))
            .unwrap();
        let what = format!("ImplicitFilter(bidirectional={bidir}, L={l})");
        let (tf, tr) = f.kernels(l).unwrap();
        assert_close(tf.clone(), &kf, &format!("{what} k_fwd"));
        let mut loss = (tf * tensor_from_array::<2, _>(gf.view(), &device)).sum();
        match (tr, &kr) {
            (Some(tr), Some(kr)) => {
                assert_close(tr.clone(), kr, &format!("{what} k_rev"));
                loss = loss + (tr * tensor_from_array::<2, _>(gr.view(), &device)).sum();
            }
            (None, None) => {}
            _ => panic!("{what}: k_rev presence differs"),
        }
        let grads = loss.backward();
        for (i, (l, w)) in f.mlp_fwd.layers.iter().zip(&want.mlp_fwd).enumerate() {
            check_linear(l, w, &grads, &format!("{what} mlp_fwd.{i}"));
        }
        if let (Some(m), Some(wm)) = (&f.mlp_rev, &want.mlp_rev) {
            for (i, (l, w)) in m.layers.iter().zip(wm).enumerate() {
                check_linear(l, w, &grads, &format!("{what} mlp_rev.{i}"));
            }
        }
        assert_close(
            f.freq.val().grad(&grads).unwrap(),
            &want.freq,
            &format!("{what} freq"),
        );
        assert_close(
            f.z.val().grad(&grads).unwrap(),
            &want.z,
            &format!("{what} z"),
        );
        assert_eq!(f.to_core().unwrap(), core);
    }
}

#[test]
fn long_conv_matches_core() {
    let device = device();
    for (bidir, l) in [(true, 16), (false, 16), (true, 7)] {
        let kf = random((H, l), 30);
        let kr = random((H, l), 31);
        let d = random(H, 32);
        let core = monarch::mixer::LongConv::new(kf.clone(), bidir.then(|| kr.clone()), d.clone())
            .unwrap();
        // The core is (batch, H, L); the burn function (batch, L, H) like the mixer.
        let u = random((BATCH, H, l), 33);
        let g = random((BATCH, H, l), 34);
        let method = monarch::mixer::ConvMethod::Direct;
        let want_y = core.forward(u.view(), method).unwrap();
        let want = core.vjp(u.view(), g.view(), method).unwrap();
        let what = format!("long_conv(bidirectional={bidir}, L={l})");
        let ut = tensor_from_array::<3, _>(u.view(), &device).require_grad();
        let kft = tensor_from_array::<2, _>(kf.view(), &device).require_grad();
        let krt = tensor_from_array::<2, _>(kr.view(), &device).require_grad();
        let dt = tensor_from_array::<1, _>(d.view(), &device).require_grad();
        let y = long_conv(
            ut.clone().swap_dims(1, 2),
            kft.clone(),
            bidir.then(|| krt.clone()),
            dt.clone(),
        )
        .unwrap()
        .swap_dims(1, 2);
        assert_close(y.clone(), &want_y, &format!("{what} forward"));
        let grads = backward(y, &g);
        assert_close(ut.grad(&grads).unwrap(), &want.u, &format!("{what} grad u"));
        assert_close(
            kft.grad(&grads).unwrap(),
            &want.k_fwd,
            &format!("{what} grad k_fwd"),
        );
        if let Some(wkr) = &want.k_rev {
            assert_close(
                krt.grad(&grads).unwrap(),
                wkr,
                &format!("{what} grad k_rev"),
            );
        }
        assert_close(dt.grad(&grads).unwrap(), &want.d, &format!("{what} grad D"));
    }
}

#[test]
fn gated_mlp_matches_core() {
    let device = device();
    for (inter, nb, seed) in [(16, 4, 6), (32, 2, 7)] {
        let core = monarch::mixer::GatedMlp::<f32>::random(H, inter, nb, seed).unwrap();
        let mlp = GatedMlp::from_core(&core, &device);
        let rows = BATCH * L_MAX;
        let x = random((rows, H), seed + 10);
        let g = random((rows, H), seed + 11);
        let want_y = core.forward(x.view()).unwrap();
        let want = core.vjp(x.view(), g.view()).unwrap();
        let what = format!("GatedMlp(I={inter}, nb={nb})");
        // Through (batch, L, H) tensors, as in the layer.
        let x3 = x.clone().into_shape_with_order((BATCH, L_MAX, H)).unwrap();
        let g3 = g.clone().into_shape_with_order((BATCH, L_MAX, H)).unwrap();
        let xt = tensor_from_array::<3, _>(x3.view(), &device).require_grad();
        let y = mlp.forward(xt.clone());
        assert_close(
            y.clone().reshape([rows, H]),
            &want_y,
            &format!("{what} forward"),
        );
        let grads = backward(y, &g3);
        assert_close(
            xt.grad(&grads).unwrap().reshape([rows, H]),
            &want.x,
            &format!("{what} grad x"),
        );
        assert_close(
            mlp.gated.weight.val().grad(&grads).unwrap(),
            &want.gated,
            &format!("{what} grad gated"),
        );
        assert_close(
            mlp.wo.weight.val().grad(&grads).unwrap(),
            &want.wo,
            &format!("{what} grad wo"),
        );
        assert_close(
            mlp.wo.bias.as_ref().unwrap().val().grad(&grads).unwrap(),
            &want.wo_bias,
            &format!("{what} grad wo bias"),
        );
        assert_close(
            mlp.ln_weight.val().grad(&grads).unwrap(),
            &want.ln.weight,
            &format!("{what} grad LayerNorm weight"),
        );
        assert_close(
            mlp.ln_bias.val().grad(&grads).unwrap(),
            &want.ln.bias,
            &format!("{what} grad LayerNorm bias"),
        );
        assert_eq!(mlp.to_core().unwrap(), core);
    }
}

#[test]
fn bert_layer_matches_core() {
    let device = device();
    for l in [L_MAX, 10] {
        let core = monarch::mixer::M2BertLayer::<f32>::random(H, L_MAX, 16, 4, 8).unwrap();
        let layer = M2BertLayer::from_core(&core, &device);
        let u = random((BATCH, l, H), 40);
        let g = random((BATCH, l, H), 41);
        let want_y = core.forward(u.view()).unwrap();
        let want = core.vjp(u.view(), g.view()).unwrap();
        let what = format!("M2BertLayer(L={l})");
        let ut = tensor_from_array::<3, _>(u.view(), &device).require_grad();
        let y = layer.forward(ut.clone());
        assert_close(y.clone(), &want_y, &format!("{what} forward"));
        let grads = backward(y, &g);
        assert_close(ut.grad(&grads).unwrap(), &want.u, &format!("{what} grad u"));
        let m = &layer.mixer;
        let wm = &want.mixer;
        check_linear(
            &m.in_linear,
            &wm.in_linear,
            &grads,
            &format!("{what} in_linear"),
        );
        assert_close(
            m.short_conv_weight.val().grad(&grads).unwrap(),
            &wm.short_conv_weight,
            &format!("{what} short conv weight"),
        );
        assert_close(
            m.short_conv_bias.val().grad(&grads).unwrap(),
            &wm.short_conv_bias,
            &format!("{what} short conv bias"),
        );
        check_filter(
            &m.filter,
            &wm.filter,
            &wm.filter_bias,
            &grads,
            &format!("{what} filter"),
        );
        assert!(m.filter2.is_none() && wm.filter2.is_none());
        check_linear(
            &m.out_linear,
            &wm.out_linear,
            &grads,
            &format!("{what} out_linear"),
        );
        let mlp = &layer.mlp;
        assert_close(
            mlp.gated.weight.val().grad(&grads).unwrap(),
            &want.mlp.gated,
            &format!("{what} mlp gated"),
        );
        assert_close(
            mlp.wo.weight.val().grad(&grads).unwrap(),
            &want.mlp.wo,
            &format!("{what} mlp wo"),
        );
        assert_close(
            mlp.wo.bias.as_ref().unwrap().val().grad(&grads).unwrap(),
            &want.mlp.wo_bias,
            &format!("{what} mlp wo bias"),
        );
        assert_close(
            mlp.ln_weight.val().grad(&grads).unwrap(),
            &want.mlp.ln.weight,
            &format!("{what} mlp LayerNorm weight"),
        );
        assert_close(
            mlp.ln_bias.val().grad(&grads).unwrap(),
            &want.mlp.ln.bias,
            &format!("{what} mlp LayerNorm bias"),
        );
        assert_eq!(layer.to_core().unwrap(), core);
    }
}

#[test]
fn bad_input_returns_the_core_error() {
    let device = device();
    let core = monarch::mixer::M2BertLayer::<f32>::random(H, L_MAX, 16, 4, 9).unwrap();
    let layer = M2BertLayer::from_core(&core, &device);
    // Wrong width, L > l_max, L = 0.
    for (b, l, h) in [(2, 8, H + 1), (1, L_MAX + 1, H), (1, 0, H)] {
        let got = layer
            .try_forward(Tensor::<3>::zeros([b, l, h], &device))
            .unwrap_err();
        let want = core.forward(Array3::zeros((b, l, h)).view()).unwrap_err();
        assert_eq!(got, want, "(batch, L, H) = ({b}, {l}, {h})");
        let got = layer
            .mixer
            .try_forward(Tensor::<3>::zeros([b, l, h], &device))
            .unwrap_err();
        let want = core
            .mixer()
            .forward(Array3::zeros((b, l, h)).view())
            .unwrap_err();
        assert_eq!(got, want, "mixer (batch, L, H) = ({b}, {l}, {h})");
    }
    let got = layer
        .mlp
        .try_forward(Tensor::<2>::zeros([3, H + 2], &device))
        .unwrap_err();
    let want = core
        .mlp()
        .forward(monarch::ndarray::Array2::zeros((3, H + 2)).view())
        .unwrap_err();
    assert_eq!(got, want);
    let f = &layer.mixer.filter;
    assert!(matches!(
        f.kernels(L_MAX + 1),
        Err(monarch::Error::TooLarge { .. })
    ));
    // forward panics with the same message.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layer.forward(Tensor::<3>::zeros([1, L_MAX + 1, H], &device))
    }));
    assert!(r.is_err());
}

#[test]
fn trainable_parameters_are_the_cores() {
    // Every tensor the core trains (`Params::visit_params`) is a burn `Param`, and nothing else
    // is: `t` and `deltas` stay fixed buffers.
    use monarch::primitives::params::Params;
    let device = device();
    for residual in [false, true] {
        let core = monarch::mixer::M2SequenceMixer::<f32>::random(H, L_MAX, residual, 12).unwrap();
        let mut n = 0;
        core.visit_params(&mut |_, v| n += v.len());
        assert_eq!(M2SequenceMixer::from_core(&core, &device).num_params(), n);
    }
    let core = monarch::mixer::M2BertLayer::<f32>::random(H, L_MAX, 16, 4, 13).unwrap();
    let mut n = 0;
    core.visit_params(&mut |_, v| n += v.len());
    assert_eq!(M2BertLayer::from_core(&core, &device).num_params(), n);
}

#[test]
fn bert_layer_trains() {
    let device = device();
    let mut layer = M2BertLayer::random(H, L_MAX, 16, 4, 14, &device).unwrap();
    let u = tensor_from_array::<3, _>(random((BATCH, 12, H), 50).view(), &device);
    let target = tensor_from_array::<3, _>(random((BATCH, 12, H), 51).view(), &device);
    let mse = |m: &M2BertLayer| -> f32 {
        (m.forward(u.clone()) - target.clone())
            .powi_scalar(2)
            .mean()
            .into_scalar()
    };
    let first = mse(&layer);
    let t_before = layer.mixer.filter.t.clone();
    let mut optim = AdamConfig::new().init();
    for _ in 0..30 {
        let loss = (layer.forward(u.clone()) - target.clone())
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(1e-2, layer, grads);
    }
    let last = mse(&layer);
    assert!(last.is_finite() && last < first, "loss {first} -> {last}");
    let moved: f32 = (layer.mixer.filter.t.clone() - t_before)
        .abs()
        .max()
        .into_scalar();
    assert_eq!(moved, 0.0, "the fixed time buffer changed");
}
