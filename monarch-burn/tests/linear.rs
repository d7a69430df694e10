//! MonarchLinear and BlockDiagLinear against the core crate: forward, and every gradient from
//! burn's autodiff against the core's hand-written VJP, on square, rectangular and padded shapes.

use crate::common::{assert_close, device, random};
use burn::tensor::Tensor;
use monarch::ndarray::{Array1, Array2, Ix1};
use monarch_burn::convert::tensor_from_array;
use monarch_burn::{BlockDiagLinear, MonarchLinear};

fn check_monarch_linear(inf: usize, outf: usize, nb: usize, bias: bool, batch: usize, seed: u64) {
    let device = device();
    let core = monarch::MonarchLinear::<f32>::new(inf, outf, nb, bias, seed).unwrap();
    let layer = MonarchLinear::from_core(&core, &device);
    let x = random((batch, inf), seed + 10);
    let g = random((batch, outf), seed + 11);
    let want_y = core.forward(x.view()).unwrap();
    let want = core.vjp(x.view(), g.view()).unwrap();

    let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
    let gt = tensor_from_array::<2, _>(g.view(), &device);
    let y = layer.forward(xt.clone());
    let what = format!("MonarchLinear({inf}, {outf}, nb={nb}, bias={bias})");
    assert_close(y.clone(), &want_y, &format!("{what} forward"));
    let grads = (y * gt).sum().backward();
    assert_close(xt.grad(&grads).unwrap(), &want.x, &format!("{what} grad x"));
    assert_close(
        layer.w1.val().grad(&grads).unwrap(),
        &want.w1,
        &format!("{what} grad w1"),
    );
    assert_close(
        layer.w2.val().grad(&grads).unwrap(),
        &want.w2,
        &format!("{what} grad w2"),
    );
    match (&layer.bias, &want.bias) {
        (Some(b), Some(wb)) => assert_close(
            b.val().grad(&grads).unwrap(),
            wb,
            &format!("{what} grad bias"),
        ),
        (None, None) => {}
        _ => panic!("{what}: bias presence differs"),
    }
    // Parameters come back unchanged.
    assert_eq!(layer.to_core().unwrap(), core);
}

#[test]
fn monarch_linear_square() {
    check_monarch_linear(16, 16, 4, true, 5, 1);
    check_monarch_linear(64, 64, 8, false, 3, 2);
}

#[test]
fn monarch_linear_rectangular() {
    check_monarch_linear(16, 32, 4, true, 4, 3);
    check_monarch_linear(48, 12, 4, true, 4, 4);
}

#[test]
fn monarch_linear_padded_and_truncated() {
    // in = 10, nb = 3: padded to 12; out = 7: computed as 9 and truncated.
    check_monarch_linear(10, 7, 3, true, 6, 5);
    check_monarch_linear(13, 29, 4, false, 2, 6);
}

#[test]
fn monarch_linear_leading_axes() {
    let device = device();
    let core = monarch::MonarchLinear::<f32>::new(12, 20, 4, true, 9).unwrap();
    let layer = MonarchLinear::from_core(&core, &device);
    let x = random((2, 3, 12), 12);
    let want = core
        .forward(x.view().into_shape_with_order((6, 12)).unwrap())
        .unwrap()
        .into_shape_with_order((2, 3, 20))
        .unwrap();
    let y = layer.forward(tensor_from_array::<3, _>(x.view(), &device));
    assert_close(y, &want, "MonarchLinear on (2, 3, 12)");
}

#[test]
fn monarch_linear_bad_input() {
    let device = device();
    assert!(matches!(
        MonarchLinear::new(0, 4, 2, true, 0, &device),
        Err(monarch::Error::ZeroSize { .. })
    ));
    let layer = MonarchLinear::new(8, 8, 2, true, 0, &device).unwrap();
    let err = layer
        .try_forward(Tensor::<2>::zeros([2, 7], &device))
        .unwrap_err();
    assert!(
        err.to_string().contains('8') && err.to_string().contains('7'),
        "{err}"
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layer.forward(Tensor::<2>::zeros([2, 7], &device))
    }));
    assert!(
        caught.is_err(),
        "forward on a wrong width must panic (burn's convention)"
    );
    // An empty batch returns an empty result, as in the core crate.
    assert_eq!(
        layer.forward(Tensor::<2>::zeros([0, 8], &device)).dims(),
        [0, 8]
    );
}

#[test]
fn blockdiag_linear_matches_core() {
    let device = device();
    for (inf, outf, nb, seed) in [(12, 12, 3, 20u64), (8, 24, 4, 21), (30, 10, 5, 22)] {
        let layer = BlockDiagLinear::new(inf, outf, nb, true, seed, &device).unwrap();
        let (blocks, bias) = layer.to_core().unwrap();
        let bias = bias.unwrap();
        let x = random((5, inf), seed + 1);
        let g = random((5, outf), seed + 2);
        let want_y: Array2<f32> = blocks.matmul(x.view()).unwrap() + &bias;
        let want = blocks.vjp(x.view(), g.view()).unwrap();
        let want_bias: Array1<f32> = g.sum_axis(monarch::ndarray::Axis(0));
        let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
        let y = layer.forward(xt.clone());
        let what = format!("BlockDiagLinear({inf}, {outf}, nb={nb})");
        assert_close(y.clone(), &want_y, &format!("{what} forward"));
        let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
            .sum()
            .backward();
        assert_close(xt.grad(&grads).unwrap(), &want.x, &format!("{what} grad x"));
        assert_close(
            layer.weight.val().grad(&grads).unwrap(),
            &want.w,
            &format!("{what} grad w"),
        );
        let gb = layer.bias.as_ref().unwrap().val().grad(&grads).unwrap();
        assert_close(
            gb,
            &want_bias.into_dimensionality::<Ix1>().unwrap(),
            &format!("{what} grad bias"),
        );
    }
    assert!(matches!(
        BlockDiagLinear::new(10, 12, 4, true, 0, &device),
        Err(monarch::Error::NotDivisible { .. })
    ));
}
