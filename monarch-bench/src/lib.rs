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

/// Whether `--flag` is among the command-line arguments.
pub fn has_flag(flag: &str) -> bool {
    std::env::args().skip(1).any(|a| a == flag)
}
