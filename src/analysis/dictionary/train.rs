//! Training a [`Dictionary`] with hand-written gradients and Adam: BatchTopK (Bussmann et al.
//! 2024; crosscoder form from Minder et al. 2025, arXiv 2504.02922) or ReLU + L1 weighted by
//! the summed decoder norms (Lindsey et al. 2024), an AuxK loss on dead latents (Gao et al.
//! 2024), inputs rescaled to mean squared norm `d` per model and the scale folded back into the
//! weights at the end. Deterministic in the seed. Knows nothing of models, hooks or files.

use super::Dictionary;
use crate::{Error, Result};
use ndarray::{s, Array1, Array2, ArrayView2, Axis, Zip};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// How latents are kept sparse.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Sparsity {
    /// BatchTopK: the `k · batch` largest scores `pre_j · Σ_m ‖d_j^m‖` of a batch are kept;
    /// at inference a single threshold (the mean over late batches of the smallest kept score)
    /// replaces the batch.
    BatchTopK {
        /// Active latents per token, on average.
        k: usize,
    },
    /// ReLU with the loss `λ · Σ_j z_j · Σ_m ‖d_j^m‖` (the L1 crosscoder).
    L1 {
        /// λ.
        coeff: f64,
    },
}

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dictionary size (latents).
    pub d_sae: usize,
    /// The sparsity mechanism.
    pub sparsity: Sparsity,
    /// Adam learning rate (on activations rescaled to mean squared norm `d`).
    pub lr: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Tokens per step.
    pub batch: usize,
    /// Weight of the AuxK loss (0: none).
    pub aux_coeff: f64,
    /// Steps a latent may stay silent before it counts as dead (for AuxK).
    pub dead_steps: usize,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
}

impl TrainConfig {
    /// The defaults for `d_sae` latents at BatchTopK `k`: Adam at 4e-3 (decaying to zero over
    /// the last fifth), 1024 tokens a step, AuxK at weight 1/8 on latents silent for 50 steps
    /// (Gao et al. use 1/32 on far larger dictionaries; on 40 directions in 32 dimensions 1/32
    /// left a third of the latents dead and merged two directions, 1/8 recovered every one).
    pub fn batch_topk(d_sae: usize, k: usize, steps: usize, seed: u64) -> TrainConfig {
        TrainConfig {
            d_sae,
            sparsity: Sparsity::BatchTopK { k },
            lr: 4e-3,
            steps,
            batch: 1024,
            aux_coeff: 1.0 / 8.0,
            dead_steps: 50,
            seed,
        }
    }

    /// Check the settings against an input of `width` columns; errors name the setting.
    pub fn check(&self, width: usize) -> Result<()> {
        if self.d_sae == 0 {
            input_err!("dictionary size must be at least 1");
        }
        match self.sparsity {
            Sparsity::BatchTopK { k } if k == 0 || k >= self.d_sae => input_err!(
                "k {k} must be at least 1 and below the dictionary size {}",
                self.d_sae
            ),
            Sparsity::L1 { coeff } if !(coeff.is_finite() && coeff >= 0.0) => {
                input_err!("L1 coefficient {coeff} must be a finite number ≥ 0")
            }
            _ => {}
        }
        if self.batch == 0 || self.steps == 0 {
            input_err!("batch and steps must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            input_err!("learning rate {} must be a positive number", self.lr);
        }
        if width == 0 {
            input_err!("activations have no width");
        }
        Ok(())
    }
}

/// What training measured on the whole data at the end (inference encoding).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Per model, `1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`.
    pub explained_variance: Vec<f64>,
    /// Mean active latents per token.
    pub l0: f64,
    /// Fraction of latents that never fire on the data.
    pub dead_fraction: f64,
    /// Tokens trained on.
    pub tokens: usize,
}

/// Adam moments of one parameter (β 0.9, 0.999).
struct Adam<D: ndarray::Dimension> {
    m: ndarray::Array<f32, D>,
    v: ndarray::Array<f32, D>,
}

impl<D: ndarray::Dimension> Adam<D> {
    fn new(like: &ndarray::Array<f32, D>) -> Self {
        Adam {
            m: ndarray::Array::zeros(like.raw_dim()),
            v: ndarray::Array::zeros(like.raw_dim()),
        }
    }
    fn step(
        &mut self,
        p: &mut ndarray::Array<f32, D>,
        g: &ndarray::Array<f32, D>,
        lr: f32,
        t: i32,
    ) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        Zip::from(p)
            .and(&mut self.m)
            .and(&mut self.v)
            .and(g)
            .for_each(|p, m, v, &g| {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            });
    }
}

/// Per-latent summed decoder norm `Σ_m ‖d_j^m‖` `[d_sae]`.
fn summed_norms(w_dec: &Array2<f32>, n_models: usize, d: usize) -> Array1<f32> {
    Array1::from_shape_fn(w_dec.nrows(), |j| {
        (0..n_models)
            .map(|m| {
                let v = w_dec.slice(s![j, m * d..(m + 1) * d]);
                v.dot(&v).sqrt()
            })
            .sum()
    })
}

/// The value of the `keep`-th largest entry of `v` (`keep` ≥ 1, ≤ len).
fn kth_largest(v: &mut [f32], keep: usize) -> f32 {
    let i = v.len() - keep;
    *v.select_nth_unstable_by(i, f32::total_cmp).1
}

/// Train on per-model activations `models` (each `[tokens, d]`, same tokens in the same rows).
/// Errors: no tokens, models of different shapes, non-finite values, bad settings.
pub fn train(models: &[ArrayView2<f32>], cfg: &TrainConfig) -> Result<(Dictionary, TrainStats)> {
    let raw = super::concat(models)?;
    let n_models = models.len();
    let (n, width) = raw.dim();
    let d = width / n_models;
    if n == 0 {
        input_err!("no activations to train on");
    }
    cfg.check(width)?;
    if raw.iter().any(|v| !v.is_finite()) {
        return Err(Error::input("activations contain NaN or infinite values"));
    }
    // Rescale each model to mean squared norm d.
    let scale: Vec<f32> = (0..n_models)
        .map(|m| {
            let b = raw.slice(s![.., m * d..(m + 1) * d]);
            let ms = b.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / n as f64;
            if ms > 0.0 {
                (d as f64 / ms).sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    let mut x = raw;
    for (m, c) in scale.iter().enumerate() {
        x.slice_mut(s![.., m * d..(m + 1) * d])
            .mapv_inplace(|v| v * c);
    }

    let l = cfg.d_sae;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let normal = Normal::new(0.0f32, 1.0).map_err(Error::input)?;
    // Decoder: random directions, each model's block at unit norm; encoder its transpose
    // divided by the number of models (so an identical pair starts as an SAE would).
    let mut w_dec = Array2::from_shape_simple_fn((l, width), || normal.sample(&mut rng));
    for mut row in w_dec.rows_mut() {
        for m in 0..n_models {
            let mut b = row.slice_mut(s![m * d..(m + 1) * d]);
            let nrm = b.dot(&b).sqrt().max(1e-12);
            b.mapv_inplace(|v| v / nrm);
        }
    }
    let mut w_enc = w_dec.t().to_owned() / n_models as f32;
    let mut b_enc = Array1::<f32>::zeros(l);
    let mut b_dec = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(width));
    let (mut a_we, mut a_be, mut a_wd, mut a_bd) = (
        Adam::new(&w_enc),
        Adam::new(&b_enc),
        Adam::new(&w_dec),
        Adam::new(&b_dec),
    );
    let mut last_fired = vec![0usize; l];
    let mut order: Vec<usize> = (0..n).collect();
    let mut at = n;
    let b = cfg.batch.min(n);
    let lr = cfg.lr as f32;
    let k_aux = (width / 2).max(1);
    // Inference threshold: mean smallest kept score over the last half of training.
    let (mut theta_sum, mut theta_n) = (0f64, 0usize);
    for step in 1..=cfg.steps {
        if at + b > n {
            order.shuffle(&mut rng);
            at = 0;
        }
        let xb = x.select(Axis(0), &order[at..at + b]);
        at += b;
        let norms = summed_norms(&w_dec, n_models, d);
        let centred = &xb - &b_dec;
        let pre = centred.dot(&w_enc) + &b_enc; // [b, l]
                                                // The kept mask (as 1/0) and the activations.
        let mut z = pre.mapv(|v| v.max(0.0));
        if let Sparsity::BatchTopK { k } = cfg.sparsity {
            let mut scores: Vec<f32> = Zip::from(&z)
                .and_broadcast(&norms)
                .map_collect(|&v, &nm| v * nm)
                .into_iter()
                .collect();
            let keep = (k * b).min(scores.len());
            let t = kth_largest(&mut scores, keep).max(f32::MIN_POSITIVE);
            if step > cfg.steps / 2 {
                theta_sum += f64::from(t);
                theta_n += 1;
            }
            Zip::from(&mut z).and_broadcast(&norms).for_each(|v, &nm| {
                if *v * nm < t {
                    *v = 0.0
                }
            });
        }
        for (j, col) in z.columns().into_iter().enumerate() {
            if col.iter().any(|&v| v > 0.0) {
                last_fired[j] = step;
            }
        }
        let recon = z.dot(&w_dec) + &b_dec;
        let err = &xb - &recon; // e = x − x̂
        let inv_b = 1.0 / b as f32;
        // Main loss: (1/b) Σ ‖x̂ − x‖².
        let g = &err * (-2.0 * inv_b); // dL/dx̂ [b, width]
        let mut g_wd = z.t().dot(&g);
        let mut g_z = g.dot(&w_dec.t());
        if let Sparsity::L1 { coeff } = cfg.sparsity {
            // (λ/b) Σ_t Σ_j z_tj n_j: dz += λ/b · n_j; d(d_j^m) += λ/b · Σ_t z_tj · d_j^m/‖d_j^m‖.
            let c = coeff as f32 * inv_b;
            g_z += &(&norms * c);
            let zsum = z.sum_axis(Axis(0));
            for j in 0..l {
                for m in 0..n_models {
                    let dv = w_dec.slice(s![j, m * d..(m + 1) * d]);
                    let nrm = dv.dot(&dv).sqrt().max(1e-12);
                    let f = c * zsum[j] / nrm;
                    g_wd.slice_mut(s![j, m * d..(m + 1) * d]).scaled_add(f, &dv);
                }
            }
        }
        let mut g_pre = g_z;
        Zip::from(&mut g_pre).and(&z).for_each(|gp, &zv| {
            if zv <= 0.0 {
                *gp = 0.0
            }
        });
        // AuxK: the k_aux largest scores among dead latents reconstruct the error e.
        let dead: Vec<usize> = (0..l)
            .filter(|&j| step - last_fired[j] >= cfg.dead_steps)
            .collect();
        if cfg.aux_coeff > 0.0 && !dead.is_empty() {
            let ka = k_aux.min(dead.len());
            let mut z_aux = Array2::<f32>::zeros((b, dead.len()));
            for (t, mut row) in z_aux.rows_mut().into_iter().enumerate() {
                let mut sc: Vec<f32> = dead
                    .iter()
                    .map(|&j| pre[[t, j]].max(0.0) * norms[j])
                    .collect();
                let thr = kth_largest(&mut sc.clone(), ka);
                for (i, &j) in dead.iter().enumerate() {
                    let v = pre[[t, j]];
                    if v > 0.0 && v * norms[j] >= thr {
                        row[i] = v;
                    }
                }
                sc.clear();
            }
            let wd_dead = w_dec.select(Axis(0), &dead); // [n_dead, width]
            let e_hat = z_aux.dot(&wd_dead);
            let g_aux = (&e_hat - &err) * (2.0 * cfg.aux_coeff as f32 * inv_b);
            let g_wd_dead = z_aux.t().dot(&g_aux);
            let mut g_za = g_aux.dot(&wd_dead.t());
            Zip::from(&mut g_za).and(&z_aux).for_each(|gp, &zv| {
                if zv <= 0.0 {
                    *gp = 0.0
                }
            });
            for (i, &j) in dead.iter().enumerate() {
                g_wd.row_mut(j).scaled_add(1.0, &g_wd_dead.row(i));
                g_pre.column_mut(j).scaled_add(1.0, &g_za.column(i));
            }
        }
        let g_we = centred.t().dot(&g_pre);
        let g_be = g_pre.sum_axis(Axis(0));
        let g_bd = g.sum_axis(Axis(0)) - g_pre.dot(&w_enc.t()).sum_axis(Axis(0));
        let t = step as i32;
        // Constant rate, then linear decay to zero over the last fifth of the steps.
        let decay_from = cfg.steps - cfg.steps / 5;
        let lr = if step > decay_from {
            lr * (cfg.steps - step + 1) as f32 / (cfg.steps - decay_from) as f32
        } else {
            lr
        };
        a_we.step(&mut w_enc, &g_we, lr, t);
        a_be.step(&mut b_enc, &g_be, lr, t);
        a_wd.step(&mut w_dec, &g_wd, lr, t);
        a_bd.step(&mut b_dec, &g_bd, lr, t);
    }

    // Inference thresholds in pre-activation units: θ / n_j.
    let norms = summed_norms(&w_dec, n_models, d);
    let theta = if theta_n > 0 {
        (theta_sum / theta_n as f64) as f32
    } else {
        0.0
    };
    let mut threshold = norms.mapv(|nm| if nm > 0.0 { theta / nm } else { f32::INFINITY });
    // Fold the input scale back: raw units in, raw units out (pre-activations unchanged).
    for (m, &c) in scale.iter().enumerate() {
        let r = m * d..(m + 1) * d;
        w_enc.slice_mut(s![r.clone(), ..]).mapv_inplace(|v| v * c);
        w_dec.slice_mut(s![.., r.clone()]).mapv_inplace(|v| v / c);
        b_dec.slice_mut(s![r]).mapv_inplace(|v| v / c);
    }
    if n_models == 1 {
        // An SAE folds its decoder norms into the encoder: unit-norm decoder rows, the same
        // reconstruction and the same active set.
        for j in 0..l {
            let nm = w_dec.row(j).dot(&w_dec.row(j)).sqrt();
            if nm > 0.0 {
                w_enc.column_mut(j).mapv_inplace(|v| v * nm);
                b_enc[j] *= nm;
                w_dec.row_mut(j).mapv_inplace(|v| v / nm);
                threshold[j] *= nm;
            }
        }
    }
    let dict = Dictionary {
        n_models,
        d,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold,
        scale,
    };
    let stats = dict.stats(models)?;
    Ok((dict, stats))
}

impl Dictionary {
    /// Explained variance per model, L0 and dead fraction of the per-model activations
    /// `models` under the inference encoding.
    pub fn stats(&self, models: &[ArrayView2<f32>]) -> Result<TrainStats> {
        if models.len() != self.n_models {
            input_err!(
                "the dictionary encodes {} model(s), not {}",
                self.n_models,
                models.len()
            );
        }
        let x = super::concat(models)?;
        if x.ncols() != self.n_models * self.d {
            input_err!(
                "activations have width {} but the dictionary was trained on width {}",
                x.ncols() / self.n_models,
                self.d
            );
        }
        let n = x.nrows();
        let mean = x
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(x.ncols()));
        let (mut err, mut var) = (vec![0f64; self.n_models], vec![0f64; self.n_models]);
        let mut active = 0usize;
        let mut fired = vec![false; self.d_sae()];
        let d = self.d;
        self.for_chunks(x.view(), |xb, z| {
            let r = self.decode(z);
            for m in 0..self.n_models {
                let cols = s![.., m * d..(m + 1) * d];
                err[m] += Zip::from(r.slice(cols))
                    .and(xb.slice(cols))
                    .fold(0f64, |a, &p, &q| a + f64::from(p - q).powi(2));
                var[m] += Zip::from(xb.slice(cols))
                    .and_broadcast(mean.slice(s![m * d..(m + 1) * d]))
                    .fold(0f64, |a, &p, &q| a + f64::from(p - q).powi(2));
            }
            for row in z.rows() {
                for (j, &v) in row.iter().enumerate() {
                    if v > 0.0 {
                        active += 1;
                        fired[j] = true;
                    }
                }
            }
        });
        Ok(TrainStats {
            explained_variance: err
                .iter()
                .zip(&var)
                .map(|(e, v)| if *v > 0.0 { 1.0 - e / v } else { f64::NAN })
                .collect(),
            l0: active as f64 / n.max(1) as f64,
            dead_fraction: fired.iter().filter(|f| !**f).count() as f64 / fired.len().max(1) as f64,
            tokens: n,
        })
    }
}
