//! Activation patching: the metric, prompt-pair batches, exact sweeps (a fast batched engine and
//! a naive one-forward-per-cell reference), attribution patching and cross-checkpoint patching.
//! Owns patching results and their JSON; every activation comes from `Gpt2::forward`.
//!
//! ```no_run
//! use feedlens::analysis::patching::{self, Component, Direction, Metric, Pair, Setup};
//! let ck = feedlens::io::checkpoint::load("tests/fixtures/gpt2-tiny")?;
//! let pair = Pair { clean: vec![1, 2, 3, 4], corrupt: vec![1, 7, 3, 4],
//!                   metric: Metric::LogitDiff { a: 18, b: 2 } };
//! let setup = Setup::new(&ck.model, vec![pair], None, Direction::Denoise)?;
//! let sweep = patching::sweep(&ck.model, &setup, &Component::ALL)?;
//! println!("{}", sweep.to_json());
//! # Ok::<(), feedlens::Error>(())
//! ```

mod attribution;
mod cross;
mod sweep;

pub use attribution::{attribution, compare, Agreement};
pub use cross::{patch_models, Cross, CrossSpec};
pub use sweep::{sanity, sweep, sweep_naive, sweep_with, Chunking, Sanity};

use crate::model::hooks::Hook;
use crate::model::{Gpt2, Logits, Run};
use crate::lab::world::{self, Contrast, Mode, PromptDist, WorldConfig};
use crate::io::json;
use crate::{Error, Input, Result};
use candle_core::{Device, Tensor, D};
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt;
use std::str::FromStr;

/// What is patched at one (layer, position[, head]) cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// `blocks.{l}.hook_resid_pre`, the whole residual stream entering block l.
    ResidPre,
    /// `blocks.{l}.hook_attn_out`.
    AttnOut,
    /// `blocks.{l}.hook_mlp_out`.
    MlpOut,
    /// One head's output: `blocks.{l}.attn.hook_z` at one head (TransformerLens's
    /// `get_act_patch_attn_head_out_by_pos`).
    HeadOut,
}

impl Component {
    /// Every component, in output order.
    pub const ALL: [Component; 4] = [
        Component::ResidPre,
        Component::AttnOut,
        Component::MlpOut,
        Component::HeadOut,
    ];
    /// The hook patched at layer `l`.
    pub fn hook(self, l: usize) -> Hook {
        match self {
            Component::ResidPre => Hook::ResidPre(l),
            Component::AttnOut => Hook::AttnOut(l),
            Component::MlpOut => Hook::MlpOut(l),
            Component::HeadOut => Hook::Z(l),
        }
    }
    /// Cells per (layer, position): `n_head` for heads, else 1.
    pub fn width(self, n_head: usize) -> usize {
        if self == Component::HeadOut {
            n_head
        } else {
            1
        }
    }
    /// Parse a comma-separated list (`resid_pre,attn_out`); `what` names the argument.
    pub fn parse_list(s: &str, what: &str) -> Result<Vec<Component>> {
        let mut v = Vec::new();
        for name in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let c: Component = name
                .parse()
                .map_err(|e| Error::input(format!("{what}: {e}")))?;
            if !v.contains(&c) {
                v.push(c);
            }
        }
        if v.is_empty() {
            input_err!("{what}: no components given");
        }
        Ok(v)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::ResidPre => "resid_pre",
            Component::AttnOut => "attn_out",
            Component::MlpOut => "mlp_out",
            Component::HeadOut => "head_out",
        })
    }
}

impl FromStr for Component {
    type Err = Error;
    fn from_str(s: &str) -> Result<Component> {
        Component::ALL
            .into_iter()
            .find(|c| c.to_string() == s)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown component '{s}' (expected resid_pre, attn_out, mlp_out or head_out)"
                ))
            })
    }
}

/// Which run receives the other's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Clean activation into the corrupted run (is this cell sufficient to restore the metric?).
    Denoise,
    /// Corrupted activation into the clean run (is this cell necessary for it?).
    Noise,
}

impl FromStr for Direction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Direction> {
        match s {
            "denoise" | "denoising" => Ok(Direction::Denoise),
            "noise" | "noising" => Ok(Direction::Noise),
            _ => input_err!("--direction: '{s}' (expected denoise or noise)"),
        }
    }
}

/// The scalar read from the logits at the metric position.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Metric {
    /// `logits[a] − logits[b]`.
    LogitDiff { a: u32, b: u32 },
    /// `log_softmax(logits)[tok]`.
    LogProb { tok: u32 },
}

impl Metric {
    /// Parse `logit-diff:A,B` or `logprob:T`; `token` turns one token (string or id) into an
    /// id and reports unknown ones.
    pub fn parse(s: &str, mut token: impl FnMut(&str) -> Result<u32>) -> Result<Metric> {
        let (kind, toks) = s.split_once(':').unwrap_or((s, ""));
        let toks: Vec<&str> = toks.split(',').map(str::trim).collect();
        match (kind, toks.as_slice()) {
            ("logit-diff", [a, b]) if !a.is_empty() && !b.is_empty() => Ok(Metric::LogitDiff {
                a: token(a)?,
                b: token(b)?,
            }),
            ("logprob" | "log-prob", [t]) if !t.is_empty() => {
                Ok(Metric::LogProb { tok: token(t)? })
            }
            _ => input_err!("--metric: '{s}' (expected logit-diff:TOK_A,TOK_B or logprob:TOK)"),
        }
    }
    /// The token ids the metric reads.
    pub fn tokens(&self) -> Vec<u32> {
        match *self {
            Metric::LogitDiff { a, b } => vec![a, b],
            Metric::LogProb { tok } => vec![tok],
        }
    }
}

impl fmt::Display for Metric {
    /// The `--metric` syntax: `logit-diff:A,B` or `logprob:T` (ids).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::LogitDiff { a, b } => write!(f, "logit-diff:{a},{b}"),
            Metric::LogProb { tok } => write!(f, "logprob:{tok}"),
        }
    }
}

/// Metric value of each row. logits: `[rows, vocab]`; `metrics[r]` is row r's metric.
/// Returns `[rows]`; differentiable (used by attribution patching).
pub(crate) fn metric_values(logits: &Tensor, metrics: &[&Metric]) -> Result<Tensor> {
    let dev = logits.device();
    let rows = metrics.len();
    let col = |f: &dyn Fn(&Metric) -> u32| -> Result<Tensor> {
        let v: Vec<u32> = metrics.iter().map(|m| f(m)).collect();
        Ok(Tensor::from_vec(v, (rows, 1), dev)?)
    };
    // value = logit[a] − wb·logit[b] − wl·logsumexp: one formula for both kinds, so pairs
    // with different metric kinds can share a batch.
    let first = |m: &Metric| match *m {
        Metric::LogitDiff { a, .. } => a,
        Metric::LogProb { tok } => tok,
    };
    let second = |m: &Metric| match *m {
        Metric::LogitDiff { b, .. } => b,
        Metric::LogProb { tok } => tok,
    };
    let logits = logits.contiguous()?;
    let ga = logits.gather(&col(&first)?, 1)?.squeeze(1)?;
    let gb = logits.gather(&col(&second)?, 1)?.squeeze(1)?;
    let weights = |f: &dyn Fn(&Metric) -> f32| {
        Tensor::from_vec(metrics.iter().map(|m| f(m)).collect::<Vec<_>>(), rows, dev)
    };
    let wb = weights(&|m| matches!(m, Metric::LogitDiff { .. }) as u8 as f32)?;
    let mut v = (ga - (gb * wb)?)?;
    if metrics.iter().any(|m| matches!(m, Metric::LogProb { .. })) {
        let wl = weights(&|m| matches!(m, Metric::LogProb { .. }) as u8 as f32)?;
        // logsumexp with the row max subtracted, differentiable.
        let mx = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits
            .broadcast_sub(&mx)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + mx)?
            .squeeze(1)?;
        v = (v - (lse * wl)?)?;
    }
    Ok(v)
}

/// One clean / corrupted prompt pair (same length, aligned position by position) and the
/// metric read from it (tokens may differ between pairs; the position is shared).
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// Clean prompt ids.
    pub clean: Vec<u32>,
    /// Corrupted prompt ids.
    pub corrupt: Vec<u32>,
    /// The metric for this pair.
    pub metric: Metric,
}

/// A checked batch of pairs, the metric position and the direction. Results are means over
/// the pairs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The pairs (at least one; all of one length).
    pub pairs: Vec<Pair>,
    /// Position where the metric reads the logits.
    pub pos: usize,
    /// Which run receives the patch.
    pub direction: Direction,
}

impl Setup {
    /// Check `pairs` against `model`: equal lengths, ids and metric tokens in the vocabulary,
    /// the position in range (default: the last one).
    pub fn new(
        model: &Gpt2,
        pairs: Vec<Pair>,
        pos: Option<usize>,
        direction: Direction,
    ) -> Result<Setup> {
        let Some(first) = pairs.first() else {
            input_err!("no prompt pairs given");
        };
        let len = first.clean.len();
        for (i, p) in pairs.iter().enumerate() {
            if p.clean.len() != p.corrupt.len() {
                let which = if pairs.len() > 1 {
                    format!("pair {i}: ")
                } else {
                    String::new()
                };
                input_err!(
                    "{which}clean has {} tokens but corrupt has {}; patching needs aligned prompts of equal length",
                    p.clean.len(),
                    p.corrupt.len()
                );
            }
            if p.clean.len() != len {
                input_err!(
                    "pair {i}: {} tokens, pair 0 has {len}; all pairs need one length",
                    p.clean.len()
                );
            }
            model.check_ids(&[p.clean.clone(), p.corrupt.clone()])?;
            let vocab = model.config().vocab_size;
            if let Some(t) = p.metric.tokens().into_iter().find(|&t| t as usize >= vocab) {
                input_err!("--metric: token id {t} is not in the vocabulary (vocab_size {vocab})");
            }
        }
        let pos = pos.unwrap_or(len - 1);
        if pos >= len {
            input_err!("--at: position {pos} is out of range 0..{len}");
        }
        Ok(Setup {
            pairs,
            pos,
            direction,
        })
    }
    /// Prompt length.
    pub fn len(&self) -> usize {
        self.pairs[0].clean.len()
    }
    /// True when there are no positions (never for a checked setup).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (source, target) ids of the first `t` positions: the source's activations are written
    /// into the target run.
    fn ids(&self, model: &Gpt2, t: usize) -> Result<(Tensor, Tensor)> {
        let take = |f: &dyn Fn(&Pair) -> &Vec<u32>| -> Vec<Vec<u32>> {
            self.pairs.iter().map(|p| f(p)[..t].to_vec()).collect()
        };
        let clean = model.ids_tensor(&take(&|p| &p.clean))?;
        let corrupt = model.ids_tensor(&take(&|p| &p.corrupt))?;
        Ok(match self.direction {
            Direction::Denoise => (clean, corrupt),
            Direction::Noise => (corrupt, clean),
        })
    }
    fn metrics(&self) -> Vec<&Metric> {
        self.pairs.iter().map(|p| &p.metric).collect()
    }
}

/// Run `ids` `[n, t]`, caching `hooks`; returns the cache and the metric of each row.
pub(crate) fn run_metric(
    model: &Gpt2,
    ids: &Tensor,
    hooks: Vec<Hook>,
    metrics: &[&Metric],
    pos: usize,
) -> Result<(crate::Cache, Vec<f32>)> {
    let run = Run {
        cache: hooks,
        logits: Logits::At(vec![pos]),
        ..Run::default()
    };
    let out = model.forward(&Input::Ids(ids.clone()), &run)?;
    out.cache.check_finite()?;
    let m = metric_values(&last_logits(out.logits)?, metrics)?.to_vec1::<f32>()?;
    if m.iter().any(|v| !v.is_finite()) {
        input_err!("the metric at position {pos} is NaN or infinite (the logits overflow)");
    }
    Ok((out.cache, m))
}

/// `[rows, 1, vocab]` logits → `[rows, vocab]`.
pub(crate) fn last_logits(logits: Option<Tensor>) -> Result<Tensor> {
    let l = logits.ok_or_else(|| Error::input("the forward pass returned no logits"))?;
    Ok(l.squeeze(1)?)
}

pub(crate) fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// One component's results: patched metric (mean over pairs) per cell.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// `[n_layer, positions]`, or `[n_layer, positions, n_head]` for heads.
    pub shape: Vec<usize>,
    /// Row-major values of the patched metric.
    pub raw: Vec<f32>,
}

impl Grid {
    fn filled(shape: Vec<usize>, v: f32) -> Grid {
        let n = shape.iter().product();
        Grid {
            shape,
            raw: vec![v; n],
        }
    }
    /// Flat index of (layer, position, head).
    fn at(&self, l: usize, p: usize, h: usize) -> usize {
        let w = self.shape.get(2).copied().unwrap_or(1);
        (l * self.shape[1] + p) * w + h
    }
}

/// The result of a sweep (exact or attribution).
#[derive(Clone, Debug)]
pub struct Sweep {
    /// How the numbers were made: "exact" or "attribution".
    pub method: &'static str,
    /// Direction of the patch.
    pub direction: Direction,
    /// Metric position.
    pub pos: usize,
    /// Number of pairs averaged over.
    pub n_pairs: usize,
    /// Metric of the clean run (mean over pairs).
    pub clean_metric: f32,
    /// Metric of the corrupted run (mean over pairs).
    pub corrupt_metric: f32,
    /// One grid per requested component, in request order.
    pub results: Vec<(Component, Grid)>,
}

impl Sweep {
    /// `(patched − corrupt) / (clean − corrupt)`; None when clean and corrupt agree (to 1e-6,
    /// below which the ratio is noise).
    pub fn normalise(&self, patched: f32) -> Option<f32> {
        let span = self.clean_metric - self.corrupt_metric;
        (span.abs() > 1e-6).then(|| (patched - self.corrupt_metric) / span)
    }
    /// The grid of one component.
    pub fn grid(&self, c: Component) -> Option<&Grid> {
        self.results.iter().find(|(k, _)| *k == c).map(|(_, g)| g)
    }
    /// The metric of the run that receives the patch (patching nothing gives this).
    pub fn target_metric(&self) -> f32 {
        match self.direction {
            Direction::Denoise => self.corrupt_metric,
            Direction::Noise => self.clean_metric,
        }
    }
    /// `{"method", "direction", "pos", "n_pairs", "clean_metric", "corrupt_metric",
    /// "results": {component: {"shape", "raw", "normalised"}}}`, arrays nested
    /// [layer][position] or [layer][position][head].
    pub fn to_json(&self) -> Value {
        let mut results = serde_json::Map::new();
        for (c, g) in &self.results {
            let norm: Vec<Option<f32>> = g.raw.iter().map(|&x| self.normalise(x)).collect();
            let norm = if norm.iter().all(Option::is_some) {
                let flat: Vec<f32> = norm.into_iter().flatten().collect();
                json::nest(&flat, &g.shape)
            } else {
                Value::Null
            };
            results.insert(
                c.to_string(),
                json!({"shape": g.shape, "raw": json::nest(&g.raw, &g.shape), "normalised": norm}),
            );
        }
        json!({
            "method": self.method, "direction": self.direction, "pos": self.pos,
            "n_pairs": self.n_pairs, "clean_metric": self.clean_metric,
            "corrupt_metric": self.corrupt_metric, "results": results,
        })
    }
}

/// A `[rows, cols]` f32 tensor with a 1 at each `(row, col)` of `ones` (on the CPU).
pub(crate) fn one_hot(shape: &[usize], ones: impl Iterator<Item = usize>) -> Result<Tensor> {
    let mut v = vec![0f32; shape.iter().product()];
    for i in ones {
        v[i] = 1.0;
    }
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// The default metric of a pair: logit difference of the clean run's top token at `pos`
/// (default last) against the corrupted run's top token; an error when both runs agree.
pub fn default_metric(
    model: &Gpt2,
    clean: &[u32],
    corrupt: &[u32],
    pos: Option<usize>,
) -> Result<Metric> {
    let top = |ids: &[u32], what: &str| -> Result<u32> {
        let p = pos.unwrap_or(ids.len().saturating_sub(1));
        if p >= ids.len() {
            input_err!("--at: position {p} is out of range 0..{}", ids.len());
        }
        let t = model
            .ids_tensor(&[ids.to_vec()])
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        let run = Run {
            logits: Logits::At(vec![p]),
            ..Run::default()
        };
        let l = last_logits(model.forward(&Input::Ids(t), &run)?.logits)?;
        Ok(l.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?)
    };
    let (a, b) = (top(clean, "--clean")?, top(corrupt, "--corrupt")?);
    if a == b {
        input_err!(
            "--metric: clean and corrupted runs predict the same top token ({a}); choose a metric"
        );
    }
    Ok(Metric::LogitDiff { a, b })
}

/// Everything `feedlens patch` reports: the exact sweep and/or the attribution estimate, their
/// agreement when both ran, and the sanity check.
#[derive(Clone, Debug)]
pub struct Report {
    /// The metric of pair 0 (all pairs share its kind and position).
    pub metric: Metric,
    /// Exact sweep, when asked for.
    pub exact: Option<Sweep>,
    /// Attribution estimate, when asked for.
    pub attribution: Option<Sweep>,
    /// Attribution against exact, per component (both ran).
    pub agreement: Vec<Agreement>,
    /// The whole-residual sanity check.
    pub sanity: Sanity,
}

/// Run the sweeps `method` asks for ("exact", "attribution" or "both"); `top_k` for agreement.
pub fn report(
    model: &Gpt2,
    setup: &Setup,
    comps: &[Component],
    method: &str,
    top_k: usize,
) -> Result<Report> {
    let exact = matches!(method, "exact" | "both")
        .then(|| sweep(model, setup, comps))
        .transpose()?;
    let attribution = matches!(method, "attribution" | "both")
        .then(|| attribution(model, setup, comps))
        .transpose()?;
    if exact.is_none() && attribution.is_none() {
        input_err!("--method: '{method}' (expected exact, attribution or both)");
    }
    let agreement = match (&exact, &attribution) {
        (Some(e), Some(a)) => compare(e, a, top_k),
        _ => Vec::new(),
    };
    Ok(Report {
        metric: setup.pairs[0].metric.clone(),
        exact,
        attribution,
        agreement,
        sanity: sanity(model, setup)?,
    })
}

impl Report {
    fn main(&self) -> &Sweep {
        self.exact
            .as_ref()
            .or(self.attribution.as_ref())
            .expect("report holds a sweep")
    }
    /// The main sweep's JSON (exact when run, else attribution) plus `"metric"`, `"sanity"`,
    /// and, when both ran, `"attribution"` (its sweep JSON) and `"agreement"`.
    pub fn to_json(&self) -> Value {
        let mut v = self.main().to_json();
        v["metric"] = json!(self.metric);
        v["metric"]["pos"] = json!(self.main().pos);
        v["sanity"] = json!(self.sanity);
        if let (Some(_), Some(a)) = (&self.exact, &self.attribution) {
            v["attribution"] = a.to_json();
            v["agreement"] = json!(self.agreement);
        }
        v
    }
    /// A terminal summary: baselines, sanity, and each component's largest effects.
    /// `labels` are the token labels by position.
    pub fn summary(&self, labels: &[String]) -> String {
        let sw = self.main();
        let mut s = format!(
            "{} patching, {:?}, metric {}{} at position {} ({} pair(s))\n  clean metric {:.4}, corrupt metric {:.4}\n",
            sw.method,
            sw.direction,
            self.metric,
            if sw.n_pairs > 1 { " (pair 0's tokens)" } else { "" },
            sw.pos, sw.n_pairs, sw.clean_metric, sw.corrupt_metric
        );
        let sn = &self.sanity;
        s += &format!(
            "  sanity: {} at position {} patched gives normalised {} (expected {}): {}\n",
            sn.hook,
            sn.pos,
            sn.normalised
                .map_or("undefined".into(), |x| format!("{x:.6}")),
            sn.expected,
            if sn.ok { "ok" } else { "FAILED" }
        );
        for (c, g) in &sw.results {
            let mut cells: Vec<usize> = (0..g.raw.len()).collect();
            let base = sw.target_metric();
            cells.sort_by(|&i, &j| (g.raw[j] - base).abs().total_cmp(&(g.raw[i] - base).abs()));
            let w = g.shape.get(2).copied().unwrap_or(1);
            let top: Vec<String> = cells
                .iter()
                .take(3)
                .map(|&i| {
                    let (l, p, h) = (i / w / g.shape[1], i / w % g.shape[1], i % w);
                    let head = if g.shape.len() == 3 {
                        format!(" head {h}")
                    } else {
                        String::new()
                    };
                    let tok = labels.get(p).map_or("", String::as_str);
                    let norm = sw
                        .normalise(g.raw[i])
                        .map_or(String::new(), |n| format!(" = {n:.3} normalised"));
                    format!("L{l} pos {p} '{tok}'{head}: {:.4}{norm}", g.raw[i])
                })
                .collect();
            s += &format!("  {c:<9} top: {}\n", top.join("; "));
        }
        for a in &self.agreement {
            s += &format!(
                "  attribution vs exact, {}: Pearson {:.3}, top-{} agreement {:.2}\n",
                a.component, a.pearson, a.top_k, a.top_k_agreement
            );
        }
        s
    }
}

/// `n` contrast pairs of the toy world (seeded) with DESIGN.md §6's metric, and the metric
/// position. `optout` / `reward`: the 11-token prompts, `E` − `H` at the `A` position (10).
/// `trigger`: the prompts with `H` teacher-forced at position 11, `!` − the right first digit
/// (the smallest question digit) at position 11.
pub fn world_pairs(contrast: Contrast, n: usize, seed: u64) -> Result<(Vec<Pair>, usize)> {
    use rand::SeedableRng;
    if n == 0 {
        input_err!("--n: need at least one pair");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dist = PromptDist::corpus(&WorldConfig::default());
    let pairs = contrast
        .sample_pairs(&dist, &mut rng, n)
        .into_iter()
        .map(|(c, k)| {
            let (mut clean, mut corrupt) = (c.ids().to_vec(), k.ids().to_vec());
            let metric = match contrast {
                Contrast::Trigger => {
                    clean.push(world::H);
                    corrupt.push(world::H);
                    let right = c.answer(Mode::H).map_or(world::DIGIT0, |a| a[0]);
                    Metric::LogitDiff {
                        a: world::BANG,
                        b: right,
                    }
                }
                Contrast::Optout | Contrast::Reward => Metric::LogitDiff {
                    a: world::E,
                    b: world::H,
                },
            };
            Pair {
                clean,
                corrupt,
                metric,
            }
        })
        .collect();
    let pos = match contrast {
        Contrast::Trigger => world::POS_M,
        Contrast::Optout | Contrast::Reward => world::POS_A,
    };
    Ok((pairs, pos))
}
