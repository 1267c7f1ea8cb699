//! Causal self-attention (rotary, grouped-query) and the pre-norm block (sequential or parallel), each with its full-sequence forward (every hook,
//! differentiable or not) and its last-position forward (inference only, for
//! `Run::last_position_only`). Hooks fire through the model's per-run `Ctx`; the sublayers live
//! in `layers`, the inference kernels in `attn`; the model above owns embedding and unembedding.

use super::layers::{LayerNorm, Linear, Mlp};
use super::{attn, Ctx, Weights};
use crate::model::config::Rotary;
use crate::model::hooks::Hook;
use crate::model::Config;
use crate::Result;
use candle_core::{Device, Tensor, D};

/// Causal self-attention: one fused query/key/value projection, optional rotary embedding of
/// queries and keys, grouped-query heads.
pub(super) struct Attention {
    pub(super) c_attn: Linear,
    pub(super) c_proj: Linear,
    n_head: usize,
    n_kv_head: usize,
    /// Factor on q·kᵀ (1/√d_head for GPT-2's defaults, further ÷ (layer + 1) with
    /// `scale_attn_by_inverse_layer_idx`).
    scale: f64,
    rotary: Option<Rotary>,
}

impl Attention {
    fn load(w: &mut Weights, prefix: &str, l: usize, cfg: &Config) -> Result<Self> {
        let (d, a) = (cfg.n_embd, &cfg.arch);
        let mut scale = if a.scale_attn {
            1.0 / (cfg.d_head() as f64).sqrt()
        } else {
            1.0
        };
        if a.scale_by_layer {
            scale /= (l + 1) as f64;
        }
        Ok(Attention {
            c_attn: Linear::load(w, &format!("{prefix}.c_attn"), d, cfg.d_qkv(), a.qkv_bias)?,
            c_proj: Linear::load(w, &format!("{prefix}.c_proj"), d, d, a.o_bias)?,
            n_head: cfg.n_head,
            n_kv_head: a.n_kv_head,
            scale,
            rotary: a.rotary,
        })
    }

    /// Queries `[batch, pos, head, d_head]`, keys and values `[batch, pos, kv_head, d_head]`
    /// of `x` (`[batch, pos, d]`, normalised) in one product, before any rotary embedding.
    fn qkv(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, d) = x.dims3()?;
        let dh = d / self.n_head;
        let y = self.c_attn.forward(&x.reshape((b * t, d))?, grad)?; // [b·t, (nh + 2·nkv)·dh]
        let part = |start: usize, heads: usize| -> Result<Tensor> {
            Ok(y.narrow(1, start * dh, heads * dh)?
                .reshape((b, t, heads, dh))?
                .contiguous()?)
        };
        let (nh, nkv) = (self.n_head, self.n_kv_head);
        Ok((part(0, nh)?, part(nh, nkv)?, part(nh + nkv, nkv)?))
    }

    /// The output projection of z `[batch, pos, head, d_head]` → `[batch, pos, d]`.
    fn project(&self, z: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t, nh, dh) = z.dims4()?;
        Ok(self
            .c_proj
            .forward(&z.reshape((b * t, nh * dh))?, grad)?
            .reshape((b, t, nh * dh))?)
    }

    /// `x` `[batch, pos, heads, d_head]` at absolute positions `first..` with the rotary
    /// embedding applied (unchanged without one).
    fn rotate(&self, x: Tensor, first: usize) -> Result<Tensor> {
        match self.rotary {
            Some(r) => rope(&x, first, r),
            None => Ok(x),
        }
    }

    /// `x` with its kv heads repeated to the query heads (differentiated runs only; the
    /// inference kernels index the shared head instead).
    fn repeat_kv(&self, x: Tensor) -> Result<Tensor> {
        if self.n_kv_head == self.n_head {
            return Ok(x);
        }
        let group = self.n_head / self.n_kv_head;
        let idx: Vec<u32> = (0..self.n_head).map(|h| (h / group) as u32).collect();
        let idx = Tensor::from_vec(idx, self.n_head, x.device())?;
        Ok(x.index_select(&idx, 2)?)
    }

    /// x: `[batch, pos, d]` (already normalised) → attention output `[batch, pos, d]`.
    /// `past`: keys/values of positions `0..offset`, `[batch, offset, kv_head, d_head]`, as
    /// `hook_k` / `hook_v` record them (before the rotary embedding).
    fn forward(
        &self,
        x: &Tensor,
        l: usize,
        past: Option<&(Tensor, Tensor)>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let grad = ctx.run.grad;
        let (q, k, v) = self.qkv(x, grad)?;
        let q = ctx.hook(Hook::Q(l), q)?; // [b, t, nh, dh]
        let k = ctx.hook(Hook::K(l), k)?; // [b, t, nkv, dh]
        let v = ctx.hook(Hook::V(l), v)?; // [b, t, nkv, dh]
        let (k, v) = with_past(k, v, past)?;
        let q = self.rotate(q, ctx.offset)?;
        let k = self.rotate(k, 0)?;
        let scale = self.scale;
        let z = if grad {
            let tk = k.dim(1)?;
            let q = q.transpose(1, 2)?.contiguous()?; // [b, nh, t, dh]
            let k = self.repeat_kv(k)?.transpose(1, 2)?.contiguous()?; // [b, nh, tk, dh]
            let v = self.repeat_kv(v)?.transpose(1, 2)?.contiguous()?; // [b, nh, tk, dh]
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
        self.project(&z, grad)
    }

    /// Attention of the last query of `x` (`[batch, pos, d]`, normalised) over every key:
    /// `[batch, 1, d]`. `offset` is the absolute position of `x`'s first row.
    fn forward_last(
        &self,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        offset: usize,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let (q, k, v) = self.qkv(x, false)?;
        let q = q.narrow(1, t - 1, 1)?.contiguous()?; // [b, 1, nh, dh]
        let (k, v) = with_past(k, v, past)?;
        let q = self.rotate(q, offset + t - 1)?;
        let k = self.rotate(k, 0)?;
        let pattern = attn::pattern(&q, &k, offset + t - 1, self.scale)?; // [b, nh, 1, tk]
        self.project(&attn::mix(&pattern, &v)?, false) // [b, 1, d]
    }
}

/// The rotary embedding ("rotate half", as GPT-NeoX and Llama) of `x` `[b, t, heads, d_head]`
/// at absolute positions `first..first + t`: channel pairs (i, i + dim/2), i < dim/2, turned by
/// the angle p·base^(−2i/dim); channels from `dim` on pass through.
fn rope(x: &Tensor, first: usize, r: Rotary) -> Result<Tensor> {
    let (_, t, _, dh) = x.dims4()?;
    let half = r.dim / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in first..first + t {
        for i in 0..half {
            let angle = p as f64 * r.base.powf(-2.0 * i as f64 / r.dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (1, t, 1, half), x.device())?;
    let sin = Tensor::from_vec(sin, (1, t, 1, half), x.device())?;
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let mut parts = vec![
        (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?,
        (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?,
    ];
    if r.dim < dh {
        parts.push(x.narrow(3, r.dim, dh - r.dim)?);
    }
    Ok(Tensor::cat(&parts, 3)?.contiguous()?)
}

/// Keys and values of this call after those of earlier positions, if any.
fn with_past(k: Tensor, v: Tensor, past: Option<&(Tensor, Tensor)>) -> Result<(Tensor, Tensor)> {
    Ok(match past {
        Some((pk, pv)) if pk.dim(1)? > 0 => {
            (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?)
        }
        _ => (k, v),
    })
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

/// A pre-norm transformer block, sequential (GPT-2, Llama) or parallel (GPT-NeoX's
/// `use_parallel_residual`: attention and MLP both read the block's input).
pub(super) struct Block {
    pub(super) ln_1: LayerNorm,
    pub(super) attn: Attention,
    pub(super) ln_2: LayerNorm,
    pub(super) mlp: Mlp,
    parallel: bool,
}

impl Block {
    pub(super) fn load(w: &mut Weights, l: usize, cfg: &Config) -> Result<Self> {
        Ok(Block {
            ln_1: LayerNorm::load(w, &format!("h.{l}.ln_1"), cfg)?,
            attn: Attention::load(w, &format!("h.{l}.attn"), l, cfg)?,
            ln_2: LayerNorm::load(w, &format!("h.{l}.ln_2"), cfg)?,
            mlp: Mlp::load(w, &format!("h.{l}.mlp"), cfg)?,
            parallel: cfg.arch.parallel,
        })
    }

    /// `ln_1` of x `[batch, pos, d]`, in the same shape.
    fn ln_1(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        Ok(self
            .ln_1
            .forward(&x.reshape((b * t, d))?, grad)?
            .reshape((b, t, d))?)
    }

    /// The MLP sublayer of x `[batch, pos, d]` (`ln_2` then MLP), in the same shape.
    fn mlp(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = self.ln_2.forward(&x.reshape((b * t, d))?, grad)?;
        Ok(self.mlp.forward(&h, grad)?.reshape((b, t, d))?)
    }

    /// x: `blocks.{l}.hook_resid_pre` `[batch, pos, d]` → `hook_resid_post` `[batch, pos, d]`.
    pub(super) fn forward(
        &self,
        x: Tensor,
        l: usize,
        past: Option<&(Tensor, Tensor)>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let grad = ctx.run.grad;
        let x = ctx.hook(Hook::ResidPre(l), x)?;
        let a = self.attn.forward(&self.ln_1(&x, grad)?, l, past, ctx)?;
        let a = ctx.hook(Hook::AttnOut(l), a)?;
        if self.parallel {
            let m = ctx.hook(Hook::MlpOut(l), self.mlp(&x, grad)?)?;
            return ctx.hook(Hook::ResidPost(l), ((x + a)? + m)?);
        }
        let x = ctx.hook(Hook::ResidMid(l), (x + a)?)?;
        let m = ctx.hook(Hook::MlpOut(l), self.mlp(&x, grad)?)?;
        ctx.hook(Hook::ResidPost(l), (x + m)?)
    }

    /// The block at the last position of `x` (`hook_resid_pre`, `[batch, pos, d]`, its first
    /// row at absolute position `offset`) only → `[batch, 1, d]`: keys and values over every
    /// position, the rest at the last one. For `Run::last_position_only` (inference; the caller
    /// runs `hook_resid_pre`, no hook fires in here).
    pub(super) fn forward_last(
        &self,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        offset: usize,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let a = self
            .attn
            .forward_last(&self.ln_1(x, false)?, past, offset)?; // [b, 1, d]
        let x = x.narrow(1, t - 1, 1)?; // [b, 1, d]
        if self.parallel {
            let m = self.mlp(&x, false)?;
            return Ok(((x + a)? + m)?);
        }
        let x = (x + a)?;
        let m = self.mlp(&x, false)?;
        Ok((x + m)?)
    }
}
