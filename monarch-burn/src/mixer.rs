//! The M2-BERT sequence mixer and gated block-diagonal MLP as burn modules (in progress).
