//! Logit lens: the read-out at the last layer is the model's own output, batches average.

mod common;

use candle_core::D;
use feedlens::analysis::lens::logit_lens;
use feedlens::io::checkpoint;
use feedlens::{Input, Run};

const TINY: &str = "tests/fixtures/gpt2-tiny";

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 7, 3, 22, 9, 14, 40, 2],
        vec![1, 5, 3, 2, 49, 0, 11, 30],
    ]
}

/// The model's output probabilities `[batch][vocab]` at `pos`.
fn output_probs(ids: &[Vec<u32>], pos: usize) -> Vec<Vec<f32>> {
    let ck = checkpoint::load(TINY).unwrap();
    let out = ck
        .model
        .forward(
            &Input::Ids(ck.model.ids_tensor(ids).unwrap()),
            &Run::default(),
        )
        .unwrap();
    let logits = out
        .logits
        .unwrap()
        .narrow(1, pos, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    candle_nn::ops::softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn last_layer_equals_model_output() {
    let ck = checkpoint::load(TINY).unwrap();
    let all: Vec<u32> = (0..50).collect();
    for pos in [0, 3, 7] {
        let ids = &prompts()[..1];
        let r = logit_lens(&ck.model, ids, Some(pos), &all).unwrap();
        assert_eq!(r.hooks.len(), 4);
        assert_eq!(r.hooks[0].to_string(), "blocks.0.hook_resid_pre");
        assert_eq!(r.hooks[3].to_string(), "blocks.2.hook_resid_post");
        let want = &output_probs(ids, pos)[0];
        let last = &r.probs[3];
        for (i, (&p, &q)) in last.iter().zip(want).enumerate() {
            assert!(
                (p - q as f64).abs() < 1e-6,
                "pos {pos} token {i}: {p} vs {q}"
            );
        }
        let s: f64 = r.probs.iter().map(|p| p.iter().sum::<f64>()).sum::<f64>() / 4.0;
        assert!(
            (s - 1.0).abs() < 1e-5,
            "each point's distribution sums to 1: {s}"
        );
    }
}

#[test]
fn batch_is_the_mean_of_single_prompts() {
    let ck = checkpoint::load(TINY).unwrap();
    let toks = [3, 14, 40];
    let both = logit_lens(&ck.model, &prompts(), None, &toks).unwrap();
    assert_eq!((both.pos, both.n_prompts), (7, 2));
    let one: Vec<_> = prompts()
        .iter()
        .map(|p| logit_lens(&ck.model, std::slice::from_ref(p), None, &toks).unwrap())
        .collect();
    for k in 0..4 {
        for j in 0..3 {
            let mean = (one[0].probs[k][j] + one[1].probs[k][j]) / 2.0;
            assert!((both.probs[k][j] - mean).abs() < 1e-7);
        }
    }
    // Without tokens: the 3 most probable at the output, in decreasing order.
    let top = logit_lens(&ck.model, &prompts(), None, &[]).unwrap();
    assert_eq!(top.tokens.len(), 3);
    assert_eq!(top.tokens[0], top.top[3].0);
    assert!(top.probs[3][0] >= top.probs[3][1] && top.probs[3][1] >= top.probs[3][2]);
}

#[test]
fn bad_position_and_tokens_are_errors() {
    let ck = checkpoint::load(TINY).unwrap();
    let e = logit_lens(&ck.model, &prompts(), Some(8), &[1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--pos 8") && e.contains("8 tokens"), "{e}");
    let e = logit_lens(&ck.model, &prompts(), None, &[50])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token id 50") && e.contains("vocab_size 50"),
        "{e}"
    );
    let e = ck.token_list("3,E", "--tokens").unwrap_err().to_string();
    assert!(e.contains("'E'") && e.contains("no tokenizer"), "{e}");
    assert_eq!(ck.token_list("3, #7", "--tokens").unwrap(), [3, 7]);
}

#[test]
fn cli_writes_table_json_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lens.json");
    common::feedlens_ok(&[
        "lens",
        TINY,
        "--ids",
        "1,7,3,22,9",
        "--ids",
        "1,5,3,2,49",
        "--pos",
        "3",
        "--tokens",
        "3,14",
        "--json",
        json.to_str().unwrap(),
        "--png",
        dir.path().join("lens").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["probs"].as_array().unwrap().len(), 4);
    assert_eq!(v["n_prompts"], 2);
    assert!(dir.path().join("lens.png").exists() && dir.path().join("lens.svg").exists());

    for (args, want) in [
        (vec!["--ids", "1,2,3", "--pos", "5"], "--pos 5"),
        (vec!["--ids", "1,2,3", "--tokens", "E"], "'E'"),
        (vec!["--ids", "1,2,99"], "token id 99"),
    ] {
        let out = common::bin()
            .args(["lens", TINY])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked at") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
