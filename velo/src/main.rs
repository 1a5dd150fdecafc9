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
            eprintln!("velo: error: {}", render(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by `: `, each said once: a library error that already
/// names its cause (`opening X: No such file…`) is not followed by that cause again.
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(velo::store::Error::io("opening", "x", io()))
            .context("reading the manifest");
        assert_eq!(
            super::render(&err),
            "reading the manifest: opening x: No such file or directory (os error 2)"
        );
        let plain = anyhow::Error::new(io()).context("opening y");
        assert_eq!(
            super::render(&plain),
            "opening y: No such file or directory (os error 2)"
        );
    }
}
