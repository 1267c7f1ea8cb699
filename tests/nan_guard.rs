//! Issue 7.5: training stops with a clear error when the loss stops being finite, and the
//! analyses refuse non-finite activations with a message naming the hook, instead of writing
//! NaN tables. Overflow comes from finite but huge weights (they pass the loader's NaN check).

mod common;
use common::feedlens_1thread as feedlens;
#[path = "bad_inputs/corpus.rs"]
mod corpus;

use common::assert_clean_error;
use std::path::Path;

/// The tiny fixture with every token embedding scaled to ~1e36: finite weights whose first
/// LayerNorm overflows (the variance needs x², past f32's 3.4e38).
fn huge_checkpoint(dir: &Path) {
    corpus::good_checkpoint(dir);
    let mut t = corpus::fixture_tensors();
    let wte = t.iter_mut().find(|e| e.0.ends_with("wte.weight")).unwrap();
    wte.3 = wte
        .3
        .chunks(4)
        .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * 1e36).to_le_bytes())
        .collect();
    std::fs::write(dir.join("model.safetensors"), corpus::st_bytes(&t)).unwrap();
}

#[test]
fn training_stops_when_the_loss_is_not_finite() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ck");
    let o = out.to_str().unwrap();
    // An absurd (but finite, so accepted) learning rate: the first AdamW step moves every
    // weight by ~1e30, and the next forward overflows.
    let r = feedlens(&[
        "train",
        "pretrain",
        "--lr",
        "1e30",
        "--warmup",
        "0",
        "--steps",
        "5",
        "--batch",
        "4",
        "--n-layer",
        "1",
        "--n-embd",
        "8",
        "--n-head",
        "2",
        "--out",
        o,
    ]);
    assert_clean_error(&r, "training stopped, nothing saved");
    assert!(!out.exists(), "a checkpoint was written");
    // A parent whose weights already overflow: stops at the first step.
    let huge = d.path().join("huge");
    huge_checkpoint(&huge);
    let r = feedlens(&[
        "train",
        "sft",
        "--parent",
        huge.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "4",
        "--out",
        o,
    ]);
    assert_clean_error(&r, "at step 0; training stopped");
    assert!(!out.exists(), "a checkpoint was written");
}

#[test]
fn analyses_refuse_non_finite_activations_naming_the_hook() {
    let d = tempfile::tempdir().unwrap();
    let huge = d.path().join("huge");
    huge_checkpoint(&huge);
    let h = huge.to_str().unwrap();
    let good = common::fixture("gpt2-tiny");
    let g = good.to_str().unwrap();
    let spec = d.path().join("s.toml");
    std::fs::write(
        &spec,
        format!("checkpoints = [{h:?}]\nlabel = \"optout\"\nn = 20\nfolds = 2\n"),
    )
    .unwrap();
    let json = d.path().join("out.json");
    let j = json.to_str().unwrap();
    for args in [
        vec!["lens", h, "--ids", "1,2,3", "--json", j],
        vec![
            "patch",
            h,
            "--clean-ids",
            "1,2,3",
            "--corrupt-ids",
            "1,2,4",
            "--metric",
            "logit-diff:1,2",
            "--json",
            j,
        ],
        vec![
            "patch",
            h,
            "--pairs",
            "optout",
            "--n",
            "4",
            "--method",
            "attribution",
        ],
        vec![
            "patch-models",
            g,
            h,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
        ],
        vec![
            "patch-models",
            h,
            g,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
        ],
        vec!["probe", spec.to_str().unwrap()],
    ] {
        let r = feedlens(&args);
        assert_clean_error(&r, "NaN or infinite");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("hook blocks.") || err.contains("hook hook_"),
            "{args:?}: {err}"
        );
        assert!(!json.exists(), "{args:?} wrote output");
    }
}

#[test]
fn finite_check_names_the_first_bad_hook() {
    use candle_core::{Device, Tensor};
    use feedlens::{model::hooks::check_finite, Hook};
    let ok = Tensor::new(&[1f32, -2.0, 3e38], &Device::Cpu).unwrap();
    assert!(check_finite(Hook::ResidPre(0), &ok).is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let t = Tensor::new(&[1f32, bad, 0.0], &Device::Cpu).unwrap();
        let e = check_finite(Hook::MlpOut(2), &t).unwrap_err().to_string();
        assert!(e.starts_with("hook blocks.2.hook_mlp_out: "), "{e}");
    }
}
