//! `feedlens check`: re-run a probe spec and compare the fresh result with the stored one
//! (checkpoint hashes, shapes and labels exactly, metrics within the spec's tolerance).
//! Must not write files.

use super::math::Scores;
use super::spec::{result_paths, run_spec, SpecResult};
use crate::io::fsio;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The outcome of checking one spec against its stored result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckOutcome {
    /// The spec file.
    pub spec: PathBuf,
    /// No drift, no stale hash.
    pub pass: bool,
    /// One line per problem found.
    pub problems: Vec<String>,
}

fn near(problems: &mut Vec<String>, what: String, stored: f64, now: f64, tol: f64) {
    let same = (stored.is_nan() && now.is_nan()) || (stored - now).abs() <= tol;
    if !same {
        problems.push(format!(
            "{what}: stored {stored:.4}, now {now:.4} (tolerance {tol})"
        ));
    }
}

fn near_scores(p: &mut Vec<String>, what: String, a: Option<Scores>, b: Option<Scores>, tol: f64) {
    match (a, b) {
        (Some(a), Some(b)) => {
            near(p, format!("{what} accuracy"), a.accuracy, b.accuracy, tol);
            near(p, format!("{what} AUROC"), a.auroc, b.auroc, tol);
        }
        (None, None) => {}
        _ => p.push(format!("{what}: present in only one of stored / now")),
    }
}

/// Compare a fresh result with a stored one: checkpoint hashes first (a changed checkpoint is
/// reported as stale with both hashes, its metrics are not compared), then shapes and labels
/// exactly, then metrics within the spec's tolerance.
pub fn compare(stored: &SpecResult, now: &SpecResult) -> Vec<String> {
    let tol = now.spec.tolerance;
    let mut p = Vec::new();
    if stored.spec != now.spec {
        p.push("the spec changed since the result was stored".into());
    }
    if stored.layers != now.layers || stored.checkpoints.len() != now.checkpoints.len() {
        p.push(format!(
            "shape: stored {} checkpoints × layers {:?}, now {} × {:?}",
            stored.checkpoints.len(),
            stored.layers,
            now.checkpoints.len(),
            now.layers
        ));
        return p;
    }
    let mut stale = Vec::new();
    for (s, n) in stored.checkpoints.iter().zip(&now.checkpoints) {
        if s.sha256 != n.sha256 {
            p.push(format!(
                "stale: checkpoint '{}' was probed at sha256 {} but now has sha256 {}",
                n.path, s.sha256, n.sha256
            ));
            stale.push(n.name.clone());
            continue;
        }
        if s.labels_sha256 != n.labels_sha256 || s.class_counts != n.class_counts {
            p.push(format!(
                "{}: labels differ (class counts stored {:?}, now {:?})",
                n.name, s.class_counts, n.class_counts
            ));
        }
        for (a, b) in s.layers.iter().zip(&n.layers) {
            let w = |m: &str| format!("{} layer {} {m}", n.name, b.layer);
            near_scores(
                &mut p,
                w("logistic"),
                Some(a.logistic),
                Some(b.logistic),
                tol,
            );
            near_scores(&mut p, w("mass-mean"), a.mass_mean, b.mass_mean, tol);
            near_scores(&mut p, w("control"), a.control, b.control, tol);
            if let (Some(x), Some(y)) = (a.random_best_auroc, b.random_best_auroc) {
                near(&mut p, w("random-direction AUROC"), x, y, tol);
            }
            near(
                &mut p,
                w("top-PC AUROC"),
                a.top_pc_auroc,
                b.top_pc_auroc,
                tol,
            );
        }
        if s.causal.len() != n.causal.len() {
            p.push(format!(
                "{}: causal check present in only one of stored / now",
                n.name
            ));
        }
        for (a, b) in s.causal.iter().zip(&n.causal) {
            let w = |m: &str| format!("{} layer {} causal {m}", n.name, b.layer);
            for (m, x, y) in [
                ("base", a.base, b.base),
                ("+α", a.plus, b.plus),
                ("−α", a.minus, b.minus),
                ("ablated", a.ablated, b.ablated),
            ] {
                near(&mut p, w(m), x, y, tol);
            }
        }
    }
    if stored.transfer.len() != now.transfer.len() {
        p.push("shape: transfer pairs differ".into());
    } else {
        for (s, n) in stored.transfer.iter().zip(&now.transfer) {
            if stale.contains(&n.from) || stale.contains(&n.to) {
                continue;
            }
            for ((a, b), l) in s.layers.iter().zip(&n.layers).zip(&now.layers) {
                let w = format!("transfer {} → {} layer {l}", n.from, n.to);
                near_scores(&mut p, w, Some(*a), Some(*b), tol);
            }
        }
    }
    p
}

/// Re-run a spec and compare with its stored result.
pub fn check_spec(spec: &Path) -> Result<CheckOutcome> {
    let (json, _) = result_paths(spec);
    let stored: SpecResult = serde_json::from_slice(&fsio::read(&json)?)
        .map_err(|e| Error::file(&json, format!("invalid stored result: {e}")))?;
    let now = run_spec(spec)?;
    let problems = compare(&stored, &now.result);
    Ok(CheckOutcome {
        spec: spec.to_path_buf(),
        pass: problems.is_empty(),
        problems,
    })
}

/// Every `*.toml` spec in `dir`, sorted.
pub fn specs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

/// Check every spec in `dir`; a spec that fails to run is a failed outcome with its error.
pub fn check_dir(dir: &Path) -> Result<Vec<CheckOutcome>> {
    Ok(specs_in(dir)?
        .into_iter()
        .map(|s| {
            check_spec(&s).unwrap_or_else(|e| CheckOutcome {
                spec: s.clone(),
                pass: false,
                problems: vec![e.to_string()],
            })
        })
        .collect())
}
