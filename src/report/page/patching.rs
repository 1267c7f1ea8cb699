//! The patching groups of a pair's section: within-checkpoint maps per contrast (folded over
//! seeds) and cross-checkpoint patching. Owns layout and captions only; must not compute an
//! analysis.

use super::behaviour::floor_of;
use super::{f3, mark, Figs};
use crate::analysis::patching::{Grid, Sweep, SweepCi};
use crate::analysis::site::Site;
use crate::report::data::{Fact, FloorData, PairData, PatchData, PatchSweeps, Settings};
use crate::stats::Est;
use crate::view::figures;
use crate::view::html;
use crate::view::plot::AnyFigure;

/// The mean of several sweeps of one setup (one per seed): each cell's patched metric and the
/// clean and corrupted metrics averaged over seeds, for the aggregate map.
pub(super) fn mean_sweep(sweeps: &[&Sweep]) -> Sweep {
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
pub(super) fn patch_group(
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

pub(super) fn cross_group(
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
        let sites = cross_sites(&sps.iter().map(|x| &x.moved[..]).collect::<Vec<_>>(), None);
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
    // A move smaller than how far the metric differs between two seeds of one recipe is within
    // seed noise (patching across seeds themselves would cross bases, so the floor is their
    // metric gap).
    let floor = floor_of(floors, |r| r.cross_ci.as_ref().map(|c| c.gap.value));
    let sites = cross_sites(&cis.iter().map(|c| &c.moved[..]).collect::<Vec<_>>(), floor);
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

/// Per site and layer, the move over runs (`moved[run]`: per site, per layer) as a bar with its
/// 95 % interval and the seed floor line, if any.
fn cross_sites(moved: &[&[(Site, Vec<Est>)]], floor: Option<f64>) -> Vec<figures::CrossSite> {
    moved[0]
        .iter()
        .enumerate()
        .map(|(k, (site, v))| {
            let per_layer = (0..v.len())
                .map(|l| {
                    let f = Fact::of_runs(&moved.iter().map(|m| m[k].1[l]).collect::<Vec<_>>());
                    let (value, err) = mark(&f);
                    (value, err, floor)
                })
                .collect();
            (*site, per_layer)
        })
        .collect()
}
