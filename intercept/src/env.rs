//! The environment that carries a projection to a process tree.
//!
//! A projection is not global state: each process tree reads its own mapping from these
//! variables, so two terminals may project two different directories to the same canonical root
//! at the same time. The shim re-adds them (and `LD_PRELOAD`) to the environment of every program
//! it starts, even when the parent passes an environment of its own.

/// The canonical root the project appears at. Optional: [`DEFAULT_CANONICAL_ROOT`] when unset.
pub const CANONICAL_ROOT: &str = "VRIFT_CANONICAL_ROOT";

/// The physical directory the canonical root stands for. The shim is a pass-through without it.
pub const PHYSICAL_ROOT: &str = "VRIFT_PHYSICAL_ROOT";

/// More roots to project, as `CANONICAL=PHYSICAL` entries separated by `:` (at most three;
/// neither side may contain `:` or `=`). `velo inception` uses it to present `CARGO_HOME` at
/// [`CARGO_HOME_ROOT`], so registry sources have one name on every machine.
pub const EXTRA_ROOTS: &str = "VRIFT_EXTRA_ROOTS";

/// Where `velo inception` presents `CARGO_HOME`.
pub const CARGO_HOME_ROOT: &str = "/cargo-home";

/// Where every project appears under `velo inception`.
pub const DEFAULT_CANONICAL_ROOT: &str = "/vrift_workspace";

/// Overrides the shim library `velo` loads (`libvelo_shim.so`).
pub const SHIM_PATH: &str = "VELO_SHIM";

/// The file name of the shim library on Linux.
pub const SHIM_FILE_NAME: &str = "libvelo_shim.so";
