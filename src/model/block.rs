//! Causal self-attention and the pre-LN block, each with its full-sequence forward (every hook,
//! differentiable or not) and its last-position forward (inference only, for
//! `Run::last_position_only`). Hooks fire through the model's per-run `Ctx`; the sublayers live
//! in `layers`, the inference kernels in `attn`; the model above owns embedding and unembedding.

use super::layers::{LayerNorm, Linear, Mlp};
use super::{attn, Ctx, Weights};
use crate::model::hooks::Hook;
use crate::model::Config;
use crate::Result;
use candle_core::{Device, IndexOp, Tensor, D};

/// Causal self-attention.
pub(super) struct Attention {
    pub(super) c_attn: Linear,
    pub(super) c_proj: Linear,
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

    /// Queries, keys and values of `x` (`[batch, pos, d]`, layer-normed) in one product:
    /// `[batch, pos, 3, head, d_head]`.
    fn qkv(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        Ok(self
            .c_attn
            .forward(&x.reshape((b * t, d))?, grad)?
            .reshape((b, t, 3, self.n_head, d / self.n_head))?)
    }

    /// The output projection of z `[batch, pos, head, d_head]` → `[batch, pos, d]`.
    fn project(&self, z: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t, nh, dh) = z.dims4()?;
        Ok(self
            .c_proj
            .forward(&z.reshape((b * t, nh * dh))?, grad)?
            .reshape((b, t, nh * dh))?)
    }

    /// 1/√d_head.
    fn scale(&self, d: usize) -> f64 {
        1.0 / ((d / self.n_head) as f64).sqrt()
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
        let (_, t, d) = x.dims3()?;
        let grad = ctx.run.grad;
        let qkv = self.qkv(x, grad)?;
        let q = ctx.hook(Hook::Q(l), qkv.i((.., .., 0))?.contiguous()?)?; // [b, t, nh, dh]
        let k = ctx.hook(Hook::K(l), qkv.i((.., .., 1))?.contiguous()?)?; // [b, t, nh, dh]
        let v = ctx.hook(Hook::V(l), qkv.i((.., .., 2))?.contiguous()?)?; // [b, t, nh, dh]
        let (k, v) = with_past(k, v, past)?;
        let scale = self.scale(d);
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
        self.project(&z, grad)
    }

    /// Attention of the last query of `x` (`[batch, pos, d]`, layer-normed) over every key:
    /// `[batch, 1, d]`. `offset` is the absolute position of `x`'s first row.
    fn forward_last(
        &self,
        x: &Tensor,
        past: Option<&(Tensor, Tensor)>,
        offset: usize,
    ) -> Result<Tensor> {
        let (_, t, d) = x.dims3()?;
        let qkv = self.qkv(x, false)?;
        let q = qkv.i((.., t - 1..t, 0))?.contiguous()?; // [b, 1, nh, dh]
        let k = qkv.i((.., .., 1))?.contiguous()?; // [b, t, nh, dh]
        let v = qkv.i((.., .., 2))?.contiguous()?;
        let (k, v) = with_past(k, v, past)?;
        let pattern = attn::pattern(&q, &k, offset + t - 1, self.scale(d))?; // [b, nh, 1, tk]
        self.project(&attn::mix(&pattern, &v)?, false) // [b, 1, d]
    }
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

/// A pre-LN transformer block.
pub(super) struct Block {
    pub(super) ln_1: LayerNorm,
    pub(super) attn: Attention,
    pub(super) ln_2: LayerNorm,
    pub(super) mlp: Mlp,
}

impl Block {
    pub(super) fn load(w: &mut Weights, l: usize, cfg: &Config) -> Result<Self> {
        let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Ok(Block {
            ln_1: LayerNorm::load(w, &format!("h.{l}.ln_1"), d, eps)?,
            attn: Attention::load(w, &format!("h.{l}.attn"), cfg)?,
            ln_2: LayerNorm::load(w, &format!("h.{l}.ln_2"), d, eps)?,
            mlp: Mlp::load(w, &format!("h.{l}.mlp"), cfg)?,
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
        let x = (x.narrow(1, t - 1, 1)? + a)?; // [b, 1, d]
        let m = self.mlp(&x, false)?;
        Ok((x + m)?)
    }
}
