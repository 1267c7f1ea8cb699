//! What a crosscoder's latents say about the pair: each latent's relative decoder norm
//! (A-only ↔ shared ↔ B-only, Minder et al. 2025's Δ_norm) and Latent Scaling (the same paper's
//! ν^ε and ν^r: how much of the latent's B direction each model's error and reconstruction
//! carry, to catch a "B-only" latent that A in fact has). Pure maths on a [`Dictionary`] and
//! activations; must not train or write files.

use super::Dictionary;
use crate::Result;
use ndarray::{s, Array1, ArrayView2};
use serde::{Deserialize, Serialize};

/// Relative norm at or above which a latent is B-only (and at or below 1 − this, A-only).
pub const ONLY: f64 = 0.9;
/// Half-width of the shared band around ½ (Minder et al.'s 0.4–0.6).
pub const SHARED: f64 = 0.1;
/// Latent Scaling ratio above which a latent's "only in one model" status is an artefact:
/// the other model carries at least this share of it.
pub const NU_ARTEFACT: f64 = 0.3;

named! {
    /// Which model a crosscoder latent belongs to, by its relative decoder norm (Minder et
    /// al.'s bins).
    pub enum LatentClass("latent class") {
        /// Relative norm ≤ 1 − [`ONLY`]: decodes into A only.
        AOnly = "a_only",
        /// Between A-only and shared: mostly A.
        ALeaning = "a_leaning",
        /// Within [`SHARED`] of ½: decodes into both alike.
        Shared = "shared",
        /// Between shared and B-only: mostly B.
        BLeaning = "b_leaning",
        /// Relative norm ≥ [`ONLY`]: decodes into B only.
        BOnly = "b_only",
    }
}

impl LatentClass {
    /// The class of relative norm `r`.
    pub fn of(r: f64) -> LatentClass {
        if r >= ONLY {
            LatentClass::BOnly
        } else if r <= 1.0 - ONLY {
            LatentClass::AOnly
        } else if (r - 0.5).abs() <= SHARED {
            LatentClass::Shared
        } else if r > 0.5 {
            LatentClass::BLeaning
        } else {
            LatentClass::ALeaning
        }
    }

    /// Whether the latent belongs to one model only.
    pub fn one_model(self) -> bool {
        matches!(self, LatentClass::AOnly | LatentClass::BOnly)
    }
}

/// Per-latent readings of a two-model crosscoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Readings {
    /// `½((‖d_B‖ − ‖d_A‖)/max(‖d_A‖, ‖d_B‖) + 1)`: 0 A-only, ½ shared, 1 B-only (training units).
    pub relative_norm: Vec<f64>,
    /// The class of each latent.
    pub class: Vec<LatentClass>,
    /// ν^ε: β of the *other* model's error (latent j's own contribution added back) along the
    /// latent's decoder for its own model, over the same for its own model. Near 0 for a latent
    /// the other model truly lacks; None for latents not of one model, or never active.
    pub nu_error: Vec<Option<f64>>,
    /// ν^r: the same with each model's reconstruction without latent j (another latent doing
    /// the work in the other model: "latent decoupling").
    pub nu_recon: Vec<Option<f64>>,
    /// Whether Latent Scaling flags the latent's one-model status as an artefact
    /// (ν^ε or ν^r above [`NU_ARTEFACT`]).
    pub artefact: Vec<bool>,
    /// Tokens each latent fired on.
    pub fired: Vec<usize>,
}

impl Readings {
    /// The relative decoder norms of the latents that fired.
    pub fn active_norms(&self) -> Vec<f64> {
        self.relative_norm
            .iter()
            .zip(&self.fired)
            .filter(|(_, f)| **f > 0)
            .map(|(r, _)| *r)
            .collect()
    }

    /// Active latents per class, in class order, and how many one-model latents Latent
    /// Scaling flags.
    pub fn counts(&self) -> (Vec<(LatentClass, usize)>, usize) {
        let active = |j: &usize| self.fired[*j] > 0;
        let per = LatentClass::ALL
            .iter()
            .map(|&c| {
                (
                    c,
                    (0..self.class.len())
                        .filter(active)
                        .filter(|&j| self.class[j] == c)
                        .count(),
                )
            })
            .collect();
        let flagged = (0..self.class.len())
            .filter(active)
            .filter(|&j| self.artefact[j])
            .count();
        (per, flagged)
    }

    /// Indices of the latents of `class` that Latent Scaling does not flag.
    pub fn confirmed(&self, class: LatentClass) -> Vec<usize> {
        (0..self.class.len())
            .filter(|&j| self.class[j] == class && !self.artefact[j])
            .collect()
    }
}

/// Read a two-model crosscoder on activations `a`, `b` (`[tokens, d]`, same rows).
pub fn read(dict: &Dictionary, a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<Readings> {
    if dict.n_models != 2 {
        input_err!(
            "relative decoder norms need a two-model crosscoder, not {} model(s)",
            dict.n_models
        );
    }
    let x = super::concat(&[a, b])?;
    if x.ncols() != 2 * dict.d {
        input_err!(
            "activations have width {} but the crosscoder was trained on width {}",
            a.ncols(),
            dict.d
        );
    }
    let norms = dict.decoder_norms();
    let relative_norm: Vec<f64> = norms
        .rows()
        .into_iter()
        .map(|r| {
            let (na, nb) = (r[0], r[1]);
            let mx = na.max(nb);
            if mx > 0.0 {
                0.5 * ((nb - na) / mx + 1.0)
            } else {
                0.5
            }
        })
        .collect();
    let class: Vec<LatentClass> = relative_norm.iter().map(|&r| LatentClass::of(r)).collect();
    let l = dict.d_sae();
    let d = dict.d;
    // u_j: the latent's decoder in its own model (B, or A for an A-only latent).
    let own: Vec<usize> = class
        .iter()
        .map(|c| usize::from(!matches!(c, LatentClass::AOnly | LatentClass::ALeaning)))
        .collect();
    let u: Vec<Array1<f32>> = (0..l).map(|j| dict.decoder(j, own[j]).to_owned()).collect();
    // Per latent and model: Σ_t f_tj ⟨u_j, e_m(t)⟩, Σ_t f_tj ⟨u_j, r_m(t)⟩ (r: reconstruction
    // less b_dec) and Σ_t f_tj² ⟨u_j, d_j^m⟩.
    let mut s_err = vec![[0f64; 2]; l];
    let mut s_rec = vec![[0f64; 2]; l];
    let mut s_own = vec![[0f64; 2]; l];
    let mut f2 = vec![0f64; l];
    let mut fired = vec![0usize; l];
    let ud: Vec<[f64; 2]> = (0..l)
        .map(|j| [0, 1].map(|m| f64::from(u[j].dot(&dict.decoder(j, m)))))
        .collect();
    let u_mat = ndarray::Array2::from_shape_fn((l, d), |(j, i)| u[j][i]); // [l, d]
    dict.for_chunks(x.view(), |xb, z| {
        let recon = dict.decode(z);
        for m in 0..2 {
            let cols = s![.., m * d..(m + 1) * d];
            let r_m = &recon.slice(cols) - &dict.b_dec.slice(s![m * d..(m + 1) * d]);
            let e_m = &xb.slice(cols) - &recon.slice(cols);
            let pe = e_m.dot(&u_mat.t()); // [t, l]
            let pr = r_m.dot(&u_mat.t());
            for j in 0..l {
                for t in 0..z.nrows() {
                    let f = f64::from(z[[t, j]]);
                    if f > 0.0 {
                        s_err[j][m] += f * f64::from(pe[[t, j]]);
                        s_rec[j][m] += f * f64::from(pr[[t, j]]);
                        s_own[j][m] += f * f * ud[j][m];
                    }
                }
            }
        }
        for j in 0..l {
            let col = z.column(j);
            f2[j] += col.iter().map(|&f| f64::from(f).powi(2)).sum::<f64>();
            fired[j] += col.iter().filter(|&&f| f > 0.0).count();
        }
    });
    // β_m = num_m / (‖u‖² Σ f²); ν = β_other / β_own (the denominators cancel). Error targets
    // add latent j's own contribution back in both models; reconstruction targets keep it in
    // the latent's own model and take it out of the other.
    let ratio = |j: usize, own_num: f64, other_num: f64| -> Option<f64> {
        (class[j].one_model() && f2[j] > 0.0 && own_num.abs() > 0.0).then(|| other_num / own_num)
    };
    let nu_error: Vec<Option<f64>> = (0..l)
        .map(|j| {
            let (o, t) = (own[j], 1 - own[j]);
            ratio(j, s_err[j][o] + s_own[j][o], s_err[j][t] + s_own[j][t])
        })
        .collect();
    let nu_recon: Vec<Option<f64>> = (0..l)
        .map(|j| {
            let (o, t) = (own[j], 1 - own[j]);
            ratio(j, s_rec[j][o], s_rec[j][t] - s_own[j][t])
        })
        .collect();
    let artefact = (0..l)
        .map(|j| {
            nu_error[j].is_some_and(|v| v > NU_ARTEFACT)
                || nu_recon[j].is_some_and(|v| v > NU_ARTEFACT)
        })
        .collect();
    Ok(Readings {
        relative_norm,
        class,
        nu_error,
        nu_recon,
        artefact,
        fired,
    })
}
