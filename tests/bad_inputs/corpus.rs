//! The malformed-input corpus (issue 7): built from the tiny fixture into a folder at test
#![allow(dead_code)]
//! time, so every case is a few bytes away from a valid input and the corpus never goes stale
//! when the fixture changes. Each case names the path the error line must mention and a word
//! of the problem it must state.

use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What kind of input a case is, i.e. which commands take it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A checkpoint directory (every command that loads a checkpoint).
    Checkpoint,
    /// A probe spec file (`probe SPEC`, `check DIR`).
    ProbeSpec,
    /// A `probe fit --data` safetensors file.
    ProbeData,
    /// A `report --pairs` file.
    Pairs,
}

/// One malformed input.
pub struct Case {
    /// Short name (the folder or file name in the corpus).
    pub name: &'static str,
    pub kind: Kind,
    /// What is passed to the command.
    pub input: PathBuf,
    /// The path the error line must name.
    pub names: PathBuf,
    /// A phrase of the problem the error line must state.
    pub problem: &'static str,
}

fn fixture(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt2-tiny")
        .join(f)
}

/// A stored tensor: name, dtype, shape, raw little-endian bytes.
pub type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

/// Tensors of the fixture's model.safetensors, sorted by name.
pub fn fixture_tensors() -> Vec<Raw> {
    let raw = fs::read(fixture("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                t.dtype(),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// safetensors bytes of `tensors`.
pub fn st_bytes(tensors: &[Raw]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

/// A valid copy of the fixture (config + weights) at `dir`.
pub fn good_checkpoint(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        fs::copy(fixture(f), dir.join(f)).unwrap();
    }
}

fn config() -> serde_json::Value {
    serde_json::from_slice(&fs::read(fixture("config.json")).unwrap()).unwrap()
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// Build every case under `root`.
pub fn build(root: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let tensors = fixture_tensors();
    let weights = fs::read(fixture("model.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;

    // --- checkpoint directories: (name, file named, problem, what to change) ---
    type Edit = Box<dyn Fn(&Path)>;
    fn edit(f: impl Fn(&Path) + 'static) -> Edit {
        Box::new(f)
    }
    let st = |bytes: Vec<u8>| -> Edit {
        Box::new(move |d: &Path| fs::write(d.join("model.safetensors"), &bytes).unwrap())
    };
    let cfg = |f: fn(&mut serde_json::Value)| -> Edit {
        Box::new(move |d: &Path| {
            let mut c = config();
            f(&mut c);
            fs::write(d.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap()
        })
    };
    let raw = |file: &'static str, bytes: &'static [u8]| -> Edit {
        Box::new(move |d: &Path| fs::write(d.join(file), bytes).unwrap())
    };
    let with = |f: &dyn Fn(&mut Vec<Raw>)| {
        let mut t = tensors.clone();
        f(&mut t);
        st_bytes(&t)
    };
    let set = |name: &'static str, v: f32| {
        with(&|t| {
            let e = t.iter_mut().find(|e| e.0.ends_with(name)).unwrap();
            e.3[..4].copy_from_slice(&v.to_le_bytes());
        })
    };
    let mut header_garbage = weights.clone();
    header_garbage[8..8 + hlen].fill(b'#');
    let mut offsets_past_end = weights[..8 + hlen].to_vec();
    offsets_past_end.extend_from_slice(&weights[8 + hlen..weights.len() / 2]);
    const MS: &str = "model.safetensors";
    let ms = MS;
    let cj = "config.json";
    let ck_cases: Vec<(&'static str, &'static str, &'static str, Edit)> = vec![
        ("weights-empty", ms, "not a valid safetensors", st(vec![])),
        (
            "weights-truncated",
            ms,
            "not a valid safetensors",
            st(weights[..weights.len() / 3].to_vec()),
        ),
        (
            "weights-header-length-past-eof",
            ms,
            "not a valid safetensors",
            st({
                let mut w = weights.clone();
                w[..8].copy_from_slice(&(weights.len() as u64 * 4).to_le_bytes());
                w
            }),
        ),
        (
            "weights-header-not-json",
            ms,
            "not a valid safetensors",
            st(header_garbage),
        ),
        (
            "weights-data-cut-after-header",
            ms,
            "not a valid safetensors",
            st(offsets_past_end),
        ),
        (
            "weights-int-dtype",
            ms,
            "expected a float type",
            st(with(&|t| {
                let e = t.iter_mut().find(|e| e.0.ends_with("ln_f.bias")).unwrap();
                e.1 = Dtype::I32;
            })),
        ),
        (
            "weights-shape-mismatch",
            ms,
            "shape",
            st(with(&|t| {
                let e = t.iter_mut().find(|e| e.0.ends_with("ln_f.bias")).unwrap();
                let n = e.2[0];
                e.2 = vec![2, n / 2];
            })),
        ),
        (
            "weights-missing-tensor",
            ms,
            "ln_f.weight",
            st(with(&|t| t.retain(|e| !e.0.ends_with("ln_f.weight")))),
        ),
        (
            "weights-nan",
            ms,
            "NaN or infinite",
            st(set("h.1.mlp.c_fc.weight", f32::NAN)),
        ),
        (
            "weights-inf",
            ms,
            "NaN or infinite",
            st(set("wpe.weight", f32::NEG_INFINITY)),
        ),
        (
            "weights-stored-twice",
            ms,
            "stored twice",
            st(with(&|t| {
                let e = t
                    .iter()
                    .find(|e| e.0.ends_with("ln_f.bias"))
                    .unwrap()
                    .clone();
                let short = e.0.trim_start_matches("transformer.").to_string();
                let other = if short == e.0 {
                    format!("transformer.{short}")
                } else {
                    short
                };
                t.push((other, e.1, e.2, e.3));
            })),
        ),
        (
            "weights-lm-head-untied",
            ms,
            "lm_head.weight differs",
            st(with(&|t| {
                let e = t
                    .iter()
                    .find(|e| e.0.ends_with("wte.weight"))
                    .unwrap()
                    .clone();
                let n = e.3.len() / 4;
                t.push((
                    "lm_head.weight".into(),
                    Dtype::F32,
                    e.2,
                    f32_bytes((0..n).map(|i| i as f32)),
                ));
            })),
        ),
        ("config-empty", cj, "invalid config", raw(cj, b"")),
        (
            "config-not-json",
            cj,
            "invalid config",
            raw(cj, b"{n_layer: 3,"),
        ),
        (
            "config-not-utf8",
            cj,
            "invalid config",
            raw(cj, b"\xff\xfe{\x00}"),
        ),
        (
            "config-wrong-type",
            cj,
            "invalid config",
            cfg(|c| c["n_layer"] = "three".into()),
        ),
        (
            "config-negative",
            cj,
            "invalid config",
            cfg(|c| c["n_head"] = (-4).into()),
        ),
        (
            "config-missing-field",
            cj,
            "n_embd",
            cfg(|c| {
                c.as_object_mut().unwrap().remove("n_embd");
            }),
        ),
        (
            "config-not-divisible",
            cj,
            "not divisible by n_head",
            cfg(|c| c["n_head"] = 5.into()),
        ),
        (
            "config-zero-layers",
            cj,
            "n_layer must be positive",
            cfg(|c| c["n_layer"] = 0.into()),
        ),
        (
            "config-disagrees-with-weights",
            ms,
            "config.json disagrees",
            cfg(|c| c["n_layer"] = 4.into()),
        ),
        (
            "config-unsupported-activation",
            cj,
            "activation_function",
            cfg(|c| c["activation_function"] = "quick_gelu".into()),
        ),
        (
            "config-other-model-type",
            cj,
            "model_type",
            cfg(|c| c["model_type"] = "bert".into()),
        ),
        (
            "config-flag-as-string",
            cj,
            "expected true or false",
            cfg(|c| c["scale_attn_by_inverse_layer_idx"] = "true".into()),
        ),
        (
            "config-is-a-directory",
            cj,
            "is a directory",
            edit(|d: &Path| {
                fs::remove_file(d.join("config.json")).unwrap();
                fs::create_dir(d.join("config.json")).unwrap();
            }),
        ),
        (
            "weights-is-a-directory",
            ms,
            "is a directory",
            edit(|d: &Path| {
                fs::remove_file(d.join(MS)).unwrap();
                fs::create_dir(d.join(MS)).unwrap();
            }),
        ),
        (
            "config-missing",
            cj,
            "no such file",
            edit(|d: &Path| fs::remove_file(d.join("config.json")).unwrap()),
        ),
        (
            "weights-missing",
            ms,
            "no such file",
            edit(|d: &Path| fs::remove_file(d.join(MS)).unwrap()),
        ),
        (
            "config-symlink-loop",
            cj,
            "cannot read",
            edit(|d: &Path| {
                fs::remove_file(d.join("config.json")).unwrap();
                std::os::unix::fs::symlink("config.json", d.join("config.json")).unwrap();
            }),
        ),
        (
            "tokenizer-garbage",
            "tokenizer.json",
            "invalid tokenizer",
            raw("tokenizer.json", b"\x00\x01 not a tokenizer"),
        ),
        (
            "tokenizer-empty",
            "tokenizer.json",
            "invalid tokenizer",
            raw("tokenizer.json", b""),
        ),
        (
            "tokenizer-wrong-structure",
            "tokenizer.json",
            "invalid tokenizer",
            raw(
                "tokenizer.json",
                br#"{"model": {"type": "WordLevel", "vocab": 7}}"#,
            ),
        ),
        (
            "manifest-garbage",
            "feedlens.json",
            "invalid manifest",
            raw("feedlens.json", br#"{"recipe": 12}"#),
        ),
    ];
    for (name, file, problem, edit) in ck_cases {
        let dir = root.join(name);
        good_checkpoint(&dir);
        edit(&dir);
        cases.push(Case {
            name,
            kind: Kind::Checkpoint,
            names: dir.join(file),
            input: dir,
            problem,
        });
    }
    // The checkpoint path itself: missing, a file, a symlink loop.
    let missing = root.join("checkpoint-missing");
    cases.push(Case {
        name: "checkpoint-missing",
        kind: Kind::Checkpoint,
        input: missing.clone(),
        names: missing,
        problem: "no such checkpoint directory",
    });
    let file = root.join("checkpoint-is-a-file");
    fs::write(&file, b"config").unwrap();
    cases.push(Case {
        name: "checkpoint-is-a-file",
        kind: Kind::Checkpoint,
        input: file.clone(),
        names: file,
        problem: "is not a directory",
    });
    let lp = root.join("checkpoint-symlink-loop");
    std::os::unix::fs::symlink("checkpoint-symlink-loop", &lp).unwrap();
    cases.push(Case {
        name: "checkpoint-symlink-loop",
        kind: Kind::Checkpoint,
        input: lp.clone(),
        names: lp,
        problem: "checkpoint",
    });

    // A tokenizer whose ids lie outside the model's vocabulary (50): not this model's
    // tokenizer, refused when the checkpoint loads (naming tokenizer.json), before any
    // `--text` could index past the embedding.
    let dir = root.join("tokenizer-ids-out-of-range");
    good_checkpoint(&dir);
    fs::write(
        dir.join("tokenizer.json"),
        br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"<pad>":0,"a":1,"far":4000},"unk_token":"<pad>"}}"#,
    )
    .unwrap();
    cases.push(Case {
        name: "tokenizer-ids-out-of-range",
        kind: Kind::Checkpoint,
        names: dir.join("tokenizer.json"),
        input: dir,
        problem: "vocab_size 50",
    });

    // --- probe specs ---
    let good_ck = root.join("good-checkpoint");
    good_checkpoint(&good_ck);
    let spec_ok = format!(
        "checkpoints = [{:?}]\nlabel = \"optout\"\nn = 40\nfolds = 2\nnull_directions = 0\n",
        good_ck.display().to_string()
    );
    let spec_cases: Vec<(&'static str, String, &'static str)> = vec![
        ("spec-empty", String::new(), "missing field"),
        (
            "spec-not-toml",
            "checkpoints = [".into(),
            "invalid probe spec",
        ),
        (
            "spec-unknown-label",
            spec_ok.replace("optout", "colour"),
            "unknown label",
        ),
        (
            "spec-unknown-field",
            format!("{spec_ok}colour = 3\n"),
            "unknown field",
        ),
        (
            "spec-wrong-type",
            spec_ok.replace("n = 40", "n = \"forty\""),
            "invalid probe spec",
        ),
        (
            "spec-folds-one",
            spec_ok.replace("folds = 2", "folds = 1"),
            "folds",
        ),
        (
            "spec-position-out-of-range",
            format!("{spec_ok}position = 99\n"),
            "position 99",
        ),
        (
            "spec-negative-c",
            format!("{spec_ok}c = -1.0\n"),
            "c must be > 0",
        ),
        (
            "spec-layer-twice",
            format!("{spec_ok}layers = [0, 0]\n"),
            "layer 0 is listed twice",
        ),
        (
            "spec-checkpoint-twice",
            spec_ok.replace(
                &format!("checkpoints = [{:?}]", good_ck.display().to_string()),
                &format!(
                    "checkpoints = [{:?}, {:?}]",
                    good_ck.display().to_string(),
                    good_ck.display().to_string()
                ),
            ),
            "listed twice",
        ),
        (
            "spec-folder-names-collide",
            spec_ok.replace(
                &format!("checkpoints = [{:?}]", good_ck.display().to_string()),
                &format!(
                    "checkpoints = [{:?}, {:?}]",
                    good_ck.display().to_string(),
                    good_ck
                        .join("..")
                        .join(good_ck.file_name().unwrap())
                        .display()
                        .to_string()
                ),
            ),
            "share the folder name",
        ),
        (
            "spec-infinite-tolerance",
            format!("{spec_ok}tolerance = inf\n"),
            "tolerance",
        ),
        (
            "spec-nan-causal-alpha",
            format!("{spec_ok}causal_alpha = nan\n"),
            "causal_alpha",
        ),
        (
            "spec-huge-n",
            spec_ok.replace("n = 40", "n = 1000000000"),
            "at most 1000000",
        ),
        (
            "spec-bad-probability",
            format!("{spec_ok}p_optout = 1.5\n"),
            "not a probability",
        ),
        (
            "spec-layer-out-of-range",
            format!("{spec_ok}layers = [0, 7]\n"),
            "layer 7",
        ),
        (
            "spec-checkpoint-missing",
            spec_ok.replace("good-checkpoint", "no-such-checkpoint"),
            "no such checkpoint",
        ),
        (
            "spec-checkpoint-bad",
            spec_ok.replace("good-checkpoint", "weights-nan"),
            "NaN or infinite",
        ),
    ];
    for (name, text, problem) in spec_cases {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        let p = dir.join("spec.toml");
        fs::write(&p, text).unwrap();
        // A problem inside a named checkpoint is reported against that checkpoint's file.
        let names = if name == "spec-checkpoint-bad" {
            root.join("weights-nan/model.safetensors")
        } else if name == "spec-checkpoint-missing" {
            root.join("no-such-checkpoint")
        } else {
            p.clone()
        };
        cases.push(Case {
            name,
            kind: Kind::ProbeSpec,
            input: p,
            names,
            problem,
        });
    }
    let dir = root.join("spec-not-utf8");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("spec.toml"), b"label = \"\xff\"\n").unwrap();
    cases.push(Case {
        name: "spec-not-utf8",
        kind: Kind::ProbeSpec,
        input: dir.join("spec.toml"),
        names: dir.join("spec.toml"),
        problem: "not UTF-8",
    });
    let dir = root.join("spec-is-a-directory");
    fs::create_dir_all(dir.join("spec.toml")).unwrap();
    cases.push(Case {
        name: "spec-is-a-directory",
        kind: Kind::ProbeSpec,
        input: dir.join("spec.toml"),
        names: dir.join("spec.toml"),
        problem: "is a directory",
    });
    let dir = root.join("spec-symlink-loop");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("spec.toml", dir.join("spec.toml")).unwrap();
    cases.push(Case {
        name: "spec-symlink-loop",
        kind: Kind::ProbeSpec,
        input: dir.join("spec.toml"),
        names: dir.join("spec.toml"),
        problem: "cannot read",
    });

    // --- probe fit data files ---
    let x = |n: usize, d: usize| f32_bytes((0..n * d).map(|i| (i % 7) as f32));
    let y = |n: usize| {
        (0..n as i64)
            .flat_map(|i| (i % 2).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let t = |name: &str, dt: Dtype, shape: Vec<usize>, b: Vec<u8>| (name.to_string(), dt, shape, b);
    let data_cases: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        ("data-empty", vec![], "safetensors"),
        (
            "data-no-y",
            st_bytes(&[t("X", Dtype::F32, vec![8, 2], x(8, 2))]),
            "'y'",
        ),
        (
            "data-x-wrong-dtype",
            st_bytes(&[
                t("X", Dtype::I64, vec![8, 2], y(16)),
                t("y", Dtype::I64, vec![8], y(8)),
            ]),
            "X",
        ),
        (
            "data-rows-disagree",
            st_bytes(&[
                t("X", Dtype::F32, vec![8, 2], x(8, 2)),
                t("y", Dtype::I64, vec![6], y(6)),
            ]),
            "rows",
        ),
        (
            "data-x-nan",
            st_bytes(&[
                t("X", Dtype::F32, vec![8, 2], f32_bytes([f32::NAN; 16])),
                t("y", Dtype::I64, vec![8], y(8)),
            ]),
            "NaN or infinite",
        ),
    ];
    for (name, bytes, problem) in data_cases {
        let p = root.join(format!("{name}.safetensors"));
        fs::write(&p, bytes).unwrap();
        cases.push(Case {
            name,
            kind: Kind::ProbeData,
            input: p.clone(),
            names: p,
            problem,
        });
    }

    // --- pairs files (`report --pairs`); checkpoints are named relative to the file ---
    let two_layer = root.join("two-layer-checkpoint");
    fs::create_dir(&two_layer).unwrap();
    let mut c = config();
    c["n_layer"] = 2.into();
    fs::write(
        two_layer.join("config.json"),
        serde_json::to_vec(&c).unwrap(),
    )
    .unwrap();
    let kept: Vec<Raw> = tensors
        .iter()
        .filter(|t| !t.0.contains("h.2."))
        .cloned()
        .collect();
    fs::write(two_layer.join("model.safetensors"), st_bytes(&kept)).unwrap();
    // 16 positions: shorter than an 18-token world episode.
    let short = root.join("short-context-checkpoint");
    fs::create_dir(&short).unwrap();
    let mut c = config();
    c["n_positions"] = 16.into();
    fs::write(short.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let cut: Vec<Raw> = tensors
        .iter()
        .map(|t| match t.0.ends_with("wpe.weight") {
            true => (
                t.0.clone(),
                t.1,
                vec![16, t.2[1]],
                t.3[..16 * t.2[1] * 4].to_vec(),
            ),
            false => t.clone(),
        })
        .collect();
    fs::write(short.join("model.safetensors"), st_bytes(&cut)).unwrap();
    let pair = |a: &str, b: &str| {
        format!("[[pair]]\nname = \"p\"\na = \"../{a}\"\nb = \"../{b}\"\nmetric = \"mode\"\n")
    };
    let good_pair = pair("good-checkpoint", "good-checkpoint");
    let pairs_cases: Vec<(&'static str, String, &'static str)> = vec![
        ("pairs-empty", String::new(), "missing field"),
        ("pairs-not-toml", "[[pair]\n".into(), "invalid pairs file"),
        (
            "pairs-no-pairs",
            "pair = []\n".into(),
            "no [[pair]] entries",
        ),
        (
            "pairs-unknown-field",
            format!("{good_pair}colour = 1\n"),
            "unknown field",
        ),
        (
            "pairs-nul-in-name",
            good_pair.replace("name = \"p\"", "name = \"p\\u0000q\""),
            "control character",
        ),
        (
            "pairs-base-not-a-checkpoint",
            format!("base = \"../nowhere\"\n{good_pair}"),
            "base: checkpoint",
        ),
        (
            "pairs-wrong-type",
            good_pair.replace("\"mode\"", "3"),
            "invalid pairs file",
        ),
        (
            "pairs-unknown-metric",
            good_pair.replace("\"mode\"", "\"loss\""),
            "unknown metric 'loss'",
        ),
        (
            "pairs-unknown-contrast",
            format!("{good_pair}contrast = \"colour\"\n"),
            "unknown contrast",
        ),
        (
            "pairs-metric-mismatch",
            format!("{good_pair}contrast = \"trigger\"\n"),
            "is measured with metric",
        ),
        (
            "pairs-duplicate-name",
            format!("{good_pair}{good_pair}"),
            "used twice",
        ),
        (
            "pairs-empty-name",
            good_pair.replace("\"p\"", "\" \""),
            "empty name",
        ),
        (
            "pairs-file-name-clash",
            // "../good-checkpoint" and "..-good-checkpoint" both slug to "---good-checkpoint".
            good_pair.replace("b = \"../", "b = \"..-"),
            "share report file names",
        ),
        (
            "pairs-checkpoint-missing",
            pair("good-checkpoint", "no-such-checkpoint"),
            "not found",
        ),
        (
            "pairs-checkpoint-bad",
            pair("good-checkpoint", "weights-nan"),
            "NaN or infinite",
        ),
        (
            "pairs-shape-mismatch",
            pair("good-checkpoint", "two-layer-checkpoint"),
            "differ in shape: n_layer 3 vs 2",
        ),
        (
            "pairs-world-does-not-fit",
            pair("short-context-checkpoint", "short-context-checkpoint"),
            "cannot hold the world",
        ),
    ];
    for (name, text, problem) in pairs_cases {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        let p = dir.join("pairs.toml");
        fs::write(&p, text).unwrap();
        cases.push(Case {
            name,
            kind: Kind::Pairs,
            input: p.clone(),
            names: p,
            problem,
        });
    }
    for (name, problem) in [
        ("pairs-missing", "no such file"),
        ("pairs-not-utf8", "not UTF-8"),
        ("pairs-is-a-directory", "is a directory"),
        ("pairs-symlink-loop", "cannot read"),
    ] {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        let p = dir.join("pairs.toml");
        match name {
            "pairs-not-utf8" => fs::write(&p, b"[[pair]]\nname = \"\xff\"\n").unwrap(),
            "pairs-is-a-directory" => fs::create_dir(&p).unwrap(),
            "pairs-symlink-loop" => std::os::unix::fs::symlink("pairs.toml", &p).unwrap(),
            _ => {}
        }
        cases.push(Case {
            name,
            kind: Kind::Pairs,
            input: p.clone(),
            names: p,
            problem,
        });
    }
    let dir = root.join("good-pairs");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("pairs.toml"), good_pair).unwrap();

    cases
}
