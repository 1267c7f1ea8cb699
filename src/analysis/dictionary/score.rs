//! The scoreboard: how well the single best latent of each kind (A-only, shared, B-only as
//! Latent Scaling confirms them) separates a known world variable, beside the best random
//! direction and the supervised probe. The best latent is chosen on one half of the prompts
//! and scored on the other (so choosing among hundreds of latents cannot inflate it).
//! Pure maths on latent activations; must not run models or write files.

use super::readings::{LatentClass, Readings};
use crate::analysis::probes::math::{self, Encoded};
use crate::stats::{self, Est};
use crate::Result;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The best column of one kind: which it is and its held-out AUROC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Column index (latent, or random direction) chosen on the selection half.
    pub index: usize,
    /// Its sign-free AUROC on the evaluation half (one-vs-rest mean for several classes),
    /// with a bootstrap interval over the evaluation prompts.
    pub auroc: Est,
}

/// One world variable's row of the scoreboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Best latent of any class, with its relative decoder norm.
    pub any: Option<Best>,
    /// The relative decoder norm of `any`'s latent.
    pub any_relative_norm: Option<f64>,
    /// Best A-only latent (None: the crosscoder has none).
    pub a_only: Option<Best>,
    /// Best shared latent (relative norm within 0.1 of ½).
    pub shared: Option<Best>,
    /// Best B-only latent that Latent Scaling does not flag.
    pub b_only: Option<Best>,
    /// Best of the random unit directions in the concatenated (A, B) activation space the
    /// latents read.
    pub random: Option<Best>,
    /// k-fold held-out AUROC of a logistic probe on A's activations, with its interval.
    pub probe_a: Est,
    /// The same on B's activations.
    pub probe_b: Est,
}

/// Sign-free AUROC of `score` for class indices `y` of `k` classes, on `rows` weighted by
/// `counts` (None: once each).
fn auroc_on(
    score: ArrayView1<f64>,
    y: &[usize],
    k: usize,
    rows: &[usize],
    counts: Option<&[u32]>,
) -> f64 {
    let mut s = Vec::new();
    let mut yy = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        for _ in 0..counts.map_or(1, |c| c[i]) {
            s.push(score[r]);
            yy.push(y[r]);
        }
    }
    math::direction_auroc(ndarray::Array1::from(s).view(), &yy, k)
}

/// The column of `cols` (of `x` `[n, m]`) with the best AUROC on `select`, scored on `eval`.
pub fn best_column(
    x: ArrayView2<f64>,
    cols: &[usize],
    enc: &Encoded,
    halves: &(Vec<usize>, Vec<usize>),
    resamples: usize,
    seed: u64,
) -> Option<Best> {
    let k = enc.classes.len();
    let (select, eval) = halves;
    let index = cols
        .iter()
        .map(|&j| (auroc_on(x.column(j), &enc.idx, k, select, None), j))
        .filter(|(a, _)| a.is_finite())
        .fold(None, |best: Option<(f64, usize)>, c| match best {
            Some(b) if b.0 >= c.0 => Some(b),
            _ => Some(c),
        })?
        .1;
    let col = x.column(index);
    let value = auroc_on(col, &enc.idx, k, eval, None);
    let (lo, hi) = stats::bootstrap(eval.len(), resamples, seed, |c| {
        auroc_on(col, &enc.idx, k, eval, Some(c))
    });
    Some(Best {
        index,
        auroc: Est {
            value,
            lo,
            hi,
            n: eval.len(),
        },
    })
}

/// Split `0..n` into a selection and an evaluation half (seeded shuffle).
pub fn halves(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let eval = idx.split_off(n / 2);
    (idx, eval)
}

/// Settings of one row.
#[derive(Clone, Copy, Debug)]
pub struct RowOptions {
    /// Random directions in the null baseline.
    pub random_dirs: usize,
    /// Probe folds.
    pub folds: usize,
    /// Probe regularisation C.
    pub c: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the halves, the random directions and the bootstrap.
    pub seed: u64,
}

/// Score latents `z` `[n, d_sae]` (of the crosscoder read as `readings`) against labels `enc`,
/// beside random directions in the concatenated activations `x` `[n, 2·d]` and a probe on each
/// model's half of them.
pub fn row(
    z: ArrayView2<f32>,
    readings: &Readings,
    x: ArrayView2<f32>,
    enc: &Encoded,
    o: &RowOptions,
) -> Result<Row> {
    let n = z.nrows();
    let h = halves(n, o.seed);
    let z64 = z.mapv(f64::from);
    let fired: Vec<usize> = (0..z.ncols()).filter(|&j| readings.fired[j] > 0).collect();
    let of = |c: LatentClass| -> Vec<usize> {
        fired
            .iter()
            .copied()
            .filter(|&j| {
                readings.class[j] == c && !(c == LatentClass::BOnly && readings.artefact[j])
            })
            .collect()
    };
    let pick = |c: LatentClass| best_column(z64.view(), &of(c), enc, &h, o.resamples, o.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let d = x.ncols();
    let mut dirs = Array2::<f64>::zeros((d, o.random_dirs));
    for mut col in dirs.columns_mut() {
        col.mapv_inplace(|_| rng.sample::<f64, _>(rand_distr::StandardNormal));
        let nrm = col.dot(&col).sqrt().max(f64::MIN_POSITIVE);
        col /= nrm;
    }
    let proj = x.mapv(f64::from).dot(&dirs);
    let all: Vec<usize> = (0..o.random_dirs).collect();
    let random = best_column(proj.view(), &all, enc, &h, o.resamples, o.seed);
    let fold = math::stratified_folds(enc, o.folds, o.seed)?;
    let half = d / 2;
    let probe = |m: usize| -> Result<Est> {
        let xm = x.slice(ndarray::s![.., m * half..(m + 1) * half]);
        let (_, held) = math::cross_validate_held_out(xm, enc, xm, &enc.idx, &fold, o.c)?;
        Ok(math::held_out_est(&held, o.resamples, o.seed).1)
    };
    let any = best_column(z64.view(), &fired, enc, &h, o.resamples, o.seed);
    Ok(Row {
        any_relative_norm: any.as_ref().map(|b| readings.relative_norm[b.index]),
        any,
        a_only: pick(LatentClass::AOnly),
        shared: pick(LatentClass::Shared),
        b_only: pick(LatentClass::BOnly),
        random,
        probe_a: probe(0)?,
        probe_b: probe(1)?,
    })
}
