//! `patch` and `patch-models`: activation patching within one checkpoint (a prompt pair or the
//! world's contrast pairs) and across two.
//! Must not hold a domain rule (pairs and metrics are `analysis::patching`'s).

use super::{load, prompts, JsonOut};
use anyhow::Result;
use feedlens::analysis::patching::{self, Direction, Method, Metric, Pair, Setup};
use feedlens::analysis::site::Site;
use feedlens::budget;
use feedlens::lab::world::{self, Contrast};
use feedlens::view::{figures, tables};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct PatchArgs {
    /// HF checkpoint directory (GPT-2, GPT-NeoX or Llama-style).
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
    /// (docs/DESIGN.md §3; results are means over the pairs).
    #[arg(long, conflicts_with_all = ["clean", "clean_ids"])]
    pairs: Option<Contrast>,
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
    #[arg(long, default_value_t = Direction::Denoise)]
    direction: Direction,
    /// exact (batched sweep), attribution (one forward + backward), or both (with agreement).
    #[arg(long, value_enum, default_value_t = Methods::Exact)]
    method: Methods,
    /// k for the top-k agreement of attribution with the exact sweep.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    #[command(flatten)]
    out: JsonOut,
    /// Write a map per component to STEM-COMPONENT.png and .svg (layer × position; per head
    /// for head_out), coloured by the share of the clean–corrupt gap each patch moves.
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
}

/// The sweeps `patch` runs.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Methods {
    /// The batched exact sweep.
    Exact,
    /// Attribution patching (one forward + backward).
    Attribution,
    /// Both, with their agreement.
    Both,
}

impl Methods {
    fn list(self) -> Vec<Method> {
        match self {
            Methods::Exact => vec![Method::Exact],
            Methods::Attribution => vec![Method::Attribution],
            Methods::Both => vec![Method::Exact, Method::Attribution],
        }
    }
}

#[derive(clap::Args)]
pub(super) struct PatchModelsArgs {
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
    #[command(flatten)]
    out: JsonOut,
}

pub(super) fn patch(a: PatchArgs) -> Result<()> {
    let comps = Site::parse_list(&a.hooks, &Site::PATCHED, "--hooks")?;
    let stems: Vec<(Site, PathBuf)> = match &a.png {
        Some(stem) => comps
            .iter()
            .map(|c| (*c, PathBuf::from(format!("{}-{c}", stem.display()))))
            .collect(),
        None => vec![],
    };
    let mut out = stems
        .iter()
        .fold(a.out.plan(), |o, (_, s)| o.plot_at(Some(s)))
        .input(&a.ckpt)
        .check()?;
    let ck = load(&a.ckpt)?;
    let model = &ck.model;
    let metric_token = |t: &str| ck.token(t, "--metric");
    let (setup, world_labels) = if let Some(contrast) = a.pairs {
        let t = world::PROMPT_LEN as u64 + 1;
        budget::check(
            &format!("--n {}", a.n),
            budget::patching(model.config(), a.n as u64, t),
        )?;
        let (mut pairs, pos) = patching::world_pairs(contrast, a.n, a.seed)?;
        if let Some(m) = &a.metric {
            let m = Metric::parse(m, metric_token)?;
            pairs.iter_mut().for_each(|p| p.metric = m.clone());
        }
        let setup = Setup::new(model, pairs, Some(a.at.unwrap_or(pos)), a.direction)?;
        (setup, true)
    } else {
        let (clean, corrupt) = match (&a.clean, &a.corrupt, &a.clean_ids, &a.corrupt_ids) {
            (Some(c), Some(x), _, _) => (
                prompts(
                    &ck,
                    &[],
                    std::slice::from_ref(c),
                    ("--clean-ids", "--clean"),
                )?,
                prompts(
                    &ck,
                    &[],
                    std::slice::from_ref(x),
                    ("--corrupt-ids", "--corrupt"),
                )?,
            ),
            (_, _, Some(c), Some(x)) => (
                prompts(
                    &ck,
                    std::slice::from_ref(c),
                    &[],
                    ("--clean-ids", "--clean"),
                )?,
                prompts(
                    &ck,
                    std::slice::from_ref(x),
                    &[],
                    ("--corrupt-ids", "--corrupt"),
                )?,
            ),
            _ => anyhow::bail!(
                "give --clean and --corrupt, --clean-ids and --corrupt-ids, or --pairs"
            ),
        };
        let (clean, corrupt) = (clean[0].clone(), corrupt[0].clone());
        let metric = match &a.metric {
            Some(m) => Metric::parse(m, metric_token)?,
            None => patching::default_metric(model, &clean, &corrupt, a.at)?,
        };
        let pair = Pair {
            clean,
            corrupt,
            metric,
        };
        (Setup::new(model, vec![pair], a.at, a.direction)?, false)
    };
    let report = patching::report(model, &setup, &comps, &a.method.list(), a.top_k)?;
    let p0 = &setup.pairs[0];
    let labels = |ids: &[u32]| ids.iter().map(|&i| ck.label(i)).collect::<Vec<_>>();
    print!("{}", tables::patching(&report, &labels(&p0.clean)));
    if a.out.json.is_some() {
        let mut v = report.to_json();
        v["checkpoint"] = json!(a.ckpt);
        v["tokens"] = json!(labels(&p0.clean));
        v["corrupt_tokens"] = json!(labels(&p0.corrupt));
        v["metric"]["labels"] = json!(labels(&p0.metric.tokens()));
        out.json(&a.out.json, &v)?;
    }
    // The world's contrast pairs differ in their digits: label those positions by slot.
    let tokens = if world_labels {
        figures::position_labels(&setup.pairs, world::label, world::slot_name)
    } else {
        figures::position_labels(&setup.pairs, |i| ck.label(i), |p| format!("p{p}"))
    };
    let contrast = figures::contrast_label(&setup.pairs, &tokens);
    let sw = report.main();
    for (c, stem) in &stems {
        if let Some(fig) = figures::patch_map(
            &ck.name(),
            &contrast,
            &tokens,
            sw,
            *c,
            patching::DEFAULT_MIN_GAP,
            None,
        ) {
            out.plot(&fig, stem)?;
        }
    }
    out.finish()
}

pub(super) fn patch_models(a: PatchModelsArgs) -> Result<()> {
    let mut out = a.out.plan().input(&a.a).input(&a.b).check()?;
    let comps = Site::parse_list(&a.hooks, &Site::PATCHED, "--hooks")?;
    let ca = load(&a.a)?;
    let cb = load(&a.b)?;
    let rows = prompts(
        &cb,
        &a.prompt_ids,
        &a.prompts,
        ("--prompt-ids", "--prompts"),
    )?;
    let metric = Metric::parse(&a.metric, |t| cb.token(t, "--metric"))?;
    let metrics = vec![metric; rows.len()];
    let spec = patching::CrossSpec {
        comps,
        pos: a.at,
        position: a.position,
        layer: a.layer,
    };
    let x = patching::patch_models(&ca.model, &cb.model, &rows, &metrics, &spec)?;
    print!(
        "{}",
        tables::cross(&x, &a.a.display().to_string(), &a.b.display().to_string())
    );
    if a.out.json.is_some() {
        let mut v = x.to_json();
        v["a"] = json!(a.a);
        v["b"] = json!(a.b);
        v["prompts"] = json!(rows);
        v["metric"] = json!(metrics[0]);
        out.json(&a.out.json, &v)?;
    }
    out.finish()
}
