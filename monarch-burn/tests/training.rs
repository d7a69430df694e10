//! A seeded training run of a tiny model built from the modules lowers its loss: burn's
//! autodiff and optimiser drive every parameter of MonarchLinear, BlockDiagLinear and a MoRe
//! adapter.

use crate::common::{device, random};
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::gelu;
use burn::tensor::Tensor;
use monarch_burn::convert::tensor_from_array;
use monarch_burn::{BlockDiagLinear, MoReAdapter, MonarchLinear};

#[derive(Module, Debug)]
struct Tiny {
    up: MonarchLinear,
    mix: BlockDiagLinear,
    down: MoReAdapter,
}

impl Tiny {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = gelu(self.up.forward(x));
        let h = gelu(self.mix.forward(h));
        self.down.forward(h)
    }
}

#[test]
fn tiny_model_trains() {
    let device = device();
    device.seed(0);
    let mut model = Tiny {
        up: MonarchLinear::new(16, 32, 4, true, 1, &device).unwrap(),
        mix: BlockDiagLinear::new(32, 32, 4, true, 2, &device).unwrap(),
        down: MoReAdapter::new(
            LinearConfig::new(32, 8).init(&device),
            4,
            2,
            0.0,
            3,
            &device,
        )
        .unwrap(),
    };
    // A fixed smooth target: y = tanh(x A) B for random A, B.
    let x = random((128, 16), 10);
    let a = random((16, 12), 11);
    let b = random((12, 8), 12);
    let y = x.dot(&a).mapv(f32::tanh).dot(&b);
    let (xt, yt) = (
        tensor_from_array::<2, _>(x.view(), &device),
        tensor_from_array::<2, _>(y.view(), &device),
    );
    let mse = |m: &Tiny| -> f32 {
        (m.forward(xt.clone()) - yt.clone())
            .powi_scalar(2)
            .mean()
            .into_scalar()
    };
    let first = mse(&model);
    let base_before = model.down.base.weight.val().detach();
    let mut optim = AdamConfig::new().init();
    for _ in 0..150 {
        let loss = (model.forward(xt.clone()) - yt.clone())
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(5e-3, model, grads);
    }
    let last = mse(&model);
    assert!(
        last.is_finite() && last < 0.25 * first,
        "loss {first} -> {last}: did not fall to a quarter"
    );
    // The adapter's zero-initialised factor trained; its frozen base did not move.
    assert!(
        model.down.blkdiag2.val().abs().max().into_scalar::<f32>() > 0.0,
        "the adapter trained"
    );
    let moved: f32 = (model.down.base.weight.val() - base_before)
        .abs()
        .max()
        .into_scalar();
    assert_eq!(moved, 0.0, "the frozen base weight changed");
}
