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
use crate::analysis::patching::{Direction, Pair, Sweep};
use crate::analysis::probes::{LayerResult, TransferResult};
use crate::analysis::site::Site;
use crate::lab::eval::Row;
use crate::lab::world::{Split, Stats};
use crate::view::plot::{
    AnyFigure, Bars, BehaviourBars, DoseCurves, HeadGrid, LensCurves, Line, PatchHeatmap,
    ProbeCurves,
};
use crate::view::plot::{ErrBars, Span};

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
/// Every map of one kind has one fixed colour scale: ±1 in shares of the gap, or ±`min_gap`
/// logits for a raw map (a gap too small to normalise), so a null effect stays pale instead of
/// being stretched to full colour. Cells marked in `neutral` (the report: whose interval holds
/// 0) are drawn white.
pub fn patch_map(
    checkpoint: &str,
    contrast: &str,
    tokens: &[String],
    sw: &Sweep,
    site: Site,
    min_gap: f64,
    neutral: Option<&[bool]>,
) -> Option<AnyFigure> {
    let grid = sw.grid(site)?;
    let metric = sweep_scale(sw, min_gap).to_string();
    let direction = sw.direction.gerund().to_string();
    let t = grid.shape[1];
    let limit = Some(if sw.gap().abs() < min_gap {
        min_gap
    } else {
        1.0
    });
    let masked: Vec<f32> = grid
        .raw
        .iter()
        .enumerate()
        .map(|(i, &v)| match neutral.and_then(|n| n.get(i)) {
            // The patched run's own metric: share 0 (and raw change 0).
            Some(true) => sw.target_metric(),
            _ => v,
        })
        .collect();
    let value = |v: &f32| sweep_value(sw, *v, min_gap);
    Some(if site == Site::HeadOut {
        let w = grid.shape[2];
        AnyFigure::Head(HeadGrid {
            checkpoint: checkpoint.to_string(),
            contrast: contrast.to_string(),
            metric,
            direction,
            tokens: tokens.to_vec(),
            values: masked
                .chunks(t * w)
                .map(|l| l.chunks(w).map(|p| p.iter().map(value).collect()).collect())
                .collect(),
            limit,
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
            values: masked
                .chunks(t)
                .map(|r| r.iter().map(value).collect())
                .collect(),
            limit,
        })
    })
}

/// A curve over layers (or residual points): values and, where known, their 95 % band.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    /// One value per x tick.
    pub values: Vec<f64>,
    /// (lower, upper) per tick.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
}

impl Curve {
    /// A curve without a band.
    pub fn plain(values: Vec<f64>) -> Curve {
        Curve { values, band: None }
    }
}

/// One checkpoint's probe curves, for [`probe_curves`]: with no layers it draws nothing but
/// keeps its colour.
#[derive(Clone, Debug, Default)]
pub struct ProbeLines {
    /// Checkpoint name (legend).
    pub name: String,
    /// Layers probed (x ticks).
    pub layers: Vec<usize>,
    /// Held-out logistic accuracy.
    pub accuracy: Curve,
    /// Held-out logistic AUROC.
    pub auroc: Curve,
    /// Control-task accuracy.
    pub control: Option<Curve>,
    /// Best random direction's AUROC (the null).
    pub random: Option<Curve>,
}

impl ProbeLines {
    /// The curves of one probe result (with bands where the layers carry intervals).
    pub fn of(name: &str, ls: &[LayerResult]) -> ProbeLines {
        let band = |f: fn(&crate::analysis::probes::layers::LayerCi) -> Option<(f64, f64)>| {
            let v: Option<Vec<(f64, f64)>> = ls.iter().map(|l| l.ci.as_ref().and_then(f)).collect();
            v.map(|v| v.into_iter().unzip())
        };
        ProbeLines {
            name: name.to_string(),
            layers: ls.iter().map(|l| l.layer).collect(),
            accuracy: Curve {
                values: ls.iter().map(|l| l.logistic.accuracy).collect(),
                band: band(|c| Some((c.accuracy.lo, c.accuracy.hi))),
            },
            auroc: Curve {
                values: ls.iter().map(|l| l.logistic.auroc).collect(),
                band: band(|c| Some((c.auroc.lo, c.auroc.hi))),
            },
            control: ls.iter().all(|l| l.control.is_some()).then(|| Curve {
                values: ls
                    .iter()
                    .map(|l| l.control.map_or(0.0, |s| s.accuracy))
                    .collect(),
                band: band(|c| c.control_accuracy.map(|e| (e.lo, e.hi))),
            }),
            random: ls.iter().all(|l| l.random_best_auroc.is_some()).then(|| {
                Curve::plain(
                    ls.iter()
                        .map(|l| l.random_best_auroc.unwrap_or(0.0))
                        .collect(),
                )
            }),
        }
    }
}

/// A transfer curve (a probe fitted on one checkpoint, scored on another), for
/// [`probe_curves`].
#[derive(Clone, Debug)]
pub struct TransferLine {
    /// Legend.
    pub label: String,
    /// Accuracy per layer.
    pub accuracy: Curve,
}

impl TransferLine {
    /// The line of one transfer result.
    pub fn of(t: &TransferResult) -> TransferLine {
        let band = (t.ci.len() == t.layers.len() && !t.ci.is_empty())
            .then(|| t.ci.iter().map(|c| (c.accuracy.lo, c.accuracy.hi)).unzip());
        TransferLine {
            label: format!("fit on {}, scored on {}", t.from, t.to),
            accuracy: Curve {
                values: t.layers.iter().map(|s| s.accuracy).collect(),
                band,
            },
        }
    }
}

/// The plot line of a curve.
fn line(label: String, c: &Curve, dashed: bool, color: usize) -> Line {
    Line {
        label,
        values: c.values.clone(),
        dashed,
        dotted: false,
        color,
        band: c.band.clone(),
    }
}

/// Probe accuracy and AUROC per layer: each checkpoint solid in its colour with its 95 % band,
/// its control task (accuracy) dashed and its best random direction (AUROC) dotted-dashed in
/// the same colour, and the transfers between checkpoints dashed in colours of their own. None
/// when there is nothing to draw or a value is not finite.
pub fn probe_curves(
    title: &str,
    checkpoints: &[ProbeLines],
    transfers: &[TransferLine],
) -> Option<ProbeCurves> {
    let (mut accuracy, mut auroc, mut layers) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in checkpoints.iter().enumerate() {
        if c.layers.is_empty() {
            continue;
        }
        layers = c.layers.iter().map(|l| l.to_string()).collect();
        accuracy.push(line(c.name.clone(), &c.accuracy, false, k));
        if let Some(ctl) = &c.control {
            accuracy.push(line(format!("{} control task", c.name), ctl, true, k));
        }
        auroc.push(line(c.name.clone(), &c.auroc, false, k));
        if let Some(r) = &c.random {
            // The null dotted (the control task is dashed): three distinct styles.
            let mut l = line(format!("{} best random direction", c.name), r, true, k);
            l.dotted = true;
            auroc.push(l);
        }
    }
    if !layers.is_empty() {
        auroc.push(Line {
            label: "chance (AUROC 0.5)".into(),
            values: vec![0.5; layers.len()],
            dashed: false,
            dotted: true,
            color: 7,
            band: None,
        });
    }
    for (k, t) in transfers.iter().enumerate() {
        accuracy.push(line(
            t.label.clone(),
            &t.accuracy,
            true,
            checkpoints.len() + k,
        ));
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

/// One checkpoint's lens curves: its name and one curve per series.
pub type LensLines = (String, Vec<Curve>);

/// Logit lens: the mean probability of each series per residual point (`points`). One
/// checkpoint: a solid line per series in colours of their own. Several: a colour per
/// checkpoint, the first series solid and the others dashed, labelled `checkpoint: series`.
pub fn lens_curves(
    title: &str,
    points: &[String],
    names: &[String],
    checkpoints: &[LensLines],
) -> LensCurves {
    let several = checkpoints.len() > 1;
    let mut lines = Vec::new();
    for (k, (ck, curves)) in checkpoints.iter().enumerate() {
        for (j, (name, c)) in names.iter().zip(curves).enumerate() {
            let label = if several {
                format!("{ck}: {name}")
            } else {
                name.clone()
            };
            lines.push(line(
                label,
                c,
                several && j > 0,
                if several { k } else { j },
            ));
        }
    }
    LensCurves {
        title: title.to_string(),
        layers: points.to_vec(),
        lines,
    }
}

/// One bar of a weight-diff figure.
#[derive(Clone, Debug)]
pub struct WeightBar {
    /// Layer group (`embed`, `0`, ..., `final`).
    pub group: String,
    /// Component (`attn.c_attn`, ...).
    pub component: String,
    /// Relative Frobenius norm ‖B − A‖ / ‖A‖ (None: undefined).
    pub value: Option<f64>,
    /// Its 95 % interval over seeds.
    pub err: Option<(f64, f64)>,
    /// The same component's change between two seeds of one recipe (the floor).
    pub floor: Option<f64>,
}

/// The bars of one weight diff (no intervals, no floor): relative norms, or absolute ones.
pub fn weight_bars_of(d: &WeightDiff, absolute: bool) -> Vec<WeightBar> {
    d.components
        .iter()
        .map(|c| WeightBar {
            group: c.group.clone(),
            component: c.component.clone(),
            value: if absolute {
                Some(c.norm_diff)
            } else {
                c.relative
            },
            err: None,
            floor: None,
        })
        .collect()
}

/// Weight diff as grouped bars: one group per layer (`embed`, `0`, ..., `final`), one colour
/// per component, the relative Frobenius norm with its interval and, as a black line across
/// the bar, its seed floor.
pub fn weight_diff_bars(title: &str, bars: &[WeightBar], absolute: bool) -> Bars {
    let mut groups: Vec<String> = Vec::new();
    let mut series: Vec<String> = Vec::new();
    for c in bars {
        if !groups.contains(&c.group) {
            groups.push(c.group.clone());
        }
        if !series.contains(&c.component) {
            series.push(c.component.clone());
        }
    }
    let mut values = vec![vec![None; series.len()]; groups.len()];
    let mut err = vec![vec![None; series.len()]; groups.len()];
    let mut floor = vec![vec![None; series.len()]; groups.len()];
    for c in bars {
        let g = groups.iter().position(|x| *x == c.group);
        let s = series.iter().position(|x| *x == c.component);
        if let (Some(g), Some(s)) = (g, s) {
            values[g][s] = c.value;
            err[g][s] = c.err;
            floor[g][s] = c.floor;
        }
    }
    fn any<T>(v: &[Vec<Option<T>>]) -> bool {
        v.iter().flatten().any(Option::is_some)
    }
    Bars {
        title: title.to_string(),
        y_label: if absolute {
            "‖B−A‖"
        } else {
            "‖B−A‖ / ‖A‖"
        }
        .into(),
        groups,
        series,
        err: any(&err).then_some(err),
        floor: any(&floor).then_some(floor),
        values,
    }
}

/// One site's bars of cross-checkpoint patching: per layer the move of B's metric (patched −
/// B), its interval, and its seed floor.
pub type CrossSite = (Site, Vec<(f64, Option<(f64, f64)>, Option<f64>)>);

/// Cross-checkpoint patching as grouped bars: per layer, how far patching each site of A into
/// B moves B's metric (logits), with 95 % intervals and the seed floor (the same patch between
/// two seeds of one recipe) as a black line. None when no value is finite.
pub fn cross_bars(title: &str, layers: &[usize], sites: &[CrossSite]) -> Option<Bars> {
    let n = layers.len();
    let values: Vec<Vec<Option<f64>>> = (0..n)
        .map(|i| {
            sites
                .iter()
                .map(|(_, v)| v.get(i).map(|c| c.0).filter(|v| v.is_finite()))
                .collect()
        })
        .collect();
    let err: Vec<Vec<Option<(f64, f64)>>> = (0..n)
        .map(|i| {
            sites
                .iter()
                .map(|(_, v)| v.get(i).and_then(|c| c.1))
                .collect()
        })
        .collect();
    let floor: Vec<Vec<Option<f64>>> = (0..n)
        .map(|i| {
            sites
                .iter()
                .map(|(_, v)| v.get(i).and_then(|c| c.2))
                .collect()
        })
        .collect();
    fn any<T>(v: &[Vec<Option<T>>]) -> bool {
        v.iter().flatten().any(Option::is_some)
    }
    any(&values).then(|| Bars {
        title: title.to_string(),
        y_label: "patched − B (logits)".into(),
        groups: layers.iter().map(|l| format!("layer {l}")).collect(),
        series: sites.iter().map(|(c, _)| c.to_string()).collect(),
        err: any(&err).then_some(err),
        floor: any(&floor).then_some(floor),
        values,
    })
}

/// One statistic of a behaviour row.
pub type StatOf = fn(&Stats) -> f64;

/// A behaviour panel: its caption, the split it reads and the statistic.
pub type BehaviourMetric = (String, Split, StatOf);

/// One bar of a behaviour panel: its value and, where known, its 95 % interval.
pub type BarValue = Option<(f64, Option<Span>)>;

/// Behaviour as one small panel per metric, one bar per row (`legends`), with 95 % error bars:
/// `values[metric][row]` = (value, interval). None when no value is finite.
pub fn behaviour_bars(
    title: &str,
    metrics: &[String],
    legends: &[String],
    values: &[Vec<BarValue>],
) -> Option<BehaviourBars> {
    let v: Vec<Vec<Option<f64>>> = values
        .iter()
        .map(|m| {
            m.iter()
                .map(|c| c.map(|c| c.0).filter(|x| x.is_finite()))
                .collect()
        })
        .collect();
    let err: ErrBars = values
        .iter()
        .map(|m| m.iter().map(|c| c.and_then(|c| c.1)).collect())
        .collect();
    v.iter()
        .flatten()
        .any(Option::is_some)
        .then(|| BehaviourBars {
            title: title.to_string(),
            metrics: metrics.to_vec(),
            checkpoints: legends.to_vec(),
            values: v,
            err: err.iter().flatten().any(Option::is_some).then_some(err),
        })
}

/// The values of behaviour panels for single rows (no aggregation over seeds): each row's
/// statistic with its bootstrap interval.
pub fn behaviour_values(rows: &[&Row], metrics: &[BehaviourMetric]) -> Vec<Vec<BarValue>> {
    metrics
        .iter()
        .map(|(_, sp, f)| rows.iter().map(|r| Some((f(&r.get(*sp)), None))).collect())
        .collect()
}

/// A steering dose–response: the contrast's measure on corrupted prompts at each α (α = 0 the
/// unedited run), one line per layer with its 95 % band, and the unedited clean level dashed.
/// α ticks are sorted.
pub fn steering(r: &crate::analysis::causal::SteerResult, checkpoint: &str) -> AnyFigure {
    let m = r.measure;
    let mut order: Vec<(f64, Option<usize>)> = r
        .alphas
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, Some(i)))
        .collect();
    if !r.alphas.contains(&0.0) {
        order.push((0.0, None));
    }
    order.sort_by(|x, y| x.0.total_cmp(&y.0));
    let ticks: Vec<String> = order.iter().map(|(a, _)| format!("{a}")).collect();
    let base = m.get(&r.corrupt);
    let mut lines: Vec<Line> = r
        .layers
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let est: Vec<crate::stats::Est> = order
                .iter()
                .map(|(_, i)| i.map_or(base, |i| m.get(&l.doses[i].edited)))
                .collect();
            Line {
                label: format!("resid_post {}", l.layer),
                values: est.iter().map(|e| e.value).collect(),
                dashed: false,
                dotted: false,
                color: k,
                band: Some((
                    est.iter().map(|e| e.lo).collect(),
                    est.iter().map(|e| e.hi).collect(),
                )),
            }
        })
        .collect();
    let clean = m.get(&r.clean);
    lines.push(Line {
        label: "clean, unedited".into(),
        values: vec![clean.value; ticks.len()],
        dashed: true,
        dotted: false,
        color: r.layers.len(),
        band: None,
    });
    AnyFigure::Dose(DoseCurves {
        title: format!(
            "{checkpoint}: {} on {} corrupted {} prompts + α·Δ (position {})",
            m.name(),
            r.n,
            r.contrast,
            r.pos
        ),
        x_label: "α (multiples of mean(clean) − mean(corrupted))".into(),
        y_label: m.name().into(),
        ticks,
        lines,
    })
}

/// A crosscoder's standard plot: how many active latents have each relative decoder norm
/// (`norms`, one per active latent: 0 A-only, ½ shared, 1 B-only), in 20 bins.
pub fn decoder_norms(title: &str, norms: &[f64]) -> AnyFigure {
    const BINS: usize = 20;
    let mut counts = [0usize; BINS];
    for &v in norms {
        counts[((v * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    AnyFigure::Bars(Bars {
        title: title.to_string(),
        y_label: "active latents".into(),
        groups: (0..BINS)
            .map(|i| format!("{:.2}", (i as f64 + 0.5) / BINS as f64))
            .collect(),
        series: vec!["latents".into()],
        values: counts.iter().map(|&c| vec![Some(c as f64)]).collect(),
        err: None,
        floor: None,
    })
}
