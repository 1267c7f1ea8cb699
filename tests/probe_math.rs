//! Probe maths against scikit-learn (tests/fixtures/probe-sklearn) and invariants of the
//! multinomial fit, the baselines and cross-validation.

use feedlens::analysis::probes;
use feedlens::analysis::probes::math::{self as probe_math, Logistic};
use ndarray::{s, Array2, Axis};
use safetensors::SafeTensors;
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/probe-sklearn/reference.safetensors";

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct Reference {
    coef: Vec<f32>,
    intercept: f32,
    test_proba: Vec<f32>,
    accuracy: f64,
    auroc: f64,
}

fn reference() -> Reference {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/probe-sklearn/reference.json").unwrap(),
    )
    .unwrap();
    Reference {
        coef: f32s(&st, "coef"),
        intercept: f32s(&st, "intercept")[0],
        test_proba: f32s(&st, "test_proba"),
        accuracy: json["test_accuracy"].as_f64().unwrap(),
        auroc: json["test_auroc"].as_f64().unwrap(),
    }
}

/// Objective 0.5·‖w‖² + C·Σ logloss on the training rows, binary.
fn binary_objective(w: &[f64], b: f64, x: &Array2<f32>, y: &[i64], c: f64) -> f64 {
    let mut loss = 0.0;
    for (row, &yi) in x.rows().into_iter().zip(y) {
        let z: f64 = row
            .iter()
            .zip(w)
            .map(|(&a, &wj)| a as f64 * wj)
            .sum::<f64>()
            + b;
        loss += z.max(0.0) + (-z.abs()).exp().ln_1p() - if yi == 1 { z } else { 0.0 };
    }
    0.5 * w.iter().map(|v| v * v).sum::<f64>() + c * loss
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn matches_sklearn_lbfgs_reference() {
    let r = reference();
    let rep = probes::fit_file(Path::new(FIXTURE), "0..420", 1.0).unwrap();
    let w = &rep.coef[0];
    let rc: Vec<f64> = r.coef.iter().map(|&v| v as f64).collect();
    let cos = cosine(w, &rc);
    assert!(cos >= 0.9999, "coef cosine {cos}");
    assert_eq!(rep.test_accuracy, r.accuracy);
    assert!(
        (rep.test_auroc - r.auroc).abs() < 1e-12,
        "{} vs {}",
        rep.test_auroc,
        r.auroc
    );
    // Probabilities: the lbfgs reference stopped short of the optimum (scipy's relative-decrease
    // test fires first; its gradient max-norm is 1.2e-2, ours ~1e-7), and its test probabilities
    // sit 2.6e-4 from the exact optimum, which `matches_sklearn_newton_exact` pins to 1e-6. So
    // here: within 3e-4, and our objective is no higher than at the reference's parameters.
    let flat: Vec<f64> = rep.test_proba.iter().flatten().copied().collect();
    let rp: Vec<f64> = r.test_proba.iter().map(|&v| v as f64).collect();
    let d = max_abs_diff(&flat, &rp);
    assert!(d <= 3e-4, "test_proba max abs diff {d}");
    let (x, y) = fixture_xy();
    let xt = x.slice(s![..420, ..]).to_owned();
    let ours = binary_objective(w, rep.intercept[0], &xt, &y[..420], 1.0);
    let theirs = binary_objective(&rc, r.intercept as f64, &xt, &y[..420], 1.0);
    assert!(ours <= theirs, "objective {ours} vs reference {theirs}");
    assert!(rep.grad_norm <= probe_math::GRAD_TOL * (1.0 + 420.0));
}

/// scikit-learn's Newton solver run to tol 1e-12 (tests/fixtures/probe-sklearn-exact/make.py).
fn exact(kind: &str) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/probe-sklearn-exact/reference.json").unwrap(),
    )
    .unwrap();
    let m = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let coef = v[kind]["coef"].as_array().unwrap().iter().map(m).collect();
    let proba = v[kind]["test_proba"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(&m)
        .collect();
    (coef, m(&v[kind]["intercept"]), proba)
}

#[test]
fn matches_sklearn_newton_exact() {
    let (x, y) = fixture_xy();
    let (_, y3) = three_class();
    for (kind, labels) in [("binary", y), ("multinomial", y3)] {
        let (coef, intercept, proba) = exact(kind);
        let xt = x.slice(s![..420, ..]);
        let m = Logistic::fit(xt, &labels[..420], 1.0).unwrap();
        assert_eq!(m.coef.nrows(), coef.len(), "{kind}");
        for (k, rc) in coef.iter().enumerate() {
            let cos = cosine(&m.coef.row(k).to_vec(), rc);
            assert!(cos >= 0.9999, "{kind} class {k}: coef cosine {cos}");
            let d = max_abs_diff(&m.coef.row(k).to_vec(), rc);
            assert!(d < 1e-6, "{kind} class {k}: coef max abs diff {d}");
        }
        let di = max_abs_diff(&m.intercept.to_vec(), &intercept);
        assert!(di < 1e-6, "{kind}: intercept diff {di}");
        let p: Vec<f64> = m
            .predict_proba(x.slice(s![420.., ..]))
            .iter()
            .copied()
            .collect();
        let dp = max_abs_diff(&p, &proba);
        assert!(dp <= 1e-6, "{kind}: test_proba max abs diff {dp}");
    }
}

fn fixture_xy() -> (Array2<f32>, Vec<i64>) {
    probes::read_xy(Path::new(FIXTURE)).unwrap()
}

/// A 3-class problem built from the fixture: the third class is rows whose first feature is high.
fn three_class() -> (Array2<f32>, Vec<i64>) {
    let (x, y) = fixture_xy();
    let y3: Vec<i64> = y
        .iter()
        .zip(x.column(0))
        .map(|(&v, &f)| if f > 0.8 { 2 } else { v })
        .collect();
    (x, y3)
}

/// Gradient of 0.5·Σ‖w_k‖² + C·Σ logloss at the fitted multinomial model, by its definition.
fn multinomial_gradient(m: &Logistic, x: &Array2<f32>, y: &[i64], c: f64) -> f64 {
    let p = m.predict_proba(x.view());
    let mut r = p.clone();
    for (i, &v) in y.iter().enumerate() {
        let k = m.classes.binary_search(&v).unwrap();
        r[[i, k]] -= 1.0;
    }
    let xf = x.mapv(f64::from);
    let gw = r.t().dot(&xf) * c + &m.coef; // [k, d]
    let gb = r.sum_axis(Axis(0)) * c; // [k]
    gw.iter()
        .chain(gb.iter())
        .fold(0.0f64, |a, &b| a.max(b.abs()))
}

#[test]
fn multinomial_is_stationary() {
    let (x, y) = three_class();
    let c = 0.5;
    let m = Logistic::fit(x.view(), &y, c).unwrap();
    assert_eq!(m.coef.dim(), (3, 32));
    let g = multinomial_gradient(&m, &x, &y, c);
    // Objective sums 600 examples; 1e-6 is far below any change a probe would show.
    assert!(g < 1e-6, "gradient max-norm at the solution {g}");
    assert!(m.intercept.sum().abs() < 1e-9, "intercepts centred");
    let p = m.predict_proba(x.view());
    for row in p.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-12);
    }
    let sc = m.score(x.view(), &y).unwrap();
    assert!(sc.accuracy > 0.5 && sc.auroc > 0.7, "{sc:?}");
}

#[test]
fn binary_as_multinomial_is_consistent() {
    // Softmax with two classes and penalty 0.5(‖w0‖²+‖w1‖²) at C equals the binary model at 2C
    // with weights w1 − w0 (at the optimum w0 = −w1).
    let (x, y) = fixture_xy();
    let x = x.slice(s![..420, ..]).to_owned();
    let y = &y[..420];
    let multi = Logistic::fit_multinomial(x.view(), y, 1.0).unwrap();
    let bin = Logistic::fit(x.view(), y, 2.0).unwrap();
    let diff = &multi.coef.row(1) - &multi.coef.row(0);
    let dmax = (&diff - &bin.coef.row(0)).fold(0.0f64, |a, &b| a.max(b.abs()));
    assert!(dmax < 1e-7, "coef difference {dmax}");
    let db = (multi.intercept[1] - multi.intercept[0] - bin.intercept[0]).abs();
    assert!(db < 1e-7, "intercept difference {db}");
    let pm = multi.predict_proba(x.view());
    let pb = bin.predict_proba(x.view());
    let pmax = (&pm - &pb).fold(0.0f64, |a, &b| a.max(b.abs()));
    assert!(pmax < 1e-9, "proba difference {pmax}");
}

#[test]
fn one_class_label_is_an_error() {
    let (x, _) = fixture_xy();
    let y = vec![1i64; x.nrows()];
    let e = Logistic::fit(x.view(), &y, 1.0).unwrap_err().to_string();
    assert!(e.contains("one class only"), "{e}");
}

#[test]
fn cross_validation_and_baselines() {
    let (x, y) = fixture_xy();
    let enc = probe_math::encode_labels(&y, "y").unwrap();
    let folds = probe_math::stratified_folds(&enc, 5, 0).unwrap();
    let cv = probe_math::cross_validate(x.view(), &enc, x.view(), &enc.idx, &folds, 1.0).unwrap();
    // Held-out scores near the fixture's single split (0.66 / 0.76), far from chance.
    assert!(
        cv.logistic.accuracy > 0.6 && cv.logistic.auroc > 0.7,
        "{cv:?}"
    );
    let mm = cv.mass_mean.unwrap();
    assert!(mm.auroc > 0.6, "{mm:?}");
    // Random directions: the best of 1000 beats a typical one but not the trained probe by much.
    let null = probe_math::random_direction_auroc(x.view(), &enc, 1000, 7);
    let one = probe_math::random_direction_auroc(x.view(), &enc, 1, 7);
    assert!(null >= one && (0.5..=1.0).contains(&null), "{null} {one}");
    assert_eq!(
        null,
        probe_math::random_direction_auroc(x.view(), &enc, 1000, 7)
    );
    let pc = probe_math::top_pc_auroc(x.view(), &enc);
    assert!((0.5..=1.0).contains(&pc));
    // Transfer from a matrix to itself is ordinary CV.
    let same = probe_math::cross_validate(x.view(), &enc, x.view(), &enc.idx, &folds, 1.0).unwrap();
    assert_eq!(same, cv);
    // Transfer to a sign-flipped copy inverts the ranking.
    let neg = x.mapv(|v| -v);
    let tr = probe_math::cross_validate(x.view(), &enc, neg.view(), &enc.idx, &folds, 1.0).unwrap();
    assert!(tr.logistic.auroc < 0.5, "{tr:?}");
}

#[test]
fn top_pc_finds_the_dominant_axis() {
    // Column 3 has by far the largest variance; the top PC is ±e3.
    let (mut x, _) = fixture_xy();
    x.column_mut(3).mapv_inplace(|v| v * 50.0);
    let pc = probe_math::top_pc(x.view());
    assert!(pc[3].abs() > 0.999, "{pc}");
}

#[test]
fn control_labels_are_a_function_of_the_key() {
    let y: Vec<i64> = (0..100).map(|i| i % 2).collect();
    let enc = probe_math::encode_labels(&y, "y").unwrap();
    let keys: Vec<u32> = (0..100).map(|i| (i % 10) as u32 + 16).collect();
    let ctl = probe_math::control_labels(&keys, &enc, 3);
    for i in 0..100 {
        assert_eq!(ctl[i], ctl[i % 10], "same key, same control label");
    }
    assert_eq!(ctl, probe_math::control_labels(&keys, &enc, 3));
}

#[test]
fn newton_converges_on_every_fold_of_a_large_problem() {
    // 4000 × 64 with one informative column. Before the full-step rule near the optimum, two of
    // these folds stalled for 100 iterations at gradient ~1e-5: the Armijo test cannot resolve
    // decreases below ~1e-16·|f| (|f| ~ 2000 here).
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let y: Vec<i64> = (0..4000).map(|_| rng.random_range(0..2)).collect();
    let x = Array2::from_shape_fn((4000, 64), |(i, j)| {
        rng.sample::<f32, _>(rand_distr::StandardNormal) + if j == 0 { y[i] as f32 } else { 0.0 }
    });
    let enc = probe_math::encode_labels(&y, "y").unwrap();
    let folds = probe_math::stratified_folds(&enc, 5, 0).unwrap();
    for f in 0..5 {
        let tr: Vec<usize> = (0..4000).filter(|&i| folds[i] != f).collect();
        let ys: Vec<i64> = tr.iter().map(|&i| y[i]).collect();
        let m = Logistic::fit(x.select(Axis(0), &tr).view(), &ys, 1.0).unwrap();
        let tol = probe_math::GRAD_TOL * (1.0 + tr.len() as f64);
        assert!(
            m.iterations <= 20 && m.grad_norm <= tol,
            "fold {f}: {} iterations, gradient {:e}",
            m.iterations,
            m.grad_norm
        );
    }
}
