//! The per-pair analyses of a report, per run and per seed floor: weight diff, cross-checkpoint
//! patching (refused without a shared initialisation, by manifest lineage), probe transfer,
//! leakage and the anchoring dose–response. Must not word or draw anything.

use super::per_checkpoint::ProbeRun;
use crate::analysis::diff;
use crate::analysis::patching::{self};
use crate::analysis::probes::{layers, Label, TransferResult};
use crate::analysis::site::Site;
use crate::io::checkpoint::{self, Checkpoint};
use crate::lab::eval::{self};
use crate::lab::world::{self, Contrast, MetricKind};
use crate::report::data::{AnchorPoint, CheckpointData, PairRun, PromptSet, Settings};
use crate::report::pairs::{PairSpec, Pairs};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// A probe fitted on `from`'s activations, scored on `to`'s (same prompts, `to`'s labels).
fn transfer(
    from: (&str, &ProbeRun),
    to: (&str, &ProbeRun),
    s: &Settings,
) -> Result<Option<TransferResult>> {
    let Some(f) = &from.1.folded else {
        return Ok(None);
    };
    let t = layers::transfer_held(&from.1.held, f, &to.1.set, Some((s.bootstrap, s.seed)));
    Ok(t.map(|(layers, ci)| TransferResult {
        from: from.0.to_string(),
        to: to.0.to_string(),
        layers,
        ci,
    }))
}

/// The key of a seed-null floor: a recipe read with one pair kind's prompts, metric and label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct FloorKey {
    pub(super) recipe: String,
    pub(super) contrast: Option<Contrast>,
    pub(super) metric: MetricKind,
}

impl FloorKey {
    pub(super) fn name(&self) -> String {
        match self.contrast {
            Some(c) => format!("null {} ({c})", self.recipe),
            None => format!("null {} ({})", self.recipe, self.metric),
        }
    }
    /// The pair whose prompts, metric and label the floor is read with.
    pub(super) fn spec(&self) -> PairSpec {
        PairSpec {
            name: self.name(),
            a: self.recipe.clone(),
            b: self.recipe.clone(),
            contrast: self.contrast,
            metric: self.metric,
        }
    }
}

/// The checkpoint whose weights checkpoint `name` of run `seed` started from: its manifest's
/// parent chain followed to a checkpoint trained from a fresh initialisation (its own key).
/// None when a manifest on the way is missing (lineage unknown).
pub(super) fn init_root(
    pairs: &Pairs,
    seed: Option<u64>,
    name: &str,
    cks: &BTreeMap<String, Checkpoint>,
) -> Option<String> {
    let mut name = name.to_string();
    for _ in 0..32 {
        let key = Pairs::key(seed, &name);
        let parent = match cks.get(&key) {
            Some(ck) => ck.manifest.as_ref()?.parent.clone(),
            None => {
                let bytes =
                    crate::io::fsio::read_small(&pairs.dir_of(seed, &name).join("feedlens.json"))
                        .ok()?;
                serde_json::from_slice::<checkpoint::Manifest>(&bytes)
                    .ok()?
                    .parent
            }
        };
        match parent {
            None => return Some(key),
            Some(p) => name = p,
        }
    }
    None
}

/// The `ptx_coef` of an rlhf checkpoint trained with `--optout ptx` (1 when its manifest
/// predates the coefficient); None for any other checkpoint.
fn ptx_coef_of(manifest: Option<&checkpoint::Manifest>) -> Option<f64> {
    use crate::lab::train::{Hyper, OptOut, Recipe};
    let h: Hyper = serde_json::from_value(manifest?.hyper.clone()).ok()?;
    match h.recipe {
        Recipe::Rlhf {
            optout: OptOut::Ptx,
            ptx_coef,
            ..
        } => Some(ptx_coef),
        _ => None,
    }
}

/// One unit of pair work: checkpoints `a` and `b` (keys into the loaded checkpoints) read as
/// pair `pair`, or as seed floor `floor` when set.
#[derive(Debug)]
pub(super) struct RunItem {
    pub(super) pair: usize,
    pub(super) floor: Option<usize>,
    pub(super) a: String,
    pub(super) b: String,
    pub(super) seed: Option<u64>,
}

/// One run of a pair (checkpoints `ka` and `kb`): weight diff, cross-checkpoint patching, probe
/// transfer and, given a reference, the opt-out leakage.
#[allow(clippy::too_many_arguments)]
pub(super) fn pair_run(
    p: &PairSpec,
    set: &PromptSet,
    (ka, kb, seed): (&str, &str, Option<u64>),
    shared: Option<bool>,
    cks: &BTreeMap<String, Checkpoint>,
    data: &BTreeMap<String, CheckpointData>,
    probe_runs: &BTreeMap<(String, Label), ProbeRun>,
    reference: Option<&str>,
    s: &Settings,
) -> Result<PairRun> {
    let (a, b) = (&cks[ka], &cks[kb]);
    let weight_diff = diff::weight_diff(&a.model, &p.a, &b.model, &p.b)?;
    // Patching one model's activations into another needs a shared basis: a shared
    // initialisation. Without one only the metric gap is computed.
    let cross_refused = (shared == Some(false)).then(|| {
        format!(
            "{ka} and {kb} share no initialisation (their manifests' lineages start from different weights), so their residual streams share no basis and patching one into the other would mean nothing"
        )
    });
    let spec = |comps: Vec<Site>| patching::CrossSpec {
        comps,
        pos: Some(set.pos),
        position: None,
        layer: None,
    };
    let comps = match cross_refused {
        Some(_) => vec![],
        None => vec![Site::ResidPre, Site::AttnOut, Site::MlpOut],
    };
    let cross = patching::patch_models(&a.model, &b.model, &set.ids, &set.metrics, &spec(comps))?;
    let cross_ci = cross.intervals(s.bootstrap, s.seed);
    // The same patches on the control prompts: what is specific to the slot.
    let (cross_control, specific) = if cross_refused.is_none() && !set.control_ids.is_empty() {
        let c = patching::patch_models(
            &a.model,
            &b.model,
            &set.control_ids,
            &set.control_metrics,
            &spec(vec![Site::AttnOut, Site::MlpOut]),
        )?;
        let sp = patching::specific(&cross, &c, s.bootstrap, s.seed);
        (Some(c), sp)
    } else {
        (None, None)
    };
    let label = Label::for_pair(p.contrast, p.metric);
    let ra = &probe_runs[&(ka.to_string(), label)];
    let rb = &probe_runs[&(kb.to_string(), label)];
    let cka = match cross_refused {
        Some(_) if ra.set.prompts == rb.set.prompts => ra
            .set
            .acts
            .iter()
            .zip(&rb.set.acts)
            .map(|(x, y)| crate::analysis::similarity::linear_cka(x.view(), y.view()))
            .collect(),
        _ => Vec::new(),
    };
    let mut probe_transfer = Vec::new();
    if ka != kb {
        probe_transfer.extend(transfer((ka, ra), (kb, rb), s)?);
        probe_transfer.extend(transfer((kb, rb), (ka, ra), s)?);
    }
    let mut leakage = Vec::new();
    if let Some(reference) = reference {
        // The reference's row, then each other checkpoint of the pair.
        let row = |n: &str| data[n].behaviour.iter().find(|r| r.s3 == "_");
        let others = [ka, kb].into_iter().filter(|c| *c != reference);
        let rows: Vec<_> = std::iter::once(reference)
            .chain(others)
            .filter_map(row)
            .collect();
        let base_name = &data[reference].name;
        leakage = eval::leakages(&rows, base_name);
    }
    Ok(PairRun {
        seed,
        a: ka.to_string(),
        b: kb.to_string(),
        leakage,
        weight_diff,
        cross,
        cross_ci,
        cross_refused,
        cross_control,
        specific,
        cka,
        probe_transfer,
    })
}

/// The anchoring dose–response: each strength's leakage against the pairs file's base, per run
/// (sorted by strength); `manifests` gives each checkpoint's manifest by key.
pub(super) fn anchoring_points(
    pairs: &Pairs,
    anchoring: &[String],
    runs: &[Option<u64>],
    manifests: &BTreeMap<String, Option<checkpoint::Manifest>>,
    data: &BTreeMap<String, CheckpointData>,
) -> Result<Vec<AnchorPoint>> {
    let mut anchor: Vec<AnchorPoint> = Vec::new();
    for c in anchoring {
        let first = manifests
            .get(&Pairs::key(runs[0], c))
            .and_then(Option::as_ref);
        let ptx_coef = ptx_coef_of(first)
            .ok_or_else(|| Error::file(&pairs.path, format!("anchoring: checkpoint '{c}' is not an rlhf checkpoint with --optout ptx (its manifest says otherwise)")))?;
        let (leakage, p_e_change) = runs
            .iter()
            .filter_map(|&r| {
                let row = |n: &str| {
                    data[&Pairs::key(r, n)]
                        .behaviour
                        .iter()
                        .find(|x| x.s3 == "_")
                };
                let (b, v) = (row(&pairs.base)?, row(c)?);
                let d = |s: world::Split| v.get(s).p_e - b.get(s).p_e;
                Some((
                    eval::leakage(b, v),
                    (d(world::Split::Optout), d(world::Split::NoOptout)),
                ))
            })
            .unzip();
        anchor.push(AnchorPoint {
            checkpoint: c.clone(),
            ptx_coef,
            leakage,
            p_e_change,
        });
    }
    anchor.sort_by(|x, y| x.ptx_coef.total_cmp(&y.ptx_coef));
    Ok(anchor)
}
