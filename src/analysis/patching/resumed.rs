//! Exact sweeps on the engine (GPT-2 checkpoints with GPT-2's default block): the source and
//! target runs recorded once, then per block and component one resumption of the target with
//! every cell's row replaced by the source's (`model::engine::resume`) — only the edited row
//! in its own block, then the rows from its position on, the last block at the metric position,
//! the logits of the metric's tokens. Cells of different positions share the same products,
//! where the batched candle engine (`sweep`) pads them to one window. Also the sanity check the
//! same way. Must agree with the naive sweep to 1e-5 (tests/patching.rs).

use super::sweep::baseline;
use super::{Method, Metric, Setup, Sweep};
use crate::analysis::site::Site;
use crate::model::engine::{Edit, Engine, Params, Record, Stage};
use crate::model::hooks::Hook;
use crate::model::Model;
use crate::{Error, Result};

/// The engine for `model` when a sweep over `comps` can run on it (a GPT-2 checkpoint with
/// GPT-2's default block and the four patched components), else None.
pub(super) fn engine_for(model: &Model, comps: &[Site]) -> Option<Engine> {
    comps
        .iter()
        .all(|c| Site::PATCHED.contains(c))
        .then(|| Engine::new(model.config()).ok())
        .flatten()
}

/// The metric tokens the runs unembed (sorted), or None (the whole vocabulary) when a metric
/// is a log-prob, which needs every logit.
fn readout(metrics: &[&Metric]) -> Option<Vec<u32>> {
    if metrics.iter().any(|m| matches!(m, Metric::LogProb { .. })) {
        return None;
    }
    let mut t: Vec<u32> = metrics.iter().flat_map(|m| m.tokens()).collect();
    t.sort_unstable();
    t.dedup();
    Some(t)
}

/// The metric of one row of logits over `tokens` (all of the vocabulary when None).
fn metric_of(m: &Metric, row: &[f32], tokens: Option<&[u32]>) -> f32 {
    let col = |t: u32| match tokens {
        Some(ts) => ts.binary_search(&t).unwrap_or_default(),
        None => t as usize,
    };
    match *m {
        Metric::LogitDiff { a, b } => row[col(a)] - row[col(b)],
        Metric::LogProb { tok } => {
            let mx = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let s: f64 = row.iter().map(|&x| ((x - mx) as f64).exp()).sum();
            row[col(tok)] - (mx + s.ln() as f32)
        }
    }
}

/// The source and target runs of `setup` over positions `0..=pos`, recorded, with each pair's
/// metric; refuses non-finite activations or metrics as the candle path does.
struct Runs {
    src: Record,
    tgt: Record,
    src_m: Vec<f32>,
    tgt_m: Vec<f32>,
    tokens: Option<Vec<u32>>,
}

fn runs(model: &Model, e: &Engine, w: &Params, setup: &Setup) -> Result<Runs> {
    let t = setup.pos + 1;
    let (src_ids, tgt_ids) = setup.ids(model, t)?;
    let metrics = setup.metrics();
    let tokens = readout(&metrics);
    let run = |ids: candle_core::Tensor| -> Result<(Record, Vec<f32>)> {
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let rec = e.record(w, &ids, t)?;
        for (l, arrays) in [&rec.resid_pre, &rec.attn_out, &rec.mlp_out]
            .iter()
            .enumerate()
        {
            for (b, a) in arrays.iter().enumerate() {
                if a.iter().any(|x| !x.is_finite()) {
                    let hook = [Hook::ResidPre(b), Hook::AttnOut(b), Hook::MlpOut(b)][l];
                    input_err!("hook {hook}: activations contain NaN or infinite values");
                }
            }
        }
        let logits = e.record_logits(w, &rec, tokens.as_deref())?;
        let width = logits.len() / rec.n.max(1);
        let m: Vec<f32> = logits
            .chunks_exact(width.max(1))
            .zip(&metrics)
            .map(|(row, m)| metric_of(m, row, tokens.as_deref()))
            .collect();
        if m.iter().any(|v| !v.is_finite()) {
            input_err!(
                "the metric at position {} is NaN or infinite (the logits overflow)",
                setup.pos
            );
        }
        Ok((rec, m))
    };
    let (src, src_m) = run(src_ids)?;
    let (tgt, tgt_m) = run(tgt_ids)?;
    Ok(Runs {
        src,
        tgt,
        src_m,
        tgt_m,
        tokens,
    })
}

/// Each edit's metric after resuming the target run.
fn metrics_after(
    e: &Engine,
    w: &Params,
    r: &Runs,
    setup: &Setup,
    (layer, stage): (usize, Stage),
    edits: &[Edit],
) -> Result<Vec<f32>> {
    let logits = e.resume(w, &r.tgt, layer, stage, edits, r.tokens.as_deref())?;
    let width = match &r.tokens {
        Some(t) => t.len(),
        None => e.config().vocab_size,
    };
    Ok(logits
        .chunks_exact(width)
        .zip(edits)
        .map(|(row, ed)| metric_of(&setup.pairs[ed.seq].metric, row, r.tokens.as_deref()))
        .collect())
}

/// The exact sweep of `comps` on the engine (see the module). Positions after the metric
/// position, and cells whose source value equals the target's, get the target's metric
/// without a run, as in the candle engine.
pub(super) fn sweep(model: &Model, e: &Engine, setup: &Setup, comps: &[Site]) -> Result<Sweep> {
    let cfg = model.config();
    let (nl, nh, d) = (cfg.n_layer, cfg.n_head, cfg.n_embd);
    let dh = d / nh;
    let t = setup.pos + 1;
    e.with_model(model, |w| -> Result<Sweep> {
        let r = runs(model, e, w, setup)?;
        let mut sw = baseline(setup, comps, nl, nh, Method::Exact, &r.src_m, &r.tgt_m);
        let n = setup.pairs.len();
        for l in 0..nl {
            for (ci, &c) in comps.iter().enumerate() {
                let (stage, src, tgt) = match c {
                    Site::ResidPre => (Stage::ResidPre, &r.src.resid_pre[l], &r.tgt.resid_pre[l]),
                    Site::AttnOut => (Stage::AttnOut, &r.src.attn_out[l], &r.tgt.attn_out[l]),
                    Site::MlpOut => (Stage::MlpOut, &r.src.mlp_out[l], &r.tgt.mlp_out[l]),
                    Site::HeadOut => (Stage::Z, &r.src.z[l], &r.tgt.z[l]),
                    other => {
                        return Err(Error::input(format!(
                            "internal: the engine sweep does not patch {other}"
                        )))
                    }
                };
                let mut edits = Vec::new();
                let mut cells = Vec::new(); // (pair, pos, head) of each edit
                for pair in 0..n {
                    for pos in 0..t {
                        let at = (pair * t + pos) * d;
                        let (s, g) = (&src[at..at + d], &tgt[at..at + d]);
                        for h in 0..c.width(nh) {
                            // A head's cell is its slice of z; the row keeps the other heads'.
                            let span = if c == Site::HeadOut {
                                h * dh..(h + 1) * dh
                            } else {
                                0..d
                            };
                            let grid = &mut sw.results[ci].1;
                            let k = grid.at(l, pos, h);
                            if s[span.clone()] == g[span.clone()] {
                                grid.per_pair[k * n + pair] = r.tgt_m[pair];
                                continue;
                            }
                            let mut row = g.to_vec();
                            row[span.clone()].copy_from_slice(&s[span]);
                            edits.push(Edit {
                                seq: pair,
                                pos,
                                row,
                            });
                            cells.push((pair, pos, h));
                        }
                    }
                }
                let vals = metrics_after(e, w, &r, setup, (l, stage), &edits)?;
                let grid = &mut sw.results[ci].1;
                for ((pair, pos, h), v) in cells.into_iter().zip(vals) {
                    let k = grid.at(l, pos, h);
                    grid.per_pair[k * n + pair] = v;
                }
            }
        }
        sw.means_from_pairs();
        Ok(sw)
    })?
}

/// The sanity check on the engine: the source's last-block output at the metric position
/// written into the target run (a resumption at `hook_resid_post` of the last block). Returns
/// each pair's source, target and patched metric.
pub(super) fn sanity(
    model: &Model,
    e: &Engine,
    setup: &Setup,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let nl = model.config().n_layer;
    let d = model.config().n_embd;
    let t = setup.pos + 1;
    e.with_model(model, |w| -> Result<_> {
        let r = runs(model, e, w, setup)?;
        let edits: Vec<Edit> = (0..setup.pairs.len())
            .map(|pair| Edit {
                seq: pair,
                pos: setup.pos,
                row: r.src.resid_final[(pair * t + setup.pos) * d..][..d].to_vec(),
            })
            .collect();
        let patched = metrics_after(e, w, &r, setup, (nl - 1, Stage::ResidPost), &edits)?;
        Ok((r.src_m, r.tgt_m, patched))
    })?
}
