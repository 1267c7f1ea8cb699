//! The per-checkpoint analyses of a report, each run once however many pairs share the
//! checkpoint: prompt sets, within-checkpoint patching, the causal checks of what it localised,
//! probes and the logit lens. Owns how each is set up from the report's settings; must not word
//! or draw anything.

use crate::analysis::causal::{self, AblateOpts, Component, SteerOpts, Target};
use crate::analysis::lens;
use crate::analysis::patching::{self, Direction, Sanity, Setup, Sweep, SweepCi};
use crate::analysis::probes::math::LayerOptions;
use crate::analysis::probes::{layers, sample_prompts, ActivationSet, Folded, Label};
use crate::analysis::site::Site;
use crate::io::checkpoint::Checkpoint;
use crate::lab::world::{self, Contrast, MetricKind, PromptDist, WorldConfig};
use crate::report::data::{
    lens_series, CausalData, LensData, PatchData, PatchSweeps, ProbeData, PromptKind, PromptSet,
    SeriesEst, SetRole, Settings,
};
use crate::report::pairs::PairSpec;
use crate::stats;
use crate::view::figures;
use crate::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The prompt set of a pair's cross-checkpoint patching and lens: the contrast's clean prompts,
/// or corpus prompts when the pair has no contrast (for `defect`, the trigger contrast's
/// corrupt side: corpus prompts without `<trig>`, `H` teacher-forced).
pub(super) fn prompt_set(p: &PairSpec, n: usize, seed: u64) -> Result<PromptSet> {
    let mut control: Option<(String, Vec<Vec<u32>>, Vec<patching::Metric>)> = None;
    let (key, about, ids, metrics, pos) = match (p.contrast, p.metric) {
        (Some(c), _) => {
            let (pairs, pos) = patching::world_pairs(c, n, seed)?;
            let (key, about, ctrl) = match c {
                Contrast::Optout => (
                    PromptKind::Optout,
                    "[x] prompts",
                    "the same prompts without [x]",
                ),
                Contrast::Trigger => (
                    PromptKind::Trigger,
                    "<trig> prompts (H teacher-forced)",
                    "the same prompts without <trig>",
                ),
                Contrast::Reward => (
                    PromptKind::Reward,
                    "<r4> prompts",
                    "the same prompts with <r0>",
                ),
            };
            control = Some((
                ctrl.to_string(),
                pairs.iter().map(|x| x.corrupt.clone()).collect(),
                pairs.iter().map(|x| x.metric.clone()).collect(),
            ));
            let (ids, metrics) = pairs.into_iter().map(|x| (x.clean, x.metric)).unzip();
            (key, about, ids, metrics, pos)
        }
        (None, MetricKind::Defect) => {
            let (pairs, pos) = patching::world_pairs(Contrast::Trigger, n, seed)?;
            let (ids, metrics) = pairs.into_iter().map(|x| (x.corrupt, x.metric)).unzip();
            let about = "prompts without <trig> (H teacher-forced)";
            (PromptKind::CorpusH, about, ids, metrics, pos)
        }
        (None, MetricKind::Mode) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let prompts = PromptDist::corpus(&WorldConfig::default()).sample_n(&mut rng, n);
            let (ids, metrics) = prompts
                .iter()
                .map(|q| patching::world_prompt(MetricKind::Mode, q))
                .unzip();
            let pos = MetricKind::Mode.pos();
            (PromptKind::Corpus, "corpus prompts", ids, metrics, pos)
        }
    };
    let (control_about, control_ids, control_metrics) = match control {
        Some((a, i, m)) => (Some(a), i, m),
        None => (None, Vec::new(), Vec::new()),
    };
    Ok(PromptSet {
        key,
        about: about.to_string(),
        pos,
        n,
        metrics,
        ids,
        control_about,
        control_metrics,
        control_ids,
    })
}

/// One probe label on one checkpoint: its activation set and the per-layer results.
pub(super) struct ProbeRun {
    pub(super) set: ActivationSet,
    pub(super) data: ProbeData,
    pub(super) folded: Option<Folded>,
    /// Per layer, the held-out folds with their fitted probes (for transfer).
    pub(super) held: Vec<Vec<crate::analysis::probes::math::HeldOut>>,
}

/// `label` probed on `ck` at `position` (the decision position, or the label's slot).
pub(super) fn run_probe(
    ck: &Checkpoint,
    label: Label,
    position: usize,
    s: &Settings,
) -> Result<ProbeRun> {
    let n_layer = ck.model.config().n_layer;
    let layer_ids: Vec<usize> = (0..n_layer).collect();
    let prompts = sample_prompts(label, s.n_probe, s.seed, None, None);
    let set = ActivationSet::build(
        &ck.model,
        prompts,
        label,
        Site::ResidPost,
        position,
        &layer_ids,
    )?;
    let mut data = ProbeData {
        label,
        site: set.site,
        position: set.position,
        n: set.prompts.len(),
        classes: vec![],
        class_counts: vec![],
        layers: vec![],
        skipped: None,
    };
    let what = format!("label '{label}' on {}", ck.name());
    let f = match layers::fold(&set, s.folds, s.seed, &what) {
        Ok(f) => f,
        Err(e) => {
            data.skipped = Some(e.to_string());
            return Ok(ProbeRun {
                set,
                data,
                folded: None,
                held: Vec::new(),
            });
        }
    };
    // Control task keyed by the first digit's identity: positions 10 and 11 always hold `A`
    // and `H`, and a slot's token is the label itself, so the probed token cannot key one.
    let opt = LayerOptions {
        c: s.c,
        n_random: s.null_directions,
        seed: s.seed,
        control_keys: Some(set.tokens_at(world::POS_D1)),
    };
    let (results, held) =
        layers::layer_results_held(&set, &f, &opt, true, Some((s.bootstrap, s.seed)))?;
    data.layers = results;
    data.classes = f.enc.classes.clone();
    data.class_counts = layers::class_counts(&f);
    Ok(ProbeRun {
        set,
        data,
        folded: Some(f),
        held,
    })
}

/// Within-checkpoint patching over `contrast`: the behaviour gap, then (when it localises) the
/// sweeps in both directions with their intervals.
pub(super) fn patch_data(ck: &Checkpoint, contrast: Contrast, s: &Settings) -> Result<PatchData> {
    let (pairs, pos) = patching::world_pairs(contrast, s.n_patch, s.seed)?;
    let tokens = figures::position_labels(&pairs, world::label, world::slot_name);
    let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), Direction::Denoise)?;
    let (clean, corrupt) = patching::pair_metrics(&ck.model, &setup)?;
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let d: Vec<f64> = clean
        .iter()
        .zip(&corrupt)
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let gap = stats::mean_est(&d, s.bootstrap, s.seed);
    // A gap whose interval reaches 0, or below `min_gap`, has nothing to localise: shares of
    // it are noise, and the maps of a null effect would only look like findings.
    let skipped = (!gap.excludes(0.0) || gap.value.abs() < s.min_gap).then(|| {
        format!(
            "the clean–corrupt gap is {:.3} [{:.3}, {:.3}] logits: its interval reaches 0 or it is below {} logits, too small to localise",
            gap.value, gap.lo, gap.hi, s.min_gap
        )
    });
    let sweeps = match skipped {
        Some(_) => None,
        None => {
            let run = |d: Direction| -> Result<((Sweep, Option<SweepCi>), Sanity)> {
                let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), d)?;
                let sw = patching::sweep(&ck.model, &setup, &Site::PATCHED)?;
                let ci = sw.intervals(s.bootstrap, s.seed);
                Ok(((sw, ci), patching::sanity(&ck.model, &setup)?))
            };
            let (denoise, denoise_sanity) = run(Direction::Denoise)?;
            let (noise, noise_sanity) = run(Direction::Noise)?;
            Some(PatchSweeps {
                denoise,
                denoise_sanity,
                noise,
                noise_sanity,
            })
        }
    };
    Ok(PatchData {
        contrast,
        metric: contrast.metric().describe(),
        pos,
        tokens,
        n_pairs: pairs.len(),
        clean: stats::mean_est(&f(&clean), s.bootstrap, s.seed),
        corrupt: stats::mean_est(&f(&corrupt), s.bootstrap, s.seed),
        gap,
        skipped,
        sweeps,
    })
}

/// The sets a run's patching names (its own top head, top MLP and most necessary output, and
/// the three together), each at the position of its cell.
fn localised_sets(sw: &PatchSweeps, min_gap: f64) -> Vec<(SetRole, Vec<Target>)> {
    let mut v = Vec::new();
    let den = &sw.denoise.0;
    if let Some(c) = den.best_cell(Site::HeadOut, min_gap) {
        let t = Target {
            comp: Component::head(c.layer, c.head),
            pos: c.position,
        };
        v.push((SetRole::TopHead, vec![t]));
    }
    if let Some(c) = den.best_cell(Site::MlpOut, min_gap) {
        let t = Target {
            comp: Component::at(Site::MlpOut, c.layer),
            pos: c.position,
        };
        v.push((SetRole::TopMlp, vec![t]));
    }
    let noise = &sw.noise.0;
    let best = [Site::AttnOut, Site::MlpOut]
        .into_iter()
        .filter_map(|site| noise.best_cell(site, min_gap).map(|c| (site, c)))
        .max_by(|x, y| x.1.share.total_cmp(&y.1.share));
    if let Some((site, c)) = best {
        let t = Target {
            comp: Component::at(site, c.layer),
            pos: c.position,
        };
        v.push((SetRole::Necessary, vec![t]));
    }
    if v.len() > 1 {
        let mut all: Vec<Target> = Vec::new();
        for t in v.iter().flat_map(|(_, s)| s) {
            if !all.contains(t) {
                all.push(*t);
            }
        }
        v.push((SetRole::Together, all));
    }
    v
}

/// The causal checks of one checkpoint's patching over one contrast, when it localised.
pub(super) fn causal_data(
    ck: &Checkpoint,
    world: &WorldConfig,
    pd: &PatchData,
    s: &Settings,
) -> Result<Option<CausalData>> {
    let Some(sw) = &pd.sweeps else {
        return Ok(None);
    };
    let sets = localised_sets(sw, s.min_gap);
    let (roles, sets): (Vec<SetRole>, Vec<Vec<Target>>) = sets.into_iter().unzip();
    let ablation = causal::ablate(
        &ck.model,
        world,
        &sets,
        &AblateOpts {
            contrast: pd.contrast,
            n: s.n_causal,
            seed: s.seed,
            bootstrap: s.bootstrap,
        },
    )?;
    let steering = causal::steer(
        &ck.model,
        world,
        &SteerOpts {
            contrast: pd.contrast,
            layers: Vec::new(),
            alphas: s.steer_alphas.clone(),
            n: s.n_causal,
            seed: s.seed,
            bootstrap: s.bootstrap,
        },
    )?;
    Ok(Some(CausalData {
        roles,
        ablation,
        steering,
    }))
}

/// Tokens the lens reads: `E`, `H` for the mode metric; `!` and the ten digits for defect.
fn lens_tokens(set: &PromptSet) -> Vec<u32> {
    if set.pos == world::POS_A {
        vec![world::E, world::H]
    } else {
        let mut t = vec![world::BANG];
        t.extend((0..10).map(|d| world::DIGIT0 + d));
        t
    }
}

/// The lens on `set` with the report's two series and their intervals.
pub(super) fn lens_data(ck: &Checkpoint, set: &PromptSet, s: &Settings) -> Result<LensData> {
    let result = lens::logit_lens(&ck.model, &set.ids, Some(set.pos), &lens_tokens(set))?;
    let series = lens_series(&result)
        .into_iter()
        .map(|(name, toks)| SeriesEst {
            name,
            values: result
                .per_prompt
                .iter()
                .map(|pt| {
                    let n = pt.first().map_or(0, Vec::len);
                    let per: Vec<f64> = (0..n)
                        .map(|i| toks.iter().map(|&t| pt[t][i]).sum())
                        .collect();
                    stats::mean_est(&per, s.bootstrap, s.seed)
                })
                .collect(),
        })
        .collect();
    Ok(LensData { result, series })
}
