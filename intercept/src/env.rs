//! The environment that carries a projection to a process tree.
//!
//! A projection is not global state: each process tree reads its own mapping from these
//! variables, so two terminals may project two different directories to the same canonical root
//! at the same time. The shim re-adds them (and `LD_PRELOAD`) to the environment of every program
//! it starts, even when the parent passes an environment of its own.

//!
//! Every variable velo and the shim exchange is named here, once: velo sets them by
//! [`Var::name`], the shim reads them with `getenv` by [`Var::c`] and re-adds them by
//! [`Var::bytes`].

use core::ffi::CStr;

/// An environment variable's name, usable as `&str`, as a C string and as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(&'static CStr);

impl Var {
    /// The name, NUL-terminated, for `getenv(3)`.
    pub const fn c(self) -> &'static CStr {
        self.0
    }

    /// The name as bytes, without the NUL: how an `environ` entry starts (before its `=`).
    pub const fn bytes(self) -> &'static [u8] {
        self.0.to_bytes()
    }

    pub const fn name(self) -> &'static str {
        match core::str::from_utf8(self.0.to_bytes()) {
            Ok(name) => name,
            Err(_) => panic!("variable names are ASCII"),
        }
    }
}

impl core::fmt::Display for Var {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The canonical root the project appears at. Optional: [`DEFAULT_CANONICAL_ROOT`] when unset.
pub const CANONICAL_ROOT: Var = Var(c"VRIFT_CANONICAL_ROOT");

/// The physical directory the canonical root stands for. The shim is a pass-through without it.
pub const PHYSICAL_ROOT: Var = Var(c"VRIFT_PHYSICAL_ROOT");

/// More roots to project, as `CANONICAL=PHYSICAL` entries separated by `:` (at most three;
/// neither side may contain `:` or `=`). `velo inception` uses it to present `CARGO_HOME` at
/// [`CARGO_HOME_ROOT`], so registry sources have one name on every machine.
pub const EXTRA_ROOTS: Var = Var(c"VRIFT_EXTRA_ROOTS");

/// Set by `velo inception` (and `velo trace --inception`) to the physical project root: a
/// nested velo knows it already runs projected.
pub const INCEPTION: Var = Var(c"VELO_INCEPTION");

/// Mode B (`velo run --mode shim`): the tree's image (see [`crate::mirage`]).
pub const MIRAGE: Var = Var(c"VELO_MIRAGE");

/// Mode B: the absolute path the tree appears at.
pub const MIRAGE_AT: Var = Var(c"VELO_MIRAGE_AT");

/// Mode B: an empty host directory, the process's real working directory.
pub const MIRAGE_EMPTY: Var = Var(c"VELO_MIRAGE_EMPTY");

/// Mode B: where writes under the tree go (`--upper`); unset, they fail with `EROFS`.
pub const MIRAGE_UPPER: Var = Var(c"VELO_MIRAGE_UPPER");

/// Mode B: the working directory inside the tree, carried across `exec`.
pub const MIRAGE_CWD: Var = Var(c"VELO_MIRAGE_CWD");

/// The dynamic loader's preload list, which carries the shim into every program.
pub const LD_PRELOAD: Var = Var(c"LD_PRELOAD");

/// Where `velo inception` presents `CARGO_HOME`.
pub const CARGO_HOME_ROOT: &str = "/cargo-home";

/// Where every project appears under `velo inception`.
pub const DEFAULT_CANONICAL_ROOT: &str = "/vrift_workspace";

/// Overrides the shim library `velo` loads (`libvelo_shim.so`).
pub const SHIM_PATH: Var = Var(c"VELO_SHIM");

/// The file name of the shim library on Linux.
pub const SHIM_FILE_NAME: &str = "libvelo_shim.so";
