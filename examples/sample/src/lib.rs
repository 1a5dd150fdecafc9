//! The sample project velo's demo works on.

include!(concat!(env!("OUT_DIR"), "/greeting.rs"));

pub fn greet(name: &str) -> String {
    format!("{GREETING}, {name}!")
}

/// The profile this build used (from the `stamp` package's build script).
pub fn built_for() -> &'static str {
    stamp::PROFILE
}
