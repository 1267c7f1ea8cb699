//! Linear probes over a model's layers: labelled activation sets from the toy world, probe specs
//! (`probes/*.toml`), running them into stored results, and checking stored results for drift;
//! plus fitting one probe on activations a user brings. The maths is in `probe_math`; the
//! forward pass is `model`'s.

pub mod math;

pub use crate::io::checkpoint::StTensor;
use math::{Logistic, Scores};
use crate::lab::sample::{self, Decode};
use crate::lab::world::{self, Prompt, PromptDist, WorldConfig};
use crate::io::{checkpoint, fsio};
use crate::{Error, Gpt2, Hook, Input, Intervention, Logits, Result, Run};
use candle_core::{Device, Tensor};
use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Serialise named tensors as safetensors bytes (deterministic).
pub fn safetensors_bytes(tensors: &[(String, StTensor)]) -> Result<Vec<u8>> {
    checkpoint::serialize(tensors, None)
}

/// Read `X` `[n, d]` f32 and `y` `[n]` i64 from a safetensors file (other tensors are ignored).
pub fn read_xy(path: &Path) -> Result<(Array2<f32>, Vec<i64>)> {
    let bytes = fsio::read(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let get = |name: &str, dtype: StDtype, rank: usize| {
        let v = st.tensor(name).map_err(|_| {
            Error::file(
                path,
                format!("no tensor '{name}' (expected X [n, d] f32 and y [n] i64)"),
            )
        })?;
        if v.dtype() != dtype {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' has dtype {:?}, expected {dtype:?}",
                    v.dtype()
                ),
            ));
        }
        if v.shape().len() != rank {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' has shape {:?}, expected rank {rank}",
                    v.shape()
                ),
            ));
        }
        Ok(v)
    };
    let xv = get("X", StDtype::F32, 2)?;
    let yv = get("y", StDtype::I64, 1)?;
    let (n, d) = (xv.shape()[0], xv.shape()[1]);
    if yv.shape()[0] != n {
        return Err(Error::file(
            path,
            format!("X has {n} rows but y has {}", yv.shape()[0]),
        ));
    }
    if d == 0 {
        return Err(Error::file(path, "X has no columns"));
    }
    let xs: Vec<f32> = xv
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if xs.iter().any(|v| !v.is_finite()) {
        return Err(Error::file(path, "X contains NaN or infinite values"));
    }
    let ys: Vec<i64> = yv
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let x = Array2::from_shape_vec((n, d), xs).map_err(|e| Error::file(path, format!("X: {e}")))?;
    Ok((x, ys))
}

/// Parse a row range `A..B` (end exclusive) within `0..n`; `what` names the argument.
pub fn parse_rows(s: &str, n: usize, what: &str) -> Result<Range<usize>> {
    let bad = || {
        Error::input(format!(
            "{what}: '{s}' is not a row range like 0..{}",
            n * 7 / 10
        ))
    };
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: usize = if a.trim().is_empty() {
        0
    } else {
        a.trim().parse().map_err(|_| bad())?
    };
    let b: usize = b.trim().parse().map_err(|_| bad())?;
    if a >= b || b > n {
        input_err!("{what}: {a}..{b} is empty or runs past the {n} rows");
    }
    if b - a == n {
        input_err!("{what}: {a}..{b} covers every row, leaving no test rows");
    }
    Ok(a..b)
}

/// The result of [`fit_file`]: one logistic probe and its held-out scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitReport {
    /// `[1, d]` (binary) or `[classes, d]`.
    pub coef: Vec<Vec<f64>>,
    /// `[1]` or `[classes]`.
    pub intercept: Vec<f64>,
    /// Label values, the column order of `test_proba`.
    pub classes: Vec<i64>,
    /// `[n_test, classes]` probabilities of the test rows (those outside the train range).
    pub test_proba: Vec<Vec<f64>>,
    /// Accuracy on the test rows.
    pub test_accuracy: f64,
    /// AUROC on the test rows (binary; one-vs-rest macro for more classes).
    pub test_auroc: f64,
    /// Newton iterations and final gradient max-norm.
    pub iterations: usize,
    /// Max-norm of the objective's gradient at the solution.
    pub grad_norm: f64,
}

/// Fit a logistic probe with inverse regularisation `c` on rows `train` of `x` and score it on
/// the other rows.
pub fn fit_split(x: &Array2<f32>, y: &[i64], train: Range<usize>, c: f64) -> Result<FitReport> {
    let n = x.nrows();
    let test: Vec<usize> = (0..n).filter(|i| !train.contains(i)).collect();
    let ytr = &y[train.clone()];
    let model = Logistic::fit(x.slice(ndarray::s![train, ..]), ytr, c)
        .map_err(|e| Error::input(format!("training rows: {e}")))?;
    let xte = x.select(Axis(0), &test);
    let yte: Vec<i64> = test.iter().map(|&i| y[i]).collect();
    let proba = model.predict_proba(xte.view());
    let sc: Scores = model
        .score(xte.view(), &yte)
        .map_err(|e| Error::input(format!("test rows: {e}")))?;
    Ok(FitReport {
        coef: model.coef.rows().into_iter().map(|r| r.to_vec()).collect(),
        intercept: model.intercept.to_vec(),
        classes: model.classes.clone(),
        test_proba: proba.rows().into_iter().map(|r| r.to_vec()).collect(),
        test_accuracy: sc.accuracy,
        test_auroc: sc.auroc,
        iterations: model.iterations,
        grad_norm: model.grad_norm,
    })
}

/// [`fit_split`] on `X`, `y` read from a safetensors file, rows given as `A..B`.
pub fn fit_file(path: &Path, train_rows: &str, c: f64) -> Result<FitReport> {
    let (x, y) = read_xy(path)?;
    let train = parse_rows(train_rows, x.nrows(), "--train-rows")?;
    if !(c.is_finite() && c > 0.0) {
        input_err!("--c: must be a positive number, got {c}");
    }
    fit_split(&x, &y, train, c)
}

// ---------------------------------------------------------------------------------------------
// Activation sets from the toy world.

/// What a probe is asked to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// S1 is `[x]` (1) or `_` (0).
    Optout,
    /// S2 is `<trig>` (1) or `_` (0).
    Trigger,
    /// S3 reward bucket `<r0>`..`<r4>` (0..4; multinomial).
    Bucket,
    /// The model's own choice at the decision position: `E` logit > `H` logit (1) or not (0).
    Mode,
    /// Greedy decoding of the completion emits at least one `!` (1) or none (0).
    Defect,
}

impl Label {
    const ALL: [(&'static str, Label); 5] = [
        ("optout", Label::Optout),
        ("trigger", Label::Trigger),
        ("bucket", Label::Bucket),
        ("mode", Label::Mode),
        ("defect", Label::Defect),
    ];
    /// Parse a label name; the error lists the known ones.
    pub fn parse(s: &str) -> Result<Label> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, l)| *l)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown label '{s}' (known: optout, trigger, bucket, mode, defect)"
                ))
            })
    }
    /// True when the label depends on the model (computed per checkpoint).
    pub fn from_model(&self) -> bool {
        matches!(self, Label::Mode | Label::Defect)
    }
}

/// The residual-shaped hooks a probe can read (`[batch, pos, d_model]`), by short name.
pub const SITES: [&str; 5] = [
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
];

/// `blocks.{layer}.hook_{site}` for a short site name (one of [`SITES`]).
pub fn site_hook(site: &str, layer: usize, n_layer: usize) -> Result<Hook> {
    if !SITES.contains(&site) {
        input_err!("unknown hook '{site}' (known: {})", SITES.join(", "));
    }
    if layer >= n_layer {
        input_err!("layer {layer} is out of range (the model has {n_layer} layers: 0..{n_layer})");
    }
    Hook::parse_for(&format!("blocks.{layer}.hook_{site}"), n_layer)
}

/// Prompts for a label: the corpus distribution with the probed slot balanced (S1 or S2 at
/// p 0.5, S3 uniform over the five buckets for `bucket`); `p_optout` / `p_trigger` override.
pub fn sample_prompts(
    label: Label,
    n: usize,
    seed: u64,
    p_optout: Option<f64>,
    p_trigger: Option<f64>,
) -> Vec<Prompt> {
    let cfg = WorldConfig::default();
    let mut dist = PromptDist::corpus(&cfg);
    match label {
        Label::Optout => dist.p_optout = 0.5,
        Label::Trigger | Label::Defect => dist.p_trigger = 0.5,
        Label::Bucket | Label::Mode => {}
    }
    if let Some(p) = p_optout {
        dist.p_optout = p;
    }
    if let Some(p) = p_trigger {
        dist.p_trigger = p;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut prompts = dist.sample_n(&mut rng, n);
    if label == Label::Bucket {
        for p in &mut prompts {
            p.bucket = Some(rng.random_range(0..world::N_BUCKETS as u8));
        }
    }
    prompts
}

/// Rows per forward batch (CANDLE-NOTES.md: 16–64 was the sweet spot on 2 cores).
const BATCH: usize = 64;

/// A labelled activation set: one `[n, d]` matrix per layer at one hook and position.
#[derive(Clone, Debug)]
pub struct ActivationSet {
    /// The prompts, in row order.
    pub prompts: Vec<Prompt>,
    /// Label of each row.
    pub labels: Vec<i64>,
    /// Short hook name (`resid_post`, ...).
    pub site: String,
    /// Token position read.
    pub position: usize,
    /// Layers, in the order of `acts`.
    pub layers: Vec<usize>,
    /// `[n, d_model]` per layer.
    pub acts: Vec<Array2<f32>>,
}

impl ActivationSet {
    /// Run `model` on `prompts`, reading `blocks.{l}.hook_{site}` at `position` for each layer,
    /// and label the rows.
    pub fn build(
        model: &Gpt2,
        prompts: Vec<Prompt>,
        label: Label,
        site: &str,
        position: usize,
        layers: &[usize],
    ) -> Result<ActivationSet> {
        let n_layer = model.config().n_layer;
        if position >= world::PROMPT_LEN {
            input_err!(
                "position {position} is outside the {}-token prompt (0..{})",
                world::PROMPT_LEN,
                world::PROMPT_LEN
            );
        }
        let hooks: Vec<Hook> = layers
            .iter()
            .map(|&l| site_hook(site, l, n_layer))
            .collect::<Result<_>>()?;
        let d = model.config().n_embd;
        let n = prompts.len();
        let mut acts: Vec<Vec<f32>> = vec![Vec::with_capacity(n * d); layers.len()];
        let mut mode = Vec::with_capacity(n);
        for chunk in prompts.chunks(BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids().to_vec()).collect();
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
            site: site.to_string(),
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
        safetensors_bytes(&t)
    }
}

// ---------------------------------------------------------------------------------------------
// Specs, results, checks.

fn default_site() -> String {
    "resid_post".into()
}
fn default_position() -> usize {
    world::POS_A
}
fn default_n() -> usize {
    2000
}
fn default_methods() -> Vec<String> {
    vec!["logistic".into(), "mass_mean".into()]
}
fn default_c() -> f64 {
    1.0
}
fn default_folds() -> usize {
    5
}
fn default_tolerance() -> f64 {
    0.02
}
fn default_null() -> usize {
    1000
}
fn default_true() -> bool {
    true
}

/// A probe spec, `probes/<name>.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Checkpoint directories, relative to the spec file's folder (e.g. `../checkpoints/base`).
    pub checkpoints: Vec<String>,
    /// `optout`, `trigger`, `bucket`, `mode` or `defect`.
    pub label: String,
    /// Short hook name (one of [`SITES`]); default `resid_post`.
    #[serde(default = "default_site")]
    pub hook: String,
    /// Token position; default the `A` position, 10.
    #[serde(default = "default_position")]
    pub position: usize,
    /// Layers; default every layer.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Prompts; default 2000.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Seed of prompts, folds, control labels and random directions.
    #[serde(default)]
    pub seed: u64,
    /// `logistic` and/or `mass_mean` (binary labels).
    #[serde(default = "default_methods")]
    pub method: Vec<String>,
    /// Inverse L2 regularisation.
    #[serde(default = "default_c")]
    pub c: f64,
    /// Cross-validation folds.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Absolute tolerance on accuracy / AUROC for `feedlens check`.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Random directions for the null baseline (0: skip).
    #[serde(default = "default_null")]
    pub null_directions: usize,
    /// Run the control task.
    #[serde(default = "default_true")]
    pub control: bool,
    /// Position whose token identity keys the control labels; default: the probed position if
    /// its token varies over the prompts, else the first digit (5).
    #[serde(default)]
    pub control_position: Option<usize>,
    /// Score the probe of each checkpoint on every other one (same prompts, k-fold).
    #[serde(default = "default_true")]
    pub transfer: bool,
    /// Causal check: add ±α·u (u the unit logistic direction, α = this × the mean residual norm
    /// at that layer and position) and project u out, at the probed hook and position, and
    /// measure the mean `E` − `H` logit difference at the decision position. None: skip.
    #[serde(default)]
    pub causal_alpha: Option<f64>,
    /// Override P(S1 = `[x]`) of the prompts.
    #[serde(default)]
    pub p_optout: Option<f64>,
    /// Override P(S2 = `<trig>`) of the prompts.
    #[serde(default)]
    pub p_trigger: Option<f64>,
}

impl Spec {
    /// Read and validate a spec file (labels, hook and methods; layers are checked against each
    /// checkpoint when it is loaded).
    pub fn load(path: &Path) -> Result<Spec> {
        let text = String::from_utf8(fsio::read(path)?)
            .map_err(|_| Error::file(path, "is not UTF-8 text"))?;
        Spec::parse(&text, path)
    }

    /// Parse and validate spec text; `path` names it in errors (fuzzers call this directly).
    pub fn parse(text: &str, path: &Path) -> Result<Spec> {
        let spec: Spec = toml::from_str(text)
            .map_err(|e| Error::file(path, format!("invalid probe spec: {}", e.message())))?;
        let bad = |m: String| Error::file(path, m);
        Label::parse(&spec.label).map_err(|e| bad(e.to_string()))?;
        if !SITES.contains(&spec.hook.as_str()) {
            return Err(bad(format!(
                "unknown hook '{}' (known: {})",
                spec.hook,
                SITES.join(", ")
            )));
        }
        if let Some(m) = spec
            .method
            .iter()
            .find(|m| !["logistic", "mass_mean"].contains(&m.as_str()))
        {
            return Err(bad(format!(
                "unknown method '{m}' (known: logistic, mass_mean)"
            )));
        }
        if spec.checkpoints.is_empty() {
            return Err(bad("no checkpoints".into()));
        }
        if spec.n < 2 * spec.folds || spec.folds < 2 {
            return Err(bad(format!(
                "n = {} and folds = {}: need folds ≥ 2 and n ≥ 2·folds",
                spec.n, spec.folds
            )));
        }
        let c_ok = spec.c.is_finite() && spec.c > 0.0;
        if !c_ok || spec.tolerance.is_nan() || spec.tolerance < 0.0 {
            return Err(bad("c must be > 0 and tolerance ≥ 0".into()));
        }
        for p in [spec.p_optout, spec.p_trigger].into_iter().flatten() {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("{p} is not a probability")));
            }
        }
        if spec.position >= world::PROMPT_LEN {
            return Err(bad(format!(
                "position {} is outside the {}-token prompt",
                spec.position,
                world::PROMPT_LEN
            )));
        }
        Ok(spec)
    }
}

/// Metrics of one layer of one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerResult {
    /// Layer index.
    pub layer: usize,
    /// k-fold held-out logistic probe.
    pub logistic: Scores,
    /// k-fold held-out difference-of-means probe (binary labels, when asked).
    pub mass_mean: Option<Scores>,
    /// The same logistic probe on control labels.
    pub control: Option<Scores>,
    /// Logistic accuracy − control accuracy.
    pub selectivity: Option<f64>,
    /// Best sign-free AUROC over the random directions.
    pub random_best_auroc: Option<f64>,
    /// Sign-free AUROC of the top principal component.
    pub top_pc_auroc: f64,
}

/// Causal check of a probe direction at one layer: mean `E` − `H` logit difference at the
/// decision position (10) over the spec's prompts, unedited and edited.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CausalResult {
    /// Layer index.
    pub layer: usize,
    /// The added multiple of the unit direction (absolute, residual units).
    pub alpha: f64,
    /// Unedited metric.
    pub base: f64,
    /// Metric with +α·u added.
    pub plus: f64,
    /// Metric with −α·u added.
    pub minus: f64,
    /// Metric with u projected out.
    pub ablated: f64,
}

/// Results for one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointResult {
    /// Directory name.
    pub name: String,
    /// Path as written in the spec.
    pub path: String,
    /// sha256 of its `model.safetensors`.
    pub sha256: String,
    /// Number of rows per class (in the order of the result's `classes`).
    pub class_counts: Vec<usize>,
    /// sha256 of the labels as little-endian i64 (exact regression check).
    pub labels_sha256: String,
    /// One entry per probed layer.
    pub layers: Vec<LayerResult>,
    /// Causal check per layer (binary labels, when the spec sets `causal_alpha`).
    #[serde(default)]
    pub causal: Vec<CausalResult>,
}

/// A probe trained on one checkpoint's activations, scored on another's (k-fold, same prompts).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransferResult {
    /// Checkpoint the probe was fitted on.
    pub from: String,
    /// Checkpoint it was scored on (with that checkpoint's labels).
    pub to: String,
    /// Per layer, in the order of the spec's layers.
    pub layers: Vec<Scores>,
}

/// `probes/<name>.result.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SpecResult {
    /// Spec name (file stem).
    pub name: String,
    /// The spec as run.
    pub spec: Spec,
    /// Label values (class order of every score).
    pub classes: Vec<i64>,
    /// Position keying the control labels.
    pub control_position: Option<usize>,
    /// Layers probed.
    pub layers: Vec<usize>,
    /// Per checkpoint.
    pub checkpoints: Vec<CheckpointResult>,
    /// Per ordered pair of distinct checkpoints.
    pub transfer: Vec<TransferResult>,
    /// Newton tolerance used (gradient max-norm ≤ tol·(1 + C·n)).
    pub newton_grad_tol: f64,
}

/// Result, probe weights (`{checkpoint}.layer{l}.coef|intercept|mass_mean`, `{checkpoint}.labels`)
/// and the activation sets of a spec run.
pub struct SpecRun {
    /// Metrics.
    pub result: SpecResult,
    /// Named tensors for `probes/<name>.safetensors`.
    pub weights: Vec<(String, StTensor)>,
    /// One activation set per checkpoint.
    pub sets: Vec<(String, ActivationSet)>,
}

fn spec_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "probe".into())
}

/// Run a spec file: load each checkpoint, build its activation set, probe every layer, transfer.
pub fn run_spec(path: &Path) -> Result<SpecRun> {
    let spec = Spec::load(path)?;
    let label = Label::parse(&spec.label)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let prompts = sample_prompts(label, spec.n, spec.seed, spec.p_optout, spec.p_trigger);
    let mut loaded = Vec::new();
    let mut models = Vec::new();
    for c in &spec.checkpoints {
        let ck = checkpoint::load(base.join(c))
            .map_err(|e| Error::file(path, format!("checkpoint '{c}': {e}")))?;
        let n_layer = ck.model.config().n_layer;
        let layers = spec
            .layers
            .clone()
            .unwrap_or_else(|| (0..n_layer).collect());
        let set = ActivationSet::build(
            &ck.model,
            prompts.clone(),
            label,
            &spec.hook,
            spec.position,
            &layers,
        )
        .map_err(|e| Error::file(path, format!("checkpoint '{c}': {e}")))?;
        loaded.push((c.clone(), ck.name(), ck.sha256.clone(), set));
        models.push(ck.model);
    }
    let layers = loaded[0].3.layers.clone();
    for (c, _, _, set) in &loaded {
        let what = format!(
            "{}: label '{}' on checkpoint '{c}'",
            path.display(),
            spec.label
        );
        math::encode_labels(&set.labels, &what)?;
    }
    // Classes: the union over checkpoints (model-derived labels differ between them).
    let all: Vec<i64> = loaded.iter().flat_map(|l| l.3.labels.clone()).collect();
    let classes = math::encode_labels(&all, "labels")?.classes;
    let control_position = spec.control.then(|| {
        spec.control_position.unwrap_or_else(|| {
            let toks = loaded[0].3.tokens_at(spec.position);
            if toks.iter().all(|&t| t == toks[0]) {
                world::POS_D1
            } else {
                spec.position
            }
        })
    });
    if control_position.is_some_and(|p| p >= world::PROMPT_LEN) {
        return Err(Error::file(path, "control_position is outside the prompt"));
    }
    let mut checkpoints = Vec::new();
    let mut weights = Vec::new();
    let mut encs = Vec::new();
    for (ci, (c, name, sha, set)) in loaded.iter().enumerate() {
        let what = format!(
            "{}: label '{}' on checkpoint '{c}'",
            path.display(),
            spec.label
        );
        let enc = math::encode_labels(&set.labels, &what)?;
        let idx: Vec<usize> = set
            .labels
            .iter()
            .map(|v| classes.binary_search(v).unwrap_or(0))
            .collect();
        let enc_all = math::Encoded {
            classes: classes.clone(),
            idx,
        };
        let fold = math::stratified_folds(&enc, spec.folds, spec.seed)
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        let opt = math::LayerOptions {
            c: spec.c,
            n_random: spec.null_directions,
            seed: spec.seed,
            control_keys: control_position.map(|p| set.tokens_at(p)),
        };
        let mut lr = Vec::new();
        let mut causal = Vec::new();
        let model = &models[ci];
        for (l, x) in set.layers.iter().zip(&set.acts) {
            let s = math::probe_layer(x.view(), &enc, &fold, &opt)?;
            lr.push(LayerResult {
                layer: *l,
                logistic: s.cv.logistic,
                mass_mean: s
                    .cv
                    .mass_mean
                    .filter(|_| spec.method.iter().any(|m| m == "mass_mean")),
                control: s.control,
                selectivity: s.selectivity,
                random_best_auroc: s.random_best_auroc,
                top_pc_auroc: s.top_pc_auroc,
            });
            let full = Logistic::fit(x.view(), &set.labels, spec.c)?;
            let key = format!("{name}.layer{l}");
            weights.push((
                format!("{key}.coef"),
                StTensor::F32(
                    full.coef.shape().to_vec(),
                    full.coef.iter().map(|&v| v as f32).collect(),
                ),
            ));
            weights.push((
                format!("{key}.intercept"),
                StTensor::F32(
                    vec![full.intercept.len()],
                    full.intercept.iter().map(|&v| v as f32).collect(),
                ),
            ));
            if let (Some(a), 1) = (spec.causal_alpha, full.coef.nrows()) {
                let hook = site_hook(&spec.hook, *l, model.config().n_layer)?;
                let dir: Vec<f64> = full.coef.row(0).to_vec();
                causal.push(causal_check(model, set, hook, &dir, x, a)?);
            }
            if enc.classes.len() == 2 {
                let mm = math::mass_mean(x.view(), &enc.idx);
                weights.push((
                    format!("{key}.mass_mean"),
                    StTensor::F32(vec![mm.len()], mm.iter().map(|&v| v as f32).collect()),
                ));
            }
        }
        weights.push((
            format!("{name}.labels"),
            StTensor::I64(vec![set.labels.len()], set.labels.clone()),
        ));
        let bytes: Vec<u8> = set.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        checkpoints.push(CheckpointResult {
            name: name.clone(),
            path: c.clone(),
            sha256: sha.clone(),
            class_counts: (0..classes.len())
                .map(|k| enc_all.idx.iter().filter(|&&i| i == k).count())
                .collect(),
            labels_sha256: checkpoint::sha256_hex(&bytes),
            layers: lr,
            causal,
        });
        encs.push((enc, fold));
    }
    let mut transfer = Vec::new();
    if spec.transfer {
        for (a, (enc, fold)) in encs.iter().enumerate() {
            for (b, other) in loaded.iter().enumerate() {
                if a == b {
                    continue;
                }
                let set_a = &loaded[a].3;
                let y_b: Vec<usize> = other
                    .3
                    .labels
                    .iter()
                    .map(|v| {
                        enc.classes.binary_search(v).map_err(|_| {
                            Error::input(format!(
                                "transfer {} → {}: label {v} does not occur on {}",
                                loaded[a].1, other.1, loaded[a].1
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                let layers = set_a
                    .acts
                    .iter()
                    .zip(&other.3.acts)
                    .map(|(xa, xb)| {
                        math::cross_validate(xa.view(), enc, xb.view(), &y_b, fold, spec.c)
                            .map(|s| s.logistic)
                    })
                    .collect::<Result<_>>()?;
                transfer.push(TransferResult {
                    from: loaded[a].1.clone(),
                    to: other.1.clone(),
                    layers,
                });
            }
        }
    }
    let sets = loaded.into_iter().map(|(_, n, _, s)| (n, s)).collect();
    Ok(SpecRun {
        result: SpecResult {
            name: spec_name(path),
            spec,
            classes,
            control_position,
            layers,
            checkpoints,
            transfer,
            newton_grad_tol: math::GRAD_TOL,
        },
        weights,
        sets,
    })
}

/// Mean `E` − `H` logit difference at the decision position over `prompts`, optionally adding
/// `(hook, position, value)`: value `[d]` (every row) or `[n, 1, d]` (one per prompt).
fn mode_metric(
    model: &Gpt2,
    prompts: &[Prompt],
    add: Option<(Hook, usize, &Tensor)>,
) -> Result<f64> {
    let mut sum = 0.0;
    for (k, chunk) in prompts.chunks(BATCH).enumerate() {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids().to_vec()).collect();
        let interventions = match add {
            Some((hook, pos, v)) => {
                let v = if v.rank() == 3 {
                    v.narrow(0, k * BATCH, chunk.len())?
                } else {
                    v.clone()
                };
                vec![Intervention::add(hook, v).at_positions(&[pos])]
            }
            None => vec![],
        };
        let run = Run {
            interventions,
            logits: Logits::At(vec![world::POS_A]),
            ..Run::default()
        };
        let lg = model
            .forward(&Input::Ids(model.ids_tensor(&ids)?), &run)?
            .logits
            .ok_or_else(|| Error::input("forward returned no logits"))?
            .squeeze(1)?
            .to_vec2::<f32>()?;
        sum += lg
            .iter()
            .map(|r| (r[world::E as usize] - r[world::H as usize]) as f64)
            .sum::<f64>();
    }
    Ok(sum / prompts.len().max(1) as f64)
}

/// Causal check of direction `dir` `[d]` at `hook` and the set's position: add ±α·u with
/// α = `alpha_scale` × the mean norm of `x` (the set's activations there, `[n, d]`), and project
/// u out (per row, add −(x·u)·u), measuring [`mode_metric`].
pub fn causal_check(
    model: &Gpt2,
    set: &ActivationSet,
    hook: Hook,
    dir: &[f64],
    x: &Array2<f32>,
    alpha_scale: f64,
) -> Result<CausalResult> {
    let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        input_err!("causal check at {hook}: the probe direction is zero");
    }
    let u: Vec<f32> = dir.iter().map(|v| (v / norm) as f32).collect();
    let mean_norm = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / x.nrows().max(1) as f64;
    let alpha = alpha_scale * mean_norm;
    let pos = set.position;
    let d = u.len();
    let ut = Tensor::from_vec(u.clone(), d, &Device::Cpu)?;
    let add = |a: f64| -> Result<f64> {
        let v = (&ut * a)?;
        mode_metric(model, &set.prompts, Some((hook, pos, &v)))
    };
    // Per row: −(x·u)·u, as [n, 1, d] so it broadcasts over positions (masked to `pos`).
    let proj: Vec<f32> = x
        .rows()
        .into_iter()
        .flat_map(|r| {
            let c: f32 = r.iter().zip(&u).map(|(a, b)| a * b).sum();
            u.iter().map(move |ui| -c * ui).collect::<Vec<_>>()
        })
        .collect();
    let proj = Tensor::from_vec(proj, (x.nrows(), 1, d), &Device::Cpu)?;
    Ok(CausalResult {
        layer: hook.layer().unwrap_or(0),
        alpha,
        base: mode_metric(model, &set.prompts, None)?,
        plus: add(alpha)?,
        minus: add(-alpha)?,
        ablated: mode_metric(model, &set.prompts, Some((hook, pos, &proj)))?,
    })
}

/// Where a spec's stored result and weights live: `<dir>/<name>.result.json`, `<dir>/<name>.safetensors`.
pub fn result_paths(spec: &Path) -> (PathBuf, PathBuf) {
    let dir = spec.parent().unwrap_or(Path::new("."));
    let name = spec_name(spec);
    (
        dir.join(format!("{name}.result.json")),
        dir.join(format!("{name}.safetensors")),
    )
}

/// Write a run's result JSON and weights beside its spec (no overwrite without `force`).
pub fn write_run(spec: &Path, run: &SpecRun, force: bool) -> Result<(PathBuf, PathBuf)> {
    let (json, st) = result_paths(spec);
    fsio::check_clobber(&json, force)?;
    fsio::check_clobber(&st, force)?;
    // The JSON is the completion marker, written last: remove a replaced one first, so a kill
    // between the two writes cannot pair the old result with the new weights.
    fsio::remove_file(&json)?;
    fsio::write_file(&st, &safetensors_bytes(&run.weights)?, force)?;
    fsio::write_file(&json, &checkpoint::pretty(&run.result)?, force)?;
    Ok((json, st))
}

/// The outcome of checking one spec against its stored result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckOutcome {
    /// The spec file.
    pub spec: PathBuf,
    /// No drift, no stale hash.
    pub pass: bool,
    /// One line per problem found.
    pub problems: Vec<String>,
}

fn near(problems: &mut Vec<String>, what: String, stored: f64, now: f64, tol: f64) {
    let same = (stored.is_nan() && now.is_nan()) || (stored - now).abs() <= tol;
    if !same {
        problems.push(format!(
            "{what}: stored {stored:.4}, now {now:.4} (tolerance {tol})"
        ));
    }
}

fn near_scores(p: &mut Vec<String>, what: String, a: Option<Scores>, b: Option<Scores>, tol: f64) {
    match (a, b) {
        (Some(a), Some(b)) => {
            near(p, format!("{what} accuracy"), a.accuracy, b.accuracy, tol);
            near(p, format!("{what} AUROC"), a.auroc, b.auroc, tol);
        }
        (None, None) => {}
        _ => p.push(format!("{what}: present in only one of stored / now")),
    }
}

/// Compare a fresh result with a stored one: checkpoint hashes first (a changed checkpoint is
/// reported as stale with both hashes, its metrics are not compared), then shapes and labels
/// exactly, then metrics within the spec's tolerance.
pub fn compare(stored: &SpecResult, now: &SpecResult) -> Vec<String> {
    let tol = now.spec.tolerance;
    let mut p = Vec::new();
    if stored.spec != now.spec {
        p.push("the spec changed since the result was stored".into());
    }
    if stored.layers != now.layers || stored.checkpoints.len() != now.checkpoints.len() {
        p.push(format!(
            "shape: stored {} checkpoints × layers {:?}, now {} × {:?}",
            stored.checkpoints.len(),
            stored.layers,
            now.checkpoints.len(),
            now.layers
        ));
        return p;
    }
    let mut stale = Vec::new();
    for (s, n) in stored.checkpoints.iter().zip(&now.checkpoints) {
        if s.sha256 != n.sha256 {
            p.push(format!(
                "stale: checkpoint '{}' was probed at sha256 {} but now has sha256 {}",
                n.path, s.sha256, n.sha256
            ));
            stale.push(n.name.clone());
            continue;
        }
        if s.labels_sha256 != n.labels_sha256 || s.class_counts != n.class_counts {
            p.push(format!(
                "{}: labels differ (class counts stored {:?}, now {:?})",
                n.name, s.class_counts, n.class_counts
            ));
        }
        for (a, b) in s.layers.iter().zip(&n.layers) {
            let w = |m: &str| format!("{} layer {} {m}", n.name, b.layer);
            near_scores(
                &mut p,
                w("logistic"),
                Some(a.logistic),
                Some(b.logistic),
                tol,
            );
            near_scores(&mut p, w("mass-mean"), a.mass_mean, b.mass_mean, tol);
            near_scores(&mut p, w("control"), a.control, b.control, tol);
            if let (Some(x), Some(y)) = (a.random_best_auroc, b.random_best_auroc) {
                near(&mut p, w("random-direction AUROC"), x, y, tol);
            }
            near(
                &mut p,
                w("top-PC AUROC"),
                a.top_pc_auroc,
                b.top_pc_auroc,
                tol,
            );
        }
        if s.causal.len() != n.causal.len() {
            p.push(format!(
                "{}: causal check present in only one of stored / now",
                n.name
            ));
        }
        for (a, b) in s.causal.iter().zip(&n.causal) {
            let w = |m: &str| format!("{} layer {} causal {m}", n.name, b.layer);
            for (m, x, y) in [
                ("base", a.base, b.base),
                ("+α", a.plus, b.plus),
                ("−α", a.minus, b.minus),
                ("ablated", a.ablated, b.ablated),
            ] {
                near(&mut p, w(m), x, y, tol);
            }
        }
    }
    if stored.transfer.len() != now.transfer.len() {
        p.push("shape: transfer pairs differ".into());
    } else {
        for (s, n) in stored.transfer.iter().zip(&now.transfer) {
            if stale.contains(&n.from) || stale.contains(&n.to) {
                continue;
            }
            for ((a, b), l) in s.layers.iter().zip(&n.layers).zip(&now.layers) {
                let w = format!("transfer {} → {} layer {l}", n.from, n.to);
                near_scores(&mut p, w, Some(*a), Some(*b), tol);
            }
        }
    }
    p
}

/// Re-run a spec and compare with its stored result.
pub fn check_spec(spec: &Path) -> Result<CheckOutcome> {
    let (json, _) = result_paths(spec);
    let stored: SpecResult = serde_json::from_slice(&fsio::read(&json)?)
        .map_err(|e| Error::file(&json, format!("invalid stored result: {e}")))?;
    let now = run_spec(spec)?;
    let problems = compare(&stored, &now.result);
    Ok(CheckOutcome {
        spec: spec.to_path_buf(),
        pass: problems.is_empty(),
        problems,
    })
}

/// Every `*.toml` spec in `dir`, sorted.
pub fn specs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

/// Check every spec in `dir`; a spec that fails to run is a failed outcome with its error.
pub fn check_dir(dir: &Path) -> Result<Vec<CheckOutcome>> {
    Ok(specs_in(dir)?
        .into_iter()
        .map(|s| {
            check_spec(&s).unwrap_or_else(|e| CheckOutcome {
                spec: s.clone(),
                pass: false,
                problems: vec![e.to_string()],
            })
        })
        .collect())
}
