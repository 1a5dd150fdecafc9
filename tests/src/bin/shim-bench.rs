//! `shim-bench PATH ITERATIONS`: nanoseconds per `stat` and per `open`+`close` of PATH, called
//! straight through libc (no std wrappers), for `cargo xtask bench shim`. Run it natively and
//! under `LD_PRELOAD=libvelo_shim.so` on the same path to see what a hook adds.

use std::ffi::CString;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, iterations] = &args[..] else {
        eprintln!("usage: shim-bench PATH ITERATIONS");
        std::process::exit(2);
    };
    let path = CString::new(path.as_str()).unwrap();
    let n: u32 = iterations.parse().unwrap();
    // SAFETY: stat/open/close on a NUL-terminated path with a zeroed stat buffer.
    let stat_ns = best_of(5, || unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(libc::stat(path.as_ptr(), &mut st), 0);
        }
        t.elapsed().as_nanos() as f64 / n as f64
    });
    // SAFETY: as above.
    let open_ns = best_of(5, || unsafe {
        let t = Instant::now();
        for _ in 0..n {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0);
            libc::close(fd);
        }
        t.elapsed().as_nanos() as f64 / n as f64
    });
    println!("{{\"stat_ns\": {stat_ns:.1}, \"open_ns\": {open_ns:.1}}}");
}

fn best_of(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}
