//! Exact patching sweeps: the fast engine (one batched forward per layer, started at that layer
//! from the cached residual with cached keys/values), the naive reference (one full forward per
//! cell) and the whole-residual sanity check.
//! Must not change results when it batches: fast = naive to 1e-5.

use super::{
    last_logits, mean, metric_values, one_hot, resumed, run_metric, Direction, Grid, Method,
    Metric, Setup, Sweep,
};
use crate::analysis::site::Site;
use crate::model::hooks::{Hook, Intervention};
use crate::model::{Input, Logits, Model, Run, Start};
use crate::{Cache, Result};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

/// How the fast engine groups patched positions into forwards. A forward that starts at
/// position `a` recomputes every position from `a` to the metric position for all its rows,
/// so rows of late positions in a chunk that starts early waste work; many small forwards
/// waste per-call overhead instead. The plan minimises `rows·window + overhead` per chunk.
#[derive(Clone, Debug)]
pub struct Chunking {
    /// Fixed cost of one forward, in row-positions (one row × one position through the same
    /// layers). None: `2^20 / d_model²`, clamped to 1..=4096 (a forward's fixed cost of
    /// ~0.15 ms per layer against ~24·d² FLOPs per row-position at ~100 GFLOPS).
    pub overhead: Option<f64>,
    /// Most row-positions in one forward (bounds memory: the MLP holds 4·d_model per one).
    pub max_row_positions: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            overhead: None,
            // 8192 row-positions: ~100 MB of MLP activations at d_model 768.
            max_row_positions: 8192,
        }
    }
}

impl Chunking {
    /// Every position in its own forward (for tests of the grouping).
    pub fn per_position() -> Self {
        Chunking {
            // A negative overhead rewards many forwards: the plan splits at every position.
            overhead: Some(-1e12),
            max_row_positions: usize::MAX,
        }
    }
    /// All positions of a layer in one forward.
    pub fn one_forward() -> Self {
        Chunking {
            overhead: Some(1e12),
            max_row_positions: usize::MAX,
        }
    }
    /// Chunks `(first, last)` (inclusive) covering the positions that have rows, position p
    /// carrying `rows[p]` rows; dynamic programming over split points. Positions without rows
    /// cost nothing and start no forward.
    fn plan(&self, rows: &[usize], d_model: usize) -> Vec<(usize, usize)> {
        let t = rows.len();
        let c = self.overhead.unwrap_or_else(|| {
            ((1u64 << 20) as f64 / (d_model * d_model) as f64).clamp(1.0, 4096.0)
        });
        // best[j] = cheapest cover of positions 0..j; from[j] = start of its last chunk.
        let mut best = vec![0f64; t + 1];
        let mut from = vec![0usize; t + 1];
        for j in 1..=t {
            best[j] = f64::INFINITY;
            let mut n = 0; // rows in a..j
            for a in (0..j).rev() {
                n += rows[a];
                // An empty chunk is free; a chunk is only worth starting at a position with rows.
                let cost = match n {
                    0 => 0.0,
                    _ if rows[a] == 0 => f64::INFINITY,
                    _ => (n * (t - a)) as f64 + c,
                };
                if best[a] + cost < best[j] {
                    best[j] = best[a] + cost;
                    from[j] = a;
                }
            }
        }
        let mut chunks = Vec::new();
        let mut j = t;
        while j > 0 {
            if rows[from[j]..j].iter().any(|&r| r > 0) {
                chunks.push((from[j], j - 1));
            }
            j = from[j];
        }
        chunks.reverse();
        chunks
    }
}

/// One batch row of the fast engine: which cell it patches, for which pair.
#[derive(Clone, Copy)]
struct Cell {
    comp: usize,
    pos: usize,
    head: usize,
    pair: usize,
}

/// Exact sweep: on the training engine's resumed runs for a GPT-2 checkpoint with GPT-2's
/// default block (`resumed`), else the batched candle engine with the default [`Chunking`].
pub fn sweep(model: &Model, setup: &Setup, comps: &[Site]) -> Result<Sweep> {
    match resumed::engine_for(model, comps) {
        Some(e) => resumed::sweep(model, &e, setup, comps),
        None => sweep_with(model, setup, comps, &Chunking::default()),
    }
}

/// Exact sweep, fast engine: for each layer, every (component, position[, head], pair) cell is
/// one batch row of forwards started at that layer from the target's cached residual, reusing
/// the target's keys/values before each chunk's first position, with logits only at the metric
/// position. Positions after the metric position cannot change it (causal attention) and get
/// the target's metric without a forward.
pub fn sweep_with(
    model: &Model,
    setup: &Setup,
    comps: &[Site],
    chunking: &Chunking,
) -> Result<Sweep> {
    let cfg = model.config();
    let (nl, nh, d) = (cfg.n_layer, cfg.n_head, cfg.n_embd);
    let t = setup.pos + 1;
    let n = setup.pairs.len();
    let metrics = setup.metrics();
    let (src_ids, tgt_ids) = setup.ids(model, t)?;
    let comp_hooks: Vec<Hook> = (0..nl)
        .flat_map(|l| comps.iter().map(move |c| c.hook(l)))
        .collect();
    let (src, src_m) = run_metric(model, &src_ids, comp_hooks.clone(), &metrics, setup.pos)?;
    let mut tgt_hooks: Vec<Hook> = (0..nl)
        .flat_map(|l| [Hook::ResidPre(l), Hook::K(l), Hook::V(l)])
        .collect();
    tgt_hooks.extend(
        comp_hooks
            .iter()
            .filter(|h| !matches!(h, Hook::ResidPre(_))),
    );
    let (tgt, tgt_m) = run_metric(model, &tgt_ids, tgt_hooks, &metrics, setup.pos)?;
    let mut sw = baseline(setup, comps, nl, nh, Method::Exact, &src_m, &tgt_m);
    // A row whose source value equals the target's (every position before the first token
    // where the prompts differ, for instance) patches nothing: its metric is the target's,
    // exactly, without a forward.
    let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(nl);
    for l in 0..nl {
        let mut cells = Vec::new();
        for (comp, c) in comps.iter().enumerate() {
            let h = c.hook(l);
            let (sv, tv) = (src.get(h)?, tgt.get(h)?);
            // [n, t] or [n, t, nh]: 1 where the cell's activation differs.
            let differs = sv.ne(tv)?.max(D::Minus1)?.flatten_all()?.to_vec1::<u8>()?;
            let width = c.width(nh);
            for (i, &dif) in differs.iter().enumerate() {
                let (pair, pos, head) = (i / (t * width), i / width % t, i % width);
                if dif != 0 {
                    cells.push(Cell {
                        comp,
                        pos,
                        head,
                        pair,
                    });
                } else {
                    let g = &mut sw.results[comp].1;
                    let k = g.at(l, pos, head);
                    g.per_pair[k * n + pair] = tgt_m[pair];
                }
            }
        }
        cells.sort_by_key(|c| c.pos);
        rows.push(cells);
    }
    let readout = readout_tokens(&metrics);
    let eng = Engine {
        model,
        setup,
        comps,
        src,
        tgt,
        metrics,
        readout,
    };
    for (l, cells) in rows.iter().enumerate() {
        let mut per_pos = vec![0usize; t];
        cells.iter().for_each(|c| per_pos[c.pos] += 1);
        let mut rest = &cells[..];
        for (a, b) in chunking.plan(&per_pos, d) {
            let k = rest.iter().take_while(|c| c.pos <= b).count();
            let (chunk, tail) = rest.split_at(k);
            rest = tail;
            let max_rows = (chunking.max_row_positions / (t - a)).max(1);
            for piece in chunk.chunks(max_rows) {
                let vals = eng.run_piece(l, a, piece)?;
                for (cell, v) in piece.iter().zip(vals) {
                    let g = &mut sw.results[cell.comp].1;
                    let i = g.at(l, cell.pos, cell.head);
                    g.per_pair[i * n + cell.pair] = v;
                }
            }
        }
    }
    sw.means_from_pairs();
    Ok(sw)
}

/// A sweep with every cell at zero for positions up to the metric position and at the target's
/// metric after it (where a patch cannot reach the metric).
pub(super) fn baseline(
    setup: &Setup,
    comps: &[Site],
    nl: usize,
    nh: usize,
    method: Method,
    src_m: &[f32],
    tgt_m: &[f32],
) -> Sweep {
    let (clean, corrupt) = match setup.direction {
        Direction::Denoise => (mean(src_m), mean(tgt_m)),
        Direction::Noise => (mean(tgt_m), mean(src_m)),
    };
    let len = setup.len();
    let n = setup.pairs.len();
    let results = comps
        .iter()
        .map(|&c| {
            let mut shape = vec![nl, len];
            if c == Site::HeadOut {
                shape.push(nh);
            }
            let mut g = Grid::filled(shape, 0.0, n);
            for l in 0..nl {
                for p in setup.pos + 1..len {
                    for h in 0..c.width(nh) {
                        let i = g.at(l, p, h);
                        g.raw[i] = mean(tgt_m);
                        g.per_pair[i * n..(i + 1) * n].copy_from_slice(tgt_m);
                    }
                }
            }
            (c, g)
        })
        .collect();
    let (clean_pairs, corrupt_pairs) = match setup.direction {
        Direction::Denoise => (src_m.to_vec(), tgt_m.to_vec()),
        Direction::Noise => (tgt_m.to_vec(), src_m.to_vec()),
    };
    Sweep {
        method,
        direction: setup.direction,
        pos: setup.pos,
        n_pairs: n,
        clean_metric: clean,
        corrupt_metric: corrupt,
        clean_pairs,
        corrupt_pairs,
        results,
    }
}

/// When every metric is a logit difference, the few tokens they read (sorted) and each
/// metric rewritten as columns of that short list; the model then unembeds only those rows
/// (`Logits::Tokens`) instead of the whole vocabulary, whose matmul (and the packing of its
/// `[d_model, vocab]` operand on every call) dominated large-vocabulary sweeps.
fn readout_tokens(metrics: &[&Metric]) -> Option<(Vec<u32>, Vec<Metric>)> {
    let pairs: Option<Vec<(u32, u32)>> = metrics
        .iter()
        .map(|m| match **m {
            Metric::LogitDiff { a, b } => Some((a, b)),
            Metric::LogProb { .. } => None,
        })
        .collect();
    let pairs = pairs?;
    let mut tokens: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    tokens.sort_unstable();
    tokens.dedup();
    let col = |t: u32| tokens.binary_search(&t).unwrap_or_default() as u32;
    let cols = pairs
        .iter()
        .map(|&(a, b)| Metric::LogitDiff {
            a: col(a),
            b: col(b),
        })
        .collect();
    Some((tokens, cols))
}

/// What the fast engine's forwards share: the model, the setup, both runs' caches, the metric.
struct Engine<'a> {
    model: &'a Model,
    setup: &'a Setup,
    comps: &'a [Site],
    /// The source run's values at the patched hooks, `[n, t, ...]`.
    src: Cache,
    /// The target run's `resid_pre`, `k`, `v` of every block, `[n, t, ...]`.
    tgt: Cache,
    metrics: Vec<&'a Metric>,
    /// See [`readout_tokens`].
    readout: Option<(Vec<u32>, Vec<Metric>)>,
}

impl Engine<'_> {
    /// One forward for `cells`, all started at layer `l`, position `a`. Returns each row's metric.
    fn run_piece(&self, l: usize, a: usize, cells: &[Cell]) -> Result<Vec<f32>> {
        let (model, setup, comps, src, tgt) =
            (self.model, self.setup, self.comps, &self.src, &self.tgt);
        let cfg = model.config();
        let (nl, nh) = (cfg.n_layer, cfg.n_head);
        let t = setup.pos + 1;
        let w = t - a;
        let r = cells.len();
        let rows = Tensor::from_vec(
            cells.iter().map(|c| c.pair as u32).collect::<Vec<_>>(),
            r,
            &Device::Cpu,
        )?;
        // A [n, t, ...] cached value → this piece's rows over the window a..t: [r, w, ...].
        let window = |x: &Tensor, from: usize, len: usize| -> Result<Tensor> {
            Ok(x.narrow(1, from, len)?
                .contiguous()?
                .index_select(&rows, 0)?)
        };
        let resid = window(tgt.get(Hook::ResidPre(l))?, a, w)?; // [r, w, d]
        let past = if a == 0 {
            Vec::new()
        } else {
            (l..nl)
                .map(|j| {
                    Ok((
                        window(tgt.get(Hook::K(j))?, 0, a)?, // [r, a, nh, dh]
                        window(tgt.get(Hook::V(j))?, 0, a)?,
                    ))
                })
                .collect::<Result<_>>()?
        };
        let mut interventions = Vec::new();
        for (ci, &c) in comps.iter().enumerate() {
            let mine = cells.iter().enumerate().filter(|(_, x)| x.comp == ci);
            if mine.clone().next().is_none() {
                continue;
            }
            let mask = if c == Site::HeadOut {
                one_hot(
                    &[r, w, nh],
                    mine.map(|(i, x)| (i * w + x.pos - a) * nh + x.head),
                )?
            } else {
                one_hot(&[r, w], mine.map(|(i, x)| i * w + x.pos - a))?
            };
            let value = window(src.get(c.hook(l))?, a, w)?;
            interventions.push(Intervention::replace(c.hook(l), value).with_mask(mask));
        }
        let run = Run {
            interventions,
            // Logits at the metric position only; only the metric tokens' rows when possible.
            logits: match &self.readout {
                Some((tokens, _)) => Logits::Tokens {
                    positions: vec![setup.pos],
                    tokens: tokens.clone(),
                },
                None => Logits::At(vec![setup.pos]),
            },
            last_position_only: true,
            ..Run::default()
        };
        let start = Start {
            layer: l,
            resid,
            offset: a,
            past,
        };
        let out = model.forward(&Input::Resid(start), &run)?;
        let row_metrics: Vec<&Metric> = match &self.readout {
            Some((_, cols)) => cells.iter().map(|c| &cols[c.pair]).collect(),
            None => cells.iter().map(|c| self.metrics[c.pair]).collect(),
        };
        Ok(metric_values(&last_logits(out.logits)?, &row_metrics)?.to_vec1::<f32>()?)
    }
}

/// Exact sweep, naive reference: one full forward of the whole target prompt per cell with
/// `Intervention::replace(..).at_positions(..)` (and `.at_heads(..)`). For tests.
pub fn sweep_naive(model: &Model, setup: &Setup, comps: &[Site]) -> Result<Sweep> {
    let cfg = model.config();
    let (nl, nh) = (cfg.n_layer, cfg.n_head);
    let len = setup.len();
    let metrics = setup.metrics();
    let (src_ids, tgt_ids) = setup.ids(model, len)?;
    let hooks = (0..nl)
        .flat_map(|l| comps.iter().map(move |c| c.hook(l)))
        .collect();
    let (src, src_m) = run_metric(model, &src_ids, hooks, &metrics, setup.pos)?;
    let (_, tgt_m) = run_metric(model, &tgt_ids, vec![], &metrics, setup.pos)?;
    let mut sw = baseline(setup, comps, nl, nh, Method::Exact, &src_m, &tgt_m);
    for (ci, &c) in comps.iter().enumerate() {
        for l in 0..nl {
            for p in 0..len {
                for h in 0..c.width(nh) {
                    let mut iv = Intervention::replace(c.hook(l), src.get(c.hook(l))?.clone())
                        .at_positions(&[p]);
                    if c == Site::HeadOut {
                        iv = iv.at_heads(&[h]);
                    }
                    let run = Run {
                        interventions: vec![iv],
                        logits: Logits::At(vec![setup.pos]),
                        ..Run::default()
                    };
                    let out = model.forward(&Input::Ids(tgt_ids.clone()), &run)?;
                    let m = metric_values(&last_logits(out.logits)?, &metrics)?.to_vec1::<f32>()?;
                    let g = &mut sw.results[ci].1;
                    let i = g.at(l, p, h);
                    let n = m.len();
                    g.per_pair[i * n..(i + 1) * n].copy_from_slice(&m);
                }
            }
        }
    }
    sw.means_from_pairs();
    Ok(sw)
}

/// The built-in sanity check: the whole residual stream at the metric position after the last
/// block (`blocks.{n_layer−1}.hook_resid_post`), patched from the source run, must give the
/// source's metric exactly: normalised 1 when denoising, 0 when noising.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sanity {
    /// The hook patched.
    pub hook: Hook,
    /// The position patched (the metric position).
    pub pos: usize,
    /// Patched metric (mean over pairs).
    pub patched: f32,
    /// Normalised patched metric (None when clean and corrupt agree).
    pub normalised: Option<f32>,
    /// What it must be.
    pub expected: f32,
    /// |normalised − expected| ≤ 1e-4 (float rounding of two forwards over different batches).
    pub ok: bool,
}

/// Each pair's clean and corrupted metric (two forwards; no patching).
pub fn pair_metrics(model: &Model, setup: &Setup) -> Result<(Vec<f32>, Vec<f32>)> {
    let metrics = setup.metrics();
    let t = setup.pos + 1;
    let (src_ids, tgt_ids) = setup.ids(model, t)?;
    let (_, src_m) = run_metric(model, &src_ids, vec![], &metrics, setup.pos)?;
    let (_, tgt_m) = run_metric(model, &tgt_ids, vec![], &metrics, setup.pos)?;
    Ok(match setup.direction {
        Direction::Denoise => (src_m, tgt_m),
        Direction::Noise => (tgt_m, src_m),
    })
}

/// Run the sanity check of `setup` (one forward; see [`Sanity`]).
pub fn sanity(model: &Model, setup: &Setup) -> Result<Sanity> {
    let hook = Hook::ResidPost(model.config().n_layer - 1);
    let (src_m, tgt_m, patched) = match resumed::engine_for(model, &[]) {
        Some(e) => resumed::sanity(model, &e, setup)?,
        None => {
            let metrics = setup.metrics();
            let t = setup.pos + 1;
            let (src_ids, tgt_ids) = setup.ids(model, t)?;
            let (src, src_m) = run_metric(model, &src_ids, vec![hook], &metrics, setup.pos)?;
            let iv = Intervention::replace(hook, src.get(hook)?.clone()).at_positions(&[setup.pos]);
            let run = Run {
                interventions: vec![iv],
                logits: Logits::At(vec![setup.pos]),
                ..Run::default()
            };
            let (_, tgt_m) = run_metric(model, &tgt_ids, vec![], &metrics, setup.pos)?;
            let out = model.forward(&Input::Ids(tgt_ids), &run)?;
            let patched = metric_values(&last_logits(out.logits)?, &metrics)?.to_vec1::<f32>()?;
            (src_m, tgt_m, patched)
        }
    };
    let patched = mean(&patched);
    let sw = baseline(setup, &[], 0, 0, Method::Exact, &src_m, &tgt_m);
    let normalised = sw.normalise(patched);
    let expected = match setup.direction {
        Direction::Denoise => 1.0,
        Direction::Noise => 0.0,
    };
    let ok = match normalised {
        Some(x) => (x - expected).abs() <= 1e-4,
        None => (patched - mean(&src_m)).abs() <= 1e-4,
    };
    Ok(Sanity {
        hook,
        pos: setup.pos,
        patched,
        normalised,
        expected,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::Chunking;

    #[test]
    fn plans_cover_every_position_with_rows_once() {
        for ch in [
            Chunking::default(),
            Chunking::per_position(),
            Chunking::one_forward(),
        ] {
            for (rows, d) in [
                (vec![1], 48),
                (vec![7; 12], 48),
                (vec![1; 32], 768),
                (vec![64; 32], 768),
                ([vec![0; 8], vec![3; 24]].concat(), 768),
                (vec![0, 2, 0, 0, 5, 0], 48),
            ] {
                let plan = ch.plan(&rows, d);
                let mut covered = vec![false; rows.len()];
                let mut last = None;
                for &(a, b) in &plan {
                    assert!(b >= a && last.is_none_or(|l| a > l));
                    assert!(rows[a] > 0, "a chunk starts at a position with rows");
                    covered[a..=b].iter_mut().for_each(|x| *x = true);
                    last = Some(b);
                }
                for (p, &r) in rows.iter().enumerate() {
                    assert!(r == 0 || covered[p], "{rows:?}: position {p} not covered");
                }
            }
        }
        assert_eq!(Chunking::one_forward().plan(&[3; 12], 48), vec![(0, 11)]);
        assert_eq!(
            Chunking::one_forward().plan(&[0, 0, 3, 3], 48),
            vec![(2, 3)]
        );
        assert_eq!(Chunking::per_position().plan(&[3; 5], 48).len(), 5);
    }
}
