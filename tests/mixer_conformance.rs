//! Conformance of the M2 layers with outputs of the authors' PyTorch code (HazyResearch/m2),
//! stored in `tests/data/` (layouts: `monarch::guide::conventions`, "Mixers").

use crate::common;
use common::{assert_close, fixture, t2, t3, tensor};
use monarch::mixer::{ConvMethod, LongConv};
use monarch::ndarray::Array1;

#[test]
fn fftconv_bidirectional_matches_m2_reference() {
    let f = fixture("m2_fftconv_bidir_H3_L8.json");
    let u = t3(&f["inputs"]["u"]);
    let kf = t2(&f["inputs"]["k_fwd"]);
    let kr = t2(&f["inputs"]["k_rev"]);
    let d: Array1<f64> = tensor(&f["inputs"]["D"]).into_dimensionality().unwrap();
    let want = t3(&f["outputs"]["y"]);
    let kc_want = t2(&f["outputs"]["k_combined_len2L"]);
    let conv = LongConv::bidirectional(kf, kr, d).unwrap();
    let kc = conv.combined_kernel();
    assert_close(
        kc.as_slice().unwrap(),
        kc_want.as_slice().unwrap(),
        1e-14,
        "combined kernel",
    );
    for m in [ConvMethod::Direct, ConvMethod::Fft, ConvMethod::MonarchDft] {
        let y = conv.forward(u.view(), m).unwrap();
        assert_close(
            y.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-12,
            &format!("fftconv {m:?}"),
        );
    }
    // f32 through the Monarch DFT stays within single precision of the f64 reference.
    let c32 = LongConv::bidirectional(
        conv.k_fwd().mapv(|v| v as f32),
        conv.k_rev().unwrap().mapv(|v| v as f32),
        conv.d().mapv(|v| v as f32),
    )
    .unwrap();
    let y32 = c32
        .forward(u.mapv(|v| v as f32).view(), ConvMethod::MonarchDft)
        .unwrap();
    let y32: Vec<f64> = y32.iter().map(|&v| v as f64).collect();
    assert_close(&y32, want.as_slice().unwrap(), 1e-5, "fftconv f32");
}

#[test]
fn glu_mlp_blockdiag_matches_m2_reference() {
    use monarch::mixer::GatedMlp;
    use monarch::primitives::nn::LayerNorm;
    let f = fixture("m2_glu_mlp_blockdiag_H8_I16_b4.json");
    let h = t3(&f["inputs"]["h"]);
    let g = t3(&f["inputs"]["gated_weight"]);
    let wo = t3(&f["inputs"]["wo_weight"]);
    let vec1 = |k: &str| -> Array1<f64> { tensor(&f["inputs"][k]).into_dimensionality().unwrap() };
    let eps = f["inputs"]["ln_eps"].as_f64().unwrap();
    assert_eq!(eps, 1e-12);
    let ln = LayerNorm::from_params(vec1("ln_weight"), vec1("ln_bias"), eps).unwrap();
    let mlp = GatedMlp::new(g, wo, vec1("wo_bias"), ln).unwrap();
    assert_eq!((mlp.hidden(), mlp.intermediate()), (8, 16));
    let (b, l, hd) = h.dim();
    let rows = h.into_shape_with_order((b * l, hd)).unwrap();
    let out = mlp.forward(rows.view()).unwrap();
    let want = t3(&f["outputs"]["out"]);
    assert_close(
        out.as_slice().unwrap(),
        want.as_slice().unwrap(),
        1e-12,
        "gated MLP",
    );
}
