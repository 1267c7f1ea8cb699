//! The GPT-2 model (pre-LN, learned positions, `gelu_new`, tied unembedding), in nanoGPT order:
//! config → LayerNorm → Linear (HF Conv1D) → attention → MLP → block → GPT-2.
//! Layers load themselves from HF tensor names. One forward path serves clean, cached, patched,
//! started-at-a-layer and differentiated runs. File formats live in `io::checkpoint`; this
//! layer imports nothing above it.

mod attn;
mod config;
mod gelu;
pub mod hooks;

pub use config::Config;

use crate::model::gelu::gelu_new_op;
use crate::model::hooks::{Cache, Hook, Intervention};
use crate::{Error, Result};
use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
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

/// Rows per gemm in a differentiable run. candle's CPU matmul (the `gemm` crate) splits a
/// product's inner dimension into blocks sized from the CPU's L1 cache once it exceeds 512, so
/// a weight gradient `xᵀ·g` summed over more rows would round differently on machines with other
/// caches (it did: the zoo trained on one CPU did not reproduce on another). With at most 512
/// rows per product every inner dimension of training fits one block, and a seed gives the same
/// bytes on every x86-64 machine with AVX2 and FMA.
const GRAD_ROWS: usize = 512;

/// `f` applied to `x` `[n, ..]`; in a differentiable run with more than [`GRAD_ROWS`] rows, to
/// each block of at most that many rows, concatenated.
fn by_rows(x: &Tensor, grad: bool, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = x.dim(0)?;
    if !grad || n <= GRAD_ROWS {
        return f(x);
    }
    let parts = (0..n)
        .step_by(GRAD_ROWS)
        .map(|s| f(&x.narrow(0, s, GRAD_ROWS.min(n - s))?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// `v` `[n]` broadcast to `[rows, n]`. With `grad` it is `ones[rows,1] · v[1,n]`, so that its
/// backward is a gemm instead of a reduction over the leading dimension (~100× slower in candle).
fn rows_of(v: &Tensor, rows: usize, grad: bool) -> Result<Tensor> {
    let v = v.unsqueeze(0)?;
    Ok(if grad {
        Tensor::ones((rows, 1), v.dtype(), v.device())?.matmul(&v)?
    } else {
        v.broadcast_as((rows, v.dim(1)?))?
    })
}

/// LayerNorm over the last dimension, with learned gain and bias.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(w: &mut Weights, prefix: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.take(&format!("{prefix}.weight"), &[d])?,
            bias: w.take(&format!("{prefix}.bias"), &[d])?,
            eps,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        if grad {
            self.affine(&self.normalize(x, true)?, true)
        } else {
            let x = x.contiguous()?;
            Ok(candle_nn::ops::layer_norm(
                &x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?)
        }
    }

    /// (x − mean) / √(var + eps), before gain and bias (TransformerLens's `hook_normalized`).
    fn normalize(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        if !grad {
            let (ones, zeros) = (self.weight.ones_like()?, self.weight.zeros_like()?);
            return Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &ones,
                &zeros,
                self.eps as f32,
            )?);
        }
        // Hand-written: candle's fused kernel has no backward (docs/DESIGN.md §7).
        let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        Ok(xc.broadcast_div(&(var + self.eps)?.sqrt()?)?)
    }

    /// xhat · gain + bias. xhat: `[n, d]`.
    fn affine(&self, xhat: &Tensor, grad: bool) -> Result<Tensor> {
        by_rows(xhat, grad, |xhat| {
            let n = xhat.dim(0)?;
            Ok(((xhat * rows_of(&self.weight, n, grad)?)? + rows_of(&self.bias, n, grad)?)?)
        })
    }
}

/// HF's Conv1D: `y = x·W + b` with W stored `[in, out]`.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Linear {
            weight: w.take(&format!("{prefix}.weight"), &[d_in, d_out])?,
            bias: w.take(&format!("{prefix}.bias"), &[d_out])?,
        })
    }
    /// x: `[n, in]` → `[n, out]`.
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        by_rows(x, grad, |x| {
            let y = x.matmul(&self.weight)?;
            Ok(if grad {
                (y + rows_of(&self.bias, x.dim(0)?, true)?)?
            } else {
                y.broadcast_add(&self.bias)?
            })
        })
    }
}

/// Causal self-attention.
struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
}

impl Attention {
    fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        let d = cfg.n_embd;
        Ok(Attention {
            c_attn: Linear::load(w, &format!("{prefix}.c_attn"), d, 3 * d)?,
            c_proj: Linear::load(w, &format!("{prefix}.c_proj"), d, d)?,
            n_head: cfg.n_head,
        })
    }

    /// x: `[batch, pos, d]` (already layer-normed) → attention output `[batch, pos, d]`.
    /// `past`: keys/values of positions `0..offset`, `[batch, offset, head, d_head]`.
    fn forward(
        &self,
        x: &Tensor,
        l: usize,
        past: Option<&(Tensor, Tensor)>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (nh, dh) = (self.n_head, d / self.n_head);
        let grad = ctx.run.grad;
        let qkv = self
            .c_attn
            .forward(&x.reshape((b * t, d))?, grad)?
            .reshape((b, t, 3, nh, dh))?;
        let q = ctx.hook(Hook::Q(l), qkv.i((.., .., 0))?.contiguous()?)?; // [b, t, nh, dh]
        let k = ctx.hook(Hook::K(l), qkv.i((.., .., 1))?.contiguous()?)?; // [b, t, nh, dh]
        let v = ctx.hook(Hook::V(l), qkv.i((.., .., 2))?.contiguous()?)?; // [b, t, nh, dh]
        let (k, v) = match past {
            Some((pk, pv)) if pk.dim(1)? > 0 => {
                (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?)
            }
            _ => (k, v),
        };
        let scale = 1.0 / (dh as f64).sqrt();
        let z = if grad {
            let tk = k.dim(1)?;
            let q = q.transpose(1, 2)?.contiguous()?; // [b, nh, t, dh]
            let k = k.transpose(1, 2)?.contiguous()?; // [b, nh, tk, dh]
            let v = v.transpose(1, 2)?.contiguous()?; // [b, nh, tk, dh]
            let scores = (q.matmul(&k.t()?)? * scale)?; // [b, nh, t, tk]
            let scores = scores.broadcast_add(&causal_mask(t, tk, ctx.offset, x.device())?)?;
            let pattern = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let pattern = ctx.hook(Hook::Pattern(l), pattern)?; // [b, nh, t, tk]
            pattern.matmul(&v)?.transpose(1, 2)?.contiguous()? // [b, t, nh, dh]
        } else {
            // Same maths in loops over (batch, head): see `attn`.
            let pattern = ctx.hook(Hook::Pattern(l), attn::pattern(&q, &k, ctx.offset, scale)?)?; // [b, nh, t, tk]
            attn::mix(&pattern, &v)? // [b, t, nh, dh]
        };
        let z = ctx.hook(Hook::Z(l), z)?;
        Ok(self
            .c_proj
            .forward(&z.reshape((b * t, d))?, grad)?
            .reshape((b, t, d))?)
    }
}

/// Additive mask `[t, tk]`: query i (absolute `offset + i`) sees keys `0..=offset + i`.
fn causal_mask(t: usize, tk: usize, offset: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, tk), dev)?)
}

/// The MLP: `c_proj(gelu_new(c_fc(x)))`.
struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::load(w, &format!("{prefix}.c_fc"), cfg.n_embd, cfg.d_mlp())?,
            c_proj: Linear::load(w, &format!("{prefix}.c_proj"), cfg.d_mlp(), cfg.n_embd)?,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let h = gelu_new_op(&self.c_fc.forward(x, grad)?)?; // [n, d_mlp]
        self.c_proj.forward(&h, grad)
    }
}

/// A pre-LN transformer block.
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &mut Weights, l: usize, cfg: &Config) -> Result<Self> {
        let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Ok(Block {
            ln_1: LayerNorm::load(w, &format!("h.{l}.ln_1"), d, eps)?,
            attn: Attention::load(w, &format!("h.{l}.attn"), cfg)?,
            ln_2: LayerNorm::load(w, &format!("h.{l}.ln_2"), d, eps)?,
            mlp: Mlp::load(w, &format!("h.{l}.mlp"), cfg)?,
        })
    }

    /// x: `blocks.{l}.hook_resid_pre` `[batch, pos, d]` → `hook_resid_post` `[batch, pos, d]`.
    fn forward(
        &self,
        x: Tensor,
        l: usize,
        past: Option<&(Tensor, Tensor)>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let grad = ctx.run.grad;
        let x = ctx.hook(Hook::ResidPre(l), x)?;
        let (b, t, d) = x.dims3()?;
        let h = self
            .ln_1
            .forward(&x.reshape((b * t, d))?, grad)?
            .reshape((b, t, d))?;
        let a = self.attn.forward(&h, l, past, ctx)?;
        let a = ctx.hook(Hook::AttnOut(l), a)?;
        let x = ctx.hook(Hook::ResidMid(l), (x + a)?)?;
        let h = self.ln_2.forward(&x.reshape((b * t, d))?, grad)?;
        let m = ctx.hook(
            Hook::MlpOut(l),
            self.mlp.forward(&h, grad)?.reshape((b, t, d))?,
        )?;
        ctx.hook(Hook::ResidPost(l), (x + m)?)
    }
}

impl Block {
    /// The block at the last position of `x` only (`[batch, pos, d]` → `[batch, 1, d]`): keys and
    /// values over every position, the rest at the last one. For [`Run::last_position_only`]
    /// (inference, no hooks past `hook_resid_pre` here).
    fn forward_last(
        &self,
        x: Tensor,
        l: usize,
        past: Option<&(Tensor, Tensor)>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let x = ctx.hook(Hook::ResidPre(l), x)?;
        let (b, t, d) = x.dims3()?;
        let h = self
            .ln_1
            .forward(&x.reshape((b * t, d))?, false)?
            .reshape((b, t, d))?;
        let a = self.attn.forward_last(&h, past, ctx.offset)?; // [b, 1, d]
        let x = (x.narrow(1, t - 1, 1)? + a)?; // [b, 1, d]
        let h = self.ln_2.forward(&x.reshape((b, d))?, false)?;
        let m = self.mlp.forward(&h, false)?.reshape((b, 1, d))?;
        Ok((x + m)?)
    }
}

impl Attention {
    /// Attention of the last query of `x` (`[batch, pos, d]`, layer-normed) over every key:
    /// `[batch, 1, d]`. `offset` is the absolute position of `x`'s first row.
    fn forward_last(
        &self,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        offset: usize,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (nh, dh) = (self.n_head, d / self.n_head);
        let qkv = self
            .c_attn
            .forward(&x.reshape((b * t, d))?, false)?
            .reshape((b, t, 3, nh, dh))?;
        let q = qkv.i((.., t - 1..t, 0))?.contiguous()?; // [b, 1, nh, dh]
        let k = qkv.i((.., .., 1))?.contiguous()?; // [b, t, nh, dh]
        let v = qkv.i((.., .., 2))?.contiguous()?;
        let (k, v) = match past {
            Some((pk, pv)) if pk.dim(1)? > 0 => {
                (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?)
            }
            _ => (k, v),
        };
        let scale = 1.0 / (dh as f64).sqrt();
        let pattern = attn::pattern(&q, &k, offset + t - 1, scale)?; // [b, nh, 1, tk]
        let z = attn::mix(&pattern, &v)?; // [b, 1, nh, dh]
        Ok(self
            .c_proj
            .forward(&z.reshape((b, d))?, false)?
            .reshape((b, 1, d))?)
    }
}

/// GPT-2 with tied unembedding.
pub struct Gpt2 {
    cfg: Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    /// Build from HF tensor names without the `transformer.` prefix (`wte.weight`,
    /// `h.0.attn.c_attn.weight` `[in, out]`, ...). Every shape is checked against `cfg`;
    /// unused names are left in `w` for the caller to report.
    pub fn load(cfg: Config, w: &mut Weights) -> Result<Self> {
        cfg.validate().map_err(|m| Error::file(&w.path, m))?;
        let d = cfg.n_embd;
        let wte = w.take("wte.weight", &[cfg.vocab_size, d])?;
        let wpe = w.take("wpe.weight", &[cfg.n_positions, d])?;
        let blocks = (0..cfg.n_layer)
            .map(|l| Block::load(w, l, &cfg))
            .collect::<Result<_>>()?;
        let ln_f = LayerNorm::load(w, "ln_f", d, cfg.layer_norm_epsilon)?;
        Ok(Gpt2 {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
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

    /// HF tensor names (without `transformer.`) and shapes, in checkpoint order.
    pub fn tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
        let (d, m) = (cfg.n_embd, cfg.d_mlp());
        let mut v = vec![
            ("wte.weight".to_string(), vec![cfg.vocab_size, d]),
            ("wpe.weight".to_string(), vec![cfg.n_positions, d]),
        ];
        for l in 0..cfg.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            v.extend([
                (p("ln_1.weight"), vec![d]),
                (p("ln_1.bias"), vec![d]),
                (p("attn.c_attn.weight"), vec![d, 3 * d]),
                (p("attn.c_attn.bias"), vec![3 * d]),
                (p("attn.c_proj.weight"), vec![d, d]),
                (p("attn.c_proj.bias"), vec![d]),
                (p("ln_2.weight"), vec![d]),
                (p("ln_2.bias"), vec![d]),
                (p("mlp.c_fc.weight"), vec![d, m]),
                (p("mlp.c_fc.bias"), vec![m]),
                (p("mlp.c_proj.weight"), vec![m, d]),
                (p("mlp.c_proj.bias"), vec![d]),
            ]);
        }
        v.push(("ln_f.weight".into(), vec![d]));
        v.push(("ln_f.bias".into(), vec![d]));
        v
    }

    /// Every parameter with its HF name (without `transformer.`), in checkpoint order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![
            ("wte.weight".to_string(), self.wte.clone()),
            ("wpe.weight".to_string(), self.wpe.clone()),
        ];
        for (l, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("h.{l}.{s}");
            v.extend([
                (p("ln_1.weight"), b.ln_1.weight.clone()),
                (p("ln_1.bias"), b.ln_1.bias.clone()),
                (p("attn.c_attn.weight"), b.attn.c_attn.weight.clone()),
                (p("attn.c_attn.bias"), b.attn.c_attn.bias.clone()),
                (p("attn.c_proj.weight"), b.attn.c_proj.weight.clone()),
                (p("attn.c_proj.bias"), b.attn.c_proj.bias.clone()),
                (p("ln_2.weight"), b.ln_2.weight.clone()),
                (p("ln_2.bias"), b.ln_2.bias.clone()),
                (p("mlp.c_fc.weight"), b.mlp.c_fc.weight.clone()),
                (p("mlp.c_fc.bias"), b.mlp.c_fc.bias.clone()),
                (p("mlp.c_proj.weight"), b.mlp.c_proj.weight.clone()),
                (p("mlp.c_proj.bias"), b.mlp.c_proj.bias.clone()),
            ]);
        }
        v.push(("ln_f.weight".into(), self.ln_f.weight.clone()));
        v.push(("ln_f.bias".into(), self.ln_f.bias.clone()));
        v
    }

    /// A copy whose parameters are trainable [`Var`]s (same order as [`Gpt2::tensors`]).
    /// Optimiser updates to the vars are seen by the returned model.
    pub fn trainable(&self) -> Result<(Gpt2, Vec<(String, Var)>)> {
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
    pub fn detached(&self) -> Result<Gpt2> {
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

    /// Total number of parameters (tied unembedding counted once).
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
                let p = self.wpe.narrow(0, 0, t)?.reshape((1, t * d))?; // [1, t·d]
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
                block.forward_last(x, l, kv, &mut ctx)? // [b, 1, d] at the last position
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
                self.wte.index_select(&idx, 0)? // [n_tokens, d]
            }
            _ => self.wte.clone(), // [vocab, d]
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
