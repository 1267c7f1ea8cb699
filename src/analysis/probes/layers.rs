//! Probing one activation set layer by layer (k-fold logistic and mass-mean scores, control
//! task, null baselines) and scoring a probe fitted on one set on another (transfer). Shared by
//! probe specs and the report; the maths is `math`, the activations come from `sets`.
//! Must not load checkpoints or write files.

use super::math::{self, Encoded, HeldOut, LayerOptions, Scores};
use super::sets::ActivationSet;
use crate::stats::Est;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Metrics of one layer of one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerResult {
    /// Layer index.
    pub layer: usize,
    /// k-fold held-out logistic probe.
    pub logistic: Scores,
    /// k-fold held-out difference-of-means probe (binary labels, when asked).
    pub mass_mean: Option<Scores>,
    /// The same logistic probe on control labels.
    pub control: Option<Scores>,
    /// Logistic accuracy − control accuracy.
    pub selectivity: Option<f64>,
    /// Best sign-free AUROC over the random directions.
    pub random_best_auroc: Option<f64>,
    /// Sign-free AUROC of the top principal component.
    pub top_pc_auroc: f64,
    /// 95 % bootstrap intervals of the logistic and control scores (report runs; probe specs
    /// store none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<LayerCi>,
}

/// The intervals of one layer's probe scores (fold-mean values, resampling each fold's
/// held-out rows; see `math::held_out_est`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerCi {
    /// Logistic accuracy.
    pub accuracy: Est,
    /// Logistic AUROC.
    pub auroc: Est,
    /// Control-task accuracy.
    pub control_accuracy: Option<Est>,
}

/// Scores with intervals.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScoresEst {
    /// Accuracy.
    pub accuracy: Est,
    /// AUROC.
    pub auroc: Est,
    /// Balanced accuracy (mean per-class recall; 1 / classes for a one-class predictor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<Est>,
    /// Share of rows given the most-predicted class (1: one class for everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub majority_share: Option<f64>,
}

impl ScoresEst {
    /// Whether the probe predicted one class for every row.
    pub fn one_class(&self) -> bool {
        self.majority_share == Some(1.0)
    }
}

/// Intervals of held-out predictions as [`ScoresEst`].
pub fn scores_est(held: &[HeldOut], resamples: usize, seed: u64) -> ScoresEst {
    let (accuracy, auroc) = math::held_out_est(held, resamples, seed);
    let (balanced, top) = math::balanced_est(held, resamples, seed);
    ScoresEst {
        accuracy,
        auroc,
        balanced_accuracy: Some(balanced),
        majority_share: Some(top),
    }
}

/// A set's labels as classes, and the stratified fold of each row.
#[derive(Clone, Debug)]
pub struct Folded {
    /// The labels as class indices.
    pub enc: Encoded,
    /// Fold of each row.
    pub fold: Vec<usize>,
}

/// Encode `set`'s labels and draw stratified folds; `what` names the label and checkpoint in
/// errors (one class only, too few rows for the folds).
pub fn fold(set: &ActivationSet, folds: usize, seed: u64, what: &str) -> Result<Folded> {
    let enc = math::encode_labels(&set.labels, what)?;
    let fold = math::stratified_folds(&enc, folds, seed)
        .map_err(|e| Error::input(format!("{what}: {e}")))?;
    Ok(Folded { enc, fold })
}

/// Probe every layer of `set`; `mass_mean` keeps the difference-of-means scores; `intervals`
/// (resamples, seed) adds bootstrap intervals.
pub fn layer_results(
    set: &ActivationSet,
    f: &Folded,
    opt: &LayerOptions,
    mass_mean: bool,
    intervals: Option<(usize, u64)>,
) -> Result<Vec<LayerResult>> {
    layer_results_held(set, f, opt, mass_mean, intervals).map(|(r, _)| r)
}

/// [`layer_results`], also returning each layer's held-out folds (with their fitted probes, for
/// [`transfer_held`]).
pub fn layer_results_held(
    set: &ActivationSet,
    f: &Folded,
    opt: &LayerOptions,
    mass_mean: bool,
    intervals: Option<(usize, u64)>,
) -> Result<(Vec<LayerResult>, Vec<Vec<HeldOut>>)> {
    let per: Vec<(LayerResult, Vec<HeldOut>)> = set
        .layers
        .iter()
        .zip(&set.acts)
        .map(|(l, x)| {
            let r = math::probe_layer(x.view(), &f.enc, &f.fold, opt)?;
            Ok((
                LayerResult {
                    layer: *l,
                    logistic: r.cv.logistic,
                    mass_mean: r.cv.mass_mean.filter(|_| mass_mean),
                    control: r.control,
                    selectivity: r.selectivity,
                    random_best_auroc: r.random_best_auroc,
                    top_pc_auroc: r.top_pc_auroc,
                    ci: intervals.map(|(b, seed)| {
                        let s = scores_est(&r.held, b, seed);
                        LayerCi {
                            accuracy: s.accuracy,
                            auroc: s.auroc,
                            control_accuracy: (!r.control_held.is_empty())
                                .then(|| scores_est(&r.control_held, b, seed).accuracy),
                        }
                    }),
                },
                r.held,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(per.into_iter().unzip())
}

/// Transfer from probes already fitted on `from`'s folds (`held`, per layer, from
/// [`layer_results_held`]): the same numbers as [`transfer`], without refitting.
pub fn transfer_held(
    held: &[Vec<HeldOut>],
    f: &Folded,
    to: &ActivationSet,
    intervals: Option<(usize, u64)>,
) -> Option<(Vec<Scores>, Vec<ScoresEst>)> {
    let y: Vec<usize> = to
        .labels
        .iter()
        .map(|v| f.enc.classes.binary_search(v).ok())
        .collect::<Option<_>>()?;
    let mut scores = Vec::new();
    let mut ci = Vec::new();
    for (h, xb) in held.iter().zip(&to.acts) {
        let (s, out) = math::score_held_out(h, xb.view(), &y, &f.fold);
        scores.push(s);
        if let Some((b, seed)) = intervals {
            ci.push(scores_est(&out, b, seed));
        }
    }
    Some((scores, ci))
}

/// Rows per class of `f`, in class order.
pub fn class_counts(f: &Folded) -> Vec<usize> {
    (0..f.enc.classes.len())
        .map(|k| f.enc.idx.iter().filter(|&&i| i == k).count())
        .collect()
}

/// A probe fitted (k-fold) on `from`'s activations, scored on `to`'s at the same rows with
/// `to`'s labels, per layer (with intervals when `intervals` gives resamples and a seed). None
/// when `to` has a label value `from` never saw.
pub fn transfer(
    from: &ActivationSet,
    f: &Folded,
    to: &ActivationSet,
    c: f64,
    intervals: Option<(usize, u64)>,
) -> Result<Option<(Vec<Scores>, Vec<ScoresEst>)>> {
    let y: Option<Vec<usize>> = to
        .labels
        .iter()
        .map(|v| f.enc.classes.binary_search(v).ok())
        .collect();
    let Some(y) = y else { return Ok(None) };
    let mut scores = Vec::new();
    let mut ci = Vec::new();
    for (xa, xb) in from.acts.iter().zip(&to.acts) {
        let (s, held) =
            math::cross_validate_held_out(xa.view(), &f.enc, xb.view(), &y, &f.fold, c)?;
        scores.push(s.logistic);
        if let Some((b, seed)) = intervals {
            ci.push(scores_est(&held, b, seed));
        }
    }
    Ok(Some((scores, ci)))
}
