//! The `velo` command. Parsing and rendering live in `cli/`; the work is in the library.
//!
//! Exit codes: 0 success; 1 a check found a problem (`status --verify` found corruption,
//! `manifest diff` found differences); 2 an error (bad input, I/O failure).

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: an ingest allocates on every core, and glibc grows each
/// thread's heap a page at a time, with an `mprotect` per page (2,700 of them in a re-ingest
/// of /usr/share), and frees another thread's blocks under that thread's arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
