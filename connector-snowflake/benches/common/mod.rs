//! What the Snowflake benches share: their arguments and the median of rounds.

/// Whether cargo bench runs this (`--bench`), and the size asked for: the first number
/// among the arguments, else `full` under cargo bench and `smoke` otherwise.
pub fn size(full: usize, smoke: usize) -> (bool, usize) {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { full } else { smoke });
    (bench, n)
}

/// Rounds to run: `MOODBRIDGE_BENCH_ROUNDS` (3) under cargo bench, else 1.
pub fn rounds(bench: bool) -> usize {
    if bench {
        std::env::var("MOODBRIDGE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    }
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
