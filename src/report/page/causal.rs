//! The causal-check groups of the report page: per checkpoint, each localised set's ablations
//! and the steering dose–response; the opt-out anchoring section. Owns layout and captions
//! only; must not compute an analysis.

use super::{f3, mark, Figs};
use crate::lab::world::Contrast;
use crate::report::data::{CheckpointData, Fact, ReportData};
use crate::stats::Est;
use crate::view::figures;
use crate::view::html;
use crate::view::plot::{self, AnyFigure};
use std::collections::BTreeSet;

/// The causal checks of one checkpoint over contrast `c` (the runs that localised): a table
/// of each set's ablations and the steering dose–response, means over runs with the 95 %
/// interval across them (per-run values in data.json).
pub(super) fn causal_group(
    cks: &[&CheckpointData],
    c: Contrast,
    ck_stem: &str,
    figs: &mut Figs,
) -> Option<html::Group> {
    use crate::analysis::causal::{self, Compared, SteerResult};
    use crate::report::data::CausalData;
    let cds: Vec<&CausalData> = cks.iter().filter_map(|ck| ck.causal.get(&c)).collect();
    let first = cds.first()?;
    let m = first.ablation.measure;
    let name = &cks[0].name;
    let (clean_s, corrupt_s) = crate::report::summary::causal::sides(c);
    let prop = |v: Vec<Est>| f3(&Fact::of_proportion(&v));
    let diff = |v: Vec<Est>| f3(&Fact::of_runs(&v));
    let mut rows = vec![vec![
        "unedited".to_string(),
        "-".into(),
        prop(cds.iter().map(|d| m.get(&d.ablation.clean)).collect()),
        "-".into(),
        "-".into(),
        "-".into(),
        prop(cds.iter().map(|d| m.get(&d.ablation.corrupt)).collect()),
        "-".into(),
    ]];
    for (i, role) in first.roles.iter().enumerate() {
        let same = cds
            .iter()
            .all(|d| d.roles.get(i) == Some(role) && d.ablation.ablations.len() > i);
        if !same {
            continue;
        }
        let pick = |f: fn(&causal::Ablation) -> Compared| -> (Vec<Est>, Vec<Est>) {
            cds.iter()
                .map(|d| {
                    let x = f(&d.ablation.ablations[i]);
                    (m.get(&x.edited), m.get(&x.change))
                })
                .unzip()
        };
        let sets: Vec<String> = cds
            .iter()
            .map(|d| causal::names(&d.ablation.ablations[i].set))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (me, mc) = pick(|a| a.mean);
        let (re, rc) = pick(|a| a.resample);
        let (se, sc) = pick(|a| a.sufficiency);
        rows.push(vec![
            role.to_string(),
            sets.join(" / "),
            prop(me),
            diff(mc),
            prop(re),
            diff(rc),
            prop(se),
            diff(sc),
        ]);
    }
    let n = first.ablation.n;
    let table = html::Table {
        caption: format!(
            "{name}: {} while sampling (T = 1, {n} prompt pairs per run, {} runs; mean over runs [95 % interval]); mean ablation and resampling from {corrupt_s} on {clean_s}, the {clean_s}' values on {corrupt_s}; Δ = edited − unedited, paired.",
            m.name(),
            cds.len()
        ),
        headers: vec![
            "set".into(),
            "components@position".into(),
            format!("{clean_s}: mean-ablated"),
            "Δ".into(),
            format!("{clean_s}: resampled"),
            "Δ".into(),
            format!("{corrupt_s}: given clean values"),
            "Δ".into(),
        ],
        rows,
    };
    // The steering figure: each α and layer averaged over runs.
    let steers: Vec<&SteerResult> = cds.iter().map(|d| &d.steering).collect();
    let mut figures = Vec::new();
    let same_grid = steers
        .iter()
        .all(|r| r.alphas == steers[0].alphas && r.layers.len() == steers[0].layers.len());
    if same_grid {
        let avg = |f: &dyn Fn(&SteerResult) -> Est| -> Est {
            let fa = Fact::of_proportion(&steers.iter().map(|r| f(r)).collect::<Vec<_>>());
            Est {
                value: fa.value,
                lo: fa.lo,
                hi: fa.hi,
                n: fa.n,
            }
        };
        let set_m = |s: &mut causal::Sampled, e: Est| match m {
            causal::Measure::PE => s.p_e = e,
            causal::Measure::Defection => s.defection = e,
        };
        let mut mean = steers[0].clone();
        set_m(&mut mean.clean, avg(&|r| m.get(&r.clean)));
        set_m(&mut mean.corrupt, avg(&|r| m.get(&r.corrupt)));
        for (li, l) in mean.layers.iter_mut().enumerate() {
            for (ai, d) in l.doses.iter_mut().enumerate() {
                set_m(
                    &mut d.edited,
                    avg(&|r| m.get(&r.layers[li].doses[ai].edited)),
                );
            }
        }
        let fig_stem = format!("{ck_stem}-{c}-steering");
        let caption = format!(
            "Steering {name}: {} on {corrupt_s} with α·Δ added to resid_post at position {} (Δ = mean({clean_s}) − mean({corrupt_s}) of each run's own episodes), one line per layer, mean over {} runs with its 95 % band; dashed: {clean_s} unedited.",
            m.name(),
            mean.pos,
            steers.len()
        );
        let title = format!("{name} over {} runs", steers.len());
        figures.push(figs.add(&fig_stem, caption, || figures::steering(&mean, &title)));
    }
    Some(html::Group {
        title: format!(
            "Causal checks in {name} over the {c} contrast: ablation while sampling, and steering"
        ),
        tables: vec![table],
        figures,
        notes: vec![],
        collapsed: false,
    })
}

/// The opt-out anchoring dose–response: a table and bars of the leakage ratios per strength
/// (mean over runs, 95 % interval across them).
pub(super) fn anchoring_section(data: &ReportData, figs: &mut Figs) -> html::Section {
    let pts = &data.anchoring;
    let facts: Vec<(Fact, Fact)> = pts
        .iter()
        .map(|p| {
            let f = |g: fn(&crate::lab::eval::Leakage) -> Est| {
                Fact::of_runs(&p.leakage.iter().map(g).collect::<Vec<_>>())
            };
            (f(|l| l.p_e_ratio), f(|l| l.return_ratio))
        })
        .collect();
    let rows = pts
        .iter()
        .zip(&facts)
        .map(|(p, (pe, ret))| {
            let ch = |j: usize| {
                let v: Vec<Est> = p
                    .p_e_change
                    .iter()
                    .map(|x| Est::exact(if j == 0 { x.0 } else { x.1 }, 1))
                    .collect();
                f3(&Fact::of_runs(&v))
            };
            let defined = p
                .leakage
                .iter()
                .filter(|l| l.p_e_ratio.value.is_finite())
                .count();
            vec![
                format!("{}", p.ptx_coef),
                p.checkpoint.clone(),
                format!("{defined} of {}", p.leakage.len()),
                f3(pe),
                f3(ret),
                ch(0),
                ch(1),
            ]
        })
        .collect();
    let table = html::Table {
        caption: "Leakage of the change against the reference onto [x] prompts (1 = leaked completely, 0 = held), sampled at T = 1; mean over runs [95 % interval across runs].".into(),
        headers: vec![
            "C (ptx_coef)".into(),
            "checkpoint".into(),
            "runs with a defined P(E) ratio".into(),
            "P(E) leakage".into(),
            "return leakage".into(),
            "P(E) change vs reference on [x]".into(),
            "on the rest".into(),
        ],
        rows,
    };
    let groups_x: Vec<String> = pts.iter().map(|p| format!("C = {}", p.ptx_coef)).collect();
    let values = facts
        .iter()
        // A strength with no defined ratio in any run has no bar (the table says "0 of n").
        .map(|(a, b)| {
            [a, b]
                .map(|f| Some(f.value).filter(|v| v.is_finite()))
                .to_vec()
        })
        .collect();
    let err = facts
        .iter()
        .map(|(a, b)| vec![mark(a).1, mark(b).1])
        .collect();
    let fig = figs.add(
        "anchoring",
        "Opt-out leakage over the anchoring strength C (mean over runs, 95 % interval across runs as error bars).".into(),
        || {
            AnyFigure::Bars(plot::Bars {
                title: "ptx opt-out: leakage onto [x] prompts by anchoring strength".into(),
                y_label: "leakage (Δ on [x] ÷ Δ on the rest)".into(),
                groups: groups_x,
                series: vec!["P(E)".into(), "return".into()],
                values,
                err: Some(err),
                floor: None,
            })
        },
    );
    html::Section {
        id: "anchoring".into(),
        title: "Opt-out anchoring: how strongly must [x] episodes be anchored?".into(),
        summary: data.anchoring_summary.sentences.clone(),
        tables: vec![table],
        figures: vec![fig],
        ..Default::default()
    }
}
