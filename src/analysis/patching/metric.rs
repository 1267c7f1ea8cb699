//! The scalar a patching run reads from the logits at the metric position (a logit difference
//! or a log-prob), evaluated per row, differentiably; and running a batch to its metric.
//! Must not know the toy world: the world's metrics are built in `pairs`.

use crate::model::{Logits, Model, Run};
use crate::{Error, Hook, Input, Result};
use candle_core::{Tensor, D};
use serde::Serialize;
use std::fmt;

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

/// Run `ids` `[n, t]`, caching `hooks`; returns the cache and the metric of each row.
pub(crate) fn run_metric(
    model: &Model,
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
