//! The objectives the engine differentiates: a weighted log-likelihood of chosen next tokens
//! plus, optionally, a weighted KL(π ‖ π_ref) to a reference distribution at the same
//! positions. Next-token loss is the first with weights −1/count; RLOO's policy gradient is
//! the first with per-token advantages and the second with the KL coefficient.

use super::ops::log_softmax;
use crate::Result;

/// `Σ weight·log π(target) + Σ coef·KL(π ‖ π_ref)` over every (sequence, loss position).
pub struct Objective<'a> {
    /// Positions (increasing) of each sequence whose next-token distribution is scored.
    pub positions: &'a [usize],
    /// The scored token at each (sequence, position): `[n, positions]`.
    pub targets: &'a [u32],
    /// The weight on its log-probability: `[n, positions]`.
    pub weights: &'a [f32],
    /// The KL term, if any.
    pub kl: Option<Kl<'a>>,
}

/// The KL term of an [`Objective`].
pub struct Kl<'a> {
    /// The reference's log-probabilities `[n, positions, vocab]`.
    pub ref_log_probs: &'a [f32],
    /// The weight on each position's KL: `[n, positions]`.
    pub coef: &'a [f32],
}

impl Objective<'_> {
    /// Check the lengths against `n` sequences and the vocabulary.
    pub(super) fn check(&self, n: usize, vocab: usize) -> Result<()> {
        let k = n * self.positions.len();
        let kl_ok = self
            .kl
            .as_ref()
            .is_none_or(|kl| kl.coef.len() == k && kl.ref_log_probs.len() == k * vocab);
        if self.targets.len() != k || self.weights.len() != k || !kl_ok {
            input_err!("internal: objective arrays do not match {n} sequences");
        }
        if let Some(&bad) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            input_err!("target token {bad} is out of range (vocab_size {vocab})");
        }
        Ok(())
    }
}

/// The objective over the logits of scored rows `range` (global indices into the objective's
/// arrays; `logits` holds those rows, `[range.len(), vocab]`): returns its value and replaces
/// the logits by the objective's gradient with respect to them. With a KL term, each row's KL
/// is pushed onto `kl_out`.
pub fn head(
    logits: &mut [f32],
    obj: &Objective,
    range: std::ops::Range<usize>,
    vocab: usize,
    kl_out: &mut Vec<f32>,
) -> f64 {
    let mut loss = 0f64;
    let mut g = vec![0f32; vocab];
    for (row, gi) in logits.chunks_exact_mut(vocab).zip(range) {
        log_softmax(row); // row = log π
        let (w, tgt) = (obj.weights[gi], obj.targets[gi] as usize);
        loss += w as f64 * row[tgt] as f64;
        // g = ∂objective/∂log π.
        g.fill(0.0);
        g[tgt] = w;
        if let Some(kl) = &obj.kl {
            let c = kl.coef[gi];
            let r = &kl.ref_log_probs[gi * vocab..][..vocab];
            let mut k = 0f32;
            for ((gv, &lp), &lr) in g.iter_mut().zip(row.iter()).zip(r) {
                let pv = lp.exp();
                k += pv * (lp - lr);
                // ∂/∂log π_v of Σ_u π_u (log π_u − log ρ_u) = π_v (log π_v − log ρ_v + 1).
                *gv += c * pv * (lp - lr + 1.0);
            }
            loss += c as f64 * k as f64;
            kl_out.push(k);
        }
        // Through log-softmax: ∂/∂logit_v = g_v − π_v Σ_u g_u.
        let total: f32 = g.iter().sum();
        for (x, &gv) in row.iter_mut().zip(&g) {
            *x = gv - x.exp() * total;
        }
    }
    loss
}
