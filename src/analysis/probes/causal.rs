//! The causal check of a probe direction: add ±α·u or project u out at the probed hook and
//! position, and measure the change of the `E` − `H` logit difference at the decision position.
//! Must not fit probes (the direction is given).

use super::sets::{ActivationSet, BATCH};
use crate::lab::world::{self, Prompt};
use crate::{Error, Hook, Input, Intervention, Logits, Model, Result, Run};
use candle_core::{Device, Tensor};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Causal check of a probe direction at one layer: mean `E` − `H` logit difference at the
/// decision position (10) over the spec's prompts, unedited and edited.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CausalResult {
    /// Layer index.
    pub layer: usize,
    /// The added multiple of the unit direction (absolute, residual units).
    pub alpha: f64,
    /// Unedited metric.
    pub base: f64,
    /// Metric with +α·u added.
    pub plus: f64,
    /// Metric with −α·u added.
    pub minus: f64,
    /// Metric with u projected out.
    pub ablated: f64,
}

/// Mean `E` − `H` logit difference at the decision position over `prompts`, optionally adding
/// `(hook, position, value)`: value `[d]` (every row) or `[n, 1, d]` (one per prompt).
fn mode_metric(
    model: &Model,
    prompts: &[Prompt],
    add: Option<(Hook, usize, &Tensor)>,
) -> Result<f64> {
    let mut sum = 0.0;
    for (k, chunk) in prompts.chunks(BATCH).enumerate() {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids().to_vec()).collect();
        let interventions = match add {
            Some((hook, pos, v)) => {
                let v = if v.rank() == 3 {
                    v.narrow(0, k * BATCH, chunk.len())?
                } else {
                    v.clone()
                };
                vec![Intervention::add(hook, v).at_positions(&[pos])]
            }
            None => vec![],
        };
        let run = Run {
            interventions,
            logits: Logits::At(vec![world::POS_A]),
            ..Run::default()
        };
        let lg = model
            .forward(&Input::Ids(model.ids_tensor(&ids)?), &run)?
            .logits
            .ok_or_else(|| Error::input("forward returned no logits"))?
            .squeeze(1)?
            .to_vec2::<f32>()?;
        sum += lg
            .iter()
            .map(|r| (r[world::E as usize] - r[world::H as usize]) as f64)
            .sum::<f64>();
    }
    Ok(sum / prompts.len().max(1) as f64)
}

/// Causal check of direction `dir` `[d]` at `hook` and the set's position: add ±α·u with
/// α = `alpha_scale` × the mean norm of `x` (the set's activations there, `[n, d]`), and project
/// u out (per row, add −(x·u)·u), measuring [`mode_metric`].
pub fn causal_check(
    model: &Model,
    set: &ActivationSet,
    hook: Hook,
    dir: &[f64],
    x: &Array2<f32>,
    alpha_scale: f64,
) -> Result<CausalResult> {
    let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        input_err!("causal check at {hook}: the probe direction is zero");
    }
    let u: Vec<f32> = dir.iter().map(|v| (v / norm) as f32).collect();
    let mean_norm = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / x.nrows().max(1) as f64;
    let alpha = alpha_scale * mean_norm;
    let pos = set.position;
    let d = u.len();
    let ut = Tensor::from_vec(u.clone(), d, &Device::Cpu)?;
    let add = |a: f64| -> Result<f64> {
        let v = (&ut * a)?;
        mode_metric(model, &set.prompts, Some((hook, pos, &v)))
    };
    // Per row: −(x·u)·u, as [n, 1, d] so it broadcasts over positions (masked to `pos`).
    let proj: Vec<f32> = x
        .rows()
        .into_iter()
        .flat_map(|r| {
            let c: f32 = r.iter().zip(&u).map(|(a, b)| a * b).sum();
            u.iter().map(move |ui| -c * ui).collect::<Vec<_>>()
        })
        .collect();
    let proj = Tensor::from_vec(proj, (x.nrows(), 1, d), &Device::Cpu)?;
    Ok(CausalResult {
        layer: hook.layer().unwrap_or(0),
        alpha,
        base: mode_metric(model, &set.prompts, None)?,
        plus: add(alpha)?,
        minus: add(-alpha)?,
        ablated: mode_metric(model, &set.prompts, Some((hook, pos, &proj)))?,
    })
}
