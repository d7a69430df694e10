//! GS orthogonal matrices and GSOFT layers in burn against the core crate: forward, and input,
//! parameter and scale gradients through the Cayley and exp maps.

use crate::common::{assert_close, device, random};
use monarch::gs::OrthMap;
use monarch::ndarray::{Array1, Array2};
use monarch_burn::convert::tensor_from_array;
use monarch_burn::{DoubleGsoft, GsoftLinear, OrthGs};

fn random_q(
    n: usize,
    block: usize,
    nf: usize,
    map: OrthMap,
    seed: u64,
) -> monarch::gs::OrthGs<f32> {
    let k = n / block;
    let params = (0..nf)
        .map(|i| random((k, block, block), seed + i as u64) * 0.8)
        .collect();
    monarch::gs::OrthGs::from_params(params, map).unwrap()
}

#[test]
fn orth_gs_matches_core() {
    let device = device();
    for map in [OrthMap::Cayley, OrthMap::Exp] {
        for (n, block, nf) in [(16, 4, 2), (24, 4, 3), (12, 3, 1)] {
            let core = random_q(n, block, nf, map, n as u64);
            let q = OrthGs::from_core(&core, &device);
            let x = random((3, n), 7);
            let g = random((3, n), 8);
            let want = core.forward(x.view()).unwrap();
            let want_g = core.vjp(x.view(), g.view()).unwrap();
            let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
            let y = q.forward(xt.clone());
            let what = format!("OrthGs(n={n}, b={block}, m={nf}, {map:?})");
            assert_close(y.clone(), &want, &format!("{what} forward"));
            let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
                .sum()
                .backward();
            assert_close(
                xt.grad(&grads).unwrap(),
                &want_g.x,
                &format!("{what} grad x"),
            );
            for (i, (p, wp)) in q.params.iter().zip(&want_g.params).enumerate() {
                assert_close(
                    p.val().grad(&grads).unwrap(),
                    wp,
                    &format!("{what} grad factor {i}"),
                );
            }
            assert_eq!(q.to_core().unwrap(), core);
        }
    }
}

#[test]
fn gsoft_linear_matches_core() {
    let device = device();
    for (i, map) in [OrthMap::Cayley, OrthMap::Exp].into_iter().enumerate() {
        let (inf, outf) = (16, 12);
        let w0: Array2<f32> = random((outf, inf), 30 + i as u64);
        let bias: Array1<f32> = random(outf, 31);
        let core = monarch::gs::GsoftLinear::new(w0, Some(bias), 4, 2, map)
            .unwrap()
            .with_q(random_q(inf, 4, 2, map, 32))
            .unwrap();
        let mut core = core;
        *core.scale_mut() = random(outf, 33) + 1.0;
        let layer = GsoftLinear::from_core(&core, &device);
        let x = random((4, inf), 34);
        let g = random((4, outf), 35);
        let want = core.forward(x.view()).unwrap();
        let want_g = core.vjp(x.view(), g.view()).unwrap();
        let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
        let y = layer.forward(xt.clone());
        let what = format!("GsoftLinear({map:?})");
        assert_close(y.clone(), &want, &format!("{what} forward"));
        let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
            .sum()
            .backward();
        assert_close(
            xt.grad(&grads).unwrap(),
            &want_g.x,
            &format!("{what} grad x"),
        );
        assert_close(
            layer.scale.val().grad(&grads).unwrap(),
            &want_g.scale,
            &format!("{what} grad scale"),
        );
        for (p, wp) in layer.q.params.iter().zip(&want_g.params) {
            assert_close(p.val().grad(&grads).unwrap(), wp, &format!("{what} grad Q"));
        }
        assert!(
            layer.base.weight.val().grad(&grads).is_none(),
            "{what}: frozen base"
        );
    }
}

#[test]
fn double_gsoft_matches_core() {
    let device = device();
    let (inf, outf) = (12, 8);
    let w0: Array2<f32> = random((outf, inf), 40);
    let mut core = monarch::gs::DoubleGsoft::new(w0, None, 3, 4, 2, OrthMap::Cayley).unwrap();
    *core.q_in_mut() = random_q(inf, 3, 2, OrthMap::Cayley, 41);
    *core.q_out_mut() = random_q(outf, 4, 2, OrthMap::Cayley, 42);
    let layer = DoubleGsoft::from_core(&core, &device);
    let x = random((5, inf), 43);
    let g = random((5, outf), 44);
    let want = core.forward(x.view()).unwrap();
    let want_g = core.vjp(x.view(), g.view()).unwrap();
    let xt = tensor_from_array::<2, _>(x.view(), &device).require_grad();
    let y = layer.forward(xt.clone());
    assert_close(y.clone(), &want, "DoubleGsoft forward");
    let grads = (y * tensor_from_array::<2, _>(g.view(), &device))
        .sum()
        .backward();
    assert_close(xt.grad(&grads).unwrap(), &want_g.x, "DoubleGsoft grad x");
    for (p, wp) in layer.q_in.params.iter().zip(&want_g.params_in) {
        assert_close(p.val().grad(&grads).unwrap(), wp, "DoubleGsoft grad Q_in");
    }
    for (p, wp) in layer.q_out.params.iter().zip(&want_g.params_out) {
        assert_close(p.val().grad(&grads).unwrap(), wp, "DoubleGsoft grad Q_out");
    }
}

#[test]
fn gsoft_bad_input() {
    let device = device();
    let base = burn::nn::LinearConfig::new(10, 4).init(&device);
    assert!(matches!(
        GsoftLinear::new(base.clone(), 4, 2, OrthMap::Cayley, &device),
        Err(monarch::Error::NotDivisible { .. })
    ));
    let layer = GsoftLinear::new(base, 5, 2, OrthMap::Cayley, &device).unwrap();
    assert!(layer
        .try_forward(burn::tensor::Tensor::<2>::zeros([1, 9], &device))
        .is_err());
}
