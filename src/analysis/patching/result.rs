//! The result of a sweep: one grid of patched metrics per site, normalised against the
//! clean–corrupt gap, with its JSON and the share arithmetic the report's sentences use.
//! Must not run a model.

use super::{Direction, Method};
use crate::analysis::site::Site;
use crate::io::json;
use crate::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};

/// One component's results: patched metric (mean over pairs) per cell.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// `[n_layer, positions]`, or `[n_layer, positions, n_head]` for heads.
    pub shape: Vec<usize>,
    /// Row-major values of the patched metric.
    pub raw: Vec<f32>,
}

impl Grid {
    pub(crate) fn filled(shape: Vec<usize>, v: f32) -> Grid {
        let n = shape.iter().product();
        Grid {
            shape,
            raw: vec![v; n],
        }
    }
    /// Flat index of (layer, position, head).
    pub(crate) fn at(&self, l: usize, p: usize, h: usize) -> usize {
        let w = self.shape.get(2).copied().unwrap_or(1);
        (l * self.shape[1] + p) * w + h
    }
}

/// The result of a sweep (exact or attribution).
#[derive(Clone, Debug)]
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
    /// One grid per requested component, in request order.
    pub results: Vec<(Site, Grid)>,
}

impl Sweep {
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
