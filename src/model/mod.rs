//! The model: one pre-norm decoder for every family (GPT-2, GPT-NeoX, Llama-style), in nanoGPT
//! order: config (`config`, the families' keys in `family`) → norm, linear, MLP (`layers`) →
//! attention, block (`block`) → the model. Layers load themselves from the model's own tensor
//! names (GPT-2's); `family` maps each family's HF names onto them. One forward path serves
//! clean, cached, patched, started-at-a-layer and differentiated runs. File formats live in
//! `io::checkpoint`; this layer imports nothing above it.

mod attn;
mod block;
pub mod config;
pub mod engine;
pub mod family;
mod gelu;
pub mod hooks;
mod layers;

pub use config::{Arch, Config, Family};

use crate::model::hooks::{Cache, Hook, Intervention};
use crate::{Error, Result};
use block::Block;
use candle_core::{DType, Device, Tensor, Var};
use layers::{by_rows, rows_of, LayerNorm};
use std::collections::HashMap;
use std::path::PathBuf;

/// A source of named weights that reports precise errors (used by every layer's `load`).
pub struct Weights {
    /// File the tensors came from (for error messages).
    pub path: PathBuf,
    map: HashMap<String, Tensor>,
}

impl Weights {
    /// Wrap a name → tensor map read from `path`.
    pub fn new(path: impl Into<PathBuf>, map: HashMap<String, Tensor>) -> Self {
        Weights {
            path: path.into(),
            map,
        }
    }
    /// Take tensor `name`, checking its shape.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .map
            .remove(name)
            .ok_or_else(|| Error::file(&self.path, format!("missing tensor '{name}'")))?;
        if t.dims() != shape {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor '{name}' has shape {:?}, the config expects {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }
    /// Names left over after loading.
    pub fn remaining(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().cloned().collect();
        v.sort();
        v
    }
}

/// What a forward pass needs besides the input: caching, interventions, and which logits.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Hooks to record in the returned cache.
    pub cache: Vec<Hook>,
    /// Edits applied in order at their hooks (before recording).
    pub interventions: Vec<Intervention>,
    /// Which logits to compute.
    pub logits: Logits,
    /// Use ops that carry gradients (hand-written LayerNorm and softmax, matmul broadcasts);
    /// required for training and attribution. Inference leaves it off for the fused kernels.
    pub grad: bool,
    /// Compute the last block at the one logit position only (its keys and values still over
    /// every position): when logits are asked at exactly the run's last position and nothing is
    /// cached or edited in the last block past its `hook_resid_pre`, the other positions'
    /// attention output and MLP cannot reach the logits. Equal to the full run up to float
    /// rounding (rows are multiplied in other batches), so opt-in: patching sweeps use it,
    /// training and sampling do not (their bytes stay fixed).
    pub last_position_only: bool,
}

/// Which positions get logits.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Logits {
    /// Every position of the run: `[batch, pos, vocab]`.
    #[default]
    All,
    /// Only these absolute positions: `[batch, positions.len(), vocab]`.
    At(Vec<usize>),
    /// Only these absolute positions and only these vocabulary rows of the tied unembedding:
    /// `[batch, positions.len(), tokens.len()]`, column j the logit of `tokens[j]`. Logit
    /// differences of a few tokens then cost a few rows instead of the whole vocabulary.
    Tokens {
        /// Absolute positions.
        positions: Vec<usize>,
        /// Token ids (columns of the result).
        tokens: Vec<u32>,
    },
    /// None (activations only).
    Skip,
}

/// Start a forward pass inside the network instead of at the embeddings.
#[derive(Clone, Debug)]
pub struct Start {
    /// Block to start at (0..=n_layer; n_layer means "only the final LayerNorm and unembedding").
    pub layer: usize,
    /// `blocks.{layer}.hook_resid_pre` for the window's positions: `[batch, pos, d_model]`.
    pub resid: Tensor,
    /// Absolute position of the window's first row (0 for a whole sequence).
    pub offset: usize,
    /// Keys and values of positions `0..offset` for each block from `layer` on, as recorded by
    /// `attn.hook_k` / `attn.hook_v`: `[batch, offset, head, d_head]` each. Empty when offset is 0.
    pub past: Vec<(Tensor, Tensor)>,
}

/// The input of a forward pass.
#[derive(Clone, Debug)]
pub enum Input {
    /// Token ids `[batch, pos]` (u32), starting at position 0.
    Ids(Tensor),
    /// A residual stream to start from.
    Resid(Start),
}

/// The result of a forward pass.
#[derive(Debug)]
pub struct Output {
    /// Logits `[batch, positions, vocab]` as chosen by [`Run::logits`] (None for `Skip`).
    pub logits: Option<Tensor>,
    /// The recorded hooks.
    pub cache: Cache,
}

/// Per-run state threaded through the layers: applies interventions, records hooks.
struct Ctx<'a> {
    run: &'a Run,
    offset: usize,
    cache: Cache,
}

impl Ctx<'_> {
    /// The hook site: edit `x` with every intervention at `hook`, record it if asked.
    fn hook(&mut self, hook: Hook, mut x: Tensor) -> Result<Tensor> {
        for iv in self.run.interventions.iter().filter(|iv| iv.hook == hook) {
            x = iv.apply(&x, self.offset)?;
        }
        if self.run.cache.contains(&hook) {
            self.cache.insert(hook, x.clone());
        }
        Ok(x)
    }
}

/// A decoder-only transformer of any family feedlens runs.
pub struct Model {
    cfg: Config,
    wte: Tensor,
    /// Learned position embedding (GPT-2 only).
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// The untied unembedding `[vocab, d]`, if any (else `wte`).
    lm_head: Option<Tensor>,
}

impl Model {
    /// Build from the model's tensor names (GPT-2's HF names without `transformer.`:
    /// `wte.weight`, `h.0.attn.c_attn.weight` `[in, out]`, ..., and `lm_head.weight` when
    /// untied; `family::canonical` maps the other families onto them). Every shape is checked
    /// against `cfg`; unused names are left in `w` for the caller to report.
    pub fn load(cfg: Config, w: &mut Weights) -> Result<Self> {
        cfg.validate().map_err(|m| Error::file(&w.path, m))?;
        let d = cfg.n_embd;
        let wte = w.take("wte.weight", &[cfg.vocab_size, d])?;
        let wpe = if cfg.arch.learned_positions {
            Some(w.take("wpe.weight", &[cfg.n_positions, d])?)
        } else {
            None
        };
        let blocks = (0..cfg.n_layer)
            .map(|l| Block::load(w, l, &cfg))
            .collect::<Result<_>>()?;
        let ln_f = LayerNorm::load(w, "ln_f", &cfg)?;
        let lm_head = if cfg.arch.tied {
            None
        } else {
            Some(w.take("lm_head.weight", &[cfg.vocab_size, d])?)
        };
        Ok(Model {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// A freshly initialised model (GPT-2's scheme: N(0, 0.02) weights, residual projections
    /// scaled by 1/√(2·n_layer), zero biases, unit LayerNorm gains), deterministic in `seed`.
    pub fn init(cfg: Config, seed: u64) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let proj_std = 0.02 / (2.0 * cfg.n_layer as f32).sqrt();
        let mut map = HashMap::new();
        for (name, shape) in Self::tensor_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("ln_") {
                vec![1.0; n]
            } else {
                let std = if name.ends_with("c_proj.weight") {
                    proj_std
                } else {
                    0.02
                };
                let normal = Normal::new(0.0f32, std).map_err(Error::input)?;
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            map.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        Self::load(cfg, &mut Weights::new("<init>", map))
    }

    /// The model's tensor names and shapes for `cfg`, in checkpoint order.
    pub fn tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
        let (d, m, a) = (cfg.n_embd, cfg.d_mlp(), &cfg.arch);
        let mut v = vec![("wte.weight".to_string(), vec![cfg.vocab_size, d])];
        if a.learned_positions {
            v.push(("wpe.weight".to_string(), vec![cfg.n_positions, d]));
        }
        let norm = |v: &mut Vec<(String, Vec<usize>)>, p: String| {
            v.push((format!("{p}.weight"), vec![d]));
            if a.norm == config::Norm::Layer {
                v.push((format!("{p}.bias"), vec![d]));
            }
        };
        let linear = |v: &mut Vec<(String, Vec<usize>)>, p: String, i: usize, o: usize, b: bool| {
            v.push((format!("{p}.weight"), vec![i, o]));
            if b {
                v.push((format!("{p}.bias"), vec![o]));
            }
        };
        for l in 0..cfg.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            norm(&mut v, p("ln_1"));
            linear(&mut v, p("attn.c_attn"), d, cfg.d_qkv(), a.qkv_bias);
            linear(&mut v, p("attn.c_proj"), d, d, a.o_bias);
            norm(&mut v, p("ln_2"));
            if a.gated {
                linear(&mut v, p("mlp.c_gate"), d, m, a.mlp_bias);
            }
            linear(&mut v, p("mlp.c_fc"), d, m, a.mlp_bias);
            linear(&mut v, p("mlp.c_proj"), m, d, a.mlp_bias);
        }
        norm(&mut v, "ln_f".into());
        if !a.tied {
            v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d]));
        }
        v
    }

    /// The token embedding `[vocab, d]`.
    pub fn wte(&self) -> &Tensor {
        &self.wte
    }

    /// The learned position embedding `[n_positions, d]` (GPT-2), if the family has one.
    pub fn wpe(&self) -> Option<&Tensor> {
        self.wpe.as_ref()
    }

    /// The unembedding `[vocab, d]` (the token embedding when tied).
    pub fn unembedding(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// Every parameter with its name (see [`Model::load`]), in checkpoint order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("wte.weight".to_string(), self.wte.clone())];
        if let Some(wpe) = &self.wpe {
            v.push(("wpe.weight".to_string(), wpe.clone()));
        }
        let norm = |v: &mut Vec<(String, Tensor)>, p: String, n: &LayerNorm| {
            v.push((format!("{p}.weight"), n.weight.clone()));
            if let Some(b) = &n.bias {
                v.push((format!("{p}.bias"), b.clone()));
            }
        };
        for (l, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("h.{l}.{s}");
            norm(&mut v, p("ln_1"), &b.ln_1);
            v.extend(b.attn.c_attn.tensors(&p("attn.c_attn")));
            v.extend(b.attn.c_proj.tensors(&p("attn.c_proj")));
            norm(&mut v, p("ln_2"), &b.ln_2);
            if let Some(g) = &b.mlp.c_gate {
                v.extend(g.tensors(&p("mlp.c_gate")));
            }
            v.extend(b.mlp.c_fc.tensors(&p("mlp.c_fc")));
            v.extend(b.mlp.c_proj.tensors(&p("mlp.c_proj")));
        }
        norm(&mut v, "ln_f".into(), &self.ln_f);
        if let Some(h) = &self.lm_head {
            v.push(("lm_head.weight".to_string(), h.clone()));
        }
        v
    }

    /// A copy whose parameters are trainable [`Var`]s (same order as [`Model::tensors`]).
    /// Optimiser updates to the vars are seen by the returned model.
    pub fn trainable(&self) -> Result<(Model, Vec<(String, Var)>)> {
        let vars: Vec<(String, Var)> = self
            .tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        let map = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let model = Self::load(self.cfg.clone(), &mut Weights::new("<vars>", map))?;
        Ok((model, vars))
    }

    /// A copy with detached plain tensors (no autograd), e.g. to freeze a reference model.
    pub fn detached(&self) -> Result<Model> {
        let map = self
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.detach()))
            .collect();
        Self::load(self.cfg.clone(), &mut Weights::new("<detached>", map))
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Total number of parameters (a tied unembedding counted once).
    pub fn n_params(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Check token ids `[batch, pos]` against the vocabulary and the context length.
    pub fn check_ids(&self, ids: &[Vec<u32>]) -> Result<()> {
        for row in ids {
            if row.is_empty() {
                input_err!("empty token sequence");
            }
            if row.len() > self.cfg.n_positions {
                input_err!(
                    "sequence of {} tokens is longer than n_positions {}",
                    row.len(),
                    self.cfg.n_positions
                );
            }
            if let Some(&bad) = row.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
                input_err!(
                    "token id {bad} is out of range (vocab_size {})",
                    self.cfg.vocab_size
                );
            }
        }
        if ids.iter().any(|r| r.len() != ids[0].len()) {
            input_err!("all sequences of a batch must have the same length");
        }
        Ok(())
    }

    /// Checked ids → `[batch, pos]` u32 tensor.
    pub fn ids_tensor(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.check_ids(ids)?;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(
            flat,
            (ids.len(), ids[0].len()),
            &Device::Cpu,
        )?)
    }

    /// The forward pass. See [`Run`] for caching, interventions and logits, [`Input`] for
    /// starting at a layer with past keys/values.
    pub fn forward(&self, input: &Input, run: &Run) -> Result<Output> {
        self.check_hooks(run)?;
        let d = self.cfg.n_embd;
        let (x, first, offset, past) = match input {
            Input::Ids(ids) => {
                let (b, t) = ids.dims2()?;
                if t == 0 || t > self.cfg.n_positions {
                    input_err!(
                        "sequence of {t} tokens does not fit n_positions {}",
                        self.cfg.n_positions
                    );
                }
                let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
                if max_id as usize >= self.cfg.vocab_size {
                    input_err!(
                        "token id {max_id} is out of range (vocab_size {})",
                        self.cfg.vocab_size
                    );
                }
                let mut ctx = Ctx {
                    run,
                    offset: 0,
                    cache: Cache::default(),
                };
                let e = self
                    .wte
                    .embedding(&ids.flatten_all()?)?
                    .reshape((b, t, d))?; // [b, t, d]
                let e = ctx.hook(Hook::Embed, e)?;
                let Some(wpe) = &self.wpe else {
                    return self.blocks_from(0, e, None, ctx); // rotary: positions enter in attention
                };
                let p = wpe.narrow(0, 0, t)?.reshape((1, t * d))?; // [1, t·d]
                let p = if run.grad {
                    rows_of(&p.squeeze(0)?, b, true)?.reshape((b, t, d))?
                } else {
                    p.reshape((1, t, d))?.broadcast_as((b, t, d))?
                };
                let p = ctx.hook(Hook::PosEmbed, p)?; // [b, t, d]
                return self.blocks_from(0, (e + p)?, None, ctx);
            }
            Input::Resid(s) => (s.resid.clone(), s.layer, s.offset, &s.past),
        };
        let (_, t, dd) = x.dims3()?;
        if dd != d || first > self.cfg.n_layer || offset + t > self.cfg.n_positions {
            input_err!(
                "start at layer {first}, offset {offset}: residual of shape {:?} does not fit the model",
                x.dims()
            );
        }
        if offset > 0 && past.len() != self.cfg.n_layer - first {
            input_err!(
                "start at offset {offset} needs past keys/values for {} blocks",
                self.cfg.n_layer - first
            );
        }
        let ctx = Ctx {
            run,
            offset,
            cache: Cache::default(),
        };
        self.blocks_from(first, x, Some(past), ctx)
    }

    /// Whether this model has `hook` (a rotary model has no `hook_pos_embed`, a parallel
    /// block no `hook_resid_mid`; every layer must exist).
    pub fn has_hook(&self, hook: Hook) -> bool {
        let a = &self.cfg.arch;
        match hook {
            Hook::PosEmbed => a.learned_positions,
            Hook::ResidMid(l) => !a.parallel && l < self.cfg.n_layer,
            h => h.layer().is_none_or(|l| l < self.cfg.n_layer),
        }
    }

    /// Every hook of this model, in forward order.
    pub fn hooks(&self) -> Vec<Hook> {
        Hook::all(self.cfg.n_layer)
            .into_iter()
            .filter(|h| self.has_hook(*h))
            .collect()
    }

    /// Refuse a run that caches or edits a hook this model does not have.
    fn check_hooks(&self, run: &Run) -> Result<()> {
        let asked = run
            .cache
            .iter()
            .chain(run.interventions.iter().map(|iv| &iv.hook));
        if let Some(h) = asked.into_iter().find(|h| !self.has_hook(**h)) {
            let why = match h {
                Hook::PosEmbed => "it has rotary positions, no position embedding",
                Hook::ResidMid(_) if self.cfg.arch.parallel => {
                    "its blocks are parallel: attention and MLP both read hook_resid_pre"
                }
                _ => "no such layer",
            };
            input_err!(
                "hook {h} does not exist in this {} model ({why})",
                self.cfg.arch.family.name()
            );
        }
        Ok(())
    }

    /// Whether the last block can run at one position only (see [`Run::last_position_only`]).
    fn narrow_last(&self, first: usize, t: usize, ctx: &Ctx) -> bool {
        let run = ctx.run;
        let last = self.cfg.n_layer - 1;
        let q = ctx.offset + t - 1;
        let only_q = match &run.logits {
            Logits::At(ps) | Logits::Tokens { positions: ps, .. } => ps.as_slice() == [q],
            _ => false,
        };
        let touches = |h: &Hook| {
            *h == Hook::LnFinal || (h.layer() == Some(last) && *h != Hook::ResidPre(last))
        };
        run.last_position_only
            && !run.grad
            && only_q
            && t > 1
            && first <= last
            && !run.cache.iter().any(touches)
            && !run.interventions.iter().any(|iv| touches(&iv.hook))
    }

    fn blocks_from(
        &self,
        first: usize,
        mut x: Tensor,
        past: Option<&Vec<(Tensor, Tensor)>>,
        mut ctx: Ctx,
    ) -> Result<Output> {
        let t = x.dim(1)?;
        let narrow = self.narrow_last(first, t, &ctx);
        let last = self.cfg.n_layer - 1;
        for (l, block) in self.blocks.iter().enumerate().skip(first) {
            let kv = past.and_then(|p| p.get(l - first));
            x = if narrow && l == last {
                let x = ctx.hook(Hook::ResidPre(l), x)?;
                block.forward_last(&x, kv, ctx.offset)? // [b, 1, d] at the last position
            } else {
                block.forward(x, l, kv, &mut ctx)?
            };
        }
        if narrow {
            ctx.offset += t - 1;
        }
        let logits = self.unembed(&x, &mut ctx)?;
        Ok(Output {
            logits,
            cache: ctx.cache,
        })
    }

    /// Final LayerNorm and tied unembedding at the chosen positions. x: `[b, t, d]`.
    fn unembed(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Option<Tensor>> {
        let (b, t, d) = x.dims3()?;
        let off = ctx.offset;
        let x = match &ctx.run.logits {
            Logits::Skip if !ctx.run.cache.contains(&Hook::LnFinal) => return Ok(None),
            Logits::At(ps) | Logits::Tokens { positions: ps, .. } => {
                if let Some(&p) = ps.iter().find(|&&p| p < off || p >= off + t) {
                    input_err!(
                        "logit position {p} is outside the run's positions {off}..{}",
                        off + t
                    );
                }
                let idx: Vec<u32> = ps.iter().map(|&p| (p - off) as u32).collect();
                let idx = Tensor::from_vec(idx, ps.len(), x.device())?;
                x.contiguous()?.index_select(&idx, 1)?
            }
            _ => x.clone(),
        };
        let k = x.dim(1)?;
        let grad = ctx.run.grad;
        let h = self.ln_f.normalize(&x.reshape((b * k, d))?, grad)?;
        // [b, k, d], before ln_f's gain and bias (as TransformerLens records it).
        let h = ctx.hook(Hook::LnFinal, h.reshape((b, k, d))?)?;
        if ctx.run.logits == Logits::Skip {
            return Ok(None);
        }
        let h = self.ln_f.affine(&h.reshape((b * k, d))?, grad)?;
        let unembed = match &ctx.run.logits {
            Logits::Tokens { tokens, .. } => {
                if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                    input_err!(
                        "logit token {bad} is out of range (vocab_size {})",
                        self.cfg.vocab_size
                    );
                }
                let idx = Tensor::from_vec(tokens.clone(), tokens.len(), x.device())?;
                self.unembedding().index_select(&idx, 0)? // [n_tokens, d]
            }
            _ => self.unembedding().clone(), // [vocab, d]
        };
        let unembed_t = unembed.t()?;
        let logits = by_rows(&h, grad, |h| Ok(h.matmul(&unembed_t)?))?; // [b·k, vocab or n_tokens]
        let n = unembed.dim(0)?;
        Ok(Some(logits.reshape((b, k, n))?))
    }

    /// Parameters as f32 (the only dtype the model runs in).
    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }
}
