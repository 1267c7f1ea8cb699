//! AdamW over one flat f32 parameter buffer (the training engine's layout), with the same
//! update as candle-nn's `AdamW` (bias-corrected moments, decoupled weight decay applied as
//! θ·(1 − lr·λ)); element by element in order, so the same bytes on any machine.

/// AdamW's state: the moments and the step count.
pub struct AdamW {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// Zero moments for `n` parameters; β = (0.9, 0.999), ε = 1e-8 (candle's and PyTorch's
    /// defaults), decoupled weight decay `weight_decay`.
    pub fn new(n: usize, weight_decay: f64) -> Self {
        AdamW {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// One update of `params` by `grad` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f64) {
        self.t += 1;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        let scale_m = (1.0 / (1.0 - self.beta1.powi(self.t))) as f32;
        let scale_v = (1.0 / (1.0 - self.beta2.powi(self.t))) as f32;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let (lr, eps) = (lr as f32, self.eps as f32);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * (g * g);
            let m_hat = *m * scale_m;
            let v_hat = *v * scale_v;
            *p = *p * decay - lr * (m_hat / (v_hat.sqrt() + eps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first step moves every parameter by lr·sign(g) (bias correction makes m̂/√v̂ = ±1).
    #[test]
    fn first_step_is_lr_times_sign() {
        let mut a = AdamW::new(3, 0.0);
        let mut p = vec![1.0f32, 2.0, 3.0];
        a.step(&mut p, &[0.5, -2.0, 1e-3], 0.01);
        for (x, want) in p.iter().zip([0.99f32, 2.01, 2.99]) {
            assert!((x - want).abs() < 1e-5, "{x} vs {want}");
        }
        // Decoupled decay shrinks a parameter with zero gradient.
        let mut a = AdamW::new(1, 0.5);
        let mut p = vec![1.0f32];
        a.step(&mut p, &[0.0], 0.1);
        assert!((p[0] - 0.95).abs() < 1e-6);
    }
}
