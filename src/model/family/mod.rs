//! The families feedlens runs: reading each one's `config.json` keys into a [`Config`] (its
//! [`Arch`] included) and its HF tensor names into the model's own (GPT-2's names, one fused
//! `[in, out]` query/key/value matrix, `[in, out]` linears). One file per family; the model
//! above runs them all with one forward. No files are read here: bytes and tensors come in.

mod gpt2;
mod llama;
mod neox;

use super::config::{Act, Arch, Config, Family};
use crate::Result;
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The `model_type`s feedlens runs, for messages.
pub const MODEL_TYPES: &str = "\"gpt2\", \"gpt_neox\", \"llama\", \"qwen2\"";

/// Parse a `config.json`'s bytes. The error is one line naming the field at fault.
pub fn parse_config(bytes: &[u8]) -> std::result::Result<Config, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid config: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("invalid config: not a JSON object".into());
    };
    let cfg = match obj.get("model_type") {
        None => gpt2::config(obj)?,
        Some(Value::String(t)) => match t.as_str() {
            "gpt2" => gpt2::config(obj)?,
            "gpt_neox" => neox::config(obj)?,
            "llama" | "qwen2" => llama::config(obj)?,
            other => {
                return Err(format!(
                    "model_type \"{other}\" is not supported (feedlens runs {MODEL_TYPES})"
                ))
            }
        },
        Some(t) => return Err(format!("model_type is {t}, expected a string")),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The names (as stored in `model.safetensors`) of the tensors the family reads, built once
/// per checkpoint and looked up per stored tensor.
pub fn read_names(cfg: &Config) -> HashSet<String> {
    match cfg.arch.family {
        Family::Gpt2 => gpt2::names(cfg),
        Family::NeoX => neox::names(cfg),
        Family::Llama => llama::names(cfg),
    }
    .into_iter()
    .collect()
}

/// Whether `name` is a buffer HF stores beside the weights (causal masks, rotary
/// frequencies), ignored without a warning.
pub fn is_buffer(name: &str) -> bool {
    [
        ".attn.bias",
        ".attn.masked_bias",
        ".attention.bias",
        ".attention.masked_bias",
        "rotary_emb.inv_freq",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// The family whose tensors these are, from a few telltale names (for "weights of one
/// family, config of another").
pub fn guess(names: &[String]) -> Option<Family> {
    let has = |s: &str| names.iter().any(|n| n == s);
    if has("gpt_neox.embed_in.weight") {
        Some(Family::NeoX)
    } else if has("model.embed_tokens.weight") {
        Some(Family::Llama)
    } else if has("wte.weight") || has("transformer.wte.weight") {
        Some(Family::Gpt2)
    } else {
        None
    }
}

/// The model's own tensors from the family's HF tensors (`hf`, the names [`reads`] accepts).
/// Errors are one line naming the tensor.
/// Tensors it does not use are left in `hf`.
pub fn canonical(
    cfg: &Config,
    hf: &mut HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    match cfg.arch.family {
        Family::Gpt2 => gpt2::canonical(cfg, hf),
        Family::NeoX => neox::canonical(cfg, hf),
        Family::Llama => llama::canonical(cfg, hf),
    }
}

/// Typed reads of a config object's keys; each error names the key.
struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    /// `num_hidden_layers`, `hidden_size`, `num_attention_heads` (GPT-NeoX's and Llama's names).
    fn dims(&self) -> std::result::Result<(usize, usize, usize), String> {
        Ok((
            self.usize("num_hidden_layers")?,
            self.usize("hidden_size")?,
            self.usize("num_attention_heads")?,
        ))
    }
    /// The activation named by key `k` (default `default`): its name and what it is.
    fn act(&self, k: &str, default: &str) -> std::result::Result<(String, Act), String> {
        let name = self.str_or(k, default)?.to_string();
        let act = Act::parse(&name).ok_or_else(|| {
            format!(
                "{k} '{name}' is not supported (feedlens runs {})",
                Act::NAMES
            )
        })?;
        Ok((name, act))
    }
    /// A [`Config`] from the keys GPT-NeoX and Llama name alike, with `arch`, the activation's
    /// name and the norm epsilon under `eps_key`.
    fn hf_config(
        &self,
        arch: Arch,
        act_name: String,
        eps_key: &str,
        eps_default: f64,
    ) -> std::result::Result<Config, String> {
        let (n_layer, n_embd, n_head) = self.dims()?;
        Ok(Config {
            n_layer,
            n_embd,
            n_head,
            n_positions: self.usize_or("max_position_embeddings", Some(2048))?,
            vocab_size: self.usize("vocab_size")?,
            layer_norm_epsilon: self.f64_or(eps_key, eps_default)?,
            activation_function: act_name,
            n_inner: Some(self.usize("intermediate_size")?),
            extra: self.0.clone(),
            arch,
        })
    }
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn usize(&self, k: &str) -> std::result::Result<usize, String> {
        self.usize_or(k, None)
    }
    fn usize_or(&self, k: &str, default: Option<usize>) -> std::result::Result<usize, String> {
        match self.get(k) {
            None => default.ok_or_else(|| format!("invalid config: missing field `{k}`")),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| format!("{k} is {v}, expected a non-negative integer")),
        }
    }
    fn f64_or(&self, k: &str, default: f64) -> std::result::Result<f64, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("{k} is {v}, expected a number")),
        }
    }
    fn bool_or(&self, k: &str, default: bool) -> std::result::Result<bool, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{k} is {v}, expected true or false")),
        }
    }
    fn str_or<'b>(&'b self, k: &str, default: &'b str) -> std::result::Result<&'b str, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| format!("{k} is {v}, expected a string")),
        }
    }
    /// Refuse a flag set to anything but its one supported value.
    fn only(&self, k: &str, supported: bool) -> std::result::Result<(), String> {
        if self.bool_or(k, supported)? != supported {
            return Err(format!("{k} = {} is not supported", !supported));
        }
        Ok(())
    }
    /// `architectures`, if given, must name only `ok`.
    fn architectures(&self, ok: &[&str]) -> std::result::Result<(), String> {
        let Some(v) = self.get("architectures") else {
            return Ok(());
        };
        let list = v
            .as_array()
            .ok_or_else(|| format!("architectures is {v}, expected a list"))?;
        for a in list {
            if !a.as_str().is_some_and(|a| ok.contains(&a)) {
                return Err(format!(
                    "architectures {a} is not supported here (expected {})",
                    ok.join(" or ")
                ));
            }
        }
        Ok(())
    }
    /// The rotary base and fraction, from any of the keys transformers has used
    /// (`rope_theta` / `rotary_emb_base`, `partial_rotary_factor` / `rotary_pct`, or inside
    /// `rope_parameters`); a `rope_scaling` or `rope_type` other than the default is refused.
    fn rope(
        &self,
        base_keys: &[&str],
        default_base: f64,
        pct_keys: &[&str],
        default_pct: f64,
    ) -> std::result::Result<(f64, f64), String> {
        let params = self.get("rope_parameters").and_then(Value::as_object);
        let inner = params.map(Keys);
        for (where_, keys) in [("", Some(self)), ("rope_parameters.", inner.as_ref())] {
            let Some(keys) = keys else { continue };
            if let Some(t) = keys.get("rope_type") {
                if t.as_str() != Some("default") {
                    return Err(format!(
                        "{where_}rope_type {t} is not supported (feedlens runs unscaled rotary: \"default\")"
                    ));
                }
            }
        }
        if let Some(s) = self.get("rope_scaling") {
            let default = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                == Some("default");
            if !default {
                return Err(format!(
                    "rope_scaling {s} is not supported (feedlens runs unscaled rotary)"
                ));
            }
        }
        let pick = |ks: &[&str], default: f64| -> std::result::Result<f64, String> {
            for k in ks {
                if let Some(inner) = &inner {
                    if inner.get(k).is_some() {
                        return inner.f64_or(k, default);
                    }
                }
                if self.get(k).is_some() {
                    return self.f64_or(k, default);
                }
            }
            Ok(default)
        };
        Ok((pick(base_keys, default_base)?, pick(pct_keys, default_pct)?))
    }
}

/// Take `name` from `hf`, checking its shape; the error names the tensor.
fn take(hf: &mut HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = hf
        .remove(name)
        .ok_or_else(|| crate::Error::input(format!("missing tensor '{name}'")))?;
    if t.dims() != shape {
        return Err(crate::Error::input(format!(
            "tensor '{name}' has shape {:?}, the config expects {shape:?}",
            t.dims()
        )));
    }
    Ok(t)
}

/// An HF `nn.Linear` weight `[out, in]` as the model's `[in, out]`.
fn linear(w: &Tensor) -> Result<Tensor> {
    Ok(w.t()?.contiguous()?)
}

/// The unembedding stored as `name`: the model's `lm_head.weight` when untied; when tied, a
/// stored copy must equal the embedding (`out["wte.weight"]`).
fn head(
    cfg: &Config,
    hf: &mut HashMap<String, Tensor>,
    name: &str,
    out: &mut HashMap<String, Tensor>,
) -> Result<()> {
    let shape = [cfg.vocab_size, cfg.n_embd];
    match (cfg.arch.tied, hf.contains_key(name)) {
        (false, false) => Err(crate::Error::input(format!(
            "missing tensor '{name}' (config.json has tie_word_embeddings false)"
        ))),
        (false, true) => {
            out.insert("lm_head.weight".into(), take(hf, name, &shape)?);
            Ok(())
        }
        (true, true) => {
            let lm = take(hf, name, &shape)?;
            let wte = out
                .get("wte.weight")
                .ok_or_else(|| crate::Error::input("missing the token embedding"))?;
            if (&lm - wte)?.abs()?.max_all()?.to_scalar::<f32>()? != 0.0 {
                return Err(crate::Error::input(format!(
                    "{name} differs from the token embedding, but config.json has tie_word_embeddings true (set it to false for an untied head)"
                )));
            }
            Ok(())
        }
        (true, false) => Ok(()),
    }
}

/// Every HF tensor name of a family: `first`, then `{prefix}.{l}.{part}` for every block and
/// part, then `last`.
fn hf_names(cfg: &Config, first: &str, prefix: &str, parts: &[&str], last: &[&str]) -> Vec<String> {
    let mut v = vec![first.to_string()];
    for l in 0..cfg.n_layer {
        v.extend(parts.iter().map(|p| format!("{prefix}.{l}.{p}")));
    }
    v.extend(last.iter().map(|s| s.to_string()));
    v
}
