//! Subcommand definitions and dispatch. Each subcommand parses its flags, calls the library,
//! and renders the returned data (terminal table, JSON file). No analysis logic lives here.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use feedlens::io::{checkpoint, fsio, json};
use feedlens::{Hook, Input, Run};
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
    /// Weight diff: relative Frobenius norm ‖B−A‖/‖A‖ per layer and component (a component's
    /// weight and bias together).
    Diff {
        /// Reference checkpoint A.
        a: PathBuf,
        /// Checkpoint B.
        b: PathBuf,
        /// Write the table as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a bar plot to STEM.png and STEM.svg.
        #[arg(long, value_name = "STEM")]
        png: Option<PathBuf>,
        /// Overwrite existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Logit lens: final LayerNorm + unembedding applied to the residual after every layer.
    Lens(LensArgs),
    /// Build the paired zoo of DESIGN.md §5 (11 checkpoints from one seed). Each checkpoint is
    /// written atomically when its training ends: an interrupted run (Ctrl-C, kill) leaves every
    /// existing checkpoint whole.
    Zoo(ZooArgs),
    /// Train one recipe: pretrain, rlhf, dt, sft, distill. The checkpoint is written atomically
    /// at the end: an interrupted run (Ctrl-C, kill) leaves an existing one whole.
    Train(TrainArgs),
    /// Behaviour table of checkpoints in the toy world (split by [x] and <trig>).
    Eval(EvalArgs),
    /// Activation patching sweep (resid_pre / attn_out / mlp_out × layer × position, per head).
    Patch(PatchArgs),
    /// Cross-checkpoint patching: run B with A's activation at each layer.
    PatchModels(PatchModelsArgs),
    /// Run a probe spec (`feedlens probe probes/NAME.toml`), or fit one logistic probe on your
    /// own activations (`feedlens probe fit --data FILE.safetensors --train-rows 0..K`).
    Probe(ProbeArgs),
    /// Run every analysis of the standard pairs (behaviour, weight diff, patching both ways,
    /// cross-checkpoint patching, probes, logit lens) and write a self-contained HTML report
    /// with its figures and data.json (default: every pair of checkpoints/pairs.toml into
    /// reports/zoo).
    Report(ReportArgs),
    /// Re-run every probe spec in a folder and compare with the stored results; non-zero exit on
    /// any drift or stale checkpoint hash.
    Check {
        /// Folder of probe specs.
        #[arg(default_value = "probes")]
        dir: PathBuf,
        /// Write the outcomes as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ProbeArgs {
    #[command(subcommand)]
    sub: Option<ProbeCmd>,
    /// Probe spec (probes/NAME.toml).
    #[arg(required = true)]
    spec: Option<PathBuf>,
    /// Also write the result JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write each checkpoint's activation set (X.{layer}, y, ids) as
    /// DIR/<checkpoint>.safetensors, for numpy users.
    #[arg(long, value_name = "DIR")]
    acts: Option<PathBuf>,
    /// Write probe curves (accuracy and AUROC per layer, per checkpoint; control task and
    /// best random direction dashed) to STEM.png and STEM.svg.
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum ProbeCmd {
    /// Fit one L2 logistic probe on X [n, d] f32 and y [n] i64 from a safetensors file; rows
    /// outside --train-rows are the test set.
    Fit {
        /// safetensors file with `X` [n, d] f32 and `y` [n] i64.
        #[arg(long)]
        data: PathBuf,
        /// Training rows, `A..B` (end exclusive); the other rows are the test set.
        #[arg(long)]
        train_rows: String,
        /// Inverse L2 regularisation strength (scikit-learn's C).
        #[arg(long, default_value_t = 1.0)]
        c: f64,
        /// Write coef, intercept, test_proba, test_accuracy, test_auroc here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct LensArgs {
    /// HF GPT-2 checkpoint directory.
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
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a line plot to STEM.png and STEM.svg.
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
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

/// Called before any thread starts: `zoo` and `report` run several jobs at once, one core each,
/// so unless `RAYON_NUM_THREADS` is set they set it to 1 (candle reads it for its gemm; at this
/// model size a 2-thread gemm gains little and parallel jobs ~2×; results are identical).
pub fn set_thread_env(cli: &Cli) {
    let jobs = match &cli.cmd {
        Cmd::Zoo(a) => a.jobs.unwrap_or_else(feedlens::pool::cores),
        Cmd::Report(a) => a.jobs.unwrap_or_else(feedlens::pool::cores),
        _ => 1,
    };
    if jobs > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { ckpt, json, force } => inspect(ckpt, json, force),
        Cmd::Run(a) => run(a),
        Cmd::Diff {
            a,
            b,
            json,
            png,
            force,
        } => diff(a, b, json, png, force),
        Cmd::Lens(a) => lens(a),
        Cmd::Zoo(a) => zoo(a),
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Patch(a) => patch(a),
        Cmd::PatchModels(a) => patch_models(a),
        Cmd::Probe(a) => probe(a),
        Cmd::Check { dir, json, force } => check(dir, json, force),
        Cmd::Report(a) => report(a),
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

/// Check token rows against the model (ids in range, lengths fit), naming the argument.
fn check_rows(model: &feedlens::Gpt2, rows: &[Vec<u32>], arg: &str) -> Result<()> {
    model.check_ids(rows).with_context(|| arg.to_string())
}

/// Prompts from `--ids` (comma-separated ids) or `--text` (tokenized), one row each, checked
/// against the model.
fn prompts(ck: &checkpoint::Checkpoint, ids: &[String], text: &[String]) -> Result<Vec<Vec<u32>>> {
    let rows: Vec<Vec<u32>> = if text.is_empty() {
        ids.iter()
            .map(|s| feedlens::io::tokens::parse_ids(s, "--ids"))
            .collect::<feedlens::Result<_>>()?
    } else {
        text.iter()
            .map(|t| ck.encode(t, "--text"))
            .collect::<feedlens::Result<_>>()?
    };
    check_rows(
        &ck.model,
        &rows,
        if text.is_empty() { "--ids" } else { "--text" },
    )?;
    Ok(rows)
}

fn run(a: RunArgs) -> Result<()> {
    fsio::check_clobber(&a.json, a.force)?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let rows = prompts(&ck, &a.ids, &a.text)?;
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

/// Refuse existing outputs before doing any work: `--json` and the plot's two files.
fn check_outputs(json: &Option<PathBuf>, png: &Option<PathBuf>, force: bool) -> Result<()> {
    if let Some(j) = json {
        fsio::check_clobber(j, force)?;
    }
    if let Some(stem) = png {
        let (p, s) = feedlens::view::plot::paths(stem);
        fsio::check_clobber(&p, force)?;
        fsio::check_clobber(&s, force)?;
    }
    Ok(())
}

fn write_plot(
    fig: &impl feedlens::view::plot::Figure,
    stem: &std::path::Path,
    force: bool,
) -> Result<()> {
    let (p, s) = feedlens::view::plot::write(fig, stem, force)?;
    eprintln!("wrote {} and {}", p.display(), s.display());
    Ok(())
}

fn diff(
    a: PathBuf,
    b: PathBuf,
    json: Option<PathBuf>,
    png: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    check_outputs(&json, &png, force)?;
    let (ca, cb) = (load(&a)?, load(&b)?);
    let d = feedlens::analysis::diff::weight_diff(
        &ca.model,
        &a.display().to_string(),
        &cb.model,
        &b.display().to_string(),
    )?;
    print!("{}", d.table());
    if let Some(j) = json {
        write_json(&j, &serde_json::to_value(&d)?, force)?;
    }
    if let Some(stem) = png {
        let mut bars = d.bars();
        bars.title = format!("weight diff: {} vs {}", cb.name(), ca.name());
        write_plot(&bars, &stem, force)?;
    }
    Ok(())
}

fn lens(a: LensArgs) -> Result<()> {
    check_outputs(&a.json, &a.png, a.force)?;
    let ck = load(&a.ckpt)?;
    let rows = prompts(&ck, &a.ids, &a.text)?;
    let tokens = match &a.tokens {
        Some(s) => feedlens::analysis::lens::token_ids(&ck, s, "--tokens")?,
        None => vec![],
    };
    let r = feedlens::analysis::lens::logit_lens(&ck.model, &rows, a.pos, &tokens)?;
    let labels: Vec<String> = r.tokens.iter().map(|&i| ck.label(i)).collect();
    print!("{}", r.table(&labels, |i| ck.label(i)));
    if let Some(j) = &a.json {
        let mut v = serde_json::to_value(&r)?;
        v["checkpoint"] = json!(a.ckpt);
        v["labels"] = json!(labels);
        v["ids"] = json!(rows);
        write_json(j, &v, a.force)?;
    }
    if let Some(stem) = &a.png {
        let at = ck.label(rows[0][r.pos]);
        let title = format!(
            "{}: logit lens at position {} (token '{at}')",
            ck.name(),
            r.pos
        );
        write_plot(&r.curves(&title, &labels), stem, a.force)?;
    }
    Ok(())
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
fn show(pb: &indicatif::ProgressBar, p: feedlens::lab::train::Progress) {
    pb.set_position(p.step as u64);
    if p.step.is_multiple_of(10) || p.step == p.steps {
        let r = p.ret.map(|r| format!(" return {r:.2}")).unwrap_or_default();
        pb.set_message(format!("loss {:.4}{r}", p.loss));
    }
}

fn zoo(a: ZooArgs) -> Result<()> {
    use feedlens::lab::{world::WorldConfig, zoo};
    use std::sync::Mutex;
    let world = WorldConfig::default();
    let plan = zoo::plan(a.seed, a.quick)?;
    let only = (!a.only.is_empty()).then_some(a.only.as_slice());
    let jobs = a.jobs.unwrap_or_else(feedlens::pool::cores);
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
    use feedlens::lab::train::{self as tr, Hyper, Recipe, Start};
    use feedlens::lab::world::{tokenizer_json, WorldConfig};
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
    let man = feedlens::lab::zoo::manifest(
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
    use feedlens::lab::eval::{self as ev, EvalOpts};
    use feedlens::lab::sample::Decode;
    use feedlens::lab::world::WorldConfig;
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

#[derive(clap::Args)]
struct PatchArgs {
    /// HF GPT-2 checkpoint directory.
    ckpt: PathBuf,
    /// Clean prompt, tokenized with the checkpoint's tokenizer.json.
    #[arg(long, required_unless_present_any = ["clean_ids", "pairs"], requires = "corrupt")]
    clean: Option<String>,
    /// Corrupted prompt (same number of tokens as the clean one).
    #[arg(long, requires = "clean")]
    corrupt: Option<String>,
    /// Clean prompt as comma-separated token ids.
    #[arg(long, conflicts_with = "clean", requires = "corrupt_ids")]
    clean_ids: Option<String>,
    /// Corrupted prompt as comma-separated token ids.
    #[arg(long, conflicts_with = "corrupt", requires = "clean_ids")]
    corrupt_ids: Option<String>,
    /// Toy-world contrast pairs instead of one prompt pair: optout, trigger or reward
    /// (DESIGN.md §6; results are means over the pairs).
    #[arg(long, conflicts_with_all = ["clean", "clean_ids"])]
    pairs: Option<String>,
    /// Number of world pairs.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the world pairs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// logit-diff:TOK_A,TOK_B or logprob:TOK (a token string the tokenizer knows, else an id).
    /// Default: the contrast's metric with --pairs, else logit-diff of the clean run's top
    /// token against the corrupted run's.
    #[arg(long)]
    metric: Option<String>,
    /// Position where the metric reads the logits (default: the last one).
    #[arg(long)]
    at: Option<usize>,
    /// Components to sweep, comma-separated: resid_pre, attn_out, mlp_out, head_out.
    #[arg(long, default_value = "resid_pre,attn_out,mlp_out,head_out")]
    hooks: String,
    /// denoise (clean into corrupted) or noise (corrupted into clean).
    #[arg(long, default_value = "denoise")]
    direction: String,
    /// exact (batched sweep), attribution (one forward + backward), or both (with agreement).
    #[arg(long, default_value = "exact", value_parser = ["exact", "attribution", "both"])]
    method: String,
    /// k for the top-k agreement of attribution with the exact sweep.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Output JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a heatmap per layer × position component to STEM-COMPONENT.png and .svg
    /// (normalised metric where clean ≠ corrupt, else raw).
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct PatchModelsArgs {
    /// Checkpoint A: its activations are patched in.
    a: PathBuf,
    /// Checkpoint B: the run that receives them (same shape as A).
    b: PathBuf,
    /// Prompts as text (B's tokenizer); repeat for several (all of one length).
    #[arg(long, required_unless_present = "prompt_ids")]
    prompts: Vec<String>,
    /// Prompts as comma-separated token ids; repeat for several.
    #[arg(long, conflicts_with = "prompts")]
    prompt_ids: Vec<String>,
    /// logit-diff:TOK_A,TOK_B or logprob:TOK.
    #[arg(long)]
    metric: String,
    /// Position where the metric reads the logits (default: the last one).
    #[arg(long)]
    at: Option<usize>,
    /// Patch only this position (default: every position).
    #[arg(long)]
    position: Option<usize>,
    /// Patch only this layer (default: each layer in turn).
    #[arg(long)]
    layer: Option<usize>,
    /// Components, comma-separated: resid_pre, attn_out, mlp_out.
    #[arg(long, default_value = "resid_pre,attn_out,mlp_out")]
    hooks: String,
    /// Output JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

/// A metric token: a token string the checkpoint's tokenizer knows, else a numeric id.
fn metric_token(ck: &checkpoint::Checkpoint, s: &str) -> feedlens::Result<u32> {
    if let Some(id) = ck.tokens.as_ref().and_then(|t| t.id(s)) {
        return Ok(id);
    }
    s.parse::<u32>().map_err(|_| {
        feedlens::Error::input(format!("--metric: token '{s}' is not in the vocabulary"))
    })
}

fn patch(a: PatchArgs) -> Result<()> {
    use feedlens::analysis::patching::{self, Component, Metric, Pair, Setup};
    if let Some(o) = &a.json {
        fsio::check_clobber(o, a.force)?;
    }
    let comps = Component::parse_list(&a.hooks, "--hooks")?;
    let stems: Vec<(Component, PathBuf)> = match &a.png {
        Some(stem) => comps
            .iter()
            .filter(|c| **c != Component::HeadOut)
            .map(|c| (*c, PathBuf::from(format!("{}-{c}", stem.display()))))
            .collect(),
        None => vec![],
    };
    for (_, stem) in &stems {
        check_outputs(&None, &Some(stem.clone()), a.force)?;
    }
    let direction = a.direction.parse()?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let setup = if let Some(c) = &a.pairs {
        let contrast: feedlens::lab::world::Contrast = c.parse().context("--pairs")?;
        let (mut pairs, pos) = patching::world_pairs(contrast, a.n, a.seed)?;
        if let Some(m) = &a.metric {
            let m = Metric::parse(m, |t| metric_token(&ck, t))?;
            pairs.iter_mut().for_each(|p| p.metric = m.clone());
        }
        Setup::new(model, pairs, Some(a.at.unwrap_or(pos)), direction)?
    } else {
        let (clean, corrupt) = match (&a.clean, &a.corrupt, &a.clean_ids, &a.corrupt_ids) {
            (Some(c), Some(x), _, _) => (ck.encode(c, "--clean")?, ck.encode(x, "--corrupt")?),
            (_, _, Some(c), Some(x)) => (
                feedlens::io::tokens::parse_ids(c, "--clean-ids")?,
                feedlens::io::tokens::parse_ids(x, "--corrupt-ids")?,
            ),
            _ => anyhow::bail!(
                "give --clean and --corrupt, --clean-ids and --corrupt-ids, or --pairs"
            ),
        };
        let arg = if a.clean.is_some() {
            "--clean"
        } else {
            "--clean-ids"
        };
        check_rows(model, std::slice::from_ref(&clean), arg)?;
        let arg = if a.corrupt.is_some() {
            "--corrupt"
        } else {
            "--corrupt-ids"
        };
        check_rows(model, std::slice::from_ref(&corrupt), arg)?;
        let metric = match &a.metric {
            Some(m) => Metric::parse(m, |t| metric_token(&ck, t))?,
            None => patching::default_metric(model, &clean, &corrupt, a.at)?,
        };
        let pair = Pair {
            clean,
            corrupt,
            metric,
        };
        Setup::new(model, vec![pair], a.at, direction)?
    };
    let report = patching::report(model, &setup, &comps, &a.method, a.top_k)?;
    let p0 = &setup.pairs[0];
    let labels = |ids: &[u32]| ids.iter().map(|&i| ck.label(i)).collect::<Vec<_>>();
    print!("{}", report.summary(&labels(&p0.clean)));
    if let Some(o) = &a.json {
        let mut v = report.to_json();
        v["checkpoint"] = json!(a.ckpt);
        v["tokens"] = json!(labels(&p0.clean));
        v["corrupt_tokens"] = json!(labels(&p0.corrupt));
        v["metric"]["labels"] = json!(labels(&p0.metric.tokens()));
        write_json(o, &v, a.force)?;
    }
    if let Some(sw) = report.exact.as_ref().or(report.attribution.as_ref()) {
        let normalised = sw.normalise(sw.clean_metric).is_some();
        for (c, stem) in &stems {
            let Some(g) = sw.grid(*c) else { continue };
            let (nl, t) = (g.shape[0], g.shape[1]);
            let cell = |x: f32| f64::from(sw.normalise(x).unwrap_or(x));
            let fig = feedlens::view::plot::PatchHeatmap {
                checkpoint: ck.name(),
                contrast: format!("{} pair(s)", sw.n_pairs),
                hook: c.to_string(),
                metric: format!(
                    "{}{}",
                    if normalised { "normalised " } else { "" },
                    p0.metric
                ),
                direction: format!("{:?}", sw.direction).to_lowercase(),
                layers: (0..nl).map(|l| l.to_string()).collect(),
                tokens: labels(&p0.clean),
                values: (0..nl)
                    .map(|l| g.raw[l * t..(l + 1) * t].iter().map(|&x| cell(x)).collect())
                    .collect(),
            };
            write_plot(&fig, stem, a.force)?;
        }
    }
    Ok(())
}

fn patch_models(a: PatchModelsArgs) -> Result<()> {
    use feedlens::analysis::patching::{self, Component, Metric};
    if let Some(o) = &a.json {
        fsio::check_clobber(o, a.force)?;
    }
    let comps = Component::parse_list(&a.hooks, "--hooks")?;
    let ca = load(&a.a)?;
    let cb = load(&a.b)?;
    let prompts: Vec<Vec<u32>> = if a.prompts.is_empty() {
        a.prompt_ids
            .iter()
            .map(|s| feedlens::io::tokens::parse_ids(s, "--prompt-ids"))
            .collect::<feedlens::Result<_>>()?
    } else {
        a.prompts
            .iter()
            .map(|t| cb.encode(t, "--prompts"))
            .collect::<feedlens::Result<_>>()?
    };
    let arg = if a.prompts.is_empty() {
        "--prompt-ids"
    } else {
        "--prompts"
    };
    check_rows(&cb.model, &prompts, arg)?;
    let metric = Metric::parse(&a.metric, |t| metric_token(&cb, t))?;
    let metrics = vec![metric; prompts.len()];
    let spec = patching::CrossSpec {
        comps,
        pos: a.at,
        position: a.position,
        layer: a.layer,
    };
    let x = patching::patch_models(&ca.model, &cb.model, &prompts, &metrics, &spec)?;
    println!(
        "A {} metric {:.4}, B {} metric {:.4} (mean over {} prompts, position {})",
        a.a.display(),
        x.a_metric,
        a.b.display(),
        x.b_metric,
        x.n_prompts,
        x.pos
    );
    for (c, v) in &x.results {
        let cells: Vec<String> = v
            .iter()
            .map(|&m| match x.normalise(m) {
                Some(n) => format!("{m:.3} ({n:.2})"),
                None => format!("{m:.3}"),
            })
            .collect();
        println!("  {c:<9} at layers {:?}: {}", x.layers, cells.join("  "));
    }
    if let Some(o) = &a.json {
        let mut v = x.to_json();
        v["a"] = json!(a.a);
        v["b"] = json!(a.b);
        v["prompts"] = json!(prompts);
        v["metric"] = json!(metrics[0]);
        write_json(o, &v, a.force)?;
    }
    Ok(())
}
fn probe(a: ProbeArgs) -> Result<()> {
    match (a.sub, a.spec) {
        (
            Some(ProbeCmd::Fit {
                data,
                train_rows,
                c,
                json,
                force,
            }),
            _,
        ) => probe_fit(data, train_rows, c, json, force),
        (None, Some(spec)) => probe_spec(spec, a.json, a.acts, a.png, a.force),
        (None, None) => anyhow::bail!("probe: give a spec file or `fit`"),
    }
}

fn probe_fit(data: PathBuf, rows: String, c: f64, out: Option<PathBuf>, force: bool) -> Result<()> {
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let rep = feedlens::analysis::probes::fit_file(&data, &rows, c)?;
    println!(
        "test accuracy {:.4}  test AUROC {:.4}  ({} test rows, {} Newton steps, |grad| {:.1e})",
        rep.test_accuracy,
        rep.test_auroc,
        rep.test_proba.len(),
        rep.iterations,
        rep.grad_norm
    );
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(&rep)?, force)?;
    }
    Ok(())
}

fn probe_spec(
    spec: PathBuf,
    out: Option<PathBuf>,
    acts: Option<PathBuf>,
    png: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    use feedlens::analysis::probes;
    check_outputs(&None, &png, force)?;
    let (json_path, st_path) = probes::result_paths(&spec);
    for p in [Some(&json_path), Some(&st_path), out.as_ref()]
        .into_iter()
        .flatten()
    {
        fsio::check_clobber(p, force)?;
    }
    let run = probes::run_spec(&spec)?;
    let r = &run.result;
    println!(
        "{} (label {}, {} at position {})",
        r.name, r.spec.label, r.spec.hook, r.spec.position
    );
    for ck in &r.checkpoints {
        println!(
            "  {} [sha256 {}…] class counts {:?}",
            ck.name,
            &ck.sha256[..12.min(ck.sha256.len())],
            ck.class_counts
        );
        println!("    layer  logistic acc/AUROC  mass-mean AUROC  control acc  selectivity  random-best  top-PC");
        for l in &ck.layers {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            println!(
                "    {:>5}  {:.3} / {:.3}        {:>6}           {:>6}       {:>6}       {:>6}       {:.3}",
                l.layer, l.logistic.accuracy, l.logistic.auroc, opt(l.mass_mean.map(|m| m.auroc)),
                opt(l.control.map(|c| c.accuracy)), opt(l.selectivity), opt(l.random_best_auroc), l.top_pc_auroc
            );
        }
    }
    for t in &r.transfer {
        let au: Vec<String> = t.layers.iter().map(|s| format!("{:.3}", s.auroc)).collect();
        println!(
            "  transfer {} → {}: AUROC per layer {}",
            t.from,
            t.to,
            au.join(" ")
        );
    }
    let (j, s) = probes::write_run(&spec, &run, force)?;
    eprintln!("wrote {} and {}", j.display(), s.display());
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(r)?, force)?;
    }
    if let Some(dir) = acts {
        for (name, set) in &run.sets {
            let p = dir.join(format!("{name}.safetensors"));
            fsio::write_file(&p, &set.safetensors_bytes()?, force)?;
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(stem) = png {
        use feedlens::view::plot::{Line, ProbeCurves};
        let (mut accuracy, mut auroc) = (vec![], vec![]);
        for (k, c) in r.checkpoints.iter().enumerate() {
            let line = |label: String, values: Vec<f64>, dashed| Line {
                label,
                values,
                dashed,
                color: k,
            };
            let ls = &c.layers;
            accuracy.push(line(
                c.name.clone(),
                ls.iter().map(|l| l.logistic.accuracy).collect(),
                false,
            ));
            auroc.push(line(
                c.name.clone(),
                ls.iter().map(|l| l.logistic.auroc).collect(),
                false,
            ));
            if ls.iter().all(|l| l.control.is_some()) {
                let v = ls
                    .iter()
                    .map(|l| l.control.as_ref().map_or(0.0, |s| s.accuracy))
                    .collect();
                accuracy.push(line(format!("{} control task", c.name), v, true));
            }
            if ls.iter().all(|l| l.random_best_auroc.is_some()) {
                let v = ls
                    .iter()
                    .map(|l| l.random_best_auroc.unwrap_or(0.0))
                    .collect();
                auroc.push(line(format!("{} best random direction", c.name), v, true));
            }
        }
        let fig = ProbeCurves {
            title: format!(
                "probe {} ({} at position {})",
                r.name, r.spec.label, r.spec.position
            ),
            layers: r.layers.iter().map(|l| l.to_string()).collect(),
            accuracy,
            auroc,
        };
        write_plot(&fig, &stem, force)?;
    }
    Ok(())
}

fn check(dir: PathBuf, out: Option<PathBuf>, force: bool) -> Result<()> {
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let outcomes = feedlens::analysis::probes::check_dir(&dir)?;
    for o in &outcomes {
        println!(
            "{} {}",
            if o.pass { "pass" } else { "FAIL" },
            o.spec.display()
        );
        for p in &o.problems {
            println!("    {p}");
        }
    }
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(&outcomes)?, force)?;
    }
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 {
        // The first failure's first problem goes on the error line itself, so the one line
        // names the file at fault and what is wrong with it.
        let first = outcomes.iter().find(|o| !o.pass);
        let why = first
            .and_then(|o| {
                o.problems
                    .first()
                    .map(|p| format!(" (first: {}: {p})", o.spec.display()))
            })
            .unwrap_or_default();
        anyhow::bail!(
            "{dir}: {failed} of {} probe specs drifted or failed{why}",
            outcomes.len(),
            dir = dir.display()
        );
    }
    println!("{} probe specs pass", outcomes.len());
    Ok(())
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Pairs file; checkpoint names are directories beside it.
    #[arg(long, default_value = "checkpoints/pairs.toml")]
    pairs: PathBuf,
    /// Report only these pairs (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder (default: reports/zoo, or reports/NAME with --only NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing report folder.
    #[arg(long)]
    force: bool,
    /// Prompts per behaviour row; probes use N/4, cross-checkpoint patching and the lens N/8,
    /// within-checkpoint patching N/128 prompt pairs.
    #[arg(long, default_value_t = feedlens::report::DEFAULT_N)]
    n: usize,
    /// Seed of every prompt set.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Analyses run at once (default: the number of cores), each on one thread.
    #[arg(long)]
    jobs: Option<usize>,
}

/// indicatif bars, one per stage of the report, and each stage's wall time.
#[derive(Default)]
struct Stages {
    multi: indicatif::MultiProgress,
    current: std::sync::Mutex<Option<(indicatif::ProgressBar, std::time::Instant)>>,
    times: std::sync::Mutex<Vec<(String, f64)>>,
}

impl feedlens::report::Progress for Stages {
    fn stage(&self, name: &str, total: usize) {
        let pb = self.multi.add(bar(total as u64, name));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((pb, std::time::Instant::now()));
    }
    fn step(&self, _: &str, item: &str) {
        if let Some((pb, _)) = &*self.current.lock().unwrap_or_else(|e| e.into_inner()) {
            pb.set_message(item.to_string());
            pb.inc(1);
        }
    }
    fn done(&self, name: &str) {
        if let Some((pb, t)) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            pb.finish_with_message("");
            let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
            times.push((name.to_string(), t.elapsed().as_secs_f64()));
        }
    }
}

fn report(a: ReportArgs) -> Result<()> {
    use feedlens::report::{self, Pairs, Settings};
    let out = a.out.clone().unwrap_or_else(|| match a.only.as_slice() {
        [] => PathBuf::from("reports/zoo"),
        names => PathBuf::from("reports").join(feedlens::view::html::slug(&names.join("+"))),
    });
    if a.n == 0 {
        anyhow::bail!("--n: must be at least 1");
    }
    report::check_output(&out, a.force)?;
    let pairs = Pairs::load(&a.pairs)?.only(&a.only)?;
    pairs.check()?;
    let mut settings = Settings {
        seed: a.seed,
        ..Settings::with_n(a.n)
    };
    settings.jobs = a.jobs.unwrap_or(settings.jobs).max(1);
    let t0 = std::time::Instant::now();
    let stages = Stages::default();
    let data = report::analyse(&pairs, &settings, &stages)?;
    let files = report::render(&data, &stages)?;
    report::write(&out, &files, a.force)?;
    let times = stages.times.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<String> = times.iter().map(|(n, t)| format!("{n} {t:.1}")).collect();
    println!(
        "wrote {} ({} pairs, {} files) in {:.1} s (stages, s: {})",
        out.join("index.html").display(),
        data.pairs.len(),
        files.len(),
        t0.elapsed().as_secs_f64(),
        times.join(", ")
    );
    Ok(())
}
