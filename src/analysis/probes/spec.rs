//! Probe specs (`probes/NAME.toml`): parsing and validation, running one into its stored
//! result (`NAME.result.json`) and weights (`NAME.safetensors`), and writing them. The result
//! is the regression baseline that `check` compares against. Must not draw or print.

use super::causal::{causal_check, CausalResult};
use super::labels::{sample_prompts, Label};
use super::layers::{self, LayerResult};
use super::math::{self, Logistic, Scores};
use super::sets::ActivationSet;
use crate::analysis::site::Site;
use crate::io::checkpoint::{self, StTensor};
use crate::io::fsio;
use crate::lab::world;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

named! {
    /// A probe kind a spec asks for.
    pub enum ProbeMethod("method") {
        /// L2 logistic regression.
        Logistic = "logistic",
        /// The difference-of-means direction (binary labels).
        MassMean = "mass_mean",
    }
}

fn default_site() -> Site {
    Site::ResidPost
}
fn default_position() -> usize {
    world::POS_A
}
fn default_n() -> usize {
    2000
}
fn default_methods() -> Vec<ProbeMethod> {
    vec![ProbeMethod::Logistic, ProbeMethod::MassMean]
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
    /// What to decode.
    pub label: Label,
    /// The site read (one of [`Site::PROBED`]); default `resid_post`.
    #[serde(default = "default_site")]
    pub hook: Site,
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
    pub method: Vec<ProbeMethod>,
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

/// The most prompts a spec may ask for (each is one row of every layer's activations).
pub const MAX_N: usize = 1_000_000;

/// The most random directions of the null baseline a spec may ask for.
pub const MAX_NULL: usize = 100_000;

impl Spec {
    /// Read and validate a spec file (labels, hook and methods; layers are checked against each
    /// checkpoint when it is loaded).
    pub fn load(path: &Path) -> Result<Spec> {
        let text = String::from_utf8(fsio::read_small(path)?)
            .map_err(|_| Error::file(path, "is not UTF-8 text"))?;
        Spec::parse(&text, path)
    }

    /// Parse and validate spec text; `path` names it in errors (fuzzers call this directly).
    pub fn parse(text: &str, path: &Path) -> Result<Spec> {
        let spec: Spec = toml::from_str(text)
            .map_err(|e| Error::file(path, format!("invalid probe spec: {}", e.message())))?;
        let bad = |m: String| Error::file(path, m);
        spec.hook
            .check_in(&Site::PROBED, "hook")
            .map_err(|e| bad(e.to_string()))?;
        if spec.checkpoints.is_empty() {
            return Err(bad("no checkpoints".into()));
        }
        // Results and tensors are keyed by each checkpoint's folder name and layer: no two may
        // share one.
        let last = |c: &str| {
            Path::new(c)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| c.to_string())
        };
        for (i, c) in spec.checkpoints.iter().enumerate() {
            if let Some(d) = spec.checkpoints[..i].iter().find(|d| last(d) == last(c)) {
                return Err(bad(if d == c {
                    format!("checkpoint '{c}' is listed twice")
                } else {
                    format!(
                        "checkpoints '{d}' and '{c}' share the folder name '{}', which names their results: rename one",
                        last(c)
                    )
                }));
            }
        }
        if let Some(ls) = &spec.layers {
            for (i, l) in ls.iter().enumerate() {
                if ls[..i].contains(l) {
                    return Err(bad(format!("layers: layer {l} is listed twice")));
                }
            }
        }
        if spec.n > MAX_N {
            return Err(bad(format!("n = {}: at most {MAX_N} prompts", spec.n)));
        }
        if spec.null_directions > MAX_NULL {
            return Err(bad(format!(
                "null_directions = {}: at most {MAX_NULL}",
                spec.null_directions
            )));
        }
        if let Some(a) = spec
            .causal_alpha
            .filter(|a| !(a.is_finite() && a.abs() <= 1e6))
        {
            return Err(bad(format!(
                "causal_alpha = {a}: must be a finite number of size ≤ 1e6"
            )));
        }
        if spec.n < 2 * spec.folds || spec.folds < 2 {
            return Err(bad(format!(
                "n = {} and folds = {}: need folds ≥ 2 and n ≥ 2·folds",
                spec.n, spec.folds
            )));
        }
        let c_ok = spec.c.is_finite() && spec.c > 0.0;
        if !c_ok || !spec.tolerance.is_finite() || spec.tolerance < 0.0 {
            return Err(bad("c must be > 0 and tolerance ≥ 0 (both finite)".into()));
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
    /// Their 95 % bootstrap intervals (report runs; probe specs store none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ci: Vec<layers::ScoresEst>,
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
    let label = spec.label;
    let base = path.parent().unwrap_or(Path::new("."));
    let prompts = sample_prompts(label, spec.n, spec.seed, spec.p_optout, spec.p_trigger);
    let mut loaded = Vec::new();
    let mut models = Vec::new();
    for c in &spec.checkpoints {
        let ck = checkpoint::load(base.join(c))
            .map_err(|e| Error::file(path, format!("checkpoint '{c}': {e}")))?;
        let n_layer = ck.model.config().n_layer;
        crate::budget::check(
            &format!("{}: n = {}", path.display(), spec.n),
            crate::budget::activations(
                ck.model.config(),
                spec.n as u64,
                spec.checkpoints.len() as u64,
            ),
        )?;
        let layers = spec
            .layers
            .clone()
            .unwrap_or_else(|| (0..n_layer).collect());
        let set = ActivationSet::build(
            &ck.model,
            prompts.clone(),
            label,
            spec.hook,
            spec.position,
            &layers,
        )
        .map_err(|e| Error::file(path, format!("checkpoint '{c}': {e}")))?;
        loaded.push((c.clone(), ck.name(), ck.sha256.clone(), set));
        models.push(ck.model);
    }
    let layers = loaded[0].3.layers.clone();
    let what = |c: &str| format!("{}: label '{label}' on checkpoint '{c}'", path.display());
    for (c, _, _, set) in &loaded {
        math::encode_labels(&set.labels, &what(c))?;
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
    let mut folded = Vec::new();
    for (ci, (c, name, sha, set)) in loaded.iter().enumerate() {
        let f = layers::fold(set, spec.folds, spec.seed, &what(c))?;
        let opt = math::LayerOptions {
            c: spec.c,
            n_random: spec.null_directions,
            seed: spec.seed,
            control_keys: control_position.map(|p| set.tokens_at(p)),
        };
        let mass_mean = spec.method.contains(&ProbeMethod::MassMean);
        let lr = layers::layer_results(set, &f, &opt, mass_mean, None)?;
        let mut causal = Vec::new();
        let model = &models[ci];
        for (l, x) in set.layers.iter().zip(&set.acts) {
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
                let hook = spec.hook.hook_in(*l, model.config().n_layer)?;
                let dir: Vec<f64> = full.coef.row(0).to_vec();
                causal.push(causal_check(model, set, hook, &dir, x, a)?);
            }
            if f.enc.classes.len() == 2 {
                let mm = math::mass_mean(x.view(), &f.enc.idx);
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
            // In the order of the union of classes.
            class_counts: classes
                .iter()
                .map(|k| set.labels.iter().filter(|v| *v == k).count())
                .collect(),
            labels_sha256: checkpoint::sha256_hex(&bytes),
            layers: lr,
            causal,
        });
        folded.push(f);
    }
    let mut transfer = Vec::new();
    if spec.transfer {
        for (a, f) in folded.iter().enumerate() {
            for (b, other) in loaded.iter().enumerate() {
                if a == b {
                    continue;
                }
                let (from, to) = (&loaded[a].1, &other.1);
                let (layers, _) = layers::transfer(&loaded[a].3, f, &other.3, spec.c, None)?
                    .ok_or_else(|| {
                        Error::input(format!(
                            "transfer {from} → {to}: {to} has a label that does not occur on {from}"
                        ))
                    })?;
                transfer.push(TransferResult {
                    from: from.clone(),
                    to: to.clone(),
                    layers,
                    ci: Vec::new(),
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

/// Where a spec's stored result and weights live: `<dir>/<name>.result.json`, `<dir>/<name>.safetensors`.
pub fn result_paths(spec: &Path) -> (PathBuf, PathBuf) {
    let dir = spec.parent().unwrap_or(Path::new("."));
    let name = spec_name(spec);
    (
        dir.join(format!("{name}.result.json")),
        dir.join(format!("{name}.safetensors")),
    )
}

/// A run's weights and result JSON with their paths beside the spec, in the order they are
/// written: the JSON is the completion marker, last.
pub fn run_files(spec: &Path, run: &SpecRun) -> Result<[(PathBuf, Vec<u8>); 2]> {
    let (json, st) = result_paths(spec);
    Ok([
        (st, checkpoint::serialize(&run.weights, None)?),
        (json, checkpoint::pretty(&run.result)?),
    ])
}

/// Write a run's result JSON and weights beside its spec (no overwrite without `force`); the
/// old pair stays until both new files are whole on disk (`fsio::write_files`).
pub fn write_run(spec: &Path, run: &SpecRun, force: bool) -> Result<(PathBuf, PathBuf)> {
    let files = run_files(spec, run)?;
    let refs: Vec<(&Path, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    fsio::write_files(&refs, force)?;
    let [(st, _), (json, _)] = files;
    Ok((json, st))
}
