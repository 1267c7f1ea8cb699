//! `inspect` and `run`: a checkpoint's contents, and one forward pass with chosen hook values.
//! Must not hold a domain rule.

use super::{load, prompts, JsonOut, Outputs};
use anyhow::{Context, Result};
use feedlens::io::json;
use feedlens::{Hook, Input, Run};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct InspectArgs {
    /// HF checkpoint directory (GPT-2, GPT-NeoX or Llama-style).
    ckpt: PathBuf,
    #[command(flatten)]
    out: JsonOut,
}

#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// HF checkpoint directory (GPT-2, GPT-NeoX or Llama-style).
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

pub(super) fn inspect(a: InspectArgs) -> Result<()> {
    let mut out = a.out.plan().input(&a.ckpt).check()?;
    let ck = load(&a.ckpt)?;
    let c = ck.model.config();
    println!("{}", a.ckpt.display());
    println!("  {}", c.describe());
    println!(
        "  n_layer {} n_embd {} n_head {} n_kv_head {} d_head {} d_mlp {} n_positions {} vocab_size {} eps {:e}",
        c.n_layer, c.n_embd, c.n_head, c.arch.n_kv_head, c.d_head(), c.d_mlp(), c.n_positions, c.vocab_size, c.layer_norm_epsilon
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
    let v = json!({
        "dir": a.ckpt, "family": c.arch.family, "architecture": c.describe(),
        "n_kv_head": c.arch.n_kv_head, "hooks": ck.model.hooks(),
        "config": c, "n_params": ck.model.n_params(), "sha256": ck.sha256,
        "tensors": ck.stored.iter().map(|(n, s, d)| json!({"name": n, "shape": s, "dtype": d})).collect::<Vec<_>>(),
        "manifest": ck.manifest, "has_tokenizer": ck.tokens.is_some(),
    });
    out.json(&a.out.json, &v)?;
    out.finish()
}

pub(super) fn run(a: RunArgs) -> Result<()> {
    let json = Some(a.json.clone());
    let mut files = Outputs::new(a.force)
        .json_at(&json)
        .input(&a.ckpt)
        .check()?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let rows = prompts(&ck, &a.ids, &a.text, ("--ids", "--text"))?;
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
    files.json(&json, &v)?;
    files.finish()
}
