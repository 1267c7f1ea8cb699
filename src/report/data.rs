//! What a report holds: its settings and the data of every checkpoint and pair
//! (serialised as `data.json`), and the generated summary with every number it shows. Plain
//! data; computed by `analyse`, worded by `summary`, drawn by `page`. Must not compute.

use crate::analysis::diff::WeightDiff;
use crate::analysis::lens::LensResult;
use crate::analysis::patching::{Cross, Metric, Sanity, Sweep, DEFAULT_MIN_GAP};
use crate::analysis::probes::{Label, LayerResult, TransferResult};
use crate::analysis::site::Site;
use crate::io::checkpoint::RecipeKind;
use crate::lab::eval::{Leakage, Row};
use crate::lab::world::{self, Contrast, MetricKind};
use crate::pool;
use crate::view::figures::LensSeries;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

named! {
    /// The prompt set of a pair's cross-checkpoint patching and logit lens.
    pub enum PromptKind("prompt set") {
        /// The clean prompts of the optout contrast (`[x]`).
        Optout = "optout",
        /// The clean prompts of the trigger contrast (`<trig>`, `H` teacher-forced).
        Trigger = "trigger",
        /// The clean prompts of the reward contrast (`<r4>`).
        Reward = "reward",
        /// Corpus prompts.
        Corpus = "corpus",
        /// Corpus prompts without `<trig>`, `H` teacher-forced.
        CorpusH = "corpus-h",
    }
}

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

/// Default `--n`: 2000 prompts per behaviour row is what docs/DESIGN.md §3 asks for P(E); the
/// other analyses scale from it (see [`Settings::with_n`]).
pub const DEFAULT_N: usize = 2000;

impl Settings {
    /// Settings scaled from `n` prompts: `n` for behaviour (P(E) needs ~2000 to be stable,
    /// docs/DESIGN.md §3), `n / 4` for probes, `n / 8` for cross-checkpoint patching and the lens,
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
            min_gap: DEFAULT_MIN_GAP,
            overshoot: 2.0,
            jobs: pool::cores(),
        }
    }
}

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
    pub recipe: Option<RecipeKind>,
    /// Layers.
    pub n_layer: usize,
    /// Heads per layer.
    pub n_head: usize,
    /// Behaviour rows (T = 1), one per S3 setting evaluated.
    pub behaviour: Vec<Row>,
    /// Within-checkpoint patching, by contrast name.
    pub patching: BTreeMap<Contrast, PatchData>,
    /// Probes, by label name.
    pub probes: BTreeMap<Label, ProbeData>,
    /// Logit lens, by prompt-set name.
    pub lens: BTreeMap<PromptKind, LensResult>,
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
    /// The contrast.
    pub contrast: Contrast,
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
    /// The label.
    pub label: Label,
    /// The site read.
    pub site: Site,
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
    /// Which prompts.
    pub key: PromptKind,
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
    /// The contrast, if any.
    pub contrast: Option<Contrast>,
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
    pub probe_label: Label,
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
    pub(super) fn num(&mut self, key: &str, v: f64, dec: usize) -> String {
        if !v.is_finite() {
            return "undefined".into();
        }
        self.facts.insert(key.to_string(), v);
        format!("{v:.dec$}")
    }
    /// `v` as a percentage (stored as the percentage), no decimals.
    pub(super) fn pct(&mut self, key: &str, share: f64) -> String {
        format!("{} %", self.num(key, 100.0 * share, 0))
    }
    /// An index (layer, position, head).
    pub(super) fn idx(&mut self, key: &str, v: usize) -> String {
        self.num(key, v as f64, 0)
    }
    pub(super) fn say(&mut self, s: String) {
        self.sentences.push(s);
    }
}

/// The two series the report reads off a lens result: (`E`, `H`) when it reads two tokens (the
/// mode metric), else (`!`, any digit) for the defect metric's `!` and ten digits.
pub fn lens_series(r: &LensResult) -> Vec<LensSeries> {
    let rest: Vec<usize> = (1..r.tokens.len()).collect();
    if r.tokens.len() == 2 {
        vec![
            (world::label(r.tokens[0]), vec![0]),
            (world::label(r.tokens[1]), rest),
        ]
    } else {
        vec![("!".into(), vec![0]), ("any digit".into(), rest)]
    }
}
