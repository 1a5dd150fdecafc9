//! `cargo xtask <task>`: the project's automation, one module per task.
//!
//! - `demo`: build velo and run its main job on the bundled sample project.
//! - `test`: build every binary, then run the whole test suite (what CI runs).
//! - `busybox`: build `busybox.velo`, a static base image for `velo run --isolate`.
//! - `bench <area>`: measure velo against the peer tool on the same data in one run and write
//!   the ratios to `reports/`.
//! - `reports`: example `velo audit` reports in every format, from real runs, into `reports/`.

mod bench;
mod busybox;
mod demo;
mod reports;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "velo's project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build velo and run its main job on the bundled sample project (examples/sample).
    Demo(demo::Options),
    /// Build all binaries and run every test (CI runs exactly this).
    Test(test::Options),
    /// Measure velo against its peer tools; results go to reports/.
    Bench(bench::Options),
    /// Build busybox.velo, a static base image (installs busybox-static when missing).
    Busybox(busybox::Options),
    /// Write example `velo audit` reports (table, JSON, SARIF, Markdown) to reports/.
    Reports,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Demo(opts) => demo::run(opts),
        Task::Test(opts) => test::run(opts),
        Task::Bench(opts) => bench::run(opts),
        Task::Busybox(opts) => busybox::run(opts),
        Task::Reports => reports::run(),
    }
}
