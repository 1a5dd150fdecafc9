// A build script, so that the sample has what makes real projects hard to cache: build-script
// output that Cargo compares when deciding freshness.
fn main() {
    println!("cargo:rerun-if-changed=assets/greeting.txt");
    let greeting = std::fs::read_to_string("assets/greeting.txt").expect("assets/greeting.txt");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("greeting.rs");
    std::fs::write(out, format!("pub const GREETING: &str = {:?};\n", greeting.trim())).expect("write");
}
