//! The sample project velo's demo works on.

include!(concat!(env!("OUT_DIR"), "/greeting.rs"));

pub fn greet(name: &str) -> String {
    format!("{GREETING}, {name}!")
}
