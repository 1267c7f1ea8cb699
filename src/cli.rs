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
    /// Run a probe spec (`feedlens probe probes/NAME.toml`), or fit one logistic probe on your
    /// own activations (`feedlens probe fit --data FILE.safetensors --train-rows 0..K`).
    Probe(ProbeArgs),
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
        Cmd::Probe(a) => probe(a),
        Cmd::Check { dir, json, force } => check(dir, json, force),
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
        (None, Some(spec)) => probe_spec(spec, a.json, a.force),
        (None, None) => anyhow::bail!("probe: give a spec file or `fit`"),
    }
}

fn probe_fit(
    data: PathBuf,
    rows: String,
    c: f64,
    out: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let rep = feedlens::probes::fit_file(&data, &rows, c)?;
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

fn probe_spec(spec: PathBuf, out: Option<PathBuf>, force: bool) -> Result<()> {
    use feedlens::probes;
    let (json_path, st_path) = probes::result_paths(&spec);
    for p in [Some(&json_path), Some(&st_path), out.as_ref()].into_iter().flatten() {
        fsio::check_clobber(p, force)?;
    }
    let run = probes::run_spec(&spec)?;
    let r = &run.result;
    println!("{} (label {}, {} at position {})", r.name, r.spec.label, r.spec.hook, r.spec.position);
    for ck in &r.checkpoints {
        println!("  {} [sha256 {}…] class counts {:?}", ck.name, &ck.sha256[..12.min(ck.sha256.len())], ck.class_counts);
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
        println!("  transfer {} → {}: AUROC per layer {}", t.from, t.to, au.join(" "));
    }
    let (j, s) = probes::write_run(&spec, &run, force)?;
    eprintln!("wrote {} and {}", j.display(), s.display());
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(r)?, force)?;
    }
    Ok(())
}

fn check(dir: PathBuf, out: Option<PathBuf>, force: bool) -> Result<()> {
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let outcomes = feedlens::probes::check_dir(&dir)?;
    for o in &outcomes {
        println!("{} {}", if o.pass { "pass" } else { "FAIL" }, o.spec.display());
        for p in &o.problems {
            println!("    {p}");
        }
    }
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(&outcomes)?, force)?;
    }
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 {
        anyhow::bail!("{dir}: {failed} of {} probe specs drifted or failed", outcomes.len(), dir = dir.display());
    }
    println!("{} probe specs pass", outcomes.len());
    Ok(())
}
