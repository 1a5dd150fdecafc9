//! `velo cache key`: the same project in two places has one key; content changes change it;
//! moving `CARGO_HOME` does not.

use velo_e2e::{Env, copy_tree, fixture};

fn key(env: &Env, dir: &std::path::Path, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = env
        .velo(["cache", "key", "--json"])
        .clean_cargo_env()
        .dir(dir);
    for (k, v) in extra {
        cmd = cmd.env(k, v);
    }
    cmd.ok().json()
}

#[test]
fn the_key_is_the_same_in_two_checkouts_and_follows_content() {
    let env = Env::new();
    let a = env.path().join("alice/ws");
    let b = env.path().join("ci/builds/7f3a/ws");
    copy_tree(&fixture("inception-ws"), &a);
    copy_tree(&fixture("inception-ws"), &b);
    let ka = key(&env, &a, &[]);
    assert_eq!(
        ka["key"],
        key(&env, &b.join("app/src"), &[])["key"],
        "same content, other path"
    );

    let home = env.path().join("moved-cargo-home");
    std::fs::create_dir_all(&home).unwrap();
    assert_eq!(
        ka["key"],
        key(&env, &b, &[("CARGO_HOME", home.to_str().unwrap())])["key"],
        "CARGO_HOME moved"
    );

    assert_ne!(
        ka["key"],
        key(&env, &b, &[("RUSTFLAGS", "-C debuginfo=0")])["key"],
        "RUSTFLAGS change it"
    );
    std::fs::write(b.join("libs/core/Cargo.toml"), "[package]\nname = \"core-lib\"\nversion.workspace = true\nedition.workspace = true\n# edited\n").unwrap();
    let kb = key(&env, &b, &[]);
    assert_ne!(ka["key"], kb["key"], "a Cargo.toml changed");
    let changed: Vec<&str> = ka["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(kb["inputs"].as_array().unwrap())
        .filter(|(x, y)| x["hash"] != y["hash"])
        .map(|(x, _)| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["Cargo.toml"], "only the changed input differs");
}
