//! A dictionary's folder on disk. An SAE is saved in SAELens's layout (`cfg.json`,
//! `sae_weights.safetensors` with `W_enc` `[d_in, d_sae]`, `W_dec` `[d_sae, d_in]`, `b_enc`,
//! `b_dec`, `threshold`; architecture `jumprelu`, so `sae_lens.SAE.load_from_disk` reads it);
//! a crosscoder as `crosscoder.safetensors` (`W_enc` `[n_models, d, d_sae]`, `b_enc`
//! `[d_sae]`, `W_dec` `[d_sae, n_models, d]`, `b_dec` `[n_models, d]`, `threshold` `[d_sae]`,
//! `scale` `[n_models]`). Both carry `feedlens-dictionary.json`, the folder's marker: what was
//! trained on what. Owns the layouts (bytes in and out); writing is `fsio`'s.

use super::collect::Point;
use super::{Dictionary, TrainConfig, TrainStats};
use crate::analysis::site::Site;
use crate::io::checkpoint::{self, StTensor};
use crate::io::fsio;
use crate::lab::world;
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The marker file of a dictionary folder.
pub const MANIFEST: &str = "feedlens-dictionary.json";
/// SAELens's config file.
pub const SAE_CFG: &str = "cfg.json";
/// SAELens's weights file.
pub const SAE_WEIGHTS: &str = "sae_weights.safetensors";
/// A crosscoder's weights file.
pub const CROSSCODER_WEIGHTS: &str = "crosscoder.safetensors";

/// One model a dictionary was trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The checkpoint's name (its directory's last component).
    pub name: String,
    /// The directory as given.
    pub dir: String,
    /// sha256 of its `model.safetensors`.
    pub sha256: String,
}

/// `feedlens-dictionary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The models, in encoder order (one for an SAE; A then B for a crosscoder).
    pub models: Vec<Source>,
    /// The hook, by its TransformerLens name.
    pub hook: String,
    /// The site of the hook.
    pub site: Site,
    /// Its layer.
    pub layer: usize,
    /// The one position read, or null for every position of the episodes.
    pub position: Option<usize>,
    /// Corpus episodes trained on, and their seed.
    pub episodes: usize,
    /// Seed of the corpus episodes.
    pub corpus_seed: u64,
    /// The training settings.
    pub train: TrainConfig,
    /// What training measured.
    pub stats: TrainStats,
    /// The feedlens that wrote it.
    pub feedlens_version: String,
}

impl Manifest {
    /// The manifest of a dictionary trained on `cks` (directories as given in `dirs`) over
    /// corpus `c` with `train`, which measured `stats`.
    pub fn new(
        cks: &[&crate::io::checkpoint::Checkpoint],
        dirs: &[&str],
        c: &super::diffing::Corpus,
        train: TrainConfig,
        stats: TrainStats,
    ) -> Result<Manifest> {
        let first = cks
            .first()
            .ok_or_else(|| Error::input("a dictionary needs at least one checkpoint"))?;
        let hook = c.point.hook(first.model.config().n_layer)?;
        Ok(Manifest {
            models: cks
                .iter()
                .zip(dirs)
                .map(|(ck, d)| Source {
                    name: ck.name(),
                    dir: d.to_string(),
                    sha256: ck.sha256.clone(),
                })
                .collect(),
            hook: hook.to_string(),
            site: c.point.site,
            layer: c.point.layer,
            position: c.point.position,
            episodes: c.episodes,
            corpus_seed: c.seed,
            train,
            stats,
            feedlens_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    /// The models' directories for a dictionary in folder `dict_dir`: each as recorded when
    /// it names a directory (from the working directory), else the first found under an
    /// ancestor of `dict_dir` (the report's crosscoders record theirs relative to the pairs
    /// file's folder, two levels above `crosscoders/seed-S/PAIR`), else as recorded.
    pub fn model_dirs(&self, dict_dir: &Path) -> Vec<std::path::PathBuf> {
        self.models
            .iter()
            .map(|s| {
                let given = std::path::PathBuf::from(&s.dir);
                if given.is_dir() || given.is_absolute() {
                    return given;
                }
                dict_dir
                    .ancestors()
                    .map(|a| a.join(&given))
                    .find(|p| p.is_dir())
                    .unwrap_or(given)
            })
            .collect()
    }

    /// Where the dictionary reads.
    pub fn point(&self) -> Point {
        Point {
            site: self.site,
            layer: self.layer,
            position: self.position,
        }
    }
}

fn f32_tensor(shape: &[usize], v: impl IntoIterator<Item = f32>) -> StTensor {
    StTensor::F32(shape.to_vec(), v.into_iter().collect())
}

/// SAELens's `cfg.json` for a one-model dictionary.
fn sae_cfg(dict: &Dictionary, man: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "architecture": "jumprelu",
        "d_in": dict.d,
        "d_sae": dict.d_sae(),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": man.models[0].name,
            "hook_name": man.hook,
            "hook_head_index": null,
            "prepend_bos": false,
            "context_size": world::SEQ_LEN,
            "dataset_path": "feedlens toy-world corpus episodes",
            "sae_lens_training_version": null,
        },
    })
}

/// The files of `dict`'s folder, in write order (the marker last).
pub fn files(dict: &Dictionary, man: &Manifest) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let (l, d, m) = (dict.d_sae(), dict.d, dict.n_models);
    let mut out = Vec::new();
    if m == 1 {
        let t = vec![
            (
                "W_enc".to_string(),
                f32_tensor(&[d, l], dict.w_enc.iter().copied()),
            ),
            (
                "W_dec".to_string(),
                f32_tensor(&[l, d], dict.w_dec.iter().copied()),
            ),
            (
                "b_enc".to_string(),
                f32_tensor(&[l], dict.b_enc.iter().copied()),
            ),
            (
                "b_dec".to_string(),
                f32_tensor(&[d], dict.b_dec.iter().copied()),
            ),
            (
                "threshold".to_string(),
                f32_tensor(&[l], dict.threshold.iter().copied()),
            ),
        ];
        out.push((SAE_CFG, checkpoint::pretty(&sae_cfg(dict, man))?));
        out.push((SAE_WEIGHTS, checkpoint::serialize(&t, None)?));
    } else {
        // W_enc rows are model-major already ([m·d, l] = [m, d, l]); W_dec columns too.
        let t = vec![
            (
                "W_enc".to_string(),
                f32_tensor(&[m, d, l], dict.w_enc.iter().copied()),
            ),
            (
                "W_dec".to_string(),
                f32_tensor(&[l, m, d], dict.w_dec.iter().copied()),
            ),
            (
                "b_enc".to_string(),
                f32_tensor(&[l], dict.b_enc.iter().copied()),
            ),
            (
                "b_dec".to_string(),
                f32_tensor(&[m, d], dict.b_dec.iter().copied()),
            ),
            (
                "threshold".to_string(),
                f32_tensor(&[l], dict.threshold.iter().copied()),
            ),
            (
                "scale".to_string(),
                f32_tensor(&[m], dict.scale.iter().copied()),
            ),
        ];
        out.push((CROSSCODER_WEIGHTS, checkpoint::serialize(&t, None)?));
    }
    out.push((MANIFEST, checkpoint::pretty(man)?));
    Ok(out)
}

/// Save `dict` with its manifest (and any `extra` files) as the folder `dir`, atomically; an
/// existing folder only with `force`, and only one feedlens wrote.
pub fn save(
    dir: &Path,
    dict: &Dictionary,
    man: &Manifest,
    extra: &[(&str, Vec<u8>)],
    force: bool,
) -> Result<()> {
    fsio::check_clobber(dir, force)?;
    fsio::check_own_dir(dir, &[MANIFEST])?;
    let mut fs = files(dict, man)?;
    let marker = fs.pop();
    let mut refs: Vec<(&str, &[u8])> = fs.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    refs.extend(extra.iter().map(|(n, b)| (*n, b.as_slice())));
    if let Some((n, b)) = &marker {
        refs.push((n, b.as_slice()));
    }
    fsio::write_dir(dir, &refs, force)
}

/// Load a dictionary folder written by [`save`]; errors name the file and what is wrong.
pub fn load(dir: &Path) -> Result<(Dictionary, Manifest)> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "no such dictionary folder"));
    }
    let mp = dir.join(MANIFEST);
    let man: Manifest = serde_json::from_slice(&fsio::read_at_most(&mp, fsio::MAX_SMALL)?)
        .map_err(|e| Error::file(&mp, format!("not a feedlens dictionary manifest: {e}")))?;
    let m = man.models.len();
    if !(1..=2).contains(&m) {
        return Err(Error::file(
            &mp,
            format!("names {m} models; a dictionary has 1 or 2"),
        ));
    }
    let wp = dir.join(if m == 1 {
        SAE_WEIGHTS
    } else {
        CROSSCODER_WEIGHTS
    });
    let bytes = fsio::read(&wp)?;
    let tensors: BTreeMap<String, StTensor> =
        checkpoint::deserialize(&bytes, &wp)?.into_iter().collect();
    let get = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f32>)> {
        match tensors.get(name) {
            Some(StTensor::F32(s, v)) if s.len() == rank => Ok((s.clone(), v.clone())),
            Some(_) => Err(Error::file(
                &wp,
                format!("tensor '{name}' is not a rank-{rank} f32 tensor"),
            )),
            None => Err(Error::file(&wp, format!("has no tensor '{name}'"))),
        }
    };
    let shape_err = |name: &str, s: &[usize]| {
        Error::file(
            &wp,
            format!("tensor '{name}' has shape {s:?}, which does not fit the others"),
        )
    };
    let (es, w_enc) = get("W_enc", if m == 1 { 2 } else { 3 })?;
    let (d, l) = (es[es.len() - 2], es[es.len() - 1]);
    if m > 1 && es[0] != m {
        return Err(shape_err("W_enc", &es));
    }
    let (ds, w_dec) = get("W_dec", if m == 1 { 2 } else { 3 })?;
    if ds.first() != Some(&l) || ds.last() != Some(&d) || (m > 1 && ds[1] != m) {
        return Err(shape_err("W_dec", &ds));
    }
    let vec_of = |name: &str, len: usize| -> Result<Vec<f32>> {
        let (s, v) = get(name, 1)?;
        if s[0] != len {
            return Err(shape_err(name, &s));
        }
        Ok(v)
    };
    let (bs, b_dec) = get("b_dec", if m == 1 { 1 } else { 2 })?;
    if bs.iter().product::<usize>() != m * d {
        return Err(shape_err("b_dec", &bs));
    }
    let scale = if m == 1 {
        vec![1.0]
    } else {
        vec_of("scale", m)?
    };
    let to2 = |r: usize, c: usize, v: Vec<f32>| {
        Array2::from_shape_vec((r, c), v).map_err(|e| Error::file(&wp, e))
    };
    let dict = Dictionary {
        n_models: m,
        d,
        w_enc: to2(m * d, l, w_enc)?,
        b_enc: Array1::from(vec_of("b_enc", l)?),
        w_dec: to2(l, m * d, w_dec)?,
        b_dec: Array1::from(b_dec),
        threshold: Array1::from(vec_of("threshold", l)?),
        scale,
    };
    if dict
        .w_enc
        .iter()
        .chain(dict.w_dec.iter())
        .chain(dict.b_enc.iter())
        .chain(dict.b_dec.iter())
        .any(|v| !v.is_finite())
    {
        return Err(Error::file(&wp, "holds NaN or infinite weights"));
    }
    Ok((dict, man))
}
