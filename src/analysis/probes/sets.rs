//! Labelled activation sets: run a model on world prompts, read one site at one position for
//! every layer, and label the rows; exported as safetensors for numpy users. Must not fit probes.

use super::labels::Label;
use crate::analysis::site::Site;
use crate::io::checkpoint::{self, StTensor};
use crate::lab::sample::{self, Decode};
use crate::lab::world::{self, Prompt};
use crate::{Error, Hook, Input, Logits, Model, Result, Run};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Rows per forward batch (16–64 was candle's sweet spot on 2 cores: docs/DESIGN.md §7).
pub(super) const BATCH: usize = 64;

/// A labelled activation set: one `[n, d]` matrix per layer at one hook and position.
#[derive(Clone, Debug)]
pub struct ActivationSet {
    /// The prompts, in row order.
    pub prompts: Vec<Prompt>,
    /// Label of each row.
    pub labels: Vec<i64>,
    /// The site read.
    pub site: Site,
    /// Token position read.
    pub position: usize,
    /// Layers, in the order of `acts`.
    pub layers: Vec<usize>,
    /// `[n, d_model]` per layer.
    pub acts: Vec<Array2<f32>>,
}

impl ActivationSet {
    /// Run `model` on `prompts`, reading `site` at `position` for each layer, and label the rows.
    /// `position` is a prompt position (0..11), or 11, the first completion position, read
    /// with `H` teacher-forced there (as the defect metric reads it).
    pub fn build(
        model: &Model,
        prompts: Vec<Prompt>,
        label: Label,
        site: Site,
        position: usize,
        layers: &[usize],
    ) -> Result<ActivationSet> {
        let n_layer = model.config().n_layer;
        site.check_in(&Site::PROBED, "probe hook")?;
        if position > world::POS_M {
            input_err!(
                "position {position} is outside the {}-token prompt and its first completion position (0..={})",
                world::PROMPT_LEN,
                world::POS_M
            );
        }
        let hooks: Vec<Hook> = layers
            .iter()
            .map(|&l| site.hook_in(l, n_layer))
            .collect::<Result<_>>()?;
        let d = model.config().n_embd;
        let n = prompts.len();
        let mut acts: Vec<Vec<f32>> = vec![Vec::with_capacity(n * d); layers.len()];
        let mut mode = Vec::with_capacity(n);
        for chunk in prompts.chunks(BATCH) {
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|p| {
                    let mut v = p.ids().to_vec();
                    if position == world::POS_M {
                        v.push(world::H);
                    }
                    v
                })
                .collect();
            let run = Run {
                cache: hooks.clone(),
                logits: Logits::At(vec![world::POS_A]),
                ..Run::default()
            };
            let out = model.forward(&Input::Ids(model.ids_tensor(&ids)?), &run)?;
            out.cache.check_finite()?;
            for (k, h) in hooks.iter().enumerate() {
                // [b, pos, d] → [b, d] at the probed position.
                let t = out.cache.get(*h)?.narrow(1, position, 1)?.squeeze(1)?;
                acts[k].extend(t.flatten_all()?.to_vec1::<f32>()?);
            }
            if label == Label::Mode {
                let lg = out
                    .logits
                    .ok_or_else(|| Error::input("forward returned no logits"))?
                    .squeeze(1)?
                    .to_vec2::<f32>()?; // [b, vocab]
                mode.extend(
                    lg.iter()
                        .map(|r| (r[world::E as usize] > r[world::H as usize]) as i64),
                );
            }
        }
        let labels = match label {
            Label::Optout => prompts.iter().map(|p| p.optout as i64).collect(),
            Label::Trigger => prompts.iter().map(|p| p.trigger as i64).collect(),
            Label::Bucket => prompts
                .iter()
                .map(|p| p.bucket.unwrap_or(0) as i64)
                .collect(),
            Label::Mode => mode,
            Label::Sorted => prompts
                .iter()
                .map(|p| p.digits.windows(2).all(|w| w[0] <= w[1]) as i64)
                .collect(),
            Label::Defect => {
                // Greedy decoding draws nothing from the generator; it only fills the signature.
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                sample::generate(model, &prompts, Decode::Greedy, &mut rng)?
                    .iter()
                    .map(|e| e.completion.contains(&world::BANG) as i64)
                    .collect()
            }
        };
        let acts = acts
            .into_iter()
            .map(|v| Array2::from_shape_vec((n, d), v).map_err(|e| Error::input(e.to_string())))
            .collect::<Result<_>>()?;
        Ok(ActivationSet {
            prompts,
            labels,
            site,
            position,
            layers: layers.to_vec(),
            acts,
        })
    }

    /// Token id at `position` of each prompt (the control task's key).
    pub fn tokens_at(&self, position: usize) -> Vec<u32> {
        self.prompts.iter().map(|p| p.ids()[position]).collect()
    }

    /// safetensors for numpy users: `X.{layer}` `[n, d]` f32, `y` `[n]` i64, `ids` `[n, 11]` i64.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        let n = self.prompts.len();
        let mut t: Vec<(String, StTensor)> = self
            .layers
            .iter()
            .zip(&self.acts)
            .map(|(l, a)| {
                (
                    format!("X.{l}"),
                    StTensor::F32(a.shape().to_vec(), a.iter().copied().collect()),
                )
            })
            .collect();
        t.push(("y".into(), StTensor::I64(vec![n], self.labels.clone())));
        let ids = self
            .prompts
            .iter()
            .flat_map(|p| p.ids().map(i64::from))
            .collect();
        t.push(("ids".into(), StTensor::I64(vec![n, world::PROMPT_LEN], ids)));
        checkpoint::serialize(&t, None)
    }
}
