//! `libvelo_shim.so`: velo's `LD_PRELOAD` interception layer.
//!
//! This crate will hold the libc entry points velo intercepts to present a project under one
//! canonical path (`/vrift_workspace`, "inception") and, later, to serve a manifest's tree
//! straight from the store ("Mode B"). It will also hold the **interception table**, the single
//! source of truth naming every intercepted symbol, which arguments are paths, the direction of
//! translation (inbound, outbound) and the raw syscalls it ends in; the tracer and `velo audit`
//! read the same table. Hooks are held to the strictest rules in the code base: no allocation,
//! locks, output or signal changes, errno preserved, and a straight pass-through when velo's
//! environment variables are unset. Nothing is exported yet: the first hooks arrive with
//! `velo inception`.
