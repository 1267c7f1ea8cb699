//! Issue 7.4: analysis outputs are byte-identical across two runs and across
//! `RAYON_NUM_THREADS=1` vs `2`: probe spec results (JSON + weights), patching and
//! cross-checkpoint patching JSON, logit-lens JSON. (Checkpoints from `zoo --quick` are covered
//! by tests/train_cli.rs, `run` JSON by tests/cli_model.rs.)

mod common;

use std::path::Path;

fn feedlens(args: &[&str], threads: &str) {
    let o = common::feedlens_threads(args, threads);
    assert!(
        o.status.success(),
        "feedlens {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A 2-layer toy-world checkpoint after a few pretraining steps (weights away from init).
fn tiny_world(dir: &Path, seed: &str) {
    feedlens(
        &[
            "train",
            "pretrain",
            "--steps",
            "3",
            "--batch",
            "8",
            "--n-layer",
            "2",
            "--n-embd",
            "16",
            "--n-head",
            "2",
            "--seed",
            seed,
            "--out",
            dir.to_str().unwrap(),
        ],
        "1",
    );
}

#[test]
fn analysis_outputs_are_bit_identical_across_runs_and_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    tiny_world(&a, "0");
    tiny_world(&b, "1");
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    // Three runs: threads 1, 1 again, 2. Each writes every output into its own folder.
    let mut runs: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for (k, threads) in ["1", "1", "2"].into_iter().enumerate() {
        let out = d.path().join(format!("run{k}"));
        std::fs::create_dir(&out).unwrap();
        let o = |f: &str| out.join(f).to_str().unwrap().to_string();
        let spec = out.join("p.toml");
        std::fs::write(
            &spec,
            format!(
                "checkpoints = [{sa:?}, {sb:?}]\nlabel = \"optout\"\nn = 48\nfolds = 3\n\
                 null_directions = 20\ncausal_alpha = 0.5\nseed = 5\n"
            ),
        )
        .unwrap();
        feedlens(&["probe", spec.to_str().unwrap()], threads);
        feedlens(
            &[
                "patch",
                sa,
                "--pairs",
                "optout",
                "--n",
                "6",
                "--seed",
                "2",
                "--method",
                "both",
                "--json",
                &o("patch.json"),
            ],
            threads,
        );
        feedlens(
            &[
                "patch-models",
                sa,
                sb,
                "--prompt-ids",
                "1,3,4,15,10,16,17,18,19,20,11",
                "--prompt-ids",
                "1,15,15,15,10,20,19,18,17,16,11",
                "--metric",
                "logit-diff:12,13",
                "--json",
                &o("pm.json"),
            ],
            threads,
        );
        feedlens(
            &[
                "lens",
                sa,
                "--ids",
                "1,3,4,15,10,16,17,18,19,20,11",
                "--json",
                &o("lens.json"),
            ],
            threads,
        );
        let files = [
            "p.result.json",
            "p.safetensors",
            "patch.json",
            "pm.json",
            "lens.json",
        ];
        runs.push(
            files
                .iter()
                .map(|f| (f.to_string(), std::fs::read(out.join(f)).unwrap()))
                .collect(),
        );
    }
    for (k, what) in [(1, "a second run"), (2, "RAYON_NUM_THREADS=2")] {
        for ((name, first), (_, other)) in runs[0].iter().zip(&runs[k]) {
            // The probe result names its checkpoints by path, the same in every run; nothing
            // else may differ by a single byte.
            assert!(first == other, "{name} differs in {what}");
        }
    }
}
