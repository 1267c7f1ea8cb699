//! `feedlens report` over your own checkpoints and prompts (any family): a pairs file whose
//! pairs give `clean` / `corrupt` prompt texts and a metric instead of a toy-world contrast.
//! Per pair: the weight diff, the patching sweep of A and of B on the prompt pairs (every
//! component, denoising, bootstrap intervals over the pairs), cross-checkpoint patching A → B,
//! and the logit lens on the clean prompts; as `data.json`, figures and one HTML page. The
//! numbers come from `analysis`, the figures from `view`; no toy world, no sampling.

use crate::analysis::patching::{
    self, patch_models, CrossSpec, Direction, Method, Metric, Pair, Setup,
};
use crate::analysis::site::Site;
use crate::analysis::{diff, lens};
use crate::io::checkpoint::{self, Checkpoint};
use crate::stats::{mean_est, Est};
use crate::view::figures::{self, CrossSite};
use crate::view::html::{self, Figure, Section, Table};
use crate::view::plot::AnyFigure;
use crate::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Bootstrap resamples of every interval here.
const RESAMPLES: usize = 1000;
/// The most prompt pairs one pair may name (each is a row of every batched forward).
pub const MAX_PROMPTS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    seed: Option<u64>,
    pair: Vec<RawPair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    name: String,
    a: String,
    b: String,
    clean: Vec<String>,
    corrupt: Vec<String>,
    metric: String,
}

/// One pair of checkpoints compared on prompts of your own.
#[derive(Clone, Debug)]
pub struct PromptPair {
    /// Pair name.
    pub name: String,
    /// Checkpoint A (the reference), resolved against the file's folder.
    pub a: PathBuf,
    /// Checkpoint B.
    pub b: PathBuf,
    /// Clean prompt texts.
    pub clean: Vec<String>,
    /// Corrupted prompt texts (same count; each the same length in tokens as its clean one).
    pub corrupt: Vec<String>,
    /// `logit-diff:A,B` or `logprob:T`, tokens as the vocabulary spells them.
    pub metric: String,
}

/// A pairs file of [`PromptPair`]s.
#[derive(Clone, Debug)]
pub struct PromptPairs {
    /// The file.
    pub path: PathBuf,
    /// Seed of every bootstrap.
    pub seed: u64,
    /// The pairs, in file order.
    pub pairs: Vec<PromptPair>,
}

impl PromptPairs {
    /// Whether the TOML text is a prompt-pairs file (its pairs name `clean` prompts).
    pub fn is_prompt_file(text: &str) -> bool {
        toml::from_str::<toml::Value>(text).is_ok_and(|v| {
            v.get("pair")
                .and_then(|p| p.as_array())
                .is_some_and(|ps| ps.iter().any(|p| p.get("clean").is_some()))
        })
    }

    /// Parse a prompt-pairs file; errors name the file and the pair.
    pub fn parse(text: &str, path: &Path) -> Result<PromptPairs> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| Error::file(path, format!("invalid pairs file: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut pairs: Vec<PromptPair> = Vec::new();
        for p in raw.pair {
            let bad = |m: String| Error::file(path, format!("pair '{}': {m}", p.name));
            if pairs.iter().any(|q| q.name == p.name) {
                return Err(bad("named twice".into()));
            }
            if p.clean.is_empty() || p.clean.len() != p.corrupt.len() {
                return Err(bad(format!(
                    "needs as many corrupt prompts as clean ones, at least one ({} clean, {} corrupt)",
                    p.clean.len(),
                    p.corrupt.len()
                )));
            }
            if p.clean.len() > MAX_PROMPTS {
                return Err(bad(format!(
                    "{} prompt pairs; at most {MAX_PROMPTS}",
                    p.clean.len()
                )));
            }
            pairs.push(PromptPair {
                a: dir.join(&p.a),
                b: dir.join(&p.b),
                name: p.name,
                clean: p.clean,
                corrupt: p.corrupt,
                metric: p.metric,
            });
        }
        if pairs.is_empty() {
            return Err(Error::file(path, "names no [[pair]]"));
        }
        Ok(PromptPairs {
            path: path.to_path_buf(),
            seed: raw.seed.unwrap_or(0),
            pairs,
        })
    }

    /// Every input (the file and each checkpoint), for the output checks.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone()];
        for p in &self.pairs {
            v.extend([p.a.clone(), p.b.clone()]);
        }
        v
    }
}

/// `v` formatted as "mean [lo, hi] (n = N)".
fn est_text(e: &Est, dec: usize) -> String {
    if e.n > 1 {
        format!(
            "{:.dec$} [{:.dec$}, {:.dec$}] (n = {})",
            e.value, e.lo, e.hi, e.n
        )
    } else {
        format!("{:.dec$} (n = 1)", e.value)
    }
}

/// The files of a figure (`NAME.png`, `NAME.svg`) and its entry on the page.
fn figure(
    fig: &AnyFigure,
    name: &str,
    caption: String,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<Figure> {
    let r = fig.render()?;
    files.push((format!("{name}.png"), r.png));
    files.push((format!("{name}.svg"), r.svg.into_bytes()));
    Ok(Figure {
        png: format!("{name}.png"),
        svg: format!("{name}.svg"),
        caption,
    })
}

/// The prompts of `p` tokenised by B's tokenizer, as patching pairs.
fn pairs_of(p: &PromptPair, b: &Checkpoint, metric: &Metric) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    for (i, (c, k)) in p.clean.iter().zip(&p.corrupt).enumerate() {
        let what = format!("pair '{}' prompt {}", p.name, i + 1);
        let (clean, corrupt) = (b.encode(c, &what)?, b.encode(k, &what)?);
        if clean.len() != corrupt.len() {
            input_err!(
                "{what}: the clean prompt is {} tokens and the corrupt one {}; patching needs equal lengths",
                clean.len(),
                corrupt.len()
            );
        }
        if out
            .first()
            .is_some_and(|q: &Pair| q.clean.len() != clean.len())
        {
            input_err!("{what}: {} tokens, the first prompt {}; every prompt of a pair must have one length", clean.len(), out[0].clean.len());
        }
        out.push(Pair {
            clean,
            corrupt,
            metric: metric.clone(),
        });
    }
    Ok(out)
}

/// One pair's data and page section (its figures appended to `files`).
fn analyse_pair(
    p: &PromptPair,
    seed: u64,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<(Value, Section)> {
    let (a, b) = (checkpoint::load(&p.a)?, checkpoint::load(&p.b)?);
    if let Some(d) = a.model.config().shape_difference(b.model.config()) {
        input_err!("pair '{}': A and B differ in shape ({d})", p.name);
    }
    let metric = Metric::parse(&p.metric, |t| {
        b.token(t, &format!("pair '{}' metric", p.name))
    })?;
    let pairs = pairs_of(p, &b, &metric)?;
    let n = pairs.len();
    let toks: Vec<String> = metric
        .tokens()
        .iter()
        .map(|&t| format!("'{}'", b.label(t)))
        .collect();
    let shown = format!("{metric} (ids of {})", toks.join(", "));
    let slug = html::slug(&p.name);
    let mut sec = Section {
        id: slug.clone(),
        title: format!("{}: {} → {}", p.name, a.name(), b.name()),
        ..Section::default()
    };
    sec.summary.push(format!(
        "{}. Metric {shown} on {n} prompt pair{}; intervals are 95 % bootstrap intervals over the prompt pairs ({RESAMPLES} resamples, seed {seed}).",
        a.model.config().describe(),
        if n == 1 { "" } else { "s" }
    ));

    // Weight diff.
    let wd = diff::weight_diff(&a.model, &a.name(), &b.model, &b.name())?;
    sec.summary
        .push(format!("Weights: {}.", wd.headline_text()));
    let title = format!("weight diff: {} vs {}", b.name(), a.name());
    let bars = figures::weight_diff_bars(&title, &figures::weight_bars_of(&wd, false), false);
    sec.figures.push(figure(
        &AnyFigure::Bars(bars),
        &format!("{slug}-weights"),
        "‖B − A‖ / ‖A‖ per layer and component (a component's weight and bias together).".into(),
        files,
    )?);

    // Patching in each checkpoint.
    let tokens = figures::position_labels(&pairs, |i| b.label(i), |q| format!("p{q}"));
    let contrast = figures::contrast_label(&pairs, &tokens);
    let mut sweeps = serde_json::Map::new();
    let mut metric_rows = Vec::new();
    for (ck, side) in [(&a, "A"), (&b, "B")] {
        let setup = Setup::new(&ck.model, pairs.clone(), None, Direction::Denoise)?;
        let report = patching::report(&ck.model, &setup, &Site::PATCHED, &[Method::Exact], 3)?;
        let sw = report.main();
        let ci = sw.intervals(RESAMPLES, seed);
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let clean = mean_est(&f(&sw.clean_pairs), RESAMPLES, seed);
        let corrupt = mean_est(&f(&sw.corrupt_pairs), RESAMPLES, seed);
        metric_rows.push(vec![
            format!("{side}: {}", ck.name()),
            est_text(&clean, 3),
            est_text(&corrupt, 3),
        ]);
        let mut v = report.to_json();
        if let Some(ci) = &ci {
            v["intervals"] = ci.to_json(sw);
        }
        sweeps.insert(side.into(), v);
        let withheld = ci.as_ref().and_then(|c| c.share_withheld.clone());
        if let Some(w) = &withheld {
            sec.notes.push(format!("{side} ({}): {w}", ck.name()));
        }
        for site in Site::PATCHED {
            // Cells whose share interval holds 0 are drawn white.
            let neutral: Option<Vec<bool>> = ci.as_ref().and_then(|c| {
                let (_, v) = c.share.as_ref()?.iter().find(|(s, _)| *s == site)?;
                Some(v.iter().map(|e| e.lo <= 0.0 && e.hi >= 0.0).collect())
            });
            let Some(fig) = figures::patch_map(
                &ck.name(),
                &contrast,
                &tokens,
                sw,
                site,
                patching::DEFAULT_MIN_GAP,
                neutral.as_deref(),
            ) else {
                continue;
            };
            let best = sw.best_cell(site, patching::DEFAULT_MIN_GAP);
            let caption = match (best, &ci) {
                (Some(c), Some(ci)) => match ci.share_at(sw, site, c.layer, c.position, c.head) {
                    Some(e) => format!(
                        "{side}, {site}: largest share of the gap restored at layer {} position {}{}: {}; white cells' intervals hold 0.",
                        c.layer,
                        c.position,
                        if site == Site::HeadOut { format!(" head {}", c.head) } else { String::new() },
                        est_text(&e, 2)
                    ),
                    None => format!("{side}, {site}: shares withheld (the gap's interval holds 0)."),
                },
                _ => format!("{side}, {site}: raw metric per cell (the gap is too small to share)."),
            };
            sec.figures.push(figure(
                &fig,
                &format!("{slug}-{side}-{site}"),
                caption,
                files,
            )?);
        }
    }
    sec.tables.push(Table {
        caption: format!(
            "The metric ({shown}) unpatched, mean over the {n} prompt pairs [95 % interval]"
        ),
        headers: vec![
            "checkpoint".into(),
            "clean prompts".into(),
            "corrupt prompts".into(),
        ],
        rows: metric_rows,
    });

    // Cross-checkpoint patching A → B on the clean prompts.
    let prompts: Vec<Vec<u32>> = pairs.iter().map(|q| q.clean.clone()).collect();
    let metrics = vec![metric.clone(); n];
    let comps = vec![Site::ResidPre, Site::AttnOut, Site::MlpOut];
    let cross = patch_models(
        &a.model,
        &b.model,
        &prompts,
        &metrics,
        &CrossSpec {
            comps: comps.clone(),
            pos: None,
            position: None,
            layer: None,
        },
    )?;
    let pp = &cross.per_prompt;
    let moves: Vec<CrossSite> = comps
        .iter()
        .enumerate()
        .map(|(s, site)| {
            let per_layer = (0..cross.layers.len())
                .map(|l| {
                    let d: Vec<f64> = pp.patched[s][l]
                        .iter()
                        .zip(&pp.b)
                        .map(|(x, y)| (x - y) as f64)
                        .collect();
                    let e = mean_est(&d, RESAMPLES, seed);
                    (e.value, (n > 1).then_some((e.lo, e.hi)), None)
                })
                .collect();
            (*site, per_layer)
        })
        .collect();
    let title = format!(
        "{} → {}: B's metric moved by A's activation",
        a.name(),
        b.name()
    );
    if let Some(bars) = figures::cross_bars(&title, &cross.layers, &moves) {
        sec.figures.push(figure(
            &AnyFigure::Bars(bars),
            &format!("{slug}-cross"),
            format!("Patching A's activation (every position of the clean prompts) into B, per layer and component: patched − B's metric, mean over {n} prompts with its 95 % interval."),
            files,
        )?);
    }

    // Logit lens of both on the clean prompts, for the metric's tokens.
    let toks = metric.tokens();
    let la = lens::logit_lens(&a.model, &prompts, None, &toks)?;
    let lb = lens::logit_lens(&b.model, &prompts, None, &toks)?;
    let labels: Vec<String> = la.tokens.iter().map(|&i| b.label(i)).collect();
    let series = figures::lens_series_per_token(&la, &labels);
    let names: Vec<String> = series.iter().map(|(s, _)| s.clone()).collect();
    let curves = |r: &lens::LensResult| -> Vec<figures::Curve> {
        series
            .iter()
            .map(|(_, t)| figures::Curve::plain(figures::lens_values(r, t)))
            .collect()
    };
    let fig = AnyFigure::Lens(figures::lens_curves(
        &format!(
            "logit lens at the last position: {} and {}",
            a.name(),
            b.name()
        ),
        &la.points,
        &names,
        &[(a.name(), curves(&la)), (b.name(), curves(&lb))],
    ));
    sec.figures.push(figure(
        &fig,
        &format!("{slug}-lens"),
        format!("Mean probability of the metric's tokens read off the residual after every layer (final norm and unembedding), over the {n} clean prompts."),
        files,
    )?);

    let data = json!({
        "name": p.name, "a": a.name(), "b": b.name(),
        "family": a.model.config().arch.family, "describe": a.model.config().describe(),
        "metric": metric.to_string(), "n_prompts": n,
        "clean": p.clean, "corrupt": p.corrupt,
        "weight_diff": wd, "patching": sweeps, "cross": cross.to_json(),
        "lens": {"a": la, "b": lb, "labels": labels},
    });
    Ok((data, sec))
}

/// Every pair's analyses → the report's files (`index.html`, `data.json`, figures).
pub fn run(pp: &PromptPairs) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut data = Vec::new();
    let mut sections = Vec::new();
    for p in &pp.pairs {
        let (d, s) = analyse_pair(p, pp.seed, &mut files)?;
        data.push(d);
        sections.push(s);
    }
    let intro = vec![format!(
        "{} pair{} of checkpoints from {}, compared on prompts of your own: weight diff, activation patching in each checkpoint, cross-checkpoint patching and the logit lens. Every interval is a 95 % bootstrap interval over the prompt pairs; with a handful of prompts they are wide, and a localisation read off one prompt set says nothing about others.",
        pp.pairs.len(),
        if pp.pairs.len() == 1 { "" } else { "s" },
        pp.path.display()
    )];
    let page = html::page("feedlens report", &intro, &sections);
    let json =
        json!({"kind": "prompt_pairs", "pairs_file": pp.path, "seed": pp.seed, "pairs": data});
    let mut out = vec![
        ("index.html".to_string(), page.into_bytes()),
        ("data.json".to_string(), checkpoint::pretty(&json)?),
    ];
    out.extend(files);
    Ok(out)
}
