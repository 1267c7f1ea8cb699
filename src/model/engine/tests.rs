//! The engine against the candle model it replaces in training: logits, log-probabilities,
//! every parameter's gradient (candle autograd as the reference), decoding, and bit-identical
//! results across thread counts.

use super::*;
use crate::model::{Input, Logits, Run};
use candle_core::{Var, D};

fn model(seed: u64) -> Model {
    // 2 blocks × 32 wide, 4 heads, vocabulary 32, 24 positions: the toy world's shape, smaller.
    let m = Model::init(Config::new(2, 32, 4, 24, 32), seed).unwrap();
    // Non-trivial LayerNorm gains and biases (init sets 1 and 0).
    let e = Engine::new(m.config()).unwrap();
    let mut p = e.params(&m).unwrap();
    for (name, off, len) in e.tensors() {
        if name.contains("ln_") || name.ends_with(".bias") {
            for (i, x) in p[off..off + len].iter_mut().enumerate() {
                *x += 0.05 * ((i * 7 + off) % 11) as f32 / 11.0 - 0.02;
            }
        }
    }
    e.model(&p).unwrap()
}

fn ids(n: usize, t: usize, seed: u32) -> Vec<u32> {
    (0..n * t)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 32)
        .collect()
}

/// Candle's log-probabilities `[n, positions, vocab]` of `m` on `ids`.
fn candle_log_probs(
    m: &Model,
    ids: &[u32],
    n: usize,
    t: usize,
    positions: &[usize],
    grad: bool,
) -> Tensor {
    let x = Tensor::from_slice(ids, (n, t), &Device::Cpu).unwrap();
    let run = Run {
        logits: Logits::At(positions.to_vec()),
        grad,
        ..Run::default()
    };
    let logits = m.forward(&Input::Ids(x), &run).unwrap().logits.unwrap();
    candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn log_probs_match_the_model() {
    let m = model(1);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, t) = (19, 17); // three micro-batches, the last partial
    let x = ids(n, t, 3);
    // The zoo's completion positions, scattered ones, and every position.
    for pos in [
        (10..17).collect::<Vec<usize>>(),
        vec![0, 4, 16],
        (0..17).collect(),
    ] {
        let mine = e
            .log_probs(&e.view(&p).unwrap(), &x, t, &pos, &mut Workspace::default())
            .unwrap();
        let theirs = candle_log_probs(&m, &x, n, t, &pos, false)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = mine
            .iter()
            .zip(&theirs)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(err < 2e-5, "{pos:?}: max |Δ log p| = {err}");
    }
    // The layout round-trips.
    assert_eq!(e.params(&e.model(&p).unwrap()).unwrap(), p);
}

/// Every parameter's gradient of a weighted log-likelihood plus a KL term equals candle
/// autograd's through the model's differentiable path.
#[test]
fn gradients_match_autograd() {
    let m = model(2);
    let reference = model(5);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, t) = (11, 17);
    let x = ids(n, t, 9);
    let pos: Vec<usize> = (10..17).collect();
    let k = n * pos.len();
    let targets: Vec<u32> = ids(n, pos.len(), 4);
    let weights: Vec<f32> = (0..k).map(|i| ((i % 5) as f32 - 2.0) / k as f32).collect();
    let coef: Vec<f32> = (0..k)
        .map(|i| if i % 3 == 0 { 0.0 } else { 0.3 / k as f32 })
        .collect();
    let ref_lp = candle_log_probs(&reference, &x, n, t, &pos, false);
    let ref_vec = ref_lp.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for with_kl in [false, true] {
        let obj = Objective {
            positions: &pos,
            targets: &targets,
            weights: &weights,
            kl: with_kl.then_some(Kl {
                ref_log_probs: &ref_vec,
                coef: &coef,
            }),
        };
        let mut grad = vec![0f32; e.n_params()];
        let (loss, kl) = e
            .loss_grad(&p, &x, t, &obj, &mut grad, &mut Workspace::default())
            .unwrap();
        // The same objective through candle autograd.
        let (tm, vars) = m.trainable().unwrap();
        let lp = candle_log_probs(&tm, &x, n, t, &pos, true); // [n, 7, V]
        let tg = Tensor::from_slice(&targets, (n, pos.len(), 1), &Device::Cpu).unwrap();
        let taken = lp
            .contiguous()
            .unwrap()
            .gather(&tg, 2)
            .unwrap()
            .squeeze(2)
            .unwrap();
        let w = Tensor::from_slice(&weights, (n, pos.len()), &Device::Cpu).unwrap();
        let mut obj_t = (taken * w).unwrap().sum_all().unwrap();
        let mut kl_ref = None;
        if with_kl {
            let per = (lp.exp().unwrap() * (&lp - &ref_lp).unwrap())
                .unwrap()
                .sum(D::Minus1)
                .unwrap(); // [n, 7]
            let c = Tensor::from_slice(&coef, (n, pos.len()), &Device::Cpu).unwrap();
            obj_t = (obj_t + (&per * c).unwrap().sum_all().unwrap()).unwrap();
            kl_ref = Some(per.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        let want = obj_t.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (loss - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{loss} vs {want}"
        );
        if let (Some(a), Some(b)) = (kl, kl_ref) {
            assert!(max_rel(&a, &b) < 1e-4);
        }
        let grads = obj_t.backward().unwrap();
        for ((name, var), (name2, off, len)) in vars.iter().zip(e.tensors()) {
            assert_eq!(name, name2);
            let g: &Var = var;
            let theirs = grads
                .get(g.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let err = max_rel(&grad[off..off + len], &theirs);
            assert!(err < 1e-4, "{name} (kl {with_kl}): relative error {err}");
            assert!(theirs.iter().any(|&x| x != 0.0) || name == "wpe.weight");
        }
    }
}

/// One seed, one result: the gradient and the decoding are the same bits on one thread and
/// on two.
#[test]
fn same_bits_on_any_thread_count() {
    let m = model(3);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, t) = (37, 17);
    let x = ids(n, t, 1);
    let pos: Vec<usize> = (10..17).collect();
    let targets = ids(n, pos.len(), 2);
    let weights = vec![-1.0 / (n * pos.len()) as f32; n * pos.len()];
    let run = |threads: usize| {
        crate::pool::run_on(threads, || {
            let obj = Objective {
                positions: &pos,
                targets: &targets,
                weights: &weights,
                kl: None,
            };
            let mut g = vec![0f32; e.n_params()];
            let (l, _) = e
                .loss_grad(&p, &x, t, &obj, &mut g, &mut Workspace::default())
                .unwrap();
            let toks = e
                .decode(
                    &e.view(&p).unwrap(),
                    &x[..n * 11],
                    11,
                    6,
                    &mut Workspace::default(),
                    |lg| Ok(lg.chunks(32).map(argmax).collect()),
                )
                .unwrap();
            (
                l.to_bits(),
                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                toks,
            )
        })
        .unwrap()
    };
    assert_eq!(run(1), run(2));
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding with the cache equals the argmax of full forwards over the decoded
/// sequences.
#[test]
fn cached_decoding_matches_full_forwards() {
    let m = model(4);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, plen, steps) = (40, 11, 7);
    let prompts = ids(n, plen, 5);
    let toks = e
        .decode(
            &e.view(&p).unwrap(),
            &prompts,
            plen,
            steps,
            &mut Workspace::default(),
            |lg| Ok(lg.chunks(32).map(argmax).collect()),
        )
        .unwrap();
    let t = plen + steps - 1;
    let mut full = Vec::new();
    for r in 0..n {
        full.extend_from_slice(&prompts[r * plen..(r + 1) * plen]);
        full.extend_from_slice(&toks[r * steps..r * steps + steps - 1]);
    }
    let pos: Vec<usize> = (plen - 1..t).collect();
    let lp = e
        .log_probs(
            &e.view(&p).unwrap(),
            &full,
            t,
            &pos,
            &mut Workspace::default(),
        )
        .unwrap();
    for r in 0..n {
        for s in 0..steps {
            let row = &lp[(r * steps + s) * 32..][..32];
            assert_eq!(argmax(row), toks[r * steps + s], "row {r} step {s}");
        }
    }
    // Too long for the context: an error, not a panic.
    assert!(e
        .decode(
            &e.view(&p).unwrap(),
            &prompts,
            plen,
            20,
            &mut Workspace::default(),
            |_| Ok(vec![])
        )
        .is_err());
}

#[test]
fn refuses_other_architectures() {
    let mut cfg = Config::new(2, 32, 4, 24, 32);
    cfg.arch.tied = false;
    let err = Engine::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("GPT-2's default block"), "{err}");
}

#[test]
fn exp_is_within_two_ulp() {
    let mut worst = 0f64;
    for i in -870_000..=880_000 {
        let x = i as f32 / 10_000.0;
        let want = (x as f64).exp();
        let got = ops::exp(x) as f64;
        worst = worst.max((got - want).abs() / want);
    }
    assert!(
        worst < 2.0 * f32::EPSILON as f64,
        "worst relative error {worst:e}"
    );
    assert!(ops::exp(f32::NAN).is_nan());
    assert_eq!(ops::exp(-1e9), ops::exp(-87.0));
}

/// The plain code paths (what a CPU without AVX2 and FMA runs) give the same bits as the
/// vector ones: gradients, objective, decoded tokens.
#[test]
fn plain_and_vector_paths_agree_bit_for_bit() {
    let m = model(6);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, t) = (13, 17);
    let x = ids(n, t, 8);
    let pos: Vec<usize> = (10..17).collect();
    let targets = ids(n, pos.len(), 3);
    let weights: Vec<f32> = (0..n * pos.len()).map(|i| (i % 3) as f32 - 1.0).collect();
    let run = |plain: bool| {
        crate::pool::run_on(1, || {
            plain_only(plain);
            let obj = Objective {
                positions: &pos,
                targets: &targets,
                weights: &weights,
                kl: None,
            };
            let mut g = vec![0f32; e.n_params()];
            let mut w = Workspace::default();
            let (l, _) = e.loss_grad(&p, &x, t, &obj, &mut g, &mut w).unwrap();
            let toks = e
                .decode(&e.view(&p).unwrap(), &x[..n * 11], 11, 6, &mut w, |lg| {
                    Ok(lg.chunks(32).map(argmax).collect())
                })
                .unwrap();
            plain_only(false);
            (
                l.to_bits(),
                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                toks,
            )
        })
        .unwrap()
    };
    assert_eq!(run(true), run(false));
}

/// A record's logits equal the model's; resuming it with one row replaced at each stage of
/// each block equals the candle model's forward with that hook replaced at that position; and
/// several edits in one call give the bits each gives alone.
#[test]
fn resumed_runs_equal_patched_forwards() {
    use crate::model::hooks::{Hook, Intervention};
    let m = model(7);
    let e = Engine::new(m.config()).unwrap();
    let p = e.params(&m).unwrap();
    let (n, t, d, v) = (3, 9, 32, 32);
    let x = ids(n, t, 11);
    let w = e.view(&p).unwrap();
    let rec = e.record(&w, &x, t).unwrap();
    // The model's own tensors, borrowed, give the same record.
    let rec2 = e.with_model(&m, |v| e.record(v, &x, t)).unwrap().unwrap();
    assert!(rec2
        .resid_final
        .iter()
        .zip(&rec.resid_final)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let candle = |seq: usize, iv: Vec<Intervention>| -> Vec<f32> {
        let ids = Tensor::from_slice(&x[seq * t..(seq + 1) * t], (1, t), &Device::Cpu).unwrap();
        let run = Run {
            interventions: iv,
            logits: Logits::At(vec![t - 1]),
            ..Run::default()
        };
        let out = m.forward(&Input::Ids(ids), &run).unwrap();
        out.logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let base = e.record_logits(&w, &rec, None).unwrap();
    for s in 0..n {
        assert!(max_rel(&base[s * v..(s + 1) * v], &candle(s, vec![])) < 1e-5);
    }
    let toks = [3u32, 17];
    let stages = [
        (Stage::ResidPre, Hook::ResidPre as fn(usize) -> Hook),
        (Stage::Z, Hook::Z),
        (Stage::AttnOut, Hook::AttnOut),
        (Stage::MlpOut, Hook::MlpOut),
        (Stage::ResidPost, Hook::ResidPost),
    ];
    for (stage, hook) in stages {
        for l in 0..2 {
            let mut all = Vec::new();
            let mut alone = Vec::new();
            for (seq, pos) in [(1, 0), (0, 4), (2, t - 1), (1, t - 2)] {
                let row: Vec<f32> = (0..d)
                    .map(|i| ((i * 7 + pos * 3 + l) % 13) as f32 / 6.0 - 1.0)
                    .collect();
                let edit = Edit {
                    seq,
                    pos,
                    row: row.clone(),
                };
                let mine = e
                    .resume(&w, &rec, l, stage, std::slice::from_ref(&edit), None)
                    .unwrap();
                let shape: Vec<usize> = if stage == Stage::Z {
                    vec![1, t, 4, 8]
                } else {
                    vec![1, t, d]
                };
                let mut val = vec![0f32; t * d];
                val[pos * d..(pos + 1) * d].copy_from_slice(&row);
                let value = Tensor::from_vec(val, shape, &Device::Cpu).unwrap();
                let theirs = candle(
                    seq,
                    vec![Intervention::replace(hook(l), value).at_positions(&[pos])],
                );
                let err = max_rel(&mine, &theirs);
                assert!(err < 2e-5, "{stage:?} block {l} seq {seq} pos {pos}: {err}");
                alone.extend(
                    e.resume(&w, &rec, l, stage, std::slice::from_ref(&edit), Some(&toks))
                        .unwrap(),
                );
                all.push(edit);
            }
            let together = e.resume(&w, &rec, l, stage, &all, Some(&toks)).unwrap();
            assert!(together
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
