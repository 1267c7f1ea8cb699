//! The forward pass against HF transformers / TransformerLens on `tests/fixtures/gpt2-tiny`,
//! save/load round trips, interventions against an independent naive forward, the
//! start-at-layer / K-V-reuse path against a full forward, and gradients.

mod common;

use candle_core::{Device, Tensor, D};
use common::*;
use feedlens::io::checkpoint;
use feedlens::{Hook, Input, Intervention, Logits, Run, Start};

const TOL: f32 = 1e-4;

fn reference() -> std::collections::HashMap<String, Tensor> {
    load_st(&fixture("gpt2-tiny/reference.safetensors"))
}

#[test]
fn logits_and_every_hook_match_hf_and_transformerlens() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let r = reference();
    let ids = ck.model.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
    let hooks = Hook::all(ck.model.config().n_layer);
    let out = ck
        .model
        .forward(
            &Input::Ids(ids),
            &Run {
                cache: hooks.clone(),
                ..Run::default()
            },
        )
        .unwrap();
    let logits = out.logits.unwrap();
    assert!(
        max_abs(&logits, &r["logits"]) < TOL,
        "HF logits: {}",
        max_abs(&logits, &r["logits"])
    );
    assert!(max_abs(&logits, &r["tl_logits"]) < TOL);
    let mut checked = 0;
    for h in hooks {
        let key = format!("cache.{h}");
        let reference = r.get(&key).unwrap_or_else(|| panic!("fixture lacks {key}"));
        let ours = out.cache.get(h).unwrap();
        let d = max_abs(ours, reference);
        assert!(d < TOL, "{h}: max abs diff {d}");
        checked += 1;
    }
    // Every hook in the fixture was compared.
    assert_eq!(
        checked,
        r.keys().filter(|k| k.starts_with("cache.")).count()
    );
}

#[test]
fn gradient_ops_give_the_same_forward() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let r = reference();
    let ids = ck.model.ids_tensor(&ids_rows(&r["input_ids"])).unwrap();
    let out = ck
        .model
        .forward(
            &Input::Ids(ids),
            &Run {
                grad: true,
                ..Run::default()
            },
        )
        .unwrap();
    assert!(max_abs(&out.logits.unwrap(), &r["logits"]) < TOL);
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let man = checkpoint::Manifest {
        recipe: checkpoint::RecipeKind::Import,
        ..Default::default()
    };
    checkpoint::save(&a, &ck.model, None, &man, false).unwrap();
    let back = checkpoint::load(&a).unwrap();
    for ((n1, t1), (n2, t2)) in ck.model.tensors().iter().zip(back.model.tensors().iter()) {
        assert_eq!(n1, n2);
        let (v1, v2) = (
            t1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            t2.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            v1.iter().zip(&v2).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1} changed"
        );
    }
    assert_eq!(back.model.config(), ck.model.config());
    // Saving the reloaded model gives the same bytes; the manifest records their hash.
    checkpoint::save(&b, &back.model, None, &man, false).unwrap();
    let (ba, bb) = (
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
    );
    assert_eq!(ba, bb);
    assert_eq!(back.manifest.unwrap().sha256, checkpoint::sha256_hex(&ba));
    // And the saved directory runs with identical logits.
    let r = reference();
    let ids = ids_rows(&r["input_ids"]);
    let l1 = ck
        .model
        .forward(
            &Input::Ids(ck.model.ids_tensor(&ids).unwrap()),
            &Run::default(),
        )
        .unwrap()
        .logits
        .unwrap();
    let l2 = back
        .model
        .forward(
            &Input::Ids(back.model.ids_tensor(&ids).unwrap()),
            &Run::default(),
        )
        .unwrap()
        .logits
        .unwrap();
    assert_eq!(max_abs(&l1, &l2), 0.0);
}

/// An independent, deliberately naive GPT-2 forward in f64 (one sequence, loops), used to
/// check interventions. `zero_attn_out`: layer whose attention output is zeroed.
fn naive_logits(
    model: &feedlens::Model,
    ids: &[u32],
    zero_attn_out: Option<usize>,
) -> Vec<Vec<f64>> {
    let w: std::collections::HashMap<String, Vec<f64>> = model
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            )
        })
        .collect();
    let c = model.config();
    let (d, nh, m, v) = (c.n_embd, c.n_head, c.d_mlp(), c.vocab_size);
    let dh = d / nh;
    let t = ids.len();
    let ln = |x: &[f64], g: &[f64], b: &[f64]| -> Vec<f64> {
        let mu = x.iter().sum::<f64>() / d as f64;
        let var = x.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / d as f64;
        (0..d)
            .map(|i| (x[i] - mu) / (var + c.layer_norm_epsilon).sqrt() * g[i] + b[i])
            .collect()
    };
    let lin = |x: &[f64], wt: &[f64], b: &[f64], n_out: usize| -> Vec<f64> {
        (0..n_out)
            .map(|o| {
                b[o] + x
                    .iter()
                    .enumerate()
                    .map(|(i, a)| a * wt[i * n_out + o])
                    .sum::<f64>()
            })
            .collect()
    };
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    let mut x: Vec<Vec<f64>> = (0..t)
        .map(|p| {
            (0..d)
                .map(|i| w["wte.weight"][ids[p] as usize * d + i] + w["wpe.weight"][p * d + i])
                .collect()
        })
        .collect();
    for l in 0..c.n_layer {
        let g = |s: &str| &w[&format!("h.{l}.{s}")];
        let qkv: Vec<Vec<f64>> = x
            .iter()
            .map(|r| {
                lin(
                    &ln(r, g("ln_1.weight"), g("ln_1.bias")),
                    g("attn.c_attn.weight"),
                    g("attn.c_attn.bias"),
                    3 * d,
                )
            })
            .collect();
        let mut z = vec![vec![0.0; d]; t];
        for h in 0..nh {
            for i in 0..t {
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..dh)
                            .map(|e| qkv[i][h * dh + e] * qkv[j][d + h * dh + e])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let ex: Vec<f64> = s.iter().map(|a| (a - mx).exp()).collect();
                let tot: f64 = ex.iter().sum();
                for e in 0..dh {
                    z[i][h * dh + e] = (0..=i)
                        .map(|j| ex[j] / tot * qkv[j][2 * d + h * dh + e])
                        .sum();
                }
            }
        }
        for i in 0..t {
            let a = lin(&z[i], g("attn.c_proj.weight"), g("attn.c_proj.bias"), d);
            if zero_attn_out != Some(l) {
                (0..d).for_each(|k| x[i][k] += a[k]);
            }
            let hdn: Vec<f64> = lin(
                &ln(&x[i], g("ln_2.weight"), g("ln_2.bias")),
                g("mlp.c_fc.weight"),
                g("mlp.c_fc.bias"),
                m,
            )
            .into_iter()
            .map(gelu)
            .collect();
            let o = lin(&hdn, g("mlp.c_proj.weight"), g("mlp.c_proj.bias"), d);
            (0..d).for_each(|k| x[i][k] += o[k]);
        }
    }
    x.iter()
        .map(|r| {
            let hf = ln(r, &w["ln_f.weight"], &w["ln_f.bias"]);
            (0..v)
                .map(|tok| (0..d).map(|k| hf[k] * w["wte.weight"][tok * d + k]).sum())
                .collect()
        })
        .collect()
}

fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect()
}

fn max_abs_rows(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn zeroing_attn_out_matches_a_naive_recomputation() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let ids = ids_rows(&reference()["input_ids"])[0].clone();
    let m = &ck.model;
    let clean = m
        .forward(
            &Input::Ids(m.ids_tensor(std::slice::from_ref(&ids)).unwrap()),
            &Run::default(),
        )
        .unwrap()
        .logits
        .unwrap();
    // The naive forward itself agrees with the model when nothing is edited.
    assert!(max_abs_rows(&to_rows(&clean), &naive_logits(m, &ids, None)) < 1e-4);
    let run = Run {
        interventions: vec![Intervention::zero(Hook::AttnOut(0))],
        ..Run::default()
    };
    let zeroed = m
        .forward(
            &Input::Ids(m.ids_tensor(std::slice::from_ref(&ids)).unwrap()),
            &run,
        )
        .unwrap()
        .logits
        .unwrap();
    let naive = naive_logits(m, &ids, Some(0));
    assert!(max_abs_rows(&to_rows(&zeroed), &naive) < 1e-4);
    // The edit matters (so the comparison above is not vacuous).
    assert!(max_abs_rows(&to_rows(&clean), &naive) > 1e-2);
}

#[test]
fn replace_add_and_zero_respect_positions_heads_and_rows() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let m = &ck.model;
    let rows = ids_rows(&reference()["input_ids"]);
    let ids = m.ids_tensor(&rows).unwrap();
    let run = Run {
        cache: vec![Hook::Z(1), Hook::ResidPre(2)],
        ..Run::default()
    };
    let base = m.forward(&Input::Ids(ids.clone()), &run).unwrap();
    // The cached run with one intervention.
    let edited = |iv: Intervention| {
        m.forward(
            &Input::Ids(ids.clone()),
            &Run {
                interventions: vec![iv],
                ..run.clone()
            },
        )
        .unwrap()
    };
    let z = base.cache.get(Hook::Z(1)).unwrap();
    // Zero head 2 at position 5: only that cell changes.
    let iv = Intervention::zero(Hook::Z(1))
        .at_positions(&[5])
        .at_heads(&[2]);
    let out = edited(iv);
    let z2 = out.cache.get(Hook::Z(1)).unwrap();
    let diff = (z - z2).unwrap().abs().unwrap().sum(D::Minus1).unwrap(); // [b, pos, head]
    let diff = diff.to_vec3::<f32>().unwrap();
    for (b, rb) in diff.iter().enumerate() {
        for (p, rp) in rb.iter().enumerate() {
            for (h, &v) in rp.iter().enumerate() {
                assert_eq!(v > 0.0, p == 5 && h == 2, "b{b} p{p} h{h}: {v}");
            }
        }
    }
    // Adding then replacing with the original gives the original exactly; a per-row mask
    // edits only the rows it selects.
    let r = base.cache.get(Hook::ResidPre(2)).unwrap();
    let bump = Tensor::ones(r.dims(), r.dtype(), &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[0f32; 12], [1.0; 12], [0.0; 12]], &Device::Cpu).unwrap();
    let iv = Intervention::add(Hook::ResidPre(2), bump).with_mask(mask);
    let out = edited(iv);
    let r2 = out.cache.get(Hook::ResidPre(2)).unwrap();
    let per_row = (r2 - r)
        .unwrap()
        .sum((1, 2))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        per_row[0].abs() < 1e-3
            && per_row[2].abs() < 1e-3
            && (per_row[1] - 12.0 * 48.0).abs() < 1e-2,
        "{per_row:?}"
    );
    let iv = Intervention::replace(Hook::ResidPre(2), r.clone());
    let out = edited(iv);
    assert_eq!(max_abs(&out.logits.unwrap(), &base.logits.unwrap()), 0.0);
}

#[test]
fn start_at_layer_with_past_kv_matches_full_forward() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let m = &ck.model;
    let n_layer = m.config().n_layer;
    let rows = ids_rows(&reference()["input_ids"]);
    let ids = m.ids_tensor(&rows).unwrap();
    let mut hooks = vec![];
    for l in 0..n_layer {
        hooks.extend([
            Hook::ResidPre(l),
            Hook::ResidPost(l),
            Hook::K(l),
            Hook::V(l),
        ]);
    }
    let full = m
        .forward(
            &Input::Ids(ids),
            &Run {
                cache: hooks,
                ..Run::default()
            },
        )
        .unwrap();
    let full_logits = full.logits.unwrap();
    for layer in 0..=n_layer {
        for offset in [0usize, 1, 5, 11] {
            // After the last block (layer == n_layer) only ln_f and the unembedding run.
            let hook = if layer < n_layer {
                Hook::ResidPre(layer)
            } else {
                Hook::ResidPost(n_layer - 1)
            };
            let resid = full
                .cache
                .get(hook)
                .unwrap()
                .narrow(1, offset, 12 - offset)
                .unwrap();
            let past = (layer..n_layer)
                .map(|l| {
                    let k = full
                        .cache
                        .get(Hook::K(l))
                        .unwrap()
                        .narrow(1, 0, offset)
                        .unwrap();
                    let v = full
                        .cache
                        .get(Hook::V(l))
                        .unwrap()
                        .narrow(1, 0, offset)
                        .unwrap();
                    (k, v)
                })
                .collect();
            let start = Start {
                layer,
                resid,
                offset,
                past,
            };
            let want: Vec<usize> = (offset..12).collect();
            let out = m
                .forward(
                    &Input::Resid(start),
                    &Run {
                        logits: Logits::At(want),
                        ..Run::default()
                    },
                )
                .unwrap();
            let d = max_abs(
                &out.logits.unwrap(),
                &full_logits.narrow(1, offset, 12 - offset).unwrap(),
            );
            assert!(d < 1e-5, "layer {layer} offset {offset}: {d}");
        }
    }
}

#[test]
fn patched_start_matches_patched_full_forward() {
    // The primitive behind patching sweeps: a replacement at position p of layer l, computed
    // from layer l on for positions >= p only, equals the same replacement in a full forward.
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let m = &ck.model;
    let r = reference();
    let clean = m.ids_tensor(&ids_rows(&r["patch.clean_ids"])).unwrap();
    let corrupt = m.ids_tensor(&ids_rows(&r["patch.corrupt_ids"])).unwrap();
    let (l, p) = (1usize, 3usize);
    let hooks = vec![
        Hook::ResidPre(1),
        Hook::K(1),
        Hook::V(1),
        Hook::K(2),
        Hook::V(2),
    ];
    let c = m
        .forward(
            &Input::Ids(clean),
            &Run {
                cache: hooks.clone(),
                ..Run::default()
            },
        )
        .unwrap();
    let x = m
        .forward(
            &Input::Ids(corrupt.clone()),
            &Run {
                cache: hooks,
                ..Run::default()
            },
        )
        .unwrap();
    let value = c.cache.get(Hook::ResidPre(l)).unwrap();
    let full = m
        .forward(
            &Input::Ids(corrupt),
            &Run {
                interventions: vec![
                    Intervention::replace(Hook::ResidPre(l), value.clone()).at_positions(&[p])
                ],
                logits: Logits::At(vec![11]),
                ..Run::default()
            },
        )
        .unwrap()
        .logits
        .unwrap();
    let resid = x
        .cache
        .get(Hook::ResidPre(l))
        .unwrap()
        .narrow(1, p, 12 - p)
        .unwrap();
    let past = (l..3)
        .map(|k| {
            (
                x.cache.get(Hook::K(k)).unwrap().narrow(1, 0, p).unwrap(),
                x.cache.get(Hook::V(k)).unwrap().narrow(1, 0, p).unwrap(),
            )
        })
        .collect();
    let iv = Intervention::replace(Hook::ResidPre(l), value.narrow(1, p, 12 - p).unwrap())
        .at_positions(&[p]);
    let fast = m
        .forward(
            &Input::Resid(Start {
                layer: l,
                resid,
                offset: p,
                past,
            }),
            &Run {
                interventions: vec![iv],
                logits: Logits::At(vec![11]),
                ..Run::default()
            },
        )
        .unwrap()
        .logits
        .unwrap();
    assert!(max_abs(&fast, &full) < 1e-5, "{}", max_abs(&fast, &full));
}

#[test]
fn every_parameter_receives_a_gradient() {
    let ck = checkpoint::load(fixture("gpt2-tiny")).unwrap();
    let (model, vars) = ck.model.trainable().unwrap();
    let rows = ids_rows(&reference()["input_ids"]);
    let ids = model.ids_tensor(&rows).unwrap();
    let targets = ids.narrow(1, 1, 11).unwrap().flatten_all().unwrap();
    // Next-token cross-entropy of the first 11 positions of the 3 reference rows.
    let loss_of = |model: &feedlens::Model| {
        let out = model
            .forward(
                &Input::Ids(ids.clone()),
                &Run {
                    grad: true,
                    ..Run::default()
                },
            )
            .unwrap();
        let logits = out.logits.unwrap().narrow(1, 0, 11).unwrap();
        let logits = logits.reshape((33, 50)).unwrap();
        candle_nn::loss::cross_entropy(&logits, &targets).unwrap()
    };
    let loss = loss_of(&model);
    let grads = loss.backward().unwrap();
    assert_eq!(vars.len(), 4 + 12 * 3);
    for (name, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
    // One coordinate against a central finite difference (f32: loose tolerance).
    let (name, var) = &vars[2 + 2]; // h.0.attn.c_attn.weight
    let g = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let idx = 7;
    let base = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let h = 1e-2f32;
    let eval = |delta: f32| {
        let mut w = base.clone();
        w[idx] += delta;
        var.set(&Tensor::from_vec(w, var.as_tensor().dims(), &Device::Cpu).unwrap())
            .unwrap();
        loss_of(&model).to_scalar::<f32>().unwrap()
    };
    let fd = (eval(h) - eval(-h)) / (2.0 * h);
    assert!(
        (fd - g[idx]).abs() < 2e-3 + 0.05 * fd.abs(),
        "{name}[{idx}]: fd {fd} vs grad {}",
        g[idx]
    );
}
