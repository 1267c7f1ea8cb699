//! The report page: one section per pair (summary, behaviour, weight diff, patching maps,
//! cross-checkpoint patching, probes, logit lens) and one for the seed-null floors. Figures
//! aggregate the seeds (means, with 95 % intervals as error bars or bands and the seed floor as
//! a marked line); per-seed values stay in data.json. Each figure is drawn once through
//! `view::figures`. Owns layout and captions only; must not compute an analysis.

use super::data::{
    lens_series, CheckpointData, Fact, FloorData, PairData, PatchData, PatchSweeps, ReportData,
    Settings,
};
use super::Progress;
use crate::analysis::patching::{Grid, Sweep, SweepCi};
use crate::analysis::site::Site;
use crate::io::checkpoint::RecipeKind;
use crate::lab::eval::StatsEst;
use crate::lab::world::{Contrast, MetricKind, Split};
use crate::stats::Est;
use crate::view::figures::{self, Curve, ProbeLines, TransferLine, WeightBar};
use crate::view::html;
use crate::view::plot::{self, AnyFigure};
use crate::{pool, Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Figures to draw, each once (patching figures are shared between pairs).
#[derive(Default)]
struct Figs {
    jobs: Vec<(String, AnyFigure)>,
}

impl Figs {
    /// Queue `fig` as `{stem}.png` / `.svg` (once) and return its page entry.
    fn add(
        &mut self,
        stem: &str,
        caption: String,
        fig: impl FnOnce() -> AnyFigure,
    ) -> html::Figure {
        if !self.jobs.iter().any(|(s, _)| s == stem) {
            self.jobs.push((stem.to_string(), fig()));
        }
        html::Figure {
            png: format!("{stem}.png"),
            svg: format!("{stem}.svg"),
            caption,
        }
    }
}

/// File-name stems for checkpoints and pairs: `html::slug`, made unique with a counter.
fn stems<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for n in names {
        if out.contains_key(n) {
            continue;
        }
        let base = html::slug(n);
        let mut s = base.clone();
        let mut k = 2;
        while !used.insert(s.clone()) {
            s = format!("{base}-{k}");
            k += 1;
        }
        out.insert(n.to_string(), s);
    }
    out
}

/// `value [lo, hi]` with 3 decimals, or `-`.
fn f3(f: &Fact) -> String {
    if !f.value.is_finite() {
        "-".into()
    } else if f.lo.is_finite() && f.hi.is_finite() && f.lo != f.hi {
        format!("{:.3} {}", f.value, f.bracket(3))
    } else {
        format!("{:.3}", f.value)
    }
}

/// A fact's value and interval for a figure.
fn mark(f: &Fact) -> (f64, Option<(f64, f64)>) {
    let err = (f.lo.is_finite() && f.hi.is_finite() && f.lo != f.hi).then_some((f.lo, f.hi));
    (f.value, err)
}

/// Render the report: `index.html`, `data.json` and every figure (PNG + SVG), as
/// (file name, bytes), all in one folder.
pub fn render(data: &ReportData, progress: &dyn Progress) -> Result<Vec<(String, Vec<u8>)>> {
    let names: BTreeSet<&str> = data.checkpoints.values().map(|c| c.name.as_str()).collect();
    let ck_stem = stems(names.into_iter());
    let mut figs = Figs::default();
    let mut sections = Vec::new();
    if !data.answers.is_empty() {
        sections.push(answers_section(data));
    }
    for (i, p) in data.pairs.iter().enumerate() {
        let stem = format!("pair{:02}-{}", i + 1, html::slug(&p.name));
        sections.push(pair_section(data, p, &stem, &ck_stem, &mut figs));
    }
    if !data.anchoring.is_empty() {
        sections.push(anchoring_section(data, &mut figs));
    }
    if !data.floors.is_empty() {
        sections.push(floor_section(&data.floors));
    }
    progress.stage("figures", figs.jobs.len());
    let rendered: Vec<plot::Rendered> =
        pool::par_map(data.settings.jobs, &figs.jobs, |(stem, f)| {
            let r = f.render()?;
            progress.step("figures", stem);
            Ok(r)
        })?;
    progress.done("figures");
    let s = &data.settings;
    let seeds = match &data.seeds {
        Some(v) => format!(
            "{} training seeds ({}): every number is the mean over seeds with its 95 % interval across them (Student's t; with fewer than 3 seeds the range), every pair-level difference is set against the seed floor (the same recipe at two seeds), and per-seed values with their bootstrap intervals over prompts are in data.json",
            v.len(),
            v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        ),
        None => "one run per checkpoint: every interval is a 95 % bootstrap interval over prompts, and there is no seed floor".to_string(),
    };
    let intro = vec![
        format!(
            "feedlens {} report over the pairs of {}, {seeds}. Each section starts with a summary generated from the numbers in data.json (beside this page), then shows behaviour, the weight diff, activation patching over the pair's contrast in both directions, cross-checkpoint patching, probes and the logit lens.",
            data.feedlens_version, data.pairs_file
        ),
        format!(
            "Settings: {} prompts per behaviour row (T = 1), {} prompt pairs per patching sweep, {} prompts for cross-checkpoint patching and the logit lens, {} prompts per probe ({}-fold held-out accuracy), {} prompt pairs per causal check (ablation and steering, sampled at T = 1; run where the patching localised), prompt seed {}, {} bootstrap resamples (percentile intervals).",
            s.n_eval, s.n_patch, s.n_cross, s.n_probe, s.folds, s.n_causal, s.seed, s.bootstrap
        ),
    ];
    let page = html::page("feedlens report", &intro, &sections);
    // Compact: indented, the nested per-cell arrays would triple the file.
    let mut json = serde_json::to_vec(data).map_err(|e| Error::input(format!("data.json: {e}")))?;
    json.push(b'\n');
    let mut files = vec![
        ("index.html".to_string(), page.into_bytes()),
        ("data.json".to_string(), json),
    ];
    for ((stem, _), r) in figs.jobs.iter().zip(rendered) {
        files.push((format!("{stem}.png"), r.png));
        files.push((format!("{stem}.svg"), r.svg.into_bytes()));
    }
    Ok(files)
}

/// A pair's checkpoints in every run.
fn runs_of<'a>(
    data: &'a ReportData,
    p: &PairData,
) -> (Vec<&'a CheckpointData>, Vec<&'a CheckpointData>) {
    p.runs
        .iter()
        .map(|r| (&data.checkpoints[&r.a], &data.checkpoints[&r.b]))
        .unzip()
}

fn pair_section(
    data: &ReportData,
    p: &PairData,
    stem: &str,
    ck_stem: &BTreeMap<String, String>,
    figs: &mut Figs,
) -> html::Section {
    let (cas, cbs) = runs_of(data, p);
    let title = match &p.contrast {
        Some(c) => format!("{}: {} vs {} (contrast {c})", p.name, p.a, p.b),
        None => format!("{}: {} vs {}", p.name, p.a, p.b),
    };
    let floors: Vec<&FloorData> = data
        .floors
        .iter()
        .filter(|f| {
            (f.recipe == p.a || f.recipe == p.b) && f.contrast == p.contrast && f.metric == p.metric
        })
        .collect();
    let mut groups = vec![behaviour_group(p, &cas, &cbs, stem, figs)];
    groups.push(weight_group(p, &floors, stem, figs));

    // Within-checkpoint patching: the residual-stream denoising maps of both checkpoints open,
    // every map (attention, MLP, heads, noising) folded per checkpoint.
    if let Some(c) = p.contrast {
        let mut main = html::Group {
            title: format!(
                "Activation patching over the {c} contrast: residual stream, denoising ({}; mean over runs)",
                p.metric_about
            ),
            ..Default::default()
        };
        let mut folded = Vec::new();
        for cks in [&cas, &cbs] {
            let pds: Vec<&PatchData> = cks.iter().filter_map(|ck| ck.patching.get(&c)).collect();
            let name = &cks[0].name;
            let swept: Vec<(&PatchData, &PatchSweeps)> = pds
                .iter()
                .filter_map(|p| p.sweeps.as_ref().map(|s| (*p, s)))
                .collect();
            if swept.is_empty() {
                if let Some(why) = pds.first().and_then(|p| p.skipped.as_ref()) {
                    main.notes.push(format!(
                        "{name}: no maps: in every run {why} (first run's numbers)."
                    ));
                }
                continue;
            }
            if swept.len() < pds.len() {
                main.notes.push(format!(
                    "{name}: maps over the {} of {} runs whose gap is large enough to localise.",
                    swept.len(),
                    pds.len()
                ));
            }
            let mut all = patch_group(name, &swept, &ck_stem[name], &data.settings, figs);
            if let Some(f) = all.figures.first() {
                main.figures.push(f.clone());
            }
            all.figures.remove(0);
            folded.push(all);
        }
        groups.push(main);
        groups.extend(folded);
        for cks in [&cas, &cbs] {
            if let Some(g) = causal_group(cks, c, &ck_stem[&cks[0].name], figs) {
                groups.push(g);
            }
        }
    }
    groups.push(cross_group(p, &floors, &data.settings, stem, figs));
    groups.push(probe_group(p, &cas, &cbs, &data.settings, stem, figs));
    if let Some(g) = lens_group(p, &cas, &cbs, stem, figs) {
        groups.push(g);
    }
    html::Section {
        id: stem.to_string(),
        title,
        summary: p.summary.sentences.clone(),
        notes: p.notes.clone(),
        groups,
        ..Default::default()
    }
}

/// The causal checks of one checkpoint over contrast `c` (the runs that localised): a table
/// of each set's ablations and the steering dose–response, means over runs with the 95 %
/// interval across them (per-run values in data.json).
fn causal_group(
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
    let (clean_s, corrupt_s) = super::summary::causal::sides(c);
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

/// The first page: one row per question, generated from the data (every number in
/// data.json's `answers_summary.facts`).
fn answers_section(data: &ReportData) -> html::Section {
    let rows = data
        .answers
        .iter()
        .map(|a| {
            vec![
                a.question.clone(),
                a.verdict.clone(),
                a.key.clone(),
                a.location.clone(),
                a.causal.clone(),
                a.seeds.clone(),
                a.caveat.clone(),
            ]
        })
        .collect();
    html::Section {
        id: "answers".into(),
        title: "Answers: what the experiments found".into(),
        summary: vec!["Each row is read off the sections below (mean over seeds with the 95 % interval across them; per-seed values in data.json). 'Where' is the set the within-checkpoint patching names and the causal check ablates while the model samples; a verdict holds at its interval.".into()],
        tables: vec![html::Table {
            caption: "Answers".into(),
            headers: [
                "question",
                "verdict",
                "key number [95 % interval]",
                "where in the network",
                "causal check",
                "seeds in which it holds",
                "caveat",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }],
        ..Default::default()
    }
}

/// The opt-out anchoring dose–response: a table and bars of the leakage ratios per strength
/// (mean over runs, 95 % interval across them).
fn anchoring_section(data: &ReportData, figs: &mut Figs) -> html::Section {
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
        .map(|(a, b)| vec![Some(a.value), Some(b.value)])
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

/// One statistic of a row's intervals.
type Field = fn(&StatsEst) -> Est;

fn behaviour_group(
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
fn floor_of(
    floors: &[&FloorData],
    f: impl Fn(&super::data::PairRun) -> Option<f64>,
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

fn weight_group(p: &PairData, floors: &[&FloorData], stem: &str, figs: &mut Figs) -> html::Group {
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

/// The mean of several sweeps of one setup (one per seed): each cell's patched metric and the
/// clean and corrupted metrics averaged over seeds, for the aggregate map.
fn mean_sweep(sweeps: &[&Sweep]) -> Sweep {
    let n = sweeps.len() as f64;
    let first = sweeps[0];
    let avg =
        |f: &dyn Fn(&Sweep) -> f32| (sweeps.iter().map(|s| f(s) as f64).sum::<f64>() / n) as f32;
    Sweep {
        method: first.method,
        direction: first.direction,
        pos: first.pos,
        n_pairs: first.n_pairs,
        clean_metric: avg(&|s| s.clean_metric),
        corrupt_metric: avg(&|s| s.corrupt_metric),
        clean_pairs: Vec::new(),
        corrupt_pairs: Vec::new(),
        results: first
            .results
            .iter()
            .enumerate()
            .map(|(k, (site, g))| {
                let raw = (0..g.raw.len())
                    .map(|i| {
                        (sweeps
                            .iter()
                            .map(|s| s.results[k].1.raw[i] as f64)
                            .sum::<f64>()
                            / n) as f32
                    })
                    .collect();
                (
                    *site,
                    Grid {
                        shape: g.shape.clone(),
                        raw,
                        per_pair: Vec::new(),
                    },
                )
            })
            .collect(),
    }
}

/// Every patching map of one recipe over the runs (resid_pre denoising first), folded, with a
/// table of each run's top cells.
fn patch_group(
    name: &str,
    pds: &[(&PatchData, &PatchSweeps)],
    ck_stem: &str,
    s: &Settings,
    figs: &mut Figs,
) -> html::Group {
    let pd = pds[0].0;
    let mean_of = |f: fn(&PatchSweeps) -> &(Sweep, Option<SweepCi>)| {
        mean_sweep(&pds.iter().map(|p| &f(p.1).0).collect::<Vec<_>>())
    };
    let (den, noi) = (mean_of(|p| &p.denoise), mean_of(|p| &p.noise));
    let mut g = html::Group {
        title: format!(
            "All patching maps of {name} over the {} contrast ({} pairs per run, {} runs; mean clean {:.3}, corrupt {:.3})",
            pd.contrast,
            pd.n_pairs,
            pds.len(),
            den.clean_metric,
            den.corrupt_metric
        ),
        collapsed: true,
        ..Default::default()
    };
    let slot = pd
        .tokens
        .get(pd.contrast.position())
        .cloned()
        .unwrap_or_default();
    let contrast = format!(
        "{slot}, {} pairs × {} runs, gap {:.2} logits",
        pd.n_pairs,
        pds.len(),
        den.gap()
    );
    for (sw, pick) in [
        (
            &den,
            (|p: &PatchSweeps| &p.denoise) as fn(&PatchSweeps) -> &(Sweep, Option<SweepCi>),
        ),
        (&noi, |p: &PatchSweeps| &p.noise),
    ] {
        let dir = sw.direction.gerund();
        let metric = figures::sweep_scale(sw, s.min_gap);
        for site in Site::PATCHED {
            // Cells whose share's interval (over runs, or over pairs with one run) holds 0 are
            // inside the noise and drawn neutral.
            let neutral: Option<Vec<bool>> = sw.grid(site).map(|g| {
                let (t, w) = (g.shape[1], g.shape.get(2).copied().unwrap_or(1));
                (0..g.raw.len())
                    .map(|i| {
                        let (l, p, h) = (i / w / t, i / w % t, i % w);
                        let ests: Option<Vec<Est>> = pds
                            .iter()
                            .map(|x| {
                                let (sw, ci) = pick(x.1);
                                ci.as_ref()?.share_at(sw, site, l, p, h)
                            })
                            .collect();
                        ests.is_some_and(|e| {
                            let f = Fact::of_runs(&e);
                            f.lo <= 0.0 && f.hi >= 0.0
                        })
                    })
                    .collect()
            });
            let Some(fig) = figures::patch_map(
                name,
                &contrast,
                &pd.tokens,
                sw,
                site,
                s.min_gap,
                neutral.as_deref(),
            ) else {
                continue;
            };
            let (file, caption) = if site == Site::HeadOut {
                (
                    "heads".to_string(),
                    format!(
                        "{name} {dir} per head (hook_z): {metric}, one panel per layer (mean over runs; one colour scale for every map of this kind; cells whose interval holds 0 drawn white)."
                    ),
                )
            } else {
                (
                    site.to_string(),
                    format!(
                        "{name} {dir} {site}: {metric} of {} per layer and position (mean over runs; one colour scale for every map of this kind; cells whose interval holds 0 drawn white).",
                        pd.metric
                    ),
                )
            };
            g.figures.push(figs.add(
                &format!("patch-{ck_stem}-{}-{dir}-{file}", pd.contrast),
                caption,
                || fig,
            ));
        }
    }
    // Each run's top cells, so the spread over seeds is visible.
    let cell = |sw: &Sweep, ci: &Option<SweepCi>, sites: &[Site]| -> String {
        let best = sites
            .iter()
            .filter_map(|&c| sw.best_cell(c, s.min_gap).map(|x| (c, x)))
            .max_by(|x, y| x.1.share.total_cmp(&y.1.share));
        match best {
            Some((site, c)) => {
                let iv = ci
                    .as_ref()
                    .and_then(|ci| ci.share_at(sw, site, c.layer, c.position, c.head))
                    .map_or(String::new(), |e| {
                        format!(" [{:.0}, {:.0}] %", 100.0 * e.lo, 100.0 * e.hi)
                    });
                let head = if site == Site::HeadOut {
                    format!(" H{}", c.head)
                } else {
                    String::new()
                };
                format!(
                    "{site} L{}{head} pos {}: {:.0} %{iv}",
                    c.layer,
                    c.position,
                    100.0 * c.share
                )
            }
            None => "-".into(),
        }
    };
    g.tables.push(html::Table {
        caption: format!("Top cells of {name} in each run (share of the clean–corrupt gap [95 % bootstrap interval over the pairs])"),
        headers: ["run", "top head (denoising)", "top MLP (denoising)", "most necessary attention / MLP output (noising)"]
            .map(String::from)
            .to_vec(),
        rows: pds
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                vec![
                    i.to_string(),
                    cell(&p.denoise.0, &p.denoise.1, &[Site::HeadOut]),
                    cell(&p.denoise.0, &p.denoise.1, &[Site::MlpOut]),
                    cell(&p.noise.0, &p.noise.1, &[Site::AttnOut, Site::MlpOut]),
                ]
            })
            .collect(),
    });
    g
}

fn cross_group(
    p: &PairData,
    floors: &[&FloorData],
    s: &Settings,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let mut g = html::Group {
        title: format!(
            "Cross-checkpoint patching: {}'s activations into {}",
            p.a, p.b
        ),
        ..Default::default()
    };
    if let Some(why) = p.runs.iter().find_map(|r| r.cross_refused.as_ref()) {
        g.notes.push(format!("Not run: {why}; linear CKA per layer is in the summary and data.json (pairs[].runs[].cka)."));
        return g;
    }
    let cis: Option<Vec<_>> = p.runs.iter().map(|r| r.cross_ci.as_ref()).collect();
    let Some(cis) = cis.filter(|c| !c.is_empty()) else {
        return g;
    };
    let layers = p.runs[0].cross.layers.clone();
    // The slot-specific part: contrast prompts minus control prompts, per layer.
    let sps: Option<Vec<_>> = p.runs.iter().map(|r| r.specific.as_ref()).collect();
    if let (Some(sps), Some(control)) = (sps.filter(|v| !v.is_empty()), &p.prompts.control_about) {
        let sites: Vec<figures::CrossSite> = sps[0]
            .moved
            .iter()
            .enumerate()
            .map(|(k, (site, v))| {
                let per_layer = (0..v.len())
                    .map(|l| {
                        let f =
                            Fact::of_runs(&sps.iter().map(|x| x.moved[k].1[l]).collect::<Vec<_>>());
                        let (value, err) = mark(&f);
                        (value, err, None)
                    })
                    .collect();
                (*site, per_layer)
            })
            .collect();
        let gs = Fact::of_runs(&sps.iter().map(|x| x.gap).collect::<Vec<_>>());
        let title = format!(
            "{} into {}: slot-specific move (contrast − control)",
            p.a, p.b
        );
        if let Some(bars) = figures::cross_bars(&title, &layers, &sites) {
            g.figures.push(figs.add(
                &format!("{stem}-cross-specific"),
                format!(
                    "Difference of differences: the move of {}'s metric when {}'s attention or MLP output of one layer (all positions) is patched in, on {} minus on the control prompts ({control}), paired over prompts (mean over runs; error bars: 95 % interval). The slot-specific gap (contrast gap minus control gap) is {}. Bars whose interval holds 0 are not specific to the slot.",
                    p.b, p.a, p.prompts.about, f3(&gs)
                ),
                || AnyFigure::Bars(bars),
            ));
        }
    }
    let sites: Vec<figures::CrossSite> = cis[0]
        .moved
        .iter()
        .enumerate()
        .map(|(k, (site, v))| {
            let per_layer = (0..v.len())
                .map(|l| {
                    let f = Fact::of_runs(&cis.iter().map(|c| c.moved[k].1[l]).collect::<Vec<_>>());
                    let (value, err) = mark(&f);
                    // A move smaller than how far the metric differs between two seeds of
                    // one recipe is within seed noise (patching across seeds themselves would
                    // cross bases, so the floor is their metric gap).
                    let floor = floor_of(floors, |r| r.cross_ci.as_ref().map(|c| c.gap.value));
                    (value, err, floor)
                })
                .collect();
            (*site, per_layer)
        })
        .collect();
    let gap = Fact::of_runs(&cis.iter().map(|c| c.gap).collect::<Vec<_>>());
    let title = format!("{} into {}: move of the metric", p.a, p.b);
    match figures::cross_bars(&title, &layers, &sites) {
        Some(bars) if gap.value.abs() >= s.min_gap => g.figures.push(figs.add(
            &format!("{stem}-cross"),
            format!(
                "How far patching {}'s activation (all positions) into {} moves {}'s {} per layer, on {} {} (the A − B gap is {}; mean over runs; error bars: 95 % interval; black line: the seed floor, how far the metric differs between two seeds of one recipe).",
                p.a, p.b, p.b, p.metric_about, p.runs[0].cross.n_prompts, p.prompts.about, f3(&gap)
            ),
            || AnyFigure::Bars(bars),
        )),
        _ => g.notes.push(format!(
            "{} and {} give almost the same metric on these prompts (A − B gap {}): no figure.",
            p.a, p.b, f3(&gap)
        )),
    }
    g
}

/// Probe curves of one recipe over runs: means with their interval across seeds (one run: its
/// bootstrap band).
fn probe_lines(cks: &[&CheckpointData], label: crate::analysis::probes::Label) -> ProbeLines {
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

fn probe_group(
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

fn lens_group(
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

/// The seed-null floors: one row per floor with its summary numbers.
fn floor_section(floors: &[FloorData]) -> html::Section {
    let cell = |f: &FloorData, k: &str| f.summary.facts.get(k).map_or("-".into(), f3);
    html::Section {
        id: "seed-floors".into(),
        title: "Seed noise floors: one recipe at two seeds".into(),
        summary: floors.iter().flat_map(|f| f.summary.sentences.clone()).collect(),
        tables: vec![html::Table {
            caption: "Each floor is a recipe at consecutive seeds, read with the prompts, metric and probe label of the pairs it serves (mean over seed pairs [range]); a pair's difference counts only beyond the larger floor of its two recipes".into(),
            headers: ["floor", "seed pairs", "|ΔP(E)|", "largest relative weight change", "|metric gap| (cross-checkpoint)"]
                .map(String::from)
                .to_vec(),
            rows: floors
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.runs.len().to_string(),
                        cell(f, "behaviour.p_e_gap"),
                        cell(f, "weight_diff.max.relative"),
                        cell(f, "cross.gap"),
                    ]
                })
                .collect(),
        }],
        ..Default::default()
    }
}
