//! `feedlens check`: re-run a probe spec and compare the fresh result and weights with the
//! stored ones (checkpoint hashes, the whole structure, names and integers exactly, every other
//! number and every weight within the spec's tolerance).
//! Must not write files.

use super::spec::{result_paths, run_spec, CheckpointResult, SpecResult};
use crate::io::checkpoint::{self, StTensor};
use crate::io::fsio;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// At most this many problems are listed per spec; the rest are counted.
const MAX_PROBLEMS: usize = 25;

/// The problems found so far, capped at [`MAX_PROBLEMS`] lines plus a count of the rest.
#[derive(Default)]
struct Problems {
    lines: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, line: String) {
        if self.lines.len() < MAX_PROBLEMS {
            self.lines.push(line);
        } else {
            self.more += 1;
        }
    }
    fn done(mut self) -> Vec<String> {
        if self.more > 0 {
            self.lines
                .push(format!("… and {} more differences", self.more));
        }
        self.lines
    }
}

/// Two numbers agree: both NaN, or within `tol` of each other.
fn near(stored: f64, now: f64, tol: f64) -> bool {
    (stored.is_nan() && now.is_nan()) || (stored - now).abs() <= tol
}

/// A readable name for element `i` of the list under `key`: a checkpoint by its name, a layer
/// entry by its layer, a transfer by its direction, anything else by index.
fn element(key: &str, i: usize, v: &Value) -> String {
    let field = |k: &str| {
        v.get(k)
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
    };
    match (field("name"), field("layer"), field("from"), field("to")) {
        (Some(n), ..) if key == "checkpoints" => n,
        (_, Some(l), ..) => format!("layer {l}"),
        (_, _, Some(f), Some(t)) => format!("{key} {f} → {t}"),
        _ => format!("{key}[{i}]"),
    }
}

/// A scalar as its JSON text, a list or object by its kind.
fn show(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).to_string(),
        _ => v.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Walk the stored and fresh values together: the structure (keys, list lengths, kinds) must be
/// identical, strings, booleans and integers equal, other numbers within `tol`. `skip` names
/// subtrees not to compare (a stale checkpoint's).
fn walk(
    p: &mut Problems,
    at: &str,
    stored: &Value,
    now: &Value,
    tol: f64,
    skip: &dyn Fn(&Value) -> bool,
) {
    let at_or = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at} {k}")
        }
    };
    match (stored, now) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                p.push(format!("{}: stored, but no longer produced", at_or(k)));
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                p.push(format!("{}: missing from the stored result", at_or(k)));
            }
            for (k, x) in a {
                let Some(y) = b.get(k) else { continue };
                if let (Value::Array(xs), Value::Array(ys)) = (x, y) {
                    if xs.len() != ys.len() {
                        p.push(format!(
                            "{}: stored {} entries, now {}",
                            at_or(k),
                            xs.len(),
                            ys.len()
                        ));
                        continue;
                    }
                    for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                        if skip(y) {
                            continue;
                        }
                        let name = element(k, i, y);
                        walk(p, &at_or(&name), x, y, tol, skip);
                    }
                } else {
                    let name = if k == "auroc" { "AUROC" } else { k.as_str() };
                    walk(p, &at_or(name), x, y, tol, skip);
                }
            }
        }
        (Value::Array(xs), Value::Array(ys)) => {
            if xs.len() != ys.len() {
                p.push(format!(
                    "{at}: stored {} entries, now {}",
                    xs.len(),
                    ys.len()
                ));
                return;
            }
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                walk(p, &format!("{at}[{i}]"), x, y, tol, skip);
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let approx = a.is_f64() || b.is_f64();
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            if !approx && a != b {
                p.push(format!("{at}: stored {a}, now {b}"));
            } else if approx && !near(x, y, tol) {
                p.push(format!("{at}: stored {x:.4}, now {y:.4} (tolerance {tol})"));
            }
        }
        (a, b) if a == b => {}
        (a @ (Value::String(_) | Value::Bool(_)), b) if kind(a) == kind(b) => {
            p.push(format!("{at}: stored {a}, now {b}"))
        }
        (a, b) => p.push(format!("{at}: stored {}, now {}", show(a), show(b))),
    }
}

/// Compare a fresh result with a stored one: checkpoint hashes first (a changed checkpoint is
/// reported as stale with both hashes, and nothing computed from it is compared), then the
/// whole structure exactly (every key, every list length, layer indices, names, counts), then
/// every other number within the spec's tolerance.
pub fn compare(stored: &SpecResult, now: &SpecResult) -> Vec<String> {
    match serde_json::to_value(stored) {
        Ok(raw) => compare_raw(&raw, stored, now),
        Err(_) => vec!["cannot serialise a result for comparison".into()],
    }
}

/// [`compare`] with the stored result as read from its file (`raw`), so that a key the file
/// has but feedlens no longer writes, or one it lacks, is a difference too.
fn compare_raw(raw: &Value, stored: &SpecResult, now: &SpecResult) -> Vec<String> {
    let tol = now.spec.tolerance;
    let mut p = Problems::default();
    if stored.spec != now.spec {
        p.push("the spec changed since the result was stored".into());
    }
    for (s, n) in stale_pairs(stored, now) {
        p.push(format!(
            "stale: checkpoint '{}' was probed at sha256 {} but now has sha256 {}",
            n.path, s.sha256, n.sha256
        ));
    }
    let stale = stale_names(stored, now);
    let mut a = raw.clone();
    let Ok(mut b) = serde_json::to_value(now) else {
        p.push("cannot serialise a result for comparison".into());
        return p.done();
    };
    // The spec is compared above as a whole.
    for v in [&mut a, &mut b] {
        if let Some(o) = v.as_object_mut() {
            o.remove("spec");
        }
    }
    let is_stale = |v: &Value| {
        ["name", "from", "to"].iter().any(|k| {
            v.get(k)
                .and_then(Value::as_str)
                .is_some_and(|n| stale.iter().any(|s| s == n))
        })
    };
    walk(&mut p, "", &a, &b, tol, &is_stale);
    p.done()
}

/// The checkpoints (stored, now) whose weights changed since the result was stored.
fn stale_pairs<'a>(
    stored: &'a SpecResult,
    now: &'a SpecResult,
) -> impl Iterator<Item = (&'a CheckpointResult, &'a CheckpointResult)> {
    stored
        .checkpoints
        .iter()
        .zip(&now.checkpoints)
        .filter(|(s, n)| s.sha256 != n.sha256)
}

/// The names of [`stale_pairs`]' checkpoints: nothing computed from them is compared.
fn stale_names(stored: &SpecResult, now: &SpecResult) -> Vec<String> {
    stale_pairs(stored, now)
        .map(|(_, n)| n.name.clone())
        .collect()
}

/// Compare the stored probe weights with fresh ones: the same tensor names, dtypes and shapes;
/// i64 tensors equal, f32 values within `tol` relative to max(1, |stored|). Tensors of a stale
/// checkpoint (`{name}.…`) are not compared.
pub fn compare_weights<'a>(
    stored: &'a [(String, StTensor)],
    now: &'a [(String, StTensor)],
    tol: f64,
    stale: &[String],
) -> Vec<String> {
    let mut p = Problems::default();
    let skip = |n: &str| stale.iter().any(|s| n.starts_with(&format!("{s}.")));
    let by_name = |v: &'a [(String, StTensor)]| -> BTreeMap<&'a str, &'a StTensor> {
        v.iter().map(|(n, t)| (n.as_str(), t)).collect()
    };
    let (stored_by, now_by) = (by_name(stored), by_name(now));
    for (n, _) in stored
        .iter()
        .filter(|(n, _)| !skip(n) && !now_by.contains_key(n.as_str()))
    {
        p.push(format!(
            "weights: tensor '{n}' is stored but no longer produced"
        ));
    }
    for (n, b) in now.iter().filter(|(n, _)| !skip(n)) {
        let Some(&a) = stored_by.get(n.as_str()) else {
            p.push(format!(
                "weights: tensor '{n}' is missing from the stored file"
            ));
            continue;
        };
        match (a, b) {
            (StTensor::F32(sa, va), StTensor::F32(sb, vb)) if sa == sb => {
                let worst = va
                    .iter()
                    .zip(vb)
                    .map(|(&x, &y)| {
                        let (x, y) = (x as f64, y as f64);
                        if near(x, y, tol * x.abs().max(1.0)) {
                            0.0
                        } else if x.is_finite() && y.is_finite() {
                            (x - y).abs() / x.abs().max(1.0)
                        } else {
                            f64::INFINITY
                        }
                    })
                    .fold(0.0, f64::max);
                if worst > 0.0 {
                    p.push(format!(
                        "weights: tensor '{n}' differs by up to {worst:.4} (relative; tolerance {tol})"
                    ));
                }
            }
            (StTensor::I64(sa, va), StTensor::I64(sb, vb)) if sa == sb => {
                let k = va.iter().zip(vb).filter(|(x, y)| x != y).count();
                if k > 0 {
                    p.push(format!(
                        "weights: tensor '{n}' differs in {k} of {} values",
                        va.len()
                    ));
                }
            }
            (a, b) => p.push(format!(
                "weights: tensor '{n}' is stored as {}, now {}",
                describe(a),
                describe(b)
            )),
        }
    }
    p.done()
}

fn describe(t: &StTensor) -> String {
    match t {
        StTensor::F32(s, _) => format!("f32 {s:?}"),
        StTensor::I64(s, _) => format!("i64 {s:?}"),
    }
}

/// Re-run a spec and compare with its stored result and weights. A stored file that is missing,
/// unreadable or not what feedlens writes is a problem, not a pass.
pub fn check_spec(spec: &Path) -> Result<CheckOutcome> {
    let (json, st) = result_paths(spec);
    let bytes = fsio::read(&json)?;
    let invalid = |e: serde_json::Error| Error::file(&json, format!("invalid stored result: {e}"));
    let raw: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let stored: SpecResult = serde_json::from_value(raw.clone()).map_err(invalid)?;
    let weights = fsio::read(&st).and_then(|b| checkpoint::deserialize(&b, &st));
    let now = run_spec(spec)?;
    let mut problems = compare_raw(&raw, &stored, &now.result);
    match weights {
        Ok(w) => {
            let stale = stale_names(&stored, &now.result);
            problems.extend(compare_weights(
                &w,
                &now.weights,
                now.result.spec.tolerance,
                &stale,
            ));
        }
        Err(e) => problems.push(e.to_string()),
    }
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

/// Check every spec in `dir`; a spec that fails to run is a failed outcome with its error. A
/// folder with no specs is an error (there is nothing to vouch for).
pub fn check_dir(dir: &Path) -> Result<Vec<CheckOutcome>> {
    let specs = specs_in(dir)?;
    if specs.is_empty() {
        return Err(Error::file(dir, "no probe specs (*.toml) in this folder"));
    }
    Ok(specs
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
