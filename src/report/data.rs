//! What a report holds: its settings and the data of every checkpoint and pair
//! (serialised as `data.json`), and the generated summary with every number it shows. Plain
//! data; computed by `analyse`, worded by `summary`, drawn by `page`. Must not compute.

use crate::analysis::causal::{AblateResult, SteerResult};
use crate::analysis::diff::WeightDiff;
use crate::analysis::lens::LensResult;
use crate::analysis::patching::{
    Cross, CrossCi, Metric, Sanity, Specific, Sweep, SweepCi, DEFAULT_MIN_GAP,
};
use crate::analysis::probes::{Label, LayerResult, TransferResult};
use crate::analysis::site::Site;
use crate::io::checkpoint::RecipeKind;
use crate::io::wire;
use crate::lab::eval::{Leakage, Row};
use crate::lab::world::{self, Contrast, MetricKind};
use crate::pool;
use crate::stats::{self, Est, SeedEst, SeedInterval};
use crate::view::figures::LensSeries;
use serde::{Deserialize, Serialize, Serializer};
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

named! {
    /// Why a set of components is ablated in a causal check: what the patching named.
    pub enum SetRole("localised set") {
        /// The head whose denoising restores most of the gap.
        TopHead = "top-head",
        /// The MLP output whose denoising restores most.
        TopMlp = "top-mlp",
        /// The attention or MLP output whose noising removes most.
        Necessary = "most-necessary",
        /// The three together.
        Together = "together",
    }
}

/// Causal checks of one run's localisation over one contrast: each named set ablated while the
/// checkpoint samples (mean, resample, sufficiency), and steering along the contrast's
/// difference-of-means direction at every layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CausalData {
    /// What each ablated set is, in `ablation.ablations` order.
    pub roles: Vec<SetRole>,
    /// The ablations.
    pub ablation: AblateResult,
    /// The steering dose–response and direction ablation.
    pub steering: SteerResult,
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
    /// Prompt pairs per causal check (each ablation and steering run samples them once).
    pub n_causal: usize,
    /// Multiples α of the difference-of-means direction added when steering.
    pub steer_alphas: Vec<f64>,
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
    /// Bootstrap resamples of every within-checkpoint interval (percentile, 95 %).
    pub bootstrap: usize,
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
    /// docs/DESIGN.md §3), `n / 4` for probes, `n / 8` for cross-checkpoint patching and the
    /// lens, `n / 16` patching pairs rounded up to a multiple of 8 (128 at the default n: enough
    /// for a bootstrap interval per cell); each at least 8 (probes: 40, so that every fold holds
    /// each class).
    pub fn with_n(n: usize) -> Settings {
        Settings {
            n_eval: n.max(1),
            n_patch: (n / 16).div_ceil(8).max(1) * 8,
            n_cross: (n / 8).max(8),
            n_causal: (n / 16).div_ceil(8).max(1) * 8,
            steer_alphas: vec![-1.0, 0.5, 1.0, 2.0, 4.0],
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
            bootstrap: stats::BOOTSTRAP,
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
    /// The training seeds the report runs over (null: one run of plain directories).
    pub seeds: Option<Vec<u64>>,
    /// Per checkpoint of every seed (`seed-S/NAME`, or `NAME`): analyses shared by every pair
    /// it is in.
    pub checkpoints: BTreeMap<String, CheckpointData>,
    /// Per pair, in file order, with one run per seed.
    pub pairs: Vec<PairData>,
    /// Seed-null pairs: one recipe at two seeds, the noise floor of the pairs' numbers.
    pub floors: Vec<FloorData>,
    /// The first page's answers, one per question the zoo was built for.
    pub answers: Vec<Answer>,
    /// Every number in them.
    pub answers_summary: Summary,
    /// The opt-out anchoring dose–response (empty without `anchoring` in the pairs file).
    pub anchoring: Vec<AnchorPoint>,
    /// Its generated summary.
    pub anchoring_summary: Summary,
    /// Model diffing without labels: the crosscoders of the pairs file's `crosscoders` pairs.
    pub crosscoders: Vec<super::crosscoders::CrossData>,
}

/// One row of the answers table (text cells; every number in them is in
/// `answers_summary.facts`).
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// What the data say.
    pub verdict: String,
    /// The key number with its 95 % interval.
    pub key: String,
    /// Where in the network.
    pub location: String,
    /// The causal check's result.
    pub causal: String,
    /// In how many training seeds it holds.
    pub seeds: String,
    /// What to keep in mind.
    pub caveat: String,
}

/// One anchoring strength: a ptx opt-out checkpoint and its leakage against the reference in
/// every run.
#[derive(Clone, Debug, Serialize)]
pub struct AnchorPoint {
    /// Checkpoint name.
    pub checkpoint: String,
    /// Weight of the corpus next-token loss on `[x]` episodes (the manifest's `ptx_coef`).
    pub ptx_coef: f64,
    /// Its opt-out leakage against the reference, one per run (T = 1).
    pub leakage: Vec<Leakage>,
    /// Per run, its P(E) minus the reference's on `[x]` prompts and on the rest: the two parts
    /// of the ratio (the ratio is undefined when the second is 0).
    pub p_e_change: Vec<(f64, f64)>,
}

/// One checkpoint's analyses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointData {
    /// Name as in the pairs file (the recipe's checkpoint name).
    pub name: String,
    /// Training seed (null for a plain directory).
    pub seed: Option<u64>,
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
    /// Behaviour rows (T = 1), one per S3 setting evaluated, with bootstrap intervals.
    pub behaviour: Vec<Row>,
    /// Within-checkpoint patching, by contrast.
    pub patching: BTreeMap<Contrast, PatchData>,
    /// Causal checks of what the patching localised, by contrast (only where it localised).
    pub causal: BTreeMap<Contrast, CausalData>,
    /// Probes at each label's decision position (10; 11 for trigger and defect), by label.
    pub probes: BTreeMap<Label, ProbeData>,
    /// The slot labels (optout, trigger, bucket) probed at their own slot (1, 2, 3).
    pub slot_probes: BTreeMap<Label, ProbeData>,
    /// Logit lens, by prompt set.
    pub lens: BTreeMap<PromptKind, LensData>,
}

/// The logit lens on one prompt set, and the two series the report reads off it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensData {
    /// The read-out.
    #[serde(flatten)]
    pub result: LensResult,
    /// The report's two series ([`lens_series`]): each point's mean probability with its
    /// bootstrap interval over the prompts.
    pub series: Vec<SeriesEst>,
}

/// A lens series over the residual points.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesEst {
    /// What it sums (`E`, `any digit`, ...).
    pub name: String,
    /// Per point.
    pub values: Vec<Est>,
}

fn cross_json<S: Serializer>(c: &Cross, ser: S) -> std::result::Result<S::Ok, S::Error> {
    if wire::full() {
        return c.serialize(ser);
    }
    c.to_json().serialize(ser)
}

fn opt_cross_json<S: Serializer>(
    c: &Option<Cross>,
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    if wire::full() {
        return c.serialize(ser);
    }
    c.as_ref().map(Cross::to_json).serialize(ser)
}

fn sweep_ci_json<S: Serializer>(
    (s, c): &(Sweep, Option<SweepCi>),
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    if wire::full() {
        return (s, c).serialize(ser);
    }
    let mut v = s.to_json();
    v["ci"] = c.as_ref().map_or(serde_json::Value::Null, |c| c.to_json(s));
    v.serialize(ser)
}

/// Exact patching over one contrast in one checkpoint: the clean–corrupt gap, and — when the
/// gap is large enough to localise — the sweeps in both directions.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Prompt pairs.
    pub n_pairs: usize,
    /// The clean metric (mean over pairs, bootstrap interval).
    pub clean: Est,
    /// The corrupted metric.
    pub corrupt: Est,
    /// clean − corrupt (paired bootstrap).
    pub gap: Est,
    /// Why there are no sweeps: the gap is too small to localise (its interval reaches 0, or it
    /// is below `settings.min_gap`).
    pub skipped: Option<String>,
    /// The sweeps, when the gap is large enough.
    #[serde(flatten)]
    pub sweeps: Option<PatchSweeps>,
}

/// Both directions' sweeps of a [`PatchData`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchSweeps {
    /// Clean activations into the corrupted run; `normalised` = (patched − corrupt) / (clean −
    /// corrupt); `ci`: bootstrap intervals over the pairs.
    #[serde(serialize_with = "sweep_ci_json")]
    pub denoise: (Sweep, Option<SweepCi>),
    /// Its whole-residual sanity check.
    pub denoise_sanity: Sanity,
    /// Corrupted activations into the clean run.
    #[serde(serialize_with = "sweep_ci_json")]
    pub noise: (Sweep, Option<SweepCi>),
    /// Its sanity check.
    pub noise_sanity: Sanity,
}

/// Probes of one label on one checkpoint (logistic, k-fold held out; control task; nulls).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// For a contrast, the control prompts: the other side of each pair (slot unset), in
    /// words; cross-checkpoint patching runs on them too.
    pub control_about: Option<String>,
    /// Their metrics.
    #[serde(skip)]
    pub control_metrics: Vec<Metric>,
    /// Their ids, in pair order.
    #[serde(skip)]
    pub control_ids: Vec<Vec<u32>>,
}

/// One run of a pair: both checkpoints of one seed (or, for a seed-null pair, one recipe at
/// two seeds) and the pair's own analyses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairRun {
    /// The seed (of A; null for plain directories).
    pub seed: Option<u64>,
    /// Checkpoint A's key in `checkpoints`.
    pub a: String,
    /// Checkpoint B's key.
    pub b: String,
    /// Opt-out leakage of A and B against the reference (optout contrast).
    pub leakage: Vec<Leakage>,
    /// Weight diff of B against A.
    pub weight_diff: WeightDiff,
    /// A's activations patched into B, per component and layer; `normalised` = the share of
    /// the A–B gap carried.
    #[serde(serialize_with = "cross_json")]
    pub cross: Cross,
    /// Its bootstrap intervals.
    pub cross_ci: Option<CrossCi>,
    /// Why cross-checkpoint patching was not run (the checkpoints share no initialisation, so
    /// their residual streams share no basis); then `cross` holds only the metric gap.
    pub cross_refused: Option<String>,
    /// The same patching on the control prompts (contrast pairs).
    #[serde(serialize_with = "opt_cross_json")]
    pub cross_control: Option<Cross>,
    /// The difference of differences: what is specific to the slot, per site and layer.
    pub specific: Option<Specific>,
    /// Linear CKA between A's and B's resid_post per layer on the probe prompts (pairs that
    /// share no initialisation).
    pub cka: Vec<f64>,
    /// Probes fitted on one checkpoint and scored on the other (with intervals).
    pub probe_transfer: Vec<TransferResult>,
}

/// One pair of the pairs file over every seed, and its generated summary.
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
    /// Probe label (`checkpoints.*.probes[label]`).
    pub probe_label: Label,
    /// The prompts of cross-checkpoint patching and the lens (`checkpoints.*.lens[key]`).
    pub prompts: PromptSet,
    /// One run per seed.
    pub runs: Vec<PairRun>,
    /// The seed-null pair whose numbers are this pair's noise floor (`floors[i].name`).
    pub floor: Option<String>,
    /// Generated summary: sentences, and every number they show with its interval.
    pub summary: Summary,
    /// Things the reader should know (failed sanity checks, skipped analyses).
    pub notes: Vec<String>,
}

/// A seed-null pair: one recipe at two seeds, read with the prompts, metric and probe label of
/// the pairs it is the floor of.
#[derive(Clone, Debug, Serialize)]
pub struct FloorData {
    /// `null RECIPE (CONTRAST or METRIC)`.
    pub name: String,
    /// The recipe (checkpoint name).
    pub recipe: String,
    /// The contrast of its prompts, if any.
    pub contrast: Option<Contrast>,
    /// The metric.
    pub metric: MetricKind,
    /// Probe label.
    pub probe_label: Label,
    /// The prompts.
    pub prompts: PromptSet,
    /// One run per consecutive pair of seeds (seed i against seed i + 1).
    pub runs: Vec<PairRun>,
    /// Generated summary of the floor's size.
    pub summary: Summary,
}

/// A generated summary: sentences, and every number in them under a key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Sentences, in order.
    pub sentences: Vec<String>,
    /// Each number the sentences show, unrounded, with its interval and n.
    pub facts: BTreeMap<String, Fact>,
}

/// What a fact's interval is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// Training seeds (the mean over seeds; t interval with 3 or more, else the range).
    Seeds,
    /// The prompts of one run (bootstrap; the report has one seed).
    Prompts,
    /// Nothing: a count, an index or a setting.
    Exact,
}

/// One number of a summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fact {
    /// The value shown (the mean over seeds, or the one run's value).
    pub value: f64,
    /// Lower end of its 95 % interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Seeds, or prompts, it rests on.
    pub n: usize,
    /// What the interval is over.
    pub over: Over,
    /// Over seeds: `t` or `range`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<SeedInterval>,
    /// Over seeds: each seed's value (null where undefined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_seed: Option<Vec<Option<f64>>>,
}

impl Fact {
    /// An exact number (a count, an index, a setting).
    pub fn exact(v: f64) -> Fact {
        Fact {
            value: v,
            lo: v,
            hi: v,
            n: 1,
            over: Over::Exact,
            interval: None,
            per_seed: None,
        }
    }
    /// A number measured in every run: over seeds when there are several, else the one run's
    /// bootstrap interval.
    pub fn of_runs(runs: &[Est]) -> Fact {
        match runs {
            [one] => Fact {
                value: one.value,
                lo: one.lo,
                hi: one.hi,
                n: one.n,
                over: Over::Prompts,
                interval: None,
                per_seed: None,
            },
            many => {
                let s = SeedEst::of(&many.iter().map(|e| e.value).collect::<Vec<_>>());
                Fact {
                    value: s.mean,
                    lo: s.lo,
                    hi: s.hi,
                    n: s.n,
                    over: Over::Seeds,
                    interval: Some(s.interval),
                    per_seed: Some(s.per_seed),
                }
            }
        }
    }
    /// [`Fact::of_runs`] of a proportion (a rate, an accuracy, an AUROC, a probability): a t
    /// interval over seeds is symmetric and can leave [0, 1], so it is clipped to it.
    pub fn of_proportion(runs: &[Est]) -> Fact {
        let mut f = Fact::of_runs(runs);
        f.lo = f.lo.max(0.0);
        f.hi = f.hi.min(1.0);
        f
    }
    /// Whether the value is finite.
    pub fn is_finite(&self) -> bool {
        self.value.is_finite()
    }
    /// `[lo, hi]` with `dec` decimals.
    pub fn bracket(&self, dec: usize) -> String {
        format!("[{:.dec$}, {:.dec$}]", self.lo, self.hi)
    }
    /// Whether every value of the interval is at least `x`.
    pub fn clears(&self, x: f64) -> bool {
        self.lo >= x
    }
    /// The smallest |value| in the interval (0 when it straddles 0).
    pub fn lo_abs(&self) -> f64 {
        if self.lo <= 0.0 && self.hi >= 0.0 {
            0.0
        } else {
            self.lo.abs().min(self.hi.abs())
        }
    }
    /// The largest |value| in the interval.
    pub fn hi_abs(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }
    /// Whether this (a pair's difference) is beyond `floor` (the same number between seeds of
    /// one recipe): every value of its interval is larger in size than every value of the
    /// floor's.
    pub fn beyond(&self, floor: &Fact) -> bool {
        self.lo_abs() > floor.hi_abs()
    }
}

impl Summary {
    /// Record `f` under `key` and format it as `value [lo, hi]` with `dec` decimals (an exact
    /// fact, or one run's measurement with nothing to resample, as its value alone); a value
    /// that is not finite reads "undefined" and is not recorded (JSON has no infinities).
    pub(super) fn fact(&mut self, key: &str, f: Fact, dec: usize) -> String {
        if !f.is_finite() {
            return "undefined".into();
        }
        let text = match f.over {
            Over::Exact => format!("{:.dec$}", f.value),
            // A measurement of one run with nothing to resample (a weight norm): nothing to
            // bracket. Over seeds a zero-width interval (the seeds agree) is still shown.
            Over::Prompts if f.lo == f.hi && f.lo == f.value => format!("{:.dec$}", f.value),
            _ if f.lo.is_finite() && f.hi.is_finite() => {
                format!("{:.dec$} {}", f.value, f.bracket(dec))
            }
            _ => format!("{:.dec$} [interval undefined]", f.value),
        };
        self.facts.insert(key.to_string(), f);
        text
    }
    /// A fact measured in every run ([`Fact::of_runs`]).
    pub(super) fn runs(&mut self, key: &str, runs: &[Est], dec: usize) -> String {
        self.fact(key, Fact::of_runs(runs), dec)
    }
    /// A proportion measured in every run ([`Fact::of_proportion`]).
    pub(super) fn prop(&mut self, key: &str, runs: &[Est], dec: usize) -> String {
        self.fact(key, Fact::of_proportion(runs), dec)
    }
    /// An exact number (an index, a count, a setting) with `dec` decimals.
    pub(super) fn num(&mut self, key: &str, v: f64, dec: usize) -> String {
        self.fact(key, Fact::exact(v), dec)
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
