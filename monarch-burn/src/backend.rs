//! Picking a burn backend by name at run time, as the examples' `--device` flag does, so one
//! binary built with several backend features runs on any of them.
//!
//! ```
//! let device = monarch_burn::backend::device("flex").unwrap();
//! let t = burn::tensor::Tensor::<1>::ones([3], &device);
//! assert_eq!(t.sum().into_scalar::<f32>(), 3.0);
//! assert!(monarch_burn::backend::device("tpu").is_err());
//! ```

use burn::tensor::Device;
use monarch::{Error, Result};

/// Names of the backends compiled into this build (features `flex`, `wgpu`, `cuda`).
pub fn available() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The default device of backend `name` (`"flex"`: burn's CPU backend; `"wgpu"`; `"cuda"`:
/// GPU 0). An [`Error::InvalidArgument`] names the backends of this build when `name` is not
/// one of them.
pub fn device(name: &str) -> Result<Device> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        other => Err(Error::InvalidArgument(format!(
            "backend `{other}` is not in this build (built with: {}; features flex, wgpu, cuda)",
            available().join(", ")
        ))),
    }
}

/// The value after `--device` in the process arguments (`default` when absent) and its
/// device; see [`device`].
pub fn device_from_args(default: &str) -> Result<(Device, String)> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .iter()
        .position(|a| a == "--device")
        .map(|i| {
            args.get(i + 1).cloned().ok_or_else(|| {
                Error::InvalidArgument("--device needs a backend name after it".into())
            })
        })
        .transpose()?
        .unwrap_or_else(|| default.to_string());
    Ok((device(&name)?, name))
}
