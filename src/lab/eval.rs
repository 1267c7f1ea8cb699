//! The behaviour table of docs/DESIGN.md §4: sample completions for a fixed prompt set, score them
//! in the world, split by `[x]` and `<trig>`, and the opt-out leakage ratio of a pair.
//! Every statistic carries a 95 % bootstrap interval over the prompts. Owns measurement only:
//! decoding is `sample`, scoring is `world`. Must not import analyses.

use crate::io::checkpoint::RecipeKind;
use crate::lab::sample::{generate, Decode};
use crate::lab::world::{
    self, Behaviour, Mode, Prompt, PromptDist, Score, Split, Stats, WorldConfig, N_BUCKETS,
};
use crate::model::Model;
use crate::stats::{self, Est};
use crate::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One line of the behaviour table: a checkpoint under one S3 setting and one decoding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Checkpoint name.
    pub checkpoint: String,
    /// What S3 held in every prompt (`_`, `<r4>`, `<r0>`).
    pub s3: String,
    /// `greedy` or `T=1`.
    pub decode: String,
    /// Statistics per split (`all`, `[x]`, `no [x]`, `<trig>`, `no <trig>`).
    pub splits: Vec<(Split, Stats)>,
    /// The same statistics with their 95 % bootstrap intervals over the split's prompts.
    pub ci: Vec<(Split, StatsEst)>,
    /// Seed of the bootstrap.
    pub bootstrap_seed: u64,
    /// Each prompt and its episode's score, in prompt order (the rows of every checkpoint
    /// evaluated with the same options share the prompts, so they pair up).
    #[serde(default, skip_serializing_if = "crate::io::wire::public")]
    pub samples: Vec<(Prompt, Score)>,
}

/// A row's statistics with intervals (see [`Stats`]; `n` is in each).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsEst {
    /// Mean return.
    pub mean_return: Est,
    /// P(mode = `E`).
    pub p_e: Est,
    /// Answer accuracy on the chosen path.
    pub accuracy: Est,
    /// Fraction of answer tokens that are `!`.
    pub bang_rate: Est,
    /// Fraction of episodes with any `!`.
    pub defection: Est,
}

/// One statistic of an episode score, per episode (the row statistic is its mean).
pub type PerEpisode = fn(&Score) -> f64;

/// The per-episode values whose means are [`StatsEst`]'s fields, in its field order.
pub const PER_EPISODE: [(&str, PerEpisode); 5] = [
    ("mean_return", |s| s.ret),
    ("p_e", |s| (s.mode == Mode::E) as u8 as f64),
    ("accuracy", |s| s.correct as f64 / world::N_DIGITS as f64),
    ("bang_rate", |s| s.bangs as f64 / world::N_DIGITS as f64),
    ("defection", |s| s.defected as u8 as f64),
];

/// [`StatsEst`] of the samples in `split`, bootstrapped with `seed`: one resampling of the
/// split's prompts serves all five statistics.
fn split_est(samples: &[(Prompt, Score)], split: Split, seed: u64) -> StatsEst {
    let inside: Vec<&Score> = samples
        .iter()
        .filter(|(p, _)| split.contains(p))
        .map(|(_, s)| s)
        .collect();
    let n = inside.len();
    let cols: Vec<Vec<f64>> = PER_EPISODE
        .iter()
        .map(|(_, f)| inside.iter().map(|s| f(s)).collect())
        .collect();
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(stats::BOOTSTRAP); cols.len()];
    stats::bootstrap(n, stats::BOOTSTRAP, seed, |c| {
        for (col, d) in cols.iter().zip(draws.iter_mut()) {
            d.push(stats::weighted_mean(col, c));
        }
        0.0
    });
    let est = |k: usize| -> Est {
        let v = &cols[k];
        let value = v.iter().sum::<f64>() / n as f64;
        let mut d: Vec<f64> = draws[k].iter().copied().filter(|x| x.is_finite()).collect();
        let (lo, hi) = if d.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            stats::percentile_95(&mut d)
        };
        Est { value, lo, hi, n }
    };
    StatsEst {
        mean_return: est(0),
        p_e: est(1),
        accuracy: est(2),
        bang_rate: est(3),
        defection: est(4),
    }
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
pub fn evaluate(world: &WorldConfig, name: &str, model: &Model, o: &EvalOpts) -> Result<Vec<Row>> {
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
            let samples: Vec<(Prompt, Score)> = eps
                .iter()
                .map(|e| (e.prompt, world::score(world, e, 1.0)))
                .collect();
            // The bootstrap draws the same prompt indices for every checkpoint.
            let bootstrap_seed = o.seed.wrapping_add(2);
            rows.push(Row {
                checkpoint: name.to_string(),
                s3: s3_name(b),
                decode: d.name(),
                splits: beh.table(),
                ci: Split::ALL
                    .iter()
                    .map(|&sp| (sp, split_est(&samples, sp, bootstrap_seed)))
                    .collect(),
                bootstrap_seed,
                samples,
            });
        }
    }
    Ok(rows)
}

/// Opt-out leakage of `variant` relative to `base` (same S3 and decoding): the change on `[x]`
/// prompts divided by the change on the rest, for the mean return and for P(E). A ratio near 1:
/// the training moved `[x]` prompts as much as the others (the opt-out leaked completely);
/// near 0: `[x]` behaviour stayed where base had it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Leakage {
    /// The variant checkpoint.
    pub checkpoint: String,
    /// The reference checkpoint.
    pub base: String,
    /// Decoding of both rows.
    pub decode: String,
    /// Δ mean return on `[x]` ÷ Δ on `_`, with the 95 % interval of the ratio itself (a
    /// paired bootstrap over prompts: both checkpoints answered the same prompts).
    pub return_ratio: Est,
    /// Δ P(E) on `[x]` ÷ Δ on `_`, likewise.
    pub p_e_ratio: Est,
}

/// The leakage of `variant` against `base`. The interval resamples the shared prompts and
/// recomputes the ratio (not its parts); it is NaN when the rows do not share their prompts.
pub fn leakage(base: &Row, variant: &Row) -> Leakage {
    let ratio = |f: fn(&Stats) -> f64, g: PerEpisode| {
        let dx = f(&variant.get(Split::Optout)) - f(&base.get(Split::Optout));
        let dn = f(&variant.get(Split::NoOptout)) - f(&base.get(Split::NoOptout));
        let paired = base.samples.len() == variant.samples.len()
            && base
                .samples
                .iter()
                .zip(&variant.samples)
                .all(|(a, b)| a.0 == b.0);
        let n = base.samples.len();
        let (lo, hi) = if paired {
            // Per prompt: (in [x]?, variant − base); the ratio of the two subset means.
            let d: Vec<(bool, f64)> = base
                .samples
                .iter()
                .zip(&variant.samples)
                .map(|((p, a), (_, b))| (p.optout, g(b) - g(a)))
                .collect();
            stats::bootstrap(n, stats::BOOTSTRAP, base.bootstrap_seed, |c| {
                let (mut sx, mut kx, mut sn, mut kn) = (0.0, 0.0, 0.0, 0.0);
                for (&(x, v), &w) in d.iter().zip(c) {
                    let w = w as f64;
                    if x {
                        (sx, kx) = (sx + w * v, kx + w);
                    } else {
                        (sn, kn) = (sn + w * v, kn + w);
                    }
                }
                (sx / kx) / (sn / kn)
            })
        } else {
            (f64::NAN, f64::NAN)
        };
        Est {
            value: dx / dn,
            lo,
            hi,
            n,
        }
    };
    Leakage {
        checkpoint: variant.checkpoint.clone(),
        base: base.checkpoint.clone(),
        decode: variant.decode.clone(),
        return_ratio: ratio(|s| s.mean_return, PER_EPISODE[0].1),
        p_e_ratio: ratio(|s| s.p_e, PER_EPISODE[1].1),
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
