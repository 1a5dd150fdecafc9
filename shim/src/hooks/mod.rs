//! The Linux hooks. Each exported function is a row of the interception table
//! (`velo_intercept::table`); a test checks the built library's exports against it both ways.
//!
//! - [`fs`]: calls that take paths in (open, the stat family in both glibc ABIs, access,
//!   mkdir/unlink/rename/link/symlink, chmod/chown/utimes, xattrs, opendir, chdir, dlopen, …);
//! - [`out`]: calls that hand paths back (getcwd, readlink, realpath, …);
//! - [`exec`]: exec and posix_spawn, which also carry the projection into the new program;
//! - [`variadic`]: `open`/`openat` with their optional mode, and the `execl` trampolines.

mod exec;
mod fs;
mod out;
mod variadic;

/// Defines hooks whose only job is to translate some path arguments inbound and call the real
/// function: `fn name(args) -> Ret; in(path_args);`.
macro_rules! inbound {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; in($($path:ident),+);
    )*) => {$(
        $crate::hooks::unless_omitted!($name,
        $(#[$meta])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            static REAL: $crate::real::Real = $crate::real::Real::new(concat!(stringify!($name), "\0"));
            type F = unsafe extern "C" fn($($ty),*) -> $ret;
            $crate::hooks::inbound!(@call ($($path),+) {
                // SAFETY: `F` is the symbol's C signature, and the arguments are the program's,
                // with canonical paths replaced by physical ones of the same kind.
                match unsafe { REAL.get::<F>() } {
                    Some(real) => unsafe { real($($arg),*) },
                    None => $crate::real::fail(libc::ENOSYS),
                }
            })
        }
        );
    )*};
    (@call ($p:ident) $body:block) => {
        $crate::path::in1($p, |$p| $body)
    };
    (@call ($a:ident, $b:ident) $body:block) => {
        $crate::path::in2($a, $b, |$a, $b| $body)
    };
}

pub(crate) use inbound;

// `unless_omitted!(name, item)`: the item, unless the test build omits `name` (see build.rs).
include!(concat!(env!("OUT_DIR"), "/omit.rs"));
pub(crate) use unless_omitted;
