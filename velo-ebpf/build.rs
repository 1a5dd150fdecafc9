//! Compiles the kernel programs (bpf/velo.bpf.c) with clang into `$OUT_DIR/velo.bpf.o`.
//!
//! When clang or the BPF headers are missing the build still succeeds: the object is empty and
//! `VELO_EBPF_UNAVAILABLE` holds the reason, which `velo trace --backend ebpf` reports at run
//! time with the command that fixes it. (Installing clang afterwards needs
//! `cargo clean -p velo-ebpf`, so this script does not rerun on every build while it is absent.)

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/velo.bpf.c");
    println!("cargo:rerun-if-changed=bpf/event.h");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("velo.bpf.o");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let unavailable = |reason: String| {
        std::fs::write(&out, b"").expect("writing the empty object");
        println!("cargo:rustc-env=VELO_EBPF_UNAVAILABLE={reason}");
        if os == "linux" {
            println!("cargo:warning=velo-ebpf: {reason}");
        }
    };
    if os != "linux" || arch != "x86_64" {
        unavailable(format!(
            "the kernel programs are written for Linux on x86_64, not {os} on {arch}"
        ));
        return;
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let result = Command::new(&clang)
        .args([
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-g",
            "-O2",
            "-Wall",
        ])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg("bpf/velo.bpf.c")
        .arg("-o")
        .arg(&out)
        .output();
    match result {
        Ok(o) if o.status.success() => println!("cargo:rustc-env=VELO_EBPF_UNAVAILABLE="),
        Ok(o) => unavailable(format!(
            "{clang} could not compile bpf/velo.bpf.c (apt-get install -y clang libbpf-dev): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.contains("error"))
                .unwrap_or("")
                .trim()
        )),
        Err(e) => unavailable(format!(
            "{clang} is not available ({e}): the eBPF backend was not built (apt-get install -y clang libbpf-dev, then cargo clean -p velo-ebpf)"
        )),
    }
}
