//! The profile the sample was built with, stamped by a build script.

pub const PROFILE: &str = env!("STAMP_PROFILE");
