//! The engine's row kernels: LayerNorm and its backward, log-softmax, and causal attention of
//! one sequence (forward and backward) over rows laid out as GPT-2's fused `q | k | v`.
//! Plain loops in a fixed order (no fused multiply-add outside `gemm`, whose chains are the
//! same on every CPU); no allocation, no threads.

/// LayerNorm of each `d`-wide row of `x`: `xhat = (x − mean)·rstd` with `rstd = 1/√(var + eps)`
/// (biased variance), `y = xhat·w + b`. Writes `xhat`, `rstd` (one per row) and `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &[f32],
    d: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
    xhat: &mut [f32],
    rstd: &mut [f32],
    y: &mut [f32],
) {
    for (((xr, hr), r), yr) in x
        .chunks_exact(d)
        .zip(xhat.chunks_exact_mut(d))
        .zip(rstd.iter_mut())
        .zip(y.chunks_exact_mut(d))
    {
        let mean = sum(xr) / d as f32;
        hr.iter_mut().zip(xr).for_each(|(h, &v)| *h = v - mean);
        let var = dot(hr, hr) / d as f32;
        // A variance past f32's range means the row overflowed: NaN, not a silent 0 gain, so
        // that training's non-finite guard stops.
        let s = if var.is_finite() {
            1.0 / (var + eps).sqrt()
        } else {
            f32::NAN
        };
        *r = s;
        for ((h, o), (&g, &bb)) in hr.iter_mut().zip(yr.iter_mut()).zip(w.iter().zip(b)) {
            *h *= s;
            *o = *h * g + bb;
        }
    }
}

/// Backward of [`layer_norm`] for rows `dy`: adds to the gain and bias gradients (rows in
/// order) and adds each row's input gradient to `dx`. `gx` is scratch of `d` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_back(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    w: &[f32],
    d: usize,
    dw: &mut [f32],
    db: &mut [f32],
    dx: &mut [f32],
    gx: &mut [f32],
) {
    for (((gr, hr), &s), xr) in dy
        .chunks_exact(d)
        .zip(xhat.chunks_exact(d))
        .zip(rstd)
        .zip(dx.chunks_exact_mut(d))
    {
        for (((&g, &h), dww), dbb) in gr.iter().zip(hr).zip(dw.iter_mut()).zip(db.iter_mut()) {
            *dww += g * h;
            *dbb += g;
        }
        // With gx = dy·w: dx = rstd·(gx − mean(gx) − xhat·mean(gx·xhat)).
        gx.iter_mut()
            .zip(gr.iter().zip(w))
            .for_each(|(o, (&g, &ww))| *o = g * ww);
        let mean_g = sum(gx) / d as f32;
        let mean_gh = dot(gx, hr) / d as f32;
        for ((o, &g), &h) in xr.iter_mut().zip(gx.iter()).zip(hr) {
            *o += s * (g - mean_g - h * mean_gh);
        }
    }
}

/// `row ← log softmax(row)`, the normaliser summed in f64.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    row.iter_mut().for_each(|x| *x -= lse);
}

/// One sequence's queries and its keys and values, as strided rows.
pub struct Heads<'a> {
    /// Query rows (row i's query for head h at `q[i * q_stride + h * dh..]`).
    pub q: &'a [f32],
    /// Step between query rows.
    pub q_stride: usize,
    /// Key/value rows: row j's key at `kv[j * kv_stride + k_at + h * dh..]`, its value at
    /// `kv[j * kv_stride + v_at + h * dh..]`.
    pub kv: &'a [f32],
    /// Step between key/value rows.
    pub kv_stride: usize,
    /// Offset of the keys in a key/value row.
    pub k_at: usize,
    /// Offset of the values in a key/value row.
    pub v_at: usize,
    /// Heads.
    pub n_head: usize,
    /// Channels per head.
    pub dh: usize,
    /// Absolute position of the first query row (query i sees keys `0..=offset + i`).
    pub offset: usize,
    /// Factor on q·k.
    pub scale: f32,
}

impl Heads<'_> {
    /// Causal attention of `tq` query rows: writes each head's probabilities into `pattern`
    /// (`[head, tq, tk]`, `tk = offset + tq`, zero above the diagonal) and the mixed values into
    /// `z` (`[tq, n_head·dh]`, head-major within a row).
    #[inline(always)]
    pub fn forward(&self, tq: usize, pattern: &mut [f32], z: &mut [f32]) {
        let (nh, dh) = (self.n_head, self.dh);
        let tk = self.offset + tq;
        let d = nh * dh;
        for h in 0..nh {
            for i in 0..tq {
                let qi = &self.q[i * self.q_stride + h * dh..][..dh];
                let row = &mut pattern[(h * tq + i) * tk..][..tk];
                let last = self.offset + i;
                let mut mx = f32::NEG_INFINITY;
                for (j, r) in row.iter_mut().enumerate().take(last + 1) {
                    let kj = &self.kv[j * self.kv_stride + self.k_at + h * dh..][..dh];
                    *r = dot(qi, kj) * self.scale;
                    mx = mx.max(*r);
                }
                let seen = &mut row[..=last];
                seen.iter_mut().for_each(|r| *r = exp(*r - mx));
                let inv = 1.0 / sum(seen);
                row.iter_mut().take(last + 1).for_each(|r| *r *= inv);
                row.iter_mut().skip(last + 1).for_each(|r| *r = 0.0);
                let zi = &mut z[i * d + h * dh..][..dh];
                zi.fill(0.0);
                for (j, &p) in row.iter().enumerate().take(last + 1) {
                    let vj = &self.kv[j * self.kv_stride + self.v_at + h * dh..][..dh];
                    zi.iter_mut().zip(vj).for_each(|(o, &v)| *o += p * v);
                }
            }
        }
    }

    /// Backward of [`Heads::forward`] for `tq` queries whose keys and values are the rows of
    /// the same sequence (the training pass: window start 0, the queries rows `offset..`,
    /// `q | k | v` rows of `3·n_head·dh`): given `dz` (`[tq, n_head·dh]`) and the stored
    /// `pattern` (`[head, tq, tk]`), adds the query, key and value gradients into `dqkv` (rows
    /// `0..tk` laid out as the input). `dp` is scratch of `tk` floats.
    #[inline(always)]
    pub fn backward(
        &self,
        tq: usize,
        pattern: &[f32],
        dz: &[f32],
        dqkv: &mut [f32],
        dp: &mut [f32],
    ) {
        let (nh, dh) = (self.n_head, self.dh);
        let d = nh * dh;
        let s3 = 3 * d;
        let tk = self.offset + tq;
        for h in 0..nh {
            for i in 0..tq {
                let last = self.offset + i; // the query's own row: keys 0..=last
                let p = &pattern[(h * tq + i) * tk..][..tk];
                let dzi = &dz[i * d + h * dh..][..dh];
                // dP[j] = dz_i · v_j; then dS = P ∘ (dP − Σ P·dP), scaled.
                let mut pdp = 0f32;
                for (j, g) in dp.iter_mut().enumerate().take(last + 1) {
                    let vj = &self.kv[j * self.kv_stride + self.v_at + h * dh..][..dh];
                    *g = dot(dzi, vj);
                    pdp += p[j] * *g;
                }
                for (j, g) in dp.iter_mut().enumerate().take(last + 1) {
                    *g = p[j] * (*g - pdp) * self.scale;
                }
                // dv_j += P[i, j] dz_i; dq_i += Σ_j dS[i, j] k_j; dk_j += dS[i, j] q_i.
                let qi = &self.q[i * self.q_stride + h * dh..][..dh];
                for j in 0..=last {
                    let (pj, sj) = (p[j], dp[j]);
                    let kj = &self.kv[j * self.kv_stride + self.k_at + h * dh..][..dh];
                    let dqi = &mut dqkv[last * s3 + h * dh..][..dh];
                    dqi.iter_mut().zip(kj).for_each(|(o, &k)| *o += sj * k);
                    let dkj = &mut dqkv[j * s3 + d + h * dh..][..dh];
                    dkj.iter_mut().zip(qi).for_each(|(o, &q)| *o += sj * q);
                    let dvj = &mut dqkv[j * s3 + 2 * d + h * dh..][..dh];
                    dvj.iter_mut().zip(dzi).for_each(|(o, &g)| *o += pj * g);
                }
            }
        }
    }
}

/// Σ a·b as eight interleaved partial sums (lane j takes elements j, j + 8, …) added in a
/// fixed tree, then the tail in order: one order on every CPU, and it vectorises.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Σ x, in [`dot`]'s order.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = x.chunks_exact(8);
    let r = c.remainder();
    for v in c {
        for j in 0..8 {
            acc[j] += v[j];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in r {
        s += v;
    }
    s
}

/// e^x without a library call, so that loops over it vectorise: x = n·ln 2 + r with n an
/// integer (rounded by adding 1.5·2²³), e^r by Cephes's degree-6 polynomial, 2ⁿ by building
/// the exponent bits. Within 2 ulp of e^x for x in [−87, 88] (tested); clamped to that range
/// (e^−87 ≈ 1.6e−38 stands for smaller results); NaN stays NaN. Plain f32 arithmetic in a
/// fixed order: the same bits on every CPU.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³
    const LN2_HI: f32 = 0.693_359_4; // 355/512: n·LN2_HI is exact for |n| ≤ 127
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    p * f32::from_bits(((n_bits + 127) as u32) << 23)
}

/// GPT-2's `gelu_new` of x and its derivative, sharing one tanh (from [`exp`]).
#[inline(always)]
pub fn gelu_and_grad(x: f32) -> (f32, f32) {
    use crate::model::gelu::{K0, K1};
    let u = K0 * (x + K1 * x * x * x);
    let t = 1.0 - 2.0 / (1.0 + exp(2.0 * u));
    let g = 0.5 * x * (1.0 + t);
    let dg = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K0 * (1.0 + 3.0 * K1 * x * x);
    (g, dg)
}
