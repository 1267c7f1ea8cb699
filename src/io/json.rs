//! JSON encodings of tensors: `{"shape": [...], "data": nested arrays}`.
//! Must not write files (`fsio` does).

use crate::Result;
use candle_core::{DType, Tensor};
use serde_json::{json, Value};

/// A tensor as `{"shape": [...], "data": [[...]]}` (f32 values, nested by dimension).
pub fn tensor(t: &Tensor) -> Result<Value> {
    let dims = t.dims().to_vec();
    let flat = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(json!({ "shape": dims, "data": nest(&flat, &dims) }))
}

/// Nest a flat row-major buffer into arrays of the given dims.
pub fn nest(flat: &[f32], dims: &[usize]) -> Value {
    match dims {
        [] => json!(flat.first().copied().unwrap_or(0.0)),
        [_] => json!(flat),
        [n, rest @ ..] => {
            let step: usize = rest.iter().product();
            Value::Array(
                (0..*n)
                    .map(|i| nest(&flat[i * step..(i + 1) * step], rest))
                    .collect(),
            )
        }
    }
}
