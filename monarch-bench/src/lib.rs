//! Benchmarks and comparisons for `monarch-matrix`: the criterion suites in `benches/` and the
//! report examples in `examples/` share the few helpers here.

/// The CPU model as the operating system names it (`model name` in `/proc/cpuinfo` on Linux),
/// so every printed figure carries the machine it was measured on. Falls back to the target
/// architecture where the name cannot be read.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

use std::time::Instant;

/// Repetitions of `f` (after one warm-up call) that last at least `min_s`.
pub fn calibrate(f: &mut dyn FnMut(), min_s: f64) -> usize {
    f();
    let mut reps = 1usize;
    while trial(f, reps) * (reps as f64) < min_s && reps <= 1 << 20 {
        reps *= 2;
    }
    reps
}

/// Seconds per call of `reps` back-to-back calls of `f`.
pub fn trial(f: &mut dyn FnMut(), reps: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

/// Whether `--flag` is among the command-line arguments.
pub fn has_flag(flag: &str) -> bool {
    std::env::args().skip(1).any(|a| a == flag)
}

/// The power of two nearest to `√n` (at least 1): the block size `b ≈ √N` every attention and
/// Monarch benchmark here uses.
pub fn block_for(n: usize) -> usize {
    (2f64.powf((n as f64).sqrt().log2().round()) as usize).max(1)
}

pub mod legacy_fft;
