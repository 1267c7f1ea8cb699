//! `gelu_new` (GPT-2's tanh-approximated GELU) as a candle custom op with a hand-written backward.
//!
//! candle's own `gelu()` calls scalar `tanhf` and was the largest single cost of a forward
//! pass (docs/DESIGN.md §7); here tanh is computed from one `exp`, within 3e-7 of the exact value.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// sqrt(2/π), the constant of the tanh approximation.
pub(crate) const K0: f32 = 0.797_884_6;
/// Cubic coefficient of the tanh approximation (Hendrycks & Gimpel).
pub(crate) const K1: f32 = 0.044_715;
/// Below this many elements the work is too small to be worth splitting across threads.
const PAR_MIN: usize = 1 << 15;

/// tanh(u) = 1 − 2/(1 + e^{2u}); saturates cleanly to ±1 for large |u|.
#[inline]
fn tanh_exp(u: f32) -> f32 {
    1.0 - 2.0 / (1.0 + (2.0 * u).exp())
}

#[inline]
pub(crate) fn gelu_new(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh_exp(K0 * (x + K1 * x * x * x)))
}

#[inline]
pub(crate) fn gelu_new_grad(x: f32) -> f32 {
    let t = tanh_exp(K0 * (x + K1 * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K0 * (1.0 + 3.0 * K1 * x * x)
}

/// `f` over a contiguous f32 tensor. Generic (not a function pointer) so that `f` is inlined
/// into the loop: through a pointer the per-element call cost a quarter of a sampling run.
fn map_f32<F: Fn(f32) -> f32 + Sync>(
    name: &'static str,
    storage: &CpuStorage,
    layout: &Layout,
    f: F,
) -> Result<(CpuStorage, Shape)> {
    let src = match storage {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{name}: only f32 is supported"),
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{name}: input must be contiguous")
    };
    let src = &src[start..end];
    let mut out = vec![0f32; src.len()];
    if src.len() >= PAR_MIN {
        out.par_chunks_mut(4096)
            .zip(src.par_chunks(4096))
            .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &x)| *o = f(x)));
    } else {
        out.iter_mut().zip(src).for_each(|(o, &x)| *o = f(x));
    }
    Ok((CpuStorage::F32(out), layout.shape().clone()))
}

struct GeluNew;
struct GeluNewGrad;

impl CustomOp1 for GeluNew {
    fn name(&self) -> &'static str {
        "gelu-new"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map_f32(self.name(), s, l, gelu_new)
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.apply_op1_no_bwd(&GeluNewGrad)?;
        Ok(Some(grad_res.mul(&d)?))
    }
}

impl CustomOp1 for GeluNewGrad {
    fn name(&self) -> &'static str {
        "gelu-new-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map_f32(self.name(), s, l, gelu_new_grad)
    }
}

/// `gelu_new(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, elementwise, any shape (f32).
/// Differentiable.
pub fn gelu_new_op(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluNew)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_tanh_form() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let exact = 0.5
                * x as f64
                * (1.0 + (K0 as f64 * (x as f64 + K1 as f64 * (x as f64).powi(3))).tanh());
            assert!(
                (gelu_new(x) as f64 - exact).abs() < 3e-6 * (1.0 + exact.abs()),
                "x={x}"
            );
        }
    }

    #[test]
    fn grad_matches_finite_difference() {
        for i in -60..=60 {
            let x = i as f64 / 10.0;
            let h = 1e-3;
            let f = |x: f64| 0.5 * x * (1.0 + (K0 as f64 * (x + K1 as f64 * x.powi(3))).tanh());
            let fd = (f(x + h) - f(x - h)) / (2.0 * h);
            assert!((gelu_new_grad(x as f32) as f64 - fd).abs() < 1e-4, "x={x}");
        }
    }
}
