//! Probe maths on plain `ndarray` matrices, independent of the model: L2 logistic regression
//! (binary and multinomial, fitted by Newton's method), the difference-of-means direction,
//! stratified k-fold held-out accuracy and AUROC, Hewitt & Liang control labels, null baselines
//! (random directions, top principal component) and transfer between two activation matrices.
//! It must not touch files, checkpoints or the forward pass (`probes` does that).

use crate::stats::{percentile_95, Est};
use crate::Result;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

mod logistic;
pub use logistic::{encode_labels, Encoded, Logistic, GRAD_TOL};
use logistic::{max_abs, with_ones};

/// AUROC of `scores` for the positive rows (Mann–Whitney U with tied scores given their average
/// rank). None when either class is empty.
pub fn auroc(scores: ArrayView1<f64>, positive: &[bool]) -> Option<f64> {
    let n = scores.len();
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share their mean.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * order[i..=j].iter().filter(|&&r| positive[r]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Accuracy and AUROC of class probabilities.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Fraction of rows whose most probable class is the label.
    pub accuracy: f64,
    /// Binary: AUROC of the positive class's probability. More classes: one-vs-rest AUROC of
    /// each class's probability, averaged over the classes present (macro).
    pub auroc: f64,
}

/// Score probabilities `[n, classes]` against class indices.
pub fn scores(proba: ArrayView2<f64>, y: &[usize]) -> Scores {
    let n = y.len().max(1) as f64;
    let correct = proba
        .rows()
        .into_iter()
        .zip(y)
        .filter(|(row, &yi)| argmax(*row) == yi)
        .count();
    Scores {
        accuracy: correct as f64 / n,
        auroc: macro_auroc(proba, y),
    }
}

fn argmax(row: ArrayView1<f64>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Binary: AUROC of column 1. Otherwise the mean one-vs-rest AUROC over classes present with
/// both signs (NaN if none).
fn macro_auroc(proba: ArrayView2<f64>, y: &[usize]) -> f64 {
    let k = proba.ncols();
    if k == 2 {
        let pos: Vec<bool> = y.iter().map(|&v| v == 1).collect();
        return auroc(proba.column(1), &pos).unwrap_or(f64::NAN);
    }
    let aucs: Vec<f64> = (0..k)
        .filter_map(|c| {
            let pos: Vec<bool> = y.iter().map(|&v| v == c).collect();
            auroc(proba.column(c), &pos)
        })
        .collect();
    if aucs.is_empty() {
        f64::NAN
    } else {
        aucs.iter().sum::<f64>() / aucs.len() as f64
    }
}

/// Sign-free separation of a single score: for each class, the one-vs-rest AUROC flipped to
/// ≥ 0.5 (a direction's sign is arbitrary), averaged over classes. Binary: max(u, 1 − u).
pub fn direction_auroc(score: ArrayView1<f64>, y: &[usize], k: usize) -> f64 {
    let classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    let v: Vec<f64> = classes
        .iter()
        .filter_map(|&c| {
            let pos: Vec<bool> = y.iter().map(|&v| v == c).collect();
            auroc(score, &pos).map(|u| u.max(1.0 - u))
        })
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Difference of class means `μ₁ − μ₀` `[d]` (binary labels given as class indices 0/1).
pub fn mass_mean(x: ArrayView2<f32>, y: &[usize]) -> Array1<f64> {
    let d = x.ncols();
    let mut sums = [Array1::<f64>::zeros(d), Array1::<f64>::zeros(d)];
    let mut counts = [0usize; 2];
    for (row, &yi) in x.rows().into_iter().zip(y) {
        let c = yi.min(1);
        sums[c] += &row.mapv(f64::from);
        counts[c] += 1;
    }
    &sums[1] / counts[1].max(1) as f64 - &sums[0] / counts[0].max(1) as f64
}

/// Stratified k-fold assignment: each class's rows are shuffled with `seed` and dealt round-robin
/// to the folds, so every fold holds each class in proportion. Returns the fold of each row.
/// Errors when a class has fewer rows than folds (some training split would miss it).
pub fn stratified_folds(enc: &Encoded, folds: usize, seed: u64) -> Result<Vec<usize>> {
    if folds < 2 {
        input_err!("folds must be at least 2, got {folds}");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; enc.idx.len()];
    let mut next = 0;
    for c in 0..enc.classes.len() {
        let mut rows: Vec<usize> = (0..enc.idx.len()).filter(|&i| enc.idx[i] == c).collect();
        if rows.len() < folds {
            input_err!(
                "label value {} has {} examples, fewer than the {folds} folds",
                enc.classes[c],
                rows.len()
            );
        }
        rows.shuffle(&mut rng);
        for r in rows {
            fold[r] = next % folds;
            next += 1;
        }
    }
    Ok(fold)
}

/// Probe metrics from k-fold cross-validation: each is the mean over folds of the held-out value.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CvScores {
    /// Logistic regression.
    pub logistic: Scores,
    /// Difference-of-means direction (binary labels only): AUROC of the projection, accuracy
    /// with the threshold at the midpoint of the two projected training means.
    pub mass_mean: Option<Scores>,
}

fn rows_of(x: ArrayView2<f32>, rows: &[usize]) -> Array2<f32> {
    x.select(Axis(0), rows)
}

/// k-fold held-out scores of a logistic probe (and, for binary labels, the mass-mean direction)
/// trained on `x_train` with labels `enc` and evaluated on the held-out rows of `x_eval` with
/// class indices `y_eval` (pass the same matrix and labels twice for ordinary CV; two
/// checkpoints' activations of the same prompts for transfer). Folds whose held-out rows lack a
/// class have no AUROC and are left out of its mean.
pub fn cross_validate(
    x_train: ArrayView2<f32>,
    enc: &Encoded,
    x_eval: ArrayView2<f32>,
    y_eval: &[usize],
    fold: &[usize],
    c: f64,
) -> Result<CvScores> {
    cross_validate_held_out(x_train, enc, x_eval, y_eval, fold, c).map(|(s, _)| s)
}

/// One fold's held-out rows: their class indices, the logistic probe's probabilities, and the
/// probe fitted on the fold's training rows (to score other activations of the same prompts).
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOut {
    /// Class index of each held-out row.
    pub y: Vec<usize>,
    /// `[rows, classes]` probabilities.
    pub proba: Array2<f64>,
    /// The fold's fitted probe.
    pub model: Logistic,
}

/// [`cross_validate`], also returning each fold's held-out predictions of the logistic probe
/// (for intervals: [`held_out_est`]).
pub fn cross_validate_held_out(
    x_train: ArrayView2<f32>,
    enc: &Encoded,
    x_eval: ArrayView2<f32>,
    y_eval: &[usize],
    fold: &[usize],
    c: f64,
) -> Result<(CvScores, Vec<HeldOut>)> {
    let folds = fold.iter().max().map_or(0, |m| m + 1);
    let k = enc.classes.len();
    let per_fold: Vec<Result<(Scores, Option<Scores>, HeldOut)>> = (0..folds)
        .into_par_iter()
        .map(|f| {
            let tr: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] != f).collect();
            let te: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] == f).collect();
            let sub = Encoded {
                classes: enc.classes.clone(),
                idx: tr.iter().map(|&i| enc.idx[i]).collect(),
            };
            let y_te: Vec<usize> = te.iter().map(|&i| y_eval[i]).collect();
            let xtr = rows_of(x_train, &tr);
            let xte = rows_of(x_eval, &te);
            let model = Logistic::fit_encoded(&with_ones(xtr.view()), &sub, c, k > 2)?;
            let proba = model.predict_proba(xte.view());
            let logi = scores(proba.view(), &y_te);
            let mm = (k == 2).then(|| {
                let dir = mass_mean(xtr.view(), &sub.idx);
                let proj_tr = xtr.mapv(f64::from).dot(&dir);
                let proj_te = xte.mapv(f64::from).dot(&dir);
                let mean_of = |c: usize| {
                    let v: Vec<f64> = (0..tr.len())
                        .filter(|&i| sub.idx[i] == c)
                        .map(|i| proj_tr[i])
                        .collect();
                    v.iter().sum::<f64>() / v.len().max(1) as f64
                };
                let mid = 0.5 * (mean_of(0) + mean_of(1));
                let correct = proj_te
                    .iter()
                    .zip(&y_te)
                    .filter(|(&p, &yi)| (p > mid) == (yi == 1))
                    .count();
                let pos: Vec<bool> = y_te.iter().map(|&v| v == 1).collect();
                Scores {
                    accuracy: correct as f64 / te.len().max(1) as f64,
                    auroc: auroc(proj_te.view(), &pos).unwrap_or(f64::NAN),
                }
            });
            Ok((
                logi,
                mm,
                HeldOut {
                    y: y_te,
                    proba,
                    model,
                },
            ))
        })
        .collect();
    let per_fold: Vec<(Scores, Option<Scores>, HeldOut)> =
        per_fold.into_iter().collect::<Result<_>>()?;
    let mean = |v: Vec<Scores>| {
        let au: Vec<f64> = v
            .iter()
            .map(|s| s.auroc)
            .filter(|a| a.is_finite())
            .collect();
        Scores {
            accuracy: v.iter().map(|s| s.accuracy).sum::<f64>() / v.len() as f64,
            auroc: if au.is_empty() {
                f64::NAN
            } else {
                au.iter().sum::<f64>() / au.len() as f64
            },
        }
    };
    let logistic = mean(per_fold.iter().map(|p| p.0).collect());
    let mass_mean = per_fold
        .iter()
        .map(|p| p.1)
        .collect::<Option<Vec<_>>>()
        .map(mean);
    let held = per_fold.into_iter().map(|p| p.2).collect();
    Ok((
        CvScores {
            logistic,
            mass_mean,
        },
        held,
    ))
}

/// AUROC of `scores` for the `pos` rows, each row counted `w[i]` times (ties: half), given the
/// rows in ascending score order; None when either class has no weight. O(n) per call.
fn weighted_auroc(order: &[usize], scores: &[f64], pos: &[bool], w: &[u32]) -> Option<f64> {
    let (mut below_neg, mut u, mut n_pos, mut n_neg) = (0f64, 0f64, 0f64, 0f64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let (mut gp, mut gn) = (0f64, 0f64);
        for &r in &order[i..=j] {
            let c = w[r] as f64;
            if pos[r] {
                gp += c;
            } else {
                gn += c;
            }
        }
        u += gp * (below_neg + 0.5 * gn);
        below_neg += gn;
        n_pos += gp;
        n_neg += gn;
        i = j + 1;
    }
    (n_pos > 0.0 && n_neg > 0.0).then(|| u / (n_pos * n_neg))
}

/// One fold's held-out predictions, prepared for weighted resampling.
struct FoldScores {
    correct: Vec<bool>,
    /// Per one-vs-rest class (binary: class 1 only): scores, positives, ascending order.
    classes: Vec<(Vec<f64>, Vec<bool>, Vec<usize>)>,
}

impl FoldScores {
    fn of(h: &HeldOut) -> FoldScores {
        let k = h.proba.ncols();
        let cols: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
        let classes = cols
            .into_iter()
            .map(|c| {
                let s: Vec<f64> = h.proba.column(c).to_vec();
                let pos: Vec<bool> = h.y.iter().map(|&v| v == c).collect();
                let mut order: Vec<usize> = (0..s.len()).collect();
                order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
                (s, pos, order)
            })
            .collect();
        FoldScores {
            correct: (0..h.y.len())
                .map(|i| argmax(h.proba.row(i)) == h.y[i])
                .collect(),
            classes,
        }
    }
    /// (accuracy, AUROC — binary, or the macro mean over classes present) with row weights.
    fn scores(&self, w: &[u32]) -> (f64, f64) {
        let (mut c, mut t) = (0u64, 0u64);
        for (&ok, &wi) in self.correct.iter().zip(w) {
            t += wi as u64;
            if ok {
                c += wi as u64;
            }
        }
        let au: Vec<f64> = self
            .classes
            .iter()
            .filter_map(|(s, p, o)| weighted_auroc(o, s, p, w))
            .collect();
        let auroc = if au.is_empty() {
            f64::NAN
        } else {
            au.iter().sum::<f64>() / au.len() as f64
        };
        (c as f64 / t.max(1) as f64, auroc)
    }
}

/// The probes of `held` (one per fold, fitted on that fold's training rows of some activations)
/// scored on the held-out rows of `x_eval` (other activations of the same prompts) with class
/// indices `y_eval`: what [`cross_validate`] gives for transfer, without refitting.
pub fn score_held_out(
    held: &[HeldOut],
    x_eval: ArrayView2<f32>,
    y_eval: &[usize],
    fold: &[usize],
) -> (Scores, Vec<HeldOut>) {
    let per: Vec<(Scores, HeldOut)> = held
        .iter()
        .enumerate()
        .map(|(f, h)| {
            let te: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] == f).collect();
            let y_te: Vec<usize> = te.iter().map(|&i| y_eval[i]).collect();
            let proba = h.model.predict_proba(rows_of(x_eval, &te).view());
            let sc = scores(proba.view(), &y_te);
            (
                sc,
                HeldOut {
                    y: y_te,
                    proba,
                    model: h.model.clone(),
                },
            )
        })
        .collect();
    let au: Vec<f64> = per
        .iter()
        .map(|p| p.0.auroc)
        .filter(|a| a.is_finite())
        .collect();
    let s = Scores {
        accuracy: per.iter().map(|p| p.0.accuracy).sum::<f64>() / per.len() as f64,
        auroc: if au.is_empty() {
            f64::NAN
        } else {
            au.iter().sum::<f64>() / au.len() as f64
        },
    };
    (s, per.into_iter().map(|p| p.1).collect())
}

/// Intervals of the fold-mean accuracy and AUROC of held-out predictions: each resample redraws
/// every fold's held-out rows with replacement (seeded) and takes the mean over folds, as the
/// point value does. AUROC folds without both classes in a resample are left out of its mean.
pub fn held_out_est(held: &[HeldOut], resamples: usize, seed: u64) -> (Est, Est) {
    let folds: Vec<FoldScores> = held.iter().map(FoldScores::of).collect();
    let mean_of = |w: &[Vec<u32>]| -> (f64, f64) {
        let s: Vec<(f64, f64)> = folds.iter().zip(w).map(|(f, w)| f.scores(w)).collect();
        let acc = s.iter().map(|x| x.0).sum::<f64>() / s.len() as f64;
        let au: Vec<f64> = s.iter().map(|x| x.1).filter(|x| x.is_finite()).collect();
        (acc, au.iter().sum::<f64>() / au.len() as f64)
    };
    let ones: Vec<Vec<u32>> = held.iter().map(|h| vec![1; h.y.len()]).collect();
    let (va, vu) = mean_of(&ones);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w: Vec<Vec<u32>> = ones.clone();
    let (mut sa, mut su) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    for _ in 0..resamples {
        for wf in w.iter_mut() {
            let n = wf.len();
            wf.iter_mut().for_each(|c| *c = 0);
            for _ in 0..n {
                wf[rng.random_range(0..n)] += 1;
            }
        }
        let (a, u) = mean_of(&w);
        sa.push(a);
        if u.is_finite() {
            su.push(u);
        }
    }
    let n = held.iter().map(|h| h.y.len()).sum();
    let est = |value: f64, mut v: Vec<f64>| {
        let (lo, hi) = percentile_95(&mut v);
        Est { value, lo, hi, n }
    };
    (est(va, sa), est(vu, su))
}

/// Balanced accuracy of held-out predictions (the mean, over the classes present, of the share
/// of that class's rows predicted as it; 1 / classes for a probe that predicts one class for
/// everything, whatever the class balance) with its bootstrap interval over the pooled rows,
/// and the share of rows given the most-predicted class (1: one class for every row).
pub fn balanced_est(held: &[HeldOut], resamples: usize, seed: u64) -> (Est, f64) {
    let k = held.first().map_or(0, |h| h.proba.ncols());
    let mut y = Vec::new();
    let mut pred = Vec::new();
    for h in held {
        for (r, &c) in h.proba.rows().into_iter().zip(&h.y) {
            let p = (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b });
            y.push(c);
            pred.push(p);
        }
    }
    balanced_of(&y, &pred, k, resamples, seed)
}

/// [`balanced_est`] of class indices `y` and predictions `pred` over `k` classes.
pub fn balanced_of(
    y: &[usize],
    pred: &[usize],
    k: usize,
    resamples: usize,
    seed: u64,
) -> (Est, f64) {
    let n = y.len();
    let bal = |w: &[u32]| -> f64 {
        let mut hit = vec![0u64; k];
        let mut tot = vec![0u64; k];
        for i in 0..n {
            tot[y[i]] += w[i] as u64;
            if pred[i] == y[i] {
                hit[y[i]] += w[i] as u64;
            }
        }
        let present: Vec<f64> = (0..k)
            .filter(|&c| tot[c] > 0)
            .map(|c| hit[c] as f64 / tot[c] as f64)
            .collect();
        present.iter().sum::<f64>() / present.len().max(1) as f64
    };
    let value = bal(&vec![1; n]);
    let (lo, hi) = crate::stats::bootstrap(n, resamples, seed, bal);
    let mut counts = vec![0usize; k.max(1)];
    for &p in pred {
        counts[p] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0) as f64 / n.max(1) as f64;
    (Est { value, lo, hi, n }, top)
}

/// Settings of [`probe_layer`].
#[derive(Clone, Debug)]
pub struct LayerOptions {
    /// Inverse L2 regularisation (scikit-learn's C).
    pub c: f64,
    /// Random unit directions for the null baseline (0: skip).
    pub n_random: usize,
    /// Seed of the random directions and of the control labels.
    pub seed: u64,
    /// Token identity per row for the control task (None: no control task).
    pub control_keys: Option<Vec<u32>>,
}

/// Everything measured for one layer's activations.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerScores {
    /// k-fold held-out logistic (and mass-mean) scores.
    pub cv: CvScores,
    /// The same probe on Hewitt & Liang control labels.
    pub control: Option<Scores>,
    /// Task accuracy − control accuracy.
    pub selectivity: Option<f64>,
    /// Best sign-free AUROC over the random directions (None when `n_random` is 0).
    pub random_best_auroc: Option<f64>,
    /// Sign-free AUROC of the top principal component.
    pub top_pc_auroc: f64,
    /// The logistic probe's held-out predictions per fold (for intervals).
    #[serde(skip)]
    pub held: Vec<HeldOut>,
    /// The control task's, likewise (empty without a control task).
    #[serde(skip)]
    pub control_held: Vec<HeldOut>,
}

/// Probe one layer: `x` `[n, d]`, labels `enc`, fold of each row.
pub fn probe_layer(
    x: ArrayView2<f32>,
    enc: &Encoded,
    fold: &[usize],
    opt: &LayerOptions,
) -> Result<LayerScores> {
    let (cv, held) = cross_validate_held_out(x, enc, x, &enc.idx, fold, opt.c)?;
    let mut control_held = Vec::new();
    let control = match &opt.control_keys {
        Some(keys) => {
            let ctl = control_labels(keys, enc, opt.seed);
            let mut present = ctl.clone();
            present.sort_unstable();
            present.dedup();
            // A control function may give every key the same class (few keys): no task to fit.
            if present.len() < 2 {
                None
            } else {
                let cenc = Encoded {
                    classes: enc.classes.clone(),
                    idx: ctl.clone(),
                };
                let (cs, ch) = cross_validate_held_out(x, &cenc, x, &ctl, fold, opt.c)?;
                control_held = ch;
                Some(cs.logistic)
            }
        }
        None => None,
    };
    let selectivity = control.map(|c| cv.logistic.accuracy - c.accuracy);
    let random_best_auroc =
        (opt.n_random > 0).then(|| random_direction_auroc(x, enc, opt.n_random, opt.seed));
    Ok(LayerScores {
        cv,
        control,
        selectivity,
        random_best_auroc,
        top_pc_auroc: top_pc_auroc(x, enc),
        held,
        control_held,
    })
}

/// Hewitt & Liang control labels: every distinct `key` (a token identity) gets a class drawn once
/// from the empirical class distribution of `y` with `seed`, and each row takes its key's class.
/// A probe that scores well on these can memorise token identity; selectivity = task − control.
pub fn control_labels(keys: &[u32], enc: &Encoded, seed: u64) -> Vec<usize> {
    let mut distinct = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let assigned: Vec<usize> = distinct
        .iter()
        .map(|_| enc.idx[rng.random_range(0..enc.idx.len())])
        .collect();
    keys.iter()
        .map(|k| assigned[distinct.binary_search(k).unwrap_or(0)])
        .collect()
}

/// Null baseline: the best [`direction_auroc`] over `n_dirs` random unit directions (Gaussian,
/// normalised, from `seed`) projected on all rows of `x` `[n, d]`.
pub fn random_direction_auroc(x: ArrayView2<f32>, enc: &Encoded, n_dirs: usize, seed: u64) -> f64 {
    let d = x.ncols();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut dirs = Array2::<f64>::zeros((d, n_dirs));
    for mut col in dirs.columns_mut() {
        col.mapv_inplace(|_| rng.sample::<f64, _>(rand_distr::StandardNormal));
        let norm = col.dot(&col).sqrt().max(f64::MIN_POSITIVE);
        col /= norm;
    }
    let proj = x.mapv(f64::from).dot(&dirs); // [n, n_dirs]
    let k = enc.classes.len();
    (0..n_dirs)
        .into_par_iter()
        .map(|j| direction_auroc(proj.column(j), &enc.idx, k))
        .reduce(|| 0.0, f64::max)
}

/// The top principal component `[d]` (unit norm) of the centred rows of `x`, by power iteration
/// on the covariance (stops at a change below 1e-12 or 10 000 steps).
pub fn top_pc(x: ArrayView2<f32>) -> Array1<f64> {
    let xf = x.mapv(f64::from);
    let mean = xf
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let xc = &xf - &mean;
    let cov = xc.t().dot(&xc);
    let d = cov.nrows();
    // A fixed, non-symmetric start so no eigenvector is missed by construction.
    let mut v: Array1<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.618).fract()).collect();
    v /= v.dot(&v).sqrt();
    for _ in 0..10_000 {
        let mut w = cov.dot(&v);
        let nw = w.dot(&w).sqrt();
        if nw == 0.0 {
            break;
        }
        w /= nw;
        let change = max_abs((&w - &v).view());
        v = w;
        if change < 1e-12 {
            break;
        }
    }
    v
}

/// Null baseline: [`direction_auroc`] of the top principal component.
pub fn top_pc_auroc(x: ArrayView2<f32>, enc: &Encoded) -> f64 {
    let pc = top_pc(x);
    let proj = x.mapv(f64::from).dot(&pc);
    direction_auroc(proj.view(), &enc.idx, enc.classes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn balanced_accuracy_sees_through_a_one_class_predictor() {
        // 232 of 500 rows are class 1; predicting 1 everywhere is 46.4 % accurate but
        // balanced 0.5, with every row in one class.
        let y: Vec<usize> = (0..500).map(|i| (i < 232) as usize).collect();
        let all_one = vec![1usize; 500];
        let (b, top) = balanced_of(&y, &all_one, 2, 200, 0);
        assert_eq!((b.value, b.lo, b.hi, top), (0.5, 0.5, 0.5, 1.0));
        // Right on every class-1 row and half the class-0 rows: (1 + 0.5) / 2.
        let half: Vec<usize> = (0..500).map(|i| (i < 232 || i % 2 == 0) as usize).collect();
        let (b, top) = balanced_of(&y, &half, 2, 200, 0);
        assert!((b.value - 0.75).abs() < 1e-2, "{b:?}");
        assert!(b.lo < b.value && b.value < b.hi && top < 1.0);
    }

    #[test]
    fn auroc_ties_average_ranks() {
        // Positives 0.5, 0.8; negatives 0.5, 0.1: pairs (0.5 vs 0.5) tie → 0.5,
        // others won: (1 + 0.5 + 1 + 1) / 4 = 0.875.
        let s = array![0.5, 0.8, 0.5, 0.1];
        let p = [true, true, false, false];
        assert_eq!(auroc(s.view(), &p), Some(0.875));
        assert_eq!(auroc(s.view(), &[true; 4]), None);
        let flat = array![1.0, 1.0, 1.0];
        assert_eq!(auroc(flat.view(), &[true, false, true]), Some(0.5));
    }

    #[test]
    fn weighted_auroc_equals_auroc_of_the_repeated_rows() {
        let s = [0.5f64, 0.8, 0.5, 0.1, 0.3, 0.8];
        let p = [true, true, false, false, true, false];
        let w = [2u32, 0, 1, 3, 1, 2];
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
        let (mut rs, mut rp) = (Vec::new(), Vec::new());
        for i in 0..6 {
            for _ in 0..w[i] {
                rs.push(s[i]);
                rp.push(p[i]);
            }
        }
        let want = auroc(Array1::from(rs).view(), &rp).unwrap();
        let got = weighted_auroc(&order, &s, &p, &w).unwrap();
        assert!((want - got).abs() < 1e-12, "{want} vs {got}");
        assert_eq!(weighted_auroc(&order, &s, &p, &[0, 0, 1, 1, 0, 1]), None);
    }

    #[test]
    fn folds_are_stratified() {
        let y: Vec<i64> = (0..50).map(|i| (i % 5 == 0) as i64).collect();
        let enc = encode_labels(&y, "y").unwrap();
        let f = stratified_folds(&enc, 5, 1).unwrap();
        for k in 0..5 {
            let pos = (0..50).filter(|&i| f[i] == k && y[i] == 1).count();
            assert_eq!(pos, 2, "fold {k}");
        }
        assert!(stratified_folds(&enc, 11, 1).is_err());
    }
}
