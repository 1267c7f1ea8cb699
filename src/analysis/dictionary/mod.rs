//! Dictionary learning on activations, for model diffing without labels: one [`Dictionary`]
//! type is a sparse autoencoder (one model) or a sparse crosscoder (two models, one shared
//! encoder, one decoder per model). Owns the maths (`train`), the per-latent readings of a
//! crosscoder (`readings`: relative decoder norms, Latent Scaling) and scoring latents against
//! known labels (`score`). Pure ndarray maths: loading activations and writing files are the
//! callers'. Must not import `view` or `report`.

pub mod cards;
pub mod collect;
pub mod diffing;
pub mod files;
pub mod readings;
pub mod score;
pub mod train;

#[cfg(test)]
mod tests;

pub use readings::{LatentClass, Readings};
pub use train::{Sparsity, TrainConfig, TrainStats};

use ndarray::{s, Array1, Array2, ArrayView2, Axis};

/// A sparse dictionary over `n_models` models' activations at one hook, in the models' raw
/// units: `z = JumpReLU_t((x − b_dec)·W_enc + b_enc)` on the concatenated activations
/// `x = [x_A, x_B, ...]`, and model m's reconstruction `x̂_m = z·W_dec[:, m] + b_dec[m]`.
/// `threshold` is BatchTopK's inference threshold (zero for an L1 dictionary). An SAE
/// (`n_models` 1) keeps unit-norm decoder rows; a crosscoder keeps its trained decoder norms,
/// which say which model a latent belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Dictionary {
    /// Models encoded together (1: SAE; 2: crosscoder).
    pub n_models: usize,
    /// Width of one model's activations.
    pub d: usize,
    /// `[n_models·d, d_sae]`.
    pub w_enc: Array2<f32>,
    /// `[d_sae]`.
    pub b_enc: Array1<f32>,
    /// `[d_sae, n_models·d]`: row j holds latent j's decoder vector for each model in turn.
    pub w_dec: Array2<f32>,
    /// `[n_models·d]`.
    pub b_dec: Array1<f32>,
    /// `[d_sae]`: a latent is active where its pre-activation exceeds this.
    pub threshold: Array1<f32>,
    /// Per model, the factor training multiplied the activations by (so their mean squared
    /// norm was `d`); already folded into the weights, kept to compare decoder norms across
    /// models in training units.
    pub scale: Vec<f32>,
}

impl Dictionary {
    /// Dictionary size.
    pub fn d_sae(&self) -> usize {
        self.b_enc.len()
    }

    /// Pre-activations `(x − b_dec)·W_enc + b_enc` `[tokens, d_sae]` of concatenated `x`.
    pub fn pre(&self, x: ArrayView2<f32>) -> Array2<f32> {
        (&x - &self.b_dec).dot(&self.w_enc) + &self.b_enc
    }

    /// Latent activations `[tokens, d_sae]` of concatenated activations `x`
    /// `[tokens, n_models·d]`: each pre-activation kept where it is positive and above its
    /// latent's threshold.
    pub fn encode(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut h = self.pre(x);
        for mut row in h.rows_mut() {
            ndarray::Zip::from(&mut row)
                .and(&self.threshold)
                .for_each(|v, &t| {
                    if !(*v > 0.0 && *v > t) {
                        *v = 0.0
                    }
                });
        }
        h
    }

    /// Reconstruction `z·W_dec + b_dec` `[tokens, n_models·d]`.
    pub fn decode(&self, z: &Array2<f32>) -> Array2<f32> {
        z.dot(&self.w_dec) + &self.b_dec
    }

    /// Latent j's decoder vector for model m `[d]`.
    pub fn decoder(&self, j: usize, m: usize) -> ndarray::ArrayView1<'_, f32> {
        self.w_dec.slice(s![j, m * self.d..(m + 1) * self.d])
    }

    /// Per latent, the norm of each model's decoder vector in training units
    /// (`‖W_dec[j, m]‖ · scale[m]`): `[d_sae, n_models]`.
    pub fn decoder_norms(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.d_sae(), self.n_models), |(j, m)| {
            let v = self.decoder(j, m);
            f64::from(v.dot(&v)).sqrt() * f64::from(self.scale[m])
        })
    }

    /// Encode activations in chunks of `CHUNK` tokens, keeping only what `f` makes of each
    /// chunk's (input, latents) (bounded memory on long inputs).
    pub fn for_chunks(&self, x: ArrayView2<f32>, mut f: impl FnMut(ArrayView2<f32>, &Array2<f32>)) {
        const CHUNK: usize = 4096;
        for s0 in (0..x.nrows()).step_by(CHUNK) {
            let xb = x.slice(s![s0..(s0 + CHUNK).min(x.nrows()), ..]);
            let z = self.encode(xb);
            f(xb, &z);
        }
    }

    /// Latent activations of all of `x`.
    pub fn encode_all(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Vec::with_capacity(x.nrows());
        self.for_chunks(x, |_, z| out.push(z.clone()));
        let views: Vec<_> = out.iter().map(|z| z.view()).collect();
        if views.is_empty() {
            return Array2::zeros((0, self.d_sae()));
        }
        ndarray::concatenate(Axis(0), &views).unwrap_or_else(|_| Array2::zeros((0, self.d_sae())))
    }
}

/// Concatenate per-model activation matrices `[tokens, d]` side by side; an error names the
/// first model whose shape differs from the first's.
pub fn concat(models: &[ArrayView2<f32>]) -> crate::Result<Array2<f32>> {
    let Some(first) = models.first() else {
        input_err!("no activations given");
    };
    for (m, x) in models.iter().enumerate() {
        if x.dim() != first.dim() {
            input_err!(
                "model {m}'s activations are {:?} but model 0's are {:?} (a crosscoder needs the same tokens and width in every model)",
                x.dim(),
                first.dim()
            );
        }
    }
    ndarray::concatenate(Axis(1), models).map_err(crate::Error::input)
}
