//! `feedlens inspect` / `feedlens run` on the fixture, and every bad-input case of the model
//! issue through the binary: one `error:` line naming the file or argument, non-zero exit,
//! no panic.

mod common;

use common::*;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::fs;

fn tiny() -> String {
    fixture("gpt2-tiny").display().to_string()
}

/// Rewrite `ck/model.safetensors` with tensor `name` replaced by (dtype, shape, bytes).
/// `feedlens inspect CK` fails with one error line containing `needle`.
fn inspect_fails(ck: &std::path::Path, needle: &str) {
    assert_clean_error(&feedlens(&["inspect", &ck.display().to_string()]), needle);
}

fn rewrite_tensor(
    ck: &std::path::Path,
    name: &str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
) {
    let path = ck.join("model.safetensors");
    let raw = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == name) {
        *t = (name.to_string(), dtype, shape.clone(), bytes.clone());
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    fs::write(&path, out).unwrap();
}

#[test]
fn inspect_and_run_work_on_the_fixture() {
    let out = feedlens(&["inspect", &tiny()]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("n_layer 3") && s.contains("parameters: 88464"),
        "{s}"
    );
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("o.json");
    let js = j.display().to_string();
    let out = feedlens(&[
        "run",
        &tiny(),
        "--ids",
        "1,2,3",
        "--ids",
        "4,5,6",
        "--hooks",
        "blocks.2.attn.hook_pattern",
        "--json",
        &js,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&j).unwrap()).unwrap();
    assert_eq!(v["logits"]["shape"], serde_json::json!([2, 3, 50]));
    assert_eq!(
        v["hooks"]["blocks.2.attn.hook_pattern"]["shape"],
        serde_json::json!([2, 4, 3, 3])
    );
    // Each pattern row sums to 1.
    let row = v["hooks"]["blocks.2.attn.hook_pattern"]["data"][1][3][2]
        .as_array()
        .unwrap();
    let s: f64 = row.iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((s - 1.0).abs() < 1e-5);
    // No silent overwrite.
    let again = feedlens(&["run", &tiny(), "--ids", "1,2,3", "--json", &js]);
    assert_clean_error(&again, "already exists");
}

#[test]
fn missing_checkpoint() {
    assert_clean_error(
        &feedlens(&["inspect", "/nonexistent/ck"]),
        "/nonexistent/ck: no such checkpoint directory",
    );
}

#[test]
fn missing_weights_file() {
    let (_d, ck) = tiny_copy();
    fs::remove_file(ck.join("model.safetensors")).unwrap();
    inspect_fails(&ck, "model.safetensors: no such file");
}

#[test]
fn truncated_safetensors() {
    let (_d, ck) = tiny_copy();
    let p = ck.join("model.safetensors");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() / 2]).unwrap();
    inspect_fails(&ck, "model.safetensors: not a valid safetensors file");
}

#[test]
fn not_a_safetensors_file() {
    let (_d, ck) = tiny_copy();
    fs::write(
        ck.join("model.safetensors"),
        b"hello, this is not a tensor file",
    )
    .unwrap();
    inspect_fails(&ck, "not a valid safetensors file");
}

#[test]
fn tensor_with_wrong_shape() {
    let (_d, ck) = tiny_copy();
    rewrite_tensor(
        &ck,
        "transformer.h.1.mlp.c_fc.bias",
        Dtype::F32,
        vec![10],
        vec![0u8; 40],
    );
    inspect_fails(&ck, "tensor 'h.1.mlp.c_fc.bias' has shape [10]");
}

#[test]
fn tensor_with_wrong_dtype() {
    let (_d, ck) = tiny_copy();
    rewrite_tensor(
        &ck,
        "transformer.ln_f.bias",
        Dtype::I64,
        vec![48],
        vec![0u8; 48 * 8],
    );
    inspect_fails(&ck, "'transformer.ln_f.bias' has dtype I64");
}

#[test]
fn nan_weights() {
    let (_d, ck) = tiny_copy();
    let bytes: Vec<u8> = (0..48)
        .flat_map(|i| if i == 3 { f32::NAN } else { 0.0 }.to_le_bytes())
        .collect();
    rewrite_tensor(&ck, "transformer.ln_f.bias", Dtype::F32, vec![48], bytes);
    inspect_fails(&ck, "contains NaN");
}

#[test]
fn config_disagrees_with_weights() {
    let (_d, ck) = tiny_copy();
    let p = ck.join("config.json");
    let s = fs::read_to_string(&p)
        .unwrap()
        .replace("\"n_embd\": 48", "\"n_embd\": 64");
    fs::write(&p, s).unwrap();
    inspect_fails(&ck, "config.json disagrees with the weights");
}

#[test]
fn config_with_bad_fields() {
    let (_d, ck) = tiny_copy();
    let p = ck.join("config.json");
    let orig = fs::read_to_string(&p).unwrap();
    fs::write(&p, orig.replace("\"n_head\": 4", "\"n_head\": 5")).unwrap();
    inspect_fails(&ck, "config.json: n_embd 48 is not divisible by n_head 5");
    fs::write(&p, orig.replace("\"n_layer\": 3", "\"n_layer\": \"three\"")).unwrap();
    inspect_fails(&ck, "config.json: invalid config");
    fs::write(&p, "{").unwrap();
    inspect_fails(&ck, "config.json: invalid config");
}

#[test]
fn unknown_hook_lists_valid_names() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("o.json").display().to_string();
    let out = feedlens(&[
        "run",
        &tiny(),
        "--ids",
        "1,2",
        "--hooks",
        "blocks.7.hook_resid_pre",
        "--json",
        &j,
    ]);
    assert_clean_error(
        &out,
        "unknown hook 'blocks.7.hook_resid_pre'; valid hooks: hook_embed",
    );
    let out = feedlens(&[
        "run",
        &tiny(),
        "--ids",
        "1,2",
        "--hooks",
        "blocks.0.hook_resid",
        "--json",
        &j,
    ]);
    assert_clean_error(&out, "--hooks: unknown hook");
}

/// `feedlens run TINY PROMPT.. --json TMP` fails with one error line containing `needle`.
fn run_fails(prompt: &[&str], needle: &str) {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("o.json").display().to_string();
    let t = tiny();
    let mut args = vec!["run", t.as_str()];
    args.extend_from_slice(prompt);
    args.extend(["--json", j.as_str()]);
    assert_clean_error(&feedlens(&args), needle);
}

#[test]
fn token_id_out_of_range() {
    run_fails(
        &["--ids", "1,50"],
        "token id 50 is out of range (vocab_size 50)",
    );
    run_fails(&["--ids", "1,x"], "--ids: 'x' is not a token id");
}

#[test]
fn sequence_longer_than_context() {
    let ids = (0..25).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    run_fails(&["--ids", &ids], "longer than n_positions 24");
}

#[test]
fn text_without_tokenizer() {
    run_fails(&["--text", "hello"], "no tokenizer.json");
}

#[test]
fn unknown_tensor_is_a_warning_and_attn_buffers_are_ignored() {
    let (_d, ck) = tiny_copy();
    let path = ck.join("model.safetensors");
    let raw = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let mut views: Vec<(String, TensorView)> = st.tensors().into_iter().collect();
    let extra = vec![0u8; 16];
    views.push((
        "transformer.h.0.attn.bias".into(),
        TensorView::new(Dtype::F32, vec![4], &extra).unwrap(),
    ));
    views.push((
        "extra.thing".into(),
        TensorView::new(Dtype::F32, vec![4], &extra).unwrap(),
    ));
    let out = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    fs::write(&path, out).unwrap();
    let out = feedlens(&["inspect", &ck.display().to_string()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("unknown tensor 'extra.thing'"),
        "{err}"
    );
    assert!(!err.contains("attn.bias"), "{err}");
}

#[test]
fn run_output_is_identical_across_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    let mut outputs = vec![];
    for threads in ["1", "2"] {
        let j = d.path().join(format!("t{threads}.json"));
        let out = common::bin()
            .args([
                "run",
                &tiny(),
                "--ids",
                "1,2,3,4,5,6,7,8,9,10,11,12",
                "--ids",
                "12,11,10,9,8,7,6,5,4,3,2,1",
            ])
            .args([
                "--hooks",
                "blocks.1.hook_resid_post,blocks.2.attn.hook_z",
                "--json",
                &j.display().to_string(),
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(out.status.success());
        outputs.push(fs::read(&j).unwrap());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "JSON differs between 1 and 2 threads"
    );
}
