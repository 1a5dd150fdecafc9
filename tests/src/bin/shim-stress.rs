//! `shim-stress ROOT SCRATCH THREADS ITERATIONS`: hammers the shim from many threads at once.
//!
//! ROOT holds directories `d0`..`d7`, each with a file `f` containing its own name; SCRATCH is a
//! file outside ROOT. Every thread mixes open/read, stat, getcwd and chdir on ROOT paths (canonical
//! under the shim) and on SCRATCH (never translated), and every so often starts a fork/exec chain
//! (`sh -c 'sh -c pwd'`, and `execl` from a forked child). Every answer is checked; the program
//! prints a summary that does not depend on ROOT or on timing, so a run under the shim must print
//! exactly what a native run on the physical directory prints.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const DIRS: usize = 8;

#[derive(Default)]
struct Counts {
    opens: AtomicU64,
    stats: AtomicU64,
    getcwds: AtomicU64,
    chdirs: AtomicU64,
    spawns: AtomicU64,
    errors: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, scratch, threads, iterations] = &args[..] else {
        eprintln!("usage: shim-stress ROOT SCRATCH THREADS ITERATIONS");
        std::process::exit(2);
    };
    let root = PathBuf::from(root);
    let scratch = PathBuf::from(scratch);
    let threads: usize = threads.parse().unwrap();
    let iterations: usize = iterations.parse().unwrap();
    let counts = Counts::default();
    let scratch_len = std::fs::metadata(&scratch).unwrap().len();
    let dirs: Vec<PathBuf> = (0..DIRS).map(|k| root.join(format!("d{k}"))).collect();

    let fail = |what: String| {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        let root = root.to_string_lossy();
        eprintln!("ERROR {}", what.replace(&*root, "<ROOT>"));
    };

    std::env::set_current_dir(&dirs[0]).unwrap();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (dirs, counts, fail, scratch) = (&dirs, &counts, &fail, &scratch);
            s.spawn(move || {
                for i in 0..iterations {
                    let k = (t * 7 + i) % DIRS;
                    let dir = &dirs[k];
                    match i % 4 {
                        0 => {
                            counts.opens.fetch_add(1, Ordering::Relaxed);
                            match std::fs::read_to_string(dir.join("f")) {
                                Ok(s) if s == format!("d{k}") => {}
                                other => {
                                    fail(format!("read {}: {other:?}", dir.join("f").display()))
                                }
                            }
                            if std::fs::read(scratch).map(|b| b.len() as u64).ok()
                                != Some(scratch_len)
                            {
                                fail(format!("read scratch {}", scratch.display()));
                            }
                        }
                        1 => {
                            counts.stats.fetch_add(1, Ordering::Relaxed);
                            match std::fs::metadata(dir.join("f")) {
                                Ok(m) if m.len() == 2 => {}
                                other => {
                                    fail(format!("stat {}: {other:?}", dir.join("f").display()))
                                }
                            }
                            match std::fs::symlink_metadata(dir) {
                                Ok(m) if m.is_dir() => {}
                                other => fail(format!("lstat {}: {other:?}", dir.display())),
                            }
                        }
                        2 => {
                            counts.getcwds.fetch_add(1, Ordering::Relaxed);
                            // Other threads chdir concurrently: any of the dirs is right.
                            match std::env::current_dir() {
                                Ok(cwd) if dirs.contains(&cwd) => {}
                                other => fail(format!("getcwd: {other:?}")),
                            }
                        }
                        _ => {
                            counts.chdirs.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = std::env::set_current_dir(dir) {
                                fail(format!("chdir {}: {e}", dir.display()));
                            }
                        }
                    }
                    if i % 250 == 0 {
                        counts.spawns.fetch_add(1, Ordering::Relaxed);
                        spawn_chain(dir, k, fail);
                    }
                }
            });
        }
    });
    counts.spawns.fetch_add(1, Ordering::Relaxed);
    execl_chain(&dirs[2], &fail);

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "threads={threads} opens={} stats={} getcwds={} chdirs={} spawns={} errors={}",
        c(&counts.opens),
        c(&counts.stats),
        c(&counts.getcwds),
        c(&counts.chdirs),
        c(&counts.spawns),
        c(&counts.errors)
    );
    if c(&counts.errors) > 0 {
        std::process::exit(1);
    }
}

/// `sh -c 'sh -c "pwd; cat f"'` started in `dir`: two execs deep, relative and absolute paths.
fn spawn_chain(dir: &Path, k: usize, fail: &dyn Fn(String)) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec sh -c '/bin/pwd; cat f; cat {}/f'",
            dir.display()
        ))
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output();
    let want = format!("{}\nd{k}d{k}", dir.display());
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout) == want => {}
        other => fail(format!("spawn chain in {}: {other:?}", dir.display())),
    }
}

/// fork + `execl("/bin/cat", "cat", file, NULL)` from the child: the C-variadic exec path.
fn execl_chain(dir: &Path, fail: &dyn Fn(String)) {
    let file = CString::new(dir.join("f").as_os_str().as_bytes()).unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe + fork + execl in the child, which only calls async-signal-safe functions.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            libc::dup2(fds[1], 1);
            libc::execl(
                c"/bin/cat".as_ptr(),
                c"cat".as_ptr(),
                file.as_ptr(),
                std::ptr::null::<libc::c_char>(),
            );
            libc::_exit(127);
        }
        libc::close(fds[1]);
        let mut out = String::new();
        let mut pipe = <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]);
        pipe.read_to_string(&mut out).unwrap();
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if out != "d2" || status != 0 {
            fail(format!(
                "execl cat {}: {out:?} status {status}",
                dir.display()
            ));
        }
    }
}
