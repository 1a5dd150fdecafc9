//! The remote tier through a `file://` remote: "machine B" is a second store and HOME on this
//! host, sharing nothing with machine A but the remote directory.

use std::fs;

use velo_e2e::{Env, files_under};

/// A second machine's view: its own store and HOME, the same remote.
fn machine_b(env: &Env) -> impl Fn(&[&str]) -> velo_e2e::Cmd + '_ {
    move |args: &[&str]| env.velo_on("b", args).env("VELO_REMOTE", remote_url(env))
}

fn remote_url(env: &Env) -> String {
    format!("file://{}", env.path().join("remote").display())
}

fn tree(env: &Env) {
    env.write("t/hello.txt", "hello from machine A\n");
    env.write("t/lib/data.bin", vec![7u8; 200_000]);
    env.write("t/same", "hello from machine A\n");
}

#[test]
fn push_then_pull_moves_only_what_is_missing_and_the_ids_agree() {
    let env = Env::new();
    tree(&env);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let id = env.velo(["manifest", "id", "t.velo"]).ok().stdout();
    let id = id.trim();
    let url = remote_url(&env);

    let pushed = env
        .velo(["push", "--remote", &url, "--json", "t.velo"])
        .ok()
        .json();
    assert_eq!(pushed[0]["manifest_id"], id);
    assert_eq!(pushed[0]["blobs"], 2, "two distinct contents: {pushed}");
    assert_eq!(pushed[0]["transferred"], 2);
    assert!(
        pushed[0]["compressed_bytes"].as_u64() < Some(20_000),
        "zstd on the wire: {pushed}"
    );
    let again = env
        .velo(["push", "--remote", &url, "--json", "t.velo"])
        .ok()
        .json();
    assert_eq!(again[0]["transferred"], 0, "nothing twice: {again}");

    let b = machine_b(&env);
    let pulled = b(&["pull", id, "-o", "b.velo", "--json"]).ok().json();
    assert_eq!(pulled["transferred"], 2, "{pulled}");
    let b_id = b(&["manifest", "id", "b.velo"]).ok().stdout();
    assert_eq!(b_id.trim(), id, "the same manifest, byte for byte");
    b(&["status", "--verify"]).ok();
    let run = b(&[
        "run",
        "--mode",
        "farm",
        "--manifest",
        "b.velo",
        "--",
        "cat",
        "hello.txt",
    ])
    .ok();
    assert_eq!(run.stdout(), "hello from machine A\n");
    let twice = b(&["pull", id, "-o", "b.velo", "--json"]).ok().json();
    assert_eq!(twice["transferred"], 0, "the local store had them: {twice}");

    // Machine C has the manifest file (from a checkout, say) but an empty store: `velo run`
    // fetches what it lacks from the remote.
    fs::copy(env.path().join("t.velo"), env.path().join("c.velo")).unwrap();
    let run = env
        .velo_on(
            "c",
            [
                "run",
                "--mode",
                "farm",
                "--manifest",
                "c.velo",
                "--",
                "cat",
                "lib/data.bin",
            ],
        )
        .env("VELO_REMOTE", remote_url(&env))
        .ok();
    assert_eq!(run.stdout().len(), 200_000);
    assert!(
        run.stderr().contains("fetched 2 of 2 blobs of c.velo"),
        "{}",
        run.explain()
    );
}

#[test]
fn a_corrupted_remote_object_is_detected_and_never_used() {
    let env = Env::new();
    tree(&env);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let id = env.velo(["manifest", "id", "t.velo"]).ok().stdout();
    let id = id.trim().to_owned();
    env.velo(["push", "--remote", &remote_url(&env), "t.velo"])
        .ok();

    // A blob's frame in its pack replaced by other valid zstd content of the same size.
    let hex = blake3::hash(b"hello from machine A\n").to_hex().to_string();
    let index = fs::read(env.path().join("remote/indexes").join(&id)).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&index[..]).unwrap()).unwrap();
    let (pack, frame) = index["packs"]
        .as_object()
        .unwrap()
        .iter()
        .find_map(|(name, frames)| {
            let f = frames
                .as_array()?
                .iter()
                .find(|f| f["blob"] == hex.as_str())?;
            Some((name.clone(), f.clone()))
        })
        .expect("the small blob is in a pack");
    let object = env.path().join("remote/packs").join(&pack);
    let mut bytes = fs::read(&object).unwrap();
    let forged = zstd::bulk::compress(b"HELLO FROM MACHINE a\n", 3).unwrap();
    let (at, len) = (
        frame["at"].as_u64().unwrap() as usize,
        frame["len"].as_u64().unwrap() as usize,
    );
    assert_eq!(forged.len(), len, "same-sized frames");
    bytes[at..at + len].copy_from_slice(&forged);
    fs::write(&object, bytes).unwrap();
    let b = machine_b(&env);
    let run = b(&["pull", &id, "-o", "b.velo"]).run().expect_code(2);
    assert!(
        run.stderr().contains("does not match its name; not used")
            && run.stderr().contains("lacks 1 blob(s)"),
        "{}",
        run.explain()
    );
    assert!(
        !env.path().join("b.velo").exists(),
        "no manifest without its blobs"
    );
    let blobs = env.path().join("b/store/blobs");
    let stored: Vec<Vec<u8>> = files_under(&blobs)
        .iter()
        .map(|p| fs::read(blobs.join(p)).unwrap())
        .collect();
    assert!(
        !stored.iter().any(|b| b.starts_with(b"HELLO")),
        "the corrupt content never entered the store"
    );

    // A manifest object whose bytes are not its id.
    let manifest = env.path().join("remote/manifests").join(&id);
    let mut bytes = fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&manifest, bytes).unwrap();
    b(&["pull", &id, "-o", "b.velo"])
        .fails()
        .stderr_has(&["is corrupt there", "nothing was pulled"]);
}

#[test]
fn two_pushes_of_one_manifest_at_once_both_succeed() {
    let env = Env::new();
    tree(&env);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let url = remote_url(&env);
    let spawn = || {
        let mut cmd = env.velo(["push", "--remote", &url, "t.velo"]).cmd;
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let leftovers: Vec<_> = files_under(&env.path().join("remote"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".velo-upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn without_a_remote_push_and_pull_say_how_to_name_one() {
    let env = Env::new();
    tree(&env);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    env.velo(["push", "t.velo"])
        .env_remove("VELO_REMOTE")
        .fails()
        .stderr_has(&["pass --remote URL, set VELO_REMOTE", "[remote] url"]);
    env.velo(["push", "--remote", "ftp://host/dir", "t.velo"])
        .fails()
        .stderr_has(&["unsupported URL", "s3://BUCKET/PREFIX"]);
    // An S3 remote without credentials says which variables to set.
    env.velo(["push", "--remote", "s3://bucket/prefix", "t.velo"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .fails()
        .stderr_has(&["remote s3://bucket/prefix", "AWS_ACCESS_KEY_ID"]);
}

/// `velo cargo build --offline` in `dir` as a machine of its own: its store, HOME and
/// `CARGO_HOME`, and the remote (`url`).
fn cargo_on(
    env: &Env,
    machine: &str,
    dir: &std::path::Path,
    home: &std::path::Path,
    url: &str,
) -> velo_e2e::Run {
    cargo_with(env, machine, dir, home, url, &[])
}

/// [`cargo_on`] with more environment (an S3 server's).
fn cargo_with(
    env: &Env,
    machine: &str,
    dir: &std::path::Path,
    home: &std::path::Path,
    url: &str,
    extra: &[(&'static str, String)],
) -> velo_e2e::Run {
    env.velo_on(machine, ["cargo", "build", "--offline"])
        .clean_cargo_env()
        .dir(dir)
        .env("CARGO_HOME", home)
        .env("VELO_REMOTE", url)
        .envs(extra.iter().cloned())
        .ok()
}

/// Machine A: the registry-app fixture at `a/src/app` with its own `CARGO_HOME`, built with
/// `velo cargo` against the remote `url` (and `extra` environment). Its checkout, its
/// `CARGO_HOME` and the build.
fn machine_a(
    env: &Env,
    url: &str,
    extra: &[(&'static str, String)],
) -> (std::path::PathBuf, std::path::PathBuf, velo_e2e::Run) {
    let a = env.path().join("a/src/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &a);
    let home_a = env.path().join("a/cargo-home");
    velo_e2e::private_cargo_home(&home_a, crate::cache::REGISTRY_CRATES, &a);
    let first = cargo_with(env, "a", &a, &home_a, url, extra);
    (a, home_a, first)
}

/// Machine B shares nothing with machine A but the remote: not the store, not HOME, not the
/// checkout path, not CARGO_HOME. Its cold build restores from the remote, compiles nothing,
/// and the binary works. A snapshot whose objects went, and a remote that cannot serve, cost a
/// normal build.
#[test]
fn velo_cargo_on_a_cold_machine_restores_from_the_remote_with_every_unit_fresh() {
    use crate::cache::{compiled, summary};
    let env = Env::new();
    let url = remote_url(&env);
    let (_, home_a, first) = machine_a(&env, &url, &[]);
    assert!(compiled(&first).len() >= 5, "{}", first.explain());
    assert!(summary(&first).contains("pushed to"), "{}", summary(&first));

    let home_b = env.path().join("b/ci/cargo-home");
    velo_e2e::second_machine_cargo_home(&home_a, &home_b);
    let b = env.path().join("b/builds/7f3a/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &b);
    let build = cargo_on(&env, "b", &b, &home_b, &url);
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    let line = summary(&build);
    assert!(
        line.contains("fetched snapshot") && line.contains("restored"),
        "{line}"
    );
    let out = velo_e2e::Cmd::new(b.join("target/debug/registry-app"))
        .ok()
        .stdout();
    assert!(out.contains("spaces=4"), "{out}");
    // Written straight into target/: B's store gained no blob, and is sound.
    let status: serde_json::Value = serde_json::from_str(
        &env.velo_on("b", ["status", "--json", "--verify"])
            .ok()
            .stdout(),
    )
    .unwrap();
    assert_eq!(status["blobs"], 0, "{status}");
    assert_eq!(status["missing_blobs"], serde_json::json!([]), "{status}");

    // A pack whose bytes were changed: its frames fail their check, nothing of it is written,
    // and the restore is a miss (a normal build that works).
    let packs = env.path().join("remote/packs");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&packs)
        .iter()
        .map(|p| {
            let path = packs.join(p);
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    for (path, bytes) in &saved {
        let mut forged = bytes.clone();
        for b in forged.iter_mut().skip(64).step_by(997) {
            *b ^= 0x5a;
        }
        fs::write(path, forged).unwrap();
    }
    let e = env.path().join("e/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &e);
    let forged = cargo_on(&env, "e", &e, &home_b, &url);
    assert!(compiled(&forged).len() >= 5, "{}", forged.explain());
    assert!(
        forged.stderr().contains("not used") && forged.stderr().contains("trying an older one"),
        "{}",
        forged.explain()
    );
    let out = velo_e2e::Cmd::new(e.join("target/debug/registry-app"))
        .ok()
        .stdout();
    assert!(out.contains("spaces=4"), "{out}");
    assert!(
        fs::read_dir(&e)
            .unwrap()
            .flatten()
            .all(|d| !d.file_name().to_string_lossy().starts_with(".velo-restore")),
        "no half-restored tree is left beside target/"
    );
    for (path, bytes) in saved {
        fs::write(path, bytes).unwrap();
    }

    // A snapshot whose packs went (a prune racing the restore) is a miss: a normal build.
    for pack in files_under(&env.path().join("remote/packs")) {
        fs::remove_file(env.path().join("remote/packs").join(pack)).unwrap();
    }
    let d = env.path().join("d/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &d);
    let missed = cargo_on(&env, "d", &d, &home_b, &url);
    assert!(compiled(&missed).len() >= 5, "{}", missed.explain());
    assert!(
        missed.stderr().contains("trying an older one")
            && summary(&missed).contains("remote: no snapshot of this key"),
        "{}",
        missed.explain()
    );

    // A remote that cannot serve costs a normal build, and velo's last line says so.
    let c = env.path().join("c/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &c);
    let file = env.write("a-file", "not a directory");
    let down_url = format!("file://{}/remote", file.display());
    let down = cargo_on(&env, "c", &c, &home_b, &down_url);
    assert!(compiled(&down).len() >= 5, "{}", down.explain());
    assert!(
        summary(&down).contains("remote unavailable"),
        "{}",
        summary(&down)
    );
}

/// The same through a real S3 API (moto's server on a free local port): push, pull, a second
/// push that moves nothing, two pushes at once, and machine B's `velo cargo build` restoring
/// from the bucket with nothing compiled.
#[test]
fn through_a_real_s3_server_machine_b_restores_and_compiles_nothing() {
    use crate::cache::{compiled, summary};
    let env = Env::new();
    let Some(s3) = velo_e2e::s3_server(
        "through_a_real_s3_server_machine_b_restores_and_compiles_nothing",
        env.path(),
    ) else {
        return;
    };
    let url = "s3://velo/ci-cache";
    let aws = s3.env();
    let velo = |args: &[&str]| env.velo(args).envs(aws.iter().cloned());
    tree(&env);
    velo(&["ingest", "t", "-o", "t.velo"]).ok();
    let id = velo(&["manifest", "id", "t.velo"]).ok().stdout();
    let id = id.trim();
    let pushed = velo(&["push", "--remote", url, "--json", "t.velo"])
        .ok()
        .json();
    assert_eq!(pushed[0]["transferred"], 2, "{pushed}");
    let again = velo(&["push", "--remote", url, "--json", "t.velo"])
        .ok()
        .json();
    assert_eq!(again[0]["transferred"], 0, "{again}");
    let pulled = velo(&["pull", "--remote", url, id, "-o", "b.velo", "--json"])
        .env("VELO_STORE", env.path().join("b/store"))
        .ok()
        .json();
    assert_eq!(pulled["transferred"], 2, "{pulled}");
    assert!(
        s3.requests().contains("PUT /velo/ci-cache/manifests/"),
        "the objects went through the server: {}",
        s3.requests()
    );

    let (_, home_a, first) = machine_a(&env, url, &aws);
    assert!(compiled(&first).len() >= 5, "{}", first.explain());
    assert!(
        summary(&first).contains("pushed to s3://velo/ci-cache"),
        "{}",
        summary(&first)
    );
    let home_b = env.path().join("b/ci/cargo-home");
    velo_e2e::second_machine_cargo_home(&home_a, &home_b);
    let b = env.path().join("b/builds/7f3a/app");
    velo_e2e::copy_fresh(&velo_e2e::fixture("registry-app"), &b);
    let build = cargo_with(&env, "b", &b, &home_b, url, &aws);
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    assert!(
        summary(&build).contains("fetched snapshot"),
        "{}",
        summary(&build)
    );
}

/// kill -9 at random points of a push never leaves a manifest whose objects are not all there
/// (a pull of it succeeds), and the next push completes what the killed one started.
#[test]
fn a_push_killed_at_any_point_leaves_the_remote_consistent() {
    let env = Env::new();
    velo_e2e::generate_tree(&env.path().join("t"), 600, 7);
    // Large blobs travel alone, small ones in packs: a push of several objects.
    let mut rng_data = velo_e2e::Rng::seeded(11);
    for i in 0..3 {
        let big: Vec<u8> = (0..(17 << 20) / 8)
            .flat_map(|_| rng_data.next_u64().to_le_bytes())
            .collect();
        env.write(&format!("t/big-{i}.bin"), big);
    }
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let id = env.velo(["manifest", "id", "t.velo"]).ok().stdout();
    let id = id.trim().to_owned();
    let (mut rng, seed) = velo_e2e::Rng::from_time();
    let url = remote_url(&env);
    let manifest = env.path().join("remote/manifests").join(&id);
    // How long an uninterrupted push takes here: the kills land anywhere in it.
    let started = std::time::Instant::now();
    env.velo(["push", "--remote", &url, "t.velo"]).ok();
    let took = started.elapsed().as_millis() as u64;
    let mut interrupted = 0;
    for round in 0..6 {
        let _ = fs::remove_dir_all(env.path().join("remote"));
        let _ = fs::remove_dir_all(env.path().join("store/remote"));
        let mut child = env.velo(["push", "--remote", &url, "t.velo"]).cmd;
        let mut child = child
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(took.max(2))));
        let _ = child.kill();
        let _ = child.wait();
        if !manifest.exists() {
            interrupted += 1;
        } else {
            // A reader that finds the manifest finds everything it names: a pull into an
            // empty store checks every blob.
            env.velo(["pull", "--remote", &url, &id, "-o", "seen.velo"])
                .env("VELO_STORE", env.path().join(format!("seen-{round}")))
                .run()
                .expect_code(0);
        }
        let done = env
            .velo(["push", "--remote", &url, "--json", "t.velo"])
            .ok()
            .json();
        assert!(manifest.exists(), "seed {seed}: {done}");
        env.velo(["pull", "--remote", &url, &id, "-o", "again.velo"])
            .env("VELO_STORE", env.path().join(format!("store-{round}")))
            .ok();
    }
    assert!(
        interrupted > 0,
        "seed {seed}: no push was interrupted; the test proved nothing"
    );
}

/// Through a network that answers 503 and 429, drops connections and stalls (a proxy in front
/// of the S3 server), a push and a pull still complete, and what arrives is the same tree.
#[test]
fn through_a_faulty_network_every_transfer_still_completes() {
    let env = Env::new();
    let Some(s3) = velo_e2e::s3_server(
        "through_a_faulty_network_every_transfer_still_completes",
        env.path(),
    ) else {
        return;
    };
    let proxy = velo_e2e::faults::Proxy::start(
        s3.port,
        velo_e2e::faults::Faults {
            every: 3,
            stall: std::time::Duration::from_secs(4),
            ..Default::default()
        },
    );
    let velo = |args: &[&str]| {
        env.velo(args)
            .envs(s3.env())
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            // A stalled answer is given up on after 1 s of silence, and retried.
            .env("VELO_REMOTE_TIMEOUT", "1")
    };
    velo_e2e::generate_tree(&env.path().join("t"), 300, 5);
    env.write("t/big.bin", vec![3u8; 17 << 20]);
    // Incompressible and over 64 MiB: uploaded in parts, each of which may meet a fault.
    let mut rng = velo_e2e::Rng::seeded(3);
    let huge: Vec<u8> = (0..(70 << 20) / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    env.write("t/huge.bin", huge);
    velo(&["ingest", "t", "-o", "t.velo"]).ok();
    let id = velo(&["manifest", "id", "t.velo"]).ok().stdout();
    let id = id.trim();
    let url = "s3://velo/faulty";
    let pushed = velo(&["push", "--remote", url, "--json", "t.velo"])
        .ok()
        .json();
    let pulled = velo(&["pull", "--remote", url, id, "-o", "b.velo", "--json"])
        .env("VELO_STORE", env.path().join("b/store"))
        .ok()
        .json();
    assert_eq!(pulled["transferred"], pushed[0]["transferred"], "{pulled}");
    let b_id = velo(&["manifest", "id", "b.velo"]).ok().stdout();
    assert_eq!(b_id.trim(), id);
    assert!(
        s3.requests().contains("partNumber="),
        "the 70 MiB blob went up in parts"
    );
    assert!(
        proxy.injected() >= 3,
        "faults were injected: {} of {} requests",
        proxy.injected(),
        proxy.requests()
    );

    // A server that is down: a clear error naming the remote, soon.
    let down = velo_e2e::faults::Proxy::start(
        s3.port,
        velo_e2e::faults::Faults {
            down: true,
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    velo(&["pull", "--remote", url, id, "-o", "c.velo"])
        .env("AWS_ENDPOINT_URL", down.endpoint())
        .env("VELO_STORE", env.path().join("c-store"))
        .fails()
        .stderr_has(&["remote s3://velo/faulty", "downloading manifests/"]);
    assert!(started.elapsed().as_secs() < 30, "retries are bounded");
}

/// Two snapshots of one key: the second uploads only what changed, `velo cache list --remote`
/// shows both, and a prune keeps the newest (which machine B, configured by its config file
/// rather than VELO_REMOTE, still restores with nothing compiled) and deletes what nothing kept
/// names: the older snapshot's record, manifest and index, and a stale pushed tree with its pack.
#[test]
fn a_second_snapshot_moves_little_and_prune_keeps_what_the_newest_needs() {
    use crate::cache::{compiled, summary};
    let env = Env::new();
    let url = remote_url(&env);
    let (a, home_a, first) = machine_a(&env, &url, &[]);
    let main = a.join("src/main.rs");
    let text = fs::read_to_string(&main).unwrap();
    fs::write(&main, format!("{text}\n// a one-line edit\n")).unwrap();
    let second = cargo_on(&env, "a", &a, &home_a, &url);
    assert_eq!(compiled(&second).len(), 1, "{}", second.explain());
    let mib = |line: &str| -> f64 {
        let at = line.find("pushed to").expect("a push");
        let rest = &line[at..];
        let end = rest.find(" MiB").expect("its size");
        rest[..end].rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (one, two) = (mib(&summary(&first)), mib(&summary(&second)));
    assert!(
        two < one / 2.0,
        "the second push carries what changed: {two} MiB vs {one} MiB\n{}",
        summary(&second)
    );

    let listed = env
        .velo(["cache", "list", "--remote", &url, "--json"])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // A tree pushed on its own: past the cut-off, nothing keeps it.
    tree(&env);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    env.velo(["push", "--remote", &url, "t.velo"]).ok();
    let packs = || files_under(&env.path().join("remote/packs")).len();
    let before = packs();
    let pruned = env
        .velo([
            "cache",
            "prune",
            "--remote",
            &url,
            "--older-than",
            "0s",
            "--grace",
            "0s",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(pruned["snapshots"], 1, "{pruned}");
    assert_eq!(pruned["snapshots_kept"], 1, "{pruned}");
    assert!(
        packs() < before,
        "the older snapshot's own packs went: {pruned}"
    );
    let listed = env
        .velo(["cache", "list", "--remote", &url, "--json"])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Machine B names the remote in its config file only.
    let config = env.path().join("b/config");
    env.write(
        "b/config/velo/config.toml",
        format!("[remote]\nurl = \"{url}\"\n"),
    );
    let home_b = env.path().join("b/ci/cargo-home");
    velo_e2e::second_machine_cargo_home(&home_a, &home_b);
    let b = env.path().join("b/builds/app");
    velo_e2e::copy_fresh(&a, &b);
    let _ = fs::remove_dir_all(b.join("target"));
    let build = env
        .velo_on("b", ["cargo", "build", "--offline"])
        .clean_cargo_env()
        .dir(&b)
        .env("CARGO_HOME", &home_b)
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("VELO_REMOTE")
        .ok();
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    assert!(
        summary(&build).contains("fetched snapshot"),
        "{}",
        summary(&build)
    );

    // A config file velo cannot read is named, with what it expects.
    env.write("b/config/velo/config.toml", "[remote]\nurl = 3\n");
    env.velo(["cache", "list", "--remote"])
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("VELO_REMOTE")
        .fails()
        .stderr_has(&["config.toml", "[remote] with url"]);
}
