//! L2-regularised logistic regression with scikit-learn's objective (binary and multinomial),
//! fitted by Newton's method with a Cholesky solve, and the encoding of labels into classes.
//! Pure maths on `ndarray`; no files, no model.

use super::{scores, Scores};
use crate::Result;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};

/// Newton stops when the gradient's max-norm is at most `GRAD_TOL × (1 + C·n)`: the objective
/// is a sum over n examples, so this is ~1e-9 on the per-example scale (scikit-learn's lbfgs
/// works on the per-example mean). Newton converges quadratically, so the last step usually lands
/// at ~1e-14; the bound only matters on nearly separable data.
pub const GRAD_TOL: f64 = 1e-9;
/// Newton iterations before giving up (the fixture converges in ~7).
const MAX_NEWTON: usize = 100;

/// A fitted L2-regularised logistic regression, scikit-learn's convention:
/// minimise `0.5·‖W‖² + C·Σᵢ logloss(xᵢ, yᵢ)`, intercept unpenalised.
/// Binary: `coef` is `[1, d]`, the log-odds of `classes[1]`; multinomial (> 2 classes): `coef` is
/// `[classes, d]` (softmax), intercepts centred to sum to zero (the softmax only fixes them up to
/// a common shift).
#[derive(Clone, Debug, PartialEq)]
pub struct Logistic {
    /// The label values, ascending; column `k` of [`Logistic::predict_proba`] is `classes[k]`.
    pub classes: Vec<i64>,
    /// `[1, d]` (binary) or `[classes, d]`.
    pub coef: Array2<f64>,
    /// `[1]` or `[classes]`.
    pub intercept: Array1<f64>,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Max-norm of the objective's gradient at the solution.
    pub grad_norm: f64,
}

/// Labels mapped to class indices `0..classes.len()`.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Sorted distinct label values.
    pub classes: Vec<i64>,
    /// Class index of each row.
    pub idx: Vec<usize>,
}

/// Map labels to class indices; error on fewer than two classes (`what` names the label).
pub fn encode_labels(y: &[i64], what: &str) -> Result<Encoded> {
    let mut classes = y.to_vec();
    classes.sort_unstable();
    classes.dedup();
    match classes.len() {
        0 => input_err!("{what}: no examples"),
        1 => input_err!(
            "{what}: has one class only (all {} examples are {}); a probe needs at least two",
            y.len(),
            classes[0]
        ),
        _ => {}
    }
    let idx = y
        .iter()
        .map(|v| classes.binary_search(v).unwrap_or(0))
        .collect();
    Ok(Encoded { classes, idx })
}

/// `[n, d+1]` in f64 with a trailing column of ones (the intercept's feature).
pub(super) fn with_ones(x: ArrayView2<f32>) -> Array2<f64> {
    let (n, d) = x.dim();
    let mut a = Array2::<f64>::ones((n, d + 1));
    a.slice_mut(s![.., ..d]).assign(&x.mapv(f64::from));
    a
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Logistic {
    /// Fit on `x` `[n, d]` with labels `y` `[n]` (any integer values, ≥ 2 distinct) and inverse
    /// regularisation `c` (> 0). Binary labels get a logistic model, more get a multinomial one.
    pub fn fit(x: ArrayView2<f32>, y: &[i64], c: f64) -> Result<Logistic> {
        let enc = encode_labels(y, "labels")?;
        Self::fit_encoded(&with_ones(x), &enc, c, enc.classes.len() > 2)
    }

    /// As [`Logistic::fit`], but a softmax model (`coef` `[classes, d]`) even for two classes.
    /// With two classes it equals the binary fit at `2·c` with `coef[1] − coef[0]` as weights.
    pub fn fit_multinomial(x: ArrayView2<f32>, y: &[i64], c: f64) -> Result<Logistic> {
        let enc = encode_labels(y, "labels")?;
        Self::fit_encoded(&with_ones(x), &enc, c, true)
    }

    /// Fit on an already augmented `[n, d+1]` matrix (see `with_ones`).
    pub(super) fn fit_encoded(
        xa: &Array2<f64>,
        enc: &Encoded,
        c: f64,
        multi: bool,
    ) -> Result<Logistic> {
        if xa.nrows() != enc.idx.len() {
            input_err!(
                "labels: {} rows but the feature matrix has {}",
                enc.idx.len(),
                xa.nrows()
            );
        }
        if !(c.is_finite() && c > 0.0) {
            input_err!("C must be a positive number, got {c}");
        }
        if xa.iter().any(|v| !v.is_finite()) {
            input_err!("feature matrix has non-finite values");
        }
        let k = enc.classes.len();
        let d1 = xa.ncols();
        let problem = Problem {
            xa,
            y: &enc.idx,
            c,
            k,
            multi,
        };
        let rows = problem.rows();
        let n_par = rows * d1;
        let (theta, iterations, grad_norm) = newton(&problem, n_par)?;
        let d = d1 - 1;
        let mut coef = Array2::zeros((rows, d));
        let mut intercept = Array1::zeros(rows);
        for r in 0..rows {
            coef.row_mut(r).assign(&theta.slice(s![r * d1..r * d1 + d]));
            intercept[r] = theta[r * d1 + d];
        }
        Ok(Logistic {
            classes: enc.classes.clone(),
            coef,
            intercept,
            iterations,
            grad_norm,
        })
    }

    /// Decision values `[n, 1]` (binary log-odds) or `[n, classes]` (softmax logits).
    pub fn decision(&self, x: ArrayView2<f32>) -> Array2<f64> {
        let xf = x.mapv(f64::from);
        let mut z = xf.dot(&self.coef.t());
        z += &self.intercept;
        z
    }

    /// Class probabilities `[n, classes]`, columns in the order of `classes`.
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Array2<f64> {
        let z = self.decision(x);
        if self.coef.nrows() == 1 {
            let mut p = Array2::zeros((z.nrows(), 2));
            for (i, &zi) in z.column(0).iter().enumerate() {
                let p1 = sigmoid(zi);
                p[[i, 0]] = 1.0 - p1;
                p[[i, 1]] = p1;
            }
            p
        } else {
            softmax_rows(z)
        }
    }

    /// Held-out accuracy and AUROC on `x`, `y` (labels must be among `classes`).
    pub fn score(&self, x: ArrayView2<f32>, y: &[i64]) -> Result<Scores> {
        let idx = self.indices(y)?;
        Ok(scores(self.predict_proba(x).view(), &idx))
    }

    fn indices(&self, y: &[i64]) -> Result<Vec<usize>> {
        y.iter()
            .map(|v| {
                self.classes.binary_search(v).map_err(|_| {
                    crate::Error::input(format!(
                        "label {v} was not seen in training (classes {:?})",
                        self.classes
                    ))
                })
            })
            .collect()
    }
}

fn softmax_rows(mut z: Array2<f64>) -> Array2<f64> {
    for mut row in z.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row /= s;
    }
    z
}

/// The regularised objective and its derivatives. Parameters are `[d+1]` (binary: weights then
/// intercept) or `[k·(d+1)]` (class-major).
struct Problem<'a> {
    xa: &'a Array2<f64>,
    y: &'a [usize],
    c: f64,
    k: usize,
    /// Softmax over `k` rows of parameters (else one logistic row; needs `k == 2`).
    multi: bool,
}

impl Problem<'_> {
    fn d1(&self) -> usize {
        self.xa.ncols()
    }
    fn rows(&self) -> usize {
        if self.multi {
            self.k
        } else {
            1
        }
    }
    /// `[n, rows]` decision values.
    fn z(&self, theta: &Array1<f64>) -> Array2<f64> {
        let w = theta
            .view()
            .into_shape_with_order((self.rows(), self.d1()))
            .expect("parameter vector has rows·(d+1) entries");
        self.xa.dot(&w.t())
    }
    /// Penalty: 0.5·‖W‖² (intercepts free) plus, for the multinomial model, 0.5·(Σₖ bₖ)², which
    /// only picks the zero-sum representative among intercepts that give the same probabilities
    /// (so the Hessian is positive definite) and is exactly 0 at the reported solution.
    fn penalty(&self, theta: &Array1<f64>) -> f64 {
        let d1 = self.d1();
        let mut p = 0.0;
        let mut bsum = 0.0;
        for r in 0..self.rows() {
            let w = theta.slice(s![r * d1..(r + 1) * d1 - 1]);
            p += 0.5 * w.dot(&w);
            bsum += theta[(r + 1) * d1 - 1];
        }
        if self.multi {
            p += 0.5 * bsum * bsum;
        }
        p
    }
    fn objective(&self, theta: &Array1<f64>) -> f64 {
        let z = self.z(theta);
        let loss: f64 = if !self.multi {
            z.column(0)
                .iter()
                .zip(self.y)
                .map(|(&zi, &yi)| softplus(zi) - if yi == 1 { zi } else { 0.0 })
                .sum()
        } else {
            z.rows()
                .into_iter()
                .zip(self.y)
                .map(|(row, &yi)| {
                    let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - row[yi]
                })
                .sum()
        };
        self.c * loss + self.penalty(theta)
    }
    /// Gradient `[n_par]` and Hessian `[n_par, n_par]`.
    fn derivatives(&self, theta: &Array1<f64>) -> (Array1<f64>, Array2<f64>) {
        let (d1, rows, c) = (self.d1(), self.rows(), self.c);
        let z = self.z(theta);
        let n_par = rows * d1;
        let mut g = Array1::zeros(n_par);
        let mut h = Array2::zeros((n_par, n_par));
        // Residuals r = p − onehot(y) and curvature weights, per model row.
        let p = if !self.multi {
            z.mapv(sigmoid)
        } else {
            softmax_rows(z)
        };
        let mut resid = p.clone();
        for (i, &yi) in self.y.iter().enumerate() {
            if !self.multi {
                resid[[i, 0]] -= if yi == 1 { 1.0 } else { 0.0 };
            } else {
                resid[[i, yi]] -= 1.0;
            }
        }
        let gl = self.xa.t().dot(&resid); // [d1, rows]
        for r in 0..rows {
            g.slice_mut(s![r * d1..(r + 1) * d1])
                .assign(&(&gl.column(r) * c));
        }
        for a in 0..rows {
            for b in a..rows {
                // Binary: p(1−p). Softmax: p_a(δ_ab − p_b).
                let wts: Array1<f64> = if !self.multi {
                    p.column(0).mapv(|v| v * (1.0 - v))
                } else if a == b {
                    p.column(a).mapv(|v| v * (1.0 - v))
                } else {
                    -(&p.column(a) * &p.column(b))
                };
                let weighted = self.xa * &wts.insert_axis(Axis(1)) * c;
                let blk = weighted.t().dot(self.xa);
                h.slice_mut(s![a * d1..(a + 1) * d1, b * d1..(b + 1) * d1])
                    .assign(&blk);
                if a != b {
                    h.slice_mut(s![b * d1..(b + 1) * d1, a * d1..(a + 1) * d1])
                        .assign(&blk.t());
                }
            }
        }
        let bsum: f64 = (0..rows).map(|r| theta[(r + 1) * d1 - 1]).sum();
        for r in 0..rows {
            for j in 0..d1 - 1 {
                g[r * d1 + j] += theta[r * d1 + j];
                h[[r * d1 + j, r * d1 + j]] += 1.0;
            }
            if self.multi {
                g[(r + 1) * d1 - 1] += bsum;
                for q in 0..rows {
                    h[[(r + 1) * d1 - 1, (q + 1) * d1 - 1]] += 1.0;
                }
            }
        }
        (g, h)
    }
}

pub(super) fn max_abs(v: ArrayView1<f64>) -> f64 {
    v.fold(0.0, |a, &b| a.max(b.abs()))
}

/// Damped Newton from zero: solve H·δ = g by Cholesky, backtrack (Armijo) until the objective
/// decreases. Returns (parameters, iterations, final gradient max-norm).
fn newton(p: &Problem, n_par: usize) -> Result<(Array1<f64>, usize, f64)> {
    let n = p.y.len() as f64;
    let tol = GRAD_TOL * (1.0 + p.c * n);
    let mut theta = Array1::zeros(n_par);
    let mut f = p.objective(&theta);
    for it in 0..MAX_NEWTON {
        let (g, h) = p.derivatives(&theta);
        let gn = max_abs(g.view());
        if gn <= tol {
            return Ok((theta, it, gn));
        }
        let step = cholesky_solve(h, &g)
            .ok_or_else(|| crate::Error::input("logistic fit: Hessian not positive definite"))?;
        let slope = g.dot(&step);
        // Near the optimum the predicted decrease (slope/2, the Newton decrement) drops below
        // what f64 can resolve in an objective of size |f| (~1e-16·|f|), so Armijo's test turns
        // into noise and would stall the iteration; there Newton's full step is safe (quadratic
        // convergence region), so take it without a line search.
        if 0.5 * slope <= 1e-10 * (1.0 + f.abs()) {
            theta = &theta - &step;
            f = p.objective(&theta);
            continue;
        }
        let mut t = 1.0;
        loop {
            let cand = &theta - &(&step * t);
            let fc = p.objective(&cand);
            if fc <= f - 1e-4 * t * slope {
                theta = cand;
                f = fc;
                break;
            }
            t *= 0.5;
            if t < 1e-12 {
                // No decrease left at f64 precision: accept if the gradient is already tiny
                // relative to the problem (1e3 × tol), else report.
                if gn <= 1e3 * tol {
                    return Ok((theta, it, gn));
                }
                input_err!("logistic fit: line search failed (gradient {gn:.3e})");
            }
        }
    }
    let (g, _) = p.derivatives(&theta);
    let gn = max_abs(g.view());
    if gn <= 1e3 * tol {
        return Ok((theta, MAX_NEWTON, gn));
    }
    input_err!("logistic fit: no convergence in {MAX_NEWTON} Newton steps (gradient {gn:.3e})")
}

/// Solve `a·x = b` for symmetric positive definite `a` (consumed); None if not PD.
fn cholesky_solve(mut a: Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let m = a.nrows();
    // In-place lower Cholesky factor, row by row.
    for j in 0..m {
        let mut diag = a[[j, j]];
        for k in 0..j {
            diag -= a[[j, k]] * a[[j, k]];
        }
        // Also catches NaN (a non-finite Hessian).
        if diag.is_nan() || diag <= 0.0 {
            return None;
        }
        let l = diag.sqrt();
        a[[j, j]] = l;
        for i in j + 1..m {
            let (ri, rj) = (a.row(i), a.row(j));
            let dot = ri.slice(s![..j]).dot(&rj.slice(s![..j]));
            a[[i, j]] = (a[[i, j]] - dot) / l;
        }
    }
    let mut x = b.clone();
    for i in 0..m {
        let dot = a.row(i).slice(s![..i]).dot(&x.slice(s![..i]));
        x[i] = (x[i] - dot) / a[[i, i]];
    }
    for i in (0..m).rev() {
        let dot = a.column(i).slice(s![i + 1..]).dot(&x.slice(s![i + 1..]));
        x[i] = (x[i] - dot) / a[[i, i]];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cholesky_solves() {
        let a = array![[4.0, 2.0, 0.4], [2.0, 3.0, 0.5], [0.4, 0.5, 2.0]];
        let b = array![1.0, -2.0, 0.5];
        let x = cholesky_solve(a.clone(), &b).unwrap();
        let r = a.dot(&x) - &b;
        assert!(max_abs(r.view()) < 1e-12);
        assert!(cholesky_solve(array![[1.0, 2.0], [2.0, 1.0]], &array![1.0, 1.0]).is_none());
    }

    #[test]
    fn one_class_is_a_clear_error() {
        let x = Array2::<f32>::zeros((4, 2));
        let e = Logistic::fit(x.view(), &[3, 3, 3, 3], 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one class only"), "{e}");
    }
}
