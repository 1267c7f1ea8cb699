//! Attribution patching: the first-order estimate of every cell of an exact sweep from one
//! source forward, one target forward and one backward, and its agreement with the exact sweep.
//! Must not re-implement the forward pass; it differentiates `Model::forward`.

use super::sweep::baseline;
use super::{last_logits, mean, metric_values, run_metric, Method, Setup, Sweep};
use crate::analysis::site::Site;
use crate::model::hooks::{Hook, Intervention};
use crate::model::{Input, Logits, Model, Run};
use crate::{Error, Result};
use candle_core::{Var, D};
use serde::Serialize;

/// Attribution patching: patched metric ≈ target metric + (source − target)·∂metric/∂activation,
/// summed over the cell's activation (d_model, or d_head of one head), the gradient taken in the
/// target run through zero [`Var`]s added at every patched hook. Same shapes as [`super::sweep`].
pub fn attribution(model: &Model, setup: &Setup, comps: &[Site]) -> Result<Sweep> {
    let cfg = model.config();
    let (nl, nh) = (cfg.n_layer, cfg.n_head);
    let t = setup.pos + 1;
    let metrics = setup.metrics();
    let (src_ids, tgt_ids) = setup.ids(model, t)?;
    let hooks: Vec<Hook> = (0..nl)
        .flat_map(|l| comps.iter().map(move |c| c.hook(l)))
        .collect();
    let (src, src_m) = run_metric(model, &src_ids, hooks.clone(), &metrics, setup.pos)?;
    // Zero vars shaped like each hook's value; adding them changes nothing but makes the
    // activation a leaf of the graph whose gradient backward() reports.
    let vars: Vec<Var> = hooks
        .iter()
        .map(|h| Ok(Var::from_tensor(&src.get(*h)?.zeros_like()?)?))
        .collect::<Result<_>>()?;
    let run = Run {
        cache: hooks.clone(),
        interventions: hooks
            .iter()
            .zip(&vars)
            .map(|(h, v)| Intervention::add(*h, v.as_tensor().clone()))
            .collect(),
        logits: Logits::At(vec![setup.pos]),
        grad: true,
        ..Run::default()
    };
    let out = model.forward(&Input::Ids(tgt_ids.clone()), &run)?;
    let m = metric_values(&last_logits(out.logits)?, &metrics)?; // [n]
                                                                 // Baselines from an ordinary (fused-kernel) run, so they equal the exact sweep's.
    let (_, tgt_m) = run_metric(model, &tgt_ids, vec![], &metrics, setup.pos)?;
    let grads = m.mean_all()?.backward()?;
    let mut sw = baseline(setup, comps, nl, nh, Method::Attribution, &src_m, &tgt_m);
    let base = mean(&tgt_m);
    for (k, (h, var)) in hooks.iter().zip(&vars).enumerate() {
        let (l, ci) = (k / comps.len(), k % comps.len());
        // The gradient of the mean over pairs already carries the 1/n.
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| Error::input(format!("no gradient reached {h}")))?;
        let diff = (src.get(*h)?.detach() - out.cache.get(*h)?.detach())?;
        let per_pair = (diff * g)?.sum(D::Minus1)?; // [n, t] or [n, t, nh], each ÷ n
        let eff = per_pair.sum(0)?.flatten_all()?.to_vec1::<f32>()?; // [t·width]
        let per_pair = per_pair.flatten_all()?.to_vec1::<f32>()?; // [n·t·width]
        let width = comps[ci].width(nh);
        let g = &mut sw.results[ci].1;
        let n = tgt_m.len();
        let cells = eff.len();
        for (i, e) in eff.iter().enumerate() {
            let cell = g.at(l, i / width, i % width);
            g.raw[cell] = base + e;
            for p in 0..n {
                // The pair's own first-order estimate (its gradient carried 1/n).
                g.per_pair[cell * n + p] = tgt_m[p] + per_pair[p * cells + i] * n as f32;
            }
        }
    }
    Ok(sw)
}

/// How well an estimate (attribution) agrees with the exact sweep for one component.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// The component.
    pub component: Site,
    /// Pearson correlation of the two grids' cells.
    pub pearson: f32,
    /// k of the top-k comparison.
    pub top_k: usize,
    /// Fraction of the exact sweep's k cells of largest |effect| (|patched − target|) that are
    /// also among the estimate's k largest.
    pub top_k_agreement: f32,
}

/// Compare `approx` with `exact` per component present in both; `k` is capped at the cell count.
pub fn compare(exact: &Sweep, approx: &Sweep, k: usize) -> Vec<Agreement> {
    let mut out = Vec::new();
    for (c, ge) in &exact.results {
        let Some(ga) = approx.grid(*c) else { continue };
        let k = k.min(ge.raw.len());
        let top = |v: &[f32], base: f32| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&i, &j| (v[j] - base).abs().total_cmp(&(v[i] - base).abs()));
            idx.truncate(k);
            idx
        };
        let te = top(&ge.raw, exact.target_metric());
        let ta = top(&ga.raw, approx.target_metric());
        let hits = te.iter().filter(|i| ta.contains(i)).count();
        out.push(Agreement {
            component: *c,
            pearson: pearson(&ge.raw, &ga.raw),
            top_k: k,
            top_k_agreement: hits as f32 / k.max(1) as f32,
        });
    }
    out
}

/// Pearson correlation; 0 when either side is constant.
fn pearson(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len()) as f64;
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64 - mx, b as f64 - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        (sxy / (sxx * syy).sqrt()) as f32
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pearson_of_affine_copy_is_one() {
        let x = [1.0, 2.0, 5.0, -1.0];
        let y: Vec<f32> = x.iter().map(|v| 3.0 * v - 2.0).collect();
        assert!((super::pearson(&x, &y) - 1.0).abs() < 1e-6);
        let z: Vec<f32> = x.iter().map(|v| -v).collect();
        assert!((super::pearson(&x, &z) + 1.0).abs() < 1e-6);
    }
}
