//! The store: its location, lazy creation, status, verify and gc.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use velo_e2e::{Env, files_under, generate_tree};

#[test]
fn store_location_follows_flag_then_env_then_xdg() {
    let env = Env::new();
    env.write("t/a", "a");
    env.velo(["ingest", "t", "-o", "a.velo"]).ok();
    assert!(env.store().join("velo-store").is_file());

    let explicit = env.path().join("explicit");
    env.velo([
        "--store",
        explicit.to_str().unwrap(),
        "ingest",
        "t",
        "-o",
        "b.velo",
    ])
    .ok();
    assert!(explicit.join("velo-store").is_file());

    let xdg = env.path().join("xdg");
    let mut cmd = env.velo(["ingest", "t", "-o", "c.velo"]);
    cmd.cmd.env_remove("VELO_STORE").env("XDG_DATA_HOME", &xdg);
    cmd.ok();
    assert!(xdg.join("velo/velo-store").is_file());

    let home = env.path().join("home");
    let mut cmd = env.velo(["ingest", "t", "-o", "d.velo"]);
    cmd.cmd
        .env_remove("VELO_STORE")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home);
    cmd.ok();
    assert!(home.join(".local/share/velo/velo-store").is_file());
}

#[test]
fn store_is_created_lazily() {
    let env = Env::new();
    env.write("t/a", "a");
    env.velo(["ingest", "t", "-o", "a.velo"]).ok();
    let shards: Vec<_> = fs::read_dir(env.store().join("blobs")).unwrap().collect();
    assert_eq!(shards.len(), 1, "only the shard that holds a blob exists");
    // status on a store that does not exist does not create it.
    let other = env.path().join("never");
    env.velo(["--store", other.to_str().unwrap(), "status"])
        .ok();
    assert!(!other.exists());
}

#[test]
fn refuses_a_non_empty_directory_that_is_not_a_store() {
    let env = Env::new();
    env.write("t/a", "a");
    env.write("precious/data.txt", "mine");
    let run = env
        .velo(["--store", "precious", "ingest", "t", "-o", "a.velo"])
        .fails();
    assert!(
        run.stderr().contains("is not a velo store"),
        "{}",
        run.explain()
    );
    assert_eq!(
        files_under(&env.path().join("precious")),
        [std::path::PathBuf::from("data.txt")]
    );
}

#[test]
fn status_reports_dedup_manifests_and_orphans() {
    let env = Env::new();
    generate_tree(&env.path().join("t"), 50, 1);
    env.velo(["ingest", "t", "-o", "a.velo"]).ok();
    env.velo(["ingest", "t", "-o", "b.velo"]).ok();
    let s = env.velo(["status", "--json"]).ok().json();
    let ratio = s["dedup_ratio"].as_f64().unwrap();
    assert!(
        ratio > 2.0,
        "two manifests of one tree with duplicate files: {s}"
    );
    assert_eq!(
        s["logical_bytes"].as_u64().unwrap(),
        2 * s["manifests"][0]["logical_bytes"].as_u64().unwrap()
    );
    assert_eq!(s["orphaned_blobs"], 0);

    fs::remove_file(env.path().join("a.velo")).unwrap();
    fs::remove_file(env.path().join("b.velo")).unwrap();
    let s = env.velo(["status", "--json"]).ok().json();
    assert_eq!(s["manifests"][0]["state"], "missing");
    assert_eq!(s["orphaned_blobs"], s["blobs"]);
}

#[test]
fn verify_finds_a_corrupt_blob_and_names_it() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.write("t/b", "beta");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    env.velo(["status", "--verify"]).ok();
    let hash = blake3::hash(b"beta").to_hex().to_string();
    let blob = env.store().join("blobs").join(&hash[..2]).join(&hash);
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, "bet4").unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o444)).unwrap();
    let run = env.velo(["status", "--verify"]).run().expect_code(1);
    assert!(
        run.stdout().contains(&format!("corrupt blob {hash}")),
        "{}",
        run.explain()
    );
    let json = env
        .velo(["status", "--verify", "--json"])
        .run()
        .expect_code(1)
        .json();
    assert_eq!(json["verify"]["corrupt"][0]["blob"], hash.as_str());
}

#[test]
fn gc_dry_run_lists_and_run_deletes_only_unreferenced_blobs() {
    let env = Env::new();
    env.write("keep/shared", "shared");
    env.write("keep/only-keep", "keep");
    env.write("drop/shared", "shared");
    env.write("drop/only-drop", "drop");
    env.velo(["ingest", "keep", "-o", "keep.velo"]).ok();
    env.velo(["ingest", "drop", "-o", "drop.velo"]).ok();
    fs::remove_file(env.path().join("drop.velo")).unwrap();

    let dry = env.velo(["gc", "--json"]).ok().json();
    let only_drop = blake3::hash(b"drop").to_hex().to_string();
    assert_eq!(dry["blobs"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["blobs"][0]["blob"], only_drop.as_str());
    assert_eq!(dry["bytes"], 4);
    assert_eq!(
        files_under(&env.store().join("blobs")).len(),
        3,
        "dry run deletes nothing"
    );

    env.velo(["gc", "--run"]).ok();
    assert_eq!(files_under(&env.store().join("blobs")).len(), 2);
    let s = env.velo(["status", "--verify", "--json"]).ok().json();
    assert_eq!(
        s["manifests"].as_array().unwrap().len(),
        1,
        "gone manifest's registration dropped: {s}"
    );
    assert_eq!(s["orphaned_blobs"], 0);
}

#[test]
fn gc_refuses_while_a_registered_manifest_is_unreadable() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.write("u/b", "beta");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    env.velo(["ingest", "u", "-o", "u.velo"]).ok();
    fs::remove_file(env.path().join("u.velo")).unwrap();
    fs::write(env.path().join("t.velo"), "garbage").unwrap();
    let run = env.velo(["gc", "--run"]).fails();
    assert!(
        run.stderr().contains("refusing to collect garbage") && run.stderr().contains("t.velo"),
        "{}",
        run.explain()
    );
    assert_eq!(
        files_under(&env.store().join("blobs")).len(),
        2,
        "nothing deleted"
    );
}
