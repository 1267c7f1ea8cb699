//! Steering along a contrast's difference-of-means direction during sampled generation: at
//! each layer's `resid_post` at the decision position, Δ = mean(clean) − mean(corrupted) over
//! the model's own episodes; α·Δ added to corrupted prompts for a grid of α (the dose–response),
//! and Δ's direction projected out of clean prompts. Is the contrast carried by one direction?
//! Owns the experiment's runs; must not word or draw anything.

use super::{compare, contrast_prompts, episode_acts, sample, sampled, Compared, Measure, Sampled};
use crate::analysis::site::Site;
use crate::lab::sample::Window;
use crate::lab::world::{Contrast, WorldConfig};
use crate::model::Model;
use crate::{Hook, Intervention, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Settings of a steering experiment.
#[derive(Clone, Debug)]
pub struct SteerOpts {
    /// The contrast (clean = slot set).
    pub contrast: Contrast,
    /// Layers whose `resid_post` is steered (all when empty).
    pub layers: Vec<usize>,
    /// Multiples of Δ added to corrupted prompts (0 is the unedited run, not repeated).
    pub alphas: Vec<f64>,
    /// Prompt pairs.
    pub n: usize,
    /// Seed of the prompts; sampling uses `seed + 1` (as in [`super::ablate`]).
    pub seed: u64,
    /// Bootstrap resamples of the intervals.
    pub bootstrap: usize,
}

/// One steered layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SteerLayer {
    /// Block whose `resid_post` is edited.
    pub layer: usize,
    /// ‖Δ‖ (L2) at that layer.
    pub norm: f64,
    /// Corrupted prompts with α·Δ added, one per α of the options.
    pub doses: Vec<Compared>,
    /// Clean prompts with Δ's direction projected out.
    pub project_out: Compared,
}

/// A steering experiment over every layer asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SteerResult {
    /// The contrast.
    pub contrast: Contrast,
    /// The behaviour the contrast is read with.
    pub measure: Measure,
    /// The site edited (`resid_post`).
    pub site: Site,
    /// The position edited: the decision position of the contrast's metric.
    pub pos: usize,
    /// Prompt pairs.
    pub n: usize,
    /// Seed of the prompts.
    pub seed: u64,
    /// The α grid.
    pub alphas: Vec<f64>,
    /// Unedited behaviour on the clean prompts.
    pub clean: Sampled,
    /// Unedited behaviour on the corrupted prompts (α = 0).
    pub corrupt: Sampled,
    /// Per layer.
    pub layers: Vec<SteerLayer>,
}

/// Edits adding `v` (`[d_model]`) at `hook`, position `pos`.
fn add_at(
    hook: Hook,
    pos: usize,
    v: Tensor,
) -> impl Fn(&Window) -> Result<Vec<Intervention>> + Sync {
    move |w: &Window| {
        Ok(if (w.offset..w.offset + w.len).contains(&pos) {
            vec![Intervention::add(hook, v.clone()).at_positions(&[pos])]
        } else {
            Vec::new()
        })
    }
}

/// Edits projecting unit `u` out at `hook`, position `pos`.
fn project_at(
    hook: Hook,
    pos: usize,
    u: Tensor,
) -> impl Fn(&Window) -> Result<Vec<Intervention>> + Sync {
    move |w: &Window| {
        Ok(if (w.offset..w.offset + w.len).contains(&pos) {
            vec![Intervention::project_out(hook, u.clone()).at_positions(&[pos])]
        } else {
            Vec::new()
        })
    }
}

/// Steer `model` along each layer's difference-of-means direction of `o.contrast`.
pub fn steer(model: &Model, world: &WorldConfig, o: &SteerOpts) -> Result<SteerResult> {
    let n_layer = model.config().n_layer;
    let layers: Vec<usize> = if o.layers.is_empty() {
        (0..n_layer).collect()
    } else {
        o.layers.clone()
    };
    for &l in &layers {
        Site::ResidPost.hook_in(l, n_layer)?;
    }
    if o.n == 0 {
        input_err!("--n: need at least one prompt pair");
    }
    if let Some(a) = o.alphas.iter().find(|a| !a.is_finite()) {
        input_err!("--alphas: {a} is not a finite number");
    }
    let pos = o.contrast.metric().pos();
    let (clean_p, corrupt_p) = contrast_prompts(world, o.contrast, o.n, o.seed);
    let stream = o.seed.wrapping_add(1);
    let none = |_: &Window| -> Result<Vec<Intervention>> { Ok(Vec::new()) };
    let clean = sample(model, &clean_p, stream, &none)?;
    let corrupt = sample(model, &corrupt_p, stream, &none)?;
    let hooks: Vec<Hook> = layers.iter().map(|&l| Hook::ResidPost(l)).collect();
    let (ac, ak) = (
        episode_acts(model, &clean, &hooks)?,
        episode_acts(model, &corrupt, &hooks)?,
    );
    let b = o.bootstrap;
    let mut out = Vec::with_capacity(layers.len());
    for (&l, h) in layers.iter().zip(&hooks) {
        let at = |m: &std::collections::BTreeMap<Hook, Tensor>| -> Result<Tensor> {
            Ok(m[h].narrow(1, pos, 1)?.squeeze(1)?.mean(0)?)
        };
        let delta = (at(&ac)? - at(&ak)?)?; // [d_model]
        let norm = delta.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
        let mut doses = Vec::with_capacity(o.alphas.len());
        for &a in &o.alphas {
            let v = (&delta * a)?;
            let e = sample(model, &corrupt_p, stream, &add_at(*h, pos, v))?;
            doses.push(compare(world, &e, &corrupt, b, o.seed));
        }
        let project_out = if norm > 0.0 {
            let u = (&delta / norm)?;
            let e = sample(model, &clean_p, stream, &project_at(*h, pos, u))?;
            compare(world, &e, &clean, b, o.seed)
        } else {
            compare(world, &clean, &clean, b, o.seed)
        };
        out.push(SteerLayer {
            layer: l,
            norm,
            doses,
            project_out,
        });
    }
    Ok(SteerResult {
        contrast: o.contrast,
        measure: Measure::of(o.contrast),
        site: Site::ResidPost,
        pos,
        n: o.n,
        seed: o.seed,
        alphas: o.alphas.clone(),
        clean: sampled(world, &clean, b, o.seed),
        corrupt: sampled(world, &corrupt, b, o.seed),
        layers: out,
    })
}
