//! The engine's forward pass over one micro-batch: a window of positions of `b` sequences,
//! keys and values of earlier positions from the micro-batch's cache, logits at chosen rows;
//! every activation the backward needs is kept in [`Acts`]. nanoGPT order: embeddings →
//! blocks (ln_1 → attention → residual, ln_2 → MLP → residual) → ln_f → tied unembedding.

use super::gemm::{gemm, Mat};
use super::ops::{gelu_and_grad, layer_norm, Heads};
use super::{BlockParams, Engine, Params};

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
    pub fn fill(&mut self, e: &Engine, w: &Params, backward: bool) {
        let (d, m, v) = (e.d, e.d_mlp, e.vocab);
        transpose(w.wte, v, d, &mut self.wte_t);
        if backward {
            self.blocks_t.resize_with(e.n_layer, Default::default);
            for (b, [qkv, o, fc, proj]) in w.blocks.iter().zip(&mut self.blocks_t) {
                transpose(b.qkv_w, d, 3 * d, qkv);
                transpose(b.o_w, d, d, o);
                transpose(b.fc_w, d, m, fc);
                transpose(b.proj_w, m, d, proj);
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
    /// With [`Acts::keep`]: the block's input (`hook_resid_pre`), attention output and MLP
    /// output `[rows, d]`.
    pub resid_pre: Vec<f32>,
    pub attn_out: Vec<f32>,
    pub mlp_out: Vec<f32>,
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
    /// Keep each block's input and sublayer outputs (see [`BlockActs`]), for a record.
    pub keep: bool,
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

with_avx2! {
    /// Forward a window: tokens `ids` (`[b, len]`) at absolute positions `start..start + len` of
    /// `b` sequences whose keys and values of positions `0..start` are in `a`'s cache (see
    /// [`Acts::reset_cache`]); logits at the window rows `positions` of every sequence into
    /// `a.logits` (`[b, positions, vocab]`).
    pub fn forward_window => forward_window_avx2 => forward_window_body(
        e: &Engine,
        w: &Params,
        prep: &Prepared,
        ids: &[u32],
        start: usize,
        len: usize,
        positions: &[usize],
        a: &mut Acts,
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_window_body(
    e: &Engine,
    w: &Params,
    prep: &Prepared,
    ids: &[u32],
    start: usize,
    len: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    let (d, nh, v) = (e.d, e.n_head, e.vocab);
    let b = a.b;
    let rows = b * len;
    debug_assert!(start + len <= a.cache_len && ids.len() == rows);
    debug_assert!(positions.windows(2).all(|w| w[0] < w[1]));
    a.start = start;
    a.len = len;
    a.positions.clear();
    a.positions.extend_from_slice(positions);
    // The last block's attention output and MLP reach the logits only at the unembedded rows:
    // it runs them for the rows first..=last of the positions only (its keys and values still
    // for every row). Each row's values are the same chains whichever rows run beside it.
    // With no positions (a record), every row runs and nothing is unembedded.
    let (q0, qn) = match (positions.first(), positions.last()) {
        (Some(&f), Some(&l)) => (f, l - f + 1),
        _ => (0, len),
    };
    a.sub = (q0, qn);
    // Embeddings: hook_embed + hook_pos_embed.
    let x = sized(&mut a.x, rows * d);
    for (r, xr) in x.chunks_exact_mut(d).enumerate() {
        let tok = &w.wte[ids[r] as usize * d..][..d];
        let pos = &w.wpe[(start + r % len) * d..][..d];
        xr.iter_mut()
            .zip(tok.iter().zip(pos))
            .for_each(|(o, (&t, &q))| *o = t + q);
    }
    a.blocks.resize_with(e.n_layer, BlockActs::default);
    for (l, at) in w.blocks.iter().enumerate() {
        let ba = &mut a.blocks[l];
        // Query rows of this block in each sequence: all, or the last block's narrowed ones.
        let (r0, rn) = if l + 1 == e.n_layer {
            (q0, qn)
        } else {
            (0, len)
        };
        let tk = start + r0 + rn;
        if a.keep {
            sized(&mut ba.resid_pre, rows * d).copy_from_slice(&a.x);
        }
        attn_in(e, at, &a.x, rows, ba);
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
        let x = &mut a.x[..rows_q * d];
        attn_out(e, at, &ba.z, x, &mut a.out);
        if a.keep {
            sized(&mut ba.attn_out, rows_q * d).copy_from_slice(&a.out[..rows_q * d]);
        }
        mlp(e, at, x, ba, &mut a.out);
        if a.keep {
            sized(&mut ba.mlp_out, rows_q * d).copy_from_slice(&a.out[..rows_q * d]);
        }
    }
    if positions.is_empty() {
        return;
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
        w.lnf_w,
        w.lnf_b,
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

/// ln_1 of `rows` rows of `x` and their `q | k | v = b + h1 · W` `[rows, 3d]`, into `ba`.
#[inline(always)]
pub fn attn_in(e: &Engine, at: &BlockParams, x: &[f32], rows: usize, ba: &mut BlockActs) {
    let d = e.d;
    layer_norm(
        &x[..rows * d],
        d,
        at.ln1_w,
        at.ln1_b,
        e.eps,
        sized(&mut ba.xhat1, rows * d),
        sized(&mut ba.rstd1, rows),
        sized(&mut ba.h1, rows * d),
    );
    let qkv = sized(&mut ba.qkv, rows * 3 * d);
    with_bias(qkv, at.qkv_b);
    gemm(
        rows,
        3 * d,
        d,
        Mat::rows(&ba.h1, d),
        at.qkv_w,
        3 * d,
        qkv,
        3 * d,
        true,
    );
}

/// `attn_out = b + z · W_o` into `out` for the rows of `x`, then `x += attn_out` (resid_mid).
#[inline(always)]
pub fn attn_out(e: &Engine, at: &BlockParams, z: &[f32], x: &mut [f32], out: &mut Vec<f32>) {
    let d = e.d;
    let rows = x.len() / d;
    let out = sized(out, rows * d);
    with_bias(out, at.o_b);
    gemm(rows, d, d, Mat::rows(z, d), at.o_w, d, out, d, true);
    x.iter_mut().zip(out.iter()).for_each(|(x, &o)| *x += o);
}

/// ln_2 and the MLP of the rows of `x` (`g = gelu_new(b + h2 · W_fc)`, `mlp_out = b + g ·
/// W_proj` into `out`), then `x += mlp_out` (resid_post); activations into `ba`.
#[inline(always)]
pub fn mlp(e: &Engine, at: &BlockParams, x: &mut [f32], ba: &mut BlockActs, out: &mut Vec<f32>) {
    let (d, m) = (e.d, e.d_mlp);
    let rows = x.len() / d;
    layer_norm(
        x,
        d,
        at.ln2_w,
        at.ln2_b,
        e.eps,
        sized(&mut ba.xhat2, rows * d),
        sized(&mut ba.rstd2, rows),
        sized(&mut ba.h2, rows * d),
    );
    let g = sized(&mut ba.g, rows * m);
    with_bias(g, at.fc_b);
    gemm(rows, m, d, Mat::rows(&ba.h2, d), at.fc_w, m, g, m, true);
    let dg = sized(&mut ba.dg, rows * m);
    g.iter_mut()
        .zip(dg.iter_mut())
        .for_each(|(x, o)| (*x, *o) = gelu_and_grad(*x));
    let out = sized(out, rows * d);
    with_bias(out, at.proj_b);
    gemm(rows, d, m, Mat::rows(&ba.g, m), at.proj_w, d, out, d, true);
    x.iter_mut().zip(out.iter()).for_each(|(x, &o)| *x += o);
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
    w: &Params,
    prep: &Prepared,
    ids: &[u32],
    b: usize,
    t: usize,
    positions: &[usize],
    a: &mut Acts,
) {
    a.reset_cache(e, b, t);
    forward_window(e, w, prep, ids, 0, t, positions, a);
}
