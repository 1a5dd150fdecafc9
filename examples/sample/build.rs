// A build script, so that the sample has what makes real projects hard to cache: build-script
// output that Cargo compares when deciding freshness, with an absolute path in it, as many real
// build scripts print (built from CARGO_MANIFEST_DIR).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let input = format!("{dir}/assets/greeting.txt");
    println!("cargo:rerun-if-changed={input}");
    let greeting = std::fs::read_to_string(&input).expect("assets/greeting.txt");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("greeting.rs");
    std::fs::write(out, format!("pub const GREETING: &str = {:?};\n", greeting.trim())).expect("write");
}
