//! Probing one activation set layer by layer (k-fold logistic and mass-mean scores, control
//! task, null baselines) and scoring a probe fitted on one set on another (transfer). Shared by
//! probe specs and the report; the maths is `math`, the activations come from `sets`.
//! Must not load checkpoints or write files.

use super::math::{self, Encoded, LayerOptions, Scores};
use super::sets::ActivationSet;
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

/// Probe every layer of `set`; `mass_mean` keeps the difference-of-means scores.
pub fn layer_results(
    set: &ActivationSet,
    f: &Folded,
    opt: &LayerOptions,
    mass_mean: bool,
) -> Result<Vec<LayerResult>> {
    set.layers
        .iter()
        .zip(&set.acts)
        .map(|(l, x)| {
            let r = math::probe_layer(x.view(), &f.enc, &f.fold, opt)?;
            Ok(LayerResult {
                layer: *l,
                logistic: r.cv.logistic,
                mass_mean: r.cv.mass_mean.filter(|_| mass_mean),
                control: r.control,
                selectivity: r.selectivity,
                random_best_auroc: r.random_best_auroc,
                top_pc_auroc: r.top_pc_auroc,
            })
        })
        .collect()
}

/// Rows per class of `f`, in class order.
pub fn class_counts(f: &Folded) -> Vec<usize> {
    (0..f.enc.classes.len())
        .map(|k| f.enc.idx.iter().filter(|&&i| i == k).count())
        .collect()
}

/// A probe fitted (k-fold) on `from`'s activations, scored on `to`'s at the same rows with
/// `to`'s labels, per layer. None when `to` has a label value `from` never saw.
pub fn transfer(
    from: &ActivationSet,
    f: &Folded,
    to: &ActivationSet,
    c: f64,
) -> Result<Option<Vec<Scores>>> {
    let y: Option<Vec<usize>> = to
        .labels
        .iter()
        .map(|v| f.enc.classes.binary_search(v).ok())
        .collect();
    let Some(y) = y else { return Ok(None) };
    from.acts
        .iter()
        .zip(&to.acts)
        .map(|(xa, xb)| {
            math::cross_validate(xa.view(), &f.enc, xb.view(), &y, &f.fold, c).map(|s| s.logistic)
        })
        .collect::<Result<Vec<Scores>>>()
        .map(Some)
}
