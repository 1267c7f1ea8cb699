//! `sae train`, `crosscoder train` and `latents`: training dictionaries on checkpoints into
//! their folders (SAELens layout for an SAE), and looking at a dictionary's latents. Must not
//! hold a domain rule.

use super::{load, Outputs};
use anyhow::Result;
use feedlens::analysis::dictionary::collect::Point;
use feedlens::analysis::dictionary::diffing::{self, BoardOptions, Corpus, LabelRow, PairDiff};
use feedlens::analysis::dictionary::files::{self, Manifest};
use feedlens::analysis::dictionary::{cards, Sparsity, TrainConfig};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint::{self, Checkpoint};
use feedlens::io::fsio;
use feedlens::view::{figures, latents_page};
use std::path::PathBuf;

/// Where to read and how to train, shared by `sae train` and `crosscoder train`.
#[derive(clap::Args)]
pub(super) struct TrainFlags {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Site read: resid_pre, resid_mid, resid_post, attn_out, mlp_out.
    #[arg(long, default_value = "resid_post")]
    site: Site,
    /// Layer of the site (default: the middle layer, n_layer / 2).
    #[arg(long)]
    layer: Option<usize>,
    /// Read one position of the 18-token episodes only (default: every position).
    #[arg(long)]
    position: Option<usize>,
    /// Tokens (activation rows) to train on: corpus episodes × positions read.
    #[arg(long, default_value_t = 200_000)]
    tokens: usize,
    /// Dictionary size (default: 4 × the model width).
    #[arg(long)]
    d_sae: Option<usize>,
    /// BatchTopK: active latents per token on average.
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Train with ReLU and this L1 coefficient instead of BatchTopK (the L1 crosscoder).
    #[arg(long, value_name = "COEFF")]
    l1: Option<f64>,
    /// Optimiser steps (default: 5 passes over the tokens).
    #[arg(long)]
    steps: Option<usize>,
    /// Tokens per step.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 4e-3)]
    lr: f64,
    /// Seed of the corpus, the initialisation and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace an existing output folder (one feedlens wrote).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub(super) struct SaeArgs {
    #[command(subcommand)]
    cmd: SaeCmd,
}

#[derive(clap::Subcommand)]
enum SaeCmd {
    /// Train a BatchTopK SAE on one checkpoint's activations at a hook; saved in SAELens's
    /// layout (cfg.json, sae_weights.safetensors) with feedlens-dictionary.json.
    Train {
        /// Checkpoint directory.
        checkpoint: PathBuf,
        #[command(flatten)]
        t: TrainFlags,
    },
}

#[derive(clap::Args)]
pub(super) struct CrosscoderArgs {
    #[command(subcommand)]
    cmd: CrosscoderCmd,
}

#[derive(clap::Subcommand)]
enum CrosscoderCmd {
    /// Train a crosscoder on two checkpoints' activations at one hook (one shared encoder, a
    /// decoder per model), read each latent's relative decoder norm and Latent Scaling, and
    /// score the latents against the toy world's variables (scoreboard.json).
    Train {
        /// Reference checkpoint (A).
        a: PathBuf,
        /// Treated checkpoint (B).
        b: PathBuf,
        #[command(flatten)]
        t: TrainFlags,
        /// Prompts per world variable on the scoreboard.
        #[arg(long, default_value_t = 2000)]
        n: usize,
    },
    /// Train the report's standard crosscoders: one per pair named by the pairs file's
    /// `crosscoders = [...]` and per seed, into crosscoders/seed-S/PAIR beside it. Existing
    /// folders are kept unless --force.
    Zoo {
        /// Pairs file.
        #[arg(long, default_value = "checkpoints/pairs.toml")]
        pairs: PathBuf,
        /// Only these pairs (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Crosscoders trained at once (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Retrain and replace existing folders.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
pub(super) struct LatentsArgs {
    /// Dictionary folder (from `sae train` or `crosscoder train`).
    dir: PathBuf,
    /// Output folder for latents.html (default: DIR/latents).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Latents to show, comma-separated (default: B-only and A-only latents of a crosscoder,
    /// then the most active, up to --top).
    #[arg(long, value_delimiter = ',')]
    latents: Vec<usize>,
    /// How many latents to show by default.
    #[arg(long, default_value_t = 24)]
    top: usize,
    /// Corpus episodes the contexts are drawn from.
    #[arg(long, default_value_t = 2000)]
    episodes: usize,
    /// Also write every latent's activations on those episodes (`acts` [tokens, d_sae] f32,
    /// the dictionary's input `x` [tokens, n_models·d] f32, `ids` [episodes, 18] i64) as
    /// OUT/latent_acts.safetensors.
    #[arg(long)]
    export: bool,
    /// Seed of the episodes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
}

/// Load the checkpoints, check them, and settle the point and training settings.
fn prepare(
    dirs: &[&PathBuf],
    t: &TrainFlags,
) -> Result<(Vec<Checkpoint>, Point, TrainConfig, usize)> {
    fsio::check_outputs(
        std::slice::from_ref(&t.out),
        &dirs.iter().map(|d| (*d).clone()).collect::<Vec<_>>(),
        t.force,
    )?;
    fsio::check_own_dir(&t.out, &[files::MANIFEST])?;
    let cks: Vec<Checkpoint> = dirs.iter().map(|d| load(d)).collect::<Result<_>>()?;
    let cfg0 = cks[0].model.config().clone();
    let point = Point {
        site: t.site,
        layer: t.layer.unwrap_or(cfg0.n_layer / 2),
        position: t.position,
    };
    let models: Vec<&feedlens::Model> = cks.iter().map(|c| &c.model).collect();
    let names: Vec<String> = cks.iter().map(|c| c.name()).collect();
    diffing::check_models(&models, &names, &point)?;
    if t.tokens == 0 {
        anyhow::bail!("--tokens must be at least 1");
    }
    let episodes = feedlens::analysis::dictionary::collect::episodes_for(t.tokens, &point);
    let rows = episodes * point.positions().len();
    let d_sae = t.d_sae.unwrap_or(4 * cfg0.n_embd);
    let steps = t
        .steps
        .unwrap_or_else(|| (5 * rows).div_ceil(t.batch.max(1)).max(1));
    let sparsity = match t.l1 {
        Some(coeff) => Sparsity::L1 { coeff },
        None => Sparsity::BatchTopK { k: t.k },
    };
    let cfg = TrainConfig {
        sparsity,
        lr: t.lr,
        batch: t.batch,
        aux_coeff: if t.l1.is_some() { 0.0 } else { 1.0 / 8.0 },
        ..TrainConfig::batch_topk(d_sae, t.k, steps, t.seed)
    };
    cfg.check(cks.len() * cfg0.n_embd)
        .map_err(|e| anyhow::anyhow!("{e} (--d-sae, --k, --l1, --steps, --batch, --lr)"))?;
    // Activations of every model, the dictionary's weights and Adam's moments.
    let width = (cks.len() * cfg0.n_embd) as u64;
    feedlens::budget::check(
        &format!("--tokens {} --d-sae {d_sae}", t.tokens),
        rows as u64 * width * 4 * 2
            + width * d_sae as u64 * 4 * 8
            + t.batch as u64 * d_sae as u64 * 4 * 8,
    )?;
    Ok((cks, point, cfg, episodes))
}

fn print_stats(stats: &feedlens::analysis::dictionary::TrainStats, names: &[String]) {
    for (n, ev) in names.iter().zip(&stats.explained_variance) {
        println!("explained variance {n}: {ev:.4}");
    }
    println!(
        "L0 {:.2} latents per token, dead {:.1} % of latents, {} tokens",
        stats.l0,
        100.0 * stats.dead_fraction,
        stats.tokens
    );
}

pub(super) fn sae(a: SaeArgs) -> Result<()> {
    let SaeCmd::Train { checkpoint: dir, t } = a.cmd;
    let (cks, point, cfg, episodes) = prepare(&[&dir], &t)?;
    let corpus = Corpus {
        point,
        episodes,
        seed: t.seed,
    };
    let (dict, stats) = diffing::train_on(&[&cks[0].model], &corpus, &cfg)?;
    let loss = diffing::spliced_loss(
        &[&cks[0].model],
        &dict,
        &point,
        diffing::LOSS_EPISODES,
        t.seed.wrapping_add(1),
    )?;
    print_stats(&stats, &[cks[0].name()]);
    for l in &loss {
        println!(
            "next-token loss: clean {:.4}, SAE spliced in {:.4}, zeroed {:.4} (recovered {:.1} %, {} held-out episodes)",
            l.clean, l.spliced, l.zero, 100.0 * l.recovered, l.episodes
        );
    }
    let dir_s = dir.display().to_string();
    let man = Manifest::new(&[&cks[0]], &[&dir_s], &corpus, cfg, stats)?;
    let loss_json = checkpoint::pretty(&loss)?;
    files::save(&t.out, &dict, &man, &[(diffing::LOSS, loss_json)], t.force)?;
    eprintln!("wrote {}", t.out.display());
    Ok(())
}

/// The scoreboard as terminal lines.
pub(super) fn board_lines(rows: &[LabelRow]) -> Vec<String> {
    let cell = |b: &Option<feedlens::analysis::dictionary::score::Best>| match b {
        Some(b) => format!("{:.3} {} #{}", b.auroc.value, b.auroc.bracket(3), b.index),
        None => "—".to_string(),
    };
    let mut out = vec![format!(
        "{:<10} {:>3} {:>5}  {:<34} {:<26} {:<26} {:<26} {:<26} {:<22} probe B",
        "variable",
        "pos",
        "n",
        "any latent (rel. norm)",
        "A-only",
        "shared",
        "B-only",
        "random",
        "probe A"
    )];
    for r in rows {
        match &r.row {
            Some(x) => out.push(format!(
                "{:<10} {:>3} {:>5}  {:<34} {:<26} {:<26} {:<26} {:<26} {:<22} {:.3} {}",
                r.name(),
                r.position,
                r.n,
                format!(
                    "{} ({:.2})",
                    cell(&x.any),
                    x.any_relative_norm.unwrap_or(f64::NAN)
                ),
                cell(&x.a_only),
                cell(&x.shared),
                cell(&x.b_only),
                cell(&x.random),
                format!("{:.3} {}", x.probe_a.value, x.probe_a.bracket(3)),
                x.probe_b.value,
                x.probe_b.bracket(3)
            )),
            None => out.push(format!(
                "{:<10} {:>3} {:>5}  skipped: {}",
                r.name(),
                r.position,
                r.n,
                r.skipped.as_deref().unwrap_or("")
            )),
        }
    }
    out
}

impl CrosscoderArgs {
    /// Jobs run at once.
    pub(super) fn jobs(&self) -> usize {
        match &self.cmd {
            CrosscoderCmd::Zoo { jobs, .. } => jobs.unwrap_or_else(feedlens::pool::cores),
            CrosscoderCmd::Train { .. } => 1,
        }
    }
}

pub(super) fn crosscoder(a: CrosscoderArgs) -> Result<()> {
    let jobs = a.jobs();
    let (da, db, t, n) = match a.cmd {
        CrosscoderCmd::Train { a, b, t, n } => (a, b, t, n),
        CrosscoderCmd::Zoo {
            pairs, only, force, ..
        } => {
            let p = feedlens::report::Pairs::load(&pairs)?.only(&only)?;
            let started = std::time::Instant::now();
            let dirs =
                feedlens::report::crosscoders::prepare(&p, jobs, force, &feedlens::report::Silent)?;
            for d in &dirs {
                eprintln!("wrote {}", d.display());
            }
            eprintln!(
                "{} crosscoders in {:.0} s ({} already there kept)",
                dirs.len(),
                started.elapsed().as_secs_f64(),
                feedlens::report::crosscoders::pairs_of(&p).len() * p.runs().len() - dirs.len()
            );
            return Ok(());
        }
    };
    if n < 20 {
        anyhow::bail!("--n {n}: the scoreboard needs at least 20 prompts per variable");
    }
    let (cks, point, cfg, episodes) = prepare(&[&da, &db], &t)?;
    // The scoreboard's activation sets and latents of `n` prompts.
    let width = cks[0].model.config().n_embd;
    feedlens::budget::check(
        &format!("--n {n}"),
        (n as u64).saturating_mul((4 * width + cfg.d_sae) as u64 * 8 * 2),
    )?;
    let corpus = Corpus {
        point,
        episodes,
        seed: t.seed,
    };
    let opts = BoardOptions::standard(n, t.seed);
    let dirs = [da.display().to_string(), db.display().to_string()];
    let diff = PairDiff::run(
        [&cks[0], &cks[1]],
        [&dirs[0], &dirs[1]],
        &corpus,
        &cfg,
        &opts,
    )?;
    let names: Vec<String> = cks.iter().map(|c| c.name()).collect();
    print_stats(&diff.manifest.stats, &names);
    let (per, flagged) = diff.readings.counts();
    let list: Vec<String> = per.iter().map(|(c, k)| format!("{k} {c}")).collect();
    println!(
        "active latents by relative decoder norm (A-only ≤ 0.1, shared 0.4–0.6, B-only ≥ 0.9): {}; Latent Scaling flags {flagged} of the one-model latents",
        list.join(", ")
    );
    println!("best single latent's held-out AUROC per world variable (95 % bootstrap interval, latent index):");
    for l in board_lines(&diff.board) {
        println!("{l}");
    }
    for (nm, l) in names.iter().zip(&diff.loss) {
        println!(
            "next-token loss of {nm}: clean {:.4}, reconstruction spliced in {:.4}, zeroed {:.4} (recovered {:.1} %)",
            l.clean, l.spliced, l.zero, 100.0 * l.recovered
        );
    }
    let fig = figures::decoder_norms(
        &format!("{} → {}: relative decoder norm", names[0], names[1]),
        &diff.readings.active_norms(),
    );
    let r = fig.render()?;
    let mut extra = diff.json_files()?;
    extra.push(("decoder_norms.png", r.png));
    extra.push(("decoder_norms.svg", r.svg.into_bytes()));
    files::save(&t.out, &diff.dict, &diff.manifest, &extra, t.force)?;
    eprintln!("wrote {}", t.out.display());
    Ok(())
}

pub(super) fn latents(a: LatentsArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("latents"));
    let (dict, man) = files::load(&a.dir)?;
    let dirs: Vec<PathBuf> = man.model_dirs(&a.dir);
    let mut plan = Outputs::new(a.force).inputs(&dirs).input(&a.dir);
    plan = plan.file_at(out.join("latents.html"));
    if a.export {
        plan = plan.file_at(out.join("latent_acts.safetensors"));
    }
    let mut plan = plan.check()?;
    let cks: Vec<Checkpoint> = dirs.iter().map(|d| load(d)).collect::<Result<_>>()?;
    for (c, s) in cks.iter().zip(&man.models) {
        if c.sha256 != s.sha256 {
            eprintln!(
                "warning: {} has changed since the dictionary was trained (sha256 differs)",
                c.dir.display()
            );
        }
    }
    if a.episodes == 0 {
        anyhow::bail!("--episodes must be at least 1");
    }
    // Every latent's activations and the input on every token, kept for the page and export.
    let tokens = (a.episodes as u64).saturating_mul(18);
    feedlens::budget::check(
        &format!("--episodes {}", a.episodes),
        tokens.saturating_mul((dict.d_sae() + 2 * dict.n_models * dict.d) as u64 * 4 * 2),
    )?;
    let models: Vec<&feedlens::Model> = cks.iter().map(|c| &c.model).collect();
    let view = cards::cards(&dict, &man, &models, a.episodes, a.seed, &a.latents, a.top)?;
    plan.file(
        &out.join("latents.html"),
        latents_page::page(&view).into_bytes(),
    );
    if a.export {
        plan.file(&out.join("latent_acts.safetensors"), view.export()?);
    }
    plan.finish()
}
