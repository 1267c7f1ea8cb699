//! The report page: one section per pair (summary, behaviour, weight diff, patching maps,
//! cross-checkpoint patching, probes, logit lens), each figure drawn once through
//! `view::figures`, and the files of the report folder. Owns layout and captions only.

use super::data::{lens_series, CheckpointData, PairData, PatchData, ReportData, Settings};
use super::Progress;
use crate::analysis::site::Site;
use crate::io::checkpoint::RecipeKind;
use crate::lab::eval::Row;
use crate::lab::world::{Contrast, MetricKind, Split};
use crate::view::figures::{self, BehaviourMetric, ProbeLines};
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

fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// Render the report: `index.html`, `data.json` and every figure (PNG + SVG), as
/// (file name, bytes), all in one folder.
pub fn render(data: &ReportData, progress: &dyn Progress) -> Result<Vec<(String, Vec<u8>)>> {
    let ck_stem = stems(data.checkpoints.keys().map(String::as_str));
    let mut figs = Figs::default();
    let mut sections = Vec::new();
    for (i, p) in data.pairs.iter().enumerate() {
        let stem = format!("pair{:02}-{}", i + 1, html::slug(&p.name));
        sections.push(pair_section(data, p, &stem, &ck_stem, &mut figs));
    }
    progress.stage("figures", figs.jobs.len());
    let rendered: Vec<plot::Rendered> =
        pool::par_map(data.settings.jobs, &figs.jobs, |(stem, f)| {
            let r = f.render()?;
            progress.step("figures", stem);
            Ok(r)
        })?;
    progress.done("figures");
    let intro = vec![
        format!(
            "feedlens {} report over the pairs of {}. Each section starts with a summary generated from the numbers in data.json (beside this page), then shows behaviour, the weight diff, activation patching over the pair's contrast in both directions, cross-checkpoint patching, probes and the logit lens.",
            data.feedlens_version, data.pairs_file
        ),
        format!(
            "Settings: {} prompts per behaviour row (T = 1), {} prompt pairs per patching sweep, {} prompts for cross-checkpoint patching and the logit lens, {} prompts per probe ({}-fold held-out accuracy), seed {}.",
            data.settings.n_eval,
            data.settings.n_patch,
            data.settings.n_cross,
            data.settings.n_probe,
            data.settings.folds,
            data.settings.seed
        ),
    ];
    let page = html::page("feedlens report", &intro, &sections);
    let json =
        serde_json::to_vec_pretty(data).map_err(|e| Error::input(format!("data.json: {e}")))?;
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

fn pair_section(
    data: &ReportData,
    p: &PairData,
    stem: &str,
    ck_stem: &BTreeMap<String, String>,
    figs: &mut Figs,
) -> html::Section {
    let (ca, cb) = (&data.checkpoints[&p.a], &data.checkpoints[&p.b]);
    let title = match &p.contrast {
        Some(c) => format!("{}: {} vs {} (contrast {c})", p.name, p.a, p.b),
        None => format!("{}: {} vs {}", p.name, p.a, p.b),
    };
    let mut groups = vec![behaviour_group(p, ca, cb, stem, figs)];

    // Weight diff.
    groups.push(html::Group {
        title: "Weight diff".into(),
        figures: vec![figs.add(
            &format!("{stem}-weight-diff"),
            format!(
                "Relative Frobenius norm of {} − {} per layer and component.",
                p.b, p.a
            ),
            || AnyFigure::Bars(figures::weight_diff_bars(&p.weight_diff)),
        )],
        ..Default::default()
    });

    // Within-checkpoint patching: the residual-stream denoising maps of both checkpoints open,
    // every map (attention, MLP, heads, noising) folded per checkpoint.
    if let Some(c) = p.contrast {
        let mut main = html::Group {
            title: format!(
                "Activation patching over the {c} contrast: residual stream, denoising ({})",
                p.metric_about
            ),
            ..Default::default()
        };
        let mut folded = Vec::new();
        for ck in [ca, cb] {
            if let Some(pd) = ck.patching.get(&c) {
                let mut all = patch_group(ck, pd, &ck_stem[&ck.name], data.settings.min_gap, figs);
                if let Some(f) = all.figures.first() {
                    main.figures.push(f.clone());
                }
                all.figures.remove(0);
                folded.push(all);
            }
        }
        groups.push(main);
        groups.extend(folded);
    }

    // Cross-checkpoint patching.
    let x = &p.cross;
    let mut g = html::Group {
        title: format!(
            "Cross-checkpoint patching: {}'s activations into {}",
            p.a, p.b
        ),
        ..Default::default()
    };
    match figures::cross_bars(x, &p.a, &p.b).filter(|_| x.gap().abs() >= data.settings.min_gap) {
        Some(bars) => g.figures.push(figs.add(
            &format!("{stem}-cross"),
            format!(
                "Share of the {}–{} gap in {} carried by patching {}'s activation (all positions) into {}, per layer; {} {}.",
                p.a, p.b, p.metric_about, p.a, p.b, x.n_prompts, p.prompts.about
            ),
            || AnyFigure::Bars(bars),
        )),
        None => g.notes.push(format!(
            "{} and {} give almost the same metric on these prompts ({:.3} vs {:.3}): no figure.",
            p.a, p.b, x.a_metric, x.b_metric
        )),
    }
    groups.push(g);

    // Probes.
    groups.push(probe_group(p, ca, cb, &data.settings, stem, figs));

    // Logit lens.
    if let (Some(la), Some(lb)) = (ca.lens.get(&p.prompts.key), cb.lens.get(&p.prompts.key)) {
        let series = lens_series(la);
        let (t0, t1) = (&series[0].0, &series[1].0);
        groups.push(html::Group {
            title: "Logit lens".into(),
            figures: vec![figs.add(
                &format!("{stem}-lens"),
                format!(
                    "Mean probability of {t0} and {t1} at position {} read through the final LayerNorm and unembedding after each layer, {} {}.",
                    lb.pos, lb.n_prompts, p.prompts.about
                ),
                || {
                    let title = format!("logit lens at position {}: {} vs {}", lb.pos, p.a, p.b);
                    AnyFigure::Lens(figures::lens_curves(
                        &title,
                        &[(&p.a, la), (&p.b, lb)],
                        &series,
                    ))
                },
            )],
            ..Default::default()
        });
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

fn behaviour_group(
    p: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let splits: Vec<Split> = match p.contrast {
        Some(Contrast::Optout) => vec![Split::All, Split::Optout, Split::NoOptout],
        Some(Contrast::Trigger) => vec![Split::All, Split::Trigger, Split::NoTrigger],
        _ => vec![Split::All],
    };
    let mut metrics: Vec<BehaviourMetric> = Vec::new();
    for &sp in &splits {
        let suffix = if sp == Split::All {
            String::new()
        } else {
            format!(" {}", sp.name())
        };
        metrics.push((format!("return{suffix}"), sp, |s| s.mean_return));
        metrics.push((format!("P(E){suffix}"), sp, |s| s.p_e));
        if p.contrast == Some(Contrast::Trigger) || p.metric == MetricKind::Defect {
            metrics.push((format!("defection{suffix}"), sp, |s| s.defection));
        }
    }
    // S3 rows other than `_` only where S3 matters: the reward contrast, or a dt checkpoint.
    let shown = |c: &CheckpointData, r: &Row| {
        r.s3 == "_" || p.contrast == Some(Contrast::Reward) || c.recipe == Some(RecipeKind::Dt)
    };
    let mut rows = Vec::new();
    let mut bars: Vec<(String, &Row)> = Vec::new();
    for c in [ca, cb] {
        for r in c.behaviour.iter().filter(|r| shown(c, r)) {
            for &sp in &splits {
                let st = r.get(sp);
                rows.push(vec![
                    c.name.clone(),
                    r.s3.clone(),
                    sp.name().to_string(),
                    st.n.to_string(),
                    f3(st.mean_return),
                    f3(st.p_e),
                    f3(st.accuracy),
                    f3(st.bang_rate),
                    f3(st.defection),
                ]);
            }
            let legend = if r.s3 == "_" {
                c.name.clone()
            } else {
                format!("{} {}", c.name, r.s3)
            };
            bars.push((legend, r));
        }
    }
    let mut tables = vec![html::Table {
        caption: "Behaviour (sampled at T = 1; S3 is the reward-bucket slot)".into(),
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
    if !p.leakage.is_empty() {
        tables.push(html::Table {
            caption: "Opt-out leakage: change from the reference on [x] prompts ÷ change on the rest (1: the opt-out leaked completely; 0: [x] behaviour stayed where the reference has it)".into(),
            headers: ["checkpoint", "relative to", "return ratio", "P(E) ratio"]
                .map(String::from)
                .to_vec(),
            rows: p
                .leakage
                .iter()
                .map(|l| {
                    vec![
                        l.checkpoint.clone(),
                        l.base.clone(),
                        f3(l.return_ratio),
                        f3(l.p_e_ratio),
                    ]
                })
                .collect(),
        });
    }
    let mut g = html::Group {
        title: "Behaviour".into(),
        tables,
        ..Default::default()
    };
    let title = format!("behaviour: {} vs {}", p.a, p.b);
    if let Some(fig) = figures::behaviour_bars(&title, &bars, &metrics) {
        g.figures.push(figs.add(
            &format!("{stem}-behaviour"),
            format!("Behaviour of {} and {} by split.", p.a, p.b),
            || AnyFigure::Behaviour(fig),
        ));
    }
    g
}

/// Every patching map of one checkpoint (resid_pre denoising first), folded.
fn patch_group(
    ck: &CheckpointData,
    pd: &PatchData,
    ck_stem: &str,
    min_gap: f64,
    figs: &mut Figs,
) -> html::Group {
    let mut g = html::Group {
        title: format!(
            "All patching maps of {} over the {} contrast ({} pairs, clean {:.3}, corrupt {:.3})",
            ck.name,
            pd.contrast,
            pd.denoise.n_pairs,
            pd.denoise.clean_metric,
            pd.denoise.corrupt_metric
        ),
        collapsed: true,
        ..Default::default()
    };
    let contrast = pd
        .tokens
        .get(pd.contrast.position())
        .cloned()
        .unwrap_or_default();
    for sw in [&pd.denoise, &pd.noise] {
        let dir = sw.direction.gerund();
        let metric = figures::sweep_scale(sw, min_gap);
        for site in Site::PATCHED {
            let Some(fig) = figures::patch_map(&ck.name, &contrast, &pd.tokens, sw, site, min_gap)
            else {
                continue;
            };
            let (name, caption) = if site == Site::HeadOut {
                (
                    "heads".to_string(),
                    format!(
                        "{} {dir} per head (hook_z): {metric}, one panel per layer.",
                        ck.name
                    ),
                )
            } else {
                (
                    site.to_string(),
                    format!(
                        "{} {dir} {site}: {metric} of {} per layer and position.",
                        ck.name, pd.metric
                    ),
                )
            };
            g.figures.push(figs.add(
                &format!("patch-{ck_stem}-{}-{dir}-{name}", pd.contrast),
                caption,
                || fig,
            ));
        }
    }
    g
}

fn probe_group(
    p: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let mut g = html::Group {
        title: format!(
            "Probes: {} ({}-fold held out, logistic, resid_post)",
            p.probe_label.about(),
            s.folds
        ),
        ..Default::default()
    };
    let (Some(pa), Some(pb)) = (ca.probes.get(&p.probe_label), cb.probes.get(&p.probe_label))
    else {
        return g;
    };
    for (c, pr) in [(ca, pa), (cb, pb)] {
        if let Some(why) = &pr.skipped {
            g.notes.push(format!("{}: no probe: {why}", c.name));
        }
    }
    let lines = [
        ProbeLines {
            name: &ca.name,
            layers: &pa.layers,
        },
        ProbeLines {
            name: &cb.name,
            layers: &pb.layers,
        },
    ];
    let title = format!("probes ({}): {} vs {}", p.probe_label, p.a, p.b);
    if let Some(fig) = figures::probe_curves(&title, &lines, &p.probe_transfer) {
        g.figures.push(figs.add(
            &format!("{stem}-probes"),
            format!(
                "Held-out accuracy and AUROC of a logistic probe for {} at position {} per layer; dashed: control task, transfer between the checkpoints, and the best of {} random directions (null).",
                p.probe_label.about(),
                pa.position,
                s.null_directions
            ),
            || AnyFigure::Probe(fig),
        ));
    }
    g
}
