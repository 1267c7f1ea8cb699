//! `ablate` and `steer`: causal checks on sampled behaviour (ablating components, steering
//! along a contrast's direction) over a world contrast's prompts.
//! Must not hold a domain rule (the experiments are `analysis::causal`'s).

use super::{load, JsonOut, PlotOut};
use anyhow::Result;
use feedlens::analysis::causal::{self, AblateOpts, Component, SteerOpts, Target};
use feedlens::analysis::site::Site;
use feedlens::io::tokens::parse_ids;
use feedlens::lab::world::{Contrast, WorldConfig};
use feedlens::stats::BOOTSTRAP;
use feedlens::view::{figures, tables};
use std::path::PathBuf;

/// The prompt pairs both causal commands run on.
#[derive(clap::Args)]
struct PromptArgs {
    /// Prompt pairs.
    #[arg(long, default_value_t = 250)]
    n: usize,
    /// Seed of the prompts (sampling uses seed + 1).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
pub(super) struct AblateArgs {
    /// HF GPT-2 checkpoint directory (with a feedlens manifest, or the default world).
    ckpt: PathBuf,
    /// The contrast whose prompts are used: optout, trigger or reward.
    #[arg(long)]
    contrast: Contrast,
    /// Heads as LAYER.HEAD, comma-separated (`1.0,1.2`).
    #[arg(long)]
    heads: Option<String>,
    /// Whole attention outputs of these layers (comma-separated).
    #[arg(long)]
    attn: Option<String>,
    /// MLP outputs of these layers.
    #[arg(long)]
    mlp: Option<String>,
    /// The residual stream entering these layers (resid_pre).
    #[arg(long)]
    resid: Option<String>,
    /// Positions to ablate at, comma-separated (default: the contrast's decision position,
    /// 10 for optout and reward, 11 for trigger).
    #[arg(long)]
    pos: Option<String>,
    /// Also ablate each component alone (before the whole set).
    #[arg(long)]
    each: bool,
    #[command(flatten)]
    prompts: PromptArgs,
    #[command(flatten)]
    out: JsonOut,
}

#[derive(clap::Args)]
pub(super) struct SteerArgs {
    /// HF GPT-2 checkpoint directory.
    ckpt: PathBuf,
    /// The contrast whose direction is steered along: optout, trigger or reward.
    #[arg(long)]
    contrast: Contrast,
    /// Layers whose resid_post is steered, comma-separated (default: all).
    #[arg(long)]
    layers: Option<String>,
    /// Multiples of Δ added to corrupted prompts, comma-separated.
    #[arg(long, default_value = "-1,0.5,1,2,4", allow_hyphen_values = true)]
    alphas: String,
    #[command(flatten)]
    prompts: PromptArgs,
    #[command(flatten)]
    out: JsonOut,
    #[command(flatten)]
    plot: PlotOut,
}

fn layers(s: &Option<String>, what: &str) -> Result<Vec<usize>> {
    Ok(match s {
        Some(s) => parse_ids(s, what)?
            .into_iter()
            .map(|x| x as usize)
            .collect(),
        None => Vec::new(),
    })
}

/// The checkpoint's world (its manifest's, else the default), checked against its vocabulary.
fn world_of(ck: &feedlens::io::checkpoint::Checkpoint) -> Result<WorldConfig> {
    let w = WorldConfig::of_checkpoint(ck)?;
    w.holds(ck.model.config())
        .map_err(|e| anyhow::anyhow!("{}: {e}", ck.dir.display()))?;
    Ok(w)
}

pub(super) fn ablate(a: AblateArgs) -> Result<()> {
    let mut out = a.out.plan().input(&a.ckpt).check()?;
    let mut comps: Vec<Component> = match &a.heads {
        Some(h) => Component::parse_heads(h, "--heads")?,
        None => Vec::new(),
    };
    for (arg, what, site) in [
        (&a.attn, "--attn", Site::AttnOut),
        (&a.mlp, "--mlp", Site::MlpOut),
        (&a.resid, "--resid", Site::ResidPre),
    ] {
        comps.extend(
            layers(arg, what)?
                .into_iter()
                .map(|l| Component::at(site, l)),
        );
    }
    if comps.is_empty() {
        anyhow::bail!("give at least one component: --heads, --attn, --mlp or --resid");
    }
    let pos: Vec<usize> = match &a.pos {
        Some(p) => layers(&Some(p.clone()), "--pos")?,
        None => vec![a.contrast.metric().pos()],
    };
    let ck = load(&a.ckpt)?;
    let world = world_of(&ck)?;
    let cfg = ck.model.config();
    for c in &comps {
        c.check(cfg.n_layer, cfg.n_head)
            .map_err(|e| anyhow::anyhow!("{c}: {e}"))?;
    }
    let targets = |c: &Component| -> Vec<Target> {
        pos.iter().map(|&p| Target { comp: *c, pos: p }).collect()
    };
    let mut sets: Vec<Vec<Target>> = Vec::new();
    if a.each && comps.len() > 1 {
        sets.extend(comps.iter().map(targets));
    }
    sets.push(comps.iter().flat_map(targets).collect());
    let r = causal::ablate(
        &ck.model,
        &world,
        &sets,
        &AblateOpts {
            contrast: a.contrast,
            n: a.prompts.n,
            seed: a.prompts.seed,
            bootstrap: BOOTSTRAP,
        },
    )?;
    print!("{}", tables::ablation(&r));
    out.json(&a.out.json, &serde_json::to_value(&r)?)?;
    out.finish()
}

pub(super) fn steer(a: SteerArgs) -> Result<()> {
    let mut out = a.out.plan_plot(&a.plot).input(&a.ckpt).check()?;
    let alphas: Vec<f64> = a
        .alphas
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| anyhow::anyhow!("--alphas: '{x}' is not a finite number"))
        })
        .collect::<Result<_>>()?;
    if alphas.is_empty() {
        anyhow::bail!("--alphas: no values given");
    }
    let ck = load(&a.ckpt)?;
    let world = world_of(&ck)?;
    let r = causal::steer(
        &ck.model,
        &world,
        &SteerOpts {
            contrast: a.contrast,
            layers: layers(&a.layers, "--layers")?,
            alphas,
            n: a.prompts.n,
            seed: a.prompts.seed,
            bootstrap: BOOTSTRAP,
        },
    )?;
    print!("{}", tables::steering(&r));
    if let Some(stem) = &a.plot.png {
        out.plot(&figures::steering(&r, &ck.name()), stem)?;
    }
    out.json(&a.out.json, &serde_json::to_value(&r)?)?;
    out.finish()
}
