//! `feedlens patch` as one call: the exact sweep and/or the attribution estimate, their
//! agreement when both ran, and the sanity check.
//! Must not format output (the terminal table is `view::tables`).

use super::{attribution, compare, sanity, sweep, Agreement, Method, Metric, Sanity, Setup, Sweep};
use crate::analysis::site::Site;
use crate::model::Model;
use crate::Result;
use serde_json::{json, Value};

/// Everything `feedlens patch` reports: the exact sweep and/or the attribution estimate, their
/// agreement when both ran, and the sanity check.
#[derive(Clone, Debug)]
pub struct Report {
    /// The metric of pair 0 (all pairs share its kind and position).
    pub metric: Metric,
    /// Exact sweep, when asked for.
    pub exact: Option<Sweep>,
    /// Attribution estimate, when asked for.
    pub attribution: Option<Sweep>,
    /// Attribution against exact, per component (both ran).
    pub agreement: Vec<Agreement>,
    /// The whole-residual sanity check.
    pub sanity: Sanity,
}

/// Run the sweeps of `methods` (one or both); `top_k` for their agreement.
pub fn report(
    model: &Model,
    setup: &Setup,
    comps: &[Site],
    methods: &[Method],
    top_k: usize,
) -> Result<Report> {
    let exact = methods
        .contains(&Method::Exact)
        .then(|| sweep(model, setup, comps))
        .transpose()?;
    let attribution = methods
        .contains(&Method::Attribution)
        .then(|| attribution(model, setup, comps))
        .transpose()?;
    if exact.is_none() && attribution.is_none() {
        input_err!("--method: no method given (exact, attribution or both)");
    }
    let agreement = match (&exact, &attribution) {
        (Some(e), Some(a)) => compare(e, a, top_k),
        _ => Vec::new(),
    };
    Ok(Report {
        metric: setup.pairs[0].metric.clone(),
        exact,
        attribution,
        agreement,
        sanity: sanity(model, setup)?,
    })
}

impl Report {
    /// The main sweep: exact when it ran, else attribution.
    pub fn main(&self) -> &Sweep {
        match (&self.exact, &self.attribution) {
            (Some(s), _) | (None, Some(s)) => s,
            // `report` refuses to build a Report without a sweep.
            (None, None) => unreachable!("a patching report holds a sweep"),
        }
    }
    /// The main sweep's JSON (exact when run, else attribution) plus `"metric"`, `"sanity"`,
    /// and, when both ran, `"attribution"` (its sweep JSON) and `"agreement"`.
    pub fn to_json(&self) -> Value {
        let mut v = self.main().to_json();
        v["metric"] = json!(self.metric);
        v["metric"]["pos"] = json!(self.main().pos);
        v["sanity"] = json!(self.sanity);
        if let (Some(_), Some(a)) = (&self.exact, &self.attribution) {
            v["attribution"] = a.to_json();
            v["agreement"] = json!(self.agreement);
        }
        v
    }
}
