//! Batched autoregressive generation of world completions (7 tokens after an 11-token prompt),
//! greedy or sampled, reusing past keys/values so each new token costs one position's forward.
//! Owns decoding only; the forward pass is `model`, the world's rules are `world`.

use crate::lab::world::{Episode, Prompt, COMPLETION_LEN, PROMPT_LEN};
use crate::model::engine::{Engine, Workspace};
use crate::model::hooks::{Hook, Intervention};
use crate::model::{Input, Logits, Model, Run, Start};
use crate::Result;
use candle_core::{Tensor, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decode {
    /// Highest logit (ties: lowest id).
    Greedy,
    /// Sample from softmax(logits / temperature).
    Sample {
        /// Softmax temperature (> 0; 1 is the model's own distribution).
        temperature: f64,
    },
}

impl Decode {
    /// Sampling at temperature 1.
    pub const T1: Decode = Decode::Sample { temperature: 1.0 };

    /// Name for tables and JSON (`greedy`, `T=1`).
    pub fn name(&self) -> String {
        match self {
            Decode::Greedy => "greedy".into(),
            Decode::Sample { temperature } => format!("T={temperature}"),
        }
    }
}

/// Rows per forward batch: 16–64 was candle's sweet spot on 2 cores, and larger batches were no
/// faster per sequence (docs/DESIGN.md §7); incremental steps are tiny, so use the upper end.
const CHUNK: usize = 256;

/// Complete every prompt with `model`: returns one episode per prompt, in order. Sampling draws
/// from `rng` in a fixed order (prompt by prompt within a step), so a seed fixes the result.
pub fn generate(
    model: &Model,
    prompts: &[Prompt],
    decode: Decode,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Episode>> {
    generate_edited(model, prompts, decode, rng, &|_: &Window| Ok(Vec::new()))
}

/// [`generate`] on the training engine from flat parameters (a GPT-2 model as training holds
/// it): the same chunks of [`CHUNK`] prompts and the same order of draws (step by step, prompt
/// by prompt within a chunk). Its logits equal the candle model's up to float rounding, so a
/// draw can differ only where a sampled uniform falls within rounding of a boundary.
pub fn generate_flat(
    engine: &Engine,
    params: &[f32],
    prompts: &[Prompt],
    decode: Decode,
    rng: &mut ChaCha8Rng,
    work: &mut Workspace,
) -> Result<Vec<Episode>> {
    let vocab = engine.config().vocab_size;
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(CHUNK) {
        let ids: Vec<u32> = chunk.iter().flat_map(|p| p.ids()).collect();
        let toks = engine.decode(
            &engine.view(params)?,
            &ids,
            PROMPT_LEN,
            COMPLETION_LEN,
            work,
            |logits| {
                Ok(logits
                    .chunks_exact(vocab)
                    .map(|row| choose_row(row, decode, rng))
                    .collect())
            },
        )?;
        for (p, c) in chunk.iter().zip(toks.chunks_exact(COMPLETION_LEN)) {
            let mut completion = [0u32; COMPLETION_LEN];
            completion.copy_from_slice(c);
            out.push(Episode {
                prompt: *p,
                completion,
            });
        }
    }
    Ok(out)
}

/// One forward of generation: prompt rows `rows` (indices into the prompts given) over the
/// absolute positions `offset..offset + len` (the whole prompt, then one position per step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The prompts' indices of the batch rows.
    pub rows: std::ops::Range<usize>,
    /// First absolute position of the forward.
    pub offset: usize,
    /// Positions in the forward.
    pub len: usize,
}

/// The interventions of one generation forward (ablations, steering), given its window.
pub type Edits<'a> = dyn Fn(&Window) -> Result<Vec<Intervention>> + Sync + 'a;

/// [`generate`] with `edits(window)` applied in every forward (prompt pass and each step), so
/// an edit at a prompt position also changes the keys and values later tokens attend to. With
/// no edits it is [`generate`], draw for draw.
pub fn generate_edited(
    model: &Model,
    prompts: &[Prompt],
    decode: Decode,
    rng: &mut ChaCha8Rng,
    edits: &Edits,
) -> Result<Vec<Episode>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (i, chunk) in prompts.chunks(CHUNK).enumerate() {
        out.extend(generate_chunk(model, chunk, i * CHUNK, decode, rng, edits)?);
    }
    Ok(out)
}

fn generate_chunk(
    model: &Model,
    prompts: &[Prompt],
    first: usize,
    decode: Decode,
    rng: &mut ChaCha8Rng,
    edits: &Edits,
) -> Result<Vec<Episode>> {
    let rows = first..first + prompts.len();
    let n_layer = model.config().n_layer;
    let b = prompts.len();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids().to_vec()).collect();
    let kv_hooks: Vec<Hook> = (0..n_layer)
        .flat_map(|l| [Hook::K(l), Hook::V(l)])
        .collect();
    // The prompt in one pass, recording every block's keys and values.
    let out = model.forward(
        &Input::Ids(model.ids_tensor(&ids)?),
        &Run {
            cache: kv_hooks.clone(),
            logits: Logits::At(vec![PROMPT_LEN - 1]),
            interventions: edits(&Window {
                rows: rows.clone(),
                offset: 0,
                len: PROMPT_LEN,
            })?,
            ..Run::default()
        },
    )?;
    let mut past: Vec<(Tensor, Tensor)> = (0..n_layer)
        .map(|l| {
            Ok((
                out.cache.get(Hook::K(l))?.clone(),
                out.cache.get(Hook::V(l))?.clone(),
            ))
        })
        .collect::<Result<_>>()?; // [b, pos, head, d_head] each
    let mut logits = out.logits;
    let wte = model.wte();
    let wpe = model.wpe().ok_or_else(|| {
        crate::Error::input("sampling runs models with learned positions (GPT-2) only")
    })?;
    let mut completions = vec![[0u32; COMPLETION_LEN]; b];
    for step in 0..COMPLETION_LEN {
        let l = logits
            .take()
            .ok_or_else(|| crate::Error::input("forward returned no logits"))?;
        let next = choose(&l.squeeze(1)?, decode, rng)?; // [b]
        for (c, &t) in completions.iter_mut().zip(&next) {
            c[step] = t;
        }
        if step + 1 == COMPLETION_LEN {
            break;
        }
        // Feed the new token at its position: resid_pre of block 0 = token + position embedding.
        let pos = PROMPT_LEN + step;
        let ids = Tensor::from_vec(next, b, wte.device())?;
        let resid = wte
            .embedding(&ids)?
            .broadcast_add(&wpe.narrow(0, pos, 1)?)?
            .unsqueeze(1)?; // [b, 1, d]
        let out = model.forward(
            &Input::Resid(Start {
                layer: 0,
                resid,
                offset: pos,
                past: past.clone(),
            }),
            &Run {
                cache: kv_hooks.clone(),
                logits: Logits::At(vec![pos]),
                interventions: edits(&Window {
                    rows: rows.clone(),
                    offset: pos,
                    len: 1,
                })?,
                ..Run::default()
            },
        )?;
        for (l, (k, v)) in past.iter_mut().enumerate() {
            *k = Tensor::cat(&[&*k, out.cache.get(Hook::K(l))?], 1)?;
            *v = Tensor::cat(&[&*v, out.cache.get(Hook::V(l))?], 1)?;
        }
        logits = out.logits;
    }
    Ok(prompts
        .iter()
        .zip(completions)
        .map(|(&prompt, completion)| Episode { prompt, completion })
        .collect())
}

/// One token per row of `logits` `[b, vocab]`.
fn choose(logits: &Tensor, decode: Decode, rng: &mut ChaCha8Rng) -> Result<Vec<u32>> {
    match decode {
        Decode::Greedy => Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?),
        Decode::Sample { temperature } => {
            let rows = logits.to_vec2::<f32>()?;
            Ok(rows
                .iter()
                .map(|r| sample_row(r, temperature, rng))
                .collect())
        }
    }
}

/// One token from a row of logits: the first highest (greedy) or a draw.
fn choose_row(row: &[f32], decode: Decode, rng: &mut ChaCha8Rng) -> u32 {
    match decode {
        Decode::Greedy => {
            let mut best = 0;
            for (i, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = i;
                }
            }
            best as u32
        }
        Decode::Sample { temperature } => sample_row(row, temperature, rng),
    }
}

/// Draw an index from softmax(row / temperature), in f64 so that the draw is exact.
fn sample_row(row: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let t = temperature.max(1e-6);
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let w: Vec<f64> = row.iter().map(|&x| ((x as f64 - max) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, &wi) in w.iter().enumerate() {
        if u < wi {
            return i as u32;
        }
        u -= wi;
    }
    // Rounding left u just above the last weight: take the last token with non-zero weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::world::{PromptDist, WorldConfig, SEQ_LEN};
    use crate::model::Config;
    use rand::SeedableRng;

    #[test]
    fn cached_generation_matches_full_forward() {
        let cfg = Config::new(2, 32, 4, 32, 32);
        let model = Model::init(cfg, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let prompts = PromptDist::corpus(&WorldConfig::default()).sample_n(&mut rng, 5);
        let eps = generate(&model, &prompts, Decode::Greedy, &mut rng).unwrap();
        // Greedy decoding with the cache must equal greedy decoding by full forwards.
        let rows: Vec<Vec<u32>> = eps.iter().map(|e| e.ids().to_vec()).collect();
        let ids = model.ids_tensor(&rows).unwrap();
        let logits = model
            .forward(&Input::Ids(ids), &Run::default())
            .unwrap()
            .logits
            .unwrap(); // [5, 18, 32]
        let am = logits.argmax(D::Minus1).unwrap().to_vec2::<u32>().unwrap();
        for (e, a) in eps.iter().zip(am) {
            assert_eq!(&e.ids()[PROMPT_LEN..], &a[PROMPT_LEN - 1..SEQ_LEN - 1]);
        }
        // Sampling is reproducible from the seed.
        let s1 = generate(
            &model,
            &prompts,
            Decode::T1,
            &mut ChaCha8Rng::seed_from_u64(9),
        );
        let s2 = generate(
            &model,
            &prompts,
            Decode::T1,
            &mut ChaCha8Rng::seed_from_u64(9),
        );
        assert_eq!(s1.unwrap(), s2.unwrap());
    }

    #[test]
    fn sampling_follows_softmax() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let row = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let n = 40_000;
        let ones = (0..n)
            .filter(|_| sample_row(&row, 1.0, &mut rng) == 1)
            .count();
        // P(1) = 3/4; standard error 0.0022, tolerance 0.01.
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.01);
        assert_eq!(sample_row(&row, 1e-9, &mut rng), 1);
    }
}
