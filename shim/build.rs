//! Compiles the C-variadic entry points (`execl`, `execle`, `execlp`): stable Rust cannot define
//! a C-variadic function, and reading `va_list` by hand would be wrong on some ABIs. The C side
//! only gathers the arguments and calls the fixed-arity hooks written in Rust.

fn main() {
    println!("cargo:rerun-if-changed=c/variadic.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        cc::Build::new()
            .file("c/variadic.c")
            .flag_if_supported("-fvisibility=hidden")
            .warnings(true)
            .extra_warnings(true)
            .compile("velo_shim_variadic");
    }
}
