//! Inference kernels for small-context attention: causal softmax(q·kᵀ) and pattern·v, read and
//! written in the hook layouts. candle's batched matmul issues one (threaded) gemm call per
//! batch × head, which dominates a forward at these sizes; here each (batch, head) is one
//! rayon task of plain loops. No backward: differentiated runs use candle's ops.
//! Must not be used for differentiable runs (no backward); those use candle ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The two inputs of a kernel as f32 slices (both must be contiguous f32).
fn f32_slices<'a>(
    name: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32])> {
    let one = |s: &'a CpuStorage, l: &Layout| -> Result<&'a [f32]> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("{name}: only f32 is supported")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("{name}: input must be contiguous")
        };
        Ok(&v[a..b])
    };
    Ok((one(s1, l1)?, one(s2, l2)?))
}

/// Below this many output elements a kernel runs on the calling thread: handing it to rayon's
/// pool costs more than it computes (a batch-1 forward).
const PAR_MIN: usize = 1 << 12;

/// `f(i, chunk)` over `out.chunks_mut(size)`, split across rayon's threads when `out` is large
/// enough. Each chunk is computed the same way either way, so results are identical.
fn for_chunks(out: &mut [f32], size: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// q `[b, t, h, dh]`, k `[b, tk, hk, dh]` → pattern `[b, h, t, tk]`: query i (absolute
/// `offset + i`) attends to keys `0..=offset + i`; query head `hi` reads key head
/// `hi / (h / hk)` (grouped-query attention when hk < h).
struct Pattern {
    offset: usize,
    scale: f32,
}

impl CustomOp2 for Pattern {
    fn name(&self) -> &'static str {
        "attn-pattern"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k) = f32_slices(self.name(), (s1, l1), (s2, l2))?;
        let (b, t, h, dh) = l1.shape().dims4()?;
        let (_, tk, hk, _) = l2.shape().dims4()?;
        let group = h / hk; // query heads per key head (grouped-query attention)
        let mut out = vec![0f32; b * h * t * tk];
        for_chunks(&mut out, t * tk, |bh, rows| {
            let (bi, hi) = (bh / h, bh % h);
            let ki = hi / group;
            for (i, row) in rows.chunks_mut(tk).enumerate() {
                let qi = &q[((bi * t + i) * h + hi) * dh..][..dh];
                let last = (self.offset + i).min(tk - 1);
                let mut mx = f32::NEG_INFINITY;
                for (j, r) in row.iter_mut().enumerate().take(last + 1) {
                    let kj = &k[((bi * tk + j) * hk + ki) * dh..][..dh];
                    *r = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * self.scale;
                    mx = mx.max(*r);
                }
                let mut sum = 0f32;
                for r in row.iter_mut().take(last + 1) {
                    *r = (*r - mx).exp();
                    sum += *r;
                }
                row.iter_mut().take(last + 1).for_each(|r| *r /= sum);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, h, t, tk))))
    }
}

/// pattern `[b, h, t, tk]`, v `[b, tk, hk, dh]` → z `[b, t, h, dh]` (head `hi` reads value head
/// `hi / (h / hk)`).
struct Mix;

impl CustomOp2 for Mix {
    fn name(&self) -> &'static str {
        "attn-mix"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (p, v) = f32_slices(self.name(), (s1, l1), (s2, l2))?;
        let (b, h, t, tk) = l1.shape().dims4()?;
        let (_, _, hk, dh) = l2.shape().dims4()?;
        let group = h / hk;
        let mut out = vec![0f32; b * t * h * dh];
        // One task per (batch, query position): its h·dh outputs are contiguous.
        for_chunks(&mut out, h * dh, |bi_i, zrow| {
            let (bi, i) = (bi_i / t, bi_i % t);
            for hi in 0..h {
                let prow = &p[((bi * h + hi) * t + i) * tk..][..tk];
                let z = &mut zrow[hi * dh..(hi + 1) * dh];
                for (j, &w) in prow.iter().enumerate() {
                    if w != 0.0 {
                        let vj = &v[((bi * tk + j) * hk + hi / group) * dh..][..dh];
                        z.iter_mut().zip(vj).for_each(|(z, x)| *z += w * x);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, h, dh))))
    }
}

/// Causal attention probabilities. q: `[b, t, h, dh]`, k: `[b, tk, hk, dh]` (keys of positions
/// `0..tk`, the last `t` of them the queries' own) → `[b, h, t, tk]`.
pub fn pattern(q: &Tensor, k: &Tensor, offset: usize, scale: f64) -> Result<Tensor> {
    q.contiguous()?.apply_op2_no_bwd(
        &k.contiguous()?,
        &Pattern {
            offset,
            scale: scale as f32,
        },
    )
}

/// Weighted sum of values. pattern: `[b, h, t, tk]`, v: `[b, tk, hk, dh]` → z `[b, t, h, dh]`.
pub fn mix(pattern: &Tensor, v: &Tensor) -> Result<Tensor> {
    pattern
        .contiguous()?
        .apply_op2_no_bwd(&v.contiguous()?, &Mix)
}
