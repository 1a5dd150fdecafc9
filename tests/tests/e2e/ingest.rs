//! Ingest: dedup across trees, manifest identity from any path, the stat index and its fast path.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use velo_e2e::{Env, files_under, fingerprint_tree, generate_tree};

/// A small tree with everything a manifest records: nested dirs, an empty dir, an executable,
/// a symlink, a non-UTF-8 name and duplicate content.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("src/nested")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    fs::write(root.join("src/nested/copy.rs"), "pub fn f() {}\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("src/lib.rs", root.join("link")).unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        "latin-1 name\n",
    )
    .unwrap();
}

/// The paths of manifest `file`, in its order.
fn manifest_paths(env: &Env, file: &str) -> Vec<String> {
    let m = env.velo(["manifest", "show", file, "--json"]).ok().json();
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn same_tree_from_two_paths_has_one_id_and_one_copy() {
    let env = Env::new();
    sample_tree(&env.path().join("one"));
    sample_tree(&env.path().join("elsewhere/two"));
    let a = env.ingest_json(&["one", "-o", "a.velo"]);
    let b = env.ingest_json(&["elsewhere/two", "-o", "b.velo"]);
    assert_eq!(a["manifest_id"], b["manifest_id"]);
    assert_eq!(
        a["new_blobs"], 3,
        "4 files, and lib.rs and its copy share one blob: {a}"
    );
    assert_eq!(b["new_blobs"], 0, "second ingest stores nothing new: {b}");
    assert_eq!(b["deduplicated_bytes"], b["bytes"]);
    let blobs = files_under(&env.store().join("blobs"));
    assert_eq!(blobs.len(), 3, "{blobs:?}");

    let id = env.velo(["manifest", "id", "a.velo"]).ok().stdout();
    assert_eq!(id.trim(), a["manifest_id"].as_str().unwrap());
    // The id is the BLAKE3 of the file's bytes.
    assert_eq!(
        id.trim(),
        blake3::hash(&fs::read(env.path().join("a.velo")).unwrap())
            .to_hex()
            .as_str()
    );
}

#[test]
fn ingest_never_modifies_the_source_tree() {
    let env = Env::new();
    let src = env.path().join("src-tree");
    sample_tree(&src);
    generate_tree(&src.join("gen"), 300, 7);
    let before = fingerprint_tree(&src);
    env.velo(["ingest", "src-tree", "-o", "t.velo"]).ok();
    env.velo(["ingest", "src-tree", "-o", "t.velo"]).ok();
    assert_eq!(
        before,
        fingerprint_tree(&src),
        "bytes, modes, mtimes, inodes or link counts changed"
    );
}

#[test]
fn blobs_are_read_only_and_keep_the_executable_bit() {
    let env = Env::new();
    sample_tree(&env.path().join("t"));
    // The same content once plain and once executable needs both blob variants.
    fs::write(env.path().join("t/plain.sh"), "#!/bin/sh\necho run\n").unwrap();
    let shown = env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    drop(shown);
    let m = env
        .velo(["manifest", "show", "t.velo", "--json"])
        .ok()
        .json();
    let entry = |p: &str| {
        m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(entry("run.sh")["exec"], true);
    assert_eq!(entry("plain.sh")["exec"], false);
    assert_eq!(entry("run.sh")["hash"], entry("plain.sh")["hash"]);
    let hash = entry("run.sh")["hash"].as_str().unwrap().to_owned();
    let shard = env.store().join("blobs").join(&hash[..2]);
    let mode = |name: &str| fs::metadata(shard.join(name)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&format!("{hash}.x")), 0o555);
    assert_eq!(mode(&hash), 0o444);
    // Every blob is read-only.
    for blob in files_under(&env.store().join("blobs")) {
        let mode = fs::metadata(env.store().join("blobs").join(&blob))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "{blob:?} is writable");
    }
}

#[test]
fn manifest_records_kinds_targets_and_non_utf8_names() {
    let env = Env::new();
    sample_tree(&env.path().join("t"));
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let m = env
        .velo(["manifest", "show", "t.velo", "--json"])
        .ok()
        .json();
    let paths: Vec<_> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "caf\\xe9.txt",
            "empty",
            "link",
            "run.sh",
            "src",
            "src/lib.rs",
            "src/nested",
            "src/nested/copy.rs"
        ]
    );
    let link = &m["entries"][2];
    assert_eq!(
        (link["kind"].as_str(), link["target"].as_str()),
        (Some("symlink"), Some("src/lib.rs"))
    );
    // The raw name survives: a byte-for-byte identical tree elsewhere gives the same id, and a
    // tree whose name differs in that one byte does not.
    sample_tree(&env.path().join("u"));
    fs::rename(
        env.path()
            .join("u")
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        env.path()
            .join("u")
            .join(std::ffi::OsStr::from_bytes(b"caf\xe8.txt")),
    )
    .unwrap();
    env.velo(["ingest", "u", "-o", "u.velo"]).ok();
    let diff = env
        .velo(["manifest", "diff", "t.velo", "u.velo"])
        .run()
        .expect_code(1);
    // In canonical (bytewise) order: \xe8 before \xe9.
    assert_eq!(
        diff.stdout(),
        "+ caf\\xe8.txt (file)\n- caf\\xe9.txt (file)\n"
    );
}

#[test]
fn excludes_gitignore_and_special_files() {
    let env = Env::new();
    let t = env.path().join("t");
    sample_tree(&t);
    env.write("t/target/debug/big.o", "object");
    env.write("t/notes.log", "log");
    env.write("t/.gitignore", "ignored-by-git/\n");
    env.write("t/ignored-by-git/x", "x");
    let fifo = t.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let paths = |file: &str| manifest_paths(&env, file);
    let run = env.velo(["ingest", "t", "-o", "all.velo"]).ok();
    assert!(
        run.stderr().contains("skipped pipe: is a fifo"),
        "{}",
        run.explain()
    );
    let all = paths("all.velo");
    assert!(all.contains(&"ignored-by-git/x".to_owned()) && !all.contains(&"pipe".to_owned()));

    env.velo([
        "ingest",
        "t",
        "-o",
        "some.velo",
        "--exclude",
        "target",
        "--exclude",
        "*.log",
        "--gitignore",
    ])
    .ok();
    let some = paths("some.velo");
    for gone in [
        "target",
        "target/debug/big.o",
        "notes.log",
        "ignored-by-git",
        "ignored-by-git/x",
    ] {
        assert!(
            !some.contains(&gone.to_owned()),
            "{gone} should be excluded: {some:?}"
        );
    }
    assert!(some.contains(&"src/lib.rs".to_owned()) && some.contains(&".gitignore".to_owned()));
}

/// Without `--gitignore`, ingest walks by directory descriptors and puts the entries in
/// canonical order as it goes; with it, the `ignore` crate's walker finds them and they are
/// sorted. Both give the same manifest: for names that sort around `/`, for a directory larger
/// than one piece of the walk (64 names) with subdirectories among its files, and with
/// `--exclude` globs.
#[test]
fn both_walks_give_the_same_manifest() {
    let env = Env::new();
    let t = env.path().join("t");
    sample_tree(&t);
    // Bytewise, "a-b" and "a.b" sort before "a/x"; canonically "a" and its contents come first.
    for path in ["a/x", "a-b", "a.b/y", "a0"] {
        env.write(&format!("t/{path}"), path);
    }
    for i in 0..300 {
        if i % 50 == 7 {
            env.write(&format!("t/big/d{i:03}/inner"), "in a subdirectory");
        } else {
            env.write(&format!("t/big/f{i:03}"), format!("file {i}"));
        }
    }
    env.write("t/target/debug/big.o", "object");
    env.write("t/notes.log", "log");
    env.write("t/src/deep.log", "log");
    let excludes = ["--exclude", "target", "--exclude", "*.log"];
    for extra in [&[][..], &excludes[..]] {
        let default = env.ingest_json(&[&["t", "-o", "default.velo"][..], extra].concat());
        let gitignore =
            env.ingest_json(&[&["t", "-o", "gitignore.velo", "--gitignore"][..], extra].concat());
        assert_eq!(
            default["manifest_id"], gitignore["manifest_id"],
            "with {extra:?}: {default} {gitignore}"
        );
        assert_eq!(default["files"], if extra.is_empty() { 311 } else { 308 });
    }
    let paths = manifest_paths(&env, "default.velo");
    for gone in ["target", "notes.log", "src/deep.log"] {
        assert!(
            !paths.iter().any(|p| p == gone),
            "{gone} should be excluded: {paths:?}"
        );
    }
    let at = |p: &str| paths.iter().position(|q| q == p).unwrap();
    assert!(at("a") < at("a/x") && at("a/x") < at("a-b") && at("a-b") < at("a.b"));
    assert!(at("big/d057") < at("big/d057/inner") && at("big/d057/inner") < at("big/f058"));
}

#[test]
fn manifest_written_inside_the_tree_does_not_describe_itself() {
    let env = Env::new();
    sample_tree(&env.path().join("t"));
    let first = env.ingest_json(&["t", "-o", "t/self.velo"]);
    let second = env.ingest_json(&["t", "-o", "t/self.velo"]);
    assert_eq!(first["manifest_id"], second["manifest_id"]);
}

#[test]
fn default_output_is_named_after_the_directory() {
    let env = Env::new();
    sample_tree(&env.path().join("proj"));
    let run = env.velo(["ingest", "proj"]).ok();
    assert!(env.path().join("proj.velo").is_file(), "{}", run.explain());
}

#[test]
fn re_ingest_reads_only_changed_files() {
    let env = Env::new();
    let t = env.path().join("t");
    generate_tree(&t, 200, 3);
    // Files changed within the racy window of an ingest are never trusted, so let the tree
    // settle past it first (see velo::ingest::index::RACY_WINDOW_NS).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cold = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_eq!(cold["unchanged_files"], 0);
    let stamp = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(env.path().join(p)).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let manifest_before = stamp("t.velo");
    let warm = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_eq!(
        stamp("t.velo"),
        manifest_before,
        "an identical manifest is not rewritten"
    );
    assert_eq!(warm["unchanged_files"], warm["files"], "{warm}");
    assert_eq!(warm["manifest_id"], cold["manifest_id"]);

    // Same size, same mtime, new content: ctime still moves, so it is read again.
    let victim = t.join("d1/e1/f1.dat");
    let old = fs::metadata(&victim).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    let times = fs::FileTimes::new().set_modified(old.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_times(times)
        .unwrap();
    let after = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_ne!(after["manifest_id"], cold["manifest_id"]);
    assert_eq!(
        after["unchanged_files"].as_u64().unwrap(),
        warm["files"].as_u64().unwrap() - 1
    );

    // --no-index reads everything and agrees.
    let full = env.ingest_json(&["t", "-o", "full.velo", "--no-index"]);
    assert_eq!(full["unchanged_files"], 0);
    assert_eq!(full["manifest_id"], after["manifest_id"]);
}

/// A settled directory's names come from the stat index, not from reading it; any name added,
/// removed, renamed or retyped changes the directory's times, so it is read again. Each
/// re-ingest must give what `--no-index` gives.
#[test]
fn re_ingest_lists_again_exactly_the_directories_that_changed() {
    let env = Env::new();
    let t = env.path().join("t");
    generate_tree(&t, 200, 7);
    symlink("d0/e0", t.join("link")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let warm = env.ingest_json(&["t", "-o", "t.velo"]);
    let dirs = warm["dirs"].as_u64().unwrap() + 1; // and the root
    assert_eq!(warm["unchanged_dirs"], dirs, "{warm}");
    // A directory changed within the racy window of the ingest that lists it is not trusted
    // by the next one (as for files): let each round of changes settle before ingesting.
    let agrees = |changed_dirs: u64, what: &str| {
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let again = env.ingest_json(&["t", "-o", "t.velo"]);
        let full = env.ingest_json(&["t", "-o", "full.velo", "--no-index"]);
        assert_eq!(again["manifest_id"], full["manifest_id"], "{what}");
        let unchanged = again["unchanged_dirs"].as_u64().unwrap();
        let now = again["dirs"].as_u64().unwrap() + 1;
        assert_eq!(unchanged, now - changed_dirs, "{what}: {again}");
    };
    fs::write(t.join("d1/e1/new.txt"), "new").unwrap();
    fs::remove_file(t.join("d2/e4/f104.dat")).unwrap();
    fs::rename(t.join("d3/e3/f88.dat"), t.join("d3/e3/g88.dat")).unwrap();
    fs::remove_file(t.join("d4/e4/f4.dat")).unwrap();
    fs::create_dir(t.join("d4/e4/f4.dat")).unwrap();
    fs::remove_file(t.join("link")).unwrap();
    symlink("d0/e1", t.join("link")).unwrap();
    // d1/e1, d2/e4, d3/e3, d4/e4 and the root changed; d4/e4/f4.dat is new.
    agrees(6, "names added, removed, renamed and retyped");
    // Setting a directory's mtime back does not hide a new name: its ctime moved.
    let e0 = t.join("d5/e0");
    let mtime = fs::metadata(&e0).unwrap().modified().unwrap();
    fs::write(e0.join("hidden.txt"), "x").unwrap();
    let times = fs::FileTimes::new().set_modified(mtime);
    fs::File::open(&e0).unwrap().set_times(times).unwrap();
    assert_eq!(fs::metadata(&e0).unwrap().modified().unwrap(), mtime);
    agrees(1, "a file added, the directory's mtime set back");
}

/// A recorded listing that names a file which is not there (a filesystem that does not keep a
/// directory's times would do that) makes the ingest walk again, reading every directory.
#[test]
fn a_stale_directory_listing_is_caught_and_the_walk_repeated() {
    let env = Env::new();
    let t = env.path().join("t");
    generate_tree(&t, 200, 8);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cold = env.ingest_json(&["t", "-o", "t.velo"]);
    let index = files_under(&env.store().join("index"));
    assert_eq!(index.len(), 1, "{index:?}");
    let index = env.store().join("index").join(&index[0]);
    // In a listing, names follow each other NUL-terminated: rename one recorded name, keeping
    // the listing sorted, as if the directory still held a file it no longer does.
    let mut bytes = fs::read(&index).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"\0f19.dat\0")
        .expect("d2/e4's listing: f104.dat, f19.dat");
    bytes[at + 1..at + 8].copy_from_slice(b"f19.daz");
    fs::write(&index, &bytes).unwrap();
    let again = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_eq!(again["manifest_id"], cold["manifest_id"], "{again}");
    assert_eq!(again["unchanged_files"], cold["files"], "{again}");
    assert_eq!(
        again["unchanged_dirs"], 0,
        "the repeat read every directory: {again}"
    );
}

#[test]
fn re_ingest_does_not_trust_a_blob_that_gc_removed() {
    let env = Env::new();
    let t = env.path().join("t");
    generate_tree(&t, 20, 5);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    fs::remove_file(env.path().join("t.velo")).unwrap();
    env.velo(["gc", "--run"]).ok();
    assert!(files_under(&env.store().join("blobs")).is_empty());
    let again = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_eq!(again["unchanged_files"], 0, "{again}");
    env.velo(["status", "--verify"]).ok();
}
