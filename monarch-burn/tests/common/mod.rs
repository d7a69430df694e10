//! Shared pieces of the parity tests: seeded data, a tensor-vs-array comparison, the device.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor};
use monarch::ndarray::{Array, ArrayD, Dimension, IxDyn, ShapeBuilder};
use monarch_burn::convert::array_from_tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Relative tolerance of every parity check: `max |burn - core| <= TOL · max |core|`.
pub const TOL: f32 = 1e-5;

/// The device the tests run on: burn's flex CPU backend by default; `MONARCH_BURN_DEVICE=cuda`
/// runs the same tests on the first CUDA device (a build with the `cuda` feature).
pub fn device() -> Device {
    match std::env::var("MONARCH_BURN_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0).autodiff(),
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => Device::wgpu(Default::default()).autodiff(),
        Ok(other) if !other.is_empty() && other != "flex" => {
            panic!("MONARCH_BURN_DEVICE={other}: this build has no such backend")
        }
        _ => Device::flex().autodiff(),
    }
}

/// An array of the given shape with entries uniform in `[-1, 1)`, seeded.
pub fn random<Sh: ShapeBuilder>(shape: Sh, seed: u64) -> Array<f32, Sh::Dim> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || rng.random_range(-1.0f32..1.0))
}

/// Asserts `max |t - expected| <= TOL · max(|expected|)` and equal shapes.
#[track_caller]
pub fn assert_close<const D: usize, Dm: Dimension>(
    t: Tensor<D>,
    expected: &Array<f32, Dm>,
    what: &str,
) {
    assert_close_tol(t, expected, TOL, what)
}

/// [`assert_close`] with an explicit relative tolerance.
#[track_caller]
pub fn assert_close_tol<const D: usize, Dm: Dimension>(
    t: Tensor<D>,
    expected: &Array<f32, Dm>,
    tol: f32,
    what: &str,
) {
    let got: ArrayD<f32> = array_from_tensor::<D, IxDyn>(t).expect("tensor readable as f32");
    assert_eq!(got.shape(), expected.shape(), "{what}: shape");
    let scale = expected
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let err = got
        .iter()
        .zip(expected.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    assert!(
        err <= tol * scale,
        "{what}: max abs error {err:e} > {tol:e} · {scale:e}"
    );
}
