//! Stand-in for `cubecl-llvm` 0.11.3 without LLVM (see Cargo.toml for why it exists).
//!
//! Every item cubecl-cuda names is here with the same shape; compiling a kernel through it
//! returns a [`CompilationError`] that says the LLVM backend is absent, so a build that selects
//! it fails loudly at the first kernel rather than at link time.

use cubecl_core::ir::nvidia::SmArch;
use cubecl_core::prelude::KernelDefinition;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::{compiler::CompilationError, kernel::BufferIOAttr};

pub mod nvptx {
    //! The NVPTX items cubecl-cuda reads whichever backend is selected.
    pub mod ptx_version;
}

pub mod shared {
    //! Device-feature narrowing for the LLVM backend.
    pub mod lowered_features {
        use cubecl_core::ir::DeviceProperties;

        /// The GPU target a device's features are narrowed for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            /// NVIDIA PTX.
            Nvptx,
        }

        /// cubecl-cuda calls this only when the LLVM backend is the default, which the
        /// `cpp` feature rules out; with no LLVM lowering there is nothing to narrow for.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}

/// Which LLVM target a [`PlironCompiler`] lowers for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// The host CPU.
    #[default]
    Cpu,
    /// NVIDIA PTX.
    Nvptx,
}

/// Options of the (absent) LLVM backend, with the fields cubecl-cuda fills in.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMDGPU architecture; never set for NVPTX.
    pub arch: Option<()>,
    /// NVPTX architecture.
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit.
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    /// Pass scalars and static metadata in the kernel parameter block.
    pub grid_constants: bool,
}

/// A compiled NVPTX module, as the LLVM backend would return it.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR for logging and cache keys.
    pub ir: String,
    /// Shared memory required per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM backend would return. Never constructed here.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// PTX for the CUDA driver.
    NvptxCode(NvptxModule),
    /// A host JIT engine (not provided).
    Jit(()),
}

/// The LLVM backend's compiler; every compilation fails with a clear error.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    /// Target the kernel would be lowered for.
    pub target: LlvmTarget,
}

impl PlironCompiler {
    /// Always an error: this build has no LLVM. cubecl-cuda's `cpp` feature selects NVRTC.
    pub fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: "this build of cubecl-llvm has no LLVM (monarch-burn's offline stand-in); \
                     enable cubecl-cuda's `cpp` feature to compile kernels with NVRTC"
                .to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    /// Language tag used in kernel cache keys.
    pub fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}
