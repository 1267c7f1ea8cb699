//! The pairs file (`checkpoints/pairs.toml`): which checkpoints are compared, over which
//! contrast and metric, and where their directories are. Parsing and checking only.

use crate::io::fsio;
use crate::lab::world::{Contrast, MetricKind};
use crate::view::html;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    contrast: Option<Contrast>,
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
    /// metric (docs/DESIGN.md §3). Checkpoint directories are checked by [`Pairs::check`].
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
            if let Some(c) = p.contrast.filter(|c| c.metric() != p.metric) {
                return Err(bad(format!(
                    "contrast '{c}' is measured with metric '{}' (docs/DESIGN.md §3)",
                    c.metric()
                )));
            }
            pairs.push(PairSpec {
                name: p.name,
                a: p.a,
                b: p.b,
                contrast: p.contrast,
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
