//! Ablating a set of components during sampled generation over a contrast's prompts: mean
//! ablation (the corpus mean per position), resample ablation (each clean prompt's values from
//! its corrupted twin's episode: is the set necessary?) and the sufficiency direction (each
//! corrupted prompt given its clean twin's values). Owns the experiment's runs and their
//! pairing; must not word or draw anything.

use super::{
    compare, contrast_prompts, episode_acts, replace_edits, sample, sampled, Compared, Measure,
    Sampled, Target, Values,
};
use crate::lab::sample::Window;
use crate::lab::world::{Contrast, PromptDist, WorldConfig};
use crate::model::Model;
use crate::{Hook, Intervention, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

named! {
    /// How an ablated activation is replaced.
    pub enum Method("ablation method") {
        /// The corpus mean at that position (the model's own samples, teacher-forced).
        Mean = "mean",
        /// The value from the other side of the contrast (the paired prompt's own episode).
        Resample = "resample",
    }
}

/// Settings of an ablation experiment.
#[derive(Clone, Debug)]
pub struct AblateOpts {
    /// The contrast whose prompts are used (clean = slot set).
    pub contrast: Contrast,
    /// Prompt pairs.
    pub n: usize,
    /// Seed of the prompts; sampling uses `seed + 1`, the corpus of the mean `seed + 2`.
    pub seed: u64,
    /// Bootstrap resamples of the intervals.
    pub bootstrap: usize,
}

/// One ablation of one set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ablation {
    /// The ablated set.
    pub set: Vec<Target>,
    /// Clean prompts, set mean-ablated.
    pub mean: Compared,
    /// Clean prompts, set resampled from the corrupted twins (necessity).
    pub resample: Compared,
    /// Corrupted prompts, set given the clean twins' values (sufficiency).
    pub sufficiency: Compared,
}

/// An ablation experiment: the unedited behaviour on both sides and each set's ablations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblateResult {
    /// The contrast.
    pub contrast: Contrast,
    /// The behaviour the contrast is read with.
    pub measure: Measure,
    /// Prompt pairs.
    pub n: usize,
    /// Seed of the prompts.
    pub seed: u64,
    /// Unedited behaviour on the clean prompts.
    pub clean: Sampled,
    /// Unedited behaviour on the corrupted prompts.
    pub corrupt: Sampled,
    /// Clean − corrupt, paired, unedited: the behaviour the contrast moves.
    pub gap: Sampled,
    /// One entry per set, in the order given.
    pub ablations: Vec<Ablation>,
}

/// Ablate each of `sets` in `model` over `o.n` pairs of `o.contrast`.
pub fn ablate(
    model: &Model,
    world: &WorldConfig,
    sets: &[Vec<Target>],
    o: &AblateOpts,
) -> Result<AblateResult> {
    let cfg = model.config();
    for t in sets.iter().flatten() {
        t.comp.check(cfg.n_layer, cfg.n_head)?;
        if t.pos >= crate::lab::world::SEQ_LEN {
            input_err!(
                "position {} is outside the episode (0..{})",
                t.pos,
                crate::lab::world::SEQ_LEN
            );
        }
    }
    if o.n == 0 {
        input_err!("--n: need at least one prompt pair");
    }
    let (clean_p, corrupt_p) = contrast_prompts(world, o.contrast, o.n, o.seed);
    let stream = o.seed.wrapping_add(1);
    let none = |_: &Window| -> Result<Vec<Intervention>> { Ok(Vec::new()) };
    let clean = sample(model, &clean_p, stream, &none)?;
    let corrupt = sample(model, &corrupt_p, stream, &none)?;
    let hooks: Vec<Hook> = sets
        .iter()
        .flatten()
        .map(|t| t.comp.hook())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_add(2));
    let corpus_p = PromptDist::corpus(world).sample_n(&mut rng, o.n);
    let corpus = sample(model, &corpus_p, o.seed.wrapping_add(3), &none)?;
    let mean = Values::mean_of(&episode_acts(model, &corpus, &hooks)?)?;
    let from_corrupt = Values::PerRow(episode_acts(model, &corrupt, &hooks)?);
    let from_clean = Values::PerRow(episode_acts(model, &clean, &hooks)?);
    let b = o.bootstrap;
    let cmp = |e: &[crate::lab::world::Episode], base: &[crate::lab::world::Episode]| {
        compare(world, e, base, b, o.seed)
    };
    let mut ablations = Vec::with_capacity(sets.len());
    for set in sets {
        let m = sample(model, &clean_p, stream, &replace_edits(set, &mean))?;
        let r = sample(model, &clean_p, stream, &replace_edits(set, &from_corrupt))?;
        let s = sample(model, &corrupt_p, stream, &replace_edits(set, &from_clean))?;
        ablations.push(Ablation {
            set: set.clone(),
            mean: cmp(&m, &clean),
            resample: cmp(&r, &clean),
            sufficiency: cmp(&s, &corrupt),
        });
    }
    Ok(AblateResult {
        contrast: o.contrast,
        measure: Measure::of(o.contrast),
        n: o.n,
        seed: o.seed,
        clean: sampled(world, &clean, b, o.seed),
        corrupt: sampled(world, &corrupt, b, o.seed),
        gap: compare(world, &clean, &corrupt, b, o.seed).change,
        ablations,
    })
}
