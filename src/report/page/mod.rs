//! The report page: one section per pair (summary, behaviour, weight diff, patching maps,
//! cross-checkpoint patching, probes, logit lens) and one for the seed-null floors. Figures
//! aggregate the seeds (means, with 95 % intervals as error bars or bands and the seed floor as
//! a marked line); per-seed values stay in data.json. Each figure is drawn once through
//! `view::figures`. Owns layout and captions only; must not compute an analysis.

use super::Progress;
use crate::report::data::{
    CheckpointData, Fact, FloorData, PairData, PatchData, PatchSweeps, ReportData,
};
use crate::view::html;
use crate::view::plot::{self, AnyFigure};
use crate::{pool, Error, Result};
use std::collections::{BTreeMap, BTreeSet};

mod behaviour;
mod causal;
mod crosscoders;
mod patching;
mod probes;
use behaviour::{behaviour_group, weight_group};
use causal::{anchoring_section, causal_group};
use patching::{cross_group, patch_group};
use probes::{lens_group, probe_group};

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
    if let Some(s) = crosscoders::section(data, &mut figs) {
        sections.push(s);
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
