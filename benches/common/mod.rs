//! What the benchmarks share.

/// The `i`th positional argument (options skipped) as a number, or `default`.
pub fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}
