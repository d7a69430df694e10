//! The integration test suite, compiled as one crate so a clean build links one binary
//! instead of one per topic. Each topic is a module in its own file beside this one.

#[path = "common/adapters.rs"]
mod adapters;
#[path = "common/attention.rs"]
mod attn;
#[path = "common/circuit.rs"]
mod circuit_ref;
#[path = "common/checkpoint.rs"]
mod ckpt;
mod common;
#[path = "common/mixer.rs"]
mod mx;

mod attention_exact;
mod attention_monarch;
mod checkpoint_adapters;
mod checkpoint_hostile;
mod checkpoint_load;
mod checkpoint_m2bert;
mod cim_plan;
mod circuit_chain;
mod circuit_hmm;
mod conformance_core;
mod core_linear;
mod core_monarch;
mod core_properties;
mod determinism;
mod determinism_modules;
mod gs_layers;
mod hostile_round_two;
mod kernels;
mod mixer_api;
mod mixer_conformance;
mod mixer_layers;
mod more_adapters;
mod never_panics;
mod never_panics_modules;
mod pk_layers;
mod project_fast;
