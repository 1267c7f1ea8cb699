//! The probe and logit-lens groups of a pair's section: accuracy/AUROC curves over layers with
//! their nulls and controls, transfer, and the lens. Owns layout and captions only; must not
//! compute an analysis.

use super::Figs;
use crate::report::data::{lens_series, CheckpointData, Fact, PairData, Settings};
use crate::stats::Est;
use crate::view::figures::{self, Curve, ProbeLines, TransferLine};
use crate::view::html;
use crate::view::plot::AnyFigure;

/// Probe curves of one recipe over runs: means with their interval across seeds (one run: its
/// bootstrap band).
pub(super) fn probe_lines(
    cks: &[&CheckpointData],
    label: crate::analysis::probes::Label,
) -> ProbeLines {
    let probed: Vec<_> = cks.iter().filter_map(|c| c.probes.get(&label)).collect();
    let name = cks[0].name.clone();
    if probed.len() != cks.len() || probed.iter().any(|p| p.layers.is_empty()) {
        return ProbeLines {
            name,
            ..Default::default()
        };
    }
    if let [one] = probed.as_slice() {
        return ProbeLines::of(&name, &one.layers);
    }
    let n_layer = probed[0].layers.len();
    let curve =
        |f: &dyn Fn(&crate::analysis::probes::LayerResult) -> Option<Est>| -> Option<Curve> {
            let facts: Option<Vec<Fact>> = (0..n_layer)
                .map(|l| {
                    let v: Option<Vec<Est>> = probed.iter().map(|p| f(&p.layers[l])).collect();
                    v.map(|v| Fact::of_proportion(&v))
                })
                .collect();
            facts.map(|fs| Curve {
                values: fs.iter().map(|f| f.value).collect(),
                band: Some((
                    fs.iter().map(|f| f.lo).collect(),
                    fs.iter().map(|f| f.hi).collect(),
                )),
            })
        };
    let plain = |f: &dyn Fn(&crate::analysis::probes::LayerResult) -> Option<f64>| {
        curve(&|l| f(l).map(|v| Est::exact(v, 1)))
    };
    ProbeLines {
        name,
        layers: probed[0].layers.iter().map(|l| l.layer).collect(),
        accuracy: curve(&|l| l.ci.as_ref().map(|c| c.accuracy)).unwrap_or_default(),
        auroc: curve(&|l| l.ci.as_ref().map(|c| c.auroc)).unwrap_or_default(),
        control: curve(&|l| l.ci.as_ref().and_then(|c| c.control_accuracy)),
        random: plain(&|l| l.random_best_auroc).map(|c| Curve { band: None, ..c }),
    }
}

pub(super) fn probe_group(
    p: &PairData,
    cas: &[&CheckpointData],
    cbs: &[&CheckpointData],
    s: &Settings,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let label = p.probe_label;
    let pos = cas
        .first()
        .and_then(|c| c.probes.get(&label))
        .map_or(label.decision_position(), |p| p.position);
    let mut g = html::Group {
        title: format!(
            "Probes: {} ({}-fold held out, logistic, resid_post at position {pos}, the decision position)",
            label.about(),
            s.folds
        ),
        ..Default::default()
    };
    for cks in [cas, cbs] {
        for c in cks {
            if let Some(why) = c.probes.get(&label).and_then(|p| p.skipped.as_ref()) {
                g.notes.push(format!("{}: no probe: {why}", c.dir));
            }
        }
    }
    let lines = [probe_lines(cas, label), probe_lines(cbs, label)];
    // Transfers: mean over runs of each direction's accuracy.
    let mut transfers = Vec::new();
    for (from, to) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let per: Vec<&crate::analysis::probes::TransferResult> = p
            .runs
            .iter()
            .filter_map(|r| {
                let (kf, kt) = if from == &p.a {
                    (&r.a, &r.b)
                } else {
                    (&r.b, &r.a)
                };
                r.probe_transfer
                    .iter()
                    .find(|t| &t.from == kf && &t.to == kt)
            })
            .collect();
        if per.len() != p.runs.len() || per.is_empty() {
            continue;
        }
        if let [one] = per.as_slice() {
            let mut t = TransferLine::of(one);
            t.label = format!("fit on {from}, scored on {to}");
            transfers.push(t);
            continue;
        }
        let n_layer = per[0].layers.len();
        let facts: Vec<Fact> = (0..n_layer)
            .map(|l| {
                let v: Vec<Est> = per
                    .iter()
                    .map(|t| {
                        t.ci.get(l)
                            .map_or(Est::exact(t.layers[l].accuracy, 1), |c| c.accuracy)
                    })
                    .collect();
                Fact::of_proportion(&v)
            })
            .collect();
        transfers.push(TransferLine {
            label: format!("fit on {from}, scored on {to}"),
            accuracy: Curve {
                values: facts.iter().map(|f| f.value).collect(),
                band: Some((
                    facts.iter().map(|f| f.lo).collect(),
                    facts.iter().map(|f| f.hi).collect(),
                )),
            },
        });
    }
    let title = format!("probes ({label}): {} vs {}", p.a, p.b);
    let position = cas[0].probes.get(&label).map_or(0, |p| p.position);
    if let Some(fig) = figures::probe_curves(&title, &lines, &transfers) {
        g.figures.push(figs.add(
            &format!("{stem}-probes"),
            format!(
                "Held-out accuracy and AUROC of a logistic probe for {} at position {position} per layer (mean over runs, band: 95 % interval); dashed: control task, transfer between the checkpoints, and the best of {} random directions (null).",
                label.about(),
                s.null_directions
            ),
            || AnyFigure::Probe(fig),
        ));
    }
    g
}

pub(super) fn lens_group(
    p: &PairData,
    cas: &[&CheckpointData],
    cbs: &[&CheckpointData],
    stem: &str,
    figs: &mut Figs,
) -> Option<html::Group> {
    let key = &p.prompts.key;
    let curves = |cks: &[&CheckpointData]| -> Option<(String, Vec<Curve>)> {
        let ls: Option<Vec<_>> = cks.iter().map(|c| c.lens.get(key)).collect();
        let ls = ls?;
        let n_series = ls.first()?.series.len();
        let points = ls[0].result.points.len();
        let cs = (0..n_series)
            .map(|j| {
                let facts: Vec<Fact> = (0..points)
                    .map(|k| {
                        Fact::of_proportion(
                            &ls.iter().map(|l| l.series[j].values[k]).collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                Curve {
                    values: facts.iter().map(|f| f.value).collect(),
                    band: Some((
                        facts.iter().map(|f| f.lo).collect(),
                        facts.iter().map(|f| f.hi).collect(),
                    )),
                }
            })
            .collect();
        Some((cks[0].name.clone(), cs))
    };
    let (a, b) = (curves(cas)?, curves(cbs)?);
    let lb = cbs[0].lens.get(key)?;
    let names: Vec<String> = lens_series(&lb.result).into_iter().map(|s| s.0).collect();
    let (t0, t1) = (names[0].clone(), names[1].clone());
    let pos = lb.result.pos;
    let n = lb.result.n_prompts;
    Some(html::Group {
        title: "Logit lens".into(),
        figures: vec![figs.add(
            &format!("{stem}-lens"),
            format!(
                "Mean probability of {t0} and {t1} at position {pos} read through the final LayerNorm and unembedding after each layer, {n} {} per run (mean over runs, band: 95 % interval).",
                p.prompts.about
            ),
            || {
                let title = format!("logit lens at position {pos}: {} vs {}", p.a, p.b);
                AnyFigure::Lens(figures::lens_curves(&title, &lb.result.points, &names, &[a, b]))
            },
        )],
        ..Default::default()
    })
}
