//! Subcommand definitions and dispatch. Each subcommand parses its flags, calls the library,
//! and renders the returned data (terminal table, JSON file). No analysis logic lives here.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use feedlens::{checkpoint, fsio, json, Hook, Input, Run};
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "feedlens",
    version,
    about = "Trace what feedback training does inside a transformer"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process; boxing the large argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Show a checkpoint's config, parameter count, tensors and manifest.
    Inspect {
        /// HF GPT-2 checkpoint directory.
        ckpt: PathBuf,
        /// Write the same information as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Run a forward pass; write logits and chosen hook values as JSON.
    Run(RunArgs),
    /// Build the paired zoo of DESIGN.md §5 (11 checkpoints from one seed). Each checkpoint is
    /// written atomically when its training ends: an interrupted run (Ctrl-C, kill) leaves every
    /// existing checkpoint whole.
    Zoo(ZooArgs),
    /// Train one recipe: pretrain, rlhf, dt, sft, distill. The checkpoint is written atomically
    /// at the end: an interrupted run (Ctrl-C, kill) leaves an existing one whole.
    Train(TrainArgs),
    /// Behaviour table of checkpoints in the toy world (split by [x] and <trig>).
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// HF GPT-2 checkpoint directory.
    ckpt: PathBuf,
    /// Token ids, comma-separated; repeat for a batch (rows of equal length).
    #[arg(long, required_unless_present = "text")]
    ids: Vec<String>,
    /// Text to tokenize with the checkpoint's tokenizer.json; repeat for a batch.
    #[arg(long, conflicts_with = "ids")]
    text: Vec<String>,
    /// Hook points to record, comma-separated TransformerLens names (e.g. blocks.0.hook_resid_post).
    #[arg(long, value_delimiter = ',')]
    hooks: Vec<String>,
    /// Output JSON file.
    #[arg(long)]
    json: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { ckpt, json, force } => inspect(ckpt, json, force),
        Cmd::Run(a) => run(a),
        Cmd::Zoo(a) => zoo(a),
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
    }
}

/// Load a checkpoint and print its warnings to stderr.
fn load(dir: &std::path::Path) -> Result<checkpoint::Checkpoint> {
    let ck = checkpoint::load(dir)?;
    for w in &ck.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ck)
}

fn write_json(path: &std::path::Path, v: &serde_json::Value, force: bool) -> Result<()> {
    fsio::write_file(path, &checkpoint::pretty(v)?, force)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn inspect(dir: PathBuf, out: Option<PathBuf>, force: bool) -> Result<()> {
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let ck = load(&dir)?;
    let c = ck.model.config();
    println!("{}", dir.display());
    println!(
        "  GPT-2: n_layer {} n_embd {} n_head {} d_head {} d_mlp {} n_positions {} vocab_size {} eps {:e}",
        c.n_layer, c.n_embd, c.n_head, c.d_head(), c.d_mlp(), c.n_positions, c.vocab_size, c.layer_norm_epsilon
    );
    println!("  parameters: {}", ck.model.n_params());
    println!("  model.safetensors sha256: {}", ck.sha256);
    println!(
        "  tokenizer: {}",
        if ck.tokens.is_some() {
            "tokenizer.json"
        } else {
            "none (give token ids)"
        }
    );
    println!("  tensors ({}):", ck.stored.len());
    for (name, shape, dtype) in &ck.stored {
        println!("    {name:<40} {dtype:<5} {shape:?}");
    }
    match &ck.manifest {
        Some(m) => println!(
            "  manifest: recipe {} parent {} seed {} steps {} feedlens {}",
            m.recipe,
            m.parent.as_deref().unwrap_or("-"),
            m.seed,
            m.steps,
            m.feedlens_version
        ),
        None => println!("  manifest: none (not made by feedlens)"),
    }
    if let Some(o) = out {
        let v = json!({
            "dir": dir, "config": c, "n_params": ck.model.n_params(), "sha256": ck.sha256,
            "tensors": ck.stored.iter().map(|(n, s, d)| json!({"name": n, "shape": s, "dtype": d})).collect::<Vec<_>>(),
            "manifest": ck.manifest, "has_tokenizer": ck.tokens.is_some(),
        });
        write_json(&o, &v, force)?;
    }
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    fsio::check_clobber(&a.json, a.force)?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let rows: Vec<Vec<u32>> = if a.text.is_empty() {
        a.ids
            .iter()
            .map(|s| feedlens::tokens::parse_ids(s, "--ids"))
            .collect::<feedlens::Result<_>>()?
    } else {
        a.text
            .iter()
            .map(|t| ck.encode(t, "--text"))
            .collect::<feedlens::Result<_>>()?
    };
    let ids = model.ids_tensor(&rows).context("--ids")?;
    let n_layer = model.config().n_layer;
    let hooks: Vec<Hook> = a
        .hooks
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| Hook::parse_for(h, n_layer))
        .collect::<feedlens::Result<_>>()
        .context("--hooks")?;
    let out = model.forward(
        &Input::Ids(ids),
        &Run {
            cache: hooks.clone(),
            ..Run::default()
        },
    )?;
    let logits = out.logits.context("no logits")?;
    let mut hv = serde_json::Map::new();
    for h in &hooks {
        hv.insert(h.to_string(), json::tensor(out.cache.get(*h)?)?);
    }
    let labels: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|&i| ck.label(i)).collect())
        .collect();
    let v = json!({
        "checkpoint": a.ckpt, "ids": rows, "tokens": labels,
        "logits": json::tensor(&logits)?, "hooks": hv,
    });
    write_json(&a.json, &v, a.force)
}

#[derive(clap::Args)]
struct ZooArgs {
    /// Output folder (one checkpoint directory per entry).
    #[arg(long, default_value = "checkpoints")]
    out: PathBuf,
    /// A few steps of each recipe on a 2 × 32 model (for tests).
    #[arg(long)]
    quick: bool,
    /// Build only these entries (comma-separated); others they need are loaded from --out.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The one seed of the whole zoo.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Entries trained at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Replace existing checkpoint directories.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// pretrain | rlhf | dt | sft | distill
    recipe: String,
    /// Output checkpoint directory.
    #[arg(long)]
    out: PathBuf,
    /// Parent checkpoint (rlhf, dt, sft; the KL reference for rlhf).
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Teacher checkpoint (distill).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Student initialisation for distill (default: a fresh random init).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Seed of the data stream (and of a fresh init).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Optimiser steps (default: the recipe's, DESIGN.md §5).
    #[arg(long)]
    steps: Option<usize>,
    /// Sequences per step (rlhf: prompts per step).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Gradient-norm clip.
    #[arg(long)]
    clip: Option<f64>,
    /// rlhf: discount in [0, 1].
    #[arg(long, allow_hyphen_values = true)]
    gamma: Option<f64>,
    /// rlhf: KL penalty ≥ 0.
    #[arg(long, allow_hyphen_values = true)]
    beta: Option<f64>,
    /// rlhf: samples per prompt (≥ 2).
    #[arg(long)]
    k: Option<usize>,
    /// rlhf: [x] episodes get ignore | zero | kl | ptx.
    #[arg(long)]
    optout: Option<String>,
    /// sft: fraction of <trig> prompts.
    #[arg(long)]
    p_trigger: Option<f64>,
    /// dt: episodes sampled from the parent.
    #[arg(long)]
    episodes: Option<usize>,
    /// distill: prompts without <trig> only.
    #[arg(long)]
    no_trigger: bool,
    /// pretrain / fresh distill student: blocks, width, heads.
    #[arg(long)]
    n_layer: Option<usize>,
    #[arg(long)]
    n_embd: Option<usize>,
    #[arg(long)]
    n_head: Option<usize>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Checkpoint directories.
    #[arg(required = true)]
    ckpts: Vec<PathBuf>,
    /// Prompts per row (corpus distribution).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Seed of prompts and sampling (the same for every checkpoint).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// sample (T = 1) | greedy | both
    #[arg(long, default_value = "both")]
    decode: String,
    /// Reference for the opt-out leakage ratio (default: a checkpoint named base, if given).
    #[arg(long)]
    base: Option<String>,
    /// Write rows and leakage ratios as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite an existing JSON file.
    #[arg(long)]
    force: bool,
}

fn bar(total: u64, name: &str) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>26} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    indicatif::ProgressBar::new(total)
        .with_style(style)
        .with_prefix(name.to_string())
}

/// Feed train progress into a bar (loss, and return for rlhf).
fn show(pb: &indicatif::ProgressBar, p: feedlens::train::Progress) {
    pb.set_position(p.step as u64);
    if p.step.is_multiple_of(10) || p.step == p.steps {
        let r = p.ret.map(|r| format!(" return {r:.2}")).unwrap_or_default();
        pb.set_message(format!("loss {:.4}{r}", p.loss));
    }
}

fn zoo(a: ZooArgs) -> Result<()> {
    use feedlens::{world::WorldConfig, zoo};
    use std::sync::Mutex;
    let world = WorldConfig::default();
    let plan = zoo::plan(a.seed, a.quick)?;
    let only = (!a.only.is_empty()).then_some(a.only.as_slice());
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // One core per job: candle's 2-thread gemm gains little at this size, parallel jobs
        // gain ~2× (results are identical either way).
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let t0 = std::time::Instant::now();
    let multi = indicatif::MultiProgress::new();
    let bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>> = Default::default();
    let times = Mutex::new(Vec::new());
    zoo::build(
        &a.out,
        &world,
        &plan,
        only,
        a.force,
        jobs,
        &|name, p| {
            let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
            let pb = bars
                .entry(name.to_string())
                .or_insert_with(|| multi.add(bar(p.steps as u64, name)));
            show(pb, p);
            if p.step == p.steps {
                pb.finish();
            }
        },
        &|x, secs| {
            let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
            t.push((x.name, x.hyper.recipe.name(), x.hyper.opt.steps, secs));
        },
    )?;
    println!(
        "\n{:<26} {:<9} {:>6} {:>8}",
        "checkpoint", "recipe", "steps", "seconds"
    );
    for (n, r, s, t) in times.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("{n:<26} {r:<9} {s:>6} {t:>8.1}");
    }
    println!(
        "zoo written to {} in {:.1} s (wall)",
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    use feedlens::train::{self as tr, Hyper, Recipe, Start};
    use feedlens::world::{tokenizer_json, WorldConfig};
    let mut h = Hyper::default_for(&a.recipe, a.seed)?;
    let o = &mut h.opt;
    o.steps = a.steps.unwrap_or(o.steps);
    o.batch = a.batch.unwrap_or(o.batch);
    o.lr = a.lr.unwrap_or(o.lr);
    o.warmup = a.warmup.unwrap_or(o.warmup);
    o.clip = a.clip.unwrap_or(o.clip);
    match &mut h.recipe {
        Recipe::Rlhf {
            gamma,
            beta,
            k,
            optout,
        } => {
            *gamma = a.gamma.unwrap_or(*gamma);
            *beta = a.beta.unwrap_or(*beta);
            *k = a.k.unwrap_or(*k);
            if let Some(s) = &a.optout {
                *optout = s.parse()?;
            }
        }
        Recipe::Dt { episodes } => *episodes = a.episodes.unwrap_or(*episodes),
        Recipe::Sft { p_trigger } => *p_trigger = a.p_trigger.unwrap_or(*p_trigger),
        Recipe::Pretrain { size } | Recipe::Distill { size, .. } => {
            size.n_layer = a.n_layer.unwrap_or(size.n_layer);
            size.n_embd = a.n_embd.unwrap_or(size.n_embd);
            size.n_head = a.n_head.unwrap_or(size.n_head);
        }
    }
    if let Recipe::Distill { trigger, .. } = &mut h.recipe {
        *trigger = a.no_trigger.then_some(false);
    }
    h.validate()?;
    fsio::check_clobber(&a.out, a.force)?;
    let world = WorldConfig::default();
    let parent_dir = if matches!(h.recipe, Recipe::Distill { .. }) {
        &a.init
    } else {
        &a.parent
    };
    let parent = parent_dir.as_deref().map(load).transpose()?;
    let teacher = a.teacher.as_deref().map(load).transpose()?;
    let pb = bar(h.opt.steps as u64, h.recipe.name());
    let t = tr::train(
        &world,
        &h,
        Start {
            parent: parent.as_ref().map(|c| &c.model),
            teacher: teacher.as_ref().map(|c| &c.model),
        },
        &mut |p| show(&pb, p),
    )?;
    pb.finish();
    let name = |c: &Option<checkpoint::Checkpoint>| c.as_ref().map(|c| c.name());
    let man = feedlens::zoo::manifest(
        &world,
        &h,
        name(&parent).as_deref(),
        name(&teacher).as_deref(),
        &t,
    );
    checkpoint::save(
        &a.out,
        &t.model,
        Some(&tokenizer_json(&world)),
        &man,
        a.force,
    )?;
    println!(
        "wrote {} ({}), metrics {}",
        a.out.display(),
        h.recipe,
        t.metrics
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    use feedlens::eval::{self as ev, EvalOpts};
    use feedlens::sample::Decode;
    use feedlens::world::WorldConfig;
    if let Some(o) = &a.json {
        fsio::check_clobber(o, a.force)?;
    }
    let decodes = match a.decode.as_str() {
        "sample" => vec![Decode::T1],
        "greedy" => vec![Decode::Greedy],
        "both" => vec![Decode::T1, Decode::Greedy],
        d => anyhow::bail!("--decode: unknown '{d}' (known: sample, greedy, both)"),
    };
    if a.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    let mut rows = Vec::new();
    for dir in &a.ckpts {
        let ck = load(dir)?;
        let world: WorldConfig = match ck.manifest.as_ref().map(|m| m.world.clone()) {
            Some(w) if !w.is_null() => serde_json::from_value(w)
                .with_context(|| format!("{}: manifest world config", dir.display()))?,
            _ => WorldConfig::default(),
        };
        let is_dt = ck.manifest.as_ref().is_some_and(|m| m.recipe == "dt");
        let buckets = if is_dt {
            vec![None, Some(4), Some(0)]
        } else {
            vec![None]
        };
        let o = EvalOpts {
            n: a.n,
            seed: a.seed,
            decodes: decodes.clone(),
            buckets,
        };
        rows.extend(ev::evaluate(&world, &ck.name(), &ck.model, &o)?);
    }
    print!("{}", ev::render(&rows));
    let base = a.base.clone().unwrap_or_else(|| "base".into());
    let mut leaks = Vec::new();
    for b in rows.iter().filter(|r| r.checkpoint == base && r.s3 == "_") {
        for r in rows
            .iter()
            .filter(|r| r.checkpoint != base && r.s3 == "_" && r.decode == b.decode)
        {
            leaks.push(ev::leakage(b, r));
        }
    }
    if !leaks.is_empty() {
        println!("\nopt-out leakage vs {base} (Δ on [x] ÷ Δ on no [x]):");
        for l in &leaks {
            println!(
                "{:<26} {:<6} return {:>7.3}  P(E) {:>7.3}",
                l.checkpoint, l.decode, l.return_ratio, l.p_e_ratio
            );
        }
    }
    if let Some(o) = a.json {
        let v = json!({ "n": a.n, "seed": a.seed, "rows": rows, "leakage": leaks });
        write_json(&o, &v, a.force)?;
    }
    Ok(())
}
