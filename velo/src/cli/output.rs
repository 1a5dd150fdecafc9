//! Shared output helpers: byte sizes, tables, progress bars, JSON.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub use velo::human::{bytes, table};

/// A progress bar on stderr when it is a terminal, else a hidden one, counting bytes: toward
/// `len`, or with a spinner when the total is unknown.
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(
                "{spinner} {msg}: {binary_bytes} ({binary_bytes_per_sec})",
            )
            .expect("valid template"),
        ),
    };
    bar.set_message(what.to_owned());
    bar
}

/// A bar the library's long work drives ([`velo::cache::Progress`]): drawn by [`progress`] when
/// work starts, cleared when it ends.
#[derive(Default)]
pub struct Bar(std::sync::Mutex<Option<ProgressBar>>);

impl velo::cache::Progress for Bar {
    fn start(&self, what: &'static str, total: Option<u64>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress(total, what));
    }
    fn advance(&self, bytes: u64) {
        // A clone of the bar (an Arc) so that the lock is not held while it draws.
        let bar = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(bar) = bar {
            bar.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// `value` as JSON with `--json`, else its text report, on stdout.
pub fn show<T: Serialize>(
    json_wanted: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json_wanted {
        json(value)
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text(value).as_bytes())?;
        Ok(())
    }
}

/// Pretty JSON on stdout, newline-terminated.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
