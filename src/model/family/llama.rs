//! Llama-style models (`model_type: "llama"` or `"qwen2"`: SmolLM, TinyLlama, Qwen2): their
//! `config.json` (RMSNorm, rotary θ, grouped-query heads, SwiGLU, q/k/v(/o) biases, tied or
//! untied head; rope scaling and sliding windows are refused) and their tensors (separate
//! q/k/v projections fused into one, `nn.Linear` weights as `[in, out]`).

use super::{linear, take, Keys};
use crate::model::config::{Arch, Config, Family, Norm, Rotary};
use crate::Result;
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::HashMap;

pub(super) fn config(obj: Map<String, Value>) -> std::result::Result<Config, String> {
    let k = Keys(&obj);
    let qwen = k.str_or("model_type", "llama")? == "qwen2";
    k.architectures(if qwen {
        &["Qwen2ForCausalLM"]
    } else {
        &["LlamaForCausalLM"]
    })?;
    let (_, d, n_head) = k.dims()?;
    let n_kv_head = k.usize_or("num_key_value_heads", Some(n_head))?;
    if let Some(hd) = k.get("head_dim") {
        if hd.as_u64() != Some((d / n_head.max(1)) as u64) {
            return Err(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads = {}: not supported",
                d / n_head.max(1)
            ));
        }
    }
    let (act_name, act) = k.act("hidden_act", "silu")?;
    let (base, pct) = k.rope(&["rope_theta"], 10000.0, &["partial_rotary_factor"], 1.0)?;
    if pct != 1.0 {
        return Err(format!(
            "partial_rotary_factor {pct} is not supported for {} (feedlens runs 1.0)",
            if qwen { "qwen2" } else { "llama" }
        ));
    }
    if qwen {
        k.only("use_sliding_window", false)?;
    }
    let (qkv_bias, o_bias) = if qwen {
        (true, false)
    } else {
        let b = k.bool_or("attention_bias", false)?;
        (b, b)
    };
    let arch = Arch {
        family: Family::Llama,
        norm: Norm::Rms,
        act,
        gated: true,
        learned_positions: false,
        rotary: Some(Rotary {
            dim: d / n_head.max(1),
            base,
        }),
        parallel: false,
        n_kv_head,
        tied: k.bool_or("tie_word_embeddings", false)?,
        qkv_bias,
        o_bias,
        mlp_bias: k.bool_or("mlp_bias", false)?,
        scale_attn: true,
        scale_by_layer: false,
    };
    k.hf_config(arch, act_name, "rms_norm_eps", 1e-6)
}

fn layer(l: usize, s: &str) -> String {
    format!("model.layers.{l}.{s}")
}

/// The HF tensor names of each block.
const PARTS: [&str; 16] = [
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.bias",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.bias",
    "mlp.down_proj.bias",
];

/// Every HF tensor name the family reads.
pub(super) fn names(cfg: &Config) -> Vec<String> {
    super::hf_names(
        cfg,
        "model.embed_tokens.weight",
        "model.layers",
        &PARTS,
        &["model.norm.weight", "lm_head.weight"],
    )
}

pub(super) fn canonical(
    cfg: &Config,
    hf: &mut HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let (d, m, dh) = (cfg.n_embd, cfg.d_mlp(), cfg.d_head());
    let a = &cfg.arch;
    let (nq, nkv) = (cfg.n_head * dh, a.n_kv_head * dh);
    let mut out = HashMap::new();
    out.insert(
        "wte.weight".to_string(),
        take(hf, "model.embed_tokens.weight", &[cfg.vocab_size, d])?,
    );
    for l in 0..cfg.n_layer {
        let h = |s: &str| format!("h.{l}.{s}");
        let mut t = |s: &str, shape: &[usize]| take(hf, &layer(l, s), shape);
        out.insert(h("ln_1.weight"), t("input_layernorm.weight", &[d])?);
        out.insert(
            h("ln_2.weight"),
            t("post_attention_layernorm.weight", &[d])?,
        );
        let q = t("self_attn.q_proj.weight", &[nq, d])?;
        let k = t("self_attn.k_proj.weight", &[nkv, d])?;
        let v = t("self_attn.v_proj.weight", &[nkv, d])?;
        out.insert(
            h("attn.c_attn.weight"),
            linear(&Tensor::cat(&[q, k, v], 0)?)?,
        );
        if a.qkv_bias {
            let q = t("self_attn.q_proj.bias", &[nq])?;
            let k = t("self_attn.k_proj.bias", &[nkv])?;
            let v = t("self_attn.v_proj.bias", &[nkv])?;
            out.insert(h("attn.c_attn.bias"), Tensor::cat(&[q, k, v], 0)?);
        }
        out.insert(
            h("attn.c_proj.weight"),
            linear(&t("self_attn.o_proj.weight", &[d, nq])?)?,
        );
        if a.o_bias {
            out.insert(h("attn.c_proj.bias"), t("self_attn.o_proj.bias", &[d])?);
        }
        out.insert(
            h("mlp.c_gate.weight"),
            linear(&t("mlp.gate_proj.weight", &[m, d])?)?,
        );
        out.insert(
            h("mlp.c_fc.weight"),
            linear(&t("mlp.up_proj.weight", &[m, d])?)?,
        );
        out.insert(
            h("mlp.c_proj.weight"),
            linear(&t("mlp.down_proj.weight", &[d, m])?)?,
        );
        if a.mlp_bias {
            out.insert(h("mlp.c_gate.bias"), t("mlp.gate_proj.bias", &[m])?);
            out.insert(h("mlp.c_fc.bias"), t("mlp.up_proj.bias", &[m])?);
            out.insert(h("mlp.c_proj.bias"), t("mlp.down_proj.bias", &[d])?);
        }
    }
    out.insert(
        "ln_f.weight".to_string(),
        take(hf, "model.norm.weight", &[d])?,
    );
    super::head(cfg, hf, "lm_head.weight", &mut out)?;
    Ok(out)
}
