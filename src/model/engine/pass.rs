//! The engine's forward pass over one micro-batch: a window of positions of `b` sequences,
//! keys and values of earlier positions from the micro-batch's cache, logits at chosen rows;
//! every activation the backward needs is kept in [`Acts`]. nanoGPT order: embeddings →
//! blocks (ln_1 → attention → residual, ln_2 → MLP → residual) → ln_f → tied unembedding.

use super::gemm::{gemm, Mat};
use super::ops::{gelu_and_grad, layer_norm, Heads};
use super::Engine;

/// Weights the products need transposed, made once per step from the flat parameters (the
/// buffers are kept between steps).
#[derive(Default)]
pub struct Prepared {
    /// The unembedding `wteᵀ` `[d, vocab]`.
    pub wte_t: Vec<f32>,
    /// Per block, for the backward: `c_attnᵀ` `[3d, d]`, attention `c_projᵀ` `[d, d]`,
    /// `c_fcᵀ` `[m, d]`, MLP `c_projᵀ` `[d, m]` (empty when only the forward runs).
    pub blocks_t: Vec<[Vec<f32>; 4]>,
}

/// `t` ← `x` `[rows, cols]` (row-major) transposed.
fn transpose(x: &[f32], rows: usize, cols: usize, t: &mut Vec<f32>) {
    let t = sized(t, rows * cols);
    for (i, r) in x[..rows * cols].chunks_exact(cols).enumerate() {
        for (j, &v) in r.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
}

impl Prepared {
    /// The transposes of `params` (with `backward`, the blocks' too).
    pub fn fill(&mut self, e: &Engine, params: &[f32], backward: bool) {
        let (d, m, v) = (e.d, e.d_mlp, e.vocab);
        transpose(&params[e.wte..], v, d, &mut self.wte_t);
        if backward {
            self.blocks_t.resize_with(e.n_layer, Default::default);
            for (b, [qkv, o, fc, proj]) in e.blocks.iter().zip(&mut self.blocks_t) {
                transpose(&params[b.qkv_w..], d, 3 * d, qkv);
                transpose(&params[b.o_w..], d, d, o);
                transpose(&params[b.fc_w..], d, m, fc);
                transpose(&params[b.proj_w..], m, d, proj);
            }
        }
    }
}

/// One block's stored activations for a window of `rows` rows (the last block: `ln_1` and
/// `q | k | v` for every row, the rest for its query rows only).
#[derive(Default)]
pub struct BlockActs {
    /// ln_1: normalised input `[rows, d]`, 1/σ per row, output `[rows, d]`.
    pub xhat1: Vec<f32>,
    pub rstd1: Vec<f32>,
    pub h1: Vec<f32>,
    /// Fused `q | k | v` `[rows, 3d]`.
    pub qkv: Vec<f32>,
    /// Attention probabilities `[b, head, query rows, keys]`.
    pub pattern: Vec<f32>,
    /// Mixed values before `c_proj` `[rows, d]`.
    pub z: Vec<f32>,
    /// ln_2 as ln_1.
    pub xhat2: Vec<f32>,
    pub rstd2: Vec<f32>,
    pub h2: Vec<f32>,
    /// MLP activation and its derivative at the pre-activation `[rows, d_mlp]`.
    pub g: Vec<f32>,
    pub dg: Vec<f32>,
}

/// A micro-batch's activations, key/value cache and scratch, reused between calls.
#[derive(Default)]
pub struct Acts {
    /// Sequences, first window position, window length, cache length.
    pub b: usize,
    pub start: usize,
    pub len: usize,
    /// Window rows (relative) that are unembedded.
    pub positions: Vec<usize>,
    /// The last block's query rows of each sequence: first row and count (the rows from the
    /// first unembedded one to the last).
    pub sub: (usize, usize),
    /// The residual stream `[rows, d]`.
    pub x: Vec<f32>,
    /// A sublayer's output `[rows, d]`.
    pub out: Vec<f32>,
    pub blocks: Vec<BlockActs>,
    /// Per block: keys and values of every cached position, `[b, cache_len, 2d]` (k | v).
    pub kv: Vec<Vec<f32>>,
    pub cache_len: usize,
    /// ln_f of the unembedded rows: input `[rows_q, d]`, normalised, 1/σ, output.
    pub xf: Vec<f32>,
    pub xhatf: Vec<f32>,
    pub rstdf: Vec<f32>,
    pub hf: Vec<f32>,
    /// Logits `[b, positions, vocab]` (the loss head turns them into their gradient).
    pub logits: Vec<f32>,
}

/// `v` resized to `n` elements (contents unspecified; capacity kept between calls).
pub fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

impl Acts {
    /// Prepare the cache for `b` sequences of up to `cache_len` positions.
    pub fn reset_cache(&mut self, e: &Engine, b: usize, cache_len: usize) {
        self.kv.resize_with(e.n_layer, Vec::new);
        for kv in &mut self.kv {
            sized(kv, b * cache_len * 2 * e.d);
        }
        self.cache_len = cache_len;
        self.b = b;
    }
}

/// Forward a window: tokens `ids` (`[b, len]`) at absolute positions `start..start + len` of
/// `b` sequences whose keys and values of positions `0..start` are in `a`'s cache (see
/// [`Acts::reset_cache`]); logits at the window rows `positions` of every sequence into
/// `a.logits` (`[b, positions, vocab]`).
#[allow(clippy::too_many_arguments)]
pub fn forward_window(
    e: &Engine,
    p: &[f32],
    prep: &Prepared,
    ids: &[u32],
    start: usize,
    len: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    #[cfg(target_arch = "x86_64")]
    if super::simd() {
        // SAFETY: the CPU has AVX2 (`simd`).
        return unsafe { forward_window_avx2(e, p, prep, ids, start, len, positions, a) };
    }
    forward_window_body(e, p, prep, ids, start, len, positions, a)
}

/// [`forward_window`] compiled for AVX2 (wider vectors, the same operations in the same order).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_window_avx2(
    e: &Engine,
    p: &[f32],
    prep: &Prepared,
    ids: &[u32],
    start: usize,
    len: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    forward_window_body(e, p, prep, ids, start, len, positions, a)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_window_body(
    e: &Engine,
    p: &[f32],
    prep: &Prepared,
    ids: &[u32],
    start: usize,
    len: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    let (d, m, nh, v) = (e.d, e.d_mlp, e.n_head, e.vocab);
    let b = a.b;
    let rows = b * len;
    debug_assert!(start + len <= a.cache_len && ids.len() == rows);
    debug_assert!(!positions.is_empty() && positions.windows(2).all(|w| w[0] < w[1]));
    a.start = start;
    a.len = len;
    a.positions.clear();
    a.positions.extend_from_slice(positions);
    // The last block's attention output and MLP reach the logits only at the unembedded rows:
    // it runs them for the rows first..=last of the positions only (its keys and values still
    // for every row). Each row's values are the same chains whichever rows run beside it.
    let (q0, qn) = (
        positions[0],
        positions[positions.len() - 1] - positions[0] + 1,
    );
    a.sub = (q0, qn);
    // Embeddings: hook_embed + hook_pos_embed.
    let x = sized(&mut a.x, rows * d);
    for (r, xr) in x.chunks_exact_mut(d).enumerate() {
        let tok = &p[e.wte + ids[r] as usize * d..][..d];
        let pos = &p[e.wpe + (start + r % len) * d..][..d];
        xr.iter_mut()
            .zip(tok.iter().zip(pos))
            .for_each(|(o, (&t, &q))| *o = t + q);
    }
    a.blocks.resize_with(e.n_layer, BlockActs::default);
    for (l, at) in e.blocks.iter().enumerate() {
        let ba = &mut a.blocks[l];
        // Query rows of this block in each sequence: all, or the last block's narrowed ones.
        let (r0, rn) = if l + 1 == e.n_layer {
            (q0, qn)
        } else {
            (0, len)
        };
        let tk = start + r0 + rn;
        // ln_1 and q | k | v = b + h1 · W over every row   [rows, 3d]
        layer_norm(
            &a.x,
            d,
            &p[at.ln1_w..][..d],
            &p[at.ln1_b..][..d],
            e.eps,
            sized(&mut ba.xhat1, rows * d),
            sized(&mut ba.rstd1, rows),
            sized(&mut ba.h1, rows * d),
        );
        let qkv = sized(&mut ba.qkv, rows * 3 * d);
        with_bias(qkv, &p[at.qkv_b..][..3 * d]);
        gemm(
            rows,
            3 * d,
            d,
            Mat::rows(&ba.h1, d),
            &p[at.qkv_w..][..d * 3 * d],
            3 * d,
            qkv,
            3 * d,
            true,
        );
        // Keys and values into the cache at their positions.
        let kv = &mut a.kv[l];
        for (r, row) in ba.qkv.chunks_exact(3 * d).enumerate() {
            let (s, i) = (r / len, r % len);
            kv[(s * a.cache_len + start + i) * 2 * d..][..2 * d].copy_from_slice(&row[d..]);
        }
        if rn < len {
            // Keep only the query rows of the residual stream.
            for s in 0..b {
                a.x.copy_within((s * len + r0) * d..(s * len + r0 + rn) * d, s * rn * d);
            }
        }
        let rows_q = b * rn;
        // Attention, sequence by sequence.
        let pat = sized(&mut ba.pattern, b * nh * rn * tk);
        let z = sized(&mut ba.z, rows_q * d);
        for s in 0..b {
            Heads {
                q: &ba.qkv[(s * len + r0) * 3 * d..],
                q_stride: 3 * d,
                kv: &kv[s * a.cache_len * 2 * d..],
                kv_stride: 2 * d,
                k_at: 0,
                v_at: d,
                n_head: nh,
                dh: d / nh,
                offset: start + r0,
                scale: e.scale,
            }
            .forward(
                rn,
                &mut pat[s * nh * rn * tk..][..nh * rn * tk],
                &mut z[s * rn * d..][..rn * d],
            );
        }
        // attn_out = b + z · W; resid_mid = resid_pre + attn_out
        let x = &mut a.x[..rows_q * d];
        let out = sized(&mut a.out, rows_q * d);
        with_bias(out, &p[at.o_b..][..d]);
        gemm(
            rows_q,
            d,
            d,
            Mat::rows(&ba.z, d),
            &p[at.o_w..][..d * d],
            d,
            out,
            d,
            true,
        );
        x.iter_mut().zip(out.iter()).for_each(|(x, &o)| *x += o);
        // ln_2
        layer_norm(
            x,
            d,
            &p[at.ln2_w..][..d],
            &p[at.ln2_b..][..d],
            e.eps,
            sized(&mut ba.xhat2, rows_q * d),
            sized(&mut ba.rstd2, rows_q),
            sized(&mut ba.h2, rows_q * d),
        );
        // MLP: g = gelu_new(b + h2 · W_fc); mlp_out = b + g · W_proj; resid_post = resid_mid + mlp_out
        let g = sized(&mut ba.g, rows_q * m);
        with_bias(g, &p[at.fc_b..][..m]);
        gemm(
            rows_q,
            m,
            d,
            Mat::rows(&ba.h2, d),
            &p[at.fc_w..][..d * m],
            m,
            g,
            m,
            true,
        );
        let dg = sized(&mut ba.dg, rows_q * m);
        g.iter_mut()
            .zip(dg.iter_mut())
            .for_each(|(x, o)| (*x, *o) = gelu_and_grad(*x));
        let out = sized(&mut a.out, rows_q * d);
        with_bias(out, &p[at.proj_b..][..d]);
        gemm(
            rows_q,
            d,
            m,
            Mat::rows(&ba.g, m),
            &p[at.proj_w..][..m * d],
            d,
            out,
            d,
            true,
        );
        x.iter_mut().zip(out.iter()).for_each(|(x, &o)| *x += o);
    }
    // ln_f at the unembedded rows (of the last block's query rows), then the tied unembedding.
    let np = positions.len();
    let nq = b * np;
    let xf = sized(&mut a.xf, nq * d);
    for s in 0..b {
        for (k, &q) in positions.iter().enumerate() {
            let r = s * qn + q - q0;
            xf[(s * np + k) * d..][..d].copy_from_slice(&a.x[r * d..][..d]);
        }
    }
    layer_norm(
        &a.xf,
        d,
        &p[e.lnf_w..][..d],
        &p[e.lnf_b..][..d],
        e.eps,
        sized(&mut a.xhatf, nq * d),
        sized(&mut a.rstdf, nq),
        sized(&mut a.hf, nq * d),
    );
    let logits = sized(&mut a.logits, nq * v);
    gemm(
        nq,
        v,
        d,
        Mat::rows(&a.hf, d),
        &prep.wte_t,
        v,
        logits,
        v,
        false,
    );
}

/// Every row of `out` (as wide as `bias`) set to `bias` (the start of the product's chain).
fn with_bias(out: &mut [f32], bias: &[f32]) {
    out.chunks_exact_mut(bias.len())
        .for_each(|r| r.copy_from_slice(bias));
}

/// Forward whole sequences (`ids` `[b, t]`, positions `0..t`) for training: a fresh cache of
/// `t` positions, logits at `positions`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    e: &Engine,
    p: &[f32],
    prep: &Prepared,
    ids: &[u32],
    b: usize,
    t: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    a.reset_cache(e, b, t);
    forward_window(e, p, prep, ids, 0, t, positions, a);
}
