//! Dictionaries on checkpoints: train an SAE or crosscoder on the models' corpus activations,
//! measure the models' loss with the reconstruction spliced in, and score a crosscoder's
//! latents against the toy world's known variables (the scoreboard). Runs models; the maths is
//! `train`, `readings` and `score`. Must not write files.

use super::collect::{self, Point};
use super::files::Manifest;
use super::readings::{self, Readings};
use super::score::{self, Row, RowOptions};
use super::train::{self, TrainConfig, TrainStats};
use super::Dictionary;
use crate::analysis::probes::labels::{sample_prompts, Label};
use crate::analysis::probes::math;
use crate::analysis::probes::sets::ActivationSet;
use crate::io::checkpoint::{self, Checkpoint};
use crate::lab::world;
use crate::{Error, Input, Intervention, Logits, Model, Result, Run};
use candle_core::Tensor;
use ndarray::{s, Array2, Axis};
use serde::{Deserialize, Serialize};

/// What to train on.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Where to read.
    pub point: Point,
    /// Corpus episodes.
    pub episodes: usize,
    /// Their seed.
    pub seed: u64,
}

/// Check that `models` can share a dictionary at `point`: the hook exists in each, one width.
/// `names` name the models in errors.
pub fn check_models(models: &[&Model], names: &[String], point: &Point) -> Result<()> {
    for (m, n) in models.iter().zip(names) {
        point
            .hook(m.config().n_layer)
            .map_err(|e| Error::input(format!("{n}: {e}")))?;
    }
    if let (Some(first), Some(n0)) = (models.first(), names.first()) {
        for (m, n) in models.iter().zip(names).skip(1) {
            let (a, b) = (first.config().n_embd, m.config().n_embd);
            if a != b {
                input_err!(
                    "{n0} has width {a} but {n} has width {b}: a crosscoder needs one width"
                );
            }
        }
    }
    Ok(())
}

/// Each model's activations at `c.point` on `c.episodes` corpus episodes (same rows).
pub fn activations(models: &[&Model], c: &Corpus) -> Result<Vec<Array2<f32>>> {
    let seqs = collect::corpus(c.episodes, c.seed);
    models
        .iter()
        .map(|m| collect::activations(m, &seqs, &c.point))
        .collect()
}

/// Train a dictionary on `models` (one: SAE; two: crosscoder).
pub fn train_on(
    models: &[&Model],
    c: &Corpus,
    cfg: &TrainConfig,
) -> Result<(Dictionary, TrainStats)> {
    let acts = activations(models, c)?;
    let views: Vec<_> = acts.iter().map(|a| a.view()).collect();
    train::train(&views, cfg)
}

/// Next-token loss of one model on held-out corpus episodes: clean, with the dictionary's
/// reconstruction of its activations spliced in at the point read, and with them zeroed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplicedLoss {
    /// Mean next-token cross-entropy (nats), clean.
    pub clean: f64,
    /// With the reconstruction in place of the activations.
    pub spliced: f64,
    /// With the activations zeroed.
    pub zero: f64,
    /// `(zero − spliced) / (zero − clean)`: the share of the loss the reconstruction recovers.
    pub recovered: f64,
    /// Episodes.
    pub episodes: usize,
}

/// Mean next-token cross-entropy over every position of `ids` given `logits` `[b, t, v]`.
fn mean_ce(logits: &Tensor, ids: &[[u32; world::SEQ_LEN]]) -> Result<f64> {
    let lg = logits.to_dtype(candle_core::DType::F32)?.to_vec3::<f32>()?;
    let (mut sum, mut n) = (0f64, 0usize);
    for (row, seq) in lg.iter().zip(ids) {
        for t in 0..world::SEQ_LEN - 1 {
            let r = &row[t];
            let mx = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(mx) + r.iter().map(|&v| f64::from(v - mx).exp()).sum::<f64>().ln();
            sum += lse - f64::from(r[seq[t + 1] as usize]);
            n += 1;
        }
    }
    Ok(sum / n.max(1) as f64)
}

/// [`SplicedLoss`] of each model on `episodes` corpus episodes from `seed`.
pub fn spliced_loss(
    models: &[&Model],
    dict: &Dictionary,
    point: &Point,
    episodes: usize,
    seed: u64,
) -> Result<Vec<SplicedLoss>> {
    let seqs = collect::corpus(episodes, seed);
    let positions = point.positions();
    let d = dict.d;
    let mut out = Vec::new();
    // Full-sequence activations, to splice the read positions into.
    let full = Point {
        position: None,
        ..*point
    };
    let acts: Vec<Array2<f32>> = models
        .iter()
        .map(|m| collect::activations(m, &seqs, &full))
        .collect::<Result<_>>()?;
    // The rows the dictionary reads: the chosen positions of every episode.
    let rows: Vec<usize> = (0..seqs.len())
        .flat_map(|e| positions.iter().map(move |&p| e * world::SEQ_LEN + p))
        .collect();
    let read: Vec<Array2<f32>> = acts.iter().map(|a| a.select(Axis(0), &rows)).collect();
    let views: Vec<_> = read.iter().map(|a| a.view()).collect();
    let x = super::concat(&views)?;
    let recon = dict.decode(&dict.encode_all(x.view()));
    for (m, model) in models.iter().enumerate() {
        let hook = point.hook(model.config().n_layer)?;
        let mut spliced = acts[m].clone();
        for (i, &r) in rows.iter().enumerate() {
            spliced
                .row_mut(r)
                .assign(&recon.slice(s![i, m * d..(m + 1) * d]));
        }
        let mut zeroed = acts[m].clone();
        for &r in &rows {
            zeroed.row_mut(r).fill(0.0);
        }
        let loss = |value: Option<&Array2<f32>>| -> Result<f64> {
            let (mut sum, mut n) = (0f64, 0usize);
            for (c, chunk) in seqs.chunks(64).enumerate() {
                let ids: Vec<Vec<u32>> = chunk.iter().map(|s| s.to_vec()).collect();
                let mut run = Run {
                    logits: Logits::All,
                    ..Run::default()
                };
                if let Some(v) = value {
                    let r0 = c * 64 * world::SEQ_LEN;
                    let block = v.slice(s![r0..r0 + chunk.len() * world::SEQ_LEN, ..]);
                    let t = Tensor::from_iter(block.iter().copied(), &candle_core::Device::Cpu)?
                        .reshape((chunk.len(), world::SEQ_LEN, d))?;
                    run.interventions.push(Intervention::replace(hook, t));
                }
                let o = model.forward(&Input::Ids(model.ids_tensor(&ids)?), &run)?;
                let lg = o
                    .logits
                    .ok_or_else(|| Error::input("forward returned no logits"))?;
                sum += mean_ce(&lg, chunk)? * chunk.len() as f64;
                n += chunk.len();
            }
            Ok(sum / n.max(1) as f64)
        };
        let (clean, sp, zero) = (loss(None)?, loss(Some(&spliced))?, loss(Some(&zeroed))?);
        out.push(SplicedLoss {
            clean,
            spliced: sp,
            zero,
            recovered: (zero - sp) / (zero - clean),
            episodes,
        });
    }
    Ok(out)
}

/// One world variable on the scoreboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelRow {
    /// The variable.
    pub label: Label,
    /// For a model-dependent variable (the model's own choice, defection), whose: "A" or "B".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// The position read (the variable's decision position, or the dictionary's one position).
    pub position: usize,
    /// Prompts (half select the latent, half score it).
    pub n: usize,
    /// The scores; None when the variable has one value only on these prompts.
    pub row: Option<Row>,
    /// Why the row is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl LabelRow {
    /// The variable's name, with whose it is (`defect(A)`).
    pub fn name(&self) -> String {
        match &self.of {
            Some(m) => format!("{}({m})", self.label),
            None => self.label.to_string(),
        }
    }
}

/// Scoreboard settings.
#[derive(Clone, Copy, Debug)]
pub struct BoardOptions {
    /// Prompts per variable.
    pub n: usize,
    /// Seed of the prompts.
    pub prompt_seed: u64,
    /// Row settings.
    pub row: RowOptions,
}

impl BoardOptions {
    /// The standard scoreboard: `n` prompts per variable, 100 random directions, 5 probe folds
    /// at C = 1, 1000 bootstrap resamples, everything seeded by `seed`.
    pub fn standard(n: usize, seed: u64) -> BoardOptions {
        BoardOptions {
            n,
            prompt_seed: seed,
            row: RowOptions {
                random_dirs: 100,
                folds: 5,
                c: 1.0,
                resamples: 1000,
                seed,
            },
        }
    }
}

/// Score crosscoder `dict` on (`a`, `b`) against every world variable; a model-dependent
/// variable gets a row for each model's own values.
pub fn scoreboard(
    dict: &Dictionary,
    read: &Readings,
    a: &Model,
    b: &Model,
    point: &Point,
    o: &BoardOptions,
) -> Result<Vec<LabelRow>> {
    let mut rows = Vec::new();
    for &label in Label::ALL {
        let position = point.position.unwrap_or(label.decision_position());
        if position > world::POS_M {
            input_err!(
                "the scoreboard reads prompt positions 0..={}; the dictionary reads position {position}",
                world::POS_M
            );
        }
        let prompts = sample_prompts(label, o.n, o.prompt_seed, None, None);
        let layers = [point.layer];
        let set_a = ActivationSet::build(a, prompts.clone(), label, point.site, position, &layers)?;
        let set_b = ActivationSet::build(b, prompts, label, point.site, position, &layers)?;
        let x = super::concat(&[set_a.acts[0].view(), set_b.acts[0].view()])?;
        let z = dict.encode_all(x.view());
        let owners: Vec<(Option<String>, &Vec<i64>)> = if label.from_model() {
            vec![
                (Some("A".into()), &set_a.labels),
                (Some("B".into()), &set_b.labels),
            ]
        } else {
            vec![(None, &set_b.labels)]
        };
        for (of, labels) in owners {
            let mut r = LabelRow {
                label,
                of,
                position,
                n: labels.len(),
                row: None,
                skipped: None,
            };
            let what = format!("label '{}'", r.name());
            match math::encode_labels(labels, &what)
                .and_then(|enc| score::row(z.view(), read, x.view(), &enc, &o.row))
            {
                Ok(row) => r.row = Some(row),
                Err(e) => r.skipped = Some(e.to_string()),
            }
            rows.push(r);
        }
    }
    Ok(rows)
}

/// Everything `crosscoder train` learns about a pair.
#[derive(Clone, Debug)]
pub struct PairDiff {
    /// The crosscoder.
    pub dict: Dictionary,
    /// What it was trained on, and how.
    pub manifest: Manifest,
    /// Per-latent readings on the training activations.
    pub readings: Readings,
    /// The scoreboard.
    pub board: Vec<LabelRow>,
    /// Each model's loss with the reconstruction spliced in.
    pub loss: Vec<SplicedLoss>,
}

/// Held-out corpus episodes for the spliced loss.
pub const LOSS_EPISODES: usize = 256;

impl PairDiff {
    /// Train, read, score and measure a crosscoder on checkpoints `a`, `b` (directories as
    /// given in `dirs`, for the manifest).
    pub fn run(
        cks: [&Checkpoint; 2],
        dirs: [&str; 2],
        c: &Corpus,
        cfg: &TrainConfig,
        o: &BoardOptions,
    ) -> Result<PairDiff> {
        let (a, b) = (&cks[0].model, &cks[1].model);
        let names = [cks[0].name(), cks[1].name()];
        check_models(&[a, b], &names, &c.point)?;
        let acts = activations(&[a, b], c)?;
        let (dict, stats) = train::train(&[acts[0].view(), acts[1].view()], cfg)?;
        let readings = readings::read(&dict, acts[0].view(), acts[1].view())?;
        drop(acts);
        let board = scoreboard(&dict, &readings, a, b, &c.point, o)?;
        let loss = spliced_loss(
            &[a, b],
            &dict,
            &c.point,
            LOSS_EPISODES,
            c.seed.wrapping_add(1),
        )?;
        let manifest = Manifest::new(&cks, &dirs, c, cfg.clone(), stats)?;
        Ok(PairDiff {
            dict,
            manifest,
            readings,
            board,
            loss,
        })
    }

    /// The JSON files saved beside the weights: readings, scoreboard, spliced loss.
    pub fn json_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (READINGS, checkpoint::pretty(&self.readings)?),
            (SCOREBOARD, checkpoint::pretty(&self.board)?),
            (LOSS, checkpoint::pretty(&self.loss)?),
        ])
    }
}

/// File names of a crosscoder folder's readings, scoreboard and spliced loss.
pub const READINGS: &str = "readings.json";
/// The scoreboard's file.
pub const SCOREBOARD: &str = "scoreboard.json";
/// The spliced loss's file.
pub const LOSS: &str = "spliced_loss.json";
