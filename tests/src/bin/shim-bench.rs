//! Timing helper for `cargo xtask bench shim`.
//!
//! - `shim-bench PATH ITERATIONS`: nanoseconds per `stat` and per `open`+`close` of PATH, called
//!   straight through libc. Run natively and under `LD_PRELOAD=libvelo_shim.so` on the same path.
//! - `shim-bench --in-process SHIM HOOK_PATH LIBC_PATH ITERATIONS`: loads the shim with
//!   `dlopen(RTLD_LOCAL)` (so it does not interpose on anything) and alternates short blocks of
//!   calls to libc's `stat` and `open` on LIBC_PATH and to the shim's hooks of the same name on
//!   HOOK_PATH (the same file, canonical or not), in one process: what a hook adds, without the
//!   run-to-run noise of comparing two processes.

use std::ffi::CString;
use std::time::Instant;

type Stat = unsafe extern "C" fn(*const libc::c_char, *mut libc::stat) -> libc::c_int;
type Open = unsafe extern "C" fn(*const libc::c_char, libc::c_int, libc::mode_t) -> libc::c_int;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match &args[1..] {
        [flag, shim, hook_path, libc_path, n] if flag == "--in-process" => {
            in_process(shim, hook_path, libc_path, n.parse().unwrap())
        }
        [path, n] => separate(path, n.parse().unwrap()),
        _ => {
            eprintln!(
                "usage: shim-bench PATH ITERATIONS | shim-bench --in-process SHIM HOOK_PATH LIBC_PATH ITERATIONS"
            );
            std::process::exit(2);
        }
    }
}

/// ns per call of `stat` and of `open`+`close` through the given functions, over `n` calls.
fn time_calls(stat: Stat, open: Open, path: &CString, n: u32) -> (f64, f64) {
    // SAFETY: stat/open/close on a NUL-terminated path with a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(stat(path.as_ptr(), &mut st), 0);
        }
        let stat_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let fd = open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
            assert!(fd >= 0);
            libc::close(fd);
        }
        (stat_ns, t.elapsed().as_nanos() as f64 / n as f64)
    }
}

fn libc_fns() -> (Stat, Open) {
    // SAFETY: libc's own `stat`; `open` is variadic in C, but its mode travels in the third
    // argument register on Linux x86_64/aarch64, and it is only read with O_CREAT.
    unsafe {
        (
            libc::stat as Stat,
            std::mem::transmute::<*const (), Open>(libc::open as *const ()),
        )
    }
}

fn separate(path: &str, n: u32) {
    let path = CString::new(path).unwrap();
    let (stat, open) = libc_fns();
    let (mut s, mut o) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        let (a, b) = time_calls(stat, open, &path, n);
        (s, o) = (s.min(a), o.min(b));
    }
    println!("{{\"stat_ns\": {s:.1}, \"open_ns\": {o:.1}}}");
}

fn in_process(shim: &str, hook_path: &str, libc_path: &str, n: u32) {
    let lib = CString::new(shim).unwrap();
    let (hook_path, libc_path) = (
        CString::new(hook_path).unwrap(),
        CString::new(libc_path).unwrap(),
    );
    // SAFETY: loading a library by path; RTLD_LOCAL keeps its symbols out of the global scope.
    let (stat_hook, open_hook) = unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "dlopen {shim} failed");
        let stat = libc::dlsym(handle, c"stat".as_ptr());
        let open = libc::dlsym(handle, c"open".as_ptr());
        assert!(!stat.is_null() && !open.is_null());
        (
            std::mem::transmute::<*mut libc::c_void, Stat>(stat),
            std::mem::transmute::<*mut libc::c_void, Open>(open),
        )
    };
    let (stat, open) = libc_fns();
    let block = 20_000;
    let mut best = [f64::INFINITY; 4];
    for _ in 0..(n / block).max(1) {
        let (a, b) = time_calls(stat, open, &libc_path, block);
        let (c, d) = time_calls(stat_hook, open_hook, &hook_path, block);
        for (slot, v) in best.iter_mut().zip([a, b, c, d]) {
            *slot = slot.min(v);
        }
    }
    let [s, o, hs, ho] = best;
    println!(
        "{{\"stat_ns\": {s:.1}, \"open_ns\": {o:.1}, \"hook_stat_ns\": {hs:.1}, \"hook_open_ns\": {ho:.1}}}"
    );
}
