//! Issue 7.3: SIGKILL at random (seeded) moments leaves no partial output that looks complete.
//! Writes are atomic (temp file or folder named `.NAME.tmp-PID.K`, then a rename), so after any
//! kill every visible checkpoint loads whole, byte-identical to an uninterrupted run, a probe
//! result's JSON (written last, after its weights) is either absent or whole, and a report
//! folder is absent or whole (a replaced one is swapped out in one exchange, so under `--force`
//! the old or the new report is there at every moment). The next run removes what killed runs
//! left behind.

mod common;

use common::kill_after;

use rand::{Rng, SeedableRng};
use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = common::bin();
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Run to completion; returns the wall time (used only to spread the kill moments).
fn run<S: AsRef<OsStr> + Debug>(args: &[S]) -> Duration {
    let t0 = Instant::now();
    let st = bin().args(args).status().unwrap();
    assert!(st.success(), "feedlens {args:?}");
    t0.elapsed()
}

fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn killed_zoo_and_probe_runs_leave_only_whole_outputs() {
    let d = tempfile::tempdir().unwrap();
    let reference = d.path().join("ref");
    let r = reference.to_str().unwrap();
    let t_zoo = run(&["zoo", "--quick", "--seed", "0", "--out", r]);
    let killed = d.path().join("killed");
    let k = killed.to_str().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut seen_partial = 0;
    for round in 0..3 {
        let at = t_zoo.mul_f64(rng.random_range(0.1..0.9));
        kill_after(
            &["zoo", "--quick", "--seed", "0", "--force", "--out", k],
            at,
        );
        let names = visible(&killed);
        seen_partial += usize::from(names.len() < 11);
        for n in &names {
            // Whole: loads, matches its manifest hash, and equals the uninterrupted build.
            let ck = feedlens::io::checkpoint::load(killed.join(n))
                .unwrap_or_else(|e| panic!("round {round}: {n} does not load: {e}"));
            assert_eq!(ck.manifest.as_ref().unwrap().sha256, ck.sha256, "{n}");
            assert_eq!(
                files(&killed.join(n)),
                files(&reference.join(n)),
                "round {round}: {n} differs from the uninterrupted build"
            );
        }
    }
    eprintln!(
        "zoo: {:.1} s, {seen_partial} of 3 kills left it partial",
        t_zoo.as_secs_f64()
    );

    // A probe spec run over the reference base + rlhf, killed while it works.
    let spec = d.path().join("p.toml");
    std::fs::write(
        &spec,
        format!(
            "checkpoints = [{:?}, {:?}]\nlabel = \"optout\"\nn = 60\nfolds = 3\nnull_directions = 50\n",
            reference.join("base").to_str().unwrap(),
            reference.join("rlhf").to_str().unwrap()
        ),
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    let t_probe = run(&["probe", s]);
    let (json, st) = feedlens::analysis::probes::result_paths(&spec);
    let want_json = std::fs::read(&json).unwrap();
    let want_st = std::fs::read(&st).unwrap();
    for _ in 0..3 {
        let _ = std::fs::remove_file(&json);
        let at = t_probe.mul_f64(rng.random_range(0.1..1.1));
        kill_after(&["probe", s, "--force"], at);
        // The JSON is the completion marker (written after the weights): when present, both
        // are whole. The weights file is replaced atomically by the same bytes.
        if json.exists() {
            assert_eq!(std::fs::read(&json).unwrap(), want_json);
        }
        assert_eq!(std::fs::read(&st).unwrap(), want_st);
    }
    // `probe --force` over an older result: at every moment the folder holds the old pair,
    // no JSON (the marker removed once the new pair was whole on disk), or the new pair —
    // never an old JSON with new weights, never the old pair lost to a half-written new one.
    let v2 = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("n = 60", "n = 64");
    let v1 = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, &v2).unwrap();
    run(&["probe", s, "--force"]);
    let new_pair = (std::fs::read(&json).unwrap(), std::fs::read(&st).unwrap());
    assert_ne!(
        new_pair.0, want_json,
        "the two specs give different results"
    );
    for _ in 0..4 {
        std::fs::write(&json, &want_json).unwrap();
        std::fs::write(&st, &want_st).unwrap();
        let at = t_probe.mul_f64(rng.random_range(0.1..1.2));
        kill_after(&["probe", s, "--force"], at);
        let st_now = std::fs::read(&st).unwrap();
        match std::fs::read(&json) {
            Ok(j) if j == want_json => assert_eq!(st_now, want_st, "old JSON with new weights"),
            Ok(j) => assert_eq!((j, st_now), new_pair, "a new JSON is whole and paired"),
            Err(_) => assert!(
                st_now == want_st || st_now == new_pair.1,
                "weights are whole"
            ),
        }
    }
    std::fs::write(&spec, &v1).unwrap();
    std::fs::write(&json, &want_json).unwrap();
    std::fs::write(&st, &want_st).unwrap();
    // Temp files of killed runs are dot-files and never shadow the result.
    let visible_files = visible(d.path());
    assert!(
        visible_files.iter().all(
            |n| ["ref", "killed", "p.toml", "p.result.json", "p.safetensors"].contains(&n.as_str())
        ),
        "{visible_files:?}"
    );
}

#[test]
fn killed_report_runs_leave_no_report_or_a_whole_one() {
    let d = tempfile::tempdir().unwrap();
    let zoo = d.path().join("zoo");
    let z = zoo.to_str().unwrap();
    run(&[
        "zoo",
        "--quick",
        "--seed",
        "0",
        "--only",
        "base,rlhf,rlhf-optout",
        "--out",
        z,
    ]);
    let pairs = zoo.join("pairs.toml");
    std::fs::write(
        &pairs,
        "[[pair]]\nname = \"optout\"\na = \"rlhf\"\nb = \"rlhf-optout\"\ncontrast = \"optout\"\nmetric = \"mode\"\n",
    )
    .unwrap();
    let p = pairs.to_str().unwrap();
    let report = |out: &Path, force: bool| {
        let mut a = vec!["report", "--pairs", p, "--n", "64", "--out"];
        a.push(out.to_str().unwrap());
        if force {
            a.push("--force");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let reference = d.path().join("ref");
    let t = run(&report(&reference, false));
    let want = files(&reference);
    assert!(want.iter().any(|(n, _)| n == "index.html"), "{want:?}");
    let out = d.path().join("rep");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut absent, mut whole) = (0, 0);
    for round in 0..10 {
        // Rounds 0–4 write a new report; 5–9 replace a whole one with --force.
        let force = round >= 5;
        if force && !out.exists() {
            run(&report(&out, false));
        }
        // Mostly late: the write is the last part of a run.
        let at = t.mul_f64(rng.random_range(0.3..1.05));
        kill_after(&report(&out, force), at);
        if out.exists() {
            assert_eq!(
                files(&out),
                want,
                "round {round}: a partial report is visible"
            );
            whole += 1;
        } else {
            assert!(!force, "round {round}: --force lost the existing report");
            absent += 1;
        }
    }
    eprintln!(
        "report: {:.1} s; after kills {absent} absent, {whole} whole",
        t.as_secs_f64()
    );
    // A finished run cleans up what the killed ones left (their processes are gone).
    run(&report(&out, true));
    assert_eq!(files(&out), want);
    let left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rep."))
        .collect();
    assert!(left.is_empty(), "leftovers of killed runs: {left:?}");
}
