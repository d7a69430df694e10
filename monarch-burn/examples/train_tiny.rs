//! Trains a tiny sequence model built from the crate's burn modules and prints its loss.
//!
//! The model: MonarchAttention over the sequence (no parameters of its own; its gradient flows
//! to the projections), then a MonarchLinear MLP, fitted by Adam to a fixed random target.
//! The same code runs on every backend: `--device flex` (default, CPU), `--device wgpu`
//! (feature `wgpu`) or `--device cuda` (feature `cuda`).
//!
//! ```text
//! cargo run --release -p monarch-burn --example train_tiny
//! ```

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Distribution, Tensor};
use monarch_burn::{MonarchAttention, MonarchLinear};

/// Attention over a sequence of `d`-wide tokens, then a Monarch MLP, with a residual.
#[derive(Module, Debug)]
struct TinyMonarchModel {
    qkv: MonarchLinear,
    up: MonarchLinear,
    down: MonarchLinear,
    #[module(skip)]
    attention: MonarchAttention,
}

impl TinyMonarchModel {
    fn new(d: usize, seq: usize, device: &Device) -> monarch::Result<Self> {
        let b = (seq as f64).sqrt().round() as usize;
        let nb = (d as f64).sqrt().round() as usize;
        Ok(TinyMonarchModel {
            qkv: MonarchLinear::new(d, 3 * d, nb, true, 1, device)?,
            up: MonarchLinear::new(d, 4 * d, nb, true, 2, device)?,
            down: MonarchLinear::new(4 * d, d, nb, true, 3, device)?,
            attention: MonarchAttention::new(b, 2),
        })
    }

    /// `x`: `(batch, seq, d)`.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, d] = x.dims();
        let qkv = self.qkv.forward(x.clone()).reshape([batch, seq, 3, d]);
        let part = |i: usize| qkv.clone().narrow(2, i, 1).reshape([batch, 1, seq, d]);
        let a = self.attention.forward(part(0), part(1), part(2), None);
        let h = x + a.reshape([batch, seq, d]);
        h.clone() + self.down.forward(gelu(self.up.forward(h)))
    }
}

fn main() -> monarch::Result<()> {
    let (device, name) = monarch_burn::backend::device_from_args("flex")?;
    let device = device.autodiff();
    device.seed(0);
    let (batch, seq, d) = (16, 64, 32);
    let mut model = TinyMonarchModel::new(d, seq, &device)?;
    let x = Tensor::<3>::random([batch, seq, d], Distribution::Normal(0.0, 1.0), &device);
    // A target the model can reach only by mixing tokens: each token's neighbour average.
    let y = (x.clone() + x.clone().roll_dim(1, 1) + x.clone().roll_dim(-1, 1)).div_scalar(3.0);
    let mut optim = AdamConfig::new().init();
    println!("training on burn's `{name}` backend: {batch} sequences of {seq} tokens, d = {d}");
    for step in 0..=200 {
        let loss = (model.forward(x.clone()) - y.clone()).powi_scalar(2).mean();
        if step % 40 == 0 {
            println!(
                "step {step:3}: mse {:.5}",
                loss.clone().into_scalar::<f32>()
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    Ok(())
}
