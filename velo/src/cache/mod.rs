//! `velo cache`: content-keyed snapshots of Cargo's `target/` directory.
//!
//! This first part is the [`key`]: what a snapshot is filed under. Saving, restoring and the
//! freshness rules build on it.

pub mod key;
