//! The `velo` command. Parsing and rendering live in `cli/`; the work is in the library.
//!
//! Exit codes: 0 success; 1 a check found a problem (`status --verify` found corruption,
//! `manifest diff` found differences); 2 an error (bad input, I/O failure).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::init_logging();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`velo manifest show x | head`) is not an error.
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("velo: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
