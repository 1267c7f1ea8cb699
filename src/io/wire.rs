//! The full-fidelity encoding of results that cross a process boundary (work units): CBOR,
//! with every field, every f32/f64 bit (NaN included) read back as written. Owns the
//! `full()` switch that the public JSON (`data.json`) uses to leave out bulk per-prompt data;
//! must not know what is encoded.

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;
use std::path::Path;

thread_local! {
    /// Set while [`encode`] runs on this thread.
    static FULL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the value being serialised is going into a unit file (every field) rather than
/// public JSON (the fields a reader wants).
pub fn full() -> bool {
    FULL.with(Cell::get)
}

/// For `#[serde(skip_serializing_if = "crate::io::wire::public")]`: leave the field out of
/// public JSON, keep it in unit files.
pub fn public<T>(_: &T) -> bool {
    !full()
}

/// Resets [`FULL`] when encoding ends (also on a panic).
struct Full(bool);

impl Drop for Full {
    fn drop(&mut self) {
        FULL.with(|f| f.set(self.0));
    }
}

/// `x` with every field, as CBOR.
pub fn encode<T: Serialize>(x: &T) -> Result<Vec<u8>> {
    let _reset = Full(FULL.with(|f| f.replace(true)));
    let mut out = Vec::new();
    ciborium::into_writer(x, &mut out)
        .map_err(|e| Error::input(format!("encoding a work unit: {e}")))?;
    Ok(out)
}

/// A value [`encode`]d before; `file` names its source in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], file: &Path) -> Result<T> {
    ciborium::from_reader(bytes)
        .map_err(|e| Error::file(file, format!("not a readable work unit ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct T {
        x: Vec<f32>,
        y: f64,
        #[serde(skip_serializing_if = "public", default)]
        bulk: Vec<f64>,
    }

    #[test]
    fn every_bit_and_field_comes_back() {
        let t = T {
            x: vec![0.1, -0.0, f32::MIN_POSITIVE, 1e-45, 3.4e38, f32::INFINITY],
            y: std::f64::consts::PI,
            bulk: vec![1.0 / 3.0, f64::NEG_INFINITY],
        };
        let b = encode(&t).unwrap();
        let u: T = decode(&b, Path::new("t")).unwrap();
        assert_eq!(u, t);
        assert_eq!(u.x[1].to_bits(), (-0.0f32).to_bits());
        let nan: f64 = decode(&encode(&f64::NAN).unwrap(), Path::new("t")).unwrap();
        assert!(nan.is_nan());
        // Public JSON leaves the bulk out; the switch is off again after encoding.
        assert!(!full());
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"x":[0.1,-0.0,1.1754944e-38,1e-45,3.4e+38,null],"y":3.141592653589793}"#
        );
        let e = decode::<T>(&b[..b.len() / 2], Path::new("u/x.cbor")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("u/x.cbor: not a readable work unit"),
            "{e}"
        );
    }
}
