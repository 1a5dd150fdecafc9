// A build script that prints no `cargo:rerun-if-changed`, as many published crates' do: Cargo
// then fingerprints the whole package by the newest mtime of its files, which every clone
// changes. velo's restore sets those mtimes back when the files are byte-identical.
fn main() {
    let profile = std::env::var("PROFILE").expect("PROFILE");
    println!("cargo:rustc-env=STAMP_PROFILE={profile}");
}
