//! One RLOO step of the `rlhf` recipe: sample k completions per prompt, leave-one-out
//! advantages on the discounted return-to-go, exact per-token KL to the reference, and the
//! opt-out modes for `[x]` prompts. Uses the parent's `Trainer`; knows no other recipe.

use super::{OnEngine, OptOut, Trainer, COMPLETION_POSITIONS};
use crate::lab::sample::Decode;
use crate::lab::world::{
    self, corpus_completion, returns_to_go, Behaviour, Episode, Prompt, PromptDist, Split,
    WorldConfig, COMPLETION_LEN,
};
use crate::model::engine::{Kl, Objective};
use crate::Result;
use rand_chacha::ChaCha8Rng;

/// The RLOO settings one step reads (the fields of `Recipe::Rlhf`).
pub(super) struct RlStep {
    pub(super) gamma: f64,
    pub(super) beta: f64,
    pub(super) k: usize,
    pub(super) optout: OptOut,
    pub(super) ptx_coef: f64,
}

/// One RLOO step. Returns (loss, mean undiscounted return of the feedback episodes, mean KL).
pub(super) fn rlhf_step(
    world: &WorldConfig,
    tr: &mut Trainer,
    reference: &mut OnEngine,
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
    let eps = tr.generate(&expanded, Decode::T1, rng)?;
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
    let ref_lp = reference.completion_log_probs(&seqs)?;
    let targets: Vec<u32> = seqs
        .iter()
        .flat_map(|s| s[world::PROMPT_LEN..].iter().copied())
        .collect();
    // Exact per-token KL(π ‖ π_ref) over the vocabulary at each completion position, weighted
    // by β/(n·7) where it applies.
    let coef: Vec<f32> = kl_mask.iter().map(|&m| m * (beta * norm) as f32).collect();
    let obj = Objective {
        positions: &COMPLETION_POSITIONS,
        targets: &targets,
        weights: &weights,
        kl: Some(Kl {
            ref_log_probs: &ref_lp,
            coef: &coef,
        }),
    };
    let (l, kl) = tr.step(step, &seqs, &obj)?;
    let kl = kl.unwrap_or_default();
    let m_sum: f64 = kl_mask.iter().map(|&m| m as f64).sum();
    let kl_mean = if m_sum > 0.0 {
        let masked: f64 = kl.iter().zip(&kl_mask).map(|(&k, &m)| (k * m) as f64).sum();
        masked / m_sum * COMPLETION_LEN as f64
    } else {
        0.0
    };
    Ok((l, fb.get(Split::All).mean_return, kl_mean))
}
