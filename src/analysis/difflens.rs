//! The Activation Difference Lens (Minder et al., arXiv 2510.13900), the crosscoder's
//! baseline: the mean of `h_B − h_A` over ordinary corpus episodes per layer and position
//! (`resid_post`), read through the logit lens at the pair's metric position, and added to A's
//! residual as a steering vector to see how much of B's behaviour it carries. Plain data;
//! must not draw or write files.

use crate::analysis::dictionary::collect::{self, Point};
use crate::analysis::patching::metric::run_metric;
use crate::analysis::patching::world_prompt;
use crate::analysis::site::Site;
use crate::lab::world::{self, MetricKind, PromptDist, WorldConfig};
use crate::stats::{self, Est};
use crate::{Input, Intervention, Model, Result, Run, Start};
use candle_core::{DType, Tensor};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Tokens listed per layer.
pub const TOP: usize = 5;

/// One layer of the lens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerLens {
    /// The layer (`blocks.{layer}.hook_resid_post`).
    pub layer: usize,
    /// ‖mean(h_B − h_A)‖ at each position of the episodes.
    pub norm: Vec<f64>,
    /// The tokens the difference at the metric position raises most through the logit lens
    /// (final LayerNorm and unembedding of the difference alone), with their logits.
    pub top: Vec<(String, f64)>,
    /// A's metric with the difference added at this layer (every position of the prompt),
    /// minus A's own, per prompt: mean and bootstrap interval.
    pub steer_shift: Est,
    /// `steer_shift / (B − A)`: the share of the gap to B the difference carries (None when
    /// B and A do not differ).
    pub closes: Option<f64>,
}

/// The lens of one pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffLens {
    /// Corpus episodes averaged.
    pub episodes: usize,
    /// The metric steered, and the prompts it is read on.
    pub metric: MetricKind,
    /// Prompts.
    pub prompts: usize,
    /// B's metric minus A's, per prompt: mean and interval.
    pub gap: Est,
    /// Per layer.
    pub layers: Vec<LayerLens>,
}

/// Run the lens on (`a`, `b`): `episodes` corpus episodes for the means, `prompts` corpus
/// prompts for the steering (metric `metric`), seeded; `resamples` for the intervals.
pub fn run(
    a: &Model,
    b: &Model,
    metric: MetricKind,
    episodes: usize,
    prompts: usize,
    resamples: usize,
    seed: u64,
) -> Result<DiffLens> {
    let (ca, cb) = (a.config(), b.config());
    if ca.n_embd != cb.n_embd || ca.n_layer != cb.n_layer {
        input_err!(
            "the difference lens needs one shape: A has {} layers of width {}, B {} of width {}",
            ca.n_layer,
            ca.n_embd,
            cb.n_layer,
            cb.n_embd
        );
    }
    let d = ca.n_embd;
    let seqs = collect::corpus(episodes, seed);
    let ps = PromptDist::corpus(&WorldConfig::default()).sample_n(
        &mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)),
        prompts,
    );
    let rows: Vec<(Vec<u32>, crate::analysis::patching::Metric)> =
        ps.iter().map(|p| world_prompt(metric, p)).collect();
    let pos = metric.pos();
    let t = rows.first().map_or(0, |r| r.0.len());
    let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.0.clone()).collect();
    let metrics: Vec<&crate::analysis::patching::Metric> = rows.iter().map(|r| &r.1).collect();
    let ids_t = a.ids_tensor(&ids)?;
    let (_, m_a) = run_metric(a, &ids_t, vec![], &metrics, pos)?;
    let (_, m_b) = run_metric(b, &ids_t, vec![], &metrics, pos)?;
    let diff = |x: &[f32], y: &[f32]| -> Vec<f64> {
        x.iter().zip(y).map(|(p, q)| f64::from(p - q)).collect()
    };
    let gap_v = diff(&m_b, &m_a);
    let gap = stats::mean_est(&gap_v, resamples, seed);
    let mut layers = Vec::new();
    for layer in 0..ca.n_layer {
        let point = Point {
            site: Site::ResidPost,
            layer,
            position: None,
        };
        let ha = collect::activations(a, &seqs, &point)?;
        let hb = collect::activations(b, &seqs, &point)?;
        // Mean difference per position: rows are episode-major.
        let mut delta = Array2::<f64>::zeros((world::SEQ_LEN, d));
        for (r, (xa, xb)) in ha.rows().into_iter().zip(hb.rows()).enumerate() {
            let mut row = delta.row_mut(r % world::SEQ_LEN);
            for ((o, &p), &q) in row.iter_mut().zip(xb.iter()).zip(xa.iter()) {
                *o += f64::from(p - q);
            }
        }
        delta /= episodes.max(1) as f64;
        let norm: Vec<f64> = delta.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
        // Logit lens of the difference at the metric position.
        let dv: Vec<f32> = delta.row(pos).iter().map(|&v| v as f32).collect();
        let resid = Tensor::from_vec(dv, (1, 1, d), &candle_core::Device::Cpu)?;
        let lg = a
            .forward(
                &Input::Resid(Start {
                    layer: ca.n_layer,
                    resid,
                    offset: pos,
                    past: vec![],
                }),
                &Run::default(),
            )?
            .logits
            .ok_or_else(|| crate::Error::input("difference lens: the model returned no logits"))?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..lg.len()).collect();
        order.sort_by(|&x, &y| lg[y].total_cmp(&lg[x]).then(x.cmp(&y)));
        let top = order
            .iter()
            .take(TOP)
            .map(|&i| (world::label(i as u32), f64::from(lg[i])))
            .collect();
        // Steering: A with the difference added at every position of the prompt.
        let add: Vec<f32> = delta
            .rows()
            .into_iter()
            .take(t)
            .flat_map(|r| r.iter().map(|&v| v as f32).collect::<Vec<_>>())
            .collect();
        let add = Tensor::from_vec(add, (1, t, d), &candle_core::Device::Cpu)?;
        let hook = Site::ResidPost.hook(layer);
        let run = Run {
            interventions: vec![Intervention::add(hook, add)],
            logits: crate::Logits::At(vec![pos]),
            ..Run::default()
        };
        let out = a.forward(&Input::Ids(ids_t.clone()), &run)?;
        let steered = crate::analysis::patching::metric::metric_values(
            &crate::analysis::patching::metric::last_logits(out.logits)?,
            &metrics,
        )?
        .to_vec1::<f32>()?;
        let shift_v = diff(&steered, &m_a);
        let steer_shift = stats::mean_est(&shift_v, resamples, seed);
        layers.push(LayerLens {
            layer,
            norm,
            top,
            closes: (gap.value != 0.0).then(|| steer_shift.value / gap.value),
            steer_shift,
        });
    }
    Ok(DiffLens {
        episodes,
        metric,
        prompts,
        gap,
        layers,
    })
}
