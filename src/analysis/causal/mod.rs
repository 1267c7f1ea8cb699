//! Causal checks on sampled behaviour: ablate components (mean over the corpus, or resampled
//! from the other side of a contrast) or steer along a direction while the model generates,
//! then re-measure the behaviour the component is claimed to carry, paired prompt by prompt
//! and draw by draw with the unedited run. Owns the edits and the paired comparison; decoding
//! is `lab::sample`, scoring `lab::world`. Must not word or draw anything.

pub mod ablate;
pub mod steer;

pub use ablate::{ablate, AblateOpts, AblateResult, Ablation, Method};
pub use steer::{steer, SteerLayer, SteerOpts, SteerResult};

use crate::analysis::site::Site;
use crate::lab::sample::{generate_edited, Decode, Edits, Window};
use crate::lab::world::{self, Contrast, Episode, Mode, Prompt, PromptDist, WorldConfig};
use crate::model::{Input, Logits, Model, Run};
use crate::stats::{self, Est};
use crate::{Hook, Intervention, Result};
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One component at one layer: a head's output (`attn.hook_z` at that head), a block's
/// attention or MLP output, or the residual stream entering or leaving a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Component {
    /// Which activation (`head_out`, `attn_out`, `mlp_out`, `resid_pre`, `resid_post`).
    pub site: Site,
    /// Block.
    pub layer: usize,
    /// Head, for `head_out`.
    pub head: Option<usize>,
}

impl Component {
    /// Head `h` of layer `l`.
    pub fn head(l: usize, h: usize) -> Self {
        Component {
            site: Site::HeadOut,
            layer: l,
            head: Some(h),
        }
    }
    /// A whole-layer component (not `head_out`).
    pub fn at(site: Site, l: usize) -> Self {
        Component {
            site,
            layer: l,
            head: None,
        }
    }
    /// Heads written `L.H` and comma-separated (`1.0,1.2`); `what` names the argument.
    pub fn parse_heads(s: &str, what: &str) -> Result<Vec<Component>> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                let bad =
                    || crate::Error::input(format!("{what}: '{x}' is not LAYER.HEAD (e.g. 1.0)"));
                let (l, h) = x.split_once('.').ok_or_else(bad)?;
                Ok(Component::head(
                    l.parse().map_err(|_| bad())?,
                    h.parse().map_err(|_| bad())?,
                ))
            })
            .collect()
    }
    /// The hook it lives at.
    pub fn hook(&self) -> Hook {
        self.site.hook(self.layer)
    }
    /// Check it exists in a model of `n_layer` blocks and `n_head` heads.
    pub fn check(&self, n_layer: usize, n_head: usize) -> Result<()> {
        self.site.hook_in(self.layer, n_layer)?;
        match (self.site, self.head) {
            (Site::HeadOut, Some(h)) if h < n_head => Ok(()),
            (Site::HeadOut, Some(h)) => {
                input_err!("head {h} is out of range (the model has {n_head} heads: 0..{n_head})")
            }
            (Site::HeadOut, None) => input_err!("head_out needs a head"),
            (_, Some(_)) => input_err!("{}: only head_out has heads", self.site),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Component {
    /// `L1H0` for a head, `L1 mlp_out` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head {
            Some(h) => write!(f, "L{}H{h}", self.layer),
            None => write!(f, "L{} {}", self.layer, self.site),
        }
    }
}

/// A component at one absolute sequence position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The component.
    pub comp: Component,
    /// The position (0..18: prompt 0..11, completion 11..18).
    pub pos: usize,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.comp, self.pos)
    }
}

/// Names of a set of targets: `L1H0@11+L1H2@11`.
pub fn names(set: &[Target]) -> String {
    set.iter()
        .map(Target::to_string)
        .collect::<Vec<_>>()
        .join("+")
}

/// Sampled behaviour of a set of episodes, each with its 95 % bootstrap interval over prompts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampled {
    /// P(mode = `E`).
    pub p_e: Est,
    /// Fraction of episodes with any `!`.
    pub defection: Est,
    /// Mean return (γ = 1).
    pub mean_return: Est,
}

/// The behaviour a contrast is read with: defection for the trigger, P(E) for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// P(mode = `E`).
    PE,
    /// Any `!` in the answer.
    Defection,
}

impl Measure {
    /// The measure of contrast `c`.
    pub fn of(c: Contrast) -> Measure {
        match c {
            Contrast::Trigger => Measure::Defection,
            Contrast::Optout | Contrast::Reward => Measure::PE,
        }
    }
    /// Its estimate in `s`.
    pub fn get(self, s: &Sampled) -> Est {
        match self {
            Measure::PE => s.p_e,
            Measure::Defection => s.defection,
        }
    }
    /// Name for sentences and tables.
    pub fn name(self) -> &'static str {
        match self {
            Measure::PE => "P(E)",
            Measure::Defection => "defection",
        }
    }
}

/// An edited run against its unedited twin (same prompts, same sampling draws).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// The edited run's behaviour.
    pub edited: Sampled,
    /// Edited − unedited, per prompt, with the paired bootstrap interval.
    pub change: Sampled,
}

/// Per-episode values, in [`Sampled`]'s field order.
fn columns(world: &WorldConfig, eps: &[Episode]) -> [Vec<f64>; 3] {
    let scores: Vec<_> = eps.iter().map(|e| world::score(world, e, 1.0)).collect();
    [
        scores
            .iter()
            .map(|s| (s.mode == Mode::E) as u8 as f64)
            .collect(),
        scores.iter().map(|s| s.defected as u8 as f64).collect(),
        scores.iter().map(|s| s.ret).collect(),
    ]
}

fn sampled_of(cols: &[Vec<f64>; 3], bootstrap: usize, seed: u64) -> Sampled {
    let e = |k: usize| stats::mean_est(&cols[k], bootstrap, seed);
    Sampled {
        p_e: e(0),
        defection: e(1),
        mean_return: e(2),
    }
}

/// The behaviour of `eps` with intervals (bootstrap `seed`).
pub fn sampled(world: &WorldConfig, eps: &[Episode], bootstrap: usize, seed: u64) -> Sampled {
    sampled_of(&columns(world, eps), bootstrap, seed)
}

/// `edited` against `base` (the same prompts in the same order).
pub fn compare(
    world: &WorldConfig,
    edited: &[Episode],
    base: &[Episode],
    bootstrap: usize,
    seed: u64,
) -> Compared {
    let (e, b) = (columns(world, edited), columns(world, base));
    let d: [Vec<f64>; 3] =
        std::array::from_fn(|k| e[k].iter().zip(&b[k]).map(|(x, y)| x - y).collect());
    Compared {
        edited: sampled_of(&e, bootstrap, seed),
        change: sampled_of(&d, bootstrap, seed),
    }
}

/// Sample completions of `prompts` at T = 1 from the stream `seed`, with `edits`.
pub fn sample(model: &Model, prompts: &[Prompt], seed: u64, edits: &Edits) -> Result<Vec<Episode>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    generate_edited(model, prompts, Decode::T1, &mut rng, edits)
}

/// `n` contrast pairs `(clean, corrupt)` over corpus prompts, seeded (the patching pairs'
/// prompts for the same `seed`).
pub fn contrast_prompts(
    world: &WorldConfig,
    c: Contrast,
    n: usize,
    seed: u64,
) -> (Vec<Prompt>, Vec<Prompt>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    c.sample_pairs(&PromptDist::corpus(world), &mut rng, n)
        .into_iter()
        .unzip()
}

/// Every hook value of `hooks` over whole episodes (teacher-forced, 18 positions), rows in
/// episode order: `[n, 18, ...]` per hook.
pub fn episode_acts(
    model: &Model,
    eps: &[Episode],
    hooks: &[Hook],
) -> Result<BTreeMap<Hook, Tensor>> {
    let mut parts: BTreeMap<Hook, Vec<Tensor>> = BTreeMap::new();
    for chunk in eps.chunks(256) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids().to_vec()).collect();
        let out = model.forward(
            &Input::Ids(model.ids_tensor(&ids)?),
            &Run {
                cache: hooks.to_vec(),
                logits: Logits::Skip,
                ..Run::default()
            },
        )?;
        for &h in hooks {
            parts.entry(h).or_default().push(out.cache.get(h)?.clone());
        }
    }
    parts
        .into_iter()
        .map(|(h, v)| Ok((h, Tensor::cat(&v, 0)?)))
        .collect()
}

/// What replaces a target's activation.
#[derive(Clone, Debug)]
pub enum Values {
    /// One value per position for every row: `[1, 18, ...]` per hook.
    Mean(BTreeMap<Hook, Tensor>),
    /// One value per prompt row and position: `[n, 18, ...]` per hook.
    PerRow(BTreeMap<Hook, Tensor>),
}

impl Values {
    /// The mean over rows of every hook of `acts`.
    pub fn mean_of(acts: &BTreeMap<Hook, Tensor>) -> Result<Values> {
        Ok(Values::Mean(
            acts.iter()
                .map(|(&h, t)| Ok((h, t.mean_keepdim(0)?)))
                .collect::<Result<_>>()?,
        ))
    }
    fn window(&self, hook: Hook, w: &Window) -> Result<Tensor> {
        let (map, rows) = match self {
            Values::Mean(m) => (m, None),
            Values::PerRow(m) => (m, Some(&w.rows)),
        };
        let t = map
            .get(&hook)
            .ok_or_else(|| crate::Error::input(format!("no values for {hook}")))?;
        let t = match rows {
            Some(r) => t.narrow(0, r.start, r.len())?,
            None => t.clone(),
        };
        Ok(t.narrow(1, w.offset, w.len)?)
    }
}

/// Edits that write `values` into every target whose position is in the forward's window.
pub fn replace_edits<'a>(
    set: &'a [Target],
    values: &'a Values,
) -> impl Fn(&Window) -> Result<Vec<Intervention>> + Sync + 'a {
    move |w: &Window| {
        let mut v = Vec::new();
        for t in set {
            if t.pos < w.offset || t.pos >= w.offset + w.len {
                continue;
            }
            let hook = t.comp.hook();
            let iv = Intervention::replace(hook, values.window(hook, w)?).at_positions(&[t.pos]);
            v.push(match t.comp.head {
                Some(h) => iv.at_heads(&[h]),
                None => iv,
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_checked_and_named() {
        assert_eq!(Component::head(1, 2).to_string(), "L1H2");
        assert_eq!(Component::at(Site::MlpOut, 0).to_string(), "L0 mlp_out");
        assert!(Component::head(1, 4).check(4, 4).is_err());
        assert!(Component::head(4, 0).check(4, 4).is_err());
        assert!(Component::at(Site::AttnOut, 3).check(4, 4).is_ok());
        let set = [
            Target {
                comp: Component::head(1, 0),
                pos: 11,
            },
            Target {
                comp: Component::at(Site::MlpOut, 0),
                pos: 10,
            },
        ];
        assert_eq!(names(&set), "L1H0@11+L0 mlp_out@10");
    }
}
