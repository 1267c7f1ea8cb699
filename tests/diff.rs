//! `feedlens diff`: relative Frobenius norms per component against independent arithmetic.

mod common;

use candle_core::Tensor;
use feedlens::analysis::diff::weight_diff;
use feedlens::io::checkpoint::{self, Manifest};
use feedlens::model::{Config, Model, Weights};
use std::collections::HashMap;

const TINY: &str = "tests/fixtures/gpt2-tiny";

fn squares(t: &Tensor) -> f64 {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum()
}

#[test]
fn diff_with_itself_is_zero() {
    let ck = checkpoint::load(TINY).unwrap();
    let d = weight_diff(&ck.model, "a", &ck.model, "a").unwrap();
    // wte, wpe, 6 per block, ln_f.
    assert_eq!(d.components.len(), 2 + 6 * 3 + 1);
    for c in &d.components {
        assert_eq!(c.norm_diff, 0.0, "{} {}", c.group, c.component);
        assert_eq!(c.relative, Some(0.0));
        assert!(c.norm_a > 0.0);
    }
    let params: usize = d.components.iter().map(|c| c.n_params).sum();
    assert_eq!(params, ck.model.n_params());
    assert_eq!(d.headline(), feedlens::analysis::diff::Headline::NoChange);
    assert!(
        d.headline_text().starts_with("no change"),
        "{}",
        d.headline_text()
    );
    let (ok, out, _) = common::feedlens_text(&["diff", TINY, TINY]);
    assert!(ok && out.contains("headline: no change"), "{out}");
}

#[test]
fn known_perturbation_gives_expected_norm() {
    let ck = checkpoint::load(TINY).unwrap();
    let delta = 0.01f64; // added to every entry of one weight matrix
    let target = "h.1.mlp.c_fc.weight";
    let mut map: HashMap<String, Tensor> = ck.model.tensors().into_iter().collect();
    let w = map[target].clone();
    map.insert(target.into(), (&w + delta).unwrap());
    let b = Model::load(
        ck.model.config().clone(),
        &mut Weights::new("<perturbed>", map),
    )
    .unwrap();
    let d = weight_diff(&ck.model, "tiny", &b, "perturbed").unwrap();
    let bias = &ck
        .model
        .tensors()
        .into_iter()
        .find(|(n, _)| n == "h.1.mlp.c_fc.bias")
        .unwrap()
        .1;
    // ‖Δ‖ = δ·√n over the weight only; ‖A‖ covers weight and bias together.
    let want_diff = delta * (w.elem_count() as f64).sqrt();
    let want_rel = want_diff / (squares(&w) + squares(bias)).sqrt();
    for c in &d.components {
        if c.group == "1" && c.component == "mlp.c_fc" {
            assert_eq!(c.tensors, ["h.1.mlp.c_fc.weight", "h.1.mlp.c_fc.bias"]);
            // f32 storage of w + δ rounds each entry by ≤ 2⁻²⁴·|w|; 1e-4 relative covers it.
            assert!(
                (c.norm_diff - want_diff).abs() < 1e-4 * want_diff,
                "{} vs {want_diff}",
                c.norm_diff
            );
            let rel = c.relative.unwrap();
            assert!(
                (rel - want_rel).abs() < 1e-4 * want_rel,
                "{rel} vs {want_rel}"
            );
        } else {
            assert_eq!(c.norm_diff, 0.0, "{} {}", c.group, c.component);
        }
    }
    // The only changed component heads both the absolute and the relative ranking.
    let i = d
        .components
        .iter()
        .position(|c| c.group == "1" && c.component == "mlp.c_fc")
        .unwrap();
    assert_eq!(
        d.headline(),
        feedlens::analysis::diff::Headline::Largest {
            absolute: i,
            relative: Some(i)
        }
    );
    assert!(d.headline_text().contains("mlp.c_fc of layer 1"));
    let bars = feedlens::view::figures::weight_diff_bars(
        "t",
        &feedlens::view::figures::weight_bars_of(&d, false),
        false,
    );
    assert_eq!(bars.groups, ["embed", "0", "1", "2", "final"]);
    assert_eq!(bars.series.len(), 9);
    assert_eq!(
        bars.values[2][6],
        d.components
            .iter()
            .find(|c| c.group == "1" && c.component == "mlp.c_fc")
            .unwrap()
            .relative
    );
}

#[test]
fn cli_table_json_png_and_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let stem = dir.path().join("d");
    let out = common::feedlens_ok(&[
        "diff",
        TINY,
        TINY,
        "--json",
        json.to_str().unwrap(),
        "--png",
        stem.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("attn.c_attn") && table.contains("ln_f"),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["components"].as_array().unwrap().len(), 21);
    assert!(dir.path().join("d.png").exists() && dir.path().join("d.svg").exists());

    // A checkpoint of another width.
    let other = dir.path().join("wide");
    let m = Model::init(Config::new(3, 64, 4, 24, 50), 0).unwrap();
    checkpoint::save(&other, &m, None, &Manifest::default(), false).unwrap();
    let out = common::bin()
        .args(["diff", TINY])
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked at"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(TINY) && err.contains("wide") && err.contains("shape"),
        "{err}"
    );
}
