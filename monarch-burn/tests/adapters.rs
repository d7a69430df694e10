//! MoRe and LoRA adapters in burn against the core crate: forward, input and factor gradients
//! (the frozen base gets none), merge/unmerge, and parameters back to the core unchanged.

use crate::common::{assert_close, device, random};
use monarch::more::Adapter;
use monarch::ndarray::{Array1, Array3};
use monarch_burn::convert::tensor_from_array;
use monarch_burn::{LoraAdapter, MoReAdapter};

#[test]
fn more_matches_core_on_square_rectangular_and_padded_layers() {
    let device = device();
    // (in, out, nblocks, rank): square, rectangular both ways, and in = 10 not divisible by N.
    for (i, &(inf, outf, nb, rank)) in [
        (16, 16, 4, 2),
        (12, 32, 4, 3),
        (40, 12, 4, 2),
        (10, 14, 3, 2),
    ]
    .iter()
    .enumerate()
    {
        let seed = 100 + i as u64;
        let w0 = random((outf, inf), seed);
        let bias: Array1<f32> = random(outf, seed + 1);
        let shapes = monarch::more::MoReAdapter::<f32>::shapes(inf, outf, nb, rank).unwrap();
        let b1: Array3<f32> = random(shapes.0, seed + 2);
        let b2: Array3<f32> = random(shapes.1, seed + 3);
        let core = monarch::more::MoReAdapter::from_factors(w0, Some(bias), b1, b2, 0.0).unwrap();
        let ad = MoReAdapter::from_core(&core, &device).unwrap();
        let x = random((5, inf), seed + 4);
        let g = random((5, outf), seed + 5);
        let want_y = core.forward(x.view()).unwrap();
        let want = core.vjp(x.view(), g.view()).unwrap();
        let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
        let y = ad.forward(xt.clone());
        let what = format!("MoReAdapter({inf}→{outf}, N={nb}, r={rank})");
        assert_close(y.clone(), &want_y, &format!("{what} forward"));
        let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
            .sum()
            .backward();
        assert_close(xt.grad(&grads).unwrap(), &want.x, &format!("{what} grad x"));
        assert_close(
            ad.blkdiag1.val().grad(&grads).unwrap(),
            &want.blkdiag1,
            &format!("{what} grad blkdiag1"),
        );
        assert_close(
            ad.blkdiag2.val().grad(&grads).unwrap(),
            &want.blkdiag2,
            &format!("{what} grad blkdiag2"),
        );
        assert!(
            ad.base.weight.val().grad(&grads).is_none(),
            "{what}: the base weight is frozen"
        );

        // Merge and unmerge keep the output; the core agrees on the merged weight.
        let mut ad = ad;
        ad.merge().unwrap();
        assert!(ad.merge().is_err());
        let mut merged_core = core.clone();
        merged_core.merge().unwrap();
        assert_close(
            ad.forward(tensor_from_array::<2, _>(x.view(), &device)),
            &want_y,
            &format!("{what} merged forward"),
        );
        assert_close(
            ad.base.weight.val(),
            &merged_core.weight().t().to_owned(),
            &format!("{what} merged weight"),
        );
        ad.unmerge().unwrap();
        assert!(ad.unmerge().is_err());
        assert_close(
            ad.base.weight.val(),
            &core.weight().t().to_owned(),
            &format!("{what} unmerged weight"),
        );
        let back = ad.to_core().unwrap();
        assert_eq!(back.blkdiag1(), core.blkdiag1());
        assert_eq!(back.blkdiag2(), core.blkdiag2());
    }
}

#[test]
fn more_initialisation_is_the_base_layer() {
    let device = device();
    let base = burn::nn::LinearConfig::new(24, 20).init(&device);
    let ad = MoReAdapter::new(base.clone(), 4, 2, 0.1, 3, &device).unwrap();
    let x = burn::tensor::Tensor::<2>::ones([2, 24], &device);
    let diff: f32 = (ad.forward(x.clone()) - base.forward(x))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(diff, 0.0, "blkdiag2 = 0 at initialisation");
    assert!(MoReAdapter::new(base.clone(), 0, 2, 0.0, 3, &device).is_err());
    assert!(MoReAdapter::new(base, 4, 2, 1.5, 3, &device).is_err());
}

#[test]
fn lora_matches_core() {
    let device = device();
    for (i, &(inf, outf, rank)) in [(16, 16, 2), (12, 30, 4), (33, 7, 3)].iter().enumerate() {
        let seed = 200 + i as u64;
        let w0 = random((outf, inf), seed);
        let a = random((rank, inf), seed + 1);
        let b = random((outf, rank), seed + 2);
        let core = monarch::more::LoraAdapter::from_factors(w0, None, a, b, 0.0)
            .unwrap()
            .with_scaling(0.5)
            .unwrap();
        let ad = LoraAdapter::from_core(&core, &device).unwrap();
        let x = random((4, inf), seed + 3);
        let g = random((4, outf), seed + 4);
        let want_y = core.forward(x.view()).unwrap();
        let want = core.vjp(x.view(), g.view()).unwrap();
        let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
        let y = ad.forward(xt.clone());
        let what = format!("LoraAdapter({inf}→{outf}, r={rank})");
        assert_close(y.clone(), &want_y, &format!("{what} forward"));
        let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
            .sum()
            .backward();
        assert_close(xt.grad(&grads).unwrap(), &want.x, &format!("{what} grad x"));
        assert_close(
            ad.lora_a.val().grad(&grads).unwrap(),
            &want.lora_a,
            &format!("{what} grad A"),
        );
        assert_close(
            ad.lora_b.val().grad(&grads).unwrap(),
            &want.lora_b,
            &format!("{what} grad B"),
        );
        let mut ad = ad;
        ad.merge().unwrap();
        assert_close(
            ad.forward(tensor_from_array::<2, _>(x.view(), &device)),
            &want_y,
            &format!("{what} merged forward"),
        );
        ad.unmerge().unwrap();
        assert_close(
            ad.base.weight.val(),
            &core.weight().t().to_owned(),
            &format!("{what} unmerged weight"),
        );
    }
}
