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
    /// Activation patching sweep (resid_pre / attn_out / mlp_out × layer × position, per head).
    Patch(PatchArgs),
    /// Cross-checkpoint patching: run B with A's activation at each layer.
    PatchModels(PatchModelsArgs),
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
        Cmd::Patch(a) => patch(a),
        Cmd::PatchModels(a) => patch_models(a),
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
struct PatchArgs {
    /// HF GPT-2 checkpoint directory.
    ckpt: PathBuf,
    /// Clean prompt, tokenized with the checkpoint's tokenizer.json.
    #[arg(long, required_unless_present = "clean_ids", requires = "corrupt")]
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
    /// logit-diff:TOK_A,TOK_B or logprob:TOK (a token string the tokenizer knows, else an id).
    /// Default: logit-diff of the clean run's top token against the corrupted run's.
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
    use feedlens::patching::{self, Component, Metric, Pair, Setup};
    if let Some(o) = &a.json {
        fsio::check_clobber(o, a.force)?;
    }
    let comps = Component::parse_list(&a.hooks, "--hooks")?;
    let direction = a.direction.parse()?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let (clean, corrupt) = match (&a.clean, &a.corrupt, &a.clean_ids, &a.corrupt_ids) {
        (Some(c), Some(x), _, _) => (ck.encode(c, "--clean")?, ck.encode(x, "--corrupt")?),
        (_, _, Some(c), Some(x)) => (
            feedlens::tokens::parse_ids(c, "--clean-ids")?,
            feedlens::tokens::parse_ids(x, "--corrupt-ids")?,
        ),
        _ => anyhow::bail!("give --clean and --corrupt, or --clean-ids and --corrupt-ids"),
    };
    let metric = match &a.metric {
        Some(m) => Metric::parse(m, |t| metric_token(&ck, t))?,
        None => patching::default_metric(model, &clean, &corrupt, a.at)?,
    };
    let pair = Pair {
        clean,
        corrupt,
        metric,
    };
    let setup = Setup::new(model, vec![pair], a.at, direction)?;
    let report = patching::report(model, &setup, &comps, &a.method, a.top_k)?;
    let p0 = &setup.pairs[0];
    let labels = |ids: &[u32]| ids.iter().map(|&i| ck.label(i)).collect::<Vec<_>>();
    print!("{}", report.summary(&labels(&p0.clean)));
    if let Some(o) = &a.json {
        let mut v = report.to_json();
        v["checkpoint"] = json!(a.ckpt);
        v["tokens"] = json!(labels(&p0.clean));
        v["corrupt_tokens"] = json!(labels(&p0.corrupt));
        v["metric"]["labels"] = json!(labels(&metric_ids(&p0.metric)));
        write_json(o, &v, a.force)?;
    }
    Ok(())
}

fn metric_ids(m: &feedlens::patching::Metric) -> Vec<u32> {
    match *m {
        feedlens::patching::Metric::LogitDiff { a, b } => vec![a, b],
        feedlens::patching::Metric::LogProb { tok } => vec![tok],
    }
}

fn patch_models(a: PatchModelsArgs) -> Result<()> {
    use feedlens::patching::{self, Component, Metric};
    if let Some(o) = &a.json {
        fsio::check_clobber(o, a.force)?;
    }
    let comps = Component::parse_list(&a.hooks, "--hooks")?;
    let ca = load(&a.a)?;
    let cb = load(&a.b)?;
    let prompts: Vec<Vec<u32>> = if a.prompts.is_empty() {
        a.prompt_ids
            .iter()
            .map(|s| feedlens::tokens::parse_ids(s, "--prompt-ids"))
            .collect::<feedlens::Result<_>>()?
    } else {
        a.prompts
            .iter()
            .map(|t| cb.encode(t, "--prompts"))
            .collect::<feedlens::Result<_>>()?
    };
    let metric = Metric::parse(&a.metric, |t| metric_token(&cb, t))?;
    let metrics = vec![metric; prompts.len()];
    let x = patching::patch_models(
        &ca.model, &cb.model, &prompts, &metrics, a.at, &comps, a.position,
    )?;
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
        println!("  {c:<9} by layer: {}", cells.join("  "));
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
