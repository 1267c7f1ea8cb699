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

/// Prompts from `--ids` (comma-separated ids) or `--text` (tokenized), one row each.
fn prompts(ck: &checkpoint::Checkpoint, ids: &[String], text: &[String]) -> Result<Vec<Vec<u32>>> {
    Ok(if text.is_empty() {
        ids.iter()
            .map(|s| feedlens::tokens::parse_ids(s, "--ids"))
            .collect::<feedlens::Result<_>>()?
    } else {
        text.iter()
            .map(|t| ck.encode(t, "--text"))
            .collect::<feedlens::Result<_>>()?
    })
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
        let (p, s) = feedlens::plot::paths(stem);
        fsio::check_clobber(&p, force)?;
        fsio::check_clobber(&s, force)?;
    }
    Ok(())
}

fn write_plot(
    fig: &impl feedlens::plot::Figure,
    stem: &std::path::Path,
    force: bool,
) -> Result<()> {
    let (p, s) = feedlens::plot::write(fig, stem, force)?;
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
    let d = feedlens::diff::weight_diff(
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
        Some(s) => feedlens::lens::token_ids(&ck, s, "--tokens")?,
        None => vec![],
    };
    let r = feedlens::lens::logit_lens(&ck.model, &rows, a.pos, &tokens)?;
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
