//! Crashes and races: a killed ingest and concurrent ingests and gcs never lose or corrupt data.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use velo_e2e::{Env, Rng, generate_tree, velo_bin};

/// SIGKILL an ingest at random moments, each time into a fresh store so that the kill lands
/// while blobs are being written: afterwards the store verifies, the manifest is either absent
/// or whole, and a re-run completes.
#[test]
fn sigkill_during_ingest_leaves_a_sound_store() {
    let env = Env::new();
    let tree = env.path().join("t");
    generate_tree(&tree, 600, 11);
    let (mut rng, seed) = Rng::from_time();
    eprintln!("seed {seed}");

    // The shortest of three fresh-store ingests: other tests (cargo builds) load the machine at
    // random moments, and a delay drawn from a slow calibration would mostly land after the end.
    let full = (0..3)
        .map(|i| {
            let timed = Instant::now();
            env.velo([
                "--store",
                &format!("timing-{i}"),
                "ingest",
                "t",
                "-o",
                "timing.velo",
            ])
            .ok();
            timed.elapsed().as_micros() as u64
        })
        .min()
        .expect("three runs");

    // Kill until enough kills have landed mid-run. Each kill that arrives after the end narrows
    // the window the next delay is drawn from, so a machine slowed or sped up by other tests
    // still gets its kills in, while every kill still checks the store.
    const WANTED: usize = 8;
    const MAX_ATTEMPTS: usize = 64;
    let mut window = full.max(1);
    let mut killed_mid_run = 0;
    let mut attempts = 0;
    while killed_mid_run < WANTED && attempts < MAX_ATTEMPTS {
        let i = attempts;
        attempts += 1;
        let store = env.path().join(format!("store-{i}"));
        let output = env.path().join(format!("k{i}.velo"));
        let mut child = Command::new(velo_bin())
            .args([
                "--store".as_ref(),
                store.as_os_str(),
                "ingest".as_ref(),
                tree.as_os_str(),
                "-o".as_ref(),
                output.as_os_str(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_run += 1;
        } else {
            window = (window * 3 / 4).max(1);
        }
        let store_arg = store.to_str().unwrap();
        if store.join("velo-store").exists() {
            let run = env
                .velo(["--store", store_arg, "status", "--verify", "--json"])
                .ok();
            let json = run.json();
            assert!(
                json["verify"]["corrupt"].as_array().unwrap().is_empty(),
                "kill {i}: {}",
                run.explain()
            );
            assert!(
                json["missing_blobs"].as_array().unwrap().is_empty(),
                "kill {i}: {}",
                run.explain()
            );
        }
        if output.exists() {
            // Either the old state or the new: a manifest that exists is whole.
            env.velo(["manifest", "id", output.to_str().unwrap()]).ok();
        }
        env.velo([
            "--store",
            store_arg,
            "ingest",
            "t",
            "-o",
            output.to_str().unwrap(),
        ])
        .ok();
        env.velo(["--store", store_arg, "status", "--verify"]).ok();
        env.velo(["--store", store_arg, "gc", "--run"]).ok();
        assert!(
            velo_e2e::files_under(&store.join("tmp")).is_empty(),
            "gc removes stray temp files"
        );
    }
    eprintln!("{killed_mid_run} of {attempts} kills landed before the ingest finished");
    assert!(
        killed_mid_run >= WANTED,
        "only {killed_mid_run} of {attempts} kills hit a running ingest"
    );
}

/// Two ingests and a `gc --run` at once, several times, with the blobs both ingests need
/// lying orphaned in the store beforehand (the dangerous case: an ingest finds a blob present
/// and relies on it while gc wants to delete it).
#[test]
fn concurrent_ingests_and_gc_lose_nothing() {
    let env = Env::new();
    generate_tree(&env.path().join("a"), 400, 21);
    generate_tree(&env.path().join("b"), 400, 21);
    fs::write(env.path().join("b/extra"), "only in b").unwrap();
    for round in 0..6 {
        // Orphan everything: ingest, then forget the manifests.
        env.velo(["ingest", "a", "-o", "a.velo", "--no-index"]).ok();
        env.velo(["ingest", "b", "-o", "b.velo", "--no-index"]).ok();
        fs::remove_file(env.path().join("a.velo")).unwrap();
        fs::remove_file(env.path().join("b.velo")).unwrap();

        let spawn = |args: &[&str]| {
            Command::new(velo_bin())
                .args(args)
                .current_dir(env.path())
                .env("VELO_STORE", env.store())
                .output()
        };
        std::thread::scope(|s| {
            let a = s.spawn(|| spawn(&["ingest", "a", "-o", "a.velo", "--no-index"]));
            let g = s.spawn(|| spawn(&["gc", "--run"]));
            let b = s.spawn(|| spawn(&["ingest", "b", "-o", "b.velo", "--no-index"]));
            for (name, h) in [("a", a), ("gc", g), ("b", b)] {
                let out = h.join().unwrap().unwrap();
                assert!(
                    out.status.success(),
                    "round {round} {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
        let s = env.velo(["status", "--verify", "--json"]).ok().json();
        assert!(
            s["missing_blobs"].as_array().unwrap().is_empty(),
            "round {round}: {s}"
        );
        assert_eq!(
            s["manifests"].as_array().unwrap().len(),
            2,
            "round {round}: {s}"
        );
    }
}
