//! The GPT-2 sublayers below attention: LayerNorm, HF's Conv1D linear and the MLP, plus the
//! row-blocking that keeps differentiated gemms deterministic across CPUs. Loads by HF tensor
//! name through [`Weights`]; knows nothing of hooks, blocks or the model above.

use super::gelu::gelu_new_op;
use super::Weights;
use crate::model::Config;
use crate::Result;
use candle_core::{Tensor, D};

/// Rows per gemm in a differentiable run. candle's CPU matmul (the `gemm` crate) splits a
/// product's inner dimension into blocks sized from the CPU's L1 cache once it exceeds 512, so
/// a weight gradient `xᵀ·g` summed over more rows would round differently on machines with other
/// caches (it did: the zoo trained on one CPU did not reproduce on another). With at most 512
/// rows per product every inner dimension of training fits one block, and a seed gives the same
/// bytes on every x86-64 machine with AVX2 and FMA.
const GRAD_ROWS: usize = 512;

/// `f` applied to `x` `[n, ..]`; in a differentiable run with more than [`GRAD_ROWS`] rows, to
/// each block of at most that many rows, concatenated.
pub(super) fn by_rows(
    x: &Tensor,
    grad: bool,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
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
pub(super) fn rows_of(v: &Tensor, rows: usize, grad: bool) -> Result<Tensor> {
    let v = v.unsqueeze(0)?;
    Ok(if grad {
        Tensor::ones((rows, 1), v.dtype(), v.device())?.matmul(&v)?
    } else {
        v.broadcast_as((rows, v.dim(1)?))?
    })
}

/// LayerNorm over the last dimension, with learned gain and bias.
pub(super) struct LayerNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) eps: f64,
}

impl LayerNorm {
    pub(super) fn load(w: &mut Weights, prefix: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.take(&format!("{prefix}.weight"), &[d])?,
            bias: w.take(&format!("{prefix}.bias"), &[d])?,
            eps,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
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
    pub(super) fn normalize(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
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
    pub(super) fn affine(&self, xhat: &Tensor, grad: bool) -> Result<Tensor> {
        by_rows(xhat, grad, |xhat| {
            let n = xhat.dim(0)?;
            Ok(((xhat * rows_of(&self.weight, n, grad)?)? + rows_of(&self.bias, n, grad)?)?)
        })
    }
}

/// HF's Conv1D: `y = x·W + b` with W stored `[in, out]`.
pub(super) struct Linear {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl Linear {
    pub(super) fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Linear {
            weight: w.take(&format!("{prefix}.weight"), &[d_in, d_out])?,
            bias: w.take(&format!("{prefix}.bias"), &[d_out])?,
        })
    }
    /// x: `[n, in]` → `[n, out]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
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

/// The MLP: `c_proj(gelu_new(c_fc(x)))`.
pub(super) struct Mlp {
    pub(super) c_fc: Linear,
    pub(super) c_proj: Linear,
}

impl Mlp {
    pub(super) fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::load(w, &format!("{prefix}.c_fc"), cfg.n_embd, cfg.d_mlp())?,
            c_proj: Linear::load(w, &format!("{prefix}.c_proj"), cfg.d_mlp(), cfg.n_embd)?,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let h = gelu_new_op(&self.c_fc.forward(x, grad)?)?; // [n, d_mlp]
        self.c_proj.forward(&h, grad)
    }
}
