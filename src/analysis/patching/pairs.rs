//! Prompt pairs: a clean and a corrupted prompt aligned position by position, checked into a
//! [`Setup`] with the metric position and direction; the toy world's contrast pairs; the default
//! metric of a pair given on the command line. Must not run sweeps.

use super::{last_logits, Direction, Metric};
use crate::lab::world::{self, Contrast, MetricKind, Mode, Prompt, PromptDist, WorldConfig};
use crate::model::{Logits, Model, Run};
use crate::{Error, Input, Result};
use candle_core::Tensor;

/// One clean / corrupted prompt pair (same length, aligned position by position) and the
/// metric read from it (tokens may differ between pairs; the position is shared).
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// Clean prompt ids.
    pub clean: Vec<u32>,
    /// Corrupted prompt ids.
    pub corrupt: Vec<u32>,
    /// The metric for this pair.
    pub metric: Metric,
}

/// A checked batch of pairs, the metric position and the direction. Results are means over
/// the pairs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The pairs (at least one; all of one length).
    pub pairs: Vec<Pair>,
    /// Position where the metric reads the logits.
    pub pos: usize,
    /// Which run receives the patch.
    pub direction: Direction,
}

impl Setup {
    /// Check `pairs` against `model`: equal lengths, ids and metric tokens in the vocabulary,
    /// the position in range (default: the last one).
    pub fn new(
        model: &Model,
        pairs: Vec<Pair>,
        pos: Option<usize>,
        direction: Direction,
    ) -> Result<Setup> {
        let Some(first) = pairs.first() else {
            input_err!("no prompt pairs given");
        };
        let len = first.clean.len();
        for (i, p) in pairs.iter().enumerate() {
            if p.clean.len() != p.corrupt.len() {
                let which = if pairs.len() > 1 {
                    format!("pair {i}: ")
                } else {
                    String::new()
                };
                input_err!(
                    "{which}clean has {} tokens but corrupt has {}; patching needs aligned prompts of equal length",
                    p.clean.len(),
                    p.corrupt.len()
                );
            }
            if p.clean.len() != len {
                input_err!(
                    "pair {i}: {} tokens, pair 0 has {len}; all pairs need one length",
                    p.clean.len()
                );
            }
            model.check_ids(&[p.clean.clone(), p.corrupt.clone()])?;
            let vocab = model.config().vocab_size;
            if let Some(t) = p.metric.tokens().into_iter().find(|&t| t as usize >= vocab) {
                input_err!("--metric: token id {t} is not in the vocabulary (vocab_size {vocab})");
            }
        }
        let pos = pos.unwrap_or(len - 1);
        if pos >= len {
            input_err!("--at: position {pos} is out of range 0..{len}");
        }
        Ok(Setup {
            pairs,
            pos,
            direction,
        })
    }
    /// Prompt length.
    pub fn len(&self) -> usize {
        self.pairs[0].clean.len()
    }
    /// True when there are no positions (never for a checked setup).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (source, target) ids of the first `t` positions: the source's activations are written
    /// into the target run.
    pub(crate) fn ids(&self, model: &Model, t: usize) -> Result<(Tensor, Tensor)> {
        let take = |f: &dyn Fn(&Pair) -> &Vec<u32>| -> Vec<Vec<u32>> {
            self.pairs.iter().map(|p| f(p)[..t].to_vec()).collect()
        };
        let clean = model.ids_tensor(&take(&|p| &p.clean))?;
        let corrupt = model.ids_tensor(&take(&|p| &p.corrupt))?;
        Ok(match self.direction {
            Direction::Denoise => (clean, corrupt),
            Direction::Noise => (corrupt, clean),
        })
    }
    pub(crate) fn metrics(&self) -> Vec<&Metric> {
        self.pairs.iter().map(|p| &p.metric).collect()
    }
}

/// The default metric of a pair: logit difference of the clean run's top token at `pos`
/// (default last) against the corrupted run's top token; an error when both runs agree.
pub fn default_metric(
    model: &Model,
    clean: &[u32],
    corrupt: &[u32],
    pos: Option<usize>,
) -> Result<Metric> {
    let top = |ids: &[u32], what: &str| -> Result<u32> {
        let p = pos.unwrap_or(ids.len().saturating_sub(1));
        if p >= ids.len() {
            input_err!("--at: position {p} is out of range 0..{}", ids.len());
        }
        let t = model
            .ids_tensor(&[ids.to_vec()])
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        let run = Run {
            logits: Logits::At(vec![p]),
            ..Run::default()
        };
        let l = last_logits(model.forward(&Input::Ids(t), &run)?.logits)?;
        Ok(l.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?)
    };
    let (a, b) = (top(clean, "--clean")?, top(corrupt, "--corrupt")?);
    if a == b {
        input_err!(
            "--metric: clean and corrupted runs predict the same top token ({a}); choose a metric"
        );
    }
    Ok(Metric::LogitDiff { a, b })
}
/// A world prompt as `kind` reads it: its ids (for `defect`, with `H` teacher-forced at
/// position 11) and the metric (`E` − `H` for `mode`; `!` − the right first digit, the
/// smallest question digit, for `defect`). The metric position is `kind.pos()`.
pub fn world_prompt(kind: MetricKind, p: &Prompt) -> (Vec<u32>, Metric) {
    let mut ids = p.ids().to_vec();
    let metric = match kind {
        MetricKind::Mode => Metric::LogitDiff {
            a: world::E,
            b: world::H,
        },
        MetricKind::Defect => {
            ids.push(world::H);
            let right = p.answer(Mode::H).map_or(world::DIGIT0, |a| a[0]);
            Metric::LogitDiff {
                a: world::BANG,
                b: right,
            }
        }
    };
    (ids, metric)
}

/// `n` contrast pairs of the toy world (seeded, prompts from the corpus distribution with the
/// contrasted slot set and unset), read with the contrast's metric ([`world_prompt`]); and the
/// metric position.
pub fn world_pairs(contrast: Contrast, n: usize, seed: u64) -> Result<(Vec<Pair>, usize)> {
    use rand::SeedableRng;
    if n == 0 {
        input_err!("--n: need at least one pair");
    }
    let kind = contrast.metric();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dist = PromptDist::corpus(&WorldConfig::default());
    let pairs = contrast
        .sample_pairs(&dist, &mut rng, n)
        .into_iter()
        .map(|(c, k)| {
            let (clean, metric) = world_prompt(kind, &c);
            let (corrupt, _) = world_prompt(kind, &k);
            Pair {
                clean,
                corrupt,
                metric,
            }
        })
        .collect();
    Ok((pairs, kind.pos()))
}
