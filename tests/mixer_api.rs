//! The Monarch Mixer structs' checked constructors (every bad shape is an error naming the
//! sizes, not a panic), the parameter/gradient visitors (names, order and shapes agree) and the
//! shared Adam optimiser.

use monarch::checkpoint::StateDict;
use monarch::gs::{GsoftLinear, OrthMap};
use monarch::mixer::*;
use monarch::more::{Adapter, LoraAdapter, MoReAdapter};
use monarch::ndarray::{Array1, Array2, Array3};
use monarch::pk::{MlpMixerBlock, PkLayer};
use monarch::primitives::nn::{Activation, LayerNorm, Linear};
use monarch::primitives::optim::Adam;
use monarch::primitives::params::{Grads, Params};
use monarch::primitives::random::normal_matrix;
use monarch::{BlockDiag, Error, Monarch, MonarchLinear};

fn rand3(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    normal_matrix::<f64>((1, shape.0 * shape.1 * shape.2), 1.0, seed)
        .into_shape_with_order(shape)
        .unwrap()
}

/// `r` is a [`Error::ShapeMismatch`] whose message contains every one of `needles`.
#[track_caller]
fn shape_err<T: std::fmt::Debug>(r: monarch::Result<T>, needles: &[&str]) {
    let e = r.unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    let m = e.to_string();
    for n in needles {
        assert!(m.contains(n), "{m:?} should contain {n:?}");
    }
}

#[track_caller]
fn zero_err<T: std::fmt::Debug>(r: monarch::Result<T>, needle: &str) {
    let e = r.unwrap_err();
    assert!(matches!(e, Error::ZeroSize { .. }), "{e:?}");
    assert!(
        e.to_string().contains(needle),
        "{e} should contain {needle:?}"
    );
}

/// The filter's parts, to rebuild it with one of them changed.
struct FilterParts {
    z: Array2<f64>,
    t: Array1<f64>,
    fwd: FilterMlp<f64>,
    rev: Option<FilterMlp<f64>>,
    freq: Array1<f64>,
    deltas: Array1<f64>,
    bias: Array1<f64>,
}

impl FilterParts {
    fn of(f: &ImplicitFilter<f64>) -> Self {
        FilterParts {
            z: f.z().clone(),
            t: f.t().clone(),
            fwd: f.mlp_fwd().clone(),
            rev: f.mlp_rev().cloned(),
            freq: f.freq().clone(),
            deltas: f.deltas().clone(),
            bias: f.bias().clone(),
        }
    }
    fn build(self) -> monarch::Result<ImplicitFilter<f64>> {
        ImplicitFilter::new(
            self.z,
            self.t,
            self.fwd,
            self.rev,
            self.freq,
            1.0,
            self.deltas,
            0.0,
            self.bias,
        )
    }
}

#[test]
fn mixer_filter_constructors_reject_bad_shapes() {
    // H = 3, l_max = 10, order = 4, emb_dim = 5, bidirectional.
    let f = ImplicitFilter::<f64>::random(3, 10, 4, 5, true, 1).unwrap();
    assert_eq!(FilterParts::of(&f).build().unwrap(), f);
    zero_err(FilterMlp::<f64>::new(vec![]), "layers");
    shape_err(
        FilterMlp::new(vec![
            Linear::<f64>::random(5, 4, true, 0).unwrap(),
            Linear::random(3, 4, true, 1).unwrap(),
        ]),
        &["layer 1 input", "4", "3"],
    );
    let with = |change: &dyn Fn(&mut FilterParts)| {
        let mut p = FilterParts::of(&f);
        change(&mut p);
        p.build()
    };
    zero_err(with(&|p| p.z = Array2::zeros((0, 5))), "l_max");
    zero_err(with(&|p| p.deltas = Array1::zeros(0)), "deltas");
    zero_err(with(&|p| p.freq = Array1::zeros(0)), "freq");
    shape_err(with(&|p| p.t = Array1::zeros(9)), &["t length", "10", "9"]);
    shape_err(
        with(&|p| p.bias = Array1::zeros(4)),
        &["bias length", "3", "4"],
    );
    // A sine after a hidden layer of width 4 needs 4 frequencies.
    shape_err(
        with(&|p| p.freq = Array1::ones(5)),
        &["mlp_fwd layer 0 output", "5", "4"],
    );
    // The MLPs read emb_dim = 5 features.
    shape_err(
        with(&|p| {
            p.z = Array2::zeros((10, 7));
        }),
        &["mlp_fwd layer 0 input", "7", "5"],
    );
    // The last layer gives H = 3 channels.
    shape_err(
        with(&|p| {
            p.deltas = Array1::zeros(2);
            p.bias = Array1::zeros(2);
        }),
        &["mlp_fwd layer 3 output", "2", "3"],
    );
    let other = ImplicitFilter::<f64>::random(2, 10, 4, 5, true, 2).unwrap();
    shape_err(
        with(&|p| p.rev = other.mlp_rev().cloned()),
        &["mlp_rev layer 3 output", "3", "2"],
    );
}

#[test]
fn mixer_sequence_mixer_constructor_rejects_bad_shapes() {
    let h = 4;
    let m = M2SequenceMixer::<f64>::random(h, 8, true, 3).unwrap();
    let parts = || {
        (
            m.in_linear().clone(),
            m.short_conv_weight().clone(),
            m.short_conv_bias().clone(),
            m.filter().clone(),
            m.filter2().cloned(),
            m.out_linear().clone(),
        )
    };
    let (a, b, c, d, e, f) = parts();
    assert_eq!(M2SequenceMixer::new(a, b, c, d, e, f).unwrap(), m);
    let narrow = ImplicitFilter::<f64>::random(3, 8, 16, 5, true, 4).unwrap();
    let (a, b, c, d, e, _) = parts();
    shape_err(
        M2SequenceMixer::new(a, b, c, d, e, Linear::random(4, 5, true, 0).unwrap()),
        &["out_linear", "H = 5", "(5, 4)"],
    );
    let (_, b, c, d, e, f) = parts();
    shape_err(
        M2SequenceMixer::new(Linear::random(4, 8, true, 0).unwrap(), b, c, d, e, f),
        &["in_linear", "(12, 4)", "(8, 4)"],
    );
    let (a, _, c, d, e, f) = parts();
    shape_err(
        M2SequenceMixer::new(a, Array2::zeros((12, 2)), c, d, e, f),
        &["short conv weight", "(12, 3)", "(12, 2)"],
    );
    let (a, b, _, d, e, f) = parts();
    shape_err(
        M2SequenceMixer::new(a, b, Array1::zeros(11), d, e, f),
        &["short conv bias", "12", "11"],
    );
    let (a, b, c, _, e, f) = parts();
    shape_err(
        M2SequenceMixer::new(a, b, c, narrow.clone(), e, f),
        &["filter channels", "4", "3"],
    );
    let (a, b, c, d, _, f) = parts();
    shape_err(
        M2SequenceMixer::new(a, b, c, d, Some(narrow), f),
        &["filter2 channels", "4", "3"],
    );
}

#[test]
fn mixer_layer_and_encoder_constructors_reject_bad_shapes() {
    let l4 = M2BertLayer::<f64>::random(4, 8, 8, 2, 0).unwrap();
    let l8 = M2BertLayer::<f64>::random(8, 8, 8, 2, 1).unwrap();
    assert_eq!(
        M2BertLayer::new(l4.mixer().clone(), l4.mlp().clone()).unwrap(),
        l4
    );
    shape_err(
        M2BertLayer::new(l4.mixer().clone(), l8.mlp().clone()),
        &["MLP width", "4", "8"],
    );
    zero_err(M2BertEncoder::<f64>::new(vec![]), "layers");
    shape_err(
        M2BertEncoder::new(vec![l4.clone(), l4.clone(), l8]),
        &["layer 2 width", "4", "8"],
    );
    assert_eq!(M2BertEncoder::new(vec![l4]).unwrap().layers().len(), 1);
    // GatedMlp: each way its blocks can fail to chain.
    let ln = LayerNorm::<f64>::new(8, 1e-12).unwrap();
    let ok = GatedMlp::new(
        Array3::zeros((4, 6, 2)),
        Array3::zeros((4, 2, 3)),
        Array1::zeros(8),
        ln.clone(),
    );
    assert!(ok.is_ok());
    let e = GatedMlp::new(
        Array3::<f64>::zeros((1, 5, 8)),
        Array3::zeros((1, 8, 2)),
        Array1::zeros(8),
        ln.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotDivisible {
                size: 5,
                divisor: 2,
                ..
            }
        ),
        "{e:?}"
    );
    shape_err(
        GatedMlp::new(
            Array3::zeros((4, 6, 2)),
            Array3::zeros((4, 2, 4)),
            Array1::zeros(8),
            ln.clone(),
        ),
        &["wo blocks", "(4, 2, 3)", "(4, 2, 4)"],
    );
    shape_err(
        GatedMlp::new(
            Array3::zeros((4, 6, 2)),
            Array3::zeros((4, 2, 3)),
            Array1::zeros(7),
            ln,
        ),
        &["bias", "(8, 8)", "(7, 8)"],
    );
}

#[test]
fn mixer_paper_layer_constructor_rejects_bad_shapes() {
    let (n, d) = (8, 6);
    let base = M2Layer::<f64>::random_monarch(n, d, 2, 3).unwrap();
    let SequenceMixing::Monarch { m1, k1, m2 } = base.seq().clone() else {
        unreachable!()
    };
    let m3 = base.m3().clone();
    let m4 = base.m4().clone();
    let k2 = base.k2().clone();
    let ln = base.ln().clone();
    let seq = |m1: &Monarch<f64>, k1: &Array2<f64>, m2: &Monarch<f64>| SequenceMixing::Monarch {
        m1: m1.clone(),
        k1: k1.clone(),
        m2: m2.clone(),
    };
    let build = |s, m3: &Monarch<f64>, k2: &Array2<f64>, m4: &Monarch<f64>, ln: &LayerNorm<f64>| {
        M2Layer::new(
            s,
            m3.clone(),
            k2.clone(),
            m4.clone(),
            Activation::Gelu,
            ln.clone(),
        )
    };
    assert_eq!(build(seq(&m1, &k1, &m2), &m3, &k2, &m4, &ln).unwrap(), base);
    let m6 = Monarch::<f64>::random(6, 2, 9).unwrap();
    let m12x6 = Monarch::<f64>::random_factors((2, 6, 3), (2, 6, 6), 6).unwrap();
    // M₃ gives d' = 12 but K₂ has 6 rows.
    shape_err(
        build(seq(&m1, &k1, &m2), &m12x6, &k2, &m4, &ln),
        &["M₃ output", "d' = 6", "12"],
    );
    shape_err(
        build(seq(&m1, &k1, &m2), &m3, &k2, &m12x6, &ln),
        &["M₄", "(6, 6)", "(12, 6)"],
    );
    shape_err(
        build(
            seq(&m1, &k1, &m2),
            &m3,
            &k2,
            &m4,
            &LayerNorm::new(5, 1e-5).unwrap(),
        ),
        &["LayerNorm width", "6", "5"],
    );
    shape_err(
        build(seq(&m6, &k1, &m2), &m3, &k2, &m4, &ln),
        &["M₁ input", "N = 8", "6"],
    );
    shape_err(
        build(seq(&m1, &Array2::ones((8, 5)), &m2), &m3, &k2, &m4, &ln),
        &["K₁", "(8, 6)", "(8, 5)"],
    );
    shape_err(
        build(seq(&m1, &k1, &m6), &m3, &k2, &m4, &ln),
        &["M₂", "(8, 8)", "(6, 6)"],
    );
    let conv = |h: usize, l: usize| {
        SequenceMixing::Conv(LongConv::causal(Array2::ones((h, l)), Array1::zeros(h)).unwrap())
    };
    assert!(build(conv(d, n), &m3, &k2, &m4, &ln).is_ok());
    shape_err(
        build(conv(d, n + 1), &m3, &k2, &m4, &ln),
        &["long convolution", "(6, 8)", "(6, 9)"],
    );
    shape_err(
        build(conv(d - 1, n), &m3, &k2, &m4, &ln),
        &["long convolution", "(6, 8)", "(5, 8)"],
    );
    // The settings stay settable.
    let mut l = base.clone();
    l.set_method(ConvMethod::Fft);
    l.set_act(Activation::Relu);
    assert_eq!((l.method(), l.act()), (ConvMethod::Fft, Activation::Relu));
}

/// `p`'s visitors (shared and mutable) and `g`'s list the same names and shapes in the same
/// order, without repeats, and cover `expect_len` scalars.
#[track_caller]
fn same_order<P: Params<f64>>(p: &mut P, g: &P::Grad, expect_len: usize) -> Vec<String> {
    let mut ps = Vec::new();
    p.visit_params(&mut |n, v| ps.push((n.to_owned(), v.shape().to_vec())));
    let mut pm = Vec::new();
    p.visit_params_mut(&mut |n, v| pm.push((n.to_owned(), v.shape().to_vec())));
    let mut gs = Vec::new();
    g.visit_grads(&mut |n, v| gs.push((n.to_owned(), v.shape().to_vec())));
    assert_eq!(ps, pm, "visit_params vs visit_params_mut");
    assert_eq!(ps, gs, "parameters vs gradients");
    let mut names: Vec<_> = ps.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, p.param_names());
    assert_eq!(names, g.grad_names());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ps.len(), "repeated names in {ps:?}");
    assert_eq!(p.param_len(), expect_len);
    p.param_names()
}

#[test]
fn mixer_visitor_names_and_order_match_the_gradients() {
    let x = normal_matrix::<f64>((3, 8), 1.0, 1);
    // Core layers.
    let mut lin = Linear::<f64>::random(8, 5, true, 0).unwrap();
    let g = lin
        .vjp(x.view(), normal_matrix((3, 5), 1.0, 2).view())
        .unwrap();
    assert_eq!(same_order(&mut lin, &g, 45), ["weight", "bias"]);
    let mut lin = Linear::<f64>::random(8, 5, false, 0).unwrap();
    let g = lin
        .vjp(x.view(), normal_matrix((3, 5), 1.0, 2).view())
        .unwrap();
    assert_eq!(same_order(&mut lin, &g, 40), ["weight"]);
    let mut ln = LayerNorm::<f64>::new(8, 1e-5).unwrap();
    let g = ln.vjp(x.view(), x.view()).unwrap();
    assert_eq!(same_order(&mut ln, &g, 16), ["weight", "bias"]);
    let mut bd = BlockDiag::new(rand3((2, 3, 4), 3)).unwrap();
    let g = bd
        .vjp(x.view(), normal_matrix((3, 6), 1.0, 4).view())
        .unwrap();
    assert_eq!(same_order(&mut bd, &g, 24), ["weight"]);
    let mut m = Monarch::<f64>::random(8, 2, 5).unwrap();
    let g = m.vjp(x.view(), x.view()).unwrap();
    assert_eq!(same_order(&mut m, &g, 64), ["w1", "w2"]);
    let mut ml = MonarchLinear::<f64>::new(8, 12, 2, true, 6).unwrap();
    let g = ml
        .vjp(x.view(), normal_matrix((3, 12), 1.0, 7).view())
        .unwrap();
    let n = ml.num_params();
    assert_eq!(same_order(&mut ml, &g, n), ["blkdiag1", "blkdiag2", "bias"]);
    // Every name is a name the layer's checkpoint writer uses, with as many entries.
    let mut sd = StateDict::new();
    ml.to_state_dict(&mut sd, "");
    ml.visit_params(&mut |n, v| assert_eq!(sd.get(n).unwrap().len(), v.len(), "{n}"));
    // Adapters: trainable parameters only.
    let w = normal_matrix::<f64>((6, 8), 1.0, 8);
    let gy = normal_matrix::<f64>((3, 6), 1.0, 9);
    let mut lora = LoraAdapter::new(w.clone(), None, 2, 0.0, 1).unwrap();
    let g = lora.vjp(x.view(), gy.view()).unwrap();
    let n = lora.num_params();
    assert_eq!(
        same_order(&mut lora, &g, n),
        ["lora_A.weight", "lora_B.weight"]
    );
    let mut more = MoReAdapter::new(w.clone(), None, 2, 2, 0.0, 1).unwrap();
    let g = more.vjp(x.view(), gy.view()).unwrap();
    let n = more.num_params();
    assert_eq!(same_order(&mut more, &g, n), ["blkdiag1", "blkdiag2"]);
    let mut gs = GsoftLinear::new(w, None, 4, 2, OrthMap::Cayley).unwrap();
    let g = gs.vjp(x.view(), gy.view()).unwrap();
    let n = gs.num_params();
    assert_eq!(
        same_order(&mut gs, &g, n),
        ["gsoft_R", "gsoft_L", "gsoft_scale"]
    );
    // PK layers.
    let mut pk = PkLayer::<f64>::channel_mixing(
        normal_matrix((3, 4), 1.0, 0),
        Some(Array1::zeros(3)),
        2,
        Activation::Gelu,
    )
    .unwrap();
    let g = pk
        .vjp(x.view(), normal_matrix((3, 6), 1.0, 10).view())
        .unwrap();
    assert_eq!(same_order(&mut pk, &g, 15), ["w", "bias"]);
    let mut blk = MlpMixerBlock::<f64>::random(4, 3, 5, 6, 1).unwrap();
    let u = rand3((2, 4, 3), 11);
    let g = blk.vjp(u.view(), u.view()).unwrap();
    let n = blk.param_len();
    let names = same_order(&mut blk, &g, n);
    assert_eq!(names[0], "ln1.weight");
    assert_eq!(names.last().unwrap(), "ch2.bias");
    // M2-BERT.
    let mut f = ImplicitFilter::<f64>::random(3, 10, 4, 5, true, 1).unwrap();
    let g = f
        .vjp(
            6,
            Array2::ones((3, 6)).view(),
            Some(Array2::ones((3, 6)).view()),
        )
        .unwrap();
    // z (10·5), four layers each way (5·4+4, 4·4+4, 4·4+4, 4·3), freq (4).
    let names = same_order(&mut f, &g, 50 + 2 * (24 + 20 + 20 + 12) + 4);
    assert_eq!(
        names[..3],
        [
            "pos_emb.z",
            "implicit_filter.0.weight",
            "implicit_filter.0.bias"
        ]
    );
    assert!(names.contains(&"implicit_filter.1.freq".to_owned()));
    assert_eq!(names.last().unwrap(), "implicit_filter_rev.6.weight");
    let mut mlp = GatedMlp::<f64>::random(8, 12, 4, 3).unwrap();
    let g = mlp.vjp(x.view(), x.view()).unwrap();
    assert_eq!(
        same_order(&mut mlp, &g, 4 * 6 * 2 + 4 * 2 * 3 + 8 + 2 * 8),
        [
            "gated_layers.weight",
            "wo.weight",
            "wo.bias",
            "layernorm.weight",
            "layernorm.bias"
        ]
    );
    let u = rand3((2, 5, 4), 12);
    for residual in [false, true] {
        let mut m = M2SequenceMixer::<f64>::random(4, 8, residual, 2).unwrap();
        let g = m.vjp(u.view(), u.view()).unwrap();
        let n = m.param_len();
        let names = same_order(&mut m, &g, n);
        assert_eq!(
            names[..5],
            [
                "in_linear.weight",
                "in_linear.bias",
                "short_filter.weight",
                "short_filter.bias",
                "filter_fn.bias"
            ]
        );
        assert_eq!(names.contains(&"filter_fn2.bias".to_owned()), residual);
    }
    let mut enc = M2BertEncoder::<f64>::random(2, 4, 8, 8, 2, 4).unwrap();
    let g = enc.vjp(u.view(), u.view()).unwrap();
    let n = enc.param_len();
    same_order(&mut enc, &g, n);
    // The names are the released checkpoint's (minus unit axes in the shapes).
    let mut sd = StateDict::new();
    enc.to_state_dict(&mut sd, "bert.encoder").unwrap();
    enc.visit_params(&mut |n, v| {
        let t = sd.get(&format!("bert.encoder.{n}")).unwrap();
        assert_eq!(t.len(), v.len(), "{n}");
    });
    let mut layer = enc.layers()[1].clone();
    let g = layer.vjp(u.view(), u.view()).unwrap();
    let n = layer.param_len();
    assert!(same_order(&mut layer, &g, n)[0].starts_with("attention."));
    // The paper layer, both kinds of sequence mixing.
    let xs = rand3((2, 8, 6), 13);
    let mut learned = M2Layer::<f64>::random_monarch(8, 6, 2, 3).unwrap();
    let g = learned.vjp(xs.view(), xs.view()).unwrap();
    let n = learned.param_len();
    assert_eq!(
        same_order(&mut learned, &g, n),
        [
            "seq.m1.w1",
            "seq.m1.w2",
            "seq.k1",
            "seq.m2.w1",
            "seq.m2.w2",
            "m3.w1",
            "m3.w2",
            "k2",
            "m4.w1",
            "m4.w2",
            "ln.weight",
            "ln.bias"
        ]
    );
    let conv = LongConv::bidirectional(
        normal_matrix((6, 8), 0.5, 1),
        normal_matrix((6, 8), 0.5, 2),
        Array1::zeros(6),
    )
    .unwrap();
    let mut lc = conv.clone();
    let ub = rand3((2, 6, 8), 3);
    let g = lc.vjp(ub.view(), ub.view(), ConvMethod::Fft).unwrap();
    assert_eq!(
        same_order(&mut lc, &g, 6 * 8 * 2 + 6),
        ["k_fwd", "k_rev", "d"]
    );
    let mut bidir = M2Layer::random_conv(conv, 6, 2, 4).unwrap();
    let g = bidir.vjp(xs.view(), xs.view()).unwrap();
    let n = bidir.param_len();
    assert_eq!(
        same_order(&mut bidir, &g, n)[..3],
        ["seq.k_fwd", "seq.k_rev", "seq.d"]
    );
}

/// `‖W x − y‖² / n` for a linear layer and its gradient.
fn quad(
    lin: &Linear<f64>,
    x: &Array2<f64>,
    y: &Array2<f64>,
) -> (f64, monarch::primitives::nn::LinearGrad<f64>) {
    let r = lin.forward(x.view()).unwrap() - y;
    let n = r.len() as f64;
    let g = lin.vjp(x.view(), (&r * (2.0 / n)).view()).unwrap();
    (r.mapv(|v| v * v).sum() / n, g)
}

#[test]
fn mixer_adam_reduces_a_quadratic_loss_and_checks_its_input() {
    let x = normal_matrix::<f64>((32, 6), 1.0, 1);
    let truth = Linear::<f64>::random(6, 4, true, 2).unwrap();
    let y = truth.forward(x.view()).unwrap();
    let mut lin = Linear::<f64>::random(6, 4, true, 3).unwrap();
    let mut opt = Adam::new(0.05).unwrap();
    let (l0, _) = quad(&lin, &x, &y);
    let mut last = l0;
    for _ in 0..400 {
        let (l, g) = quad(&lin, &x, &y);
        last = l;
        opt.step(&mut lin, &g).unwrap();
    }
    assert_eq!(opt.steps(), 400);
    assert!(last < 1e-3 * l0, "loss {l0} → {last}");
    // Gradients of another layer (no bias) or another layer altogether: errors, no update.
    let before = lin.clone();
    let nobias = Linear::<f64>::random(6, 4, false, 4).unwrap();
    let g = nobias.vjp(x.view(), y.view()).unwrap();
    let e = opt.step(&mut lin, &g).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_eq!(lin, before);
    let mut other = Linear::<f64>::random(6, 3, true, 5).unwrap();
    let g = other.vjp(x.view(), Array2::ones((32, 3)).view()).unwrap();
    assert!(opt.step(&mut other, &g).is_err());
    assert!(Adam::<f64>::new(0.0).is_err());
    assert!(Adam::<f64>::new(f64::NAN).is_err());
    assert!(Adam::<f64>::new(1e-3)
        .unwrap()
        .with_hyper(1.0, 0.999, 1e-8)
        .is_err());
    assert!(Adam::<f64>::new(1e-3)
        .unwrap()
        .with_hyper(0.9, 0.99, -1.0)
        .is_err());
    // An M2-BERT sequence mixer fitted to a target through the visitors: the loss drops.
    let mut m = M2SequenceMixer::<f64>::random(4, 8, true, 6).unwrap();
    let u = rand3((2, 6, 4), 7);
    let target = rand3((2, 6, 4), 8) * 0.1;
    let loss = |m: &M2SequenceMixer<f64>| {
        let r = m.forward(u.view()).unwrap() - &target;
        (r.mapv(|v| v * v).sum(), r * 2.0)
    };
    let mut opt = Adam::new(1e-2).unwrap();
    let (start, _) = loss(&m);
    for _ in 0..30 {
        let (_, g) = loss(&m);
        let gr = m.vjp(u.view(), g.view()).unwrap();
        opt.step(&mut m, &gr).unwrap();
    }
    let (end, _) = loss(&m);
    assert!(end < 0.5 * start, "loss {start} → {end}");
}
