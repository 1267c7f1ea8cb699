//! Activation patching: parity with TransformerLens's `get_act_patch_*` on the gpt2-tiny
//! fixture (1e-4), fast engine against the naive one-forward-per-cell path (1e-5) for every
//! component, both directions and several chunkings, attribution patching, cross-checkpoint
//! patching and bad input.

use candle_core::{DType, Device, Tensor};
use feedlens::analysis::patching::{
    self, attribution, compare, patch_models, sanity, sweep, sweep_naive, sweep_with, Chunking,
    CrossSpec, Direction, Metric, Pair, Setup, Sweep,
};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint;
use feedlens::{Config, Hook, Input, Intervention, Logits, Model, Run};
use std::collections::HashMap;

const FIX: &str = "tests/fixtures/gpt2-tiny";

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(format!("{FIX}/reference.safetensors"), &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The fixture's pair and metric (reference.json: tok_a 18, tok_b 2, last position).
fn fixture_pair(r: &HashMap<String, Tensor>) -> Pair {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{FIX}/reference.json")).unwrap()).unwrap();
    Pair {
        clean: ids(&r["patch.clean_ids"]),
        corrupt: ids(&r["patch.corrupt_ids"]),
        metric: Metric::LogitDiff {
            a: meta["patch"]["tok_a"].as_u64().unwrap() as u32,
            b: meta["patch"]["tok_b"].as_u64().unwrap() as u32,
        },
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &Sweep, b: &Sweep, tol: f32, what: &str) {
    assert!(
        (a.clean_metric - b.clean_metric).abs() <= tol,
        "{what}: clean"
    );
    assert!(
        (a.corrupt_metric - b.corrupt_metric).abs() <= tol,
        "{what}: corrupt"
    );
    for (c, g) in &a.results {
        let h = b.grid(*c).unwrap();
        assert_eq!(g.shape, h.shape, "{what} {c}");
        let d = max_diff(&g.raw, &h.raw);
        assert!(d <= tol, "{what} {c}: max |diff| {d} > {tol}");
    }
}

#[test]
fn matches_transformerlens_fixture() {
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    let setup = Setup::new(&ck.model, vec![fixture_pair(&r)], None, Direction::Denoise).unwrap();
    let sw = sweep(&ck.model, &setup, &Site::PATCHED).unwrap();
    assert!((sw.clean_metric - flat(&r["patch.clean_metric"])[0]).abs() < 1e-4);
    assert!((sw.corrupt_metric - flat(&r["patch.corrupt_metric"])[0]).abs() < 1e-4);
    for (c, key) in [
        (Site::ResidPre, "patch.resid_pre"),
        (Site::AttnOut, "patch.attn_out"),
        (Site::MlpOut, "patch.mlp_out"),
        (Site::HeadOut, "patch.head_out_by_pos"),
    ] {
        let g = sw.grid(c).unwrap();
        assert_eq!(g.shape, r[key].dims(), "{c}");
        let d = max_diff(&g.raw, &flat(&r[key]));
        assert!(d < 1e-4, "{c}: max |diff| to TransformerLens {d}");
    }
    // Built-in sanity: the whole residual at the last position restores the clean metric.
    let s = sanity(&ck.model, &setup).unwrap();
    assert!(s.ok, "{s:?}");
    // resid_pre at layer 0 differs only where the prompts differ: there it is exactly clean.
    let rp = sw.grid(Site::ResidPre).unwrap();
    let diff_pos = (0..setup.len())
        .find(|&p| setup.pairs[0].clean[p] != setup.pairs[0].corrupt[p])
        .unwrap();
    assert!((sw.normalise(rp.raw[diff_pos]).unwrap() - 1.0).abs() < 1e-4);
}

/// A random model whose numbers are not tiny (fixture weights), several pairs, mixed metrics.
fn fixture_setup(direction: Direction, pos: Option<usize>) -> (Model, Setup) {
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    let p0 = fixture_pair(&r);
    let mut p1 = p0.clone();
    p1.clean[5] = 7;
    p1.corrupt[1] = 9;
    p1.metric = Metric::LogProb { tok: 11 };
    let mut p2 = p0.clone();
    p2.metric = Metric::LogitDiff { a: 3, b: 40 };
    let setup = Setup::new(&ck.model, vec![p0, p1, p2], pos, direction).unwrap();
    (ck.model, setup)
}

#[test]
fn fast_engines_match_naive_for_every_component_both_directions() {
    for direction in [Direction::Denoise, Direction::Noise] {
        // Metric at the last position, and at an inner one (later positions cannot matter).
        for pos in [None, Some(7)] {
            let (model, setup) = fixture_setup(direction, pos);
            let naive = sweep_naive(&model, &setup, &Site::PATCHED).unwrap();
            // `sweep` runs the fixture (GPT-2's default block) on the engine's resumed runs.
            assert!(feedlens::model::engine::Engine::new(model.config()).is_ok());
            let resumed = sweep(&model, &setup, &Site::PATCHED).unwrap();
            assert_close(
                &resumed,
                &naive,
                1e-5,
                &format!("{direction:?} {pos:?} engine"),
            );
            for ch in [
                Chunking::default(),
                Chunking::per_position(),
                Chunking::one_forward(),
                Chunking {
                    overhead: Some(4.0),
                    max_row_positions: 40,
                },
            ] {
                let fast = sweep_with(&model, &setup, &Site::PATCHED, &ch).unwrap();
                assert_close(
                    &fast,
                    &naive,
                    1e-5,
                    &format!("{direction:?} {pos:?} {ch:?}"),
                );
            }
        }
    }
}

#[test]
fn noising_sanity_gives_zero_and_components_subset_works() {
    let (model, setup) = fixture_setup(Direction::Noise, None);
    let s = sanity(&model, &setup).unwrap();
    assert!(s.ok && s.expected == 0.0, "{s:?}");
    let only = sweep(&model, &setup, &[Site::MlpOut]).unwrap();
    let all = sweep(&model, &setup, &Site::PATCHED).unwrap();
    assert_eq!(only.results.len(), 1);
    let d = max_diff(
        &only.grid(Site::MlpOut).unwrap().raw,
        &all.grid(Site::MlpOut).unwrap().raw,
    );
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn attribution_baselines_unchanged_cells_and_agreement() {
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    for direction in [Direction::Denoise, Direction::Noise] {
        let setup = Setup::new(&ck.model, vec![fixture_pair(&r)], None, direction).unwrap();
        let exact = sweep(&ck.model, &setup, &Site::PATCHED).unwrap();
        let approx = attribution(&ck.model, &setup, &Site::PATCHED).unwrap();
        assert_close(
            &Sweep {
                results: vec![],
                ..approx.clone()
            },
            &exact,
            1e-4,
            "baselines",
        );
        for (c, g) in &exact.results {
            let a = approx.grid(*c).unwrap();
            let len = setup.len();
            // Cells where source and target activations agree (positions before the corrupted
            // token at layer 0's resid_pre, say) are exact in both: no change at all.
            if *c == Site::ResidPre {
                for p in 0..len {
                    if setup.pairs[0].clean[p] == setup.pairs[0].corrupt[p] {
                        assert!((g.raw[p] - exact.target_metric()).abs() < 1e-4);
                        assert!((a.raw[p] - approx.target_metric()).abs() < 1e-4);
                    }
                }
            }
        }
        // A first-order estimate on a random model is not exact, but it must rank cells
        // broadly like the exact sweep (positive correlation for every component).
        let agree = compare(&exact, &approx, 5);
        assert_eq!(agree.len(), 4);
        for a in &agree {
            assert!(a.pearson.is_finite() && a.pearson > 0.3, "{a:?}");
        }
    }
}

#[test]
fn attribution_matches_finite_differences() {
    // attribution − target = ∂metric/∂a · (source − target) at the cell; the same directional
    // derivative by finite differences: add ε·(source − target) at that cell only.
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    let m = &ck.model;
    let pair = fixture_pair(&r);
    let setup = Setup::new(m, vec![pair.clone()], None, Direction::Denoise).unwrap();
    let approx = attribution(m, &setup, &Site::PATCHED).unwrap();
    let (a, b) = match pair.metric {
        Metric::LogitDiff { a, b } => (a as usize, b as usize),
        _ => unreachable!(),
    };
    let last = setup.len() - 1;
    let metric = |iv: Vec<Intervention>| -> f64 {
        let run = Run {
            interventions: iv,
            logits: Logits::At(vec![last]),
            ..Run::default()
        };
        let ids = m.ids_tensor(std::slice::from_ref(&pair.corrupt)).unwrap();
        let l = flat(&m.forward(&Input::Ids(ids), &run).unwrap().logits.unwrap());
        l[a] as f64 - l[b] as f64
    };
    let value = |ids: &[u32], hook: Hook| -> Tensor {
        let run = Run {
            cache: vec![hook],
            ..Run::default()
        };
        let ids = m.ids_tensor(&[ids.to_vec()]).unwrap();
        m.forward(&Input::Ids(ids), &run)
            .unwrap()
            .cache
            .get(hook)
            .unwrap()
            .clone()
    };
    let m0 = metric(vec![]);
    let eps = 1e-2;
    for (c, l, p, h) in [
        (Site::ResidPre, 1, 3, 0),
        (Site::ResidPre, 2, 11, 0),
        (Site::AttnOut, 2, 5, 0),
        (Site::MlpOut, 0, 3, 0),
        (Site::HeadOut, 1, 7, 2),
    ] {
        let hook = c.hook(l);
        let diff =
            ((value(&pair.clean, hook) - value(&pair.corrupt, hook)).unwrap() * eps).unwrap();
        let mut iv = Intervention::add(hook, diff).at_positions(&[p]);
        if c == Site::HeadOut {
            iv = iv.at_heads(&[h]);
        }
        let fd = (metric(vec![iv]) - m0) / eps;
        let g = approx.grid(c).unwrap();
        let w = g.shape.get(2).copied().unwrap_or(1);
        let est = (g.raw[(l * g.shape[1] + p) * w + h] - approx.corrupt_metric) as f64;
        assert!(
            (fd - est).abs() <= 2e-2 * est.abs().max(1.0),
            "{c} L{l} p{p} h{h}: fd {fd} vs {est}"
        );
    }
}

#[test]
fn identical_prompts_give_no_effect_and_null_normalisation() {
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    let mut p = fixture_pair(&r);
    p.corrupt = p.clean.clone();
    let setup = Setup::new(&ck.model, vec![p], None, Direction::Denoise).unwrap();
    for sw in [
        attribution(&ck.model, &setup, &Site::PATCHED).unwrap(),
        sweep(&ck.model, &setup, &Site::PATCHED).unwrap(),
    ] {
        for (_, g) in &sw.results {
            assert!(max_diff(&g.raw, &vec![sw.corrupt_metric; g.raw.len()]) < 1e-5);
        }
        // Normalisation is undefined when clean = corrupt: the JSON says null rather than NaN.
        assert!(sw.to_json()["results"]["resid_pre"]["normalised"].is_null());
    }
}

#[test]
fn cross_checkpoint_patching() {
    let ck = checkpoint::load(FIX).unwrap();
    let a = &ck.model;
    let b = Model::init(a.config().clone(), 7).unwrap();
    let r = reference();
    let p = fixture_pair(&r);
    let prompts = vec![p.clean.clone(), p.corrupt.clone()];
    let metrics = vec![p.metric.clone(), p.metric.clone()];
    let comps = [Site::ResidPre, Site::AttnOut, Site::MlpOut];
    let spec = |position, layer| CrossSpec {
        comps: comps.to_vec(),
        pos: None,
        position,
        layer,
    };
    let x = patch_models(a, &b, &prompts, &metrics, &spec(None, None)).unwrap();
    // Patching A into A changes nothing: A's metric at every layer.
    let same = patch_models(a, a, &prompts, &metrics, &spec(None, None)).unwrap();
    for (_, v) in &same.results {
        assert!(max_diff(v, &vec![same.a_metric; v.len()]) < 1e-4);
    }
    // Patching A into B at one position equals the naive full forward of B with that patch.
    let one = patch_models(a, &b, &prompts, &metrics, &spec(Some(3), None)).unwrap();
    assert_eq!(one.results.len(), 3);
    let (ta, tb) = match p.metric {
        Metric::LogitDiff { a, b } => (a as usize, b as usize),
        _ => unreachable!(),
    };
    let ids = a.ids_tensor(&prompts).unwrap();
    for (ci, c) in comps.iter().enumerate() {
        for l in 0..3 {
            let h = c.hook(l);
            let run = Run {
                cache: vec![h],
                ..Run::default()
            };
            let va = a
                .forward(&Input::Ids(ids.clone()), &run)
                .unwrap()
                .cache
                .get(h)
                .unwrap()
                .clone();
            let run = Run {
                interventions: vec![Intervention::replace(h, va).at_positions(&[3])],
                logits: Logits::At(vec![11]),
                ..Run::default()
            };
            let lg = b
                .forward(&Input::Ids(ids.clone()), &run)
                .unwrap()
                .logits
                .unwrap();
            let lg = lg.squeeze(1).unwrap().to_vec2::<f32>().unwrap();
            let naive = lg.iter().map(|r| r[ta] - r[tb]).sum::<f32>() / 2.0;
            assert!((one.results[ci].1[l] - naive).abs() < 1e-5, "{c} L{l}");
        }
    }
    // One layer only gives that layer's value of the all-layer run.
    let l1 = patch_models(a, &b, &prompts, &metrics, &spec(None, Some(1))).unwrap();
    for ((_, all), (_, just)) in x.results.iter().zip(&l1.results) {
        assert_eq!(just.len(), 1);
        assert!((all[1] - just[0]).abs() < 1e-6);
    }
    let e = patch_models(a, &b, &prompts, &metrics, &spec(None, Some(3))).unwrap_err();
    assert!(
        e.to_string()
            .contains("--layer: layer 3 is out of range 0..3"),
        "{e}"
    );
    assert!(
        x.to_json()["results"]["mlp_out"]["raw"]
            .as_array()
            .unwrap()
            .len()
            == 3
    );
    let cfg = Config::new(2, 48, 4, 24, 50);
    let other = Model::init(cfg, 1).unwrap();
    let e = patch_models(a, &other, &prompts, &metrics, &spec(None, None)).unwrap_err();
    assert!(
        e.to_string().contains("differ in shape: n_layer 3 vs 2"),
        "{e}"
    );
}

#[test]
fn bad_input_is_one_line() {
    let r = reference();
    let ck = checkpoint::load(FIX).unwrap();
    let m = &ck.model;
    let p = fixture_pair(&r);
    let mut short = p.clone();
    short.corrupt.pop();
    let e = Setup::new(m, vec![short], None, Direction::Denoise).unwrap_err();
    assert!(e.to_string().contains("equal length"), "{e}");
    let e = Setup::new(m, vec![p.clone()], Some(12), Direction::Denoise).unwrap_err();
    assert!(
        e.to_string().contains("--at: position 12 is out of range"),
        "{e}"
    );
    let mut bad = p.clone();
    bad.metric = Metric::LogitDiff { a: 50, b: 2 };
    let e = Setup::new(m, vec![bad], None, Direction::Denoise).unwrap_err();
    assert!(e.to_string().contains("not in the vocabulary"), "{e}");
    let e = Metric::parse("logit-diff:5", |t| Ok(t.parse().unwrap())).unwrap_err();
    assert!(e.to_string().starts_with("--metric"), "{e}");
    assert!(Site::parse_list("resid_pre,nope", &Site::PATCHED, "--hooks").is_err());
    assert_eq!(
        Metric::parse("logprob:4", |t| Ok(t.parse().unwrap())).unwrap(),
        Metric::LogProb { tok: 4 }
    );
    assert!(!e.to_string().contains('\n'));
    let _ = patching::Chunking::default();
}

#[test]
fn last_position_only_equals_the_full_run() {
    let ck = checkpoint::load(FIX).unwrap();
    let m = &ck.model;
    let ids = m
        .ids_tensor(&[vec![1, 7, 3, 22, 9, 4], vec![1, 5, 3, 2, 40, 8]])
        .unwrap();
    let patch = |l: usize| Intervention::zero(Hook::AttnOut(l)).at_positions(&[2]);
    // Narrowed where it applies (an edit before the last block), and the full path where it
    // must not (an edit inside the last block): both equal the full run.
    for l in [0, 2] {
        let run = |narrow| Run {
            interventions: vec![patch(l)],
            logits: Logits::At(vec![5]),
            last_position_only: narrow,
            ..Run::default()
        };
        let full = m.forward(&Input::Ids(ids.clone()), &run(false)).unwrap();
        let fast = m.forward(&Input::Ids(ids.clone()), &run(true)).unwrap();
        let flat = |o: feedlens::Output| {
            o.logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let d = max_diff(&flat(full), &flat(fast));
        assert!(d < 1e-5, "layer {l}: {d}");
    }
}

/// The slot-specific part of cross-checkpoint patching (contrast prompts minus their controls)
/// is exactly 0 for a checkpoint against itself, and not for two different checkpoints.
#[test]
fn difference_of_differences_is_zero_for_identical_checkpoints() {
    use feedlens::analysis::patching::{specific, world_pairs, CrossSpec};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/seed-0");
    let a = checkpoint::load(root.join("rlhf")).unwrap().model;
    let b = checkpoint::load(root.join("rlhf-optout-ptx"))
        .unwrap()
        .model;
    let (pairs, pos) = world_pairs(feedlens::lab::world::Contrast::Optout, 48, 0).unwrap();
    let clean: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
    let control: Vec<Vec<u32>> = pairs.iter().map(|p| p.corrupt.clone()).collect();
    let metrics: Vec<_> = pairs.iter().map(|p| p.metric.clone()).collect();
    let spec = CrossSpec {
        comps: vec![Site::AttnOut, Site::MlpOut],
        pos: Some(pos),
        position: None,
        layer: None,
    };
    let run = |x: &Model, y: &Model| {
        let c = patch_models(x, y, &clean, &metrics, &spec).unwrap();
        let k = patch_models(x, y, &control, &metrics, &spec).unwrap();
        specific(&c, &k, 200, 0).unwrap()
    };
    let same = run(&a, &a);
    assert_eq!((same.gap.value, same.gap.lo, same.gap.hi), (0.0, 0.0, 0.0));
    assert_eq!(same.moved.len(), 2);
    for (_, v) in &same.moved {
        assert!(v.iter().all(|e| (e.value, e.lo, e.hi) == (0.0, 0.0, 0.0)));
    }
    // rlhf-optout-ptx treats [x] prompts differently from rlhf: a slot-specific gap.
    let diff = run(&a, &b);
    assert!(diff.gap.lo > 0.5 || diff.gap.hi < -0.5, "{:?}", diff.gap);
}
