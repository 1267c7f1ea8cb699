//! Every family against HF transformers and TransformerLens on `tests/fixtures/families/`
//! (random-weight models made by `make.py` there): logits and every hook to 1e-4, the
//! differentiable path, start-at-layer with cached keys/values, the last-position shortcut,
//! `Logits::Tokens` on untied heads, activation patching against TransformerLens's
//! `get_act_patch_*`, and the one-line errors for configs and weights feedlens does not run.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use feedlens::analysis::patching::{sweep, Direction, Metric, Pair, Setup};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint;
use feedlens::{Hook, Input, Logits, Run, Start};
use std::collections::HashMap;
use std::path::Path;

const TOL: f32 = 1e-4;

/// Every model folder of the fixture.
const MODELS: [&str; 7] = [
    "gpt2-untied",
    "gpt2-relu",
    "neox-parallel",
    "neox-sequential",
    "llama-gqa",
    "llama-bias-tied",
    "qwen2-gqa",
];

fn dir(name: &str) -> std::path::PathBuf {
    fixture(&format!("families/{name}"))
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    load_st(&dir(name).join("reference.safetensors"))
}

fn run_all(m: &feedlens::Model, ids: &Tensor, grad: bool) -> feedlens::Output {
    m.forward(
        &Input::Ids(ids.clone()),
        &Run {
            cache: m.hooks(),
            grad,
            ..Run::default()
        },
    )
    .unwrap()
}

#[test]
fn logits_and_every_hook_match_hf_and_transformerlens_in_every_family() {
    for name in MODELS {
        let ck = checkpoint::load(dir(name)).unwrap();
        assert!(ck.warnings.is_empty(), "{name}: {:?}", ck.warnings);
        let r = reference(name);
        let ids = ck.model.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
        for grad in [false, true] {
            let out = run_all(&ck.model, &ids, grad);
            let logits = out.logits.unwrap();
            for key in ["logits", "tl_logits"] {
                let d = max_abs(&logits, &r[key]);
                assert!(d < TOL, "{name} grad={grad}: {key} max |diff| {d}");
            }
            let mut checked = 0;
            for h in ck.model.hooks() {
                let key = format!("cache.{h}");
                let want = r
                    .get(&key)
                    .unwrap_or_else(|| panic!("{name}: fixture lacks {key}"));
                let d = max_abs(out.cache.get(h).unwrap(), want);
                assert!(d < TOL, "{name} grad={grad}: {h} max |diff| {d}");
                checked += 1;
            }
            // Every fixture hook with a feedlens name was compared (the others are
            // TransformerLens-only: hook_rot_q/k, mlp.hook_pre/post).
            let named = r
                .keys()
                .filter_map(|k| k.strip_prefix("cache."))
                .filter(|k| k.parse::<Hook>().is_ok())
                .count();
            assert_eq!(checked, named, "{name}");
        }
    }
}

#[test]
fn gqa_hooks_have_the_key_value_head_count() {
    let ck = checkpoint::load(dir("llama-gqa")).unwrap();
    let r = reference("llama-gqa");
    let ids = ck.model.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
    let out = run_all(&ck.model, &ids, false);
    assert_eq!(out.cache.get(Hook::Q(0)).unwrap().dims(), [2, 10, 4, 12]);
    assert_eq!(out.cache.get(Hook::K(0)).unwrap().dims(), [2, 10, 2, 12]);
    assert_eq!(out.cache.get(Hook::V(0)).unwrap().dims(), [2, 10, 2, 12]);
    assert_eq!(out.cache.get(Hook::Z(0)).unwrap().dims(), [2, 10, 4, 12]);
}

#[test]
fn start_at_layer_with_past_kv_and_last_position_match_the_full_run() {
    for name in MODELS {
        let ck = checkpoint::load(dir(name)).unwrap();
        let m = &ck.model;
        let r = reference(name);
        let ids = m.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
        let full = run_all(m, &ids, false);
        let logits = full.logits.unwrap(); // [2, 10, vocab]
        let (n_layer, t, off) = (m.config().n_layer, 10, 4);
        for first in [1, n_layer] {
            let resid = if first < n_layer {
                full.cache.get(Hook::ResidPre(first)).unwrap()
            } else {
                full.cache.get(Hook::ResidPost(n_layer - 1)).unwrap()
            };
            let past = (first..n_layer)
                .map(|l| {
                    let k = full
                        .cache
                        .get(Hook::K(l))
                        .unwrap()
                        .narrow(1, 0, off)
                        .unwrap();
                    let v = full
                        .cache
                        .get(Hook::V(l))
                        .unwrap()
                        .narrow(1, 0, off)
                        .unwrap();
                    (k, v)
                })
                .collect();
            let out = m
                .forward(
                    &Input::Resid(Start {
                        layer: first,
                        resid: resid.narrow(1, off, t - off).unwrap(),
                        offset: off,
                        past,
                    }),
                    &Run::default(),
                )
                .unwrap();
            let d = max_abs(
                &out.logits.unwrap(),
                &logits.narrow(1, off, t - off).unwrap(),
            );
            assert!(d < TOL, "{name} start at {first}: {d}");
        }
        // The last block at the last position only, and a few vocabulary columns.
        let tokens = vec![3u32, 17, 40];
        let out = m
            .forward(
                &Input::Ids(ids.clone()),
                &Run {
                    logits: Logits::Tokens {
                        positions: vec![t - 1],
                        tokens: tokens.clone(),
                    },
                    last_position_only: true,
                    ..Run::default()
                },
            )
            .unwrap();
        let idx = Tensor::new(tokens.as_slice(), ids.device()).unwrap();
        let want = logits
            .narrow(1, t - 1, 1)
            .unwrap()
            .contiguous()
            .unwrap()
            .index_select(&idx, 2)
            .unwrap();
        let d = max_abs(&out.logits.unwrap(), &want);
        assert!(d < TOL, "{name} last position, tokens: {d}");
    }
}

#[test]
fn patching_matches_transformerlens_in_each_family() {
    for name in ["gpt2-untied", "neox-parallel", "llama-gqa"] {
        let r = reference(name);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir(name).join("reference.json")).unwrap())
                .unwrap();
        let ids = |k: &str| ids_rows(&r[k]).remove(0);
        let pair = Pair {
            clean: ids("patch.clean_ids"),
            corrupt: ids("patch.corrupt_ids"),
            metric: Metric::LogitDiff {
                a: meta["patch"]["tok_a"].as_u64().unwrap() as u32,
                b: meta["patch"]["tok_b"].as_u64().unwrap() as u32,
            },
        };
        let ck = checkpoint::load(dir(name)).unwrap();
        let setup = Setup::new(&ck.model, vec![pair], None, Direction::Denoise).unwrap();
        let sw = sweep(&ck.model, &setup, &Site::PATCHED).unwrap();
        let flat = |k: &str| {
            r[k].to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert!((sw.clean_metric - flat("patch.clean_metric")[0]).abs() < TOL);
        assert!((sw.corrupt_metric - flat("patch.corrupt_metric")[0]).abs() < TOL);
        for (c, key) in [
            (Site::ResidPre, "patch.resid_pre"),
            (Site::AttnOut, "patch.attn_out"),
            (Site::MlpOut, "patch.mlp_out"),
            (Site::HeadOut, "patch.head_out_by_pos"),
        ] {
            let g = sw.grid(c).unwrap();
            assert_eq!(g.shape, r[key].dims(), "{name} {c}");
            let d = g
                .raw
                .iter()
                .zip(flat(key))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < TOL, "{name} {c}: max |diff| to TransformerLens {d}");
        }
    }
}

#[test]
fn hooks_a_family_lacks_are_refused_by_name() {
    let ck = checkpoint::load(dir("neox-parallel")).unwrap();
    let ids = ck.model.ids_tensor(&[vec![1, 2, 3]]).unwrap();
    for (h, why) in [
        (Hook::ResidMid(0), "parallel"),
        (Hook::PosEmbed, "rotary"),
        (Hook::ResidPre(3), "no such layer"),
    ] {
        let e = ck
            .model
            .forward(
                &Input::Ids(ids.clone()),
                &Run {
                    cache: vec![h],
                    ..Run::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains(&h.to_string()) && e.contains(why), "{e}");
    }
    assert!(!ck.model.hooks().contains(&Hook::ResidMid(0)));
}

/// A copy of fixture `name` in a temp folder with `edit` applied to its config.json.
fn with_config(name: &str, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir(name).join(f), t.path().join(f)).unwrap();
    }
    let p = t.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    t
}

fn load_err(p: &Path) -> String {
    match checkpoint::load(p) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn configs_and_weights_feedlens_does_not_run_get_one_line_errors() {
    use serde_json::json;
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "gpt2-relu",
            Box::new(|c| c["model_type"] = json!("bert")),
            "config.json",
            "model_type \"bert\" is not supported",
        ),
        (
            "gpt2-relu",
            Box::new(|c| c["architectures"] = json!(["GPT2Model"])),
            "config.json",
            "architectures \"GPT2Model\"",
        ),
        (
            "gpt2-relu",
            Box::new(|c| c["activation_function"] = json!("quick_gelu")),
            "config.json",
            "activation_function 'quick_gelu' is not supported",
        ),
        (
            "gpt2-relu",
            Box::new(|c| c["add_cross_attention"] = json!(true)),
            "config.json",
            "add_cross_attention = true",
        ),
        (
            "llama-gqa",
            Box::new(|c| {
                c["rope_parameters"] =
                    json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
            }),
            "config.json",
            "rope_type \"linear\" is not supported",
        ),
        (
            "llama-gqa",
            Box::new(|c| c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0})),
            "config.json",
            "rope_scaling",
        ),
        (
            "llama-gqa",
            Box::new(|c| c["num_key_value_heads"] = json!(3)),
            "config.json",
            "num_key_value_heads 3",
        ),
        (
            "llama-gqa",
            Box::new(|c| c["hidden_act"] = json!("gelu_10")),
            "config.json",
            "hidden_act 'gelu_10'",
        ),
        (
            "qwen2-gqa",
            Box::new(|c| c["use_sliding_window"] = json!(true)),
            "config.json",
            "use_sliding_window = true",
        ),
        (
            "neox-sequential",
            Box::new(|c| c["use_parallel_residual"] = json!("yes")),
            "config.json",
            "use_parallel_residual is \"yes\"",
        ),
        (
            "llama-gqa",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("num_hidden_layers");
            }),
            "config.json",
            "missing field `num_hidden_layers`",
        ),
        // Weights of one family with the config of another.
        (
            "llama-gqa",
            Box::new(|c| {
                *c = json!({"model_type": "gpt_neox", "num_hidden_layers": 3, "hidden_size": 48,
                    "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 64, "rotary_pct": 0.5})
            }),
            "model.safetensors",
            "holds Llama-style tensors, but config.json describes a GPT-NeoX model",
        ),
        // A config that disagrees with the weights of its own family.
        (
            "neox-sequential",
            Box::new(|c| c["tie_word_embeddings"] = json!(true)),
            "model.safetensors",
            "embed_out.weight differs from the token embedding",
        ),
        (
            "gpt2-untied",
            Box::new(|c| c["tie_word_embeddings"] = json!(true)),
            "model.safetensors",
            "lm_head.weight differs",
        ),
    ];
    for (name, edit, file, phrase) in cases {
        let t = with_config(name, edit);
        let e = load_err(t.path());
        assert!(
            e.contains(phrase) && e.contains(file) && !e.contains('\n'),
            "{name} / {phrase}: {e}"
        );
    }
}

#[test]
fn non_gpt2_checkpoints_are_read_only() {
    let ck = checkpoint::load(dir("llama-gqa")).unwrap();
    let e = checkpoint::safetensors_bytes(&ck.model)
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
}

#[test]
fn byte_level_bpe_encodes_exactly_as_hf() {
    use feedlens::io::tokens::Tokens;
    let tdir = fixture("families/tokenizer");
    let tok = Tokens::from_bytes(
        &std::fs::read(tdir.join("tokenizer.json")).unwrap(),
        &tdir.join("tokenizer.json"),
    )
    .unwrap();
    let enc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tdir.join("encodings.json")).unwrap()).unwrap();
    let mut n = 0;
    for c in enc["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let hf_fast: Vec<u32> = c["ids_transformers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            want, hf_fast,
            "{text:?}: the fixture's two HF encoders disagree"
        );
        if want.is_empty() {
            let e = tok.encode(text, "--text").unwrap_err().to_string();
            assert!(e.contains("no tokens"), "{e}");
            continue;
        }
        assert_eq!(tok.encode(text, "--text").unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want).unwrap(), text);
        n += 1;
    }
    assert!(n >= 15, "{n} cases");
    // No special token is added, but one written in the text is its own id (how a Llama
    // user asks for HF's default BOS: `--text "<s>..."`).
    let plain = tok.encode("hello", "--text").unwrap();
    let with = tok.encode("<|endoftext|>hello", "--text").unwrap();
    assert_eq!(with[0], tok.id("<|endoftext|>").unwrap());
    assert_eq!(&with[1..], plain.as_slice());
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused() {
    let t = with_config("gpt2-relu", |_| {});
    std::fs::copy(
        fixture("families/tokenizer/tokenizer.json"),
        t.path().join("tokenizer.json"),
    )
    .unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("tokenizer.json") && e.contains("vocab_size 64") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn text_is_tokenised_and_run_as_hf_does() {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("families/text.json")).unwrap()).unwrap();
    for name in ["text-a", "text-b"] {
        let ck = checkpoint::load(dir(name)).unwrap();
        for row in r["models"][name].as_array().unwrap() {
            let ids = ck.encode(row["text"].as_str().unwrap(), "--text").unwrap();
            let want: Vec<u32> = row["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, want, "{name}: {}", row["text"]);
            let out = ck
                .model
                .forward(
                    &Input::Ids(ck.model.ids_tensor(std::slice::from_ref(&ids)).unwrap()),
                    &Run {
                        logits: Logits::At(vec![ids.len() - 1]),
                        ..Run::default()
                    },
                )
                .unwrap();
            let got = out
                .logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let hf: Vec<f32> = row["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let d = got
                .iter()
                .zip(&hf)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < TOL, "{name}: {d}");
        }
    }
}

#[test]
fn every_parameter_of_every_family_receives_a_gradient() {
    for name in MODELS {
        let ck = checkpoint::load(dir(name)).unwrap();
        let (model, vars) = ck.model.trainable().unwrap();
        let r = reference(name);
        let ids = model.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
        let vocab = model.config().vocab_size;
        let targets = ids.narrow(1, 1, 9).unwrap().flatten_all().unwrap();
        let out = model
            .forward(
                &Input::Ids(ids.clone()),
                &Run {
                    grad: true,
                    ..Run::default()
                },
            )
            .unwrap();
        let logits = out.logits.unwrap().narrow(1, 0, 9).unwrap();
        let logits = logits.reshape((18, vocab)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(
            vars.len(),
            feedlens::Model::tensor_shapes(model.config()).len()
        );
        for (n, v) in &vars {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {n}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name} {n}: gradient norm {norm}"
            );
        }
    }
}
