//! The activations a dictionary is trained and read on: ordinary corpus episodes of the toy
//! world run through a model, one hook read at every position (or one). Rows are
//! episode-major, position-minor. Must not train or write files.

use crate::analysis::site::Site;
use crate::lab::world::{self, WorldConfig};
use crate::{Error, Hook, Input, Logits, Model, Result, Run};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Sequences per forward batch.
const BATCH: usize = 64;

/// Where a dictionary reads: a `[batch, pos, d_model]` site at one layer, at every position
/// of an episode or at one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The site.
    pub site: Site,
    /// Its layer.
    pub layer: usize,
    /// One position (0..18), or None for all.
    pub position: Option<usize>,
}

impl Point {
    /// The hook in a model of `n_layer` layers; errors name the site, layer or position.
    pub fn hook(&self, n_layer: usize) -> Result<Hook> {
        self.site.check_in(&Site::PROBED, "--site")?;
        if let Some(p) = self.position {
            if p >= world::SEQ_LEN {
                input_err!(
                    "--position {p} is outside the {}-token episode (0..{})",
                    world::SEQ_LEN,
                    world::SEQ_LEN
                );
            }
        }
        self.site.hook_in(self.layer, n_layer)
    }

    /// Positions read per episode.
    pub fn positions(&self) -> Vec<usize> {
        match self.position {
            Some(p) => vec![p],
            None => (0..world::SEQ_LEN).collect(),
        }
    }
}

/// `n` corpus episodes (prompt and corpus completion) from `seed`.
pub fn corpus(n: usize, seed: u64) -> Vec<[u32; world::SEQ_LEN]> {
    let cfg = WorldConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| world::corpus_episode(&cfg, &mut rng).ids())
        .collect()
}

/// Episodes needed for at least `tokens` rows at `point`.
pub fn episodes_for(tokens: usize, point: &Point) -> usize {
    tokens.div_ceil(point.positions().len()).max(1)
}

/// Activations of `model` at `point` on `seqs`: `[seqs · positions, d_model]`.
pub fn activations(
    model: &Model,
    seqs: &[[u32; world::SEQ_LEN]],
    point: &Point,
) -> Result<Array2<f32>> {
    let hook = point.hook(model.config().n_layer)?;
    let d = model.config().n_embd;
    let positions = point.positions();
    let mut out = Vec::with_capacity(seqs.len() * positions.len() * d);
    for chunk in seqs.chunks(BATCH) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|s| s.to_vec()).collect();
        let run = Run {
            cache: vec![hook],
            logits: Logits::At(vec![0]),
            ..Run::default()
        };
        let o = model.forward(&Input::Ids(model.ids_tensor(&ids)?), &run)?;
        o.cache.check_finite()?;
        let t = o.cache.get(hook)?; // [b, pos, d]
        let t = match point.position {
            Some(p) => t.narrow(1, p, 1)?,
            None => t.clone(),
        };
        out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Array2::from_shape_vec((seqs.len() * positions.len(), d), out).map_err(Error::input)
}
