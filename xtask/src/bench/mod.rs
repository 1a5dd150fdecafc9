//! `cargo xtask bench <area>`: velo against its peer tools, same data, same run.
//!
//! Each area prints a table of medians and ratios and writes it to `reports/bench-<area>.md`.
//! Nothing here asserts on timings: the targets are printed next to the measurements.

mod store;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Options {
    #[arg(value_enum)]
    area: Area,
    /// Repetitions of each timed command (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Files in the generated tree.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Where to put the data and stores [default: a temporary directory, removed afterwards].
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Area {
    /// Ingest (cold and unchanged) vs `cp -a`; durability modes; hashing vs reading.
    Store,
}

pub fn run(opts: Options) -> Result<()> {
    match opts.area {
        Area::Store => store::run(&opts),
    }
}

/// Median of durations in seconds.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
