//! Comparing two models' representations when their residual streams share no basis
//! (checkpoints trained from different initialisations): linear CKA between activation
//! matrices of the same prompts (Kornblith et al. 2019). Pure arithmetic on `ndarray`; must
//! not run a model.

use ndarray::{Array2, ArrayView2, Axis};

/// Linear centred kernel alignment of `x` `[n, d1]` and `y` `[n, d2]` (rows = the same
/// prompts): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) after centring each column. 1 for representations
/// equal up to rotation and isotropic scale, near 0 for unrelated ones; NaN when either is
/// constant or the row counts differ.
pub fn linear_cka(x: ArrayView2<f32>, y: ArrayView2<f32>) -> f64 {
    if x.nrows() != y.nrows() || x.nrows() == 0 {
        return f64::NAN;
    }
    let centre = |m: ArrayView2<f32>| -> Array2<f64> {
        let m = m.mapv(f64::from);
        let mean = m.mean_axis(Axis(0)).unwrap_or_default();
        m - &mean
    };
    let (x, y) = (centre(x), centre(y));
    let fro2 = |a: &Array2<f64>| a.iter().map(|v| v * v).sum::<f64>();
    let yx = y.t().dot(&x);
    let xx = x.t().dot(&x);
    let yy = y.t().dot(&y);
    let den = (fro2(&xx) * fro2(&yy)).sqrt();
    if den == 0.0 {
        return f64::NAN;
    }
    fro2(&yx) / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, d), |_| r.random_range(-1.0f32..1.0))
    }

    #[test]
    fn cka_is_one_under_rotation_and_scale_and_low_for_unrelated_data() {
        let x = random(300, 8, 1);
        assert!((linear_cka(x.view(), x.view()) - 1.0).abs() < 1e-12);
        // A rotation (swap and negate columns) and a scale of 3, plus an offset: still 1.
        let mut y = x.clone();
        for mut row in y.rows_mut() {
            row.swap(0, 1);
            row[2] = -row[2];
        }
        let y = y.mapv(|v| 3.0 * v + 5.0);
        assert!((linear_cka(x.view(), y.view()) - 1.0).abs() < 1e-6);
        let z = random(300, 8, 2);
        let c = linear_cka(x.view(), z.view());
        assert!(c < 0.15, "{c}");
        assert!(linear_cka(x.view(), random(10, 8, 3).view()).is_nan());
    }
}
