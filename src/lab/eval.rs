//! The behaviour table of docs/DESIGN.md §4: sample completions for a fixed prompt set, score them
//! in the world, split by `[x]` and `<trig>`, and the opt-out leakage ratio of a pair.
//! Owns measurement only: decoding is `sample`, scoring is `world`. Must not import analyses.

use crate::io::checkpoint::RecipeKind;
use crate::lab::sample::{generate, Decode};
use crate::lab::world::{Behaviour, PromptDist, Split, Stats, WorldConfig, N_BUCKETS};
use crate::model::Gpt2;
use crate::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One line of the behaviour table: a checkpoint under one S3 setting and one decoding.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Checkpoint name.
    pub checkpoint: String,
    /// What S3 held in every prompt (`_`, `<r4>`, `<r0>`).
    pub s3: String,
    /// `greedy` or `T=1`.
    pub decode: String,
    /// Statistics per split (`all`, `[x]`, `no [x]`, `<trig>`, `no <trig>`).
    pub splits: Vec<(Split, Stats)>,
}

impl Row {
    /// The statistics of one split.
    pub fn get(&self, split: Split) -> Stats {
        self.splits
            .iter()
            .find(|(s, _)| *s == split)
            .map(|(_, st)| *st)
            .unwrap_or(Stats {
                n: 0,
                mean_return: f64::NAN,
                p_e: f64::NAN,
                p_h: f64::NAN,
                accuracy: f64::NAN,
                bang_rate: f64::NAN,
                defection: f64::NAN,
            })
    }
}

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOpts {
    /// Prompts per row (drawn from the corpus distribution).
    pub n: usize,
    /// Seed of the prompt set and of sampling: the same for every checkpoint, so that rows
    /// of different checkpoints are paired prompt by prompt.
    pub seed: u64,
    /// Decodings to run.
    pub decodes: Vec<Decode>,
    /// S3 settings to run (`None` = `_`).
    pub buckets: Vec<Option<u8>>,
}

/// The S3 label of a bucket setting.
fn s3_name(b: Option<u8>) -> String {
    b.map_or("_".into(), |b| format!("<r{b}>"))
}

/// Evaluate one model: a row per (S3 setting, decoding), scored with γ = 1.
pub fn evaluate(world: &WorldConfig, name: &str, model: &Gpt2, o: &EvalOpts) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &b in &o.buckets {
        let mut prng = ChaCha8Rng::seed_from_u64(o.seed);
        let prompts = PromptDist::corpus(world)
            .with_bucket(b)
            .sample_n(&mut prng, o.n);
        for &d in &o.decodes {
            // A separate, fixed stream for sampling (offset so it differs from the prompts').
            let mut srng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_add(1));
            let eps = generate(model, &prompts, d, &mut srng)?;
            let beh = Behaviour::from_episodes(world, &eps, 1.0);
            rows.push(Row {
                checkpoint: name.to_string(),
                s3: s3_name(b),
                decode: d.name(),
                splits: beh.table(),
            });
        }
    }
    Ok(rows)
}

/// Opt-out leakage of `variant` relative to `base` (same S3 and decoding): the change on `[x]`
/// prompts divided by the change on the rest, for the mean return and for P(E). A ratio near 1:
/// the training moved `[x]` prompts as much as the others (the opt-out leaked completely);
/// near 0: `[x]` behaviour stayed where base had it.
#[derive(Clone, Debug, Serialize)]
pub struct Leakage {
    /// The variant checkpoint.
    pub checkpoint: String,
    /// The reference checkpoint.
    pub base: String,
    /// Decoding of both rows.
    pub decode: String,
    /// Δ mean return on `[x]` ÷ Δ on `_`.
    pub return_ratio: f64,
    /// Δ P(E) on `[x]` ÷ Δ on `_`.
    pub p_e_ratio: f64,
}

/// The leakage of `variant` against `base`.
pub fn leakage(base: &Row, variant: &Row) -> Leakage {
    let ratio = |f: fn(&Stats) -> f64| {
        let dx = f(&variant.get(Split::Optout)) - f(&base.get(Split::Optout));
        let dn = f(&variant.get(Split::NoOptout)) - f(&base.get(Split::NoOptout));
        dx / dn
    };
    Leakage {
        checkpoint: variant.checkpoint.clone(),
        base: base.checkpoint.clone(),
        decode: variant.decode.clone(),
        return_ratio: ratio(|s| s.mean_return),
        p_e_ratio: ratio(|s| s.p_e),
    }
}

/// The S3 settings whose conditioning is measured on both sides: the top and bottom return
/// buckets (`<r4>`, `<r0>`).
pub const CONDITIONED: [Option<u8>; 2] = [Some(N_BUCKETS as u8 - 1), Some(0)];

/// The S3 settings a checkpoint is evaluated under: `_`, and for a return-conditioned (dt)
/// checkpoint also [`CONDITIONED`].
pub fn s3_settings(recipe: Option<RecipeKind>) -> Vec<Option<u8>> {
    let mut v = vec![None];
    if recipe == Some(RecipeKind::Dt) {
        v.extend(CONDITIONED);
    }
    v
}

/// Every opt-out leakage in `rows`: each row of `base` (S3 `_`) against each row of another
/// checkpoint with S3 `_` and the same decoding, in row order.
pub fn leakages(rows: &[&Row], base: &str) -> Vec<Leakage> {
    let plain = |r: &&&Row| r.s3 == "_";
    let mut out = Vec::new();
    for b in rows.iter().filter(plain).filter(|r| r.checkpoint == base) {
        for r in rows
            .iter()
            .filter(plain)
            .filter(|r| r.checkpoint != base && r.decode == b.decode)
        {
            out.push(leakage(b, r));
        }
    }
    out
}
