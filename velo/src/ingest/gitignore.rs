//! `--gitignore`: the walk by [`ignore::WalkParallel`], for its rules of `.gitignore` files in
//! and above the tree. It reads every directory (no recorded listings) and finds entries in no
//! order, so they are sorted afterwards; the manifest is the same as [`super::walk`]'s.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use ignore::overrides::Override;
use ignore::{ParallelVisitor, ParallelVisitorBuilder, WalkState};
use rayon::slice::ParallelSliceMut;

use super::Error;
use super::entry::{At, Problem, Scratch, Shared, Type};
use super::tree::{Tree, Walked};

/// With `--gitignore`: [`ignore::WalkParallel`], for its `.gitignore` rules in and above the
/// tree; entries come in no order and are sorted afterwards.
pub(super) fn walk_with_gitignore(shared: &Shared, excludes: Override, output: &Path) -> Tree {
    let output = output.to_path_buf();
    let walker = ignore::WalkBuilder::new(shared.root)
        .standard_filters(false)
        .follow_links(false)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .parents(true)
        .overrides(excludes)
        // The manifest being written must not describe itself on the next run.
        // (The name first: comparing whole paths parses both into components.)
        .filter_entry(move |e| {
            e.file_name() != output.file_name().unwrap_or_default() || e.path() != output
        })
        .build_parallel();
    let batches = Mutex::new(Vec::new());
    walker.visit(&mut VisitorBuilder {
        shared,
        batches: &batches,
    });
    let mut entries: Vec<_> = batches
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    entries.par_sort_unstable_by(|a: &Walked, b| {
        crate::manifest::canonical_order(&a.0.path, &b.0.path)
    });
    Tree::from_walked(entries)
}

struct VisitorBuilder<'s, 'a> {
    shared: &'s Shared<'a>,
    batches: &'s Mutex<Vec<Vec<Walked>>>,
}

impl<'s> ParallelVisitorBuilder<'s> for VisitorBuilder<'s, '_> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor {
            shared: self.shared,
            batches: self.batches,
            entries: Vec::new(),
            scratch: Scratch::default(),
        })
    }
}

/// One thread of the `ignore` walker.
struct Visitor<'s, 'a> {
    shared: &'s Shared<'a>,
    batches: &'s Mutex<Vec<Vec<Walked>>>,
    entries: Vec<Walked>,
    scratch: Scratch,
}

impl Drop for Visitor<'_, '_> {
    fn drop(&mut self) {
        let unchanged = self.scratch.unchanged;
        self.shared
            .unchanged
            .fetch_add(unchanged, Ordering::Relaxed);
        let entries = std::mem::take(&mut self.entries);
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entries);
    }
}

impl ParallelVisitor for Visitor<'_, '_> {
    fn visit(&mut self, result: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        let shared = self.shared;
        if shared.failed.load(Ordering::Relaxed) {
            return WalkState::Quit;
        }
        let found = match result {
            Ok(entry) if entry.depth() == 0 => return WalkState::Continue,
            Ok(entry) => match entry.file_type() {
                Some(t) => {
                    let rel = shared.rel(entry.path()).to_vec();
                    let at = At::Path(entry.path());
                    shared.entry(at, rel, Type::of(t), None, &mut self.scratch)
                }
                None => return WalkState::Continue,
            },
            Err(err) => Err(walk_problem(err)),
        };
        match found {
            Ok(found) => {
                self.entries.extend(found);
                WalkState::Continue
            }
            Err(problem) => {
                if shared.handle(problem) {
                    WalkState::Skip
                } else {
                    WalkState::Quit
                }
            }
        }
    }
}

fn walk_problem(err: ignore::Error) -> Problem {
    // Unwrap the walker's context wrappers to the path and the I/O error.
    fn parts(err: &ignore::Error) -> (Option<&Path>, Option<&io::Error>) {
        match err {
            ignore::Error::WithPath { path, err } => (Some(path.as_path()), parts(err).1),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                parts(err)
            }
            ignore::Error::Io(e) => (None, Some(e)),
            _ => (None, None),
        }
    }
    match parts(&err) {
        (Some(path), Some(io)) if io.raw_os_error() == Some(libc::ELOOP) => {
            Problem::Fatal(Error::Source {
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ELOOP),
            })
        }
        (Some(path), Some(io)) => Problem::Unreadable(
            path.to_path_buf(),
            io.raw_os_error().map_or_else(
                || io::Error::other(io.to_string()),
                io::Error::from_raw_os_error,
            ),
        ),
        _ => Problem::Fatal(Error::Source {
            path: PathBuf::new(),
            source: io::Error::other(err.to_string()),
        }),
    }
}
