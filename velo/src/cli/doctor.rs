//! `velo doctor`

use std::process::ExitCode;

use anyhow::Result;

use super::output;

/// What this machine lets velo do: namespaces and OverlayFS for `velo run` and `--isolate`.
///
/// Each check names the setting involved and how to change it. Exit status 1 when a check
/// fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let checks = velo::doctor::checks();
    let code = if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.json {
        output::json(&checks)?;
        return Ok(code);
    }
    let mut table = output::table(["check", "", "detail"]);
    for c in &checks {
        table.add_row([c.name, if c.ok { "ok" } else { "FAIL" }, &c.detail]);
    }
    println!("{table}");
    Ok(code)
}
