//! The engine's backward pass over one micro-batch: from the logits' gradient (left in
//! `Acts::logits` by the loss head) back through ln_f, the blocks in reverse and the
//! embeddings, adding every parameter's gradient into a flat buffer laid out as the
//! parameters. Each sum runs over rows in order (products are `gemm` chains), so a
//! micro-batch's gradient is the same on any thread.

use super::gemm::{gemm, Mat};
use super::ops::{layer_norm_back, Heads};
use super::pass::{sized, Acts, Prepared};
use super::{Engine, Params};

/// Scratch of the backward pass (reused between calls).
#[derive(Default)]
pub struct Scratch {
    dx: Vec<f32>,
    dh: Vec<f32>,
    dq: Vec<f32>,
    dbig: Vec<f32>,
    dqkv: Vec<f32>,
    dz: Vec<f32>,
    dp: Vec<f32>,
    gx: Vec<f32>,
}

/// `dw += xᵀ · dy` for a linear `y = x · W` (`W` `[n_in, n_out]`): `x` `[rows, n_in]`, `dy`
/// `[rows, n_out]`; each element a chain over the rows in order.
#[inline(always)]
fn weight_grad(x: &[f32], n_in: usize, dy: &[f32], n_out: usize, dw: &mut [f32]) {
    let rows = dy.len() / n_out;
    gemm(
        n_in,
        n_out,
        rows,
        Mat::t(x, n_in),
        dy,
        n_out,
        &mut dw[..n_in * n_out],
        n_out,
        true,
    );
}

/// `dx = dy · Wᵀ` for a linear `y = x · W`, given `w_t` = Wᵀ `[n_out, n_in]`: `dy` `[rows,
/// n_out]` → `dx` `[rows, n_in]`.
#[inline(always)]
fn input_grad(dy: &[f32], n_out: usize, w_t: &[f32], n_in: usize, dx: &mut [f32]) {
    let rows = dy.len() / n_out;
    gemm(
        rows,
        n_in,
        n_out,
        Mat::rows(dy, n_out),
        w_t,
        n_in,
        dx,
        n_in,
        false,
    );
}

/// Add each row of `rows` (as wide as `out`) into `out`, rows in order.
#[inline(always)]
fn add_rows(rows: &[f32], out: &mut [f32]) {
    for r in rows.chunks_exact(out.len()) {
        out.iter_mut().zip(r).for_each(|(o, &x)| *o += x);
    }
}

with_avx2! {
    /// The gradient of the objective whose logit gradient is in `a.logits` (after
    /// [`super::pass::forward`] of whole sequences `ids`), added into `grad`.
    pub fn backward => backward_avx2 => backward_body(
        e: &Engine,
        w: &Params,
        prep: &Prepared,
        ids: &[u32],
        a: &mut Acts,
        s: &mut Scratch,
        grad: &mut [f32],
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body(
    e: &Engine,
    w: &Params,
    prep: &Prepared,
    ids: &[u32],
    a: &mut Acts,
    s: &mut Scratch,
    grad: &mut [f32],
) {
    let (d, m, nh, v) = (e.d, e.d_mlp, e.n_head, e.vocab);
    let gx = sized(&mut s.gx, d);
    let (b, t) = (a.b, a.len);
    let rows = b * t;
    let np = a.positions.len();
    let nq = b * np;
    let (q0, qn) = a.sub;
    // Unembedding (tied): dhf = dlogits · wte; d wte += dlogitsᵀ · hf.
    let dq = sized(&mut s.dq, nq * d);
    input_grad(&a.logits, v, w.wte, d, dq);
    weight_grad(&a.logits, v, &a.hf, d, &mut grad[e.wte..]);
    // ln_f, scattered back to the unembedded rows among the last block's query rows.
    let dxq = sized(&mut s.dh, nq * d);
    dxq.fill(0.0);
    let (dw, db) = grad[e.lnf_w..][..2 * d].split_at_mut(d);
    layer_norm_back(&s.dq, &a.xhatf, &a.rstdf, w.lnf_w, d, dw, db, dxq, gx);
    let dx = sized(&mut s.dx, b * qn * d);
    dx.fill(0.0);
    for sq in 0..b {
        for (k, &q) in a.positions.iter().enumerate() {
            dx[(sq * qn + q - q0) * d..][..d].copy_from_slice(&s.dh[(sq * np + k) * d..][..d]);
        }
    }
    for (l, at) in e.blocks.iter().enumerate().rev() {
        let ba = &a.blocks[l];
        let [qkv_t, o_t, fc_t, proj_t] = &prep.blocks_t[l];
        let (r0, rn) = if l + 1 == e.n_layer { (q0, qn) } else { (0, t) };
        let rows_q = b * rn;
        // MLP output: mlp_out = b + g · W_proj, its gradient is dx.
        add_rows(&s.dx, &mut grad[at.proj_b..][..d]);
        weight_grad(&ba.g, m, &s.dx, d, &mut grad[at.proj_w..]);
        let dbig = sized(&mut s.dbig, rows_q * m);
        input_grad(&s.dx, d, proj_t, m, dbig);
        dbig.iter_mut().zip(&ba.dg).for_each(|(g, &dg)| *g *= dg);
        add_rows(&s.dbig, &mut grad[at.fc_b..][..m]);
        weight_grad(&ba.h2, d, &s.dbig, m, &mut grad[at.fc_w..]);
        let dh = sized(&mut s.dh, rows_q * d);
        input_grad(&s.dbig, m, fc_t, d, dh);
        let (dw, db) = grad[at.ln2_w..][..2 * d].split_at_mut(d);
        layer_norm_back(
            &s.dh,
            &ba.xhat2,
            &ba.rstd2,
            w.blocks[l].ln2_w,
            d,
            dw,
            db,
            &mut s.dx,
            gx,
        );
        // Attention output: attn_out = b + z · W_o, its gradient is dx.
        add_rows(&s.dx, &mut grad[at.o_b..][..d]);
        weight_grad(&ba.z, d, &s.dx, d, &mut grad[at.o_w..]);
        let dz = sized(&mut s.dz, rows_q * d);
        input_grad(&s.dx, d, o_t, d, dz);
        let dqkv = sized(&mut s.dqkv, rows * 3 * d);
        dqkv.fill(0.0);
        let tk = r0 + rn;
        let dp = sized(&mut s.dp, tk);
        for sq in 0..b {
            let qkv = &ba.qkv[sq * t * 3 * d..][..t * 3 * d];
            Heads {
                q: &qkv[r0 * 3 * d..],
                q_stride: 3 * d,
                kv: qkv,
                kv_stride: 3 * d,
                k_at: d,
                v_at: 2 * d,
                n_head: nh,
                dh: d / nh,
                offset: r0,
                scale: e.scale,
            }
            .backward(
                rn,
                &ba.pattern[sq * nh * rn * tk..][..nh * rn * tk],
                &s.dz[sq * rn * d..][..rn * d],
                &mut dqkv[sq * t * 3 * d..][..t * 3 * d],
                dp,
            );
        }
        add_rows(&s.dqkv, &mut grad[at.qkv_b..][..3 * d]);
        weight_grad(&ba.h1, d, &s.dqkv, 3 * d, &mut grad[at.qkv_w..]);
        let dh = sized(&mut s.dh, rows * d);
        input_grad(&s.dqkv, 3 * d, qkv_t, d, dh);
        if rn < t {
            // The residual gradient of the query rows back at their rows (the others get only
            // what flows through their keys and values below).
            let dx = sized(&mut s.dx, rows * d);
            for sq in (0..b).rev() {
                dx.copy_within(sq * rn * d..(sq + 1) * rn * d, (sq * t + r0) * d);
            }
            for sq in 0..b {
                let seq = &mut dx[sq * t * d..(sq + 1) * t * d];
                seq[..r0 * d].fill(0.0);
                seq[(r0 + rn) * d..].fill(0.0);
            }
        }
        let (dw, db) = grad[at.ln1_w..][..2 * d].split_at_mut(d);
        layer_norm_back(
            &s.dh,
            &ba.xhat1,
            &ba.rstd1,
            w.blocks[l].ln1_w,
            d,
            dw,
            db,
            &mut s.dx,
            gx,
        );
    }
    // Embeddings: each row's gradient into its token's and its position's rows, in row order.
    for (r, g) in s.dx.chunks_exact(d).enumerate() {
        let tok = &mut grad[e.wte + ids[r] as usize * d..][..d];
        tok.iter_mut().zip(g).for_each(|(o, &x)| *o += x);
        let pos = &mut grad[e.wpe + (r % t) * d..][..d];
        pos.iter_mut().zip(g).for_each(|(o, &x)| *o += x);
    }
}
