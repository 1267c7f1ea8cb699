//! The one place where an analysis result becomes a figure: each function takes a result (a
//! sweep, probe layers, a lens read-out, a weight diff, cross-checkpoint patching, behaviour
//! rows) and returns the plot data the CLI and the report both draw. Titles and axis labels are
//! made here; captions around a figure are the page's. Must not compute an analysis or run a model.
//!
//! Colouring of patching maps (both directions): the share of the clean–corrupt gap a patch
//! moves, restored when denoising and removed when noising ([`Sweep::share`]), so red means
//! "this cell matters" in both; when the gap is below `min_gap` the map shows the raw change of
//! the metric instead, since shares of a tiny gap are noise.

use crate::analysis::diff::WeightDiff;
use crate::analysis::lens::LensResult;
use crate::analysis::patching::{Cross, Direction, Pair, Sweep};
use crate::analysis::probes::{LayerResult, TransferResult};
use crate::analysis::site::Site;
use crate::lab::eval::Row;
use crate::lab::world::{Split, Stats};
use crate::view::plot::{
    AnyFigure, Bars, BehaviourBars, HeadGrid, LensCurves, Line, PatchHeatmap, ProbeCurves,
};

/// What a patching map's colour shows (see the module docs).
pub fn sweep_scale(sw: &Sweep, min_gap: f64) -> &'static str {
    match (sw.gap().abs() >= min_gap, sw.direction) {
        (true, Direction::Denoise) => "share restored",
        (true, Direction::Noise) => "share removed",
        (false, _) => "metric change",
    }
}

/// The colour value of one patched metric (see [`sweep_scale`]).
pub fn sweep_value(sw: &Sweep, raw: f32, min_gap: f64) -> f64 {
    sw.share(raw, min_gap)
        .unwrap_or((raw - sw.target_metric()) as f64)
}

/// Position labels of a patching setup over the whole prompt: the token where every pair has
/// the same one, `clean/corrupt` where pair 0's prompts differ, and `slot(p)` where the token
/// varies between pairs.
pub fn position_labels(
    pairs: &[Pair],
    label: impl Fn(u32) -> String,
    slot: impl Fn(usize) -> String,
) -> Vec<String> {
    let len = pairs.first().map_or(0, |p| p.clean.len());
    (0..len)
        .map(|p| {
            let (c0, k0) = (pairs[0].clean[p], pairs[0].corrupt[p]);
            if c0 != k0 {
                format!("{}/{}", label(c0), label(k0))
            } else if pairs.iter().all(|x| x.clean[p] == c0 && x.corrupt[p] == c0) {
                label(c0)
            } else {
                slot(p)
            }
        })
        .collect()
}

/// The label of the first position where pair 0's prompts differ (the contrasted slot), or
/// `none` when they do not differ.
pub fn contrast_label(pairs: &[Pair], tokens: &[String]) -> String {
    pairs
        .first()
        .and_then(|p| p.clean.iter().zip(&p.corrupt).position(|(a, b)| a != b))
        .and_then(|i| tokens.get(i).cloned())
        .unwrap_or_else(|| "none".into())
}

/// The map of one site of a sweep: a layer × position heatmap, or for `head_out` one panel
/// per layer of position × head. `tokens` label the positions; None when the site was not
/// swept.
pub fn patch_map(
    checkpoint: &str,
    contrast: &str,
    tokens: &[String],
    sw: &Sweep,
    site: Site,
    min_gap: f64,
) -> Option<AnyFigure> {
    let grid = sw.grid(site)?;
    let metric = sweep_scale(sw, min_gap).to_string();
    let direction = sw.direction.gerund().to_string();
    let t = grid.shape[1];
    let value = |v: &f32| sweep_value(sw, *v, min_gap);
    Some(if site == Site::HeadOut {
        let w = grid.shape[2];
        AnyFigure::Head(HeadGrid {
            checkpoint: checkpoint.to_string(),
            contrast: contrast.to_string(),
            metric,
            direction,
            tokens: tokens.to_vec(),
            values: grid
                .raw
                .chunks(t * w)
                .map(|l| l.chunks(w).map(|p| p.iter().map(value).collect()).collect())
                .collect(),
        })
    } else {
        AnyFigure::Heat(PatchHeatmap {
            checkpoint: checkpoint.to_string(),
            contrast: contrast.to_string(),
            hook: site.to_string(),
            metric,
            direction,
            layers: (0..grid.shape[0]).map(|l| l.to_string()).collect(),
            tokens: tokens.to_vec(),
            values: grid
                .raw
                .chunks(t)
                .map(|r| r.iter().map(value).collect())
                .collect(),
        })
    })
}

/// One checkpoint's probe layers, for [`probe_curves`]. Empty layers (no probe fitted) keep
/// the checkpoint's colour but draw nothing.
pub struct ProbeLines<'a> {
    /// Checkpoint name (legend).
    pub name: &'a str,
    /// Per layer.
    pub layers: &'a [LayerResult],
}

/// Probe accuracy and AUROC per layer: each checkpoint solid in its colour, with its control
/// task (accuracy) and best random direction (AUROC) dashed in the same colour, and the
/// transfers between checkpoints dashed in colours of their own. None when there is nothing to
/// draw or a value is not finite.
pub fn probe_curves(
    title: &str,
    checkpoints: &[ProbeLines],
    transfers: &[TransferResult],
) -> Option<ProbeCurves> {
    let (mut accuracy, mut auroc, mut layers) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in checkpoints.iter().enumerate() {
        let ls = c.layers;
        if ls.is_empty() {
            continue;
        }
        layers = ls.iter().map(|l| l.layer.to_string()).collect();
        let line = |label: String, values: Vec<f64>, dashed| Line {
            label,
            values,
            dashed,
            color: k,
        };
        accuracy.push(line(
            c.name.to_string(),
            ls.iter().map(|l| l.logistic.accuracy).collect(),
            false,
        ));
        if ls.iter().all(|l| l.control.is_some()) {
            let v = ls
                .iter()
                .map(|l| l.control.map_or(0.0, |s| s.accuracy))
                .collect();
            accuracy.push(line(format!("{} control task", c.name), v, true));
        }
        auroc.push(line(
            c.name.to_string(),
            ls.iter().map(|l| l.logistic.auroc).collect(),
            false,
        ));
        if ls.iter().all(|l| l.random_best_auroc.is_some()) {
            let v = ls
                .iter()
                .map(|l| l.random_best_auroc.unwrap_or(0.0))
                .collect();
            auroc.push(line(format!("{} best random direction", c.name), v, true));
        }
    }
    for (k, t) in transfers.iter().enumerate() {
        accuracy.push(Line {
            label: format!("fit on {}, scored on {}", t.from, t.to),
            values: t.layers.iter().map(|s| s.accuracy).collect(),
            dashed: true,
            color: checkpoints.len() + k,
        });
    }
    let finite = |ls: &[Line]| ls.iter().all(|l| l.values.iter().all(|v| v.is_finite()));
    (!accuracy.is_empty() && finite(&accuracy) && finite(&auroc)).then(|| ProbeCurves {
        title: title.to_string(),
        layers,
        accuracy,
        auroc,
    })
}

/// A named sum of lens tokens: `(label, indices into LensResult::tokens)`.
pub type LensSeries = (String, Vec<usize>);

/// Each token of `r` as its own series, labelled by `labels` (its id where a label is missing).
pub fn lens_series_per_token(r: &LensResult, labels: &[String]) -> Vec<LensSeries> {
    r.tokens
        .iter()
        .enumerate()
        .map(|(k, id)| {
            let l = labels.get(k).cloned().unwrap_or_else(|| id.to_string());
            (l, vec![k])
        })
        .collect()
}

/// The mean probability of a series (a sum of lens tokens, by index) at each point.
pub fn lens_values(r: &LensResult, toks: &[usize]) -> Vec<f64> {
    r.probs
        .iter()
        .map(|p| match toks {
            [one] => p[*one],
            many => many.iter().map(|&i| p[i]).sum(),
        })
        .collect()
}

/// Logit lens: the mean probability of each series per layer. One checkpoint: a solid line per
/// series in colours of their own. Several: a colour per checkpoint, the first series solid
/// and the others dashed, labelled `checkpoint: series`.
pub fn lens_curves(
    title: &str,
    results: &[(&str, &LensResult)],
    series: &[LensSeries],
) -> LensCurves {
    let several = results.len() > 1;
    let mut lines = Vec::new();
    for (k, (name, r)) in results.iter().enumerate() {
        for (j, (label, toks)) in series.iter().enumerate() {
            let values = lens_values(r, toks);
            lines.push(Line {
                label: if several {
                    format!("{name}: {label}")
                } else {
                    label.clone()
                },
                values,
                dashed: several && j > 0,
                color: if several { k } else { j },
            });
        }
    }
    LensCurves {
        title: title.to_string(),
        layers: results
            .first()
            .map(|(_, r)| r.points.clone())
            .unwrap_or_default(),
        lines,
    }
}

/// Weight diff as grouped bars: one group per layer (`embed`, `0`, ..., `final`), one colour
/// per component, the relative Frobenius norm.
pub fn weight_diff_bars(d: &WeightDiff) -> Bars {
    let mut groups: Vec<String> = Vec::new();
    let mut series: Vec<String> = Vec::new();
    for c in &d.components {
        if !groups.contains(&c.group) {
            groups.push(c.group.clone());
        }
        if !series.contains(&c.component) {
            series.push(c.component.clone());
        }
    }
    let mut values = vec![vec![None; series.len()]; groups.len()];
    for c in &d.components {
        let g = groups.iter().position(|x| *x == c.group);
        let s = series.iter().position(|x| *x == c.component);
        if let (Some(g), Some(s)) = (g, s) {
            values[g][s] = c.relative;
        }
    }
    Bars {
        title: format!("weight diff: {} vs {}", d.b, d.a),
        y_label: "‖B−A‖ / ‖A‖".into(),
        groups,
        series,
        values,
    }
}

/// Cross-checkpoint patching as grouped bars: per layer, the share of the A–B gap each site
/// carries. None when no share is defined.
pub fn cross_bars(x: &Cross, a: &str, b: &str) -> Option<Bars> {
    let values: Vec<Vec<Option<f64>>> = (0..x.layers.len())
        .map(|i| {
            x.results
                .iter()
                .map(|(_, v)| x.normalise(v[i]).map(f64::from))
                .collect()
        })
        .collect();
    values.iter().flatten().any(Option::is_some).then(|| Bars {
        title: format!("{a} into {b}: share of the gap"),
        y_label: "(patched − B) / (A − B)".into(),
        groups: x.layers.iter().map(|l| format!("layer {l}")).collect(),
        series: x.results.iter().map(|(c, _)| c.to_string()).collect(),
        values,
    })
}

/// One statistic of a behaviour row.
pub type StatOf = fn(&Stats) -> f64;

/// A behaviour panel: its caption, the split it reads and the statistic.
pub type BehaviourMetric = (String, Split, StatOf);

/// Behaviour rows as one small panel per metric, one bar per row (`(legend, row)`). None when
/// no value is finite.
pub fn behaviour_bars(
    title: &str,
    rows: &[(String, &Row)],
    metrics: &[BehaviourMetric],
) -> Option<BehaviourBars> {
    let values: Vec<Vec<Option<f64>>> = metrics
        .iter()
        .map(|(_, sp, f)| {
            rows.iter()
                .map(|(_, r)| Some(f(&r.get(*sp))).filter(|v| v.is_finite()))
                .collect()
        })
        .collect();
    values
        .iter()
        .flatten()
        .any(Option::is_some)
        .then(|| BehaviourBars {
            title: title.to_string(),
            metrics: metrics.iter().map(|m| m.0.clone()).collect(),
            checkpoints: rows.iter().map(|(l, _)| l.clone()).collect(),
            values,
        })
}
