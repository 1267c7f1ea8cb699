//! GPT-2 (`model_type: "gpt2"`): its `config.json` fields (every one that changes the forward
//! pass is honoured or refused) and its tensors, already in the model's names once the
//! `transformer.` prefix is gone. An `lm_head.weight` is the untied head, or must equal `wte`.

use super::Keys;
use crate::model::config::{Act, Arch, Config};
use crate::{Error, Result};
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A GPT-2 `config.json` object → [`Config`].
pub(super) fn config(obj: Map<String, Value>) -> std::result::Result<Config, String> {
    let k = Keys(&obj);
    k.architectures(&["GPT2LMHeadModel"])?;
    // Flags GPT-2 configs carry must be booleans: a string "true" is not read as false.
    let scale_attn = k.bool_or("scale_attn_weights", true)?;
    let scale_by_layer = k.bool_or("scale_attn_by_inverse_layer_idx", false)?;
    // Upcasting to f32 before the product changes nothing in a model that runs in f32; its
    // reordering (the scale applied to q before q·kᵀ) changes only the rounding.
    k.bool_or("reorder_and_upcast_attn", false)?;
    k.only("add_cross_attention", false)?;
    let tied = k.bool_or("tie_word_embeddings", true)?;
    let act = k.str_or("activation_function", "gelu_new")?.to_string();
    let mut cfg: Config =
        serde_json::from_value(Value::Object(obj)).map_err(|e| format!("invalid config: {e}"))?;
    let act = Act::parse(&act).ok_or_else(|| {
        format!(
            "activation_function '{act}' is not supported (feedlens runs {})",
            Act::NAMES
        )
    })?;
    cfg.arch = Arch {
        act,
        tied,
        scale_attn,
        scale_by_layer,
        ..Arch::gpt2(cfg.n_head)
    };
    Ok(cfg)
}

/// The stored name without `transformer.`.
fn short(name: &str) -> &str {
    name.strip_prefix("transformer.").unwrap_or(name)
}

/// Every stored name the family reads: the model's own names and `lm_head.weight`, each with
/// or without `transformer.`.
pub(super) fn names(cfg: &Config) -> Vec<String> {
    crate::model::Model::tensor_shapes(cfg)
        .into_iter()
        .map(|(n, _)| n)
        .chain(["lm_head.weight".to_string()])
        .flat_map(|n| [format!("transformer.{n}"), n])
        .collect()
}

pub(super) fn canonical(
    cfg: &Config,
    hf: &mut HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut head = HashMap::new();
    for (name, t) in hf.drain() {
        let s = short(&name).to_string();
        if s == "lm_head.weight" {
            head.insert(s, t);
        } else if out.insert(s.clone(), t).is_some() {
            return Err(Error::input(format!(
                "tensor '{s}' is stored twice (with and without 'transformer.')"
            )));
        }
    }
    super::head(cfg, &mut head, "lm_head.weight", &mut out)?;
    Ok(out)
}
