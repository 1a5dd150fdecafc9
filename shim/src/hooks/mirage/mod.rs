//! Hooks that answer for Mode B's virtual tree themselves (see [`crate::mirage`]): opening, the
//! stat and access families, the working directory, `dlopen`, and the descriptors of virtual
//! directories (`fstat`, `close`). Outside the tree, or with no mirage, each behaves exactly as
//! the plain inbound hook did: canonical paths translated, everything else passed through.

/// Calls the real function named by `$real` (a `static Real`) as type `$ty` with `$args`.
macro_rules! real {
    ($real:ident: $ty:ty, $($arg:expr),*) => {
        // SAFETY: `$ty` is the symbol's C signature; the arguments are the program's or ours of
        // the same kind.
        match unsafe { $real.get::<$ty>() } {
            Some(f) => unsafe { f($($arg),*) },
            None => fail(libc::ENOSYS),
        }
    };
}

mod descriptors;
mod dlopen;
mod open;
mod stat;

pub use open::open_at;
pub use stat::{faccessat, stat, stat64};
