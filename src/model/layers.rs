//! The sublayers below attention: LayerNorm / RMSNorm, the `[in, out]` linear and the (gated) MLP, plus the
//! row-blocking that keeps differentiated gemms deterministic across CPUs. Loads by HF tensor
//! name through [`Weights`]; knows nothing of hooks, blocks or the model above.

use super::gelu::gelu_new_op;
use super::Weights;
use crate::model::config::{Act, Norm};
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

/// LayerNorm (gain and bias) or RMSNorm (gain only) over the last dimension.
pub(super) struct LayerNorm {
    pub(super) kind: Norm,
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
    pub(super) eps: f64,
}

impl LayerNorm {
    pub(super) fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        let (d, kind) = (cfg.n_embd, cfg.arch.norm);
        Ok(LayerNorm {
            kind,
            weight: w.take(&format!("{prefix}.weight"), &[d])?,
            bias: match kind {
                Norm::Layer => Some(w.take(&format!("{prefix}.bias"), &[d])?),
                Norm::Rms => None,
            },
            eps: cfg.layer_norm_epsilon,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        if grad {
            return self.affine(&self.normalize(x, true)?, true);
        }
        let x = x.contiguous()?;
        Ok(match &self.bias {
            Some(bias) => candle_nn::ops::layer_norm(&x, &self.weight, bias, self.eps as f32)?,
            None => candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?,
        })
    }

    /// LayerNorm: (x − mean) / √(var + eps); RMSNorm: x / √(mean(x²) + eps); before the gain
    /// (and bias), as TransformerLens's `hook_normalized` records it.
    pub(super) fn normalize(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        if !grad {
            let ones = self.weight.ones_like()?;
            let x = x.contiguous()?;
            return Ok(match self.kind {
                Norm::Layer => {
                    candle_nn::ops::layer_norm(&x, &ones, &ones.zeros_like()?, self.eps as f32)?
                }
                Norm::Rms => candle_nn::ops::rms_norm(&x, &ones, self.eps as f32)?,
            });
        }
        // Hand-written: candle's fused kernels have no backward (docs/DESIGN.md §7).
        let xc = match self.kind {
            Norm::Layer => x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?,
            Norm::Rms => x.clone(),
        };
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        Ok(xc.broadcast_div(&(var + self.eps)?.sqrt()?)?)
    }

    /// xhat · gain (+ bias). xhat: `[n, d]`.
    pub(super) fn affine(&self, xhat: &Tensor, grad: bool) -> Result<Tensor> {
        by_rows(xhat, grad, |xhat| {
            let n = xhat.dim(0)?;
            let y = (xhat * rows_of(&self.weight, n, grad)?)?;
            Ok(match &self.bias {
                Some(b) => (y + rows_of(b, n, grad)?)?,
                None => y,
            })
        })
    }
}

/// `y = x·W (+ b)` with W stored `[in, out]` (HF's Conv1D; the other families' `nn.Linear`
/// weights are transposed on loading).
pub(super) struct Linear {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
}

impl Linear {
    pub(super) fn load(
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Linear {
            weight: w.take(&format!("{prefix}.weight"), &[d_in, d_out])?,
            bias: if bias {
                Some(w.take(&format!("{prefix}.bias"), &[d_out])?)
            } else {
                None
            },
        })
    }
    /// x: `[n, in]` → `[n, out]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        by_rows(x, grad, |x| {
            let y = x.matmul(&self.weight)?;
            Ok(match &self.bias {
                None => y,
                Some(b) if grad => (y + rows_of(b, x.dim(0)?, true)?)?,
                Some(b) => y.broadcast_add(b)?,
            })
        })
    }
    /// The weight and (if any) the bias, with their names under `prefix`.
    pub(super) fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut v = vec![(format!("{prefix}.weight"), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push((format!("{prefix}.bias"), b.clone()));
        }
        v
    }
}

/// `act(x)` elementwise.
fn activate(act: Act, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Act::GeluNew => gelu_new_op(x)?,
        Act::Gelu => x.gelu_erf()?,
        Act::Relu => x.relu()?,
        Act::Silu => x.silu()?,
    })
}

/// The MLP: `c_proj(act(c_fc(x)))`, or gated (SwiGLU) `c_proj(act(c_gate(x)) · c_fc(x))`.
pub(super) struct Mlp {
    pub(super) c_fc: Linear,
    pub(super) c_gate: Option<Linear>,
    pub(super) c_proj: Linear,
    act: Act,
}

impl Mlp {
    pub(super) fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        let (d, m, b) = (cfg.n_embd, cfg.d_mlp(), cfg.arch.mlp_bias);
        Ok(Mlp {
            c_fc: Linear::load(w, &format!("{prefix}.c_fc"), d, m, b)?,
            c_gate: if cfg.arch.gated {
                Some(Linear::load(w, &format!("{prefix}.c_gate"), d, m, b)?)
            } else {
                None
            },
            c_proj: Linear::load(w, &format!("{prefix}.c_proj"), m, d, b)?,
            act: cfg.arch.act,
        })
    }
    /// x: `[n, d]` → `[n, d]`.
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let h = self.c_fc.forward(x, grad)?; // [n, d_mlp]
        let h = match &self.c_gate {
            Some(g) => (activate(self.act, &g.forward(x, grad)?)? * h)?,
            None => activate(self.act, &h)?,
        };
        self.c_proj.forward(&h, grad)
    }
}
