//! Recorded runs and their resumption, for exact patching on the engine: [`Engine::record`]
//! keeps every block's input, attention output, MLP output, per-head mixed values and keys and
//! values of whole sequences; [`Engine::resume`] replaces one row of one stage of one block
//! (per edit) and recomputes only what that change reaches — the edited row through the rest
//! of its block, then that row and the later ones through the later blocks, each edit's
//! earlier positions read from the record's keys and values — up to the logits of chosen
//! tokens at the last position. Edits of one call are stacked into the same products (rows of
//! different lengths), which a batch of equal windows cannot do; a row's values do not depend
//! on the rows beside it, so neither grouping nor threads change a result.
//! Knows nothing of patching's metrics or cells (`analysis::patching`).

use super::pass::{attn_in, attn_out, forward_window, mlp, sized, Acts, BlockActs, Prepared};
use super::{gemm, ops, Engine, Params};
use crate::Result;
use rayon::prelude::*;

/// Where an edit's row enters a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The block's input (`hook_resid_pre`).
    ResidPre,
    /// The heads' mixed values before the output projection (`attn.hook_z`, all heads).
    Z,
    /// The attention output (`hook_attn_out`).
    AttnOut,
    /// The MLP output (`hook_mlp_out`).
    MlpOut,
    /// The block's output (`hook_resid_post`).
    ResidPost,
}

/// One replaced row: sequence `seq` of the record, position `pos`, the new `d` values.
#[derive(Clone, Debug)]
pub struct Edit {
    /// Sequence of the record.
    pub seq: usize,
    /// Position in it.
    pub pos: usize,
    /// The values (`d_model` of them).
    pub row: Vec<f32>,
}

/// A forward of `n` whole sequences of `t` positions with what [`Engine::resume`] and a
/// patching sweep read: per block `[n, t, d]` arrays of its input, attention output, MLP output
/// and mixed values (z, head-major), its keys and values `[n, t, 2d]`, and the last block's
/// output.
pub struct Record {
    /// Sequences.
    pub n: usize,
    /// Positions.
    pub t: usize,
    /// `hook_resid_pre` per block.
    pub resid_pre: Vec<Vec<f32>>,
    /// `hook_attn_out` per block.
    pub attn_out: Vec<Vec<f32>>,
    /// `hook_mlp_out` per block.
    pub mlp_out: Vec<Vec<f32>>,
    /// `attn.hook_z` per block, `[n, t, head·d_head]`.
    pub z: Vec<Vec<f32>>,
    /// Keys and values per block, `[n, t, 2d]` (k | v, head-major).
    kv: Vec<Vec<f32>>,
    /// The last block's `hook_resid_post`.
    pub resid_final: Vec<f32>,
}

/// Sequences per record micro-batch.
const RECORD_BATCH: usize = 8;

/// Rows per resumption group: a group's products share one pass over the weights; groups run
/// in parallel.
const GROUP_ROWS: usize = 512;

impl Engine {
    /// Run `ids` (`[n, t]`, positions `0..t`) and keep what [`Record`] holds.
    pub fn record(&self, w: &Params, ids: &[u32], t: usize) -> Result<Record> {
        let n = self.check_batch(ids, t, &[t - 1])?;
        let prep = Prepared::default(); // nothing is unembedded, nothing transposed
        let parts: Vec<Acts> = (0..n.div_ceil(RECORD_BATCH))
            .into_par_iter()
            .map(|i| {
                let rows = i * RECORD_BATCH..((i + 1) * RECORD_BATCH).min(n);
                let mut a = Acts {
                    keep: true,
                    ..Acts::default()
                };
                a.reset_cache(self, rows.len(), t);
                forward_window(
                    self,
                    w,
                    &prep,
                    &ids[rows.start * t..rows.end * t],
                    0,
                    t,
                    &[],
                    &mut a,
                );
                a
            })
            .collect();
        let cat = |f: &dyn Fn(&Acts) -> &[f32]| -> Vec<f32> {
            parts.iter().flat_map(|a| f(a).iter().copied()).collect()
        };
        let per_block = |f: &dyn Fn(&BlockActs) -> &[f32]| -> Vec<Vec<f32>> {
            (0..self.n_layer)
                .map(|l| cat(&|a: &Acts| f(&a.blocks[l])))
                .collect()
        };
        Ok(Record {
            n,
            t,
            resid_pre: per_block(&|b| &b.resid_pre),
            attn_out: per_block(&|b| &b.attn_out),
            mlp_out: per_block(&|b| &b.mlp_out),
            z: per_block(&|b| &b.z),
            kv: (0..self.n_layer)
                .map(|l| cat(&|a: &Acts| &a.kv[l]))
                .collect(),
            resid_final: cat(&|a: &Acts| &a.x),
        })
    }

    /// The logits of `tokens` (all of the vocabulary when `None`) at the last position of each
    /// recorded sequence, as [`Engine::resume`] computes them: `[n, tokens]`.
    pub fn record_logits(
        &self,
        w: &Params,
        rec: &Record,
        tokens: Option<&[u32]>,
    ) -> Result<Vec<f32>> {
        let d = self.d;
        let rows: Vec<f32> = (0..rec.n)
            .flat_map(|s| {
                rec.resid_final[(s * rec.t + rec.t - 1) * d..][..d]
                    .iter()
                    .copied()
            })
            .collect();
        self.unembed(w, &rows, tokens)
    }

    /// For each edit, the record with that one row replaced at `stage` of block `layer` and
    /// everything it reaches recomputed: the logits of `tokens` (all when `None`) at the
    /// record's last position, `[edits, tokens]`.
    pub fn resume(
        &self,
        w: &Params,
        rec: &Record,
        layer: usize,
        stage: Stage,
        edits: &[Edit],
        tokens: Option<&[u32]>,
    ) -> Result<Vec<f32>> {
        let (d, t) = (self.d, rec.t);
        if layer >= self.n_layer {
            input_err!("internal: resume at block {layer} of {}", self.n_layer);
        }
        if let Some(e) = edits
            .iter()
            .find(|e| e.seq >= rec.n || e.pos >= t || e.row.len() != d)
        {
            input_err!(
                "internal: edit at sequence {} position {} does not fit the record",
                e.seq,
                e.pos
            );
        }
        let at = &w.blocks[layer];
        // The edited rows as block inputs of `first` (a stage inside a block finishes that
        // block for the edited row alone: the other rows' values there are unchanged).
        let mut rows: Vec<f32> = edits.iter().flat_map(|e| e.row.iter().copied()).collect();
        let first = match stage {
            Stage::ResidPre => layer,
            Stage::ResidPost => layer + 1,
            Stage::MlpOut => {
                for (r, e) in rows.chunks_exact_mut(d).zip(edits) {
                    let i = (e.seq * t + e.pos) * d;
                    let (x, a) = (
                        &rec.resid_pre[layer][i..][..d],
                        &rec.attn_out[layer][i..][..d],
                    );
                    for ((o, &x), &a) in r.iter_mut().zip(x).zip(a) {
                        *o += x + a; // resid_post = (resid_pre + attn_out) + mlp_out
                    }
                }
                layer + 1
            }
            Stage::Z | Stage::AttnOut => {
                let mut x = vec![0f32; edits.len() * d];
                for (xr, e) in x.chunks_exact_mut(d).zip(edits) {
                    xr.copy_from_slice(&rec.resid_pre[layer][(e.seq * t + e.pos) * d..][..d]);
                }
                let mut out = Vec::new();
                if stage == Stage::Z {
                    attn_out(self, at, &rows, &mut x, &mut out);
                } else {
                    x.iter_mut().zip(&rows).for_each(|(x, &a)| *x += a);
                }
                mlp(self, at, &mut x, &mut BlockActs::default(), &mut out);
                rows = x;
                layer + 1
            }
        };
        // Each edit's rows from its position to the last, as inputs of block `first`.
        let mut jobs: Vec<Job> = Vec::with_capacity(edits.len());
        for (k, e) in edits.iter().enumerate() {
            let mut x = rows[k * d..][..d].to_vec();
            let rest = if first < self.n_layer {
                &rec.resid_pre[first]
            } else {
                &rec.resid_final
            };
            x.extend_from_slice(&rest[(e.seq * t + e.pos + 1) * d..(e.seq * t + t) * d]);
            jobs.push(Job {
                seq: e.seq,
                pos: e.pos,
                x,
            });
        }
        // Groups of whole jobs of about GROUP_ROWS rows (at least one per thread).
        let total: usize = jobs.iter().map(|j| t - j.pos).sum();
        let n_groups = total
            .div_ceil(GROUP_ROWS)
            .max(rayon::current_num_threads())
            .min(jobs.len())
            .max(1);
        let mut groups: Vec<Vec<Job>> = Vec::with_capacity(n_groups);
        let mut cur = Vec::new();
        let mut cur_rows = 0;
        for (i, j) in jobs.into_iter().enumerate() {
            cur_rows += t - j.pos;
            cur.push(j);
            if cur_rows * n_groups >= total * (groups.len() + 1) || i + 1 == edits.len() {
                groups.push(std::mem::take(&mut cur));
            }
        }
        let finals: Vec<Vec<f32>> = groups
            .par_iter()
            .map(|g| self.run_group(w, rec, first, g))
            .collect();
        self.unembed(w, &finals.concat(), tokens)
    }

    /// Blocks `first..` for a group of jobs (rows stacked), the last block only at the last
    /// position; returns each job's final residual at the last position `[jobs, d]`.
    fn run_group(&self, w: &Params, rec: &Record, first: usize, jobs: &[Job]) -> Vec<f32> {
        SCRATCH.with(|s| run_group_in(self, w, rec, first, jobs, &mut s.borrow_mut()))
    }

    #[inline(always)]
    fn run_group_body(
        &self,
        w: &Params,
        rec: &Record,
        first: usize,
        jobs: &[Job],
        s: &mut Scratch,
    ) -> Vec<f32> {
        let (d, nh, t) = (self.d, self.n_head, rec.t);
        let mut x: Vec<f32> = jobs.iter().flat_map(|j| j.x.iter().copied()).collect();
        let Scratch {
            ba,
            out,
            kv,
            z,
            pat,
        } = s;
        for l in first..self.n_layer {
            let at = &w.blocks[l];
            let last = l + 1 == self.n_layer;
            let rows = x.len() / d;
            attn_in(self, at, &x, rows, ba);
            // Attention job by job: keys and values of earlier positions from the record.
            let zs = sized(z, if last { jobs.len() } else { rows } * d);
            let mut r = 0;
            for (k, j) in jobs.iter().enumerate() {
                let len = t - j.pos;
                let kvs = sized(kv, t * 2 * d);
                kvs[..j.pos * 2 * d]
                    .copy_from_slice(&rec.kv[l][j.seq * t * 2 * d..][..j.pos * 2 * d]);
                for i in 0..len {
                    kvs[(j.pos + i) * 2 * d..][..2 * d]
                        .copy_from_slice(&ba.qkv[(r + i) * 3 * d + d..][..2 * d]);
                }
                // The last block only at the last position.
                let (q0, tq, zi) = if last { (len - 1, 1, k) } else { (0, len, r) };
                let pt = sized(pat, nh * tq * t);
                ops::Heads {
                    q: &ba.qkv[(r + q0) * 3 * d..],
                    q_stride: 3 * d,
                    kv: kvs,
                    kv_stride: 2 * d,
                    k_at: 0,
                    v_at: d,
                    n_head: nh,
                    dh: d / nh,
                    offset: j.pos + q0,
                    scale: self.scale,
                }
                .forward(tq, pt, &mut zs[zi * d..][..tq * d]);
                r += len;
            }
            if last {
                // Keep each job's last row of the residual stream.
                let mut r = 0;
                for (k, j) in jobs.iter().enumerate() {
                    r += t - j.pos;
                    x.copy_within((r - 1) * d..r * d, k * d);
                }
                x.truncate(jobs.len() * d);
            }
            attn_out(self, at, z, &mut x, out);
            mlp(self, at, &mut x, ba, out);
        }
        if first == self.n_layer {
            // No block left: each job's last row as it entered.
            let mut r = 0;
            let mut last = Vec::with_capacity(jobs.len() * d);
            for j in jobs.iter() {
                r += t - j.pos;
                last.extend_from_slice(&x[(r - 1) * d..r * d]);
            }
            return last;
        }
        x
    }

    /// ln_f and the tied unembedding of `rows` (`[k, d]`): logits of `tokens` (all when
    /// `None`), `[k, tokens]`. Computed as `wte_rows · hfᵀ` so that no `[d, vocab]` transpose
    /// of the embedding is made.
    fn unembed(&self, w: &Params, rows: &[f32], tokens: Option<&[u32]>) -> Result<Vec<f32>> {
        let (d, v) = (self.d, self.vocab);
        let k = rows.len() / d;
        let mut xhat = vec![0f32; k * d];
        let mut rstd = vec![0f32; k];
        let mut hf = vec![0f32; k * d];
        ops::layer_norm(
            rows, d, w.lnf_w, w.lnf_b, self.eps, &mut xhat, &mut rstd, &mut hf,
        );
        let picked: Vec<f32>;
        let (w, n) = match tokens {
            Some(toks) => {
                if let Some(&bad) = toks.iter().find(|&&t| t as usize >= v) {
                    input_err!("logit token {bad} is out of range (vocab_size {v})");
                }
                picked = toks
                    .iter()
                    .flat_map(|&t| w.wte[t as usize * d..][..d].iter().copied())
                    .collect();
                (&picked[..], toks.len())
            }
            None => (w.wte, v),
        };
        // hfᵀ [d, k], then [n, k] = w · hfᵀ, then its transpose.
        let mut hf_t = vec![0f32; d * k];
        for (i, r) in hf.chunks_exact(d).enumerate() {
            for (j, &x) in r.iter().enumerate() {
                hf_t[j * k + i] = x;
            }
        }
        let mut lt = vec![0f32; n * k];
        if k > 0 {
            gemm::gemm(n, k, d, gemm::Mat::rows(w, d), &hf_t, k, &mut lt, k, false);
        }
        let mut logits = vec![0f32; k * n];
        for (c, col) in lt.chunks_exact(k.max(1)).enumerate().take(n) {
            for (r, &x) in col.iter().enumerate() {
                logits[r * n + c] = x;
            }
        }
        Ok(logits)
    }
}

with_avx2! {
    /// [`Engine::run_group`] with its buffers.
    fn run_group_in => run_group_avx2 => Engine::run_group_body(
        e: &Engine,
        w: &Params,
        rec: &Record,
        first: usize,
        jobs: &[Job],
        s: &mut Scratch,
    ) -> Vec<f32>
}

/// Buffers of a resumption group, kept per thread between calls (a sweep resumes once per
/// block and component; fresh buffers each time cost more in page faults than in compute on
/// GPT-2-small).
#[derive(Default)]
struct Scratch {
    ba: BlockActs,
    out: Vec<f32>,
    kv: Vec<f32>,
    z: Vec<f32>,
    pat: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// One edit's rows from its position to the last, as the input of the first block resumed.
struct Job {
    seq: usize,
    pos: usize,
    x: Vec<f32>,
}
