//! `Config`: the GPT-2 hyper-parameters of an HF `config.json` that the forward pass uses, their
//! validation, and the shape comparison of two configs. No weights, no files.

use serde::{Deserialize, Serialize};

/// The GPT-2 hyper-parameters feedlens uses, read from / written to an HF `config.json`.
/// Fields it does not use are kept in `extra` and written back unchanged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Residual stream width, d_model.
    pub n_embd: usize,
    /// Attention heads per block; d_head = n_embd / n_head.
    pub n_head: usize,
    /// Context length (rows of the position embedding).
    pub n_positions: usize,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// LayerNorm epsilon (HF default 1e-5).
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Must be a tanh-approximated GELU (`gelu_new`).
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// MLP width; None means 4·n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Every other config.json field, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

impl Config {
    /// The first shape field in which `self` and `other` differ, as `"n_layer 4 vs 2"`; `None`
    /// when the two models have the same tensors (paired analyses need that).
    pub fn shape_difference(&self, other: &Config) -> Option<String> {
        [
            ("n_layer", self.n_layer, other.n_layer),
            ("n_embd", self.n_embd, other.n_embd),
            ("n_head", self.n_head, other.n_head),
            ("n_positions", self.n_positions, other.n_positions),
            ("vocab_size", self.vocab_size, other.vocab_size),
            ("d_mlp", self.d_mlp(), other.d_mlp()),
        ]
        .into_iter()
        .find(|(_, u, v)| u != v)
        .map(|(name, u, v)| format!("{name} {u} vs {v}"))
    }

    /// A config with HF's standard GPT-2 fields filled in (what `GPT2Config()` writes).
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
    /// Check that the numbers describe a model feedlens can run. `what` names the source.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("n_positions", self.n_positions),
            ("vocab_size", self.vocab_size),
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
        if !["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]
            .contains(&self.activation_function.as_str())
        {
            return Err(format!(
                "activation_function '{}' is not supported (feedlens runs gelu_new)",
                self.activation_function
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err("layer_norm_epsilon must be a positive number".into());
        }
        if let Some(t) = self.extra.get("model_type") {
            if t.as_str() != Some("gpt2") {
                return Err(format!(
                    "model_type {t} is not supported (feedlens runs GPT-2: \"gpt2\")"
                ));
            }
        }
        // Flags GPT-2 configs carry must be booleans: a string "true" is not read as false.
        for k in [
            "scale_attn_by_inverse_layer_idx",
            "scale_attn_weights",
            "reorder_and_upcast_attn",
            "add_cross_attention",
        ] {
            if let Some(v) = self
                .extra
                .get(k)
                .filter(|v| !v.is_boolean() && !v.is_null())
            {
                return Err(format!("{k} is {v}, expected true or false"));
            }
        }
        if self
            .extra
            .get("add_cross_attention")
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            return Err("add_cross_attention = true is not supported".into());
        }
        let flag = |k: &str| self.extra.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        if flag("scale_attn_by_inverse_layer_idx") {
            return Err("scale_attn_by_inverse_layer_idx = true is not supported".into());
        }
        if self
            .extra
            .get("scale_attn_weights")
            .and_then(|v| v.as_bool())
            == Some(false)
        {
            return Err("scale_attn_weights = false is not supported".into());
        }
        Ok(())
    }
}
