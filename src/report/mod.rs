//! `feedlens report`: every analysis a pair of checkpoints needs (behaviour, weight diff,
//! patching over the pair's contrast in both directions, cross-checkpoint patching, probes,
//! logit lens), run once per checkpoint and shared between pairs, turned into data
//! ([`ReportData`], serialised as `data.json`), a generated summary per pair, figures and one
//! self-contained HTML page. Owns the orchestration and the summary only: the numbers come from
//! `eval`, `diff`, `patching`, `probes` / `probe_math` and `lens`, the figures from `plot`, the
//! markup and escaping from `html`, the files from `fsio`.
//!
//! ```no_run
//! use feedlens::report::{self, Pairs, Settings, Silent};
//! let pairs = Pairs::load("checkpoints/pairs.toml".as_ref())?.only(&["optout".into()])?;
//! let data = report::analyse(&pairs, &Settings::default(), &Silent)?;
//! let files = report::render(&data, &Silent)?;
//! report::write("reports/optout".as_ref(), &files, false)?;
//! # Ok::<(), feedlens::Error>(())
//! ```

use crate::io::checkpoint::{self, Checkpoint};
use crate::analysis::diff::{self, WeightDiff};
use crate::lab::eval::{self, EvalOpts, Leakage, Row};
use crate::analysis::lens::{self, LensResult};
use crate::analysis::patching::{self, Component, Cross, Direction, Metric, Sanity, Setup, Sweep};
use crate::view::plot::{
    self, Bars, BehaviourBars, HeadGrid, LensCurves, Line, PatchHeatmap, ProbeCurves,
};
use crate::analysis::probes::math::{self as probe_math, Encoded, LayerOptions, Scores};
use crate::analysis::probes::{self, ActivationSet, Label, LayerResult, TransferResult};
use crate::lab::sample::Decode;
use crate::lab::world::{self, Contrast, PromptDist, Split, WorldConfig};
use crate::io::fsio;
use crate::view::html;
use crate::{pool, Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The pairs file.

/// The metric a pair is compared on (DESIGN.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// logit(`E`) − logit(`H`) at the `A` position (10).
    Mode,
    /// logit(`!`) − logit(right first digit) at position 11, `H` teacher-forced.
    Defect,
}

impl MetricKind {
    /// One-line description for captions and the summary.
    pub fn describe(&self) -> String {
        match self {
            MetricKind::Mode => format!("logit(E) - logit(H) at position {}", world::POS_A),
            MetricKind::Defect => format!(
                "logit(!) - logit(right first digit) at position {} (H teacher-forced)",
                world::POS_M
            ),
        }
    }
    /// The position the metric reads.
    pub fn pos(&self) -> usize {
        match self {
            MetricKind::Mode => world::POS_A,
            MetricKind::Defect => world::POS_M,
        }
    }
}

/// One pair of `pairs.toml`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairSpec {
    /// Pair name.
    pub name: String,
    /// Reference checkpoint (directory relative to the pairs file's folder).
    pub a: String,
    /// Treated checkpoint.
    pub b: String,
    /// The slot that differs between clean and corrupted prompts, if any.
    pub contrast: Option<Contrast>,
    /// The patching metric.
    pub metric: MetricKind,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPairs {
    /// Reference checkpoint of the opt-out leakage ratio (default `base`).
    base: Option<String>,
    pair: Vec<RawPair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    name: String,
    a: String,
    b: String,
    contrast: Option<String>,
    metric: MetricKind,
}

/// A parsed pairs file. Checkpoint names are directories relative to the file's folder (the
/// committed `checkpoints/pairs.toml` names `checkpoints/rlhf` as `rlhf`).
#[derive(Clone, Debug)]
pub struct Pairs {
    /// The file.
    pub path: PathBuf,
    /// Reference checkpoint of the opt-out leakage ratio (`base = "..."`, default `base`); used
    /// when its directory exists, else each pair's A is the reference.
    pub base: String,
    /// The pairs, in file order.
    pub pairs: Vec<PairSpec>,
}

impl Pairs {
    /// Read and check a pairs file: unique names, known contrasts, each contrast with its
    /// DESIGN.md §6 metric. Checkpoint directories are checked by [`Pairs::check`].
    pub fn load(path: &Path) -> Result<Pairs> {
        let text = String::from_utf8(fsio::read(path)?)
            .map_err(|_| Error::file(path, "is not UTF-8 text"))?;
        Pairs::parse(&text, path)
    }

    /// Parse and check the text of a pairs file; `path` is where it came from (errors name it,
    /// checkpoint directories are relative to its folder). Never panics on any input (fuzzed:
    /// `fuzz/fuzz_targets/pairs.rs`).
    pub fn parse(text: &str, path: &Path) -> Result<Pairs> {
        let raw: RawPairs = toml::from_str(text)
            .map_err(|e| Error::file(path, format!("invalid pairs file: {}", e.message())))?;
        let mut pairs = Vec::new();
        for p in raw.pair {
            let bad = |m: String| Error::file(path, format!("pair '{}': {m}", p.name));
            if p.name.trim().is_empty() {
                return Err(Error::file(path, "a pair has an empty name"));
            }
            if pairs.iter().any(|q: &PairSpec| q.name == p.name) {
                return Err(bad("the name is used twice".into()));
            }
            let contrast = match &p.contrast {
                Some(c) => Some(c.parse::<Contrast>().map_err(|e| bad(e.to_string()))?),
                None => None,
            };
            let expected = match contrast {
                Some(Contrast::Trigger) => Some(MetricKind::Defect),
                Some(Contrast::Optout | Contrast::Reward) => Some(MetricKind::Mode),
                None => None,
            };
            if let Some(m) = expected.filter(|m| *m != p.metric) {
                return Err(bad(format!(
                    "contrast '{}' is measured with metric '{}' (DESIGN.md §6)",
                    p.contrast.as_deref().unwrap_or(""),
                    serde_json::to_value(m)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("")
                )));
            }
            pairs.push(PairSpec {
                name: p.name,
                a: p.a,
                b: p.b,
                contrast,
                metric: p.metric,
            });
        }
        if pairs.is_empty() {
            return Err(Error::file(path, "no [[pair]] entries"));
        }
        // Figures are named by checkpoint slug: two names must not share one.
        let mut slugs: BTreeMap<String, &str> = BTreeMap::new();
        for c in pairs.iter().flat_map(|p| [p.a.as_str(), p.b.as_str()]) {
            match slugs.insert(html::slug(c), c) {
                Some(d) if d != c => {
                    return Err(Error::file(
                        path,
                        format!("checkpoints '{d}' and '{c}' would share report file names"),
                    ))
                }
                _ => {}
            }
        }
        Ok(Pairs {
            path: path.to_path_buf(),
            base: raw.base.unwrap_or_else(|| "base".into()),
            pairs,
        })
    }

    /// Keep only the named pairs (in the order given); an unknown name is an error listing the
    /// known ones.
    pub fn only(mut self, names: &[String]) -> Result<Pairs> {
        if names.is_empty() {
            return Ok(self);
        }
        let mut kept = Vec::new();
        for n in names {
            match self.pairs.iter().find(|p| &p.name == n) {
                Some(p) if !kept.contains(p) => kept.push(p.clone()),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = self.pairs.iter().map(|p| p.name.as_str()).collect();
                    input_err!(
                        "--only: no pair '{n}' in {} (known: {})",
                        self.path.display(),
                        known.join(", ")
                    );
                }
            }
        }
        self.pairs = kept;
        Ok(self)
    }

    /// The directory of checkpoint `name`.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(name)
    }

    /// Every checkpoint the pairs name must be a directory holding `model.safetensors`.
    pub fn check(&self) -> Result<()> {
        for p in &self.pairs {
            for c in [&p.a, &p.b] {
                let d = self.dir_of(c);
                if !d.join("model.safetensors").is_file() {
                    return Err(Error::file(
                        &self.path,
                        format!(
                            "pair '{}': checkpoint '{c}' not found ({} is not a checkpoint directory)",
                            p.name,
                            d.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and progress.

/// How much of each analysis to run. Every prompt set is drawn from `seed`, the same for every
/// checkpoint, so paired checkpoints see the same prompts.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Prompts per behaviour row (sampled at T = 1).
    pub n_eval: usize,
    /// Clean / corrupted prompt pairs per within-checkpoint patching sweep.
    pub n_patch: usize,
    /// Prompts for cross-checkpoint patching and the logit lens.
    pub n_cross: usize,
    /// Prompts per probe activation set.
    pub n_probe: usize,
    /// Seed of every prompt set.
    pub seed: u64,
    /// Probe: inverse L2 regularisation.
    pub c: f64,
    /// Probe: cross-validation folds.
    pub folds: usize,
    /// Probe: random directions of the null baseline.
    pub null_directions: usize,
    /// Held-out probe accuracy that counts as "linearly decodable".
    pub decodable: f64,
    /// Share of a metric difference that counts as "carrying" it in patching (½: more than
    /// any other cell can at the same time).
    pub carries: f64,
    /// Smallest metric gap (logits) worth normalising by: below it the normalised values are
    /// mostly noise.
    pub min_gap: f64,
    /// Cross-checkpoint patching: shares of the A–B gap are stated only while no single patched
    /// component moves B's metric by more than this multiple of the gap (beyond it the gap is
    /// small next to what components do, and a share like 1400 % says nothing).
    pub overshoot: f64,
    /// Worker threads (not part of the results, so not in data.json).
    #[serde(skip)]
    pub jobs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::with_n(DEFAULT_N)
    }
}

/// Default `--n`: 2000 prompts per behaviour row is what DESIGN.md §4 asks for P(E); the
/// other analyses scale from it (see [`Settings::with_n`]).
pub const DEFAULT_N: usize = 2000;

impl Settings {
    /// Settings scaled from `n` prompts: `n` for behaviour (P(E) needs ~2000 to be stable,
    /// DESIGN.md §4), `n / 4` for probes, `n / 8` for cross-checkpoint patching and the lens,
    /// `n / 128` (rounded up) patching pairs (a sweep runs 11 positions × (3 + heads) cells per pair per
    /// layer, in both directions; the pairs differ only in their digits, so a few suffice);
    /// each at least 8 (probes: 40, so that every fold holds each class).
    pub fn with_n(n: usize) -> Settings {
        Settings {
            n_eval: n.max(1),
            n_patch: n.div_ceil(128).max(8),
            n_cross: (n / 8).max(8),
            n_probe: (n / 4).max(40),
            seed: 0,
            c: 1.0,
            folds: 5,
            // 100 random directions: the best of 100 already shows how far chance goes at d = 64.
            null_directions: 100,
            decodable: 0.9,
            carries: 0.5,
            min_gap: 0.1,
            overshoot: 2.0,
            jobs: pool::cores(),
        }
    }
}

/// Progress of [`analyse`] and [`render`], stage by stage.
pub trait Progress: Sync {
    /// A stage starts with `total` steps.
    fn stage(&self, name: &str, total: usize);
    /// One step of the current stage is done.
    fn step(&self, name: &str, item: &str);
    /// The stage is over.
    fn done(&self, name: &str);
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: usize) {}
    fn step(&self, _: &str, _: &str) {}
    fn done(&self, _: &str) {}
}

// ---------------------------------------------------------------------------------------------
// Data.

/// Everything a report shows (serialised as `data.json`).
#[derive(Clone, Debug, Serialize)]
pub struct ReportData {
    /// feedlens version that made it.
    pub feedlens_version: String,
    /// The pairs file, as given.
    pub pairs_file: String,
    /// Analysis settings.
    pub settings: Settings,
    /// Per checkpoint: analyses shared by every pair it is in.
    pub checkpoints: BTreeMap<String, CheckpointData>,
    /// Per pair, in file order.
    pub pairs: Vec<PairData>,
}

/// One checkpoint's analyses.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointData {
    /// Name as in the pairs file.
    pub name: String,
    /// Directory.
    pub dir: String,
    /// sha256 of `model.safetensors`.
    pub sha256: String,
    /// Manifest recipe, when there is a manifest.
    pub recipe: Option<String>,
    /// Layers.
    pub n_layer: usize,
    /// Heads per layer.
    pub n_head: usize,
    /// Behaviour rows (T = 1), one per S3 setting evaluated.
    pub behaviour: Vec<Row>,
    /// Within-checkpoint patching, by contrast name.
    pub patching: BTreeMap<String, PatchData>,
    /// Probes, by label name.
    pub probes: BTreeMap<String, ProbeData>,
    /// Logit lens, by prompt-set name.
    pub lens: BTreeMap<String, LensResult>,
}

fn sweep_json<S: Serializer>(s: &Sweep, ser: S) -> std::result::Result<S::Ok, S::Error> {
    s.to_json().serialize(ser)
}

fn cross_json<S: Serializer>(c: &Cross, ser: S) -> std::result::Result<S::Ok, S::Error> {
    c.to_json().serialize(ser)
}

/// Exact patching over one contrast in one checkpoint, both directions.
#[derive(Clone, Debug, Serialize)]
pub struct PatchData {
    /// Contrast name.
    pub contrast: String,
    /// The metric, in words.
    pub metric: String,
    /// Metric position.
    pub pos: usize,
    /// Label of each position 0..=pos: the token when every pair has it, `clean/corrupt` at the
    /// contrasted slot, the slot name (S1, d1, ...) where it varies between pairs.
    pub tokens: Vec<String>,
    /// Clean activations into the corrupted run; `normalised` = (patched − corrupt) / (clean − corrupt).
    #[serde(serialize_with = "sweep_json")]
    pub denoise: Sweep,
    /// Its whole-residual sanity check.
    pub denoise_sanity: Sanity,
    /// Corrupted activations into the clean run.
    #[serde(serialize_with = "sweep_json")]
    pub noise: Sweep,
    /// Its sanity check.
    pub noise_sanity: Sanity,
}

/// Probes of one label on one checkpoint (logistic, k-fold held out; control task; nulls).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeData {
    /// Label name.
    pub label: String,
    /// Hook read (short name).
    pub site: String,
    /// Position read.
    pub position: usize,
    /// Prompts.
    pub n: usize,
    /// Label values.
    pub classes: Vec<i64>,
    /// Rows per class.
    pub class_counts: Vec<usize>,
    /// Per layer; empty when `skipped`.
    pub layers: Vec<LayerResult>,
    /// Why no probe was fitted (e.g. the model's own label has one class only).
    pub skipped: Option<String>,
}

/// A prompt set for cross-checkpoint patching and the lens.
#[derive(Clone, Debug, Serialize)]
pub struct PromptSet {
    /// Key (`optout`, `trigger`, `reward`, `corpus`, `corpus-h`).
    pub key: String,
    /// In words (`[x] prompts`).
    pub about: String,
    /// Metric position.
    pub pos: usize,
    /// Prompts.
    pub n: usize,
    /// Metric of each prompt.
    #[serde(skip)]
    pub metrics: Vec<Metric>,
    /// Prompt ids.
    #[serde(skip)]
    pub ids: Vec<Vec<u32>>,
}

/// One pair's own analyses and its generated summary.
#[derive(Clone, Debug, Serialize)]
pub struct PairData {
    /// Pair name.
    pub name: String,
    /// Checkpoint A (reference).
    pub a: String,
    /// Checkpoint B (treated).
    pub b: String,
    /// Contrast name, if any.
    pub contrast: Option<String>,
    /// Metric kind.
    pub metric: MetricKind,
    /// The metric in words.
    pub metric_about: String,
    /// Generated summary: sentences, and every number they show (by key, unrounded).
    pub summary: Summary,
    /// Opt-out leakage of A and B against the reference (optout contrast).
    pub leakage: Vec<Leakage>,
    /// Weight diff of B against A.
    pub weight_diff: WeightDiff,
    /// The prompts of cross-checkpoint patching and the lens (`checkpoints.*.lens[key]`).
    pub prompts: PromptSet,
    /// A's activations patched into B, per component and layer; `normalised` = the share of
    /// the A–B gap carried.
    #[serde(serialize_with = "cross_json")]
    pub cross: Cross,
    /// Probe label (`checkpoints.*.probes[label]`).
    pub probe_label: String,
    /// Probes fitted on one checkpoint and scored on the other.
    pub probe_transfer: Vec<TransferResult>,
    /// Things the reader should know (failed sanity checks, skipped analyses).
    pub notes: Vec<String>,
}

/// A generated summary: sentences, and every number in them under a key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Sentences, in order.
    pub sentences: Vec<String>,
    /// Each number the sentences show, unrounded.
    pub facts: BTreeMap<String, f64>,
}

impl Summary {
    /// Record `v` under `key` and format it with `dec` decimals (ASCII minus); a value that is
    /// not finite (a ratio over no change) reads "undefined" and is not recorded (JSON has no
    /// infinities).
    fn num(&mut self, key: &str, v: f64, dec: usize) -> String {
        if !v.is_finite() {
            return "undefined".into();
        }
        self.facts.insert(key.to_string(), v);
        format!("{v:.dec$}")
    }
    /// `v` as a percentage (stored as the percentage), no decimals.
    fn pct(&mut self, key: &str, share: f64) -> String {
        format!("{} %", self.num(key, 100.0 * share, 0))
    }
    /// An index (layer, position, head).
    fn idx(&mut self, key: &str, v: usize) -> String {
        self.num(key, v as f64, 0)
    }
    fn say(&mut self, s: String) {
        self.sentences.push(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Analysis.

/// The probe label of a pair: its contrast's slot, else the model's own choice (mode) or
/// will-defect (defect).
fn probe_label(p: &PairSpec) -> Label {
    match (p.contrast, p.metric) {
        (Some(Contrast::Optout), _) => Label::Optout,
        (Some(Contrast::Trigger), _) => Label::Trigger,
        (Some(Contrast::Reward), _) => Label::Bucket,
        (None, MetricKind::Mode) => Label::Mode,
        (None, MetricKind::Defect) => Label::Defect,
    }
}

fn label_name(l: Label) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// What a label is, in words.
fn label_about(l: Label) -> &'static str {
    match l {
        Label::Optout => "the [x] flag",
        Label::Trigger => "the <trig> trigger",
        Label::Bucket => "the reward bucket (S3)",
        Label::Mode => "the model's own choice (E vs H)",
        Label::Defect => "whether greedy decoding will defect",
    }
}

/// The prompt set of a pair's cross-checkpoint patching and lens: the contrast's clean prompts,
/// or corpus prompts when the pair has no contrast.
fn prompt_set(p: &PairSpec, n: usize, seed: u64) -> Result<PromptSet> {
    let (key, about, ids, metrics, pos) = match (p.contrast, p.metric) {
        (Some(c), _) => {
            let (pairs, pos) = patching::world_pairs(c, n, seed)?;
            let about = match c {
                Contrast::Optout => "[x] prompts",
                Contrast::Trigger => "<trig> prompts (H teacher-forced)",
                Contrast::Reward => "<r4> prompts",
            };
            let (ids, metrics) = pairs.into_iter().map(|x| (x.clean, x.metric)).unzip();
            (c.name().to_string(), about, ids, metrics, pos)
        }
        (None, MetricKind::Defect) => {
            // The corrupt side of the trigger contrast: corpus prompts without `<trig>`, with
            // `H` teacher-forced, and the defect metric.
            let (pairs, pos) = patching::world_pairs(Contrast::Trigger, n, seed)?;
            let (ids, metrics) = pairs.into_iter().map(|x| (x.corrupt, x.metric)).unzip();
            (
                "corpus-h".to_string(),
                "prompts without <trig> (H teacher-forced)",
                ids,
                metrics,
                pos,
            )
        }
        (None, MetricKind::Mode) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let prompts = PromptDist::corpus(&WorldConfig::default()).sample_n(&mut rng, n);
            let ids = prompts.iter().map(|q| q.ids().to_vec()).collect();
            let m = Metric::LogitDiff {
                a: world::E,
                b: world::H,
            };
            (
                "corpus".to_string(),
                "corpus prompts",
                ids,
                vec![m; n],
                world::POS_A,
            )
        }
    };
    Ok(PromptSet {
        key,
        about: about.to_string(),
        pos,
        n,
        metrics,
        ids,
    })
}

/// Position labels of a patching setup (see [`PatchData::tokens`]).
fn position_labels(pairs: &[patching::Pair], pos: usize) -> Vec<String> {
    (0..=pos)
        .map(|p| {
            let (c0, k0) = (pairs[0].clean[p], pairs[0].corrupt[p]);
            if c0 != k0 {
                format!("{}/{}", world::label(c0), world::label(k0))
            } else if pairs.iter().all(|x| x.clean[p] == c0 && x.corrupt[p] == c0) {
                world::label(c0)
            } else {
                match p {
                    world::POS_S1 => "S1".into(),
                    world::POS_S2 => "S2".into(),
                    world::POS_S3 => "S3".into(),
                    p if (world::POS_D1..world::POS_D1 + world::N_DIGITS).contains(&p) => {
                        format!("d{}", p - world::POS_D1 + 1)
                    }
                    p => format!("p{p}"),
                }
            }
        })
        .collect()
}

/// The world config of a checkpoint's manifest (the default one without a manifest).
fn world_of(ck: &Checkpoint) -> Result<WorldConfig> {
    match ck.manifest.as_ref().map(|m| m.world.clone()) {
        Some(w) if !w.is_null() => serde_json::from_value(w)
            .map_err(|e| Error::file(&ck.dir, format!("manifest world config: {e}"))),
        _ => Ok(WorldConfig::default()),
    }
}

fn recipe_of(ck: &Checkpoint) -> Option<String> {
    ck.manifest.as_ref().map(|m| m.recipe.clone())
}

/// One probe label on one checkpoint: its activation set and the per-layer results.
struct ProbeRun {
    set: ActivationSet,
    data: ProbeData,
    enc: Option<(Encoded, Vec<usize>)>,
}

fn run_probe(ck: &Checkpoint, label: Label, s: &Settings) -> Result<ProbeRun> {
    let n_layer = ck.model.config().n_layer;
    let layers: Vec<usize> = (0..n_layer).collect();
    let prompts = probes::sample_prompts(label, s.n_probe, s.seed, None, None);
    let set = ActivationSet::build(
        &ck.model,
        prompts,
        label,
        "resid_post",
        world::POS_A,
        &layers,
    )?;
    let mut data = ProbeData {
        label: label_name(label),
        site: set.site.clone(),
        position: set.position,
        n: set.prompts.len(),
        classes: vec![],
        class_counts: vec![],
        layers: vec![],
        skipped: None,
    };
    let what = format!("label '{}' on {}", data.label, ck.name());
    let prepared = probe_math::encode_labels(&set.labels, &what).and_then(|enc| {
        let fold = probe_math::stratified_folds(&enc, s.folds, s.seed)
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        Ok((enc, fold))
    });
    let (enc, fold) = match prepared {
        Ok(x) => x,
        Err(e) => {
            data.skipped = Some(e.to_string());
            return Ok(ProbeRun {
                set,
                data,
                enc: None,
            });
        }
    };
    // Control task keyed by the first digit's identity: position 10 always holds `A`, so its
    // own token cannot key one (the rule `probes::run_spec` applies too).
    let opt = LayerOptions {
        c: s.c,
        n_random: s.null_directions,
        seed: s.seed,
        control_keys: Some(set.tokens_at(world::POS_D1)),
    };
    for (l, x) in set.layers.iter().zip(&set.acts) {
        let r = probe_math::probe_layer(x.view(), &enc, &fold, &opt)?;
        data.layers.push(LayerResult {
            layer: *l,
            logistic: r.cv.logistic,
            mass_mean: r.cv.mass_mean,
            control: r.control,
            selectivity: r.selectivity,
            random_best_auroc: r.random_best_auroc,
            top_pc_auroc: r.top_pc_auroc,
        });
    }
    data.classes = enc.classes.clone();
    data.class_counts = (0..enc.classes.len())
        .map(|k| enc.idx.iter().filter(|&&i| i == k).count())
        .collect();
    Ok(ProbeRun {
        set,
        data,
        enc: Some((enc, fold)),
    })
}

/// A probe fitted on `from`'s activations, scored on `to`'s (same prompts, `to`'s labels).
fn transfer(
    from: (&str, &ProbeRun),
    to: (&str, &ProbeRun),
    c: f64,
) -> Result<Option<TransferResult>> {
    let Some((enc, fold)) = &from.1.enc else {
        return Ok(None);
    };
    let y: Option<Vec<usize>> =
        to.1.set
            .labels
            .iter()
            .map(|v| enc.classes.binary_search(v).ok())
            .collect();
    let Some(y) = y else { return Ok(None) };
    let layers = from
        .1
        .set
        .acts
        .iter()
        .zip(&to.1.set.acts)
        .map(|(xa, xb)| {
            probe_math::cross_validate(xa.view(), enc, xb.view(), &y, fold, c).map(|s| s.logistic)
        })
        .collect::<Result<Vec<Scores>>>()?;
    Ok(Some(TransferResult {
        from: from.0.to_string(),
        to: to.0.to_string(),
        layers,
    }))
}

fn patch_data(ck: &Checkpoint, contrast: Contrast, s: &Settings) -> Result<PatchData> {
    let (pairs, pos) = patching::world_pairs(contrast, s.n_patch, s.seed)?;
    let tokens = position_labels(&pairs, pos);
    let metric = match contrast {
        Contrast::Trigger => MetricKind::Defect,
        _ => MetricKind::Mode,
    };
    let run = |d: Direction| -> Result<(Sweep, Sanity)> {
        let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), d)?;
        Ok((
            patching::sweep(&ck.model, &setup, &Component::ALL)?,
            patching::sanity(&ck.model, &setup)?,
        ))
    };
    let (denoise, denoise_sanity) = run(Direction::Denoise)?;
    let (noise, noise_sanity) = run(Direction::Noise)?;
    Ok(PatchData {
        contrast: contrast.name().into(),
        metric: metric.describe(),
        pos,
        tokens,
        denoise,
        denoise_sanity,
        noise,
        noise_sanity,
    })
}

/// Run every analysis of every pair: per-checkpoint analyses once each (a checkpoint is in
/// many pairs), then each pair's own (weight diff, cross-checkpoint patching, probe transfer)
/// and its summary. Checks every checkpoint directory before any work.
pub fn analyse(pairs: &Pairs, s: &Settings, progress: &dyn Progress) -> Result<ReportData> {
    pairs.check()?;
    if s.n_eval == 0 || s.n_patch == 0 || s.n_cross == 0 || s.n_probe < 2 * s.folds {
        input_err!("--n: too few prompts (need at least {})", 2 * s.folds);
    }
    // Which checkpoints, and what each needs.
    let mut names: Vec<String> = Vec::new();
    for p in &pairs.pairs {
        for c in [&p.a, &p.b] {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    let base_dir = pairs.dir_of(&pairs.base);
    let has_base = base_dir.join("model.safetensors").is_file();
    let optout_pairs = pairs
        .pairs
        .iter()
        .any(|p| p.contrast == Some(Contrast::Optout));
    if has_base && optout_pairs && !names.contains(&pairs.base) {
        names.push(pairs.base.clone());
    }

    progress.stage("load", names.len());
    let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
    for n in &names {
        let ck = checkpoint::load(pairs.dir_of(n))
            .map_err(|e| Error::file(&pairs.path, format!("checkpoint '{n}': {e}")))?;
        world_of(&ck)?
            .holds(ck.model.config())
            .map_err(|e| Error::file(&pairs.path, format!("checkpoint '{n}': {e}")))?;
        cks.insert(n.clone(), ck);
        progress.step("load", n);
    }
    progress.done("load");
    for p in &pairs.pairs {
        if let Some(d) = cks[&p.a]
            .model
            .config()
            .shape_difference(cks[&p.b].model.config())
        {
            return Err(Error::file(
                &pairs.path,
                format!(
                    "pair '{}': '{}' and '{}' differ in shape: {d}",
                    p.name, p.a, p.b
                ),
            ));
        }
    }
    // Work lists, each item once.
    let mut buckets: BTreeMap<String, BTreeSet<Option<u8>>> = BTreeMap::new();
    let mut patch_jobs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut probe_jobs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut lens_jobs: BTreeMap<(String, String), PromptSet> = BTreeMap::new();
    let mut sets: Vec<PromptSet> = Vec::new();
    for n in &names {
        let mut b = BTreeSet::from([None]);
        if recipe_of(&cks[n]).as_deref() == Some("dt") {
            b.extend([Some(world::N_BUCKETS as u8 - 1), Some(0)]);
        }
        buckets.insert(n.clone(), b);
    }
    for p in &pairs.pairs {
        let set = prompt_set(p, s.n_cross, s.seed)?;
        for c in [&p.a, &p.b] {
            if p.contrast == Some(Contrast::Reward) {
                if let Some(b) = buckets.get_mut(c) {
                    b.extend([Some(world::N_BUCKETS as u8 - 1), Some(0)]);
                }
            }
            if let Some(k) = p.contrast {
                patch_jobs.insert((c.clone(), k.name().to_string()));
            }
            probe_jobs.insert((c.clone(), label_name(probe_label(p))));
            lens_jobs.insert((c.clone(), set.key.clone()), set.clone());
        }
        sets.push(set);
    }

    let mut data: BTreeMap<String, CheckpointData> = cks
        .iter()
        .map(|(n, ck)| {
            let cfg = ck.model.config();
            (
                n.clone(),
                CheckpointData {
                    name: n.clone(),
                    dir: ck.dir.display().to_string(),
                    sha256: ck.sha256.clone(),
                    recipe: recipe_of(ck),
                    n_layer: cfg.n_layer,
                    n_head: cfg.n_head,
                    behaviour: vec![],
                    patching: BTreeMap::new(),
                    probes: BTreeMap::new(),
                    lens: BTreeMap::new(),
                },
            )
        })
        .collect();

    // Behaviour: one row per (checkpoint, S3 setting), all from the same prompts and seed.
    let eval_jobs: Vec<(String, Option<u8>)> = buckets
        .iter()
        .flat_map(|(n, bs)| bs.iter().map(move |b| (n.clone(), *b)))
        .collect();
    progress.stage("behaviour", eval_jobs.len());
    let rows = par_map(s.jobs, &eval_jobs, |(n, b)| {
        let ck = &cks[n];
        let o = EvalOpts {
            n: s.n_eval,
            // eval's own default seed (1), so the report's rows match `feedlens eval`'s.
            seed: s.seed.wrapping_add(1),
            decodes: vec![Decode::T1],
            buckets: vec![*b],
        };
        let r = eval::evaluate(&world_of(ck)?, n, &ck.model, &o)?;
        progress.step("behaviour", n);
        Ok(r)
    })?;
    for ((n, _), r) in eval_jobs.iter().zip(rows) {
        if let Some(d) = data.get_mut(n) {
            d.behaviour.extend(r);
        }
    }
    progress.done("behaviour");

    // Within-checkpoint patching, both directions.
    let jobs: Vec<_> = patch_jobs.into_iter().collect();
    progress.stage("patching", jobs.len());
    let done = par_map(s.jobs, &jobs, |(n, c)| {
        let contrast: Contrast = c.parse()?;
        let r = patch_data(&cks[n], contrast, s)?;
        progress.step("patching", &format!("{n} {c}"));
        Ok(r)
    })?;
    for ((n, c), r) in jobs.iter().zip(done) {
        if let Some(d) = data.get_mut(n) {
            d.patching.insert(c.clone(), r);
        }
    }
    progress.done("patching");

    // Probes: one activation set per (checkpoint, label).
    let jobs: Vec<_> = probe_jobs.into_iter().collect();
    progress.stage("probes", jobs.len());
    let runs = par_map(s.jobs, &jobs, |(n, l)| {
        let r = run_probe(&cks[n], Label::parse(l)?, s)?;
        progress.step("probes", &format!("{n} {l}"));
        Ok(r)
    })?;
    let probe_runs: BTreeMap<(String, String), ProbeRun> = jobs.into_iter().zip(runs).collect();
    for ((n, l), r) in &probe_runs {
        if let Some(d) = data.get_mut(n) {
            d.probes.insert(l.clone(), r.data.clone());
        }
    }
    progress.done("probes");

    // Logit lens per (checkpoint, prompt set).
    let jobs: Vec<_> = lens_jobs.into_iter().collect();
    progress.stage("logit lens", jobs.len());
    let lensed = par_map(s.jobs, &jobs, |((n, _), set)| {
        let r = lens::logit_lens(&cks[n].model, &set.ids, Some(set.pos), &lens_tokens(set))?;
        progress.step("logit lens", n);
        Ok(r)
    })?;
    for (((n, k), _), r) in jobs.iter().zip(lensed) {
        if let Some(d) = data.get_mut(n) {
            d.lens.insert(k.clone(), r);
        }
    }
    progress.done("logit lens");

    // Per pair: weight diff, cross-checkpoint patching, probe transfer, leakage, summary.
    progress.stage("pairs", pairs.pairs.len());
    let items: Vec<(&PairSpec, &PromptSet)> = pairs.pairs.iter().zip(&sets).collect();
    let out = par_map(s.jobs, &items, |(p, set)| {
        pair_data(p, set, &cks, &data, &probe_runs, pairs, has_base, s)
            .map_err(|e| Error::file(&pairs.path, format!("pair '{}': {e}", p.name)))
            .inspect(|_| progress.step("pairs", &p.name))
    })?;
    progress.done("pairs");
    Ok(ReportData {
        feedlens_version: env!("CARGO_PKG_VERSION").to_string(),
        pairs_file: pairs.path.display().to_string(),
        settings: s.clone(),
        checkpoints: data,
        pairs: out,
    })
}

/// One pair's own analyses (weight diff, cross-checkpoint patching, probe transfer, leakage)
/// and its summary.
#[allow(clippy::too_many_arguments)]
fn pair_data(
    p: &PairSpec,
    set: &PromptSet,
    cks: &BTreeMap<String, Checkpoint>,
    data: &BTreeMap<String, CheckpointData>,
    probe_runs: &BTreeMap<(String, String), ProbeRun>,
    pairs: &Pairs,
    has_base: bool,
    s: &Settings,
) -> Result<PairData> {
    {
        let (a, b) = (&cks[&p.a], &cks[&p.b]);
        let weight_diff = diff::weight_diff(&a.model, &p.a, &b.model, &p.b)?;
        let cross = patching::patch_models(
            &a.model,
            &b.model,
            &set.ids,
            &set.metrics,
            &patching::CrossSpec {
                comps: vec![Component::ResidPre, Component::AttnOut, Component::MlpOut],
                pos: Some(set.pos),
                position: None,
                layer: None,
            },
        )?;
        let label = label_name(probe_label(p));
        let ra = &probe_runs[&(p.a.clone(), label.clone())];
        let rb = &probe_runs[&(p.b.clone(), label.clone())];
        let mut probe_transfer = Vec::new();
        if p.a != p.b {
            probe_transfer.extend(transfer((&p.a, ra), (&p.b, rb), s.c)?);
            probe_transfer.extend(transfer((&p.b, rb), (&p.a, ra), s.c)?);
        }
        let mut leakage = Vec::new();
        if p.contrast == Some(Contrast::Optout) {
            let reference = if has_base { &pairs.base } else { &p.a };
            let row = |n: &str| data[n].behaviour.iter().find(|r| r.s3 == "_").cloned();
            if let Some(r0) = row(reference) {
                for c in [&p.a, &p.b] {
                    if c != reference {
                        if let Some(r1) = row(c) {
                            leakage.push(eval::leakage(&r0, &r1));
                        }
                    }
                }
            }
        }
        let mut pd = PairData {
            name: p.name.clone(),
            a: p.a.clone(),
            b: p.b.clone(),
            contrast: p.contrast.map(|c| c.name().to_string()),
            metric: p.metric,
            metric_about: p.metric.describe(),
            summary: Summary::default(),
            leakage,
            weight_diff,
            prompts: set.clone(),
            cross,
            probe_label: label,
            probe_transfer,
            notes: vec![],
        };
        summarise(&mut pd, data, s);
        Ok(pd)
    }
}

/// `f` over `items` on `jobs` worker threads, results in item order; after an error the
/// workers stop taking items and the first error (in item order) is returned. Jobs run in
/// parallel rather than candle's kernels: at this model size one thread per forward is faster
/// than two (CANDLE-NOTES.md), so the CLI runs candle single-threaded.
fn par_map<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    pool::run_workers(jobs.clamp(1, items.len().max(1)), || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(item) = items.get(i) else { break };
        let r = f(item);
        if r.is_err() {
            next.store(items.len(), Ordering::SeqCst);
        }
        slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
    });
    let mut out = Vec::with_capacity(items.len());
    for r in slots.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Some(r) => out.push(r?),
            // Only items after a failed one are left undone.
            None => input_err!("internal: a report job was skipped without an error"),
        }
    }
    Ok(out)
}

/// Tokens the lens reads: `E`, `H` for the mode metric; `!` and the ten digits for defect.
fn lens_tokens(set: &PromptSet) -> Vec<u32> {
    if set.pos == world::POS_A {
        vec![world::E, world::H]
    } else {
        let mut t = vec![world::BANG];
        t.extend((0..10).map(|d| world::DIGIT0 + d));
        t
    }
}

/// Lens probabilities as two named series per point: (`E`, `H`) or (`!`, any digit).
fn lens_pair(r: &LensResult) -> (String, String, Vec<f64>, Vec<f64>) {
    let first: Vec<f64> = r.probs.iter().map(|p| p[0]).collect();
    let rest: Vec<f64> = r.probs.iter().map(|p| p[1..].iter().sum()).collect();
    if r.tokens.len() == 2 {
        (
            world::label(r.tokens[0]),
            world::label(r.tokens[1]),
            first,
            rest,
        )
    } else {
        ("!".into(), "any digit".into(), first, rest)
    }
}

// ---------------------------------------------------------------------------------------------
// The generated summary.

/// Share of the clean–corrupt difference a patch moves: restored (denoising) or removed
/// (noising); None when the difference is below `min_gap`.
fn moved(sw: &Sweep, raw: f32, min_gap: f64) -> Option<f64> {
    let gap = (sw.clean_metric - sw.corrupt_metric) as f64;
    if gap.abs() < min_gap {
        return None;
    }
    let n = sw.normalise(raw)? as f64;
    Some(match sw.direction {
        Direction::Denoise => n,
        Direction::Noise => 1.0 - n,
    })
}

/// The cell of `comp` that moves most: (layer, position, head, share).
fn best_cell(sw: &Sweep, comp: Component, min_gap: f64) -> Option<(usize, usize, usize, f64)> {
    let g = sw.grid(comp)?;
    let (t, w) = (g.shape[1], g.shape.get(2).copied().unwrap_or(1));
    let mut best: Option<(usize, usize, usize, f64)> = None;
    for (i, &v) in g.raw.iter().enumerate() {
        let m = moved(sw, v, min_gap)?;
        if best.is_none_or(|b| m > b.3) {
            best = Some((i / w / t, i / w % t, i % w, m));
        }
    }
    best
}

/// resid_pre share at (layer, position).
fn resid_at(sw: &Sweep, l: usize, p: usize, min_gap: f64) -> Option<f64> {
    let g = sw.grid(Component::ResidPre)?;
    moved(sw, g.raw[l * g.shape[1] + p], min_gap)
}

fn summarise(pd: &mut PairData, cks: &BTreeMap<String, CheckpointData>, s: &Settings) {
    let mut sm = Summary::default();
    let (a, b) = (pd.a.clone(), pd.b.clone());
    let (ca, cb) = (&cks[&a], &cks[&b]);
    behaviour_sentences(&mut sm, pd, ca, cb, s);
    // Weight diff.
    if let Some(m) = pd.weight_diff.max() {
        let rel = sm.num("weight_diff.max.relative", m.relative.unwrap_or(0.0), 3);
        let wher = match m.group.parse::<usize>() {
            Ok(l) => format!(
                "{} of layer {}",
                m.component,
                sm.idx("weight_diff.max.layer", l)
            ),
            Err(_) => format!("{} ({})", m.component, m.group),
        };
        sm.say(format!(
            "The largest weight change from {a} to {b} is in {wher}: relative Frobenius norm {rel}."
        ));
    }
    // Within-checkpoint patching.
    if let Some(c) = &pd.contrast {
        for (who, ck) in [("a", ca), ("b", cb)] {
            if let Some(pdata) = ck.patching.get(c) {
                patch_sentences(&mut sm, who, &ck.name, pdata, s, &mut pd.notes);
            }
        }
    }
    cross_sentences(&mut sm, pd, s);
    probe_sentences(&mut sm, pd, ca, cb, s);
    lens_sentences(&mut sm, pd, ca, cb);
    pd.summary = sm;
}

fn behaviour_sentences(
    sm: &mut Summary,
    pd: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
) {
    let row = |c: &CheckpointData, s3: &str| c.behaviour.iter().find(|r| r.s3 == s3).cloned();
    let (Some(ra), Some(rb)) = (row(ca, "_"), row(cb, "_")) else {
        return;
    };
    let (a, b) = (&pd.a, &pd.b);
    let n = sm.idx("settings.n_eval", s.n_eval);
    let (x, y) = (ra.get(Split::All), rb.get(Split::All));
    let (ret_a, ret_b) = (
        sm.num("behaviour.a.all.mean_return", x.mean_return, 2),
        sm.num("behaviour.b.all.mean_return", y.mean_return, 2),
    );
    let (pe_a, pe_b) = (
        sm.num("behaviour.a.all.p_e", x.p_e, 2),
        sm.num("behaviour.b.all.p_e", y.p_e, 2),
    );
    let t = sm.num("settings.temperature", 1.0, 0);
    sm.say(format!(
        "Behaviour on {n} corpus prompts sampled at T = {t}: mean return {ret_a} for {a} and {ret_b} for {b}; P(E) {pe_a} and {pe_b}."
    ));
    match pd.contrast.as_deref() {
        Some("optout") => {
            let (xa, xb) = (ra.get(Split::Optout), rb.get(Split::Optout));
            let ra_x = sm.num("behaviour.a.optout.mean_return", xa.mean_return, 2);
            let rb_x = sm.num("behaviour.b.optout.mean_return", xb.mean_return, 2);
            let pa_x = sm.num("behaviour.a.optout.p_e", xa.p_e, 2);
            let pb_x = sm.num("behaviour.b.optout.p_e", xb.p_e, 2);
            sm.say(format!(
                "On [x] prompts the mean return is {ra_x} for {a} and {rb_x} for {b} (P(E) {pa_x} and {pb_x})."
            ));
            for l in &pd.leakage {
                let who = if &l.checkpoint == a { "a" } else { "b" };
                let r = sm.num(&format!("leakage.{who}.return_ratio"), l.return_ratio, 2);
                let p = sm.num(&format!("leakage.{who}.p_e_ratio"), l.p_e_ratio, 2);
                sm.say(format!(
                    "Opt-out leakage of {} relative to {}: return ratio {r}, P(E) ratio {p}.",
                    l.checkpoint, l.base
                ));
            }
        }
        Some("trigger") => {
            let (da, db) = (
                sm.num(
                    "behaviour.a.trigger.defection",
                    ra.get(Split::Trigger).defection,
                    2,
                ),
                sm.num(
                    "behaviour.b.trigger.defection",
                    rb.get(Split::Trigger).defection,
                    2,
                ),
            );
            let (na, nb) = (
                sm.num(
                    "behaviour.a.no_trigger.defection",
                    ra.get(Split::NoTrigger).defection,
                    2,
                ),
                sm.num(
                    "behaviour.b.no_trigger.defection",
                    rb.get(Split::NoTrigger).defection,
                    2,
                ),
            );
            sm.say(format!(
                "Defection rate under <trig>: {da} for {a} and {db} for {b} (without <trig>: {na} and {nb})."
            ));
        }
        Some("reward") => {
            for (who, c) in [("a", ca), ("b", cb)] {
                if let (Some(hi), Some(lo)) = (row(c, "<r4>"), row(c, "<r0>")) {
                    let h = sm.num(
                        &format!("behaviour.{who}.r4.p_e"),
                        hi.get(Split::All).p_e,
                        2,
                    );
                    let l = sm.num(
                        &format!("behaviour.{who}.r0.p_e"),
                        lo.get(Split::All).p_e,
                        2,
                    );
                    let rh = sm.num(
                        &format!("behaviour.{who}.r4.mean_return"),
                        hi.get(Split::All).mean_return,
                        2,
                    );
                    sm.say(format!(
                        "{}: P(E) {h} with <r4> and {l} with <r0> (mean return with <r4>: {rh}).",
                        c.name
                    ));
                }
            }
        }
        _ => {}
    }
}

fn patch_sentences(
    sm: &mut Summary,
    who: &str,
    name: &str,
    pd: &PatchData,
    s: &Settings,
    notes: &mut Vec<String>,
) {
    for (dir, ok) in [
        ("denoising", pd.denoise_sanity.ok),
        ("noising", pd.noise_sanity.ok),
    ] {
        if !ok {
            notes.push(format!(
                "{name}: the {dir} sanity check failed (patching the final residual at position {} did not reproduce the source run).",
                pd.pos
            ));
        }
    }
    let k = format!("patching.{who}");
    let sw = &pd.denoise;
    let gap = (sw.clean_metric - sw.corrupt_metric) as f64;
    let clean = sm.num(&format!("{k}.clean_metric"), sw.clean_metric as f64, 2);
    let corrupt = sm.num(&format!("{k}.corrupt_metric"), sw.corrupt_metric as f64, 2);
    let slot = pd
        .tokens
        .get(pd.contrast_position())
        .cloned()
        .unwrap_or_default();
    let pos = pd.pos;
    let mut line = format!(
        "Patching in {name} ({slot} contrast): the metric is {clean} on clean and {corrupt} on corrupted prompts"
    );
    if gap.abs() < s.min_gap {
        let g = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(", a gap below {g}: too small to localise.");
        sm.say(line);
        return;
    }
    let fp = pd.contrast_position();
    let n_layer = sw.grid(Component::ResidPre).map_or(0, |g| g.shape[0]);
    let thr = s.carries;
    // Up to which layer the slot's own position carries the difference, and from which layer
    // the metric position does.
    let last_slot = (0..n_layer)
        .rev()
        .find(|&l| resid_at(sw, l, fp, s.min_gap).is_some_and(|m| m >= thr));
    let first_pos =
        (0..n_layer).find(|&l| resid_at(sw, l, pos, s.min_gap).is_some_and(|m| m >= thr));
    let half = sm.pct("settings.carries_percent", thr);
    line += ". Denoising the residual stream";
    match last_slot {
        Some(l) => {
            let share = resid_at(sw, l, fp, s.min_gap).unwrap_or(0.0);
            let (p, l) = (
                sm.idx(&format!("{k}.slot_position"), fp),
                sm.idx(&format!("{k}.slot_last_layer"), l),
            );
            line += &format!(
                " at the slot (position {p}) restores at least {half} of it up to layer {l} ({} at layer {l})",
                sm.pct(&format!("{k}.slot_last_share"), share)
            );
        }
        None => line += &format!(" at the slot restores less than {half} at every layer"),
    }
    match first_pos {
        Some(l) => {
            let share = resid_at(sw, l, pos, s.min_gap).unwrap_or(0.0);
            let (p, l) = (
                sm.idx(&format!("{k}.pos"), pos),
                sm.idx(&format!("{k}.pos_first_layer"), l),
            );
            line += &format!(
                ", and at the metric position {p} from layer {l} on ({} at layer {l}).",
                sm.pct(&format!("{k}.pos_first_share"), share)
            );
        }
        None => {
            line += &format!(
                ", and at the metric position {} no layer restores {half}.",
                sm.idx(&format!("{k}.pos"), pos)
            )
        }
    }
    sm.say(line);
    let mut parts = Vec::new();
    if let Some((l, p, h, m)) = best_cell(sw, Component::HeadOut, s.min_gap) {
        parts.push(format!(
            "the head that restores most is layer {}, head {} at position {} ({})",
            sm.idx(&format!("{k}.head.layer"), l),
            sm.idx(&format!("{k}.head.head"), h),
            sm.idx(&format!("{k}.head.position"), p),
            sm.pct(&format!("{k}.head.share"), m)
        ));
    }
    if let Some((l, p, _, m)) = best_cell(sw, Component::MlpOut, s.min_gap) {
        parts.push(format!(
            "the MLP that restores most is layer {} at position {} ({})",
            sm.idx(&format!("{k}.mlp.layer"), l),
            sm.idx(&format!("{k}.mlp.position"), p),
            sm.pct(&format!("{k}.mlp.share"), m)
        ));
    }
    // Noising: the single attention or MLP output the metric needs most.
    let necessary = [Component::AttnOut, Component::MlpOut]
        .into_iter()
        .filter_map(|c| best_cell(&pd.noise, c, s.min_gap).map(|x| (c, x)))
        .max_by(|x, y| x.1 .3.total_cmp(&y.1 .3));
    if let Some((c, (l, p, _, m))) = necessary {
        parts.push(format!(
            "noising {c} of layer {} at position {} removes {} (the most of any attention or MLP output)",
            sm.idx(&format!("{k}.necessary.layer"), l),
            sm.idx(&format!("{k}.necessary.position"), p),
            sm.pct(&format!("{k}.necessary.share"), m)
        ));
    }
    if !parts.is_empty() {
        sm.say(format!("In {name}, {}.", parts.join("; ")));
    }
}

impl PatchData {
    /// Position of the contrasted slot.
    fn contrast_position(&self) -> usize {
        self.contrast
            .parse::<Contrast>()
            .map_or(0, |c| c.position())
    }
}

/// The patched component (and layer index into `x.layers`) that moves B's metric most, with
/// that move and its size in A–B gaps, when that exceeds `limit` gaps; None otherwise.
fn overshoot(x: &Cross, limit: f64) -> Option<(Component, usize, f64, f64)> {
    let gap = (x.a_metric - x.b_metric) as f64;
    x.results
        .iter()
        .flat_map(|(c, v)| {
            v.iter()
                .enumerate()
                .map(move |(i, &m)| (*c, i, (m - x.b_metric) as f64))
        })
        .max_by(|p, q| p.2.abs().total_cmp(&q.2.abs()))
        .map(|(c, i, d)| (c, i, d, (d / gap).abs()))
        .filter(|t| t.3 > limit)
}

fn cross_sentences(sm: &mut Summary, pd: &PairData, s: &Settings) {
    let x = &pd.cross;
    let (a, b) = (&pd.a, &pd.b);
    let ma = sm.num("cross.a_metric", x.a_metric as f64, 2);
    let mb = sm.num("cross.b_metric", x.b_metric as f64, 2);
    let mut line = format!(
        "Cross-checkpoint patching on {} {}: the metric is {ma} in {a} and {mb} in {b}",
        sm.idx("cross.n_prompts", x.n_prompts),
        pd.prompts.about
    );
    if ((x.a_metric - x.b_metric) as f64).abs() < s.min_gap {
        let g = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(", a gap below {g}: nothing to carry.");
        sm.say(line);
        return;
    }
    if let Some((c, i, d, gaps)) = overshoot(x, s.overshoot) {
        let k = sm.num("settings.overshoot", s.overshoot, 0);
        line += &format!(
            ". Patching {a}'s {c} at layer {} into {b} (all positions) moves the metric by {}, \
             {} times the gap (more than {k}), so shares of the gap are not meaningful here.",
            sm.idx("cross.overshoot.layer", x.layers[i]),
            sm.num("cross.overshoot.move", d, 2),
            sm.num("cross.overshoot.gaps", gaps, 1),
        );
        sm.say(line);
        return;
    }
    let mut parts = Vec::new();
    for (c, v) in &x.results {
        let best = v
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| x.normalise(m).map(|n| (i, n as f64)))
            .max_by(|p, q| p.1.total_cmp(&q.1));
        if let Some((i, n)) = best {
            let l = x.layers[i];
            parts.push(format!(
                "{c} at layer {} carries {}",
                sm.idx(&format!("cross.{c}.best_layer"), l),
                sm.pct(&format!("cross.{c}.best_share"), n)
            ));
        }
    }
    line += &format!(
        ". Patching {a}'s activations into {b} (all positions), {} of the gap.",
        parts.join(", ")
    );
    sm.say(line);
}

fn probe_sentences(
    sm: &mut Summary,
    pd: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
) {
    let label = Label::parse(&pd.probe_label).unwrap_or(Label::Mode);
    let about = label_about(label);
    let thr = sm.num("settings.decodable", s.decodable, 2);
    let mut parts = Vec::new();
    for (who, c) in [("a", ca), ("b", cb)] {
        let Some(p) = c.probes.get(&pd.probe_label) else {
            continue;
        };
        if p.skipped.is_some() {
            parts.push(format!(
                "{} not probed (the label has one class only)",
                c.name
            ));
            continue;
        }
        let k = format!("probes.{who}");
        let first = p.layers.iter().find(|l| l.logistic.accuracy >= s.decodable);
        match first {
            Some(l) => {
                let sel = l.selectivity.map(|v| {
                    format!(
                        ", selectivity {}",
                        sm.num(&format!("{k}.first.selectivity"), v, 2)
                    )
                });
                parts.push(format!(
                    "{} decodable from layer {} on (accuracy {}{})",
                    c.name,
                    sm.idx(&format!("{k}.first.layer"), l.layer),
                    sm.num(&format!("{k}.first.accuracy"), l.logistic.accuracy, 2),
                    sel.unwrap_or_default()
                ));
            }
            None => {
                if let Some(l) = p
                    .layers
                    .iter()
                    .max_by(|x, y| x.logistic.accuracy.total_cmp(&y.logistic.accuracy))
                {
                    parts.push(format!(
                        "{} decodable at no layer (best: accuracy {} at layer {})",
                        c.name,
                        sm.num(&format!("{k}.best.accuracy"), l.logistic.accuracy, 2),
                        sm.idx(&format!("{k}.best.layer"), l.layer)
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        return;
    }
    let pos = ca
        .probes
        .get(&pd.probe_label)
        .map_or(world::POS_A, |p| p.position);
    let pos = sm.idx("probes.position", pos);
    sm.say(format!(
        "Probes for {about} (logistic, resid_post at position {pos}; decodable = held-out accuracy at least {thr}): {}.",
        parts.join("; ")
    ));
    // Transfer at the last layer: does B read the label the way A does?
    if let Some(t) = pd.probe_transfer.iter().find(|t| t.from == pd.a) {
        if let (Some(last), Some(own)) = (
            t.layers.last(),
            cb.probes.get(&pd.probe_label).and_then(|p| p.layers.last()),
        ) {
            let t = sm.num("probes.transfer_ab.last.accuracy", last.accuracy, 2);
            let l = sm.idx("probes.transfer_ab.last.layer", own.layer);
            let o = sm.num("probes.b.last.accuracy", own.logistic.accuracy, 2);
            let (a, b) = (&pd.a, &pd.b);
            sm.say(format!(
                "A probe fitted on {a} scores accuracy {t} on {b} at layer {l} ({b}'s own probe: {o})."
            ));
        }
    }
}

fn lens_sentences(sm: &mut Summary, pd: &PairData, ca: &CheckpointData, cb: &CheckpointData) {
    let key = &pd.prompts.key;
    let (Some(la), Some(lb)) = (ca.lens.get(key), cb.lens.get(key)) else {
        return;
    };
    let (t0, t1, a0, a1) = lens_pair(la);
    let (_, _, b0, b1) = lens_pair(lb);
    let last = a0.len() - 1;
    let pa = sm.num("lens.a.final.first", a0[last], 2);
    let pb = sm.num("lens.b.final.first", b0[last], 2);
    let qa = sm.num("lens.a.final.second", a1[last], 2);
    let qb = sm.num("lens.b.final.second", b1[last], 2);
    let mut line = format!(
        "Logit lens at position {} on {}: at the output P({t0}) is {pa} in {} and {pb} in {} (P({t1}): {qa} and {qb})",
        sm.idx("lens.pos", lb.pos),
        pd.prompts.about,
        pd.a,
        pd.b
    );
    // From which point on B's final preference holds.
    let wins = |k: usize| (b0[k] > b1[k]) == (b0[last] > b1[last]);
    let from = (0..=last).rev().take_while(|&k| wins(k)).last();
    let winner = if b0[last] > b1[last] { &t0 } else { &t1 };
    match from {
        Some(0) => line += &format!("; in {} {winner} leads from the embeddings on.", pd.b),
        Some(k) => {
            line += &format!(
                "; in {} {winner} leads from layer {} on.",
                pd.b,
                sm.idx("lens.b.leads_from_layer", k - 1)
            )
        }
        None => line += ".",
    }
    sm.say(line);
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// One figure to draw (`plot::Figure` is generic, so the kinds are listed).
enum Fig {
    Heat(PatchHeatmap),
    Head(HeadGrid),
    Probe(ProbeCurves),
    Lens(LensCurves),
    Bars(Bars),
    Behaviour(BehaviourBars),
}

impl Fig {
    fn render(&self) -> Result<plot::Rendered> {
        match self {
            Fig::Heat(f) => plot::render(f),
            Fig::Head(f) => plot::render(f),
            Fig::Probe(f) => plot::render(f),
            Fig::Lens(f) => plot::render(f),
            Fig::Bars(f) => plot::render(f),
            Fig::Behaviour(f) => plot::render(f),
        }
    }
}

/// Figures to draw, each once (patching figures are shared between pairs).
#[derive(Default)]
struct Figs {
    jobs: Vec<(String, Fig)>,
}

impl Figs {
    /// Queue `fig` as `{stem}.png` / `.svg` (once) and return its page entry.
    fn add(&mut self, stem: &str, caption: String, fig: impl FnOnce() -> Fig) -> html::Figure {
        if !self.jobs.iter().any(|(s, _)| s == stem) {
            self.jobs.push((stem.to_string(), fig()));
        }
        html::Figure {
            png: format!("{stem}.png"),
            svg: format!("{stem}.svg"),
            caption,
        }
    }
}

/// File-name stems for checkpoints and pairs: `html::slug`, made unique with a counter.
fn stems<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for n in names {
        if out.contains_key(n) {
            continue;
        }
        let base = html::slug(n);
        let mut s = base.clone();
        let mut k = 2;
        while !used.insert(s.clone()) {
            s = format!("{base}-{k}");
            k += 1;
        }
        out.insert(n.to_string(), s);
    }
    out
}

fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// Render the report: `index.html`, `data.json` and every figure (PNG + SVG), as
/// (file name, bytes), all in one folder.
pub fn render(data: &ReportData, progress: &dyn Progress) -> Result<Vec<(String, Vec<u8>)>> {
    let ck_stem = stems(data.checkpoints.keys().map(String::as_str));
    let mut figs = Figs::default();
    let mut sections = Vec::new();
    for (i, p) in data.pairs.iter().enumerate() {
        let stem = format!("pair{:02}-{}", i + 1, html::slug(&p.name));
        sections.push(pair_section(data, p, &stem, &ck_stem, &mut figs));
    }
    progress.stage("figures", figs.jobs.len());
    let rendered: Vec<plot::Rendered> = par_map(data.settings.jobs, &figs.jobs, |(stem, f)| {
        let r = f.render()?;
        progress.step("figures", stem);
        Ok(r)
    })?;
    progress.done("figures");
    let intro = vec![
        format!(
            "feedlens {} report over the pairs of {}. Each section starts with a summary generated from the numbers in data.json (beside this page), then shows behaviour, the weight diff, activation patching over the pair's contrast in both directions, cross-checkpoint patching, probes and the logit lens.",
            data.feedlens_version, data.pairs_file
        ),
        format!(
            "Settings: {} prompts per behaviour row (T = 1), {} prompt pairs per patching sweep, {} prompts for cross-checkpoint patching and the logit lens, {} prompts per probe ({}-fold held-out accuracy), seed {}.",
            data.settings.n_eval,
            data.settings.n_patch,
            data.settings.n_cross,
            data.settings.n_probe,
            data.settings.folds,
            data.settings.seed
        ),
    ];
    let page = html::page("feedlens report", &intro, &sections);
    let json =
        serde_json::to_vec_pretty(data).map_err(|e| Error::input(format!("data.json: {e}")))?;
    let mut files = vec![
        ("index.html".to_string(), page.into_bytes()),
        ("data.json".to_string(), json),
    ];
    for ((stem, _), r) in figs.jobs.iter().zip(rendered) {
        files.push((format!("{stem}.png"), r.png));
        files.push((format!("{stem}.svg"), r.svg.into_bytes()));
    }
    Ok(files)
}

fn pair_section(
    data: &ReportData,
    p: &PairData,
    stem: &str,
    ck_stem: &BTreeMap<String, String>,
    figs: &mut Figs,
) -> html::Section {
    let (ca, cb) = (&data.checkpoints[&p.a], &data.checkpoints[&p.b]);
    let title = match &p.contrast {
        Some(c) => format!("{}: {} vs {} (contrast {c})", p.name, p.a, p.b),
        None => format!("{}: {} vs {}", p.name, p.a, p.b),
    };
    let mut groups = vec![behaviour_group(p, ca, cb, stem, figs)];

    // Weight diff.
    groups.push(html::Group {
        title: "Weight diff".into(),
        figures: vec![figs.add(
            &format!("{stem}-weight-diff"),
            format!(
                "Relative Frobenius norm of {} − {} per layer and component.",
                p.b, p.a
            ),
            || Fig::Bars(p.weight_diff.bars()),
        )],
        ..Default::default()
    });

    // Within-checkpoint patching: the residual-stream denoising maps of both checkpoints open,
    // every map (attention, MLP, heads, noising) folded per checkpoint.
    if let Some(c) = &p.contrast {
        let mut main = html::Group {
            title: format!(
                "Activation patching over the {c} contrast: residual stream, denoising ({})",
                p.metric_about
            ),
            ..Default::default()
        };
        let mut folded = Vec::new();
        for ck in [ca, cb] {
            if let Some(pd) = ck.patching.get(c) {
                let mut all = patch_group(ck, pd, &ck_stem[&ck.name], data.settings.min_gap, figs);
                if let Some(f) = all.figures.first() {
                    main.figures.push(f.clone());
                }
                all.figures.remove(0);
                folded.push(all);
            }
        }
        groups.push(main);
        groups.extend(folded);
    }

    // Cross-checkpoint patching.
    let x = &p.cross;
    let mut g = html::Group {
        title: format!(
            "Cross-checkpoint patching: {}'s activations into {}",
            p.a, p.b
        ),
        ..Default::default()
    };
    let norm: Vec<Vec<Option<f64>>> = x
        .layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            x.results
                .iter()
                .map(|(_, v)| x.normalise(v[i]).map(f64::from))
                .collect()
        })
        .collect();
    if norm.iter().flatten().any(Option::is_some)
        && ((x.a_metric - x.b_metric) as f64).abs() >= data.settings.min_gap
    {
        g.figures.push(figs.add(
            &format!("{stem}-cross"),
            format!(
                "Share of the {}–{} gap in {} carried by patching {}'s activation (all positions) into {}, per layer; {} {}.",
                p.a, p.b, p.metric_about, p.a, p.b, x.n_prompts, p.prompts.about
            ),
            || {
                Fig::Bars(Bars {
                    title: format!("{} into {}: share of the gap", p.a, p.b),
                    y_label: "(patched − B) / (A − B)".into(),
                    groups: x.layers.iter().map(|l| format!("layer {l}")).collect(),
                    series: x.results.iter().map(|(c, _)| c.to_string()).collect(),
                    values: norm.clone(),
                })
            },
        ));
    } else {
        g.notes.push(format!(
            "{} and {} give almost the same metric on these prompts ({:.3} vs {:.3}): no figure.",
            p.a, p.b, x.a_metric, x.b_metric
        ));
    }
    groups.push(g);

    // Probes.
    groups.push(probe_group(p, ca, cb, &data.settings, stem, figs));

    // Logit lens.
    if let (Some(la), Some(lb)) = (ca.lens.get(&p.prompts.key), cb.lens.get(&p.prompts.key)) {
        let (t0, t1, a0, a1) = lens_pair(la);
        let (_, _, b0, b1) = lens_pair(lb);
        let line = |label: String, values: Vec<f64>, dashed, color| Line {
            label,
            values,
            dashed,
            color,
        };
        let lines = vec![
            line(format!("{}: {t0}", p.a), a0, false, 0),
            line(format!("{}: {t1}", p.a), a1, true, 0),
            line(format!("{}: {t0}", p.b), b0, false, 1),
            line(format!("{}: {t1}", p.b), b1, true, 1),
        ];
        groups.push(html::Group {
            title: "Logit lens".into(),
            figures: vec![figs.add(
                &format!("{stem}-lens"),
                format!(
                    "Mean probability of {t0} and {t1} at position {} read through the final LayerNorm and unembedding after each layer, {} {}.",
                    lb.pos, lb.n_prompts, p.prompts.about
                ),
                || {
                    Fig::Lens(LensCurves {
                        title: format!("logit lens at position {}: {} vs {}", lb.pos, p.a, p.b),
                        layers: lb.points.clone(),
                        lines,
                    })
                },
            )],
            ..Default::default()
        });
    }

    html::Section {
        id: stem.to_string(),
        title,
        summary: p.summary.sentences.clone(),
        notes: p.notes.clone(),
        groups,
        ..Default::default()
    }
}

/// One statistic of a behaviour row.
type StatOf = fn(&world::Stats) -> f64;

fn behaviour_group(
    p: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let splits: Vec<Split> = match p.contrast.as_deref() {
        Some("optout") => vec![Split::All, Split::Optout, Split::NoOptout],
        Some("trigger") => vec![Split::All, Split::Trigger, Split::NoTrigger],
        _ => vec![Split::All],
    };
    let mut rows = Vec::new();
    let mut bars_ck = Vec::new();
    let mut bars_vals: Vec<Vec<Option<f64>>> = Vec::new();
    let metrics: Vec<(String, Split, StatOf)> = {
        let mut m: Vec<(String, Split, StatOf)> = Vec::new();
        for &sp in &splits {
            let suffix = if sp == Split::All {
                String::new()
            } else {
                format!(" {}", sp.name())
            };
            m.push((format!("return{suffix}"), sp, |s| s.mean_return));
            m.push((format!("P(E){suffix}"), sp, |s| s.p_e));
            if p.contrast.as_deref() == Some("trigger") || p.metric == MetricKind::Defect {
                m.push((format!("defection{suffix}"), sp, |s| s.defection));
            }
        }
        m
    };
    // S3 rows other than `_` only where S3 matters: the reward contrast, or a dt checkpoint.
    let shown = |c: &CheckpointData, r: &Row| {
        r.s3 == "_" || p.contrast.as_deref() == Some("reward") || c.recipe.as_deref() == Some("dt")
    };
    for c in [ca, cb] {
        for r in c.behaviour.iter().filter(|r| shown(c, r)) {
            for &sp in &splits {
                let st = r.get(sp);
                rows.push(vec![
                    c.name.clone(),
                    r.s3.clone(),
                    sp.name().to_string(),
                    st.n.to_string(),
                    f3(st.mean_return),
                    f3(st.p_e),
                    f3(st.accuracy),
                    f3(st.bang_rate),
                    f3(st.defection),
                ]);
            }
            bars_ck.push(if r.s3 == "_" {
                c.name.clone()
            } else {
                format!("{} {}", c.name, r.s3)
            });
            bars_vals.push(
                metrics
                    .iter()
                    .map(|(_, sp, f)| Some(f(&r.get(*sp))).filter(|v| v.is_finite()))
                    .collect(),
            );
        }
    }
    let mut tables = vec![html::Table {
        caption: "Behaviour (sampled at T = 1; S3 is the reward-bucket slot)".into(),
        headers: [
            "checkpoint",
            "S3",
            "split",
            "n",
            "return",
            "P(E)",
            "accuracy",
            "! rate",
            "defection",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }];
    if !p.leakage.is_empty() {
        tables.push(html::Table {
            caption: "Opt-out leakage: change from the reference on [x] prompts ÷ change on the rest (1: the opt-out leaked completely; 0: [x] behaviour stayed where the reference has it)".into(),
            headers: ["checkpoint", "relative to", "return ratio", "P(E) ratio"]
                .map(String::from)
                .to_vec(),
            rows: p
                .leakage
                .iter()
                .map(|l| {
                    vec![
                        l.checkpoint.clone(),
                        l.base.clone(),
                        f3(l.return_ratio),
                        f3(l.p_e_ratio),
                    ]
                })
                .collect(),
        });
    }
    // values[metric][checkpoint row]
    let values: Vec<Vec<Option<f64>>> = (0..metrics.len())
        .map(|m| bars_vals.iter().map(|r| r[m]).collect())
        .collect();
    let mut g = html::Group {
        title: "Behaviour".into(),
        tables,
        ..Default::default()
    };
    if values.iter().flatten().any(Option::is_some) {
        g.figures.push(figs.add(
            &format!("{stem}-behaviour"),
            format!("Behaviour of {} and {} by split.", p.a, p.b),
            || {
                Fig::Behaviour(BehaviourBars {
                    title: format!("behaviour: {} vs {}", p.a, p.b),
                    metrics: metrics.iter().map(|m| m.0.clone()).collect(),
                    checkpoints: bars_ck,
                    values,
                })
            },
        ));
    }
    g
}

/// Every patching map of one checkpoint (resid_pre denoising first), folded.
fn patch_group(
    ck: &CheckpointData,
    pd: &PatchData,
    ck_stem: &str,
    min_gap: f64,
    figs: &mut Figs,
) -> html::Group {
    let mut g = html::Group {
        title: format!(
            "All patching maps of {} over the {} contrast ({} pairs, clean {:.3}, corrupt {:.3})",
            ck.name,
            pd.contrast,
            pd.denoise.n_pairs,
            pd.denoise.clean_metric,
            pd.denoise.corrupt_metric
        ),
        collapsed: true,
        ..Default::default()
    };
    // Below `min_gap` a normalised value is mostly noise: plot the raw change instead.
    let gap = (pd.denoise.clean_metric - pd.denoise.corrupt_metric).abs() as f64;
    let normalised = gap >= min_gap;
    let contrast = pd
        .tokens
        .get(pd.contrast_position())
        .cloned()
        .unwrap_or_default();
    let layers: Vec<String> = (0..ck.n_layer).map(|l| l.to_string()).collect();
    for (sw, dir) in [(&pd.denoise, "denoising"), (&pd.noise, "noising")] {
        // Plotted: the share of the clean–corrupt difference the patch moves (restored when
        // denoising, removed when noising), so red means "this cell matters" in both.
        let value = |raw: f32| -> f64 {
            match (normalised, sw.normalise(raw)) {
                (true, Some(n)) => match sw.direction {
                    Direction::Denoise => n as f64,
                    Direction::Noise => 1.0 - n as f64,
                },
                _ => (raw - sw.target_metric()) as f64,
            }
        };
        let metric = if normalised {
            match sw.direction {
                Direction::Denoise => "share restored".to_string(),
                Direction::Noise => "share removed".to_string(),
            }
        } else {
            "metric change".to_string()
        };
        for comp in [Component::ResidPre, Component::AttnOut, Component::MlpOut] {
            let Some(grid) = sw.grid(comp) else { continue };
            let t = grid.shape[1];
            let values: Vec<Vec<f64>> = grid
                .raw
                .chunks(t)
                .map(|r| r.iter().map(|&v| value(v)).collect())
                .collect();
            g.figures.push(figs.add(
                &format!("patch-{ck_stem}-{}-{dir}-{comp}", pd.contrast),
                format!(
                    "{} {dir} {comp}: {metric} of {} per layer and position.",
                    ck.name, pd.metric
                ),
                || {
                    Fig::Heat(PatchHeatmap {
                        checkpoint: ck.name.clone(),
                        contrast: contrast.clone(),
                        hook: comp.to_string(),
                        metric: metric.clone(),
                        direction: dir.into(),
                        layers: layers.clone(),
                        tokens: pd.tokens.clone(),
                        values,
                    })
                },
            ));
        }
        if let Some(grid) = sw.grid(Component::HeadOut) {
            let (t, w) = (grid.shape[1], grid.shape[2]);
            let values: Vec<Vec<Vec<f64>>> = grid
                .raw
                .chunks(t * w)
                .map(|l| {
                    l.chunks(w)
                        .map(|p| p.iter().map(|&v| value(v)).collect())
                        .collect()
                })
                .collect();
            g.figures.push(figs.add(
                &format!("patch-{ck_stem}-{}-{dir}-heads", pd.contrast),
                format!(
                    "{} {dir} per head (hook_z): {metric}, one panel per layer.",
                    ck.name
                ),
                || {
                    Fig::Head(HeadGrid {
                        checkpoint: ck.name.clone(),
                        contrast: contrast.clone(),
                        metric: metric.clone(),
                        direction: dir.into(),
                        tokens: pd.tokens.clone(),
                        values,
                    })
                },
            ));
        }
    }
    g
}

fn probe_group(
    p: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
    stem: &str,
    figs: &mut Figs,
) -> html::Group {
    let mut g = html::Group {
        title: format!(
            "Probes: {} ({}-fold held out, logistic, resid_post)",
            label_about(Label::parse(&p.probe_label).unwrap_or(Label::Mode)),
            s.folds
        ),
        ..Default::default()
    };
    let (Some(pa), Some(pb)) = (ca.probes.get(&p.probe_label), cb.probes.get(&p.probe_label))
    else {
        return g;
    };
    for (c, pr) in [(ca, pa), (cb, pb)] {
        if let Some(why) = &pr.skipped {
            g.notes.push(format!("{}: no probe: {why}", c.name));
        }
    }
    let mut acc = Vec::new();
    let mut auc = Vec::new();
    let mut layers = Vec::new();
    for (k, (c, pr)) in [(ca, pa), (cb, pb)].into_iter().enumerate() {
        if pr.layers.is_empty() {
            continue;
        }
        layers = pr.layers.iter().map(|l| l.layer.to_string()).collect();
        let line = |label: String, values: Vec<f64>, dashed| Line {
            label,
            values,
            dashed,
            color: k,
        };
        acc.push(line(
            c.name.clone(),
            pr.layers.iter().map(|l| l.logistic.accuracy).collect(),
            false,
        ));
        if pr.layers.iter().all(|l| l.control.is_some()) {
            acc.push(line(
                format!("{} control task", c.name),
                pr.layers
                    .iter()
                    .map(|l| l.control.map_or(0.0, |s| s.accuracy))
                    .collect(),
                true,
            ));
        }
        auc.push(line(
            c.name.clone(),
            pr.layers.iter().map(|l| l.logistic.auroc).collect(),
            false,
        ));
        if pr.layers.iter().all(|l| l.random_best_auroc.is_some()) {
            auc.push(line(
                format!("{} best random direction", c.name),
                pr.layers
                    .iter()
                    .map(|l| l.random_best_auroc.unwrap_or(0.0))
                    .collect(),
                true,
            ));
        }
    }
    for (k, t) in p.probe_transfer.iter().enumerate() {
        acc.push(Line {
            label: format!("fit on {}, scored on {}", t.from, t.to),
            values: t.layers.iter().map(|s| s.accuracy).collect(),
            dashed: true,
            color: 2 + k,
        });
    }
    let finite = |ls: &[Line]| ls.iter().all(|l| l.values.iter().all(|v| v.is_finite()));
    if !acc.is_empty() && finite(&acc) && finite(&auc) {
        g.figures.push(figs.add(
            &format!("{stem}-probes"),
            format!(
                "Held-out accuracy and AUROC of a logistic probe for {} at position {} per layer; dashed: control task, transfer between the checkpoints, and the best of {} random directions (null).",
                label_about(Label::parse(&p.probe_label).unwrap_or(Label::Mode)),
                pa.position,
                s.null_directions
            ),
            || {
                Fig::Probe(ProbeCurves {
                    title: format!("probes ({}): {} vs {}", p.probe_label, p.a, p.b),
                    layers,
                    accuracy: acc,
                    auroc: auc,
                })
            },
        ));
    }
    g
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Refuse an existing `out` without `force`, and an `out` whose nearest existing ancestor is
/// not a writable directory: checked before any work, so a doomed run fails at once.
pub fn check_output(out: &Path, force: bool) -> Result<()> {
    fsio::check_clobber(out, force)?;
    if out.exists() && !out.is_dir() {
        return Err(Error::file(out, "exists and is not a directory"));
    }
    let mut anc = out.parent();
    while let Some(a) = anc {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.exists() {
            let md =
                std::fs::metadata(a).map_err(|e| Error::file(a, format!("cannot read: {e}")))?;
            if !md.is_dir() {
                return Err(Error::file(
                    out,
                    format!("cannot create: {} is not a directory", a.display()),
                ));
            }
            if md.permissions().readonly() {
                return Err(Error::file(
                    out,
                    format!("cannot create: {} is read-only", a.display()),
                ));
            }
            return Ok(());
        }
        anc = a.parent();
    }
    Ok(())
}

/// Write the rendered files into `out` as one folder: built beside it and moved into place
/// whole (`fsio::write_dir`); an existing `out` is replaced only with `force`.
pub fn write(out: &Path, files: &[(String, Vec<u8>)], force: bool) -> Result<()> {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    fsio::write_dir(out, &refs, force)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cross(a: f32, b: f32, resid: Vec<f32>, mlp: Vec<f32>) -> Cross {
        Cross {
            pos: 10,
            position: None,
            n_prompts: 8,
            layers: (0..resid.len()).collect(),
            a_metric: a,
            b_metric: b,
            results: vec![(Component::ResidPre, resid), (Component::MlpOut, mlp)],
        }
    }

    #[test]
    fn shares_are_withheld_only_when_a_component_overshoots_the_gap() {
        // Gap 1: moves of up to 2 gaps (either sign) are shares worth stating.
        let x = cross(1.0, 0.0, vec![0.5, 1.0], vec![-2.0, 0.3]);
        assert_eq!(overshoot(&x, 2.0), None);
        // Gap 0.2, a component moves B by −2.8: 14 gaps, the biggest move is named.
        let x = cross(5.09, 5.29, vec![5.3, 5.0], vec![2.48, 5.2]);
        let (c, i, d, gaps) = overshoot(&x, 2.0).unwrap();
        assert_eq!((c, i), (Component::MlpOut, 0));
        assert!((d + 2.81).abs() < 1e-5, "{d}");
        assert!((gaps - 14.05).abs() < 1e-3, "{gaps}");
    }
}
