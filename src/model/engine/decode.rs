//! Key/value-cached decoding on the engine: every prompt in one window, then one position per
//! step, micro-batches of sequences in parallel; the caller picks each step's tokens from all
//! rows' logits in row order (so a sampler's draws do not depend on the threads).

use super::pass::{forward_window, Acts};
use super::{Engine, Params, Workspace};
use crate::Result;
use rayon::prelude::*;

/// Sequences per decoding micro-batch (one thread's share of a step).
const DECODE_BATCH: usize = 32;

impl Engine {
    /// Continue each of the prompts `prompts` (`[n, p]` ids, positions `0..p`) for `steps`
    /// tokens. After every forward `choose(logits)` gets the next-token logits of all `n` rows
    /// (`[n, vocab]`, row order) and returns the `n` tokens to append. Returns the chosen tokens
    /// `[n, steps]`.
    pub fn decode(
        &self,
        w: &Params,
        prompts: &[u32],
        p: usize,
        steps: usize,
        work: &mut Workspace,
        mut choose: impl FnMut(&[f32]) -> Result<Vec<u32>>,
    ) -> Result<Vec<u32>> {
        if steps == 0 {
            return Ok(Vec::new());
        }
        let n = self.check_batch(prompts, p, &[p - 1])?;
        let cache = p + steps - 1; // the last chosen token is never fed
        if cache > self.n_pos {
            input_err!(
                "{p} prompt tokens and {steps} more do not fit n_positions {}",
                self.n_pos
            );
        }
        work.prep.fill(self, w, false);
        let v = self.vocab;
        let n_mb = n.div_ceil(DECODE_BATCH);
        work.acts
            .resize_with(n_mb.max(work.acts.len()), Acts::default);
        let (prep, slots) = (&work.prep, &mut work.acts[..n_mb]);
        let mut logits = vec![0f32; n * v];
        let mut out = vec![0u32; n * steps];
        let mut fed: Vec<u32> = prompts.to_vec();
        let mut width = p;
        for step in 0..steps {
            let start = if step == 0 { 0 } else { p + step - 1 };
            slots
                .par_iter_mut()
                .zip(logits.par_chunks_mut(DECODE_BATCH * v))
                .enumerate()
                .for_each(|(i, (a, lg))| {
                    let rows = i * DECODE_BATCH..((i + 1) * DECODE_BATCH).min(n);
                    if step == 0 {
                        a.reset_cache(self, rows.len(), cache);
                    }
                    let ids = &fed[rows.start * width..rows.end * width];
                    forward_window(self, w, prep, ids, start, width, &[width - 1], a);
                    lg.copy_from_slice(&a.logits);
                });
            let next = choose(&logits)?;
            if next.len() != n || next.iter().any(|&t| t as usize >= v) {
                input_err!(
                    "internal: a decoding step chose {} tokens for {n} rows",
                    next.len()
                );
            }
            for (r, &tok) in next.iter().enumerate() {
                out[r * steps + step] = tok;
            }
            fed = next;
            width = 1;
        }
        Ok(out)
    }
}
