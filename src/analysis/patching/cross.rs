//! Cross-checkpoint patching: run checkpoint B with checkpoint A's activation at one hook and
//! layer (all positions or one) and read B's metric: where does B's changed behaviour live?
//! Must not run checkpoints of different shapes; must not draw or print.

use super::{last_logits, mean, metric_values, run_metric, Metric};
use crate::analysis::site::Site;
use crate::model::hooks::{Hook, Intervention};
use crate::model::{Input, Logits, Model, Run, Start};
use crate::stats::{percentile_95, weighted_mean, Est};
use crate::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Cross-checkpoint patching results (means over prompts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cross {
    /// Metric position.
    pub pos: usize,
    /// The patched position, or None for every position.
    pub position: Option<usize>,
    /// Number of prompts averaged over.
    pub n_prompts: usize,
    /// The layers patched (all, or the one asked for).
    pub layers: Vec<usize>,
    /// Metric of A unpatched.
    pub a_metric: f32,
    /// Metric of B unpatched.
    pub b_metric: f32,
    /// Per component: B's metric with A's activation at each of `layers`.
    pub results: Vec<(Site, Vec<f32>)>,
    /// Each prompt's values, for intervals: A's and B's metric, and per component and layer
    /// B's patched metric (`[site][layer][prompt]`, as `results`).
    #[serde(default, skip_serializing_if = "crate::io::wire::public")]
    pub per_prompt: CrossPrompts,
}

/// The per-prompt values behind a [`Cross`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CrossPrompts {
    /// A's metric per prompt.
    pub a: Vec<f32>,
    /// B's metric per prompt.
    pub b: Vec<f32>,
    /// `[site][layer][prompt]`.
    pub patched: Vec<Vec<Vec<f32>>>,
}

impl Cross {
    /// `(patched − B) / (A − B)`: the share of the A–B gap that the patch carries; None when A
    /// and B agree (to 1e-6).
    pub fn normalise(&self, patched: f32) -> Option<f32> {
        let span = self.a_metric - self.b_metric;
        (span.abs() > 1e-6).then(|| (patched - self.b_metric) / span)
    }
    /// A − B metric (mean over prompts).
    pub fn gap(&self) -> f64 {
        (self.a_metric - self.b_metric) as f64
    }
    /// The patched site (and index into `layers`) that moves B's metric most, with that move
    /// and its size in A–B gaps, when that exceeds `limit` gaps; None otherwise. Beyond a few
    /// gaps, shares of the gap (a "1400 %") say nothing about where the gap lives.
    pub fn overshoot(&self, limit: f64) -> Option<Overshoot> {
        let gap = self.gap();
        self.results
            .iter()
            .flat_map(|(c, v)| {
                v.iter()
                    .enumerate()
                    .map(move |(i, &m)| (*c, i, (m - self.b_metric) as f64))
            })
            .max_by(|p, q| p.2.abs().total_cmp(&q.2.abs()))
            .map(|(site, index, moved)| Overshoot {
                site,
                index,
                moved,
                gaps: (moved / gap).abs(),
            })
            .filter(|o| o.gaps > limit)
    }
    /// `{"a_metric", "b_metric", "pos", "position", "n_prompts",
    /// "results": {component: {"raw": [layer], "normalised": [layer] | null}}}`.
    pub fn to_json(&self) -> Value {
        let mut results = serde_json::Map::new();
        for (c, v) in &self.results {
            let norm: Option<Vec<f32>> = v.iter().map(|&x| self.normalise(x)).collect();
            results.insert(c.to_string(), json!({"raw": v, "normalised": norm}));
        }
        json!({
            "a_metric": self.a_metric, "b_metric": self.b_metric, "pos": self.pos,
            "position": self.position, "n_prompts": self.n_prompts, "layers": self.layers,
            "results": results,
        })
    }
}

/// The largest move of B's metric by one patch, in A–B gaps ([`Cross::overshoot`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overshoot {
    /// The patched site.
    pub site: Site,
    /// Index into [`Cross::layers`].
    pub index: usize,
    /// patched − B.
    pub moved: f64,
    /// |moved| / |A − B|.
    pub gaps: f64,
}

/// Refuse two models of different shapes (one line naming the first difference).
fn same_shape(a: &Model, b: &Model) -> Result<()> {
    match a.config().shape_difference(b.config()) {
        Some(d) => input_err!("checkpoints A and B differ in shape: {d}"),
        None => Ok(()),
    }
}

/// What [`patch_models`] patches and where it reads the metric.
#[derive(Clone, Debug, Default)]
pub struct CrossSpec {
    /// Components (not `head_out`: patching every head is `attn_out`).
    pub comps: Vec<Site>,
    /// Metric position (default: the last one).
    pub pos: Option<usize>,
    /// Patch only this position (default: all).
    pub position: Option<usize>,
    /// Patch only this layer (default: each in turn).
    pub layer: Option<usize>,
}

/// Patch A's activation of each component into B, layer by layer. `prompts` `[n][len]` (one
/// length), `metrics[i]` is prompt i's metric. Each (component, layer) is one batched forward
/// of B started at that layer.
pub fn patch_models(
    a: &Model,
    b: &Model,
    prompts: &[Vec<u32>],
    metrics: &[Metric],
    spec: &CrossSpec,
) -> Result<Cross> {
    let CrossSpec {
        comps,
        pos,
        position,
        layer,
    } = spec.clone();
    let comps = &comps[..];
    same_shape(a, b)?;
    if prompts.is_empty() || prompts.len() != metrics.len() {
        input_err!("--prompts: give at least one prompt (and one metric per prompt)");
    }
    if comps.contains(&Site::HeadOut) {
        input_err!(
            "--hooks: head_out is not available for patch-models (use attn_out for all heads)"
        );
    }
    let ids = b.ids_tensor(prompts)?;
    let len = prompts[0].len();
    let pos = pos.unwrap_or(len - 1);
    if pos >= len {
        input_err!("--at: position {pos} is out of range 0..{len}");
    }
    if let Some(p) = position.filter(|&p| p > pos) {
        input_err!(
            "--position: {p} is after the metric position {pos}, so it cannot change the metric"
        );
    }
    let vocab = b.config().vocab_size;
    for m in metrics {
        if let Some(t) = m.tokens().into_iter().find(|&t| t as usize >= vocab) {
            input_err!("--metric: token id {t} is not in the vocabulary (vocab_size {vocab})");
        }
    }
    let nl = a.config().n_layer;
    if let Some(l) = layer.filter(|&l| l >= nl) {
        input_err!("--layer: layer {l} is out of range 0..{nl}");
    }
    let layers: Vec<usize> = layer.map_or((0..nl).collect(), |l| vec![l]);
    let ms: Vec<&Metric> = metrics.iter().collect();
    let hooks = (0..nl)
        .flat_map(|l| comps.iter().map(move |c| c.hook(l)))
        .collect();
    let (ca, a_m) = run_metric(a, &ids, hooks, &ms, pos)?;
    let (cb, b_m) = run_metric(b, &ids, (0..nl).map(Hook::ResidPre).collect(), &ms, pos)?;
    let mut results = Vec::new();
    let mut patched = Vec::new();
    for &c in comps {
        let mut per_layer = Vec::with_capacity(layers.len());
        let mut prompts_of = Vec::with_capacity(layers.len());
        for &l in &layers {
            let mut iv = Intervention::replace(c.hook(l), ca.get(c.hook(l))?.clone());
            if let Some(p) = position {
                iv = iv.at_positions(&[p]);
            }
            let run = Run {
                interventions: vec![iv],
                logits: Logits::At(vec![pos]),
                last_position_only: true,
                ..Run::default()
            };
            // Blocks before l are untouched by the patch: start B at l from its own residual.
            let start = Start {
                layer: l,
                resid: cb.get(Hook::ResidPre(l))?.clone(),
                offset: 0,
                past: Vec::new(),
            };
            let out = b.forward(&Input::Resid(start), &run)?;
            let v = metric_values(&last_logits(out.logits)?, &ms)?.to_vec1::<f32>()?;
            per_layer.push(mean(&v));
            prompts_of.push(v);
        }
        results.push((c, per_layer));
        patched.push(prompts_of);
    }
    Ok(Cross {
        pos,
        position,
        n_prompts: prompts.len(),
        layers,
        a_metric: mean(&a_m),
        b_metric: mean(&b_m),
        results,
        per_prompt: CrossPrompts {
            a: a_m,
            b: b_m,
            patched,
        },
    })
}

/// What is specific to a contrast in cross-checkpoint patching: the same patches on the
/// contrast's prompts and on its control prompts (the other side of each pair, in the same
/// order), and per site and layer the difference of differences, (patched − B) on the contrast
/// prompts minus (patched − B) on the controls, with a paired bootstrap interval over the
/// prompt pairs. A difference between two training runs that is not about the slot moves both
/// sides alike and cancels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Specific {
    /// (A − B) on the contrast prompts minus (A − B) on the controls.
    pub gap: Est,
    /// Per site (those patched on both sides), per layer.
    pub moved: Vec<(Site, Vec<Est>)>,
}

/// The difference of differences of `contrast` and `control` (see [`Specific`]); None when
/// they do not pair up (other prompt counts or layers, or no per-prompt values).
pub fn specific(
    contrast: &Cross,
    control: &Cross,
    resamples: usize,
    seed: u64,
) -> Option<Specific> {
    let (pc, pk) = (&contrast.per_prompt, &control.per_prompt);
    let n = pc.a.len();
    if n == 0
        || pk.a.len() != n
        || pc.b.len() != n
        || pk.b.len() != n
        || contrast.layers != control.layers
    {
        return None;
    }
    let d = |x: f32, y: f32| (x - y) as f64;
    let gap: Vec<f64> = (0..n)
        .map(|i| d(pc.a[i], pc.b[i]) - d(pk.a[i], pk.b[i]))
        .collect();
    let mut moved = Vec::new();
    for (sc, (site, _)) in contrast.results.iter().enumerate() {
        let Some(sk) = control.results.iter().position(|(s, _)| s == site) else {
            continue;
        };
        let per_layer = (0..contrast.layers.len())
            .map(|l| {
                let (vc, vk) = (pc.patched.get(sc)?.get(l)?, pk.patched.get(sk)?.get(l)?);
                let v: Vec<f64> = (0..n)
                    .map(|i| d(vc[i], pc.b[i]) - d(vk[i], pk.b[i]))
                    .collect();
                Some(crate::stats::mean_est(&v, resamples, seed))
            })
            .collect::<Option<Vec<Est>>>()?;
        moved.push((*site, per_layer));
    }
    Some(Specific {
        gap: crate::stats::mean_est(&gap, resamples, seed),
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cross(a: f32, b: f32, resid: Vec<f32>, mlp: Vec<f32>) -> Cross {
        Cross {
            pos: 10,
            position: None,
            n_prompts: 8,
            layers: (0..resid.len()).collect(),
            a_metric: a,
            b_metric: b,
            results: vec![(Site::ResidPre, resid), (Site::MlpOut, mlp)],
            per_prompt: CrossPrompts::default(),
        }
    }

    #[test]
    fn shares_are_withheld_only_when_a_component_overshoots_the_gap() {
        // Gap 1: moves of up to 2 gaps (either sign) are shares worth stating.
        let x = cross(1.0, 0.0, vec![0.5, 1.0], vec![-2.0, 0.3]);
        assert_eq!(x.overshoot(2.0), None);
        // Gap 0.2, a component moves B by −2.8: 14 gaps, the biggest move is named.
        let x = cross(5.09, 5.29, vec![5.3, 5.0], vec![2.48, 5.2]);
        let o = x.overshoot(2.0).unwrap();
        assert_eq!((o.site, o.index), (Site::MlpOut, 0));
        assert!((o.moved + 2.81).abs() < 1e-5, "{}", o.moved);
        assert!((o.gaps - 14.05).abs() < 1e-3, "{}", o.gaps);
    }
}

/// 95 % bootstrap intervals of cross-checkpoint patching (over its prompts, seeded, resampled
/// together): both metrics, their gap, each patch's move of B's metric, and — only where the
/// gap's interval excludes 0 — each patch's share of the gap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrossCi {
    /// A's metric.
    pub a_metric: Est,
    /// B's metric.
    pub b_metric: Est,
    /// A − B.
    pub gap: Est,
    /// Per site, per layer: patched − B.
    pub moved: Vec<(Site, Vec<Est>)>,
    /// Per site, per layer: (patched − B) / (A − B); None when the gap's interval includes 0.
    pub share: Option<Vec<(Site, Vec<Est>)>>,
}

impl Cross {
    /// Bootstrap intervals ([`CrossCi`]); None without per-prompt values.
    pub fn intervals(&self, resamples: usize, seed: u64) -> Option<CrossCi> {
        let pp = &self.per_prompt;
        let n = pp.a.len();
        if n == 0 || pp.b.len() != n {
            return None;
        }
        let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        let (a, b) = (f(&pp.a), f(&pp.b));
        let patched: Vec<Vec<Vec<f64>>> = pp
            .patched
            .iter()
            .map(|s| s.iter().map(|l| f(l)).collect())
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u32; n];
        let (mut ar, mut br, mut gr) = (Vec::new(), Vec::new(), Vec::new());
        let shape: Vec<usize> = patched.iter().map(|s| s.len()).collect();
        let mut moved_r: Vec<Vec<Vec<f64>>> = shape.iter().map(|&k| vec![Vec::new(); k]).collect();
        let mut share_r = moved_r.clone();
        for _ in 0..resamples {
            counts.iter_mut().for_each(|c| *c = 0);
            for _ in 0..n {
                counts[rng.random_range(0..n)] += 1;
            }
            let (ma, mb) = (weighted_mean(&a, &counts), weighted_mean(&b, &counts));
            ar.push(ma);
            br.push(mb);
            gr.push(ma - mb);
            for (s, site) in patched.iter().enumerate() {
                for (l, v) in site.iter().enumerate() {
                    let m = weighted_mean(v, &counts) - mb;
                    moved_r[s][l].push(m);
                    share_r[s][l].push(m / (ma - mb));
                }
            }
        }
        let est = |value: f64, mut v: Vec<f64>| {
            let (lo, hi) = percentile_95(&mut v);
            Est { value, lo, hi, n }
        };
        let gap = est(self.gap(), gr);
        let excludes = gap.excludes(0.0);
        let mut moved = Vec::new();
        let mut share = Vec::new();
        for (s, (site, vals)) in self.results.iter().enumerate() {
            let mv: Vec<Est> = vals
                .iter()
                .enumerate()
                .map(|(l, &v)| {
                    est(
                        (v - self.b_metric) as f64,
                        std::mem::take(&mut moved_r[s][l]),
                    )
                })
                .collect();
            let sh: Vec<Est> = vals
                .iter()
                .enumerate()
                .map(|(l, &v)| {
                    let value = self.normalise(v).map_or(f64::NAN, f64::from);
                    est(value, std::mem::take(&mut share_r[s][l]))
                })
                .collect();
            moved.push((*site, mv));
            share.push((*site, sh));
        }
        Some(CrossCi {
            a_metric: est(self.a_metric as f64, ar),
            b_metric: est(self.b_metric as f64, br),
            gap,
            moved,
            share: excludes.then_some(share),
        })
    }
}
