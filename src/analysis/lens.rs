//! Logit lens: the model's own final LayerNorm and unembedding applied to the residual stream
//! after every layer, read as next-token probabilities at one position. Owns only the choice of
//! residuals and the read-out; the maths is the model's forward started at layer `n_layer`.
//! Must not draw or print; must not re-implement the forward pass.

use crate::model::{Input, Logits, Model, Run, Start};
use crate::{Hook, Result};
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

/// Logit-lens read-out at one position, averaged over the prompts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensResult {
    /// Residual points, in order: `blocks.0.hook_resid_pre` (the embeddings), then
    /// `blocks.{l}.hook_resid_post` for every layer l (the last one is the model's output).
    pub hooks: Vec<Hook>,
    /// Short labels of the points: `embed`, `0`, `1`, ...
    pub points: Vec<String>,
    /// The position read.
    pub pos: usize,
    /// Number of prompts averaged.
    pub n_prompts: usize,
    /// Token ids reported.
    pub tokens: Vec<u32>,
    /// Mean probability `[point][token]` over the prompts.
    pub probs: Vec<Vec<f64>>,
    /// The most probable token of the mean distribution at each point, with its probability.
    pub top: Vec<(u32, f64)>,
    /// Each prompt's probability of each reported token, `[point][token][prompt]`.
    #[serde(default, skip_serializing_if = "crate::io::wire::public")]
    pub per_prompt: Vec<Vec<Vec<f64>>>,
}

/// Tokens reported when none are asked for: the model's top few at the output (3 keeps a plot
/// readable).
const DEFAULT_TOP: usize = 3;

/// Run the logit lens on `ids` (`[batch][pos]`, equal lengths) at position `pos` (None = last)
/// for the token ids `tokens` (empty = the 3 most probable tokens of the model's output).
pub fn logit_lens(
    model: &Model,
    ids: &[Vec<u32>],
    pos: Option<usize>,
    tokens: &[u32],
) -> Result<LensResult> {
    let ids_t = model.ids_tensor(ids)?; // [b, t] (checks ids and lengths)
    let (b, t) = ids_t.dims2()?;
    let pos = pos.unwrap_or(t - 1);
    if pos >= t {
        input_err!("--pos {pos} is outside the prompt ({t} tokens, positions 0..{t})");
    }
    let vocab = model.config().vocab_size;
    if let Some(bad) = tokens.iter().find(|&&i| i as usize >= vocab) {
        input_err!("--tokens: token id {bad} is out of range (vocab_size {vocab})");
    }
    let n_layer = model.config().n_layer;
    let mut hooks = vec![Hook::ResidPre(0)];
    hooks.extend((0..n_layer).map(Hook::ResidPost));
    let out = model.forward(
        &Input::Ids(ids_t),
        &Run {
            cache: hooks.clone(),
            logits: Logits::Skip,
            ..Run::default()
        },
    )?;
    out.cache.check_finite()?;
    // Every point's residual at `pos`, stacked along the batch: [points·b, 1, d].
    let resid = hooks
        .iter()
        .map(|h| Ok(out.cache.get(*h)?.narrow(1, pos, 1)?))
        .collect::<Result<Vec<_>>>()?;
    let resid = Tensor::cat(&resid, 0)?;
    // Starting at layer n_layer runs only ln_f and the unembedding: no block, so no past keys
    // or values are needed, and the window can be the single row at `pos`.
    let start = Start {
        layer: n_layer,
        resid,
        offset: pos,
        past: vec![],
    };
    let logits = model
        .forward(&Input::Resid(start), &Run::default())?
        .logits
        .ok_or_else(|| crate::Error::input("logit lens: the model returned no logits"))?; // [points·b, 1, vocab]
    let all = candle_nn::ops::softmax_last_dim(&logits.squeeze(1)?)?
        .to_dtype(DType::F64)?
        .reshape((hooks.len(), b, vocab))?; // [points, b, vocab]
    let probs = all.mean(1)?; // [points, vocab], mean over prompts
    let all = all.to_vec3::<f64>()?;
    let top_ids = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let probs = probs.to_vec2::<f64>()?;
    let top = top_ids
        .iter()
        .zip(&probs)
        .map(|(&i, p)| (i, p[i as usize]))
        .collect();
    let tokens: Vec<u32> = if tokens.is_empty() {
        let last = &probs[probs.len() - 1];
        let mut order: Vec<u32> = (0..vocab as u32).collect();
        order.sort_by(|&x, &y| last[y as usize].total_cmp(&last[x as usize]));
        order.truncate(DEFAULT_TOP);
        order
    } else {
        tokens.to_vec()
    };
    let mut points = vec!["embed".to_string()];
    points.extend((0..n_layer).map(|l| l.to_string()));
    Ok(LensResult {
        hooks,
        points,
        pos,
        n_prompts: b,
        tokens: tokens.clone(),
        probs: probs
            .iter()
            .map(|p| tokens.iter().map(|&i| p[i as usize]).collect())
            .collect(),
        top,
        per_prompt: all
            .iter()
            .map(|pt| {
                tokens
                    .iter()
                    .map(|&i| pt.iter().map(|row| row[i as usize]).collect())
                    .collect()
            })
            .collect(),
    })
}
