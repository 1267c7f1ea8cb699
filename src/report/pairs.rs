//! The pairs file (`checkpoints/pairs.toml`): which checkpoints are compared, over which
//! contrast and metric, over which training seeds, and where their directories are. Parsing
//! and checking only.

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
    /// Training seeds: checkpoints are `seed-S/NAME` beside the file (default: none, `NAME`).
    seeds: Option<Vec<u64>>,
    /// Checkpoints of the ptx opt-out at several anchoring strengths (their manifests'
    /// `ptx_coef`): the report's opt-out leakage dose–response.
    anchoring: Option<Vec<String>>,
    /// Pairs the report diffs with crosscoders (trained by `feedlens crosscoder zoo`).
    crosscoders: Option<Vec<String>>,
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
    /// The training seeds the pairs run over (`seeds = [0, 1, 2]`: checkpoint `NAME` of seed S
    /// is `seed-S/NAME`); `None` when the file names plain directories (one run each).
    pub seeds: Option<Vec<u64>>,
    /// Checkpoints of the anchoring dose–response (`anchoring = [...]`; dropped by `--only`).
    pub anchoring: Vec<String>,
    /// Pairs with a crosscoder section (`crosscoders = [...]`, names of `[[pair]]`s; `--only`
    /// keeps those it keeps).
    pub crosscoders: Vec<String>,
    /// Whether the file names `base` itself (then it must be a checkpoint in every seed; the
    /// default `base` is used only when it exists).
    pub base_given: bool,
}

/// The most seeds a pairs file may name (each seed is a whole zoo).
pub const MAX_SEEDS: usize = 64;

impl Pairs {
    /// Read and check a pairs file: unique names, known contrasts, each contrast with its
    /// metric (docs/DESIGN.md §3). Checkpoint directories are checked by [`Pairs::check`].
    pub fn load(path: &Path) -> Result<Pairs> {
        Pairs::parse(&Pairs::read_text(path)?, path)
    }

    /// The text of a pairs file (small, UTF-8), for [`Pairs::parse`] or, when it names
    /// prompts, `prompts::PromptPairs::parse`.
    pub fn read_text(path: &Path) -> Result<String> {
        String::from_utf8(fsio::read_small(path)?)
            .map_err(|_| Error::file(path, "is not UTF-8 text"))
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
            if let Some(c) = p.name.chars().find(|c| c.is_control()) {
                return Err(bad(format!("the name holds a control character ({:?})", c)));
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
        if let Some(seeds) = &raw.seeds {
            if seeds.is_empty() {
                return Err(Error::file(path, "seeds = []: name at least one seed"));
            }
            if seeds.len() > MAX_SEEDS {
                return Err(Error::file(
                    path,
                    format!("seeds: {} seeds, at most {MAX_SEEDS}", seeds.len()),
                ));
            }
            for (i, s) in seeds.iter().enumerate() {
                if seeds[..i].contains(s) {
                    return Err(Error::file(
                        path,
                        format!("seeds: seed {s} is listed twice"),
                    ));
                }
            }
        }
        let crosscoders = raw.crosscoders.unwrap_or_default();
        for (i, c) in crosscoders.iter().enumerate() {
            if !pairs.iter().any(|p| &p.name == c) {
                return Err(Error::file(
                    path,
                    format!("crosscoders: no pair '{c}' in the file"),
                ));
            }
            if crosscoders[..i].contains(c) {
                return Err(Error::file(
                    path,
                    format!("crosscoders: pair '{c}' is listed twice"),
                ));
            }
        }
        Ok(Pairs {
            crosscoders,
            path: path.to_path_buf(),
            base_given: raw.base.is_some(),
            base: raw.base.unwrap_or_else(|| "base".into()),
            pairs,
            seeds: raw.seeds,
            anchoring: raw.anchoring.unwrap_or_default(),
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
        self.crosscoders
            .retain(|c| kept.iter().any(|p| &p.name == c));
        self.pairs = kept;
        self.anchoring.clear();
        Ok(self)
    }

    /// Keep only these seeds (`report --seeds`); each must be one of the file's.
    pub fn only_seeds(mut self, keep: &[u64]) -> Result<Pairs> {
        if keep.is_empty() {
            return Ok(self);
        }
        let Some(have) = &self.seeds else {
            input_err!(
                "--seeds: {} names no seeds (its checkpoints are plain directories)",
                self.path.display()
            );
        };
        if let Some(s) = keep.iter().find(|s| !have.contains(s)) {
            let known: Vec<String> = have.iter().map(|s| s.to_string()).collect();
            input_err!(
                "--seeds: seed {s} is not in {} (seeds {})",
                self.path.display(),
                known.join(", ")
            );
        }
        self.seeds = Some(keep.to_vec());
        Ok(self)
    }

    /// The runs: each seed (`Some`), or one run of plain directories (`None`).
    pub fn runs(&self) -> Vec<Option<u64>> {
        match &self.seeds {
            Some(s) => s.iter().map(|&s| Some(s)).collect(),
            None => vec![None],
        }
    }

    /// The key of checkpoint `name` in run `seed`: `seed-S/NAME`, or `NAME`.
    pub fn key(seed: Option<u64>, name: &str) -> String {
        match seed {
            Some(s) => format!("seed-{s}/{name}"),
            None => name.to_string(),
        }
    }

    /// The directory of checkpoint `name` in run `seed`.
    pub fn dir_of(&self, seed: Option<u64>, name: &str) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(Pairs::key(seed, name))
    }

    /// Everything a report reads: the pairs file and every checkpoint directory it names (base,
    /// anchoring, both sides of each pair), in every seed. A report's output may be none of
    /// these, nor contain them.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone()];
        for seed in self.runs() {
            let names = std::iter::once(&self.base)
                .chain(&self.anchoring)
                .chain(self.pairs.iter().flat_map(|p| [&p.a, &p.b]));
            v.extend(names.map(|c| self.dir_of(seed, c)));
        }
        v.sort();
        v.dedup();
        v
    }

    /// Every checkpoint the pairs (and `anchoring`) name, in every seed, must be a directory
    /// holding `model.safetensors`; the error names the pair, the seed and the directory.
    pub fn check(&self) -> Result<()> {
        for seed in self.runs() {
            if self.base_given {
                self.check_dir(seed, &self.base, "base")?;
            }
            for c in &self.anchoring {
                self.check_dir(seed, c, "anchoring")?;
            }
            for p in &self.pairs {
                for c in [&p.a, &p.b] {
                    self.check_dir(seed, c, &format!("pair '{}'", p.name))?;
                }
            }
        }
        Ok(())
    }

    /// Checkpoint `c` of run `seed` must be a directory holding `model.safetensors`; the error
    /// starts with `who` (the pair, or `anchoring`) and names the seed and the directory.
    fn check_dir(&self, seed: Option<u64>, c: &str, who: &str) -> Result<()> {
        let d = self.dir_of(seed, c);
        if d.join("model.safetensors").is_file() {
            return Ok(());
        }
        let of_seed = seed.map(|s| format!(" of seed {s}")).unwrap_or_default();
        Err(Error::file(
            &self.path,
            format!(
                "{who}: checkpoint '{c}'{of_seed} not found ({} is not a checkpoint directory)",
                d.display()
            ),
        ))
    }
}
