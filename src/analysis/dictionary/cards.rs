//! Looking at latents: for each latent, its top-activating contexts on corpus episodes, its
//! activation histogram, and the tokens its decoder promotes directly through the (tied)
//! unembedding, with a crosscoder's readings beside them. Plain data for `view`; runs models,
//! must not draw or write files.

use super::collect;
use super::files::Manifest;
use super::readings::{self, LatentClass};
use super::Dictionary;
use crate::io::checkpoint::{self, StTensor};
use crate::lab::world;
use crate::{Model, Result};
use ndarray::Array2;
use serde::Serialize;

/// Contexts shown per latent.
pub const TOP_CONTEXTS: usize = 12;
/// Histogram bins.
pub const BINS: usize = 20;
/// Tokens listed per model as promoted.
pub const PROMOTED: usize = 6;

/// One context: an episode's tokens, the latent's activation at each position read, and the
/// position where it peaks.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    /// Token labels of the 18-token episode.
    pub tokens: Vec<String>,
    /// Activation per position (0 where not read).
    pub acts: Vec<f32>,
    /// The peak position.
    pub at: usize,
}

/// One latent.
#[derive(Clone, Debug, Serialize)]
pub struct Card {
    /// Latent index.
    pub latent: usize,
    /// Crosscoder only: class, relative decoder norm, ν^ε, ν^r, Latent Scaling's flag.
    pub class: Option<LatentClass>,
    /// Relative decoder norm (crosscoder).
    pub relative_norm: Option<f64>,
    /// ν^ε (crosscoder, one-model latents).
    pub nu_error: Option<f64>,
    /// ν^r.
    pub nu_recon: Option<f64>,
    /// Flagged by Latent Scaling.
    pub artefact: bool,
    /// Share of tokens it fires on.
    pub frequency: f64,
    /// Its largest activation.
    pub max: f32,
    /// Counts of its nonzero activations in [`BINS`] equal bins over (0, max].
    pub histogram: Vec<usize>,
    /// Top contexts, strongest first.
    pub top: Vec<Context>,
    /// Per model, the tokens whose logits its decoder raises most (label, logit per unit
    /// activation), through the unembedding alone (the final LayerNorm left out).
    pub promoted: Vec<Vec<(String, f64)>>,
}

/// The latents page.
#[derive(Clone, Debug, Serialize)]
pub struct LatentsView {
    /// The models (A, B for a crosscoder).
    pub models: Vec<String>,
    /// The hook read.
    pub hook: String,
    /// Tokens the page rests on.
    pub tokens: usize,
    /// Dictionary size.
    pub d_sae: usize,
    /// Active latents per class (crosscoder), and how many Latent Scaling flags.
    pub counts: Option<(Vec<(LatentClass, usize)>, usize)>,
    /// The latents shown.
    pub cards: Vec<Card>,
    #[serde(skip)]
    acts: Array2<f32>,
    #[serde(skip)]
    input: Array2<f32>,
    #[serde(skip)]
    ids: Vec<[u32; world::SEQ_LEN]>,
}

impl LatentsView {
    /// Every latent's activations on the episodes as safetensors: `acts` `[tokens, d_sae]`
    /// f32 (rows episode-major, position-minor), the dictionary's input `x`
    /// `[tokens, n_models·d]` f32 (the models' activations side by side), `ids`
    /// `[episodes, 18]` i64.
    pub fn export(&self) -> Result<Vec<u8>> {
        let ids: Vec<i64> = self.ids.iter().flatten().map(|&i| i64::from(i)).collect();
        checkpoint::serialize(
            &[
                (
                    "acts".to_string(),
                    StTensor::F32(
                        self.acts.shape().to_vec(),
                        self.acts.iter().copied().collect(),
                    ),
                ),
                (
                    "x".to_string(),
                    StTensor::F32(
                        self.input.shape().to_vec(),
                        self.input.iter().copied().collect(),
                    ),
                ),
                (
                    "ids".to_string(),
                    StTensor::I64(vec![self.ids.len(), world::SEQ_LEN], ids),
                ),
            ],
            None,
        )
    }
}

/// Build the page for `dict` (trained as `man` says) on `models` over `episodes` corpus
/// episodes from `seed`: the latents `chosen`, or by default a crosscoder's one-model latents
/// and then the most frequent, `top` in all.
pub fn cards(
    dict: &Dictionary,
    man: &Manifest,
    models: &[&Model],
    episodes: usize,
    seed: u64,
    chosen: &[usize],
    top: usize,
) -> Result<LatentsView> {
    let l = dict.d_sae();
    if let Some(bad) = chosen.iter().find(|&&j| j >= l) {
        input_err!("--latents: latent {bad} is out of range (the dictionary has {l}: 0..{l})");
    }
    if models.len() != dict.n_models {
        input_err!(
            "the dictionary encodes {} model(s), not {}",
            dict.n_models,
            models.len()
        );
    }
    let point = man.point();
    let seqs = collect::corpus(episodes, seed);
    let acts: Vec<Array2<f32>> = models
        .iter()
        .map(|m| collect::activations(m, &seqs, &point))
        .collect::<Result<_>>()?;
    let views: Vec<_> = acts.iter().map(|a| a.view()).collect();
    let x = super::concat(&views)?;
    let z = dict.encode_all(x.view());
    let read = (dict.n_models == 2)
        .then(|| readings::read(dict, acts[0].view(), acts[1].view()))
        .transpose()?;
    let positions = point.positions();
    let n = z.nrows();
    let freq: Vec<usize> = (0..l)
        .map(|j| z.column(j).iter().filter(|&&v| v > 0.0).count())
        .collect();
    let mut pick: Vec<usize> = chosen.to_vec();
    if pick.is_empty() {
        if let Some(r) = &read {
            pick.extend((0..l).filter(|&j| r.class[j].one_model() && freq[j] > 0));
        }
        let mut by_freq: Vec<usize> = (0..l)
            .filter(|j| !pick.contains(j) && freq[*j] > 0)
            .collect();
        by_freq.sort_by(|&a, &b| freq[b].cmp(&freq[a]).then(a.cmp(&b)));
        pick.extend(by_freq);
        pick.truncate(top.max(1));
    }
    // Direct logit effect of each latent's decoder per model: d · W_Uᵀ.
    let wte: Vec<Vec<Vec<f32>>> = models
        .iter()
        .map(|m| {
            m.unembedding()
                .to_dtype(candle_core::DType::F32)?
                .to_vec2::<f32>()
        })
        .collect::<std::result::Result<_, _>>()?;
    let cards = pick
        .iter()
        .map(|&j| {
            let col = z.column(j);
            let max = col.iter().copied().fold(0f32, f32::max);
            let mut histogram = vec![0usize; BINS];
            for &v in col.iter().filter(|&&v| v > 0.0) {
                let b = ((v / max) * BINS as f32).ceil() as usize;
                histogram[b.clamp(1, BINS) - 1] += 1;
            }
            // Episodes by their peak activation.
            let per = positions.len();
            let mut peaks: Vec<(f32, usize, usize)> = (0..seqs.len())
                .map(|e| {
                    (0..per).map(|i| (col[e * per + i], e, positions[i])).fold(
                        (0f32, e, positions[0]),
                        |a, b| if b.0 > a.0 { b } else { a },
                    )
                })
                .filter(|p| p.0 > 0.0)
                .collect();
            peaks.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let top = peaks
                .iter()
                .take(TOP_CONTEXTS)
                .map(|&(_, e, at)| {
                    let mut a = vec![0f32; world::SEQ_LEN];
                    for (i, &p) in positions.iter().enumerate() {
                        a[p] = col[e * per + i];
                    }
                    Context {
                        tokens: seqs[e].iter().map(|&t| world::label(t)).collect(),
                        acts: a,
                        at,
                    }
                })
                .collect();
            let promoted = (0..dict.n_models)
                .map(|m| {
                    let dv = dict.decoder(j, m);
                    let mut lg: Vec<(String, f64)> = wte[m]
                        .iter()
                        .enumerate()
                        .map(|(t, row)| {
                            let v: f32 = row.iter().zip(dv.iter()).map(|(a, b)| a * b).sum();
                            (world::label(t as u32), f64::from(v))
                        })
                        .collect();
                    lg.sort_by(|a, b| b.1.total_cmp(&a.1));
                    lg.truncate(PROMOTED);
                    lg
                })
                .collect();
            Card {
                latent: j,
                class: read.as_ref().map(|r| r.class[j]),
                relative_norm: read.as_ref().map(|r| r.relative_norm[j]),
                nu_error: read.as_ref().and_then(|r| r.nu_error[j]),
                nu_recon: read.as_ref().and_then(|r| r.nu_recon[j]),
                artefact: read.as_ref().is_some_and(|r| r.artefact[j]),
                frequency: freq[j] as f64 / n.max(1) as f64,
                max,
                histogram,
                top,
                promoted,
            }
        })
        .collect();
    let counts = read.as_ref().map(|r| r.counts());
    Ok(LatentsView {
        models: man.models.iter().map(|s| s.name.clone()).collect(),
        hook: man.hook.clone(),
        tokens: n,
        d_sae: l,
        counts,
        cards,
        acts: z,
        input: x,
        ids: seqs,
    })
}
