//! Weight differences between two checkpoints of one architecture: the relative Frobenius norm
//! ‖B − A‖ / ‖A‖ per layer and component. Owns only this arithmetic over [`Model::tensors`];
//! plotting is `plot`'s, file output the CLI's. Must not draw or print (that is `view`).

use crate::model::Model;
use crate::{Error, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

/// One component's difference. A component's weight and bias count together: its norm is the
/// Frobenius norm of all its parameters as one vector.
#[derive(Clone, Debug, Serialize, PartialEq, Deserialize)]
pub struct ComponentDiff {
    /// Where it sits: `embed`, the block index (`0`, `1`, ...) or `final`.
    pub group: String,
    /// Component: `wte`, `wpe`, `ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`,
    /// `mlp.c_proj` or `ln_f`.
    pub component: String,
    /// HF tensor names it covers (without `transformer.`).
    pub tensors: Vec<String>,
    /// Number of parameters.
    pub n_params: usize,
    /// ‖A‖ (Frobenius norm of A's parameters).
    pub norm_a: f64,
    /// ‖B − A‖.
    pub norm_diff: f64,
    /// ‖B − A‖ / ‖A‖; 0 when both norms are 0, `None` when only ‖A‖ is 0 (undefined).
    pub relative: Option<f64>,
}

/// Per-component differences of B from A, in checkpoint order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WeightDiff {
    /// Name of checkpoint A (the reference).
    pub a: String,
    /// Name of checkpoint B.
    pub b: String,
    /// One row per component.
    pub components: Vec<ComponentDiff>,
}

/// What a weight diff's headline names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Headline {
    /// Every parameter is identical.
    NoChange,
    /// Indices into `components`: the largest absolute change ‖B − A‖, and the largest
    /// relative one (a small matrix inflates its relative norm, so the two can differ).
    Largest {
        /// Largest ‖B − A‖.
        absolute: usize,
        /// Largest ‖B − A‖ / ‖A‖ (None when no relative change is defined).
        relative: Option<usize>,
    },
}

impl WeightDiff {
    /// The headline: "no change" when every ‖B − A‖ is 0, else the components with the largest
    /// absolute and relative changes (the first of equal ones).
    pub fn headline(&self) -> Headline {
        let first_max = |key: &dyn Fn(&ComponentDiff) -> Option<f64>| {
            let mut best: Option<(usize, f64)> = None;
            for (i, c) in self.components.iter().enumerate() {
                if let Some(v) = key(c).filter(|v| v.is_finite()) {
                    if best.is_none_or(|b| v > b.1) {
                        best = Some((i, v));
                    }
                }
            }
            best.map(|b| b.0)
        };
        if self.components.iter().all(|c| c.norm_diff == 0.0) {
            return Headline::NoChange;
        }
        match first_max(&|c| Some(c.norm_diff)) {
            Some(absolute) => Headline::Largest {
                absolute,
                relative: first_max(&|c| c.relative),
            },
            None => Headline::NoChange,
        }
    }

    /// The headline as a sentence.
    pub fn headline_text(&self) -> String {
        let at = |c: &ComponentDiff| match c.group.parse::<usize>() {
            Ok(l) => format!("{} of layer {l}", c.component),
            Err(_) => format!("{} ({})", c.component, c.group),
        };
        match self.headline() {
            Headline::NoChange => format!(
                "no change: {} and {} have identical weights (‖B − A‖ = 0 in every component)",
                self.a, self.b
            ),
            Headline::Largest { absolute, relative } => {
                let c = &self.components[absolute];
                let mut s = format!(
                    "largest absolute change in {}: ‖B − A‖ {:.4} (relative {})",
                    at(c),
                    c.norm_diff,
                    c.relative.map_or("undefined".into(), |r| format!("{r:.4}"))
                );
                if let Some(r) = relative.filter(|&r| r != absolute) {
                    let c = &self.components[r];
                    s += &format!(
                        "; largest relative change in {}: {:.4} (‖A‖ {:.3}, ‖B − A‖ {:.4})",
                        at(c),
                        c.relative.unwrap_or(f64::NAN),
                        c.norm_a,
                        c.norm_diff
                    );
                }
                s
            }
        }
    }
}

/// Split an HF tensor name into (group, component): `h.3.attn.c_attn.weight` →
/// (`3`, `attn.c_attn`); `wte.weight` → (`embed`, `wte`); `ln_f.bias` → (`final`, `ln_f`).
fn component_of(name: &str) -> (String, String) {
    let stem = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"))
        .unwrap_or(name);
    if let Some(rest) = stem.strip_prefix("h.") {
        if let Some((l, comp)) = rest.split_once('.') {
            return (l.to_string(), comp.to_string());
        }
    }
    match stem {
        "wte" | "wpe" => ("embed".into(), stem.into()),
        _ => ("final".into(), stem.into()),
    }
}

/// Relative Frobenius norm of `b − a` per component. `name_a` / `name_b` name the two models
/// in errors; the models must have the same tensor names and shapes.
pub fn weight_diff(a: &Model, name_a: &str, b: &Model, name_b: &str) -> Result<WeightDiff> {
    let (ta, tb) = (a.tensors(), b.tensors());
    let (ca, cb) = (a.config(), b.config());
    if let Some(d) = ca.shape_difference(cb) {
        return Err(Error::input(format!(
            "cannot diff {name_a} and {name_b}: different architectures or shapes ({d})"
        )));
    }
    if ta.len() != tb.len() {
        return Err(Error::input(format!(
            "cannot diff {name_a} ({} layers) and {name_b} ({} layers): different architectures",
            ca.n_layer, cb.n_layer
        )));
    }
    let mut comps: Vec<ComponentDiff> = Vec::new();
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        if na != nb || xa.dims() != xb.dims() {
            return Err(Error::input(format!(
                "cannot diff {name_a} and {name_b}: {na} has shape {:?} in {name_a} but {nb} has {:?} in {name_b}",
                xa.dims(),
                xb.dims()
            )));
        }
        // Accumulate in f64: GPT-2's embeddings have ~4·10⁷ entries.
        let xa = xa.to_dtype(DType::F64)?;
        let xb = xb.to_dtype(DType::F64)?;
        let sq_a = xa.sqr()?.sum_all()?.to_scalar::<f64>()?;
        let sq_d = (&xb - &xa)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        let (group, component) = component_of(na);
        match comps.last_mut() {
            Some(c) if c.group == group && c.component == component => {
                c.tensors.push(na.clone());
                c.n_params += xa.elem_count();
                c.norm_a += sq_a; // squared until the end
                c.norm_diff += sq_d;
            }
            _ => comps.push(ComponentDiff {
                group,
                component,
                tensors: vec![na.clone()],
                n_params: xa.elem_count(),
                norm_a: sq_a,
                norm_diff: sq_d,
                relative: None,
            }),
        }
    }
    for c in &mut comps {
        c.norm_a = c.norm_a.sqrt();
        c.norm_diff = c.norm_diff.sqrt();
        c.relative = match (c.norm_a > 0.0, c.norm_diff > 0.0) {
            (true, _) => Some(c.norm_diff / c.norm_a),
            (false, false) => Some(0.0),
            (false, true) => None,
        };
    }
    Ok(WeightDiff {
        a: name_a.to_string(),
        b: name_b.to_string(),
        components: comps,
    })
}

impl WeightDiff {
    /// The largest relative difference and its component, e.g. for a summary line.
    pub fn max(&self) -> Option<&ComponentDiff> {
        self.components
            .iter()
            .filter(|c| c.relative.is_some())
            .max_by(|x, y| {
                x.relative
                    .partial_cmp(&y.relative)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::component_of;

    #[test]
    fn components_of_hf_names() {
        let c = |n: &str| {
            let (g, k) = component_of(n);
            format!("{g}/{k}")
        };
        assert_eq!(c("wte.weight"), "embed/wte");
        assert_eq!(c("wpe.weight"), "embed/wpe");
        assert_eq!(c("h.11.attn.c_attn.bias"), "11/attn.c_attn");
        assert_eq!(c("h.0.ln_2.weight"), "0/ln_2");
        assert_eq!(c("ln_f.bias"), "final/ln_f");
    }
}
