//! The result of a sweep: one grid of patched metrics per site, normalised against the
//! clean–corrupt gap, with its JSON and the share arithmetic the report's sentences use.
//! Must not run a model.

use super::{Direction, Method};
use crate::analysis::site::Site;
use crate::io::json;
use crate::stats::{percentile_95, weighted_mean, Est};
use crate::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One component's results: patched metric (mean over pairs) per cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grid {
    /// `[n_layer, positions]`, or `[n_layer, positions, n_head]` for heads.
    pub shape: Vec<usize>,
    /// Row-major values of the patched metric (mean over pairs).
    pub raw: Vec<f32>,
    /// Each pair's patched metric, `[cell][pair]` (cells row-major as `raw`).
    #[serde(default, skip_serializing_if = "crate::io::wire::public")]
    pub per_pair: Vec<f32>,
}

impl Grid {
    pub(crate) fn filled(shape: Vec<usize>, v: f32, pairs: usize) -> Grid {
        let n = shape.iter().product();
        Grid {
            shape,
            raw: vec![v; n],
            per_pair: vec![v; n * pairs],
        }
    }
    /// Flat index of (layer, position, head).
    pub(crate) fn at(&self, l: usize, p: usize, h: usize) -> usize {
        let w = self.shape.get(2).copied().unwrap_or(1);
        (l * self.shape[1] + p) * w + h
    }
}

/// The result of a sweep (exact or attribution).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sweep {
    /// How the numbers were made.
    pub method: Method,
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
    /// Each pair's clean metric.
    pub clean_pairs: Vec<f32>,
    /// Each pair's corrupted metric.
    pub corrupt_pairs: Vec<f32>,
    /// One grid per requested component, in request order.
    pub results: Vec<(Site, Grid)>,
}

impl Sweep {
    /// Set every grid's `raw` to the mean of its pairs (in f64).
    pub(crate) fn means_from_pairs(&mut self) {
        let n = self.n_pairs;
        for (_, g) in &mut self.results {
            for (r, cell) in g.raw.iter_mut().zip(g.per_pair.chunks(n)) {
                *r = (cell.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
            }
        }
    }
    /// `(patched − corrupt) / (clean − corrupt)`; None when clean and corrupt agree (to 1e-6,
    /// below which the ratio is noise).
    pub fn normalise(&self, patched: f32) -> Option<f32> {
        let span = self.clean_metric - self.corrupt_metric;
        (span.abs() > 1e-6).then(|| (patched - self.corrupt_metric) / span)
    }
    /// The grid of one component.
    pub fn grid(&self, c: Site) -> Option<&Grid> {
        self.results.iter().find(|(k, _)| *k == c).map(|(_, g)| g)
    }
    /// The metric of the run that receives the patch (patching nothing gives this).
    pub fn target_metric(&self) -> f32 {
        match self.direction {
            Direction::Denoise => self.corrupt_metric,
            Direction::Noise => self.clean_metric,
        }
    }
    /// clean − corrupt metric (mean over pairs).
    pub fn gap(&self) -> f64 {
        (self.clean_metric - self.corrupt_metric) as f64
    }
    /// Share of the clean–corrupt gap that patching to `patched` moves: restored when
    /// denoising (the normalised value), removed when noising (1 − it), so 1 means "this cell
    /// carries all of it" in both directions. None when the gap is below `min_gap`.
    pub fn share(&self, patched: f32, min_gap: f64) -> Option<f64> {
        if self.gap().abs() < min_gap {
            return None;
        }
        let n = self.normalise(patched)? as f64;
        Some(match self.direction {
            Direction::Denoise => n,
            Direction::Noise => 1.0 - n,
        })
    }
    /// [`Sweep::share`] of `site` at (layer, position) (head 0 of a per-head grid).
    pub fn share_at(&self, site: Site, l: usize, p: usize, min_gap: f64) -> Option<f64> {
        let g = self.grid(site)?;
        self.share(g.raw[g.at(l, p, 0)], min_gap)
    }
    /// The cell of `site` whose patch moves the largest share of the gap (the first of equal
    /// ones); None when the gap is below `min_gap` or the site was not swept.
    pub fn best_cell(&self, site: Site, min_gap: f64) -> Option<Cell> {
        let g = self.grid(site)?;
        let (t, w) = (g.shape[1], g.shape.get(2).copied().unwrap_or(1));
        let mut best: Option<Cell> = None;
        for (i, &v) in g.raw.iter().enumerate() {
            let share = self.share(v, min_gap)?;
            if best.is_none_or(|b| share > b.share) {
                best = Some(Cell {
                    layer: i / w / t,
                    position: i / w % t,
                    head: i % w,
                    share,
                });
            }
        }
        best
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

/// One cell of a sweep and the share of the gap its patch moves ([`Sweep::share`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// Layer.
    pub layer: usize,
    /// Position.
    pub position: usize,
    /// Head (0 for sites without heads).
    pub head: usize,
    /// Share of the clean–corrupt gap moved.
    pub share: f64,
}

/// A `[rows, cols]` f32 tensor with a 1 at each `(row, col)` of `ones` (on the CPU).
pub(crate) fn one_hot(shape: &[usize], ones: impl Iterator<Item = usize>) -> Result<Tensor> {
    let mut v = vec![0f32; shape.iter().product()];
    for i in ones {
        v[i] = 1.0;
    }
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// 95 % bootstrap intervals of a sweep (over its prompt pairs, seeded): the clean–corrupt gap,
/// each cell's patched metric, and — only where the gap's interval excludes 0 — each cell's
/// share of the gap ([`Sweep::share`]), all resampled together.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepCi {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// clean − corrupt metric.
    pub gap: Est,
    /// Per site (in the sweep's order): the cells' patched-metric intervals, row-major.
    pub raw: Vec<(Site, Vec<(f64, f64)>)>,
    /// Per site: each cell's share with its interval; None when the gap's interval includes 0.
    pub share: Option<Vec<(Site, Vec<Est>)>>,
    /// Why shares are withheld, when they are.
    pub share_withheld: Option<String>,
}

impl Sweep {
    /// Bootstrap intervals of every cell (see [`SweepCi`]); None when the per-pair values were
    /// not kept (a sweep built without them).
    pub fn intervals(&self, resamples: usize, seed: u64) -> Option<SweepCi> {
        let n = self.n_pairs;
        if self.clean_pairs.len() != n
            || self
                .results
                .iter()
                .any(|(_, g)| g.per_pair.len() != g.raw.len() * n)
        {
            return None;
        }
        let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        let (clean, corrupt) = (f(&self.clean_pairs), f(&self.corrupt_pairs));
        let cells: usize = self.results.iter().map(|(_, g)| g.raw.len()).sum();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u32; n];
        // [resample][cell] patched mean and share; [resample] gap.
        let mut raw_r = vec![Vec::with_capacity(resamples); cells];
        let mut share_r = vec![Vec::with_capacity(resamples); cells];
        let mut gap_r = Vec::with_capacity(resamples);
        for _ in 0..resamples {
            counts.iter_mut().for_each(|c| *c = 0);
            for _ in 0..n {
                counts[rng.random_range(0..n)] += 1;
            }
            let (c, k) = (
                weighted_mean(&clean, &counts),
                weighted_mean(&corrupt, &counts),
            );
            gap_r.push(c - k);
            let mut i = 0;
            for (_, g) in &self.results {
                for cell in g.per_pair.chunks(n) {
                    let m = cell
                        .iter()
                        .zip(&counts)
                        .map(|(&v, &w)| v as f64 * w as f64)
                        .sum::<f64>()
                        / n as f64;
                    raw_r[i].push(m);
                    let nm = (m - k) / (c - k);
                    share_r[i].push(match self.direction {
                        Direction::Denoise => nm,
                        Direction::Noise => 1.0 - nm,
                    });
                    i += 1;
                }
            }
        }
        let (glo, ghi) = percentile_95(&mut gap_r);
        let gap = Est {
            value: self.gap(),
            lo: glo,
            hi: ghi,
            n,
        };
        let excludes = gap.excludes(0.0);
        let mut raw = Vec::new();
        let mut share = Vec::new();
        let mut i = 0;
        for (site, g) in &self.results {
            let mut r = Vec::with_capacity(g.raw.len());
            let mut sh = Vec::with_capacity(g.raw.len());
            for &v in &g.raw {
                r.push(percentile_95(&mut raw_r[i]));
                if excludes {
                    let (lo, hi) = percentile_95(&mut share_r[i]);
                    let value = self.share(v, 0.0).unwrap_or(f64::NAN);
                    sh.push(Est { value, lo, hi, n });
                }
                i += 1;
            }
            raw.push((*site, r));
            share.push((*site, sh));
        }
        Some(SweepCi {
            resamples,
            seed,
            gap,
            raw,
            share: excludes.then_some(share),
            share_withheld: (!excludes).then(|| {
                format!(
                    "the clean–corrupt gap {:.4} has the 95 % interval [{:.4}, {:.4}], which includes 0",
                    gap.value, gap.lo, gap.hi
                )
            }),
        })
    }
}

impl SweepCi {
    /// The share interval of `site`'s cell (layer, position, head), if shares are given.
    pub fn share_at(&self, sweep: &Sweep, site: Site, l: usize, p: usize, h: usize) -> Option<Est> {
        let g = sweep.grid(site)?;
        let i = g.at(l, p, h);
        let (_, v) = self.share.as_ref()?.iter().find(|(s, _)| *s == site)?;
        v.get(i).copied()
    }

    /// `{"resamples", "seed", "gap", "raw": {site: {"lo", "hi"}}, "share": {site: {"value",
    /// "lo", "hi"}} | null, "share_withheld"}`, arrays nested like the sweep's grids.
    pub fn to_json(&self, sweep: &Sweep) -> Value {
        let shape = |s: &Site| sweep.grid(*s).map(|g| g.shape.clone()).unwrap_or_default();
        let nest = |v: Vec<f32>, s: &Site| json::nest(&v, &shape(s));
        let mut raw = serde_json::Map::new();
        for (s, v) in &self.raw {
            raw.insert(
                s.to_string(),
                json!({
                    "lo": nest(v.iter().map(|x| x.0 as f32).collect(), s),
                    "hi": nest(v.iter().map(|x| x.1 as f32).collect(), s),
                }),
            );
        }
        let share = self.share.as_ref().map(|sh| {
            let mut m = serde_json::Map::new();
            for (s, v) in sh {
                m.insert(
                    s.to_string(),
                    json!({
                        "value": nest(v.iter().map(|e| e.value as f32).collect(), s),
                        "lo": nest(v.iter().map(|e| e.lo as f32).collect(), s),
                        "hi": nest(v.iter().map(|e| e.hi as f32).collect(), s),
                    }),
                );
            }
            Value::Object(m)
        });
        json!({
            "resamples": self.resamples, "seed": self.seed, "gap": self.gap, "raw": raw,
            "share": share, "share_withheld": self.share_withheld,
        })
    }
}
