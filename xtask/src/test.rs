//! `cargo xtask test`: build every binary the end-to-end tests drive (velo, `libvelo_shim.so`,
//! the helpers in tests/src/bin), then run all tests.
//!
//! On CI (`CI=true`) it sets `VELO_MUST_WORK=1`, which turns every "skipped: needs root /
//! namespaces" into a failure: on CI every test must really run. Elsewhere each skip is recorded
//! in `target/velo-skips.log` (`VELO_SKIP_LOG`), and the run ends with how many tests skipped
//! and why: the test harness hides a passing test's stderr, where the skip line went.

use std::process::Command;

use anyhow::Result;

use crate::util::{exec, root};

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (for example a test name filter after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    let cargo = env!("CARGO");
    exec(Command::new(cargo).current_dir(root()).args([
        "build",
        "--workspace",
        "--lib",
        "--bins",
    ]))?;
    let mut test = Command::new(cargo);
    test.current_dir(root())
        .args(["test", "--workspace"])
        .args(&opts.args);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        test.env("VELO_MUST_WORK", "1");
    }
    let log = root().join("target/velo-skips.log");
    let _ = std::fs::remove_file(&log);
    test.env("VELO_SKIP_LOG", &log);
    let result = exec(&mut test);
    report_skips(&log);
    result
}

/// Prints how many tests skipped, and each one's reason.
fn report_skips(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut skips: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    skips.sort();
    skips.dedup();
    eprintln!("\nxtask test: {} tests skipped", skips.len());
    for (test, reason) in skips {
        eprintln!("  {test}: {reason}");
    }
}
