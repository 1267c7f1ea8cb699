//! `diff` and `lens`: the weight diff of two checkpoints and the logit lens of one.
//! Must not hold a domain rule.

use super::{load, prompts, JsonOut, PlotOut};
use anyhow::Result;
use feedlens::analysis::{diff, lens};
use feedlens::view::figures;
use feedlens::view::plot::AnyFigure;
use feedlens::view::tables;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct DiffArgs {
    /// Reference checkpoint A.
    a: PathBuf,
    /// Checkpoint B.
    b: PathBuf,
    #[command(flatten)]
    out: JsonOut,
    #[command(flatten)]
    plot: PlotOut,
}

#[derive(clap::Args)]
pub(super) struct LensArgs {
    /// HF checkpoint directory (GPT-2, GPT-NeoX or Llama-style).
    ckpt: PathBuf,
    /// Token ids, comma-separated; repeat for several prompts (equal lengths), averaged.
    #[arg(long, required_unless_present = "text")]
    ids: Vec<String>,
    /// Text to tokenize with the checkpoint's tokenizer.json; repeat for several prompts.
    #[arg(long, conflicts_with = "ids")]
    text: Vec<String>,
    /// Position to read (default: the last).
    #[arg(long)]
    pos: Option<usize>,
    /// Tokens to report, comma-separated names (or ids without a tokenizer; #ID for an id);
    /// default: the model's top 3 at the output.
    #[arg(long)]
    tokens: Option<String>,
    #[command(flatten)]
    out: JsonOut,
    #[command(flatten)]
    plot: PlotOut,
}

pub(super) fn diff(a: DiffArgs) -> Result<()> {
    let abs_stem = a.plot.png.as_ref().map(|s| {
        let mut s = s.clone().into_os_string();
        s.push("-absolute");
        std::path::PathBuf::from(s)
    });
    let mut out = a
        .out
        .plan_plot(&a.plot)
        .plot_at(abs_stem.as_ref())
        .input(&a.a)
        .input(&a.b)
        .check()?;
    let (ca, cb) = (load(&a.a)?, load(&a.b)?);
    let d = diff::weight_diff(
        &ca.model,
        &a.a.display().to_string(),
        &cb.model,
        &a.b.display().to_string(),
    )?;
    print!("{}", tables::weight_diff(&d));
    println!("headline: {}", d.headline_text());
    let mut v = serde_json::to_value(&d)?;
    v["headline"] = serde_json::to_value(d.headline())?;
    out.json(&a.out.json, &v)?;
    if let Some(stem) = &a.plot.png {
        let title = format!("weight diff: {} vs {}", d.b, d.a);
        for (absolute, stem) in [(false, stem), (true, abs_stem.as_ref().unwrap_or(stem))] {
            let fig = AnyFigure::Bars(figures::weight_diff_bars(
                &title,
                &figures::weight_bars_of(&d, absolute),
                absolute,
            ));
            out.plot(&fig, stem)?;
        }
    }
    out.finish()
}

pub(super) fn lens(a: LensArgs) -> Result<()> {
    let mut out = a.out.plan_plot(&a.plot).input(&a.ckpt).check()?;
    let ck = load(&a.ckpt)?;
    let rows = prompts(&ck, &a.ids, &a.text, ("--ids", "--text"))?;
    let tokens = match &a.tokens {
        Some(s) => ck.token_list(s, "--tokens")?,
        None => vec![],
    };
    let r = lens::logit_lens(&ck.model, &rows, a.pos, &tokens)?;
    let labels: Vec<String> = r.tokens.iter().map(|&i| ck.label(i)).collect();
    print!("{}", tables::lens(&r, &labels, |i| ck.label(i)));
    if a.out.json.is_some() {
        let mut v = serde_json::to_value(&r)?;
        v["checkpoint"] = json!(a.ckpt);
        v["labels"] = json!(labels);
        v["ids"] = json!(rows);
        out.json(&a.out.json, &v)?;
    }
    if let Some(stem) = &a.plot.png {
        let at = ck.label(rows[0][r.pos]);
        let title = format!(
            "{}: logit lens at position {} (token '{at}')",
            ck.name(),
            r.pos
        );
        let series = figures::lens_series_per_token(&r, &labels);
        let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
        let curves = series
            .iter()
            .map(|(_, t)| figures::Curve::plain(figures::lens_values(&r, t)))
            .collect();
        let fig = AnyFigure::Lens(figures::lens_curves(
            &title,
            &r.points,
            &names,
            &[(ck.name(), curves)],
        ));
        out.plot(&fig, stem)?;
    }
    out.finish()
}
