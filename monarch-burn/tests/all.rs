//! The monarch-burn test suite, one binary (one link of burn and its backends): every module
//! against the core crate, and a training run. `MONARCH_BURN_DEVICE=wgpu` (or `cuda`) runs it on
//! that backend in a build with the feature.

mod common;

mod adapters;
mod attention;
mod gsoft;
mod linear;
mod mixer;
mod training;
