//! The Linux hooks. Each exported function is a row of the interception table
//! (`velo_intercept::table`); a test checks the built library's exports against it both ways.
//!
//! - [`fs`]: calls that take paths in (open, the stat family in both glibc ABIs, access,
//!   mkdir/unlink/rename/link/symlink, chmod/chown/utimes, xattrs, opendir, chdir, dlopen, …);
//! - [`out`]: calls that hand paths back (getcwd, readlink, realpath, …);
//! - [`exec`]: exec and posix_spawn, which also carry the projection into the new program;
//! - [`variadic`]: `open`/`openat` with their optional mode, and the `execl` trampolines.

pub mod dirs;
mod exec;
mod fs;
mod mirage;
mod out;
mod variadic;

/// Defines hooks whose only job is to translate some path arguments inbound and call the real
/// function: `fn name(args) -> Ret; in(path_args) [at(dirfd_args)];`. `at` names the descriptors
/// relative paths start from (one per path; with two paths and one descriptor it belongs to the
/// second, as in `symlinkat`). In Mode B the function's name says whether it writes
/// ([`crate::path::Op::of`]).
macro_rules! inbound {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; in($($path:ident),+) $(at($($fd:ident),+))?;
    )*) => {$(
        $crate::hooks::unless_omitted!($name,
        $(#[$meta])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            static REAL: $crate::real::Real = $crate::real::Real::new(concat!(stringify!($name), "\0"));
            type F = unsafe extern "C" fn($($ty),*) -> $ret;
            #[allow(dead_code, reason = "two-path rows use TARGET_FIRST, one-path rows OP")]
            const OP: $crate::path::Op = $crate::path::Op::of(stringify!($name));
            #[allow(dead_code, reason = "as above")]
            const TARGET_FIRST: bool = $crate::path::Op::target_first(stringify!($name));
            #[allow(dead_code, reason = "as above")]
            const RENAMES: bool = $crate::path::Op::renames(stringify!($name));
            $crate::hooks::inbound!(@call OP, (TARGET_FIRST, RENAMES), ($($path),+) ($($($fd),+)?) {
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
    (@call $op:ident, ($t:ident, $r:ident), ($p:ident) () $body:block) => {
        $crate::path::in1_at($op, libc::AT_FDCWD, $p, |$p| $body)
    };
    (@call $op:ident, ($t:ident, $r:ident), ($p:ident) ($fd:ident) $body:block) => {
        $crate::path::in1_at($op, $fd, $p, |$p| $body)
    };
    (@call $op:ident, ($t:ident, $r:ident), ($a:ident, $b:ident) () $body:block) => {
        $crate::path::in2_at($t, $r, libc::AT_FDCWD, $a, libc::AT_FDCWD, $b, |$a, $b| $body)
    };
    (@call $op:ident, ($t:ident, $r:ident), ($a:ident, $b:ident) ($fb:ident) $body:block) => {
        $crate::path::in2_at($t, $r, libc::AT_FDCWD, $a, $fb, $b, |$a, $b| $body)
    };
    (@call $op:ident, ($t:ident, $r:ident), ($a:ident, $b:ident) ($fa:ident, $fb:ident) $body:block) => {
        $crate::path::in2_at($t, $r, $fa, $a, $fb, $b, |$a, $b| $body)
    };
}

pub(crate) use inbound;

// `unless_omitted!(name, item)`: the item, unless the test build omits `name` (see build.rs).
include!(concat!(env!("OUT_DIR"), "/omit.rs"));
pub(crate) use unless_omitted;
