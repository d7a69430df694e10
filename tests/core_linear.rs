//! `MonarchLinear` (fly's layer) against a dense reference: padding, truncation, bias, init, VJP.
use crate::common;
use common::*;
use monarch::ndarray::{s, Array1, Array2};
use monarch::primitives::linear::monarch_linear_shapes;
use monarch::primitives::random::normal_matrix;
use monarch::{Error, MonarchLinear};

#[test]
fn shapes_follow_the_reference_rule() {
    assert_eq!(
        monarch_linear_shapes(64, 128, 4).unwrap(),
        ((4, 16, 16), (4, 32, 16))
    );
    assert_eq!(
        monarch_linear_shapes(128, 64, 4).unwrap(),
        ((4, 16, 32), (4, 16, 16))
    );
    assert_eq!(
        monarch_linear_shapes(64, 64, 4).unwrap(),
        ((4, 16, 16), (4, 16, 16))
    );
    // Non-dividing sizes round up: ib = ⌈10/4⌉ = 3, ob = ⌈7/4⌉ = 2.
    assert_eq!(
        monarch_linear_shapes(10, 7, 4).unwrap(),
        ((4, 2, 3), (4, 2, 2))
    );
    assert!(matches!(
        monarch_linear_shapes(0, 7, 4),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        monarch_linear_shapes(3, 7, 0),
        Err(Error::ZeroSize { .. })
    ));
}

#[test]
fn parameter_count_formula_for_divisible_sizes() {
    for (i, o, nb) in [(64, 128, 4), (128, 64, 4), (256, 256, 16), (96, 48, 3)] {
        let l = MonarchLinear::<f32>::new(i, o, nb, false, 0).unwrap();
        assert_eq!(l.num_params(), (i + o) * i.min(o) / nb, "({i},{o},{nb})");
    }
}

#[test]
fn forward_matches_dense_with_padding_truncation_and_bias() {
    for (i, o, nb) in [
        (10, 7, 4),
        (64, 128, 4),
        (33, 65, 8),
        (5, 5, 1),
        (7, 3, 7),
        (3, 12, 5),
    ] {
        let layer = MonarchLinear::<f64>::new(i, o, nb, true, 11).unwrap();
        let m = layer.monarch();
        // Dense weight from the factors independently, then cut to (out, in).
        let full = naive_dense(m.w1(), m.w2());
        let w = full.slice(s![..o, ..i]).to_owned();
        assert_close(
            layer.to_dense().as_slice().unwrap(),
            w.as_slice().unwrap(),
            1e-12,
            "to_dense",
        );
        let x = normal_matrix::<f64>((5, i), 1.0, 3);
        let y = layer.forward(x.view()).unwrap();
        let yref = naive_rows_times_t(&x, &w) + layer.bias().unwrap();
        assert_close(
            y.as_slice().unwrap(),
            yref.as_slice().unwrap(),
            1e-12,
            "forward",
        );
    }
}

#[test]
fn initialisation_bounds() {
    let layer = MonarchLinear::<f64>::new(100, 60, 4, true, 5).unwrap();
    let (s1, s2) = monarch_linear_shapes(100, 60, 4).unwrap();
    let b1 = 1.0 / (s1.2 as f64).sqrt();
    let b2 = 1.0 / (s2.2 as f64).sqrt();
    assert!(layer.monarch().w1().iter().all(|v| v.abs() <= b1));
    assert!(layer.monarch().w2().iter().all(|v| v.abs() <= b2));
    // Spread: the largest entry is close to the bound (a uniform sample of 1000+ values).
    assert!(
        layer
            .monarch()
            .w1()
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()))
            > 0.9 * b1
    );
    let bb = 1.0 / 60f64.sqrt();
    assert!(layer.bias().unwrap().iter().all(|v| v.abs() <= bb));
}

#[test]
fn vjp_matches_finite_differences() {
    let (i, o, nb) = (10, 7, 4);
    let layer = MonarchLinear::<f64>::new(i, o, nb, true, 1).unwrap();
    let x = normal_matrix::<f64>((3, i), 1.0, 2);
    let g = normal_matrix::<f64>((3, o), 1.0, 3);
    let gr = layer.vjp(x.view(), g.view()).unwrap();
    let loss = |l: &MonarchLinear<f64>, x: &Array2<f64>| (&l.forward(x.view()).unwrap() * &g).sum();
    let h = 1e-6;
    for idx in 0..x.len() {
        let (mut a, mut b) = (x.clone(), x.clone());
        a.as_slice_mut().unwrap()[idx] += h;
        b.as_slice_mut().unwrap()[idx] -= h;
        let num = (loss(&layer, &a) - loss(&layer, &b)) / (2.0 * h);
        assert!(
            (num - gr.x.as_slice().unwrap()[idx]).abs() < 1e-7,
            "x[{idx}]"
        );
    }
    for which in 0..2 {
        let n = if which == 0 {
            layer.monarch().w1().len()
        } else {
            layer.monarch().w2().len()
        };
        for idx in 0..n {
            let bump = |d: f64| {
                let mut l = layer.clone();
                let m = l.monarch_mut();
                if which == 0 {
                    m.w1_mut().as_slice_mut().unwrap()[idx] += d;
                } else {
                    m.w2_mut().as_slice_mut().unwrap()[idx] += d;
                }
                loss(&l, &x)
            };
            let num = (bump(h) - bump(-h)) / (2.0 * h);
            let got = if which == 0 {
                gr.w1.as_slice().unwrap()[idx]
            } else {
                gr.w2.as_slice().unwrap()[idx]
            };
            assert!(
                (num - got).abs() < 1e-7,
                "w{}[{idx}] fd {num} vs {got}",
                which + 1
            );
        }
    }
    let gb: Array1<f64> = g.sum_axis(monarch::ndarray::Axis(0));
    assert_eq!(gr.bias.unwrap(), gb);
}

#[test]
fn bad_input() {
    let layer = MonarchLinear::<f32>::new(10, 7, 4, false, 1).unwrap();
    assert!(layer.forward(Array2::zeros((2, 9)).view()).is_err());
    assert!(layer
        .vjp(Array2::zeros((2, 10)).view(), Array2::zeros((2, 8)).view())
        .is_err());
    let l2 = MonarchLinear::<f32>::new(64, 128, 4, true, 1).unwrap();
    let (w1, w2) = (l2.monarch().w1().clone(), l2.monarch().w2().clone());
    assert!(MonarchLinear::from_weights(64, 128, w2.clone(), w1.clone(), None).is_err());
    assert!(MonarchLinear::from_weights(64, 128, w1, w2, Some(Array1::zeros(127))).is_err());
}
