//! MonarchAttention in burn against the core crate: output and the q, k, v gradients from
//! burn's autodiff against the core's hand-written VJP through all T rounds, with and without
//! padding (pre and post) and key masks; and the bad-input rule.

use crate::common::{assert_close, device, random};
use burn::tensor::{Bool, Tensor, TensorData};
use monarch::attention::Padding;
use monarch::ndarray::Array2;
use monarch_burn::convert::tensor_from_array;
use monarch_burn::MonarchAttention;

fn check(
    shape: (usize, usize, usize, usize),
    block: usize,
    steps: usize,
    padding: Padding,
    mask: Option<Array2<bool>>,
    seed: u64,
) {
    let device = device();
    let (b, h, n, d) = shape;
    let dv = d + 1;
    let q = random((b, h, n, d), seed);
    let k = random((b, h, n, d), seed + 1);
    let v = random((b, h, n, dv), seed + 2);
    let g = random((b, h, n, dv), seed + 3);
    let att = MonarchAttention::new(block, steps).padding(padding);
    let core = att.to_core();
    let mv = mask.as_ref().map(|m| m.view());
    let want = core.forward(q.view(), k.view(), v.view(), mv).unwrap();
    let want_g = core
        .vjp(q.view(), k.view(), v.view(), mv, g.view())
        .unwrap();

    let qt = tensor_from_array::<4, _>(q.view(), &device).require_grad();
    let kt = tensor_from_array::<4, _>(k.view(), &device).require_grad();
    let vt = tensor_from_array::<4, _>(v.view(), &device).require_grad();
    let mt = mask.as_ref().map(|m| {
        Tensor::<2, Bool>::from_data(
            TensorData::new(m.iter().copied().collect::<Vec<_>>(), [b, n]),
            &device,
        )
    });
    let out = att.forward(qt.clone(), kt.clone(), vt.clone(), mt);
    let what = format!(
        "MonarchAttention(b={block}, T={steps}, {padding:?}, mask={}) on {shape:?}",
        mask.is_some()
    );
    // Rows of masked queries are defined but not meaningful (the core's docs); compare all rows
    // anyway: both sides compute them by the same rule.
    assert_close(out.clone(), &want, &format!("{what}: output"));
    let grads = (out * tensor_from_array::<4, _>(g.view(), &device))
        .sum()
        .backward();
    assert_close(
        qt.grad(&grads).unwrap(),
        &want_g.q,
        &format!("{what}: grad q"),
    );
    assert_close(
        kt.grad(&grads).unwrap(),
        &want_g.k,
        &format!("{what}: grad k"),
    );
    assert_close(
        vt.grad(&grads).unwrap(),
        &want_g.v,
        &format!("{what}: grad v"),
    );
}

#[test]
fn divisible_lengths_every_round_count() {
    for steps in 1..=3 {
        check(
            (2, 2, 16, 8),
            4,
            steps,
            Padding::Post,
            None,
            10 + steps as u64,
        );
    }
    // Rectangular blocks: b = 8, m = 3.
    check((1, 3, 24, 4), 8, 2, Padding::Post, None, 20);
}

#[test]
fn padded_lengths() {
    for (steps, padding) in [
        (1, Padding::Post),
        (2, Padding::Pre),
        (3, Padding::Post),
        (2, Padding::Pre),
    ] {
        check((2, 2, 13, 6), 4, steps, padding, None, 30 + steps as u64);
    }
}

#[test]
fn key_masks() {
    // Batch 0 masks two tokens in the middle; batch 1 masks the tail, emptying a whole block.
    let mut mask = Array2::from_elem((2, 14), true);
    mask[[0, 3]] = false;
    mask[[0, 9]] = false;
    for t in 8..14 {
        mask[[1, t]] = false;
    }
    for (steps, padding) in [(1, Padding::Post), (2, Padding::Post), (3, Padding::Pre)] {
        check(
            (2, 2, 14, 5),
            4,
            steps,
            padding,
            Some(mask.clone()),
            40 + steps as u64,
        );
    }
}

#[test]
fn one_block_is_softmax_attention() {
    // b >= N: exact softmax attention.
    let device = device();
    let q = random((1, 2, 9, 4), 50);
    let k = random((1, 2, 9, 4), 51);
    let v = random((1, 2, 9, 4), 52);
    let want = monarch::attention::softmax_attention(q.view(), k.view(), v.view(), None).unwrap();
    let out = MonarchAttention::new(16, 2).forward(
        tensor_from_array(q.view(), &device),
        tensor_from_array(k.view(), &device),
        tensor_from_array(v.view(), &device),
        None,
    );
    assert_close(
        out,
        &want,
        "MonarchAttention with b >= N vs softmax attention",
    );
}

#[test]
fn bad_input() {
    let device = device();
    let x = Tensor::<4>::zeros([1, 1, 8, 4], &device);
    let err = |a: MonarchAttention, k: Tensor<4>| {
        a.try_forward(x.clone(), k, x.clone(), None).unwrap_err()
    };
    assert!(matches!(
        err(MonarchAttention::new(0, 1), x.clone()),
        monarch::Error::ZeroSize { .. }
    ));
    assert!(matches!(
        err(MonarchAttention::new(4, 0), x.clone()),
        monarch::Error::ZeroSize { .. }
    ));
    assert!(matches!(
        err(MonarchAttention::new(4, usize::MAX), x.clone()),
        monarch::Error::TooLarge { .. }
    ));
    let e = err(
        MonarchAttention::new(4, 1),
        Tensor::zeros([1, 1, 7, 4], &device),
    );
    assert!(matches!(e, monarch::Error::ShapeMismatch { .. }), "{e}");
    let all_masked = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 8], [1, 8]), &device);
    let e = MonarchAttention::new(4, 1)
        .try_forward(x.clone(), x.clone(), x.clone(), Some(all_masked))
        .unwrap_err();
    assert!(matches!(e, monarch::Error::InvalidArgument(_)), "{e}");
    // Empty batch: an empty result, as in the core.
    let empty = Tensor::<4>::zeros([0, 2, 8, 4], &device);
    assert_eq!(
        MonarchAttention::new(4, 1)
            .forward(empty.clone(), empty.clone(), empty, None)
            .dims(),
        [0, 2, 8, 4]
    );
}
