//! `cargo xtask test`: build every binary the end-to-end tests drive (velo, `libvelo_shim.so`,
//! the helpers in tests/src/bin), then run all tests.
//!
//! On CI (`CI=true`) it sets `VELO_MUST_WORK=1`, which turns every "skipped: needs root /
//! namespaces" into a failure: on CI every test must really run.

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
    exec(&mut test)
}
