//! Fitting one logistic probe on activations a user brings (`feedlens probe fit`): `X` and `y`
//! read from a safetensors file, a train-row range, held-out scores. No model, no world.

use super::math::{Logistic, Scores};
use crate::io::checkpoint::{self, StTensor};
use crate::io::fsio;
use crate::{Error, Result};
use ndarray::{Array2, Axis};
use safetensors::tensor::Dtype as StDtype;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// Serialise named tensors as safetensors bytes (deterministic).
pub fn safetensors_bytes(tensors: &[(String, StTensor)]) -> Result<Vec<u8>> {
    checkpoint::serialize(tensors, None)
}

/// Read `X` `[n, d]` f32 and `y` `[n]` i64 from a safetensors file (other tensors are ignored).
pub fn read_xy(path: &Path) -> Result<(Array2<f32>, Vec<i64>)> {
    let bytes = fsio::read(path)?;
    let st = crate::io::checkpoint::parse_safetensors(&bytes, path)?;
    let get = |name: &str, dtype: StDtype, rank: usize| {
        let v = st.tensor(name).map_err(|_| {
            Error::file(
                path,
                format!("no tensor '{name}' (expected X [n, d] f32 and y [n] i64)"),
            )
        })?;
        if v.dtype() != dtype {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' has dtype {:?}, expected {dtype:?}",
                    v.dtype()
                ),
            ));
        }
        if v.shape().len() != rank {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' has shape {:?}, expected rank {rank}",
                    v.shape()
                ),
            ));
        }
        Ok(v)
    };
    let xv = get("X", StDtype::F32, 2)?;
    let yv = get("y", StDtype::I64, 1)?;
    let (n, d) = (xv.shape()[0], xv.shape()[1]);
    if yv.shape()[0] != n {
        return Err(Error::file(
            path,
            format!("X has {n} rows but y has {}", yv.shape()[0]),
        ));
    }
    if d == 0 {
        return Err(Error::file(path, "X has no columns"));
    }
    let xs: Vec<f32> = xv
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if xs.iter().any(|v| !v.is_finite()) {
        return Err(Error::file(path, "X contains NaN or infinite values"));
    }
    let ys: Vec<i64> = yv
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let x = Array2::from_shape_vec((n, d), xs).map_err(|e| Error::file(path, format!("X: {e}")))?;
    Ok((x, ys))
}

/// Parse a row range `A..B` (end exclusive) within `0..n`; `what` names the argument.
pub fn parse_rows(s: &str, n: usize, what: &str) -> Result<Range<usize>> {
    let bad = || {
        Error::input(format!(
            "{what}: '{s}' is not a row range like 0..{}",
            n * 7 / 10
        ))
    };
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: usize = if a.trim().is_empty() {
        0
    } else {
        a.trim().parse().map_err(|_| bad())?
    };
    let b: usize = b.trim().parse().map_err(|_| bad())?;
    if a >= b || b > n {
        input_err!("{what}: {a}..{b} is empty or runs past the {n} rows");
    }
    if b - a == n {
        input_err!("{what}: {a}..{b} covers every row, leaving no test rows");
    }
    Ok(a..b)
}

/// The result of [`fit_file`]: one logistic probe and its held-out scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitReport {
    /// `[1, d]` (binary) or `[classes, d]`.
    pub coef: Vec<Vec<f64>>,
    /// `[1]` or `[classes]`.
    pub intercept: Vec<f64>,
    /// Label values, the column order of `test_proba`.
    pub classes: Vec<i64>,
    /// `[n_test, classes]` probabilities of the test rows (those outside the train range).
    pub test_proba: Vec<Vec<f64>>,
    /// Accuracy on the test rows.
    pub test_accuracy: f64,
    /// AUROC on the test rows (binary; one-vs-rest macro for more classes).
    pub test_auroc: f64,
    /// Newton iterations and final gradient max-norm.
    pub iterations: usize,
    /// Max-norm of the objective's gradient at the solution.
    pub grad_norm: f64,
}

/// Fit a logistic probe with inverse regularisation `c` on rows `train` of `x` and score it on
/// the other rows.
pub fn fit_split(x: &Array2<f32>, y: &[i64], train: Range<usize>, c: f64) -> Result<FitReport> {
    let n = x.nrows();
    let test: Vec<usize> = (0..n).filter(|i| !train.contains(i)).collect();
    let ytr = &y[train.clone()];
    let model = Logistic::fit(x.slice(ndarray::s![train, ..]), ytr, c)
        .map_err(|e| Error::input(format!("training rows: {e}")))?;
    let xte = x.select(Axis(0), &test);
    let yte: Vec<i64> = test.iter().map(|&i| y[i]).collect();
    let proba = model.predict_proba(xte.view());
    let sc: Scores = model
        .score(xte.view(), &yte)
        .map_err(|e| Error::input(format!("test rows: {e}")))?;
    Ok(FitReport {
        coef: model.coef.rows().into_iter().map(|r| r.to_vec()).collect(),
        intercept: model.intercept.to_vec(),
        classes: model.classes.clone(),
        test_proba: proba.rows().into_iter().map(|r| r.to_vec()).collect(),
        test_accuracy: sc.accuracy,
        test_auroc: sc.auroc,
        iterations: model.iterations,
        grad_norm: model.grad_norm,
    })
}

/// [`fit_split`] on `X`, `y` read from a safetensors file, rows given as `A..B`.
pub fn fit_file(path: &Path, train_rows: &str, c: f64) -> Result<FitReport> {
    let (x, y) = read_xy(path)?;
    let train = parse_rows(train_rows, x.nrows(), "--train-rows")?;
    if !(c.is_finite() && c > 0.0) {
        input_err!("--c: must be a positive number, got {c}");
    }
    fit_split(&x, &y, train, c)
}
