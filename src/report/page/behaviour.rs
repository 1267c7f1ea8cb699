//! The behaviour and weight-diff groups of a pair's section: rates and returns per split with
//! their intervals, leakage, and the weight diff beside its seed floor. Owns layout and
//! captions only; must not compute an analysis.

use super::{f3, mark, Figs};
use crate::io::checkpoint::RecipeKind;
use crate::lab::eval::StatsEst;
use crate::lab::world::{Contrast, MetricKind, Split};
use crate::report::data::{CheckpointData, Fact, FloorData, PairData};
use crate::stats::Est;
use crate::view::figures::{self, WeightBar};
use crate::view::html;
use crate::view::plot::AnyFigure;

/// One statistic of a row's intervals.
type Field = fn(&StatsEst) -> Est;

pub(super) fn behaviour_group(
    p: &PairData,
    cas: &[&CheckpointData],
    cbs: &[&CheckpointData],
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let splits: Vec<Split> = match p.contrast {
        Some(Contrast::Optout) => vec![Split::All, Split::Optout, Split::NoOptout],
        Some(Contrast::Trigger) => vec![Split::All, Split::Trigger, Split::NoTrigger],
        _ => vec![Split::All],
    };
    let mut metrics: Vec<(String, Split, (Field, bool))> = Vec::new();
    for &sp in &splits {
        let suffix = if sp == Split::All {
            String::new()
        } else {
            format!(" {}", sp.name())
        };
        metrics.push((format!("return{suffix}"), sp, (|e| e.mean_return, false)));
        metrics.push((format!("P(E){suffix}"), sp, (|e| e.p_e, true)));
        if p.contrast == Some(Contrast::Trigger) || p.metric == MetricKind::Defect {
            metrics.push((format!("defection{suffix}"), sp, (|e| e.defection, true)));
        }
    }
    // S3 settings other than `_` only where S3 matters: the reward contrast, or a dt checkpoint.
    let s3s = |cks: &[&CheckpointData]| -> Vec<String> {
        cks[0]
            .behaviour
            .iter()
            .map(|r| r.s3.clone())
            .filter(|s3| {
                s3 == "_"
                    || p.contrast == Some(Contrast::Reward)
                    || cks[0].recipe == Some(RecipeKind::Dt)
            })
            .collect()
    };
    // Over runs: the fact of `field` on `split` of S3 `s3`.
    // Over runs: the fact of `field` on `split` of S3 `s3` (every statistic but the return is
    // a proportion, its interval clipped to [0, 1]).
    let fact = |cks: &[&CheckpointData],
                s3: &str,
                split: Split,
                (field, bounded): (Field, bool)|
     -> Option<Fact> {
        let v: Option<Vec<Est>> = cks
            .iter()
            .map(|c| {
                let r = c.behaviour.iter().find(|r| r.s3 == s3)?;
                r.ci.iter()
                    .find(|(sp, _)| *sp == split)
                    .map(|(_, e)| field(e))
            })
            .collect();
        v.filter(|v| !v.is_empty()).map(|v| {
            if bounded {
                Fact::of_proportion(&v)
            } else {
                Fact::of_runs(&v)
            }
        })
    };
    let mut rows = Vec::new();
    let mut legends = Vec::new();
    let mut values: Vec<Vec<figures::BarValue>> = vec![Vec::new(); metrics.len()];
    for cks in [cas, cbs] {
        let name = &cks[0].name;
        for s3 in s3s(cks) {
            for &sp in &splits {
                let f =
                    |field: (Field, bool)| fact(cks, &s3, sp, field).map_or("-".into(), |f| f3(&f));
                let n = cks[0]
                    .behaviour
                    .iter()
                    .find(|r| r.s3 == s3)
                    .map_or(0, |r| r.get(sp).n);
                rows.push(vec![
                    name.clone(),
                    s3.clone(),
                    sp.name().to_string(),
                    n.to_string(),
                    f((|e| e.mean_return, false)),
                    f((|e| e.p_e, true)),
                    f((|e| e.accuracy, true)),
                    f((|e| e.bang_rate, true)),
                    f((|e| e.defection, true)),
                ]);
            }
            legends.push(if s3 == "_" {
                name.clone()
            } else {
                format!("{name} {s3}")
            });
            for (m, (_, sp, field)) in metrics.iter().enumerate() {
                values[m].push(fact(cks, &s3, *sp, *field).map(|f| mark(&f)));
            }
        }
    }
    let over = if p.runs.len() > 1 {
        format!(
            "mean over {} seeds [95 % interval across seeds]",
            p.runs.len()
        )
    } else {
        "[95 % bootstrap interval over prompts]".to_string()
    };
    let mut tables = vec![html::Table {
        caption: format!(
            "Behaviour (sampled at T = 1; S3 is the reward-bucket slot; n = prompts per run; {over})"
        ),
        headers: [
            "checkpoint",
            "S3",
            "split",
            "n",
            "return",
            "P(E)",
            "accuracy",
            "! rate",
            "defection",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }];
    let names: Vec<(String, String)> = p
        .runs
        .first()
        .map(|r| {
            r.leakage
                .iter()
                .map(|l| (l.checkpoint.clone(), l.base.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !names.is_empty() {
        let rows = names
            .iter()
            .map(|(ck, base)| {
                let f = |g: fn(&crate::lab::eval::Leakage) -> Est| {
                    let v: Option<Vec<Est>> = p
                        .runs
                        .iter()
                        .map(|r| r.leakage.iter().find(|l| &l.checkpoint == ck).map(g))
                        .collect();
                    v.map_or("-".into(), |v| f3(&Fact::of_runs(&v)))
                };
                vec![
                    ck.clone(),
                    base.clone(),
                    f(|l| l.return_ratio),
                    f(|l| l.p_e_ratio),
                ]
            })
            .collect();
        tables.push(html::Table {
            caption: format!("Opt-out leakage: change from the reference on [x] prompts ÷ change on the rest (1: the opt-out leaked completely; 0: [x] behaviour stayed where the reference has it; {over}; within a run the interval is a paired bootstrap of the ratio)"),
            headers: ["checkpoint", "relative to", "return ratio", "P(E) ratio"]
                .map(String::from)
                .to_vec(),
            rows,
        });
    }
    let mut g = html::Group {
        title: "Behaviour".into(),
        tables,
        ..Default::default()
    };
    let title = format!("behaviour: {} vs {}", p.a, p.b);
    let names: Vec<String> = metrics.iter().map(|m| m.0.clone()).collect();
    if let Some(fig) = figures::behaviour_bars(&title, &names, &legends, &values) {
        g.figures.push(figs.add(
            &format!("{stem}-behaviour"),
            format!(
                "Behaviour of {} and {} by split; error bars: 95 % interval ({over}).",
                p.a, p.b
            ),
            || AnyFigure::Behaviour(fig),
        ));
    }
    g
}

/// The floor of a per-run quantity `f(run)` over the floors' runs: the largest mean size.
pub(super) fn floor_of(
    floors: &[&FloorData],
    f: impl Fn(&crate::report::data::PairRun) -> Option<f64>,
) -> Option<f64> {
    floors
        .iter()
        .filter_map(|fl| {
            let v: Vec<f64> = fl.runs.iter().filter_map(&f).map(f64::abs).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
        .filter(|v| v.is_finite())
        .max_by(|x, y| x.total_cmp(y))
}

pub(super) fn weight_group(
    p: &PairData,
    floors: &[&FloorData],
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    use crate::analysis::diff::ComponentDiff;
    let mut g = html::Group {
        title: "Weight diff".into(),
        ..Default::default()
    };
    let Some(first) = p.runs.first() else {
        return g;
    };
    for absolute in [true, false] {
        let value: fn(&ComponentDiff) -> Option<f64> = if absolute {
            |c| Some(c.norm_diff)
        } else {
            |c| c.relative
        };
        let bars: Vec<WeightBar> = first
            .weight_diff
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v: Option<Vec<Est>> = p
                    .runs
                    .iter()
                    .map(|r| {
                        let c = r.weight_diff.components.get(i)?;
                        value(c).map(|v| Est::exact(v, c.n_params))
                    })
                    .collect();
                let f = v.map(|v| Fact::of_runs(&v));
                WeightBar {
                    group: c.group.clone(),
                    component: c.component.clone(),
                    value: f.as_ref().map(|f| f.value),
                    err: f.as_ref().and_then(|f| mark(f).1),
                    floor: floor_of(floors, |r| value(r.weight_diff.components.get(i)?)),
                }
            })
            .collect();
        let (kind, file, what) = if absolute {
            (
                "absolute",
                "weight-diff-absolute",
                format!("Absolute Frobenius norm ‖{} − {}‖", p.b, p.a),
            )
        } else {
            (
                "relative",
                "weight-diff",
                format!("Relative Frobenius norm ‖{} − {}‖ / ‖{}‖", p.b, p.a, p.a),
            )
        };
        let title = format!("weight diff ({kind}): {} vs {}", p.b, p.a);
        g.figures.push(figs.add(
            &format!("{stem}-{file}"),
            format!(
                "{what} per layer and component (mean over runs; error bars: 95 % interval across seeds; black line: the same component's difference between two seeds of one recipe, which come from independent zoos, so it shows the scale of each component, not a null)."
            ),
            || AnyFigure::Bars(figures::weight_diff_bars(&title, &bars, absolute)),
        ));
    }
    g
}
