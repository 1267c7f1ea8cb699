//! `Config`: the hyper-parameters the forward pass uses, in GPT-2's names (`n_layer`, `n_embd`,
//! ...) whatever the family, plus [`Arch`], what a family's block does differently (norm,
//! activation, rotary, parallel residual, grouped-query attention, biases, tied head). Reading
//! a family's own `config.json` keys into these is `family`'s; this file has no keys of its
//! own beyond GPT-2's, no weights and no files.

use serde::{Deserialize, Serialize};

/// The transformer family a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// HF `gpt2` (`GPT2LMHeadModel`).
    #[default]
    Gpt2,
    /// HF `gpt_neox` (`GPTNeoXForCausalLM`: Pythia).
    NeoX,
    /// HF `llama` / `qwen2` (`LlamaForCausalLM`, `Qwen2ForCausalLM`: SmolLM, TinyLlama, Qwen2).
    Llama,
}

impl Family {
    /// The family's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "GPT-2",
            Family::NeoX => "GPT-NeoX",
            Family::Llama => "Llama-style",
        }
    }
}

/// The normalisation before attention, MLP and unembedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Norm {
    /// LayerNorm with gain and bias (GPT-2, GPT-NeoX).
    #[default]
    Layer,
    /// RMSNorm with gain only (Llama).
    Rms,
}

/// The MLP's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Act {
    /// Tanh-approximated GELU (`gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`).
    #[default]
    GeluNew,
    /// Exact (erf) GELU (`gelu`).
    Gelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish` (Llama's SwiGLU gate).
    Silu,
}

impl Act {
    /// The HF `activation_function` / `hidden_act` names feedlens runs.
    pub const NAMES: &'static str =
        "gelu_new, gelu_fast, gelu_pytorch_tanh, gelu, relu, silu, swish";

    /// Parse an HF activation name.
    pub fn parse(s: &str) -> Option<Act> {
        Some(match s {
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Act::GeluNew,
            "gelu" => Act::Gelu,
            "relu" => Act::Relu,
            "silu" | "swish" => Act::Silu,
            _ => return None,
        })
    }
}

/// Rotary position embedding (GPT-NeoX / Llama "rotate half" layout) on the first `dim`
/// channels of every query and key head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rotary {
    /// Rotated channels per head (even, ≤ d_head).
    pub dim: usize,
    /// Base θ of the frequencies θ^(−2i/dim).
    pub base: f64,
}

/// What a family's forward pass does differently from GPT-2's (whose values are the default).
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// The family (names tensors and messages).
    pub family: Family,
    /// LayerNorm or RMSNorm.
    pub norm: Norm,
    /// The MLP activation.
    pub act: Act,
    /// A gated MLP (SwiGLU: `down(act(gate(x)) · up(x))`) instead of `proj(act(fc(x)))`.
    pub gated: bool,
    /// Learned absolute positions (`wpe`, GPT-2) or none.
    pub learned_positions: bool,
    /// Rotary embedding of queries and keys, if any.
    pub rotary: Option<Rotary>,
    /// Attention and MLP both read the block's input and add to it together (GPT-NeoX's
    /// `use_parallel_residual`): no `hook_resid_mid`.
    pub parallel: bool,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub n_kv_head: usize,
    /// Unembedding tied to the token embedding (else a separate `lm_head`).
    pub tied: bool,
    /// Bias on the query/key/value projection.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases in the MLP.
    pub mlp_bias: bool,
    /// Scores divided by √d_head (GPT-2's `scale_attn_weights`; always for the others).
    pub scale_attn: bool,
    /// Scores further divided by the layer number + 1 (GPT-2's `scale_attn_by_inverse_layer_idx`).
    pub scale_by_layer: bool,
}

impl Arch {
    /// GPT-2's architecture with `n_head` heads (tied, LayerNorm, gelu_new, learned positions).
    pub fn gpt2(n_head: usize) -> Arch {
        Arch {
            family: Family::Gpt2,
            norm: Norm::Layer,
            act: Act::GeluNew,
            gated: false,
            learned_positions: true,
            rotary: None,
            parallel: false,
            n_kv_head: n_head,
            tied: true,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            scale_attn: true,
            scale_by_layer: false,
        }
    }
}

/// The hyper-parameters feedlens uses, named as in an HF GPT-2 `config.json` whatever the
/// family, and read from / written to one for GPT-2. Fields it does not use are kept in
/// `extra` and written back unchanged; `arch` is derived from the file (see `family`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Residual stream width, d_model.
    pub n_embd: usize,
    /// Attention (query) heads per block; d_head = n_embd / n_head.
    pub n_head: usize,
    /// Context length (rows of the position embedding; the longest run of a rotary model).
    pub n_positions: usize,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// LayerNorm / RMSNorm epsilon (HF GPT-2 default 1e-5).
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// The activation's HF name (see [`Act::parse`]).
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// MLP width; None means 4·n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Every other config.json field, kept verbatim (for GPT-NeoX and Llama: the whole file).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// What the family's block does (derived, never written).
    #[serde(skip, default = "default_arch")]
    pub arch: Arch,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
/// A placeholder only: a `Config` read from JSON gets its real `arch` from
/// `family::parse_config`, the one way feedlens reads a config.
fn default_arch() -> Arch {
    Arch::gpt2(1)
}

impl Config {
    /// The first shape field in which `self` and `other` differ, as `"n_layer 4 vs 2"`; `None`
    /// when the two models have the same tensors (paired analyses need that).
    pub fn shape_difference(&self, other: &Config) -> Option<String> {
        if self.arch.family != other.arch.family {
            return Some(format!(
                "family {} vs {}",
                self.arch.family.name(),
                other.arch.family.name()
            ));
        }
        [
            ("n_layer", self.n_layer, other.n_layer),
            ("n_embd", self.n_embd, other.n_embd),
            ("n_head", self.n_head, other.n_head),
            ("n_kv_head", self.arch.n_kv_head, other.arch.n_kv_head),
            ("n_positions", self.n_positions, other.n_positions),
            ("vocab_size", self.vocab_size, other.vocab_size),
            ("d_mlp", self.d_mlp(), other.d_mlp()),
        ]
        .into_iter()
        .find(|(_, u, v)| u != v)
        .map(|(name, u, v)| format!("{name} {u} vs {v}"))
        .or_else(|| {
            (self.arch.tied != other.arch.tied)
                .then(|| format!("tied unembedding {} vs {}", self.arch.tied, other.arch.tied))
        })
    }

    /// A GPT-2 config with HF's standard fields filled in (what `GPT2Config()` writes).
    pub fn new(
        n_layer: usize,
        n_embd: usize,
        n_head: usize,
        n_positions: usize,
        vocab_size: usize,
    ) -> Self {
        let extra = serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "summary_first_dropout": 0.0,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "tie_word_embeddings": true,
            "use_cache": true,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "dtype": "float32"
        });
        let serde_json::Value::Object(extra) = extra else {
            unreachable!("literal object")
        };
        Config {
            n_layer,
            n_embd,
            n_head,
            n_positions,
            vocab_size,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            n_inner: None,
            extra,
            arch: Arch::gpt2(n_head),
        }
    }
    /// MLP hidden width.
    pub fn d_mlp(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }
    /// Width of the fused query/key/value projection: (n_head + 2·n_kv_head)·d_head.
    pub fn d_qkv(&self) -> usize {
        (self.n_head + 2 * self.arch.n_kv_head) * self.d_head()
    }
    /// One line on what the family's block does, for `inspect`: e.g. "GPT-NeoX: parallel
    /// residual, rotary on 4 of 16 head channels (θ 10000), LayerNorm, gelu, untied head".
    pub fn describe(&self) -> String {
        let a = &self.arch;
        let mut parts = vec![if a.parallel {
            "parallel residual".to_string()
        } else {
            "sequential residual".to_string()
        }];
        parts.push(match a.rotary {
            Some(r) => format!(
                "rotary on {} of {} head channels (θ {})",
                r.dim,
                self.d_head(),
                r.base
            ),
            None => "learned positions".into(),
        });
        if a.n_kv_head != self.n_head {
            parts.push(format!(
                "grouped-query attention ({} key/value heads for {})",
                a.n_kv_head, self.n_head
            ));
        }
        parts.push(
            match a.norm {
                Norm::Layer => "LayerNorm",
                Norm::Rms => "RMSNorm",
            }
            .into(),
        );
        parts.push(if a.gated {
            format!("gated MLP ({})", self.activation_function)
        } else {
            self.activation_function.clone()
        });
        let biases: Vec<&str> = [
            (a.qkv_bias, "q/k/v"),
            (a.o_bias, "attention output"),
            (a.mlp_bias, "MLP"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        parts.push(if biases.is_empty() {
            "no biases".into()
        } else {
            format!("biases on {}", biases.join(", "))
        });
        if !a.scale_attn {
            parts.push("unscaled attention scores".into());
        }
        if a.scale_by_layer {
            parts.push("scores ÷ (layer + 1)".into());
        }
        parts.push(if a.tied { "tied head" } else { "untied head" }.into());
        format!("{}: {}", a.family.name(), parts.join(", "))
    }

    /// Check that the numbers describe a model feedlens can run; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("n_positions", self.n_positions),
            ("vocab_size", self.vocab_size),
            ("n_kv_head", self.arch.n_kv_head),
            ("d_mlp", self.d_mlp()),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(self.arch.n_kv_head) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.n_head, self.arch.n_kv_head
            ));
        }
        if Act::parse(&self.activation_function) != Some(self.arch.act) {
            return Err(format!(
                "activation_function '{}' is not supported (feedlens runs {})",
                self.activation_function,
                Act::NAMES
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err("layer_norm_epsilon must be a positive number".into());
        }
        if let Some(r) = self.arch.rotary {
            if r.dim == 0 || !r.dim.is_multiple_of(2) || r.dim > self.d_head() {
                return Err(format!(
                    "rotary dimension {} must be even, positive and at most d_head {}",
                    r.dim,
                    self.d_head()
                ));
            }
            if !(r.base.is_finite() && r.base > 1.0) {
                return Err(format!("rotary base {} must be a number above 1", r.base));
            }
        }
        Ok(())
    }
}
