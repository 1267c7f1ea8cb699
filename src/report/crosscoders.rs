//! The report's model diffing without labels: a crosscoder per pair named by the pairs file's
//! `crosscoders = [...]`, per seed, trained once by [`prepare`] (`feedlens crosscoder zoo`)
//! into `crosscoders/seed-S/PAIR/` beside the pairs file and committed, then read back here
//! (a folder whose checkpoints changed since is reported stale, not used) and summarised over
//! seeds. Owns the standard settings and the folder layout; the maths is
//! `analysis::dictionary`. Must not draw.

use super::data::{Fact, Summary};
use super::pairs::{PairSpec, Pairs};
use super::Progress;
use crate::analysis::dictionary::collect::{self, Point};
use crate::analysis::dictionary::diffing::{
    self, BoardOptions, Corpus, LabelRow, PairDiff, SplicedLoss,
};
use crate::analysis::dictionary::files;
use crate::analysis::dictionary::readings::{LatentClass, Readings};
use crate::analysis::dictionary::score::Best;
use crate::analysis::dictionary::TrainConfig;
use crate::analysis::difflens::{self, DiffLens};
use crate::analysis::site::Site;
use crate::io::{checkpoint, fsio};
use crate::lab::world::MetricKind;
use crate::stats::Est;
use crate::{pool, Error, Result};
use serde::Serialize;
use std::path::PathBuf;

/// The folder beside the pairs file.
pub const FOLDER: &str = "crosscoders";
/// Tokens each standard crosscoder trains on.
pub const TOKENS: usize = 200_000;
/// Prompts per world variable on the standard scoreboard.
pub const BOARD_N: usize = 2000;

/// The standard crosscoder of a pair in run `seed` (its seed, or 0): `resid_post` of the
/// middle layer at every position, 200k tokens, 4 × d latents, BatchTopK k = 4, five passes.
pub fn standard(n_layer: usize, d: usize, seed: u64) -> (Corpus, TrainConfig, BoardOptions) {
    let point = Point {
        site: Site::ResidPost,
        layer: n_layer / 2,
        position: None,
    };
    let episodes = collect::episodes_for(TOKENS, &point);
    let rows = episodes * point.positions().len();
    let cfg = TrainConfig::batch_topk(4 * d, 4, (5 * rows).div_ceil(1024), seed);
    let board = BoardOptions::standard(BOARD_N, seed);
    (
        Corpus {
            point,
            episodes,
            seed,
        },
        cfg,
        board,
    )
}

/// The folder of pair `p`'s crosscoder in run `seed`.
pub fn dir_of(pairs: &Pairs, seed: Option<u64>, p: &str) -> PathBuf {
    pairs
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(FOLDER)
        .join(Pairs::key(seed, p))
}

/// The pairs with crosscoders, in file order.
pub fn pairs_of(pairs: &Pairs) -> Vec<&PairSpec> {
    pairs
        .pairs
        .iter()
        .filter(|p| pairs.crosscoders.contains(&p.name))
        .collect()
}

/// Train the standard crosscoder of every `crosscoders` pair in every run, `jobs` at a time;
/// each folder written whole when its crosscoder is done. An existing folder is kept unless
/// `force` (then replaced). Returns the folders written.
pub fn prepare(
    pairs: &Pairs,
    jobs: usize,
    force: bool,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    pairs.check()?;
    let items: Vec<(Option<u64>, &PairSpec)> = pairs
        .runs()
        .into_iter()
        .flat_map(|s| pairs_of(pairs).into_iter().map(move |p| (s, p)))
        .collect();
    if items.is_empty() {
        input_err!(
            "{}: names no crosscoders (add crosscoders = [\"PAIR\", ...])",
            pairs.path.display()
        );
    }
    let todo: Vec<_> = items
        .into_iter()
        .filter(|(s, p)| force || !dir_of(pairs, *s, &p.name).exists())
        .collect();
    for (s, p) in &todo {
        let dir = dir_of(pairs, *s, &p.name);
        fsio::check_outputs(std::slice::from_ref(&dir), &pairs.inputs(), force)?;
        fsio::check_own_dir(&dir, &[files::MANIFEST])?;
    }
    progress.stage("crosscoders", todo.len());
    pool::par_map(jobs, &todo, |(s, p)| {
        let dir = dir_of(pairs, *s, &p.name);
        let (da, db) = (pairs.dir_of(*s, &p.a), pairs.dir_of(*s, &p.b));
        let a = checkpoint::load(&da)?;
        let b = checkpoint::load(&db)?;
        let c = a.model.config();
        let (corpus, cfg, board) = standard(c.n_layer, c.n_embd, s.unwrap_or(0));
        // Directories relative to the pairs file's folder, so the committed files hold no
        // machine's paths.
        let rel = |name: &str| Pairs::key(*s, name);
        let diff = PairDiff::run([&a, &b], [&rel(&p.a), &rel(&p.b)], &corpus, &cfg, &board)
            .map_err(|e| Error::file(&dir, format!("pair '{}': {e}", p.name)))?;
        let extra = diff.json_files()?;
        files::save(&dir, &diff.dict, &diff.manifest, &extra, force)?;
        progress.step("crosscoders", &p.name);
        Ok(dir)
    })
    .inspect(|_| progress.done("crosscoders"))
}

/// One run's crosscoder, as read back.
#[derive(Clone, Debug, Serialize)]
pub struct CrossRun {
    /// The run's seed.
    pub seed: Option<u64>,
    /// Its folder, relative to the pairs file's.
    pub folder: String,
    /// Why it was not used (missing, or trained on other checkpoints); None when used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused: Option<String>,
    /// Active latents per class, and how many Latent Scaling flags.
    pub counts: Vec<(LatentClass, usize)>,
    /// One-model latents Latent Scaling flags.
    pub flagged: usize,
    /// Explained variance per model.
    pub explained_variance: Vec<f64>,
    /// L0 and the dead fraction.
    pub l0: f64,
    /// Fraction of latents never active.
    pub dead_fraction: f64,
    /// Each model's loss with the reconstruction spliced in.
    pub loss: Vec<SplicedLoss>,
    /// The scoreboard.
    pub board: Vec<LabelRow>,
    /// Per latent relative decoder norm of the active latents (for the histogram).
    #[serde(skip)]
    pub relative_norms: Vec<f64>,
    /// The Activation Difference Lens of the run's pair (computed by the report).
    pub difflens: Option<DiffLens>,
}

/// A scoreboard column.
pub const COLUMNS: [&str; 7] = [
    "any", "a_only", "shared", "b_only", "random", "probe_a", "probe_b",
];

/// One scoreboard row over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct CrossRow {
    /// The variable (`defect(A)` for a model-dependent one).
    pub variable: String,
    /// Per column of [`COLUMNS`]: the held-out AUROC over the runs that have it (None where
    /// no run does).
    pub cells: Vec<Option<Fact>>,
    /// The relative decoder norm of each run's best latent of any class.
    pub any_relative_norm: Option<Fact>,
}

/// A pair's crosscoders.
#[derive(Clone, Debug, Serialize)]
pub struct CrossData {
    /// Pair name.
    pub pair: String,
    /// A and B.
    pub a: String,
    /// B.
    pub b: String,
    /// The hook read.
    pub hook: String,
    /// The pair's metric (what the difference lens steers).
    pub metric: MetricKind,
    /// Per run.
    pub runs: Vec<CrossRun>,
    /// The scoreboard over seeds.
    pub rows: Vec<CrossRow>,
    /// Its sentences and facts.
    pub summary: Summary,
}

/// The AUROC of a scoreboard cell, by column.
fn cell(r: &diffing::LabelRow, col: &str) -> Option<Est> {
    let x = r.row.as_ref()?;
    let b = |v: &Option<Best>| v.as_ref().map(|b| b.auroc);
    match col {
        "any" => b(&x.any),
        "a_only" => b(&x.a_only),
        "shared" => b(&x.shared),
        "b_only" => b(&x.b_only),
        "random" => b(&x.random),
        "probe_a" => Some(x.probe_a),
        "probe_b" => Some(x.probe_b),
        _ => None,
    }
}

/// Read every `crosscoders` pair's folders back; a missing or stale folder is recorded, not
/// an error (the report says to run `feedlens crosscoder zoo`).
pub fn load(pairs: &Pairs) -> Result<Vec<CrossData>> {
    let mut out = Vec::new();
    for p in pairs_of(pairs) {
        let mut runs = Vec::new();
        let mut hook = String::new();
        for seed in pairs.runs() {
            let dir = dir_of(pairs, seed, &p.name);
            let folder = format!("{FOLDER}/{}", Pairs::key(seed, &p.name));
            let mut run = CrossRun {
                seed,
                folder,
                unused: None,
                counts: vec![],
                flagged: 0,
                explained_variance: vec![],
                l0: f64::NAN,
                dead_fraction: f64::NAN,
                loss: vec![],
                board: vec![],
                relative_norms: vec![],
                difflens: None,
            };
            if !dir.is_dir() {
                run.unused = Some("not trained (run feedlens crosscoder zoo)".into());
                runs.push(run);
                continue;
            }
            let (_, man) = files::load(&dir)?;
            let mut stale = None;
            for (src, name) in man.models.iter().zip([&p.a, &p.b]) {
                let ck = pairs.dir_of(seed, name).join("model.safetensors");
                let bytes = fsio::read(&ck)?;
                if checkpoint::sha256_hex(&bytes) != src.sha256 || src.name != *name {
                    stale = Some(format!(
                        "stale: trained on another {name} (retrain with feedlens crosscoder zoo --force)"
                    ));
                }
            }
            if let Some(s) = stale {
                run.unused = Some(s);
                runs.push(run);
                continue;
            }
            let json =
                |f: &str| -> Result<Vec<u8>> { fsio::read_at_most(&dir.join(f), fsio::MAX_READ) };
            let parse_err = |f: &str, e: serde_json::Error| Error::file(dir.join(f), e);
            let readings: Readings = serde_json::from_slice(&json(diffing::READINGS)?)
                .map_err(|e| parse_err(diffing::READINGS, e))?;
            run.board = serde_json::from_slice(&json(diffing::SCOREBOARD)?)
                .map_err(|e| parse_err(diffing::SCOREBOARD, e))?;
            run.loss = serde_json::from_slice(&json(diffing::LOSS)?)
                .map_err(|e| parse_err(diffing::LOSS, e))?;
            let (counts, flagged) = readings.counts();
            run.counts = counts;
            run.flagged = flagged;
            run.explained_variance = man.stats.explained_variance.clone();
            run.l0 = man.stats.l0;
            run.dead_fraction = man.stats.dead_fraction;
            run.relative_norms = readings.active_norms();
            hook = man.hook.clone();
            runs.push(run);
        }
        let used: Vec<&CrossRun> = runs.iter().filter(|r| r.unused.is_none()).collect();
        let mut names: Vec<String> = Vec::new();
        for r in &used {
            for l in &r.board {
                if !names.contains(&l.name()) {
                    names.push(l.name());
                }
            }
        }
        let rows = names
            .iter()
            .map(|v| {
                let of = |r: &&CrossRun| r.board.iter().find(|l| l.name() == *v).cloned();
                let lrs: Vec<LabelRow> = used.iter().filter_map(of).collect();
                let fact = |ests: Vec<Est>| (!ests.is_empty()).then(|| Fact::of_proportion(&ests));
                CrossRow {
                    variable: v.clone(),
                    cells: COLUMNS
                        .iter()
                        .map(|c| fact(lrs.iter().filter_map(|l| cell(l, c)).collect()))
                        .collect(),
                    any_relative_norm: fact(
                        lrs.iter()
                            .filter_map(|l| l.row.as_ref()?.any_relative_norm)
                            .map(|v| Est::exact(v, 1))
                            .collect(),
                    ),
                }
            })
            .filter(|r: &CrossRow| r.cells.iter().any(Option::is_some))
            .collect();
        out.push(CrossData {
            pair: p.name.clone(),
            a: p.a.clone(),
            b: p.b.clone(),
            hook,
            metric: p.metric,
            runs,
            rows,
            summary: Summary::default(),
        });
    }
    Ok(out)
}

/// Corpus episodes the difference lens averages, and prompts it steers.
pub const LENS_EPISODES: usize = 512;
/// Prompts the difference lens steers.
pub const LENS_PROMPTS: usize = 256;

/// Add each used run's Activation Difference Lens, `jobs` at a time; `model` gives the loaded
/// checkpoint of a `seed-S/NAME` key.
pub fn add_difflens<'a>(
    crosscoders: &mut [CrossData],
    model: impl Fn(&str) -> Option<&'a crate::Model> + Sync,
    jobs: usize,
    resamples: usize,
    seed: u64,
) -> Result<()> {
    let items: Vec<(usize, usize)> = crosscoders
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.runs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.unused.is_none())
                .map(move |(j, _)| (i, j))
        })
        .collect();
    let done = pool::par_map(jobs, &items, |&(i, j)| {
        let c = &crosscoders[i];
        let r = &c.runs[j];
        let get = |name: &str| {
            let k = Pairs::key(r.seed, name);
            model(&k).ok_or_else(|| Error::input(format!("internal: checkpoint {k} not loaded")))
        };
        difflens::run(
            get(&c.a)?,
            get(&c.b)?,
            c.metric,
            LENS_EPISODES,
            LENS_PROMPTS,
            resamples,
            seed,
        )
    })?;
    for ((i, j), d) in items.into_iter().zip(done) {
        crosscoders[i].runs[j].difflens = Some(d);
    }
    Ok(())
}
