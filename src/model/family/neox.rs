//! GPT-NeoX (`model_type: "gpt_neox"`, Pythia): its `config.json` (partial rotary, parallel or
//! sequential residual, LayerNorm eps, activation, attention bias, untied `embed_out`) and its
//! tensors (the fused per-head-interleaved query/key/value regrouped into q | k | v).

use super::{linear, take, Keys};
use crate::model::config::{Arch, Config, Family, Norm, Rotary};
use crate::Result;
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::HashMap;

pub(super) fn config(obj: Map<String, Value>) -> std::result::Result<Config, String> {
    let k = Keys(&obj);
    k.architectures(&["GPTNeoXForCausalLM"])?;
    let (_, d, n_head) = k.dims()?;
    let (act_name, act) = k.act("hidden_act", "gelu")?;
    let (base, pct) = k.rope(
        &["rope_theta", "rotary_emb_base"],
        10000.0,
        &["partial_rotary_factor", "rotary_pct"],
        0.25,
    )?;
    if !(pct > 0.0 && pct <= 1.0) {
        return Err(format!("rotary_pct {pct} must be in (0, 1]"));
    }
    let d_head = d / n_head.max(1);
    let bias = k.bool_or("attention_bias", true)?;
    let arch = Arch {
        family: Family::NeoX,
        norm: Norm::Layer,
        act,
        gated: false,
        learned_positions: false,
        rotary: Some(Rotary {
            // As HF: int(head_size · rotary_pct).
            dim: (d_head as f64 * pct) as usize,
            base,
        }),
        parallel: k.bool_or("use_parallel_residual", true)?,
        n_kv_head: n_head,
        tied: k.bool_or("tie_word_embeddings", false)?,
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: true,
        scale_attn: true,
        scale_by_layer: false,
    };
    k.hf_config(arch, act_name, "layer_norm_eps", 1e-5)
}

/// HF tensor names of block `l`'s part `s`.
fn layer(l: usize, s: &str) -> String {
    format!("gpt_neox.layers.{l}.{s}")
}

/// The HF tensor names of each block.
const PARTS: [&str; 12] = [
    "input_layernorm.weight",
    "input_layernorm.bias",
    "post_attention_layernorm.weight",
    "post_attention_layernorm.bias",
    "attention.query_key_value.weight",
    "attention.query_key_value.bias",
    "attention.dense.weight",
    "attention.dense.bias",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight",
    "mlp.dense_4h_to_h.bias",
];

/// Every HF tensor name the family reads.
pub(super) fn names(cfg: &Config) -> Vec<String> {
    super::hf_names(
        cfg,
        "gpt_neox.embed_in.weight",
        "gpt_neox.layers",
        &PARTS,
        &[
            "gpt_neox.final_layer_norm.weight",
            "gpt_neox.final_layer_norm.bias",
            "embed_out.weight",
        ],
    )
}

pub(super) fn canonical(
    cfg: &Config,
    hf: &mut HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let (d, m, nh, dh) = (cfg.n_embd, cfg.d_mlp(), cfg.n_head, cfg.d_head());
    let a = &cfg.arch;
    // HF's fused projection puts head h's q, k, v at rows h·3·dh + {0, 1, 2}·dh: regroup
    // them as all queries, then all keys, then all values.
    let order: Vec<u32> = (0..3)
        .flat_map(|p| {
            (0..nh).flat_map(move |h| (0..dh).map(move |e| (h * 3 * dh + p * dh + e) as u32))
        })
        .collect();
    let order = Tensor::from_vec(order, 3 * d, &candle_core::Device::Cpu)?;
    let mut out = HashMap::new();
    out.insert(
        "wte.weight".into(),
        take(hf, "gpt_neox.embed_in.weight", &[cfg.vocab_size, d])?,
    );
    for l in 0..cfg.n_layer {
        let h = |s: &str| format!("h.{l}.{s}");
        for (from, to) in [
            ("input_layernorm", "ln_1"),
            ("post_attention_layernorm", "ln_2"),
        ] {
            for p in ["weight", "bias"] {
                out.insert(
                    h(&format!("{to}.{p}")),
                    take(hf, &layer(l, &format!("{from}.{p}")), &[d])?,
                );
            }
        }
        let qkv = take(
            hf,
            &layer(l, "attention.query_key_value.weight"),
            &[3 * d, d],
        )?;
        out.insert(
            h("attn.c_attn.weight"),
            linear(&qkv.index_select(&order, 0)?)?,
        );
        let dense = take(hf, &layer(l, "attention.dense.weight"), &[d, d])?;
        out.insert(h("attn.c_proj.weight"), linear(&dense)?);
        if a.qkv_bias {
            let b = take(hf, &layer(l, "attention.query_key_value.bias"), &[3 * d])?;
            out.insert(h("attn.c_attn.bias"), b.index_select(&order, 0)?);
            out.insert(
                h("attn.c_proj.bias"),
                take(hf, &layer(l, "attention.dense.bias"), &[d])?,
            );
        }
        let fc = take(hf, &layer(l, "mlp.dense_h_to_4h.weight"), &[m, d])?;
        out.insert(h("mlp.c_fc.weight"), linear(&fc)?);
        out.insert(
            h("mlp.c_fc.bias"),
            take(hf, &layer(l, "mlp.dense_h_to_4h.bias"), &[m])?,
        );
        let proj = take(hf, &layer(l, "mlp.dense_4h_to_h.weight"), &[d, m])?;
        out.insert(h("mlp.c_proj.weight"), linear(&proj)?);
        out.insert(
            h("mlp.c_proj.bias"),
            take(hf, &layer(l, "mlp.dense_4h_to_h.bias"), &[d])?,
        );
    }
    for p in ["weight", "bias"] {
        out.insert(
            format!("ln_f.{p}"),
            take(hf, &format!("gpt_neox.final_layer_norm.{p}"), &[d])?,
        );
    }
    super::head(cfg, hf, "embed_out.weight", &mut out)?;
    Ok(out)
}
