//! Compiles the C-variadic entry points (`execl`, `execle`, `execlp`): stable Rust cannot define
//! a C-variadic function, and reading `va_list` by hand would be wrong on some ABIs. The C side
//! only gathers the arguments and calls the fixed-arity hooks written in Rust. Also compiles the
//! hidden unwinder stubs that spare every projected process libgcc_s (c/unwind.c).
//!
//! Also writes `omit.rs`: for tests of `velo audit`'s feedback loop, `VELO_SHIM_OMIT=access,…`
//! builds a shim without those (inbound) hooks, so that the audit must notice the missing rows.
//! Unset, as in every normal build, nothing is omitted.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=c/variadic.c");
    println!("cargo:rerun-if-changed=c/unwind.c");
    println!("cargo:rerun-if-env-changed=VELO_SHIM_OMIT");
    let omit = std::env::var("VELO_SHIM_OMIT").unwrap_or_default();
    let mut rules = String::from(
        "/// Drops the hooks named in VELO_SHIM_OMIT at build time; keeps every other one.\n\
         macro_rules! unless_omitted {\n",
    );
    for name in omit.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "VELO_SHIM_OMIT: {name:?} is not a symbol name"
        );
        let _ = writeln!(rules, "    ({name}, $($item:tt)*) => {{}};");
    }
    rules.push_str("    ($name:ident, $($item:tt)*) => { $($item)* };\n}\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{out}/omit.rs"), rules).expect("writing omit.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        cc::Build::new()
            .file("c/variadic.c")
            .file("c/unwind.c")
            .flag_if_supported("-fvisibility=hidden")
            .warnings(true)
            .extra_warnings(true)
            .cargo_metadata(false)
            .compile("velo_shim_c");
        // Whole: nothing in Rust names the unwinder stubs, and they must be linked before std's
        // references to `_Unwind_*` would pull in libgcc_s (see c/unwind.c).
        println!("cargo:rustc-link-search=native={out}");
        println!("cargo:rustc-link-lib=static:+whole-archive=velo_shim_c");
    }
}
